// SmolLM2-135M-Instruct through `lite auto_awq`: perplexity of GPL-3 with golden's windowing for
// bf16, round-to-nearest and AWQ (the paper's search, and the default with clip search and duo scaling), and how far the golden chats'
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
            // rtn; the paper's search; the default (AutoAWQ's: clip search and duo scaling).
            for (name, search, extras) in [("rtn", false, false), ("awq", true, false), ("awq+clip+duo", true, true)] {
                let root = try temporaryDirectory("awq-acc")
                defer { try? FileManager.default.removeItem(at: root) }
                let started = Date()
                let options = AWQOptions(groupSize: g, searchScale: search, searchClip: extras, duoScaling: extras)
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
            #expect(results["awq+clip+duo"]! <= results["rtn"]!, "g\(g): AWQ+clip+duo \(results["awq+clip+duo"]!) vs RTN \(results["rtn"]!)")
            #expect(results["awq+clip+duo"]! <= bf16.ppl * 1.10, "g\(g): the goal, AWQ within +10% of bf16 (\(bf16.ppl))")
        }
    }
}

/// A directory written by `lite auto_awq` (LMDEPLOY_AWQ_DIR), run on the W4A16 runtime (int4 kernels):
/// GPL-3 perplexity against golden's (transformers, bf16) and how far the golden chats' greedy
/// answers follow golden's. Scripts/awq-accuracy --dir DIR runs it (a minute or two).
@Suite struct AWQDirectoryAccuracyTests {
    static let directory = ProcessInfo.processInfo.environment["LMDEPLOY_AWQ_DIR"]

    @Test(.enabled(if: AWQDirectoryAccuracyTests.directory != nil, "set LMDEPLOY_AWQ_DIR to an auto_awq directory of SmolLM2-135M-Instruct"))
    func smolLM2DirectoryOnTheW4A16Runtime() async throws {
        let dir = try #require(Self.directory)
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/golden.json"))) as! [String: Any]
        let ref = golden["perplexity"] as! [String: Any]
        let ids = (try JSONSerialization.jsonObject(with: Data(contentsOf: liteFixtures.appendingPathComponent("smollm2/gpl3-ids-transformers.json"))) as! [Int]).map(Int32.init)
        let source = try ModelSource.load(path: dir)
        let engine = try EngineSettings(sessionLen: 1024, maxBatchSize: 1, cacheMaxEntryCount: 1).launch(source)
        defer { engine.shutdown() }
        let ppl = try await Perplexity.evaluate(engine: engine, tokens: ids, window: ref["window"] as! Int).perplexity
        let goldenPPL = ref["ppl"] as! Double
        var firstAgree = 0, prefix = 0, total = 0
        let chats = golden["chats"] as! [[String: Any]]
        for (i, chat) in chats.enumerated() {
            let want = (chat["greedy_ids"] as! [Int]).map(Int32.init)
            let config = GenerationConfig(maxNewTokens: want.count, sampling: .greedy, ignoreEOS: true)
            let got = try await engine.run(session: UInt64(10 + i), input: .full((chat["ids"] as! [Int]).map(Int32.init)), config: config).tokens
            if got.first == want.first { firstAgree += 1 }
            prefix += zip(got, want).prefix { $0 == $1 }.count
            total += want.count
            print(#"{"awq_chat":\#(i),"answer":\#(String(reflecting: source.tokenizer.decode(got.map(Int.init))))}"#)
        }
        print(#"{"awq_w4a16":"\#(dir)","perplexity":\#(ppl),"vs_golden_bf16":\#(ppl / goldenPPL - 1),"first_tokens_agree":"\#(firstAgree)/\#(chats.count)","prefix_tokens_following_golden":"\#(prefix)/\#(total)"}"#)
        // Bounds from the g64 64 × 512 directory (docs/awq.md): `lmdeploy chat --top-k 1` answers the
        // first golden chat with golden's answer, and `lite perplexity` gives 26.11 (1.136× golden's
        // 22.98). A model broken by quantization fails both; the full three-chat agreement is printed.
        #expect(firstAgree >= 1, "first greedy tokens agreeing with bf16: \(firstAgree)/\(chats.count)")
        #expect(ppl <= goldenPPL * 1.2, "perplexity \(ppl) vs golden bf16 \(goldenPPL)")
    }
}
