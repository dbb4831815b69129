/// Character classes used by the pre-tokenizers, matching the definitions of the regex engines and
/// Rust `char` predicates that Hugging Face tokenizers uses:
/// - whitespace: the Unicode `White_Space` property (Oniguruma `\s`, Rust `char::is_whitespace`);
/// - letter: general category L (`\p{L}`);
/// - number: general category N = Nd, Nl, No (`\p{N}`, Rust `char::is_numeric`).
enum ScalarClass: UInt8 {
    case letter = 0
    case number = 1
    case whitespace = 2
    case other = 3
}

enum UnicodeClass {
    /// Classes of the ASCII range, precomputed.
    private static let ascii: [ScalarClass] = (0..<128).map { slowClassify(Unicode.Scalar(UInt8($0))) }

    @inline(__always)
    static func classify(_ s: Unicode.Scalar) -> ScalarClass {
        if s.value < 128 { return ascii[Int(s.value)] }
        return slowClassify(s)
    }

    static func slowClassify(_ s: Unicode.Scalar) -> ScalarClass {
        let p = s.properties
        if p.isWhitespace { return .whitespace }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }

    @inline(__always)
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool { classify(s) == .whitespace }

    @inline(__always)
    static func isNumeric(_ s: Unicode.Scalar) -> Bool { classify(s) == .number }

    /// Rust `char::is_alphanumeric`: Alphabetic or numeric.
    static func isAlphanumeric(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 {
            let c = ascii[Int(s.value)]
            return c == .letter || c == .number
        }
        return s.properties.isAlphabetic || classify(s) == .number
    }

    /// Regex `\w` (Unicode): Alphabetic, marks, decimal numbers, connector punctuation, join controls.
    static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 {
            let c = ascii[Int(s.value)]
            return c == .letter || c == .number || s == "_"
        }
        let p = s.properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            return true
        default:
            return false
        }
    }
}
