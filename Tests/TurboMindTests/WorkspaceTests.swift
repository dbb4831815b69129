// The TurboMind workspace: config.ini, the layout lmdeploy writes, byte equality with an independent
// numpy reference of lmdeploy's conversion, loading back into HF layout (every architecture, tp > 1
// merged), corrupt workspaces, and the real SmolLM2 converted with tp 1 and 3 chatting exactly like
// the HF directory.
import Foundation
import Testing
@testable import TurboMind

enum WorkspaceTestSupport {
    static func temporaryDirectory(_ label: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ws-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A tiny HF model directory with SmolLM2's tokenizer files (convert copies them).
    static func tinyModel(_ dir: URL, architecture: Architecture = .llama, vocab: Int = 130, heads: Int = 4, kvHeads: Int = 2,
                          bias: Bool? = nil, dtype: DType = .bf16, tied: Bool = false) throws -> ModelConfig {
        let config = try TinyModel.write(to: dir, architecture: architecture, hidden: 64, layers: 2, heads: heads, kvHeads: kvHeads,
                                         inter: 96, vocab: vocab, dtype: dtype, tied: tied, bias: bias)
        let hf = TestPaths.fixtures.appendingPathComponent("hf")
        for name in ["tokenizer.json", "tokenizer_config.json"] where FileManager.default.fileExists(atPath: hf.appendingPathComponent(name).path) {
            try FileManager.default.copyItem(at: hf.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        return config
    }

    static func python() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let venv = env["LMDEPLOY_TEST_VENV"] ?? ((env["LMDEPLOY_CACHE"] ?? (NSHomeDirectory() + "/.cache/lmdeploy-swift")) + "/venv")
        let python = venv + "/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("no Python at \(python): run Scripts/bootstrap or set LMDEPLOY_TEST_VENV")
            throw CocoaError(.fileNoSuchFile)
        }
        return python
    }

    /// Runs Tests/Reference/lmdeploy_convert_reference.py HF_DIR OUT TP.
    static func numpyReference(model: URL, out: URL, tp: Int) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Reference/lmdeploy_convert_reference.py")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try python())
        p.arguments = [script.path, model.path, out.path, "\(tp)"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "reference failed: \(String(decoding: message, as: UTF8.self))")
    }

    /// Names of the files the reference wrote whose bytes differ from the workspace's (or are missing there).
    static func differingFiles(reference: URL, workspace: URL) throws -> (compared: Int, differing: [String]) {
        let weights = WorkspaceLayout(root: workspace).weights
        let names = try FileManager.default.contentsOfDirectory(atPath: reference.path).sorted()
        var differing: [String] = []
        for name in names {
            let a = try Data(contentsOf: reference.appendingPathComponent(name))
            let b = try? Data(contentsOf: weights.appendingPathComponent(name))
            if a != b { differing.append(name) }
        }
        return (names.count, differing)
    }

    /// Every tensor of `a` (rounded to fp16, what the workspace stores) and `b` has the same shape and values.
    static func expectSameWeights(_ a: ModelWeights, _ b: ModelWeights, _ label: String) {
        func same(_ x: TensorView?, _ y: TensorView?, _ what: String) {
            guard let x, let y else {
                #expect(x == nil && y == nil, "\(label) \(what): present in one only")
                return
            }
            #expect(x.shape == y.shape, "\(label) \(what): shape \(x.shape) vs \(y.shape)")
            guard x.shape == y.shape else { return }
            let (xs, ys) = (TensorView.rounded(x.toFloatArray(), to: .f16), y.toFloatArray())
            let differing = zip(xs, ys).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
            #expect(differing.isEmpty, "\(label) \(what): \(differing.count) of \(xs.count) values differ, first at \(differing.first ?? -1)")
        }
        same(a.embed, b.embed, "embed")
        same(a.norm, b.norm, "norm")
        same(a.lmHead, b.lmHead, "lm_head")
        #expect(a.layers.count == b.layers.count)
        for (i, (x, y)) in zip(a.layers, b.layers).enumerated() {
            same(x.attnNorm, y.attnNorm, "layer \(i) attn_norm")
            same(x.q, y.q, "layer \(i) q"); same(x.k, y.k, "layer \(i) k"); same(x.v, y.v, "layer \(i) v")
            same(x.o, y.o, "layer \(i) o"); same(x.ffnNorm, y.ffnNorm, "layer \(i) ffn_norm")
            same(x.gate, y.gate, "layer \(i) gate"); same(x.up, y.up, "layer \(i) up"); same(x.down, y.down, "layer \(i) down")
            same(x.qBias, y.qBias, "layer \(i) q bias"); same(x.kBias, y.kBias, "layer \(i) k bias")
            same(x.vBias, y.vBias, "layer \(i) v bias"); same(x.oBias, y.oBias, "layer \(i) o bias")
        }
    }
}

@Suite struct ConfigINITests {
    @Test func parsesConfigParserSyntaxAndRoundTrips() throws {
        let text = "# comment\n[llama]\nModel_Name = internlm-chat-7b\nhead_num: 32\n; other comment\n\n[other]\nx = 1\n"
        let ini = try ConfigINI.parse(text, file: "/w/config.ini")
        #expect(ini.section("llama")?["model_name"] == "internlm-chat-7b")
        #expect(ini.section("llama")?["head_num"] == "32")
        #expect(ini.text == "[llama]\nmodel_name = internlm-chat-7b\nhead_num = 32\n\n[other]\nx = 1\n\n")
        #expect(try ConfigINI.parse(ini.text, file: "x").sections == ini.sections)
    }

    @Test func syntaxErrorsNameTheFileAndLine() {
        for (text, fragment) in [("[llama]\nhead_num 32\n", "line 2"), ("key = 1\n", "line 1"), ("[llama\n", "line 1"),
                                 ("[llama]\na = 1\na = 2\n", "line 3")] {
            do {
                _ = try ConfigINI.parse(text, file: "/w/config.ini")
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains("/w/config.ini") && "\(error)".contains(fragment), "\(error)")
            }
        }
    }

    @Test func workspaceConfigRoundTripsAndKeepsUnknownKeys() throws {
        let model = ModelConfig(architecture: .llama, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                numAttentionHeads: 9, numKeyValueHeads: 3, vocabSize: 49152, rmsNormEps: 1e-5, ropeTheta: 100000,
                                maxPositionEmbeddings: 8192)
        var config = WorkspaceConfig(model: model, modelName: "qwen", tensorParaSize: 3, templateSessionLength: 2048, startId: 1, endId: 2)
        config.extra = [("cache_block_seq_len", "128")]
        let text = config.ini.text
        #expect(text.contains("norm_eps = 1e-05\n") && text.contains("rope_theta = 100000.0\n") && text.contains("session_len = 2056\n"))
        let back = try WorkspaceConfig(ini: ConfigINI.parse(text, file: "config.ini"))
        #expect(back == config)
        #expect(back.entries.map(\.key).prefix(3) == ["model_name", "tensor_para_size", "head_num"])
    }

    @Test func typeAndRangeErrorsNameTheKey() throws {
        let model = ModelConfig(architecture: .llama, hiddenSize: 64, intermediateSize: 96, numHiddenLayers: 2,
                                numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: 128)
        let good = WorkspaceConfig(model: model, modelName: "llama", tensorParaSize: 1, templateSessionLength: 2048, startId: 1, endId: 2).ini.text
        for (edit, key) in [(("head_num = 4", "head_num = four"), "head_num"), (("kv_head_num = 2", "kv_head_num = 3"), "kv_head_num"),
                            (("num_layer = 2\n", ""), "num_layer"), (("quant_policy = 0", "quant_policy = 2"), "quant_policy")] {
            let text = good.replacingOccurrences(of: edit.0, with: edit.1)
            do {
                _ = try WorkspaceConfig(ini: ConfigINI.parse(text, file: "/w/config.ini"))
                Issue.record("accepted edit \(edit)")
            } catch {
                #expect("\(error)".contains("/w/config.ini") && "\(error)".contains(key), "\(error)")
            }
        }
    }
}

@Suite struct WorkspaceTests {
    /// The full tree of a converted tiny model (tp = 2, attention biases), as lmdeploy lays it out.
    @Test func layoutMatchesLmdeploy() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("layout")
        defer { try? FileManager.default.removeItem(at: root) }
        _ = try WorkspaceTestSupport.tinyModel(root.appendingPathComponent("hf"), bias: true)
        let ws = root.appendingPathComponent("workspace")
        try WorkspaceWriter.convert(source: root.appendingPathComponent("hf"), destination: ws,
                                    options: WorkspaceConvertOptions(modelName: "llama2", tensorParallel: 2))
        let listing = try FileManager.default.subpathsOfDirectory(atPath: ws.path).filter {
            // Symlinked folders are listed once, not followed.
            !$0.contains("/1/weights/") && !$0.contains("/1/tokenizer/") && !$0.hasPrefix("model_repository/")
                || ["model_repository/turbomind", "model_repository/preprocessing", "model_repository/postprocessing"].contains($0)
        }.sorted()
        var expected = [
            "model_repository", "model_repository/postprocessing", "model_repository/preprocessing", "model_repository/turbomind",
            "service_docker_up.sh", "triton_models",
            "triton_models/interactive", "triton_models/interactive/1", "triton_models/interactive/1/weights", "triton_models/interactive/config.pbtxt",
            "triton_models/postprocessing", "triton_models/postprocessing/1", "triton_models/postprocessing/1/tokenizer", "triton_models/postprocessing/config.pbtxt",
            "triton_models/preprocessing", "triton_models/preprocessing/1", "triton_models/preprocessing/1/tokenizer", "triton_models/preprocessing/config.pbtxt",
            "triton_models/tokenizer", "triton_models/tokenizer/config.json", "triton_models/tokenizer/tokenizer.json",
            "triton_models/tokenizer/tokenizer_config.json",
            "triton_models/weights", "triton_models/weights/config.ini", "triton_models/weights/lmdeploy_swift.json",
            "triton_models/weights/tok_embeddings.weight", "triton_models/weights/norm.weight", "triton_models/weights/output.weight",
        ]
        for i in 0..<2 {
            let p = "triton_models/weights/layers.\(i)."
            expected += [p + "attention_norm.weight", p + "ffn_norm.weight"]
            for r in 0..<2 {
                expected += [p + "attention.w_qkv.\(r).weight", p + "attention.w_qkv.\(r).bias", p + "attention.wo.\(r).weight",
                             p + "attention.wo.\(r).bias", p + "feed_forward.w1.\(r).weight", p + "feed_forward.w2.\(r).weight",
                             p + "feed_forward.w3.\(r).weight"]
            }
        }
        #expect(listing == expected.sorted(), "extra: \(Set(listing).subtracting(expected).sorted()); missing: \(Set(expected).subtracting(listing).sorted())")
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: ws.appendingPathComponent("triton_models/interactive/1/weights").path)
        #expect(link == "../../weights")
        let script = try String(contentsOf: ws.appendingPathComponent("service_docker_up.sh"), encoding: .utf8)
        #expect(script.contains("TP=2"))
        // Sizes: w_qkv rank = [hidden, (heads + 2 kv) d / tp] fp16; vocab 130 is already a multiple of 2.
        let size = { (name: String) in (try FileManager.default.attributesOfItem(atPath: ws.appendingPathComponent("triton_models/weights/" + name).path)[.size] as! NSNumber).intValue }
        #expect(try size("layers.0.attention.w_qkv.1.weight") == 64 * (4 + 4) * 16 / 2 * 2)
        #expect(try size("tok_embeddings.weight") == 130 * 64 * 2)
    }

    /// Tensor bytes equal the numpy reference of lmdeploy's conversion: tiny random Llamas with and
    /// without biases, tied and untied, tp 1 and 2, vocab padded for tp 4.
    @Test(arguments: [(1, false, false, 130), (2, true, false, 130), (4, true, true, 130), (2, false, true, 129)])
    func bytesMatchNumpyReference(tp: Int, bias: Bool, tied: Bool, vocab: Int) throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("ref")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf")
        _ = try WorkspaceTestSupport.tinyModel(hf, vocab: vocab, heads: 4, kvHeads: tp == 4 ? 4 : 2, bias: bias, tied: tied)
        let ws = root.appendingPathComponent("ws")
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama", tensorParallel: tp))
        try WorkspaceTestSupport.numpyReference(model: hf, out: root.appendingPathComponent("ref"), tp: tp)
        let (compared, differing) = try WorkspaceTestSupport.differingFiles(reference: root.appendingPathComponent("ref"), workspace: ws)
        let perLayer = 2 + tp * (5 + (bias ? 2 : 0))
        #expect(compared == 3 + 2 * perLayer)
        #expect(differing.isEmpty, "differ from the numpy reference: \(differing)")
    }

    /// Loading a workspace gives back exactly the HF weights rounded to fp16 (bf16 values below
    /// fp16's normal range lose bits; f16 sources are exact), for every architecture, merged from tp
    /// ranks; from an f16 source the logits are bit-identical.
    @Test(arguments: [(Architecture.llama, 1, DType.bf16), (.llama, 2, .f16), (.qwen2, 2, .f16), (.internlm, 4, .f16),
                      (.internlm2, 2, .f16), (.mistral, 1, .f32)])
    func loadsBackIntoHFLayout(architecture: Architecture, tp: Int, dtype: DType) throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("load")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf")
        let config = try WorkspaceTestSupport.tinyModel(hf, architecture: architecture, heads: 4, kvHeads: tp == 4 ? 4 : 2, dtype: dtype)
        let ws = root.appendingPathComponent("ws")
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama", tensorParallel: tp))
        let fromHF = try ModelSource.load(path: hf.path)
        // The workspace root, its triton_models and its weights folder all open it.
        for path in [ws, ws.appendingPathComponent("triton_models"), ws.appendingPathComponent("triton_models/weights")] {
            let fromWS = try ModelSource.load(path: path.path)
            #expect(fromWS.workspace?.tensorParaSize == tp)
            #expect(fromWS.directory.standardizedFileURL.path.trimmingCharacters(in: ["/"]) == ws.standardizedFileURL.path.trimmingCharacters(in: ["/"]))
            WorkspaceTestSupport.expectSameWeights(fromHF.weights, fromWS.weights, "\(architecture) tp\(tp)")
        }
        let fromWS = try ModelSource.load(path: ws.path)
        #expect(fromWS.config.architecture == config.architecture)
        #expect(fromWS.config.attentionBias == config.attentionBias)
        #expect(fromWS.config.attentionOutputBias == config.attentionOutputBias)
        #expect(fromWS.config.headDim == config.headDim && fromWS.config.numKeyValueHeads == config.numKeyValueHeads)
        guard dtype == .f16 else { return }
        let backend = CPUBackend(threads: 1)
        let a = try LlamaModel(backend: backend, config: fromHF.config, weights: fromHF.weights)
        let b = try LlamaModel(backend: backend, config: fromWS.config, weights: fromWS.weights)
        let prompt: [Int32] = [1, 5, 9, 33, 7, 100]
        let la = try a.forward(prompt, cache: a.makeCache(capacity: 16), logits: .last)
        let lb = try b.forward(prompt, cache: b.makeCache(capacity: 16), logits: .last)
        #expect(la == lb, "logits differ between the HF directory and the workspace")
    }

    @Test func tensorParallelMustDivideTheHeads() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("tp")
        defer { try? FileManager.default.removeItem(at: root) }
        _ = try WorkspaceTestSupport.tinyModel(root.appendingPathComponent("hf"))
        #expect {
            try WorkspaceWriter.convert(source: root.appendingPathComponent("hf"), destination: root.appendingPathComponent("ws"),
                                        options: WorkspaceConvertOptions(modelName: "llama", tensorParallel: 3))
        } throws: { "\($0)".contains("--tp 3") && "\($0)".contains("num_attention_heads (4)") }
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("ws").path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: root.path).filter { $0.contains("converting") }
        #expect(leftovers.isEmpty)
    }

    @Test func existingDestinationNeedsForce() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("force")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf"), ws = root.appendingPathComponent("ws")
        _ = try WorkspaceTestSupport.tinyModel(hf)
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: ws.appendingPathComponent("mine"))
        #expect { try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama")) }
            throws: { "\($0)".contains(ws.path) && "\($0)".contains("--force") }
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("mine").path))
        // --force replaces only a previous workspace, never other data.
        #expect { try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama", force: true)) }
            throws: { "\($0)".contains(ws.path) && "\($0)".contains("not one") && "\($0)".contains("never replaces other data") }
        #expect(FileManager.default.fileExists(atPath: ws.appendingPathComponent("mine").path))
        try FileManager.default.removeItem(at: ws)
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama"))
        let firstINI = try Data(contentsOf: WorkspaceLayout(root: ws).configINI)
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "internlm-chat-7b", force: true))
        let secondINI = try Data(contentsOf: WorkspaceLayout(root: ws).configINI)
        #expect(firstINI != secondINI, "--force did not replace the previous workspace")
        #expect(try ModelSource.load(path: ws.path).workspace != nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() == ["hf", "ws"])
    }

    /// Truncated, missing, oversized files and a bad config.ini: each a clear error naming the file.
    @Test func corruptWorkspacesNameTheFile() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("corrupt")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf")
        _ = try WorkspaceTestSupport.tinyModel(hf)
        func fresh(_ name: String) throws -> WorkspaceLayout {
            let ws = root.appendingPathComponent(name)
            try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama", tensorParallel: 2))
            return WorkspaceLayout(root: ws)
        }
        func expectError(_ layout: WorkspaceLayout, naming file: URL, _ words: [String]) {
            do {
                _ = try ModelSource.load(path: layout.root.path)
                Issue.record("loaded a corrupt workspace (\(file.lastPathComponent))")
            } catch {
                let message = "\(error)"
                #expect(message.contains(file.path), "error does not name \(file.path): \(message)")
                for word in words { #expect(message.contains(word), "error lacks '\(word)': \(message)") }
            }
        }
        // Truncated tensor file.
        var layout = try fresh("truncated")
        var file = layout.weights.appendingPathComponent("layers.1.feed_forward.w2.1.weight")
        try FileHandle(forWritingTo: file).truncate(atOffset: 100)
        expectError(layout, naming: file, ["100 bytes", "truncated"])
        // Missing tensor file.
        layout = try fresh("missing")
        file = layout.weights.appendingPathComponent("layers.0.attention.w_qkv.1.weight")
        try FileManager.default.removeItem(at: file)
        expectError(layout, naming: file, ["no such file"])
        // config.ini: missing key, wrong type, syntax error, missing file.
        for (name, edit, words) in [("nokey", ("inter_size = 96\n", ""), ["inter_size", "missing"]),
                                    ("type", ("num_layer = 2", "num_layer = two"), ["num_layer", "integer"]),
                                    ("syntax", ("[llama]", "[llama"), ["line 1"]),
                                    ("shape", ("inter_size = 96", "inter_size = 128"), ["bytes"])] {
            layout = try fresh(name)
            let text = try String(contentsOf: layout.configINI, encoding: .utf8)
            try text.replacingOccurrences(of: edit.0, with: edit.1).write(to: layout.configINI, atomically: true, encoding: .utf8)
            // A wrong inter_size makes the files the wrong size: the first one checked is named.
            let named = name == "shape" ? layout.weights.appendingPathComponent("layers.0.feed_forward.w1.0.weight") : layout.configINI
            expectError(layout, naming: named, words)
        }
        layout = try fresh("noini")
        try FileManager.default.removeItem(at: layout.configINI)
        do {
            _ = try WorkspaceReader.load(layout)
            Issue.record("loaded without config.ini")
        } catch {
            #expect("\(error)".contains(layout.configINI.path), "\(error)")
        }
    }

    /// Hand edits of config.ini's inference parameters are read on the next start.
    @Test func handEditsOfInferenceParametersTakeEffect() throws {
        let root = try WorkspaceTestSupport.temporaryDirectory("edit")
        defer { try? FileManager.default.removeItem(at: root) }
        let hf = root.appendingPathComponent("hf"), ws = root.appendingPathComponent("ws")
        _ = try WorkspaceTestSupport.tinyModel(hf)
        try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "llama"))
        let layout = WorkspaceLayout(root: ws)
        var text = try String(contentsOf: layout.configINI, encoding: .utf8)
        for (old, new) in [("session_len = 2056", "session_len = 512"), ("quant_policy = 0", "quant_policy = 4"),
                           ("max_batch_size = 32", "max_batch_size = 8"), ("cache_max_entry_count = 48", "cache_max_entry_count = 0.5")] {
            #expect(text.contains(old))
            text = text.replacingOccurrences(of: old, with: new)
        }
        try text.write(to: layout.configINI, atomically: true, encoding: .utf8)
        let source = try ModelSource.load(path: ws.path)
        #expect(source.workspace?.sessionLen == 512 && source.workspace?.quantPolicy == 4)
        #expect(source.workspace?.maxBatchSize == 8 && source.workspace?.cacheMaxEntryCount == 0.5)
    }
}

/// The real SmolLM2-135M (9 heads, 3 KV heads, tied embeddings) converted with tp 1 and 3.
@Suite(.serialized) struct SmolLM2WorkspaceTests {
    @Test func convertsLikeLmdeployAndChatsLikeTheHFDirectory() throws {
        let hf = try TestPaths.smolLM2()
        let root = try WorkspaceTestSupport.temporaryDirectory("smollm2")
        defer { try? FileManager.default.removeItem(at: root) }
        var workspaces: [Int: URL] = [:]
        for tp in [1, 3] {
            let ws = root.appendingPathComponent("ws-tp\(tp)")
            let report = try WorkspaceWriter.convert(source: hf, destination: ws, options: WorkspaceConvertOptions(modelName: "qwen", tensorParallel: tp))
            print("convert SmolLM2 tp=\(tp): \(report.weightFiles) files, \(report.weightBytes) bytes in \(String(format: "%.2f", report.seconds)) s")
            workspaces[tp] = ws
            // Byte equality with the numpy reference of lmdeploy's export.
            let reference = root.appendingPathComponent("ref-tp\(tp)")
            try WorkspaceTestSupport.numpyReference(model: hf, out: reference, tp: tp)
            let (compared, differing) = try WorkspaceTestSupport.differingFiles(reference: reference, workspace: ws)
            #expect(compared == 3 + 30 * (2 + 5 * tp))
            #expect(differing.isEmpty, "tp=\(tp): differ from the numpy reference: \(differing.prefix(10))")
            try FileManager.default.removeItem(at: reference)
        }

        // The tp=3 files concatenate to the tp=1 files: w1/w3 and each of q, k, v by columns, wo/w2 by rows.
        let w1 = WorkspaceLayout(root: workspaces[1]!).weights, w3 = WorkspaceLayout(root: workspaces[3]!).weights
        func halves(_ dir: URL, _ name: String, columns: Int) throws -> [[UInt16]] {
            let data = try Data(contentsOf: dir.appendingPathComponent(name))
            let values = data.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            return stride(from: 0, to: values.count, by: columns).map { Array(values[$0..<($0 + columns)]) }
        }
        let (d, heads, kvHeads, hidden, inter) = (64, 9, 3, 576, 1536)
        for layer in [0, 17, 29] {
            let p = "layers.\(layer)."
            for name in ["feed_forward.w2", "attention.wo"] {
                let whole = try Data(contentsOf: w1.appendingPathComponent(p + name + ".0.weight"))
                let parts = try (0..<3).map { try Data(contentsOf: w3.appendingPathComponent(p + name + ".\($0).weight")) }
                #expect(parts.reduce(Data(), +) == whole, "\(p)\(name): rows of the tp=3 files do not concatenate to tp=1")
            }
            for name in ["feed_forward.w1", "feed_forward.w3"] {
                let whole = try halves(w1, p + name + ".0.weight", columns: inter)
                let parts = try (0..<3).map { try halves(w3, p + name + ".\($0).weight", columns: inter / 3) }
                let joined = (0..<hidden).map { row in parts.flatMap { $0[row] } }
                #expect(joined == whole, "\(p)\(name): columns of the tp=3 files do not concatenate to tp=1")
            }
            let whole = try halves(w1, p + "attention.w_qkv.0.weight", columns: (heads + 2 * kvHeads) * d)
            let parts = try (0..<3).map { try halves(w3, p + "attention.w_qkv.\($0).weight", columns: (heads + 2 * kvHeads) * d / 3) }
            let (qr, kr) = (heads * d / 3, kvHeads * d / 3)
            for row in [0, 1, 300, hidden - 1] {
                let q = parts.flatMap { $0[row][0..<qr] }, k = parts.flatMap { $0[row][qr..<(qr + kr)] }
                let v = parts.flatMap { $0[row][(qr + kr)...] }
                #expect(q + k + v == whole[row], "\(p)w_qkv row \(row): q/k/v parts of tp=3 do not concatenate to tp=1")
            }
        }

        // Greedy generation from each workspace equals the HF directory's, token for token.
        let backend = CPUBackend()
        let start = Date()
        let hfSource = try ModelSource.load(path: hf.path)
        let hfSeconds = Date().timeIntervalSince(start)
        let hfModel = try LlamaModel(backend: backend, config: hfSource.config, weights: hfSource.weights)
        let prompts = (try TestPaths.golden()["prompts"] as! [[String: Any]]).map { ($0["ids"] as! [Int]).map(Int32.init) }
        let config = GenerationConfig(maxNewTokens: 24, sampling: .greedy, ignoreEOS: true)
        let expected = try prompts.map { try Session(model: hfModel, sessionLength: 256).generate(prompt: $0, config: config).tokens }
        for tp in [1, 3] {
            let t0 = Date()
            let source = try ModelSource.load(path: workspaces[tp]!.path)
            let seconds = Date().timeIntervalSince(t0)
            print("load SmolLM2 workspace tp=\(tp): \(String(format: "%.3f", seconds)) s (HF directory: \(String(format: "%.3f", hfSeconds)) s)")
            #expect(source.config.numKeyValueHeads == 3 && source.workspace?.tensorParaSize == tp)
            #expect(source.tokenizer.chatTemplate == hfSource.tokenizer.chatTemplate)
            let model = try LlamaModel(backend: backend, config: source.config, weights: source.weights)
            for (prompt, want) in zip(prompts, expected) {
                let got = try Session(model: model, sessionLength: 256).generate(prompt: prompt, config: config).tokens
                #expect(got == want, "tp=\(tp): greedy tokens differ from the HF directory for prompt \(prompt)")
            }
        }
    }
}
