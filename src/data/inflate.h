/* Raw deflate decoding (RFC 1951), used by the gzip reader. */
#ifndef EQ_DATA_INFLATE_H
#define EQ_DATA_INFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "equivar/status.h"

/* Bytes past the end of the output that the decoder may overwrite, because
 * it copies matches in 8-byte chunks. The buffer capacity always includes
 * this room beyond the bytes in use. */
#define EQ_INFLATE_SLACK 16

/* A growable output buffer, shared by the members of a gzip file. */
typedef struct eq_inflate_output {
    uint8_t *data;   /* malloc'ed, `capacity` bytes, or NULL while capacity is 0 */
    size_t size;     /* bytes of output so far */
    size_t capacity;
    size_t max_size; /* output beyond this many bytes is EQ_ERR_FORMAT */
} eq_inflate_output;

/* Decodes one raw deflate stream that starts at in[0] and appends its output
 * to `out`. Matches may reach back only to the output of this stream, which
 * starts at out->size at the call. `name` and `offset` (the position of in[0]
 * in the named file) appear in error messages. On success *consumed is the
 * number of input bytes that the stream occupies, the last one included even
 * if only some of its bits belong to the stream.
 * Returns EQ_OK, EQ_ERR_FORMAT (corrupt or truncated stream, output beyond
 * out->max_size) or EQ_ERR_OUT_OF_MEMORY. On error `out` still owns its
 * buffer and the caller frees it. */
eq_status eq_inflate(const uint8_t *in, size_t in_size, const char *name, size_t offset,
                     eq_inflate_output *out, size_t *consumed);

#endif
