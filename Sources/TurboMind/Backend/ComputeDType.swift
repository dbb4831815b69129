// The precision the linear layers multiply in (`--dtype`, lmdeploy's flag). The CPU keeps fp32
// activations by default: results stay within 2e-2 of HF's fp32 logits. `bfloat16` rounds the inputs of
// prefill products against bf16 weights to bf16, as llama.cpp, vLLM and lmdeploy compute a bf16 model,
// which lets AVX-512 BF16 CPUs (Zen 4, Sapphire Rapids) multiply with vdpbf16ps at about twice the rate.
// Decode products keep fp32 inputs: they are bound by reading the weights, not by the arithmetic.
// `float16` is what the CUDA backend computes (fp16 products, fp32 sums); lmdeploy's scripts pass it.

public enum ComputeDType: String, Sendable, Equatable, CaseIterable {
    case auto, float32, float16, bfloat16

    /// Whether the CPU backend's prefill products round their inputs to bf16.
    var cpuBF16Inputs: Bool { self == .bfloat16 }

    /// The CPU computes fp32 or bf16-input products; fp16 inputs have no fast path there.
    func checkCPU() throws {
        if self == .float16 {
            throw EngineError.invalidConfig("--dtype float16 applies to CUDA (fp16 products with fp32 sums); on the CPU use auto or float32 (fp32), or bfloat16 (bf16 prompt products, faster on AVX-512 BF16 CPUs)")
        }
    }

    /// The CUDA backend multiplies fp16 with fp32 sums whatever the model's dtype.
    func checkCUDA() throws {
        if self == .float32 || self == .bfloat16 {
            throw EngineError.invalidConfig("--dtype \(rawValue) applies to the CPU backend; on CUDA the linear layers multiply fp16 with fp32 sums: use --dtype auto or float16, or add --device cpu")
        }
    }
}
