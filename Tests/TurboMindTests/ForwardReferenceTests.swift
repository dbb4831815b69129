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
    func prefillAndDecodeMatchReference(architecture: Architecture, dtype: DType, tied: Bool) async throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir, architecture: architecture, layers: 2, heads: 4, kvHeads: 2, dtype: dtype, tied: tied)
        let weights = try ModelWeights.load(directory: dir, config: config)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: weights)
        // Small chunks so a 19-token prompt spans several prefill chunks; fp32 KV (exact comparison).
        let engine = try testEngine(model, sessionLen: 32, chunk: 8)
        defer { engine.shutdown() }
        let ids = (0..<19).map { ($0 * 37 + 5) % config.vocabSize }
        let reference = ReferenceLlama.logits(config: config, weights: TinyModel.weights(for: config, dtype: dtype), ids: ids)

        // Prefill all positions at once (chunks of 8: BLAS), then token by token (GEMV) on one session.
        let all = try await engine.allLogits(ids.map(Int32.init))
        var stepped: [Float] = []
        let step = GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .lastLogits)
        for (t, id) in ids.enumerated() {
            let input: GenerationInput = t == 0 ? .full([Int32(id)]) : .append([Int32(id)])
            stepped += try await engine.run(session: 7, input: input, config: step, interactive: true).promptLogits ?? []
        }
        #expect(all.count == ids.count * config.vocabSize && stepped.count == all.count)
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

    /// A cached conversation: turn 2 computed on top of turn 1's KV equals recomputing everything,
    /// and only the tokens not already cached are computed (counted by a forward observer).
    @Test func sessionReusesTheCacheExactly() async throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: ModelWeights.load(directory: dir, config: config))
        let rows = RowCounter()
        let engine = try testEngine(model, sessionLen: 64, observer: rows)
        defer { engine.shutdown() }
        let turn1: [Int32] = [3, 17, 29, 4, 8]
        let out = try await engine.run(session: 1, input: .full(turn1), config: GenerationConfig(maxNewTokens: 6, sampling: .greedy, ignoreEOS: true),
                                       interactive: true)
        #expect(out.historyTokens == turn1.count + 6)
        let turn2 = turn1 + out.tokens + [40, 41, 42]
        rows.count = 0
        let last = GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .lastLogits)
        let cached = try await engine.run(session: 1, input: .full(turn2), config: last, interactive: true)
        // The last generated token was never fed back, so it and the three new tokens are computed.
        #expect(rows.count == 4)
        #expect(cached.historyTokens == turn2.count)
        let recomputed = try await engine.lastLogits(turn2)
        let diff = zip(cached.promptLogits!, recomputed).map { abs($0 - $1) }.max()!
        #expect(diff < 1e-4, "cached vs recomputed logits differ by \(diff)")
        // A prompt that diverges from the history cuts the cache back to the common prefix.
        let edited: [Int32] = [3, 17, 99, 100]
        rows.count = 0
        let afterEdit = try await engine.run(session: 1, input: .full(edited), config: last, interactive: true)
        #expect(rows.count == 2)
        let direct = try await engine.lastLogits(edited)
        #expect(afterEdit.historyTokens == edited.count)
        #expect(zip(afterEdit.promptLogits!, direct).map { abs($0 - $1) }.max()! < 1e-4)
    }

    @Test func overlongPromptIsAClearError() async throws {
        let dir = try TinyModel.makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TinyModel.write(to: dir)
        let model = try LlamaModel(backend: CPUBackend(), config: config, weights: ModelWeights.load(directory: dir, config: config))
        let engine = try testEngine(model, sessionLen: 16)
        defer { engine.shutdown() }
        let greedy = GenerationConfig(maxNewTokens: 100, sampling: .greedy, ignoreEOS: true)
        await #expect(throws: EngineError.contextFull(needed: 21, capacity: 16)) {
            try await engine.run(session: 1, input: .full([Int32](repeating: 1, count: 20)), config: greedy)
        }
        await #expect(throws: EngineError.tokenOutOfRange(id: 500, vocab: 128)) {
            try await engine.run(session: 1, input: .full([1, 500]), config: greedy)
        }
        await #expect(throws: EngineError.emptyInput) { try await engine.run(session: 1, input: .full([]), config: greedy) }
        // Generation stops when the session is full rather than overrunning the cache.
        let r = try await engine.run(session: 1, input: .full([Int32](repeating: 2, count: 10)), config: greedy, interactive: true)
        #expect(r.finishReason == .sessionFull)
        #expect(r.historyTokens == 16)
    }
}

/// Counts the rows the forward pass computes (layer 0's q/k/v input).
final class RowCounter: ForwardObserver, @unchecked Sendable {
    var count = 0
    func observe(layer: Int, tensor: ObservedTensor, rows: Int, width: Int, values: [Float], plan: BatchPlan) {
        if layer == 0 && tensor == .qkvInput { count += rows }
    }
}
