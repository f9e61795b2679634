/* Checkpoint saving: serialisation and an atomic write (temporary file,
 * fsync, rename). */
#define _POSIX_C_SOURCE 200809L

#include "equivar/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "equivar/data.h"
#include "train/checkpoint_format.h"

/* Adds `bytes` to *total; returns 0 on overflow. */
static int add_size(size_t *total, size_t bytes)
{
    if (bytes > SIZE_MAX - *total)
        return 0;
    *total += bytes;
    return 1;
}

/* Returns the file size for this network, or 0 on overflow. */
static size_t checkpoint_size(eq_layer *network, size_t description_length, size_t metadata_length)
{
    size_t total = HEADER_SIZE;
    size_t params = eq_layer_param_count(network);

    if (!add_size(&total, 8 + description_length) || !add_size(&total, 8 + metadata_length)
        || !add_size(&total, 8 + CRC_SIZE))
        return 0;
    for (size_t p = 0; p < params; p++) {
        eq_param param;
        size_t value_bytes;
        eq_layer_param(network, p, &param);
        if (!eq_size_mul(param.count, 4, &value_bytes) || !add_size(&total, 8 + strlen(param.name) + 32)
            || !add_size(&total, value_bytes))
            return 0;
    }
    return total;
}

static uint8_t *put_bytes(uint8_t *out, const char *text, size_t length)
{
    put_u64(out, length);
    if (length > 0)
        memcpy(out + 8, text, length);
    return out + 8 + length;
}

static void serialise(eq_layer *network, const char *description, size_t description_length,
                      const char *metadata, uint8_t *out, size_t size)
{
    uint8_t *at = out;
    size_t params = eq_layer_param_count(network);

    memcpy(at, checkpoint_magic, sizeof checkpoint_magic);
    put_u32(at + 8, EQ_CHECKPOINT_VERSION);
    put_u32(at + 12, 0);
    put_u64(at + 16, size);
    at += HEADER_SIZE;

    at = put_bytes(at, description, description_length);
    at = put_bytes(at, metadata, strlen(metadata));
    put_u64(at, params);
    at += 8;

    for (size_t p = 0; p < params; p++) {
        eq_param param;
        eq_layer_param(network, p, &param);
        at = put_bytes(at, param.name, strlen(param.name));
        put_u64(at, param.shape.n);
        put_u64(at + 8, param.shape.c);
        put_u64(at + 16, param.shape.h);
        put_u64(at + 24, param.shape.w);
        at += 32;
        for (size_t i = 0; i < param.count; i++, at += 4)
            put_float(at, param.value[i]);
    }
    put_u32(at, eq_crc32(0, out, size - CRC_SIZE));
}

/* Flushes the directory holding `path`, so that the rename itself survives
 * a crash. Failure is ignored because some file systems reject fsync on a
 * directory; the file content is already on disk by then. */
static void sync_parent_directory(const char *path)
{
    char *directory = strdup(path);

    if (!directory)
        return;
    char *slash = strrchr(directory, '/');
    const char *name = ".";
    if (slash == directory)
        name = "/";
    else if (slash) {
        *slash = '\0';
        name = directory;
    }
    int fd = open(name, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(directory);
}

static eq_status write_file_atomically(const char *path, const uint8_t *bytes, size_t size)
{
    size_t path_length = strlen(path);
    char *tmp_path = malloc(path_length + sizeof ".tmp");

    if (!tmp_path)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_checkpoint_save: cannot allocate a path for '%s'", path);
    memcpy(tmp_path, path, path_length);
    memcpy(tmp_path + path_length, ".tmp", sizeof ".tmp");

    eq_status status = EQ_OK;
    FILE *file = fopen(tmp_path, "wb");
    if (!file) {
        status = eq_error(EQ_ERR_IO, "eq_checkpoint_save: cannot create '%s': %s", tmp_path, strerror(errno));
        free(tmp_path);
        return status;
    }
    int failed = fwrite(bytes, 1, size, file) != size || fflush(file) != 0 || fsync(fileno(file)) != 0;
    int saved_errno = errno;
    if (fclose(file) != 0 && !failed) {
        failed = 1;
        saved_errno = errno;
    }
    if (failed)
        status = eq_error(EQ_ERR_IO, "eq_checkpoint_save: cannot write %zu bytes to '%s': %s",
                          size, tmp_path, strerror(saved_errno));
    else if (rename(tmp_path, path) != 0)
        status = eq_error(EQ_ERR_IO, "eq_checkpoint_save: cannot rename '%s' to '%s': %s",
                          tmp_path, path, strerror(errno));

    if (status != EQ_OK)
        remove(tmp_path);
    else
        sync_parent_directory(path);
    free(tmp_path);
    return status;
}

eq_status eq_checkpoint_save(eq_layer *network, const char *metadata, const char *path)
{
    if (!network || !path)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_checkpoint_save: network or path is NULL");
    if (!metadata)
        metadata = "";

    size_t description_length = eq_layer_describe(network, NULL, 0);
    char *description = malloc(description_length + 1);
    if (!description)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_checkpoint_save: cannot allocate %zu bytes for the description",
                        description_length + 1);
    eq_layer_describe(network, description, description_length + 1);

    size_t size = checkpoint_size(network, description_length, strlen(metadata));
    uint8_t *bytes = size ? malloc(size) : NULL;
    if (!bytes) {
        free(description);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_checkpoint_save: cannot allocate the %zu-byte checkpoint for '%s'",
                        size, path);
    }
    serialise(network, description, description_length, metadata, bytes, size);
    free(description);

    eq_status status = write_file_atomically(path, bytes, size);
    free(bytes);
    return status;
}

