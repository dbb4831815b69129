import Foundation

/// The filters, functions and methods the interpreter knows; the parser rejects other names with
/// an error naming them.
enum JinjaBuiltins {
    static let filters: Set<String> = [
        "trim", "length", "count", "tojson", "default", "d", "upper", "lower", "replace", "items", "selectattr",
        "rejectattr", "select", "reject", "map", "join", "first", "last", "string", "int", "float", "list",
        "capitalize", "title", "reverse", "abs", "safe", "unique", "dictsort", "sum", "min", "max", "wordcount",
    ]
    static let functions: Set<String> = ["raise_exception", "namespace", "range", "dict", "strftime_now"]
    static let methods: Set<String> = [
        "strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower", "replace", "title",
        "capitalize", "items", "keys", "values", "get", "count", "find", "join",
    ]
}

extension JinjaInterpreter {
    static func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue]) throws(TokenizerError) -> Bool {
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "number":
            switch v {
            case .int, .double, .bool: return true
            default: return false
            }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "mapping": if case .dict = v { return true } else { return false }
        case "sequence", "iterable":
            switch v {
            case .array, .dict, .string: return true
            default: return false
            }
        case "even", "odd":
            guard let i = v.integer else {
                throw TokenizerError.templateRender(message: "test '\(name)' needs an integer, got '\(v.typeName)'")
            }
            return (i % 2 == 0) == (name == "even")
        case "equalto", "eq", "==", "sameas":
            guard let other = args.first else { throw TokenizerError.templateRender(message: "test '\(name)' needs an argument") }
            return v.isEqual(to: other)
        case "ne", "!=":
            guard let other = args.first else { throw TokenizerError.templateRender(message: "test '\(name)' needs an argument") }
            return !v.isEqual(to: other)
        default:
            throw TokenizerError.templateUnsupported(construct: "test '\(name)'", line: 0)
        }
    }

    static func slice(_ base: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws(TokenizerError) -> JinjaValue {
        func int(_ v: JinjaValue?) throws(TokenizerError) -> Int? {
            guard let v else { return nil }
            if case .none = v { return nil }
            guard let i = v.integer else { throw TokenizerError.templateRender(message: "slice indices must be integers, got '\(v.typeName)'") }
            return i
        }
        let rawStep = try int(step) ?? 1
        guard rawStep != 0 else { throw TokenizerError.templateRender(message: "slice step cannot be zero") }
        func indices(_ n: Int) throws(TokenizerError) -> [Int] {
            // A step longer than the sequence takes at most one item: clamping it keeps the
            // index arithmetic far from overflow and changes nothing else.
            let st = max(-(n + 1), min(n + 1, rawStep))
            func clamp(_ i: Int?, _ dflt: Int) -> Int {
                guard let i else { return dflt }
                let j = i < 0 ? max(i, -n - 1) + n : i
                return st > 0 ? min(max(j, 0), n) : min(max(j, -1), n - 1)
            }
            let a = clamp(try int(start), st > 0 ? 0 : n - 1)
            let b = clamp(try int(stop), st > 0 ? n : -1)
            return Array(stride(from: a, to: b, by: st))
        }
        switch base {
        case let .array(items): return .array(try indices(items.count).map { items[$0] })
        case let .string(s):
            if rawStep == 1 {
                // Contiguous: walk to the bounds and copy the substring, not character by character.
                let n = s.count
                let range = try indices(n)
                guard let first = range.first, let last = range.last else { return .string("") }
                let lo = s.index(s.startIndex, offsetBy: first)
                let hi = s.index(lo, offsetBy: last - first + 1)
                return .string(String(s[lo..<hi]))
            }
            let chars = Array(s)
            return .string(String(try indices(chars.count).map { chars[$0] }))
        default:
            throw TokenizerError.templateRender(message: "'\(base.typeName)' object is not subscriptable with a slice")
        }
    }

    func applyFilter(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [String: JinjaValue]) throws(TokenizerError) -> JinjaValue {
        func str(_ i: Int) throws(TokenizerError) -> String {
            guard i < args.count, case let .string(s) = args[i] else {
                throw TokenizerError.templateRender(message: "filter '\(name)' needs a string argument \(i + 1)")
            }
            return s
        }
        switch name {
        case "trim":
            return .string(try text(v).trimmingCharacters(in: .whitespacesAndNewlines))
        case "length", "count":
            switch v {
            case let .array(a): return .int(a.count)
            case let .dict(d): return .int(d.keys.count)
            case let .string(s):
                try budget.scan(s.utf8.count)
                return .int(s.count)
            case .undefined: return .int(0)
            default: throw TokenizerError.templateRender(message: "object of type '\(v.typeName)' has no len()")
            }
        case "tojson":
            var indent: Int? = nil
            if let i = kwargs["indent"] ?? args.first, case let .int(n) = i { indent = n }
            var out = ""
            guard JinjaInterpreter.writeJSON(v, indent: indent.map { max(0, $0) }, level: 0, to: &out,
                                             limit: ChatTemplateSandbox.maxStringBytes) else {
                throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
            }
            return try built(out)
        case "default", "d":
            let fallback = args.first ?? .string("")
            let boolean = (args.count > 1 ? args[1] : kwargs["boolean"] ?? .bool(false)).isTruthy
            if v.isUndefined || (boolean && !v.isTruthy) { return fallback }
            return v
        case "upper": return try built(try text(v).uppercased())
        case "lower": return try built(try text(v).lowercased())
        case "capitalize":
            let t = try text(v)
            return try built(t.prefix(1).uppercased() + t.dropFirst().lowercased())
        case "title": return try built(try text(v).capitalized)
        case "replace":
            return try replace(try text(v), try str(0), try str(1))
        case "items":
            guard case let .dict(d) = v else {
                if v.isUndefined { return .array([]) }
                throw TokenizerError.templateRender(message: "filter 'items' needs a mapping, got '\(v.typeName)'")
            }
            try budget.checkDepth(of: [.array(d.values)])
            try budget.list(items: 3 * d.keys.count)
            return .array(zip(d.keys, d.values).map { .array([.string($0), $1]) })
        case "dictsort":
            guard case let .dict(d) = v else { throw TokenizerError.templateRender(message: "filter 'dictsort' needs a mapping") }
            try budget.checkDepth(of: [.array(d.values)])
            try budget.list(items: 3 * d.keys.count)
            return .array(zip(d.keys, d.values).sorted { $0.0.lowercased() < $1.0.lowercased() }.map { .array([.string($0), $1]) })
        case "selectattr", "rejectattr", "select", "reject":
            let items = try iterate(v)
            let byAttribute = name.hasSuffix("attr")
            var rest = args
            var attribute: String? = nil
            if byAttribute {
                attribute = try str(0)
                rest.removeFirst()
            }
            var testName: String? = nil
            if let first = rest.first {
                guard case let .string(t) = first else { throw TokenizerError.templateRender(message: "filter '\(name)' needs a test name") }
                testName = t
                rest.removeFirst()
            }
            var out: [JinjaValue] = []
            for item in items {
                let subject = try attribute.map { (a) throws(TokenizerError) in try self.item(of: item, key: .string(a), description: a) } ?? item
                let passed = try testName.map { (t) throws(TokenizerError) in try JinjaInterpreter.test(t, subject, rest) } ?? subject.isTruthy
                if passed == name.hasPrefix("select") { out.append(item) }
            }
            return try built(out)
        case "map":
            let items = try iterate(v)
            if let a = kwargs["attribute"], case let .string(attr) = a {
                return try built(try items.map { (i) throws(TokenizerError) in try self.item(of: i, key: .string(attr), description: attr) })
            }
            if let f = args.first, case let .string(filter) = f {
                return try built(try items.map { (i) throws(TokenizerError) in try applyFilter(filter, i, Array(args.dropFirst()), [:]) })
            }
            throw TokenizerError.templateRender(message: "filter 'map' needs attribute= or a filter name")
        case "join":
            return try join(try iterate(v), separator: try args.first.map { (a) throws(TokenizerError) in try text(a) } ?? "")
        case "first":
            return try iterate(v).first ?? .undefined("first of an empty sequence")
        case "last":
            return try iterate(v).last ?? .undefined("last of an empty sequence")
        case "string", "safe":
            return name == "safe" ? v : .string(try text(v))
        case "int":
            // jinja2's do_int: int(value), else int(float(value)), else the default 0; NaN
            // gives 0, infinity and values outside 64 bits are errors (jinja2 raises
            // OverflowError for infinity and has unbounded integers).
            if let i = v.integer { return .int(i) }
            if case let .double(d) = v {
                if d.isNaN { return .int(0) }
                return .int(try JinjaInteger.fromDouble(d))
            }
            if case let .string(raw) = v {
                let s = raw.trimmingCharacters(in: .whitespacesAndNewlines)
                if let i = Int(s) { return .int(i) }
                let digits = s.hasPrefix("-") || s.hasPrefix("+") ? s.dropFirst() : Substring(s)
                if !digits.isEmpty && digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
                    throw JinjaInteger.overflow("int(\(v.shortRepr()))")
                }
                if let d = Double(s), !d.isNaN { return .int(try JinjaInteger.fromDouble(d)) }
            }
            return .int(0)
        case "float":
            if let d = v.numeric { return .double(d) }
            if case let .string(s) = v { return .double(Double(s) ?? 0) }
            return .double(0)
        case "list":
            return try built(try iterate(v))
        case "reverse":
            if case let .string(s) = v { return .string(String(s.reversed())) }
            return try built(try iterate(v).reversed())
        case "unique":
            // Quadratic: the comparisons count as loop iterations.
            var out: [JinjaValue] = []
            for i in try iterate(v) {
                try budget.iterate(out.count)
                if !out.contains(where: { $0.isEqual(to: i) }) { out.append(i) }
            }
            return try built(out)
        case "abs":
            if case let .int(i) = v {
                guard i != .min else { throw JinjaInteger.overflow("abs(\(i))") }
                return .int(abs(i))
            }
            if case let .double(d) = v { return .double(abs(d)) }
            throw TokenizerError.templateRender(message: "bad operand type for abs(): '\(v.typeName)'")
        case "sum":
            var total = JinjaValue.int(0)
            for i in try iterate(v) { total = try sumValues(total, i) }
            return total
        case "min", "max":
            let items = try iterate(v)
            guard var best = items.first else { return .undefined("\(name) of an empty sequence") }
            for i in items.dropFirst() {
                guard let a = i.numeric, let b = best.numeric else { break }
                if (name == "min" && a < b) || (name == "max" && a > b) { best = i }
            }
            return best
        case "wordcount":
            return .int(try text(v).split(whereSeparator: { $0.isWhitespace }).count)
        default:
            throw TokenizerError.templateUnsupported(construct: "filter '|\(name)'", line: 0)
        }
    }

    private func sumValues(_ a: JinjaValue, _ b: JinjaValue) throws(TokenizerError) -> JinjaValue {
        if let x = a.integer, let y = b.integer { return .int(try JinjaInteger.add(x, y)) }
        if let x = a.numeric, let y = b.numeric { return .double(x + y) }
        throw TokenizerError.templateRender(message: "unsupported operand types for +: '\(a.typeName)' and '\(b.typeName)'")
    }

    func callFunction(_ name: String, _ args: [JinjaValue], _ kwargs: [String: JinjaValue]) throws(TokenizerError) -> JinjaValue {
        switch name {
        case "raise_exception":
            throw TokenizerError.templateRender(message: "raise_exception: \(args.first.map { (a) -> String in if case let .string(m) = a { return m } else { return a.shortRepr() } } ?? "")")
        case "namespace", "dict":
            var d = JinjaDict()
            if let first = args.first, case let .dict(base) = first { d = base }
            for k in kwargs.keys.sorted() { d[k] = kwargs[k] }
            try budget.checkDepth(of: d.values)
            try budget.list(items: d.keys.count)
            return .dict(d)
        case "range":
            let ints = args.compactMap(\.integer)
            guard ints.count == args.count, (1...3).contains(ints.count) else {
                throw TokenizerError.templateRender(message: "range() takes 1 to 3 integers")
            }
            let (a, b, s) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard s != 0 else { throw TokenizerError.templateRender(message: "range() step must not be zero") }
            guard JinjaInteger.rangeCount(a, b, s) <= Int128(ChatTemplateSandbox.maxRange) else {
                throw TokenizerError.templateLimit(what: "the length of range()", limit: ChatTemplateSandbox.maxRange, line: 0)
            }
            // Built by counting, not by stride, whose last step may overflow near Int.max.
            let count = Int(JinjaInteger.rangeCount(a, b, s))
            try budget.list(items: count)
            return .array((0..<count).map { .int(a &+ $0 &* s) })
        case "strftime_now":
            guard let f = args.first, case let .string(format) = f else {
                throw TokenizerError.templateRender(message: "strftime_now() needs a format string")
            }
            var t = time(nil)
            var tmValue = tm()
            localtime_r(&t, &tmValue)
            var buffer = [Int8](repeating: 0, count: 256)
            let n = strftime(&buffer, buffer.count, format, &tmValue)
            return .string(String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))
        default:
            throw TokenizerError.templateUnsupported(construct: "function call '\(name)(…)'", line: 0)
        }
    }

    func callMethod(_ base: JinjaValue, _ method: String, _ args: [JinjaValue], _ kwargs: [String: JinjaValue]) throws(TokenizerError) -> JinjaValue {
        func arg(_ i: Int) -> String? {
            guard i < args.count, case let .string(s) = args[i] else { return nil }
            return s
        }
        try budget.scan(base)
        switch (base, method) {
        case let (.string(s), "strip"), let (.string(s), "lstrip"), let (.string(s), "rstrip"):
            let set = arg(0).map { CharacterSet(charactersIn: $0) } ?? .whitespacesAndNewlines
            var scalars = Substring(s).unicodeScalars[...]
            if method != "rstrip" { while let f = scalars.first, set.contains(f) { scalars.removeFirst() } }
            if method != "lstrip" { while let l = scalars.last, set.contains(l) { scalars.removeLast() } }
            return .string(String(String.UnicodeScalarView(scalars)))
        case let (.string(s), "split"):
            if let sep = arg(0) {
                guard !sep.isEmpty else { throw TokenizerError.templateRender(message: "split(): empty separator") }
                return try built(s.components(separatedBy: sep).map { .string($0) })
            }
            return try built(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
        case let (.string(s), "startswith"):
            return .bool(arg(0).map { s.unicodeScalars.starts(with: $0.unicodeScalars) } ?? false)
        case let (.string(s), "endswith"):
            return .bool(arg(0).map { s.unicodeScalars.reversed().starts(with: $0.unicodeScalars.reversed()) } ?? false)
        case (.string, "upper"), (.string, "lower"), (.string, "title"), (.string, "capitalize"):
            return try applyFilter(method, base, [], [:])
        case let (.string(s), "replace"):
            guard let a = arg(0), let b = arg(1) else { throw TokenizerError.templateRender(message: "replace() needs two strings") }
            return try replace(s, a, b)
        case let (.string(s), "count"):
            guard let a = arg(0), !a.isEmpty else { throw TokenizerError.templateRender(message: "count() needs a string") }
            return .int(s.components(separatedBy: a).count - 1)
        case let (.string(s), "find"):
            guard let a = arg(0) else { throw TokenizerError.templateRender(message: "find() needs a string") }
            guard let r = s.range(of: a) else { return .int(-1) }
            return .int(s.distance(from: s.startIndex, to: r.lowerBound))
        case let (.string(s), "join"):
            guard let list = args.first else { throw TokenizerError.templateRender(message: "join() needs a list") }
            return try join(try iterate(list), separator: s)
        case (.dict, "items"):
            return try applyFilter("items", base, [], [:])
        case let (.dict(d), "keys"):
            return .array(d.keys.map { .string($0) })
        case let (.dict(d), "values"):
            return .array(d.values)
        case let (.dict(d), "get"):
            guard let k = arg(0) else { throw TokenizerError.templateRender(message: "get() needs a string key") }
            return d[k] ?? (args.count > 1 ? args[1] : .none)
        default:
            throw TokenizerError.templateRender(message: "'\(base.typeName)' object has no method '\(method)'")
        }
    }

    /// Python `json.dumps(value, ensure_ascii=False, indent=indent)` (what transformers' `tojson` does).
    static func toJSON(_ v: JinjaValue, indent: Int?, level: Int) -> String {
        var out = ""
        _ = writeJSON(v, indent: indent.map { max(0, $0) }, level: level, to: &out, limit: .max)
        return out
    }

    /// Appends `toJSON` to `out`, stopping (and returning false) as soon as `out` would hold more
    /// than `limit` UTF-8 bytes. `indent` is not negative.
    static func writeJSON(_ v: JinjaValue, indent: Int?, level: Int, to out: inout String, limit: Int) -> Bool {
        func put(_ s: String) -> Bool {
            guard s.utf8.count <= limit - out.utf8.count else { return false }
            out += s
            return true
        }
        /// A newline and the indentation of `depth` levels (or ", " / ": " without indent).
        func newline(_ depth: Int) -> Bool {
            guard let indent else { return true }
            let (spaces, overflow) = indent.multipliedReportingOverflow(by: depth)
            guard !overflow, spaces < limit - out.utf8.count else { return false }
            return put("\n" + String(repeating: " ", count: spaces))
        }
        func container<S: Sequence>(_ open: String, _ close: String, _ items: S, _ write: (S.Element) -> Bool) -> Bool {
            guard put(open) else { return false }
            var first = true
            for item in items {
                if !first { guard put(",") else { return false } }
                if !first && indent == nil { guard put(" ") else { return false } }
                first = false
                guard newline(level + 1), write(item) else { return false }
            }
            return newline(level) && put(close)
        }
        switch v {
        case .undefined, .none: return put("null")
        case let .bool(b): return put(b ? "true" : "false")
        case let .int(i): return put(String(i))
        case let .double(d): return put(JinjaValue.pythonFloat(d))
        case let .string(s):
            guard s.utf8.count <= limit - out.utf8.count else { return false }
            return put(jsonString(s))
        case let .array(items):
            if items.isEmpty { return put("[]") }
            return container("[", "]", items) { writeJSON($0, indent: indent, level: level + 1, to: &out, limit: limit) }
        case let .dict(d):
            if d.keys.isEmpty { return put("{}") }
            return container("{", "}", zip(d.keys, d.values)) { (k, value) in
                k.utf8.count <= limit - out.utf8.count && put(jsonString(k)) && put(": ")
                    && writeJSON(value, indent: indent, level: level + 1, to: &out, limit: limit)
            }
        }
    }

    /// Python `s.replace(old, new)`, refused before it is built when the result would be over
    /// the string limit.
    func replace(_ s: String, _ old: String, _ new: String) throws(TokenizerError) -> JinjaValue {
        if old.isEmpty {
            // Python inserts `new` between every code point and at both ends.
            let count = s.unicodeScalars.count + 1
            let (grow, o) = new.utf8.count.multipliedReportingOverflow(by: count)
            if o || grow > ChatTemplateSandbox.maxStringBytes - s.utf8.count {
                throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
            }
            var out = new
            for scalar in s.unicodeScalars {
                out.unicodeScalars.append(scalar)
                out += new
            }
            return try built(out)
        }
        // A search of the UTF-8 bytes (the same matches as of code points: UTF-8 is
        // self-synchronizing), in linear time, then the result's size checked before it is built.
        let h = Array(s.utf8), p = Array(old.utf8), r = Array(new.utf8)
        let starts = JinjaInterpreter.occurrences(of: p, in: h)
        let (grow, o) = (r.count - p.count).multipliedReportingOverflow(by: starts.count)
        if o || grow > ChatTemplateSandbox.maxStringBytes - h.count {
            throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: ChatTemplateSandbox.maxStringBytes, line: 0)
        }
        if starts.isEmpty { return .string(s) }
        var out: [UInt8] = []
        out.reserveCapacity(h.count + grow)
        var at = 0
        for start in starts {
            out.append(contentsOf: h[at..<start])
            out.append(contentsOf: r)
            at = start + p.count
        }
        out.append(contentsOf: h[at...])
        return try built(String(decoding: out, as: UTF8.self))
    }

    /// The items' text joined by `separator`, refused as soon as it would be over the string limit.
    func join(_ items: [JinjaValue], separator: String) throws(TokenizerError) -> JinjaValue {
        var out = ""
        let limit = ChatTemplateSandbox.maxStringBytes
        for (i, item) in items.enumerated() {
            let t = try text(item)
            guard (i > 0 ? separator.utf8.count : 0) + t.utf8.count <= limit - out.utf8.count else {
                throw TokenizerError.templateLimit(what: "the length of a string in bytes", limit: limit, line: 0)
            }
            if i > 0 { out += separator }
            out += t
        }
        return try built(out)
    }

    static func jsonString(_ s: String) -> String {
        // Most strings need no escape: one scan of the bytes, then a copy (as JSONText.quote would give).
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + s + "\""
        }
        return JSONText.quote(s)
    }

}
