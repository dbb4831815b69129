// The AutoAWQ GEMM directory `lite auto_awq` writes into --work-dir, as AutoAWQ's save_quantized
// lays it out, so AutoAWQ, vLLM, transformers and lmdeploy's `convert --model-format awq` read it:
//   model.safetensors   per quantized linear PREFIX (model.layers.N.self_attn.q_proj, …):
//                         PREFIX.qweight [in][out/8] I32, PREFIX.qzeros [in/G][out/8] I32,
//                         PREFIX.scales [in/G][out] F16 (AWQGEMMPacking); every other tensor
//                         (embeddings, norms with the scales folded in, lm_head, biases) in its
//                         source dtype
//   config.json         the source's, plus quantization_config {quant_method: awq, zero_point,
//                         group_size, bits, version: gemm, modules_to_not_convert}
//   quant_config.json   {zero_point, q_group_size, w_bit, version: GEMM, modules_to_not_convert}
//   tokenizer files     copied (every .json but config/index, tokenizer.model, *.tiktoken, *.txt, *.jinja)
//   awq_search.json     ours: per layer the chosen α and the sample's RTN/AWQ output errors
// Everything is written into a hidden directory beside work_dir, flushed, and swapped in by
// renames; what work_dir already held (calibrate's statistics) is carried over by hard link, except
// other weights, which the new ones replace. A killed run leaves work_dir as it was (or, between the
// two renames, its previous content under `.NAME.awq-PID-old`), never a half-written model.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import TurboMind

public enum AWQWriter {
    public static let searchReportFile = "awq_search.json"
    public static let quantConfigFile = "quant_config.json"

    /// AutoAWQ's `quant_config.json` (AwqConfig.to_dict).
    static func quantConfig(_ o: AWQOptions) -> [String: Any] {
        ["zero_point": true, "q_group_size": o.groupSize, "w_bit": o.bits, "version": "GEMM", "modules_to_not_convert": NSNull()]
    }

    /// config.json's `quantization_config` (AwqConfig.to_transformers_dict).
    static func transformersConfig(_ o: AWQOptions) -> [String: Any] {
        ["quant_method": "awq", "zero_point": true, "group_size": o.groupSize, "bits": o.bits, "version": "gemm",
         "modules_to_not_convert": NSNull()]
    }

    /// Names in the source directory copied as tokenizer/generation files.
    static func isCopied(_ name: String) -> Bool {
        if ["config.json", SafetensorsCheckpoint.indexFileName, quantConfigFile].contains(name) { return false }
        return name.hasSuffix(".json") || name.hasSuffix(".txt") || name.hasSuffix(".jinja") || name.hasSuffix(".tiktoken")
            || name == "tokenizer.model" || name.hasSuffix(".py")
    }

    /// Entries of an existing work_dir that the new model replaces (its weights and configs).
    static func isReplaced(_ name: String, written: Set<String>) -> Bool {
        if written.contains(name) || name.hasPrefix(".") { return true }
        if name == CalibrationStats.tensorsFile { return false }
        return [".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".gguf"].contains { name.hasSuffix($0) }
    }

    /// The safetensors file of the quantized model: source tensors in order, linears replaced.
    static func checkpoint(result: AWQResult, source: URL) throws -> SafetensorsWriter {
        let checkpoint = try SafetensorsCheckpoint(directory: source)
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        for name in checkpoint.tensorNames {
            let tensor = try checkpoint.tensor(name)
            switch result.replacements[name] {
            case nil:
                try writer.add(tensor)
            case let .values(v)?:
                try writer.add(name: name, shape: tensor.shape, values: v, dtype: tensor.dtype)
            case let .quantized(m)?:
                let prefix = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
                let t = AWQGEMMPacking.tensors(of: m)
                try writer.add(name: prefix + ".qweight", dtype: .i32, shape: [t.inFeatures, t.outFeatures / 8], bytes: bytes(t.qweight))
                try writer.add(name: prefix + ".qzeros", dtype: .i32, shape: [t.inFeatures / t.groupSize, t.outFeatures / 8], bytes: bytes(t.qzeros))
                try writer.add(name: prefix + ".scales", shape: [t.inFeatures / t.groupSize, t.outFeatures], values: t.scales, dtype: .f16)
            }
        }
        return writer
    }

    static func bytes(_ v: [Int32]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(v.count * 4)
        for x in v { withUnsafeBytes(of: x.littleEndian) { out += $0 } }
        return out
    }

    static func json(_ object: Any) throws -> [UInt8] {
        [UInt8](try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) + [0x0A]
    }

    /// Writes the directory (see the top of the file). `run` describes the calibration for awq_search.json.
    public static func write(result: AWQResult, source: URL, options: AWQOptions, run: [String: Any], to workDir: URL) throws {
        let fm = FileManager.default
        let destination = workDir.standardizedFileURL
        let parent = destination.deletingLastPathComponent()
        let prefix = ".\(destination.lastPathComponent).awq-"
        removeStale(prefix: prefix, in: parent)
        let temporary = parent.appendingPathComponent(prefix + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard mkdir(temporary.path, 0o755) == 0 else {
            throw AWQError.io(file: temporary.path, detail: "cannot create the output directory: \(String(cString: strerror(errno)))")
        }
        var done = false
        defer { if !done { try? fm.removeItem(at: temporary) } }

        var written: Set<String> = []
        func put(_ name: String, _ bytes: [UInt8]) throws {
            try DurableFile.write(bytes, to: temporary.appendingPathComponent(name))
            written.insert(name)
        }
        try checkpoint(result: result, source: source).write(to: temporary.appendingPathComponent(SafetensorsCheckpoint.singleFileName))
        written.insert(SafetensorsCheckpoint.singleFileName)

        let configURL = source.appendingPathComponent(ModelConfig.fileName)
        guard let configData = fm.contents(atPath: configURL.path),
              var config = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
            throw AWQError.badCheckpoint(file: configURL.path, detail: "not a JSON object")
        }
        config["quantization_config"] = transformersConfig(options)
        try put("config.json", try json(config))
        try put(quantConfigFile, try json(quantConfig(options)))
        var report = run
        report["format"] = "lmdeploy-swift auto_awq"
        report["w_bit"] = options.bits
        report["q_group_size"] = options.groupSize
        report["search_scale"] = options.searchScale
        report["search_clip"] = options.searchClip
        report["search_tokens"] = options.searchTokens
        report["tokens"] = result.tokens
        report["layers"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result.layers))
        try put(searchReportFile, try json(report))

        let names = (try? fm.contentsOfDirectory(atPath: source.path)) ?? []
        for name in names.sorted() where isCopied(name) && !written.contains(name) {
            var isDirectory: ObjCBool = false
            let from = source.appendingPathComponent(name)
            guard fm.fileExists(atPath: from.path, isDirectory: &isDirectory), !isDirectory.boolValue,
                  let data = fm.contents(atPath: from.path) else { continue }
            try put(name, [UInt8](data))
        }

        // What work_dir held that the new model does not replace (calibrate's files).
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: destination.path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue {
            throw AWQError.io(file: destination.path, detail: "--work-dir is a file, not a directory")
        }
        if exists {
            for name in ((try? fm.contentsOfDirectory(atPath: destination.path)) ?? []).sorted() where !isReplaced(name, written: written) {
                let from = destination.appendingPathComponent(name), to = temporary.appendingPathComponent(name)
                if link(from.path, to.path) != 0 {
                    do { try fm.copyItem(at: from, to: to) } catch {
                        throw AWQError.io(file: from.path, detail: "cannot carry it over into the new work directory: \(error.localizedDescription)")
                    }
                }
            }
        }
        try DurableFile.syncDirectory(temporary)
        if exists {
            let aside = parent.appendingPathComponent(prefix + "\(getpid())-old")
            try? fm.removeItem(at: aside)
            guard rename(destination.path, aside.path) == 0 else {
                throw AWQError.io(file: destination.path, detail: "cannot move the old work directory aside: \(String(cString: strerror(errno)))")
            }
            guard rename(temporary.path, destination.path) == 0 else {
                let message = String(cString: strerror(errno))
                _ = rename(aside.path, destination.path)
                throw AWQError.io(file: destination.path, detail: "cannot rename the new work directory into place: \(message)")
            }
            try? fm.removeItem(at: aside)
        } else {
            guard rename(temporary.path, destination.path) == 0 else {
                throw AWQError.io(file: destination.path, detail: "cannot rename the new work directory into place: \(String(cString: strerror(errno)))")
            }
        }
        done = true
        try? DurableFile.syncDirectory(parent)
    }

    /// Removes temporary directories of earlier runs whose process is gone.
    static func removeStale(prefix: String, in parent: URL) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? [] where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pid = rest.split(separator: "-").first.flatMap({ Int32($0) }), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                if rest.hasSuffix("-old") { continue }   // a previous work_dir moved aside: never deleted unasked
                try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
            }
        }
    }
}
