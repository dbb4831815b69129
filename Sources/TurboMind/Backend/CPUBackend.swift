// The CPU backend: activations in 64-byte aligned host memory, weights left in their stored
// precision (mmapped bf16/fp16/fp32) and widened inside the CKernels loops, the KV cache in fp16
// (or fp32, or int8 with per-head scale and zero point) host memory.
import CKernels
import Foundation

/// Host memory of one element type. Large buffers come from anonymous mmap, so pages nobody
/// touches (the tail of a logits buffer sized for the worst case) cost no resident memory.
public final class CPUBuffer: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    let type: ElementType
    let count: Int
    private let mapped: Int   // bytes mapped with mmap, 0 for heap

    init(type: ElementType, count: Int) throws {
        let bytes = max(count, 1) * type.byteSize
        if bytes >= 1 << 20 {
            guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
                throw BackendError.outOfMemory(what: "a CPU buffer", bytes: bytes, free: CPUBackend.hostMemory().free)
            }
            raw = p
            mapped = bytes
        } else {
            raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            mapped = 0
        }
        self.type = type
        self.count = count
    }

    var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }

    deinit {
        if mapped > 0 { munmap(raw, mapped) } else { raw.deallocate() }
    }
}

/// A linear layer's weights as the CPU kernels read them: the stored bytes (a fused layer's parts
/// copied once into one owned matrix), or for AWQ W4A16 the 4-bit weights repacked into the
/// kernels' layout (ck_int4.h: `tensor` the packed nibbles [rows][columns/2], `scalesZeros` the fp16
/// (scale, zero) pairs per group in tiles of 16 rows); never a dequantized copy.
public struct CPULinear: @unchecked Sendable {
    let tensor: TensorView
    let rows: Int
    let columns: Int
    let type: ck_dtype
    var scalesZeros: TensorView? = nil
    var groupSize = 0
    /// int8 rows (`type` CK_I8): fp32 [rows], w = scale · q.
    var rowScales: TensorView? = nil
    var base: UnsafeRawPointer { tensor.data.baseAddress! }
    /// Bytes the kernels read for one pass over the weights.
    public var byteCount: Int { tensor.data.count + (scalesZeros?.data.count ?? 0) + (rowScales?.data.count ?? 0) }
}

/// The paged KV cache in host memory: per layer one K and one V region of
/// [blockCount][blockSize][kvHeads × headDim] elements.
public final class CPUKVCache: @unchecked Sendable {
    public let layout: KVCacheLayout
    let keys: [CPUBuffer]
    let values: [CPUBuffer]
    let type: ck_dtype
    /// int8: fp32 [layers][kvHeads][k_scale, k_zero, v_scale, v_zero]; else nil.
    let quantParameters: CPUBuffer?

    init(layout: KVCacheLayout, quantParameters: KVQuantParameters?) throws {
        self.layout = layout
        let elements = layout.blockCount * layout.blockSize * layout.rowWidth
        let element: ElementType
        switch layout.type {
        case .f32: (element, type) = (.f32, CK_F32)
        case .f16: (element, type) = (.f16, CK_F16)
        case .int8: (element, type) = (.i8, CK_I8)
        }
        keys = try (0..<layout.layers).map { _ in try CPUBuffer(type: element, count: elements) }
        values = try (0..<layout.layers).map { _ in try CPUBuffer(type: element, count: elements) }
        if let p = quantParameters {
            let b = try CPUBuffer(type: .f32, count: p.values.count)
            p.values.withUnsafeBufferPointer { b.floats.update(from: $0.baseAddress!, count: p.values.count) }
            self.quantParameters = b
        } else {
            self.quantParameters = nil
        }
    }

    /// Layer `layer`'s [kvHeads][4] quantization parameters.
    func parameters(layer: Int) -> UnsafePointer<Float> { UnsafePointer(quantParameters!.floats + layer * layout.kvHeads * 4) }
    var int8: Bool { layout.type == .int8 }
}

/// A step's plan with every array at a stable address for the kernels: the attention descriptors
/// point into the block tables, built once per step rather than once per layer.
public final class CPUStep: @unchecked Sendable {
    public let plan: BatchPlan
    let tokens: UnsafeMutableBufferPointer<Int32>
    let positions: UnsafeMutableBufferPointer<Int32>
    let slots: UnsafeMutableBufferPointer<Int32>
    let tables: UnsafeMutableBufferPointer<Int32>
    let logitRows: UnsafeMutableBufferPointer<Int32>
    let frequencies: UnsafeMutableBufferPointer<Float>
    let frequencySet: UnsafeMutableBufferPointer<Int32>?
    let descriptors: UnsafeMutableBufferPointer<ck_attn_seq>

    init(plan: BatchPlan) {
        self.plan = plan
        func copy<T>(_ a: [T]) -> UnsafeMutableBufferPointer<T> {
            let p = UnsafeMutableBufferPointer<T>.allocate(capacity: max(a.count, 1))
            _ = p.initialize(from: a)
            return p
        }
        tokens = copy(plan.tokens)
        positions = copy(plan.positions)
        slots = copy(plan.slots)
        tables = copy(plan.blockTables)
        logitRows = copy(plan.logitRows)
        frequencies = copy(plan.frequencies)
        frequencySet = plan.frequencySet.map(copy)
        let base = tables.baseAddress!
        descriptors = copy(plan.sequences.map { s in
            ck_attn_seq(q_row: Int32(s.queryRow), tokens: Int32(s.tokens), start: Int32(s.start), blocks: base + s.tableOffset)
        })
    }

    deinit {
        tokens.deallocate()
        positions.deallocate()
        slots.deallocate()
        tables.deallocate()
        logitRows.deallocate()
        frequencies.deallocate()
        frequencySet?.deallocate()
        descriptors.deallocate()
    }
}

public final class CPUBackend: Backend, @unchecked Sendable {
    public typealias Buffer = CPUBuffer
    public typealias Linear = CPULinear
    public typealias KVCache = CPUKVCache
    public typealias Step = CPUStep

    /// Prefill products against bf16 weights round their inputs to bf16 (`--dtype bfloat16`).
    public let bf16Inputs: Bool

    /// Starts the kernel thread pool with `threads` threads (0 = all cores this process may use).
    public init(threads: Int = 0, dtype: ComputeDType = .auto) {
        ck_init(Int32(threads))
        bf16Inputs = dtype.cpuBF16Inputs
    }

    public var description: String {
        "CPU (\(String(cString: ck_isa()))\(bf16Inputs ? (ck_gemm_use_dpbf16(-1) != 0 ? ", bf16 prefill on avx512_bf16" : ", bf16 prefill inputs") : ""), \(ck_threads()) threads)"
    }

    public func memoryInfo() -> MemoryInfo { CPUBackend.hostMemory() }

    /// MemAvailable and MemTotal from /proc/meminfo; physical memory elsewhere.
    static func hostMemory() -> MemoryInfo {
        var free = 0, total = 0
        if let info = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) {
            for line in info.split(separator: "\n") {
                let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
                if line.hasPrefix("MemAvailable:") { free = kb * 1024 }
                if line.hasPrefix("MemTotal:") { total = kb * 1024 }
            }
        }
        if total == 0 { total = Int(ProcessInfo.processInfo.physicalMemory) }
        if free == 0 { free = total }
        return MemoryInfo(free: free, total: total)
    }

    public func allocate(_ type: ElementType, count: Int) throws -> CPUBuffer {
        try CPUBuffer(type: type, count: count)
    }

    public func upload(_ values: [Float]) throws -> CPUBuffer {
        let b = try CPUBuffer(type: .f32, count: values.count)
        values.withUnsafeBufferPointer { b.floats.update(from: $0.baseAddress!, count: values.count) }
        return b
    }

    public func download(_ buffer: CPUBuffer, count: Int) throws -> [Float] {
        precondition(buffer.type == .f32, "download of a \(buffer.type) buffer")
        return Array(UnsafeBufferPointer(start: buffer.floats, count: min(count, buffer.count)))
    }

    public func prepare(linear: LinearWeights) throws -> CPULinear {
        switch linear {
        case let .awq(w):
            return try CPUBackend.repack(w)
        case let .int8Rows(t):
            return try CPUBackend.quantizeRows(t)
        case let .dense(parts):
            guard let first = parts.first else { throw BackendError.unsupported("a linear layer with no weights") }
            for t in parts {
                guard t.shape.count == 2, t.shape[1] == first.shape[1], t.dtype == first.dtype else {
                    throw FormatError.shapeMismatch(file: "weights", tensor: t.name, expected: [t.shape.first ?? 0, first.shape.last ?? 0],
                                                    actual: t.shape)
                }
            }
            let type = try CPUBackend.weightType(first)
            let tensor: TensorView
            if parts.count == 1 {
                tensor = first   // mmapped bytes, read in place at any byte offset
            } else {
                // Row-major [out][in]: stacking along `out` is the parts' bytes one after another.
                let rows = parts.reduce(0) { $0 + $1.shape[0] }
                tensor = TensorView(name: linear.name, dtype: first.dtype, shape: [rows, first.shape[1]]) { dst in
                    var offset = 0
                    for t in parts {
                        UnsafeMutableRawBufferPointer(rebasing: dst[offset..<offset + t.data.count]).copyMemory(from: t.data)
                        offset += t.data.count
                    }
                }
            }
            return CPULinear(tensor: tensor, rows: tensor.shape[0], columns: tensor.shape[1], type: type)
        }
    }

    /// The kernels' type for a stored weight matrix (bf16, fp16 or fp32).
    static func weightType(_ t: TensorView) throws -> ck_dtype {
        switch t.dtype {
        case .bf16: return CK_BF16
        case .f16: return CK_F16
        case .f32: return CK_F32
        default: throw FormatError.unsupportedDType(file: "weights", tensor: t.name, dtype: t.dtype, supported: DType.weightTypes)
        }
    }

    /// A dense matrix as int8 rows: q = round(w / s), s = max|w| / 127 per row. Owned memory (the
    /// source stays mapped, and for a tied head is still the embedding table).
    static func quantizeRows(_ t: TensorView) throws -> CPULinear {
        guard t.shape.count == 2 else {
            throw FormatError.shapeMismatch(file: "weights", tensor: t.name, expected: [t.shape.first ?? 0, 0], actual: t.shape)
        }
        let type = try weightType(t)
        let (n, k) = (t.shape[0], t.shape[1])
        var scales = [Float](repeating: 0, count: n)
        let codes = TensorView(name: t.name, dtype: .i8, shape: [n, k]) { dst in
            ck_quantize_rows_i8(t.data.baseAddress!, type, Int32(n), Int32(k), dst.baseAddress!.assumingMemoryBound(to: Int8.self), &scales)
        }
        let scaleView = TensorView(name: t.name + ".scales", dtype: .f32, shape: [n]) { dst in
            scales.withUnsafeBytes { dst.copyMemory(from: $0) }
        }
        return CPULinear(tensor: codes, rows: n, columns: k, type: CK_I8, rowScales: scaleView)
    }

    /// AWQ weights (AutoAWQ layout) repacked for the W4A16 kernels: nibbles row-major per output,
    /// (scale, zero) pairs per group in tiles of 16 rows. 4-bit sized; nothing is dequantized.
    static func repack(_ w: AWQWeights) throws -> CPULinear {
        let (n, k, g) = (w.outFeatures, w.inFeatures, w.groupSize)
        guard g > 0, g % 32 == 0, k % g == 0, n % 8 == 0 else {
            throw BackendError.unsupported("\(w.qweight.name): the W4A16 kernels need a group size that is a multiple of 32 and divides the \(k) input features, and a multiple of 8 outputs (group size \(g), \(n) outputs)")
        }
        let groups = k / g
        let packed = TensorView(name: w.qweight.name, dtype: .u8, shape: [n, k / 2]) { dst in
            ck_q4_repack_awq(w.qweight.data.baseAddress!.assumingMemoryBound(to: Int32.self), Int32(k), Int32(n),
                             dst.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        // ck_int4.h's tiles of 16 rows (the last padded with zeros): one vector load per group for 16 rows.
        let tiles = (n + 15) / 16
        let pairs = TensorView(name: w.scales.name, dtype: .f16, shape: [tiles, groups, 16, 2]) { dst in
            dst.initializeMemory(as: UInt8.self, repeating: 0)
            let out = dst.baseAddress!.assumingMemoryBound(to: UInt16.self)
            let zeros = w.qzeros.data, scales = w.scales.data
            // fp16 bit patterns of the zero points 0...15.
            let zeroBits = (0..<16).map { Float16(Float($0)).bitPattern }
            for group in 0..<groups {
                for c in 0..<(n / 8) {
                    let word = zeros.loadUnaligned(fromByteOffset: (group * (n / 8) + c) * 4, as: UInt32.self)
                    for slot in 0..<8 {
                        let row = 8 * c + AWQPacking.order[slot]
                        let pair = (((row / 16) * groups + group) * 16 + row % 16) * 2
                        out[pair] = scales.loadUnaligned(fromByteOffset: (group * n + row) * 2, as: UInt16.self)
                        out[pair + 1] = zeroBits[Int((word >> (4 * UInt32(slot))) & 15)]
                    }
                }
            }
        }
        return CPULinear(tensor: packed, rows: n, columns: k, type: CK_F16, scalesZeros: pairs, groupSize: g)
    }

    public func makeKVCache(_ layout: KVCacheLayout, quantParameters: KVQuantParameters?) throws -> CPUKVCache {
        let parameters = try layout.quantParameters(quantParameters)
        let free = memoryInfo().free
        guard layout.byteCount <= free else {
            throw BackendError.outOfMemory(what: "the KV cache (\(layout.blockCount) blocks of \(layout.blockSize) tokens)",
                                           bytes: layout.byteCount, free: free)
        }
        return try CPUKVCache(layout: layout, quantParameters: parameters)
    }

    public func upload(plan: BatchPlan) throws -> CPUStep { CPUStep(plan: plan) }

    public func embed(_ table: CPULinear, step: CPUStep, out: CPUBuffer) throws {
        precondition(step.plan.rows * table.columns <= out.count)
        ck_gather_rows(table.base, table.type, Int32(table.columns), step.tokens.baseAddress, Int32(step.plan.rows), out.floats)
    }

    public func linear(_ x: CPUBuffer, rows: Int, weight: CPULinear, bias: CPUBuffer?, out: CPUBuffer, mode: LinearMode) throws {
        product(x, rows: rows, weight: weight, bias: bias, out: out, mode: mode, post: nil)
    }

    /// The decode kernels add into the residual stream piece by piece as they finish rows.
    public func linearAdd(_ x: CPUBuffer, rows: Int, weight: CPULinear, bias: CPUBuffer?, into y: CPUBuffer, width: Int,
                          scratch: CPUBuffer, mode: LinearMode) throws {
        precondition(rows * width <= y.count && weight.rows == width)
        if !product(x, rows: rows, weight: weight, bias: bias, out: scratch, mode: mode, post: ck_post(kind: CK_POST_ADD, y: y.floats, inter: 0)) {
            ck_add(y.floats, scratch.floats, rows * width)
        }
    }

    /// The decode kernels apply SwiGLU to each piece of gate/up rows as they finish it.
    public func linearSiluMul(_ x: CPUBuffer, rows: Int, weight: CPULinear, scratch: CPUBuffer, inter: Int, out: CPUBuffer,
                              mode: LinearMode) throws {
        precondition(weight.rows == 2 * inter && rows * inter <= out.count)
        if !product(x, rows: rows, weight: weight, bias: nil, out: scratch, mode: mode,
                    post: ck_post(kind: CK_POST_SILU_MUL, y: out.floats, inter: Int32(inter))) {
            ck_silu_mul_rows(scratch.floats, out.floats, Int32(rows), Int32(inter))
        }
    }

    /// out = x · Wᵀ (+ bias); returns whether `post` ran too (the decode kernels run it, the prefill
    /// GEMMs leave it to the caller).
    @discardableResult
    private func product(_ x: CPUBuffer, rows: Int, weight: CPULinear, bias: CPUBuffer?, out: CPUBuffer, mode: LinearMode,
                         post: ck_post?) -> Bool {
        precondition(rows * weight.columns <= x.count && rows * weight.rows <= out.count, "linear \(weight.tensor.name): buffers too small")
        let b = bias.map { UnsafePointer($0.floats) }
        // Below a handful of rows the GEMV kernels stream weights once and win; above, the GEMMs do.
        let decode = mode == .decode || rows < 8
        return withUnsafePointer(to: post ?? ck_post()) { postPointer in
            let p = post == nil ? nil : postPointer
            if let scales = weight.rowScales {   // int8 rows: one kernel for every row count (batch-invariant)
                ck_matmul_i8_post(weight.base.assumingMemoryBound(to: Int8.self), scales.data.baseAddress!.assumingMemoryBound(to: Float.self),
                                  x.floats, out.floats, Int32(rows), Int32(weight.rows), Int32(weight.columns), b, p)
                return true
            }
            if let sz = weight.scalesZeros {
                let packed = weight.base.assumingMemoryBound(to: UInt8.self)
                let pairs = sz.data.baseAddress!.assumingMemoryBound(to: UInt16.self)
                if decode {
                    ck_matmul_q4_post(packed, pairs, Int32(weight.groupSize), x.floats, out.floats, Int32(rows), Int32(weight.rows),
                                      Int32(weight.columns), b, p)
                    return true
                }
                ck_gemm_q4(packed, pairs, Int32(weight.groupSize), x.floats, out.floats, Int32(rows), Int32(weight.rows), Int32(weight.columns), b)
                return false
            }
            if decode {
                ck_matmul_wt_post(weight.base, weight.type, x.floats, out.floats, Int32(rows), Int32(weight.rows), Int32(weight.columns), b, p)
                return true
            }
            if bf16Inputs && weight.type == CK_BF16 {
                ck_gemm_bf16x(weight.base, weight.type, x.floats, out.floats, Int32(rows), Int32(weight.rows), Int32(weight.columns), b)
            } else {
                ck_gemm_wt(weight.base, weight.type, x.floats, out.floats, Int32(rows), Int32(weight.rows), Int32(weight.columns), b)
            }
            return false
        }
    }

    public func rmsNorm(_ x: CPUBuffer, weight: CPUBuffer, out: CPUBuffer, rows: Int, dim: Int, eps: Float) throws {
        ck_rmsnorm(x.floats, weight.floats, out.floats, Int32(rows), Int32(dim), eps)
    }

    public func ropeAndStoreKV(_ qkv: CPUBuffer, step: CPUStep, cache: CPUKVCache, layer: Int, heads: Int, kvHeads: Int,
                               headDim: Int) throws {
        let stride = (heads + 2 * kvHeads) * headDim
        precondition(step.plan.rows * stride <= qkv.count)
        if cache.int8 {
            ck_rope_store_kv_i8(qkv.floats, Int32(step.plan.rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(headDim),
                                step.positions.baseAddress, step.frequencies.baseAddress, step.frequencySet?.baseAddress,
                                cache.keys[layer].raw.assumingMemoryBound(to: Int8.self), cache.values[layer].raw.assumingMemoryBound(to: Int8.self),
                                cache.parameters(layer: layer), step.slots.baseAddress)
            return
        }
        ck_rope_store_kv(qkv.floats, Int32(step.plan.rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(headDim),
                         step.positions.baseAddress, step.frequencies.baseAddress, step.frequencySet?.baseAddress,
                         cache.keys[layer].raw, cache.values[layer].raw, cache.type, step.slots.baseAddress)
    }

    public func attention(_ qkv: CPUBuffer, step: CPUStep, cache: CPUKVCache, layer: Int, out: CPUBuffer, heads: Int,
                          kvHeads: Int, headDim: Int, scale: Float, window: Int) throws {
        let stride = (heads + 2 * kvHeads) * headDim
        if cache.int8 {
            ck_attention_paged_i8(qkv.floats, Int32(stride), cache.keys[layer].raw.assumingMemoryBound(to: Int8.self),
                                  cache.values[layer].raw.assumingMemoryBound(to: Int8.self), cache.parameters(layer: layer),
                                  Int32(kvHeads * headDim), Int32(step.plan.blockSize), step.descriptors.baseAddress,
                                  Int32(step.plan.sequences.count), out.floats, Int32(heads * headDim), Int32(heads), Int32(kvHeads),
                                  Int32(headDim), scale, Int32(window))
            return
        }
        ck_attention_paged(qkv.floats, Int32(stride), cache.keys[layer].raw, cache.values[layer].raw, cache.type,
                           Int32(kvHeads * headDim), Int32(step.plan.blockSize), step.descriptors.baseAddress,
                           Int32(step.plan.sequences.count), out.floats, Int32(heads * headDim), Int32(heads), Int32(kvHeads),
                           Int32(headDim), scale, Int32(window))
    }

    public func siluMul(_ gateUp: CPUBuffer, rows: Int, inter: Int, out: CPUBuffer) throws {
        ck_silu_mul_rows(gateUp.floats, out.floats, Int32(rows), Int32(inter))
    }

    public func add(_ y: CPUBuffer, _ x: CPUBuffer, count: Int) throws {
        ck_add(y.floats, x.floats, count)
    }

    public func gatherLogitRows(_ x: CPUBuffer, step: CPUStep, width: Int, out: CPUBuffer) throws {
        for (i, r) in step.plan.logitRows.enumerated() {
            (out.floats + i * width).update(from: x.floats + Int(r) * width, count: width)
        }
    }
}
