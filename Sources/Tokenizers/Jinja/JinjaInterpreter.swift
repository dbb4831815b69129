import Foundation

/// Evaluates a parsed Jinja template against variables.
///
/// Rendering stays within `ChatTemplateSandbox`'s limits: loop iterations, output, string and
/// list sizes, value nesting, and 64-bit integers (see docs/chat-template-sandbox.md).
struct JinjaInterpreter {
    private var scopes: [[String: JinjaValue]]
    private var output = ""
    let budget = JinjaBudget()

    init(variables: [String: JinjaValue]) {
        scopes = [variables]
    }

    static func render(_ nodes: [JinjaNode], variables: [String: JinjaValue]) throws(TokenizerError) -> String {
        var interpreter = JinjaInterpreter(variables: variables)
        try interpreter.run(nodes)
        return interpreter.output
    }

    private mutating func run(_ nodes: [JinjaNode]) throws(TokenizerError) {
        for node in nodes {
            switch node {
            case let .text(t):
                try emit(t)
            case let .output(expr):
                try emit(try text(try evaluate(expr)))
            case let .set(name, expr):
                let value = try evaluate(expr)
                scopes[scopes.count - 1][name] = value
            case let .setAttribute(name, attr, expr):
                let value = try evaluate(expr)
                // Namespaces are dicts held by a variable: the innermost scope that has it.
                guard let k = scopes.lastIndex(where: { $0[name] != nil }), case var .dict(d) = scopes[k][name]! else {
                    throw TokenizerError.templateRender(message: "cannot set attribute '\(attr)' of '\(name)', which is not a namespace")
                }
                try budget.checkDepth(of: [value])
                d[attr] = value
                scopes[k][name] = .dict(d)
            case let .conditional(branches, otherwise):
                var taken = false
                for (condition, body) in branches {
                    if try evaluate(condition).isTruthy {
                        try run(body)
                        taken = true
                        break
                    }
                }
                if !taken { try run(otherwise) }
            case let .forLoop(variables, iterableExpr, filter, body, otherwise):
                var items = try iterate(try evaluate(iterableExpr))
                // A loop that would go over the iteration limit fails before it starts.
                try budget.iterate(items.count)
                if let filter {
                    var kept: [JinjaValue] = []
                    for item in items {
                        scopes.append(try bind(variables, item))
                        defer { scopes.removeLast() }
                        if try evaluate(filter).isTruthy { kept.append(item) }
                    }
                    items = kept
                    try budget.iterate(items.count)
                }
                if items.isEmpty {
                    try run(otherwise)
                    continue
                }
                let n = items.count
                var loop = JinjaDict()
                loop.keys = JinjaInterpreter.loopKeys
                for (i, item) in items.enumerated() {
                    loop.values = [
                        .int(i + 1), .int(i), .int(n - i), .int(n - i - 1), .bool(i == 0), .bool(i == n - 1), .int(n),
                        i > 0 ? items[i - 1] : .undefined("loop.previtem"),
                        i + 1 < n ? items[i + 1] : .undefined("loop.nextitem"),
                    ]
                    var scope = try bind(variables, item)
                    scope["loop"] = .dict(loop)
                    scopes.append(scope)
                    defer { scopes.removeLast() }
                    try run(body)
                }
            }
        }
    }

    /// The keys of `loop`, in the order of its values.
    static let loopKeys = ["index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem"]

    /// Appends to the output, within the sandbox's output limit.
    private mutating func emit(_ s: String) throws(TokenizerError) {
        let limit = ChatTemplateSandbox.maxOutputBytes
        guard s.utf8.count <= limit - output.utf8.count else {
            throw TokenizerError.templateLimit(what: "the size of the rendered prompt in bytes", limit: limit, line: 0)
        }
        output += s
    }

    /// Python `str()` of a value (what `{{ }}` and `~` print), within the string size limit.
    func text(_ v: JinjaValue) throws(TokenizerError) -> String {
        switch v {
        case let .string(s): return s
        case .array, .dict:
            var out = ""
            guard v.writeRepr(to: &out, limit: ChatTemplateSandbox.maxStringBytes) else {
                throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
            }
            try budget.string(bytes: out.utf8.count)
            return out
        default: return v.text
        }
    }

    /// A string just built, counted against the sandbox's string limits.
    func built(_ s: String) throws(TokenizerError) -> JinjaValue {
        try budget.string(bytes: s.utf8.count)
        return .string(s)
    }

    /// A list just built, counted against the sandbox's list limits.
    func built(_ items: [JinjaValue]) throws(TokenizerError) -> JinjaValue {
        try budget.list(items: items.count)
        return .array(items)
    }

    /// The loop variables bound to one item (unpacked when there are several).
    private func bind(_ variables: [String], _ item: JinjaValue) throws(TokenizerError) -> [String: JinjaValue] {
        if variables.count == 1 { return [variables[0]: item] }
        guard case let .array(parts) = item, parts.count == variables.count else {
            throw TokenizerError.templateRender(message: "cannot unpack \(item.typeName) into \(variables.count) loop variables")
        }
        var scope: [String: JinjaValue] = [:]
        for (v, p) in zip(variables, parts) { scope[v] = p }
        return scope
    }

    func iterate(_ value: JinjaValue) throws(TokenizerError) -> [JinjaValue] {
        switch value {
        case .undefined: return []
        case let .array(a): return a
        case let .dict(d): return d.keys.map { .string($0) }
        case let .string(s):
            try budget.list(items: s.utf8.count)
            return s.map { .string(String($0)) }
        default: throw TokenizerError.templateRender(message: "'\(value.typeName)' object is not iterable")
        }
    }

    private func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() {
            if let v = scope[name] { return v }
        }
        return .undefined(name)
    }

    private func evaluate(_ expr: JinjaExpr) throws(TokenizerError) -> JinjaValue {
        switch expr {
        case let .literal(v):
            return v
        case let .name(n):
            return lookup(n)
        case let .list(items):
            var values: [JinjaValue] = []
            for item in items { values.append(try evaluate(item)) }
            try budget.checkDepth(of: values)
            return try built(values)
        case let .attribute(base, name):
            let b = try evaluate(base)
            return try item(of: b, key: .string(name), description: "\(b.isUndefined ? undefinedName(b) : "value").\(name)")
        case let .index(base, keyExpr):
            let b = try evaluate(base)
            let key = try evaluate(keyExpr)
            return try item(of: b, key: key, description: "\(b.isUndefined ? undefinedName(b) : "value")[\(key.shortRepr())]")
        case let .arithmetic(op, l, r):
            return try arithmetic(op, try evaluate(l), try evaluate(r))
        case let .negate(e):
            let v = try evaluate(e)
            switch v {
            case let .int(i): return .int(try JinjaInteger.negate(i))
            case let .double(d): return .double(-d)
            case let .bool(b): return .int(b ? -1 : 0)
            default: throw TokenizerError.templateRender(message: "bad operand type for unary -: '\(v.typeName)'")
            }
        case let .compare(first, rest):
            var left = try evaluate(first)
            for (op, rightExpr) in rest {
                let right = try evaluate(rightExpr)
                guard try compare(op, left, right) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case let .and(l, r):
            let a = try evaluate(l)
            return a.isTruthy ? try evaluate(r) : a
        case let .or(l, r):
            let a = try evaluate(l)
            return a.isTruthy ? a : try evaluate(r)
        case let .not(e):
            return .bool(!(try evaluate(e).isTruthy))
        case let .conditional(condition, then, otherwise):
            if try evaluate(condition).isTruthy { return try evaluate(then) }
            if let otherwise { return try evaluate(otherwise) }
            return .undefined("the else branch of an inline if")
        case let .test(e, name, negated):
            return .bool(try JinjaInterpreter.test(name, try evaluate(e), []) != negated)
        case let .filter(e, name, args, kwargs):
            return try applyFilter(name, try evaluate(e), try args.map { (a) throws(TokenizerError) in try evaluate(a) },
                                   try evaluateKeywords(kwargs))
        case let .call(callee, args, kwargs):
            let values = try args.map { (a) throws(TokenizerError) in try evaluate(a) }
            let keywords = try evaluateKeywords(kwargs)
            switch callee {
            case let .name(n):
                return try callFunction(n, values, keywords)
            case let .attribute(base, method):
                return try callMethod(try evaluate(base), method, values, keywords)
            default:
                throw TokenizerError.templateRender(message: "call of an expression")
            }
        case let .slice(baseExpr, start, stop, step):
            let base = try evaluate(baseExpr)
            try budget.scan(base)
            return try JinjaInterpreter.slice(base, try start.map { (e) throws(TokenizerError) in try evaluate(e) },
                                              try stop.map { (e) throws(TokenizerError) in try evaluate(e) },
                                              try step.map { (e) throws(TokenizerError) in try evaluate(e) })
        case let .dict(pairs):
            var d = JinjaDict([])
            for (k, v) in pairs {
                let key = try evaluate(k)
                guard case let .string(ks) = key else {
                    throw TokenizerError.templateRender(message: "dict keys must be strings, got '\(key.typeName)'")
                }
                d[ks] = try evaluate(v)
            }
            try budget.checkDepth(of: d.values)
            try budget.list(items: d.keys.count)
            return .dict(d)
        }
    }

    private func evaluateKeywords(_ kwargs: [(String, JinjaExpr)]) throws(TokenizerError) -> [String: JinjaValue] {
        var out: [String: JinjaValue] = [:]
        for (k, e) in kwargs { out[k] = try evaluate(e) }
        return out
    }

    private func undefinedName(_ v: JinjaValue) -> String {
        if case let .undefined(n) = v { return n }
        return v.typeName
    }

    /// `base[key]` / `base.key` with Jinja semantics: missing keys and indexes are undefined,
    /// but looking into an undefined value is an error.
    func item(of base: JinjaValue, key: JinjaValue, description: String) throws(TokenizerError) -> JinjaValue {
        switch base {
        case let .undefined(name):
            throw TokenizerError.templateRender(message: "'\(name)' is undefined")
        case let .dict(d):
            if case let .string(k) = key, let v = d[k] { return v }
            return .undefined(description)
        case let .array(a):
            if let i = key.integer {
                let index = i < 0 ? a.count + i : i
                if index >= 0 && index < a.count { return a[index] }
            }
            return .undefined(description)
        case let .string(s):
            try budget.scan(s.utf8.count)
            if let i = key.integer {
                // Walk |i| characters from the nearer end, without copying the string.
                if i >= 0, let at = s.index(s.startIndex, offsetBy: i, limitedBy: s.endIndex), at < s.endIndex {
                    return .string(String(s[at]))
                }
                if i < 0, i > Int.min, let at = s.index(s.endIndex, offsetBy: i, limitedBy: s.startIndex) {
                    return .string(String(s[at]))
                }
            }
            return .undefined(description)
        default:
            return .undefined(description)
        }
    }

    private func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws(TokenizerError) -> JinjaValue {
        if op == "~" {
            let x = try text(a), y = try text(b)
            try budget.string(bytes: x.utf8.count + y.utf8.count)
            return .string(x + y)
        }
        func typeError() -> TokenizerError {
            .templateRender(message: "unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        /// `count` copies of something of `size` (bytes or items), or nil when over `limit`.
        func repeated(_ size: Int, _ count: Int, limit: Int) -> Int? {
            let n = max(0, count)
            let (total, overflow) = size.multipliedReportingOverflow(by: n)
            return overflow || total > limit ? nil : total
        }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)):
            try budget.string(bytes: x.utf8.count + y.utf8.count)
            return .string(x + y)
        case let ("+", .array(x), .array(y)):
            try budget.list(items: x.count + y.count)
            return .array(x + y)
        case let ("*", .string(x), _) where b.integer != nil, let ("*", _, .string(x)) where a.integer != nil:
            let count = b.integer ?? a.integer!
            guard let bytes = repeated(x.utf8.count, count, limit: ChatTemplateSandbox.maxStringBytes) else {
                throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
            }
            try budget.string(bytes: bytes)
            return .string(String(repeating: x, count: max(0, count)))
        case let ("*", .array(x), _) where b.integer != nil, let ("*", _, .array(x)) where a.integer != nil:
            let count = b.integer ?? a.integer!
            guard let items = repeated(x.count, count, limit: ChatTemplateSandbox.maxListItems) else {
                throw TokenizerError.templateLimit(what: "the length of a list", limit: ChatTemplateSandbox.maxListItems, line: 0)
            }
            try budget.list(items: items)
            return .array(Array(repeatElement(x, count: max(0, count)).joined()))
        default: break
        }
        if let x = a.integer, let y = b.integer {
            switch op {
            case "+": return .int(try JinjaInteger.add(x, y))
            case "-": return .int(try JinjaInteger.subtract(x, y))
            case "*": return .int(try JinjaInteger.multiply(x, y))
            case "/":
                guard y != 0 else { throw TokenizerError.templateRender(message: "division by zero") }
                return .double(Double(x) / Double(y))
            case "//": return .int(try JinjaInteger.floorDivide(x, y))
            case "%": return .int(try JinjaInteger.modulo(x, y))
            case "**":
                if y >= 0 { return .int(try JinjaInteger.power(x, y)) }
                guard x != 0 else {
                    throw TokenizerError.templateRender(message: "0.0 cannot be raised to a negative power")
                }
                return .double(pow(Double(x), Double(y)))
            default: throw typeError()
            }
        }
        if let x = a.numeric, let y = b.numeric {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw TokenizerError.templateRender(message: "division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw TokenizerError.templateRender(message: "division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw TokenizerError.templateRender(message: "modulo by zero") }
                let r = x.truncatingRemainder(dividingBy: y)
                return .double(r != 0 && (r < 0) != (y < 0) ? r + y : r)
            case "**": return .double(pow(x, y))
            default: throw typeError()
            }
        }
        throw typeError()
    }

    private func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws(TokenizerError) -> Bool {
        if op != "in" && op != "notin" { try budget.scan(a, b) }
        switch op {
        case "==": return a.isEqual(to: b)
        case "!=": return !a.isEqual(to: b)
        case "in", "notin":
            let contained: Bool
            switch b {
            case let .string(s):
                guard case let .string(needle) = a else {
                    throw TokenizerError.templateRender(message: "'in <string>' requires a string as left operand, not '\(a.typeName)'")
                }
                try budget.scan(s.utf8.count)
                contained = JinjaInterpreter.contains(s, needle)
            case let .array(items): contained = items.contains { $0.isEqual(to: a) }
            case let .dict(d):
                if case let .string(k) = a { contained = d[k] != nil } else { contained = false }
            case .undefined: contained = false
            default:
                throw TokenizerError.templateRender(message: "argument of type '\(b.typeName)' is not iterable")
            }
            return op == "in" ? contained : !contained
        default:
            let order: Int
            if let x = a.numeric, let y = b.numeric {
                order = x < y ? -1 : (x > y ? 1 : 0)
            } else if case let .string(x) = a, case let .string(y) = b {
                let xs = Array(x.unicodeScalars).map(\.value)
                let ys = Array(y.unicodeScalars).map(\.value)
                order = xs.lexicographicallyPrecedes(ys) ? -1 : (xs == ys ? 0 : 1)
            } else {
                throw TokenizerError.templateRender(
                    message: "'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
            }
            switch op {
            case "<": return order < 0
            case ">": return order > 0
            case "<=": return order <= 0
            default: return order >= 0
            }
        }
    }
}

extension JinjaInterpreter {
    /// Python `needle in s` (code points): a search of the UTF-8 bytes, which is equivalent
    /// because UTF-8 is self-synchronizing; linear time (Knuth–Morris–Pratt), whatever the strings.
    static func contains(_ s: String, _ needle: String) -> Bool {
        if needle.isEmpty { return true }
        return !occurrences(of: Array(needle.utf8), in: Array(s.utf8), first: true).isEmpty
    }

    /// The starts of the non-overlapping occurrences of `p` (not empty) in `h`, left to right
    /// (Python's `str.replace` and `in`), by Knuth–Morris–Pratt: linear time. With `first`, only
    /// the first.
    static func occurrences(of p: [UInt8], in h: [UInt8], first: Bool = false) -> [Int] {
        guard !p.isEmpty, p.count <= h.count else { return [] }
        // failure[i]: the length of the longest proper border of p[0...i].
        var failure = [Int32](repeating: 0, count: p.count)
        var k = 0
        for i in 1..<max(1, p.count) {
            while k > 0 && p[i] != p[k] { k = Int(failure[k - 1]) }
            if p[i] == p[k] { k += 1 }
            failure[i] = Int32(k)
        }
        var starts: [Int] = []
        k = 0
        for (i, byte) in h.enumerated() {
            while k > 0 && byte != p[k] { k = Int(failure[k - 1]) }
            if byte == p[k] { k += 1 }
            if k == p.count {
                starts.append(i + 1 - p.count)
                if first { break }
                k = 0  // non-overlapping
            }
        }
        return starts
    }
}
