// `lmdeploy bench MODEL`: prefill and decode speed of one sequence, as JSON lines.
import ArgumentParser
import Foundation
import TurboMind

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed (batch 1) and print JSON lines.",
        discussion: """
        prefill: a prompt of --input-len tokens computed from an empty cache; tokens_per_s = input_len / seconds.
        decode:  --output-len tokens decoded one at a time after that prompt (greedy, EOS ignored);
                 tokens_per_s = output_len / seconds. Each figure is the median of --runs runs after one warm-up.
        Compare with llama.cpp: llama-bench -p 512 -n 128 -t THREADS on the same weights.
        """
    )

    @Argument(help: "A Hugging Face model directory.")
    var modelPath: String

    @Option(name: [.customLong("input-len"), .customLong("input_len")], help: "Prompt tokens.")
    var inputLen: Int = 512

    @Option(name: [.customLong("output-len"), .customLong("output_len")], help: "Generated tokens.")
    var outputLen: Int = 128

    @Option(help: "Measured runs (after one warm-up).")
    var runs: Int = 3

    @Option(help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard inputLen >= 1, outputLen >= 1, runs >= 1 else { throw ValidationError("--input-len, --output-len and --runs must be ≥ 1") }
    }

    func run() throws {
        let source = try ModelSource.load(path: modelPath)
        let backend = CPUBackend(threads: threads)
        let model = try LlamaModel(backend: backend, config: source.config, weights: source.weights)
        let session = Session(model: model, sessionLength: inputLen + outputLen + 1)
        // A fixed, tokenizer-independent prompt: ids spread over the vocabulary.
        let vocab = source.config.vocabSize
        let prompt = (0..<inputLen).map { Int32(($0 * 7919 + 13) % vocab) }
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...runs {
            session.reset()
            let t0 = Date()
            var logits = try session.prefill(prompt)
            let t1 = Date()
            for _ in 0..<outputLen {
                logits = try session.append(Int32(Sampler.argmax(logits)))
            }
            let t2 = Date()
            if run > 0 {  // run 0 warms caches and the thread pool
                prefill.append(t1.timeIntervalSince(t0))
                decode.append(t2.timeIntervalSince(t1))
            }
        }
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        let p = median(prefill), d = median(decode)
        emit(["bench": "prefill", "model": name, "backend": backend.description, "tokens": inputLen,
              "seconds": p, "tokens_per_s": Double(inputLen) / p])
        emit(["bench": "decode", "model": name, "backend": backend.description, "tokens": outputLen,
              "context": inputLen, "seconds": d, "tokens_per_s": Double(outputLen) / d])
    }

    private func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

    private func emit(_ object: [String: Any]) {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
