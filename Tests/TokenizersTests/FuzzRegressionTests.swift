import Foundation
import Testing
@testable import Tokenizers

/// Inputs the fuzz targets of Fuzz/ (Scripts/fuzz) found crashing or hanging, reduced by hand;
/// each must now load or fail with a TokenizerError naming the problem.
@Suite("Fuzz regressions: Tokenizers")
struct FuzzRegressionTests {
    /// A protobuf length-delimited field.
    static func field(_ number: UInt8, _ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 128)
        return [number << 3 | 2, UInt8(payload.count)] + payload
    }

    /// A SentencePiece piece message: piece string, fixed32 score, type.
    static func piece(_ text: String, score bits: UInt32, type: UInt8 = 1) -> [UInt8] {
        field(1, field(1, Array(text.utf8)) + [2 << 3 | 5] + withUnsafeBytes(of: bits.littleEndian, Array.init) + [3 << 3, type])
    }

    /// trainer_spec { model_type: BPE }
    static let bpeSpec = field(2, [3 << 3, 2])

    @Test("sentencepiece: a NaN piece score is refused (was a trap in SentencePieceModel.bpe)")
    func sentencePieceNaNScore() throws {
        let nan = Float.nan.bitPattern
        let model = Self.piece("<unk>", score: 0, type: 2) + Self.piece("a", score: Float(-1).bitPattern)
            + Self.piece("b", score: Float(-2).bitPattern) + Self.piece("ab", score: nan) + Self.bpeSpec
        #expect {
            _ = try Tokenizer(sentencePieceData: Data(model), source: "/m/tokenizer.model")
        } throws: { error in
            "\(error)".contains("/m/tokenizer.model") && "\(error)".contains("score is NaN")
        }
        // The same model with a finite score loads and merges "ab".
        let good = Self.piece("<unk>", score: 0, type: 2) + Self.piece("a", score: Float(-1).bitPattern)
            + Self.piece("b", score: Float(-2).bitPattern) + Self.piece("ab", score: Float(-0.5).bitPattern) + Self.bpeSpec
        let tokenizer = try Tokenizer(sentencePieceData: Data(good), source: "/m/tokenizer.model")
        #expect(tokenizer.idToToken(3) == "ab")
    }

    @Test("tokenizer_json: a Split regex quantifier {n} with a 20-digit count is an error (was an Int overflow trap)")
    func hugeQuantifierCount() throws {
        for pattern in ["a{99999999999999999999}", "a{1,99999999999999999999}", "a{100001}"] {
            #expect(throws: ScalarRegex.SyntaxError.self, "\(pattern)") { _ = try ScalarRegex(pattern) }
        }
        // Counts up to Oniguruma's cap still compile and match.
        let r = try ScalarRegex("a{2,100000}")
        _ = r
    }
}
