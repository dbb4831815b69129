// `lmdeploy chat turbomind|torch MODEL`: an interactive terminal chat, as lmdeploy's.
import ArgumentParser
import Foundation
import Tokenizers
import TurboMind

/// Which engine lmdeploy would use. Both run this project's engine; `torch` is kept so that
/// lmdeploy's "PyTorch backend" command lines keep working.
enum EngineKind: String, ExpressibleByArgument, CaseIterable {
    case turbomind, torch
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model in the terminal.",
        discussion: """
        Type a message and finish it with an empty line (press Enter twice); multi-line messages \
        are fine. `exit` quits, `end` starts a new session, Ctrl-D quits. The KV cache of earlier \
        turns is kept, so each turn only computes its new tokens. The chat runs on the batching \
        engine (one session); the engine flags below also take their defaults from a workspace's config.ini.
        """
    )

    @Argument(help: "Engine: turbomind or torch (both run the same engine here).")
    var engine: EngineKind

    @Argument(help: "A Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or a TurboMind workspace.")
    var modelPath: String

    @Option(name: [.customLong("model-name"), .customLong("model_name")], help: "One of lmdeploy's named chat templates (`lmdeploy list`); default: the model's own chat_template.")
    var modelName: String?

    @OptionGroup var sampling: SamplingOptions

    @Option(name: [.customLong("max-new-tokens"), .customLong("max_new_tokens"), .customLong("request-output-len"), .customLong("request_output_len")],
            help: "Maximum tokens of one reply.")
    var maxNewTokens: Int = 512

    @OptionGroup var engineOptions: EngineOptions

    func validate() throws {
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1") }
        try sampling.validate()
    }

    func run() async throws {
        let source = try ModelSource.load(path: modelPath)
        let format = try ChatFormat(source: source, modelName: modelName)
        // One conversation: the cache holds one session unless the user says otherwise.
        let engine = try engineOptions.settings.launch(source) { config in
            config.maxBatchSize = 1
            if config.cacheMaxEntryCount < 1 { config.cacheMaxEntryCount = 1 }
        }
        defer { engine.shutdown() }
        let sessionLength = engine.config.sessionLen
        let config = format.generationConfig(maxNewTokens: maxNewTokens, sampling: sampling.params)
        var messages: [ChatMessage] = []
        var session: UInt64 = 1
        let terminal = TerminalIO()
        for notice in engine.notices { terminal.err(notice) }
        terminal.err("model: \(modelPath) (\(source.config.architecture.rawValue), \(source.config.numHiddenLayers) layers) on \(engine.backendDescription), session length \(sessionLength)")

        func endSession(_ message: String) {
            terminal.out(message)
            engine.end(session: session)
            session += 1
            messages.removeAll()
        }

        while let input = terminal.readMessage(prompt: "\ndouble enter to end input >>> ") {
            let text = input.trimmingCharacters(in: .whitespacesAndNewlines)
            if text == "exit" { break }
            if text == "end" {
                endSession("(new session)\n")
                continue
            }
            if text.isEmpty { continue }
            messages.append(ChatMessage(role: "user", content: input))
            let ids = try format.tokens(messages)
            var reply = ""
            do {
                var finish: FinishReason?
                for try await out in engine.generate(session: session, input: .full(ids), config: config, interactive: true) {
                    reply += out.text
                    terminal.out(out.text)
                    finish = out.finishReason ?? finish
                }
                terminal.out("\n")
                messages.append(ChatMessage(role: "assistant", content: reply))
                if finish == .sessionFull {
                    endSession("exceed session max length (\(sessionLength) tokens): the session is ended, a new one starts.\n")
                }
            } catch let error as EngineError {
                endSession("\(error)\nthe session is ended, a new one starts.\n")
            }
        }
    }
}

/// Sampling flags shared by chat and bench, with lmdeploy's defaults and spellings.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0.8

    @Option(name: [.customLong("top-p"), .customLong("top_p")], help: "Nucleus sampling: keep tokens up to this probability mass.")
    var topP: Float = 0.8

    @Option(name: [.customLong("top-k"), .customLong("top_k")], help: "Keep only the k most likely tokens (0 = no limit).")
    var topK: Int = 40

    @Option(name: [.customLong("repetition-penalty"), .customLong("repetition_penalty")], help: "Penalty for tokens already in the conversation (1 = none).")
    var repetitionPenalty: Float = 1.0

    @Option(help: "Random seed for reproducible sampling.")
    var seed: UInt64?

    func validate() throws {
        guard temperature >= 0 else { throw ValidationError("--temperature must be ≥ 0") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0") }
        guard repetitionPenalty > 0 else { throw ValidationError("--repetition-penalty must be > 0") }
    }

    var params: SamplingParams {
        SamplingParams(temperature: temperature, topP: topP, topK: topK, repetitionPenalty: repetitionPenalty, seed: seed)
    }
}
