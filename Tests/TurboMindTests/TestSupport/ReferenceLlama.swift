// A plain, obviously-correct Llama-family forward pass in Double over TinyModel's canonical weights:
// the reference the engine's forward pass (and any backend) is checked against on every architecture.
import Foundation
@testable import TurboMind

enum ReferenceLlama {
    /// Logits `[tokens][vocab]` of a full causal forward over `ids` from position 0.
    static func logits(config c: ModelConfig, weights w: TinyModel.Weights, ids: [Int]) -> [[Double]] {
        let n = ids.count, hidden = c.hiddenSize, d = c.headDim
        let heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let inv = c.ropeInverseFrequencies().map(Double.init)
        func matvec(_ m: [Float], rows: Int, _ x: [Double], bias: [Float]? = nil) -> [Double] {
            (0..<rows).map { r in
                var s = bias.map { Double($0[r]) } ?? 0
                for i in x.indices { s += Double(m[r * x.count + i]) * x[i] }
                return s
            }
        }
        func norm(_ x: [Double], _ g: [Float]) -> [Double] {
            let rms = (x.map { $0 * $0 }.reduce(0, +) / Double(x.count) + Double(c.rmsNormEps)).squareRoot()
            return x.indices.map { x[$0] / rms * Double(g[$0]) }
        }
        func rope(_ v: inout [Double], heads: Int, position: Int) {
            for h in 0..<heads {
                for i in 0..<d / 2 {
                    let a = v[h * d + i], b = v[h * d + i + d / 2]
                    let angle = Double(position) * inv[i]
                    v[h * d + i] = a * cos(angle) - b * sin(angle)
                    v[h * d + i + d / 2] = b * cos(angle) + a * sin(angle)
                }
            }
        }
        var x = ids.map { id in (0..<hidden).map { Double(w.embed[id * hidden + $0]) } }
        for layer in w.layers {
            var qs: [[Double]] = [], ks: [[Double]] = [], vs: [[Double]] = []
            for t in 0..<n {
                let h = norm(x[t], layer.attnNorm)
                var q = matvec(layer.q, rows: heads * d, h, bias: layer.qBias)
                var k = matvec(layer.k, rows: kvHeads * d, h, bias: layer.kBias)
                rope(&q, heads: heads, position: t)
                rope(&k, heads: kvHeads, position: t)
                qs.append(q); ks.append(k); vs.append(matvec(layer.v, rows: kvHeads * d, h, bias: layer.vBias))
            }
            for t in 0..<n {
                var attn = [Double](repeating: 0, count: heads * d)
                for h in 0..<heads {
                    let g = h / (heads / kvHeads)
                    var s = (0...t).map { p in (0..<d).reduce(0.0) { $0 + qs[t][h * d + $1] * ks[p][g * d + $1] } / Double(d).squareRoot() }
                    let m = s.max()!
                    s = s.map { exp($0 - m) }
                    let z = s.reduce(0, +)
                    for p in 0...t { for i in 0..<d { attn[h * d + i] += s[p] / z * vs[p][g * d + i] } }
                }
                let o = matvec(layer.o, rows: hidden, attn, bias: layer.oBias)
                for i in 0..<hidden { x[t][i] += o[i] }
                let h2 = norm(x[t], layer.ffnNorm)
                let gate = matvec(layer.gate, rows: c.intermediateSize, h2), up = matvec(layer.up, rows: c.intermediateSize, h2)
                let act = gate.indices.map { gate[$0] / (1 + exp(-gate[$0])) * up[$0] }
                let down = matvec(layer.down, rows: hidden, act)
                for i in 0..<hidden { x[t][i] += down[i] }
            }
        }
        return x.map { matvec(w.lmHead, rows: c.vocabSize, norm($0, w.norm)) }
    }
}
