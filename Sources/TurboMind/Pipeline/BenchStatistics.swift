// Figures of the benchmarks: the deterministic prompts they run, percentiles, and JSON lines.
import Foundation

/// Deterministic, tokenizer-independent prompts: ids spread over the vocabulary.
public enum BenchPrompts {
    public static func tokens(count: Int, seed: Int, vocab: Int) -> [Int32] {
        (0..<count).map { Int32((($0 + 1) * 7919 + seed * 104_729 + 13) % vocab) }
    }
}

public enum BenchStatistics {
    /// The middle value (the upper one of an even count); 0 when empty.
    public static func median(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.sorted()[xs.count / 2] }

    /// Nearest-rank percentile of sorted values (0 when empty).
    public static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// One JSON object on one line, keys sorted, so runs can be compared with `jq`/`diff`.
    public static func jsonLine(_ object: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
