// The seam between the model and the hardware (issue [A]). The Llama forward pass is written once
// against this protocol, for two implementations: the CPU runs each op at once; a CUDA backend
// ([G]) keeps every buffer on the device, enqueues ops on one stream and only waits in `download`.
// So the model never touches a pointer or assumes host-visible memory, every op can fail (a device
// out of memory, a failed launch), the KV cache belongs to the backend, and the per-step batch
// (ids, positions, block tables) crosses the seam once per step as one `BatchPlan`.

/// How a linear layer is being used, so a backend can pick its kernel.
public enum LinearMode: Sendable {
    /// Few rows (decode): a kernel whose per-output reduction order is independent of the row
    /// count, so a sequence computes the same bits alone or inside a batch.
    case decode
    /// Many rows (prefill): the fastest GEMM available.
    case prefill
}

/// Element type of a backend buffer.
public enum ElementType: String, Sendable, Equatable {
    case f32, f16, bf16, i8, i32

    public var byteSize: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        }
    }
}

/// Memory of the device a backend computes on, in bytes.
public struct MemoryInfo: Sendable, Equatable {
    /// What can be allocated now (host: MemAvailable; GPU: cudaMemGetInfo's free).
    public var free: Int
    public var total: Int

    public init(free: Int, total: Int) {
        self.free = free
        self.total = total
    }
}

public protocol Backend: AnyObject, Sendable {
    /// Element-typed device memory.
    associatedtype Buffer
    /// A linear layer's weights in the form this backend multiplies (stored precision kept).
    associatedtype Linear
    /// The paged KV cache, in the backend's memory.
    associatedtype KVCache: AnyObject
    /// A `BatchPlan` as the backend holds it for one step (on a GPU: uploaded once).
    associatedtype Step

    /// Human-readable description for logs and `check-env`.
    var description: String { get }
    /// Free and total memory of the device, for sizing the KV cache.
    func memoryInfo() -> MemoryInfo

    /// A zero-filled buffer of `count` elements.
    func allocate(_ type: ElementType, count: Int) throws -> Buffer
    /// An fp32 buffer holding `values` (norm weights, biases).
    func upload(_ values: [Float]) throws -> Buffer
    /// Waits for pending work and copies the first `count` floats of an fp32 buffer to the host.
    func download(_ buffer: Buffer, count: Int) throws -> [Float]
    /// Makes linear weights usable by `linear` and `embed`; several dense parts are stacked along
    /// the output dimension into one matrix (fused q/k/v, gate/up).
    func prepare(linear: LinearWeights) throws -> Linear
    /// The paged KV cache described by `layout`, or an error when its element type is not
    /// supported or it does not fit. An int8 cache needs `quantParameters` (its layers and KV heads).
    func makeKVCache(_ layout: KVCacheLayout, quantParameters: KVQuantParameters?) throws -> KVCache
    /// Hands the step's plan to the backend (one upload per step).
    func upload(plan: BatchPlan) throws -> Step

    /// out[r] = table[ids[r]] for the plan's token ids (rows of the embedding matrix, widened to fp32).
    func embed(_ table: Linear, step: Step, out: Buffer) throws
    /// out[rows][n] = x[rows][k] · Wᵀ (+ bias), W `[n][k]`.
    func linear(_ x: Buffer, rows: Int, weight: Linear, bias: Buffer?, out: Buffer, mode: LinearMode) throws
    /// y[rows][width] += x[rows][k] · Wᵀ (+ bias), W `[width][k]`: the residual add after a
    /// projection, fused into the product where the backend can (else the product goes to
    /// `scratch` and is added). Same values as `linear` into scratch followed by `add`.
    func linearAdd(_ x: Buffer, rows: Int, weight: Linear, bias: Buffer?, into y: Buffer, width: Int, scratch: Buffer,
                   mode: LinearMode) throws
    /// out[rows][inter] = silu(gate) · up of the product x · gateUpᵀ (`[2·inter][k]`, gate rows then
    /// up rows), fused where the backend can (else the product goes to `scratch` `[rows][2·inter]`).
    /// Same values as `linear` into scratch followed by `siluMul`.
    func linearSiluMul(_ x: Buffer, rows: Int, weight: Linear, scratch: Buffer, inter: Int, out: Buffer,
                       mode: LinearMode) throws
    /// out[r] = x[r] / rms(x[r]) * weight, over `rows` rows of `dim`; out may be x.
    func rmsNorm(_ x: Buffer, weight: Buffer, out: Buffer, rows: Int, dim: Int, eps: Float) throws
    /// For every row of the step, `qkv[r]` = q | k | v (heads, kvHeads, kvHeads × headDim): rotates q
    /// and k in place at the row's position and writes k and v into the cache slot of `layer`.
    func ropeAndStoreKV(_ qkv: Buffer, step: Step, cache: KVCache, layer: Int, heads: Int, kvHeads: Int, headDim: Int) throws
    /// Causal GQA of the step's queries (the q part of `qkv`) over the cache of `layer`; out[rows][heads × headDim].
    /// `window` > 0 limits each query to the last `window` positions (sliding-window attention).
    func attention(_ qkv: Buffer, step: Step, cache: KVCache, layer: Int, out: Buffer, heads: Int, kvHeads: Int,
                   headDim: Int, scale: Float, window: Int) throws
    /// `ropeAndStoreKV` then `attention`, fused where the backend can; `qkv` afterwards holds q and k
    /// rotated or not (only `attention`'s output is defined). Same values as the two ops.
    func ropeAttention(_ qkv: Buffer, step: Step, cache: KVCache, layer: Int, out: Buffer, heads: Int, kvHeads: Int,
                       headDim: Int, scale: Float, window: Int) throws
    /// out[r][i] = silu(gateUp[r][i]) · gateUp[r][inter + i].
    func siluMul(_ gateUp: Buffer, rows: Int, inter: Int, out: Buffer) throws
    /// y += x, elementwise over `count`.
    func add(_ y: Buffer, _ x: Buffer, count: Int) throws
    /// out[i] = x[plan.logitRows[i]] for rows of `width` floats.
    func gatherLogitRows(_ x: Buffer, step: Step, width: Int, out: Buffer) throws

    /// Runs `body`, which enqueues every op of one forward step over `step`. A backend may record
    /// the ops the first time a step of this shape runs with these `owners` (the model, cache and
    /// run state whose memory the ops touch) and replay the recording later instead of calling
    /// `body` (CUDA graphs). Default: calls `body`.
    func replaying(step: Step, owners: [AnyObject], _ body: () throws -> Void) throws
    /// Whether `sample` runs here: then only token ids cross back to the host. Default: false (the
    /// engine downloads the logits and samples on the host).
    var samplesOnDevice: Bool { get }
    /// The next token of each of the first `rows.count` rows of `logits` (`[rows][vocab]`), with the
    /// host Sampler's semantics (penalties, temperature, top-k, top-p, the draw `uniform`). Only
    /// called when `samplesOnDevice`, for rows `DeviceSampling.supports`.
    func sample(_ logits: Buffer, vocab: Int, rows: [DeviceSampling]) throws -> [Int32]
}

extension Backend {
    /// A float (fp16/fp32) cache, which needs no quantization parameters.
    public func makeKVCache(_ layout: KVCacheLayout) throws -> KVCache { try makeKVCache(layout, quantParameters: nil) }

    public func linearAdd(_ x: Buffer, rows: Int, weight: Linear, bias: Buffer?, into y: Buffer, width: Int, scratch: Buffer,
                          mode: LinearMode) throws {
        try linear(x, rows: rows, weight: weight, bias: bias, out: scratch, mode: mode)
        try add(y, scratch, count: rows * width)
    }

    public func linearSiluMul(_ x: Buffer, rows: Int, weight: Linear, scratch: Buffer, inter: Int, out: Buffer,
                              mode: LinearMode) throws {
        try linear(x, rows: rows, weight: weight, bias: nil, out: scratch, mode: mode)
        try siluMul(scratch, rows: rows, inter: inter, out: out)
    }

    public func ropeAttention(_ qkv: Buffer, step: Step, cache: KVCache, layer: Int, out: Buffer, heads: Int, kvHeads: Int,
                              headDim: Int, scale: Float, window: Int) throws {
        try ropeAndStoreKV(qkv, step: step, cache: cache, layer: layer, heads: heads, kvHeads: kvHeads, headDim: headDim)
        try attention(qkv, step: step, cache: cache, layer: layer, out: out, heads: heads, kvHeads: kvHeads, headDim: headDim,
                      scale: scale, window: window)
    }

    public func replaying(step: Step, owners: [AnyObject], _ body: () throws -> Void) throws { try body() }
    public var samplesOnDevice: Bool { false }
    public func sample(_ logits: Buffer, vocab: Int, rows: [DeviceSampling]) throws -> [Int32] {
        throw BackendError.unsupported("\(description) does not sample on the device")
    }
}

/// One row's sampling on the device: what `Sampler.sample` would use, with its random draw taken
/// on the host from the request's generator (so a seed gives the same tokens on either side).
public struct DeviceSampling: Sendable {
    public var params: SamplingParams
    /// The draw in [0, 1) the host sampler would have made (unused when greedy).
    public var uniform: Float
    /// Tokens the repetition penalty applies to (the whole sequence), and the generated tail the
    /// presence and frequency penalties count.
    public var context: [Int32]
    public var generated: ArraySlice<Int32>

    public init(params: SamplingParams, uniform: Float, context: [Int32], generated: ArraySlice<Int32>) {
        self.params = params
        self.uniform = uniform
        self.context = context
        self.generated = generated
    }

    /// The largest top-k the device kernel sorts.
    public static let maxTopK = 1024

    /// Greedy, or top-k in 1...maxTopK below the vocabulary (top-k off sorts the whole vocabulary,
    /// which stays on the host).
    public static func supports(_ params: SamplingParams, vocab: Int) -> Bool {
        params.isGreedy || (params.topK >= 1 && params.topK <= maxTopK && params.topK < vocab)
    }
}

/// Errors of a backend: memory, unsupported element types and layouts.
public enum BackendError: Error, CustomStringConvertible, Equatable, Sendable {
    case outOfMemory(what: String, bytes: Int, free: Int)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .outOfMemory(what, bytes, free):
            return "\(what) needs \(bytes / (1 << 20)) MiB but only \(free / (1 << 20)) MiB are free"
        case let .unsupported(message):
            return message
        }
    }
}
