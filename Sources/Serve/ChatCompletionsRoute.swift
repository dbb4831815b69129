// POST /v1/chat/completions: the conversation through the model's chat template, n choices,
// answered at once or streamed as server-sent events.
import Foundation
import Hummingbird
import NIOCore
import Tokenizers
import TurboMind

extension ServeContext {
    func chatCompletions(_ request: Request, connection: any Channel) async throws -> Response {
        metrics.received()
        var request = request
        let body = try await decodeBody(ChatCompletionRequest.self, from: &request)
        try body.validate(options.limits, served: options.modelName)
        let messages = body.messages.map {
            ChatMessage(role: $0.role == "developer" ? "system" : $0.role, content: $0.content?.text ?? "")
        }
        let prompt: [Int32]
        do {
            prompt = try format.tokens(messages)
        } catch {
            throw APIError.invalid("the chat template could not render these messages: \(error)", param: "messages", code: "template_error")
        }
        let room = try room(after: prompt.count, requested: body.outputLimit, param: "messages")
        var config = format.generationConfig(maxNewTokens: room, sampling: body.common.sampling(choice: 0))
        config.stopWords += body.common.stop?.words ?? []
        config.ignoreEOS = body.common.ignoreEOS ?? false
        config.logprobs = body.logprobs ?? false
        config.topLogprobs = config.logprobs ? (body.topLogprobs ?? 0) : 0
        let n = body.common.choices
        let jobs = (0..<n).map { i -> ChoiceJob in
            var c = config
            c.sampling = body.common.sampling(choice: i)
            // A named session_id is one choice's engine session; the others get their own.
            let session = i == 0 ? self.session(body.common.sessionID) : anonymousSession()
            return ChoiceJob(session: session, input: .full(prompt), config: c)
        }
        let permit = try await admission.acquire(client: Admission.client(of: connection))
        let started = ContinuousClock.now
        let streams = ChoiceStreams(engine: engine, jobs: jobs, metrics: metrics, started: started, queueTimeout: options.queueTimeout)
        let id = requestID("chatcmpl"), created = Int(Date().timeIntervalSince1970), model = options.modelName

        guard body.common.streaming else {
            let results = try await Streaming.collect(streams, count: n, connection: connection, metrics: metrics)
            permit.release()
            let answer = ChatCompletion(
                id: id, created: created, model: model,
                choices: results.enumerated().map { i, r in
                    ChatCompletion.Choice(index: i, message: .init(content: r.text),
                                          logprobs: config.logprobs ? chatLogprobs(r.tokens, r.logprobs, r.topLogprobs) : nil,
                                          finishReason: r.finish.openAI)
                },
                usage: Usage(promptTokens: prompt.count, completionTokens: results.reduce(0) { $0 + $1.tokens.count }))
            return try json(answer)
        }

        let includeUsage = body.common.includeUsage, wantLogprobs = config.logprobs, promptCount = prompt.count
        return try await Streaming.respond(streams, sse: true, connection: connection, metrics: metrics, permit: permit) { first, reader, sink in
            let encoder = JSONEncoder.api
            func chunk(_ choice: ChatCompletionChunk.Choice) throws -> Data {
                try encoder.encode(ChatCompletionChunk(id: id, created: created, model: model, choices: [choice]))
            }
            for i in 0..<n {
                try await sink.event(try chunk(.init(index: i, delta: .init(role: "assistant", content: ""))))
            }
            var generated = 0
            var next = first
            while let (i, out) = next {
                generated += out.tokens.count
                if !out.text.isEmpty || (wantLogprobs && !out.tokens.isEmpty) {
                    let lp = wantLogprobs ? self.chatLogprobs(out.tokens, out.logprobs ?? [], out.topLogprobs ?? []) : nil
                    try await sink.event(try chunk(.init(index: i, delta: .init(content: out.text), logprobs: lp)))
                }
                if let f = out.finishReason {
                    try await sink.event(try chunk(.init(index: i, delta: .init(), finishReason: f.openAI)))
                }
                next = try await reader.next()
            }
            if includeUsage {
                let last = ChatCompletionChunk(id: id, created: created, model: model, choices: [],
                                               usage: Usage(promptTokens: promptCount, completionTokens: generated))
                try await sink.event(try encoder.encode(last))
            }
            try await sink.done()
        }
    }

    /// Chat's logprobs object for `tokens`.
    func chatLogprobs(_ tokens: [Int32], _ logprobs: [Float], _ top: [[TokenLogprob]]) -> ChatLogprobs {
        ChatLogprobs(content: tokens.indices.map { k in
            let text = tokenText(tokens[k])
            let alternatives: [ChatTokenLogprob.Alternative] = k < top.count ? top[k].map { (a: TokenLogprob) in
                let t = tokenText(a.token)
                return ChatTokenLogprob.Alternative(token: t, logprob: a.logprob, bytes: Array(t.utf8))
            } : []
            return ChatTokenLogprob(token: text, logprob: k < logprobs.count ? logprobs[k] : 0, bytes: Array(text.utf8),
                                    topLogprobs: alternatives)
        })
    }

    func decodeBody<T: Decodable>(_ type: T.Type, from request: inout Request) async throws -> T {
        let limit = options.limits.maxBodyBytes
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, "the request body is larger than \(limit) bytes (--max-body-bytes)", code: "body_too_large")
        }
        return try RequestDecoding.decode(type, from: Data(buffer: buffer))
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONEncoder.api.encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
