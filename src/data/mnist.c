/* MNIST: an image IDX file and a label IDX file loaded as floats and int32 labels. */
#include "equivar/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define MNIST_IMAGES_MAGIC 0x00000803u
#define MNIST_LABELS_MAGIC 0x00000801u
#define MNIST_CLASSES 10

static eq_status read_with_magic(const char *path, uint32_t magic, const char *description, eq_idx **out)
{
    eq_status status = eq_idx_read(path, out);
    if (status != EQ_OK)
        return status;
    if ((*out)->magic != magic) {
        uint32_t found = (*out)->magic;
        eq_idx_destroy(*out);
        *out = NULL;
        return eq_error(EQ_ERR_FORMAT, "%s: IDX magic number 0x%08x, expected 0x%08x (%s)",
                        path, found, magic, description);
    }
    return EQ_OK;
}

eq_status eq_mnist_load(const char *images_path, const char *labels_path, eq_mnist **out)
{
    if (out)
        *out = NULL;
    if (!images_path || !labels_path || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_mnist_load: images_path, labels_path or out is NULL");

    eq_idx *images = NULL, *labels = NULL;
    eq_mnist *mnist = NULL;
    eq_status status = read_with_magic(images_path, MNIST_IMAGES_MAGIC, "images of rank 3", &images);
    if (status == EQ_OK)
        status = read_with_magic(labels_path, MNIST_LABELS_MAGIC, "labels of rank 1", &labels);
    if (status != EQ_OK)
        goto done;

    size_t count = images->dims[0];
    if (labels->dims[0] != count) {
        status = eq_error(EQ_ERR_FORMAT, "%s has %zu images but %s has %zu labels, expected equal counts",
                          images_path, count, labels_path, labels->dims[0]);
        goto done;
    }
    for (size_t i = 0; i < count; i++) {
        if (labels->data[i] >= MNIST_CLASSES) {
            status = eq_error(EQ_ERR_FORMAT, "%s: label %u at index %zu, expected 0 to 9",
                              labels_path, labels->data[i], i);
            goto done;
        }
    }

    mnist = calloc(1, sizeof *mnist);
    if (!mnist) {
        status = eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate the MNIST descriptor");
        goto done;
    }
    mnist->count = count;
    mnist->rows = images->dims[1];
    mnist->cols = images->dims[2];
    /* images->size is count * rows * cols, checked for overflow by eq_idx_read. */
    mnist->images = eq_alloc_floats(images->size);
    size_t label_bytes = 0;
    if (eq_size_mul(count, sizeof *mnist->labels, &label_bytes))
        mnist->labels = malloc(label_bytes);
    if (!mnist->images || !mnist->labels) {
        status = eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate %zu images of %zu x %zu floats and their labels",
                          count, mnist->rows, mnist->cols);
        goto done;
    }

    /* Division, not a multiplication by 1/255, gives the correctly rounded x / 255. */
    for (size_t i = 0; i < images->size; i++)
        mnist->images[i] = (float)images->data[i] / 255.0f;
    for (size_t i = 0; i < count; i++)
        mnist->labels[i] = labels->data[i];

done:
    eq_idx_destroy(images);
    eq_idx_destroy(labels);
    if (status != EQ_OK) {
        eq_mnist_destroy(mnist);
        return status;
    }
    *out = mnist;
    return EQ_OK;
}

/* Returns a malloc'ed "<dir>/<split>-<kind>-ubyte<suffix>", or NULL. */
static char *split_path(const char *dir, const char *split, const char *kind, const char *suffix)
{
    const char *format = "%s/%s-%s-ubyte%s";
    int length = snprintf(NULL, 0, format, dir, split, kind, suffix);
    if (length < 0)
        return NULL;
    char *path = malloc((size_t)length + 1);
    if (path)
        snprintf(path, (size_t)length + 1, format, dir, split, kind, suffix);
    return path;
}

/* Returns 0 if the file opens for reading, else the errno of fopen. */
static int open_error(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return errno;
    fclose(file);
    return 0;
}

/* Stores in *out the .gz path, or the raw path if no .gz file exists. A file
 * that exists but does not open is chosen anyway, so that eq_idx_read
 * reports why. Fails with EQ_ERR_IO naming both paths if neither exists. */
static eq_status choose_path(const char *dir, const char *split, const char *kind, char **out)
{
    char *gz = split_path(dir, split, kind, ".gz");
    char *raw = split_path(dir, split, kind, "");
    eq_status status = EQ_OK;

    *out = NULL;
    if (!gz || !raw) {
        status = eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate the path of the %s file in '%s'", kind, dir);
    } else if (open_error(gz) != ENOENT) {
        *out = gz;
        gz = NULL;
    } else if (open_error(raw) != ENOENT) {
        *out = raw;
        raw = NULL;
    } else {
        status = eq_error(EQ_ERR_IO, "cannot open '%s' or '%s': no such file", gz, raw);
    }
    free(gz);
    free(raw);
    return status;
}

eq_status eq_mnist_load_split(const char *dir, const char *split, eq_mnist **out)
{
    if (out)
        *out = NULL;
    if (!dir || !split || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_mnist_load_split: dir, split or out is NULL");
    if (strcmp(split, "train") != 0 && strcmp(split, "t10k") != 0)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_mnist_load_split: split '%s' is not supported, "
                        "expected \"train\" or \"t10k\"", split);

    char *images_path = NULL, *labels_path = NULL;
    eq_status status = choose_path(dir, split, "images-idx3", &images_path);
    if (status == EQ_OK)
        status = choose_path(dir, split, "labels-idx1", &labels_path);
    if (status == EQ_OK)
        status = eq_mnist_load(images_path, labels_path, out);
    free(images_path);
    free(labels_path);
    return status;
}

void eq_mnist_destroy(eq_mnist *mnist)
{
    if (!mnist)
        return;
    eq_free(mnist->images);
    free(mnist->labels);
    free(mnist);
}
