// Which layers attend through a sliding window, and how wide it is.

extension ModelConfig {
    /// The sliding-window span of decoder layer `layer`, nil for full attention. Mistral applies
    /// `sliding_window` to every layer; Qwen2's decoding keeps nil unless `use_sliding_window`.
    public func slidingWindow(layer: Int) -> Int? {
        slidingWindow
    }
}
