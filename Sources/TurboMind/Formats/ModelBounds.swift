// Plausibility of model dimensions, checked when a config (HF config.json or a workspace's
// config.ini) is read and before anything is sized from it: each dimension within a bound far above
// any released model, and every tensor size, and the whole model's, computed with overflow checks.
// A config claiming a billion layers or a head dimension of 2^62 fails here with the file and key
// named, instead of trapping on overflow or allocating until the process is killed.

/// Upper bounds on one model's dimensions (each ≥ 8× the largest released model's).
public enum ModelBounds {
    public static let maxLayers = 1024
    public static let maxHiddenSize = 1 << 17
    public static let maxIntermediateSize = 1 << 20
    public static let maxHeads = 1 << 12
    public static let maxHeadDim = 1 << 12
    public static let maxVocabSize = 1 << 24
    /// Context lengths (max_position_embeddings, session_len, sliding windows).
    public static let maxPositions = 1 << 30
    /// Parameters of the whole model (2^42 ≈ 4.4 trillion).
    public static let maxParameters = 1 << 42

    /// The config's keys for each dimension (config.json and config.ini name them differently).
    public struct Keys: Sendable {
        var hidden, inter, layers, heads, kvHeads, headDim, vocab: String
        public static let configJSON = Keys(hidden: "hidden_size", inter: "intermediate_size", layers: "num_hidden_layers",
                                            heads: "num_attention_heads", kvHeads: "num_key_value_heads",
                                            headDim: "head_dim", vocab: "vocab_size")
        public static let configINI = Keys(hidden: "[llama] head_num × size_per_head", inter: "[llama] inter_size",
                                           layers: "[llama] num_layer", heads: "[llama] head_num",
                                           kvHeads: "[llama] kv_head_num", headDim: "[llama] size_per_head",
                                           vocab: "[llama] vocab_size")
    }

    /// `value` if it lies in 1...`limit`, else an error naming `file` and `key`.
    static func bounded(_ value: Int, _ limit: Int, file: String, key: String, what: String) throws -> Int {
        guard value >= 1, value <= limit else {
            throw FormatError.invalidConfigValue(file: file, key: key, value: "\(value)",
                                                 expected: "a positive integer of at most \(limit) (\(what)); the file is corrupt or not a model config")
        }
        return value
    }

    /// a × b, or an error naming what overflowed.
    static func product(_ a: Int, _ b: Int, file: String, key: String, what: String) throws -> Int {
        let (result, overflow) = a.multipliedReportingOverflow(by: b)
        guard !overflow, result <= maxParameters else {
            throw FormatError.invalidConfigValue(file: file, key: key, value: "\(a) × \(b)",
                                                 expected: "\(what) of at most \(maxParameters) elements")
        }
        return result
    }

    static func sum(_ values: [Int], file: String, key: String, what: String) throws -> Int {
        var total = 0
        for value in values {
            let (result, overflow) = total.addingReportingOverflow(value)
            guard !overflow, result <= maxParameters else {
                throw FormatError.invalidConfigValue(file: file, key: key, value: "\(values)",
                                                     expected: "\(what) of at most \(maxParameters) elements in all")
            }
            total = result
        }
        return total
    }

    /// Checks every dimension and tensor size of a model; returns its parameter count.
    @discardableResult
    public static func check(hidden: Int, inter: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, vocab: Int,
                             file: String, keys: Keys) throws -> Int {
        _ = try bounded(hidden, maxHiddenSize, file: file, key: keys.hidden, what: "the hidden size")
        _ = try bounded(inter, maxIntermediateSize, file: file, key: keys.inter, what: "the MLP width")
        _ = try bounded(layers, maxLayers, file: file, key: keys.layers, what: "decoder layers")
        _ = try bounded(heads, maxHeads, file: file, key: keys.heads, what: "attention heads")
        _ = try bounded(kvHeads, maxHeads, file: file, key: keys.kvHeads, what: "key/value heads")
        _ = try bounded(headDim, maxHeadDim, file: file, key: keys.headDim, what: "the head dimension")
        _ = try bounded(vocab, maxVocabSize, file: file, key: keys.vocab, what: "tokens in the vocabulary")
        let qDim = try product(heads, headDim, file: file, key: keys.headDim, what: "the q projection's rows (heads × head_dim)")
        let kvDim = try product(kvHeads, headDim, file: file, key: keys.headDim, what: "the k projection's rows (kv heads × head_dim)")
        let embed = try product(vocab, hidden, file: file, key: keys.vocab, what: "the embedding table (vocab × hidden)")
        let attention = try sum([try product(qDim, hidden, file: file, key: keys.headDim, what: "the q projection"),
                                 try product(2 * kvDim, hidden, file: file, key: keys.headDim, what: "the k and v projections"),
                                 try product(qDim, hidden, file: file, key: keys.headDim, what: "the output projection")],
                                file: file, key: keys.headDim, what: "one layer's attention")
        let mlp = try product(3 * inter, hidden, file: file, key: keys.inter, what: "one layer's MLP (3 × inter × hidden)")
        let layer = try sum([attention, mlp, 2 * hidden, qDim + 2 * kvDim + hidden], file: file, key: keys.layers, what: "one layer")
        let allLayers = try product(layer, layers, file: file, key: keys.layers, what: "the decoder layers")
        return try sum([allLayers, 2 * embed, hidden], file: file, key: keys.layers, what: "the model")
    }
}
