// `lmdeploy selftest --device cuda`: the GPU correctness checks (TurboMind.CUDASelfTest), printing
// one line per check and `N passed, N failed`.
import ArgumentParser
import Foundation
import TurboMind

struct SelfTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check the CUDA kernels against the CPU ones (and, with --model, SmolLM2 on the GPU against golden outputs).",
        discussion: """
        --device cuda fails when no GPU is usable; --device auto reports the CUDA checks as skipped instead.
        --model: the SmolLM2-135M-Instruct directory (Scripts/fetch-test-model); --fixtures: Tests/Fixtures/smollm2.
        """
    )

    @Option(parsing: .unconditional, help: "cuda, or auto (skip the checks when no GPU is usable).")
    var device: String = "cuda"

    @Option(parsing: .unconditional, help: "SmolLM2-135M-Instruct directory for the model checks.")
    var model: String?

    @Option(parsing: .unconditional, help: "The golden fixtures (golden.json, golden-logits.safetensors, reference-f64.json).")
    var fixtures: String = "Tests/Fixtures/smollm2"

    @Option(name: [.customLong("engine-model"), .customLong("engine_model")], parsing: .unconditional,
            help: "Any Llama-family directory (e.g. Scripts/make-random-llama DIR 7b): also check that CUDA graphs and GPU sampling change no token.")
    var engineModel: String?

    func validate() throws {
        guard device == "cuda" || device == "auto" else { throw ValidationError("--device must be cuda or auto, got '\(device)'") }
    }

    func run() async throws {
        if device == "cuda" {
            _ = try CUDABackend()   // no GPU: the error names what is missing (exit 1)
        }
        let test = CUDASelfTest { line in print(line) }
        var outcome = await test.run(model: model.map { URL(fileURLWithPath: $0) }, fixtures: URL(fileURLWithPath: fixtures))
        if let engineModel { outcome = await test.engineChecks(directory: URL(fileURLWithPath: engineModel)) }
        print("\(outcome.passed) passed, \(outcome.failed) failed\(outcome.skipped > 0 ? ", \(outcome.skipped) skipped" : "")")
        if outcome.failed > 0 { throw ExitCode(1) }
    }
}
