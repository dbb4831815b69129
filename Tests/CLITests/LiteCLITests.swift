// `lmdeploy lite`: lmdeploy's KV-quantization script with its own flag spellings, end to end on
// SmolLM2 (small sizes), and the clear errors of a bad work directory or dataset.
import Foundation
import Testing

@Suite struct LiteCLITests {
    @Test func lmdeployScriptRunsUnchanged() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lite-cli-\(UUID().uuidString)")
        let weights = root.appendingPathComponent("weights"), work = root.appendingPathComponent("quant_output")
        try FileManager.default.createDirectory(at: weights, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let calibrate = try CLI.run(["lite", "calibrate", "--model", CLI.model, "--calib_dataset", "/usr/share/common-licenses/LGPL-2.1",
                                     "--calib_samples", "2", "--calib_seqlen", "64", "--work_dir", work.path])
        #expect(calibrate.status == 0, "\(calibrate.stderr)")
        #expect(FileManager.default.fileExists(atPath: work.appendingPathComponent("calib_stats.safetensors").path))
        let params = try CLI.run(["lite", "kv_qparams", "--work_dir", work.path, "--turbomind_dir", weights.path, "--kv_sym", "False", "--num_tp", "1"])
        #expect(params.status == 0, "\(params.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: weights.path).count == 60)
        let text = root.appendingPathComponent("text.txt")
        try String(try String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8).prefix(3000)).write(to: text, atomically: true, encoding: .utf8)
        let ppl = try CLI.run(["lite", "perplexity", CLI.model, "--dataset", text.path, "--window", "128", "--quant-policy", "4", "--kv-params", weights.path])
        #expect(ppl.status == 0, "\(ppl.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(ppl.stdout.utf8)) as? [String: Any])
        #expect(json["kv_cache"] as? String == "int8" && json["kv_params"] as? String == "per-head")
        let value = try #require(json["perplexity"] as? Double)
        #expect(value > 1 && value < 200, "a language model's perplexity on English text: \(value)")
    }

    @Test func badInputsAreClearErrors() throws {
        let missing = try CLI.run(["lite", "kv_qparams", "--work-dir", "/nonexistent/q8", "--turbomind-dir", "/tmp"])
        #expect(missing.status == 1 && missing.stderr.contains("does not exist") && missing.stderr.contains("lite calibrate"), "\(missing.stderr)")
        // (Unless someone has put ptb there: then the name resolves, which is the point of the folder.)
        let datasets = ProcessInfo.processInfo.environment["LMDEPLOY_CALIB_DATA_DIR"] ?? NSHomeDirectory() + "/.cache/lmdeploy/datasets"
        if !["ptb.jsonl", "ptb.json", "ptb.txt"].contains(where: { FileManager.default.fileExists(atPath: datasets + "/" + $0) }) {
            let named = try CLI.run(["lite", "calibrate", CLI.model, "--calib-dataset", "ptb", "--work-dir", "/tmp/q8-unused"])
            #expect(named.status == 1 && named.stderr.contains(datasets) && named.stderr.contains("ptb.jsonl"), "\(named.stderr)")
        }
        let bits = try CLI.run(["lite", "kv_qparams", "--work-dir", "/tmp", "--turbomind-dir", "/tmp", "--kv-bits", "4"])
        #expect(bits.status == 64 && bits.stderr.contains("--kv-bits"), "\(bits.stderr)")
        let hf = try CLI.run(["lite", "perplexity", CLI.model, "--dataset", "/usr/share/common-licenses/GPL-3", "--quant-policy", "4"])
        #expect(hf.status == 1 && hf.stderr.contains("--kv-params"), "\(hf.stderr)")
        let unused = try CLI.run(["lite", "perplexity", CLI.model, "--dataset", "/usr/share/common-licenses/GPL-3", "--kv-params", "/tmp"])
        #expect(unused.status == 1 && unused.stderr.contains("--quant-policy 4"), "\(unused.stderr)")
    }
}
