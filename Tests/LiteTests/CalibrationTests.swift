// `lite calibrate`'s statistics against an independent float64 numpy computation of the same
// quantities on a tiny random Llama (Tests/Reference/calibration_reference.py), their
// reproducibility, the seeded sampling of windows and the dataset resolution.
import Foundation
import Lite
import Testing
import TurboMind

let liteFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

func tinyLlama() throws -> LlamaModel<CPUBackend> {
    let dir = liteFixtures.appendingPathComponent("families/llama_gqa")
    let config = try ModelConfig.load(directory: dir)
    return try LlamaModel(backend: CPUBackend(threads: 2), config: config, weights: ModelWeights.load(directory: dir, config: config))
}

func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("q8-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite struct CalibrationTests {
    @Test func statisticsMatchTheFloat64Reference() async throws {
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("calibration/llama_gqa_stats.json"))) as! [String: Any]
        let windows = (ref["windows"] as! [[Int]]).map { $0.map(Int32.init) }
        let expected = ref["stats"] as! [String: [Double]]
        // 5-token batches: each 19-token window takes several forwards, as long samples do.
        let stats = try await Calibration.collect(model: try tinyLlama(), windows: windows, batchTokens: 5)
        #expect(stats.tokens == windows.reduce(0) { $0 + $1.count })
        let tensors = stats.tensors()
        #expect(Set(tensors.map(\.name)) == Set(expected.keys), "the same statistics under the same names")
        for t in tensors {
            let want = try #require(expected[t.name])
            #expect(t.values.count == want.count && t.shape.reduce(1, *) == want.count, "\(t.name)")
            // fp32 forward vs float64: activations are O(1) here, agreement to ~1e-6; 2e-5 leaves margin.
            let worst = zip(t.values, want).map { abs(Double($0) - $1) / max(1, abs($1)) }.max() ?? 0
            #expect(worst < 2e-5, "\(t.name): worst relative difference \(worst)")
        }
    }

    @Test func sameSeedSameWindowsAndStatistics() async throws {
        let tokens = (0..<500).map { Int32(($0 * 7919) % 256) }
        let a = try CalibrationDataset.sample(tokens, samples: 4, seqlen: 17, seed: 42)
        let b = try CalibrationDataset.sample(tokens, samples: 4, seqlen: 17, seed: 42)
        let c = try CalibrationDataset.sample(tokens, samples: 4, seqlen: 17, seed: 43)
        #expect(a == b && a != c)
        #expect(a.allSatisfy { $0.count == 17 })
        // Each window is a contiguous slice of the text.
        for w in a {
            let start = try #require(tokens.indices.first { tokens[$0] == w[0] && Array(tokens[$0..<min($0 + 17, tokens.count)]) == w })
            #expect(start + 17 <= tokens.count - 1)
        }
        let model = try tinyLlama()
        let s1 = try await Calibration.collect(model: model, windows: a, batchTokens: 8)
        let s2 = try await Calibration.collect(model: model, windows: b, batchTokens: 8)
        let s3 = try await Calibration.collect(model: model, windows: c, batchTokens: 8)
        // Same seed: the same statistics, bit for bit (the kernel tests' ck_force_isa is per thread, so
        // it no longer changes the kernels this run uses).
        func worst(_ x: CalibrationStats, _ y: CalibrationStats) -> Float {
            zip(x.tensors(), y.tensors()).map { p, q in zip(p.values, q.values).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0 }.max() ?? 0
        }
        #expect(worst(s1, s2) == 0, "same seed")
        #expect(worst(s1, s3) > 1e-2, "another seed samples other windows")
        // A text exactly one window long has no offset to draw (lmdeploy needs seqlen + 1 tokens).
        #expect(throws: CalibrationError.self) { try CalibrationDataset.sample(Array(tokens[0..<17]), samples: 1, seqlen: 17, seed: 0) }
    }

    @Test func datasetsResolveFromFilesAndNames() throws {
        let dir = try temporaryDirectory("datasets")
        defer { try? FileManager.default.removeItem(at: dir) }
        try #"{"text": "first"}"#.appending("\n\n{\"text\": \"second\"}\n").write(to: dir.appendingPathComponent("c4.jsonl"), atomically: true, encoding: .utf8)
        try #"[{"text": "a"}, "b"]"#.write(to: dir.appendingPathComponent("data.json"), atomically: true, encoding: .utf8)
        let env = ["LMDEPLOY_CALIB_DATA_DIR": dir.path]
        let c4 = try CalibrationDataset.resolve("c4", environment: env)
        #expect(c4.lastPathComponent == "c4.jsonl")
        #expect(try CalibrationDataset.text(of: c4) == "first\n\nsecond")
        #expect(try CalibrationDataset.text(of: dir.appendingPathComponent("data.json")) == "a\n\nb")
        // A named set that is not there says where to put it and which file names it looks for.
        do {
            _ = try CalibrationDataset.resolve("wikitext2", environment: env)
            Issue.record("no error")
        } catch let e as CalibrationError {
            #expect(e.description.contains(dir.path) && e.description.contains("wikitext2.jsonl") && e.description.contains("wikitext2.txt"))
        }
        #expect(throws: CalibrationError.self) { try CalibrationDataset.resolve(dir.appendingPathComponent("nope.txt").path, environment: env) }
        try "{\"text\": 1}\n".write(to: dir.appendingPathComponent("bad.jsonl"), atomically: true, encoding: .utf8)
        do {
            _ = try CalibrationDataset.text(of: dir.appendingPathComponent("bad.jsonl"))
            Issue.record("no error")
        } catch let e as CalibrationError {
            #expect(e.description.contains("line 1"))
        }
    }

    /// The files of a work directory: names and shapes as documented, read back by kv_qparams.
    @Test func workDirFilesRoundTrip() async throws {
        let dir = try temporaryDirectory("workdir")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try tinyLlama()
        let stats = try await Calibration.collect(model: model, windows: [[1, 2, 3, 4, 5, 6, 7]])
        try stats.write(to: dir, run: ["seed": 0])
        let file = try SafetensorsFile(url: dir.appendingPathComponent(CalibrationStats.tensorsFile))
        #expect(try file.tensor("layers.1.key.absmax").shape == [2, 8])
        #expect(try file.tensor("layers.0.feed_forward.w2.input.absmean").shape == [128])
        let back = try KVStatistics.load(workDir: dir)
        #expect(back.model == CalibratedModel(model.config))
        #expect(back.keyMax[1] == stats.keys[1].max && back.valueMin[0] == stats.values[0].min)
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(CalibrationStats.summaryFile))) as! [String: Any]
        #expect(summary["tokens"] as? Int == 7)
        #expect((summary["layers"] as? [Any])?.count == 2)
    }
}
