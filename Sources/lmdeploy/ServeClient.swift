// The terminal loop of `lmdeploy serve api_client`: `lmdeploy chat`'s prompt and commands, with
// the turns sent to a server's /v1/chat/interactive.
import Foundation
import Serve
import TerminalUI

enum TerminalChat {
    static func run(client: InteractiveClient, maxNewTokens: Int, temperature: Double) async throws {
        Terminal.err("server: \(client.baseURL), session \(client.sessionID)")
        let prompt = ChatPrompt()
        chat: while true {
            let text: String
            switch prompt.next() {
            case .quit:
                break chat
            case .newSession:
                try await client.end()
                Terminal.out("(new session)\n")
                continue
            case .message(let message):
                text = message
            }
            do {
                var finish: String?
                var history = 0
                try await Interrupts.shared.during(onInterrupt: { Task { try? await client.stop() } }) {
                    for try await update in client.send(text, maxTokens: maxNewTokens, sampling: ["temperature": temperature]) {
                        Terminal.out(update.text)
                        finish = update.finishReason ?? finish
                        history = update.historyTokens
                    }
                }
                Terminal.out("\n")
                if finish == "cancelled" { Terminal.err("(reply stopped; the conversation keeps its \(history) tokens)") }
                if finish == "session_full" {
                    try await client.end()
                    Terminal.out("exceed session max length: the session is ended, a new one starts.\n")
                }
            } catch let error as ClientError {
                Terminal.err("\(error)")
            }
        }
    }
}
