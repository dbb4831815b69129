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

static inline float ck_load_scalar(const void *W, int type, size_t i) {
    switch (type) {
    case 2: return ck_bf16_to_f32(((const uint16_t *)W)[i]);
    case 1: return ck_f16_to_f32(((const uint16_t *)W)[i]);
    default: return ((const float *)W)[i];
    }
}
/// Widens n elements of `type` into fp32 on the calling thread (vectorised for the CPU's ISA).
void ck_widen_serial(const void *src, int type, float *dst, size_t n);
#endif
