// Fuzz target: a chat template (Jinja) as raw text: lexing, parsing and rendering with a fixed
// conversation, bos/eos tokens and add_generation_prompt both ways.
import Foundation
@testable import Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJinja(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let source = String(validating: bytes, as: UTF8.self) else { return 0 }
    renderTemplate(source, bos: "<s>", eos: "</s>")
    return 0
}
