// Fuzz target: a SentencePiece model (protobuf ModelProto) and, when it loads, encoding and
// decoding a fixed text.
import Foundation
@testable import Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSentencePiece(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let tokenizer = try? Tokenizer(sentencePieceData: Data(bytes), source: "tokenizer.model") else { return 0 }
    exerciseTokenizer(tokenizer)
    return 0
}
