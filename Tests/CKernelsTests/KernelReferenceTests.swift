// Every CPU kernel against a plain Swift reference on random odd-sized inputs, for every
// instruction set the machine has (as llama.cpp's test-backend-ops does for its backends).
import CKernels
import Foundation
import Testing

/// Deterministic inputs: a fixed-seed LCG, values in [-1, 1).
struct Rand: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state
    }
    mutating func float() -> Float {
        Float(Int64(bitPattern: next() >> 11) % 2_000_000) / 1_000_000 - 1
    }
    mutating func array(_ n: Int) -> [Float] { (0..<n).map { _ in float() } }
}

func bf16(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
}
func fromBF16(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

/// The instruction sets this CPU supports (forcing a higher one fails).
func availableISAs() -> [String] {
    ["scalar", "avx2", "avx512"].filter { ck_force_isa($0) != 0 }
}

/// Relative tolerance for fp32 dot products of length k with inputs in [-1,1): reordered sums
/// of k terms differ by about k·ε·max|term|; 1e-5 with k ≤ 2000 leaves a 10× margin.
func close(_ a: Float, _ b: Float, scale: Float, tol: Float = 1e-5) -> Bool { abs(a - b) <= tol * max(scale, 1) }

@Suite(.serialized) struct KernelReferenceTests {
    init() { ck_init(3) }  // more threads than cores exercises the pool's hand-off too

    @Test(arguments: [(1, 1, 1), (1, 37, 19), (3, 65, 131), (5, 130, 576), (9, 257, 33), (4, 16, 16), (101, 45, 777)])
    func matmulMatchesReference(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var r = Rand(state: UInt64(m * 1000 + n * 10 + k))
        let w = r.array(n * k), x = r.array(m * k), bias = r.array(n)
        let wb = w.map(bf16)
        let wf16 = w.map { Float16($0) }
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            for type in [CK_F32, CK_F16, CK_BF16] {
                let wq: [Float] = type == CK_BF16 ? wb.map(fromBF16) : type == CK_F16 ? wf16.map { Float($0) } : w
                var y = [Float](repeating: .nan, count: m * n)
                switch type {
                case CK_BF16: ck_matmul_wt(wb, type, x, &y, Int32(m), Int32(n), Int32(k), bias)
                case CK_F16: ck_matmul_wt(wf16, type, x, &y, Int32(m), Int32(n), Int32(k), bias)
                default: ck_matmul_wt(w, type, x, &y, Int32(m), Int32(n), Int32(k), bias)
                }
                var yb = [Float](repeating: .nan, count: m * n)
                switch type {
                case CK_BF16: ck_gemm_wt(wb, type, x, &yb, Int32(m), Int32(n), Int32(k), bias)
                case CK_F16: ck_gemm_wt(wf16, type, x, &yb, Int32(m), Int32(n), Int32(k), bias)
                default: ck_gemm_wt(w, type, x, &yb, Int32(m), Int32(n), Int32(k), bias)
                }
                for i in 0..<m {
                    for j in 0..<n {
                        var ref: Double = 0
                        for t in 0..<k { ref += Double(wq[j * k + t]) * Double(x[i * k + t]) }
                        ref += Double(bias[j])
                        #expect(close(y[i * n + j], Float(ref), scale: Float(k).squareRoot()), "matmul \(isa) \(type) [\(i),\(j)] \(y[i * n + j]) vs \(ref)")
                        #expect(close(yb[i * n + j], Float(ref), scale: Float(k).squareRoot()), "gemm \(isa) \(type) [\(i),\(j)] \(yb[i * n + j]) vs \(ref)")
                    }
                }
            }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    /// A row computed alone and inside a batch of any size gives the same bits: the engine's
    /// batch invariance rests on it.
    @Test func matmulIsBatchInvariant() {
        let n = 67, k = 333
        var r = Rand(state: 7)
        let w = r.array(n * k).map(bf16), x = r.array(9 * k)
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            var batch = [Float](repeating: 0, count: 9 * n)
            ck_matmul_wt(w, CK_BF16, x, &batch, 9, Int32(n), Int32(k), nil)
            for i in 0..<9 {
                var single = [Float](repeating: 0, count: n)
                Array(x[i * k..<(i + 1) * k]).withUnsafeBufferPointer {
                    ck_matmul_wt(w, CK_BF16, $0.baseAddress, &single, 1, Int32(n), Int32(k), nil)
                }
                #expect(single == Array(batch[i * n..<(i + 1) * n]), "\(isa): row \(i) differs alone vs in a batch of 9")
            }
        }
    }

    /// The prefill GEMM gives a row the same bits whatever rows surround it (its blocking depends on
    /// n and k only), so a prompt's logits do not change with the chunk it was prefilled in.
    @Test func gemmRowsDoNotDependOnBatch() {
        let n = 83, k = 801, m = 103
        var r = Rand(state: 11)
        let w = r.array(n * k).map(bf16), x = r.array(m * k)
        for isa in availableISAs() where isa != "scalar" {   // scalar: OpenBLAS, whose order is its own
            _ = ck_force_isa(isa)
            var batch = [Float](repeating: 0, count: m * n)
            ck_gemm_wt(w, CK_BF16, x, &batch, Int32(m), Int32(n), Int32(k), nil)
            for (lo, rows) in [(0, 8), (97, 6), (50, 13)] {
                var part = [Float](repeating: 0, count: rows * n)
                Array(x[lo * k..<(lo + rows) * k]).withUnsafeBufferPointer {
                    ck_gemm_wt(w, CK_BF16, $0.baseAddress, &part, Int32(rows), Int32(n), Int32(k), nil)
                }
                #expect(part == Array(batch[lo * n..<(lo + rows) * n]), "\(isa): rows \(lo)..<\(lo + rows) differ from the batch of \(m)")
            }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    /// `--dtype bfloat16` prefill: Y = bf16(X)·Wᵀ + bias against a double-precision sum of the rounded
    /// inputs times the weights, on vdpbf16ps (where the CPU has it) and on the fallback, every ISA; odd
    /// k (a half-empty last pair), column and row tails. On vdpbf16ps rows give the same bits alone as in
    /// the batch (its blocking depends on n and k only); the fallback is ck_gemm_wt's, which makes no such promise.
    @Test(arguments: [(1, 1, 1), (8, 32, 2), (9, 33, 3), (13, 45, 77), (17, 70, 257), (40, 96, 576), (7, 576, 1537)])
    func gemmWithBF16InputsMatchesReference(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var r = Rand(state: UInt64(m * 7919 + n * 31 + k))
        let wb = r.array(n * k).map(bf16), x = r.array(m * k), bias = r.array(n)
        let wf16 = wb.map { Float16(fromBF16($0)) }
        let xr = x.map { fromBF16(bf16($0)) }
        var paths: [(String, Int32)] = []
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            paths.append((isa, 0))
            if ck_gemm_use_dpbf16(1) != 0 { paths.append((isa, 1)) }
        }
        #expect(paths.contains { $0.1 == 1 } == ck_cpu_features().map { String(cString: $0).contains("avx512bf16") }!,
                "vdpbf16ps runs exactly where the CPU has avx512bf16")
        for (isa, dp) in paths {
            _ = ck_force_isa(isa)
            _ = ck_gemm_use_dpbf16(dp)
            for type in [CK_BF16, CK_F16] {
                let wq: [Float] = type == CK_BF16 ? wb.map(fromBF16) : wf16.map { Float($0) }
                var y = [Float](repeating: .nan, count: m * n)
                if type == CK_BF16 { ck_gemm_bf16x(wb, type, x, &y, Int32(m), Int32(n), Int32(k), bias) }
                else { ck_gemm_bf16x(wf16, type, x, &y, Int32(m), Int32(n), Int32(k), bias) }
                var worst: Float = 0
                for i in 0..<m {
                    for j in 0..<n {
                        var ref = Double(bias[j])
                        for t in 0..<k { ref += Double(wq[j * k + t]) * Double(xr[i * k + t]) }
                        worst = max(worst, abs(y[i * n + j] - Float(ref)))
                        #expect(close(y[i * n + j], Float(ref), scale: Float(k).squareRoot()), "\(isa) dp=\(dp) \(type) [\(i),\(j)] \(y[i * n + j]) vs \(ref)")
                    }
                }
                if m > 1 && dp == 1 {
                    for (lo, rows) in [(0, 1), (m - 1, 1), (m / 2, m - m / 2)] {
                        var part = [Float](repeating: .nan, count: rows * n)
                        Array(x[lo * k..<(lo + rows) * k]).withUnsafeBufferPointer { xs in
                            if type == CK_BF16 { ck_gemm_bf16x(wb, type, xs.baseAddress, &part, Int32(rows), Int32(n), Int32(k), bias) }
                            else { ck_gemm_bf16x(wf16, type, xs.baseAddress, &part, Int32(rows), Int32(n), Int32(k), bias) }
                        }
                        #expect(part == Array(y[lo * n..<(lo + rows) * n]), "\(isa) dp=\(dp) \(type): rows \(lo)..<\(lo + rows) differ from the batch of \(m)")
                    }
                }
                if (m, n, k) == (7, 576, 1537) { print("bf16-input gemm \(isa) dp=\(dp) \(type): max |Δ| \(worst)") }
            }
        }
        _ = ck_gemm_use_dpbf16(1)
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    /// `--lm-head-dtype int8`: rows quantized symmetric per row (scale max|w|/127, codes rounded to
    /// nearest even, an all-zero row staying zero) against a Swift reference of the same rule; then
    /// Y = scale · Σ q·x + bias against a double sum of the codes (within the int16 inputs' bound), every ISA, odd k and n (masked and
    /// scalar tails); rows give the same bits alone as in the batch (one kernel for every row count).
    @Test(arguments: [(1, 1, 1), (1, 37, 19), (3, 65, 131), (5, 130, 576), (9, 257, 33), (4, 16, 16), (2, 9, 4163)])
    func int8RowsMatchReference(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var r = Rand(state: UInt64(m * 131 + n * 7 + k))
        var w = r.array(n * k)
        for c in 0..<k { w[c] = 0 }   // row 0 all zeros
        let wb = w.map(bf16), x = r.array(m * k), bias = r.array(n)
        var codes = [Int8](repeating: 0, count: n * k), scales = [Float](repeating: .nan, count: n)
        ck_quantize_rows_i8(wb, CK_BF16, Int32(n), Int32(k), &codes, &scales)
        for row in 0..<n {
            let vals = (0..<k).map { fromBF16(wb[row * k + $0]) }
            let mx = vals.map(abs).max()!
            #expect(scales[row] == mx / 127, "row \(row) scale \(scales[row]) vs \(mx / 127)")
            let inv: Float = mx > 0 ? 127 / mx : 0
            let ref = vals.map { Int8(($0 * inv).rounded(.toNearestOrEven)) }
            #expect(Array(codes[row * k..<(row + 1) * k]) == ref, "row \(row) codes")
        }
        // The inputs go in as int16 (one scale per vector, max|x| / 32767): each output is within
        // s·Σ|q|·(max|x| / 32767) / 2 of the exact sum, plus fp32 rounding; the integer sum is exact, so
        // every ISA (and AVX-512 with or without VNNI) gives the same bits.
        var first: [Float]? = nil
        for (isa, vnni) in availableISAs().flatMap({ $0 == "avx512" ? [($0, 1), ($0, 0)] : [($0, 1)] }) {
            _ = ck_force_isa(isa)
            _ = ck_use_vnni(Int32(vnni))
            defer { _ = ck_use_vnni(1) }
            var y = [Float](repeating: .nan, count: m * n)
            ck_matmul_i8(codes, scales, x, &y, Int32(m), Int32(n), Int32(k), bias)
            for i in 0..<m {
                let mx = Double(x[i * k..<(i + 1) * k].map(abs).max()!)
                for j in 0..<n {
                    var sum = 0.0, absQ = 0.0
                    for t in 0..<k {
                        sum += Double(codes[j * k + t]) * Double(x[i * k + t])
                        absQ += Double(abs(Int(codes[j * k + t])))
                    }
                    let ref = sum * Double(scales[j]) + Double(bias[j])
                    let bound = Double(scales[j]) * absQ * mx / 32767 / 2 + 1e-6 * max(abs(ref), 1)
                    #expect(abs(Double(y[i * n + j]) - ref) <= bound, "\(isa) vnni \(vnni) [\(i),\(j)] \(y[i * n + j]) vs \(ref) (bound \(bound))")
                }
            }
            for lo in 0..<m {
                var one = [Float](repeating: .nan, count: n)
                Array(x[lo * k..<(lo + 1) * k]).withUnsafeBufferPointer { ck_matmul_i8(codes, scales, $0.baseAddress, &one, 1, Int32(n), Int32(k), bias) }
                #expect(one == Array(y[lo * n..<(lo + 1) * n]), "\(isa): row \(lo) alone differs from the batch of \(m)")
            }
            if let first { #expect(y == first, "\(isa) vnni \(vnni): not the same bits as the first ISA") } else { first = y }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    @Test func widenAndGather() {
        var r = Rand(state: 3)
        let v = r.array(100_003)
        let b = v.map(bf16), h = v.map { Float16($0) }
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            var out = [Float](repeating: 0, count: v.count)
            ck_widen(b, CK_BF16, &out, v.count)
            #expect(out == b.map(fromBF16), "\(isa) bf16")
            ck_widen(h, CK_F16, &out, v.count)
            #expect(out == h.map { Float($0) }, "\(isa) f16")
            var rows = [Float](repeating: 0, count: 3 * 17)
            let ids: [Int32] = [5, 0, 5000]
            ck_gather_rows(b, CK_BF16, 17, ids, 3, &rows)
            for (i, id) in ids.enumerated() {
                #expect(Array(rows[i * 17..<(i + 1) * 17]) == b[Int(id) * 17..<(Int(id) + 1) * 17].map(fromBF16))
            }
        }
    }

    @Test func rmsnormAndSilu() {
        var r = Rand(state: 11)
        let rows = 5, dim = 77
        let x = r.array(rows * dim), w = r.array(dim)
        for isa in availableISAs() {   // the vector sums of squares (8 / 4 double lanes), and the serial one
            _ = ck_force_isa(isa)
            var out = [Float](repeating: 0, count: rows * dim)
            ck_rmsnorm(x, w, &out, Int32(rows), Int32(dim), 1e-5)
            for i in 0..<rows {
                let row = x[i * dim..<(i + 1) * dim]
                let rms = (row.map { Double($0) * Double($0) }.reduce(0, +) / Double(dim) + 1e-5).squareRoot()
                for j in 0..<dim { #expect(abs(Double(out[i * dim + j]) - Double(x[i * dim + j]) / rms * Double(w[j])) < 1e-5, "\(isa)") }
            }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
        // SwiGLU after the fused gate/up product: row r holds gate[inter] | up[inter].
        let inter = 2_001
        let gu = r.array(3 * 2 * inter)
        for isa in availableISAs() {   // the vector exps (vexp.h) against libm's expf
            _ = ck_force_isa(isa)
            var act = [Float](repeating: 0, count: 3 * inter)
            ck_silu_mul_rows(gu, &act, 3, Int32(inter))
            for row in 0..<3 {
                for i in 0..<inter {
                    let g = gu[row * 2 * inter + i], u = gu[row * 2 * inter + inter + i]
                    #expect(abs(act[row * inter + i] - g / (1 + expf(-g)) * u) < 1e-6, "\(isa) row \(row) i \(i)")
                }
            }
            // Far tails: e^−g overflows or vanishes; silu goes to −0 and to g.
            let tails: [Float] = [-200, -95, -88.5, 87, 95, 300], ones = [Float](repeating: 1, count: tails.count)
            var out = [Float](repeating: .nan, count: tails.count)
            ck_silu_mul_rows(tails + ones, &out, 1, Int32(tails.count))
            for (g, o) in zip(tails, out) { #expect(abs(o - g / (1 + expf(-g))) <= 1e-30 + 1e-6 * abs(g), "\(isa) silu(\(g)) = \(o)") }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    /// Paged attention for a batch of sequences with shuffled block tables, against a plain
    /// softmax-attention reference over each sequence's contiguous K/V: fp32 and fp16 caches,
    /// full attention and a sliding window (7, and 600 so that a split context is windowed too). The
    /// shapes reach compile-time instances of each kernel (head: d 64, 128; AVX-512 groups 2-3 × d 32, 64, and 8 heads
    /// per KV head in tasks of 2; AVX2 groups 1-8 × d 64, 128) and the generic ones (d 19, 80).
    @Test(arguments: [(4, 2, 64, 3), (6, 3, 19, 5), (4, 1, 80, 2), (9, 3, 64, 16), (2, 2, 64, 4), (8, 2, 128, 16), (6, 2, 32, 8), (16, 2, 64, 16)], [(CK_F32, 0), (CK_F16, 0), (CK_F32, 7), (CK_F16, 7), (CK_F16, 600)])
    func pagedAttentionMatchesReference(p: (Int, Int, Int, Int), cache: (ck_dtype, Int)) {
        let (kvType, window) = cache
        let (heads, kvHeads, d, blockSize) = p
        var r = Rand(state: UInt64(heads * 31 + d + blockSize))
        // (tokens, start) per sequence: decode rows, a prefill chunk, a chunk after a cached prefix,
        // and decode rows over contexts long enough to be split into pieces (≥ 512 positions).
        let shapes = [(1, 0), (5, 0), (3, 9), (1, 40), (1, 700), (1, 1300)]
        let kvw = kvHeads * d, qw = heads * d
        let totalBlocks = shapes.reduce(0) { $0 + ($1.0 + $1.1 + blockSize - 1) / blockSize } + 3
        var free = Array(0..<Int32(totalBlocks)).shuffled(using: &r)
        var kPool = [Float](repeating: .nan, count: totalBlocks * blockSize * kvw), vPool = kPool
        var tables: [[Int32]] = [], ks: [[Float]] = [], vs: [[Float]] = []
        for (tokens, start) in shapes {
            let ctx = tokens + start
            let table = (0..<(ctx + blockSize - 1) / blockSize).map { _ in free.removeLast() }
            var k = r.array(ctx * kvw), v = r.array(ctx * kvw)
            if kvType == CK_F16 {   // the reference sees what an fp16 cache holds
                k = k.map { Float(Float16($0)) }
                v = v.map { Float(Float16($0)) }
            }
            for pos in 0..<ctx {
                let row = (Int(table[pos / blockSize]) * blockSize + pos % blockSize) * kvw
                for c in 0..<kvw { kPool[row + c] = k[pos * kvw + c]; vPool[row + c] = v[pos * kvw + c] }
            }
            tables.append(table); ks.append(k); vs.append(v)
        }
        let kHalf = kPool.map { Float16($0) }, vHalf = vPool.map { Float16($0) }
        let rows = shapes.reduce(0) { $0 + $1.0 }
        let q = r.array(rows * qw)
        let scale = 1 / Float(d).squareRoot()
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            var out = [Float](repeating: .nan, count: rows * qw)
            let flat = tables.flatMap { $0 }
            flat.withUnsafeBufferPointer { buf in
                var offset = 0, row = 0
                var seqs: [ck_attn_seq] = []
                for (i, (tokens, start)) in shapes.enumerated() {
                    seqs.append(ck_attn_seq(q_row: Int32(row), tokens: Int32(tokens), start: Int32(start), blocks: buf.baseAddress! + offset))
                    offset += tables[i].count
                    row += tokens
                }
                func call(_ k: UnsafeRawPointer, _ v: UnsafeRawPointer) {
                    ck_attention_paged(q, Int32(qw), k, v, kvType, Int32(kvw), Int32(blockSize), seqs, Int32(seqs.count), &out, Int32(qw),
                                       Int32(heads), Int32(kvHeads), Int32(d), scale, Int32(window))
                }
                if kvType == CK_F16 { call(kHalf, vHalf) } else { call(kPool, vPool) }
            }
            var row = 0
            for (si, (tokens, start)) in shapes.enumerated() {
                for t in 0..<tokens {
                    for h in 0..<heads {
                        let g = h / (heads / kvHeads)
                        let n = start + t + 1
                        let lo = window > 0 ? max(0, n - window) : 0
                        let qi = (row + t) * qw + h * d
                        var s = (lo..<n).map { pos in (0..<d).reduce(0.0) { $0 + Double(q[qi + $1]) * Double(ks[si][pos * kvw + g * d + $1]) } * Double(scale) }
                        let mx = s.max()!
                        s = s.map { exp($0 - mx) }
                        let z = s.reduce(0, +)
                        for i in 0..<d {
                            let ref = (lo..<n).reduce(0.0) { $0 + s[$1 - lo] / z * Double(vs[si][$1 * kvw + g * d + i]) }
                            #expect(abs(Double(out[qi + i]) - ref) < 1e-5, "\(isa) kv \(kvType.rawValue) window \(window) seq\(si) t\(t) h\(h) i\(i)")
                        }
                    }
                }
                row += tokens
            }
        }
    }

    /// RoPE on q and k of fused q|k|v rows, then K/V stored into cache slots: rotation as HF's
    /// rotate-half, row stride respected, and fp16 stores rounding to nearest even — the same bits
    /// as Swift's Float16 conversion on every ISA, including subnormals, ties and overflow.
    @Test func ropeStoreRotatesAndStoresThroughSlots() {
        let heads = 3, kvHeads = 1, d = 8, rows = 5
        let stride = (heads + 2 * kvHeads) * d + 3   // padding after v stays untouched
        var r = Rand(state: 99)
        // Row 0 sits at position 0 (no rotation), so these reach the fp16 store unchanged.
        let specials: [Float] = [0, -0, 1e-8, 6e-8, 2.98e-8, 5.96e-8, 65504, 65519, 65520, 1e6, -1e6, 1.0009765, 1.00048828125, 1.000732421875, 3e-5, -7.5e-6]
        let orig = r.array(rows * stride).map { $0 * 3 }
        let inv = (0..<d / 2).map { 1 / powf(10000, Float(2 * $0) / Float(d)) }
        let positions: [Int32] = [0, 5, 6, 17, 3]
        let slots: [Int32] = [9, 0, 4, 2, 7]
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            for type in [CK_F32, CK_F16] {
                var x = orig
                // Put the special values into row 0's k and v so the fp16 store sees them.
                for (i, v) in specials.enumerated() where i < 2 * kvHeads * d { x[heads * d + i] = v }
                let kept = x
                var kPool = [Float](repeating: 0, count: 10 * kvHeads * d), vPool = kPool
                var kHalf = [Float16](repeating: 0, count: 10 * kvHeads * d), vHalf = kHalf
                if type == CK_F32 {
                    ck_rope_store_kv(&x, Int32(rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(d), positions, inv, nil,
                                     &kPool, &vPool, type, slots)
                } else {
                    ck_rope_store_kv(&x, Int32(rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(d), positions, inv, nil,
                                     &kHalf, &vHalf, type, slots)
                }
                for t in 0..<rows {
                    for h in 0..<(heads + kvHeads) {   // q and k heads rotated, as HF's rotate-half
                        for i in 0..<d / 2 {
                            let a = kept[t * stride + h * d + i], b = kept[t * stride + h * d + i + d / 2]
                            let angle = Float(positions[t]) * inv[i]
                            let c: Float = cosf(angle), sn: Float = sinf(angle)
                            let wantA: Float = a * c - b * sn
                            let wantB: Float = b * c + a * sn
                            let gotA: Float = x[t * stride + h * d + i], gotB: Float = x[t * stride + h * d + i + d / 2]
                            #expect(abs(gotA - wantA) <= 1e-4 * max(1, abs(wantA)), "\(isa) t\(t) h\(h) i\(i)")
                            #expect(abs(gotB - wantB) <= 1e-4 * max(1, abs(wantB)))
                        }
                    }
                    let base = t * stride, kw = kvHeads * d
                    let k: [Float] = Array(x[base + heads * d..<base + heads * d + kw])
                    let v: [Float] = Array(x[base + heads * d + kw..<base + heads * d + 2 * kw])
                    let pad = base + heads * d + 2 * kw..<(t + 1) * stride
                    #expect(Array(x[pad]) == Array(kept[pad]), "padding untouched")
                    let slot = Int(slots[t]) * kw
                    if type == CK_F32 {
                        #expect(Array(kPool[slot..<slot + kw]) == k)
                        #expect(Array(vPool[slot..<slot + kw]) == v)
                    } else {
                        let wantK: [UInt16] = k.map { Float16($0).bitPattern }, wantV: [UInt16] = v.map { Float16($0).bitPattern }
                        #expect(kHalf[slot..<slot + kw].map(\.bitPattern) == wantK, "\(isa) k row \(t)")
                        #expect(vHalf[slot..<slot + kw].map(\.bitPattern) == wantV, "\(isa) v row \(t)")
                    }
                }
            }
        }
    }

    /// Restarting the pool right after creating it must not lose the stop signal of threads that
    /// have not started yet (a hang before the fix), and kernels keep working across restarts.
    @Test(.timeLimit(.minutes(1))) func poolSurvivesRapidRestarts() {
        let w = [Float](repeating: 1, count: 64 * 32), x = [Float](repeating: 0.5, count: 32)
        for i in 0..<200 {
            ck_init(Int32(2 + i % 3))
            var y = [Float](repeating: 0, count: 64)
            ck_matmul_wt(w, CK_F32, x, &y, 1, 64, 32, nil)
            #expect(y.allSatisfy { $0 == 16 })
        }
        ck_init(3)
    }

    @Test func argmaxTakesFirstMaximum() {
        #expect(ck_argmax([1, 5, 2, 5, -1], 5) == 1)
        #expect(ck_argmax([-3], 1) == 0)
    }
}
