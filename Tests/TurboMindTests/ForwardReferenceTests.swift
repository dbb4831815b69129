// The engine's forward pass against the plain Double reference on tiny random models of every
// architecture and weight type: prefill (BLAS path), decode (SIMD GEMV path) and chunked prefill.
import Foundation
import Testing
@testable import TurboMind

@Suite struct ForwardReferenceTests {
    static let cases: [(Architecture, DType, Bool)] = [
        (.llama, .bf16, false), (.llama, .f16, true), (.llama, .f32, false), (.mistral, .bf16, false),
        (.qwen2, .bf16, false), (.internlm, .f16, false), (.internlm2, .bf16, false), (.internlm2, .f32, true),
    ]

    @Test(arguments: cases)
    func prefillAndDecodeMatchReference(architecture: Architecture, dtype: DType, tied: Bool) throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir, architecture: architecture, layers: 2, heads: 4, kvHeads: 2, dtype: dtype, tied: tied)
        let weights = try ModelWeights.load(directory: dir, config: config)
        // Small chunks so a 19-token prompt spans several prefill chunks.
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: weights, maxChunkTokens: 8)
        let ids = (0..<19).map { ($0 * 37 + 5) % config.vocabSize }
        let reference = ReferenceLlama.logits(config: config, weights: TinyModel.weights(for: config, dtype: dtype), ids: ids)

        // Prefill all positions at once (chunks of 8: BLAS), then token by token (GEMV).
        let cache = model.makeCache(capacity: 32)
        let all = try model.forward(ids.map(Int32.init), cache: cache, logits: .all)
        let stepCache = model.makeCache(capacity: 32)
        var stepped: [Float] = []
        for id in ids { stepped += try model.forward([Int32(id)], cache: stepCache, logits: .last) }
        let v = config.vocabSize
        // fp32 accumulation over ≤ 96-term dot products through 2 layers: |error| ~1e-5 on
        // logits of magnitude ~1; 1e-3 leaves a wide margin yet catches any wrong index or rotation.
        var worst = 0.0
        for t in ids.indices {
            for j in 0..<v {
                worst = max(worst, abs(Double(all[t * v + j]) - reference[t][j]), abs(Double(stepped[t * v + j]) - reference[t][j]))
            }
        }
        #expect(worst < 1e-3, "\(architecture) \(dtype) tied=\(tied): max |logit − reference| = \(worst)")
    }

    /// A cached conversation: turn 2 computed on top of turn 1's KV equals recomputing everything.
    @Test func sessionReusesTheCacheExactly() throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: ModelWeights.load(directory: dir, config: config))
        let session = Session(model: model, sessionLength: 64)
        let turn1: [Int32] = [3, 17, 29, 4, 8]
        let out = try session.generate(prompt: turn1, config: GenerationConfig(maxNewTokens: 6, sampling: .greedy, ignoreEOS: true))
        let turn2 = turn1 + out.tokens + [40, 41, 42]
        let before = session.history.count
        let cached = try session.prefill(turn2)
        // Only the part of turn 2 not already in the cache was computed.
        #expect(before == turn1.count + out.tokens.count - 1)
        #expect(session.history == turn2)
        let fresh = Session(model: model, sessionLength: 64)
        let recomputed = try fresh.prefill(turn2)
        let diff = zip(cached, recomputed).map { abs($0 - $1) }.max()!
        #expect(diff < 1e-4, "cached vs recomputed logits differ by \(diff)")
        // A prompt that diverges from the history cuts the cache back to the common prefix.
        let edited: [Int32] = [3, 17, 99, 100]
        let afterEdit = try session.prefill(edited)
        let direct = try Session(model: model, sessionLength: 64).prefill(edited)
        #expect(session.history == edited)
        #expect(zip(afterEdit, direct).map { abs($0 - $1) }.max()! < 1e-4)
    }

    @Test func overlongPromptIsAClearError() throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: ModelWeights.load(directory: dir, config: config))
        let session = Session(model: model, sessionLength: 16)
        #expect(throws: EngineError.contextFull(needed: 21, capacity: 16)) {
            try session.prefill([Int32](repeating: 1, count: 20))
        }
        #expect(throws: EngineError.tokenOutOfRange(id: 500, vocab: 128)) {
            try session.prefill([1, 500])
        }
        #expect(throws: EngineError.emptyInput) { try session.prefill([]) }
        // Generation stops when the session is full rather than overrunning the cache.
        let r = try session.generate(prompt: [Int32](repeating: 2, count: 10), config: GenerationConfig(maxNewTokens: 100, sampling: .greedy, ignoreEOS: true))
        #expect(r.finish == .sessionFull)
        #expect(session.history.count == 16)
    }
}
