// `lmdeploy list`: the chat template names accepted by --model-name.
import ArgumentParser
import Tokenizers

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print the supported model names (lmdeploy's named chat templates, for --model-name)."
    )

    func run() throws {
        for name in NamedChatTemplate.names { print(name) }
    }
}
