// The key handling of the terminal line editor, as a pure state machine over input bytes: no
// terminal, no I/O, so every key can be tested on a byte stream. `LineReader` feeds it the
// bytes read in raw mode and draws `LineRendering.refresh` after each change.
//
// Keys: printable text (UTF-8, edited by grapheme cluster), Left/Right (also Ctrl-B/F),
// Ctrl-Left/Right and Alt-B/F (a word), Home/End (also Ctrl-A/E), Backspace, Delete,
// Ctrl-D (delete, or end of input on an empty line), Ctrl-U (erase to the start),
// Ctrl-K (erase to the end), Ctrl-W (erase the word before the cursor), Up/Down (also
// Ctrl-P/N: earlier lines of this run), Ctrl-C (clear the line, or an interrupt on an empty
// one), Ctrl-L (clear the screen), Ctrl-Z (suspend), Enter (submit).

public struct LineEditor: Sendable {
    /// What a key asks of the caller.
    public enum Event: Equatable, Sendable {
        /// The line changed (or the cursor moved): redraw it.
        case changed
        /// Nothing to do (an ignored key, or the middle of a multi-byte key).
        case none
        /// Enter: the line is finished (it is added to the history when not empty).
        case submit(String)
        /// Ctrl-C on an empty line.
        case interrupt
        /// Ctrl-D on an empty line.
        case endOfInput
        /// Ctrl-L: clear the screen, then redraw.
        case clearScreen
        /// Ctrl-Z: suspend the process (job control), then redraw.
        case suspend
    }

    public private(set) var buffer: [Character] = []
    /// Index into `buffer` (0…buffer.count) of the character after the cursor.
    public private(set) var cursor = 0
    /// Earlier submitted lines, oldest first.
    public private(set) var history: [String] = []
    public let historyLimit: Int

    private var historyIndex = 0          // history.count: editing the new line
    private var draft: [Character] = []   // the new line while browsing the history
    private var utf8: [UInt8] = []        // bytes of an incomplete UTF-8 sequence
    private var utf8Needed = 0
    private var escape: [UInt8]? = nil    // bytes after ESC of an unfinished escape sequence

    public init(historyLimit: Int = 1000) {
        self.historyLimit = max(0, historyLimit)
    }

    public var line: String { String(buffer) }

    /// Starts a new line (keeps the history).
    public mutating func reset() {
        buffer = []
        cursor = 0
        draft = []
        historyIndex = history.count
        utf8 = []
        utf8Needed = 0
        escape = nil
    }

    public mutating func addHistory(_ line: String) {
        guard historyLimit > 0, !line.isEmpty, history.last != line else { return }
        history.append(line)
        if history.count > historyLimit { history.removeFirst(history.count - historyLimit) }
        historyIndex = history.count
    }

    /// Feeds the bytes in order; returns the events that are not `.none`.
    public mutating func feed<S: Swift.Sequence<UInt8>>(_ bytes: S) -> [Event] {
        var events: [Event] = []
        for b in bytes {
            let e = feed(b)
            if e != .none { events.append(e) }
        }
        return events
    }

    public mutating func feed(_ byte: UInt8) -> Event {
        if escape != nil { return continueEscape(byte) }
        if utf8Needed > 0 {
            if byte & 0xC0 == 0x80 {
                utf8.append(byte)
                utf8Needed -= 1
                if utf8Needed == 0 {
                    let text = String(decoding: utf8, as: UTF8.self)
                    utf8 = []
                    return insert(text)
                }
                return .none
            }
            // A broken sequence: it becomes U+FFFD and the byte is read afresh.
            utf8 = []
            utf8Needed = 0
            _ = insert("\u{FFFD}")
            let e = feed(byte)
            return e == .none ? .changed : e
        }
        switch byte {
        case 0x01: return moveTo(0)                          // Ctrl-A
        case 0x02: return moveTo(cursor - 1)                 // Ctrl-B
        case 0x03:                                            // Ctrl-C
            if buffer.isEmpty { return .interrupt }
            buffer = []
            cursor = 0
            historyIndex = history.count
            return .changed
        case 0x04:                                            // Ctrl-D
            if buffer.isEmpty { return .endOfInput }
            return deleteForward()
        case 0x05: return moveTo(buffer.count)               // Ctrl-E
        case 0x06: return moveTo(cursor + 1)                 // Ctrl-F
        case 0x08, 0x7F: return deleteBackward()             // Ctrl-H, Backspace
        case 0x09: return insert(" ")                         // Tab: a space (no completion)
        case 0x0A, 0x0D:                                      // Enter
            let text = line
            addHistory(text)
            reset()
            return .submit(text)
        case 0x0B: return erase(cursor..<buffer.count)        // Ctrl-K
        case 0x0C: return .clearScreen                        // Ctrl-L
        case 0x0E: return historyNext()                       // Ctrl-N
        case 0x10: return historyPrevious()                   // Ctrl-P
        case 0x15: return erase(0..<cursor)                   // Ctrl-U
        case 0x17: return erase(wordStart(before: cursor)..<cursor) // Ctrl-W
        case 0x1A: return .suspend                            // Ctrl-Z
        case 0x1B:
            escape = []
            return .none
        case 0x00..<0x20: return .none
        case 0x20..<0x80: return insert(String(UnicodeScalar(byte)))
        case 0xC2...0xDF: return startUTF8(byte, needed: 1)
        case 0xE0...0xEF: return startUTF8(byte, needed: 2)
        case 0xF0...0xF4: return startUTF8(byte, needed: 3)
        default: return insert("\u{FFFD}")                   // a stray continuation or invalid byte
        }
    }

    // MARK: - Escape sequences (ESC [ … final, ESC O x, ESC x)

    private mutating func continueEscape(_ byte: UInt8) -> Event {
        var seq = escape!
        seq.append(byte)
        if seq.count == 1 {
            switch byte {
            case UInt8(ascii: "["), UInt8(ascii: "O"):
                escape = seq
                return .none
            case UInt8(ascii: "b"), UInt8(ascii: "B"):
                escape = nil
                return moveTo(wordStart(before: cursor))
            case UInt8(ascii: "f"), UInt8(ascii: "F"):
                escape = nil
                return moveTo(wordEnd(after: cursor))
            case 0x7F, 0x08:                                  // Alt-Backspace
                escape = nil
                return erase(wordStart(before: cursor)..<cursor)
            case 0x1B:                                        // ESC ESC: start again
                escape = []
                return .none
            default:                                          // Alt-key or a lone Escape: dropped
                escape = nil
                return .none
            }
        }
        if seq[0] == UInt8(ascii: "O") {                     // SS3: ESC O x
            escape = nil
            return key(final: byte, parameters: [])
        }
        // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, a final byte 0x40–0x7E.
        switch byte {
        case 0x20...0x3F:
            if seq.count > 32 { escape = nil }                 // a runaway sequence: dropped
            else { escape = seq }
            return .none
        case 0x40...0x7E:
            escape = nil
            let parameters = String(decoding: seq[1..<(seq.count - 1)], as: UTF8.self)
                .split(separator: ";", omittingEmptySubsequences: false).map { Int($0) ?? 0 }
            return key(final: byte, parameters: parameters)
        default:
            escape = nil
            return .none
        }
    }

    private mutating func key(final: UInt8, parameters: [Int]) -> Event {
        // A modifier parameter (ESC [ 1 ; 5 D): 5 = Ctrl, 3 = Alt.
        let modifier = parameters.count >= 2 ? parameters[1] : 1
        let byWord = modifier == 5 || modifier == 3
        switch final {
        case UInt8(ascii: "A"): return historyPrevious()
        case UInt8(ascii: "B"): return historyNext()
        case UInt8(ascii: "C"): return moveTo(byWord ? wordEnd(after: cursor) : cursor + 1)
        case UInt8(ascii: "D"): return moveTo(byWord ? wordStart(before: cursor) : cursor - 1)
        case UInt8(ascii: "H"): return moveTo(0)
        case UInt8(ascii: "F"): return moveTo(buffer.count)
        case UInt8(ascii: "~"):
            switch parameters.first ?? 0 {
            case 1, 7: return moveTo(0)
            case 4, 8: return moveTo(buffer.count)
            case 3: return deleteForward()
            default: return .none                              // Insert, PageUp/Down, F-keys, paste marks
            }
        default: return .none
        }
    }

    // MARK: - Editing

    private mutating func startUTF8(_ byte: UInt8, needed: Int) -> Event {
        utf8 = [byte]
        utf8Needed = needed
        return .none
    }

    /// Inserts text at the cursor. Characters are grapheme clusters, so a combining mark typed
    /// after a letter joins it and the cursor stays after the combined character.
    private mutating func insert(_ text: String) -> Event {
        let before = String(buffer[..<cursor]) + text
        let joined = before + String(buffer[cursor...])
        buffer = Array(joined)
        cursor = min(before.count, buffer.count)
        return .changed
    }

    private mutating func moveTo(_ position: Int) -> Event {
        let p = min(max(position, 0), buffer.count)
        guard p != cursor else { return .none }
        cursor = p
        return .changed
    }

    private mutating func deleteBackward() -> Event {
        guard cursor > 0 else { return .none }
        buffer.remove(at: cursor - 1)
        cursor -= 1
        return .changed
    }

    private mutating func deleteForward() -> Event {
        guard cursor < buffer.count else { return .none }
        buffer.remove(at: cursor)
        return .changed
    }

    private mutating func erase(_ range: Range<Int>) -> Event {
        guard !range.isEmpty else { return .none }
        buffer.removeSubrange(range)
        cursor = range.lowerBound
        return .changed
    }

    /// The start of the word before `i` (spaces before the cursor are skipped first).
    private func wordStart(before i: Int) -> Int {
        var j = i
        while j > 0, buffer[j - 1].isWhitespace { j -= 1 }
        while j > 0, !buffer[j - 1].isWhitespace { j -= 1 }
        return j
    }

    private func wordEnd(after i: Int) -> Int {
        var j = i
        while j < buffer.count, buffer[j].isWhitespace { j += 1 }
        while j < buffer.count, !buffer[j].isWhitespace { j += 1 }
        return j
    }

    // MARK: - History

    private mutating func historyPrevious() -> Event {
        guard historyIndex > 0 else { return .none }
        if historyIndex == history.count { draft = buffer }
        historyIndex -= 1
        buffer = Array(history[historyIndex])
        cursor = buffer.count
        return .changed
    }

    private mutating func historyNext() -> Event {
        guard historyIndex < history.count else { return .none }
        historyIndex += 1
        buffer = historyIndex == history.count ? draft : Array(history[historyIndex])
        cursor = buffer.count
        return .changed
    }
}
