// Running a request's choices for the two kinds of answer: collected into one JSON body, or
// streamed as events, with the first update awaited before the headers go out so that errors
// still get their status. Either way the generation is cancelled when the connection closes.
import Foundation
import Hummingbird
import NIOCore
import TurboMind

/// One choice's output, collected.
struct ChoiceResult {
    var tokens: [Int32] = []
    var text = ""
    var logprobs: [Float] = []
    var topLogprobs: [[TokenLogprob]] = []
    var promptLogprobs: [Double]?
    var finish: FinishReason = .length
    var inputTokens = 0
    var historyTokens = 0

    mutating func add(_ out: GenerationOutput) {
        tokens += out.tokens
        text += out.text
        logprobs += out.logprobs ?? []
        topLogprobs += out.topLogprobs ?? []
        promptLogprobs = out.promptLogprobs ?? promptLogprobs
        if let f = out.finishReason { finish = f }
        inputTokens = out.inputTokens
        historyTokens = out.historyTokens
    }
}

enum Streaming {
    /// Cancels the request's generation when its connection closes (the client went away). The
    /// connection stays open for keep-alive otherwise; a cancel after the request ended is a no-op.
    static func watch(_ connection: any Channel, _ streams: ChoiceStreams) {
        connection.closeFuture.whenComplete { _ in streams.cancel() }
    }

    /// Runs every choice to the end. A client that disconnects meanwhile is noticed when its
    /// connection closes (`watch`); one whose close the server does not read until it answers
    /// (HTTP/1 keeps reading paused while a request is handled) is noticed only then.
    static func collect(_ streams: ChoiceStreams, count: Int, connection: any Channel, metrics: ServerMetrics) async throws -> [ChoiceResult] {
        let reader = UpdateReader(streams)
        watch(connection, streams)
        do {
            var results = [ChoiceResult](repeating: ChoiceResult(), count: count)
            while let (i, out) = try await reader.next() { results[i].add(out) }
            return results
        } catch {
            metrics.failed()
            throw APIError.engine(error)
        }
    }

    /// Awaits the first update (engine errors become HTTP errors), then answers 200 with a body
    /// that `write` fills from the rest; a failed write (the client left) cancels the generation.
    static func respond(_ streams: ChoiceStreams, sse: Bool, connection: any Channel, metrics: ServerMetrics, permit: Admission.Permit,
                        write: @escaping @Sendable (_ first: (Int, GenerationOutput)?, _ reader: UpdateReader, _ send: EventSink) async throws -> Void) async throws -> Response {
        let reader = UpdateReader(streams)
        watch(connection, streams)
        let first: (Int, GenerationOutput)?
        do {
            first = try await reader.next()
        } catch {
            metrics.failed()
            throw APIError.engine(error)
        }
        var headers = HTTPFields()
        headers[.contentType] = sse ? "text/event-stream" : "application/x-ndjson"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            let sink = EventSink(writer: writer)
            do {
                try await write(first, reader, sink)
            } catch let error as EventSink.ClientGone {
                _ = error
                streams.cancel()
                metrics.failed()
                permit.release()
                return
            } catch {
                // The stream failed after it started: the error goes out as a last event.
                metrics.failed()
                let body = APIError.engine(error).body
                if sse {
                    try? await sink.event(body)
                    try? await sink.done()
                } else {
                    try? await sink.send(body + Data([10]))
                }
            }
            permit.release()
            try await sink.finish()
        })
    }
}

/// Writes events to a response; a write that fails means the client is gone.
final class EventSink: @unchecked Sendable {
    struct ClientGone: Error {}
    private var writer: any ResponseBodyWriter

    init(writer: any ResponseBodyWriter) { self.writer = writer }

    /// Sends raw bytes (one JSON line, or one SSE event).
    func send(_ data: Data) async throws {
        do {
            try await writer.write(ByteBuffer(bytes: data))
        } catch {
            throw ClientGone()
        }
    }

    /// `data: JSON\n\n`.
    func event(_ json: Data) async throws {
        var d = Data("data: ".utf8)
        d.append(json)
        d.append(contentsOf: [10, 10])
        try await send(d)
    }

    /// `data: [DONE]\n\n`, the end of an OpenAI stream.
    func done() async throws { try await send(Data("data: [DONE]\n\n".utf8)) }

    func finish() async throws {
        let w = writer   // finish consumes the writer; copies share the connection
        try await w.finish(nil)
    }
}
