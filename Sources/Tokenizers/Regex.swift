/// A small backtracking regular-expression engine over Unicode scalars, for the split patterns of
/// tokenizers (Llama 3, Qwen2, cl100k, o200k, GPT-2 …). Semantics follow Oniguruma (what Hugging
/// Face tokenizers uses) and Perl: leftmost match, alternatives tried in order, greedy quantifiers
/// backtracking.
///
/// Supported: literals and escapes (`\r \n \t \f \v \\ \. …`), `.`, classes `[…]`/`[^…]` with
/// ranges, `\s \S \d \D \w \W`, `\p{L} \p{Lu} \p{N} \p{M} \p{P} \p{S} …` and `\P{…}`, groups
/// `(…)`, `(?:…)`, `(?i:…)` (case-insensitive), lookahead `(?=…)` `(?!…)`, alternation, and the
/// quantifiers `? * + {n} {n,} {n,m}` (greedy, lazy `…?`, possessive `…+`). Anything else
/// (backreferences, lookbehind, anchors) is rejected with an error naming it.
struct ScalarRegex: Sendable {
    let pattern: String
    private let program: [Instruction]

    struct SyntaxError: Error {
        let message: String
    }

    init(_ pattern: String) throws(SyntaxError) {
        self.pattern = pattern
        var parser = RegexParser(Array(pattern.unicodeScalars))
        let node = try parser.parse()
        var compiler = RegexCompiler()
        compiler.emit(node)
        compiler.program.append(.match)
        program = compiler.program
    }

    /// The end of the match starting exactly at `start`, or nil.
    func match(_ s: ArraySlice<Unicode.Scalar>, at start: Int) -> Int? {
        run(0, start, s)
    }

    /// Appends the successive non-overlapping matches of `s` (absolute indices); empty matches
    /// are skipped.
    func matches(_ s: ArraySlice<Unicode.Scalar>, into out: inout [Range<Int>]) {
        var i = s.startIndex
        while i < s.endIndex {
            if let e = run(0, i, s), e > i {
                out.append(i..<e)
                i = e
            } else {
                i += 1
            }
        }
    }

    private func run(_ startPC: Int, _ startSP: Int, _ s: ArraySlice<Unicode.Scalar>) -> Int? {
        var pc = startPC
        var sp = startSP
        let end = s.endIndex
        while true {
            switch program[pc] {
            case let .set(cls):
                guard sp < end, cls.matches(s[sp]) else { return nil }
                sp += 1
                pc += 1
            case let .repeatSet(cls, min, max, mode):
                var n = 0
                while n < max && sp + n < end && cls.matches(s[sp + n]) { n += 1 }
                if n < min { return nil }
                switch mode {
                case .possessive:
                    sp += n
                    pc += 1
                case .greedy:
                    var k = n
                    while k > min {
                        if let r = run(pc + 1, sp + k, s) { return r }
                        k -= 1
                    }
                    sp += min
                    pc += 1
                case .lazy:
                    var k = min
                    while k < n {
                        if let r = run(pc + 1, sp + k, s) { return r }
                        k += 1
                    }
                    sp += n
                    pc += 1
                }
            case let .split(first, second):
                if let r = run(first, sp, s) { return r }
                pc = second
            case let .jump(target):
                pc = target
            case let .lookahead(negated, body, next):
                let found = run(body, sp, s) != nil
                if found == negated { return nil }
                pc = next
            case let .atomic(body, next):
                guard let e = run(body, sp, s) else { return nil }
                sp = e
                pc = next
            case .match:
                return sp
            }
        }
    }
}

/// A set of scalars: items, negation, and case-insensitivity.
struct CharSet: Sendable {
    enum Item: Sendable {
        case scalar(Unicode.Scalar)
        case range(UInt32, UInt32)
        case whitespace(Bool)
        case digit(Bool)
        case word(Bool)
        case property(UnicodeProperty, Bool)
        case any
    }

    var items: [Item]
    var negated: Bool
    var caseInsensitive: Bool
    /// Membership of ASCII scalars, precomputed.
    private var ascii: (UInt64, UInt64) = (0, 0)

    init(items: [Item], negated: Bool, caseInsensitive: Bool) {
        self.items = items
        self.negated = negated
        self.caseInsensitive = caseInsensitive
        var lo: UInt64 = 0
        var hi: UInt64 = 0
        for v in 0..<128 {
            if slowMatches(Unicode.Scalar(UInt8(v))) {
                if v < 64 { lo |= 1 << UInt64(v) } else { hi |= 1 << UInt64(v - 64) }
            }
        }
        ascii = (lo, hi)
    }

    @inline(__always)
    func matches(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 64 { return ascii.0 >> UInt64(v) & 1 == 1 }
        if v < 128 { return ascii.1 >> UInt64(v - 64) & 1 == 1 }
        return slowMatches(c)
    }

    private func slowMatches(_ c: Unicode.Scalar) -> Bool {
        var hit = contains(c)
        if !hit && caseInsensitive {
            let f = CaseFold.fold(c)
            if f != c { hit = contains(f) }
            if !hit {
                // A scalar whose fold is f' matches a literal item folding to the same.
                for item in items {
                    if case let .scalar(x) = item, CaseFold.fold(x) == f { hit = true; break }
                    if case let .range(a, b) = item {
                        for u in a...min(b, a + 512) {
                            if let x = Unicode.Scalar(u), CaseFold.fold(x) == f { hit = true; break }
                        }
                        if hit { break }
                    }
                }
            }
        }
        return hit != negated
    }

    private func contains(_ c: Unicode.Scalar) -> Bool {
        for item in items {
            switch item {
            case let .scalar(x): if x == c { return true }
            case let .range(a, b): if c.value >= a && c.value <= b { return true }
            case let .whitespace(neg): if UnicodeClass.isWhitespace(c) != neg { return true }
            case let .digit(neg): if (c.properties.generalCategory == .decimalNumber) != neg { return true }
            case let .word(neg): if UnicodeClass.isWordCharacter(c) != neg { return true }
            case let .property(p, neg): if p.contains(c) != neg { return true }
            case .any: if c != "\n" { return true }
            }
        }
        return false
    }
}

/// Simple case folding to one scalar (upper then lower case mapping when each is one scalar), so
/// that `ſ`, `K` (Kelvin) and `S` all fold to `s`, as Oniguruma's case-insensitive matching.
enum CaseFold {
    static func fold(_ c: Unicode.Scalar) -> Unicode.Scalar {
        if c.value < 128 {
            return (c.value &- 0x41) < 26 ? Unicode.Scalar(UInt8(c.value + 32)) : c
        }
        var u = c
        let up = c.properties.uppercaseMapping.unicodeScalars
        if up.count == 1 { u = up.first! }
        let low = u.properties.lowercaseMapping.unicodeScalars
        if low.count == 1 { return low.first! }
        return u
    }
}

/// `\p{…}` general categories.
enum UnicodeProperty: Sendable {
    case letter, upper, lower, title, modifierLetter, otherLetter
    case mark, number, decimal, punctuation, symbol, separator, other

    init?(_ name: String) {
        switch name {
        case "L", "Letter": self = .letter
        case "Lu": self = .upper
        case "Ll": self = .lower
        case "Lt": self = .title
        case "Lm": self = .modifierLetter
        case "Lo": self = .otherLetter
        case "M", "Mark": self = .mark
        case "N", "Number": self = .number
        case "Nd": self = .decimal
        case "P", "Punctuation": self = .punctuation
        case "S", "Symbol": self = .symbol
        case "Z", "Separator": self = .separator
        case "C", "Other": self = .other
        default: return nil
        }
    }

    func contains(_ c: Unicode.Scalar) -> Bool {
        switch (self, c.properties.generalCategory) {
        case (.letter, .uppercaseLetter), (.letter, .lowercaseLetter), (.letter, .titlecaseLetter),
             (.letter, .modifierLetter), (.letter, .otherLetter): return true
        case (.upper, .uppercaseLetter), (.lower, .lowercaseLetter), (.title, .titlecaseLetter),
             (.modifierLetter, .modifierLetter), (.otherLetter, .otherLetter): return true
        case (.mark, .nonspacingMark), (.mark, .spacingMark), (.mark, .enclosingMark): return true
        case (.number, .decimalNumber), (.number, .letterNumber), (.number, .otherNumber): return true
        case (.decimal, .decimalNumber): return true
        case (.punctuation, .connectorPunctuation), (.punctuation, .dashPunctuation),
             (.punctuation, .openPunctuation), (.punctuation, .closePunctuation),
             (.punctuation, .initialPunctuation), (.punctuation, .finalPunctuation),
             (.punctuation, .otherPunctuation): return true
        case (.symbol, .mathSymbol), (.symbol, .currencySymbol), (.symbol, .modifierSymbol),
             (.symbol, .otherSymbol): return true
        case (.separator, .spaceSeparator), (.separator, .lineSeparator), (.separator, .paragraphSeparator): return true
        case (.other, .control), (.other, .format), (.other, .surrogate), (.other, .privateUse),
             (.other, .unassigned): return true
        default: return false
        }
    }
}

// MARK: - Parsing

indirect enum RegexNode {
    case set(CharSet)
    case sequence([RegexNode])
    case alternation([RegexNode])
    case quantified(RegexNode, min: Int, max: Int, mode: RepeatMode)
    case lookahead(RegexNode, negated: Bool)
    case atomic(RegexNode)
}

enum RepeatMode: Sendable {
    case greedy, lazy, possessive
}

private struct RegexParser {
    let s: [Unicode.Scalar]
    var i = 0
    var caseInsensitive = false

    init(_ s: [Unicode.Scalar]) {
        self.s = s
    }

    func fail(_ message: String) -> ScalarRegex.SyntaxError {
        ScalarRegex.SyntaxError(message: "\(message) at offset \(i)")
    }

    mutating func parse() throws(ScalarRegex.SyntaxError) -> RegexNode {
        let node = try parseAlternation()
        if i < s.count { throw fail("unbalanced ')'") }
        return node
    }

    mutating func parseAlternation() throws(ScalarRegex.SyntaxError) -> RegexNode {
        var branches = [try parseSequence()]
        while i < s.count && s[i] == "|" {
            i += 1
            branches.append(try parseSequence())
        }
        return branches.count == 1 ? branches[0] : .alternation(branches)
    }

    mutating func parseSequence() throws(ScalarRegex.SyntaxError) -> RegexNode {
        var items: [RegexNode] = []
        while i < s.count && s[i] != "|" && s[i] != ")" {
            var atom = try parseAtom()
            atom = try parseQuantifier(atom)
            items.append(atom)
        }
        return items.count == 1 ? items[0] : .sequence(items)
    }

    mutating func parseQuantifier(_ atom: RegexNode) throws(ScalarRegex.SyntaxError) -> RegexNode {
        guard i < s.count else { return atom }
        var lo = 0
        var hi = Int.max
        switch s[i] {
        case "?": hi = 1; i += 1
        case "*": i += 1
        case "+": lo = 1; i += 1
        case "{":
            var j = i + 1
            // Counts are capped as Oniguruma caps them (ONIG_MAX_REPEAT_NUM): a longer digit run
            // would overflow Int, and a larger count is no tokenizer's.
            let maxRepeat = 100_000
            var tooLarge = false
            func number(_ j: inout Int) -> Int? {
                var v: Int? = nil
                while j < s.count, let d = Int(String(s[j])), s[j].value < 128 {
                    v = min((v ?? 0) * 10 + d, maxRepeat + 1)
                    tooLarge = tooLarge || v! > maxRepeat
                    j += 1
                }
                return v
            }
            guard let a = number(&j) else { return atom }  // a literal '{' (Oniguruma)
            lo = a
            hi = a
            if j < s.count && s[j] == "," {
                j += 1
                hi = number(&j) ?? Int.max
            }
            guard j < s.count && s[j] == "}" else { throw fail("malformed {n,m} quantifier") }
            guard !tooLarge else { throw fail("a {n,m} quantifier count above \(maxRepeat)") }
            guard hi >= lo else { throw fail("{n,m} quantifier with m < n") }
            i = j + 1
        default:
            return atom
        }
        var mode = RepeatMode.greedy
        if i < s.count && s[i] == "?" { mode = .lazy; i += 1 } else if i < s.count && s[i] == "+" { mode = .possessive; i += 1 }
        if case .lookahead = atom { throw fail("a quantified lookahead") }
        return .quantified(atom, min: lo, max: hi, mode: mode)
    }

    mutating func parseAtom() throws(ScalarRegex.SyntaxError) -> RegexNode {
        let c = s[i]
        switch c {
        case "(":
            i += 1
            if i < s.count && s[i] == "?" {
                i += 1
                guard i < s.count else { throw fail("unterminated group") }
                switch s[i] {
                case ":":
                    i += 1
                    return try group()
                case "=", "!":
                    let negated = s[i] == "!"
                    i += 1
                    return .lookahead(try group(), negated: negated)
                case ">":
                    i += 1
                    return .atomic(try group())
                case "i":
                    i += 1
                    if i < s.count && s[i] == ":" {
                        i += 1
                        let saved = caseInsensitive
                        caseInsensitive = true
                        defer { caseInsensitive = saved }
                        return try group()
                    }
                    if i < s.count && s[i] == ")" {
                        i += 1
                        caseInsensitive = true
                        return .sequence([])
                    }
                    throw fail("unsupported group flags")
                case "<":
                    throw fail("unsupported lookbehind or named group '(?<'")
                default:
                    throw fail("unsupported group '(?\(s[i])'")
                }
            }
            return try group()
        case "[":
            return .set(try parseClass())
        case ".":
            i += 1
            return .set(CharSet(items: [.any], negated: false, caseInsensitive: false))
        case "\\":
            i += 1
            return .set(CharSet(items: [try parseEscape(inClass: false)], negated: false, caseInsensitive: caseInsensitive))
        case "^", "$":
            throw fail("unsupported anchor '\(c)'")
        case "*", "+", "?":
            throw fail("nothing to repeat before '\(c)'")
        default:
            i += 1
            return .set(CharSet(items: [.scalar(c)], negated: false, caseInsensitive: caseInsensitive))
        }
    }

    mutating func group() throws(ScalarRegex.SyntaxError) -> RegexNode {
        let node = try parseAlternation()
        guard i < s.count && s[i] == ")" else { throw fail("missing ')'") }
        i += 1
        return node
    }

    mutating func parseEscape(inClass: Bool) throws(ScalarRegex.SyntaxError) -> CharSet.Item {
        guard i < s.count else { throw fail("trailing backslash") }
        let c = s[i]
        i += 1
        switch c {
        case "s": return .whitespace(false)
        case "S": return .whitespace(true)
        case "d": return .digit(false)
        case "D": return .digit(true)
        case "w": return .word(false)
        case "W": return .word(true)
        case "n": return .scalar("\n")
        case "r": return .scalar("\r")
        case "t": return .scalar("\t")
        case "f": return .scalar("\u{0C}")
        case "v": return .scalar("\u{0B}")
        case "p", "P":
            var name = ""
            if i < s.count && s[i] == "{" {
                i += 1
                while i < s.count && s[i] != "}" { name.unicodeScalars.append(s[i]); i += 1 }
                guard i < s.count else { throw fail("unterminated \\p{") }
                i += 1
            } else if i < s.count {
                name = String(s[i])
                i += 1
            }
            var negated = c == "P"
            if name.hasPrefix("^") { negated.toggle(); name.removeFirst() }
            guard let p = UnicodeProperty(name) else { throw fail("unsupported property \\p{\(name)}") }
            return .property(p, negated)
        case "u", "x":
            var hex = ""
            if i < s.count && s[i] == "{" {
                i += 1
                while i < s.count && s[i] != "}" { hex.unicodeScalars.append(s[i]); i += 1 }
                i += 1
            } else {
                let n = c == "u" ? 4 : 2
                guard i + n <= s.count else { throw fail("short \\\(c) escape") }
                hex = String(String.UnicodeScalarView(s[i..<(i + n)]))
                i += n
            }
            guard let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw fail("bad \\\(c) escape") }
            return .scalar(scalar)
        default:
            if c.properties.isAlphabetic || (c.value >= 0x30 && c.value <= 0x39) {
                throw fail("unsupported escape '\\\(c)'")
            }
            return .scalar(c)
        }
    }

    mutating func parseClass() throws(ScalarRegex.SyntaxError) -> CharSet {
        i += 1  // [
        var negated = false
        if i < s.count && s[i] == "^" { negated = true; i += 1 }
        var items: [CharSet.Item] = []
        var first = true
        while true {
            guard i < s.count else { throw fail("unterminated character class") }
            let c = s[i]
            if c == "]" && !first { i += 1; break }
            first = false
            if c == "[" { throw fail("unsupported nested character class") }
            var item: CharSet.Item
            if c == "\\" {
                i += 1
                item = try parseEscape(inClass: true)
            } else {
                item = .scalar(c)
                i += 1
            }
            if case let .scalar(lo) = item, i + 1 < s.count, s[i] == "-", s[i + 1] != "]" {
                i += 1
                var hiItem: CharSet.Item
                if s[i] == "\\" {
                    i += 1
                    hiItem = try parseEscape(inClass: true)
                } else {
                    hiItem = .scalar(s[i])
                    i += 1
                }
                guard case let .scalar(hi) = hiItem, hi.value >= lo.value else { throw fail("bad class range") }
                item = .range(lo.value, hi.value)
            }
            items.append(item)
        }
        return CharSet(items: items, negated: negated, caseInsensitive: caseInsensitive)
    }
}

// MARK: - Compiling

enum Instruction: Sendable {
    case set(CharSet)
    case repeatSet(CharSet, min: Int, max: Int, mode: RepeatMode)
    case split(Int, Int)
    case jump(Int)
    case lookahead(negated: Bool, body: Int, next: Int)
    case atomic(body: Int, next: Int)
    case match
}

private struct RegexCompiler {
    var program: [Instruction] = []

    mutating func emit(_ node: RegexNode) {
        switch node {
        case let .set(cls):
            program.append(.set(cls))
        case let .sequence(items):
            for n in items { emit(n) }
        case let .alternation(branches):
            var jumps: [Int] = []
            for (k, b) in branches.enumerated() {
                if k < branches.count - 1 {
                    let split = program.count
                    program.append(.match)  // placeholder
                    emit(b)
                    jumps.append(program.count)
                    program.append(.match)  // placeholder jump to end
                    program[split] = .split(split + 1, program.count)
                } else {
                    emit(b)
                }
            }
            for j in jumps { program[j] = .jump(program.count) }
        case let .quantified(inner, lo, hi, mode):
            if case let .set(cls) = inner {
                program.append(.repeatSet(cls, min: lo, max: hi, mode: mode))
                return
            }
            if mode == .possessive {
                emitSub(.quantified(inner, min: lo, max: hi, mode: .greedy)) { body, next in .atomic(body: body, next: next) }
                return
            }
            for _ in 0..<lo { emit(inner) }
            if hi == Int.max {
                // L: split(body, end) body jump L
                let loop = program.count
                program.append(.match)
                emit(inner)
                program.append(.jump(loop))
                program[loop] = mode == .greedy ? .split(loop + 1, program.count) : .split(program.count, loop + 1)
            } else {
                var splits: [Int] = []
                for _ in lo..<hi {
                    splits.append(program.count)
                    program.append(.match)
                    emit(inner)
                }
                for sp in splits {
                    program[sp] = mode == .greedy ? .split(sp + 1, program.count) : .split(program.count, sp + 1)
                }
            }
        case let .lookahead(inner, negated):
            emitSub(inner) { body, next in .lookahead(negated: negated, body: body, next: next) }
        case let .atomic(inner):
            emitSub(inner) { body, next in .atomic(body: body, next: next) }
        }
    }

    /// Emits `make(body, next)` followed by a jump over a sub-program ending in `.match`.
    private mutating func emitSub(_ inner: RegexNode, _ make: (Int, Int) -> Instruction) {
        let at = program.count
        program.append(.match)
        let body = program.count
        emit(inner)
        program.append(.match)
        program[at] = make(body, program.count)
    }
}
