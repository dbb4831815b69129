// Perplexity of a model on a token stream, windowed as HF's and llama.cpp's evaluations are:
// the text is cut into non-overlapping windows of `window` tokens (a shorter tail is dropped),
// each window runs from an empty cache, and positions 1..<window are scored by the logits of the
// position before them. ppl = exp(mean negative log-likelihood).
import TurboMind

public struct PerplexityResult: Sendable, Equatable {
    public let windows: Int
    public let scoredTokens: Int
    public let meanNLL: Double
    public var perplexity: Double { exp(meanNLL) }
}

public enum PerplexityError: Error, CustomStringConvertible, Equatable {
    case textTooShort(tokens: Int, window: Int)

    public var description: String {
        switch self {
        case let .textTooShort(tokens, window):
            return "the text has \(tokens) tokens, fewer than one window of \(window)"
        }
    }
}

public enum Perplexity {
    /// `progress(done, total)` is called after each window.
    public static func evaluate<B: Backend>(model: LlamaModel<B>, tokens: [Int32], window: Int = 512,
                                            progress: (Int, Int) -> Void = { _, _ in }) throws -> PerplexityResult {
        let windows = tokens.count / window
        guard windows > 0, window >= 2 else { throw PerplexityError.textTooShort(tokens: tokens.count, window: window) }
        let cache = model.makeCache(capacity: window)
        let vocab = model.config.vocabSize
        var nll = 0.0
        for w in 0..<windows {
            let ids = Array(tokens[w * window..<(w + 1) * window])
            cache.truncate(to: 0)
            let logits = try model.forward(ids, cache: cache, logits: .all)
            for p in 0..<window - 1 {
                let row = logits[p * vocab..<(p + 1) * vocab]
                nll += logSumExp(row) - Double(row[row.startIndex + Int(ids[p + 1])])
            }
            progress(w + 1, windows)
        }
        let scored = windows * (window - 1)
        return PerplexityResult(windows: windows, scoredTokens: scored, meanNLL: nll / Double(scored))
    }

    static func logSumExp(_ row: ArraySlice<Float>) -> Double {
        let m = row.max()!
        var s = 0.0
        for v in row { s += Double(expf(v - m)) }
        return Double(m) + log(s)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
