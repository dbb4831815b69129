// The int4 (AWQ W4A16) TurboMind workspace: `weight_type = int4`, `group_size = G` in config.ini,
// lmdeploy's int4 file names, our own byte layout (lmdeploy's are a CUDA swizzle made by its GPU
// helpers; see docs/w4a16.md). Per linear file NAME.R (the fp16 workspace's column maps: q|k|v with
// q/k permuted for interleaved rotary, gate|up fused as w13, rows split for wo and w2):
//   NAME.R.qweight       int32 [rows, cols/8]: AutoAWQ's packing of the uint4 matrix F [rows, cols],
//                        F[i][c] = Q_src(c)[row(c)][inputOffset + i]
//   NAME.R.scales_zeros  fp16 [rows/G, cols, 2]: (scale, zero) of each group of G rows and column
// Norms, embeddings, the LM head and biases are the fp16 workspace's files.

import Foundation

/// One int4 linear file pair of a workspace.
struct Int4FilePlan: Sendable {
    /// `layers.N.attention.w_qkv.R` (the files add `.qweight` and `.scales_zeros`).
    var name: String
    var rows: Int
    var columns: [ColumnSource]
    var inputOffset: Int
    /// Canonical names (`layers.N.q`, ...) the columns' `source` indexes.
    var sources: [String]

    var qweightName: String { name + ".qweight" }
    var scalesZerosName: String { name + ".scales_zeros" }
    var qweightBytes: Int { rows * columns.count / 8 * 4 }
    func scalesZerosBytes(group: Int) -> Int { rows / group * columns.count * 2 * 2 }
}

extension WorkspacePlan {
    /// Whether a file of the fp16 plan is a linear weight (int4 workspaces replace those).
    static func isLinear(_ tensor: TensorPlan) -> Bool {
        if case .transposed = tensor.kind { return true }
        return false
    }

    /// The int4 linear files of layer `i`, in lmdeploy's order.
    func int4Linears(_ i: Int) -> [Int4FilePlan] {
        let p = "layers.\(i)."
        var plans: [Int4FilePlan] = []
        for r in 0..<tp {
            plans.append(Int4FilePlan(name: p + "attention.w_qkv.\(r)", rows: hidden, columns: qkvColumns(rank: r), inputOffset: 0,
                                      sources: [p + "q", p + "k", p + "v"]))
        }
        let oShare = heads * headDim / tp
        for r in 0..<tp {
            plans.append(Int4FilePlan(name: p + "attention.wo.\(r)", rows: oShare, columns: (0..<hidden).map { ColumnSource(source: 0, row: $0) },
                                      inputOffset: r * oShare, sources: [p + "o"]))
        }
        for r in 0..<tp {
            let gate = sliceColumns(rank: r, count: inter)
            let up = gate.map { ColumnSource(source: 1, row: $0.row) }
            plans.append(Int4FilePlan(name: p + "feed_forward.w13.\(r)", rows: hidden, columns: gate + up, inputOffset: 0,
                                      sources: [p + "gate", p + "up"]))
        }
        let interShare = inter / tp
        for r in 0..<tp {
            plans.append(Int4FilePlan(name: p + "feed_forward.w2.\(r)", rows: interShare, columns: (0..<hidden).map { ColumnSource(source: 0, row: $0) },
                                      inputOffset: r * interShare, sources: [p + "down"]))
        }
        return plans
    }

    /// Every int4 file pair (all layers).
    var int4Files: [Int4FilePlan] { (0..<layers).flatMap(int4Linears) }

    /// Checks that every file's row split falls on group boundaries and its columns pack by 8.
    func checkInt4(group: Int, file: String) throws {
        for f in int4Linears(0) {
            guard f.rows % group == 0, f.inputOffset % group == 0 else {
                throw FormatError.invalidConfigValue(file: file, key: "group_size", value: "\(group)",
                                                     expected: "a divisor of \(f.name)'s \(f.rows) input rows per rank (tensor parallelism splits wo and w2 by input rows; use a smaller --tp or group size)")
            }
            guard f.columns.count % 8 == 0 else {
                throw FormatError.invalid(file: file, field: f.name, expected: "a multiple of 8 output columns per rank for int4 packing (has \(f.columns.count))")
            }
        }
    }
}

extension AWQLayerWeights {
    /// The AWQ linear under canonical name `layers.N.q` etc.
    func canonical(_ name: String) -> AWQWeights? {
        switch name.split(separator: ".").last.map(String.init) ?? name {
        case "q": return q
        case "k": return k
        case "v": return v
        case "o": return o
        case "gate": return gate
        case "up": return up
        case "down": return down
        default: return nil
        }
    }
}

enum AWQWorkspace {
    /// The fp16 bit patterns of 0...15 (zero points in scales_zeros).
    static let zeroBits: [UInt16] = (0..<16).map { Float16(Float($0)).bitPattern }

    /// The two files of `plan` from the layer's AWQ linears: (qweight bytes, scales_zeros bytes).
    static func files(_ plan: Int4FilePlan, layer: AWQLayerWeights, group: Int) -> ([UInt8], [UInt8]) {
        let sources = plan.sources.map { layer.canonical($0)! }
        let cols = plan.columns.count
        var qweight = [UInt8](repeating: 0, count: plan.qweightBytes)
        qweight.withUnsafeMutableBytes { out in
            for i in 0..<plan.rows {
                let input = plan.inputOffset + i
                for c8 in 0..<(cols / 8) {
                    var word: UInt32 = 0
                    for s in 0..<8 {
                        let column = plan.columns[8 * c8 + AWQPacking.order[s]]
                        word |= UInt32(sources[column.source].value(row: column.row, column: input)) << (4 * UInt32(s))
                    }
                    out.storeBytes(of: word.littleEndian, toByteOffset: (i * cols / 8 + c8) * 4, as: UInt32.self)
                }
            }
        }
        var sz = [UInt8](repeating: 0, count: plan.scalesZerosBytes(group: group))
        sz.withUnsafeMutableBytes { out in
            for g in 0..<(plan.rows / group) {
                let sourceGroup = plan.inputOffset / group + g
                for (c, column) in plan.columns.enumerated() {
                    let (zero, scale) = sources[column.source].zeroAndScale(row: column.row, group: sourceGroup)
                    out.storeBytes(of: scale.littleEndian, toByteOffset: ((g * cols + c) * 2) * 2, as: UInt16.self)
                    out.storeBytes(of: zeroBits[zero].littleEndian, toByteOffset: ((g * cols + c) * 2 + 1) * 2, as: UInt16.self)
                }
            }
        }
        return (qweight, sz)
    }

    /// Owned, zeroed AutoAWQ-layout tensors for a linear of `out` × `inFeatures`.
    static func emptyLinear(_ name: String, out: Int, inFeatures: Int, group: Int) -> AWQWeights {
        AWQWeights(qweight: TensorView(name: name + ".qweight", dtype: .i32, shape: [inFeatures, out / 8]) { _ in },
                   qzeros: TensorView(name: name + ".qzeros", dtype: .i32, shape: [inFeatures / group, out / 8]) { _ in },
                   scales: TensorView(name: name + ".scales", dtype: .f16, shape: [inFeatures / group, out]) { _ in },
                   groupSize: group, inFeatures: inFeatures, outFeatures: out)
    }

    /// Scatters the file pair of `plan` back into the AutoAWQ-layout linears `targets` (indexed like
    /// plan.sources, from `emptyLinear`): the inverse of `files`.
    static func restore(_ plan: Int4FilePlan, qweight: UnsafeRawBufferPointer, scalesZeros: UnsafeRawBufferPointer,
                        targets: [AWQWeights], group: Int) throws {
        let cols = plan.columns.count
        func mutable(_ t: TensorView) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(mutating: t.data.baseAddress!) }
        let tq = targets.map { mutable($0.qweight) }, tz = targets.map { mutable($0.qzeros) }, ts = targets.map { mutable($0.scales) }
        let outs = targets.map(\.outFeatures)
        for i in 0..<plan.rows {
            let input = plan.inputOffset + i
            for c8 in 0..<(cols / 8) {
                let word = UInt32(littleEndian: qweight.loadUnaligned(fromByteOffset: (i * cols / 8 + c8) * 4, as: UInt32.self))
                for s in 0..<8 {
                    let column = plan.columns[8 * c8 + AWQPacking.order[s]]
                    let q = (word >> (4 * UInt32(s))) & 15
                    let t = column.source, row = column.row
                    let at = (input * (outs[t] / 8) + row / 8) * 4
                    let shift = 4 * UInt32(AWQPacking.slot[row % 8])
                    let old = tq[t].loadUnaligned(fromByteOffset: at, as: UInt32.self)
                    tq[t].storeBytes(of: (old & ~(15 << shift)) | (q << shift), toByteOffset: at, as: UInt32.self)
                }
            }
        }
        for g in 0..<(plan.rows / group) {
            let targetGroup = plan.inputOffset / group + g
            for (c, column) in plan.columns.enumerated() {
                let scale = UInt16(littleEndian: scalesZeros.loadUnaligned(fromByteOffset: ((g * cols + c) * 2) * 2, as: UInt16.self))
                let zeroBitsValue = UInt16(littleEndian: scalesZeros.loadUnaligned(fromByteOffset: ((g * cols + c) * 2 + 1) * 2, as: UInt16.self))
                let zeroValue = Float(Float16(bitPattern: zeroBitsValue))
                guard zeroValue >= 0, zeroValue <= 15, zeroValue == zeroValue.rounded() else {
                    throw FormatError.invalid(file: plan.scalesZerosName, field: "zero of group \(g), column \(c)",
                                              expected: "an integer 0…15 (found \(zeroValue)): not an int4 workspace file of this layout")
                }
                let t = column.source, row = column.row
                ts[t].storeBytes(of: scale, toByteOffset: (targetGroup * outs[t] + row) * 2, as: UInt16.self)
                let at = (targetGroup * (outs[t] / 8) + row / 8) * 4
                let shift = 4 * UInt32(AWQPacking.slot[row % 8])
                let old = tz[t].loadUnaligned(fromByteOffset: at, as: UInt32.self)
                tz[t].storeBytes(of: (old & ~(15 << shift)) | (UInt32(zeroValue) << shift), toByteOffset: at, as: UInt32.self)
            }
        }
    }
}
