import Foundation

/// The limits every chat template is parsed and rendered under, so that no template — however
/// broken or hostile — can crash the process, exhaust its memory or run for long. Going over one
/// fails with `TokenizerError.templateLimit` naming it. docs/chat-template-sandbox.md explains each
/// value and its jinja2 counterpart.
public enum ChatTemplateSandbox {
    /// How deeply the parser may recurse: brackets, unary operators, inline `if`s and nested
    /// blocks (`{% if %}`, `{% for %}`) together. Bounds the parser's stack.
    public static let maxParserDepth = 64
    /// How deep the parsed template may be: nested blocks plus the depth of the expression tree
    /// (`a ~ b ~ c` is 2 levels, `((a))` 0). Bounds the interpreter's stack.
    public static let maxEvaluationDepth = 100
    /// How deeply the lists and dicts a template builds may nest (`[[[…]]]`). Bounds the stack of
    /// printing, comparing and freeing them.
    public static let maxValueDepth = 100
    /// Loop iterations per render, all loops together (a loop whose item count would go over
    /// the limit fails before it starts).
    public static let maxLoopIterations = 500_000
    /// Items of one `range()` (jinja2's sandbox: MAX_RANGE = 100,000).
    public static let maxRange = 100_000
    /// Bytes (UTF-8) of the rendered prompt.
    public static let maxOutputBytes = 8 << 20
    /// Bytes (UTF-8) of any one string a template builds (`~`, `+`, `*`, `join`, `replace`, `tojson`…).
    public static let maxStringBytes = 8 << 20
    /// Items of any one list a template builds (`+`, `*`, `list`…).
    public static let maxListItems = 1_000_000
    /// Total bytes of the strings and lists (16 bytes an item) one render builds or scans
    /// (indexing, slicing, measuring, searching or comparing a string reads it whole; a scanned
    /// byte counts `JinjaBudget.scanWeight` bytes), so that
    /// accumulating large values in a loop, or scanning a large one again and again, runs out of
    /// budget, not of memory or time.
    public static let maxAllocatedBytes = 256 << 20
}

/// What one render has used of the sandbox's limits (shared by the interpreter's copies).
final class JinjaBudget {
    var iterations = 0
    var allocated = 0

    /// Counts `count` more loop iterations.
    func iterate(_ count: Int) throws(TokenizerError) {
        let limit = ChatTemplateSandbox.maxLoopIterations
        guard count <= limit - iterations else {
            throw TokenizerError.templateLimit(what: "the number of loop iterations", limit: limit, line: 0)
        }
        iterations += count
    }

    /// Checks a string about to be built of `bytes` UTF-8 bytes, and counts it.
    func string(bytes: Int) throws(TokenizerError) {
        guard bytes <= ChatTemplateSandbox.maxStringBytes else {
            throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
        }
        try allocate(bytes)
    }

    /// Checks a list about to be built of `items` items, and counts it.
    func list(items: Int) throws(TokenizerError) {
        guard items <= ChatTemplateSandbox.maxListItems else {
            throw TokenizerError.templateLimit(what: "the length of a list", limit: ChatTemplateSandbox.maxListItems, line: 0)
        }
        try allocate(items * 16)
    }

    /// What a scanned byte counts against the budget: scanning (walking characters, searching)
    /// costs more time than building the same bytes.
    static let scanWeight = 16

    /// Counts a scan of a string of `bytes` bytes.
    func scan(_ bytes: Int) throws(TokenizerError) {
        try allocate(min(bytes, Int.max / 32) * JinjaBudget.scanWeight)
    }

    /// Counts a scan of the strings among `values`.
    func scan(_ values: JinjaValue...) throws(TokenizerError) {
        for v in values { if case let .string(s) = v { try scan(s.utf8.count) } }
    }

    private func allocate(_ bytes: Int) throws(TokenizerError) {
        let limit = ChatTemplateSandbox.maxAllocatedBytes
        guard allocated <= limit, bytes <= limit - allocated else {
            throw TokenizerError.templateLimit(what: "the total size of the strings and lists built or scanned in bytes", limit: limit, line: 0)
        }
        allocated += bytes
    }

    /// Checks that a list or dict whose items are `items` nests no deeper than the limit. The
    /// items looked at count against the allocation budget (16 bytes each), so that wrapping a
    /// large list again and again stays bounded.
    func checkDepth<S: Sequence>(of items: S) throws(TokenizerError) where S.Element == JinjaValue {
        let limit = ChatTemplateSandbox.maxValueDepth
        var visited = 0
        var tooDeep = false
        for item in items {
            switch item {
            case .array, .dict:
                if item.nestingDepth(limit: limit, visited: &visited) >= limit { tooDeep = true }
            default: continue
            }
            if tooDeep { break }
        }
        if tooDeep {
            throw TokenizerError.templateLimit(what: "the nesting depth of a list or dict", limit: limit, line: 0)
        }
        allocated += min(visited, Int.max / 64) * 16
        try allocate(0)
    }
}

extension JinjaValue {
    /// How many lists and dicts nest in this value (0 for a scalar), counting no further than
    /// `limit`; `visited` grows by the number of items looked at.
    func nestingDepth(limit: Int, visited: inout Int) -> Int {
        let children: [JinjaValue]
        switch self {
        case let .array(items): children = items
        case let .dict(d): children = d.values
        default: return 0
        }
        if limit <= 1 { return 1 }
        var deepest = 0
        visited += children.count
        for item in children {
            switch item {
            case .array, .dict:
                deepest = max(deepest, item.nestingDepth(limit: limit - 1, visited: &visited))
                if deepest + 1 >= limit { return limit }
            default: continue
            }
        }
        return deepest + 1
    }
}

/// Integer arithmetic of the sandbox: 64-bit, and an error rather than a wrap or a trap when a
/// result does not fit (jinja2 has unbounded integers; a chat template never needs them).
enum JinjaInteger {
    static func overflow(_ expression: String) -> TokenizerError {
        .templateRender(message: "integer overflow: \(expression) does not fit in the sandbox's 64-bit integers")
    }

    static func add(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        let (r, o) = x.addingReportingOverflow(y)
        if o { throw overflow("\(x) + \(y)") }
        return r
    }

    static func subtract(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        let (r, o) = x.subtractingReportingOverflow(y)
        if o { throw overflow("\(x) - \(y)") }
        return r
    }

    static func multiply(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        let (r, o) = x.multipliedReportingOverflow(by: y)
        if o { throw overflow("\(x) * \(y)") }
        return r
    }

    static func negate(_ x: Int) throws(TokenizerError) -> Int {
        guard x != .min else { throw overflow("-(\(x))") }
        return -x
    }

    /// Python `//`: the quotient rounded towards negative infinity.
    static func floorDivide(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        guard y != 0 else { throw TokenizerError.templateRender(message: "integer division by zero") }
        guard !(x == .min && y == -1) else { throw overflow("\(x) // \(y)") }
        let q = x / y
        return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q
    }

    /// Python `%`: the remainder with the sign of the divisor.
    static func modulo(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        guard y != 0 else { throw TokenizerError.templateRender(message: "integer modulo by zero") }
        if y == -1 { return 0 }
        let r = x % y
        return r != 0 && (r < 0) != (y < 0) ? r + y : r
    }

    /// `x ** y` for `y >= 0`, by squaring.
    static func power(_ x: Int, _ y: Int) throws(TokenizerError) -> Int {
        var result = 1
        var base = x
        var e = y
        while e > 0 {
            if e & 1 == 1 {
                let (r, o) = result.multipliedReportingOverflow(by: base)
                if o { throw overflow("\(x) ** \(y)") }
                result = r
            }
            e >>= 1
            if e > 0 {
                let (b, o) = base.multipliedReportingOverflow(by: base)
                if o { throw overflow("\(x) ** \(y)") }
                base = b
            }
        }
        return result
    }

    /// Python `int(float)`: truncation towards zero; infinity and values outside 64 bits are errors.
    static func fromDouble(_ d: Double) throws(TokenizerError) -> Int {
        if d.isNaN { throw TokenizerError.templateRender(message: "cannot convert float NaN to integer") }
        if d.isInfinite { throw TokenizerError.templateRender(message: "cannot convert float infinity to integer") }
        let t = d.rounded(.towardZero)
        // 2^63 is exactly representable; every double below it in magnitude fits.
        guard t >= -9_223_372_036_854_775_808.0 && t < 9_223_372_036_854_775_808.0 else {
            throw overflow("int(\(JinjaValue.pythonFloat(d)))")
        }
        return Int(t)
    }

    /// The number of items of `range(start, stop, step)` (step non-zero), without overflow.
    static func rangeCount(_ start: Int, _ stop: Int, _ step: Int) -> Int128 {
        let a = Int128(start), b = Int128(stop), s = Int128(step)
        if s > 0 { return b > a ? (b - a + s - 1) / s : 0 }
        return a > b ? (a - b - s - 1) / -s : 0
    }
}
