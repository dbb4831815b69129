// Reading an AutoAWQ GEMM directory back: each quantized linear's qweight/qzeros/scales checked
// against each other and unpacked. `dequantize` writes an fp32 HF directory of the same model
// ((q − zero) · scale for every linear, everything else copied): what the accuracy measurement and
// the tests evaluate with the fp engine, independently of the W4A16 runtime. Not a product path.
import Foundation
import Tokenizers
import TurboMind

public enum AWQCheckpoint {
    /// The quantized linears of `directory`: PREFIX → codes, zero points and scales.
    public static func linears(in directory: URL) throws -> [String: QuantizedMatrix] {
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        var out: [String: QuantizedMatrix] = [:]
        for name in checkpoint.tensorNames where name.hasSuffix(".qweight") {
            let prefix = String(name.dropLast(".qweight".count))
            let file = checkpoint.file(containing: name)?.url.path ?? directory.path
            let qweight = try checkpoint.tensor(name)
            let qzeros = try checkpoint.tensor(prefix + ".qzeros"), scales = try checkpoint.tensor(prefix + ".scales")
            guard qweight.dtype == .i32, qzeros.dtype == .i32, scales.dtype == .f16,
                  qweight.shape.count == 2, qzeros.shape.count == 2, scales.shape.count == 2 else {
                throw AWQError.badCheckpoint(file: file, detail: "\(prefix): expected qweight/qzeros I32 and scales F16 matrices, got \(qweight.dtype.rawValue) \(qweight.shape), \(qzeros.dtype.rawValue) \(qzeros.shape), \(scales.dtype.rawValue) \(scales.shape)")
            }
            let inF = qweight.shape[0], out8 = qweight.shape[1], groups = scales.shape[0], outF = scales.shape[1]
            guard outF == out8 * 8, groups > 0, inF % groups == 0, qzeros.shape == [groups, out8] else {
                throw AWQError.badCheckpoint(file: file, detail: "\(prefix): qweight \(qweight.shape), qzeros \(qzeros.shape) and scales \(scales.shape) do not describe one [in][out] linear in groups")
            }
            let t = AWQGEMMPacking.Tensors(qweight: int32s(qweight), qzeros: int32s(qzeros), scales: scales.toFloatArray(),
                                       inFeatures: inF, outFeatures: outF, groupSize: inF / groups)
            out[prefix] = AWQGEMMPacking.matrix(of: t)
        }
        return out
    }

    static func int32s(_ t: TensorView) -> [Int32] {
        (0..<t.elementCount).map { Int32(littleEndian: t.data.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
    }

    /// Writes `destination` (a new directory) as an fp32 HF model: every quantized linear
    /// dequantized to PREFIX.weight, the other tensors and files copied, quantization_config removed.
    public static func dequantize(_ directory: URL, to destination: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: destination, withIntermediateDirectories: true)
        let linears = try linears(in: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        for name in checkpoint.tensorNames {
            let parts = name.split(separator: ".")
            if let last = parts.last, ["qweight", "qzeros", "scales"].contains(String(last)),
               linears[parts.dropLast().joined(separator: ".")] != nil {
                if last == "qweight" {
                    let prefix = parts.dropLast().joined(separator: "."), m = linears[prefix]!
                    try writer.add(name: prefix + ".weight", shape: [m.rows, m.columns], values: m.dequantized(), dtype: .f32)
                }
                continue
            }
            try writer.add(try checkpoint.tensor(name))
        }
        try writer.write(to: destination.appendingPathComponent(SafetensorsCheckpoint.singleFileName))
        for name in try fm.contentsOfDirectory(atPath: directory.path) where AWQWriter.isCopied(name) || name == "config.json" {
            guard var data = fm.contents(atPath: directory.appendingPathComponent(name).path) else { continue }
            if name == "config.json", FoundationJSONGuard.accepts(data), var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
                config.removeValue(forKey: "quantization_config")
                config["torch_dtype"] = "float32"
                data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            }
            try DurableFile.write([UInt8](data), to: destination.appendingPathComponent(name))
        }
    }
}
