// Opens a model from a path the user gives: today a Hugging Face directory (config.json +
// safetensors + tokenizer files). The TurboMind workspace of issue [W] plugs in here.
import Foundation
import Tokenizers

/// Everything needed to run one model: its config, its weights (mmapped), and its tokenizer.
public struct ModelSource: @unchecked Sendable {
    public let directory: URL
    public let config: ModelConfig
    public let weights: ModelWeights
    public let tokenizer: Tokenizer

    /// Loads the HF model directory at `path`.
    public static func load(path: String) throws -> ModelSource {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FormatError.fileNotFound(file: url.path, what: "a model directory (Hugging Face: config.json, *.safetensors, tokenizer.json)")
        }
        let config = try ModelConfig.load(directory: url)
        let weights = try ModelWeights.load(directory: url, config: config)
        let tokenizer = try Tokenizer(directory: url)
        return ModelSource(directory: url, config: config, weights: weights, tokenizer: tokenizer)
    }

    /// Token ids that end a reply: the config's eos ids and the tokenizer's eos token.
    public var stopTokenIds: Set<Int32> {
        var ids = Set(config.eosTokenIds.map(Int32.init))
        if let eos = tokenizer.eosTokenId { ids.insert(Int32(eos)) }
        return ids
    }
}
