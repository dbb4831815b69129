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
    /// `--model-format awq --group-size G`: the source must be an AutoAWQ checkpoint quantized with
    /// groups of G; the workspace gets weight_type = int4 (AWQWorkspace.swift). nil: fp16.
    public var awqGroupSize: Int?

    public init(modelName: String, tensorParallel: Int = 1, force: Bool = false, templateSessionLength: Int = 2048,
                awqGroupSize: Int? = nil) {
        self.modelName = modelName
        self.tensorParallel = tensorParallel
        self.force = force
        self.templateSessionLength = templateSessionLength
        self.awqGroupSize = awqGroupSize
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
    /// temporary directory as soon as it exists and nil once it has been renamed or removed.
    /// `isCancelled` is polled between steps and between the 2 MiB blocks of each weight file: once
    /// it returns true the conversion stops, removes its temporary directory on this thread (so no
    /// writer is left running while it goes) and throws `FormatError.interrupted`.
    @discardableResult
    public static func convert(source: URL, destination: URL, options: WorkspaceConvertOptions,
                               progress: ((Int, Int) -> Void)? = nil,
                               onTemporaryDirectory: ((URL?) -> Void)? = nil,
                               isCancelled: (() -> Bool)? = nil) throws -> WorkspaceConvertReport {
        let started = Date()
        let fm = FileManager.default
        // Refused before anything is read or written: a destination that would swallow other data.
        let destination = try checkDestination(destination.path, source: source, force: options.force)
        func checkCancelled() throws {
            if isCancelled?() == true { throw FormatError.interrupted(destination: destination.path) }
        }
        let config = try ModelConfig.load(directory: source)
        let tp = options.tensorParallel
        guard tp >= 1, config.numAttentionHeads % tp == 0, config.numKeyValueHeads % tp == 0, config.intermediateSize % tp == 0 else {
            throw FormatError.invalid(
                file: source.appendingPathComponent(ModelConfig.fileName).path,
                field: "num_attention_heads (\(config.numAttentionHeads)), num_key_value_heads (\(config.numKeyValueHeads)), intermediate_size (\(config.intermediateSize))",
                expected: "numbers divisible by --tp \(tp) (tensor parallelism splits the heads and the MLP evenly)")
        }
        let weights = try ModelWeights.load(directory: source, config: config)
        let quantFile = source.appendingPathComponent(AWQQuantConfig.fileName).path
        if let group = options.awqGroupSize {
            guard weights.isAWQ else {
                throw FormatError.invalid(file: source.path, field: "--model-format awq",
                                          expected: "an AutoAWQ checkpoint (qweight/qzeros/scales tensors and \(AWQQuantConfig.fileName)); this one has fp16/bf16 weights: quantize it with `lmdeploy lite auto_awq`, or convert it with --model-format hf")
            }
            guard weights.awqGroupSize == group else {
                throw FormatError.invalidConfigValue(file: quantFile, key: "group_size", value: "\(weights.awqGroupSize)",
                                                     expected: "--group-size \(group) as given to convert (the checkpoint was quantized with groups of \(weights.awqGroupSize): pass --group-size \(weights.awqGroupSize))")
            }
        } else if weights.isAWQ {
            throw FormatError.invalid(file: source.path, field: "--model-format hf",
                                      expected: "fp16/bf16/fp32 weights; this is an AutoAWQ (int4) checkpoint: convert it with --model-format awq --group-size \(weights.awqGroupSize)")
        }

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
        var workspaceConfig = WorkspaceConfig(model: config, modelName: options.modelName, tensorParaSize: tp,
                                              templateSessionLength: options.templateSessionLength, startId: startId, endId: endId)
        if let group = options.awqGroupSize {
            workspaceConfig.weightType = "int4"
            workspaceConfig.groupSize = group
            try WorkspacePlan(config: workspaceConfig, outputBias: false).checkInt4(group: group, file: quantFile)
        }
        try checkCancelled()

        // The temporary directory beside the destination.
        let parent = destination.deletingLastPathComponent()
        try makeDirectory(parent, option: "--dst-path \(destination.path)")
        removeStaleTemporaries(for: destination)
        let temporary = parent.appendingPathComponent(temporaryPrefix(for: destination) + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        // Announced before it exists, so a watchdog that gives up on this thread still knows what to remove.
        onTemporaryDirectory?(temporary)
        if mkdir(temporary.path, 0o755) != 0 {
            let message = posixErrorText()
            onTemporaryDirectory?(nil)
            throw FormatError.invalid(file: destination.path, field: "--dst-path",
                                      expected: "a place where a directory can be created (creating \(temporary.path) failed: \(message))")
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
        let int4 = options.awqGroupSize
        // int4: the linears are written as qweight/scales_zeros pairs below, the rest as fp16.
        let tensors = plan.tensors.filter { int4 == nil || !WorkspacePlan.isLinear($0) }
        let int4Files = int4 == nil ? [] : plan.int4Files
        let totalFiles = tensors.count + 2 * int4Files.count
        let buffer = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: WorkspaceTransform.blockElements)
        defer { buffer.deallocate() }
        var bytes = 0
        var manifestTensors: [String] = []
        for (index, tensorPlan) in tensors.enumerated() {
            try checkCancelled()
            let sources = tensorPlan.sources.map { weights.canonical($0) }
            for (name, tensor) in zip(tensorPlan.sources, sources) where tensor == nil && !name.hasSuffix("o_bias") {
                preconditionFailure("\(tensorPlan.name): source \(name) missing from the loaded weights")
            }
            let url = layout.weights.appendingPathComponent(tensorPlan.name)
            let file = try OutputFile(url)
            try WorkspaceTransform.fill(tensorPlan, sources: sources, buffer: buffer) {
                try checkCancelled()
                try file.write($0)
            }
            try file.finish()
            bytes += tensorPlan.elementCount * 2
            for tensor in sources.compactMap({ $0 }) { WorkspaceTransform.releasePages(tensor) }
            manifestTensors.append("{\"name\":\(JSONText.quote(tensorPlan.name)),\"shape\":[\(tensorPlan.shape.map(String.init).joined(separator: ","))],\"dtype\":\"F16\"}")
            progress?(index + 1, totalFiles)
        }
        if let group = int4 {
            for (index, filePlan) in int4Files.enumerated() {
                try checkCancelled()
                let layerIndex = Int(filePlan.name.split(separator: ".")[1])!
                let (qweight, scalesZeros) = AWQWorkspace.files(filePlan, layer: weights.layers[layerIndex].awq!, group: group)
                let cols = filePlan.columns.count
                for (name, content, shape, dtype) in [(filePlan.qweightName, qweight, [filePlan.rows, cols / 8], "I32"),
                                                    (filePlan.scalesZerosName, scalesZeros, [filePlan.rows / group, cols, 2], "F16")] {
                    let file = try OutputFile(layout.weights.appendingPathComponent(name))
                    try file.write(content)
                    try file.finish()
                    manifestTensors.append("{\"name\":\(JSONText.quote(name)),\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"dtype\":\"\(dtype)\"}")
                }
                bytes += qweight.count + scalesZeros.count
                progress?(tensors.count + 2 * (index + 1), totalFiles)
            }
        }

        try writeManifest(layout: layout, source: source, config: config, options: options, tensors: manifestTensors)
        try writeTritonFolders(layout: layout, options: options)
        try OutputFile.syncDirectory(layout.weights)
        try OutputFile.syncDirectory(temporary)

        // Into place: a previous workspace (checked again, it may have changed meanwhile) is moved
        // aside, the new one renamed in, the old one removed.
        try checkCancelled()
        var trash: URL? = nil
        if fm.fileExists(atPath: destination.path) {
            _ = try checkDestination(destination.path, source: source, force: options.force)
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
        try? OutputFile.syncDirectory(parent)
        if let trash { try? fm.removeItem(at: trash) }
        return WorkspaceConvertReport(destination: destination, weightFiles: totalFiles, weightBytes: bytes,
                                      seconds: Date().timeIntervalSince(started))
    }

    /// The top-level entries of a workspace this writer (or lmdeploy's converter) makes; `--force`
    /// replaces a directory holding nothing else.
    static let workspaceEntries: Set<String> = ["triton_models", "model_repository", "service_docker_up.sh"]

    /// `path` made absolute and physical: each existing component resolved through symlinks, `.`
    /// and `..` applied to the resolved path (as the kernel does), missing components appended as
    /// written. The empty path stays empty.
    public static func resolvedPath(_ path: String, currentDirectory: String = FileManager.default.currentDirectoryPath) -> String {
        guard !path.isEmpty else { return "" }
        var resolved = path.hasPrefix("/") ? "/" : (realPath(currentDirectory) ?? currentDirectory)
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..":
                resolved = (resolved as NSString).deletingLastPathComponent
                if resolved.isEmpty { resolved = "/" }
            default:
                let next = resolved == "/" ? "/" + component : resolved + "/" + component
                resolved = realPath(next) ?? next
            }
        }
        return resolved
    }

    private static func realPath(_ path: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        return String(cString: pointer)
    }

    /// True when `ancestor` is `path` or one of its parent directories (both resolved).
    static func contains(_ ancestor: String, _ path: String) -> Bool {
        ancestor == path || ancestor == "/" || path.hasPrefix(ancestor.hasSuffix("/") ? ancestor : ancestor + "/")
    }

    /// Checks that `path` may receive a workspace converted from `source`, and returns it resolved.
    /// Refused: the empty path, `/`, the current directory or any of its parents, the source
    /// directory, any parent or child of it, an existing path without `force`, and with `force` an
    /// existing path that is not a previous workspace (triton_models/weights/config.ini and nothing
    /// but a workspace's entries).
    public static func checkDestination(_ path: String, source: URL, force: Bool,
                                        currentDirectory: String = FileManager.default.currentDirectoryPath) throws -> URL {
        func refuse(_ why: String) -> FormatError {
            .invalid(file: path.isEmpty ? "(empty path)" : path, field: "--dst-path", expected: why)
        }
        guard !path.isEmpty else { throw refuse("a directory to create; the path is empty") }
        let target = resolvedPath(path, currentDirectory: currentDirectory)
        let here = resolvedPath(currentDirectory, currentDirectory: "/")
        let from = resolvedPath(source.path, currentDirectory: currentDirectory)
        let shown = target == path ? "" : " (\(target))"
        guard target != "/" else { throw refuse("a directory to create, not the root directory /") }
        if contains(target, here) {
            throw refuse("a new directory, not the current directory\(target == here ? "" : "'s parent \(target)")")
        }
        if target == from { throw refuse("a directory other than the source model \(from)") }
        if contains(target, from) { throw refuse("a directory outside the source model's path: \(target) contains \(from)") }
        if contains(from, target) { throw refuse("a directory outside the source model \(from)\(shown)") }
        let url = URL(fileURLWithPath: target)
        var isDirectory: ObjCBool = false
        // lstat semantics for the last component are not needed: `target` is already resolved.
        guard FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) else { return url }
        guard force else { throw refuse("a path that does not exist yet\(shown) (pass --force to replace a previous workspace)") }
        guard isDirectory.boolValue else {
            throw refuse("a previous workspace to replace with --force; \(target) is a file, and --force never replaces other data")
        }
        let layout = WorkspaceLayout(root: url)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        let foreign = entries.filter { !workspaceEntries.contains($0) }.sorted()
        guard FileManager.default.fileExists(atPath: layout.configINI.path), foreign.isEmpty else {
            var what = FileManager.default.fileExists(atPath: layout.configINI.path)
                ? "it holds \(foreign.prefix(5).joined(separator: ", "))\(foreign.count > 5 ? ", …" : "") besides a workspace"
                : "it has no triton_models/weights/config.ini"
            if entries.isEmpty { what = "it is an empty directory, not a workspace" }
            throw refuse("a previous workspace to replace with --force; \(target) is not one (\(what)), and --force never replaces other data")
        }
        return url
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
            throw FormatError.io(file: source.path, operation: "list", message: systemMessage(error))
        }
        let extra: Set<String> = ["tokenizer.model", "qwen.tiktoken", "chat_template.jinja"]
        for name in names where name.hasSuffix(".json") || name.hasSuffix(".py") || extra.contains(name) {
            let from = source.appendingPathComponent(name), to = destination.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: from.path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let data: Data
            do { data = try Data(contentsOf: from) } catch {
                throw FormatError.io(file: from.path, operation: "read", message: systemMessage(error))
            }
            let file = try OutputFile(to)
            try file.write([UInt8](data))
            try file.finish()
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
        lines.append("\"source\": \(JSONText.quote(source.standardizedFileURL.path))")
        lines.append("\"source_architecture\": \(JSONText.quote(config.architecture.rawValue))")
        lines.append("\"source_dtype\": \(JSONText.quote(config.torchDtype ?? "unknown"))")
        lines.append("\"source_config\": \"../tokenizer/config.json\"")
        lines.append("\"model_name\": \(JSONText.quote(options.modelName))")
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

    /// `mkdir -p`, with the system's reason on failure (and `option` named, when it came from one).
    static func makeDirectory(_ url: URL, option: String? = nil) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return }
            throw FormatError.io(file: url.path, operation: option.map { "mkdir (for \($0))" } ?? "mkdir",
                                 message: "a file of that name exists")
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path { try makeDirectory(parent, option: option) }
        if mkdir(url.path, 0o755) != 0 && errno != EEXIST {
            throw FormatError.io(file: url.path, operation: option.map { "mkdir (for \($0))" } ?? "mkdir",
                                 message: posixErrorText())
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

}

/// The system's reason inside a Foundation error (its POSIX errno where it has one), not the raw
/// NSCocoaErrorDomain dump.
func systemMessage(_ error: Error) -> String {
    let ns = error as NSError
    if ns.domain == NSPOSIXErrorDomain { return posixErrorText(Int32(ns.code)) }
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return posixErrorText(Int32(underlying.code))
    }
    switch ns.code {
    case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return posixErrorText(ENOENT)
    case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return posixErrorText(EACCES)
    case NSFileWriteOutOfSpaceError: return posixErrorText(ENOSPC)
    default: return ns.localizedDescription
    }
}
