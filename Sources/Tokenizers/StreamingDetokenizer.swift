/// Incremental detokenization for streaming generation: feed ids one at a time and get the text
/// they complete. Never emits part of a UTF-8 character; the concatenation of everything returned
/// (including `flush()`) equals `Tokenizer.decode` of all the ids.
public struct StreamingDetokenizer: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool

    // Byte-level decoders: the undecoded tail (at most an incomplete UTF-8 sequence).
    private var pendingBytes: [UInt8] = []

    // Other decoders (Hugging Face `DecodeStream`): a window of ids, the text of its first
    // `prefixIndex` ids, re-decoded with each new id so context-dependent decoders stay exact.
    private var ids: [Int] = []
    private var prefix = ""
    private var prefixIndex = 0

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the newly completed text (may be "").
    public mutating func append(_ id: Int) -> String {
        if let table = tokenizer.byteTable {
            if skipSpecialTokens && tokenizer.isSpecial(id) { return "" }
            table.append(id, to: &pendingBytes)
            let cut = Self.completeLength(pendingBytes)
            if cut == 0 { return "" }
            let text = String(decoding: pendingBytes[0..<cut], as: UTF8.self)
            pendingBytes.removeFirst(cut)
            return text
        }
        ids.append(id)
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        guard text.utf8.count > prefix.utf8.count, text.unicodeScalars.last != "\u{FFFD}" else { return "" }
        let newText = Self.suffix(of: text, after: prefix)
        let newPrefixIndex = ids.count - prefixIndex
        ids.removeFirst(prefixIndex)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixIndex = newPrefixIndex
        return newText
    }

    /// Returns whatever is left (an incomplete UTF-8 sequence becomes U+FFFD) and resets.
    public mutating func flush() -> String {
        if tokenizer.byteTable != nil {
            let text = String(decoding: pendingBytes, as: UTF8.self)
            pendingBytes.removeAll()
            return text
        }
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        let rest = text.utf8.count > prefix.utf8.count ? Self.suffix(of: text, after: prefix) : ""
        ids.removeAll()
        prefix = ""
        prefixIndex = 0
        return rest
    }

    /// The length of the longest prefix of `bytes` that does not end inside an incomplete UTF-8
    /// sequence. Cutting before a lead byte is safe: a lossy decoder always starts a new sequence
    /// there, so decoding the parts separately gives the same text as decoding them together.
    static func completeLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var p = n - 1
        var continuations = 0
        while p >= 0 && continuations < 3 && bytes[p] & 0xC0 == 0x80 {
            p -= 1
            continuations += 1
        }
        guard p >= 0 else { return n }
        let lead = bytes[p]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: needed = 1
        }
        return n - p < needed ? p : n
    }

    /// `text` without its leading `prefix` (by scalars, tolerating a prefix that changed).
    private static func suffix(of text: String, after prefix: String) -> String {
        if text.utf8.starts(with: prefix.utf8) {
            return String(decoding: text.utf8.dropFirst(prefix.utf8.count), as: UTF8.self)
        }
        let common = zip(text.unicodeScalars, prefix.unicodeScalars).prefix { $0 == $1 }.count
        return String(String.UnicodeScalarView(text.unicodeScalars.dropFirst(common)))
    }
}
