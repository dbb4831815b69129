// Engine flags shared by chat, bench and (later) serve, with lmdeploy's names and spellings.
// A flag left out takes the workspace's config.ini value (so hand edits of config.ini apply on
// the next start, as with lmdeploy), else the default shown in --help.
import ArgumentParser
import TurboMind

struct EngineOptions: ParsableArguments {
    @Option(name: [.customLong("session-len"), .customLong("session_len")], help: "Maximum tokens of one conversation (prompt and replies). Default: config.ini's, else 4096.")
    var sessionLen: Int?

    @Option(name: [.customLong("max-batch-size"), .customLong("max_batch_size")], help: "Most sequences decoded together in one step. Default: config.ini's, else 64.")
    var maxBatchSize: Int?

    @Option(name: [.customLong("max-prefill-token-num"), .customLong("max_prefill_token_num")],
            help: "Prompt tokens computed per step at most; longer prompts are split across steps.")
    var maxPrefillTokenNum: Int = 512

    @Option(name: [.customLong("cache-max-entry-count"), .customLong("cache_max_entry_count")],
            help: "KV cache budget: a fraction in (0,1) of the memory available, or ≥ 1 for that many sequences of --session-len. Default: config.ini's, else 0.5.")
    var cacheMaxEntryCount: Double?

    @Option(name: [.customLong("cache-block-seq-len"), .customLong("cache_block_seq_len")], help: "Tokens per KV cache block.")
    var cacheBlockSeqLen: Int = 64

    @Option(help: "Compute threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard (sessionLen ?? 16) >= 16 else { throw ValidationError("--session-len must be at least 16") }
        guard (maxBatchSize ?? 1) >= 1 else { throw ValidationError("--max-batch-size must be at least 1") }
        guard maxPrefillTokenNum >= 1 else { throw ValidationError("--max-prefill-token-num must be at least 1") }
        guard (cacheMaxEntryCount ?? 1) > 0 else { throw ValidationError("--cache-max-entry-count must be > 0") }
        guard cacheBlockSeqLen >= 1 else { throw ValidationError("--cache-block-seq-len must be at least 1") }
    }

    /// The engine config for `source`: flags first, then its workspace's config.ini, then defaults.
    func config(for source: ModelSource) -> EngineConfig {
        let ini = source.workspace
        return EngineConfig(sessionLen: min(sessionLen ?? ini?.sessionLen ?? 4096, source.config.maxPositionEmbeddings),
                            maxBatchSize: maxBatchSize ?? ini?.maxBatchSize ?? 64,
                            maxPrefillTokenNum: maxPrefillTokenNum, cacheBlockSeqLen: cacheBlockSeqLen,
                            cacheMaxEntryCount: cacheMaxEntryCount ?? ini?.cacheMaxEntryCount ?? 0.5)
    }

    /// Loads the model at `path` and starts an engine on it.
    func start(path: String, overrides: (inout EngineConfig) -> Void = { _ in }) throws -> (ModelSource, Engine<CPUBackend>) {
        let source = try ModelSource.load(path: path)
        var config = config(for: source)
        overrides(&config)
        let model = try LlamaModel(backend: CPUBackend(threads: threads), config: source.config, weights: source.weights,
                                   maxChunkTokens: max(config.maxPrefillTokenNum, config.maxBatchSize))
        return (source, try Engine(model: model, tokenizer: source.tokenizer, config: config))
    }
}
