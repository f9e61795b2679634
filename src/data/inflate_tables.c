/* Deflate code tables: the fixed codes and the code lengths of dynamic blocks. */
#include "data/inflate_state.h"

#include <assert.h>

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

void eq_inflate_init_templates(inflate_state *s)
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
void eq_inflate_build_fixed_tables(inflate_state *s)
{
    uint8_t lengths[LITLEN_SYMBOLS];
    const char *reason;

    memset(lengths, 8, 144);
    memset(lengths + 144, 9, 256 - 144);
    memset(lengths + 256, 7, 280 - 256);
    memset(lengths + 280, 8, LITLEN_SYMBOLS - 280);
    reason = eq_huffman_build(lengths, LITLEN_SYMBOLS, s->litlen_templates, EQ_LITLEN_PRIMARY_BITS,
                              s->fixed_litlen, 1u << EQ_LITLEN_PRIMARY_BITS);
    assert(reason == NULL);

    memset(lengths, 5, DIST_SYMBOLS);
    reason = eq_huffman_build(lengths, DIST_SYMBOLS, s->dist_templates, EQ_DIST_PRIMARY_BITS,
                              s->fixed_dist, 1u << EQ_DIST_PRIMARY_BITS);
    assert(reason == NULL);
    (void)reason;
    s->fixed_built = 1;
}

eq_status eq_inflate_read_dynamic_tables(inflate_state *s)
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
        return eq_inflate_truncated_error(s);
    if (litlen_count > 286)
        return eq_inflate_stream_error(s, reader, "dynamic block header declares %u literal/length codes, expected at most 286",
                            litlen_count);

    for (unsigned i = 0; i < codelen_count; i++) {
        refill(reader);
        codelen_lengths[codelen_order[i]] = (uint8_t)peek_bits(reader, 3);
        consume_bits(reader, 3);
    }
    if (is_truncated(reader))
        return eq_inflate_truncated_error(s);
    for (unsigned symbol = 0; symbol < CODELEN_SYMBOLS; symbol++)
        codelen_templates[symbol] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_SYMBOL, 0, symbol);
    reason = eq_huffman_build(codelen_lengths, CODELEN_SYMBOLS, codelen_templates, EQ_CODELEN_PRIMARY_BITS,
                              codelen_table, EQ_CODELEN_TABLE_SIZE);
    if (reason)
        return eq_inflate_stream_error(s, reader, "invalid code length code lengths: %s", reason);

    /* Symbols 16 to 18 repeat a length. A run may cross from the
     * literal/length lengths into the distance lengths. */
    unsigned total = litlen_count + dist_count;
    for (unsigned i = 0; i < total;) {
        refill(reader);
        uint32_t entry = codelen_table[peek_bits(reader, EQ_CODELEN_PRIMARY_BITS)];
        consume_bits(reader, eq_huffman_length(entry));
        if (is_truncated(reader))
            return eq_inflate_truncated_error(s);
        if (eq_huffman_kind(entry) != EQ_HUFFMAN_SYMBOL)
            return eq_inflate_stream_error(s, reader, "invalid code length code");

        unsigned symbol = eq_huffman_value(entry);
        if (symbol < 16) {
            lengths[i++] = (uint8_t)symbol;
            continue;
        }
        unsigned repeat;
        uint8_t value = 0;
        if (symbol == 16) {
            if (i == 0)
                return eq_inflate_stream_error(s, reader, "code length repeat (symbol 16) with no previous length");
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
            return eq_inflate_truncated_error(s);
        if (repeat > total - i)
            return eq_inflate_stream_error(s, reader, "code length repeat of %u at length %u overruns the %u code lengths",
                                repeat, i, total);
        memset(lengths + i, value, repeat);
        i += repeat;
    }

    if (lengths[256] == 0)
        return eq_inflate_stream_error(s, reader, "the literal/length code has no end-of-block code (symbol 256)");
    reason = eq_huffman_build(lengths, litlen_count, s->litlen_templates, EQ_LITLEN_PRIMARY_BITS, s->litlen,
                              EQ_LITLEN_TABLE_SIZE);
    if (reason)
        return eq_inflate_stream_error(s, reader, "invalid literal/length code lengths: %s", reason);
    reason = eq_huffman_build(lengths + litlen_count, dist_count, s->dist_templates, EQ_DIST_PRIMARY_BITS, s->dist,
                              EQ_DIST_TABLE_SIZE);
    if (reason)
        return eq_inflate_stream_error(s, reader, "invalid distance code lengths: %s", reason);
    return EQ_OK;
}
