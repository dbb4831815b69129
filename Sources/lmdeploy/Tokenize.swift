// `lmdeploy tokenize PATH`: text → token ids (and back), and chat-template rendering, as
// llama.cpp's llama-tokenize does for its users.
import ArgumentParser
import Foundation
import Tokenizers

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenize text, decode ids, or render a chat template with a model's tokenizer.",
        discussion: """
        PATH is a model directory (tokenizer.json, or a SentencePiece/tiktoken tokenizer.model, or
        *.tiktoken), a TurboMind workspace, or a tokenizer file.
          lmdeploy tokenize ./model --text "Hello world"          → [1, 15043, 3186]
          echo '"Hello"' | lmdeploy tokenize ./model --jsonl       → one JSON array of ids per line
          lmdeploy tokenize ./model --decode --text "15043 3186"   → Hello world
          lmdeploy tokenize ./model --chat messages.json --add-generation-prompt
        """
    )

    @Argument(help: "A model directory, a workspace, or a tokenizer file.")
    var path: String

    @Option(help: "The input (default: standard input).")
    var text: String?

    @Option(help: "Read the input from this file.")
    var file: String?

    @Flag(help: "Print each token's piece beside its id.")
    var showPieces = false

    @Flag(help: "Each input line is a JSON string (ids with --decode); each output line is the JSON array of its ids (a JSON string with --decode).")
    var jsonl = false

    @Flag(help: "Add no special tokens (BOS/EOS) when encoding.")
    var noSpecial = false

    @Flag(help: "Decode ids (space- or comma-separated, or a JSON array) back to text.")
    var decode = false

    @Flag(help: "With --decode, leave special tokens out.")
    var skipSpecialTokens = false

    @Option(help: "Render this JSON file (a list of messages, or {\"messages\": …, \"tools\": …}) through the chat template and print the prompt.")
    var chat: String?

    @Flag(help: "With --chat, end the prompt with the assistant's turn header.")
    var addGenerationPrompt = false

    @Option(help: "With --chat, use this lmdeploy named template (see `lmdeploy list`) instead of the model's own.")
    var modelName: String?

    @Option(help: "Encode the input this many times and print the throughput as a JSON line instead of ids.")
    var benchRepeat: Int?

    func validate() throws {
        if text != nil && file != nil { throw ValidationError("give --text or --file, not both") }
        if let r = benchRepeat, r < 1 { throw ValidationError("--bench-repeat must be at least 1") }
    }

    func run() throws {
        do {
            try execute()
        } catch let error as TokenizerError {
            throw ValidationError(error.description)
        }
    }

    private func input() throws -> String {
        if let text { return text }
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            return String(decoding: data, as: UTF8.self)
        }
        return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
    }

    private func execute() throws {
        if let chat {
            guard let data = FileManager.default.contents(atPath: chat) else { throw ValidationError("cannot read \(chat)") }
            if let modelName {
                guard let named = NamedChatTemplate.named(modelName) else {
                    throw ValidationError("unknown model name '\(modelName)' (see `lmdeploy list`)")
                }
                let messages = try JSONDecoder().decode([ChatMessage].self, from: data)
                FileHandle.standardOutput.write(Data(try named.render(messages: messages, addGenerationPrompt: addGenerationPrompt).utf8))
                return
            }
            let tokenizer = try Tokenizer.load(path: path)
            let prompt = try tokenizer.checkedChatTemplate().render(
                conversationJSON: data, addGenerationPrompt: addGenerationPrompt,
                bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken)
            FileHandle.standardOutput.write(Data(prompt.utf8))
            return
        }
        let tokenizer = try Tokenizer.load(path: path)
        let text = try input()
        if let repeatCount = benchRepeat {
            try bench(tokenizer, text, repeatCount)
            return
        }
        if decode {
            if jsonl {
                for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                    let ids = try Tokenizer.parseTokenIds(String(line))
                    print(JSONText.quote(try tokenizer.decodeChecked(ids, skipSpecialTokens: skipSpecialTokens)))
                }
            } else {
                print(try tokenizer.decodeChecked(try Tokenizer.parseTokenIds(text), skipSpecialTokens: skipSpecialTokens))
            }
            return
        }
        if jsonl {
            var out = ""
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                guard let value = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]),
                      let s = value as? String else {
                    throw ValidationError("--jsonl: each input line must be a JSON string: \(line.prefix(80))")
                }
                out += "[" + tokenizer.encode(s, addSpecialTokens: !noSpecial).map(String.init).joined(separator: ", ") + "]\n"
            }
            FileHandle.standardOutput.write(Data(out.utf8))
            return
        }
        let ids = tokenizer.encode(text, addSpecialTokens: !noSpecial)
        if showPieces {
            for id in ids {
                let piece = tokenizer.idToToken(id) ?? ""
                print("\(id)\t\(JSONText.quote(piece))\t\(JSONText.quote(tokenizer.decode([id])))")
            }
        } else {
            print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        }
    }

    private func bench(_ tokenizer: Tokenizer, _ text: String, _ repeatCount: Int) throws {
        let bytes = text.utf8.count
        var tokens = tokenizer.encode(text, addSpecialTokens: false).count  // warm-up (caches)
        var best = Double.infinity
        for _ in 0..<repeatCount {
            let start = DispatchTime.now().uptimeNanoseconds
            tokens = tokenizer.encode(text, addSpecialTokens: false).count
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        print("{\"bench\":\"encode\",\"impl\":\"lmdeploy-swift\",\"bytes\":\(bytes),\"tokens\":\(tokens),\"seconds\":\(best),\"mb_per_s\":\(Double(bytes) / best / 1e6)}")
    }
}
