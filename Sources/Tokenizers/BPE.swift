import Foundation

/// The BPE model of a Hugging Face `tokenizer.json`: vocabulary, merges by rank, unknown-token and
/// byte-fallback handling, and a cache of piece → ids.
final class BPEModel: TokenizationModel {
    /// token (exact scalars) → id.
    let vocab: [[Unicode.Scalar]: Int]
    /// id → token, for every id of the vocabulary (nil for holes).
    let idToToken: [String?]
    /// single-scalar token → id, for building initial symbols without string lookups.
    private let scalarIds: [UInt32: Int32]
    private let merges: PairTable
    private let unkId: Int32?
    private let fuseUnk: Bool
    private let byteFallback: Bool
    /// `<0xXX>` token id of each byte, -1 when absent.
    private let byteFallbackIds: [Int32]
    private let continuingSubwordPrefix: [Unicode.Scalar]?
    private let endOfWordSuffix: [Unicode.Scalar]?
    private let ignoreMerges: Bool
    private let cache = WordCache(capacity: 100_000)

    /// Pieces longer than this are not cached (as Hugging Face, to bound memory).
    static let maxCachedLength = 256
    /// Words with more initial symbols than this are merged with a heap instead of by scanning.
    static let heapThreshold = 48

    init(_ field: JSONField) throws(TokenizerError) {
        let file = field.file
        let type = try field.child("type").optionalString() ?? "BPE"
        guard type == "BPE" else {
            throw TokenizerError.unsupported(
                file: file, component: "model",
                detail: "type '\(type)' at '\(field.path).type' (only BPE is supported)")
        }
        if let dropout = try field.child("dropout").optionalDouble(), dropout > 0 {
            throw TokenizerError.unsupported(
                file: file, component: "model option",
                detail: "BPE dropout \(dropout) at '\(field.path).dropout' (only deterministic BPE, dropout null or 0, is supported)")
        }

        // Vocabulary.
        var vocab: [[Unicode.Scalar]: Int] = [:]
        var maxId = -1
        let entries = try field.child("vocab").entries()
        vocab.reserveCapacity(entries.count)
        for (token, idField) in entries {
            let id = try idField.int()
            guard id >= 0 && id < 50_000_000 else { throw idField.error("a token id in 0..<50000000") }
            vocab[Array(token.unicodeScalars)] = id
            maxId = max(maxId, id)
        }
        var idToToken = [String?](repeating: nil, count: maxId + 1)
        var scalarIds: [UInt32: Int32] = [:]
        for (token, idField) in entries {
            let id = try idField.int()
            idToToken[id] = token
            let scalars = token.unicodeScalars
            if scalars.count == 1 { scalarIds[scalars.first!.value] = Int32(id) }
        }
        self.vocab = vocab
        self.idToToken = idToToken
        self.scalarIds = scalarIds

        let prefix = try field.child("continuing_subword_prefix").optionalString().flatMap { $0.isEmpty ? nil : Array($0.unicodeScalars) }
        let suffix = try field.child("end_of_word_suffix").optionalString().flatMap { $0.isEmpty ? nil : Array($0.unicodeScalars) }
        continuingSubwordPrefix = prefix
        endOfWordSuffix = suffix
        ignoreMerges = try field.child("ignore_merges").bool(default: false)
        fuseUnk = try field.child("fuse_unk").bool(default: false)
        byteFallback = try field.child("byte_fallback").bool(default: false)
        if let unk = try field.child("unk_token").optionalString() {
            guard let id = vocab[Array(unk.unicodeScalars)] else {
                throw TokenizerError.invalidField(
                    file: file, field: "\(field.path).unk_token",
                    expected: "a token of the vocabulary, found '\(unk)' which is not in it")
            }
            unkId = Int32(id)
        } else {
            unkId = nil
        }
        var fallback = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = "<0x" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true) + ">"
            if let id = vocab[Array(name.unicodeScalars)] { fallback[b] = Int32(id) }
        }
        byteFallbackIds = fallback

        // Merges: ["a", "b"] pairs or legacy "a b" strings; rank = position in the list.
        let mergesField = field.child("merges")
        let mergeList = mergesField.isNull ? [] : try mergesField.array()
        var table = PairTable(capacity: max(mergeList.count, 1))
        var rank: UInt32 = 0
        for item in mergeList {
            var left: String
            var right: String
            if let value = item.value, case let .string(line) = value {
                if line.hasPrefix("#version") { continue }
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw item.error("a merge \"a b\" with exactly one space") }
                left = String(parts[0])
                right = String(parts[1])
            } else {
                let pair = try item.array()
                guard pair.count == 2 else { throw item.error("a merge [\"a\", \"b\"] of two strings") }
                left = try pair[0].string()
                right = try pair[1].string()
            }
            let a = Array(left.unicodeScalars)
            let b = Array(right.unicodeScalars)
            guard let aId = vocab[a] else {
                throw item.error("a merge of tokens in the vocabulary ('\(left)' is not in it)")
            }
            guard let bId = vocab[b] else {
                throw item.error("a merge of tokens in the vocabulary ('\(right)' is not in it)")
            }
            var merged = a
            merged.append(contentsOf: b.dropFirst(prefix?.count ?? 0))
            guard let newId = vocab[merged] else {
                throw item.error("a merge whose result is in the vocabulary ('\(left)\(right)' is not in it)")
            }
            table.set(Int32(aId), Int32(bId), rank: rank, newId: Int32(newId))
            rank += 1
        }
        merges = table
    }

    func id(of token: [Unicode.Scalar]) -> Int? { vocab[token] }

    /// A model built from its parts: `tokens[id]` (nil for holes), merges by (left id, right id),
    /// `<0xXX>` byte tokens used when `byteFallback` (SentencePiece BPE and tiktoken loaders).
    init(tokens: [String?], merges: PairTable, unkId: Int?, byteFallback: Bool, ignoreMerges: Bool, fuseUnk: Bool = false) {
        var vocab: [[Unicode.Scalar]: Int] = [:]
        vocab.reserveCapacity(tokens.count)
        var scalarIds: [UInt32: Int32] = [:]
        for (id, token) in tokens.enumerated() {
            guard let token else { continue }
            let scalars = Array(token.unicodeScalars)
            if vocab[scalars] == nil { vocab[scalars] = id }
            if scalars.count == 1 && scalarIds[scalars[0].value] == nil { scalarIds[scalars[0].value] = Int32(id) }
        }
        self.vocab = vocab
        self.idToToken = tokens
        self.scalarIds = scalarIds
        self.merges = merges
        self.unkId = unkId.map { Int32($0) }
        self.fuseUnk = fuseUnk
        self.byteFallback = byteFallback
        var fallback = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = "<0x" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true) + ">"
            if let id = vocab[Array(name.unicodeScalars)] { fallback[b] = Int32(id) }
        }
        byteFallbackIds = fallback
        continuingSubwordPrefix = nil
        endOfWordSuffix = nil
        self.ignoreMerges = ignoreMerges
    }

    /// Appends the ids of one pre-tokenized piece.
    func tokenize(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [Int]) {
        if piece.isEmpty { return }
        if ignoreMerges, let id = vocab[Array(piece)] {
            out.append(id)
            return
        }
        let cacheable = piece.count <= Self.maxCachedLength
        let key = Array(piece)
        if cacheable, let hit = cache.get(key) {
            out.append(contentsOf: hit)
            return
        }
        let ids = merge(initialSymbols(piece))
        let result = ids.map { Int($0) }
        if cacheable { cache.set(key, result) }
        out.append(contentsOf: result)
    }

    /// The initial symbols of a piece (Hugging Face `merge_word` before merging).
    private func initialSymbols(_ piece: ArraySlice<Unicode.Scalar>) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(piece.count)
        var pendingUnk: Int32? = nil
        let last = piece.endIndex - 1
        for i in piece.indices {
            let s = piece[i]
            var id: Int32? = nil
            var text: [Unicode.Scalar]? = nil
            if (continuingSubwordPrefix == nil || i == piece.startIndex) && (endOfWordSuffix == nil || i != last) {
                id = scalarIds[s.value]
            } else {
                var t: [Unicode.Scalar] = []
                if i != piece.startIndex, let p = continuingSubwordPrefix { t.append(contentsOf: p) }
                t.append(s)
                if i == last, let sfx = endOfWordSuffix { t.append(contentsOf: sfx) }
                id = vocab[t].map { Int32($0) }
                text = t
            }
            if let id {
                if let unk = pendingUnk {
                    symbols.append(unk)
                    pendingUnk = nil
                }
                symbols.append(id)
                continue
            }
            if byteFallback {
                var bytes: [UInt8] = []
                for scalar in text ?? [s] { UTF8.encode(scalar) { bytes.append($0) } }
                if bytes.allSatisfy({ byteFallbackIds[Int($0)] >= 0 }) {
                    for b in bytes { symbols.append(byteFallbackIds[Int(b)]) }
                    continue
                }
            }
            if let unkId {
                if pendingUnk != nil && !fuseUnk { symbols.append(unkId) }
                pendingUnk = unkId
            }
        }
        if let unk = pendingUnk { symbols.append(unk) }
        return symbols
    }

    /// Applies merges, lowest rank first, leftmost first among equal ranks.
    private func merge(_ initial: [Int32]) -> [Int32] {
        if initial.count < 2 { return initial }
        if initial.count > Self.heapThreshold { return mergeWithHeap(initial) }
        return mergeByScanning(initial)
    }

    /// O(n²) merging for short words: fastest when n is small.
    func mergeByScanning(_ initial: [Int32]) -> [Int32] {
        var symbols = initial
        // merges[k] describes the pair (symbols[k], symbols[k+1]); UInt64.max when none.
        var pairs = [UInt64](repeating: .max, count: symbols.count - 1)
        for k in 0..<(symbols.count - 1) {
            pairs[k] = merges.get(symbols[k], symbols[k + 1]) ?? .max
        }
        while !pairs.isEmpty {
            var best = 0
            var bestValue = pairs[0]
            // A value holds the rank in its high bits; among equal ranks the leftmost wins.
            for k in 1..<pairs.count where pairs[k] >> 32 < bestValue >> 32 {
                best = k
                bestValue = pairs[k]
            }
            if bestValue == .max { break }
            symbols[best] = Int32(truncatingIfNeeded: bestValue & 0xFFFF_FFFF)
            symbols.remove(at: best + 1)
            pairs.remove(at: best)
            if best > 0 {
                pairs[best - 1] = merges.get(symbols[best - 1], symbols[best]) ?? .max
            }
            if best < pairs.count {
                pairs[best] = merges.get(symbols[best], symbols[best + 1]) ?? .max
            }
        }
        return symbols
    }

    /// O(n log n) merging for long words, with a binary heap of (rank, position) and a linked
    /// list of symbols (Hugging Face `Word::merge_all`).
    func mergeWithHeap(_ initial: [Int32]) -> [Int32] {
        let n = initial.count
        var symbol = initial
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let m = merges.get(symbol[i], symbol[i + 1]) {
                heap.push(rank: UInt32(m >> 32), position: UInt32(i))
            }
        }
        while let (rank, position) = heap.pop() {
            let pos = Int(position)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            guard let m = merges.get(symbol[pos], symbol[right]), UInt32(m >> 32) == rank else { continue }
            symbol[pos] = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(pos) }
            if prev[pos] >= 0 {
                let p = Int(prev[pos])
                if let pm = merges.get(symbol[p], symbol[pos]) {
                    heap.push(rank: UInt32(pm >> 32), position: UInt32(p))
                }
            }
            if next[pos] >= 0 {
                if let nm = merges.get(symbol[pos], symbol[Int(next[pos])]) {
                    heap.push(rank: UInt32(nm >> 32), position: UInt32(pos))
                }
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        var i = 0
        while i >= 0 && i < n {
            out.append(symbol[i])
            i = Int(next[i])
        }
        return out
    }
}

/// A binary min-heap of (rank, position), ordered by rank then position.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(rank: UInt32, position: UInt32) {
        items.append(UInt64(rank) << 32 | UInt64(position))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> (UInt32, UInt32)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var smallest = i
                if l < items.count && items[l] < items[smallest] { smallest = l }
                if r < items.count && items[r] < items[smallest] { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return (UInt32(top >> 32), UInt32(truncatingIfNeeded: top))
    }
}

/// A thread-safe cache of piece → ids, cleared when full.
final class WordCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [[Unicode.Scalar]: [Int]] = [:]
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func get(_ key: [Unicode.Scalar]) -> [Int]? {
        lock.lock()
        defer { lock.unlock() }
        return entries[key]
    }

    func set(_ key: [Unicode.Scalar], _ value: [Int]) {
        lock.lock()
        defer { lock.unlock() }
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }
}
