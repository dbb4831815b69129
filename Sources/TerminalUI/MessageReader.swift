// lmdeploy's message input: a message may span several lines and ends with an empty line
// ("double enter"); a command word alone on the first line (`exit`, `end`) acts at once;
// end of input ends the chat.

import Foundation

public enum MessageInput: Equatable, Sendable {
    case message(String)
    /// One of the reader's commands, typed alone on the first line (trimmed).
    case command(String)
    /// Ctrl-C with nothing typed.
    case interrupt
    case endOfInput
}

public final class MessageReader {
    public let lines: LineReader
    public let commands: Set<String>

    public init(lines: LineReader = LineReader(), commands: Set<String>) {
        self.lines = lines
        self.commands = commands
    }

    /// Reads one message. Ctrl-C on a typed line clears the line (the editor does it); Ctrl-C on
    /// the empty line after some lines drops the message typed so far and prompts again.
    public func read(prompt: String) -> MessageInput {
        var collected: [String] = []
        var linePrompt = prompt
        while true {
            switch lines.readLine(prompt: linePrompt) {
            case .line(let line):
                linePrompt = ""
                if collected.isEmpty, commands.contains(line.trimmingCharacters(in: .whitespaces)) {
                    return .command(line.trimmingCharacters(in: .whitespaces))
                }
                if line.isEmpty {
                    if collected.isEmpty { continue }
                    return .message(collected.joined(separator: "\n"))
                }
                collected.append(line)
            case .interrupt:
                guard !collected.isEmpty else { return .interrupt }
                collected.removeAll()
                linePrompt = prompt
            case .endOfInput:
                // (the editor has already moved below the line)
                return collected.isEmpty ? .endOfInput : .message(collected.joined(separator: "\n"))
            }
        }
    }
}
