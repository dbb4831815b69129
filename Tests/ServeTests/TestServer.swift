// An api_server on 127.0.0.1 (port chosen by the system) over SmolLM2, built by the same
// `buildApplication` the command uses, and an HTTP client to talk to it.
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Testing
@testable import Serve
import TurboMind

enum TestModel {
    static var path: String {
        let env = ProcessInfo.processInfo.environment
        return env["LMDEPLOY_TEST_MODEL"]
            ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/smollm2-135m-instruct"
    }

    static var python: String {
        let env = ProcessInfo.processInfo.environment
        let venv = env["LMDEPLOY_TEST_VENV"] ?? ((env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/venv")
        return venv + "/bin/python"
    }

    /// Loaded once: every server of the tests shares the weights.
    static let source: ModelSource = {
        do { return try ModelSource.load(path: path) } catch { fatalError("cannot load the test model at \(path) (run Scripts/fetch-test-model): \(error)") }
    }()
}

final class TestServer: @unchecked Sendable {
    let context: ServeContext
    let port: Int
    private let task: Task<Void, Error>
    /// Enough connections for the 32-client test at once (the default pool holds 8 per host).
    let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    var base: String { "http://127.0.0.1:\(port)" }
    var engine: any InferenceEngine { context.engine }

    /// Starts a server; `configure` edits its options (keys, limits), `settings` the engine's.
    static func start(settings: EngineSettings = EngineSettings(sessionLen: 1024, maxBatchSize: 32, cacheMaxEntryCount: 8),
                      configure: (inout ServerOptions) -> Void = { _ in }) async throws -> TestServer {
        let source = TestModel.source
        let engine = try settings.launch(source)
        var options = ServerOptions(host: "127.0.0.1", port: 0, modelName: "smollm2")
        configure(&options)
        let context = ServeContext(engine: engine, format: try ChatFormat(source: source), options: options)
        var logger = Logger(label: "test.serve")
        logger.logLevel = .warning
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = buildApplication(context: context, logger: logger) { port in continuation.yield(port) }
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the server did not start") }
        return TestServer(context: context, port: port, task: task)
    }

    private init(context: ServeContext, port: Int, task: Task<Void, Error>) {
        self.context = context
        self.port = port
        self.task = task
    }

    func stop() async {
        try? await client.shutdown()
        task.cancel()
        _ = await task.result
        context.engine.shutdown()
    }

    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> [String: Any] {
            guard let o = try JSONSerialization.jsonObject(with: body) as? [String: Any] else { throw TestFailure("not a JSON object: \(text)") }
            return o
        }
        /// The error object's fields, checking its shape.
        func error() throws -> [String: Any] {
            guard let e = try json()["error"] as? [String: Any], e["message"] is String, e["type"] is String else {
                throw TestFailure("not an OpenAI error object: \(text)")
            }
            return e
        }
    }

    func request(_ method: HTTPMethod, _ path: String, body: Data? = nil, headers: [(String, String)] = []) async throws -> Reply {
        var r = HTTPClientRequest(url: base + path)
        r.method = method
        if let body {
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(bytes: body))
        }
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        let response = try await client.execute(r, timeout: .seconds(300))
        let data = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers, body: Data(buffer: data))
    }

    func post(_ path: String, _ json: String, headers: [(String, String)] = []) async throws -> Reply {
        try await request(.POST, path, body: Data(json.utf8), headers: headers)
    }

    func get(_ path: String, headers: [(String, String)] = []) async throws -> Reply {
        try await request(.GET, path, headers: headers)
    }

    /// `data:` payloads of a server-sent event stream, in order (`[DONE]` included).
    static func events(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").compactMap { block in
            block.hasPrefix("data: ") ? String(block.dropFirst(6)) : nil
        }
    }

    /// A metric's value from /metrics.
    func metric(_ name: String) async throws -> Double {
        let text = try await get("/metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            if let v = Double(line.split(separator: " ")[1]) { return v }
        }
        throw TestFailure("no metric \(name) in /metrics")
    }

    /// The engine's greedy output for a chat, run directly (the reference for the HTTP answers).
    func directChat(_ messages: [(String, String)], maxTokens: Int, stop: [String] = []) async throws -> GenerationResult {
        let format = context.format
        let tokens = try format.tokens(messages.map { .init(role: $0.0, content: $0.1) })
        var config = format.generationConfig(maxNewTokens: maxTokens, sampling: .greedy)
        config.stopWords += stop
        config.logprobs = true
        config.topLogprobs = 5
        return try await engine.run(session: (1 << 40) + UInt64.random(in: 0..<(1 << 20)), input: .full(tokens), config: config)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func jsonString(_ object: Any) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
}
