// GET /metrics: Prometheus text. Counters and latency histograms are updated as requests run;
// the engine's gauges (sequences, KV blocks) are read at scrape time, so they are never stale.
import Prometheus
import TurboMind

final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let requests: Counter
    private let failures: Counter
    private let promptTokens: Counter
    private let generatedTokens: Counter
    private let running: Gauge
    private let waiting: Gauge
    private let blocksUsed: Gauge
    private let blocksFree: Gauge
    private let admissionRunning: Gauge
    private let admissionWaiting: Gauge
    private let ttft: ValueHistogram
    private let itl: ValueHistogram
    private let duration: ValueHistogram

    init() {
        requests = registry.makeCounter(descriptor: Self.name("lmdeploy_requests_total", "Generation requests received (chat, completions, interactive)."))
        failures = registry.makeCounter(descriptor: Self.name("lmdeploy_request_errors_total", "Generation requests answered with an error or cancelled."))
        promptTokens = registry.makeCounter(descriptor: Self.name("lmdeploy_prompt_tokens_total", "Prompt tokens of finished requests."))
        generatedTokens = registry.makeCounter(descriptor: Self.name("lmdeploy_generation_tokens_total", "Tokens generated."))
        running = registry.makeGauge(descriptor: Self.name("lmdeploy_sequences_running", "Sequences the engine is computing."))
        waiting = registry.makeGauge(descriptor: Self.name("lmdeploy_sequences_waiting", "Sequences waiting for KV cache blocks."))
        blocksUsed = registry.makeGauge(descriptor: Self.name("lmdeploy_kv_blocks_used", "KV cache blocks in use (running sequences and cached sessions)."))
        blocksFree = registry.makeGauge(descriptor: Self.name("lmdeploy_kv_blocks_free", "KV cache blocks free."))
        admissionRunning = registry.makeGauge(descriptor: Self.name("lmdeploy_http_requests_running", "Generation requests admitted by the server."))
        admissionWaiting = registry.makeGauge(descriptor: Self.name("lmdeploy_http_requests_queued", "Generation requests waiting for a slot (--max-concurrent-requests)."))
        let latency: [Double] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60]
        ttft = registry.makeValueHistogram(descriptor: Self.name("lmdeploy_time_to_first_token_seconds", "Time from a request's arrival to its first token."), buckets: latency)
        itl = registry.makeValueHistogram(descriptor: Self.name("lmdeploy_inter_token_latency_seconds", "Time between consecutive tokens of a request."), buckets: latency)
        duration = registry.makeValueHistogram(descriptor: Self.name("lmdeploy_request_duration_seconds", "Time from a request's arrival to its last token."), buckets: latency)
    }

    private static func name(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func received() { requests.increment() }
    func failed() { failures.increment() }
    func firstToken(after seconds: Double) { ttft.record(seconds) }
    /// `tokens` arrived `seconds` after the previous update: each counts as one interval.
    func tokens(_ tokens: Int, after seconds: Double) {
        generatedTokens.increment(by: Int64(tokens))
        guard tokens > 0 else { return }
        for _ in 0..<tokens { itl.record(seconds / Double(tokens)) }
    }
    func firstTokens(_ tokens: Int) { generatedTokens.increment(by: Int64(tokens)) }
    func finished(promptTokens count: Int, seconds: Double) {
        promptTokens.increment(by: Int64(count))
        duration.record(seconds)
    }

    /// The text exposition, with the gauges read now.
    func render(engine: any InferenceEngine, admission: Admission) -> String {
        let s = engine.stats
        running.set(Double(s.active))
        waiting.set(Double(s.waiting))
        blocksUsed.set(Double(s.totalBlocks - s.freeBlocks))
        blocksFree.set(Double(s.freeBlocks))
        let load = admission.load
        admissionRunning.set(Double(load.running))
        admissionWaiting.set(Double(load.waiting))
        return registry.emitToString()
    }
}
