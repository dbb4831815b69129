// The weights of one linear layer as the model hands them to a backend: dense matrices in their
// stored precision, or (issue [Q4]) AWQ's 4-bit groups. Dense weights may come in several parts
// stacked along the output dimension (q|k|v, gate|up): the backend fuses them into one matrix at
// load, so one GEMM/GEMV computes them all.

public enum LinearWeights: @unchecked Sendable {
    /// `[out][in]` matrices (bf16, f16 or f32) sharing `in`, stacked in order along `out`.
    case dense([TensorView])
    /// AWQ W4A16: packed 4-bit weights with per-group zero points and scales.
    case awq(AWQWeights)
    /// One dense `[out][in]` matrix the backend quantizes to int8 at load, symmetric per row (one fp32
    /// scale each): the LM head with `--lm-head-dtype int8`.
    case int8Rows(TensorView)

    /// Output features (rows of the fused matrix).
    public var outFeatures: Int {
        switch self {
        case let .dense(parts): return parts.reduce(0) { $0 + ($1.shape.first ?? 0) }
        case let .awq(w): return w.outFeatures
        case let .int8Rows(t): return t.shape.first ?? 0
        }
    }

    /// Input features (columns).
    public var inFeatures: Int {
        switch self {
        case let .dense(parts): return parts.first.map { $0.shape.count == 2 ? $0.shape[1] : 0 } ?? 0
        case let .awq(w): return w.inFeatures
        case let .int8Rows(t): return t.shape.count == 2 ? t.shape[1] : 0
        }
    }

    /// A name for errors and logs.
    public var name: String {
        switch self {
        case let .dense(parts): return parts.map(\.name).joined(separator: "+")
        case let .awq(w): return w.qweight.name
        case let .int8Rows(t): return t.name
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

/// The seven AWQ linears of one decoder layer (AutoAWQ layout each).
public struct AWQLayerWeights: @unchecked Sendable {
    public var q, k, v, o, gate, up, down: AWQWeights

    public init(q: AWQWeights, k: AWQWeights, v: AWQWeights, o: AWQWeights, gate: AWQWeights, up: AWQWeights, down: AWQWeights) {
        (self.q, self.k, self.v, self.o, self.gate, self.up, self.down) = (q, k, v, o, gate, up, down)
    }

    public var all: [AWQWeights] { [q, k, v, o, gate, up, down] }
}

extension AWQWeights {
    /// `parts` (sharing inFeatures and groupSize) stacked along the output dimension into one owned
    /// AWQ matrix: row i of qweight/qzeros/scales is the parts' rows i one after another. A single
    /// part is returned as is. The copy is 4-bit sized and lives only while a backend repacks it.
    public static func stacked(_ parts: [AWQWeights]) -> AWQWeights {
        precondition(!parts.isEmpty)
        if parts.count == 1 { return parts[0] }
        let first = parts[0]
        let outFeatures = parts.reduce(0) { $0 + $1.outFeatures }
        let groups = first.inFeatures / first.groupSize
        func stack(_ pick: (AWQWeights) -> TensorView, rows: Int, columnsOf: (AWQWeights) -> Int, dtype: DType) -> TensorView {
            let total = parts.reduce(0) { $0 + columnsOf($1) }
            return TensorView(name: parts.map { pick($0).name }.joined(separator: "+"), dtype: dtype, shape: [rows, total]) { dst in
                let esize = dtype.byteSize
                var column = 0
                for part in parts {
                    let src = pick(part).data, width = columnsOf(part) * esize
                    for r in 0..<rows {
                        let at = (r * total + column) * esize
                        UnsafeMutableRawBufferPointer(rebasing: dst[at..<(at + width)])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(r * width)..<(r * width + width)]))
                    }
                    column += columnsOf(part)
                }
            }
        }
        return AWQWeights(qweight: stack({ $0.qweight }, rows: first.inFeatures, columnsOf: { $0.outFeatures / 8 }, dtype: .i32),
                          qzeros: stack({ $0.qzeros }, rows: groups, columnsOf: { $0.outFeatures / 8 }, dtype: .i32),
                          scales: stack({ $0.scales }, rows: groups, columnsOf: { $0.outFeatures }, dtype: .f16),
                          groupSize: first.groupSize, inFeatures: first.inFeatures, outFeatures: outFeatures)
    }

    /// Bytes of the packed weights, zeros and scales.
    public var byteCount: Int { qweight.data.count + qzeros.data.count + scales.data.count }

    /// The uint4 value of output `row`, input `column` (AutoAWQ's nibble order).
    public func value(row: Int, column: Int) -> Int {
        let word = qweight.data.loadUnaligned(fromByteOffset: (column * (outFeatures / 8) + row / 8) * 4, as: UInt32.self)
        return Int((word >> (4 * UInt32(AWQPacking.slot[row % 8]))) & 15)
    }

    /// The zero point and scale of output `row` in group `group`.
    public func zeroAndScale(row: Int, group: Int) -> (zero: Int, scale: UInt16) {
        let word = qzeros.data.loadUnaligned(fromByteOffset: (group * (outFeatures / 8) + row / 8) * 4, as: UInt32.self)
        let zero = Int((word >> (4 * UInt32(AWQPacking.slot[row % 8]))) & 15)
        return (zero, scales.data.loadUnaligned(fromByteOffset: (group * outFeatures + row) * 2, as: UInt16.self))
    }
}

/// AutoAWQ's order of eight 4-bit values in an int32: nibble i holds output 8c + order[i].
public enum AWQPacking {
    public static let order = [0, 2, 4, 6, 1, 3, 5, 7]
    /// The nibble holding output 8c + j: the inverse of `order`.
    public static let slot = [0, 4, 1, 5, 2, 6, 3, 7]
}
