// ModelWeights: every architecture's HF naming loads into the canonical layout with the values written,
// InternLM2's fused wqkv splits back into the q/k/v it was built from, and bad checkpoints are named.

import Foundation
import Testing
@testable import TurboMind

@Suite("ModelWeights")
struct ModelWeightsTests {
    /// Checks every loaded tensor against the canonical weights TinyModel generated (exact: both are the
    /// same dtype-rounded values).
    static func expectEqual(_ loaded: ModelWeights, _ expected: TinyModel.Weights, _ config: ModelConfig) {
        let (h, i, v, q, kv) = (config.hiddenSize, config.intermediateSize, config.vocabSize, config.qDim, config.kvDim)
        func check(_ tensor: TensorView, _ shape: [Int], _ values: [Float], _ label: String) {
            #expect(tensor.shape == shape, "\(label): shape \(tensor.shape), expected \(shape)")
            #expect(firstDifference(tensor.toFloatArray(), values) == nil, "\(label) values differ")
        }
        func checkBias(_ tensor: TensorView?, _ values: [Float]?, _ label: String) {
            #expect((tensor == nil) == (values == nil), "\(label): present \(tensor != nil), expected \(values != nil)")
            if let tensor, let values { #expect(firstDifference(tensor.toFloatArray(), values) == nil, "\(label) values differ") }
        }
        check(loaded.embed, [v, h], expected.embed, "embed")
        check(loaded.norm, [h], expected.norm, "norm")
        check(loaded.lmHead, [v, h], expected.lmHead, "lmHead")
        #expect(loaded.layers.count == expected.layers.count)
        for (n, (layer, reference)) in zip(loaded.layers, expected.layers).enumerated() {
            check(layer.attnNorm, [h], reference.attnNorm, "layer \(n) attnNorm")
            check(layer.q, [q, h], reference.q, "layer \(n) q")
            check(layer.k, [kv, h], reference.k, "layer \(n) k")
            check(layer.v, [kv, h], reference.v, "layer \(n) v")
            check(layer.o, [h, q], reference.o, "layer \(n) o")
            check(layer.ffnNorm, [h], reference.ffnNorm, "layer \(n) ffnNorm")
            check(layer.gate, [i, h], reference.gate, "layer \(n) gate")
            check(layer.up, [i, h], reference.up, "layer \(n) up")
            check(layer.down, [h, i], reference.down, "layer \(n) down")
            checkBias(layer.qBias, reference.qBias, "layer \(n) qBias")
            checkBias(layer.kBias, reference.kBias, "layer \(n) kBias")
            checkBias(layer.vBias, reference.vBias, "layer \(n) vBias")
            checkBias(layer.oBias, reference.oBias, "layer \(n) oBias")
        }
    }

    /// Where two arrays first differ, as a short description (nil when equal), to keep failure output readable.
    static func firstDifference(_ actual: [Float], _ expected: [Float]) -> String? {
        if actual.count != expected.count { return "count \(actual.count) vs \(expected.count)" }
        guard let index = actual.indices.first(where: { actual[$0] != expected[$0] }) else { return nil }
        return "index \(index): \(actual[index]) vs \(expected[index])"
    }

    @Test("TinyModel of each architecture loads with the values written", arguments: Architecture.allCases)
    func loadsEachArchitecture(architecture: Architecture) throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir, architecture: architecture, seed: 7)
        #expect(config.architecture == architecture)
        let weights = try ModelWeights.load(directory: dir, config: config)
        ModelWeightsTests.expectEqual(weights, TinyModel.weights(for: config, dtype: .bf16, seed: 7), config)
        #expect(weights.embed.dtype == .bf16)
        switch architecture {
        case .qwen2:
            #expect(weights.layers[0].qBias != nil && weights.layers[0].oBias == nil)
        case .internlm:
            #expect(weights.layers[0].qBias != nil && weights.layers[0].oBias != nil)
            #expect(config.numKeyValueHeads == config.numAttentionHeads)
        case .llama, .mistral, .internlm2:
            #expect(weights.layers[0].qBias == nil && weights.layers[0].oBias == nil)
        }
    }

    @Test("every stored dtype, sharded and tied", arguments: [DType.bf16, .f16, .f32])
    func dtypesShardedTied(dtype: DType) throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir, dtype: dtype, tied: true, sharded: true, seed: 3)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors.index.json").path))
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path))
        let checkpoint = try SafetensorsCheckpoint(directory: dir)
        #expect(checkpoint.files.count == 2)
        let weights = try ModelWeights.load(checkpoint: checkpoint, config: config)
        ModelWeightsTests.expectEqual(weights, TinyModel.weights(for: config, dtype: dtype, seed: 3), config)
        #expect(weights.lmHead.dtype == dtype)
        #expect(weights.lmHead.data.baseAddress == weights.embed.data.baseAddress, "tied head shares the embedding bytes")
        #expect(weights.lmHead.name == "lm_head.weight")
    }

    @Test("InternLM2 wqkv (grouped layout) splits into the q, k, v it was fused from, biases too")
    func internlm2Split() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        // 8 query heads over 2 kv heads: 4 query heads per group, so a wrong grouping would show.
        let config = try TinyModel.write(to: dir, architecture: .internlm2, hidden: 64, layers: 2, heads: 8, kvHeads: 2,
                                         dtype: .f32, seed: 11, bias: true)
        #expect(config.headDim == 8 && config.queryHeadsPerKVHead == 4)
        let weights = try ModelWeights.load(directory: dir, config: config)
        let reference = TinyModel.weights(for: config, dtype: .f32, seed: 11)
        ModelWeightsTests.expectEqual(weights, reference, config)

        // Independently of TinyModel's fusing: row r of the fused tensor belongs to group r / (6·d);
        // within the group, the first 4·d rows are q, then d rows of k, then d rows of v.
        let fused = try SafetensorsCheckpoint(directory: dir).tensor("model.layers.1.attention.wqkv.weight").toFloatArray()
        let (d, hidden) = (8, 64)
        let layer = weights.layers[1]
        let (q, k, v) = (layer.q.toFloatArray(), layer.k.toFloatArray(), layer.v.toFloatArray())
        for row in 0..<(6 * d * 2) {
            let group = row / (6 * d), within = row % (6 * d)
            let fusedRow = Array(fused[(row * hidden)..<((row + 1) * hidden)])
            let splitRow: [Float]
            if within < 4 * d {
                let qRow = group * 4 * d + within
                splitRow = Array(q[(qRow * hidden)..<((qRow + 1) * hidden)])
            } else if within < 5 * d {
                let kRow = group * d + within - 4 * d
                splitRow = Array(k[(kRow * hidden)..<((kRow + 1) * hidden)])
            } else {
                let vRow = group * d + within - 5 * d
                splitRow = Array(v[(vRow * hidden)..<((vRow + 1) * hidden)])
            }
            #expect(ModelWeightsTests.firstDifference(fusedRow, splitRow) == nil, "fused row \(row)")
        }
        #expect(layer.q.name == "model.layers.1.attention.wq.weight")
        #expect(layer.kBias?.name == "model.layers.1.attention.wk.bias")
    }

    /// Writes a tiny Llama checkpoint whose tensors `edit` may change (dtype per tensor, shape, presence).
    static func writeEdited(_ dir: URL, edit: (inout [(TinyModel.Tensor, DType)]) -> Void) throws -> ModelConfig {
        let config = try TinyModel.write(to: dir)
        var tensors = TinyModel.hfTensors(config: config, weights: TinyModel.weights(for: config, dtype: .bf16)).map { ($0, DType.bf16) }
        edit(&tensors)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        try TinyModel.writeCheckpoint(tensors, to: dir, sharded: false)
        return config
    }

    @Test("mixed float dtypes are fine; each tensor reports its own")
    func mixedDTypes() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try ModelWeightsTests.writeEdited(dir) { tensors in
            // bf16 values stay exact in f32; norm scales (≈ 1) stay exact in f16 too (more mantissa bits,
            // and far from f16's subnormal range, unlike small matrix entries).
            for index in tensors.indices where tensors[index].0.name.hasSuffix("norm.weight") { tensors[index].1 = .f32 }
            for index in tensors.indices where tensors[index].0.name.hasSuffix("input_layernorm.weight") { tensors[index].1 = .f16 }
            for index in tensors.indices where tensors[index].0.name.contains("k_proj") { tensors[index].1 = .f32 }
        }
        let weights = try ModelWeights.load(directory: dir, config: config)
        #expect(weights.norm.dtype == .f32 && weights.layers[0].ffnNorm.dtype == .f32)
        #expect(weights.layers[0].attnNorm.dtype == .f16)
        #expect(weights.layers[1].k.dtype == .f32 && weights.layers[1].q.dtype == .bf16)
        ModelWeightsTests.expectEqual(weights, TinyModel.weights(for: config, dtype: .bf16), config)
    }

    @Test("a wrongly shaped tensor names itself, the expected and the actual shape")
    func wrongShape() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try ModelWeightsTests.writeEdited(dir) { tensors in
            let index = tensors.firstIndex { $0.0.name == "model.layers.1.mlp.up_proj.weight" }!
            tensors[index].0.shape = [64, 96]  // transposed
        }
        let error = #expect(throws: FormatError.self) { try ModelWeights.load(directory: dir, config: config) }
        let message = error?.description ?? ""
        #expect(message.contains("model.layers.1.mlp.up_proj.weight") && message.contains("[96, 64]")
            && message.contains("[64, 96]") && message.contains("model.safetensors"), "\(message)")
    }

    @Test("a missing tensor names itself and the files searched")
    func missingTensor() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try ModelWeightsTests.writeEdited(dir) { tensors in
            tensors.removeAll { $0.0.name == "model.layers.0.self_attn.v_proj.weight" }
        }
        let error = #expect(throws: FormatError.self) { try ModelWeights.load(directory: dir, config: config) }
        let message = error?.description ?? ""
        #expect(message.contains("model.layers.0.self_attn.v_proj.weight")
            && message.contains(dir.appendingPathComponent("model.safetensors").path), "\(message)")
    }

    @Test("untied model without lm_head.weight is an error, not a silent tie")
    func missingHead() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try ModelWeightsTests.writeEdited(dir) { tensors in tensors.removeAll { $0.0.name == "lm_head.weight" } }
        let error = #expect(throws: FormatError.self) { try ModelWeights.load(directory: dir, config: config) }
        #expect(error?.description.contains("lm_head.weight") == true)
    }

    @Test("an integer-typed weight is refused with its name and dtype")
    func integerWeight() throws {
        let dir = try TinyModel.makeTemporaryDirectory("w")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir)
        let tensors = TinyModel.hfTensors(config: config, weights: TinyModel.weights(for: config, dtype: .bf16))
        var writer = SafetensorsWriter()
        for tensor in tensors {
            if tensor.name == "model.norm.weight" {
                try writer.add(name: tensor.name, dtype: .i32, shape: tensor.shape, bytes: [UInt8](repeating: 0, count: tensor.values.count * 4))
            } else {
                try writer.add(name: tensor.name, shape: tensor.shape, values: tensor.values, dtype: .bf16)
            }
        }
        try writer.write(to: dir.appendingPathComponent("model.safetensors"))  // atomically replaces the old file
        let error = #expect(throws: FormatError.self) { try ModelWeights.load(directory: dir, config: config) }
        let message = error?.description ?? ""
        #expect(message.contains("'model.norm.weight'") && message.contains("I32"), "\(message)")
    }

    @Test("TinyModel is deterministic and seeds differ")
    func tinyModelDeterminism() throws {
        let dir1 = try TinyModel.makeTemporaryDirectory("w"), dir2 = try TinyModel.makeTemporaryDirectory("w")
        defer {
            try? FileManager.default.removeItem(at: dir1)
            try? FileManager.default.removeItem(at: dir2)
        }
        try TinyModel.write(to: dir1, seed: 5)
        try TinyModel.write(to: dir2, seed: 5)
        let a = try Data(contentsOf: dir1.appendingPathComponent("model.safetensors"))
        let b = try Data(contentsOf: dir2.appendingPathComponent("model.safetensors"))
        #expect(a == b)
        let config = try ModelConfig.load(directory: dir1)
        let embed5 = TinyModel.weights(for: config, dtype: .f32, seed: 5).embed
        let embed6 = TinyModel.weights(for: config, dtype: .f32, seed: 6).embed
        #expect(ModelWeightsTests.firstDifference(embed5, embed6) != nil, "different seeds give different weights")
        // Standard deviation ≈ 0.05: 8192 samples give a relative standard error of about 0.8%; allow 10%.
        let mean = embed5.reduce(0, +) / Float(embed5.count)
        let std = (embed5.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(embed5.count)).squareRoot()
        #expect(abs(std - 0.05) < 0.005 && abs(mean) < 0.005, "mean \(mean), std \(std)")
    }
}

@Suite("ModelWeights: real SmolLM2")
struct RealModelWeightsTests {
    /// The real SmolLM2-135M-Instruct directory that Scripts/fetch-test-model builds
    /// ($LMDEPLOY_TEST_MODEL, else $LMDEPLOY_CACHE or ~/.cache/lmdeploy-swift, /smollm2-135m-instruct).
    static func modelDirectory() -> URL? {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["LMDEPLOY_TEST_MODEL"] { return URL(fileURLWithPath: path) }
        let cache = environment["LMDEPLOY_CACHE"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/lmdeploy-swift")
        return cache.appendingPathComponent("smollm2-135m-instruct")
    }

    @Test("every tensor loads under its canonical name with the manifest's shape, sum and abs sum")
    func matchesManifest() throws {
        guard let dir = RealModelWeightsTests.modelDirectory(),
              FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path) else {
            Issue.record("the SmolLM2 test model is missing: run Scripts/fetch-test-model")
            return
        }
        let config = try ModelConfig.load(directory: dir)
        let weights = try ModelWeights.load(directory: dir, config: config)
        let manifestData = try Data(contentsOf: FormatFixtures.smollm2.appendingPathComponent("weights-manifest.json"))
        let manifest = try JSONSerialization.jsonObject(with: manifestData) as! [String: [String: Any]]

        var named: [(String, TensorView)] = [("model.embed_tokens.weight", weights.embed), ("model.norm.weight", weights.norm)]
        for (n, layer) in weights.layers.enumerated() {
            let p = "model.layers.\(n)."
            named += [(p + "input_layernorm.weight", layer.attnNorm), (p + "post_attention_layernorm.weight", layer.ffnNorm),
                      (p + "self_attn.q_proj.weight", layer.q), (p + "self_attn.k_proj.weight", layer.k),
                      (p + "self_attn.v_proj.weight", layer.v), (p + "self_attn.o_proj.weight", layer.o),
                      (p + "mlp.gate_proj.weight", layer.gate), (p + "mlp.up_proj.weight", layer.up),
                      (p + "mlp.down_proj.weight", layer.down)]
        }
        #expect(named.count == manifest.count, "the canonical weights cover every tensor of the checkpoint")
        for (name, tensor) in named {
            guard let reference = manifest[name] else {
                Issue.record("\(name) is not in the manifest")
                continue
            }
            #expect(tensor.name == name)
            #expect(tensor.dtype == .bf16)
            #expect(tensor.shape == (reference["shape"] as! [Int]), "\(name)")
            var sum = 0.0, absSum = 0.0
            // Straight over the mapped bf16 bits (a plain pointer loop keeps this quick in debug builds).
            let base = tensor.data.baseAddress!
            for index in 0..<tensor.elementCount {
                let value = Double(Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)) << 16))
                sum += value
                absSum += abs(value)
            }
            // Both sides sum exact bf16 values in float64; rounding differences from the summation order are
            // ~sqrt(n)·1e-16 of the abs sum. 1e-9 of the abs sum leaves a wide margin yet catches a swapped or
            // misplaced tensor, whose sums differ in the leading digits.
            let tolerance = 1e-9 * max(reference["abs_sum"] as! Double, 1)
            #expect(abs(sum - (reference["sum"] as! Double)) <= tolerance, "\(name): sum \(sum)")
            #expect(abs(absSum - (reference["abs_sum"] as! Double)) <= tolerance, "\(name): abs sum \(absSum)")
        }
        #expect(config.tieWordEmbeddings)
        #expect(weights.lmHead.data.baseAddress == weights.embed.data.baseAddress, "tied LM head is the embedding table")
    }
}
