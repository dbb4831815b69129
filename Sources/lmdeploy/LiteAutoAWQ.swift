// `lmdeploy lite auto_awq`: flags only; the work is Lite's AutoAWQ. lmdeploy's W4A16 script runs unchanged:
//   lmdeploy lite calibrate --model HF_DIR --calib_dataset c4 --calib_samples 128 --calib_seqlen 2048 --work_dir ./quant_output
//   lmdeploy lite auto_awq --model HF_DIR --w_bits 4 --w_group_size 128 --work_dir ./quant_output
import ArgumentParser
import Foundation
import Lite
import TerminalUI
import TurboMind

struct LiteAutoAWQ: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auto_awq",
        abstract: "4-bit activation-aware weight quantization (AWQ) into an AutoAWQ GEMM directory.",
        discussion: """
        Runs the fp model over calibration windows, then per decoder layer searches per-input-channel \
        scales s = mean|x|^α (α on a 20-point grid) that minimise the output error after quantization, \
        folds them into the norms and linears, searches clipping bounds (off: --no-search-clip), and \
        quantizes q/k/v/o/gate/up/down to asymmetric 4-bit groups of --w-group-size input channels \
        (uint4 weights and zero points, fp16 scales, packed as AutoAWQ's GEMM layout).

        The calibration windows are the ones `lite calibrate` drew into --work-dir (its \
        calib_summary.json: dataset, samples, seqlen, seed) unless --calib-* flags are given; \
        without a summary the defaults are c4, 128 × 2048 tokens, seed 0.

        Writes into --work-dir (keeping calibrate's files): model.safetensors (qweight/qzeros/scales \
        per linear, the other tensors as they were), config.json with quantization_config, \
        quant_config.json, the tokenizer files, awq_search.json. Then:
          lmdeploy convert internlm-chat-7b ./quant_output --model-format awq --group-size 128 --dst-path ./workspace

        Example (SmolLM2: 576 input features, so group 64 or 32):
          lmdeploy lite auto_awq --model HF_DIR --w-bits 4 --w-group-size 64 --work-dir ./quant_output
        See docs/awq.md.
        """,
        aliases: ["auto-awq"]
    )

    @Argument(help: "A Hugging Face model directory (or use --model).")
    var modelPath: String?

    @Option(name: [.customLong("model")], help: "The model (lmdeploy's spelling).")
    var model: String?

    @Option(name: [.customLong("work-dir"), .customLong("work_dir")], help: "Where the quantized model goes (calibrate's work directory).")
    var workDir: String = "./work_dir"

    @Option(name: [.customLong("w-bits"), .customLong("w_bits")], parsing: .unconditional, help: "Bits per weight (4).")
    var wBits: Int = 4

    @Option(name: [.customLong("w-group-size"), .customLong("w_group_size")], parsing: .unconditional,
            help: "Input channels per quantization group: 32, 64 or 128 (must divide every linear's input features).")
    var wGroupSize: Int = 128

    @Flag(name: [.customLong("no-search"), .customLong("no_search")], help: "Round to nearest: no scale search (for comparison).")
    var noSearch = false

    // On by default as in AutoAWQ (apply_clip, duo_scaling): on SmolLM2 g64 they take AWQ from +22% to
    // +11% of bf16's perplexity (docs/awq.md); --no-search-clip / --no-duo-scaling give the paper's search.
    @Flag(name: [.customLong("search-clip"), .customLong("search_clip")], inversion: .prefixedNo,
          help: "Search each group's clipping range (AWQ's max-value shrink grid).")
    var searchClip = true

    @Flag(name: [.customLong("duo-scaling"), .customLong("duo_scaling")], inversion: .prefixedNo,
          help: "AutoAWQ's scales s = mean|x|^α / mean(|w|/max|w|)^(1−α); off: the paper's mean|x|^α.")
    var duoScaling = true

    @Option(name: [.customLong("calib-dataset"), .customLong("calib_dataset")], help: "Dataset name or file (default: calibrate's, else c4).")
    var calibDataset: String?

    @Option(name: [.customLong("calib-samples"), .customLong("calib_samples")], parsing: .unconditional, help: "Windows to sample (default: calibrate's, else 128).")
    var calibSamples: Int?

    @Option(name: [.customLong("calib-seqlen"), .customLong("calib_seqlen")], parsing: .unconditional, help: "Tokens per window (default: calibrate's, else 2048).")
    var calibSeqlen: Int?

    @Option(parsing: .unconditional, help: "Seed of the window offsets and of the row sample (default: calibrate's, else 0).")
    var seed: UInt64?

    @Option(name: [.customLong("search-tokens"), .customLong("search_tokens")], parsing: .unconditional,
            help: "Input rows per linear kept for the search (random over all calibration tokens; memory: rows × ~(2·hidden + inter) × 4 bytes per layer).")
    var searchTokens: Int = 2048

    @Option(name: [.customLong("batch-tokens"), .customLong("batch_tokens")], parsing: .unconditional,
            help: "Tokens per forward of the calibration run.")
    var batchTokens: Int = 512

    @Option(parsing: .unconditional, help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard (modelPath == nil) != (model == nil) else { throw ValidationError("give the model once: as an argument or with --model") }
        if let calibSamples, calibSamples < 1 { throw ValidationError("--calib-samples must be at least 1, got \(calibSamples)") }
        if let calibSeqlen, calibSeqlen < 1 { throw ValidationError("--calib-seqlen must be at least 1, got \(calibSeqlen)") }
        guard batchTokens >= 1 else { throw ValidationError("--batch-tokens must be at least 1, got \(batchTokens)") }
        guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0, got \(threads)") }
        guard !workDir.isEmpty else { throw ValidationError("--work-dir is empty") }
        do {
            try AWQOptions(bits: wBits, groupSize: wGroupSize, searchTokens: searchTokens).validate()
        } catch let e as AWQError { throw ValidationError(e.description) }
    }

    func run() async throws {
        let work = URL(fileURLWithPath: workDir)
        let recorded = AutoAWQ.recordedCalibration(workDir: work)
        let calibration = CalibrationOptions(dataset: calibDataset ?? recorded?.dataset ?? "c4", samples: calibSamples ?? recorded?.samples ?? 128,
                                             seqlen: calibSeqlen ?? recorded?.seqlen ?? 2048, seed: seed ?? recorded?.seed ?? 0,
                                             batchTokens: batchTokens, threads: threads)
        let options = AWQOptions(bits: wBits, groupSize: wGroupSize, searchScale: !noSearch, searchClip: searchClip && !noSearch,
                                 duoScaling: duoScaling, searchTokens: searchTokens)
        let source = try ModelSource.load(path: modelPath ?? model!)
        FileHandle.standardError.write(Data("auto_awq: calibration \(calibration.dataset), \(calibration.samples) × \(calibration.seqlen) tokens, seed \(calibration.seed)\(recorded != nil ? " (from calibrate's summary unless overridden)" : "")\n".utf8))
        var bars: [String: ProgressBar] = [:]
        let result = try await AutoAWQ.run(source: source, calibration: calibration, options: options, workDir: work) { stage, done, total in
            let bar = bars[stage] ?? ProgressBar(label: stage == "calibrate" ? "auto_awq calibrate" : "auto_awq layers")
            bars[stage] = bar
            bar.update(done, total)
            if done == total { bar.finish() }
        }
        let groups = result.layers.flatMap(\.groups)
        let rtn = groups.reduce(0) { $0 + $1.rtnLoss }, awq = groups.reduce(0) { $0 + $1.awqLoss }
        let gain = options.searchScale && rtn > 0 ? String(format: "; sample output error %.3g× of round-to-nearest's", awq / rtn) : ""
        FileHandle.standardError.write(Data("auto_awq: \(result.layers.count) layers, w\(wBits) g\(wGroupSize)\(gain); wrote \(workDir)\n".utf8))
    }
}
