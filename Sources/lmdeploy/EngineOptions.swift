// Engine flags shared by chat, bench and (later) serve, with lmdeploy's names and spellings. A flag
// left out takes the workspace's config.ini value, else the default shown in --help
// (EngineSettings resolves them).
import ArgumentParser
import TurboMind

struct EngineOptions: ParsableArguments {
    @Option(name: [.customLong("session-len"), .customLong("session_len")], parsing: .unconditional,
            help: "Maximum tokens of one conversation (prompt and replies). Default: config.ini's, else 4096 (at most the model's context).")
    var sessionLen: Int?

    @Option(name: [.customLong("max-batch-size"), .customLong("max_batch_size")], parsing: .unconditional,
            help: "Most sequences decoded together in one step. Default: config.ini's, else 64.")
    var maxBatchSize: Int?

    @Option(name: [.customLong("max-prefill-token-num"), .customLong("max_prefill_token_num")], parsing: .unconditional,
            help: "Prompt tokens computed per step at most; longer prompts are split across steps. Default: 512 on the CPU, 8192 on CUDA (lmdeploy's).")
    var maxPrefillTokenNum: Int?

    @Option(name: [.customLong("cache-max-entry-count"), .customLong("cache_max_entry_count")], parsing: .unconditional,
            help: "KV cache budget: a fraction in (0,1) of the free memory, or ≥ 1 for that many sequences of --session-len (clamped to what memory holds). Default: config.ini's, else 0.5.")
    var cacheMaxEntryCount: Double?

    @Option(name: [.customLong("cache-block-seq-len"), .customLong("cache_block_seq_len")], parsing: .unconditional,
            help: "Tokens per KV cache block. Default: 64.")
    var cacheBlockSeqLen: Int?

    @Option(name: [.customLong("quant-policy"), .customLong("quant_policy")], parsing: .unconditional,
            help: "KV cache quantization: 0 = fp16 KV cache, 4 = int8 KV cache (parameters from `lmdeploy lite kv_qparams`; 8 = int4 is not supported yet). Default: config.ini's, else 0.")
    var quantPolicy: Int?

    @Option(name: [.customLong("kv-params"), .customLong("kv_params")], parsing: .unconditional,
            help: "Folder of the int8 KV parameters (the --turbomind_dir of `lmdeploy lite kv_qparams`). Default: the workspace's weights folder.")
    var kvParams: String?

    @Option(parsing: .unconditional, help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    @Option(parsing: .unconditional,
            help: "Where the engine computes: cpu, cuda (an NVIDIA GPU; an error when none is usable) or auto (CUDA when found, else the CPU).")
    var device: String = "auto"

    @Option(parsing: .unconditional,
            help: "Precision of the linear layers' inputs: auto (fp32 on the CPU, fp16 on CUDA), float32 (CPU), float16 (CUDA), or bfloat16 (CPU: prompt products against bf16 weights take bf16 inputs, as llama.cpp and lmdeploy compute a bf16 model; about 1.5x the prefill speed on AVX-512 BF16 CPUs).")
    var dtype: String = "auto"

    @Option(name: [.customLong("lm-head-dtype"), .customLong("lm_head_dtype")], parsing: .unconditional,
            help: "The LM head's weights: auto (as the model stores them) or int8 (quantized at load, per row; half the bytes a token reads from it, CPU only). With W4A16 models the head is the largest 16-bit matrix left; llama.cpp's Q4 files store it in 6-8 bits.")
    var lmHeadDType: String = "auto"

    func validate() throws {
        if let v = sessionLen, v < 16 { throw ValidationError("--session-len must be at least 16, got \(v)") }
        if let v = maxBatchSize, v < 1 { throw ValidationError("--max-batch-size must be at least 1, got \(v)") }
        if let v = maxPrefillTokenNum, v < 1 { throw ValidationError("--max-prefill-token-num must be at least 1, got \(v)") }
        if let v = cacheMaxEntryCount, !(v > 0 && v.isFinite) { throw ValidationError("--cache-max-entry-count must be a positive number, got \(v)") }
        if let v = cacheBlockSeqLen, v < 1 { throw ValidationError("--cache-block-seq-len must be at least 1, got \(v)") }
        if let v = quantPolicy, ![0, 4, 8].contains(v) { throw ValidationError("--quant-policy must be 0, 4 or 8, got \(v)") }
        guard DeviceChoice(rawValue: device) != nil else {
            throw ValidationError("--device must be cpu, cuda or auto, got '\(device)'")
        }
        guard ComputeDType(rawValue: dtype) != nil else {
            throw ValidationError("--dtype must be auto, float32, float16 or bfloat16, got '\(dtype)'")
        }
        guard LMHeadDType(rawValue: lmHeadDType) != nil else {
            throw ValidationError("--lm-head-dtype must be auto or int8, got '\(lmHeadDType)'")
        }
        guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0 (0 = all cores), got \(threads)") }
    }

    var settings: EngineSettings {
        EngineSettings(sessionLen: sessionLen, maxBatchSize: maxBatchSize, maxPrefillTokenNum: maxPrefillTokenNum,
                       cacheMaxEntryCount: cacheMaxEntryCount, cacheBlockSeqLen: cacheBlockSeqLen, quantPolicy: quantPolicy,
                       kvParamsDirectory: kvParams, threads: threads, device: DeviceChoice(rawValue: device) ?? .auto,
                       dtype: ComputeDType(rawValue: dtype) ?? .auto, lmHeadDType: LMHeadDType(rawValue: lmHeadDType) ?? .auto)
    }
}
