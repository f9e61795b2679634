/* The checkpoint file format shared by the writer and the reader (internal):
 * magic, little-endian encoding and the fixed sizes. The layout itself is
 * documented in include/equivar/checkpoint.h. */
#ifndef EQ_TRAIN_CHECKPOINT_FORMAT_H
#define EQ_TRAIN_CHECKPOINT_FORMAT_H

#include <stdint.h>
#include <string.h>

static const uint8_t checkpoint_magic[8] = { 'E', 'Q', 'V', 'R', 'C', 'K', 'P', 'T' };

/* magic, version, reserved, file size */
#define HEADER_SIZE 24
#define CRC_SIZE 4

static inline void put_u32(uint8_t *out, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static inline void put_u64(uint8_t *out, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static inline uint32_t get_u32(const uint8_t *in)
{
    uint32_t value = 0;

    for (int i = 3; i >= 0; i--)
        value = (value << 8) | in[i];
    return value;
}

static inline uint64_t get_u64(const uint8_t *in)
{
    uint64_t value = 0;

    for (int i = 7; i >= 0; i--)
        value = (value << 8) | in[i];
    return value;
}

static inline void put_float(uint8_t *out, float value)
{
    uint32_t bits;

    memcpy(&bits, &value, sizeof bits);
    put_u32(out, bits);
}

static inline float get_float(const uint8_t *in)
{
    uint32_t bits = get_u32(in);
    float value;

    memcpy(&value, &bits, sizeof value);
    return value;
}


#endif
