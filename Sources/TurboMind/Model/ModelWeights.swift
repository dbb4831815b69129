// The weights of a Llama-family model under canonical names, whatever the architecture calls them in
// its checkpoint. Every tensor is checked against the config's shapes and must be bf16, f16 or f32.
// Tensors are zero-copy views into the mmapped checkpoint, except the pieces of InternLM2's fused
// `wqkv`, which are copied out into owned buffers once at load.
//
// Linear weights keep PyTorch's layout: [out_features, in_features], row-major.

import Foundation

/// One decoder layer.
public struct LayerWeights: @unchecked Sendable {
    /// [hidden]
    public var attnNorm: TensorView
    /// [heads × headDim, hidden]
    public var q: TensorView
    /// [kvHeads × headDim, hidden]
    public var k: TensorView
    /// [kvHeads × headDim, hidden]
    public var v: TensorView
    /// [hidden, heads × headDim]
    public var o: TensorView
    /// [hidden]
    public var ffnNorm: TensorView
    /// [inter, hidden]
    public var gate: TensorView
    /// [inter, hidden]
    public var up: TensorView
    /// [hidden, inter]
    public var down: TensorView
    /// [heads × headDim] when `config.attentionBias`
    public var qBias: TensorView?
    /// [kvHeads × headDim] when `config.attentionBias`
    public var kBias: TensorView?
    /// [kvHeads × headDim] when `config.attentionBias`
    public var vBias: TensorView?
    /// [hidden] when `config.attentionOutputBias`
    public var oBias: TensorView?
    /// AWQ W4A16 checkpoints: the seven linears in 4 bits. q…down are then empty ([0, in]) views.
    public var awq: AWQLayerWeights? = nil

    public init(attnNorm: TensorView, q: TensorView, k: TensorView, v: TensorView, o: TensorView,
                ffnNorm: TensorView, gate: TensorView, up: TensorView, down: TensorView,
                qBias: TensorView? = nil, kBias: TensorView? = nil, vBias: TensorView? = nil, oBias: TensorView? = nil) {
        self.attnNorm = attnNorm
        self.q = q
        self.k = k
        self.v = v
        self.o = o
        self.ffnNorm = ffnNorm
        self.gate = gate
        self.up = up
        self.down = down
        self.qBias = qBias
        self.kBias = kBias
        self.vBias = vBias
        self.oBias = oBias
    }
}

/// All weights of a model.
public struct ModelWeights: @unchecked Sendable {
    /// [vocab, hidden]
    public var embed: TensorView
    /// [hidden]
    public var norm: TensorView
    /// [vocab, hidden]; the same bytes as `embed` when the embeddings are tied.
    public var lmHead: TensorView
    public var layers: [LayerWeights]

    public init(embed: TensorView, norm: TensorView, lmHead: TensorView, layers: [LayerWeights]) {
        self.embed = embed
        self.norm = norm
        self.lmHead = lmHead
        self.layers = layers
    }

    /// Opens the safetensors checkpoint in `directory` and loads the weights `config` describes.
    public static func load(directory: URL, config: ModelConfig) throws -> ModelWeights {
        try load(checkpoint: SafetensorsCheckpoint(directory: directory), config: config)
    }

    /// Loads the weights `config` describes from an opened checkpoint.
    public static func load(checkpoint: SafetensorsCheckpoint, config: ModelConfig) throws -> ModelWeights {
        let loader = WeightLoader(checkpoint: checkpoint, config: config)
        let weights: ModelWeights
        if hasAWQTensors(checkpoint) {
            weights = try loadAWQ(checkpoint: checkpoint, config: config)
            try checkNoExtraLayers(checkpoint: checkpoint, config: config)
            return weights
        }
        switch config.architecture {
        case .llama, .mistral, .qwen2, .internlm:
            weights = try loader.loadLlamaNaming()
        case .internlm2:
            weights = try loader.loadInternLM2Naming()
        }
        try checkNoExtraLayers(checkpoint: checkpoint, config: config)
        return weights
    }

    /// A checkpoint holding layers past `num_hidden_layers` does not match its config (running the
    /// first layers only gives gibberish): an error naming the extra tensors.
    static func checkNoExtraLayers(checkpoint: SafetensorsCheckpoint, config: ModelConfig) throws {
        var extra: [(layer: Int, name: String)] = []
        for name in checkpoint.tensorNames {
            let parts = name.split(separator: ".", maxSplits: 3)
            guard parts.count > 2, parts[0] == "model", parts[1] == "layers", let index = Int(parts[2]),
                  index >= config.numHiddenLayers || index < 0 else { continue }
            extra.append((index, name))
        }
        guard !extra.isEmpty else { return }
        let layers = Set(extra.map(\.layer)).sorted()
        let file = checkpoint.file(containing: extra[0].name)?.url.path ?? checkpoint.directory.path
        let examples = extra.sorted { ($0.layer, $0.name) < ($1.layer, $1.name) }.prefix(3).map(\.name).joined(separator: ", ")
        throw FormatError.invalid(
            file: file, field: "tensors of layers \(layers.first!)…\(layers.last!)",
            expected: "no layers past num_hidden_layers = \(config.numHiddenLayers) of \(checkpoint.directory.appendingPathComponent(ModelConfig.fileName).path); "
                + "the checkpoint has \(extra.count) unexpected tensors of \(layers.count) extra layers (e.g. \(examples)): config.json does not describe this checkpoint")
    }
}

/// Looks tensors up by HF name, checking dtype and shape.
private struct WeightLoader {
    let checkpoint: SafetensorsCheckpoint
    let config: ModelConfig

    var hidden: Int { config.hiddenSize }
    var inter: Int { config.intermediateSize }
    var vocab: Int { config.vocabSize }

    /// Tensor `name` as a float weight of shape `shape`.
    func weight(_ name: String, _ shape: [Int]) throws -> TensorView {
        let tensor = try checkpoint.weight(name)
        try check(tensor, shape)
        return tensor
    }

    func check(_ tensor: TensorView, _ shape: [Int]) throws {
        guard tensor.shape == shape else {
            let file = checkpoint.file(containing: tensor.name)?.url.path ?? checkpoint.directory.path
            throw FormatError.shapeMismatch(file: file, tensor: tensor.name, expected: shape, actual: tensor.shape)
        }
    }

    /// The LM head, or the embedding table when tied.
    func lmHead(named name: String, embed: TensorView) throws -> TensorView {
        if config.tieWordEmbeddings && !checkpoint.contains(name) { return embed.renamed(name) }
        return try weight(name, [vocab, hidden])
    }

    // MARK: Llama, Mistral, Qwen2, InternLM

    func loadLlamaNaming() throws -> ModelWeights {
        let embed = try weight("model.embed_tokens.weight", [vocab, hidden])
        let norm = try weight("model.norm.weight", [hidden])
        let head = try lmHead(named: "lm_head.weight", embed: embed)
        let (qDim, kvDim) = (config.qDim, config.kvDim)
        var layers: [LayerWeights] = []
        layers.reserveCapacity(config.numHiddenLayers)
        for index in 0..<config.numHiddenLayers {
            let p = "model.layers.\(index)."
            var layer = LayerWeights(
                attnNorm: try weight(p + "input_layernorm.weight", [hidden]),
                q: try weight(p + "self_attn.q_proj.weight", [qDim, hidden]),
                k: try weight(p + "self_attn.k_proj.weight", [kvDim, hidden]),
                v: try weight(p + "self_attn.v_proj.weight", [kvDim, hidden]),
                o: try weight(p + "self_attn.o_proj.weight", [hidden, qDim]),
                ffnNorm: try weight(p + "post_attention_layernorm.weight", [hidden]),
                gate: try weight(p + "mlp.gate_proj.weight", [inter, hidden]),
                up: try weight(p + "mlp.up_proj.weight", [inter, hidden]),
                down: try weight(p + "mlp.down_proj.weight", [hidden, inter]))
            if config.attentionBias {
                layer.qBias = try weight(p + "self_attn.q_proj.bias", [qDim])
                layer.kBias = try weight(p + "self_attn.k_proj.bias", [kvDim])
                layer.vBias = try weight(p + "self_attn.v_proj.bias", [kvDim])
            }
            if config.attentionOutputBias {
                layer.oBias = try weight(p + "self_attn.o_proj.bias", [hidden])
            }
            layers.append(layer)
        }
        return ModelWeights(embed: embed, norm: norm, lmHead: head, layers: layers)
    }

    // MARK: InternLM2

    func loadInternLM2Naming() throws -> ModelWeights {
        let embed = try weight("model.tok_embeddings.weight", [vocab, hidden])
        let norm = try weight("model.norm.weight", [hidden])
        let head = try lmHead(named: "output.weight", embed: embed)
        let (qDim, kvDim) = (config.qDim, config.kvDim)
        let fusedRows = qDim + 2 * kvDim
        var layers: [LayerWeights] = []
        layers.reserveCapacity(config.numHiddenLayers)
        for index in 0..<config.numHiddenLayers {
            let p = "model.layers.\(index)."
            let wqkv = try weight(p + "attention.wqkv.weight", [fusedRows, hidden])
            let (q, k, v) = splitGroupedQKV(wqkv, prefix: p + "attention.")
            var layer = LayerWeights(
                attnNorm: try weight(p + "attention_norm.weight", [hidden]),
                q: q, k: k, v: v,
                o: try weight(p + "attention.wo.weight", [hidden, qDim]),
                ffnNorm: try weight(p + "ffn_norm.weight", [hidden]),
                gate: try weight(p + "feed_forward.w1.weight", [inter, hidden]),
                up: try weight(p + "feed_forward.w3.weight", [inter, hidden]),
                down: try weight(p + "feed_forward.w2.weight", [hidden, inter]))
            if config.attentionBias {
                let bias = try weight(p + "attention.wqkv.bias", [fusedRows])
                let (qb, kb, vb) = splitGroupedQKV(bias, prefix: p + "attention.")
                (layer.qBias, layer.kBias, layer.vBias) = (qb, kb, vb)
            }
            if config.attentionOutputBias {
                layer.oBias = try weight(p + "attention.wo.bias", [hidden])
            }
            layers.append(layer)
        }
        return ModelWeights(embed: embed, norm: norm, lmHead: head, layers: layers)
    }

    /// Splits InternLM2's fused `wqkv` (weight [rows, hidden] or bias [rows]). Its rows are grouped per
    /// key/value head: [kvHeads][queryHeadsPerKVHead + 2][headDim] — each group's query heads, then its
    /// key head, then its value head. Returns q [heads·d, …], k and v [kvHeads·d, …] in owned storage.
    func splitGroupedQKV(_ fused: TensorView, prefix: String) -> (TensorView, TensorView, TensorView) {
        let d = config.headDim
        let perGroup = config.queryHeadsPerKVHead
        let groups = config.numKeyValueHeads
        let rowBytes = fused.rowByteCount
        let trailing = Array(fused.shape.dropFirst())
        let suffix = fused.name.hasSuffix(".bias") ? ".bias" : ".weight"
        let source = fused.data

        func gather(_ name: String, rowsPerGroup: Int, offsetInGroup: Int) -> TensorView {
            TensorView(name: prefix + name + suffix, dtype: fused.dtype, shape: [groups * rowsPerGroup * d] + trailing) { out in
                let chunk = rowsPerGroup * d * rowBytes
                for group in 0..<groups {
                    let sourceRow = (group * (perGroup + 2) + offsetInGroup) * d
                    let from = UnsafeRawBufferPointer(rebasing: source[(sourceRow * rowBytes)..<(sourceRow * rowBytes + chunk)])
                    UnsafeMutableRawBufferPointer(rebasing: out[(group * chunk)..<((group + 1) * chunk)]).copyMemory(from: from)
                }
            }
        }
        let q = gather("wq", rowsPerGroup: perGroup, offsetInGroup: 0)
        let k = gather("wk", rowsPerGroup: 1, offsetInGroup: perGroup)
        let v = gather("wv", rowsPerGroup: 1, offsetInGroup: perGroup + 1)
        return (q, k, v)
    }
}
