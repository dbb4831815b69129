// POST /v1/completions: raw prompts (text or token ids, one or several), each completed n times.
import Foundation
import Hummingbird
import NIOCore
import TurboMind

extension ServeContext {
    func completions(_ request: Request, connection: any Channel) async throws -> Response {
        metrics.received()
        var request = request
        let body = try await decodeBody(CompletionRequest.self, from: &request)
        try body.validate(options.limits, served: options.modelName)
        let prompts: [[Int32]]
        switch body.prompt {
        case .texts(let texts):
            prompts = texts.map { tokenizer.encode($0, addSpecialTokens: true).map(Int32.init) }
        case .tokens(let lists):
            let vocab = engine.modelConfig.vocabSize
            for ids in lists {
                if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
                    throw APIError.invalid("token id \(bad) is outside the vocabulary (0..<\(vocab))", param: "prompt", code: "invalid_token")
                }
            }
            prompts = lists.map { $0.map(Int32.init) }
        }
        for p in prompts where p.isEmpty {
            throw APIError.invalid("a prompt has no tokens", param: "prompt", code: "empty_prompt")
        }
        let n = body.common.choices
        let topCount = body.logprobs ?? 0
        let wantLogprobs = body.logprobs != nil, echo = body.echo ?? false
        var jobs: [ChoiceJob] = []
        for p in prompts {
            let room = try room(after: p.count, requested: body.maxTokens ?? CompletionRequest.defaultMaxTokens, param: "prompt")
            for i in 0..<n {
                var c = GenerationConfig(maxNewTokens: room, sampling: body.common.sampling(choice: i),
                                         stopTokenIds: format.stopTokenIds, ignoreEOS: body.common.ignoreEOS ?? false,
                                         stopWords: body.common.stop?.words ?? [], logprobs: wantLogprobs, topLogprobs: topCount)
                if echo && wantLogprobs { c.prompt = .logprobs }
                let session = jobs.isEmpty ? self.session(body.common.sessionID) : anonymousSession()
                jobs.append(ChoiceJob(session: session, input: .full(p), config: c))
            }
        }
        let permit = try await admission.acquire(client: Admission.client(of: connection))
        let streams = ChoiceStreams(engine: engine, jobs: jobs, metrics: metrics, started: .now, queueTimeout: options.queueTimeout)
        let id = requestID("cmpl"), created = Int(Date().timeIntervalSince1970), model = options.modelName
        let promptTexts = prompts.map { tokenizer.decode($0.map(Int.init)) }
        let promptTokens = prompts.reduce(0) { $0 + $1.count }

        guard body.common.streaming else {
            let results = try await Streaming.collect(streams, count: jobs.count, connection: connection, metrics: metrics)
            permit.release()
            let choices = results.enumerated().map { k, r -> Completion.Choice in
                let p = k / n
                let prefix = echo ? promptTexts[p] : ""
                var lp: CompletionLogprobs?
                if wantLogprobs {
                    var l = CompletionLogprobs()
                    var offset = 0
                    if echo {
                        appendPrompt(prompts[p], r.promptLogprobs ?? [], to: &l, offset: &offset)
                    }
                    append(r.tokens, r.logprobs, r.topLogprobs, to: &l, offset: &offset)
                    lp = l
                }
                return Completion.Choice(index: k, text: prefix + r.text, logprobs: lp, finishReason: r.finish.openAI)
            }
            return try json(Completion(id: id, created: created, model: model, choices: choices,
                                       usage: Usage(promptTokens: promptTokens, completionTokens: results.reduce(0) { $0 + $1.tokens.count })))
        }

        let includeUsage = body.common.includeUsage, total = jobs.count
        return try await Streaming.respond(streams, sse: true, connection: connection, metrics: metrics, permit: permit) { first, reader, sink in
            let encoder = JSONEncoder.api
            func chunk(_ choice: Completion.Choice) throws -> Data {
                try encoder.encode(Completion(id: id, created: created, model: model, choices: [choice]))
            }
            var offsets = [Int](repeating: 0, count: total)
            if echo {
                for k in 0..<total {
                    try await sink.event(try chunk(.init(index: k, text: promptTexts[k / n])))
                    offsets[k] = promptTexts[k / n].unicodeScalars.count
                }
            }
            var generated = 0
            var next = first
            while let (k, out) = next {
                generated += out.tokens.count
                if !out.text.isEmpty || (wantLogprobs && !out.tokens.isEmpty) {
                    var lp: CompletionLogprobs?
                    if wantLogprobs {
                        var l = CompletionLogprobs()
                        self.append(out.tokens, out.logprobs ?? [], out.topLogprobs ?? [], to: &l, offset: &offsets[k])
                        lp = l
                    }
                    try await sink.event(try chunk(.init(index: k, text: out.text, logprobs: lp)))
                }
                if let f = out.finishReason {
                    try await sink.event(try chunk(.init(index: k, text: "", finishReason: f.openAI)))
                }
                next = try await reader.next()
            }
            if includeUsage {
                let last = Completion(id: id, created: created, model: model, choices: [],
                                      usage: Usage(promptTokens: promptTokens, completionTokens: generated))
                try await sink.event(try encoder.encode(last))
            }
            try await sink.done()
        }
    }

    /// Generated tokens in the completions logprobs format; `offset` counts code points of `text`, as Python indexes it.
    func append(_ tokens: [Int32], _ logprobs: [Float], _ top: [[TokenLogprob]], to l: inout CompletionLogprobs, offset: inout Int) {
        for k in tokens.indices {
            let t = tokenText(tokens[k])
            l.tokens.append(t)
            l.tokenLogprobs.append(k < logprobs.count ? logprobs[k] : 0)
            var alternatives: [String: Float] = [:]
            if k < top.count { for a in top[k] { alternatives[tokenText(a.token)] = max(alternatives[tokenText(a.token)] ?? -.infinity, a.logprob) } }
            l.topLogprobs.append(alternatives)
            l.textOffset.append(offset)
            offset += t.unicodeScalars.count
        }
    }

    /// The echoed prompt's tokens: the first has no log-probability (OpenAI sends null; we send 0
    /// with no alternatives, and say so in the schema).
    func appendPrompt(_ prompt: [Int32], _ logprobs: [Double], to l: inout CompletionLogprobs, offset: inout Int) {
        for (k, id) in prompt.enumerated() {
            let t = tokenText(id)
            l.tokens.append(t)
            l.tokenLogprobs.append(k == 0 ? 0 : Float(k - 1 < logprobs.count ? logprobs[k - 1] : 0))
            l.topLogprobs.append([:])
            l.textOffset.append(offset)
            offset += t.unicodeScalars.count
        }
    }
}
