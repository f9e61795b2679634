/* The thread pool: persistent POSIX workers that run eq_parallel_for loops,
 * and the public eq_set_num_threads / eq_get_num_threads. */
#define _POSIX_C_SOURCE 200809L

#include "core/parallel.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "equivar/threads.h"

/* How long an idle worker, and a caller waiting for workers, poll before
 * they block on a condition variable. Back-to-back kernels (one GEMM per
 * image) then start without a futex wake-up, but an idle pool gives the
 * cores back to other processes after this long. */
#define EQ_SPIN_NANOSECONDS 50000L

/* One parallel loop. It lives on the caller's stack, so the caller returns
 * only after every worker that took a reference has dropped it. */
typedef struct eq_job {
    eq_parallel_fn fn;
    void *ctx;
    size_t count;
    size_t chunk;
    size_t max_helpers; /* workers allowed to join, guarded by pool.mutex */
    size_t helpers;     /* workers that joined, guarded by pool.mutex */
    atomic_size_t next; /* first item not yet handed out */
    atomic_size_t refs; /* workers inside the job */
} eq_job;

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* workers: a job was published, or shutdown */
    pthread_cond_t done; /* caller: the last worker left the job */

    pthread_t *workers;
    size_t worker_count;     /* running workers, thread_count - 1 when started */
    atomic_int thread_count; /* requested threads, the caller included */
    int started;             /* creation of the workers for thread_count was attempted */
    int sleeping;            /* workers blocked on `wake` */
    int caller_waiting;      /* the caller is blocked on `done` */
    int shutdown;

    eq_job *job;             /* the published job or NULL, guarded by mutex */
    atomic_ulong generation; /* bumped on every publish, polled by spinners */
    atomic_flag busy;        /* one parallel loop at a time uses the workers */
} pool = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .thread_count = 1,
    .busy = ATOMIC_FLAG_INIT,
};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* Set in workers for their lifetime and in a caller during its loop, so a
 * nested eq_parallel_for runs inline instead of waiting on itself. */
static _Thread_local int inside_pool;

int eq_parse_num_threads(const char *text, int *count)
{
    if (!text)
        return 0;

    while (*text == ' ' || *text == '\t')
        text++;
    if (*text < '0' || *text > '9')
        return 0;

    long value = 0;
    while (*text >= '0' && *text <= '9') {
        value = value * 10 + (*text - '0');
        if (value > EQ_MAX_THREADS)
            return 0;
        text++;
    }
    while (*text == ' ' || *text == '\t')
        text++;
    if (*text != '\0' || value < 1)
        return 0;

    *count = (int)value;
    return 1;
}

static int online_cpus(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (cpus < 1)
        return 1;
    return cpus > EQ_MAX_THREADS ? EQ_MAX_THREADS : (int)cpus;
}

/* Resets the pool in the child of a fork, which has only the forking thread. */
static void reset_after_fork(void)
{
    pthread_mutex_init(&pool.mutex, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    free(pool.workers);
    pool.workers = NULL;
    pool.worker_count = 0;
    pool.started = 0;
    pool.sleeping = 0;
    pool.caller_waiting = 0;
    pool.shutdown = 0;
    pool.job = NULL;
    atomic_flag_clear(&pool.busy);
}

int eq_default_num_threads(const char *text)
{
    int count;

    /* An invalid EQ_NUM_THREADS is ignored rather than fatal: the library
     * must not abort its host program over an environment variable. */
    if (eq_parse_num_threads(text, &count))
        return count;
    return online_cpus();
}

static void init_pool(void)
{
    atomic_store(&pool.thread_count, eq_default_num_threads(getenv("EQ_NUM_THREADS")));
    pthread_atfork(NULL, NULL, reset_after_fork);
}

static long long monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls until generation differs from `seen` or the spin time runs out;
 * returns whether it changed. */
static int spin_for_generation(unsigned long seen)
{
    long long deadline = monotonic_ns() + EQ_SPIN_NANOSECONDS;

    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&pool.generation, memory_order_acquire) != seen)
                return 1;
            cpu_relax();
        }
        if (monotonic_ns() > deadline)
            return 0;
    }
}

static void run_chunks(eq_job *job)
{
    for (;;) {
        size_t begin = atomic_fetch_add_explicit(&job->next, job->chunk, memory_order_relaxed);
        if (begin >= job->count)
            return;
        size_t end = job->count - begin < job->chunk ? job->count : begin + job->chunk;
        job->fn(job->ctx, begin, end);
    }
}

static void *worker_main(void *arg)
{
    unsigned long seen = 0;

    (void)arg;
    inside_pool = 1;
    for (;;) {
        spin_for_generation(seen);

        pthread_mutex_lock(&pool.mutex);
        while (!pool.shutdown && atomic_load(&pool.generation) == seen) {
            pool.sleeping++;
            pthread_cond_wait(&pool.wake, &pool.mutex);
            pool.sleeping--;
        }
        if (pool.shutdown) {
            pthread_mutex_unlock(&pool.mutex);
            return NULL;
        }
        seen = atomic_load(&pool.generation);

        /* A job that finished before this worker woke is gone (NULL); a job
         * that has enough helpers does not need this one. */
        eq_job *job = pool.job;
        if (job && job->helpers < job->max_helpers) {
            job->helpers++;
            atomic_fetch_add(&job->refs, 1);
        } else {
            job = NULL;
        }
        pthread_mutex_unlock(&pool.mutex);
        if (!job)
            continue;

        run_chunks(job);

        pthread_mutex_lock(&pool.mutex);
        if (atomic_fetch_sub(&job->refs, 1) == 1 && pool.caller_waiting)
            pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mutex);
    }
}

static void stop_workers(void)
{
    pthread_mutex_lock(&pool.mutex);
    pool.shutdown = 1;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);

    for (size_t i = 0; i < pool.worker_count; i++)
        pthread_join(pool.workers[i], NULL);

    free(pool.workers);
    pool.workers = NULL;
    pool.worker_count = 0;
    pool.shutdown = 0;
    pool.started = 0;
}

/* Creates thread_count - 1 workers. Returns EQ_OK, or an error after which
 * the workers that did start are kept, so the pool still works. */
static eq_status start_workers(void)
{
    size_t needed = (size_t)atomic_load(&pool.thread_count) - 1;

    pool.started = 1;
    if (needed == 0)
        return EQ_OK;

    pool.workers = calloc(needed, sizeof *pool.workers);
    if (!pool.workers)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate %zu thread handles", needed);

    /* Workers block every signal so that handlers run on the program's own
     * threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);

    int rc = 0;
    while (pool.worker_count < needed) {
        rc = pthread_create(&pool.workers[pool.worker_count], NULL, worker_main, NULL);
        if (rc != 0)
            break;
        pool.worker_count++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc != 0)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "pthread_create failed after %zu of %zu workers: %s",
                        pool.worker_count, needed, strerror(rc));
    return EQ_OK;
}

eq_status eq_set_num_threads(int count)
{
    if (count < 1 || count > EQ_MAX_THREADS)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "invalid thread count %d: expected 1 to %d", count,
                        EQ_MAX_THREADS);

    if (inside_pool)
        return eq_error(EQ_ERR_STATE,
                        "eq_set_num_threads(%d) called from inside a parallel "
                        "kernel: call it between kernels",
                        count);

    /* Holding `busy` keeps loops on other threads off the workers (they run
     * inline meanwhile) while the pool is rebuilt. */
    pthread_once(&pool_once, init_pool);
    while (atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire))
        sched_yield();

    eq_status status = EQ_OK;
    if (!pool.started || atomic_load(&pool.thread_count) != count) {
        if (pool.started)
            stop_workers();
        atomic_store(&pool.thread_count, count);
        status = start_workers();
    }
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
    return status;
}

int eq_get_num_threads(void)
{
    pthread_once(&pool_once, init_pool);
    return atomic_load(&pool.thread_count);
}

/* Waits until no worker is inside `job`; the caller has finished its own
 * chunks, so then every item is done. */
static void wait_for_helpers(eq_job *job)
{
    long long deadline = monotonic_ns() + EQ_SPIN_NANOSECONDS;

    while (atomic_load_explicit(&job->refs, memory_order_acquire) != 0) {
        cpu_relax();
        if (monotonic_ns() > deadline)
            break;
    }

    pthread_mutex_lock(&pool.mutex);
    while (atomic_load(&job->refs) != 0) {
        pool.caller_waiting = 1;
        pthread_cond_wait(&pool.done, &pool.mutex);
    }
    pool.caller_waiting = 0;
    pthread_mutex_unlock(&pool.mutex);
}

void eq_parallel_for(size_t count, size_t grain, eq_parallel_fn fn, void *ctx)
{
    if (count == 0)
        return;
    if (grain == 0)
        grain = 1;

    pthread_once(&pool_once, init_pool);
    if (inside_pool || count <= grain || atomic_load(&pool.thread_count) == 1 ||
        atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        fn(ctx, 0, count);
        return;
    }

    if (!pool.started)
        start_workers(); /* on failure, fewer or no workers join */

    size_t worth_waking = (count - 1) / grain; /* helpers beyond the caller */
    size_t helpers = worth_waking < pool.worker_count ? worth_waking : pool.worker_count;
    if (helpers == 0) {
        atomic_flag_clear_explicit(&pool.busy, memory_order_release);
        fn(ctx, 0, count);
        return;
    }

    /* About four chunks per thread balance load without much contention. */
    eq_job job = { .fn = fn, .ctx = ctx, .count = count, .max_helpers = helpers };
    job.chunk = count / ((helpers + 1) * 4);
    if (job.chunk < grain)
        job.chunk = grain;
    atomic_init(&job.next, 0);
    atomic_init(&job.refs, 0);

    pthread_mutex_lock(&pool.mutex);
    pool.job = &job;
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    if (pool.sleeping > 0)
        pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);

    inside_pool = 1;
    run_chunks(&job);
    inside_pool = 0;

    /* After this no worker can join, so refs only goes down. */
    pthread_mutex_lock(&pool.mutex);
    pool.job = NULL;
    pthread_mutex_unlock(&pool.mutex);
    wait_for_helpers(&job);

    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}
