// `lmdeploy serve api_server` and `serve api_client` as users run them: lmdeploy's flag
// spellings, a two-turn conversation through the client's pipe, SIGTERM exits cleanly.
import Foundation
import Testing

/// A running `lmdeploy serve api_server` process.
final class ServerProcess {
    let process = Process()
    let port: Int
    private let errPipe = Pipe()
    private var log = Data()

    init(_ arguments: [String]) throws {
        process.executableURL = CLI.binary
        process.arguments = ["serve", "api_server", CLI.model, "--server_name", "127.0.0.1", "--server_port", "0"] + arguments
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The banner names the bound port: "... at http://127.0.0.1:PORT ...".
        var found: Int?
        let deadline = Date().addingTimeInterval(120)
        while found == nil, Date() < deadline, process.isRunning {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(errPipe.fileHandleForReading.fileDescriptor, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            log.append(buffer, count: n)
            let text = String(decoding: log, as: UTF8.self)
            if let range = text.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                found = Int(text[range].split(separator: ":").last!)
            }
        }
        guard let found else {
            process.terminate()
            throw CLIFailure("the server did not start: \(String(decoding: log, as: UTF8.self))")
        }
        port = found
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Sends SIGTERM and waits; returns the exit status.
    func stop() -> Int32 {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Stops the server and returns its exit status and everything it wrote to stderr.
    func stopAndReadLog() -> (status: Int32, log: String) {
        kill(process.processIdentifier, SIGTERM)
        log.append(readAll(errPipe.fileHandleForReading.fileDescriptor))
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: log, as: UTF8.self))
    }
}

struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

@Suite(.serialized) struct ServeCLITests {
    @Test func apiClientDrivesATwoTurnConversationAndSIGTERMExitsZero() throws {
        let server = try ServerProcess(["--instance_num", "4", "--tp", "1", "--session_len", "1024"])
        let input = "What is the capital of France?\n\nAnd of Germany?\n\nexit\n"
        let r = try CLI.run(["serve", "api_client", server.url, "--session_id", "3", "--temperature", "0", "--max-new-tokens", "40"], input: input, timeout: 120)
        #expect(r.status == 0, "api_client: \(r.stderr)")
        let turns = r.stdout.components(separatedBy: "double enter to end input >>> ")
        #expect(turns.count == 4, "unexpected transcript: \(r.stdout)")
        if turns.count == 4 {
            #expect(turns[1].contains("Paris"), "answer 1: \(turns[1])")
            #expect(turns[2].contains("Berlin"), "the second turn uses the first: \(turns[2])")
        }
        #expect(server.stop() == 0, "SIGTERM must drain and exit 0")
    }

    @Test func refusedSettingsAreClearErrors() throws {
        let tp = try CLI.run(["serve", "api_server", CLI.model, "--tp", "2"])
        #expect(tp.status != 0)
        #expect(tp.stderr.contains("--tp 2"), "\(tp.stderr)")
        let client = try CLI.run(["serve", "api_client", "localhost:1"])
        #expect(client.status != 0)
        #expect(client.stderr.contains("is not an http:// or https:// URL"), "\(client.stderr)")
        let unreachable = try CLI.run(["serve", "api_client", "http://127.0.0.1:9"], input: "hi\n\nexit\n")
        #expect(unreachable.stderr.contains("cannot reach http://127.0.0.1:9"), "\(unreachable.stderr)")
    }
}

/// The server on shutdown and under abuse, as a user runs it. (The load soak, Scripts/soak-serve, runs
/// after the unit tests in Scripts/test: its 64 streams would starve the timing of tests beside it.)
@Suite(.serialized) struct ServeReliabilityCLITests {
    static let python = URL(fileURLWithPath: "/usr/bin/env")

    @Test func sigtermLetsARunningStreamFinishThenExitsZero() throws {
        let server = try ServerProcess(["--instance-num", "4"])
        // A client that says when its stream has started, then reads it to the end.
        let client = """
        import socket, sys, json
        body = json.dumps({"messages": [{"role": "user", "content": "Count from one to fifty."}], "stream": True,
                           "max_tokens": 48, "ignore_eos": True, "temperature": 0}).encode()
        s = socket.create_connection(("127.0.0.1", \(server.port)))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\n"
                  + b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
        data = s.recv(65536)
        print("started", flush=True)
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        print("done" if b"data: [DONE]" in data else "cut: " + data[-300:].decode(errors="replace"))
        """
        let p = Process()
        p.executableURL = Self.python
        p.arguments = ["python3", "-c", client]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        var seen = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: seen, as: UTF8.self).contains("started") {
            let n = read(out.fileHandleForReading.fileDescriptor, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            seen.append(buffer, count: n)
        }
        let status = server.stop()   // SIGTERM while the stream runs
        seen.append(readAll(out.fileHandleForReading.fileDescriptor))
        p.waitUntilExit()
        let text = String(decoding: seen, as: UTF8.self)
        #expect(text.contains("started") && text.contains("done"), "the running stream must finish after SIGTERM: \(text)")
        #expect(status == 0, "SIGTERM must drain and exit 0")
    }

    @Test func keysNeverAppearInTheLogsEvenAtDebugLevel() throws {
        let server = try ServerProcess(["--api-keys", "key-one-AAAA", "key-two-BBBB", "--log-level", "DEBUG"])
        let client = """
        import urllib.request, urllib.error
        for key in ["key-one-AAAA", "guess-CCCC", ""]:
            for path in ["/v1/models", "/v1/chat/completions", "/nope"]:
                body = b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}' if "chat" in path else None
                r = urllib.request.Request("http://127.0.0.1:\(server.port)" + path, data=body,
                                           headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
                try:
                    print(path, urllib.request.urlopen(r, timeout=60).status)
                except urllib.error.HTTPError as e:
                    print(path, e.code, e.read().decode())
        """
        let r = try CLI.execute(Self.python, ["python3", "-c", client], timeout: 120)
        #expect(r.stdout.contains("/v1/models 200") && r.stdout.contains("/v1/models 401"), "\(r.stdout) \(r.stderr)")
        #expect(!r.stdout.contains("guess-CCCC") && !r.stdout.contains("BBBB"), "an answer echoed a key: \(r.stdout)")
        let (status, log) = server.stopAndReadLog()
        #expect(status == 0)
        for secret in ["key-one-AAAA", "key-two-BBBB", "guess-CCCC"] {
            #expect(!log.contains(secret), "the log shows \(secret): \(log.suffix(2000))")
        }
    }

    @Test func everyLimitIsDocumentedInHelpInBothSpellings() throws {
        let help = try CLI.run(["serve", "api_server", "--help"]).stdout
        for flag in ["max-concurrent-requests", "max-queued-requests", "max-requests-per-client", "max-sessions", "max-sessions-per-client",
                     "queue-timeout", "max-body-bytes", "idle-timeout", "request-timeout", "write-timeout", "api-keys"] {
            #expect(help.contains("--" + flag), "--help does not list --\(flag)")
            #expect(help.contains("--" + flag.replacingOccurrences(of: "-", with: "_")), "--help does not list the _ spelling of --\(flag)")
        }
        let bad = try CLI.run(["serve", "api_server", CLI.model, "--queue_timeout", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("--queue-timeout must be a positive number"), "\(bad.stderr)")
    }
}
