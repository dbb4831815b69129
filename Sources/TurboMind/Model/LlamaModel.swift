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

/// Errors of running the model (as opposed to loading it: `FormatError`).
public enum EngineError: Error, CustomStringConvertible, Equatable, Sendable {
    case contextFull(needed: Int, capacity: Int)
    case tokenOutOfRange(id: Int32, vocab: Int)
    case emptyInput

    public var description: String {
        switch self {
        case let .contextFull(needed, capacity):
            return "the session needs \(needed) tokens but its length is \(capacity) (raise --session-len or start a new session)"
        case let .tokenOutOfRange(id, vocab):
            return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case .emptyInput:
            return "the input has no tokens"
        }
    }
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
    let x, h, q, attn, gate, up: B.Buffer
    let lastHidden: B.Buffer
    let logitsOne: B.Buffer
    private var logitsAll: B.Buffer?

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
        gate = backend.allocate(maxChunkTokens * config.intermediateSize)
        up = backend.allocate(maxChunkTokens * config.intermediateSize)
        lastHidden = backend.allocate(config.hiddenSize)
        logitsOne = backend.allocate(config.vocabSize)
    }

    /// A KV cache for one sequence of up to `capacity` tokens.
    public func makeCache(capacity: Int) -> SequenceKVCache<B> {
        SequenceKVCache(backend: backend, layers: layers.count, kvHeads: kvHeads, headDim: headDim, capacity: capacity)
    }

    /// Runs `tokens` at positions `cache.length...`, appends their K/V to the cache and returns
    /// the requested logits.
    public func forward(_ tokens: [Int32], cache: SequenceKVCache<B>, logits request: LogitsRequest) throws -> [Float] {
        guard !tokens.isEmpty else { throw EngineError.emptyInput }
        guard cache.length + tokens.count <= cache.capacity else {
            throw EngineError.contextFull(needed: cache.length + tokens.count, capacity: cache.capacity)
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw EngineError.tokenOutOfRange(id: bad, vocab: vocab)
        }
        var result: [Float] = []
        if case .all = request { result.reserveCapacity(tokens.count * vocab) }
        var offset = 0
        while offset < tokens.count {
            let n = min(maxChunkTokens, tokens.count - offset)
            let chunk = Array(tokens[offset..<offset + n])
            offset += n
            let isLast = offset == tokens.count
            runLayers(chunk, cache: cache)
            switch request {
            case .none: break
            case .last: if isLast { result = lastLogits(rows: n) }
            case .all: result += allLogits(rows: n)
            }
        }
        return result
    }

    private func runLayers(_ tokens: [Int32], cache: SequenceKVCache<B>) {
        let n = tokens.count, start = cache.length
        let mode: LinearMode = n == 1 ? .decode : .prefill
        let qWidth = heads * headDim, kvWidth = kvHeads * headDim
        let positions = (0..<n).map { Int32(start + $0) }
        let freqs = ropeFrequencies(sequenceLength: start + n)

        backend.embed(embedding, ids: tokens, out: x)                                  // x: [n][hidden]
        for (i, layer) in layers.enumerated() {
            // Attention block.
            backend.rmsNorm(x, weight: layer.attnNorm, out: h, rows: n, dim: hidden, eps: config.rmsNormEps)
            let kRows = backend.view(cache.keys[i], offset: start * kvWidth, count: n * kvWidth)
            let vRows = backend.view(cache.values[i], offset: start * kvWidth, count: n * kvWidth)
            backend.linear(h, rows: n, weight: layer.q, bias: layer.qBias, out: q, mode: mode)     // [n][hidden]·[qWidth][hidden]ᵀ
            backend.linear(h, rows: n, weight: layer.k, bias: layer.kBias, out: kRows, mode: mode) // → cache rows [n][kvWidth]
            backend.linear(h, rows: n, weight: layer.v, bias: layer.vBias, out: vRows, mode: mode)
            backend.rope(q, tokens: n, heads: heads, headDim: headDim, stride: qWidth, positions: positions, inverseFrequencies: freqs)
            backend.rope(kRows, tokens: n, heads: kvHeads, headDim: headDim, stride: kvWidth, positions: positions, inverseFrequencies: freqs)
            backend.attention(q: q, k: cache.keys[i], v: cache.values[i], out: attn, tokens: n, start: start,
                              heads: heads, kvHeads: kvHeads, headDim: headDim, scale: 1 / Float(headDim).squareRoot())
            backend.linear(attn, rows: n, weight: layer.o, bias: layer.oBias, out: h, mode: mode)  // [n][qWidth]·[hidden][qWidth]ᵀ
            backend.add(x, h, count: n * hidden)

            // Feed-forward block (SwiGLU).
            backend.rmsNorm(x, weight: layer.ffnNorm, out: h, rows: n, dim: hidden, eps: config.rmsNormEps)
            backend.linear(h, rows: n, weight: layer.gate, bias: nil, out: gate, mode: mode)     // [n][inter]
            backend.linear(h, rows: n, weight: layer.up, bias: nil, out: up, mode: mode)
            backend.siluMul(gate, up, count: n * config.intermediateSize)
            backend.linear(gate, rows: n, weight: layer.down, bias: nil, out: h, mode: mode)     // [n][inter]·[hidden][inter]ᵀ
            backend.add(x, h, count: n * hidden)
        }
        cache.length = start + n
    }

    /// Rotary frequencies; dynamic NTK scaling recomputes them once the sequence outgrows the
    /// trained context, as HF does.
    private func ropeFrequencies(sequenceLength: Int) -> B.Buffer {
        if let scaling = config.ropeScaling, scaling.kind == .dynamic, sequenceLength > config.maxPositionEmbeddings {
            return backend.upload(config.ropeInverseFrequencies(sequenceLength: sequenceLength))
        }
        return inverseFrequencies
    }

    private func lastLogits(rows n: Int) -> [Float] {
        let last = backend.view(x, offset: (n - 1) * hidden, count: hidden)
        backend.rmsNorm(last, weight: finalNorm, out: lastHidden, rows: 1, dim: hidden, eps: config.rmsNormEps)
        backend.linear(lastHidden, rows: 1, weight: lmHead, bias: nil, out: logitsOne, mode: .decode)  // [vocab][hidden]
        return backend.download(logitsOne, count: vocab)
    }

    private func allLogits(rows n: Int) -> [Float] {
        if logitsAll == nil { logitsAll = backend.allocate(maxChunkTokens * vocab) }
        backend.rmsNorm(x, weight: finalNorm, out: h, rows: n, dim: hidden, eps: config.rmsNormEps)
        backend.linear(h, rows: n, weight: lmHead, bias: nil, out: logitsAll!, mode: n == 1 ? .decode : .prefill)
        return backend.download(logitsAll!, count: n * vocab)
    }
}
