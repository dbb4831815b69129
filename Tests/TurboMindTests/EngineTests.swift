// The batching engine on the real SmolLM2: batch invariance, sessions, memory pressure,
// cancellation and chunked prefill.
import Foundation
import Tokenizers
import Testing
@testable import TurboMind

/// Collects a stream: all tokens, logprobs, text and the finish reason.
struct Collected {
    var tokens: [Int32] = []
    var logprobs: [Float] = []
    var text = ""
    var finish: FinishReason?
}

func collect(_ stream: GenerationStream) async throws -> Collected {
    var c = Collected()
    for try await out in stream {
        c.tokens += out.tokens
        c.logprobs += out.logprobs ?? []
        c.text += out.text
        if let f = out.finishReason { c.finish = f }
    }
    return c
}

/// Waits (bounded) until the engine's published stats satisfy `condition`.
func waitFor<B>(_ engine: Engine<B>, timeout: TimeInterval = 30, _ condition: (EngineStats) -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition(engine.stats) { return true }
        try? await Task.sleep(nanoseconds: 5_000_000)
    }
    return false
}

func greedy(_ n: Int, logprobs: Bool = false) -> GenerationConfig {
    GenerationConfig(maxNewTokens: n, sampling: .greedy, ignoreEOS: true, logprobs: logprobs)
}

/// Deterministic prompts of a given length spread over the vocabulary.
func prompt(_ length: Int, seed: Int) -> [Int32] {
    (0..<length).map { Int32((($0 + 1) * 7919 + seed * 104_729) % 49_000 + 100) }
}

@Suite(.serialized) struct EngineTests {
    let model: LlamaModel<CPUBackend>

    init() throws {
        let dir = try TestPaths.smolLM2()
        let config = try ModelConfig.load(directory: dir)
        model = try LlamaModel(backend: CPUBackend(), config: config, weights: ModelWeights.load(directory: dir, config: config))
    }

    /// 32 greedy requests of mixed prompt lengths submitted together give exactly the tokens each
    /// gives alone.
    @Test func batchedEqualsSequential() async throws {
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 512, maxBatchSize: 32, maxPrefillTokenNum: 128, cacheMaxEntryCount: 32))
        defer { engine.shutdown() }
        let lengths = (0..<32).map { [3, 17, 64, 130, 200, 9, 1, 300][$0 % 8] + $0 }
        var alone: [[Int32]] = []
        for (i, n) in lengths.enumerated() {
            alone.append(try await collect(engine.generate(session: UInt64(1000 + i), input: .full(prompt(n, seed: i)), config: greedy(12))).tokens)
        }
        let together = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, n) in lengths.enumerated() {
                group.addTask { (i, try await collect(engine.generate(session: UInt64(i), input: .full(prompt(n, seed: i)), config: greedy(12))).tokens) }
            }
            var out = [[Int32]](repeating: [], count: lengths.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        for i in lengths.indices {
            #expect(together[i] == alone[i], "request \(i) (prompt \(lengths[i])) differs in a batch")
            #expect(together[i].count == 12)
        }
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.accountingConsistent })
    }

    /// Turn 2 on the cached KV of turn 1 matches recomputing the whole history; after the session
    /// is evicted, its next turn still gives the same tokens.
    /// With fp32 KV the cached and recomputed log-probabilities agree to fp32 rounding; with fp16 KV,
    /// turn 1's generated tokens were cached by decode steps (GEMV) but are recomputed by a prefill
    /// (BLAS): their K/V differ in the last fp32 bits, which can move an fp16 rounding by one ulp
    /// (2^-11 relative), measured up to 2e-3 in a log-probability.
    @Test(arguments: [(KVCacheType.f32, Float(1e-4)), (KVCacheType.f16, Float(1e-2))])
    func interactiveSessionsReuseAndSurviveEviction(kv: KVCacheType, tolerance: Float) async throws {
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 256, maxBatchSize: 4, cacheMaxEntryCount: 2, kvCacheType: kv))
        defer { engine.shutdown() }
        let turn1 = prompt(40, seed: 1), turn2 = prompt(25, seed: 2)
        let r1 = try await collect(engine.generate(session: 1, input: .append(turn1), config: greedy(8), interactive: true))
        #expect(await waitFor(engine) { $0.cachedSessions == [1] })
        let r2 = try await collect(engine.generate(session: 1, input: .append(turn2), config: greedy(8, logprobs: true), interactive: true))
        // The same history computed from scratch in a fresh session.
        let history = turn1 + r1.tokens + turn2
        let fresh = try await collect(engine.generate(session: 2, input: .full(history), config: greedy(8, logprobs: true)))
        #expect(r2.tokens == fresh.tokens)
        let diff = zip(r2.logprobs, fresh.logprobs).map { abs($0 - $1) }.max() ?? 1
        #expect(diff < tolerance, "\(kv) KV: cached vs recomputed log-probabilities differ by \(diff)")

        // Fill the cache (8 blocks of 64) with two other sessions of 4 blocks each: session 1
        // (2 blocks, least recently used) is evicted when session 4 arrives.
        _ = try await collect(engine.generate(session: 3, input: .append(prompt(200, seed: 3)), config: greedy(4), interactive: true))
        _ = try await collect(engine.generate(session: 4, input: .append(prompt(200, seed: 4)), config: greedy(4), interactive: true))
        #expect(await waitFor(engine) { !$0.cachedSessions.contains(1) && $0.cachedSessions.contains(4) })
        let turn3 = prompt(10, seed: 5)
        let afterEviction = try await collect(engine.generate(session: 1, input: .append(turn3), config: greedy(6), interactive: true))
        let reference = try await collect(engine.generate(session: 9, input: .full(history + r2.tokens + turn3), config: greedy(6)))
        #expect(afterEviction.tokens == reference.tokens)
        engine.end(session: 1); engine.end(session: 3); engine.end(session: 4)
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.accountingConsistent })
    }

    /// A cache for 3 sequences serves 20 concurrent requests correctly; a request longer than the
    /// whole cache is rejected while the others finish; idle sessions go in LRU order.
    @Test func pressure() async throws {
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 128, maxBatchSize: 16, cacheMaxEntryCount: 3))
        defer { engine.shutdown() }
        var expected: [[Int32]] = []
        for i in 0..<20 { expected.append(try await collect(engine.generate(session: UInt64(500 + i), input: .full(prompt(20 + i, seed: i)), config: greedy(6))).tokens) }
        let results = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for i in 0..<20 {
                group.addTask { (i, try await collect(engine.generate(session: UInt64(i), input: .full(prompt(20 + i, seed: i)), config: greedy(6))).tokens) }
            }
            var out = [[Int32]](repeating: [], count: 20)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        #expect(results == expected)

        // A cache of ~4 blocks (a fraction of available memory) under a session length of 4096: a
        // 2,000-token request can never fit and is rejected while a small one beside it finishes.
        let perBlock = Double(model.kvLayout(blockSize: 64, blockCount: 1, type: .f16).bytesPerBlock)
        let fraction = 4.5 * perBlock / Double(model.backend.memoryInfo().free)
        let small = try Engine(model: model, config: EngineConfig(sessionLen: 4096, maxBatchSize: 4, cacheMaxEntryCount: fraction))
        defer { small.shutdown() }
        #expect((3...6).contains(small.stats.totalBlocks))
        async let fits = collect(small.generate(session: 2, input: .full(prompt(50, seed: 2)), config: greedy(4)))
        await #expect(throws: EngineError.exceedsCache(tokens: 2004, cacheTokens: small.cacheTokens)) {
            _ = try await collect(small.generate(session: 1, input: .full(prompt(2000, seed: 1)), config: greedy(4)))
        }
        #expect(try await fits.tokens.count == 4)

        // LRU: three idle sessions of 2 blocks each fill the 6-block cache, touched in the order
        // 1, 2, 3, then 1 again; a fourth session evicts 2, the least recently used.
        for s: UInt64 in [1, 2, 3, 1] {
            let turn = prompt(s == 1 && engine.stats.cachedSessions.contains(701) ? 5 : 70, seed: Int(s))
            _ = try await collect(engine.generate(session: s + 700, input: .append(turn), config: greedy(2), interactive: true))
        }
        #expect(await waitFor(engine) { $0.cachedSessions == [702, 703, 701] && $0.freeBlocks == 0 })
        _ = try await collect(engine.generate(session: 704, input: .append(prompt(30, seed: 4)), config: greedy(4), interactive: true))
        #expect(await waitFor(engine) { !$0.cachedSessions.contains(702) && $0.cachedSessions.contains(701) })
        for s: UInt64 in 701...704 { engine.end(session: s) }
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.accountingConsistent })
    }

    @Test func cancelFreesBlocksAtOnce() async throws {
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 512, maxBatchSize: 4, cacheMaxEntryCount: 2))
        defer { engine.shutdown() }
        let stream = engine.generate(session: 7, input: .full(prompt(50, seed: 7)), config: greedy(400))
        var seen = 0
        var finish: FinishReason?
        for try await out in stream {
            seen += out.tokens.count
            if seen >= 3 && finish == nil && out.finishReason == nil { engine.cancel(request: stream.id) }
            if let f = out.finishReason { finish = f }
        }
        #expect(finish == .cancelled)
        #expect(seen < 400)
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.accountingConsistent && $0.active == 0 })
        // Dropping the consumer cancels too.
        let task = Task { try await collect(engine.generate(session: 8, input: .full(prompt(50, seed: 8)), config: greedy(400))) }
        try await Task.sleep(nanoseconds: 50_000_000)
        task.cancel()
        _ = try? await task.value
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.active == 0 })
    }

    /// Cancelling a session's request and sending its next one at once (both land in one loop
    /// iteration) cancels only the first: cancellation names a request, not a session.
    @Test func cancelThenResendCancelsOnlyTheFirst() async throws {
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 2048, maxBatchSize: 4, maxPrefillTokenNum: 512, cacheMaxEntryCount: 3))
        defer { engine.shutdown() }
        for round in 0..<3 {
            let first = engine.generate(session: 7, input: .append(prompt(20, seed: round)), config: greedy(400), interactive: true)
            var it = first.makeAsyncIterator()
            _ = try await it.next()   // running
            // Keep the engine thread inside long prefill steps, so the cancel and the resend both
            // wait in the inbox for the same iteration.
            let busy = engine.generate(session: 99, input: .full(prompt(1500, seed: 99)), config: greedy(1))
            try await Task.sleep(nanoseconds: 20_000_000)
            engine.cancel(request: first.id)
            let second = engine.generate(session: 7, input: .append(prompt(5, seed: 50 + round)), config: greedy(6), interactive: true)
            var firstFinish: FinishReason?
            while let out = try await it.next() { firstFinish = out.finishReason ?? firstFinish }
            #expect(firstFinish == .cancelled)
            let r = try await collect(second)
            #expect(r.finish == .length && r.tokens.count == 6, "round \(round): the resent request was \(r.finish.map { "\($0)" } ?? "not finished")")
            _ = try await collect(busy)
        }
        engine.end(session: 7)
        #expect(await waitFor(engine) { $0.freeBlocks == $0.totalBlocks && $0.accountingConsistent })
    }

    /// A forward observer sees every layer's linear inputs and K/V with the right shapes, and the
    /// tokens are the same bits with or without it.
    @Test func observerSeesEveryLayerAndChangesNothing() async throws {
        let recorder = ShapeRecorder()
        let observed = try testEngine(model, kv: .f16, observer: recorder)
        let plain = try testEngine(model, kv: .f16)
        defer { observed.shutdown(); plain.shutdown() }
        let ids = prompt(37, seed: 3)
        let a = try await observed.greedyTokens(ids, 5), b = try await plain.greedyTokens(ids, 5)
        #expect(a == b)
        let c = model.config
        let widths: [ObservedTensor: Int] = [.qkvInput: c.hiddenSize, .oInput: c.qDim, .gateUpInput: c.hiddenSize,
                                             .downInput: c.intermediateSize, .key: c.kvDim, .value: c.kvDim]
        for layer in 0..<c.numHiddenLayers {
            for (tensor, width) in widths {
                let seen = recorder.calls[layer]?[tensor] ?? []
                // One prefill step of 37 rows, then 4 decode steps of one row (the 5th token is not fed back).
                #expect(seen.map(\.rows) == [37, 1, 1, 1, 1], "layer \(layer) \(tensor)")
                #expect(seen.allSatisfy { $0.width == width && $0.count == $0.rows * width }, "layer \(layer) \(tensor) width")
            }
        }
    }

    /// A 2,000-token prompt computed in 128-token chunks gives the logits of one unchunked prefill.
    @Test func chunkedPrefillMatchesUnchunked() async throws {
        let ids = prompt(2000, seed: 11)
        let chunked = try testEngine(model, sessionLen: 2048, maxBatchSize: 1, chunk: 128, sessions: 1)
        let whole = try testEngine(model, sessionLen: 2048, maxBatchSize: 1, chunk: 2000, sessions: 1)
        defer { chunked.shutdown(); whole.shutdown() }
        let a = try await chunked.lastLogits(ids)
        let b = try await whole.lastLogits(ids)
        let diff = zip(a, b).map { abs($0 - $1) }.max()!
        // Same math, different GEMM shapes (BLAS blocking): agreement to fp32 rounding.
        #expect(diff < 1e-3, "chunked vs unchunked logits differ by \(diff)")
        #expect(Sampler.argmax(a) == Sampler.argmax(b))
    }

    @Test func stopWordsAndStopTokens() async throws {
        let dir = try TestPaths.smolLM2()
        let tokenizer = try Tokenizers.Tokenizer(directory: dir)
        let engine = try Engine(model: model, tokenizer: tokenizer, config: EngineConfig(sessionLen: 256, maxBatchSize: 2, cacheMaxEntryCount: 1))
        defer { engine.shutdown() }
        let ids = tokenizer.encode("The capital of France is").map(Int32.init)
        let free = try await collect(engine.generate(session: 1, input: .full(ids), config: greedy(20)))
        #expect(free.text.hasPrefix(" Paris."), "\(free.text)")
        var stopAtPeriod = greedy(20)
        stopAtPeriod.ignoreEOS = false
        stopAtPeriod.stopWords = ["."]
        let stopped = try await collect(engine.generate(session: 2, input: .full(ids), config: stopAtPeriod))
        #expect(stopped.text == " Paris")
        #expect(stopped.finish == .stop)
        var stopToken = greedy(20)
        stopToken.ignoreEOS = false
        stopToken.stopTokenIds = [free.tokens[1]]
        let byToken = try await collect(engine.generate(session: 3, input: .full(ids), config: stopToken))
        #expect(byToken.tokens == [free.tokens[0]] && byToken.finish == .stop)
    }
}

/// Records the shape of every observed tensor.
final class ShapeRecorder: ForwardObserver, @unchecked Sendable {
    struct Call { var rows: Int; var width: Int; var count: Int }
    var calls: [Int: [ObservedTensor: [Call]]] = [:]
    func observe(layer: Int, tensor: ObservedTensor, rows: Int, width: Int, values: [Float], plan: BatchPlan) {
        calls[layer, default: [:]][tensor, default: []].append(Call(rows: rows, width: width, count: values.count))
    }
}
