// The CPU backend: fp32 activations in 64-byte aligned host memory, weights left in their stored
// precision (mmapped bf16/fp16/fp32) and widened inside the CKernels loops.
import CKernels

/// fp32 host memory. A view shares its parent's storage and keeps it alive.
public final class CPUBuffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    private let storage: CPUBuffer?

    init(count: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1) * 4)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        self.count = count
        storage = nil
    }

    init(viewOf parent: CPUBuffer, offset: Int, count: Int) {
        precondition(offset >= 0 && offset + count <= parent.count, "buffer view \(offset)+\(count) outside \(parent.count)")
        pointer = parent.pointer + offset
        self.count = count
        storage = parent.storage ?? parent
    }

    deinit {
        if storage == nil { UnsafeMutableRawPointer(pointer).deallocate() }
    }
}

/// A weight matrix as the CPU kernels read it: the stored bytes, untouched.
public struct CPUMatrix: @unchecked Sendable {
    let tensor: TensorView
    let rows: Int
    let columns: Int
    let type: ck_dtype
    var base: UnsafeRawPointer { tensor.data.baseAddress! }
}

public final class CPUBackend: Backend, @unchecked Sendable {
    public typealias Buffer = CPUBuffer
    public typealias Matrix = CPUMatrix

    /// Starts the kernel thread pool with `threads` threads (0 = all cores this process may use).
    public init(threads: Int = 0) {
        ck_init(Int32(threads))
    }

    public var description: String {
        "CPU (\(String(cString: ck_isa())), \(ck_threads()) threads)"
    }

    public func allocate(_ count: Int) -> CPUBuffer { CPUBuffer(count: count) }

    public func view(_ buffer: CPUBuffer, offset: Int, count: Int) -> CPUBuffer {
        CPUBuffer(viewOf: buffer, offset: offset, count: count)
    }

    public func upload(_ values: [Float]) -> CPUBuffer {
        let b = CPUBuffer(count: values.count)
        write(values, to: b)
        return b
    }

    public func write(_ values: [Float], to buffer: CPUBuffer) {
        precondition(values.count <= buffer.count, "write of \(values.count) floats into \(buffer.count)")
        values.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public func download(_ buffer: CPUBuffer, count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: buffer.pointer, count: min(count, buffer.count)))
    }

    public func prepare(matrix t: TensorView) throws -> CPUMatrix {
        guard t.shape.count == 2 else {
            throw FormatError.shapeMismatch(file: "weights", tensor: t.name, expected: [t.shape.first ?? 0, t.elementCount / max(t.shape.first ?? 1, 1)], actual: t.shape)
        }
        let type: ck_dtype
        switch t.dtype {
        case .bf16: type = CK_BF16
        case .f16: type = CK_F16
        case .f32: type = CK_F32
        default:
            throw FormatError.unsupportedDType(file: "weights", tensor: t.name, dtype: t.dtype, supported: DType.weightTypes)
        }
        // The kernels read fp32 with aligned-agnostic loads, so any byte offset in the file is fine.
        return CPUMatrix(tensor: t, rows: t.shape[0], columns: t.shape[1], type: type)
    }

    public func embed(_ table: CPUMatrix, ids: [Int32], out: CPUBuffer) {
        precondition(ids.count * table.columns <= out.count)
        ids.withUnsafeBufferPointer {
            ck_gather_rows(table.base, table.type, Int32(table.columns), $0.baseAddress, Int32(ids.count), out.pointer)
        }
    }

    public func linear(_ x: CPUBuffer, rows: Int, weight: CPUMatrix, bias: CPUBuffer?, out: CPUBuffer, mode: LinearMode) {
        precondition(rows * weight.columns <= x.count && rows * weight.rows <= out.count, "linear \(weight.tensor.name): buffers too small")
        let b = bias.map { UnsafePointer($0.pointer) }
        // Below a handful of rows the GEMV kernel streams weights once and wins; above, BLAS does.
        if mode == .decode || rows < 8 {
            ck_matmul_wt(weight.base, weight.type, x.pointer, out.pointer, Int32(rows), Int32(weight.rows), Int32(weight.columns), b)
        } else {
            ck_gemm_wt(weight.base, weight.type, x.pointer, out.pointer, Int32(rows), Int32(weight.rows), Int32(weight.columns), b)
        }
    }

    public func rmsNorm(_ x: CPUBuffer, weight: CPUBuffer, out: CPUBuffer, rows: Int, dim: Int, eps: Float) {
        ck_rmsnorm(x.pointer, weight.pointer, out.pointer, Int32(rows), Int32(dim), eps)
    }

    public func rope(_ x: CPUBuffer, tokens: Int, heads: Int, headDim: Int, stride: Int, positions: [Int32], inverseFrequencies: CPUBuffer) {
        positions.withUnsafeBufferPointer {
            ck_rope(x.pointer, Int32(tokens), Int32(heads), Int32(headDim), Int32(stride), $0.baseAddress, inverseFrequencies.pointer)
        }
    }

    public func storeKV(_ rows: CPUBuffer, rowStride: Int, count: Int, pool: CPUBuffer, blocks: [Int32], start: Int,
                        rowWidth: Int, blockSize: Int) {
        precondition((start + count + blockSize - 1) / blockSize <= blocks.count, "storeKV: block table too short")
        blocks.withUnsafeBufferPointer {
            ck_kv_store(pool.pointer, Int32(rowWidth), Int32(blockSize), $0.baseAddress, Int32(start),
                        rows.pointer, Int32(rowStride), Int32(count))
        }
    }

    public func attention(q: CPUBuffer, kPool: CPUBuffer, vPool: CPUBuffer, blockSize: Int, sequences: [AttentionSequence],
                          out: CPUBuffer, heads: Int, kvHeads: Int, headDim: Int, scale: Float) {
        guard !sequences.isEmpty else { return }
        // All block tables in one array, so every descriptor can point into it for the call.
        var offsets: [Int] = []
        var flat: [Int32] = []
        for s in sequences {
            precondition((s.start + s.tokens + blockSize - 1) / blockSize <= s.blocks.count, "attention: block table too short")
            offsets.append(flat.count)
            flat += s.blocks
        }
        flat.withUnsafeBufferPointer { tables in
            let descriptors = sequences.indices.map { i in
                ck_attn_seq(q_row: Int32(sequences[i].queryRow), tokens: Int32(sequences[i].tokens),
                            start: Int32(sequences[i].start), blocks: tables.baseAddress! + offsets[i])
            }
            ck_attention_paged(q.pointer, Int32(heads * headDim), kPool.pointer, vPool.pointer, Int32(kvHeads * headDim),
                               Int32(blockSize), descriptors, Int32(descriptors.count), out.pointer, Int32(heads * headDim),
                               Int32(heads), Int32(kvHeads), Int32(headDim), scale)
        }
    }

    public func siluMul(_ gate: CPUBuffer, _ up: CPUBuffer, count: Int) {
        ck_silu_mul(gate.pointer, up.pointer, count)
    }

    public func add(_ y: CPUBuffer, _ x: CPUBuffer, count: Int) {
        ck_add(y.pointer, x.pointer, count)
    }
}
