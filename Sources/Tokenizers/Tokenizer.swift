import Foundation

/// A Hugging Face `tokenizer.json` tokenizer (BPE model; byte-level as GPT-2/SmolLM2/Llama 3,
/// or byte-fallback as Llama 2), with `tokenizer_config.json`'s special tokens and chat template.
///
/// Encoding follows Hugging Face tokenizers step by step: added tokens are split out of the raw
/// text (leftmost, longest first), the rest is normalized, pre-tokenized into pieces, and each
/// piece is merged by the BPE model; the post-processor then adds special tokens.
public final class Tokenizer: Sendable {
    /// Where the tokenizer came from (the tokenizer.json path), for messages.
    public let source: String
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let model: any TokenizationModel
    /// Normalize the whole text before looking for added tokens (Qwen's tiktoken tokenizer
    /// applies NFC to the input first).
    let normalizesBeforeAddedTokens: Bool
    /// Per-id text used by `decode` instead of the token (SentencePiece: control tokens decode to
    /// nothing, the unknown token to " ⁇ ").
    let decodeOverrides: [Int: String]
    /// The kind of file the tokenizer was read from.
    public let format: TokenizerFormat
    let postProcessor: PostProcessor?
    let decoder: Decoder?
    let addedTokens: [AddedToken]
    private let addedById: [Int: AddedToken]
    private let addedByContent: [[Unicode.Scalar]: Int]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let specialIds: Set<Int>
    /// Per-id bytes when the decoder is ByteLevel alone (decoding is then concatenation).
    let byteTable: TokenByteTable?

    /// Number of ids: one more than the largest id of the vocabulary and the added tokens.
    public let vocabSize: Int
    /// tokenizer_config.json `bos_token` / `eos_token` (a string or `{"content": …}`).
    public let bosToken: String?
    public let eosToken: String?
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    /// The Jinja chat template: chat_template.jinja when given, else tokenizer_config.json's
    /// `chat_template` (a string, or the one named "default" of a list of named templates).
    public let chatTemplate: String?
    /// `chatTemplate` parsed once, when the tokenizer was built, or the reason it does not parse.
    private let parsedChatTemplate: Result<ChatTemplate, TokenizerError>?

    /// Loads `tokenizer.json`, and `tokenizer_config.json` and `chat_template.jinja` when present.
    public convenience init(directory: URL) throws {
        let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let jinjaURL = directory.appendingPathComponent("chat_template.jinja")
        let fm = FileManager.default
        guard fm.fileExists(atPath: tokenizerURL.path) else {
            throw TokenizerError.missingFile(path: tokenizerURL.path)
        }
        func read(_ url: URL) throws -> Data {
            do {
                return try Data(contentsOf: url)
            } catch {
                throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
            }
        }
        let tokenizerData = try read(tokenizerURL)
        let configData = fm.fileExists(atPath: configURL.path) ? try read(configURL) : nil
        var jinja: String? = nil
        if fm.fileExists(atPath: jinjaURL.path) {
            jinja = String(decoding: try read(jinjaURL), as: UTF8.self)
        }
        try self.init(tokenizerJSON: tokenizerData, tokenizerConfigJSON: configData,
                      chatTemplateJinja: jinja, source: tokenizerURL.path, chatTemplateJinjaFile: jinjaURL.path)
    }

    /// Builds a tokenizer from the contents of tokenizer.json and tokenizer_config.json;
    /// `source` names tokenizer.json in error messages.
    public convenience init(tokenizerJSON: Data, tokenizerConfigJSON: Data?, source: String) throws {
        try self.init(tokenizerJSON: tokenizerJSON, tokenizerConfigJSON: tokenizerConfigJSON,
                      chatTemplateJinja: nil, source: source)
    }

    /// As `init(tokenizerJSON:tokenizerConfigJSON:source:)`, with the contents of a
    /// chat_template.jinja file, which takes precedence over tokenizer_config.json's template.
    ///
    /// The chat template is parsed here: one with a syntax error or over the sandbox's limits
    /// fails (naming chat_template.jinja or tokenizer_config.json), so that a broken template is
    /// reported when the model is loaded, not at the first prompt. One that only uses a construct
    /// the interpreter does not support loads; `checkedChatTemplate()` reports it.
    public convenience init(tokenizerJSON: Data, tokenizerConfigJSON: Data?, chatTemplateJinja: String?, source: String) throws {
        try self.init(tokenizerJSON: tokenizerJSON, tokenizerConfigJSON: tokenizerConfigJSON, chatTemplateJinja: chatTemplateJinja,
                      source: source, chatTemplateJinjaFile: nil)
    }

    convenience init(tokenizerJSON: Data, tokenizerConfigJSON: Data?, chatTemplateJinja: String?, source: String,
                     chatTemplateJinjaFile: String?) throws {
        let root = try JSONParser.parse(tokenizerJSON, file: source)
        let top = JSONField(file: source, path: "", value: root)
        _ = try top.object()

        let normalizer = try Normalizer.load(top.child("normalizer"))
        let preTokenizer = try PreTokenizer.load(top.child("pre_tokenizer"))
        let model = try BPEModel(top.child("model"))
        let postProcessor = try PostProcessor.load(top.child("post_processor"))
        let decoder = try Decoder.load(top.child("decoder"))
        var added: [AddedToken] = []
        let addedField = top.child("added_tokens")
        if !addedField.isNull {
            for item in try addedField.array() { added.append(try AddedToken(item)) }
        }
        let configName = Tokenizer.configName(for: source)
        let config = try TokenizerConfig(json: tokenizerConfigJSON, file: configName)
        self.init(source: source, format: .tokenizerJSON, normalizer: normalizer, preTokenizer: preTokenizer,
                  model: model, postProcessor: postProcessor, decoder: decoder, addedTokens: added,
                  bosToken: config.bos, eosToken: config.eos, chatTemplate: chatTemplateJinja ?? config.template)
        try checkChatTemplateParses(file: chatTemplateJinja != nil
            ? chatTemplateJinjaFile ?? Tokenizer.siblingName("chat_template.jinja", of: source)
            : "\(configName): field 'chat_template'")
    }

    /// Throws when the chat template is broken (a syntax error, or over a sandbox limit),
    /// naming `file`, where it was read from. A template that only uses an unsupported construct
    /// passes (it fails when used, naming the construct).
    func checkChatTemplateParses(file: String) throws(TokenizerError) {
        guard case let .failure(error) = parsedChatTemplate else { return }
        switch error {
        case .templateUnsupported: return
        default: throw TokenizerError.templateInFile(file: file, underlying: error)
        }
    }

    /// The parsed chat template: `noChatTemplate` when there is none, the parse error when it
    /// does not parse.
    public func checkedChatTemplate() throws(TokenizerError) -> ChatTemplate {
        guard let parsedChatTemplate else { throw TokenizerError.noChatTemplate(source: source) }
        return try parsedChatTemplate.get()
    }

    /// Builds a tokenizer from its parts (tokenizer.json, SentencePiece and tiktoken loaders).
    init(source: String, format: TokenizerFormat, normalizer: Normalizer?, preTokenizer: PreTokenizer?,
         model: any TokenizationModel, postProcessor: PostProcessor?, decoder: Decoder?,
         addedTokens added: [AddedToken], bosToken bos: String?, eosToken eos: String?, chatTemplate: String?,
         normalizesBeforeAddedTokens: Bool = false, decodeOverrides: [Int: String] = [:]) {
        self.source = source
        self.format = format
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.model = model
        self.postProcessor = postProcessor
        self.decoder = decoder
        self.normalizesBeforeAddedTokens = normalizesBeforeAddedTokens
        self.decodeOverrides = decodeOverrides
        addedTokens = added
        var byId: [Int: AddedToken] = [:]
        var byContent: [[Unicode.Scalar]: Int] = [:]
        var special = Set<Int>()
        for t in added {
            byId[t.id] = t
            byContent[Array(t.content.unicodeScalars)] = t.id
            if t.special { special.insert(t.id) }
        }
        addedById = byId
        addedByContent = byContent
        specialIds = special
        let raw = added.filter { !$0.normalized }
        rawMatcher = AddedTokenMatcher(tokens: raw, patterns: raw.map { Array($0.content.unicodeScalars) })
        let normalizedTokens = added.filter { $0.normalized }
        normalizedMatcher = AddedTokenMatcher(
            tokens: normalizedTokens,
            patterns: normalizedTokens.map { Array((normalizer?.apply($0.content) ?? $0.content).unicodeScalars) })

        let size = max(model.idToToken.count, (added.map(\.id).max() ?? -1) + 1)
        vocabSize = size
        bosToken = bos
        eosToken = eos
        self.chatTemplate = chatTemplate
        parsedChatTemplate = chatTemplate.map { (text) -> Result<ChatTemplate, TokenizerError> in
            Result { () throws(TokenizerError) -> ChatTemplate in try ChatTemplate(parsing: text) }
        }

        var table: TokenByteTable? = nil
        if decoder?.isPureByteLevel == true {
            table = TokenByteTable(count: size) { id in
                let token = byId[id].map { t in t.normalized ? normalizer?.apply(t.content) ?? t.content : t.content }
                    ?? (id < model.idToToken.count ? model.idToToken[id] : nil)
                guard let token else { return nil }
                return ByteLevel.bytes(ofToken: token) ?? Array(token.utf8)
            }
        }
        byteTable = table
        bosTokenId = bos.flatMap { byContent[Array($0.unicodeScalars)] ?? model.id(of: Array($0.unicodeScalars)) }
        eosTokenId = eos.flatMap { byContent[Array($0.unicodeScalars)] ?? model.id(of: Array($0.unicodeScalars)) }
    }

    static func configName(for source: String) -> String {
        siblingName("tokenizer_config.json", of: source)
    }

    /// The path of `name` beside `source` (a tokenizer.json path), for messages.
    static func siblingName(_ name: String, of source: String) -> String {
        if source.hasSuffix("tokenizer.json") {
            return String(source.dropLast("tokenizer.json".count)) + name
        }
        return "\(name) (for \(source))"
    }

    /// A special-token field: a string, `{"content": "…"}` (an AddedToken), or null.
    static func tokenString(_ field: JSONField) throws(TokenizerError) -> String? {
        if field.isNull { return nil }
        if let value = field.value, case let .string(s) = value { return s }
        if let value = field.value, case .object = value { return try field.child("content").string() }
        throw field.error("a string or an object with \"content\"")
    }

    /// `chat_template`: a string, or a list of `{"name": …, "template": …}` (the "default" one).
    static func chatTemplate(_ field: JSONField) throws(TokenizerError) -> String? {
        if field.isNull { return nil }
        if let value = field.value, case let .string(s) = value { return s }
        guard let value = field.value, case .array = value else {
            throw field.error("a string or a list of {\"name\": …, \"template\": …} objects")
        }
        let list = try field.array()
        var first: String? = nil
        for item in list {
            let name = try item.child("name").string()
            let text = try item.child("template").string()
            if name == "default" { return text }
            if first == nil { first = text }
        }
        return first
    }

    // MARK: Encoding

    /// Token ids of `text`; with `addSpecialTokens`, the post-processor's special tokens (BOS…)
    /// are added. Added tokens written in the text (e.g. `<|im_start|>`) are always recognized.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var scalars = Array(text.unicodeScalars)
        if normalizesBeforeAddedTokens, let normalizer {
            scalars = Array(normalizer.apply(text).unicodeScalars)
        }
        var ids: [Int] = []
        ids.reserveCapacity(scalars.count / 3 + 4)
        for segment in rawMatcher.split(scalars, 0..<scalars.count) {
            switch segment {
            case let .token(id):
                ids.append(id)
            case let .text(range):
                encodeSegment(scalars, range, into: &ids)
            }
        }
        if addSpecialTokens, let postProcessor {
            ids = postProcessor.process(ids)
        }
        return ids
    }

    /// Encodes `scalars[range]`, text between raw-matched added tokens.
    private func encodeSegment(_ scalars: [Unicode.Scalar], _ range: Range<Int>, into ids: inout [Int]) {
        let atTextStart = range.lowerBound == 0
        var text = scalars
        var textRange = range
        if let normalizer, !normalizesBeforeAddedTokens {
            text = Array(normalizer.apply(String(String.UnicodeScalarView(scalars[range]))).unicodeScalars)
            textRange = 0..<text.count
        }
        for segment in normalizedMatcher.split(text, textRange) {
            switch segment {
            case let .token(id):
                ids.append(id)
            case let .text(r):
                var pieces = PreTokenizedText(scalars: text, range: r,
                                              startsAtTextStart: atTextStart && r.lowerBound == textRange.lowerBound)
                preTokenizer?.apply(&pieces)
                for piece in pieces.pieces {
                    model.tokenize(pieces.scalars[piece], into: &ids)
                }
            }
        }
    }

    // MARK: Decoding

    /// The text of `ids`; unknown ids are skipped, and special tokens too with `skipSpecialTokens`.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        if let byteTable {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(ids.count * 4)
            for id in ids where !(skipSpecialTokens && specialIds.contains(id)) {
                byteTable.append(id, to: &bytes)
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        let tokens = ids.compactMap { id -> String? in
            if skipSpecialTokens && specialIds.contains(id) { return nil }
            if let text = decodeOverrides[id] { return text }
            if let t = addedById[id] { return decodedContent(t) }
            return idToToken(id)
        }
        if let decoder { return decoder.decode(tokens) }
        return tokens.joined(separator: " ")
    }

    /// As `decode`, but an id outside the vocabulary (negative, or not below `vocabSize`) is an
    /// error naming it rather than skipped.
    public func decodeChecked(_ ids: [Int], skipSpecialTokens: Bool = false) throws(TokenizerError) -> String {
        if let bad = ids.first(where: { $0 < 0 || $0 >= vocabSize }) {
            throw TokenizerError.tokenIdOutOfRange(id: bad, vocabSize: vocabSize)
        }
        return decode(ids, skipSpecialTokens: skipSpecialTokens)
    }

    /// Token ids written as text: a JSON array (`[1, 2]`) or integers separated by spaces or
    /// commas (`1 2`, `1,2`, `1, 2`). Anything else — an unclosed bracket, an empty item
    /// (`1,,2`), a number that is not an integer or does not fit in 64 bits — is an error naming it.
    public static func parseTokenIds(_ text: String) throws(TokenizerError) -> [Int] {
        var body = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
        if body.hasPrefix("[") || body.hasSuffix("]") {
            guard body.hasPrefix("["), body.hasSuffix("]"), body.count >= 2 else {
                throw TokenizerError.malformedTokenIds(detail: "an unbalanced bracket in \(JSONText.quote(String(body.prefix(80))))")
            }
            body = body.dropFirst().dropLast()
        }
        if body.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return [] }
        var ids: [Int] = []
        // Items are separated by one comma (with any spaces around it) or by spaces alone.
        let usesCommas = body.contains(",")
        let items: [Substring] = usesCommas
            ? body.split(separator: ",", omittingEmptySubsequences: false)
            : body.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
        for (i, raw) in items.enumerated() {
            let item = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if item.isEmpty {
                throw TokenizerError.malformedTokenIds(detail: "item \(i + 1) is empty (two commas in a row, or a comma at an end)")
            }
            guard let id = Int(item) else {
                let digits = item.hasPrefix("-") || item.hasPrefix("+") ? item.dropFirst() : Substring(item)
                if !digits.isEmpty && digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
                    throw TokenizerError.malformedTokenIds(detail: "item \(i + 1), \(item.prefix(40)), is too large to be a token id")
                }
                throw TokenizerError.malformedTokenIds(detail: "item \(i + 1), \(JSONText.quote(String(item.prefix(40)))), is not an integer")
            }
            ids.append(id)
        }
        return ids
    }

    /// What an added token contributes to decoding: its content, normalized when the token is
    /// matched against normalized text (as Hugging Face tokenizers decodes it).
    private func decodedContent(_ t: AddedToken) -> String {
        t.normalized ? normalizer?.apply(t.content) ?? t.content : t.content
    }

    // MARK: Vocabulary

    public func tokenToId(_ token: String) -> Int? {
        let key = Array(token.unicodeScalars)
        return addedByContent[key] ?? model.id(of: key)
    }

    public func idToToken(_ id: Int) -> String? {
        if let t = addedById[id] { return t.content }
        guard id >= 0 && id < model.idToToken.count else { return nil }
        return model.idToToken[id]
    }

    /// Whether `id` is an added token marked special (`<|im_end|>`, `<|endoftext|>`…).
    public func isSpecial(_ id: Int) -> Bool {
        specialIds.contains(id)
    }

    // MARK: Chat

    /// Renders `messages` with the tokenizer's chat template and its BOS/EOS token strings.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        return try checkedChatTemplate()
            .render(messages: messages, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken, eosToken: eosToken)
    }
}

/// The bytes each id decodes to, in one flat buffer.
struct TokenByteTable: Sendable {
    private let bytes: [UInt8]
    private let offsets: [Int32]

    init(count: Int, bytesOf: (Int) -> [UInt8]?) {
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(count + 1)
        for id in 0..<count {
            if let b = bytesOf(id) { bytes.append(contentsOf: b) }
            offsets.append(Int32(bytes.count))
        }
        self.bytes = bytes
        self.offsets = offsets
    }

    @inline(__always)
    func append(_ id: Int, to out: inout [UInt8]) {
        guard id >= 0 && id < offsets.count - 1 else { return }
        let lo = Int(offsets[id])
        let hi = Int(offsets[id + 1])
        if lo < hi { out.append(contentsOf: bytes[lo..<hi]) }
    }
}

/// The kind of file a tokenizer was read from.
public enum TokenizerFormat: String, Sendable {
    case tokenizerJSON = "tokenizer.json"
    case sentencePiece = "sentencepiece"
    case tiktoken = "tiktoken"
}

/// A tokenization model: turns one pre-tokenized piece into ids.
protocol TokenizationModel: Sendable {
    /// id → token, for every id of the vocabulary (nil for holes).
    var idToToken: [String?] { get }
    /// The id of a token of the vocabulary.
    func id(of token: [Unicode.Scalar]) -> Int?
    /// Appends the ids of one pre-tokenized piece.
    func tokenize(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [Int])
}

/// The parts of tokenizer_config.json used here.
struct TokenizerConfig {
    var bos: String?
    var eos: String?
    var template: String?

    init(json: Data?, file: String) throws(TokenizerError) {
        guard let json else { return }
        let configRoot = try JSONParser.parse(json, file: file)
        let config = JSONField(file: file, path: "", value: configRoot)
        _ = try config.object()
        bos = try Tokenizer.tokenString(config.child("bos_token"))
        eos = try Tokenizer.tokenString(config.child("eos_token"))
        template = try Tokenizer.chatTemplate(config.child("chat_template"))
    }
}
