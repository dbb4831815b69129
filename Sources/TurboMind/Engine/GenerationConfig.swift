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

    public init(maxNewTokens: Int = 512, sampling: SamplingParams = SamplingParams(), stopTokenIds: Set<Int32> = [],
                ignoreEOS: Bool = false, stopWords: [String] = [], logprobs: Bool = false) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.ignoreEOS = ignoreEOS
        self.stopWords = stopWords
        self.logprobs = logprobs
    }
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
