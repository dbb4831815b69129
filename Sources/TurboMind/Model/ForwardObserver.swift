// A per-layer hook on the forward pass: it sees the input of every linear layer and each layer's K
// and V as they go into the cache — what calibration ([Q8] `lite calibrate`) and AWQ's activation
// statistics ([Q4] `lite auto_awq`) need. Absent (nil), the forward pass does no extra work; present,
// each observed tensor is downloaded from the backend once, so observing costs a copy per tensor.

/// Which tensor of a decoder layer is observed.
public enum ObservedTensor: String, Sendable, CaseIterable {
    /// The normalised hidden state entering the fused q/k/v projection: [rows][hidden].
    case qkvInput
    /// The attention output entering the output projection: [rows][heads × headDim].
    case oInput
    /// The normalised hidden state entering the fused gate/up projection: [rows][hidden].
    case gateUpInput
    /// silu(gate) · up entering the down projection: [rows][intermediate].
    case downInput
    /// Keys after the rotary embedding, as cached: [rows][kvHeads × headDim].
    case key
    /// Values, as cached: [rows][kvHeads × headDim].
    case value
}

public protocol ForwardObserver: AnyObject {
    /// `values` holds `rows` rows of `width` fp32 values of `tensor` in layer `layer`; the rows are the
    /// step's rows in plan order (`plan.sequences` says which sequence and position each is).
    func observe(layer: Int, tensor: ObservedTensor, rows: Int, width: Int, values: [Float], plan: BatchPlan)
}
