// The int8 KV cache end to end: its block budget, the tiny Llama's logits with calibrated
// parameters (asymmetric and symmetric, per head and per layer), and SmolLM2's perplexity of GPL-3
// with golden's windowing against the fp16 cache — calibrated on a different text (LGPL-2.1).
import Foundation
import Lite
import Testing
import Tokenizers
@testable import TurboMind

@Suite(.serialized) struct KVInt8EngineTests {
    /// The same budget holds twice the tokens: one byte per element instead of two, plus a
    /// per-layer, per-head parameter table that does not grow with the pool.
    @Test func poolHoldsTwiceTheTokens() throws {
        let model = try tinyLlama()
        let f16 = model.kvLayout(blockSize: 64, blockCount: 1, type: .f16), int8 = model.kvLayout(blockSize: 64, blockCount: 1, type: .int8)
        #expect(int8.bytesPerToken * 2 == f16.bytesPerToken)
        for fraction in [0.01, 0.5] {
            let config = EngineConfig(sessionLen: 4096, cacheMaxEntryCount: fraction)
            let memory = MemoryInfo(free: 1 << 30, total: 1 << 31)
            let a = try config.blockBudget(bytesPerBlock: f16.bytesPerBlock, memory: memory).blocks
            let b = try config.blockBudget(bytesPerBlock: int8.bytesPerBlock, memory: memory).blocks
            #expect(Double(b) / Double(a) >= 1.9, "\(b) int8 blocks vs \(a) fp16 blocks")
            // And what is allocated for that many blocks fits the budget.
            var layout = int8
            layout.blockCount = b
            #expect(layout.byteCount <= Int(Double(memory.free) * fraction) + layout.quantParameterBytes)
        }
        // A real engine allocates the int8 pool (and refuses to without parameters: KVQParamsTests).
        let params = try KVQuantParameters(layers: 2, kvHeads: 2, granularity: .perHead, values: [Float](repeating: 0.01, count: 16))
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: 64, cacheMaxEntryCount: 2, kvCacheType: .int8, kvQuantParameters: params))
        defer { engine.shutdown() }
        #expect(engine.kvBytesPerToken == int8.bytesPerToken)
    }

    /// Logits of the tiny Llama over a prompt with an int8 cache against the fp32 cache, with
    /// parameters from calibrating on other token windows.
    @Test(arguments: [false, true], [true, false])
    func tinyModelLogitsStayClose(symmetric: Bool, perHead: Bool) async throws {
        let model = try tinyLlama()
        var windows: [[Int32]] = []
        for w in 0..<4 { windows.append((0..<40).map { (i: Int) -> Int32 in Int32((i * 37 + w * 101 + 5) % 256) }) }
        let stats = try await Calibration.collect(model: model, windows: windows)
        let work = try temporaryDirectory("tiny-work"), weights = try temporaryDirectory("tiny-weights")
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: weights) }
        try stats.write(to: work, run: [:])
        try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: symmetric, tp: 1)
        if !perHead {
            for l in 0..<2 { try FileManager.default.removeItem(at: weights.appendingPathComponent(KVQuantParameters.perHeadFileName(layer: l, rank: 0))) }
        }
        let params = try KVQuantParameters.load(directory: weights, layers: 2, kvHeads: 2)
        #expect(params.granularity == (perHead ? .perHead : .perLayer))
        let prompt: [Int32] = (0..<48).map { (i: Int) -> Int32 in Int32((i * 53 + 11) % 256) }
        func logits(_ type: KVCacheType, _ p: KVQuantParameters?) async throws -> [Float] {
            let engine = try Engine(model: model, config: EngineConfig(sessionLen: 64, cacheMaxEntryCount: 1, kvCacheType: type, kvQuantParameters: p))
            defer { engine.shutdown() }
            let r = try await engine.run(session: 1, input: .full(prompt), config: GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .allLogits))
            return try #require(r.promptLogits)
        }
        let exact = try await logits(.f32, nil), quantized = try await logits(.int8, params)
        #expect(exact.count == 48 * 256 && quantized.count == exact.count)
        func compare(_ other: [Float]) -> (meanError: Double, agree: Int) {
            var error = 0.0, agree = 0
            for (x, y) in zip(exact, other) { error += Double(abs(x - y)) }
            for row in 0..<48 {
                let a = exact[row * 256..<(row + 1) * 256], b = other[row * 256..<(row + 1) * 256]
                if a.firstIndex(of: a.max()!) == b.firstIndex(of: b.max()!) { agree += 1 }
            }
            return (error / Double(exact.count), agree)
        }
        var squares = 0.0
        for x in exact { squares += Double(x) * Double(x) }
        let spread = (squares / Double(exact.count)).squareRoot()
        let good = compare(quantized)
        // Negative controls: shrinking the K/V scales 4× (values clamp) of only layer 1, or only KV
        // head 1 of every layer, must make the logits visibly worse — so the engine applies each
        // layer's and each head's own parameters, and the bounds below can tell right from wrong.
        func shrunk(_ pick: (Int, Int) -> Bool) async throws -> (meanError: Double, agree: Int) {
            var v = params.values
            for l in 0..<2 { for h in 0..<2 where pick(l, h) { v[(l * 2 + h) * 4] /= 4; v[(l * 2 + h) * 4 + 2] /= 4 } }
            return compare(try await logits(.int8, try KVQuantParameters(layers: 2, kvHeads: 2, granularity: params.granularity, values: v)))
        }
        let layer1 = try await shrunk { l, _ in l == 1 }, head1 = try await shrunk { _, h in h == 1 }
        print("tiny llama int8 (\(symmetric ? "sym" : "asym"), \(params.granularity.rawValue)): mean |Δlogit| \(good.meanError) (rms logit \(spread)), argmax agrees at \(good.agree)/48; layer 1 shrunk: \(layer1.meanError); head 1 shrunk: \(head1.meanError)")
        // The random tiny model has wide K/V ranges (a step of (max − min)/255 ≈ 0.05), so its logits
        // move by a few percent of their spread on average and keep their argmax almost everywhere.
        #expect(good.meanError < 0.05 * spread)
        #expect(good.agree >= 42)
        #expect(good.meanError > 0, "the quantized cache is in use")
        #expect(layer1.meanError > 2 * good.meanError, "layer 1's own parameters are applied")
        #expect(head1.meanError > 2 * good.meanError, "KV head 1's own parameters are applied")
    }

    @Test func smolLM2PerplexityWithinOnePercentOfFP16() async throws {
        let env = ProcessInfo.processInfo.environment
        let dir = env["LMDEPLOY_TEST_MODEL"] ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/smollm2-135m-instruct"
        let source = try ModelSource.load(path: dir)
        let work = try temporaryDirectory("smol-work"), weights = try temporaryDirectory("smol-weights")
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: weights) }
        // Calibrated on LGPL-2.1, evaluated on GPL-3.
        _ = try await Calibration.run(source: source, options: CalibrationOptions(dataset: "/usr/share/common-licenses/LGPL-2.1", samples: 8, seqlen: 256),
                                      workDir: work)
        try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: false, tp: 1)
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/golden.json"))) as! [String: Any]
        let ref = golden["perplexity"] as! [String: Any]
        let ids = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/gpl3-ids-transformers.json"))) as! [Int]
        let window = ref["window"] as! Int
        func engine(_ policy: Int) throws -> any InferenceEngine {
            try EngineSettings(sessionLen: window + 1, maxBatchSize: 4, cacheMaxEntryCount: 4, quantPolicy: policy,
                               kvParamsDirectory: policy == 4 ? weights.path : nil).launch(source)
        }
        let fp16 = try engine(0), int8 = try engine(4)
        defer { fp16.shutdown(); int8.shutdown() }
        #expect(int8.config.kvCacheType == .int8 && int8.config.kvQuantParameters?.granularity == .perHead)
        let a = try await Perplexity.evaluate(engine: fp16, tokens: ids.map(Int32.init), window: window)
        let b = try await Perplexity.evaluate(engine: int8, tokens: ids.map(Int32.init), window: window)
        #expect(a.windows == ref["windows"] as! Int && b.scoredTokens == ref["scored_tokens"] as! Int)
        print("perplexity GPL-3: fp16 KV \(a.perplexity), int8 KV \(b.perplexity) (\(String(format: "%+.3f", (b.perplexity / a.perplexity - 1) * 100))%)")
        #expect(b.perplexity <= a.perplexity * 1.01)

        // The first golden chat's greedy answer is still right with the int8 cache.
        let chats = golden["chats"] as! [[String: Any]]
        let france = (chats[0]["ids"] as! [Int]).map(Int32.init)
        let answer = try await int8.run(session: 99, input: .full(france), config: GenerationConfig(maxNewTokens: 10, sampling: .greedy)).tokens
        let text = source.tokenizer.decode(answer.map(Int.init))
        #expect(text.contains("Paris"), "int8 KV answer: \(text)")

        // All golden chats: how far the int8 cache's greedy tokens follow fp16's (for the report;
        // LMDEPLOY_KV_INT8_CHATS=1, to keep the suite's time down).
        guard env["LMDEPLOY_KV_INT8_CHATS"] == "1" else { return }
        var matched = 0, total = 0
        for (i, chat) in chats.enumerated() {
            let prompt = (chat["ids"] as! [Int]).map(Int32.init)
            let n = (chat["greedy_ids"] as! [Int]).count
            let config = GenerationConfig(maxNewTokens: n, sampling: .greedy, ignoreEOS: true)
            let x = try await fp16.run(session: UInt64(100 + i), input: .full(prompt), config: config).tokens
            let y = try await int8.run(session: UInt64(200 + i), input: .full(prompt), config: config).tokens
            let same = zip(x, y).prefix { $0 == $1 }.count
            print("chat \(i): int8 follows fp16 for \(same)/\(n) tokens: \(source.tokenizer.decode(y.map(Int.init)).debugDescription)")
            matched += same
            total += n
        }
        print("golden chats: int8 KV matches fp16 KV for \(matched)/\(total) greedy tokens (common prefix)")
    }
}
