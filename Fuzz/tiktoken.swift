// Fuzz target: a tiktoken file (lines of "base64-token rank"), with the spec guessed from the
// file (none given) and with Qwen's spec, then encoding and decoding a fixed text.
import Foundation
@testable import Tokenizers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTiktoken(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Data(fuzzBytes(data, size))
    _ = Tokenizer.looksLikeTiktoken(bytes)
    if let tokenizer = try? Tokenizer(tiktokenData: bytes, spec: nil, source: "fuzz.tiktoken") { exerciseTokenizer(tokenizer) }
    if let tokenizer = try? Tokenizer(tiktokenData: bytes, spec: .qwen, source: "qwen.tiktoken") { exerciseTokenizer(tokenizer) }
    return 0
}
