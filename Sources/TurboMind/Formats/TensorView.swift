// A read-only view of one stored tensor: its bytes live in an mmapped file or in a buffer the view
// owns (for tensors synthesised at load time, such as the pieces of a fused weight). The view keeps
// that storage alive, so it can be passed around freely and read from any thread.

/// Heap storage owned by synthesised tensors. 64-byte aligned so SIMD kernels may use aligned loads.
final class OwnedTensorStorage: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer

    init(byteCount: Int) {
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { buffer.deallocate() }
}

/// A named, typed, shaped view of tensor bytes (row-major, little-endian).
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Exactly `elementCount × dtype.byteSize` bytes. Not necessarily aligned to the element size.
    public let data: UnsafeRawBufferPointer
    /// Keeps the mmap or the owned buffer alive for as long as the view exists.
    let owner: AnyObject

    /// Wraps bytes whose lifetime `owner` guarantees. Precondition: the sizes agree.
    init(name: String, dtype: DType, shape: [Int], data: UnsafeRawBufferPointer, owner: AnyObject) {
        precondition(data.count == shape.reduce(1, *) * dtype.byteSize,
                     "TensorView \(name): \(data.count) bytes for shape \(shape) of \(dtype.rawValue)")
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
        self.owner = owner
    }

    /// A tensor with its own storage, filled by `fill` (which receives exactly the tensor's bytes).
    public init(name: String, dtype: DType, shape: [Int], fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let byteCount = shape.reduce(1, *) * dtype.byteSize
        let storage = OwnedTensorStorage(byteCount: byteCount)
        let bytes = UnsafeMutableRawBufferPointer(rebasing: storage.buffer[0..<byteCount])
        try fill(bytes)
        self.init(name: name, dtype: dtype, shape: shape, data: UnsafeRawBufferPointer(bytes), owner: storage)
    }

    /// A tensor with its own copy of `bytes`. Precondition: `bytes.count` equals shape × dtype size.
    public init(name: String, dtype: DType, shape: [Int], copying bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize,
                     "TensorView \(name): \(bytes.count) bytes for shape \(shape) of \(dtype.rawValue)")
        self.init(name: name, dtype: dtype, shape: shape) { destination in
            if bytes.count > 0 { destination.copyMemory(from: bytes) }
        }
    }

    /// A tensor with its own storage holding `values` rounded to `dtype` (bf16, f16 or f32).
    public init(name: String, shape: [Int], values: [Float], dtype: DType) {
        precondition(dtype.isWeightType, "TensorView(values:) supports BF16, F16, F32, not \(dtype.rawValue)")
        precondition(values.count == shape.reduce(1, *), "TensorView \(name): \(values.count) values for shape \(shape)")
        self.init(name: name, dtype: dtype, shape: shape) { destination in
            TensorView.encode(values, as: dtype, into: destination)
        }
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Number of bytes of one row (the product of all but the first dimension × element size).
    public var rowByteCount: Int { shape.dropFirst().reduce(1, *) * dtype.byteSize }

    /// The same bytes under another name (e.g. the tied LM head is the embedding table).
    public func renamed(_ newName: String) -> TensorView {
        TensorView(name: newName, dtype: dtype, shape: shape, data: data, owner: owner)
    }

    /// A zero-copy view of rows `range` along the first dimension.
    public func rows(_ range: Range<Int>, name newName: String? = nil) -> TensorView {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "TensorView \(name): rows \(range) outside shape \(shape)")
        let rowBytes = rowByteCount
        let slice = UnsafeRawBufferPointer(rebasing: data[(range.lowerBound * rowBytes)..<(range.upperBound * rowBytes)])
        return TensorView(name: newName ?? name, dtype: dtype, shape: [range.count] + shape.dropFirst(),
                          data: slice, owner: owner)
    }

    /// All elements widened to Float (bf16, f16 and f32 only).
    public func toFloatArray() -> [Float] {
        precondition(dtype.isWeightType, "toFloatArray: tensor \(name) has dtype \(dtype.rawValue), not BF16/F16/F32")
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { output, initialized in
            TensorView.decode(data, dtype: dtype, into: UnsafeMutableBufferPointer(rebasing: output[0..<count]))
            initialized = count
        }
    }

    /// Element `index` (flat, row-major) widened to Float.
    public func float(at index: Int) -> Float {
        precondition(index >= 0 && index < elementCount, "TensorView \(name): index \(index) out of range")
        switch dtype {
        case .bf16: return FloatBits.bf16ToFloat(data.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
        case .f16: return FloatBits.f16ToFloat(data.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
        case .f32: return data.loadUnaligned(fromByteOffset: index * 4, as: Float.self)
        default: preconditionFailure("float(at:): tensor \(name) has dtype \(dtype.rawValue), not BF16/F16/F32")
        }
    }

    /// Widens little-endian `bytes` of `dtype` (bf16, f16, f32) into `output`.
    static func decode(_ bytes: UnsafeRawBufferPointer, dtype: DType, into output: UnsafeMutableBufferPointer<Float>) {
        let count = output.count
        switch dtype {
        case .bf16:
            for i in 0..<count {
                output[i] = FloatBits.bf16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .f16:
            for i in 0..<count {
                output[i] = FloatBits.f16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .f32:
            if count > 0, let base = output.baseAddress {
                UnsafeMutableRawPointer(base).copyMemory(from: bytes.baseAddress!, byteCount: count * 4)
            }
        default:
            preconditionFailure("cannot widen \(dtype.rawValue) to Float")
        }
    }

    /// Narrows `values` to `dtype` (bf16, f16, f32; round to nearest even) into little-endian bytes.
    static func encode(_ values: [Float], as dtype: DType, into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count == values.count * dtype.byteSize)
        switch dtype {
        case .bf16:
            for (i, value) in values.enumerated() {
                bytes.storeBytes(of: FloatBits.floatToBF16(value), toByteOffset: 2 * i, as: UInt16.self)
            }
        case .f16:
            for (i, value) in values.enumerated() {
                bytes.storeBytes(of: FloatBits.floatToF16(value), toByteOffset: 2 * i, as: UInt16.self)
            }
        case .f32:
            values.withUnsafeBytes { source in
                if source.count > 0 { bytes.copyMemory(from: source) }
            }
        default:
            preconditionFailure("cannot narrow Float to \(dtype.rawValue)")
        }
    }

    /// `values` narrowed to `dtype` as little-endian bytes (for writers).
    public static func bytes(of values: [Float], as dtype: DType) -> [UInt8] {
        precondition(dtype.isWeightType, "bytes(of:as:) supports BF16, F16, F32, not \(dtype.rawValue)")
        var result = [UInt8](repeating: 0, count: values.count * dtype.byteSize)
        result.withUnsafeMutableBytes { encode(values, as: dtype, into: $0) }
        return result
    }

    /// Each value rounded to the precision of `dtype`, as Float (what a write-then-read round trip yields).
    public static func rounded(_ values: [Float], to dtype: DType) -> [Float] {
        switch dtype {
        case .f32: return values
        case .bf16: return values.map { FloatBits.bf16ToFloat(FloatBits.floatToBF16($0)) }
        case .f16: return values.map { FloatBits.f16ToFloat(FloatBits.floatToF16($0)) }
        default: preconditionFailure("rounded(_:to:) supports BF16, F16, F32, not \(dtype.rawValue)")
        }
    }
}
