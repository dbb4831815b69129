// One sequence's KV cache with a pool of its own (chat sessions, perplexity, tests): every block
// of the private pool belongs to this sequence, in order. The batching engine instead shares one
// pool between all sequences.

public final class SequenceKVCache<B: Backend> {
    public let capacity: Int
    /// Positions already computed (the next token goes at `length`).
    public internal(set) var length: Int = 0
    let pool: KVPool<B>
    let table: [Int32]

    init(backend: B, layers: Int, rowWidth: Int, capacity: Int, blockSize: Int = 64) {
        self.capacity = capacity
        let count = (capacity + blockSize - 1) / blockSize
        pool = KVPool(backend: backend, layers: layers, rowWidth: rowWidth, blockSize: blockSize, blockCount: count)
        table = pool.blocks.allocate(count)!
    }

    /// Forgets positions from `position` on (the next forward overwrites them).
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= length)
        length = position
    }

    public var byteCount: Int { pool.byteCount }
}
