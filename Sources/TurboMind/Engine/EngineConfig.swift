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

    public init(sessionLen: Int = 4096, maxBatchSize: Int = 64, maxPrefillTokenNum: Int = 512,
                cacheBlockSeqLen: Int = 64, cacheMaxEntryCount: Double = 0.5) {
        self.sessionLen = sessionLen
        self.maxBatchSize = maxBatchSize
        self.maxPrefillTokenNum = maxPrefillTokenNum
        self.cacheBlockSeqLen = cacheBlockSeqLen
        self.cacheMaxEntryCount = cacheMaxEntryCount
    }

    /// Blocks the KV pool gets for a model whose block costs `bytesPerBlock`.
    func blockCount(bytesPerBlock: Int) throws -> Int {
        let blocksPerSession = (sessionLen + cacheBlockSeqLen - 1) / cacheBlockSeqLen
        let count: Int
        if cacheMaxEntryCount >= 1 {
            count = Int(cacheMaxEntryCount.rounded(.down)) * blocksPerSession
        } else if cacheMaxEntryCount > 0 {
            count = Int(Double(EngineConfig.availableMemory()) * cacheMaxEntryCount) / bytesPerBlock
        } else {
            throw EngineError.invalidConfig("cache_max_entry_count must be > 0, got \(cacheMaxEntryCount)")
        }
        guard count >= 1 else {
            throw EngineError.invalidConfig("the KV cache budget (cache_max_entry_count \(cacheMaxEntryCount)) holds no block of \(cacheBlockSeqLen) tokens")
        }
        return count
    }

    func validate() throws {
        guard sessionLen >= 2 else { throw EngineError.invalidConfig("session_len must be ≥ 2, got \(sessionLen)") }
        guard maxBatchSize >= 1 else { throw EngineError.invalidConfig("max_batch_size must be ≥ 1, got \(maxBatchSize)") }
        guard maxPrefillTokenNum >= 1 else { throw EngineError.invalidConfig("max_prefill_token_num must be ≥ 1, got \(maxPrefillTokenNum)") }
        guard cacheBlockSeqLen >= 1 else { throw EngineError.invalidConfig("cache_block_seq_len must be ≥ 1, got \(cacheBlockSeqLen)") }
    }

    /// MemAvailable from /proc/meminfo (bytes); physical memory elsewhere.
    static func availableMemory() -> Int {
        if let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) {
            for line in info.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
                let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                return kb * 1024
            }
        }
        return Int(ProcessInfo.processInfo.physicalMemory)
    }
}
