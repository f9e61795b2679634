/* Run-time CPU feature detection for choosing SIMD kernels. */
#ifndef EQ_CORE_CPU_H
#define EQ_CORE_CPU_H

/* Return whether the CPU and the OS support the instruction sets that the
 * AVX2 kernels (AVX2 + FMA) and the AVX-512 kernels (F, BW, DQ, VL + FMA)
 * use. Always 0 on architectures other than x86-64. */
int eq_cpu_has_avx2_fma(void);
int eq_cpu_has_avx512(void);

#endif
