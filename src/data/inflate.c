/* Raw deflate decoding (RFC 1951): stored, fixed-Huffman and dynamic-Huffman blocks. */
#include "data/inflate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/huffman.h"

#define MAX_MATCH_LENGTH 258
#define LITLEN_SYMBOLS 288
#define DIST_SYMBOLS 32
#define CODELEN_SYMBOLS 19

/* Match lengths and distances per symbol (RFC 1951, section 3.2.5): the
 * base value and the number of extra bits that follow the code. */
static const uint16_t length_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27,
    31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
};
static const uint8_t length_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
};
static const uint16_t dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
};
static const uint8_t dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
};

/* The order in which a dynamic block header lists the code length code lengths. */
static const uint8_t codelen_order[CODELEN_SYMBOLS] = {
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
};

/* Input bits not yet decoded. Deflate packs bits starting at the least
 * significant bit of each byte, so the next bit of the stream is bit 0. */
typedef struct bit_reader {
    const uint8_t *in;
    size_t in_size;
    size_t in_pos;    /* next input byte to load */
    uint64_t bits;
    unsigned count;   /* valid bits in `bits`, padding included */
    unsigned padding; /* zero bits loaded past the end of the input */
} bit_reader;

typedef struct inflate_state {
    const char *name;
    size_t offset; /* position of in[0] in the named file */
    eq_inflate_output *out;
    size_t window_start; /* out->size when this stream started */
    bit_reader reader;
    int fixed_built;
    uint32_t litlen_templates[LITLEN_SYMBOLS];
    uint32_t dist_templates[DIST_SYMBOLS];
    uint32_t fixed_litlen[1u << EQ_LITLEN_PRIMARY_BITS];
    uint32_t fixed_dist[1u << EQ_DIST_PRIMARY_BITS];
    uint32_t litlen[EQ_LITLEN_TABLE_SIZE];
    uint32_t dist[EQ_DIST_TABLE_SIZE];
} inflate_state;

static inline uint64_t load_le64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t value;
    memcpy(&value, p, sizeof value);
    return value;
#else
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--)
        value = (value << 8) | p[i];
    return value;
#endif
}

/* Buffers at least 56 bits, enough for a length code, a distance code and
 * their extra bits (at most 15 + 5 + 15 + 13 = 48 bits). Past the end of
 * the input it loads zero bytes and counts them in `padding`, so decoding
 * never reads out of bounds. A stream that needs those bits is truncated,
 * which shows as count < padding. */
static inline void refill(bit_reader *reader)
{
    if (reader->in_size - reader->in_pos >= 8) {
        /* Load 8 bytes, but advance only by the whole bytes that fit above
         * the buffered bits. The bits above `count` are then the start of
         * in[in_pos], which the next load ORs in again at the same place. */
        reader->bits |= load_le64(reader->in + reader->in_pos) << reader->count;
        reader->in_pos += (63 - reader->count) >> 3;
        reader->count |= 56;
        return;
    }
    while (reader->count < 56) {
        uint64_t byte = 0;
        if (reader->in_pos < reader->in_size)
            byte = reader->in[reader->in_pos++];
        else
            reader->padding += 8;
        reader->bits |= byte << reader->count;
        reader->count += 8;
    }
}

static inline unsigned peek_bits(const bit_reader *reader, unsigned n)
{
    return (unsigned)(reader->bits & ((UINT64_C(1) << n) - 1));
}

static inline void consume_bits(bit_reader *reader, unsigned n)
{
    reader->bits >>= n;
    reader->count -= n;
}

static inline int is_truncated(const bit_reader *reader)
{
    return reader->count < reader->padding;
}

/* Position in the named file of the byte that holds the next unread bit. */
static size_t byte_position(const inflate_state *s, const bit_reader *reader)
{
    if (is_truncated(reader))
        return s->offset + reader->in_size;
    return s->offset + reader->in_pos - (reader->count - reader->padding) / 8;
}

static eq_status stream_error(const inflate_state *s, const bit_reader *reader, const char *format, ...)
    EQ_PRINTF(3, 4);

static eq_status stream_error(const inflate_state *s, const bit_reader *reader, const char *format, ...)
{
    char detail[256];
    va_list args;

    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    return eq_error(EQ_ERR_FORMAT, "%s: corrupt deflate data at byte %zu: %s", s->name,
                    byte_position(s, reader), detail);
}

static eq_status truncated_error(const inflate_state *s)
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
        return stream_error(s, reader, "the output size overflows size_t");
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

static void init_templates(inflate_state *s)
{
    for (unsigned symbol = 0; symbol < 256; symbol++)
        s->litlen_templates[symbol] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_SYMBOL, 0, symbol);
    s->litlen_templates[256] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_END, 0, 256);
    for (unsigned i = 0; i < 29; i++)
        s->litlen_templates[257 + i] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_BASE, length_extra[i], length_base[i]);
    for (unsigned symbol = 286; symbol < LITLEN_SYMBOLS; symbol++)
        s->litlen_templates[symbol] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_INVALID, 0, symbol);

    for (unsigned i = 0; i < 30; i++)
        s->dist_templates[i] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_BASE, dist_extra[i], dist_base[i]);
    for (unsigned symbol = 30; symbol < DIST_SYMBOLS; symbol++)
        s->dist_templates[symbol] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_INVALID, 0, symbol);
}

/* The fixed codes of RFC 1951, section 3.2.6. Both are complete and at most
 * 9 bits long, so the builds cannot fail and need no subtables. */
static void build_fixed_tables(inflate_state *s)
{
    uint8_t lengths[LITLEN_SYMBOLS];

    memset(lengths, 8, 144);
    memset(lengths + 144, 9, 256 - 144);
    memset(lengths + 256, 7, 280 - 256);
    memset(lengths + 280, 8, LITLEN_SYMBOLS - 280);
    eq_huffman_build(lengths, LITLEN_SYMBOLS, s->litlen_templates, EQ_LITLEN_PRIMARY_BITS,
                     s->fixed_litlen, 1u << EQ_LITLEN_PRIMARY_BITS);

    memset(lengths, 5, DIST_SYMBOLS);
    eq_huffman_build(lengths, DIST_SYMBOLS, s->dist_templates, EQ_DIST_PRIMARY_BITS,
                     s->fixed_dist, 1u << EQ_DIST_PRIMARY_BITS);
    s->fixed_built = 1;
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
        return truncated_error(s);
    if (length != (~complement & 0xffffu))
        return stream_error(s, reader,
                            "stored block length %u does not match its complement 0x%04x, expected 0x%04x",
                            length, complement, ~length & 0xffffu);

    /* Hand the whole bytes still buffered back to the input and copy the
     * block straight from it. */
    reader->in_pos -= (reader->count - reader->padding) / 8;
    reader->bits = 0;
    reader->count = 0;
    reader->padding = 0;
    if (reader->in_size - reader->in_pos < length)
        return truncated_error(s);
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
            status = truncated_error(s);
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
                status = stream_error(s, &reader, "invalid literal/length symbol %u", eq_huffman_value(entry));
            else
                status = stream_error(s, &reader, "invalid literal/length code");
            break;
        }

        unsigned length = eq_huffman_value(entry) + peek_bits(&reader, eq_huffman_extra(entry));
        consume_bits(&reader, eq_huffman_extra(entry));
        entry = decode_entry(&reader, dist, EQ_DIST_PRIMARY_BITS);
        consume_bits(&reader, eq_huffman_length(entry));
        if (eq_huffman_kind(entry) != EQ_HUFFMAN_BASE) {
            if (is_truncated(&reader))
                status = truncated_error(s);
            else if (eq_huffman_kind(entry) == EQ_HUFFMAN_INVALID)
                status = stream_error(s, &reader, "invalid distance symbol %u", eq_huffman_value(entry));
            else
                status = stream_error(s, &reader, "invalid distance code");
            break;
        }
        size_t distance = eq_huffman_value(entry) + peek_bits(&reader, eq_huffman_extra(entry));
        consume_bits(&reader, eq_huffman_extra(entry));
        if (is_truncated(&reader)) {
            status = truncated_error(s);
            break;
        }
        if (distance > size - s->window_start) {
            status = stream_error(s, &reader, "distance %zu is too far back, only %zu bytes of output precede it",
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

/* Reads the code lengths of a dynamic block and builds s->litlen and s->dist. */
static eq_status read_dynamic_tables(inflate_state *s)
{
    bit_reader *reader = &s->reader;
    uint8_t codelen_lengths[CODELEN_SYMBOLS] = { 0 };
    uint32_t codelen_templates[CODELEN_SYMBOLS];
    uint32_t codelen_table[EQ_CODELEN_TABLE_SIZE];
    uint8_t lengths[286 + DIST_SYMBOLS];
    const char *reason;

    refill(reader);
    unsigned litlen_count = peek_bits(reader, 5) + 257;
    consume_bits(reader, 5);
    unsigned dist_count = peek_bits(reader, 5) + 1;
    consume_bits(reader, 5);
    unsigned codelen_count = peek_bits(reader, 4) + 4;
    consume_bits(reader, 4);
    if (is_truncated(reader))
        return truncated_error(s);
    if (litlen_count > 286)
        return stream_error(s, reader, "dynamic block header declares %u literal/length codes, expected at most 286",
                            litlen_count);

    for (unsigned i = 0; i < codelen_count; i++) {
        refill(reader);
        codelen_lengths[codelen_order[i]] = (uint8_t)peek_bits(reader, 3);
        consume_bits(reader, 3);
    }
    if (is_truncated(reader))
        return truncated_error(s);
    for (unsigned symbol = 0; symbol < CODELEN_SYMBOLS; symbol++)
        codelen_templates[symbol] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_SYMBOL, 0, symbol);
    reason = eq_huffman_build(codelen_lengths, CODELEN_SYMBOLS, codelen_templates, EQ_CODELEN_PRIMARY_BITS,
                              codelen_table, EQ_CODELEN_TABLE_SIZE);
    if (reason)
        return stream_error(s, reader, "invalid code length code lengths: %s", reason);

    /* Symbols 16 to 18 repeat a length; a run may cross from the
     * literal/length lengths into the distance lengths. */
    unsigned total = litlen_count + dist_count;
    for (unsigned i = 0; i < total;) {
        refill(reader);
        uint32_t entry = codelen_table[peek_bits(reader, EQ_CODELEN_PRIMARY_BITS)];
        consume_bits(reader, eq_huffman_length(entry));
        if (is_truncated(reader))
            return truncated_error(s);
        if (eq_huffman_kind(entry) != EQ_HUFFMAN_SYMBOL)
            return stream_error(s, reader, "invalid code length code");

        unsigned symbol = eq_huffman_value(entry);
        if (symbol < 16) {
            lengths[i++] = (uint8_t)symbol;
            continue;
        }
        unsigned repeat;
        uint8_t value = 0;
        if (symbol == 16) {
            if (i == 0)
                return stream_error(s, reader, "code length repeat (symbol 16) with no previous length");
            value = lengths[i - 1];
            repeat = 3 + peek_bits(reader, 2);
            consume_bits(reader, 2);
        } else if (symbol == 17) {
            repeat = 3 + peek_bits(reader, 3);
            consume_bits(reader, 3);
        } else {
            repeat = 11 + peek_bits(reader, 7);
            consume_bits(reader, 7);
        }
        if (is_truncated(reader))
            return truncated_error(s);
        if (repeat > total - i)
            return stream_error(s, reader, "code length repeat of %u at length %u overruns the %u code lengths",
                                repeat, i, total);
        memset(lengths + i, value, repeat);
        i += repeat;
    }

    if (lengths[256] == 0)
        return stream_error(s, reader, "the literal/length code has no end-of-block code (symbol 256)");
    reason = eq_huffman_build(lengths, litlen_count, s->litlen_templates, EQ_LITLEN_PRIMARY_BITS, s->litlen,
                              EQ_LITLEN_TABLE_SIZE);
    if (reason)
        return stream_error(s, reader, "invalid literal/length code lengths: %s", reason);
    reason = eq_huffman_build(lengths + litlen_count, dist_count, s->dist_templates, EQ_DIST_PRIMARY_BITS, s->dist,
                              EQ_DIST_TABLE_SIZE);
    if (reason)
        return stream_error(s, reader, "invalid distance code lengths: %s", reason);
    return EQ_OK;
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
    init_templates(s);

    eq_status status = EQ_OK;
    unsigned final = 0;
    while (status == EQ_OK && !final) {
        bit_reader *reader = &s->reader;
        refill(reader);
        final = peek_bits(reader, 1);
        unsigned type = peek_bits(reader, 3) >> 1;
        consume_bits(reader, 3);
        if (is_truncated(reader)) {
            status = truncated_error(s);
            break;
        }

        switch (type) {
        case 0:
            status = decode_stored_block(s);
            break;
        case 1:
            if (!s->fixed_built)
                build_fixed_tables(s);
            status = decode_huffman_block(s, s->fixed_litlen, s->fixed_dist);
            break;
        case 2:
            status = read_dynamic_tables(s);
            if (status == EQ_OK)
                status = decode_huffman_block(s, s->litlen, s->dist);
            break;
        default:
            status = stream_error(s, reader, "invalid block type 3");
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
