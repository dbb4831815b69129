// `lite auto_awq`: the quantization and AutoAWQ GEMM packing against the independent numpy
// reference (Tests/Reference/awq_reference.py: run from the venv, and its committed fixture), the
// scale search measured against round-to-nearest on a model with activation outliers, the
// group-size and bit-width errors, and the written directory's layout and atomicity.
import Foundation
import Lite
import Testing
import TurboMind

func awqFamily(_ name: String) -> URL { liteFixtures.appendingPathComponent("families/\(name)") }

func loadFP(_ dir: URL) throws -> (model: LlamaModel<CPUBackend>, weights: ModelWeights) {
    let config = try ModelConfig.load(directory: dir)
    let weights = try ModelWeights.load(directory: dir, config: config)
    return (try LlamaModel(backend: CPUBackend(threads: 2), config: config, weights: weights), weights)
}

/// Deterministic token windows over the tiny vocabulary.
func awqWindows(_ count: Int, length: Int, vocab: Int, salt: Int) -> [[Int32]] {
    (0..<count).map { w in (0..<length).map { i in Int32((i * 37 + w * 101 + salt * 13 + (i * i) % 7) % vocab) } }
}

/// The venv's python, when there is one (the packing test against the live reference needs numpy).
func venvPython() -> String? {
    let env = ProcessInfo.processInfo.environment
    let venv = env["LMDEPLOY_TEST_VENV"] ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/venv"
    let python = venv + "/bin/python"
    return FileManager.default.isExecutableFile(atPath: python) ? python : nil
}

func runProcess(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    // Read and wait on a thread of its own, not the cooperative pool.
    return await withCheckedContinuation { c in
        Thread.detachNewThread {
            let data = awqReadAll(pipe.fileHandleForReading.fileDescriptor)
            process.waitUntilExit()
            c.resume(returning: (process.terminationStatus, String(decoding: data, as: UTF8.self)))
        }
    }
}

/// Everything until end of file, retrying reads a signal interrupted (Foundation's
/// readDataToEndOfFile traps on EINTR, which Process's SIGCHLD handling causes).
func awqReadAll(_ fd: Int32) -> Data {
    var out = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n > 0 { out.append(buffer, count: n); continue }
        if n < 0 && errno == EINTR { continue }
        return out
    }
}

@Suite(.serialized) struct AWQTests {
    /// Round-to-nearest (`--no-search`) output against awq_reference.py's `rtn` on the same
    /// checkpoint: every linear's qweight, qzeros and scales bit for bit, the other tensors unchanged.
    @Test(arguments: [32, 64])
    func roundToNearestMatchesTheNumpyReference(groupSize: Int) async throws {
        guard let python = venvPython() else {
            Issue.record("no venv python (set LMDEPLOY_TEST_VENV): the numpy reference cannot run")
            return
        }
        let source = awqFamily("llama_gqa")
        let ref = try temporaryDirectory("awq-ref"), work = try temporaryDirectory("awq-rtn")
        defer { try? FileManager.default.removeItem(at: ref); try? FileManager.default.removeItem(at: work) }
        let script = liteFixtures.deletingLastPathComponent().appendingPathComponent("Reference/awq_reference.py").path
        let (status, output) = try await runProcess(python, [script, "rtn", source.path, ref.path, String(groupSize)])
        try #require(status == 0, "awq_reference.py rtn failed: \(output)")

        let (model, weights) = try loadFP(source)
        let options = AWQOptions(groupSize: groupSize, searchScale: false, searchClip: false)   // pure round-to-nearest, as --no-search
        let result = try await AutoAWQ.quantize(model: model, weights: weights, windows: awqWindows(2, length: 16, vocab: 256, salt: 1), options: options)
        try AWQWriter.write(result: result, source: source, options: options, run: [:], to: work)

        let mine = try SafetensorsFile(url: work.appendingPathComponent("model.safetensors"))
        let theirs = try SafetensorsFile(url: ref.appendingPathComponent("model.safetensors"))
        var compared = 0
        for name in theirs.tensorNames where name.hasSuffix(".qweight") || name.hasSuffix(".qzeros") || name.hasSuffix(".scales") {
            let a = try mine.tensor(name), b = try theirs.tensor(name)
            #expect(a.dtype == b.dtype && a.shape == b.shape, "\(name): \(a.dtype.rawValue) \(a.shape) vs \(b.dtype.rawValue) \(b.shape)")
            #expect(Array(a.data) == Array(b.data), "\(name): bytes differ from the numpy reference")
            compared += 1
        }
        #expect(compared == 2 * 7 * 3, "every linear of both layers")
        // Not quantized: kept as they were (the reference writes them as fp16, we keep the source dtype).
        let source32 = try SafetensorsFile(url: source.appendingPathComponent("model.safetensors"))
        for name in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.1.input_layernorm.weight"] {
            #expect(Array(try mine.tensor(name).data) == Array(try source32.tensor(name).data), "\(name) unchanged")
        }
    }

    /// The committed AutoAWQ fixture (written by the numpy reference): our unpacking reads back the
    /// same codes (re-packing gives identical bytes), and the dequantized model's logits through the
    /// fp engine match the reference's float64 forward of the same dequantized weights.
    @Test func unpackingTheReferenceFixtureReproducesItsLogits() async throws {
        let fixture = liteFixtures.appendingPathComponent("awq/model")
        let linears = try AWQCheckpoint.linears(in: fixture)
        #expect(linears.count == 14)
        let file = try SafetensorsFile(url: fixture.appendingPathComponent("model.safetensors"))
        for (prefix, m) in linears {
            let t = AWQGEMMPacking.tensors(of: m)
            #expect(AWQWriterBytes.int32(t.qweight) == Array(try file.tensor(prefix + ".qweight").data), "\(prefix).qweight")
            #expect(AWQWriterBytes.int32(t.qzeros) == Array(try file.tensor(prefix + ".qzeros").data), "\(prefix).qzeros")
        }
        let out = try temporaryDirectory("awq-deq")
        defer { try? FileManager.default.removeItem(at: out) }
        try AWQCheckpoint.dequantize(fixture, to: out)
        let (model, _) = try loadFP(out)
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("awq/reference.json"))) as! [String: Any]
        let ids = (ref["ids"] as! [Int]).map(Int32.init)
        let want = (ref["logits"] as! [[Double]]).flatMap { $0 }
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 64, cacheMaxEntryCount: 1, kvCacheType: .f32))
        defer { engine.shutdown() }
        let got = try #require(try await engine.run(session: 1, input: .full(ids), config: GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .allLogits)).promptLogits)
        #expect(got.count == want.count)
        // fp32 forward vs float64 of the same weights: O(1) logits agree to ~1e-5; 1e-3 leaves margin.
        let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(worst < 1e-3, "worst logit difference \(worst)")
    }

    /// A tiny MHA Llama whose norms give a few input channels 20× the others' magnitude (as real
    /// LLMs' activation outliers): on held-out prompts, the AWQ model's logits are measurably closer
    /// to the fp model's than round-to-nearest's.
    @Test func searchReducesTheOutputErrorAgainstRoundToNearest() async throws {
        let source = try temporaryDirectory("awq-outliers")
        defer { try? FileManager.default.removeItem(at: source) }
        try makeOutlierModel(from: awqFamily("llama_mha"), to: source)
        let (model, weights) = try loadFP(source)
        let calibration = awqWindows(8, length: 48, vocab: 256, salt: 3)
        func quantized(search: Bool, clip: Bool = false) async throws -> (URL, AWQResult) {
            let options = AWQOptions(groupSize: 32, searchScale: search, searchClip: clip, duoScaling: false, searchTokens: 256)   // the paper's scales, as measured
            let result = try await AutoAWQ.quantize(model: model, weights: weights, windows: calibration, options: options)
            let dir = try temporaryDirectory("awq-q"), deq = try temporaryDirectory("awq-qd")
            try AWQWriter.write(result: result, source: source, options: options, run: [:], to: dir)
            try AWQCheckpoint.dequantize(dir, to: deq)
            try? FileManager.default.removeItem(at: dir)
            return (deq, result)
        }
        let (rtnDir, _) = try await quantized(search: false)
        let (awqDir, awq) = try await quantized(search: true)
        let (clipDir, _) = try await quantized(search: true, clip: true)
        defer { for d in [rtnDir, awqDir, clipDir] { try? FileManager.default.removeItem(at: d) } }
        // The search's own record: every group's chosen loss is at most round-to-nearest's (α = 0 is on the grid).
        let groups = awq.layers.flatMap(\.groups)
        #expect(groups.count == 2 * 4, "q/k/v, o (MHA), gate/up and down in both layers")
        #expect(groups.allSatisfy { $0.awqLoss <= $0.rtnLoss })

        let heldOut = awqWindows(3, length: 40, vocab: 256, salt: 11)
        func logits(_ m: LlamaModel<CPUBackend>) async throws -> [Float] {
            let engine = try Engine(model: m, config: EngineConfig(sessionLen: 64, cacheMaxEntryCount: 1, kvCacheType: .f32))
            defer { engine.shutdown() }
            var all: [Float] = []
            for (i, w) in heldOut.enumerated() {
                all += try #require(try await engine.run(session: UInt64(i), input: .full(w), config: GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .allLogits)).promptLogits)
            }
            return all
        }
        let exact = try await logits(model)
        func error(_ dir: URL) async throws -> Double {
            let q = try await logits(try loadFP(dir).model)
            return zip(q, exact).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(exact.count)
        }
        let eRTN = try await error(rtnDir), eAWQ = try await error(awqDir), eClip = try await error(clipDir)
        print("tiny outlier Llama, g32: logit MSE vs fp — RTN \(eRTN), AWQ \(eAWQ) (\(eAWQ / eRTN)×), AWQ+clip \(eClip) (\(eClip / eRTN)×)")
        #expect(eRTN > 0 && eAWQ > 0, "both quantized models differ from fp")
        #expect(eAWQ < 0.8 * eRTN, "AWQ's held-out logit error \(eAWQ) vs RTN's \(eRTN)")
        #expect(eClip < 0.8 * eRTN, "AWQ+clip's held-out logit error \(eClip) vs RTN's \(eRTN)")
    }

    @Test func groupSizeAndBitWidthErrorsNameTheProblem() throws {
        let dir = awqFamily("llama_gqa")   // hidden 64: groups of 128 do not fit
        let config = try ModelConfig.load(directory: dir)
        let weights = try ModelWeights.load(directory: dir, config: config)
        do {
            try AutoAWQ.check(config: config, weights: weights, options: AWQOptions(groupSize: 128))
            Issue.record("no error for group 128 on 64 input features")
        } catch let e as AWQError {
            #expect(e == .groupSizeMismatch(linear: "model.layers.0.self_attn.q_proj", inFeatures: 64, groupSize: 128, working: [32, 64]))
            #expect(e.description.contains("model.layers.0.self_attn.q_proj") && e.description.contains("64 or 32"), "\(e)")
        }
        #expect(throws: AWQError.self) { try AWQOptions(bits: 3).validate() }
        #expect(throws: AWQError.self) { try AWQOptions(bits: 8).validate() }
        #expect(throws: AWQError.self) { try AWQOptions(groupSize: 48).validate() }
        do { try AWQOptions(bits: 3).validate() } catch let e as AWQError { #expect(e.description.contains("--w-bits 3")) }
        try AutoAWQ.check(config: config, weights: weights, options: AWQOptions(groupSize: 64))
        // SmolLM2 (576 input features): 128 is refused with 64 and 32 offered.
        let env = ProcessInfo.processInfo.environment
        let smol = URL(fileURLWithPath: env["LMDEPLOY_TEST_MODEL"] ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/smollm2-135m-instruct")
        if let c = try? ModelConfig.load(directory: smol), let w = try? ModelWeights.load(directory: smol, config: c) {
            do {
                try AutoAWQ.check(config: c, weights: w, options: AWQOptions(groupSize: 128))
                Issue.record("no error for SmolLM2 at group 128")
            } catch let e as AWQError {
                #expect(e.description.contains("576") && e.description.contains("use --w-group-size 64 or 32"), "\(e)")
            }
        }
    }

    /// The directory: AutoAWQ's names, shapes, dtypes and config keys; calibrate's files kept; a
    /// failing run leaves the work directory as it was and no temporary directory behind.
    @Test func writtenDirectoryHasTheAutoAWQLayout() async throws {
        let source = awqFamily("llama_gqa")
        let (model, weights) = try loadFP(source)
        let config = model.config
        let root = try temporaryDirectory("awq-layout")
        defer { try? FileManager.default.removeItem(at: root) }
        let work = root.appendingPathComponent("quant_output")
        let windows = awqWindows(2, length: 24, vocab: 256, salt: 5)
        let stats = try await Calibration.collect(model: model, windows: windows)
        try stats.write(to: work, run: ["seed": 0])
        try Data("stale".utf8).write(to: work.appendingPathComponent("model-00001-of-00002.safetensors"))
        let options = AWQOptions(groupSize: 32, searchClip: true, searchTokens: 32)
        let result = try await AutoAWQ.quantize(model: model, weights: weights, windows: windows, options: options)
        try AWQWriter.write(result: result, source: source, options: options, run: ["calib_samples": 2], to: work)

        let names = Set(try FileManager.default.contentsOfDirectory(atPath: work.path))
        #expect(names.isSuperset(of: ["model.safetensors", "config.json", "quant_config.json", "awq_search.json",
                                      CalibrationStats.tensorsFile, CalibrationStats.summaryFile]))
        #expect(!names.contains("model-00001-of-00002.safetensors"), "old weights are not carried over")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path) == ["quant_output"], "no temporary directory left")
        _ = try KVStatistics.load(workDir: work)   // calibrate's statistics still readable

        let file = try SafetensorsFile(url: work.appendingPathComponent("model.safetensors"))
        let (h, q, kv, inter, g) = (config.hiddenSize, config.qDim, config.kvDim, config.intermediateSize, 32)
        for l in 0..<config.numHiddenLayers {
            let p = "model.layers.\(l)."
            let shapes: [(String, Int, Int)] = [("self_attn.q_proj", h, q), ("self_attn.k_proj", h, kv), ("self_attn.v_proj", h, kv),
                                                 ("self_attn.o_proj", q, h), ("mlp.gate_proj", h, inter), ("mlp.up_proj", h, inter),
                                                 ("mlp.down_proj", inter, h)]
            for (linear, inF, outF) in shapes {
                let qw = try file.tensor(p + linear + ".qweight"), qz = try file.tensor(p + linear + ".qzeros"), sc = try file.tensor(p + linear + ".scales")
                #expect(qw.dtype == .i32 && qw.shape == [inF, outF / 8], "\(linear).qweight \(qw.shape)")
                #expect(qz.dtype == .i32 && qz.shape == [inF / g, outF / 8], "\(linear).qzeros \(qz.shape)")
                #expect(sc.dtype == .f16 && sc.shape == [inF / g, outF], "\(linear).scales \(sc.shape)")
                #expect(!file.contains(p + linear + ".weight"))
            }
            #expect(file.contains(p + "input_layernorm.weight") && file.contains(p + "post_attention_layernorm.weight"))
        }
        #expect(file.contains("model.embed_tokens.weight") && file.contains("model.norm.weight") && file.contains("lm_head.weight"))
        // Read back: the codes are the quantizer's.
        let back = try AWQCheckpoint.linears(in: work)
        guard case let .quantized(m)? = result.replacements["model.layers.1.mlp.down_proj.weight"] else { Issue.record("down_proj not quantized"); return }
        #expect(back["model.layers.1.mlp.down_proj"] == m)

        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: work.appendingPathComponent("config.json"))) as! [String: Any]
        let qc = try #require(cfg["quantization_config"] as? [String: Any])
        #expect(qc["quant_method"] as? String == "awq" && qc["bits"] as? Int == 4 && qc["group_size"] as? Int == 32
                && qc["zero_point"] as? Bool == true && qc["version"] as? String == "gemm" && qc.keys.contains("modules_to_not_convert"))
        #expect(cfg["hidden_size"] as? Int == 64, "the source config is kept")
        let quant = try JSONSerialization.jsonObject(with: Data(contentsOf: work.appendingPathComponent("quant_config.json"))) as! [String: Any]
        #expect(Set(quant.keys) == ["zero_point", "q_group_size", "w_bit", "version", "modules_to_not_convert"])
        #expect(quant["q_group_size"] as? Int == 32 && quant["w_bit"] as? Int == 4 && quant["version"] as? String == "GEMM")

        // A run that fails while writing (the source has no config.json) leaves work_dir untouched.
        let broken = root.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: broken.appendingPathComponent("model.safetensors"))
        let before = try Data(contentsOf: work.appendingPathComponent("model.safetensors"))
        #expect(throws: AWQError.self) { try AWQWriter.write(result: result, source: broken, options: options, run: [:], to: work) }
        #expect(try Data(contentsOf: work.appendingPathComponent("model.safetensors")) == before)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: root.path)) == ["quant_output", "broken"], "no temporary directory left")
    }
}

enum AWQWriterBytes {
    static func int32(_ v: [Int32]) -> [UInt8] { v.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Array($0) } } }
}

/// Copies the fixture model with channels 3, 17 and 40 of every norm weight multiplied by 20.
func makeOutlierModel(from source: URL, to destination: URL) throws {
    let file = try SafetensorsFile(url: source.appendingPathComponent("model.safetensors"))
    var writer = SafetensorsWriter()
    for name in file.tensorNames {
        let t = try file.tensor(name)
        if name.hasSuffix("layernorm.weight") {
            var v = t.toFloatArray()
            for c in [3, 17, 40] { v[c] *= 20 }
            try writer.add(name: name, shape: t.shape, values: v, dtype: t.dtype)
        } else {
            try writer.add(t)
        }
    }
    try writer.write(to: destination.appendingPathComponent("model.safetensors"))
    try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: destination.appendingPathComponent("config.json"))
}
