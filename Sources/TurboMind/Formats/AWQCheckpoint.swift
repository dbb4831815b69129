// Reading AutoAWQ checkpoints (what `lmdeploy lite auto_awq`, AutoAWQ and vLLM users write): an HF
// directory whose linear layers are `P.qweight` (int32 [in, out/8]), `P.qzeros` (int32 [in/G, out/8])
// and `P.scales` (fp16 [in/G, out]) in AWQ's GEMM packing, described by quant_config.json (or
// config.json's `quantization_config`). Norms, embeddings and the LM head stay fp16. The packed
// tensors are used in place (mmapped); the backend repacks them for its kernels.

import Foundation
import Tokenizers

/// The quantization an AWQ checkpoint declares.
public struct AWQQuantConfig: Sendable, Equatable {
    public var bits: Int
    public var groupSize: Int
    public var zeroPoint: Bool
    public var version: String
    /// The file it was read from (for errors).
    public var file: String

    public static let fileName = "quant_config.json"

    /// The quantization of the checkpoint in `directory`: quant_config.json, else config.json's
    /// `quantization_config` with `quant_method` "awq"; nil when neither says AWQ.
    public static func load(directory: URL) throws -> AWQQuantConfig? {
        let quantURL = directory.appendingPathComponent(fileName)
        if FileManager.default.fileExists(atPath: quantURL.path) {
            return try parse(object(quantURL), file: quantURL.path)
        }
        let configURL = directory.appendingPathComponent(ModelConfig.fileName)
        guard FileManager.default.fileExists(atPath: configURL.path),
              let q = try object(configURL)["quantization_config"] as? [String: Any] else { return nil }
        return try parse(q, file: configURL.path + " (quantization_config)")
    }

    private static func object(_ url: URL) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: url.path), FoundationJSONGuard.accepts(data),
              let value = try? JSONSerialization.jsonObject(with: data), let top = value as? [String: Any] else {
            throw FormatError.invalid(file: url.path, field: "contents", expected: "a JSON object")
        }
        return top
    }

    /// Accepts both spellings: transformers' (`bits`, `group_size`) and AutoAWQ's (`w_bit`, `q_group_size`).
    static func parse(_ q: [String: Any], file: String) throws -> AWQQuantConfig? {
        if let method = q["quant_method"] as? String, method.lowercased() != "awq" { return nil }
        func int(_ keys: [String]) throws -> Int {
            for key in keys {
                if let v = q[key] as? Int { return v }
                if q[key] != nil { throw FormatError.invalidConfigValue(file: file, key: key, value: "\(q[key]!)", expected: "an integer") }
            }
            throw FormatError.missingConfigKey(file: file, key: keys.joined(separator: " or "))
        }
        let config = AWQQuantConfig(bits: try int(["bits", "w_bit"]), groupSize: try int(["group_size", "q_group_size"]),
                                    zeroPoint: (q["zero_point"] as? Bool) ?? true,
                                    version: ((q["version"] as? String) ?? "gemm").lowercased(), file: file)
        try config.check()
        return config
    }

    /// What the W4A16 kernels run: 4 bits, zero points, GEMM packing, groups of a multiple of 32.
    func check() throws {
        guard bits == 4 else {
            throw FormatError.invalidConfigValue(file: file, key: "bits", value: "\(bits)", expected: "4 (only 4-bit AWQ weights are supported)")
        }
        guard zeroPoint else {
            throw FormatError.invalidConfigValue(file: file, key: "zero_point", value: "false", expected: "true (symmetric AWQ is not supported)")
        }
        guard version == "gemm" else {
            throw FormatError.invalidConfigValue(file: file, key: "version", value: version,
                                                 expected: "gemm (AutoAWQ's GEMM packing; GEMV/Marlin/ExLlama layouts are not supported)")
        }
        guard groupSize > 0, groupSize % 32 == 0 else {
            throw FormatError.invalidConfigValue(file: file, key: "group_size", value: "\(groupSize)",
                                                 expected: "a positive multiple of 32 (32, 64, 128; per-channel -1 is not supported)")
        }
    }
}

extension ModelWeights {
    /// True when the decoder's linear layers are AWQ 4-bit.
    public var isAWQ: Bool { layers.first?.awq != nil }

    /// The AWQ group size, 0 for dense weights.
    public var awqGroupSize: Int { layers.first?.awq?.q.groupSize ?? 0 }

    /// Bytes of the decoder's linear weights as stored (packed, zeros and scales for AWQ).
    public var linearWeightBytes: Int {
        layers.reduce(0) { sum, l in
            if let a = l.awq { return sum + a.all.reduce(0) { $0 + $1.byteCount } }
            return sum + [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce(0) { $0 + $1.data.count }
        }
    }

    /// Whether `checkpoint` holds AutoAWQ-packed linears.
    static func hasAWQTensors(_ checkpoint: SafetensorsCheckpoint) -> Bool {
        checkpoint.contains("model.layers.0.self_attn.q_proj.qweight")
    }

    /// Loads an AutoAWQ checkpoint (Llama naming: Llama, Mistral, Qwen2, InternLM).
    static func loadAWQ(checkpoint: SafetensorsCheckpoint, config: ModelConfig) throws -> ModelWeights {
        let dir = checkpoint.directory
        guard let quant = try AWQQuantConfig.load(directory: dir) else {
            throw FormatError.fileNotFound(file: dir.appendingPathComponent(AWQQuantConfig.fileName).path,
                                           what: "the AWQ quantization config (bits, group_size) of a checkpoint with AutoAWQ tensors (qweight/qzeros/scales)")
        }
        switch config.architecture {
        case .llama, .mistral, .qwen2, .internlm: break
        case .internlm2:
            throw FormatError.invalid(file: dir.appendingPathComponent(ModelConfig.fileName).path, field: "architectures",
                                      expected: "a Llama-naming model for AWQ checkpoints (InternLM2's fused wqkv is not supported in int4)")
        }
        let hidden = config.hiddenSize, inter = config.intermediateSize, vocab = config.vocabSize
        let g = quant.groupSize
        func file(_ name: String) -> String { checkpoint.file(containing: name)?.url.path ?? dir.path }
        func tensor(_ name: String, _ shape: [Int], _ dtype: DType) throws -> TensorView {
            let t = try checkpoint.tensor(name)
            guard t.dtype == dtype else {
                throw FormatError.unsupportedDType(file: file(name), tensor: name, dtype: t.dtype, supported: [dtype])
            }
            guard t.shape == shape else { throw FormatError.shapeMismatch(file: file(name), tensor: name, expected: shape, actual: t.shape) }
            return t
        }
        func dense(_ name: String, _ shape: [Int]) throws -> TensorView {
            let t = try checkpoint.weight(name)
            guard t.shape == shape else { throw FormatError.shapeMismatch(file: file(name), tensor: name, expected: shape, actual: t.shape) }
            return t
        }
        func linear(_ base: String, out: Int, in inFeatures: Int) throws -> AWQWeights {
            guard inFeatures % g == 0 else {
                throw FormatError.invalidConfigValue(file: quant.file, key: "group_size", value: "\(g)",
                                                     expected: "a divisor of \(base)'s \(inFeatures) input features")
            }
            guard out % 8 == 0 else {
                throw FormatError.invalid(file: file(base + ".qweight"), field: base, expected: "a multiple of 8 output features for AWQ packing (has \(out))")
            }
            return AWQWeights(qweight: try tensor(base + ".qweight", [inFeatures, out / 8], .i32),
                              qzeros: try tensor(base + ".qzeros", [inFeatures / g, out / 8], .i32),
                              scales: try tensor(base + ".scales", [inFeatures / g, out], .f16),
                              groupSize: g, inFeatures: inFeatures, outFeatures: out)
        }
        func placeholder(_ base: String, _ inFeatures: Int) -> TensorView {
            // Dense views of AWQ linears are empty: nothing can mistake them for weights.
            TensorView(name: base + ".weight (AWQ int4: see qweight)", dtype: .f16, shape: [0, inFeatures]) { _ in }
        }
        let embed = try dense("model.embed_tokens.weight", [vocab, hidden])
        let norm = try dense("model.norm.weight", [hidden])
        let tied = config.tieWordEmbeddings && !checkpoint.contains("lm_head.weight")
        let head = try tied ? embed.renamed("lm_head.weight") : dense("lm_head.weight", [vocab, hidden])
        let (qDim, kvDim) = (config.qDim, config.kvDim)
        var layers: [LayerWeights] = []
        for index in 0..<config.numHiddenLayers {
            let p = "model.layers.\(index)."
            let awq = AWQLayerWeights(
                q: try linear(p + "self_attn.q_proj", out: qDim, in: hidden), k: try linear(p + "self_attn.k_proj", out: kvDim, in: hidden),
                v: try linear(p + "self_attn.v_proj", out: kvDim, in: hidden), o: try linear(p + "self_attn.o_proj", out: hidden, in: qDim),
                gate: try linear(p + "mlp.gate_proj", out: inter, in: hidden), up: try linear(p + "mlp.up_proj", out: inter, in: hidden),
                down: try linear(p + "mlp.down_proj", out: hidden, in: inter))
            var layer = LayerWeights(
                attnNorm: try dense(p + "input_layernorm.weight", [hidden]),
                q: placeholder(p + "self_attn.q_proj", hidden), k: placeholder(p + "self_attn.k_proj", hidden),
                v: placeholder(p + "self_attn.v_proj", hidden), o: placeholder(p + "self_attn.o_proj", qDim),
                ffnNorm: try dense(p + "post_attention_layernorm.weight", [hidden]),
                gate: placeholder(p + "mlp.gate_proj", hidden), up: placeholder(p + "mlp.up_proj", hidden),
                down: placeholder(p + "mlp.down_proj", inter))
            layer.awq = awq
            if config.attentionBias {
                layer.qBias = try dense(p + "self_attn.q_proj.bias", [qDim])
                layer.kBias = try dense(p + "self_attn.k_proj.bias", [kvDim])
                layer.vBias = try dense(p + "self_attn.v_proj.bias", [kvDim])
            }
            if config.attentionOutputBias { layer.oBias = try dense(p + "self_attn.o_proj.bias", [hidden]) }
            layers.append(layer)
        }
        return ModelWeights(embed: embed, norm: norm, lmHead: head, layers: layers)
    }
}
