// Errors raised while reading model files: safetensors checkpoints, HF `config.json`, and the
// tensors a model expects. Every message names the file, the tensor or field, and what was expected,
// so the CLI can print it as is (no stack trace) and the user knows what to fix.

/// The one error type of the formats layer (safetensors, config.json, weight loading).
public enum FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    // MARK: Files and I/O
    /// A file (or directory) that must exist does not. `what` says what it was needed for.
    case fileNotFound(file: String, what: String)
    /// A regular file (or other non-directory) where a directory was expected.
    case notADirectory(file: String, expected: String)
    /// A directory laid out as a TurboMind workspace lacks its config.ini.
    case workspaceConfigMissing(workspace: String, file: String)
    /// A system call on `file` failed (`operation` is e.g. "open", "mmap", "write", "rename").
    case io(file: String, operation: String, message: String)

    // MARK: Safetensors container
    /// The file is shorter than the 8-byte little-endian header-length prefix.
    case fileTooShort(file: String, size: Int)
    /// The header length prefix points past the end of the file.
    case headerPastEndOfFile(file: String, headerLength: UInt64, fileSize: Int)
    /// The header length prefix is larger than the 100 MB safety limit.
    case headerTooLarge(file: String, headerLength: UInt64, limit: Int)
    /// The header bytes are not a JSON object (or not UTF-8).
    case headerNotJSON(file: String, detail: String)
    /// A header entry lacks a field or has one of the wrong type.
    case malformedHeader(file: String, tensor: String, field: String, expected: String)
    /// The dtype string of a tensor is not a safetensors dtype this reader knows.
    case unknownDType(file: String, tensor: String, dtype: String)
    /// The byte range of a tensor does not hold shape × dtype size bytes.
    case byteSizeMismatch(file: String, tensor: String, shape: [Int], dtype: DType, expectedBytes: Int, actualBytes: Int)
    /// A tensor's `data_offsets` lie (partly) outside the data area of the file.
    case tensorOutOfBounds(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    /// The tensors are laid out contiguously, but the file ends before the last one does.
    case truncated(file: String, expectedDataBytes: Int, actualDataBytes: Int)
    /// Two tensors share bytes.
    case overlappingTensors(file: String, first: String, firstRange: Range<Int>, second: String, secondRange: Range<Int>)
    /// The same tensor name appears twice (writer) or in two places (index).
    case duplicateTensor(file: String, tensor: String)

    // MARK: Checkpoints and weights
    /// A weight has a dtype the engine cannot compute with.
    case unsupportedDType(file: String, tensor: String, dtype: DType, supported: [DType])
    /// Neither `model.safetensors` nor `model.safetensors.index.json` is in the directory.
    case noCheckpoint(directory: String, lookedFor: [String], found: [String])
    /// `model.safetensors.index.json` is malformed or disagrees with its shard files.
    case badIndex(file: String, detail: String)
    /// A tensor the model needs is in none of the checkpoint files.
    case missingTensor(tensor: String, searched: [String])
    /// A tensor's shape differs from what the config implies.
    case shapeMismatch(file: String, tensor: String, expected: [Int], actual: [Int])

    // MARK: config.json
    /// The config file is not valid JSON (or its top level is not an object).
    case configNotJSON(file: String, detail: String)
    /// A required key is absent. `key` is the dotted key path, e.g. `rope_scaling.factor`.
    case missingConfigKey(file: String, key: String)
    /// A key has a value of the wrong type or out of range.
    case invalidConfigValue(file: String, key: String, value: String, expected: String)
    /// `architectures` names a model class this engine does not implement.
    case unsupportedArchitecture(file: String, name: String, supported: [String])
    /// `rope_scaling.type` (or `rope_type`) names a scaling method this engine does not implement.
    case unsupportedRopeScaling(file: String, key: String, type: String, supported: [String])

    // MARK: Conversion
    /// The conversion was interrupted (a signal); its temporary directory has been removed.
    case interrupted(destination: String)

    // MARK: Anything else found wrong in a model file
    /// A free-form problem in `file` at `field`, stating what was expected.
    case invalid(file: String, field: String, expected: String)

    public var description: String {
        switch self {
        case let .fileNotFound(file, what):
            return "\(file): no such file (needed for \(what))"
        case let .notADirectory(file, expected):
            return "\(file) is a file, expected \(expected)"
        case let .workspaceConfigMissing(workspace, file):
            return "\(workspace) is a TurboMind workspace, but the workspace's config.ini is missing (\(file)): "
                + "it holds the model's dimensions; convert the model again (lmdeploy convert) or restore the file"
        case let .io(file, operation, message):
            return "\(file): \(operation) failed: \(message)"
        case let .fileTooShort(file, size):
            return "\(file): not a safetensors file: it is \(size) bytes, shorter than the 8-byte header length prefix"
        case let .headerPastEndOfFile(file, headerLength, fileSize):
            return "\(file): safetensors header length \(headerLength) runs past the end of the file "
                + "(the file has only \(max(fileSize - 8, 0)) bytes after the 8-byte length prefix; file truncated or not safetensors?)"
        case let .headerTooLarge(file, headerLength, limit):
            return "\(file): safetensors header length \(headerLength) exceeds the limit of \(limit) bytes (not a safetensors file?)"
        case let .headerNotJSON(file, detail):
            return "\(file): safetensors header is not a JSON object: \(detail)"
        case let .malformedHeader(file, tensor, field, expected):
            return "\(file): safetensors header entry '\(tensor)': field '\(field)' \(expected)"
        case let .unknownDType(file, tensor, dtype):
            return "\(file): tensor '\(tensor)' has unknown dtype '\(dtype)'; expected one of "
                + DType.allCases.map(\.rawValue).joined(separator: ", ")
        case let .byteSizeMismatch(file, tensor, shape, dtype, expectedBytes, actualBytes):
            return "\(file): tensor '\(tensor)' has shape \(shape) and dtype \(dtype.rawValue), which need \(expectedBytes) bytes, "
                + "but its data_offsets span \(actualBytes) bytes"
        case let .tensorOutOfBounds(file, tensor, begin, end, dataSize):
            return "\(file): tensor '\(tensor)' data_offsets [\(begin), \(end)) lie outside the data area, "
                + "which has \(dataSize) bytes"
        case let .truncated(file, expectedDataBytes, actualDataBytes):
            return "\(file): file is truncated: its header describes \(expectedDataBytes) bytes of tensor data, "
                + "but only \(actualDataBytes) bytes follow the header"
        case let .overlappingTensors(file, first, firstRange, second, secondRange):
            return "\(file): tensors '\(first)' [\(firstRange.lowerBound), \(firstRange.upperBound)) and "
                + "'\(second)' [\(secondRange.lowerBound), \(secondRange.upperBound)) overlap; each tensor must own its bytes"
        case let .duplicateTensor(file, tensor):
            return "\(file): tensor '\(tensor)' appears more than once; tensor names must be unique"
        case let .unsupportedDType(file, tensor, dtype, supported):
            return "\(file): tensor '\(tensor)' has dtype \(dtype.rawValue); weights must be one of "
                + supported.map(\.rawValue).joined(separator: ", ")
        case let .noCheckpoint(directory, lookedFor, found):
            var message = "\(directory): no safetensors checkpoint: looked for " + lookedFor.joined(separator: " or ")
            if !found.isEmpty {
                message += "; found only " + found.joined(separator: ", ")
                    + " (PyTorch .bin/.pt checkpoints are not supported: convert them to safetensors)"
            }
            return message
        case let .badIndex(file, detail):
            return "\(file): bad safetensors index: \(detail)"
        case let .missingTensor(tensor, searched):
            return "tensor '\(tensor)' not found; searched " + searched.joined(separator: ", ")
        case let .shapeMismatch(file, tensor, expected, actual):
            return "\(file): tensor '\(tensor)' has shape \(actual), expected \(expected) from config.json"
        case let .configNotJSON(file, detail):
            return "\(file): not a valid JSON object: \(detail)"
        case let .missingConfigKey(file, key):
            return "\(file): required key '\(key)' is missing"
        case let .invalidConfigValue(file, key, value, expected):
            return "\(file): key '\(key)' has value \(value); expected \(expected)"
        case let .unsupportedArchitecture(file, name, supported):
            return "\(file): architecture '\(name)' is not supported; supported architectures: "
                + supported.joined(separator: ", ")
        case let .unsupportedRopeScaling(file, key, type, supported):
            return "\(file): '\(key)' is '\(type)', which is not supported; supported RoPE scaling types: "
                + supported.joined(separator: ", ")
        case let .interrupted(destination):
            return "conversion to \(destination) interrupted: nothing was written"
        case let .invalid(file, field, expected):
            return "\(file): '\(field)': expected \(expected)"
        }
    }
}
