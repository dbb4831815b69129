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
