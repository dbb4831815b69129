// One conversation over one model: its token history and the KV cache that holds it. A new turn
// is matched against the history token by token, so only the new part of the prompt is computed
// (the cache of earlier turns is reused, not recomputed); where the re-rendered prompt differs
// from what was generated, the cache is cut back to the common prefix and recomputed from there.

public final class Session<B: Backend> {
    public let model: LlamaModel<B>
    public let sessionLength: Int
    /// Tokens whose K/V are in the cache, in order.
    public private(set) var history: [Int32] = []
    let cache: SequenceKVCache<B>

    public init(model: LlamaModel<B>, sessionLength: Int) {
        self.model = model
        self.sessionLength = sessionLength
        cache = model.makeCache(capacity: sessionLength)
    }

    /// Forgets the conversation (lmdeploy's `end`).
    public func reset() {
        history.removeAll()
        cache.truncate(to: 0)
    }

    /// Computes `prompt` (the whole conversation so far) into the cache, reusing the longest
    /// prefix already there, and returns the logits of its last position.
    public func prefill(_ prompt: [Int32]) throws -> [Float] {
        guard !prompt.isEmpty else { throw EngineError.emptyInput }
        guard prompt.count < sessionLength else {
            throw EngineError.contextFull(needed: prompt.count + 1, capacity: sessionLength)
        }
        var common = 0
        while common < min(history.count, prompt.count), history[common] == prompt[common] { common += 1 }
        // At least one token must run to produce logits.
        if common == prompt.count { common -= 1 }
        cache.truncate(to: common)
        history.removeSubrange(common...)
        let suffix = Array(prompt[common...])
        let logits = try model.forward(suffix, cache: cache, logits: .last)
        history += suffix
        return logits
    }

    /// Computes one more token of the conversation and returns the logits that follow it.
    public func append(_ token: Int32) throws -> [Float] {
        let logits = try model.forward([token], cache: cache, logits: .last)
        history.append(token)
        return logits
    }

    /// Generates after `prompt`, calling `onToken` with each new token as soon as it is sampled;
    /// `onToken` returns false to stop. Returns the generated tokens and why generation ended.
    @discardableResult
    public func generate(prompt: [Int32], config: GenerationConfig,
                         onToken: (Int32) -> Bool = { _ in true }) throws -> (tokens: [Int32], finish: FinishReason) {
        var logits = try prefill(prompt)
        var sampler = Sampler(params: config.sampling)
        var output: [Int32] = []
        while output.count < config.maxNewTokens {
            let token = sampler.sample(logits, context: history)
            if !config.ignoreEOS, config.stopTokenIds.contains(token) { return (output, .stop) }
            output.append(token)
            if !onToken(token) { return (output, .cancelled) }
            if output.count == config.maxNewTokens { break }
            if history.count >= sessionLength { return (output, .sessionFull) }
            logits = try append(token)
        }
        return (output, .length)
    }
}
