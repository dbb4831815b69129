// The weights of one linear layer as the model hands them to a backend: dense matrices in their
// stored precision, or (issue [Q4]) AWQ's 4-bit groups. Dense weights may come in several parts
// stacked along the output dimension (q|k|v, gate|up): the backend fuses them into one matrix at
// load, so one GEMM/GEMV computes them all.

public enum LinearWeights: @unchecked Sendable {
    /// `[out][in]` matrices (bf16, f16 or f32) sharing `in`, stacked in order along `out`.
    case dense([TensorView])
    /// AWQ W4A16: packed 4-bit weights with per-group zero points and scales.
    case awq(AWQWeights)

    /// Output features (rows of the fused matrix).
    public var outFeatures: Int {
        switch self {
        case let .dense(parts): return parts.reduce(0) { $0 + ($1.shape.first ?? 0) }
        case let .awq(w): return w.outFeatures
        }
    }

    /// Input features (columns).
    public var inFeatures: Int {
        switch self {
        case let .dense(parts): return parts.first.map { $0.shape.count == 2 ? $0.shape[1] : 0 } ?? 0
        case let .awq(w): return w.inFeatures
        }
    }

    /// A name for errors and logs.
    public var name: String {
        switch self {
        case let .dense(parts): return parts.map(\.name).joined(separator: "+")
        case let .awq(w): return w.qweight.name
        }
    }
}

/// AWQ's layout (as lmdeploy's `--model-format awq` reads it): `qweight [in][out/8]` int32 with
/// eight 4-bit values each, `qzeros [in/groupSize][out/8]` int32, `scales [in/groupSize][out]` fp16.
public struct AWQWeights: @unchecked Sendable {
    public var qweight: TensorView
    public var qzeros: TensorView
    public var scales: TensorView
    public var groupSize: Int
    public var inFeatures: Int
    public var outFeatures: Int

    public init(qweight: TensorView, qzeros: TensorView, scales: TensorView, groupSize: Int, inFeatures: Int, outFeatures: Int) {
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.groupSize = groupSize
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
    }
}
