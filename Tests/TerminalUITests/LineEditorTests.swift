// The line editor's key handling on byte streams, as a terminal sends them (xterm/VT100
// sequences), and the redraw arithmetic for wrapped lines.
import Testing
import TerminalUI

private let left = "\u{1B}[D", right = "\u{1B}[C", up = "\u{1B}[A", down = "\u{1B}[B"
private let home = "\u{1B}[H", end = "\u{1B}[F", delete = "\u{1B}[3~", backspace = "\u{7F}"

/// Feeds `keys` and returns the submitted lines and the other events.
private func type(_ keys: String, into editor: inout LineEditor) -> (lines: [String], events: [LineEditor.Event]) {
    var lines: [String] = [], events: [LineEditor.Event] = []
    for e in editor.feed(Array(keys.utf8)) {
        if case .submit(let l) = e { lines.append(l) } else if e != .changed { events.append(e) }
    }
    return (lines, events)
}

private func submitted(_ keys: String) -> [String] {
    var editor = LineEditor()
    return type(keys, into: &editor).lines
}

@Suite struct LineEditorTests {
    @Test func plainTextAndEnter() {
        #expect(submitted("hello world\r") == ["hello world"])
        #expect(submitted("a\rb\n\r") == ["a", "b", ""])
    }

    @Test func arrowsInsertInTheMiddle() {
        // "Itly?" ← ← ← "a" → "Italy?"
        #expect(submitted("Itly?" + left + left + left + "a\r") == ["Italy?"])
        // Left past the start stops there; Right past the end stops there.
        #expect(submitted("bc" + left + left + left + left + "a" + right + right + right + right + "d\r") == ["abcd"])
        // SS3 arrows (application cursor mode) and Ctrl-B/Ctrl-F do the same.
        #expect(submitted("ac\u{1B}ODb\u{06}d\r") == ["abcd"])
        #expect(submitted("ac\u{02}b\r") == ["abc"])
    }

    @Test func homeEndAndControlAE() {
        #expect(submitted("is it" + home + "what " + end + "?\r") == ["what is it?"])
        #expect(submitted("b\u{01}a\u{05}c\r") == ["abc"])
        #expect(submitted("b\u{1B}[1~a\u{1B}[4~c\r") == ["abc"])   // Home/End as VT220 keys
        #expect(submitted("b\u{1B}[7~a\u{1B}[8~c\r") == ["abc"])   // rxvt
        #expect(submitted("b\u{1B}OHa\u{1B}OFc\r") == ["abc"])
    }

    @Test func backspaceAndDelete() {
        #expect(submitted("abcd" + backspace + backspace + "x\r") == ["abx"])
        #expect(submitted("abcd" + home + delete + delete + "x\r") == ["xcd"])
        #expect(submitted("ab\u{08}\r") == ["a"])                          // Ctrl-H
        #expect(submitted(backspace + "a" + home + backspace + end + delete + "\r") == ["a"]) // at the edges: nothing
        // Ctrl-D deletes under the cursor on a non-empty line.
        #expect(submitted("abc" + home + "\u{04}\r") == ["bc"])
    }

    @Test func killKeys() {
        #expect(submitted("hello world" + left + left + left + left + left + "\u{15}\r") == ["world"])   // Ctrl-U
        #expect(submitted("hello world" + home + right + right + "\u{0B}\r") == ["he"])                    // Ctrl-K
        #expect(submitted("the capital of Germany?\u{17}Italy?\r") == ["the capital of Italy?"])          // Ctrl-W
        #expect(submitted("one two   \u{17}\r") == ["one "])                    // Ctrl-W eats the spaces before the word
        #expect(submitted("one two\u{1B}\u{7F}\r") == ["one "])                 // Alt-Backspace
    }

    @Test func wordMotion() {
        #expect(submitted("one two three\u{1B}[1;5Dx\r") == ["one two xthree"])
        #expect(submitted("one two three" + home + "\u{1B}[1;5Cx\r") == ["onex two three"])
        #expect(submitted("one two\u{1B}bx\u{1B}f!\r") == ["one xtwo!"])
    }

    @Test func utf8IsEditedByCharacter() {
        // "é" (2 bytes), "中" (3 bytes), "🙂" (4 bytes): each one step of the cursor and one Backspace.
        #expect(submitted("caf\u{E9}" + left + "X\r") == ["cafX\u{E9}"])
        #expect(submitted("中文" + left + backspace + "\r") == ["文"])
        #expect(submitted("a🙂b" + left + backspace + "\r") == ["ab"])
        // A combining accent typed after "e" joins it: one character, removed by one Backspace.
        var editor = LineEditor()
        _ = type("e\u{301}", into: &editor)
        #expect(editor.buffer.count == 1 && editor.cursor == 1)
        #expect(type(backspace + "\r", into: &editor).lines == [""])
        // Invalid UTF-8 becomes U+FFFD and the next byte is read afresh.
        #expect(editor.feed([0xC3, 0x41, 0x0D]) .contains(.submit("\u{FFFD}A")))
        #expect(editor.feed([0xFF, 0x0D]).contains(.submit("\u{FFFD}")))
    }

    @Test func historyWalksEarlierLines() {
        var editor = LineEditor()
        _ = type("first\rsecond\r", into: &editor)
        #expect(editor.history == ["first", "second"])
        // Up twice: "first"; down once: "second"; edit it.
        #expect(type(up + up + down + "!\r", into: &editor).lines == ["second!"])
        // The draft being typed comes back below the newest entry.
        #expect(type("dra" + up + up + down + down + "ft\r", into: &editor).lines == ["draft"])
        // Up at the oldest entry stays; Ctrl-P/N work as Up/Down.
        #expect(type(up + up + up + up + up + "\r", into: &editor).lines == ["first"])
        #expect(type("\u{10}\u{10}\u{0E}\r", into: &editor).lines == ["first"])
        // Empty lines and repeats are not recorded.
        _ = type("\r\rfirst\r", into: &editor)
        #expect(editor.history == ["first", "second", "second!", "draft", "first"])
        var bounded = LineEditor(historyLimit: 2)
        _ = type("a\rb\rc\r", into: &bounded)
        #expect(bounded.history == ["b", "c"])
    }

    @Test func controlCClearsATypedLineAndInterruptsAnEmptyOne() {
        var editor = LineEditor()
        let r = type("garbage\u{03}real\r", into: &editor)
        #expect(r.lines == ["real"])
        #expect(r.events.isEmpty)
        #expect(type("\u{03}", into: &editor).events == [.interrupt])
        #expect(type("\u{04}", into: &editor).events == [.endOfInput])
        #expect(type("\u{0C}\u{1A}", into: &editor).events == [.clearScreen, .suspend])
    }

    @Test func unknownSequencesAreIgnored() {
        // F5 (ESC [ 15 ~), a bracketed-paste mark, Insert, an Alt-key, a lone ESC before a letter.
        #expect(submitted("a\u{1B}[15~b\u{1B}[200~c\u{1B}[2~d\u{1B}xe\r") == ["abcde"])
        #expect(submitted("a\u{07}\u{1B}[99;99;99Zb\r") == ["ab"])
    }
}

@Suite struct LineRenderingTests {
    @Test func widths() {
        #expect(LineRendering.width("abc") == 3)
        #expect(LineRendering.width("中文") == 4)
        #expect(LineRendering.width("e\u{301}") == 1)
        #expect(LineRendering.width("🙂") == 2)
    }

    /// Replays the sequences on a model of the cursor (row, column) and checks it lands
    /// after `cursor` characters, on the right row, for lines that wrap.
    @Test func cursorLandsWhereTheTextSays() {
        for columns in [5, 10, 80] {
            for length in [0, 3, 4, 5, 9, 10, 11, 20] {
                let text = Array(String(repeating: "x", count: length))
                for cursor in [0, length / 2, length] {
                    let prompt = ">> "
                    let (out, row) = LineRendering.refresh(prompt: prompt, text: text, cursor: cursor, columns: columns, cursorRow: 0)
                    let (r, c) = simulate(out, columns: columns)
                    let offset = prompt.count + cursor
                    #expect(r == offset / columns && c == offset % columns, "cols \(columns) len \(length) cursor \(cursor): at \(r),\(c)")
                    #expect(row == offset / columns)
                    // A second refresh from there starts at the prompt's row again.
                    let (again, _) = LineRendering.refresh(prompt: prompt, text: text, cursor: 0, columns: columns, cursorRow: row)
                    let (r2, c2) = simulate(out + again, columns: columns)
                    #expect(r2 == prompt.count / columns && c2 == prompt.count % columns)
                    // finish() moves to the start of the row after the text.
                    let (r3, c3) = simulate(out + LineRendering.finish(prompt: prompt, text: text, columns: columns, cursorRow: row), columns: columns)
                    let total = prompt.count + length
                    #expect(c3 == 0 && r3 == (total + columns - 1) / columns, "finish: cols \(columns) len \(length)")
                }
            }
        }
    }

    /// A terminal cursor model: printable characters advance (with xterm's pending wrap at the
    /// right margin), CR, LF, and CSI A/B/C/J/K.
    private func simulate(_ s: String, columns: Int) -> (Int, Int) {
        var row = 0, col = 0, pendingWrap = false
        var it = Array(s.unicodeScalars)[...]
        while let ch = it.popFirst() {
            switch ch {
            case "\r": col = 0; pendingWrap = false
            case "\n": row += 1; pendingWrap = false
            case "\u{1B}":
                _ = it.popFirst()   // "["
                var digits = ""
                while let d = it.first, d.properties.numericType != nil { digits.unicodeScalars.append(d); it.removeFirst() }
                let n = Int(digits) ?? 1
                switch it.popFirst() {
                case "A": row -= n
                case "B": row += n
                case "C": col = min(col + n, columns - 1)
                default: break
                }
                pendingWrap = false
            default:
                if pendingWrap { row += 1; col = 0; pendingWrap = false }
                if col == columns - 1 { pendingWrap = true } else { col += 1 }
            }
        }
        return (row, col)
    }
}
