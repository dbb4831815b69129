// `convert --model-format awq`: the tiny AutoAWQ fixture → an int4 workspace (tp 2) whose
// qweight/scales_zeros files are byte-identical to numpy's rendering of the documented layout
// (Tests/Reference/awq_reference.py), config.ini says int4 and the group size, the workspace reads
// back into the same logits as numpy's float64 forward of the dequantized model, its linears take
// under 0.3× fp16's bytes (also inside the backend), and wrong inputs are refused clearly.
import CKernels
import Foundation
import Testing
@testable import TurboMind

@Suite(.serialized) struct AWQWorkspaceTests {
    /// The fixture model plus a tokenizer (convert copies one into the workspace; SmolLM2's will do,
    /// the ids never reach it).
    static func source() throws -> URL {
        let dir = try AWQFixture.copy()
        try FileManager.default.copyItem(at: try TestPaths.smolLM2().appendingPathComponent("tokenizer.json"),
                                         to: dir.appendingPathComponent("tokenizer.json"))
        return dir
    }

    static func convert(_ source: URL, group: Int?, tp: Int) throws -> URL {
        let destination = FileManager.default.temporaryDirectory.appendingPathComponent("awq-ws-\(UUID().uuidString)")
        try WorkspaceWriter.convert(source: source, destination: destination,
                                    options: WorkspaceConvertOptions(modelName: "llama2", tensorParallel: tp, awqGroupSize: group))
        return destination
    }

    @Test func int4WorkspaceMatchesNumpyLayoutAndLogits() throws {
        let fixture = try AWQFixture()
        let source = try Self.source()
        defer { try? FileManager.default.removeItem(at: source) }
        let ws = try Self.convert(source, group: fixture.groupSize, tp: fixture.tp)
        defer { try? FileManager.default.removeItem(at: ws) }
        let layout = WorkspaceLayout(root: ws)
        let ini = try WorkspaceConfig.load(layout.configINI)
        #expect(ini.weightType == "int4" && ini.groupSize == fixture.groupSize && ini.tensorParaSize == fixture.tp)

        // Every int4 file, byte for byte, against numpy's.
        let expected = try SafetensorsFile(url: AWQFixture.root.appendingPathComponent("workspace-int4-tp2.safetensors"))
        var int4Bytes = 0
        for name in expected.tensorNames {
            let want = try expected.tensor(name)
            let got = try Data(contentsOf: layout.weights.appendingPathComponent(name))
            #expect(got.count == want.data.count && got.elementsEqual(want.data), "\(name): differs from awq_reference.py's layout")
            int4Bytes += got.count
        }
        #expect(expected.tensorNames.count == 16 * 2, "fixture files: \(expected.tensorNames.count)")
        // No fp16 linear files next to them.
        let listed = try FileManager.default.contentsOfDirectory(atPath: layout.weights.path)
        #expect(!listed.contains { $0.contains("w_qkv") && $0.hasSuffix(".weight") }, "fp16 linears in an int4 workspace: \(listed.sorted())")
        #expect(int4Bytes == fixture.int4LinearBytes)
        #expect(Double(int4Bytes) <= 0.3 * Double(fixture.fp16LinearBytes), "int4 linears \(int4Bytes) B vs fp16 \(fixture.fp16LinearBytes) B")

        // Read back (ranks merged, q/k un-permuted) and run.
        let loaded = try WorkspaceReader.load(layout)
        #expect(loaded.weights.isAWQ)
        let model = try LlamaModel(backend: CPUBackend(), config: loaded.config, weights: loaded.weights)
        let prefill = try awqLogits(model, fixture.ids, decode: false)
        let decode = try awqLogits(model, fixture.ids, decode: true)
        #expect(maxRelativeError(prefill, fixture.logits) < 1e-4, "int4 workspace prefill: \(maxRelativeError(prefill, fixture.logits))")
        #expect(maxRelativeError(decode, fixture.logits) < fixture.fp16ActivationError,
                "int4 workspace decode: \(maxRelativeError(decode, fixture.logits)) (fp16 activations: \(fixture.fp16ActivationError))")
        // What the backend holds for the linears: 4-bit sized, no fp16 copy.
        let held = model.layers.reduce(0) { $0 + $1.qkv.byteCount + $1.o.byteCount + $1.gateUp.byteCount + $1.down.byteCount }
        #expect(Double(held) <= 0.3 * Double(fixture.fp16LinearBytes), "CPU backend linear bytes \(held) vs fp16 \(fixture.fp16LinearBytes)")
    }

    @Test func tp1RoundTripsToTheCheckpoint() throws {
        let source = try Self.source()
        defer { try? FileManager.default.removeItem(at: source) }
        let ws = try Self.convert(source, group: 64, tp: 1)
        defer { try? FileManager.default.removeItem(at: ws) }
        let loaded = try WorkspaceReader.load(WorkspaceLayout(root: ws))
        let config = try ModelConfig.load(directory: source)
        let original = try ModelWeights.load(directory: source, config: config)
        for (a, b) in zip(loaded.weights.layers, original.layers) {
            for (x, y) in zip(a.awq!.all, b.awq!.all) {
                #expect(x.qweight.data.elementsEqual(y.qweight.data) && x.qzeros.data.elementsEqual(y.qzeros.data)
                        && x.scales.data.elementsEqual(y.scales.data), "\(y.qweight.name): not restored exactly")
            }
        }
    }

    @Test func wrongInputsAreRefused() throws {
        let source = try Self.source()
        defer { try? FileManager.default.removeItem(at: source) }
        // --group-size not the checkpoint's
        var e = thrownText { _ = try Self.convert(source, group: 128, tp: 1) }
        #expect(e.contains("group_size") && e.contains("64") && e.contains("128"), "\(e)")
        // an AWQ checkpoint converted as hf
        e = thrownText { _ = try Self.convert(source, group: nil, tp: 1) }
        #expect(e.contains("--model-format awq"), "\(e)")
        // a dense checkpoint converted as awq
        e = thrownText { _ = try Self.convert(try TestPaths.smolLM2(), group: 64, tp: 1) }
        #expect(e.contains("auto_awq"), "\(e)")
        // a missing tensor
        let broken = try Self.source()
        defer { try? FileManager.default.removeItem(at: broken) }
        try dropTensor("model.layers.1.mlp.up_proj.qzeros", in: broken.appendingPathComponent("model.safetensors"))
        e = thrownText { _ = try Self.convert(broken, group: 64, tp: 1) }
        #expect(e.contains("model.layers.1.mlp.up_proj.qzeros"), "\(e)")
        // a truncated int4 workspace file
        let ws = try Self.convert(source, group: 64, tp: 1)
        defer { try? FileManager.default.removeItem(at: ws) }
        let victim = WorkspaceLayout(root: ws).weights.appendingPathComponent("layers.0.feed_forward.w13.0.qweight")
        let data = try Data(contentsOf: victim)
        try data.prefix(data.count - 4).write(to: victim)
        e = thrownText { _ = try WorkspaceReader.load(WorkspaceLayout(root: ws)) }
        #expect(e.contains("w13.0.qweight") && e.contains("bytes"), "\(e)")
    }
}

/// Rewrites a safetensors file without tensor `name` (its header entry renamed, so the bytes stay valid).
func dropTensor(_ name: String, in url: URL) throws {
    var data = try Data(contentsOf: url)
    let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    var header = String(decoding: data[8..<(8 + n)], as: UTF8.self)
    let renamed = String(name.dropLast(2)) + "XX"
    header = header.replacingOccurrences(of: "\"\(name)\"", with: "\"\(renamed)\"")
    data.replaceSubrange(8..<(8 + n), with: Data(header.utf8))
    try data.write(to: url)
}
