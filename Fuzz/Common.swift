// Shared by every fuzz target (compiled into each one): the libFuzzer input as bytes.
import Foundation

/// The input libFuzzer hands over, copied (the pointer is only valid during the call).
func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A fixed conversation for rendering templates: system, user, assistant, user, with characters
/// templates treat specially (quotes, braces, newlines, non-ASCII).
let fuzzMessages: [(role: String, content: String)] = [
    ("system", "You are a helpful assistant."),
    ("user", "Hello! {{ not a tag }} \"quotes\" 'single'\nnew line — ünïcödé 你好"),
    ("assistant", "Hi, how can I help?"),
    ("user", "Tell me a joke."),
]
