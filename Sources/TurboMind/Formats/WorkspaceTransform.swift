// The byte-moving loops of workspace conversion, in both directions:
//  - `fill`: produces a workspace file (fp16) block by block from HF tensors (bf16/f16/f32), so a
//    file is streamed out through a small buffer instead of being built whole in memory;
//  - `restore`: puts the columns of a workspace file back into HF-layout buffers (`[out, in]`),
//    used when loading a workspace for the engine.
// Transposition works on row blocks sized to stay in cache; the input pages of mmapped tensors can
// be released once a file is done (`releasePages`), so converting never holds the whole model.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Narrowing of one stored element to IEEE half (round to nearest even).
protocol HalfSource {
    static func half(_ base: UnsafeRawPointer, _ index: Int) -> UInt16
}

enum FromBF16: HalfSource {
    @inline(__always)
    static func half(_ base: UnsafeRawPointer, _ index: Int) -> UInt16 {
        let b = base.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)
        let exponent = Int((b >> 7) & 0xFF) - 127 + 15
        // Normal bf16 values in half's normal range convert exactly: 7 mantissa bits fit in 10.
        if exponent > 0 && exponent < 31 { return (b & 0x8000) | UInt16(exponent) << 10 | (b & 0x7F) << 3 }
        return FloatBits.floatToF16(FloatBits.bf16ToFloat(b))
    }
}

enum FromF16: HalfSource {
    @inline(__always)
    static func half(_ base: UnsafeRawPointer, _ index: Int) -> UInt16 {
        base.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)
    }
}

enum FromF32: HalfSource {
    @inline(__always)
    static func half(_ base: UnsafeRawPointer, _ index: Int) -> UInt16 {
        FloatBits.floatToF16(base.loadUnaligned(fromByteOffset: 4 * index, as: Float.self))
    }
}

enum WorkspaceTransform {
    /// Elements of the output block buffer (2 MiB of fp16): big enough for long sequential writes,
    /// small enough to stay in cache while a transposed block is assembled.
    static let blockElements = 1 << 20

    /// Produces the fp16 contents of `plan` from `sources` (HF layout, in the plan's source order;
    /// nil = zeros, for a model without an output bias) and hands them to `emit` block by block.
    /// Throws if a value does not fit fp16 (|x| > 65504, or not finite).
    static func fill(_ plan: TensorPlan, sources: [TensorView?], buffer: UnsafeMutableBufferPointer<UInt16>,
                     emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        precondition(buffer.count >= blockElements)
        let dtypes = Set(sources.compactMap { $0?.dtype })
        precondition(dtypes.count <= 1, "\(plan.name): sources of mixed dtypes \(dtypes)")
        switch dtypes.first ?? .f16 {
        case .bf16: try fill(plan, sources: sources, buffer: buffer, as: FromBF16.self, emit: emit)
        case .f16: try fill(plan, sources: sources, buffer: buffer, as: FromF16.self, emit: emit)
        case .f32: try fill(plan, sources: sources, buffer: buffer, as: FromF32.self, emit: emit)
        default: preconditionFailure("\(plan.name): unsupported source dtype")
        }
    }

    private static func fill<S: HalfSource>(_ plan: TensorPlan, sources: [TensorView?], buffer: UnsafeMutableBufferPointer<UInt16>,
                                            as _: S.Type, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        let out = buffer.baseAddress!
        func flush(_ count: Int) throws {
            // An fp16 exponent of all ones is inf or NaN: the source value did not fit.
            for k in 0..<count where out[k] & 0x7C00 == 0x7C00 {
                throw FormatError.invalid(file: plan.sources.joined(separator: ", "), field: plan.name,
                                          expected: "values that fit fp16 (finite, |x| ≤ 65504); element \(k) does not")
            }
            try emit(UnsafeRawBufferPointer(start: out, count: count * 2))
        }
        switch plan.kind {
        case .rows:
            let total = plan.elementCount
            let available = sources[0]?.elementCount ?? 0
            let base = sources[0]?.data.baseAddress
            var start = 0
            while start < total {
                let count = min(blockElements, total - start)
                for k in 0..<count {
                    let index = start + k
                    out[k] = index < available ? S.half(base!, index) : 0
                }
                try flush(count)
                start += count
            }
        case let .gather(columns):
            for (c, column) in columns.enumerated() {
                out[c] = S.half(sources[column.source]!.data.baseAddress!, column.row)
            }
            try flush(columns.count)
        case let .transposed(columns, inputOffset):
            let rows = plan.shape[0], width = plan.shape[1]
            let blockRows = max(1, blockElements / width)
            let bases = sources.map { $0!.data.baseAddress! }
            let strides = sources.map { $0!.shape[1] }
            var i0 = 0
            while i0 < rows {
                let n = min(blockRows, rows - i0)
                for (c, column) in columns.enumerated() {
                    let base = bases[column.source]
                    let first = column.row * strides[column.source] + inputOffset + i0
                    var o = c
                    for bi in 0..<n {
                        out[o] = S.half(base, first + bi)
                        o += width
                    }
                }
                try flush(n * width)
                i0 += n
            }
        }
    }

    /// Puts the contents of one workspace file back into HF-layout tensors (the inverse of `fill`
    /// without the dtype change: elements of `elementSize` bytes are moved as they are).
    /// `file` holds `plan.shape`; `targets[s]` is the HF-layout buffer of source s (`[out, in]` row-major,
    /// `targetColumns[s]` elements per row; 1 for vectors).
    static func restore(_ plan: TensorPlan, file: UnsafeRawPointer, elementSize: Int,
                        targets: [UnsafeMutableRawPointer], targetColumns: [Int]) {
        switch plan.kind {
        case .rows:
            preconditionFailure("\(plan.name): row tensors are used in place, not restored")
        case let .gather(columns):
            for (c, column) in columns.enumerated() {
                (targets[column.source] + column.row * elementSize).copyMemory(from: file + c * elementSize, byteCount: elementSize)
            }
        case let .transposed(columns, inputOffset):
            let rows = plan.shape[0], width = plan.shape[1]
            // Blocks of input rows sized so the block of the file being read stays in cache.
            let blockRows = max(1, (256 * 1024 / elementSize) / width)
            var i0 = 0
            while i0 < rows {
                let n = min(blockRows, rows - i0)
                if elementSize == 2 {
                    // 64 × 64 tiles: the tile's source rows stay in L1 while each column of the
                    // tile is written out as one contiguous run (column-at-a-time over the whole
                    // block missed L1 on every element).
                    let src = file.assumingMemoryBound(to: UInt16.self)
                    let tile = 64
                    var t0 = 0
                    while t0 < n {
                        let tn = min(tile, n - t0)
                        var c0 = 0
                        while c0 < columns.count {
                            for c in c0..<min(c0 + tile, columns.count) {
                                let column = columns[c]
                                let dst = targets[column.source].assumingMemoryBound(to: UInt16.self)
                                    + column.row * targetColumns[column.source] + inputOffset + i0 + t0
                                var s = (i0 + t0) * width + c
                                for bi in 0..<tn {
                                    dst[bi] = src[s]
                                    s += width
                                }
                            }
                            c0 += tile
                        }
                        t0 += tn
                    }
                } else {
                    for (c, column) in columns.enumerated() {
                        let dst = targets[column.source] + (column.row * targetColumns[column.source] + inputOffset + i0) * elementSize
                        for bi in 0..<n {
                            (dst + bi * elementSize).copyMemory(from: file + ((i0 + bi) * width + c) * elementSize, byteCount: elementSize)
                        }
                    }
                }
                i0 += n
            }
        }
    }

    /// Drops the resident pages of an mmapped tensor (they stay in the page cache and are re-read on
    /// the next touch), so streaming through a checkpoint does not grow the process's memory.
    /// No effect on tensors that own their storage.
    static func releasePages(_ tensor: TensorView) {
        guard let mapping = tensor.owner as? MappedFile, let mapBase = mapping.bytes.baseAddress,
              let start = tensor.data.baseAddress, tensor.data.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let mapStart = Int(bitPattern: mapBase)
        let mapEnd = mapStart + (mapping.bytes.count + page - 1) / page * page
        let lower = max(mapStart, Int(bitPattern: start) / page * page)
        let upper = min(mapEnd, (Int(bitPattern: start) + tensor.data.count + page - 1) / page * page)
        guard upper > lower, let pointer = UnsafeMutableRawPointer(bitPattern: lower) else { return }
        _ = madvise(pointer, upper - lower, Int32(MADV_DONTNEED))
    }
}
