// The decode products' fused follow-ups (residual add, SwiGLU) against the separate kernels they
// replace: the same bits, for every product kind, ISA, odd row counts and batches.
import CKernels
import Testing

@Suite(.serialized) struct PostOpTests {
    init() { ck_init(3) }   // more threads than cores: pieces of rows are claimed by every thread

    /// Runs `product(post)` with no post-op, then applies ck_add / ck_silu_mul_rows, and with the
    /// fused post-op; both must agree bit for bit.
    func check(_ label: String, m: Int, n: Int, _ product: (UnsafeMutablePointer<Float>, UnsafePointer<ck_post>?) -> Void) {
        var r = Rand(state: UInt64(m * 31 + n))
        // Residual add: y[m][n] += Y.
        let residual = r.array(m * n)
        var y = [Float](repeating: .nan, count: m * n)
        y.withUnsafeMutableBufferPointer { product($0.baseAddress!, nil) }
        var separate = residual
        ck_add(&separate, y, m * n)
        var fused = residual
        var scratch = [Float](repeating: .nan, count: m * n)
        fused.withUnsafeMutableBufferPointer { f in
            var post = ck_post(kind: CK_POST_ADD, y: f.baseAddress, inter: 0)
            scratch.withUnsafeMutableBufferPointer { product($0.baseAddress!, &post) }
        }
        #expect(fused == separate, "\(label) m\(m) n\(n): fused residual add differs from product + ck_add")
        #expect(scratch == y, "\(label) m\(m) n\(n): the product itself changed under the fused add")
        // SwiGLU: n = 2·inter.
        guard n % 2 == 0 else { return }
        let inter = n / 2
        var act = [Float](repeating: .nan, count: m * inter)
        ck_silu_mul_rows(y, &act, Int32(m), Int32(inter))
        var actFused = [Float](repeating: .nan, count: m * inter)
        actFused.withUnsafeMutableBufferPointer { a in
            var post = ck_post(kind: CK_POST_SILU_MUL, y: a.baseAddress, inter: Int32(inter))
            scratch.withUnsafeMutableBufferPointer { product($0.baseAddress!, &post) }
        }
        #expect(actFused == act, "\(label) m\(m) n\(n): fused SwiGLU differs from product + ck_silu_mul_rows")
    }

    @Test(arguments: [(1, 2), (1, 1536), (3, 98), (4, 3072), (5, 262), (9, 130)])
    func postOpsMatchSeparateKernels(shape: (Int, Int)) {
        let (m, n) = shape
        let k = 192
        var r = Rand(state: UInt64(n))
        let w = r.array(n * k).map(bf16), x = r.array(m * k), bias = r.array(n)
        var codes = [Int8](repeating: 0, count: n * k), scales = [Float](repeating: 0, count: n)
        ck_quantize_rows_i8(w, CK_BF16, Int32(n), Int32(k), &codes, &scales)
        let q4 = Q4Matrix(n: n, k: k, g: 64, seed: UInt64(n + 3))
        let packed = q4.packed, sz = q4.scalesZeros
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            check("bf16 \(isa)", m: m, n: n) { ck_matmul_wt_post(w, CK_BF16, x, $0, Int32(m), Int32(n), Int32(k), bias, $1) }
            check("int8 \(isa)", m: m, n: n) { ck_matmul_i8_post(codes, scales, x, $0, Int32(m), Int32(n), Int32(k), bias, $1) }
            check("int4 \(isa)", m: m, n: n) { ck_matmul_q4_post(packed, sz, 64, x, $0, Int32(m), Int32(n), Int32(k), nil, $1) }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }
}
