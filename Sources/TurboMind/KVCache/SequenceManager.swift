// Which sequences hold KV blocks, and who gives them up under pressure. A sequence is
//   waiting  — has a request, no blocks reserved yet;
//   active   — in the running batch (prefilling or decoding);
//   cached   — an idle interactive session whose blocks are kept for its next turn;
//   evicted  — an idle session whose blocks were reclaimed; its token history is kept and the
//              next turn recomputes it.
// Under pressure the least recently used cached session is evicted first; an active sequence
// never is.

final class Sequence {
    enum Status: Equatable { case waiting, active, cached, evicted }

    let session: UInt64
    var status: Status = .waiting
    /// Every token of the conversation so far (prompt and generated), computed or not.
    var tokens: [Int32] = []
    /// Positions whose K/V are in `blocks`.
    var cachedLength = 0
    var blocks: [Int32] = []
    /// Logical clock of the last use, for LRU eviction.
    var lastUsed: UInt64 = 0

    init(session: UInt64) { self.session = session }
}

final class SequenceManager {
    let pool: BlockManager
    let blockSize: Int
    private(set) var sequences: [UInt64: Sequence] = [:]
    private var clock: UInt64 = 0

    init(pool: BlockManager, blockSize: Int) {
        self.pool = pool
        self.blockSize = blockSize
    }

    func sequence(for session: UInt64) -> Sequence {
        if let s = sequences[session] { return s }
        let s = Sequence(session: session)
        sequences[session] = s
        return s
    }

    func touch(_ s: Sequence) {
        clock += 1
        s.lastUsed = clock
    }

    func blocksFor(tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Grows `s` to `count` blocks, evicting least recently used cached sessions (never `s`
    /// itself, never an active one) when the pool is short. False, with nothing changed
    /// except possibly evictions, when even that cannot free enough.
    func reserve(_ s: Sequence, blocks count: Int) -> Bool {
        let need = count - s.blocks.count
        guard need > 0 else { return true }
        while pool.freeCount < need {
            let victims = sequences.values.filter { $0.status == .cached && $0 !== s }
            guard let lru = victims.min(by: { $0.lastUsed < $1.lastUsed }) else { return false }
            evict(lru)
        }
        s.blocks += pool.allocate(need)!
        return true
    }

    /// Gives back the blocks beyond what `keep` positions need.
    func shrink(_ s: Sequence, toPositions keep: Int) {
        let keepBlocks = blocksFor(tokens: keep)
        guard s.blocks.count > keepBlocks else { return }
        pool.free(Array(s.blocks[keepBlocks...]))
        s.blocks.removeSubrange(keepBlocks...)
    }

    func evict(_ s: Sequence) {
        pool.free(s.blocks)
        s.blocks = []
        s.cachedLength = 0
        s.status = .evicted
    }

    func remove(_ s: Sequence) {
        pool.free(s.blocks)
        s.blocks = []
        sequences[s.session] = nil
    }

    /// Sessions in LRU order of their last use (oldest first) among cached ones.
    var cachedSessionsByAge: [UInt64] {
        sequences.values.filter { $0.status == .cached }.sorted { $0.lastUsed < $1.lastUsed }.map(\.session)
    }

    /// Blocks held by sequences equal blocks allocated, and the pool's own bookkeeping agrees.
    func accountingIsConsistent() -> Bool {
        let held = sequences.values.reduce(0) { $0 + $1.blocks.count }
        return held == pool.usedCount && pool.accountingIsConsistent()
    }
}
