/* Canonical Huffman decoding tables for deflate (RFC 1951, section 3.2.2). */
#ifndef EQ_DATA_HUFFMAN_H
#define EQ_DATA_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

/* A table maps the next `primary_bits` input bits (deflate sends Huffman
 * codes most significant bit first, so a table index is the bit-reversed
 * code) to one 32-bit entry:
 *   bits 0-3   code length, the bits to consume; for a link, the index
 *              width of the subtable
 *   bits 4-7   kind (EQ_HUFFMAN_*)
 *   bits 8-15  extra bits that follow the code (lengths and distances)
 *   bits 16-31 value: literal byte, base length or distance, symbol, or
 *              for a link the offset of the subtable in the same array
 * Codes longer than primary_bits go through a link to a subtable indexed
 * by the bits after the first primary_bits. */
enum {
    EQ_HUFFMAN_SYMBOL = 0,  /* literal byte or code length symbol */
    EQ_HUFFMAN_BASE = 1,    /* match length or distance: value + extra bits */
    EQ_HUFFMAN_END = 2,     /* end of block */
    EQ_HUFFMAN_LINK = 3,    /* subtable */
    EQ_HUFFMAN_INVALID = 4, /* a symbol that deflate never uses, e.g. length symbol 286 */
    EQ_HUFFMAN_NO_CODE = 5  /* no code starts with these bits */
};

#define EQ_HUFFMAN_ENTRY(kind, extra, value) \
    ((uint32_t)(kind) << 4 | (uint32_t)(extra) << 8 | (uint32_t)(value) << 16)

static inline unsigned eq_huffman_length(uint32_t entry) { return entry & 0xf; }
static inline unsigned eq_huffman_kind(uint32_t entry) { return (entry >> 4) & 0xf; }
static inline unsigned eq_huffman_extra(uint32_t entry) { return (entry >> 8) & 0xff; }
static inline unsigned eq_huffman_value(uint32_t entry) { return entry >> 16; }

#define EQ_HUFFMAN_MAX_BITS 15

/* Primary index widths and table sizes. A subtable has 2^(longest code -
 * primary bits) entries, and there is at most one subtable per symbol. That
 * bounds the sizes for 288 literal/length symbols and 32 distance symbols.
 * The 19 code length symbols have codes of at most 7 bits and never need a
 * subtable. */
#define EQ_LITLEN_PRIMARY_BITS 10
#define EQ_LITLEN_TABLE_SIZE ((1u << 10) + 288u * (1u << (15 - 10)))
#define EQ_DIST_PRIMARY_BITS 8
#define EQ_DIST_TABLE_SIZE ((1u << 8) + 32u * (1u << (15 - 8)))
#define EQ_CODELEN_PRIMARY_BITS 7
#define EQ_CODELEN_TABLE_SIZE (1u << 7)

/* Builds the decoding table of the canonical code with the given code
 * lengths (0 = symbol unused, at most 15). templates[s] is the entry of
 * symbol s without its length. A code must be complete, except that zero
 * codes or a single code of length 1 are allowed, as RFC 1951 allows for
 * distance codes. Returns NULL on success, else the reason the lengths are
 * invalid ("over-subscribed", "incomplete"). */
const char *eq_huffman_build(const uint8_t *lengths, unsigned count, const uint32_t *templates,
                             unsigned primary_bits, uint32_t *table, size_t table_size);

#endif
