// Per-layer activation statistics gathered by the engine's forward observer during `lite calibrate`,
// and their files in the work directory (docs/kv-int8.md):
//   calib_stats.safetensors   fp32 tensors
//     layers.N.key.{min,max,absmax}      [kvHeads, headDim]  K after RoPE, as cached
//     layers.N.value.{min,max,absmax}    [kvHeads, headDim]
//     layers.N.LINEAR.input.{max,min,mean,absmax,absmean}  [in_features]
//       LINEAR = attention.w_qkv (HF q/k/v_proj), attention.wo (o_proj),
//                feed_forward.w13 (gate/up_proj), feed_forward.w2 (down_proj)
//   calib_summary.json        the model's shape, the dataset and sampling, per-layer K/V ranges
// Statistics are folded in as rows arrive (running min/max, sums in Double), so memory is the
// statistics themselves, never the samples' activations.
import Foundation
import TurboMind

/// The linear layers whose inputs are observed, by their TurboMind names.
public enum CalibratedLinear: String, CaseIterable, Sendable {
    case qkv = "attention.w_qkv"
    case o = "attention.wo"
    case gateUp = "feed_forward.w13"
    case down = "feed_forward.w2"

    var tensor: ObservedTensor {
        switch self {
        case .qkv: return .qkvInput
        case .o: return .oInput
        case .gateUp: return .gateUpInput
        case .down: return .downInput
        }
    }
}

/// Running per-channel statistics of one observed tensor.
public struct ChannelStats: Sendable, Equatable {
    public private(set) var min: [Float]
    public private(set) var max: [Float]
    public private(set) var absmax: [Float]
    var sum: [Double]
    var absSum: [Double]
    public private(set) var rows = 0

    init(width: Int) {
        min = [Float](repeating: .infinity, count: width)
        max = [Float](repeating: -.infinity, count: width)
        absmax = [Float](repeating: 0, count: width)
        sum = [Double](repeating: 0, count: width)
        absSum = [Double](repeating: 0, count: width)
    }

    public var mean: [Float] { sum.map { Float($0 / Double(Swift.max(rows, 1))) } }
    public var absmean: [Float] { absSum.map { Float($0 / Double(Swift.max(rows, 1))) } }

    mutating func add(rows n: Int, values: [Float]) {
        let w = min.count
        precondition(values.count == n * w)
        values.withUnsafeBufferPointer { v in
            min.withUnsafeMutableBufferPointer { mn in
                max.withUnsafeMutableBufferPointer { mx in
                    absmax.withUnsafeMutableBufferPointer { am in
                        sum.withUnsafeMutableBufferPointer { s in
                            absSum.withUnsafeMutableBufferPointer { a in
                                for r in 0..<n {
                                    let row = r * w
                                    for c in 0..<w {
                                        let x = v[row + c]
                                        if x < mn[c] { mn[c] = x }
                                        if x > mx[c] { mx[c] = x }
                                        let ax = Swift.abs(x)
                                        if ax > am[c] { am[c] = ax }
                                        s[c] += Double(x)
                                        a[c] += Double(ax)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        rows += n
    }
}

/// The shape of the model the statistics belong to, checked by kv_qparams against the weights.
public struct CalibratedModel: Codable, Sendable, Equatable {
    public var architecture: String
    public var numLayer: Int
    public var hiddenSize: Int
    public var headNum: Int
    public var kvHeadNum: Int
    public var sizePerHead: Int
    public var interSize: Int
    public var vocabSize: Int

    enum CodingKeys: String, CodingKey {
        case architecture, numLayer = "num_layer", hiddenSize = "hidden_size", headNum = "head_num", kvHeadNum = "kv_head_num"
        case sizePerHead = "size_per_head", interSize = "inter_size", vocabSize = "vocab_size"
    }

    public init(architecture: String, numLayer: Int, hiddenSize: Int, headNum: Int, kvHeadNum: Int, sizePerHead: Int,
                interSize: Int, vocabSize: Int) {
        self.architecture = architecture
        self.numLayer = numLayer
        self.hiddenSize = hiddenSize
        self.headNum = headNum
        self.kvHeadNum = kvHeadNum
        self.sizePerHead = sizePerHead
        self.interSize = interSize
        self.vocabSize = vocabSize
    }

    public init(_ c: ModelConfig) {
        architecture = c.architecture.rawValue
        numLayer = c.numHiddenLayers
        hiddenSize = c.hiddenSize
        headNum = c.numAttentionHeads
        kvHeadNum = c.numKeyValueHeads
        sizePerHead = c.headDim
        interSize = c.intermediateSize
        vocabSize = c.vocabSize
    }
}

/// All layers' statistics; the forward observer of a calibration run.
public final class CalibrationStats: ForwardObserver, @unchecked Sendable {
    public static let tensorsFile = "calib_stats.safetensors"
    public static let summaryFile = "calib_summary.json"

    public let model: CalibratedModel
    public private(set) var keys: [ChannelStats]
    public private(set) var values: [ChannelStats]
    /// [layer][CalibratedLinear] input statistics.
    public private(set) var inputs: [[CalibratedLinear: ChannelStats]]

    public init(model: CalibratedModel) {
        self.model = model
        let kv = model.kvHeadNum * model.sizePerHead
        keys = Array(repeating: ChannelStats(width: kv), count: model.numLayer)
        values = keys
        let widths: [CalibratedLinear: Int] = [.qkv: model.hiddenSize, .o: model.headNum * model.sizePerHead,
                                               .gateUp: model.hiddenSize, .down: model.interSize]
        inputs = Array(repeating: widths.mapValues { ChannelStats(width: $0) }, count: model.numLayer)
    }

    public func observe(layer: Int, tensor: ObservedTensor, rows: Int, width: Int, values v: [Float], plan: BatchPlan) {
        switch tensor {
        case .key: keys[layer].add(rows: rows, values: v)
        case .value: values[layer].add(rows: rows, values: v)
        case .qkvInput: inputs[layer][.qkv]!.add(rows: rows, values: v)
        case .oInput: inputs[layer][.o]!.add(rows: rows, values: v)
        case .gateUpInput: inputs[layer][.gateUp]!.add(rows: rows, values: v)
        case .downInput: inputs[layer][.down]!.add(rows: rows, values: v)
        }
    }

    /// Tokens folded in so far.
    public var tokens: Int { keys.first?.rows ?? 0 }

    /// Every statistic by its file name, with its shape.
    public func tensors() -> [(name: String, shape: [Int], values: [Float])] {
        var out: [(String, [Int], [Float])] = []
        let kvShape = [model.kvHeadNum, model.sizePerHead]
        for l in 0..<model.numLayer {
            for (kind, s) in [("key", keys[l]), ("value", values[l])] {
                out.append(("layers.\(l).\(kind).min", kvShape, s.min))
                out.append(("layers.\(l).\(kind).max", kvShape, s.max))
                out.append(("layers.\(l).\(kind).absmax", kvShape, s.absmax))
            }
            for linear in CalibratedLinear.allCases {
                let s = inputs[l][linear]!
                let p = "layers.\(l).\(linear.rawValue).input"
                out.append(("\(p).max", [s.max.count], s.max))
                out.append(("\(p).min", [s.min.count], s.min))
                out.append(("\(p).mean", [s.min.count], s.mean))
                out.append(("\(p).absmax", [s.min.count], s.absmax))
                out.append(("\(p).absmean", [s.min.count], s.absmean))
            }
        }
        return out
    }

    /// Writes calib_stats.safetensors and calib_summary.json into `workDir` (created if needed),
    /// each atomically; `run` describes the dataset and sampling for the summary.
    public func write(to workDir: URL, run: [String: Any]) throws {
        try FileManager.default.createDirectory(at: workDir, withIntermediateDirectories: true)
        var writer = SafetensorsWriter(metadata: ["format": "lmdeploy-swift calibration statistics", "version": "1"])
        for t in tensors() { try writer.add(name: t.name, shape: t.shape, values: t.values, dtype: .f32) }
        try writer.write(to: workDir.appendingPathComponent(Self.tensorsFile))
        let modelJSON = try JSONSerialization.jsonObject(with: JSONEncoder().encode(model))
        var summary = run
        summary["format"] = "lmdeploy-swift calibration"
        summary["version"] = 1
        summary["model"] = modelJSON
        summary["tokens"] = tokens
        summary["layers"] = (0..<model.numLayer).map { l -> [String: Any] in
            func range(_ s: ChannelStats) -> [String: Double] {
                ["min": Double(s.min.min() ?? 0), "max": Double(s.max.max() ?? 0), "absmax": Double(s.absmax.max() ?? 0)]
            }
            return ["layer": l, "key": range(keys[l]), "value": range(values[l])]
        }
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try DurableFile.write([UInt8](data), to: workDir.appendingPathComponent(Self.summaryFile))
    }
}

/// The K/V statistics of a work directory, as kv_qparams reads them back.
public struct KVStatistics: Sendable {
    public let model: CalibratedModel
    /// Per layer, [kvHeads × headDim] each.
    public let keyMin, keyMax, keyAbsmax, valueMin, valueMax, valueAbsmax: [[Float]]

    public init(model: CalibratedModel, keyMin: [[Float]], keyMax: [[Float]], keyAbsmax: [[Float]],
                valueMin: [[Float]], valueMax: [[Float]], valueAbsmax: [[Float]]) {
        self.model = model
        self.keyMin = keyMin
        self.keyMax = keyMax
        self.keyAbsmax = keyAbsmax
        self.valueMin = valueMin
        self.valueMax = valueMax
        self.valueAbsmax = valueAbsmax
    }

    /// Reads `workDir`'s calibration files; a missing or incomplete work directory is an error
    /// that says what to run.
    public static func load(workDir: URL) throws -> KVStatistics {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: workDir.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CalibrationError.workDir("the work directory \(workDir.path) does not exist: run `lmdeploy lite calibrate --model HF_DIR --work_dir \(workDir.path)` first")
        }
        let summaryURL = workDir.appendingPathComponent(CalibrationStats.summaryFile)
        let tensorsURL = workDir.appendingPathComponent(CalibrationStats.tensorsFile)
        for url in [summaryURL, tensorsURL] where !fm.fileExists(atPath: url.path) {
            throw CalibrationError.workDir("\(workDir.path) has no \(url.lastPathComponent): it holds no calibration statistics (run `lmdeploy lite calibrate --work_dir \(workDir.path)` first)")
        }
        guard let data = fm.contents(atPath: summaryURL.path),
              let summary = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let modelObject = summary["model"],
              let model = try? JSONDecoder().decode(CalibratedModel.self, from: JSONSerialization.data(withJSONObject: modelObject)) else {
            throw CalibrationError.workDir("\(summaryURL.path) is not a calibration summary (expected JSON with a \"model\" object: rerun `lmdeploy lite calibrate`)")
        }
        let file = try SafetensorsFile(url: tensorsURL)
        func read(_ name: String) throws -> [Float] {
            guard file.contains(name) else {
                throw CalibrationError.workDir("\(tensorsURL.path) lacks \(name): the statistics are incomplete (rerun `lmdeploy lite calibrate`)")
            }
            let t = try file.tensor(name)
            guard t.dtype == .f32, t.shape == [model.kvHeadNum, model.sizePerHead] else {
                throw CalibrationError.workDir("\(tensorsURL.path): \(name) is \(t.dtype.rawValue) \(t.shape), expected F32 [\(model.kvHeadNum), \(model.sizePerHead)] for the model in \(summaryURL.lastPathComponent)")
            }
            return t.toFloatArray()
        }
        func all(_ kind: String, _ stat: String) throws -> [[Float]] {
            try (0..<model.numLayer).map { try read("layers.\($0).\(kind).\(stat)") }
        }
        return KVStatistics(model: model, keyMin: try all("key", "min"), keyMax: try all("key", "max"), keyAbsmax: try all("key", "absmax"),
                            valueMin: try all("value", "min"), valueMax: try all("value", "max"), valueAbsmax: try all("value", "absmax"))
    }
}
