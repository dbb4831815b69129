// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, InternLM, InternLM2, SmolLM), written once
// against `Backend`. Reads top-down like the paper:
//   x = embed(tokens)
//   for each layer:  q|k|v = Wqkv · norm(x);  x += Wo · attention(rope(q), rope(k), v)
//                    g|u = Wgu · norm(x);     x += Wdown · (silu(g) ⊙ u)
//   logits = Wlm · norm(x)
// The model holds only weights (read-only, shareable by several engines); each engine brings its
// own scratch (`RunState`) and KV cache, and one `BatchPlan` per step.

public final class LlamaModel<B: Backend>: @unchecked Sendable {
    public let config: ModelConfig
    public let backend: B

    struct Layer {
        let attnNorm, ffnNorm: B.Buffer
        let qkv, o, gateUp, down: B.Linear
        let qkvBias, oBias: B.Buffer?
        /// Sliding-window span of this layer's attention; 0 = full attention.
        let window: Int
    }

    let layers: [Layer]
    let embedding: B.Linear
    let finalNorm: B.Buffer
    let lmHead: B.Linear
    let baseFrequencies: [Float]

    var hidden: Int { config.hiddenSize }
    var heads: Int { config.numAttentionHeads }
    var kvHeads: Int { config.numKeyValueHeads }
    var headDim: Int { config.headDim }
    var vocab: Int { config.vocabSize }

    /// Prepares `weights` on `backend`: q/k/v and gate/up are fused into one matrix each (AWQ
    /// layers too, stacked in 4 bits); the LM head as stored or as int8 rows (`lmHead`).
    public init(backend: B, config: ModelConfig, weights: ModelWeights, lmHead lmHeadType: LMHeadDType = .auto) throws {
        self.backend = backend
        self.config = config
        func vector(_ t: TensorView) throws -> B.Buffer { try backend.upload(t.toFloatArray()) }
        layers = try weights.layers.enumerated().map { i, l in
            // One bias vector for the fused q/k/v rows when any part has a bias (missing parts are zero).
            var qkvBias: B.Buffer?
            if l.qBias != nil || l.kBias != nil || l.vBias != nil {
                func part(_ t: TensorView?, _ n: Int) -> [Float] { t?.toFloatArray() ?? [Float](repeating: 0, count: n) }
                qkvBias = try backend.upload(part(l.qBias, config.qDim) + part(l.kBias, config.kvDim) + part(l.vBias, config.kvDim))
            }
            return Layer(attnNorm: try vector(l.attnNorm), ffnNorm: try vector(l.ffnNorm),
                         qkv: try backend.prepare(linear: l.awq.map { LinearWeights.awq(.stacked([$0.q, $0.k, $0.v])) } ?? .dense([l.q, l.k, l.v])),
                         o: try backend.prepare(linear: l.awq.map { LinearWeights.awq($0.o) } ?? .dense([l.o])),
                         gateUp: try backend.prepare(linear: l.awq.map { LinearWeights.awq(.stacked([$0.gate, $0.up])) } ?? .dense([l.gate, l.up])),
                         down: try backend.prepare(linear: l.awq.map { LinearWeights.awq($0.down) } ?? .dense([l.down])),
                         qkvBias: qkvBias, oBias: try l.oBias.map(vector), window: config.slidingWindow(layer: i) ?? 0)
        }
        embedding = try backend.prepare(linear: .dense([weights.embed]))
        finalNorm = try vector(weights.norm)
        lmHead = try backend.prepare(linear: lmHeadType == .int8 ? .int8Rows(weights.lmHead) : .dense([weights.lmHead]))
        baseFrequencies = config.ropeInverseFrequencies()
    }

    /// Scratch for steps of up to `maxRows` rows returning up to `maxLogitRows` rows of logits.
    public func makeRunState(maxRows: Int, maxLogitRows: Int) throws -> RunState<B> {
        try RunState(backend: backend, config: config, maxRows: maxRows, maxLogitRows: maxLogitRows)
    }

    /// The cache layout of this model for `blockCount` blocks of `blockSize` tokens.
    public func kvLayout(blockSize: Int, blockCount: Int, type: KVCacheType) -> KVCacheLayout {
        KVCacheLayout(layers: layers.count, kvHeads: kvHeads, headDim: headDim, blockSize: blockSize, blockCount: blockCount, type: type)
    }

    /// The step plan of `items` over a cache of `layout`.
    public func plan(_ items: [ForwardItem], layout: KVCacheLayout) throws -> BatchPlan {
        let dynamic = config.ropeScaling?.kind == .dynamic
        return try BatchPlan(items: items, blockSize: layout.blockSize, blockCount: layout.blockCount, vocab: vocab,
                             baseFrequencies: baseFrequencies,
                             frequencies: dynamic ? { [config] length in
                                 // Dynamic NTK: a sequence longer than the trained context gets its own frequencies, as HF computes them.
                                 length > config.maxPositionEmbeddings ? config.ropeInverseFrequencies(sequenceLength: length) : nil
                             } : nil)
    }

    /// One forward step over a batch of sequences sharing `cache`: each item's tokens run at
    /// positions start..., their K/V go into the item's blocks, and the requested logits come
    /// back per item (`[vocab]` for `.last`, `[tokens × vocab]` for `.all`, empty for `.none`).
    ///
    /// Batch invariance: when every item has one token (decode) all linear layers use the
    /// `.decode` kernels, whose per-row arithmetic ignores the other rows; attention, norms and
    /// RoPE are per row or per sequence. An item's outputs are then the same bits in any batch.
    public func forward(_ plan: BatchPlan, cache: B.KVCache, state: RunState<B>, observer: ForwardObserver? = nil) throws -> [[Float]] {
        let m = try enqueue(plan, cache: cache, state: state, observer: observer)
        guard m > 0 else { return plan.logitCounts.map { _ in [] } }
        let flat = try backend.download(state.logits, count: m * vocab)
        var result: [[Float]] = []
        var cursor = 0
        for count in plan.logitCounts {
            result.append(Array(flat[cursor * vocab..<(cursor + count) * vocab]))
            cursor += count
        }
        return result
    }

    /// The same step, with the next token of each logit row sampled on the device (only the ids
    /// come back); `sampling` has one entry per logit row. Needs `backend.samplesOnDevice`.
    public func forward(_ plan: BatchPlan, cache: B.KVCache, state: RunState<B>, sampling: [DeviceSampling]) throws -> [Int32] {
        precondition(sampling.count == plan.logitRows.count, "one sampling entry per logit row")
        let m = try enqueue(plan, cache: cache, state: state, observer: nil)
        guard m > 0 else { return [] }
        return try backend.sample(state.logits, vocab: vocab, rows: sampling)
    }

    /// Enqueues the step (through `replaying`, so a backend may replay a recording of it) and
    /// returns its number of logit rows, left in `state.logits`.
    private func enqueue(_ plan: BatchPlan, cache: B.KVCache, state: RunState<B>, observer: ForwardObserver?) throws -> Int {
        let n = plan.rows
        guard n <= state.maxRows, plan.logitRows.count <= state.maxLogitRows else {
            throw EngineError.invalidConfig("a step of \(n) rows and \(plan.logitRows.count) logit rows exceeds the run state's \(state.maxRows) and \(state.maxLogitRows)")
        }
        let step = try backend.upload(plan: plan)
        // An observer downloads inside the step: nothing to replay then.
        if observer == nil {
            try backend.replaying(step: step, owners: [self, cache, state]) { try layers(plan, step: step, cache: cache, state: state, observer: nil) }
        } else {
            try layers(plan, step: step, cache: cache, state: state, observer: observer)
        }
        return plan.logitRows.count
    }

    private func layers(_ plan: BatchPlan, step: B.Step, cache: B.KVCache, state: RunState<B>, observer: ForwardObserver?) throws {
        let n = plan.rows
        let mode = plan.mode
        let qkvWidth = (heads + 2 * kvHeads) * headDim
        let s = state
        func observe(_ layer: Int, _ tensor: ObservedTensor, _ buffer: B.Buffer, width: Int, stride: Int? = nil, offset: Int = 0) throws {
            guard let observer else { return }
            let stride = stride ?? width
            let all = try backend.download(buffer, count: n * stride)
            let values = stride == width ? all : (0..<n).flatMap { all[$0 * stride + offset..<$0 * stride + offset + width] }
            observer.observe(layer: layer, tensor: tensor, rows: n, width: width, values: values, plan: plan)
        }

        try backend.embed(embedding, step: step, out: s.x)                                             // x: [n][hidden]
        for (i, layer) in layers.enumerated() {
            // Attention block.
            try backend.rmsNorm(s.x, weight: layer.attnNorm, out: s.normed, rows: n, dim: hidden, eps: config.rmsNormEps)
            try observe(i, .qkvInput, s.normed, width: hidden)
            try backend.linear(s.normed, rows: n, weight: layer.qkv, bias: layer.qkvBias, out: s.qkv, mode: mode)  // [n][hidden]·[qkvWidth][hidden]ᵀ
            let scale = 1 / Float(headDim).squareRoot()
            if observer == nil {
                try backend.ropeAttention(s.qkv, step: step, cache: cache, layer: i, out: s.attn, heads: heads, kvHeads: kvHeads,
                                          headDim: headDim, scale: scale, window: layer.window)
            } else {   // the observer sees the rotated k and v
                try backend.ropeAndStoreKV(s.qkv, step: step, cache: cache, layer: i, heads: heads, kvHeads: kvHeads, headDim: headDim)
                try observe(i, .key, s.qkv, width: kvHeads * headDim, stride: qkvWidth, offset: heads * headDim)
                try observe(i, .value, s.qkv, width: kvHeads * headDim, stride: qkvWidth, offset: (heads + kvHeads) * headDim)
                try backend.attention(s.qkv, step: step, cache: cache, layer: i, out: s.attn, heads: heads, kvHeads: kvHeads,
                                      headDim: headDim, scale: scale, window: layer.window)
            }
            try observe(i, .oInput, s.attn, width: heads * headDim)
            try backend.linearAdd(s.attn, rows: n, weight: layer.o, bias: layer.oBias, into: s.x, width: hidden, scratch: s.proj,
                                  mode: mode)                                                          // x += [n][qDim]·[hidden][qDim]ᵀ

            // Feed-forward block (SwiGLU).
            try backend.rmsNorm(s.x, weight: layer.ffnNorm, out: s.normed, rows: n, dim: hidden, eps: config.rmsNormEps)
            try observe(i, .gateUpInput, s.normed, width: hidden)
            try backend.linearSiluMul(s.normed, rows: n, weight: layer.gateUp, scratch: s.gateUp,      // [n][2·inter] →
                                      inter: config.intermediateSize, out: s.act, mode: mode)       // [n][inter]
            try observe(i, .downInput, s.act, width: config.intermediateSize)
            try backend.linearAdd(s.act, rows: n, weight: layer.down, bias: nil, into: s.x, width: hidden, scratch: s.proj,
                                  mode: mode)                                                          // x += [n][inter]·[hidden][inter]ᵀ
        }

        // Final norm and LM head on the rows whose logits were asked for. Single rows go through the
        // decode kernel, so a sequence's next-token logits are the same bits whether it was
        // prefilled alone or decoded in a batch.
        let m = plan.logitRows.count
        guard m > 0 else { return }
        try backend.gatherLogitRows(s.x, step: step, width: hidden, out: s.lastRows)
        try backend.rmsNorm(s.lastRows, weight: finalNorm, out: s.lastRows, rows: m, dim: hidden, eps: config.rmsNormEps)
        try backend.linear(s.lastRows, rows: m, weight: lmHead, bias: nil, out: s.logits, mode: plan.logitsMode)  // [m][hidden]·[vocab][hidden]ᵀ
    }
}
