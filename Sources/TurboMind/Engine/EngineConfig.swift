// The engine's limits, named as lmdeploy's TurboMind config names them.
import Foundation

public struct EngineConfig: Sendable, Equatable {
    /// Longest conversation (prompt + replies) of one session, in tokens.
    public var sessionLen: Int
    /// Most sequences decoded together in one step.
    public var maxBatchSize: Int
    /// Prompt tokens computed per step at most (long prompts are split across steps so that
    /// decoding sequences keep streaming); also the size of one prefill chunk.
    public var maxPrefillTokenNum: Int
    /// Tokens per KV-cache block.
    public var cacheBlockSeqLen: Int
    /// KV-cache budget: a fraction in (0, 1) of the memory available now, or ≥ 1 for that many
    /// sequences of `sessionLen` tokens.
    public var cacheMaxEntryCount: Double

    /// Element type of the KV cache: fp16 by default (half the bytes of fp32 per token).
    public var kvCacheType: KVCacheType
    /// Scale and zero point per layer and KV head for an int8 cache (required with `.int8`).
    public var kvQuantParameters: KVQuantParameters?

    /// The default prefill budget on CUDA (lmdeploy's `max_prefill_token_num`); the CPU's is 512.
    public static let cudaMaxPrefillTokenNum = 8192

    public init(sessionLen: Int = 4096, maxBatchSize: Int = 64, maxPrefillTokenNum: Int = 512,
                cacheBlockSeqLen: Int = 64, cacheMaxEntryCount: Double = 0.5, kvCacheType: KVCacheType = .f16,
                kvQuantParameters: KVQuantParameters? = nil) {
        self.sessionLen = sessionLen
        self.maxBatchSize = maxBatchSize
        self.maxPrefillTokenNum = maxPrefillTokenNum
        self.cacheBlockSeqLen = cacheBlockSeqLen
        self.cacheMaxEntryCount = cacheMaxEntryCount
        self.kvCacheType = kvCacheType
        self.kvQuantParameters = kvQuantParameters
    }

    /// lmdeploy's `quant_policy` as a KV cache type: 0 is fp16, 4 is int8 (with parameters from
    /// `lite kv_qparams`); 8 (int4 KV) is refused until that cache exists.
    public static func kvCacheType(quantPolicy: Int) throws -> KVCacheType {
        switch quantPolicy {
        case 0: return .f16
        case 4: return .int8
        case 8:
            throw EngineError.invalidConfig("quant_policy 8 (int4 KV cache) is not supported yet; use quant_policy 0 (fp16 KV cache) or 4 (int8 KV cache)")
        default:
            throw EngineError.invalidConfig("quant_policy must be 0, 4 or 8, got \(quantPolicy)")
        }
    }

    /// The KV pool's size in blocks for a model whose block costs `bytesPerBlock`, with `memory`
    /// the backend's: a fraction of its free memory (as lmdeploy sizes the cache on a GPU), or a
    /// number of full sessions, clamped to what 90% of the free memory holds (said in `notices`).
    func blockBudget(bytesPerBlock: Int, memory: MemoryInfo) throws -> (blocks: Int, notices: [String]) {
        let blocksPerSession = (sessionLen + cacheBlockSeqLen - 1) / cacheBlockSeqLen
        let fitting = Int(Double(memory.free) * 0.9) / max(bytesPerBlock, 1)
        var notices: [String] = []
        var count: Int
        if cacheMaxEntryCount >= 1 {
            let wanted = cacheMaxEntryCount.rounded(.down) * Double(blocksPerSession)
            count = wanted >= Double(Int.max / 2) ? Int.max / 2 : Int(wanted)
            if count > fitting {
                notices.append("cache_max_entry_count \(cacheMaxEntryCount) asks for \(count) KV blocks (\(Self.mib(Double(count) * Double(bytesPerBlock))) MiB) but \(Self.mib(Double(memory.free))) MiB are free: the cache is clamped to \(fitting) blocks (\(fitting * cacheBlockSeqLen) tokens)")
                count = fitting
            }
        } else {
            count = Int(Double(memory.free) * cacheMaxEntryCount) / max(bytesPerBlock, 1)
        }
        guard count >= 1 else {
            throw EngineError.invalidConfig("the KV cache budget (cache_max_entry_count \(cacheMaxEntryCount) of \(Self.mib(Double(memory.free))) MiB free) holds no block of \(cacheBlockSeqLen) tokens (\(bytesPerBlock) bytes)")
        }
        return (count, notices)
    }

    private static func mib(_ bytes: Double) -> Int { Int(bytes / Double(1 << 20)) }

    func validate() throws {
        guard sessionLen >= 2 else { throw EngineError.invalidConfig("session_len must be ≥ 2, got \(sessionLen)") }
        guard maxBatchSize >= 1 else { throw EngineError.invalidConfig("max_batch_size must be ≥ 1, got \(maxBatchSize)") }
        guard maxPrefillTokenNum >= 1 else { throw EngineError.invalidConfig("max_prefill_token_num must be ≥ 1, got \(maxPrefillTokenNum)") }
        guard cacheBlockSeqLen >= 1 else { throw EngineError.invalidConfig("cache_block_seq_len must be ≥ 1, got \(cacheBlockSeqLen)") }
        guard cacheMaxEntryCount > 0, cacheMaxEntryCount.isFinite else {
            throw EngineError.invalidConfig("cache_max_entry_count must be a positive number, got \(cacheMaxEntryCount)")
        }
        // Bounds that keep every size product far from overflow (Int32 positions in the kernels).
        guard sessionLen <= 1 << 24, maxBatchSize <= 1 << 16, maxPrefillTokenNum <= 1 << 20, cacheBlockSeqLen <= 1 << 16 else {
            throw EngineError.invalidConfig("session_len ≤ 16777216, max_batch_size ≤ 65536, max_prefill_token_num ≤ 1048576 and cache_block_seq_len ≤ 65536 are the limits, got \(sessionLen), \(maxBatchSize), \(maxPrefillTokenNum), \(cacheBlockSeqLen)")
        }
    }
}
