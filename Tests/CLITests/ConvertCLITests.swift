// `lmdeploy convert` as a user runs it: the workspace chats like the HF directory, peak memory stays
// near the largest tensor, a killed or interrupted conversion leaves no destination, errors are clear.
import Foundation
import Testing
import TurboMind

enum ConvertCLI {
    static func temporaryDirectory(_ label: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("convert-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// "peak memory 83.0 MiB" from convert's summary line, in bytes.
    static func peakBytes(_ stderr: String) -> Double? {
        guard let range = stderr.range(of: #"peak memory [0-9.]+ MiB"#, options: .regularExpression) else { return nil }
        let number = stderr[range].dropFirst("peak memory ".count).dropLast(" MiB".count)
        return Double(number).map { $0 * 1_048_576 }
    }

    /// A one-layer HF model with tiny tensors and SmolLM2's tokenizer: converting it costs only the fixed overhead.
    static func writeTinyModel(_ dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
         "rms_norm_eps": 1e-05, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
         "tie_word_embeddings": false, "torch_dtype": "bfloat16"}
        """
        try Data(config.utf8).write(to: dir.appendingPathComponent("config.json"))
        var writer = SafetensorsWriter()
        func add(_ name: String, _ shape: [Int]) throws {
            try writer.add(name: name, shape: shape, values: (0..<shape.reduce(1, *)).map { Float($0 % 7) * 0.01 }, dtype: .bf16)
        }
        try add("model.embed_tokens.weight", [256, 64]); try add("lm_head.weight", [256, 64]); try add("model.norm.weight", [64])
        let p = "model.layers.0."
        try add(p + "input_layernorm.weight", [64]); try add(p + "post_attention_layernorm.weight", [64])
        try add(p + "self_attn.q_proj.weight", [64, 64]); try add(p + "self_attn.k_proj.weight", [32, 64])
        try add(p + "self_attn.v_proj.weight", [32, 64]); try add(p + "self_attn.o_proj.weight", [64, 64])
        try add(p + "mlp.gate_proj.weight", [96, 64]); try add(p + "mlp.up_proj.weight", [96, 64]); try add(p + "mlp.down_proj.weight", [64, 96])
        try writer.write(to: dir.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: URL(fileURLWithPath: CLI.model).appendingPathComponent("tokenizer.json"),
                                         to: dir.appendingPathComponent("tokenizer.json"))
    }

    /// Runs lmdeploy in `directory` (its current directory); stdout and stderr collected.
    static func run(_ arguments: [String], in directory: URL) throws -> CLI.Result {
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = arguments
        p.currentDirectoryURL = directory
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        nonisolated(unsafe) var out = Data(), err = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { out = readAll(outPipe.fileHandleForReading.fileDescriptor) }
        DispatchQueue.global().async(group: group) { err = readAll(errPipe.fileHandleForReading.fileDescriptor) }
        group.wait()
        p.waitUntilExit()
        return CLI.Result(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                          stderr: String(decoding: err, as: UTF8.self))
    }

    /// Every file under `dir` (relative paths) with its size and modification time, to show nothing changed.
    static func snapshot(_ dir: URL) -> [String: String] {
        var result: [String: String] = [:]
        let fm = FileManager.default
        guard let walker = fm.enumerator(atPath: dir.path) else { return result }
        while let name = walker.nextObject() as? String {
            let attributes = (try? fm.attributesOfItem(atPath: dir.appendingPathComponent(name).path)) ?? [:]
            result[name] = "\(attributes[.size] ?? "?") \(attributes[.modificationDate] ?? "?")"
        }
        return result
    }

    static func leftovers(in dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".converting-") }
    }
}

@Suite(.serialized) struct ConvertCLITests {
    /// Converts SmolLM2, chats from the workspace (same transcript as from the HF directory), and
    /// checks peak memory: < 2 × the largest tensor + the fixed overhead of converting a tiny model.
    @Test func workspaceChatsLikeTheHFDirectoryWithinMemoryBound() throws {
        let root = try ConvertCLI.temporaryDirectory("chat")
        defer { try? FileManager.default.removeItem(at: root) }
        let ws = root.appendingPathComponent("workspace").path
        let convert = try CLI.run(["convert", "qwen", CLI.model, "--dst_path", ws])
        #expect(convert.status == 0, "stderr: \(convert.stderr)")
        #expect(FileManager.default.fileExists(atPath: ws + "/triton_models/weights/config.ini"))

        let tiny = root.appendingPathComponent("tiny")
        try ConvertCLI.writeTinyModel(tiny)
        let small = try CLI.run(["convert", "llama", tiny.path, "--dst-path", root.appendingPathComponent("tiny-ws").path])
        #expect(small.status == 0, "stderr: \(small.stderr)")
        let checkpoint = try SafetensorsFile(url: URL(fileURLWithPath: CLI.model).appendingPathComponent("model.safetensors"))
        let largest = Double(checkpoint.entries.map(\.dataOffsets.count).max()!)
        if let peak = ConvertCLI.peakBytes(convert.stderr), let fixed = ConvertCLI.peakBytes(small.stderr) {
            print(String(format: "convert SmolLM2 peak %.1f MiB; tiny model (fixed overhead) %.1f MiB; largest tensor %.1f MiB",
                         peak / 1_048_576, fixed / 1_048_576, largest / 1_048_576))
            #expect(peak < 2 * largest + fixed, "peak \(peak) ≥ 2 × \(largest) + \(fixed)")
        } else {
            Issue.record("no peak memory in convert's summary: \(convert.stderr) / \(small.stderr)")
        }

        let input = "What is the capital of France?\n\nAnd of Germany?\n\nexit\n"
        let args = ["--temperature", "0", "--max-new-tokens", "16"]
        let fromHF = try CLI.run(["chat", "turbomind", CLI.model] + args, input: input)
        let fromWS = try CLI.run(["chat", "turbomind", ws] + args, input: input)
        #expect(fromWS.status == 0, "stderr: \(fromWS.stderr)")
        #expect(fromWS.stdout == fromHF.stdout, "workspace transcript differs:\n\(fromWS.stdout)\nHF:\n\(fromHF.stdout)")
        #expect(fromWS.stdout.contains("Paris"))
    }

    /// SIGKILL at several points of a conversion: never a destination; the rerun succeeds and clears leftovers.
    @Test func killedConversionLeavesNoDestination() throws {
        let root = try ConvertCLI.temporaryDirectory("kill")
        defer { try? FileManager.default.removeItem(at: root) }
        let ws = root.appendingPathComponent("ws")
        // Kill when the temporary weights folder holds this many files (0: as soon as it exists).
        for threshold in [0, 40, 120, 200] {
            let p = Process()
            p.executableURL = CLI.binary
            p.arguments = ["convert", "qwen", CLI.model, "--dst-path", ws.path]
            p.standardError = FileHandle.nullDevice
            try p.run()
            var killedAt = -1
            let deadline = Date().addingTimeInterval(60)
            while p.isRunning && Date() < deadline {
                if let temp = try ConvertCLI.leftovers(in: root).first {
                    let weights = root.appendingPathComponent(temp).appendingPathComponent("triton_models/weights")
                    let count = (try? FileManager.default.contentsOfDirectory(atPath: weights.path).count) ?? 0
                    if count >= threshold {
                        kill(p.processIdentifier, SIGKILL)
                        killedAt = count
                        break
                    }
                }
                usleep(500)
            }
            p.waitUntilExit()
            #expect(!FileManager.default.fileExists(atPath: ws.path), "a destination appeared (killed at \(killedAt) files)")
            print("killed convert at \(killedAt) files (threshold \(threshold)); exit reason \(p.terminationReason == .uncaughtSignal ? "signal" : "exit")")
        }
        let rerun = try CLI.run(["convert", "qwen", CLI.model, "--dst-path", ws.path])
        #expect(rerun.status == 0, "stderr: \(rerun.stderr)")
        #expect(try ConvertCLI.leftovers(in: root).isEmpty, "leftovers of killed runs remain")
        #expect(try ModelSource.load(path: ws.path).workspace?.numLayer == 30)
    }

    /// Ctrl-C removes the temporary directory at once and exits 130.
    @Test func interruptRemovesTheTemporaryDirectory() throws {
        let root = try ConvertCLI.temporaryDirectory("sigint")
        defer { try? FileManager.default.removeItem(at: root) }
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = ["convert", "qwen", CLI.model, "--dst-path", root.appendingPathComponent("ws").path]
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while try p.isRunning && Date() < deadline && ConvertCLI.leftovers(in: root).isEmpty { usleep(500) }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).isEmpty)
    }

    /// SIGINT (and SIGTERM) after several delays, at --tp 1 and 3: the writer stops before the
    /// temporary directory goes, so nothing at all remains and the exit status is 128 + signal.
    /// (Before the fix the handler removed the directory while the writer kept writing into it:
    /// `.ws.converting-PID-N/` with weight files was left in most runs.)
    @Test func interruptAtAnyDelayLeavesNothing() throws {
        let root = try ConvertCLI.temporaryDirectory("sigint-delays")
        defer { try? FileManager.default.removeItem(at: root) }
        let ws = root.appendingPathComponent("ws")
        var midWay = 0
        for tp in [1, 3] {
            for (delay, signalNumber) in [(0.05, SIGINT), (0.2, SIGINT), (0.3, SIGINT), (0.5, SIGTERM), (0.8, SIGINT), (1.2, SIGINT)] {
                let p = Process()
                p.executableURL = CLI.binary
                p.arguments = ["convert", "qwen", CLI.model, "--dst-path", ws.path, "--tp", String(tp)]
                p.standardError = FileHandle.nullDevice
                try p.run()
                usleep(UInt32(delay * 1_000_000))
                let writing = try !ConvertCLI.leftovers(in: root).isEmpty
                let done = FileManager.default.fileExists(atPath: ws.path)
                kill(p.processIdentifier, signalNumber)
                p.waitUntilExit()
                let left = try FileManager.default.contentsOfDirectory(atPath: root.path)
                let run = "tp \(tp), \(delay) s, signal \(signalNumber): exit \(p.terminationStatus)\(p.terminationReason == .uncaughtSignal ? " (killed)" : ""), writing \(writing), done \(done), left \(left)"
                print(run)
                if done {
                    // The signal came after the rename: a complete workspace and nothing else.
                    #expect(p.terminationStatus == 0 && left == ["ws"], "\(run)")
                    try? FileManager.default.removeItem(at: ws)
                } else if p.terminationReason == .uncaughtSignal {
                    // Before convert installs its handler (process start-up), the signal's default
                    // action ends it: too early for anything to have been written.
                    #expect(!writing && p.terminationStatus == signalNumber && left.isEmpty, "\(run)")
                } else {
                    #expect(p.terminationStatus == 128 + signalNumber, "\(run)")
                    #expect(left.isEmpty, "\(run)")
                    if writing { midWay += 1 }
                }
            }
        }
        // Most signals must have landed while weight files were being written.
        #expect(midWay >= 6, "only \(midWay) interrupts landed mid-way")
    }

    /// Destinations that would swallow other data are refused before anything is touched.
    @Test func refusesDestinationsHoldingOtherData() throws {
        let root = try ConvertCLI.temporaryDirectory("dst")
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        let model = root.appendingPathComponent("models/model")
        try ConvertCLI.writeTinyModel(model)
        let work = root.appendingPathComponent("work")
        try fm.createDirectory(at: work, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: work.appendingPathComponent("keep.txt"))
        let data = root.appendingPathComponent("data")
        try fm.createDirectory(at: data, withIntermediateDirectories: true)
        try Data("precious".utf8).write(to: data.appendingPathComponent("notes.txt"))
        try fm.createSymbolicLink(at: work.appendingPathComponent("link"), withDestinationURL: model)
        try Data("file".utf8).write(to: work.appendingPathComponent("plain"))
        let before = ConvertCLI.snapshot(root)

        let cases: [(dst: String, expect: String)] = [
            ("", "empty"),
            (".", "current directory"),
            ("..", "current directory's parent"),
            ("/", "root directory"),
            (model.path, "source model"),
            (model.path + "/sub/ws", "outside the source model"),
            (model.path + "/..", "contains " + model.path),
            ("link", "source model"),
            ("link/x/..", "source model"),
            ("plain", "is a file"),
            (data.path, "not one"),
            (root.appendingPathComponent("models/model/../../data").path, "not one"),
        ]
        for c in cases {
            let r = try ConvertCLI.run(["convert", "llama", model.path, "--dst-path", c.dst, "--force"], in: work)
            #expect(r.status != 0, "--dst-path '\(c.dst)' --force was accepted")
            #expect(r.stderr.contains(c.expect) && r.stderr.contains("--dst-path"), "--dst-path '\(c.dst)': \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("NSCocoaErrorDomain"), "\(r.stderr)")
        }
        #expect(ConvertCLI.snapshot(root) == before, "a refused conversion changed files")

        let proc = try ConvertCLI.run(["convert", "llama", model.path, "--dst-path", "/proc/nope"], in: work)
        #expect(proc.status == 1 && proc.stderr.contains("/proc/nope") && !proc.stderr.contains("NSCocoaErrorDomain")
                && !proc.stderr.contains("Error Domain"), "\(proc.stderr)")

        // --force does replace a previous workspace, and only that.
        let ws = work.appendingPathComponent("ws")
        let first = try ConvertCLI.run(["convert", "llama", model.path, "--dst-path", "ws"], in: work)
        #expect(first.status == 0, "\(first.stderr)")
        let again = try ConvertCLI.run(["convert", "llama", model.path, "--dst-path", "ws", "--force"], in: work)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(fm.fileExists(atPath: ws.appendingPathComponent("triton_models/weights/config.ini").path))
        try Data("mine".utf8).write(to: ws.appendingPathComponent("my-notes.txt"))
        let extra = try ConvertCLI.run(["convert", "llama", model.path, "--dst-path", "ws", "--force"], in: work)
        #expect(extra.status == 1 && extra.stderr.contains("my-notes.txt"), "\(extra.stderr)")
        #expect(fm.fileExists(atPath: ws.appendingPathComponent("my-notes.txt").path))
        #expect(try ConvertCLI.leftovers(in: work).isEmpty)
    }

    @Test func clearErrors() throws {
        let root = try ConvertCLI.temporaryDirectory("errors")
        defer { try? FileManager.default.removeItem(at: root) }
        let ws = root.appendingPathComponent("ws").path
        let badName = try CLI.run(["convert", "no-such-model", CLI.model, "--dst-path", ws])
        #expect(badName.status != 0 && badName.stderr.contains("no-such-model") && badName.stderr.contains("internlm-chat-7b"), "\(badName.stderr)")
        let badTP = try CLI.run(["convert", "qwen", CLI.model, "--dst-path", ws, "--tp", "2"])
        #expect(badTP.status == 1 && badTP.stderr.contains("--tp 2") && badTP.stderr.contains("num_attention_heads (9)"), "\(badTP.stderr)")
        let missing = try CLI.run(["convert", "qwen", "/nonexistent/model", "--dst-path", ws])
        #expect(missing.status == 1 && missing.stderr.contains("/nonexistent/model"), "\(missing.stderr)")
        let awq = try CLI.run(["convert", "qwen", CLI.model, "--dst-path", ws, "--model-format", "awq", "--group-size", "128"])
        #expect(awq.status != 0 && awq.stderr.contains("awq"), "\(awq.stderr)")
        try FileManager.default.createDirectory(atPath: ws, withIntermediateDirectories: true)
        let exists = try CLI.run(["convert", "qwen", CLI.model, "--dst-path", ws])
        #expect(exists.status == 1 && exists.stderr.contains(ws) && exists.stderr.contains("--force"), "\(exists.stderr)")
        #expect(!exists.stderr.contains("Fatal error"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root.path) == ["ws"])
    }
}
