/* Checkpoint loading: the whole file is verified (magic, version, size,
 * CRC32, description and shapes) before any parameter is written. */
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


/* One parameter record, pointing into the file buffer. */
typedef struct stored_param {
    const uint8_t *name;
    size_t name_length;
    eq_shape shape;
    size_t count;
    const uint8_t *values; /* count little-endian floats */
} stored_param;

/* A verified checkpoint file held in memory. */
typedef struct checkpoint_file {
    uint8_t *bytes;
    size_t size;
    const uint8_t *description;
    size_t description_length;
    const uint8_t *metadata;
    size_t metadata_length;
    size_t param_count;
    stored_param *params; /* [param_count] */
} checkpoint_file;

static void checkpoint_file_free(checkpoint_file *file)
{
    free(file->bytes);
    free(file->params);
}

static eq_status read_whole_file(const char *caller, const char *path, uint8_t **out, size_t *out_size)
{
    FILE *file = fopen(path, "rb");
    struct stat info;

    if (!file)
        return eq_error(EQ_ERR_IO, "%s: cannot open '%s': %s", caller, path, strerror(errno));
    if (fstat(fileno(file), &info) != 0 || info.st_size < 0) {
        eq_status status = eq_error(EQ_ERR_IO, "%s: cannot read the size of '%s': %s", caller, path, strerror(errno));
        fclose(file);
        return status;
    }

    size_t size = (size_t)info.st_size;
    uint8_t *bytes = malloc(size > 0 ? size : 1);
    if (!bytes) {
        fclose(file);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes to read '%s'", caller, size, path);
    }
    size_t got = fread(bytes, 1, size, file);
    int read_failed = ferror(file);
    fclose(file);
    if (got != size || read_failed) {
        free(bytes);
        return eq_error(EQ_ERR_IO, "%s: read %zu of %zu bytes of '%s'", caller, got, size, path);
    }
    *out = bytes;
    *out_size = size;
    return EQ_OK;
}

/* A bounds-checked read position in the file body. */
typedef struct cursor {
    const uint8_t *bytes;
    size_t end; /* first byte that must not be read: the CRC */
    size_t pos;
} cursor;

static int cursor_take(cursor *at, size_t length, const uint8_t **out)
{
    if (length > at->end - at->pos)
        return 0;
    *out = at->bytes + at->pos;
    at->pos += length;
    return 1;
}

static int cursor_u64(cursor *at, uint64_t *value)
{
    const uint8_t *bytes;

    if (!cursor_take(at, 8, &bytes))
        return 0;
    *value = get_u64(bytes);
    return 1;
}

/* Reads a length-prefixed byte string. */
static int cursor_string(cursor *at, const uint8_t **text, size_t *length)
{
    uint64_t stored;

    if (!cursor_u64(at, &stored) || stored > SIZE_MAX)
        return 0;
    *length = (size_t)stored;
    return cursor_take(at, *length, text);
}

static int cursor_param(cursor *at, stored_param *param)
{
    uint64_t dims[4];
    size_t bytes;

    if (!cursor_string(at, &param->name, &param->name_length))
        return 0;
    for (int d = 0; d < 4; d++) {
        if (!cursor_u64(at, &dims[d]) || dims[d] > SIZE_MAX)
            return 0;
    }
    param->shape = eq_shape_make((size_t)dims[0], (size_t)dims[1], (size_t)dims[2], (size_t)dims[3]);
    param->count = eq_shape_numel(param->shape);
    if (param->count == 0 || !eq_size_mul(param->count, 4, &bytes))
        return 0;
    return cursor_take(at, bytes, &param->values);
}

/* Checks magic, version, size and CRC, in that order, so that the message
 * names the first thing wrong with the file. */
static eq_status verify_header(const char *caller, const char *path, const uint8_t *bytes, size_t size)
{
    if (size < HEADER_SIZE + CRC_SIZE)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is truncated: %zu bytes, a checkpoint has at least %d",
                        caller, path, size, HEADER_SIZE + CRC_SIZE);
    if (memcmp(bytes, checkpoint_magic, sizeof checkpoint_magic) != 0)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is not a libequivar checkpoint: the first 8 bytes are not \"EQVRCKPT\"",
                        caller, path);

    uint32_t version = get_u32(bytes + 8);
    if (version != EQ_CHECKPOINT_VERSION)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' has checkpoint format version %u, this library reads version %d",
                        caller, path, (unsigned)version, EQ_CHECKPOINT_VERSION);

    uint64_t stated = get_u64(bytes + 16);
    if (stated != size)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is %s: its header gives %llu bytes, the file has %zu",
                        caller, path, stated > size ? "truncated" : "corrupt", (unsigned long long)stated, size);

    uint32_t stored_crc = get_u32(bytes + size - CRC_SIZE);
    uint32_t crc = eq_crc32(0, bytes, size - CRC_SIZE);
    if (crc != stored_crc)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is corrupt: CRC32 is 0x%08x, the file stores 0x%08x",
                        caller, path, (unsigned)crc, (unsigned)stored_crc);
    return EQ_OK;
}

/* Parses the body after verify_header passed. A failure here means a file
 * with a valid CRC but an inconsistent layout, i.e. one not written by
 * eq_checkpoint_save. */
static eq_status parse_body(const char *caller, const char *path, checkpoint_file *file)
{
    cursor at = { file->bytes, file->size - CRC_SIZE, HEADER_SIZE };
    uint64_t param_count;

    if (!cursor_string(&at, &file->description, &file->description_length)
        || !cursor_string(&at, &file->metadata, &file->metadata_length) || !cursor_u64(&at, &param_count))
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is corrupt: the header strings run past the end of the file",
                        caller, path);
    /* Each record takes at least 40 bytes, which bounds the allocation. */
    if (param_count > (at.end - at.pos) / 40)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is corrupt: %llu parameters cannot fit in %zu bytes",
                        caller, path, (unsigned long long)param_count, at.end - at.pos);

    file->param_count = (size_t)param_count;
    if (file->param_count > 0) {
        file->params = calloc(file->param_count, sizeof *file->params);
        if (!file->params)
            return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu parameter records for '%s'",
                            caller, file->param_count, path);
    }
    for (size_t p = 0; p < file->param_count; p++) {
        if (!cursor_param(&at, &file->params[p]))
            return eq_error(EQ_ERR_FORMAT, "%s: '%s' is corrupt: parameter %zu runs past the end of the file or has an invalid shape",
                            caller, path, p);
    }
    if (at.pos != at.end)
        return eq_error(EQ_ERR_FORMAT, "%s: '%s' is corrupt: %zu unexpected bytes after the last parameter",
                        caller, path, at.end - at.pos);
    return EQ_OK;
}

static eq_status checkpoint_file_read(const char *caller, const char *path, checkpoint_file *file)
{
    memset(file, 0, sizeof *file);
    eq_status status = read_whole_file(caller, path, &file->bytes, &file->size);
    if (status == EQ_OK)
        status = verify_header(caller, path, file->bytes, file->size);
    if (status == EQ_OK)
        status = parse_body(caller, path, file);
    if (status != EQ_OK)
        checkpoint_file_free(file);
    return status;
}

static char *copy_string(const uint8_t *text, size_t length)
{
    char *copy = length < SIZE_MAX ? malloc(length + 1) : NULL;

    if (!copy)
        return NULL;
    if (length > 0)
        memcpy(copy, text, length);
    copy[length] = '\0';
    return copy;
}

eq_status eq_checkpoint_read_metadata(const char *path, char **metadata, char **description)
{
    checkpoint_file file;

    if (metadata)
        *metadata = NULL;
    if (description)
        *description = NULL;
    if (!path)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_checkpoint_read_metadata: path is NULL");
    eq_status status = checkpoint_file_read("eq_checkpoint_read_metadata", path, &file);
    if (status != EQ_OK)
        return status;

    char *metadata_copy = metadata ? copy_string(file.metadata, file.metadata_length) : NULL;
    char *description_copy = description ? copy_string(file.description, file.description_length) : NULL;
    checkpoint_file_free(&file);
    if ((metadata && !metadata_copy) || (description && !description_copy)) {
        free(metadata_copy);
        free(description_copy);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_checkpoint_read_metadata: cannot copy the strings of '%s'", path);
    }
    if (metadata)
        *metadata = metadata_copy;
    if (description)
        *description = description_copy;
    return EQ_OK;
}

/* Reports two different network descriptions. Descriptions of deep networks
 * are long, so both are quoted from a little before the first difference. */
static eq_status description_error(const char *path, const char *stored, size_t stored_length,
                                   const char *network)
{
    size_t network_length = strlen(network);
    size_t diff = 0;

    while (diff < stored_length && diff < network_length && stored[diff] == network[diff])
        diff++;
    size_t start = diff > 40 ? diff - 40 : 0;
    size_t stored_shown = stored_length - start > 100 ? 100 : stored_length - start;
    size_t network_shown = network_length - start > 100 ? 100 : network_length - start;
    const char *lead = start > 0 ? "..." : "";

    return eq_error(EQ_ERR_SHAPE,
                    "eq_checkpoint_load: '%s' was saved from another network; the descriptions differ at character %zu: "
                    "saved \"%s%.*s\", this network \"%s%.*s\"",
                    path, diff, lead, (int)stored_shown, stored + start, lead, (int)network_shown, network + start);
}

/* Checks that every stored parameter fits the network's, by count, name and
 * shape, and that the descriptions agree. Shapes are compared first because
 * a shape mismatch is the more specific message. */
static eq_status match_network(const char *path, const checkpoint_file *file, eq_layer *network)
{
    char stored_text[EQ_SHAPE_STR_SIZE], network_text[EQ_SHAPE_STR_SIZE];
    size_t count = eq_layer_param_count(network);

    if (count != file->param_count)
        return eq_error(EQ_ERR_SHAPE, "eq_checkpoint_load: '%s' stores %zu parameters, the network has %zu",
                        path, file->param_count, count);
    for (size_t p = 0; p < count; p++) {
        const stored_param *stored = &file->params[p];
        eq_param param;
        eq_layer_param(network, p, &param);
        if (!eq_shape_equal(stored->shape, param.shape))
            return eq_error(EQ_ERR_SHAPE, "eq_checkpoint_load: parameter %zu (%s) has shape %s in '%s', the network's has shape %s",
                            p, param.name, eq_shape_str(stored->shape, stored_text), path,
                            eq_shape_str(param.shape, network_text));
        if (stored->name_length != strlen(param.name) || memcmp(stored->name, param.name, stored->name_length) != 0)
            return eq_error(EQ_ERR_SHAPE, "eq_checkpoint_load: parameter %zu is named \"%.*s\" in '%s', the network's is \"%s\"",
                            p, (int)(stored->name_length > 64 ? 64 : stored->name_length), (const char *)stored->name,
                            path, param.name);
    }

    size_t length = eq_layer_describe(network, NULL, 0);
    char *description = malloc(length + 1);
    if (!description)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "eq_checkpoint_load: cannot allocate %zu bytes for the description",
                        length + 1);
    eq_layer_describe(network, description, length + 1);
    eq_status status = EQ_OK;
    if (length != file->description_length || memcmp(description, file->description, length) != 0)
        status = description_error(path, (const char *)file->description, file->description_length, description);
    free(description);
    return status;
}

eq_status eq_checkpoint_load(eq_layer *network, const char *path)
{
    checkpoint_file file;

    if (!network || !path)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_checkpoint_load: network or path is NULL");
    eq_status status = checkpoint_file_read("eq_checkpoint_load", path, &file);
    if (status != EQ_OK)
        return status;
    status = match_network(path, &file, network);
    if (status != EQ_OK) {
        checkpoint_file_free(&file);
        return status;
    }

    /* Every check passed: only now are the parameters written. */
    for (size_t p = 0; p < file.param_count; p++) {
        eq_param param;
        eq_layer_param(network, p, &param);
        for (size_t i = 0; i < param.count; i++)
            param.value[i] = get_float(file.params[p].values + 4 * i);
    }
    checkpoint_file_free(&file);
    return EQ_OK;
}

