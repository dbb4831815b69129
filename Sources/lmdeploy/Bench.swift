// `lmdeploy bench MODEL`: speed, as JSON lines. Without --concurrency it measures one sequence
// (prefill and decode, the kernels' figures); with it, the serving engine under load.
import ArgumentParser
import Foundation
import TurboMind

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and print JSON lines.",
        discussion: """
        One sequence (no --concurrency):
          prefill   a prompt of --input-len tokens from an empty cache; tokens_per_s = input_len / seconds
          decode    --output-len tokens decoded one at a time after that prompt (greedy, EOS ignored);
                    tokens_per_s = output_len / seconds. Each figure is the median of --runs runs after a warm-up.
          Compare with llama.cpp: llama-bench -p 512 -n 128 -t THREADS on the same weights.

        Serving (--concurrency 1,4,16,64): for each level, --num-prompts requests (default 4 × the level)
        go through the batching engine with that many in flight at once:
          request_throughput     completed requests per second
          output_tokens_per_s    generated tokens per second, all requests together
          ttft_ms_p50/_p99       time to first token: submission to the first generated token
          itl_ms_p50/_p99        inter-token latency: gap between consecutive tokens of a request
          peak_rss_mb            peak resident memory of this process so far
        --random-lengths draws each request's input and output lengths uniformly in [L/2, 3L/2].
        Compare with llama.cpp: llama-batched-bench -npp 128 -ntg 128 -npl 1,4,16.
        """
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace.")
    var modelPath: String

    @Option(name: [.customLong("input-len"), .customLong("input_len")], help: "Prompt tokens.")
    var inputLen: Int = 512

    @Option(name: [.customLong("output-len"), .customLong("output_len")], help: "Generated tokens.")
    var outputLen: Int = 128

    @Option(help: "One-sequence mode: measured runs (after one warm-up).")
    var runs: Int = 3

    @Option(help: "Serving mode: comma-separated numbers of requests in flight, e.g. 1,4,16,64.")
    var concurrency: String?

    @Option(name: [.customLong("num-prompts"), .customLong("num_prompts")], help: "Serving mode: requests per level (default 4 × concurrency).")
    var numPrompts: Int?

    @Flag(name: [.customLong("random-lengths")], help: "Serving mode: random input/output lengths in [L/2, 3L/2].")
    var randomLengths = false

    @Option(help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard inputLen >= 1, outputLen >= 1, runs >= 1 else { throw ValidationError("--input-len, --output-len and --runs must be ≥ 1") }
        if let concurrency {
            guard !levels(concurrency).isEmpty, levels(concurrency).allSatisfy({ $0 >= 1 }) else {
                throw ValidationError("--concurrency takes positive integers separated by commas, e.g. 1,4,16")
            }
        }
    }

    private func levels(_ text: String) -> [Int] { text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        if let concurrency { try await serving(levels(concurrency)) } else { try single() }
    }

    private func single() throws {
        let source = try ModelSource.load(path: modelPath)
        let backend = CPUBackend(threads: threads)
        let model = try LlamaModel(backend: backend, config: source.config, weights: source.weights)
        let session = Session(model: model, sessionLength: inputLen + outputLen + 1)
        let prompt = BenchPrompts.tokens(count: inputLen, seed: 0, vocab: source.config.vocabSize)
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...runs {
            session.reset()
            let t0 = Date()
            var logits = try session.prefill(prompt)
            let t1 = Date()
            for _ in 0..<outputLen { logits = try session.append(Int32(Sampler.argmax(logits))) }
            let t2 = Date()
            if run > 0 {  // run 0 warms caches and the thread pool
                prefill.append(t1.timeIntervalSince(t0))
                decode.append(t2.timeIntervalSince(t1))
            }
        }
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        let p = Stats.median(prefill), d = Stats.median(decode)
        JSONLine.print(["bench": "prefill", "model": name, "backend": backend.description, "tokens": inputLen,
                        "seconds": p, "tokens_per_s": Double(inputLen) / p])
        JSONLine.print(["bench": "decode", "model": name, "backend": backend.description, "tokens": outputLen,
                        "context": inputLen, "seconds": d, "tokens_per_s": Double(outputLen) / d])
    }

    private func serving(_ levels: [Int]) async throws {
        let top = levels.max()!
        var options = try EngineOptions.parse(["--threads", "\(threads)"])
        options.sessionLen = (randomLengths ? (inputLen * 3 + 1) / 2 + (outputLen * 3 + 1) / 2 : inputLen + outputLen) + 1
        options.maxBatchSize = top
        options.cacheMaxEntryCount = Double(top)
        options.maxPrefillTokenNum = max(512, top)
        let (source, engine) = try options.start(path: modelPath)
        defer { engine.shutdown() }
        let vocab = source.config.vocabSize
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        var rng = SeededGenerator(seed: 42)
        // Warm-up: one request through the whole path.
        _ = try await BenchClient.run(engine: engine, session: 1 << 40, prompt: BenchPrompts.tokens(count: 16, seed: 99, vocab: vocab), outputLen: 4)
        var nextSession: UInt64 = 1
        for c in levels {
            let n = numPrompts ?? 4 * c
            let jobs: [(prompt: [Int32], output: Int)] = (0..<n).map { i in
                let inLen = randomLengths ? Int.random(in: max(1, inputLen / 2)...(inputLen * 3 + 1) / 2, using: &rng) : inputLen
                let outLen = randomLengths ? Int.random(in: max(1, outputLen / 2)...(outputLen * 3 + 1) / 2, using: &rng) : outputLen
                return (BenchPrompts.tokens(count: inLen, seed: i + c * 10_000, vocab: vocab), outLen)
            }
            let first = nextSession
            nextSession += UInt64(n)
            let start = Date()
            let results = try await withThrowingTaskGroup(of: [BenchClient.Result].self) { group in
                // `c` workers, each taking the next job when its request finishes.
                let queue = JobQueue(count: n)
                for _ in 0..<c {
                    group.addTask {
                        var mine: [BenchClient.Result] = []
                        while let i = queue.next() {
                            mine.append(try await BenchClient.run(engine: engine, session: first + UInt64(i), prompt: jobs[i].prompt, outputLen: jobs[i].output))
                        }
                        return mine
                    }
                }
                var all: [BenchClient.Result] = []
                for try await part in group { all += part }
                return all
            }
            let seconds = Date().timeIntervalSince(start)
            let tokens = results.reduce(0) { $0 + $1.tokens }
            let ttft = results.map(\.ttft).sorted(), itl = results.flatMap(\.gaps).sorted()
            JSONLine.print([
                "bench": "serve", "model": name, "backend": engine.model.backend.description, "concurrency": c,
                "num_prompts": n, "input_len": inputLen, "output_len": outputLen, "random_lengths": randomLengths,
                "seconds": seconds, "request_throughput": Double(n) / seconds, "output_tokens_per_s": Double(tokens) / seconds,
                "ttft_ms_p50": Stats.percentile(ttft, 50) * 1000, "ttft_ms_p99": Stats.percentile(ttft, 99) * 1000,
                "itl_ms_p50": Stats.percentile(itl, 50) * 1000, "itl_ms_p99": Stats.percentile(itl, 99) * 1000,
                "peak_rss_mb": Stats.peakRSSMegabytes(),
            ])
        }
    }
}

/// Deterministic, tokenizer-independent prompts: ids spread over the vocabulary.
enum BenchPrompts {
    static func tokens(count: Int, seed: Int, vocab: Int) -> [Int32] {
        (0..<count).map { Int32((($0 + 1) * 7919 + seed * 104_729 + 13) % vocab) }
    }
}

/// One request of the serving benchmark, timed on the client side as a user would see it.
enum BenchClient {
    struct Result { var ttft: Double; var gaps: [Double]; var tokens: Int }

    static func run(engine: Engine<CPUBackend>, session: UInt64, prompt: [Int32], outputLen: Int) async throws -> Result {
        let submitted = Date()
        var last = submitted
        var result = Result(ttft: 0, gaps: [], tokens: 0)
        let config = GenerationConfig(maxNewTokens: outputLen, sampling: .greedy, ignoreEOS: true)
        for try await out in engine.generate(session: session, input: .full(prompt), config: config) where !out.tokens.isEmpty {
            let now = Date()
            if result.tokens == 0 { result.ttft = now.timeIntervalSince(submitted) } else { result.gaps.append(now.timeIntervalSince(last) / Double(out.tokens.count)) }
            last = now
            result.tokens += out.tokens.count
        }
        return result
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

enum Stats {
    static func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

    /// Nearest-rank percentile of sorted values (0 when empty).
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    static func peakRSSMegabytes() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_maxrss) / 1024   // Linux reports KiB
    }
}

enum JSONLine {
    static func print(_ object: [String: Any]) {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        Swift.print(String(decoding: data, as: UTF8.self))
    }
}
