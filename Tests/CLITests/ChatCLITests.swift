// Drives the real `lmdeploy` executable the way a user does: through a pipe.
import Foundation
import Testing

enum CLI {
    /// The lmdeploy binary built beside this test bundle ($LMDEPLOY_BIN overrides).
    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["LMDEPLOY_BIN"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("lmdeploy")
    }

    static var model: String {
        let env = ProcessInfo.processInfo.environment
        return env["LMDEPLOY_TEST_MODEL"]
            ?? (env["LMDEPLOY_CACHE"] ?? NSHomeDirectory() + "/.cache/lmdeploy-swift") + "/smollm2-135m-instruct"
    }

    struct Result { let status: Int32; let stdout: String; let stderr: String }

    /// Runs lmdeploy with `arguments`, feeding `input` on stdin; fails the test after `timeout` s.
    static func run(_ arguments: [String], input: String = "", timeout: TimeInterval = 300) throws -> Result {
        try execute(binary, arguments, input: input, timeout: timeout)
    }

    /// Runs any program the same way (the test scripts in Scripts/).
    static func execute(_ executable: URL, _ arguments: [String], input: String = "", timeout: TimeInterval = 300) throws -> Result {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        p.standardInput = inPipe
        p.standardOutput = outPipe
        p.standardError = errPipe
        try p.run()
        inPipe.fileHandleForWriting.write(Data(input.utf8))
        try inPipe.fileHandleForWriting.close()
        // Read both pipes concurrently so a chatty child never blocks on a full pipe.
        nonisolated(unsafe) var out = Data(), err = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { out = readAll(outPipe.fileHandleForReading.fileDescriptor) }
        DispatchQueue.global().async(group: group) { err = readAll(errPipe.fileHandleForReading.fileDescriptor) }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            p.terminate()
            Issue.record("\(executable.lastPathComponent) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }
}

/// Everything until end of file, retrying reads a signal interrupted (Foundation's
/// readDataToEndOfFile traps on EINTR, and Process's SIGCHLD handling causes them).
func readAll(_ fd: Int32) -> Data {
    var out = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n > 0 { out.append(buffer, count: n); continue }
        if n < 0 && errno == EINTR { continue }
        return out
    }
}

@Suite struct ChatCLITests {
    /// Two turns where the second needs the first, `end`, the same follow-up without its
    /// context (the history must be gone), a fresh question, `exit`. Greedy, so deterministic.
    @Test func conversationThroughAPipe() throws {
        let input = "What is the capital of France?\n\nAnd of Germany?\n\nend\nAnd of Germany?\n\nWhat is the capital of Italy?\n\nexit\n"
        let r = try CLI.run(["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "40"], input: input)
        #expect(r.status == 0, "exit status \(r.status); stderr: \(r.stderr)")
        let turns = r.stdout.components(separatedBy: "double enter to end input >>> ")
        // Six prompts: [banner, answer 1, answer 2, "(new session)", answer 3, answer 4, after `exit`].
        #expect(turns.count == 7, "unexpected transcript: \(r.stdout)")
        guard turns.count == 7 else { return }
        #expect(turns[1].contains("Paris"), "answer 1: \(turns[1])")
        #expect(turns[2].contains("Berlin"), "the second turn must use the first: \(turns[2])")
        #expect(turns[3].contains("new session"))
        #expect(!turns[4].contains("Berlin"), "after `end` the earlier turns must be forgotten: \(turns[4])")
        #expect(turns[5].contains("Rome"), "answer 4: \(turns[5])")
    }

    /// `torch` runs the same engine: the same greedy answer.
    @Test func torchBackendCommandWorks() throws {
        let input = "What is the capital of France?\n\n"
        let a = try CLI.run(["chat", "torch", CLI.model, "--temperature", "0", "--max-new-tokens", "12"], input: input)
        let b = try CLI.run(["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "12"], input: input)
        #expect(a.status == 0 && b.status == 0)
        #expect(a.stdout == b.stdout && a.stdout.contains("Paris"))
    }

    /// A conversation longer than the session ends the session with a clear message, and the
    /// chat goes on.
    @Test func sessionLengthOverflowEndsTheSession() throws {
        let long = String(repeating: "tell me more about the history of France. ", count: 20)
        let input = "\(long)\n\nWhat is the capital of France?\n\nexit\n"
        let r = try CLI.run(["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "8", "--session-len", "64"], input: input)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("session") && r.stdout.contains("64"), "no clear message: \(r.stdout)")
        #expect(r.stdout.contains("Paris"), "the chat must go on after the overflow: \(r.stdout)")
    }

    /// Ctrl-D (end of input) exits cleanly.
    @Test func endOfInputExitsCleanly() throws {
        let r = try CLI.run(["chat", "turbomind", CLI.model], input: "")
        #expect(r.status == 0)
    }

    @Test func missingModelIsAClearError() throws {
        let r = try CLI.run(["chat", "turbomind", "/nonexistent/model"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("/nonexistent/model"), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"))
    }

    @Test func versionAndCheckEnv() throws {
        let v = try CLI.run(["--version"])
        #expect(v.status == 0 && v.stdout.contains("0.1"))
        let e = try CLI.run(["check-env"])
        #expect(e.status == 0)
        for label in ["CPU features", "CPU kernels", "BLAS", "CUDA"] { #expect(e.stdout.contains(label), "\(label) missing: \(e.stdout)") }
    }
}

@Suite struct ChatWorkspaceCLITests {
    /// Hand edits of config.ini apply on the next start, and a flag still overrides them.
    @Test func configINIEditsApplyAndFlagsOverride() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chat-ini-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ws = dir.appendingPathComponent("workspace").path
        let convert = try CLI.run(["convert", "qwen", CLI.model, "--dst-path", ws])
        #expect(convert.status == 0, "\(convert.stderr)")
        let ini = ws + "/triton_models/weights/config.ini"
        var text = try String(contentsOfFile: ini, encoding: .utf8)
        text = text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("session_len") ? "session_len = 96" : String($0) }.joined(separator: "\n")
        try text.write(toFile: ini, atomically: true, encoding: .utf8)
        let edited = try CLI.run(["chat", "turbomind", ws, "--temperature", "0", "--max-new-tokens", "12"], input: "What is the capital of France?\n\nexit\n")
        #expect(edited.status == 0)
        #expect(edited.stderr.contains("session length 96"), "\(edited.stderr)")
        #expect(edited.stdout.contains("Paris"))
        let flagged = try CLI.run(["chat", "turbomind", ws, "--session-len", "128", "--model-name", "qwen"], input: "")
        #expect(flagged.stderr.contains("session length 128"), "\(flagged.stderr)")
        let unknown = try CLI.run(["chat", "turbomind", ws, "--model-name", "no-such-template"], input: "")
        #expect(unknown.status != 0 && unknown.stderr.contains("lmdeploy list"))
    }
}
