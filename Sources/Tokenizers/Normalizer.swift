import Foundation

/// The normalizers of Hugging Face `tokenizer.json` implemented here. They work on Unicode scalars
/// (never on `String` comparison, which is canonical-equivalence based).
indirect enum Normalizer: Sendable {
    case sequence([Normalizer])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    /// Prepends a string to non-empty text.
    case prepend([Unicode.Scalar])
    /// Replaces every occurrence of a literal string.
    case replace(pattern: [Unicode.Scalar], content: [Unicode.Scalar])
    /// Strips Unicode whitespace on the left and/or right.
    case strip(left: Bool, right: Bool)
    /// SentencePiece's identity normalization: optionally collapse and trim U+0020 runs, prepend
    /// one space to non-empty text, then spaces become `▁`.
    case sentencePiece(addDummyPrefix: Bool, removeExtraWhitespaces: Bool)

    static func load(_ field: JSONField) throws(TokenizerError) -> Normalizer? {
        if field.isNull { return nil }
        let type = try field.child("type").string()
        switch type {
        case "Sequence":
            var list: [Normalizer] = []
            for item in try field.child("normalizers").array() {
                if let n = try load(item) { list.append(n) }
            }
            return .sequence(list)
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "Prepend":
            return .prepend(Array(try field.child("prepend").string().unicodeScalars))
        case "Replace":
            return .replace(pattern: try literalPattern(field.child("pattern"), component: "normalizer"),
                            content: Array(try field.child("content").string().unicodeScalars))
        case "Strip":
            return .strip(left: try field.child("strip_left").bool(default: true),
                          right: try field.child("strip_right").bool(default: true))
        default:
            throw TokenizerError.unsupported(
                file: field.file, component: "normalizer",
                detail: "type '\(type)' at '\(field.path)' (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip)")
        }
    }

    /// The literal string of a `{"String": "..."}` pattern; `{"Regex": ...}` is not supported.
    static func literalPattern(_ field: JSONField, component: String) throws(TokenizerError) -> [Unicode.Scalar] {
        if let s = try field.child("String").optionalString() {
            guard !s.isEmpty else { throw field.child("String").error("a non-empty string") }
            return Array(s.unicodeScalars)
        }
        if !field.child("Regex").isNull {
            throw TokenizerError.unsupported(
                file: field.file, component: component,
                detail: "Replace with a Regex pattern at '\(field.path)' (only literal String patterns are supported)")
        }
        throw field.error("an object {\"String\": ...}")
    }

    func apply(_ text: String) -> String {
        switch self {
        case let .sequence(list):
            return list.reduce(text) { $1.apply($0) }
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case let .prepend(prefix):
            if text.isEmpty { return text }
            var view = String.UnicodeScalarView(prefix)
            view.append(contentsOf: text.unicodeScalars)
            return String(view)
        case let .replace(pattern, content):
            return String(String.UnicodeScalarView(
                replaceScalars(Array(text.unicodeScalars), pattern: pattern, content: content)))
        case let .strip(left, right):
            var scalars = Substring(text).unicodeScalars[...]
            if left { while let f = scalars.first, UnicodeClass.isWhitespace(f) { scalars.removeFirst() } }
            if right { while let l = scalars.last, UnicodeClass.isWhitespace(l) { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        case let .sentencePiece(addDummyPrefix, removeExtraWhitespaces):
            var out = String.UnicodeScalarView()
            var pendingSpace = false
            for s in text.unicodeScalars {
                if s == " " && removeExtraWhitespaces {
                    pendingSpace = !out.isEmpty
                    continue
                }
                if pendingSpace { out.append("\u{2581}"); pendingSpace = false }
                out.append(s == " " ? "\u{2581}" : s)
            }
            if addDummyPrefix && !out.isEmpty { out.insert("\u{2581}", at: out.startIndex) }
            return String(out)
        }
    }
}

/// Replaces the non-overlapping occurrences of `pattern`, left to right.
func replaceScalars(_ s: [Unicode.Scalar], pattern: [Unicode.Scalar], content: [Unicode.Scalar]) -> [Unicode.Scalar] {
    guard !pattern.isEmpty, s.count >= pattern.count else { return s }
    var out: [Unicode.Scalar] = []
    out.reserveCapacity(s.count)
    var i = 0
    let first = pattern[0]
    while i < s.count {
        if s[i] == first && i + pattern.count <= s.count && s[i..<(i + pattern.count)].elementsEqual(pattern) {
            out.append(contentsOf: content)
            i += pattern.count
        } else {
            out.append(s[i])
            i += 1
        }
    }
    return out
}
