/// The decoders of Hugging Face `tokenizer.json` implemented here, with its `decode_chain`
/// semantics: each step maps a list of token strings to a list of strings, joined at the end.
indirect enum Decoder: Sendable {
    case sequence([Decoder])
    /// Byte-level characters back to bytes (a token with a character outside the table is taken
    /// as its own UTF-8), all joined and decoded as lossy UTF-8.
    case byteLevel
    /// `<0xXX>` tokens back to bytes; invalid UTF-8 becomes one U+FFFD per byte.
    case byteFallback
    /// Joins all tokens into one.
    case fuse
    /// Replaces a literal string in each token.
    case replace(pattern: [Unicode.Scalar], content: [Unicode.Scalar])
    /// Removes up to `start` leading and `stop` trailing `content` characters of each token.
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    /// `replacement` back to spaces; in the first token it is dropped unless the scheme is never.
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme)

    static func load(_ field: JSONField) throws(TokenizerError) -> Decoder? {
        if field.isNull { return nil }
        let type = try field.child("type").string()
        switch type {
        case "Sequence":
            var list: [Decoder] = []
            for item in try field.child("decoders").array() {
                if let d = try load(item) { list.append(d) }
            }
            return .sequence(list)
        case "ByteLevel": return .byteLevel
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Replace":
            return .replace(pattern: try Normalizer.literalPattern(field.child("pattern"), component: "decoder"),
                            content: Array(try field.child("content").string().unicodeScalars))
        case "Strip":
            let content = Array(try field.child("content").string().unicodeScalars)
            guard content.count == 1 else { throw field.child("content").error("a single character") }
            return .strip(content: content[0], start: try field.child("start").int(), stop: try field.child("stop").int())
        case "Metaspace":
            let replacement = Array((try field.child("replacement").optionalString() ?? "\u{2581}").unicodeScalars)
            guard replacement.count == 1 else { throw field.child("replacement").error("a single character") }
            var scheme: PrependScheme = .always
            if let s = try field.child("prepend_scheme").optionalString() {
                switch s {
                case "always": scheme = .always
                case "first": scheme = .first
                case "never": scheme = .never
                default: throw field.child("prepend_scheme").error("one of \"always\", \"first\", \"never\"")
                }
            } else if !(try field.child("add_prefix_space").bool(default: true)) {
                scheme = .never
            }
            return .metaspace(replacement: replacement[0], prependScheme: scheme)
        default:
            throw TokenizerError.unsupported(
                file: field.file, component: "decoder",
                detail: "type '\(type)' at '\(field.path)' (supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)")
        }
    }

    /// True when the decoder is ByteLevel alone: then every token decodes to a fixed byte string
    /// and decoding is concatenation.
    var isPureByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case let .sequence(list): return !list.isEmpty && list.allSatisfy { $0.isPureByteLevel }
        default: return false
        }
    }

    func decode(_ tokens: [String]) -> String {
        decodeChain(tokens).joined()
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case let .sequence(list):
            return list.reduce(tokens) { $1.decodeChain($0) }
        case .byteLevel:
            var bytes: [UInt8] = []
            for t in tokens {
                if let b = ByteLevel.bytes(ofToken: t) {
                    bytes.append(contentsOf: b)
                } else {
                    bytes.append(contentsOf: t.utf8)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                let s = String(decoding: pending, as: UTF8.self)
                if s.utf8.elementsEqual(pending) {
                    out.append(s)
                } else {
                    out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for t in tokens {
                if let b = Self.fallbackByte(t) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(t)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case let .replace(pattern, content):
            return tokens.map {
                String(String.UnicodeScalarView(replaceScalars(Array($0.unicodeScalars), pattern: pattern, content: content)))
            }
        case let .strip(content, start, stop):
            return tokens.map { token in
                let chars = Array(token.unicodeScalars)
                var lo = 0
                while lo < min(start, chars.count) && chars[lo] == content { lo += 1 }
                var hi = chars.count
                var removed = 0
                while removed < stop && hi > lo && chars[hi - 1] == content {
                    hi -= 1
                    removed += 1
                }
                return String(String.UnicodeScalarView(chars[lo..<hi]))
            }
        case let .metaspace(replacement, scheme):
            return tokens.enumerated().map { i, token in
                var view = String.UnicodeScalarView()
                for s in token.unicodeScalars {
                    if s == replacement {
                        if i == 0 && scheme != .never { continue }
                        view.append(" ")
                    } else {
                        view.append(s)
                    }
                }
                return String(view)
            }
        }
    }

    /// The byte of a `<0xXX>` token.
    static func fallbackByte(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
              u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }
}
