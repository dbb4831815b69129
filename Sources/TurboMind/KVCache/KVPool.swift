// The paged KV cache's memory: per layer, one K and one V buffer of `blockCount` blocks of
// `blockSize` token rows, each row `kvHeads × headDim` floats. Sequences own blocks through
// block tables; the BlockManager hands them out.

public final class KVPool<B: Backend> {
    public let blockSize: Int
    public let blockCount: Int
    public let rowWidth: Int
    let keys: [B.Buffer]
    let values: [B.Buffer]
    public let blocks: BlockManager

    init(backend: B, layers: Int, rowWidth: Int, blockSize: Int, blockCount: Int) {
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.rowWidth = rowWidth
        keys = (0..<layers).map { _ in backend.allocate(blockCount * blockSize * rowWidth) }
        values = (0..<layers).map { _ in backend.allocate(blockCount * blockSize * rowWidth) }
        blocks = BlockManager(blockCount: blockCount)
    }

    /// Blocks needed to hold `tokens` positions.
    public func blocksFor(tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Bytes of one block across all layers (fp32 K and V).
    public static func bytesPerBlock(layers: Int, rowWidth: Int, blockSize: Int) -> Int {
        layers * 2 * blockSize * rowWidth * 4
    }

    public var byteCount: Int { keys.count * 2 * blockCount * blockSize * rowWidth * 4 }
}
