// Calibration text and the token windows sampled from it, as lmdeploy's `get_calib_loaders` does
// for wikitext2/ptb: the whole text is tokenized once, then `samples` windows of `seqlen` tokens
// start at seeded random offsets in [0, tokens − seqlen]. Named sets (c4, ptb, wikitext2, pileval)
// are read from local files — nothing is downloaded — in $LMDEPLOY_CALIB_DATA_DIR or else
// ~/.cache/lmdeploy/datasets, as NAME.jsonl, NAME.json or NAME.txt.
import Foundation
import Tokenizers

public enum CalibrationError: Error, CustomStringConvertible, Equatable {
    case datasetNotFound(name: String, directory: String, expected: [String])
    case unreadable(file: String, detail: String)
    case badDataset(file: String, detail: String)
    case textTooShort(file: String, tokens: Int, seqlen: Int)
    case invalidOption(String)
    case workDir(String)

    public var description: String {
        switch self {
        case let .datasetNotFound(name, directory, expected):
            return "the calibration dataset '\(name)' is not on disk: put it in \(directory) as one of \(expected.joined(separator: ", ")) (a .jsonl of {\"text\": ...} lines, a .json array, or plain text), set LMDEPLOY_CALIB_DATA_DIR to the folder that holds it, or pass a file path to --calib-dataset"
        case let .unreadable(file, detail):
            return "cannot read the calibration dataset \(file): \(detail)"
        case let .badDataset(file, detail):
            return "\(file): \(detail)"
        case let .textTooShort(file, tokens, seqlen):
            return "\(file) has \(tokens) tokens, fewer than one window of --calib-seqlen \(seqlen) + 1: use a longer text or a smaller --calib-seqlen"
        case let .invalidOption(message):
            return message
        case let .workDir(message):
            return message
        }
    }
}

public enum CalibrationDataset {
    /// lmdeploy's dataset names.
    public static let names = ["c4", "ptb", "wikitext2", "pileval"]

    /// The folder named datasets are read from.
    public static func directory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let dir = environment["LMDEPLOY_CALIB_DATA_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        return URL(fileURLWithPath: NSHomeDirectory()).appendingPathComponent(".cache/lmdeploy/datasets")
    }

    /// The file for `spec`: a path to an existing file, or one of `names` looked up in `directory()`.
    public static func resolve(_ spec: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        let fm = FileManager.default
        if names.contains(spec.lowercased()) && !fm.fileExists(atPath: spec) {
            let dir = directory(environment: environment)
            let candidates = ["jsonl", "json", "txt"].map { "\(spec.lowercased()).\($0)" }
            for name in candidates where fm.fileExists(atPath: dir.appendingPathComponent(name).path) {
                return dir.appendingPathComponent(name)
            }
            throw CalibrationError.datasetNotFound(name: spec, directory: dir.path, expected: candidates)
        }
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: spec, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw CalibrationError.unreadable(file: spec, detail: "no such file (give a .txt, .jsonl or .json file, or one of \(names.joined(separator: ", ")))")
        }
        return URL(fileURLWithPath: spec)
    }

    /// The text of a dataset file: .jsonl lines' "text" fields and .json arrays (of strings or of
    /// {"text": ...}) joined by blank lines, as lmdeploy joins wikitext2's records; anything else is plain text.
    public static func text(of url: URL) throws -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw CalibrationError.unreadable(file: url.path, detail: "the file cannot be read")
        }
        func record(_ value: Any, _ where_: String) throws -> String {
            if let s = value as? String { return s }
            if let o = value as? [String: Any], let s = o["text"] as? String { return s }
            throw CalibrationError.badDataset(file: url.path, detail: "\(where_) is not a string or an object with a \"text\" string")
        }
        switch url.pathExtension.lowercased() {
        case "jsonl":
            guard let content = String(data: data, encoding: .utf8) else {
                throw CalibrationError.badDataset(file: url.path, detail: "not UTF-8 text")
            }
            var texts: [String] = []
            for (i, line) in content.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard FoundationJSONGuard.accepts(Data(line.utf8)),
                      let value = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]) else {
                    throw CalibrationError.badDataset(file: url.path, detail: "line \(i + 1) is not JSON")
                }
                texts.append(try record(value, "line \(i + 1)"))
            }
            return texts.joined(separator: "\n\n")
        case "json":
            guard FoundationJSONGuard.accepts(data), let value = try? JSONSerialization.jsonObject(with: data), let array = value as? [Any] else {
                throw CalibrationError.badDataset(file: url.path, detail: "expected a JSON array of strings or of {\"text\": ...} objects")
            }
            return try array.enumerated().map { try record($1, "element \($0)") }.joined(separator: "\n\n")
        default:
            guard let s = String(data: data, encoding: .utf8) else {
                throw CalibrationError.badDataset(file: url.path, detail: "not UTF-8 text")
            }
            return s
        }
    }

    /// `samples` windows of `seqlen` tokens of `tokens`, at offsets drawn from `seed`: the same
    /// seed gives the same windows on every machine.
    public static func sample(_ tokens: [Int32], samples: Int, seqlen: Int, seed: UInt64, file: String = "the dataset") throws -> [[Int32]] {
        guard samples >= 1 else { throw CalibrationError.invalidOption("--calib-samples must be at least 1, got \(samples)") }
        guard seqlen >= 1 else { throw CalibrationError.invalidOption("--calib-seqlen must be at least 1, got \(seqlen)") }
        guard tokens.count > seqlen else { throw CalibrationError.textTooShort(file: file, tokens: tokens.count, seqlen: seqlen) }
        var rng = SplitMix64(seed: seed)
        let span = UInt64(tokens.count - seqlen)   // offsets 0...span - 1 as lmdeploy's randint(0, n - seqlen - 1)
        return (0..<samples).map { _ in
            let start = Int(rng.next(below: span))
            return Array(tokens[start..<start + seqlen])
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator with a fixed, documented sequence, so
/// a seed means the same windows everywhere (Swift's SystemRandomNumberGenerator cannot be seeded).
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<bound (rejection sampling, no modulo bias).
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let x = next()
            if x < limit { return x % bound }
        }
    }
}
