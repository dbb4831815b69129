// The decode attention of kernels.cu on the 7B shape (32 heads, head size 128, 641 keys in 64-token
// blocks, shuffled block tables) at 1, 16 and 64 rows: rope_store_kv then attention_d128 (mixed
// steps) against attention_rope_d128, the rotation and the KV store fused in (decode-only steps).
// Checks that both give the same bits (outputs and the stored K/V), then times each as the best
// of five replays of a CUDA graph of 64 launches over eight copies of the cache (nothing stays in
// L2). Built and run by Scripts/cuda-decode-attention-bench; -DOLD=FILE adds a kernel to compare.
#include "../Sources/TurboMind/Backend/CUDA/kernels.cu"
#ifdef OLD
#include OLD
#endif
// The unfused kernel with the fused one's in-kernel merge (the layout before attention_merge_d*).
extern "C" __global__ void __launch_bounds__(128, 4) inkernel_attention_d128(
    const float *qkv, int q_stride, half_t *k_pool, half_t *v_pool, int kv_stride, int block_size, const int *pos,
    const int *row_table, const int *tables, float *out, int out_stride, int heads, int kv_heads, int d, float scale,
    int window, half_t *out_h, const int *row_list, int splits, float *part, const float *inv_freq, const int *freq_set,
    const int *slots) {
    pdl_trigger();
    attention_fixed<128, false, true>(qkv, q_stride, k_pool, v_pool, kv_stride, block_size, pos, row_table, tables, out,
                                      out_stride, heads, kv_heads, scale, window, row_list, out_h, splits, part, inv_freq,
                                      freq_set, slots);
}
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

__global__ void fill_half(half_t *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
        p[i] = f2h((x & 0xffff) / 65536.0f - 0.5f);
    }
}

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

int main() {
    const int heads = 32, kvh = 32, D = 128, bs = 64, stride = (heads + 2 * kvh) * D, kv_stride = kvh * D;
    const int ctx = 641, bpr = (ctx + bs - 1) / bs, copies = 8, reps = 64;
    // ROWS=N: that batch only; NOTIME=1: the checks only (one launch of each kernel, for a profiler).
    const char *only = getenv("ROWS");
    bool notime = getenv("NOTIME") != nullptr;
    for (int rows : {1, 16, 64}) {
        if (only && atoi(only) != rows) continue;
        int nblocks = rows * copies * bpr;
        size_t pool = (size_t)nblocks * bs * kv_stride;
        half_t *K[2], *V[2];
        for (int c = 0; c < 2; c++) { CK(cudaMalloc(&K[c], pool * 2)); CK(cudaMalloc(&V[c], pool * 2)); }
        fill_half<<<1024, 256>>>(K[0], pool, 1); fill_half<<<1024, 256>>>(V[0], pool, 2);
        CK(cudaMemcpy(K[1], K[0], pool * 2, cudaMemcpyDeviceToDevice)); CK(cudaMemcpy(V[1], V[0], pool * 2, cudaMemcpyDeviceToDevice));
        srand(1);
        std::vector<float> hq(rows * stride), freq(D / 2);
        for (auto &f : hq) f = (rand() / (float)RAND_MAX - 0.5f) * 4;
        for (int i = 0; i < D / 2; i++) freq[i] = powf(10000.0f, -2.0f * i / D);
        float *raw, *rot, *inv, *out[3], *part;
        CK(cudaMalloc(&raw, hq.size() * 4)); CK(cudaMemcpy(raw, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&rot, hq.size() * 4));
        CK(cudaMalloc(&inv, D / 2 * 4)); CK(cudaMemcpy(inv, freq.data(), D / 2 * 4, cudaMemcpyHostToDevice));
        for (auto &p : out) CK(cudaMalloc(&p, rows * heads * D * 4));
        size_t part_n = ATT_COUNTERS + (size_t)rows * heads * ATT_MAX_SPLITS * (D + 2);
        CK(cudaMalloc(&part, part_n * 4)); CK(cudaMemset(part, 0, part_n * 4));
        std::vector<int> hp(rows), ht(nblocks);
        for (int r = 0; r < rows; r++) hp[r] = ctx - 1 - (r % 7);
        for (int i = 0; i < nblocks; i++) ht[i] = (int)(((long long)i * 7919) % nblocks);   // shuffled: holes between rows
        int *pos, *tab;
        CK(cudaMalloc(&pos, rows * 4)); CK(cudaMemcpy(pos, hp.data(), rows * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&tab, nblocks * 4)); CK(cudaMemcpy(tab, ht.data(), nblocks * 4, cudaMemcpyHostToDevice));
        std::vector<int *> rts(copies), slots(copies);
        for (int c = 0; c < copies; c++) {
            std::vector<int> x(rows), sl(rows);
            for (int r = 0; r < rows; r++) {
                x[r] = (c * rows + r) * bpr;
                sl[r] = ht[x[r] + hp[r] / bs] * bs + hp[r] % bs;
            }
            CK(cudaMalloc(&rts[c], rows * 4)); CK(cudaMemcpy(rts[c], x.data(), rows * 4, cudaMemcpyHostToDevice));
            CK(cudaMalloc(&slots[c], rows * 4)); CK(cudaMemcpy(slots[c], sl.data(), rows * 4, cudaMemcpyHostToDevice));
        }
        float scale = 1 / sqrtf(D);
        int per_row = std::max(1, std::min(8, (heads + kvh) * D / 2 / 256));
        auto rope = [&](cudaStream_t st, int c, half_t *k, half_t *v) {
            CK(cudaMemcpyAsync(rot, raw, hq.size() * 4, cudaMemcpyDeviceToDevice, st));
            rope_store_kv<<<dim3(rows, per_row), 256, 0, st>>>(rot, stride, heads, kvh, D, pos, inv, nullptr, k, v, slots[c]);
        };
        // fuse: 0 attention_d128 + attention_merge_d128, 1 attention_rope_d128, 2 inkernel_attention_d128.
        auto attend = [&](cudaStream_t st, int c, int fuse, half_t *k, half_t *v, float *o) {
            (fuse == 1 ? attention_rope_d128 : fuse == 2 ? inkernel_attention_d128 : attention_d128)<<<dim3(heads, rows, 8), 128, 0, st>>>(
                fuse == 1 ? raw : rot, stride, k, v, kv_stride, bs, pos, rts[c], tab, o, heads * D, heads, kvh, D, scale, 0, nullptr, nullptr,
                8, part, inv, nullptr, slots[c]);
            if (fuse == 0) attention_merge_d128<<<dim3(heads, rows), 128, 0, st>>>(pos, nullptr, heads, 0, 8, part, o, heads * D, nullptr);
        };
        // Same bits: rope_store_kv + attention on copy 0 of cache 0, the fused kernel on cache 1.
        rope(0, 0, K[0], V[0]); attend(0, 0, 0, K[0], V[0], out[0]);
        attend(0, 0, 1, K[1], V[1], out[1]);
        CK(cudaDeviceSynchronize());
        std::vector<float> a(rows * heads * D), b(a.size());
        CK(cudaMemcpy(a.data(), out[0], a.size() * 4, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(b.data(), out[1], b.size() * 4, cudaMemcpyDeviceToHost));
        bool same_out = memcmp(a.data(), b.data(), a.size() * 4) == 0;
        attend(0, 0, 2, K[0], V[0], out[1]);   // the in-kernel merge too (K[0] already holds the new key)
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(b.data(), out[1], b.size() * 4, cudaMemcpyDeviceToHost));
        bool same_inkernel = memcmp(a.data(), b.data(), a.size() * 4) == 0;
        std::vector<half_t> ka(pool), kb(pool);
        CK(cudaMemcpy(ka.data(), K[0], pool * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(kb.data(), K[1], pool * 2, cudaMemcpyDeviceToHost));
        bool same_k = ka == kb;
        CK(cudaMemcpy(ka.data(), V[0], pool * 2, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(kb.data(), V[1], pool * 2, cudaMemcpyDeviceToHost));
        bool same_v = ka == kb;
        printf("{\"rows\":%d,\"fused_same_bits\":%s,\"inkernel_merge_same_bits\":%s,\"stored_k_same\":%s,\"stored_v_same\":%s}\n", rows,
               same_out ? "true" : "false", same_inkernel ? "true" : "false",
               same_k ? "true" : "false", same_v ? "true" : "false");
        if (notime) {
            attend(0, 0, 0, K[0], V[0], out[1]);
            CK(cudaDeviceSynchronize());
            continue;
        }
        cudaStream_t st; CK(cudaStreamCreate(&st));
        cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        const char *names[] = {"rope_store_kv", "attention+merge", "attention_fused", "attention_inkernel_merge", "old_attention"};
        for (int v = 0; v < 5; v++) {
#ifndef OLD
            if (v == 4) continue;
#endif
            cudaGraph_t graph; cudaGraphExec_t exec;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < reps; i++) {
                int c = i % copies;
                if (v == 0) rope_store_kv<<<dim3(rows, per_row), 256, 0, st>>>(rot, stride, heads, kvh, D, pos, inv, nullptr, K[0], V[0], slots[c]);
                if (v >= 1 && v <= 3) attend(st, c, v - 1, K[0], V[0], out[2]);
#ifdef OLD
                if (v == 4) old_attention_d128<<<dim3(heads, rows, 8), 128, 0, st>>>(rot, stride, K[0], V[0], kv_stride, bs, pos, rts[c], tab,
                                                                                    out[2], heads * D, heads, kvh, D, scale, 0, nullptr, nullptr, 8, part);
#endif
            }
            CK(cudaStreamEndCapture(st, &graph));
            CK(cudaGraphInstantiate(&exec, graph, 0));
            CK(cudaGraphLaunch(exec, st)); CK(cudaStreamSynchronize(st));
            float best = 1e9;
            for (int trial = 0; trial < 5; trial++) {
                CK(cudaEventRecord(e0, st)); CK(cudaGraphLaunch(exec, st)); CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
                float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); best = std::min(best, ms);
            }
            double us = best * 1000.0 / reps, bytes = 2.0 * rows * ctx * kv_stride * 2;
            printf("{\"rows\":%d,\"kernel\":\"%s\",\"us\":%.2f,\"kv_tb_per_s\":%.2f}\n", rows, names[v], us, v ? bytes / us / 1e6 : 0.0);
            CK(cudaGraphExecDestroy(exec)); CK(cudaGraphDestroy(graph));
        }
        for (int c = 0; c < 2; c++) { CK(cudaFree(K[c])); CK(cudaFree(V[c])); }
        CK(cudaFree(raw)); CK(cudaFree(rot)); CK(cudaFree(inv)); for (auto p : out) CK(cudaFree(p)); CK(cudaFree(part));
        CK(cudaFree(pos)); CK(cudaFree(tab)); for (auto p : rts) CK(cudaFree(p)); for (auto p : slots) CK(cudaFree(p));
    }
    return 0;
}
