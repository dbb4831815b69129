import Foundation
import Testing
@testable import Tokenizers

@Suite("SmolLM2 tokenizer against Hugging Face golden data")
struct SmolLM2Tests {
    let tokenizer = Fixtures.tokenizer

    @Test("encodes exactly as transformers", arguments: Fixtures.golden.tokenize)
    func encodes(_ c: Golden.TokenizeCase) {
        #expect(tokenizer.encode(c.text) == c.ids)
    }

    @Test("decodes to the golden text", arguments: Fixtures.golden.tokenize)
    func decodes(_ c: Golden.TokenizeCase) {
        #expect(tokenizer.decode(c.ids) == c.decoded)
    }

    @Test("prompts encode to their ids, greedy ids decode to their text")
    func prompts() {
        for p in Fixtures.golden.prompts {
            #expect(tokenizer.encode(p.prompt) == p.ids)
            #expect(tokenizer.decode(p.greedyIds) == p.greedyText)
        }
    }

    @Test("the chat template renders byte-identically")
    func chatTemplate() throws {
        let source = try #require(tokenizer.chatTemplate)
        let template = try ChatTemplate(source: source)
        for c in Fixtures.golden.chatTemplate {
            let text = try template.render(messages: c.messages, addGenerationPrompt: c.addGenerationPrompt,
                                           bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken)
            #expect(Array(text.utf8) == Array(c.text.utf8))
            #expect(try tokenizer.applyChatTemplate(c.messages, addGenerationPrompt: c.addGenerationPrompt) == c.text)
        }
    }

    @Test("rendered chats encode to their ids")
    func chats() throws {
        for c in Fixtures.golden.chats {
            #expect(try tokenizer.applyChatTemplate(c.messages, addGenerationPrompt: true) == c.text)
            #expect(tokenizer.encode(c.text) == c.ids)
        }
    }

    @Test("vocabulary and special tokens")
    func vocabulary() {
        #expect(tokenizer.vocabSize == 49152)
        #expect(tokenizer.bosTokenId == 1)
        #expect(tokenizer.eosTokenId == 2)
        #expect(tokenizer.bosToken == "<|im_start|>")
        #expect(tokenizer.eosToken == "<|im_end|>")
        #expect(tokenizer.tokenToId("<|im_end|>") == 2)
        #expect(tokenizer.tokenToId("Ġthe") != nil)
        #expect(tokenizer.tokenToId("no such token at all") == nil)
        #expect(tokenizer.idToToken(0) == "<|endoftext|>")
        #expect(tokenizer.idToToken(216) == "Ġ")
        #expect(tokenizer.idToToken(-1) == nil)
        #expect(tokenizer.idToToken(49152) == nil)
        #expect(tokenizer.isSpecial(0) && tokenizer.isSpecial(2) && tokenizer.isSpecial(16))
        #expect(!tokenizer.isSpecial(17) && !tokenizer.isSpecial(216))
        for id in [0, 1, 17, 216, 19556, 49151] {
            #expect(tokenizer.tokenToId(tokenizer.idToToken(id)!) == id)
        }
    }

    @Test("special tokens are split out and can be skipped when decoding")
    func specialTokens() {
        let ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")
        #expect(ids.first == 1)
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "user\nhi\n")
        // SmolLM2's post-processor adds nothing.
        #expect(tokenizer.encode("Hello world", addSpecialTokens: false) == tokenizer.encode("Hello world"))
    }

    @Test("decode(encode(text)) is the identity on varied text")
    func roundTrip() {
        let texts = [
            "Mixed 123 numbers, punctuation!!! and    spaces\t\ttabs\n\n\nnewlines",
            "Ελληνικά, русский, العربية, हिन्दी, 한국어, ไทย",
            "e\u{301} (combining) vs \u{e9}, zero\u{200b}width, \u{feff}BOM",
            "code: for (int i = 0; i < n; ++i) { x[i] += y[i] * 2.5e-3; }",
            "emoji: 👩‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 ✔︎",
            "it's they're we've I'd you'll 'quoted' ''",
            String(repeating: "long word ", count: 200) + String(repeating: "x", count: 3000),
        ]
        for t in texts {
            #expect(tokenizer.decode(tokenizer.encode(t)) == t)
        }
    }

    @Test("streaming detokenization reproduces decode() and never splits a character",
          arguments: Fixtures.golden.tokenize)
    func streaming(_ c: Golden.TokenizeCase) {
        for skip in [false, true] {
            var stream = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skip)
            var text = ""
            for id in c.ids {
                let piece = stream.append(id)
                #expect(!piece.unicodeScalars.contains("\u{FFFD}"), "a split character was emitted")
                text += piece
            }
            text += stream.flush()
            #expect(text == tokenizer.decode(c.ids, skipSpecialTokens: skip))
        }
    }

    @Test("streaming greedy outputs")
    func streamingPrompts() {
        for p in Fixtures.golden.prompts {
            var stream = StreamingDetokenizer(tokenizer: tokenizer)
            let text = p.greedyIds.map { stream.append($0) }.joined() + stream.flush()
            #expect(text == p.greedyText)
        }
    }

    @Test("streaming holds back an incomplete character and flushes it as U+FFFD")
    func streamingIncomplete() throws {
        // "日" is three bytes, tokenized as more than one token.
        let ids = tokenizer.encode("日")
        try #require(ids.count > 1)
        var stream = StreamingDetokenizer(tokenizer: tokenizer)
        #expect(stream.append(ids[0]) == "")
        #expect(stream.flush().unicodeScalars.allSatisfy { $0 == "\u{FFFD}" })
        var whole = StreamingDetokenizer(tokenizer: tokenizer)
        #expect(ids.map { whole.append($0) }.joined() == "日")
        #expect(whole.flush() == "")
    }

    @Test("a GPL-3 text encodes and round-trips",
          .enabled(if: FileManager.default.fileExists(atPath: "/usr/share/common-licenses/GPL-3")))
    func longText() throws {
        let text = try String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8)
        let ids = tokenizer.encode(text)
        #expect(ids.count > 7000 && ids.count < 8000)
        #expect(tokenizer.decode(ids) == text)
    }

    @Test("concurrent encoding from many tasks agrees with the golden ids")
    func concurrentEncoding() async {
        let tokenizer = self.tokenizer
        let cases = Fixtures.golden.tokenize
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    (0..<20).allSatisfy { _ in cases.allSatisfy { tokenizer.encode($0.text) == $0.ids } }
                }
            }
            for await ok in group { #expect(ok) }
        }
    }
}
