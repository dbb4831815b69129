// One decoder layer through AWQ: search the scales of each group of linears sharing an input,
// fold them into the op before (a norm's weight or a linear's output rows), optionally search the
// clipping bounds on the scaled weights and inputs, then quantize all seven linears.
//
//   group      linears         folded into            condition
//   attention  q, k, v         input_layernorm        —
//   output     o               v's rows (and bias)    o's input channel (head h, dim d) is v's output
//                                                     (kv head of h, d): with GQA one v channel feeds
//                                                     the o channels of all its query heads, so the
//                                                     scale is per v channel, shared by those heads
//                                                     (AutoAWQ skips o when the shapes differ), and
//                                                     its mean |x| is the heads' average
//   mlp        gate, up        post_attention_layernorm
//   down       down            up's rows
import Foundation
import TurboMind

/// A layer's weights as fp32 working copies, with their checkpoint names.
struct AWQWorkingLayer {
    var attnNorm: [Float], ffnNorm: [Float]
    var q: Matrix, k: Matrix, v: Matrix, o: Matrix, gate: Matrix, up: Matrix, down: Matrix
    var vBias: [Float]?
    let names: LayerWeights

    init(_ w: LayerWeights) {
        func matrix(_ t: TensorView) -> Matrix { Matrix(rows: t.shape[0], columns: t.shape[1], values: t.toFloatArray()) }
        names = w
        attnNorm = w.attnNorm.toFloatArray()
        ffnNorm = w.ffnNorm.toFloatArray()
        q = matrix(w.q); k = matrix(w.k); v = matrix(w.v); o = matrix(w.o)
        gate = matrix(w.gate); up = matrix(w.up); down = matrix(w.down)
        vBias = w.vBias?.toFloatArray()
    }

    /// The seven linears with their weight tensors' names, in checkpoint order.
    var linears: [(name: String, weight: Matrix)] {
        [(names.q.name, q), (names.k.name, k), (names.v.name, v), (names.o.name, o),
         (names.gate.name, gate), (names.up.name, up), (names.down.name, down)]
    }
}

/// What the search chose for one layer (written to awq_search.json).
public struct AWQLayerReport: Sendable, Codable, Equatable {
    public struct Group: Sendable, Codable, Equatable {
        public var name: String
        public var alpha: Float
        /// Mean squared output error on the sample: round-to-nearest (α = 0) and the chosen α.
        public var rtnLoss: Double
        public var awqLoss: Double
        enum CodingKeys: String, CodingKey { case name, alpha, rtnLoss = "rtn_mse", awqLoss = "awq_mse" }
    }
    public var layer: Int
    public var groups: [Group]
    /// Linear → mean clipping bound / max|w| (1 = not clipped).
    public var clip: [String: Double]
    public var sampleRows: Int
    enum CodingKeys: String, CodingKey { case layer, groups, clip, sampleRows = "sample_rows" }
}

/// How a tensor of the checkpoint changes in the output.
public enum AWQReplacement: Sendable {
    /// A linear's weight becomes qweight, qzeros and scales.
    case quantized(QuantizedMatrix)
    /// A norm weight or bias with scales folded in (written in the tensor's dtype).
    case values([Float])
}

enum AWQLayer {
    static func process(layer index: Int, weights w: inout AWQWorkingLayer, inputs input: AWQLayerInputs, config: ModelConfig,
                        options: AWQOptions) -> (replacements: [String: AWQReplacement], report: AWQLayerReport) {
        let quantizer = GroupQuantizer(bits: options.bits, groupSize: options.groupSize)
        var x = input
        var groups: [AWQLayerReport.Group] = []
        var replacements: [String: AWQReplacement] = [:]
        func record(_ name: String, _ c: AWQScaleChoice) {
            groups.append(.init(name: name, alpha: c.alpha, rtnLoss: c.rtnLoss, awqLoss: c.bestLoss))
        }
        if options.searchScale {
            // All four searches see the original weights and inputs (as AutoAWQ's, which apply the
            // scales only once every group's are chosen).
            let duo = options.duoScaling, g = options.groupSize
            let attention = AWQScaleSearch.searchLinear(x: x.qkv, mean: x.qkvMean, weight: AWQMath.stacked([w.q, w.k, w.v]),
                                                        quantizer: quantizer, gridPoints: options.scaleGrid,
                                                        weightMean: duo ? AWQScaleSearch.weightMean([w.q, w.k, w.v], groupSize: g) : nil)
            let ratio = config.queryHeadsPerKVHead, d = config.headDim
            // o's input channel of query head h and dim j ← v channel (h / ratio, j).
            let expand: ([Float]) -> [Float] = { s in
                (0..<config.qDim).map { c in s[(c / d / ratio) * d + c % d] }
            }
            // Per v channel: the average over its query heads' o channels.
            func perV(_ m: [Float]) -> [Float] {
                var v = [Float](repeating: 0, count: config.kvDim)
                for c in 0..<config.qDim { v[(c / d / ratio) * d + c % d] += m[c] / Float(ratio) }
                return v
            }
            let vMean = perV(x.oMean)
            let output: AWQScaleChoice? = options.scaleOutput
                ? AWQScaleSearch.searchLinear(x: x.o, mean: vMean, weight: w.o, quantizer: quantizer, gridPoints: options.scaleGrid,
                                              weightMean: duo ? perV(AWQScaleSearch.weightMean([w.o], groupSize: g)) : nil, expand: expand)
                : nil
            let mlp = AWQScaleSearch.searchMLP(x: x.gateUp, mean: x.gateUpMean, gate: w.gate, up: w.up, down: w.down,
                                               quantizer: quantizer, gridPoints: options.scaleGrid,
                                               weightMean: duo ? AWQScaleSearch.weightMean([w.gate, w.up], groupSize: g) : nil)
            let down = AWQScaleSearch.searchLinear(x: x.down, mean: x.downMean, weight: w.down, quantizer: quantizer,
                                                   gridPoints: options.scaleGrid,
                                                   weightMean: duo ? AWQScaleSearch.weightMean([w.down], groupSize: g) : nil)
            record("q_k_v", attention)
            if let output { record("o", output) }
            record("gate_up", mlp)
            record("down", down)

            // Fold: the op before divides, the linears after multiply (an fp identity).
            let s1 = attention.scales
            for c in 0..<s1.count { w.attnNorm[c] /= s1[c] }
            AWQMath.scaleColumns(&w.q, by: s1); AWQMath.scaleColumns(&w.k, by: s1); AWQMath.scaleColumns(&w.v, by: s1)
            AWQMath.divideColumns(&x.qkv, by: s1)
            if let output {
                let s2 = output.scales, s2o = expand(s2)
                AWQMath.divideRows(&w.v, by: s2)
                if var b = w.vBias { for c in 0..<b.count { b[c] /= s2[c] }; w.vBias = b }
                AWQMath.scaleColumns(&w.o, by: s2o)
                AWQMath.divideColumns(&x.o, by: s2o)
            }
            let s3 = mlp.scales
            for c in 0..<s3.count { w.ffnNorm[c] /= s3[c] }
            AWQMath.scaleColumns(&w.gate, by: s3); AWQMath.scaleColumns(&w.up, by: s3)
            AWQMath.divideColumns(&x.gateUp, by: s3)
            let s4 = down.scales
            AWQMath.divideRows(&w.up, by: s4)
            AWQMath.scaleColumns(&w.down, by: s4)
            AWQMath.divideColumns(&x.down, by: s4)

            replacements[w.names.attnNorm.name] = .values(w.attnNorm)
            replacements[w.names.ffnNorm.name] = .values(w.ffnNorm)
            if let b = w.vBias, let name = w.names.vBias?.name { replacements[name] = .values(b) }
        }
        var clip: [String: Double] = [:]
        if options.searchClip {
            clip[w.names.v.name] = AWQClipSearch.clip(&w.v, x: x.qkv, quantizer: quantizer, tokens: options.clipTokens)
            clip[w.names.o.name] = AWQClipSearch.clip(&w.o, x: x.o, quantizer: quantizer, tokens: options.clipTokens)
            clip[w.names.gate.name] = AWQClipSearch.clip(&w.gate, x: x.gateUp, quantizer: quantizer, tokens: options.clipTokens)
            clip[w.names.up.name] = AWQClipSearch.clip(&w.up, x: x.gateUp, quantizer: quantizer, tokens: options.clipTokens)
            clip[w.names.down.name] = AWQClipSearch.clip(&w.down, x: x.down, quantizer: quantizer, tokens: options.clipTokens)
        }
        for (name, m) in w.linears {
            replacements[name] = .quantized(quantizer.quantize(m.values, rows: m.rows, columns: m.columns))
        }
        return (replacements, AWQLayerReport(layer: index, groups: groups, clip: clip, sampleRows: input.qkv.rows))
    }
}
