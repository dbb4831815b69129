// `lmdeploy lite auto_awq`: activation-aware 4-bit weight quantization (Lin et al., 2023) of a
// Llama-family HF model into an AutoAWQ GEMM directory (docs/awq.md).
//   1. calibration forward of the fp model (the windows `lite calibrate` samples), observed:
//      per-channel mean |x| of every linear's input over all tokens, and a random row sample;
//   2. per layer: scale search and folding, optional clip search, quantization (AWQLayer);
//   3. the directory: qweight/qzeros/scales per linear, the rest kept (AWQWriter).
import Foundation
import TurboMind

public struct AWQResult: Sendable {
    /// Checkpoint tensor name → what it becomes.
    public var replacements: [String: AWQReplacement]
    public var layers: [AWQLayerReport]
    public var tokens: Int
}

public enum AutoAWQ {
    /// Architectures whose checkpoints name q/k/v/o/gate/up/down separately (InternLM2's fused
    /// `wqkv` would need its own split and re-fuse).
    static let supported: Set<Architecture> = [.llama, .mistral, .qwen2, .internlm]

    /// Refuses a model the quantizer cannot write, before any work: the architecture, and a group
    /// size that does not divide a linear's input features (naming the linear and the sizes that do).
    public static func check(config: ModelConfig, weights: ModelWeights, options: AWQOptions) throws {
        try options.validate()
        guard supported.contains(config.architecture) else {
            throw AWQError.unsupportedModel("auto_awq quantizes \(supported.map(\.rawValue).sorted().joined(separator: ", ")) checkpoints; \(config.architecture.rawValue) is not supported")
        }
        guard let layer = weights.layers.first else { throw AWQError.unsupportedModel("the model has no decoder layers") }
        let linears = [layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down]
        let working = AWQOptions.supportedGroupSizes.filter { g in linears.allSatisfy { $0.shape[1] % g == 0 } }
        for t in linears where t.shape[1] % options.groupSize != 0 {
            throw AWQError.groupSizeMismatch(linear: t.name.replacingOccurrences(of: ".weight", with: ""), inFeatures: t.shape[1],
                                             groupSize: options.groupSize, working: working)
        }
        for t in linears where t.shape[0] % 8 != 0 {
            throw AWQError.unsupportedModel("\(t.name) has \(t.shape[0]) output features: AWQ's GEMM layout packs 8 outputs per int32, so they must be a multiple of 8")
        }
    }

    /// Quantizes `model` (whose weights are `weights`, fp) with the calibration `windows`.
    /// `progress(stage, done, total)`: stage "calibrate" after each window, "quantize" after each layer.
    public static func quantize<B: Backend>(model: LlamaModel<B>, weights: ModelWeights, windows: [[Int32]], options: AWQOptions,
                                            batchTokens: Int = 512,
                                            progress: (String, Int, Int) -> Void = { _, _, _ in }) async throws -> AWQResult {
        let config = model.config
        try check(config: config, weights: weights, options: options)
        let total = windows.reduce(0) { $0 + $1.count }
        guard total > 0 else { throw AWQError.invalidOption("no calibration tokens to run") }
        let capture = AWQActivationCapture(config: config, totalRows: total, sampleRows: options.searchTokens, seed: options.seed)
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: windows.map(\.count).max()! + 1, maxBatchSize: 1,
                                                                   maxPrefillTokenNum: max(1, batchTokens), cacheMaxEntryCount: 1,
                                                                   kvCacheType: .f32), observer: capture)
        // Nothing is generated: every window token passes through every layer once (as calibrate).
        let generation = GenerationConfig(maxNewTokens: 0, sampling: .greedy)
        do {
            for (i, w) in windows.enumerated() {
                _ = try await engine.run(session: (1 << 60) + UInt64(i), input: .full(w), config: generation)
                progress("calibrate", i + 1, windows.count)
            }
        } catch {
            engine.shutdown()
            throw error
        }
        engine.shutdown()

        var replacements: [String: AWQReplacement] = [:]
        var reports: [AWQLayerReport] = []
        for l in 0..<config.numHiddenLayers {
            var w = AWQWorkingLayer(weights.layers[l])
            let (r, report) = AWQLayer.process(layer: l, weights: &w, inputs: capture.take(layer: l, config: config), config: config, options: options)
            replacements.merge(r) { a, _ in a }
            reports.append(report)
            progress("quantize", l + 1, config.numHiddenLayers)
        }
        return AWQResult(replacements: replacements, layers: reports, tokens: capture.stats.tokens)
    }

    /// The whole command: samples the calibration windows as `lite calibrate` does, quantizes, and
    /// writes the AutoAWQ directory into `workDir` (keeping what calibrate wrote there).
    public static func run(source: ModelSource, calibration: CalibrationOptions, options: AWQOptions, workDir: URL,
                           progress: (String, Int, Int) -> Void = { _, _, _ in }) async throws -> AWQResult {
        try check(config: source.config, weights: source.weights, options: options)
        guard calibration.seqlen <= source.config.maxPositionEmbeddings else {
            throw AWQError.invalidOption("--calib-seqlen \(calibration.seqlen) exceeds the model's context of \(source.config.maxPositionEmbeddings) tokens")
        }
        let file = try CalibrationDataset.resolve(calibration.dataset)
        let tokens = source.tokenizer.encode(try CalibrationDataset.text(of: file)).map(Int32.init)
        let windows = try CalibrationDataset.sample(tokens, samples: calibration.samples, seqlen: calibration.seqlen,
                                                    seed: calibration.seed, file: file.path)
        let model = try LlamaModel(backend: CPUBackend(threads: calibration.threads), config: source.config, weights: source.weights)
        var awq = options
        awq.seed = calibration.seed
        let result = try await quantize(model: model, weights: source.weights, windows: windows, options: awq,
                                        batchTokens: calibration.batchTokens, progress: progress)
        let run: [String: Any] = [
            "model_path": source.directory.path,
            "dataset": ["name": calibration.dataset, "file": file.path, "tokens": tokens.count] as [String: Any],
            "calib_samples": calibration.samples, "calib_seqlen": calibration.seqlen, "seed": calibration.seed,
        ]
        try AWQWriter.write(result: result, source: source.directory, options: awq, run: run, to: workDir)
        return result
    }

    /// The calibration settings `lite calibrate` recorded in `workDir` (calib_summary.json), so
    /// auto_awq after calibrate sees the same windows; nil when there is no summary.
    public static func recordedCalibration(workDir: URL) -> (dataset: String, samples: Int, seqlen: Int, seed: UInt64)? {
        let url = workDir.appendingPathComponent(CalibrationStats.summaryFile)
        guard let data = FileManager.default.contents(atPath: url.path),
              let summary = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let dataset = summary["dataset"] as? [String: Any], let name = dataset["name"] as? String,
              let samples = summary["calib_samples"] as? Int, let seqlen = summary["calib_seqlen"] as? Int else { return nil }
        let seed = (summary["seed"] as? NSNumber)?.uint64Value ?? 0
        return (name, samples, seqlen, seed)
    }
}
