/* cache.h — the RADOS backend's local read cache: whole chunks as files of DATA/cache, one per
 * chunk, named by the lowercase hex of its address, so that faces splice popular chunks from
 * local pages instead of fetching them from the pool (docs/scale-out.md, "The local store as a
 * read cache").
 *
 * A file is complete or absent: the filler thread writes a temporary name (".tmp-HEX"), checks
 * the bytes against the address (SHA-256) first, fsyncs it and renames it (so that a machine crash
 * never leaves a renamed file of the right size but without its bytes). The cache holds at most
 * size bytes: an in-memory index (address, size, a CLOCK reference bit), rebuilt at open from the
 * directory (temporary files removed), evicts with CLOCK before a fill would exceed it. Fills are
 * copies handed to a bounded queue and dropped when it is full: no caller ever waits on the disk.
 * Errors in the cache never fail a read: the caller reads from the pool instead (logged).
 * Threads: every function may be called from any thread. Errors: 0 / negative errno.
 */
#ifndef CHP_STORE_CACHE_H
#define CHP_STORE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "hash.h"

struct chp_rcache;

/* Opens (creating if missing) dir/cache of at most size bytes and starts its filler thread.
 * size 0: no cache (*out NULL, 0). Caller frees with chp_rcache_close. */
__attribute__((warn_unused_result)) int chp_rcache_open(const char *dir, uint64_t size,
                                                        struct chp_rcache **out /* out */);
/* Drops the queued fills, stops the filler and frees c. NULL is a no-op. */
void chp_rcache_close(struct chp_rcache *c);

/* An open descriptor of addr's cached file, read-only, when it is cached and holds len bytes
 * (the caller closes it); marks it recently used. -ENOENT when not cached; a file of the wrong
 * size is removed (-ENOENT). */
int chp_rcache_get(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t len);

/* As chp_rcache_get, of the size the index holds for addr (the caller does not know the
 * chunk's length: the shared state's reads): *len is set with the descriptor. The file's size
 * matches the index's; its bytes were the address's (SHA-256) when it was renamed in. A miss is
 * counted only when count_miss (a lookup that a read of the same chunk follows, which counts it,
 * passes false: one miss per chunk read from the pool). */
int chp_rcache_find(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES],
                    uint32_t *len /* out */, bool count_miss);

/* Queues a copy of addr's len bytes for the filler; dropped when already cached, queued, larger
 * than the cache, or when the queue is full. Never blocks on the disk. */
void chp_rcache_fill(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], const void *data,
                     uint32_t len);

/* What the cache did since it was opened, and what it holds now. */
struct chp_rcache_stats {
        uint64_t hits, misses;  /* chp_rcache_get: a file handed out, or none */
        uint64_t stored;        /* fills written and renamed in */
        uint64_t dropped;       /* fills dropped: the queue full, or the write failed */
        uint64_t evictions;     /* files removed to make room (CLOCK) or found damaged */
        uint64_t bytes, chunks; /* held now */
};
void chp_rcache_stats(struct chp_rcache *c, struct chp_rcache_stats *out /* out */);

/* addr's chunk is gone from the store: its file (and any fill of it not yet done) goes. */
void chp_rcache_forget(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES]);

#endif
