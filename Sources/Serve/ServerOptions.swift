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
    public var limits: RequestLimits

    public init(host: String = "0.0.0.0", port: Int = 23333, modelName: String, apiKeys: [String] = [],
                cors: CORSPolicy = CORSPolicy(), maxConcurrentRequests: Int = 256, maxQueuedRequests: Int = 256,
                limits: RequestLimits = RequestLimits()) {
        self.host = host
        self.port = port
        self.modelName = modelName
        self.apiKeys = apiKeys
        self.cors = cors
        self.maxConcurrentRequests = maxConcurrentRequests
        self.maxQueuedRequests = maxQueuedRequests
        self.limits = limits
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
