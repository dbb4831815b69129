// `lmdeploy serve gradio` as the seed's scripts run it (lmdeploy's spellings), in local mode and
// against an api_server, and its refused settings. The page itself is tested in a browser by
// Tests/ServeTests/WebUIBrowserTests.swift.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A running `lmdeploy serve gradio` process; the port comes from its banner.
final class GradioProcess {
    let process = Process()
    let port: Int
    private let errPipe = Pipe()

    init(_ arguments: [String]) throws {
        process.executableURL = CLI.binary
        process.arguments = ["serve", "gradio"] + arguments
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var log = Data()
        var found: Int?
        while found == nil, process.isRunning {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(errPipe.fileHandleForReading.fileDescriptor, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            log.append(buffer, count: n)
            let text = String(decoding: log, as: UTF8.self)
            if text.contains("chat page for"), let range = text.range(of: #"at http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                found = Int(text[range].split(separator: ":").last!)
            }
        }
        guard let found else {
            process.terminate()
            throw CLIFailure("serve gradio did not start: \(String(decoding: log, as: UTF8.self))")
        }
        port = found
    }

    /// GET `path` as a JSON object.
    func json(_ path: String) throws -> [String: Any] {
        let url = URL(string: "http://127.0.0.1:\(port)\(path)")!
        let data = try Data(contentsOf: url)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw CLIFailure("not JSON: \(path)") }
        return object
    }

    func stop() -> Int32 {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }
}

@Suite(.serialized) struct ServeGradioCLITests {
    @Test func seedCommandsServeThePageInBothModes() throws {
        let local = try GradioProcess([CLI.model, "--server_name", "127.0.0.1", "--server_port", "0", "--session_len", "512"])
        let info = try local.json("/webui/info")
        #expect(info["mode"] as? String == "local" && info["session_len"] as? Int == 512, "\(info)")
        #expect(try Data(contentsOf: URL(string: "http://127.0.0.1:\(local.port)/")!).count > 1000, "the page")
        #expect(local.stop() == 0, "SIGTERM exits 0")

        let server = try ServerProcess(["--session_len", "512", "--api-keys", "sk-gradio"])
        let restful = try GradioProcess([server.url, "--server_name", "127.0.0.1", "--server_port", "0", "--restful_api", "True", "--api_key", "sk-gradio"])
        let upstream = try restful.json("/webui/info")
        #expect(upstream["mode"] as? String == "restful" && upstream["backend"] as? String == server.url, "\(upstream)")
        #expect(restful.stop() == 0)
        _ = server.stop()
    }

    @Test func refusedSettingsAreClearErrors() throws {
        let cases: [([String], String)] = [
            ([CLI.model, "--tp", "2"], "--tp 2"),
            ([CLI.model, "--restful_api", "True"], "--restful-api True needs the api_server's URL"),
            (["http://127.0.0.1:9", "--restful-api", "False"], "--restful-api False runs a model here"),
            (["http://127.0.0.1:9", "--restful-api", "maybe"], "--restful-api must be True or False"),
            (["http://127.0.0.1:9", "--session-len", "512", "--cache-max-entry-count", "4"], "--session-len, --cache-max-entry-count: only for a model run here"),
            ([CLI.model, "--api-key", "k"], "--api-key is the key of an api_server"),
            (["http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
            (["http://127.0.0.1:9", "--server-port", "70000"], "--server-port must be in 0…65535"),
        ]
        for (arguments, message) in cases {
            let r = try CLI.run(["serve", "gradio"] + arguments, timeout: 60)
            #expect(r.status != 0, "\(arguments)")
            #expect(r.stderr.contains(message), "\(arguments): \(r.stderr)")
        }
    }
}
