import Testing
@testable import Tokenizers

/// lmdeploy's named templates, against prompts written out by hand from lmdeploy's model.py.
@Suite("lmdeploy named chat templates")
struct NamedTemplateTests {
    let conversation = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello"),
                        ChatMessage(role: "user", content: "Bye")]

    @Test("names, aliases, stop words and session lengths")
    func registry() throws {
        for name in ["internlm-chat-7b", "internlm-chat-7b-8k", "internlm2-chat", "llama2", "llama3", "vicuna",
                     "qwen-7b", "qwen2", "baichuan2", "mistral"] {
            #expect(NamedChatTemplate.named(name) != nil, "\(name)")
        }
        #expect(NamedChatTemplate.named("nope") == nil)
        #expect(Set(NamedChatTemplate.names).count == NamedChatTemplate.names.count)
        #expect(try #require(NamedChatTemplate.named("internlm2")).name == "internlm2-chat")
        #expect(NamedChatTemplate.named("internlm2-chat")?.stopWords == ["<|im_end|>", "<|action_end|>"])
        #expect(NamedChatTemplate.named("llama3")?.stopWords == ["<|eot_id|>", "<|end_of_text|>"])
        #expect(NamedChatTemplate.named("internlm-chat-7b-8k")?.sessionLen == 8192)
        #expect(NamedChatTemplate.named("llama2")?.sessionLen == 4096)
        #expect(NamedChatTemplate.named("internlm2-chat")?.sessionLen == 32768)
    }

    @Test("conversations render as lmdeploy's messages2prompt")
    func render() throws {
        let qwen = try #require(NamedChatTemplate.named("qwen-7b"))
        #expect(try qwen.render(messages: conversation) ==
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
        let llama3 = try #require(NamedChatTemplate.named("llama3"))
        #expect(try llama3.render(messages: [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Hi")]) ==
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n")
        let mistral = try #require(NamedChatTemplate.named("mistral"))
        #expect(try mistral.render(messages: conversation) == "[INST] Hi [/INST]Hello</s>[INST] Bye [/INST]")
        let vicuna = try #require(NamedChatTemplate.named("vicuna"))
        #expect(try vicuna.render(messages: [ChatMessage(role: "user", content: "Hi")]) ==
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: Hi ASSISTANT: ")
        let baichuan = try #require(NamedChatTemplate.named("baichuan2"))
        #expect(try baichuan.render(messages: conversation) == "<reserved_106>Hi<reserved_107>Hello<reserved_106>Bye<reserved_107>")
        let internlm = try #require(NamedChatTemplate.named("internlm-chat-7b"))
        #expect(try internlm.render(messages: [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "Hi")]) ==
            "<|System|>:S\n<|User|>:Hi\n<|Bot|>:")
        let llama2 = try #require(NamedChatTemplate.named("llama2"))
        #expect(try llama2.render(messages: [ChatMessage(role: "system", content: "S")] + conversation) ==
            "[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] Hello</s><s>[INST] Bye [/INST] ")
        #expect(throws: TokenizerError.self) { try qwen.render(messages: [ChatMessage(role: "tool", content: "x")]) }
    }

    @Test("interactive prompts as lmdeploy's get_prompt")
    func prompts() throws {
        let t = try #require(NamedChatTemplate.named("internlm2-chat"))
        #expect(t.prompt("Bye", sequenceStart: false) == "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
        #expect(t.prompt("Hi", sequenceStart: true).hasPrefix("<|im_start|>system\nYou are an AI assistant whose name is InternLM"))
        let l3 = try #require(NamedChatTemplate.named("llama3"))
        #expect(l3.prompt("Hi", sequenceStart: true) ==
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    }
}
