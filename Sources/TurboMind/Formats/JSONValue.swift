// A plain JSON tree, for headers whose keys are data (safetensors tensor names, index weight maps),
// where checking each field by hand gives better error messages than a fixed Decodable shape.
import Foundation
import Tokenizers

enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Parses `bytes` as JSON; the error's text is the decoder's explanation.
    static func parse(_ data: Data) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// The value at `path` (object keys and array indices), if there is one.
    func value(at path: [CodingKey]) -> JSONValue? {
        var current = self
        for key in path {
            switch current {
            case .object(let fields):
                guard let next = fields[key.stringValue] else { return nil }
                current = next
            case .array(let elements):
                guard let index = key.intValue, elements.indices.contains(index) else { return nil }
                current = elements[index]
            default:
                return nil
            }
        }
        return current
    }

    /// A parse error as one readable sentence (the decoder's own text, without the type's dump).
    static func explain(_ error: Error) -> String {
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

    /// A short rendering for error messages.
    var brief: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return String(value)
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .string(let value): return "\"\(value)\""
        case .array(let values):
            let scalars = values.allSatisfy {
                switch $0 {
                case .array, .object: return false
                default: return true
                }
            }
            if scalars && values.count <= 8 { return "[" + values.map(\.brief).joined(separator: ", ") + "]" }
            return "an array of \(values.count) elements"
        case .object: return "an object"
        }
    }

    /// Quotes `string` as a JSON string literal.
    static func quote(_ string: String) -> String { JSONText.quote(string) }

}
