// The CPU backend behind the Backend protocol: fused linears against their parts, the KV cache's
// element types and budget, and the plan's validation.
import Foundation
import Testing
@testable import TurboMind

@Suite struct BackendTests {
    /// q|k|v (and gate|up) fused into one matrix compute exactly the separate products: the decode
    /// kernel's reduction order depends only on k, so the bits are equal; BLAS prefill is compared too.
    @Test(arguments: [DType.bf16, .f16, .f32])
    func fusedLinearEqualsItsParts(dtype: DType) throws {
        let backend = CPUBackend(threads: 2)
        var r = SystemRandomNumberGenerator()
        let k = 67
        let parts = [40, 9, 9].enumerated().map { i, n in
            TensorView(name: "p\(i)", shape: [n, k], values: (0..<n * k).map { _ in Float.random(in: -1...1, using: &r) }, dtype: dtype)
        }
        let fused = try backend.prepare(linear: .dense(parts))
        let separate = try parts.map { try backend.prepare(linear: .dense([$0])) }
        for (rows, mode) in [(1, LinearMode.decode), (5, .decode), (24, .prefill)] {
            let x = try backend.upload((0..<rows * k).map { _ in Float.random(in: -1...1, using: &r) })
            let out = try backend.allocate(.f32, count: rows * 58)
            try backend.linear(x, rows: rows, weight: fused, bias: nil, out: out, mode: mode)
            let all = try backend.download(out, count: rows * 58)
            var column = 0
            for (p, w) in zip(parts, separate) {
                let n = p.shape[0]
                let o = try backend.allocate(.f32, count: rows * n)
                try backend.linear(x, rows: rows, weight: w, bias: nil, out: o, mode: mode)
                let got = try backend.download(o, count: rows * n)
                for row in 0..<rows {
                    let a = Array(all[row * 58 + column..<row * 58 + column + n]), b = Array(got[row * n..<(row + 1) * n])
                    if mode == .decode {
                        #expect(a == b, "\(dtype) rows \(rows) part \(p.name): fused decode differs")
                    } else {
                        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "\(dtype) prefill part \(p.name)")
                    }
                }
                column += n
            }
        }
    }

    @Test func cacheTypesAndBudget() throws {
        let backend = CPUBackend(threads: 1)
        let f16 = KVCacheLayout(layers: 30, kvHeads: 3, headDim: 64, blockSize: 64, blockCount: 4, type: .f16)
        var f32 = f16
        f32.type = .f32
        #expect(f16.bytesPerToken == 30 * 2 * 192 * 2 && f32.bytesPerToken == 2 * f16.bytesPerToken)
        _ = try backend.makeKVCache(f16)
        var int8 = f16
        int8.type = .int8
        #expect(throws: BackendError.self) { try backend.makeKVCache(int8) }
        var huge = f16
        huge.blockCount = 1 << 40
        #expect(throws: BackendError.self) { try backend.makeKVCache(huge) }

        // A budget of full sessions larger than memory is clamped, and says so.
        let memory = MemoryInfo(free: 1 << 30, total: 1 << 31)
        let config = EngineConfig(sessionLen: 4096, cacheMaxEntryCount: 100_000)
        let budget = try config.blockBudget(bytesPerBlock: f16.bytesPerBlock, memory: memory)
        #expect(budget.blocks == Int(Double(1 << 30) * 0.9) / f16.bytesPerBlock)
        #expect(budget.notices.count == 1 && budget.notices[0].contains("clamped"))
        let fraction = try EngineConfig(cacheMaxEntryCount: 0.5).blockBudget(bytesPerBlock: f16.bytesPerBlock, memory: memory)
        #expect(fraction.blocks == (1 << 29) / f16.bytesPerBlock && fraction.notices.isEmpty)
        #expect(throws: EngineError.self) { try EngineConfig(cacheMaxEntryCount: .infinity).validate() }
        #expect(throws: EngineError.self) { try EngineConfig(cacheMaxEntryCount: 1e-12).blockBudget(bytesPerBlock: 1 << 20, memory: memory) }
    }

    @Test func quantPolicyIsRefusedUntilItExists() throws {
        #expect(try EngineConfig.kvCacheType(quantPolicy: 0) == .f16)
        #expect(try EngineConfig.kvCacheType(quantPolicy: 4) == .int8)   // [Q8]: needs lite kv_qparams' parameters
        #expect {
            try EngineConfig.kvCacheType(quantPolicy: 8)
        } throws: { "\($0)".contains("quant_policy 8") && "\($0)".contains("not supported") }
        #expect(throws: EngineError.self) { try EngineConfig.kvCacheType(quantPolicy: 3) }
    }

    @Test func planValidatesItsItems() throws {
        let items = [ForwardItem(tokens: [1, 2, 3], start: 62, blocks: [5, 2], logits: .last),
                     ForwardItem(tokens: [7], start: 0, blocks: [1], logits: .all)]
        let plan = try BatchPlan(items: items, blockSize: 64, blockCount: 8, vocab: 100, baseFrequencies: [1, 0.5])
        #expect(plan.positions == [62, 63, 64, 0])
        let slots: [Int32] = [5 * 64 + 62, 5 * 64 + 63, 2 * 64, 64]
        #expect(plan.slots == slots)
        #expect(plan.logitRows == [2, 3] && plan.logitCounts == [1, 1])
        #expect(plan.mode == .prefill && plan.logitsMode == .prefill)
        #expect(throws: EngineError.tokenOutOfRange(id: 100, vocab: 100)) {
            try BatchPlan(items: [ForwardItem(tokens: [100], start: 0, blocks: [0], logits: .last)], blockSize: 64, blockCount: 8, vocab: 100, baseFrequencies: [1])
        }
        #expect(throws: EngineError.self) {   // table too short for position 64
            try BatchPlan(items: [ForwardItem(tokens: [1], start: 64, blocks: [0], logits: .last)], blockSize: 64, blockCount: 8, vocab: 100, baseFrequencies: [1])
        }
        #expect(throws: EngineError.self) {   // block outside the cache
            try BatchPlan(items: [ForwardItem(tokens: [1], start: 0, blocks: [8], logits: .last)], blockSize: 64, blockCount: 8, vocab: 100, baseFrequencies: [1])
        }
    }
}
