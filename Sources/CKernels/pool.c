// A persistent worker pool tuned for the decode loop: a token runs ~150 small parallel kernels,
// so dispatch must cost microseconds. Idle workers spin briefly on a generation counter (the
// next kernel usually arrives within microseconds) and then sleep on a condition variable so an
// idle server burns no CPU.
#define _GNU_SOURCE
#include "ckernels.h"
#include "pool.h"
#include "isa.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CK_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CK_PAUSE() __asm__ __volatile__("yield")
#else
#define CK_PAUSE() ((void)0)
#endif

// Idle workers spin briefly (the next kernel of a decode step follows within microseconds), then
// yield the core between polls (another process may need it: on a loaded 2-core machine a
// spinning worker starved the very thread that was to hand it work), then sleep.
enum { SPIN_ITERATIONS = 1 << 11, YIELD_ITERATIONS = 1 << 12 };

// The job word packs generation, task count and next task index into one atomic so a worker
// can never claim a task of a job other than the one it observed (see claim_task).
#define IDX_BITS 20
#define IDX_MASK ((1ull << IDX_BITS) - 1)
#define GEN_SHIFT (2 * IDX_BITS)
static inline uint64_t job_gen(uint64_t w) { return w >> GEN_SHIFT; }

static struct {
    pthread_mutex_t call_lock;   // serialises ck_parallel callers
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    pthread_t *threads;
    int nthreads;                // including the caller
    _Atomic uint64_t job;        // gen << 40 | tasks << 20 | next index
    _Atomic int done_tasks;
    _Atomic int stop;
    ck_task_fn fn;               // a job of tasks: fn(ctx, t) per index
    ck_range_fn range_fn;        // or a job of ranges: range_fn(ctx, lo, hi), claimed guided
    int grain;                   // a range job's smallest claim
    void *ctx;
    int forced_isa;              // the caller's ck_force_isa choice, for this job's tasks
} pool = {
    .call_lock = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .nthreads = 0,
};

// A claim takes one index of a task job, or of a range job a piece of what is left divided by
// twice the thread count (a multiple of `grain`, at least one): the first claims are large, the last ones small, so
// the threads run out of work within a small piece of each other (guided scheduling). With two
// threads a GEMV of n rows costs about 2·log2(n / grain) claims.
static void run_tasks(void) {
    for (;;) {
        uint64_t w = atomic_load_explicit(&pool.job, memory_order_acquire);
        uint64_t idx = w & IDX_MASK, total = (w >> IDX_BITS) & IDX_MASK;
        if (idx >= total) return;
        // fn, range_fn and grain were written before the job word was published (acquired above);
        // if the CAS below succeeds the job is still that one.
        uint64_t take = 1;
        if (pool.range_fn) {
            take = (total - idx) / (2 * (uint64_t)pool.nthreads) / (uint64_t)pool.grain * (uint64_t)pool.grain;
            if (take < (uint64_t)pool.grain) take = (uint64_t)pool.grain;
            if (take > total - idx) take = total - idx;
        }
        if (!atomic_compare_exchange_weak_explicit(&pool.job, &w, w + take, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        // The job cannot change while one of its tasks is unfinished, so fn/ctx are this job's.
        ck_adopt_forced_isa(pool.forced_isa);
        if (pool.range_fn) pool.range_fn(pool.ctx, (int)idx, (int)(idx + take));
        else pool.fn(pool.ctx, (int)idx);
        atomic_fetch_add_explicit(&pool.done_tasks, (int)take, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    // The generation current when the pool was created, not when this thread first runs: a job
    // (or a stop) published in between must not be mistaken for the state to wait past.
    uint64_t seen = (uint64_t)(uintptr_t)arg;
    for (;;) {
        uint64_t gen;
        int spins = 0;
        while ((gen = job_gen(atomic_load_explicit(&pool.job, memory_order_acquire))) == seen) {
            if (++spins < SPIN_ITERATIONS) { CK_PAUSE(); continue; }
            if (spins < SPIN_ITERATIONS + YIELD_ITERATIONS) { sched_yield(); continue; }
            pthread_mutex_lock(&pool.sleep_lock);
            while ((gen = job_gen(atomic_load(&pool.job))) == seen)
                pthread_cond_wait(&pool.wake, &pool.sleep_lock);
            pthread_mutex_unlock(&pool.sleep_lock);
            break;
        }
        seen = gen;
        if (atomic_load(&pool.stop)) return NULL;
        run_tasks();
    }
}

static void publish_job(uint64_t tasks) {
    uint64_t gen = job_gen(atomic_load(&pool.job)) + 1;
    pthread_mutex_lock(&pool.sleep_lock);
    atomic_store_explicit(&pool.job, (gen << GEN_SHIFT) | (tasks << IDX_BITS), memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.sleep_lock);
}

static int online_cores(void) {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void stop_workers(void) {
    if (pool.nthreads <= 1) { pool.nthreads = 0; return; }
    atomic_store(&pool.stop, 1);
    publish_job(0);
    for (int i = 0; i < pool.nthreads - 1; i++) pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    atomic_store(&pool.stop, 0);
}

void ck_init(int threads) {
    pthread_mutex_lock(&pool.call_lock);
    if (threads <= 0) threads = online_cores();
    if (threads > 256) threads = 256;
    if (pool.nthreads != threads) {
        stop_workers();
        pool.nthreads = threads;
        if (threads > 1) {
            pool.threads = calloc((size_t)threads - 1, sizeof(pthread_t));
            uintptr_t gen = (uintptr_t)job_gen(atomic_load(&pool.job));
            for (int i = 0; i < threads - 1; i++) pthread_create(&pool.threads[i], NULL, worker_main, (void *)gen);
        }
    }
    pthread_mutex_unlock(&pool.call_lock);
}

int ck_threads(void) {
    if (pool.nthreads == 0) ck_init(0);
    return pool.nthreads;
}

int ck_task_count(int units, int min_per_task) {
    int threads = ck_threads();
    if (min_per_task < 1) min_per_task = 1;
    int by_size = (units + min_per_task - 1) / min_per_task;
    int wanted = threads * 4;   // a few tasks per thread balance uneven progress
    int t = by_size < wanted ? by_size : wanted;
    return t < 1 ? 1 : t;
}

// Publishes a job of `total` units (tasks or range items), works on it, and returns when all are done.
static void run_job(ck_task_fn fn, ck_range_fn range_fn, int grain, void *ctx, int total) {
    pool.fn = fn;
    pool.range_fn = range_fn;
    pool.grain = grain < 1 ? 1 : grain;
    pool.ctx = ctx;
    pool.forced_isa = ck_thread_forced_isa();
    atomic_store_explicit(&pool.done_tasks, 0, memory_order_relaxed);
    publish_job((uint64_t)total);
    run_tasks();
    // Wait for units other threads claimed; yield if one of them was descheduled mid-claim.
    for (int spins = 0; atomic_load_explicit(&pool.done_tasks, memory_order_acquire) < total; spins++) {
        if (spins < SPIN_ITERATIONS) CK_PAUSE(); else sched_yield();
    }
}

void ck_parallel(ck_task_fn fn, void *ctx, int tasks) {
    if (tasks <= 0) return;
    if (pool.nthreads == 0) ck_init(0);
    pthread_mutex_lock(&pool.call_lock);
    // More tasks than the job word can count never happens with ck_task_count; stay correct anyway.
    if (pool.nthreads <= 1 || tasks == 1 || (uint64_t)tasks > IDX_MASK) {
        for (int t = 0; t < tasks; t++) fn(ctx, t);
    } else {
        run_job(fn, NULL, 1, ctx, tasks);
    }
    pthread_mutex_unlock(&pool.call_lock);
}

void ck_parallel_range(ck_range_fn fn, void *ctx, int n, int grain) {
    if (n <= 0) return;
    if (pool.nthreads == 0) ck_init(0);
    pthread_mutex_lock(&pool.call_lock);
    if (pool.nthreads <= 1 || n <= grain || (uint64_t)n > IDX_MASK) {
        fn(ctx, 0, n);
    } else {
        run_job(NULL, fn, grain, ctx, n);
    }
    pthread_mutex_unlock(&pool.call_lock);
}
