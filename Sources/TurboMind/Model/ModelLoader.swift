// Opens a model from a path the user gives: a Hugging Face directory (config.json + safetensors +
// tokenizer files) or a TurboMind workspace (`lmdeploy convert`'s output: the workspace root, its
// `triton_models` or its `triton_models/weights` folder).
import Foundation
import Tokenizers

/// Everything needed to run one model: its config, its weights (mmapped), and its tokenizer.
public struct ModelSource: @unchecked Sendable {
    public let directory: URL
    public let config: ModelConfig
    public let weights: ModelWeights
    public let tokenizer: Tokenizer
    /// The workspace's config.ini when loaded from a workspace (its inference parameters:
    /// session_len, max_batch_size, cache_max_entry_count, quant_policy, ...); nil for HF directories.
    public var workspace: WorkspaceConfig? = nil

    /// Loads the HF model directory or TurboMind workspace at `path`.
    public static func load(path: String) throws -> ModelSource {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        let expected = "a model directory (Hugging Face: config.json, *.safetensors, tokenizer.json; or a TurboMind workspace)"
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw FormatError.fileNotFound(file: url.path, what: expected)
        }
        guard isDirectory.boolValue else {
            throw FormatError.notADirectory(file: url.path, expected: expected)
        }
        if WorkspaceLayout.detect(path: url) == nil, let layout = WorkspaceLayout.detectIgnoringConfig(path: url) {
            throw FormatError.workspaceConfigMissing(workspace: layout.root.path, file: layout.configINI.path)
        }
        if let layout = WorkspaceLayout.detect(path: url) {
            let loaded = try WorkspaceReader.load(layout)
            let tokenizer = try Tokenizer(directory: layout.tokenizer)
            return ModelSource(directory: layout.root, config: loaded.config, weights: loaded.weights, tokenizer: tokenizer,
                               workspace: loaded.workspace)
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
