// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, InternLM, InternLM2, SmolLM), written once
// against `Backend`. Reads top-down like the paper:
//   x = embed(tokens)
//   for each layer:  x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
//                    x += W2 · (silu(W1·norm(x)) ⊙ W3·norm(x))
//   logits = Wlm · norm(x)
// All scratch buffers are allocated once per model for `maxChunkTokens` rows; longer prompts are
// processed in chunks of that many tokens.

/// Which positions' logits a forward pass returns.
public enum LogitsRequest: Sendable {
    case none
    /// The last position only: `[vocab]`.
    case last
    /// Every position of the call: `[tokens][vocab]`.
    case all
}

public final class LlamaModel<B: Backend> {
    public let config: ModelConfig
    public let backend: B
    public let maxChunkTokens: Int

    struct Layer {
        let attnNorm, ffnNorm: B.Buffer
        let q, k, v, o, gate, up, down: B.Matrix
        let qBias, kBias, vBias, oBias: B.Buffer?
    }

    let layers: [Layer]
    let embedding: B.Matrix
    let finalNorm: B.Buffer
    let lmHead: B.Matrix
    let inverseFrequencies: B.Buffer

    // Scratch, [maxChunkTokens][width] each.
    let x, h, q, attn, gate, up, kRows, vRows: B.Buffer
    let lastRows: B.Buffer
    private var logitsScratch: B.Buffer?
    private var logitsRows = 0

    var hidden: Int { config.hiddenSize }
    var heads: Int { config.numAttentionHeads }
    var kvHeads: Int { config.numKeyValueHeads }
    var headDim: Int { config.headDim }
    var vocab: Int { config.vocabSize }

    public init(backend: B, config: ModelConfig, weights: ModelWeights, maxChunkTokens: Int = 512) throws {
        self.backend = backend
        self.config = config
        self.maxChunkTokens = maxChunkTokens
        func vector(_ t: TensorView) -> B.Buffer { backend.upload(t.toFloatArray()) }
        layers = try weights.layers.map { l in
            Layer(attnNorm: vector(l.attnNorm), ffnNorm: vector(l.ffnNorm),
                  q: try backend.prepare(matrix: l.q), k: try backend.prepare(matrix: l.k),
                  v: try backend.prepare(matrix: l.v), o: try backend.prepare(matrix: l.o),
                  gate: try backend.prepare(matrix: l.gate), up: try backend.prepare(matrix: l.up),
                  down: try backend.prepare(matrix: l.down),
                  qBias: l.qBias.map(vector), kBias: l.kBias.map(vector), vBias: l.vBias.map(vector),
                  oBias: l.oBias.map(vector))
        }
        embedding = try backend.prepare(matrix: weights.embed)
        finalNorm = vector(weights.norm)
        lmHead = try backend.prepare(matrix: weights.lmHead)
        inverseFrequencies = backend.upload(config.ropeInverseFrequencies())

        let qWidth = config.numAttentionHeads * config.headDim
        x = backend.allocate(maxChunkTokens * config.hiddenSize)
        h = backend.allocate(maxChunkTokens * max(config.hiddenSize, qWidth))
        q = backend.allocate(maxChunkTokens * qWidth)
        attn = backend.allocate(maxChunkTokens * qWidth)
        kRows = backend.allocate(maxChunkTokens * config.kvDim)
        vRows = backend.allocate(maxChunkTokens * config.kvDim)
        gate = backend.allocate(maxChunkTokens * config.intermediateSize)
        up = backend.allocate(maxChunkTokens * config.intermediateSize)
        lastRows = backend.allocate(maxChunkTokens * config.hiddenSize)
    }

    /// A KV cache for one sequence of up to `capacity` tokens, with a pool of its own.
    public func makeCache(capacity: Int) -> SequenceKVCache<B> {
        SequenceKVCache(backend: backend, layers: layers.count, rowWidth: config.kvDim, capacity: capacity)
    }

    /// A KV pool shared by many sequences (the batching engine's).
    public func makePool(blockSize: Int, blockCount: Int) -> KVPool<B> {
        KVPool(backend: backend, layers: layers.count, rowWidth: config.kvDim, blockSize: blockSize, blockCount: blockCount)
    }

    /// Runs `tokens` at positions `cache.length...`, appends their K/V to the cache and returns
    /// the requested logits. Prompts longer than `maxChunkTokens` run in chunks.
    public func forward(_ tokens: [Int32], cache: SequenceKVCache<B>, logits request: LogitsRequest) throws -> [Float] {
        guard !tokens.isEmpty else { throw EngineError.emptyInput }
        guard cache.length + tokens.count <= cache.capacity else {
            throw EngineError.contextFull(needed: cache.length + tokens.count, capacity: cache.capacity)
        }
        var result: [Float] = []
        if case .all = request { result.reserveCapacity(tokens.count * vocab) }
        var offset = 0
        while offset < tokens.count {
            let n = min(maxChunkTokens, tokens.count - offset)
            let isLast = offset + n == tokens.count
            let want: LogitsRequest = { if case .all = request { return .all }; return isLast ? request : .none }()
            let item = ForwardItem(tokens: Array(tokens[offset..<offset + n]), start: cache.length, blocks: cache.table, logits: want)
            result += try forward(batch: [item], pool: cache.pool)[0]
            cache.length += n
            offset += n
        }
        return result
    }

    /// One forward step over a batch of sequences sharing `pool`: each item's tokens run at
    /// positions start..., their K/V go into the item's blocks, and the requested logits come
    /// back per item. Rows of all items together must fit `maxChunkTokens`.
    ///
    /// Batch invariance: when every item has one token (decode) all linear layers use the
    /// `.decode` kernels, whose per-row arithmetic ignores the other rows; attention, norms and
    /// RoPE are per row or per sequence. An item's outputs are then the same bits in any batch.
    public func forward(batch items: [ForwardItem], pool: KVPool<B>) throws -> [[Float]] {
        let n = items.reduce(0) { $0 + $1.tokens.count }
        guard n > 0, items.allSatisfy({ !$0.tokens.isEmpty }) else { throw EngineError.emptyInput }
        precondition(n <= maxChunkTokens, "forward batch of \(n) rows exceeds maxChunkTokens \(maxChunkTokens)")
        for item in items {
            if let bad = item.tokens.first(where: { $0 < 0 || Int($0) >= vocab }) {
                throw EngineError.tokenOutOfRange(id: bad, vocab: vocab)
            }
            precondition(pool.blocksFor(tokens: item.start + item.tokens.count) <= item.blocks.count, "block table too short")
        }
        let mode: LinearMode = items.allSatisfy { $0.tokens.count == 1 } ? .decode : .prefill
        let kvWidth = kvHeads * headDim, qWidth = heads * headDim
        var sequences: [AttentionSequence] = []
        var row = 0
        for item in items {
            sequences.append(AttentionSequence(queryRow: row, tokens: item.tokens.count, start: item.start, blocks: item.blocks))
            row += item.tokens.count
        }

        backend.embed(embedding, ids: items.flatMap(\.tokens), out: x)                     // x: [n][hidden]
        for (i, layer) in layers.enumerated() {
            // Attention block.
            backend.rmsNorm(x, weight: layer.attnNorm, out: h, rows: n, dim: hidden, eps: config.rmsNormEps)
            backend.linear(h, rows: n, weight: layer.q, bias: layer.qBias, out: q, mode: mode)      // [n][hidden]·[qWidth][hidden]ᵀ
            backend.linear(h, rows: n, weight: layer.k, bias: layer.kBias, out: kRows, mode: mode)  // [n][kvWidth]
            backend.linear(h, rows: n, weight: layer.v, bias: layer.vBias, out: vRows, mode: mode)
            for s in sequences {
                let positions = (0..<s.tokens).map { Int32(s.start + $0) }
                let freqs = ropeFrequencies(sequenceLength: s.start + s.tokens)
                backend.rope(backend.view(q, offset: s.queryRow * qWidth, count: s.tokens * qWidth), tokens: s.tokens, heads: heads,
                             headDim: headDim, stride: qWidth, positions: positions, inverseFrequencies: freqs)
                let k = backend.view(kRows, offset: s.queryRow * kvWidth, count: s.tokens * kvWidth)
                backend.rope(k, tokens: s.tokens, heads: kvHeads, headDim: headDim, stride: kvWidth, positions: positions, inverseFrequencies: freqs)
                backend.storeKV(k, rowStride: kvWidth, count: s.tokens, pool: pool.keys[i], blocks: s.blocks, start: s.start,
                                rowWidth: kvWidth, blockSize: pool.blockSize)
                backend.storeKV(backend.view(vRows, offset: s.queryRow * kvWidth, count: s.tokens * kvWidth), rowStride: kvWidth,
                                count: s.tokens, pool: pool.values[i], blocks: s.blocks, start: s.start, rowWidth: kvWidth,
                                blockSize: pool.blockSize)
            }
            backend.attention(q: q, kPool: pool.keys[i], vPool: pool.values[i], blockSize: pool.blockSize, sequences: sequences,
                              out: attn, heads: heads, kvHeads: kvHeads, headDim: headDim, scale: 1 / Float(headDim).squareRoot())
            backend.linear(attn, rows: n, weight: layer.o, bias: layer.oBias, out: h, mode: mode)   // [n][qWidth]·[hidden][qWidth]ᵀ
            backend.add(x, h, count: n * hidden)

            // Feed-forward block (SwiGLU).
            backend.rmsNorm(x, weight: layer.ffnNorm, out: h, rows: n, dim: hidden, eps: config.rmsNormEps)
            backend.linear(h, rows: n, weight: layer.gate, bias: nil, out: gate, mode: mode)      // [n][inter]
            backend.linear(h, rows: n, weight: layer.up, bias: nil, out: up, mode: mode)
            backend.siluMul(gate, up, count: n * config.intermediateSize)
            backend.linear(gate, rows: n, weight: layer.down, bias: nil, out: h, mode: mode)      // [n][inter]·[hidden][inter]ᵀ
            backend.add(x, h, count: n * hidden)
        }
        return logits(for: items, sequences: sequences, rows: n)
    }

    /// Rotary frequencies; dynamic NTK scaling recomputes them once the sequence outgrows the
    /// trained context, as HF does.
    private func ropeFrequencies(sequenceLength: Int) -> B.Buffer {
        if let scaling = config.ropeScaling, scaling.kind == .dynamic, sequenceLength > config.maxPositionEmbeddings {
            return backend.upload(config.ropeInverseFrequencies(sequenceLength: sequenceLength))
        }
        return inverseFrequencies
    }

    /// Final norm and LM head on the rows the items asked for: every position for `.all`, the
    /// last one for `.last`. Single rows go through the decode kernel, so a sequence's next-token
    /// logits are the same bits whether it was prefilled alone or decoded in a batch.
    private func logits(for items: [ForwardItem], sequences: [AttentionSequence], rows n: Int) -> [[Float]] {
        var wanted: [Int] = []   // rows of x to project, in output order
        for (item, s) in zip(items, sequences) {
            switch item.logits {
            case .none: break
            case .last: wanted.append(s.queryRow + s.tokens - 1)
            case .all: wanted += (s.queryRow..<s.queryRow + s.tokens)
            }
        }
        guard !wanted.isEmpty else { return items.map { _ in [] } }
        // Grown to the most rows asked for so far (a perplexity window needs hundreds, decode one per sequence).
        if logitsRows < wanted.count {
            logitsScratch = backend.allocate(wanted.count * vocab)
            logitsRows = wanted.count
        }
        let out = logitsScratch!
        var start = 0
        while start < wanted.count {   // contiguous runs of rows go through one call
            var end = start + 1
            while end < wanted.count, wanted[end] == wanted[end - 1] + 1 { end += 1 }
            let m = end - start
            let src = backend.view(x, offset: wanted[start] * hidden, count: m * hidden)
            let normed = backend.view(lastRows, offset: start * hidden, count: m * hidden)
            backend.rmsNorm(src, weight: finalNorm, out: normed, rows: m, dim: hidden, eps: config.rmsNormEps)
            start = end
        }
        let single = items.allSatisfy { if case .all = $0.logits { return false }; return true }
        backend.linear(lastRows, rows: wanted.count, weight: lmHead, bias: nil, out: out,
                       mode: single ? .decode : .prefill)                                     // [rows][hidden]·[vocab][hidden]ᵀ
        let flat = backend.download(out, count: wanted.count * vocab)
        var result: [[Float]] = []
        var cursor = 0
        for item in items {
            let count: Int
            switch item.logits {
            case .none: count = 0
            case .last: count = 1
            case .all: count = item.tokens.count
            }
            result.append(Array(flat[cursor * vocab..<(cursor + count) * vocab]))
            cursor += count
        }
        return result
    }
}

/// One sequence's part of a batched forward step.
public struct ForwardItem: Sendable {
    public var tokens: [Int32]
    /// Position of the first token (the sequence's cached length).
    public var start: Int
    /// The sequence's block table in the pool (covering start + tokens.count positions).
    public var blocks: [Int32]
    public var logits: LogitsRequest

    public init(tokens: [Int32], start: Int, blocks: [Int32], logits: LogitsRequest) {
        self.tokens = tokens
        self.start = start
        self.blocks = blocks
        self.logits = logits
    }
}
