// Progress of long work (convert, calibrate, perplexity) on stderr, as lmdeploy's tqdm bars show it.
import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
public final class ProgressBar {
    private let label: String
    private let enabled = isatty(STDERR_FILENO) != 0
    private let started = Date()
    private var lastDraw = Date.distantPast

    public init(label: String) { self.label = label }

    public func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let now = Date()
        guard done == total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "█", count: filled) + String(repeating: " ", count: width - filled)
        let line = String(format: "\r%@: %3d%% |%@| %d/%d [%.1fs]", label, 100 * done / total, bar, done, total,
                          now.timeIntervalSince(started))
        FileHandle.standardError.write(Data(line.utf8))
    }

    public func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
