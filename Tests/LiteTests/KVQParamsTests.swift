// `lite kv_qparams`: file names, sizes and values against the formulas (asymmetric and symmetric,
// one and three tensor-parallel ranks), the engine's reading of them, and the errors for a bad
// work directory or parameters of another model.
import Foundation
import Lite
import Testing
import TurboMind

/// Statistics of a made-up model: 2 layers, 6 KV heads of 4 channels, values chosen per channel.
func syntheticStats() -> KVStatistics {
    let model = CalibratedModel(architecture: "LlamaForCausalLM", numLayer: 2, hiddenSize: 48, headNum: 12, kvHeadNum: 6,
                                sizePerHead: 4, interSize: 64, vocabSize: 100)
    func values(_ l: Int, _ k: Float, _ sign: Float) -> [Float] {
        (0..<24).map { (c: Int) -> Float in
            let base: Float = Float(c % 7) * 0.3 + Float(l) + k
            return sign * (base + Float(c / 4) * 0.11)
        }
    }
    return KVStatistics(model: model,
                        keyMin: (0..<2).map { values($0, 0.5, -1) }, keyMax: (0..<2).map { values($0, 0.2, 1) },
                        keyAbsmax: (0..<2).map { values($0, 0.7, 1) },
                        valueMin: (0..<2).map { values($0, 0.1, -1) }, valueMax: (0..<2).map { values($0, 0.9, 1) },
                        valueAbsmax: (0..<2).map { values($0, 1.3, 1) })
}

func readFloats(_ url: URL) throws -> [Float] {
    let data = try Data(contentsOf: url)
    return data.withUnsafeBytes { raw in (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
}

@Suite struct KVQParamsTests {
    @Test(arguments: [false, true], [1, 3])
    func filesFollowTheFormulas(symmetric: Bool, tp: Int) throws {
        let stats = syntheticStats()
        let work = try temporaryDirectory("work"), weights = try temporaryDirectory("weights")
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: weights) }
        // Through the files a real calibration writes.
        try writeStats(stats, to: work)
        let written = try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: symmetric, tp: tp)
        var names: Set<String> = []
        for l in 0..<2 { for r in 0..<tp { names.insert("layers.\(l).past_kv_scale.\(r).weight"); names.insert("layers.\(l).past_kv_head_params.\(r).weight") } }
        #expect(Set(written) == names)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: weights.path)) == names, "nothing else (no temporary files) left")
        let share = 6 / tp
        for l in 0..<2 {
            for r in 0..<tp {
                // lmdeploy's file: the rank's heads' channels [r·share·4, (r+1)·share·4).
                let lo = r * share * 4, hi = (r + 1) * share * 4
                let kMin = stats.keyMin[l][lo..<hi].min()!, kMax = stats.keyMax[l][lo..<hi].max()!, kAbs = stats.keyAbsmax[l][lo..<hi].max()!
                let vMin = stats.valueMin[l][lo..<hi].min()!, vMax = stats.valueMax[l][lo..<hi].max()!, vAbs = stats.valueAbsmax[l][lo..<hi].max()!
                let layerFile = try readFloats(weights.appendingPathComponent("layers.\(l).past_kv_scale.\(r).weight"))
                if symmetric {
                    #expect(layerFile == [kAbs / 127, vAbs / 127])
                } else {
                    #expect(layerFile == [(kMax - kMin) / 255, (kMax + kMin) / 2, (vMax - vMin) / 255, (vMax + vMin) / 2])
                }
                let headFile = try readFloats(weights.appendingPathComponent("layers.\(l).past_kv_head_params.\(r).weight"))
                #expect(headFile.count == share * 4)
                for (i, h) in (r * share..<(r + 1) * share).enumerated() {
                    let c = h * 4..<(h + 1) * 4
                    let want: [Float] = symmetric
                        ? [stats.keyAbsmax[l][c].max()! / 127, 0, stats.valueAbsmax[l][c].max()! / 127, 0]
                        : [(stats.keyMax[l][c].max()! - stats.keyMin[l][c].min()!) / 255, (stats.keyMax[l][c].max()! + stats.keyMin[l][c].min()!) / 2,
                           (stats.valueMax[l][c].max()! - stats.valueMin[l][c].min()!) / 255, (stats.valueMax[l][c].max()! + stats.valueMin[l][c].min()!) / 2]
                    #expect(Array(headFile[4 * i..<4 * i + 4]) == want, "layer \(l) head \(h)")
                }
            }
        }
        // A second run with fewer ranks leaves no stale rank files behind.
        if tp == 3 {
            try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: symmetric, tp: 1)
            #expect(try FileManager.default.contentsOfDirectory(atPath: weights.path).filter { $0.contains(".1.weight") || $0.contains(".2.weight") }.isEmpty)
            try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: symmetric, tp: 3)
        }
        // The engine reads the per-head files first, and lmdeploy's files (mapped onto each rank's heads) without them.
        let perHead = try KVQuantParameters.load(directory: weights, layers: 2, kvHeads: 6)
        #expect(perHead.granularity == .perHead)
        for l in 0..<2 {
            for r in 0..<tp {
                let head = try readFloats(weights.appendingPathComponent("layers.\(l).past_kv_head_params.\(r).weight"))
                #expect(Array(perHead.layer(l)[(l * 6 + r * share) * 4..<(l * 6 + (r + 1) * share) * 4]) == head)
                try FileManager.default.removeItem(at: weights.appendingPathComponent("layers.\(l).past_kv_head_params.\(r).weight"))
            }
        }
        let perLayer = try KVQuantParameters.load(directory: weights, layers: 2, kvHeads: 6)
        #expect(perLayer.granularity == .perLayer)
        for l in 0..<2 {
            for r in 0..<tp {
                let f = try readFloats(weights.appendingPathComponent("layers.\(l).past_kv_scale.\(r).weight"))
                let four = symmetric ? [f[0], 0, f[1], 0] : f
                for h in r * share..<(r + 1) * share { #expect(Array(perLayer.values[(l * 6 + h) * 4..<(l * 6 + h + 1) * 4]) == four) }
            }
        }
    }

    @Test func badWorkDirsAndForeignParametersAreClearErrors() throws {
        let work = try temporaryDirectory("work"), weights = try temporaryDirectory("weights")
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: weights) }
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }
        let missing = work.appendingPathComponent("absent")
        #expect(message { try KVQParams.run(workDir: missing, turbomindDir: weights, symmetric: false, tp: 1) }.contains("does not exist"))
        #expect(message { try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: false, tp: 1) }.contains("calib_summary.json"))
        try writeStats(syntheticStats(), to: work)
        #expect(message { try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: false, tp: 4) }.contains("does not divide"))
        // A weights folder of another model (the tiny Llama: 2 KV heads of 8, not 6 of 4).
        let tiny = try tinyLlama().config
        let ini = WorkspaceConfig(model: tiny, modelName: "llama2", tensorParaSize: 1, templateSessionLength: 4096, startId: 1, endId: 2)
        try ini.ini.text.write(to: weights.appendingPathComponent("config.ini"), atomically: true, encoding: .utf8)
        let foreign = message { try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: false, tp: 1) }
        #expect(foreign.contains("another model") && foreign.contains("kv_head_num"), "\(foreign)")
        try FileManager.default.removeItem(at: weights.appendingPathComponent("config.ini"))
        // Parameters on disk that do not fit the model the engine loads.
        try KVQParams.run(workDir: work, turbomindDir: weights, symmetric: false, tp: 1)
        let wrongHeads = message { _ = try KVQuantParameters.load(directory: weights, layers: 2, kvHeads: 2) }
        #expect(wrongHeads.contains("another model"), "\(wrongHeads)")
        let moreLayers = message { _ = try KVQuantParameters.load(directory: weights, layers: 3, kvHeads: 6) }
        #expect(moreLayers.contains("layers.2.past_kv_head_params.0.weight is missing"), "\(moreLayers)")
        let fewerLayers = message { _ = try KVQuantParameters.load(directory: weights, layers: 1, kvHeads: 6) }
        #expect(fewerLayers.contains("only 1 layers"), "\(fewerLayers)")
        let none = message { _ = try KVQuantParameters.load(directory: work, layers: 2, kvHeads: 6) }
        #expect(none.contains("lmdeploy lite kv_qparams"), "\(none)")
        // An int8 engine without parameters is refused.
        let engine = message { _ = try Engine(model: try tinyLlama(), config: EngineConfig(sessionLen: 64, cacheMaxEntryCount: 1, kvCacheType: .int8)) }
        #expect(engine.contains("quant_policy 4"), "\(engine)")
    }
}

/// Writes `stats` as calibrate does (the K/V tensors and the summary kv_qparams reads).
func writeStats(_ stats: KVStatistics, to dir: URL) throws {
    var w = SafetensorsWriter()
    let shape = [stats.model.kvHeadNum, stats.model.sizePerHead]
    for l in 0..<stats.model.numLayer {
        for (name, v) in [("key.min", stats.keyMin), ("key.max", stats.keyMax), ("key.absmax", stats.keyAbsmax),
                          ("value.min", stats.valueMin), ("value.max", stats.valueMax), ("value.absmax", stats.valueAbsmax)] {
            try w.add(name: "layers.\(l).\(name)", shape: shape, values: v[l], dtype: .f32)
        }
    }
    try w.write(to: dir.appendingPathComponent(CalibrationStats.tensorsFile))
    let summary = try JSONSerialization.jsonObject(with: JSONEncoder().encode(stats.model))
    try JSONSerialization.data(withJSONObject: ["model": summary]).write(to: dir.appendingPathComponent(CalibrationStats.summaryFile))
}
