// W4A16 products: Y[m][n] = X[m][k] · W[n][k]ᵀ with W in 4-bit groups (layout in ck_int4.h).
// Decode is bound by reading weights, and 4-bit weights are a quarter of fp16's bytes, so the
// loop must dequantize faster than memory delivers. The zero point is taken out of the inner loop:
// Σ (q − z)·s·x = s·Σ q·x − z·s·Σ x, with Σ x per group computed once per call for each input
// vector. AVX-512 and AVX2 multiply the nibbles as 16-bit integers against the inputs quantized to
// int16 per group (tile512, row256); portable C widens the nibbles to fp32.
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

// Groups of at most this many inputs take the integer paths (see row256).
#define Q4_INT_GROUP_MAX 4096
// Tiles unroll fully so that their accumulators stay in registers (clang left a row loop rolled, the
// accumulators on the stack).
#define Q4_UNROLL _Pragma("clang loop unroll(full)")

// ---- the product job --------------------------------------------------------------------------
typedef struct {
    const uint8_t *W; const uint16_t *sz; int group; const float *X; float *Y; int m, n, k;
    const float *bias;
    const float *xsum, *xscale;   // [groups][m]: Σx of each group of each vector, and (integer paths) its int16 scale
    const int16_t *x16;           // integer paths: X as int16 [m][k], each whole 64 of a group in word order; else NULL
    int vnni;                     // the caller's VNNI choice, for every worker
    const ck_post *post;          // decode: what each piece of rows does next
} q4_job;

// (scale, zero) of row r, group g: tiles of 16 rows, the 16 pairs of a group side by side (ck_int4.h).
static inline const uint16_t *q4_pair(const uint16_t *sz, int groups, int r, int g) {
    return sz + (((size_t)(r / 16) * groups + g) * 16 + r % 16) * 2;
}

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
        for (int v = 0; v < j->m; v++) {
            const float *x = j->X + (size_t)v * k;
            float acc = 0.0f, corr = 0.0f;
            for (int g = 0; g < groups; g++) {
                const uint16_t *p = q4_pair(j->sz, groups, r, g);
                float s = ck_f16_to_f32(p[0]), z = ck_f16_to_f32(p[1]);
                float d[4] = {0, 0, 0, 0};
                for (int i = g * G; i < (g + 1) * G; i += 4)
                    for (int l = 0; l < 4; l++) d[l] += (float)nibble(w, i + l) * x[i + l];
                acc += s * ((d[0] + d[1]) + (d[2] + d[3]));
                corr -= z * s * j->xsum[(size_t)g * j->m + v];
            }
            j->Y[(size_t)v * j->n + r] = acc + corr + (j->bias ? j->bias[r] : 0.0f);
        }
    }
}

static void dequant_scalar(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            const uint16_t *p = q4_pair(szs, groups, r, g);
            float s = ck_f16_to_f32(p[0]), z = ck_f16_to_f32(p[1]);
            for (int i = g * G; i < (g + 1) * G; i++) o[i] = ((float)nibble(w, i) - z) * s;
        }
    }
}

#if CK_HAVE_X86
// ---- integer dot products (AVX2 and AVX-512) ----------------------------------------------------
// Converting every nibble to fp32 made the loop compute-bound at ~3 weights per cycle, slower than
// streaming bf16. Instead each input vector is quantized once per call to int16 per group of G
// (scale max|x|/32767, so |error| ≤ 2^-16 of the group's largest input: finer than fp16's 2^-11
// relative step), and the nibbles, as 16-bit lanes, meet it in vpmaddwd/vpdpwssd.
// A group's sum T = Σ q·x16 is exact in int32 (|T| ≤ G · 15 · 32767 < 2^31 for G ≤ Q4_INT_GROUP_MAX;
// larger groups take the portable path), so every lane split gives the same T, and what follows is a
// fixed chain over the groups in order: acc = fma(float(T), s · xs, acc), corr = fma(−(z · s), Σx, corr),
// y = acc + corr (+ bias). AVX2 runs it per row (row256) or for 8 rows of one vector (tile256), AVX-512 for
// 16 (row, vector) pairs at once in vector lanes (tile512): the same bits on each, for any batch and split.
// A 64-input chunk of a row (32 bytes, two 32-input blocks) is read as 16 words of 4 nibbles: nibble 0
// of each word (the even bytes' low nibbles), then 2, 1 and 3, each one mask or shift; x16 holds each
// whole 64 inputs of a group in that order (prepare_group_avx2), a group's last 32 when G % 64 = 32 in input order.

CK_TARGET_AVX2 CK_INLINE int hsum256_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// A whole 64-input chunk (32 bytes) against its 64 int16 inputs in word order: nibbles 0, 2, 1, 3 of each
// word, one mask or shift each, as 8 int32 lanes of exact partial sums.
CK_TARGET_AVX2 CK_INLINE __m256i q4_chunk256(__m256i raw, const __m256i *x) {
    const __m256i m4 = _mm256_set1_epi16(15);
    const __m256i s0 = _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(raw, m4), _mm256_loadu_si256(x)),
                                        _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 8), m4), _mm256_loadu_si256(x + 1)));
    const __m256i s1 = _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), _mm256_loadu_si256(x + 2)),
                                        _mm256_madd_epi16(_mm256_srli_epi16(raw, 12), _mm256_loadu_si256(x + 3)));
    return _mm256_add_epi32(s0, s1);
}

// A group's last 32 inputs (16 bytes, G % 64 = 32) against 32 int16 inputs in input order.
CK_TARGET_AVX2 CK_INLINE __m256i q4_block256(__m128i raw, const __m256i *x) {
    const __m256i e = _mm256_cvtepu8_epi16(raw), m4 = _mm256_set1_epi16(15);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(e, m4), _mm256_loadu_si256(x)),       // inputs 0..15
                            _mm256_madd_epi16(_mm256_srli_epi16(e, 4), _mm256_loadu_si256(x + 1)));  // 16..31
}

// One row × V ≤ 4 vectors on 8 int32 lanes.
CK_TARGET_AVX2 CK_INLINE void row256(const q4_job *j, int r, int v0, int V) {
    const int k = j->k, G = j->group, groups = k / G, m = j->m;
    const uint8_t *w = j->W + (size_t)r * (k / 2);
    float acc[4] = {0, 0, 0, 0}, corr[4] = {0, 0, 0, 0};
    for (int g = 0; g < groups; g++) {
        const int base = g * G;
        __m256i a[4];
        for (int v = 0; v < V; v++) a[v] = _mm256_setzero_si256();
        int b = 0;
        for (; b + 64 <= G; b += 64) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + (base + b) / 2));
            for (int v = 0; v < V; v++)
                a[v] = _mm256_add_epi32(a[v], q4_chunk256(raw, (const __m256i *)(j->x16 + (size_t)(v0 + v) * k + base + b)));
        }
        for (; b < G; b += 32) {
            const __m128i raw = _mm_loadu_si128((const __m128i *)(w + (base + b) / 2));
            for (int v = 0; v < V; v++)
                a[v] = _mm256_add_epi32(a[v], q4_block256(raw, (const __m256i *)(j->x16 + (size_t)(v0 + v) * k + base + b)));
        }
        const uint16_t *p = q4_pair(j->sz, groups, r, g);
        const float s = _cvtsh_ss(p[0]), z = _cvtsh_ss(p[1]);
        for (int v = 0; v < V; v++) {
            const size_t gi = (size_t)g * m + v0 + v;
            const float sx = s * j->xscale[gi];
            acc[v] = fmaf((float)hsum256_epi32(a[v]), sx, acc[v]);
            corr[v] = q4_corr(corr[v], z, s, j->xsum[gi]);
        }
    }
    for (int v = 0; v < V; v++) {
        const float y = acc[v] + corr[v];
        j->Y[(size_t)(v0 + v) * j->n + r] = j->bias ? y + j->bias[r] : y;
    }
}

// row256 with V a constant in each call, so that its accumulators stay in registers (with V known only
// at run time they lived on the stack: 5× slower).
CK_TARGET_AVX2 CK_INLINE void row256v(const q4_job *j, int r, int v0, int V) {
    switch (V) {
    case 1: row256(j, r, v0, 1); break;
    case 2: row256(j, r, v0, 2); break;
    case 3: row256(j, r, v0, 3); break;
    default: row256(j, r, v0, 4); break;
    }
}

// Lane i of the result = Σ of a[i]'s 8 lanes (integer adds, exact): pairs, quads, then the 128-bit halves.
CK_TARGET_AVX2 CK_INLINE __m256i q4_sum8x8(const __m256i a[8]) {
    __m256i s[4], u[2];
    for (int i = 0; i < 4; i++)   // per 128-bit lane: (a0 + a2, b0 + b2, a1 + a3, b1 + b3)
        s[i] = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++)   // per 128-bit lane L: the sums of lane L of a[4i] .. a[4i + 3]
        u[i] = _mm256_add_epi32(_mm256_unpacklo_epi64(s[2 * i], s[2 * i + 1]), _mm256_unpackhi_epi64(s[2 * i], s[2 * i + 1]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(u[0], u[1], 0x20), _mm256_permute2x128_si256(u[0], u[1], 0x31));
}

// One vector, rows r .. r + 7 (r % 8 = 0, so their pairs are one 32-byte load): row256's arithmetic, with
// the float chain 8 rows wide after one shuffle tree (the per-row sums and scalar chain cost 13% at G = 64).
CK_TARGET_AVX2 CK_INLINE void tile256(const q4_job *j, int r) {
    const int k = j->k, G = j->group, groups = k / G;
    const size_t rb = (size_t)k / 2;
    const uint8_t *w = j->W + (size_t)r * rb;
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);
    const int16_t *x16 = j->x16;
    __m256 acc = _mm256_setzero_ps(), corr = acc;
    for (int g = 0; g < groups; g++) {
        const int base = g * G;
        __m256i a[8];
        Q4_UNROLL for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_si256();
        int b = 0;
        for (; b + 64 <= G; b += 64)
            Q4_UNROLL for (int i = 0; i < 8; i++)
                a[i] = _mm256_add_epi32(a[i], q4_chunk256(_mm256_loadu_si256((const __m256i *)(w + i * rb + (base + b) / 2)),
                                                          (const __m256i *)(x16 + base + b)));
        for (; b < G; b += 32)
            Q4_UNROLL for (int i = 0; i < 8; i++)
                a[i] = _mm256_add_epi32(a[i], q4_block256(_mm_loadu_si128((const __m128i *)(w + i * rb + (base + b) / 2)),
                                                          (const __m256i *)(x16 + base + b)));
        const __m256i pz = _mm256_loadu_si256((const __m256i *)q4_pair(j->sz, groups, r, g));
        const __m256i sw = _mm256_and_si256(pz, low16), zw = _mm256_srli_epi32(pz, 16);
        const __m256 s = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(sw), _mm256_extracti128_si256(sw, 1)));
        const __m256 z = _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(zw), _mm256_extracti128_si256(zw, 1)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_sum8x8(a)), _mm256_mul_ps(s, _mm256_set1_ps(j->xscale[g * j->m])), acc);
        corr = _mm256_fnmadd_ps(_mm256_mul_ps(z, s), _mm256_set1_ps(j->xsum[g * j->m]), corr);
    }
    float y[8];
    _mm256_storeu_ps(y, _mm256_add_ps(acc, corr));
    for (int i = 0; i < 8; i++) j->Y[r + i] = j->bias ? y[i] + j->bias[r + i] : y[i];
}

// One vector: tiles of 8 rows from a multiple of 8, other rows one at a time. Up to four vectors: row by
// row (one stream the prefetcher follows). More: a block of rows (~32 KiB of packed weights, kept in L2)
// meets each group of four vectors (their int16 inputs kept in L1) in turn.
CK_TARGET_AVX2 static void rows_avx2(const q4_job *j, int r0, int r1) {
    if (j->m == 1) {
        int r = r0;
        for (; r < r1 && r % 8; r++) row256(j, r, 0, 1);
        for (; r + 8 <= r1; r += 8) tile256(j, r);
        for (; r < r1; r++) row256(j, r, 0, 1);
        return;
    }
    const int block = j->m <= 4 ? r1 - r0 : (int)(32768 / ((size_t)j->k / 2)) + 1;
    for (int b0 = r0; b0 < r1; b0 += block) {
        const int b1 = b0 + block < r1 ? b0 + block : r1;
        for (int v0 = 0; v0 < j->m; v0 += 4) {
            const int V = j->m - v0 < 4 ? j->m - v0 : 4;
            for (int r = b0; r < b1; r++) row256v(j, r, v0, V);
        }
    }
}

// ---- AVX-512: 16 (row, vector) lanes per tile ---------------------------------------------------
// Eight int32 accumulators, each holding two rows' sums in its halves (the two rows' chunks side by
// side in one vector, the inputs broadcast to both halves), meet in one shuffle tree (q4_sum8: 21
// operations for 16 sums) and the float chain above runs 16 lanes wide. At G = 64 the scalar form of
// that chain per row had cost as much as the multiply-adds (docs/w4a16.md).
// Lanes: accumulator i's low half is lane (i / 4)·8 + i % 4, its high half that + 4 (q4_sum8's order);
// lane l is row r + l / VV of vector v0 + l % VV, VV = V rounded up to 1, 2 or 4 (with 3 vectors the
// fourth lane of each row is computed from the third's inputs and dropped).
CK_TARGET_AVX512 CK_INLINE __m512i q4_sum8(const __m512i a[8]) {
    __m512i s[4], u[2];
    for (int i = 0; i < 4; i++)   // per 128-bit lane: (a0 + a2, b0 + b2, a1 + a3, b1 + b3)
        s[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++)   // per 128-bit lane L: the sums of lane L of accumulators 4i .. 4i + 3
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(s[2 * i], s[2 * i + 1]), _mm512_unpackhi_epi64(s[2 * i], s[2 * i + 1]));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88), _mm512_shuffle_i32x4(u[0], u[1], 0xDD));
}
#define Q4_LANE(i) (((i) / 4) * 8 + (i) % 4)

// Rows r .. r + 16/VV − 1 (inside one 16-row tile of sz) × vectors v0 .. v0 + V − 1. Each row's bytes are
// prefetched one tile ahead into L2 (T2): with weights far past the L3 the hardware prefetcher alone left
// decode at ~10-12 GB/s; into L1 (T0) Zen 4 reached 18-20 GB/s where T2 reaches 24-27 (docs/w4a16.md).
#define Q4_TILE(NAME, TARGET, DOT)                                                                          \
    TARGET CK_INLINE void NAME(const q4_job *j, int r, int v0, const int V) {                               \
        const int VV = V == 3 ? 4 : V, R = 16 / VV, P = 8 / VV;                                             \
        const int k = j->k, G = j->group, groups = k / G, m = j->m;                                         \
        const size_t rb = (size_t)k / 2, ahead = (size_t)R * rb;                                            \
        const uint8_t *w = j->W + (size_t)r * rb;                                                           \
        const __m512i m4 = _mm512_set1_epi16(15);                                                           \
        const __m256i m4b = _mm256_set1_epi8(15);                                                           \
        int rowi[16], veci[16];                                                                             \
        for (int l = 0; l < 16; l++) {                                                                      \
            rowi[l] = r % 16 + l / VV;                                                                      \
            veci[l] = l % VV < V ? l % VV : V - 1;                                                          \
        }                                                                                                   \
        const __m512i ri = _mm512_loadu_si512((const void *)rowi), vi = _mm512_loadu_si512((const void *)veci); \
        const __mmask16 vm = (__mmask16)((1u << V) - 1);                                                    \
        const int16_t *xv[4];                                                                               \
        for (int v = 0; v < 4; v++) xv[v] = j->x16 + (size_t)(v0 + (v < V ? v : V - 1)) * k;               \
        __m512 acc = _mm512_setzero_ps(), corr = acc;                                                       \
        for (int g = 0; g < groups; g++) {                                                                  \
            const int base = g * G;                                                                         \
            __m512i a[8];                                                                                   \
            Q4_UNROLL for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_si512();                            \
            int b = 0;                                                                                      \
            for (; b + 64 <= G; b += 64) {                                                                  \
                __m512i x[4][4];                                                                            \
                Q4_UNROLL for (int v = 0; v < VV; v++)                                                      \
                    Q4_UNROLL for (int q = 0; q < 4; q++)                                                   \
                        x[v][q] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xv[v] + base + b + 16 * q))); \
                Q4_UNROLL for (int p = 0; p < P; p++) {                                                     \
                    const uint8_t *pa = w + (size_t)(Q4_LANE(p * VV) / VV) * rb + (base + b) / 2;           \
                    const uint8_t *pb = w + (size_t)((Q4_LANE(p * VV) + 4) / VV) * rb + (base + b) / 2;     \
                    _mm_prefetch((const char *)(pa + ahead), _MM_HINT_T2);                                  \
                    _mm_prefetch((const char *)(pb + ahead), _MM_HINT_T2);                                  \
                    const __m512i raw = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)pa)), \
                                                           _mm256_loadu_si256((const __m256i *)pb), 1);     \
                    const __m512i q0 = _mm512_and_si512(raw, m4);                                           \
                    const __m512i q1 = _mm512_and_si512(_mm512_srli_epi16(raw, 8), m4);                     \
                    const __m512i q2 = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);                     \
                    const __m512i q3 = _mm512_srli_epi16(raw, 12);                                          \
                    Q4_UNROLL for (int v = 0; v < VV; v++) {                                                \
                        __m512i t = DOT(a[p * VV + v], q0, x[v][0]);                                        \
                        t = DOT(t, q1, x[v][1]);                                                            \
                        t = DOT(t, q2, x[v][2]);                                                            \
                        a[p * VV + v] = DOT(t, q3, x[v][3]);                                                \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
            for (; b < G; b += 32) {                                                                        \
                Q4_UNROLL for (int p = 0; p < P; p++) {                                                     \
                    const uint8_t *pa = w + (size_t)(Q4_LANE(p * VV) / VV) * rb + (base + b) / 2;           \
                    const uint8_t *pb = w + (size_t)((Q4_LANE(p * VV) + 4) / VV) * rb + (base + b) / 2;     \
                    const __m256i raw = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)pb), _mm_loadu_si128((const __m128i *)pa)); \
                    const __m512i lo = _mm512_cvtepu8_epi16(_mm256_and_si256(raw, m4b));                    \
                    const __m512i hi = _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4b)); \
                    Q4_UNROLL for (int v = 0; v < VV; v++) {                                                \
                        const int16_t *x = xv[v] + base + b;                                                \
                        __m512i t = DOT(a[p * VV + v], lo, _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x))); \
                        a[p * VV + v] = DOT(t, hi, _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x + 16)))); \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
            __m512i pz = _mm512_loadu_si512((const void *)q4_pair(j->sz, groups, r - r % 16, g));           \
            if (V > 1 || r % 16) pz = _mm512_permutexvar_epi32(ri, pz);                                     \
            const __m512 s = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(pz));                                    \
            const __m512 z = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(pz, 16)));             \
            const float *xs = j->xscale + (size_t)g * m + v0, *xm = j->xsum + (size_t)g * m + v0;           \
            const __m512 sx = V == 1 ? _mm512_set1_ps(xs[0]) : _mm512_permutexvar_ps(vi, _mm512_maskz_loadu_ps(vm, xs)); \
            const __m512 sm = V == 1 ? _mm512_set1_ps(xm[0]) : _mm512_permutexvar_ps(vi, _mm512_maskz_loadu_ps(vm, xm)); \
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q4_sum8(a)), _mm512_mul_ps(s, sx), acc);               \
            corr = _mm512_fnmadd_ps(_mm512_mul_ps(z, s), sm, corr);                                         \
        }                                                                                                   \
        float y[16];                                                                                        \
        _mm512_storeu_ps(y, _mm512_add_ps(acc, corr));                                                      \
        for (int l = 0; l < 16; l++) {                                                                      \
            const int v = l % VV, row = r + l / VV;                                                         \
            if (v < V) j->Y[(size_t)(v0 + v) * j->n + row] = j->bias ? y[l] + j->bias[row] : y[l];          \
        }                                                                                                   \
    }

// Tiles of 16 / VV rows from a row aligned to that size (so a tile stays inside one 16-row tile of sz),
// the rows before and after one at a time (row256: the same bits). More than four vectors: a block of
// rows (~32 KiB of packed weights, kept in L2) meets each group of four vectors (their int16 inputs kept
// in L1) in turn.
#define Q4_ROWS512(NAME, TARGET, TILE)                                                                      \
    TARGET static void NAME(const q4_job *j, int r0, int r1) {                                              \
        const int block = j->m <= 4 ? r1 - r0 : ((int)(32768 / ((size_t)j->k / 2)) / 16 + 1) * 16;       \
        for (int b0 = r0; b0 < r1; b0 += block) {                                                           \
            const int b1 = b0 + block < r1 ? b0 + block : r1;                                               \
            for (int v0 = 0; v0 < j->m; v0 += 4) {                                                          \
                const int V = j->m - v0 < 4 ? j->m - v0 : 4, R = 16 / (V == 3 ? 4 : V);                     \
                int r = b0;                                                                                 \
                for (; r < b1 && r % R; r++) row256v(j, r, v0, V);                                           \
                for (; r + R <= b1; r += R) switch (V) {                                                    \
                    case 1: TILE(j, r, v0, 1); break;                                                       \
                    case 2: TILE(j, r, v0, 2); break;                                                       \
                    case 3: TILE(j, r, v0, 3); break;                                                       \
                    default: TILE(j, r, v0, 4); break;                                                      \
                    }                                                                                       \
                for (; r < b1; r++) row256v(j, r, v0, V);                                                   \
            }                                                                                               \
        }                                                                                                   \
    }
#define Q4_MADD(a, q, x) _mm512_add_epi32(a, _mm512_madd_epi16(q, x))
// vpdpwssd written out: LLVM's machine combiner split the intrinsic into vpmaddwd + vpaddd (twice the
// operations) on chains of multiply-adds into one accumulator, where eight independent ones hide the latency.
CK_TARGET_AVX512_VNNI CK_INLINE __m512i q4_dpwssd(__m512i a, __m512i q, __m512i x) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(a) : "v"(q), "v"(x));
    return a;
}
Q4_TILE(tile512, CK_TARGET_AVX512, Q4_MADD)
Q4_ROWS512(rows_avx512, CK_TARGET_AVX512, tile512)
Q4_TILE(tile512v, CK_TARGET_AVX512_VNNI, q4_dpwssd)
Q4_ROWS512(rows_avx512_vnni, CK_TARGET_AVX512_VNNI, tile512v)

CK_TARGET_AVX512 static void dequant_avx512(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    const __m512i low = _mm512_set1_epi32(15);
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            const uint16_t *p = q4_pair(szs, groups, r, g);
            const float s = _cvtsh_ss(p[0]), z = _cvtsh_ss(p[1]);
            const __m512 sv = _mm512_set1_ps(s), zv = _mm512_set1_ps(z);
            for (int b = g * G; b < (g + 1) * G; b += 32) {
                __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w + b / 2)));
                _mm512_storeu_ps(o + b, _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_and_si512(e, low)), zv), sv));
                _mm512_storeu_ps(o + b + 16, _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(e, 4)), zv), sv));
            }
        }
    }
}

CK_TARGET_AVX2 static void dequant_avx2(const uint8_t *W, const uint16_t *szs, int G, int k, int r0, int r1, float *dst) {
    const int groups = k / G;
    const __m256i low = _mm256_set1_epi32(15);
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * (k / 2);
        float *o = dst + (size_t)(r - r0) * k;
        for (int g = 0; g < groups; g++) {
            const uint16_t *p = q4_pair(szs, groups, r, g);
            const float s = _cvtsh_ss(p[0]), z = _cvtsh_ss(p[1]);
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
CK_DECODE_PRODUCT(q4, q4_job,
                  if (!j->x16) rows_scalar(j, r0, r1); else if (j->vnni) rows_avx512_vnni(j, r0, r1); else rows_avx512(j, r0, r1),
                  if (!j->x16) rows_scalar(j, r0, r1); else rows_avx2(j, r0, r1), rows_scalar(j, r0, r1))

// Σ x over each group of each input vector, in a fixed order (a vector's sums never depend on m);
// for the integer paths also X as int16 per group (round to nearest, scale max|x|/32767), each whole 64
// inputs of a group in the order the kernels' nibble vectors come in: input c of a chunk sits in byte
// 16·(c / 32) + c % 16, its low nibble for c % 32 < 16, and the kernels take the chunk as 16 words of
// 4 nibbles in the order nibble 0 (the even bytes' low nibble), 2 (the odd bytes' low), 1, 3, so input
// c goes to word (2·half + byte % 2)·16 + byte / 2 (half = (c % 32) / 16, byte as above).
typedef struct { float *sum, *scale; int16_t *x16; size_t len, len16; } group_scratch;
static _Thread_local group_scratch scratch;

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
// and the inputs as int16 in the kernels' word order (each whole 64; a last 32 in input order): round half away
// from zero of x · (1 / scale), scale = max|x| / 32767, clamped to ±32767. Eight inputs at a time, the bits
// of the scalar loop it replaced: that ran on the calling thread before every int4 product (the other
// thread waiting), ~7% of a SmolLM2 W4A16 decode step.
CK_TARGET_AVX2 static void prepare_group_avx2(const float *x, int G, float *sum, float *scale, int16_t *q) {
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
        for (int i = 0; i < n; i += 16) {
            __m256i v[2];
            for (int h = 0; h < 2; h++) {
                __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + b + i + 8 * h), iv);
                // t ± 0.5 by t's sign, then truncation: the scalar (int)(t + (t < 0 ? -0.5 : 0.5)) (-0 gives 0 either way)
                __m256i r = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_or_ps(half, _mm256_and_ps(t, sign))));
                v[h] = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);   // NaN → INT_MIN → −32767, as the scalar
            }
            __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v[0], v[1]), 0xD8);   // 16 int16 in order
            if (n < 64) {
                _mm256_storeu_si256((__m256i *)(nat + i), w);
                continue;
            }
            // Inputs i .. i + 15 of a whole 64 are bytes 16·block .. +15 of the chunk, nibble `half`: the even
            // bytes' go to word piece 2·half, the odd bytes' to piece 2·half + 1, at words 8·block .. +7.
            const int block = i / 32, half = (i % 32) / 16;
            const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                                   0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
            const __m256i eo = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(w, split), 0xD8);   // even words, odd words
            _mm_storeu_si128((__m128i *)(o + (2 * half) * 16 + 8 * block), _mm256_castsi256_si128(eo));
            _mm_storeu_si128((__m128i *)(o + (2 * half + 1) * 16 + 8 * block), _mm256_extracti128_si256(eo, 1));
        }
        if (n < 64) memcpy(o, nat, sizeof(int16_t) * (size_t)n);
    }
}
#endif

static void prepare_inputs(q4_job *j, int quantize) {
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
    for (int v = 0; v < m; v++)
        for (int g = 0; g < groups; g++) {
            const float *x = j->X + (size_t)v * k + (size_t)g * G;
            float *sum = scratch.sum + (size_t)g * m + v, *scale = scratch.scale + (size_t)g * m + v;
            if (!quantize) { *sum = group_sum(x, G); continue; }
#if CK_HAVE_X86
            prepare_group_avx2(x, G, sum, scale, scratch.x16 + (size_t)v * k + (size_t)g * G);   // (x86 only)
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
    q4_job j = {packed, sz, group, X, Y, m, n, k, bias, NULL, NULL, NULL, ck_vnni(), post};
    const int isa = ck_isa_level();
    prepare_inputs(&j, (isa == CK_ISA_AVX512 || isa == CK_ISA_AVX2) && group <= Q4_INT_GROUP_MAX);
    // Claims of ~8 KiB of packed weights at least, in sixteens (the AVX-512 tiles' rows).
    int grain = ((int)(16384 / ((size_t)k + 1)) + 16) / 16 * 16;
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
    q4_job j = {packed, sz, group, X, Y, m, n, k, bias, NULL, NULL, NULL, 0, NULL};
    ck_parallel(gemm_task, &j, (n + TILE_ROWS - 1) / TILE_ROWS);
}
