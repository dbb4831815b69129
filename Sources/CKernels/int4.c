// W4A16 products: Y[m][n] = X[m][k] · W[n][k]ᵀ with W in 4-bit groups (layout in ck_int4.h).
// Decode is bound by reading weights, and 4-bit weights are a quarter of fp16's bytes, so the
// loop must dequantize faster than memory delivers. The zero point is taken out of the inner loop:
// Σ (q − z)·s·x = s·Σ q·x − z·s·Σ x, with Σ x per group computed once per call for each input
// vector. AVX-512 and AVX2 multiply the nibbles as 16-bit integers against the inputs quantized to
// int16 per group (row512, row256); portable C widens the nibbles to fp32.
#include "ck_int4.h"
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

// ---- repacking --------------------------------------------------------------------------------
typedef struct { const int32_t *qw; int k, n; uint8_t *dst; } repack_job;

enum { REPACK_COLS = 8 };   // one task: 8 int32 columns of qweight = 64 output rows

static void repack_task(void *ctx, int t) {
    const repack_job *j = ctx;
    const int packed_cols = j->n / 8, c0 = t * REPACK_COLS;
    const int c1 = c0 + REPACK_COLS < packed_cols ? c0 + REPACK_COLS : packed_cols;
    const size_t row_bytes = (size_t)j->k / 2;
    for (int i = 0; i < j->k; i++) {
        // Input i lands in block i/32: low nibble of byte i%32 for the first 16, high of byte i%32−16 after.
        const size_t byte = (size_t)(i / 32) * 16 + (size_t)(i % 16);
        const int high = (i % 32) >= 16;
        const uint32_t *src = (const uint32_t *)j->qw + (size_t)i * packed_cols;
        for (int c = c0; c < c1; c++) {
            uint32_t word = src[c];
            for (int s = 0; s < 8; s++) {
                uint8_t q = (uint8_t)((word >> (4 * s)) & 15);
                uint8_t *d = j->dst + (size_t)(8 * c + awq_order[s]) * row_bytes + byte;
                *d = high ? (uint8_t)((*d & 0x0F) | (q << 4)) : (uint8_t)((*d & 0xF0) | q);
            }
        }
    }
}

void ck_q4_repack_awq(const int32_t *qweight, int k, int n, uint8_t *dst) {
    if (k <= 0 || n <= 0) return;
    repack_job j = {qweight, k, n, dst};
    ck_parallel(repack_task, &j, (n / 8 + REPACK_COLS - 1) / REPACK_COLS);
}

// ---- the product job --------------------------------------------------------------------------
typedef struct {
    const uint8_t *W; const uint16_t *sz; int group; const float *X; float *Y; int m, n, k;
    const float *bias; const float *xsum;
    const int16_t *x16; const float *xscale;   // AVX-512 and AVX2: X quantized per group, and its scales
    int pairs;                                 // x16 holds 64-input chunks in paired order (G % 64 == 0)
    int vnni;                                  // the caller's VNNI choice, for every worker
    const ck_post *post;                       // decode: what each piece of rows does next
} q4_job;

// The zero point's share of a group, −z·s·Σx, folded into a row's correction with one fused
// multiply-add: written out so that every kernel path rounds it identically.
CK_INLINE float q4_corr(float corr, float z, float s, float xsum) { return fmaf(-(z * s), xsum, corr); }

static inline int nibble(const uint8_t *row, int i) {
    uint8_t b = row[(i / 32) * 16 + (i % 16)];
    return (i % 32) >= 16 ? b >> 4 : b & 15;
}

// ---- portable C ---------------------------------------------------------------------------------
static void rows_scalar(const q4_job *j, int r0, int r1) {
    const int k = j->k, G = j->group, groups = k / G;
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = j->W + (size_t)r * (k / 2);
        const uint16_t *sz = j->sz + (size_t)r * groups * 2;
        for (int v = 0; v < j->m; v++) {
            const float *x = j->X + (size_t)v * k;
            float acc = 0.0f, corr = 0.0f;
            for (int g = 0; g < groups; g++) {
                float s = ck_f16_to_f32(sz[2 * g]), z = ck_f16_to_f32(sz[2 * g + 1]);
                float d[4] = {0, 0, 0, 0};
                for (int i = g * G; i < (g + 1) * G; i += 4)
                    for (int l = 0; l < 4; l++) d[l] += (float)nibble(w, i + l) * x[i + l];
                acc += s * ((d[0] + d[1]) + (d[2] + d[3]));
                corr -= z * s * j->xsum[(size_t)v * groups + g];
            }
            j->Y[(size_t)v * j->n + r] = acc + corr + (j->bias ? j->bias[r] : 0.0f);
        }
    }
}

static void dequant_scalar(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        const uint16_t *sz = szs + (size_t)r * groups * 2;
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            float s = ck_f16_to_f32(sz[2 * g]), z = ck_f16_to_f32(sz[2 * g + 1]);
            for (int i = g * G; i < (g + 1) * G; i++) o[i] = ((float)nibble(w, i) - z) * s;
        }
    }
}

#if CK_HAVE_X86
// ---- AVX-512: integer dot products ------------------------------------------------------------
// Converting every nibble to fp32 made the loop compute-bound at ~3 weights per cycle, slower than
// streaming bf16. Instead each input vector is quantized once per call to int16 per group of G
// (scale max|x|/32767, so |error| ≤ 2^-16 of the group's largest input: finer than fp16's 2^-11
// relative step), and the nibbles, widened to 16-bit lanes, meet it in vpmaddwd: 32 products per
// instruction, summed exactly in int32. Per group: s_w · s_x · Σ q·x16 − z · s_w · Σ x.
CK_TARGET_AVX512 CK_INLINE void row512(const q4_job *j, int r, int v0, int V) {
    const int k = j->k, G = j->group, groups = k / G;
    const uint8_t *w = j->W + (size_t)r * (k / 2);
    const uint16_t *sz = j->sz + (size_t)r * groups * 2;
    const __m128i low = _mm_set1_epi8(15);
    __m512 acc[4];
    float corr[4] = {0, 0, 0, 0};
    for (int v = 0; v < V; v++) acc[v] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int base = g * G;
        __m512i a[4][2];
        for (int v = 0; v < V; v++) a[v][0] = a[v][1] = _mm512_setzero_si512();
        int b = 0;
        if (j->pairs) {
            // Two 32-input blocks per 32-byte load: low nibbles of both blocks widen to one vector of
            // 32 words, high nibbles to another; x16 holds each 64 inputs in that order.
            const __m256i low2 = _mm256_set1_epi8(15);
            for (; b + 64 <= G; b += 64) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (base + b) / 2));
                __m512i lo = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, low2));
                __m512i hi = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low2));
                for (int v = 0; v < V; v++) {
                    const int16_t *x = j->x16 + (size_t)(v0 + v) * k + base + b;
                    a[v][0] = _mm512_add_epi32(a[v][0], _mm512_madd_epi16(lo, _mm512_loadu_si512((const void *)x)));
                    a[v][1] = _mm512_add_epi32(a[v][1], _mm512_madd_epi16(hi, _mm512_loadu_si512((const void *)(x + 32))));
                }
            }
        }
        for (; b < G; b += 32) {
            // Into the first accumulator: int32 sums are exact in any order, and a run-time index
            // here would put the accumulators in memory (it did: stack spills in every group).
            __m128i raw = _mm_loadu_si128((const __m128i *)(w + (base + b) / 2));
            __m128i lo = _mm_and_si128(raw, low), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
            // inputs 0..15 then 16..31 of the block, as 32 words
            __m512i q = _mm512_cvtepu8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
            for (int v = 0; v < V; v++) {
                __m512i x = _mm512_loadu_si512((const void *)(j->x16 + (size_t)(v0 + v) * k + base + b));
                a[v][0] = _mm512_add_epi32(a[v][0], _mm512_madd_epi16(q, x));
            }
        }
        const float s = _cvtsh_ss(sz[2 * g]), z = _cvtsh_ss(sz[2 * g + 1]);
        for (int v = 0; v < V; v++) {
            const size_t gi = (size_t)(v0 + v) * groups + g;
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(a[v][0], a[v][1]));
            acc[v] = _mm512_fmadd_ps(d, _mm512_set1_ps(s * j->xscale[gi]), acc[v]);
            corr[v] = q4_corr(corr[v], z, s, j->xsum[gi]);
        }
    }
    for (int v = 0; v < V; v++)
        j->Y[(size_t)(v0 + v) * j->n + r] = _mm512_reduce_add_ps(acc[v]) + corr[v] + (j->bias ? j->bias[r] : 0.0f);
}

CK_TARGET_AVX512_VNNI CK_INLINE void row512v(const q4_job *j, int r, int v0, int V) {
    const int k = j->k, G = j->group, groups = k / G;
    const uint8_t *w = j->W + (size_t)r * (k / 2);
    const uint16_t *sz = j->sz + (size_t)r * groups * 2;
    const __m128i low = _mm_set1_epi8(15);
    __m512 acc[4];
    float corr[4] = {0, 0, 0, 0};
    for (int v = 0; v < V; v++) acc[v] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int base = g * G;
        __m512i a[4][2];
        for (int v = 0; v < V; v++) a[v][0] = a[v][1] = _mm512_setzero_si512();
        int b = 0;
        if (j->pairs) {
            // Two 32-input blocks per 32-byte load: low nibbles of both blocks widen to one vector of
            // 32 words, high nibbles to another; x16 holds each 64 inputs in that order.
            const __m256i low2 = _mm256_set1_epi8(15);
            for (; b + 64 <= G; b += 64) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (base + b) / 2));
                __m512i lo = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, low2));
                __m512i hi = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low2));
                for (int v = 0; v < V; v++) {
                    const int16_t *x = j->x16 + (size_t)(v0 + v) * k + base + b;
                    a[v][0] = _mm512_dpwssd_epi32(a[v][0], lo, _mm512_loadu_si512((const void *)x));
                    a[v][1] = _mm512_dpwssd_epi32(a[v][1], hi, _mm512_loadu_si512((const void *)(x + 32)));
                }
            }
        }
        for (; b < G; b += 32) {
            // Into the first accumulator: int32 sums are exact in any order, and a run-time index
            // here would put the accumulators in memory (it did: stack spills in every group).
            __m128i raw = _mm_loadu_si128((const __m128i *)(w + (base + b) / 2));
            __m128i lo = _mm_and_si128(raw, low), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
            // inputs 0..15 then 16..31 of the block, as 32 words
            __m512i q = _mm512_cvtepu8_epi16(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
            for (int v = 0; v < V; v++) {
                __m512i x = _mm512_loadu_si512((const void *)(j->x16 + (size_t)(v0 + v) * k + base + b));
                a[v][0] = _mm512_dpwssd_epi32(a[v][0], q, x);
            }
        }
        const float s = _cvtsh_ss(sz[2 * g]), z = _cvtsh_ss(sz[2 * g + 1]);
        for (int v = 0; v < V; v++) {
            const size_t gi = (size_t)(v0 + v) * groups + g;
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(a[v][0], a[v][1]));
            acc[v] = _mm512_fmadd_ps(d, _mm512_set1_ps(s * j->xscale[gi]), acc[v]);
            corr[v] = q4_corr(corr[v], z, s, j->xsum[gi]);
        }
    }
    for (int v = 0; v < V; v++)
        j->Y[(size_t)(v0 + v) * j->n + r] = _mm512_reduce_add_ps(acc[v]) + corr[v] + (j->bias ? j->bias[r] : 0.0f);
}

// Decode (one vector, G % 64 == 0): four rows per pass share every x16 load, and nothing indexed
// at run time sits between the loads and the multiply-adds, so the accumulators stay in registers.
// Each row's arithmetic is row512's exactly (the same group sums, fma order, reduction and
// correction), so a row's result does not depend on which path computed it.
// Each row's bytes are prefetched this many rows ahead (four passes), into L2 (T2): with weights far
// past the L3 the hardware prefetcher alone left decode at ~10-12 GB/s; 8 measured best of 4, 8, 16
// (docs/w4a16.md). Into L1 (T0) Zen 4 reached 18-20 GB/s where T2 reaches 24-27 (docs/cpu-speed.md).
#ifndef Q4_PREFETCH_ROWS
#define Q4_PREFETCH_ROWS 8
#endif
#define Q4_ROW4_LOAD(i)                                                                                     \
    {                                                                                                       \
        _mm_prefetch((const char *)(w + (i + Q4_PREFETCH_ROWS) * rb + b / 2), _MM_HINT_T2);                \
        __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (i) * rb + b / 2));                          \
        __m512i lo = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, low));                                      \
        __m512i hi = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), low));                \
        a##i##0 = Q4_DOT(a##i##0, lo, xl);                                                                  \
        a##i##1 = Q4_DOT(a##i##1, hi, xh);                                                                  \
    }
#define Q4_ROW4_GROUP(i)                                                                                    \
    {                                                                                                       \
        const uint16_t *q = sz + (size_t)(i) * groups * 2 + 2 * g;                                          \
        const float s = _cvtsh_ss(q[0]), z = _cvtsh_ss(q[1]);                                               \
        acc##i = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a##i##0, a##i##1)), _mm512_set1_ps(s * xs[g]), acc##i); \
        corr##i = q4_corr(corr##i, z, s, xsum[g]);                                                          \
    }
#define Q4_ROWS4(NAME, TARGET)                                                                              \
    TARGET static void NAME(const q4_job *j, int r) {                                                       \
        const int k = j->k, G = j->group, groups = k / G;                                                   \
        const size_t rb = (size_t)k / 2;                                                                    \
        const uint8_t *w = j->W + (size_t)r * rb;                                                           \
        const uint16_t *sz = j->sz + (size_t)r * groups * 2;                                                \
        const int16_t *x16 = j->x16;                                                                        \
        const float *xs = j->xscale, *xsum = j->xsum;                                                       \
        const __m256i low = _mm256_set1_epi8(15);                                                           \
        __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                          \
        float corr0 = 0, corr1 = 0, corr2 = 0, corr3 = 0;                                                   \
        for (int g = 0; g < groups; g++) {                                                                  \
            __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,    \
                    a30 = a00, a31 = a00;                                                                   \
            for (int b = g * G; b < (g + 1) * G; b += 64) {                                                 \
                const __m512i xl = _mm512_loadu_si512((const void *)(x16 + b));                             \
                const __m512i xh = _mm512_loadu_si512((const void *)(x16 + b + 32));                        \
                Q4_ROW4_LOAD(0) Q4_ROW4_LOAD(1) Q4_ROW4_LOAD(2) Q4_ROW4_LOAD(3)                             \
            }                                                                                               \
            Q4_ROW4_GROUP(0) Q4_ROW4_GROUP(1) Q4_ROW4_GROUP(2) Q4_ROW4_GROUP(3)                             \
        }                                                                                                   \
        const float *bias = j->bias;                                                                        \
        j->Y[r] = _mm512_reduce_add_ps(acc0) + corr0 + (bias ? bias[r] : 0.0f);                             \
        j->Y[r + 1] = _mm512_reduce_add_ps(acc1) + corr1 + (bias ? bias[r + 1] : 0.0f);                     \
        j->Y[r + 2] = _mm512_reduce_add_ps(acc2) + corr2 + (bias ? bias[r + 2] : 0.0f);                     \
        j->Y[r + 3] = _mm512_reduce_add_ps(acc3) + corr3 + (bias ? bias[r + 3] : 0.0f);                     \
    }
#define Q4_DOT(a, q, x) _mm512_add_epi32(a, _mm512_madd_epi16(q, x))
Q4_ROWS4(rows4_512, CK_TARGET_AVX512)
#undef Q4_DOT
#define Q4_DOT(a, q, x) _mm512_dpwssd_epi32(a, q, x)
Q4_ROWS4(rows4_512v, CK_TARGET_AVX512_VNNI)
#undef Q4_DOT

// Up to four vectors: row by row (one stream the prefetcher follows), four rows at a time for one
// vector. More: a block of rows (~32 KiB of packed weights, kept in L2) meets each group of four
// vectors (their int16 inputs kept in L1) in turn; each output's arithmetic is the same either way.
#define Q4_ROWS(NAME, TARGET, ROW, ROWS4)                                                                   \
    TARGET static void NAME(const q4_job *j, int r0, int r1) {                                              \
        if (j->m == 1 && j->pairs) {                                                                        \
            int r = r0;                                                                                     \
            for (; r + 4 <= r1; r += 4) ROWS4(j, r);                                                        \
            for (; r < r1; r++) ROW(j, r, 0, 1);                                                            \
            return;                                                                                         \
        }                                                                                                   \
        const int block = j->m <= 4 ? r1 - r0 : (int)(32768 / ((size_t)j->k / 2)) + 1;                     \
        for (int b0 = r0; b0 < r1; b0 += block) {                                                           \
            const int b1 = b0 + block < r1 ? b0 + block : r1;                                               \
            for (int v0 = 0; v0 < j->m; v0 += 4)                                                            \
                for (int r = b0; r < b1; r++) {                                                             \
                    switch (j->m - v0) {                                                                    \
                    case 1: ROW(j, r, v0, 1); break;                                                        \
                    case 2: ROW(j, r, v0, 2); break;                                                        \
                    case 3: ROW(j, r, v0, 3); break;                                                        \
                    default: ROW(j, r, v0, 4); break;                                                       \
                    }                                                                                       \
                }                                                                                           \
        }                                                                                                   \
    }
Q4_ROWS(rows_avx512, CK_TARGET_AVX512, row512, rows4_512)
Q4_ROWS(rows_avx512_vnni, CK_TARGET_AVX512_VNNI, row512v, rows4_512v)

CK_TARGET_AVX512 static void dequant_avx512(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    const __m512i low = _mm512_set1_epi32(15);
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        const uint16_t *sz = szs + (size_t)r * groups * 2;
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            const float s = _cvtsh_ss(sz[2 * g]), z = _cvtsh_ss(sz[2 * g + 1]);
            const __m512 sv = _mm512_set1_ps(s), zv = _mm512_set1_ps(z);
            for (int b = g * G; b < (g + 1) * G; b += 32) {
                __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + b / 2)));
                _mm512_storeu_ps(o + b, _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_and_si512(e, low)), zv), sv));
                _mm512_storeu_ps(o + b + 16, _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(e, 4)), zv), sv));
            }
        }
    }
}

// ---- AVX2 + F16C + FMA: 8 lanes; one row × up to 2 vectors --------------------------------------
CK_TARGET_AVX2 CK_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The AVX-512 scheme on 8 int32 lanes. No widening instruction is needed: a 32-byte load of 64
// inputs, seen as 16-bit words, gives four vectors of 16 nibbles with one shift and mask each
// (low nibble of the even bytes, of the odd bytes, high nibble of the even bytes, of the odd
// bytes); x16 holds each 64 inputs of a group in that order (prepare_inputs, ORDER_WORDS). A group's
// last 32 inputs when G % 64 == 32 widen from 16 bytes in natural order. Widening to fp32 instead
// was compute-bound at about 3 weights per cycle, below what memory delivers.
CK_TARGET_AVX2 CK_INLINE void row256(const q4_job *j, int r, int v0, int V) {
    const int k = j->k, G = j->group, groups = k / G;
    const uint8_t *w = j->W + (size_t)r * (k / 2);
    const uint16_t *sz = j->sz + (size_t)r * groups * 2;
    const __m256i m4 = _mm256_set1_epi16(15);
    __m256 acc[4];
    float corr[4] = {0, 0, 0, 0};
    for (int v = 0; v < V; v++) acc[v] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int base = g * G;
        __m256i a[4];
        for (int v = 0; v < V; v++) a[v] = _mm256_setzero_si256();
        int b = 0;
        for (; b + 64 <= G; b += 64) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (base + b) / 2));
            __m256i q0 = _mm256_and_si256(raw, m4);
            __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(raw, 8), m4);
            __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            __m256i q3 = _mm256_srli_epi16(raw, 12);
            for (int v = 0; v < V; v++) {
                const __m256i *x = (const __m256i *)(j->x16 + (size_t)(v0 + v) * k + base + b);
                __m256i s0 = _mm256_add_epi32(_mm256_madd_epi16(q0, _mm256_loadu_si256(x)),
                                              _mm256_madd_epi16(q1, _mm256_loadu_si256(x + 1)));
                __m256i s1 = _mm256_add_epi32(_mm256_madd_epi16(q2, _mm256_loadu_si256(x + 2)),
                                              _mm256_madd_epi16(q3, _mm256_loadu_si256(x + 3)));
                a[v] = _mm256_add_epi32(a[v], _mm256_add_epi32(s0, s1));
            }
        }
        for (; b < G; b += 32) {
            __m256i e = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + (base + b) / 2)));
            __m256i lo = _mm256_and_si256(e, m4), hi = _mm256_srli_epi16(e, 4);   // inputs 0..15, 16..31
            for (int v = 0; v < V; v++) {
                const __m256i *x = (const __m256i *)(j->x16 + (size_t)(v0 + v) * k + base + b);
                a[v] = _mm256_add_epi32(a[v], _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(x)),
                                                               _mm256_madd_epi16(hi, _mm256_loadu_si256(x + 1))));
            }
        }
        const float s = _cvtsh_ss(sz[2 * g]), z = _cvtsh_ss(sz[2 * g + 1]);
        for (int v = 0; v < V; v++) {
            const size_t gi = (size_t)(v0 + v) * groups + g;
            acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[v]), _mm256_set1_ps(s * j->xscale[gi]), acc[v]);
            corr[v] = q4_corr(corr[v], z, s, j->xsum[gi]);
        }
    }
    for (int v = 0; v < V; v++)
        j->Y[(size_t)(v0 + v) * j->n + r] = hsum256(acc[v]) + corr[v] + (j->bias ? j->bias[r] : 0.0f);
}

// Blocked as rows_avx512 (the same loop, Q4_ROWS); without a four-row kernel here, one vector
// takes its rows one at a time in order, exactly as the general loop would.
CK_TARGET_AVX2 CK_INLINE void rows4_256(const q4_job *j, int r) {
    for (int i = 0; i < 4; i++) row256(j, r + i, 0, 1);
}
Q4_ROWS(rows_avx2, CK_TARGET_AVX2, row256, rows4_256)

CK_TARGET_AVX2 static void dequant_avx2(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    const __m256i low = _mm256_set1_epi32(15);
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        const uint16_t *sz = szs + (size_t)r * groups * 2;
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            const float s = _cvtsh_ss(sz[2 * g]), z = _cvtsh_ss(sz[2 * g + 1]);
            const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(z);
            for (int b = g * G; b < (g + 1) * G; b += 32) {
                __m128i raw = _mm_loadu_si128((const __m128i *)(w + b / 2));
                __m256i e0 = _mm256_cvtepu8_epi32(raw), e1 = _mm256_cvtepu8_epi32(_mm_srli_si128(raw, 8));
                _mm256_storeu_ps(o + b, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(e0, low)), zv), sv));
                _mm256_storeu_ps(o + b + 8, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(e1, low)), zv), sv));
                _mm256_storeu_ps(o + b + 16, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(e0, 4)), zv), sv));
                _mm256_storeu_ps(o + b + 24, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(e1, 4)), zv), sv));
            }
        }
    }
}
#endif

void ck_q4_dequantize_rows(const uint8_t *packed, const uint16_t *sz, int group, int k, int r0, int r1, float *dst) {
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: dequant_avx512(packed, sz, group, k, r0, r1, dst); break;
    case CK_ISA_AVX2: dequant_avx2(packed, sz, group, k, r0, r1, dst); break;
#endif
    default: dequant_scalar(packed, sz, group, k, r0, r1, dst); break;
    }
}

// ---- decode ---------------------------------------------------------------------------------------
CK_DECODE_PRODUCT(q4, q4_job, if (j->vnni) rows_avx512_vnni(j, r0, r1); else rows_avx512(j, r0, r1), rows_avx2(j, r0, r1), rows_scalar(j, r0, r1))

// Σ x over each group of each input vector, in a fixed order (a vector's sums never depend on m);
// for the integer paths also X as int16 per group (round to nearest, scale max|x|/32767), each 64
// inputs of a group in the order the kernel's nibble vectors come in.
typedef struct { float *sum, *scale; int16_t *x16; size_t len, len16; } group_scratch;
static _Thread_local group_scratch scratch;
enum { X16_NONE, X16_AVX512, X16_AVX2 };

// Where input c (0..63) of a 64-input chunk goes in x16.
static int x16_slot(int layout, int c) {
    const int block = c / 32, half = (c % 32) / 16, byte = 16 * block + c % 16;
    if (layout == X16_AVX512) return half * 32 + block * 16 + c % 16;   // 0..15, 32..47, 16..31, 48..63
    return (2 * half + (byte & 1)) * 16 + byte / 2;                     // words: even/odd bytes' low, then high
}

// Σ x of one group in a fixed order: four lanes, each every fourth input, then (s0 + s1) + (s2 + s3). The
// scalar kernels need no more; prepare_group_avx2 computes the same sum beside the int16 inputs.
static float group_sum(const float *x, int G) {
    float s[4] = {0, 0, 0, 0};
    for (int i = 0; i < G; i += 4)
        for (int l = 0; l < 4; l++) s[l] += x[i + l];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

#if CK_HAVE_X86
// One group of one input vector for the integer kernels: its sum (as group_sum), max |x| (NaN ignored),
// and the inputs as int16 at `slot` positions: round half away from zero of x · (1 / scale), scale =
// max|x| / 32767, clamped to ±32767. Eight inputs at a time, the bits of the scalar loop it replaced:
// that ran on the calling thread before every int4 product (the other thread waiting), ~7% of a
// SmolLM2 W4A16 decode step.
// `piece` (or NULL): where each 16 inputs of a whole 64 go when the slots move them together (AVX-512's order).
CK_TARGET_AVX2 static void prepare_group_avx2(const float *x, int G, float *sum, float *scale, int16_t *q,
                                              const uint8_t *slot, const uint8_t *piece, int whole) {
    __m128 s4 = _mm_setzero_ps();
    for (int i = 0; i < G; i += 4) s4 = _mm_add_ps(s4, _mm_loadu_ps(x + i));   // lane l: x[l], x[l + 4], … in order
    float s[4];
    _mm_storeu_ps(s, s4);
    *sum = (s[0] + s[1]) + (s[2] + s[3]);
    if (!q) return;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m8 = _mm256_setzero_ps();
    for (int i = 0; i < G; i += 8) m8 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), m8);   // NaN: keeps m8
    float m[8], mx = 0.0f;
    _mm256_storeu_ps(m, m8);
    for (int l = 0; l < 8; l++) mx = m[l] > mx ? m[l] : mx;
    float sc = mx > 0 ? mx / 32767.0f : 1.0f, inv = 1.0f / sc;
    *scale = sc;
    const __m256 iv = _mm256_set1_ps(inv), half = _mm256_set1_ps(0.5f), sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-32767), hi = _mm256_set1_epi32(32767);
    for (int b = 0; b < G; b += 64) {
        const int n = G - b < 64 ? G - b : 64;
        int16_t nat[64], *o = q + b;
        const int direct = piece && b + 64 <= whole;
        for (int i = 0; i < n; i += 16) {
            __m256i v[2];
            for (int h = 0; h < 2; h++) {
                __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + b + i + 8 * h), iv);
                // t ± 0.5 by t's sign, then truncation: the scalar (int)(t + (t < 0 ? -0.5 : 0.5)) (-0 gives 0 either way)
                __m256i r = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_or_ps(half, _mm256_and_ps(t, sign))));
                v[h] = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);   // NaN → INT_MIN → −32767, as the scalar
            }
            __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v[0], v[1]), 0xD8);   // 16 int16 in order
            _mm256_storeu_si256((__m256i *)(direct ? o + piece[i / 16] : nat + i), w);
        }
        if (direct) continue;
        if (b + 64 <= whole)
            for (int c = 0; c < 64; c++) o[slot[c]] = nat[c];
        else
            memcpy(o, nat, sizeof(int16_t) * (size_t)n);
    }
}
#endif

static void prepare_inputs(q4_job *j, int layout) {
    const int quantize = layout != X16_NONE;
    const int m = j->m, k = j->k, G = j->group, groups = k / G;
    size_t need = (size_t)m * groups;
    if (need > scratch.len) {
        free(scratch.sum); free(scratch.scale);
        scratch.len = need;
        scratch.sum = malloc(need * sizeof(float));
        scratch.scale = malloc(need * sizeof(float));
    }
    if (quantize && (size_t)m * k > scratch.len16) {
        free(scratch.x16);
        scratch.len16 = (size_t)m * k;
        scratch.x16 = aligned_alloc(64, (scratch.len16 * sizeof(int16_t) + 63) / 64 * 64);
    }
    // AVX-512 reorders each 64 only when G % 64 == 0 (j->pairs); AVX2 every whole 64 of a group.
    uint8_t slot[64], piece[4];
    int together = 1;
    for (int c = 0; c < 64; c++) {
        slot[c] = (uint8_t)(quantize ? x16_slot(layout, c) : c);
        together &= slot[c] == slot[c - c % 16] + c % 16 && slot[c - c % 16] % 16 == 0;
    }
    for (int p = 0; p < 4; p++) piece[p] = slot[16 * p];
    const int whole = layout == X16_AVX512 ? (j->pairs ? G : 0) : G / 64 * 64;
    for (int v = 0; v < m; v++)
        for (int g = 0; g < groups; g++) {
            const float *x = j->X + (size_t)v * k + (size_t)g * G;
            float *sum = scratch.sum + (size_t)v * groups + g, *scale = scratch.scale + (size_t)v * groups + g;
            int16_t *q = quantize ? scratch.x16 + (size_t)v * k + (size_t)g * G : NULL;
            if (!quantize) { *sum = group_sum(x, G); continue; }
#if CK_HAVE_X86
            prepare_group_avx2(x, G, sum, scale, q, slot, together ? piece : NULL, whole);   // (layouts exist on x86 only)
#endif
        }
    j->xsum = scratch.sum;
    j->xscale = scratch.scale;
    j->x16 = quantize ? scratch.x16 : NULL;
}

void ck_matmul_q4(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y, int m, int n, int k,
                  const float *bias) {
    ck_matmul_q4_post(packed, sz, group, X, Y, m, n, k, bias, NULL);
}

void ck_matmul_q4_post(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y, int m, int n,
                       int k, const float *bias, const ck_post *post) {
    if (m <= 0 || n <= 0) return;
    if (post && post->kind == CK_POST_SILU_MUL && 2 * post->inter != n) abort();
    q4_job j = {packed, sz, group, X, Y, m, n, k, bias, NULL, NULL, NULL, group % 64 == 0, ck_vnni(), post};
    const int isa = ck_isa_level();
    prepare_inputs(&j, isa == CK_ISA_AVX512 ? X16_AVX512 : isa == CK_ISA_AVX2 ? X16_AVX2 : X16_NONE);
    // Claims of ~8 KiB of packed weights at least, in fours (the one-vector kernels take four rows at a time).
    int grain = ((int)(16384 / ((size_t)k + 1)) + 4) / 4 * 4;
    ck_parallel_range(q4_range, &j, ck_post_items(post, n), grain);
}

// ---- prefill ----------------------------------------------------------------------------------------
enum { TILE_ROWS = 64 };

static _Thread_local float *tile;
static _Thread_local size_t tile_len;

static void gemm_task(void *ctx, int t) {
    const q4_job *j = ctx;
    int r0 = t * TILE_ROWS, rows = j->n - r0 < TILE_ROWS ? j->n - r0 : TILE_ROWS;
    size_t need = (size_t)TILE_ROWS * j->k;
    if (need > tile_len) {
        free(tile);
        tile_len = need;
        tile = malloc(tile_len * sizeof(float));
    }
    ck_q4_dequantize_rows(j->W, j->sz, j->group, j->k, r0, r0 + rows, tile);
    float beta = 0.0f;
    if (j->bias) {
        for (int i = 0; i < j->m; i++)
            for (int c = 0; c < rows; c++) j->Y[(size_t)i * j->n + r0 + c] = j->bias[r0 + c];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, rows, j->k, 1.0f, j->X, j->k, tile, j->k,
                beta, j->Y + r0, j->n);
}

void ck_gemm_q4(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y, int m, int n, int k,
                const float *bias) {
    if (m <= 0 || n <= 0) return;
    static int blas_single = 0;
    if (!blas_single) {
        openblas_set_num_threads(1);
        blas_single = 1;
    }
    q4_job j = {packed, sz, group, X, Y, m, n, k, bias, NULL, NULL, NULL, 0, 0, NULL};
    ck_parallel(gemm_task, &j, (n + TILE_ROWS - 1) / TILE_ROWS);
}
