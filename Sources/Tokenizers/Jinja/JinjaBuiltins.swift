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
        let st = try int(step) ?? 1
        guard st != 0 else { throw TokenizerError.templateRender(message: "slice step cannot be zero") }
        func indices(_ n: Int) throws(TokenizerError) -> [Int] {
            func clamp(_ i: Int?, _ dflt: Int) -> Int {
                guard let i else { return dflt }
                let j = i < 0 ? i + n : i
                return st > 0 ? min(max(j, 0), n) : min(max(j, -1), n - 1)
            }
            let a = clamp(try int(start), st > 0 ? 0 : n - 1)
            let b = clamp(try int(stop), st > 0 ? n : -1)
            return Array(stride(from: a, to: b, by: st))
        }
        switch base {
        case let .array(items): return .array(try indices(items.count).map { items[$0] })
        case let .string(s):
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
            return .string(v.text.trimmingCharacters(in: .whitespacesAndNewlines))
        case "length", "count":
            switch v {
            case let .array(a): return .int(a.count)
            case let .dict(d): return .int(d.keys.count)
            case let .string(s): return .int(s.count)
            case .undefined: return .int(0)
            default: throw TokenizerError.templateRender(message: "object of type '\(v.typeName)' has no len()")
            }
        case "tojson":
            var indent: Int? = nil
            if let i = kwargs["indent"] ?? args.first, case let .int(n) = i { indent = n }
            return .string(JinjaInterpreter.toJSON(v, indent: indent, level: 0))
        case "default", "d":
            let fallback = args.first ?? .string("")
            let boolean = (args.count > 1 ? args[1] : kwargs["boolean"] ?? .bool(false)).isTruthy
            if v.isUndefined || (boolean && !v.isTruthy) { return fallback }
            return v
        case "upper": return .string(v.text.uppercased())
        case "lower": return .string(v.text.lowercased())
        case "capitalize": return .string(v.text.prefix(1).uppercased() + v.text.dropFirst().lowercased())
        case "title": return .string(v.text.capitalized)
        case "replace":
            return .string(v.text.replacingOccurrences(of: try str(0), with: try str(1)))
        case "items":
            guard case let .dict(d) = v else {
                if v.isUndefined { return .array([]) }
                throw TokenizerError.templateRender(message: "filter 'items' needs a mapping, got '\(v.typeName)'")
            }
            return .array(zip(d.keys, d.values).map { .array([.string($0), $1]) })
        case "dictsort":
            guard case let .dict(d) = v else { throw TokenizerError.templateRender(message: "filter 'dictsort' needs a mapping") }
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
            return .array(out)
        case "map":
            let items = try iterate(v)
            if let a = kwargs["attribute"], case let .string(attr) = a {
                return .array(try items.map { (i) throws(TokenizerError) in try self.item(of: i, key: .string(attr), description: attr) })
            }
            if let f = args.first, case let .string(filter) = f {
                return .array(try items.map { (i) throws(TokenizerError) in try applyFilter(filter, i, Array(args.dropFirst()), [:]) })
            }
            throw TokenizerError.templateRender(message: "filter 'map' needs attribute= or a filter name")
        case "join":
            let sep = args.first?.text ?? ""
            return .string(try iterate(v).map(\.text).joined(separator: sep))
        case "first":
            return try iterate(v).first ?? .undefined("first of an empty sequence")
        case "last":
            return try iterate(v).last ?? .undefined("last of an empty sequence")
        case "string", "safe":
            return name == "safe" ? v : .string(v.text)
        case "int":
            if let i = v.integer { return .int(i) }
            if case let .double(d) = v { return .int(Int(d)) }
            if case let .string(s) = v { return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0) }
            return .int(0)
        case "float":
            if let d = v.numeric { return .double(d) }
            if case let .string(s) = v { return .double(Double(s) ?? 0) }
            return .double(0)
        case "list":
            return .array(try iterate(v))
        case "reverse":
            if case let .string(s) = v { return .string(String(s.reversed())) }
            return .array(try iterate(v).reversed())
        case "unique":
            var out: [JinjaValue] = []
            for i in try iterate(v) where !out.contains(where: { $0.isEqual(to: i) }) { out.append(i) }
            return .array(out)
        case "abs":
            if case let .int(i) = v { return .int(abs(i)) }
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
            return .int(v.text.split(whereSeparator: { $0.isWhitespace }).count)
        default:
            throw TokenizerError.templateUnsupported(construct: "filter '|\(name)'", line: 0)
        }
    }

    private func sumValues(_ a: JinjaValue, _ b: JinjaValue) throws(TokenizerError) -> JinjaValue {
        if let x = a.integer, let y = b.integer { return .int(x + y) }
        if let x = a.numeric, let y = b.numeric { return .double(x + y) }
        throw TokenizerError.templateRender(message: "unsupported operand types for +: '\(a.typeName)' and '\(b.typeName)'")
    }

    func callFunction(_ name: String, _ args: [JinjaValue], _ kwargs: [String: JinjaValue]) throws(TokenizerError) -> JinjaValue {
        switch name {
        case "raise_exception":
            throw TokenizerError.templateRender(message: "raise_exception: \(args.first?.text ?? "")")
        case "namespace", "dict":
            var d = JinjaDict()
            if let first = args.first, case let .dict(base) = first { d = base }
            for k in kwargs.keys.sorted() { d[k] = kwargs[k] }
            return .dict(d)
        case "range":
            let ints = args.compactMap(\.integer)
            guard ints.count == args.count, (1...3).contains(ints.count) else {
                throw TokenizerError.templateRender(message: "range() takes 1 to 3 integers")
            }
            let (a, b, s) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard s != 0 else { throw TokenizerError.templateRender(message: "range() step must not be zero") }
            return .array(stride(from: a, to: b, by: s).map { .int($0) })
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
        switch (base, method) {
        case let (.string(s), "strip"), let (.string(s), "lstrip"), let (.string(s), "rstrip"):
            let set = arg(0).map { CharacterSet(charactersIn: $0) } ?? .whitespacesAndNewlines
            var scalars = Substring(s).unicodeScalars[...]
            if method != "rstrip" { while let f = scalars.first, set.contains(f) { scalars.removeFirst() } }
            if method != "lstrip" { while let l = scalars.last, set.contains(l) { scalars.removeLast() } }
            return .string(String(String.UnicodeScalarView(scalars)))
        case let (.string(s), "split"):
            if let sep = arg(0) {
                return .array(s.components(separatedBy: sep).map { .string($0) })
            }
            return .array(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
        case let (.string(s), "startswith"):
            return .bool(arg(0).map { s.unicodeScalars.starts(with: $0.unicodeScalars) } ?? false)
        case let (.string(s), "endswith"):
            return .bool(arg(0).map { s.unicodeScalars.reversed().starts(with: $0.unicodeScalars.reversed()) } ?? false)
        case (.string, "upper"), (.string, "lower"), (.string, "title"), (.string, "capitalize"):
            return try applyFilter(method, base, [], [:])
        case let (.string(s), "replace"):
            guard let a = arg(0), let b = arg(1) else { throw TokenizerError.templateRender(message: "replace() needs two strings") }
            return .string(s.replacingOccurrences(of: a, with: b))
        case let (.string(s), "count"):
            guard let a = arg(0), !a.isEmpty else { throw TokenizerError.templateRender(message: "count() needs a string") }
            return .int(s.components(separatedBy: a).count - 1)
        case let (.string(s), "find"):
            guard let a = arg(0) else { throw TokenizerError.templateRender(message: "find() needs a string") }
            guard let r = s.range(of: a) else { return .int(-1) }
            return .int(s.distance(from: s.startIndex, to: r.lowerBound))
        case let (.string(s), "join"):
            guard let list = args.first else { throw TokenizerError.templateRender(message: "join() needs a list") }
            return .string(try iterate(list).map(\.text).joined(separator: s))
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
        switch v {
        case .undefined, .none: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .int(i): return String(i)
        case let .double(d): return JinjaValue.pythonFloat(d)
        case let .string(s): return jsonString(s)
        case let .array(items):
            if items.isEmpty { return "[]" }
            let parts = items.map { toJSON($0, indent: indent, level: level + 1) }
            guard let indent else { return "[" + parts.joined(separator: ", ") + "]" }
            let pad = "\n" + String(repeating: " ", count: indent * (level + 1))
            return "[" + pad + parts.joined(separator: "," + pad) + "\n" + String(repeating: " ", count: indent * level) + "]"
        case let .dict(d):
            if d.keys.isEmpty { return "{}" }
            let parts = zip(d.keys, d.values).map { jsonString($0) + ": " + toJSON($1, indent: indent, level: level + 1) }
            guard let indent else { return "{" + parts.joined(separator: ", ") + "}" }
            let pad = "\n" + String(repeating: " ", count: indent * (level + 1))
            return "{" + pad + parts.joined(separator: "," + pad) + "\n" + String(repeating: " ", count: indent * level) + "}"
        }
    }

    static func jsonString(_ s: String) -> String { JSONText.quote(s) }

}
