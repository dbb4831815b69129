// The CPU forward pass on the real SmolLM2 against HF transformers (fp32) golden outputs:
// last-position logits, top-10 sets, greedy continuations, and perplexity on GPL-3.
import Foundation
import Testing
@testable import TurboMind

/// One loaded model shared by the tests of this file (loading mmaps 270 MB; do it once).
final class SmolLM2: @unchecked Sendable {
    static let shared: Result<SmolLM2, Error> = Result { try SmolLM2() }
    let model: LlamaModel<CPUBackend>
    let lock = NSLock()

    init() throws {
        let dir = try TestPaths.smolLM2()
        let config = try ModelConfig.load(directory: dir)
        let weights = try ModelWeights.load(directory: dir, config: config)
        model = try LlamaModel(backend: CPUBackend(), config: config, weights: weights)
    }

    /// Serialises use: the model's scratch buffers serve one forward at a time.
    func with<T>(_ body: (LlamaModel<CPUBackend>) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(model)
    }
}

struct GoldenCase {
    let name: String
    let ids: [Int32]
    let top10: [Int]
    let greedy: [Int32]
}

func goldenCases() throws -> [GoldenCase] {
    let g = try TestPaths.golden()
    var cases: [GoldenCase] = []
    for (kind, key) in [("prompt", "prompts"), ("chat", "chats")] {
        for (i, c) in (g[key] as! [[String: Any]]).enumerated() {
            let top = (c["top10_ids"] as! [[Int]]).last!
            cases.append(GoldenCase(name: "\(kind)\(i)", ids: (c["ids"] as! [Int]).map(Int32.init), top10: top,
                                    greedy: (c["greedy_ids"] as! [Int]).map(Int32.init)))
        }
    }
    return cases
}

@Suite(.serialized) struct GoldenForwardTests {
    @Test func lastPositionLogitsMatchHF() throws {
        let smol = try SmolLM2.shared.get()
        let golden = try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent("golden-logits.safetensors"))
        for c in try goldenCases() {
            let logits = try smol.with { m in try m.forward(c.ids, cache: m.makeCache(capacity: 256), logits: .last) }
            let ref = try golden.tensor("\(c.name).last").toFloatArray()
            #expect(logits.count == ref.count)
            // 2e-2 absolute (the bar): bf16 weights widened exactly, fp32 math in a
            // different summation order than PyTorch gives ~1e-3 here.
            let maxDiff = zip(logits, ref).map { abs($0 - $1) }.max()!
            #expect(maxDiff < 2e-2, "\(c.name): max |logit − HF| = \(maxDiff)")
            let top = Set(Sampler.topIndices(logits, 10))
            #expect(top == Set(c.top10), "\(c.name): top-10 ids differ")
        }
    }

    /// Greedy decoding against HF's generate() and against exact math. For two chats HF's tokens
    /// are not the argmax of the model (Tests/Reference/llama_reference.py, float64 numpy, puts
    /// HF's pick 0.46 logits below the top at token 5 of chat1), so the hard bar is the float64
    /// reference's greedy sequence; the HF match is asserted wherever the reference agrees with HF.
    @Test func greedyContinuationMatchesReference() throws {
        let smol = try SmolLM2.shared.get()
        let data = try Data(contentsOf: TestPaths.fixtures.appendingPathComponent("reference-f64.json"))
        let reference = try JSONSerialization.jsonObject(with: data) as! [String: [String: Any]]
        for c in try goldenCases() {
            let exact = (reference[c.name]!["greedy_ids"] as! [Int]).map(Int32.init)
            let out = try smol.with { m -> [Int32] in
                let session = Session(model: m, sessionLength: 256)
                return try session.generate(prompt: c.ids, config: GenerationConfig(
                    maxNewTokens: c.greedy.count, sampling: .greedy, ignoreEOS: true)).tokens
            }
            let matchingHF = zip(out, c.greedy).prefix { $0 == $1 }.count
            let referenceMatchingHF = zip(exact, c.greedy).prefix { $0 == $1 }.count
            print("golden greedy \(c.name): \(matchingHF)/\(c.greedy.count) tokens match HF (float64 reference: \(referenceMatchingHF))")
            #expect(out == exact, "\(c.name): greedy continuation differs from the float64 reference")
            #expect(matchingHF >= min(16, referenceMatchingHF), "\(c.name): only the first \(matchingHF) greedy tokens match HF")
        }
    }
}
