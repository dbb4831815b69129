// Restful mode's backend: relays the page's /v1/chat/interactive calls (turns, `stop`, resets) to
// an api_server, adding the --api-key, and streams the JSON lines back as they arrive. A browser
// that goes away mid-answer drops the upstream request too, which cancels the generation there.
import AsyncHTTPClient
import Foundation
import Tokenizers
import Hummingbird
import NIOCore
import NIOHTTP1

public final class InteractiveForwarder: Sendable {
    public let baseURL: String
    /// The upstream's model id (its GET /v1/models), read once at connect.
    public let modelName: String
    private let apiKey: String?
    private let http: HTTPClient
    /// The page's requests are small (a message and settings); larger bodies are refused here.
    static let maxBodyBytes = 1 << 20

    /// Checks that `url` is an api_server that answers with this key, and learns its model.
    public static func connect(url: String, apiKey: String?) async throws -> InteractiveForwarder {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        guard let parsed = URL(string: base), let scheme = parsed.scheme, ["http", "https"].contains(scheme), parsed.host != nil else {
            throw ClientError.badURL(url)
        }
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let name = try await modelName(of: base, apiKey: apiKey, http: http)
            return InteractiveForwarder(baseURL: base, modelName: name, apiKey: apiKey, http: http)
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    private init(baseURL: String, modelName: String, apiKey: String?, http: HTTPClient) {
        self.baseURL = baseURL
        self.modelName = modelName
        self.apiKey = apiKey
        self.http = http
    }

    public func shutdown() async { try? await http.shutdown() }

    private static func modelName(of base: String, apiKey: String?, http: HTTPClient) async throws -> String {
        var request = HTTPClientRequest(url: base + "/v1/models")
        if let apiKey { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(10))
        } catch {
            throw ClientError.connection(base, error)
        }
        let body = Data(buffer: (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer())
        if response.status == .unauthorized {
            throw ClientError.server(status: 401, message: apiKey == nil ? "the api_server wants an API key: pass --api-key KEY"
                                                                          : "the api_server refused the --api-key")
        }
        guard response.status == .ok else {
            throw ClientError.server(status: Int(response.status.code), message: "GET \(base)/v1/models: \(String(decoding: body.prefix(300), as: UTF8.self))")
        }
        struct Models: Decodable { struct Model: Decodable { var id: String }; var data: [Model] }
        guard FoundationJSONGuard.accepts(body), let models = try? JSONDecoder().decode(Models.self, from: body), let first = models.data.first else {
            throw ClientError.badAnswer("GET \(base)/v1/models: \(String(decoding: body.prefix(300), as: UTF8.self))")
        }
        return first.id
    }

    /// Relays one POST /v1/chat/interactive: the upstream's status, content type and body, the body
    /// streamed chunk by chunk.
    func forward(_ request: Request, connection: any Channel) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, "the request body is larger than \(Self.maxBodyBytes) bytes", code: "body_too_large")
        }
        var upstream = HTTPClientRequest(url: baseURL + "/v1/chat/interactive")
        upstream.method = .POST
        upstream.headers.add(name: "Content-Type", value: "application/json")
        if let apiKey { upstream.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        upstream.body = .bytes(body)
        let response: HTTPClientResponse
        do {
            // Generations may run long; the connect timeout catches a server that is gone.
            response = try await http.execute(upstream, timeout: .hours(24))
        } catch {
            throw APIError(.badGateway, "cannot reach the api_server at \(baseURL): \(error)", type: "server_error", code: "upstream_unreachable")
        }
        var headers = HTTPFields()
        headers[.contentType] = response.headers.first(name: "Content-Type") ?? "application/json"
        headers[.cacheControl] = "no-cache"
        if let retry = response.headers.first(name: "Retry-After") { headers[.retryAfter] = retry }
        let status = HTTPResponse.Status(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase)
        let upstreamBody = response.body
        return Response(status: status, headers: headers, body: ResponseBody { writer in
            let relay = BodyRelay(writer)
            // The copy runs in its own task so that the browser's connection closing can cancel
            // it: cancelling the upstream body's iteration makes AsyncHTTPClient drop that request.
            let copy = Task {
                for try await chunk in upstreamBody { try await relay.write(chunk) }
            }
            connection.closeFuture.whenComplete { _ in copy.cancel() }
            do {
                try await copy.value
            } catch is BodyRelay.ClientGone {
                return
            } catch is CancellationError {
                return
            } catch {
                // The upstream failed mid-stream: say so in the stream's own error shape.
                let e = APIError(.badGateway, "the api_server at \(self.baseURL) broke off the answer: \(error)", type: "server_error", code: "upstream_failed")
                try? await relay.write(ByteBuffer(bytes: e.body + Data([10])))
            }
            try await relay.finish()
        })
    }

    /// GET /v1/models, relayed.
    func models() async throws -> Response {
        var request = HTTPClientRequest(url: baseURL + "/v1/models")
        if let apiKey { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .seconds(30))
            body = try await response.body.collect(upTo: 1 << 20)
        } catch {
            throw APIError(.badGateway, "cannot reach the api_server at \(baseURL): \(error)", type: "server_error", code: "upstream_unreachable")
        }
        var headers = HTTPFields()
        headers[.contentType] = response.headers.first(name: "Content-Type") ?? "application/json"
        return Response(status: HTTPResponse.Status(code: Int(response.status.code)), headers: headers, body: .init(byteBuffer: body))
    }
}

/// Owns a response's writer for the task that copies into it; a failed write means the browser left.
final class BodyRelay: @unchecked Sendable {
    struct ClientGone: Error {}
    private var writer: any ResponseBodyWriter

    init(_ writer: any ResponseBodyWriter) { self.writer = writer }

    func write(_ buffer: ByteBuffer) async throws {
        do {
            try await writer.write(buffer)
        } catch {
            throw ClientGone()
        }
    }

    func finish() async throws {
        let w = writer
        try await w.finish(nil)
    }
}
