// Row-wise and element-wise kernels: widening, embedding gather, RMSNorm, rotary embedding, SwiGLU.
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include "vexp.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if CK_HAVE_X86
CK_TARGET_AVX2 static void store_f16x8(uint16_t *dst, const float *src) {
    _mm_storeu_si128((__m128i *)dst, _mm256_cvtps_ph(_mm256_loadu_ps(src), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

// ---- widening ------------------------------------------------------------------------------
#if CK_HAVE_X86
CK_TARGET_AVX512 static void widen_avx512(const void *src, int type, float *dst, size_t n) {
    size_t i = 0;
    const uint16_t *s = src;
    if (type == CK_BF16)
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i))), 16)));
    else if (type == CK_F16)
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    for (; i < n; i++) dst[i] = ck_load_scalar(src, type, i);
}
CK_TARGET_AVX2 static void widen_avx2(const void *src, int type, float *dst, size_t n) {
    size_t i = 0;
    const uint16_t *s = src;
    if (type == CK_BF16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i))), 16)));
    else if (type == CK_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) dst[i] = ck_load_scalar(src, type, i);
}
#endif

void ck_widen_serial(const void *src, int type, float *dst, size_t n) {
    if (type == CK_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: widen_avx512(src, type, dst, n); return;
    case CK_ISA_AVX2: widen_avx2(src, type, dst, n); return;
#endif
    default:
        for (size_t i = 0; i < n; i++) dst[i] = ck_load_scalar(src, type, i);
    }
}

typedef struct { const void *src; int type; float *dst; size_t count, per_task; } widen_job;

static void widen_task(void *ctx, int t) {
    const widen_job *j = ctx;
    size_t a = (size_t)t * j->per_task, b = a + j->per_task;
    if (b > j->count) b = j->count;
    if (a >= b) return;
    size_t esize = j->type == CK_F32 ? 4 : 2;
    ck_widen_serial((const char *)j->src + a * esize, j->type, j->dst + a, b - a);
}

void ck_widen(const void *src, ck_dtype type, float *dst, size_t count) {
    if (count == 0) return;
    const size_t unit = 1 << 16;
    int units = (int)((count + unit - 1) / unit);
    int tasks = ck_task_count(units, 1);
    widen_job j = {src, (int)type, dst, count, ((size_t)((units + tasks - 1) / tasks)) * unit};
    ck_parallel(widen_task, &j, tasks);
}

void ck_gather_rows(const void *table, ck_dtype type, int dim, const int32_t *ids, int rows, float *dst) {
    size_t esize = type == CK_F32 ? 4 : 2;
    for (int r = 0; r < rows; r++)
        ck_widen_serial((const char *)table + (size_t)ids[r] * dim * esize, (int)type, dst + (size_t)r * dim, (size_t)dim);
}

// ---- RMSNorm -------------------------------------------------------------------------------
typedef struct { const float *x, *w; float *out; int dim; float eps; } norm_job;

// Σ x² in double (products exact), over 8 lanes (AVX-512) or 4 (AVX2) then in lane order, or in
// order (scalar): a fixed order per ISA that depends on dim alone. The scaling is per element.
#if CK_HAVE_X86
CK_TARGET_AVX512 static double sumsq_avx512(const float *x, int n) {
    __m512d acc = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 8) {
        __mmask8 m = n - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - i)) - 1);
        __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + i));
        acc = _mm512_fmadd_pd(v, v, acc);
    }
    double l[8], s = 0;
    _mm512_storeu_pd(l, acc);
    for (int i = 0; i < 8; i++) s += l[i];
    return s;
}
CK_TARGET_AVX2 static double sumsq_avx2(const float *x, int n) {
    __m256d acc = _mm256_setzero_pd();
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        acc = _mm256_fmadd_pd(v, v, acc);
    }
    double l[4], s = 0;
    _mm256_storeu_pd(l, acc);
    for (; i < n; i++) l[i % 4] += (double)x[i] * x[i];
    for (int t = 0; t < 4; t++) s += l[t];
    return s;
}
#endif

static void rmsnorm_row(const norm_job *j, int r) {
    const float *x = j->x + (size_t)r * j->dim;
    float *o = j->out + (size_t)r * j->dim;
    double ss = 0;
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: ss = sumsq_avx512(x, j->dim); break;
    case CK_ISA_AVX2: ss = sumsq_avx2(x, j->dim); break;
#endif
    default:
        for (int i = 0; i < j->dim; i++) ss += (double)x[i] * x[i];
    }
    float inv = 1.0f / sqrtf((float)(ss / j->dim) + j->eps);
    for (int i = 0; i < j->dim; i++) o[i] = (x[i] * inv) * j->w[i];
}

static void rmsnorm_task(void *ctx, int r) { rmsnorm_row(ctx, r); }

void ck_rmsnorm(const float *x, const float *w, float *out, int rows, int dim, float eps) {
    norm_job j = {x, w, out, dim, eps};
    if (rows < 4) {
        for (int r = 0; r < rows; r++) rmsnorm_row(&j, r);
        return;
    }
    ck_parallel(rmsnorm_task, &j, rows);
}

// ---- rotary embedding (rotate-half, as HF Llama) --------------------------------------------
/// Rotates the `heads` heads of one row at position `pos` in place.
static void rope_row(float *row, int heads, int d, int32_t pos, const float *inv_freq) {
    int half = d / 2;
    float cs[512], sn[512];   // head_dim ≤ 1024 (checked by the callers)
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];   // fp32 product, as HF computes it
        cs[i] = cosf(angle);
        sn[i] = sinf(angle);
    }
    for (int h = 0; h < heads; h++) {
        float *v = row + (size_t)h * d;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cs[i] - b * sn[i];
            v[i + half] = b * cs[i] + a * sn[i];
        }
    }
}

// ---- rotary embedding + KV-cache store, one pass per step ---------------------------------
/// Stores `n` floats as the cache's element type (fp16 rounds to nearest even).
static void store_row(void *dst, ck_dtype type, const float *src, int n) {
    if (type == CK_F32) {
        memcpy(dst, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *h = dst;
    int i = 0;
#if CK_HAVE_X86
    if (ck_isa_level() >= CK_ISA_AVX2) {
        for (; i + 8 <= n; i += 8) store_f16x8(h + i, src + i);
    }
#endif
    for (; i < n; i++) h[i] = ck_f32_to_f16(src[i]);
}

/// Quantizes one head's `n` floats to int8: q = clamp(round((x − zero) / scale), −128, 127), with
/// round-half-to-even (nearbyintf) so the scalar reference computes the same bytes. A scale of 0
/// (a channel that never varied in calibration) stores the zero point's code 0.
void ck_quantize_i8(int8_t *dst, const float *src, int n, float scale, float zero) {
    float inv = scale > 0 ? 1.0f / scale : 0.0f;
    for (int i = 0; i < n; i++) {
        float q = nearbyintf((src[i] - zero) * inv);
        dst[i] = (int8_t)(q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q);
    }
}

typedef struct {
    float *qkv; int stride, heads, kv_heads, d, half;
    const int32_t *pos; const float *inv_freq; const int32_t *freq_set;
    void *k_pool, *v_pool; ck_dtype type; const int32_t *slots;
    const float *params;   // int8: [kv_heads][k_scale, k_zero, v_scale, v_zero]
} rope_store_job;

static void rope_store_task(void *ctx, int r) {
    const rope_store_job *j = ctx;
    float *row = j->qkv + (size_t)r * j->stride;
    const float *freq = j->inv_freq + (j->freq_set ? (size_t)j->freq_set[r] * j->half : 0);
    int kvw = j->kv_heads * j->d;
    rope_row(row, j->heads, j->d, j->pos[r], freq);                               // q
    float *k = row + (size_t)j->heads * j->d, *v = k + kvw;
    rope_row(k, j->kv_heads, j->d, j->pos[r], freq);                              // k
    if (j->type == CK_I8) {
        size_t slot = (size_t)j->slots[r] * (size_t)kvw;
        for (int h = 0; h < j->kv_heads; h++) {
            const float *p = j->params + 4 * h;
            ck_quantize_i8((int8_t *)j->k_pool + slot + (size_t)h * j->d, k + (size_t)h * j->d, j->d, p[0], p[1]);
            ck_quantize_i8((int8_t *)j->v_pool + slot + (size_t)h * j->d, v + (size_t)h * j->d, j->d, p[2], p[3]);
        }
        return;
    }
    size_t esize = j->type == CK_F32 ? 4 : 2, slot = (size_t)j->slots[r] * (size_t)kvw * esize;
    store_row((char *)j->k_pool + slot, j->type, k, kvw);
    store_row((char *)j->v_pool + slot, j->type, v, kvw);
}

static void rope_store(float *qkv, int rows, int stride, int heads, int kv_heads, int head_dim, const int32_t *positions,
                       const float *inv_freq, const int32_t *freq_set, void *k_pool, void *v_pool, ck_dtype kv_type,
                       const float *params, const int32_t *slots) {
    if (head_dim > 1024 || head_dim % 2) abort();
    rope_store_job j = {qkv, stride, heads, kv_heads, head_dim, head_dim / 2, positions, inv_freq, freq_set,
                        k_pool, v_pool, kv_type, slots, params};
    if (rows < 4) {
        for (int r = 0; r < rows; r++) rope_store_task(&j, r);
        return;
    }
    ck_parallel(rope_store_task, &j, rows);
}

void ck_rope_store_kv(float *qkv, int rows, int stride, int heads, int kv_heads, int head_dim,
                      const int32_t *positions, const float *inv_freq, const int32_t *freq_set,
                      void *k_pool, void *v_pool, ck_dtype kv_type, const int32_t *slots) {
    if (kv_type == CK_I8) abort();   // int8 needs its parameters: ck_rope_store_kv_i8
    rope_store(qkv, rows, stride, heads, kv_heads, head_dim, positions, inv_freq, freq_set, k_pool, v_pool, kv_type, NULL, slots);
}

void ck_rope_store_kv_i8(float *qkv, int rows, int stride, int heads, int kv_heads, int head_dim,
                         const int32_t *positions, const float *inv_freq, const int32_t *freq_set,
                         int8_t *k_pool, int8_t *v_pool, const float *kv_params, const int32_t *slots) {
    rope_store(qkv, rows, stride, heads, kv_heads, head_dim, positions, inv_freq, freq_set, k_pool, v_pool, CK_I8, kv_params, slots);
}

// ---- SwiGLU and residual -------------------------------------------------------------------
typedef struct { const float *gu; float *out; int inter; } silu_rows_job;

static void silu_rows_task(void *ctx, int r) {
    const silu_rows_job *j = ctx;
    const float *g = j->gu + (size_t)r * 2 * j->inter, *u = g + j->inter;
    float *o = j->out + (size_t)r * j->inter;
    ck_silu_mul_span(g, u, o, j->inter);
}

#if CK_HAVE_X86
CK_TARGET_AVX512 static void silu_span_avx512(const float *g, const float *u, float *o, int n) {
    const __m512 one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        __m512 den = _mm512_add_ps(one, exp512(_mm512_xor_ps(gv, sign)));
        _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_div_ps(gv, den), _mm512_maskz_loadu_ps(m, u + i)));
    }
}
CK_TARGET_AVX2 static void silu_span_avx2(const float *g, const float *u, float *o, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < n; i += 8) {
        float gt[8] = {0}, ut[8] = {0}, ot[8];   // the tail through the same lanes, so no element's bits depend on the span
        const int c = n - i < 8 ? n - i : 8;
        const float *gp = g + i, *up = u + i;
        if (c < 8) { memcpy(gt, gp, sizeof(float) * (size_t)c); memcpy(ut, up, sizeof(float) * (size_t)c); gp = gt; up = ut; }
        __m256 gv = _mm256_loadu_ps(gp);
        __m256 den = _mm256_add_ps(one, exp256(_mm256_xor_ps(gv, sign)));
        __m256 r = _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(up));
        if (c == 8) _mm256_storeu_ps(o + i, r);
        else { _mm256_storeu_ps(ot, r); memcpy(o + i, ot, sizeof(float) * (size_t)c); }
    }
}
#endif

void ck_silu_mul_span(const float *g, const float *u, float *o, int n) {
    switch (ck_isa_level()) {
#if CK_HAVE_X86
    case CK_ISA_AVX512: silu_span_avx512(g, u, o, n); return;
    case CK_ISA_AVX2: silu_span_avx2(g, u, o, n); return;
#endif
    default:
        for (int i = 0; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void ck_silu_mul_rows(const float *gate_up, float *out, int rows, int inter) {
    silu_rows_job j = {gate_up, out, inter};
    if (rows < 2) {
        for (int r = 0; r < rows; r++) silu_rows_task(&j, r);
        return;
    }
    ck_parallel(silu_rows_task, &j, rows);
}

void ck_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

int ck_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
