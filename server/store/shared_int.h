/* shared_int.h — the store over the shared state of docs/scale-out.md ([store] rados_shared):
 * what shared.c (open, close, the count of what is in flight, GC and the audit), shared_write.c
 * (chp_store_submit's requests) and shared_read.c (lookups, chunk reads, the synchronous reads)
 * share. Private to server/store/; built only with librados (CHAPAR_RADOS).
 *
 * With rados_shared, struct chp_store keeps its directory (the LOCK, the read cache) but no record
 * of its own: every public function of store.h that store.c, writer.c, read.c or admin.c keeps
 * first asks `if (s->shared)` and hands the call to a function below. Each store request becomes
 * chp_rstate requests (rados_state.h) on the handle's one chp_rstate; each lookup the matching
 * get. A request's or lookup's done runs on a librados completion thread or on the rstate
 * handle's timer thread (never inside submit or lookup), and must not block, as store.h says of
 * the writer thread. Every store request and deferred lookup in flight is counted
 * (shared_op_begin/end), so that close waits for them all before it closes the handle.
 */
#ifndef CHP_STORE_SHARED_INT_H
#define CHP_STORE_SHARED_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "rados_state.h"
#include "store_int.h"

#define SHARED_LEASES 256

struct store_shared {
        struct chp_store *s;
        struct chp_rstate *st;
        char cookie[96]; /* the GC lock's: host and pid, so a log names the holder */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint64_t ops; /* requests and deferred lookups in flight (under lock) */
        bool closing; /* under lock: new requests are refused with CHP_ECLOSED */

        /* CHP_REQ_GC requests run one at a time on a thread of their own (chp_rstate_gc
         * blocks): a queue under lock */
        struct chp_store_req *gc_head, *gc_tail;
        pthread_t gc_thread;
        bool gc_started;
        uint64_t gc_grace; /* s a chunk's lease must be past before GC removes it */

        /* shared_write.c's: a tus upload's creates, chunk puts and tail appends in flight, in
         * the order they came; each runs once those of its upload before it have ended (under
         * lock) */
        struct shared_wop *tus_head;
        /* shared_write.c's: the expiry of native uploads written to lately, by the first byte of
         * their id (under lock): their records never change but for completion, so that a
         * chunk put need not read the record (and its manifest) for its lease */
        struct shared_lease {
                uint8_t id[CHP_UPLOAD_ID_BYTES];
                uint64_t lease; /* 0: an empty slot */
        } leases[SHARED_LEASES];
};

/* ---- shared.c ---------------------------------------------------------------------------- */

/* Opens s->shared on the pool of s->opts (the cluster connection of s->backend when it has one);
 * 0 or a negative code, logged. */
int shared_open(struct chp_store *s);
/* Refuses new requests, waits for every one in flight, then frees s->shared. NULL-safe. */
void shared_close(struct chp_store *s);
/* Counts one request or deferred lookup in; CHP_ECLOSED (nothing counted) once closing. */
int shared_op_begin(struct store_shared *sh);
/* Counts one out: call after its done has returned (the caller's callback may free it). */
void shared_op_end(struct store_shared *sh);
/* CHP_REQ_GC: queued for the GC thread; 0 or CHP_ECLOSED. */
int shared_gc_submit(struct store_shared *sh, struct chp_store_req *req);
/* chp_store_audit over the shared state (blocking, as chp_rstate_audit). */
int shared_audit(struct chp_store *s, uint64_t now, struct chp_audit_stats *out);

/* Calls fn(ctx, oid) for each object of namespace ns (NS_*, rados_state_int.h) of the pool, in
 * librados' listing order (blocking); fn's nonzero return stops the walk and is returned. Names
 * longer than the design writes are skipped. (shared_admin.c; the admin reads and verify) */
int shared_each_object(struct store_shared *sh, int ns, int (*fn)(void *ctx, const char *oid),
                       void *ctx);

/* ---- shared_verify.c --------------------------------------------------------------------- */

/* chp_store_verify with s->shared: every file's and upload's chunks exist, name it and are
 * leased until it expires; tombstones are on the quarantine list; every chunk's bytes match its
 * name (SHA-256) and h (XXH3). Blocking; read-only; for a pool at rest. */
int shared_verify(struct chp_store *s, chp_verify_problem_fn fn, void *ctx,
                  struct chp_verify_stats *stats);

/* ---- shared_admin.c ---------------------------------------------------------------------- */

/* The administration reads of store.h with s->shared, blocking (admin threads), each as its
 * store.h namesake but for what is said here. No snapshot: a listing read while relays write may
 * miss or repeat nothing that was there throughout, and no more.
 * files_list: from the list objects i/list.<tenant hex>; tenant NULL merges every list object
 * of namespace i (a listing of namespace i each page). A page costs O(max) keys per list object
 * read, and one record read per entry. An entry whose file is gone since its key was read is
 * left out, so a page may hold fewer than max with *more set. */
int shared_files_list(struct chp_store *s, const char *tenant,
                      const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_file_entry *out,
                      size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES]);
/* uploads_list: lists namespace u and reads every upload's record each page: O(uploads). */
int shared_uploads_list(struct chp_store *s, const char *tenant,
                        const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_upload *out,
                        size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES]);
/* tenants_each: the tenant objects of namespace t, in name order, each usage read on its own. */
int shared_tenants_each(struct chp_store *s,
                        int (*fn)(void *ctx, const char *tenant, const struct chp_tenant_usage *u),
                        void *ctx);
/* quarantined, quarantine_each: the i/quarantine omap (id hex -> since, 8 bytes LE). */
int shared_quarantined(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint64_t *since);
int shared_quarantine_each(struct chp_store *s,
                           int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since),
                           void *ctx);
/* chp_store_stats_counted: chunks, files (but tombstones) and uploads counted by listing
 * namespaces c, f and u: O(objects of the pool), for an operator's page, not a hot path.
 * inline_chunks, segments, segment_bytes and live_bytes are 0 (every chunk is an object; bytes not
 * counted). */
int shared_stats(struct chp_store *s, struct chp_store_stats *out);

/* ---- shared_write.c ---------------------------------------------------------------------- */

/* chp_store_submit with s->shared: every request kind but CHP_REQ_GC (shared.c) and
 * CHP_REQ_AUDIT (the local audit's; -ENOTSUP here). The checks chp_store_submit makes first (a
 * PUT's size and hash) are made before this is called. 0: done(req) follows once, with
 * req->status; or a negative code, and done is not called. Requests run at once, in any order,
 * but for a tus upload's (a create without a manifest, a PUT with clear_tail, a TAIL_APPEND),
 * which run one after the other in the order this store was given them, as the local writer
 * applies them (tus.c submits them without waiting). */
int shared_submit(struct chp_store *s, struct chp_store_req *req);

/* ---- shared_read.c ----------------------------------------------------------------------- */

/* chp_store_lookup with s->shared: -EINPROGRESS and q->done(q) later (q->done required), or a
 * code now (-EINVAL: a malformed lookup; CHP_ECLOSED). */
int shared_lookup(struct chp_store *s, struct chp_store_lookup *q);
/* The same, waited for on the calling thread (not a loop thread): q->status. For the
 * synchronous reads of store.h (chp_store_file_get, ...), which the caller has turned into q;
 * q->done and q->ctx are overwritten. */
int shared_lookup_wait(struct chp_store *s, struct chp_store_lookup *q);
/* chp_store_locate with s->shared: answers without I/O (loc: fd -1, not inline, remote). */
int shared_locate(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES],
                  struct chp_chunk_loc *loc);
/* chp_store_read_async and chp_store_read with s->shared: CHP_RS_CHUNK_READ_XXH3 (checked
 * against the XXH3 the put stored); the async one always completes later (-EINPROGRESS). */
ssize_t shared_read_async(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                          size_t cap, chp_store_read_fn done, void *ctx);
ssize_t shared_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf, size_t cap);
/* chp_store_tenant_usage with s->shared (blocking). */
int shared_tenant_usage(struct chp_store *s, const char *tenant, struct chp_tenant_usage *out);

#endif
