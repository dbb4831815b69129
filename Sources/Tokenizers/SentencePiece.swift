import Foundation

/// A minimal protobuf wire-format reader: enough for SentencePiece's `ModelProto`.
struct ProtobufReader {
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed32(UInt32)
    }

    struct Failure: Error {
        let message: String
    }

    private let bytes: ArraySlice<UInt8>
    private var pos: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        pos = bytes.startIndex
    }

    var atEnd: Bool { pos >= bytes.endIndex }

    mutating func varint() throws(Failure) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard pos < bytes.endIndex else { throw Failure(message: "truncated varint at byte \(pos)") }
            let b = bytes[pos]
            pos += 1
            guard shift < 64 else { throw Failure(message: "varint longer than 10 bytes at byte \(pos)") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// The next field: number and value; nil at the end.
    mutating func next() throws(Failure) -> (field: Int, value: Value)? {
        if atEnd { return nil }
        let key = try varint()
        let field = Int(key >> 3)
        guard field > 0 else { throw Failure(message: "field number 0 at byte \(pos)") }
        switch key & 7 {
        case 0:
            return (field, .varint(try varint()))
        case 1:
            guard pos + 8 <= bytes.endIndex else { throw Failure(message: "truncated fixed64 field \(field)") }
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(bytes[pos + k]) << (8 * UInt64(k)) }
            pos += 8
            return (field, .fixed64(v))
        case 2:
            let n = try varint()
            guard n <= UInt64(bytes.endIndex - pos) else { throw Failure(message: "field \(field) runs past the end") }
            let slice = bytes[pos..<(pos + Int(n))]
            pos += Int(n)
            return (field, .bytes(slice))
        case 5:
            guard pos + 4 <= bytes.endIndex else { throw Failure(message: "truncated fixed32 field \(field)") }
            var v: UInt32 = 0
            for k in 0..<4 { v |= UInt32(bytes[pos + k]) << (8 * UInt32(k)) }
            pos += 4
            return (field, .fixed32(v))
        default:
            throw Failure(message: "unsupported wire type \(key & 7) (groups) for field \(field)")
        }
    }
}

/// The parts of SentencePiece's `ModelProto` that encoding and decoding need.
struct SentencePieceModelProto {
    enum PieceType: Int {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    struct Piece {
        var piece = ""
        var score: Float = 0
        var type = PieceType.normal
    }

    enum ModelType: Int {
        case unigram = 1, bpe = 2, word = 3, char = 4
    }

    var pieces: [Piece] = []
    var modelType = ModelType.unigram
    var byteFallback = false
    var treatWhitespaceAsSuffix = false
    var unkId = 0
    var bosId = 1
    var eosId = 2
    var unkSurface = " \u{2047} "
    var normalizerName = ""
    var precompiledCharsmap = 0
    var addDummyPrefix = true
    var removeExtraWhitespaces = true
    var escapeWhitespaces = true

    init(_ data: [UInt8], file: String) throws(TokenizerError) {
        func fail(_ message: String) -> TokenizerError {
            .invalidField(file: file, field: "SentencePiece ModelProto", expected: "a valid protobuf message (\(message))")
        }
        func string(_ v: ProtobufReader.Value, _ what: String) throws(TokenizerError) -> String {
            guard case let .bytes(b) = v else { throw fail("\(what) is not length-delimited") }
            return String(decoding: b, as: UTF8.self)
        }
        func int(_ v: ProtobufReader.Value, _ what: String) throws(TokenizerError) -> Int {
            guard case let .varint(x) = v else { throw fail("\(what) is not a varint") }
            return Int(Int32(truncatingIfNeeded: x))
        }
        do {
            var top = ProtobufReader(data[...])
            while let (field, value) = try top.next() {
                switch field {
                case 1:
                    guard case let .bytes(b) = value else { throw fail("pieces[\(pieces.count)] is not a message") }
                    var r = ProtobufReader(b)
                    var p = Piece()
                    while let (f, v) = try r.next() {
                        switch f {
                        case 1: p.piece = try string(v, "piece")
                        case 2:
                            guard case let .fixed32(bits) = v else { throw fail("score is not a float") }
                            p.score = Float(bitPattern: bits)
                            // NaN equals nothing, not even itself: no rank, no Viterbi order.
                            guard !p.score.isNaN else { throw fail("pieces[\(pieces.count)].score is NaN") }
                        case 3:
                            let t = try int(v, "type")
                            guard let type = PieceType(rawValue: t) else { throw fail("piece type \(t)") }
                            p.type = type
                        default: break
                        }
                    }
                    pieces.append(p)
                case 2:
                    guard case let .bytes(b) = value else { throw fail("trainer_spec is not a message") }
                    var r = ProtobufReader(b)
                    while let (f, v) = try r.next() {
                        switch f {
                        case 3:
                            let t = try int(v, "model_type")
                            guard let type = ModelType(rawValue: t) else { throw fail("model_type \(t)") }
                            modelType = type
                        case 24: treatWhitespaceAsSuffix = try int(v, "treat_whitespace_as_suffix") != 0
                        case 35: byteFallback = try int(v, "byte_fallback") != 0
                        case 40: unkId = try int(v, "unk_id")
                        case 41: bosId = try int(v, "bos_id")
                        case 42: eosId = try int(v, "eos_id")
                        case 44: unkSurface = try string(v, "unk_surface")
                        default: break
                        }
                    }
                case 3:
                    guard case let .bytes(b) = value else { throw fail("normalizer_spec is not a message") }
                    var r = ProtobufReader(b)
                    while let (f, v) = try r.next() {
                        switch f {
                        case 1: normalizerName = try string(v, "normalizer_spec.name")
                        case 2:
                            guard case let .bytes(m) = v else { throw fail("precompiled_charsmap") }
                            precompiledCharsmap = m.count
                        case 3: addDummyPrefix = try int(v, "add_dummy_prefix") != 0
                        case 4: removeExtraWhitespaces = try int(v, "remove_extra_whitespaces") != 0
                        case 5: escapeWhitespaces = try int(v, "escape_whitespaces") != 0
                        default: break
                        }
                    }
                default:
                    break
                }
            }
        } catch let error as ProtobufReader.Failure {
            throw fail(error.message)
        } catch let error as TokenizerError {
            throw error
        } catch {
            throw fail("\(error)")
        }
        guard !pieces.isEmpty else { throw fail("no pieces") }
    }
}

/// SentencePiece's Unigram model: the segmentation of highest total score (Viterbi), unknown
/// characters scored `min score - 10` and consecutive unknowns merged into one.
final class UnigramModel: TokenizationModel {
    let idToToken: [String?]
    private let pieces: [[Unicode.Scalar]: (id: Int32, score: Float)]
    private let maxLength: Int
    private let unkId: Int
    private let unkScore: Float
    private let byteFallbackIds: [Int32]?

    init(proto: SentencePieceModelProto) {
        var pieces: [[Unicode.Scalar]: (id: Int32, score: Float)] = [:]
        var maxLength = 1
        var minScore = Float.greatestFiniteMagnitude
        var maxScore = -Float.greatestFiniteMagnitude
        for p in proto.pieces where p.type == .normal {
            minScore = min(minScore, p.score)
            maxScore = max(maxScore, p.score)
        }
        if minScore > maxScore { minScore = 0; maxScore = 0 }
        for (id, p) in proto.pieces.enumerated() where p.type == .normal || p.type == .userDefined {
            let s = Array(p.piece.unicodeScalars)
            guard !s.isEmpty, pieces[s] == nil else { continue }
            let score = p.type == .userDefined ? Float(s.count) * maxScore - 0.1 : p.score
            pieces[s] = (Int32(id), score)
            maxLength = max(maxLength, s.count)
        }
        self.pieces = pieces
        self.maxLength = maxLength
        idToToken = proto.pieces.map(\.piece)
        unkId = proto.unkId
        unkScore = minScore - 10
        byteFallbackIds = proto.byteFallback ? SentencePieceModel.byteIds(proto) : nil
    }

    func id(of token: [Unicode.Scalar]) -> Int? {
        pieces[token].map { Int($0.id) }
    }

    func tokenize(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [Int]) {
        let n = piece.count
        if n == 0 { return }
        let base = piece.startIndex
        var best = [Float](repeating: 0, count: n + 1)
        var from = [Int](repeating: -1, count: n + 1)
        var ids = [Int32](repeating: -1, count: n + 1)
        for start in 0..<n where start == 0 || from[start] >= 0 {
            let till = best[start]
            var hasSingle = false
            var key: [Unicode.Scalar] = []
            key.reserveCapacity(maxLength)
            for len in 1...min(maxLength, n - start) {
                key.append(piece[base + start + len - 1])
                guard let entry = pieces[key] else { continue }
                let end = start + len
                let candidate = till + entry.score
                if from[end] < 0 || candidate > best[end] {
                    best[end] = candidate
                    from[end] = start
                    ids[end] = entry.id
                }
                if len == 1 { hasSingle = true }
            }
            if !hasSingle {
                let end = start + 1
                let candidate = till + unkScore
                if from[end] < 0 || candidate > best[end] {
                    best[end] = candidate
                    from[end] = start
                    ids[end] = Int32(unkId)
                }
            }
        }
        // Backtrack, merging consecutive unknowns.
        var segments: [(Range<Int>, Int32)] = []
        var end = n
        while end > 0 {
            let start = from[end]
            let id = ids[end]
            if id == Int32(unkId), let last = segments.last, last.1 == Int32(unkId) {
                segments[segments.count - 1] = (start..<last.0.upperBound, id)
            } else {
                segments.append((start..<end, id))
            }
            end = start
        }
        for (range, id) in segments.reversed() {
            if id == Int32(unkId), let byteIds = byteFallbackIds {
                for s in piece[(base + range.lowerBound)..<(base + range.upperBound)] {
                    UTF8.encode(s) { out.append(Int(byteIds[Int($0)])) }
                }
            } else {
                out.append(Int(id))
            }
        }
    }
}

enum SentencePieceModel {
    /// `<0xXX>` byte piece ids (every byte must have one).
    static func byteIds(_ proto: SentencePieceModelProto) -> [Int32] {
        var ids = [Int32](repeating: Int32(proto.unkId), count: 256)
        for (id, p) in proto.pieces.enumerated() where p.type == .byte {
            let hex = p.piece.dropFirst(3).dropLast()
            if p.piece.hasPrefix("<0x"), let b = UInt8(hex, radix: 16) { ids[Int(b)] = Int32(id) }
        }
        return ids
    }

    /// Consecutive unknown characters become one unknown piece, as SentencePiece does.
    /// SentencePiece BPE as a `BPEModel`: merging the adjacent pair whose concatenation is the
    /// piece of highest score (leftmost among equals) is BPE with merge rank = score order.
    static func bpe(_ proto: SentencePieceModelProto) -> BPEModel {
        var byPiece: [String: Int] = [:]
        for (id, p) in proto.pieces.enumerated() where p.type == .normal || p.type == .userDefined {
            if byPiece[p.piece] == nil { byPiece[p.piece] = id }
        }
        // Dense ranks by descending score.
        let scores = Set(proto.pieces.map(\.score)).sorted(by: >)
        var rankOf: [Float: UInt32] = [:]
        for (r, s) in scores.enumerated() { rankOf[s] = UInt32(r) }
        var merges = PairTable(capacity: proto.pieces.count * 4)
        for (id, p) in proto.pieces.enumerated() where p.type == .normal || p.type == .userDefined {
            let s = Array(p.piece.unicodeScalars)
            guard s.count > 1 else { continue }
            for k in 1..<s.count {
                let left = String(String.UnicodeScalarView(s[..<k]))
                let right = String(String.UnicodeScalarView(s[k...]))
                if let l = byPiece[left], let r = byPiece[right] {
                    merges.set(Int32(l), Int32(r), rank: rankOf[p.score]!, newId: Int32(id))
                }
            }
        }
        let tokens: [String?] = proto.pieces.map { p in
            (p.type == .normal || p.type == .userDefined || p.type == .byte || p.type == .unknown) ? p.piece : nil
        }
        return BPEModel(tokens: tokens, merges: merges, unkId: proto.unkId >= 0 ? proto.unkId : nil,
                        byteFallback: proto.byteFallback, ignoreMerges: false, fuseUnk: true)
    }
}

extension Tokenizer {
    /// Loads a SentencePiece `tokenizer.model` (BPE or Unigram; identity normalization;
    /// `add_dummy_prefix`, `remove_extra_whitespaces`, byte fallback). Encoding with special
    /// tokens prepends BOS, as Hugging Face's LlamaTokenizer does by default.
    public convenience init(sentencePieceFile url: URL, chatTemplate: String? = nil) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        try self.init(sentencePieceData: data, source: url.path, chatTemplate: chatTemplate)
    }

    public convenience init(sentencePieceData data: Data, source: String, chatTemplate: String? = nil) throws {
        let proto = try SentencePieceModelProto([UInt8](data), file: source)
        func unsupported(_ detail: String) -> TokenizerError {
            .unsupported(file: source, component: "SentencePiece model", detail: detail)
        }
        if !(proto.normalizerName.isEmpty || proto.normalizerName == "identity") || proto.precompiledCharsmap > 0 {
            throw unsupported("normalization rule '\(proto.normalizerName)' with a precompiled charsmap (only 'identity' is supported)")
        }
        if proto.treatWhitespaceAsSuffix { throw unsupported("treat_whitespace_as_suffix") }
        if !proto.escapeWhitespaces { throw unsupported("escape_whitespaces = false") }
        let model: any TokenizationModel
        switch proto.modelType {
        case .bpe:
            if proto.pieces.contains(where: { $0.type == .unused }) {
                throw unsupported("BPE model with UNUSED pieces (resegmentation)")
            }
            model = SentencePieceModel.bpe(proto)
        case .unigram:
            model = UnigramModel(proto: proto)
        case .word, .char:
            throw unsupported("model type \(proto.modelType) (supported: BPE, Unigram)")
        }
        var added: [AddedToken] = []
        var overrides: [Int: String] = [:]
        for (id, p) in proto.pieces.enumerated() {
            switch p.type {
            case .userDefined:
                added.append(AddedToken(id: id, content: p.piece, special: false, normalized: false))
            case .control:
                overrides[id] = ""
            case .unknown:
                overrides[id] = proto.unkSurface
            default:
                break
            }
        }
        func piece(_ id: Int) -> String? { id >= 0 && id < proto.pieces.count ? proto.pieces[id].piece : nil }
        var steps: [Decoder] = [.replace(pattern: ["\u{2581}"], content: [" "]), .byteFallback, .fuse]
        if proto.addDummyPrefix { steps.append(.strip(content: " ", start: 1, stop: 0)) }
        self.init(source: source, format: .sentencePiece,
                  normalizer: .sentencePiece(addDummyPrefix: proto.addDummyPrefix,
                                             removeExtraWhitespaces: proto.removeExtraWhitespaces),
                  preTokenizer: nil, model: model,
                  postProcessor: proto.bosId >= 0 ? .template([.special([proto.bosId]), .sequence]) : nil,
                  decoder: .sequence(steps), addedTokens: added,
                  bosToken: piece(proto.bosId), eosToken: piece(proto.eosId), chatTemplate: chatTemplate,
                  normalizesBeforeAddedTokens: true, decodeOverrides: overrides)
    }
}
