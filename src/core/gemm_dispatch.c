/* Run-time choice of the GEMM kernel: the best one the CPU supports, the
 * EQ_GEMM_KERNEL environment variable, or an override for tests. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/error.h"
#include "core/gemm_kernel.h"

static _Atomic(const eq_gemm_kernel *) active_kernel;
static atomic_int forced_tile = -1;
static pthread_once_t kernel_once = PTHREAD_ONCE_INIT;

/* Returns the named kernel if this CPU can run it, else NULL. */
static const eq_gemm_kernel *find_kernel(const char *name)
{
    if (!name)
        return NULL;
    if (strcmp(name, "generic") == 0)
        return &eq_gemm_kernel_generic;
#if defined(__x86_64__)
    if (strcmp(name, "avx2") == 0)
        return eq_cpu_has_avx2_fma() ? &eq_gemm_kernel_avx2 : NULL;
    if (strcmp(name, "avx512") == 0)
        return eq_cpu_has_avx512() ? &eq_gemm_kernel_avx512 : NULL;
#endif
    return NULL;
}

/* The best supported kernel, unless EQ_GEMM_KERNEL names another supported
 * one. An unknown or unsupported value is ignored: a silent library must not
 * fail or print over an environment variable. */
static const eq_gemm_kernel *automatic_kernel(void)
{
    const eq_gemm_kernel *requested = find_kernel(getenv("EQ_GEMM_KERNEL"));

    if (requested)
        return requested;
#if defined(__x86_64__)
    if (eq_cpu_has_avx512())
        return &eq_gemm_kernel_avx512;
    if (eq_cpu_has_avx2_fma())
        return &eq_gemm_kernel_avx2;
#endif
    return &eq_gemm_kernel_generic;
}

static void init_kernel(void)
{
    atomic_store(&active_kernel, automatic_kernel());
}

const eq_gemm_kernel *eq_gemm_current_kernel(void)
{
    pthread_once(&kernel_once, init_kernel);
    return atomic_load_explicit(&active_kernel, memory_order_relaxed);
}

eq_status eq_gemm_force_kernel(const char *name)
{
    pthread_once(&kernel_once, init_kernel);
    if (!name) {
        atomic_store(&active_kernel, automatic_kernel());
        return EQ_OK;
    }

    const eq_gemm_kernel *kernel = find_kernel(name);
    if (!kernel)
        return eq_error(EQ_ERR_INVALID_ARGUMENT,
                        "GEMM kernel \"%s\" is unknown or not supported by this CPU: "
                        "expected generic, avx2 or avx512",
                        name);
    atomic_store(&active_kernel, kernel);
    return EQ_OK;
}

int eq_gemm_kernel_available(const char *name)
{
    return find_kernel(name) != NULL;
}

const char *eq_gemm_kernel_name(void)
{
    return eq_gemm_current_kernel()->name;
}

void eq_gemm_force_tile(int index)
{
    atomic_store(&forced_tile, index);
}

const eq_gemm_tile *eq_gemm_forced_tile(const eq_gemm_kernel *kernel)
{
    int index = atomic_load_explicit(&forced_tile, memory_order_relaxed);

    if (index < 0 || (size_t)index >= kernel->tile_count)
        return NULL;
    return &kernel->tiles[index];
}
