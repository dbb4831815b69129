// Prefill products (many rows): Y[m][n] = X[m][k] · W[n][k]ᵀ, weights used as stored (bf16, fp16
// or fp32), no fp32 copy of the model.
//
// AVX2 and up: our own blocked GEMM. Each pool task owns NC output columns; for each block of KC
// input columns it widens its weight rows into fp32 panels of NR columns laid out [k][NR] (a shift
// for bf16, F16C for fp16) in a per-thread buffer that stays in L2, then runs an MR×NR register
// tile (12 fp32 accumulators, 6 broadcasts and 2 panel loads per k) over MC-row blocks of X so
// the panel being read stays in L1. The widening is paid once per weight element per call, not
// per row of X. Every Y element sums its k-blocks in the same order whatever m is, so a row's
// result does not depend on the rows beside it.
//
// Scalar level (or a forced "scalar"): OpenBLAS sgemm on widened tiles of 64 weight rows. BLAS
// runs single-threaded inside our pool: two thread pools spinning on two cores would fight.
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

enum { TILE_ROWS = 64 };

typedef struct { const void *W; int wt; const float *X; float *Y; int m, n, k; const float *bias; } gemm_job;

static _Thread_local float *tile;
static _Thread_local size_t tile_len;

static void gemm_task(void *ctx, int t) {
    const gemm_job *j = ctx;
    int r0 = t * TILE_ROWS, rows = j->n - r0 < TILE_ROWS ? j->n - r0 : TILE_ROWS;
    size_t esize = j->wt == CK_F32 ? 4 : 2;
    const float *w;
    if (j->wt == CK_F32) {
        w = (const float *)j->W + (size_t)r0 * j->k;
    } else {
        size_t need = (size_t)rows * j->k;
        if (need > tile_len) {
            free(tile);
            tile_len = (size_t)TILE_ROWS * j->k;
            tile = malloc(tile_len * sizeof(float));
        }
        const char *src = (const char *)j->W + (size_t)r0 * j->k * esize;
        ck_widen_serial(src, j->wt, tile, need);
        w = tile;
    }
    float beta = 0.0f;
    if (j->bias) {
        for (int i = 0; i < j->m; i++)
            for (int c = 0; c < rows; c++) j->Y[(size_t)i * j->n + r0 + c] = j->bias[r0 + c];
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, rows, j->k, 1.0f, j->X, j->k, w, j->k,
                beta, j->Y + r0, j->n);
}

#if CK_HAVE_X86
enum { MR = 6, NR = 16, NC = 64, MC = 96, KC_MAX = 384 };

// Columns [c0, c0+cols) of W, inputs [p0, p0+kc), widened into panels P[panel][p][NR] (zero past cols).
CK_TARGET_AVX2 static void pack_panels(const void *W, int wt, int k, int c0, int cols, int p0, int kc, float *P) {
    for (int pn = 0; pn < (cols + NR - 1) / NR; pn++) {
        float *dst = P + (size_t)pn * kc * NR;
        for (int c = 0; c < NR; c++) {
            int col = pn * NR + c;
            if (col >= cols) {
                for (int p = 0; p < kc; p++) dst[p * NR + c] = 0;
                continue;
            }
            size_t at = (size_t)(c0 + col) * k + p0;
            int p = 0;
            float t[8];
            for (; p + 8 <= kc; p += 8) {
                __m256 v;
                if (wt == CK_BF16)
                    v = _mm256_castsi256_ps(_mm256_slli_epi32(
                        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + at + p))), 16));
                else if (wt == CK_F16)
                    v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + at + p)));
                else
                    v = _mm256_loadu_ps((const float *)W + at + p);
                _mm256_storeu_ps(t, v);
                for (int q = 0; q < 8; q++) dst[(p + q) * NR + c] = t[q];
            }
            for (; p < kc; p++)
                dst[p * NR + c] = wt == CK_BF16 ? ck_bf16_to_f32(((const uint16_t *)W)[at + p])
                                : wt == CK_F16  ? ck_f16_to_f32(((const uint16_t *)W)[at + p])
                                                : ((const float *)W)[at + p];
        }
    }
}

// Y[rows][cols] = (first ? bias : Y) + X[rows][kc] · panel, rows ≤ MR, cols ≤ NR. Rows past `rows`
// re-read row 0 (their sums are dropped) so the loop has no branches.
CK_TARGET_AVX2 static void tile_6x16(const float *X, int ldx, const float *P, int kc, float *Y, int ldy, int rows,
                                     int cols, int first, const float *bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *x0 = X, *x1 = X + (rows > 1 ? ldx : 0), *x2 = X + (rows > 2 ? 2 * ldx : 0);
    const float *x3 = X + (rows > 3 ? 3 * ldx : 0), *x4 = X + (rows > 4 ? 4 * ldx : 0), *x5 = X + (rows > 5 ? 5 * ldx : 0);
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(P + p * NR), b1 = _mm256_load_ps(P + p * NR + 8), a;
        a = _mm256_broadcast_ss(x0 + p); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(x1 + p); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(x2 + p); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(x3 + p); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(x4 + p); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(x5 + p); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int i = 0; i < rows; i++) {
        float *y = Y + (size_t)i * ldy, t[NR];
        const float *base = first ? bias : y;
        if (cols == NR) {
            if (base) {
                acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(base));
                acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(base + 8));
            }
            _mm256_storeu_ps(y, acc[i][0]);
            _mm256_storeu_ps(y + 8, acc[i][1]);
        } else {
            _mm256_storeu_ps(t, acc[i][0]);
            _mm256_storeu_ps(t + 8, acc[i][1]);
            for (int c = 0; c < cols; c++) y[c] = base ? base[c] + t[c] : t[c];
        }
    }
}

static _Thread_local float *panels;

CK_TARGET_AVX2 static void gemm_avx2_task(void *ctx, int t) {
    const gemm_job *j = ctx;
    if (!panels) panels = aligned_alloc(64, (size_t)NC * KC_MAX * sizeof(float));
    int c0 = t * NC, cols = j->n - c0 < NC ? j->n - c0 : NC;
    int kblocks = (j->k + KC_MAX - 1) / KC_MAX, kcs = (j->k + kblocks - 1) / kblocks;   // even k-blocks
    for (int p0 = 0; p0 < j->k; p0 += kcs) {
        int kc = j->k - p0 < kcs ? j->k - p0 : kcs;
        pack_panels(j->W, j->wt, j->k, c0, cols, p0, kc, panels);
        for (int i0 = 0; i0 < j->m; i0 += MC) {
            int mc = j->m - i0 < MC ? j->m - i0 : MC;
            for (int pn = 0; pn * NR < cols; pn++) {
                int nc = cols - pn * NR < NR ? cols - pn * NR : NR;
                const float *bias = j->bias ? j->bias + c0 + pn * NR : NULL;
                for (int i = i0; i < i0 + mc; i += MR)
                    tile_6x16(j->X + (size_t)i * j->k + p0, j->k, panels + (size_t)pn * kc * NR, kc,
                              j->Y + (size_t)i * j->n + c0 + pn * NR, j->n, i0 + mc - i < MR ? i0 + mc - i : MR, nc,
                              p0 == 0, bias);
            }
        }
    }
}
#endif

void ck_gemm_wt(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                const float *bias) {
    if (m <= 0 || n <= 0) return;
    gemm_job j = {W, (int)wtype, X, Y, m, n, k, bias};
#if CK_HAVE_X86
    if (ck_isa_level() >= CK_ISA_AVX2 && k > 0) {
        ck_parallel(gemm_avx2_task, &j, (n + NC - 1) / NC);
        return;
    }
#endif
    static int blas_single = 0;
    if (!blas_single) {
        openblas_set_num_threads(1);
        blas_single = 1;
    }
    ck_parallel(gemm_task, &j, (n + TILE_ROWS - 1) / TILE_ROWS);
}
