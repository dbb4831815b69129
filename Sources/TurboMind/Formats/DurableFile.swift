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

    /// Flushes a directory's entries (new names, renames) to disk.
    static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError.io(file: url.path, operation: "open", message: posixErrorText()) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw FormatError.io(file: url.path, operation: "fsync", message: posixErrorText()) }
    }

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

    /// Flushes a directory's entries (new names, renames) to disk.
    public static func syncDirectory(_ url: URL) throws { try OutputFile.syncDirectory(url) }

    /// fp32 values as raw little-endian bytes (numpy's `tofile`).
    public static func bytes(floats: [Float]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(floats.count * 4)
        for v in floats { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        return bytes
    }
}

/// Several files of one directory that belong together (one run's KV parameters), replaced as a
/// set: every new file is written and flushed in a hidden staging folder first, so a failure or a
/// kill while writing (the long part) leaves the old set untouched and removes the staging folder;
/// then a journal file marks the short rename phase, so that a kill inside it is seen by readers
/// (`DurableFileSet.interrupted`) instead of a silent mix of two runs.
public enum DurableFileSet {
    /// The journal's name in the directory while a set is being renamed into place.
    public static let journalName = ".replacing-file-set"

    /// Writes `files` (name → bytes) into `directory`, replacing same-named files, then removes
    /// `obsolete` names that the new set does not have.
    public static func replace(_ files: [(name: String, bytes: [UInt8])], in directory: URL, removing obsolete: [String] = []) throws {
        let fm = FileManager.default
        // Staging folders of runs that died before their renames hold nothing anyone reads; nor does
        // the temporary of a journal whose writer died before renaming it into place (its fsync can
        // take long enough on a busy disk for a kill to land there).
        let deadJournal = ".\(journalName).tmp-"
        for entry in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
        where entry.hasPrefix(".staging-") || entry.hasPrefix(deadJournal) {
            try? fm.removeItem(at: directory.appendingPathComponent(entry))
        }
        let staging = directory.appendingPathComponent(".staging-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard mkdir(staging.path, 0o755) == 0 else {
            throw FormatError.io(file: staging.path, operation: "create", message: posixErrorText())
        }
        var staged = false
        defer { if !staged { try? fm.removeItem(at: staging) } }
        for file in files {
            let out = try OutputFile(staging.appendingPathComponent(file.name))
            try out.write(file.bytes)
            try out.finish()
        }
        try OutputFile.syncDirectory(staging)
        staged = true
        let journal = directory.appendingPathComponent(journalName)
        try OutputFile.replace(journal) { try $0.write(Array("staging \(staging.lastPathComponent)\n".utf8)) }
        for file in files where rename(staging.appendingPathComponent(file.name).path, directory.appendingPathComponent(file.name).path) != 0 {
            throw FormatError.io(file: directory.appendingPathComponent(file.name).path, operation: "rename", message: posixErrorText())
        }
        let keep = Set(files.map(\.name))
        for name in obsolete where !keep.contains(name) { unlink(directory.appendingPathComponent(name).path) }
        try OutputFile.syncDirectory(directory)
        unlink(journal.path)
        try? fm.removeItem(at: staging)
        try OutputFile.syncDirectory(directory)
    }

    /// The journal when a replacement of a set in `directory` was interrupted during its renames.
    public static func interrupted(in directory: URL) -> URL? {
        let journal = directory.appendingPathComponent(journalName)
        return FileManager.default.fileExists(atPath: journal.path) ? journal : nil
    }
}
