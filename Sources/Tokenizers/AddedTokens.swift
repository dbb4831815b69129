/// A token of `tokenizer.json`'s `added_tokens`: matched in the text before pre-tokenization.
struct AddedToken: Sendable {
    let id: Int
    let content: String
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    /// Matched against the normalized text (true) or the raw text (false).
    let normalized: Bool

    init(id: Int, content: String, special: Bool, normalized: Bool, lstrip: Bool = false, rstrip: Bool = false) {
        self.id = id
        self.content = content
        self.special = special
        self.singleWord = false
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
    }

    init(_ field: JSONField) throws(TokenizerError) {
        id = try field.child("id").int()
        content = try field.child("content").string()
        guard !content.isEmpty else { throw field.child("content").error("a non-empty string") }
        special = try field.child("special").bool(default: false)
        singleWord = try field.child("single_word").bool(default: false)
        lstrip = try field.child("lstrip").bool(default: false)
        rstrip = try field.child("rstrip").bool(default: false)
        normalized = try field.child("normalized").bool(default: !special)
    }
}

/// One part of a text split around added tokens.
enum TextSegment {
    case text(Range<Int>)
    case token(Int)
}

/// Finds added tokens in text, leftmost first and longest first at a position (Aho-Corasick
/// "leftmost-longest", as Hugging Face tokenizers), honouring single_word, lstrip and rstrip.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let scalars: [Unicode.Scalar]
        let token: Int  // index into `tokens`
    }

    private let tokens: [AddedToken]
    /// first scalar → patterns starting with it, longest first.
    private let byFirst: [Unicode.Scalar: [Pattern]]
    /// Bit c set when some pattern starts with the ASCII scalar c (skips most dictionary probes).
    private let asciiFirst: (UInt64, UInt64)
    private let hasNonASCIIFirst: Bool

    var isEmpty: Bool { byFirst.isEmpty }

    /// `patterns` gives, for each token to match, the text to look for (its content, or its
    /// normalized content).
    init(tokens: [AddedToken], patterns: [[Unicode.Scalar]]) {
        self.tokens = tokens
        var byFirst: [Unicode.Scalar: [Pattern]] = [:]
        for (i, p) in patterns.enumerated() where !p.isEmpty {
            byFirst[p[0], default: []].append(Pattern(scalars: p, token: i))
        }
        var low: UInt64 = 0
        var high: UInt64 = 0
        var nonASCII = false
        for k in byFirst.keys {
            byFirst[k]!.sort { $0.scalars.count > $1.scalars.count }
            if k.value < 64 {
                low |= 1 << UInt64(k.value)
            } else if k.value < 128 {
                high |= 1 << UInt64(k.value - 64)
            } else {
                nonASCII = true
            }
        }
        self.byFirst = byFirst
        asciiFirst = (low, high)
        hasNonASCIIFirst = nonASCII
    }

    /// Splits `s[range]` into text segments and added-token segments (indices are absolute).
    func split(_ s: [Unicode.Scalar], _ range: Range<Int>) -> [TextSegment] {
        if byFirst.isEmpty { return range.isEmpty ? [] : [.text(range)] }
        var segments: [TextSegment] = []
        var textStart = range.lowerBound
        var i = range.lowerBound
        let end = range.upperBound
        scan: while i < end {
            let v = s[i].value
            let mayStart = v < 64 ? (asciiFirst.0 >> UInt64(v)) & 1 != 0
                : v < 128 ? (asciiFirst.1 >> UInt64(v - 64)) & 1 != 0 : hasNonASCIIFirst
            guard mayStart, let candidates = byFirst[s[i]] else {
                i += 1
                continue
            }
            for p in candidates {
                let n = p.scalars.count
                guard i + n <= end, s[i..<(i + n)].elementsEqual(p.scalars) else { continue }
                let token = tokens[p.token]
                var start = i
                var stop = i + n
                if token.singleWord {
                    let startOK = start == range.lowerBound || !UnicodeClass.isWordCharacter(s[start - 1])
                    let stopOK = stop == end || !UnicodeClass.isWordCharacter(s[stop])
                    if !startOK || !stopOK {
                        // Discarded; scanning resumes after it, as Hugging Face's iterator does.
                        i = stop
                        continue scan
                    }
                }
                if token.lstrip {
                    while start > textStart && UnicodeClass.isWhitespace(s[start - 1]) { start -= 1 }
                }
                if token.rstrip {
                    while stop < end && UnicodeClass.isWhitespace(s[stop]) { stop += 1 }
                }
                if textStart < start { segments.append(.text(textStart..<start)) }
                segments.append(.token(token.id))
                textStart = stop
                i = stop
                continue scan
            }
            i += 1
        }
        if textStart < end { segments.append(.text(textStart..<end)) }
        return segments
    }
}
