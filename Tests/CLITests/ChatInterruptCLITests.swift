// Ctrl-C and line editing in `lmdeploy chat`, driven as a user drives it: through pipes with a
// real SIGINT, and on a real pseudo-terminal (Python's pty module) with the bytes a terminal
// sends for arrow keys and control keys.
import Foundation
import Testing

/// A running lmdeploy whose output can be awaited while input is still being written.
final class LiveProcess: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe(), output = Pipe(), errors = Pipe()
    private let lock = NSLock()
    private var out = Data(), err = Data()

    init(_ arguments: [String]) throws {
        process.executableURL = CLI.binary
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        output.fileHandleForReading.readabilityHandler = { [unowned self] h in
            let d = h.availableData
            lock.lock(); out.append(d); lock.unlock()
        }
        errors.fileHandleForReading.readabilityHandler = { [unowned self] h in
            let d = h.availableData
            lock.lock(); err.append(d); lock.unlock()
        }
        try process.run()
    }

    var stdout: String { lock.lock(); defer { lock.unlock() }; return String(decoding: out, as: UTF8.self) }
    var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: err, as: UTF8.self) }

    /// Waits until `condition` holds on stdout; false after `timeout` s.
    func wait(timeout: TimeInterval = 120, _ condition: (String) -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if condition(stdout) { return true }
            if !process.isRunning { return condition(stdout) }
            usleep(10_000)
        }
        return false
    }

    func send(_ text: String) { input.fileHandleForWriting.write(Data(text.utf8)) }
    func interrupt() { kill(process.processIdentifier, SIGINT) }

    /// Closes stdin and waits for the exit status (nil after `timeout` s: the process is killed).
    func finish(timeout: TimeInterval = 120) -> Int32? {
        try? input.fileHandleForWriting.close()
        let end = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < end { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            return nil
        }
        usleep(50_000)   // let the readability handlers take the last bytes
        return process.terminationStatus
    }
}

/// Runs lmdeploy on a pseudo-terminal (80 columns) through a small Python driver: `steps` are
/// ["send", keys], ["wait", text, minimum bytes from text on] (text looked for in what came
/// after the last send), ["signal", number] (sent to lmdeploy) or ["lflag"] (records the
/// terminal's local mode flags; they are recorded once more after the exit). Returns the exit
/// status (negative: killed by that signal), the raw terminal output and the flags.
enum PTY {
    static var python: String {
        if let venv = ProcessInfo.processInfo.environment["LMDEPLOY_TEST_VENV"],
           FileManager.default.isExecutableFile(atPath: venv + "/bin/python") { return venv + "/bin/python" }
        return "/usr/bin/python3"
    }

    static let driver = #"""
    import json, os, pty, select, struct, sys, termios, fcntl, time
    binary, args, steps = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.environ["TERM"] = "xterm"
        os.execv(binary, [binary] + args)
    out, mark, error = bytearray(), 0, None
    def pump(timeout):
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        out.extend(data)
        return bool(data)
    lflags = []
    for step in steps:
        if step[0] == "send":
            mark = len(out)
            os.write(fd, step[1].encode())
        elif step[0] == "signal":
            os.kill(pid, step[1])
        elif step[0] == "lflag":
            lflags.append(termios.tcgetattr(fd)[3])
        else:
            text, least, end, alive = step[1].encode(), step[2], time.time() + 60, True
            while True:
                i = out.find(text, mark)
                if i >= 0 and len(out) - i >= least:
                    break
                if time.time() > end or not alive:
                    error = "timed out waiting for %r" % step[1]
                    break
                alive = pump(0.2)
        if error:
            break
    end = time.time() + 60
    while time.time() < end and pump(0.2):
        pass
    if error or time.time() >= end:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    lflags.append(termios.tcgetattr(fd)[3])
    print(json.dumps({"status": os.waitstatus_to_exitcode(status), "error": error, "lflags": lflags,
                      "icanon": termios.ICANON, "echo": termios.ECHO, "isig": termios.ISIG,
                      "output": out.decode("utf-8", "replace")}))
    """#

    struct Result {
        let status: Int
        let error: String?
        let output: String
        var lflags: [Int] = []
        /// ICANON | ECHO | ISIG: the line discipline's normal (cooked) mode bits.
        var cookedBits = 0
    }

    static func run(_ arguments: [String], steps: [[Any]]) throws -> Result {
        let script = FileManager.default.temporaryDirectory.appendingPathComponent("pty-driver-\(UUID().uuidString).py")
        try driver.write(to: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: script) }
        func json(_ v: Any) throws -> String { String(decoding: try JSONSerialization.data(withJSONObject: v), as: UTF8.self) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script.path, CLI.binary.path, try json(arguments), try json(steps)]
        let outPipe = Pipe()
        p.standardOutput = outPipe
        try p.run()
        let data = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        let bits = [object["icanon"], object["echo"], object["isig"]].compactMap { $0 as? Int }.reduce(0, |)
        return Result(status: object["status"] as? Int ?? -1, error: object["error"] as? String,
                      output: object["output"] as? String ?? String(decoding: data, as: UTF8.self),
                      lflags: object["lflags"] as? [Int] ?? [], cookedBits: bits)
    }

    /// The terminal output without escape sequences and carriage returns (the line editor
    /// redraws with them; what remains is every redraw's text in order).
    static func plain(_ s: String) -> String {
        s.replacingOccurrences(of: "\u{1B}\\[[0-9;?]*[A-Za-z~]|\u{1B}O.", with: "", options: .regularExpression)
            .replacingOccurrences(of: "\r", with: "")
    }
}

private let prompt = "double enter to end input >>> "
/// On the terminal a new message prompt follows the previous output's line break and the
/// prompt's own leading one; a redraw while typing does not.
private let newPrompt = "\r\n\r\n\r\u{1B}[J" + prompt
private let left = "\u{1B}[D", up = "\u{1B}[A", home = "\u{1B}[H", end = "\u{1B}[F"

@Suite(.serialized) struct ChatInterruptCLITests {
    /// Ctrl-C (a real SIGINT) while the first reply streams stops it, the chat goes on in the
    /// same session: the next question needs the first turn's context ("And of Germany?" gives
    /// Berlin only after the question about France; without it, it does not — see
    /// ChatCLITests.conversationThroughAPipe), and exit is clean.
    @Test func interruptStopsTheReplyAndKeepsTheSession() throws {
        let chat = try LiveProcess(["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "4000"])
        #expect(chat.wait { $0.contains(prompt) }, "no prompt: \(chat.stderr)")
        chat.send("What is the capital of France? Then write a long essay about its history.\n\n")
        // Interrupt once the reply is under way (with "Paris" in it, so the next turn can use it).
        let started = chat.wait { out in
            guard let reply = out.components(separatedBy: prompt).dropFirst().first else { return false }
            return reply.contains("Paris") && reply.utf8.count > 80
        }
        #expect(started, "the reply did not start: \(chat.stdout)")
        let interruptedAt = Date()
        chat.interrupt()
        #expect(chat.wait(timeout: 30) { $0.components(separatedBy: prompt).count == 3 }, "no prompt after Ctrl-C: \(chat.stdout) \(chat.stderr)")
        // 4000 tokens take minutes on CPU: the prompt came back because the reply was stopped.
        #expect(Date().timeIntervalSince(interruptedAt) < 20)
        chat.send("And of Germany?\n\n")
        #expect(chat.wait { $0.components(separatedBy: prompt).count == 4 }, "no second reply: \(chat.stdout)")
        chat.send("exit\n")
        let status = chat.finish()
        #expect(status == 0, "exit status \(String(describing: status)); stderr: \(chat.stderr)")
        let turns = chat.stdout.components(separatedBy: prompt)
        #expect(turns.count == 4, "transcript: \(chat.stdout)")
        guard turns.count == 4 else { return }
        #expect(turns[1].contains("Paris"))
        #expect(turns[1].hasSuffix("\n\n"), "the stopped reply must end its line: \(turns[1].debugDescription)")
        #expect(turns[2].contains("Berlin"), "the second turn must see the first: \(turns[2])")
        #expect(!chat.stdout.contains("new session") && !chat.stderr.contains("session is ended"))
        // The session kept the first turn: prompt and partial reply, well over the bare question.
        let kept = chat.stderr.firstMatch(of: /conversation keeps its (\d+) tokens/).flatMap { Int($0.1) }
        #expect((kept ?? 0) > 30, "stderr: \(chat.stderr)")
    }

    /// Ctrl-C at an empty prompt prints a hint; another one right after quits (exit status 0).
    /// Through a pipe the SIGINT wakes the waiting reader up.
    @Test func interruptAtAnEmptyPromptHintsThenQuits() throws {
        let chat = try LiveProcess(["chat", "turbomind", CLI.model])
        #expect(chat.wait { $0.contains(prompt) })
        chat.interrupt()
        #expect(chat.wait(timeout: 30) { $0.contains("press Ctrl-C again or type exit to quit") }, "no hint: \(chat.stdout)")
        chat.interrupt()
        let start = Date()
        while Date().timeIntervalSince(start) < 30, chat.stdout.components(separatedBy: prompt).count < 3 { usleep(10_000) }
        let status = chat.finish(timeout: 30)
        #expect(status == 0, "stderr: \(chat.stderr)")
    }

    /// On a terminal: a line edited with Left, Home, End and an inserted letter; the next one
    /// recalled with Up and edited with Ctrl-W after Ctrl-U threw away a typo. What the chat
    /// sends is checked twice: the screen shows the edited line at the submit, and the replies
    /// equal those of the same conversation typed through a pipe (greedy decoding, so the same
    /// prompt gives the same reply and any other prompt almost surely another one).
    @Test func lineEditingOnAPseudoTerminal() throws {
        let args = ["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "24"]
        let first = "What is the capital of Italy?", second = "What is the capital of France?"
        let reference = try CLI.run(args, input: "\(first)\n\n\(second)\n\nexit\n")
        let expected = reference.stdout.components(separatedBy: prompt).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(expected.count == 4 && !expected[1].isEmpty && !expected[2].isEmpty, "reference: \(reference.stdout)")
        guard expected.count == 4 else { return }

        let r = try PTY.run(args, steps: [
            ["wait", prompt, 0],
            // "is the capital of Itly?" ← ← ← "a" → "…Italy?"; Home "What "; End; Enter Enter.
            ["send", "is the capital of Itly?" + left + left + left + "a" + home + "What " + end + "\r\r"],
            ["wait", newPrompt, newPrompt.utf8.count],
            // A typo erased with Ctrl-U, then Up recalls the first line; Ctrl-W drops "Italy?".
            ["send", "xyz\u{15}" + up + "\u{17}France?\r\r"],
            ["wait", newPrompt, newPrompt.utf8.count],
            ["send", "exit\r"],
        ])
        #expect(r.error == nil && r.status == 0, "\(r.error ?? "") status \(r.status): \(r.output.debugDescription)")
        let screen = PTY.plain(r.output)
        for (line, reply) in [(first, expected[1]), (second, expected[2])] {
            guard let submitted = screen.range(of: prompt + line + "\n\n") else {
                Issue.record("the line \(line.debugDescription) was not what was submitted: \(screen.debugDescription)")
                continue
            }
            let after = screen[submitted.upperBound...]
            let got = after.components(separatedBy: "\n\n" + prompt).first?.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(got == reply, "reply to \(line.debugDescription) on the terminal: \(got ?? "nil"); through the pipe: \(reply)")
        }
    }

    /// On a terminal: Ctrl-C (the key, so the terminal sends SIGINT) stops a streaming reply and
    /// the chat goes on; Ctrl-C on a typed line clears it; at an empty prompt a hint, then quit.
    @Test func controlCOnAPseudoTerminal() throws {
        let r = try PTY.run(["chat", "turbomind", CLI.model, "--temperature", "0", "--max-new-tokens", "4000"], steps: [
            ["wait", prompt, 0],
            ["send", "What is the capital of France? Then write a long essay about its history.\r\r"],
            ["wait", "Paris", 80],
            ["send", "\u{03}"],
            ["wait", "reply stopped", 0],
            ["wait", newPrompt, newPrompt.utf8.count],
            ["send", "garbage\u{03}And of Germany?\r\r"],
            ["wait", newPrompt, newPrompt.utf8.count],
            ["send", "\u{03}"],
            ["wait", "press Ctrl-C again", 0],
            ["send", "\u{03}"],
        ])
        #expect(r.error == nil && r.status == 0, "\(r.error ?? "") status \(r.status): \(r.output.debugDescription)")
        let screen = PTY.plain(r.output)
        #expect(screen.contains("reply stopped"))
        // The cleared line is gone: the submitted line is exactly the question.
        guard let asked = screen.range(of: prompt + "And of Germany?\n\n") else {
            Issue.record("the second line was not submitted as typed after Ctrl-C: \(screen.debugDescription)")
            return
        }
        let reply = screen[asked.upperBound...].components(separatedBy: "\n\n" + prompt).first ?? ""
        #expect(reply.contains("Berlin"), "the second turn must see the first: \(reply)")
        #expect(!screen.contains("new session"))
    }

    /// A signal that ends the process while the editor holds the terminal in raw mode leaves
    /// the terminal as it found it (cooked mode, echo on); so does a normal exit.
    @Test(arguments: [SIGTERM, SIGHUP])
    func terminalIsRestoredWhenASignalEndsTheChat(signal: Int32) throws {
        let r = try PTY.run(["chat", "turbomind", CLI.model], steps: [
            ["wait", prompt, 0],
            ["lflag"],
            ["signal", Int(signal)],
        ])
        #expect(r.lflags.count == 2 && r.cookedBits != 0, "driver: \(r.error ?? "") \(r.lflags)")
        guard r.lflags.count == 2 else { return }
        #expect(r.lflags[0] & r.cookedBits == 0, "raw mode was not on at the prompt")
        #expect(r.lflags[1] & r.cookedBits == r.cookedBits, "terminal left in raw mode after signal \(signal)")
        #expect(r.status == -Int(signal), "the process must still die of the signal: status \(r.status)")
    }

    @Test func terminalIsRestoredAtExit() throws {
        let r = try PTY.run(["chat", "turbomind", CLI.model], steps: [
            ["wait", prompt, 0],
            ["lflag"],
            ["send", "exit\r"],
        ])
        #expect(r.status == 0 && r.lflags.count == 2, "\(r.error ?? "") \(r.status)")
        guard r.lflags.count == 2 else { return }
        #expect(r.lflags[0] & r.cookedBits == 0)
        #expect(r.lflags[1] & r.cookedBits == r.cookedBits)
    }
}
