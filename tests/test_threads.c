/* Tests for the thread pool: eq_parallel_for coverage, nesting, concurrent
 * callers, eq_set_num_threads validation and EQ_NUM_THREADS parsing. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/parallel.h"
#include "equivar.h"

/* Visit counts per item; every item must be visited exactly once. */
typedef struct coverage {
    atomic_int *visits;
    size_t count;
    atomic_int bad_ranges; /* calls with begin >= end or end > count */
} coverage;

static void count_visits(void *ctx, size_t begin, size_t end)
{
    coverage *cov = ctx;

    if (begin >= end || end > cov->count) {
        atomic_fetch_add(&cov->bad_ranges, 1);
        return;
    }
    for (size_t i = begin; i < end; i++)
        atomic_fetch_add(&cov->visits[i], 1);
}

/* Runs eq_parallel_for over `count` items and checks each was visited once. */
static void check_coverage(size_t count, size_t grain)
{
    coverage cov = { .count = count };

    cov.visits = calloc(count ? count : 1, sizeof *cov.visits);
    assert_non_null(cov.visits);
    atomic_init(&cov.bad_ranges, 0);

    eq_parallel_for(count, grain, count_visits, &cov);

    assert_int_equal(atomic_load(&cov.bad_ranges), 0);
    for (size_t i = 0; i < count; i++)
        assert_int_equal(atomic_load(&cov.visits[i]), 1);
    free(cov.visits);
}

/* Runs first in the process, before anything reads the default: the group
 * setup set EQ_NUM_THREADS=3. */
static void default_from_environment(void **state)
{
    (void)state;

    assert_int_equal(eq_get_num_threads(), 3);
    check_coverage(1000, 1);
}

static void parallel_for_covers_each_item_once(void **state)
{
    (void)state;
    static const size_t counts[] = { 0, 1, 2, 3, 5, 7, 16, 63, 64, 65, 1000, 100003 };
    static const size_t grains[] = { 0, 1, 3, 1000 };
    static const int threads[] = { 1, 2, 3, 4, 8 };

    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        assert_int_equal(eq_set_num_threads(threads[t]), EQ_OK);
        assert_int_equal(eq_get_num_threads(), threads[t]);
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++)
                check_coverage(counts[c], grains[g]);
    }
}

typedef struct caller_check {
    pthread_t caller;
    atomic_int calls;
    atomic_int foreign; /* calls that ran on another thread */
    size_t begin, end;  /* range of the last call */
} caller_check;

static void record_caller(void *ctx, size_t begin, size_t end)
{
    caller_check *check = ctx;

    atomic_fetch_add(&check->calls, 1);
    if (!pthread_equal(pthread_self(), check->caller))
        atomic_fetch_add(&check->foreign, 1);
    check->begin = begin;
    check->end = end;
}

static void parallel_for_small_count_runs_inline(void **state)
{
    (void)state;
    caller_check check = { .caller = pthread_self() };

    atomic_init(&check.calls, 0);
    atomic_init(&check.foreign, 0);
    assert_int_equal(eq_set_num_threads(4), EQ_OK);

    eq_parallel_for(50, 50, record_caller, &check);

    assert_int_equal(atomic_load(&check.calls), 1);
    assert_int_equal(atomic_load(&check.foreign), 0);
    assert_int_equal(check.begin, 0);
    assert_int_equal(check.end, 50);
}

/* Items that sleep, so the calling thread cannot finish them all before a
 * worker wakes, even on a loaded machine. */
typedef struct thread_record {
    pthread_mutex_t mutex;
    pthread_t seen[8];
    int seen_count;
} thread_record;

static void sleep_and_record(void *ctx, size_t begin, size_t end)
{
    thread_record *record = ctx;
    struct timespec pause = { 0, 1000000 }; /* 1 ms per item */

    for (size_t i = begin; i < end; i++)
        nanosleep(&pause, NULL);

    pthread_mutex_lock(&record->mutex);
    int known = 0;
    for (int i = 0; i < record->seen_count; i++)
        known |= pthread_equal(record->seen[i], pthread_self());
    if (!known && record->seen_count < 8)
        record->seen[record->seen_count++] = pthread_self();
    pthread_mutex_unlock(&record->mutex);
}

static void parallel_for_uses_workers(void **state)
{
    (void)state;
    thread_record record = { .mutex = PTHREAD_MUTEX_INITIALIZER };

    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    eq_parallel_for(64, 1, sleep_and_record, &record);

    assert_int_equal(record.seen_count, 2);
}

/* Outer items each run an inner parallel loop over their own row. */
typedef struct nested_ctx {
    coverage rows[16];
} nested_ctx;

static void inner_row(void *ctx, size_t begin, size_t end)
{
    nested_ctx *nested = ctx;

    for (size_t r = begin; r < end; r++)
        eq_parallel_for(nested->rows[r].count, 1, count_visits, &nested->rows[r]);
}

static void parallel_for_nested_runs_inline(void **state)
{
    (void)state;
    nested_ctx nested;

    assert_int_equal(eq_set_num_threads(3), EQ_OK);
    for (size_t r = 0; r < 16; r++) {
        nested.rows[r].count = 100 + r;
        nested.rows[r].visits = calloc(nested.rows[r].count, sizeof(atomic_int));
        assert_non_null(nested.rows[r].visits);
        atomic_init(&nested.rows[r].bad_ranges, 0);
    }

    eq_parallel_for(16, 1, inner_row, &nested);

    for (size_t r = 0; r < 16; r++) {
        assert_int_equal(atomic_load(&nested.rows[r].bad_ranges), 0);
        for (size_t i = 0; i < nested.rows[r].count; i++)
            assert_int_equal(atomic_load(&nested.rows[r].visits[i]), 1);
        free(nested.rows[r].visits);
    }
}

typedef struct concurrent_ctx {
    coverage cov;
    int rounds;
} concurrent_ctx;

static void *run_rounds(void *arg)
{
    concurrent_ctx *ctx = arg;

    for (int round = 0; round < ctx->rounds; round++)
        eq_parallel_for(ctx->cov.count, 1, count_visits, &ctx->cov);
    return NULL;
}

static void parallel_for_concurrent_callers(void **state)
{
    (void)state;
    concurrent_ctx ctx[3];
    pthread_t callers[3];

    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    for (int i = 0; i < 3; i++) {
        ctx[i].cov.count = 5000;
        ctx[i].cov.visits = calloc(ctx[i].cov.count, sizeof(atomic_int));
        assert_non_null(ctx[i].cov.visits);
        atomic_init(&ctx[i].cov.bad_ranges, 0);
        ctx[i].rounds = 200;
    }

    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&callers[i], NULL, run_rounds, &ctx[i]), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(callers[i], NULL), 0);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&ctx[i].cov.bad_ranges), 0);
        for (size_t j = 0; j < ctx[i].cov.count; j++)
            assert_int_equal(atomic_load(&ctx[i].cov.visits[j]), ctx[i].rounds);
        free(ctx[i].cov.visits);
    }
}

static void parallel_for_many_back_to_back(void **state)
{
    (void)state;

    /* Exercises the hand-over between spinning and sleeping workers. */
    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(eq_set_num_threads(threads), EQ_OK);
        for (int round = 0; round < 2000; round++)
            check_coverage(8 + (size_t)(round % 5), 1);
    }
}

static void resize_from_inside(void *ctx, size_t begin, size_t end)
{
    atomic_int *errors = ctx;

    for (size_t i = begin; i < end; i++)
        if (eq_set_num_threads(1) == EQ_ERR_STATE && strstr(eq_last_error(), "inside a parallel"))
            atomic_fetch_add(errors, 1);
}

static void set_num_threads_rejected_inside_loop(void **state)
{
    (void)state;
    atomic_int errors;

    atomic_init(&errors, 0);
    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    eq_parallel_for(10, 1, resize_from_inside, &errors);

    assert_int_equal(atomic_load(&errors), 10);
    assert_int_equal(eq_get_num_threads(), 2);
}

static void set_num_threads_during_loops(void **state)
{
    (void)state;
    concurrent_ctx ctx = { .rounds = 300 };
    pthread_t caller;

    ctx.cov.count = 2000;
    ctx.cov.visits = calloc(ctx.cov.count, sizeof(atomic_int));
    assert_non_null(ctx.cov.visits);
    atomic_init(&ctx.cov.bad_ranges, 0);

    assert_int_equal(pthread_create(&caller, NULL, run_rounds, &ctx), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(eq_set_num_threads(1 + i % 3), EQ_OK);
    assert_int_equal(pthread_join(caller, NULL), 0);

    assert_int_equal(atomic_load(&ctx.cov.bad_ranges), 0);
    for (size_t j = 0; j < ctx.cov.count; j++)
        assert_int_equal(atomic_load(&ctx.cov.visits[j]), ctx.rounds);
    free(ctx.cov.visits);
}

static void set_num_threads_rejects_bad_counts(void **state)
{
    (void)state;
    static const int bad[] = { 0, -1, -100, EQ_MAX_THREADS + 1, 100000 };

    assert_int_equal(eq_set_num_threads(2), EQ_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char value[32];
        snprintf(value, sizeof value, "%d", bad[i]);

        assert_int_equal(eq_set_num_threads(bad[i]), EQ_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(eq_last_error(), value));
        assert_non_null(strstr(eq_last_error(), "expected 1 to 256"));
        assert_int_equal(eq_get_num_threads(), 2);
    }
}

static void set_num_threads_accepts_limits(void **state)
{
    (void)state;

    assert_int_equal(eq_set_num_threads(1), EQ_OK);
    assert_int_equal(eq_get_num_threads(), 1);
    check_coverage(777, 1);

    assert_int_equal(eq_set_num_threads(EQ_MAX_THREADS), EQ_OK);
    assert_int_equal(eq_get_num_threads(), EQ_MAX_THREADS);
    check_coverage(777, 1);

    assert_int_equal(eq_set_num_threads(2), EQ_OK);
}

static void parse_num_threads_valid(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int expected;
    } cases[] = {
        { "1", 1 },  { "4", 4 },       { "256", 256 }, { " 8", 8 },
        { "8 ", 8 }, { "\t12\t", 12 }, { "007", 7 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int count = -1;
        assert_int_equal(eq_parse_num_threads(cases[i].text, &count), 1);
        assert_int_equal(count, cases[i].expected);
    }
}

static void parse_num_threads_invalid(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",     " ",  "0",  "00",  "-2",  "+3",  "257",
        "1000", "4x", "x4", "1e3", "3 4", "2.5", "99999999999999999999999",
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int count = -1;
        assert_int_equal(eq_parse_num_threads(cases[i], &count), 0);
        assert_int_equal(count, -1);
    }

    int count = -1;
    assert_int_equal(eq_parse_num_threads(NULL, &count), 0);
    assert_int_equal(count, -1);
}

static void default_num_threads_falls_back(void **state)
{
    (void)state;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int online = (int)cpus;
    if (cpus < 1)
        online = 1;
    if (cpus > EQ_MAX_THREADS)
        online = EQ_MAX_THREADS;

    assert_int_equal(eq_default_num_threads("5"), 5);
    assert_int_equal(eq_default_num_threads(NULL), online);
    assert_int_equal(eq_default_num_threads(""), online);
    assert_int_equal(eq_default_num_threads("0"), online);
    assert_int_equal(eq_default_num_threads("lots"), online);
    assert_int_equal(eq_default_num_threads("100000"), online);
}

static int set_environment(void **state)
{
    (void)state;
    return setenv("EQ_NUM_THREADS", "3", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_from_environment),
        cmocka_unit_test(parallel_for_covers_each_item_once),
        cmocka_unit_test(parallel_for_small_count_runs_inline),
        cmocka_unit_test(parallel_for_uses_workers),
        cmocka_unit_test(parallel_for_nested_runs_inline),
        cmocka_unit_test(parallel_for_concurrent_callers),
        cmocka_unit_test(parallel_for_many_back_to_back),
        cmocka_unit_test(set_num_threads_rejected_inside_loop),
        cmocka_unit_test(set_num_threads_during_loops),
        cmocka_unit_test(set_num_threads_rejects_bad_counts),
        cmocka_unit_test(set_num_threads_accepts_limits),
        cmocka_unit_test(parse_num_threads_valid),
        cmocka_unit_test(parse_num_threads_invalid),
        cmocka_unit_test(default_num_threads_falls_back),
    };

    return cmocka_run_group_tests(tests, set_environment, NULL);
}
