// Where things live in a TurboMind workspace and how each weight file is laid out, as lmdeploy's
// converter (lmdeploy/turbomind/deploy/target_model/{base,fp}.py) writes them. See
// docs/workspace-format.md. Both the writer (HF → workspace) and the reader (workspace → HF layout
// for the engine) are driven by the same description, so they cannot disagree.
//
// Linear weights are stored transposed, `[in_features, out_features]`. For a workspace file
// `F[i][c]` (i < rows, c < columns), column c comes from row `columns[c].row` of HF tensor
// `columns[c].source` (layout `[out, in]`), at input position `inputOffset + i`:
//     F[i][c] = HF_source[row][inputOffset + i]
// Vectors (norms, biases) and the embedding tables are not transposed: `F[r] = HF[r]` with zero rows
// past the source's end (vocab padding).

import Foundation

/// The paths of a workspace.
public struct WorkspaceLayout: Sendable {
    public let root: URL

    public init(root: URL) { self.root = root }

    public var tritonModels: URL { root.appendingPathComponent("triton_models") }
    public var weights: URL { tritonModels.appendingPathComponent("weights") }
    public var tokenizer: URL { tritonModels.appendingPathComponent("tokenizer") }
    public var configINI: URL { weights.appendingPathComponent(WorkspaceConfig.fileName) }
    /// Our manifest (format version, source, tensors); lmdeploy ignores it.
    public var manifest: URL { weights.appendingPathComponent(WorkspaceLayout.manifestName) }

    public static let manifestName = "lmdeploy_swift.json"
    public static let formatVersion = 1

    /// The workspace root for `path`, if `path` is a workspace: the root itself (with
    /// `triton_models/weights/config.ini`), its `triton_models` folder, or its `weights` folder.
    public static func detect(path: URL) -> WorkspaceLayout? {
        let fm = FileManager.default
        let candidates = [path, path.deletingLastPathComponent(), path.deletingLastPathComponent().deletingLastPathComponent()]
        let suffixes = ["triton_models/weights/config.ini", "weights/config.ini", "config.ini"]
        for (root, suffix) in zip(candidates, suffixes) {
            // `weights/` must sit in `triton_models/` for the last two forms.
            if fm.fileExists(atPath: path.appendingPathComponent(suffix).path) {
                let layout = WorkspaceLayout(root: root)
                if fm.fileExists(atPath: layout.configINI.path) { return layout }
            }
        }
        return nil
    }
}

extension WorkspaceLayout {
    /// The workspace root `path` belongs to judging by its folders alone (config.ini not required):
    /// a root with `triton_models/weights/`, a `triton_models` folder with `weights/`, or such a
    /// `weights` folder. Used to say that a workspace's config.ini is missing rather than that
    /// the path is not a Hugging Face model.
    public static func detectIgnoringConfig(path: URL) -> WorkspaceLayout? {
        let fm = FileManager.default
        func isDirectory(_ url: URL) -> Bool {
            var flag: ObjCBool = false
            return fm.fileExists(atPath: url.path, isDirectory: &flag) && flag.boolValue
        }
        let path = path.standardizedFileURL
        if isDirectory(path.appendingPathComponent("triton_models/weights")) { return WorkspaceLayout(root: path) }
        if path.lastPathComponent == "triton_models", isDirectory(path.appendingPathComponent("weights")) {
            return WorkspaceLayout(root: path.deletingLastPathComponent())
        }
        if path.lastPathComponent == "weights", path.deletingLastPathComponent().lastPathComponent == "triton_models" {
            return WorkspaceLayout(root: path.deletingLastPathComponent().deletingLastPathComponent())
        }
        return nil
    }
}

/// Which HF tensor one workspace column (or vector element) comes from.
struct ColumnSource: Sendable, Equatable {
    /// Index into the plan's `sources`.
    var source: Int
    /// Row of that HF tensor (`[out, in]` layout; the element index for a vector).
    var row: Int
}

/// How one workspace file is made from HF tensors.
struct TensorPlan: Sendable {
    enum Kind: Sendable {
        /// `F[r][:] = HF[r][:]` for the rows the source has, zero rows after (`rows` ≥ source rows).
        case rows
        /// `F[i][c] = HF[columns[c].source][columns[c].row][inputOffset + i]` (transposed linear).
        case transposed(columns: [ColumnSource], inputOffset: Int)
        /// `F[c] = HF[columns[c].source][columns[c].row]` (fused, permuted bias vector).
        case gather(columns: [ColumnSource])
    }

    /// The file name in `weights/`.
    var name: String
    /// The file's shape: `[rows, columns]` or `[count]`.
    var shape: [Int]
    /// Canonical names of the HF tensors (`embed`, `layers.3.q`, ...); see `WorkspacePlan.canonical`.
    var sources: [String]
    var kind: Kind

    var elementCount: Int { shape.reduce(1, *) }
}

/// Every file of a workspace's `weights/` folder for one config, in lmdeploy's order.
struct WorkspacePlan: Sendable {
    let hidden, inter, heads, kvHeads, headDim, layers, vocab, paddedVocab, tp: Int
    let bias: Bool
    let outputBias: Bool

    init(config: WorkspaceConfig, outputBias: Bool) {
        hidden = config.hiddenSize
        inter = config.interSize
        heads = config.headNum
        kvHeads = config.kvHeadNum
        headDim = config.sizePerHead
        layers = config.numLayer
        vocab = config.vocabSize
        paddedVocab = config.paddedVocabSize
        tp = config.tensorParaSize
        bias = config.attnBias == 1
        self.outputBias = outputBias
    }

    /// Column `c` (within one rank's share of heads) of a q or k projection after lmdeploy's rotary
    /// permutation: per head, HF's rotate-half order `[2, d/2]` becomes pairs `[d/2, 2]`, so column
    /// `j` of a head is HF row `(j % 2)·d/2 + j/2` of that head.
    func permutedRow(rank: Int, headsPerRank: Int, column c: Int) -> Int {
        let d = headDim
        let head = rank * headsPerRank + c / d
        let j = c % d
        return head * d + (j % 2) * (d / 2) + j / 2
    }

    /// q, k, v columns of rank `rank` of the fused `w_qkv` (sources 0, 1, 2 = q, k, v).
    func qkvColumns(rank: Int) -> [ColumnSource] {
        let qPerRank = heads / tp, kvPerRank = kvHeads / tp
        var columns: [ColumnSource] = []
        columns.reserveCapacity((qPerRank + 2 * kvPerRank) * headDim)
        for c in 0..<(qPerRank * headDim) {
            columns.append(ColumnSource(source: 0, row: permutedRow(rank: rank, headsPerRank: qPerRank, column: c)))
        }
        for c in 0..<(kvPerRank * headDim) {
            columns.append(ColumnSource(source: 1, row: permutedRow(rank: rank, headsPerRank: kvPerRank, column: c)))
        }
        for c in 0..<(kvPerRank * headDim) {
            columns.append(ColumnSource(source: 2, row: rank * kvPerRank * headDim + c))
        }
        return columns
    }

    /// Columns `rank`·n/tp ..< (rank+1)·n/tp of one source, unpermuted.
    func sliceColumns(rank: Int, count n: Int) -> [ColumnSource] {
        let share = n / tp
        return (0..<share).map { ColumnSource(source: 0, row: rank * share + $0) }
    }

    /// All weight files, in the order lmdeploy writes them (embedding, norm, output, then per layer).
    var tensors: [TensorPlan] {
        var plans: [TensorPlan] = [
            TensorPlan(name: "tok_embeddings.weight", shape: [paddedVocab, hidden], sources: ["embed"], kind: .rows),
            TensorPlan(name: "norm.weight", shape: [hidden], sources: ["norm"], kind: .rows),
            TensorPlan(name: "output.weight", shape: [paddedVocab, hidden], sources: ["lm_head"], kind: .rows),
        ]
        for layer in 0..<layers { plans += layerTensors(layer) }
        return plans
    }

    func layerTensors(_ i: Int) -> [TensorPlan] {
        let p = "layers.\(i)."
        let l = "layers.\(i)."
        let qkvWidth = (heads + 2 * kvHeads) * headDim / tp
        var plans: [TensorPlan] = []
        for r in 0..<tp {
            plans.append(TensorPlan(name: p + "attention.w_qkv.\(r).weight", shape: [hidden, qkvWidth],
                                    sources: [l + "q", l + "k", l + "v"], kind: .transposed(columns: qkvColumns(rank: r), inputOffset: 0)))
        }
        let oShare = heads * headDim / tp
        for r in 0..<tp {
            plans.append(TensorPlan(name: p + "attention.wo.\(r).weight", shape: [oShare, hidden], sources: [l + "o"],
                                    kind: .transposed(columns: (0..<hidden).map { ColumnSource(source: 0, row: $0) }, inputOffset: r * oShare)))
        }
        if bias {
            for r in 0..<tp {
                plans.append(TensorPlan(name: p + "attention.w_qkv.\(r).bias", shape: [qkvWidth],
                                        sources: [l + "q_bias", l + "k_bias", l + "v_bias"], kind: .gather(columns: qkvColumns(rank: r))))
            }
            for r in 0..<tp {
                // lmdeploy copies the output bias to every rank (zeros when the model has none, as its Qwen reader does).
                plans.append(TensorPlan(name: p + "attention.wo.\(r).bias", shape: [hidden], sources: [l + "o_bias"], kind: .rows))
            }
        }
        let interShare = inter / tp
        for r in 0..<tp {
            plans.append(TensorPlan(name: p + "feed_forward.w1.\(r).weight", shape: [hidden, interShare], sources: [l + "gate"],
                                    kind: .transposed(columns: sliceColumns(rank: r, count: inter), inputOffset: 0)))
        }
        for r in 0..<tp {
            plans.append(TensorPlan(name: p + "feed_forward.w3.\(r).weight", shape: [hidden, interShare], sources: [l + "up"],
                                    kind: .transposed(columns: sliceColumns(rank: r, count: inter), inputOffset: 0)))
        }
        for r in 0..<tp {
            plans.append(TensorPlan(name: p + "feed_forward.w2.\(r).weight", shape: [interShare, hidden], sources: [l + "down"],
                                    kind: .transposed(columns: (0..<hidden).map { ColumnSource(source: 0, row: $0) }, inputOffset: r * interShare)))
        }
        plans.append(TensorPlan(name: p + "attention_norm.weight", shape: [hidden], sources: [l + "attn_norm"], kind: .rows))
        plans.append(TensorPlan(name: p + "ffn_norm.weight", shape: [hidden], sources: [l + "ffn_norm"], kind: .rows))
        return plans
    }

    /// The HF-layout shape of canonical tensor `name`.
    func canonicalShape(_ name: String) -> [Int] {
        let key = name.split(separator: ".").last.map(String.init) ?? name
        let (qDim, kvDim) = (heads * headDim, kvHeads * headDim)
        switch key {
        case "embed", "lm_head": return [vocab, hidden]
        case "norm", "attn_norm", "ffn_norm", "o_bias": return [hidden]
        case "q": return [qDim, hidden]
        case "k", "v": return [kvDim, hidden]
        case "o": return [hidden, qDim]
        case "gate", "up": return [inter, hidden]
        case "down": return [hidden, inter]
        case "q_bias": return [qDim]
        case "k_bias", "v_bias": return [kvDim]
        default: preconditionFailure("unknown canonical tensor \(name)")
        }
    }
}

extension ModelWeights {
    /// The tensor under a canonical plan name (`embed`, `layers.3.q`, `layers.3.o_bias`, ...);
    /// nil for an absent bias.
    func canonical(_ name: String) -> TensorView? {
        let parts = name.split(separator: ".")
        if parts.count == 1 {
            switch parts[0] {
            case "embed": return embed
            case "norm": return norm
            case "lm_head": return lmHead
            default: return nil
            }
        }
        guard parts.count == 3, let index = Int(parts[1]), index < layers.count else { return nil }
        let layer = layers[index]
        switch parts[2] {
        case "attn_norm": return layer.attnNorm
        case "q": return layer.q
        case "k": return layer.k
        case "v": return layer.v
        case "o": return layer.o
        case "ffn_norm": return layer.ffnNorm
        case "gate": return layer.gate
        case "up": return layer.up
        case "down": return layer.down
        case "q_bias": return layer.qBias
        case "k_bias": return layer.kBias
        case "v_bias": return layer.vBias
        case "o_bias": return layer.oBias
        default: return nil
        }
    }
}
