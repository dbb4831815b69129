// The INI dialect of Python's `configparser`, which lmdeploy uses for a workspace's
// `triton_models/weights/config.ini`: `[section]` headers, `key = value` (or `key: value`) lines,
// whole-line comments starting with `#` or `;`, keys case-insensitive (stored lowercased), and on
// output one blank line after each section. Values are strings; typed access reports the file, the
// section, the key and what was expected.

import Foundation

/// A parsed INI document: ordered sections of ordered `key = value` pairs.
public struct ConfigINI: Sendable, Equatable {
    public struct Section: Sendable, Equatable {
        public var name: String
        /// Keys lowercased, in file order.
        public var entries: [(key: String, value: String)]

        public init(name: String, entries: [(key: String, value: String)] = []) {
            self.name = name
            self.entries = entries
        }

        public static func == (a: Section, b: Section) -> Bool {
            a.name == b.name && a.entries.map(\.key) == b.entries.map(\.key) && a.entries.map(\.value) == b.entries.map(\.value)
        }

        /// The value of `key` (case-insensitive), if present.
        public subscript(key: String) -> String? {
            get { entries.first(where: { $0.key == key.lowercased() })?.value }
            set {
                let k = key.lowercased()
                if let index = entries.firstIndex(where: { $0.key == k }) {
                    if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
                } else if let newValue {
                    entries.append((k, newValue))
                }
            }
        }
    }

    public var sections: [Section]
    /// Names the source in error messages.
    public var file: String

    public init(sections: [Section] = [], file: String = "config.ini") {
        self.sections = sections
        self.file = file
    }

    public func section(_ name: String) -> Section? { sections.first(where: { $0.name == name }) }

    // MARK: Parsing

    /// Reads and parses `url`; errors name the file.
    public static func load(_ url: URL) throws -> ConfigINI {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw FormatError.fileNotFound(file: url.path, what: "the workspace configuration ([llama] section)")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FormatError.io(file: url.path, operation: "read", message: "\(error)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw FormatError.invalid(file: url.path, field: "encoding", expected: "UTF-8 text")
        }
        return try parse(text, file: url.path)
    }

    /// Parses INI text as configparser does (without interpolation or multi-line values).
    public static func parse(_ text: String, file: String) throws -> ConfigINI {
        var document = ConfigINI(file: file)
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix(";") { continue }
            if trimmed.hasPrefix("[") {
                guard trimmed.hasSuffix("]"), trimmed.count > 2 else {
                    throw FormatError.invalid(file: file, field: "line \(lineNumber)",
                                              expected: "a section header like [llama], found '\(trimmed)'")
                }
                let name = String(trimmed.dropFirst().dropLast())
                if document.section(name) != nil {
                    throw FormatError.invalid(file: file, field: "line \(lineNumber)", expected: "section [\(name)] only once")
                }
                document.sections.append(Section(name: name))
                continue
            }
            if line.first == " " || line.first == "\t" {
                throw FormatError.invalid(file: file, field: "line \(lineNumber)",
                                          expected: "'key = value' at the start of the line (multi-line values are not supported), found '\(trimmed)'")
            }
            guard let separator = trimmed.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw FormatError.invalid(file: file, field: "line \(lineNumber)", expected: "'key = value', found '\(trimmed)'")
            }
            let key = trimmed[..<separator].trimmingCharacters(in: .whitespaces).lowercased()
            let value = trimmed[trimmed.index(after: separator)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else {
                throw FormatError.invalid(file: file, field: "line \(lineNumber)", expected: "a key before '=', found '\(trimmed)'")
            }
            guard !document.sections.isEmpty else {
                throw FormatError.invalid(file: file, field: "line \(lineNumber)",
                                          expected: "a [section] header before the first key, found '\(trimmed)'")
            }
            if document.sections[document.sections.count - 1][key] != nil {
                throw FormatError.invalid(file: file, field: "line \(lineNumber)", expected: "key '\(key)' only once in its section")
            }
            document.sections[document.sections.count - 1].entries.append((key, value))
        }
        return document
    }

    // MARK: Writing

    /// The text configparser's `write` produces: `[name]`, `key = value` lines, a blank line.
    public var text: String {
        var out = ""
        for section in sections {
            out += "[\(section.name)]\n"
            for (key, value) in section.entries { out += "\(key) = \(value)\n" }
            out += "\n"
        }
        return out
    }

    // MARK: Typed access

    /// Typed reads of one section; every failure names the file, the section and the key.
    public struct Reader {
        public let file: String
        public let section: Section

        public init(file: String, section: Section) {
            self.file = file
            self.section = section
        }

        private func qualified(_ key: String) -> String { "[\(section.name)] \(key)" }

        public func string(_ key: String) throws -> String {
            guard let value = section[key] else { throw FormatError.missingConfigKey(file: file, key: qualified(key)) }
            return value
        }

        public func string(_ key: String, default value: String) -> String { section[key] ?? value }

        public func int(_ key: String) throws -> Int {
            let raw = try string(key)
            guard let value = Int(raw) else {
                throw FormatError.invalidConfigValue(file: file, key: qualified(key), value: "'\(raw)'", expected: "an integer")
            }
            return value
        }

        public func int(_ key: String, default value: Int) throws -> Int {
            section[key] == nil ? value : try int(key)
        }

        public func double(_ key: String) throws -> Double {
            let raw = try string(key)
            guard let value = Double(raw), value.isFinite else {
                throw FormatError.invalidConfigValue(file: file, key: qualified(key), value: "'\(raw)'", expected: "a number")
            }
            return value
        }

        public func double(_ key: String, default value: Double) throws -> Double {
            section[key] == nil ? value : try double(key)
        }

        /// An integer flag that must be 0 or 1 (configparser-style booleans are accepted too).
        public func flag(_ key: String, default value: Bool) throws -> Bool {
            guard let raw = section[key] else { return value }
            switch raw.lowercased() {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default:
                throw FormatError.invalidConfigValue(file: file, key: qualified(key), value: "'\(raw)'", expected: "0 or 1")
            }
        }

        /// Fails unless `check(value)` holds, stating `expected`.
        public func require<T>(_ key: String, _ value: T, _ expected: String, _ check: (T) -> Bool) throws -> T {
            guard check(value) else {
                throw FormatError.invalidConfigValue(file: file, key: qualified(key), value: "\(value)", expected: expected)
            }
            return value
        }
    }
}

/// Python's `str(float)`: shortest round-trip digits, always with a decimal point or exponent
/// (`1e-05`, `10000.0`), as configparser writes floats.
func pythonFloatString(_ value: Double) -> String {
    if value.isNaN { return "nan" }
    if value.isInfinite { return value < 0 ? "-inf" : "inf" }
    var s = "\(value)"  // Swift prints the shortest round-trip form: "1e-05", "10000.0", "1e+16"
    if !s.contains(".") && !s.contains("e") && !s.contains("E") { s += ".0" }
    return s
}
