// The official `openai` Python SDK against our server: what the SDK returns must be the engine's
// own answers (Tests/ServeTests/Python/openai_checks.py does the calls, this compares).
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct OpenAIClientTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Python/openai_checks.py").path

    @Test func officialSDKSeesTheEnginesAnswers() async throws {
        let server = try await TestServer.start { $0.apiKeys = ["sk-test"] }
        let r = try await runProcess(TestModel.python, [Self.script, server.base + "/v1", "sk-test"], timeout: 600)
        #expect(r.status == 0, "openai_checks.py failed:\n\(r.output.suffix(4000))")
        guard r.status == 0, let last = r.output.split(separator: "\n").last,
              let results = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any] else { return }

        #expect(results["models"] as? [String] == ["smollm2"])
        #expect(results["no_key"] as? String == "AuthenticationError")
        #expect(results["wrong_key"] as? String == "AuthenticationError")
        let question = "What is the capital of France? Answer in one sentence."
        let direct = try await server.directChat([("user", question)], maxTokens: 32)
        #expect(results["chat"] as? String == direct.text)
        #expect(results["chat_stream"] as? String == direct.text)
        #expect(results["chat_finish"] as? String == direct.finishReason?.openAI)
        let usage = try #require(results["chat_usage"] as? [String: Int])
        #expect(usage["completion_tokens"] == direct.tokens.count)
        #expect(results["stream_usage"] as? [String: Int] == usage)
        // logprobs with top_logprobs=5: exactly 5 entries per token, values the engine's.
        let lps = try #require(results["logprobs"] as? [[String: Any]])
        #expect(lps.count == direct.tokens.count)
        for (k, entry) in lps.enumerated() where k < direct.tokens.count {
            #expect(abs((entry["logprob"] as? Double ?? 0) - Double(direct.logprobs[k])) < 1e-4)
            let top = entry["top"] as? [Double] ?? []
            #expect(top.count == 5)
            for (a, b) in zip(top, direct.topLogprobs[k]) { #expect(abs(a - Double(b.logprob)) < 1e-4) }
        }
        // n = 2 with a seed: two choices, indexes 0 and 1.
        #expect((results["n2"] as? [String])?.count == 2)
        // max_tokens → length; stop strings cut the text.
        #expect(results["length_finish"] as? String == "length")
        #expect(results["length_tokens"] as? Int == 4)
        let counting = try await server.directChat([("user", "Count from 1 to 20, separated by commas.")], maxTokens: 60)
        let cut = try #require(counting.text.range(of: "7"))
        #expect(results["stop"] as? String == String(counting.text[..<cut.lowerBound]))
        #expect(results["stop_finish"] as? String == "stop")
        // completions
        var config = GenerationConfig(maxNewTokens: 8, sampling: .greedy, stopTokenIds: server.context.format.stopTokenIds)
        config.logprobs = false
        let ids = server.context.tokenizer.encode("The capital of France is").map(Int32.init)
        let completion = try await server.engine.run(session: 77_777, input: .full(ids), config: config)
        #expect(results["completion"] as? String == completion.text)
        #expect(results["completion_stream"] as? String == completion.text)
        await server.stop()
    }
}
