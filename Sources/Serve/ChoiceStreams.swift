// The engine streams of one HTTP request (one per choice: `n`, or prompts × n), merged into one
// sequence of (choice, update), timed for the metrics, and cancelled together.
import Foundation
import TurboMind

/// One engine request to make for a choice.
struct ChoiceJob: Sendable {
    var session: UInt64
    var input: GenerationInput
    var config: GenerationConfig
    var interactive = false
}

final class ChoiceStreams: Sendable {
    let ids: [RequestID]
    let updates: AsyncThrowingStream<(Int, GenerationOutput), Error>
    private let engine: any InferenceEngine

    /// `queueTimeout`: how long each choice may wait for the engine to start it (then 503).
    init(engine: any InferenceEngine, jobs: [ChoiceJob], metrics: ServerMetrics, started: ContinuousClock.Instant, queueTimeout: Duration?) {
        self.engine = engine
        let streams = jobs.map { job in
            var config = job.config
            config.queueTimeout = queueTimeout
            return engine.generate(session: job.session, input: job.input, config: config, interactive: job.interactive)
        }
        let ids = streams.map(\.id)
        self.ids = ids
        let (updates, continuation) = AsyncThrowingStream<(Int, GenerationOutput), Error>.makeStream()
        self.updates = updates
        let task = Task {
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, stream) in streams.enumerated() {
                        group.addTask {
                            var last: ContinuousClock.Instant?
                            for try await out in stream {
                                let now = ContinuousClock.now
                                if let last {
                                    metrics.tokens(out.tokens.count, after: Self.seconds(now - last))
                                } else if !out.tokens.isEmpty || out.finishReason != nil {
                                    metrics.firstToken(after: Self.seconds(now - started))
                                    metrics.firstTokens(out.tokens.count)
                                }
                                if !out.tokens.isEmpty { last = now }
                                if out.finishReason != nil {
                                    metrics.finished(promptTokens: out.inputTokens, seconds: Self.seconds(now - started))
                                }
                                continuation.yield((index, out))
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                continuation.finish()
            } catch {
                for id in ids { engine.cancel(request: id) }
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { reason in
            task.cancel()
            if case .cancelled = reason { for id in ids { engine.cancel(request: id) } }
        }
    }

    /// Stops every choice (a client went away); their streams end with `cancelled`.
    func cancel() {
        for id in ids { engine.cancel(request: id) }
    }

    private static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

extension FinishReason {
    /// The reason in OpenAI's vocabulary.
    var openAI: String {
        switch self {
        case .stop: return "stop"
        case .length, .sessionFull: return "length"
        case .cancelled: return "abort"
        }
    }
}
