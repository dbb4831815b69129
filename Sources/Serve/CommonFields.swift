// The fields /v1/chat/completions and /v1/completions share: which model, how to sample, how
// many choices, where to stop, whether to stream, lmdeploy's session id.
import TurboMind

struct CommonFields: Decodable, Sendable {
    var model: String?
    var temperature: Double?
    var topP: Double?
    var topK: Int?
    var n: Int?
    var stop: StopList?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var presencePenalty: Double?
    var frequencyPenalty: Double?
    var repetitionPenalty: Double?
    var seed: Int?
    var ignoreEOS: Bool?
    var sessionID: Int?
    var user: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, temperature, n, stop, stream, seed, user
        case topP = "top_p", topK = "top_k", streamOptions = "stream_options"
        case presencePenalty = "presence_penalty", frequencyPenalty = "frequency_penalty"
        case repetitionPenalty = "repetition_penalty", ignoreEOS = "ignore_eos", sessionID = "session_id"
    }

    /// lmdeploy api_server's defaults.
    static let defaultTemperature = 0.7, defaultTopP = 1.0, defaultTopK = 40

    static func properties(_ limits: RequestLimits) -> [(String, JSONDoc)] {
        [
            ("model", Schema.string("The model id from GET /v1/models; absent means the served model.")),
            ("temperature", Schema.nullable(Schema.number("Sampling temperature; 0 = greedy. Default 0.7.", minimum: 0, maximum: 2))),
            ("top_p", Schema.nullable(Schema.number("Nucleus sampling mass. Default 1.", exclusiveMinimum: 0, maximum: 1))),
            ("top_k", Schema.nullable(Schema.integer("Keep the k most likely tokens (0 = no limit). Default 40.", minimum: 0))),
            ("n", Schema.nullable(Schema.integer("Number of choices. Default 1.", minimum: 1, maximum: limits.maxChoices))),
            ("stop", StopList.schema),
            ("stream", Schema.nullable(Schema.boolean("Stream the answer as server-sent events, ending with `data: [DONE]`."))),
            ("stream_options", StreamOptions.schema),
            ("presence_penalty", Schema.nullable(Schema.number("Subtracted once from the logit of every token already generated.", minimum: -2, maximum: 2))),
            ("frequency_penalty", Schema.nullable(Schema.number("Subtracted from a token's logit per time it was generated.", minimum: -2, maximum: 2))),
            ("repetition_penalty", Schema.nullable(Schema.number("lmdeploy's multiplicative penalty on tokens of the context (1 = none).", exclusiveMinimum: 0, maximum: 10))),
            ("seed", Schema.nullable(Schema.integer("Seed for reproducible sampling."))),
            ("ignore_eos", Schema.nullable(Schema.boolean("Keep generating through end-of-sequence tokens and stop strings."))),
            ("session_id", Schema.nullable(Schema.integer("lmdeploy's session id (-1 = a new one per request).", minimum: -1))),
            ("user", Schema.nullable(Schema.string("An end-user id (logged, not used)."))),
        ]
    }

    func validate(_ limits: RequestLimits, served: String) throws {
        if let model, !model.isEmpty, model != served { throw APIError.unknownModel(model, served: served) }
        if let t = temperature { try require(t.isFinite && t >= 0 && t <= 2, "temperature", "must be in [0, 2], got \(t)") }
        if let p = topP { try require(p > 0 && p <= 1, "top_p", "must be in (0, 1], got \(p)") }
        if let k = topK { try require(k >= 0, "top_k", "must be ≥ 0, got \(k)") }
        if let n { try require(n >= 1 && n <= limits.maxChoices, "n", "must be in 1...\(limits.maxChoices), got \(n)") }
        try stop?.validate(limits)
        if let p = presencePenalty { try require(p >= -2 && p <= 2, "presence_penalty", "must be in [-2, 2], got \(p)") }
        if let p = frequencyPenalty { try require(p >= -2 && p <= 2, "frequency_penalty", "must be in [-2, 2], got \(p)") }
        if let p = repetitionPenalty { try require(p > 0 && p <= 10, "repetition_penalty", "must be in (0, 10], got \(p)") }
        if let s = sessionID { try require(s >= -1, "session_id", "must be ≥ -1 (-1 = none), got \(s)") }
    }

    var choices: Int { n ?? 1 }
    var streaming: Bool { stream ?? false }
    var includeUsage: Bool { streamOptions?.includeUsage ?? false }

    /// Sampling for choice `index`: with a seed, each choice draws from its own seed.
    func sampling(choice index: Int) -> SamplingParams {
        let temperature = Float(self.temperature ?? Self.defaultTemperature)
        return SamplingParams(
            temperature: temperature, topP: Float(topP ?? Self.defaultTopP), topK: topK ?? Self.defaultTopK,
            repetitionPenalty: Float(repetitionPenalty ?? 1), presencePenalty: Float(presencePenalty ?? 0),
            frequencyPenalty: Float(frequencyPenalty ?? 0),
            seed: seed.map { UInt64(bitPattern: Int64($0)) &+ UInt64(index) })
    }
}
