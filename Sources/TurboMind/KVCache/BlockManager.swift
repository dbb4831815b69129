// The KV cache's block allocator: a fixed pool of block ids handed out and taken back in O(1),
// with the accounting checked (a block freed twice or never allocated is a bug, not a warning).

public final class BlockManager: @unchecked Sendable {
    public let blockCount: Int
    private var freeList: [Int32]
    private var allocated: [Bool]

    public init(blockCount: Int) {
        self.blockCount = blockCount
        // Hand out low ids first (pop from the end).
        freeList = (0..<Int32(blockCount)).reversed()
        allocated = [Bool](repeating: false, count: blockCount)
    }

    public var freeCount: Int { freeList.count }
    public var usedCount: Int { blockCount - freeList.count }

    /// `n` blocks, or nil (and nothing taken) when fewer are free.
    public func allocate(_ n: Int) -> [Int32]? {
        guard n <= freeList.count else { return nil }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let b = freeList.removeLast()
            allocated[Int(b)] = true
            out.append(b)
        }
        return out
    }

    public func free(_ blocks: [Int32]) {
        for b in blocks {
            precondition(b >= 0 && Int(b) < blockCount && allocated[Int(b)], "BlockManager: block \(b) freed but not allocated")
            allocated[Int(b)] = false
            freeList.append(b)
        }
    }

    /// True when every block is either free exactly once or allocated.
    public func accountingIsConsistent() -> Bool {
        var seen = [Bool](repeating: false, count: blockCount)
        for b in freeList {
            if seen[Int(b)] || allocated[Int(b)] { return false }
            seen[Int(b)] = true
        }
        return seen.indices.allSatisfy { seen[$0] != allocated[$0] }
    }
}
