// The one durable-write helper of the formats layer: a new file written sequentially with POSIX
// calls (retrying writes interrupted by a signal), flushed to disk before it counts as written, and,
// for a file that replaces another, written under a temporary name beside the target and renamed
// over it, so a reader sees the old file or the complete new one, never a part.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A new file (created exclusively) written sequentially and flushed to disk on `finish`.
final class OutputFile {
    let path: String
    private var fd: Int32

    init(_ url: URL) throws {
        path = url.path
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw FormatError.io(file: path, operation: "create", message: posixErrorText()) }
    }

    /// Writes all of `bytes`, retrying after EINTR and short writes.
    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard fd >= 0 else { throw FormatError.io(file: path, operation: "write", message: "the file is already closed") }
        var written = 0
        while written < bytes.count {
            let result = posixWrite(fd, bytes.baseAddress! + written, bytes.count - written)
            if result < 0 {
                if errno == EINTR { continue }
                throw FormatError.io(file: path, operation: "write", message: posixErrorText())
            }
            written += result
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Flushes the file to disk and closes it.
    func finish() throws {
        guard fd >= 0 else { return }
        defer { close(fd); fd = -1 }
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw FormatError.io(file: path, operation: "fsync", message: posixErrorText())
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Writes `url` atomically: `body` fills a temporary file beside it (`.NAME.tmp-PID-RANDOM`),
    /// which is flushed and renamed over `url`; on any failure the temporary file is removed and
    /// `url` is left as it was.
    static func replace(_ url: URL, _ body: (OutputFile) throws -> Void) throws {
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let file = try OutputFile(temporary)
        var succeeded = false
        defer { if !succeeded { unlink(temporary.path) } }
        try body(file)
        try file.finish()
        if rename(temporary.path, url.path) != 0 {
            throw FormatError.io(file: url.path, operation: "rename", message: posixErrorText())
        }
        succeeded = true
    }
}

/// `strerror(errno)`.
func posixErrorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// The POSIX `write(2)`, under a name no type's own `write` method shadows.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, buffer, count)
    #elseif canImport(Musl)
    return Musl.write(fd, buffer, count)
    #else
    return Darwin.write(fd, buffer, count)
    #endif
}

/// Durable writes for the libraries above the formats layer (Lite's calibration statistics and
/// KV parameters): the same temporary-file-and-rename as every workspace file.
public enum DurableFile {
    /// Writes `bytes` to `url` atomically, replacing any file there.
    public static func write(_ bytes: [UInt8], to url: URL) throws {
        try OutputFile.replace(url) { try $0.write(bytes) }
    }

    /// fp32 values as raw little-endian bytes (numpy's `tofile`), written atomically.
    public static func write(floats: [Float], to url: URL) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(floats.count * 4)
        for v in floats { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        try write(bytes, to: url)
    }
}
