// Products against int8 rows, w = s·q per row (an LM head quantized at load, `--lm-head-dtype int8`),
// for decode. Widening every code to fp32 made the loop compute-bound (23-26 GB/s where the bf16
// GEMV streams at 30). Instead each input vector is rounded once per call to int16 (one scale per
// vector, max|x| / 32767) and meets the codes, widened to 16-bit lanes, in vpmaddwd: 32 products per
// instruction summed exactly (the loop is bound by memory, so VNNI's fused vpdpwssd would change
// nothing but the code). A row's Σ q·x16 is an exact integer (int32 lanes folded into int64 every
// BLOCK inputs, before a lane can overflow), so the result is the same bits on every ISA, tiling and
// batch: y = (float)Σ · (s_w · s_x) + bias.
#include "ckernels.h"
#include "convert.h"
#include "isa.h"
#include "pool.h"
#include <math.h>
#include <stdlib.h>

// Per lane and BLOCK inputs the int32 accumulators take ≤ BLOCK/16 products of |q·x16| ≤ 127·32767:
// 128 of them at most, ~5.3e8, well inside int32.
enum { BLOCK = 2048 };

typedef struct {
    const int8_t *W; const float *scales; float *Y; int m, n, k; const float *bias;
    const int16_t *x16; const float *xscale; int kp;   // x16 [m][kp], kp = k rounded up to 64, zero-padded
    const ck_post *post;
} i8_job;

static inline float i8_finish(const i8_job *j, int r, int v, int64_t sum) {
    const float scaled = (float)sum * (j->scales[r] * j->xscale[v]);   // two statements: never contracted
    return scaled + (j->bias ? j->bias[r] : 0.0f);
}

// ---- portable C ---------------------------------------------------------------------------------
static void rows_scalar(const i8_job *j, int r0, int r1) {
    for (int r = r0; r < r1; r++)
        for (int v = 0; v < j->m; v++) {
            const int8_t *w = j->W + (size_t)r * j->k;
            const int16_t *x = j->x16 + (size_t)v * j->kp;
            int64_t sum = 0;
            for (int i = 0; i < j->k; i++) sum += (int32_t)w[i] * x[i];
            j->Y[(size_t)v * j->n + r] = i8_finish(j, r, v, sum);
        }
}

#if CK_HAVE_X86
// ---- AVX-512: one row × up to 4 vectors, 64 inputs per step -------------------------------------
#define I8_ROW512(NAME, TARGET)                                                                      \
    TARGET CK_INLINE void NAME(const i8_job *j, int r, int v0, int V) {                                   \
        const int k = j->k;                                                                               \
        const int8_t *w = j->W + (size_t)r * k;                                                           \
        int64_t sum[4] = {0, 0, 0, 0};                                                                    \
        for (int b0 = 0; b0 < k; b0 += BLOCK) {                                                           \
            const int b1 = b0 + BLOCK < k ? b0 + BLOCK : k;                                               \
            __m512i a[4][2];                                                                              \
            for (int v = 0; v < V; v++) a[v][0] = a[v][1] = _mm512_setzero_si512();                       \
            for (int i = b0; i < b1; i += 64) {                                                           \
                _mm_prefetch((const char *)(w + i) + 2048, _MM_HINT_T2);                                 \
                const __mmask64 mask = b1 - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (b1 - i)) - 1);   \
                const __m512i raw = _mm512_maskz_loadu_epi8(mask, w + i);                                 \
                const __m512i lo = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(raw));                     \
                const __m512i hi = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(raw, 1));               \
                for (int v = 0; v < V; v++) {                                                             \
                    const int16_t *x = j->x16 + (size_t)(v0 + v) * j->kp + i;                             \
                    a[v][0] = _mm512_add_epi32(a[v][0], _mm512_madd_epi16(lo, _mm512_loadu_si512((const void *)x)));                      \
                    a[v][1] = _mm512_add_epi32(a[v][1], _mm512_madd_epi16(hi, _mm512_loadu_si512((const void *)(x + 32))));               \
                }                                                                                         \
            }                                                                                             \
            for (int v = 0; v < V; v++) {                                                                 \
                const __m512i s = _mm512_add_epi32(a[v][0], a[v][1]);                                     \
                sum[v] += _mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(s))) +     \
                          _mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s, 1))); \
            }                                                                                             \
        }                                                                                                 \
        for (int v = 0; v < V; v++) j->Y[(size_t)(v0 + v) * j->n + r] = i8_finish(j, r, v0 + v, sum[v]); \
    }
I8_ROW512(row512, CK_TARGET_AVX512)

// Rows front to back (one stream the prefetcher follows); each row meets the vectors four at a
// time, its codes in L1 after the first group.
#define I8_ROWS512(NAME, TARGET, ROW)                                                                     \
    TARGET static void NAME(const i8_job *j, int r0, int r1) {                                            \
        for (int r = r0; r < r1; r++)                                                                     \
            for (int v0 = 0; v0 < j->m; v0 += 4) {                                                        \
                switch (j->m - v0) {                                                                      \
                case 1: ROW(j, r, v0, 1); break;                                                          \
                case 2: ROW(j, r, v0, 2); break;                                                          \
                case 3: ROW(j, r, v0, 3); break;                                                          \
                default: ROW(j, r, v0, 4); break;                                                         \
                }                                                                                         \
            }                                                                                             \
    }
I8_ROWS512(rows_avx512, CK_TARGET_AVX512, row512)

// ---- AVX2: one row × up to 2 vectors, 32 inputs per step ----------------------------------------
CK_TARGET_AVX2 CK_INLINE int64_t hsum64_256(__m256i s) {
    const __m256i w = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(s)),
                                       _mm256_cvtepi32_epi64(_mm256_extracti128_si256(s, 1)));
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
}

CK_TARGET_AVX2 CK_INLINE void row256(const i8_job *j, int r, int v0, int V) {
    const int k = j->k;
    const int8_t *w = j->W + (size_t)r * k;
    int64_t sum[2] = {0, 0};
    for (int b0 = 0; b0 < k; b0 += BLOCK) {
        const int b1 = b0 + BLOCK < k ? b0 + BLOCK : k;
        __m256i a[2][2];
        for (int v = 0; v < V; v++) a[v][0] = a[v][1] = _mm256_setzero_si256();
        int i = b0;
        for (; i + 32 <= b1; i += 32) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + i));
            const __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(raw));
            const __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(raw, 1));
            for (int v = 0; v < V; v++) {
                const int16_t *x = j->x16 + (size_t)(v0 + v) * j->kp + i;
                a[v][0] = _mm256_add_epi32(a[v][0], _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)x)));
                a[v][1] = _mm256_add_epi32(a[v][1], _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 16))));
            }
        }
        for (int v = 0; v < V; v++) {
            sum[v] += hsum64_256(_mm256_add_epi32(a[v][0], a[v][1]));
            const int16_t *x = j->x16 + (size_t)(v0 + v) * j->kp;
            for (int t = i; t < b1; t++) sum[v] += (int32_t)w[t] * x[t];
        }
    }
    for (int v = 0; v < V; v++) j->Y[(size_t)(v0 + v) * j->n + r] = i8_finish(j, r, v0 + v, sum[v]);
}

CK_TARGET_AVX2 static void rows_avx2(const i8_job *j, int r0, int r1) {
    for (int r = r0; r < r1; r++)
        for (int v0 = 0; v0 < j->m; v0 += 2) {
            if (j->m - v0 >= 2) row256(j, r, v0, 2); else row256(j, r, v0, 1);
        }
}
#endif

CK_DECODE_PRODUCT(i8, i8_job, rows_avx512(j, r0, r1), rows_avx2(j, r0, r1), rows_scalar(j, r0, r1))

// The inputs as int16: x16 = round(x / s_x), s_x = max|x| / 32767 (an all-zero vector: s_x = 1, codes 0).
// Per calling thread, grown as needed, so a decode step allocates nothing.
static _Thread_local struct { int16_t *x16; float *scale; size_t len, rows; } scratch;

void ck_matmul_i8(const int8_t *W, const float *scales, const float *X, float *Y, int m, int n, int k,
                  const float *bias) {
    ck_matmul_i8_post(W, scales, X, Y, m, n, k, bias, NULL);
}

void ck_matmul_i8_post(const int8_t *W, const float *scales, const float *X, float *Y, int m, int n, int k,
                       const float *bias, const ck_post *post) {
    if (m <= 0 || n <= 0) return;
    if (post && post->kind == CK_POST_SILU_MUL && 2 * post->inter != n) abort();
    const int kp = (k + 63) / 64 * 64;
    if ((size_t)m * kp > scratch.len) {
        free(scratch.x16);
        scratch.len = (size_t)m * kp;
        scratch.x16 = aligned_alloc(64, scratch.len * sizeof(int16_t));
        if (!scratch.x16) abort();
    }
    if ((size_t)m > scratch.rows) {
        free(scratch.scale);
        scratch.rows = (size_t)m;
        scratch.scale = malloc(scratch.rows * sizeof(float));
        if (!scratch.scale) abort();
    }
    for (int v = 0; v < m; v++) {
        const float *x = X + (size_t)v * k;
        float mx = 0.0f;
        for (int i = 0; i < k; i++) mx = fmaxf(mx, fabsf(x[i]));
        const float s = mx > 0 ? mx / 32767.0f : 1.0f, inv = 1.0f / s;
        scratch.scale[v] = s;
        int16_t *q = scratch.x16 + (size_t)v * kp;
        for (int i = 0; i < k; i++) q[i] = (int16_t)lrintf(fminf(fmaxf(x[i] * inv, -32767.0f), 32767.0f));
        for (int i = k; i < kp; i++) q[i] = 0;
    }
    i8_job j = {W, scales, Y, m, n, k, bias, scratch.x16, scratch.scale, kp, post};
    // Claims of ~8 KiB of codes at least.
    ck_parallel_range(i8_range, &j, ck_post_items(post, n), 8192 / k + 1);
}

// Per row: s = max|w| / 127, q = round(w / s) in [-127, 127] (an all-zero row: s = 0, q = 0).
typedef struct { const void *W; int wt, k, rows_per_task, n; int8_t *dst; float *scales; } quant_job;

static void quant_task(void *ctx, int t) {
    const quant_job *j = ctx;
    const int r1 = (t + 1) * j->rows_per_task < j->n ? (t + 1) * j->rows_per_task : j->n;
    for (int r = t * j->rows_per_task; r < r1; r++) {
        float mx = 0;
        for (int i = 0; i < j->k; i++) {
            float a = fabsf(ck_load_scalar(j->W, j->wt, (size_t)r * j->k + i));
            if (a > mx) mx = a;
        }
        const float s = mx / 127.0f, inv = mx > 0 ? 127.0f / mx : 0.0f;
        j->scales[r] = s;
        for (int i = 0; i < j->k; i++)
            j->dst[(size_t)r * j->k + i] = (int8_t)lrintf(ck_load_scalar(j->W, j->wt, (size_t)r * j->k + i) * inv);
    }
}

void ck_quantize_rows_i8(const void *W, ck_dtype wtype, int n, int k, int8_t *dst, float *scales) {
    if (n <= 0) return;
    quant_job j = {W, (int)wtype, k, 0, n, dst, scales};
    const int tasks = ck_task_count(n, 64);
    j.rows_per_task = (n + tasks - 1) / tasks;
    ck_parallel(quant_task, &j, (n + j.rows_per_task - 1) / j.rows_per_task);
}
