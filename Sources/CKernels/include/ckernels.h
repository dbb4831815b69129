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

/// Storage type of a weight matrix or of the KV cache (CK_I8: the KV cache, with per-head scale and
/// zero point, and int8 LM heads with per-row scales through ck_matmul_i8).
typedef enum { CK_F32 = 0, CK_F16 = 1, CK_BF16 = 2, CK_I8 = 3 } ck_dtype;

/// Starts the worker pool with `threads` threads (0 = one per online core). Idempotent: a
/// second call with a different count restarts the pool. Not thread-safe against running kernels.
void ck_init(int threads);
/// Threads the kernels use (including the caller).
int ck_threads(void);
/// The instruction set the kernels dispatched to: "avx512", "avx2", "neon" or "scalar".
const char *ck_isa(void);
/// Forces a lower instruction set for tests ("avx512", "avx2", "scalar") on the calling thread and the
/// parallel kernels it starts (other threads keep theirs); returns 0 if the CPU lacks it.
int ck_force_isa(const char *name);
/// `on` = 0 makes the calling thread's int4 products use vpmaddwd + vpaddd instead of AVX-512 VNNI's
/// vpdpwssd (tests run both; the sums are exact integers either way); returns whether VNNI is now used.
int ck_use_vnni(int on);
/// A comma-separated list of the CPU features detected (for `lmdeploy check-env`).
const char *ck_cpu_features(void);

/// What a decode product does next with the rows a task just finished, in the same parallel region
/// (the rows are still in cache and no thread waits for a separate pass). The same arithmetic as the
/// separate ck_add / ck_silu_mul_rows, so results are the same bits either way.
typedef enum {
    CK_POST_NONE = 0,
    CK_POST_ADD = 1,        ///< y[v][r] += Y[v][r] (y: [m][n], the residual stream)
    CK_POST_SILU_MUL = 2,   ///< y[v][i] = silu(Y[v][i]) · Y[v][inter + i] (Y: [m][2·inter] gate | up, y: [m][inter])
} ck_post_kind;
typedef struct { ck_post_kind kind; float *y; int inter; } ck_post;

/// Y[m][n] = sum_k X[m][k] * W[n][k] (+ bias[n]) ; W row-major [n][k] in `wtype`.
/// For small m (decode). The reduction order of each output depends only on k, never on m,
/// n or the thread count: a sequence gets bit-identical results alone or inside a batch.
void ck_matmul_wt(const void *W, ck_dtype wtype, const float *X, float *Y,
                  int m, int n, int k, const float *bias);
/// ck_matmul_wt followed by `post` (NULL: none) on each finished piece of rows.
void ck_matmul_wt_post(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                       const float *bias, const ck_post *post);

/// The same product against int8 rows (an LM head quantized at load, `--lm-head-dtype int8`):
/// each input vector is rounded to int16 once per call (scale s_x = max|x| / 32767, so |error| per
/// input ≤ 2^-16 of the vector's largest), and Y = (scales[n] · s_x) · Σ_k Q·x16 + bias with the sum
/// an exact integer: the same bits on every ISA and for every batch (batch-invariant).
void ck_matmul_i8(const int8_t *W, const float *scales, const float *X, float *Y, int m, int n, int k,
                  const float *bias);
void ck_matmul_i8_post(const int8_t *W, const float *scales, const float *X, float *Y, int m, int n, int k,
                       const float *bias, const ck_post *post);
/// Symmetric per-row int8: scales[r] = max|W[r]| / 127, dst[r][i] = round(W[r][i] / scales[r]).
void ck_quantize_rows_i8(const void *W, ck_dtype wtype, int n, int k, int8_t *dst, float *scales);

/// The same product for many rows (prefill): a blocked AVX2/FMA GEMM widening weight panels on the
/// fly (OpenBLAS sgemm on widened tiles at the scalar level).
/// Faster for m ≳ 8; its reduction order differs from ck_matmul_wt's, so decode keeps to that one.
void ck_gemm_wt(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                const float *bias);

/// The prefill product with the inputs rounded to bf16 (nearest even): Y = bf16(X) · Wᵀ (+ bias),
/// products exact, fp32 sums — a bf16 model computed in bf16 (`--dtype bfloat16`). AVX-512 BF16
/// (vdpbf16ps) for bf16 weights, about twice ck_gemm_wt's speed; elsewhere ck_gemm_wt on the rounded
/// inputs. A row's result does not depend on the rows beside it.
void ck_gemm_bf16x(const void *W, ck_dtype wtype, const float *X, float *Y, int m, int n, int k,
                   const float *bias);
/// `on` = 0 makes the calling thread's ck_gemm_bf16x skip vdpbf16ps (tests run both paths); returns
/// whether vdpbf16ps is now used (the CPU has AVX-512 BF16 and no lower ISA is forced); `on` < 0 only asks.
int ck_gemm_use_dpbf16(int on);

/// dst[i] = (float)src[i] for `count` elements, threaded (weight widening for BLAS prefill).
void ck_widen(const void *src, ck_dtype type, float *dst, size_t count);
/// Row gather with widening: dst[r][:] = table[ids[r]][:] (embedding lookup).
void ck_gather_rows(const void *table, ck_dtype type, int dim, const int32_t *ids, int rows, float *dst);

/// out[r][i] = x[r][i] / sqrt(mean(x[r]^2) + eps) * w[i]; out may equal x.
void ck_rmsnorm(const float *x, const float *w, float *out, int rows, int dim, float eps);
/// SwiGLU after the fused gate/up product: out[r][i] = silu(gate_up[r][i]) * gate_up[r][inter + i].
void ck_silu_mul_rows(const float *gate_up, float *out, int rows, int inter);
/// The per-step K/V write after the fused q/k/v product, one pass over the rows: row r of qkv
/// (stride `stride`) holds q [heads][d] | k [kv_heads][d] | v [kv_heads][d]; q and k are rotated in
/// place at positions[r] with inv_freq + freq_set[r] * d/2 (freq_set NULL: set 0), then k and v are
/// stored as `kv_type` (CK_F32 or CK_F16) into row slots[r] of k_pool / v_pool ([slot][kv_heads*d]).
void ck_rope_store_kv(float *qkv, int rows, int stride, int heads, int kv_heads, int head_dim,
                      const int32_t *positions, const float *inv_freq, const int32_t *freq_set,
                      void *k_pool, void *v_pool, ck_dtype kv_type, const int32_t *slots);
/// The same for an int8 KV cache (lmdeploy's quant_policy 4): each head of k and v is quantized as
/// ck_quantize_i8 does with kv_params [kv_heads][k_scale, k_zero, v_scale, v_zero] of this layer.
void ck_rope_store_kv_i8(float *qkv, int rows, int stride, int heads, int kv_heads, int head_dim,
                         const int32_t *positions, const float *inv_freq, const int32_t *freq_set,
                         int8_t *k_pool, int8_t *v_pool, const float *kv_params, const int32_t *slots);
/// dst[i] = clamp(round_half_even((src[i] − zero) / scale), −128, 127); dequantized as q·scale + zero.
void ck_quantize_i8(int8_t *dst, const float *src, int n, float scale, float zero);
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
/// q/out: [rows][heads*d] (row strides q_stride, out_stride). k_pool/v_pool: [blocks][block_size][kv_stride]
/// of `kv_type` (CK_F32 or CK_F16), kv_stride = kv_heads*d; each query at position p attends to positions
/// 0..p, or with window > 0 to the last `window` of them (p-window+1..p, Mistral's sliding window).
/// scale multiplies q·k.
void ck_attention_paged(const float *q, int q_stride, const void *k_pool, const void *v_pool, ck_dtype kv_type,
                        int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                        float *out, int out_stride, int heads, int kv_heads, int d, float scale, int window);
/// The same over an int8 cache: K and V elements are dequantized as q·scale + zero with this layer's
/// kv_params [kv_heads][k_scale, k_zero, v_scale, v_zero] as they are read.
void ck_attention_paged_i8(const float *q, int q_stride, const int8_t *k_pool, const int8_t *v_pool, const float *kv_params,
                           int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                           float *out, int out_stride, int heads, int kv_heads, int d, float scale, int window);

/// Argmax over n floats (first index of the maximum).
int ck_argmax(const float *x, int n);

#ifdef __cplusplus
}
#endif
#endif
