// Resident memory of this process, measured one way for every caller (bench, convert, tests).
import Foundation

public enum ProcessMemory {
    /// Peak resident set size (VmHWM of /proc/self/status), in bytes; nil where unavailable.
    public static func peakResidentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }
}
