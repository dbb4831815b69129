// /v1/chat/interactive: sessions that keep their history between calls, resets, and `stop`.
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct InteractiveTests {
    func turn(_ server: TestServer, _ prompt: String, session: Int = 7, interactive: Bool = true, stream: Bool = false) async throws -> [String: Any] {
        let r = try await server.post("/v1/chat/interactive", jsonString(["prompt": prompt, "session_id": session, "interactive_mode": interactive,
                                                                          "temperature": 0, "request_output_len": 40, "stream": stream]))
        #expect(r.status == 200, "\(r.text)")
        guard stream else { return try r.json() }
        // JSON lines: concatenate the text, keep the last line's counts.
        var text = ""
        var last: [String: Any] = [:]
        for line in r.text.split(separator: "\n") {
            last = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            text += last["text"] as? String ?? ""
        }
        last["text"] = text
        return last
    }

    @Test func threeTurnsBuildOnEachOtherAndResetForgets() async throws {
        let server = try await TestServer.start()
        let prompts = ["What is the capital of France?", "And of Germany?", "And of Italy?"]
        var history: [(String, String)] = []
        var previousHistoryTokens = 0
        for (i, p) in prompts.enumerated() {
            let answer = try await turn(server, p, stream: i == 1)
            // The answer is the engine's greedy reply to the whole conversation so far.
            history.append(("user", p))
            let direct = try await server.directChat(history, maxTokens: 40)
            #expect(answer["text"] as? String == direct.text, "turn \(i + 1)")
            history.append(("assistant", direct.text))
            let h = try #require(answer["history_tokens"] as? Int)
            #expect(h > previousHistoryTokens, "history_tokens grows: \(h) after \(previousHistoryTokens)")
            previousHistoryTokens = h
        }
        #expect(history[3].1.contains("Berlin"), "the second turn used the first: \(history[3].1)")
        // interactive_mode false: a fresh conversation, the same as asking the follow-up alone.
        let reset = try await turn(server, "And of Germany?", interactive: false)
        let alone = try await server.directChat([("user", "And of Germany?")], maxTokens: 40)
        #expect(reset["text"] as? String == alone.text)
        #expect((reset["history_tokens"] as? Int ?? .max) < previousHistoryTokens)
        // After the reset the session starts over.
        let again = try await turn(server, "What is the capital of France?")
        let fresh = try await server.directChat([("user", "What is the capital of France?")], maxTokens: 40)
        #expect(again["text"] as? String == fresh.text)
        await server.stop()
    }

    @Test func stopCancelsTheRunningGeneration() async throws {
        let server = try await TestServer.start()
        let started = ContinuousClock.now
        async let long = server.post("/v1/chat/interactive", jsonString(["prompt": "Tell me a very long story.", "session_id": 11, "interactive_mode": true,
                                                                         "request_output_len": 800, "ignore_eos": true, "temperature": 0]))
        // Wait until it runs, then stop it.
        for _ in 0..<100 where try await server.metric("lmdeploy_sequences_running") == 0 { try await Task.sleep(for: .milliseconds(20)) }
        try await Task.sleep(for: .milliseconds(300))
        let stop = try await server.post("/v1/chat/interactive", jsonString(["session_id": 11, "stop": true]))
        #expect(stop.status == 200)
        let answer = try await long.json()
        #expect(answer["finish_reason"] as? String == "cancelled")
        let tokens = try #require(answer["tokens"] as? Int)
        #expect(tokens > 0 && tokens < 800, "stopped part-way: \(tokens) tokens")
        #expect(ContinuousClock.now - started < .seconds(60))
        // The session keeps what was produced: the next turn continues it.
        let next = try await turn(server, "Thanks.", session: 11)
        #expect((next["history_tokens"] as? Int ?? 0) > (answer["history_tokens"] as? Int ?? .max))
        await server.stop()
    }
}
