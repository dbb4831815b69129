// The `lmdeploy` executable: argument parsing only. Each subcommand lives in its own file and
// calls the core library (TurboMind, Tokenizers).
import ArgumentParser
import TurboMind

@main
struct LMDeploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lmdeploy",
        abstract: "Compress, deploy and serve large language models (a Swift LMDeploy).",
        discussion: """
        Chat with a local model:      lmdeploy chat turbomind ./hf_model_dir
        Serve an OpenAI-compatible API: lmdeploy serve api_server ./hf_model_dir --server-port 23333
        Measure speed:                lmdeploy bench ./hf_model_dir
        Check the environment:        lmdeploy check-env
        """,
        version: LMDeployVersion.string,
        subcommands: [Chat.self, Convert.self, ServeCommand.self, Lite.self, Bench.self, CheckEnv.self, SelfTest.self, Tokenize.self, List.self]
    )
}
