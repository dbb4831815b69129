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
            case let .forLoop(variable, iterableExpr, body, otherwise):
                let items = try iterate(try evaluate(iterableExpr))
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
                    scopes.append([variable: item, "loop": .dict(loop)])
                    defer { scopes.removeLast() }
                    try run(body)
                }
            }
        }
    }

    private func iterate(_ value: JinjaValue) throws(TokenizerError) -> [JinjaValue] {
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
            let v = try evaluate(e)
            let result: Bool
            switch name {
            case "defined": result = !v.isUndefined
            case "undefined": result = v.isUndefined
            case "none":
                if case .none = v { result = true } else { result = false }
            case "string":
                if case .string = v { result = true } else { result = false }
            case "number":
                switch v {
                case .int, .double, .bool: result = true
                default: result = false
                }
            case "integer":
                if case .int = v { result = true } else { result = false }
            case "float":
                if case .double = v { result = true } else { result = false }
            case "boolean":
                if case .bool = v { result = true } else { result = false }
            case "true":
                if case .bool(true) = v { result = true } else { result = false }
            case "false":
                if case .bool(false) = v { result = true } else { result = false }
            case "mapping":
                if case .dict = v { result = true } else { result = false }
            case "sequence", "iterable":
                switch v {
                case .array, .dict, .string: result = true
                default: result = false
                }
            case "even", "odd":
                guard let i = v.integer else {
                    throw TokenizerError.templateRender(message: "test '\(name)' needs an integer, got '\(v.typeName)'")
                }
                result = (i % 2 == 0) == (name == "even")
            default:
                throw TokenizerError.templateUnsupported(construct: "test 'is \(name)'", line: 0)
            }
            return .bool(result != negated)
        }
    }

    private func undefinedName(_ v: JinjaValue) -> String {
        if case let .undefined(n) = v { return n }
        return v.typeName
    }

    /// `base[key]` / `base.key` with Jinja semantics: missing keys and indexes are undefined,
    /// but looking into an undefined value is an error.
    private func item(of base: JinjaValue, key: JinjaValue, description: String) throws(TokenizerError) -> JinjaValue {
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
