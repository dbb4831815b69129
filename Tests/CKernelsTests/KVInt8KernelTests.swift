// The int8 KV cache's kernels (quant_policy 4) against plain Swift references: the quantizer's
// bytes, the RoPE-and-store pass writing int8 through slots, and paged attention dequantizing as
// it reads — for every instruction set the machine has.
import CKernels
import Foundation
import Testing

/// The quantizer as the header defines it: round half to even of (x − zero)·(1/scale), clamped.
func referenceQuantize(_ x: Float, scale: Float, zero: Float) -> Int8 {
    let inv: Float = scale > 0 ? 1 / scale : 0
    let q = ((x - zero) * inv).rounded(.toNearestOrEven)
    return Int8(max(-128, min(127, q)))
}

@Suite(.serialized) struct KVInt8KernelTests {
    init() { ck_init(3) }

    @Test func quantizerRoundsHalfToEvenAndClamps() {
        // Ties (0.5, 1.5, −2.5 codes), the range's edges, values past them, and a zero scale.
        let scale: Float = 0.25, zero: Float = 0.5
        let xs: [Float] = [0.5, 0.625, 0.875, -0.125, 0.5 + 127 * 0.25, 0.5 - 128 * 0.25, 100, -100, 0.5 + 127.5 * 0.25,
                           0.5 - 128.5 * 0.25, .leastNonzeroMagnitude, 0.51, 0.49]
        var out = [Int8](repeating: 99, count: xs.count)
        ck_quantize_i8(&out, xs, Int32(xs.count), scale, zero)
        #expect(out == xs.map { referenceQuantize($0, scale: scale, zero: zero) })
        #expect(Array(out[0..<4]) == [0, 0, 2, -2])          // 0.5 → 0, 0.625 → tie 0.5 → 0, 1.5 → 2, −2.5 → −2
        #expect(Array(out[4..<10]) == [127, -128, 127, -128, 127, -128])
        var flat = [Int8](repeating: 99, count: 3)
        ck_quantize_i8(&flat, [1, 2, 3], 3, 0, 2)   // a channel that never varied: its zero point's code
        #expect(flat == [0, 0, 0])
    }

    /// ck_rope_store_kv_i8 rotates q and k exactly as the fp32 store does and writes each head's
    /// k and v quantized with that head's parameters into the row's slot.
    @Test func ropeStoreQuantizesEachHeadIntoItsSlot() {
        let heads = 4, kvHeads = 2, d = 16, rows = 6
        let stride = (heads + 2 * kvHeads) * d
        var r = Rand(state: 7)
        let orig = r.array(rows * stride).map { $0 * 2 }
        let inv = (0..<d / 2).map { 1 / powf(10000, Float(2 * $0) / Float(d)) }
        let positions: [Int32] = [0, 3, 4, 11, 2, 30]
        let slots: [Int32] = [5, 0, 7, 2, 3, 1]
        // [kvHeads][k_scale, k_zero, v_scale, v_zero]: different per head.
        let params: [Float] = [2.5 / 255, 0.1, 4.0 / 255, -0.2, 1.0 / 127, 0, 0.5 / 127, 0]
        for isa in availableISAs() {
            _ = ck_force_isa(isa)
            var x32 = orig, x8 = orig
            var k32 = [Float](repeating: 0, count: 8 * kvHeads * d), v32 = k32
            ck_rope_store_kv(&x32, Int32(rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(d), positions, inv, nil,
                             &k32, &v32, CK_F32, slots)
            var k8 = [Int8](repeating: 0, count: 8 * kvHeads * d), v8 = k8
            ck_rope_store_kv_i8(&x8, Int32(rows), Int32(stride), Int32(heads), Int32(kvHeads), Int32(d), positions, inv, nil,
                                &k8, &v8, params, slots)
            #expect(x8 == x32, "\(isa): q and k rotated as the fp32 path rotates them")
            for slot in slots.map(Int.init) {
                for h in 0..<kvHeads {
                    for i in 0..<d {
                        let e = (slot * kvHeads + h) * d + i
                        #expect(k8[e] == referenceQuantize(k32[e], scale: params[4 * h], zero: params[4 * h + 1]), "\(isa) k slot \(slot) h\(h) i\(i)")
                        #expect(v8[e] == referenceQuantize(v32[e], scale: params[4 * h + 2], zero: params[4 * h + 3]), "\(isa) v slot \(slot) h\(h) i\(i)")
                    }
                }
            }
        }
    }

    /// Paged attention over an int8 cache equals softmax attention over the dequantized values
    /// (q·scale + zero per KV head), for plain, grouped (GQA) and split-context kernels.
    @Test(arguments: [(4, 2, 64, 3), (6, 3, 19, 5), (4, 1, 80, 2), (9, 3, 64, 16), (2, 2, 64, 4), (8, 2, 128, 16), (6, 2, 32, 8)], [0, 7])
    func pagedAttentionDequantizes(p: (Int, Int, Int, Int), window: Int) {
        let (heads, kvHeads, d, blockSize) = p
        var r = Rand(state: UInt64(heads * 17 + d + window))
        let shapes = [(1, 0), (4, 0), (3, 9), (1, 40), (1, 700), (1, 1300)]
        let kvw = kvHeads * d, qw = heads * d
        let totalBlocks = shapes.reduce(0) { $0 + ($1.0 + $1.1 + blockSize - 1) / blockSize } + 2
        var free = Array(0..<Int32(totalBlocks)).shuffled(using: &r)
        var kPool = [Int8](repeating: 0, count: totalBlocks * blockSize * kvw), vPool = kPool
        var params: [Float] = []
        for h in 0..<kvHeads {
            let f = Float(h)
            params += [(f + 1) * 0.004, f * 0.05 - 0.03, 0.006 / (f + 1), 0.02 * f]
        }
        func dq(_ q: Int8, _ h: Int, _ v: Bool) -> Double {
            Double(Float(q) * params[4 * h + (v ? 2 : 0)] + params[4 * h + (v ? 3 : 1)])
        }
        var tables: [[Int32]] = []
        for (tokens, start) in shapes {
            let table = (0..<(tokens + start + blockSize - 1) / blockSize).map { _ in free.removeLast() }
            tables.append(table)
        }
        for i in kPool.indices {
            kPool[i] = Int8(truncatingIfNeeded: r.next() >> 56)
            vPool[i] = Int8(truncatingIfNeeded: r.next() >> 56)
        }
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
                ck_attention_paged_i8(q, Int32(qw), kPool, vPool, params, Int32(kvw), Int32(blockSize), seqs, Int32(seqs.count), &out,
                                      Int32(qw), Int32(heads), Int32(kvHeads), Int32(d), scale, Int32(window))
            }
            var row = 0
            for (si, (tokens, start)) in shapes.enumerated() {
                func slot(_ pos: Int) -> Int { (Int(tables[si][pos / blockSize]) * blockSize + pos % blockSize) * kvw }
                for t in 0..<tokens {
                    for h in 0..<heads {
                        let g = h / (heads / kvHeads)
                        let n = start + t + 1
                        let lo = window > 0 ? max(0, n - window) : 0
                        let qi = (row + t) * qw + h * d
                        var s = (lo..<n).map { pos in
                            (0..<d).reduce(0.0) { $0 + Double(q[qi + $1]) * dq(kPool[slot(pos) + g * d + $1], g, false) } * Double(scale)
                        }
                        let mx = s.max()!
                        s = s.map { exp($0 - mx) }
                        let z = s.reduce(0, +)
                        for i in 0..<d {
                            let ref = (lo..<n).reduce(0.0) { $0 + s[$1 - lo] / z * dq(vPool[slot($1) + g * d + i], g, true) }
                            #expect(abs(Double(out[qi + i]) - ref) < 1e-5, "\(isa) window \(window) seq\(si) t\(t) h\(h) i\(i)")
                        }
                    }
                }
                row += tokens
            }
        }
    }
}
