// Drawing the edited line: the VT100/ECMA-48 sequences that put prompt, text and cursor on the
// screen, for lines longer than the terminal is wide too (they wrap over several rows).

public enum LineRendering {
    /// Columns a character takes on a terminal: 2 for East Asian wide and emoji-presentation
    /// characters, 0 for combining marks and format characters, else 1.
    public static func width(_ c: Character) -> Int {
        guard let first = c.unicodeScalars.first else { return 0 }
        switch first.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format, .control: return 0
        default: break
        }
        if c.unicodeScalars.contains(where: { $0.value == 0xFE0F }) { return 2 }   // emoji presentation selector
        if first.properties.isEmojiPresentation { return 2 }
        return isWide(first.value) ? 2 : 1
    }

    public static func width<S: Swift.Sequence<Character>>(_ s: S) -> Int {
        s.reduce(0) { $0 + width($1) }
    }

    /// East Asian Wide and Fullwidth ranges (Unicode's EastAsianWidth.txt, W and F, condensed).
    static func isWide(_ v: UInt32) -> Bool {
        switch v {
        case 0x1100...0x115F, 0x231A...0x231B, 0x2329...0x232A, 0x2E80...0x303E, 0x3041...0x33FF,
             0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF, 0xA960...0xA97F, 0xAC00...0xD7A3,
             0xF900...0xFAFF, 0xFE10...0xFE19, 0xFE30...0xFE6F, 0xFF00...0xFF60, 0xFFE0...0xFFE6,
             0x16FE0...0x16FE4, 0x17000...0x18CFF, 0x1B000...0x1B2FF, 0x1F300...0x1F64F,
             0x1F900...0x1F9FF, 0x20000...0x2FFFD, 0x30000...0x3FFFD:
            return true
        default:
            return false
        }
    }

    /// The bytes that redraw `prompt` + `text` with the cursor before `text[cursor]`, given that
    /// the terminal's cursor is now `cursorRow` rows below the prompt's row. Returns the cursor's
    /// row afterwards (relative to the prompt's row), to pass to the next refresh.
    public static func refresh(prompt: String, text: [Character], cursor: Int, columns: Int,
                               cursorRow: Int) -> (output: String, cursorRow: Int) {
        let cols = max(columns, 1)
        var s = ""
        if cursorRow > 0 { s += "\u{1B}[\(cursorRow)A" }
        s += "\r\u{1B}[J" + prompt + String(text)
        let promptWidth = width(prompt)
        let total = promptWidth + width(text)
        let before = promptWidth + width(text[..<min(cursor, text.count)])
        // A line that ends exactly at the right margin leaves the cursor waiting in the last
        // column: move it to the next row so that row arithmetic holds.
        if total > 0 && total % cols == 0 { s += "\r\n" }
        let endRow = total / cols
        let row = before / cols, column = before % cols
        if endRow > row { s += "\u{1B}[\(endRow - row)A" }
        s += "\r"
        if column > 0 { s += "\u{1B}[\(column)C" }
        return (s, row)
    }

    /// The bytes that move the cursor from `cursorRow` to the line after the text (the row
    /// below its end), so that output continues below it.
    public static func finish(prompt: String, text: [Character], columns: Int, cursorRow: Int) -> String {
        let cols = max(columns, 1)
        let total = width(prompt) + width(text)
        let endRow = total > 0 && total % cols == 0 ? total / cols - 1 : total / cols
        var s = ""
        if endRow > cursorRow { s += "\u{1B}[\(endRow - cursorRow)B" }
        return s + "\r\n"
    }
}
