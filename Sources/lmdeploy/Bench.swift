// `lmdeploy bench MODEL`: speed, as JSON lines. Flags only: the measurements are
// TurboMind.Benchmark's, through the engine's public API.
import ArgumentParser
import Foundation
import TurboMind

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and print JSON lines.",
        discussion: """
        One sequence (no --concurrency), through the engine:
          prefill   a prompt of --input-len tokens from an empty cache; tokens_per_s = input_len / seconds
                    (seconds: submission to the first generated token)
          decode    --output-len tokens decoded one at a time after that prompt (greedy, EOS ignored);
                    tokens_per_s = output_len / seconds. Each figure is the median of --runs runs after a warm-up.
          Compare with llama.cpp: llama-bench -p 512 -n 128 -t THREADS on the same weights, or
          llama-batched-bench -npp 512 -ntg 128 -npl 1 for decode after the prompt.

        Serving (--concurrency 1,4,16,64): for each level, --num-prompts requests (default 4 × the level)
        go through the batching engine with that many in flight at once:
          request_throughput     completed requests per second
          output_tokens_per_s    generated tokens per second, all requests together
          ttft_ms_p50/_p99       time to first token: submission to the first generated token
          itl_ms_p50/_p99        inter-token latency: gap between consecutive tokens of a request
          peak_rss_mb            peak resident memory of this process so far
        --random-lengths draws each request's input and output lengths uniformly in [L/2, 3L/2].
        Compare with llama.cpp: llama-batched-bench -npp 128 -ntg 128 -npl 1,4,16.

        Engine flags left out are sized for the run: --session-len to the longest request, and in
        serving mode --max-batch-size and --cache-max-entry-count to the largest level.
        """
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace.")
    var modelPath: String

    @Option(name: [.customLong("input-len"), .customLong("input_len")], parsing: .unconditional, help: "Prompt tokens.")
    var inputLen: Int = 512

    @Option(name: [.customLong("output-len"), .customLong("output_len")], parsing: .unconditional, help: "Generated tokens.")
    var outputLen: Int = 128

    @Option(parsing: .unconditional, help: "One-sequence mode: measured runs (after one warm-up).")
    var runs: Int = 3

    @Option(help: "Serving mode: comma-separated numbers of requests in flight, e.g. 1,4,16,64.")
    var concurrency: String?

    @Option(name: [.customLong("num-prompts"), .customLong("num_prompts")], parsing: .unconditional,
            help: "Serving mode: requests per level (default 4 × concurrency).")
    var numPrompts: Int?

    @Flag(name: [.customLong("random-lengths"), .customLong("random_lengths")], help: "Serving mode: random input/output lengths in [L/2, 3L/2].")
    var randomLengths = false

    @OptionGroup var engineOptions: EngineOptions

    func validate() throws {
        guard inputLen >= 1 else { throw ValidationError("--input-len must be at least 1, got \(inputLen)") }
        guard outputLen >= 1 else { throw ValidationError("--output-len must be at least 1, got \(outputLen)") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1, got \(runs)") }
        if let numPrompts, numPrompts < 1 { throw ValidationError("--num-prompts must be at least 1, got \(numPrompts)") }
        if let concurrency {
            let l = levels(concurrency)
            guard !l.isEmpty, l.count == concurrency.split(separator: ",").count, l.allSatisfy({ (1...65536).contains($0) }) else {
                throw ValidationError("--concurrency takes integers from 1 to 65536 separated by commas, e.g. 1,4,16; got \(concurrency)")
            }
        }
    }

    private func levels(_ text: String) -> [Int] { text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    /// Longest request of the run, prompt and reply (single mode decodes one token past the prompt's first).
    private var longestRequest: Int {
        let (i, o) = randomLengths && concurrency != nil ? ((inputLen * 3 + 1) / 2, (outputLen * 3 + 1) / 2) : (inputLen, outputLen)
        return i + o + 1
    }

    func run() async throws {
        let source = try ModelSource.load(path: modelPath)
        let context = source.config.maxPositionEmbeddings
        guard longestRequest + 1 <= context else {
            throw ValidationError("--input-len \(inputLen) + --output-len \(outputLen)\(randomLengths ? " (×1.5 with --random-lengths)" : "") needs \(longestRequest + 1) positions, more than the model's context of \(context) tokens")
        }
        if let s = engineOptions.sessionLen, s < longestRequest + 1 {
            throw ValidationError("--session-len \(s) is shorter than the longest request (\(longestRequest + 1) tokens): raise it or lower --input-len/--output-len")
        }
        let top = concurrency.map { levels($0).max()! } ?? 1
        var settings = engineOptions.settings
        settings.sessionLen = settings.sessionLen ?? longestRequest + 1
        settings.maxBatchSize = settings.maxBatchSize ?? top
        settings.cacheMaxEntryCount = settings.cacheMaxEntryCount ?? Double(top)
        if top > 512 { settings.maxPrefillTokenNum = settings.maxPrefillTokenNum ?? top }   // else the device's default
        let engine = try settings.launch(source)
        defer { engine.shutdown() }
        for notice in engine.notices { FileHandle.standardError.write(Data("bench: \(notice)\n".utf8)) }
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        var common: [String: Any] = ["model": name, "backend": engine.backendDescription, "kv_cache": engine.config.kvCacheType.rawValue,
                                     "kv_bytes_per_token": engine.kvBytesPerToken, "lm_head_dtype": engineOptions.lmHeadDType]
        if let p = engine.config.kvQuantParameters { common["kv_params"] = p.granularity.rawValue }
        if let concurrency {
            try await serving(engine, levels(concurrency), common: common)
        } else {
            let r = try await Benchmark.single(engine: engine, inputLen: inputLen, outputLen: outputLen, runs: runs)
            print(BenchStatistics.jsonLine(common.merging(["bench": "prefill", "tokens": inputLen, "seconds": r.prefillSeconds,
                                                           "tokens_per_s": Double(inputLen) / r.prefillSeconds]) { $1 }))
            print(BenchStatistics.jsonLine(common.merging(["bench": "decode", "tokens": outputLen, "context": inputLen, "seconds": r.decodeSeconds,
                                                           "tokens_per_s": Double(outputLen) / r.decodeSeconds]) { $1 }))
        }
    }

    private func serving(_ engine: any InferenceEngine, _ levels: [Int], common: [String: Any]) async throws {
        let vocab = engine.modelConfig.vocabSize
        var rng = SeededGenerator(seed: 42)
        // Warm-up: one short request through the whole path (within the run's own lengths).
        _ = try await engine.run(session: 1 << 40, input: .full(BenchPrompts.tokens(count: min(16, inputLen), seed: 99, vocab: vocab)),
                                 config: GenerationConfig(maxNewTokens: min(4, outputLen), sampling: .greedy, ignoreEOS: true))
        var nextSession: UInt64 = 1
        for c in levels {
            let n = numPrompts ?? 4 * c
            let jobs: [Benchmark.Job] = (0..<n).map { i in
                let inLen = randomLengths ? Int.random(in: max(1, inputLen / 2)...(inputLen * 3 + 1) / 2, using: &rng) : inputLen
                let outLen = randomLengths ? Int.random(in: max(1, outputLen / 2)...(outputLen * 3 + 1) / 2, using: &rng) : outputLen
                return Benchmark.Job(prompt: BenchPrompts.tokens(count: inLen, seed: i + c * 10_000, vocab: vocab), outputLen: outLen)
            }
            let r = try await Benchmark.serving(engine: engine, jobs: jobs, concurrency: c, firstSession: nextSession)
            nextSession += UInt64(n)
            print(BenchStatistics.jsonLine(common.merging([
                "bench": "serve", "concurrency": c, "num_prompts": n, "input_len": inputLen, "output_len": outputLen,
                "random_lengths": randomLengths, "seconds": r.seconds, "request_throughput": Double(n) / r.seconds,
                "output_tokens_per_s": Double(r.outputTokens) / r.seconds,
                "ttft_ms_p50": BenchStatistics.percentile(r.ttft, 50) * 1000, "ttft_ms_p99": BenchStatistics.percentile(r.ttft, 99) * 1000,
                "itl_ms_p50": BenchStatistics.percentile(r.itl, 50) * 1000, "itl_ms_p99": BenchStatistics.percentile(r.itl, 99) * 1000,
                "peak_rss_mb": Double(ProcessMemory.peakResidentBytes() ?? 0) / Double(1 << 20),
            ]) { $1 }))
        }
    }
}
