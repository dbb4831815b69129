// ModelConfig: the real SmolLM2 config, each architecture's spelling, bad configs with the key named,
// and the RoPE inverse frequencies of every scaling type against independent references.

import Foundation
import Testing
@testable import TurboMind

@Suite("ModelConfig")
struct ModelConfigTests {
    /// Decodes `json` as if read from `name`.
    static func decode(_ json: String, file name: String = "config.json") throws -> ModelConfig {
        try ModelConfig.decode(Data(json.utf8), file: name)
    }

    /// The error message from decoding `json`.
    static func failure(_ json: String) -> String {
        do {
            _ = try decode(json)
        } catch let error as FormatError {
            return error.description
        } catch {
            Issue.record("expected a FormatError, got \(type(of: error)): \(error)")
            return ""
        }
        Issue.record("decoding should have failed")
        return ""
    }

    /// A valid Llama config with `extra` fields appended (remove a key before giving it another value).
    static func llama(_ extra: String = "", removing: Set<String> = []) -> String {
        let fields: [(String, String)] = [
            ("architectures", #"["LlamaForCausalLM"]"#), ("hidden_size", "64"), ("intermediate_size", "96"),
            ("num_hidden_layers", "2"), ("num_attention_heads", "4"), ("num_key_value_heads", "2"),
            ("vocab_size", "128"), ("rms_norm_eps", "1e-5"), ("max_position_embeddings", "256"),
        ].filter { !removing.contains($0.0) }
        var text = "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ")
        if !extra.isEmpty { text += (fields.isEmpty ? "" : ", ") + extra }
        return text + "}"
    }

    // MARK: Real and per-architecture configs

    @Test("the real SmolLM2-135M config")
    func smolLM2() throws {
        let dir = FormatFixtures.smollm2.appendingPathComponent("hf")
        let config = try ModelConfig.load(directory: dir)
        #expect(config.architecture == .llama)
        #expect(config.hiddenSize == 576)
        #expect(config.intermediateSize == 1536)
        #expect(config.numHiddenLayers == 30)
        #expect(config.numAttentionHeads == 9)
        #expect(config.numKeyValueHeads == 3)
        #expect(config.headDim == 64)
        #expect(config.vocabSize == 49152)
        #expect(config.rmsNormEps == 1e-5)
        #expect(config.ropeTheta == 100000)
        #expect(config.ropeScaling == nil)
        #expect(config.maxPositionEmbeddings == 8192)
        #expect(config.tieWordEmbeddings)
        #expect(!config.attentionBias && !config.attentionOutputBias)
        #expect(config.bosTokenId == 1)
        #expect(config.eosTokenIds == [2])
        #expect(config.torchDtype == "bfloat16")
        #expect(config.storedDType == .bf16)
        #expect(config.queryHeadsPerKVHead == 3)
        #expect(config.qDim == 576 && config.kvDim == 192)
    }

    @Test("rope_parameters spelling (transformers 5) gives theta and scaling")
    func ropeParameters() throws {
        let plain = try ModelConfigTests.decode(ModelConfigTests.llama(#""rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}"#))
        #expect(plain.ropeTheta == 500000)
        #expect(plain.ropeScaling == nil)

        let scaled = try ModelConfigTests.decode(ModelConfigTests.llama("""
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
            """))
        #expect(scaled.ropeTheta == 500000)
        #expect(scaled.ropeScaling == RopeScaling(kind: .llama3, factor: 8, lowFreqFactor: 1, highFreqFactor: 4,
                                                  originalMaxPositionEmbeddings: 8192))
    }

    @Test("eos_token_id as a list, and head_dim given explicitly")
    func eosListAndHeadDim() throws {
        let config = try ModelConfigTests.decode(ModelConfigTests.llama(#""eos_token_id": [128001, 128008, 128009], "head_dim": 32, "dtype": "float16", "vocab_size": 128256"#,
                                                                      removing: ["vocab_size"]))
        #expect(config.eosTokenIds == [128001, 128008, 128009])
        #expect(config.headDim == 32)
        #expect(config.qDim == 128)
        #expect(config.torchDtype == "float16")
        let none = try ModelConfigTests.decode(ModelConfigTests.llama(#""eos_token_id": null, "head_dim": null"#))
        #expect(none.eosTokenIds.isEmpty)
        #expect(none.headDim == 16)
    }

    @Test("defaults: no num_key_value_heads means no GQA")
    func defaults() throws {
        let config = try ModelConfigTests.decode(ModelConfigTests.llama(removing: ["num_key_value_heads", "rms_norm_eps", "max_position_embeddings"]))
        #expect(config.numKeyValueHeads == 4)
        #expect(config.rmsNormEps == 1e-6)
        #expect(config.ropeTheta == 10000)
        #expect(config.maxPositionEmbeddings == 2048)
        #expect(!config.tieWordEmbeddings)
    }

    @Test("Qwen2: q/k/v biases always, none on o; sliding window only when enabled")
    func qwen2() throws {
        let json = ModelConfigTests.llama(#""architectures": ["Qwen2ForCausalLM"], "sliding_window": 4096, "use_sliding_window": false, "rope_theta": 1000000.0"#,
                                          removing: ["architectures"])
        let config = try ModelConfigTests.decode(json)
        #expect(config.architecture == .qwen2)
        #expect(config.attentionBias && !config.attentionOutputBias)
        #expect(config.slidingWindow == nil)
        #expect(config.ropeTheta == 1_000_000)
    }

    @Test("Mistral: sliding_window kept")
    func mistral() throws {
        let json = ModelConfigTests.llama(#""architectures": ["MistralForCausalLM"], "sliding_window": 4096"#, removing: ["architectures"])
        let config = try ModelConfigTests.decode(json)
        #expect(config.architecture == .mistral)
        #expect(config.slidingWindow == 4096)
        #expect(!config.attentionBias)
    }

    @Test("InternLM2: bias key, GQA, dynamic rope scaling")
    func internlm2() throws {
        let json = """
        {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "bias": false, "hidden_size": 4096,
         "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
         "vocab_size": 92544, "rms_norm_eps": 1e-05, "rope_theta": 1000000, "max_position_embeddings": 32768,
         "rope_scaling": {"type": "dynamic", "factor": 2.0}, "tie_word_embeddings": false, "bos_token_id": 1,
         "eos_token_id": 2, "torch_dtype": "bfloat16", "hidden_act": "silu"}
        """
        let config = try ModelConfigTests.decode(json)
        #expect(config.architecture == .internlm2)
        #expect(!config.attentionBias && !config.attentionOutputBias)
        #expect(config.numKeyValueHeads == 8 && config.headDim == 128)
        #expect(config.ropeTheta == 1_000_000)
        #expect(config.ropeScaling == RopeScaling(kind: .dynamic, factor: 2))
    }

    @Test("InternLM (v1): bias defaults to true on q, k, v and o; rotary.base is the theta")
    func internlm() throws {
        let json = ModelConfigTests.llama(#""architectures": ["InternLMForCausalLM"], "rotary": {"base": 20000, "type": "origin"}"#,
                                          removing: ["architectures", "num_key_value_heads"])
        let config = try ModelConfigTests.decode(json)
        #expect(config.architecture == .internlm)
        #expect(config.attentionBias && config.attentionOutputBias)
        #expect(config.numKeyValueHeads == config.numAttentionHeads)
        #expect(config.ropeTheta == 20000)
        #expect(config.ropeScaling == nil)
    }

    @Test("architecture from model_type when architectures is absent")
    func modelTypeFallback() throws {
        let config = try ModelConfigTests.decode(ModelConfigTests.llama(#""model_type": "qwen2""#, removing: ["architectures"]))
        #expect(config.architecture == .qwen2)
    }

    // MARK: Bad configs

    @Test("missing hidden_size names the key and the file")
    func missingKey() throws {
        let dir = try TinyModel.makeTemporaryDirectory("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(ModelConfigTests.llama(removing: ["hidden_size"]).utf8).write(to: dir.appendingPathComponent("config.json"))
        let error = #expect(throws: FormatError.self) { try ModelConfig.load(directory: dir) }
        let message = error?.description ?? ""
        #expect(message.contains("hidden_size") && message.contains(dir.appendingPathComponent("config.json").path)
            && message.contains("missing"), "\(message)")
    }

    @Test("missing config.json")
    func missingFile() throws {
        let dir = try TinyModel.makeTemporaryDirectory("cfg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let error = #expect(throws: FormatError.self) { try ModelConfig.load(directory: dir) }
        #expect(error?.description.contains("config.json") == true)
    }

    @Test("unknown architecture lists the supported ones")
    func unknownArchitecture() {
        let message = ModelConfigTests.failure(ModelConfigTests.llama(#""architectures": ["GPTNeoXForCausalLM"]"#, removing: ["architectures"]))
        #expect(message.contains("GPTNeoXForCausalLM"), "\(message)")
        for architecture in Architecture.allCases {
            #expect(message.contains(architecture.rawValue), "\(message) should list \(architecture.rawValue)")
        }
    }

    @Test("wrong JSON type names the key and the expected type")
    func typeMismatch() {
        let message = ModelConfigTests.failure(ModelConfigTests.llama(#""hidden_size": "576""#, removing: ["hidden_size"]))
        #expect(message.contains("'hidden_size'") && message.contains("\"576\"") && message.contains("an integer"), "\(message)")
        let fractional = ModelConfigTests.failure(ModelConfigTests.llama(#""num_hidden_layers": 2.5"#, removing: ["num_hidden_layers"]))
        #expect(fractional.contains("'num_hidden_layers'") && fractional.contains("2.5") && fractional.contains("an integer"), "\(fractional)")
        let eos = ModelConfigTests.failure(ModelConfigTests.llama(#""eos_token_id": "</s>""#))
        #expect(eos.contains("'eos_token_id'") && eos.contains("an integer or a list of integers"), "\(eos)")
        // An integral number written with a decimal point is accepted.
        #expect(throws: Never.self) { try ModelConfigTests.decode(ModelConfigTests.llama(#""num_hidden_layers": 2.0"#, removing: ["num_hidden_layers"])) }
    }

    @Test("a null required value")
    func nullValue() {
        let message = ModelConfigTests.failure(ModelConfigTests.llama(#""vocab_size": null"#, removing: ["vocab_size"]))
        #expect(message.contains("'vocab_size'") && message.contains("null"), "\(message)")
    }

    @Test("config that is not JSON")
    func notJSON() {
        let message = ModelConfigTests.failure("{\"hidden_size\": 64,")
        #expect(message.contains("config.json") && message.contains("not a valid JSON"), "\(message)")
    }

    @Test("inconsistent head counts")
    func badHeads() {
        let kv = ModelConfigTests.failure(ModelConfigTests.llama(#""num_key_value_heads": 3"#, removing: ["num_key_value_heads"]))
        #expect(kv.contains("'num_key_value_heads'") && kv.contains("divisor of num_attention_heads (4)"), "\(kv)")
        let heads = ModelConfigTests.failure(ModelConfigTests.llama(#""num_attention_heads": 5, "num_key_value_heads": 5"#,
                                                                    removing: ["num_attention_heads", "num_key_value_heads"]))
        #expect(heads.contains("'num_attention_heads'") && heads.contains("hidden_size (64)"), "\(heads)")
        let zero = ModelConfigTests.failure(ModelConfigTests.llama(#""num_hidden_layers": 0"#, removing: ["num_hidden_layers"]))
        #expect(zero.contains("'num_hidden_layers'") && zero.contains("positive"), "\(zero)")
    }

    @Test("unknown rope scaling type lists the supported ones")
    func unknownRopeScaling() {
        let message = ModelConfigTests.failure(ModelConfigTests.llama(#""rope_scaling": {"type": "yarn", "factor": 4.0}"#))
        #expect(message.contains("rope_scaling.type") && message.contains("'yarn'") && message.contains("linear")
            && message.contains("dynamic") && message.contains("llama3"), "\(message)")
    }

    @Test("llama3 scaling without low_freq_factor")
    func llama3MissingField() {
        let message = ModelConfigTests.failure(ModelConfigTests.llama(
            #""rope_scaling": {"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#))
        #expect(message.contains("rope_scaling.low_freq_factor") && message.contains("missing"), "\(message)")
    }

    @Test("unsupported activation and MLP bias are refused")
    func unsupportedFeatures() {
        let act = ModelConfigTests.failure(ModelConfigTests.llama(#""hidden_act": "gelu""#))
        #expect(act.contains("'hidden_act'") && act.contains("gelu") && act.contains("silu"), "\(act)")
        let mlp = ModelConfigTests.failure(ModelConfigTests.llama(#""mlp_bias": true"#))
        #expect(mlp.contains("'mlp_bias'"), "\(mlp)")
    }

    // MARK: RoPE frequencies

    /// transformers' `_compute_llama3_parameters`, transcribed plainly (Double throughout).
    static func llama3Reference(theta: Double, dim: Int, factor: Double, low: Double, high: Double, original: Double) -> [Double] {
        var result: [Double] = []
        for i in stride(from: 0, to: dim, by: 2) {
            let invFreq = 1.0 / pow(theta, Double(i) / Double(dim))
            let wavelen = 2.0 * Double.pi / invFreq
            let lowFreqWavelen = original / low
            let highFreqWavelen = original / high
            var scaled = wavelen > lowFreqWavelen ? invFreq / factor : invFreq
            let smoothFactor = (original / wavelen - low) / (high - low)
            let smoothed = (1 - smoothFactor) * scaled / factor + smoothFactor * scaled
            let isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)
            if isMedium { scaled = smoothed }
            result.append(scaled)
        }
        return result
    }

    @Test("llama3 RoPE scaling matches transformers' formula")
    func llama3Frequencies() throws {
        let config = try ModelConfigTests.decode(ModelConfigTests.llama("""
            "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}
            """, removing: ["hidden_size", "num_attention_heads", "num_key_value_heads"]))
        #expect(config.headDim == 128)
        let frequencies = config.ropeInverseFrequencies()
        let reference = ModelConfigTests.llama3Reference(theta: 500000, dim: 128, factor: 8, low: 1, high: 4, original: 8192)
        #expect(frequencies.count == 64)
        for (actual, expected) in zip(frequencies, reference) {
            // Both are computed in Double; the only difference allowed is the final rounding to Float.
            #expect(actual == Float(expected), "\(actual) vs \(expected)")
        }
        // Spot checks computed separately in Python (math module, float64): one per band.
        // i = 25: wavelength 1057.6 < 2048 (high-frequency band), unchanged.
        #expect(abs(Double(frequencies[25]) - 0.005940730375674967) <= 1e-7 * 0.005940730375674967)
        // i = 30: wavelength 2948.3 is between 2048 and 8192: smoothed.
        #expect(abs(Double(frequencies[30]) - 0.0013718935677611381) <= 1e-7 * 0.0013718935677611381)
        // i = 40: wavelength 22910.6 > 8192: divided by 8.
        #expect(abs(Double(frequencies[40]) - 3.428102195952591e-05) <= 1e-7 * 3.428102195952591e-05)
        #expect(abs(Double(frequencies[63]) - 3.068925988914511e-07) <= 1e-7 * 3.068925988914511e-07)
        #expect(frequencies[0] == 1)
    }

    @Test("unscaled and linear RoPE frequencies")
    func linearFrequencies() throws {
        let plain = try ModelConfigTests.decode(ModelConfigTests.llama())
        let base = plain.ropeInverseFrequencies()
        #expect(base.count == 8)
        for (i, value) in base.enumerated() {
            #expect(value == Float(1 / pow(10000.0, Double(2 * i) / 16)))
        }
        let linear = try ModelConfigTests.decode(ModelConfigTests.llama(#""rope_scaling": {"type": "linear", "factor": 4.0}"#))
        for (scaled, unscaled) in zip(linear.ropeInverseFrequencies(), base) {
            #expect(abs(scaled - unscaled / 4) <= 1e-7 * unscaled, "linear scaling divides by the factor")
        }
        #expect(linear.ropeInverseFrequencies(sequenceLength: 100_000) == linear.ropeInverseFrequencies())
    }

    @Test("dynamic NTK RoPE frequencies grow the base past max_position_embeddings")
    func dynamicFrequencies() throws {
        let config = try ModelConfigTests.decode(ModelConfigTests.llama(#""rope_scaling": {"type": "dynamic", "factor": 2.0}, "hidden_size": 256"#,
                                                                        removing: ["hidden_size"]))
        #expect(config.headDim == 64 && config.maxPositionEmbeddings == 256)
        let base = config.ropeInverseFrequencies()
        #expect(config.ropeInverseFrequencies(sequenceLength: 256) == base, "no change up to max_position_embeddings")
        let long = config.ropeInverseFrequencies(sequenceLength: 1000)
        // Python: base = 10000 * ((2*1000/256) - 1) ** (64/62) = 72474.85758310779.
        let expectedBase = 72474.85758310779
        for (i, value) in long.enumerated() {
            let expected = 1 / pow(expectedBase, Double(2 * i) / 64)
            #expect(abs(Double(value) - expected) <= 1e-6 * expected, "i=\(i): \(value) vs \(expected)")
        }
        #expect(abs(Double(long[1]) - 0.7048864215040643) <= 1e-6)
        #expect(abs(Double(long[31]) - 1.957462652716806e-05) <= 1e-6 * 1.957462652716806e-05)
    }
}
