// `lmdeploy bench`'s measurements, run through the engine's public API as any caller would use it
// (the figures are the engine's, not a side path's). Times are taken on the client side.
import Foundation

public enum Benchmark {
    /// One sequence: a prompt of `inputLen` tokens from an empty cache, then `outputLen` tokens
    /// decoded one at a time (greedy, EOS ignored); medians of `runs` runs after one warm-up.
    public struct SingleResult: Sendable {
        /// Submission to the first generated token (the prompt's forward and one sample).
        public var prefillSeconds: Double
        /// First to last generated token: `outputLen` decode steps.
        public var decodeSeconds: Double
    }

    public static func single(engine: any InferenceEngine, inputLen: Int, outputLen: Int, runs: Int) async throws -> SingleResult {
        let prompt = BenchPrompts.tokens(count: inputLen, seed: 0, vocab: engine.modelConfig.vocabSize)
        let config = GenerationConfig(maxNewTokens: outputLen + 1, sampling: .greedy, ignoreEOS: true)
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...runs {
            let t = try await timed(engine: engine, session: (1 << 41) + UInt64(run), prompt: prompt, config: config)
            guard t.tokens == outputLen + 1 else { throw EngineError.invalidConfig("the benchmark request ended after \(t.tokens) of \(outputLen + 1) tokens") }
            if run > 0 {  // run 0 warms caches and the thread pool
                prefill.append(t.ttft)
                decode.append(t.gaps.reduce(0, +))
            }
        }
        return SingleResult(prefillSeconds: BenchStatistics.median(prefill), decodeSeconds: BenchStatistics.median(decode))
    }

    /// Serving: `jobs` requests, at most `concurrency` in flight at once.
    public struct ServingResult: Sendable {
        public var seconds: Double
        public var requests: Int
        public var outputTokens: Int
        /// Sorted, in seconds.
        public var ttft: [Double]
        public var itl: [Double]
    }

    public struct Job: Sendable {
        public var prompt: [Int32]
        public var outputLen: Int
        public init(prompt: [Int32], outputLen: Int) {
            self.prompt = prompt
            self.outputLen = outputLen
        }
    }

    public static func serving(engine: any InferenceEngine, jobs: [Job], concurrency: Int, firstSession: UInt64) async throws -> ServingResult {
        let start = Date()
        let queue = JobQueue(count: jobs.count)
        let results = try await withThrowingTaskGroup(of: [Timing].self) { group in
            // `concurrency` workers, each taking the next job when its request finishes.
            for _ in 0..<concurrency {
                group.addTask {
                    var mine: [Timing] = []
                    while let i = queue.next() {
                        let config = GenerationConfig(maxNewTokens: jobs[i].outputLen, sampling: .greedy, ignoreEOS: true)
                        mine.append(try await timed(engine: engine, session: firstSession + UInt64(i), prompt: jobs[i].prompt, config: config))
                    }
                    return mine
                }
            }
            var all: [Timing] = []
            for try await part in group { all += part }
            return all
        }
        return ServingResult(seconds: Date().timeIntervalSince(start), requests: jobs.count,
                             outputTokens: results.reduce(0) { $0 + $1.tokens },
                             ttft: results.map(\.ttft).sorted(), itl: results.flatMap(\.gaps).sorted())
    }

    /// One request as a user sees it: time to the first token, then the gap before each later one.
    struct Timing: Sendable { var ttft: Double = 0; var gaps: [Double] = []; var tokens = 0 }

    static func timed(engine: any InferenceEngine, session: UInt64, prompt: [Int32], config: GenerationConfig) async throws -> Timing {
        let submitted = Date()
        var last = submitted
        var t = Timing()
        for try await out in engine.generate(session: session, input: .full(prompt), config: config, interactive: false) where !out.tokens.isEmpty {
            let now = Date()
            if t.tokens == 0 {
                t.ttft = now.timeIntervalSince(submitted)
                // Tokens that arrive together share the gap (the first is the prompt's).
                t.gaps += [Double](repeating: 0, count: out.tokens.count - 1)
            } else {
                t.gaps += [Double](repeating: now.timeIntervalSince(last) / Double(out.tokens.count), count: out.tokens.count)
            }
            last = now
            t.tokens += out.tokens.count
        }
        return t
    }
}

/// Hands out job indices 0..<count to concurrent workers.
final class JobQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var cursor = 0
    private let count: Int
    init(count: Int) { self.count = count }
    func next() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard cursor < count else { return nil }
        cursor += 1
        return cursor - 1
    }
}
