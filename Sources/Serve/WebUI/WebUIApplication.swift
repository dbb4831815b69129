// The HTTP application of `lmdeploy serve gradio`: the chat page and the few routes it calls,
// built by one function for the command and the tests alike.
import Foundation
import Hummingbird
import HummingbirdCore
import Logging

/// Every route of the web UI, with its methods (the router and the 405 answers agree on it).
enum WebUIRoutes {
    static let table: [String: [HTTPRequest.Method]] = [
        "/": [.get], "/chat.js": [.get], "/chat.css": [.get], "/health": [.get], "/webui/info": [.get],
        "/v1/models": [.get], "/v1/chat/interactive": [.post],
    ]
}

/// The web UI for `backend`, listening on `host`:`port`; `onServerRunning` receives the bound port
/// (tests bind port 0).
public func buildWebUIApplication(backend: ChatBackend, host: String, port: Int, timeouts: ConnectionTimeouts = ConnectionTimeouts(), logger: Logger? = nil,
                                  onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
    let router = Router(context: ServeRequestContext.self)
    router.add(middleware: ErrorMiddleware(routes: WebUIRoutes.table))
    router.add(middleware: SameOriginMiddleware())

    for asset in WebUIPage.assets {
        router.get(RouterPath(asset.path)) { _, _ in asset.response }
    }
    router.get("/health") { _, _ in Response(status: .ok) }
    let info = backend.info
    router.get("/webui/info") { _, _ in
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder().encode(info))))
    }
    switch backend {
    case let .local(context):
        router.get("/v1/models") { _, _ in try context.json(context.modelList) }
        router.post("/v1/chat/interactive") { request, c in try await context.interactive(request, connection: c.channel) }
    case let .restful(forwarder):
        router.get("/v1/models") { _, _ in try await forwarder.models() }
        router.post("/v1/chat/interactive") { request, c in try await forwarder.forward(request, connection: c.channel) }
    }

    var log = logger ?? Logger(label: "lmdeploy.webui")
    if logger == nil { log.logLevel = .info }
    let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "lmdeploy-swift")
    return Application(router: router, server: .guardedHTTP1(timeouts, logger: log), configuration: configuration, onServerRunning: { channel in
        await onServerRunning(channel.localAddress?.port ?? port)
    }, logger: log)
}

/// The page's POSTs are JSON from its own origin. Insisting on a JSON content type makes any
/// cross-site POST a CORS preflight, which this server never grants: another web site open in the
/// user's browser cannot drive (or reset) chat sessions here.
struct SameOriginMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method == .post else { return try await next(request, context) }
        let type = request.headers[.contentType]?.lowercased() ?? ""
        guard type.hasPrefix("application/json") else {
            throw APIError(.unsupportedMediaType, "send the body as Content-Type: application/json", code: "unsupported_media_type")
        }
        return try await next(request, context)
    }
}
