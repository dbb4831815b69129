// Turning a request body into a typed request: JSON errors become 400s that name the field
// (`param`) and say what was expected, as OpenAI's API does.
import Foundation
import Tokenizers

enum RequestDecoding {
    static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        guard !data.isEmpty else { throw APIError.invalid("the request has no body: send a JSON object", code: "invalid_json") }
        guard String(data: data, encoding: .utf8) != nil else {
            throw APIError.invalid("the request body is not valid UTF-8", code: "invalid_json")
        }
        do { try FoundationJSONGuard.check(data) } catch {
            throw APIError.invalid("the request body is not valid JSON: \(error.message)", code: "invalid_json")
        }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as APIError {
            throw error
        } catch let error as DecodingError {
            throw describe(error)
        } catch {
            throw APIError.invalid("the request body is not valid JSON: \(error)", code: "invalid_json")
        }
    }

    /// A decoding error as a 400 naming the field.
    static func describe(_ error: DecodingError) -> APIError {
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: ["."])
        }
        switch error {
        case let .typeMismatch(type, context):
            let field = path(context.codingPath)
            return .invalid("`\(field.isEmpty ? "body" : field)`: expected \(describe(type))", param: field.isEmpty ? nil : field, code: "invalid_type")
        case let .valueNotFound(type, context):
            let field = path(context.codingPath)
            return .invalid("`\(field)`: expected \(describe(type)), got null", param: field, code: "invalid_type")
        case let .keyNotFound(key, context):
            let field = path(context.codingPath + [key])
            return .invalid("`\(field)` is required", param: field, code: "missing_field")
        case let .dataCorrupted(context):
            let field = path(context.codingPath)
            if field.isEmpty {
                return .invalid("the request body is not valid JSON: \(context.debugDescription)", code: "invalid_json")
            }
            return .invalid("`\(field)`: \(context.debugDescription)", param: field, code: "invalid_value")
        @unknown default:
            return .invalid("the request body could not be decoded: \(error)", code: "invalid_json")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is Int32.Type, is Int64.Type, is UInt64.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is [Any].Type: return "an array"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return "an object"
        }
    }
}

/// Throws a 400 for `field` unless `condition` holds.
func require(_ condition: Bool, _ field: String, _ message: @autoclosure () -> String) throws {
    guard condition else { throw APIError.invalid("`\(field)` \(message())", param: field, code: "invalid_value") }
}
