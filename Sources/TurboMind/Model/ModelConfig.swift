// The model hyper-parameters, read from a Hugging Face `config.json`. Decoding goes through `Codable`
// with explicit keys and the defaults each architecture's HF config class uses; the values are checked
// in `init(from:)`, so a bad config fails at load time with the file and the key named.

import Foundation
import Tokenizers

/// The decoder-only model families the engine implements (HF `architectures[0]`).
public enum Architecture: String, Sendable, CaseIterable, Codable {
    case llama = "LlamaForCausalLM"
    case mistral = "MistralForCausalLM"
    case qwen2 = "Qwen2ForCausalLM"
    case internlm = "InternLMForCausalLM"
    case internlm2 = "InternLM2ForCausalLM"

    /// The matching HF `model_type`.
    public var modelType: String {
        switch self {
        case .llama: return "llama"
        case .mistral: return "mistral"
        case .qwen2: return "qwen2"
        case .internlm: return "internlm"
        case .internlm2: return "internlm2"
        }
    }

    init?(modelType: String) {
        guard let match = Architecture.allCases.first(where: { $0.modelType == modelType }) else { return nil }
        self = match
    }
}

/// RoPE frequency scaling (`rope_scaling`, or the scaling part of `rope_parameters`).
public struct RopeScaling: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// Positions divided by `factor` (equivalently, frequencies divided by `factor`).
        case linear
        /// Dynamic NTK: the base grows once the sequence is longer than `max_position_embeddings`.
        case dynamic
        /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth band between.
        case llama3
    }

    public var kind: Kind
    public var factor: Double
    /// llama3 only.
    public var lowFreqFactor: Double?
    /// llama3 only.
    public var highFreqFactor: Double?
    /// llama3 only: the context length the model was pre-trained with.
    public var originalMaxPositionEmbeddings: Int?

    public init(kind: Kind, factor: Double, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
                originalMaxPositionEmbeddings: Int? = nil) {
        self.kind = kind
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
}

/// Hyper-parameters of a Llama-family model.
public struct ModelConfig: Sendable, Decodable, Equatable {
    public var architecture: Architecture
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    /// Equals `numAttentionHeads` when the config has no `num_key_value_heads` (no GQA).
    public var numKeyValueHeads: Int
    /// `head_dim` when given, else `hiddenSize / numAttentionHeads`.
    public var headDim: Int
    public var vocabSize: Int
    /// RMSNorm epsilon (Float: the norm is computed in fp32).
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var maxPositionEmbeddings: Int
    /// When true the checkpoint has no LM head: the embedding table is used.
    public var tieWordEmbeddings: Bool
    /// q, k and v projections have biases (Qwen2 always; InternLM/InternLM2 `bias`; Llama `attention_bias`).
    public var attentionBias: Bool
    /// The output projection has a bias (InternLM/InternLM2 `bias`, Llama `attention_bias`; never Qwen2).
    public var attentionOutputBias: Bool
    public var bosTokenId: Int?
    /// `eos_token_id`, which HF writes as an int or a list; empty when absent.
    public var eosTokenIds: [Int]
    /// `torch_dtype` (or the newer `dtype`) as written, e.g. "bfloat16".
    public var torchDtype: String?
    /// Sliding-window attention span (Mistral `sliding_window`, Qwen2 when `use_sliding_window`); nil = full attention.
    public var slidingWindow: Int?
    /// The layers that use `slidingWindow`; nil = every layer. Qwen2 windows layers ≥ `max_window_layers`
    /// (transformers 5.17: `layer_types[i] = "sliding_attention" if i >= max_window_layers`); an explicit
    /// `layer_types` list wins. Full attention elsewhere.
    public var slidingWindowLayers: Set<Int>? = nil
    /// The MLP activation (`hidden_act`); always "silu" for these architectures.
    public var hiddenAct: String

    public init(architecture: Architecture, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil, vocabSize: Int,
                rmsNormEps: Float = 1e-6, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
                maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                attentionOutputBias: Bool = false, bosTokenId: Int? = nil, eosTokenIds: [Int] = [],
                torchDtype: String? = nil, slidingWindow: Int? = nil, hiddenAct: String = "silu") {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.attentionOutputBias = attentionOutputBias
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.torchDtype = torchDtype
        self.slidingWindow = slidingWindow
        self.hiddenAct = hiddenAct
    }

    // MARK: Derived sizes

    /// Query heads sharing one key/value head.
    public var queryHeadsPerKVHead: Int { numAttentionHeads / numKeyValueHeads }
    /// Rows of the q projection: heads × head_dim.
    public var qDim: Int { numAttentionHeads * headDim }
    /// Rows of the k (and v) projection: kv heads × head_dim.
    public var kvDim: Int { numKeyValueHeads * headDim }
    /// `torchDtype` parsed, when it names a known type.
    public var storedDType: DType? { torchDtype.flatMap(DType.init(torchName:)) }

    // MARK: Loading

    public static let fileName = "config.json"

    /// Reads `directory/config.json`.
    public static func load(directory: URL) throws -> ModelConfig {
        try load(file: directory.appendingPathComponent(fileName))
    }

    /// Reads a config file.
    public static func load(file: URL) throws -> ModelConfig {
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw FormatError.fileNotFound(file: file.path, what: "the model configuration")
        }
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            throw FormatError.io(file: file.path, operation: "read", message: systemMessage(error))
        }
        return try decode(data, file: file.path)
    }

    static let fileNameKey = CodingUserInfoKey(rawValue: "lmdeploy.config.file")!

    /// Decodes config JSON; `file` names the source in error messages. Every failure is a `FormatError`.
    public static func decode(_ data: Data, file: String) throws -> ModelConfig {
        do { try FoundationJSONGuard.check(data) } catch { throw FormatError.configNotJSON(file: file, detail: error.message) }
        let decoder = JSONDecoder()
        decoder.userInfo[fileNameKey] = file
        do {
            return try decoder.decode(ModelConfig.self, from: data)
        } catch let error as FormatError {
            throw error
        } catch let error as DecodingError {
            throw translate(error, file: file, document: try? JSONValue.parse(data))
        }
    }

    /// Turns a DecodingError into a FormatError naming the key path.
    /// `document` is the parsed JSON, used to quote the offending value.
    private static func translate(_ error: DecodingError, file: String, document: JSONValue?) -> FormatError {
        func path(_ keys: [CodingKey]) -> String {
            var result = ""
            for key in keys {
                if let index = key.intValue {
                    result += "[\(index)]"
                } else {
                    result += (result.isEmpty ? "" : ".") + key.stringValue
                }
            }
            return result
        }
        func describe(_ type: Any.Type) -> String {
            switch type {
            case is Int.Type: return "an integer"
            case is Double.Type, is Float.Type: return "a number"
            case is String.Type: return "a string"
            case is Bool.Type: return "true or false"
            case is TokenIDs.Type: return "an integer or a list of integers"
            default:
                let name = String(describing: type)
                if name.hasPrefix("Array") { return "an array" }
                if name.hasPrefix("Dictionary") || name.contains("KeyedDecodingContainer") { return "an object" }
                return name
            }
        }
        switch error {
        case let .keyNotFound(key, context):
            return .missingConfigKey(file: file, key: path(context.codingPath + [key]))
        case let .typeMismatch(type, context):
            let found = document?.value(at: context.codingPath).map(\.brief) ?? "of another JSON type"
            return .invalidConfigValue(file: file, key: path(context.codingPath), value: found, expected: describe(type))
        case let .valueNotFound(type, context):
            return .invalidConfigValue(file: file, key: path(context.codingPath), value: "null", expected: describe(type))
        case let .dataCorrupted(context):
            if context.codingPath.isEmpty {
                return .configNotJSON(file: file, detail: JSONValue.explain(error))
            }
            return .invalidConfigValue(file: file, key: path(context.codingPath), value: "unreadable",
                                       expected: context.debugDescription)
        @unknown default:
            return .configNotJSON(file: file, detail: "\(error)")
        }
    }

    // MARK: Decoding

    enum CodingKeys: String, CodingKey {
        case architectures
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
        case rotary  // InternLM (v1) remote code: {"base": ..., "type": "dynamic", "scaling_factor": ...}
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case bias  // InternLM, InternLM2
        case mlpBias = "mlp_bias"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case torchDtype = "torch_dtype"
        case dtype
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
        case maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types"
        case hiddenAct = "hidden_act"
    }

    enum RopeKeys: String, CodingKey {
        case type
        case ropeType = "rope_type"
        case factor
        case lowFreqFactor = "low_freq_factor"
        case highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case ropeTheta = "rope_theta"
    }

    enum RotaryKeys: String, CodingKey {
        case base, type
        case scalingFactor = "scaling_factor"
    }

    /// An `eos_token_id` written as a single id or a list of ids.
    private enum TokenIDs: Decodable {
        case one(Int)
        case many([Int])
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let id = try? container.decode(Int.self) {
                self = .one(id)
            } else if let ids = try? container.decode([Int].self) {
                self = .many(ids)
            } else {
                throw DecodingError.typeMismatch(TokenIDs.self, DecodingError.Context(
                    codingPath: decoder.codingPath, debugDescription: "expected an integer or a list of integers"))
            }
        }
    }

    public init(from decoder: Decoder) throws {
        let file = decoder.userInfo[ModelConfig.fileNameKey] as? String ?? ModelConfig.fileName
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func invalid(_ key: String, _ value: Any, _ expected: String) -> FormatError {
            .invalidConfigValue(file: file, key: key, value: "\(value)", expected: expected)
        }
        func optionalInt(_ key: CodingKeys) throws -> Int? {
            try ModelConfig.integer(c, key, path: key.rawValue, file: file)
        }
        func requiredInt(_ key: CodingKeys) throws -> Int {
            if c.contains(key), try c.decodeNil(forKey: key) { throw invalid(key.rawValue, "null", "an integer") }
            guard let value = try optionalInt(key) else { throw FormatError.missingConfigKey(file: file, key: key.rawValue) }
            return value
        }

        // Architecture: `architectures[0]`, else `model_type`.
        if let names = try c.decodeIfPresent([String].self, forKey: .architectures) {
            guard let name = names.first else { throw invalid("architectures", "[]", "a list naming the model class") }
            guard let architecture = Architecture(rawValue: name) else {
                throw FormatError.unsupportedArchitecture(file: file, name: name, supported: Architecture.allCases.map(\.rawValue))
            }
            self.architecture = architecture
        } else if let modelType = try c.decodeIfPresent(String.self, forKey: .modelType) {
            guard let architecture = Architecture(modelType: modelType) else {
                throw FormatError.unsupportedArchitecture(file: file, name: "model_type \(modelType)",
                                                          supported: Architecture.allCases.map(\.rawValue))
            }
            self.architecture = architecture
        } else {
            throw FormatError.missingConfigKey(file: file, key: "architectures")
        }

        // Sizes.
        hiddenSize = try requiredInt(.hiddenSize)
        intermediateSize = try requiredInt(.intermediateSize)
        numHiddenLayers = try requiredInt(.numHiddenLayers)
        numAttentionHeads = try requiredInt(.numAttentionHeads)
        vocabSize = try requiredInt(.vocabSize)
        for (key, value) in [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                             ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                             ("vocab_size", vocabSize)] where value <= 0 {
            throw invalid(key, value, "a positive integer")
        }
        // Bounded first, so the divisibility checks below see plausible numbers.
        for (key, value, limit, what) in [("hidden_size", hiddenSize, ModelBounds.maxHiddenSize, "the hidden size"),
                                          ("intermediate_size", intermediateSize, ModelBounds.maxIntermediateSize, "the MLP width"),
                                          ("num_hidden_layers", numHiddenLayers, ModelBounds.maxLayers, "decoder layers"),
                                          ("num_attention_heads", numAttentionHeads, ModelBounds.maxHeads, "attention heads"),
                                          ("vocab_size", vocabSize, ModelBounds.maxVocabSize, "tokens in the vocabulary")] {
            _ = try ModelBounds.bounded(value, limit, file: file, key: key, what: what)
        }
        numKeyValueHeads = try optionalInt(.numKeyValueHeads) ?? numAttentionHeads
        guard numKeyValueHeads > 0, numAttentionHeads % numKeyValueHeads == 0 else {
            throw invalid("num_key_value_heads", numKeyValueHeads,
                          "a positive divisor of num_attention_heads (\(numAttentionHeads))")
        }
        if let explicit = try optionalInt(.headDim) {
            guard explicit > 0, explicit % 2 == 0 else { throw invalid("head_dim", explicit, "a positive even integer") }
            headDim = explicit
        } else {
            guard hiddenSize % numAttentionHeads == 0 else {
                throw invalid("num_attention_heads", numAttentionHeads,
                              "a divisor of hidden_size (\(hiddenSize)) when head_dim is absent")
            }
            headDim = hiddenSize / numAttentionHeads
            guard headDim % 2 == 0 else {
                throw invalid("hidden_size", hiddenSize,
                              "hidden_size / num_attention_heads to be even (rotary embedding), got head dim \(headDim)")
            }
        }

        // Every size bounded and every tensor size computed with overflow checks, before anything
        // (weights, KV cache) is sized from them.
        try ModelBounds.check(hidden: hiddenSize, inter: intermediateSize, layers: numHiddenLayers, heads: numAttentionHeads,
                              kvHeads: numKeyValueHeads, headDim: headDim, vocab: vocabSize, file: file, keys: .configJSON)

        // Normalisation and activation.
        let eps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        guard eps > 0, eps.isFinite, Float(eps) > 0 else { throw invalid("rms_norm_eps", eps, "a positive number") }
        rmsNormEps = Float(eps)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        guard hiddenAct == "silu" || hiddenAct == "swish" else {
            throw invalid("hidden_act", "\"\(hiddenAct)\"", "\"silu\" (the SwiGLU MLP of the Llama family)")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .mlpBias) == true {
            throw invalid("mlp_bias", true, "false (MLP biases are not supported)")
        }

        // Positions and RoPE.
        let defaultMaxPositions: Int
        switch architecture {
        case .llama, .internlm, .internlm2: defaultMaxPositions = 2048
        case .mistral, .qwen2: defaultMaxPositions = 32768
        }
        maxPositionEmbeddings = try optionalInt(.maxPositionEmbeddings) ?? defaultMaxPositions
        guard maxPositionEmbeddings > 0, maxPositionEmbeddings <= ModelBounds.maxPositions else {
            throw invalid("max_position_embeddings", maxPositionEmbeddings, "a positive integer of at most \(ModelBounds.maxPositions)")
        }

        var theta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        var scaling: RopeScaling? = nil
        if c.contains(.ropeScaling), try !c.decodeNil(forKey: .ropeScaling) {
            let nested = try c.nestedContainer(keyedBy: RopeKeys.self, forKey: .ropeScaling)
            scaling = try ModelConfig.decodeScaling(nested, key: "rope_scaling", file: file)
        }
        if c.contains(.ropeParameters), try !c.decodeNil(forKey: .ropeParameters) {
            let nested = try c.nestedContainer(keyedBy: RopeKeys.self, forKey: .ropeParameters)
            if theta == nil { theta = try nested.decodeIfPresent(Double.self, forKey: .ropeTheta) }
            if scaling == nil { scaling = try ModelConfig.decodeScaling(nested, key: "rope_parameters", file: file) }
        }
        if architecture == .internlm, c.contains(.rotary), try !c.decodeNil(forKey: .rotary) {
            let rotary = try c.nestedContainer(keyedBy: RotaryKeys.self, forKey: .rotary)
            if theta == nil { theta = try rotary.decodeIfPresent(Double.self, forKey: .base) }
            if scaling == nil, let type = try rotary.decodeIfPresent(String.self, forKey: .type), type != "origin" {
                guard type == "dynamic" else {
                    throw FormatError.unsupportedRopeScaling(file: file, key: "rotary.type", type: type,
                                                             supported: ["origin", "dynamic"])
                }
                let factor = try rotary.decodeIfPresent(Double.self, forKey: .scalingFactor) ?? 1.0
                guard factor >= 1, factor.isFinite else { throw invalid("rotary.scaling_factor", factor, "a number >= 1") }
                scaling = RopeScaling(kind: .dynamic, factor: factor)
            }
        }
        ropeTheta = theta ?? 10000
        guard ropeTheta > 0, ropeTheta.isFinite else { throw invalid("rope_theta", ropeTheta, "a positive number") }
        ropeScaling = scaling

        // Embeddings and biases.
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        switch architecture {
        case .qwen2:
            attentionBias = true
            attentionOutputBias = false
        case .internlm, .internlm2:
            let bias = try c.decodeIfPresent(Bool.self, forKey: .bias) ?? true
            attentionBias = bias
            attentionOutputBias = bias
        case .llama, .mistral:
            let bias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
            attentionBias = bias
            attentionOutputBias = bias
        }

        // Special tokens and storage type.
        bosTokenId = try optionalInt(.bosTokenId)
        switch try c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenId) {
        case .one(let id): eosTokenIds = [id]
        case .many(let ids): eosTokenIds = ids
        case nil: eosTokenIds = []
        }
        // Token ids index the embedding table and the logits: each must lie inside the vocabulary.
        let vocabulary = vocabSize
        func checkId(_ id: Int, _ key: String) throws {
            guard id >= 0, id < vocabulary else {
                throw invalid(key, id, "a token id inside the vocabulary, 0 ..< vocab_size (\(vocabulary))")
            }
        }
        if let bos = bosTokenId { try checkId(bos, "bos_token_id") }
        for (index, id) in eosTokenIds.enumerated() {
            try checkId(id, eosTokenIds.count == 1 ? "eos_token_id" : "eos_token_id[\(index)]")
        }
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype) ?? c.decodeIfPresent(String.self, forKey: .dtype)

        // Sliding window.
        switch architecture {
        case .mistral:
            slidingWindow = c.contains(.slidingWindow) ? try optionalInt(.slidingWindow) : 4096
        case .qwen2:
            let enabled = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false
            slidingWindow = enabled ? try optionalInt(.slidingWindow) : nil
        case .llama, .internlm, .internlm2:
            slidingWindow = nil
        }
        if let window = slidingWindow, window <= 0 || window > ModelBounds.maxPositions {
            throw invalid("sliding_window", window, "a positive integer of at most \(ModelBounds.maxPositions), or null")
        }
        if slidingWindow != nil {
            if let types = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
                guard types.count == numHiddenLayers,
                      types.allSatisfy({ $0 == "sliding_attention" || $0 == "full_attention" }) else {
                    throw invalid("layer_types", types, "\(numHiddenLayers) entries, each \"sliding_attention\" or \"full_attention\"")
                }
                slidingWindowLayers = Set(types.indices.filter { types[$0] == "sliding_attention" })
            } else if architecture == .qwen2 {
                let first = try optionalInt(.maxWindowLayers) ?? 28   // Qwen2Config's default
                guard first >= 0 else { throw invalid("max_window_layers", first, "a non-negative integer") }
                slidingWindowLayers = Set(min(first, numHiddenLayers)..<numHiddenLayers)
            }
        }
    }

    /// An integer-valued key. Decoded as a number and checked here, because Foundation's JSONDecoder
    /// reports a fractional value for an Int as "not valid JSON" with no key path.
    private static func integer<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K, path: String, file: String) throws -> Int? {
        switch try c.decodeIfPresent(JSONValue.self, forKey: key) {
        case nil, .null?:
            return nil
        case .integer(let value)?:
            return value
        case .double(let value)? where value.rounded() == value && abs(value) <= 0x1p53:
            return Int(value)
        case let other?:
            throw FormatError.invalidConfigValue(file: file, key: path, value: other.brief, expected: "an integer")
        }
    }

    /// Reads a `rope_scaling`-shaped object; nil for the "default" (unscaled) type.
    private static func decodeScaling(_ c: KeyedDecodingContainer<RopeKeys>, key: String, file: String) throws -> RopeScaling? {
        let typeKey: String
        let type: String
        if let value = try c.decodeIfPresent(String.self, forKey: .ropeType) {
            (typeKey, type) = ("\(key).rope_type", value)
        } else if let value = try c.decodeIfPresent(String.self, forKey: .type) {
            (typeKey, type) = ("\(key).type", value)
        } else {
            if key == "rope_parameters" { return nil }  // only rope_theta given
            throw FormatError.missingConfigKey(file: file, key: "\(key).type")
        }
        if type == "default" { return nil }
        guard let kind = RopeScaling.Kind(rawValue: type) else {
            throw FormatError.unsupportedRopeScaling(file: file, key: typeKey, type: type,
                                                     supported: RopeScaling.Kind.allCases.map(\.rawValue))
        }
        func required<T: Decodable>(_ field: RopeKeys, _ type: T.Type) throws -> T {
            guard let value = try c.decodeIfPresent(T.self, forKey: field) else {
                throw FormatError.missingConfigKey(file: file, key: "\(key).\(field.rawValue)")
            }
            return value
        }
        let factor = try required(.factor, Double.self)
        guard factor >= 1, factor.isFinite else {
            throw FormatError.invalidConfigValue(file: file, key: "\(key).factor", value: "\(factor)", expected: "a number >= 1")
        }
        var scaling = RopeScaling(kind: kind, factor: factor)
        if kind == .llama3 {
            let low = try required(.lowFreqFactor, Double.self)
            let high = try required(.highFreqFactor, Double.self)
            guard let original = try integer(c, .originalMaxPositionEmbeddings, path: "\(key).original_max_position_embeddings", file: file) else {
                throw FormatError.missingConfigKey(file: file, key: "\(key).original_max_position_embeddings")
            }
            guard low > 0, high > low else {
                throw FormatError.invalidConfigValue(file: file, key: "\(key).high_freq_factor", value: "\(high)",
                                                     expected: "a number greater than low_freq_factor (\(low)) > 0")
            }
            guard original > 0 else {
                throw FormatError.invalidConfigValue(file: file, key: "\(key).original_max_position_embeddings",
                                                     value: "\(original)", expected: "a positive integer")
            }
            scaling.lowFreqFactor = low
            scaling.highFreqFactor = high
            scaling.originalMaxPositionEmbeddings = original
        }
        return scaling
    }

    /// The attention window of layer `layer`: `slidingWindow` where that layer uses it, nil for full
    /// attention. A query at position i attends keys j with i − window < j ≤ i (transformers'
    /// `kv_idx > q_idx - sliding_window`: the window counts the query itself).
    public func slidingWindow(layer: Int) -> Int? {
        guard let window = slidingWindow else { return nil }
        guard let layers = slidingWindowLayers else { return window }
        return layers.contains(layer) ? window : nil
    }

    // MARK: Rotary embedding

    /// Unscaled inverse frequencies θ^(−2i/d), i = 0 ..< d/2, in Double.
    private func baseInverseFrequencies(base: Double) -> [Double] {
        let d = Double(headDim)
        return (0..<(headDim / 2)).map { i in 1.0 / pow(base, Double(2 * i) / d) }
    }

    /// The RoPE inverse frequencies (length `headDim / 2`), with linear or llama3 scaling applied.
    /// Dynamic NTK depends on the sequence length: this returns its unscaled frequencies (valid up to
    /// `maxPositionEmbeddings`); use `ropeInverseFrequencies(sequenceLength:)` beyond that.
    public func ropeInverseFrequencies() -> [Float] {
        let frequencies = baseInverseFrequencies(base: ropeTheta)
        guard let scaling = ropeScaling else { return frequencies.map(Float.init) }
        switch scaling.kind {
        case .linear:
            return frequencies.map { Float($0 / scaling.factor) }
        case .dynamic:
            return frequencies.map(Float.init)
        case .llama3:
            // transformers' `_compute_llama3_parameters`: wavelengths longer than the original context / low
            // are divided by factor, shorter than original / high are kept, and the band between interpolates.
            let factor = scaling.factor
            let low = scaling.lowFreqFactor!, high = scaling.highFreqFactor!
            let original = Double(scaling.originalMaxPositionEmbeddings!)
            let lowFreqWavelength = original / low
            let highFreqWavelength = original / high
            return frequencies.map { frequency in
                let wavelength = 2 * Double.pi / frequency
                if wavelength < highFreqWavelength { return Float(frequency) }
                if wavelength > lowFreqWavelength { return Float(frequency / factor) }
                let smooth = (original / wavelength - low) / (high - low)
                return Float((1 - smooth) * frequency / factor + smooth * frequency)
            }
        }
    }

    /// The RoPE inverse frequencies for a sequence of `sequenceLength` tokens. Equal to
    /// `ropeInverseFrequencies()` except with dynamic NTK scaling past `maxPositionEmbeddings`, where the
    /// base becomes θ · ((factor · len / max) − (factor − 1))^(d / (d − 2)) (transformers' formula).
    public func ropeInverseFrequencies(sequenceLength: Int) -> [Float] {
        guard let scaling = ropeScaling, scaling.kind == .dynamic, sequenceLength > maxPositionEmbeddings else {
            return ropeInverseFrequencies()
        }
        let d = Double(headDim)
        let ratio = scaling.factor * Double(sequenceLength) / Double(maxPositionEmbeddings) - (scaling.factor - 1)
        let base = ropeTheta * pow(ratio, d / (d - 2))
        return baseInverseFrequencies(base: base).map(Float.init)
    }
}
