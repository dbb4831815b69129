// `lmdeploy convert NAME HF_DIR --dst-path ./workspace [--tp N]`: writes a TurboMind workspace.
import ArgumentParser
import Dispatch
import Foundation
import Tokenizers
import TerminalUI
import TurboMind

enum ModelFormat: String, ExpressibleByArgument, CaseIterable {
    case hf, awq, llama
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a Hugging Face model into a TurboMind workspace.",
        discussion: """
        Writes DST_PATH/triton_models/{weights,tokenizer} as lmdeploy lays them out (config.ini and \
        one fp16 file per tensor and tensor-parallel rank), through a temporary directory that is \
        renamed into place at the end: an interrupted conversion leaves nothing behind. Chat with \
        the result: lmdeploy chat turbomind DST_PATH
        """
    )

    @Argument(help: "Model name (the chat template recorded in config.ini), e.g. internlm-chat-7b; see `lmdeploy list`.")
    var modelName: String

    @Argument(help: "A Hugging Face model directory (config.json, *.safetensors, tokenizer files), or an AutoAWQ directory with --model-format awq.")
    var modelPath: String

    @Option(name: [.customLong("model-format"), .customLong("model_format")],
            help: "Source format: hf (default; fp16/bf16/fp32 safetensors) or awq (an AutoAWQ GEMM checkpoint, e.g. `lmdeploy lite auto_awq`'s work_dir; the workspace gets weight_type = int4).")
    var modelFormat: ModelFormat = .hf

    @Option(name: [.customLong("dst-path"), .customLong("dst_path")], help: "Where to write the workspace.")
    var dstPath: String = "workspace"

    @Option(name: [.customLong("tp")], parsing: .unconditional, help: "Tensor-parallel ranks to split the weights for (must divide the heads).")
    var tp: Int = 1

    @Option(name: [.customLong("group-size"), .customLong("group_size")], parsing: .unconditional, help: "AWQ group size (awq sources only; must match the checkpoint's quant_config.json), e.g. --model-format awq --group-size 128.")
    var groupSize: Int = 0

    @Flag(help: "Replace DST_PATH if it exists.")
    var force = false

    func validate() throws {
        guard tp >= 1 else { throw ValidationError("--tp must be at least 1 (got \(tp))") }
        guard groupSize >= 0 else { throw ValidationError("--group-size must be ≥ 0 (got \(groupSize))") }
        // Checked here: URL(fileURLWithPath: "") would be the current directory.
        guard !dstPath.isEmpty else { throw ValidationError("--dst-path is empty: give the directory to create for the workspace") }
        switch modelFormat {
        case .hf:
            // lmdeploy ignores group_size for fp16 sources; a value here means the user expects quantization.
            guard groupSize == 0 else {
                throw ValidationError("--group-size \(groupSize) applies to --model-format awq only (an hf source converts to fp16 without groups)")
            }
        case .awq:
            guard groupSize > 0 else {
                throw ValidationError("--model-format awq needs --group-size G: the group size the checkpoint was quantized with (`lmdeploy lite auto_awq --w-group-size`, e.g. 128; its quant_config.json says)")
            }
        case .llama: throw ValidationError("--model-format llama (Meta's original checkpoints) is not supported: convert the model to Hugging Face format first")
        }
        if NamedChatTemplate.named(modelName) == nil {
            throw ValidationError("'\(modelName)' is not a supported model name. The supported names are: "
                                  + NamedChatTemplate.names.joined(separator: ", "))
        }
    }

    func run() throws {
        let sessionLength = NamedChatTemplate.named(modelName)?.sessionLen ?? 2048
        let options = WorkspaceConvertOptions(modelName: modelName, tensorParallel: tp, force: force,
                                              templateSessionLength: sessionLength,
                                              awqGroupSize: modelFormat == .awq ? groupSize : nil)
        let interrupt = InterruptCleanup()
        let bar = ProgressBar(label: "Convert to turbomind format")
        let report: WorkspaceConvertReport
        do {
            report = try WorkspaceWriter.convert(
                source: URL(fileURLWithPath: modelPath), destination: URL(fileURLWithPath: dstPath), options: options,
                progress: { done, total in bar.update(done, total) },
                onTemporaryDirectory: { interrupt.directory = $0 },
                isCancelled: { interrupt.signalNumber != nil })
        } catch {
            // Interrupted: the writer stopped and removed its temporary directory on this thread.
            if let signalNumber = interrupt.signalNumber { interrupt.finish(signalNumber) }
            throw error
        }
        bar.finish()
        let megabytes = Double(report.weightBytes) / 1_048_576
        var summary = String(format: "converted %@ → %@: %d weight files, %.1f MiB in %.2f s",
                             modelPath, report.destination.path, report.weightFiles, megabytes, report.seconds)
        if let peak = ProcessMemory.peakResidentBytes() { summary += String(format: ", peak memory %.1f MiB", Double(peak) / 1_048_576) }
        if interrupt.signalNumber != nil { summary += " (the interrupt came after the workspace was complete)" }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }
}


/// The first conversion-stopping signal received (0: none). Written only by `recordSignal`, a
/// plain C signal handler (a store to a 32-bit global is async-signal-safe), read by polling.
nonisolated(unsafe) private var receivedSignal: Int32 = 0

private func recordSignal(_ number: Int32) {
    if receivedSignal == 0 { receivedSignal = number }
}

/// Ctrl-C, SIGTERM or SIGHUP during a conversion: the signal only raises a flag. The converting
/// thread polls it between 2 MiB blocks, stops writing, removes its temporary directory itself and
/// then exits 128 + signal (`finish`), so no writer runs while the directory goes. The handler is a
/// real sigaction handler installed before `init` returns (a DispatchSource registers
/// asynchronously, and a signal arriving before it is armed was lost). A watchdog thread covers a
/// converting thread stuck in a system call: `watchdogSeconds` after the signal it removes the
/// directory and exits.
final class InterruptCleanup: @unchecked Sendable {
    static let watchdogSeconds = 30.0
    private let lock = NSLock()
    private var current: URL?

    /// The first signal received, nil until one arrives.
    var signalNumber: Int32? {
        let number = receivedSignal
        return number == 0 ? nil : number
    }

    var directory: URL? {
        get { lock.lock(); defer { lock.unlock() }; return current }
        set { lock.lock(); current = newValue; lock.unlock() }
    }

    init() {
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number) { recordSignal($0) }
        }
        let watchdog = Thread { [self] in
            while receivedSignal == 0 { usleep(20_000) }
            Thread.sleep(forTimeInterval: InterruptCleanup.watchdogSeconds)
            if let dir = directory { try? FileManager.default.removeItem(at: dir) }
            finish(receivedSignal)
        }
        watchdog.start()
    }

    /// Reports the interrupt and exits 128 + signal.
    func finish(_ signalNumber: Int32) -> Never {
        lock.lock()  // held until exit: one reporter only
        FileHandle.standardError.write(Data("\ninterrupted: nothing was written\n".utf8))
        exit(128 + signalNumber)
    }
}

