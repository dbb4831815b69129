// How the LM head is stored for the engine (`--lm-head-dtype`). The head reads hidden × vocab weights
// every token: 28 M of SmolLM2's 135 M parameters, 65 M of a 1.1B Llama's. With W4A16 layers it is
// the largest matrix left in 16 bits (lmdeploy and AutoAWQ keep it there; llama.cpp's Q4 files store
// it in 6 or 8 bits). `int8` quantizes it at load, symmetric per row, for half its bytes per token.

public enum LMHeadDType: String, Sendable, Equatable, CaseIterable {
    /// As the model stores it (bf16, fp16 or fp32).
    case auto
    /// int8 codes with one fp32 scale per vocabulary row, made at load (CPU).
    case int8
}
