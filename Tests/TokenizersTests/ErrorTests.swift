import Foundation
import Testing
@testable import Tokenizers

@Suite("clear errors for bad or unsupported input")
struct ErrorTests {
    func load(_ json: String, source: String = "/models/x/tokenizer.json") throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfigJSON: nil, source: source)
    }


    @Test("a tokenizer.json that is not JSON names the file")
    func notJSON() {
        let m = errorMessage { _ = try load("<html>not json</html>") }
        #expect(m.contains("/models/x/tokenizer.json"))
        #expect(m.contains("not valid JSON"))
        let truncated = errorMessage { _ = try load("{\"model\": {\"vocab\": {\"a\": 1,") }
        #expect(truncated.contains("/models/x/tokenizer.json") && truncated.contains("line 1"))
    }

    @Test("a tokenizer_config.json that is not JSON names that file")
    func configNotJSON() throws {
        let json = HandMadeTokenizerTests.byteLevelJSON()
        let m = errorMessage {
            _ = try Tokenizer(tokenizerJSON: Data(json.utf8), tokenizerConfigJSON: Data("{bos_token: 1}".utf8),
                              source: "/models/x/tokenizer.json")
        }
        #expect(m.contains("/models/x/tokenizer_config.json") && m.contains("not valid JSON"))
    }

    @Test("a missing tokenizer.json is reported with its path")
    func missingFile() {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-model-\(UUID().uuidString)")
        let m = errorMessage { _ = try Tokenizer(directory: dir) }
        #expect(m.contains("missing file") && m.contains("tokenizer.json"))
    }

    @Test("an unsupported pre-tokenizer is named")
    func unsupportedPreTokenizer() {
        let json = HandMadeTokenizerTests.byteLevelJSON().replacingOccurrences(
            of: "\"pre_tokenizer\": {\"type\": \"ByteLevel\"", with: "\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"")
        let m = errorMessage { _ = try load(json) }
        #expect(m.contains("pre-tokenizer") && m.contains("BertPreTokenizer"))
    }

    @Test("a Split regex with an unsupported construct names the construct")
    func unsupportedSplit() {
        for (regex, construct) in [("(?<=a)b", "lookbehind"), ("(a)\\\\1", "escape"), ("^a", "anchor")] {
            let json = HandMadeTokenizerTests.byteLevelJSON().replacingOccurrences(
                of: "\"pre_tokenizer\": {\"type\": \"ByteLevel\"",
                with: "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\(regex)\"}, \"behavior\": \"Isolated\", \"invert\": false")
            let m = errorMessage { _ = try load(json) }
            #expect(m.contains("Split") && m.contains(construct), "\(m)")
        }
    }

    @Test("unsupported normalizer, model, decoder and post-processor types are named")
    func unsupportedComponents() {
        let base = HandMadeTokenizerTests.byteLevelJSON()
        let cases: [(String, String, String)] = [
            ("\"normalizer\": null", "\"normalizer\": {\"type\": \"BertNormalizer\"}", "BertNormalizer"),
            ("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", "WordPiece"),
            ("\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"CTC\"", "CTC"),
            ("\"post_processor\": {\n    \"type\": \"TemplateProcessing\"", "\"post_processor\": {\n    \"type\": \"Whatever\"", "Whatever"),
            ("\"dropout\": null", "\"dropout\": 0.1", "dropout"),
        ]
        for (old, new, name) in cases {
            let json = base.replacingOccurrences(of: old, with: new)
            #expect(json != base, "the test did not change \(old)")
            let m = errorMessage { _ = try load(json) }
            #expect(m.contains(name) && m.contains("unsupported"), "\(m)")
        }
    }

    @Test("wrong field types name the field")
    func wrongField() {
        let json = HandMadeTokenizerTests.byteLevelJSON().replacingOccurrences(of: "\"h\": 0,", with: "\"h\": \"zero\",")
        let m = errorMessage { _ = try load(json) }
        #expect(m.contains("model.vocab.h") && m.contains("integer"))
        let badMerge = HandMadeTokenizerTests.byteLevelJSON().replacingOccurrences(of: "[\"o\", \"w\"]", with: "[\"o\", \"zz\"]")
        let m2 = errorMessage { _ = try load(badMerge) }
        #expect(m2.contains("model.merges[10]") && m2.contains("zz"))
    }

    @Test("a template with an unsupported construct names it")
    func unsupportedTemplate() {
        let cases: [(String, String)] = [
            ("{{ messages | wordwrap }}", "filter '|wordwrap'"),
            ("{% macro f() %}x{% endmacro %}", "tag '{% macro %}'"),
            ("{{ message.content.splitlines() }}", "method call '.splitlines(…)'"),
            ("{{ lipsum(2) }}", "function call 'lipsum(…)'"),
            ("{% set a, b = 1, 2 %}", "'set' of a tuple"),
            ("{{ x is divisibleby(3) }}", "test 'is divisibleby'"),
            ("{% filter upper %}x{% endfilter %}", "tag '{% filter %}'"),
        ]
        for (source, construct) in cases {
            let m = errorMessage { _ = try ChatTemplate(source: source) }
            #expect(m.contains("unsupported Jinja construct") && m.contains(construct), "\(source): \(m)")
        }
    }

    @Test("template syntax and rendering errors are reported")
    func templateErrors() {
        #expect(errorMessage { _ = try ChatTemplate(source: "{% if x %}no end") }.contains("endif"))
        #expect(errorMessage { _ = try ChatTemplate(source: "{{ 'unterminated }}") }.contains("unterminated"))
        #expect(errorMessage { _ = try ChatTemplate(source: "{% endfor %}") }.contains("endfor"))
        let m = errorMessage {
            _ = try ChatTemplate(source: "{{ nothing.here }}")
                .render(messages: [], addGenerationPrompt: false, bosToken: nil, eosToken: nil)
        }
        #expect(m.contains("'nothing' is undefined"))
        let m2 = errorMessage {
            _ = try ChatTemplate(source: "{{ 'a' + 1 }}")
                .render(messages: [], addGenerationPrompt: false, bosToken: nil, eosToken: nil)
        }
        #expect(m2.contains("unsupported operand types for +"))
    }

    @Test("a tokenizer without a chat template says so")
    func noTemplate() throws {
        let tokenizer = try load(HandMadeTokenizerTests.byteLevelJSON())
        let m = errorMessage { _ = try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "hi")]) }
        #expect(m.contains("no chat template"))
    }
}
