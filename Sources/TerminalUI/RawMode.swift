// Raw mode for the line editor, and putting the terminal back whatever happens: the saved
// settings are restored when a line is finished, at exit (atexit), and from handlers for the
// signals that end the process (SIGTERM, SIGHUP, SIGQUIT and the crash signals); Ctrl-Z
// (a plain byte in raw mode) leaves raw mode before the process stops. Those handlers only call tcsetattr (async-signal-safe), put back the previous
// handler and re-raise the signal, so the process dies (or the crash report runs) as before.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// State the signal handlers read. Allocated once, before any handler is installed, and never
/// freed; written only while no handler can run on it (raw mode is off).
nonisolated(unsafe) private let saved = UnsafeMutablePointer<termios>.allocate(capacity: 1)
nonisolated(unsafe) private let savedFD = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
nonisolated(unsafe) private let rawActive = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
nonisolated(unsafe) private let previousActions = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
private let guardedSignals: [Int32] = [SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP]

private func restoreFromHandler(_ signal: Int32) {
    if rawActive.pointee != 0 {
        _ = tcsetattr(savedFD.pointee, TCSANOW, saved)
        rawActive.pointee = 0
    }
    if signal > 0 && signal < 65 {
        _ = sigaction(signal, previousActions + Int(signal), nil)
        _ = raise(signal)
    }
}

public enum RawMode {
    nonisolated(unsafe) private static var installed = false

    /// Installs the exit and signal handlers once (the first raw-mode line of the process).
    private static func installHandlers() {
        guard !installed else { return }
        installed = true
        rawActive.pointee = 0
        atexit { restoreFromHandler(0) }
        for s in guardedSignals {
            var action = sigaction()
            #if canImport(Glibc)
            action.__sigaction_handler.sa_handler = { restoreFromHandler($0) }
            #else
            action.__sigaction_u.__sa_handler = { restoreFromHandler($0) }
            #endif
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            _ = sigaction(s, &action, previousActions + Int(s))
        }
    }

    /// Switches `fd` (a terminal) to raw mode: bytes arrive one by one, unechoed, and Ctrl-C,
    /// Ctrl-Z, Ctrl-S/Q are plain bytes. Output processing stays on. False when `fd` is not a
    /// terminal or refuses the settings.
    public static func enter(_ fd: Int32) -> Bool {
        installHandlers()
        var original = termios()
        guard tcgetattr(fd, &original) == 0 else { return false }
        var raw = original
        raw.c_iflag &= ~tcflag_t(BRKINT | ICRNL | INPCK | ISTRIP | IXON)
        raw.c_cflag |= tcflag_t(CS8)
        raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        saved.pointee = original
        savedFD.pointee = fd
        rawActive.pointee = 1
        guard tcsetattr(fd, TCSADRAIN, &raw) == 0 else {
            rawActive.pointee = 0
            return false
        }
        return true
    }

    /// Restores the settings saved by `enter`.
    public static func leave() {
        guard rawActive.pointee != 0 else { return }
        _ = tcsetattr(savedFD.pointee, TCSADRAIN, saved)
        rawActive.pointee = 0
    }

    /// Ctrl-Z from the editor: the terminal back to normal, the process stopped as by the
    /// shell's job control, raw mode again when it continues.
    static func suspend(_ fd: Int32) {
        leave()
        _ = kill(0, SIGTSTP)
        _ = enter(fd)
    }

    /// The terminal's width in columns (80 when it cannot be read).
    public static func columns(_ fd: Int32) -> Int {
        var size = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 80
    }
}
