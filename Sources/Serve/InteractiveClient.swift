// The client side of /v1/chat/interactive, for `lmdeploy serve api_client`: one session, turns
// streamed as JSON lines, Ctrl-C as `stop`, `end` as a fresh session.
import AsyncHTTPClient
import Foundation
import Tokenizers
import NIOCore
import NIOHTTP1

public enum ClientError: Error, CustomStringConvertible {
    case badURL(String)
    case server(status: Int, message: String)
    case connection(String, Error)
    case badAnswer(String)

    public var description: String {
        switch self {
        case let .badURL(url): return "\(url) is not an http:// or https:// URL (e.g. http://127.0.0.1:23333)"
        case let .server(status, message): return "the server answered \(status): \(message)"
        case let .connection(url, error): return "cannot reach \(url): \(error)"
        case let .badAnswer(line): return "the server sent something that is not an interactive answer: \(line.prefix(200))"
        }
    }
}

/// One update of a turn.
public struct InteractiveUpdate: Decodable, Sendable {
    public var text: String
    public var tokens: Int
    public var finishReason: String?
    public var historyTokens: Int
    enum CodingKeys: String, CodingKey { case text, tokens, finishReason = "finish_reason", historyTokens = "history_tokens" }
}

public final class InteractiveClient: Sendable {
    public let baseURL: String
    public let sessionID: Int
    private let apiKey: String?
    private let http: HTTPClient

    public init(url: String, sessionID: Int, apiKey: String?) throws {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        guard let parsed = URL(string: base), let scheme = parsed.scheme, ["http", "https"].contains(scheme), parsed.host != nil else {
            throw ClientError.badURL(url)
        }
        baseURL = base
        self.sessionID = sessionID
        self.apiKey = apiKey
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(3))
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func shutdown() async { try? await http.shutdown() }

    /// Sends one turn; the updates arrive as the server streams them.
    public func send(_ prompt: String, maxTokens: Int, sampling: [String: Double] = [:]) -> AsyncThrowingStream<InteractiveUpdate, Error> {
        var body: [String: Any] = ["prompt": prompt, "session_id": sessionID, "interactive_mode": true, "stream": true,
                                   "request_output_len": maxTokens]
        for (k, v) in sampling { body[k] = k == "top_k" ? Int(v) : v }
        let (stream, continuation) = AsyncThrowingStream<InteractiveUpdate, Error>.makeStream()
        let task = Task {
            do {
                let response = try await post(body)
                var pending = Data()
                for try await buffer in response.body {
                    pending.append(contentsOf: buffer.readableBytesView)
                    while let newline = pending.firstIndex(of: 10) {
                        let line = pending[pending.startIndex..<newline]
                        pending = Data(pending[(newline + 1)...])
                        if line.isEmpty { continue }
                        continuation.yield(try decodeLine(Data(line)))
                    }
                }
                if !pending.isEmpty { continuation.yield(try decodeLine(pending)) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Cancels the session's running turn (Ctrl-C).
    public func stop() async throws { _ = try await collect(["session_id": sessionID, "stop": true, "interactive_mode": true]) }

    /// Ends the session: the server forgets its history and frees its KV cache.
    public func end() async throws {
        _ = try await collect(["session_id": sessionID, "interactive_mode": false, "prompt": "", "request_output_len": 0])
    }

    private func decodeLine(_ line: Data) throws -> InteractiveUpdate {
        guard FoundationJSONGuard.accepts(line) else { throw ClientError.badAnswer(String(decoding: line.prefix(300), as: UTF8.self)) }
        if let update = try? JSONDecoder().decode(InteractiveUpdate.self, from: line) { return update }
        if let error = try? JSONDecoder().decode(ErrorResponse.self, from: line) {
            throw ClientError.server(status: 200, message: error.error.message)
        }
        throw ClientError.badAnswer(String(decoding: line, as: UTF8.self))
    }

    private func collect(_ body: [String: Any]) async throws -> Data {
        let response = try await post(body)
        let buffer = try await response.body.collect(upTo: 1 << 20)
        return Data(buffer: buffer)
    }

    private func post(_ body: [String: Any]) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: baseURL + "/v1/chat/interactive")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let apiKey { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .hours(24))
        } catch {
            throw ClientError.connection(baseURL, error)
        }
        guard response.status == .ok else {
            let data = Data(buffer: (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer())
            let message = (FoundationJSONGuard.accepts(data) ? (try? JSONDecoder().decode(ErrorResponse.self, from: data))?.error.message : nil)
                ?? String(decoding: data.prefix(300), as: UTF8.self)
            throw ClientError.server(status: Int(response.status.code), message: message)
        }
        return response
    }
}
