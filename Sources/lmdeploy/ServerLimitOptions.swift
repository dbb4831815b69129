// The server's limits and timeouts as flags (api_server, and the web page's server in local mode):
// what one request, one client and the whole server may take, and how long a connection may stall.
import ArgumentParser
import Serve

struct ServerLimitOptions: ParsableArguments {
    @Option(name: [.customLong("max-concurrent-requests"), .customLong("max_concurrent_requests")],
            help: "Generation requests served at once; more wait in a queue.")
    var maxConcurrentRequests = 256

    @Option(name: [.customLong("max-queued-requests"), .customLong("max_queued_requests")],
            help: "Requests that may wait beyond --max-concurrent-requests; more get 429 with Retry-After.")
    var maxQueuedRequests = 256

    @Option(name: [.customLong("max-requests-per-client"), .customLong("max_requests_per_client")],
            help: "Generation requests one client address may have running or waiting at once; more get 429.")
    var maxRequestsPerClient = 128

    @Option(name: [.customLong("max-sessions"), .customLong("max_sessions")],
            help: "Open /v1/chat/interactive sessions the server keeps in all; a new one beyond gets 429 until one ends.")
    var maxSessions = 4096

    @Option(name: [.customLong("max-sessions-per-client"), .customLong("max_sessions_per_client")],
            help: "Open interactive sessions one client address may keep.")
    var maxSessionsPerClient = 1024

    @Option(name: [.customLong("queue-timeout"), .customLong("queue_timeout")],
            help: "Seconds a request may wait for room in the KV cache before it gets 503 with Retry-After.")
    var queueTimeout = 120.0

    @Option(name: [.customLong("max-body-bytes"), .customLong("max_body_bytes")], help: "Largest request body in bytes (413 beyond).")
    var maxBodyBytes = 8 << 20

    @Option(name: [.customLong("idle-timeout"), .customLong("idle_timeout")],
            help: "Seconds a connection may send nothing (between requests, or before a request head is complete) before it is closed.")
    var idleTimeout = 60.0

    @Option(name: [.customLong("request-timeout"), .customLong("request_timeout")],
            help: "Seconds a client has to send a whole request once its head arrived (half-sent requests are cut off).")
    var requestTimeout = 30.0

    @Option(name: [.customLong("write-timeout"), .customLong("write_timeout")],
            help: "Seconds a client may leave its response unread before the connection is closed and its generation cancelled.")
    var writeTimeout = 30.0

    func validate() throws {
        guard maxConcurrentRequests >= 1 else { throw ValidationError("--max-concurrent-requests must be at least 1") }
        guard maxQueuedRequests >= 0 else { throw ValidationError("--max-queued-requests must be ≥ 0") }
        guard maxRequestsPerClient >= 1 else { throw ValidationError("--max-requests-per-client must be at least 1") }
        guard maxSessions >= 1 else { throw ValidationError("--max-sessions must be at least 1") }
        guard maxSessionsPerClient >= 1 else { throw ValidationError("--max-sessions-per-client must be at least 1") }
        guard maxBodyBytes >= 1024 else { throw ValidationError("--max-body-bytes must be at least 1024") }
        for (name, value) in [("--queue-timeout", queueTimeout), ("--idle-timeout", idleTimeout), ("--request-timeout", requestTimeout), ("--write-timeout", writeTimeout)] {
            guard value.isFinite, value > 0 else { throw ValidationError("\(name) must be a positive number of seconds, got \(value)") }
        }
    }

    /// Sets these limits on `options`.
    func apply(to options: inout ServerOptions) {
        options.maxConcurrentRequests = maxConcurrentRequests
        options.maxQueuedRequests = maxQueuedRequests
        options.maxRequestsPerClient = maxRequestsPerClient
        options.maxSessions = maxSessions
        options.maxSessionsPerClient = maxSessionsPerClient
        options.queueTimeout = .seconds(queueTimeout)
        options.timeouts = ConnectionTimeouts(idle: .seconds(idleTimeout), request: .seconds(requestTimeout), write: .seconds(writeTimeout))
        options.limits.maxBodyBytes = maxBodyBytes
    }
}
