// Decode attention on the CPU in isolation: SmolLM2's shape (30 layers, 9 query heads over 3 KV heads
// of 64, fp16 cache in 64-token blocks, block table shuffled), one sequence at a given depth, with
// FLUSH MiB of other memory read between layers as the weight products do between attention calls
// (0: the cache stays in L2/L3). Reports one decode step's attention time (best and mean of the runs)
// and the K/V bytes it read per second, beside a plain read of the same blocks by the same pool in
// the same task split (the ceiling for this access pattern: short bursts per layer and head).
// Built and run by Scripts/cpu-decode-attention-bench; links CKernels' sources directly.
#include "ckernels.h"
#include "pool.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { LAYERS = 30, HEADS = 9, KV_HEADS = 3, D = 64, BS = 64 };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { const uint16_t *k, *v; const int32_t *blocks; int n, chunks; uint64_t sums[64]; } read_job;
// Reads each (KV head, piece) task's K then V slices, 64-bit XOR: the attention's bytes, no arithmetic.
static void read_task(void *ctx, int task) {
    read_job *j = ctx;
    int h = task / j->chunks, c = task % j->chunks, per = (j->n + j->chunks - 1) / j->chunks;
    int lo = c * per, hi = lo + per < j->n ? lo + per : j->n;
    uint64_t s = 0;
    for (int pass = 0; pass < 2; pass++) {
        const uint16_t *pool = pass ? j->v : j->k;
        for (int p = lo; p < hi; p++) {
            const uint64_t *row = (const uint64_t *)(pool + ((size_t)j->blocks[p / BS] * BS + p % BS) * KV_HEADS * D + (size_t)h * D);
            for (int i = 0; i < D / 4; i++) s ^= row[i];
        }
    }
    j->sums[task % 64] ^= s;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 640, flush_mb = argc > 2 ? atoi(argv[2]) : 9, runs = argc > 3 ? atoi(argv[3]) : 40;
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    ck_init(threads);
    int nb = (depth + BS - 1) / BS, width = KV_HEADS * D, stride = (HEADS + 2 * KV_HEADS) * D;
    size_t elems = (size_t)nb * BS * width;
    uint16_t *k[LAYERS], *v[LAYERS];
    srand(1);
    for (int l = 0; l < LAYERS; l++) {
        k[l] = malloc(elems * 2);
        v[l] = malloc(elems * 2);
        for (size_t i = 0; i < elems; i++) {   // fp16 in ±[0.125, 0.25): finite, distinct, no page shared
            k[l][i] = (uint16_t)(0x3000 + (rand() & 0x3ff) + ((rand() & 1) << 15));
            v[l][i] = (uint16_t)(0x3000 + (rand() & 0x3ff) + ((rand() & 1) << 15));
        }
    }
    int32_t *blocks = malloc(sizeof(int32_t) * nb);
    for (int i = 0; i < nb; i++) blocks[i] = i;
    for (int i = nb - 1; i > 0; i--) { int j = rand() % (i + 1), t = blocks[i]; blocks[i] = blocks[j]; blocks[j] = t; }
    float *q = malloc(sizeof(float) * stride), *out = malloc(sizeof(float) * HEADS * D);
    for (int i = 0; i < stride; i++) q[i] = rand() / (float)RAND_MAX - 0.5f;
    ck_attn_seq seq = {0, 1, depth - 1, blocks};
    size_t flush = (size_t)flush_mb << 20;
    unsigned char *other = malloc(flush ? flush : 1);
    memset(other, 1, flush ? flush : 1);
    volatile uint64_t sink = 0;
    // The attention's own task split (ck_attention_paged cuts contexts of 512+ into 256-position pieces).
    int chunks = depth >= 512 ? (depth + 255) / 256 : 1;
    double best[2] = {1e9, 1e9}, total[2] = {0, 0};
    for (int r = 0; r < runs + 3; r++) {
        for (int mode = 0; mode < 2; mode++) {
            double t = 0;
            for (int l = 0; l < LAYERS; l++) {
                uint64_t s = 0;
                for (size_t i = 0; i < flush; i += 64) s += other[i];
                sink += s;
                double t0 = now();
                if (mode == 0) {
                    ck_attention_paged(q, stride, k[l], v[l], CK_F16, width, BS, &seq, 1, out, HEADS * D, HEADS, KV_HEADS, D, 0.125f, 0);
                } else {
                    read_job j = {k[l], v[l], blocks, depth, chunks, {0}};
                    ck_parallel(read_task, &j, KV_HEADS * chunks);
                    sink += j.sums[0];
                }
                t += now() - t0;
            }
            if (r < 3) continue;   // warm-up
            total[mode] += t;
            if (t < best[mode]) best[mode] = t;
        }
    }
    double bytes = 2.0 * LAYERS * depth * width * 2;
    for (int mode = 0; mode < 2; mode++)
        printf("{\"bench\":\"cpu_decode_attention\",\"what\":\"%s\",\"depth\":%d,\"flush_mib\":%d,\"threads\":%d,\"step_ms_best\":%.3f,"
               "\"step_ms_mean\":%.3f,\"kv_gb_per_s\":%.1f}\n", mode ? "plain_read" : "attention", depth, flush_mb, threads,
               best[mode] * 1e3, total[mode] / runs * 1e3, bytes / (total[mode] / runs) / 1e9);
    return (int)(sink & 0) + (out[0] != out[0]);   // NaN output fails
}
