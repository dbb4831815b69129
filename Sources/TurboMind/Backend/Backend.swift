// The seam between the model and the hardware. The Llama forward pass is written once against
// this protocol; the CPU backend runs each op at once, a CUDA backend would enqueue them on a
// stream and only `download` waits. Buffers are opaque handles to fp32 device memory, so the model
// never touches a pointer and never assumes host-visible memory.

/// How a linear layer is being used, so a backend can pick its kernel.
public enum LinearMode: Sendable {
    /// Few rows (decode): a kernel whose per-output reduction order is independent of the row
    /// count, so a sequence computes the same bits alone or inside a batch.
    case decode
    /// Many rows (prefill): the fastest GEMM available.
    case prefill
}

public protocol Backend: AnyObject {
    /// A range of fp32 device memory.
    associatedtype Buffer
    /// A weight matrix `[out][in]` in the form this backend multiplies (stored precision kept).
    associatedtype Matrix

    /// Human-readable description for logs and `check-env`.
    var description: String { get }

    /// A zero-filled buffer of `count` floats.
    func allocate(_ count: Int) -> Buffer
    /// A sub-range of a buffer sharing its memory.
    func view(_ buffer: Buffer, offset: Int, count: Int) -> Buffer
    /// Copies host floats into a new buffer (norm weights, biases, rotary frequencies).
    func upload(_ values: [Float]) -> Buffer
    /// Copies host floats into an existing buffer.
    func write(_ values: [Float], to buffer: Buffer)
    /// Waits for pending work and copies `count` floats of `buffer` to the host.
    func download(_ buffer: Buffer, count: Int) -> [Float]
    /// Makes a 2-D weight tensor usable by `linear` and `embed`.
    func prepare(matrix: TensorView) throws -> Matrix

    /// out[r] = table[ids[r]] (rows of the embedding matrix, widened to fp32).
    func embed(_ table: Matrix, ids: [Int32], out: Buffer)
    /// out[rows][n] = x[rows][k] · Wᵀ (+ bias), W `[n][k]`.
    func linear(_ x: Buffer, rows: Int, weight: Matrix, bias: Buffer?, out: Buffer, mode: LinearMode)
    /// out[r] = x[r] / rms(x[r]) * weight, over `rows` rows of `dim`; out may be x.
    func rmsNorm(_ x: Buffer, weight: Buffer, out: Buffer, rows: Int, dim: Int, eps: Float)
    /// Rotate-half rotary embedding in place on x[tokens][heads][headDim] (row stride `stride`).
    func rope(_ x: Buffer, tokens: Int, heads: Int, headDim: Int, stride: Int, positions: [Int32], inverseFrequencies: Buffer)
    /// Writes `count` K or V rows of `rows` (row stride `rowStride`) into a paged pool at
    /// positions start..<start+count of the sequence whose block table is `blocks`.
    func storeKV(_ rows: Buffer, rowStride: Int, count: Int, pool: Buffer, blocks: [Int32], start: Int,
                 rowWidth: Int, blockSize: Int)
    /// Causal GQA for a batch of sequences over a paged KV pool; each sequence's queries are rows
    /// queryRow..<queryRow+tokens of q and out.
    func attention(q: Buffer, kPool: Buffer, vPool: Buffer, blockSize: Int, sequences: [AttentionSequence],
                   out: Buffer, heads: Int, kvHeads: Int, headDim: Int, scale: Float)
    /// gate = silu(gate) * up, elementwise over `count`.
    func siluMul(_ gate: Buffer, _ up: Buffer, count: Int)
    /// y += x, elementwise over `count`.
    func add(_ y: Buffer, _ x: Buffer, count: Int)
}

/// One sequence of a batched attention call.
public struct AttentionSequence: Sendable {
    /// First row of this sequence's queries in the q and out buffers.
    public var queryRow: Int
    /// Query tokens, at positions start..<start+tokens.
    public var tokens: Int
    public var start: Int
    /// Block table: position p lives in block blocks[p / blockSize].
    public var blocks: [Int32]

    public init(queryRow: Int, tokens: Int, start: Int, blocks: [Int32]) {
        self.queryRow = queryRow
        self.tokens = tokens
        self.start = start
        self.blocks = blocks
    }
}
