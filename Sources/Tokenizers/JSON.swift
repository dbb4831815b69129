import Foundation

/// A parsed JSON value: the one JSON tree of the package (tokenizer files, safetensors headers and
/// indexes, config.json). Objects keep their keys in file order, duplicates included, and compare
/// keys by their exact Unicode scalars (a Swift `Dictionary<String, _>` would merge canonically
/// equivalent keys, which is wrong for vocabularies and tensor names). `JSONParser` keeps that
/// property; decoding through Foundation's `Decoder` (`Decodable`) cannot, as Foundation has
/// already merged such keys into its own dictionaries.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// A short rendering for error messages: scalars as written, small arrays of scalars in full.
    public var brief: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return String(value)
        case .integer(let value): return String(value)
        case .double(let value): return String(value)
        case .string(let value): return JSONText.quote(value)
        case .array(let values):
            let scalars = values.allSatisfy {
                switch $0 {
                case .array, .object: return false
                default: return true
                }
            }
            if scalars && values.count <= 8 { return "[" + values.map(\.brief).joined(separator: ", ") + "]" }
            return "an array of \(values.count) elements"
        case .object: return "an object"
        }
    }

    /// The value at `path` (object keys and array indices), if there is one.
    public func value(at path: [any CodingKey]) -> JSONValue? {
        var current = self
        for key in path {
            switch current {
            case .object(let fields):
                guard let next = fields[key.stringValue] else { return nil }
                current = next
            case .array(let elements):
                guard let index = key.intValue, elements.indices.contains(index) else { return nil }
                current = elements[index]
            default:
                return nil
            }
        }
        return current
    }
}

extension JSONValue: Decodable {
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Decodes any JSON value from a Foundation decoder (for a field of free shape inside a
    /// `Decodable` type). Object keys come in the decoder's order.
    public init(from decoder: any Swift.Decoder) throws {
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var object = JSONObject()
            for key in keyed.allKeys {
                object.keys.append(key.stringValue)
                object.values.append(try keyed.decode(JSONValue.self, forKey: key))
            }
            self = .object(object)
            return
        }
        if var unkeyed = try? decoder.unkeyedContainer() {
            var array: [JSONValue] = []
            while !unkeyed.isAtEnd { array.append(try unkeyed.decode(JSONValue.self)) }
            self = .array(array)
            return
        }
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else {
            self = .string(try container.decode(String.self))
        }
    }
}

/// An ordered JSON object; a key written twice is kept twice (see `duplicateKey`).
public struct JSONObject: Sendable, Equatable {
    public var keys: [String] = []
    public var values: [JSONValue] = []

    public init() {}

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// The entries in file order.
    public var entries: Zip2Sequence<[String], [JSONValue]> { zip(keys, values) }

    /// Looks a key up by exact scalars (the first occurrence; linear: objects other than
    /// vocabularies are small, and vocabularies are iterated, not searched).
    public subscript(key: String) -> JSONValue? {
        for (i, k) in keys.enumerated() where k.unicodeScalars.elementsEqual(key.unicodeScalars) {
            return values[i]
        }
        return nil
    }

    /// The first key that occurs more than once (exact scalars), if any.
    public var duplicateKey: String? {
        var seen = Set<[UInt32]>()
        for key in keys where !seen.insert(key.unicodeScalars.map(\.value)).inserted { return key }
        return nil
    }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.keys.count == b.keys.count && a.values == b.values
            && zip(a.keys, b.keys).allSatisfy { $0.unicodeScalars.elementsEqual($1.unicodeScalars) }
    }
}

/// A strict JSON parser (RFC 8259) over UTF-8 bytes, with line/column error positions and a
/// nesting limit of 512.
public struct JSONParser {
    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public let message: String
        public var description: String { message }
    }

    private let bytes: [UInt8]
    private var pos = 0
    private var depth = 0

    public static func parse(_ data: Data) throws(SyntaxError) -> JSONValue {
        var parser = JSONParser(bytes: [UInt8](data))
        return try parser.parseDocument()
    }

    private init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    private mutating func parseDocument() throws(SyntaxError) -> JSONValue {
        // A UTF-8 byte order mark is tolerated.
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { pos = 3 }
        skipWhitespace()
        if pos >= bytes.count { throw fail("the file is empty") }
        let value = try parseValue()
        skipWhitespace()
        if pos < bytes.count { throw fail("unexpected \(describe(bytes[pos])) after the top-level value") }
        return value
    }

    private func fail(_ message: String) -> SyntaxError {
        var line = 1
        var column = 1
        var i = 0
        while i < min(pos, bytes.count) {
            if bytes[i] == 0x0A {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                column += 1
            }
            i += 1
        }
        return SyntaxError(message: "\(message) at line \(line), column \(column)")
    }

    private func describe(_ byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
        return "byte 0x" + String(byte, radix: 16, uppercase: true)
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws(SyntaxError) -> JSONValue {
        guard pos < bytes.count else { throw fail("unexpected end of file") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected \(describe(bytes[pos])) where a value was expected")
        }
    }

    private mutating func expectWord(_ word: StaticString) throws(SyntaxError) {
        let n = word.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw fail("unexpected end of file") }
        let p = word.utf8Start
        for i in 0..<n where bytes[pos + i] != p[i] {
            throw fail("invalid literal (expected '\(word)')")
        }
        pos += n
    }

    private mutating func enter() throws(SyntaxError) {
        depth += 1
        if depth > 512 { throw fail("nesting deeper than 512 levels") }
    }

    private mutating func parseObject() throws(SyntaxError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var object = JSONObject()
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") {
            pos += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unexpected end of file inside an object") }
            guard bytes[pos] == UInt8(ascii: "\"") else {
                throw fail("expected a string key, found \(describe(bytes[pos]))")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else {
                throw fail("expected ':' after an object key")
            }
            pos += 1
            skipWhitespace()
            let value = try parseValue()
            object.keys.append(key)
            object.values.append(value)
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unexpected end of file inside an object") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return .object(object)
            }
            throw fail("expected ',' or '}' in an object, found \(describe(bytes[pos]))")
        }
    }

    private mutating func parseArray() throws(SyntaxError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var array: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") {
            pos += 1
            return .array(array)
        }
        while true {
            skipWhitespace()
            array.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unexpected end of file inside an array") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "]") {
                pos += 1
                return .array(array)
            }
            throw fail("expected ',' or ']' in an array, found \(describe(bytes[pos]))")
        }
    }

    private mutating func parseNumber() throws(SyntaxError) -> JSONValue {
        let start = pos
        var isInteger = true
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number") }
        if bytes[pos] == UInt8(ascii: "0") {
            pos += 1
        } else {
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            isInteger = false
            pos += 1
            guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number: digits expected after '.'") }
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            isInteger = false
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < bytes.count, isDigit(bytes[pos]) else { throw fail("invalid number: digits expected in the exponent") }
            while pos < bytes.count, isDigit(bytes[pos]) { pos += 1 }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if isInteger, let value = Int(text) { return .integer(value) }
        guard let value = Double(text) else { throw fail("invalid number '\(text)'") }
        return .double(value)
    }

    private func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(b - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private mutating func parseHex4() throws(SyntaxError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("unexpected end of file in a \\u escape") }
        var value: UInt32 = 0
        for i in 0..<4 {
            guard let h = hexValue(bytes[pos + i]) else { throw fail("invalid \\u escape") }
            value = value << 4 | h
        }
        pos += 4
        return value
    }

    private mutating func parseString() throws(SyntaxError) -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path: no escapes.
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let s = String(decoding: bytes[start..<pos], as: UTF8.self)
                pos += 1
                return s
            }
            if b == UInt8(ascii: "\\") { break }
            if b < 0x20 { throw fail("unescaped control character in a string") }
            pos += 1
        }
        var out = [UInt8](bytes[start..<pos])
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                pos += 1
                return String(decoding: out, as: UTF8.self)
            }
            if b < 0x20 { throw fail("unescaped control character in a string") }
            if b != UInt8(ascii: "\\") {
                out.append(b)
                pos += 1
                continue
            }
            pos += 1
            guard pos < bytes.count else { break }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if code >= 0xD800 && code < 0xDC00 {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                        pos += 2
                        let low = try parseHex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw fail("invalid surrogate pair in a \\u escape") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        throw fail("lone surrogate in a \\u escape")
                    }
                } else if code >= 0xDC00 && code < 0xE000 {
                    throw fail("lone surrogate in a \\u escape")
                }
                let scalar = Unicode.Scalar(code)!
                UTF8.encode(scalar) { out.append($0) }
            default:
                throw fail("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        throw fail("unterminated string")
    }
}

/// A JSON value together with where it came from, for typed access with precise errors.
struct JSONField {
    let file: String
    let path: String
    let value: JSONValue?

    init(file: String, path: String, value: JSONValue?) {
        self.file = file
        self.path = path
        self.value = value
    }

    /// True when the field is absent or null.
    var isNull: Bool {
        if let value, case .null = value { return true }
        return value == nil
    }

    func error(_ expected: String) -> TokenizerError {
        let found = value.map { "\($0.typeName)" } ?? "nothing (the field is missing)"
        return .invalidField(file: file, field: path.isEmpty ? "(top level)" : path, expected: "\(expected), found \(found)")
    }

    func child(_ key: String) -> JSONField {
        var v: JSONValue? = nil
        if let value, case let .object(o) = value { v = o[key] }
        return JSONField(file: file, path: path.isEmpty ? key : "\(path).\(key)", value: v)
    }

    func string() throws(TokenizerError) -> String {
        if let value, case let .string(s) = value { return s }
        throw error("a string")
    }

    func optionalString() throws(TokenizerError) -> String? {
        if isNull { return nil }
        return try string()
    }

    func int() throws(TokenizerError) -> Int {
        if let value {
            if case let .integer(i) = value { return i }
            if case let .double(d) = value, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
        }
        throw error("an integer")
    }

    func optionalInt() throws(TokenizerError) -> Int? {
        if isNull { return nil }
        return try int()
    }

    func optionalDouble() throws(TokenizerError) -> Double? {
        if isNull { return nil }
        if let value {
            if case let .integer(i) = value { return Double(i) }
            if case let .double(d) = value { return d }
        }
        throw error("a number")
    }

    func bool(default defaultValue: Bool) throws(TokenizerError) -> Bool {
        if isNull { return defaultValue }
        if let value, case let .bool(b) = value { return b }
        throw error("a boolean")
    }

    func array() throws(TokenizerError) -> [JSONField] {
        if let value, case let .array(a) = value {
            return a.enumerated().map { JSONField(file: file, path: "\(path)[\($0.offset)]", value: $0.element) }
        }
        throw error("an array")
    }

    func object() throws(TokenizerError) -> JSONObject {
        if let value, case let .object(o) = value { return o }
        throw error("an object")
    }

    /// The object's entries as fields, in file order.
    func entries() throws(TokenizerError) -> [(key: String, field: JSONField)] {
        let o = try object()
        return (0..<o.count).map { (o.keys[$0], JSONField(file: file, path: "\(path).\(o.keys[$0])", value: o.values[$0])) }
    }
}

extension JSONParser {
    /// Parses `data`, reporting a syntax error as `TokenizerError.notJSON` naming `file`.
    static func parse(_ data: Data, file: String) throws(TokenizerError) -> JSONValue {
        do {
            return try parse(data)
        } catch {
            throw TokenizerError.notJSON(file: file, detail: error.message)
        }
    }
}

/// JSON string literals, for every module that writes JSON by hand (tokenizer output, Jinja's
/// `tojson`, safetensors headers, workspace manifests).
public enum JSONText {
    /// `string` as a JSON string literal: quotes, backslashes and control characters escaped,
    /// everything else (non-ASCII included) as is, as Python's json.dumps(ensure_ascii=False) does.
    public static func quote(_ string: String) -> String {
        var out = "\""
        for u in string.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

/// Foundation's JSONDecoder and JSONSerialization crash (a trap inside JSONError.SourceLocation) on a
/// document that nests past their 512-level limit: 513 '[' in a row kills the process (swift-foundation
/// of Swift 6.3; found by the config_json fuzzer). Bytes from outside pass this check before they
/// reach Foundation, so such a document is an error naming the problem instead.
public enum FoundationJSONGuard {
    /// Deeper than any config, request or dataset line we read; well inside Foundation's limit.
    public static let maxDepth = 256

    /// Whether `check` passes.
    public static func accepts(_ data: Data) -> Bool { (try? check(data)) != nil }

    /// Throws when arrays and objects (outside strings) nest deeper than `maxDepth`.
    public static func check(_ data: Data) throws(JSONParser.SyntaxError) {
        var depth = 0, inString = false, escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth { throw JSONParser.SyntaxError(message: "JSON nested deeper than \(maxDepth) levels") }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
    }
}
