// /openapi.json describes exactly what the handlers decode, and the page at / is served;
// schemathesis then fuzzes every route from the document (no 5xx, every answer in the schema).
import Foundation
import Testing
@testable import Serve
import TurboMind

@Suite(.serialized) struct OpenAPITests {
    static func propertyNames(_ schema: JSONDoc) -> Set<String> {
        guard case .object(let props)? = schema["properties"] else { return [] }
        return Set(props.map(\.0))
    }

    @Test(arguments: [
        (ChatCompletionRequest.schema, ChatCompletionRequest.fieldNames),
        (CompletionRequest.schema, CompletionRequest.fieldNames),
        (InteractiveRequest.schema, InteractiveRequest.fieldNames),
        (InteractiveResponse.schema, InteractiveResponse.fieldNames),
        (ChatCompletion.schema, ChatCompletion.fieldNames),
        (ChatCompletionChunk.schema, ChatCompletionChunk.fieldNames),
        (Completion.schema, Completion.fieldNames),
        (ModelList.schema, ModelList.fieldNames),
    ])
    func schemasListExactlyTheCodingKeys(schema: JSONDoc, fields: [String]) {
        #expect(Self.propertyNames(schema) == Set(fields))
    }

    @Test func documentCoversEveryRouteAndPageIsServed() async throws {
        let server = try await TestServer.start()
        let doc = try await server.get("/openapi.json").json()
        #expect(doc["openapi"] as? String == "3.1.0")
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        for (path, methods) in Routes.table {
            #expect(Set(paths[path]?.keys.map { $0.uppercased() } ?? []) == Set(methods.map(\.rawValue)), "\(path)")
        }
        let page = try await server.get("/")
        #expect(page.status == 200)
        #expect(page.headers.first(name: "content-type")?.hasPrefix("text/html") == true)
        #expect(page.headers.first(name: "content-security-policy")?.contains("default-src 'none'") == true)
        #expect(page.text.contains("/openapi.json") && !page.text.contains("http://") && !page.text.contains("https://"), "no CDN")
        await server.stop()
    }

    /// schemathesis (pip, installed by Scripts/bootstrap) against a server with a short session,
    /// so that any generated request finishes quickly.
    @Test func schemathesisFindsNoServerErrorsOrSchemaViolations() async throws {
        let server = try await TestServer.start(settings: EngineSettings(sessionLen: 64, maxBatchSize: 8, cacheMaxEntryCount: 8))
        let schemathesis = URL(fileURLWithPath: TestModel.python).deletingLastPathComponent().appendingPathComponent("schemathesis").path
        let r = try await runProcess(schemathesis, ["run", server.base + "/openapi.json", "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                                              "--max-examples", "25", "--seed", "1", "--no-color", "--request-timeout", "60"], timeout: 900)
        #expect(r.status == 0, "schemathesis failed:\n\(r.output.suffix(6000))")
        await server.stop()
    }
}

/// Runs a program; output is stdout and stderr together. Waits without blocking a thread of the
/// cooperative pool: the server under test runs on that pool (2 threads on a 2-core machine).
func runProcess(_ path: String, _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval) async throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    return try await withCheckedThrowingContinuation { continuation in
        do {
            try p.run()
        } catch {
            continuation.resume(throwing: error)
            return
        }
        Thread.detachNewThread {
            let timer = DispatchWorkItem { p.terminate() }
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: timer)
            let out = readAll(pipe.fileHandleForReading.fileDescriptor)
            p.waitUntilExit()
            timer.cancel()
            continuation.resume(returning: (p.terminationStatus, String(decoding: out, as: UTF8.self)))
        }
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
