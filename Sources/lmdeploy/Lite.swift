// `lmdeploy lite calibrate | kv_qparams | perplexity`: flags only; the work is Lite's.
// lmdeploy's KV-quantization script runs unchanged:
//   lmdeploy lite calibrate --model HF_DIR --calib_dataset c4 --calib_samples 128 --calib_seqlen 2048 --work_dir ./quant_output
//   lmdeploy lite kv_qparams --work_dir ./quant_output --turbomind_dir workspace/triton_models/weights/ --kv_sym False --num_tp 1
import ArgumentParser
import Foundation
import Lite
import TerminalUI
import TurboMind

struct Lite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Calibration, INT8 KV-cache parameters, AWQ 4-bit weights and perplexity.",
        discussion: """
        INT8 KV cache (quant_policy 4):
          lmdeploy lite calibrate --model HF_DIR --calib-dataset FILE_OR_NAME --work-dir ./quant_output
          lmdeploy lite kv_qparams --work-dir ./quant_output --turbomind-dir workspace/triton_models/weights --kv-sym False
          then quant_policy = 4 in workspace/triton_models/weights/config.ini, or --quant-policy 4
        See docs/kv-int8.md for the files.
        """,
        subcommands: [LiteCalibrate.self, LiteKVQParams.self, LitePerplexity.self, LiteAutoAWQ.self]
    )
}

/// lmdeploy's Python-style booleans for `--kv_sym False`.
enum PythonBool: String, ExpressibleByArgument {
    case `true`, `false`
    init?(argument: String) {
        switch argument.lowercased() {
        case "true", "1", "yes": self = .true
        case "false", "0", "no": self = .false
        default: return nil
        }
    }
}

struct LiteCalibrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Per-layer K/V and linear-input statistics over a calibration text.",
        discussion: """
        --calib-dataset takes lmdeploy's names (\(CalibrationDataset.names.joined(separator: ", "))), read from \
        $LMDEPLOY_CALIB_DATA_DIR or ~/.cache/lmdeploy/datasets as NAME.jsonl, NAME.json or NAME.txt (nothing is \
        downloaded), or a path to a .txt, .jsonl ({"text": ...} per line) or .json file. --calib-samples windows of \
        --calib-seqlen tokens are drawn at offsets given by --seed. Writes calib_stats.safetensors and \
        calib_summary.json into --work-dir.
        """
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace (or use --model).")
    var modelPath: String?

    @Option(name: [.customLong("model")], help: "The model (lmdeploy's spelling).")
    var model: String?

    @Option(name: [.customLong("calib-dataset"), .customLong("calib_dataset")], help: "Dataset name or file.")
    var calibDataset: String = "c4"

    @Option(name: [.customLong("calib-samples"), .customLong("calib_samples")], parsing: .unconditional, help: "Windows to sample.")
    var calibSamples: Int = 128

    @Option(name: [.customLong("calib-seqlen"), .customLong("calib_seqlen")], parsing: .unconditional, help: "Tokens per window.")
    var calibSeqlen: Int = 2048

    @Option(name: [.customLong("work-dir"), .customLong("work_dir")], help: "Where the statistics go.")
    var workDir: String = "./work_dir"

    @Option(parsing: .unconditional, help: "Seed of the window offsets.")
    var seed: UInt64 = 0

    @Option(name: [.customLong("batch-tokens"), .customLong("batch_tokens")], parsing: .unconditional,
            help: "Tokens per forward (bounds peak activation memory).")
    var batchTokens: Int = 512

    @Option(parsing: .unconditional, help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard (modelPath == nil) != (model == nil) else { throw ValidationError("give the model once: as an argument or with --model") }
        guard calibSamples >= 1 else { throw ValidationError("--calib-samples must be at least 1, got \(calibSamples)") }
        guard calibSeqlen >= 1 else { throw ValidationError("--calib-seqlen must be at least 1, got \(calibSeqlen)") }
        guard batchTokens >= 1 else { throw ValidationError("--batch-tokens must be at least 1, got \(batchTokens)") }
        guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0, got \(threads)") }
        guard !workDir.isEmpty else { throw ValidationError("--work-dir is empty") }
    }

    func run() async throws {
        let source = try ModelSource.load(path: modelPath ?? model!)
        let bar = ProgressBar(label: "calibrate")
        let options = CalibrationOptions(dataset: calibDataset, samples: calibSamples, seqlen: calibSeqlen, seed: seed,
                                         batchTokens: batchTokens, threads: threads)
        let stats = try await Calibration.run(source: source, options: options, workDir: URL(fileURLWithPath: workDir)) { bar.update($0, $1) }
        bar.finish()
        FileHandle.standardError.write(Data("calibrate: \(stats.tokens) tokens; wrote \(CalibrationStats.tensorsFile) and \(CalibrationStats.summaryFile) into \(workDir)\n".utf8))
    }
}

struct LiteKVQParams: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv_qparams",
        abstract: "INT8 KV-cache scale and zero point from calibration statistics.",
        discussion: """
        Asymmetric (--kv-sym False): zero = (max + min)/2, scale = (max − min)/255. Symmetric: zero = 0, \
        scale = absmax/127. Writes lmdeploy's layers.N.past_kv_scale.R.weight and our per-head \
        layers.N.past_kv_head_params.R.weight for each layer N and tensor-parallel rank R into --turbomind-dir.
        """,
        aliases: ["kv-qparams"]
    )

    @Option(name: [.customLong("work-dir"), .customLong("work_dir")], help: "The calibrate command's --work-dir.")
    var workDir: String

    @Option(name: [.customLong("turbomind-dir"), .customLong("turbomind_dir")], help: "The workspace's triton_models/weights folder.")
    var turbomindDir: String

    @Option(name: [.customLong("kv-sym"), .customLong("kv_sym")], help: "Symmetric quantization: True or False.")
    var kvSym: PythonBool = .false

    @Option(name: [.customLong("num-tp"), .customLong("num_tp")], parsing: .unconditional, help: "Tensor-parallel ranks.")
    var numTP: Int = 1

    @Option(name: [.customLong("kv-bits"), .customLong("kv_bits")], parsing: .unconditional, help: "Bits of the KV cache (8).")
    var kvBits: Int = 8

    func validate() throws {
        guard numTP >= 1 else { throw ValidationError("--num-tp must be at least 1, got \(numTP)") }
        guard kvBits == 8 else { throw ValidationError("--kv-bits \(kvBits) is not supported: the KV cache is int8 (--kv-bits 8)") }
    }

    func run() throws {
        let files = try KVQParams.run(workDir: URL(fileURLWithPath: workDir), turbomindDir: URL(fileURLWithPath: turbomindDir),
                                      symmetric: kvSym == .true, tp: numTP)
        FileHandle.standardError.write(Data("kv_qparams: wrote \(files.count) files into \(turbomindDir); set quant_policy = 4 in config.ini (or pass --quant-policy 4)\n".utf8))
    }
}

struct LitePerplexity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text file, printed as JSON.",
        discussion: """
        The text is cut into non-overlapping windows of --window tokens (a shorter tail is dropped), \
        each run from an empty cache; positions 1..<window are scored. --quant-policy 4 runs with the int8 KV cache.
        """
    )

    @Argument(help: "A Hugging Face model directory or a TurboMind workspace.")
    var modelPath: String

    @Option(help: "A .txt, .jsonl or .json file (or a calibration dataset name).")
    var dataset: String

    @Option(parsing: .unconditional, help: "Tokens per window.")
    var window: Int = 512

    @OptionGroup var engineOptions: EngineOptions

    func validate() throws {
        guard window >= 2 else { throw ValidationError("--window must be at least 2, got \(window)") }
    }

    func run() async throws {
        let bar = ProgressBar(label: "perplexity")
        let (result, config) = try await Perplexity.run(modelPath: modelPath, dataset: dataset, window: window,
                                                        settings: engineOptions.settings) { bar.update($0, $1) }
        bar.finish()
        var json: [String: Any] = ["model": modelPath, "dataset": dataset, "window": window, "windows": result.windows,
                                   "scored_tokens": result.scoredTokens, "mean_nll": result.meanNLL, "perplexity": result.perplexity,
                                   "kv_cache": config.kvCacheType.rawValue, "dtype": engineOptions.dtype,
                                   "lm_head_dtype": engineOptions.lmHeadDType]
        if let p = config.kvQuantParameters { json["kv_params"] = p.granularity.rawValue }
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
