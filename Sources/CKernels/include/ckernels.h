// CKernels: the CPU hot loops of lmdeploy-swift.
// Every entry point is threaded over the library's own pool (ck_init) and picks its
// instruction set at run time (AVX-512, AVX2+F16C+FMA, or portable C), so one binary runs on
// any x86-64 or arm64 machine. Weights keep their stored precision and are widened to fp32
// inside the loops; activations and accumulators are fp32.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage type of a weight matrix.
typedef enum { CK_F32 = 0, CK_F16 = 1, CK_BF16 = 2 } ck_dtype;

/// Starts the worker pool with `threads` threads (0 = one per online core). Idempotent: a
/// second call with a different count restarts the pool. Not thread-safe against running kernels.
void ck_init(int threads);
/// Threads the kernels use (including the caller).
int ck_threads(void);
/// The instruction set the kernels dispatched to: "avx512", "avx2", "neon" or "scalar".
const char *ck_isa(void);
/// Forces a lower instruction set for tests ("avx512", "avx2", "scalar"); returns 0 if the CPU lacks it.
int ck_force_isa(const char *name);
/// A comma-separated list of the CPU features detected (for `lmdeploy check-env`).
const char *ck_cpu_features(void);

/// Y[m][n] = sum_k X[m][k] * W[n][k] (+ bias[n]) ; W row-major [n][k] in `wtype`.
/// For small m (decode). The reduction order of each output depends only on k, never on m,
/// n or the thread count: a sequence gets bit-identical results alone or inside a batch.
void ck_matmul_wt(const void *W, ck_dtype wtype, const float *X, float *Y,
                  int m, int n, int k, const float *bias);

/// The same product for many rows (prefill) through OpenBLAS sgemm on widened weight tiles.
/// Faster for m ≳ 8, but its reduction order depends on m: decode keeps to ck_matmul_wt.
void ck_gemm_wt(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                const float *bias);

/// dst[i] = (float)src[i] for `count` elements, threaded (weight widening for BLAS prefill).
void ck_widen(const void *src, ck_dtype type, float *dst, size_t count);
/// Row gather with widening: dst[r][:] = table[ids[r]][:] (embedding lookup).
void ck_gather_rows(const void *table, ck_dtype type, int dim, const int32_t *ids, int rows, float *dst);

/// out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * w[i]; out may equal x.
void ck_rmsnorm(const float *x, const float *w, float *out, int rows, int dim, float eps);
/// Rotate-half rotary embedding in place on x[t][heads][head_dim] (row stride `stride` floats),
/// angle = positions[t] * inv_freq[i] for i < head_dim/2.
void ck_rope(float *x, int tokens, int heads, int head_dim, int stride,
             const int32_t *positions, const float *inv_freq);
/// gate[i] = silu(gate[i]) * up[i]
void ck_silu_mul(float *gate, const float *up, size_t n);
/// y[i] += x[i]
void ck_add(float *y, const float *x, size_t n);

/// One sequence of a batched attention call.
typedef struct {
    int q_row;              ///< first row of this sequence's queries in q / out
    int tokens;             ///< query tokens (positions start..start+tokens-1)
    int start;              ///< position of the first query token
    const int32_t *blocks;  ///< block table: position p lives in block blocks[p / block_size]
} ck_attn_seq;

/// Causal grouped-query attention over a paged KV cache, for a batch of sequences.
/// q/out: [rows][heads*d] (row strides q_stride, out_stride). k_pool/v_pool: [blocks][block_size][kv_stride],
/// kv_stride = kv_heads*d; each sequence attends to its positions 0..start+t. scale multiplies q·k.
void ck_attention_paged(const float *q, int q_stride, const float *k_pool, const float *v_pool,
                        int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                        float *out, int out_stride, int heads, int kv_heads, int d, float scale);

/// Writes `count` K or V rows (row stride row_stride) to positions start.. of a sequence's blocks.
void ck_kv_store(float *pool, int kv_stride, int block_size, const int32_t *blocks, int start,
                 const float *rows, int row_stride, int count);

/// Argmax over n floats (first index of the maximum).
int ck_argmax(const float *x, int n);

#ifdef __cplusplus
}
#endif
#endif
