// Bad requests get the documented status and OpenAI's error object, and the server keeps serving.
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct ServeErrorTests {
    struct Case {
        var name: String
        var method = "POST"
        var path = "/v1/chat/completions"
        var body: Data?
        var status: Int
        var param: String? = nil
    }

    static func body(_ s: String) -> Data { Data(s.utf8) }

    @Test func badRequestsGetTheirStatusAndTheServerGoesOn() async throws {
        let server = try await TestServer.start(settings: EngineSettings(sessionLen: 256, maxBatchSize: 8, cacheMaxEntryCount: 4)) {
            $0.limits.maxBodyBytes = 64 << 10
        }
        let long = String(repeating: "hello world ", count: 400)
        var invalidUTF8 = Data(#"{"messages": [{"role": "user", "content": ""#.utf8)
        invalidUTF8.append(contentsOf: [0xff, 0xfe, 0x41])
        invalidUTF8.append(contentsOf: Data(#""}]}"#.utf8))
        let cases: [Case] = [
            Case(name: "malformed JSON", body: Self.body(#"{"messages": [ "#), status: 400),
            Case(name: "not an object", body: Self.body("[1, 2]"), status: 400),
            Case(name: "empty body", body: Data(), status: 400),
            Case(name: "wrong type", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}"#), status: 400, param: "max_tokens"),
            Case(name: "missing messages", body: Self.body(#"{"model": "smollm2"}"#), status: 400, param: "messages"),
            Case(name: "negative max_tokens", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#), status: 400, param: "max_tokens"),
            Case(name: "temperature out of range", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}"#), status: 400, param: "temperature"),
            Case(name: "bad role", body: Self.body(#"{"messages": [{"role": "wizard", "content": "hi"}]}"#), status: 400, param: "messages[0].role"),
            Case(name: "image content", body: Self.body(#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#), status: 400),
            Case(name: "unknown model", body: Self.body(#"{"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}"#), status: 404, param: "model"),
            Case(name: "too many stop strings", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "stop": [\#((0..<20).map { "\"s\($0)\"" }.joined(separator: ","))]}"#), status: 400, param: "stop"),
            Case(name: "n too large", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "n": 1000}"#), status: 400, param: "n"),
            Case(name: "top_logprobs without logprobs", body: Self.body(#"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}"#), status: 400, param: "top_logprobs"),
            Case(name: "over-long prompt", body: Self.body(jsonString(["messages": [["role": "user", "content": long]]])), status: 400, param: "messages"),
            Case(name: "huge body", body: Data(jsonString(["messages": [["role": "user", "content": String(repeating: "x", count: 100_000)]]]).utf8), status: 413),
            Case(name: "invalid UTF-8", body: invalidUTF8, status: 400),
            Case(name: "completions: token id out of range", path: "/v1/completions", body: Self.body(#"{"prompt": [1, 2, 99999999]}"#), status: 400, param: "prompt"),
            Case(name: "completions: empty prompt list", path: "/v1/completions", body: Self.body(#"{"prompt": []}"#), status: 400),
            Case(name: "completions: suffix", path: "/v1/completions", body: Self.body(#"{"prompt": "a", "suffix": "b"}"#), status: 400, param: "suffix"),
            Case(name: "interactive: negative output length", path: "/v1/chat/interactive", body: Self.body(#"{"prompt": "hi", "request_output_len": -5}"#), status: 400, param: "request_output_len"),
            Case(name: "interactive: empty prompt", path: "/v1/chat/interactive", body: Self.body(#"{"prompt": "", "session_id": 3, "interactive_mode": true}"#), status: 400, param: "prompt"),
            Case(name: "unknown route", method: "GET", path: "/v2/nothing", status: 404),
            Case(name: "wrong method", method: "GET", path: "/v1/chat/completions", status: 405),
            Case(name: "wrong method on models", method: "POST", path: "/v1/models", body: Self.body("{}"), status: 405),
        ]
        for c in cases {
            let r = try await server.request(.init(rawValue: c.method), c.path, body: c.body)
            #expect(r.status == c.status, "\(c.name): got \(r.status) \(r.text)")
            let e = try r.error()
            if let param = c.param { #expect(e["param"] as? String == param, "\(c.name): \(r.text)") }
            if c.name == "over-long prompt" {
                let message = e["message"] as? String ?? ""
                #expect(message.contains("256"), "the message names the session length: \(message)")
                #expect(message.contains(" tokens"), "and the prompt's: \(message)")
            }
            if c.status == 405 { #expect(r.headers.first(name: "allow") != nil) }
        }
        let ok = try await server.post("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#)
        #expect(ok.status == 200, "still serving: \(ok.text)")
        #expect(server.engine.stats.freeBlocks == server.engine.stats.totalBlocks)
        await server.stop()
    }

    @Test func apiKeysAreRequiredEverywhereButHealth() async throws {
        let server = try await TestServer.start { $0.apiKeys = ["sk-one", "sk-two"] }
        let hi = #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#
        #expect(try await server.get("/health").status == 200)
        for path in ["/v1/models", "/metrics", "/openapi.json", "/"] {
            let r = try await server.get(path)
            #expect(r.status == 401, "\(path) without a key")
            #expect(try r.error()["code"] as? String == "invalid_api_key")
        }
        #expect(try await server.post("/v1/chat/completions", hi).status == 401)
        #expect(try await server.post("/v1/chat/completions", hi, headers: [("Authorization", "Bearer sk-wrong")]).status == 401)
        #expect(try await server.post("/v1/chat/completions", hi, headers: [("Authorization", "sk-one")]).status == 401)
        #expect(try await server.post("/v1/chat/completions", hi, headers: [("Authorization", "Bearer sk-two")]).status == 200)
        #expect(try await server.get("/v1/models", headers: [("Authorization", "Bearer sk-one")]).status == 200)
        await server.stop()
    }

    @Test func overloadAnswers429WithRetryAfter() async throws {
        let server = try await TestServer.start { $0.maxConcurrentRequests = 1; $0.maxQueuedRequests = 0 }
        async let long = server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": "Tell me a story."]], "max_tokens": 300,
                                                                         "ignore_eos": true, "temperature": 0]))
        for _ in 0..<100 where try await server.metric("lmdeploy_http_requests_running") == 0 { try await Task.sleep(for: .milliseconds(20)) }
        let refused = try await server.post("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#)
        #expect(refused.status == 429)
        #expect(refused.headers.first(name: "retry-after") != nil)
        #expect(try refused.error()["type"] as? String == "server_overloaded")
        #expect(try await long.status == 200)
        #expect(try await server.post("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#).status == 200)
        await server.stop()
    }

    @Test func corsOnlyForListedOrigins() async throws {
        let server = try await TestServer.start { $0.cors = CORSPolicy(allowOrigins: ["http://good.example"]) }
        let good = try await server.request(.OPTIONS, "/v1/chat/completions", headers: [("Origin", "http://good.example"), ("Access-Control-Request-Method", "POST")])
        #expect(good.status == 204)
        #expect(good.headers.first(name: "access-control-allow-origin") == "http://good.example")
        let bad = try await server.request(.OPTIONS, "/v1/chat/completions", headers: [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")])
        #expect(bad.headers.first(name: "access-control-allow-origin") == nil)
        let get = try await server.get("/v1/models", headers: [("Origin", "http://evil.example")])
        #expect(get.headers.first(name: "access-control-allow-origin") == nil)
        await server.stop()
    }
}
