/// GPT-2's reversible byte ↔ printable-character mapping ("bytes_to_unicode"): the printable
/// Latin-1 bytes map to themselves, the 68 others to U+0100 upward, in byte order.
enum ByteLevel {
    /// byte → scalar value.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// byte → byte-level character.
    static let byteToCharacter: [Unicode.Scalar] = byteToScalar.map { Unicode.Scalar($0)! }

    /// scalar value (< 0x144) → byte, or -1 when the scalar is not a byte-level character.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for b in 0..<256 { table[Int(byteToScalar[b])] = Int16(b) }
        return table
    }()

    /// The raw bytes a byte-level token stands for, or nil when some character of the token is not
    /// a byte-level character (Hugging Face then uses the token's own UTF-8).
    static func bytes(ofToken token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for s in token.unicodeScalars {
            guard s.value < 0x144 else { return nil }
            let b = scalarToByte[Int(s.value)]
            guard b >= 0 else { return nil }
            out.append(UInt8(b))
        }
        return out
    }

    /// The byte-level characters of a string's UTF-8 bytes.
    static func scalars(of text: String) -> [UInt32] {
        text.utf8.map { byteToScalar[Int($0)] }
    }
}
