/* IDX files of unsigned bytes, raw or gzip-compressed. */
#define _POSIX_C_SOURCE 200809L /* the XSI strerror_r, which is thread-safe */

#include "equivar/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

#define IDX_TYPE_UNSIGNED_BYTE 0x08
#define IDX_MAX_RANK 4

static eq_status io_error(const char *action, const char *path, int error_number)
{
    char reason[128];

    if (strerror_r(error_number, reason, sizeof reason) != 0)
        snprintf(reason, sizeof reason, "error %d", error_number);
    return eq_error(EQ_ERR_IO, "cannot %s '%s': %s", action, path, reason);
}

/* Reads a whole file into a malloc'ed buffer. */
static eq_status read_file(const char *path, uint8_t **out, size_t *out_size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return io_error("open", path, errno);

    /* The size of a regular file is only a first guess, because the file may
     * change while it is read. One byte more lets the loop see the end of
     * file without growing the buffer. */
    struct stat info;
    size_t capacity = 65536;
    if (fstat(fileno(file), &info) != 0) {
        eq_status status = io_error("stat", path, errno);
        fclose(file);
        return status;
    }
    if (S_ISDIR(info.st_mode)) {
        fclose(file);
        return io_error("read", path, EISDIR);
    }
    if (S_ISREG(info.st_mode) && info.st_size >= 0 && (uintmax_t)info.st_size < SIZE_MAX)
        capacity = (size_t)info.st_size + 1;

    uint8_t *data = malloc(capacity);
    size_t size = 0;
    eq_status status = EQ_OK;
    if (!data)
        status = eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to read '%s'", capacity, path);
    while (status == EQ_OK) {
        if (size == capacity) {
            size_t grown = capacity > SIZE_MAX / 2 ? SIZE_MAX : 2 * capacity;
            uint8_t *bigger = grown > capacity ? realloc(data, grown) : NULL;
            if (!bigger) {
                status = eq_error(EQ_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes to read '%s'", grown, path);
                break;
            }
            data = bigger;
            capacity = grown;
        }
        size_t got = fread(data + size, 1, capacity - size, file);
        size += got;
        if (got == 0) {
            if (ferror(file))
                status = io_error("read", path, errno);
            break;
        }
    }
    fclose(file);

    if (status != EQ_OK) {
        free(data);
        return status;
    }
    *out = data;
    *out_size = size;
    return EQ_OK;
}

static size_t load_be32(const uint8_t *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | (size_t)p[3];
}

/* Validates the IDX header of a file held in `bytes`, fills idx and moves the
 * payload to the start of the buffer, which idx->data then owns. `unpacked`
 * is " after gzip decompression" or "", for the messages. */
static eq_status parse_idx(const char *path, const char *unpacked, uint8_t *bytes, size_t size, eq_idx *idx)
{
    if (size < 4)
        return eq_error(EQ_ERR_FORMAT, "%s: truncated IDX header: expected at least 4 bytes, found %zu%s",
                        path, size, unpacked);
    if (bytes[0] != 0 || bytes[1] != 0)
        return eq_error(EQ_ERR_FORMAT, "%s: not an IDX file: magic number 0x%02x%02x%02x%02x, expected two zero "
                        "bytes, the type 0x08 and the rank", path, bytes[0], bytes[1], bytes[2], bytes[3]);
    if (bytes[2] != IDX_TYPE_UNSIGNED_BYTE)
        return eq_error(EQ_ERR_FORMAT, "%s: IDX data type 0x%02x is not supported, expected 0x08 (unsigned byte)",
                        path, bytes[2]);
    size_t rank = bytes[3];
    if (rank < 1 || rank > IDX_MAX_RANK)
        return eq_error(EQ_ERR_FORMAT, "%s: IDX rank %zu, expected 1 to 4", path, rank);
    size_t header_size = 4 + 4 * rank;
    if (size < header_size)
        return eq_error(EQ_ERR_FORMAT, "%s: truncated IDX header: expected %zu bytes for rank %zu, found %zu%s",
                        path, header_size, rank, size, unpacked);

    size_t payload = 1;
    for (size_t d = 0; d < rank; d++) {
        idx->dims[d] = load_be32(bytes + 4 + 4 * d);
        if (idx->dims[d] == 0)
            return eq_error(EQ_ERR_FORMAT, "%s: IDX dimension %zu is 0, expected a positive size", path, d);
        if (!eq_size_mul(payload, idx->dims[d], &payload))
            return eq_error(EQ_ERR_FORMAT, "%s: the product of the IDX dimensions overflows size_t at "
                            "dimension %zu (%zu)", path, d, idx->dims[d]);
    }
    if (payload > SIZE_MAX - header_size)
        return eq_error(EQ_ERR_FORMAT, "%s: the IDX file size overflows size_t", path);
    size_t expected = header_size + payload;
    if (size < expected)
        return eq_error(EQ_ERR_FORMAT, "%s: truncated: expected %zu bytes, found %zu%s",
                        path, expected, size, unpacked);
    if (size > expected)
        return eq_error(EQ_ERR_FORMAT, "%s: %zu trailing bytes: expected %zu bytes, found %zu%s",
                        path, size - expected, expected, size, unpacked);

    idx->magic = (uint32_t)load_be32(bytes);
    idx->rank = rank;
    for (size_t d = rank; d < IDX_MAX_RANK; d++)
        idx->dims[d] = 1;
    idx->size = payload;
    memmove(bytes, bytes + header_size, payload);
    uint8_t *shrunk = realloc(bytes, payload);
    idx->data = shrunk ? shrunk : bytes;
    return EQ_OK;
}

eq_status eq_idx_read(const char *path, eq_idx **out)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_idx_read: path or out is NULL");

    uint8_t *bytes = NULL;
    size_t size = 0;
    eq_status status = read_file(path, &bytes, &size);
    if (status != EQ_OK)
        return status;

    /* Compression is detected by the gzip magic bytes, not the file name.
     * No IDX file starts with 0x1f, because its first two bytes are zero. */
    const char *unpacked = "";
    if (size >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
        uint8_t *raw = NULL;
        size_t raw_size = 0;
        status = eq_gzip_decompress(bytes, size, path, &raw, &raw_size);
        free(bytes);
        if (status != EQ_OK)
            return status;
        bytes = raw;
        size = raw_size;
        unpacked = " after gzip decompression";
    }

    eq_idx *idx = calloc(1, sizeof *idx);
    if (!idx) {
        free(bytes);
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate the IDX descriptor", path);
    }
    status = parse_idx(path, unpacked, bytes, size, idx);
    if (status != EQ_OK) {
        free(bytes);
        free(idx);
        return status;
    }
    *out = idx;
    return EQ_OK;
}

void eq_idx_destroy(eq_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    free(idx);
}
