// The chat page of `lmdeploy serve gradio` in a real browser: headless Chromium driven by
// Tests/Browser/webui_checks.py (selenium), against the page in local mode (SmolLM2 in process),
// in restful mode (over an api_server with an API key) and over a fake api_server (markup in the
// answer, busy, session full). What the page showed is compared here with the engine's answers.
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct WebUIBrowserTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = root.appendingPathComponent("Tests/Browser/webui_checks.py").path
    static let artifacts = root.appendingPathComponent(".build/test-artifacts/webui").path

    static let tabA = ["Count from 1 to 60, separated by commas.", "Now count backwards from 5 to 1."]
    static let tabB = ["What is the capital of Japan?", "And of Italy?"]
    static let systemPrompt = "You are a geography teacher. Answer in one short sentence."

    /// Chromium, its driver and selenium are the test's tools: missing ones fail it, naming the fix.
    func browserTools() async throws -> Bool {
        let env = ProcessInfo.processInfo.environment
        let chromium = env["LMDEPLOY_CHROMIUM"] ?? "/usr/bin/chromium", driver = env["LMDEPLOY_CHROMEDRIVER"] ?? "/usr/bin/chromedriver"
        var missing: [String] = []
        for tool in [chromium, driver] where !FileManager.default.isExecutableFile(atPath: tool) { missing.append(tool) }
        if !FileManager.default.isExecutableFile(atPath: TestModel.python) {
            missing.append(TestModel.python)
        } else if try await runProcess(TestModel.python, ["-c", "import selenium"], timeout: 60).status != 0 {
            missing.append("selenium (in \(TestModel.python))")
        }
        guard missing.isEmpty else {
            Issue.record("the browser test needs \(missing.joined(separator: ", ")): run Scripts/bootstrap (it installs chromium, chromium-driver and selenium)")
            return false
        }
        return true
    }

    @Test func chatPageLocalRestfulAndFake() async throws {
        guard try await browserTools() else { return }
        let (local, context) = try await WebUITestServer.local()
        let api = try await TestServer.start { $0.apiKeys = ["sk-webui"] }
        let forwarder = try await InteractiveForwarder.connect(url: api.base, apiKey: "sk-webui")
        let restful = try await WebUITestServer.start(.restful(forwarder))
        let fake = try await FakeUpstream.start()
        let fakeForwarder = try await InteractiveForwarder.connect(url: "http://127.0.0.1:\(fake.port)", apiKey: nil)
        let fakeUI = try await WebUITestServer.start(.restful(fakeForwarder))
        defer { fake.task.cancel() }

        let config = jsonString(["local": local.base, "restful": restful.base, "fake": fakeUI.base, "artifacts": Self.artifacts,
                                 "tab_a": Self.tabA, "tab_b": Self.tabB, "system_prompt": Self.systemPrompt])
        let started = ContinuousClock.now
        let r = try await runProcess(TestModel.python, [Self.script, config], timeout: 300)
        let elapsed = ContinuousClock.now - started
        #expect(r.status == 0, "webui_checks.py failed:\n\(r.output.suffix(6000))")
        guard r.status == 0, let last = r.output.split(separator: "\n").last,
              let results = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any] else {
            await stopAll(local, context, api, restful, forwarder, fakeUI, fakeForwarder)
            return
        }
        print("webui browser checks took \(elapsed)")

        // The engine's own greedy answers, the reference for every turn the page showed.
        let q1 = "What is the capital of France?", q2 = "And of Germany?"
        let a1 = try await api.directChat([("user", q1)], maxTokens: 40).text
        let a2 = try await api.directChat([("user", q1), ("assistant", a1), ("user", q2)], maxTokens: 40).text
        let alone = try await api.directChat([("user", q2)], maxTokens: 40).text
        #expect(a2.contains("Berlin"), "the follow-up needs the first turn: \(a2)")
        // The history a fresh interactive session has after that follow-up alone.
        let format = api.context.format
        let fresh = try await api.engine.run(session: 9_990_001, input: .full(try format.tokens([.init(role: "user", content: q2)])),
                                             config: format.generationConfig(maxNewTokens: 40, sampling: .greedy), interactive: true)
        api.engine.end(session: 9_990_001)
        #expect(fresh.text == alone)
        let freshHistory = fresh.historyTokens
        var firstToken: [String: [Double]] = [:]
        for mode in ["local", "restful"] {
            let m = try #require(results[mode] as? [String: Any], "\(mode) results")
            #expect(m["model"] as? String == "smollm2", "\(mode): the model name shown")
            #expect(m["focus_on_load"] as? String == "prompt", "\(mode)")
            #expect(m["shift_enter_value"] as? String == "line one\nline two", "\(mode): Shift+Enter adds a line")
            #expect(m["shift_enter_sent"] as? Int == 0, "\(mode): Shift+Enter does not send")
            #expect(m["tab_order"] as? [String] == ["send", "reset", "summary"], "\(mode): focus order after the message box")
            let turns = try #require(m["turns"] as? [[String: Any]])
            #expect(turns.map { $0["raw"] as? String } == [a1, a2], "\(mode): the answers are the engine's")
            let h = turns.map { $0["history"] as? Int ?? 0 }
            #expect(h[0] > 0 && h[1] > h[0], "\(mode): the second turn extends the session's history: \(h)")
            for t in turns { #expect(t["finish"] as? String == "stop" || t["finish"] as? String == "length") }
            // The longer answer must appear piece by piece. Not each: on a loaded CI machine (first token after
            // 3.7 s) the 7 tokens of the first answer came in one network read, which the page rightly shows at once.
            let pieces = turns.map { $0["streamed_updates"] as? Int ?? 0 }
            #expect((pieces.max() ?? 0) >= 2, "\(mode): no answer appeared piece by piece: \(turns)")
            firstToken[mode] = turns.compactMap { $0["first_token_ms"] as? Double }
            let dom = try #require(m["dom"] as? [String: Any])
            #expect(dom["roles"] as? [String] == ["user", "assistant", "user", "assistant"], "\(mode)")
            #expect(dom["user_texts"] as? [String] == [q1, q2], "\(mode)")
            #expect(dom["who"] as? [String] == ["You", "Assistant", "You", "Assistant"], "\(mode)")
            #expect((dom["live"] as? String ?? "").contains(a2.prefix(20)), "\(mode): the live region has the answer")
            #expect((dom["model_in_title"] as? String ?? "").hasPrefix("smollm2"), "\(mode)")
            #expect((dom["history_shown"] as? String ?? "").hasPrefix("\(h[1]) "), "\(mode): \(dom["history_shown"] ?? "")")
            #expect(FileManager.default.fileExists(atPath: m["screenshot"] as? String ?? ""), "\(mode): screenshot saved")

            let cancelled = try #require(m["cancelled"] as? [String: Any])
            #expect(m["cancel_was_running"] as? Bool == true, "\(mode): Esc came while the answer streamed")
            #expect(cancelled["finish"] as? String == "cancelled", "\(mode): \(cancelled)")
            let tokens = cancelled["tokens"] as? Int ?? 0
            #expect(tokens > 0 && tokens < 400, "\(mode): stopped part-way: \(tokens) tokens")
            #expect((m["cancel_seconds"] as? Double ?? 99) < 5, "\(mode): cancel took \(m["cancel_seconds"] ?? "")")
            #expect(m["cancel_status"] as? String == "Answer cancelled.")

            let reset = try #require(m["after_reset"] as? [String: Any])
            #expect(reset["items"] as? Int == 0 && reset["history"] as? String == "0" && reset["empty_shown"] as? Bool == true, "\(mode): \(reset)")
            #expect(reset["focus"] as? String == "prompt")
            // After Reset the session starts over: the follow-up alone gets the answer it gets alone.
            let after = try #require(m["after_reset_turn"] as? [String: Any])
            #expect(after["raw"] as? String == alone, "\(mode): after Reset the server forgot the conversation")
            #expect(after["history"] as? Int == freshHistory, "\(mode): the history of a fresh session, \(freshHistory) tokens")
            #expect((m["console_problems"] as? [String] ?? ["?"]).isEmpty, "\(mode): \(m["console_problems"] ?? "")")
        }

        // Two tabs at once on the local engine: separate sessions, each following its own history.
        let tabs = try #require(results["tabs"] as? [String: Any])
        let ids = try #require(tabs["ids"] as? [String: Int])
        #expect(ids["a"] != ids["b"])
        #expect(tabs["overlap"] as? Bool == true, "tab A was still answering when tab B asked")
        let tabA0 = try await api.directChat([("user", Self.tabA[0])], maxTokens: 100).text
        let tabA1 = try await api.directChat([("user", Self.tabA[0]), ("assistant", tabA0), ("user", Self.tabA[1])], maxTokens: 100).text
        let tabB0 = try await api.directChat([("system", Self.systemPrompt), ("user", Self.tabB[0])], maxTokens: 40).text
        let tabB1 = try await api.directChat([("system", Self.systemPrompt), ("user", Self.tabB[0]), ("assistant", tabB0), ("user", Self.tabB[1])], maxTokens: 40).text
        #expect(tabs["a"] as? [String] == [tabA0, tabA1], "tab A")
        #expect(tabs["b"] as? [String] == [tabB0, tabB1], "tab B (with its system prompt)")

        // Model text with markup and Markdown: rendered as text and Markdown elements, nothing runs.
        let f = try #require(results["fake"] as? [String: Any])
        #expect(f["raw"] as? String == FakeUpstream.markup)
        #expect(f["alert"] is NSNull || f["alert"] == nil, "no alert opened: \(f["alert"] ?? "")")
        let dom = try #require(f["dom"] as? [String: Any])
        #expect(dom["pwned"] as? Bool == false)
        #expect(dom["scripts_in_transcript"] as? Int == 0 && dom["imgs_in_transcript"] as? Int == 0, "\(dom)")
        #expect(dom["scripts_in_page"] as? Int == 1, "only chat.js")
        #expect(dom["headings"] as? [String] == ["Result"])
        #expect(dom["strong"] as? [String] == ["bold"] && dom["em"] as? [String] == ["italic"], "\(dom)")
        #expect(dom["inline_code"] as? [String] == ["inline <b>code</b>"])
        #expect(dom["li"] as? [String] == ["one <i>item</i>", "two"] && dom["ol"] as? [String] == ["first", "second"], "\(dom)")
        #expect(dom["code_blocks"] as? [String] == ["<script>alert(2)</script>"] && dom["code_langs"] as? [String] == ["html"])
        #expect(dom["links"] as? [String] == ["https://example.com/docs"], "only http(s) links become links")
        let text = dom["text"] as? String ?? ""
        for literal in ["<script>alert(1)</script>", "<img src=x onerror=\"window.__pwned=1\">", "[bad](javascript:alert(3))"] {
            #expect(text.contains(literal), "shown as text: \(literal)")
        }
        #expect(f["copy_label"] as? String == "Copied")
        #expect((f["busy_notice"] as? String ?? "").hasPrefix("The server is busy:"), "\(f["busy_notice"] ?? "")")
        #expect((f["busy_notice"] as? String ?? "").contains("retry in 3 s"))
        #expect(f["busy_prompt_back"] as? String == "busy", "the unsent message is back in the box")
        #expect(f["full_finish"] as? String == "session_full")
        #expect((f["full_notice"] as? String ?? "").hasPrefix("The conversation is full"), "\(f["full_notice"] ?? "")")
        let phone = try #require(f["phone"] as? [String: Any])
        #expect((phone["scroll_width"] as? Int ?? .max) <= (phone["inner_width"] as? Int ?? 0), "no sideways scrolling on a phone: \(phone)")
        #expect(phone["settings_open"] as? Bool == false && phone["send_visible"] as? Bool == true, "\(phone)")
        #expect((f["console_problems"] as? [String] ?? ["?"]).isEmpty, "\(f["console_problems"] ?? "")")

        func ms(_ v: [Double]?) -> String { (v ?? []).map { String(format: "%.0f", $0) }.joined(separator: ", ") }
        print("webui first token (Enter → first text in the page, turns 1 and 2): local \(ms(firstToken["local"])) ms; restful \(ms(firstToken["restful"])) ms")
        print("webui browser script: \(String(format: "%.1f", results["seconds"] as? Double ?? 0)) s")
        await stopAll(local, context, api, restful, forwarder, fakeUI, fakeForwarder)
    }

    private func stopAll(_ local: WebUITestServer, _ context: ServeContext, _ api: TestServer, _ restful: WebUITestServer,
                         _ forwarder: InteractiveForwarder, _ fakeUI: WebUITestServer, _ fakeForwarder: InteractiveForwarder) async {
        await local.stop()
        context.engine.shutdown()
        await restful.stop()
        await forwarder.shutdown()
        await fakeUI.stop()
        await fakeForwarder.shutdown()
        await api.stop()
    }
}
