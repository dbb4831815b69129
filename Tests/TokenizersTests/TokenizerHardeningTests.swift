import Foundation
import Testing
@testable import Tokenizers

/// Issue [H]: a broken chat template fails when the tokenizer is loaded, naming its file; a
/// chat_template of the wrong type says what it is; token-id lists are parsed strictly and ids
/// are checked against the vocabulary.
@Suite("tokenizer loading and decoding hardening")
struct TokenizerHardeningTests {

    /// A model directory with the hand-made tokenizer.json and the given files.
    func directory(config: String? = nil, jinja: String? = nil) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-hardening-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(HandMadeTokenizerTests.byteLevelJSON().utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        if let config { try Data(config.utf8).write(to: dir.appendingPathComponent("tokenizer_config.json")) }
        if let jinja { try Data(jinja.utf8).write(to: dir.appendingPathComponent("chat_template.jinja")) }
        return dir
    }

    func configJSON(template: String) -> String {
        "{\"bos_token\": \"<s>\", \"chat_template\": \(JSONText.quote(template))}"
    }

    @Test("\"chat_template\": 12345 says what was expected and what was found")
    func templateOfTheWrongType() throws {
        for (value, found) in [("12345", "a number"), ("true", "a boolean"), ("{\"a\": 1}", "an object")] {
            let dir = try directory(config: "{\"chat_template\": \(value)}")
            defer { try? FileManager.default.removeItem(at: dir) }
            let m = errorMessage { _ = try Tokenizer(directory: dir) }
            #expect(m.contains("tokenizer_config.json") && m.contains("chat_template")
                    && m.contains("expected a string or a list of {\"name\": …, \"template\": …} objects, found \(found)"), "\(m)")
        }
    }

    @Test("a chat template with a syntax error fails at load, naming tokenizer_config.json")
    func brokenTemplateInConfig() throws {
        let dir = try directory(config: configJSON(template: "{% for m in messages %}{{ m.content }}"))
        defer { try? FileManager.default.removeItem(at: dir) }
        for load in [{ _ = try Tokenizer(directory: dir) }, { _ = try Tokenizer.load(path: dir.path) }] as [() throws -> Void] {
            let m = errorMessage(load)
            #expect(m.contains(dir.appendingPathComponent("tokenizer_config.json").path) && m.contains("field 'chat_template'")
                    && m.contains("syntax error") && m.contains("endfor"), "\(m)")
        }
    }

    @Test("a chat_template.jinja over a sandbox limit fails at load, naming chat_template.jinja")
    func brokenTemplateInJinjaFile() throws {
        let deep = "{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}"
        let dir = try directory(config: configJSON(template: "{{ 'fine' }}"), jinja: deep)
        defer { try? FileManager.default.removeItem(at: dir) }
        let m = errorMessage { _ = try Tokenizer(directory: dir) }
        #expect(m.contains(dir.appendingPathComponent("chat_template.jinja").path)
                && m.contains("exceeds the sandbox limit of \(ChatTemplateSandbox.maxParserDepth)"), "\(m)")
        // The same through the in-memory initializer: named beside the tokenizer.json source.
        let m2 = errorMessage {
            _ = try Tokenizer(tokenizerJSON: Data(HandMadeTokenizerTests.byteLevelJSON().utf8), tokenizerConfigJSON: nil,
                              chatTemplateJinja: "{% if %}", source: "/models/x/tokenizer.json")
        }
        #expect(m2.contains("/models/x/chat_template.jinja") && m2.contains("syntax error"), "\(m2)")
    }

    @Test("a template that only uses an unsupported construct loads, and names it when used")
    func unsupportedTemplateLoads() throws {
        let dir = try directory(config: configJSON(template: "{% macro f() %}x{% endmacro %}{{ f() }}"))
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenizer = try Tokenizer(directory: dir)
        #expect(tokenizer.encode("hello", addSpecialTokens: false).isEmpty == false)
        let m = errorMessage { _ = try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "hi")]) }
        #expect(m.contains("unsupported Jinja construct") && m.contains("macro"), "\(m)")
    }

    @Test("a good template is parsed at load and renders")
    func goodTemplate() throws {
        let dir = try directory(config: configJSON(template: "{% for m in messages %}{{ bos_token }}{{ m.role }}: {{ m.content }}\n{% endfor %}"))
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenizer = try Tokenizer(directory: dir)
        let template = try tokenizer.checkedChatTemplate()
        #expect(template.source.hasPrefix("{% for m in messages %}"))
        #expect(try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "hi")]) == "<s>user: hi\n")
    }

    // MARK: Token ids

    @Test("token-id lists: JSON arrays, spaces or commas")
    func parseIds() throws {
        #expect(try Tokenizer.parseTokenIds("[1, 2, 3]") == [1, 2, 3])
        #expect(try Tokenizer.parseTokenIds("1 2\t3\n4") == [1, 2, 3, 4])
        #expect(try Tokenizer.parseTokenIds("1,2, 3 ,4") == [1, 2, 3, 4])
        #expect(try Tokenizer.parseTokenIds(" [ 7 ] \n") == [7])
        #expect(try Tokenizer.parseTokenIds("[]") == [])
        #expect(try Tokenizer.parseTokenIds("") == [])
        #expect(try Tokenizer.parseTokenIds("-1 9223372036854775807") == [-1, .max])
    }

    @Test("malformed token-id lists are errors naming the problem")
    func malformedIds() {
        let cases: [(String, String)] = [
            ("[1,2", "unbalanced bracket"), ("1,2]", "unbalanced bracket"), ("[", "unbalanced bracket"),
            ("1,,2", "item 2 is empty"), ("1,2,", "item 3 is empty"), (",1", "item 1 is empty"),
            ("1 two 3", "item 2, \"two\", is not an integer"), ("1.5", "\"1.5\", is not an integer"),
            ("[1, [2]]", "is not an integer"), ("1 2,3", "is not an integer"),
            ("9223372036854775808", "too large to be a token id"),
            ("99999999999999999999999999", "too large to be a token id"), ("-9223372036854775809", "too large"),
        ]
        for (text, expected) in cases {
            let m = errorMessage { _ = try Tokenizer.parseTokenIds(text) }
            #expect(m.contains("not a list of token ids") && m.contains(expected), "\(text): \(m)")
        }
    }

    @Test("ids outside the vocabulary are errors naming the id and the vocabulary size")
    func idsOutsideTheVocabulary() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: Data(HandMadeTokenizerTests.byteLevelJSON().utf8), tokenizerConfigJSON: nil,
                                      source: "/models/x/tokenizer.json")
        let n = tokenizer.vocabSize
        for id in [n, -1, Int.max, Int.min, n + 1000] {
            let m = errorMessage { _ = try tokenizer.decodeChecked([0, id]) }
            #expect(m.contains("token id \(id) is outside the vocabulary") && m.contains("\(n) tokens"), "\(id): \(m)")
            // The unchecked decode skips it (and does not trap on Int.max).
            #expect(tokenizer.decode([0, id]) == tokenizer.decode([0]))
        }
        #expect(try tokenizer.decodeChecked([0, 1, n - 1]) == tokenizer.decode([0, 1, n - 1]))
    }
}
