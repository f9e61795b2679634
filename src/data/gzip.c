/* The gzip file format (RFC 1952): member headers, trailers and concatenated members. */
#include "equivar/data.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/inflate.h"

/* Header flag bits (FLG). */
#define FLAG_HCRC 0x02u
#define FLAG_EXTRA 0x04u
#define FLAG_NAME 0x08u
#define FLAG_COMMENT 0x10u
#define FLAG_RESERVED 0xe0u

#define HEADER_SIZE 10
#define TRAILER_SIZE 8

/* A 258-byte match costs at least two bits (a length and a distance code),
 * so deflate expands data at most 1032 times. Twice that caps the initial
 * buffer, which a forged ISIZE field could otherwise make huge. */
#define MAX_EXPANSION 2064u

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static eq_status truncated_header(const char *name, size_t start, const char *field)
{
    return eq_error(EQ_ERR_FORMAT, "%s: truncated gzip header of the member at byte %zu: the input ends inside %s",
                    name, start, field);
}

/* Parses the member header at data[start] and stores the position of its
 * deflate data in *body. */
static eq_status parse_header(const uint8_t *data, size_t size, size_t start, const char *name, size_t *body)
{
    const uint8_t *header = data + start;
    size_t left = size - start;

    /* The caller passes left >= 1. A short input that matches the magic
     * bytes as far as it goes is reported as truncated. */
    if (header[0] != 0x1f || (left >= 2 && header[1] != 0x8b)) {
        unsigned second = left >= 2 ? header[1] : 0;
        return eq_error(EQ_ERR_FORMAT, "%s: not a gzip member at byte %zu: found 0x%02x 0x%02x, expected 0x1f 0x8b",
                        name, start, header[0], second);
    }
    if (left < HEADER_SIZE)
        return truncated_header(name, start, "the 10 fixed bytes");
    if (header[2] != 8)
        return eq_error(EQ_ERR_FORMAT, "%s: gzip compression method %u at byte %zu, expected 8 (deflate)",
                        name, header[2], start + 2);
    unsigned flags = header[3];
    if (flags & FLAG_RESERVED)
        return eq_error(EQ_ERR_FORMAT, "%s: reserved gzip header flags 0x%02x set at byte %zu, expected 0",
                        name, flags & FLAG_RESERVED, start + 3);

    size_t pos = start + HEADER_SIZE;
    if (flags & FLAG_EXTRA) {
        if (size - pos < 2)
            return truncated_header(name, start, "the FEXTRA length");
        size_t extra_size = load_le16(data + pos);
        pos += 2;
        if (size - pos < extra_size)
            return truncated_header(name, start, "the FEXTRA field");
        pos += extra_size;
    }
    if (flags & FLAG_NAME) {
        const uint8_t *end = memchr(data + pos, 0, size - pos);
        if (!end)
            return truncated_header(name, start, "the FNAME field");
        pos = (size_t)(end - data) + 1;
    }
    if (flags & FLAG_COMMENT) {
        const uint8_t *end = memchr(data + pos, 0, size - pos);
        if (!end)
            return truncated_header(name, start, "the FCOMMENT field");
        pos = (size_t)(end - data) + 1;
    }
    if (flags & FLAG_HCRC) {
        if (size - pos < 2)
            return truncated_header(name, start, "the FHCRC field");
        unsigned stored = load_le16(data + pos);
        unsigned actual = eq_crc32(0, header, pos - start) & 0xffffu;
        if (stored != actual)
            return eq_error(EQ_ERR_FORMAT, "%s: gzip header CRC16 mismatch at byte %zu, header says 0x%04x, "
                            "header bytes have 0x%04x", name, pos, stored, actual);
        pos += 2;
    }
    *body = pos;
    return EQ_OK;
}

/* Checks the CRC32 and ISIZE trailer at data[pos] against the member output. */
static eq_status check_trailer(const uint8_t *data, size_t size, size_t pos, const char *name,
                               const uint8_t *output, size_t output_size)
{
    if (size - pos < TRAILER_SIZE)
        return eq_error(EQ_ERR_FORMAT, "%s: truncated gzip trailer at byte %zu: expected 8 bytes "
                        "(CRC32 and ISIZE), found %zu", name, pos, size - pos);

    uint32_t stored_crc = load_le32(data + pos);
    uint32_t actual_crc = eq_crc32(0, output, output_size);
    if (stored_crc != actual_crc)
        return eq_error(EQ_ERR_FORMAT, "%s: CRC32 mismatch, trailer says 0x%08x, data has 0x%08x",
                        name, stored_crc, actual_crc);

    /* ISIZE is the length modulo 2^32. */
    uint32_t stored_size = load_le32(data + pos + 4);
    if (stored_size != (uint32_t)output_size)
        return eq_error(EQ_ERR_FORMAT, "%s: length mismatch, trailer says %u bytes (ISIZE, modulo 2^32), "
                        "data has %zu", name, stored_size, output_size);
    return EQ_OK;
}

/* Allocates the initial output buffer from the last ISIZE field: exact for
 * a single member below 4 GiB, and only a first guess otherwise. */
static eq_status reserve_from_isize(const uint8_t *data, size_t size, const char *name, eq_inflate_output *out)
{
    size_t guess = 0;

    if (size >= HEADER_SIZE + TRAILER_SIZE)
        guess = load_le32(data + size - 4);
    size_t bound = size > SIZE_MAX / MAX_EXPANSION ? SIZE_MAX : size * MAX_EXPANSION;
    if (guess > bound)
        guess = bound;
    if (guess > out->max_size)
        guess = out->max_size;
    if (guess > SIZE_MAX - 1024)
        guess = SIZE_MAX - 1024;

    out->capacity = guess + 1024;
    out->data = malloc(out->capacity);
    if (!out->data)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for the decompressed data",
                        name, out->capacity);
    return EQ_OK;
}

eq_status eq_gzip_decompress_max(const uint8_t *data, size_t size, const char *name, size_t max_size,
                                 uint8_t **out, size_t *out_size)
{
    if (out)
        *out = NULL;
    if (out_size)
        *out_size = 0;
    if (!data || !name || !out || !out_size)
        return eq_error(EQ_ERR_INVALID_ARGUMENT, "eq_gzip_decompress: data, name, out or out_size is NULL");
    if (size == 0)
        return eq_error(EQ_ERR_FORMAT, "%s: empty input, expected a gzip member (0x1f 0x8b)", name);

    eq_inflate_output output = { .max_size = max_size };
    eq_status status = reserve_from_isize(data, size, name, &output);
    size_t pos = 0;

    /* Like gzip, decompress concatenated members into one output. */
    while (status == EQ_OK && pos < size) {
        size_t body = 0, consumed = 0;
        size_t member_start = output.size;

        status = parse_header(data, size, pos, name, &body);
        if (status == EQ_OK)
            status = eq_inflate(data + body, size - body, name, body, &output, &consumed);
        if (status != EQ_OK)
            break;
        pos = body + consumed;
        status = check_trailer(data, size, pos, name, output.data + member_start, output.size - member_start);
        if (status != EQ_OK)
            break;
        pos += TRAILER_SIZE;

        int next_is_member = size - pos >= 2 && data[pos] == 0x1f && data[pos + 1] == 0x8b;
        if (pos < size && !next_is_member)
            status = eq_error(EQ_ERR_FORMAT, "%s: %zu bytes of trailing garbage at byte %zu, expected the end "
                              "of the input or another gzip member (0x1f 0x8b)", name, size - pos, pos);
    }

    if (status != EQ_OK) {
        free(output.data);
        return status;
    }

    /* Release the slack and any overestimate. If realloc fails, the larger buffer is still valid. */
    uint8_t *shrunk = realloc(output.data, output.size > 0 ? output.size : 1);
    *out = shrunk ? shrunk : output.data;
    *out_size = output.size;
    return EQ_OK;
}

eq_status eq_gzip_decompress(const uint8_t *data, size_t size, const char *name, uint8_t **out, size_t *out_size)
{
    return eq_gzip_decompress_max(data, size, name, SIZE_MAX, out, out_size);
}
