// The TurboMind-style engine: many sessions served at once from one copy of the weights.
//
// One engine thread runs the persistent batch loop (kernels block, so it is a real thread, not
// the Swift cooperative pool). Each step it
//   1. takes new requests, cancellations and session ends from the inbox;
//   2. admits waiting requests (FIFO) while the batch has room and KV blocks can be reserved,
//      evicting least recently used idle sessions when needed;
//   3. computes prompt chunks of at most `maxPrefillTokenNum` tokens (at least one chunk per
//      step), so long prompts are split across steps and decoding sequences keep streaming;
//   4. decodes one token for every sequence past its prompt, as one batched forward;
//   5. samples per sequence with its own parameters, streams the tokens out and retires
//      finished requests (interactive sessions keep their KV blocks; one-shot ones free them).
//
// Reproducibility: a request gets the same tokens alone or under any load. Prompt chunks run one
// sequence per forward with boundaries fixed by the sequence itself, and decode steps use only
// per-row kernels (see LlamaModel.forward(batch:pool:)), so no arithmetic depends on the batch.
import Foundation
import Tokenizers

/// What a request feeds the session.
public enum GenerationInput: Sendable {
    /// The whole conversation: the longest prefix already in the session's cache is reused.
    case full([Int32])
    /// Tokens appended to the session's history (lmdeploy's interactive mode).
    case append([Int32])
}

/// One streamed update of a request.
public struct GenerationOutput: Sendable {
    /// Tokens generated since the previous update.
    public var tokens: [Int32]
    /// Text of those tokens (empty without a tokenizer; may lag a token behind to keep UTF-8
    /// characters and stop words whole).
    public var text: String
    /// Log-probabilities of `tokens`, when the request asked for them.
    public var logprobs: [Float]?
    /// Set on the last update.
    public var finishReason: FinishReason?
    /// Prompt tokens of the request, and tokens generated so far.
    public var inputTokens: Int
    public var generatedTokens: Int
    /// Tokens in the session's history after this update.
    public var historyTokens: Int
}

public struct EngineStats: Sendable, Equatable {
    public var totalBlocks: Int
    public var freeBlocks: Int
    public var waiting: Int
    public var active: Int
    public var cachedSessions: [UInt64]
    public var accountingConsistent: Bool
}

public final class Engine<B: Backend>: @unchecked Sendable {
    public let model: LlamaModel<B>
    public let tokenizer: Tokenizer?
    public let config: EngineConfig
    let pool: KVPool<B>
    let sequences: SequenceManager
    let chunkSize: Int

    // Shared with callers, under `lock`.
    private let lock = NSCondition()
    private var inbox: [Request] = []
    private var cancels: Set<UInt64> = []
    private var ends: Set<UInt64> = []
    private var stopping = false
    private var published = EngineStats(totalBlocks: 0, freeBlocks: 0, waiting: 0, active: 0, cachedSessions: [], accountingConsistent: true)
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    // Owned by the engine thread.
    private var waiting: [Request] = []
    private var active: [Request] = []

    public init(model: LlamaModel<B>, tokenizer: Tokenizer? = nil, config: EngineConfig = EngineConfig()) throws {
        try config.validate()
        guard model.maxChunkTokens >= config.maxBatchSize else {
            throw EngineError.invalidConfig("max_batch_size \(config.maxBatchSize) exceeds the model's \(model.maxChunkTokens) rows per step")
        }
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        let bytes = KVPool<B>.bytesPerBlock(layers: model.config.numHiddenLayers, rowWidth: model.config.kvDim, blockSize: config.cacheBlockSeqLen)
        pool = model.makePool(blockSize: config.cacheBlockSeqLen, blockCount: try config.blockCount(bytesPerBlock: bytes))
        sequences = SequenceManager(pool: pool.blocks, blockSize: config.cacheBlockSeqLen)
        chunkSize = min(config.maxPrefillTokenNum, model.maxChunkTokens)
        publishStats()
        let t = Thread { [unowned self] in self.run() }
        t.name = "turbomind-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    deinit { shutdown() }

    /// KV cache capacity in tokens.
    public var cacheTokens: Int { pool.blockCount * pool.blockSize }

    /// Starts generating for `session`. The stream yields updates as tokens are produced and
    /// finishes after the update carrying a finish reason; errors (an input that can never fit,
    /// a busy session) finish it with a thrown `EngineError`. Dropping or cancelling the stream's
    /// consumer cancels the request.
    public func generate(session: UInt64, input: GenerationInput, config: GenerationConfig,
                         interactive: Bool = false) -> AsyncThrowingStream<GenerationOutput, Error> {
        AsyncThrowingStream { continuation in
            let request = Request(session: session, input: input, config: config, interactive: interactive,
                                  continuation: continuation, tokenizer: tokenizer)
            continuation.onTermination = { [weak self] termination in
                if case .cancelled = termination { self?.cancel(session: session) }
            }
            lock.lock()
            if stopping {
                lock.unlock()
                continuation.finish(throwing: EngineError.engineStopped)
                return
            }
            inbox.append(request)
            lock.signal()
            lock.unlock()
        }
    }

    /// Stops the session's running request (its stream ends with `cancelled`); its KV cache up
    /// to the tokens computed so far stays for an interactive session.
    public func cancel(session: UInt64) {
        lock.lock()
        cancels.insert(session)
        lock.signal()
        lock.unlock()
    }

    /// Ends the session: a running request is cancelled and the session's KV blocks are freed.
    public func end(session: UInt64) {
        lock.lock()
        ends.insert(session)
        lock.signal()
        lock.unlock()
    }

    /// A snapshot of the engine's state, as of the last completed step.
    public var stats: EngineStats {
        lock.lock()
        defer { lock.unlock() }
        return published
    }

    /// Stops the engine thread; running requests finish with `EngineError.engineStopped`.
    public func shutdown() {
        lock.lock()
        let wasRunning = !stopping && thread != nil
        stopping = true
        lock.signal()
        lock.unlock()
        if wasRunning { finished.wait() }
    }

    // MARK: - The engine thread

    private func run() {
        while true {
            lock.lock()
            while inbox.isEmpty && cancels.isEmpty && ends.isEmpty && waiting.isEmpty && active.isEmpty && !stopping {
                lock.wait()
            }
            if stopping {
                let pending = inbox
                inbox.removeAll()
                lock.unlock()
                for r in pending + waiting + active { r.continuation.finish(throwing: EngineError.engineStopped) }
                waiting.removeAll()
                active.removeAll()
                finished.signal()
                return
            }
            let newRequests = inbox, newCancels = cancels, newEnds = ends
            inbox.removeAll()
            cancels.removeAll()
            ends.removeAll()
            lock.unlock()

            waiting += newRequests
            handle(cancels: newCancels, ends: newEnds)
            admit()
            step()
            publishStats()
        }
    }

    private func publishStats() {
        let s = EngineStats(totalBlocks: pool.blockCount, freeBlocks: pool.blocks.freeCount, waiting: waiting.count,
                            active: active.count, cachedSessions: sequences.cachedSessionsByAge,
                            accountingConsistent: sequences.accountingIsConsistent())
        lock.lock()
        published = s
        lock.unlock()
    }

    private func handle(cancels: Set<UInt64>, ends: Set<UInt64>) {
        for session in cancels.union(ends) {
            if let i = waiting.firstIndex(where: { $0.session == session }) {
                let r = waiting.remove(at: i)
                r.emit(finish: .cancelled, historyTokens: sequences.sequences[session]?.tokens.count ?? 0)
            }
            if let r = active.first(where: { $0.session == session }) { retire(r, reason: .cancelled) }
        }
        for session in ends {
            if let s = sequences.sequences[session], s.status != .active { sequences.remove(s) }
        }
    }

    /// Moves waiting requests into the batch, in arrival order, while there is room.
    private func admit() {
        var stillWaiting: [Request] = []
        var blocked = false
        for r in waiting {
            if blocked || active.count >= config.maxBatchSize {
                stillWaiting.append(r)
                continue
            }
            if active.contains(where: { $0.session == r.session }) {
                r.continuation.finish(throwing: EngineError.sessionBusy(session: r.session))
                continue
            }
            let s = sequences.sequence(for: r.session)
            // The tokens this request runs on, and how much of the cache they can reuse.
            var tokens: [Int32]
            switch r.input {
            case let .full(prompt): tokens = prompt
            case let .append(more): tokens = s.tokens + more
            }
            if tokens.isEmpty {
                r.continuation.finish(throwing: EngineError.emptyInput)
                continue
            }
            if tokens.count >= config.sessionLen {
                r.continuation.finish(throwing: EngineError.contextFull(needed: tokens.count + 1, capacity: config.sessionLen))
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            let reserveTokens = min(config.sessionLen, tokens.count + max(r.config.maxNewTokens, 1))
            let neededBlocks = sequences.blocksFor(tokens: reserveTokens)
            if neededBlocks > pool.blockCount {
                r.continuation.finish(throwing: EngineError.exceedsCache(tokens: reserveTokens, cacheTokens: cacheTokens))
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            var common = 0
            let limit = min(s.cachedLength, tokens.count)
            while common < limit, s.tokens[common] == tokens[common] { common += 1 }
            if common == tokens.count { common -= 1 }   // at least one token must run to get logits
            guard sequences.reserve(s, blocks: neededBlocks) else {
                // FIFO: later requests wait behind this one rather than overtake it.
                blocked = true
                stillWaiting.append(r)
                continue
            }
            s.tokens = tokens
            s.cachedLength = common
            s.status = .active
            sequences.touch(s)
            r.sequence = s
            r.promptLength = tokens.count
            active.append(r)
        }
        waiting = stillWaiting
    }

    private func step() {
        // Prompt chunks: one sequence per forward, chunk boundaries fixed by the sequence.
        var budget = config.maxPrefillTokenNum
        var ranChunk = false
        for r in active where r.finish == nil {
            let s = r.sequence!
            while s.tokens.count - s.cachedLength > 1 {
                let n = min(chunkSize, s.tokens.count - s.cachedLength)
                if ranChunk && n > budget { break }
                let last = s.cachedLength + n == s.tokens.count
                let item = ForwardItem(tokens: Array(s.tokens[s.cachedLength..<s.cachedLength + n]), start: s.cachedLength,
                                       blocks: s.blocks, logits: last ? .last : .none)
                do {
                    let out = try model.forward(batch: [item], pool: pool)
                    s.cachedLength += n
                    if last { accept(r, logits: out[0]) }
                } catch {
                    fail(r, error)
                    break
                }
                ranChunk = true
                budget -= n
                if budget <= 0 { break }
            }
            if ranChunk && budget <= 0 { break }
        }

        // One decode step for every sequence with exactly one uncomputed token.
        let decoding = active.filter { $0.finish == nil && $0.sequence!.tokens.count - $0.sequence!.cachedLength == 1 }
        if !decoding.isEmpty {
            let items = decoding.map { r -> ForwardItem in
                let s = r.sequence!
                return ForwardItem(tokens: [s.tokens[s.cachedLength]], start: s.cachedLength, blocks: s.blocks, logits: .last)
            }
            do {
                let out = try model.forward(batch: items, pool: pool)
                for (r, logits) in zip(decoding, out) {
                    r.sequence!.cachedLength += 1
                    accept(r, logits: logits)
                }
            } catch {
                for r in decoding { fail(r, error) }
            }
        }

        for r in active where r.finish != nil { retire(r, reason: r.finish!) }
    }

    /// Samples the next token from `logits` and decides whether the request goes on.
    private func accept(_ r: Request, logits: [Float]) {
        let s = r.sequence!
        let token = r.sampler.sample(logits, context: s.tokens)
        if !r.config.ignoreEOS, r.config.stopTokenIds.contains(token) {
            r.finish = .stop
            return
        }
        s.tokens.append(token)
        r.generated += 1
        let logprob = r.config.logprobs ? Engine.logSoftmax(logits, at: Int(token)) : nil
        let stoppedByWord = r.push(token: token, logprob: logprob)
        if stoppedByWord && !r.config.ignoreEOS {
            r.finish = .stop
        } else if r.generated >= r.config.maxNewTokens {
            r.finish = .length
        } else if s.tokens.count >= config.sessionLen {
            r.finish = .sessionFull
        } else {
            r.flush(historyTokens: s.tokens.count)
        }
    }

    private func fail(_ r: Request, _ error: Error) {
        r.failure = error
        r.finish = .cancelled
    }

    /// Ends a request: streams its last update and settles its sequence's blocks.
    private func retire(_ r: Request, reason: FinishReason) {
        active.removeAll { $0 === r }
        guard let s = r.sequence else { return }
        if let failure = r.failure {
            r.continuation.finish(throwing: failure)
        } else {
            r.emit(finish: reason, historyTokens: s.tokens.count)
        }
        if r.interactive && r.failure == nil {
            s.status = .cached
            sequences.touch(s)
            sequences.shrink(s, toPositions: s.tokens.count)
        } else {
            sequences.remove(s)
        }
    }

    static func logSoftmax(_ logits: [Float], at index: Int) -> Float {
        let m = logits.max()!
        var sum: Double = 0
        for v in logits { sum += Double(expf(v - m)) }
        return Float(Double(logits[index] - m) - log(sum))
    }
}

/// A request in flight (owned by the engine thread once admitted).
final class Request {
    let session: UInt64
    let input: GenerationInput
    let config: GenerationConfig
    let interactive: Bool
    let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
    var sampler: Sampler
    var sequence: Sequence?
    var promptLength = 0
    var generated = 0
    var finish: FinishReason?
    var failure: Error?

    // Streaming state: tokens and text not yet sent, and what stop-word matching holds back.
    private var detokenizer: StreamingDetokenizer?
    private var pendingTokens: [Int32] = []
    private var pendingLogprobs: [Float] = []
    private var heldText = ""

    init(session: UInt64, input: GenerationInput, config: GenerationConfig, interactive: Bool,
         continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation, tokenizer: Tokenizer?) {
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
    func push(token: Int32, logprob: Float?) -> Bool {
        pendingTokens.append(token)
        if let logprob { pendingLogprobs.append(logprob) }
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
                                            logprobs: config.logprobs ? pendingLogprobs : nil, finishReason: finish,
                                            inputTokens: promptLength, generatedTokens: generated, historyTokens: historyTokens))
        pendingTokens.removeAll()
        pendingLogprobs.removeAll()
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
