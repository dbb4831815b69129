// The CUDA backend ([G]): every buffer lives in device memory, ops are enqueued in order on the
// device's default stream, and the host waits only in `download`. Activations are fp32 as on the
// CPU (so each op can be checked against CKernels); weights and the embedding table are fp16 in
// device memory (bf16/fp32 checkpoints are converted on the GPU at load); linear layers are cuBLAS
// GEMMs with fp16 inputs and fp32 accumulation and output; the paged KV cache is fp16.
// Sampling stays on the host: the logits rows come back through pinned memory.
import CCUDA
import Foundation

/// Device memory of one element type; freed when the last reference goes.
public final class CUDABuffer: @unchecked Sendable {
    let address: ccuda_ptr
    let type: ElementType
    let count: Int
    var bytes: Int { count * type.byteSize }

    init(type: ElementType, count: Int, zeroed: Bool = true) throws {
        let bytes = max(count, 1) * type.byteSize
        var p: ccuda_ptr = 0
        if ccuda_alloc(&p, bytes) != 0 {
            var free = 0, total = 0
            _ = ccuda_mem_info(&free, &total)
            throw BackendError.outOfMemory(what: "a GPU buffer of \(count) \(type.rawValue)", bytes: bytes, free: free)
        }
        address = p
        self.type = type
        self.count = count
        if zeroed { try cudaCheck(ccuda_memset(p, bytes)) }
    }

    deinit { _ = ccuda_free(address) }
}

/// A linear layer's fused weights, fp16 `[rows][columns]` in device memory.
public struct CUDALinear: @unchecked Sendable {
    let weight: CUDABuffer
    let rows: Int
    let columns: Int
    let name: String
}

/// The paged KV cache in device memory: per layer one K and one V region of
/// [blockCount][blockSize][kvHeads × headDim] fp16.
public final class CUDAKVCache: @unchecked Sendable {
    public let layout: KVCacheLayout
    let keys: [CUDABuffer]
    let values: [CUDABuffer]

    init(layout: KVCacheLayout) throws {
        self.layout = layout
        let elements = layout.blockCount * layout.blockSize * layout.rowWidth
        // Never read before written (attention reads only positions < the sequence's length): no memset.
        keys = try (0..<layout.layers).map { _ in try CUDABuffer(type: .f16, count: elements, zeroed: false) }
        values = try (0..<layout.layers).map { _ in try CUDABuffer(type: .f16, count: elements, zeroed: false) }
    }
}

/// A step's plan in device memory: one int32 upload holding every array (and the rotary
/// frequencies' bits), with each array's address.
public final class CUDAStep: @unchecked Sendable {
    public let plan: BatchPlan
    let buffer: CUDABuffer
    let tokens, positions, slots, tables, rowTables, logitRows, frequencies: ccuda_ptr
    let frequencySet: ccuda_ptr   // 0 when every row uses set 0
    /// Attention's work split: rows of one-token sequences (one block per row and head, keys split
    /// across warps), and tiles of up to 16 consecutive rows of longer ones (K/V shared per tile).
    let decodeRows, tileFirst, tileCount: ccuda_ptr
    let decodeRowCount, tileTotal: Int
    static let tileRows = 16

    init(plan: BatchPlan) throws {
        self.plan = plan
        var packed: [Int32] = []
        var offsets: [Int] = []
        func append(_ a: [Int32]) {
            offsets.append(packed.count)
            packed += a
            packed += [Int32](repeating: 0, count: (4 - a.count % 4) % 4)   // 16-byte aligned arrays
        }
        var tableOf = [Int32](repeating: 0, count: plan.rows)
        for s in plan.sequences {
            for r in s.queryRow..<s.queryRow + s.tokens { tableOf[r] = Int32(s.tableOffset) }
        }
        append(plan.tokens)
        append(plan.positions)
        append(plan.slots)
        append(plan.blockTables)
        append(tableOf)
        append(plan.logitRows)
        append(plan.frequencies.map { Int32(bitPattern: $0.bitPattern) })
        append(plan.frequencySet ?? [])
        var decode: [Int32] = [], firsts: [Int32] = [], counts: [Int32] = []
        for s in plan.sequences {
            if s.tokens == 1 {
                decode.append(Int32(s.queryRow))
                continue
            }
            for start in stride(from: 0, to: s.tokens, by: Self.tileRows) {
                firsts.append(Int32(s.queryRow + start))
                counts.append(Int32(min(Self.tileRows, s.tokens - start)))
            }
        }
        append(decode)
        append(firsts)
        append(counts)
        decodeRowCount = decode.count
        tileTotal = firsts.count
        let buffer = try CUDABuffer(type: .i32, count: packed.count, zeroed: false)
        try packed.withUnsafeBytes { try cudaCheck(ccuda_upload(buffer.address, $0.baseAddress, $0.count), "uploading a step plan") }
        self.buffer = buffer
        let a = offsets.map { buffer.address + ccuda_ptr($0 * 4) }
        tokens = a[0]; positions = a[1]; slots = a[2]; tables = a[3]; rowTables = a[4]; logitRows = a[5]; frequencies = a[6]
        frequencySet = plan.frequencySet == nil ? 0 : a[7]
        decodeRows = a[8]; tileFirst = a[9]; tileCount = a[10]
    }
}

public final class CUDABackend: Backend, @unchecked Sendable {
    public typealias Buffer = CUDABuffer
    public typealias Linear = CUDALinear
    public typealias KVCache = CUDAKVCache
    public typealias Step = CUDAStep

    public let device: CUDARuntime.Device
    let kernels: CUDAKernels
    /// The per-step kernels, resolved once.
    private let fEmbed, fRMSNorm, fRope, fAttention, fAttention64, fAttention128, fTiles64, fTiles128, fGemv, fSiluMul, fAdd, fAddBias, fGather, fToHalf: UnsafeMutableRawPointer
    /// Serialises what shares the backend's scratch (the fp16 copy of a GEMM's input, the pinned
    /// download buffer): engines sharing one model may call from several threads.
    private let lock = NSLock()
    private var halfScratch: CUDABuffer?
    private var pinned: UnsafeMutableRawPointer?
    private var pinnedBytes = 0

    /// Opens GPU 0, loads NVRTC and cuBLAS and compiles (or loads from the cache) the kernels; a
    /// clear `CUDAError.unavailable` where any of that is missing.
    public init() throws {
        device = try CUDARuntime.openCompute()
        kernels = try CUDARuntime.kernels(arch: device.computeCapability)
        fEmbed = try kernels.function("embed")
        fRMSNorm = try kernels.function("rmsnorm")
        fRope = try kernels.function("rope_store_kv")
        fAttention = try kernels.function("attention")
        fAttention64 = try kernels.function("attention_d64")
        fAttention128 = try kernels.function("attention_d128")
        fTiles64 = try kernels.function("attention_tiles_d64")
        fTiles128 = try kernels.function("attention_tiles_d128")
        fGemv = try kernels.function("gemv_f16")
        fSiluMul = try kernels.function("silu_mul")
        fAdd = try kernels.function("add")
        fAddBias = try kernels.function("add_bias")
        fGather = try kernels.function("gather_rows")
        fToHalf = try kernels.function("f32_to_f16")
    }

    deinit {
        if let pinned { _ = ccuda_host_free(pinned) }
    }

    public var description: String {
        let gib = Double(device.total) / Double(1 << 30)
        return String(format: "CUDA (%@, sm_%d, %d SMs, %.0f GiB, driver %d.%d)", device.name, device.computeCapability,
                      device.multiprocessors, gib, device.driverVersion / 1000, device.driverVersion % 1000 / 10)
    }

    /// Where the kernels came from (compiled now or read from the cache).
    public var kernelOrigin: String { kernels.origin }

    public func memoryInfo() -> MemoryInfo {
        var free = 0, total = 0
        _ = ccuda_mem_info(&free, &total)
        return MemoryInfo(free: free, total: total)
    }

    private func blocks(_ n: Int, _ threads: Int = 256) -> Int { max(1, min((n + threads - 1) / threads, 65535)) }

    public func allocate(_ type: ElementType, count: Int) throws -> CUDABuffer {
        try CUDABuffer(type: type, count: count)
    }

    public func upload(_ values: [Float]) throws -> CUDABuffer {
        let b = try CUDABuffer(type: .f32, count: values.count, zeroed: false)
        try values.withUnsafeBytes { try cudaCheck(ccuda_upload(b.address, $0.baseAddress, $0.count), "uploading \(values.count) floats") }
        return b
    }

    public func download(_ buffer: CUDABuffer, count: Int) throws -> [Float] {
        precondition(buffer.type == .f32, "download of a \(buffer.type) buffer")
        let n = min(count, buffer.count)
        lock.lock()
        defer { lock.unlock() }
        let bytes = n * 4
        if bytes > pinnedBytes {
            if let pinned { _ = ccuda_host_free(pinned) }
            pinned = nil
            pinnedBytes = 0
            var p: UnsafeMutableRawPointer?
            try cudaCheck(ccuda_host_alloc(&p, bytes), "allocating \(bytes) bytes of pinned host memory")
            pinned = p
            pinnedBytes = bytes
        }
        try cudaCheck(ccuda_download(pinned, buffer.address, bytes))
        return Array(UnsafeBufferPointer(start: pinned!.assumingMemoryBound(to: Float.self), count: n))
    }

    public func prepare(linear: LinearWeights) throws -> CUDALinear {
        switch linear {
        case let .awq(w):
            throw BackendError.unsupported("\(w.qweight.name): AWQ int4 weights (W4A16) are not supported by the CUDA backend yet")
        case let .dense(parts):
            guard let first = parts.first else { throw BackendError.unsupported("a linear layer with no weights") }
            for t in parts {
                guard t.shape.count == 2, t.shape[1] == first.shape[1] else {
                    throw FormatError.shapeMismatch(file: "weights", tensor: t.name, expected: [t.shape.first ?? 0, first.shape.last ?? 0],
                                                    actual: t.shape)
                }
                guard [.bf16, .f16, .f32].contains(t.dtype) else {
                    throw FormatError.unsupportedDType(file: "weights", tensor: t.name, dtype: t.dtype, supported: DType.weightTypes)
                }
            }
            let rows = parts.reduce(0) { $0 + $1.shape[0] }, columns = first.shape[1]
            let weight = try CUDABuffer(type: .f16, count: rows * columns, zeroed: false)
            var offset = 0   // elements
            for t in parts {
                let n = t.shape[0] * columns
                let dst = weight.address + ccuda_ptr(offset * 2)
                if t.dtype == .f16 {
                    try cudaCheck(ccuda_upload(dst, t.data.baseAddress, t.data.count), "uploading \(t.name)")
                } else {
                    // Stored bytes to the GPU, widened/narrowed to fp16 there.
                    let staging = try CUDABuffer(type: t.dtype == .f32 ? .f32 : .bf16, count: n, zeroed: false)
                    try cudaCheck(ccuda_upload(staging.address, t.data.baseAddress, t.data.count), "uploading \(t.name)")
                    try kernels.launch("to_f16", grid: (blocks(n), 1, 1), threads: 256,
                                       [.pointer(staging.address), .int(t.dtype == .f32 ? 0 : 2), .pointer(dst), .long(Int64(n))])
                    try cudaCheck(ccuda_sync(), "converting \(t.name) to fp16")
                }
                offset += n
            }
            return CUDALinear(weight: weight, rows: rows, columns: columns, name: linear.name)
        }
    }

    public func makeKVCache(_ layout: KVCacheLayout, quantParameters: KVQuantParameters?) throws -> CUDAKVCache {
        guard layout.type == .f16 else {
            throw BackendError.unsupported("the CUDA backend keeps the KV cache in fp16 only; a \(layout.type.rawValue) KV cache "
                                           + "(\(layout.type == .int8 ? "quant_policy 4" : "exactness tests")) is not supported on it")
        }
        let free = memoryInfo().free
        guard layout.byteCount <= free else {
            throw BackendError.outOfMemory(what: "the KV cache (\(layout.blockCount) blocks of \(layout.blockSize) tokens)",
                                           bytes: layout.byteCount, free: free)
        }
        return try CUDAKVCache(layout: layout)
    }

    public func upload(plan: BatchPlan) throws -> CUDAStep { try CUDAStep(plan: plan) }

    public func embed(_ table: CUDALinear, step: CUDAStep, out: CUDABuffer) throws {
        precondition(step.plan.rows * table.columns <= out.count)
        try kernels.launch(fEmbed, name: "embed", grid: (step.plan.rows, 1, 1), threads: 256,
                           [.pointer(table.weight.address), .int(Int32(table.columns)), .pointer(step.tokens), .pointer(out.address)])
    }

    public func linear(_ x: CUDABuffer, rows: Int, weight: CUDALinear, bias: CUDABuffer?, out: CUDABuffer, mode: LinearMode) throws {
        precondition(rows * weight.columns <= x.count && rows * weight.rows <= out.count, "linear \(weight.name): buffers too small")
        if mode == .decode && rows <= 4 {
            // Decode at small batch: memory-bound, our GEMV streams the weights once (fused bias).
            try kernels.launch(fGemv, name: "gemv_f16", grid: ((weight.rows + 7) / 8, 1, 1), threads: 256,
                               [.pointer(weight.weight.address), .pointer(x.address), .pointer(out.address),
                                .pointer(bias?.address ?? 0), .int(Int32(rows)), .int(Int32(weight.rows)), .int(Int32(weight.columns))])
            return
        }
        let n = rows * weight.columns
        lock.lock()
        defer { lock.unlock() }
        if (halfScratch?.count ?? 0) < n {
            halfScratch = nil
            halfScratch = try CUDABuffer(type: .f16, count: n, zeroed: false)
        }
        let xh = halfScratch!.address
        try kernels.launch(fToHalf, name: "f32_to_f16", grid: (blocks(n), 1, 1), threads: 256, [.pointer(x.address), .pointer(xh), .long(Int64(n))])
        try cudaCheck(ccuda_gemm_f16(weight.weight.address, xh, out.address, Int32(rows), Int32(weight.rows), Int32(weight.columns)),
                      "linear \(weight.name)")
        if let bias {
            try kernels.launch(fAddBias, name: "add_bias", grid: (blocks(rows * weight.rows), 1, 1), threads: 256,
                               [.pointer(out.address), .pointer(bias.address), .int(Int32(rows)), .int(Int32(weight.rows))])
        }
    }

    public func rmsNorm(_ x: CUDABuffer, weight: CUDABuffer, out: CUDABuffer, rows: Int, dim: Int, eps: Float) throws {
        try kernels.launch(fRMSNorm, name: "rmsnorm", grid: (rows, 1, 1), threads: 256,
                           [.pointer(x.address), .pointer(weight.address), .pointer(out.address), .int(Int32(dim)), .float(eps)])
    }

    public func ropeAndStoreKV(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, heads: Int, kvHeads: Int,
                               headDim: Int) throws {
        guard headDim % 2 == 0 else { throw BackendError.unsupported("RoPE needs an even head dimension, got \(headDim)") }
        let stride = (heads + 2 * kvHeads) * headDim
        precondition(step.plan.rows * stride <= qkv.count)
        try kernels.launch(fRope, name: "rope_store_kv", grid: (step.plan.rows, 1, 1), threads: 256,
                           [.pointer(qkv.address), .int(Int32(stride)), .int(Int32(heads)), .int(Int32(kvHeads)), .int(Int32(headDim)),
                            .pointer(step.positions), .pointer(step.frequencies), .pointer(step.frequencySet),
                            .pointer(cache.keys[layer].address), .pointer(cache.values[layer].address), .pointer(step.slots)])
    }

    public func attention(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, out: CUDABuffer, heads: Int,
                          kvHeads: Int, headDim: Int, scale: Float, window: Int) throws {
        guard headDim <= 256 else { throw BackendError.unsupported("CUDA attention supports head dimensions up to 256, got \(headDim)") }
        guard heads % kvHeads == 0 else { throw BackendError.unsupported("\(heads) query heads are not a multiple of \(kvHeads) KV heads") }
        let stride = (heads + 2 * kvHeads) * headDim
        let common: [KernelArgument] = [
            .pointer(qkv.address), .int(Int32(stride)), .pointer(cache.keys[layer].address), .pointer(cache.values[layer].address),
            .int(Int32(kvHeads * headDim)), .int(Int32(step.plan.blockSize)), .pointer(step.positions), .pointer(step.rowTables),
            .pointer(step.tables), .pointer(out.address), .int(Int32(heads * headDim)), .int(Int32(heads)), .int(Int32(kvHeads)),
            .int(Int32(headDim)), .float(scale), .int(Int32(window)),
        ]
        guard headDim == 64 || headDim == 128 else {
            // Other head sizes: the generic kernel, one block per row and head.
            try kernels.launch(fAttention, name: "attention", grid: (heads, step.plan.rows, 1), threads: 128, common)
            return
        }
        let wide = headDim == 128
        if step.decodeRowCount > 0 {
            try kernels.launch(wide ? fAttention128 : fAttention64, name: "attention_d\(headDim)",
                               grid: (heads, step.decodeRowCount, 1), threads: 128, common + [.pointer(step.decodeRows)])
        }
        if step.tileTotal > 0 {
            try kernels.launch(wide ? fTiles128 : fTiles64, name: "attention_tiles_d\(headDim)",
                               grid: (heads, step.tileTotal, 1), threads: 128, common + [.pointer(step.tileFirst), .pointer(step.tileCount)])
        }
    }

    public func siluMul(_ gateUp: CUDABuffer, rows: Int, inter: Int, out: CUDABuffer) throws {
        try kernels.launch(fSiluMul, name: "silu_mul", grid: (blocks(rows * inter), 1, 1), threads: 256,
                           [.pointer(gateUp.address), .pointer(out.address), .int(Int32(rows)), .int(Int32(inter))])
    }

    public func add(_ y: CUDABuffer, _ x: CUDABuffer, count: Int) throws {
        try kernels.launch(fAdd, name: "add", grid: (blocks(count), 1, 1), threads: 256, [.pointer(y.address), .pointer(x.address), .long(Int64(count))])
    }

    public func gatherLogitRows(_ x: CUDABuffer, step: CUDAStep, width: Int, out: CUDABuffer) throws {
        try kernels.launch(fGather, name: "gather_rows", grid: (step.plan.logitRows.count, 1, 1), threads: 256,
                           [.pointer(x.address), .pointer(step.logitRows), .int(Int32(width)), .pointer(out.address)])
    }
}
