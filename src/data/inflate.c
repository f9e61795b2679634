/* Raw deflate decoding (RFC 1951): stored and Huffman blocks into a growable buffer. */
#include "data/inflate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/inflate_state.h"

/* Position in the named file of the byte that contains the next unread bit. */
static size_t byte_position(const inflate_state *s, const bit_reader *reader)
{
    if (is_truncated(reader))
        return s->offset + reader->in_size;
    return s->offset + reader->in_pos - (reader->count - reader->padding) / 8;
}

eq_status eq_inflate_stream_error(const inflate_state *s, const bit_reader *reader, const char *format, ...)
{
    char detail[256];
    va_list args;

    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    return eq_error(EQ_ERR_FORMAT, "%s: corrupt deflate data at byte %zu: %s", s->name,
                    byte_position(s, reader), detail);
}

eq_status eq_inflate_truncated_error(const inflate_state *s)
{
    return eq_error(EQ_ERR_FORMAT,
                    "%s: truncated deflate data: the input ends at byte %zu before the final block ends",
                    s->name, s->offset + s->reader.in_size);
}

static eq_status too_large_error(const inflate_state *s)
{
    return eq_error(EQ_ERR_FORMAT, "%s: the decompressed data exceeds the limit of %zu bytes",
                    s->name, s->out->max_size);
}

/* Grows the output buffer so that `extra` more bytes and EQ_INFLATE_SLACK fit. */
static eq_status output_grow(inflate_state *s, const bit_reader *reader, size_t extra)
{
    eq_inflate_output *out = s->out;

    if (extra > SIZE_MAX - EQ_INFLATE_SLACK - out->size)
        return eq_inflate_stream_error(s, reader, "the output size overflows size_t");
    size_t needed = out->size + extra + EQ_INFLATE_SLACK;
    if (out->capacity >= needed)
        return EQ_OK;

    /* Double for amortised linear time, but stop near max_size: a Huffman
     * block may overshoot it by one match before the check catches it. */
    size_t ceiling = SIZE_MAX;
    if (out->max_size < SIZE_MAX - MAX_MATCH_LENGTH - EQ_INFLATE_SLACK)
        ceiling = out->max_size + MAX_MATCH_LENGTH + EQ_INFLATE_SLACK;
    size_t grown = out->capacity > SIZE_MAX / 2 ? SIZE_MAX : 2 * out->capacity;
    if (grown > ceiling)
        grown = ceiling;
    if (grown < needed)
        grown = needed;

    uint8_t *data = realloc(out->data, grown);
    if (!data)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for the decompressed data",
                        s->name, grown);
    out->data = data;
    out->capacity = grown;
    return EQ_OK;
}

static eq_status decode_stored_block(inflate_state *s)
{
    bit_reader *reader = &s->reader;
    eq_inflate_output *out = s->out;

    /* LEN and NLEN start at the next byte boundary. */
    consume_bits(reader, reader->count & 7);
    refill(reader);
    unsigned length = peek_bits(reader, 16);
    consume_bits(reader, 16);
    unsigned complement = peek_bits(reader, 16);
    consume_bits(reader, 16);
    if (is_truncated(reader))
        return eq_inflate_truncated_error(s);
    if (length != (~complement & 0xffffu))
        return eq_inflate_stream_error(s, reader,
                            "stored block length %u does not match its complement 0x%04x, expected 0x%04x",
                            length, complement, ~length & 0xffffu);

    /* Hand the whole bytes still buffered back to the input and copy the
     * block straight from it. */
    reader->in_pos -= (reader->count - reader->padding) / 8;
    reader->bits = 0;
    reader->count = 0;
    reader->padding = 0;
    if (reader->in_size - reader->in_pos < length)
        return eq_inflate_truncated_error(s);
    if (out->size > out->max_size || length > out->max_size - out->size)
        return too_large_error(s);

    eq_status status = output_grow(s, reader, length);
    if (status != EQ_OK)
        return status;
    memcpy(out->data + out->size, reader->in + reader->in_pos, length);
    out->size += length;
    reader->in_pos += length;
    return EQ_OK;
}

/* Copies a match of `length` bytes from `distance` bytes back. The source
 * may overlap the destination, which repeats the last `distance` bytes. */
static inline void copy_match(uint8_t *dst, size_t distance, unsigned length)
{
    const uint8_t *src = dst - distance;

    if (distance >= 8) {
        /* Each 8-byte chunk reads only bytes written before it. The last
         * chunk may write up to 7 bytes past the match, into the slack. */
        for (unsigned i = 0; i < length; i += 8)
            memcpy(dst + i, src + i, 8);
    } else if (distance == 1) {
        memset(dst, src[0], length);
    } else {
        for (unsigned i = 0; i < length; i++)
            dst[i] = src[i];
    }
}

static inline uint32_t decode_entry(const bit_reader *reader, const uint32_t *table, unsigned primary_bits)
{
    uint32_t entry = table[reader->bits & ((UINT64_C(1) << primary_bits) - 1)];

    if (eq_huffman_kind(entry) == EQ_HUFFMAN_LINK) {
        unsigned index = (unsigned)(reader->bits >> primary_bits) & ((1u << eq_huffman_length(entry)) - 1);
        entry = table[eq_huffman_value(entry) + index];
    }
    return entry;
}

/* Decodes the symbols of one Huffman block up to its end-of-block code. The
 * reader and the output fields live in locals here, because stores through
 * the uint8_t output pointer could alias them and force reloads. */
static eq_status decode_huffman_block(inflate_state *s, const uint32_t *litlen, const uint32_t *dist)
{
    bit_reader reader = s->reader;
    eq_inflate_output *out = s->out;
    uint8_t *data = out->data;
    size_t size = out->size;
    size_t capacity = out->capacity;
    eq_status status = EQ_OK;

    for (;;) {
        if (capacity - size < MAX_MATCH_LENGTH + EQ_INFLATE_SLACK) {
            out->size = size;
            if (size > out->max_size) {
                status = too_large_error(s);
                break;
            }
            status = output_grow(s, &reader, MAX_MATCH_LENGTH);
            if (status != EQ_OK)
                break;
            data = out->data;
            capacity = out->capacity;
        }

        refill(&reader);
        uint32_t entry = decode_entry(&reader, litlen, EQ_LITLEN_PRIMARY_BITS);
        consume_bits(&reader, eq_huffman_length(entry));
        if (is_truncated(&reader)) {
            status = eq_inflate_truncated_error(s);
            break;
        }
        unsigned kind = eq_huffman_kind(entry);
        if (kind == EQ_HUFFMAN_SYMBOL) {
            data[size++] = (uint8_t)eq_huffman_value(entry);
            continue;
        }
        if (kind == EQ_HUFFMAN_END)
            break;
        if (kind != EQ_HUFFMAN_BASE) {
            if (kind == EQ_HUFFMAN_INVALID)
                status = eq_inflate_stream_error(s, &reader, "invalid literal/length symbol %u", eq_huffman_value(entry));
            else
                status = eq_inflate_stream_error(s, &reader, "invalid literal/length code");
            break;
        }

        unsigned length = eq_huffman_value(entry) + peek_bits(&reader, eq_huffman_extra(entry));
        consume_bits(&reader, eq_huffman_extra(entry));
        entry = decode_entry(&reader, dist, EQ_DIST_PRIMARY_BITS);
        consume_bits(&reader, eq_huffman_length(entry));
        if (eq_huffman_kind(entry) != EQ_HUFFMAN_BASE) {
            if (is_truncated(&reader))
                status = eq_inflate_truncated_error(s);
            else if (eq_huffman_kind(entry) == EQ_HUFFMAN_INVALID)
                status = eq_inflate_stream_error(s, &reader, "invalid distance symbol %u", eq_huffman_value(entry));
            else
                status = eq_inflate_stream_error(s, &reader, "invalid distance code");
            break;
        }
        size_t distance = eq_huffman_value(entry) + peek_bits(&reader, eq_huffman_extra(entry));
        consume_bits(&reader, eq_huffman_extra(entry));
        if (is_truncated(&reader)) {
            status = eq_inflate_truncated_error(s);
            break;
        }
        if (distance > size - s->window_start) {
            status = eq_inflate_stream_error(s, &reader, "distance %zu is too far back, only %zu bytes of output precede it",
                                  distance, size - s->window_start);
            break;
        }
        copy_match(data + size, distance, length);
        size += length;
    }

    out->size = size;
    s->reader = reader;
    return status;
}

eq_status eq_inflate(const uint8_t *in, size_t in_size, const char *name, size_t offset,
                     eq_inflate_output *out, size_t *consumed)
{
    inflate_state *s = malloc(sizeof *s);
    if (!s)
        return eq_error(EQ_ERR_OUT_OF_MEMORY, "%s: cannot allocate the deflate decoder state", name);

    s->name = name;
    s->offset = offset;
    s->out = out;
    s->window_start = out->size;
    s->reader = (bit_reader){ .in = in, .in_size = in_size };
    s->fixed_built = 0;
    eq_inflate_init_templates(s);

    eq_status status = EQ_OK;
    unsigned final = 0;
    while (status == EQ_OK && !final) {
        bit_reader *reader = &s->reader;
        refill(reader);
        final = peek_bits(reader, 1);
        unsigned type = peek_bits(reader, 3) >> 1;
        consume_bits(reader, 3);
        if (is_truncated(reader)) {
            status = eq_inflate_truncated_error(s);
            break;
        }

        switch (type) {
        case 0:
            status = decode_stored_block(s);
            break;
        case 1:
            if (!s->fixed_built)
                eq_inflate_build_fixed_tables(s);
            status = decode_huffman_block(s, s->fixed_litlen, s->fixed_dist);
            break;
        case 2:
            status = eq_inflate_read_dynamic_tables(s);
            if (status == EQ_OK)
                status = decode_huffman_block(s, s->litlen, s->dist);
            break;
        default:
            status = eq_inflate_stream_error(s, reader, "invalid block type 3");
            break;
        }
        if (status == EQ_OK && out->size > out->max_size)
            status = too_large_error(s);
    }

    if (status == EQ_OK)
        *consumed = s->reader.in_pos - (s->reader.count - s->reader.padding) / 8;
    free(s);
    return status;
}
