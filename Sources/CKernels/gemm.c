// Prefill products (many rows): Y[m][n] = X[m][k] · W[n][k]ᵀ through OpenBLAS sgemm.
// BLAS wants fp32 weights, so each pool task widens a tile of W rows into its own scratch
// (small enough to stay in L2) and multiplies it. OpenBLAS runs single-threaded inside our
// pool: two thread pools spinning on two cores would fight each other.
#include "ckernels.h"
#include "convert.h"
#include "pool.h"
#include <cblas.h>
#include <stdlib.h>

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

void ck_gemm_wt(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                const float *bias) {
    if (m <= 0 || n <= 0) return;
    static int blas_single = 0;
    if (!blas_single) {
        openblas_set_num_threads(1);
        blas_single = 1;
    }
    gemm_job j = {W, (int)wtype, X, Y, m, n, k, bias};
    ck_parallel(gemm_task, &j, (n + TILE_ROWS - 1) / TILE_ROWS);
}
