// Fuzz target: tokenizer.json loading (normalizer, pre-tokenizer, model, decoder, post-processor,
// added tokens) and, when it loads, encoding and decoding a fixed text.
import Foundation
@testable import Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizerJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let tokenizer = try? Tokenizer(tokenizerJSON: Data(bytes), tokenizerConfigJSON: nil, source: "tokenizer.json") else { return 0 }
    exerciseTokenizer(tokenizer)
    return 0
}
