// Writes safetensors files: tensors are packed back to back in the order added, the JSON header is
// padded with spaces to a multiple of 8 bytes (so the data area stays 8-byte aligned, as the reference
// writer does), and the file appears atomically: written to a temporary name beside the target,
// flushed, then renamed over it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Tokenizers

/// Collects tensors in memory and writes them as one safetensors file.
public struct SafetensorsWriter: Sendable {
    private struct Pending: Sendable {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: [UInt8]
    }

    /// Written as the header's `__metadata__` when not empty.
    public var metadata: [String: String]
    private var pending: [Pending] = []
    private var names: Set<String> = []

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Number of tensors added so far.
    public var count: Int { pending.count }

    /// Adds a tensor from its raw little-endian bytes.
    public mutating func add(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) throws {
        guard name != "__metadata__", !name.isEmpty else {
            throw FormatError.invalid(file: "(safetensors writer)", field: name, expected: "a tensor name other than '' and '__metadata__'")
        }
        guard !names.contains(name) else {
            throw FormatError.duplicateTensor(file: "(safetensors writer)", tensor: name)
        }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw FormatError.invalid(file: "(safetensors writer)", field: name, expected: "non-negative dimensions, got \(shape)")
        }
        var expected = dtype.byteSize
        for dimension in shape {
            let (product, overflow) = expected.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw FormatError.invalid(file: "(safetensors writer)", field: name, expected: "a shape whose byte size fits in Int, got \(shape)")
            }
            expected = product
        }
        guard expected == bytes.count else {
            throw FormatError.byteSizeMismatch(file: "(safetensors writer)", tensor: name, shape: shape, dtype: dtype,
                                               expectedBytes: expected, actualBytes: bytes.count)
        }
        names.insert(name)
        pending.append(Pending(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    /// Adds a tensor from Float values, rounded (to nearest even) to `dtype` ∈ {bf16, f16, f32}.
    public mutating func add(name: String, shape: [Int], values: [Float], dtype: DType) throws {
        guard dtype.isWeightType else {
            throw FormatError.unsupportedDType(file: "(safetensors writer)", tensor: name, dtype: dtype, supported: DType.weightTypes)
        }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow, dimension >= 0 else {
                throw FormatError.invalid(file: "(safetensors writer)", field: name, expected: "non-negative dimensions whose product fits in Int, got \(shape)")
            }
            count = product
        }
        guard values.count == count else {
            throw FormatError.invalid(file: "(safetensors writer)", field: name,
                                      expected: "\(count) values for shape \(shape), got \(values.count)")
        }
        try add(name: name, dtype: dtype, shape: shape, bytes: TensorView.bytes(of: values, as: dtype))
    }

    /// Adds a copy of `tensor` under its own name (or `name`).
    public mutating func add(_ tensor: TensorView, name: String? = nil) throws {
        try add(name: name ?? tensor.name, dtype: tensor.dtype, shape: tensor.shape, bytes: [UInt8](tensor.data))
    }

    /// The header bytes: JSON padded with spaces to a multiple of 8.
    func headerBytes() -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted().map { "\(JSONText.quote($0)):\(JSONText.quote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{" + fields.joined(separator: ",") + "}")
        }
        var offset = 0
        for tensor in pending {
            let end = offset + tensor.bytes.count
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            parts.append("\(JSONText.quote(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        return header
    }

    /// Writes the file atomically: to a temporary file in the same directory, flushed, then renamed to `url`.
    public func write(to url: URL) throws {
        let header = headerBytes()
        var prefix = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { prefix[i] = UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * UInt64(i))) }
        try OutputFile.replace(url) { file in
            try file.write(prefix)
            try file.write(header)
            for tensor in pending { try file.write(tensor.bytes) }
        }
    }
}
