// The decode GEMM's read rate on the 7B shapes (docs/cuda.md): gemm_skinny_w1/_w2 and _t8 + merge from
// kernels.cu at 1, 16 and 64 rows, with the split CUDABackend.skinny picks, against a plain read of
// the same bytes. Eight copies of each weight rotate so nothing stays in L2; each figure is the best
// of three replays of a CUDA graph of 64 launches. Built and run by Scripts/cuda-decode-gemm-bench.
#include "../Sources/TurboMind/Backend/CUDA/kernels.cu"
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

__global__ void read_all(const uint4 *p, long long n16, unsigned *sink) {
    unsigned acc = 0;
    long long stride = (long long)gridDim.x * blockDim.x, i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
        acc ^= a.x ^ b.y ^ c.z ^ d.w;
    }
    for (; i < n16; i += stride) acc ^= p[i].x;
    if (acc == 0x12345678) sink[0] = acc;
}

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

int main() {
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    struct Shape { const char *name; int n, k, per_token; } shapes[] = {
        {"qkv", 12288, 4096, 32}, {"gate_up", 22016, 4096, 32}, {"down", 4096, 11008, 32}, {"o", 4096, 4096, 32}, {"lm_head", 32000, 4096, 1}};
    const int copies = 8, reps = 64, row_counts[] = {1, 16, 64};
    half_t *x; float *out, *part; unsigned *sink;
    CK(cudaMalloc(&x, 64 * 11008 * 2)); CK(cudaMemset(x, 0, 64 * 11008 * 2));
    CK(cudaMalloc(&out, 64 * 32000 * 4)); CK(cudaMalloc(&part, (size_t)16 * 64 * 32000 * 4)); CK(cudaMalloc(&sink, 4));
    cudaStream_t st; CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    double token_us[4] = {0}, token_bytes = 0;   // per row count, then the plain read
    for (auto &s : shapes) {
        size_t bytes = (size_t)s.n * s.k * 2;
        std::vector<half_t *> w(copies);
        for (auto &p : w) { CK(cudaMalloc(&p, bytes)); CK(cudaMemset(p, 0x11, bytes)); }
        int columns = (s.n + 127) / 128;
        int split = std::max(1, std::min(std::min(16, 16 * sms / (columns * 4)), s.k / 256));   // CUDABackend.skinny
        for (int v = 0; v < 4; v++) {
            int m = v < 3 ? row_counts[v] : 0, tiles = (m + 7) / 8;
            cudaGraph_t graph; cudaGraphExec_t exec;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
            for (int r = 0; r < reps; r++) {
                const half_t *wp = w[r % copies];
                if (v == 3) read_all<<<sms * 8, 256, 0, st>>>((const uint4 *)wp, bytes / 16, sink);
                else if (tiles == 1) gemm_skinny_w1<<<(s.n + 31) / 32, 32 * split, split * 8 * 32 * 4, st>>>(wp, x, out, nullptr, m, s.n, s.k, split, 0);
                else if (tiles == 2) gemm_skinny_w2<<<(s.n + 31) / 32, 32 * split, split * 16 * 32 * 4, st>>>(wp, x, out, nullptr, m, s.n, s.k, split, 0);
                else {
                    gemm_skinny_t8<<<dim3(columns, split), 128, 0, st>>>(wp, x, out, nullptr, m, s.n, s.k, split, 0, part);
                    if (split > 1) gemm_skinny_merge<<<std::min((m * s.n + 255) / 256, 8 * sms), 256, 0, st>>>(part, out, nullptr, m, s.n, split, 0);
                }
            }
            CK(cudaStreamEndCapture(st, &graph));
            CK(cudaGraphInstantiate(&exec, graph, 0));
            CK(cudaGraphLaunch(exec, st)); CK(cudaStreamSynchronize(st));
            float best = 1e9;
            for (int trial = 0; trial < 3; trial++) {
                CK(cudaEventRecord(e0, st)); CK(cudaGraphLaunch(exec, st)); CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1));
                float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); best = std::min(best, ms);
            }
            double us = best * 1000.0 / reps;
            token_us[v] += us * s.per_token;
            printf("{\"shape\":\"%s\",\"n\":%d,\"k\":%d,\"split\":%d,\"kernel\":\"%s\",\"rows\":%d,\"us\":%.2f,\"tb_per_s\":%.2f}\n", s.name, s.n, s.k,
                   split, v == 3 ? "read_only" : tiles <= 2 ? "gemm_skinny_w" : "gemm_skinny_t8+merge", m, us, bytes / us / 1e6);
            CK(cudaGraphExecDestroy(exec)); CK(cudaGraphDestroy(graph));
        }
        token_bytes += (double)bytes * s.per_token;
        for (auto p : w) CK(cudaFree(p));
    }
    for (int v = 0; v < 4; v++)
        printf("{\"token\":\"%s\",\"rows\":%d,\"ms\":%.3f,\"tb_per_s\":%.2f}\n", v == 3 ? "read_only" : "decode_gemm", v < 3 ? row_counts[v] : 0,
               token_us[v] / 1000, token_bytes / token_us[v] / 1e6);
    return 0;
}
