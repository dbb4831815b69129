// Fuzz target: tokenizer_config.json (bos/eos tokens, chat_template as a string or a list of
// named templates) and the chosen template parsed and rendered with a fixed conversation.
import Foundation
@testable import Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizerConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let config = try? TokenizerConfig(json: Data(bytes), file: "tokenizer_config.json"),
          let source = config.template else { return 0 }
    renderTemplate(source, bos: config.bos, eos: config.eos)
    return 0
}
