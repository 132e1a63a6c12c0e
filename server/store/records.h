/* records.h — the encoding of every structured value the store keeps in LMDB: a pure codec.
 *
 * Parsers take (buf, len, out), allocate nothing, never read past len, and return the bytes
 * consumed (a record is its whole value, so len) or -EBADMSG when buf is not a valid record; the
 * pointers they fill point into buf, so they live as long as buf does (for an LMDB value: until
 * the next write in its transaction, or its end). Encoders write a record's fixed part into the
 * caller's buffer, which has room for it. No I/O and no state: any thread.
 *
 * All integers in values are little-endian; keys that must sort by number are big-endian.
 *
 *   chunks    addr(32)                    -> kind u8, 0[3], len u32, xxh3 u64, seg u32, 0 u32,
 *                                            offset u64  (32 bytes) [+ inline bytes]
 *   refs      addr(32)                    -> count u64 (absent = 0)
 *   files     file id(32)                 -> ver u8, tenant_len u8, 0 u16, manifest_len u32,
 *                                            created u64, expires u64, size u64, tenant, manifest
 *   uploads   upload id(16)               -> ver u8 (2), tenant_len u8, flags u8,
 *                                            subject_len u8, chunk_size u32, declared u64,
 *                                            created u64, expires u64, meta_len u32,
 *                                            manifest_len u32, file id(32), file_expires u64,
 *                                            tenant, subject, meta, manifest
 *                                            (version 1: byte 3 is 0 and there is no subject;
 *                                            it is read as an empty one)
 *   pending   file id(32)                 -> upload id(16): the upload writing that file
 *   tails     upload id(16) + seq be32    -> bytes past the upload's last whole chunk
 *   upchunks  upload id(16) + index be32  -> addr(32)
 *   expiry    expires be64 + kind u8 + id -> (empty)
 *   segments  seg be32                    -> total u64, live u64, state u32, 0 u32
 *   segidx    seg be32 + offset be64      -> addr(32)
 *   filemeta  file id(32)                 -> tus Upload-Metadata of the first upload with some
 *   tenants   tenant name (1..64 bytes)   -> ver u8, 0[7], stored_bytes u64, files u64,
 *                                            incomplete u64, incomplete_bytes u64, day u64,
 *                                            day_bytes u64  (56 bytes)
 *   orphans   addr(32)                    -> since u64: the audit first found the chunk
 *                                            referenced by nothing at this time (unix s)
 *   meta      name                        -> value ("schema" -> u32)
 */
#ifndef CHP_STORE_RECORDS_H
#define CHP_STORE_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"
#include "store.h"

#define CHP_REC_SCHEMA_VERSION 1

/* ---- chunks ------------------------------------------------------------------------------ */

#define CHP_REC_CHUNK_BYTES  32 /* the fixed part; inline chunks carry their bytes after it */
#define CHP_REC_CHUNK_SEG    1  /* bytes live in the chunk backend, at (seg, offset) */
#define CHP_REC_CHUNK_INLINE 2  /* bytes follow the record */

struct chp_rec_chunk {
        uint8_t kind;
        uint32_t len;
        uint64_t xxh3;
        uint32_t seg;
        uint64_t offset;
        const uint8_t *inline_data; /* CHP_REC_CHUNK_INLINE: into buf; else NULL */
};

__attribute__((warn_unused_result)) ssize_t
chp_rec_chunk_parse(const uint8_t *buf, size_t len, struct chp_rec_chunk *out /* out */);
void chp_rec_chunk_encode(uint8_t out[CHP_REC_CHUNK_BYTES], uint8_t kind, uint32_t len,
                          uint64_t xxh3, uint32_t seg, uint64_t offset);

/* ---- refs -------------------------------------------------------------------------------- */

#define CHP_REC_REFS_BYTES 8

__attribute__((warn_unused_result)) ssize_t chp_rec_refs_parse(const uint8_t *buf, size_t len,
                                                               uint64_t *count /* out */);
void chp_rec_refs_encode(uint8_t out[CHP_REC_REFS_BYTES], uint64_t count);

/* ---- files ------------------------------------------------------------------------------- */

#define CHP_REC_FILE_BYTES 32 /* the fixed part, before tenant and manifest */

struct chp_rec_file {
        uint8_t tenant_len;
        uint32_t manifest_len;
        uint64_t created, expires, size;
        const uint8_t *tenant, *manifest; /* into buf */
};

__attribute__((warn_unused_result)) ssize_t chp_rec_file_parse(const uint8_t *buf, size_t len,
                                                               struct chp_rec_file *out /* out */);
/* Writes the fixed part of a record whose value is CHP_REC_FILE_BYTES + tenant_len +
 * manifest_len bytes; the caller copies tenant and manifest after it. */
void chp_rec_file_encode(uint8_t out[CHP_REC_FILE_BYTES], uint8_t tenant_len, uint32_t manifest_len,
                         uint64_t created, uint64_t expires, uint64_t size);
/* Rewrites the expiry of an encoded file record (at least CHP_REC_FILE_BYTES bytes). */
void chp_rec_file_set_expires(uint8_t *rec, uint64_t expires);

/* ---- uploads ----------------------------------------------------------------------------- */

#define CHP_REC_UPLOAD_BYTES        80 /* the fixed part, before tenant, subject, meta, manifest */
#define CHP_REC_UPLOAD_VERSION      2  /* written; version 1 (no subject) is still read */
#define CHP_REC_UPLOAD_HAS_MANIFEST 1
#define CHP_REC_UPLOAD_COMPLETE     2

struct chp_rec_upload {
        uint8_t flags;
        uint32_t chunk_size, meta_len, manifest_len;
        uint64_t declared, created, expires, file_expires;
        size_t tenant_len, subject_len;
        const uint8_t *file_id, *tenant, *subject, *meta, *manifest; /* into buf */
};

__attribute__((warn_unused_result)) ssize_t
chp_rec_upload_parse(const uint8_t *buf, size_t len, struct chp_rec_upload *out /* out */);
/* Writes the fixed part (CHP_REC_UPLOAD_VERSION) from r (its pointers are not read, except
 * file_id, which may be NULL: zeros); the caller copies tenant, subject, meta and manifest after
 * it. */
void chp_rec_upload_encode(uint8_t out[CHP_REC_UPLOAD_BYTES], const struct chp_rec_upload *r);
/* Sets an encoded upload record's expiry (unix s; 0: never). */
void chp_rec_upload_set_expires(uint8_t *rec, uint64_t expires);
/* Marks an encoded upload record complete, as file_id. */
void chp_rec_upload_set_complete(uint8_t *rec, const uint8_t file_id[CHP_HASH_BYTES]);
/* The public form of a parsed record whose key is id. */
void chp_rec_upload_to_public(const uint8_t id[CHP_UPLOAD_ID_BYTES], const struct chp_rec_upload *r,
                              struct chp_upload *out /* out */);

/* ---- segments ---------------------------------------------------------------------------- */

#define CHP_REC_SEG_BYTES  24
#define CHP_REC_SEG_OPEN   1 /* takes appends */
#define CHP_REC_SEG_SEALED 2 /* takes no more; GC may drop or compact it */
#define CHP_REC_SEGIDX_KEY 12

struct chp_rec_seg {
        uint64_t total, live;
        uint32_t state;
};

/* Parses the value; the state is not checked (verify reports unknown ones). */
__attribute__((warn_unused_result)) ssize_t chp_rec_seg_parse(const uint8_t *buf, size_t len,
                                                              struct chp_rec_seg *out /* out */);
void chp_rec_seg_encode(uint8_t out[CHP_REC_SEG_BYTES], const struct chp_rec_seg *r);
void chp_rec_segidx_key(uint8_t out[CHP_REC_SEGIDX_KEY], uint32_t seg, uint64_t offset);

/* ---- tenants ----------------------------------------------------------------------------- */

#define CHP_REC_TENANT_BYTES   56
#define CHP_REC_TENANT_VERSION 1

__attribute__((warn_unused_result)) ssize_t
chp_rec_tenant_parse(const uint8_t *buf, size_t len, struct chp_tenant_usage *out /* out */);
void chp_rec_tenant_encode(uint8_t out[CHP_REC_TENANT_BYTES], const struct chp_tenant_usage *u);

/* ---- orphans ----------------------------------------------------------------------------- */

#define CHP_REC_ORPHAN_BYTES 8

__attribute__((warn_unused_result)) ssize_t chp_rec_orphan_parse(const uint8_t *buf, size_t len,
                                                                 uint64_t *since /* out */);
void chp_rec_orphan_encode(uint8_t out[CHP_REC_ORPHAN_BYTES], uint64_t since);

/* ---- expiry keys ------------------------------------------------------------------------- */

#define CHP_REC_EXPIRY_FILE    'f'
#define CHP_REC_EXPIRY_UPLOAD  'u'
#define CHP_REC_EXPIRY_KEY_MAX (8 + 1 + CHP_HASH_BYTES)

/* Writes the key (idlen <= CHP_HASH_BYTES) into out and returns its length. */
size_t chp_rec_expiry_key(uint8_t out[CHP_REC_EXPIRY_KEY_MAX], uint64_t expires, char kind,
                          const uint8_t *id, size_t idlen);

#endif
