import Foundation
import Testing
@testable import Tokenizers

/// Our tokenizers against the Python reference libraries (`tokenizers`, `sentencepiece`,
/// `tiktoken`) on 2,000 strings, for tokenizers trained by those libraries in the test and Qwen's
/// real qwen.tiktoken: ids with and without special tokens, and decoded text. Zero differences.
@Suite("Differential: tokenizers, sentencepiece, tiktoken")
struct DifferentialTests {
    struct Entry: Decodable {
        let name: String
        let kind: String
        let path: String
        let pattern: String?
        let specialTokens: [String: Int]?
        let ids: [[Int]]
        let idsNoSpecial: [[Int]]
        let decoded: [String]

        enum CodingKeys: String, CodingKey {
            case name, kind, path, pattern, ids, decoded
            case specialTokens = "special_tokens"
            case idsNoSpecial = "ids_no_special"
        }
    }

    struct Reference: Decodable {
        let texts: [String]
        let tokenizers: [Entry]
    }

    /// Generated once per test process.
    static let reference: Result<Reference, Error> = Result {
        let dir = ReferenceRunner.temporaryDirectory("tokref")
        _ = try ReferenceRunner.run("tokenizer_reference.py", [dir.path, "2000"])
        let data = try Data(contentsOf: dir.appendingPathComponent("reference.json"))
        return try JSONDecoder().decode(Reference.self, from: data)
    }

    static let names = [
        "tokenizers-gpt2", "tokenizers-llama2", "tokenizers-metaspace", "tokenizers-llama3", "tokenizers-qwen2",
        "tokenizers-bertish", "tokenizers-splitvariants",
        "sentencepiece-sp-bpe-bytes-keep.model", "sentencepiece-sp-bpe-unk-rx.model",
        "sentencepiece-sp-unigram-bytes-keep.model", "sentencepiece-sp-unigram-unk-rx.model",
        "tiktoken-trained", "tiktoken-qwen",
    ]

    @Test("zero differences", arguments: names)
    func compare(name: String) throws {
        let reference = try Self.reference.get()
        #expect(reference.texts.count >= 2000)
        let entry = try #require(reference.tokenizers.first { $0.name == name }, "no reference data for \(name)")
        let tokenizer: Tokenizer
        if entry.kind == "tiktoken", let pattern = entry.pattern, let specials = entry.specialTokens {
            tokenizer = try Tokenizer(
                tiktokenFile: URL(fileURLWithPath: entry.path),
                spec: TiktokenSpec(pattern: pattern, specialTokens: specials.sorted { $0.value < $1.value }.map { ($0.key, $0.value) }))
        } else {
            tokenizer = try Tokenizer.load(path: entry.path)
        }
        var failures: [String] = []
        for (k, text) in reference.texts.enumerated() {
            let ids = tokenizer.encode(text)
            let plain = tokenizer.encode(text, addSpecialTokens: false)
            let decoded = tokenizer.decode(entry.idsNoSpecial[k])
            if ids != entry.ids[k] {
                failures.append("encode \(text.debugDescription): ours \(ids), reference \(entry.ids[k])")
            }
            if plain != entry.idsNoSpecial[k] {
                failures.append("encode (no special) \(text.debugDescription): ours \(plain), reference \(entry.idsNoSpecial[k])")
            }
            if decoded.unicodeScalars.elementsEqual(entry.decoded[k].unicodeScalars) == false {
                failures.append("decode \(entry.idsNoSpecial[k]): ours \(decoded.debugDescription), reference \(entry.decoded[k].debugDescription)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) differences for \(name), first: \(failures.prefix(4).joined(separator: "\n"))")
    }
}
