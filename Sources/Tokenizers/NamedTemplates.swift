/// lmdeploy's named chat templates (`--model-name`), with the strings, stop words and session
/// lengths of lmdeploy's `lmdeploy/model.py` (v0.4 registry, whose `BaseChatTemplate` fields all
/// templates below are expressed in).
///
/// Usage:
/// ```swift
/// guard let t = NamedChatTemplate.named("internlm2-chat") else { … unknown name … }
/// let prompt = try t.render(messages: [ChatMessage(role: "user", content: "hi")])
/// t.stopWords   // ["<|im_end|>", "<|action_end|>"]
/// t.sessionLen  // 32768
/// NamedChatTemplate.names  // every accepted name, aliases included (what `lmdeploy list` prints)
/// ```
///
/// A conversation renders as lmdeploy's `messages2prompt`: the default system prompt
/// (`system + metaInstruction + eosys`) unless the first message is a system message, then each
/// message as `begin(role) + content + end(role)`, then the assistant marker. Interactive chat
/// (one user turn at a time, the KV cache keeping earlier turns) uses `prompt(_:sequenceStart:)`,
/// lmdeploy's `get_prompt`.
public struct NamedChatTemplate: Sendable, Equatable {
    /// What the model is prompted for: `chat` wraps messages in the template, `completion` passes
    /// the text through unchanged (base models).
    public enum Capability: String, Sendable {
        case chat, completion
    }

    /// The canonical name (the first of `aliases`).
    public let name: String
    /// Every name this template is registered under in lmdeploy.
    public let aliases: [String]
    /// Begin of the system prompt.
    public let system: String
    /// The default system prompt; nil when the template has none (then no system block is added).
    public let metaInstruction: String?
    /// End of the system prompt.
    public let eosys: String
    /// Begin and end of a user message.
    public let user: String
    public let eoh: String
    /// Begin and end of an assistant message.
    public let assistant: String
    public let eoa: String
    /// Between an assistant message and the next user message.
    public let separator: String
    /// Texts that end generation.
    public let stopWords: [String]
    /// lmdeploy's default session length (tokens of one conversation) for this model.
    public let sessionLen: Int
    public let capability: Capability
    /// InternLM2's extra role: `environment` (tool results), begin and end.
    let environment: (begin: String, end: String)?
    /// Llama 3: a text placed before the first prompt of a session (`<|begin_of_text|>`) and the
    /// last character of the rendered conversation dropped (lmdeploy's `[:-1]`).
    let sessionPrefix: String
    let dropsLastCharacter: Bool

    public static func == (a: NamedChatTemplate, b: NamedChatTemplate) -> Bool { a.name == b.name }

    /// Every accepted name (aliases included), in registry order.
    public static var names: [String] { all.flatMap(\.aliases) }

    /// The canonical names, one per template.
    public static var canonicalNames: [String] { all.map(\.name) }

    /// The template registered under `name` (exact match, as lmdeploy's registry), or nil.
    public static func named(_ name: String) -> NamedChatTemplate? {
        all.first { $0.aliases.contains(name) }
    }

    /// Renders a conversation (lmdeploy's `messages2prompt`). Roles: `system`, `user`,
    /// `assistant` (and `environment` for internlm2-chat). With `addGenerationPrompt` (lmdeploy's
    /// only behaviour) the prompt ends with the assistant marker; without it, it ends after the
    /// last message. A completion-only template returns the concatenated contents unchanged.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(TokenizerError) -> String {
        if capability == .completion {
            return messages.map(\.content).joined()
        }
        var out = sessionPrefix
        if let metaInstruction, let first = messages.first, first.role != "system" {
            out += system + metaInstruction + eosys
        }
        for message in messages {
            let (begin, end) = try markers(for: message.role)
            out += begin + message.content + end
        }
        if addGenerationPrompt {
            out += assistant
            if dropsLastCharacter, !out.isEmpty { out.removeLast() }
        }
        return out
    }

    /// The prompt of one user turn in an interactive session (lmdeploy's `get_prompt`): at the
    /// start of a session with the default system prompt, later turns begin with the separator.
    public func prompt(_ text: String, sequenceStart: Bool) -> String {
        if capability == .completion { return text }
        if sequenceStart {
            if let metaInstruction {
                return sessionPrefix + system + metaInstruction + eosys + user + text + eoh + assistant
            }
            return sessionPrefix + user + text + eoh + assistant
        }
        return separator + user + text + eoh + assistant
    }

    private func markers(for role: String) throws(TokenizerError) -> (String, String) {
        switch role {
        case "system": return (system, eosys)
        case "user": return (user, eoh)
        case "assistant": return (assistant, eoa + separator)
        case "environment":
            if let environment { return environment }
        default: break
        }
        let roles = environment == nil ? "system, user, assistant" : "system, user, assistant, environment"
        throw TokenizerError.templateRender(
            message: "the '\(name)' template has no role '\(role)' (roles: \(roles))")
    }

    init(aliases: [String], system: String = "", metaInstruction: String? = "", eosys: String = "",
         user: String = "", eoh: String = "", assistant: String = "", eoa: String = "",
         separator: String = "", stopWords: [String] = [], sessionLen: Int = 2048,
         capability: Capability = .chat, environment: (String, String)? = nil,
         sessionPrefix: String = "", dropsLastCharacter: Bool = false) {
        self.name = aliases[0]
        self.aliases = aliases
        self.system = system
        self.metaInstruction = metaInstruction
        self.eosys = eosys
        self.user = user
        self.eoh = eoh
        self.assistant = assistant
        self.eoa = eoa
        self.separator = separator
        self.stopWords = stopWords
        self.sessionLen = sessionLen
        self.capability = capability
        self.environment = environment.map { (begin: $0.0, end: $0.1) }
        self.sessionPrefix = sessionPrefix
        self.dropsLastCharacter = dropsLastCharacter
    }

    static let internLMMeta = """
        You are an AI assistant whose name is InternLM (书生·浦语).
        - InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.
        - InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the user such as English and 中文.

        """

    static let llama2Meta = """
        You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.

        If a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.
        """

    static func internLM(_ aliases: [String], sessionLen: Int) -> NamedChatTemplate {
        NamedChatTemplate(
            aliases: aliases, system: "<|System|>:", metaInstruction: internLMMeta, eosys: "\n",
            user: "<|User|>:", eoh: "\n", assistant: "<|Bot|>:", eoa: "<eoa>", separator: "\n",
            stopWords: ["<eoa>"], sessionLen: sessionLen)
    }

    static func chatML(_ aliases: [String]) -> NamedChatTemplate {
        NamedChatTemplate(
            aliases: aliases, system: "<|im_start|>system\n", metaInstruction: "You are a helpful assistant.",
            eosys: "<|im_end|>\n", user: "<|im_start|>user\n", eoh: "<|im_end|>\n",
            assistant: "<|im_start|>assistant\n", eoa: "<|im_end|>", separator: "\n",
            stopWords: ["<|im_end|>"], sessionLen: 8192)
    }

    /// The registry. `qwen2` is not an lmdeploy v0.4 name: Qwen2 chat models use the same ChatML
    /// prompt as Qwen-7B-Chat, registered here under that name too.
    static let all: [NamedChatTemplate] = [
        NamedChatTemplate(aliases: ["base", "llama"], capability: .completion),
        NamedChatTemplate(
            aliases: ["vicuna", "wizardlm"],
            metaInstruction: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
            eosys: " ", user: "USER: ", eoh: " ", assistant: "ASSISTANT: ", eoa: "</s>", stopWords: ["</s>"]),
        internLM(["internlm-chat-7b", "internlm-chat", "internlm"], sessionLen: 2048),
        internLM(["internlm-chat-7b-8k", "internlm-chat-20b"], sessionLen: 8192),
        NamedChatTemplate(
            aliases: ["internlm2-chat", "internlm2-chat-1_8b", "internlm2-chat-7b", "internlm2-chat-20b", "internlm2"],
            system: "<|im_start|>system\n", metaInstruction: internLMMeta, eosys: "<|im_end|>\n",
            user: "<|im_start|>user\n", eoh: "<|im_end|>\n", assistant: "<|im_start|>assistant\n",
            eoa: "<|im_end|>", separator: "\n", stopWords: ["<|im_end|>", "<|action_end|>"], sessionLen: 32768,
            environment: ("<|im_start|>environment\n", "<|im_end|>\n")),
        NamedChatTemplate(aliases: ["baichuan2", "baichuan2-7b"], user: "<reserved_106>", assistant: "<reserved_107>"),
        NamedChatTemplate(
            aliases: ["llama2", "llama-2", "llama-2-chat"], system: "[INST] <<SYS>>\n", metaInstruction: llama2Meta,
            eosys: "\n<</SYS>>\n\n", assistant: " [/INST] ", eoa: "</s>", separator: "<s>[INST] ", sessionLen: 4096),
        NamedChatTemplate(
            aliases: ["llama3"], system: "<|start_header_id|>system<|end_header_id|>\n\n", metaInstruction: nil,
            eosys: "<|eot_id|>", user: "<|start_header_id|>user<|end_header_id|>\n\n", eoh: "<|eot_id|>",
            assistant: "<|start_header_id|>assistant<|end_header_id|>\n\n", eoa: "<|eot_id|>",
            stopWords: ["<|eot_id|>", "<|end_of_text|>"], sessionLen: 8192,
            sessionPrefix: "<|begin_of_text|>", dropsLastCharacter: true),
        chatML(["qwen-7b", "qwen-14b", "qwen", "qwen2"]),
        NamedChatTemplate(
            aliases: ["mistral", "mixtral", "Mistral-7B-Instruct", "Mixtral-8x7B-Instruct"],
            user: "[INST] ", eoh: " [/INST]", eoa: "</s>"),
    ]
}
