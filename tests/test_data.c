/* Tests for CRC-32, inflate, gzip, the IDX reader and the MNIST loader. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, unlink, opendir */

#include <setjmp.h>
#include <stdarg.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <unistd.h>

#include "equivar.h"
#include "equivar/data.h"
#include "testutil.h"

/* Made with gzip 1.12:
 *   printf 'equivariant, equivariant, equivariant networks\n' | gzip -9 -n
 * gzip chose a single fixed-Huffman block. */
static const uint8_t fixed_gz[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x4b, 0x2d,
    0x2c, 0xcd, 0x2c, 0x4b, 0x2c, 0xca, 0x4c, 0xcc, 0x2b, 0xd1, 0x51, 0x48,
    0xc5, 0xc1, 0x51, 0xc8, 0x4b, 0x2d, 0x29, 0xcf, 0x2f, 0xca, 0x2e, 0xe6,
    0x02, 0x00, 0xe4, 0x6f, 0x00, 0x0e, 0x2f, 0x00, 0x00, 0x00,
};
static const char fixed_text[] = "equivariant, equivariant, equivariant networks\n";

/* Made with gzip 1.12 from 64 lines of text, which dynamic_text() rebuilds:
 *   for i in $(seq 0 63); do
 *       echo "rotation $((i % 4)) of digit $((i % 10)) is class $(( (i*7) % 10 ))"
 *   done | gzip -9 -n
 * gzip chose a single dynamic-Huffman block. */
static const uint8_t dynamic_gz[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xed, 0xd2,
    0x3b, 0x0a, 0x42, 0x41, 0x0c, 0x85, 0xe1, 0xde, 0x55, 0x64, 0x09, 0x93,
    0xe4, 0x3e, 0x97, 0x73, 0x51, 0x94, 0x01, 0x71, 0xe0, 0xce, 0xec, 0x1f,
    0x6d, 0xe4, 0x58, 0x04, 0x4e, 0x6b, 0x91, 0x2e, 0xc5, 0x57, 0x1c, 0x7e,
    0x72, 0xb6, 0x71, 0x8c, 0xda, 0x5e, 0x52, 0xa4, 0xdd, 0xe5, 0x56, 0x1f,
    0x75, 0x7c, 0xce, 0xda, 0xe5, 0xfa, 0x3c, 0x7a, 0x97, 0x72, 0x39, 0xbf,
    0x40, 0x01, 0x14, 0x60, 0x05, 0x30, 0x00, 0x03, 0x98, 0x00, 0x1c, 0xc0,
    0x01, 0x14, 0xe0, 0x67, 0xc3, 0x04, 0xb0, 0x85, 0x1b, 0x66, 0x80, 0x39,
    0xdc, 0xb0, 0x00, 0x58, 0xb8, 0x61, 0x05, 0xd8, 0xc3, 0x0d, 0x1b, 0xc0,
    0x12, 0x6e, 0xd8, 0x01, 0x3c, 0xdc, 0x10, 0x97, 0x74, 0x56, 0xb2, 0xb0,
    0x92, 0xca, 0x4a, 0x1a, 0x2b, 0xe9, 0xac, 0x64, 0x61, 0x25, 0x95, 0x95,
    0x34, 0x56, 0xd2, 0x59, 0xc9, 0xfc, 0xc9, 0xfc, 0xc9, 0xfc, 0xc9, 0xfc,
    0xc9, 0xfc, 0xc9, 0xbf, 0xfd, 0xc9, 0x37, 0x83, 0xae, 0x52, 0x96, 0x40,
    0x08, 0x00, 0x00,
};
#define DYNAMIC_TEXT_SIZE 2112

static size_t dynamic_text(char *buf, size_t size)
{
    size_t used = 0;

    for (int i = 0; i < 64; i++)
        used += (size_t)snprintf(buf + used, size - used, "rotation %d of digit %d is class %d\n",
                                 i % 4, i % 10, (i * 7) % 10);
    return used;
}

/* ---- helpers: buffers, bit writer, gzip wrapper, temporary files ---- */

typedef struct byte_buffer {
    uint8_t data[4096];
    size_t size;
} byte_buffer;

static void append(byte_buffer *b, const void *data, size_t size)
{
    assert_true(b->size + size <= sizeof b->data);
    memcpy(b->data + b->size, data, size);
    b->size += size;
}

static void append_le32(byte_buffer *b, uint32_t value)
{
    uint8_t bytes[4] = { value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24 };
    append(b, bytes, 4);
}

/* Deflate bit packing: fields start at the least significant bit, Huffman
 * codes go most significant bit first. */
typedef struct bit_writer {
    byte_buffer out;
    unsigned bit; /* next bit position in the last byte, 0 when aligned */
} bit_writer;

static void put_bits(bit_writer *w, unsigned value, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        if (w->bit == 0) {
            uint8_t zero = 0;
            append(&w->out, &zero, 1);
        }
        w->out.data[w->out.size - 1] |= (uint8_t)(((value >> i) & 1u) << w->bit);
        w->bit = (w->bit + 1) % 8;
    }
}

static void put_code(bit_writer *w, unsigned code, unsigned length)
{
    for (unsigned i = length; i-- > 0;)
        put_bits(w, (code >> i) & 1u, 1);
}

/* Writes a literal/length symbol in the fixed code of RFC 1951. */
static void put_fixed_symbol(bit_writer *w, unsigned symbol)
{
    if (symbol < 144)
        put_code(w, 0x30 + symbol, 8);
    else if (symbol < 256)
        put_code(w, 0x190 + symbol - 144, 9);
    else if (symbol < 280)
        put_code(w, symbol - 256, 7);
    else
        put_code(w, 0xc0 + symbol - 280, 8);
}

static void put_block_header(bit_writer *w, unsigned final, unsigned type)
{
    put_bits(w, final, 1);
    put_bits(w, type, 2);
}

/* A stored block's LEN and NLEN start at a byte boundary. */
static void put_stored_block(bit_writer *w, unsigned final, const void *data, unsigned length)
{
    put_block_header(w, final, 0);
    w->bit = 0;
    uint8_t lengths[4] = { length & 0xff, length >> 8, ~length & 0xff, (~length >> 8) & 0xff };
    append(&w->out, lengths, 4);
    append(&w->out, data, length);
}

/* Wraps a raw deflate stream in a minimal gzip member whose trailer matches
 * `payload`. */
static void wrap_gzip(byte_buffer *gz, const byte_buffer *deflate, const void *payload, size_t payload_size)
{
    static const uint8_t header[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };

    gz->size = 0;
    append(gz, header, sizeof header);
    append(gz, deflate->data, deflate->size);
    append_le32(gz, eq_crc32(0, payload, payload_size));
    append_le32(gz, (uint32_t)payload_size);
}

/* Stores `data` uncompressed in a gzip member of stored blocks, so that
 * tests can gzip files of any size without a compressor. The caller frees
 * the result. */
static uint8_t *gzip_stored(const uint8_t *data, size_t size, size_t *gz_size)
{
    size_t blocks = size / 65535 + 1;
    uint8_t *gz = malloc(10 + size + 5 * blocks + 8);
    size_t pos = 0;
    static const uint8_t header[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };

    assert_non_null(gz);
    memcpy(gz, header, 10);
    pos = 10;
    for (size_t b = 0; b < blocks; b++) {
        size_t start = b * 65535;
        unsigned length = (unsigned)(size - start < 65535 ? size - start : 65535);
        gz[pos++] = b + 1 == blocks ? 1 : 0;
        gz[pos++] = length & 0xff;
        gz[pos++] = length >> 8;
        gz[pos++] = ~length & 0xff;
        gz[pos++] = (~length >> 8) & 0xff;
        memcpy(gz + pos, data + start, length);
        pos += length;
    }
    uint32_t crc = eq_crc32(0, data, size);
    for (int i = 0; i < 4; i++)
        gz[pos++] = (crc >> (8 * i)) & 0xff;
    for (int i = 0; i < 4; i++)
        gz[pos++] = ((uint32_t)size >> (8 * i)) & 0xff;
    *gz_size = pos;
    return gz;
}

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *file = fopen(path, "rb");
    assert_non_null(file);
    assert_int_equal(fseek(file, 0, SEEK_END), 0);
    long end = ftell(file);
    assert_true(end > 0);
    assert_int_equal(fseek(file, 0, SEEK_SET), 0);
    uint8_t *data = malloc((size_t)end);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)end, file), (size_t)end);
    fclose(file);
    *size = (size_t)end;
    return data;
}

/* Every test gets a fresh temporary directory, removed with its files by
 * the teardown, so that a failed assert leaves nothing behind. */
typedef struct temp_dir {
    char path[4096];
} temp_dir;

static int temp_dir_setup(void **state)
{
    const char *base = getenv("TMPDIR");
    temp_dir *dir = malloc(sizeof *dir);

    if (!dir)
        return -1;
    if (!base || !*base)
        base = "/tmp";
    snprintf(dir->path, sizeof dir->path, "%s/equivar-test-data-XXXXXX", base);
    if (!mkdtemp(dir->path)) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int temp_dir_teardown(void **state)
{
    temp_dir *dir = *state;
    DIR *handle = opendir(dir->path);

    if (handle) {
        struct dirent *entry;
        while ((entry = readdir(handle)) != NULL) {
            char path[8192];
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir->path, entry->d_name);
            unlink(path);
        }
        closedir(handle);
    }
    int rc = rmdir(dir->path);
    free(dir);
    return rc;
}

/* Writes a file in the test's temporary directory and returns its path in
 * a static buffer. */
static const char *write_temp(void **state, const char *name, const void *data, size_t size)
{
    static char path[8192];
    const temp_dir *dir = *state;

    snprintf(path, sizeof path, "%s/%s", dir->path, name);
    FILE *file = fopen(path, "wb");
    assert_non_null(file);
    assert_int_equal(fwrite(data, 1, size, file), size);
    assert_int_equal(fclose(file), 0);
    return path;
}

/* Builds an IDX file image: magic bytes 00 00 08 <rank>, big-endian dims,
 * then `payload` bytes of value `fill`. The caller frees the result. */
static uint8_t *make_idx(size_t rank, const uint32_t *dims, size_t payload, uint8_t fill, size_t *size)
{
    size_t header = 4 + 4 * rank;
    uint8_t *data = malloc(header + payload);

    assert_non_null(data);
    data[0] = 0;
    data[1] = 0;
    data[2] = 0x08;
    data[3] = (uint8_t)rank;
    for (size_t d = 0; d < rank; d++) {
        data[4 + 4 * d] = dims[d] >> 24;
        data[5 + 4 * d] = (dims[d] >> 16) & 0xff;
        data[6 + 4 * d] = (dims[d] >> 8) & 0xff;
        data[7 + 4 * d] = dims[d] & 0xff;
    }
    memset(data + header, fill, payload);
    *size = header + payload;
    return data;
}

static void assert_error_contains(const char *fragment)
{
    if (!strstr(eq_last_error(), fragment))
        fail_msg("error message \"%s\" does not contain \"%s\"", eq_last_error(), fragment);
}

/* ---- CRC-32 ---- */

static void crc32_known_values(void **state)
{
    (void)state;
    const uint8_t *check = (const uint8_t *)"123456789";

    /* The standard check value of CRC-32/ISO-HDLC. */
    assert_int_equal(eq_crc32(0, check, 9), 0xcbf43926u);
    assert_int_equal(eq_crc32(0, NULL, 0), 0);
    assert_int_equal(eq_crc32(eq_crc32(0, check, 4), check + 4, 5), 0xcbf43926u);

    /* The trailer that gzip wrote for fixed_text. */
    uint32_t crc = eq_crc32(0, (const uint8_t *)fixed_text, strlen(fixed_text));
    assert_int_equal(crc, 0x0e006fe4u);
}

static void crc32_chunking_invariant(void **state)
{
    (void)state;
    uint8_t data[1000];

    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    uint32_t whole = eq_crc32(0, data, sizeof data);
    for (size_t split = 0; split <= 17; split++) {
        uint32_t parts = eq_crc32(eq_crc32(0, data, split), data + split, sizeof data - split);
        assert_int_equal(parts, whole);
    }
}

/* ---- inflate: the three block types ---- */

static void gzip_fixed_huffman_block(void **state)
{
    (void)state;
    uint8_t *out = NULL;
    size_t size = 0;

    assert_int_equal((fixed_gz[10] >> 1) & 3, 1);
    assert_int_equal(eq_gzip_decompress(fixed_gz, sizeof fixed_gz, "fixed", &out, &size), EQ_OK);
    assert_int_equal(size, strlen(fixed_text));
    assert_memory_equal(out, fixed_text, size);
    free(out);
}

static void gzip_dynamic_huffman_block(void **state)
{
    (void)state;
    char expected[DYNAMIC_TEXT_SIZE + 1];
    uint8_t *out = NULL;
    size_t size = 0;

    assert_int_equal(dynamic_text(expected, sizeof expected), DYNAMIC_TEXT_SIZE);
    assert_int_equal((dynamic_gz[10] >> 1) & 3, 2);
    assert_int_equal(eq_gzip_decompress(dynamic_gz, sizeof dynamic_gz, "dynamic", &out, &size), EQ_OK);
    assert_int_equal(size, DYNAMIC_TEXT_SIZE);
    assert_memory_equal(out, expected, size);
    free(out);
}

static void gzip_stored_blocks(void **state)
{
    (void)state;
    bit_writer w = { 0 };
    byte_buffer gz = { 0 };
    const char *expected = "stored, then empty, then last";
    uint8_t *out = NULL;
    size_t size = 0;

    put_stored_block(&w, 0, "stored, ", 8);
    put_stored_block(&w, 0, "", 0);
    put_stored_block(&w, 0, "then empty, ", 12);
    put_stored_block(&w, 1, "then last", 9);
    wrap_gzip(&gz, &w.out, expected, strlen(expected));

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "stored", &out, &size), EQ_OK);
    assert_int_equal(size, strlen(expected));
    assert_memory_equal(out, expected, size);
    free(out);
}

static void gzip_mixed_block_types(void **state)
{
    (void)state;
    bit_writer w = { 0 };
    byte_buffer gz = { 0 };
    const char *expected = "abababab|raw|aba";
    uint8_t *out = NULL;
    size_t size = 0;

    /* Fixed block: "ab", then a match of length 6 at distance 2 (length
     * symbol 260, distance symbol 1), which overlaps its own output. */
    put_block_header(&w, 0, 1);
    put_fixed_symbol(&w, 'a');
    put_fixed_symbol(&w, 'b');
    put_fixed_symbol(&w, 260);
    put_code(&w, 1, 5);
    put_fixed_symbol(&w, 256);
    /* The stored block starts mid-byte and must skip to the boundary. */
    put_stored_block(&w, 0, "|raw|", 5);
    /* A match of length 3 (symbol 257) at distance 13 (symbol 7 with two
     * extra bits 0) reaches back across the stored block to the start. */
    put_block_header(&w, 1, 1);
    put_fixed_symbol(&w, 257);
    put_code(&w, 7, 5);
    put_bits(&w, 0, 2);
    put_fixed_symbol(&w, 256);
    wrap_gzip(&gz, &w.out, expected, strlen(expected));

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "mixed", &out, &size), EQ_OK);
    assert_int_equal(size, strlen(expected));
    assert_memory_equal(out, expected, size);
    free(out);
}

static void gzip_long_match_distances(void **state)
{
    (void)state;
    bit_writer w = { 0 };
    byte_buffer gz = { 0 };
    char expected[64];
    uint8_t *out = NULL;
    size_t size = 0;

    /* "0123456789" then a 20-byte match at distance 10 (length symbol 269
     * with 2 extra bits = 1 gives 19 + 1 = 20; distance symbol 6 with one
     * extra bit = 1 gives 9 + 1 = 10): chunked copies with distance >= 8. */
    put_block_header(&w, 1, 1);
    for (char c = '0'; c <= '9'; c++)
        put_fixed_symbol(&w, (unsigned)c);
    put_fixed_symbol(&w, 269);
    put_bits(&w, 1, 2);
    put_code(&w, 6, 5);
    put_bits(&w, 1, 1);
    put_fixed_symbol(&w, 256);
    snprintf(expected, sizeof expected, "012345678901234567890123456789");
    wrap_gzip(&gz, &w.out, expected, strlen(expected));

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "long match", &out, &size), EQ_OK);
    assert_int_equal(size, 30);
    assert_memory_equal(out, expected, size);
    free(out);
}

/* ---- gzip headers and members ---- */

static void gzip_all_header_fields(void **state)
{
    (void)state;
    byte_buffer gz = { 0 };
    uint8_t *out = NULL;
    size_t size = 0;
    /* FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT */
    const uint8_t header[10] = { 0x1f, 0x8b, 8, 0x1f, 0x78, 0x56, 0x34, 0x12, 2, 3 };
    const uint8_t extra[6] = { 4, 0, 'E', 'Q', 0, 0 };

    append(&gz, header, sizeof header);
    append(&gz, extra, sizeof extra);
    append(&gz, "digits.txt", 11);
    append(&gz, "made by hand", 13);
    uint32_t header_crc = eq_crc32(0, gz.data, gz.size);
    uint8_t crc16[2] = { header_crc & 0xff, (header_crc >> 8) & 0xff };
    append(&gz, crc16, 2);
    size_t crc16_pos = gz.size - 2;
    append(&gz, fixed_gz + 10, sizeof fixed_gz - 10);

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "all fields", &out, &size), EQ_OK);
    assert_int_equal(size, strlen(fixed_text));
    assert_memory_equal(out, fixed_text, size);
    free(out);

    gz.data[crc16_pos] ^= 0x01;
    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "all fields", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("all fields: gzip header CRC16 mismatch");
    assert_null(out);
    assert_int_equal(size, 0);
}

static void gzip_rejects_bad_headers(void **state)
{
    (void)state;
    uint8_t gz[sizeof fixed_gz];
    uint8_t *out = NULL;
    size_t size = 0;

    memcpy(gz, fixed_gz, sizeof gz);
    gz[1] = 0x8c;
    assert_int_equal(eq_gzip_decompress(gz, sizeof gz, "magic", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("magic: not a gzip member at byte 0: found 0x1f 0x8c, expected 0x1f 0x8b");

    memcpy(gz, fixed_gz, sizeof gz);
    gz[2] = 7;
    assert_int_equal(eq_gzip_decompress(gz, sizeof gz, "method", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("compression method 7");

    memcpy(gz, fixed_gz, sizeof gz);
    gz[3] = 0x20;
    assert_int_equal(eq_gzip_decompress(gz, sizeof gz, "flags", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("reserved gzip header flags 0x20");

    /* FNAME set, but no zero byte ends the name before the input ends. */
    const uint8_t unterminated[14] = { 0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c', 'd' };
    assert_int_equal(eq_gzip_decompress(unterminated, sizeof unterminated, "name", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("FNAME");

    assert_int_equal(eq_gzip_decompress(gz, 0, "empty", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("empty: empty input");
    assert_null(out);
}

static void gzip_concatenated_members(void **state)
{
    (void)state;
    byte_buffer gz = { 0 };
    char expected[sizeof fixed_text + DYNAMIC_TEXT_SIZE + 1];
    uint8_t *out = NULL;
    size_t size = 0;

    append(&gz, fixed_gz, sizeof fixed_gz);
    append(&gz, dynamic_gz, sizeof dynamic_gz);
    strcpy(expected, fixed_text);
    dynamic_text(expected + strlen(fixed_text), sizeof expected - strlen(fixed_text));

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "two members", &out, &size), EQ_OK);
    assert_int_equal(size, strlen(fixed_text) + DYNAMIC_TEXT_SIZE);
    assert_memory_equal(out, expected, size);
    free(out);
}

static void gzip_rejects_trailing_garbage(void **state)
{
    (void)state;
    byte_buffer gz = { 0 };
    uint8_t *out = NULL;
    size_t size = 0;

    append(&gz, fixed_gz, sizeof fixed_gz);
    append(&gz, "junk", 4);
    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "garbage", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("garbage: 4 bytes of trailing garbage at byte 46");
    assert_null(out);

    gz.size = sizeof fixed_gz;
    append(&gz, "", 1);
    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "zero", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("1 bytes of trailing garbage");
}

static void gzip_rejects_bad_crc(void **state)
{
    (void)state;
    uint8_t gz[sizeof fixed_gz];
    uint8_t *out = NULL;
    size_t size = 0;

    memcpy(gz, fixed_gz, sizeof gz);
    gz[sizeof gz - 8] ^= 0xff;
    assert_int_equal(eq_gzip_decompress(gz, sizeof gz, "crc.gz", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("crc.gz: CRC32 mismatch, trailer says 0x0e006f1b, data has 0x0e006fe4");
    assert_null(out);
    assert_int_equal(size, 0);
}

static void gzip_rejects_bad_length(void **state)
{
    (void)state;
    uint8_t gz[sizeof fixed_gz];
    uint8_t *out = NULL;
    size_t size = 0;

    memcpy(gz, fixed_gz, sizeof gz);
    gz[sizeof gz - 4] += 1;
    assert_int_equal(eq_gzip_decompress(gz, sizeof gz, "isize.gz", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("isize.gz: length mismatch, trailer says 48 bytes");
    assert_error_contains("data has 47");
    assert_null(out);
}

static void gzip_rejects_every_truncation(void **state)
{
    (void)state;
    uint8_t *out = NULL;
    size_t size = 0;

    for (size_t length = 1; length < sizeof dynamic_gz; length++) {
        eq_status status = eq_gzip_decompress(dynamic_gz, length, "cut", &out, &size);
        if (status != EQ_ERR_FORMAT || !strstr(eq_last_error(), "truncated"))
            fail_msg("prefix of %zu bytes: %s, \"%s\"", length, eq_status_string(status), eq_last_error());
        assert_null(out);
    }
}

static void gzip_bit_flips_detected(void **state)
{
    (void)state;
    uint8_t gz[sizeof dynamic_gz];
    char expected[DYNAMIC_TEXT_SIZE + 1];
    uint8_t *out = NULL;
    size_t size = 0;
    size_t accepted = 0;

    dynamic_text(expected, sizeof expected);
    /* A flip in the deflate data or the trailer either fails or, in the
     * unused bits after the final block, changes nothing. */
    for (size_t byte = 10; byte < sizeof gz; byte++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            memcpy(gz, dynamic_gz, sizeof gz);
            gz[byte] ^= (uint8_t)(1u << bit);
            eq_status status = eq_gzip_decompress(gz, sizeof gz, "flip", &out, &size);
            if (status == EQ_OK) {
                assert_int_equal(size, DYNAMIC_TEXT_SIZE);
                assert_memory_equal(out, expected, size);
                free(out);
                accepted++;
                continue;
            }
            if (status != EQ_ERR_FORMAT)
                fail_msg("flip of bit %u in byte %zu: %s", bit, byte, eq_status_string(status));
            assert_null(out);
        }
    }
    /* Only the padding bits of the last deflate byte can be harmless. */
    assert_true(accepted < 8);
}

static void gzip_output_limit(void **state)
{
    (void)state;
    uint8_t *out = NULL;
    size_t size = 0;

    assert_int_equal(eq_gzip_decompress_max(dynamic_gz, sizeof dynamic_gz, "limit", DYNAMIC_TEXT_SIZE, &out, &size),
                     EQ_OK);
    assert_int_equal(size, DYNAMIC_TEXT_SIZE);
    free(out);

    assert_int_equal(eq_gzip_decompress_max(dynamic_gz, sizeof dynamic_gz, "limit", DYNAMIC_TEXT_SIZE - 1, &out,
                                            &size), EQ_ERR_FORMAT);
    assert_error_contains("limit: the decompressed data exceeds the limit of 2111 bytes");
    assert_null(out);

    assert_int_equal(eq_gzip_decompress_max(dynamic_gz, sizeof dynamic_gz, "limit", 100, &out, &size),
                     EQ_ERR_FORMAT);
    assert_error_contains("exceeds the limit of 100 bytes");
}

static void gzip_rejects_null_arguments(void **state)
{
    (void)state;
    uint8_t *out = (uint8_t *)1;
    size_t size = 1;

    assert_int_equal(eq_gzip_decompress(NULL, 10, "x", &out, &size), EQ_ERR_INVALID_ARGUMENT);
    assert_error_contains("eq_gzip_decompress");
    assert_null(out);
    assert_int_equal(size, 0);
    assert_int_equal(eq_gzip_decompress(fixed_gz, sizeof fixed_gz, NULL, &out, &size), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_gzip_decompress(fixed_gz, sizeof fixed_gz, "x", NULL, &size), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_gzip_decompress(fixed_gz, sizeof fixed_gz, "x", &out, NULL), EQ_ERR_INVALID_ARGUMENT);
}

/* ---- corrupt deflate streams, built bit by bit ---- */

/* Decompresses a raw deflate stream wrapped in gzip and expects
 * EQ_ERR_FORMAT with `fragment` in the message. */
static void expect_corrupt(const bit_writer *w, const char *fragment)
{
    byte_buffer gz = { 0 };
    uint8_t *out = NULL;
    size_t size = 0;

    wrap_gzip(&gz, &w->out, "", 0);
    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "corrupt.gz", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("corrupt.gz: corrupt deflate data at byte");
    assert_error_contains(fragment);
    assert_null(out);
}

static void inflate_rejects_block_type_3(void **state)
{
    (void)state;
    bit_writer w = { 0 };

    put_block_header(&w, 1, 3);
    put_bits(&w, 0, 13);
    expect_corrupt(&w, "invalid block type 3");
}

static void inflate_rejects_far_distance(void **state)
{
    (void)state;
    bit_writer w = { 0 };

    /* One literal, then a match at distance 2 (distance symbol 1). */
    put_block_header(&w, 1, 1);
    put_fixed_symbol(&w, 'x');
    put_fixed_symbol(&w, 257);
    put_code(&w, 1, 5);
    put_fixed_symbol(&w, 256);
    expect_corrupt(&w, "distance 2 is too far back");
}

static void inflate_window_ends_at_member(void **state)
{
    (void)state;
    bit_writer w = { 0 };
    byte_buffer second = { 0 }, gz = { 0 };
    uint8_t *out = NULL;
    size_t size = 0;

    /* The second member starts with a match at distance 1, which would
     * reach into the output of the first member. */
    put_block_header(&w, 1, 1);
    put_fixed_symbol(&w, 257);
    put_code(&w, 0, 5);
    put_fixed_symbol(&w, 256);
    wrap_gzip(&second, &w.out, "\n\n\n", 3);
    append(&gz, fixed_gz, sizeof fixed_gz);
    append(&gz, second.data, second.size);

    assert_int_equal(eq_gzip_decompress(gz.data, gz.size, "members", &out, &size), EQ_ERR_FORMAT);
    assert_error_contains("members: corrupt deflate data at byte");
    assert_error_contains("distance 1 is too far back");
    assert_null(out);
}

static void inflate_rejects_unused_symbols(void **state)
{
    (void)state;
    bit_writer w = { 0 };

    put_block_header(&w, 1, 1);
    put_fixed_symbol(&w, 286);
    put_fixed_symbol(&w, 256);
    expect_corrupt(&w, "invalid literal/length symbol 286");

    w = (bit_writer){ 0 };
    put_block_header(&w, 1, 1);
    put_fixed_symbol(&w, 'x');
    put_fixed_symbol(&w, 257);
    put_code(&w, 30, 5);
    put_fixed_symbol(&w, 256);
    expect_corrupt(&w, "invalid distance symbol 30");
}

static void inflate_rejects_stored_length(void **state)
{
    (void)state;
    bit_writer w = { 0 };
    const uint8_t lengths[4] = { 3, 0, 0xfc, 0xfe };

    put_block_header(&w, 1, 0);
    w.bit = 0;
    append(&w.out, lengths, 4);
    append(&w.out, "abc", 3);
    expect_corrupt(&w, "stored block length 3 does not match its complement 0xfefc, expected 0xfffc");
}

/* Writes a dynamic block header with HLIT = 257, HDIST = 1 and the code
 * length code lengths of symbols 16, 17, 18, 0, ... in that order. */
static void put_dynamic_header(bit_writer *w, const unsigned *codelen_lengths, unsigned count)
{
    put_block_header(w, 1, 2);
    put_bits(w, 0, 5);
    put_bits(w, 0, 5);
    put_bits(w, count - 4, 4);
    for (unsigned i = 0; i < count; i++)
        put_bits(w, codelen_lengths[i], 3);
}

static void inflate_rejects_bad_code_lengths(void **state)
{
    (void)state;
    bit_writer w = { 0 };

    /* All 19 code length codes 1 bit long: over-subscribed. */
    const unsigned all_ones[19] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    put_dynamic_header(&w, all_ones, 19);
    expect_corrupt(&w, "invalid code length code lengths: over-subscribed");

    /* Three 2-bit codes leave one 2-bit code unused: incomplete. */
    const unsigned three_twos[4] = { 2, 2, 2, 0 };
    w = (bit_writer){ 0 };
    put_dynamic_header(&w, three_twos, 4);
    expect_corrupt(&w, "invalid code length code lengths: incomplete");

    /* Symbols 0 (code 0) and 16 (code 1). A repeat as the first length has
     * nothing to repeat. */
    const unsigned zero_and_16[4] = { 1, 0, 0, 1 };
    w = (bit_writer){ 0 };
    put_dynamic_header(&w, zero_and_16, 4);
    put_code(&w, 1, 1);
    put_bits(&w, 0, 2);
    expect_corrupt(&w, "code length repeat (symbol 16) with no previous length");

    /* Symbols 0 (code 0) and 18 (code 1): 138 + 120 zero lengths fill all
     * 258 lengths, so symbol 256 has no code. */
    const unsigned zero_and_18[4] = { 0, 0, 1, 1 };
    w = (bit_writer){ 0 };
    put_dynamic_header(&w, zero_and_18, 4);
    put_code(&w, 1, 1);
    put_bits(&w, 127, 7);
    put_code(&w, 1, 1);
    put_bits(&w, 109, 7);
    expect_corrupt(&w, "no end-of-block code");

    /* 138 + 138 zero lengths overrun the 258 lengths. */
    w = (bit_writer){ 0 };
    put_dynamic_header(&w, zero_and_18, 4);
    put_code(&w, 1, 1);
    put_bits(&w, 127, 7);
    put_code(&w, 1, 1);
    put_bits(&w, 127, 7);
    expect_corrupt(&w, "code length repeat of 138 at length 138 overruns the 258 code lengths");
}

static void inflate_rejects_bad_litlen_lengths(void **state)
{
    (void)state;
    bit_writer w = { 0 };

    /* Code length symbols 18, 0 and 1 get the canonical codes 0, 10 and 11.
     * Literals 0 to 2 and symbol 256 get length 1, the rest length 0: four
     * 1-bit codes over-subscribe the literal/length code. */
    const unsigned lengths[18] = { 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2 };
    put_dynamic_header(&w, lengths, 18);
    for (int i = 0; i < 3; i++)
        put_code(&w, 3, 2); /* length 1 */
    put_code(&w, 0, 1);     /* 138 zeros: symbols 3 to 140 */
    put_bits(&w, 127, 7);
    put_code(&w, 0, 1);     /* 115 zeros: symbols 141 to 255 */
    put_bits(&w, 104, 7);
    put_code(&w, 3, 2);     /* symbol 256: length 1 */
    put_code(&w, 3, 2);     /* the one distance code: length 1 */
    expect_corrupt(&w, "invalid literal/length code lengths: over-subscribed");
}

/* ---- IDX ---- */

static void idx_raw_and_gzip_identical(void **state)
{
    size_t gz_size = 0, raw_size = 0;
    const char *gz_path = eq_test_data_path("t10k-images-idx3-ubyte.gz");
    uint8_t *gz = read_whole(gz_path, &gz_size);
    uint8_t *raw = NULL;
    eq_idx *from_gz = NULL, *from_raw = NULL;

    assert_int_equal(eq_gzip_decompress(gz, gz_size, gz_path, &raw, &raw_size), EQ_OK);
    assert_int_equal(raw_size, 16 + 10000 * 28 * 28);
    const char *raw_path = write_temp(state, "t10k-images-idx3-ubyte", raw, raw_size);

    assert_int_equal(eq_idx_read(raw_path, &from_raw), EQ_OK);
    assert_int_equal(eq_idx_read(gz_path, &from_gz), EQ_OK);
    assert_int_equal(from_gz->magic, 0x00000803);
    assert_int_equal(from_raw->magic, from_gz->magic);
    assert_int_equal(from_gz->rank, 3);
    assert_int_equal(from_raw->rank, 3);
    for (size_t d = 0; d < 4; d++)
        assert_int_equal(from_raw->dims[d], from_gz->dims[d]);
    assert_int_equal(from_gz->dims[0], 10000);
    assert_int_equal(from_gz->dims[1], 28);
    assert_int_equal(from_gz->dims[2], 28);
    assert_int_equal(from_gz->size, 10000 * 28 * 28);
    assert_int_equal(from_raw->size, from_gz->size);
    assert_memory_equal(from_raw->data, from_gz->data, from_gz->size);
    assert_memory_equal(from_raw->data, raw + 16, from_raw->size);

    eq_idx_destroy(from_gz);
    eq_idx_destroy(from_raw);
    eq_idx_destroy(NULL);
    free(raw);
    free(gz);
}

static void idx_rejects_bad_headers(void **state)
{
    const uint32_t dims[3] = { 3, 28, 28 };
    size_t size = 0;
    uint8_t *data = make_idx(3, dims, 3 * 28 * 28, 0, &size);
    eq_idx *idx = (eq_idx *)1;
    const char *path;

    data[1] = 0x12;
    path = write_temp(state, "magic", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_null(idx);
    assert_error_contains(path);
    assert_error_contains("not an IDX file: magic number 0x00120803");

    data[1] = 0;
    data[2] = 0x0d;
    path = write_temp(state, "type", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("IDX data type 0x0d is not supported, expected 0x08");

    data[2] = 0x08;
    data[3] = 5;
    path = write_temp(state, "rank5", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("IDX rank 5, expected 1 to 4");

    data[3] = 0;
    path = write_temp(state, "rank0", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("IDX rank 0, expected 1 to 4");

    data[3] = 3;
    data[11] = 0; /* dims[1] = 28 -> 0 */
    path = write_temp(state, "zero", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("IDX dimension 1 is 0");

    path = write_temp(state, "short", data, 10);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("truncated IDX header: expected 16 bytes for rank 3, found 10");
    free(data);

    /* 2^32 - 1 four times overflows a 64-bit size_t. */
    const uint32_t huge[4] = { 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu };
    data = make_idx(4, huge, 0, 0, &size);
    path = write_temp(state, "huge", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("overflows size_t");
    free(data);
}

static void idx_rejects_truncated_data(void **state)
{
    const uint32_t dims[3] = { 3, 28, 28 };
    size_t size = 0;
    uint8_t *data = make_idx(3, dims, 3 * 28 * 28, 0, &size);
    eq_idx *idx = NULL;

    const char *path = write_temp(state, "truncated", data, 16 + 1000);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_null(idx);
    assert_error_contains(path);
    assert_error_contains("truncated: expected 2368 bytes, found 1016");

    size_t gz_size = 0;
    uint8_t *gz = gzip_stored(data, 16 + 1000, &gz_size);
    path = write_temp(state, "truncated.gz", gz, gz_size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("truncated: expected 2368 bytes, found 1016 after gzip decompression");
    free(gz);
    free(data);
}

static void idx_rejects_trailing_bytes(void **state)
{
    const uint32_t dims[1] = { 100 };
    size_t size = 0;
    uint8_t *data = make_idx(1, dims, 105, 3, &size);
    eq_idx *idx = NULL;

    const char *path = write_temp(state, "trailing", data, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_null(idx);
    assert_error_contains("5 trailing bytes: expected 108 bytes, found 113");

    path = write_temp(state, "exact", data, size - 5);
    assert_int_equal(eq_idx_read(path, &idx), EQ_OK);
    assert_int_equal(idx->magic, 0x00000801);
    assert_int_equal(idx->rank, 1);
    assert_int_equal(idx->dims[0], 100);
    assert_int_equal(idx->size, 100);
    assert_int_equal(idx->data[99], 3);
    eq_idx_destroy(idx);
    free(data);
}

static void idx_rejects_corrupt_gzip(void **state)
{
    size_t size = 0;
    uint8_t *gz = read_whole(eq_test_data_path("t10k-labels-idx1-ubyte.gz"), &size);
    eq_idx *idx = NULL;
    const char *path;

    gz[size - 8] ^= 0x01;
    path = write_temp(state, "bad-crc.gz", gz, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_null(idx);
    assert_error_contains(path);
    assert_error_contains("CRC32 mismatch");
    gz[size - 8] ^= 0x01;

    gz[size - 2] ^= 0x01;
    path = write_temp(state, "bad-length.gz", gz, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains("length mismatch, trailer says 75544 bytes (ISIZE, modulo 2^32), data has 10008");
    gz[size - 2] ^= 0x01;

    path = write_temp(state, "half.gz", gz, size / 2);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains(path);
    assert_error_contains("truncated deflate data");

    /* Scrambled bytes in the middle of the Huffman data. */
    for (size_t i = size / 2; i < size / 2 + 16; i++)
        gz[i] ^= 0x5a;
    path = write_temp(state, "scrambled.gz", gz, size);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_FORMAT);
    assert_error_contains(path);
    free(gz);
}

static void idx_rejects_missing_file(void **state)
{
    const temp_dir *dir = *state;
    char path[8192];
    eq_idx *idx = (eq_idx *)1;

    snprintf(path, sizeof path, "%s/no-such-file.gz", dir->path);
    assert_int_equal(eq_idx_read(path, &idx), EQ_ERR_IO);
    assert_null(idx);
    assert_error_contains("cannot open '");
    assert_error_contains(path);
    assert_error_contains("No such file or directory");

    assert_int_equal(eq_idx_read(dir->path, &idx), EQ_ERR_IO);
    assert_error_contains("Is a directory");
}

static void idx_rejects_null_arguments(void **state)
{
    (void)state;
    eq_idx *idx = (eq_idx *)1;

    assert_int_equal(eq_idx_read(NULL, &idx), EQ_ERR_INVALID_ARGUMENT);
    assert_null(idx);
    assert_error_contains("eq_idx_read: path or out is NULL");
    assert_int_equal(eq_idx_read(eq_test_data_path("t10k-labels-idx1-ubyte.gz"), NULL), EQ_ERR_INVALID_ARGUMENT);
}

/* ---- MNIST ---- */

static void mnist_train_split(void **state)
{
    (void)state;
    eq_mnist *mnist = NULL;
    const int32_t first[5] = { 5, 0, 4, 1, 9 };

    assert_int_equal(eq_mnist_load_split(EQ_TEST_DATA_DIR, "train", &mnist), EQ_OK);
    assert_int_equal(mnist->count, 60000);
    assert_int_equal(mnist->rows, 28);
    assert_int_equal(mnist->cols, 28);
    assert_int_equal((uintptr_t)mnist->images % 64, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mnist->labels[i], first[i]);

    size_t count = mnist->count * 28 * 28;
    double sum = 0.0, sum_squares = 0.0;
    float max = 0.0f, min = 1.0f;
    for (size_t i = 0; i < count; i++) {
        double x = mnist->images[i];
        sum += x;
        sum_squares += x * x;
        if (mnist->images[i] > max)
            max = mnist->images[i];
        if (mnist->images[i] < min)
            min = mnist->images[i];
    }
    double mean = sum / (double)count;
    double std = sqrt(sum_squares / (double)count - mean * mean);
    /* 0.13066 and 0.30811, which round to the usual 0.1307 and 0.3081. */
    assert_true(fabs(mean - 0.1307) < 0.00005);
    assert_true(fabs(std - 0.3081) < 0.00005);
    assert_true(min == 0.0f);
    assert_true(max == 1.0f);

    size_t histogram[10] = { 0 };
    for (size_t i = 0; i < mnist->count; i++)
        histogram[mnist->labels[i]]++;
    /* The training set has 5421 fives, its rarest digit, and 6742 ones, its most common. */
    assert_int_equal(histogram[5], 5421);
    assert_int_equal(histogram[1], 6742);
    eq_mnist_destroy(mnist);
    eq_mnist_destroy(NULL);
}

static void mnist_test_split_pixels(void **state)
{
    (void)state;
    eq_mnist *mnist = NULL;
    eq_idx *raw = NULL;
    const int32_t first[5] = { 7, 2, 1, 0, 4 };

    assert_int_equal(eq_mnist_load_split(EQ_TEST_DATA_DIR, "t10k", &mnist), EQ_OK);
    assert_int_equal(mnist->count, 10000);
    assert_int_equal(mnist->rows, 28);
    assert_int_equal(mnist->cols, 28);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mnist->labels[i], first[i]);

    /* Each pixel is exactly the float nearest to byte / 255. */
    assert_int_equal(eq_idx_read(eq_test_data_path("t10k-images-idx3-ubyte.gz"), &raw), EQ_OK);
    assert_int_equal(raw->size, mnist->count * 28 * 28);
    for (size_t i = 0; i < raw->size; i++) {
        if (mnist->images[i] != (float)raw->data[i] / 255.0f)
            fail_msg("pixel %zu: %.9g, expected %u / 255", i, mnist->images[i], raw->data[i]);
    }
    eq_idx_destroy(raw);
    eq_mnist_destroy(mnist);
}

static void mnist_split_falls_back_to_raw(void **state)
{
    const temp_dir *dir = *state;
    const char *names[2] = { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" };
    eq_mnist *mnist = NULL;

    for (int f = 0; f < 2; f++) {
        char gz_name[64];
        size_t gz_size = 0, raw_size = 0;
        uint8_t *raw = NULL;
        snprintf(gz_name, sizeof gz_name, "%s.gz", names[f]);
        uint8_t *gz = read_whole(eq_test_data_path(gz_name), &gz_size);
        assert_int_equal(eq_gzip_decompress(gz, gz_size, gz_name, &raw, &raw_size), EQ_OK);
        write_temp(state, names[f], raw, raw_size);
        free(raw);
        free(gz);
    }

    assert_int_equal(eq_mnist_load_split(dir->path, "t10k", &mnist), EQ_OK);
    assert_int_equal(mnist->count, 10000);
    assert_int_equal(mnist->labels[0], 7);
    eq_mnist_destroy(mnist);

    assert_int_equal(eq_mnist_load_split(dir->path, "train", &mnist), EQ_ERR_IO);
    assert_null(mnist);
    assert_error_contains("train-images-idx3-ubyte.gz' or '");
    assert_error_contains(dir->path);
}

static void mnist_rejects_swapped_files(void **state)
{
    (void)state;
    const char *labels = eq_test_data_path("t10k-labels-idx1-ubyte.gz");
    char labels_path[4096];
    eq_mnist *mnist = (eq_mnist *)1;

    snprintf(labels_path, sizeof labels_path, "%s", labels);
    assert_int_equal(eq_mnist_load(labels_path, labels_path, &mnist), EQ_ERR_FORMAT);
    assert_null(mnist);
    assert_error_contains(labels_path);
    assert_error_contains("IDX magic number 0x00000801, expected 0x00000803");

    const char *images = eq_test_data_path("t10k-images-idx3-ubyte.gz");
    char images_path[4096];
    snprintf(images_path, sizeof images_path, "%s", images);
    assert_int_equal(eq_mnist_load(images_path, images_path, &mnist), EQ_ERR_FORMAT);
    assert_error_contains("IDX magic number 0x00000803, expected 0x00000801");
}

static void mnist_rejects_count_mismatch(void **state)
{
    const uint32_t image_dims[3] = { 2, 28, 28 };
    const uint32_t label_dims[1] = { 3 };
    size_t image_size = 0, label_size = 0;
    uint8_t *images = make_idx(3, image_dims, 2 * 28 * 28, 0, &image_size);
    uint8_t *labels = make_idx(1, label_dims, 3, 1, &label_size);
    char images_path[8192];
    eq_mnist *mnist = NULL;

    snprintf(images_path, sizeof images_path, "%s", write_temp(state, "images", images, image_size));
    const char *labels_path = write_temp(state, "labels", labels, label_size);
    assert_int_equal(eq_mnist_load(images_path, labels_path, &mnist), EQ_ERR_FORMAT);
    assert_null(mnist);
    assert_error_contains("has 2 images but");
    assert_error_contains("has 3 labels, expected equal counts");
    free(images);
    free(labels);
}

static void mnist_rejects_bad_label(void **state)
{
    const uint32_t image_dims[3] = { 5, 28, 28 };
    const uint32_t label_dims[1] = { 5 };
    size_t image_size = 0, label_size = 0;
    uint8_t *images = make_idx(3, image_dims, 5 * 28 * 28, 255, &image_size);
    uint8_t *labels = make_idx(1, label_dims, 5, 0, &label_size);
    char images_path[8192];
    eq_mnist *mnist = NULL;

    labels[8 + 0] = 1;
    labels[8 + 1] = 2;
    labels[8 + 2] = 9;
    labels[8 + 3] = 10;
    labels[8 + 4] = 4;
    snprintf(images_path, sizeof images_path, "%s", write_temp(state, "images", images, image_size));
    const char *labels_path = write_temp(state, "labels", labels, label_size);
    assert_int_equal(eq_mnist_load(images_path, labels_path, &mnist), EQ_ERR_FORMAT);
    assert_null(mnist);
    assert_error_contains(labels_path);
    assert_error_contains("label 10 at index 3, expected 0 to 9");

    labels[8 + 3] = 3;
    labels_path = write_temp(state, "labels", labels, label_size);
    assert_int_equal(eq_mnist_load(images_path, labels_path, &mnist), EQ_OK);
    assert_int_equal(mnist->count, 5);
    assert_int_equal(mnist->labels[2], 9);
    assert_true(mnist->images[5 * 28 * 28 - 1] == 1.0f);
    eq_mnist_destroy(mnist);
    free(images);
    free(labels);
}

static void mnist_rejects_bad_arguments(void **state)
{
    const temp_dir *dir = *state;
    const char *labels = eq_test_data_path("t10k-labels-idx1-ubyte.gz");
    char labels_path[4096], missing[8192];
    eq_mnist *mnist = (eq_mnist *)1;

    snprintf(labels_path, sizeof labels_path, "%s", labels);
    assert_int_equal(eq_mnist_load(NULL, labels_path, &mnist), EQ_ERR_INVALID_ARGUMENT);
    assert_null(mnist);
    assert_error_contains("eq_mnist_load");
    assert_int_equal(eq_mnist_load(labels_path, NULL, &mnist), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_mnist_load(labels_path, labels_path, NULL), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_mnist_load_split(NULL, "train", &mnist), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_mnist_load_split(EQ_TEST_DATA_DIR, NULL, &mnist), EQ_ERR_INVALID_ARGUMENT);
    assert_int_equal(eq_mnist_load_split(EQ_TEST_DATA_DIR, "train", NULL), EQ_ERR_INVALID_ARGUMENT);

    assert_int_equal(eq_mnist_load_split(EQ_TEST_DATA_DIR, "valid", &mnist), EQ_ERR_INVALID_ARGUMENT);
    assert_error_contains("split 'valid' is not supported");

    snprintf(missing, sizeof missing, "%s/missing-images.gz", dir->path);
    assert_int_equal(eq_mnist_load(missing, labels_path, &mnist), EQ_ERR_IO);
    assert_null(mnist);
    assert_error_contains(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32_known_values),
        cmocka_unit_test(crc32_chunking_invariant),
        cmocka_unit_test(gzip_fixed_huffman_block),
        cmocka_unit_test(gzip_dynamic_huffman_block),
        cmocka_unit_test(gzip_stored_blocks),
        cmocka_unit_test(gzip_mixed_block_types),
        cmocka_unit_test(gzip_long_match_distances),
        cmocka_unit_test(gzip_all_header_fields),
        cmocka_unit_test(gzip_rejects_bad_headers),
        cmocka_unit_test(gzip_concatenated_members),
        cmocka_unit_test(gzip_rejects_trailing_garbage),
        cmocka_unit_test(gzip_rejects_bad_crc),
        cmocka_unit_test(gzip_rejects_bad_length),
        cmocka_unit_test(gzip_rejects_every_truncation),
        cmocka_unit_test(gzip_bit_flips_detected),
        cmocka_unit_test(gzip_output_limit),
        cmocka_unit_test(gzip_rejects_null_arguments),
        cmocka_unit_test(inflate_rejects_block_type_3),
        cmocka_unit_test(inflate_rejects_far_distance),
        cmocka_unit_test(inflate_window_ends_at_member),
        cmocka_unit_test(inflate_rejects_unused_symbols),
        cmocka_unit_test(inflate_rejects_stored_length),
        cmocka_unit_test(inflate_rejects_bad_code_lengths),
        cmocka_unit_test(inflate_rejects_bad_litlen_lengths),
        cmocka_unit_test_setup_teardown(idx_raw_and_gzip_identical, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(idx_rejects_bad_headers, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(idx_rejects_truncated_data, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(idx_rejects_trailing_bytes, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(idx_rejects_corrupt_gzip, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(idx_rejects_missing_file, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test(idx_rejects_null_arguments),
        cmocka_unit_test(mnist_train_split),
        cmocka_unit_test(mnist_test_split_pixels),
        cmocka_unit_test_setup_teardown(mnist_split_falls_back_to_raw, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test(mnist_rejects_swapped_files),
        cmocka_unit_test_setup_teardown(mnist_rejects_count_mismatch, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(mnist_rejects_bad_label, temp_dir_setup, temp_dir_teardown),
        cmocka_unit_test_setup_teardown(mnist_rejects_bad_arguments, temp_dir_setup, temp_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
