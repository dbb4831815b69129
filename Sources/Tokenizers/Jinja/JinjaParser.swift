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
    /// How many blocks enclose the part being parsed (bounded by the sandbox's depth limits).
    private var depth = 0

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
                var stream = TokenStream(tokens: tokens, line: line, blockDepth: depth)
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
                var stream = TokenStream(tokens: Array(tokens.dropFirst()), line: line, blockDepth: depth)
                switch tag {
                case "for":
                    try enterBlock(line: line)
                    nodes.append(try parseFor(&stream, line: line))
                    depth -= 1
                case "if":
                    try enterBlock(line: line)
                    nodes.append(try parseIf(&stream, line: line))
                    depth -= 1
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

    /// One more level of block nesting, within the sandbox's parser and evaluation depths.
    private mutating func enterBlock(line: Int) throws(TokenizerError) {
        depth += 1
        let limit = min(ChatTemplateSandbox.maxParserDepth, ChatTemplateSandbox.maxEvaluationDepth)
        if depth > limit {
            throw TokenizerError.templateLimit(what: "the nesting depth of blocks ({% if %}, {% for %})", limit: limit, line: line)
        }
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
                var s = TokenStream(tokens: end.tokens, line: end.line, blockDepth: depth)
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
/// Expression parsing over the tokens of one tag, with Jinja's precedence.
///
/// Within the sandbox (`ChatTemplateSandbox`): the parser's recursion, counted from the
/// enclosing blocks' depth, stays under `maxParserDepth`, and the expression tree, added to the
/// blocks' depth, under `maxEvaluationDepth` (checked as each node is built, so that no deeper
/// tree ever exists).
struct TokenStream {
    private let tokens: [JinjaToken]
    private var index = 0
    private let line: Int
    /// The depth of the blocks around this tag (parser recursion and tree depth so far).
    private let blockDepth: Int
    private var recursion = 0

    init(tokens: [JinjaToken], line: Int, blockDepth: Int = 0) {
        self.tokens = tokens
        self.line = line
        self.blockDepth = blockDepth
    }

    /// An expression node with the depth of its tree.
    private struct Parsed {
        let expr: JinjaExpr
        let depth: Int
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

    /// One more level of parser recursion.
    private mutating func enter() throws(TokenizerError) {
        recursion += 1
        if blockDepth + recursion > ChatTemplateSandbox.maxParserDepth {
            throw TokenizerError.templateLimit(what: "the nesting depth of the parser (brackets, operators and blocks)",
                                               limit: ChatTemplateSandbox.maxParserDepth, line: currentLine)
        }
    }

    private mutating func leave() { recursion -= 1 }

    /// A node over `children`: one level deeper than the deepest.
    private func node(_ expr: JinjaExpr, _ children: [Parsed]) throws(TokenizerError) -> Parsed {
        let depth = 1 + (children.map(\.depth).max() ?? 0)
        if blockDepth + depth > ChatTemplateSandbox.maxEvaluationDepth {
            throw TokenizerError.templateLimit(what: "the nesting depth of the template (blocks and expression tree)",
                                               limit: ChatTemplateSandbox.maxEvaluationDepth, line: currentLine)
        }
        return Parsed(expr: expr, depth: depth)
    }

    private func leaf(_ expr: JinjaExpr) -> Parsed { Parsed(expr: expr, depth: 1) }

    mutating func parseExpression(allowConditional: Bool = true) throws(TokenizerError) -> JinjaExpr {
        try expression(allowConditional: allowConditional).expr
    }

    private mutating func expression(allowConditional: Bool = true) throws(TokenizerError) -> Parsed {
        try enter()
        defer { leave() }
        var expr = try parseOr()
        while allowConditional && peek()?.isName("if") == true {
            _ = next()
            let condition = try parseOr()
            var otherwise: Parsed? = nil
            if peek()?.isName("else") == true {
                _ = next()
                otherwise = try expression()
            }
            expr = try node(.conditional(condition: condition.expr, then: expr.expr, otherwise: otherwise?.expr),
                            [condition, expr] + (otherwise.map { [$0] } ?? []))
        }
        return expr
    }

    private mutating func parseOr() throws(TokenizerError) -> Parsed {
        var left = try parseAnd()
        while peek()?.isName("or") == true {
            _ = next()
            let right = try parseAnd()
            left = try node(.or(left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parseAnd() throws(TokenizerError) -> Parsed {
        var left = try parseNot()
        while peek()?.isName("and") == true {
            _ = next()
            let right = try parseNot()
            left = try node(.and(left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parseNot() throws(TokenizerError) -> Parsed {
        if peek()?.isName("not") == true {
            _ = next()
            try enter()
            defer { leave() }
            let operand = try parseNot()
            return try node(.not(operand.expr), [operand])
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(TokenizerError) -> Parsed {
        let first = try parseMath1()
        var rest: [(String, JinjaExpr)] = []
        var children = [first]
        while let t = peek() {
            var op: String
            if case let .op(o) = t.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                _ = next()
                op = o
            } else if t.isName("in") {
                _ = next()
                op = "in"
            } else if t.isName("not"), index + 1 < tokens.count, tokens[index + 1].isName("in") {
                index += 2
                op = "notin"
            } else {
                break
            }
            let operand = try parseMath1()
            rest.append((op, operand.expr))
            children.append(operand)
        }
        return rest.isEmpty ? first : try node(.compare(first.expr, rest), children)
    }

    private mutating func parseMath1() throws(TokenizerError) -> Parsed {
        var left = try parseConcat()
        while let t = peek(), t.isOp("+") || t.isOp("-") {
            _ = next()
            let right = try parseConcat()
            left = try node(.arithmetic(t.isOp("+") ? "+" : "-", left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parseConcat() throws(TokenizerError) -> Parsed {
        var left = try parseMath2()
        while peek()?.isOp("~") == true {
            _ = next()
            let right = try parseMath2()
            left = try node(.arithmetic("~", left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parseMath2() throws(TokenizerError) -> Parsed {
        var left = try parsePow()
        while let t = peek(), case let .op(o) = t.kind, ["*", "/", "//", "%"].contains(o) {
            _ = next()
            let right = try parsePow()
            left = try node(.arithmetic(o, left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parsePow() throws(TokenizerError) -> Parsed {
        var left = try parseUnary(withFilter: true)
        while peek()?.isOp("**") == true {
            _ = next()
            let right = try parseUnary(withFilter: true)
            left = try node(.arithmetic("**", left.expr, right.expr), [left, right])
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool) throws(TokenizerError) -> Parsed {
        var expr: Parsed
        if peek()?.isOp("-") == true || peek()?.isOp("+") == true {
            let minus = next()!.isOp("-")
            try enter()
            let operand = try parseUnary(withFilter: false)
            leave()
            expr = minus ? try node(.negate(operand.expr), [operand]) : operand
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
                    var args: [Parsed] = []
                    var kwargs: [(String, Parsed)] = []
                    if peek()?.isOp("(") == true {
                        _ = next()
                        (args, kwargs) = try parseArguments()
                    }
                    expr = try node(.filter(expr.expr, name: name, args: args.map(\.expr), kwargs: kwargs.map { ($0, $1.expr) }),
                                    [expr] + args + kwargs.map(\.1))
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
                    expr = try node(.test(expr.expr, name: test, negated: negated), [expr])
                } else {
                    break
                }
            }
        }
        return expr
    }

    private mutating func parsePrimary() throws(TokenizerError) -> Parsed {
        guard let t = next() else {
            throw TokenizerError.templateSyntax(message: "an expression is expected", line: line)
        }
        switch t.kind {
        case let .name(n):
            switch n {
            case "true", "True": return leaf(.literal(.bool(true)))
            case "false", "False": return leaf(.literal(.bool(false)))
            case "none", "None": return leaf(.literal(.none))
            default: return leaf(.name(n))
            }
        case var .string(s):
            // Adjacent string literals concatenate.
            while let n = peek(), case let .string(more) = n.kind {
                _ = next()
                s += more
            }
            return leaf(.literal(.string(s)))
        case let .integer(i):
            return leaf(.literal(.int(i)))
        case let .float(d):
            return leaf(.literal(.double(d)))
        case let .op(o):
            switch o {
            case "(":
                if peek()?.isOp(")") == true {
                    _ = next()
                    return leaf(.list([]))
                }
                let e = try expression()
                if peek()?.isOp(",") == true {
                    // A tuple: evaluated as a list.
                    var items = [e]
                    while peek()?.isOp(",") == true {
                        _ = next()
                        if peek()?.isOp(")") == true { break }
                        items.append(try expression())
                    }
                    try expectOp(")")
                    return try node(.list(items.map(\.expr)), items)
                }
                try expectOp(")")
                return e
            case "[":
                var items: [Parsed] = []
                while peek()?.isOp("]") != true {
                    items.append(try expression())
                    if peek()?.isOp(",") == true { _ = next() } else { break }
                }
                try expectOp("]")
                return try node(.list(items.map(\.expr)), items)
            case "{":
                var pairs: [(Parsed, Parsed)] = []
                while peek()?.isOp("}") != true {
                    let key = try expression()
                    try expectOp(":")
                    pairs.append((key, try expression()))
                    if peek()?.isOp(",") == true { _ = next() } else { break }
                }
                try expectOp("}")
                return try node(.dict(pairs.map { ($0.expr, $1.expr) }), pairs.flatMap { [$0, $1] })
            default:
                throw TokenizerError.templateSyntax(message: "unexpected \(t.display)", line: t.line)
            }
        }
    }

    /// Call arguments after '(' up to and including ')': positional, then `name=value`.
    private mutating func parseArguments() throws(TokenizerError) -> ([Parsed], [(String, Parsed)]) {
        var args: [Parsed] = []
        var kwargs: [(String, Parsed)] = []
        while peek()?.isOp(")") != true {
            if let t = peek(), case let .name(n) = t.kind, index + 1 < tokens.count, tokens[index + 1].isOp("=") {
                index += 2
                kwargs.append((n, try expression()))
            } else {
                args.append(try expression())
            }
            if peek()?.isOp(",") == true { _ = next() } else { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    private mutating func parsePostfix(_ base: Parsed) throws(TokenizerError) -> Parsed {
        var expr = base
        while let t = peek() {
            if t.isOp(".") {
                _ = next()
                guard let n = next() else {
                    throw TokenizerError.templateSyntax(message: "an attribute name is expected after '.'", line: t.line)
                }
                switch n.kind {
                case let .name(attr):
                    expr = try node(.attribute(expr.expr, attr), [expr])
                case let .integer(i):
                    expr = try node(.index(expr.expr, .literal(.int(i))), [expr])
                default:
                    throw TokenizerError.templateSyntax(message: "an attribute name is expected after '.'", line: t.line)
                }
            } else if t.isOp("[") {
                _ = next()
                var key: Parsed? = nil
                if peek()?.isOp(":") != true { key = try expression() }
                if peek()?.isOp(":") == true {
                    _ = next()
                    var stop: Parsed? = nil
                    var step: Parsed? = nil
                    if let p = peek(), !p.isOp("]"), !p.isOp(":") { stop = try expression() }
                    if peek()?.isOp(":") == true {
                        _ = next()
                        if peek()?.isOp("]") != true { step = try expression() }
                    }
                    try expectOp("]")
                    expr = try node(.slice(expr.expr, key?.expr, stop?.expr, step?.expr), [expr] + [key, stop, step].compactMap { $0 })
                    continue
                }
                guard let key else { throw TokenizerError.templateSyntax(message: "an index is expected", line: t.line) }
                if peek()?.isOp(",") == true {
                    throw TokenizerError.templateUnsupported(construct: "tuple subscript", line: t.line)
                }
                try expectOp("]")
                expr = try node(.index(expr.expr, key.expr), [expr, key])
            } else if t.isOp("(") {
                switch expr.expr {
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
                expr = try node(.call(expr.expr, args: args.map(\.expr), kwargs: kwargs.map { ($0, $1.expr) }),
                                [expr] + args + kwargs.map(\.1))
            } else {
                break
            }
        }
        return expr
    }
}
