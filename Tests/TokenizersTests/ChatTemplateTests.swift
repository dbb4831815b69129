import Foundation
import Testing
@testable import Tokenizers

/// Expected outputs were rendered by Python jinja2 3.1 with transformers' environment
/// (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`).
@Suite("Jinja subset interpreter")
struct ChatTemplateTests {
    let messages = [
        ChatMessage(role: "system", content: "Be brief."),
        ChatMessage(role: "user", content: "Hi 'there'"),
        ChatMessage(role: "assistant", content: "Hello!"),
        ChatMessage(role: "user", content: "Bye"),
    ]

    func render(_ source: String) throws -> String {
        try ChatTemplate(source: source).render(messages: messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }

    @Test("loop variables, subscripts and attributes")
    func loop() throws {
        let source = "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m['role'] }}={{ m.content }}{% if not loop.last %}, {% endif %}{% endfor %}"
        #expect(try render(source) == "1/4:system=Be brief., 2/4:user=Hi 'there', 3/4:assistant=Hello!, 4/4:user=Bye")
    }

    @Test("whitespace control, trim_blocks, lstrip_blocks, comments and the trailing newline")
    func whitespace() throws {
        let source = "{%- for m in messages %}\n    {%- if m.role == 'system' %}\n<<SYS>>{{ m.content }}<</SYS>>\n    {% elif m.role == 'user' %}\n  [INST] {{ m.content }} [/INST]\n    {% else %}\n {{ m.content }}{{ eos_token }}\n    {%- endif %}\n{% endfor %}\n{# a comment #}\n{% if add_generation_prompt %}    [GEN]\n{% endif %}\n"
        #expect(try render(source) == "<<SYS>>Be brief.<</SYS>>\n  [INST] Hi 'there' [/INST]\n Hello!</s>  [INST] Bye [/INST]\n    [GEN]\n")
        let plus = "  {%+ if true %}kept{% endif %}\n  {% if true %}stripped{% endif +%}\nX{{ 'y' -}}   \n  Z {#- c -#}  W"
        #expect(try render(plus) == "  keptstripped\nXyZW")
        #expect(try render("a\r\nb\r\n") == "a\nb")
    }

    @Test("expressions: arithmetic, concatenation, comparisons, membership, tests, inline if")
    func expressions() throws {
        let source = "{% set n = 4 %}{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' ~ 1 ~ none }} {{ 'x' * 3 }} {{ [1, 'b', none, true] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'ell' in 'hello' }} {{ 'z' not in ['a', 'b'] }} {{ messages[-1].content }} {{ messages[0]['missing'] is defined }} {{ foo is not defined }} {{ none is none }} {{ 'yes' if messages else 'no' }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 2.5 }} {{ 3.0 }} {{ undefined_var }}|"
        #expect(try render(source) == "3 -4 1 2 1024 3.5 7 9 a1None xxx [1, 'b', None, True] True False True True Bye False True True yes True True True 2.5 3.0 |")
    }

    @Test("set inside a loop does not outlive the iteration")
    func setScope() throws {
        let source = "{% set greeting = 'Hi' %}{% for m in messages %}{% set greeting = greeting ~ '!' %}{{ greeting }} {% endfor %}{{ greeting }}"
        #expect(try render(source) == "Hi! Hi! Hi! Hi! Hi")
    }

    @Test("for-else, iterating strings, loop.previtem")
    func forElse() throws {
        let source = "{% for m in [] %}x{% else %}empty{% endfor %}{% for c in 'ab' %}[{{ c }}]{% endfor %}{% for m in messages %}{% if loop.first %}{{ loop.previtem is defined }}{% endif %}{% endfor %}"
        #expect(try render(source) == "empty[a][b]False")
    }

    @Test("string literal escapes")
    func escapes() throws {
        let source = "{{ 'tab\\there\\nnew \\'q\\' \\\"d\\\" \\\\ \\x41\\u00e9' }}{{ \"dq 'x'\" }}{{ 'adj' 'acent' }}"
        #expect(try render(source) == "tab\there\nnew 'q' \"d\" \\ Aédq 'x'adjacent")
    }

    @Test("bos_token and eos_token (a Llama-2-style template)")
    func specialTokens() throws {
        let source = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
        #expect(try render(source) == "<s>[INST] Hi 'there' [/INST]Hello!</s>[INST] Bye [/INST]")
    }

    @Test("the SmolLM2 template without a generation prompt, and with a leading system message")
    func smolLM2() throws {
        let source = try #require(Fixtures.tokenizer.chatTemplate)
        let template = try ChatTemplate(source: source)
        let text = try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false,
                                       bosToken: nil, eosToken: nil)
        #expect(text == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        #expect(try template.render(messages: [], addGenerationPrompt: true, bosToken: nil, eosToken: nil) == "<|im_start|>assistant\n")
    }

    @Test("chat_template.jinja in the directory takes precedence")
    func jinjaFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: Fixtures.smolLM2HF.appendingPathComponent(name),
                                             to: dir.appendingPathComponent(name))
        }
        try Data("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}".utf8)
            .write(to: dir.appendingPathComponent("chat_template.jinja"))
        let tokenizer = try Tokenizer(directory: dir)
        #expect(try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "Hi")]) == "user: Hi\n")
    }

    @Test("a chat_template list picks the default template; bos_token may be an object")
    func configForms() throws {
        let config = """
        {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "<mask>",
         "chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ bos_token }}default"}]}
        """
        let tokenizer = try Tokenizer(tokenizerJSON: Data(HandMadeTokenizerTests.byteLevelJSON().utf8),
                                      tokenizerConfigJSON: Data(config.utf8), source: "tokenizer.json")
        #expect(tokenizer.bosTokenId == 30 && tokenizer.eosTokenId == 31)
        #expect(try tokenizer.applyChatTemplate([]) == "<s>default")
    }
}
