// POST /v1/chat/interactive: lmdeploy's own chat route, whose sessions keep their history and KV
// cache on the server between calls.
import Tokenizers

struct InteractiveRequest: Decodable, Sendable, SchemaDescribed {
    var prompt: String
    /// lmdeploy's other form of `prompt`: messages to append (a system prompt with the first turn).
    var promptMessages: [ChatMessageInput]?
    var sessionID: Int
    var interactiveMode: Bool
    var stream: Bool
    var stop: Bool
    var requestOutputLen: Int
    var topP: Double
    var topK: Int
    var temperature: Double
    var repetitionPenalty: Double
    var ignoreEOS: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case prompt, stream, stop, temperature
        case sessionID = "session_id", interactiveMode = "interactive_mode", requestOutputLen = "request_output_len"
        case topP = "top_p", topK = "top_k", repetitionPenalty = "repetition_penalty", ignoreEOS = "ignore_eos"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if c.contains(.prompt), (try? c.decodeNil(forKey: .prompt)) == false, (try? c.decode(String.self, forKey: .prompt)) == nil {
            prompt = ""
            do {
                promptMessages = try c.decode([ChatMessageInput].self, forKey: .prompt)
            } catch DecodingError.typeMismatch(_, let context) where context.codingPath.count <= 1 {
                throw APIError.invalid("`prompt`: expected a string or an array of {role, content} messages", param: "prompt", code: "invalid_type")
            }
        } else {
            prompt = try c.field(String.self, .prompt, default: "")
        }
        sessionID = try c.field(Int.self, .sessionID, default: -1)
        interactiveMode = try c.field(Bool.self, .interactiveMode, default: false)
        stream = try c.field(Bool.self, .stream, default: false)
        stop = try c.field(Bool.self, .stop, default: false)
        requestOutputLen = try c.field(Int.self, .requestOutputLen, default: 512)
        topP = try c.field(Double.self, .topP, default: 0.8)
        topK = try c.field(Int.self, .topK, default: 40)
        temperature = try c.field(Double.self, .temperature, default: 0.8)
        repetitionPenalty = try c.field(Double.self, .repetitionPenalty, default: 1)
        ignoreEOS = try c.field(Bool.self, .ignoreEOS, default: false)
    }

    static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    static let schema = Schema.object([
        ("prompt", Schema.oneOf([
            Schema.string("The user's message (this turn only: the server keeps the history)."),
            Schema.array(ChatMessageInput.schema, "Messages to append to the session's history (e.g. a system prompt and the first user message).", minItems: 1),
        ])),
        ("session_id", Schema.integer("The session; -1 = a one-off session.", minimum: -1)),
        ("interactive_mode", Schema.boolean("true: keep the session's history and KV cache between calls; false: end the session first (a fresh conversation).")),
        ("stream", Schema.boolean("Answer as JSON lines, one per update.")),
        ("stop", Schema.boolean("Cancel the session's running generation and return.")),
        ("request_output_len", Schema.integer("Most tokens to generate. Default 512.", minimum: 0)),
        ("top_p", Schema.number("Nucleus sampling mass. Default 0.8.", exclusiveMinimum: 0, maximum: 1)),
        ("top_k", Schema.integer("Keep the k most likely tokens (0 = no limit). Default 40.", minimum: 0)),
        ("temperature", Schema.number("Sampling temperature; 0 = greedy. Default 0.8.", minimum: 0, maximum: 2)),
        ("repetition_penalty", Schema.number("Multiplicative penalty on tokens of the context (1 = none).", exclusiveMinimum: 0, maximum: 10)),
        ("ignore_eos", Schema.boolean("Keep generating through end-of-sequence tokens.")),
    ])

    func validate() throws {
        if let list = promptMessages {
            try require(!list.isEmpty, "prompt", "must hold at least one message")
            for (i, m) in list.enumerated() {
                try require(ChatMessageInput.roles.contains(m.role), "prompt[\(i)].role",
                            "must be one of \(ChatMessageInput.roles.joined(separator: ", ")), got \(m.role)")
            }
        }
        try require(sessionID >= -1, "session_id", "must be ≥ -1 (-1 = none), got \(sessionID)")
        try require(requestOutputLen >= 0, "request_output_len", "must be ≥ 0, got \(requestOutputLen)")
        try require(topP > 0 && topP <= 1, "top_p", "must be in (0, 1], got \(topP)")
        try require(topK >= 0, "top_k", "must be ≥ 0, got \(topK)")
        try require(temperature.isFinite && temperature >= 0 && temperature <= 2, "temperature", "must be in [0, 2], got \(temperature)")
        try require(repetitionPenalty > 0 && repetitionPenalty <= 10, "repetition_penalty", "must be in (0, 10], got \(repetitionPenalty)")
    }
}

extension InteractiveRequest {
    /// The messages this turn appends to the session's history.
    var turn: [ChatMessage] {
        promptMessages?.map { ChatMessage(role: $0.role == "developer" ? "system" : $0.role, content: $0.content?.text ?? "") }
            ?? [ChatMessage(role: "user", content: prompt)]
    }
    var hasPrompt: Bool { promptMessages != nil || !prompt.isEmpty }
}

extension KeyedDecodingContainer {
    /// `key`'s value, or `defaultValue` when it is absent; null is an error (the schema says the type).
    func field<T: Decodable>(_ type: T.Type, _ key: Key, default defaultValue: T) throws -> T {
        contains(key) ? try decode(type, forKey: key) : defaultValue
    }
}

struct InteractiveResponse: Encodable, Sendable, SchemaDescribed {
    var text: String
    /// Tokens generated so far by this call.
    var tokens: Int
    var finishReason: String?
    var historyTokens: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case text, tokens
        case finishReason = "finish_reason", historyTokens = "history_tokens"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(text, forKey: .text)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(finishReason, forKey: .finishReason)
        try c.encode(historyTokens, forKey: .historyTokens)
    }

    static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    static let schema = Schema.object([
        ("text", Schema.string("The reply (streamed: the new text of this update).")),
        ("tokens", Schema.integer("Tokens generated by this call so far.", minimum: 0)),
        ("finish_reason", Schema.nullable(Schema.string("`stop`, `length`, `session_full` or `cancelled`; null until the last update.",
                                                        oneOf: ["stop", "length", "session_full", "cancelled"]))),
        ("history_tokens", Schema.integer("Tokens in the session's history after this update.", minimum: 0)),
    ], required: ["text", "tokens", "finish_reason", "history_tokens"])
}
