// The prefill attention of kernels.cu (attention_mma_d128, tensor cores) on the 7B shape: 32 heads of
// 128, keys in 64-token blocks with shuffled block tables, one 2,048-token prompt and sixteen 512-token
// prompts in one forward (the serving bench's chunks). Checks rows of every head against a float64
// softmax(q·Kᵀ)·V on the host (the selftest's bound for this kernel, 2.4e-2), then times the best of
// 20 launches and prints TFLOP/s (4·d FLOPs per visible (row, key) per head) as one JSON line each.
// Built and run by Scripts/cuda-prefill-attention-bench; -DOLD=FILE adds old_attention_mma_d128.
#include "../Sources/TurboMind/Backend/CUDA/kernels.cu"
#ifdef OLD
#include OLD
#endif
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

static float h2f_host(half_t h) {
    unsigned s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
static half_t f2h_host(float f) {   // |f| < 1 here: round to nearest on the mantissa, below 2^-14 to zero
    if (fabsf(f) < 6.2e-5f) return 0;
    int e; float m = frexpf(fabsf(f), &e);   // f = m·2^e, m in [0.5, 1)
    int mant = (int)lrintf(m * 2048.0f);     // 11 bits
    if (mant == 2048) { mant = 1024; e++; }
    return (half_t)((f < 0 ? 0x8000 : 0) | ((e + 14) << 10) | (mant - 1024));
}

int main() {
    const int heads = 32, kvh = 32, D = 128, bs = 64, stride = (heads + 2 * kvh) * D, kv_stride = kvh * D;
    struct Shape { int seqs, len; const char *name; } shapes[] = {{1, 2048, "1x2048"}, {16, 512, "16x512"}};
    for (auto sh : shapes) {
        int rows = sh.seqs * sh.len, bpr = (sh.len + bs - 1) / bs, nblocks = sh.seqs * bpr;
        size_t pool = (size_t)nblocks * bs * kv_stride;
        srand(7);
        std::vector<half_t> hk(pool), hv(pool);
        for (size_t i = 0; i < pool; i++) { hk[i] = f2h_host(rand() / (float)RAND_MAX - 0.5f); hv[i] = f2h_host(rand() / (float)RAND_MAX - 0.5f); }
        std::vector<float> hq((size_t)rows * stride);
        for (auto &f : hq) f = (rand() / (float)RAND_MAX - 0.5f) * 4;
        std::vector<int> hp(rows), hrt(rows), ht(nblocks), first, count;
        for (int i = 0; i < nblocks; i++) ht[i] = (int)(((long long)i * 7919) % nblocks);
        for (int s = 0; s < sh.seqs; s++)
            for (int r = 0; r < sh.len; r++) { hp[s * sh.len + r] = r; hrt[s * sh.len + r] = s * bpr; }
        for (int s = 0; s < sh.seqs; s++)
            for (int r = 0; r < sh.len; r += 64) { first.push_back(s * sh.len + r); count.push_back(std::min(64, sh.len - r)); }
        half_t *K, *V; float *q, *out[2]; int *pos, *rt, *tab, *tf, *tc;
        CK(cudaMalloc(&K, pool * 2)); CK(cudaMalloc(&V, pool * 2));
        CK(cudaMemcpy(K, hk.data(), pool * 2, cudaMemcpyHostToDevice)); CK(cudaMemcpy(V, hv.data(), pool * 2, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&q, hq.size() * 4)); CK(cudaMemcpy(q, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
        for (auto &o : out) { CK(cudaMalloc(&o, (size_t)rows * heads * D * 4)); CK(cudaMemset(o, 0, (size_t)rows * heads * D * 4)); }
        auto up = [](int **d, const std::vector<int> &v) { CK(cudaMalloc(d, v.size() * 4)); CK(cudaMemcpy(*d, v.data(), v.size() * 4, cudaMemcpyHostToDevice)); };
        up(&pos, hp); up(&rt, hrt); up(&tab, ht); up(&tf, first); up(&tc, count);
        int tiles = (int)first.size();
        float scale = 1 / sqrtf(D);
        int window = 0, dd = D, qst = stride, kst = kv_stride, bsz = bs, nh = heads, nkv = kvh, ost = heads * D;
        half_t *oh = nullptr;
        auto launch = [&](void (*k)(const float *, int, const half_t *, const half_t *, int, int, const int *, const int *, const int *,
                                    float *, int, int, int, int, float, int, half_t *, const int *, const int *), float *o) {
            k<<<dim3(heads, tiles, 1), 128>>>(q, qst, K, V, kst, bsz, pos, rt, tab, o, ost, nh, nkv, dd, scale, window, oh, tf, tc);
        };
        struct Kernel { const char *name; void (*fn)(const float *, int, const half_t *, const half_t *, int, int, const int *, const int *,
                                                      const int *, float *, int, int, int, int, float, int, half_t *, const int *, const int *); };
        std::vector<Kernel> ks = {{"attention_mma_d128", attention_mma_d128}};
#ifdef OLD
        ks.push_back({"old_attention_mma_d128", old_attention_mma_d128});
#endif
        double flops = 0;
        for (int r = 0; r < rows; r++) flops += 4.0 * D * heads * (hp[r] + 1);
        for (size_t ki = 0; ki < ks.size(); ki++) {
            float *o = out[ki];
            launch(ks[ki].fn, o);
            CK(cudaDeviceSynchronize());
            // Rows checked against float64: the first, the ends of the first tiles, and the last of each prompt.
            std::vector<float> ho((size_t)rows * heads * D);
            CK(cudaMemcpy(ho.data(), o, ho.size() * 4, cudaMemcpyDeviceToHost));
            double worst = 0;
            std::vector<int> check = {0, 1, 63, 64, 65, sh.len / 2 + 3, sh.len - 1, rows - 1};
            for (int r : check) {
                int s = r / sh.len;
                for (int h = 0; h < heads; h++) {
                    std::vector<double> sc(hp[r] + 1), acc(D, 0.0);
                    double mx = -1e300, sum = 0;
                    for (int j = 0; j <= hp[r]; j++) {
                        size_t off = ((size_t)ht[s * bpr + j / bs] * bs + j % bs) * kv_stride + (size_t)(h / (heads / kvh)) * D;
                        double d = 0;
                        for (int c = 0; c < D; c++) d += (double)hq[(size_t)r * stride + h * D + c] * h2f_host(hk[off + c]);
                        sc[j] = d * scale; mx = std::max(mx, sc[j]);
                    }
                    for (int j = 0; j <= hp[r]; j++) {
                        size_t off = ((size_t)ht[s * bpr + j / bs] * bs + j % bs) * kv_stride + (size_t)(h / (heads / kvh)) * D;
                        double w = exp(sc[j] - mx); sum += w;
                        for (int c = 0; c < D; c++) acc[c] += w * h2f_host(hv[off + c]);
                    }
                    for (int c = 0; c < D; c++) worst = std::max(worst, fabs(acc[c] / sum - ho[((size_t)r * heads + h) * D + c]));
                }
            }
            cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
            float best = 1e30f;
            for (int rep = 0; rep < 20; rep++) {
                cudaEventRecord(a); launch(ks[ki].fn, o); cudaEventRecord(b); cudaEventSynchronize(b);
                float ms; cudaEventElapsedTime(&ms, a, b); best = std::min(best, ms);
            }
            CK(cudaGetLastError());
            printf("{\"bench\":\"prefill_attention\",\"kernel\":\"%s\",\"shape\":\"%s\",\"us\":%.1f,\"tflops\":%.1f,\"max_err_vs_f64\":%.2e,\"ok\":%s}\n",
                   ks[ki].name, sh.name, best * 1e3, flops / (best * 1e-3) / 1e12, worst, worst <= 2.4e-2 ? "true" : "false");
        }
#ifdef OLD
        {   // new against old, every output
            std::vector<float> a((size_t)rows * heads * D), b(a.size());
            CK(cudaMemcpy(a.data(), out[0], a.size() * 4, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b.data(), out[1], b.size() * 4, cudaMemcpyDeviceToHost));
            double w = 0; for (size_t i = 0; i < a.size(); i++) w = std::max(w, (double)fabsf(a[i] - b[i]));
            printf("{\"bench\":\"prefill_attention\",\"shape\":\"%s\",\"max_diff_new_old\":%.2e}\n", sh.name, w);
        }
#endif
        cudaFree(K); cudaFree(V); cudaFree(q); cudaFree(out[0]); cudaFree(out[1]);
        cudaFree(pos); cudaFree(rt); cudaFree(tab); cudaFree(tf); cudaFree(tc);
    }
}
