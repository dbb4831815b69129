// Prefill products with bf16 inputs: Y[m][n] = bf16(X)[m][k] · W[n][k]ᵀ (+ bias), X rounded to
// bf16 (nearest even), products exact, sums in fp32: the numerics of a bf16 model run in bf16, as
// llama.cpp, vLLM and lmdeploy run one (`--dtype bfloat16`).
//
// AVX-512 BF16 (Zen 4, Sapphire Rapids; bf16 weights): vdpbf16ps multiplies 16 pairs of bf16 and
// adds both products into 16 fp32 lanes, twice the multiply-adds of an fp32 FMA per instruction.
// Each pool task owns one panel of NR = 32 output columns; per block of KC inputs it copies its
// weight rows into a panel P[k/2][NR] of bf16 pairs (a 32-bit transpose, no widening: 16 KiB, L1),
// then runs an MR×NR register tile (16 accumulators, 2 panel loads and MR pair broadcasts per 2
// inputs) down all rows of X, which is rounded to bf16 once per call by the caller. Blocking depends
// on n and k only, so a row's result never depends on the rows beside it.
//
// Elsewhere (no AVX-512 BF16, fp16/fp32 weights, a test turning it off, a forced lower ISA): X is
// rounded to bf16 into scratch and ck_gemm_wt runs on it: the same products, another summation order.
#include "ckernels.h"
#include "isa.h"
#include "pool.h"
#include <stdlib.h>
#include <string.h>

static int detected = -1;
static _Thread_local int dp_off;

static int has_dpbf16(void) {
#if defined(__x86_64__)
    if (detected < 0) { __builtin_cpu_init(); detected = __builtin_cpu_supports("avx512bf16") ? 1 : 0; }
    return detected && !dp_off && ck_isa_level() >= CK_ISA_AVX512;
#else
    return 0;
#endif
}

int ck_gemm_use_dpbf16(int on) {
    if (on >= 0) dp_off = !on;
    return has_dpbf16();
}

/// fp32 → bf16, nearest even; NaN stays a (quiet) NaN, as vcvtneps2bf16 gives.
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

// The caller's scratch: X as bf16 (dpbf16 path) or as bf16-valued fp32 (fallback).
static _Thread_local void *xs;
static _Thread_local size_t xs_bytes;

static void *scratch(size_t bytes) {
    if (bytes > xs_bytes) {
        free(xs);
        xs_bytes = (bytes + 63) / 64 * 64;
        xs = aligned_alloc(64, xs_bytes);
    }
    return xs;
}

#if CK_HAVE_X86
#define CK_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
enum { MR = 8, NR = 32, KC_MAX = 256 };

typedef struct { const uint16_t *W; const uint32_t *Xp; float *Y; int m, n, k, ldx; const float *bias; } dp_job;

// Columns [c0, c0+cols) of W, inputs [p0, p0+kc): P[q][c] = the bf16 pair (p0+2q, p0+2q+1) of column
// c, zero past cols and past k (an odd k leaves the last pair's high half zero).
static void pack_pairs(const uint16_t *W, int k, int c0, int cols, int p0, int kc, uint32_t *P) {
    const int pairs = (kc + 1) / 2;
    for (int c = 0; c < NR; c++) {
        if (c >= cols) {
            for (int q = 0; q < pairs; q++) P[q * NR + c] = 0;
            continue;
        }
        const uint16_t *row = W + (size_t)(c0 + c) * k + p0;
        int q = 0;
        for (; 2 * q + 1 < kc; q++) {
            uint32_t v;
            memcpy(&v, row + 2 * q, sizeof v);
            P[q * NR + c] = v;
        }
        if (q < pairs) P[q * NR + c] = row[2 * q];
    }
}

// Y[rows][cols] = (first ? bias : Y) + X[rows][pairs] · P, rows ≤ MR, cols ≤ NR. Rows past `rows`
// re-read row 0 (their sums are dropped); constant loop bounds keep the 16 accumulators in registers.
CK_TARGET_BF16 static void tile_8x32(const uint32_t *X, int ldx, const uint32_t *P, int pairs, float *Y, int ldy,
                                     int rows, int cols, int first, const float *bias) {
    __m512 acc[MR][2];
    const uint32_t *x[MR];
    for (int r = 0; r < MR; r++) {
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        x[r] = X + (size_t)(r < rows ? r : 0) * ldx;
    }
    for (int q = 0; q < pairs; q++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(P + q * NR), b1 = (__m512bh)_mm512_load_si512(P + q * NR + 16);
        for (int r = 0; r < MR; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)x[r][q]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
        }
    }
    const __mmask16 m0 = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    for (int r = 0; r < rows; r++) {
        float *y = Y + (size_t)r * ldy;
        const float *base = first ? bias : y;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (base) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, base));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, base + 16));
        }
        _mm512_mask_storeu_ps(y, m0, v0);
        _mm512_mask_storeu_ps(y + 16, m1, v1);
    }
}

static _Thread_local uint32_t *panel;

CK_TARGET_BF16 static void dp_task(void *ctx, int t) {
    const dp_job *j = ctx;
    if (!panel) panel = aligned_alloc(64, (size_t)NR * (KC_MAX / 2) * sizeof(uint32_t));
    const int c0 = t * NR, cols = j->n - c0 < NR ? j->n - c0 : NR;
    const int kblocks = (j->k + KC_MAX - 1) / KC_MAX;
    const int kcs = ((j->k + kblocks - 1) / kblocks + 1) & ~1;   // even blocks, so pairs never straddle two
    for (int p0 = 0; p0 < j->k; p0 += kcs) {
        const int kc = j->k - p0 < kcs ? j->k - p0 : kcs;
        pack_pairs(j->W, j->k, c0, cols, p0, kc, panel);
        for (int i = 0; i < j->m; i += MR)
            tile_8x32(j->Xp + (size_t)i * j->ldx + p0 / 2, j->ldx, panel, (kc + 1) / 2, j->Y + (size_t)i * j->n + c0,
                      j->n, j->m - i < MR ? j->m - i : MR, cols, p0 == 0, j->bias ? j->bias + c0 : NULL);
    }
}

// Rows of X as bf16, each padded to an even length with a zero.
CK_TARGET_BF16 static void round_rows_bf16(const float *X, int m, int k, uint16_t *dst) {
    const int kp = (k + 1) & ~1;
    for (int i = 0; i < m; i++) {
        const float *x = X + (size_t)i * k;
        uint16_t *d = dst + (size_t)i * kp;
        int p = 0;
        for (; p + 16 <= k; p += 16)
            _mm256_storeu_si256((__m256i *)(d + p), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + p)));
        if (p < kp) {   // the tail, and the zero that pads an odd k, through the same conversion
            const __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << (k - p)) - 1), x + p);
            _mm256_mask_storeu_epi16(d + p, (__mmask16)((1u << (kp - p)) - 1), (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}
typedef struct { const float *X; int m, k; uint16_t *dst; int per; } round_job;
static void round_task(void *ctx, int t) {
    const round_job *r = ctx;
    const int i0 = t * r->per, i1 = i0 + r->per < r->m ? i0 + r->per : r->m;
    if (i0 < i1) round_rows_bf16(r->X + (size_t)i0 * r->k, i1 - i0, r->k, r->dst + (size_t)i0 * ((r->k + 1) & ~1));
}
#endif

void ck_gemm_bf16x(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k, const float *bias) {
    if (m <= 0 || n <= 0) return;
#if CK_HAVE_X86
    if (wtype == CK_BF16 && k > 0 && has_dpbf16()) {
        const int kp = (k + 1) & ~1;
        uint16_t *xb = scratch((size_t)m * kp * sizeof(uint16_t));
        // All threads round, in pieces of rows (on the caller alone it was ~2.5% of a prefill's samples,
        // the other threads waiting); each row's bits are the same either way.
        const int tasks = m < 32 ? 1 : 8;
        round_job r = {X, m, k, xb, (m + tasks - 1) / tasks};
        ck_parallel(round_task, &r, tasks);
        dp_job j = {W, (const uint32_t *)xb, Y, m, n, k, kp / 2, bias};
        ck_parallel(dp_task, &j, (n + NR - 1) / NR);
        return;
    }
#endif
    float *xr = scratch((size_t)m * k * sizeof(float));
    for (size_t i = 0; i < (size_t)m * k; i++) {
        uint32_t u = (uint32_t)to_bf16(X[i]) << 16;
        memcpy(&xr[i], &u, sizeof u);
    }
    ck_gemm_wt(W, wtype, xr, Y, m, n, k, bias);
}
