// AutoAWQ's GEMM layout ("version": "gemm"), which lmdeploy's `--model-format awq`, vLLM and
// transformers read. For a linear with `out` outputs and `in` inputs in groups of G:
//   qweight [in][out/8]  int32  eight 4-bit codes of outputs 8c..8c+7 for one input channel
//   qzeros  [in/G][out/8] int32  the zero points, packed the same way
//   scales  [in/G][out]   fp16
// Within an int32, nibble k (bits 4k..4k+3) holds output 8c + order[k], order = 0 2 4 6 1 3 5 7
// (AutoAWQ's `order_map`: the interleave its dequantization kernel unpacks fastest).
import Foundation

public enum AWQGEMMPacking {
    public static let order = [0, 2, 4, 6, 1, 3, 5, 7]
    /// Inverse of `order`: the nibble holding output 8c + i.
    public static let nibbleOf = [0, 4, 1, 5, 2, 6, 3, 7]

    /// Packs `values` (`[out][inner]`, 4-bit each, row = output) into `[inner][out/8]` int32.
    public static func pack(_ values: [UInt8], out: Int, inner: Int) -> [Int32] {
        precondition(out % 8 == 0 && values.count == out * inner)
        let words = out / 8
        var packed = [Int32](repeating: 0, count: inner * words)
        for c in 0..<words {
            for k in 0..<8 {
                let row = (c * 8 + order[k]) * inner
                let shift = UInt32(4 * k)
                for i in 0..<inner {
                    packed[i * words + c] |= Int32(bitPattern: UInt32(values[row + i] & 0xF) << shift)
                }
            }
        }
        return packed
    }

    /// The inverse of `pack`: `[inner][out/8]` int32 back to `[out][inner]` 4-bit values.
    public static func unpack(_ packed: [Int32], out: Int, inner: Int) -> [UInt8] {
        precondition(out % 8 == 0 && packed.count == inner * out / 8)
        let words = out / 8
        var values = [UInt8](repeating: 0, count: out * inner)
        for i in 0..<inner {
            for c in 0..<words {
                let word = UInt32(bitPattern: packed[i * words + c])
                for k in 0..<8 { values[(c * 8 + order[k]) * inner + i] = UInt8((word >> UInt32(4 * k)) & 0xF) }
            }
        }
        return values
    }

    /// One linear in AutoAWQ's GEMM tensors.
    public struct Tensors: Sendable, Equatable {
        public var qweight: [Int32]
        public var qzeros: [Int32]
        /// `[in/G][out]`, fp16 values held as Float.
        public var scales: [Float]
        public var inFeatures: Int
        public var outFeatures: Int
        public var groupSize: Int
    }

    public static func tensors(of m: QuantizedMatrix) -> Tensors {
        let out = m.rows, inF = m.columns, groups = m.groups
        // codes are [out][in]: pack along out for every input channel.
        let qweight = pack(m.codes, out: out, inner: inF)
        let qzeros = pack(m.zeros, out: out, inner: groups)
        var scales = [Float](repeating: 0, count: groups * out)
        for r in 0..<out { for j in 0..<groups { scales[j * out + r] = m.scales[r * groups + j] } }
        return Tensors(qweight: qweight, qzeros: qzeros, scales: scales, inFeatures: inF, outFeatures: out, groupSize: m.groupSize)
    }

    /// Back to codes, zero points and scales (`[out][…]`), for dequantization and checks.
    public static func matrix(of t: Tensors) -> QuantizedMatrix {
        let out = t.outFeatures, inF = t.inFeatures, groups = inF / t.groupSize
        var scales = [Float](repeating: 0, count: out * groups)
        for j in 0..<groups { for r in 0..<out { scales[r * groups + j] = t.scales[j * out + r] } }
        return QuantizedMatrix(rows: out, columns: inF, groupSize: t.groupSize, codes: unpack(t.qweight, out: out, inner: inF),
                               zeros: unpack(t.qzeros, out: out, inner: groups), scales: scales)
    }
}
