/* Data: the IDX file format (raw or gzip), gzip decompression and MNIST. */
#ifndef EQUIVAR_DATA_H
#define EQUIVAR_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/status.h"
#include "equivar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decompresses gzip data (RFC 1952, deflate per RFC 1951) and verifies the
 * CRC32 and length trailer of each member. Like the gzip tool, it accepts
 * several concatenated members and returns their outputs one after the
 * other. Anything after the last member other than another member is an
 * error, trailing zero bytes included. The header fields FEXTRA, FNAME and
 * FCOMMENT are skipped, and FHCRC is verified.
 * `name` (not NULL) is used in error messages: a file name, or any label.
 * On success *out is a malloc'ed buffer of *out_size bytes that the caller
 * frees with free(). On failure *out is NULL and *out_size is 0.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT (a NULL argument), EQ_ERR_FORMAT
 * or EQ_ERR_OUT_OF_MEMORY. EQ_ERR_FORMAT covers empty input, a bad header, a
 * corrupt or truncated stream, a CRC32 or length mismatch, trailing garbage
 * and an output size that overflows size_t. Its message names `name` and the
 * expected and found values. */
eq_status eq_gzip_decompress(const uint8_t *data, size_t size, const char *name,
                             uint8_t **out, size_t *out_size);

/* As eq_gzip_decompress, but output longer than max_size bytes in total is
 * EQ_ERR_FORMAT. Deflate can expand data up to 1032 times, so this bounds the
 * memory that untrusted input can claim. */
eq_status eq_gzip_decompress_max(const uint8_t *data, size_t size, const char *name,
                                 size_t max_size, uint8_t **out, size_t *out_size);

/* Returns the CRC-32 (ISO-HDLC, as in gzip and zlib) of data, continuing
 * from `crc` (0 to start). */
uint32_t eq_crc32(uint32_t crc, const uint8_t *data, size_t size);

/* An IDX file of unsigned bytes: dims[0] items of dims[1] x ... bytes. */
typedef struct eq_idx {
    uint32_t magic;    /* 0x00000801 labels, 0x00000803 images */
    size_t rank;       /* number of dimensions, 1 to 4 */
    size_t dims[4];    /* dims[rank] to dims[3] are 1 */
    size_t size;       /* product of dims, bytes in data */
    uint8_t *data;
} eq_idx;

/* Reads an IDX file of type unsigned byte, raw or gzip-compressed (detected
 * by the magic bytes 1f 8b, not the file name). Checks every header field
 * and that the file contains exactly the bytes the header promises.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_IO (the file cannot be
 * opened or read), EQ_ERR_FORMAT (the message names the file and the
 * expected and actual values) or EQ_ERR_OUT_OF_MEMORY.
 * The caller frees *out with eq_idx_destroy. */
eq_status eq_idx_read(const char *path, eq_idx **out);

/* Frees an IDX file from eq_idx_read; NULL is a no-op. */
void eq_idx_destroy(eq_idx *idx);

/* A labelled image set: images (count, 1, rows, cols) scaled to [0, 1]. */
typedef struct eq_mnist {
    size_t count;
    size_t rows, cols;
    float *images;   /* count * rows * cols floats, 64-byte aligned */
    int32_t *labels; /* count labels, each in [0, 10) */
} eq_mnist;

/* Loads an image file (magic 0x00000803, rank 3) and a label file (magic
 * 0x00000801, rank 1) with the same item count and labels 0..9.
 * Returns EQ_OK or the codes of eq_idx_read, plus EQ_ERR_FORMAT for a count
 * mismatch or a label outside 0..9 (the message names the file, the index
 * and the value). The caller frees *out with eq_mnist_destroy. */
eq_status eq_mnist_load(const char *images_path, const char *labels_path, eq_mnist **out);

/* Loads the standard files of the "train" or "t10k" split from a directory:
 * <dir>/<split>-images-idx3-ubyte.gz and <dir>/<split>-labels-idx1-ubyte.gz.
 * For each file that does not exist with .gz, it reads the name without .gz.
 * Returns the codes of eq_mnist_load, plus EQ_ERR_INVALID_ARGUMENT for
 * another split and EQ_ERR_IO naming both paths if neither file exists. */
eq_status eq_mnist_load_split(const char *dir, const char *split, eq_mnist **out);

/* Frees a set from eq_mnist_load or eq_mnist_load_split; NULL is a no-op. */
void eq_mnist_destroy(eq_mnist *mnist);

#ifdef __cplusplus
}
#endif

#endif
