// A request in flight: its parameters, its sequence once admitted, and the streaming state that
// turns sampled tokens into text updates (holding back what could still become a stop word).
import Tokenizers

/// A request in flight (owned by the engine thread once admitted).
final class Request {
    let id: RequestID
    let session: UInt64
    let input: GenerationInput
    let config: GenerationConfig
    let interactive: Bool
    let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
    /// When it was sent: a request not admitted within `config.queueTimeout` of it fails.
    let arrived = ContinuousClock.now
    var sampler: Sampler
    var sequence: Sequence?
    var promptLength = 0
    var generated = 0
    var finish: FinishReason?
    var failure: Error?
    /// What the prompt computation reported, sent with the first update.
    var promptLogits: [Float]?
    var promptLogprobs: [Double]?

    // Streaming state: tokens and text not yet sent, and what stop-word matching holds back.
    private var detokenizer: StreamingDetokenizer?
    private var pendingTokens: [Int32] = []
    private var pendingLogprobs: [Float] = []
    private var pendingTop: [[TokenLogprob]] = []
    private var heldText = ""

    init(id: RequestID, session: UInt64, input: GenerationInput, config: GenerationConfig, interactive: Bool,
         continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation, tokenizer: Tokenizer?) {
        self.id = id
        self.session = session
        self.input = input
        self.config = config
        self.interactive = interactive
        self.continuation = continuation
        sampler = Sampler(params: config.sampling)
        detokenizer = tokenizer.map { StreamingDetokenizer(tokenizer: $0, skipSpecialTokens: true) }
    }

    /// Adds a generated token; true when the reply's text now contains a stop word (the text
    /// from the stop word on is dropped).
    func push(token: Int32, logprob: Float?, top: [TokenLogprob]? = nil) -> Bool {
        pendingTokens.append(token)
        if let logprob { pendingLogprobs.append(logprob) }
        if let top { pendingTop.append(top) }
        guard var detok = detokenizer else { return false }
        heldText += detok.append(Int(token))
        detokenizer = detok
        for word in config.stopWords where !word.isEmpty {
            if let range = heldText.range(of: word) {
                heldText = String(heldText[..<range.lowerBound])
                return true
            }
        }
        return false
    }

    /// Sends pending tokens and the text that can no longer become part of a stop word.
    func flush(historyTokens: Int) {
        let text = releasableText()
        guard !pendingTokens.isEmpty || !text.isEmpty else { return }
        send(text: text, finish: nil, historyTokens: historyTokens)
    }

    /// Sends everything left, with the finish reason.
    func emit(finish: FinishReason, historyTokens: Int) {
        if finish != .stop || config.stopWords.isEmpty || !heldText.isEmpty, var detok = detokenizer {
            heldText += detok.flush()
            detokenizer = detok
        }
        let text = heldText
        heldText = ""
        send(text: text, finish: finish, historyTokens: historyTokens)
        continuation.finish()
    }

    private func send(text: String, finish: FinishReason?, historyTokens: Int) {
        continuation.yield(GenerationOutput(tokens: pendingTokens, text: text,
                                            logprobs: config.logprobs ? pendingLogprobs : nil,
                                            topLogprobs: config.logprobs && config.topLogprobs > 0 ? pendingTop : nil,
                                            finishReason: finish,
                                            inputTokens: promptLength, generatedTokens: generated, historyTokens: historyTokens,
                                            promptLogits: promptLogits, promptLogprobs: promptLogprobs))
        promptLogits = nil
        promptLogprobs = nil
        pendingTokens.removeAll()
        pendingLogprobs.removeAll()
        pendingTop.removeAll()
    }

    /// Splits off the held text that no stop word can still start in.
    private func releasableText() -> String {
        var keep = 0
        for word in config.stopWords where !word.isEmpty {
            // The longest suffix of heldText that is a proper prefix of the stop word.
            var n = min(word.count - 1, heldText.count)
            while n > 0 {
                if word.hasPrefix(heldText.suffix(n)) { break }
                n -= 1
            }
            keep = max(keep, n)
        }
        let cut = heldText.index(heldText.endIndex, offsetBy: -keep)
        let out = String(heldText[..<cut])
        heldText = String(heldText[cut...])
        return out
    }
}
