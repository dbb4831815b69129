// Causal grouped-query attention over a contiguous per-sequence KV cache.
// One task per (query token, head): scores = q·K[0..pos] * scale, softmax, out = Σ p·V.
#include "ckernels.h"
#include "isa.h"
#include "pool.h"
#include <math.h>
#include <stdlib.h>

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

typedef struct {
    const float *q, *k, *v; float *out;
    int q_stride, kv_stride, out_stride, tokens, start, heads, kv_heads, d;
    float scale;
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
} attn_job;

static _Thread_local float *scratch;
static _Thread_local size_t scratch_len;

static void attn_task(void *ctx, int task) {
    const attn_job *j = ctx;
    int t = task / j->heads, h = task % j->heads;
    int kvh = h / (j->heads / j->kv_heads);
    int n = j->start + t + 1;
    if ((size_t)n > scratch_len) {
        free(scratch);
        scratch_len = (size_t)n + 1024;
        scratch = malloc(scratch_len * sizeof(float));
    }
    const float *q = j->q + (size_t)t * j->q_stride + (size_t)h * j->d;
    float mx = -INFINITY;
    for (int p = 0; p < n; p++) {
        float s = j->dot(q, j->k + (size_t)p * j->kv_stride + (size_t)kvh * j->d, j->d) * j->scale;
        scratch[p] = s;
        if (s > mx) mx = s;
    }
    float sum = 0;
    for (int p = 0; p < n; p++) {
        scratch[p] = expf(scratch[p] - mx);
        sum += scratch[p];
    }
    float *o = j->out + (size_t)t * j->out_stride + (size_t)h * j->d;
    for (int i = 0; i < j->d; i++) o[i] = 0;
    for (int p = 0; p < n; p++) j->axpy(o, scratch[p], j->v + (size_t)p * j->kv_stride + (size_t)kvh * j->d, j->d);
    float inv = 1.0f / sum;
    for (int i = 0; i < j->d; i++) o[i] *= inv;
}

void ck_attention(const float *q, int q_stride, const float *k, const float *v, int kv_stride,
                  float *out, int out_stride, int tokens, int start, int heads, int kv_heads,
                  int d, float scale) {
    attn_job j = {q, k, v, out, q_stride, kv_stride, out_stride, tokens, start, heads, kv_heads, d, scale,
                  dot_scalar, axpy_scalar};
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: j.dot = dot_avx512; j.axpy = axpy_avx512; break;
    case CK_ISA_AVX2: j.dot = dot_avx2; j.axpy = axpy_avx2; break;
#endif
    default: break;
    }
    ck_parallel(attn_task, &j, tokens * heads);
}
