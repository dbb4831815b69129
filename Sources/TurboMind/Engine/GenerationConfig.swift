// What a caller asks of one generation: how long, how to sample, when to stop.

public struct GenerationConfig: Sendable, Equatable {
    public var maxNewTokens: Int
    public var sampling: SamplingParams
    /// Generation ends (finish reason `stop`) when one of these is sampled; it is not emitted.
    public var stopTokenIds: Set<Int32>
    /// Keep generating through stop tokens and stop words (benchmarks, golden comparisons).
    public var ignoreEOS: Bool
    /// Generation ends when the reply's text contains one of these; the text before it is emitted,
    /// the stop word is not. Needs an engine with a tokenizer.
    public var stopWords: [String]
    /// Report the log-probability of each generated token.
    public var logprobs: Bool
    /// With `logprobs`, also report the this many most likely tokens at each step (0 = none; at most 20).
    public var topLogprobs: Int
    /// What the request returns about its prompt (perplexity, golden comparisons).
    public var prompt: PromptOutput
    /// How long the request may wait for room in the batch and the KV cache; past it, it fails with
    /// `EngineError.queueTimeout` (nil: it waits as long as it takes).
    public var queueTimeout: Duration?

    public init(maxNewTokens: Int = 512, sampling: SamplingParams = SamplingParams(), stopTokenIds: Set<Int32> = [],
                ignoreEOS: Bool = false, stopWords: [String] = [], logprobs: Bool = false, topLogprobs: Int = 0,
                prompt: PromptOutput = .none, queueTimeout: Duration? = nil) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.ignoreEOS = ignoreEOS
        self.stopWords = stopWords
        self.logprobs = logprobs
        self.topLogprobs = topLogprobs
        self.prompt = prompt
        self.queueTimeout = queueTimeout
    }

    /// OpenAI's limit on `top_logprobs`.
    public static let maxTopLogprobs = 20

    /// Checks the limits a request must respect; `maxNewTokens` 0 scores the prompt and generates nothing.
    func validate() throws {
        guard maxNewTokens >= 0 else { throw EngineError.invalidConfig("max_new_tokens must be ≥ 0, got \(maxNewTokens)") }
        let s = sampling
        guard s.temperature >= 0, s.temperature.isFinite else { throw EngineError.invalidConfig("temperature must be ≥ 0, got \(s.temperature)") }
        guard s.topP > 0, s.topP <= 1 else { throw EngineError.invalidConfig("top_p must be in (0, 1], got \(s.topP)") }
        guard s.topK >= 0 else { throw EngineError.invalidConfig("top_k must be ≥ 0, got \(s.topK)") }
        guard s.repetitionPenalty > 0, s.repetitionPenalty.isFinite else {
            throw EngineError.invalidConfig("repetition_penalty must be > 0, got \(s.repetitionPenalty)")
        }
        guard s.presencePenalty.isFinite, s.frequencyPenalty.isFinite else {
            throw EngineError.invalidConfig("presence_penalty and frequency_penalty must be finite")
        }
        guard (0...GenerationConfig.maxTopLogprobs).contains(topLogprobs) else {
            throw EngineError.invalidConfig("top_logprobs must be in 0...\(GenerationConfig.maxTopLogprobs), got \(topLogprobs)")
        }
    }
}

/// What a request reports about its prompt, in its first update.
public enum PromptOutput: Sendable, Equatable {
    case none
    /// The logits at the last prompt position (the distribution the first new token is drawn from).
    case lastLogits
    /// The logits at every prompt position, `[count][vocab]` flat: the prompt is computed from scratch.
    case allLogits
    /// log P(prompt[p] | prompt[..<p]) for p = 1..<count: the prompt is computed from scratch (no
    /// cached prefix is reused), so every position is scored.
    case logprobs
}

public enum FinishReason: String, Sendable, Equatable {
    /// A stop token was sampled.
    case stop
    /// `maxNewTokens` were generated.
    case length
    /// The session's KV cache is full: the conversation must end.
    case sessionFull = "session_full"
    /// The caller stopped the stream.
    case cancelled
}
