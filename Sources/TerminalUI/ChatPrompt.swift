// lmdeploy chat's prompt, shared by `chat` and `serve api_client`: a message ends with an empty
// line, `exit` or Ctrl-D quits, `end` starts a new session, Ctrl-C at an empty prompt hints first
// and quits when pressed again.
import Foundation

/// What the user did at the prompt.
public enum ChatTurn: Equatable {
    case quit
    case newSession
    case message(String)
}

public final class ChatPrompt {
    private let reader = MessageReader(commands: ["exit", "end"])
    private var quitOnInterrupt = false

    public init() {}

    /// Reads until the user sends a message, asks for a new session, or quits.
    public func next() -> ChatTurn {
        while true {
            switch reader.read(prompt: "\ndouble enter to end input >>> ") {
            case .endOfInput, .command("exit"):
                return .quit
            case .interrupt:
                if quitOnInterrupt { return .quit }
                quitOnInterrupt = true
                Terminal.out("(press Ctrl-C again or type exit to quit)\n")
            case .command:
                quitOnInterrupt = false
                return .newSession
            case .message(let message):
                quitOnInterrupt = false
                if !message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return .message(message) }
            }
        }
    }
}
