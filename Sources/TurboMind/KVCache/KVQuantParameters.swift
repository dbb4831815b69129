// The scale and zero point of every layer's K and V per KV head, for the int8 KV cache
// (lmdeploy's quant_policy 4): stored q = round((x − zero) / scale), read back x = q·scale + zero.
//
// They come from the TurboMind weights directory, written by `lmdeploy lite kv_qparams`:
//   layers.N.past_kv_head_params.R.weight  ours, preferred: fp32 [kvHeads / tp][k_scale, k_zero, v_scale, v_zero]
//   layers.N.past_kv_scale.R.weight        lmdeploy's: fp32 [k_scale, k_zero, v_scale, v_zero] (asymmetric)
//                                          or [k_scale, v_scale] (symmetric, zero = 0), one per tp rank
// lmdeploy's per-rank figure covers that rank's contiguous share of the KV heads, so a workspace
// of any tp maps onto our single-process cache head by head.
import Foundation

public struct KVQuantParameters: Sendable, Equatable {
    /// Where the parameters came from: one pair per head (ours) or one per layer and rank (lmdeploy's).
    public enum Granularity: String, Sendable, Equatable {
        case perHead = "per-head"
        case perLayer = "per-layer"
    }

    public let layers: Int
    public let kvHeads: Int
    public let granularity: Granularity
    /// fp32 [layers][kvHeads][k_scale, k_zero, v_scale, v_zero].
    public let values: [Float]

    public init(layers: Int, kvHeads: Int, granularity: Granularity, values: [Float]) throws {
        guard values.count == layers * kvHeads * 4 else {
            throw EngineError.invalidConfig("KV quantization parameters: \(values.count) values for \(layers) layers × \(kvHeads) KV heads × 4")
        }
        for (i, v) in values.enumerated() where !v.isFinite || (i % 2 == 0 && v < 0) {
            throw EngineError.invalidConfig("KV quantization parameters: layer \(i / (4 * kvHeads)), KV head \(i / 4 % kvHeads): \(["k_scale", "k_zero", "v_scale", "v_zero"][i % 4]) is \(v) (scales must be finite and ≥ 0)")
        }
        self.layers = layers
        self.kvHeads = kvHeads
        self.granularity = granularity
        self.values = values
    }

    /// The four parameters of `layer`'s KV heads, as the kernels read them.
    public func layer(_ layer: Int) -> ArraySlice<Float> { values[layer * kvHeads * 4..<(layer + 1) * kvHeads * 4] }

    public static func perHeadFileName(layer: Int, rank: Int) -> String { "layers.\(layer).past_kv_head_params.\(rank).weight" }
    public static func perLayerFileName(layer: Int, rank: Int) -> String { "layers.\(layer).past_kv_scale.\(rank).weight" }

    /// Reads the parameters of a model with `layers` layers and `kvHeads` KV heads from `directory`
    /// (a workspace's weights folder): the per-head files when layer 0 has one, else lmdeploy's
    /// per-layer files. Missing, truncated or mismatched files are errors that name the file.
    public static func load(directory: URL, layers: Int, kvHeads: Int) throws -> KVQuantParameters {
        let fm = FileManager.default
        func url(_ name: String) -> URL { directory.appendingPathComponent(name) }
        let headName: (Int, Int) -> String = { perHeadFileName(layer: $0, rank: $1) }
        let layerName: (Int, Int) -> String = { perLayerFileName(layer: $0, rank: $1) }
        func ranks(_ name: (Int, Int) -> String) -> Int {
            var r = 0
            while fm.fileExists(atPath: url(name(0, r)).path) { r += 1 }
            return r
        }
        if let journal = DurableFileSet.interrupted(in: directory) {
            throw EngineError.invalidConfig("the KV quantization parameters in \(directory.path) are half replaced: a `lmdeploy lite kv_qparams` run was interrupted while renaming its files into place (\(journal.lastPathComponent) is still there); run it again")
        }
        let perHead = ranks(headName) > 0
        let name = perHead ? headName : layerName
        let tp = ranks(name)
        guard tp > 0 else {
            throw EngineError.invalidConfig("quant_policy 4 (int8 KV cache) needs the K/V quantization parameters, but \(directory.path) has neither \(perHeadFileName(layer: 0, rank: 0)) nor \(perLayerFileName(layer: 0, rank: 0)): run `lmdeploy lite calibrate --model HF_DIR --work_dir DIR` then `lmdeploy lite kv_qparams --work_dir DIR --turbomind_dir \(directory.path)`")
        }
        guard kvHeads % tp == 0 else {
            throw EngineError.invalidConfig("\(url(name(0, 0)).path): \(tp) tensor-parallel ranks of KV parameters do not divide the model's \(kvHeads) KV heads")
        }
        let share = kvHeads / tp
        var values: [Float] = []
        values.reserveCapacity(layers * kvHeads * 4)
        for layer in 0..<layers {
            for rank in 0..<tp {
                let file = url(name(layer, rank))
                guard let data = fm.contents(atPath: file.path) else {
                    throw EngineError.invalidConfig("\(file.path) is missing: the KV quantization parameters must cover all \(layers) layers and \(tp) ranks (rerun `lmdeploy lite kv_qparams` for this model)")
                }
                let floats = data.withUnsafeBytes { raw in (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
                if perHead {
                    guard data.count == share * 16 else {
                        throw EngineError.invalidConfig("\(file.path) has \(data.count) bytes, expected \(share * 16) (\(share) KV heads × 4 fp32): the parameters were made for another model")
                    }
                    values += floats
                } else {
                    let four: [Float]
                    switch data.count {
                    case 16: four = floats
                    case 8: four = [floats[0], 0, floats[1], 0]
                    default:
                        throw EngineError.invalidConfig("\(file.path) has \(data.count) bytes, expected 16 (asymmetric: k_scale, k_zero, v_scale, v_zero) or 8 (symmetric: k_scale, v_scale)")
                    }
                    for _ in 0..<share { values += four }
                }
            }
        }
        if layers > 0, fm.fileExists(atPath: url(name(layers, 0)).path) {
            throw EngineError.invalidConfig("\(url(name(layers, 0)).path) exists but the model has only \(layers) layers: the KV parameters were made for another model")
        }
        return try KVQuantParameters(layers: layers, kvHeads: kvHeads, granularity: perHead ? .perHead : .perLayer, values: values)
    }
}

extension KVCacheLayout {
    /// The parameters an int8 cache of this layout is made with (nil for fp16/fp32): a clear error
    /// when they are missing or were made for another model. Every backend checks through this.
    public func quantParameters(_ p: KVQuantParameters?) throws -> KVQuantParameters? {
        guard type == .int8 else { return nil }
        guard let p else {
            throw BackendError.unsupported("an int8 KV cache (quant_policy 4) needs K/V quantization parameters (lmdeploy lite kv_qparams)")
        }
        guard p.layers == layers, p.kvHeads == kvHeads else {
            throw BackendError.unsupported("the KV quantization parameters cover \(p.layers) layers × \(p.kvHeads) KV heads but the model has \(layers) × \(kvHeads): they were made for another model")
        }
        return p
    }
}
