// The CUDA backend ([G]): every buffer lives in device memory, ops are enqueued in order on one
// stream, and the host waits only in `download`/`sample`. Activations are fp32 as on the CPU (so
// each op can be checked against CKernels); the ops whose output feeds a linear layer also write
// an fp16 copy, which the GEMMs and the decode GEMV read (no conversion before each linear).
// Weights and the embedding table are fp16 in device memory (bf16/fp32 checkpoints are converted
// on the GPU at load); linear layers are cuBLAS GEMMs with fp16 inputs and fp32 accumulation, or
// our GEMV at ≤ 4 decode rows; the paged KV cache is fp16 or int8 (quant_policy 4). Decode steps are recorded as CUDA graphs
// (one per batch size, model, cache and run state) and replayed; tokens are sampled on the GPU.
import CCUDA
import Foundation

/// Device memory of one element type; freed when the last reference goes.
public final class CUDABuffer: @unchecked Sendable {
    let address: ccuda_ptr
    let type: ElementType
    let count: Int
    var bytes: Int { count * type.byteSize }
    /// The fp16 copy its producer wrote (RMSNorm, SiLU·mul, attention), and whether the last op
    /// that wrote this buffer (in stream order) wrote it.
    var half: CUDABuffer?
    var halfValid = false

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
/// [blockCount][blockSize][kvHeads × headDim] fp16, or int8 codes (quant_policy 4) with the
/// layers' per-head scales and zero points beside them.
public final class CUDAKVCache: @unchecked Sendable {
    public let layout: KVCacheLayout
    let keys: [CUDABuffer]
    let values: [CUDABuffer]
    /// int8: fp32 [layers][kvHeads][k_scale, k_zero, v_scale, v_zero]; else nil.
    let quantParameters: CUDABuffer?
    var int8: Bool { quantParameters != nil }

    init(layout: KVCacheLayout, quantParameters: KVQuantParameters?) throws {
        self.layout = layout
        let elements = layout.blockCount * layout.blockSize * layout.rowWidth
        let element: ElementType = layout.type == .int8 ? .i8 : .f16
        // Never read before written (attention reads only positions < the sequence's length): no memset.
        keys = try (0..<layout.layers).map { _ in try CUDABuffer(type: element, count: elements, zeroed: false) }
        values = try (0..<layout.layers).map { _ in try CUDABuffer(type: element, count: elements, zeroed: false) }
        self.quantParameters = try quantParameters.map { p in
            let b = try CUDABuffer(type: .f32, count: p.values.count, zeroed: false)
            try p.values.withUnsafeBytes { try cudaCheck(ccuda_upload(b.address, $0.baseAddress, $0.count), "uploading the KV quantization parameters") }
            return b
        }
    }

    /// Layer `layer`'s [kvHeads][4] quantization parameters (int8), or 0.
    func parameters(layer: Int) -> ccuda_ptr {
        quantParameters.map { $0.address + ccuda_ptr(layer * layout.kvHeads * 4 * 4) } ?? 0
    }
}

/// A step's plan in device memory: one int32 upload holding every array (and the rotary
/// frequencies' bits), with each array's address. The block tables come last, so a decode step's
/// other arrays sit at offsets fixed by its row count: a recorded graph keeps one buffer per shape
/// and each replay uploads the new plan into it.
public final class CUDAStep: @unchecked Sendable {
    public let plan: BatchPlan
    let packed: [Int32]
    let offsets: [Int]
    private var buffer: CUDABuffer?
    private(set) var base: ccuda_ptr = 0
    var tokens: ccuda_ptr { at(0) }
    var positions: ccuda_ptr { at(1) }
    var slots: ccuda_ptr { at(2) }
    var rowTables: ccuda_ptr { at(3) }
    var logitRows: ccuda_ptr { at(4) }
    var frequencies: ccuda_ptr { at(5) }
    var frequencySet: ccuda_ptr { plan.frequencySet == nil ? 0 : at(6) }   // 0 when every row uses set 0
    /// Attention's work split: rows of one-token sequences (one block per row and head, keys split
    /// across warps), and tiles of up to 16 consecutive rows of longer ones (K/V shared per tile).
    var decodeRows: ccuda_ptr { at(7) }
    var tileFirst: ccuda_ptr { at(8) }
    var tileCount: ccuda_ptr { at(9) }
    /// The same rows in tiles of up to 64, for the tensor-core prefill kernel.
    var wideFirst: ccuda_ptr { at(10) }
    var wideCount: ccuda_ptr { at(11) }
    var tables: ccuda_ptr { at(12) }
    let decodeRowCount, tileTotal, wideTotal: Int
    static let tileRows = 16, wideRows = 64

    private func at(_ i: Int) -> ccuda_ptr {
        precondition(base != 0, "a step plan used before its upload")
        return base + ccuda_ptr(offsets[i] * 4)
    }

    /// Packs the plan; `upload` false leaves the device copy to `bind` (a graph's buffer).
    init(plan: BatchPlan, upload: Bool) throws {
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
        append(tableOf)
        append(plan.logitRows)
        append(plan.frequencies.map { Int32(bitPattern: $0.bitPattern) })
        append(plan.frequencySet ?? [])
        var decode: [Int32] = [], firsts: [Int32] = [], counts: [Int32] = [], wideFirsts: [Int32] = [], wideCounts: [Int32] = []
        for s in plan.sequences {
            if s.tokens == 1 {
                decode.append(Int32(s.queryRow))
                continue
            }
            for start in stride(from: 0, to: s.tokens, by: Self.tileRows) {
                firsts.append(Int32(s.queryRow + start))
                counts.append(Int32(min(Self.tileRows, s.tokens - start)))
            }
            for start in stride(from: 0, to: s.tokens, by: Self.wideRows) {
                wideFirsts.append(Int32(s.queryRow + start))
                wideCounts.append(Int32(min(Self.wideRows, s.tokens - start)))
            }
        }
        append(decode)
        append(firsts)
        append(counts)
        append(wideFirsts)
        append(wideCounts)
        append(plan.blockTables)
        decodeRowCount = decode.count
        tileTotal = firsts.count
        wideTotal = wideFirsts.count
        self.packed = packed
        self.offsets = offsets
        if upload {
            let buffer = try CUDABuffer(type: .i32, count: packed.count, zeroed: false)
            try bind(buffer)
            self.buffer = buffer
        }
    }

    /// Uploads the plan into `buffer` (large enough) and points the arrays there.
    func bind(_ buffer: CUDABuffer) throws {
        precondition(buffer.count >= packed.count)
        try packed.withUnsafeBytes { try cudaCheck(ccuda_upload(buffer.address, $0.baseAddress, $0.count), "uploading a step plan") }
        base = buffer.address
    }

    /// Uploads into a buffer of its own when not bound yet (a decode plan used outside a replay).
    func ensureUploaded() throws {
        guard base == 0 else { return }
        let buffer = try CUDABuffer(type: .i32, count: packed.count, zeroed: false)
        try bind(buffer)
        self.buffer = buffer
    }

    /// Whether the step can be recorded and replayed: decode rows only, the model's own rotary
    /// frequencies (dynamic NTK sets change the plan's layout), decode-mode logits.
    var replayable: Bool { plan.mode == .decode && plan.logitsMode == .decode && plan.frequencySet == nil }
}

/// A recorded decode step: the graph, the plan buffer it reads, and what it was recorded over.
final class CUDAGraph {
    let exec: UnsafeMutableRawPointer
    let planBuffer: CUDABuffer
    let offsets: [Int]
    let scratchGeneration: Int
    private let owners: [Weak]

    struct Weak {
        weak var object: AnyObject?
    }

    init(exec: UnsafeMutableRawPointer, planBuffer: CUDABuffer, offsets: [Int], scratchGeneration: Int, owners: [AnyObject]) {
        self.exec = exec
        self.planBuffer = planBuffer
        self.offsets = offsets
        self.scratchGeneration = scratchGeneration
        self.owners = owners.map { Weak(object: $0) }
    }

    /// Still valid for a step over `owners` (the same objects, all alive: memory is never reused
    /// under a graph), with this plan layout and the backend's current scratch.
    func fits(owners: [AnyObject], step: CUDAStep, scratchGeneration: Int) -> Bool {
        guard owners.count == self.owners.count, scratchGeneration == self.scratchGeneration, step.offsets == offsets,
              step.packed.count <= planBuffer.count else { return false }
        return zip(owners, self.owners).allSatisfy { $1.object === $0 }
    }

    /// Whether everything it was recorded over still exists.
    var alive: Bool { owners.allSatisfy { $0.object != nil } }

    deinit { _ = ccuda_graph_destroy(exec) }
}

/// Launch and sync counts and per-kernel GPU time (LMDEPLOY_CUDA_PROFILE=1; graphs off then), printed
/// when the backend goes away: where a step's time goes.
final class CUDAProfile {
    private var events: [UnsafeMutableRawPointer] = []
    private var names: [String] = []
    private var used = 0
    var launches = 0, steps = 0, syncs = 0
    private var total: [String: (count: Int, ms: Double)] = [:]

    /// Records an event after the op `name` was enqueued.
    func mark(_ name: String) {
        launches += 1
        if used == events.count {
            var e: UnsafeMutableRawPointer?
            guard ccuda_event_create(&e) == 0, let e else { return }
            events.append(e)
            names.append("")
        }
        if used == 0 {   // the first op of a batch gets a start event of its own
            _ = ccuda_event_record(events[0])
            names[0] = "(start)"
            used = 1
            mark(name)
            launches -= 1
            return
        }
        _ = ccuda_event_record(events[used])
        names[used] = name
        used += 1
    }

    /// After a sync: attributes the time between consecutive events to the later op.
    func collect() {
        syncs += 1
        guard used > 1 else { used = 0; return }
        for i in 1..<used {
            var ms: Float = 0
            if ccuda_event_elapsed(events[i - 1], events[i], &ms) == 0 {
                total[names[i], default: (0, 0)].count += 1
                total[names[i], default: (0, 0)].ms += Double(ms)
            }
        }
        used = 0
    }

    var report: String {
        let sum = total.values.reduce(0) { $0 + $1.ms }
        var lines = [String(format: "CUDA profile: %d steps, %d launches, %d host syncs, %.1f ms of GPU time between events", steps,
                            launches, syncs, sum)]
        for (name, t) in total.sorted(by: { $0.value.ms > $1.value.ms }) {
            lines.append(String(format: "  %-24@ %8d calls %10.3f ms %6.1f%%  %8.2f us/call", name, t.count, t.ms, 100 * t.ms / max(sum, 1e-9),
                                1000 * t.ms / Double(t.count)))
        }
        return lines.joined(separator: "\n")
    }

    /// Profiles print at exit too: a command may end without releasing its engine.
    private static let registry = NSLock()
    nonisolated(unsafe) private static var live: [CUDAProfile] = []
    nonisolated(unsafe) private static var registered = false

    static func register(_ profile: CUDAProfile) {
        registry.lock()
        defer { registry.unlock() }
        live.append(profile)
        if !registered {
            registered = true
            atexit { CUDAProfile.printAll() }
        }
    }

    static func printAll() {
        registry.lock()
        let all = live
        live.removeAll()
        registry.unlock()
        for p in all where p.launches > 0 { FileHandle.standardError.write(Data((p.report + "\n").utf8)) }
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
    private let fEmbed, fRMSNorm, fRope, fRopeI8, fAttentionI8_64, fAttentionI8_128, fTilesI8_64, fMMAI8_128, fAttention, fAttention64, fAttention128, fRopeAttention64, fRopeAttention128, fMerge64, fMerge128, fTiles64, fTiles128, fGemv, fSiluMul, fSiluMulHalf, fAdd, fAddBias, fGather, fToHalf, fSample, fMMA128: UnsafeMutableRawPointer
    /// The tensor-core decode GEMMs for 1, 2, 4 and 8 tiles of 8 rows.
    private let fSkinnyWarps: [UnsafeMutableRawPointer]    // gemm_skinny_w1, _w2: up to 8 and 16 rows
    private let fSkinnyBlocks: [UnsafeMutableRawPointer]   // gemm_skinny_t4, _t8: up to 32 and 64 rows
    private let fSkinnyMerge, fSkinnyMergeSilu: UnsafeMutableRawPointer
    /// Serialises what shares the backend's scratch (the fp16 copy of a GEMM's input, the pinned
    /// download buffer): engines sharing one model may call from several threads.
    private let lock = NSLock()
    private var halfScratch: CUDABuffer?
    private let pinned = PinnedHostBuffer()
    /// The sampling parameters' pinned staging (queued uploads need pinned memory).
    private let samplePinned = PinnedHostBuffer()
    /// Bumped when the GEMM input scratch moves: graphs recorded over the old one are stale.
    private var scratchGeneration = 0
    /// The sampler's zeroed [rows][vocab] marks.
    private var sampleMarks: CUDABuffer?
    /// The sampler's parameters, penalty ids and output (grown as needed).
    private var sampleStaging: CUDABuffer?
    /// Split-K attention's per-share partial results.
    private var attentionParts: CUDABuffer?
    /// kernels.cu's ATT_COUNTERS.
    static let mergeCounters = 8192
    /// The block-split decode GEMM's split-K shares (more than 16 rows).
    private var skinnyParts: CUDABuffer?
    /// Decode rows the tensor-core GEMM takes (kernels.cu's SK_MAX_ROWS); more go to cuBLAS.
    static let skinnyMaxRows = 64
    /// Which kernel runs decode products: the tensor-core GEMM for 1…64 rows (one kernel, so a row's
    /// bits do not depend on the batch), or (LMDEPLOY_CUDA_DECODE_GEMM=gemv, for comparison) the
    /// CUDA-core GEMV up to 4 rows and cuBLAS above.
    private let decodeUsesSkinny: Bool
    /// Whether decode-only steps rotate q and store the new K/V inside the attention kernel
    /// (LMDEPLOY_CUDA_FUSED_ROPE=0: rope_store_kv then attention, the same bits, for comparison).
    private let fusesRope: Bool
    /// Whether decode products fuse SwiGLU (LMDEPLOY_CUDA_FUSED_SILU=0: the product then silu_mul, the same bits).
    private let fusesSilu: Bool
    /// Whether prefill's gate/up product (cuBLAS) writes fp16 for silu_mul_h, as an fp16 model in
    /// transformers does: half the bytes of its largest output, written and read once
    /// (LMDEPLOY_CUDA_GATEUP_F16=0: fp32, for comparison).
    private let gateUpHalf: Bool
    private var gateUpHalfScratch: CUDABuffer?

    /// Whether decode steps are recorded as CUDA graphs and replayed (LMDEPLOY_CUDA_GRAPHS=0: off).
    public var usesGraphs: Bool
    /// Whether tokens are sampled on the GPU (LMDEPLOY_CUDA_SAMPLING=0: on the host).
    public var samplesOnGPU: Bool
    private var graphs: [GraphKey: CUDAGraph] = [:]
    /// Shapes whose capture failed (they run op by op), with why.
    public private(set) var graphFailures: [String] = []
    /// Graphs recorded and replays launched, for tests and the profile.
    public private(set) var graphsRecorded = 0, graphReplays = 0
    private let profile: CUDAProfile?

    struct GraphKey: Hashable {
        let rows: Int
        let owners: [ObjectIdentifier]
    }

    /// Opens GPU 0, loads NVRTC and cuBLAS and compiles (or loads from the cache) the kernels; a
    /// clear `CUDAError.unavailable` where any of that is missing.
    public init() throws {
        device = try CUDARuntime.openCompute()
        kernels = try CUDARuntime.kernels(arch: device.computeCapability)
        fEmbed = try kernels.function("embed")
        fRMSNorm = try kernels.function("rmsnorm")
        fRope = try kernels.function("rope_store_kv")
        fRopeI8 = try kernels.function("rope_store_kv_i8")
        fAttentionI8_64 = try kernels.function("attention_i8_d64")
        fAttentionI8_128 = try kernels.function("attention_i8_d128")
        fTilesI8_64 = try kernels.function("attention_tiles_i8_d64")
        fMMAI8_128 = try kernels.function("attention_mma_i8_d128")
        fAttention = try kernels.function("attention")
        fAttention64 = try kernels.function("attention_d64")
        fAttention128 = try kernels.function("attention_d128")
        fRopeAttention64 = try kernels.function("attention_rope_d64")
        fRopeAttention128 = try kernels.function("attention_rope_d128")
        fMerge64 = try kernels.function("attention_merge_d64")
        fMerge128 = try kernels.function("attention_merge_d128")
        fTiles64 = try kernels.function("attention_tiles_d64")
        fTiles128 = try kernels.function("attention_tiles_d128")
        fGemv = try kernels.function("gemv_f16")
        fSiluMul = try kernels.function("silu_mul")
        fSiluMulHalf = try kernels.function("silu_mul_h")
        fAdd = try kernels.function("add")
        fAddBias = try kernels.function("add_bias")
        fGather = try kernels.function("gather_rows")
        fToHalf = try kernels.function("f32_to_f16")
        fSample = try kernels.function("sample_rows")
        fMMA128 = try kernels.function("attention_mma_d128")
        let k = kernels
        fSkinnyWarps = try [1, 2].map { try k.function("gemm_skinny_w\($0)") }
        fSkinnyBlocks = try [4, 8].map { try k.function("gemm_skinny_t\($0)") }
        fSkinnyMerge = try kernels.function("gemm_skinny_merge")
        fSkinnyMergeSilu = try kernels.function("gemm_skinny_merge_silu")
        let env = ProcessInfo.processInfo.environment
        switch env["LMDEPLOY_CUDA_DECODE_GEMM"] ?? "mma" {
        case "mma", "": decodeUsesSkinny = true
        case "gemv": decodeUsesSkinny = false
        case let other: throw CUDAError.failed("LMDEPLOY_CUDA_DECODE_GEMM is 'mma' (the default) or 'gemv', got '\(other)'")
        }
        fusesRope = env["LMDEPLOY_CUDA_FUSED_ROPE"] != "0"
        fusesSilu = env["LMDEPLOY_CUDA_FUSED_SILU"] != "0"
        gateUpHalf = env["LMDEPLOY_CUDA_GATEUP_F16"] != "0"
        profile = env["LMDEPLOY_CUDA_PROFILE"].map { $0 != "0" && !$0.isEmpty } == true ? CUDAProfile() : nil
        usesGraphs = env["LMDEPLOY_CUDA_GRAPHS"] != "0" && profile == nil
        if let profile { CUDAProfile.register(profile) }
        samplesOnGPU = env["LMDEPLOY_CUDA_SAMPLING"] != "0"
    }

    deinit {
        graphs.removeAll()
    }

    /// Every op enqueues under this lock: a graph being recorded must see only its own step's ops.
    private static let stream = NSRecursiveLock()

    @inline(__always) private func enqueue<T>(_ name: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
        Self.stream.lock()
        defer { Self.stream.unlock() }
        let r = try body()
        if let profile { profile.mark(name()) }
        return r
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
        Self.stream.lock()
        defer { Self.stream.unlock() }
        lock.lock()
        defer { lock.unlock() }
        try fetch(buffer.address, bytes: n * 4)
        return Array(UnsafeBufferPointer(start: pinned.address!.assumingMemoryBound(to: Float.self), count: n))
    }

    /// Waits for the stream and copies `bytes` from `address` into the pinned buffer (under `lock`).
    private func fetch(_ address: ccuda_ptr, bytes: Int) throws {
        try cudaCheck(ccuda_download(try pinned.reserve(bytes), address, bytes))
        profile?.collect()
    }

    public func prepare(linear: LinearWeights) throws -> CUDALinear {
        switch linear {
        case let .awq(w):
            throw BackendError.unsupported("\(w.qweight.name): AWQ int4 weights (W4A16) are not supported by the CUDA backend yet")
        case let .int8Rows(t):
            throw BackendError.unsupported("\(t.name): an int8 LM head (--lm-head-dtype int8) is not supported by the CUDA backend yet; leave --lm-head-dtype at auto")
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
        guard layout.type != .f32 else {
            throw BackendError.unsupported("the CUDA backend keeps the KV cache in fp16 or int8 (quant_policy 4); an fp32 KV cache "
                                           + "(exactness tests) is not supported on it")
        }
        let parameters = try layout.quantParameters(quantParameters)
        if parameters != nil && layout.headDim != 64 && layout.headDim != 128 {
            throw BackendError.unsupported("an int8 KV cache (quant_policy 4) on CUDA needs head size 64 or 128; this model's is "
                                           + "\(layout.headDim) (use the fp16 cache, quant_policy 0, or --device cpu)")
        }
        let free = memoryInfo().free
        guard layout.byteCount <= free else {
            throw BackendError.outOfMemory(what: "the KV cache (\(layout.blockCount) blocks of \(layout.blockSize) tokens)",
                                           bytes: layout.byteCount, free: free)
        }
        return try CUDAKVCache(layout: layout, quantParameters: parameters)
    }

    public func upload(plan: BatchPlan) throws -> CUDAStep {
        // A replayable plan waits for `replaying` to put it in its graph's buffer.
        let step = try CUDAStep(plan: plan, upload: false)
        if !(usesGraphs && step.replayable) { try step.ensureUploaded() }
        profile?.steps += 1
        return step
    }

    /// The fp16 copy of `buffer` (allocated at its first producer), marked as written.
    private func halfCopy(_ buffer: CUDABuffer) throws -> ccuda_ptr {
        if buffer.half == nil { buffer.half = try CUDABuffer(type: .f16, count: buffer.count, zeroed: false) }
        buffer.halfValid = true
        return buffer.half!.address
    }

    public func embed(_ table: CUDALinear, step: CUDAStep, out: CUDABuffer) throws {
        precondition(step.plan.rows * table.columns <= out.count)
        try step.ensureUploaded()
        try enqueue("embed") {
            out.halfValid = false
            try kernels.launch(fEmbed, name: "embed", grid: (step.plan.rows, 1, 1), threads: 1024,
                               [.pointer(table.weight.address), .int(Int32(table.columns)), .pointer(step.tokens), .pointer(out.address)])
        }
    }

    public func linear(_ x: CUDABuffer, rows: Int, weight: CUDALinear, bias: CUDABuffer?, out: CUDABuffer, mode: LinearMode) throws {
        try product(x, rows: rows, weight: weight, bias: bias, out: out, mode: mode, accumulate: false)
    }

    public func linearAdd(_ x: CUDABuffer, rows: Int, weight: CUDALinear, bias: CUDABuffer?, into y: CUDABuffer, width: Int,
                          scratch: CUDABuffer, mode: LinearMode) throws {
        precondition(width == weight.rows, "linearAdd \(weight.name): width \(width) is not the \(weight.rows) outputs")
        if decodeKernel(rows: rows, mode: mode, columns: weight.columns) != .cublas || bias == nil {
            // The decode kernels add into y themselves (out + (x·w + bias), the add kernel's order);
            // cuBLAS with beta 1 (no bias: it would be added after the sum).
            try product(x, rows: rows, weight: weight, bias: bias, out: y, mode: mode, accumulate: true)
        } else {
            try product(x, rows: rows, weight: weight, bias: bias, out: scratch, mode: mode, accumulate: false)
            try add(y, scratch, count: rows * width)
        }
    }

    /// More than 16 decode rows on the tensor-core GEMM with split shares: SwiGLU in the shares' merge
    /// (gemm_skinny_merge_silu), no [rows][2·inter] round trip and no silu_mul launch; the same bits as
    /// the product then siluMul. Elsewhere the two ops.
    public func linearSiluMul(_ x: CUDABuffer, rows: Int, weight: CUDALinear, scratch: CUDABuffer, inter: Int, out: CUDABuffer,
                              mode: LinearMode) throws {
        precondition(weight.rows == 2 * inter, "linearSiluMul \(weight.name): \(weight.rows) rows are not 2 × \(inter)")
        let split = skinnySplit(weight)
        let kernel = decodeKernel(rows: rows, mode: mode, columns: weight.columns)
        if kernel == .cublas && gateUpHalf {
            let gu = try self.scratch(&gateUpHalfScratch, .f16, count: rows * 2 * inter)
            try product(x, rows: rows, weight: weight, bias: nil, out: scratch, mode: mode, accumulate: false, halfOut: gu)
            try swiGLU(fSiluMulHalf, name: "silu_mul_h", gateUp: gu, rows: rows, inter: inter, out: out)
            return
        }
        guard fusesSilu, kernel == .skinny, rows > 16, split > 1 else {
            try product(x, rows: rows, weight: weight, bias: nil, out: scratch, mode: mode, accumulate: false)
            try siluMul(scratch, rows: rows, inter: inter, out: out)
            return
        }
        try product(x, rows: rows, weight: weight, bias: nil, out: out, mode: mode, accumulate: false, siluInter: inter)
    }

    private enum ProductKernel { case skinny, gemv, cublas }

    /// Decode is memory-bound: our kernels stream the weights once (fused bias and add). The
    /// tensor-core GEMM needs k in 64-wide chunks; prefill chunks go to cuBLAS.
    private func decodeKernel(rows: Int, mode: LinearMode, columns: Int) -> ProductKernel {
        guard mode == .decode else { return .cublas }
        if decodeUsesSkinny { return rows <= Self.skinnyMaxRows && columns % 64 == 0 ? .skinny : rows <= 4 ? .gemv : .cublas }
        return rows <= 4 ? .gemv : .cublas
    }

    /// `siluInter` > 0 (skinny only): out = silu(gate) · up [rows][siluInter]. `halfOut` (cuBLAS only,
    /// no bias, no accumulation): the product goes there in fp16 and `out` is left untouched.
    private func product(_ x: CUDABuffer, rows: Int, weight: CUDALinear, bias: CUDABuffer?, out: CUDABuffer, mode: LinearMode,
                         accumulate: Bool, siluInter: Int = 0, halfOut: CUDABuffer? = nil) throws {
        precondition(rows * weight.columns <= x.count && rows * (siluInter > 0 ? siluInter : weight.rows) <= out.count,
                     "linear \(weight.name): buffers too small")
        Self.stream.lock()
        defer { Self.stream.unlock() }
        lock.lock()
        defer { lock.unlock() }
        // The input in fp16: its producer's copy, else converted here into the scratch.
        let xh: ccuda_ptr
        if x.halfValid, let half = x.half {
            xh = half.address
        } else {
            let n = rows * weight.columns
            xh = try scratch(&halfScratch, .f16, count: n).address
            try enqueue("f32_to_f16") {
                try kernels.launch(fToHalf, name: "f32_to_f16", grid: (blocks(n), 1, 1), threads: 256,
                                   [.pointer(x.address), .pointer(xh), .long(Int64(n))])
            }
        }
        out.halfValid = false
        let kernel = decodeKernel(rows: rows, mode: mode, columns: weight.columns)
        if kernel == .skinny {
            try skinny(xh, rows: rows, weight: weight, bias: bias, out: out, accumulate: accumulate, siluInter: siluInter)
            return
        }
        precondition(siluInter == 0, "linear \(weight.name): SwiGLU is fused only into the decode GEMM")
        if kernel == .gemv {
            try enqueue("gemv \(weight.rows)x\(weight.columns)") {
                // Warps per output by n alone (fixed summation order): small matrices split k so the
                // grid fills the GPU (4096 outputs in one warp each were two ragged waves).
                let n = weight.rows
                let split = weight.columns % 8 != 0 ? 1 : n >= 16384 ? 1 : n >= 8192 ? 2 : 4
                let perBlock = 8 / split
                try kernels.launch(fGemv, name: "gemv_f16", grid: ((n + perBlock - 1) / perBlock, 1, 1), threads: 256,
                                   [.pointer(weight.weight.address), .pointer(xh), .pointer(out.address),
                                    .pointer(bias?.address ?? 0), .int(Int32(rows)), .int(Int32(n)), .int(Int32(weight.columns)),
                                    .int(Int32(split)), .int(accumulate ? 1 : 0)])
            }
            return
        }
        precondition(!accumulate || bias == nil, "linear \(weight.name): cuBLAS accumulates without a bias")
        if let halfOut {
            precondition(kernel == .cublas && bias == nil && !accumulate && rows * weight.rows <= halfOut.count,
                         "linear \(weight.name): an fp16 output is cuBLAS's, without bias or accumulation")
            try enqueue("gemm \(weight.rows)x\(weight.columns)") {
                try cudaCheck(ccuda_gemm_f16_out16(weight.weight.address, xh, halfOut.address, Int32(rows), Int32(weight.rows),
                                                   Int32(weight.columns)),
                              "linear \(weight.name)")
            }
            return
        }
        try enqueue("gemm \(weight.rows)x\(weight.columns)") {
            try cudaCheck(ccuda_gemm_f16(weight.weight.address, xh, out.address, Int32(rows), Int32(weight.rows), Int32(weight.columns),
                                         accumulate ? 1 : 0),
                          "linear \(weight.name)")
        }
        if let bias {
            try enqueue("add_bias") {
                try kernels.launch(fAddBias, name: "add_bias", grid: (blocks(rows * weight.rows), 1, 1), threads: 256,
                                   [.pointer(out.address), .pointer(bias.address), .int(Int32(rows)), .int(Int32(weight.rows))])
            }
        }
    }

    /// A scratch buffer of at least `count` elements (allocated with room for `reserve` when it must
    /// grow): a new one moves what recorded graphs read, so it bumps `scratchGeneration`.
    private func scratch(_ slot: inout CUDABuffer?, _ type: ElementType, count: Int, reserve: Int = 0,
                         zeroed: Bool = false) throws -> CUDABuffer {
        if let buffer = slot, buffer.count >= count { return buffer }
        slot = nil
        let buffer = try CUDABuffer(type: type, count: max(count, reserve), zeroed: zeroed)
        slot = buffer
        scratchGeneration += 1
        return buffer
    }

    /// The tensor-core decode GEMM. The split of k depends on the weight's shape alone (about 16 warps
    /// per SM at any batch, at least four 64-wide chunks per share), so a row's sum has one order. Up to
    /// 16 rows one block per 32 features runs the shares as its warps and merges them in shared memory;
    /// more rows run a block per share and `gemm_skinny_merge` (the same sums in the same order).
    /// The decode GEMM's split of k: a function of the weight's shape alone (batch invariance).
    private func skinnySplit(_ weight: CUDALinear) -> Int {
        let columns = (weight.rows + 127) / 128
        return max(1, min(16, 16 * device.multiprocessors / (columns * 4), weight.columns / 256))
    }

    private func skinny(_ xh: ccuda_ptr, rows: Int, weight: CUDALinear, bias: CUDABuffer?, out: CUDABuffer, accumulate: Bool,
                        siluInter inter: Int = 0) throws {
        let n = weight.rows, k = weight.columns
        let columns = (n + 127) / 128
        let split = skinnySplit(weight)
        let tiles = (rows + 7) / 8
        let common: [KernelArgument] = [.pointer(weight.weight.address), .pointer(xh), .pointer(out.address), .pointer(bias?.address ?? 0),
                                        .int(Int32(rows)), .int(Int32(n)), .int(Int32(k)), .int(Int32(split)), .int(accumulate ? 1 : 0)]
        if tiles <= 2 {
            precondition(inter == 0, "gemm_skinny_w: SwiGLU is fused only into the shares' merge")
            try enqueue("gemm_skinny_w \(n)x\(k)") {
                try kernels.launch(fSkinnyWarps[tiles - 1], name: "gemm_skinny_w", grid: ((n + 31) / 32, 1, 1), threads: 32 * split,
                                   shared: split * 8 * tiles * 32 * 4, common)
            }
            return
        }
        precondition(inter == 0 || split > 1, "gemm_skinny: SwiGLU needs the shares' merge")
        let oh = inter > 0 ? try halfCopy(out) : 0
        var part: ccuda_ptr = 0
        if split > 1 {
            // Room for the largest batch at once: regrowing moves the buffer and stales the graphs.
            part = try scratch(&skinnyParts, .f32, count: split * rows * n, reserve: split * Self.skinnyMaxRows * n).address
        }
        try enqueue("gemm_skinny \(n)x\(k)") {
            try kernels.launch(fSkinnyBlocks[tiles <= 4 ? 0 : 1], name: "gemm_skinny", grid: (columns, split, 1), threads: 128,
                               common + [.pointer(part)])
        }
        if inter > 0 {
            try enqueue("gemm_skinny_merge_silu") {
                try kernels.launch(fSkinnyMergeSilu, name: "gemm_skinny_merge_silu",
                                   grid: (min(blocks(rows * inter), 8 * device.multiprocessors), 1, 1), threads: 256,
                                   [.pointer(part), .pointer(out.address), .pointer(oh), .int(Int32(rows)), .int(Int32(inter)),
                                    .int(Int32(split))])
            }
        } else if split > 1 {
            try enqueue("gemm_skinny_merge") {
                try kernels.launch(fSkinnyMerge, name: "gemm_skinny_merge", grid: (min(blocks(rows * n), 8 * device.multiprocessors), 1, 1),
                                   threads: 256,
                                   [.pointer(part), .pointer(out.address), .pointer(bias?.address ?? 0), .int(Int32(rows)), .int(Int32(n)),
                                    .int(Int32(split)), .int(accumulate ? 1 : 0)])
            }
        }
    }

    public func rmsNorm(_ x: CUDABuffer, weight: CUDABuffer, out: CUDABuffer, rows: Int, dim: Int, eps: Float) throws {
        try enqueue("rmsnorm") {
            let oh = try halfCopy(out)
            // 1024 threads: a 4096-wide row in 256 threads took 13 us, latency-bound.
            try kernels.launch(fRMSNorm, name: "rmsnorm", grid: (rows, 1, 1), threads: dim >= 2048 ? 1024 : 256,
                               [.pointer(x.address), .pointer(weight.address), .pointer(out.address), .pointer(oh), .int(Int32(dim)), .float(eps)])
        }
    }

    public func ropeAndStoreKV(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, heads: Int, kvHeads: Int,
                               headDim: Int) throws {
        guard headDim % 2 == 0 else { throw BackendError.unsupported("RoPE needs an even head dimension, got \(headDim)") }
        let stride = (heads + 2 * kvHeads) * headDim
        precondition(step.plan.rows * stride <= qkv.count)
        try step.ensureUploaded()
        try enqueue("rope_store_kv") {
            qkv.halfValid = false
            let perRow = max(1, min(8, (heads + kvHeads) * headDim / 2 / 256))
            let args: [KernelArgument] = [.pointer(qkv.address), .int(Int32(stride)), .int(Int32(heads)), .int(Int32(kvHeads)),
                                          .int(Int32(headDim)), .pointer(step.positions), .pointer(step.frequencies),
                                          .pointer(step.frequencySet), .pointer(cache.keys[layer].address),
                                          .pointer(cache.values[layer].address), .pointer(step.slots)]
            if cache.int8 {
                try kernels.launch(fRopeI8, name: "rope_store_kv_i8", grid: (step.plan.rows, perRow, 1), threads: 256,
                                   args + [.pointer(cache.parameters(layer: layer))])
            } else {
                try kernels.launch(fRope, name: "rope_store_kv", grid: (step.plan.rows, perRow, 1), threads: 256, args)
            }
        }
    }

    public func attention(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, out: CUDABuffer, heads: Int,
                          kvHeads: Int, headDim: Int, scale: Float, window: Int) throws {
        try attention(qkv, step: step, cache: cache, layer: layer, out: out, heads: heads, kvHeads: kvHeads, headDim: headDim,
                      scale: scale, window: window, fuseRope: false)
    }

    /// Decode-only steps of up to 8 rows with head size 64 or 128 and an fp16 cache: one kernel
    /// rotates q, stores the new K/V and attends (no rope_store_kv launch, the same bits). Other steps:
    /// the two ops (at 64 rows the rotation, repeated by each of a row's 8 shares, cost more than the
    /// launch it saves).
    public func ropeAttention(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, out: CUDABuffer, heads: Int,
                              kvHeads: Int, headDim: Int, scale: Float, window: Int) throws {
        let fused = fusesRope && !cache.int8 && step.decodeRowCount == step.plan.rows && step.plan.rows <= 8
            && (headDim == 64 || headDim == 128)
        if !fused {
            try ropeAndStoreKV(qkv, step: step, cache: cache, layer: layer, heads: heads, kvHeads: kvHeads, headDim: headDim)
        }
        try attention(qkv, step: step, cache: cache, layer: layer, out: out, heads: heads, kvHeads: kvHeads, headDim: headDim,
                      scale: scale, window: window, fuseRope: fused)
    }

    private func attention(_ qkv: CUDABuffer, step: CUDAStep, cache: CUDAKVCache, layer: Int, out: CUDABuffer, heads: Int,
                           kvHeads: Int, headDim: Int, scale: Float, window: Int, fuseRope: Bool) throws {
        guard headDim <= 256 else { throw BackendError.unsupported("CUDA attention supports head dimensions up to 256, got \(headDim)") }
        guard heads % kvHeads == 0 else { throw BackendError.unsupported("\(heads) query heads are not a multiple of \(kvHeads) KV heads") }
        try step.ensureUploaded()
        let stride = (heads + 2 * kvHeads) * headDim
        try enqueue(fuseRope ? "rope_attention" : "attention") {
            let oh = try halfCopy(out)
            let common: [KernelArgument] = [
                .pointer(qkv.address), .int(Int32(stride)), .pointer(cache.keys[layer].address), .pointer(cache.values[layer].address),
                .int(Int32(kvHeads * headDim)), .int(Int32(step.plan.blockSize)), .pointer(step.positions), .pointer(step.rowTables),
                .pointer(step.tables), .pointer(out.address), .int(Int32(heads * headDim)), .int(Int32(heads)), .int(Int32(kvHeads)),
                .int(Int32(headDim)), .float(scale), .int(Int32(window)), .pointer(oh),
            ]
            // int8 (head sizes 64 and 128 only, makeKVCache checks): the same kernels on codes, the layer's
            // scales and zero points last.
            let int8 = cache.int8
            let parameters: [KernelArgument] = int8 ? [.pointer(cache.parameters(layer: layer))] : []
            guard headDim == 64 || headDim == 128 else {
                // Other head sizes: the generic kernel, one block per row and head.
                try kernels.launch(fAttention, name: "attention", grid: (heads, step.plan.rows, 1), threads: 128, common)
                return
            }
            let wide = headDim == 128
            if step.decodeRowCount > 0 {
                // Split-K in 8 shares at any batch (a share's keys depend on the row's context alone, so
                // a row computes the same bits alone or among others). The fused kernel (≤ 8 rows)
                // merges them itself, its last share of a (row, head) counting in on one of
                // CUDABackend.mergeCounters counters; the other writes the shares' states and
                // attention_merge_d* merges them (same arithmetic), at any number of rows.
                let rows = step.decodeRowCount
                let splits = fuseRope && rows * heads > Self.mergeCounters ? 1 : 8
                // The counters (zeroed once; the share that merges resets them), then the shares' states.
                let part = try scratch(&attentionParts, .f32, count: Self.mergeCounters + rows * heads * splits * (headDim + 2),
                                       zeroed: true).address
                // Rows 0… in order when every row decodes: no row list (one dependent load less).
                let rowList = rows == step.plan.rows ? 0 : step.decodeRows
                let kernel = int8 ? (wide ? fAttentionI8_128 : fAttentionI8_64)
                    : fuseRope ? (wide ? fRopeAttention128 : fRopeAttention64) : (wide ? fAttention128 : fAttention64)
                try kernels.launch(kernel, name: "\(fuseRope ? "attention_rope" : int8 ? "attention_i8" : "attention")_d\(headDim)",
                                   grid: (heads, rows, splits), threads: 128,
                                   common + [.pointer(rowList), .int(Int32(splits)), .pointer(part), .pointer(step.frequencies),
                                             .pointer(step.frequencySet), .pointer(step.slots)] + parameters)
                if !fuseRope && splits > 1 {
                    try kernels.launch(wide ? fMerge128 : fMerge64, name: "attention_merge_d\(headDim)", grid: (heads, rows, 1),
                                       threads: headDim,
                                       [.pointer(step.positions), .pointer(rowList), .int(Int32(heads)), .int(Int32(window)),
                                        .int(Int32(splits)), .pointer(part), .pointer(out.address), .int(Int32(heads * headDim)),
                                        .pointer(oh)])
                }
            }
            if step.tileTotal > 0 && wide {
                // Head size 128: tensor cores (fp16 q and P, fp32 accumulation and softmax).
                try kernels.launch(int8 ? fMMAI8_128 : fMMA128, name: int8 ? "attention_mma_i8_d128" : "attention_mma_d128",
                                   grid: (heads, step.wideTotal, 1), threads: 128,
                                   common + [.pointer(step.wideFirst), .pointer(step.wideCount)] + parameters)
            } else if step.tileTotal > 0 {
                try kernels.launch(int8 ? fTilesI8_64 : wide ? fTiles128 : fTiles64,
                                   name: int8 ? "attention_tiles_i8_d64" : "attention_tiles_d\(headDim)",
                                   grid: (heads, step.tileTotal, 1), threads: 128,
                                   common + [.pointer(step.tileFirst), .pointer(step.tileCount)] + parameters)
            }
        }
    }

    public func siluMul(_ gateUp: CUDABuffer, rows: Int, inter: Int, out: CUDABuffer) throws {
        try swiGLU(fSiluMul, name: "silu_mul", gateUp: gateUp, rows: rows, inter: inter, out: out)
    }

    /// silu_mul or silu_mul_h (fp32 or fp16 gate/up halves): out and its fp16 copy.
    private func swiGLU(_ function: UnsafeMutableRawPointer, name: String, gateUp: CUDABuffer, rows: Int, inter: Int,
                        out: CUDABuffer) throws {
        try enqueue(name) {
            let oh = try halfCopy(out)
            try kernels.launch(function, name: name, grid: (blocks(rows * inter), 1, 1), threads: 256,
                               [.pointer(gateUp.address), .pointer(out.address), .pointer(oh), .int(Int32(rows)), .int(Int32(inter))])
        }
    }

    public func add(_ y: CUDABuffer, _ x: CUDABuffer, count: Int) throws {
        try enqueue("add") {
            y.halfValid = false
            try kernels.launch(fAdd, name: "add", grid: (blocks(count), 1, 1), threads: 256,
                               [.pointer(y.address), .pointer(x.address), .long(Int64(count))])
        }
    }

    public func gatherLogitRows(_ x: CUDABuffer, step: CUDAStep, width: Int, out: CUDABuffer) throws {
        try step.ensureUploaded()
        try enqueue("gather_rows") {
            out.halfValid = false
            try kernels.launch(fGather, name: "gather_rows", grid: (step.plan.logitRows.count, 1, 1), threads: 1024,
                               [.pointer(x.address), .pointer(step.logitRows), .int(Int32(width)), .pointer(out.address)])
        }
    }

    // MARK: - CUDA graphs

    /// Decode steps: the first step of a shape runs op by op and is then recorded (capture runs
    /// nothing); later steps of that shape upload their plan into the graph's buffer and launch the
    /// graph, one launch instead of ~15 per layer. A capture that fails leaves that shape op by op.
    public func replaying(step: CUDAStep, owners: [AnyObject], _ body: () throws -> Void) throws {
        guard usesGraphs, step.replayable, step.base == 0 else {
            try step.ensureUploaded()
            try body()
            return
        }
        Self.stream.lock()
        defer { Self.stream.unlock() }
        let key = GraphKey(rows: step.plan.rows, owners: owners.map(ObjectIdentifier.init))
        if let graph = graphs[key], graph.fits(owners: owners, step: step, scratchGeneration: scratchGeneration) {
            try step.bind(graph.planBuffer)
            try cudaCheck(ccuda_graph_launch(graph.exec), "launching the decode graph of \(step.plan.rows) rows")
            graphReplays += 1
            return
        }
        graphs = graphs.filter { $0.key != key && $0.value.alive }
        // Room for longer block tables later: the buffer outlives this step.
        let planBuffer = try CUDABuffer(type: .i32, count: step.packed.count * 2 + 256, zeroed: false)
        try step.bind(planBuffer)
        try body()   // this step's work, op by op (and every lazy allocation made outside the capture)
        if graphFailures.count >= 8 { return }
        let generation = scratchGeneration
        try cudaCheck(ccuda_capture_begin(), "starting a graph capture")
        do {
            try body()
        } catch {
            _ = ccuda_capture_end(nil)
            graphFailures.append("\(step.plan.rows) rows: \(error)")
            return
        }
        var exec: UnsafeMutableRawPointer?
        if ccuda_capture_end(&exec) != 0 || exec == nil || generation != scratchGeneration {
            graphFailures.append("\(step.plan.rows) rows: \(String(cString: ccuda_error()))")
            if let exec { _ = ccuda_graph_destroy(exec) }
            return
        }
        graphs[key] = CUDAGraph(exec: exec!, planBuffer: planBuffer, offsets: step.offsets, scratchGeneration: generation, owners: owners)
        graphsRecorded += 1
    }

    // MARK: - sampling

    public var samplesOnDevice: Bool { samplesOnGPU }

    public func sample(_ logits: CUDABuffer, vocab: Int, rows: [DeviceSampling]) throws -> [Int32] {
        let m = rows.count
        guard m > 0 else { return [] }
        precondition(m * vocab <= logits.count, "sampling \(m) rows of \(vocab) from a buffer of \(logits.count)")
        var params: [Int32] = []
        var ids: [Int32] = []
        params.reserveCapacity(m * 12)
        for row in rows {
            let p = row.params
            guard DeviceSampling.supports(p, vocab: vocab) else {
                throw BackendError.unsupported("top-k \(p.topK) is not sampled on the GPU (1...\(DeviceSampling.maxTopK) below the vocabulary)")
            }
            let contextOffset = ids.count
            if p.repetitionPenalty != 1 { ids += row.context }
            let generatedOffset = ids.count
            if p.presencePenalty != 0 || p.frequencyPenalty != 0 { ids += row.generated }
            params += [Int32(bitPattern: p.temperature.bitPattern), Int32(bitPattern: p.topP.bitPattern), Int32(p.isGreedy ? 1 : p.topK),
                       Int32(bitPattern: p.repetitionPenalty.bitPattern), Int32(bitPattern: p.presencePenalty.bitPattern),
                       Int32(bitPattern: p.frequencyPenalty.bitPattern), Int32(bitPattern: row.uniform.bitPattern),
                       Int32(contextOffset), Int32(generatedOffset - contextOffset), Int32(generatedOffset), Int32(ids.count - generatedOffset), 0]
        }
        let upload = params + ids
        Self.stream.lock()
        defer { Self.stream.unlock() }
        lock.lock()
        defer { lock.unlock() }
        if (sampleMarks?.count ?? 0) < m * vocab { sampleMarks = nil; sampleMarks = try CUDABuffer(type: .i32, count: m * vocab) }
        if (sampleStaging?.count ?? 0) < upload.count + m {
            sampleStaging = nil
            sampleStaging = try CUDABuffer(type: .i32, count: 2 * (upload.count + m), zeroed: false)
        }
        let staging = sampleStaging!
        // Queued behind the forward from pinned memory (a plain upload would first wait for the
        // forward to finish, then the kernel launch would follow): one host wait per step, the fetch.
        // The pinned copy is reused only after that fetch, when the stream has passed it.
        let bytes = upload.count * 4
        let host = try samplePinned.reserve(bytes)
        upload.withUnsafeBytes { host.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        try cudaCheck(ccuda_upload_async(staging.address, host, bytes), "uploading sampling parameters")
        let out = staging.address + ccuda_ptr(upload.count * 4)
        try kernels.launch(fSample, name: "sample_rows", grid: (m, 1, 1), threads: 1024,
                           [.pointer(logits.address), .int(Int32(vocab)), .pointer(staging.address),
                            .pointer(staging.address + ccuda_ptr(params.count * 4)), .pointer(sampleMarks!.address), .pointer(out)])
        profile?.mark("sample_rows")
        try fetch(out, bytes: m * 4)
        return Array(UnsafeBufferPointer(start: pinned.address!.assumingMemoryBound(to: Int32.self), count: m))
    }
}

/// Page-locked host memory that grows on demand (downloads and queued uploads need it); freed with its owner.
final class PinnedHostBuffer {
    private(set) var address: UnsafeMutableRawPointer?
    private var bytes = 0

    /// At least `count` bytes (the old contents are not kept when it grows).
    func reserve(_ count: Int) throws -> UnsafeMutableRawPointer {
        if count > bytes || address == nil {
            if let address { _ = ccuda_host_free(address) }
            address = nil
            bytes = 0
            var p: UnsafeMutableRawPointer?
            try cudaCheck(ccuda_host_alloc(&p, max(count, 1)), "allocating \(count) bytes of pinned host memory")
            address = p
            bytes = max(count, 1)
        }
        return address!
    }

    deinit { if let address { _ = ccuda_host_free(address) } }
}
