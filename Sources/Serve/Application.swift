// The HTTP application: one function builds it, for `lmdeploy serve api_server` and the tests alike.
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import TurboMind

/// Every route, with its methods: the router, the 405 answers and /openapi.json agree on it.
enum Routes {
    static let table: [String: [HTTPRequest.Method]] = [
        "/": [.get], "/api-page.js": [.get], "/health": [.get], "/metrics": [.get], "/openapi.json": [.get], "/v1/models": [.get],
        "/v1/chat/completions": [.post], "/v1/completions": [.post], "/v1/chat/interactive": [.post],
    ]
}

/// The application for `context`; `onServerRunning` receives the bound port (tests bind port 0).
public func buildApplication(context: ServeContext, logger: Logger? = nil,
                             onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
    let router = Router(context: ServeRequestContext.self)
    router.add(middleware: CORSPolicyMiddleware(policy: context.options.cors))
    router.add(middleware: ErrorMiddleware(routes: Routes.table))
    router.add(middleware: APIKeyMiddleware(keys: context.options.apiKeys))

    router.get("/health") { _, _ in Response(status: .ok) }
    router.get("/v1/models") { _, _ in try context.json(context.modelList) }
    router.get("/metrics") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        let text = context.metrics.render(engine: context.engine, admission: context.admission)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
    router.get("/openapi.json") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: context.openAPIDocument)))
    }
    router.get("/") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.contentSecurityPolicy] = APIPage.contentSecurityPolicy
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: APIPage.html)))
    }
    router.get("/api-page.js") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "text/javascript; charset=utf-8"
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: APIPage.script)))
    }
    router.post("/v1/chat/completions") { request, c in try await context.chatCompletions(request, connection: c.channel) }
    router.post("/v1/completions") { request, c in try await context.completions(request, connection: c.channel) }
    router.post("/v1/chat/interactive") { request, c in try await context.interactive(request, connection: c.channel) }

    var log = logger ?? Logger(label: "lmdeploy.serve")
    if logger == nil { log.logLevel = .info }
    let configuration = ApplicationConfiguration(address: .hostname(context.options.host, port: context.options.port),
                                                 serverName: "lmdeploy-swift")
    return Application(router: router, server: .guardedHTTP1(context.options.timeouts, logger: log), configuration: configuration, onServerRunning: { channel in
        await onServerRunning(channel.localAddress?.port ?? context.options.port)
    }, logger: log)
}

struct ModelList: Encodable, Sendable, SchemaDescribed {
    struct Model: Encodable, Sendable {
        var id: String
        var object = "model"
        var created: Int
        var ownedBy = "lmdeploy"
        enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by" }
    }
    var object = "list"
    var data: [Model]

    static let fieldNames = ["object", "data"]
    static let schema = Schema.object([
        ("object", Schema.string("Always `list`.", oneOf: ["list"])),
        ("data", Schema.array(Schema.object([
            ("id", Schema.string("The model id to send as `model`.")),
            ("object", Schema.string("Always `model`.", oneOf: ["model"])),
            ("created", Schema.integer("Unix time the server started.")),
            ("owned_by", Schema.string("Always `lmdeploy`.")),
        ], required: ["id", "object", "created", "owned_by"]))),
    ], required: ["object", "data"])
}

extension ServeContext {
    var modelList: ModelList { ModelList(data: [.init(id: options.modelName, created: startTime)]) }
}

extension HTTPServerBuilder {
    /// HTTP/1 with the connection deadlines of `timeouts`: Hummingbird's idle timeout and
    /// ConnectionGuard's request and write deadlines (every server of the product uses it).
    static func guardedHTTP1(_ timeouts: ConnectionTimeouts, logger: Logger) -> HTTPServerBuilder {
        .http1(configuration: .init(
            additionalChannelHandlers: [ConnectionGuard(requestTimeout: .init(timeouts.request), stallTimeout: .init(timeouts.write), logger: logger)],
            idleTimeout: .init(timeouts.idle)))
    }
}
