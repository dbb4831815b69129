// Reader for the safetensors format (https://github.com/huggingface/safetensors):
//   [8 bytes: header length N, little-endian u64][N bytes: JSON header][data area]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end)} (offsets relative to the data
// area) plus an optional "__metadata__" object of strings. The file is mmapped and tensors are views into
// the mapping. Everything in the header is checked before any view is handed out, so a corrupt or hostile
// file fails at open with the problem named, never with a crash or an out-of-bounds read.

import Foundation
import Tokenizers

/// One safetensors file, mapped read-only.
public struct SafetensorsFile: @unchecked Sendable {
    /// Largest header accepted (the reference implementation uses the same 100 MB bound).
    public static let maxHeaderLength = 100_000_000

    /// One tensor as described by the header.
    public struct Entry: Sendable, Hashable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range relative to the start of the data area.
        public let dataOffsets: Range<Int>
    }

    public let url: URL
    /// The header's `__metadata__` (empty when absent).
    public let metadata: [String: String]
    /// All tensors, in data-offset order.
    public let entries: [Entry]
    /// Offset of the data area from the start of the file (8 + header length).
    public let dataStart: Int

    let mapping: MappedFile
    private let index: [String: Int]

    /// Maps and validates the file at `url`.
    public init(url: URL) throws {
        let mapping = try MappedFile(path: url.path)
        let header = try SafetensorsFile.parse(mapping.bytes, file: url.path)
        self.url = url
        self.mapping = mapping
        self.metadata = header.metadata
        self.entries = header.entries
        self.dataStart = header.dataStart
        var index: [String: Int] = [:]
        for (position, entry) in header.entries.enumerated() { index[entry.name] = position }
        self.index = index
    }

    /// Tensor names in data-offset order.
    public var tensorNames: [String] { entries.map(\.name) }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func entry(named name: String) -> Entry? { index[name].map { entries[$0] } }

    /// A zero-copy view of tensor `name` (any dtype). Throws `missingTensor` when absent.
    public func tensor(_ name: String) throws -> TensorView {
        guard let entry = entry(named: name) else {
            throw FormatError.missingTensor(tensor: name, searched: [url.path])
        }
        return view(of: entry)
    }

    func view(of entry: Entry) -> TensorView {
        let begin = dataStart + entry.dataOffsets.lowerBound
        let end = dataStart + entry.dataOffsets.upperBound
        let bytes = UnsafeRawBufferPointer(rebasing: mapping.bytes[begin..<end])
        return TensorView(name: entry.name, dtype: entry.dtype, shape: entry.shape, data: bytes, owner: mapping)
    }

    // MARK: Header validation

    /// The validated content of a header.
    struct Header {
        var metadata: [String: String]
        var entries: [Entry]
        var dataStart: Int
    }

    /// Parses and validates the header of the safetensors bytes `file` (used in messages) holds.
    static func parse(_ bytes: UnsafeRawBufferPointer, file: String) throws -> Header {
        let fileSize = bytes.count
        guard fileSize >= 8 else { throw FormatError.fileTooShort(file: file, size: fileSize) }
        var lengthLE: UInt64 = 0
        for i in 0..<8 { lengthLE |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        if lengthLE > UInt64(fileSize - 8) {
            throw FormatError.headerPastEndOfFile(file: file, headerLength: lengthLE, fileSize: fileSize)
        }
        if lengthLE > UInt64(maxHeaderLength) {
            throw FormatError.headerTooLarge(file: file, headerLength: lengthLE, limit: maxHeaderLength)
        }
        let headerLength = Int(lengthLE)
        let dataStart = 8 + headerLength
        let dataSize = fileSize - dataStart
        let headerData = Data(bytes[8..<dataStart])

        let root: JSONValue
        do {
            root = try JSONValue.parse(headerData)
        } catch {
            let preview = String(decoding: headerData.prefix(40), as: UTF8.self)
            throw FormatError.headerNotJSON(file: file, detail: "\(JSONValue.explain(error)) (header starts with \(JSONValue.quote(preview)))")
        }
        guard case .object(let object) = root else {
            throw FormatError.headerNotJSON(file: file, detail: "top level is \(root.brief), expected an object")
        }

        // Keys are kept as written: a name given twice would make one tensor shadow the other.
        if let duplicate = object.duplicateKey {
            throw FormatError.duplicateTensor(file: file, tensor: duplicate)
        }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in object.entries {
            if name == "__metadata__" {
                guard case .object(let fields) = value else {
                    throw FormatError.malformedHeader(file: file, tensor: name, field: name,
                                                      expected: "must be an object of strings, found \(value.brief)")
                }
                for (key, field) in fields.entries {
                    guard case .string(let text) = field else {
                        throw FormatError.malformedHeader(file: file, tensor: name, field: key,
                                                          expected: "must be a string, found \(field.brief)")
                    }
                    metadata[key] = text
                }
                continue
            }
            entries.append(try parseEntry(name: name, value: value, file: file))
        }

        // Ranges: inside the data area and disjoint. Sorting by offset makes the overlap check linear.
        entries.sort { ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound, $0.name) < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound, $1.name) }
        var furthest: Entry? = nil  // the entry reaching furthest so far
        for entry in entries where !entry.dataOffsets.isEmpty {
            if let previous = furthest, entry.dataOffsets.lowerBound < previous.dataOffsets.upperBound {
                throw FormatError.overlappingTensors(file: file, first: previous.name, firstRange: previous.dataOffsets,
                                                     second: entry.name, secondRange: entry.dataOffsets)
            }
            if entry.dataOffsets.upperBound > (furthest?.dataOffsets.upperBound ?? 0) { furthest = entry }
        }
        let dataEnd = entries.map(\.dataOffsets.upperBound).max() ?? 0
        if dataEnd > dataSize {
            // Tensors packed back to back from offset 0 (as every writer lays them out) but running past the
            // end of the file mean the file was cut short; anything else means the offsets are wrong.
            var contiguous = true
            var cursor = 0
            for entry in entries {
                if entry.dataOffsets.lowerBound != cursor { contiguous = false; break }
                cursor = entry.dataOffsets.upperBound
            }
            if contiguous {
                throw FormatError.truncated(file: file, expectedDataBytes: dataEnd, actualDataBytes: dataSize)
            }
            let offender = entries.first { $0.dataOffsets.upperBound > dataSize }!
            throw FormatError.tensorOutOfBounds(file: file, tensor: offender.name, begin: offender.dataOffsets.lowerBound,
                                                end: offender.dataOffsets.upperBound, dataSize: dataSize)
        }
        return Header(metadata: metadata, entries: entries, dataStart: dataStart)
    }

    private static func parseEntry(name: String, value: JSONValue, file: String) throws -> Entry {
        guard case .object(let fields) = value else {
            throw FormatError.malformedHeader(file: file, tensor: name, field: name,
                                              expected: "must be an object with dtype, shape and data_offsets, found \(value.brief)")
        }
        guard let dtypeValue = fields["dtype"] else {
            throw FormatError.malformedHeader(file: file, tensor: name, field: "dtype", expected: "is missing")
        }
        guard case .string(let dtypeName) = dtypeValue else {
            throw FormatError.malformedHeader(file: file, tensor: name, field: "dtype",
                                              expected: "must be a string, found \(dtypeValue.brief)")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw FormatError.unknownDType(file: file, tensor: name, dtype: dtypeName)
        }
        let shape = try nonNegativeIntegers(fields["shape"], field: "shape", tensor: name, file: file)
        let offsets = try nonNegativeIntegers(fields["data_offsets"], field: "data_offsets", tensor: name, file: file)
        guard offsets.count == 2, offsets[0] <= offsets[1] else {
            throw FormatError.malformedHeader(file: file, tensor: name, field: "data_offsets",
                                              expected: "must be [begin, end] with begin <= end, found \(offsets)")
        }
        var elements = 1
        var overflow = false
        for dimension in shape where !overflow {
            (elements, overflow) = elements.multipliedReportingOverflow(by: dimension)
        }
        let (byteCount, byteOverflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        let rangeLength = offsets[1] - offsets[0]
        if overflow || byteOverflow || byteCount != rangeLength {
            throw FormatError.byteSizeMismatch(file: file, tensor: name, shape: shape, dtype: dtype,
                                               expectedBytes: (overflow || byteOverflow) ? Int.max : byteCount,
                                               actualBytes: rangeLength)
        }
        return Entry(name: name, dtype: dtype, shape: shape, dataOffsets: offsets[0]..<offsets[1])
    }

    private static func nonNegativeIntegers(_ value: JSONValue?, field: String, tensor: String, file: String) throws -> [Int] {
        guard let value else {
            throw FormatError.malformedHeader(file: file, tensor: tensor, field: field, expected: "is missing")
        }
        guard case .array(let elements) = value else {
            throw FormatError.malformedHeader(file: file, tensor: tensor, field: field,
                                              expected: "must be an array of non-negative integers, found \(value.brief)")
        }
        return try elements.map { element in
            guard case .integer(let number) = element, number >= 0 else {
                throw FormatError.malformedHeader(file: file, tensor: tensor, field: field,
                                                  expected: "must hold non-negative integers, found \(element.brief)")
            }
            return number
        }
    }
}
