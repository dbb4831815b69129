// /v1/chat/completions and /v1/completions over HTTP against the engine run directly: greedy
// answers must be the same tokens, streamed or not, one client or 32 at once.
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct ChatCompletionsTests {
    static let question = [("user", "What is the capital of France? Answer in one sentence.")]

    @Test func greedyChatEqualsTheEngineStreamedOrNot() async throws {
        let server = try await TestServer.start()
        let direct = try await server.directChat(Self.question, maxTokens: 40)
        let body = jsonString(["messages": [["role": "user", "content": Self.question[0].1]], "temperature": 0, "max_tokens": 40,
                               "logprobs": true, "top_logprobs": 5])
        let reply = try await server.post("/v1/chat/completions", body)
        #expect(reply.status == 200, "\(reply.text)")
        let object = try reply.json()
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] as? String == direct.text)
        #expect(choice["finish_reason"] as? String == direct.finishReason?.openAI)
        let usage = try #require(object["usage"] as? [String: Int])
        #expect(usage["completion_tokens"] == direct.tokens.count)
        #expect(usage["prompt_tokens"] == (try server.context.format.tokens([.init(role: "user", content: Self.question[0].1)])).count)
        #expect(usage["total_tokens"] == usage["prompt_tokens"]! + usage["completion_tokens"]!)
        // Token for token: each logprobs entry is the engine's token, its log-probability and its 5 best alternatives.
        let content = try #require((choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        #expect(content.count == direct.tokens.count)
        for (k, entry) in content.enumerated() where k < direct.tokens.count {
            #expect(entry["token"] as? String == server.context.tokenText(direct.tokens[k]))
            let lp = try #require(entry["logprob"] as? Double)
            #expect(abs(lp - Double(direct.logprobs[k])) < 1e-4)
            let top = try #require(entry["top_logprobs"] as? [[String: Any]])
            #expect(top.count == 5)
            #expect(top.map { $0["token"] as? String } == direct.topLogprobs[k].map { server.context.tokenText($0.token) })
        }

        let streamed = try await server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": Self.question[0].1]],
                                                                                 "temperature": 0, "max_tokens": 40, "stream": true,
                                                                                 "stream_options": ["include_usage": true]]))
        #expect(streamed.status == 200)
        #expect(streamed.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true)
        let events = TestServer.events(streamed.text)
        #expect(events.last == "[DONE]")
        var text = "", finish: String?, usageSeen: [String: Int]?
        for e in events.dropLast() {
            let chunk = try #require(try JSONSerialization.jsonObject(with: Data(e.utf8)) as? [String: Any])
            #expect(chunk["object"] as? String == "chat.completion.chunk")
            if let u = chunk["usage"] as? [String: Int] { usageSeen = u }
            for c in chunk["choices"] as? [[String: Any]] ?? [] {
                text += ((c["delta"] as? [String: Any])?["content"] as? String) ?? ""
                finish = (c["finish_reason"] as? String) ?? finish
            }
        }
        #expect(text == direct.text)
        #expect(finish == direct.finishReason?.openAI)
        #expect(usageSeen?["completion_tokens"] == direct.tokens.count)
        await server.stop()
    }

    @Test func thirtyTwoConcurrentStreamsAreCompleteAndCorrect() async throws {
        let server = try await TestServer.start()
        let questions = (0..<32).map { "Count from \($0) to \($0 + 5), separated by commas." }
        var expected: [String] = []
        for q in questions { expected.append(try await server.directChat([("user", q)], maxTokens: 24).text) }
        let texts = try await withThrowingTaskGroup(of: (Int, String, Bool).self) { group in
            for (i, q) in questions.enumerated() {
                group.addTask {
                    let r = try await server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": q]], "temperature": 0,
                                                                                      "max_tokens": 24, "stream": true]))
                    let events = TestServer.events(r.text)
                    var text = ""
                    var finished = false
                    for e in events.dropLast() {
                        let chunk = try JSONSerialization.jsonObject(with: Data(e.utf8)) as? [String: Any]
                        for c in chunk?["choices"] as? [[String: Any]] ?? [] {
                            text += ((c["delta"] as? [String: Any])?["content"] as? String) ?? ""
                            if c["finish_reason"] is String { finished = true }
                        }
                    }
                    return (i, text, finished && events.last == "[DONE]")
                }
            }
            var out = [String](repeating: "", count: questions.count)
            for try await (i, t, complete) in group {
                #expect(complete, "stream \(i) did not end with a finish reason and [DONE]")
                out[i] = t
            }
            return out
        }
        for i in questions.indices { #expect(texts[i] == expected[i], "stream \(i)") }
        // The engine publishes its stats after each step; a client can see [DONE] before the step
        // that retired its sequence has published, so wait for the snapshot (at most 2 s).
        for _ in 0..<40 where server.engine.stats.freeBlocks != server.engine.stats.totalBlocks { try await Task.sleep(for: .milliseconds(50)) }
        #expect(server.engine.stats.freeBlocks == server.engine.stats.totalBlocks)
        await server.stop()
    }

    @Test func completionsWithEchoLogprobsAndSeveralPrompts() async throws {
        let server = try await TestServer.start()
        let prompts = ["The capital of France is", "1, 2, 3,"]
        let r = try await server.post("/v1/completions", jsonString(["prompt": prompts, "max_tokens": 6, "temperature": 0, "n": 2, "logprobs": 3, "echo": true]))
        #expect(r.status == 200, "\(r.text)")
        let choices = try #require(try r.json()["choices"] as? [[String: Any]])
        #expect(choices.count == 4)
        let tokenizer = server.context.tokenizer
        for (k, c) in choices.enumerated() {
            #expect(c["index"] as? Int == k)
            let prompt = prompts[k / 2]
            let ids = tokenizer.encode(prompt).map(Int32.init)
            var config = GenerationConfig(maxNewTokens: 6, sampling: .greedy, stopTokenIds: server.context.format.stopTokenIds)
            config.logprobs = true
            let direct = try await server.engine.run(session: 9_000 + UInt64(k), input: .full(ids), config: config)
            #expect(c["text"] as? String == prompt + direct.text, "echo puts the prompt first")
            let lp = try #require(c["logprobs"] as? [String: Any])
            let tokens = try #require(lp["tokens"] as? [String])
            #expect(tokens.count == ids.count + direct.tokens.count)
            let top = try #require(lp["top_logprobs"] as? [[String: Double]])
            #expect(top.suffix(direct.tokens.count).allSatisfy { $0.count >= 1 && $0.count <= 3 })
        }
        // Token-id prompts give the same completion as their text.
        let ids = tokenizer.encode(prompts[0])
        let byIds = try await server.post("/v1/completions", jsonString(["prompt": ids, "max_tokens": 6, "temperature": 0]))
        let first = try #require((try byIds.json()["choices"] as? [[String: Any]])?.first?["text"] as? String)
        #expect(prompts[0] + first == choices[0]["text"] as? String)
        await server.stop()
    }

    @Test func stopStringsAndLength() async throws {
        let server = try await TestServer.start()
        let q = "Count from 1 to 20, separated by commas."
        let full = try await server.directChat([("user", q)], maxTokens: 60)
        // Stop at the first "5": the answer is the text before it.
        let stop = try await server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": q]], "temperature": 0,
                                                                             "max_tokens": 60, "stop": ["5"]]))
        let choice = try #require((try stop.json()["choices"] as? [[String: Any]])?.first)
        let text = try #require((choice["message"] as? [String: Any])?["content"] as? String)
        let cut = try #require(full.text.range(of: "5"), "the reference must contain the stop string: \(full.text)")
        #expect(text == String(full.text[..<cut.lowerBound]))
        #expect(choice["finish_reason"] as? String == "stop")
        let short = try await server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": q]], "temperature": 0, "max_tokens": 3]))
        let object = try short.json()
        #expect((object["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "length")
        #expect((object["usage"] as? [String: Int])?["completion_tokens"] == 3)
        await server.stop()
    }

    /// A raw socket to the server with `body` posted to /v1/chat/completions.
    static func rawPost(_ server: TestServer, _ body: String) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(server.port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(connected == 0)
        let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        return fd
    }

    /// Waits until nothing runs and the KV blocks are back to `baseline`.
    static func freed(_ server: TestServer, baseline: Double) async throws -> Bool {
        for _ in 0..<40 {
            try await Task.sleep(for: .milliseconds(50))
            if try await server.metric("lmdeploy_sequences_running") == 0, try await server.metric("lmdeploy_kv_blocks_used") == baseline { return true }
        }
        return false
    }

    @Test func clientThatDisconnectsFreesItsBlocks() async throws {
        let server = try await TestServer.start()
        let baseline = try await server.metric("lmdeploy_kv_blocks_used")
        // A raw socket: read the first events of a long stream, then hang up.
        let fd = Self.rawPost(server, jsonString(["messages": [["role": "user", "content": "Tell me a long story."]], "max_tokens": 900, "ignore_eos": true, "stream": true, "temperature": 0]))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var received = 0
        while received < 600 { let n = recv(fd, &buffer, buffer.count, 0); if n <= 0 { break }; received += n }
        // The engine publishes its gauges after each step: give it a moment.
        var running = false
        for _ in 0..<40 where !running {
            running = try await server.metric("lmdeploy_sequences_running") == 1
            if !running { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(running, "the stream runs (received \(received) bytes)")
        #expect(try await server.metric("lmdeploy_kv_blocks_used") > baseline)
        close(fd)
        // Freed within a second or two: the connection's close cancels the request.
        #expect(try await Self.freed(server, baseline: baseline), "the disconnected stream's blocks were not freed")
        await server.stop()
    }
}

#if canImport(Glibc)
import Glibc
#endif
