// `lmdeploy lite kv_qparams`: the int8 KV cache's scale and zero point from calibration statistics.
//   asymmetric (--kv-sym False): zero = (max + min) / 2, scale = (max − min) / 255
//   symmetric  (--kv-sym True):  zero = 0,               scale = absmax / 127
// Written into the TurboMind weights directory, per layer N and tensor-parallel rank R (a rank
// owns a contiguous 1/tp of the KV heads, as lmdeploy chunks them):
//   layers.N.past_kv_scale.R.weight        lmdeploy's file: fp32 [k_scale, k_zero, v_scale, v_zero]
//                                          (asym) or [k_scale, v_scale] (sym), over the rank's heads
//   layers.N.past_kv_head_params.R.weight  ours, which the engine prefers: fp32 per KV head of the
//                                          rank [k_scale, k_zero, v_scale, v_zero] (sym: zeros 0)
import Foundation
import TurboMind

public enum KVQParams {
    /// Scale and zero point of values within [min, max] (absmax for symmetric).
    public static func parameters(min: Float, max: Float, absmax: Float, symmetric: Bool) -> (scale: Float, zero: Float) {
        symmetric ? (absmax / 127, 0) : ((max - min) / 255, (max + min) / 2)
    }

    /// What `write` puts in each file, by file name.
    public static func files(_ stats: KVStatistics, symmetric: Bool, tp: Int) throws -> [(name: String, values: [Float])] {
        let m = stats.model
        guard tp >= 1 else { throw CalibrationError.invalidOption("--num-tp must be at least 1, got \(tp)") }
        guard m.kvHeadNum % tp == 0 else {
            throw CalibrationError.invalidOption("--num-tp \(tp) does not divide the model's \(m.kvHeadNum) KV heads")
        }
        let d = m.sizePerHead, share = m.kvHeadNum / tp
        var out: [(String, [Float])] = []
        for l in 0..<m.numLayer {
            // (scale, zero) of K and V over channels [lo, hi) of the layer's [kvHeads × headDim].
            func kv(_ lo: Int, _ hi: Int) -> (k: (scale: Float, zero: Float), v: (scale: Float, zero: Float)) {
                let k = parameters(min: stats.keyMin[l][lo..<hi].min()!, max: stats.keyMax[l][lo..<hi].max()!,
                                   absmax: stats.keyAbsmax[l][lo..<hi].max()!, symmetric: symmetric)
                let v = parameters(min: stats.valueMin[l][lo..<hi].min()!, max: stats.valueMax[l][lo..<hi].max()!,
                                   absmax: stats.valueAbsmax[l][lo..<hi].max()!, symmetric: symmetric)
                return (k, v)
            }
            for r in 0..<tp {
                let rank = kv(r * share * d, (r + 1) * share * d)
                out.append((KVQuantParameters.perLayerFileName(layer: l, rank: r),
                            symmetric ? [rank.k.scale, rank.v.scale] : [rank.k.scale, rank.k.zero, rank.v.scale, rank.v.zero]))
                var heads: [Float] = []
                for h in r * share..<(r + 1) * share {
                    let p = kv(h * d, (h + 1) * d)
                    heads += [p.k.scale, p.k.zero, p.v.scale, p.v.zero]
                }
                out.append((KVQuantParameters.perHeadFileName(layer: l, rank: r), heads))
            }
        }
        for (name, values) in out where values.contains(where: { !$0.isFinite }) {
            throw CalibrationError.workDir("\(name) would hold a non-finite value: the statistics have no data for it (did calibration see any tokens?)")
        }
        return out
    }

    /// Reads `workDir`'s statistics, checks them against the weights directory's config.ini when it
    /// has one (a work directory of another model is refused), and writes every file.
    @discardableResult
    public static func run(workDir: URL, turbomindDir: URL, symmetric: Bool, tp: Int) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: turbomindDir.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CalibrationError.workDir("--turbomind-dir \(turbomindDir.path) is not a directory (give the workspace's triton_models/weights folder)")
        }
        let stats = try KVStatistics.load(workDir: workDir)
        let ini = turbomindDir.appendingPathComponent(WorkspaceConfig.fileName)
        if FileManager.default.fileExists(atPath: ini.path) {
            let w = try WorkspaceConfig.load(ini)
            let m = stats.model
            let pairs = [("num_layer", w.numLayer, m.numLayer), ("kv_head_num", w.kvHeadNum, m.kvHeadNum),
                         ("size_per_head", w.sizePerHead, m.sizePerHead), ("head_num", w.headNum, m.headNum)]
            for (key, have, want) in pairs where have != want {
                throw CalibrationError.workDir("the statistics in \(workDir.path) are of another model: its \(key) is \(want) but \(ini.path) says \(have)")
            }
        }
        let files = try self.files(stats, symmetric: symmetric, tp: tp)
        // Ranks beyond this run's, left by an earlier run with a larger --num-tp, would be read as
        // part of these parameters: the set's replacement removes them with the rest of the old set.
        let fm = FileManager.default
        var obsolete: [String] = []
        for l in 0..<stats.model.numLayer {
            var r = tp
            while true {
                let stale = [KVQuantParameters.perLayerFileName(layer: l, rank: r), KVQuantParameters.perHeadFileName(layer: l, rank: r)]
                    .filter { fm.fileExists(atPath: turbomindDir.appendingPathComponent($0).path) }
                if stale.isEmpty { break }
                obsolete += stale
                r += 1
            }
        }
        try DurableFileSet.replace(files.map { (name: $0.name, bytes: DurableFile.bytes(floats: $0.values)) }, in: turbomindDir, removing: obsolete)
        return files.map(\.name)
    }
}
