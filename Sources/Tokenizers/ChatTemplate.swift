import Foundation

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
        try self.init(parsing: source)
    }

    /// As `init(source:)`, with the error typed.
    init(parsing source: String) throws(TokenizerError) {
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

extension ChatTemplate {
    /// Renders a conversation given as JSON: a list of messages, or an object with `messages`
    /// and any other template variables (`tools`, `documents`, `date_string`…). Messages may carry
    /// any fields (`tool_calls`, `name`…). `add_generation_prompt`, `bos_token` and `eos_token`
    /// are set from the arguments unless the object sets them.
    public func render(conversationJSON data: Data, addGenerationPrompt: Bool, bosToken: String?, eosToken: String?) throws -> String {
        let root = try JSONParser.parse(data, file: "the conversation")
        var variables: [String: JinjaValue] = ["add_generation_prompt": .bool(addGenerationPrompt)]
        if let bosToken { variables["bos_token"] = .string(bosToken) }
        if let eosToken { variables["eos_token"] = .string(eosToken) }
        switch root {
        case .array:
            variables["messages"] = JinjaValue(json: root)
        case let .object(o):
            for (k, v) in zip(o.keys, o.values) { variables[k] = JinjaValue(json: v) }
            guard variables["messages"] != nil else {
                throw TokenizerError.invalidField(file: "the conversation", field: "messages", expected: "a list of messages")
            }
        default:
            throw TokenizerError.invalidField(file: "the conversation", field: "(top level)",
                                              expected: "a list of messages or an object with \"messages\"")
        }
        return try render(variables: variables)
    }
}

extension JinjaValue {
    init(json: JSONValue) {
        switch json {
        case .null: self = .none
        case let .bool(b): self = .bool(b)
        case let .integer(i): self = .int(i)
        case let .double(d): self = .double(d)
        case let .string(s): self = .string(s)
        case let .array(a): self = .array(a.map { JinjaValue(json: $0) })
        case let .object(o): self = .dict(JinjaDict(zip(o.keys, o.values.map { JinjaValue(json: $0) }).map { ($0, $1) }))
        }
    }
}
