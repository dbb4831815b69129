// Internal: scalar conversions between the stored weight types and fp32.
#ifndef CK_CONVERT_H
#define CK_CONVERT_H
#include <stdint.h>
#include <string.h>

static inline float ck_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float ck_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {   // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            u = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/// fp32 → fp16, round to nearest even (what F16C's cvtps_ph does with _MM_FROUND_TO_NEAREST_INT,
/// so scalar and vector stores of the KV cache write the same bits).
static inline uint16_t ck_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 | ((a >> 13) & 0x3ff) : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          // rounds past 65504: infinity
    if (a < 0x38800000u) {                                            // below 2^-14: subnormal or zero
        if (a < 0x33000000u) return (uint16_t)sign;                   // below half the smallest subnormal
        uint32_t mant = (a & 0x7fffff) | 0x800000;
        int drop = 126 - (int)(a >> 23);                              // value = mant · 2^(exp-150) = v · 2^-24
        uint32_t v = mant >> drop, rem = mant & ((1u << drop) - 1), mid = 1u << (drop - 1);
        if (rem > mid || (rem == mid && (v & 1))) v++;
        return (uint16_t)(sign | v);
    }
    uint32_t v = ((a >> 13) - ((127 - 15) << 10)), rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (v & 1))) v++;
    return (uint16_t)(sign | v);
}

static inline float ck_load_scalar(const void *W, int type, size_t i) {
    switch (type) {
    case 2: return ck_bf16_to_f32(((const uint16_t *)W)[i]);
    case 1: return ck_f16_to_f32(((const uint16_t *)W)[i]);
    case 3: return (float)((const int8_t *)W)[i];
    default: return ((const float *)W)[i];
    }
}
/// Widens n elements of `type` into fp32 on the calling thread (vectorised for the CPU's ISA).
void ck_widen_serial(const void *src, int type, float *dst, size_t n);
#endif
