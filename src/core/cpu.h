/* Run-time CPU feature detection for choosing SIMD kernels. */
#ifndef EQ_CORE_CPU_H
#define EQ_CORE_CPU_H

/* Return whether the CPU and the OS support the instruction sets that the
 * AVX2 kernels (AVX2 + FMA) and the AVX-512 kernels (F, BW, DQ, VL + FMA)
 * use. Always 0 on architectures other than x86-64. */
int eq_cpu_has_avx2_fma(void);
int eq_cpu_has_avx512(void);

/* Compiles a function of plain elementwise loops once per vector width, and
 * the loader picks the widest that the CPU has (a GCC ifunc). Elementwise
 * float operations give the same bits at any width, because the build keeps
 * the compiler from contracting them into fused multiply-adds. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define EQ_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EQ_VECTOR_CLONES
#endif

#endif
