// `serve gradio`'s server without a browser: the page is self-contained under a strict policy,
// POSTs must be JSON, a system prompt travels in lmdeploy's list form of `prompt`, and restful
// mode relays an api_server faithfully (errors, keys, a browser that leaves mid-answer).
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct WebUITests {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)

    func request(_ url: String, method: HTTPMethod = .GET, body: String? = nil, contentType: String = "application/json") async throws -> TestServer.Reply {
        var r = HTTPClientRequest(url: url)
        r.method = method
        if let body {
            r.headers.add(name: "Content-Type", value: contentType)
            r.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(r, timeout: .seconds(120))
        let data = try await response.body.collect(upTo: 16 << 20)
        return TestServer.Reply(status: Int(response.status.code), headers: response.headers, body: Data(buffer: data))
    }

    @Test func pageIsSelfContainedUnderAStrictPolicy() async throws {
        let (server, context) = try await WebUITestServer.local()
        let page = try await request(server.base + "/")
        #expect(page.status == 200 && page.headers.first(name: "Content-Type") == "text/html; charset=utf-8")
        let policy = try #require(page.headers.first(name: "Content-Security-Policy"))
        #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && !policy.contains("unsafe"), "\(policy)")
        #expect(page.headers.first(name: "X-Content-Type-Options") == "nosniff")
        let html = page.text
        // Every script and style comes from this server's own files: no inline code, nothing from elsewhere.
        #expect(html.components(separatedBy: "<script").count == 2 && html.contains(#"<script src="/chat.js" defer></script>"#))
        #expect(!html.contains("<style") && !html.contains(" style=") && html.range(of: #" on[a-z]+="#, options: String.CompareOptions.regularExpression) == nil,
                "no inline style or event handlers")
        for path in ["/", "/chat.js", "/chat.css"] {
            let r = try await request(server.base + path)
            #expect(r.status == 200, "\(path)")
            #expect(!r.text.contains("http://") && !r.text.contains("https://") && !r.text.contains("innerHTML") && !r.text.contains("insertAdjacentHTML"),
                    "\(path): no CDN and no HTML parsing of text")
        }
        #expect(try await request(server.base + "/chat.js").headers.first(name: "Content-Type") == "text/javascript; charset=utf-8")
        #expect(try await request(server.base + "/chat.css").headers.first(name: "Content-Type") == "text/css; charset=utf-8")
        let info = try await request(server.base + "/webui/info").json()
        #expect(info["model"] as? String == "smollm2" && info["mode"] as? String == "local" && info["session_len"] as? Int == 1024)
        // The API page and the OpenAI routes are api_server's, not this page's.
        #expect(try await request(server.base + "/openapi.json").status == 404)
        #expect(try await request(server.base + "/v1/chat/interactive").status == 405)
        await server.stop()
        context.engine.shutdown()
        try await client.shutdown()
    }

    @Test func postsMustBeJSONSoOtherSitesCannotDriveSessions() async throws {
        let (server, context) = try await WebUITestServer.local()
        // A cross-site form or fetch can only send text/plain (no preflight); it is refused.
        let r = try await request(server.base + "/v1/chat/interactive", method: .POST,
                                  body: #"{"session_id": 5, "interactive_mode": false, "prompt": "", "request_output_len": 0}"#, contentType: "text/plain")
        #expect(r.status == 415, "\(r.text)")
        let code = try r.error()["code"] as? String
        #expect(code == "unsupported_media_type")
        await server.stop()
        context.engine.shutdown()
        try await client.shutdown()
    }

    /// The page sends its system prompt with a conversation's first turn, as lmdeploy's list
    /// form of `prompt`; the server keeps it in the session's history.
    @Test func systemPromptInTheListFormOfPrompt() async throws {
        let api = try await TestServer.start()
        let system = "You are a pirate. Answer in one short sentence."
        func turn(_ prompt: Any) async throws -> [String: Any] {
            let r = try await api.post("/v1/chat/interactive", jsonString(["prompt": prompt, "session_id": 31, "interactive_mode": true,
                                                                           "temperature": 0, "request_output_len": 32]))
            #expect(r.status == 200, "\(r.text)")
            return try r.json()
        }
        let first = try await turn([["role": "system", "content": system], ["role": "user", "content": "Where is Paris?"]])
        let direct1 = try await api.directChat([("system", system), ("user", "Where is Paris?")], maxTokens: 32)
        #expect(first["text"] as? String == direct1.text)
        let plain = try await api.directChat([("user", "Where is Paris?")], maxTokens: 32)
        #expect(direct1.text != plain.text, "the system prompt changes the answer (else this test proves nothing)")
        let second = try await turn("And Rome?")
        let direct2 = try await api.directChat([("system", system), ("user", "Where is Paris?"), ("assistant", direct1.text), ("user", "And Rome?")], maxTokens: 32)
        #expect(second["text"] as? String == direct2.text)
        // A prompt that is neither a string nor messages, and a bad role, are 400s naming `prompt`.
        let bad = try await api.post("/v1/chat/interactive", #"{"prompt": 5, "session_id": 32}"#)
        let badField = try bad.error()["param"] as? String
        #expect(bad.status == 400 && badField == "prompt", "\(bad.text)")
        let role = try await api.post("/v1/chat/interactive", #"{"prompt": [{"role": "wizard", "content": "hi"}], "session_id": 32}"#)
        let roleField = try role.error()["param"] as? String
        #expect(role.status == 400 && roleField == "prompt[0].role", "\(role.text)")
        await api.stop()
        try await client.shutdown()
    }

    @Test func restfulModeRelaysKeysErrorsAndDisconnects() async throws {
        let api = try await TestServer.start { $0.apiKeys = ["sk-right"] }
        // connect checks the server and the key before the page is served.
        await #expect {
            _ = try await InteractiveForwarder.connect(url: api.base, apiKey: nil)
        } throws: { "\($0)".contains("wants an API key: pass --api-key") }
        await #expect {
            _ = try await InteractiveForwarder.connect(url: api.base, apiKey: "sk-wrong")
        } throws: { "\($0)".contains("refused the --api-key") }
        await #expect { _ = try await InteractiveForwarder.connect(url: "ftp://x", apiKey: nil) } throws: { "\($0)".contains("not an http") }
        let forwarder = try await InteractiveForwarder.connect(url: api.base + "/", apiKey: "sk-right")
        #expect(forwarder.modelName == "smollm2" && forwarder.baseURL == api.base)
        let ui = try await WebUITestServer.start(.restful(forwarder))
        let info = try await request(ui.base + "/webui/info").json()
        #expect(info["mode"] as? String == "restful" && info["backend"] as? String == api.base && info["session_len"] is NSNull)

        // The upstream's errors come through with their status and body.
        let invalid = try await request(ui.base + "/v1/chat/interactive", method: .POST, body: #"{"prompt": "hi", "session_id": 3, "top_p": 7}"#)
        let invalidField = try invalid.error()["param"] as? String
        #expect(invalid.status == 400 && invalidField == "top_p", "\(invalid.text)")

        // A browser that leaves mid-answer: the relay drops the upstream request, which cancels the generation.
        var long = HTTPClientRequest(url: ui.base + "/v1/chat/interactive")
        long.method = .POST
        long.headers.add(name: "Content-Type", value: "application/json")
        long.body = .bytes(ByteBuffer(string: jsonString(["prompt": "Tell me a very long story.", "session_id": 41, "interactive_mode": true, "stream": true,
                                                          "request_output_len": 800, "ignore_eos": true, "temperature": 0])))
        let leaving = HTTPClient(eventLoopGroupProvider: .singleton)
        let reader = Task {
            let response = try await leaving.execute(long, timeout: .seconds(120))
            var chunks = 0
            for try await _ in response.body {
                chunks += 1
                if chunks == 3 { break }   // then the client goes away
            }
            return chunks
        }
        #expect(try await reader.value == 3)
        try await leaving.shutdown()
        var running = 1
        for _ in 0..<250 {
            running = api.engine.stats.active
            if running == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(running == 0, "the upstream generation was cancelled when the browser left")
        let stopped = try await api.post("/v1/chat/interactive", jsonString(["session_id": 41, "stop": true]), headers: [("Authorization", "Bearer sk-right")])
        let history = try stopped.json()["history_tokens"] as? Int ?? .max
        #expect(history < 400, "the story stopped early: \(stopped.text)")

        // The upstream gone: 502 naming it.
        await api.stop()
        let gone = try await request(ui.base + "/v1/chat/interactive", method: .POST, body: #"{"prompt": "hi", "session_id": 3}"#)
        let goneField = try gone.error()["code"] as? String
        #expect(gone.status == 502 && goneField == "upstream_unreachable", "\(gone.text)")
        await ui.stop()
        await forwarder.shutdown()
        try await client.shutdown()
    }
}
