// `lmdeploy lite calibrate`: runs the model over sampled windows of a calibration text through the
// engine with a forward observer, and writes the per-layer statistics into the work directory.
// Windows run one after another from an empty cache (each its own one-shot request), in prompt
// chunks of `maxPrefillTokenNum` rows, so peak memory is one chunk's activations of one layer plus
// the statistics, whatever the number of samples.
import Foundation
import Tokenizers
import TurboMind

public struct CalibrationOptions: Sendable, Equatable {
    /// lmdeploy's dataset name (c4, ptb, wikitext2, pileval) or a file path.
    public var dataset: String
    public var samples: Int
    public var seqlen: Int
    public var seed: UInt64
    /// Rows per forward (a batch of one window's tokens).
    public var batchTokens: Int
    public var threads: Int

    public init(dataset: String, samples: Int = 128, seqlen: Int = 2048, seed: UInt64 = 0, batchTokens: Int = 512, threads: Int = 0) {
        self.dataset = dataset
        self.samples = samples
        self.seqlen = seqlen
        self.seed = seed
        self.batchTokens = batchTokens
        self.threads = threads
    }
}

public enum Calibration {
    /// Statistics of `model` over `windows` (token ids), each run from an empty cache.
    /// `progress(done, total)` is called after each window.
    public static func collect<B: Backend>(model: LlamaModel<B>, windows: [[Int32]], batchTokens: Int = 512,
                                           progress: (Int, Int) -> Void = { _, _ in }) async throws -> CalibrationStats {
        let stats = CalibrationStats(model: CalibratedModel(model.config))
        guard let longest = windows.map(\.count).max(), longest > 0 else {
            throw CalibrationError.invalidOption("no calibration windows to run")
        }
        // An fp32 cache: the statistics are of the model's own arithmetic, not of fp16-rounded K/V
        // (one window's cache, small next to the weights).
        let engine = try Engine(model: model, config: EngineConfig(sessionLen: longest + 1, maxBatchSize: 1, maxPrefillTokenNum: max(1, batchTokens),
                                                                   cacheMaxEntryCount: 1, kvCacheType: .f32), observer: stats)
        defer { engine.shutdown() }
        // Nothing is generated: the last prompt token is the engine's one decode row, so every
        // token of the window passes through every layer exactly once.
        let config = GenerationConfig(maxNewTokens: 0, sampling: .greedy)
        for (i, w) in windows.enumerated() {
            _ = try await engine.run(session: (1 << 61) + UInt64(i), input: .full(w), config: config)
            progress(i + 1, windows.count)
        }
        return stats
    }

    /// The whole command: resolves and samples the dataset with `source`'s tokenizer, collects the
    /// statistics and writes them into `workDir`.
    public static func run(source: ModelSource, options: CalibrationOptions, workDir: URL,
                           progress: (Int, Int) -> Void = { _, _ in }) async throws -> CalibrationStats {
        guard options.batchTokens >= 1 else { throw CalibrationError.invalidOption("the batch must hold at least 1 token") }
        guard options.seqlen <= source.config.maxPositionEmbeddings else {
            throw CalibrationError.invalidOption("--calib-seqlen \(options.seqlen) exceeds the model's context of \(source.config.maxPositionEmbeddings) tokens")
        }
        let file = try CalibrationDataset.resolve(options.dataset)
        let tokens = source.tokenizer.encode(try CalibrationDataset.text(of: file)).map(Int32.init)
        let windows = try CalibrationDataset.sample(tokens, samples: options.samples, seqlen: options.seqlen, seed: options.seed, file: file.path)
        let model = try LlamaModel(backend: CPUBackend(threads: options.threads), config: source.config, weights: source.weights)
        let stats = try await collect(model: model, windows: windows, batchTokens: options.batchTokens, progress: progress)
        try stats.write(to: workDir, run: [
            "model_path": source.directory.path,
            "dataset": ["name": options.dataset, "file": file.path, "tokens": tokens.count] as [String: Any],
            "calib_samples": options.samples, "calib_seqlen": options.seqlen, "seed": options.seed,
        ])
        return stats
    }
}
