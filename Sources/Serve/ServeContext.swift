// What every route shares: the engine and how prompts are built for it, the options and limits,
// the metrics, admission control, and the allocation of engine sessions to requests.
import Foundation
import Hummingbird
import TurboMind
import Tokenizers

public final class ServeContext: Sendable {
    public let engine: any InferenceEngine
    public let format: ChatFormat
    public let options: ServerOptions
    let metrics = ServerMetrics()
    let admission: Admission
    let sessions: InteractiveSessions
    private let counter = Counter()
    let startTime = Int(Date().timeIntervalSince1970)

    public init(engine: any InferenceEngine, format: ChatFormat, options: ServerOptions) {
        self.engine = engine
        self.format = format
        self.options = options
        sessions = InteractiveSessions(maxSessions: options.maxSessions, maxPerClient: options.maxSessionsPerClient)
        admission = Admission(limit: options.maxConcurrentRequests, queueDepth: options.maxQueuedRequests, perClient: options.maxRequestsPerClient)
    }

    var tokenizer: Tokenizer { format.tokenizer }
    var sessionLen: Int { engine.config.sessionLen }

    /// A session no client names: OpenAI requests without `session_id` each get their own, above
    /// the range lmdeploy clients use.
    func anonymousSession() -> UInt64 { (1 << 62) + counter.next() }

    func requestID(_ prefix: String) -> String { "\(prefix)-\(String(counter.next(), radix: 36))\(String(UInt32.random(in: 0...UInt32.max), radix: 36))" }

    /// The engine session for a request's `session_id` (nil or -1: a fresh one).
    func session(_ id: Int?) -> UInt64 {
        guard let id, id >= 0 else { return anonymousSession() }
        return UInt64(id)
    }

    /// The text of one token for logprobs (special tokens included, as OpenAI shows them).
    func tokenText(_ id: Int32) -> String { tokenizer.decode([Int(id)], skipSpecialTokens: false) }

    /// Checks that `prompt` leaves room to generate, and how many tokens may follow it.
    func room(after prompt: Int, requested: Int?, param: String) throws -> Int {
        guard prompt < sessionLen else { throw APIError.promptTooLong(tokens: prompt, sessionLen: sessionLen, param: param) }
        return min(requested ?? Int.max, sessionLen - prompt)
    }

    private final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value: UInt64 = 0
        func next() -> UInt64 { lock.withLock { value += 1; return value } }
    }
}

/// The messages and running request of each `/v1/chat/interactive` session, at most
/// `maxSessions` in all and `maxPerClient` opened by one client address (--max-sessions,
/// --max-sessions-per-client): the table, and the KV the sessions pin, cannot grow without bound.
final class InteractiveSessions: @unchecked Sendable {
    struct State {
        var messages: [ChatMessage] = []
        var running: TurboMind.RequestID?
        var historyTokens = 0
        /// The client that opened it (counted against its share).
        var client = ""
    }
    private let lock = NSLock()
    private var table: [UInt64: State] = [:]
    private var perClient: [String: Int] = [:]
    private let maxSessions: Int
    private let maxPerClient: Int

    init(maxSessions: Int = .max, maxPerClient: Int = .max) {
        self.maxSessions = max(1, maxSessions)
        self.maxPerClient = max(1, maxPerClient)
    }

    var count: Int { lock.withLock { table.count } }

    func state(_ session: UInt64) -> State { lock.withLock { table[session] ?? State() } }

    /// Makes sure `session` has an entry, opening one for `client` if it is new; 429 when the
    /// table or the client's share is full.
    func open(_ session: UInt64, client: String) throws {
        try lock.withLock {
            guard table[session] == nil else { return }
            let mine = perClient[client, default: 0]
            if table.count >= maxSessions {
                throw APIError.overloaded(retryAfter: 5, message: "the server has \(table.count) open interactive sessions, the most it keeps (--max-sessions): end one (interactive_mode false) or retry later")
            }
            if mine >= maxPerClient {
                throw APIError.overloaded(retryAfter: 5, message: "this client has \(mine) open interactive sessions, the most one client may keep (--max-sessions-per-client): end one (interactive_mode false) first")
            }
            table[session] = State(client: client)
            perClient[client] = mine + 1
        }
    }

    /// Edits an open session (one that was reset meanwhile stays closed).
    func update(_ session: UInt64, _ body: (inout State) -> Void) {
        lock.withLock {
            guard var s = table[session] else { return }
            body(&s)
            table[session] = s
        }
    }

    func reset(_ session: UInt64) {
        lock.withLock {
            guard let s = table.removeValue(forKey: session) else { return }
            if let n = perClient[s.client] { perClient[s.client] = n > 1 ? n - 1 : nil }
        }
    }
}

/// Reads a merged update stream from one task at a time (the handler, then the response writer).
final class UpdateReader: @unchecked Sendable {
    private var iterator: AsyncThrowingStream<(Int, GenerationOutput), Error>.AsyncIterator
    init(_ streams: ChoiceStreams) { iterator = streams.updates.makeAsyncIterator() }
    func next() async throws -> (Int, GenerationOutput)? { try await iterator.next() }
}
