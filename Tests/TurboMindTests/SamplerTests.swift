// Sampling against the distributions it must draw from, computed independently here.
import Foundation
import Testing
@testable import TurboMind

@Suite struct SamplerTests {
    let logits: [Float] = [2.0, 1.0, 0.5, 3.0, -1.0, 0.0]

    func frequencies(_ params: SamplingParams, draws: Int = 40_000, context: [Int32] = []) -> [Double] {
        var sampler = Sampler(params: params)
        var counts = [Double](repeating: 0, count: logits.count)
        for _ in 0..<draws { counts[Int(sampler.sample(logits, context: context))] += 1 }
        return counts.map { $0 / Double(draws) }
    }

    func softmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let e = x.map { exp($0 - m) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }

    /// 40,000 draws: the standard error of a frequency is ≤ 0.0025, so 0.015 is 6σ.
    func expectClose(_ got: [Double], _ want: [Double], _ label: String) {
        for i in got.indices { #expect(abs(got[i] - want[i]) < 0.015, "\(label) token \(i): \(got[i]) vs \(want[i])") }
    }

    @Test func greedyPicksTheArgmax() {
        var s = Sampler(params: .greedy)
        #expect(s.sample(logits, context: []) == 3)
        var t0 = Sampler(params: SamplingParams(temperature: 0, topP: 0.5, topK: 10))
        #expect(t0.sample(logits, context: []) == 3)
    }

    @Test func temperatureScalesTheSoftmax() {
        let p = SamplingParams(temperature: 0.7, topP: 1, topK: 0, seed: 1)
        expectClose(frequencies(p), softmax(logits.map { Double($0) / 0.7 }), "T=0.7")
    }

    @Test func topKKeepsTheKBest() {
        let p = SamplingParams(temperature: 1, topP: 1, topK: 2, seed: 2)
        var want = [Double](repeating: 0, count: logits.count)
        let two = softmax([3.0, 2.0])
        want[3] = two[0]; want[0] = two[1]
        expectClose(frequencies(p), want, "top-k 2")
    }

    @Test func topPKeepsTheSmallestPrefixReachingP() {
        // Probabilities sorted: token 3, 0, 1, 2, 5, 4. With p = 0.85 the prefix {3, 0} has mass
        // below 0.85, {3, 0, 1} reaches it: those three remain, renormalised.
        let probs = softmax(logits.map(Double.init))
        #expect(probs[3] + probs[0] < 0.85 && probs[3] + probs[0] + probs[1] >= 0.85)
        let p = SamplingParams(temperature: 1, topP: 0.85, topK: 0, seed: 3)
        let kept = probs[3] + probs[0] + probs[1]
        var want = [Double](repeating: 0, count: logits.count)
        for i in [3, 0, 1] { want[i] = probs[i] / kept }
        expectClose(frequencies(p), want, "top-p 0.85")
    }

    @Test func repetitionPenaltyFollowsHF() {
        // HF's rule: a seen token's logit is divided by the penalty when positive, multiplied when negative.
        let p = SamplingParams(temperature: 1, topP: 1, topK: 0, repetitionPenalty: 2, seed: 4)
        var adjusted = logits.map(Double.init)
        adjusted[3] /= 2; adjusted[4] *= 2
        expectClose(frequencies(p, context: [3, 4, 3]), softmax(adjusted), "penalty 2")
        var g = Sampler(params: SamplingParams(temperature: 0, repetitionPenalty: 10))
        #expect(g.sample(logits, context: [3]) == 0, "greedy after penalising the argmax picks the runner-up")
    }

    @Test func seedMakesSamplingReproducible() {
        let p = SamplingParams(temperature: 1, topP: 0.9, topK: 5, seed: 1234)
        var a = Sampler(params: p), b = Sampler(params: p)
        let xs = (0..<200).map { _ in a.sample(logits, context: []) }
        let ys = (0..<200).map { _ in b.sample(logits, context: []) }
        #expect(xs == ys)
        var c = Sampler(params: SamplingParams(temperature: 1, topP: 0.9, topK: 5, seed: 999))
        #expect((0..<200).map { _ in c.sample(logits, context: []) } != xs)
    }
}
