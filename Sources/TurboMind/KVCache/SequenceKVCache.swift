// One sequence's key/value cache, contiguous per layer: K and V rows for positions 0..<capacity,
// each row `kvHeads × headDim` floats. The paged cache of the batching engine replaces this for
// serving; a single conversation (chat, perplexity, tests) needs nothing more.

public final class SequenceKVCache<B: Backend> {
    public let capacity: Int
    /// Positions already computed (the next token goes at `length`).
    public internal(set) var length: Int = 0
    let keys: [B.Buffer]
    let values: [B.Buffer]
    let rowWidth: Int

    init(backend: B, layers: Int, kvHeads: Int, headDim: Int, capacity: Int) {
        self.capacity = capacity
        rowWidth = kvHeads * headDim
        keys = (0..<layers).map { _ in backend.allocate(capacity * kvHeads * headDim) }
        values = (0..<layers).map { _ in backend.allocate(capacity * kvHeads * headDim) }
    }

    /// Forgets positions from `position` on (the next forward overwrites them).
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= length)
        length = position
    }

    /// Bytes the cache holds (fp32 K and V).
    public var byteCount: Int { keys.count * 2 * capacity * rowWidth * 4 }
}
