/// An open-addressing hash table from a pair of token ids to a merge (rank and resulting id),
/// much cheaper to probe than `Dictionary`'s SipHash in BPE's inner loop.
struct PairTable: Sendable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private let shift: UInt64
    private(set) var count = 0
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    @inline(__always)
    static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Inserts or replaces (a later merge of the same pair replaces an earlier one, as in
    /// Hugging Face tokenizers).
    mutating func set(_ a: Int32, _ b: Int32, rank: UInt32, newId: Int32) {
        let k = Self.key(a, b)
        var i = slot(k)
        while keys[i] != Self.empty && keys[i] != k { i = (i + 1) & mask }
        if keys[i] == Self.empty { count += 1 }
        keys[i] = k
        values[i] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: newId))
    }

    /// The merge of the pair (a, b): rank in the high 32 bits, new id in the low 32 bits.
    @inline(__always)
    func get(_ a: Int32, _ b: Int32) -> UInt64? {
        let k = Self.key(a, b)
        var i = slot(k)
        while true {
            let stored = keys[i]
            if stored == k { return values[i] }
            if stored == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }
}
