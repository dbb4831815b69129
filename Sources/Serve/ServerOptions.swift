// What `lmdeploy serve api_server` is told besides the engine settings: where to listen, who may
// call it, and the limits every request is held to (documented in --help and /openapi.json).

public struct ServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// The model id clients name in `model` (GET /v1/models lists it).
    public var modelName: String
    /// Bearer keys; empty = no authentication.
    public var apiKeys: [String]
    public var cors: CORSPolicy
    /// Generation requests (chat, completions, interactive) running at once; beyond it they wait.
    public var maxConcurrentRequests: Int
    /// Requests that may wait for a slot; beyond it the server answers 429 with Retry-After.
    public var maxQueuedRequests: Int
    /// Generation requests one client (one remote address) may have running or waiting at once; beyond it, 429.
    public var maxRequestsPerClient: Int
    /// Open `/v1/chat/interactive` sessions in total and per client; a new session beyond either gets 429.
    public var maxSessions: Int
    public var maxSessionsPerClient: Int
    /// How long a request may wait for the engine to start it (KV cache full); then 503 with Retry-After.
    public var queueTimeout: Duration
    public var timeouts: ConnectionTimeouts
    public var limits: RequestLimits

    public init(host: String = "0.0.0.0", port: Int = 23333, modelName: String, apiKeys: [String] = [],
                cors: CORSPolicy = CORSPolicy(), maxConcurrentRequests: Int = 256, maxQueuedRequests: Int = 256,
                maxRequestsPerClient: Int = 128, maxSessions: Int = 4096, maxSessionsPerClient: Int = 1024,
                queueTimeout: Duration = .seconds(120), timeouts: ConnectionTimeouts = ConnectionTimeouts(),
                limits: RequestLimits = RequestLimits()) {
        self.host = host
        self.port = port
        self.modelName = modelName
        self.apiKeys = apiKeys
        self.cors = cors
        self.maxConcurrentRequests = maxConcurrentRequests
        self.maxQueuedRequests = maxQueuedRequests
        self.maxRequestsPerClient = maxRequestsPerClient
        self.maxSessions = maxSessions
        self.maxSessionsPerClient = maxSessionsPerClient
        self.queueTimeout = queueTimeout
        self.timeouts = timeouts
        self.limits = limits
    }
}

/// How long a connection may sit idle, take to send its request, or leave its response unread
/// before the server closes it (ConnectionGuard; Hummingbird's idle timeout).
public struct ConnectionTimeouts: Sendable {
    /// Nothing received and nothing to send (keep-alive between requests, or bytes that never make a request head).
    public var idle: Duration
    /// From a request's head to the end of its body.
    public var request: Duration
    /// A response the client does not read (the connection stays unwritable).
    public var write: Duration

    public init(idle: Duration = .seconds(60), request: Duration = .seconds(30), write: Duration = .seconds(30)) {
        self.idle = idle
        self.request = request
        self.write = write
    }
}

/// Bounds on one request's fields; the schema in /openapi.json states the same numbers.
public struct RequestLimits: Sendable {
    /// Largest request body in bytes (413 beyond).
    public var maxBodyBytes: Int
    /// Most choices per request (`n`).
    public var maxChoices: Int
    /// Most stop strings, and the longest one in characters.
    public var maxStopWords: Int
    public var maxStopWordLength: Int
    /// Most prompts in one completions request.
    public var maxPrompts: Int

    public init(maxBodyBytes: Int = 8 << 20, maxChoices: Int = 16, maxStopWords: Int = 16, maxStopWordLength: Int = 256,
                maxPrompts: Int = 64) {
        self.maxBodyBytes = maxBodyBytes
        self.maxChoices = maxChoices
        self.maxStopWords = maxStopWords
        self.maxStopWordLength = maxStopWordLength
        self.maxPrompts = maxPrompts
    }
}

/// Which browser origins may call the API (lmdeploy's --allow-origins and friends).
public struct CORSPolicy: Sendable {
    /// Allowed origins; `*` allows any.
    public var allowOrigins: [String]
    public var allowCredentials: Bool
    public var allowMethods: [String]
    public var allowHeaders: [String]

    public init(allowOrigins: [String] = ["*"], allowCredentials: Bool = false, allowMethods: [String] = ["*"],
                allowHeaders: [String] = ["*"]) {
        self.allowOrigins = allowOrigins
        self.allowCredentials = allowCredentials
        self.allowMethods = allowMethods
        self.allowHeaders = allowHeaders
    }
}
