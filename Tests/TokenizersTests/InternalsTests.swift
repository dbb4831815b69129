import Foundation
import Testing
@testable import Tokenizers

@Suite("tokenizer internals")
struct InternalsTests {
    func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var ranges: [Range<Int>] = []
        GPT2Split.split(scalars[...], into: &ranges)
        #expect(ranges.first?.lowerBound ?? 0 == 0 && ranges.last?.upperBound ?? 0 == scalars.count)
        return ranges.map { String(String.UnicodeScalarView(scalars[$0])) }
    }

    @Test("GPT-2 pre-tokenization regex, matched by hand")
    func gpt2Split() {
        #expect(split("Hello world") == ["Hello", " world"])
        #expect(split("don't I'm we'll they've you're he'd it's") ==
                ["don", "'t", " I", "'m", " we", "'ll", " they", "'ve", " you", "'re", " he", "'d", " it", "'s"])
        // Contractions are lowercase only.
        #expect(split("DON'T 'x") == ["DON", "'", "T", " '", "x"])
        #expect(split("a  b") == ["a", " ", " b"])
        #expect(split("a\n\n\tb") == ["a", "\n\n", "\t", "b"])
        #expect(split("trailing   ") == ["trailing", "   "])
        #expect(split("x1234 5") == ["x", "1234", " 5"])
        #expect(split("?!? ...") == ["?!?", " ..."])
        #expect(split("naïve 日本語") == ["naïve", " 日本語"])
        #expect(split("a\u{00A0}b") == ["a", "\u{00A0}", "b"])
        #expect(split("a \u{00A0}b") == ["a", " ", "\u{00A0}", "b"])
        #expect(split("a\u{3000}\u{3000}b") == ["a", "\u{3000}", "\u{3000}", "b"])
        #expect(split("x \n y") == ["x", " \n", " y"])
        #expect(split("") == [])
    }

    @Test("scanning and heap merging agree on long words")
    func mergeStrategies() throws {
        let model = try #require(Fixtures.tokenizer.model as? BPEModel)
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("aaabbcdeeeilmnorsstt ".unicodeScalars)
        for _ in 0..<200 {
            let length = Int.random(in: 2...120, using: &generator)
            let word = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            let symbols = ByteLevel.scalars(of: String(String.UnicodeScalarView(word))).map {
                Int32(Fixtures.tokenizer.tokenToId(String(Character(Unicode.Scalar($0)!)))!)
            }
            #expect(model.mergeByScanning(symbols) == model.mergeWithHeap(symbols))
        }
    }

    @Test("UTF-8 completeness for streaming")
    func completeLength() {
        #expect(StreamingDetokenizer.completeLength([]) == 0)
        #expect(StreamingDetokenizer.completeLength([0x41]) == 1)
        #expect(StreamingDetokenizer.completeLength([0x41, 0xE6]) == 1)
        #expect(StreamingDetokenizer.completeLength([0x41, 0xE6, 0x97]) == 1)
        #expect(StreamingDetokenizer.completeLength([0x41, 0xE6, 0x97, 0xA5]) == 4)
        #expect(StreamingDetokenizer.completeLength([0xF0, 0x9F, 0x99]) == 0)
        #expect(StreamingDetokenizer.completeLength([0x41, 0x80]) == 2)
        #expect(StreamingDetokenizer.completeLength([0xC0]) == 1)
    }

    @Test("JSON parser: escapes, surrogates, numbers, exact keys")
    func json() throws {
        let value = try JSONParser.parse(Data(#"{"a\u00e9\n": [1, -2.5e1, true, null, "\ud83d\ude00\/"], "e\u0301": 1, "\u00e9": 2}"#.utf8))
        guard case let .object(o) = value else {
            Issue.record("not an object")
            return
        }
        #expect(o.keys == ["aé\n", "e\u{301}", "\u{e9}"])
        #expect(o.keys.count == 3)  // canonically equivalent keys stay distinct
        if case let .array(items) = o.values[0] {
            if case let .string(s) = items[4] { #expect(s == "😀/") } else { Issue.record("not a string") }
            if case let .double(d) = items[1] { #expect(d == -25) } else { Issue.record("not a double") }
        }
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parse(Data("[1,]".utf8)) }
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parse(Data("\"\\ud800\"".utf8)) }
        #expect(throws: JSONParser.SyntaxError.self) { try JSONParser.parse(Data("{} x".utf8)) }
    }
}
