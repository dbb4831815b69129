import Foundation

extension Tokenizer {
    /// Loads the tokenizer at `path`, whatever its form:
    /// - a model directory: `tokenizer.json` (with tokenizer_config.json and chat_template.jinja),
    ///   else a SentencePiece or tiktoken `tokenizer.model`, else a `*.tiktoken` file;
    /// - a TurboMind workspace (its `triton_models/tokenizer` directory);
    /// - a file: `tokenizer.json` (any `.json`), a SentencePiece `.model`, or a tiktoken file
    ///   (`.tiktoken`, or a `.model` in tiktoken's text format).
    public static func load(path: String) throws -> Tokenizer {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TokenizerError.missingFile(path: path)
        }
        let url = URL(fileURLWithPath: path)
        if !isDirectory.boolValue {
            return try loadFile(url, directory: url.deletingLastPathComponent())
        }
        let workspaceTokenizer = url.appendingPathComponent("triton_models/tokenizer")
        if fm.fileExists(atPath: workspaceTokenizer.path) {
            return try load(path: workspaceTokenizer.path)
        }
        let json = url.appendingPathComponent("tokenizer.json")
        if fm.fileExists(atPath: json.path) { return try Tokenizer(directory: url) }
        let model = url.appendingPathComponent("tokenizer.model")
        if fm.fileExists(atPath: model.path) { return try loadFile(model, directory: url) }
        let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        if let tiktoken = entries.sorted().first(where: { $0.hasSuffix(".tiktoken") }) {
            return try loadFile(url.appendingPathComponent(tiktoken), directory: url)
        }
        throw TokenizerError.missingFile(
            path: "\(path)/tokenizer.json (nor tokenizer.model, *.tiktoken or triton_models/tokenizer)")
    }

    private static func loadFile(_ url: URL, directory: URL) throws -> Tokenizer {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        if url.pathExtension == "json" {
            let configURL = directory.appendingPathComponent("tokenizer_config.json")
            let config = url.lastPathComponent == "tokenizer.json" ? try? Data(contentsOf: configURL) : nil
            return try Tokenizer(tokenizerJSON: data, tokenizerConfigJSON: config, chatTemplateJinja: nil, source: url.path)
        }
        let configPath = directory.appendingPathComponent("tokenizer_config.json").path
        let template = try? TokenizerConfig(json: try? Data(contentsOf: URL(fileURLWithPath: configPath)), file: configPath).template
        let tokenizer = looksLikeTiktoken(data)
            ? try Tokenizer(tiktokenData: data, spec: nil, source: url.path, chatTemplate: template ?? nil)
            : try Tokenizer(sentencePieceData: data, source: url.path, chatTemplate: template ?? nil)
        // A broken chat template fails here, at load, not at the first prompt.
        try tokenizer.checkChatTemplateParses(file: "\(configPath): field 'chat_template'")
        return tokenizer
    }
}
