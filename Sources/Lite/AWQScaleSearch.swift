// AWQ's scale search (Lin et al., 2023, §3.2): for linears sharing an input x, per-input-channel
// scales s = mean|x|^α, normalised so that max(s)·min(s) = 1, over a grid of α = 0, 1/n, …,
// (n−1)/n; each candidate quantizes W·diag(s) and undoes the scale, Q(W·diag(s))·diag(s)⁻¹, and
// the α whose output on the sampled inputs is closest (mean squared error) to the fp output wins.
// Round-to-nearest (s = 1) is always a candidate — α = 0 of the paper's grid; with duo scaling α = 0
// is s = 1/mean(|w|/max|w|), so s = 1 is scored beside the grid — and the search never picks worse
// than RTN on its own sample.
//
// What "the output" is, per group (as AutoAWQ's module2inspect, except q/k/v):
//   q/k/v      the three projections' outputs (AutoAWQ runs the whole attention; the sampled rows
//              are single tokens, not whole windows, so attention cannot be recomputed on them)
//   gate/up    the MLP's output, down(silu(gate x) · up x), with down in fp
//   o, down    the linear's own output
import Foundation

public struct AWQScaleChoice: Sendable, Equatable {
    /// The winning α.
    public var alpha: Float
    /// Per input channel.
    public var scales: [Float]
    /// Mean squared output error for each α of the grid.
    public var losses: [Double]
    /// Mean squared output error of round-to-nearest (s = 1).
    public var rtnLoss: Double

    public var bestLoss: Double { Swift.min(losses.min() ?? rtnLoss, rtnLoss) }
}

enum AWQScaleSearch {
    /// s = mean^α clamped at 1e-4 — or, with `weightMean` (AutoAWQ's duo scaling),
    /// mean^α / (weightMean^(1−α) + 1e-4) — divided by √(max·min); non-finite values become 1 (AutoAWQ).
    static func scales(mean: [Float], alpha: Float, weightMean: [Float]? = nil) -> [Float] {
        var s: [Float]
        if let wm = weightMean {
            s = zip(mean, wm).map { x, w in
                Swift.max(Foundation.pow(Swift.max(x, 0), alpha) / (Foundation.pow(w, 1 - alpha) + 1e-4), 1e-4)
            }
        } else {
            s = mean.map { Swift.max(Foundation.pow(Swift.max($0, 0), alpha), 1e-4) }
        }
        let norm = (s.max()! * s.min()!).squareRoot()
        s = s.map { let v = $0 / norm; return v.isFinite ? v : 1 }
        return s
    }

    /// Q(W·diag(s))·diag(s)⁻¹.
    static func scaledFakeQuantized(_ w: Matrix, scales s: [Float], quantizer: GroupQuantizer) -> Matrix {
        var m = w
        AWQMath.scaleColumns(&m, by: s)
        quantizer.fakeQuantize(&m.values, rows: m.rows, columns: m.columns)
        AWQMath.divideColumns(&m, by: s)
        return m
    }

    static func grid(_ n: Int) -> [Float] { (0..<n).map { Float($0) / Float(n) } }

    /// Per input channel, the mean over output rows of |w| / max|w| of its quantization group
    /// (AutoAWQ's w_mean for duo scaling), over the rows of all `weights`.
    static func weightMean(_ weights: [Matrix], groupSize: Int) -> [Float] {
        let columns = weights[0].columns
        var sum = [Double](repeating: 0, count: columns)
        var rows = 0
        for w in weights {
            for r in 0..<w.rows {
                for j in 0..<(columns / groupSize) {
                    let base = r * columns + j * groupSize
                    var m: Float = 0
                    for c in 0..<groupSize { m = Swift.max(m, Swift.abs(w.values[base + c])) }
                    for c in 0..<groupSize { sum[j * groupSize + c] += Double(Swift.abs(w.values[base + c]) / (m + 1e-6)) }
                }
            }
            rows += w.rows
        }
        return sum.map { Float($0 / Double(rows)) }
    }

    /// The search for linears whose own outputs are compared: `weight` is their rows stacked.
    /// `expand` maps the scales (one per entry of `mean`) onto the linears' input channels (identity
    /// but for o under GQA, where one v channel feeds the o channels of all its query heads);
    /// the choice's `scales` are the unexpanded ones.
    static func searchLinear(x: Matrix, mean: [Float], weight: Matrix, quantizer: GroupQuantizer, gridPoints: Int,
                             weightMean: [Float]? = nil, expand: ([Float]) -> [Float] = { $0 }) -> AWQScaleChoice {
        return choose(mean: mean, gridPoints: gridPoints, weightMean: weightMean) { s in
            var delta = scaledFakeQuantized(weight, scales: expand(s), quantizer: quantizer)
            // (W − Ŵ)·x: the output error of every row at once.
            for i in 0..<delta.values.count { delta.values[i] = weight.values[i] - delta.values[i] }
            let e = AWQMath.matmulNT(x, delta)
            return AWQMath.meanSquaredDifference(e.values, [Float](repeating: 0, count: e.values.count))
        }
    }

    /// down(silu(gate·x) ⊙ up·x).
    static func mlp(_ x: Matrix, gate: Matrix, up: Matrix, down: Matrix) -> Matrix {
        var h = AWQMath.matmulNT(x, gate)
        let u = AWQMath.matmulNT(x, up)
        for i in 0..<h.values.count { h.values[i] = AWQMath.silu(h.values[i]) * u.values[i] }
        return AWQMath.matmulNT(h, down)
    }

    /// The gate/up search, scored on the MLP's output with down in fp.
    static func searchMLP(x: Matrix, mean: [Float], gate: Matrix, up: Matrix, down: Matrix, quantizer: GroupQuantizer,
                          gridPoints: Int, weightMean: [Float]? = nil) -> AWQScaleChoice {
        let reference = mlp(x, gate: gate, up: up, down: down)
        return choose(mean: mean, gridPoints: gridPoints, weightMean: weightMean) { s in
            let out = mlp(x, gate: scaledFakeQuantized(gate, scales: s, quantizer: quantizer),
                          up: scaledFakeQuantized(up, scales: s, quantizer: quantizer), down: down)
            return AWQMath.meanSquaredDifference(out.values, reference.values)
        }
    }

    /// Scores every α of the grid and round-to-nearest with `loss`; the smallest wins (RTN on a tie).
    static func choose(mean: [Float], gridPoints: Int, weightMean: [Float]?, loss: ([Float]) -> Double) -> AWQScaleChoice {
        let ones = [Float](repeating: 1, count: mean.count)
        // Without duo scaling, α = 0 is s = 1 exactly: its loss is RTN's, not computed twice.
        let rtn: Double? = weightMean == nil ? nil : loss(ones)
        var best: (loss: Double, alpha: Float, scales: [Float]) = (rtn ?? .infinity, 0, ones)
        var losses: [Double] = []
        for alpha in grid(gridPoints) {
            let s = scales(mean: mean, alpha: alpha, weightMean: weightMean)
            let l = loss(s)
            losses.append(l)
            if l < best.loss { best = (l, alpha, s) }
        }
        return AWQScaleChoice(alpha: best.alpha, scales: best.scales, losses: losses, rtnLoss: rtn ?? losses[0])
    }
}
