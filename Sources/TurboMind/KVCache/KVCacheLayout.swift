// What the paged KV cache holds and how big it is. The element type is a parameter of the cache,
// not of the model (llama.cpp's type_k/type_v, TurboMind's BlockConfig): fp16 by default, fp32 for
// exactness tests, int8 with per-head scale/zero (lmdeploy's quant_policy 4, see KVQuantParameters).

public enum KVCacheType: String, Sendable, Equatable, CaseIterable {
    case f32, f16, int8

    /// Bytes of one cached K or V element.
    public var byteSize: Int {
        switch self {
        case .f32: return 4
        case .f16: return 2
        case .int8: return 1
        }
    }
}

public struct KVCacheLayout: Sendable, Equatable {
    public var layers: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Tokens per block.
    public var blockSize: Int
    public var blockCount: Int
    public var type: KVCacheType

    public init(layers: Int, kvHeads: Int, headDim: Int, blockSize: Int, blockCount: Int, type: KVCacheType) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.type = type
    }

    /// Elements of one token's K (or V) row in one layer.
    public var rowWidth: Int { kvHeads * headDim }

    /// Bytes the cache stores per token: K and V of every layer.
    public var bytesPerToken: Int { layers * 2 * rowWidth * type.byteSize }

    /// Bytes of one block across all layers.
    public var bytesPerBlock: Int { bytesPerToken * blockSize }

    /// Per-layer, per-head scale and zero point of K and V (int8 only): fp32 [layers][kvHeads][k_scale, k_zero, v_scale, v_zero].
    public var quantParameterBytes: Int { type == .int8 ? layers * 2 * kvHeads * 2 * 4 : 0 }

    /// Bytes of the whole cache.
    public var byteCount: Int { bytesPerBlock * blockCount + quantParameterBytes }

    /// Blocks needed to hold `tokens` positions.
    public func blocksFor(tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }
}
