/* backend.h — the chunk backend seam: where the bytes of chunks above inline_max live.
 *
 * The store keeps every chunk's record (length, XXH3, place) in its LMDB index and calls a backend,
 * through struct chp_backend_ops, for the bytes. segments.c (append-only local files) is the first
 * backend; rados.c (each chunk an object of a Ceph RADOS pool) implements the same table.
 *
 * Threads: the writer thread alone calls the write half (batch_*, put, drop, mark, rollback, full,
 * reclaim) and the host's callbacks run on it; read, span and span_release may be called from any
 * thread, concurrently with the writer; verify_* and stats from any thread, in a read snapshot
 * the caller owns. Ownership: buffers passed in are borrowed for the call, except put's data,
 * borrowed until sync returns. A span's reference is the caller's until span_release.
 * Errors: 0 / negative codes of err.h.
 */
#ifndef CHP_STORE_BACKEND_H
#define CHP_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <lmdb.h>

#include "hash.h"
#include "store.h"

/* Where a backend put a chunk; the store keeps it in the chunk record (its seg and offset fields)
 * and hands it back unchanged. Segments: file number and byte offset. An object store may ignore
 * them and name objects by address: addr is the chunk's address, set by the store on every place
 * it hands a backend (borrowed for the call; not kept in the record), and len the chunk's length,
 * so that a backend can check a file it keeps by address (both set by chunk_place). */
struct chp_backend_place {
        uint32_t unit;
        uint64_t offset;
        const uint8_t *addr;
        uint32_t len;
};

/* chp_store_read_async's completion, as the backend calls it (read_async). */
typedef void (*chp_backend_read_fn)(void *ctx, int result);

/* A chunk's bytes as a file range, for splice/sendfile: fd stays open until span_release. */
struct chp_backend_span {
        int fd;
        uint64_t offset;
        void *ref; /* the backend's */
};

/* A savepoint of the backend's in-memory write state (opaque words). */
struct chp_backend_mark {
        uint64_t word[4];
};

/* What the store lends its backend; every callback runs on the writer thread. */
struct chp_backend_host {
        void *ctx;
        /* Admission: takes len bytes of free space, -ENOSPC when writes must leave them free.
         * compacting: the write moves live bytes (reclaim), and may use the room kept for that. */
        int (*space_take)(void *ctx, uint64_t len, bool compacting);
        /* A write failed for want of space (ENOSPC, EDQUOT): the next GC reclaims harder. */
        void (*out_of_space)(void *ctx);
        /* Test builds: the error armed at a chp_store_fault_site for this call, or 0. NULL in
         * builds without CHAPAR_FAULT_INJECTION. */
        int (*fault)(void *ctx, int site);
        /* reclaim: the record of the chunk at addr in txn (-ENOENT if none) and its move to a
         * new place. */
        int (*chunk_get)(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                         struct chp_backend_place *place /* out */, uint32_t *len /* out */,
                         uint64_t *xxh3 /* out */);
        int (*chunk_moved)(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                           const struct chp_backend_place *place, uint32_t len, uint64_t xxh3);
};

/* verify: a problem found, and the backend's scan state (its own, set by verify_begin). */
struct chp_backend_verify {
        void (*problem)(void *ctx, const char *msg);
        void *ctx;
        void *state;
        uint64_t units; /* result of verify_begin: segments, objects' pools, ... */
};

/* Reports a problem to v, formatted (at most 511 bytes; segments_verify.c has it). */
__attribute__((format(printf, 2, 3))) void chp_backend_problem(struct chp_backend_verify *v,
                                                               const char *fmt, ...);

struct chp_backend;

struct chp_backend_ops {
        const char *name;
        /* Completes nothing in flight (the writer has stopped) and frees b. NULL is a no-op. */
        void (*close)(struct chp_backend *b);

        /* ---- writer thread: a batch is batch_begin, puts and drops in nested transactions of
         * txn (mark before each, rollback when one aborts), sync, the index commit, batch_end. */
        void (*batch_begin)(struct chp_backend *b);
        /* Submits len bytes of chunk addr and says where they will be. May return before the
         * bytes are written (an asynchronous backend); data stays borrowed until sync returns.
         * A backend may record what it needs in txn; it commits or aborts with the chunk's
         * record. An error here fails the request alone. */
        int (*put)(struct chp_backend *b, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                   const void *data, uint32_t len, struct chp_backend_place *place /* out */);
        /* The durability barrier, before the index commit: waits for every put of the batch to
         * complete and makes them durable (sync full; with sync none, only completes them). An
         * error fails the whole batch: nothing is committed or acknowledged, nothing retried. */
        int (*sync)(struct chp_backend *b);
        /* After the commit (committed) or the batch's rollback (!committed): frees what the
         * committed batch released (dead units), drops the batch's references. */
        void (*batch_end)(struct chp_backend *b, bool committed);
        /* The chunk at place lost its last reference, in txn; its bytes may go once txn commits. */
        int (*drop)(struct chp_backend *b, MDB_txn *txn, const struct chp_backend_place *place,
                    uint32_t len);
        void (*mark)(struct chp_backend *b, struct chp_backend_mark *m /* out */);
        /* txn's work since m was aborted: undo what the backend did outside LMDB since then. */
        void (*rollback)(struct chp_backend *b, const struct chp_backend_mark *m);
        /* The store refused a write for want of space: an appending backend stops appending to
         * its current unit, so that GC can reclaim it. */
        void (*full)(struct chp_backend *b);
        /* GC, after expiry, in txn: the backend's own reclamation (segments: seal the open
         * segment, drop dead ones, compact sparse ones below ratio, moving chunks through the
         * host's chunk_moved). Counts into st; sets st->more when work is left. May be NULL. */
        int (*reclaim)(struct chp_backend *b, MDB_txn *txn, double ratio, bool space_short,
                       uint64_t move_budget, struct chp_gc_stats *st);

        /* ---- any thread ---- */
        /* Reads the chunk's len bytes into buf. Call it inside the read snapshot that gave
         * place: -EAGAIN means the bytes moved since (retry with a fresh snapshot). */
        int (*read)(struct chp_backend *b, const struct chp_backend_place *place, uint32_t len,
                    void *buf /* out */);
        /* A file range holding the bytes, for zero-copy sends; same snapshot rule as read.
         * -EOPNOTSUPP when the backend has no file (callers read instead). May be NULL. */
        int (*span)(struct chp_backend *b, const struct chp_backend_place *place,
                    struct chp_backend_span *out /* out */);
        void (*span_release)(struct chp_backend *b, struct chp_backend_span *span);
        /* Starts reading the chunk's len bytes into buf (borrowed until done) and returns 0;
         * done(ctx, 0 or a negative code) follows exactly once, on a thread of the backend's,
         * never inside this call. A code instead of 0 means done will not be called. NULL: the
         * backend's reads do not wait on anything remote (the store calls read). */
        int (*read_async)(struct chp_backend *b, const struct chp_backend_place *place,
                          uint32_t len, void *buf, chp_backend_read_fn done, void *ctx);

        /* ---- verify (scan), in the caller's read snapshot txn ---- */
        /* Checks the backend's own records, then verify_chunk for each chunk record, then
         * verify_end (accounting against what the chunks claimed; frees v->state). */
        int (*verify_begin)(struct chp_backend *b, MDB_txn *txn, struct chp_backend_verify *v);
        /* Checks the place and reads the bytes into buf (len <= CHP_CHUNK_MAX): 0 when read,
         * 1 when a problem was reported, a negative code when verify cannot go on. */
        int (*verify_chunk)(struct chp_backend *b, struct chp_backend_verify *v,
                            const uint8_t addr[CHP_HASH_BYTES],
                            const struct chp_backend_place *place, uint32_t len, void *buf);
        int (*verify_end)(struct chp_backend *b, struct chp_backend_verify *v, bool ok);
        /* Units, bytes held and live, chunks held (fills those fields of out). */
        int (*stats)(struct chp_backend *b, MDB_txn *txn, struct chp_store_stats *out,
                     uint64_t *chunks /* out */);
        /* chp_store_backend_stats: the backend's operation counters (atomics; any thread, no
         * transaction). May be NULL: the backend counts nothing. */
        void (*op_stats)(struct chp_backend *b, struct chp_store_backend_stats *out);
};

struct chp_backend {
        const struct chp_backend_ops *ops;
};

/* An LMDB return code as a store code (store.c), for backends that keep records in the index. */
int store_mdb_rc(int rc);

/* ---- the segments backend (segments.c) --------------------------------------------------- */

struct chp_segments_opts {
        const char *dir; /* the store's data directory; segments go in dir/segments; borrowed */
        MDB_env *env;    /* the store's; the backend opens its "segments" and "segidx" dbs */
        enum chp_sync sync;
        uint64_t seg_max; /* a segment is sealed once it holds this many bytes */
};

/* Opens every segment the index knows, cuts torn tails (bytes past the committed total),
 * removes files the index does not know and finds the open segment. h is copied. Caller frees
 * with out->ops->close. */
__attribute__((warn_unused_result)) int chp_segments_open(const struct chp_segments_opts *o,
                                                          const struct chp_backend_host *h,
                                                          struct chp_backend **out /* out */);

/* ---- the RADOS backend (rados.c, built with CHAPAR_RADOS) ------------------------------- */

/* Connects to the cluster o->rados_conf names, as o->rados_user, and opens o->rados_pool: chunk
 * bytes become objects named by their address's hex in the namespace "c". env is the store's:
 * the backend keeps its totals in a "rados" db there. Takes the pool's lock (the object "owner"
 * of the namespace "i", renewed while open): CHP_ELOCKED when another relay holds it; a lock that
 * a previous run with the same directory on this host left behind is broken.
 * CHP_EUNAVAILABLE when the cluster does not answer within o->rados_op_timeout, -ENOENT when the
 * pool does not exist. h is copied. Caller frees with out->ops->close. With o->rados_shared it
 * takes no lock (many relays share the pool; shared.c keeps the records there). */
__attribute__((warn_unused_result)) int chp_rados_open(const struct chp_store_opts *o, MDB_env *env,
                                                       const struct chp_backend_host *h,
                                                       struct chp_backend **out /* out */);
#ifdef CHAPAR_RADOS
#include <rados/librados.h>
struct chp_rcache;
/* The connected cluster of a backend chp_rados_open made (it lives as long as the backend);
 * NULL for any other backend. */
rados_t chp_rados_cluster(struct chp_backend *b);
/* The local read cache of a backend chp_rados_open made ([store] cache_size; cache.h; it lives
 * as long as the backend); NULL without one, and for any other backend. A descriptor it gives
 * is released as the backend's spans are: a chp_backend_span of that fd with ref = b, handed to
 * b->ops->span_release, closes it. */
struct chp_rcache *chp_rados_cache(struct chp_backend *b);
#endif

#endif
