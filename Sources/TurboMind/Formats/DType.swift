// Element types of stored tensors, named as safetensors names them, and the bit-level conversions
// between the 16-bit float formats and Float.

/// The element type of a stored tensor. Raw values are the safetensors dtype strings.
public enum DType: String, Sendable, CaseIterable, Hashable {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case f8e4m3 = "F8_E4M3"
    case f8e5m2 = "F8_E5M2"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// The types a weight may have: the engine widens these to fp32 inside its kernels.
    public static let weightTypes: [DType] = [.bf16, .f16, .f32]

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e4m3, .f8e5m2: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64: return 8
        }
    }

    /// True for the floating types weights may be stored in (bf16, f16, f32).
    public var isWeightType: Bool { DType.weightTypes.contains(self) }

    /// Parses PyTorch's spelling as found in `config.json`'s `torch_dtype` ("bfloat16", "float16", "float32", ...).
    public init?(torchName: String) {
        switch torchName.lowercased().replacingOccurrences(of: "torch.", with: "") {
        case "bfloat16": self = .bf16
        case "float16", "half": self = .f16
        case "float32", "float": self = .f32
        case "float64", "double": self = .f64
        case "int8": self = .i8
        case "uint8": self = .u8
        case "int16", "short": self = .i16
        case "int32", "int": self = .i32
        case "int64", "long": self = .i64
        case "bool": self = .bool
        default: return nil
        }
    }
}

/// Bit-exact conversions between Float and the 16-bit float formats.
public enum FloatBits {
    /// bf16 is the top half of an IEEE binary32: widening is a shift.
    @inlinable
    public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Rounds to nearest, ties to even; NaN stays NaN (quiet), infinities stay infinite.
    @inlinable
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let roundingBias = UInt32(0x7FFF) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }

    /// IEEE binary16 → Float (exact: every half is representable as a float).
    @inlinable
    public static func f16ToFloat(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits & 0x03FF)
        if exponent == 0x1F {  // infinity or NaN
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal half: value = mantissa × 2^-24.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    /// Float → IEEE binary16, round to nearest even, overflow to infinity.
    @inlinable
    public static func floatToF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x007F_FFFF
        if exponent == 0xFF {  // infinity or NaN
            return sign | 0x7C00 | (mantissa != 0 ? 0x0200 : 0)
        }
        let halfExponent = exponent - 127 + 15
        if halfExponent >= 0x1F { return sign | 0x7C00 }
        if halfExponent <= 0 {
            // Result is subnormal (or zero) in half precision.
            if halfExponent < -10 { return sign }
            let full = mantissa | 0x0080_0000
            let shift = UInt32(14 - halfExponent)
            var half = full >> shift
            let remainder = full & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && (half & 1) == 1) { half += 1 }
            return sign | UInt16(truncatingIfNeeded: half)
        }
        var half = UInt32(halfExponent) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && (half & 1) == 1) { half += 1 }  // may carry into exponent: correct
        return sign | UInt16(truncatingIfNeeded: half)
    }
}
