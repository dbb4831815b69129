/// Text during pre-tokenization: a buffer of scalars and the pieces (ranges of it) that the model
/// will tokenize independently. Pre-tokenizers that rewrite text (ByteLevel, Metaspace) replace the
/// buffer; the others only split pieces.
struct PreTokenizedText {
    var scalars: [Unicode.Scalar]
    var pieces: [Range<Int>]
    /// Whether the first piece starts the whole input text (Metaspace's `prepend_scheme: first`
    /// only prepends there).
    var startsAtTextStart: Bool

    /// One piece, `range` of `scalars` (the buffer is shared, not copied).
    init(scalars: [Unicode.Scalar], range: Range<Int>, startsAtTextStart: Bool) {
        self.scalars = scalars
        self.pieces = range.isEmpty ? [] : [range]
        self.startsAtTextStart = startsAtTextStart
    }
}

enum PrependScheme: Equatable, Sendable {
    case always, first, never
}

/// The pre-tokenizers of Hugging Face `tokenizer.json` implemented here.
indirect enum PreTokenizer: Sendable {
    case sequence([PreTokenizer])
    /// GPT-2 byte-level: optional prefix space, GPT-2 regex split, bytes → printable characters.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// Splits digits from the rest: each digit alone, or runs of digits together.
    case digits(individualDigits: Bool)
    /// SentencePiece-style: spaces become `replacement`, optionally prepended, split before it.
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme, split: Bool)
    /// Splits on whitespace, dropping it.
    case whitespaceSplit
    /// Regex `\w+|[^\w\s]+`: runs of word characters and runs of other non-space characters.
    case whitespace
    /// Splits on the matches of a regex or a literal string, keeping them as `behavior` says.
    case split(SplitPattern, behavior: SplitBehavior, invert: Bool)
    /// Splits on each punctuation character (ASCII punctuation and Unicode P*).
    case punctuation(SplitBehavior)

    static func load(_ field: JSONField) throws(TokenizerError) -> PreTokenizer? {
        if field.isNull { return nil }
        let type = try field.child("type").string()
        switch type {
        case "Sequence":
            var list: [PreTokenizer] = []
            for item in try field.child("pretokenizers").array() {
                if let p = try load(item) { list.append(p) }
            }
            return .sequence(list)
        case "ByteLevel":
            return .byteLevel(
                addPrefixSpace: try field.child("add_prefix_space").bool(default: true),
                useRegex: try field.child("use_regex").bool(default: true))
        case "Digits":
            return .digits(individualDigits: try field.child("individual_digits").bool(default: false))
        case "Metaspace":
            let replacementText = try field.child("replacement").optionalString() ?? "\u{2581}"
            let scalars = Array(replacementText.unicodeScalars)
            guard scalars.count == 1 else {
                throw field.child("replacement").error("a single character")
            }
            var scheme: PrependScheme
            if let s = try field.child("prepend_scheme").optionalString() {
                switch s {
                case "always": scheme = .always
                case "first": scheme = .first
                case "never": scheme = .never
                default: throw field.child("prepend_scheme").error("one of \"always\", \"first\", \"never\"")
                }
            } else {
                scheme = try field.child("add_prefix_space").bool(default: true) ? .always : .never
            }
            return .metaspace(replacement: scalars[0], prependScheme: scheme,
                              split: try field.child("split").bool(default: true))
        case "WhitespaceSplit":
            return .whitespaceSplit
        case "Whitespace":
            return .whitespace
        case "Split":
            let patternField = field.child("pattern")
            var pattern: SplitPattern
            if let literal = try patternField.child("String").optionalString() {
                guard !literal.isEmpty else { throw patternField.child("String").error("a non-empty string") }
                pattern = .literal(Array(literal.unicodeScalars))
            } else if let regex = try patternField.child("Regex").optionalString() {
                do {
                    pattern = .regex(try ScalarRegex(regex))
                } catch {
                    throw TokenizerError.unsupported(
                        file: field.file, component: "pre-tokenizer",
                        detail: "Split regex at '\(patternField.path).Regex': \(error.message) in \(regex.debugDescription)")
                }
            } else {
                throw patternField.error("an object {\"String\": ...} or {\"Regex\": ...}")
            }
            return .split(pattern, behavior: try SplitBehavior.load(field.child("behavior"), default: nil),
                          invert: try field.child("invert").bool(default: false))
        case "Punctuation":
            return .punctuation(try SplitBehavior.load(field.child("behavior"), default: .isolated))
        default:
            throw TokenizerError.unsupported(
                file: field.file, component: "pre-tokenizer",
                detail: "type '\(type)' at '\(field.path)' (supported: Sequence, ByteLevel, Digits, Metaspace, WhitespaceSplit, Whitespace, Split, Punctuation)")
        }
    }

    func apply(_ text: inout PreTokenizedText) {
        switch self {
        case let .sequence(list):
            for p in list { p.apply(&text) }
        case let .byteLevel(addPrefixSpace, useRegex):
            Self.applyByteLevel(&text, addPrefixSpace: addPrefixSpace, useRegex: useRegex)
        case let .digits(individual):
            Self.applyDigits(&text, individual: individual)
        case let .metaspace(replacement, scheme, split):
            Self.applyMetaspace(&text, replacement: replacement, scheme: scheme, split: split)
        case .whitespaceSplit:
            Self.applyWhitespaceSplit(&text)
        case .whitespace:
            Self.applyWhitespace(&text)
        case let .split(pattern, behavior, invert):
            Self.applySplit(&text, behavior: behavior, invert: invert) { piece, out in
                pattern.matches(piece, into: &out)
            }
        case let .punctuation(behavior):
            Self.applySplit(&text, behavior: behavior, invert: false) { piece, out in
                for i in piece.indices where UnicodeClass.isPunctuation(piece[i]) { out.append(i..<(i + 1)) }
            }
        }
    }

    // MARK: Split

    /// Splits each piece at the matches `find` appends, then keeps or merges them as `behavior`
    /// says (Hugging Face `NormalizedString::split`).
    private static func applySplit(_ text: inout PreTokenizedText, behavior: SplitBehavior, invert: Bool,
                                   find: (ArraySlice<Unicode.Scalar>, inout [Range<Int>]) -> Void) {
        var pieces: [Range<Int>] = []
        pieces.reserveCapacity(text.pieces.count * 2)
        var found: [Range<Int>] = []
        var marked: [(Range<Int>, Bool)] = []
        for piece in text.pieces {
            found.removeAll(keepingCapacity: true)
            find(text.scalars[piece], &found)
            marked.removeAll(keepingCapacity: true)
            var prev = piece.lowerBound
            for m in found {
                if prev < m.lowerBound { marked.append((prev..<m.lowerBound, invert)) }
                marked.append((m, !invert))
                prev = m.upperBound
            }
            if prev < piece.upperBound { marked.append((prev..<piece.upperBound, invert)) }
            switch behavior {
            case .isolated:
                for (r, _) in marked { pieces.append(r) }
            case .removed:
                for (r, isMatch) in marked where !isMatch { pieces.append(r) }
            case .mergedWithPrevious:
                var out: [Range<Int>] = []
                var previousMatch = false
                for (r, isMatch) in marked {
                    if isMatch && !previousMatch, let last = out.last {
                        out[out.count - 1] = last.lowerBound..<r.upperBound
                    } else {
                        out.append(r)
                    }
                    previousMatch = isMatch
                }
                pieces.append(contentsOf: out)
            case .mergedWithNext:
                var out: [Range<Int>] = []
                var previousMatch = false
                for (r, isMatch) in marked.reversed() {
                    if isMatch && !previousMatch, let last = out.last {
                        out[out.count - 1] = r.lowerBound..<last.upperBound
                    } else {
                        out.append(r)
                    }
                    previousMatch = isMatch
                }
                pieces.append(contentsOf: out.reversed())
            case .contiguous:
                var out: [Range<Int>] = []
                var previousMatch = false
                for (r, isMatch) in marked {
                    if isMatch == previousMatch, let last = out.last {
                        out[out.count - 1] = last.lowerBound..<r.upperBound
                    } else {
                        out.append(r)
                    }
                    previousMatch = isMatch
                }
                pieces.append(contentsOf: out)
            }
        }
        text.pieces = pieces
    }

    // MARK: ByteLevel

    private static func applyByteLevel(_ text: inout PreTokenizedText, addPrefixSpace: Bool, useRegex: Bool) {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.scalars.count + text.scalars.count / 4)
        var pieces: [Range<Int>] = []
        pieces.reserveCapacity(text.pieces.count * 2)
        let table = ByteLevel.byteToCharacter
        var ranges: [Range<Int>] = []
        for piece in text.pieces {
            var source = text.scalars[piece]
            if addPrefixSpace && source.first != " " {
                source = ArraySlice([" "] + source)
            }
            ranges.removeAll(keepingCapacity: true)
            if useRegex {
                GPT2Split.split(source, into: &ranges)
            } else {
                ranges.append(source.startIndex..<source.endIndex)
            }
            for range in ranges {
                let start = out.count
                for i in range {
                    let s = source[i]
                    let v = s.value
                    if v < 0x80 {
                        out.append(table[Int(v)])
                    } else if v < 0x800 {
                        out.append(table[Int(0xC0 | v >> 6)])
                        out.append(table[Int(0x80 | v & 0x3F)])
                    } else if v < 0x10000 {
                        out.append(table[Int(0xE0 | v >> 12)])
                        out.append(table[Int(0x80 | v >> 6 & 0x3F)])
                        out.append(table[Int(0x80 | v & 0x3F)])
                    } else {
                        out.append(table[Int(0xF0 | v >> 18)])
                        out.append(table[Int(0x80 | v >> 12 & 0x3F)])
                        out.append(table[Int(0x80 | v >> 6 & 0x3F)])
                        out.append(table[Int(0x80 | v & 0x3F)])
                    }
                }
                if out.count > start { pieces.append(start..<out.count) }
            }
        }
        text.scalars = out
        text.pieces = pieces
    }

    // MARK: Digits

    private static func applyDigits(_ text: inout PreTokenizedText, individual: Bool) {
        var pieces: [Range<Int>] = []
        pieces.reserveCapacity(text.pieces.count * 2)
        let s = text.scalars
        for piece in text.pieces {
            var start = piece.lowerBound
            var i = piece.lowerBound
            while i < piece.upperBound {
                if UnicodeClass.isNumeric(s[i]) {
                    if start < i { pieces.append(start..<i) }
                    var j = i + 1
                    if !individual {
                        while j < piece.upperBound && UnicodeClass.isNumeric(s[j]) { j += 1 }
                    }
                    pieces.append(i..<j)
                    start = j
                    i = j
                } else {
                    i += 1
                }
            }
            if start < piece.upperBound { pieces.append(start..<piece.upperBound) }
        }
        text.pieces = pieces
    }

    // MARK: Metaspace

    private static func applyMetaspace(_ text: inout PreTokenizedText, replacement: Unicode.Scalar,
                                       scheme: PrependScheme, split: Bool) {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.scalars.count + text.pieces.count)
        var pieces: [Range<Int>] = []
        for (index, piece) in text.pieces.enumerated() {
            let start = out.count
            let first = text.scalars[piece.lowerBound]
            let startsWithReplacement = first == " " || first == replacement
            var prepend = false
            switch scheme {
            case .always: prepend = !startsWithReplacement
            case .first:
                prepend = !startsWithReplacement && index == 0 && text.startsAtTextStart
            case .never: prepend = false
            }
            if prepend { out.append(replacement) }
            for s in text.scalars[piece] { out.append(s == " " ? replacement : s) }
            if split {
                // Split before each replacement character (it merges with what follows).
                var pieceStart = start
                for i in (start + 1)..<max(start + 1, out.count) where out[i] == replacement {
                    pieces.append(pieceStart..<i)
                    pieceStart = i
                }
                pieces.append(pieceStart..<out.count)
            } else {
                pieces.append(start..<out.count)
            }
        }
        text.scalars = out
        text.pieces = pieces
    }

    // MARK: Whitespace

    private static func applyWhitespaceSplit(_ text: inout PreTokenizedText) {
        var pieces: [Range<Int>] = []
        let s = text.scalars
        for piece in text.pieces {
            var i = piece.lowerBound
            while i < piece.upperBound {
                while i < piece.upperBound && UnicodeClass.isWhitespace(s[i]) { i += 1 }
                let start = i
                while i < piece.upperBound && !UnicodeClass.isWhitespace(s[i]) { i += 1 }
                if start < i { pieces.append(start..<i) }
            }
        }
        text.pieces = pieces
    }

    private static func applyWhitespace(_ text: inout PreTokenizedText) {
        var pieces: [Range<Int>] = []
        let s = text.scalars
        for piece in text.pieces {
            var i = piece.lowerBound
            while i < piece.upperBound {
                if UnicodeClass.isWhitespace(s[i]) {
                    i += 1
                    continue
                }
                let start = i
                if UnicodeClass.isWordCharacter(s[i]) {
                    while i < piece.upperBound && UnicodeClass.isWordCharacter(s[i]) { i += 1 }
                } else {
                    while i < piece.upperBound && !UnicodeClass.isWordCharacter(s[i])
                        && !UnicodeClass.isWhitespace(s[i]) { i += 1 }
                }
                pieces.append(start..<i)
            }
        }
        text.pieces = pieces
    }
}

/// GPT-2's pre-tokenization regex, matched by hand:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
enum GPT2Split {
    /// Appends to `ranges` the consecutive matches (absolute indices of `s`) that cover `s`.
    static func split(_ s: ArraySlice<Unicode.Scalar>, into ranges: inout [Range<Int>]) {
        let end = s.endIndex
        var i = s.startIndex
        while i < end {
            let c = s[i]
            // Contractions: 's 't 'm 'd 're 've 'll (lowercase, ASCII apostrophe only).
            if c == "'" && i + 1 < end {
                let n1 = s[i + 1]
                if n1 == "s" || n1 == "t" || n1 == "m" || n1 == "d" {
                    ranges.append(i..<(i + 2))
                    i += 2
                    continue
                }
                if i + 2 < end {
                    let n2 = s[i + 2]
                    if (n1 == "r" && n2 == "e") || (n1 == "v" && n2 == "e") || (n1 == "l" && n2 == "l") {
                        ranges.append(i..<(i + 3))
                        i += 3
                        continue
                    }
                }
            }
            var cls = UnicodeClass.classify(c)
            var j = i
            // An optional single U+0020 before a letter, number or symbol run.
            if c == " " && i + 1 < end {
                let next = UnicodeClass.classify(s[i + 1])
                if next != .whitespace {
                    cls = next
                    j = i + 1
                }
            }
            switch cls {
            case .letter, .number, .other:
                j += 1
                while j < end && UnicodeClass.classify(s[j]) == cls { j += 1 }
            case .whitespace:
                var k = i + 1
                while k < end && UnicodeClass.isWhitespace(s[k]) { k += 1 }
                if k == end || k - i == 1 {
                    // `\s+(?!\S)` takes the whole run at the end of the text; a single space
                    // before a non-space is taken by the final `\s+`.
                    j = k
                } else {
                    // `\s+(?!\S)` backtracks to leave the last whitespace for the next match.
                    j = k - 1
                }
            }
            ranges.append(i..<j)
            i = j
        }
    }
}

/// The pattern of a `Split` pre-tokenizer.
enum SplitPattern: Sendable {
    case literal([Unicode.Scalar])
    case regex(ScalarRegex)

    func matches(_ s: ArraySlice<Unicode.Scalar>, into out: inout [Range<Int>]) {
        switch self {
        case let .regex(r):
            r.matches(s, into: &out)
        case let .literal(p):
            var i = s.startIndex
            while i + p.count <= s.endIndex {
                if s[i] == p[0] && s[i..<(i + p.count)].elementsEqual(p) {
                    out.append(i..<(i + p.count))
                    i += p.count
                } else {
                    i += 1
                }
            }
        }
    }
}

/// What a split keeps of its delimiters (Hugging Face `SplitDelimiterBehavior`).
enum SplitBehavior: Sendable {
    case removed, isolated, mergedWithPrevious, mergedWithNext, contiguous

    static func load(_ field: JSONField, default fallback: SplitBehavior?) throws(TokenizerError) -> SplitBehavior {
        guard let name = try field.optionalString() else {
            if let fallback { return fallback }
            throw field.error("a split behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)")
        }
        switch name {
        case "Removed": return .removed
        case "Isolated": return .isolated
        case "MergedWithPrevious": return .mergedWithPrevious
        case "MergedWithNext": return .mergedWithNext
        case "Contiguous": return .contiguous
        default:
            throw field.error("one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous")
        }
    }
}
