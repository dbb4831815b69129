// Servers for the web UI tests: `serve gradio`'s application on 127.0.0.1 (port 0) over a
// backend, and a fake api_server with canned answers for what SmolLM2 will not say on cue
// (markup in the answer, a busy server, a full session).
import Foundation
import Hummingbird
import Logging
import Testing
@testable import Serve
import TurboMind

final class WebUITestServer: @unchecked Sendable {
    let port: Int
    private let task: Task<Void, Error>
    var base: String { "http://127.0.0.1:\(port)" }

    static func start(_ backend: ChatBackend) async throws -> WebUITestServer {
        var logger = Logger(label: "test.webui")
        logger.logLevel = .warning
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = buildWebUIApplication(backend: backend, host: "127.0.0.1", port: 0, logger: logger) { continuation.yield($0) }
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the web UI server did not start") }
        return WebUITestServer(port: port, task: task)
    }

    /// A local-mode server over its own engine (SmolLM2), and that engine's context.
    static func local(sessionLen: Int = 1024) async throws -> (WebUITestServer, ServeContext) {
        let engine = try EngineSettings(sessionLen: sessionLen, maxBatchSize: 8, cacheMaxEntryCount: 8).launch(TestModel.source)
        let context = ServeContext(engine: engine, format: try ChatFormat(source: TestModel.source),
                                   options: ServerOptions(host: "127.0.0.1", port: 0, modelName: "smollm2"))
        return (try await start(.local(context)), context)
    }

    private init(port: Int, task: Task<Void, Error>) {
        self.port = port
        self.task = task
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// An api_server that answers /v1/chat/interactive from a script: prompt `busy` gets 429, `full`
/// a reply ending `session_full`, anything else `FakeUpstream.markup` streamed in small pieces.
enum FakeUpstream {
    static let markup = """
    ## Result
    Here is **bold**, *italic* and `inline <b>code</b>` text.

    - one <i>item</i>
    - two

    1. first
    2. second

    <script>alert(1)</script>
    <img src=x onerror="window.__pwned=1">

    ```html
    <script>alert(2)</script>
    ```
    See [the docs](https://example.com/docs) and [bad](javascript:alert(3)).
    """

    static func start() async throws -> (port: Int, task: Task<Void, Error>) {
        let router = Router()
        router.get("/v1/models") { _, _ in
            json(#"{"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "lmdeploy"}]}"#)
        }
        router.post("/v1/chat/interactive") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] ?? [:]
            let prompt = object["prompt"] as? String ?? ((object["prompt"] as? [[String: Any]])?.last?["content"] as? String ?? "")
            if object["stop"] as? Bool == true || object["interactive_mode"] as? Bool == false {
                return json(#"{"text": "", "tokens": 0, "finish_reason": "stop", "history_tokens": 0}"#)
            }
            switch prompt {
            case "busy":
                var response = json(#"{"error": {"message": "the server is busy: 1 requests are running and 0 are waiting", "type": "server_overloaded", "param": null, "code": "rate_limit_exceeded"}}"#)
                response.status = .tooManyRequests
                response.headers[.retryAfter] = "3"
                return response
            case "full":
                return lines([(#"Almost out of room"#, 3, nil, 60), ("", 3, "session_full", 64)])
            default:
                // Pieces of 7 characters: tags and Markdown markers arrive split across updates.
                let chars = Array(markup)
                var pieces: [(String, Int, String?, Int)] = []
                for (n, start) in stride(from: 0, to: chars.count, by: 7).enumerated() {
                    pieces.append((String(chars[start..<min(start + 7, chars.count)]), n + 1, nil, 20 + n))
                }
                pieces.append(("", pieces.count, "stop", 20 + pieces.count))
                return lines(pieces)
            }
        }
        var logger = Logger(label: "test.fake-upstream")
        logger.logLevel = .warning
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the fake upstream did not start") }
        return (port, task)
    }

    private static func json(_ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Interactive JSON lines, 10 ms apart (as an engine streams them).
    private static func lines(_ updates: [(text: String, tokens: Int, finish: String?, history: Int)]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            for u in updates {
                var object: [String: Any] = ["text": u.text, "tokens": u.tokens, "history_tokens": u.history]
                object["finish_reason"] = u.finish ?? NSNull()
                var data = try JSONSerialization.data(withJSONObject: object)
                data.append(10)
                try await writer.write(ByteBuffer(bytes: data))
                try await Task.sleep(for: .milliseconds(10))
            }
            try await writer.finish(nil)
        })
    }
}
