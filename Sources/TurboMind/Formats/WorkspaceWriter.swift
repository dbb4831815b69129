// `lmdeploy convert`: writes a TurboMind workspace from a Hugging Face model directory, as
// lmdeploy's converter lays it out (docs/workspace-format.md). The source is mmapped and each
// weight file is streamed out through a 2 MiB buffer, releasing the source pages it read, so peak
// memory stays near one source tensor plus a fixed overhead. Everything is written into a hidden
// temporary directory beside the destination, flushed, and renamed into place at the end: a crash
// or a kill leaves no destination, and the next run removes the leftovers of dead runs.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Tokenizers

public struct WorkspaceConvertOptions: Sendable {
    /// `model_name` written to config.ini (lmdeploy's template name).
    public var modelName: String
    /// Tensor-parallel ranks to split the weights for.
    public var tensorParallel: Int
    /// Replace an existing destination.
    public var force: Bool
    /// The template's session length; config.ini gets this + 8, as lmdeploy writes it.
    public var templateSessionLength: Int

    public init(modelName: String, tensorParallel: Int = 1, force: Bool = false, templateSessionLength: Int = 2048) {
        self.modelName = modelName
        self.tensorParallel = tensorParallel
        self.force = force
        self.templateSessionLength = templateSessionLength
    }
}

public struct WorkspaceConvertReport: Sendable {
    public var destination: URL
    /// Weight files written (config.ini and the tokenizer not counted).
    public var weightFiles: Int
    public var weightBytes: Int
    public var seconds: Double
}

public enum WorkspaceWriter {
    /// Prefix of the temporary directory beside the destination: `.NAME.converting-PID-RANDOM`.
    static func temporaryPrefix(for destination: URL) -> String { ".\(destination.lastPathComponent).converting-" }

    /// Converts the HF model in `source` into a workspace at `destination`.
    /// `progress(done, total)` is called after each weight file; `onTemporaryDirectory` receives the
    /// temporary directory as soon as it exists and nil once it has been renamed or removed (a
    /// signal handler can remove it on Ctrl-C).
    @discardableResult
    public static func convert(source: URL, destination: URL, options: WorkspaceConvertOptions,
                               progress: ((Int, Int) -> Void)? = nil,
                               onTemporaryDirectory: ((URL?) -> Void)? = nil) throws -> WorkspaceConvertReport {
        let started = Date()
        let fm = FileManager.default
        let destination = destination.standardizedFileURL
        let config = try ModelConfig.load(directory: source)
        let tp = options.tensorParallel
        guard tp >= 1, config.numAttentionHeads % tp == 0, config.numKeyValueHeads % tp == 0, config.intermediateSize % tp == 0 else {
            throw FormatError.invalid(
                file: source.appendingPathComponent(ModelConfig.fileName).path,
                field: "num_attention_heads (\(config.numAttentionHeads)), num_key_value_heads (\(config.numKeyValueHeads)), intermediate_size (\(config.intermediateSize))",
                expected: "numbers divisible by --tp \(tp) (tensor parallelism splits the heads and the MLP evenly)")
        }
        let weights = try ModelWeights.load(directory: source, config: config)

        // start_id/end_id: config.json's bos/eos, else the tokenizer's (lmdeploy reads the tokenizer).
        var bos = config.bosTokenId, eos = config.eosTokenIds.first
        if bos == nil || eos == nil {
            let tokenizer = try Tokenizer(directory: source)
            bos = bos ?? tokenizer.bosTokenId
            eos = eos ?? tokenizer.eosTokenId
        }
        guard let startId = bos, let endId = eos else {
            throw FormatError.missingConfigKey(file: source.appendingPathComponent(ModelConfig.fileName).path,
                                               key: bos == nil ? "bos_token_id" : "eos_token_id")
        }
        let workspaceConfig = WorkspaceConfig(model: config, modelName: options.modelName, tensorParaSize: tp,
                                              templateSessionLength: options.templateSessionLength, startId: startId, endId: endId)

        // Destination checks, then the temporary directory beside it.
        let parent = destination.deletingLastPathComponent()
        if fm.fileExists(atPath: destination.path) && !options.force {
            throw FormatError.invalid(file: destination.path, field: "--dst-path",
                                      expected: "a path that does not exist yet (pass --force to replace it)")
        }
        do { try fm.createDirectory(at: parent, withIntermediateDirectories: true) } catch {
            throw FormatError.io(file: parent.path, operation: "mkdir", message: "\(error)")
        }
        removeStaleTemporaries(for: destination)
        let temporary = parent.appendingPathComponent(temporaryPrefix(for: destination) + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        // Announced before it exists, so a signal arriving in between still knows what to remove.
        onTemporaryDirectory?(temporary)
        do { try fm.createDirectory(at: temporary, withIntermediateDirectories: false) } catch {
            throw FormatError.io(file: temporary.path, operation: "mkdir", message: "\(error)")
        }
        var finished = false
        defer {
            if !finished {
                try? fm.removeItem(at: temporary)
                onTemporaryDirectory?(nil)
            }
        }

        let layout = WorkspaceLayout(root: temporary)
        for dir in [layout.weights, layout.tokenizer] {
            try makeDirectory(dir)
        }
        try copyTokenizerFiles(from: source, to: layout.tokenizer)
        try writeText(workspaceConfig.ini.text, to: layout.configINI)

        // Weight files.
        let plan = WorkspacePlan(config: workspaceConfig, outputBias: weights.layers.first?.oBias != nil)
        let tensors = plan.tensors
        let buffer = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: WorkspaceTransform.blockElements)
        defer { buffer.deallocate() }
        var bytes = 0
        var manifestTensors: [String] = []
        for (index, tensorPlan) in tensors.enumerated() {
            let sources = tensorPlan.sources.map { weights.canonical($0) }
            for (name, tensor) in zip(tensorPlan.sources, sources) where tensor == nil && !name.hasSuffix("o_bias") {
                preconditionFailure("\(tensorPlan.name): source \(name) missing from the loaded weights")
            }
            let url = layout.weights.appendingPathComponent(tensorPlan.name)
            let file = try OutputFile(url)
            try WorkspaceTransform.fill(tensorPlan, sources: sources, buffer: buffer) { try file.write($0) }
            try file.finish()
            bytes += tensorPlan.elementCount * 2
            for tensor in sources.compactMap({ $0 }) { WorkspaceTransform.releasePages(tensor) }
            manifestTensors.append("{\"name\":\(JSONValue.quote(tensorPlan.name)),\"shape\":[\(tensorPlan.shape.map(String.init).joined(separator: ","))],\"dtype\":\"F16\"}")
            progress?(index + 1, tensors.count)
        }

        try writeManifest(layout: layout, source: source, config: config, options: options, tensors: manifestTensors)
        try writeTritonFolders(layout: layout, options: options)
        try syncDirectory(layout.weights)
        try syncDirectory(temporary)

        // Into place.
        var trash: URL? = nil
        if fm.fileExists(atPath: destination.path) {
            let aside = parent.appendingPathComponent(temporaryPrefix(for: destination) + "\(getpid())-replaced")
            if rename(destination.path, aside.path) != 0 {
                throw FormatError.io(file: destination.path, operation: "rename", message: String(cString: strerror(errno)))
            }
            trash = aside
        }
        if rename(temporary.path, destination.path) != 0 {
            let message = String(cString: strerror(errno))
            if let trash { _ = rename(trash.path, destination.path) }
            throw FormatError.io(file: destination.path, operation: "rename", message: message)
        }
        finished = true
        onTemporaryDirectory?(nil)
        try? syncDirectory(parent)
        if let trash { try? fm.removeItem(at: trash) }
        return WorkspaceConvertReport(destination: destination, weightFiles: tensors.count, weightBytes: bytes,
                                      seconds: Date().timeIntervalSince(started))
    }

    /// Removes temporary directories of conversions to `destination` whose process is gone.
    static func removeStaleTemporaries(for destination: URL) {
        let parent = destination.deletingLastPathComponent()
        let prefix = temporaryPrefix(for: destination)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent.path) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pidText = rest.split(separator: "-").first, let pid = Int32(pidText) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
            }
        }
    }

    /// The tokenizer files lmdeploy copies (every `.json` and `.py`, `tokenizer.model`,
    /// `qwen.tiktoken`) plus `chat_template.jinja` when present (ours; lmdeploy ignores it).
    static func copyTokenizerFiles(from source: URL, to destination: URL) throws {
        let fm = FileManager.default
        let names: [String]
        do { names = try fm.contentsOfDirectory(atPath: source.path).sorted() } catch {
            throw FormatError.io(file: source.path, operation: "list", message: "\(error)")
        }
        let extra: Set<String> = ["tokenizer.model", "qwen.tiktoken", "chat_template.jinja"]
        for name in names where name.hasSuffix(".json") || name.hasSuffix(".py") || extra.contains(name) {
            let from = source.appendingPathComponent(name), to = destination.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: from.path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            do { try fm.copyItem(at: from, to: to) } catch {
                throw FormatError.io(file: from.path, operation: "copy", message: "\(error)")
            }
        }
        guard fm.fileExists(atPath: destination.appendingPathComponent("tokenizer.json").path)
                || fm.fileExists(atPath: destination.appendingPathComponent("tokenizer.model").path) else {
            throw FormatError.fileNotFound(file: source.appendingPathComponent("tokenizer.json").path, what: "the workspace tokenizer")
        }
    }

    /// `weights/lmdeploy_swift.json`: our additions (lmdeploy ignores the file).
    static func writeManifest(layout: WorkspaceLayout, source: URL, config: ModelConfig, options: WorkspaceConvertOptions,
                              tensors: [String]) throws {
        var lines: [String] = []
        lines.append("\"format\": \"lmdeploy-workspace\"")
        lines.append("\"format_version\": \(WorkspaceLayout.formatVersion)")
        lines.append("\"writer\": \"lmdeploy-swift\"")
        lines.append("\"source\": \(JSONValue.quote(source.standardizedFileURL.path))")
        lines.append("\"source_architecture\": \(JSONValue.quote(config.architecture.rawValue))")
        lines.append("\"source_dtype\": \(JSONValue.quote(config.torchDtype ?? "unknown"))")
        lines.append("\"source_config\": \"../tokenizer/config.json\"")
        lines.append("\"model_name\": \(JSONValue.quote(options.modelName))")
        lines.append("\"tensor_para_size\": \(options.tensorParallel)")
        lines.append("\"tensors\": [\n    " + tensors.joined(separator: ",\n    ") + "\n  ]")
        try writeText("{\n  " + lines.joined(separator: ",\n  ") + "\n}\n", to: layout.manifest)
    }

    /// The Triton model folders and scripts lmdeploy creates, so the tree looks like theirs:
    /// `triton_models/{interactive,preprocessing,postprocessing}` with `config.pbtxt` and `1/` linking to
    /// the weights or the tokenizer, `model_repository/` linking to them, and `service_docker_up.sh`.
    static func writeTritonFolders(layout: WorkspaceLayout, options: WorkspaceConvertOptions) throws {
        let triton = layout.tritonModels
        let models: [(folder: String, link: String, target: String, backend: String)] = [
            ("interactive", "weights", "../../weights", "turbomind"),
            ("preprocessing", "tokenizer", "../../tokenizer", "python"),
            ("postprocessing", "tokenizer", "../../tokenizer", "python"),
        ]
        for model in models {
            let folder = triton.appendingPathComponent(model.folder)
            try makeDirectory(folder.appendingPathComponent("1"))
            var text = """
            # Written by lmdeploy-swift for layout compatibility with lmdeploy's workspace.
            name: "\(model.folder == "interactive" ? "turbomind" : model.folder)"
            backend: "\(model.backend)"
            max_batch_size: 1

            """
            if model.folder == "interactive" {
                text += """
                default_model_filename: "weights"
                model_transaction_policy {
                  decoupled: True
                }
                parameters {
                  key: "tensor_para_size"
                  value: {
                    string_value: "\(options.tensorParallel)"
                  }
                }
                parameters {
                  key: "model_name"
                  value: {
                    string_value: "\(options.modelName)"
                  }
                }

                """
            }
            try writeText(text, to: folder.appendingPathComponent("config.pbtxt"))
            try symlink(model.target, at: folder.appendingPathComponent("1").appendingPathComponent(model.link))
        }
        let repository = layout.root.appendingPathComponent("model_repository")
        try makeDirectory(repository)
        try symlink("../triton_models/interactive", at: repository.appendingPathComponent("turbomind"))
        try symlink("../triton_models/preprocessing", at: repository.appendingPathComponent("preprocessing"))
        try symlink("../triton_models/postprocessing", at: repository.appendingPathComponent("postprocessing"))
        let script = """
        #!/bin/sh
        # Serves this workspace with lmdeploy's Triton image (as lmdeploy's service_docker_up.sh does).
        # lmdeploy-swift serves it without Docker: lmdeploy serve api_server "$(dirname "$0")"
        TP=\(options.tensorParallel)
        DEVICES="0"
        i=1
        while [ "$i" -lt "$TP" ]; do DEVICES="$DEVICES,$i"; i=$((i + 1)); done
        SCRIPT_ABS_DIR="$(realpath "$(dirname "$0")")"
        exec docker run --gpus "\\"device=$DEVICES\\"" --rm -v "$SCRIPT_ABS_DIR":/workspace/models --shm-size 16g \\
            -p 33337-33400:33337-33400 --name lmdeploy -it --env NCCL_LAUNCH_MODE=GROUP openmmlab/lmdeploy:latest \\
            tritonserver --model-repository=/workspace/models/model_repository --allow-http=0 --allow-grpc=1 \\
            --grpc-port=33337 --log-verbose=0 --allow-metrics=1

        """
        let scriptURL = layout.root.appendingPathComponent("service_docker_up.sh")
        try writeText(script, to: scriptURL)
        chmod(scriptURL.path, 0o755)
    }

    // MARK: File helpers

    static func makeDirectory(_ url: URL) throws {
        do { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) } catch {
            throw FormatError.io(file: url.path, operation: "mkdir", message: "\(error)")
        }
    }

    static func symlink(_ target: String, at url: URL) throws {
        if Foundation.symlink(target, url.path) != 0 {
            throw FormatError.io(file: url.path, operation: "symlink", message: String(cString: strerror(errno)))
        }
    }

    static func writeText(_ text: String, to url: URL) throws {
        let file = try OutputFile(url)
        try Array(text.utf8).withUnsafeBytes { try file.write($0) }
        try file.finish()
    }

    static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError.io(file: url.path, operation: "open", message: String(cString: strerror(errno))) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw FormatError.io(file: url.path, operation: "fsync", message: String(cString: strerror(errno))) }
    }
}

/// A new file written sequentially with POSIX calls and flushed to disk on `finish`.
final class OutputFile {
    let path: String
    private var fd: Int32

    init(_ url: URL) throws {
        path = url.path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw FormatError.io(file: path, operation: "create", message: String(cString: strerror(errno))) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < bytes.count {
            #if canImport(Glibc)
            let result = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            #elseif canImport(Musl)
            let result = Musl.write(fd, bytes.baseAddress! + written, bytes.count - written)
            #else
            let result = Darwin.write(fd, bytes.baseAddress! + written, bytes.count - written)
            #endif
            if result < 0 {
                if errno == EINTR { continue }
                throw FormatError.io(file: path, operation: "write", message: String(cString: strerror(errno)))
            }
            written += result
        }
    }

    func finish() throws {
        defer { close(fd); fd = -1 }
        if fsync(fd) != 0 { throw FormatError.io(file: path, operation: "fsync", message: String(cString: strerror(errno))) }
    }

    deinit { if fd >= 0 { close(fd) } }
}
