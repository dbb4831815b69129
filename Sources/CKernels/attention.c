// Causal grouped-query attention over a paged KV cache, for a whole batch of sequences in one
// dispatch. A sequence's K/V rows live in fixed-size blocks of a shared pool, found through its
// block table. One task per (sequence, query token, head): scores = q·K[0..pos] * scale,
// softmax, out = Σ p·V. Each task's arithmetic depends only on its own sequence, so outputs do
// not change with the batch around them.
#include "ckernels.h"
#include "isa.h"
#include "pool.h"
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

typedef struct {
    const float *q; int q_stride;
    const float *k_pool, *v_pool; int kv_stride, block_size;
    const ck_attn_seq *seqs; int nseq;
    const int *task_base;   // first task index of each sequence (prefix sums of tokens × heads)
    float *out; int out_stride;
    int heads, kv_heads, d;
    float scale;
    float (*dot)(const float *, const float *, int);
    void (*axpy)(float *, float, const float *, int);
} attn_job;

static _Thread_local float *scratch;
static _Thread_local size_t scratch_len;

static void attn_task(void *ctx, int task) {
    const attn_job *j = ctx;
    int s = 0;   // the sequence owning this task: few sequences, so a linear scan is cheapest
    while (s + 1 < j->nseq && j->task_base[s + 1] <= task) s++;
    const ck_attn_seq *seq = &j->seqs[s];
    int local = task - j->task_base[s];
    int t = local / j->heads, h = local % j->heads;
    int kvh = h / (j->heads / j->kv_heads);
    int n = seq->start + t + 1;
    if ((size_t)n > scratch_len) {
        free(scratch);
        scratch_len = (size_t)n + 1024;
        scratch = malloc(scratch_len * sizeof(float));
    }
    const float *q = j->q + (size_t)(seq->q_row + t) * j->q_stride + (size_t)h * j->d;
    const int bs = j->block_size;
    float mx = -INFINITY;
    for (int p = 0; p < n; p++) {
        size_t row = (size_t)seq->blocks[p / bs] * bs + p % bs;
        float sc = j->dot(q, j->k_pool + row * j->kv_stride + (size_t)kvh * j->d, j->d) * j->scale;
        scratch[p] = sc;
        if (sc > mx) mx = sc;
    }
    float sum = 0;
    for (int p = 0; p < n; p++) {
        scratch[p] = expf(scratch[p] - mx);
        sum += scratch[p];
    }
    float *o = j->out + (size_t)(seq->q_row + t) * j->out_stride + (size_t)h * j->d;
    for (int i = 0; i < j->d; i++) o[i] = 0;
    for (int p = 0; p < n; p++) {
        size_t row = (size_t)seq->blocks[p / bs] * bs + p % bs;
        j->axpy(o, scratch[p], j->v_pool + row * j->kv_stride + (size_t)kvh * j->d, j->d);
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < j->d; i++) o[i] *= inv;
}

void ck_attention_paged(const float *q, int q_stride, const float *k_pool, const float *v_pool,
                        int kv_stride, int block_size, const ck_attn_seq *seqs, int nseq,
                        float *out, int out_stride, int heads, int kv_heads, int d, float scale) {
    if (nseq <= 0) return;
    int base_small[64];
    int *task_base = nseq <= 64 ? base_small : malloc(sizeof(int) * (size_t)nseq);
    int tasks = 0;
    for (int s = 0; s < nseq; s++) {
        task_base[s] = tasks;
        tasks += seqs[s].tokens * heads;
    }
    attn_job j = {q, q_stride, k_pool, v_pool, kv_stride, block_size, seqs, nseq, task_base, out, out_stride,
                  heads, kv_heads, d, scale, dot_scalar, axpy_scalar};
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: j.dot = dot_avx512; j.axpy = axpy_avx512; break;
    case CK_ISA_AVX2: j.dot = dot_avx2; j.axpy = axpy_avx2; break;
#endif
    default: break;
    }
    ck_parallel(attn_task, &j, tasks);
    if (task_base != base_small) free(task_base);
}

void ck_kv_store(float *pool, int kv_stride, int block_size, const int32_t *blocks, int start,
                 const float *rows, int row_stride, int count) {
    for (int t = 0; t < count; t++) {
        int p = start + t;
        memcpy(pool + ((size_t)blocks[p / block_size] * block_size + p % block_size) * kv_stride,
               rows + (size_t)t * row_stride, sizeof(float) * (size_t)kv_stride);
    }
}
