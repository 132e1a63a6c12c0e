/* rados_state.h — the shared state of docs/scale-out.md (step 5) as compound RADOS operations on
 * one pool: chunks, files, the commit of a manifest, uploads, pending, tenant usage and tus
 * offset objects, each write guarded as the design's table says, in namespaces c f u p t i.
 *
 * A handle (chp_rstate_open) is one relay's view of the pool; several handles on one pool act as
 * several relays. Every operation is a request (struct chp_rstate_req, the caller's: borrowed
 * until done) started by chp_rstate_submit from any thread; its done callback runs exactly once,
 * on a librados completion thread or on the handle's timer thread (never inside submit), and must
 * not block (it may submit further requests). Requests of several steps are state machines
 * driven by completions; at most opts.inflight librados operations are in flight per handle, the
 * rest wait in its queue. chp_rstate_run is submit + wait, for tests and tools (not on a thread
 * that runs callbacks). Results a request allocates are freed by chp_rstate_req_release.
 * Errors: 0 or negative; the cluster not answering (-ETIMEDOUT, -ENOTCONN, -ESHUTDOWN, -EIO) is
 * CHP_EUNAVAILABLE; guard failures are mapped per kind below, never returned as -ECANCELED.
 */
#ifndef CHP_STORE_RADOS_STATE_H
#define CHP_STORE_RADOS_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rados/librados.h>

#include "store_int.h" /* struct usage_delta, chp_store_quota, records */

#define CHP_RSTATE_NEVER UINT64_MAX /* an expiry or lease that never comes */

struct chp_rstate;

struct chp_rstate_opts {
        rados_t cluster; /* a connected cluster to use (borrowed; outlives the handle), or NULL: */
        const char *conf, *pool, *user; /* connect with these (user NULL: admin); pool required */
        uint32_t op_timeout;            /* s, with conf: rados_osd/mon_op_timeout (0: 30) */
        uint32_t inflight;              /* librados operations in flight (0: 64) */
};

/* Opens the namespaces' I/O contexts on opts->pool (connecting first without opts->cluster).
 * Returns 0 or a negative code; *out is NULL on failure. */
__attribute__((warn_unused_result)) int chp_rstate_open(const struct chp_rstate_opts *opts,
                                                        struct chp_rstate **out /* out */);
/* Waits for every request in flight, then frees the handle. NULL is a no-op. */
void chp_rstate_close(struct chp_rstate *st);

enum chp_rstate_kind {
        /* chunks (namespace c; their lease index in i/cexp.xx) */
        CHP_RS_CHUNK_PUT,    /* lease key, create(exclusive) or -EEXIST → refer; submit hashes
                                the bytes (on its caller's thread) unless verified:
                                CHP_EMISMATCH */
        CHP_RS_CHUNK_REFER,  /* lease key, refer (lease only grows); -ENOENT: no such chunk */
        CHP_RS_CHUNK_REMOVE, /* GC: remove if lease + grace < now; drops the lease key */
        CHP_RS_CHUNK_READ,   /* bytes into buf (up to cap), SHA-256 checked (CHP_ECORRUPT) */
        /* files (namespace f; index keys in i/exp.xx and i/list.<tenant hex>) */
        CHP_RS_FILE_PUT,        /* index keys, create or extend; CHP_EQUARANTINED on a tombstone */
        CHP_RS_FILE_GET,        /* record + e/q/m; -ENOENT, CHP_EQUARANTINED (since set) */
        CHP_RS_FILE_DELETE,     /* remove (not a tombstone), then its index keys; -ENOENT */
        CHP_RS_FILE_QUARANTINE, /* tombstone (file or none), quarantine list, usage and keys */
        CHP_RS_FILE_LIFT,       /* tombstone removed; -ENOENT when id is not quarantined */
        CHP_RS_FILE_EXPIRE,     /* GC: remove if e < now and no tombstone; keys, usage */
        CHP_RS_INDEX_PAGE,      /* up to max keys of an omap (enum chp_rstate_index) after a key */
        /* the commit of a manifest (docs/scale-out.md, "A commit of a manifest of n chunks") */
        CHP_RS_COMMIT,
        /* uploads (namespace u) and pending (namespace p) */
        CHP_RS_UPLOAD_CREATE,    /* usage (+ quota: CHP_EQUOTA), index key, exclusive create */
        CHP_RS_UPLOAD_PUT_CHUNK, /* guarded by s = o: -ENOENT when gone or complete */
        CHP_RS_UPLOAD_COMPLETE,  /* s: o → c<file id>; another file id: -EEXIST; with
                                    keep_expires: its expiry moved (new key first, old last) */
        CHP_RS_UPLOAD_REMOVE,    /* record, offset object, index key; -ENOENT */
        CHP_RS_UPLOAD_GET,       /* record + s */
        CHP_RS_PENDING_TAKE,     /* exclusive: -EEXIST with owner set */
        CHP_RS_PENDING_SWAP,     /* dead → upload_id: -EEXIST with owner, -ENOENT when none */
        CHP_RS_PENDING_DROP,     /* if upload_id owns it (else dropped stays false) */
        CHP_RS_PENDING_GET,      /* owner; -ENOENT */
        /* tenant usage (namespace t) */
        CHP_RS_USAGE_ADD, /* compare-and-set, quota checked; 8 tries, then CHP_ELIMITED */
        CHP_RS_USAGE_GET,
        /* tus offset objects (u/<upload id>.t) */
        CHP_RS_TUS_APPEND, /* guarded by n = old: -ESTALE (offset set to the current one) */
        CHP_RS_TUS_ABSORB, /* the tail became a chunk: truncate, n = old + len; as append
                              (old 0 and no object: created, as append creates it) */
        CHP_RS_TUS_GET,    /* offset and the tail bytes into buf */
        /* an open upload's record rewritten (a tus upload's deferred length became known):
         * read, the new expiry's index key, then cmp(s, EQ, o), write_full, setxattr(e), then
         * the old key dropped; -ENOENT when gone or complete. Usage is the caller's (USAGE_ADD).
         * The upload's chunks (its omap) and offset object stay. */
        CHP_RS_UPLOAD_REPLACE,
        /* chunks again (added after the rest; namespace c) */
        CHP_RS_CHUNK_STAT,      /* whether it exists: got its length; -ENOENT */
        CHP_RS_CHUNK_READ_XXH3, /* as READ, checked against the XXH3 of its xattr h (the put's),
                                   SHA-256 only when it has none: CHP_ECORRUPT; cap too small:
                                   -EMSGSIZE */
};

/* The omaps an index page reads (their keys as docs/scale-out.md's "What lives where"). */
enum chp_rstate_index {
        CHP_RS_INDEX_UPLOAD_CHUNKS, /* u/<id>: <index, 8 hex> -> addr (32 B) */
        CHP_RS_INDEX_EXP,           /* i/exp.<shard>: <expiry 16 hex><f|u><id hex> */
        CHP_RS_INDEX_CEXP,          /* i/cexp.<shard>: <lease 16 hex><addr hex> */
        CHP_RS_INDEX_LIST,          /* i/list.<tenant hex>: <~created 16 hex><file id hex> */
        CHP_RS_INDEX_QUARANTINE,    /* i/quarantine: <file id hex> -> since (8 B LE) */
};

#define CHP_RSTATE_KEY_MAX  96 /* the longest index key, with its NUL */
#define CHP_RSTATE_PAGE_MAX 1024

struct chp_rstate_entry {
        char key[CHP_RSTATE_KEY_MAX]; /* NUL-terminated */
        uint8_t val[CHP_HASH_BYTES];
        uint8_t val_len; /* longer values are cut (none of the design's are) */
};

/* A chunk's referrer: a file (its id) or an upload (its id, CHP_UPLOAD_ID_BYTES). */
struct chp_rstate_ref {
        char kind; /* 'f' or 'u' */
        uint8_t id[CHP_HASH_BYTES];
};

struct chp_rstate_req {
        enum chp_rstate_kind kind;
        void (*done)(struct chp_rstate_req *req, int rc);
        void *arg; /* the caller's */
        /* Tests: the step after which a commit (1 refer, 2 keys, 3 usage, 4 file) or a usage add
         * (1 read) pauses (0: none); on_hold is then called (callback rules) and the request
         * waits for chp_rstate_resume (before chp_rstate_close, which waits for it). */
        int hold;
        void (*on_hold)(struct chp_rstate_req *req);
        union {
                struct {
                        uint8_t addr[CHP_HASH_BYTES];
                        const void *data; /* PUT: the bytes (borrowed until done) */
                        uint32_t len;
                        bool verified; /* PUT: the caller checked SHA-256(data) == addr: not
                                          hashed again */
                        struct chp_rstate_ref ref; /* PUT, REFER */
                        uint64_t lease;            /* PUT, REFER: the referrer's expiry */
                        uint64_t now, grace;       /* REMOVE: unix s, gc_grace s */
                        uint64_t index_lease;      /* REMOVE: the lease key found (0: none) */
                        void *buf;                 /* READ: room for cap bytes (borrowed) */
                        uint32_t cap;
                        bool created;  /* result: PUT wrote the bytes */
                        bool extended; /* result: the lease grew */
                        bool removed;  /* result: REMOVE removed it */
                        uint32_t got;  /* result: READ's length */
                } chunk;
                struct {
                        uint8_t id[CHP_HASH_BYTES];
                        const uint8_t *rec; /* PUT: an encoded file record (borrowed) */
                        size_t rec_len;
                        const void *meta; /* PUT: tus metadata or NULL */
                        size_t meta_len;
                        uint64_t now;   /* QUARANTINE: since; EXPIRE: unix s */
                        bool existed;   /* result: PUT found the file; DELETE etc. removed one */
                        bool extended;  /* result: PUT grew its expiry */
                        bool removed;   /* result: EXPIRE removed it */
                        uint64_t since; /* result: GET, CHP_EQUARANTINED: quarantined since */
                        uint8_t *got;   /* result: GET: the record (release frees) */
                        size_t got_len;
                        uint8_t *got_meta; /* result: GET: m or NULL (release frees) */
                        size_t got_meta_len;
                        struct chp_rec_file file; /* result: GET: parsed, points into got */
                } file;
                struct {
                        const uint8_t *manifest; /* encoded (borrowed) */
                        size_t manifest_len;
                        const char *tenant; /* NUL-terminated ("" : untracked) */
                        uint64_t created, expires;
                        const void *meta; /* tus metadata or NULL */
                        size_t meta_len;
                        bool has_upload; /* the upload writing it: completed or removed */
                        bool keep_upload;
                        uint64_t keep_expires; /* with keep_upload: the record's new expiry
                                                  (CHP_RSTATE_NEVER: none); 0: unchanged */
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        uint64_t declared;               /* the upload's declared size (usage) */
                        uint8_t file_id[CHP_HASH_BYTES]; /* result */
                        bool existed;                    /* result: the file was stored */
                        uint32_t missing;                /* result: CHP_EMISSING: how many */
                } commit;
                struct {
                        uint8_t id[CHP_UPLOAD_ID_BYTES];
                        const uint8_t *rec; /* CREATE, REPLACE: an encoded upload record
                                               (borrowed) */
                        size_t rec_len;
                        const struct chp_store_quota *quota; /* CREATE: or NULL */
                        uint32_t index;                      /* PUT_CHUNK */
                        uint8_t addr[CHP_HASH_BYTES];        /* PUT_CHUNK */
                        uint8_t file_id[CHP_HASH_BYTES];     /* COMPLETE; result: GET */
                        uint64_t keep_expires; /* COMPLETE: the record's new expiry (record,
                                                  e and its i/exp key moved; CHP_RSTATE_NEVER:
                                                  none); 0: unchanged */
                        enum chp_store_quota_hit quota_hit;  /* result: CREATE */
                        bool complete; /* result: GET, COMPLETE (already was) */
                        uint8_t *got;  /* result: GET: the record (release frees) */
                        size_t got_len;
                } upload;
                struct {
                        uint8_t file_id[CHP_HASH_BYTES];
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        uint8_t dead[CHP_UPLOAD_ID_BYTES];  /* SWAP: the owner to replace */
                        uint8_t owner[CHP_UPLOAD_ID_BYTES]; /* result: -EEXIST, GET */
                        bool dropped;                       /* result: DROP */
                } pending;
                struct {
                        const char *tenant; /* NUL-terminated; "" is not tracked (no-op) */
                        struct usage_delta d;
                        const struct chp_store_quota *quota; /* or NULL */
                        uint64_t declared, sessions;         /* what the quota is checked for */
                        struct chp_tenant_usage usage;       /* result: after (GET: as read) */
                        enum chp_store_quota_hit quota_hit;  /* result */
                        uint32_t tries;                      /* result: writes tried */
                } usage;
                struct {
                        enum chp_rstate_index index;
                        uint8_t id[CHP_UPLOAD_ID_BYTES]; /* UPLOAD_CHUNKS */
                        uint8_t shard;                   /* EXP, CEXP */
                        const char *tenant;              /* LIST (NUL-terminated) */
                        const char *after; /* the last key of the previous page, or NULL */
                        uint32_t max;      /* 1 .. CHP_RSTATE_PAGE_MAX */
                        struct chp_rstate_entry *entries; /* result (release frees) */
                        uint32_t n;                       /* result */
                        bool more;                        /* result: keys after these */
                } page;
                struct {
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        uint64_t old;     /* APPEND, ABSORB: the offset the client sent at */
                        const void *data; /* APPEND: bytes (borrowed until done) */
                        uint32_t len;     /* APPEND: bytes; ABSORB: bytes the chunk took */
                        void *buf;        /* GET: room for cap tail bytes (borrowed) */
                        uint32_t cap;
                        uint64_t offset; /* result */
                        uint32_t got;    /* result: GET */
                } tus;
        } u;
        struct chp_rstate_priv *priv; /* the module's, between submit and done */
};

/* Starts req on st: 0, and req->done runs later, once; or a negative code (-EINVAL for a malformed
 * request, -ENOMEM), and done never runs. req and what it borrows stay the caller's until done. */
__attribute__((warn_unused_result)) int chp_rstate_submit(struct chp_rstate *st,
                                                          struct chp_rstate_req *req);
/* Submits req and waits for it: its result. req->done and req->arg are overwritten. */
__attribute__((warn_unused_result)) int chp_rstate_run(struct chp_rstate *st,
                                                       struct chp_rstate_req *req);
/* Continues a request paused by req->hold (on the calling thread, until its next operation). */
void chp_rstate_resume(struct chp_rstate_req *req);
/* librados operations of st in flight now, the most there ever were, and those queued now (any
 * thread; for metrics and tests). */
void chp_rstate_inflight(struct chp_rstate *st, uint32_t *now /* out */, uint32_t *peak /* out */,
                         uint32_t *queued /* out */);
/* Adds the handle's librados operations since open to out (any thread; atomics, no lock): each
 * timed from its start to its completion, by kind — a write or read of a chunk object (namespace
 * c: CHP_STORE_OP_WRITE, READ; GC's removal: REMOVE), any other write or read (RECORD_WRITE,
 * RECORD_READ) — and those the cluster did not answer (UNAVAILABLE) or refused for space (NOSPC).
 * A guard that cancelled, a missing or existing object is an answer, not an error. */
void chp_rstate_op_stats(struct chp_rstate *st, struct chp_store_backend_stats *out);
/* Frees what a finished request allocated for its results (GET's records, a page's entries). */
void chp_rstate_req_release(struct chp_rstate_req *req);

/* ---- GC (docs/scale-out.md, "GC on two relays at once") -------------------------------------
 * chp_rstate_gc is one pass, run by any relay, blocking (the relay's main thread or a GC thread,
 * never a loop thread, nor a thread that runs request callbacks). It takes the exclusive lock
 * "gc" on i/gc with the handle's cookie and a lease, renewed (LIBRADOS_LOCK_FLAG_MUST_RENEW)
 * before each batch once a third of the lease has passed since the last; -EBUSY: another relay is
 * collecting, the pass does nothing (busy). A renewal refused (-ENOENT: the lease lapsed and may
 * be another's) ends the pass after the batch in flight (lease_lost); every removal is guarded on
 * its own object, so that batch removes nothing live. Then, for each shard of i/exp.* and then
 * i/cexp.*, the keys that are due: files (FILE_EXPIRE) and uploads (read, then UPLOAD_REMOVE
 * when the record's expiry is before now) whose key's expiry is before now; chunks (CHUNK_REMOVE)
 * whose key's lease + grace is before now; at most inflight requests at once. A key is dropped
 * once its object is removed, gone (or never was), or found extended or quarantined (its new key
 * exists); a key whose request failed stays for the next pass. Unlocks at the end.
 * Returns 0, or the first error (the cluster not answering: CHP_EUNAVAILABLE; the pass stops).
 * Uploads' usage (incomplete) is not changed by a removal (as UPLOAD_REMOVE): the audit's. */
struct chp_rstate_gc_stats {
        uint64_t files_expired, uploads_removed, chunks_removed;
        uint64_t keys_dropped; /* stale keys: their object gone, extended or never there */
        uint64_t errors;       /* requests that failed (their keys stay) */
        bool busy;             /* another cookie held the lock: nothing done */
        bool lease_lost;       /* a renewal was refused: the pass stopped early */
};

struct chp_rstate_gc_opts {
        uint64_t now;       /* unix s the pass collects up to (0: the clock) */
        uint64_t grace;     /* gc_grace, s: how long past its lease a chunk stays */
        uint32_t lease;     /* s, the lock's (0: 60) */
        const char *cookie; /* the lock's cookie, the relay's instance id (NULL: "gc-<pid>") */
        uint32_t inflight;  /* requests at once (0: 32, at most CHP_RSTATE_PAGE_MAX) */
        uint32_t page;      /* keys read at once (0: 256, at most CHP_RSTATE_PAGE_MAX) */
        /* Tests: called before each batch's renewal check, on the pass's thread, with the stats
         * so far; it may block (a stalled relay). */
        void (*on_batch)(void *arg, const struct chp_rstate_gc_stats *sofar);
        void *arg;
};

/* One GC pass on st (see above); *stats is filled also on error. */
__attribute__((warn_unused_result)) int chp_rstate_gc(struct chp_rstate *st,
                                                      const struct chp_rstate_gc_opts *opts,
                                                      struct chp_rstate_gc_stats *stats /* out */);

/* ---- the audit (docs/scale-out.md, "The audit: lowering leases") ----------------------------
 * chp_rstate_audit walks namespace c (at most max chunks; 0: all), blocking, on a thread that may
 * (as chp_rstate_gc). Per chunk: its referrers and the object's version in one read; each
 * referrer's record: an upload key is live while u/id exists; a file key while f/id exists and is
 * no tombstone, or while it is pending, f/id does not exist and its expiry is not past (its commit
 * may not have written the file yet); then the cexp key of the new lease, and one write guarded
 * by assert_version: dead keys dropped, pending keys of existing files confirmed, e set to the
 * largest expiry of the live keys, a live file's taken from its record (a later refer with a
 * shorter expiry overwrites a key's value), and never below the lease while a pending key has no
 * file yet (0 when none live: GC removes it grace later). A chunk written
 * meanwhile (a new referrer) fails the guard and is left for the next audit (raced). Chunks with
 * more than 256 referrers are left as they are. It takes no lock: the version guard is its safety
 * (the caller may hold the GC lock to avoid two relays doing the same work).
 * Returns 0 or the first error (the pass stops). */
struct chp_rstate_audit_stats {
        uint64_t chunks;         /* looked at */
        uint64_t lowered;        /* leases lowered */
        uint64_t refs_dropped;   /* dead referrer keys */
        uint64_t refs_confirmed; /* pending file keys whose file exists */
        uint64_t raced;          /* writes refused by the version guard */
};

struct chp_rstate_audit_opts {
        uint64_t now; /* unix s (0: the clock) */
        uint64_t max; /* chunks per pass (0: all) */
        /* Tests: called after a chunk's referrers were judged, before its write (may block). */
        void (*on_chunk)(void *arg, const uint8_t addr[CHP_HASH_BYTES]);
        void *arg;
};

__attribute__((warn_unused_result)) int
chp_rstate_audit(struct chp_rstate *st, const struct chp_rstate_audit_opts *opts,
                 struct chp_rstate_audit_stats *stats /* out */);

#endif
