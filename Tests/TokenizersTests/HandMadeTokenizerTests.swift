import Foundation
import Testing
@testable import Tokenizers

/// Small tokenizers written here; every expected value was produced by Hugging Face tokenizers
/// 0.23 on the same JSON.
@Suite("hand-made tokenizer.json files")
struct HandMadeTokenizerTests {
    /// Byte-level BPE whose merge ranks decide the result, with added tokens using lstrip/rstrip
    /// and overlapping contents, and a template adding `<s>`.
    static func byteLevelJSON(legacyMerges: Bool = false, ignoreMerges: Bool = false) -> String {
        let merges = [("l", "l"), ("h", "e"), ("e", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"),
                      ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"), ("o", "w")]
        let mergesJSON = legacyMerges
            ? merges.map { "\"\($0.0) \($0.1)\"" }.joined(separator: ", ")
            : merges.map { "[\"\($0.0)\", \"\($0.1)\"]" }.joined(separator: ", ")
        return """
        {
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [
            {"id": 30, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 31, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},
            {"id": 32, "content": "<|x|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 33, "content": "<|x|>!", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
            {"id": 34, "content": "[L]", "single_word": false, "lstrip": true, "rstrip": false, "normalized": false, "special": false},
            {"id": 35, "content": "[R]", "single_word": false, "lstrip": false, "rstrip": true, "normalized": false, "special": false}
          ],
          "normalizer": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
          "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [30], "tokens": ["<s>"]}}
          },
          "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
          "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": \(ignoreMerges),
            "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "w": 4, "r": 5, "d": 6, "Ġ": 7, "!": 8, "?": 9, "<": 10,
                      ">": 11, "|": 12, "x": 13, "s": 14, "m": 15, "a": 16, "k": 17, "ll": 18, "he": 19, "el": 20,
                      "hell": 21, "hello": 22, "Ġw": 23, "or": 24, "Ġwor": 25, "Ġworl": 26, "Ġworld": 27,
                      "ow": 28, "owo": 29},
            "merges": [\(mergesJSON)]
          }
        }
        """
    }

    static func load(_ json: String) throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfigJSON: nil, source: "hand-made tokenizer.json")
    }

    struct Case: Sendable {
        let text: String
        let ids: [Int]
        let decoded: String
        let decodedSkippingSpecial: String
    }

    static let byteLevelCases: [Case] = [
        Case(text: "hello", ids: [30, 22], decoded: "<s>hello", decodedSkippingSpecial: "hello"),
        Case(text: "hel", ids: [30, 19, 2], decoded: "<s>hel", decodedSkippingSpecial: "hel"),
        Case(text: "hello world", ids: [30, 22, 27], decoded: "<s>hello world", decodedSkippingSpecial: "hello world"),
        Case(text: "hello <mask> world", ids: [30, 22, 31, 4, 24, 2, 6], decoded: "<s>hello<mask>world",
             decodedSkippingSpecial: "helloworld"),
        Case(text: "hello   <mask>   world", ids: [30, 22, 31, 4, 24, 2, 6], decoded: "<s>hello<mask>world",
             decodedSkippingSpecial: "helloworld"),
        Case(text: "<s>hello", ids: [30, 30, 22], decoded: "<s><s>hello", decodedSkippingSpecial: "hello"),
        Case(text: "<|x|>!", ids: [30, 33], decoded: "<s><|x|>!", decodedSkippingSpecial: "<|x|>!"),
        Case(text: "<|x|>?", ids: [30, 32, 9], decoded: "<s><|x|>?", decodedSkippingSpecial: "?"),
        Case(text: "hello [L] world [R] hello", ids: [30, 22, 34, 27, 7, 35, 22],
             decoded: "<s>hello[L] world [R]hello", decodedSkippingSpecial: "hello[L] world [R]hello"),
        Case(text: "owo", ids: [30, 28, 3], decoded: "<s>owo", decodedSkippingSpecial: "owo"),
    ]

    @Test("merge ranks, added tokens (longest match, lstrip, rstrip) and the BOS template")
    func byteLevel() throws {
        let tokenizer = try Self.load(Self.byteLevelJSON())
        for c in Self.byteLevelCases {
            #expect(tokenizer.encode(c.text) == c.ids, "\(c.text)")
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == Array(c.ids.dropFirst()), "\(c.text)")
            #expect(tokenizer.decode(c.ids) == c.decoded, "\(c.text)")
            #expect(tokenizer.decode(c.ids, skipSpecialTokens: true) == c.decodedSkippingSpecial, "\(c.text)")
        }
        #expect(tokenizer.vocabSize == 36)
        #expect(tokenizer.isSpecial(31) && !tokenizer.isSpecial(33))
        #expect(tokenizer.tokenToId("<mask>") == 31)
        #expect(tokenizer.idToToken(27) == "Ġworld")
        #expect(tokenizer.bosTokenId == nil && tokenizer.chatTemplate == nil)
    }

    @Test("legacy \"a b\" merges give the same result as [\"a\", \"b\"] pairs")
    func legacyMerges() throws {
        let tokenizer = try Self.load(Self.byteLevelJSON(legacyMerges: true))
        for c in Self.byteLevelCases {
            #expect(tokenizer.encode(c.text) == c.ids, "\(c.text)")
        }
    }

    @Test("ignore_merges takes a whole word from the vocabulary")
    func ignoreMerges() throws {
        let tokenizer = try Self.load(Self.byteLevelJSON(ignoreMerges: true))
        #expect(tokenizer.encode("owo") == [30, 29])
        #expect(tokenizer.encode("hello") == [30, 22])
        #expect(tokenizer.encode("hel") == [30, 19, 2])
    }

    @Test("merge ranks decide: swapping two ranks changes the result")
    func rankOrder() throws {
        // With "e l" ranked before "h e", "hel" becomes h + el.
        let swapped = Self.byteLevelJSON().replacingOccurrences(
            of: "[\"h\", \"e\"], [\"e\", \"l\"]", with: "[\"e\", \"l\"], [\"h\", \"e\"]")
        let tokenizer = try Self.load(swapped)
        #expect(tokenizer.encode("hel", addSpecialTokens: false) == [0, 20])
    }

    /// A Llama-2-style byte-fallback tokenizer: style "A" normalizes (Prepend ▁, Replace " " → ▁)
    /// and decodes with Replace/ByteFallback/Fuse/Strip; style "B" uses the Metaspace
    /// pre-tokenizer (prepend_scheme first) and decoder.
    static func byteFallbackJSON(style: String) -> String {
        var vocab: [(String, Int)] = [("<unk>", 0), ("<s>", 1), ("</s>", 2)]
        for b in 0..<256 { vocab.append((String(format: "<0x%02X>", b), vocab.count)) }
        for t in ["▁", "h", "e", "l", "o", "w", "r", "d", "i", "▁h", "he", "ll", "hell", "▁hell", "▁hello", "▁w", "or",
                  "▁wor", "▁world", "▁▁"] {
            vocab.append((t, vocab.count))
        }
        let vocabJSON = vocab.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ")
        let merges = ["l l", "h e", "▁ h", "he ll", "▁ hell", "▁hell o", "▁ w", "o r", "▁w or", "▁ ▁"]
        let mergesJSON = merges.map { "\"\($0)\"" }.joined(separator: ", ")
        let pipeline = style == "A"
            ? """
              "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                             {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
              "pre_tokenizer": null,
              "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                          {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
              """
            : """
              "normalizer": null,
              "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
              "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
              """
        return """
        {
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          \(pipeline)
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": {\(vocabJSON)}, "merges": [\(mergesJSON)]}
        }
        """
    }

    static let byteFallbackCases: [String: [Case]] = [
        "A": [
            Case(text: "hello world", ids: [1, 273, 276, 262, 266], decoded: "<s> hello world", decodedSkippingSpecial: "hello world"),
            Case(text: "hello  héllo", ids: [1, 273, 259, 268, 198, 172, 270, 263], decoded: "<s> hello  héllo",
                 decodedSkippingSpecial: "hello  héllo"),
            Case(text: "  hi 😀!", ids: [1, 278, 268, 267, 259, 243, 162, 155, 131, 36], decoded: "<s>   hi 😀!",
                 decodedSkippingSpecial: "  hi 😀!"),
            Case(text: "<s>hello</s> world", ids: [1, 1, 273, 2, 259, 276, 262, 266], decoded: "<s><s> hello</s>  world",
                 decodedSkippingSpecial: "hello  world"),
            Case(text: "wörld", ids: [1, 274, 198, 185, 265, 262, 266], decoded: "<s> wörld", decodedSkippingSpecial: "wörld"),
        ],
        "B": [
            Case(text: "hello world", ids: [1, 273, 276, 262, 266], decoded: "<s> hello world", decodedSkippingSpecial: "hello world"),
            Case(text: "hello  héllo", ids: [1, 273, 259, 268, 198, 172, 270, 263], decoded: "<s> hello  h<0xC3><0xA9>llo",
                 decodedSkippingSpecial: "hello  h<0xC3><0xA9>llo"),
            Case(text: "  hi 😀!", ids: [1, 259, 268, 267, 259, 243, 162, 155, 131, 36],
                 decoded: "<s>  hi <0xF0><0x9F><0x98><0x80><0x21>", decodedSkippingSpecial: " hi <0xF0><0x9F><0x98><0x80><0x21>"),
            Case(text: "<s>hello</s> world", ids: [1, 1, 271, 263, 2, 276, 262, 266], decoded: "<s><s>hello</s> world",
                 decodedSkippingSpecial: "hello world"),
            Case(text: "wörld", ids: [1, 274, 198, 185, 265, 262, 266], decoded: "<s> w<0xC3><0xB6>rld",
                 decodedSkippingSpecial: "w<0xC3><0xB6>rld"),
        ],
    ]

    @Test("byte fallback, unknown tokens, Metaspace and SentencePiece-style decoders", arguments: ["A", "B"])
    func byteFallback(style: String) throws {
        let tokenizer = try Self.load(Self.byteFallbackJSON(style: style))
        #expect(tokenizer.byteTable == nil)
        for c in Self.byteFallbackCases[style]! {
            #expect(tokenizer.encode(c.text) == c.ids, "\(style) \(c.text)")
            #expect(tokenizer.decode(c.ids) == c.decoded, "\(style) \(c.text)")
            #expect(tokenizer.decode(c.ids, skipSpecialTokens: true) == c.decodedSkippingSpecial, "\(style) \(c.text)")
            // The streaming detokenizer (window re-decoding for these decoders) matches decode().
            for skip in [false, true] {
                var stream = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skip)
                var text = ""
                for id in c.ids { text += stream.append(id) }
                text += stream.flush()
                #expect(text == tokenizer.decode(c.ids, skipSpecialTokens: skip), "\(style) \(c.text)")
            }
        }
    }

    @Test("byte-fallback streaming waits for a whole character")
    func byteFallbackStreaming() throws {
        let tokenizer = try Self.load(Self.byteFallbackJSON(style: "A"))
        var stream = StreamingDetokenizer(tokenizer: tokenizer)
        // "▁h" then the 4 bytes of 😀: nothing is emitted until the character is complete.
        #expect(stream.append(268) == "h")
        #expect(stream.append(243) == "")
        #expect(stream.append(162) == "")
        #expect(stream.append(155) == "")
        #expect(stream.append(131) == "😀")
        #expect(stream.flush() == "")
    }

    @Test("unknown characters become <unk>, fused")
    func unknown() throws {
        // Without byte fallback tokens in the vocabulary, unknown characters fall back to <unk>.
        let json = Self.byteFallbackJSON(style: "A").replacingOccurrences(of: "\"byte_fallback\": true", with: "\"byte_fallback\": false")
        let tokenizer = try Self.load(json)
        // "▁" "é" "é" "h": the two unknown é fuse into one <unk>.
        #expect(tokenizer.encode("ééh", addSpecialTokens: false) == [259, 0, 260])
    }
}
