// Every failure a client can see, as OpenAI's error object
// (`{"error": {"message", "type", "param", "code"}}`) with the HTTP status that fits it.
// Only HTTP types here, no server: the request decoders that raise it are fuzzed on their own
// (Fuzz/serve_requests.swift); APIErrorResponse.swift makes it a Hummingbird response.
import Foundation
import HTTPTypes
import TurboMind

public struct APIError: Error, CustomStringConvertible, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra response headers (Retry-After, Allow, WWW-Authenticate).
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error",
                param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status.code) \(message)" }

    /// The JSON body, also sent as an SSE event when a stream fails after it started.
    public var body: Data {
        let object = ErrorResponse(error: .init(message: message, type: type, param: param, code: code))
        return (try? JSONEncoder.api.encode(object)) ?? Data("{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\"}}".utf8)
    }

    // The cases the handlers raise, so that messages and codes are uniform.
    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(.badRequest, message, param: param, code: code)
    }

    static func unknownModel(_ name: String, served: String) -> APIError {
        APIError(.notFound, "The model `\(name)` does not exist; this server serves `\(served)` (GET /v1/models)",
                 param: "model", code: "model_not_found")
    }

    static func promptTooLong(tokens: Int, sessionLen: Int, param: String) -> APIError {
        invalid("the prompt has \(tokens) tokens but the session length is \(sessionLen): shorten it or restart the server with a larger --session-len",
                param: param, code: "context_length_exceeded")
    }

    static func overloaded(retryAfter: Int, message: String) -> APIError {
        var e = APIError(.tooManyRequests, message, type: "server_overloaded", code: "rate_limit_exceeded")
        e.headers[.retryAfter] = String(retryAfter)
        return e
    }

    static let unauthorized: APIError = {
        var e = APIError(.unauthorized, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                         code: "invalid_api_key")
        e.headers[.wwwAuthenticate] = "Bearer"
        return e
    }()

    /// An engine error, mapped to the status a client can act on.
    static func engine(_ error: Error) -> APIError {
        guard let error = error as? EngineError else {
            return APIError(.internalServerError, "internal error: \(error)", type: "server_error")
        }
        switch error {
        case .engineStopped:
            var e = APIError(.serviceUnavailable, "the server is shutting down", type: "server_error", code: "shutting_down")
            e.headers[.retryAfter] = "5"
            return e
        case .queueTimeout:
            var e = APIError(.serviceUnavailable, error.description + "; retry later", type: "server_overloaded", code: "kv_cache_full")
            e.headers[.retryAfter] = "5"
            return e
        case .sessionBusy:
            return invalid(error.description, param: "session_id", code: "session_busy")
        case .contextFull, .exceedsCache:
            return invalid(error.description, code: "context_length_exceeded")
        case .tokenOutOfRange:
            return invalid(error.description, param: "prompt", code: "invalid_token")
        case .emptyInput:
            return invalid(error.description, param: "prompt", code: "empty_prompt")
        case .invalidConfig(let message):
            return invalid(message)
        }
    }
}

struct ErrorResponse: Codable, Sendable {
    struct Body: Codable, Sendable {
        var message: String
        var type: String
        var param: String?
        var code: String?
    }
    var error: Body
}

extension JSONEncoder {
    /// The encoder of every response: compact, keys sorted (stable output), no escaped slashes.
    static var api: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return e
    }
}
