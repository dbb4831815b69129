// A whole file mapped read-only into memory. Tensor views point straight into the mapping (zero copy);
// the OS pages weights in on first touch and may drop them under memory pressure.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Read-only memory mapping of a file; unmapped when the last reference goes away.
final class MappedFile: @unchecked Sendable {
    let path: String
    /// The file's bytes (empty for an empty file).
    let bytes: UnsafeRawBufferPointer

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw FormatError.fileNotFound(file: path, what: "reading tensors") }
            throw FormatError.io(file: path, operation: "open", message: String(cString: strerror(code)))
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 {
            throw FormatError.io(file: path, operation: "stat", message: String(cString: strerror(errno)))
        }
        if (info.st_mode & S_IFMT) != S_IFREG {
            throw FormatError.io(file: path, operation: "open", message: "not a regular file")
        }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        if address == MAP_FAILED || address == nil {
            throw FormatError.io(file: path, operation: "mmap", message: String(cString: strerror(errno)))
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress, bytes.count > 0 {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}
