// Hostile and inconsistent model files: implausible sizes in config.json and config.ini, a config
// describing fewer layers than the checkpoint holds, duplicate tensor names, ids outside the
// vocabulary, a workspace without config.ini, a file given as the model path, and the destination
// checks of `convert`. Each must be a clear error naming the file and the field, raised before
// anything is allocated (the sizes below would trap on overflow or exhaust memory otherwise).

import Foundation
import Testing
import Tokenizers
@testable import TurboMind

@Suite struct PlausibilityTests {
    static func failure(_ json: String) -> String {
        do {
            _ = try ModelConfig.decode(Data(json.utf8), file: "/m/config.json")
            Issue.record("accepted \(json)")
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test(arguments: [
        ("num_hidden_layers", "1e9", "1000000000"), ("num_hidden_layers", "1000000000", "at most 1024"),
        ("head_dim", "4611686018427387904", "4611686018427387904"), ("hidden_size", "9223372036854775806", "at most"),
        ("intermediate_size", "9223372036854775807", "at most"), ("vocab_size", "4611686018427387904", "at most"),
        ("num_attention_heads", "4611686018427387904", "at most"), ("max_position_embeddings", "9223372036854775807", "at most"),
    ])
    func implausibleConfigJSONSizes(key: String, value: String, words: String) {
        var json = ModelConfigTests.llama("\"\(key)\": \(value)", removing: [key])
        // A huge head count needs a matching kv count to reach the bound rather than the divisor check.
        if key == "num_attention_heads" { json = json.replacingOccurrences(of: "\"num_key_value_heads\": 2, ", with: "") }
        let message = PlausibilityTests.failure(json)
        #expect(message.contains("/m/config.json") && message.contains("'\(key)'") && message.contains(words), "\(message)")
    }

    @Test func tokenIdsMustLieInTheVocabulary() {
        for (fields, key) in [(#""eos_token_id": 1e9"#, "'eos_token_id'"), (#""eos_token_id": 128"#, "'eos_token_id'"),
                              (#""eos_token_id": [2, 500]"#, "'eos_token_id[1]'"), (#""bos_token_id": -1"#, "'bos_token_id'")] {
            let message = PlausibilityTests.failure(ModelConfigTests.llama(fields))
            #expect(message.contains(key) && message.contains("0 ..< vocab_size (128)"), "\(message)")
        }
        #expect(throws: Never.self) { try ModelConfigTests.decode(ModelConfigTests.llama(#""bos_token_id": 0, "eos_token_id": [127]"#)) }
    }

    @Test func boundsCatchOverflowingProducts() {
        // Each dimension within its bound, but vocab × hidden past the model limit: still refused, no trap.
        let message = "\((try? ModelBounds.check(hidden: ModelBounds.maxHiddenSize, inter: 1, layers: 1, heads: 1, kvHeads: 1, headDim: 2, vocab: ModelBounds.maxVocabSize, file: "f", keys: .configJSON)) == nil)"
        #expect(message == "true")
        #expect(throws: FormatError.self) {
            try ModelBounds.check(hidden: ModelBounds.maxHiddenSize, inter: ModelBounds.maxIntermediateSize, layers: ModelBounds.maxLayers,
                                  heads: 1, kvHeads: 1, headDim: 2, vocab: 2, file: "f", keys: .configJSON)
        }
        let smol = try? ModelBounds.check(hidden: 576, inter: 1536, layers: 30, heads: 9, kvHeads: 3, headDim: 64, vocab: 49152,
                                          file: "f", keys: .configJSON)
        // SmolLM2-135M's published 134,515,008 parameters, plus its tied head counted as a separate
        // table (49152 × 576) and the bias allowance of 2 × 576 + 2 × 192 per layer: an upper bound.
        #expect(smol == 134_515_008 + 49152 * 576 + 30 * (2 * 576 + 2 * 192), "\(String(describing: smol))")
    }

    @Test func configLayersMustMatchTheCheckpoint() throws {
        let dir = try TinyModel.makeTemporaryDirectory("layers")
        defer { try? FileManager.default.removeItem(at: dir) }
        try TinyModel.write(to: dir, layers: 4)
        let config = try ModelConfig.load(directory: dir)
        var fewer = config
        fewer.numHiddenLayers = 2
        do {
            _ = try ModelWeights.load(directory: dir, config: fewer)
            Issue.record("a 4-layer checkpoint loaded as 2 layers")
        } catch {
            let message = "\(error)"
            #expect(message.contains("model.safetensors") && message.contains("layers 2…3")
                    && message.contains("num_hidden_layers = 2") && message.contains("model.layers.2."), "\(message)")
        }
        #expect(try ModelWeights.load(directory: dir, config: config).layers.count == 4)
    }

    @Test func duplicateTensorNamesInAHeaderAreRefused() throws {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let message = try SafetensorsTests.openError(SafetensorsTests.rawFile(header: header, data: [UInt8](repeating: 0, count: 8)))
        #expect(message.contains("'a'") && message.contains("more than once"), "\(message)")
        // Names differing only in Unicode normalization are different tensors (exact scalars).
        let distinct = #"{"\u00e9":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e\u0301":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        let dir = try TinyModel.makeTemporaryDirectory("dup")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("ok.safetensors")
        try Data(SafetensorsTests.rawFile(header: distinct, data: [UInt8](repeating: 0, count: 8))).write(to: url)
        #expect(try SafetensorsFile(url: url).entries.count == 2)
    }

    /// A config.ini with a `key = value` replaced, loaded through ModelSource.
    static func workspaceError(_ root: URL, key: String, value: String) throws -> String {
        let layout = WorkspaceLayout(root: root)
        let text = try String(contentsOf: layout.configINI, encoding: .utf8)
        let edited = text.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasPrefix("\(key) = ") ? "\(key) = \(value)" : String($0)
        }.joined(separator: "\n")
        try edited.write(to: layout.configINI, atomically: true, encoding: .utf8)
        defer { try? text.write(to: layout.configINI, atomically: true, encoding: .utf8) }
        do {
            _ = try ModelSource.load(path: root.path)
            Issue.record("loaded a workspace with \(key) = \(value)")
            return ""
        } catch {
            return "\(error)"
        }
    }

    @Test func implausibleWorkspaceConfigs() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("implausible")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf"), ws = root.appendingPathComponent("ws")
        _ = try WorkspaceTestSupport.tinyModel(hf)
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama"))
        let ini = WorkspaceLayout(root: ws).configINI.path
        for (key, value, words) in [("num_layer", "1000000000", "at most 1024"), ("inter_size", "9223372036854775807", "at most"),
                                    ("vocab_size", "4611686018427387904", "at most"), ("size_per_head", "4611686018427387904", "at most"),
                                    ("head_num", "4611686018427387904", "at most"), ("end_id", "1000000000", "vocab_size (130)"),
                                    ("start_id", "-1", "vocab_size (130)"), ("max_batch_size", "100000000", "at most"),
                                    ("num_layer", "1", "layers 1…1")] {
            let started = Date()
            let message = try PlausibilityTests.workspaceError(ws, key: key, value: value)
            #expect(message.contains(ini) && message.contains("[llama] \(key)") && message.contains(words), "\(key) = \(value): \(message)")
            #expect(Date().timeIntervalSince(started) < 5, "\(key) = \(value) took \(Date().timeIntervalSince(started)) s")
        }
        #expect(try ModelSource.load(path: ws.path).workspace?.numLayer == 2)
    }

    @Test func workspaceWithoutConfigINIAndAFileAsTheModelPath() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("noini")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf"), ws = root.appendingPathComponent("ws")
        _ = try WorkspaceTestSupport.tinyModel(hf)
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama"))
        let layout = WorkspaceLayout(root: ws)
        try FileManager.default.removeItem(at: layout.configINI)
        for path in [ws, layout.tritonModels, layout.weights] {
            #expect { try ModelSource.load(path: path.path) } throws: {
                "\($0)".contains("workspace's config.ini is missing") && "\($0)".contains(layout.configINI.path) && !"\($0)".contains("config.json")
            }
        }
        let file = hf.appendingPathComponent("config.json")
        #expect { try ModelSource.load(path: file.path) } throws: { "\($0)".contains("\(file.path) is a file, expected a model directory") }
    }

    @Test func destinationChecks() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("dst")
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        let source = root.appendingPathComponent("models/m"), here = root.appendingPathComponent("work")
        try fm.createDirectory(at: source, withIntermediateDirectories: true)
        try fm.createDirectory(at: here, withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: here.appendingPathComponent("link"), withDestinationURL: source)
        func refused(_ path: String, force: Bool = true) -> Bool {
            (try? WorkspaceWriter.checkDestination(path, source: source, force: force, currentDirectory: here.path)) == nil
        }
        for path in ["", "/", ".", "./", "..", here.path + "/../..", source.path, source.path + "/x", source.path + "/..",
                     "link", "link/", "link/sub/../sub2", root.path + "/models/./m/../m"] {
            #expect(refused(path), "'\(path)' accepted")
        }
        #expect(!refused("ws") && !refused(root.path + "/models/other"))
        #expect(try WorkspaceWriter.checkDestination("a/../ws", source: source, force: false, currentDirectory: here.path).path
                == WorkspaceWriter.resolvedPath(here.path) + "/ws")
        // `..` after a symlink is taken physically: link/.. is models/, the source's parent.
        #expect(WorkspaceWriter.resolvedPath("link/..", currentDirectory: here.path) == WorkspaceWriter.resolvedPath(root.path + "/models"))
        #expect(refused("link/.."))
    }

    @Test func jsonObjectsKeepDuplicateAndNormalizationDistinctKeys() throws {
        let value = try JSONParser.parse(Data(#"{"k": 1, "\u00e9": 2, "e\u0301": 3, "k": 4}"#.utf8))
        guard case .object(let object) = value else { Issue.record("not an object"); return }
        #expect(object.count == 4 && object.duplicateKey == "k")
        #expect(object["\u{e9}"] == .integer(2) && object["e\u{301}"] == .integer(3))
        #expect(value.value(at: []) == value && value.brief == "an object")
    }
}
