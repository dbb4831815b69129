// `lmdeploy chat turbomind|torch MODEL`: an interactive terminal chat, as lmdeploy's.
import ArgumentParser
import Foundation
import TerminalUI
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
        are fine. `exit` quits, `end` starts a new session, Ctrl-D quits. Ctrl-C stops a reply and \
        keeps it in the conversation; at an empty prompt press it twice to quit. On a terminal the \
        line can be edited (arrows, Home/End, Ctrl-A/E/U/K/W) and Up/Down recall earlier lines. \
        The KV cache of earlier turns is kept, so each turn only computes its new tokens. The chat runs on the batching \
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

    @Option(name: [.customLong("max-new-tokens"), .customLong("max_new_tokens"), .customLong("request-output-len"), .customLong("request_output_len")], parsing: .unconditional,
            help: "Maximum tokens of one reply.")
    var maxNewTokens: Int = 512

    @OptionGroup var engineOptions: EngineOptions

    func validate() throws {
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1 (got \(maxNewTokens))") }
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
        for notice in engine.notices { Terminal.err(notice) }
        Terminal.err("model: \(modelPath) (\(source.config.architecture.rawValue), \(source.config.numHiddenLayers) layers) on \(engine.backendDescription), session length \(sessionLength)")

        func endSession(_ message: String) {
            Terminal.out(message)
            engine.end(session: session)
            session += 1
            messages.removeAll()
        }

        let prompt = ChatPrompt()
        chat: while true {
            let text: String
            switch prompt.next() {
            case .quit:
                break chat
            case .newSession:
                endSession("(new session)\n")
                continue
            case .message(let message):
                text = message
            }
            messages.append(ChatMessage(role: "user", content: text))
            let ids = try format.tokens(messages)
            var reply = ""
            var finish: FinishReason?
            var historyTokens = 0
            do {
                // Ctrl-C while the reply streams stops it; the session and its KV cache stay.
                let stream = engine.generate(session: session, input: .full(ids), config: config, interactive: true)
                try await Interrupts.shared.during(onInterrupt: { engine.cancel(request: stream.id) }) {
                    for try await out in stream {
                        reply += out.text
                        Terminal.out(out.text)
                        finish = out.finishReason ?? finish
                        historyTokens = out.historyTokens
                    }
                }
                Terminal.out("\n")
                if reply.isEmpty && finish == .cancelled {
                    messages.removeLast()     // stopped before any text: the turn is dropped
                } else {
                    messages.append(ChatMessage(role: "assistant", content: reply))
                }
                if finish == .cancelled {
                    Terminal.err("(reply stopped; the conversation keeps its \(historyTokens) tokens)")
                }
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
    @Option(parsing: .unconditional, help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0.8

    @Option(name: [.customLong("top-p"), .customLong("top_p")], parsing: .unconditional, help: "Nucleus sampling: keep tokens up to this probability mass.")
    var topP: Float = 0.8

    @Option(name: [.customLong("top-k"), .customLong("top_k")], parsing: .unconditional, help: "Keep only the k most likely tokens (0 = no limit).")
    var topK: Int = 40

    @Option(name: [.customLong("repetition-penalty"), .customLong("repetition_penalty")], parsing: .unconditional, help: "Penalty for tokens already in the conversation (1 = none).")
    var repetitionPenalty: Float = 1.0

    @Option(parsing: .unconditional, help: "Random seed for reproducible sampling: an integer in 0…18446744073709551615.")
    var seed: UInt64?

    func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be a finite number ≥ 0 (0 = greedy; got \(temperature))") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1] (got \(topP))") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0 (0 = no limit; got \(topK))") }
        guard repetitionPenalty > 0, repetitionPenalty.isFinite else { throw ValidationError("--repetition-penalty must be a finite number > 0 (1 = none; got \(repetitionPenalty))") }
    }

    var params: SamplingParams {
        SamplingParams(temperature: temperature, topP: topP, topK: topK, repetitionPenalty: repetitionPenalty, seed: seed)
    }
}
