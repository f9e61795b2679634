/* Tests for D4 and user-defined groups: axioms, actions and validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "equivar.h"
#include "equivar/equivarify.h"
#include "equivar/group.h"

/* The Klein four-group {e, mirror left-right, mirror up-down, half turn}:
 * composing any two distinct non-identity elements gives the third, so the
 * table is a XOR b. */
static const size_t klein_table[16] = {
    0, 1, 2, 3,
    1, 0, 3, 2,
    2, 3, 0, 1,
    3, 2, 1, 0,
};
static const char *const klein_names[4] = { "e", "mirror_lr", "mirror_ud", "half_turn" };

/* Source pixel of (i, j) under Klein element `element` on size x size images. */
static size_t klein_source(size_t element, size_t size, size_t i, size_t j)
{
    if (element & 1)
        j = size - 1 - j;
    if (element & 2)
        i = size - 1 - i;
    return i * size + j;
}

static eq_status klein_callback(void *user, size_t element, size_t size, size_t *src)
{
    int *calls = user;

    (*calls)++;
    if (size > 64)
        return EQ_ERR_SHAPE;
    for (size_t i = 0; i < size; i++)
        for (size_t j = 0; j < size; j++)
            src[i * size + j] = klein_source(element, size, i, j);
    return EQ_OK;
}

static void klein_maps(size_t size, size_t *maps)
{
    for (size_t a = 0; a < 4; a++)
        for (size_t i = 0; i < size; i++)
            for (size_t j = 0; j < size; j++)
                maps[a * size * size + i * size + j] = klein_source(a, size, i, j);
}

static void d4_hand_computed_3x3(void **state)
{
    (void)state;
    eq_group *d4;
    eq_tensor *x, *y;
    const float mirrored[9] = { 2, 1, 0, 5, 4, 3, 8, 7, 6 };   /* numpy.fliplr */
    const float transposed[9] = { 0, 3, 6, 1, 4, 7, 2, 5, 8 }; /* numpy.rot90(numpy.fliplr(x)) */

    assert_int_equal(eq_group_d4(&d4), EQ_OK);
    assert_int_equal(eq_group_order(d4), 8);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 3, 3), &x), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 3, 3), &y), EQ_OK);
    for (int p = 0; p < 9; p++)
        x->data[p] = (float)p;

    assert_int_equal(eq_group_act_pixels(d4, 4, x, y), EQ_OK);
    assert_memory_equal(y->data, mirrored, sizeof mirrored);
    assert_int_equal(eq_group_act_pixels(d4, 5, x, y), EQ_OK);
    assert_memory_equal(y->data, transposed, sizeof transposed);

    assert_string_equal(eq_group_element_name(d4, 4), "s");
    assert_string_equal(eq_group_element_name(d4, 5), "r1 s");
    assert_string_equal(eq_group_element_name(d4, 7), "r3 s");
    /* D4 is not abelian: r1 s != s r1 = r3 s. */
    assert_int_equal(eq_group_mul(d4, 1, 4), 5);
    assert_int_equal(eq_group_mul(d4, 4, 1), 7);

    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_group_destroy(d4);
}

static void builtin_groups_validate(void **state)
{
    (void)state;
    const char *names[] = { "trivial", "none", "c4", "d4" };

    for (size_t i = 0; i < 4; i++) {
        eq_group *group;
        assert_int_equal(eq_group_by_name(names[i], &group), EQ_OK);
        for (size_t size = 0; size <= 7; size++)
            assert_int_equal(eq_group_validate(group, size, 100 + size), EQ_OK);
        eq_group_destroy(group);
    }

    eq_group *group = NULL;
    assert_int_equal(eq_group_by_name("c5", &group), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "unknown group 'c5'"));
    assert_null(group);
}

static void klein_group_from_table(void **state)
{
    (void)state;
    size_t maps[4 * 25];
    eq_group *klein;
    eq_tensor *x, *y;

    klein_maps(5, maps);
    eq_group_spec spec = { .name = "klein", .order = 4, .table = klein_table, .element_names = klein_names,
                           .pixel_size = 5, .pixel_permutations = maps };
    assert_int_equal(eq_group_create(&spec, &klein), EQ_OK);
    assert_int_equal(eq_group_validate(klein, 5, 1), EQ_OK);
    assert_int_equal(eq_group_inv(klein, 3), 3);
    assert_string_equal(eq_group_element_name(klein, 3), "half_turn");

    /* The half turn equals C4's r2 on pixels. */
    eq_group *c4;
    assert_int_equal(eq_group_c4(&c4), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 2, 5, 5), &x), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 2, 5, 5), &y), EQ_OK);
    eq_tensor *z;
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 2, 5, 5), &z), EQ_OK);
    for (int p = 0; p < 50; p++)
        x->data[p] = (float)p;
    assert_int_equal(eq_group_act_pixels(klein, 3, x, y), EQ_OK);
    assert_int_equal(eq_group_act_pixels(c4, 2, x, z), EQ_OK);
    assert_memory_equal(y->data, z->data, 50 * sizeof(float));

    /* The table only defines 5x5 images. */
    eq_tensor *other;
    assert_int_equal(eq_tensor_create(eq_shape_make(1, 1, 4, 4), &other), EQ_OK);
    assert_int_equal(eq_group_act_pixels(klein, 1, other, other), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "5x5"));

    eq_tensor_destroy(x);
    eq_tensor_destroy(y);
    eq_tensor_destroy(z);
    eq_tensor_destroy(other);
    eq_group_destroy(c4);
    eq_group_destroy(klein);
}

static void klein_group_from_callback(void **state)
{
    (void)state;
    int calls = 0;
    eq_group *klein;

    eq_group_spec spec = { .name = "klein", .order = 4, .table = klein_table, .pixel_action = klein_callback,
                           .user = &calls };
    assert_int_equal(eq_group_create(&spec, &klein), EQ_OK);
    assert_true(calls > 0);
    assert_string_equal(eq_group_element_name(klein, 2), "g2");
    for (size_t size = 1; size <= 8; size++)
        assert_int_equal(eq_group_validate(klein, size, size), EQ_OK);

    /* A size the callback rejects is reported with the callback's status. */
    assert_int_equal(eq_group_validate(klein, 65, 1), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "callback failed for element 0 on 65x65"));
    eq_group_destroy(klein);
}

static void broken_tables_rejected(void **state)
{
    (void)state;
    eq_group *group = (eq_group *)1;
    static const size_t not_closed[4] = { 0, 1, 1, 2 };
    static const size_t no_identity[4] = { 1, 0, 0, 1 };
    static const size_t not_associative[9] = { 0, 1, 2, 1, 2, 0, 2, 1, 0 };
    static const size_t no_inverse[4] = { 0, 1, 1, 1 };
    struct {
        const size_t *table;
        size_t order;
        const char *message;
    } cases[] = {
        { not_closed, 2, "1 * 1 = 2 is outside 0..1" },
        { no_identity, 2, "element 0 is not the identity" },
        { not_associative, 3, "(1 * 1) * 1 = 1 but 1 * (1 * 1) = 0" },
        { no_inverse, 2, "element 1 has no inverse" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eq_group_spec spec = { .name = "broken", .order = cases[i].order, .table = cases[i].table };
        assert_int_equal(eq_group_create(&spec, &group), EQ_ERR_GROUP);
        assert_null(group);
        if (!strstr(eq_last_error(), cases[i].message))
            fail_msg("case %zu: message '%s' lacks '%s'", i, eq_last_error(), cases[i].message);
    }

    eq_group_spec missing = { .name = "broken", .order = 2, .table = NULL };
    assert_int_equal(eq_group_create(&missing, &group), EQ_ERR_INVALID_ARGUMENT);
    eq_group_spec too_big = { .name = "broken", .order = 65, .table = no_inverse };
    assert_int_equal(eq_group_create(&too_big, &group), EQ_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(eq_last_error(), "order 65"));
}

static void bad_pixel_actions_rejected(void **state)
{
    (void)state;
    size_t maps[4 * 16];
    eq_group *group = NULL;
    eq_group_spec spec = { .name = "klein", .order = 4, .table = klein_table, .element_names = klein_names,
                           .pixel_size = 4, .pixel_permutations = maps };

    /* A quarter turn in place of mirror_ud is a permutation, but composing it
     * twice gives the half turn, not the identity the table demands. */
    klein_maps(4, maps);
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++)
            maps[2 * 16 + i * 4 + j] = j * 4 + (3 - i); /* element 2 as a quarter turn */
    assert_int_equal(eq_group_create(&spec, &group), EQ_ERR_GROUP);
    assert_null(group);
    assert_non_null(strstr(eq_last_error(), "not a homomorphism"));
    assert_non_null(strstr(eq_last_error(), "mirror_ud"));

    klein_maps(4, maps);
    maps[1 * 16 + 0] = maps[1 * 16 + 1]; /* element 1 uses one source pixel twice */
    assert_int_equal(eq_group_create(&spec, &group), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "not a permutation"));
    assert_non_null(strstr(eq_last_error(), "mirror_lr"));

    klein_maps(4, maps);
    maps[3 * 16 + 5] = 16;
    assert_int_equal(eq_group_create(&spec, &group), EQ_ERR_GROUP);
    assert_non_null(strstr(eq_last_error(), "outside the 4x4 image"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(d4_hand_computed_3x3),
        cmocka_unit_test(builtin_groups_validate),
        cmocka_unit_test(klein_group_from_table),
        cmocka_unit_test(klein_group_from_callback),
        cmocka_unit_test(broken_tables_rejected),
        cmocka_unit_test(bad_pixel_actions_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
