// The formats layer reads JSON (safetensors headers, checkpoint indexes, config.json) through the
// package's one JSON tree, `Tokenizers.JSONValue`, parsed by the strict `JSONParser`: objects keep
// every key in file order, so a tensor named twice in a header is seen, not silently merged.
import Foundation
import Tokenizers

extension JSONValue {
    /// Parses `data` with the strict parser; the error's text says what and where (line, column).
    static func parse(_ data: Data) throws -> JSONValue { try JSONParser.parse(data) }

    /// A parse or decoding error as one readable sentence (the decoder's own text, without the type's dump).
    static func explain(_ error: Error) -> String {
        if let syntax = error as? JSONParser.SyntaxError { return syntax.message }
        guard let decodingError = error as? DecodingError else { return "\(error)" }
        switch decodingError {
        case .dataCorrupted(let context), .keyNotFound(_, let context), .typeMismatch(_, let context),
             .valueNotFound(_, let context):
            var text = context.debugDescription
            if let underlying = context.underlyingError { text += " (\(underlying))" }
            return text
        @unknown default:
            return "\(error)"
        }
    }

    /// Quotes `string` as a JSON string literal.
    static func quote(_ string: String) -> String { JSONText.quote(string) }
}
