// The inputs AWQ searches on: one calibration forward of the fp model through the engine, with a
// forward observer that folds every token into the per-channel statistics (`CalibrationStats`:
// mean |x| for the scales) and keeps a seeded random sample of rows of each linear's input for the
// output-error search.
//
// Why one forward of the fp model is AWQ's procedure: AutoAWQ (and llm-awq) compute layer i+1's
// input by running layer i with its fp weights before they are quantized (the searched scales are
// an exact fp re-parametrisation, the clip and the rounding come later), so every layer's inputs
// are the fp model's activations — which the observer sees in one pass, with no per-layer forward
// code of our own. Memory: the sampled rows, `searchTokens` × (2·hidden + heads·headDim + inter)
// fp32 values per layer (SmolLM2, 2048 rows: 27 MB a layer, 0.8 GB in all).
import Foundation
import TurboMind

/// A row-major `[rows][columns]` fp32 matrix.
public struct Matrix: Sendable, Equatable {
    public var rows: Int
    public var columns: Int
    public var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns, "Matrix: \(values.count) values for \(rows)×\(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public init(rows: Int, columns: Int) { self.init(rows: rows, columns: columns, values: [Float](repeating: 0, count: rows * columns)) }

    /// Rows `0, step, 2·step, …`, at most `count` of them.
    func strided(count: Int) -> Matrix {
        guard rows > count else { return self }
        let step = rows / count
        var out: [Float] = []
        out.reserveCapacity(count * columns)
        for r in stride(from: 0, to: step * count, by: step) { out += values[(r * columns)..<((r + 1) * columns)] }
        return Matrix(rows: count, columns: columns, values: out)
    }
}

/// One layer's sampled linear inputs and their per-channel mean |x| over all tokens.
public struct AWQLayerInputs: Sendable {
    public var qkv: Matrix, o: Matrix, gateUp: Matrix, down: Matrix
    public var qkvMean: [Float], oMean: [Float], gateUpMean: [Float], downMean: [Float]
}

/// The observer of the calibration forward.
final class AWQActivationCapture: ForwardObserver, @unchecked Sendable {
    static let observed: [ObservedTensor] = [.qkvInput, .oInput, .gateUpInput, .downInput]

    let stats: CalibrationStats
    /// Global row indices kept (the same rows for every layer and tensor).
    private let keep: [Bool]
    /// [layer][tensor] rows seen so far.
    private var seen: [[Int]]
    /// [layer][tensor] kept rows, flattened.
    private var rows: [[[Float]]]

    init(config: ModelConfig, totalRows: Int, sampleRows: Int, seed: UInt64) {
        stats = CalibrationStats(model: CalibratedModel(config))
        var keep = [Bool](repeating: false, count: totalRows)
        if sampleRows >= totalRows {
            keep = [Bool](repeating: true, count: totalRows)
        } else {
            // A seeded partial Fisher–Yates shuffle: `sampleRows` distinct rows, uniformly.
            var rng = SplitMix64(seed: seed ^ 0x6177_7121)
            var index = Array(0..<totalRows)
            for i in 0..<sampleRows {
                let j = i + Int(rng.next(below: UInt64(totalRows - i)))
                index.swapAt(i, j)
                keep[index[i]] = true
            }
        }
        self.keep = keep
        seen = Array(repeating: [0, 0, 0, 0], count: config.numHiddenLayers)
        rows = Array(repeating: [[], [], [], []], count: config.numHiddenLayers)
    }

    func observe(layer: Int, tensor: ObservedTensor, rows n: Int, width: Int, values: [Float], plan: BatchPlan) {
        stats.observe(layer: layer, tensor: tensor, rows: n, width: width, values: values, plan: plan)
        guard let t = Self.observed.firstIndex(of: tensor) else { return }
        let start = seen[layer][t]
        seen[layer][t] += n
        for r in 0..<n where start + r < keep.count && keep[start + r] {
            rows[layer][t] += values[(r * width)..<((r + 1) * width)]
        }
    }

    /// Layer `l`'s inputs (call once per layer: the rows are handed over, not copied).
    func take(layer l: Int, config: ModelConfig) -> AWQLayerInputs {
        func matrix(_ t: Int, _ width: Int) -> Matrix {
            let v = rows[l][t]
            rows[l][t] = []
            return Matrix(rows: v.count / width, columns: width, values: v)
        }
        let s = stats.inputs[l]
        return AWQLayerInputs(qkv: matrix(0, config.hiddenSize), o: matrix(1, config.qDim),
                              gateUp: matrix(2, config.hiddenSize), down: matrix(3, config.intermediateSize),
                              qkvMean: s[.qkv]!.absmean, oMean: s[.o]!.absmean, gateUpMean: s[.gateUp]!.absmean, downMean: s[.down]!.absmean)
    }
}
