/* Checkpoints: a network's parameters in a versioned binary file.
 *
 * File format, version 1, every integer little-endian:
 *   magic        8 bytes  "EQVRCKPT"
 *   version      u32      1
 *   reserved     u32      0
 *   file size    u64      total bytes, CRC included
 *   description  u64 length, then the bytes of eq_layer_describe (no NUL)
 *   metadata     u64 length, then the caller's bytes (no NUL)
 *   param count  u64
 *   per parameter, in eq_layer_param order:
 *     name       u64 length, then the bytes
 *     shape      4 x u64 (N, C, H, W)
 *     values     N*C*H*W float32, IEEE 754 binary32
 *   crc32        u32      eq_crc32 of every byte before it
 */
#ifndef EQUIVAR_CHECKPOINT_H
#define EQUIVAR_CHECKPOINT_H

#include "equivar/layer.h"
#include "equivar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EQ_CHECKPOINT_VERSION 1

/* Saves the parameters of `network`, its description and `metadata` (a
 * NUL-terminated string of the caller's choice, e.g. the options that built
 * the network; NULL stores ""). The file is written to "<path>.tmp", flushed
 * to disk and renamed to path, so path contains either the old file or the
 * complete new one.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_IO (the message names the
 * file and the system error) or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_checkpoint_save(eq_layer *network, const char *metadata, const char *path);

/* Loads a checkpoint into `network`. Checks the magic, the version, the file
 * size and the CRC32 (EQ_ERR_FORMAT, naming the file), then that the number
 * of parameters, each parameter's name and shape, and the network
 * description match (EQ_ERR_SHAPE, naming both shapes or both
 * descriptions). The parameters are written only after every check passed,
 * so on any failure the network is unchanged.
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_IO (cannot open or read),
 * EQ_ERR_FORMAT, EQ_ERR_SHAPE or EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_checkpoint_load(eq_layer *network, const char *path);

/* Reads the metadata string and the network description of a checkpoint
 * without a network, after the same file checks as eq_checkpoint_load, so a
 * program can rebuild the network the file was saved from. Either output
 * may be NULL; each non-NULL one receives a malloc'ed NUL-terminated string
 * that the caller frees with free().
 * Returns EQ_OK, EQ_ERR_INVALID_ARGUMENT, EQ_ERR_IO, EQ_ERR_FORMAT or
 * EQ_ERR_OUT_OF_MEMORY. */
eq_status eq_checkpoint_read_metadata(const char *path, char **metadata, char **description);

#ifdef __cplusplus
}
#endif

#endif
