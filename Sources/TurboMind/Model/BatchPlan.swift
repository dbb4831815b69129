// One forward step's batch as a plain value, built once on the host and handed to the backend in
// one call (TurboMind's LlamaBatch keeps such pinned host copies beside its device buffers): the
// token ids and positions of every row, the KV-cache slot each row writes, every sequence's block
// table, the rotary frequencies, and which rows' logits come back. Kernels never reach back into
// engine state.

/// Which positions' logits a forward pass returns for one item.
public enum LogitsRequest: Sendable, Equatable {
    case none
    /// The last position only: `[vocab]`.
    case last
    /// Every position of the item: `[tokens][vocab]`.
    case all
}

/// One sequence's part of a forward step.
public struct ForwardItem: Sendable {
    public var tokens: [Int32]
    /// Position of the first token (the sequence's cached length).
    public var start: Int
    /// The sequence's block table (covering start + tokens.count positions).
    public var blocks: [Int32]
    public var logits: LogitsRequest

    public init(tokens: [Int32], start: Int, blocks: [Int32], logits: LogitsRequest) {
        self.tokens = tokens
        self.start = start
        self.blocks = blocks
        self.logits = logits
    }
}

public struct BatchPlan: Sendable {
    /// One sequence of the step: its query rows are queryRow..<queryRow+tokens, at positions
    /// start..<start+tokens; its block table is blockTables[tableOffset..<tableOffset+tableCount].
    public struct Sequence: Sendable, Equatable {
        public var queryRow: Int
        public var tokens: Int
        public var start: Int
        public var tableOffset: Int
        public var tableCount: Int
    }

    /// Per row.
    public private(set) var tokens: [Int32] = []
    public private(set) var positions: [Int32] = []
    /// The KV-cache slot (block × blockSize + position % blockSize) each row's K/V goes to.
    public private(set) var slots: [Int32] = []
    public private(set) var sequences: [Sequence] = []
    public private(set) var blockTables: [Int32] = []
    /// Rows whose logits are computed, in output order.
    public private(set) var logitRows: [Int32] = []
    /// Logit rows of each item, in item order.
    public private(set) var logitCounts: [Int] = []
    /// Rotary inverse frequencies: `frequencySetCount` sets of headDim/2 floats, set 0 the model's own.
    public private(set) var frequencies: [Float]
    /// The frequency set of each row; nil when every row uses set 0.
    public private(set) var frequencySet: [Int32]?
    /// `.decode` when every item has one token: then every linear uses the batch-invariant kernel.
    public let mode: LinearMode
    /// `.decode` unless some item wants every position's logits.
    public let logitsMode: LinearMode
    public let blockSize: Int

    public var rows: Int { tokens.count }

    /// The plan of `items` for a cache of `blockSize`-token blocks with `blockCount` blocks, for a
    /// model of `vocab` tokens whose rotary frequencies for a sequence of length L are
    /// `frequencies(L)` (nil: the base set applies at every length).
    public init(items: [ForwardItem], blockSize: Int, blockCount: Int, vocab: Int, baseFrequencies: [Float],
                frequencies: ((Int) -> [Float]?)? = nil) throws {
        guard !items.isEmpty, items.allSatisfy({ !$0.tokens.isEmpty }) else { throw EngineError.emptyInput }
        self.blockSize = blockSize
        self.frequencies = baseFrequencies
        mode = items.allSatisfy { $0.tokens.count == 1 } ? .decode : .prefill
        logitsMode = items.contains { $0.logits == .all } ? .prefill : .decode
        var sets: [Int32] = []
        var extraSets = 0
        for item in items {
            if let bad = item.tokens.first(where: { $0 < 0 || Int($0) >= vocab }) {
                throw EngineError.tokenOutOfRange(id: bad, vocab: vocab)
            }
            let end = item.start + item.tokens.count
            guard item.start >= 0, (end + blockSize - 1) / blockSize <= item.blocks.count,
                  item.blocks.allSatisfy({ $0 >= 0 && Int($0) < blockCount }) else {
                throw EngineError.invalidConfig("block table of \(item.blocks.count) blocks does not cover positions \(item.start)..<\(end) in a cache of \(blockCount) blocks")
            }
            let row = tokens.count
            sequences.append(Sequence(queryRow: row, tokens: item.tokens.count, start: item.start,
                                      tableOffset: blockTables.count, tableCount: item.blocks.count))
            blockTables += item.blocks
            var set: Int32 = 0
            if let f = frequencies?(end) {   // dynamic NTK: this sequence's length has its own set
                self.frequencies += f
                extraSets += 1
                set = Int32(extraSets)
            }
            for (t, id) in item.tokens.enumerated() {
                let p = item.start + t
                tokens.append(id)
                positions.append(Int32(p))
                slots.append(item.blocks[p / blockSize] * Int32(blockSize) + Int32(p % blockSize))
                sets.append(set)
            }
            switch item.logits {
            case .none: logitCounts.append(0)
            case .last:
                logitRows.append(Int32(tokens.count - 1))
                logitCounts.append(1)
            case .all:
                logitRows += (row..<tokens.count).map(Int32.init)
                logitCounts.append(item.tokens.count)
            }
        }
        frequencySet = extraSets > 0 ? sets : nil
    }
}
