/* Decoder state and the bit reader shared by the deflate block decoders. */
#ifndef EQ_DATA_INFLATE_STATE_H
#define EQ_DATA_INFLATE_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "data/huffman.h"
#include "data/inflate.h"

#define MAX_MATCH_LENGTH 258
#define LITLEN_SYMBOLS 288
#define DIST_SYMBOLS 32
#define CODELEN_SYMBOLS 19

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

/* Sets an EQ_ERR_FORMAT message that names the stream and the byte position. */
eq_status eq_inflate_stream_error(const inflate_state *s, const bit_reader *reader, const char *format, ...)
    EQ_PRINTF(3, 4);

/* Sets the EQ_ERR_FORMAT message for input that ends inside the stream. */
eq_status eq_inflate_truncated_error(const inflate_state *s);

/* Fills the symbol templates, which every table build needs. */
void eq_inflate_init_templates(inflate_state *s);

/* Builds s->fixed_litlen and s->fixed_dist. */
void eq_inflate_build_fixed_tables(inflate_state *s);

/* Reads the code lengths of a dynamic block and builds s->litlen and s->dist. */
eq_status eq_inflate_read_dynamic_tables(inflate_state *s);

#endif
