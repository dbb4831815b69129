// POST /v1/chat/completions: the request as OpenAI defines it (plus lmdeploy's fields), and the
// answer and stream chunks.

struct ChatMessageInput: Decodable, Sendable {
    var role: String
    var content: MessageContent?
    var name: String?

    static let roles = ["system", "developer", "user", "assistant", "tool"]

    static let schema = Schema.object([
        ("role", Schema.string("Who wrote the message.", oneOf: roles)),
        ("content", MessageContent.schema),
        ("name", Schema.nullable(Schema.string("An optional participant name."))),
    ], required: ["role"])
}

struct ChatCompletionRequest: Decodable, Sendable, SchemaDescribed {
    var common: CommonFields
    var messages: [ChatMessageInput]
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var logprobs: Bool?
    var topLogprobs: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case messages, logprobs
        case maxTokens = "max_tokens", maxCompletionTokens = "max_completion_tokens", topLogprobs = "top_logprobs"
    }

    init(from decoder: any Decoder) throws {
        common = try CommonFields(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        messages = try c.decode([ChatMessageInput].self, forKey: .messages)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        maxCompletionTokens = try c.decodeIfPresent(Int.self, forKey: .maxCompletionTokens)
        logprobs = try c.decodeIfPresent(Bool.self, forKey: .logprobs)
        topLogprobs = try c.decodeIfPresent(Int.self, forKey: .topLogprobs)
    }

    static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) + CommonFields.CodingKeys.allCases.map(\.stringValue) }

    static var schema: JSONDoc { schema(RequestLimits()) }

    static func schema(_ limits: RequestLimits) -> JSONDoc {
        Schema.object([
            ("messages", Schema.array(ChatMessageInput.schema, "The conversation so far.", minItems: 1)),
            ("max_tokens", Schema.nullable(Schema.integer("Most tokens to generate (default: what the session length leaves).", minimum: 1))),
            ("max_completion_tokens", Schema.nullable(Schema.integer("The newer name of max_tokens; wins when both are given.", minimum: 1))),
            ("logprobs", Schema.nullable(Schema.boolean("Return the log-probability of each generated token."))),
            ("top_logprobs", Schema.nullable(Schema.integer("With logprobs, also the this many most likely tokens at each step.", minimum: 0, maximum: 20))),
        ] + CommonFields.properties(limits), required: ["messages"])
    }

    func validate(_ limits: RequestLimits, served: String) throws {
        try common.validate(limits, served: served)
        try require(!messages.isEmpty, "messages", "must hold at least one message")
        for (i, m) in messages.enumerated() {
            try require(ChatMessageInput.roles.contains(m.role), "messages[\(i)].role",
                        "must be one of \(ChatMessageInput.roles.joined(separator: ", ")), got \(m.role)")
        }
        if let m = maxTokens { try require(m >= 1, "max_tokens", "must be ≥ 1, got \(m)") }
        if let m = maxCompletionTokens { try require(m >= 1, "max_completion_tokens", "must be ≥ 1, got \(m)") }
        if let t = topLogprobs {
            try require(t >= 0 && t <= 20, "top_logprobs", "must be in 0...20, got \(t)")
            try require(t == 0 || logprobs == true, "top_logprobs", "needs `logprobs: true`")
        }
    }

    var outputLimit: Int? { maxCompletionTokens ?? maxTokens }
}

// MARK: answers

struct Usage: Encodable, Sendable {
    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int { promptTokens + completionTokens }

    enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(completionTokens, forKey: .completionTokens)
        try c.encode(totalTokens, forKey: .totalTokens)
    }

    static let schema = Schema.object([
        ("prompt_tokens", Schema.integer("Tokens of the prompt(s).", minimum: 0)),
        ("completion_tokens", Schema.integer("Tokens generated over all choices.", minimum: 0)),
        ("total_tokens", Schema.integer("Their sum.", minimum: 0)),
    ], required: ["prompt_tokens", "completion_tokens", "total_tokens"])
}

/// One token's log-probability in chat's format.
struct ChatTokenLogprob: Encodable, Sendable {
    struct Alternative: Encodable, Sendable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
    }
    var token: String
    var logprob: Float
    var bytes: [UInt8]
    var topLogprobs: [Alternative]

    enum CodingKeys: String, CodingKey { case token, logprob, bytes, topLogprobs = "top_logprobs" }

    static let schema: JSONDoc = {
        let alternative = Schema.object([
            ("token", Schema.string("The token's text.")),
            ("logprob", Schema.number("Its log-probability.")),
            ("bytes", Schema.array(Schema.integer("A UTF-8 byte.", minimum: 0, maximum: 255))),
        ], required: ["token", "logprob", "bytes"])
        return Schema.object([
            ("token", Schema.string("The token's text.")),
            ("logprob", Schema.number("Its log-probability under the model.")),
            ("bytes", Schema.array(Schema.integer("A UTF-8 byte.", minimum: 0, maximum: 255))),
            ("top_logprobs", Schema.array(alternative, "The most likely tokens at this step, best first.")),
        ], required: ["token", "logprob", "bytes", "top_logprobs"])
    }()
}

struct ChatLogprobs: Encodable, Sendable {
    var content: [ChatTokenLogprob]
    static let schema = Schema.nullable(Schema.object([("content", Schema.array(ChatTokenLogprob.schema))], required: ["content"]))
}

struct ChatCompletion: Encodable, Sendable, SchemaDescribed {
    struct Message: Encodable, Sendable {
        var role = "assistant"
        var content: String
    }
    struct Choice: Encodable, Sendable {
        var index: Int
        var message: Message
        var logprobs: ChatLogprobs?
        var finishReason: String
        enum CodingKeys: String, CodingKey { case index, message, logprobs, finishReason = "finish_reason" }
    }
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage

    static let fieldNames = ["id", "object", "created", "model", "choices", "usage"]
    static let schema = Schema.object([
        ("id", Schema.string("Request id.")),
        ("object", Schema.string("Always `chat.completion`.", oneOf: ["chat.completion"])),
        ("created", Schema.integer("Unix time of the request.")),
        ("model", Schema.string("The model id.")),
        ("choices", Schema.array(Schema.object([
            ("index", Schema.integer("Choice index.", minimum: 0)),
            ("message", Schema.object([
                ("role", Schema.string("Always `assistant`.", oneOf: ["assistant"])),
                ("content", Schema.string("The reply.")),
            ], required: ["role", "content"])),
            ("logprobs", ChatLogprobs.schema),
            ("finish_reason", FinishReasonName.schema),
        ], required: ["index", "message", "finish_reason"]))),
        ("usage", Usage.schema),
    ], required: fieldNames)
}

struct ChatCompletionChunk: Encodable, Sendable, SchemaDescribed {
    struct Delta: Encodable, Sendable {
        var role: String?
        var content: String?
    }
    struct Choice: Encodable, Sendable {
        var index: Int
        var delta: Delta
        var logprobs: ChatLogprobs?
        var finishReason: String?
        enum CodingKeys: String, CodingKey { case index, delta, logprobs, finishReason = "finish_reason" }
    }
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?

    static let fieldNames = ["id", "object", "created", "model", "choices", "usage"]
    static let schema = Schema.object([
        ("id", Schema.string("Request id (the same in every chunk).")),
        ("object", Schema.string("Always `chat.completion.chunk`.", oneOf: ["chat.completion.chunk"])),
        ("created", Schema.integer("Unix time of the request.")),
        ("model", Schema.string("The model id.")),
        ("choices", Schema.array(Schema.object([
            ("index", Schema.integer("Choice index.", minimum: 0)),
            ("delta", Schema.object([
                ("role", Schema.string("`assistant`, in a choice's first chunk.")),
                ("content", Schema.string("New text.")),
            ])),
            ("logprobs", ChatLogprobs.schema),
            ("finish_reason", Schema.nullable(FinishReasonName.schema)),
        ], required: ["index", "delta"]))),
        ("usage", Schema.nullable(Usage.schema)),
    ], required: ["id", "object", "created", "model", "choices"])
}

/// OpenAI's finish reasons.
enum FinishReasonName {
    static let schema = Schema.string("`stop` (stop token or string), `length` (max_tokens or the session length), `abort` (cancelled).",
                                      oneOf: ["stop", "length", "abort"])
}
