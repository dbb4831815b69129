// AWQ's clipping search (AutoAWQ's `_compute_best_clip`): for every output row and input group of
// a linear, the bound ±max|w|·(1 − i/20), i = 0…9, whose quantized group gives the smallest mean
// squared error of the group's partial dot products w_g·x_g over the sampled inputs; the weights
// are then clamped to it before the final quantization. Skipped for q and k (their error goes
// through the q·k product, which a per-linear error does not see), as AutoAWQ does.
//
// The error of a change d of one row-group is mean_t (d·x_t)² = dᵀ G d with G = XᵀX / n, the
// group's Gram matrix: one G×G matrix per group instead of n tokens per candidate.
import Foundation

enum AWQClipSearch {
    static let grid = 20
    static let maxShrink = 0.5

    /// Clamps `weight` (`[out][in]`) in place to the best bound of each (row, group); `x` is the
    /// (already scaled) input sample. Returns the mean chosen shrink (bound / max|w|).
    @discardableResult
    static func clip(_ weight: inout Matrix, x: Matrix, quantizer: GroupQuantizer, tokens: Int) -> Double {
        let g = quantizer.groupSize, out = weight.rows, inF = weight.columns
        precondition(inF % g == 0 && x.columns == inF)
        let sample = x.strided(count: tokens)
        guard sample.rows > 0 else { return 1 }
        let steps = Int(Double(grid) * maxShrink)
        var shrinkSum = 0.0
        for j in 0..<(inF / g) {
            let xs = AWQMath.columns(sample, (j * g)..<((j + 1) * g))
            var gram = AWQMath.matmul(transpose(xs), xs)
            let invN = 1 / Float(sample.rows)
            for i in 0..<gram.values.count { gram.values[i] *= invN }
            let w = AWQMath.columns(weight, (j * g)..<((j + 1) * g))
            var maxAbs = [Float](repeating: 0, count: out)
            for r in 0..<out { for c in 0..<g { maxAbs[r] = Swift.max(maxAbs[r], Swift.abs(w.values[r * g + c])) } }
            var bestErr = [Float](repeating: .infinity, count: out)
            var bestBound = maxAbs
            for step in 0..<steps {
                let factor = 1 - Float(step) / Float(grid)
                var d = w
                for r in 0..<out {
                    let bound = maxAbs[r] * factor
                    for c in 0..<g { d.values[r * g + c] = Swift.min(Swift.max(w.values[r * g + c], -bound), bound) }
                }
                quantizer.fakeQuantize(&d.values, rows: out, columns: g)
                for i in 0..<d.values.count { d.values[i] -= w.values[i] }
                let dg = AWQMath.matmul(d, gram)
                for r in 0..<out {
                    var e: Float = 0
                    for c in 0..<g { e += dg.values[r * g + c] * d.values[r * g + c] }
                    if e < bestErr[r] { bestErr[r] = e; bestBound[r] = maxAbs[r] * factor }
                }
            }
            for r in 0..<out {
                let bound = bestBound[r]
                for c in 0..<g {
                    let k = r * inF + j * g + c
                    weight.values[k] = Swift.min(Swift.max(weight.values[k], -bound), bound)
                }
                shrinkSum += maxAbs[r] > 0 ? Double(bound / maxAbs[r]) : 1
            }
        }
        return shrinkSum / Double(out * (inF / g))
    }

    static func transpose(_ m: Matrix) -> Matrix {
        var t = Matrix(rows: m.columns, columns: m.rows)
        for r in 0..<m.rows { for c in 0..<m.columns { t.values[c * m.rows + r] = m.values[r * m.columns + c] } }
        return t
    }
}
