// Safetensors: write → mmap read round trips, sharded checkpoints, and one test per kind of corrupt
// file, each checking that the error names the problem.

import Foundation
import Testing
@testable import TurboMind

@Suite("Safetensors")
struct SafetensorsTests {
    /// Builds a safetensors file by hand: the length prefix (overridable), the header text, the data bytes.
    static func rawFile(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        let length = declaredLength ?? UInt64(headerBytes.count)
        var bytes: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
        bytes += headerBytes
        bytes += data
        return bytes
    }

    /// Writes `bytes` to a new file and tries to open it; returns the error's message.
    static func openError(_ bytes: [UInt8], name: String = "bad.safetensors") throws -> String {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        do {
            _ = try SafetensorsFile(url: url)
        } catch let error as FormatError {
            let message = error.description
            #expect(message.contains(name), "message should name the file: \(message)")
            return message
        }
        Issue.record("opening \(name) should have failed")
        return ""
    }

    static func values(_ count: Int, seed: UInt64) -> [Float] {
        TinyModel.normals(name: "values", seed: seed, count: count, mean: 0, std: 1)
    }

    // MARK: Round trips

    @Test("write then mmap-read round trip", arguments: [DType.bf16, .f16, .f32])
    func roundTrip(dtype: DType) throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = SafetensorsTests.values(3 * 5, seed: 1)
        let b = SafetensorsTests.values(7, seed: 2)
        var writer = SafetensorsWriter(metadata: ["format": "pt", "quote\"d": "line\nbreak"])
        try writer.add(name: "a.weight", shape: [3, 5], values: a, dtype: dtype)
        try writer.add(name: "b.bias", shape: [7], values: b, dtype: dtype)
        let ints: [Int32] = [1, -2, 3, Int32.max]
        try writer.add(name: "ids", dtype: .i32, shape: [4], bytes: ints.withUnsafeBytes { [UInt8]($0) })
        try writer.add(name: "empty", shape: [0, 5], values: [], dtype: dtype)
        let url = dir.appendingPathComponent("model.safetensors")
        try writer.write(to: url)

        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == ["format": "pt", "quote\"d": "line\nbreak"])
        #expect(Set(file.tensorNames) == ["a.weight", "b.bias", "ids", "empty"])
        #expect(file.dataStart % 8 == 0, "header padded so the data area is 8-byte aligned")

        let tensorA = try file.tensor("a.weight")
        #expect(tensorA.dtype == dtype)
        #expect(tensorA.shape == [3, 5])
        // Exact: the values were rounded to the dtype once when written and are widened exactly when read.
        #expect(tensorA.toFloatArray() == TensorView.rounded(a, to: dtype))
        #expect(try file.tensor("b.bias").toFloatArray() == TensorView.rounded(b, to: dtype))
        #expect(try file.tensor("empty").elementCount == 0)

        let idView = try file.tensor("ids")
        #expect(idView.dtype == .i32)
        #expect((0..<4).map { idView.data.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self) } == ints)

        // Zero copy: the view points into the file mapping.
        let mapping = file.mapping.bytes
        let start = tensorA.data.baseAddress!
        #expect(start >= mapping.baseAddress! && start + tensorA.data.count <= mapping.baseAddress! + mapping.count)

        // The view keeps the mapping alive after the file object is gone.
        let survivor: TensorView = try { try SafetensorsFile(url: url).tensor("b.bias") }()
        #expect(survivor.toFloatArray() == TensorView.rounded(b, to: dtype))

        // No temporary files left behind by the atomic write.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.safetensors"])
    }

    @Test("reads a file written by Python safetensors (golden logits fixture)")
    func readsPythonWrittenFile() throws {
        let url = FormatFixtures.smollm2.appendingPathComponent("golden-logits.safetensors")
        let file = try SafetensorsFile(url: url)
        #expect(file.tensorNames.count == 7)
        for name in file.tensorNames {
            let tensor = try file.tensor(name)
            #expect(tensor.dtype == .f32)
            #expect(tensor.shape == [49152])
            #expect(tensor.toFloatArray().allSatisfy { $0.isFinite })
        }
    }

    @Test("sharded checkpoint via model.safetensors.index.json")
    func shardedCheckpoint() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        let x = SafetensorsTests.values(12, seed: 3), y = SafetensorsTests.values(6, seed: 4), z = SafetensorsTests.values(2, seed: 5)
        var first = SafetensorsWriter()
        try first.add(name: "x", shape: [3, 4], values: x, dtype: .bf16)
        try first.write(to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        var second = SafetensorsWriter()
        try second.add(name: "y", shape: [6], values: y, dtype: .f16)
        try second.add(name: "z", shape: [2], values: z, dtype: .f32)
        try second.write(to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        let index = """
        {"metadata": {"total_size": 44}, "weight_map": {"x": "model-00001-of-00002.safetensors",
         "y": "model-00002-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}}
        """
        try Data(index.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))

        let checkpoint = try SafetensorsCheckpoint(directory: dir)
        #expect(checkpoint.files.count == 2)
        #expect(checkpoint.tensorNames == ["x", "y", "z"])
        #expect(try checkpoint.tensor("x").toFloatArray() == TensorView.rounded(x, to: .bf16))
        #expect(try checkpoint.tensor("y").toFloatArray() == TensorView.rounded(y, to: .f16))
        #expect(try checkpoint.tensor("z").toFloatArray() == z)
        #expect(checkpoint.file(containing: "y")?.url.lastPathComponent == "model-00002-of-00002.safetensors")

        // A missing tensor names itself and every file searched.
        let error = #expect(throws: FormatError.self) { try checkpoint.tensor("w") }
        let message = error?.description ?? ""
        #expect(message.contains("'w'") && message.contains("model.safetensors.index.json")
            && message.contains("model-00001-of-00002.safetensors") && message.contains("model-00002-of-00002.safetensors"), "\(message)")
    }

    @Test("index naming a shard that does not exist")
    func indexWithMissingShard() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"weight_map": {"x": "model-00001-of-00002.safetensors"}}"#.utf8)
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        let error = #expect(throws: FormatError.self) { try SafetensorsCheckpoint(directory: dir) }
        let message = error?.description ?? ""
        #expect(message.contains("model-00001-of-00002.safetensors") && message.contains("does not exist"), "\(message)")
    }

    @Test("index placing a tensor in a shard that lacks it")
    func indexDisagreesWithShard() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        var writer = SafetensorsWriter()
        try writer.add(name: "x", shape: [2], values: [1, 2], dtype: .f32)
        try writer.write(to: dir.appendingPathComponent("shard.safetensors"))
        try Data(#"{"weight_map": {"x": "shard.safetensors", "ghost": "shard.safetensors"}}"#.utf8)
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        let error = #expect(throws: FormatError.self) { try SafetensorsCheckpoint(directory: dir) }
        #expect(error?.description.contains("'ghost'") == true, "\(error?.description ?? "")")
    }

    @Test("directory with neither model.safetensors nor an index")
    func noCheckpoint() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data([1, 2, 3]).write(to: dir.appendingPathComponent("pytorch_model.bin"))
        let error = #expect(throws: FormatError.self) { try SafetensorsCheckpoint(directory: dir) }
        let message = error?.description ?? ""
        #expect(message.contains("model.safetensors") && message.contains("model.safetensors.index.json")
            && message.contains("pytorch_model.bin") && message.contains(dir.path), "\(message)")
    }

    @Test("weights must be BF16, F16 or F32")
    func unsupportedWeightDType() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        var writer = SafetensorsWriter()
        try writer.add(name: "counts", dtype: .i64, shape: [2], bytes: [UInt8](repeating: 0, count: 16))
        try writer.write(to: dir.appendingPathComponent("model.safetensors"))
        let checkpoint = try SafetensorsCheckpoint(directory: dir)
        #expect(try checkpoint.tensor("counts").dtype == .i64, "non-float dtypes are listed")
        let error = #expect(throws: FormatError.self) { try checkpoint.weight("counts") }
        let message = error?.description ?? ""
        #expect(message.contains("'counts'") && message.contains("I64") && message.contains("BF16, F16, F32"), "\(message)")
    }

    @Test("writer rejects a duplicate name and a wrong byte count")
    func writerValidation() throws {
        var writer = SafetensorsWriter()
        try writer.add(name: "a", shape: [2], values: [1, 2], dtype: .f32)
        #expect(throws: FormatError.duplicateTensor(file: "(safetensors writer)", tensor: "a")) {
            try writer.add(name: "a", shape: [2], values: [1, 2], dtype: .f32)
        }
        let error = #expect(throws: FormatError.self) {
            try writer.add(name: "b", dtype: .bf16, shape: [3], bytes: [0, 0, 0, 0])
        }
        #expect(error?.description.contains("need 6 bytes") == true, "\(error?.description ?? "")")
    }

    // MARK: Corrupt files, one kind each

    @Test("truncated file: shorter than the header says")
    func truncated() throws {
        let header = #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#
        let bytes = SafetensorsTests.rawFile(header: header, data: [UInt8](repeating: 0, count: 24))
        let message = try SafetensorsTests.openError(Array(bytes.dropLast(5)))
        #expect(message.contains("truncated") && message.contains("24") && message.contains("19"), "\(message)")
    }

    @Test("header length past the end of the file")
    func headerPastEnd() throws {
        let header = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let bytes = SafetensorsTests.rawFile(header: header, data: [0, 0, 0, 0], declaredLength: 5000)
        let message = try SafetensorsTests.openError(bytes)
        #expect(message.contains("header length 5000") && message.contains("past the end of the file"), "\(message)")
    }

    @Test("header length over the 100 MB limit")
    func headerTooLarge() throws {
        let dir = try TinyModel.makeTemporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A sparse file larger than the limit, so the length does fit in the file and the limit is what trips.
        let url = dir.appendingPathComponent("huge.safetensors")
        let length = UInt64(SafetensorsFile.maxHeaderLength + 1)
        var prefix = Data((0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) })
        prefix.append(contentsOf: Array("{".utf8))
        try prefix.write(to: url)
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: length + 64)
        try handle.close()
        let error = #expect(throws: FormatError.self) { try SafetensorsFile(url: url) }
        let message = error?.description ?? ""
        #expect(message.contains("huge.safetensors") && message.contains("exceeds the limit"), "\(message)")
    }

    @Test("file shorter than the length prefix")
    func tooShort() throws {
        let message = try SafetensorsTests.openError([1, 2, 3])
        #expect(message.contains("3 bytes") && message.contains("8-byte"), "\(message)")
    }

    @Test("tensor range outside the file")
    func rangeOutsideFile() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"far":{"dtype":"F32","shape":[2],"data_offsets":[1000,1008]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [UInt8](repeating: 0, count: 16)))
        #expect(message.contains("'far'") && message.contains("[1000, 1008)") && message.contains("outside the data area")
            && message.contains("16 bytes"), "\(message)")
    }

    @Test("overlapping tensor ranges")
    func overlapping() throws {
        let header = #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [UInt8](repeating: 0, count: 16)))
        #expect(message.contains("'a'") && message.contains("'b'") && message.contains("overlap"), "\(message)")
    }

    @Test("unknown dtype")
    func unknownDType() throws {
        let header = #"{"q":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [0, 0, 0, 0]))
        #expect(message.contains("'q'") && message.contains("'Q4_K'") && message.contains("BF16"), "\(message)")
    }

    @Test("shape × dtype size differs from the byte range")
    func shapeDoesNotMatchRange() throws {
        let header = #"{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [UInt8](repeating: 0, count: 8)))
        #expect(message.contains("'w'") && message.contains("[2, 3]") && message.contains("BF16")
            && message.contains("need 12 bytes") && message.contains("span 8 bytes"), "\(message)")
    }

    @Test("header that is not JSON")
    func headerNotJSON() throws {
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: "{not json at all", data: []))
        #expect(message.contains("not a JSON object") && message.contains("{not json"), "\(message)")
    }

    @Test("header entry missing a field")
    func headerEntryMissingField() throws {
        let header = #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [0, 0, 0, 0]))
        #expect(message.contains("'w'") && message.contains("'shape'") && message.contains("missing"), "\(message)")
    }

    // MARK: Float formats

    @Test("f16 conversion matches Swift's Float16 (round to nearest even), both ways")
    func halfConversion() {
        var generator = TinyModel.SplitMix64(seed: 42)
        var samples: [Float] = [0, -0, 1, -1, 65504, 65520, 65519.99, -65536, 1e-8, 5.96e-8, 6.1e-5, 2.98e-8,
                                .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        for _ in 0..<20000 {
            let bits = UInt32(truncatingIfNeeded: generator.next())
            // Mostly values in half's range, some anywhere.
            let exponent = UInt32.random(in: 100...145, using: &generator)
            samples.append(Float(bitPattern: (bits & 0x807F_FFFF) | (exponent << 23)))
        }
        for value in samples {
            #expect(FloatBits.floatToF16(value) == Float16(value).bitPattern, "\(value)")
        }
        for bits in UInt16.min...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let actual = FloatBits.f16ToFloat(bits)
            #expect(actual.bitPattern == expected.bitPattern || (actual.isNaN && expected.isNaN), "bits \(bits)")
        }
        #expect(FloatBits.floatToF16(.nan).isNaNHalf)
    }

    @Test("bf16 conversion: widening is exact, narrowing rounds to nearest even")
    func bf16Conversion() {
        #expect(FloatBits.bf16ToFloat(0x3F80) == 1)
        #expect(FloatBits.bf16ToFloat(0xC000) == -2)
        #expect(FloatBits.floatToBF16(1) == 0x3F80)
        // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1).
        #expect(FloatBits.floatToBF16(1 + 0x1p-8) == 0x3F80)
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        #expect(FloatBits.floatToBF16(1 + 3 * 0x1p-8) == 0x3F82)
        #expect(FloatBits.floatToBF16(1 + 0x1p-8 + 0x1p-20) == 0x3F81)
        #expect(FloatBits.bf16ToFloat(FloatBits.floatToBF16(.nan)).isNaN)
        #expect(FloatBits.floatToBF16(.infinity) == 0x7F80)
        #expect(FloatBits.floatToBF16(Float.greatestFiniteMagnitude) == 0x7F80, "rounds up to infinity")
    }
}

extension UInt16 {
    fileprivate var isNaNHalf: Bool { (self & 0x7C00) == 0x7C00 && (self & 0x03FF) != 0 }
}

/// Paths of the checked-in test fixtures.
enum FormatFixtures {
    /// `Tests/` of this repository, found from this source file's path.
    static let tests: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.lastPathComponent != "Tests" && url.path != "/" { url.deleteLastPathComponent() }
        return url
    }()

    static var smollm2: URL { tests.appendingPathComponent("Fixtures/smollm2") }
}
