// The engine as the rest of the product sees it: no backend type in sight, so a server, the chat,
// the benchmarks and Lite hold `any InferenceEngine` whatever hardware runs it.

import Tokenizers
/// Identifies one request (one `generate` call) for its whole life.
public typealias RequestID = UInt64

/// One streamed update of a request.
public struct GenerationOutput: Sendable {
    /// Tokens generated since the previous update.
    public var tokens: [Int32]
    /// Text of those tokens (empty without a tokenizer; may lag a token behind to keep UTF-8
    /// characters and stop words whole).
    public var text: String
    /// Log-probabilities of `tokens`, when the request asked for them.
    public var logprobs: [Float]?
    /// With `topLogprobs` > 0: for each of `tokens`, the most likely tokens at that step, best first.
    public var topLogprobs: [[TokenLogprob]]?
    /// Set on the last update.
    public var finishReason: FinishReason?
    /// Prompt tokens of the request, and tokens generated so far.
    public var inputTokens: Int
    public var generatedTokens: Int
    /// Tokens in the session's history after this update.
    public var historyTokens: Int
    /// With `PromptOutput.lastLogits`, on the first update: the logits at the last prompt position;
    /// with `.allLogits`, those of every prompt position (`[count][vocab]` flat).
    public var promptLogits: [Float]?
    /// With `PromptOutput.logprobs`, on the first update: log P(prompt[p] | prompt[..<p]) for p ≥ 1.
    public var promptLogprobs: [Double]?
}

/// A token and its log-probability under the model (before sampling's penalties and temperature).
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int32
    public var logprob: Float
    public init(token: Int32, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

/// The updates of one request, with its id (for `cancel(request:)`). Iterating it is iterating
/// the underlying stream; dropping the iteration cancels the request.
public struct GenerationStream: AsyncSequence, Sendable {
    public typealias Element = GenerationOutput
    public let id: RequestID
    public let updates: AsyncThrowingStream<GenerationOutput, Error>

    public func makeAsyncIterator() -> AsyncThrowingStream<GenerationOutput, Error>.AsyncIterator {
        updates.makeAsyncIterator()
    }
}

/// Everything a request produced, collected (tests, benchmarks, perplexity).
public struct GenerationResult: Sendable {
    public var tokens: [Int32] = []
    public var text = ""
    public var logprobs: [Float] = []
    public var topLogprobs: [[TokenLogprob]] = []
    public var finishReason: FinishReason?
    public var promptLogits: [Float]?
    public var promptLogprobs: [Double]?
    public var historyTokens = 0
}

public struct EngineStats: Sendable, Equatable {
    public var totalBlocks: Int
    public var freeBlocks: Int
    public var waiting: Int
    public var active: Int
    public var cachedSessions: [UInt64]
    public var accountingConsistent: Bool
}

/// What callers of an engine need; `Engine<B>` provides it for every backend.
public protocol InferenceEngine: AnyObject, Sendable {
    var modelConfig: ModelConfig { get }
    var config: EngineConfig { get }
    var tokenizer: Tokenizer? { get }
    /// The backend, in words (`CPU (avx512, 2 threads)`).
    var backendDescription: String { get }
    /// KV cache capacity in tokens, and bytes the cache stores per token.
    var cacheTokens: Int { get }
    var kvBytesPerToken: Int { get }
    /// Adjustments made while starting (a KV budget clamped to memory, …), for the user to see.
    var notices: [String] { get }
    var stats: EngineStats { get }

    /// Starts generating for `session`. The stream yields updates as tokens are produced and
    /// finishes after the update carrying a finish reason; errors (an input that can never fit,
    /// a busy session) finish it with a thrown `EngineError`.
    func generate(session: UInt64, input: GenerationInput, config: GenerationConfig, interactive: Bool) -> GenerationStream
    /// Stops one request (its stream ends with `cancelled`); an interactive session keeps its KV
    /// cache up to the tokens computed so far. A request that already finished is left alone.
    func cancel(request: RequestID)
    /// Ends the session: a running request is cancelled and the session's KV blocks are freed.
    func end(session: UInt64)
    /// Stops the engine thread; running requests finish with `EngineError.engineStopped`.
    func shutdown()
}

extension InferenceEngine {
    /// Runs one request to completion and collects its output.
    public func run(session: UInt64, input: GenerationInput, config: GenerationConfig,
                    interactive: Bool = false) async throws -> GenerationResult {
        var result = GenerationResult()
        for try await out in generate(session: session, input: input, config: config, interactive: interactive) {
            result.tokens += out.tokens
            result.text += out.text
            result.logprobs += out.logprobs ?? []
            result.topLogprobs += out.topLogprobs ?? []
            result.finishReason = out.finishReason ?? result.finishReason
            result.promptLogits = out.promptLogits ?? result.promptLogits
            result.promptLogprobs = out.promptLogprobs ?? result.promptLogprobs
            result.historyTokens = out.historyTokens
        }
        return result
    }
}
