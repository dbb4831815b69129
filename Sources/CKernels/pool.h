// Internal: the worker pool every kernel shares.
#ifndef CK_POOL_H
#define CK_POOL_H
typedef void (*ck_task_fn)(void *ctx, int task);
/// Runs fn(ctx, t) for t in [0, tasks) on the pool (the caller works too) and returns when all are done.
/// Concurrent callers are serialised; a task must not call ck_parallel itself.
void ck_parallel(ck_task_fn fn, void *ctx, int tasks);
typedef void (*ck_range_fn)(void *ctx, int lo, int hi);
/// Runs fn(ctx, lo, hi) over pieces that cover [0, n) exactly once, claimed by the pool's threads as
/// they free up: large pieces first, multiples of `grain` items (but the last), shrinking toward the end so the
/// threads finish together. For work whose items are independent (the rows of a product).
void ck_parallel_range(ck_range_fn fn, void *ctx, int n, int grain);
/// Chooses a task count for `units` items of roughly equal cost, `min_per_task` items at least per task.
int ck_task_count(int units, int min_per_task);

#include "ckernels.h"
#include "isa.h"
#include <math.h>
/// o[i] = silu(g[i]) · u[i] = g / (1 + e^−g) · u, the one formula of ck_silu_mul_rows and of the
/// products' CK_POST_SILU_MUL (elementwise.c): each element's result depends on its g and u alone
/// (on one ISA), never on where a span starts or ends.
void ck_silu_mul_span(const float *g, const float *u, float *o, int n);

/// Applies `post` to rows [lo, hi) of a product's Y[m][n] (for CK_POST_SILU_MUL: columns [lo, hi)
/// of the gate half and the same of the up half, both already computed).
static inline void ck_post_rows(const ck_post *post, const float *Y, int m, int n, int lo, int hi) {
    if (!post || post->kind == CK_POST_NONE) return;
    for (int v = 0; v < m; v++) {
        const float *row = Y + (size_t)v * n;
        if (post->kind == CK_POST_ADD) {
            float *y = post->y + (size_t)v * n;
            for (int r = lo; r < hi; r++) y[r] += row[r];
        } else {
            float *y = post->y + (size_t)v * post->inter;
            ck_silu_mul_span(row + lo, row + post->inter + lo, y + lo, hi - lo);
        }
    }
}

/// Computes rows [r0, r1) of a product job (each kernel's ISA dispatch).
typedef void (*ck_rows_fn)(const void *job, int r0, int r1);
/// One claimed piece [lo, hi) of a decode product: its rows (for CK_POST_SILU_MUL the gate rows and the
/// matching up rows), then `post` on them.
static inline void ck_product_piece(ck_rows_fn rows, const void *job, const ck_post *post, const float *Y, int m, int n,
                                    int lo, int hi) {
    rows(job, lo, hi);
    if (post && post->kind == CK_POST_SILU_MUL) rows(job, post->inter + lo, post->inter + hi);
    ck_post_rows(post, Y, m, n, lo, hi);
}

/// A decode product's two pool entry points: NAME_rows (rows [r0, r1) on this CPU's instruction set:
/// the AVX512, AVX2 or SCALAR statement, each seeing the job as `j`) and NAME_range (one claimed piece,
/// for ck_parallel_range). JOB has the fields post, Y, m and n.
#if defined(__x86_64__)
#define CK_ROWS_X86(AVX512, AVX2) case CK_ISA_AVX512: AVX512; break; case CK_ISA_AVX2: AVX2; break;
#else
#define CK_ROWS_X86(AVX512, AVX2)
#endif
#define CK_DECODE_PRODUCT(NAME, JOB, AVX512, AVX2, SCALAR)                                                    \
    static void NAME##_rows(const void *job, int r0, int r1) {                                              \
        const JOB *j = job;                                                                                 \
        switch (ck_isa_level()) {                                                                           \
            CK_ROWS_X86(AVX512, AVX2)                                                                       \
        default: SCALAR; break;                                                                             \
        }                                                                                                   \
    }                                                                                                       \
    static void NAME##_range(void *ctx, int lo, int hi) {                                                   \
        const JOB *j = ctx;                                                                                 \
        ck_product_piece(NAME##_rows, j, j->post, j->Y, j->m, j->n, lo, hi);                                \
    }

/// The items a product parallelises over: its rows, or for CK_POST_SILU_MUL the gate/up pairs.
static inline int ck_post_items(const ck_post *post, int n) {
    return post && post->kind == CK_POST_SILU_MUL ? post->inter : n;
}
#endif
