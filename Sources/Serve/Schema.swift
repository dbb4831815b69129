// A JSON document kept in the order it was written (OpenAPI documents, schemas): the request and
// response types describe themselves with it, next to their coding keys, so /openapi.json is made
// from the same types the handlers decode and encode.

/// An ordered JSON value.
indirect enum JSONDoc: Sendable, Encodable {
    case string(String)
    case integer(Int)
    case number(Double)
    case bool(Bool)
    case null
    case array([JSONDoc])
    case object([(String, JSONDoc)])

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .string(let s): var c = encoder.singleValueContainer(); try c.encode(s)
        case .integer(let i): var c = encoder.singleValueContainer(); try c.encode(i)
        case .number(let d): var c = encoder.singleValueContainer(); try c.encode(d)
        case .bool(let b): var c = encoder.singleValueContainer(); try c.encode(b)
        case .null: var c = encoder.singleValueContainer(); try c.encodeNil()
        case .array(let a):
            var c = encoder.unkeyedContainer()
            for v in a { try c.encode(v) }
        case .object(let fields):
            var c = encoder.container(keyedBy: Key.self)
            for (k, v) in fields { try c.encode(v, forKey: Key(k)) }
        }
    }

    /// The value of `key` in an object.
    subscript(key: String) -> JSONDoc? {
        guard case .object(let fields) = self else { return nil }
        return fields.first { $0.0 == key }?.1
    }
}

/// JSON Schema builders (OpenAPI 3.1 uses JSON Schema 2020-12).
enum Schema {
    static func object(_ properties: [(String, JSONDoc)], required: [String] = [], description: String? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("type", .string("object"))]
        if let description { f.append(("description", .string(description))) }
        f.append(("properties", .object(properties)))
        if !required.isEmpty { f.append(("required", .array(required.map { .string($0) }))) }
        return .object(f)
    }

    static func string(_ description: String, oneOf values: [String]? = nil, maxLength: Int? = nil, minLength: Int? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("type", .string("string")), ("description", .string(description))]
        if let values { f.append(("enum", .array(values.map { .string($0) }))) }
        if let minLength { f.append(("minLength", .integer(minLength))) }
        if let maxLength { f.append(("maxLength", .integer(maxLength))) }
        return .object(f)
    }

    static func integer(_ description: String, minimum: Int? = nil, maximum: Int? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("type", .string("integer")), ("description", .string(description))]
        if let minimum { f.append(("minimum", .integer(minimum))) }
        if let maximum { f.append(("maximum", .integer(maximum))) }
        return .object(f)
    }

    static func number(_ description: String, minimum: Double? = nil, exclusiveMinimum: Double? = nil, maximum: Double? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("type", .string("number")), ("description", .string(description))]
        if let minimum { f.append(("minimum", .number(minimum))) }
        if let exclusiveMinimum { f.append(("exclusiveMinimum", .number(exclusiveMinimum))) }
        if let maximum { f.append(("maximum", .number(maximum))) }
        return .object(f)
    }

    static func boolean(_ description: String) -> JSONDoc {
        .object([("type", .string("boolean")), ("description", .string(description))])
    }

    static func array(_ items: JSONDoc, _ description: String? = nil, minItems: Int? = nil, maxItems: Int? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = [("type", .string("array"))]
        if let description { f.append(("description", .string(description))) }
        f.append(("items", items))
        if let minItems { f.append(("minItems", .integer(minItems))) }
        if let maxItems { f.append(("maxItems", .integer(maxItems))) }
        return .object(f)
    }

    static func oneOf(_ schemas: [JSONDoc], _ description: String? = nil) -> JSONDoc {
        var f: [(String, JSONDoc)] = []
        if let description { f.append(("description", .string(description))) }
        f.append(("oneOf", .array(schemas)))
        return .object(f)
    }

    /// `schema` or null.
    static func nullable(_ schema: JSONDoc) -> JSONDoc {
        .object([("anyOf", .array([schema, .object([("type", .string("null"))])]))])
    }

    static func ref(_ name: String) -> JSONDoc {
        .object([("$ref", .string("#/components/schemas/\(name)"))])
    }

    static let null: JSONDoc = .object([("type", .string("null"))])
}

/// A type that /openapi.json describes: its schema lists exactly its coding keys (a test checks).
protocol SchemaDescribed {
    static var schemaName: String { get }
    static var schema: JSONDoc { get }
    /// The JSON names of the type's fields.
    static var fieldNames: [String] { get }
}

extension SchemaDescribed {
    static var schemaName: String { String(describing: Self.self) }
}
