// Instruction-set detection and the choice every kernel dispatches on.
#include "ckernels.h"
#include "isa.h"
#include <stdio.h>
#include <string.h>

static int detected = -1;
// Per thread: a test forcing an instruction set must not change the kernels other threads run
// (the engine's, other tests'); the pool hands the caller's choice to its workers per job.
static _Thread_local int forced = -1;
static char features[256];

static int detect(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    char *p = features;
    const char *names[] = {"sse4.2", "avx", "f16c", "fma", "avx2", "avx512f", "avx512bw", "avx512vl",
                           "avx512bf16", "avx512vnni"};
    int has[] = {__builtin_cpu_supports("sse4.2"), __builtin_cpu_supports("avx"),
                 __builtin_cpu_supports("f16c"), __builtin_cpu_supports("fma"),
                 __builtin_cpu_supports("avx2"), __builtin_cpu_supports("avx512f"),
                 __builtin_cpu_supports("avx512bw"), __builtin_cpu_supports("avx512vl"),
                 __builtin_cpu_supports("avx512bf16"), __builtin_cpu_supports("avx512vnni")};
    for (size_t i = 0; i < sizeof has / sizeof has[0]; i++)
        if (has[i]) p += sprintf(p, "%s%s", p == features ? "" : ",", names[i]);
    if (has[5] && has[6] && has[7]) return CK_ISA_AVX512;
    if (has[4] && has[2] && has[3]) return CK_ISA_AVX2;
    return CK_ISA_SCALAR;
#elif defined(__aarch64__)
    strcpy(features, "neon");
    return CK_ISA_SCALAR;   // portable C, auto-vectorised to NEON by the compiler
#else
    strcpy(features, "none");
    return CK_ISA_SCALAR;
#endif
}

int ck_isa_level(void) {
    if (detected < 0) detected = detect();
    return forced >= 0 ? forced : detected;
}

const char *ck_isa(void) {
    switch (ck_isa_level()) {
    case CK_ISA_AVX512: return "avx512";
    case CK_ISA_AVX2: return "avx2";
    default:
#if defined(__aarch64__)
        return "neon";
#else
        return "scalar";
#endif
    }
}

const char *ck_cpu_features(void) {
    ck_isa_level();
    return features;
}

int ck_force_isa(const char *name) {
    if (detected < 0) detected = detect();
    int want = strcmp(name, "avx512") == 0 ? CK_ISA_AVX512
             : strcmp(name, "avx2") == 0   ? CK_ISA_AVX2
             : strcmp(name, "scalar") == 0 ? CK_ISA_SCALAR : -1;
    if (want < 0 || want > detected) return 0;
    forced = want;
    return 1;
}

int ck_thread_forced_isa(void) { return forced; }

void ck_adopt_forced_isa(int level) { forced = level; }

// AVX-512 VNNI (Ice Lake, Zen 4): vpdpwssd fuses the int16 multiply-add and the int32 sum. Per thread,
// like ck_force_isa, so a test can run both AVX-512 variants; the int4 products read it once per call
// into their job, so pool workers follow the caller's choice.
static int detected_vnni = -1;
static _Thread_local int vnni_off;

int ck_vnni(void) {
#if defined(__x86_64__)
    if (detected_vnni < 0) { __builtin_cpu_init(); detected_vnni = __builtin_cpu_supports("avx512vnni") ? 1 : 0; }
    return detected_vnni && !vnni_off;
#else
    return 0;
#endif
}

int ck_use_vnni(int on) {
    vnni_off = !on;
    return ck_vnni();
}
