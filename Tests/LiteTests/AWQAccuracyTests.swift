// SmolLM2-135M-Instruct through `lite auto_awq`: perplexity of GPL-3 with golden's windowing for
// bf16, round-to-nearest and AWQ (with and without the clip search), and how far the golden chats'
// greedy answers follow bf16's. The quantized directories are dequantized (AWQCheckpoint) and run
// by the fp engine, which evaluates exactly the written 4-bit weights without the W4A16 kernels.
// Minutes of both cores: runs only with LMDEPLOY_AWQ_ACCURACY=1 (Scripts/awq-accuracy), printing
// one JSON line per model; LMDEPLOY_AWQ_CALIB="SAMPLES×SEQLEN" and LMDEPLOY_AWQ_GROUPS="64,32" adjust it.
import Foundation
import Lite
import Testing
import TurboMind

@Suite(.serialized) struct AWQAccuracyTests {
    static let enabled = ProcessInfo.processInfo.environment["LMDEPLOY_AWQ_ACCURACY"] == "1"

    @Test(.enabled(if: AWQAccuracyTests.enabled, "set LMDEPLOY_AWQ_ACCURACY=1 (Scripts/awq-accuracy) to run the SmolLM2 measurement"))
    func smolLM2PerplexityAndChats() async throws {
        let env = ProcessInfo.processInfo.environment
        let modelDir = env["LMDEPLOY_TEST_MODEL"] ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/smollm2-135m-instruct"
        let source = try ModelSource.load(path: modelDir)
        let calib = (env["LMDEPLOY_AWQ_CALIB"] ?? "32x512").split(separator: "x").compactMap { Int($0) }
        let groups = (env["LMDEPLOY_AWQ_GROUPS"] ?? "64").split(separator: ",").compactMap { Int($0) }
        let calibration = CalibrationOptions(dataset: "/usr/share/common-licenses/LGPL-2.1", samples: calib[0], seqlen: calib[1])

        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/golden.json"))) as! [String: Any]
        let ref = golden["perplexity"] as! [String: Any]
        let ids = (try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/gpl3-ids-transformers.json"))) as! [Int]).map(Int32.init)
        let window = ref["window"] as! Int
        let chats = (golden["chats"] as! [[String: Any]])

        func evaluate(_ s: ModelSource) async throws -> (ppl: Double, chats: [[Int32]]) {
            let engine = try EngineSettings(sessionLen: 1024, maxBatchSize: 1, cacheMaxEntryCount: 1).launch(s)
            defer { engine.shutdown() }
            let ppl = try await Perplexity.evaluate(engine: engine, tokens: ids, window: window).perplexity
            var answers: [[Int32]] = []
            for (i, chat) in chats.enumerated() {
                let n = (chat["greedy_ids"] as! [Int]).count
                let config = GenerationConfig(maxNewTokens: n, sampling: .greedy, ignoreEOS: true)
                answers.append(try await engine.run(session: UInt64(10 + i), input: .full((chat["ids"] as! [Int]).map(Int32.init)), config: config).tokens)
            }
            return (ppl, answers)
        }
        let bf16 = try await evaluate(source)
        print(#"{"awq_accuracy":"bf16","perplexity":\#(bf16.ppl)}"#)

        for g in groups {
            var results: [String: Double] = [:]
            for (name, search, clip) in [("rtn", false, false), ("awq", true, false), ("awq+clip", true, true)] {
                let root = try temporaryDirectory("awq-acc")
                defer { try? FileManager.default.removeItem(at: root) }
                let started = Date()
                let options = AWQOptions(groupSize: g, searchScale: search, searchClip: clip)
                _ = try await AutoAWQ.run(source: source, calibration: calibration, options: options, workDir: root.appendingPathComponent("q"))
                let seconds = Date().timeIntervalSince(started)
                try AWQCheckpoint.dequantize(root.appendingPathComponent("q"), to: root.appendingPathComponent("fp"))
                let r = try await evaluate(try ModelSource.load(path: root.appendingPathComponent("fp").path))
                var agree = 0, total = 0
                for (a, b) in zip(r.chats, bf16.chats) { agree += zip(a, b).prefix { $0 == $1 }.count; total += b.count }
                let first = source.tokenizer.decode(r.chats[0].map(Int.init))
                results[name] = r.ppl
                print(#"{"awq_accuracy":"\#(name)","group_size":\#(g),"calib":"\#(calib[0])x\#(calib[1])","perplexity":\#(r.ppl),"vs_bf16":\#(r.ppl / bf16.ppl - 1),"chat_tokens_following_bf16":"\#(agree)/\#(total)","quantize_s":\#(Int(seconds)),"first_answer":\#(String(reflecting: first))}"#)
            }
            #expect(results["awq"]! <= results["rtn"]!, "g\(g): AWQ \(results["awq"]!) vs RTN \(results["rtn"]!)")
            #expect(results["awq+clip"]! <= results["rtn"]!, "g\(g): AWQ+clip \(results["awq+clip"]!) vs RTN \(results["rtn"]!)")
            #expect(min(results["awq"]!, results["awq+clip"]!) <= bf16.ppl * 1.10, "g\(g): the goal, AWQ within +10% of bf16 (\(bf16.ppl))")
        }
    }
}
