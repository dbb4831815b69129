// The engine settings a user gives (command-line flags, later the server's), resolved against a
// model: a setting left out takes the workspace's config.ini value — so hand edits of config.ini
// apply on the next start, as with lmdeploy — else the default. Shared by chat, bench, serve and Lite.
import Foundation

public struct EngineSettings: Sendable, Equatable {
    public var sessionLen: Int?
    public var maxBatchSize: Int?
    public var maxPrefillTokenNum: Int?
    public var cacheMaxEntryCount: Double?
    public var cacheBlockSeqLen: Int?
    /// lmdeploy's quant_policy: 0 = fp16 KV cache, 4 = int8 KV cache; 8 (int4 KV) is refused.
    public var quantPolicy: Int?
    /// Where the int8 KV parameters are (`lite kv_qparams --turbomind_dir`); nil = the workspace's weights folder.
    public var kvParamsDirectory: String?
    /// Compute threads (0 = all cores).
    public var threads: Int
    /// The backend: the CPU, CUDA, or CUDA when found (auto).
    public var device: DeviceChoice
    /// The precision of the linear layers' inputs (`--dtype`).
    public var dtype: ComputeDType
    /// The LM head as stored or as int8 rows (`--lm-head-dtype`).
    public var lmHeadDType: LMHeadDType

    public init(sessionLen: Int? = nil, maxBatchSize: Int? = nil, maxPrefillTokenNum: Int? = nil, cacheMaxEntryCount: Double? = nil,
                cacheBlockSeqLen: Int? = nil, quantPolicy: Int? = nil, kvParamsDirectory: String? = nil, threads: Int = 0,
                device: DeviceChoice = .auto, dtype: ComputeDType = .auto, lmHeadDType: LMHeadDType = .auto) {
        self.sessionLen = sessionLen
        self.maxBatchSize = maxBatchSize
        self.maxPrefillTokenNum = maxPrefillTokenNum
        self.cacheMaxEntryCount = cacheMaxEntryCount
        self.cacheBlockSeqLen = cacheBlockSeqLen
        self.quantPolicy = quantPolicy
        self.kvParamsDirectory = kvParamsDirectory
        self.threads = threads
        self.device = device
        self.dtype = dtype
        self.lmHeadDType = lmHeadDType
    }

    /// The engine config for `source`: settings first, then its workspace's config.ini, then defaults.
    /// The session length never exceeds the model's trained context.
    public func config(for source: ModelSource) throws -> EngineConfig {
        let ini = source.workspace
        let defaults = EngineConfig()
        var config = EngineConfig(
            sessionLen: min(sessionLen ?? ini?.sessionLen ?? defaults.sessionLen, source.config.maxPositionEmbeddings),
            maxBatchSize: maxBatchSize ?? ini?.maxBatchSize ?? defaults.maxBatchSize,
            maxPrefillTokenNum: maxPrefillTokenNum ?? defaults.maxPrefillTokenNum,
            cacheBlockSeqLen: cacheBlockSeqLen ?? defaults.cacheBlockSeqLen,
            cacheMaxEntryCount: cacheMaxEntryCount ?? ini?.cacheMaxEntryCount ?? defaults.cacheMaxEntryCount)
        config.kvCacheType = try EngineConfig.kvCacheType(quantPolicy: quantPolicy ?? ini?.quantPolicy ?? 0)
        if config.kvCacheType == .int8 {
            let directory: URL
            if let kvParamsDirectory {
                directory = URL(fileURLWithPath: kvParamsDirectory)
            } else if ini != nil {
                directory = WorkspaceLayout(root: source.directory).weights
            } else {
                throw EngineError.invalidConfig("quant_policy 4 (int8 KV cache) with the Hugging Face directory \(source.directory.path) needs --kv-params DIR (the --turbomind_dir given to `lmdeploy lite kv_qparams`), or a workspace whose weights folder holds the parameters")
            }
            config.kvQuantParameters = try KVQuantParameters.load(directory: directory, layers: source.config.numHiddenLayers,
                                                                  kvHeads: source.config.numKeyValueHeads)
        } else if let kvParamsDirectory {
            throw EngineError.invalidConfig("--kv-params \(kvParamsDirectory) applies to the int8 KV cache only: add --quant-policy 4 (or set quant_policy = 4 in config.ini)")
        }
        return config
    }

    /// Starts an engine on `source` with the backend `device` resolves to; `adjust` edits the
    /// resolved config first.
    public func launch(_ source: ModelSource, adjust: (inout EngineConfig) -> Void = { _ in }) throws -> any InferenceEngine {
        var config = try config(for: source)
        let resolved = try device.resolve()
        // On a GPU prefill is cheap beside the weights' read of every decode step: lmdeploy's 8192-token
        // budget admits 16 prompts of 512 in one step instead of one (the CPU keeps 512, so that decode
        // rows beside a long prompt are not held up for seconds).
        if case .cuda = resolved, maxPrefillTokenNum == nil { config.maxPrefillTokenNum = EngineConfig.cudaMaxPrefillTokenNum }
        adjust(&config)
        switch resolved {
        case let .cuda(backend):
            try dtype.checkCUDA()
            let model = try LlamaModel(backend: backend, config: source.config, weights: source.weights, lmHead: lmHeadDType)
            return try Engine(model: model, tokenizer: source.tokenizer, config: config)
        case let .cpu(note):
            try dtype.checkCPU()
            let model = try LlamaModel(backend: CPUBackend(threads: threads, dtype: dtype), config: source.config, weights: source.weights,
                                       lmHead: lmHeadDType)
            // `auto` on a machine with a driver but something missing says why it is on the CPU.
            let explain = note.flatMap { CUDARuntime.driverPresent ? [$0] : nil } ?? []
            return try Engine(model: model, tokenizer: source.tokenizer, config: config, notices: explain)
        }
    }
}
