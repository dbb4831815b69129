// CKernels W4A16: products against AWQ 4-bit weights (asymmetric uint4 per group of input channels,
// fp16 scale and zero per group), dequantized in registers; activations and accumulators are fp32.
//
// The kernels' layout of a matrix W [n][k] (n outputs, k inputs, k a multiple of 32 and of the
// group size G, G a multiple of 32):
//   packed [n][k/2] bytes, row-major: each run of 32 inputs of a row takes 16 bytes, byte b holding
//          input 32j + b in its low nibble and input 32j + 16 + b in its high nibble (one byte
//          widening gives 16 lanes of each half);
//   sz     [⌈n/16⌉][k/G][16][2] fp16: (scale, zero) of each group of G inputs of a row, in tiles of 16 rows
//          with a group's 16 pairs side by side (one vector load for 16 rows; rows past n are padding):
//          the pair of row r, group g at index ((r/16)·(k/G) + g)·16 + r%16;
//   W[r][c] = (q[r][c] − zero[r][c/G]) · scale[r][c/G].
#ifndef CK_INT4_H
#define CK_INT4_H

#include <stddef.h>
#include <stdint.h>
#include "ckernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Repacks AutoAWQ's GEMM `qweight` (int32 [k][n/8]; int32 column c holds outputs 8c..8c+7, output
/// 8c + [0,2,4,6,1,3,5,7][i] in bits 4i..4i+3) into `dst` [n][k/2] of the layout above, threaded.
/// k % 32 == 0, n % 8 == 0.
void ck_q4_repack_awq(const int32_t *qweight, int k, int n, uint8_t *dst);

/// Y[m][n] = X[m][k] · Wᵀ (+ bias[n]) for small m (decode). As ck_matmul_wt: each output's
/// reduction order depends on k and G only, never on m, n or the thread split.
void ck_matmul_q4(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y,
                  int m, int n, int k, const float *bias);
/// ck_matmul_q4 followed by `post` (NULL: none) on each finished piece of rows (ckernels.h's ck_post).
void ck_matmul_q4_post(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y,
                       int m, int n, int k, const float *bias, const ck_post *post);

/// The same for many rows (prefill): tiles of W rows are dequantized into fp32 scratch (never the
/// whole matrix) and multiplied with OpenBLAS sgemm.
void ck_gemm_q4(const uint8_t *packed, const uint16_t *sz, int group, const float *X, float *Y,
                int m, int n, int k, const float *bias);

/// AVX-512 and AVX2 decode: int16 inputs (per group of G, scale max|x|/32767) times the 4-bit weights in
/// integer dot products, exact per group; |error| per input ≤ 2^-16 of its group's largest, finer than fp16
/// activations (ck_use_vnni in ckernels.h picks vpdpwssd or vpmaddwd). Both give the same bits; groups of
/// more than 4,096 inputs take the portable fp32 path.

/// Rows r0 ..< r1 of W dequantized to fp32 into dst [r1 − r0][k].
void ck_q4_dequantize_rows(const uint8_t *packed, const uint16_t *sz, int group, int k, int r0, int r1, float *dst);

#ifdef __cplusplus
}
#endif
#endif
