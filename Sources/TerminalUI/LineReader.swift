// Reading lines from standard input: with the line editor (raw mode) when both stdin and stdout
// are terminals, as plain buffered line reads otherwise (pipes, files, TERM=dumb). Either way
// a Ctrl-C (SIGINT through `Interrupts`) wakes the reader up and is reported.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

public enum LineInput: Equatable, Sendable {
    case line(String)
    /// Ctrl-C with nothing typed on the line (a Ctrl-C on a typed line clears it instead).
    case interrupt
    /// End of input (Ctrl-D on an empty line, or the end of the pipe).
    case endOfInput
}

public final class LineReader {
    public let input: Int32
    public let output: Int32
    /// True when lines are read with the editor.
    public let editing: Bool
    private let interrupts: Interrupts?
    private var editor = LineEditor()
    private var pending: [UInt8] = []   // plain mode: bytes read past the last line
    private var keyBacklog: [UInt8] = [] // editing: keys read past the last line
    private var atEnd = false

    public init(input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO, interrupts: Interrupts? = .shared) {
        self.input = input
        self.output = output
        self.interrupts = interrupts
        let term = ProcessInfo.processInfo.environment["TERM"] ?? ""
        editing = isatty(input) != 0 && isatty(output) != 0 && term != "dumb"
    }

    /// Lines submitted so far (the editor's history).
    public var history: [String] { editor.history }

    /// Writes `prompt` and reads one line (without its line break).
    public func readLine(prompt: String) -> LineInput {
        editing ? readEdited(prompt: prompt) : readPlain(prompt: prompt)
    }

    public func write(_ text: String) { Terminal.write(text, to: output) }

    // MARK: - Plain

    private func readPlain(prompt: String) -> LineInput {
        write(prompt)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                var bytes = pending[..<newline]
                if bytes.last == 0x0D { bytes = bytes.dropLast() }
                let line = String(decoding: bytes, as: UTF8.self)
                pending.removeSubrange(...newline)
                return .line(line)
            }
            if atEnd {
                guard !pending.isEmpty else { return .endOfInput }
                let line = String(decoding: pending, as: UTF8.self)
                pending.removeAll()
                return .line(line)
            }
            switch waitForInput() {
            case .interrupt: return .interrupt
            case .ready:
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = read(input, &buffer, buffer.count)
                if n > 0 { pending += buffer[..<n] }
                else if n == 0 || (errno != EINTR && errno != EAGAIN) { atEnd = true }
            }
        }
    }

    // MARK: - Edited

    private func readEdited(prompt fullPrompt: String) -> LineInput {
        // Text up to the prompt's last line break is written once; the rest is redrawn.
        var prompt = fullPrompt
        if let cut = fullPrompt.lastIndex(of: "\n") {
            write(String(fullPrompt[...cut]))
            prompt = String(fullPrompt[fullPrompt.index(after: cut)...])
        }
        guard RawMode.enter(input) else { return readPlain(prompt: prompt) }
        defer { RawMode.leave() }
        editor.reset()
        var row = 0
        func redraw() {
            let r = LineRendering.refresh(prompt: prompt, text: editor.buffer, cursor: editor.cursor,
                                          columns: RawMode.columns(output), cursorRow: row)
            row = r.cursorRow
            write(r.output)
        }
        func finishLine() {
            write(LineRendering.finish(prompt: prompt, text: editor.buffer, columns: RawMode.columns(output), cursorRow: row))
        }
        redraw()
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            var bytes: ArraySlice<UInt8>
            if !keyBacklog.isEmpty {
                bytes = keyBacklog[...]
                keyBacklog = []
            } else {
            switch waitForInput() {
            case .interrupt:
                bytes = [0x03]                       // a SIGINT from outside acts as Ctrl-C
            case .ready:
                let n = read(input, &buffer, buffer.count)
                if n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN) {
                    finishLine()
                    return editor.buffer.isEmpty ? .endOfInput : .line(editor.line)
                }
                bytes = n > 0 ? buffer[..<n] : []
            }
            }
            for (i, byte) in zip(bytes.indices, bytes) {
                // Keys typed ahead past the end of this line (a paste, "\r\r") wait for the next one.
                func keepRest() { keyBacklog = Array(bytes[(i + 1)...]) }
                let text = editor.buffer
                switch editor.feed(byte) {
                case .none: break
                case .changed: redraw()
                case .submit(let line):
                    // Redraw the finished line with the cursor at its end, then go below it.
                    let r = LineRendering.refresh(prompt: prompt, text: text, cursor: text.count,
                                                  columns: RawMode.columns(output), cursorRow: row)
                    write(r.output)
                    write(LineRendering.finish(prompt: prompt, text: text, columns: RawMode.columns(output), cursorRow: r.cursorRow))
                    keepRest()
                    return .line(line)
                case .interrupt:
                    finishLine()
                    keepRest()
                    return .interrupt
                case .endOfInput:
                    finishLine()
                    keepRest()
                    return .endOfInput
                case .clearScreen:
                    write("\u{1B}[H\u{1B}[2J")
                    row = 0
                    redraw()
                case .suspend:
                    finishLine()
                    RawMode.suspend(input)
                    row = 0
                    redraw()
                }
            }
        }
    }

    // MARK: - Waiting

    private enum Wake { case ready, interrupt }

    /// Blocks until stdin has bytes (or its end) or an interrupt is queued.
    private func waitForInput() -> Wake {
        while true {
            if let interrupts, interrupts.takeQueued() { return .interrupt }
            var fds = [pollfd(fd: input, events: Int16(POLLIN), revents: 0)]
            if let interrupts { fds.append(pollfd(fd: interrupts.readFD, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 {
                if errno == EINTR { continue }
                return .ready                         // let read() report the error
            }
            if fds.count > 1, fds[1].revents & Int16(POLLIN) != 0, interrupts?.takeQueued() == true { return .interrupt }
            if fds[0].revents != 0 { return .ready }
        }
    }
}

/// Unbuffered writes to a file descriptor (stdout and stderr of the chat).
public enum Terminal {
    public static func write(_ text: String, to fd: Int32) {
        guard !text.isEmpty else { return }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { systemWrite(fd, $0.baseAddress, $0.count) }
            if n > 0 { bytes = bytes.dropFirst(n) }
            else if n < 0 && errno == EINTR { continue }
            else { return }
        }
    }

    public static func out(_ text: String) { write(text, to: STDOUT_FILENO) }
    /// A line on stderr.
    public static func err(_ text: String) { write(text + "\n", to: STDERR_FILENO) }
}

private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, bytes, count)
}
