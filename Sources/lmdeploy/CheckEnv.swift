// `lmdeploy check-env`: what the engine will run on.
import ArgumentParser
import TurboMind

struct CheckEnv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-env",
        abstract: "Print the CPU features, kernel ISA, BLAS build and whether CUDA was found."
    )

    func run() throws {
        print("lmdeploy".padding(toLength: 14, withPad: " ", startingAt: 0) + LMDeployVersion.string)
        for (label, value) in EnvironmentReport.entries() {
            print(label.padding(toLength: 14, withPad: " ", startingAt: 0) + value)
        }
    }
}
