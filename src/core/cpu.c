/* Run-time CPU feature detection: the compiler's cpuid support for the
 * instruction sets, XGETBV for whether the OS saves the vector registers. */
#include "core/cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>

/* XCR0 bits: SSE and AVX (YMM) state, then the AVX-512 opmask, upper ZMM0-15
 * and ZMM16-31 state. An instruction set is usable only when the OS enables
 * the state it uses. */
#define XCR0_YMM 0x06u
#define XCR0_ZMM 0xE6u

static unsigned os_vector_state(void)
{
    unsigned eax, ebx, ecx, edx;

    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE))
        return 0;

    unsigned low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    (void)high;
    return low;
}
#endif

int eq_cpu_has_avx2_fma(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return (os_vector_state() & XCR0_YMM) == XCR0_YMM && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int eq_cpu_has_avx512(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return (os_vector_state() & XCR0_ZMM) == XCR0_ZMM && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
