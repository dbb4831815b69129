import Foundation

/// Every failure of the Tokenizers module: loading tokenizer files, unsupported components,
/// and chat templates. Messages name the file, the field and what was expected.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// A file that must exist is missing.
    case missingFile(path: String)
    /// A file could not be read.
    case unreadableFile(path: String, reason: String)
    /// The file is not JSON at all (syntax error); `detail` says where.
    case notJSON(file: String, detail: String)
    /// The JSON is well-formed but a field has the wrong shape or value.
    case invalidField(file: String, field: String, expected: String)
    /// A component (normalizer, pre-tokenizer, model, decoder, post-processor) of a type or
    /// with an option that this implementation does not support.
    case unsupported(file: String, component: String, detail: String)
    /// A chat template uses a Jinja construct that the interpreter does not support.
    case templateUnsupported(construct: String, line: Int)
    /// A chat template is malformed (syntax error).
    case templateSyntax(message: String, line: Int)
    /// Rendering a chat template failed (type error, undefined variable, …).
    case templateRender(message: String)
    /// The tokenizer has no chat template.
    case noChatTemplate(source: String)
    /// A chat template went over one of the sandbox's limits (`ChatTemplateSandbox`,
    /// docs/chat-template-sandbox.md); `what` names the limit, `limit` is its value, `line` the
    /// template line (0 when not known).
    case templateLimit(what: String, limit: Int, line: Int)
    /// The chat template read from `file` (tokenizer_config.json or chat_template.jinja) does not
    /// parse; `underlying` is the template error.
    indirect case templateInFile(file: String, underlying: TokenizerError)
    /// A token id outside the vocabulary (negative, or not below `vocabSize`).
    case tokenIdOutOfRange(id: Int, vocabSize: Int)
    /// A list of token ids that is not a list of integers; `detail` says where.
    case malformedTokenIds(detail: String)

    public var description: String {
        switch self {
        case let .missingFile(path):
            return "missing file: \(path)"
        case let .unreadableFile(path, reason):
            return "cannot read \(path): \(reason)"
        case let .notJSON(file, detail):
            return "\(file) is not valid JSON: \(detail)"
        case let .invalidField(file, field, expected):
            return "\(file): field '\(field)': expected \(expected)"
        case let .unsupported(file, component, detail):
            return "\(file): unsupported \(component): \(detail)"
        case let .templateUnsupported(construct, line):
            return "chat template line \(line): unsupported Jinja construct: \(construct)"
        case let .templateSyntax(message, line):
            return "chat template line \(line): syntax error: \(message)"
        case let .templateRender(message):
            return "chat template rendering failed: \(message)"
        case let .noChatTemplate(source):
            return "\(source): the tokenizer has no chat template (no chat_template in tokenizer_config.json and no chat_template.jinja)"
        case let .templateLimit(what, limit, line):
            return "chat template\(line > 0 ? " line \(line)" : ""): \(what) exceeds the sandbox limit of \(limit)"
        case let .templateInFile(file, underlying):
            return "\(file): \(underlying.description)"
        case let .tokenIdOutOfRange(id, vocabSize):
            return "token id \(id) is outside the vocabulary (ids are 0 to \(vocabSize - 1); the vocabulary has \(vocabSize) tokens)"
        case let .malformedTokenIds(detail):
            return "not a list of token ids: \(detail)"
        }
    }
}
