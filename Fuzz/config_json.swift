// Fuzz target: config.json decoding (ModelConfig.decode) and, when it decodes, the workspace
// config.ini derived from it (WorkspaceConfig(model:) → text → parse back).
import Foundation
@testable import TurboMind

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let config = try? ModelConfig.decode(Data(bytes), file: "config.json") else { return 0 }
    _ = config.storedDType
    let workspace = WorkspaceConfig(model: config, modelName: "fuzz", tensorParaSize: 1, templateSessionLength: 2048,
                                    startId: config.bosTokenId ?? 1, endId: config.eosTokenIds.first ?? 2)
    if let ini = try? ConfigINI.parse(workspace.ini.text, file: "config.ini") { _ = try? WorkspaceConfig(ini: ini) }
    return 0
}
