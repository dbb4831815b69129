import Foundation
import Testing
@testable import Tokenizers

/// Locates Tests/Fixtures from this file's path.
enum Fixtures {
    static let testsDirectory: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.lastPathComponent != "Tests" && url.path != "/" { url.deleteLastPathComponent() }
        return url
    }()

    static let smolLM2 = testsDirectory.appendingPathComponent("Fixtures/smollm2")
    static let smolLM2HF = smolLM2.appendingPathComponent("hf")

    /// The SmolLM2 tokenizer, loaded once for all tests.
    static let tokenizer: Tokenizer = {
        do {
            return try Tokenizer(directory: smolLM2HF)
        } catch {
            fatalError("cannot load the SmolLM2 tokenizer: \(error)")
        }
    }()

    static let golden: Golden = {
        do {
            let data = try Data(contentsOf: smolLM2.appendingPathComponent("golden.json"))
            return try JSONDecoder().decode(Golden.self, from: data)
        } catch {
            fatalError("cannot read golden.json: \(error)")
        }
    }()
}

/// The parts of golden.json (rendered and tokenized by Hugging Face transformers) used here.
struct Golden: Decodable {
    struct TokenizeCase: Decodable, CustomTestStringConvertible {
        let text: String
        let ids: [Int]
        let decoded: String
        var testDescription: String { text.debugDescription }
    }

    struct ChatTemplateCase: Decodable {
        let messages: [ChatMessage]
        let addGenerationPrompt: Bool
        let text: String

        enum CodingKeys: String, CodingKey {
            case messages, text
            case addGenerationPrompt = "add_generation_prompt"
        }
    }

    struct ChatCase: Decodable {
        let messages: [ChatMessage]
        let text: String
        let ids: [Int]
    }

    struct PromptCase: Decodable {
        let prompt: String
        let ids: [Int]
        let greedyIds: [Int]
        let greedyText: String

        enum CodingKeys: String, CodingKey {
            case prompt, ids
            case greedyIds = "greedy_ids"
            case greedyText = "greedy_text"
        }
    }

    let tokenize: [TokenizeCase]
    let chatTemplate: [ChatTemplateCase]
    let chats: [ChatCase]
    let prompts: [PromptCase]

    enum CodingKeys: String, CodingKey {
        case tokenize, chats, prompts
        case chatTemplate = "chat_template"
    }
}
