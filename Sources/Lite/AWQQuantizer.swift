// Asymmetric per-group integer quantization of a linear weight, as AutoAWQ's
// `pseudo_quantize_tensor` (zero_point = True) does it, over groups of `groupSize` consecutive
// input channels of one output row:
//   scale = max(max − min, 1e-5) / (2^bits − 1)      rounded to fp16 (what the file stores)
//   zero  = clamp(−round(min / scale), 0, 2^bits − 1)
//   q     = clamp(round(w / scale) + zero, 0, 2^bits − 1)
//   w'    = (q − zero) · scale
// Rounding is to nearest, ties to even (torch.round). The search and the final quantization share
// this one function, so the error the search minimises is the error of the written weights.
import Foundation

/// A quantized `[out][in]` matrix: codes and per-(row, group) zero points and scales.
public struct QuantizedMatrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    public let groupSize: Int
    /// `[rows][columns]`, each in 0..<2^bits.
    public var codes: [UInt8]
    /// `[rows][columns / groupSize]`.
    public var zeros: [UInt8]
    /// `[rows][columns / groupSize]`, exactly representable in fp16.
    public var scales: [Float]

    public var groups: Int { columns / groupSize }

    /// (q − zero) · scale, `[rows][columns]`.
    public func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        let g = groups
        for r in 0..<rows {
            for j in 0..<g {
                let s = scales[r * g + j], z = Float(zeros[r * g + j])
                let base = r * columns + j * groupSize
                for c in base..<(base + groupSize) { out[c] = (Float(codes[c]) - z) * s }
            }
        }
        return out
    }
}

public struct GroupQuantizer: Sendable {
    public let bits: Int
    public let groupSize: Int
    var maxCode: Float { Float((1 << bits) - 1) }

    public init(bits: Int, groupSize: Int) {
        self.bits = bits
        self.groupSize = groupSize
    }

    /// Scale and zero point of one group `w`.
    @inline(__always)
    func parameters(_ w: UnsafeBufferPointer<Float>) -> (scale: Float, zero: Float) {
        var lo = w[0], hi = w[0]
        for x in w { lo = Swift.min(lo, x); hi = Swift.max(hi, x) }
        let scale = Float(Float16(Swift.max(hi - lo, 1e-5) / maxCode))
        let zero = Swift.min(Swift.max((-(lo / scale)).rounded(.toNearestOrEven), 0), maxCode)
        return (scale, zero)
    }

    /// Replaces `w` (`[rows][columns]`) by its quantize-dequantize round trip.
    public func fakeQuantize(_ w: inout [Float], rows: Int, columns: Int) {
        precondition(columns % groupSize == 0 && w.count == rows * columns)
        let maxCode = self.maxCode, groupSize = self.groupSize
        w.withUnsafeMutableBufferPointer { m in
            // Rows are disjoint: each iteration writes only its own row.
            nonisolated(unsafe) let base = m.baseAddress!
            DispatchQueue.concurrentPerform(iterations: rows) { r in
                for j in 0..<(columns / groupSize) {
                    let g = UnsafeMutableBufferPointer(start: base + r * columns + j * groupSize, count: groupSize)
                    let (scale, zero) = parameters(UnsafeBufferPointer(g))
                    for i in 0..<groupSize {
                        let q = Swift.min(Swift.max((g[i] / scale).rounded(.toNearestOrEven) + zero, 0), maxCode)
                        g[i] = (q - zero) * scale
                    }
                }
            }
        }
    }

    /// The codes, zero points and scales of `w` (`[rows][columns]`).
    public func quantize(_ w: [Float], rows: Int, columns: Int) -> QuantizedMatrix {
        precondition(columns % groupSize == 0 && w.count == rows * columns)
        let groups = columns / groupSize
        var codes = [UInt8](repeating: 0, count: rows * columns)
        var zeros = [UInt8](repeating: 0, count: rows * groups)
        var scales = [Float](repeating: 0, count: rows * groups)
        w.withUnsafeBufferPointer { m in
            for r in 0..<rows {
                for j in 0..<groups {
                    let start = r * columns + j * groupSize
                    let g = UnsafeBufferPointer(rebasing: m[start..<(start + groupSize)])
                    let (scale, zero) = parameters(g)
                    scales[r * groups + j] = scale
                    zeros[r * groups + j] = UInt8(zero)
                    for i in 0..<groupSize {
                        codes[start + i] = UInt8(Swift.min(Swift.max((g[i] / scale).rounded(.toNearestOrEven) + zero, 0), maxCode))
                    }
                }
            }
        }
        return QuantizedMatrix(rows: rows, columns: columns, groupSize: groupSize, codes: codes, zeros: zeros, scales: scales)
    }
}
