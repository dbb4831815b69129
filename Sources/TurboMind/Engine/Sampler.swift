// Turns logits into the next token: repetition penalty, temperature, top-k, top-p, then a draw
// from a seeded generator (or argmax when greedy). The order follows HF's logits processors and
// lmdeploy's sampling layer.

/// Per-request sampling parameters. lmdeploy's chat defaults: top_p 0.8, top_k 40, temperature 0.8.
public struct SamplingParams: Sendable, Equatable {
    /// 0 means greedy.
    public var temperature: Float
    /// Keep the smallest set of tokens whose probability reaches top_p (1 = off).
    public var topP: Float
    /// Keep the k most likely tokens (0 = off; 1 = greedy).
    public var topK: Int
    /// > 1 discourages tokens already in the context (HF's CTRL-style penalty; 1 = off).
    public var repetitionPenalty: Float
    /// OpenAI's additive penalties over the tokens generated so far: every generated token's logit
    /// loses `presencePenalty` once and `frequencyPenalty` per occurrence (0 = off; in [-2, 2]).
    public var presencePenalty: Float
    public var frequencyPenalty: Float
    /// Seed of the random generator; nil draws one from the system.
    public var seed: UInt64?

    public init(temperature: Float = 0.8, topP: Float = 0.8, topK: Int = 40, repetitionPenalty: Float = 1.0,
                presencePenalty: Float = 0, frequencyPenalty: Float = 0, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
    }

    public static let greedy = SamplingParams(temperature: 0, topP: 1, topK: 1)

    public var isGreedy: Bool { temperature <= 0 || topK == 1 }
}

/// xoshiro256** seeded through SplitMix64: fast, good quality, reproducible across platforms.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var z = seed
        func splitmix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var r = z
            r = (r ^ (r >> 30)) &* 0xBF58_476D_1CE4_E5B9
            r = (r ^ (r >> 27)) &* 0x94D0_49BB_1331_11EB
            return r ^ (r >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }
}

public struct Sampler: Sendable {
    public let params: SamplingParams
    private var rng: SeededGenerator

    public init(params: SamplingParams) {
        self.params = params
        rng = SeededGenerator(seed: params.seed ?? UInt64.random(in: .min ... .max))
    }

    /// Picks the next token. `context` holds the tokens the repetition penalty applies to;
    /// `generated` (its tail of generated tokens) those the presence and frequency penalties apply to.
    public mutating func sample(_ logits: [Float], context: [Int32], generated: ArraySlice<Int32> = []) -> Int32 {
        var logits = logits
        if params.repetitionPenalty != 1 {
            for id in Set(context) where Int(id) < logits.count {
                let l = logits[Int(id)]
                logits[Int(id)] = l > 0 ? l / params.repetitionPenalty : l * params.repetitionPenalty
            }
        }
        if params.presencePenalty != 0 || params.frequencyPenalty != 0 {
            var counts: [Int32: Int] = [:]
            for id in generated { counts[id, default: 0] += 1 }
            for (id, n) in counts where Int(id) < logits.count && id >= 0 {
                logits[Int(id)] -= params.presencePenalty + params.frequencyPenalty * Float(n)
            }
        }
        if params.isGreedy { return Int32(Sampler.argmax(logits)) }

        // Candidates sorted by logit, cut by top-k.
        var order = Array(0..<logits.count)
        let k = params.topK > 0 ? min(params.topK, logits.count) : logits.count
        if k < logits.count {
            order = Array(Sampler.topIndices(logits, k))
        } else {
            order.sort { logits[$0] > logits[$1] }
        }
        // Softmax at temperature over the candidates (order[0] holds the max).
        let maxLogit = logits[order[0]]
        var probs = order.map { expf((logits[$0] - maxLogit) / params.temperature) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        // Top-p: keep the smallest prefix whose mass reaches top_p (always at least one token).
        var keep = probs.count
        if params.topP < 1 {
            var cumulative: Float = 0
            for i in probs.indices {
                cumulative += probs[i]
                if cumulative >= params.topP { keep = i + 1; break }
            }
        }
        let mass = probs[0..<keep].reduce(0, +)
        var r = uniform() * mass
        for i in 0..<keep {
            r -= probs[i]
            if r < 0 { return Int32(order[i]) }
        }
        return Int32(order[keep - 1])
    }

    /// The draw of one non-greedy sample (a device sampler takes it from here, so the generator
    /// advances exactly as when the host samples).
    public mutating func uniform() -> Float { Float.random(in: 0..<1, using: &rng) }

    /// Index of the largest value (the first one on ties, as torch.argmax on CPU).
    public static func argmax(_ x: [Float]) -> Int {
        var best = 0
        for i in 1..<x.count where x[i] > x[best] { best = i }
        return best
    }

    /// Indices of the k largest values, largest first (ties keep the lower index first).
    static func topIndices(_ x: [Float], _ k: Int) -> [Int] {
        var top: [Int] = []
        top.reserveCapacity(k + 1)
        for i in x.indices {
            if top.count == k, x[i] <= x[top[k - 1]] { continue }
            var pos = top.count
            while pos > 0, x[top[pos - 1]] < x[i] { pos -= 1 }
            top.insert(i, at: pos)
            if top.count > k { top.removeLast() }
        }
        return top
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
