// What wraps every route: errors in OpenAI's shape (404, 405 included), Bearer keys, CORS.
import Foundation
import Hummingbird

/// Turns every error into OpenAI's error object; an unknown path is 404, a known path with the
/// wrong method 405 with `Allow`.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Path → methods it answers.
    let routes: [String: [HTTPRequest.Method]]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            if let methods = routes[path] {
                var e = APIError(.methodNotAllowed, "\(request.method.rawValue) is not allowed on \(path); use \(methods.map(\.rawValue).joined(separator: " or "))",
                                 code: "method_not_allowed")
                e.headers[.allow] = methods.map(\.rawValue).joined(separator: ", ")
                return try e.response(from: request, context: context)
            }
            return try APIError(.notFound, "no route \(request.method.rawValue) \(path): see GET /openapi.json", code: "not_found")
                .response(from: request, context: context)
        } catch let error as HTTPResponseError {
            return try APIError(error.status, "\(error)").response(from: request, context: context)
        } catch {
            context.logger.error("request failed: \(error)")
            return try APIError(.internalServerError, "internal error: \(error)", type: "server_error")
                .response(from: request, context: context)
        }
    }
}

/// `Authorization: Bearer KEY` on every route but /health, when keys are set. Keys are compared
/// in constant time and never logged.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let keys: [[UInt8]]
    static var open: Set<String> { ["/health"] }

    init(keys: [String]) { self.keys = keys.map { Array($0.utf8) } }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !keys.isEmpty, !Self.open.contains(request.uri.path), request.method != .options else {
            return try await next(request, context)
        }
        let header = request.headers[.authorization] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix) else { throw APIError.unauthorized }
        let given = Array(header.utf8.dropFirst(prefix.utf8.count))
        var match = false
        for key in keys { match = Self.constantTimeEqual(given, key) || match }   // no early exit
        guard match else { throw APIError.unauthorized }
        return try await next(request, context)
    }

    /// Equal bytes, in time that depends on the lengths only.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }
}

/// CORS for the listed origins (lmdeploy's --allow-origins etc.): preflights are answered here,
/// other responses get the allow headers when the origin is allowed.
struct CORSPolicyMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: CORSPolicy

    func allowedOrigin(_ origin: String?) -> String? {
        guard let origin, origin != "null" else { return nil }
        if policy.allowOrigins.contains("*") { return policy.allowCredentials ? origin : "*" }
        return policy.allowOrigins.contains(origin) ? origin : nil
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let origin = request.headers[.origin]
        let allowed = allowedOrigin(origin)
        if request.method == .options, origin != nil {
            var headers = HTTPFields()
            if let allowed {
                headers[.accessControlAllowOrigin] = allowed
                let methods = policy.allowMethods.contains("*") ? "GET, POST, OPTIONS" : policy.allowMethods.joined(separator: ", ")
                headers[.accessControlAllowMethods] = methods
                let requested = request.headers[.accessControlRequestHeaders]
                headers[.accessControlAllowHeaders] = policy.allowHeaders.contains("*") ? (requested ?? "*") : policy.allowHeaders.joined(separator: ", ")
                if policy.allowCredentials { headers[.accessControlAllowCredentials] = "true" }
                headers[.accessControlMaxAge] = "600"
            }
            headers[.vary] = "Origin"
            return Response(status: allowed == nil ? .forbidden : .noContent, headers: headers)
        }
        var response = try await next(request, context)
        if let allowed {
            response.headers[.accessControlAllowOrigin] = allowed
            if policy.allowCredentials { response.headers[.accessControlAllowCredentials] = "true" }
            response.headers[.vary] = "Origin"
        }
        return response
    }
}
