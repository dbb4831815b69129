// Running a model in tests goes through the engine's public API, as every caller does.
import Foundation
@testable import TurboMind

/// An engine on `model` for tests: fp32 KV unless said otherwise, a cache of `sessions` full sessions.
func testEngine(_ model: LlamaModel<CPUBackend>, sessionLen: Int = 256, maxBatchSize: Int = 8, chunk: Int = 512,
                sessions: Double = 4, kv: KVCacheType = .f32, observer: ForwardObserver? = nil) throws -> Engine<CPUBackend> {
    try Engine(model: model, config: EngineConfig(sessionLen: sessionLen, maxBatchSize: maxBatchSize, maxPrefillTokenNum: chunk,
                                                  cacheMaxEntryCount: sessions, kvCacheType: kv), observer: observer)
}

private let testSessions = SessionCounter()
/// A fresh session id per call, so one-shot test requests never meet.
func freshSession() -> UInt64 { testSessions.next() }

final class SessionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 1 << 50
    func next() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

extension InferenceEngine {
    /// Greedy continuation of `prompt` (EOS ignored), one-shot.
    func greedyTokens(_ prompt: [Int32], _ n: Int) async throws -> [Int32] {
        try await run(session: freshSession(), input: .full(prompt),
                      config: GenerationConfig(maxNewTokens: n, sampling: .greedy, ignoreEOS: true)).tokens
    }

    /// Logits at the last position of `prompt`, from an empty cache.
    func lastLogits(_ prompt: [Int32]) async throws -> [Float] {
        try await run(session: freshSession(), input: .full(prompt),
                      config: GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .lastLogits)).promptLogits ?? []
    }

    /// Logits at every position of `prompt` (`[count][vocab]` flat), from an empty cache.
    func allLogits(_ prompt: [Int32]) async throws -> [Float] {
        try await run(session: freshSession(), input: .full(prompt),
                      config: GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .allLogits)).promptLogits ?? []
    }
}
