// POST /v1/chat/interactive: lmdeploy's session chat. The server keeps each session's messages;
// every turn renders the whole conversation and the engine reuses the session's cached KV for
// the part it has already computed, so only the new turn is computed.
import Foundation
import Hummingbird
import NIOCore
import Tokenizers
import TurboMind

extension ServeContext {
    func interactive(_ request: Request, connection: any Channel) async throws -> Response {
        metrics.received()
        var request = request
        let body = try await decodeBody(InteractiveRequest.self, from: &request)
        try body.validate()
        let session = self.session(body.sessionID)

        if body.stop {
            // Cancels the session's running generation; the history keeps what it produced.
            let state = sessions.state(session)
            if let running = state.running { engine.cancel(request: running) }
            return try json(InteractiveResponse(text: "", tokens: 0, finishReason: FinishReason.cancelled.rawValue,
                                                historyTokens: state.historyTokens))
        }
        if !body.interactiveMode {
            // A fresh conversation: the session's history and KV cache go.
            if let running = sessions.state(session).running { engine.cancel(request: running) }
            engine.end(session: session)
            sessions.reset(session)
            // lmdeploy's clients end a session with an empty prompt and request_output_len 0.
            if !body.hasPrompt && body.requestOutputLen == 0 {
                return try json(InteractiveResponse(text: "", tokens: 0, finishReason: FinishReason.stop.rawValue, historyTokens: 0))
            }
        }
        guard body.hasPrompt else {
            throw APIError.invalid("`prompt` is empty: send the user's message", param: "prompt", code: "empty_prompt")
        }
        let history = sessions.state(session).messages
        let messages = history + body.turn
        let prompt: [Int32]
        do {
            prompt = try format.tokens(messages)
        } catch {
            throw APIError.invalid("the chat template could not render the conversation: \(error)", param: "prompt", code: "template_error")
        }
        guard prompt.count < sessionLen else {
            throw APIError.invalid("the conversation has \(prompt.count) tokens but the session length is \(sessionLen): end the session (interactive_mode false) or shorten the prompt",
                                   param: "prompt", code: "context_length_exceeded")
        }
        let room = min(body.requestOutputLen, sessionLen - prompt.count)
        var config = format.generationConfig(maxNewTokens: room, sampling: SamplingParams(
            temperature: Float(body.temperature), topP: Float(body.topP), topK: body.topK,
            repetitionPenalty: Float(body.repetitionPenalty)))
        config.ignoreEOS = body.ignoreEOS
        let keep = body.interactiveMode && body.sessionID >= 0
        let client = Admission.client(of: connection)
        let permit = try await admission.acquire(client: client)
        // A named session gets an entry (its running request can be stopped by id); 429 when full.
        if body.sessionID >= 0 { try sessions.open(session, client: client) }
        let streams = ChoiceStreams(engine: engine, jobs: [ChoiceJob(session: session, input: .full(prompt), config: config, interactive: keep)],
                                    metrics: metrics, started: .now, queueTimeout: options.queueTimeout)
        sessions.update(session) { $0.running = streams.ids[0] }
        let sessions = self.sessions
        /// Records the finished turn in the session's history.
        @Sendable func settle(_ reply: String, _ finish: FinishReason?, _ historyTokens: Int) {
            sessions.update(session) { s in
                s.running = nil
                guard keep else { return }
                s.historyTokens = historyTokens
                if !(reply.isEmpty && finish == .cancelled) {
                    s.messages = messages + [ChatMessage(role: "assistant", content: reply)]
                }
            }
            if !keep { sessions.reset(session) }
        }

        guard body.stream else {
            let results: [ChoiceResult]
            do {
                results = try await Streaming.collect(streams, count: 1, connection: connection, metrics: metrics)
            } catch {
                settle("", .cancelled, 0)
                throw error
            }
            permit.release()
            let r = results[0]
            settle(r.text, r.finish, r.historyTokens)
            return try json(InteractiveResponse(text: r.text, tokens: r.tokens.count, finishReason: r.finish.rawValue,
                                                historyTokens: r.historyTokens))
        }
        do {
            return try await Streaming.respond(streams, sse: false, connection: connection, metrics: metrics, permit: permit) { first, reader, sink in
                let encoder = JSONEncoder.api
                var reply = "", generated = 0, finish: FinishReason?, history = 0
                defer { settle(reply, finish, history) }
                var next = first
                while let (_, out) = next {
                    reply += out.text
                    generated += out.tokens.count
                    finish = out.finishReason ?? finish
                    history = out.historyTokens
                    var line = try encoder.encode(InteractiveResponse(text: out.text, tokens: generated, finishReason: out.finishReason?.rawValue,
                                                                      historyTokens: out.historyTokens))
                    line.append(10)
                    try await sink.send(line)
                    next = try await reader.next()
                }
            }
        } catch {
            settle("", .cancelled, 0)
            throw error
        }
    }
}
