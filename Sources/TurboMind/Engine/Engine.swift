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
// The engine owns its run state (scratch) and its KV cache; the model's weights are shared
// read-only, so several engines may run one model.
//
// Reproducibility: a request gets the same tokens alone or under any load. Prompt chunks run one
// sequence per forward with boundaries fixed by the sequence itself, and decode steps use only
// per-row kernels (see LlamaModel.forward), so no arithmetic depends on the batch.
import Foundation
import Tokenizers

/// What a request feeds the session.
public enum GenerationInput: Sendable {
    /// The whole conversation: the longest prefix already in the session's cache is reused.
    case full([Int32])
    /// Tokens appended to the session's history (lmdeploy's interactive mode).
    case append([Int32])
}

public final class Engine<B: Backend>: InferenceEngine, @unchecked Sendable {
    public let model: LlamaModel<B>
    public let tokenizer: Tokenizer?
    public let config: EngineConfig
    public let notices: [String]
    /// Sees every layer's inputs and K/V (calibration); set before the first request.
    public let observer: ForwardObserver?
    let layout: KVCacheLayout
    let cache: B.KVCache
    let state: RunState<B>
    let blocks: BlockManager
    let sequences: SequenceManager
    let chunkSize: Int

    // Shared with callers, under `lock`.
    private let lock = NSCondition()
    private var inbox: [Request] = []
    private var cancels: Set<RequestID> = []
    private var ends: Set<UInt64> = []
    private var stopping = false
    private var nextID: RequestID = 1
    private var published = EngineStats(totalBlocks: 0, freeBlocks: 0, waiting: 0, active: 0, cachedSessions: [], accountingConsistent: true)
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    // Owned by the engine thread.
    private var waiting: [Request] = []
    private var active: [Request] = []

    /// `notices`: what the caller adjusted before starting (a device fallback), shown before the engine's own.
    public init(model: LlamaModel<B>, tokenizer: Tokenizer? = nil, config: EngineConfig = EngineConfig(),
                observer: ForwardObserver? = nil, notices: [String] = []) throws {
        try config.validate()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.observer = observer
        let perBlock = model.kvLayout(blockSize: config.cacheBlockSeqLen, blockCount: 1, type: config.kvCacheType).bytesPerBlock
        let budget = try config.blockBudget(bytesPerBlock: perBlock, memory: model.backend.memoryInfo())
        self.notices = notices + budget.notices
        layout = model.kvLayout(blockSize: config.cacheBlockSeqLen, blockCount: budget.blocks, type: config.kvCacheType)
        if config.kvCacheType == .int8 {
            guard let p = config.kvQuantParameters else {
                throw EngineError.invalidConfig("quant_policy 4 (int8 KV cache) needs K/V quantization parameters: run `lmdeploy lite calibrate` and `lmdeploy lite kv_qparams`")
            }
            guard p.layers == model.config.numHiddenLayers, p.kvHeads == model.config.numKeyValueHeads else {
                throw EngineError.invalidConfig("the KV quantization parameters cover \(p.layers) layers × \(p.kvHeads) KV heads but the model has \(model.config.numHiddenLayers) × \(model.config.numKeyValueHeads): they were made for another model")
            }
        }
        cache = try model.backend.makeKVCache(layout, quantParameters: config.kvQuantParameters)
        chunkSize = config.maxPrefillTokenNum
        let rows = max(chunkSize, config.maxBatchSize)
        state = try model.makeRunState(maxRows: rows, maxLogitRows: rows)
        blocks = BlockManager(blockCount: budget.blocks)
        sequences = SequenceManager(pool: blocks, blockSize: config.cacheBlockSeqLen)
        publishStats()
        let t = Thread { [unowned self] in self.run() }
        t.name = "turbomind-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    deinit { shutdown() }

    public var modelConfig: ModelConfig { model.config }
    public var backendDescription: String { model.backend.description }
    public var cacheTokens: Int { layout.blockCount * layout.blockSize }
    public var kvBytesPerToken: Int { layout.bytesPerToken }

    public func generate(session: UInt64, input: GenerationInput, config: GenerationConfig,
                         interactive: Bool = false) -> GenerationStream {
        lock.lock()
        let id = nextID
        nextID += 1
        lock.unlock()
        let updates = AsyncThrowingStream<GenerationOutput, Error> { continuation in
            do { try config.validate() } catch {
                continuation.finish(throwing: error)
                return
            }
            let request = Request(id: id, session: session, input: input, config: config, interactive: interactive,
                                  continuation: continuation, tokenizer: tokenizer)
            continuation.onTermination = { [weak self] termination in
                if case .cancelled = termination { self?.cancel(request: id) }
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
        return GenerationStream(id: id, updates: updates)
    }

    public func cancel(request: RequestID) {
        lock.lock()
        cancels.insert(request)
        lock.signal()
        lock.unlock()
    }

    public func end(session: UInt64) {
        lock.lock()
        // Requests of the session already sent go with it; one sent after this call starts the
        // session afresh (the engine thread applies ends before it takes in new requests).
        for r in inbox where r.session == session { cancels.insert(r.id) }
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
            // Session ends apply to what came before them (a request sent right after an end starts
            // the session afresh); cancellations after the new requests are taken in, since a
            // cancel names one request and may follow it in the same instant.
            let newRequests = inbox, newCancels = cancels, newEnds = ends
            inbox.removeAll()
            cancels.removeAll()
            ends.removeAll()
            lock.unlock()

            handle(cancels: [], ends: newEnds)
            waiting += newRequests
            handle(cancels: newCancels, ends: [])
            admit()
            step()
            publishStats()
        }
    }

    private func publishStats() {
        let s = EngineStats(totalBlocks: layout.blockCount, freeBlocks: blocks.freeCount, waiting: waiting.count,
                            active: active.count, cachedSessions: sequences.cachedSessionsByAge,
                            accountingConsistent: sequences.accountingIsConsistent())
        lock.lock()
        published = s
        lock.unlock()
    }

    private func handle(cancels: Set<RequestID>, ends: Set<UInt64>) {
        for r in waiting where cancels.contains(r.id) || ends.contains(r.session) {
            r.emit(finish: .cancelled, historyTokens: sequences.sequences[r.session]?.tokens.count ?? 0)
        }
        waiting.removeAll { cancels.contains($0.id) || ends.contains($0.session) }
        for r in active where cancels.contains(r.id) || ends.contains(r.session) { retire(r, reason: .cancelled) }
        for session in ends {
            if let s = sequences.sequences[session], s.status != .active { sequences.remove(s) }
        }
    }

    /// Moves waiting requests into the batch, in arrival order, while there is room.
    private func admit() {
        var stillWaiting: [Request] = []
        var blocked = false
        let now = ContinuousClock.now
        for r in waiting {
            if let limit = r.config.queueTimeout, r.arrived.duration(to: now) > limit {
                r.continuation.finish(throwing: EngineError.queueTimeout(waited: r.arrived.duration(to: now)))
                if let s = sequences.sequences[r.session], s.status == .waiting { sequences.remove(s) }
                continue
            }
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
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            if let bad = tokens.first(where: { $0 < 0 || Int($0) >= model.config.vocabSize }) {
                r.continuation.finish(throwing: EngineError.tokenOutOfRange(id: bad, vocab: model.config.vocabSize))
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            if tokens.count >= config.sessionLen {
                r.continuation.finish(throwing: EngineError.contextFull(needed: tokens.count + 1, capacity: config.sessionLen))
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            let reserveTokens = min(config.sessionLen, tokens.count + max(r.config.maxNewTokens, 1))
            let neededBlocks = sequences.blocksFor(tokens: reserveTokens)
            if neededBlocks > layout.blockCount {
                r.continuation.finish(throwing: EngineError.exceedsCache(tokens: reserveTokens, cacheTokens: cacheTokens))
                if s.status == .waiting { sequences.remove(s) }
                continue
            }
            var common = 0
            let fromScratch = r.config.prompt == .logprobs || r.config.prompt == .allLogits
            let limit = fromScratch ? 0 : min(s.cachedLength, tokens.count)
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
            if r.config.prompt == .logprobs { r.promptLogprobs = [] }
            if r.config.prompt == .allLogits { r.promptLogits = [] }
            active.append(r)
        }
        waiting = stillWaiting
    }

    private func forward(_ items: [ForwardItem]) throws -> [[Float]] {
        try model.forward(try model.plan(items, layout: layout), cache: cache, state: state, observer: observer)
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
                let scoring = r.config.prompt == .logprobs, keeping = r.config.prompt == .allLogits
                let item = ForwardItem(tokens: Array(s.tokens[s.cachedLength..<s.cachedLength + n]), start: s.cachedLength,
                                       blocks: s.blocks, logits: scoring || keeping ? .all : (last ? .last : .none))
                do {
                    let out = try forward([item])[0]
                    if scoring { score(r, chunkStart: s.cachedLength, rows: n, logits: out) }
                    if keeping { r.promptLogits! += out }
                    s.cachedLength += n
                    if last { accept(r, logits: scoring || keeping ? Array(out[((n - 1) * model.config.vocabSize)...]) : out) }
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
                // On a backend that samples (CUDA) only token ids come back, when no request needs
                // the logits themselves; the host sampler's generator still supplies each draw.
                if model.backend.samplesOnDevice, decoding.allSatisfy(samplesOnDevice) {
                    let rows = decoding.map { r -> DeviceSampling in
                        let s = r.sequence!
                        let p = r.sampler.params
                        return DeviceSampling(params: p, uniform: p.isGreedy ? 0 : r.sampler.uniform(),
                                              context: p.repetitionPenalty != 1 ? s.tokens : [],
                                              generated: p.presencePenalty != 0 || p.frequencyPenalty != 0 ? s.tokens.suffix(r.generated) : [])
                    }
                    let tokens = try model.forward(try model.plan(items, layout: layout), cache: cache, state: state, sampling: rows)
                    for (r, token) in zip(decoding, tokens) {
                        r.sequence!.cachedLength += 1
                        take(r, token: token, logits: nil)
                    }
                    for r in active where r.finish != nil { retire(r, reason: r.finish!) }
                    return
                }
                let out = try forward(items)
                for (r, logits) in zip(decoding, out) {
                    if r.sequence!.cachedLength < r.promptLength {   // a one-token prompt's only row
                        if r.config.prompt == .logprobs { score(r, chunkStart: r.sequence!.cachedLength, rows: 1, logits: logits) }
                        if r.config.prompt == .allLogits { r.promptLogits! += logits }
                    }
                    r.sequence!.cachedLength += 1
                    accept(r, logits: logits)
                }
            } catch {
                for r in decoding { fail(r, error) }
            }
        }

        for r in active where r.finish != nil { retire(r, reason: r.finish!) }
    }

    /// Prompt log-probabilities from a chunk's logits: row t (position chunkStart + t) predicts the
    /// prompt token at chunkStart + t + 1.
    private func score(_ r: Request, chunkStart: Int, rows: Int, logits: [Float]) {
        let vocab = model.config.vocabSize
        let prompt = r.sequence!.tokens
        for t in 0..<rows where chunkStart + t + 1 < r.promptLength {
            r.promptLogprobs!.append(LogSoftmax.value(logits[t * vocab..<(t + 1) * vocab], at: Int(prompt[chunkStart + t + 1])))
        }
    }

    /// Samples the next token from `logits` (the first call: the prompt's last position) and
    /// decides whether the request goes on.
    private func accept(_ r: Request, logits: [Float]) {
        let s = r.sequence!
        if r.generated == 0 && r.config.prompt == .lastLogits && r.promptLogits == nil { r.promptLogits = logits }
        if r.config.maxNewTokens == 0 {
            r.finish = .length
            return
        }
        let token = r.sampler.sample(logits, context: s.tokens, generated: s.tokens.suffix(r.generated))
        take(r, token: token, logits: logits)
    }

    /// Whether `r`'s next token can be sampled on the device: a decode row past its first token
    /// whose logits are not wanted (no logprobs) with parameters the device sampler supports.
    private func samplesOnDevice(_ r: Request) -> Bool {
        r.generated > 0 && !r.config.logprobs && r.sequence!.cachedLength >= r.promptLength
            && DeviceSampling.supports(r.sampler.params, vocab: model.config.vocabSize)
    }

    /// Appends the sampled `token` (its `logits` are needed only for logprobs) and decides whether
    /// the request goes on.
    private func take(_ r: Request, token: Int32, logits: [Float]?) {
        let s = r.sequence!
        if !r.config.ignoreEOS, r.config.stopTokenIds.contains(token) {
            r.finish = .stop
            return
        }
        s.tokens.append(token)
        r.generated += 1
        let logprob = r.config.logprobs ? logits.map { Float(LogSoftmax.value($0[...], at: Int(token))) } : nil
        let top = r.config.logprobs && r.config.topLogprobs > 0 ? logits.map { LogSoftmax.top($0, count: r.config.topLogprobs) } : nil
        let stoppedByWord = r.push(token: token, logprob: logprob, top: top)
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
}

/// log softmax(logits)[index], accumulated in Double (the one place it is computed).
public enum LogSoftmax {
    public static func value(_ logits: ArraySlice<Float>, at index: Int) -> Double {
        let m = logits.max()!
        var sum: Double = 0
        for v in logits { sum += Double(expf(v - m)) }
        return Double(logits[logits.startIndex + index] - m) - log(sum)
    }

    /// The `count` most likely tokens of `logits` with their log-probabilities, best first.
    public static func top(_ logits: [Float], count: Int) -> [TokenLogprob] {
        let m = logits.max()!
        var sum: Double = 0
        for v in logits { sum += Double(expf(v - m)) }
        let logSum = log(sum)
        return Sampler.topIndices(logits, min(count, logits.count)).map {
            TokenLogprob(token: Int32($0), logprob: Float(Double(logits[$0] - m) - logSum))
        }
    }
}
