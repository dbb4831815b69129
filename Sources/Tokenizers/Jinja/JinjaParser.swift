/// Jinja expressions.
indirect enum JinjaExpr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case attribute(JinjaExpr, String)
    case index(JinjaExpr, JinjaExpr)
    /// `+ - * / // % ** ~`
    case arithmetic(String, JinjaExpr, JinjaExpr)
    case negate(JinjaExpr)
    /// A comparison chain `a < b <= c` (operators `== != < > <= >= in notin`).
    case compare(JinjaExpr, [(String, JinjaExpr)])
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case not(JinjaExpr)
    /// `a if cond else b` (`b` absent: undefined).
    case conditional(condition: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    /// `x is [not] test`
    case test(JinjaExpr, name: String, negated: Bool)
    /// `x | name(args, key=value)`
    case filter(JinjaExpr, name: String, args: [JinjaExpr], kwargs: [(String, JinjaExpr)])
    /// `f(args)` or `x.method(args)`
    case call(JinjaExpr, args: [JinjaExpr], kwargs: [(String, JinjaExpr)])
    /// `x[start:stop:step]`
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    /// `{key: value, …}`
    case dict([(JinjaExpr, JinjaExpr)])
}

/// Jinja template nodes.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    /// `for a[, b…] in iterable [if filter]`
    case forLoop(variables: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    case conditional(branches: [(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case set(String, JinjaExpr)
    /// `set namespace.attribute = value`
    case setAttribute(String, String, JinjaExpr)
}

/// A recursive-descent parser for the Jinja subset: text, `{{ expr }}`, `{% for %}` (with
/// `loop.*` and `{% else %}`), `{% if %}/{% elif %}/{% else %}`, `{% set name = expr %}`, and
/// expressions with literals, names, `.attr`, `[index]`, list literals, arithmetic, `~`,
/// comparisons, `in`, `and/or/not`, inline `if/else` and the tests `defined`, `undefined`, `none`,
/// `string`, `number`, `mapping`, `sequence`, `iterable`, `true`, `false`. Anything else fails with
/// `TokenizerError.templateUnsupported` naming it.
struct JinjaParser {
    private let parts: [TemplatePart]
    private var index = 0

    static let supportedTests: Set<String> = [
        "defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
        "sequence", "iterable", "boolean", "true", "false", "even", "odd",
    ]

    init(parts: [TemplatePart]) {
        self.parts = parts
    }

    static func parse(_ source: String) throws(TokenizerError) -> [JinjaNode] {
        var lexer = JinjaLexer(source: source)
        var parser = JinjaParser(parts: try lexer.tokenize())
        let (nodes, end) = try parser.parseBody(until: [])
        if let end {
            throw TokenizerError.templateSyntax(message: "unexpected '{% \(end.tag) %}'", line: end.line)
        }
        return nodes
    }

    /// Parses nodes until a statement whose tag is in `terminators` (returned with its tokens), or
    /// the end of the template (returns nil; the caller decides if that is an error).
    private mutating func parseBody(until terminators: Set<String>)
        throws(TokenizerError) -> ([JinjaNode], (tag: String, tokens: [JinjaToken], line: Int)?) {
        var nodes: [JinjaNode] = []
        while index < parts.count {
            let part = parts[index]
            index += 1
            switch part {
            case let .text(t):
                nodes.append(.text(t))
            case let .expression(tokens, line):
                var stream = TokenStream(tokens: tokens, line: line)
                let expr = try stream.parseExpression()
                try stream.expectEnd()
                nodes.append(.output(expr))
            case let .statement(tokens, line):
                guard let first = tokens.first, case let .name(tag) = first.kind else {
                    throw TokenizerError.templateSyntax(message: "a tag name is expected after '{%'", line: line)
                }
                if terminators.contains(tag) {
                    return (nodes, (tag, Array(tokens.dropFirst()), line))
                }
                var stream = TokenStream(tokens: Array(tokens.dropFirst()), line: line)
                switch tag {
                case "for":
                    nodes.append(try parseFor(&stream, line: line))
                case "if":
                    nodes.append(try parseIf(&stream, line: line))
                case "set":
                    guard let nameToken = stream.next(), case let .name(name) = nameToken.kind else {
                        throw TokenizerError.templateSyntax(message: "a variable name is expected after 'set'", line: line)
                    }
                    if stream.peek()?.isOp(",") == true {
                        throw TokenizerError.templateUnsupported(construct: "'set' of a tuple", line: line)
                    }
                    if stream.peek()?.isOp(".") == true {
                        _ = stream.next()
                        guard let attrToken = stream.next(), case let .name(attr) = attrToken.kind else {
                            throw TokenizerError.templateSyntax(message: "an attribute name is expected after '.'", line: line)
                        }
                        guard stream.next()?.isOp("=") == true else {
                            throw TokenizerError.templateSyntax(message: "'=' expected in 'set'", line: line)
                        }
                        let value = try stream.parseExpression()
                        try stream.expectEnd()
                        nodes.append(.setAttribute(name, attr, value))
                        continue
                    }
                    guard stream.peek()?.isOp("=") == true else {
                        throw TokenizerError.templateUnsupported(construct: "block 'set' ({% set \(name) %}…{% endset %})", line: line)
                    }
                    _ = stream.next()
                    let value = try stream.parseExpression()
                    try stream.expectEnd()
                    nodes.append(.set(name, value))
                case "endfor", "endif", "elif", "else":
                    throw TokenizerError.templateSyntax(message: "unexpected '{% \(tag) %}'", line: line)
                default:
                    throw TokenizerError.templateUnsupported(construct: "tag '{% \(tag) %}'", line: line)
                }
            }
        }
        return (nodes, nil)
    }

    private mutating func parseFor(_ stream: inout TokenStream, line: Int) throws(TokenizerError) -> JinjaNode {
        var variables: [String] = []
        repeat {
            if !variables.isEmpty { _ = stream.next() }
            guard let target = stream.next(), case let .name(variable) = target.kind else {
                throw TokenizerError.templateSyntax(message: "a loop variable is expected after 'for'", line: line)
            }
            variables.append(variable)
        } while stream.peek()?.isOp(",") == true
        guard stream.next()?.isName("in") == true else {
            throw TokenizerError.templateSyntax(message: "'in' is expected in 'for'", line: line)
        }
        let iterable = try stream.parseExpression(allowConditional: false)
        var filter: JinjaExpr? = nil
        if stream.peek()?.isName("if") == true {
            _ = stream.next()
            filter = try stream.parseExpression(allowConditional: false)
        }
        if stream.peek()?.isName("recursive") == true {
            throw TokenizerError.templateUnsupported(construct: "recursive loop", line: line)
        }
        try stream.expectEnd()
        let parsed = try parseBody(until: ["endfor", "else"])
        let body = parsed.0
        var end = parsed.1
        var otherwise: [JinjaNode] = []
        if let elseTag = end, elseTag.tag == "else" {
            try TokenStream(tokens: elseTag.tokens, line: elseTag.line).expectEnd()
            (otherwise, end) = try parseBody(until: ["endfor"])
        }
        guard let end else {
            throw TokenizerError.templateSyntax(message: "'{% for %}' without '{% endfor %}'", line: line)
        }
        try TokenStream(tokens: end.tokens, line: end.line).expectEnd()
        return .forLoop(variables: variables, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
    }

    private mutating func parseIf(_ stream: inout TokenStream, line: Int) throws(TokenizerError) -> JinjaNode {
        var condition = try stream.parseExpression()
        try stream.expectEnd()
        var branches: [(JinjaExpr, [JinjaNode])] = []
        while true {
            let (body, end) = try parseBody(until: ["elif", "else", "endif"])
            branches.append((condition, body))
            guard let end else {
                throw TokenizerError.templateSyntax(message: "'{% if %}' without '{% endif %}'", line: line)
            }
            switch end.tag {
            case "elif":
                var s = TokenStream(tokens: end.tokens, line: end.line)
                condition = try s.parseExpression()
                try s.expectEnd()
            case "else":
                try TokenStream(tokens: end.tokens, line: end.line).expectEnd()
                let (otherwise, close) = try parseBody(until: ["endif"])
                guard let close else {
                    throw TokenizerError.templateSyntax(message: "'{% if %}' without '{% endif %}'", line: line)
                }
                try TokenStream(tokens: close.tokens, line: close.line).expectEnd()
                return .conditional(branches: branches, otherwise: otherwise)
            default:
                try TokenStream(tokens: end.tokens, line: end.line).expectEnd()
                return .conditional(branches: branches, otherwise: [])
            }
        }
    }
}

/// Expression parsing over the tokens of one tag, with Jinja's precedence.
struct TokenStream {
    private let tokens: [JinjaToken]
    private var index = 0
    private let line: Int

    init(tokens: [JinjaToken], line: Int) {
        self.tokens = tokens
        self.line = line
    }

    func peek() -> JinjaToken? { index < tokens.count ? tokens[index] : nil }

    mutating func next() -> JinjaToken? {
        guard index < tokens.count else { return nil }
        index += 1
        return tokens[index - 1]
    }

    private var currentLine: Int { peek()?.line ?? line }

    func expectEnd() throws(TokenizerError) {
        if let t = peek() {
            throw TokenizerError.templateSyntax(message: "unexpected \(t.display)", line: t.line)
        }
    }

    private mutating func expectOp(_ op: String) throws(TokenizerError) {
        guard let t = next(), t.isOp(op) else {
            throw TokenizerError.templateSyntax(message: "'\(op)' expected", line: currentLine)
        }
    }

    mutating func parseExpression(allowConditional: Bool = true) throws(TokenizerError) -> JinjaExpr {
        var expr = try parseOr()
        while allowConditional && peek()?.isName("if") == true {
            _ = next()
            let condition = try parseOr()
            var otherwise: JinjaExpr? = nil
            if peek()?.isName("else") == true {
                _ = next()
                otherwise = try parseExpression()
            }
            expr = .conditional(condition: condition, then: expr, otherwise: otherwise)
        }
        return expr
    }

    private mutating func parseOr() throws(TokenizerError) -> JinjaExpr {
        var left = try parseAnd()
        while peek()?.isName("or") == true {
            _ = next()
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws(TokenizerError) -> JinjaExpr {
        var left = try parseNot()
        while peek()?.isName("and") == true {
            _ = next()
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws(TokenizerError) -> JinjaExpr {
        if peek()?.isName("not") == true {
            _ = next()
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(TokenizerError) -> JinjaExpr {
        let first = try parseMath1()
        var rest: [(String, JinjaExpr)] = []
        while let t = peek() {
            if case let .op(o) = t.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                _ = next()
                rest.append((o, try parseMath1()))
            } else if t.isName("in") {
                _ = next()
                rest.append(("in", try parseMath1()))
            } else if t.isName("not"), index + 1 < tokens.count, tokens[index + 1].isName("in") {
                index += 2
                rest.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return rest.isEmpty ? first : .compare(first, rest)
    }

    private mutating func parseMath1() throws(TokenizerError) -> JinjaExpr {
        var left = try parseConcat()
        while let t = peek(), t.isOp("+") || t.isOp("-") {
            _ = next()
            left = .arithmetic(t.isOp("+") ? "+" : "-", left, try parseConcat())
        }
        return left
    }

    private mutating func parseConcat() throws(TokenizerError) -> JinjaExpr {
        var left = try parseMath2()
        while peek()?.isOp("~") == true {
            _ = next()
            left = .arithmetic("~", left, try parseMath2())
        }
        return left
    }

    private mutating func parseMath2() throws(TokenizerError) -> JinjaExpr {
        var left = try parsePow()
        while let t = peek(), case let .op(o) = t.kind, ["*", "/", "//", "%"].contains(o) {
            _ = next()
            left = .arithmetic(o, left, try parsePow())
        }
        return left
    }

    private mutating func parsePow() throws(TokenizerError) -> JinjaExpr {
        var left = try parseUnary(withFilter: true)
        while peek()?.isOp("**") == true {
            _ = next()
            left = .arithmetic("**", left, try parseUnary(withFilter: true))
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool) throws(TokenizerError) -> JinjaExpr {
        var expr: JinjaExpr
        if peek()?.isOp("-") == true {
            _ = next()
            expr = .negate(try parseUnary(withFilter: false))
        } else if peek()?.isOp("+") == true {
            _ = next()
            expr = try parseUnary(withFilter: false)
        } else {
            expr = try parsePostfix(try parsePrimary())
        }
        if withFilter {
            while let t = peek() {
                if t.isOp("|") {
                    _ = next()
                    guard let n = next(), case let .name(name) = n.kind else {
                        throw TokenizerError.templateSyntax(message: "a filter name is expected after '|'", line: t.line)
                    }
                    guard JinjaBuiltins.filters.contains(name) else {
                        throw TokenizerError.templateUnsupported(construct: "filter '|\(name)'", line: t.line)
                    }
                    var args: [JinjaExpr] = []
                    var kwargs: [(String, JinjaExpr)] = []
                    if peek()?.isOp("(") == true {
                        _ = next()
                        (args, kwargs) = try parseArguments()
                    }
                    expr = .filter(expr, name: name, args: args, kwargs: kwargs)
                } else if t.isName("is") {
                    _ = next()
                    var negated = false
                    if peek()?.isName("not") == true {
                        _ = next()
                        negated = true
                    }
                    guard let n = next(), case var .name(test) = n.kind else {
                        throw TokenizerError.templateSyntax(message: "a test name is expected after 'is'", line: t.line)
                    }
                    if test == "none" || test == "None" { test = "none" }
                    if test == "true" || test == "True" { test = "true" }
                    if test == "false" || test == "False" { test = "false" }
                    guard JinjaParser.supportedTests.contains(test) else {
                        throw TokenizerError.templateUnsupported(construct: "test 'is \(test)'", line: t.line)
                    }
                        if peek()?.isOp("(") == true {
                        throw TokenizerError.templateUnsupported(construct: "test 'is \(test)' with arguments", line: t.line)
                    }
                    expr = .test(expr, name: test, negated: negated)
                } else {
                    break
                }
            }
        }
        return expr
    }

    private mutating func parsePrimary() throws(TokenizerError) -> JinjaExpr {
        guard let t = next() else {
            throw TokenizerError.templateSyntax(message: "an expression is expected", line: line)
        }
        switch t.kind {
        case let .name(n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case var .string(s):
            // Adjacent string literals concatenate.
            while let n = peek(), case let .string(more) = n.kind {
                _ = next()
                s += more
            }
            return .literal(.string(s))
        case let .integer(i):
            return .literal(.int(i))
        case let .float(d):
            return .literal(.double(d))
        case let .op(o):
            switch o {
            case "(":
                if peek()?.isOp(")") == true {
                    _ = next()
                    return .list([])
                }
                let e = try parseExpression()
                if peek()?.isOp(",") == true {
                    // A tuple: evaluated as a list.
                    var items = [e]
                    while peek()?.isOp(",") == true {
                        _ = next()
                        if peek()?.isOp(")") == true { break }
                        items.append(try parseExpression())
                    }
                    try expectOp(")")
                    return .list(items)
                }
                try expectOp(")")
                return e
            case "[":
                var items: [JinjaExpr] = []
                while peek()?.isOp("]") != true {
                    items.append(try parseExpression())
                    if peek()?.isOp(",") == true { _ = next() } else { break }
                }
                try expectOp("]")
                return .list(items)
            case "{":
                var pairs: [(JinjaExpr, JinjaExpr)] = []
                while peek()?.isOp("}") != true {
                    let key = try parseExpression()
                    try expectOp(":")
                    pairs.append((key, try parseExpression()))
                    if peek()?.isOp(",") == true { _ = next() } else { break }
                }
                try expectOp("}")
                return .dict(pairs)
            default:
                throw TokenizerError.templateSyntax(message: "unexpected \(t.display)", line: t.line)
            }
        }
    }

    /// Call arguments after '(' up to and including ')': positional, then `name=value`.
    private mutating func parseArguments() throws(TokenizerError) -> ([JinjaExpr], [(String, JinjaExpr)]) {
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while peek()?.isOp(")") != true {
            if let t = peek(), case let .name(n) = t.kind, index + 1 < tokens.count, tokens[index + 1].isOp("=") {
                index += 2
                kwargs.append((n, try parseExpression()))
            } else {
                args.append(try parseExpression())
            }
            if peek()?.isOp(",") == true { _ = next() } else { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    private mutating func parsePostfix(_ base: JinjaExpr) throws(TokenizerError) -> JinjaExpr {
        var expr = base
        while let t = peek() {
            if t.isOp(".") {
                _ = next()
                guard let n = next() else {
                    throw TokenizerError.templateSyntax(message: "an attribute name is expected after '.'", line: t.line)
                }
                switch n.kind {
                case let .name(attr):
                    expr = .attribute(expr, attr)
                case let .integer(i):
                    expr = .index(expr, .literal(.int(i)))
                default:
                    throw TokenizerError.templateSyntax(message: "an attribute name is expected after '.'", line: t.line)
                }
            } else if t.isOp("[") {
                _ = next()
                var key: JinjaExpr? = nil
                if peek()?.isOp(":") != true { key = try parseExpression() }
                if peek()?.isOp(":") == true {
                    _ = next()
                    var stop: JinjaExpr? = nil
                    var step: JinjaExpr? = nil
                    if let p = peek(), !p.isOp("]"), !p.isOp(":") { stop = try parseExpression() }
                    if peek()?.isOp(":") == true {
                        _ = next()
                        if peek()?.isOp("]") != true { step = try parseExpression() }
                    }
                    try expectOp("]")
                    expr = .slice(expr, key, stop, step)
                    continue
                }
                guard let key else { throw TokenizerError.templateSyntax(message: "an index is expected", line: t.line) }
                if peek()?.isOp(",") == true {
                    throw TokenizerError.templateUnsupported(construct: "tuple subscript", line: t.line)
                }
                try expectOp("]")
                expr = .index(expr, key)
            } else if t.isOp("(") {
                switch expr {
                case let .name(n):
                    guard JinjaBuiltins.functions.contains(n) else {
                        throw TokenizerError.templateUnsupported(construct: "function call '\(n)(…)'", line: t.line)
                    }
                case let .attribute(_, a):
                    guard JinjaBuiltins.methods.contains(a) else {
                        throw TokenizerError.templateUnsupported(construct: "method call '.\(a)(…)'", line: t.line)
                    }
                default:
                    throw TokenizerError.templateUnsupported(construct: "call of an expression", line: t.line)
                }
                _ = next()
                let (args, kwargs) = try parseArguments()
                expr = .call(expr, args: args, kwargs: kwargs)
            } else {
                break
            }
        }
        return expr
    }
}
