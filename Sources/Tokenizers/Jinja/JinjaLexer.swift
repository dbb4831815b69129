import Foundation

/// A token inside `{{ … }}` or `{% … %}`.
struct JinjaToken: Sendable {
    enum Kind: Sendable, Equatable {
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        case op(String)
    }

    let kind: Kind
    let line: Int

    func isName(_ n: String) -> Bool {
        if case let .name(x) = kind { return x == n }
        return false
    }

    func isOp(_ o: String) -> Bool {
        if case let .op(x) = kind { return x == o }
        return false
    }

    var display: String {
        switch kind {
        case let .name(n): return "'\(n)'"
        case let .string(s): return JinjaValue.pythonRepr(s)
        case let .integer(i): return String(i)
        case let .float(d): return String(d)
        case let .op(o): return "'\(o)'"
        }
    }
}

/// The template split into text and tags, whitespace control already applied.
enum TemplatePart: Sendable {
    case text(String)
    case expression([JinjaToken], line: Int)
    case statement([JinjaToken], line: Int)
}

/// Splits a template into parts as Jinja's lexer does with the settings Hugging Face uses for
/// chat templates: `trim_blocks=True`, `lstrip_blocks=True`, `keep_trailing_newline=False`;
/// `{%-`/`-%}` (and `{{-`, `-}}`, `{#-`, `-#}`) strip whitespace, `{%+`/`+%}` disable trimming.
struct JinjaLexer {
    private let s: [Unicode.Scalar]
    private var pos = 0
    private var line = 1
    private let trimBlocks = true
    private let lstripBlocks = true

    init(source: String) {
        // Newlines normalized to \n, and a single trailing newline dropped, as Jinja does.
        var scalars: [Unicode.Scalar] = []
        let raw = Array(source.unicodeScalars)
        var i = 0
        while i < raw.count {
            if raw[i] == "\r" {
                scalars.append("\n")
                if i + 1 < raw.count && raw[i + 1] == "\n" { i += 1 }
            } else {
                scalars.append(raw[i])
            }
            i += 1
        }
        if scalars.last == "\n" { scalars.removeLast() }
        s = scalars
    }

    private enum TagKind { case expression, statement, comment }

    mutating func tokenize() throws(TokenizerError) -> [TemplatePart] {
        var parts: [TemplatePart] = []
        var lineStarting = true
        var textStart = 0
        // Leading whitespace of the next text to remove: set by `-%}` (all) or trim_blocks (one \n).
        while true {
            // Find the next tag opening.
            var j = pos
            var kind: TagKind? = nil
            while j + 1 < s.count {
                if s[j] == "{" {
                    let c = s[j + 1]
                    if c == "{" { kind = .expression; break }
                    if c == "%" { kind = .statement; break }
                    if c == "#" { kind = .comment; break }
                }
                j += 1
            }
            guard let tagKind = kind else {
                if textStart < s.count { parts.append(.text(string(textStart..<s.count))) }
                return parts
            }
            var text = Array(s[textStart..<j])
            let tagLine = line + text.filter { $0 == "\n" }.count
            var k = j + 2
            var sign: Unicode.Scalar? = nil
            if k < s.count && (s[k] == "-" || s[k] == "+") {
                sign = s[k]
                k += 1
            }
            if sign == "-" {
                while let last = text.last, UnicodeClass.isWhitespace(last) { text.removeLast() }
            } else if sign != "+" && lstripBlocks && tagKind != .expression {
                // Strip spaces between the start of the line and the tag.
                let lineStart = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
                if lineStart > 0 || lineStarting {
                    let tail = text[lineStart...]
                    if !tail.isEmpty && tail.allSatisfy({ UnicodeClass.isWhitespace($0) }) {
                        text.removeSubrange(lineStart...)
                    }
                }
            }
            if !text.isEmpty { parts.append(.text(String(String.UnicodeScalarView(text)))) }
            line = tagLine
            pos = k

            // The tag's body and its end.
            var endSign: Unicode.Scalar? = nil
            switch tagKind {
            case .comment:
                var e = pos
                while e + 1 < s.count && !(s[e] == "#" && s[e + 1] == "}") { e += 1 }
                guard e + 1 < s.count else {
                    throw TokenizerError.templateSyntax(message: "missing end of comment tag '#}'", line: tagLine)
                }
                if e > pos && (s[e - 1] == "-" || s[e - 1] == "+") { endSign = s[e - 1] }
                line += s[pos..<e].filter { $0 == "\n" }.count
                pos = e + 2
            case .expression, .statement:
                let close: Unicode.Scalar = tagKind == .expression ? "}" : "%"
                var tokens: [JinjaToken] = []
                var depth = 0
                while true {
                    skipWhitespace()
                    guard pos < s.count else {
                        throw TokenizerError.templateSyntax(
                            message: "missing end of tag '\(close)}'", line: tagLine)
                    }
                    if depth == 0 {
                        if (s[pos] == "-" || s[pos] == "+") && pos + 2 < s.count && s[pos + 1] == close && s[pos + 2] == "}" {
                            endSign = s[pos]
                            pos += 3
                            break
                        }
                        if s[pos] == close && pos + 1 < s.count && s[pos + 1] == "}" {
                            pos += 2
                            break
                        }
                    }
                    let token = try lexToken()
                    if case let .op(o) = token.kind {
                        if o == "(" || o == "[" || o == "{" { depth += 1 }
                        if o == ")" || o == "]" || o == "}" { depth = max(0, depth - 1) }
                    }
                    tokens.append(token)
                }
                parts.append(tagKind == .expression ? .expression(tokens, line: tagLine) : .statement(tokens, line: tagLine))
            }

            // Whitespace after the tag.
            lineStarting = false
            if endSign == "-" {
                while pos < s.count && UnicodeClass.isWhitespace(s[pos]) {
                    lineStarting = s[pos] == "\n"
                    if s[pos] == "\n" { line += 1 }
                    pos += 1
                }
            } else if endSign != "+" && trimBlocks && tagKind != .expression && pos < s.count && s[pos] == "\n" {
                pos += 1
                line += 1
                lineStarting = true
            }
            textStart = pos
        }
    }

    private func string(_ r: Range<Int>) -> String {
        String(String.UnicodeScalarView(s[r]))
    }

    private mutating func skipWhitespace() {
        while pos < s.count && UnicodeClass.isWhitespace(s[pos]) {
            if s[pos] == "\n" { line += 1 }
            pos += 1
        }
    }

    private static let twoCharOps: Set<String> = ["//", "**", "==", "!=", "<=", ">="]
    private static let oneCharOps: Set<Unicode.Scalar> = ["+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ".", ",", ":", "|", "<", ">", "=", ";"]

    private mutating func lexToken() throws(TokenizerError) -> JinjaToken {
        let c = s[pos]
        let startLine = line
        if c == "_" || (c.isASCII && c.properties.isAlphabetic) {
            let start = pos
            while pos < s.count && (s[pos] == "_" || (s[pos].isASCII && (s[pos].properties.isAlphabetic || ("0"..."9").contains(s[pos])))) {
                pos += 1
            }
            return JinjaToken(kind: .name(string(start..<pos)), line: startLine)
        }
        if ("0"..."9").contains(c) {
            return try lexNumber()
        }
        if c == "'" || c == "\"" {
            return JinjaToken(kind: .string(try lexString(quote: c)), line: startLine)
        }
        if pos + 1 < s.count {
            let two = string(pos..<(pos + 2))
            if Self.twoCharOps.contains(two) {
                pos += 2
                return JinjaToken(kind: .op(two), line: startLine)
            }
        }
        if Self.oneCharOps.contains(c) {
            pos += 1
            return JinjaToken(kind: .op(String(Character(c))), line: startLine)
        }
        throw TokenizerError.templateSyntax(message: "unexpected character '\(Character(c))'", line: startLine)
    }

    private mutating func lexNumber() throws(TokenizerError) -> JinjaToken {
        let start = pos
        func digits() {
            while pos < s.count && (("0"..."9").contains(s[pos]) || s[pos] == "_") { pos += 1 }
        }
        digits()
        var isFloat = false
        if pos + 1 < s.count && s[pos] == "." && ("0"..."9").contains(s[pos + 1]) {
            isFloat = true
            pos += 1
            digits()
        }
        if pos < s.count && (s[pos] == "e" || s[pos] == "E") {
            var e = pos + 1
            if e < s.count && (s[e] == "+" || s[e] == "-") { e += 1 }
            if e < s.count && ("0"..."9").contains(s[e]) {
                isFloat = true
                pos = e
                digits()
            }
        }
        let text = string(start..<pos).replacingOccurrences(of: "_", with: "")
        if isFloat, let d = Double(text) { return JinjaToken(kind: .float(d), line: line) }
        if let i = Int(text) { return JinjaToken(kind: .integer(i), line: line) }
        if !isFloat {
            throw TokenizerError.templateSyntax(message: "the integer \(text.prefix(40)) does not fit in the sandbox's 64-bit integers", line: line)
        }
        throw TokenizerError.templateSyntax(message: "invalid number '\(text)'", line: line)
    }

    /// A string literal, with Python escape sequences (`\n`, `\t`, `\\`, `\'`, `\xhh`, `\uXXXX`…).
    private mutating func lexString(quote: Unicode.Scalar) throws(TokenizerError) -> String {
        let startLine = line
        pos += 1
        var out = String.UnicodeScalarView()
        while pos < s.count {
            let c = s[pos]
            if c == quote {
                pos += 1
                return String(out)
            }
            if c == "\n" { line += 1 }
            if c != "\\" {
                out.append(c)
                pos += 1
                continue
            }
            guard pos + 1 < s.count else { break }
            let e = s[pos + 1]
            pos += 2
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "v": out.append("\u{0B}")
            case "a": out.append("\u{07}")
            case "\n": line += 1  // backslash-newline: a line continuation
            case "0"..."7":
                var value = e.value - 48
                var n = 1
                while n < 3 && pos < s.count && ("0"..."7").contains(s[pos]) {
                    value = value * 8 + (s[pos].value - 48)
                    pos += 1
                    n += 1
                }
                out.append(Unicode.Scalar(value)!)
            case "x", "u", "U":
                let count = e == "x" ? 2 : (e == "u" ? 4 : 8)
                guard pos + count <= s.count, let v = UInt32(string(pos..<(pos + count)), radix: 16),
                      let scalar = Unicode.Scalar(v) else {
                    throw TokenizerError.templateSyntax(message: "invalid \\\(e) escape in a string", line: line)
                }
                out.append(scalar)
                pos += count
            default:
                out.append("\\")
                out.append(e)
            }
        }
        throw TokenizerError.templateSyntax(message: "unterminated string literal", line: startLine)
    }
}
