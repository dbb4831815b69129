// SIGINT (Ctrl-C) for interactive programs: while a long task runs it calls the task's handler
// (a chat stops the reply); otherwise it is queued for the line reader, which wakes up and
// reports an interrupt. The signal itself is taken by a Dispatch signal source (the default
// action is turned off with SIG_IGN), so no code runs inside a signal handler.
import Dispatch
import Foundation

public final class Interrupts: @unchecked Sendable {
    /// One per process: signal dispositions are process-wide.
    public static let shared = Interrupts()

    private let lock = NSLock()
    private var handler: (@Sendable () -> Void)?
    private let source: DispatchSourceSignal
    /// One byte per interrupt queued for the reader; the read end is non-blocking.
    let readFD: Int32
    private let writeFD: Int32

    private init() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { fatalError("TerminalUI: pipe() failed for the interrupt queue (errno \(errno))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readFD = fds[0]
        writeFD = fds[1]
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: DispatchQueue(label: "TerminalUI.interrupts"))
        source.setEventHandler { [unowned self] in
            let count = max(1, Int(source.data))
            lock.lock()
            let handler = self.handler
            lock.unlock()
            if let handler {
                handler()
            } else {
                var byte: UInt8 = 3
                for _ in 0..<min(count, 16) { _ = write(writeFD, &byte, 1) }
            }
        }
        source.resume()
    }

    /// Runs `body` with Ctrl-C calling `onInterrupt` (on another thread) instead of being
    /// queued for the reader. Interrupts queued before are dropped.
    public func during<T>(onInterrupt: @escaping @Sendable () -> Void, _ body: () async throws -> T) async rethrows -> T {
        discardQueued()
        setHandler(onInterrupt)
        defer { setHandler(nil) }
        return try await body()
    }

    private func setHandler(_ h: (@Sendable () -> Void)?) {
        lock.lock()
        handler = h
        lock.unlock()
    }

    /// Drops the interrupts queued for the reader.
    public func discardQueued() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readFD, &buffer, buffer.count) > 0 {}
    }

    /// Takes one queued interrupt; false when none is queued.
    func takeQueued() -> Bool {
        var byte: UInt8 = 0
        return read(readFD, &byte, 1) == 1
    }
}
