// Fuzz target: the safetensors header ([u64 length][JSON header][data]) validator, from bytes.
// Any input must either be accepted with every tensor's bytes inside the data area, or throw.
import Foundation
@testable import TurboMind

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    bytes.withUnsafeBytes { raw in
        guard let header = try? SafetensorsFile.parse(raw, file: "fuzz.safetensors") else { return }
        let dataSize = raw.count - header.dataStart
        for entry in header.entries {
            // The validator's promise: every range lies inside the data area and matches dtype × shape.
            precondition(entry.dataOffsets.lowerBound >= 0 && entry.dataOffsets.upperBound <= dataSize,
                         "accepted \(entry.name) with offsets \(entry.dataOffsets) past the \(dataSize)-byte data area")
            let slice = UnsafeRawBufferPointer(rebasing: raw[(header.dataStart + entry.dataOffsets.lowerBound)..<(header.dataStart + entry.dataOffsets.upperBound)])
            _ = slice.first
            _ = slice.last
        }
    }
    return 0
}
