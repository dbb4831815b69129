// Shared by the Tokenizers fuzz targets (compiled into each one).
import Foundation
@testable import Tokenizers

/// Encodes and decodes a fixed text with a tokenizer that loaded, and looks up ids at and past
/// the ends of the vocabulary.
func exerciseTokenizer(_ tokenizer: Tokenizer) {
    let text = "Hello world! 123 ünïcödé 你好 \u{1F600}\n\t  <|im_start|>x"
    let ids = tokenizer.encode(text)
    _ = tokenizer.encode(text, addSpecialTokens: false)
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: true)
    _ = tokenizer.decode([0, 1, 2, tokenizer.vocabSize - 1, tokenizer.vocabSize, -1])
    for id in [0, 1, tokenizer.vocabSize - 1, tokenizer.vocabSize, -1] {
        _ = tokenizer.idToToken(id)
        _ = tokenizer.isSpecial(id)
    }
    _ = tokenizer.tokenToId("Hello")
}

/// Parses `source` as a chat template and renders it with the fixed conversation.
func renderTemplate(_ source: String, bos: String?, eos: String?) {
    guard let template = try? ChatTemplate(source: source) else { return }
    let messages = fuzzMessages.map { ChatMessage(role: $0.role, content: $0.content) }
    _ = try? template.render(messages: messages, addGenerationPrompt: true, bosToken: bos, eosToken: eos)
    _ = try? template.render(messages: Array(messages.prefix(1)), addGenerationPrompt: false, bosToken: nil, eosToken: nil)
}
