// Writes tiny Hugging Face model directories (config.json + safetensors, HF naming of each architecture)
// with deterministic random weights, for tests of loading and of the forward pass.
//
// Every tensor's values come from its own generator, seeded by (seed, canonical Llama-style name), so
// `TinyModel.weights(for:dtype:seed:)` regenerates exactly what `write` stored (already rounded to the
// stored dtype) without reading the files back. InternLM2's fused `wqkv` is built from those same
// canonical q/k/v, so a loader's split can be compared against them.

import Foundation
@testable import TurboMind

enum TinyModel {
    /// Canonical weights of one layer, row-major, as Float values exactly representable in the stored dtype.
    struct Layer {
        var attnNorm, q, k, v, o, ffnNorm, gate, up, down: [Float]
        var qBias, kBias, vBias, oBias: [Float]?
    }

    /// Canonical weights of a model (`lmHead` equals `embed` when tied).
    struct Weights {
        var embed: [Float]
        var norm: [Float]
        var lmHead: [Float]
        var layers: [Layer]
    }

    /// One tensor in the checkpoint's own naming.
    struct Tensor {
        var name: String
        var shape: [Int]
        var values: [Float]
    }

    /// Writes `config.json` and the safetensors checkpoint of a tiny model into `dir` (created if needed)
    /// and returns the config as the loader parses it. InternLM has no GQA, so it uses `kvHeads = heads`.
    /// `bias` overrides the architecture's usual attention-bias setting (Qwen2's q/k/v bias is fixed).
    @discardableResult
    static func write(to dir: URL, architecture: Architecture = .llama, hidden: Int = 64, layers: Int = 2,
                      heads: Int = 4, kvHeads: Int = 2, inter: Int = 96, vocab: Int = 128, dtype: DType = .bf16,
                      tied: Bool = false, sharded: Bool = false, seed: UInt64 = 1, bias: Bool? = nil) throws -> ModelConfig {
        precondition(dtype.isWeightType, "TinyModel stores BF16, F16 or F32 weights")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let json = configJSON(architecture: architecture, hidden: hidden, layers: layers, heads: heads,
                              kvHeads: architecture == .internlm ? heads : kvHeads, inter: inter, vocab: vocab,
                              dtype: dtype, tied: tied, bias: bias)
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: dir.appendingPathComponent("config.json"), options: .atomic)
        let config = try ModelConfig.load(directory: dir)
        let tensors = hfTensors(config: config, weights: weights(for: config, dtype: dtype, seed: seed))
        try writeCheckpoint(tensors.map { ($0, dtype) }, to: dir, sharded: sharded)
        return config
    }

    /// The `config.json` object `write` stores, in the spelling of `architecture`'s HF config class.
    static func configJSON(architecture: Architecture, hidden: Int, layers: Int, heads: Int, kvHeads: Int, inter: Int,
                           vocab: Int, dtype: DType, tied: Bool, bias: Bool? = nil) -> [String: Any] {
        let torchName: String
        switch dtype {
        case .bf16: torchName = "bfloat16"
        case .f16: torchName = "float16"
        default: torchName = "float32"
        }
        var json: [String: Any] = [
            "architectures": [architecture.rawValue],
            "model_type": architecture.modelType,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "vocab_size": vocab,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 256,
            "tie_word_embeddings": tied,
            "torch_dtype": torchName,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "rope_theta": 10000.0,
            "rope_scaling": NSNull(),
        ]
        switch architecture {
        case .llama, .mistral:
            json["num_key_value_heads"] = kvHeads
            json["attention_bias"] = bias ?? false
            if architecture == .mistral { json["sliding_window"] = NSNull() }
        case .qwen2:
            json["num_key_value_heads"] = kvHeads
            json["use_sliding_window"] = false
        case .internlm:
            json["bias"] = bias ?? true
        case .internlm2:
            json["num_key_value_heads"] = kvHeads
            json["bias"] = bias ?? false
        }
        return json
    }

    /// The canonical weights `write` stores for `config`, rounded to `dtype`: normal(0, 0.05) for matrices
    /// and biases, 1 + normal(0, 0.05) for norm scales.
    static func weights(for config: ModelConfig, dtype: DType, seed: UInt64 = 1) -> Weights {
        let (hidden, inter, vocab) = (config.hiddenSize, config.intermediateSize, config.vocabSize)
        let (qDim, kvDim) = (config.qDim, config.kvDim)
        func matrix(_ name: String, _ count: Int) -> [Float] {
            TensorView.rounded(normals(name: name, seed: seed, count: count, mean: 0, std: 0.05), to: dtype)
        }
        func normScale(_ name: String) -> [Float] {
            TensorView.rounded(normals(name: name, seed: seed, count: hidden, mean: 1, std: 0.05), to: dtype)
        }
        let embed = matrix("model.embed_tokens.weight", vocab * hidden)
        let layers = (0..<config.numHiddenLayers).map { index -> Layer in
            let p = "model.layers.\(index)."
            return Layer(
                attnNorm: normScale(p + "input_layernorm.weight"),
                q: matrix(p + "self_attn.q_proj.weight", qDim * hidden),
                k: matrix(p + "self_attn.k_proj.weight", kvDim * hidden),
                v: matrix(p + "self_attn.v_proj.weight", kvDim * hidden),
                o: matrix(p + "self_attn.o_proj.weight", hidden * qDim),
                ffnNorm: normScale(p + "post_attention_layernorm.weight"),
                gate: matrix(p + "mlp.gate_proj.weight", inter * hidden),
                up: matrix(p + "mlp.up_proj.weight", inter * hidden),
                down: matrix(p + "mlp.down_proj.weight", hidden * inter),
                qBias: config.attentionBias ? matrix(p + "self_attn.q_proj.bias", qDim) : nil,
                kBias: config.attentionBias ? matrix(p + "self_attn.k_proj.bias", kvDim) : nil,
                vBias: config.attentionBias ? matrix(p + "self_attn.v_proj.bias", kvDim) : nil,
                oBias: config.attentionOutputBias ? matrix(p + "self_attn.o_proj.bias", hidden) : nil)
        }
        return Weights(embed: embed, norm: normScale("model.norm.weight"),
                       lmHead: config.tieWordEmbeddings ? embed : matrix("lm_head.weight", vocab * hidden),
                       layers: layers)
    }

    /// `weights` under the checkpoint names of `config.architecture` (InternLM2's q/k/v fused into `wqkv`).
    /// The LM head is omitted when the embeddings are tied.
    static func hfTensors(config: ModelConfig, weights: Weights) -> [Tensor] {
        let (hidden, inter, vocab) = (config.hiddenSize, config.intermediateSize, config.vocabSize)
        let (qDim, kvDim) = (config.qDim, config.kvDim)
        var tensors: [Tensor] = []
        func add(_ name: String, _ shape: [Int], _ values: [Float]) {
            precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for \(shape)")
            tensors.append(Tensor(name: name, shape: shape, values: values))
        }
        switch config.architecture {
        case .llama, .mistral, .qwen2, .internlm:
            add("model.embed_tokens.weight", [vocab, hidden], weights.embed)
            for (index, layer) in weights.layers.enumerated() {
                let p = "model.layers.\(index)."
                add(p + "input_layernorm.weight", [hidden], layer.attnNorm)
                add(p + "self_attn.q_proj.weight", [qDim, hidden], layer.q)
                add(p + "self_attn.k_proj.weight", [kvDim, hidden], layer.k)
                add(p + "self_attn.v_proj.weight", [kvDim, hidden], layer.v)
                add(p + "self_attn.o_proj.weight", [hidden, qDim], layer.o)
                if let b = layer.qBias { add(p + "self_attn.q_proj.bias", [qDim], b) }
                if let b = layer.kBias { add(p + "self_attn.k_proj.bias", [kvDim], b) }
                if let b = layer.vBias { add(p + "self_attn.v_proj.bias", [kvDim], b) }
                if let b = layer.oBias { add(p + "self_attn.o_proj.bias", [hidden], b) }
                add(p + "post_attention_layernorm.weight", [hidden], layer.ffnNorm)
                add(p + "mlp.gate_proj.weight", [inter, hidden], layer.gate)
                add(p + "mlp.up_proj.weight", [inter, hidden], layer.up)
                add(p + "mlp.down_proj.weight", [hidden, inter], layer.down)
            }
            add("model.norm.weight", [hidden], weights.norm)
            if !config.tieWordEmbeddings { add("lm_head.weight", [vocab, hidden], weights.lmHead) }
        case .internlm2:
            add("model.tok_embeddings.weight", [vocab, hidden], weights.embed)
            for (index, layer) in weights.layers.enumerated() {
                let p = "model.layers.\(index)."
                add(p + "attention_norm.weight", [hidden], layer.attnNorm)
                add(p + "attention.wqkv.weight", [qDim + 2 * kvDim, hidden],
                    fuseGroupedQKV(q: layer.q, k: layer.k, v: layer.v, config: config, columns: hidden))
                if let qb = layer.qBias, let kb = layer.kBias, let vb = layer.vBias {
                    add(p + "attention.wqkv.bias", [qDim + 2 * kvDim], fuseGroupedQKV(q: qb, k: kb, v: vb, config: config, columns: 1))
                }
                add(p + "attention.wo.weight", [hidden, qDim], layer.o)
                if let b = layer.oBias { add(p + "attention.wo.bias", [hidden], b) }
                add(p + "ffn_norm.weight", [hidden], layer.ffnNorm)
                add(p + "feed_forward.w1.weight", [inter, hidden], layer.gate)
                add(p + "feed_forward.w3.weight", [inter, hidden], layer.up)
                add(p + "feed_forward.w2.weight", [hidden, inter], layer.down)
            }
            add("model.norm.weight", [hidden], weights.norm)
            if !config.tieWordEmbeddings { add("output.weight", [vocab, hidden], weights.lmHead) }
        }
        return tensors
    }

    /// InternLM2's grouped layout: for each key/value head g, the rows of its query heads, then of k head g,
    /// then of v head g (`columns` values per row: hidden for weights, 1 for biases).
    static func fuseGroupedQKV(q: [Float], k: [Float], v: [Float], config: ModelConfig, columns: Int) -> [Float] {
        let d = config.headDim
        let perGroup = config.queryHeadsPerKVHead
        let block = d * columns  // values per head
        var fused: [Float] = []
        fused.reserveCapacity(q.count + k.count + v.count)
        for group in 0..<config.numKeyValueHeads {
            fused += q[(group * perGroup * block)..<((group + 1) * perGroup * block)]
            fused += k[(group * block)..<((group + 1) * block)]
            fused += v[(group * block)..<((group + 1) * block)]
        }
        return fused
    }

    /// Writes `tensors` (each in its own dtype) as `model.safetensors`, or as two shards plus
    /// `model.safetensors.index.json` when `sharded`.
    static func writeCheckpoint(_ tensors: [(Tensor, DType)], to dir: URL, sharded: Bool) throws {
        guard sharded else {
            var writer = SafetensorsWriter(metadata: ["format": "pt"])
            for (tensor, dtype) in tensors {
                try writer.add(name: tensor.name, shape: tensor.shape, values: tensor.values, dtype: dtype)
            }
            try writer.write(to: dir.appendingPathComponent("model.safetensors"))
            return
        }
        let split = (tensors.count + 1) / 2
        let shards = [Array(tensors[..<split]), Array(tensors[split...])]
        var weightMap: [String: String] = [:]
        var totalSize = 0
        for (index, shard) in shards.enumerated() {
            let fileName = String(format: "model-%05d-of-%05d.safetensors", index + 1, shards.count)
            var writer = SafetensorsWriter(metadata: ["format": "pt"])
            for (tensor, dtype) in shard {
                try writer.add(name: tensor.name, shape: tensor.shape, values: tensor.values, dtype: dtype)
                weightMap[tensor.name] = fileName
                totalSize += tensor.values.count * dtype.byteSize
            }
            try writer.write(to: dir.appendingPathComponent(fileName))
        }
        let index: [String: Any] = ["metadata": ["total_size": totalSize], "weight_map": weightMap]
        let data = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: dir.appendingPathComponent("model.safetensors.index.json"), options: .atomic)
    }

    /// A fresh empty directory under the system temporary directory.
    static func makeTemporaryDirectory(_ label: String = "tinymodel") throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("lmdeploy-\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    // MARK: Deterministic random numbers

    /// `count` normal(mean, std) values from a generator seeded by `seed` and the tensor's canonical name.
    static func normals(name: String, seed: UInt64, count: Int, mean: Float, std: Float) -> [Float] {
        var generator = SplitMix64(seed: seed ^ fnv1a(name))
        var values: [Float] = []
        values.reserveCapacity(count)
        while values.count < count {
            // Box–Muller: two uniforms in (0, 1] give two independent standard normals.
            let u1 = (Double(generator.next() >> 11) + 1) * 0x1p-53
            let u2 = Double(generator.next() >> 11) * 0x1p-53
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            values.append(mean + std * Float(radius * cos(2 * Double.pi * u2)))
            if values.count < count { values.append(mean + std * Float(radius * sin(2 * Double.pi * u2))) }
        }
        return values
    }

    /// FNV-1a of the UTF-8 bytes (stable across runs, unlike `Hasher`).
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// Steele, Lea & Flood's SplitMix64.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
