import Foundation

/// Evaluates a parsed Jinja template against variables.
struct JinjaInterpreter {
    private var scopes: [[String: JinjaValue]]
    private var output = ""

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
                output += t
            case let .output(expr):
                output += try evaluate(expr).text
            case let .set(name, expr):
                let value = try evaluate(expr)
                scopes[scopes.count - 1][name] = value
            case let .setAttribute(name, attr, expr):
                let value = try evaluate(expr)
                // Namespaces are dicts held by a variable: the innermost scope that has it.
                guard let k = scopes.lastIndex(where: { $0[name] != nil }), case var .dict(d) = scopes[k][name]! else {
                    throw TokenizerError.templateRender(message: "cannot set attribute '\(attr)' of '\(name)', which is not a namespace")
                }
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
                if let filter {
                    var kept: [JinjaValue] = []
                    for item in items {
                        scopes.append(try bind(variables, item))
                        defer { scopes.removeLast() }
                        if try evaluate(filter).isTruthy { kept.append(item) }
                    }
                    items = kept
                }
                if items.isEmpty {
                    try run(otherwise)
                    continue
                }
                for (i, item) in items.enumerated() {
                    let n = items.count
                    let loop = JinjaDict([
                        ("index", .int(i + 1)), ("index0", .int(i)),
                        ("revindex", .int(n - i)), ("revindex0", .int(n - i - 1)),
                        ("first", .bool(i == 0)), ("last", .bool(i == n - 1)), ("length", .int(n)),
                        ("previtem", i > 0 ? items[i - 1] : .undefined("loop.previtem")),
                        ("nextitem", i + 1 < n ? items[i + 1] : .undefined("loop.nextitem")),
                    ])
                    var scope = try bind(variables, item)
                    scope["loop"] = .dict(loop)
                    scopes.append(scope)
                    defer { scopes.removeLast() }
                    try run(body)
                }
            }
        }
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
        case let .string(s): return s.map { .string(String($0)) }
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
            return .array(values)
        case let .attribute(base, name):
            let b = try evaluate(base)
            return try item(of: b, key: .string(name), description: "\(b.isUndefined ? undefinedName(b) : "value").\(name)")
        case let .index(base, keyExpr):
            let b = try evaluate(base)
            let key = try evaluate(keyExpr)
            return try item(of: b, key: key, description: "\(b.isUndefined ? undefinedName(b) : "value")[\(key.repr)]")
        case let .arithmetic(op, l, r):
            return try arithmetic(op, try evaluate(l), try evaluate(r))
        case let .negate(e):
            let v = try evaluate(e)
            switch v {
            case let .int(i): return .int(-i)
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
        case let .slice(base, start, stop, step):
            return try JinjaInterpreter.slice(try evaluate(base), try start.map { (e) throws(TokenizerError) in try evaluate(e) },
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
            if let i = key.integer {
                let chars = Array(s)
                let index = i < 0 ? chars.count + i : i
                if index >= 0 && index < chars.count { return .string(String(chars[index])) }
            }
            return .undefined(description)
        default:
            return .undefined(description)
        }
    }

    private func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws(TokenizerError) -> JinjaValue {
        if op == "~" { return .string(a.text + b.text) }
        func typeError() -> TokenizerError {
            .templateRender(message: "unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)): return .string(x + y)
        case let ("+", .array(x), .array(y)): return .array(x + y)
        case let ("*", .string(x), _) where b.integer != nil: return .string(String(repeating: x, count: max(0, b.integer!)))
        case let ("*", _, .string(y)) where a.integer != nil: return .string(String(repeating: y, count: max(0, a.integer!)))
        case let ("*", .array(x), _) where b.integer != nil:
            return .array(Array(repeatElement(x, count: max(0, b.integer!)).joined()))
        default: break
        }
        if let x = a.integer, let y = b.integer {
            switch op {
            case "+": return .int(x &+ y)
            case "-": return .int(x &- y)
            case "*": return .int(x &* y)
            case "/":
                guard y != 0 else { throw TokenizerError.templateRender(message: "division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                guard y != 0 else { throw TokenizerError.templateRender(message: "integer division by zero") }
                let q = x / y
                return .int((x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q)
            case "%":
                guard y != 0 else { throw TokenizerError.templateRender(message: "modulo by zero") }
                let r = x % y
                return .int(r != 0 && (r < 0) != (y < 0) ? r + y : r)
            case "**":
                if y >= 0 {
                    var result = 1
                    for _ in 0..<y { result = result &* x }
                    return .int(result)
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
                contained = needle.isEmpty || s.unicodeScalars.count >= needle.unicodeScalars.count
                    && Array(s.unicodeScalars).containsSubsequence(Array(needle.unicodeScalars))
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

extension Array where Element: Equatable {
    /// Whether `needle` occurs as a contiguous run.
    func containsSubsequence(_ needle: [Element]) -> Bool {
        if needle.isEmpty { return true }
        guard needle.count <= count else { return false }
        for start in 0...(count - needle.count) where self[start..<(start + needle.count)].elementsEqual(needle) {
            return true
        }
        return false
    }
}
