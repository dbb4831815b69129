// Internal: instruction-set levels and the target attributes of each kernel variant.
#ifndef CK_ISA_H
#define CK_ISA_H
enum { CK_ISA_SCALAR = 0, CK_ISA_AVX2 = 1, CK_ISA_AVX512 = 2 };
int ck_isa_level(void);
#if defined(__x86_64__)
#include <immintrin.h>
#define CK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define CK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CK_HAVE_X86 1
#endif
#define CK_INLINE static inline __attribute__((always_inline))
// The calling thread's forced instruction set (-1: none), and adopting one (pool workers take the
// job's caller's choice, so ck_force_isa covers the parallel kernels it starts).
int ck_thread_forced_isa(void);
void ck_adopt_forced_isa(int level);
/// Whether the integer products may use AVX-512 VNNI on this thread (the CPU has it, ck_use_vnni did not turn it off).
int ck_vnni(void);
#if defined(__x86_64__)
#define CK_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#endif
#endif
