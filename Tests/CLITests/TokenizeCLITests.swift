// Issue [H]: `lmdeploy tokenize --decode` on bad ids, and a broken chat template reported at
// load, driven through the real binary.
import Foundation
import Testing

@Suite struct TokenizeCLITests {
    /// SmolLM2's vocabulary: 49,152 tokens.
    static let vocabSize = 49152

    @Test func decodeRefusesIdsOutsideTheVocabulary() throws {
        for id in ["9223372036854775807", "49152", "-1"] {
            let r = try CLI.run(["tokenize", CLI.model, "--decode", "--text=\(id)"], timeout: 60)
            #expect(r.status != 0, "\(id): exit status 0, stdout \(r.stdout)")
            #expect(r.stderr.contains("token id \(id) is outside the vocabulary") && r.stderr.contains("\(Self.vocabSize) tokens"),
                    "\(id): \(r.stderr)")
        }
    }

    @Test func decodeRefusesMalformedLists() throws {
        for (text, expected) in [("[1,2", "unbalanced bracket"), ("1,,2", "item 2 is empty"), ("1 x", "is not an integer"),
                                 ("9223372036854775808", "too large"), ("99999999999999999999999", "too large")] {
            let r = try CLI.run(["tokenize", CLI.model, "--decode", "--text", text], timeout: 60)
            #expect(r.status != 0, "\(text): exit status 0, stdout \(r.stdout)")
            #expect(r.stderr.contains("not a list of token ids") && r.stderr.contains(expected), "\(text): \(r.stderr)")
        }
        let good = try CLI.run(["tokenize", CLI.model, "--decode", "--text", "[19556, 905]"], timeout: 60)
        #expect(good.status == 0 && good.stdout == "Hello world\n", "\(good.stdout) \(good.stderr)")
        let jsonl = try CLI.run(["tokenize", CLI.model, "--decode", "--jsonl"], input: "[19556]\n[1,\n", timeout: 60)
        #expect(jsonl.status != 0 && jsonl.stderr.contains("unbalanced bracket"), "\(jsonl.stderr)")
    }

    /// A copy of the model (weights linked) whose chat_template.jinja does not parse.
    static func modelWithBrokenTemplate() throws -> URL {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("broken-template-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let source = URL(fileURLWithPath: CLI.model)
        for name in try fm.contentsOfDirectory(atPath: source.path) where !name.hasPrefix(".") {
            try fm.createSymbolicLink(at: dir.appendingPathComponent(name), withDestinationURL: source.appendingPathComponent(name))
        }
        try Data("{% for m in messages %}{{ m.content }".utf8).write(to: dir.appendingPathComponent("chat_template.jinja"))
        return dir
    }

    @Test func brokenTemplateIsReportedAtLoad() throws {
        let dir = try Self.modelWithBrokenTemplate()
        defer { try? FileManager.default.removeItem(at: dir) }
        let messages = dir.appendingPathComponent("messages.json")
        try Data(#"[{"role": "user", "content": "hi"}]"#.utf8).write(to: messages)
        let r = try CLI.run(["tokenize", dir.path, "--chat", messages.path], timeout: 60)
        #expect(r.status != 0 && r.stderr.contains("chat_template.jinja") && r.stderr.contains("syntax error"), "\(r.stderr)")
        // chat says so before reading the first prompt (nothing is typed: it must not wait for one).
        let chat = try CLI.run(["chat", "turbomind", dir.path, "--max-new-tokens", "4"], input: "", timeout: 120)
        #expect(chat.status != 0 && chat.stderr.contains("chat_template.jinja") && chat.stderr.contains("syntax error"),
                "\(chat.status) \(chat.stderr)")
        #expect(!chat.stdout.contains(">>>"), "\(chat.stdout)")
    }
}
