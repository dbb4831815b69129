// `lmdeploy convert NAME AWQ_DIR --model-format awq --group-size G` as a user runs it (both flag
// spellings), then `bench` on the int4 workspace and on the AutoAWQ directory itself; errors are clear.
import Foundation
import Testing

@Suite struct AWQConvertCLITests {
    /// The tiny AutoAWQ fixture (Tests/Fixtures/awq/model) with SmolLM2's tokenizer beside it.
    static func source(in root: URL) throws -> URL {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/awq/model")
        let dir = root.appendingPathComponent("awq-model")
        try FileManager.default.copyItem(at: fixture, to: dir)
        try FileManager.default.copyItem(atPath: CLI.model + "/tokenizer.json", toPath: dir.appendingPathComponent("tokenizer.json").path)
        return dir
    }

    @Test(arguments: [["--model-format", "awq", "--group-size", "64", "--dst-path"], ["--model_format", "awq", "--group_size", "64", "--dst_path"]])
    func convertsAndRuns(flags: [String]) throws {
        let root = try ConvertCLI.temporaryDirectory("awq")
        defer { try? FileManager.default.removeItem(at: root) }
        let source = try Self.source(in: root)
        let ws = root.appendingPathComponent("ws").path
        let r = try CLI.run(["convert", "llama2", source.path] + flags + [ws])
        #expect(r.status == 0, "\(r.stderr)")
        let ini = try String(contentsOfFile: ws + "/triton_models/weights/config.ini", encoding: .utf8)
        #expect(ini.contains("weight_type = int4") && ini.contains("group_size = 64"), "\(ini)")
        for model in [ws, source.path] {
            let b = try CLI.run(["bench", model, "--input-len", "8", "--output-len", "4", "--runs", "1"])
            #expect(b.status == 0 && b.stdout.contains("\"decode\""), "bench \(model): \(b.stderr)")
        }
    }

    @Test func clearErrors() throws {
        let root = try ConvertCLI.temporaryDirectory("awq-errors")
        defer { try? FileManager.default.removeItem(at: root) }
        let source = try Self.source(in: root)
        let ws = root.appendingPathComponent("ws").path
        let noGroup = try CLI.run(["convert", "llama2", source.path, "--model-format", "awq", "--dst-path", ws])
        #expect(noGroup.status != 0 && noGroup.stderr.contains("--group-size"), "\(noGroup.stderr)")
        let wrongGroup = try CLI.run(["convert", "llama2", source.path, "--model-format", "awq", "--group-size", "128", "--dst-path", ws])
        #expect(wrongGroup.status == 1 && wrongGroup.stderr.contains("--group-size 64"), "\(wrongGroup.stderr)")
        let asHF = try CLI.run(["convert", "llama2", source.path, "--dst-path", ws])
        #expect(asHF.status == 1 && asHF.stderr.contains("--model-format awq --group-size 64"), "\(asHF.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ws))
    }
}
