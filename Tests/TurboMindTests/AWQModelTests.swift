// AWQ W4A16 end to end on the tiny AutoAWQ fixture of Tests/Reference/awq_reference.py: the
// checkpoint loads with its packed tensors in place, the CPU backend's logits (prefill through the
// dequantize-tile GEMM, decode through the int4 GEMV, fp32 and int8 KV) match numpy's float64
// forward of the dequantized model (decode: closer than fp16 activations get), and bad checkpoints
// are refused with errors naming the problem.
import CKernels
import Foundation
import Testing
@testable import TurboMind

struct AWQFixture {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/awq")
    static var model: URL { root.appendingPathComponent("model") }

    let ids: [Int32]
    let logits: [[Double]]
    let groupSize: Int
    let tp: Int
    /// numpy's error when every linear input is rounded to fp16 (lmdeploy's W4A16 activations).
    let fp16ActivationError: Double
    let fp16LinearBytes: Int
    let int4LinearBytes: Int
    let packInput: [[Int]]
    let packOutput: [Int32]

    init() throws {
        let data = try Data(contentsOf: AWQFixture.root.appendingPathComponent("reference.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        ids = try #require(json["ids"] as? [Int]).map(Int32.init)
        logits = try #require(json["logits"] as? [[Double]])
        groupSize = try #require(json["group_size"] as? Int)
        tp = try #require(json["tp"] as? Int)
        fp16ActivationError = try #require(json["fp16_activation_error"] as? Double)
        fp16LinearBytes = try #require(json["fp16_linear_bytes"] as? Int)
        int4LinearBytes = try #require(json["int4_linear_bytes"] as? Int)
        packInput = try #require(json["pack_input"] as? [[Int]])
        packOutput = try #require(json["pack_output"] as? [Int]).map { Int32(truncatingIfNeeded: $0) }
    }

    /// A copy of the fixture model in a fresh temporary directory, for tests that break it.
    static func copy() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("awq-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: model, to: dir)
        return dir
    }
}

/// Logits of every position of `ids` from a fresh cache: one prefill step (rows ≥ 8: the GEMM path)
/// or token by token (the GEMV path).
func awqLogits(_ model: LlamaModel<CPUBackend>, _ ids: [Int32], decode: Bool, kv: KVCacheType = .f32,
               quant: KVQuantParameters? = nil) throws -> [[Float]] {
    let layout = model.kvLayout(blockSize: 16, blockCount: 2, type: kv)
    let cache = try model.backend.makeKVCache(layout, quantParameters: quant)
    let state = try model.makeRunState(maxRows: ids.count, maxLogitRows: ids.count)
    if !decode {
        let all = try model.forward(model.plan([ForwardItem(tokens: ids, start: 0, blocks: [0, 1], logits: .all)], layout: layout),
                                    cache: cache, state: state)[0]
        return (0..<ids.count).map { Array(all[$0 * model.config.vocabSize..<($0 + 1) * model.config.vocabSize]) }
    }
    return try ids.enumerated().map { i, id in
        try model.forward(model.plan([ForwardItem(tokens: [id], start: i, blocks: [0, 1], logits: .last)], layout: layout),
                          cache: cache, state: state)[0]
    }
}

/// The description of the error `body` throws, "" when it throws none.
func thrownText(_ body: () throws -> Void) -> String {
    do { try body(); return "" } catch { return "\(error)" }
}

func maxRelativeError(_ ours: [[Float]], _ reference: [[Double]]) -> Double {
    let scale = reference.flatMap { $0 }.map(abs).max() ?? 1
    var worst = 0.0
    for (a, b) in zip(ours, reference) { for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - y)) } }
    return worst / max(scale, 1)
}

@Suite(.serialized) struct AWQModelTests {
    @Test func autoAWQDirectoryLoadsInPlace() throws {
        let fixture = try AWQFixture()
        let config = try ModelConfig.load(directory: AWQFixture.model)
        let weights = try ModelWeights.load(directory: AWQFixture.model, config: config)
        #expect(weights.isAWQ && weights.awqGroupSize == fixture.groupSize)
        let q = try #require(weights.layers[0].awq).q
        #expect(q.qweight.shape == [config.hiddenSize, config.qDim / 8] && q.qweight.dtype == .i32)
        #expect(q.scales.shape == [config.hiddenSize / fixture.groupSize, config.qDim] && q.scales.dtype == .f16)
        #expect(weights.layers[0].q.shape == [0, config.hiddenSize], "the dense view of an AWQ linear must be empty")
        // int4 linears: (4 bits + fp16 scale + 4-bit zero per group) of fp16's 16 bits.
        let ratio = Double(weights.linearWeightBytes) / Double(fixture.fp16LinearBytes)
        #expect(abs(ratio - (4 + 16.0 / 64 + 4.0 / 64) / 16) < 1e-9, "AutoAWQ linear bytes ratio \(ratio)")
    }

    @Test func packingMatchesNumpy() throws {
        let fixture = try AWQFixture()
        // Values → int32 words with AWQ's nibble order, as numpy packed them.
        for (r, row) in fixture.packInput.enumerated() {
            for c in 0..<(row.count / 8) {
                var word: UInt32 = 0
                for s in 0..<8 { word |= UInt32(row[8 * c + AWQPacking.order[s]]) << (4 * UInt32(s)) }
                #expect(Int32(bitPattern: word) == fixture.packOutput[r * row.count / 8 + c], "row \(r) word \(c)")
            }
        }
        // And back: AWQWeights.value reads what the packer wrote.
        let config = try ModelConfig.load(directory: AWQFixture.model)
        let w = try #require(try ModelWeights.load(directory: AWQFixture.model, config: config).layers[1].awq).down
        var counts = [Int](repeating: 0, count: 16)
        for r in 0..<w.outFeatures { for c in 0..<w.inFeatures { counts[w.value(row: r, column: c)] += 1 } }
        #expect(counts.allSatisfy { $0 > 0 }, "every uint4 value should occur in an RTN-quantized matrix: \(counts)")
    }

    @Test func logitsMatchDequantizedReference() throws {
        let fixture = try AWQFixture()
        let config = try ModelConfig.load(directory: AWQFixture.model)
        let weights = try ModelWeights.load(directory: AWQFixture.model, config: config)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: weights)
        let prefill = try awqLogits(model, fixture.ids, decode: false)
        let decode = try awqLogits(model, fixture.ids, decode: true)
        let e1 = maxRelativeError(prefill, fixture.logits), e2 = maxRelativeError(decode, fixture.logits)
        #expect(e1 < 1e-4, "prefill (W4A16 GEMM) vs numpy float64: \(e1)")
        // Decode on AVX-512 runs the inputs as int16 per group (ck_int4.h): it must stay closer to
        // float64 than fp16 activations would (what lmdeploy's A16 computes), and near fp32 elsewhere.
        #expect(e2 < fixture.fp16ActivationError, "decode (W4A16 GEMV) vs numpy float64: \(e2), fp16 activations: \(fixture.fp16ActivationError)")
    }

    @Test func worksWithInt8KVCache() throws {
        let fixture = try AWQFixture()
        let config = try ModelConfig.load(directory: AWQFixture.model)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: try ModelWeights.load(directory: AWQFixture.model, config: config))
        // Asymmetric int8 over [-8, 8] for every head: coarse enough to change the logits a little, no more.
        let kv = config.numKeyValueHeads
        let params = try KVQuantParameters(layers: config.numHiddenLayers, kvHeads: kv, granularity: .perHead,
                                           values: (0..<config.numHiddenLayers * kv).flatMap { _ in [16.0 / 255, 0, 16.0 / 255, 0] as [Float] })
        let int8 = try awqLogits(model, fixture.ids, decode: true, kv: .int8, quant: params)
        let error = maxRelativeError(int8, fixture.logits)
        #expect(error < 0.05 && error > 0, "int8 KV with W4A16 weights vs float64: \(error)")
    }

    @Test func badCheckpointsAreRefused() throws {
        // bits ≠ 4
        var dir = try AWQFixture.copy()
        try #"{"quant_method": "awq", "bits": 8, "group_size": 64, "zero_point": true, "version": "gemm"}"#
            .write(to: dir.appendingPathComponent("quant_config.json"), atomically: true, encoding: .utf8)
        var config = try ModelConfig.load(directory: dir)
        do {
            let e = thrownText { _ = try ModelWeights.load(directory: dir, config: config) }
            #expect(e.contains("bits") && e.contains("4"), "\(e)")
        }
        // GEMV packing
        try #"{"w_bit": 4, "q_group_size": 64, "zero_point": true, "version": "GEMV"}"#
            .write(to: dir.appendingPathComponent("quant_config.json"), atomically: true, encoding: .utf8)
        do {
            let e = thrownText { _ = try ModelWeights.load(directory: dir, config: config) }
            #expect(e.contains("gemm"), "\(e)")
        }
        // A group size that does not match the tensors (AutoAWQ spelling accepted).
        try #"{"w_bit": 4, "q_group_size": 32, "zero_point": true, "version": "gemm"}"#
            .write(to: dir.appendingPathComponent("quant_config.json"), atomically: true, encoding: .utf8)
        do {
            let e = thrownText { _ = try ModelWeights.load(directory: dir, config: config) }
            #expect(e.contains("qzeros") || e.contains("scales"), "\(e)")
        }
        // No quant config at all (config.json's quantization_config removed too).
        try FileManager.default.removeItem(at: dir.appendingPathComponent("quant_config.json"))
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as? [String: Any])
        json["quantization_config"] = nil
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
        config = try ModelConfig.load(directory: dir)
        do {
            let e = thrownText { _ = try ModelWeights.load(directory: dir, config: config) }
            #expect(e.contains("quant_config.json"), "\(e)")
        }
        try? FileManager.default.removeItem(at: dir)
        // config.json's quantization_config alone is enough.
        dir = try AWQFixture.copy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("quant_config.json"))
        config = try ModelConfig.load(directory: dir)
        #expect(try ModelWeights.load(directory: dir, config: config).awqGroupSize == 64)
        try? FileManager.default.removeItem(at: dir)
    }
}
