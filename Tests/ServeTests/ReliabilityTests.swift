// The server under abuse: connections that trickle, stop half-way or stop reading are closed
// and their generations cancelled; a full KV cache gives 503 with Retry-After; one client cannot
// take every slot or session; keys are never echoed; no path reaches the file system.
import Foundation
import Testing
@testable import Serve
import TurboMind
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to the test server, for what an HTTP client library will not do.
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw TestFailure("connect: \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)   // reads poll, so a closed peer is seen promptly
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Sends bytes; false when the peer has closed the connection.
    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Reads until the peer closes or `deadline`; returns what arrived and whether it closed. The
    /// blocking reads run on a dispatch thread, never on the cooperative pool the server needs.
    func drain(until deadline: ContinuousClock.Instant) async -> (data: Data, closed: Bool) {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: self.blockingDrain(until: deadline)) }
        }
    }

    private func blockingDrain(until deadline: ContinuousClock.Instant) -> (data: Data, closed: Bool) {
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while ContinuousClock.now < deadline {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { data.append(contentsOf: buffer[0..<n]); continue }
            if n == 0 { return (data, true) }
            if errno == ECONNRESET { return (data, true) }
            // EAGAIN after the read timeout: poll again
        }
        return (data, false)
    }
}

@Suite(.serialized) struct ReliabilityTests {
    static let quick = ConnectionTimeouts(idle: .seconds(1), request: .seconds(1), write: .seconds(1))

    @Test func aSlowlorisHeadIsCutOffByTheIdleTimeout() async throws {
        let server = try await TestServer.start { $0.timeouts = Self.quick }
        defer { Task { await server.stop() } }
        let c = try RawConnection(port: server.port)
        let started = ContinuousClock.now
        // A byte every 300 ms never makes a request head: the connection must not live on.
        var stillOpen = true
        for ch in "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + String(repeating: "a", count: 40) where stillOpen {
            stillOpen = c.send(String(ch))
            let (_, closed) = await c.drain(until: .now + .milliseconds(300))
            if closed { stillOpen = false }
        }
        let elapsed = ContinuousClock.now - started
        #expect(!stillOpen, "the trickling connection was still open after \(elapsed)")
        #expect(elapsed < .seconds(10), "a 1 s idle timeout took \(elapsed)")
        // The server still serves others.
        #expect(try await server.get("/health").status == 200)
    }

    @Test func halfARequestIsCutOffByTheRequestTimeout() async throws {
        let server = try await TestServer.start { $0.timeouts = Self.quick }
        defer { Task { await server.stop() } }
        let c = try RawConnection(port: server.port)
        let started = ContinuousClock.now
        #expect(c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"messages\": ["))
        // Keep the connection busy with a byte now and then so that only the request deadline applies.
        var closed = false
        while !closed && ContinuousClock.now - started < .seconds(8) {
            _ = c.send(" ")
            closed = await c.drain(until: .now + .milliseconds(300)).closed
        }
        #expect(closed, "a request that never completes must be cut off")
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(try await server.get("/health").status == 200)
    }

    @Test func aClientThatStopsReadingIsDisconnectedAndItsGenerationCancelled() async throws {
        let server = try await TestServer.start { $0.timeouts = Self.quick }
        defer { Task { await server.stop() } }
        let c = try RawConnection(port: server.port, receiveBuffer: 4096)
        // Top-20 logprobs make each event ~2 KB, so the socket buffers fill within tens of tokens.
        let body = jsonString(["messages": [["role": "user", "content": "Count from 1 to 500."]], "max_tokens": 900, "ignore_eos": true,
                               "temperature": 0, "stream": true, "logprobs": true, "top_logprobs": 20])
        #expect(c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"))
        // Never read: the server must give up on the connection and free the sequence's KV blocks.
        let started = ContinuousClock.now
        var stats = server.engine.stats
        while ContinuousClock.now - started < .seconds(60) {
            try await Task.sleep(for: .milliseconds(200))
            stats = server.engine.stats
            if ContinuousClock.now - started > .seconds(2), stats.active == 0, stats.waiting == 0 { break }
        }
        #expect(stats.active == 0 && stats.waiting == 0, "the unread generation is still running after \(ContinuousClock.now - started)")
        #expect(stats.freeBlocks == stats.totalBlocks)
        let generated = try await server.metric("lmdeploy_generation_tokens_total")
        #expect(generated < 900, "the generation ran to its end (\(generated) tokens) instead of being cancelled")
        // The response writer gives its slot back once it sees the closed connection.
        var running = server.context.admission.load.running
        for _ in 0..<50 where running != 0 {
            try await Task.sleep(for: .milliseconds(100))
            running = server.context.admission.load.running
        }
        #expect(running == 0, "the stalled request still holds its admission slot")
    }

    @Test func aFullKVCacheQueuesThenAnswers503WithRetryAfter() async throws {
        // One session's worth of KV: the first request reserves all of it for a while.
        let server = try await TestServer.start(settings: EngineSettings(sessionLen: 256, maxBatchSize: 8, cacheMaxEntryCount: 1)) {
            $0.queueTimeout = .milliseconds(800)
        }
        defer { Task { await server.stop() } }
        let long = jsonString(["messages": [["role": "user", "content": "Tell a long story."]], "max_tokens": 200, "ignore_eos": true, "temperature": 0])
        async let first = server.post("/v1/chat/completions", long)
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        let second = try await server.post("/v1/chat/completions", long)
        let waited = ContinuousClock.now - started
        #expect(second.status == 503, "\(second.text)")
        #expect(second.headers.first(name: "Retry-After") != nil)
        #expect(try second.error()["code"] as? String == "kv_cache_full")
        #expect(waited >= .milliseconds(700), "it must queue for --queue-timeout first, it waited \(waited)")
        let firstReply = try await first
        #expect(firstReply.status == 200, "the running request is unaffected: \(firstReply.text)")
        // Room again: the same request now runs.
        let again = try await server.post("/v1/chat/completions", jsonString(["messages": [["role": "user", "content": "Hi"]], "max_tokens": 4]))
        #expect(again.status == 200)
    }

    @Test func oneClientCannotTakeMoreThanItsShareOfRequests() async throws {
        let server = try await TestServer.start { $0.maxRequestsPerClient = 1 }
        defer { Task { await server.stop() } }
        let long = jsonString(["messages": [["role": "user", "content": "Tell a long story."]], "max_tokens": 120, "ignore_eos": true])
        async let first = server.post("/v1/chat/completions", long)
        try await Task.sleep(for: .milliseconds(300))
        let second = try await server.post("/v1/chat/completions", long)
        #expect(second.status == 429, "\(second.text)")
        #expect(second.headers.first(name: "Retry-After") != nil)
        #expect((try second.error()["message"] as? String)?.contains("--max-requests-per-client") == true)
        #expect(try await first.status == 200)
        #expect(server.context.admission.clients == 0, "every permit must come back")
    }

    @Test func theInteractiveSessionTableIsBounded() async throws {
        let server = try await TestServer.start { $0.maxSessions = 2 }
        defer { Task { await server.stop() } }
        func turn(_ session: Int, interactive: Bool = true, prompt: String = "Hi") async throws -> TestServer.Reply {
            try await server.post("/v1/chat/interactive", jsonString(["prompt": prompt, "session_id": session, "interactive_mode": interactive,
                                                                      "request_output_len": interactive ? 4 : 0]))
        }
        #expect(try await turn(1).status == 200)
        #expect(try await turn(2).status == 200)
        let third = try await turn(3)
        #expect(third.status == 429, "\(third.text)")
        #expect((try third.error()["message"] as? String)?.contains("--max-sessions") == true)
        #expect(try await turn(1).status == 200, "an open session goes on")
        // Ending session 2 (lmdeploy's way: empty prompt, not interactive) makes room.
        #expect(try await turn(2, interactive: false, prompt: "").status == 200)
        #expect(try await turn(3).status == 200)
        #expect(server.context.sessions.count == 2)
    }

    @Test func wrongKeysAreNotEchoedAndEveryRouteButHealthNeedsOne() async throws {
        let server = try await TestServer.start { $0.apiKeys = ["the-right-key"] }
        defer { Task { await server.stop() } }
        let guess = "Bearer guessed-key-0123456789"
        for path in ["/v1/models", "/metrics", "/openapi.json", "/", "/api-page.js"] {
            let r = try await server.get(path, headers: [("Authorization", guess)])
            #expect(r.status == 401, "\(path) must need the key")
            #expect(!r.text.contains("guessed-key") && !r.text.contains("the-right-key"), "\(path) echoed a key: \(r.text)")
        }
        let post = try await server.post("/v1/chat/completions", "{\"messages\": []}", headers: [("Authorization", guess)])
        #expect(post.status == 401 && !post.text.contains("guessed-key"))
        #expect(try await server.get("/health").status == 200)
        #expect(try await server.get("/v1/models", headers: [("Authorization", "Bearer the-right-key")]).status == 200)
    }

    @Test(arguments: ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/v1/../../etc/passwd", "/config.json",
                      "/v1/models/..%2f..%2fconfig.json", "//etc/passwd"])
    func noPathReadsAFile(_ path: String) async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let c = try RawConnection(port: server.port)
        #expect(c.send("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        let (data, _) = await c.drain(until: .now + .seconds(5))
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 404") || text.hasPrefix("HTTP/1.1 400"), "\(path): \(text.prefix(200))")
        #expect(!text.contains("root:") && !text.contains("\"architectures\""), "\(path) leaked a file")
    }
}
