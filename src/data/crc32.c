/* CRC-32 (ISO-HDLC, as in gzip and zlib), table-driven, eight bytes per step. */
#include "equivar/data.h"

#include <pthread.h>

/* Reflected form of the polynomial 0x04C11DB7. */
#define CRC32_POLYNOMIAL 0xEDB88320u

/* crc_tables[k][b] is the CRC register update for byte b followed by k zero
 * bytes, so eight table lookups advance the CRC over eight bytes at once
 * (the "slicing-by-8" method). */
static uint32_t crc_tables[8][256];
static pthread_once_t crc_tables_once = PTHREAD_ONCE_INIT;

static void crc_tables_init(void)
{
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (CRC32_POLYNOMIAL & (0u - (crc & 1u)));
        crc_tables[0][byte] = crc;
    }
    for (int k = 1; k < 8; k++) {
        for (uint32_t byte = 0; byte < 256; byte++) {
            uint32_t previous = crc_tables[k - 1][byte];
            crc_tables[k][byte] = (previous >> 8) ^ crc_tables[0][previous & 0xff];
        }
    }
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t eq_crc32(uint32_t crc, const uint8_t *data, size_t size)
{
    pthread_once(&crc_tables_once, crc_tables_init);

    /* The register contains the complement of the CRC between calls, so
     * that leading zero bytes still change the result. */
    crc = ~crc;
    while (size >= 8) {
        uint32_t low = crc ^ load_le32(data);
        uint32_t high = load_le32(data + 4);
        crc = crc_tables[7][low & 0xff] ^ crc_tables[6][(low >> 8) & 0xff]
            ^ crc_tables[5][(low >> 16) & 0xff] ^ crc_tables[4][low >> 24]
            ^ crc_tables[3][high & 0xff] ^ crc_tables[2][(high >> 8) & 0xff]
            ^ crc_tables[1][(high >> 16) & 0xff] ^ crc_tables[0][high >> 24];
        data += 8;
        size -= 8;
    }
    while (size > 0) {
        crc = (crc >> 8) ^ crc_tables[0][(crc ^ *data) & 0xff];
        data++;
        size--;
    }
    return ~crc;
}
