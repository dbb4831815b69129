import Foundation

/// tiktoken BPE files (`qwen.tiktoken`, Llama 3's original `tokenizer.model`): one
/// `base64(token bytes) rank` per line, the rank being the token id. tiktoken merges the adjacent
/// pair whose concatenation has the lowest rank, after taking a whole piece directly when it is a
/// token; this is expressed as a byte-level BPE model whose merge table maps every split of every
/// token to that token's rank, with `ignore_merges`.
public struct TiktokenSpec: Sendable {
    /// The pre-tokenization regex.
    public var pattern: String
    /// Special tokens (matched in the text) and their ids.
    public var specialTokens: [(String, Int)]
    /// Whether the input is NFC-normalized first (Qwen).
    public var nfc: Bool
    /// Special tokens added by `encode(_:addSpecialTokens: true)` before the text.
    public var bosToken: String?
    public var eosToken: String?

    public init(pattern: String, specialTokens: [(String, Int)], nfc: Bool = false,
                bosToken: String? = nil, eosToken: String? = nil) {
        self.pattern = pattern
        self.specialTokens = specialTokens
        self.nfc = nfc
        self.bosToken = bosToken
        self.eosToken = eosToken
    }

    /// Qwen-7B's `qwen.tiktoken` (151,643 ranks): its regex, NFC, `<|endoftext|>`,
    /// `<|im_start|>`, `<|im_end|>`, `<|extra_0|>`…`<|extra_204|>` from id 151643; no BOS.
    public static let qwen = TiktokenSpec(
        pattern: #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
        specialTokens: (["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (0..<205).map { "<|extra_\($0)|>" })
            .enumerated().map { ($1, 151_643 + $0) },
        nfc: true, bosToken: nil, eosToken: "<|endoftext|>")

    /// Llama 3's original `tokenizer.model` (128,000 ranks): its regex and 256 special tokens
    /// from id 128000; BOS `<|begin_of_text|>`.
    public static let llama3: TiktokenSpec = {
        var names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                     "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                     "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|reserved_special_token_4|>", "<|eot_id|>"]
        names += (5..<251).map { "<|reserved_special_token_\($0)|>" }
        return TiktokenSpec(
            pattern: #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
            specialTokens: names.enumerated().map { ($1, 128_000 + $0) },
            nfc: false, bosToken: "<|begin_of_text|>", eosToken: "<|end_of_text|>")
    }()
}

extension Tokenizer {
    /// Whether `data` looks like a tiktoken file (first line `base64 integer`).
    static func looksLikeTiktoken(_ data: Data) -> Bool {
        guard let firstLine = data.prefix(512).split(separator: UInt8(ascii: "\n")).first else { return false }
        let parts = firstLine.split(separator: UInt8(ascii: " "))
        guard parts.count == 2, Data(base64Encoded: Data(parts[0])) != nil else { return false }
        return parts[1].allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// Loads a tiktoken file; without `spec`, the file is recognized by its number of ranks
    /// (151,643: Qwen; 128,000: Llama 3), any other needs an explicit spec.
    public convenience init(tiktokenFile url: URL, spec: TiktokenSpec? = nil, chatTemplate: String? = nil) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        try self.init(tiktokenData: data, spec: spec, source: url.path, chatTemplate: chatTemplate)
    }

    public convenience init(tiktokenData data: Data, spec: TiktokenSpec?, source: String, chatTemplate: String? = nil) throws {
        // Parse "base64 rank" lines.
        var ranks: [([UInt8], Int)] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            lineNumber += 1
            let parts = line.split(separator: UInt8(ascii: " "))
            guard parts.count == 2, let bytes = Data(base64Encoded: Data(parts[0])),
                  let rank = Int(String(decoding: parts[1], as: UTF8.self)), rank >= 0, rank < 50_000_000 else {
                throw TokenizerError.invalidField(file: source, field: "line \(lineNumber)",
                                                  expected: "'<base64 token> <rank>'")
            }
            ranks.append(([UInt8](bytes), rank))
        }
        let resolved: TiktokenSpec
        if let spec {
            resolved = spec
        } else if ranks.count == 151_643 {
            resolved = .qwen
        } else if ranks.count == 128_000 {
            resolved = .llama3
        } else {
            throw TokenizerError.unsupported(
                file: source, component: "tiktoken file",
                detail: "\(ranks.count) ranks: not Qwen's qwen.tiktoken (151643) nor Llama 3's tokenizer.model (128000), so its regex and special tokens are unknown")
        }
        var tokens = [String?](repeating: nil, count: ranks.map(\.1).max().map { $0 + 1 } ?? 0)
        var byBytes: [[UInt8]: Int] = [:]
        byBytes.reserveCapacity(ranks.count)
        let table = ByteLevel.byteToCharacter
        for (bytes, rank) in ranks {
            guard tokens[rank] == nil else {
                throw TokenizerError.invalidField(file: source, field: "rank \(rank)", expected: "each rank once")
            }
            var s = String.UnicodeScalarView()
            for b in bytes { s.append(table[Int(b)]) }
            tokens[rank] = String(s)
            byBytes[bytes] = rank
        }
        for b in 0..<256 where byBytes[[UInt8(b)]] == nil {
            throw TokenizerError.invalidField(file: source, field: "byte \(b)", expected: "a rank for every single byte")
        }
        var merges = PairTable(capacity: ranks.count * 6)
        for (bytes, rank) in ranks where bytes.count > 1 {
            for k in 1..<bytes.count {
                if let l = byBytes[Array(bytes[..<k])], let r = byBytes[Array(bytes[k...])] {
                    merges.set(Int32(l), Int32(r), rank: UInt32(rank), newId: Int32(rank))
                }
            }
        }
        let model = BPEModel(tokens: tokens, merges: merges, unkId: nil, byteFallback: false, ignoreMerges: true)
        let regex: ScalarRegex
        do {
            regex = try ScalarRegex(resolved.pattern)
        } catch {
            throw TokenizerError.unsupported(file: source, component: "tiktoken pattern",
                                             detail: "\(error.message) in \(resolved.pattern.debugDescription)")
        }
        let added = resolved.specialTokens.map {
            AddedToken(id: $0.1, content: $0.0, special: true, normalized: false)
        }
        var post: PostProcessor? = nil
        if let bos = resolved.bosToken, let id = resolved.specialTokens.first(where: { $0.0 == bos })?.1 {
            post = .template([.special([id]), .sequence])
        }
        self.init(source: source, format: .tiktoken, normalizer: resolved.nfc ? .nfc : nil,
                  preTokenizer: .sequence([.split(.regex(regex), behavior: .isolated, invert: false),
                                           .byteLevel(addPrefixSpace: false, useRegex: false)]),
                  model: model, postProcessor: post, decoder: .byteLevel, addedTokens: added,
                  bosToken: resolved.bosToken, eosToken: resolved.eosToken, chatTemplate: chatTemplate,
                  normalizesBeforeAddedTokens: true)
    }
}
