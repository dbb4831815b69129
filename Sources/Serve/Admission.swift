// How many generation requests run at once (--max-concurrent-requests) and how many may wait
// (--max-queued-requests); a request beyond both is refused with 429 and Retry-After at once,
// rather than piling up on a server that cannot serve it soon.
import Foundation

final class Admission: @unchecked Sendable {
    private let lock = NSLock()
    private let limit: Int
    private let queueDepth: Int
    private var running = 0
    private var waiters: [CheckedContinuation<Void, Error>] = []

    init(limit: Int, queueDepth: Int) {
        self.limit = max(1, limit)
        self.queueDepth = max(0, queueDepth)
    }

    /// A slot, released when the permit is dropped; throws 429 when the queue is full too.
    func acquire() async throws -> Permit {
        // Deciding and queueing under one lock: a release between them would lose the wake-up.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            lock.withLock {
                if running < limit {
                    running += 1
                    continuation.resume()
                } else if waiters.count < queueDepth {
                    waiters.append(continuation)   // `release` hands its slot over
                } else {
                    continuation.resume(throwing: APIError.overloaded(retryAfter: 1, message: "the server is busy: \(limit) requests are running and \(queueDepth) are waiting (--max-concurrent-requests, --max-queued-requests); retry later"))
                }
            }
        }
        return Permit(self)
    }

    fileprivate func release() {
        let next: CheckedContinuation<Void, Error>? = lock.withLock {
            if waiters.isEmpty {
                running -= 1
                return nil
            }
            return waiters.removeFirst()
        }
        next?.resume()
    }

    var load: (running: Int, waiting: Int) { lock.withLock { (running, waiters.count) } }

    /// Holds one slot until it is released or dropped.
    final class Permit: @unchecked Sendable {
        private var owner: Admission?
        private let lock = NSLock()
        init(_ owner: Admission) { self.owner = owner }
        func release() {
            let o: Admission? = lock.withLock { defer { owner = nil }; return owner }
            o?.release()
        }
        deinit { release() }
    }
}
