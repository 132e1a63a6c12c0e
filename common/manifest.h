/* manifest.h — the canonical binary encoding of a file's manifest.
 *
 * A manifest lists a file's chunks in order; its file id is the SHA-256 of its encoding, so the
 * encoding is canonical: one manifest has exactly one valid encoding, and decode rejects every
 * other byte string. Layout (all integers little-endian), version 1:
 *
 *   0   4  magic "CHPM"
 *   4   1  version (1)
 *   5   1  flags (0; reserved)
 *   6   2  reserved (0)
 *   8   4  chunk_size: power of two, CHP_CHUNK_MIN..CHP_CHUNK_MAX
 *   12  8  total_size: bytes of stored (encrypted) content, <= CHP_MANIFEST_MAX_TOTAL
 *   20  4  chunk_count: exactly ceil(total_size / chunk_size)
 *   24  4  meta_len: <= CHP_MANIFEST_MAX_META
 *   28  32*chunk_count  chunk addresses (SHA-256 of each chunk's stored bytes)
 *   ..  meta_len        opaque metadata, encrypted by the client
 *
 * Decode allocates nothing and never reads past len; the decoded struct points into the caller's
 * buffer (borrowed: valid while that buffer is). Functions are pure; any thread.
 */
#ifndef CHP_MANIFEST_H
#define CHP_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"

#define CHP_MANIFEST_VERSION    1
#define CHP_MANIFEST_HEADER     28
#define CHP_CHUNK_MIN           (64u * 1024)
#define CHP_CHUNK_MAX           (8u * 1024 * 1024)
#define CHP_CHUNK_DEFAULT       (1024u * 1024)
#define CHP_MANIFEST_MAX_META   (64u * 1024)
#define CHP_MANIFEST_MAX_CHUNKS (1u << 20)
#define CHP_MANIFEST_MAX_TOTAL  ((uint64_t)1 << 40) /* 1 TiB */

struct chp_manifest {
        uint32_t version;
        uint32_t chunk_size;
        uint64_t total_size;
        uint32_t chunk_count;
        uint32_t meta_len;
        const uint8_t *addrs; /* chunk_count * CHP_HASH_BYTES, borrowed (unused when 0 chunks) */
        const uint8_t *meta;  /* meta_len bytes, borrowed (may be NULL when meta_len is 0) */
};

/* Number of chunks a file of total_size bytes has at chunk_size: ceil(total / chunk); 0 when
 * chunk_size is 0. Note the limits combine: at 64 KiB chunks a file holds at most 64 GiB. */
uint64_t chp_manifest_chunk_count(uint64_t total_size, uint32_t chunk_size);

/* Length of chunk index i of the file m describes (the last one may be shorter); 0 when i is
 * out of range. */
uint32_t chp_manifest_chunk_len(const struct chp_manifest *m, uint32_t i);

/* Checks every field of m against the rules above. Returns 0 or -EINVAL. */
__attribute__((warn_unused_result)) int chp_manifest_check(const struct chp_manifest *m);

/* Bytes the encoding of m takes (m must pass chp_manifest_check). */
size_t chp_manifest_encoded_size(const struct chp_manifest *m);

/* Encodes m into buf. Returns the bytes written, -EINVAL if m is invalid, -ENOSPC if cap is too
 * small (nothing useful is written then). */
__attribute__((warn_unused_result)) ssize_t chp_manifest_encode(const struct chp_manifest *m,
                                                                uint8_t *buf, size_t cap);

/* Decodes exactly len bytes. Returns len, or -EBADMSG for any malformed, truncated, oversized or
 * non-canonical input (including trailing bytes); *out is filled only on success. */
__attribute__((warn_unused_result)) ssize_t chp_manifest_decode(const uint8_t *buf, size_t len,
                                                                struct chp_manifest *out /* out */);

/* File id of an encoded manifest: SHA-256 of the encoding (not validated: decode first). */
__attribute__((warn_unused_result)) int chp_manifest_id(const uint8_t *buf, size_t len,
                                                        uint8_t id[CHP_HASH_BYTES] /* out */);

#endif
