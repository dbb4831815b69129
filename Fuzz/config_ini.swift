// Fuzz target: a workspace config.ini: INI parsing, the [llama] section (WorkspaceConfig), its
// model configuration and dtype, and writing it back out.
import Foundation
@testable import TurboMind

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigINI(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let text = String(validating: bytes, as: UTF8.self),
          let ini = try? ConfigINI.parse(text, file: "config.ini") else { return 0 }
    _ = ini.text
    guard let workspace = try? WorkspaceConfig(ini: ini) else { return 0 }
    _ = try? workspace.weightDType(file: "config.ini")
    _ = try? workspace.modelConfig(source: nil, hasOutputBias: false, file: "config.ini")
    _ = workspace.entries
    return 0
}
