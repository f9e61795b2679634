/* Tests for checkpoint save, load, metadata and every kind of bad file. */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "equivar.h"
#include "testutil.h"

/* conv(1 -> conv_channels, 3x3, pad 1), relu, maxpool 2, flatten,
 * dense(conv_channels * 4 * 4 -> 5) for (N, 1, 8, 8) inputs, He-initialised
 * from `seed`; with_tail appends one more relu. */
static eq_layer *small_network(size_t conv_channels, int with_tail, uint64_t seed)
{
    eq_layer *net = NULL, *layer = NULL;
    eq_rng rng;

    assert_int_equal(eq_sequential_create(&net), EQ_OK);
    assert_int_equal(eq_conv2d_create(1, conv_channels, 3, 3, 1, 1, &layer), EQ_OK);
    assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    assert_int_equal(eq_relu_create(&layer), EQ_OK);
    assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    assert_int_equal(eq_maxpool_create(2, 2, &layer), EQ_OK);
    assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    assert_int_equal(eq_flatten_create(&layer), EQ_OK);
    assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    assert_int_equal(eq_dense_create(conv_channels * 16, 5, &layer), EQ_OK);
    assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    if (with_tail) {
        assert_int_equal(eq_relu_create(&layer), EQ_OK);
        assert_int_equal(eq_sequential_append(net, layer), EQ_OK);
    }
    eq_rng_seed(&rng, seed);
    eq_layer_init_he(net, &rng);

    /* He initialisation leaves biases at zero; nonzero biases make the
     * round trip check cover them too. */
    for (size_t p = 0; p < eq_layer_param_count(net); p++) {
        eq_param param;
        eq_layer_param(net, p, &param);
        if (strcmp(param.name, "bias") == 0)
            eq_test_fill_uniform(param.value, param.count, &rng, -0.5f, 0.5f);
    }
    return net;
}

/* All parameter values of net, concatenated into one malloc'ed array. */
static float *snapshot_params(eq_layer *net, size_t *total)
{
    size_t count = 0;
    for (size_t p = 0; p < eq_layer_param_count(net); p++) {
        eq_param param;
        assert_int_equal(eq_layer_param(net, p, &param), EQ_OK);
        count += param.count;
    }

    float *copy = malloc(count * sizeof(float));
    assert_non_null(copy);
    size_t at = 0;
    for (size_t p = 0; p < eq_layer_param_count(net); p++) {
        eq_param param;
        eq_layer_param(net, p, &param);
        memcpy(copy + at, param.value, param.count * sizeof(float));
        at += param.count;
    }
    *total = count;
    return copy;
}

static void assert_params_equal(eq_layer *net, const float *expected, size_t expected_count)
{
    size_t count;
    float *actual = snapshot_params(net, &count);

    assert_int_equal(count, expected_count);
    assert_memory_equal(actual, expected, count * sizeof(float));
    free(actual);
}

/* A per-test file in the build directory, removed by the teardown. */
typedef struct fixture {
    char path[256];
    char tmp_path[260];
} fixture;

static int setup(void **state)
{
    static int counter;
    fixture *f = calloc(1, sizeof *f);

    if (!f)
        return -1;
    snprintf(f->path, sizeof f->path, "test_checkpoint_%ld_%d.ckpt", (long)getpid(), counter++);
    snprintf(f->tmp_path, sizeof f->tmp_path, "%s.tmp", f->path);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    remove(f->path);
    remove(f->tmp_path);
    free(f);
    return 0;
}

static uint8_t *read_bytes(const char *path, size_t *size)
{
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long length = ftell(file);
    assert_true(length > 0);
    rewind(file);

    uint8_t *bytes = malloc((size_t)length);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, (size_t)length, file), (size_t)length);
    fclose(file);
    *size = (size_t)length;
    return bytes;
}

static void write_bytes(const char *path, const uint8_t *bytes, size_t size)
{
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(bytes, 1, size, file), size);
    assert_int_equal(fclose(file), 0);
}

static void forward(eq_layer *net, const eq_tensor *x, eq_tensor *y)
{
    assert_int_equal(eq_layer_forward(net, x, y), EQ_OK);
}

static void checkpoint_round_trip_is_bitwise(void **state)
{
    fixture *f = *state;
    eq_layer *saved = small_network(4, 0, 1);
    eq_layer *loaded = small_network(4, 0, 2);
    eq_tensor *x = NULL, *y_saved = NULL, *y_loaded = NULL;
    eq_rng rng;
    size_t count;

    assert_int_equal(eq_checkpoint_save(saved, "group=c4 epochs=3", f->path), EQ_OK);
    assert_int_equal(access(f->tmp_path, F_OK), -1);
    assert_int_equal(eq_checkpoint_load(loaded, f->path), EQ_OK);

    float *expected = snapshot_params(saved, &count);
    assert_params_equal(loaded, expected, count);

    assert_int_equal(eq_tensor_create(eq_shape_make(3, 1, 8, 8), &x), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(3, 5, 1, 1), &y_saved), EQ_OK);
    assert_int_equal(eq_tensor_create(eq_shape_make(3, 5, 1, 1), &y_loaded), EQ_OK);
    eq_rng_seed(&rng, 3);
    eq_test_fill_uniform(x->data, 3 * 64, &rng, -1.0f, 1.0f);
    forward(saved, x, y_saved);
    forward(loaded, x, y_loaded);
    assert_memory_equal(y_saved->data, y_loaded->data, 15 * sizeof(float));

    free(expected);
    eq_tensor_destroy(x);
    eq_tensor_destroy(y_saved);
    eq_tensor_destroy(y_loaded);
    eq_layer_destroy(saved);
    eq_layer_destroy(loaded);
}

static void checkpoint_metadata_reads_back(void **state)
{
    fixture *f = *state;
    eq_layer *net = small_network(4, 0, 1);
    char *metadata = NULL, *description = NULL, expected[512];

    assert_int_equal(eq_checkpoint_save(net, "group=c4 widths=8,16,64", f->path), EQ_OK);
    assert_int_equal(eq_checkpoint_read_metadata(f->path, &metadata, &description), EQ_OK);
    assert_string_equal(metadata, "group=c4 widths=8,16,64");
    assert_true(eq_layer_describe(net, expected, sizeof expected) < sizeof expected);
    assert_string_equal(description, expected);
    free(metadata);
    free(description);

    /* Either output may be skipped; NULL metadata is saved as "". */
    assert_int_equal(eq_checkpoint_save(net, NULL, f->path), EQ_OK);
    assert_int_equal(eq_checkpoint_read_metadata(f->path, &metadata, NULL), EQ_OK);
    assert_string_equal(metadata, "");
    free(metadata);
    assert_int_equal(eq_checkpoint_read_metadata(f->path, NULL, NULL), EQ_OK);
    eq_layer_destroy(net);
}

static void checkpoint_shape_mismatch_names_both(void **state)
{
    fixture *f = *state;
    eq_layer *saved = small_network(8, 0, 1);
    eq_layer *other = small_network(4, 0, 2);
    size_t count;

    assert_int_equal(eq_checkpoint_save(saved, "", f->path), EQ_OK);
    float *before = snapshot_params(other, &count);
    assert_int_equal(eq_checkpoint_load(other, f->path), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "(8, 1, 3, 3)"));
    assert_non_null(strstr(eq_last_error(), "(4, 1, 3, 3)"));
    assert_non_null(strstr(eq_last_error(), f->path));
    assert_params_equal(other, before, count);

    free(before);
    eq_layer_destroy(saved);
    eq_layer_destroy(other);
}

static void checkpoint_description_mismatch_names_both(void **state)
{
    fixture *f = *state;
    eq_layer *saved = small_network(4, 0, 1);
    eq_layer *other = small_network(4, 1, 2);
    size_t count;

    /* Same parameters, one more relu at the end. */
    assert_int_equal(eq_checkpoint_save(saved, "", f->path), EQ_OK);
    float *before = snapshot_params(other, &count);
    assert_int_equal(eq_checkpoint_load(other, f->path), EQ_ERR_SHAPE);
    assert_non_null(strstr(eq_last_error(), "descriptions differ"));
    assert_non_null(strstr(eq_last_error(), "saved \""));
    assert_non_null(strstr(eq_last_error(), "relu)\""));
    assert_params_equal(other, before, count);

    free(before);
    eq_layer_destroy(saved);
    eq_layer_destroy(other);
}

/* Saves a network, lets `damage` change the file bytes, and checks that
 * loading fails with EQ_ERR_FORMAT, a message containing the file name and
 * `expected_text`, and a network left unchanged. */
static void check_damaged_file(const fixture *f, void (*damage)(uint8_t *bytes, size_t *size),
                               const char *expected_text)
{
    eq_layer *saved = small_network(4, 0, 1);
    eq_layer *target = small_network(4, 0, 2);
    size_t size, count;

    assert_int_equal(eq_checkpoint_save(saved, "meta", f->path), EQ_OK);
    uint8_t *bytes = read_bytes(f->path, &size);
    damage(bytes, &size);
    write_bytes(f->path, bytes, size);

    float *before = snapshot_params(target, &count);
    eq_status status = eq_checkpoint_load(target, f->path);
    if (status != EQ_ERR_FORMAT)
        fail_msg("load returned %s, expected EQ_ERR_FORMAT: %s", eq_status_string(status), eq_last_error());
    assert_non_null(strstr(eq_last_error(), f->path));
    if (!strstr(eq_last_error(), expected_text))
        fail_msg("message \"%s\" does not contain \"%s\"", eq_last_error(), expected_text);
    assert_params_equal(target, before, count);

    char *metadata = (char *)1;
    assert_int_equal(eq_checkpoint_read_metadata(f->path, &metadata, NULL), EQ_ERR_FORMAT);
    assert_null(metadata);

    free(before);
    free(bytes);
    eq_layer_destroy(saved);
    eq_layer_destroy(target);
}

static void cut_last_100_bytes(uint8_t *bytes, size_t *size)
{
    (void)bytes;
    *size -= 100;
}

static void cut_to_10_bytes(uint8_t *bytes, size_t *size)
{
    (void)bytes;
    *size = 10;
}

static void flip_a_float_bit(uint8_t *bytes, size_t *size)
{
    bytes[*size - 50] ^= 0x04;
}

static void break_magic(uint8_t *bytes, size_t *size)
{
    (void)size;
    bytes[0] = 'X';
}

/* Sets version 2 and recomputes the CRC, so that only the version is wrong. */
static void bump_version(uint8_t *bytes, size_t *size)
{
    bytes[8] = 2;
    uint32_t crc = eq_crc32(0, bytes, *size - 4);
    for (int i = 0; i < 4; i++)
        bytes[*size - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
}

static void checkpoint_truncated_is_format_error(void **state)
{
    check_damaged_file(*state, cut_last_100_bytes, "truncated");
}

static void checkpoint_tiny_file_is_format_error(void **state)
{
    check_damaged_file(*state, cut_to_10_bytes, "truncated");
}

static void checkpoint_corrupt_byte_fails_crc(void **state)
{
    check_damaged_file(*state, flip_a_float_bit, "CRC32");
}

static void checkpoint_wrong_magic_is_rejected(void **state)
{
    check_damaged_file(*state, break_magic, "not a libequivar checkpoint");
}

static void checkpoint_wrong_version_is_rejected(void **state)
{
    check_damaged_file(*state, bump_version, "version 2");
}

static void checkpoint_io_errors_name_the_file(void **state)
{
    (void)state;
    eq_layer *net = small_network(4, 0, 1);

    assert_int_equal(eq_checkpoint_load(net, "no_such_dir/none.ckpt"), EQ_ERR_IO);
    assert_non_null(strstr(eq_last_error(), "no_such_dir/none.ckpt"));
    assert_int_equal(eq_checkpoint_save(net, "", "no_such_dir/out.ckpt"), EQ_ERR_IO);
    assert_non_null(strstr(eq_last_error(), "no_such_dir/out.ckpt.tmp"));
    assert_int_equal(eq_checkpoint_read_metadata("no_such_dir/none.ckpt", NULL, NULL), EQ_ERR_IO);

    assert_int_equal(eq_checkpoint_save(NULL, "", "x.ckpt"), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_checkpoint_save(net, "", NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_checkpoint_load(NULL, "x.ckpt"), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_checkpoint_load(net, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_checkpoint_read_metadata(NULL, NULL, NULL), EQ_ERR_INVALID_ARGUMENT);
    eq_layer_destroy(net);
}

static void checkpoint_save_replaces_old_file(void **state)
{
    fixture *f = *state;
    eq_layer *first = small_network(4, 0, 1);
    eq_layer *second = small_network(4, 0, 2);
    eq_layer *target = small_network(4, 0, 3);
    size_t count;

    assert_int_equal(eq_checkpoint_save(first, "first", f->path), EQ_OK);
    assert_int_equal(eq_checkpoint_save(second, "second", f->path), EQ_OK);
    assert_int_equal(eq_checkpoint_load(target, f->path), EQ_OK);
    float *expected = snapshot_params(second, &count);
    assert_params_equal(target, expected, count);

    free(expected);
    eq_layer_destroy(first);
    eq_layer_destroy(second);
    eq_layer_destroy(target);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(checkpoint_round_trip_is_bitwise, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_metadata_reads_back, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_shape_mismatch_names_both, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_description_mismatch_names_both, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_truncated_is_format_error, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_tiny_file_is_format_error, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_corrupt_byte_fails_crc, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_wrong_magic_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_wrong_version_is_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_io_errors_name_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpoint_save_replaces_old_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
