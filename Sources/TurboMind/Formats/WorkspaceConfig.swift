// The `[llama]` section of a TurboMind workspace's `config.ini` (lmdeploy's `TurbomindModelConfig`,
// TurboMind 1.0 / lmdeploy v0.0.x–v0.1 era), and its mapping to and from `ModelConfig`.
// Model attributes are written by convert and must not be edited; inference parameters
// (session_len, max_batch_size, cache_max_entry_count, quant_policy, ...) are the user's to edit
// and take effect on the next start.

import Foundation

/// One workspace's `config.ini` `[llama]` section, typed.
public struct WorkspaceConfig: Sendable, Equatable {
    // Model attributes
    public var modelName: String
    public var tensorParaSize: Int
    public var headNum: Int
    public var kvHeadNum: Int
    /// The model's vocabulary (the embedding files are padded to a multiple of `tensorParaSize`).
    public var vocabSize: Int
    public var numLayer: Int
    public var interSize: Int
    public var normEps: Double
    /// 1 when q/k/v (and o) carry biases.
    public var attnBias: Int
    public var startId: Int
    public var endId: Int
    /// `fp16` (also read: `bf16`, `fp32`; `int4` for AWQ W4A16, see AWQWorkspace.swift).
    public var weightType: String
    /// Rotary dimensions; lmdeploy writes `size_per_head`.
    public var rotaryEmbedding: Int
    public var ropeTheta: Double
    public var sizePerHead: Int
    /// AWQ group size; 0 for fp16.
    public var groupSize: Int
    public var maxPositionEmbeddings: Int
    public var useDynamicNTK: Int
    public var useLognAttn: Int
    // Inference parameters
    public var sessionLen: Int
    public var maxBatchSize: Int
    public var maxContextTokenNum: Int
    public var stepLength: Int
    /// TurboMind 1.0: sequences kept in the KV cache (48); 2.0: fraction of free memory (0.5).
    public var cacheMaxEntryCount: Double
    public var cacheChunkSize: Int
    public var useContextFMHA: Int
    /// 0: fp16 KV cache; 4: int8 KV cache.
    public var quantPolicy: Int
    /// Keys present in the file that this struct does not model (written by other lmdeploy
    /// versions, e.g. `cache_block_seq_len`, `rope_scaling_factor`), kept so they round-trip.
    public var extra: [(key: String, value: String)] = []

    public static func == (a: WorkspaceConfig, b: WorkspaceConfig) -> Bool {
        a.entries.map(\.key) == b.entries.map(\.key) && a.entries.map(\.value) == b.entries.map(\.value)
    }

    public static let sectionName = "llama"
    /// Concurrent sequences one engine may be configured for (`max_batch_size`).
    public static let maxBatchSizeLimit = 1 << 16
    public static let fileName = "config.ini"

    /// The config lmdeploy's converter writes for `model` (defaults of lmdeploy v0.0.x's
    /// `TurbomindModelConfig`; `session_len` = the template's session length + 8).
    public init(model: ModelConfig, modelName: String, tensorParaSize: Int, templateSessionLength: Int,
                startId: Int, endId: Int) {
        self.modelName = modelName
        self.tensorParaSize = tensorParaSize
        headNum = model.numAttentionHeads
        kvHeadNum = model.numKeyValueHeads
        vocabSize = model.vocabSize
        numLayer = model.numHiddenLayers
        interSize = model.intermediateSize
        // The Float's shortest digits (1e-05), as config.json wrote them, not its binary expansion.
        normEps = Double("\(model.rmsNormEps)") ?? Double(model.rmsNormEps)
        attnBias = model.attentionBias ? 1 : 0
        self.startId = startId
        self.endId = endId
        sessionLen = templateSessionLength + 8
        weightType = "fp16"
        rotaryEmbedding = model.headDim
        ropeTheta = model.ropeTheta
        sizePerHead = model.headDim
        groupSize = 0
        maxBatchSize = 32
        maxContextTokenNum = 4
        stepLength = 1
        cacheMaxEntryCount = 48
        cacheChunkSize = 1
        useContextFMHA = 1
        quantPolicy = 0
        maxPositionEmbeddings = model.maxPositionEmbeddings
        useDynamicNTK = model.ropeScaling != nil ? 1 : 0
        useLognAttn = 0
    }

    /// `key = value` pairs in lmdeploy's order (the field order of its dataclass), then `extra`.
    public var entries: [(key: String, value: String)] {
        func number(_ v: Double) -> String {
            // TurboMind 1.0 writes cache_max_entry_count as an integer; keep whole numbers integral.
            v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : pythonFloatString(v)
        }
        var list: [(String, String)] = [
            ("model_name", modelName), ("tensor_para_size", "\(tensorParaSize)"), ("head_num", "\(headNum)"),
            ("kv_head_num", "\(kvHeadNum)"), ("vocab_size", "\(vocabSize)"), ("num_layer", "\(numLayer)"),
            ("inter_size", "\(interSize)"), ("norm_eps", pythonFloatString(normEps)), ("attn_bias", "\(attnBias)"),
            ("start_id", "\(startId)"), ("end_id", "\(endId)"), ("session_len", "\(sessionLen)"),
            ("weight_type", weightType), ("rotary_embedding", "\(rotaryEmbedding)"), ("rope_theta", pythonFloatString(ropeTheta)),
            ("size_per_head", "\(sizePerHead)"), ("group_size", "\(groupSize)"), ("max_batch_size", "\(maxBatchSize)"),
            ("max_context_token_num", "\(maxContextTokenNum)"), ("step_length", "\(stepLength)"),
            ("cache_max_entry_count", number(cacheMaxEntryCount)), ("cache_chunk_size", "\(cacheChunkSize)"),
            ("use_context_fmha", "\(useContextFMHA)"), ("quant_policy", "\(quantPolicy)"),
            ("max_position_embeddings", "\(maxPositionEmbeddings)"), ("use_dynamic_ntk", "\(useDynamicNTK)"),
            ("use_logn_attn", "\(useLognAttn)"),
        ]
        list += extra.map { ($0.key, $0.value) }
        return list.map { (key: $0.0, value: $0.1) }
    }

    /// The whole `config.ini` document.
    public var ini: ConfigINI {
        ConfigINI(sections: [ConfigINI.Section(name: WorkspaceConfig.sectionName, entries: entries)])
    }

    static let modeledKeys: Set<String> = [
        "model_name", "tensor_para_size", "head_num", "kv_head_num", "vocab_size", "num_layer", "inter_size",
        "norm_eps", "attn_bias", "start_id", "end_id", "session_len", "weight_type", "rotary_embedding",
        "rope_theta", "size_per_head", "group_size", "max_batch_size", "max_context_token_num", "step_length",
        "cache_max_entry_count", "cache_chunk_size", "use_context_fmha", "quant_policy", "max_position_embeddings",
        "use_dynamic_ntk", "use_logn_attn",
    ]

    /// Reads `config.ini` (the `[llama]` section), checking types and ranges; errors name the file and key.
    public static func load(_ url: URL) throws -> WorkspaceConfig {
        try WorkspaceConfig(ini: ConfigINI.load(url))
    }

    public init(ini: ConfigINI) throws {
        let file = ini.file
        guard let section = ini.section(WorkspaceConfig.sectionName) else {
            throw FormatError.invalid(file: file, field: "[\(WorkspaceConfig.sectionName)]",
                                      expected: "a [llama] section (found: \(ini.sections.map { "[\($0.name)]" }.joined(separator: ", ")))")
        }
        let r = ConfigINI.Reader(file: file, section: section)
        let positive = "a positive integer"
        modelName = try r.string("model_name")
        tensorParaSize = try r.require("tensor_para_size", try r.int("tensor_para_size"), positive) { $0 > 0 }
        let heads = try r.require("head_num", try r.int("head_num"), "a positive integer of at most \(ModelBounds.maxHeads)") {
            $0 > 0 && $0 <= ModelBounds.maxHeads
        }
        headNum = heads
        kvHeadNum = try r.require("kv_head_num", try r.int("kv_head_num", default: heads),
                                  "a positive divisor of head_num (\(heads))") { $0 > 0 && heads % $0 == 0 }
        vocabSize = try r.require("vocab_size", try r.int("vocab_size"), positive) { $0 > 0 }
        numLayer = try r.require("num_layer", try r.int("num_layer"), positive) { $0 > 0 }
        interSize = try r.require("inter_size", try r.int("inter_size"), positive) { $0 > 0 }
        normEps = try r.require("norm_eps", try r.double("norm_eps"), "a positive number") { $0 > 0 }
        attnBias = try r.flag("attn_bias", default: false) ? 1 : 0
        startId = try r.int("start_id")
        endId = try r.int("end_id")
        sessionLen = try r.require("session_len", try r.int("session_len"), positive) { $0 > 0 }
        weightType = try r.string("weight_type", default: "fp16").lowercased()
        let headDim = try r.require("size_per_head", try r.int("size_per_head", default: 128), "a positive even integer") { $0 > 0 && $0 % 2 == 0 }
        sizePerHead = headDim
        rotaryEmbedding = try r.int("rotary_embedding", default: headDim)
        ropeTheta = try r.require("rope_theta", try r.double("rope_theta", default: 10000), "a positive number") { $0 > 0 }
        groupSize = try r.int("group_size", default: 0)
        maxBatchSize = try r.require("max_batch_size", try r.int("max_batch_size", default: 32), positive) { $0 > 0 }
        maxContextTokenNum = try r.int("max_context_token_num", default: 4)
        stepLength = try r.int("step_length", default: 1)
        cacheMaxEntryCount = try r.require("cache_max_entry_count", try r.double("cache_max_entry_count", default: 48),
                                           "a positive number") { $0 > 0 }
        cacheChunkSize = try r.int("cache_chunk_size", default: 1)
        useContextFMHA = try r.flag("use_context_fmha", default: true) ? 1 : 0
        quantPolicy = try r.require("quant_policy", try r.int("quant_policy", default: 0), "0 (fp16 KV cache) or 4 (int8 KV cache)") { $0 == 0 || $0 == 4 }
        maxPositionEmbeddings = try r.require("max_position_embeddings", try r.int("max_position_embeddings", default: 0),
                                              "a non-negative integer") { $0 >= 0 }
        useDynamicNTK = try r.flag("use_dynamic_ntk", default: false) ? 1 : 0
        useLognAttn = try r.flag("use_logn_attn", default: false) ? 1 : 0

        // Plausibility, before anything is sized from these numbers: each dimension bounded, every
        // tensor size computed with overflow checks, ids inside the vocabulary.
        _ = try ModelBounds.bounded(headNum, ModelBounds.maxHeads, file: file, key: "[llama] head_num", what: "attention heads")
        _ = try ModelBounds.bounded(sizePerHead, ModelBounds.maxHeadDim, file: file, key: "[llama] size_per_head", what: "the head dimension")
        let hidden = try ModelBounds.product(headNum, sizePerHead, file: file, key: "[llama] size_per_head",
                                             what: "the hidden size (head_num × size_per_head)")
        try ModelBounds.check(hidden: hidden, inter: interSize, layers: numLayer, heads: headNum, kvHeads: kvHeadNum,
                              headDim: sizePerHead, vocab: vocabSize, file: file, keys: .configINI)
        let vocabulary = vocabSize
        for (key, id) in [("start_id", startId), ("end_id", endId)] where id < 0 || id >= vocabulary {
            throw FormatError.invalidConfigValue(file: file, key: "[llama] \(key)", value: "\(id)",
                                                 expected: "a token id inside the vocabulary, 0 ..< vocab_size (\(vocabulary))")
        }
        for (key, value, limit) in [("session_len", sessionLen, ModelBounds.maxPositions),
                                    ("max_position_embeddings", maxPositionEmbeddings, ModelBounds.maxPositions),
                                    ("max_batch_size", maxBatchSize, WorkspaceConfig.maxBatchSizeLimit),
                                    ("tensor_para_size", tensorParaSize, ModelBounds.maxHeads)] where value > limit {
            throw FormatError.invalidConfigValue(file: file, key: "[llama] \(key)", value: "\(value)",
                                                 expected: "at most \(limit)")
        }
        extra = section.entries.filter { !WorkspaceConfig.modeledKeys.contains($0.key) }
    }

    /// The head dimension times the query heads.
    public var hiddenSize: Int { headNum * sizePerHead }

    /// `vocab_size` rounded up to a multiple of `tensor_para_size`: the rows of the embedding files.
    public var paddedVocabSize: Int { (vocabSize + tensorParaSize - 1) / tensorParaSize * tensorParaSize }

    /// An AWQ W4A16 workspace (weight_type int4).
    public var isInt4: Bool { weightType == "int4" || weightType == "w4" }

    /// The weight element type the files hold (int4: of its non-linear files).
    public func weightDType(file: String) throws -> DType {
        switch weightType {
        case "fp16", "half": return .f16
        case "bf16": return .bf16
        case "fp32": return .f32
        case "int4", "w4":
            // AWQ W4A16: the linears are qweight/scales_zeros pairs (AWQWorkspace.swift), the rest fp16.
            guard groupSize > 0, groupSize % 32 == 0, hiddenSize % groupSize == 0 else {
                throw FormatError.invalidConfigValue(file: file, key: "[llama] group_size", value: "\(groupSize)",
                                                     expected: "the AWQ group size of an int4 workspace: a positive multiple of 32 dividing the hidden size \(hiddenSize)")
            }
            return .f16
        default:
            throw FormatError.invalidConfigValue(file: file, key: "[llama] weight_type", value: weightType, expected: "fp16, bf16 or fp32")
        }
    }

    /// The `ModelConfig` the engine runs. `source` is the model's own `config.json` when the workspace
    /// has it (lmdeploy copies it into `tokenizer/`): it supplies what config.ini cannot express
    /// (architecture, RoPE scaling details, every eos id, sliding window); config.ini wins for every
    /// key it has. Errors name `file` (config.ini).
    public func modelConfig(source: ModelConfig?, hasOutputBias: Bool, file: String) throws -> ModelConfig {
        guard rotaryEmbedding == sizePerHead else {
            throw FormatError.invalidConfigValue(file: file, key: "[llama] rotary_embedding", value: "\(rotaryEmbedding)",
                                                 expected: "size_per_head (\(sizePerHead)): partial rotary embeddings are not supported")
        }
        guard useLognAttn == 0 else {
            throw FormatError.invalidConfigValue(file: file, key: "[llama] use_logn_attn", value: "1", expected: "0 (LogN attention is not supported)")
        }
        guard tensorParaSize > 0, headNum % tensorParaSize == 0, kvHeadNum % tensorParaSize == 0, interSize % tensorParaSize == 0 else {
            throw FormatError.invalidConfigValue(file: file, key: "[llama] tensor_para_size", value: "\(tensorParaSize)",
                                                 expected: "a divisor of head_num (\(headNum)), kv_head_num (\(kvHeadNum)) and inter_size (\(interSize))")
        }
        var config = source ?? ModelConfig(architecture: .llama, hiddenSize: hiddenSize, intermediateSize: interSize,
                                           numHiddenLayers: numLayer, numAttentionHeads: headNum, numKeyValueHeads: kvHeadNum,
                                           headDim: sizePerHead, vocabSize: vocabSize)
        config.hiddenSize = hiddenSize
        config.intermediateSize = interSize
        config.numHiddenLayers = numLayer
        config.numAttentionHeads = headNum
        config.numKeyValueHeads = kvHeadNum
        config.headDim = sizePerHead
        config.vocabSize = vocabSize
        config.rmsNormEps = Float(normEps)
        config.ropeTheta = ropeTheta
        config.maxPositionEmbeddings = maxPositionEmbeddings > 0 ? maxPositionEmbeddings : (source?.maxPositionEmbeddings ?? sessionLen)
        config.attentionBias = attnBias == 1
        config.attentionOutputBias = attnBias == 1 && hasOutputBias
        // The workspace always has its own output.weight file.
        config.tieWordEmbeddings = false
        config.bosTokenId = startId
        if !config.eosTokenIds.contains(endId) { config.eosTokenIds = [endId] + config.eosTokenIds }
        config.torchDtype = { switch weightType { case "bf16": return "bfloat16"; case "fp32": return "float32"; default: return "float16" } }()
        if useDynamicNTK == 0 {
            config.ropeScaling = nil
        } else if config.ropeScaling == nil {
            let factor = Double(extra.first(where: { $0.key == "rope_scaling_factor" })?.value ?? "") ?? 1
            config.ropeScaling = RopeScaling(kind: .dynamic, factor: max(factor, 1))
        }
        return config
    }
}
