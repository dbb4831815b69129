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
    @inline(__always)
    static func classify(_ s: Unicode.Scalar) -> ScalarClass {
        let v = s.value
        if v < 128 {
            // ASCII: letters A-Z a-z, digits, White_Space = \t \n \v \f \r and space.
            if (v | 0x20) &- 0x61 < 26 { return .letter }
            if v &- 0x30 < 10 { return .number }
            if v == 0x20 || v &- 0x09 < 5 { return .whitespace }
            return .other
        }
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
            let c = classify(s)
            return c == .letter || c == .number
        }
        return s.properties.isAlphabetic || classify(s) == .number
    }

    /// Regex `\w` (Unicode): Alphabetic, marks, decimal numbers, connector punctuation, join controls.
    static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 128 {
            let c = classify(s)
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

    /// Hugging Face's `is_punc`: ASCII punctuation (symbols included) or Unicode P*.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 128 {
            return (v >= 0x21 && v <= 0x2F) || (v >= 0x3A && v <= 0x40) || (v >= 0x5B && v <= 0x60) || (v >= 0x7B && v <= 0x7E)
        }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }
}
