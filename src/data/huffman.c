/* Construction of canonical Huffman decoding tables for deflate. */
#include "data/huffman.h"

static unsigned reverse_bits(unsigned code, unsigned length)
{
    unsigned reversed = 0;

    for (unsigned i = 0; i < length; i++) {
        reversed = (reversed << 1) | (code & 1u);
        code >>= 1;
    }
    return reversed;
}

const char *eq_huffman_build(const uint8_t *lengths, unsigned count, const uint32_t *templates,
                             unsigned primary_bits, uint32_t *table, size_t table_size)
{
    unsigned length_counts[EQ_HUFFMAN_MAX_BITS + 1] = { 0 };
    unsigned offsets[EQ_HUFFMAN_MAX_BITS + 2];
    unsigned next_code[EQ_HUFFMAN_MAX_BITS + 1];
    uint16_t sorted[288];
    const uint32_t no_code = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_NO_CODE, 0, 0);
    const size_t primary_size = (size_t)1 << primary_bits;

    if (count > 288 || primary_size > table_size)
        return "more symbols than the table holds";
    for (unsigned s = 0; s < count; s++) {
        if (lengths[s] > EQ_HUFFMAN_MAX_BITS)
            return "a code length above 15";
        length_counts[lengths[s]]++;
    }
    length_counts[0] = 0;

    /* Kraft sum: `available` is the number of unassigned codes of the
     * current length. Negative means two symbols would share a code. */
    int available = 1;
    unsigned used = 0, max_length = 0;
    for (unsigned length = 1; length <= EQ_HUFFMAN_MAX_BITS; length++) {
        available = 2 * available - (int)length_counts[length];
        if (available < 0)
            return "over-subscribed";
        if (length_counts[length] > 0) {
            used += length_counts[length];
            max_length = length;
        }
    }
    if (available > 0 && !(used <= 1 && max_length <= 1))
        return "incomplete";

    /* Symbols in canonical order: by code length, then by symbol. */
    offsets[1] = 0;
    for (unsigned length = 1; length <= EQ_HUFFMAN_MAX_BITS; length++)
        offsets[length + 1] = offsets[length] + length_counts[length];
    for (unsigned s = 0; s < count; s++) {
        if (lengths[s] != 0)
            sorted[offsets[lengths[s]]++] = (uint16_t)s;
    }

    unsigned code = 0;
    for (unsigned length = 1; length <= EQ_HUFFMAN_MAX_BITS; length++) {
        code = (code + length_counts[length - 1]) << 1;
        next_code[length] = code;
    }

    for (size_t i = 0; i < primary_size; i++)
        table[i] = no_code;

    /* Codes taken in canonical order increase when left-aligned, so the
     * long codes that share their first primary_bits bits are consecutive
     * and each group fills one subtable before the next group starts. */
    unsigned sub_bits = max_length > primary_bits ? max_length - primary_bits : 0;
    size_t sub_size = (size_t)1 << sub_bits;
    size_t next_sub = primary_size, sub = 0;
    unsigned current_prefix = ~0u;

    for (unsigned i = 0; i < used; i++) {
        unsigned symbol = sorted[i];
        unsigned length = lengths[symbol];
        unsigned reversed = reverse_bits(next_code[length]++, length);
        uint32_t entry = templates[symbol] | length;

        if (length <= primary_bits) {
            for (size_t index = reversed; index < primary_size; index += (size_t)1 << length)
                table[index] = entry;
            continue;
        }

        unsigned prefix = reversed & (unsigned)(primary_size - 1);
        if (prefix != current_prefix) {
            if (next_sub + sub_size > table_size || next_sub > 0xffff)
                return "more subtables than the table holds";
            current_prefix = prefix;
            sub = next_sub;
            next_sub += sub_size;
            for (size_t j = 0; j < sub_size; j++)
                table[sub + j] = no_code;
            table[prefix] = EQ_HUFFMAN_ENTRY(EQ_HUFFMAN_LINK, 0, sub) | sub_bits;
        }
        for (size_t index = reversed >> primary_bits; index < sub_size;
             index += (size_t)1 << (length - primary_bits))
            table[sub + index] = entry;
    }
    return NULL;
}
