// Causal grouped-query attention over a paged KV cache, for a whole batch of sequences in one
// dispatch. A sequence's K/V rows live in fixed-size blocks of a shared pool, found through its
// block table. One task per (sequence, query token, head): scores = q·K[lo..pos] * scale,
// softmax, out = Σ p·V, where lo = 0 (full attention) or pos - window + 1 (sliding window).
// K and V are stored fp32, fp16 or int8 (the cache's element type, CK_F32 / CK_F16 / CK_I8) and
// widened as they are read; int8 elements are dequantized on the way (q·scale + zero, the scale
// and zero point of their layer and KV head), so the quantized cache never exists as floats. Each task's arithmetic depends only on its own sequence, so outputs do not
// change with the batch around them.
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include "vexp.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static float dot_scalar(const float *a, const float *b, int d) {
    float s = 0;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}
static void axpy_scalar(float *y, float a, const float *x, int d) {
    for (int i = 0; i < d; i++) y[i] += a * x[i];
}

#if CK_HAVE_X86
CK_TARGET_AVX512 static float dot_avx512(const float *a, const float *b, int d) {
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}
CK_TARGET_AVX512 static void axpy_avx512(float *y, float a, const float *x, int d) {
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= d; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}
CK_TARGET_AVX2 static float dot_avx2(const float *a, const float *b, int d) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= d; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < d; i++) r += a[i] * b[i];
    return r;
}
CK_TARGET_AVX2 static void axpy_avx2(float *y, float a, const float *x, int d) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < d; i++) y[i] += a * x[i];
}
#endif

#if CK_HAVE_X86
/// scores[p] = exp(scores[p] - mx) for p < n; returns their sum (fixed order: 16 lanes, then a tree).
CK_TARGET_AVX512 static float softmax_exp512(float *scores, int n, float mx) {
    __m512 m = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + p), m));
        _mm512_storeu_ps(scores + p, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (p < n) {
        __mmask16 k = (__mmask16)((1u << (n - p)) - 1);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, scores + p), m));
        _mm512_mask_storeu_ps(scores + p, k, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(sum);
}
#endif

#if CK_HAVE_X86
/// 16 K or V elements at element offset `off` of a pool of fp32 (kind 0), fp16 (1) or int8 (2:
/// the codes as floats; the callers apply the head's scale and zero point, see group_avx512_t).
CK_TARGET_AVX512 CK_INLINE __m512 kv_load16(const void *pool, size_t off, int kind) {
    if (kind == 2) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)pool + off))));
    return kind ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)pool + off)))
                : _mm512_loadu_ps((const float *)pool + off);
}
#endif

#if CK_HAVE_X86
// The sums of 16 vectors as one vector. Lane L of the result is the sum of a[4·(L % 4) + L / 4]
// (pairs of 256-bit halves, then of 128-bit quarters, then within quarters), so a caller that puts
// position i in a[(i % 4)·4 + i / 4] gets position i's sum in lane i.
CK_TARGET_AVX512 CK_INLINE __m512 sum16(const __m512 *a) {
    __m512 l1[8], l2[4], l3[2];
    for (int i = 0; i < 8; i++)   // blocks: a's two 128-bit partials, then b's
        l1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 4; i++)   // block j: a 4-lane partial of input 4i + j
        l2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int i = 0; i < 2; i++)   // block j: 2-lane partials of inputs 8i + j and 8i + 4 + j
        l3[i] = _mm512_add_ps(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(2, 0, 2, 0)),    // block j: inputs j, 4 + j,
                         _mm512_shuffle_ps(l3[0], l3[1], _MM_SHUFFLE(3, 1, 3, 1)));   // 8 + j, 12 + j
}

// Scores of G query heads (q in qv[g·nv + c]) against positions p0..n-1 of one KV head:
// scores[g·(n − p0) + p − p0] = (q_g·k_p + kbias[g]) · scale (kbias: int8's z·Σq, else 0), and mx[g]
// their max. 16 positions at a time: each position's G products go to a[g][slot], and sum16
// makes one vector of 16 scores of them (46 shuffles and adds, where a horizontal sum per score and
// head took ~8, and the scalar max a compare each: 15-35% of the in-cache time, one thread).
CK_TARGET_AVX512 CK_INLINE void scores512(const __m512 *qv, int G, int nv, const void *k_pool, int kv_stride, int block_size,
                                          const int32_t *blocks, int kv_offset, int p0, int n, int f16, const float *kbias,
                                          float scale, float *scores, float *mx, int short_rows) {
    // short_rows: the first that many rows end one position early (the first query of a pair): their max
    // leaves out position n − 1, whose score is computed and stored but not used.
    const int m = n - p0;
    __m512 mxv[8];
    for (int g = 0; g < G; g++) mxv[g] = _mm512_set1_ps(-INFINITY);
    int b = p0 / block_size, off = p0 % block_size;   // the next position's block and place in it
    for (int p = p0; p < n; p += 16) {
        const int cnt = n - p < 16 ? n - p : 16;
        __m512 a[8][16];
        for (int i = 0; i < 16; i++) {
            const int slot = (i % 4) * 4 + i / 4;   // sum16's lane order, so scores come out in position order
            if (i >= cnt) {
                for (int g = 0; g < G; g++) a[g][slot] = _mm512_setzero_ps();
                continue;
            }
            size_t k = ((size_t)blocks[b] * block_size + off) * kv_stride + kv_offset;
            if (++off == block_size) { off = 0; b++; }
            __m512 kc[16];
            for (int c = 0; c < nv; c++) kc[c] = kv_load16(k_pool, k + 16 * c, f16);
            for (int g = 0; g < G; g++) {
                __m512 acc = _mm512_setzero_ps();
                for (int c = 0; c < nv; c++) acc = _mm512_fmadd_ps(qv[g * nv + c], kc[c], acc);
                a[g][slot] = acc;
            }
        }
        const __mmask16 live = (__mmask16)((1u << cnt) - 1);
        const __mmask16 live_short = p + 16 >= n ? (__mmask16)(live >> 1) : live;   // without position n − 1
        for (int g = 0; g < G; g++) {
            __m512 sc = sum16(a[g]);
            if (f16 == 2) sc = _mm512_add_ps(sc, _mm512_set1_ps(kbias[g]));
            sc = _mm512_mul_ps(sc, _mm512_set1_ps(scale));
            _mm512_mask_storeu_ps(scores + g * m + p - p0, live, sc);
            mxv[g] = _mm512_mask_max_ps(mxv[g], g < short_rows ? live_short : live, sc, mxv[g]);   // a NaN score leaves the max as it was
        }
    }
    for (int g = 0; g < G; g++) mx[g] = _mm512_reduce_max_ps(mxv[g]);
}

// The kernels' loops run over G heads × d/16 (or d/8) vectors. With G and d known at compile time the
// compiler unrolls them and keeps q, the outputs and the K row in registers; with either known only at
// run time it kept them on the stack, and a decode step's attention ran 4.5x slower (SmolLM2, G = 3,
// d = 64, 1,024 positions: 10.6-12.0 against 2.5-2.6 ms per token, one thread). So the common shapes
// get their own instances (the kind too: fp32, fp16, int8), and any other shape the generic one.
#define ATTN_KINDS(CALL, G, D)                                                                              \
    do {                                                                                                    \
        if (kind == 2) CALL(G, D, 2); else if (kind) CALL(G, D, 1); else CALL(G, D, 0);                     \
    } while (0)
#define ATTN_SHAPE(CALL, G, D)                                                                              \
    if (group == (G) && d == (D)) { ATTN_KINDS(CALL, G, D); return; }

#endif

#if CK_HAVE_X86
// All G query heads that share one KV head, in one pass over the context: each K and V row is
// read once for the group instead of once per head (GQA models re-read them G times otherwise,
// which dominated long-context decode). q and the outputs are held in registers: no call and no
// reload per position (per-position dot/axpy calls cost 30% of a batch-16 decode step). Scores come
// 16 positions at a time (scores512), values accumulate position by position, the softmax uses the
// vector exp. Needs head_dim a multiple of 16 and T · G · head_dim / 16 ≤ 24; G = 1 is one head
// (head_avx512, head_dim up to 256).
// int8 (kind 2): q·(s·k + z) = (s·q)·k + z·Σq and Σ p·(s·v + z) = s·Σ p·v + z·Σ p, so a head's
// scale and zero point cost one multiply per score and per output, not one per element.
// With T = 2 the group's heads of two consecutive query tokens (q, then q2 = the next token's; outputs o,
// o2) share each K/V row's load and widening: rows 0..G−1 are the first token's, which stop one
// position earlier (its softmax covers m − 1 positions and the last weight is 0), so each row's
// arithmetic is the one-token kernel's exactly, and the results the same bits.
CK_TARGET_AVX512 CK_INLINE void group_avx512_t(const float *q, const float *q2, int T, int G, const void *k_pool, const void *v_pool,
                                               int kv_stride, int block_size, const int32_t *blocks, int kv_offset, int p0, int n, int d,
                                               float scale, float *scores, float *o, float *o2, int f16, float *ml, const float *qp) {
    const int nv = d / 16, m = n - p0, R = T * G;
    __m512 qv[24], ov[24];
    float kbias[8] = {0, 0, 0, 0, 0, 0, 0, 0};   // int8: z·Σq per query row (see above)
    for (int g = 0; g < R; g++) {
        const float *qg = g < G ? q + g * d : q2 + (g - G) * d;
        for (int c = 0; c < nv; c++) {
            qv[g * nv + c] = _mm512_loadu_ps(qg + 16 * c);
            ov[g * nv + c] = _mm512_setzero_ps();
            if (f16 == 2) {
                kbias[g] += _mm512_reduce_add_ps(qv[g * nv + c]);
                qv[g * nv + c] = _mm512_mul_ps(qv[g * nv + c], _mm512_set1_ps(qp[0]));
            }
        }
        kbias[g] *= qp[1];
    }
    float mx[8];
    scores512(qv, R, nv, k_pool, kv_stride, block_size, blocks, kv_offset, p0, n, f16, kbias, scale, scores, mx, T == 2 ? G : 0);
    float inv[8], sums[8];
    for (int g = 0; g < R; g++) {
        const int mg = T == 2 && g < G ? m - 1 : m;
        float sum = sums[g] = softmax_exp512(scores + g * m, mg, mx[g]);
        if (mg < m) scores[g * m + mg] = 0.0f;   // the first token's future position: weight 0, so V adds nothing
        inv[g] = ml ? 1.0f : 1.0f / sum;   // a partial keeps Σ p·V unnormalised, with its max and sum
        if (ml) { ml[2 * g] = mx[g]; ml[2 * g + 1] = sum; }
    }
    int b = p0 / block_size, off = p0 % block_size;
    for (int p = p0; p < n; p++) {
        size_t v = ((size_t)blocks[b] * block_size + off) * kv_stride + kv_offset;
        if (++off == block_size) { off = 0; b++; }
        for (int c = 0; c < nv; c++) {
            __m512 vc = kv_load16(v_pool, v + 16 * c, f16);
            for (int g = 0; g < R; g++) ov[g * nv + c] = _mm512_fmadd_ps(_mm512_set1_ps(scores[g * m + p - p0]), vc, ov[g * nv + c]);
        }
    }
    if (f16 == 2)
        for (int g = 0; g < R; g++)
            for (int c = 0; c < nv; c++)
                ov[g * nv + c] = _mm512_fmadd_ps(ov[g * nv + c], _mm512_set1_ps(qp[2]), _mm512_set1_ps(qp[3] * sums[g]));
    for (int g = 0; g < R; g++) {
        float *og = g < G ? o + g * d : o2 + (g - G) * d;
        for (int c = 0; c < nv; c++) _mm512_storeu_ps(og + 16 * c, _mm512_mul_ps(ov[g * nv + c], _mm512_set1_ps(inv[g])));
    }
}
CK_TARGET_AVX512 static void group_avx512(const float *q, int G, const void *k_pool, const void *v_pool, int kv_stride,
                                          int block_size, const int32_t *blocks, int kv_offset, int p0, int n, int d,
                                          float scale, float *scores, float *o, int kind, float *ml, const float *qp) {
#define GROUP512(GG, D, K) group_avx512_t(q, NULL, 1, GG, k_pool, v_pool, kv_stride, block_size, blocks, kv_offset, p0, n, D, scale, scores, o, NULL, K, ml, qp)
    const int group = G;
    ATTN_SHAPE(GROUP512, 2, 64) ATTN_SHAPE(GROUP512, 3, 64) ATTN_SHAPE(GROUP512, 2, 96)
    ATTN_SHAPE(GROUP512, 2, 32) ATTN_SHAPE(GROUP512, 3, 32) ATTN_SHAPE(GROUP512, 4, 32)
    ATTN_KINDS(GROUP512, G, d);
#undef GROUP512
}
/// Two consecutive query tokens of a prompt chunk (q2, o2: the second's), over positions p0..n−1, the
/// first stopping at n − 2; needs 2 · G · d / 16 ≤ 24 (pair_ok).
CK_TARGET_AVX512 static void group2_avx512(const float *q, const float *q2, int G, const void *k_pool, const void *v_pool,
                                           int kv_stride, int block_size, const int32_t *blocks, int kv_offset, int p0, int n,
                                           int d, float scale, float *scores, float *o, float *o2, int kind, const float *qp) {
#define GROUP512(GG, D, K) group_avx512_t(q, q2, 2, GG, k_pool, v_pool, kv_stride, block_size, blocks, kv_offset, p0, n, D, scale, scores, o, o2, K, NULL, qp)
    const int group = G;
    ATTN_SHAPE(GROUP512, 2, 64) ATTN_SHAPE(GROUP512, 3, 64) ATTN_SHAPE(GROUP512, 2, 96) ATTN_SHAPE(GROUP512, 2, 32)
    ATTN_SHAPE(GROUP512, 3, 32) ATTN_SHAPE(GROUP512, 4, 32)
    ATTN_KINDS(GROUP512, G, d);
#undef GROUP512
}
#define HEAD512(G, D, K) group_avx512_t(q, NULL, 1, 1, k_pool, v_pool, kv_stride, block_size, blocks, kv_offset, p0, n, D, scale, scores, o, NULL, K, ml, qp)
CK_TARGET_AVX512 static void head_avx512(const float *q, const void *k_pool, const void *v_pool, int kv_stride,
                                         int block_size, const int32_t *blocks, int kv_offset, int p0, int n, int d,
                                         float scale, float *scores, float *o, int kind, float *ml, const float *qp) {
    const int group = 1;
    ATTN_SHAPE(HEAD512, 1, 64) ATTN_SHAPE(HEAD512, 1, 128) ATTN_SHAPE(HEAD512, 1, 96) ATTN_SHAPE(HEAD512, 1, 256)
    ATTN_KINDS(HEAD512, 1, d);
}
#undef HEAD512
static int pair_ok(int group, int d) { return group > 1 && group <= 4 && 2 * group * (d / 16) <= 24; }
#endif

#if CK_HAVE_X86
// AVX2 counterparts of softmax_exp512 / group_avx512_t for machines without AVX-512 (Zen 3).
CK_TARGET_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
/// scores[p] = exp(scores[p] - mx) for p < n; returns their sum (8 lanes, then the tail in order).
CK_TARGET_AVX2 static float softmax_exp256(float *scores, int n, float mx) {
    __m256 m = _mm256_set1_ps(mx), sum = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= n; p += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + p), m));
        _mm256_storeu_ps(scores + p, e);
        sum = _mm256_add_ps(sum, e);
    }
    float s = hsum256(sum);
    if (p < n) {
        float t[8] = {0};
        for (int i = p; i < n; i++) t[i - p] = scores[i] - mx;
        __m256 e = exp256(_mm256_loadu_ps(t));
        _mm256_storeu_ps(t, e);
        for (int i = p; i < n; i++) { scores[i] = t[i - p]; s += t[i - p]; }
    }
    return s;
}
CK_TARGET_AVX2 CK_INLINE __m256 kv_load8(const void *pool, size_t off, int kind) {
    if (kind == 2) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)pool + off))));
    return kind ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)pool + off)))
                : _mm256_loadu_ps((const float *)pool + off);
}
// The G ≤ 8 query heads sharing one KV head in one pass over the context (G = 1 without GQA):
// each K and V row is read and widened once for the group. q and the outputs (G × head_dim / 8 ≤ 64
// vectors) live in L1 rather than registers. int8 folds scale and zero point as group_avx512_t does.
CK_TARGET_AVX2 CK_INLINE void group_avx2_t(const float *q, int G, const void *k_pool, const void *v_pool, int kv_stride,
                                           int block_size, const int32_t *blocks, int kv_offset, int p0, int n, int d,
                                           float scale, float *scores, float *o, int kind, float *ml, const float *qp) {
    const int nv = d / 8, m = n - p0;
    __m256 qv[64], ov[64];
    float kbias[8] = {0};
    for (int g = 0; g < G; g++) {
        for (int c = 0; c < nv; c++) {
            qv[g * nv + c] = _mm256_loadu_ps(q + g * d + 8 * c);
            ov[g * nv + c] = _mm256_setzero_ps();
            if (kind == 2) {
                kbias[g] += hsum256(qv[g * nv + c]);
                qv[g * nv + c] = _mm256_mul_ps(qv[g * nv + c], _mm256_set1_ps(qp[0]));
            }
        }
        kbias[g] *= qp[1];
    }
    float mx[8];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    for (int p = p0; p < n; p++) {
        size_t k = ((size_t)blocks[p / block_size] * block_size + p % block_size) * kv_stride + kv_offset;
        __m256 kc[32];
        for (int c = 0; c < nv; c++) kc[c] = kv_load8(k_pool, k + 8 * c, kind);
        for (int g = 0; g < G; g++) {
            __m256 acc = _mm256_setzero_ps();
            for (int c = 0; c < nv; c++) acc = _mm256_fmadd_ps(qv[g * nv + c], kc[c], acc);
            float sc = (kind == 2 ? hsum256(acc) + kbias[g] : hsum256(acc)) * scale;
            scores[g * m + p - p0] = sc;
            if (sc > mx[g]) mx[g] = sc;
        }
    }
    float inv[8], sums[8];
    for (int g = 0; g < G; g++) {
        float sum = sums[g] = softmax_exp256(scores + g * m, m, mx[g]);
        inv[g] = ml ? 1.0f : 1.0f / sum;   // a partial keeps Σ p·V unnormalised, with its max and sum
        if (ml) { ml[2 * g] = mx[g]; ml[2 * g + 1] = sum; }
    }
    for (int p = p0; p < n; p++) {
        size_t v = ((size_t)blocks[p / block_size] * block_size + p % block_size) * kv_stride + kv_offset;
        for (int c = 0; c < nv; c++) {
            __m256 vc = kv_load8(v_pool, v + 8 * c, kind);
            for (int g = 0; g < G; g++) ov[g * nv + c] = _mm256_fmadd_ps(_mm256_set1_ps(scores[g * m + p - p0]), vc, ov[g * nv + c]);
        }
    }
    if (kind == 2)
        for (int g = 0; g < G; g++)
            for (int c = 0; c < nv; c++)
                ov[g * nv + c] = _mm256_fmadd_ps(ov[g * nv + c], _mm256_set1_ps(qp[2]), _mm256_set1_ps(qp[3] * sums[g]));
    for (int g = 0; g < G; g++)
        for (int c = 0; c < nv; c++) _mm256_storeu_ps(o + g * d + 8 * c, _mm256_mul_ps(ov[g * nv + c], _mm256_set1_ps(inv[g])));
}
CK_TARGET_AVX2 static void group_avx2(const float *q, int G, const void *k_pool, const void *v_pool, int kv_stride,
                                      int block_size, const int32_t *blocks, int kv_offset, int p0, int n, int d,
                                      float scale, float *scores, float *o, int kind, float *ml, const float *qp) {
#define GROUP256(GG, D, K) group_avx2_t(q, GG, k_pool, v_pool, kv_stride, block_size, blocks, kv_offset, p0, n, D, scale, scores, o, K, ml, qp)
    const int group = G;
    ATTN_SHAPE(GROUP256, 1, 64) ATTN_SHAPE(GROUP256, 2, 64) ATTN_SHAPE(GROUP256, 3, 64) ATTN_SHAPE(GROUP256, 4, 64)
    ATTN_SHAPE(GROUP256, 1, 128) ATTN_SHAPE(GROUP256, 2, 128) ATTN_SHAPE(GROUP256, 4, 128)
    ATTN_KINDS(GROUP256, G, d);
#undef GROUP256
}
#endif

typedef struct {
    const float *q; int q_stride;
    const void *k_pool, *v_pool; int kv_kind; int kv_stride, block_size;   // kind: 0 fp32, 1 fp16, 2 int8
    const float *params;    // int8: [kv_heads][k_scale, k_zero, v_scale, v_zero]; else NULL
    const ck_attn_seq *seqs; int nseq;
    const int *task_base;   // first task index of each sequence (prefix sums of tokens × heads)
    float *out; int out_stride;
    int heads, kv_heads, d, window;
    float scale;
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
    int fused;     // use head_avx512
    int avx2;      // use group_avx2 (any group size it takes, 1 included)
    int group;     // query heads per task: a part of heads / kv_heads with group_avx512, all of them with group_avx2, else 1
    const int *chunks;   // per sequence: context pieces of its one query (1 = not split)
    float *partials;     // per task of a split sequence: group × d unnormalised outputs, then (max, sum) per head
    int pair;            // prompt chunks: a task takes two consecutive query tokens (group2_avx512)
} attn_job;

// Split-context decode (flash-decoding): one query over a long context is cut into pieces of at
// most SPLIT_CHUNK positions, each its own task, then merged in order. The cut depends only on the
// sequence's own context length, so a sequence computes the same bits alone or in any batch; it
// gives two threads work when a decode batch has fewer head groups than cores.
#define SPLIT_MIN 512
#define SPLIT_CHUNK 256

static _Thread_local float *scratch;
static _Thread_local size_t scratch_len;

/// A K or V row as fp32: the pool's own memory for fp32, else widened (int8: dequantized with
/// scale s and zero point z) into `tmp`.
static const float *kv_row(const attn_job *j, const void *pool, size_t off, float *tmp, float s, float z) {
    if (j->kv_kind == 0) return (const float *)pool + off;
    if (j->kv_kind == 2) {
        const int8_t *q = (const int8_t *)pool + off;
        for (int i = 0; i < j->d; i++) tmp[i] = (float)q[i] * s + z;
        return tmp;
    }
    ck_widen_serial((const uint16_t *)pool + off, CK_F16, tmp, (size_t)j->d);
    return tmp;
}

static void attn_one(const attn_job *j, const ck_attn_seq *seq, int task, int t, int h, int c, int C);

static float *task_scratch(size_t need) {
    if (need > scratch_len) {
        free(scratch);
        scratch_len = need + 1024;
        scratch = malloc(scratch_len * sizeof(float));
    }
    return scratch;
}

static void attn_task(void *ctx, int task) {
    const attn_job *j = ctx;
    int s = 0;   // the sequence owning this task: few sequences, so a linear scan is cheapest
    while (s + 1 < j->nseq && j->task_base[s + 1] <= task) s++;
    const ck_attn_seq *seq = &j->seqs[s];
    int local = task - j->task_base[s];
    int per_token = j->heads / j->group;
    int C = j->chunks[s];
    if (C > 1) {   // one query token: tasks are (head group, piece)
        attn_one(j, seq, task, 0, (local / C) * j->group, local % C, C);
        return;
    }
    if (!(j->pair && seq->tokens > 1)) {
        attn_one(j, seq, task, local / per_token, (local % per_token) * j->group, 0, 1);
        return;
    }
    // A prompt chunk: tokens t and t + 1 of the same head group, in one pass when their windows start together.
    const int t = 2 * (local / per_token), h = (local % per_token) * j->group, n = seq->start + t + 2;
    if (t + 1 >= seq->tokens || (j->window > 0 && n > j->window)) {
        attn_one(j, seq, task, t, h, 0, 1);
        if (t + 1 < seq->tokens) attn_one(j, seq, task, t + 1, h, 0, 1);
        return;
    }
#if CK_HAVE_X86
    const int kvh = h / (j->heads / j->kv_heads);
    static const float unit[4] = {1, 0, 1, 0};
    const float *qp = j->params ? j->params + 4 * kvh : unit;
    const float *q = j->q + (size_t)(seq->q_row + t) * j->q_stride + (size_t)h * j->d;
    float *o = j->out + (size_t)(seq->q_row + t) * j->out_stride + (size_t)h * j->d;
    group2_avx512(q, q + j->q_stride, j->group, j->k_pool, j->v_pool, j->kv_stride, j->block_size, seq->blocks, kvh * j->d,
                  0, n, j->d, j->scale, task_scratch((size_t)n * 2 * j->group + (size_t)j->d), o, o + j->out_stride,
                  j->kv_kind, qp);
#endif
}

/// One query token t of a sequence for query heads h..h+group−1 (piece c of C when its context is split).
static void attn_one(const attn_job *j, const ck_attn_seq *seq, int task, int t, int h, int c, int C) {
    int kvh = h / (j->heads / j->kv_heads);
    static const float unit[4] = {1, 0, 1, 0};
    const float *qp = j->params ? j->params + 4 * kvh : unit;
    int n = seq->start + t + 1;                                   // positions 0..n-1 precede and include the query
    int p0 = j->window > 0 && n > j->window ? n - j->window : 0;  // sliding window: the last `window` of them
    int lo = p0, hi = n;
    float *o = j->out + (size_t)(seq->q_row + t) * j->out_stride + (size_t)h * j->d, *ml = NULL;
    if (C > 1) {
        int per = (n - p0 + C - 1) / C;
        lo = p0 + c * per;
        hi = lo + per < n ? lo + per : n;
        o = j->partials + (size_t)task * j->group * (j->d + 2);
        ml = o + (size_t)j->group * j->d;
    }
    float *scratch = task_scratch((size_t)(hi - lo) * j->group + (size_t)j->d);
#if CK_HAVE_X86
    if (j->avx2) {
        group_avx2(j->q + (size_t)(seq->q_row + t) * j->q_stride + (size_t)h * j->d, j->group, j->k_pool, j->v_pool,
                   j->kv_stride, j->block_size, seq->blocks, kvh * j->d, lo, hi, j->d, j->scale, scratch, o, j->kv_kind, ml, qp);
        return;
    }
    if (j->group > 1) {
        group_avx512(j->q + (size_t)(seq->q_row + t) * j->q_stride + (size_t)h * j->d, j->group, j->k_pool, j->v_pool,
                     j->kv_stride, j->block_size, seq->blocks, kvh * j->d, lo, hi, j->d, j->scale, scratch, o, j->kv_kind, ml, qp);
        return;
    }
#endif
    const float *q = j->q + (size_t)(seq->q_row + t) * j->q_stride + (size_t)h * j->d;
    const int bs = j->block_size;
#if CK_HAVE_X86
    if (j->fused) {
        head_avx512(q, j->k_pool, j->v_pool, j->kv_stride, bs, seq->blocks, kvh * j->d, lo, hi, j->d, j->scale, scratch,
                    o, j->kv_kind, ml, qp);
        return;
    }
#endif
    float *scores = scratch, *tmp = scratch + (n - p0);
    float mx = -INFINITY;
    for (int p = p0; p < n; p++) {
        size_t off = ((size_t)seq->blocks[p / bs] * bs + p % bs) * j->kv_stride + (size_t)kvh * j->d;
        float sc = j->dot(q, kv_row(j, j->k_pool, off, tmp, qp[0], qp[1]), j->d) * j->scale;
        scores[p - p0] = sc;
        if (sc > mx) mx = sc;
    }
    float sum = 0;
    for (int p = 0; p < n - p0; p++) {
        scores[p] = expf(scores[p] - mx);
        sum += scores[p];
    }
    for (int i = 0; i < j->d; i++) o[i] = 0;   // (never split: chunks > 1 only with the fused and group kernels)
    for (int p = p0; p < n; p++) {
        size_t off = ((size_t)seq->blocks[p / bs] * bs + p % bs) * j->kv_stride + (size_t)kvh * j->d;
        j->axpy(o, scores[p - p0], kv_row(j, j->v_pool, off, tmp, qp[2], qp[3]), j->d);
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < j->d; i++) o[i] *= inv;
}

static void attention(const float *q, int q_stride, const void *k_pool, const void *v_pool, int kind, const float *params,
                      int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                      float *out, int out_stride, int heads, int kv_heads, int d, float scale, int window) {
    if (nseq <= 0) return;
    attn_job j = {q, q_stride, k_pool, v_pool, kind, kv_stride, block_size, params, seqs, nseq, NULL, out, out_stride,
                  heads, kv_heads, d, window, scale, dot_scalar, axpy_scalar, 0, 0, 1, NULL, NULL};
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512:
        j.dot = dot_avx512;
        j.axpy = axpy_avx512;
        j.fused = d % 16 == 0 && d <= 256;
        // The query heads of a KV head in tasks of the largest part (≤ 4, a divisor) whose q and outputs fit
        // in registers: 8 heads of 64 (TinyLlama, Llama 3) read each K/V row in 4 tasks instead of 8.
        for (int g = 4; j.fused && g >= 2; g--)
            if ((heads / kv_heads) % g == 0 && g * (d / 16) <= 12) { j.group = g; break; }
        j.pair = pair_ok(j.group, d);   // prompt rows two tokens per task (K/V widened once for both)
        break;
    case CK_ISA_AVX2:
        j.dot = dot_avx2;
        j.axpy = axpy_avx2;
        if (d % 8 == 0 && d <= 256 && heads / kv_heads <= 8 && heads / kv_heads * (d / 8) <= 64) {
            j.avx2 = 1;
            j.group = heads / kv_heads;
        }
        break;
#endif
    default: break;
    }
    int base_small[64], chunks_small[64];
    int *task_base = nseq <= 64 ? base_small : malloc(sizeof(int) * (size_t)nseq);
    int *chunks = nseq <= 64 ? chunks_small : malloc(sizeof(int) * (size_t)nseq);
    int tasks = 0, split = 0;
    for (int s = 0; s < nseq; s++) {
        task_base[s] = tasks;
        int n = seqs[s].start + 1, p0 = window > 0 && n > window ? n - window : 0;
        chunks[s] = (j.fused || j.avx2) && seqs[s].tokens == 1 && n - p0 >= SPLIT_MIN ? (n - p0 + SPLIT_CHUNK - 1) / SPLIT_CHUNK : 1;
        split |= chunks[s] > 1;
        tasks += (chunks[s] == 1 && j.pair && seqs[s].tokens > 1 ? (seqs[s].tokens + 1) / 2 : seqs[s].tokens) * (heads / j.group) * chunks[s];
    }
    j.task_base = task_base;
    j.chunks = chunks;
    j.partials = split ? malloc(sizeof(float) * (size_t)tasks * j.group * (d + 2)) : NULL;
    ck_parallel(attn_task, &j, tasks);
    // Merge each split query's pieces in order: out = Σ_c e^(m_c − M) o_c / Σ_c e^(m_c − M) l_c.
    for (int s = 0; split && s < nseq; s++) {
        int C = chunks[s];
        if (C == 1) continue;
        for (int hg = 0; hg < heads / j.group; hg++) {
            for (int g = 0; g < j.group; g++) {
                float M = -INFINITY, L = 0;
                for (int c = 0; c < C; c++) {
                    const float *part = j.partials + (size_t)(task_base[s] + hg * C + c) * j.group * (d + 2);
                    float m = part[(size_t)j.group * d + 2 * g];
                    if (m > M) M = m;
                }
                float *o = out + (size_t)seqs[s].q_row * out_stride + (size_t)(hg * j.group + g) * d;
                for (int i = 0; i < d; i++) o[i] = 0;
                for (int c = 0; c < C; c++) {
                    const float *part = j.partials + (size_t)(task_base[s] + hg * C + c) * j.group * (d + 2);
                    float w = expf(part[(size_t)j.group * d + 2 * g] - M);
                    L += w * part[(size_t)j.group * d + 2 * g + 1];
                    for (int i = 0; i < d; i++) o[i] += w * part[(size_t)g * d + i];
                }
                float inv = 1.0f / L;
                for (int i = 0; i < d; i++) o[i] *= inv;
            }
        }
    }
    free(j.partials);
    if (chunks != chunks_small) free(chunks);
    if (task_base != base_small) free(task_base);
}

void ck_attention_paged(const float *q, int q_stride, const void *k_pool, const void *v_pool, ck_dtype kv_type,
                        int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                        float *out, int out_stride, int heads, int kv_heads, int d, float scale, int window) {
    if (kv_type == CK_I8) abort();   // int8 needs its parameters: ck_attention_paged_i8
    attention(q, q_stride, k_pool, v_pool, kv_type == CK_F16, NULL, kv_stride, block_size, seqs, nseq, out, out_stride,
              heads, kv_heads, d, scale, window);
}

void ck_attention_paged_i8(const float *q, int q_stride, const int8_t *k_pool, const int8_t *v_pool, const float *kv_params,
                           int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                           float *out, int out_stride, int heads, int kv_heads, int d, float scale, int window) {
    attention(q, q_stride, k_pool, v_pool, 2, kv_params, kv_stride, block_size, seqs, nseq, out, out_stride,
              heads, kv_heads, d, scale, window);
}
