// POST /v1/completions: OpenAI's legacy text completion (plus lmdeploy's fields).

struct CompletionRequest: Decodable, Sendable, SchemaDescribed {
    var common: CommonFields
    var prompt: PromptInput
    var maxTokens: Int?
    var logprobs: Int?
    var echo: Bool?
    var suffix: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case prompt, logprobs, echo, suffix
        case maxTokens = "max_tokens"
    }

    /// OpenAI's default for completions.
    static let defaultMaxTokens = 16

    init(from decoder: any Decoder) throws {
        common = try CommonFields(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        prompt = try c.decode(PromptInput.self, forKey: .prompt)
        maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
        logprobs = try c.decodeIfPresent(Int.self, forKey: .logprobs)
        echo = try c.decodeIfPresent(Bool.self, forKey: .echo)
        suffix = try c.decodeIfPresent(String.self, forKey: .suffix)
    }

    static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) + CommonFields.CodingKeys.allCases.map(\.stringValue) }

    static var schema: JSONDoc { schema(RequestLimits()) }

    static func schema(_ limits: RequestLimits) -> JSONDoc {
        Schema.object([
            ("prompt", PromptInput.schema),
            ("max_tokens", Schema.nullable(Schema.integer("Most tokens to generate per choice. Default 16.", minimum: 1))),
            ("logprobs", Schema.nullable(Schema.integer("Return log-probabilities, with this many most likely tokens per step.", minimum: 0, maximum: 20))),
            ("echo", Schema.nullable(Schema.boolean("Put the prompt before the completion in `text`."))),
            ("suffix", Schema.nullable(Schema.string("Not supported: must be empty.", maxLength: 0))),
        ] + CommonFields.properties(limits), required: ["prompt"])
    }

    func validate(_ limits: RequestLimits, served: String) throws {
        try common.validate(limits, served: served)
        try require(prompt.count >= 1 && prompt.count <= limits.maxPrompts, "prompt", "must hold 1...\(limits.maxPrompts) prompts, got \(prompt.count)")
        if case .tokens(let lists) = prompt {
            for ids in lists { try require(!ids.isEmpty, "prompt", "token-id prompts must not be empty") }
        }
        if let m = maxTokens { try require(m >= 1, "max_tokens", "must be ≥ 1, got \(m)") }
        if let l = logprobs { try require(l >= 0 && l <= 20, "logprobs", "must be in 0...20, got \(l)") }
        try require((suffix ?? "").isEmpty, "suffix", "is not supported (insertion needs a fill-in-the-middle model)")
        let choices = prompt.count * common.choices
        try require(choices <= limits.maxChoices * limits.maxPrompts, "n", "prompts × n must be at most \(limits.maxChoices * limits.maxPrompts)")
    }
}

/// Log-probabilities in the completions format.
struct CompletionLogprobs: Encodable, Sendable {
    var tokens: [String] = []
    var tokenLogprobs: [Float] = []
    var topLogprobs: [[String: Float]] = []
    var textOffset: [Int] = []

    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    static let schema = Schema.nullable(Schema.object([
        ("tokens", Schema.array(Schema.string("A generated token's text."))),
        ("token_logprobs", Schema.array(Schema.number("Its log-probability."))),
        ("top_logprobs", Schema.array(.object([("type", .string("object")), ("additionalProperties", Schema.number("log-probability"))]),
                                      "Per step, the most likely tokens and their log-probabilities.")),
        ("text_offset", Schema.array(Schema.integer("Where the token starts in `text`.", minimum: 0))),
    ], required: ["tokens", "token_logprobs", "top_logprobs", "text_offset"]))
}

struct Completion: Encodable, Sendable, SchemaDescribed {
    struct Choice: Encodable, Sendable {
        var index: Int
        var text: String
        var logprobs: CompletionLogprobs?
        var finishReason: String?
        enum CodingKeys: String, CodingKey { case index, text, logprobs, finishReason = "finish_reason" }
    }
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?

    static let fieldNames = ["id", "object", "created", "model", "choices", "usage"]
    static let schema = Schema.object([
        ("id", Schema.string("Request id.")),
        ("object", Schema.string("Always `text_completion`.", oneOf: ["text_completion"])),
        ("created", Schema.integer("Unix time of the request.")),
        ("model", Schema.string("The model id.")),
        ("choices", Schema.array(Schema.object([
            ("index", Schema.integer("prompt index × n + choice.", minimum: 0)),
            ("text", Schema.string("The completion (after the prompt with echo).")),
            ("logprobs", CompletionLogprobs.schema),
            ("finish_reason", Schema.nullable(FinishReasonName.schema)),
        ], required: ["index", "text"]))),
        ("usage", Schema.nullable(Usage.schema)),
    ], required: ["id", "object", "created", "model", "choices"])
}
