// The CUDA backend's kernels, compiled at first use by NVRTC for the device's architecture (no
// CUDA headers: fp16 conversions are inline PTX). Activations are fp32 [rows][width] as on the
// CPU; the ops whose output only feeds a linear layer (RMSNorm, SiLU·mul, attention) also write an
// fp16 copy (`out_h`, may be null), which is what the GEMMs read. Weights, the embedding table and
// the KV cache are fp16 (the cache int8 codes with quant_policy 4). Every kernel mirrors one CKernels routine (or the host Sampler) and is
// tested against it (`lmdeploy selftest --device cuda`).
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

// ---- programmatic dependent launch ----------------------------------------------------------------
// On sm_90+ the host launches every kernel with programmatic stream serialization: a kernel may be
// scheduled while the one before it still runs. So each kernel calls pdl_wait() before it reads or
// writes anything earlier kernels touch (only weights, never written during a forward, could be read
// before), and it does so in every thread before any early return, so no
// kernel can finish before its predecessor and order stays transitive. pdl_trigger() lets the next
// kernel be scheduled: the small kernels trigger at once (their successor's launch and prologue
// then overlap them); the GEMV triggers after its weight loop. No-ops without PDL.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
/// The start of a kernel whose own work is small: let the next one be scheduled, then wait for the previous.
__device__ __forceinline__ void pdl_start() {
    pdl_trigger();
    pdl_wait();
}

// ---- conversions ------------------------------------------------------------------------------
/// dst[i] = fp16(src[i]); dtype 0 = fp32, 1 = fp16, 2 = bf16 (weights at load).
extern "C" __global__ void to_f16(const void *src, int dtype, half_t *dst, long long n) {
    pdl_start();
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
    pdl_start();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = f2h(x[i]);
}

// ---- embedding, norms, elementwise ---------------------------------------------------------------
/// out[r] = table[ids[r]] widened; grid.x = rows.
extern "C" __global__ void embed(const half_t *table, int cols, const int *ids, float *out) {
    pdl_start();
    const half_t *src = table + (long long)ids[blockIdx.x] * cols;
    float *dst = out + (long long)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = h2f(src[i]);
}

/// out[r] = x[r] / rms(x[r]) * w; grid.x = rows, blockDim 256 or 1024. out may be x. Each thread
/// loads its x and w values once, before the reduction (up to RMS_HELD per thread; a wider row loads
/// the rest again), so the row waits on memory once: w's load used to start after the sum.
#define RMS_HELD 8
extern "C" __global__ void rmsnorm(const float *x, const float *w, float *out, half_t *out_h, int dim, float eps) {
    pdl_trigger();
    float wv[RMS_HELD];
#pragma unroll
    for (int u = 0; u < RMS_HELD; u++) {
        int i = threadIdx.x + u * blockDim.x;
        wv[u] = i < dim ? w[i] : 0;   // weights: never written during a forward, so before the wait
    }
    pdl_wait();
    const float *xr = x + (long long)blockIdx.x * dim;
    float *o = out + (long long)blockIdx.x * dim;
    float xv[RMS_HELD];
    float ss = 0;
#pragma unroll
    for (int u = 0; u < RMS_HELD; u++) {
        int i = threadIdx.x + u * blockDim.x;
        xv[u] = i < dim ? xr[i] : 0;
    }
#pragma unroll
    for (int u = 0; u < RMS_HELD; u++)
        if (threadIdx.x + u * blockDim.x < dim) ss += xv[u] * xv[u];
    for (int i = threadIdx.x + RMS_HELD * blockDim.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
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
    half_t *oh = out_h ? out_h + (long long)blockIdx.x * dim : 0;
#pragma unroll
    for (int u = 0; u < RMS_HELD; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (i >= dim) break;
        float v = (xv[u] * inv) * wv[u];
        o[i] = v;
        if (oh) oh[i] = f2h(v);
    }
    for (int i = threadIdx.x + RMS_HELD * blockDim.x; i < dim; i += blockDim.x) {
        float v = (xr[i] * inv) * w[i];
        o[i] = v;
        if (oh) oh[i] = f2h(v);
    }
}

/// silu(g) · u, as every SwiGLU path computes it (silu_mul, gemm_skinny_merge_silu).
__device__ __forceinline__ float silu_value(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ float gate_up_value(const float *p, long long i) { return p[i]; }
__device__ __forceinline__ float gate_up_value(const half_t *p, long long i) { return h2f(p[i]); }

/// out[r][i] = silu(gu[r][i]) * gu[r][inter + i] over fp32 or fp16 gate/up halves; grid over rows*inter.
template <typename T>
__device__ __forceinline__ void silu_mul_rows(const T *gu, float *out, half_t *out_h, int rows, int inter) {
    pdl_start();
    long long n = (long long)rows * inter;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int r = (int)i / inter, c = (int)i - r * inter;   // 32-bit division (n < 2^31): a 64-bit one is a long instruction sequence
        long long base = (long long)r * 2 * inter;
        float v = silu_value(gate_up_value(gu, base + c), gate_up_value(gu, base + inter + c));
        out[i] = v;
        if (out_h) out_h[i] = f2h(v);
    }
}
extern "C" __global__ void silu_mul(const float *gu, float *out, half_t *out_h, int rows, int inter) {
    silu_mul_rows(gu, out, out_h, rows, inter);
}
/// The same over fp16 halves (a prefill GEMM's fp16 output), fp16 being what the down projection reads anyway.
extern "C" __global__ void silu_mul_h(const half_t *gu, float *out, half_t *out_h, int rows, int inter) {
    silu_mul_rows(gu, out, out_h, rows, inter);
}

/// y += x.
extern "C" __global__ void add(float *y, const float *x, long long n) {
    pdl_start();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] += x[i];
}

/// out[r][c] += bias[c].
extern "C" __global__ void add_bias(float *out, const float *bias, int rows, int cols) {
    pdl_start();
    long long n = (long long)rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] += bias[i % cols];
}

/// out[i] = x[rows[i]] for rows of `width`; grid.x = count.
extern "C" __global__ void gather_rows(const float *x, const int *rows, int width, float *out) {
    pdl_start();
    const float *src = x + (long long)rows[blockIdx.x] * width;
    float *dst = out + (long long)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

// ---- rotary embedding + KV store -----------------------------------------------------------------
/// One rotate-half pair: (a, b) → (a·c − b·s, b·c + a·s). rope_store_kv and the fused decode
/// attention both inline this one expression, so they contract it into the same FMAs: the same bits
/// (the selftest and Scripts/cuda-decode-attention-bench check it). Rounding each product first
/// instead moved SmolLM2's prompt0 top-10 across a near-tie and chat0's logits to 0.052 of HF's.
__device__ __forceinline__ void rope_pair(float a, float b, float c, float s, float &ra, float &rb) {
    ra = a * c - b * s;
    rb = b * c + a * s;
}

/// One K or V element as the cache stores it: fp16, or (int8 cache) the code of
/// clamp(round_half_even((x − zero) / scale), −128, 127), computed as ck_quantize_i8 does
/// ((x − zero) · (1 / scale); a scale of 0 stores code 0, the zero point).
__device__ __forceinline__ void kv_store(half_t *pool, long long i, float x, float, float) { pool[i] = f2h(x); }
__device__ __forceinline__ void kv_store(signed char *pool, long long i, float x, float scale, float zero) {
    float inv = scale > 0 ? 1.0f / scale : 0.0f;
    float q = rintf(__fmul_rn(__fsub_rn(x, zero), inv));
    pool[i] = (signed char)(q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q);
}
/// Four int8 codes (one 32-bit word, lowest byte first) as floats, exactly, without the conversion
/// unit (I2F issues 16 a clock per SM on sm_80/90, a quarter of the FMA rate, and bound the int8
/// decode attention): each code + 128 becomes the low mantissa byte of 2^23 + (c + 128), and one
/// subtraction leaves c.
__device__ __forceinline__ void kv_codes4(unsigned w, float *f) {
    unsigned x = w ^ 0x80808080u;
    f[0] = __int_as_float(__byte_perm(x, 0x4B00u, 0x5440)) - 8388736.0f;
    f[1] = __int_as_float(__byte_perm(x, 0x4B00u, 0x5441)) - 8388736.0f;
    f[2] = __int_as_float(__byte_perm(x, 0x4B00u, 0x5442)) - 8388736.0f;
    f[3] = __int_as_float(__byte_perm(x, 0x4B00u, 0x5443)) - 8388736.0f;
}

/// Rotate-half RoPE (HF Llama) of q and k at the row's position, then K and V to the cache slot
/// (fp16, or int8 with the layer's per-head [k_scale, k_zero, v_scale, v_zero] in `kvp`). grid.x =
/// rows, grid.y blocks per row; each thread takes (head, i) pairs of the q and k heads, then V elements.
template <typename T>
__device__ __forceinline__ void rope_store_rows(float *qkv, int stride, int heads, int kv_heads, int d, const int *pos,
                                                const float *inv_freq, const int *freq_set, T *k_pool, T *v_pool,
                                                const int *slots, const float *kvp) {
    pdl_start();
    int r = blockIdx.x, half = d / 2, kvw = kv_heads * d;
    float *row = qkv + (long long)r * stride;
    const float *freq = inv_freq + (freq_set ? (long long)freq_set[r] * half : 0);
    float p = (float)pos[r];
    long long slot = (long long)slots[r] * kvw;
    int pairs = (heads + kv_heads) * half;
    // grid.y blocks share the row: one block per row was latency-bound (16 us for a 7B row).
    int first = blockIdx.y * blockDim.x + threadIdx.x, step = blockDim.x * gridDim.y;
    for (int t = first; t < pairs; t += step) {
        int h = t / half, i = t - h * half;
        float angle = p * freq[i];   // fp32 product, as HF and the CPU compute it
        float s, c;
        sincosf(angle, &s, &c);
        float *v = row + (long long)h * d;
        float ra, rb;
        rope_pair(v[i], v[i + half], c, s, ra, rb);
        v[i] = ra;
        v[i + half] = rb;
        if (h >= heads) {
            int kh = h - heads;
            float ks = kvp ? kvp[4 * kh] : 0, kz = kvp ? kvp[4 * kh + 1] : 0;
            kv_store(k_pool, slot + kh * d + i, ra, ks, kz);
            kv_store(k_pool, slot + kh * d + i + half, rb, ks, kz);
        }
    }
    const float *vsrc = row + (long long)(heads + kv_heads) * d;
    for (int t = first; t < kvw; t += step) {
        if constexpr (sizeof(T) == 1) {
            int kh = t / d;
            kv_store(v_pool, slot + t, vsrc[t], kvp[4 * kh + 2], kvp[4 * kh + 3]);
        } else {
            kv_store(v_pool, slot + t, vsrc[t], 0, 0);
        }
    }
}
extern "C" __global__ void rope_store_kv(float *qkv, int stride, int heads, int kv_heads, int d, const int *pos,
                                         const float *inv_freq, const int *freq_set, half_t *k_pool, half_t *v_pool,
                                         const int *slots) {
    rope_store_rows(qkv, stride, heads, kv_heads, d, pos, inv_freq, freq_set, k_pool, v_pool, slots, (const float *)0);
}
extern "C" __global__ void rope_store_kv_i8(float *qkv, int stride, int heads, int kv_heads, int d, const int *pos,
                                            const float *inv_freq, const int *freq_set, signed char *k_pool,
                                            signed char *v_pool, const int *slots, const float *kvp) {
    rope_store_rows(qkv, stride, heads, kv_heads, d, pos, inv_freq, freq_set, k_pool, v_pool, slots, kvp);
}

// ---- paged attention -----------------------------------------------------------------------------
#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_COUNTERS 8192   // split-K merge counters at the start of `part`: rows × heads ≤ this
#define ATT_MAX_SPLITS 8    // decode shares per (row, head)

/// Causal GQA over the paged fp16 cache, one block per (query head, query row). The block's warps
/// split the row's keys into 32-key tiles: each lane scores one key (q in shared memory), the warp
/// keeps an online softmax and accumulates V with lanes over the head dimension; the warps' partial
/// results merge at the end. row_table[r] = offset of row r's block table in `tables`.
extern "C" __global__ void attention(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                     int kv_stride, int block_size, const int *pos, const int *row_table,
                                     const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                     float scale, int window, half_t *out_h) {
    pdl_start();
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
        if (out_h) out_h[(long long)r * out_stride + (long long)h * d + i] = f2h(sum / L);
    }
}

// ---- paged attention, head dimension known at compile time ----------------------------------------
/// C consecutive cache elements loaded as one access (4 to 16 bytes).
template <int C, typename T = half_t> struct alignas(sizeof(T) * C) KVVec { T h[C]; };

/// Keys per decode share: `keys` (the row's, after the window) in `splits` shares, rounded up to
/// whole 128-key multiples (each of a share's four warps then has whole 32-key tiles). A function of
/// the row alone, so a row computes the same bits at any batch.
__device__ __forceinline__ int share_keys(int keys, int splits) { return ((keys + splits - 1) / splits + 127) & ~127; }
/// Shares that hold keys (the rest of the `splits` launched return at once).
__device__ __forceinline__ int share_count(int keys, int share) { return (keys + share - 1) / share; }

/// The output row from a (row, head)'s share states (max, mass, unnormalised sum; `active` of them,
/// D + 2 floats apart): every share's loads issued at once (L2: written during this or the last launch).
template <int D>
__device__ __forceinline__ void merge_shares(const float *shares, int active, float *o, half_t *oh) {
    float mz[ATT_MAX_SPLITS];
#pragma unroll
    for (int z = 0; z < ATT_MAX_SPLITS; z++) mz[z] = z < active ? __ldcg(shares + z * (D + 2)) : NEG_INF;
    float MM = NEG_INF;
#pragma unroll
    for (int z = 0; z < ATT_MAX_SPLITS; z++) MM = fmaxf(MM, mz[z]);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float lz[ATT_MAX_SPLITS], sz[ATT_MAX_SPLITS];
#pragma unroll
        for (int z = 0; z < ATT_MAX_SPLITS; z++) {
            lz[z] = z < active ? __ldcg(shares + z * (D + 2) + 1) : 0;
            sz[z] = z < active ? __ldcg(shares + z * (D + 2) + 2 + i) : 0;
        }
        float LL = 0, sum = 0;
#pragma unroll
        for (int z = 0; z < ATT_MAX_SPLITS; z++) {
            if (mz[z] == NEG_INF) continue;   // a share without keys
            float c = expf(mz[z] - MM);
            LL += c * lz[z];
            sum += c * sz[z];
        }
        o[i] = sum / LL;
        if (oh) oh[i] = f2h(sum / LL);
    }
}

/// Decode attention for D = 64 or 128, one block per (query head, row, share of the keys). Latency
/// decides it at small batches (a 7B layer's keys are 10 MB: 2.5 us at the copy rate), so every warp
/// has its whole 32-key tile in flight at once: each lane its key's row (D/8 16-byte loads), then
/// half the tile's V rows (lanes 0-15 key 2t, lanes 16-31 key 2t + 1, D/16 dimensions each) before
/// the scores, the other half after them (all of them up front cost occupancy at 64 rows). Scores
/// sum in four chains. `fuse` (decode-only steps): the kernel rotates q itself and takes the row's
/// own new key and value from qkv (rotated, rounded to fp16 exactly as rope_store_kv stores them),
/// and the first query head of each KV head's group stores them: no rope_store_kv launch, the same
/// bits; and its first tile is requested before the PDL wait, overlapping the qkv GEMM's tail.
/// Shares: splits ≤ 8 of 128-key multiples, so each share's warps have whole tiles (share_keys); a
/// block whose share is empty returns at once. `own_merge` (few rows, latency-bound): the last share
/// of a (row, head) to finish merges them all (counters at the start of `part`). Otherwise each share
/// writes its partial state and attention_merge_d* merges them (same arithmetic, merge_shares), so
/// any number of rows keeps 8 shares (the counters capped that at 8192 (row, head) cells). At 64
/// rows both layouts take 246 us on an H100, reading the K/V at 2.7 TB/s, 84% of its DRAM peak.
/// T = signed char: the int8 cache (`kvp`: the layer's per-head [k_scale, k_zero, v_scale, v_zero]);
/// scores are s_k·(q·c) + z_k·Σq and each share's sum s_v·Σ p·c + z_v·Σ p (not fused: fp16 only).
template <int D, bool fuse, bool own_merge, typename T = half_t>
__device__ __forceinline__ void attention_fixed(const float *qkv, int q_stride, T *k_pool, T *v_pool, int kv_stride,
                                                int block_size, const int *pos, const int *row_table, const int *tables,
                                                float *out, int out_stride, int heads, int kv_heads, float scale, int window,
                                                const int *row_list, half_t *out_h, int splits, float *part,
                                                const float *inv_freq, const int *freq_set, const int *slots,
                                                const float *kvp = 0) {
    constexpr int VL = D / 16, HALF = D / 2, KR = D * (int)sizeof(T) / 16;
    static_assert(!fuse || sizeof(T) == 2, "the fused rotation stores fp16 only");
    if (!fuse) pdl_wait();
    int h = blockIdx.x, r = row_list ? row_list[blockIdx.y] : blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int group = heads / kv_heads, kvh = h / group;
    __shared__ __align__(16) float q[D];
    __shared__ __align__(16) half_t own_k[D], own_v[D];   // the row's new key and value (fuse)
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][D];
    const float *row = qkv + (long long)r * q_stride;
    int end = pos[r] + 1;
    int lo = window > 0 && end > window ? end - window : 0;
    int share = share_keys(end - lo, splits), active = share_count(end - lo, share);
    if ((int)blockIdx.z >= active) {   // an empty share
        if (fuse) pdl_wait();
        return;
    }
    lo += blockIdx.z * share;
    int n = min(end, lo + share);
    bool own = fuse && lo < n && n == end;   // this share holds the new token (position end - 1)
    const int *table = tables + row_table[r];
    int sub = lane >> 4, part16 = lane & 15;
    // A tile's K row per lane and its first 8 V row pairs. Fused (decode-only steps), the first tile
    // is requested before the wait: every key but the new one was stored by earlier steps, and the
    // step's tables were uploaded before its first kernel; only q and the new k/v come from qkv.
    uint4 kr[KR];
    KVVec<VL, T> vv[16];
    long long off = 0;
    auto request = [&](int base) {
        int jj = base + lane < n ? base + lane : base;   // a readable row for the lanes past the end
        off = ((long long)table[jj / block_size] * block_size + jj % block_size) * kv_stride + (long long)kvh * D;
#pragma unroll
        for (int u = 0; u < KR; u++) kr[u] = ((const uint4 *)(k_pool + off))[u];
#pragma unroll
        for (int t = 0; t < 8; t++) vv[t] = *(const KVVec<VL, T> *)(v_pool + __shfl_sync(0xffffffffu, off, 2 * t + sub) + part16 * VL);
    };
    int base = lo + warp * 32;
    if (fuse && base < n) request(base);
    if (fuse) {
        pdl_wait();
        const float *freq = inv_freq + (freq_set ? (long long)freq_set[r] * HALF : 0);
        float p = (float)pos[r];
        const float *qs = row + (long long)h * D, *ks = row + (long long)(heads + kvh) * D;
        long long slot = (long long)slots[r] * kv_stride + (long long)kvh * D;
        bool store = own && h % group == 0;
        for (int i = threadIdx.x; i < HALF; i += blockDim.x) {
            float sn, cs;
            sincosf(p * freq[i], &sn, &cs);
            float ra, rb;
            rope_pair(qs[i], qs[i + HALF], cs, sn, ra, rb);
            q[i] = ra * scale;
            q[i + HALF] = rb * scale;
            if (own) {
                rope_pair(ks[i], ks[i + HALF], cs, sn, ra, rb);
                own_k[i] = f2h(ra);
                own_k[i + HALF] = f2h(rb);
                if constexpr (fuse) {
                    if (store) {
                        k_pool[slot + i] = own_k[i];
                        k_pool[slot + i + HALF] = own_k[i + HALF];
                    }
                }
            }
        }
        if (own) {
            const float *vs = row + (long long)(heads + kv_heads + kvh) * D;
            for (int i = threadIdx.x; i < D; i += blockDim.x) {
                own_v[i] = f2h(vs[i]);
                if constexpr (fuse) {
                    if (store) v_pool[slot + i] = own_v[i];
                }
            }
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) q[i] = row[(long long)h * D + i] * scale;
    }
    float m = NEG_INF, l = 0;
    float acc[VL];
#pragma unroll
    for (int c = 0; c < VL; c++) acc[c] = 0;
    __syncthreads();
    // int8: the head's scale and zero point of K (on the score) and V (on the share's sum).
    float k_scale = 1, k_shift = 0, v_scale = 1, v_zero = 0;
    if constexpr (sizeof(T) == 1) {
        float qsum = 0;
#pragma unroll 16
        for (int i = 0; i < D; i++) qsum += q[i];
        k_scale = kvp[4 * kvh];
        k_shift = kvp[4 * kvh + 1] * qsum;
        v_scale = kvp[4 * kvh + 2];
        v_zero = kvp[4 * kvh + 3];
    }
    for (; base < n; base += ATT_WARPS * 32) {
        if (!fuse || base != lo + warp * 32) request(base);
        int j = base + lane;
        bool valid = j < n;
        if constexpr (fuse) {
            if (own && j == end - 1) {
#pragma unroll
                for (int u = 0; u < KR; u++) kr[u] = ((const uint4 *)own_k)[u];
            }
        }
        float d4[4] = {0, 0, 0, 0};
        if constexpr (sizeof(T) == 1) {
            const unsigned *words = (const unsigned *)kr;
#pragma unroll
            for (int w = 0; w < D / 4; w++) {
                float f[4];
                kv_codes4(words[w], f);
                float &a = d4[(w >> 1) & 3];   // the fp16 path's chains: 8 elements each in turn
#pragma unroll
                for (int e = 0; e < 4; e++) a += q[w * 4 + e] * f[e];
            }
        } else {
            const half_t *kv = (const half_t *)kr;
#pragma unroll
            for (int u = 0; u < D / 8; u++) {
                float &a = d4[u & 3];
#pragma unroll
                for (int e = 0; e < 8; e++) a += q[u * 8 + e] * h2f(kv[u * 8 + e]);
            }
        }
        float s = (d4[0] + d4[1]) + (d4[2] + d4[3]);
        if constexpr (sizeof(T) == 1) s = s * k_scale + k_shift;
        s = valid ? s : NEG_INF;
        float m_new = fmaxf(m, warp_max(s));
        float corr = expf(m - m_new);   // 0 on the first tile (m = -inf)
        float pr = valid ? expf(s - m_new) : 0;
        l = l * corr + warp_sum(pr);
#pragma unroll
        for (int c = 0; c < VL; c++) acc[c] *= corr;
#pragma unroll
        for (int t = 8; t < 16; t++) vv[t] = *(const KVVec<VL, T> *)(v_pool + __shfl_sync(0xffffffffu, off, 2 * t + sub) + part16 * VL);
        int mine = own ? end - 1 - base : -1;   // the new token's place in this tile, if here
        KVVec<VL, T> ov;
        if constexpr (fuse) ov = ((const KVVec<VL, T> *)own_v)[part16];
#pragma unroll
        for (int t = 0; t < 16; t++) {
            float pt = __shfl_sync(0xffffffffu, pr, 2 * t + sub);   // 0 past the end
            KVVec<VL, T> x = vv[t];
            if constexpr (fuse) {
                if (2 * t + sub == mine) x = ov;
            }
            if constexpr (sizeof(T) == 1) {
#pragma unroll
                for (int w = 0; w < VL / 4; w++) {
                    float f[4];
                    kv_codes4(((const unsigned *)&x)[w], f);
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[4 * w + e] += pt * f[e];
                }
            } else {
#pragma unroll
                for (int c = 0; c < VL; c++) acc[c] += pt * h2f(x.h[c]);
            }
        }
        m = m_new;
    }
#pragma unroll
    for (int c = 0; c < VL; c++) acc[c] += __shfl_xor_sync(0xffffffffu, acc[c], 16);
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
    if (lane < 16) {
#pragma unroll
        for (int c = 0; c < VL; c++) wacc[warp][lane * VL + c] = acc[c];
    }
    __syncthreads();
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, wm[w]);
    float L = 0;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) L += wm[w] == NEG_INF ? 0 : expf(wm[w] - M) * wl[w];
    float *o = out + (long long)r * out_stride + (long long)h * D;
    half_t *oh = out_h ? out_h + (long long)r * out_stride + (long long)h * D : 0;
    // One share: the output. Otherwise this share's max, mass and unnormalised sum, after the
    // ATT_COUNTERS counters at the start of `part` (one per (row, head), zeroed at allocation and
    // reset by the merging share); merged by the last share to finish (own_merge) or the merge kernel.
    const long long cell = (long long)blockIdx.y * heads + h;
    float *shares = part + ATT_COUNTERS + cell * splits * (D + 2);
    float *pp = shares + blockIdx.z * (D + 2);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float sum = 0;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++)
            if (wm[w] != NEG_INF) sum += expf(wm[w] - M) * wacc[w][i];
        if constexpr (sizeof(T) == 1) sum = sum * v_scale + v_zero * L;
        if (splits == 1) {
            o[i] = sum / L;
            if (oh) oh[i] = f2h(sum / L);
        } else {
            pp[2 + i] = sum;
        }
    }
    if (splits == 1) return;
    if (threadIdx.x == 0) {
        pp[0] = M;
        pp[1] = L;
    }
    if (!own_merge) return;
    __threadfence();   // the partials are visible before the count says so
    __syncthreads();
    __shared__ int last;
    int *counter = (int *)part + cell;
    if (threadIdx.x == 0) last = atomicAdd(counter, 1) == active - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (threadIdx.x == 0) *counter = 0;
    merge_shares<D>(shares, active, o, oh);
}

/// Merges the partial states written by attention_d* (not own_merge): one block per (head, row).
template <int D>
__device__ __forceinline__ void attention_merge_fixed(const int *pos, const int *row_list, int heads, int window, int splits,
                                                      const float *part, float *out, int out_stride, half_t *out_h) {
    pdl_start();
    int h = blockIdx.x, r = row_list ? row_list[blockIdx.y] : blockIdx.y;
    int end = pos[r] + 1;
    int keys = end - (window > 0 && end > window ? end - window : 0);
    const float *shares = part + ATT_COUNTERS + ((long long)blockIdx.y * heads + h) * splits * (D + 2);
    merge_shares<D>(shares, share_count(keys, share_keys(keys, splits)), out + (long long)r * out_stride + (long long)h * D,
                    out_h ? out_h + (long long)r * out_stride + (long long)h * D : 0);
}

// Two kernels per head size: fused (decode-only steps of a few rows, latency-bound: the first tile
// held across the wait costs registers; merges its shares itself) and not (mixed steps and larger
// batches: ≤ 128 registers, four blocks a multiprocessor; 64 in flight 3,551 against 3,374 output
// tok/s with 132; the shares merged by attention_merge_d*).
#define ATTENTION_DECODE(NAME, D, FUSE)                                                                                      \
    extern "C" __global__ void NAME(const float *qkv, int q_stride, half_t *k_pool, half_t *v_pool, int kv_stride,           \
                                    int block_size, const int *pos, const int *row_table, const int *tables, float *out,     \
                                    int out_stride, int heads, int kv_heads, int d, float scale, int window, half_t *out_h,  \
                                    const int *row_list, int splits, float *part, const float *inv_freq,                     \
                                    const int *freq_set, const int *slots) {                                                 \
        pdl_trigger();   /* attention_fixed waits (after its first requests when fused) */                                \
        attention_fixed<D, FUSE, FUSE>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out,  \
                                       out_stride, heads, kv_heads, scale, window, row_list, out_h, splits, part, inv_freq, \
                                       freq_set, slots);                                                                   \
    }
ATTENTION_DECODE(attention_d64, 64, false)
ATTENTION_DECODE(__launch_bounds__(128, 4) attention_d128, 128, false)
ATTENTION_DECODE(attention_rope_d64, 64, true)
ATTENTION_DECODE(attention_rope_d128, 128, true)
// The int8 cache (quant_policy 4): mixed and decode-only steps alike, rope_store_kv_i8 first.
#define ATTENTION_DECODE_I8(NAME, D)                                                                                         \
    extern "C" __global__ void NAME(const float *qkv, int q_stride, signed char *k_pool, signed char *v_pool, int kv_stride, \
                                    int block_size, const int *pos, const int *row_table, const int *tables, float *out,     \
                                    int out_stride, int heads, int kv_heads, int d, float scale, int window, half_t *out_h,  \
                                    const int *row_list, int splits, float *part, const float *inv_freq,                     \
                                    const int *freq_set, const int *slots, const float *kvp) {                               \
        pdl_trigger();                                                                                                       \
        attention_fixed<D, false, false, signed char>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table,  \
                                                      tables, out, out_stride, heads, kv_heads, scale, window, row_list,     \
                                                      out_h, splits, part, inv_freq, freq_set, slots, kvp);                 \
    }
ATTENTION_DECODE_I8(attention_i8_d64, 64)
ATTENTION_DECODE_I8(__launch_bounds__(128, 4) attention_i8_d128, 128)
#define ATTENTION_MERGE(D)                                                                                                   \
    extern "C" __global__ void attention_merge_d##D(const int *pos, const int *row_list, int heads, int window, int splits, \
                                                    const float *part, float *out, int out_stride, half_t *out_h) {        \
        attention_merge_fixed<D>(pos, row_list, heads, window, splits, part, out, out_stride, out_h);                      \
    }
ATTENTION_MERGE(64)
ATTENTION_MERGE(128)

// ---- prefill attention: query tiles sharing K/V tiles in shared memory -------------------------------
#define TILE_ROWS 16

/// Causal attention for prefill chunks: one block per (query head, tile of up to 16 consecutive rows
/// of one sequence). The block stages 32-key tiles of K and V in shared memory (fp32; K rows padded
/// so lanes reading different keys hit different banks), and each warp runs the online softmax of
/// its four query rows against them, lane = key for scores and lane = dimension for V. Every K/V
/// byte is read from memory once per tile of queries instead of once per query. An int8 cache (T =
/// signed char) is dequantized as it is staged (x = c·scale + zero, the head's `kvp` entries).
template <int D, typename T = half_t>
__device__ __forceinline__ void attention_tiles_fixed(const float *qkv, int q_stride, const T *k_pool, const T *v_pool,
                                                      int kv_stride, int block_size, const int *pos, const int *row_table,
                                                      const int *tables, float *out, int out_stride, int heads, int kv_heads,
                                                      float scale, int window, const int *tile_first, const int *tile_count,
                                                      half_t *out_h, const float *kvp = 0) {
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
    float ksc = 1, kze = 0, vsc = 1, vze = 0;
    if constexpr (sizeof(T) == 1) {
        ksc = kvp[4 * kvh];
        kze = kvp[4 * kvh + 1];
        vsc = kvp[4 * kvh + 2];
        vze = kvp[4 * kvh + 3];
    }
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
            KVVec<8, T> kr = {}, vr = {};
            if (j < hi) {
                long long off = ((long long)table[j / block_size] * block_size + j % block_size) * kv_stride + (long long)kvh * D + e;
                kr = *(const KVVec<8, T> *)(k_pool + off);
                vr = *(const KVVec<8, T> *)(v_pool + off);
            }
            if constexpr (sizeof(T) == 1) {
                float fk[8], fv[8];
                kv_codes4(((const unsigned *)&kr)[0], fk);
                kv_codes4(((const unsigned *)&kr)[1], fk + 4);
                kv_codes4(((const unsigned *)&vr)[0], fv);
                kv_codes4(((const unsigned *)&vr)[1], fv + 4);
#pragma unroll
                for (int x = 0; x < 8; x++) {
                    ks[t][e + x] = fk[x] * ksc + kze;
                    vs[t][e + x] = fv[x] * vsc + vze;
                }
            } else {
#pragma unroll
                for (int x = 0; x < 8; x++) {
                    ks[t][e + x] = h2f(kr.h[x]);
                    vs[t][e + x] = h2f(vr.h[x]);
                }
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
        long long oo = (long long)(first + rr) * out_stride + (long long)h * D;
#pragma unroll
        for (int c = 0; c < C; c++) {
            float v = acc[w][c] / l[w];
            out[oo + c * 32 + lane] = v;
            if (out_h) out_h[oo + c * 32 + lane] = f2h(v);
        }
    }
}

extern "C" __global__ void attention_tiles_d64(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                               int kv_stride, int block_size, const int *pos, const int *row_table,
                                               const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                               float scale, int window, half_t *out_h, const int *tile_first, const int *tile_count) {
    pdl_start();
    attention_tiles_fixed<64>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                              kv_heads, scale, window, tile_first, tile_count, out_h);
}

extern "C" __global__ void attention_tiles_d128(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                                int kv_stride, int block_size, const int *pos, const int *row_table,
                                                const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                                float scale, int window, half_t *out_h, const int *tile_first, const int *tile_count) {
    pdl_start();
    attention_tiles_fixed<128>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                               kv_heads, scale, window, tile_first, tile_count, out_h);
}

extern "C" __global__ void attention_tiles_i8_d64(const float *qkv, int q_stride, const signed char *k_pool,
                                                  const signed char *v_pool, int kv_stride, int block_size, const int *pos,
                                                  const int *row_table, const int *tables, float *out, int out_stride, int heads,
                                                  int kv_heads, int d, float scale, int window, half_t *out_h,
                                                  const int *tile_first, const int *tile_count, const float *kvp) {
    pdl_start();
    attention_tiles_fixed<64, signed char>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out,
                                           out_stride, heads, kv_heads, scale, window, tile_first, tile_count, out_h, kvp);
}

// ---- prefill attention on tensor cores ------------------------------------------------------------
#define MMA_ROWS 64   // query rows per block: 16 per warp
// Keys per K/V tile: 32 keep the kernel at 164 registers, three blocks per SM where 64 allowed two
// (Scripts/cuda-prefill-attention-bench on an H100: 309 against 338 µs for a 2,048-token prompt's 32 heads).
#ifndef MMA_KEYS   // (the bench may try another)
#define MMA_KEYS 32
#endif

__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    return (unsigned)f2h(lo) | ((unsigned)f2h(hi) << 16);
}

/// d += a · b for one m16n8k16 tile (fp16 inputs, fp32 accumulation).
__device__ __forceinline__ void mma16816(float *d, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// A shared-memory address as the 32-bit form ldmatrix and cp.async take.
__device__ __forceinline__ unsigned smem_u32(const void *p) {
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}
/// 16 bytes global → shared without a register round trip; `valid` false fills zeros (src unread).
__device__ __forceinline__ void cp_async16(unsigned dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
/// Four 8×8 fp16 matrices from shared memory, lanes 8i…8i+7 addressing matrix i's rows; `.trans`
/// hands each lane a column pair instead of a row pair (the B fragment of P·V from row-major V).
__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned addr, unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/// Causal prefill attention in the style of FlashAttention-2, on the tensor cores: one block per
/// (query head, tile of up to 64 consecutive rows of one sequence), each warp owning 16 rows. K and
/// V tiles of MMA_KEYS keys are staged in shared memory as fp16 (rows padded by 8 halves so ldmatrix's
/// eight row reads hit distinct banks); S = Q·Kᵀ and O += P·V are m16n8k16 MMAs with fp32
/// accumulation, the softmax is online in fp32 (base 2: log2 e is folded into q's scale), and P is
/// rounded to fp16 for the second product (as FlashAttention does). The copies are asynchronous
/// (cp.async): V of a tile lands while S is computed, K of the next tile while O is.
/// Blocks run the longest tiles (the last rows of a prompt) first, so the short ones fill the tail.
/// An int8 cache (T = signed char): the codes land by cp.async in a second pair of tiles and each
/// thread widens the chunks it copied to fp16 values (c·scale + zero, the head's `kvp` entries) once
/// its copies are complete, before the barrier that hands the tile to the MMAs.
template <int D, typename T = half_t>
__device__ __forceinline__ void attention_mma_fixed(const float *qkv, int q_stride, const T *k_pool, const T *v_pool,
                                                    int kv_stride, int block_size, const int *pos, const int *row_table,
                                                    const int *tables, float *out, int out_stride, int heads, int kv_heads,
                                                    float scale, int window, const int *tile_first, const int *tile_count,
                                                    half_t *out_h, const float *kvp = 0) {
    constexpr int KS = D / 16;   // k-steps over the head dimension
    constexpr int DN = D / 8;    // 8-wide output tiles
    constexpr int PAD = D + 8;
    constexpr bool I8 = sizeof(T) == 1;
    constexpr int RAW = I8 ? MMA_KEYS * D : 16;   // the int8 codes' tiles (unused for fp16)
    __shared__ __align__(16) half_t ks[MMA_KEYS][PAD];
    __shared__ __align__(16) half_t vs[MMA_KEYS][PAD];
    __shared__ __align__(16) signed char raw_k[RAW], raw_v[RAW];
    int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
    int tile = gridDim.y - 1 - blockIdx.y;
    int first = tile_first[tile], count = tile_count[tile];
    int kvh = h / (heads / kv_heads);
    const int *table = tables + row_table[first];
    int p0 = pos[first];
    int hi = pos[first + count - 1] + 1;
    int lo = window > 0 && p0 + 1 > window ? p0 + 1 - window : 0;

    // Stage the MMA_KEYS keys from `base` of K or V (zeros past hi): 16 bytes a copy, 8 fp16 values
    // or 16 int8 codes.
    constexpr int CHUNK = 16 / (int)sizeof(T);
    auto stage = [&](half_t (*dst)[PAD], signed char *raw, const T *pool, int base) {
        for (int u = threadIdx.x; u < MMA_KEYS * D / CHUNK; u += blockDim.x) {
            int t = u / (D / CHUNK), e = (u - t * (D / CHUNK)) * CHUNK, j = base + t;
            bool ok = j < hi;
            long long off = ok ? ((long long)table[j / block_size] * block_size + j % block_size) * kv_stride + (long long)kvh * D + e : 0;
            cp_async16(I8 ? smem_u32(raw + t * D + e) : smem_u32(&dst[t][e]), pool + off, ok);
        }
        cp_async_commit();
    };
    // int8: this thread's copied chunks (complete after its cp_async_wait) to fp16 values.
    auto widen = [&](half_t (*dst)[PAD], const signed char *raw, float sc, float ze) {
        if constexpr (I8) {
            for (int u = threadIdx.x; u < MMA_KEYS * D / CHUNK; u += blockDim.x) {
                int t = u / (D / CHUNK), e = (u - t * (D / CHUNK)) * CHUNK;
                uint4 c = *(const uint4 *)(raw + t * D + e);
                float f[16];
                kv_codes4(c.x, f);
                kv_codes4(c.y, f + 4);
                kv_codes4(c.z, f + 8);
                kv_codes4(c.w, f + 12);
                unsigned w[8];
#pragma unroll
                for (int x = 0; x < 8; x++) w[x] = pack_half2(f[2 * x] * sc + ze, f[2 * x + 1] * sc + ze);
                *(uint4 *)&dst[t][e] = make_uint4(w[0], w[1], w[2], w[3]);
                *(uint4 *)&dst[t][e + 8] = make_uint4(w[4], w[5], w[6], w[7]);
            }
        }
    };
    float ksc = 1, kze = 0, vsc = 1, vze = 0;
    if constexpr (I8) {
        ksc = kvp[4 * kvh];
        kze = kvp[4 * kvh + 1];
        vsc = kvp[4 * kvh + 2];
        vze = kvp[4 * kvh + 3];
    }
    stage(ks, raw_k, k_pool, lo);

    // This thread's two query rows (g and g + 8 of the warp's 16) and their fragments.
    int r0 = warp * 16 + g, r1 = r0 + 8;
    int pr0 = p0 + r0, pr1 = p0 + r1;
    bool v0 = r0 < count, v1 = r1 < count;
    const float qs = scale * 1.4426950408889634f;   // scores in base 2
    unsigned qa[KS][4];
    {
        const float *q0 = qkv + (long long)(first + (v0 ? r0 : 0)) * q_stride + (long long)h * D;
        const float *q1 = qkv + (long long)(first + (v1 ? r1 : 0)) * q_stride + (long long)h * D;
#pragma unroll
        for (int t = 0; t < KS; t++) {
            int c = t * 16 + tig * 2;
            float2 a = v0 ? *(const float2 *)(q0 + c) : make_float2(0, 0);
            float2 b = v1 ? *(const float2 *)(q1 + c) : make_float2(0, 0);
            float2 c2 = v0 ? *(const float2 *)(q0 + c + 8) : make_float2(0, 0);
            float2 d2 = v1 ? *(const float2 *)(q1 + c + 8) : make_float2(0, 0);
            qa[t][0] = pack_half2(a.x * qs, a.y * qs);
            qa[t][1] = pack_half2(b.x * qs, b.y * qs);
            qa[t][2] = pack_half2(c2.x * qs, c2.y * qs);
            qa[t][3] = pack_half2(d2.x * qs, d2.y * qs);
        }
    }
    int lo0 = window > 0 && pr0 + 1 > window ? pr0 + 1 - window : 0;
    int lo1 = window > 0 && pr1 + 1 > window ? pr1 + 1 - window : 0;
    float o[DN][4];
#pragma unroll
    for (int j = 0; j < DN; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0;
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0, l1 = 0;
    // ldmatrix row addresses: K rows by key (lanes 8i… take d offset 8i), V rows by key with the
    // second 8 keys in lanes 8…15 and 24…31 and the next 8 columns in lanes 16…31.
    const unsigned k_lane = smem_u32(&ks[lane & 7][(lane >> 3) * 8]);
    const unsigned v_lane = smem_u32(&vs[((lane >> 3) & 1) * 8 + (lane & 7)][(lane >> 4) * 8]);

    for (int base = lo; base < hi; base += MMA_KEYS) {
        stage(vs, raw_v, v_pool, base);
        cp_async_wait<1>();   // this thread's part of K
        widen(ks, raw_k, ksc, kze);
        __syncthreads();      // everyone's
        // S = Q·Kᵀ for the warp's 16 rows × MMA_KEYS keys.
        float sc[MMA_KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < MMA_KEYS / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0;
#pragma unroll
            for (int t = 0; t < KS; t += 2) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(k_lane + (unsigned)((nt * 8 * PAD + t * 16) * 2), b0, b1, b2, b3);
                mma16816(sc[nt], qa[t], b0, b1);
                mma16816(sc[nt], qa[t + 1], b2, b3);
            }
        }
        // Mask (causal, window, past the chunk) unless every key of the tile is visible to every
        // row, then the online softmax of rows g and g + 8.
        bool full = base + MMA_KEYS - 1 <= p0 && (window <= 0 || base >= hi - window);
        float t0 = NEG_INF, t1 = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < MMA_KEYS / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                if (!full) {
                    int j = base + nt * 8 + tig * 2 + e;
                    if (!(v0 && j <= pr0 && j >= lo0 && j < hi)) sc[nt][e] = NEG_INF;
                    if (!(v1 && j <= pr1 && j >= lo1 && j < hi)) sc[nt][2 + e] = NEG_INF;
                }
                t0 = fmaxf(t0, sc[nt][e]);
                t1 = fmaxf(t1, sc[nt][2 + e]);
            }
        }
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
        t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 1));
        t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 2));
        float n0 = fmaxf(m0, t0), n1 = fmaxf(m1, t1);
        float u0 = n0 == NEG_INF ? 0 : n0, u1 = n1 == NEG_INF ? 0 : n1;   // rows with nothing visible yet
        float c0 = fast_exp2(m0 - u0), c1 = fast_exp2(m1 - u1);
        m0 = n0;
        m1 = n1;
        l0 *= c0;
        l1 *= c1;
#pragma unroll
        for (int j = 0; j < DN; j++) {
            o[j][0] *= c0;
            o[j][1] *= c0;
            o[j][2] *= c1;
            o[j][3] *= c1;
        }
        unsigned pa[MMA_KEYS / 16][4];
#pragma unroll
        for (int nt = 0; nt < MMA_KEYS / 8; nt++) {
            float e0 = fast_exp2(sc[nt][0] - u0), e1 = fast_exp2(sc[nt][1] - u0);
            float e2 = fast_exp2(sc[nt][2] - u1), e3 = fast_exp2(sc[nt][3] - u1);
            l0 += e0 + e1;
            l1 += e2 + e3;
            pa[nt / 2][(nt & 1) * 2 + 0] = pack_half2(e0, e1);
            pa[nt / 2][(nt & 1) * 2 + 1] = pack_half2(e2, e3);
        }
        cp_async_wait<0>();   // V
        widen(vs, raw_v, vsc, vze);
        __syncthreads();      // V landed for all, and no warp reads K any more
        if (base + MMA_KEYS < hi) stage(ks, raw_k, k_pool, base + MMA_KEYS);
        else cp_async_commit();   // an empty group keeps the wait counts above
        // O += P·V.
#pragma unroll
        for (int t = 0; t < MMA_KEYS / 16; t++) {
#pragma unroll
            for (int j = 0; j < DN; j += 2) {
                unsigned b0, b1, b2, b3;
                ldsm_x4_trans(v_lane + (unsigned)((t * 16 * PAD + j * 8) * 2), b0, b1, b2, b3);
                mma16816(o[j], pa[t], b0, b1);
                mma16816(o[j + 1], pa[t], b2, b3);
            }
        }
        __syncthreads();   // no warp reads V before the next tile's copy into it
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
#pragma unroll
    for (int j = 0; j < DN; j++) {
        int col = j * 8 + tig * 2;
        if (v0) {
            long long oo = (long long)(first + r0) * out_stride + (long long)h * D + col;
            float a = o[j][0] / l0, b = o[j][1] / l0;
            out[oo] = a;
            out[oo + 1] = b;
            if (out_h) { out_h[oo] = f2h(a); out_h[oo + 1] = f2h(b); }
        }
        if (v1) {
            long long oo = (long long)(first + r1) * out_stride + (long long)h * D + col;
            float a = o[j][2] / l1, b = o[j][3] / l1;
            out[oo] = a;
            out[oo + 1] = b;
            if (out_h) { out_h[oo] = f2h(a); out_h[oo + 1] = f2h(b); }
        }
    }
}

extern "C" __global__ void attention_mma_d64(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                             int kv_stride, int block_size, const int *pos, const int *row_table,
                                             const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                             float scale, int window, half_t *out_h, const int *tile_first, const int *tile_count) {
    pdl_start();
    attention_mma_fixed<64>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                            kv_heads, scale, window, tile_first, tile_count, out_h);
}

extern "C" __global__ void attention_mma_d128(const float *qkv, int q_stride, const half_t *k_pool, const half_t *v_pool,
                                              int kv_stride, int block_size, const int *pos, const int *row_table,
                                              const int *tables, float *out, int out_stride, int heads, int kv_heads, int d,
                                              float scale, int window, half_t *out_h, const int *tile_first, const int *tile_count) {
    pdl_start();
    attention_mma_fixed<128>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out, out_stride, heads,
                             kv_heads, scale, window, tile_first, tile_count, out_h);
}

extern "C" __global__ void attention_mma_i8_d128(const float *qkv, int q_stride, const signed char *k_pool,
                                                 const signed char *v_pool, int kv_stride, int block_size, const int *pos,
                                                 const int *row_table, const int *tables, float *out, int out_stride, int heads,
                                                 int kv_heads, int d, float scale, int window, half_t *out_h,
                                                 const int *tile_first, const int *tile_count, const float *kvp) {
    pdl_start();
    attention_mma_fixed<128, signed char>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out,
                                          out_stride, heads, kv_heads, scale, window, tile_first, tile_count, out_h, kvp);
}

// ---- decode GEMV ------------------------------------------------------------------------------
#define GEMV_MAX_ROWS 4
#define GEMV_LOADS 8

/// out[r][o] = x[r] · W[o] (+ bias[o]) for m ≤ 4 rows (decode), W fp16 [n][k], x fp16 [m][k] (the
/// producers' fp16 copy, as the GEMM path reads it): `split` warps (1, 2 or 4) per output, each
/// taking one contiguous share of k with eight 16-byte weight loads in flight per lane, their sums
/// added in warp order. The split depends on n alone, so each output's summation order is fixed
/// whatever m: a row gets the same bits alone or in a batch. Small n splits k so that the grid
/// covers the GPU in about one wave. blockDim 256 = 8 / split outputs.
/// Under programmatic dependent launch it waits for x before its first load (an L2 prefetch of the
/// weight share before the wait measured 196 against 213 tok/s at batch 1 on an H200). `accumulate` adds the product to out (the residual add, fused), in the
/// order the separate add kernel would: out + (x·w + bias).
extern "C" __global__ void gemv_f16(const half_t *w, const half_t *x, float *out, const float *bias, int m, int n, int k, int split,
                                    int accumulate) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o = blockIdx.x * (8 / split) + warp / split, part = warp % split;
    bool valid = o < n;
    const half_t *wr = w + (long long)(valid ? o : 0) * k;
    int chunks = k / 8, share = (chunks + split - 1) / split;
    int c_lo = part * share, c_hi = min(chunks, c_lo + share);
    pdl_wait();
    float acc[GEMV_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; r++) acc[r] = 0;
    if (valid && (k & 7) == 0) {
        for (int c0 = c_lo + lane; c0 < c_hi; c0 += 32 * GEMV_LOADS) {
            uint4 raw[GEMV_LOADS];
#pragma unroll
            for (int u = 0; u < GEMV_LOADS; u++) {
                int c = c0 + u * 32;
                raw[u] = c < c_hi ? ((const uint4 *)wr)[c] : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < GEMV_LOADS; u++) {
                int c = c0 + u * 32;
                if (c >= c_hi) break;
                const half_t *hv = (const half_t *)&raw[u];
                float wf[8];
#pragma unroll
                for (int e = 0; e < 8; e++) wf[e] = h2f(hv[e]);
#pragma unroll
                for (int r = 0; r < GEMV_MAX_ROWS; r++) {
                    if (r >= m) break;
                    uint4 xr = ((const uint4 *)(x + (long long)r * k))[c];
                    const half_t *xh = (const half_t *)&xr;
                    float s = 0;
#pragma unroll
                    for (int e = 0; e < 8; e++) s += wf[e] * h2f(xh[e]);
                    acc[r] += s;
                }
            }
        }
    } else if (valid && part == 0) {   // k not a multiple of 8: the host passes split 1
        for (int i = lane; i < k; i += 32) {
            float wf = h2f(wr[i]);
#pragma unroll
            for (int r = 0; r < GEMV_MAX_ROWS; r++)
                if (r < m) acc[r] += wf * h2f(x[(long long)r * k + i]);
        }
    }
    pdl_trigger();
    __shared__ float partial[8][GEMV_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_MAX_ROWS; r++) {
        float s = warp_sum(acc[r]);
        if (lane == 0) partial[warp][r] = s;
    }
    __syncthreads();
    if (valid && part == 0 && lane < m) {
        float s = partial[warp][lane];
        for (int q = 1; q < split; q++) s += partial[warp + q][lane];
        float v = s + (bias ? bias[o] : 0.0f);
        float *dst = out + (long long)lane * n + o;
        *dst = accumulate ? *dst + v : v;
    }
}

// ---- decode GEMM on the tensor cores: 1…64 rows, the same bits for a row whatever the batch ------
#define SK_FEATURES 128   // output features per block of the block-split kernels: 4 warps × 2 m-tiles of 16
#define SK_MAX_ROWS 64    // decode rows: up to 8 n-tiles of 8

/// out[m×n] (+)= x[m×k] · w[n×k]ᵀ (+ bias) for decode steps (k a multiple of 64). Weights are the mma's
/// A operand (16 features × 16 k), decode rows its B operand (8 rows per n-tile, zero past m), so one
/// kernel serves 1…64 rows reading the weights once. k is cut into 64-wide chunks dealt round-robin to
/// `split` shares (share z takes chunks z, z + split, …: at any moment the shares of a row read
/// neighbouring chunks, so the memory sees long runs of each row; contiguous shares reached 3.4 TB/s
/// on an H200 where this reaches 3.9, `read only` 4.3). An element's sum runs over its share's chunks
/// in order, four k16 mma steps each, whatever m is; the split is set by n and k alone and the shares
/// merge in share order (skinny_value): a row gets the same bits alone or among 63 others.
/// Within a chunk, lane t of a group holds k 16t…16t+15 of its rows (two 16-byte loads each) and feeds
/// mma step s with k 16t+4s…16t+4s+3 as the fragment's logical k {2t, 2t+1, 2t+8, 2t+9}: A and B are
/// permuted alike, so the product is the plain one.
/// One output from its split-K shares (`part` = [split][total]) summed in share order, then bias and
/// the residual (out + (x·w + bias), as the add kernel): both merges end here, so the same bits.
__device__ __forceinline__ float skinny_value(float sum, const float *bias, int f, float *o, int accumulate) {
    float v = sum + (bias ? bias[f] : 0.0f);
    return accumulate ? *o + v : v;
}

/// One warp's share: features f0…f0+31 (rows of w), chunks c0, c0 + step, … below `chunks`, into
/// acc[m-tile][n-tile][4] (feature f0 + 16 mt + g (+ 8 for e ≥ 2), row 8 j + 2t (+ 1 for odd e)).
template <int T>
__device__ __forceinline__ void skinny_share(const half_t *w, const half_t *x, int m, int n, int k, int f0, int c0, int step,
                                             float (&acc)[2][T][4]) {
    int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int chunks = k >> 6;
    // The thread's four weight rows: m-tile 0 rows g and g + 8, m-tile 1 rows 16 + g and 24 + g.
    const half_t *wr[4];
#pragma unroll
    for (int i = 0; i < 4; i++) wr[i] = w + (long long)min(f0 + g + 8 * i, n - 1) * k + 16 * t;
    const half_t *xr[T];
    bool xv[T];
#pragma unroll
    for (int j = 0; j < T; j++) {
        xv[j] = j * 8 + g < m;
        xr[j] = x + (long long)(xv[j] ? j * 8 + g : 0) * k + 16 * t;
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < T; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][j][e] = 0;
    uint4 cur[4][2], nxt[4][2];
    if (c0 < chunks) {   // weights: in flight while the previous kernel finishes (before the wait)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            cur[i][0] = ((const uint4 *)(wr[i] + (long long)c0 * 64))[0];
            cur[i][1] = ((const uint4 *)(wr[i] + (long long)c0 * 64))[1];
        }
    }
    pdl_wait();
    for (int c = c0; c < chunks; c += step) {
        if (c + step < chunks) {   // the next chunk's weights are in flight while this one multiplies
#pragma unroll
            for (int i = 0; i < 4; i++) {
                nxt[i][0] = ((const uint4 *)(wr[i] + (long long)(c + step) * 64))[0];
                nxt[i][1] = ((const uint4 *)(wr[i] + (long long)(c + step) * 64))[1];
            }
        }
        unsigned wv[4][8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            wv[i][0] = cur[i][0].x; wv[i][1] = cur[i][0].y; wv[i][2] = cur[i][0].z; wv[i][3] = cur[i][0].w;
            wv[i][4] = cur[i][1].x; wv[i][5] = cur[i][1].y; wv[i][6] = cur[i][1].z; wv[i][7] = cur[i][1].w;
        }
#pragma unroll
        for (int j = 0; j < T; j++) {
            uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
            if (xv[j]) {
                x0 = ((const uint4 *)(xr[j] + (long long)c * 64))[0];
                x1 = ((const uint4 *)(xr[j] + (long long)c * 64))[1];
            }
            unsigned xb[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int s = 0; s < 4; s++)
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    unsigned a[4] = {wv[2 * mt][2 * s], wv[2 * mt + 1][2 * s], wv[2 * mt][2 * s + 1], wv[2 * mt + 1][2 * s + 1]};
                    mma16816(acc[mt][j], a, xb[2 * s], xb[2 * s + 1]);
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            cur[i][0] = nxt[i][0];
            cur[i][1] = nxt[i][1];
        }
    }
    pdl_trigger();
}

/// Up to 16 rows: one block per 32 features, its `split` warps the shares, merged through shared
/// memory ([split][8 T][32] floats, dynamic) by the block itself: no partial sums leave the SM.
template <int T>
__device__ __forceinline__ void gemm_skinny_warps(const half_t *w, const half_t *x, float *out, const float *bias, int m, int n,
                                                  int k, int split, int accumulate) {
    int z = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int f0 = blockIdx.x * 32;
    float acc[2][T][4];
    skinny_share<T>(w, x, m, n, k, f0, z, split, acc);
    extern __shared__ float shares[];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < T; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                shares[(z * 8 * T + j * 8 + 2 * t + (e & 1)) * 32 + 16 * mt + g + (e >= 2 ? 8 : 0)] = acc[mt][j][e];
    __syncthreads();
    for (int i = threadIdx.x; i < m * 32; i += blockDim.x) {
        int r = i >> 5, fl = i & 31, f = f0 + fl;
        if (f >= n) continue;
        float sum = shares[r * 32 + fl];
        for (int q = 1; q < split; q++) sum += shares[(q * 8 * T + r) * 32 + fl];
        float *o = out + (long long)r * n + f;
        *o = skinny_value(sum, bias, f, o, accumulate);
    }
}

/// More rows: blocks of 4 warps × 32 features, blockIdx.y the share; with split > 1 each share goes to
/// `part` ([split][m][n]) and gemm_skinny_merge sums them.
template <int T>
__device__ __forceinline__ void gemm_skinny_blocks(const half_t *w, const half_t *x, float *out, const float *bias, int m, int n,
                                                   int k, int split, int accumulate, float *part) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int f0 = blockIdx.x * SK_FEATURES + warp * 32;
    float acc[2][T][4];
    skinny_share<T>(w, x, m, n, k, f0, blockIdx.y, split, acc);
    float *dst = split == 1 ? out : part + (long long)blockIdx.y * m * n;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int j = 0; j < T; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int f = f0 + 16 * mt + g + (e >= 2 ? 8 : 0), r = j * 8 + 2 * t + (e & 1);
                if (f >= n || r >= m) continue;
                float *o = dst + (long long)r * n + f;
                *o = split > 1 ? acc[mt][j][e] : skinny_value(acc[mt][j][e], bias, f, o, accumulate);
            }
}

/// Element `at` of the block-split kernels' shares (`stride` floats apart), summed in share order.
__device__ __forceinline__ float skinny_shares_sum(const float *part, long long at, long long stride, int split) {
    float sum = __ldcg(part + at);
    for (int z = 1; z < split; z++) sum += __ldcg(part + z * stride + at);
    return sum;
}

/// The block-split kernels' shares summed over the whole GPU, in share order.
extern "C" __global__ void gemm_skinny_merge(const float *part, float *out, const float *bias, int m, int n, int split,
                                             int accumulate) {
    pdl_start();
    long long total = (long long)m * n;
    for (long long at = (long long)blockIdx.x * blockDim.x + threadIdx.x; at < total; at += (long long)gridDim.x * blockDim.x)
        out[at] = skinny_value(skinny_shares_sum(part, at, total, split), bias, (int)(at % n), out + at, accumulate);
}

/// gemm_skinny_merge for gate/up rows ([m][2·inter] shares): out = silu(gate) · up [m][inter] and
/// its fp16 copy, the sums in share order as gemm_skinny_merge adds them.
extern "C" __global__ void gemm_skinny_merge_silu(const float *part, float *out, half_t *out_h, int m, int inter, int split) {
    pdl_start();
    long long total = (long long)m * inter, stride = 2 * total;
    for (long long at = (long long)blockIdx.x * blockDim.x + threadIdx.x; at < total; at += (long long)gridDim.x * blockDim.x) {
        int r = (int)(at / inter), c = (int)(at - (long long)r * inter);
        long long gi = (long long)r * 2 * inter + c;
        float gate = skinny_shares_sum(part, gi, stride, split), up = skinny_shares_sum(part, gi + inter, stride, split);
        float v = silu_value(skinny_value(gate, 0, c, 0, 0), skinny_value(up, 0, c, 0, 0));
        out[at] = v;
        if (out_h) out_h[at] = f2h(v);
    }
}

// ≤ 128 registers at up to 16 warps a block (split ≤ 16).
#define SKINNY_WARPS(T)                                                                                                    \
    extern "C" __global__ void __launch_bounds__(512, 1) gemm_skinny_w##T(const half_t *w, const half_t *x, float *out,     \
                                                                         const float *bias, int m, int n, int k, int split, \
                                                                         int accumulate) {                                 \
        gemm_skinny_warps<T>(w, x, out, bias, m, n, k, split, accumulate);                                                 \
    }
#define SKINNY_BLOCKS(T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(128, 1) gemm_skinny_t##T(const half_t *w, const half_t *x, float *out,     \
                                                                         const float *bias, int m, int n, int k, int split, \
                                                                         int accumulate, float *part) {                    \
        gemm_skinny_blocks<T>(w, x, out, bias, m, n, k, split, accumulate, part);                                          \
    }
SKINNY_WARPS(1)
SKINNY_WARPS(2)
SKINNY_BLOCKS(4)
SKINNY_BLOCKS(8)

// ---- sampling ---------------------------------------------------------------------------------
#define SAMPLE_THREADS 1024
#define SAMPLE_MAX_K 1024
#define SAMPLE_PARAMS 12

/// Orders floats as unsigned integers (larger float, larger key).
__device__ __forceinline__ unsigned order_key(float v) {
    unsigned b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/// Whether candidate (va, ia) comes before (vb, ib): larger logit first, lower index on ties (the
/// host's topIndices).
__device__ __forceinline__ bool sample_before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

/// The next token of each logit row, as the host Sampler picks it: repetition penalty over the
/// context's distinct ids, presence/frequency penalties over the generated tail, then argmax
/// (greedy) or top-k (k ≤ 1024: radix select of the k-th largest logit, the candidates sorted) →
/// softmax at the temperature → top-p prefix → the row's draw `uniform` walks the kept mass. The
/// sums run in the host's order (one thread), so both pick the same token for the same draw.
/// params per row: temperature, top_p, top_k, repetition, presence, frequency, uniform (float bits
/// where not ints), context offset/count and generated offset/count into `ids`. `marks` is a
/// zeroed int [rows][vocab] scratch, left zeroed. grid.x = rows, blockDim = 1024.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(float *logits, int vocab, const int *params,
                                                                         const int *ids, int *marks, int *out) {
    pdl_start();
    int r = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int *p = params + r * SAMPLE_PARAMS;
    float temperature = __int_as_float(p[0]), top_p = __int_as_float(p[1]);
    int top_k = p[2];
    float repetition = __int_as_float(p[3]), presence = __int_as_float(p[4]), frequency = __int_as_float(p[5]);
    float uniform = __int_as_float(p[6]);
    float *x = logits + (long long)r * vocab;
    int *mark = marks + (long long)r * vocab;

    if (repetition != 1.0f && p[8] > 0) {
        for (int i = tid; i < p[8]; i += nt) {
            int id = ids[p[7] + i];
            if (id >= 0 && id < vocab) mark[id] = 1;   // duplicates store the same value
        }
        __syncthreads();
        for (int i = tid; i < vocab; i += nt)
            if (mark[i]) {
                float l = x[i];
                x[i] = l > 0 ? l / repetition : l * repetition;
                mark[i] = 0;
            }
        __syncthreads();
    }
    if ((presence != 0.0f || frequency != 0.0f) && p[10] > 0) {
        for (int i = tid; i < p[10]; i += nt) {
            int id = ids[p[9] + i];
            if (id >= 0 && id < vocab) atomicAdd(&mark[id], 1);
        }
        __syncthreads();
        for (int i = tid; i < vocab; i += nt)
            if (mark[i]) {
                x[i] -= presence + frequency * (float)mark[i];
                mark[i] = 0;
            }
        __syncthreads();
    }

    __shared__ float red_v[32];
    __shared__ int red_i[32];
    int warp = tid >> 5, lane = tid & 31, warps = nt >> 5;
    if (temperature <= 0.0f || top_k == 1) {
        // argmax, the first index on ties
        float bv = NEG_INF;
        int bi = 0x7fffffff;
        for (int i = tid; i < vocab; i += nt) {
            float v = x[i];
            if (v > bv || bi == 0x7fffffff) { bv = v; bi = i; }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) { red_v[warp] = bv; red_i[warp] = bi; }
        __syncthreads();
        if (tid == 0) {
            for (int w = 1; w < warps; w++)
                if (red_v[w] > bv || (red_v[w] == bv && red_i[w] < bi)) { bv = red_v[w]; bi = red_i[w]; }
            out[r] = bi;
        }
        return;
    }

    // Radix select: the key of the k-th largest logit, 8 bits at a time from the top.
    __shared__ unsigned hist[256];
    __shared__ unsigned s_prefix;
    __shared__ int s_need;
    unsigned prefix = 0, mask = 0;
    int need = top_k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += nt) hist[i] = 0;
        __syncthreads();
        for (int i = tid; i < vocab; i += nt) {
            unsigned u = order_key(x[i]);
            if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            int above = 0, d = 255;
            for (; d > 0; d--) {
                if (above + (int)hist[d] >= need) break;
                above += hist[d];
            }
            s_need = need - above;
            s_prefix = prefix | ((unsigned)d << shift);
        }
        __syncthreads();
        need = s_need;
        prefix = s_prefix;
        mask |= 255u << shift;
        __syncthreads();
    }
    // Candidates: every logit above the threshold, then the `need` lowest-index ones equal to it.
    __shared__ float cv[SAMPLE_MAX_K];
    __shared__ int ci[SAMPLE_MAX_K];
    __shared__ float pr[SAMPLE_MAX_K];
    __shared__ int s_count, warp_counts[32];
    if (tid == 0) s_count = 0;
    __syncthreads();
    for (int i = tid; i < vocab; i += nt) {
        float v = x[i];
        if (order_key(v) > prefix) {
            int slot = atomicAdd(&s_count, 1);
            cv[slot] = v;
            ci[slot] = i;
        }
    }
    __syncthreads();
    int base = s_count;
    for (int chunk = 0; chunk < vocab && need > 0; chunk += nt) {
        int i = chunk + tid;
        bool eq = i < vocab && order_key(x[i]) == prefix;
        unsigned ballot = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int rank = __popc(ballot & ((1u << lane) - 1u)), total = 0;
        for (int w = 0; w < warps; w++) {
            if (w < warp) rank += warp_counts[w];
            total += warp_counts[w];
        }
        if (eq && rank < need) {
            cv[base + rank] = x[i];
            ci[base + rank] = i;
        }
        base += min(total, need);
        need -= total;
        __syncthreads();
    }
    int k = top_k, size = 1;
    while (size < k) size <<= 1;
    for (int i = k + tid; i < size; i += nt) {
        cv[i] = NEG_INF;
        ci[i] = 0x7fffffff;
    }
    // Bitonic sort of the candidates into "before" order.
    for (int span = 2; span <= size; span <<= 1) {
        for (int stride = span >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = tid; i < size; i += nt) {
                int j = i ^ stride;
                if (j > i) {
                    bool up = (i & span) == 0;
                    bool jFirst = sample_before(cv[j], ci[j], cv[i], ci[i]);
                    bool iFirst = sample_before(cv[i], ci[i], cv[j], ci[j]);
                    if (up ? jFirst : iFirst) {
                        float tv = cv[i]; cv[i] = cv[j]; cv[j] = tv;
                        int ti = ci[i]; ci[i] = ci[j]; ci[j] = ti;
                    }
                }
            }
        }
    }
    __syncthreads();
    float top = cv[0];
    for (int i = tid; i < k; i += nt) pr[i] = expf((cv[i] - top) / temperature);
    __syncthreads();
    if (tid == 0) {
        float total = 0;
        for (int i = 0; i < k; i++) total += pr[i];
        for (int i = 0; i < k; i++) pr[i] /= total;
        int keep = k;
        if (top_p < 1.0f) {
            float cumulative = 0;
            for (int i = 0; i < k; i++) {
                cumulative += pr[i];
                if (cumulative >= top_p) { keep = i + 1; break; }
            }
        }
        float mass = 0;
        for (int i = 0; i < keep; i++) mass += pr[i];
        float rest = uniform * mass;
        int pick = ci[keep - 1];
        for (int i = 0; i < keep; i++) {
            rest -= pr[i];
            if (rest < 0) { pick = ci[i]; break; }
        }
        out[r] = pick;
    }
}
