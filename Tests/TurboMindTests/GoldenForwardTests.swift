// The CPU forward pass on the real SmolLM2 against HF transformers (fp32) golden outputs:
// last-position logits, top-10 sets, greedy continuations, and perplexity on GPL-3.
import Foundation
import Testing
@testable import TurboMind

/// One loaded model shared by the tests (loading mmaps 270 MB; do it once). Its weights are
/// read-only: every test runs its own engines on it.
final class SmolLM2: @unchecked Sendable {
    static let shared: Result<SmolLM2, Error> = Result { try SmolLM2() }
    /// The same weights computed with bf16 prefill inputs (`--dtype bfloat16`).
    static let bf16: Result<SmolLM2, Error> = Result { try SmolLM2(dtype: .bfloat16) }
    /// The same weights with the LM head quantized to int8 rows at load (`--lm-head-dtype int8`).
    static let int8Head: Result<SmolLM2, Error> = Result { try SmolLM2(lmHead: .int8) }
    let model: LlamaModel<CPUBackend>

    init(dtype: ComputeDType = .auto, lmHead: LMHeadDType = .auto) throws {
        let dir = try TestPaths.smolLM2()
        let config = try ModelConfig.load(directory: dir)
        let weights = try ModelWeights.load(directory: dir, config: config)
        model = try LlamaModel(backend: CPUBackend(dtype: dtype), config: config, weights: weights, lmHead: lmHead)
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
    /// Last-position logits against HF, with the fp32 KV cache and with the default fp16 one.
    @Test(arguments: [KVCacheType.f32, .f16])
    func lastPositionLogitsMatchHF(kv: KVCacheType) async throws {
        let smol = try SmolLM2.shared.get()
        let engine = try testEngine(smol.model, kv: kv)
        defer { engine.shutdown() }
        let golden = try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent("golden-logits.safetensors"))
        for c in try goldenCases() {
            let logits = try await engine.lastLogits(c.ids)
            let ref = try golden.tensor("\(c.name).last").toFloatArray()
            #expect(logits.count == ref.count)
            // 2e-2 absolute (the bar): bf16 weights widened exactly, fp32 math in a
            // different summation order than PyTorch gives ~1e-3 here. fp16 K/V round each cached
            // element to 11 bits (relative 2^-12 ≈ 2.4e-4); through 30 layers that moves logits of
            // magnitude ~20 by a few 1e-3 (measured max 1.3e-2 over these prompts), inside the same bar.
            let maxDiff = zip(logits, ref).map { abs($0 - $1) }.max()!
            #expect(maxDiff < 2e-2, "\(c.name) \(kv) KV: max |logit − HF| = \(maxDiff)")
            let top = Set(Sampler.topIndices(logits, 10))
            #expect(top == Set(c.top10), "\(c.name): top-10 ids differ")
        }
    }

    /// Greedy decoding against HF's generate() and against exact math. For two chats HF's tokens
    /// are not the argmax of the model (Tests/Reference/llama_reference.py, float64 numpy, puts
    /// HF's pick 0.46 logits below the top at token 5 of chat1), so the hard bar is the float64
    /// reference's greedy sequence — up to its first near-tie (top-2 margin < 0.05), where an
    /// fp16-rounded cache may legitimately pick the other token; the HF match is asserted
    /// wherever the reference agrees with HF.
    @Test(arguments: [KVCacheType.f32, .f16])
    func greedyContinuationMatchesReference(kv: KVCacheType) async throws {
        let smol = try SmolLM2.shared.get()
        let engine = try testEngine(smol.model, kv: kv)
        defer { engine.shutdown() }
        let data = try Data(contentsOf: TestPaths.fixtures.appendingPathComponent("reference-f64.json"))
        let reference = try JSONSerialization.jsonObject(with: data) as! [String: [String: Any]]
        for c in try goldenCases() {
            let exact = (reference[c.name]!["greedy_ids"] as! [Int]).map(Int32.init)
            let margins = reference[c.name]!["top2_margins"] as! [Double]
            let decisive = margins.firstIndex { $0 < 0.05 } ?? exact.count
            let out = try await engine.greedyTokens(c.ids, c.greedy.count)
            let matchingHF = zip(out, c.greedy).prefix { $0 == $1 }.count
            let matchingExact = zip(out, exact).prefix { $0 == $1 }.count
            let referenceMatchingHF = zip(exact, c.greedy).prefix { $0 == $1 }.count
            print("golden greedy \(c.name) \(kv) KV: \(matchingExact)/\(exact.count) match the float64 reference (first near-tie at \(decisive)), \(matchingHF)/\(c.greedy.count) match HF (reference: \(referenceMatchingHF))")
            #expect(matchingExact >= min(decisive, exact.count), "\(c.name): greedy continuation differs from the float64 reference before its first near-tie")
            #expect(matchingHF >= min(16, referenceMatchingHF, decisive), "\(c.name): only the first \(matchingHF) greedy tokens match HF")
        }
    }

    /// The last-position logits of every golden case on `model` beside HF's fp32 ones (`check` sees
    /// each pair); returns the largest |Δlogit|.
    func deviationFromHF(_ model: LlamaModel<CPUBackend>, kv: KVCacheType,
                         _ check: (GoldenCase, _ ours: [Float], _ hf: [Float]) -> Void) async throws -> Float {
        let engine = try testEngine(model, kv: kv)
        defer { engine.shutdown() }
        let golden = try SafetensorsFile(url: TestPaths.fixtures.appendingPathComponent("golden-logits.safetensors"))
        var worst: Float = 0
        for c in try goldenCases() {
            let logits = try await engine.lastLogits(c.ids)
            let ref = try golden.tensor("\(c.name).last").toFloatArray()
            worst = max(worst, zip(logits, ref).map { abs($0 - $1) }.max()!)
            check(c, logits, ref)
        }
        return worst
    }

    /// `--dtype bfloat16`: every prefill product against bf16 weights takes bf16-rounded inputs (2⁻⁹
    /// relative each). Against HF's fp32 logits that moves the last position by up to 0.23 (measured on
    /// SmolLM2 on Zen 4, vdpbf16ps; the bar is about twice that); the argmax and the top-10 set stay HF's.
    @Test func bf16PrefillStaysCloseToHF() async throws {
        let worst = try await deviationFromHF(try SmolLM2.bf16.get().model, kv: .f16) { c, logits, ref in
            #expect(Sampler.argmax(logits) == Sampler.argmax(ref), "\(c.name): bf16 prefill changes the argmax")
            #expect(Set(Sampler.topIndices(logits, 10)) == Set(c.top10), "\(c.name): top-10 ids differ")
        }
        print("bf16 prefill vs HF fp32: max |Δlogit| = \(worst)")
        #expect(worst < 0.5 && worst > 0, "max |Δlogit| \(worst)")
    }

    /// `--lm-head-dtype int8`: each vocabulary row rounded to 127 steps of its largest weight. Against
    /// HF's fp32 logits the last position moves by up to 0.59 (measured; the bar is about twice that):
    /// the argmax stays HF's and HF's top 5 stay in the top 10 (the 10th place is a near-tie in two
    /// prompts and swaps). GPL-3 perplexity moves by +0.06% (docs/w4a16.md).
    @Test func int8HeadStaysCloseToHF() async throws {
        let worst = try await deviationFromHF(try SmolLM2.int8Head.get().model, kv: .f32) { c, logits, ref in
            #expect(Sampler.argmax(logits) == Sampler.argmax(ref), "\(c.name): the int8 head changes the argmax")
            #expect(Set(Sampler.topIndices(ref, 5)).isSubset(of: Set(Sampler.topIndices(logits, 10))), "\(c.name): HF's top 5 left the top 10")
        }
        print("int8 LM head vs HF fp32: max |Δlogit| = \(worst)")
        #expect(worst < 1.2 && worst > 0, "max |Δlogit| \(worst)")
    }

    /// fp16 KV against fp32 KV on the same prompts: the cache's rounding is all that differs.
    @Test func fp16CacheStaysCloseToFP32() async throws {
        let smol = try SmolLM2.shared.get()
        let f32 = try testEngine(smol.model, kv: .f32), f16 = try testEngine(smol.model, kv: .f16)
        defer { f32.shutdown(); f16.shutdown() }
        #expect(f16.kvBytesPerToken * 2 == f32.kvBytesPerToken)
        var worst: Float = 0
        for c in try goldenCases() {
            let a = try await f32.lastLogits(c.ids), b = try await f16.lastLogits(c.ids)
            worst = max(worst, zip(a, b).map { abs($0 - $1) }.max()!)
            #expect(Sampler.argmax(a) == Sampler.argmax(b), "\(c.name): fp16 KV changes the argmax")
        }
        print("fp16 vs fp32 KV: max |Δlogit| = \(worst)")
        // See lastPositionLogitsMatchHF for the size of fp16 rounding through 30 layers.
        #expect(worst < 2e-2 && worst > 0, "max |Δlogit| \(worst): fp16 rounding must show, and stay small")
    }
}
