/* Run-time CPU feature detection through the compiler's cpuid support. */
#include "core/cpu.h"

/* __builtin_cpu_supports also checks through XGETBV that the OS saves the
 * YMM and ZMM registers, so a feature it reports is usable. */
int eq_cpu_has_avx2_fma(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int eq_cpu_has_avx512(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
