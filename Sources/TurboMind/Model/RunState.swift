// The forward pass's scratch (llama2.c's RunState), apart from the weights: allocated once per
// engine and sized by its batch limits, never per token, so one model's read-only weights can
// serve several engines, each with a run state of its own.

public final class RunState<B: Backend>: @unchecked Sendable {
    /// Rows (tokens of all sequences) one step may hold, and rows whose logits one step may return.
    public let maxRows: Int
    public let maxLogitRows: Int

    let x, normed, proj: B.Buffer        // [rows][hidden]: residual stream, norm output, projection output
    let qkv: B.Buffer                    // [rows][(heads + 2 kvHeads) headDim]
    let attn: B.Buffer                   // [rows][heads headDim]
    let gateUp: B.Buffer                 // [rows][2 inter]
    let act: B.Buffer                    // [rows][inter]
    let lastRows: B.Buffer               // [logit rows][hidden]
    let logits: B.Buffer                 // [logit rows][vocab]

    init(backend: B, config: ModelConfig, maxRows: Int, maxLogitRows: Int) throws {
        precondition(maxRows >= 1 && maxLogitRows >= 1)
        self.maxRows = maxRows
        self.maxLogitRows = maxLogitRows
        let hidden = config.hiddenSize
        x = try backend.allocate(.f32, count: maxRows * hidden)
        normed = try backend.allocate(.f32, count: maxRows * hidden)
        proj = try backend.allocate(.f32, count: maxRows * hidden)
        qkv = try backend.allocate(.f32, count: maxRows * (config.qDim + 2 * config.kvDim))
        attn = try backend.allocate(.f32, count: maxRows * config.qDim)
        gateUp = try backend.allocate(.f32, count: maxRows * 2 * config.intermediateSize)
        act = try backend.allocate(.f32, count: maxRows * config.intermediateSize)
        lastRows = try backend.allocate(.f32, count: maxLogitRows * hidden)
        logits = try backend.allocate(.f32, count: maxLogitRows * config.vocabSize)
    }
}
