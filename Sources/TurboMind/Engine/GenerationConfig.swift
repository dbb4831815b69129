// What a caller asks of one generation: how long, how to sample, when to stop.

public struct GenerationConfig: Sendable, Equatable {
    public var maxNewTokens: Int
    public var sampling: SamplingParams
    /// Generation ends (finish reason `stop`) when one of these is sampled; it is not emitted.
    public var stopTokenIds: Set<Int32>
    /// Keep generating through stop tokens (benchmarks, golden comparisons).
    public var ignoreEOS: Bool

    public init(maxNewTokens: Int = 512, sampling: SamplingParams = SamplingParams(), stopTokenIds: Set<Int32> = [], ignoreEOS: Bool = false) {
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokenIds = stopTokenIds
        self.ignoreEOS = ignoreEOS
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
