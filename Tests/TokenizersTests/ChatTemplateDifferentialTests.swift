import Foundation
import Testing
@testable import Tokenizers

/// Real chat templates (Fixtures/templates, data) rendered by our Jinja interpreter and by Python
/// `jinja2` as Hugging Face renders them, on conversations with and without a system prompt,
/// multi-turn, with tools and a tool call: byte-identical output, and an error wherever jinja2
/// raises one.
@Suite("Differential: chat templates vs jinja2")
struct ChatTemplateDifferentialTests {
    static let templatesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/templates")

    struct Case: Decodable {
        let output: String?
        let error: String?
        let addGenerationPrompt: Bool
        /// The conversation as JSON text (key order kept, as the template sees it).
        let conversationJSON: String
        enum CodingKeys: String, CodingKey {
            case output, error
            case addGenerationPrompt = "add_generation_prompt"
            case conversationJSON = "conversation_json"
        }
    }

    static let reference: Result<[String: [Case]], Error> = Result {
        let data = try ReferenceRunner.run("template_reference.py", [templatesDirectory.path])
        return try JSONDecoder().decode([String: [Case]].self, from: data)
    }

    static let templateNames: [String] = {
        ((try? FileManager.default.contentsOfDirectory(atPath: templatesDirectory.path)) ?? [])
            .filter { $0.hasSuffix(".jinja") }.sorted()
    }()

    @Test("at least 12 real templates are fixtures")
    func enoughTemplates() {
        #expect(Self.templateNames.count >= 12)
    }

    /// Issue [T] requires the official templates of these model families (origins in Fixtures/templates/README.md).
    @Test("official templates of Mistral, InternLM2, Gemma, DeepSeek, Phi-3 and Zephyr are fixtures")
    func officialTemplates() {
        for name in ["mistralai-Mistral-7B-Instruct-v0.3.jinja", "internlm-internlm2-chat-7b.jinja", "google-gemma-2-2b-it.jinja",
                     "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "microsoft-Phi-3.5-mini-instruct.jinja",
                     "HuggingFaceH4-zephyr-7b-beta.jinja"] {
            #expect(Self.templateNames.contains(name), "missing fixture \(name)")
        }
    }

    @Test("byte-identical to jinja2", arguments: templateNames)
    func render(name: String) throws {
        let cases = try Self.reference.get()
        let list = try #require(cases[name])
        let source = try String(contentsOf: Self.templatesDirectory.appendingPathComponent(name), encoding: .utf8)
        let template = try ChatTemplate(source: source)
        var rendered = 0
        for (k, c) in list.enumerated() {
            let conversation = Data(c.conversationJSON.utf8)
            do {
                let ours = try template.render(conversationJSON: conversation, addGenerationPrompt: c.addGenerationPrompt,
                                               bosToken: "<s>", eosToken: "</s>")
                if let expected = c.output {
                    #expect(ours.unicodeScalars.elementsEqual(expected.unicodeScalars),
                            "case \(k): ours \(ours.debugDescription)\nreference \(expected.debugDescription)")
                    rendered += 1
                } else {
                    Issue.record("case \(k): jinja2 raised \(c.error ?? "") but we rendered \(ours.debugDescription)")
                }
            } catch {
                #expect(c.error != nil, "case \(k): we failed with \(error) but jinja2 rendered \(c.output?.debugDescription ?? "")")
            }
        }
        #expect(rendered > 0)
    }

    @Test("unsupported constructs are errors naming them")
    func unsupported() {
        for (source, construct) in [("{% macro f() %}x{% endmacro %}", "macro"), ("{{ x | wordwrap }}", "wordwrap"),
                                    ("{{ cycler(1) }}", "cycler"), ("{{ x.pop() }}", "pop")] {
            do {
                _ = try ChatTemplate(source: source)
                Issue.record("\(source) parsed")
            } catch {
                #expect("\(error)".contains(construct), "\(error)")
            }
        }
    }
}
