// The few dense operations the AWQ search needs, on row-major fp32 matrices: products through
// OpenBLAS (threaded), scaling of columns and rows.
import CBLAS
import Foundation

enum AWQMath {
    /// `a · bᵀ`: a `[m][k]`, b `[n][k]` → `[m][n]`.
    static func matmulNT(_ a: Matrix, _ b: Matrix) -> Matrix {
        precondition(a.columns == b.columns, "matmulNT: \(a.rows)×\(a.columns) · (\(b.rows)×\(b.columns))ᵀ")
        var c = Matrix(rows: a.rows, columns: b.rows)
        guard a.rows > 0, b.rows > 0, a.columns > 0 else { return c }
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(a.rows), Int32(b.rows), Int32(a.columns),
                                1, pa.baseAddress, Int32(a.columns), pb.baseAddress, Int32(b.columns), 0, pc.baseAddress, Int32(b.rows))
                }
            }
        }
        return c
    }

    /// `a · b`: a `[m][k]`, b `[k][n]` → `[m][n]`.
    static func matmul(_ a: Matrix, _ b: Matrix) -> Matrix {
        precondition(a.columns == b.rows)
        var c = Matrix(rows: a.rows, columns: b.columns)
        guard a.rows > 0, b.columns > 0, a.columns > 0 else { return c }
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(a.rows), Int32(b.columns), Int32(a.columns),
                                1, pa.baseAddress, Int32(a.columns), pb.baseAddress, Int32(b.columns), 0, pc.baseAddress, Int32(b.columns))
                }
            }
        }
        return c
    }

    /// Columns `range` of `m`, as their own matrix.
    static func columns(_ m: Matrix, _ range: Range<Int>) -> Matrix {
        var out = [Float]()
        out.reserveCapacity(m.rows * range.count)
        for r in 0..<m.rows { out += m.values[(r * m.columns + range.lowerBound)..<(r * m.columns + range.upperBound)] }
        return Matrix(rows: m.rows, columns: range.count, values: out)
    }

    /// Multiplies column c of `m` by `s[c]`.
    static func scaleColumns(_ m: inout Matrix, by s: [Float]) {
        precondition(s.count == m.columns)
        let cols = m.columns
        m.values.withUnsafeMutableBufferPointer { v in
            for r in 0..<m.rows { for c in 0..<cols { v[r * cols + c] *= s[c] } }
        }
    }

    /// Divides column c of `m` by `s[c]`.
    static func divideColumns(_ m: inout Matrix, by s: [Float]) {
        scaleColumns(&m, by: s.map { 1 / $0 })
    }

    /// Divides row r of `m` by `s[r]`.
    static func divideRows(_ m: inout Matrix, by s: [Float]) {
        precondition(s.count == m.rows)
        let cols = m.columns
        m.values.withUnsafeMutableBufferPointer { v in
            for r in 0..<m.rows {
                let inv = 1 / s[r]
                for c in 0..<cols { v[r * cols + c] *= inv }
            }
        }
    }

    /// Rows of `a` then rows of `b` (same width).
    static func stacked(_ parts: [Matrix]) -> Matrix {
        Matrix(rows: parts.reduce(0) { $0 + $1.rows }, columns: parts[0].columns, values: parts.flatMap(\.values))
    }

    /// Σ (a − b)² / count, in Double.
    static func meanSquaredDifference(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        guard !a.isEmpty else { return 0 }
        var sum = 0.0
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                var chunk: Float = 0
                for i in 0..<pa.count {
                    let d = pa[i] - pb[i]
                    chunk += d * d
                    if i & 1023 == 1023 { sum += Double(chunk); chunk = 0 }
                }
                sum += Double(chunk)
            }
        }
        return sum / Double(a.count)
    }

    static func silu(_ x: Float) -> Float { x / (1 + Foundation.exp(-x)) }
}
