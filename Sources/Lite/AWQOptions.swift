// The settings of `lite auto_awq` and its errors. Defaults follow AutoAWQ (asymmetric 4-bit
// groups, GEMM packing, a 20-point α grid, duo scaling, clipping searched on a 10-point max-value
// shrink grid).
import Foundation

public struct AWQOptions: Sendable, Equatable {
    /// Bits per weight: 4 (the only width AutoAWQ's GEMM layout packs).
    public var bits: Int
    /// Input channels per quantization group: 32, 64 or 128.
    public var groupSize: Int
    /// Search the activation-aware scales (false: round-to-nearest, `--no-search`).
    public var searchScale: Bool
    /// Search each group's clipping range (`--search-clip`).
    public var searchClip: Bool
    /// Search o's scales (folded into v); with GQA, one scale per v channel shared by its query heads.
    public var scaleOutput: Bool
    /// AutoAWQ's duo scaling: s = mean|x|^α / mean(|w|/max|w|)^(1−α) instead of the paper's mean|x|^α.
    public var duoScaling: Bool
    /// Points of the α grid: α = 0, 1/n, …, (n−1)/n, as AutoAWQ (α = 0 is round-to-nearest).
    public var scaleGrid: Int
    /// Rows (tokens) of each linear's input kept for the scale search, drawn at random over all
    /// calibration tokens; the per-channel mean |x| is over every token.
    public var searchTokens: Int
    /// Rows of each linear's input the clip search scores (AutoAWQ's n_sample_token).
    public var clipTokens: Int
    /// Seed of the row sample.
    public var seed: UInt64

    public static let supportedBits = [4]
    public static let supportedGroupSizes = [32, 64, 128]

    public init(bits: Int = 4, groupSize: Int = 128, searchScale: Bool = true, searchClip: Bool = true, scaleOutput: Bool = true,
                duoScaling: Bool = true, scaleGrid: Int = 20, searchTokens: Int = 2048, clipTokens: Int = 512, seed: UInt64 = 0) {
        self.bits = bits
        self.groupSize = groupSize
        self.searchScale = searchScale
        self.searchClip = searchClip
        self.scaleOutput = scaleOutput
        self.duoScaling = duoScaling
        self.scaleGrid = scaleGrid
        self.searchTokens = searchTokens
        self.clipTokens = clipTokens
        self.seed = seed
    }

    /// Refuses what the quantizer cannot do, with the flag named.
    public func validate() throws {
        guard Self.supportedBits.contains(bits) else {
            throw AWQError.invalidOption("--w-bits \(bits) is not supported: AWQ's GEMM layout packs 4-bit weights (--w-bits 4)")
        }
        guard Self.supportedGroupSizes.contains(groupSize) else {
            throw AWQError.invalidOption("--w-group-size \(groupSize) is not supported: use 32, 64 or 128")
        }
        guard scaleGrid >= 1 else { throw AWQError.invalidOption("the α grid needs at least 1 point, got \(scaleGrid)") }
        guard searchTokens >= 1 else { throw AWQError.invalidOption("--search-tokens must be at least 1, got \(searchTokens)") }
        guard clipTokens >= 1 else { throw AWQError.invalidOption("the clip search needs at least 1 token, got \(clipTokens)") }
    }
}

public enum AWQError: Error, CustomStringConvertible, Equatable {
    case invalidOption(String)
    /// `groupSize` does not divide the input features of `linear`; `working` are the sizes that do (for every linear).
    case groupSizeMismatch(linear: String, inFeatures: Int, groupSize: Int, working: [Int])
    case unsupportedModel(String)
    case badCheckpoint(file: String, detail: String)
    case io(file: String, detail: String)

    public var description: String {
        switch self {
        case let .invalidOption(message):
            return message
        case let .groupSizeMismatch(linear, inFeatures, groupSize, working):
            let fix = working.isEmpty
                ? "none of \(AWQOptions.supportedGroupSizes.map(String.init).joined(separator: ", ")) divides every linear layer of this model"
                : "use --w-group-size " + working.sorted(by: >).map(String.init).joined(separator: " or ")
            return "--w-group-size \(groupSize) does not divide the \(inFeatures) input features of \(linear): \(fix)"
        case let .unsupportedModel(message):
            return message
        case let .badCheckpoint(file, detail):
            return "\(file): \(detail)"
        case let .io(file, detail):
            return "\(file): \(detail)"
        }
    }
}
