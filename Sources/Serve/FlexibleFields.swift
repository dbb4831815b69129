// JSON fields that OpenAI lets take several shapes: `stop` (a string or a list), message content
// (a string or a list of parts) and completion prompts (text, texts, token ids, lists of them).

/// `stop`: one string or a list of them.
struct StopList: Decodable, Sendable, Equatable {
    var words: [String]

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            words = []
        } else if let s = try? c.decode(String.self) {
            words = [s]
        } else if let list = try? c.decode([String].self) {
            words = list
        } else {
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath, debugDescription: "expected a string or a list of strings"))
        }
    }

    static let schema = Schema.oneOf([
        Schema.string("A stop string.", maxLength: RequestLimits().maxStopWordLength),
        Schema.array(Schema.string("A stop string.", maxLength: RequestLimits().maxStopWordLength), maxItems: RequestLimits().maxStopWords),
        Schema.null,
    ], "Generation stops before the first of these strings; they are not returned.")

    func validate(_ limits: RequestLimits) throws {
        try require(words.count <= limits.maxStopWords, "stop", "has \(words.count) strings; at most \(limits.maxStopWords) are allowed")
        for w in words {
            try require(w.count <= limits.maxStopWordLength, "stop", "strings are at most \(limits.maxStopWordLength) characters (one has \(w.count))")
        }
    }
}

/// A chat message's content: a string, or a list of parts of which only text is supported.
struct MessageContent: Decodable, Sendable, Equatable {
    var text: String

    private struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            text = ""
        } else if let s = try? c.decode(String.self) {
            text = s
        } else if let parts = try? c.decode([Part].self) {
            var out = ""
            for part in parts {
                guard part.type == "text", let t = part.text else {
                    throw APIError.invalid("content parts of type `\(part.type)` are not supported: this model reads text only",
                                           param: "messages.content", code: "unsupported_content")
                }
                out += t
            }
            text = out
        } else {
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath, debugDescription: "expected a string or a list of content parts"))
        }
    }

    static let schema = Schema.oneOf([
        Schema.string("The message text."),
        Schema.array(Schema.object([
            ("type", Schema.string("Part type; only `text` is supported.", oneOf: ["text"])),
            ("text", Schema.string("The part's text.")),
        ], required: ["type", "text"]), "Content parts, concatenated."),
        Schema.null,
    ])
}

/// `prompt` of /v1/completions: a string, a list of strings, a list of token ids, or a list of those.
enum PromptInput: Decodable, Sendable, Equatable {
    case texts([String])
    case tokens([[Int]])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .texts([s])
        } else if let list = try? c.decode([String].self) {
            self = .texts(list)
        } else if let ids = try? c.decode([Int].self) {
            self = .tokens([ids])
        } else if let lists = try? c.decode([[Int]].self) {
            self = .tokens(lists)
        } else {
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath,
                debugDescription: "expected a string, a list of strings, a list of token ids or a list of token-id lists"))
        }
    }

    var count: Int {
        switch self {
        case .texts(let t): return t.count
        case .tokens(let t): return t.count
        }
    }

    static let schema = Schema.oneOf([
        Schema.string("One prompt."),
        Schema.array(Schema.string("A prompt."), "Several prompts, each completed separately.", minItems: 1, maxItems: RequestLimits().maxPrompts),
        Schema.array(Schema.integer("A token id.", minimum: 0), "One prompt as token ids.", minItems: 1),
        Schema.array(Schema.array(Schema.integer("A token id.", minimum: 0), minItems: 1), "Several prompts as token ids.", minItems: 1, maxItems: RequestLimits().maxPrompts),
    ], "The prompt(s) to complete.")
}

/// `stream_options`.
struct StreamOptions: Decodable, Sendable, Equatable {
    var includeUsage: Bool?
    enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" }

    static let schema = Schema.nullable(Schema.object([
        ("include_usage", Schema.boolean("Send a last chunk with the token usage of the whole request (its `choices` is empty).")),
    ]))
}
