// How a conversation becomes prompt tokens for one model, and what ends a reply: lmdeploy's named
// template when the user names one (`--model-name`), else the model's own Jinja chat_template,
// else the named template a workspace records. Shared by the terminal chat and the server.
import Tokenizers

public enum ChatFormatError: Error, CustomStringConvertible, Equatable {
    case unknownModelName(String)
    case noTemplate(path: String)

    public var description: String {
        switch self {
        case let .unknownModelName(name):
            return "unknown model name \(name); `lmdeploy list` prints the names"
        case let .noTemplate(path):
            return "\(path) has no chat_template (tokenizer_config.json or chat_template.jinja); pass --model-name (see `lmdeploy list`)"
        }
    }
}

public struct ChatFormat: Sendable {
    /// lmdeploy's named template in use, or nil for the model's own chat_template.
    public let named: NamedChatTemplate?
    public let tokenizer: Tokenizer
    /// Token ids that end a reply: the config's eos ids and the tokenizer's eos token.
    public let stopTokenIds: Set<Int32>

    /// The format for `source`: `modelName` (one of lmdeploy's names) first, else the model's own template,
    /// else the workspace's recorded model name.
    public init(source: ModelSource, modelName: String? = nil) throws {
        tokenizer = source.tokenizer
        stopTokenIds = source.stopTokenIds
        if let modelName {
            guard let t = NamedChatTemplate.named(modelName) else { throw ChatFormatError.unknownModelName(modelName) }
            named = t
        } else if source.tokenizer.chatTemplate == nil {
            guard let name = source.workspace?.modelName, let t = NamedChatTemplate.named(name) else {
                throw ChatFormatError.noTemplate(path: source.directory.path)
            }
            named = t
        } else {
            // The model's own template: report an unusable one now, not after the first message.
            _ = try source.tokenizer.checkedChatTemplate()
            named = nil
        }
    }

    /// Text that ends a reply besides the stop tokens (a named template's stop words).
    public var stopWords: [String] { named?.stopWords ?? [] }

    /// The prompt of `messages`, ending with the assistant's turn opened.
    public func prompt(_ messages: [ChatMessage]) throws -> String {
        try named?.render(messages: messages, addGenerationPrompt: true)
            ?? tokenizer.applyChatTemplate(messages, addGenerationPrompt: true)
    }

    /// The prompt's token ids (the template writes the special tokens itself).
    public func tokens(_ messages: [ChatMessage]) throws -> [Int32] {
        tokenizer.encode(try prompt(messages), addSpecialTokens: false).map(Int32.init)
    }

    /// A generation config that stops where this format's replies end.
    public func generationConfig(maxNewTokens: Int, sampling: SamplingParams) -> GenerationConfig {
        GenerationConfig(maxNewTokens: maxNewTokens, sampling: sampling, stopTokenIds: stopTokenIds, stopWords: stopWords)
    }
}
