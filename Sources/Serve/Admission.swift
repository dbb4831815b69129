// How many generation requests run at once (--max-concurrent-requests), how many may wait
// (--max-queued-requests), and how many one client may hold of either (--max-requests-per-client).
// A request beyond them is refused with 429 and Retry-After at once, rather than piling up on a
// server that cannot serve it soon or letting one client crowd out the others.
import Foundation
import NIOCore

final class Admission: @unchecked Sendable {
    private let lock = NSLock()
    private let limit: Int
    private let queueDepth: Int
    private let perClient: Int
    private var running = 0
    private var waiters: [CheckedContinuation<Void, Error>] = []
    /// Requests running or waiting, per client address.
    private var byClient: [String: Int] = [:]

    init(limit: Int, queueDepth: Int, perClient: Int = .max) {
        self.limit = max(1, limit)
        self.queueDepth = max(0, queueDepth)
        self.perClient = max(1, perClient)
    }

    /// A slot, released when the permit is dropped; throws 429 when the queue is full too, or
    /// when `client` already holds its share.
    func acquire(client: String) async throws -> Permit {
        // Deciding and queueing under one lock: a release between them would lose the wake-up.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            lock.withLock {
                let mine = byClient[client, default: 0]
                if mine >= perClient {
                    continuation.resume(throwing: APIError.overloaded(retryAfter: 1, message: "this client already has \(mine) requests running or waiting, the most one client may have (--max-requests-per-client); retry when one has finished"))
                } else if running < limit {
                    running += 1
                    byClient[client] = mine + 1
                    continuation.resume()
                } else if waiters.count < queueDepth {
                    byClient[client] = mine + 1
                    waiters.append(continuation)   // `release` hands its slot over
                } else {
                    continuation.resume(throwing: APIError.overloaded(retryAfter: 1, message: "the server is busy: \(limit) requests are running and \(queueDepth) are waiting (--max-concurrent-requests, --max-queued-requests); retry later"))
                }
            }
        }
        return Permit(self, client: client)
    }

    fileprivate func release(client: String) {
        let next: CheckedContinuation<Void, Error>? = lock.withLock {
            if let n = byClient[client] { byClient[client] = n > 1 ? n - 1 : nil }
            if waiters.isEmpty {
                running -= 1
                return nil
            }
            return waiters.removeFirst()
        }
        next?.resume()
    }

    var load: (running: Int, waiting: Int) { lock.withLock { (running, waiters.count) } }
    /// Clients holding requests now (the tests check that every permit came back).
    var clients: Int { lock.withLock { byClient.count } }

    /// The key a request is counted under: its peer's address without the port.
    static func client(of connection: any Channel) -> String {
        connection.remoteAddress?.ipAddress ?? "unknown"
    }

    /// Holds one slot until it is released or dropped.
    final class Permit: @unchecked Sendable {
        private var owner: Admission?
        private let client: String
        private let lock = NSLock()
        init(_ owner: Admission, client: String) {
            self.owner = owner
            self.client = client
        }
        func release() {
            let o: Admission? = lock.withLock { defer { owner = nil }; return owner }
            o?.release(client: client)
        }
        deinit { release() }
    }
}
