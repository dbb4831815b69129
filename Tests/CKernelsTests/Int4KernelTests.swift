// The W4A16 kernels (ck_int4.h) against a float64 Swift reference of (q − zero)·scale weights, on
// random shapes with odd row counts, for every instruction set this CPU runs (AVX-512 with and
// without VNNI); and AWQ repacking against an independent packer of both layouts. The m = 11
// batch-invariance case also covers the row-blocked loop for more than four vectors.
import CKernels
import Foundation
import Testing

/// Random 4-bit weights of an [n][k] matrix in groups of g inputs: values, zeros, fp16 scales.
struct Q4Matrix {
    let n, k, g: Int
    var q: [UInt8]        // [n][k], 0...15
    var zeros: [UInt8]    // [n][k/g]
    var scales: [Float16] // [n][k/g]

    init(n: Int, k: Int, g: Int, seed: UInt64) {
        self.n = n; self.k = k; self.g = g
        var r = Rand(state: seed)
        q = (0..<n * k).map { _ in UInt8(r.next() >> 60) }
        zeros = (0..<n * k / g).map { _ in UInt8(r.next() >> 60) }
        scales = (0..<n * k / g).map { _ in Float16(0.01 + abs(r.float()) * 0.1) }
    }

    func weight(_ row: Int, _ col: Int) -> Double {
        let gi = row * (k / g) + col / g
        return (Double(q[row * k + col]) - Double(zeros[gi])) * Double(scales[gi])
    }

    /// The kernels' layout, written from its definition in ck_int4.h.
    var packed: [UInt8] {
        var out = [UInt8](repeating: 0, count: n * k / 2)
        for r in 0..<n {
            for c in 0..<k {
                let byte = r * k / 2 + (c / 32) * 16 + c % 16
                out[byte] |= (c % 32) < 16 ? q[r * k + c] : q[r * k + c] << 4
            }
        }
        return out
    }

    /// (scale, zero) pairs in ck_int4.h's tiles of 16 rows: row r, group c at ((r/16)·groups + c)·16 + r%16.
    var scalesZeros: [UInt16] {
        let groups = k / g
        var out = [UInt16](repeating: 0, count: (n + 15) / 16 * 16 * groups * 2)
        for r in 0..<n {
            for c in 0..<groups {
                let at = (((r / 16) * groups + c) * 16 + r % 16) * 2
                out[at] = scales[r * groups + c].bitPattern
                out[at + 1] = Float16(Float(zeros[r * groups + c])).bitPattern
            }
        }
        return out
    }

    /// AutoAWQ's GEMM qweight: int32 [k][n/8], output 8c + order[i] in bits 4i.
    var awqQweight: [Int32] {
        let order = [0, 2, 4, 6, 1, 3, 5, 7]
        var out = [Int32](repeating: 0, count: k * n / 8)
        for i in 0..<k {
            for c in 0..<(n / 8) {
                var word: UInt32 = 0
                for s in 0..<8 { word |= UInt32(q[(8 * c + order[s]) * k + i]) << (4 * s) }
                out[i * n / 8 + c] = Int32(bitPattern: word)
            }
        }
        return out
    }
}

@Suite(.serialized) struct Int4KernelTests {
    init() { ck_init(3) }

    @Test(arguments: [(1, 37, 64, 32), (1, 43, 576, 64), (3, 65, 128, 64), (5, 131, 576, 64), (9, 257, 256, 128), (16, 24, 2048, 128), (4, 15, 96, 32), (2, 19, 192, 96), (11, 9, 384, 96), (3, 40, 4096, 4096), (1, 20, 8192, 8192)])
    func matmulMatchesReference(shape: (Int, Int, Int, Int)) {
        let (m, n, k, g) = shape
        let w = Q4Matrix(n: n, k: k, g: g, seed: UInt64(m * 7 + n * 13 + k))
        var r = Rand(state: UInt64(n + k))
        let x = r.array(m * k), bias = r.array(n)
        let packed = w.packed, sz = w.scalesZeros
        var reference = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = Double(bias[j])
                for t in 0..<k { s += w.weight(j, t) * Double(x[i * k + t]) }
                reference[i * n + j] = s
            }
        }
        let scale = max(reference.map(abs).max()!, 1e-6)
        for (isa, vnni) in availableISAs().flatMap({ $0 == "avx512" ? [($0, 1), ($0, 0)] : [($0, 1)] }) {
            _ = ck_force_isa(isa)
            _ = ck_use_vnni(Int32(vnni))
            defer { _ = ck_use_vnni(1) }
            var y = [Float](repeating: .nan, count: m * n), yb = y
            ck_matmul_q4(packed, sz, Int32(g), x, &y, Int32(m), Int32(n), Int32(k), bias)
            ck_gemm_q4(packed, sz, Int32(g), x, &yb, Int32(m), Int32(n), Int32(k), bias)
            let e1 = zip(y, reference).map { abs(Double($0) - $1) }.max()! / scale
            let e2 = zip(yb, reference).map { abs(Double($0) - $1) }.max()! / scale
            #expect(e1 <= 1e-4, "matmul_q4 \(isa)\(vnni == 0 ? " (no VNNI)" : "") m\(m) n\(n) k\(k) g\(g): max relative error \(e1)")
            #expect(e2 <= 1e-4, "gemm_q4 \(isa) m\(m) n\(n) k\(k) g\(g): max relative error \(e2)")
            var d = [Float](repeating: .nan, count: 3 * k)
            ck_q4_dequantize_rows(packed, sz, Int32(g), Int32(k), Int32(n - 3), Int32(n), &d)
            let exact = (0..<3 * k).allSatisfy { Double(d[$0]) == w.weight(n - 3 + $0 / k, $0 % k) }
            #expect(exact, "dequantize_rows \(isa): not (q − z)·s exactly")
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    @Test func matmulIsBatchInvariant() {
        let n = 41, k = 384, g = 128
        let w = Q4Matrix(n: n, k: k, g: g, seed: 5)
        var r = Rand(state: 9)
        let x = r.array(11 * k)
        let packed = w.packed, sz = w.scalesZeros
        var integerPaths: [[Float]] = []
        for (isa, vnni) in availableISAs().flatMap({ $0 == "avx512" ? [($0, 1), ($0, 0)] : [($0, 1)] }) {
            _ = ck_force_isa(isa)
            _ = ck_use_vnni(Int32(vnni))
            defer { _ = ck_use_vnni(1) }
            var batch = [Float](repeating: 0, count: 11 * n)
            ck_matmul_q4(packed, sz, Int32(g), x, &batch, 11, Int32(n), Int32(k), nil)
            // The integer paths (AVX-512 with or without VNNI, AVX2) compute each group's sum exactly and
            // the same float chain after it: the same bits on each.
            if isa != "scalar" {
                if let first = integerPaths.first { #expect(batch == first, "\(isa)\(vnni == 0 ? " (no VNNI)" : ""): differs from the first integer path") }
                integerPaths.append(batch)
            }
            for i in 0..<11 {
                var single = [Float](repeating: 0, count: n)
                Array(x[i * k..<(i + 1) * k]).withUnsafeBufferPointer {
                    ck_matmul_q4(packed, sz, Int32(g), $0.baseAddress, &single, 1, Int32(n), Int32(k), nil)
                }
                #expect(single == Array(batch[i * n..<(i + 1) * n]), "\(isa): row \(i) differs alone vs in a batch of 11")
            }
        }
        _ = ck_force_isa("avx512") != 0 || ck_force_isa("avx2") != 0 || ck_force_isa("scalar") != 0
    }

    @Test(arguments: [(8, 32), (64, 96), (136, 2048)])
    func repackFromAWQ(shape: (Int, Int)) {
        let (n, k) = shape
        let w = Q4Matrix(n: n, k: k, g: 32, seed: UInt64(n * k))
        var out = [UInt8](repeating: 0xAA, count: n * k / 2)
        ck_q4_repack_awq(w.awqQweight, Int32(k), Int32(n), &out)
        #expect(out == w.packed, "repack of AutoAWQ qweight [\(k)][\(n / 8)] differs from the kernels' layout")
    }
}
