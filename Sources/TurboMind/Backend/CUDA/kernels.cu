// The CUDA backend's kernels, compiled at first use by NVRTC for the device's architecture (no
// CUDA headers: fp16 conversions are inline PTX). Activations are fp32 [rows][width] as on the
// CPU; weights, the embedding table and the KV cache are fp16. Every kernel mirrors one CKernels
// routine and is tested against it (`lmdeploy selftest --device cuda`).
typedef unsigned short half_t;
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float h2f(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ half_t f2h(float f) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));   // round to nearest even, as ck_f32_to_f16
    return h;
}
__device__ __forceinline__ float bf2f(unsigned short b) { return __int_as_float((int)b << 16); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ---- conversions ------------------------------------------------------------------------------
/// dst[i] = fp16(src[i]); dtype 0 = fp32, 1 = fp16, 2 = bf16 (weights at load).
extern "C" __global__ void to_f16(const void *src, int dtype, half_t *dst, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v;
        if (dtype == 0) v = ((const float *)src)[i];
        else if (dtype == 1) { dst[i] = ((const half_t *)src)[i]; continue; }
        else v = bf2f(((const unsigned short *)src)[i]);
        dst[i] = f2h(v);
    }
}

/// Activations to fp16 for a GEMM: x [n] fp32 → y [n] fp16.
extern "C" __global__ void f32_to_f16(const float *x, half_t *y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = f2h(x[i]);
}

// ---- embedding, norms, elementwise ---------------------------------------------------------------
/// out[r] = table[ids[r]] widened; grid.x = rows.
extern "C" __global__ void embed(const half_t *table, int cols, const int *ids, float *out) {
    const half_t *src = table + (long long)ids[blockIdx.x] * cols;
    float *dst = out + (long long)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = h2f(src[i]);
}

/// out[r] = x[r] / rms(x[r]) * w; grid.x = rows, blockDim 256. out may be x.
extern "C" __global__ void rmsnorm(const float *x, const float *w, float *out, int dim, float eps) {
    const float *xr = x + (long long)blockIdx.x * dim;
    float *o = out + (long long)blockIdx.x * dim;
    float ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    __shared__ float part[32];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0;
        v = warp_sum(v);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    float inv = 1.0f / sqrtf(part[0] / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = (xr[i] * inv) * w[i];
}

/// out[r][i] = silu(gu[r][i]) * gu[r][inter + i]; grid over rows*inter.
extern "C" __global__ void silu_mul(const float *gu, float *out, int rows, int inter) {
    long long n = (long long)rows * inter;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / inter, c = i - r * inter;
        float g = gu[r * 2 * inter + c], u = gu[r * 2 * inter + inter + c];
        out[i] = g / (1.0f + expf(-g)) * u;
    }
}

/// y += x.
extern "C" __global__ void add(float *y, const float *x, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] += x[i];
}

/// out[r][c] += bias[c].
extern "C" __global__ void add_bias(float *out, const float *bias, int rows, int cols) {
    long long n = (long long)rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] += bias[i % cols];
}

/// out[i] = x[rows[i]] for rows of `width`; grid.x = count.
extern "C" __global__ void gather_rows(const float *x, const int *rows, int width, float *out) {
    const float *src = x + (long long)rows[blockIdx.x] * width;
    float *dst = out + (long long)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

// ---- rotary embedding + KV store -----------------------------------------------------------------
/// Rotate-half RoPE (HF Llama) of q and k at the row's position, then K and V to the cache slot
/// (fp16). grid.x = rows; each thread takes (head, i) pairs of the q and k heads, then V elements.
extern "C" __global__ void rope_store_kv(float *qkv, int stride, int heads, int kv_heads, int d, const int *pos,
                                         const float *inv_freq, const int *freq_set, half_t *k_pool, half_t *v_pool,
                                         const int *slots) {
    int r = blockIdx.x, half = d / 2, kvw = kv_heads * d;
    float *row = qkv + (long long)r * stride;
    const float *freq = inv_freq + (freq_set ? (long long)freq_set[r] * half : 0);
    float p = (float)pos[r];
    long long slot = (long long)slots[r] * kvw;
    int pairs = (heads + kv_heads) * half;
    for (int t = threadIdx.x; t < pairs; t += blockDim.x) {
        int h = t / half, i = t - h * half;
        float angle = p * freq[i];   // fp32 product, as HF and the CPU compute it
        float s, c;
        sincosf(angle, &s, &c);
        float *v = row + (long long)h * d;
        float a = v[i], b = v[i + half];
        float ra = a * c - b * s, rb = b * c + a * s;
        v[i] = ra;
        v[i + half] = rb;
        if (h >= heads) {
            int kh = h - heads;
            k_pool[slot + kh * d + i] = f2h(ra);
            k_pool[slot + kh * d + i + half] = f2h(rb);
        }
    }
    const float *vsrc = row + (long long)(heads + kv_heads) * d;
    for (int t = threadIdx.x; t < kvw; t += blockDim.x) v_pool[slot + t] = f2h(vsrc[t]);
}

// ---- paged attention -----------------------------------------------------------------------------
#define ATT_WARPS 4
#define ATT_MAX_D 256

/// Causal GQA over the paged fp16 cache, one block per (query head, query row). The block's warps
/// split the row's keys into 32-key tiles: each lane scores one key (q in shared memory), the warp
/// keeps an online softmax and accumulates V with lanes over the head dimension; the warps' partial
/// results merge at the end. row_table[r] = offset of row r's block table in `tables`.
extern "C" __global__ void attention(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                     int kv_stride, int block_size, const int *pos, const int *row_table,
                                     const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                     float scale, int window) {
    int h = blockIdx.x, r = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int kvh = h / (heads / kv_heads);
    __shared__ float q[ATT_MAX_D];
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][ATT_MAX_D];
    const float *qr = qkv + (long long)r * q_stride + (long long)h * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) q[i] = qr[i] * scale;
    __syncthreads();
    int n = pos[r] + 1;
    int lo = window > 0 && n > window ? n - window : 0;
    const int *table = tables + row_table[r];
    float m = NEG_INF, l = 0;
    float acc[ATT_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < ATT_MAX_D / 32; c++) acc[c] = 0;
    int chunks = (d + 31) / 32;
    for (int base = lo + warp * 32; base < n; base += ATT_WARPS * 32) {
        int j = base + lane;
        float s = NEG_INF;
        long long off = 0;
        if (j < n) {
            off = ((long long)table[j / block_size] * block_size + j % block_size) * kv_stride + (long long)kvh * d;
            const half_t *k = k_pool + off;
            float dot = 0;
            if ((d & 7) == 0) {
                for (int i = 0; i < d; i += 8) {
                    uint4 raw = *(const uint4 *)(k + i);
                    const half_t *hv = (const half_t *)&raw;
#pragma unroll
                    for (int e = 0; e < 8; e++) dot += q[i + e] * h2f(hv[e]);
                }
            } else {
                for (int i = 0; i < d; i++) dot += q[i] * h2f(k[i]);
            }
            s = dot;
        }
        float tile_max = warp_max(s);
        float m_new = fmaxf(m, tile_max);
        float corr = expf(m - m_new);   // 0 on the first tile (m = -inf)
        float p = j < n ? expf(s - m_new) : 0;
        l = l * corr + warp_sum(p);
        for (int c = 0; c < chunks; c++) acc[c] *= corr;
        int count = min(32, n - base);
        for (int t = 0; t < count; t++) {
            float pt = __shfl_sync(0xffffffffu, p, t);
            long long vo = __shfl_sync(0xffffffffu, off, t);
            const half_t *v = v_pool + vo;
#pragma unroll
            for (int c = 0; c < ATT_MAX_D / 32; c++) {
                int i = c * 32 + lane;
                if (c < chunks && i < d) acc[c] += pt * h2f(v[i]);
            }
        }
        m = m_new;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
    for (int c = 0; c < chunks; c++) {
        int i = c * 32 + lane;
        if (i < d) wacc[warp][i] = acc[c];
    }
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, wm[w]);
    float L = 0;
    for (int w = 0; w < ATT_WARPS; w++) L += wm[w] == NEG_INF ? 0 : expf(wm[w] - M) * wl[w];
    float *o = out + (long long)r * out_stride + (long long)h * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float sum = 0;
        for (int w = 0; w < ATT_WARPS; w++)
            if (wm[w] != NEG_INF) sum += expf(wm[w] - M) * wacc[w][i];
        o[i] = sum / L;
    }
}

// ---- paged attention, head dimension known at compile time ----------------------------------------
/// The same computation as `attention`, for D = 64 or 128 (the common head sizes), written so each
/// lane has all its loads in flight at once: its key row as D/8 16-byte loads, then V rows eight keys
/// at a time with each lane owning D/32 contiguous dimensions. The generic kernel issues one load
/// per iteration and waits on each, which made decode latency-bound.
template <int D>
__device__ __forceinline__ void attention_fixed(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                                int kv_stride, int block_size, const int *pos, const int *row_table,
                                                const int *tables, float *out, int out_stride, int heads, int kv_heads,
                                                float scale, int window, const int *row_list) {
    constexpr int C = D / 32;   // dimensions per lane: 2 or 4
    int h = blockIdx.x, r = row_list ? row_list[blockIdx.y] : blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int kvh = h / (heads / kv_heads);
    __shared__ float q[D];
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][D];
    const float *qr = qkv + (long long)r * q_stride + (long long)h * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) q[i] = qr[i] * scale;
    __syncthreads();
    int n = pos[r] + 1;
    int lo = window > 0 && n > window ? n - window : 0;
    const int *table = tables + row_table[r];
    float m = NEG_INF, l = 0;
    float acc[C];
#pragma unroll
    for (int c = 0; c < C; c++) acc[c] = 0;
    for (int base = lo + warp * 32; base < n; base += ATT_WARPS * 32) {
        int j = base + lane;
        float s = NEG_INF;
        long long off = 0;
        if (j < n) {
            off = ((long long)table[j / block_size] * block_size + j % block_size) * kv_stride + (long long)kvh * D;
            uint4 raw[D / 8];
#pragma unroll
            for (int u = 0; u < D / 8; u++) raw[u] = ((const uint4 *)(k_pool + off))[u];
            float dot = 0;
#pragma unroll
            for (int u = 0; u < D / 8; u++) {
                const half_t *hv = (const half_t *)&raw[u];
#pragma unroll
                for (int e = 0; e < 8; e++) dot += q[u * 8 + e] * h2f(hv[e]);
            }
            s = dot;
        }
        float m_new = fmaxf(m, warp_max(s));
        float corr = expf(m - m_new);
        float p = j < n ? expf(s - m_new) : 0;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int c = 0; c < C; c++) acc[c] *= corr;
        int count = min(32, n - base);
        for (int t0 = 0; t0 < count; t0 += 8) {
            half_t vv[8][C];
            float pt[8];
#pragma unroll
            for (int t = 0; t < 8; t++) {
                pt[t] = __shfl_sync(0xffffffffu, p, t0 + t);
                long long vo = __shfl_sync(0xffffffffu, off, t0 + t);
                if (t0 + t < count) {
                    const half_t *v = v_pool + vo + lane * C;
#pragma unroll
                    for (int c = 0; c < C; c++) vv[t][c] = v[c];
                } else {
#pragma unroll
                    for (int c = 0; c < C; c++) vv[t][c] = 0;
                    pt[t] = 0;
                }
            }
#pragma unroll
            for (int t = 0; t < 8; t++)
#pragma unroll
                for (int c = 0; c < C; c++) acc[c] += pt[t] * h2f(vv[t][c]);
        }
        m = m_new;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int c = 0; c < C; c++) wacc[warp][lane * C + c] = acc[c];
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, wm[w]);
    float L = 0;
    for (int w = 0; w < ATT_WARPS; w++) L += wm[w] == NEG_INF ? 0 : expf(wm[w] - M) * wl[w];
    float *o = out + (long long)r * out_stride + (long long)h * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float sum = 0;
        for (int w = 0; w < ATT_WARPS; w++)
            if (wm[w] != NEG_INF) sum += expf(wm[w] - M) * wacc[w][i];
        o[i] = sum / L;
    }
}

extern "C" __global__ void attention_d64(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool, int kv_stride,
                                         int block_size, const int *pos, const int *row_table, const int *tables, float *out,
                                         int out_stride, int heads, int kv_heads, int d, float scale, int window, const int *row_list) {
    attention_fixed<64>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                        kv_heads, scale, window, row_list);
}

extern "C" __global__ void attention_d128(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool, int kv_stride,
                                          int block_size, const int *pos, const int *row_table, const int *tables, float *out,
                                          int out_stride, int heads, int kv_heads, int d, float scale, int window, const int *row_list) {
    attention_fixed<128>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                         kv_heads, scale, window, row_list);
}

// ---- prefill attention: query tiles sharing K/V tiles in shared memory -------------------------------
#define TILE_ROWS 16

/// Causal attention for prefill chunks: one block per (query head, tile of up to 16 consecutive rows
/// of one sequence). The block stages 32-key tiles of K and V in shared memory (fp32; K rows padded
/// so lanes reading different keys hit different banks), and each warp runs the online softmax of
/// its four query rows against them, lane = key for scores and lane = dimension for V. Every K/V
/// byte is read from memory once per tile of queries instead of once per query.
template <int D>
__device__ __forceinline__ void attention_tiles_fixed(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                                      int kv_stride, int block_size, const int *pos, const int *row_table,
                                                      const int *tables, float *out, int out_stride, int heads, int kv_heads,
                                                      float scale, int window, const int *tile_first, const int *tile_count) {
    constexpr int C = D / 32;
    constexpr int PER_WARP = TILE_ROWS / ATT_WARPS;
    int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int first = tile_first[blockIdx.y], count = tile_count[blockIdx.y];
    int kvh = h / (heads / kv_heads);
    __shared__ float qs[TILE_ROWS][D];
    __shared__ float ks[32][D + 1];
    __shared__ float vs[32][D];
    for (int i = threadIdx.x; i < TILE_ROWS * D; i += blockDim.x) {
        int rr = i / D, e = i - rr * D;
        qs[rr][e] = rr < count ? qkv[(long long)(first + rr) * q_stride + (long long)h * D + e] * scale : 0;
    }
    const int *table = tables + row_table[first];
    int p0 = pos[first];
    int hi = pos[first + count - 1] + 1;
    int lo = window > 0 && p0 + 1 > window ? p0 + 1 - window : 0;
    float m[PER_WARP], l[PER_WARP], acc[PER_WARP][C];
#pragma unroll
    for (int w = 0; w < PER_WARP; w++) {
        m[w] = NEG_INF;
        l[w] = 0;
#pragma unroll
        for (int c = 0; c < C; c++) acc[w][c] = 0;
    }
    for (int base = lo; base < hi; base += 32) {
        __syncthreads();   // the previous tile is consumed (and, the first time, qs is written)
        for (int u = threadIdx.x; u < 32 * D / 8; u += blockDim.x) {
            int t = u / (D / 8), e = (u - t * (D / 8)) * 8, j = base + t;
            uint4 kr = make_uint4(0, 0, 0, 0), vr = make_uint4(0, 0, 0, 0);
            if (j < hi) {
                long long off = ((long long)table[j / block_size] * block_size + j % block_size) * kv_stride + (long long)kvh * D + e;
                kr = *(const uint4 *)(k_pool + off);
                vr = *(const uint4 *)(v_pool + off);
            }
            const half_t *kh = (const half_t *)&kr, *vh = (const half_t *)&vr;
#pragma unroll
            for (int x = 0; x < 8; x++) {
                ks[t][e + x] = h2f(kh[x]);
                vs[t][e + x] = h2f(vh[x]);
            }
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < PER_WARP; w++) {
            int rr = warp * PER_WARP + w;
            if (rr >= count) break;
            int p = p0 + rr, j = base + lane;
            int rlo = window > 0 && p + 1 > window ? p + 1 - window : 0;
            bool valid = j <= p && j >= rlo && j < hi;
            float s = NEG_INF;
            if (valid) {
                float dot = 0;
#pragma unroll 16
                for (int i = 0; i < D; i++) dot += qs[rr][i] * ks[lane][i];
                s = dot;
            }
            float tile_max = warp_max(s);
            if (tile_max == NEG_INF) continue;   // no key of this tile is visible to this row
            float m_new = fmaxf(m[w], tile_max);
            float corr = expf(m[w] - m_new);
            float pj = valid ? expf(s - m_new) : 0;
            l[w] = l[w] * corr + warp_sum(pj);
#pragma unroll
            for (int c = 0; c < C; c++) acc[w][c] *= corr;
#pragma unroll 8
            for (int t = 0; t < 32; t++) {
                float pt = __shfl_sync(0xffffffffu, pj, t);
#pragma unroll
                for (int c = 0; c < C; c++) acc[w][c] += pt * vs[t][c * 32 + lane];
            }
            m[w] = m_new;
        }
    }
#pragma unroll
    for (int w = 0; w < PER_WARP; w++) {
        int rr = warp * PER_WARP + w;
        if (rr >= count) break;
        float *o = out + (long long)(first + rr) * out_stride + (long long)h * D;
#pragma unroll
        for (int c = 0; c < C; c++) o[c * 32 + lane] = acc[w][c] / l[w];
    }
}

extern "C" __global__ void attention_tiles_d64(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                               int kv_stride, int block_size, const int *pos, const int *row_table,
                                               const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                               float scale, int window, const int *tile_first, const int *tile_count) {
    attention_tiles_fixed<64>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                              kv_heads, scale, window, tile_first, tile_count);
}

extern "C" __global__ void attention_tiles_d128(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                                int kv_stride, int block_size, const int *pos, const int *row_table,
                                                const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                                float scale, int window, const int *tile_first, const int *tile_count) {
    attention_tiles_fixed<128>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                               kv_heads, scale, window, tile_first, tile_count);
}

// ---- decode GEMV ------------------------------------------------------------------------------
#define GEMV_MAX_ROWS 4

__device__ __forceinline__ float round_f16(float v) { return h2f(f2h(v)); }

/// out[r][o] = x[r] · W[o] (+ bias[o]) for m ≤ 4 rows (decode), W fp16 [n][k]: one warp per output,
/// each lane with four 16-byte weight loads in flight; x is rounded to fp16 as the GEMM path rounds
/// it, and each output's summation order is fixed (independent of m). blockDim 256 = 8 outputs.
extern "C" __global__ void gemv_f16(const half_t *w, const float *x, float *out, const float *bias, int m, int n, int k) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o = blockIdx.x * 8 + warp;
    if (o >= n) return;
    const half_t *wr = w + (long long)o * k;
    float acc[GEMV_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; r++) acc[r] = 0;
    if ((k & 7) == 0) {
        int chunks = k / 8;
        for (int c0 = lane; c0 < chunks; c0 += 128) {
            uint4 raw[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int c = c0 + u * 32;
                raw[u] = c < chunks ? ((const uint4 *)wr)[c] : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int c = c0 + u * 32;
                if (c >= chunks) break;
                const half_t *hv = (const half_t *)&raw[u];
                float wf[8];
#pragma unroll
                for (int e = 0; e < 8; e++) wf[e] = h2f(hv[e]);
#pragma unroll
                for (int r = 0; r < GEMV_MAX_ROWS; r++) {
                    if (r >= m) break;
                    const float4 *xp = (const float4 *)(x + (long long)r * k + (long long)c * 8);
                    float4 a = xp[0], b = xp[1];
                    acc[r] += wf[0] * round_f16(a.x) + wf[1] * round_f16(a.y) + wf[2] * round_f16(a.z) + wf[3] * round_f16(a.w)
                            + wf[4] * round_f16(b.x) + wf[5] * round_f16(b.y) + wf[6] * round_f16(b.z) + wf[7] * round_f16(b.w);
                }
            }
        }
    } else {
        for (int i = lane; i < k; i += 32) {
            float wf = h2f(wr[i]);
#pragma unroll
            for (int r = 0; r < GEMV_MAX_ROWS; r++)
                if (r < m) acc[r] += wf * round_f16(x[(long long)r * k + i]);
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; r++) {
        if (r >= m) break;
        float s = warp_sum(acc[r]);
        if (lane == 0) out[(long long)r * n + o] = s + (bias ? bias[o] : 0.0f);
    }
}
