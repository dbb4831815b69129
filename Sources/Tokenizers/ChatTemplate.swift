/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A Hugging Face chat template (Jinja), compiled once and rendered per conversation, with the
/// environment transformers uses (`trim_blocks`, `lstrip_blocks`).
///
/// The template is parsed into an AST by `JinjaParser` and evaluated by `JinjaInterpreter`; the
/// supported subset is documented on `JinjaParser`. Constructs outside it fail at `init` with
/// `TokenizerError.templateUnsupported` naming them.
public struct ChatTemplate: Sendable {
    public let source: String
    private let nodes: [JinjaNode]

    public init(source: String) throws {
        self.source = source
        nodes = try JinjaParser.parse(source)
    }

    /// Renders the conversation. Variables: `messages` (a list of `{role, content}`),
    /// `add_generation_prompt`, and `bos_token`/`eos_token` when given.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String?, eosToken: String?) throws -> String {
        var variables: [String: JinjaValue] = [
            "messages": .array(messages.map {
                .dict(JinjaDict([("role", .string($0.role)), ("content", .string($0.content))]))
            }),
            "add_generation_prompt": .bool(addGenerationPrompt),
        ]
        if let bosToken { variables["bos_token"] = .string(bosToken) }
        if let eosToken { variables["eos_token"] = .string(eosToken) }
        return try render(variables: variables)
    }

    /// Renders with arbitrary variables (tools, documents, … for richer templates).
    func render(variables: [String: JinjaValue]) throws(TokenizerError) -> String {
        try JinjaInterpreter.render(nodes, variables: variables)
    }
}
