import Foundation

/// A value of the Jinja interpreter, with Python/Jinja semantics for truthiness, equality and
/// conversion to text.
indirect enum JinjaValue: Sendable {
    /// An undefined name or missing key (renders as "", is falsy, iterates as empty); the
    /// string says what was looked up, for error messages.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    /// An ordered mapping with string keys.
    case dict(JinjaDict)

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .array(a): return !a.isEmpty
        case let .dict(d): return !d.keys.isEmpty
        }
    }

    /// The Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .array: return "list"
        case .dict: return "dict"
        }
    }

    /// Python `str()` (what `{{ }}` prints); undefined prints nothing.
    var text: String {
        switch self {
        case .undefined: return ""
        case let .string(s): return s
        default: return repr
        }
    }

    /// Python `repr()`.
    var repr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return JinjaValue.pythonFloat(d)
        case let .string(s): return JinjaValue.pythonRepr(s)
        case .array, .dict:
            var out = ""
            _ = writeRepr(to: &out, limit: .max)
            return out
        }
    }

    /// Appends Python `repr()` to `out`, stopping (and returning false) as soon as `out` would
    /// hold more than `limit` UTF-8 bytes.
    func writeRepr(to out: inout String, limit: Int) -> Bool {
        func put(_ s: String) -> Bool {
            guard s.utf8.count <= limit - out.utf8.count else { return false }
            out += s
            return true
        }
        switch self {
        case let .array(a):
            guard put("[") else { return false }
            for (i, item) in a.enumerated() {
                if i > 0 { guard put(", ") else { return false } }
                guard item.writeRepr(to: &out, limit: limit) else { return false }
            }
            return put("]")
        case let .dict(d):
            guard put("{") else { return false }
            for (i, (k, v)) in zip(d.keys, d.values).enumerated() {
                if i > 0 { guard put(", ") else { return false } }
                guard k.utf8.count <= limit - out.utf8.count, put(JinjaValue.pythonRepr(k)), put(": "),
                      v.writeRepr(to: &out, limit: limit) else { return false }
            }
            return put("}")
        case let .string(s):
            guard s.utf8.count <= limit - out.utf8.count else { return false }
            return put(JinjaValue.pythonRepr(s))
        default:
            return put(repr)
        }
    }

    /// `repr()` cut to about `maxBytes` bytes (with "…"), for error messages.
    func shortRepr(maxBytes: Int = 80) -> String {
        var out = ""
        return writeRepr(to: &out, limit: maxBytes) ? out : out + "…"
    }

    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == d.rounded() && abs(d) < 1e16 { return String(format: "%.1f", d) }
        return "\(d)"
    }

    static func pythonRepr(_ s: String) -> String {
        // Most strings need no escape: one scan of the bytes, then a copy.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "'") }) {
            return "'" + s + "'"
        }
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote {
                    out += "\\" + String(quote)
                } else if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\x" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append(quote)
        return out
    }

    /// Python `==` (numbers compare by value across int, float and bool).
    func isEqual(to other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(a), .string(b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case let (.array(a), .array(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.isEqual(to: $1) }
        case let (.dict(a), .dict(b)):
            guard a.keys.count == b.keys.count else { return false }
            for (k, v) in zip(a.keys, a.values) {
                guard let w = b[k], v.isEqual(to: w) else { return false }
            }
            return true
        default:
            if let x = numeric, let y = other.numeric { return x == y }
            return false
        }
    }

    /// The value as a number when it is int, float or bool.
    var numeric: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }

    /// The value as an integer when it is int or bool.
    var integer: Int? {
        switch self {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }
}

/// An ordered string-keyed mapping (keys compared by exact scalars).
struct JinjaDict: Sendable {
    var keys: [String] = []
    var values: [JinjaValue] = []

    init() {}

    init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    subscript(key: String) -> JinjaValue? {
        get {
            for (i, k) in keys.enumerated() where k.unicodeScalars.elementsEqual(key.unicodeScalars) {
                return values[i]
            }
            return nil
        }
        set {
            if let i = keys.firstIndex(where: { $0.unicodeScalars.elementsEqual(key.unicodeScalars) }) {
                if let newValue { values[i] = newValue } else {
                    keys.remove(at: i)
                    values.remove(at: i)
                }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }
}
