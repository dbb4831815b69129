// Skinny matrix products against stored-precision weights: Y[m][n] = X[m][k] · W[n][k]ᵀ.
// Decode is bound by reading the weights, so each weight chunk is widened once in registers
// and used for up to four input vectors. Every output's reduction over k follows one fixed
// order that depends on k alone, whatever m, n or the thread split: results do not depend on
// batch composition (the engine's batch-invariance rests on this). int8 rows: matmul_i8.c.
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include <math.h>
#include <stdlib.h>

typedef struct {
    const void *W; int wt; const float *X; float *Y; int m, n, k; const float *bias;
    const ck_post *post;   // what each piece of rows does next (NULL: nothing)
} matmul_job;

static inline size_t esize(int wt) { return wt == CK_F32 ? 4 : 2; }

/// An output from its row's sum: plus the bias.
static inline float finish(const matmul_job *j, int r, float sum) { return sum + (j->bias ? j->bias[r] : 0.0f); }

// ---- portable C --------------------------------------------------------------------------
static void rows_scalar(const matmul_job *j, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        for (int v = 0; v < j->m; v++) {
            const float *x = j->X + (size_t)v * j->k;
            float s[4] = {0, 0, 0, 0};
            int kk = 0;
            for (; kk + 4 <= j->k; kk += 4)
                for (int l = 0; l < 4; l++)
                    s[l] += ck_load_scalar(j->W, j->wt, (size_t)r * j->k + kk + l) * x[kk + l];
            float sum = (s[0] + s[1]) + (s[2] + s[3]);
            for (; kk < j->k; kk++) sum += ck_load_scalar(j->W, j->wt, (size_t)r * j->k + kk) * x[kk];
            j->Y[(size_t)v * j->n + r] = finish(j, r, sum);
        }
    }
}

#if CK_HAVE_X86
// For one vector, rows are walked one at a time, front to back, so the weights stream through
// memory in order: the hardware prefetcher then keeps a core at full bandwidth (interleaving four
// rows' streams halved it). Each output's accumulators and their final sum follow a fixed order.

// ---- AVX-512: 16 lanes, tiles of up to 2 rows × 4 vectors ------------------------------------
CK_TARGET_AVX512 CK_INLINE __m512 w512(const void *W, int wt, size_t off) {
    if (wt == CK_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + off))), 16));
    if (wt == CK_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + off)));
    return _mm512_loadu_ps((const float *)W + off);
}

CK_TARGET_AVX512 CK_INLINE __m512 w512_tail(const void *W, int wt, size_t off, __mmask16 m) {
    if (wt == CK_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)W + off)), 16));
    if (wt == CK_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)W + off));
    return _mm512_maskz_loadu_ps(m, (const float *)W + off);
}

// One tile of R adjacent rows × V vectors. Every output keeps two accumulators (even and odd
// 16-lane chunks of each 32-element step, the tail masked into the even one), summed at the end:
// the same arithmetic for every R and V, so tiling never changes a result. Two chains already
// outrun memory for one vector; for many vectors, two rows share each x load.
#ifndef MATMUL_PREFETCH_BYTES
#define MATMUL_PREFETCH_BYTES 2048
#endif
CK_TARGET_AVX512 CK_INLINE void tile512(const matmul_job *j, int wt, int r, int R, int v0, int V) {
    const int k = j->k;
    __m512 acc[2][4][2];
    for (int i = 0; i < R; i++)
        for (int v = 0; v < V; v++) acc[i][v][0] = acc[i][v][1] = _mm512_setzero_ps();
    int kk = 0;
    // 64 elements per iteration for more loads in flight; chunk c still goes to accumulator c % 2,
    // in order, so this unrolling changes no result.
    for (; kk + 64 <= k; kk += 64) {
        if (R == 1) {
            // Ahead in the same stream (rows are contiguous), into L2 only: on Sapphire Rapids the
            // hardware prefetcher alone gave 14.0 GB/s where a prefetch gave 16.1; on Zen 4 one into
            // L1 (T0) cost a third (21 against 31 GB/s) and one into L2 (T2) gives 31-34 (docs/cpu-speed.md).
            const char *ahead = (const char *)j->W + ((size_t)r * k + kk) * esize(wt) + MATMUL_PREFETCH_BYTES;
            _mm_prefetch(ahead, _MM_HINT_T2);
            _mm_prefetch(ahead + 64, _MM_HINT_T2);
            if (wt == CK_F32) { _mm_prefetch(ahead + 128, _MM_HINT_T2); _mm_prefetch(ahead + 192, _MM_HINT_T2); }
        }
        __m512 w[2][4];
        for (int i = 0; i < R; i++)
            for (int c = 0; c < 4; c++) w[i][c] = w512(j->W, wt, (size_t)(r + i) * k + kk + 16 * c);
        for (int v = 0; v < V; v++) {
            const float *x = j->X + (size_t)(v0 + v) * k + kk;
            for (int c = 0; c < 4; c++) {
                __m512 xc = _mm512_loadu_ps(x + 16 * c);
                for (int i = 0; i < R; i++) acc[i][v][c & 1] = _mm512_fmadd_ps(w[i][c], xc, acc[i][v][c & 1]);
            }
        }
    }
    for (; kk + 32 <= k; kk += 32) {
        __m512 w[2][2];
        for (int i = 0; i < R; i++) {
            w[i][0] = w512(j->W, wt, (size_t)(r + i) * k + kk);
            w[i][1] = w512(j->W, wt, (size_t)(r + i) * k + kk + 16);
        }
        for (int v = 0; v < V; v++) {
            const float *x = j->X + (size_t)(v0 + v) * k + kk;
            __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            for (int i = 0; i < R; i++) {
                acc[i][v][0] = _mm512_fmadd_ps(w[i][0], x0, acc[i][v][0]);
                acc[i][v][1] = _mm512_fmadd_ps(w[i][1], x1, acc[i][v][1]);
            }
        }
    }
    for (; kk < k; kk += 16) {
        __mmask16 m = k - kk >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - kk)) - 1);
        __m512 w[2];
        for (int i = 0; i < R; i++) w[i] = w512_tail(j->W, wt, (size_t)(r + i) * k + kk, m);
        for (int v = 0; v < V; v++) {
            __m512 x = _mm512_maskz_loadu_ps(m, j->X + (size_t)(v0 + v) * k + kk);
            for (int i = 0; i < R; i++) acc[i][v][0] = _mm512_fmadd_ps(w[i], x, acc[i][v][0]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int v = 0; v < V; v++)
            j->Y[(size_t)(v0 + v) * j->n + r + i] = finish(j, r + i, _mm512_reduce_add_ps(_mm512_add_ps(acc[i][v][0], acc[i][v][1])));
}

#define TILE512_V(J, WT, R0, R, V0, V) \
    switch (V) { case 1: tile512(J, WT, R0, R, V0, 1); break; case 2: tile512(J, WT, R0, R, V0, 2); break; \
                 case 3: tile512(J, WT, R0, R, V0, 3); break; default: tile512(J, WT, R0, R, V0, 4); }

CK_TARGET_AVX512 CK_INLINE void rows512_t(const matmul_job *j, int wt, int r0, int r1) {
    // Up to four vectors: rows one at a time, front to back (a single stream the prefetcher
    // follows; two interleaved row streams halved the bandwidth out of cache).
    if (j->m <= 4) {
        for (int r = r0; r < r1; r++) { TILE512_V(j, wt, r, 1, 0, j->m) }
        return;
    }
    // Many vectors: a block of rows (~64 KiB of weights, kept in L2) meets each group of four
    // vectors (kept in L1) in turn, so neither is streamed from further away per tile.
    const int block = (int)(65536 / ((size_t)j->k * esize(wt))) / 2 * 2 + 2;
    for (int b0 = r0; b0 < r1; b0 += block) {
        int b1 = b0 + block < r1 ? b0 + block : r1;
        for (int v0 = 0; v0 < j->m; v0 += 4) {
            int V = j->m - v0, r = b0;
            for (; r + 2 <= b1; r += 2) {
                if (v0 == 0 && b1 < r1) {
                    // Fetch the matching rows of the next block while this one computes, so the
                    // next block's first pass finds them in cache.
                    const char *next = (const char *)j->W + ((size_t)(r + block) * j->k) * esize(wt);
                    for (size_t off = 0; off < 2 * (size_t)j->k * esize(wt); off += 64) _mm_prefetch(next + off, _MM_HINT_T1);
                }
                TILE512_V(j, wt, r, 2, v0, V)
            }
            for (; r < b1; r++) { TILE512_V(j, wt, r, 1, v0, V) }
        }
    }
}

CK_TARGET_AVX512 static void rows_avx512(const matmul_job *j, int r0, int r1) {
    switch (j->wt) {
    case CK_BF16: rows512_t(j, CK_BF16, r0, r1); break;
    case CK_F16: rows512_t(j, CK_F16, r0, r1); break;
    default: rows512_t(j, CK_F32, r0, r1); break;
    }
}

// ---- AVX2 + F16C + FMA: 8 lanes, one row × up to 2 vectors (13 of 16 registers) -------------
CK_TARGET_AVX2 CK_INLINE __m256 w256(const void *W, int wt, size_t off) {
    if (wt == CK_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + off))), 16));
    if (wt == CK_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + off)));
    return _mm256_loadu_ps((const float *)W + off);
}

CK_TARGET_AVX2 CK_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CK_TARGET_AVX2 CK_INLINE void row256(const matmul_job *j, int wt, int r, int v0, int V) {
    const int k = j->k;
    const size_t base = (size_t)r * k;
    __m256 acc[2][4];
    for (int v = 0; v < V; v++)
        for (int a = 0; a < 4; a++) acc[v][a] = _mm256_setzero_ps();
    int kk = 0;
    for (; kk + 32 <= k; kk += 32) {
        __m256 w0 = w256(j->W, wt, base + kk), w1 = w256(j->W, wt, base + kk + 8);
        __m256 w2 = w256(j->W, wt, base + kk + 16), w3 = w256(j->W, wt, base + kk + 24);
        for (int v = 0; v < V; v++) {
            const float *x = j->X + (size_t)(v0 + v) * k + kk;
            acc[v][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc[v][0]);
            acc[v][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), acc[v][1]);
            acc[v][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), acc[v][2]);
            acc[v][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), acc[v][3]);
        }
    }
    for (; kk + 8 <= k; kk += 8) {
        __m256 w = w256(j->W, wt, base + kk);
        for (int v = 0; v < V; v++)
            acc[v][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(j->X + (size_t)(v0 + v) * k + kk), acc[v][0]);
    }
    for (int v = 0; v < V; v++) {
        float s = hsum256(_mm256_add_ps(_mm256_add_ps(acc[v][0], acc[v][1]), _mm256_add_ps(acc[v][2], acc[v][3])));
        const float *x = j->X + (size_t)(v0 + v) * k;
        for (int t = kk; t < k; t++) s += ck_load_scalar(j->W, wt, base + t) * x[t];
        j->Y[(size_t)(v0 + v) * j->n + r] = finish(j, r, s);
    }
}

CK_TARGET_AVX2 CK_INLINE void rows256_t(const matmul_job *j, int wt, int r0, int r1) {
    for (int r = r0; r < r1; r++)
        for (int v0 = 0; v0 < j->m; v0 += 2) {
            if (j->m - v0 >= 2) row256(j, wt, r, v0, 2); else row256(j, wt, r, v0, 1);
        }
}

CK_TARGET_AVX2 static void rows_avx2(const matmul_job *j, int r0, int r1) {
    switch (j->wt) {
    case CK_BF16: rows256_t(j, CK_BF16, r0, r1); break;
    case CK_F16: rows256_t(j, CK_F16, r0, r1); break;
    default: rows256_t(j, CK_F32, r0, r1); break;
    }
}
#endif

CK_DECODE_PRODUCT(matmul, matmul_job, rows_avx512(j, r0, r1), rows_avx2(j, r0, r1), rows_scalar(j, r0, r1))

static void matmul(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                   const float *bias, const ck_post *post) {
    if (m <= 0 || n <= 0) return;
    if (post && post->kind == CK_POST_SILU_MUL && 2 * post->inter != n) abort();
    matmul_job j = {W, (int)wtype, X, Y, m, n, k, bias, post};
    // Claims of ~8 KiB of weights at least, so a claim's cost stays small next to its work.
    int grain = (int)(8192 / ((size_t)k * esize(wtype) + 1)) + 1;
    ck_parallel_range(matmul_range, &j, ck_post_items(post, n), grain);
}

void ck_matmul_wt(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                  const float *bias) {
    ck_matmul_wt_post(W, wtype, X, Y, m, n, k, bias, NULL);
}

void ck_matmul_wt_post(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                       const float *bias, const ck_post *post) {
    if (wtype == CK_I8) abort();   // int8 rows need their scales: ck_matmul_i8 (matmul_i8.c)
    matmul(W, wtype, X, Y, m, n, k, bias, post);
}
