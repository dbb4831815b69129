// Line input and streamed output for the terminal chat. A message ends with an empty line
// (lmdeploy's "double enter"); `exit`/`end` alone on the first line act at once; end of input
// (Ctrl-D or a closed pipe) ends the chat.
import Foundation

final class TerminalIO {
    private let interactive = isatty(STDIN_FILENO) != 0

    /// Reads one message; nil at end of input with nothing typed.
    func readMessage(prompt: String) -> String? {
        out(prompt)
        var lines: [String] = []
        while let line = readLine(strippingNewline: true) {
            if lines.isEmpty, ["exit", "end"].contains(line.trimmingCharacters(in: .whitespaces)) { return line }
            if line.isEmpty {
                if lines.isEmpty { continue }
                break
            }
            lines.append(line)
        }
        if lines.isEmpty {
            if interactive { out("\n") }
            return nil
        }
        return lines.joined(separator: "\n")
    }

    func out(_ s: String) {
        guard !s.isEmpty else { return }
        FileHandle.standardOutput.write(Data(s.utf8))
    }

    func err(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }
}
