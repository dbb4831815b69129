// Errors of running a model or the engine (as opposed to loading one: FormatError).

/// Errors of running the model (as opposed to loading it: `FormatError`).
public enum EngineError: Error, CustomStringConvertible, Equatable, Sendable {
    case contextFull(needed: Int, capacity: Int)
    case tokenOutOfRange(id: Int32, vocab: Int)
    case emptyInput
    case invalidConfig(String)
    /// The request needs more KV blocks than the whole cache has.
    case exceedsCache(tokens: Int, cacheTokens: Int)
    /// The session already has a request running.
    case sessionBusy(session: UInt64)
    case engineStopped
    /// The request waited longer than its `queueTimeout` for room in the batch and the KV cache.
    case queueTimeout(waited: Duration)

    public var description: String {
        switch self {
        case let .contextFull(needed, capacity):
            return "the session needs \(needed) tokens but its length is \(capacity) (raise --session-len or start a new session)"
        case let .tokenOutOfRange(id, vocab):
            return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case .emptyInput:
            return "the input has no tokens"
        case let .invalidConfig(message):
            return "invalid engine configuration: \(message)"
        case let .exceedsCache(tokens, cacheTokens):
            return "the request needs \(tokens) tokens of KV cache but the whole cache holds \(cacheTokens) (raise --cache-max-entry-count or shorten the request)"
        case let .sessionBusy(session):
            return "session \(session) already has a request running"
        case .engineStopped:
            return "the engine has stopped"
        case let .queueTimeout(waited):
            return "the request waited \(waited.components.seconds) s for room in the KV cache and was not started: the server is at capacity"
        }
    }
}
