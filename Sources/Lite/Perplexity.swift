// Perplexity of a model on a token stream, windowed as HF's and llama.cpp's evaluations are:
// the text is cut into non-overlapping windows of `window` tokens (a shorter tail is dropped),
// each window runs from an empty cache, and positions 1..<window are scored by the logits of the
// position before them. ppl = exp(mean negative log-likelihood).
import TurboMind

public struct PerplexityResult: Sendable, Equatable {
    public let windows: Int
    public let scoredTokens: Int
    public let meanNLL: Double
    public var perplexity: Double { exp(meanNLL) }
}

public enum PerplexityError: Error, CustomStringConvertible, Equatable {
    case textTooShort(tokens: Int, window: Int)

    public var description: String {
        switch self {
        case let .textTooShort(tokens, window):
            return "the text has \(tokens) tokens, fewer than one window of \(window)"
        }
    }
}

public enum Perplexity {
    /// Scores `tokens` through `engine` (one one-shot request per window, from an empty cache);
    /// `progress(done, total)` is called after each window. The engine's session length must exceed `window`.
    public static func evaluate(engine: any InferenceEngine, tokens: [Int32], window: Int = 512,
                                progress: (Int, Int) -> Void = { _, _ in }) async throws -> PerplexityResult {
        let windows = tokens.count / window
        guard windows > 0, window >= 2 else { throw PerplexityError.textTooShort(tokens: tokens.count, window: window) }
        let config = GenerationConfig(maxNewTokens: 0, sampling: .greedy, prompt: .logprobs)
        var nll = 0.0
        for w in 0..<windows {
            let ids = Array(tokens[w * window..<(w + 1) * window])
            let result = try await engine.run(session: (1 << 62) + UInt64(w), input: .full(ids), config: config)
            let logprobs = result.promptLogprobs ?? []
            precondition(logprobs.count == window - 1, "the engine scored \(logprobs.count) of \(window - 1) positions")
            nll -= logprobs.reduce(0, +)
            progress(w + 1, windows)
        }
        let scored = windows * (window - 1)
        return PerplexityResult(windows: windows, scoredTokens: scored, meanNLL: nll / Double(scored))
    }
}
extension Perplexity {
    /// `lmdeploy lite perplexity`: the perplexity of the text file at `dataset` under the model at
    /// `modelPath` (an HF directory or a workspace), tokenized by the model's tokenizer, through an
    /// engine configured by `settings` (quant_policy 4: the int8 KV cache).
    public static func run(modelPath: String, dataset: String, window: Int, settings: EngineSettings,
                           progress: (Int, Int) -> Void = { _, _ in }) async throws -> (result: PerplexityResult, engine: EngineConfig) {
        let source = try ModelSource.load(path: modelPath)
        guard window >= 2 else { throw PerplexityError.textTooShort(tokens: 0, window: window) }
        let text = try CalibrationDataset.text(of: CalibrationDataset.resolve(dataset))
        let tokens = source.tokenizer.encode(text).map(Int32.init)
        var resolved = settings
        resolved.sessionLen = window + 1
        resolved.maxBatchSize = 1
        resolved.cacheMaxEntryCount = resolved.cacheMaxEntryCount ?? 1
        let engine = try resolved.launch(source)
        defer { engine.shutdown() }
        return (try await evaluate(engine: engine, tokens: tokens, window: window, progress: progress), engine.config)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
