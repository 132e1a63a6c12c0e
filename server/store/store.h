/* store.h — the content-addressed chunk store: an LMDB index plus append-only segment files.
 *
 * Chunks are addressed by the SHA-256 of their bytes. Small chunks (<= inline_max) live inside
 * LMDB; larger ones are appended to segment files and LMDB keeps their location and XXH3-64.
 * Every mutation (chunk put, file commit, upload records, deletes, GC) is a request handed to the
 * store's single writer thread, which group-commits: it appends the batch's chunk bytes, then
 * fdatasyncs the segments (sync full), then commits one LMDB transaction, and only then calls
 * each request's done callback. Acknowledged means durable under the sync policy.
 *
 * Threads: chp_store_submit and every read function may be called from any thread; done
 * callbacks run on the writer thread and must not block. Requests and the buffers they point to
 * are borrowed by the store until their done callback has returned. Errors are 0 / negative codes
 * of common/err.h; out-parameters are filled only on success.
 */
#ifndef CHP_STORE_H
#define CHP_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"
#include "proto.h" /* CHP_UPLOAD_ID_BYTES */
#include "token.h" /* CHP_TOKEN_SUBJECT_MAX */

#define CHP_TENANT_MAX          64   /* bytes of a tenant name */
#define CHP_UPLOAD_META_MAX     4096 /* bytes of opaque upload metadata (tus Upload-Metadata) */
#define CHP_STORE_INLINE_ALL    UINT32_MAX /* inline_max that keeps every chunk inside LMDB */
#define CHP_UPLOAD_SIZE_UNKNOWN UINT64_MAX /* declared size of a deferred-length upload */
#define CHP_STORE_RESERVE_NONE  UINT64_MAX /* space_reserve: puts may fill the disk (tests) */

enum chp_sync {
        CHP_SYNC_FULL, /* fdatasync segments and LMDB before acknowledging */
        CHP_SYNC_NONE, /* acknowledge after the write reaches the page cache; a crash of the
                          machine (not of the process) may lose acknowledged data */
};

/* Where the bytes of chunks above inline_max live (the chunk backend, backend.h). */
enum chp_store_backend {
        CHP_STORE_LOCAL, /* segment files in dir (the default) */
        CHP_STORE_RADOS, /* objects named by address in a Ceph RADOS pool; dir keeps the index
                            (LMDB: every record) and the inline chunks, and one relay uses the
                            pool; with rados_shared the records are in the pool too (below) */
};

struct chp_store_opts {
        const char *dir; /* data directory; created if missing; borrowed */
        enum chp_store_backend backend;
        /* CHP_STORE_RADOS: the cluster (all borrowed; conf and pool required) */
        const char *rados_conf;    /* a ceph.conf naming the monitors and the keyring */
        const char *rados_pool;    /* the pool (it must exist) */
        const char *rados_user;    /* the client's name without "client."; NULL: admin */
        uint32_t rados_inflight;   /* most RADOS operations in flight at once, 1..4096 */
        uint32_t rados_op_timeout; /* seconds an operation may take before it fails with
                                      CHP_EUNAVAILABLE (librados' osd and mon op timeouts) */
        /* Seconds the pool's lock lasts unless renewed (renewed every third of it); 0 = 30.
         * Not a config key: tests shorten it to make the lease lapse. */
        uint32_t rados_lock_seconds;
        /* The shared state of docs/scale-out.md (shared.c, rados_state.h): every record in the
         * pool, every chunk an object, so that several relays (stores) on one pool serve any
         * file and resume any upload. Requests and lookups become RADOS operations; their done
         * callbacks run on librados' threads or the store's own. dir keeps no records then. */
        bool rados_shared;
        /* rados_shared: seconds past its lease before GC removes a chunk (0 = 3600): room for
         * relays' clocks to differ and for a commit between its refer and its file write */
        uint64_t gc_grace;
        uint64_t cache_size;       /* bytes of dir/cache, the local read cache of whole chunks that
                                      faces splice from (rados.c, cache.h); 0 = none */
        enum chp_sync sync;
        uint32_t inline_max;   /* chunks of at most this many bytes live in LMDB */
        uint64_t map_size;     /* LMDB map size in bytes; fixed while open */
        uint64_t segment_size; /* a segment is sealed once it holds this many bytes */
        uint64_t batch_bytes;  /* group commit: most chunk bytes in one transaction */
        uint32_t linger_us;    /* group commit: how long a lone request waits for company */
        double compact_ratio;  /* sealed segments with live/total below this are compacted */
        uint32_t gc_batch;     /* most expired records one GC request removes */
        /* Bytes of the filesystem that requests storing new bytes (puts, kept tails, new upload
         * records) leave free, refused with -ENOSPC otherwise, so that GC can always commit the
         * transaction that frees space; 0 = automatic (1/64 of the filesystem, 1 MiB .. 64 MiB),
         * CHP_STORE_RESERVE_NONE = none. They also leave one segment free, for compaction. */
        uint64_t space_reserve;
        /* Seconds a chunk referenced by nothing is kept after the audit first finds it so (and
         * after any put of it since) before an audit frees it: longer than a client may take
         * between storing a chunk and attaching it (a tus PATCH body checked as a whole, a
         * file's chunks put before its commit). */
        uint64_t orphan_grace;
};

/* Fills o with the defaults: the local backend (RADOS: 64 in flight, 30 s timeout), sync full,
 * inline_max 16 KiB, map 64 GiB, segments 256 MiB (but at
 * most 1/16 of the filesystem, and at least CHP_CHUNK_MAX), batch 64 MiB, no linger, compact
 * below 0.5, 10000 records per GC pass, automatic space reserve, orphans kept 7 days. */
void chp_store_opts_default(struct chp_store_opts *o);

struct chp_store;

/* The scrubs' report of one problem found (chp_store_verify, chp_store_scrub). */
typedef void (*chp_verify_problem_fn)(void *ctx, const char *problem);

/* Opens (creating if needed) the store in o->dir, truncates torn segment tails, removes segment
 * files the index does not know, and starts the writer thread. Takes an exclusive lock on the
 * directory (CHP_ELOCKED if another process holds it). With CHP_STORE_RADOS it connects to the
 * cluster first (-ENOTSUP in a build without RADOS support; CHP_EUNAVAILABLE when the cluster
 * does not answer within rados_op_timeout; -ENOENT: no such pool; CHP_ELOCKED: another relay
 * uses the pool). A directory keeps the backend it was made with: -EINVAL for the other one.
 * Caller frees with chp_store_close. */
__attribute__((warn_unused_result)) int chp_store_open(const struct chp_store_opts *o,
                                                       struct chp_store **out /* out */);

/* Completes every submitted request, stops the writer and frees the store. NULL is a no-op. */
void chp_store_close(struct chp_store *s);

/* ---- requests (mutations) ---------------------------------------------------------------- */

enum chp_store_req_type {
        CHP_REQ_PUT,           /* store a chunk, or attach an existing one to an upload */
        CHP_REQ_COMMIT,        /* store a manifest as a file; optionally finish an upload */
        CHP_REQ_FILE_DELETE,   /* drop a file and its chunk references */
        CHP_REQ_UPLOAD_CREATE, /* create (or replace) an upload session record */
        CHP_REQ_UPLOAD_DELETE, /* drop an upload session and its chunk references */
        CHP_REQ_GC,            /* expire records due by `now`, free dead chunks, compact */
        CHP_REQ_TAIL_APPEND,   /* keep bytes past an upload's last whole chunk (tus) */
        CHP_REQ_AUDIT,         /* one batch of chp_store_audit's repairs (made by it alone) */
        CHP_REQ_QUARANTINE,    /* put a file id on the quarantine list (or take it off) */
};

struct chp_upload {
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        char tenant[CHP_TENANT_MAX + 1]; /* NUL-terminated */
        /* the subject of the token it was begun under (NUL-terminated); "" when begun by the
         * relay's own (a trusted caller, a federation fetch) or recorded before subjects were */
        char subject[CHP_TOKEN_SUBJECT_MAX + 1];
        uint64_t declared_size; /* CHP_UPLOAD_SIZE_UNKNOWN while deferred */
        uint32_t chunk_size;
        uint64_t created; /* unix seconds */
        uint64_t expires; /* unix seconds; 0 = never */
        uint32_t meta_len;
        uint8_t meta[CHP_UPLOAD_META_MAX];
        bool has_manifest;               /* a native upload, whose manifest was given up front */
        uint8_t file_id[CHP_HASH_BYTES]; /* with has_manifest: SHA-256 of that manifest */
        uint64_t file_expires;           /* expiry the committed file gets (native uploads) */
        bool complete;                   /* committed as file_id (kept by keep_upload) */
};

/* A tenant's limits that the writer checks, in the transaction that would create a new upload
 * session (CHP_REQ_UPLOAD_CREATE), against the tenant's usage (chp_store_tenant_usage): so
 * concurrent uploads cannot overshoot them together. A resumed upload or a file already stored
 * is not new and is not checked; a tus record re-created under its id because its deferred
 * length became known is checked for the bytes that adds (max_stored, max_per_day). UINT64_MAX:
 * no limit. */
struct chp_store_quota {
        uint64_t max_stored;     /* bytes of the tenant's files + its incomplete uploads' sizes */
        uint64_t max_incomplete; /* upload sessions of the tenant not committed */
        uint64_t max_per_day;    /* bytes of new uploads begun in one UTC day (their sizes) */
        uint64_t now;            /* unix seconds: which day */
};

/* Which limit of a chp_store_quota refused an upload (CHP_EQUOTA). */
enum chp_store_quota_hit {
        CHP_QUOTA_NONE,
        CHP_QUOTA_STORED,
        CHP_QUOTA_INCOMPLETE,
        CHP_QUOTA_PER_DAY,
};

/* What a tenant holds in the store, kept up to date in the writer's transactions. */
struct chp_tenant_usage {
        uint64_t stored_bytes;     /* sizes of its files */
        uint64_t files;            /* its files */
        uint64_t incomplete;       /* its upload sessions not committed */
        uint64_t incomplete_bytes; /* their declared sizes (deferred lengths count 0) */
        uint64_t day;              /* the UTC day (unix seconds / 86400) of day_bytes */
        uint64_t day_bytes;        /* sizes of the uploads it began that day */
};

struct chp_gc_stats {
        uint64_t files_expired, uploads_expired;
        uint64_t chunks_freed, bytes_freed;
        uint64_t segments_deleted;   /* dropped whole: nothing in them was live */
        uint64_t segments_compacted; /* live chunks moved out, then dropped */
        uint64_t segments_sealed;    /* the open segment was sealed so that its dead bytes can go */
        uint64_t bytes_moved;
        bool more; /* expired records remain: submit another GC request */
};

/* What one chp_store_audit found and did. */
struct chp_audit_stats {
        uint64_t chunks;       /* chunk records checked */
        uint64_t references;   /* references counted: files' manifests, uploads' chunks */
        uint64_t refs_fixed;   /* reference counts that were wrong and were corrected */
        uint64_t dangling;     /* upload chunk entries and kept tails of uploads that no
                                  longer exist, dropped */
        uint64_t orphans;      /* chunks referenced by nothing, kept for their grace */
        uint64_t chunks_freed; /* orphans past their grace, freed */
        uint64_t bytes_freed;  /* their bytes */
        uint64_t usage_fixed;  /* tenants whose usage record differed from their records */
        uint64_t passes;       /* snapshots marked: more than 1 when the references did not
                                  fit in memory at once (see chp_store_audit) */
};

struct chp_audit_item; /* the store's (chp_store_audit's batches) */

struct chp_store_req;
typedef void (*chp_store_done_fn)(struct chp_store_req *req);

struct chp_store_req {
        enum chp_store_req_type type;
        union {
                struct {
                        uint8_t addr[CHP_HASH_BYTES];
                        const void *data; /* NULL: attach an already stored chunk */
                        uint32_t len;
                        bool verified;   /* caller already checked SHA-256(data) == addr */
                        bool has_upload; /* record the chunk as index `index` of `upload_id` */
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        uint32_t index;
                        bool clear_tail;   /* with has_upload: the chunk absorbed the upload's
                                              kept tail bytes, which are dropped */
                        bool deduplicated; /* result: the chunk was already stored */
                } put;
                struct {
                        const uint8_t *manifest; /* encoded manifest, borrowed; NULL with
                                                    has_upload: the upload's own manifest */
                        size_t manifest_len;
                        const char *tenant; /* borrowed; may be NULL */
                        uint64_t expires;   /* unix seconds; 0 = never */
                        bool has_upload;    /* end this upload once the file exists */
                        bool keep_upload;   /* ...but keep its record, marked complete with
                                               the file id, until it expires (tus HEAD) */
                        uint64_t keep_expires; /* with keep_upload: the kept record's expiry from
                                                  now on (unix s; UINT64_MAX: never); 0 keeps
                                                  the one it had (XMPP uploads: the file's) */
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        uint8_t file_id[CHP_HASH_BYTES]; /* result */
                        bool existed;                    /* result: file was already stored */
                } commit;
                struct {
                        uint8_t file_id[CHP_HASH_BYTES];
                } file_delete;
                /* Creates the upload, or with a manifest opens it: if the file is stored already
                 * nothing is created (complete); if an upload of the same manifest exists it is
                 * resumed (its id returned); otherwise upload->id is created. Either way every
                 * chunk of the manifest that the store already holds is attached to the upload.
                 * An upload recorded with a subject is resumed only by a request whose upload
                 * has the same tenant and subject, or no subject (the relay's own: a trusted
                 * caller, a federation fetch); any other is CHP_ETOKEN_SUBJECT, and nothing is
                 * changed. A resume records nothing of the request's upload. */
                struct {
                        const struct chp_upload *upload; /* borrowed; has_manifest/file_id are
                                                            set from manifest */
                        const uint8_t *manifest;         /* NULL, or the encoding (borrowed) */
                        size_t manifest_len;
                        /* the tenant's limits (upload->tenant), checked when a new session would
                         * be created or a deferred length grow one (struct chp_store_quota):
                         * CHP_EQUOTA and quota_hit say which; NULL: none */
                        const struct chp_store_quota *quota;
                        enum chp_store_quota_hit quota_hit;     /* result */
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES]; /* result */
                        uint8_t file_id[CHP_HASH_BYTES];        /* result (with a manifest) */
                        bool complete;                          /* result */
                        bool resumed;                           /* result */
                } upload_create;
                struct {
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                } upload_delete;
                struct {
                        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
                        const void *data; /* borrowed */
                        uint32_t len;     /* the kept tail stays under one chunk */
                        /* has_offset: the upload's offset the bytes follow, as the client sent
                         * it. Over the shared state another relay may have moved the offset
                         * since (a late append of a cut connection): then nothing is appended
                         * and the request fails with -ESTALE (tus: 409). The local store's one
                         * writer and the face's claims order a relay's own requests. */
                        bool has_offset;
                        uint64_t offset;
                } tail_append;
                struct {
                        uint64_t now;              /* unix seconds */
                        struct chp_gc_stats stats; /* result */
                } gc;
                /* Quarantine: the id goes on the list (kept until lifted), the file is deleted
                 * (as CHP_REQ_FILE_DELETE) and an upload writing it now is dropped. From then on
                 * the writer refuses to create an upload of it or commit it, and
                 * chp_store_file_get answers CHP_EQUARANTINED. lift: take it off the list
                 * (-ENOENT when it was not on it). */
                struct {
                        uint8_t file_id[CHP_HASH_BYTES];
                        bool lift;
                        bool deleted; /* result: a stored file was deleted */
                } quarantine;
                struct {
                        const struct chp_audit_item *items; /* borrowed */
                        size_t n;
                        uint64_t now;
                        struct chp_audit_stats stats; /* result: what this batch did */
                } audit;
        } u;
        int status;                 /* result: 0 or a negative code */
        chp_store_done_fn done;     /* called on the writer thread; may be NULL */
        void *ctx;                  /* the caller's */
        struct chp_store_req *next; /* the store's while in flight */
};

/* Queues req. A PUT with data and !verified is hashed here, on the calling thread, and refused
 * with CHP_EMISMATCH (nothing stored, done not called) when the bytes do not match the address.
 * Returns 0 when queued (done will be called exactly once), or a negative code when refused
 * (done is not called). */
__attribute__((warn_unused_result)) int chp_store_submit(struct chp_store *s,
                                                         struct chp_store_req *req);

/* Submits req and waits for it; returns req->status (or the refusal). Not for loop threads. */
__attribute__((warn_unused_result)) int chp_store_run(struct chp_store *s,
                                                      struct chp_store_req *req);

/* Synchronous conveniences over chp_store_run. */
__attribute__((warn_unused_result)) int chp_store_put(struct chp_store *s,
                                                      const uint8_t addr[CHP_HASH_BYTES],
                                                      const void *data, uint32_t len);
__attribute__((warn_unused_result)) int chp_store_commit(struct chp_store *s,
                                                         const uint8_t *manifest, size_t len,
                                                         uint64_t expires,
                                                         uint8_t file_id[CHP_HASH_BYTES] /* out */);
__attribute__((warn_unused_result)) int chp_store_gc(struct chp_store *s, uint64_t now,
                                                     struct chp_gc_stats *stats /* out */);

/* ---- reads (any thread) ------------------------------------------------------------------ */

struct chp_seg; /* the chunk backend's reference to the file that holds the chunk */

struct chp_chunk_loc {
        uint32_t len;
        uint64_t xxh3;
        bool is_inline;  /* bytes are in LMDB: use chp_store_read */
        bool remote;     /* the shared state (rados_shared): nothing is known before the bytes
                            are read (len 0, fd -1): read with chp_store_read_async, whose
                            length the caller checks against what it expects */
        int fd;          /* file holding the bytes, valid until chp_store_loc_release; -1 when
                            the chunk backend has no file (not segments): use chp_store_read */
        uint64_t offset; /* of the chunk's first byte in fd */
        struct chp_seg *seg;
};

/* Where a chunk's bytes are; -ENOENT if not stored. For segment chunks the fd stays open (even if
 * compaction moves the chunk) until the caller releases loc with chp_store_loc_release. */
__attribute__((warn_unused_result)) int chp_store_locate(struct chp_store *s,
                                                         const uint8_t addr[CHP_HASH_BYTES],
                                                         struct chp_chunk_loc *loc /* out */);
void chp_store_loc_release(struct chp_store *s, struct chp_chunk_loc *loc);

/* Copies a whole chunk into buf (cap bytes) and checks its XXH3. Returns its length, -ENOENT,
 * -ENOBUFS if cap is too small, CHP_ECORRUPT on a checksum mismatch, -EIO. */
__attribute__((warn_unused_result)) ssize_t
chp_store_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf, size_t cap);

/* The result of chp_store_read_async when it completes later: the chunk's length, or a code as
 * chp_store_read returns. Called exactly once, on a thread of the store's backend (never the
 * caller's): it must not block, and a loop posts the result to itself (chp_loop_post). */
typedef void (*chp_store_read_fn)(void *ctx, ssize_t result);

/* Reads a whole chunk into buf (cap bytes), as chp_store_read, without blocking the calling
 * thread on a remote backend. When the bytes are at hand (inline, or in a local file) it reads
 * them now and returns the length or a code as chp_store_read does; done is not called. When
 * the backend must fetch them (RADOS) it returns -EINPROGRESS, and done(ctx, result) follows:
 * buf stays borrowed until then, and the XXH3 is checked before it. Any thread. */
__attribute__((warn_unused_result)) ssize_t chp_store_read_async(struct chp_store *s,
                                                                 const uint8_t addr[CHP_HASH_BYTES],
                                                                 void *buf, size_t cap,
                                                                 chp_store_read_fn done, void *ctx);

/* For each of n addresses (n * CHP_HASH_BYTES bytes), present[i] = 1 if stored, else 0. */
__attribute__((warn_unused_result)) int chp_store_has(struct chp_store *s, const uint8_t *addrs,
                                                      size_t n, uint8_t *present /* out */);

/* References to a chunk from files and upload sessions (0 if none or not stored); -ENOTSUP over
 * the shared state (rados_shared), whose referrers are not counted cheaply. */
__attribute__((warn_unused_result)) int chp_store_refcount(struct chp_store *s,
                                                           const uint8_t addr[CHP_HASH_BYTES],
                                                           uint64_t *count /* out */);

struct chp_file_info {
        char tenant[CHP_TENANT_MAX + 1];
        uint64_t created, expires, size;
};

/* A copy of a file's encoded manifest (caller frees *manifest with free()) and its info.
 * -ENOENT if unknown, CHP_EQUARANTINED if unknown and quarantined. info may be NULL; manifest NULL
 * (then len is ignored) asks only whether the file exists, copying nothing. */
__attribute__((warn_unused_result)) int chp_store_file_get(struct chp_store *s,
                                                           const uint8_t id[CHP_HASH_BYTES],
                                                           uint8_t **manifest /* out */,
                                                           size_t *len /* out */,
                                                           struct chp_file_info *info /* out */);

/* The tus Upload-Metadata that file id was committed with (kept from the first tus upload of
 * its bytes that had metadata, until the file is deleted) into buf (cap bytes; at most
 * CHP_UPLOAD_META_MAX are needed). Returns its length, 0 when the file has none (or is
 * unknown), -ENOBUFS, CHP_ECORRUPT. */
__attribute__((warn_unused_result)) ssize_t chp_store_file_meta(struct chp_store *s,
                                                                const uint8_t id[CHP_HASH_BYTES],
                                                                uint8_t *buf /* out */, size_t cap);

/* An upload session's record; -ENOENT if unknown. */
__attribute__((warn_unused_result)) int chp_store_upload_get(struct chp_store *s,
                                                             const uint8_t id[CHP_UPLOAD_ID_BYTES],
                                                             struct chp_upload *out /* out */);

/* A copy of a native upload's manifest (caller frees *manifest with free()); -ENOENT if the
 * upload is unknown or has none. */
__attribute__((warn_unused_result)) int chp_store_upload_manifest(
        struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES], uint8_t **manifest /* out */,
        size_t *len /* out */);

/* How far a sequential (tus) upload has come: the number of chunks durable from index 0 on
 * without a gap, and the bytes kept past them (tail pieces). -ENOENT if the upload is unknown. */
__attribute__((warn_unused_result)) int chp_store_upload_progress(
        struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES], uint32_t *chunks /* out */,
        size_t *tail_len /* out */);
/* The kept tail bytes, in order, into buf (cap bytes); returns their length or -ENOBUFS. */
__attribute__((warn_unused_result)) ssize_t chp_store_upload_tail(
        struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES], uint8_t *buf, size_t cap);

/* The upload that is uploading file_id now; -ENOENT if none. */
__attribute__((warn_unused_result)) int chp_store_pending(
        struct chp_store *s, const uint8_t file_id[CHP_HASH_BYTES],
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES] /* out */);

/* The chunks recorded for an upload: have[i] = 1 for each durable chunk index i < n (indexes
 * at or past n are not reported); addrs (may be NULL) receives their addresses. */
__attribute__((warn_unused_result)) int
chp_store_upload_chunks(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                        uint8_t *have /* out */, uint8_t *addrs /* out, n * CHP_HASH_BYTES */,
                        size_t n);

/* A tenant's usage (unknown tenant, or "": all zeros) as of the last committed write, in one
 * read snapshot; any thread. day_bytes counts for the UTC day `day` only: a caller asking about
 * another day reads 0. The empty tenant (trusted callers, no quota) is not tracked. */
__attribute__((warn_unused_result)) int
chp_store_tenant_usage(struct chp_store *s, const char *tenant,
                       struct chp_tenant_usage *out /* out */);

/* ---- asynchronous record lookups ----------------------------------------------------------
 * The records a face reads on its loop thread (a file, an upload's record, progress, chunks or
 * manifest, the upload of a pending file, whether chunks exist), asked without blocking that
 * thread: over a remote backend each is a network round trip. One request, filled in by the
 * caller, answered by chp_store_lookup now or later (the local store: always now, through the
 * synchronous functions above, which stay for threads that may block). */

enum chp_store_lookup_kind {
        CHP_LOOKUP_FILE,            /* chp_store_file_get: info; the manifest if want_manifest */
        CHP_LOOKUP_FILE_META,       /* chp_store_file_meta: meta, its length in len */
        CHP_LOOKUP_UPLOAD,          /* chp_store_upload_get: into *upload */
        CHP_LOOKUP_UPLOAD_PROGRESS, /* chp_store_upload_progress: chunks, len (tail bytes); and
                                       with buf, then chp_store_upload_tail into it (len: what
                                       it read; the upload's one writer keeps them in step) */
        CHP_LOOKUP_UPLOAD_CHUNKS,   /* chp_store_upload_chunks: present[n], addrs (may be NULL) */
        CHP_LOOKUP_UPLOAD_MANIFEST, /* chp_store_upload_manifest: manifest */
        CHP_LOOKUP_PENDING,         /* chp_store_pending: upload_id */
        CHP_LOOKUP_HAS,             /* chp_store_has: present[n] for n addrs */
};

struct chp_store_lookup;
/* A lookup answered later: q->status and the outputs are in. Called exactly once, on a thread
 * of the store's (never the caller's): it must not block, and a loop posts q to itself
 * (chp_loop_post). From its return on, q is the caller's again. */
typedef void (*chp_store_lookup_fn)(struct chp_store_lookup *q);

/* Ownership: the caller owns q (typically inside its own operation struct) and every buffer it
 * points to; both are borrowed by the store from chp_store_lookup until done has been called
 * (or, answered now, until it returns). Outputs are cleared by chp_store_lookup and valid only
 * when status is 0. manifest and meta are the request's own (malloc'd by the store): the caller
 * takes them (setting them NULL) or frees them with chp_store_lookup_clear. */
struct chp_store_lookup {
        enum chp_store_lookup_kind kind;
        /* in */
        uint8_t id[CHP_HASH_BYTES]; /* a file id (FILE, FILE_META, PENDING), or an upload id
                                       in the first CHP_UPLOAD_ID_BYTES (UPLOAD*) */
        bool want_manifest;         /* FILE: copy the manifest too (else info only: existence) */
        const uint8_t *addrs;       /* HAS: n addresses (n * CHP_HASH_BYTES), borrowed */
        size_t n;                   /* HAS: addresses; UPLOAD_CHUNKS: indexes asked about */
        uint8_t *present;           /* HAS, UPLOAD_CHUNKS: n bytes, the caller's */
        uint8_t *chunk_addrs;       /* UPLOAD_CHUNKS: NULL, or n * CHP_HASH_BYTES, the caller's */
        uint8_t *buf;               /* UPLOAD_PROGRESS: NULL, or the tail bytes go here */
        size_t cap;                 /* (cap bytes), the caller's */
        struct chp_upload *upload;  /* UPLOAD: the record goes here, the caller's */
        /* out (status 0) */
        int status;        /* 0 or a code as the synchronous function returns */
        uint8_t *manifest; /* FILE (want_manifest), UPLOAD_MANIFEST: the request's */
        size_t manifest_len;
        uint8_t *meta; /* FILE_META: the request's; NULL when the file has none (most) */
        struct chp_file_info info; /* FILE */
        size_t len;                /* FILE_META: metadata bytes (0: none); PROGRESS: tail bytes */
        uint32_t chunks;           /* UPLOAD_PROGRESS: chunks durable from 0 without a gap */
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES]; /* PENDING */
        /* completion */
        chp_store_lookup_fn done; /* called only when chp_store_lookup returned -EINPROGRESS */
        void *ctx;                /* the caller's */
};

/* Answers q. Now: returns q->status (0, or a code as the synchronous function of its kind
 * returns, -EINVAL for an unknown kind), and done is not called. Later (a backend that must
 * fetch the record; the fault build's CHAPAR_STORE_DEFER_READS): returns -EINPROGRESS, and
 * done(q) follows exactly once with q->status set (CHP_ECLOSED when the store closes first).
 * Any thread. */
__attribute__((warn_unused_result)) int chp_store_lookup(struct chp_store *s,
                                                         struct chp_store_lookup *q);

/* Frees what q's outputs own (manifest, meta) and clears them; the inputs stay. NULL is a no-op.
 * Not while q is in flight. */
void chp_store_lookup_clear(struct chp_store_lookup *q);

/* ---- administration (any thread; each call one read snapshot) ---------------------------- */

/* A listing position: the created time (big-endian) and the id (zero-padded) of the last entry
 * a page returned. Pages go newest first (created, then id, descending), so each entry is on
 * exactly one page however many are added meanwhile (newer ones go before the first page). */
#define CHP_LIST_CURSOR_BYTES 40
#define CHP_LIST_MAX          1000 /* most entries of one page */

struct chp_file_entry {
        uint8_t id[CHP_HASH_BYTES];
        struct chp_file_info info;
};

/* One page of the files of tenant (NULL: every tenant; "": files stored without one), newest
 * first, after cursor (NULL: from the newest), at most max (<= CHP_LIST_MAX) into out. *n is
 * how many; *more says whether another page follows, and then next is its cursor. Served by an
 * index (tenant, created, id) the writer keeps with the files: a page costs O(max). -EINVAL. */
__attribute__((warn_unused_result)) int
chp_store_files_list(struct chp_store *s, const char *tenant,
                     const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_file_entry *out,
                     size_t max, size_t *n /* out */, bool *more /* out */,
                     uint8_t next[CHP_LIST_CURSOR_BYTES] /* out */);

/* The same for upload sessions (out: their records, meta included). Upload sessions are few
 * (each tenant's are capped by its quota, and they expire), so a page is one scan over them:
 * O(uploads x log max), without an index. */
__attribute__((warn_unused_result)) int
chp_store_uploads_list(struct chp_store *s, const char *tenant,
                       const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_upload *out,
                       size_t max, size_t *n /* out */, bool *more /* out */,
                       uint8_t next[CHP_LIST_CURSOR_BYTES] /* out */);

/* Calls fn for every tracked tenant, by name, with its usage; fn's nonzero return stops the walk
 * and is returned. */
__attribute__((warn_unused_result)) int
chp_store_tenants_each(struct chp_store *s,
                       int (*fn)(void *ctx, const char *tenant, const struct chp_tenant_usage *u),
                       void *ctx);

/* Whether id is quarantined: 1 yes (*since: unix seconds it was put there; may be NULL), 0 no. */
__attribute__((warn_unused_result)) int chp_store_quarantined(struct chp_store *s,
                                                              const uint8_t id[CHP_HASH_BYTES],
                                                              uint64_t *since /* out */);

/* Calls fn for every quarantined id (id order) with the time it was put there. */
__attribute__((warn_unused_result)) int
chp_store_quarantine_each(struct chp_store *s,
                          int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since),
                          void *ctx);

/* The live scrub: what it has done so far, readable from any thread while it runs. */
struct chp_scrub {
        _Atomic uint64_t chunks, bytes, problems, missing; /* missing: freed while scrubbed */
        _Atomic uint64_t total;                            /* chunks stored when it began */
        _Atomic int stop; /* set to make it end early: it returns within about 0.1 s */
};

/* Reads every stored chunk back and checks its XXH3 and SHA-256 while the relay serves:
 * addresses are taken in batches from short read snapshots (no snapshot is held for long, so
 * the writer's pages are reused), each chunk is read like a download, and the whole is held to
 * rate bytes per second (0: unthrottled) by sleeping between chunks. A chunk freed meanwhile is
 * counted as missing, not as a problem. problem() (may be NULL) is called for each problem.
 * Blocks for the duration: run it on a thread of its own. 0 (also when stopped), or a negative
 * code when the store cannot be read. */
__attribute__((warn_unused_result)) int chp_store_scrub(struct chp_store *s, uint64_t rate,
                                                        struct chp_scrub *progress,
                                                        chp_verify_problem_fn problem, void *ctx);

struct chp_store_stats {
        uint64_t chunks, inline_chunks, files, uploads;
        uint64_t segments, segment_bytes, live_bytes;
};
/* Counts of the store's records and segments, cheap (/metrics renders them on a loop thread);
 * -ENOTSUP over the shared state (rados_shared), whose objects are not counted cheaply. */
__attribute__((warn_unused_result)) int chp_store_stats(struct chp_store *s,
                                                        struct chp_store_stats *out /* out */);
/* The same for an operator's page, on a thread that may block: over the shared state chunks,
 * files and uploads are counted by listing the pool's namespaces, O(objects) (segments, bytes
 * and inline_chunks 0); otherwise chp_store_stats. */
__attribute__((warn_unused_result)) int
chp_store_stats_counted(struct chp_store *s, struct chp_store_stats *out /* out */);

/* ---- the chunk backend's operations (for /metrics) --------------------------------------- */

/* Kinds of backend operation, and classes of their errors. */
enum chp_store_op {
        CHP_STORE_OP_WRITE,        /* a chunk's bytes written */
        CHP_STORE_OP_READ,         /* a chunk's bytes read */
        CHP_STORE_OP_REMOVE,       /* a dead chunk removed */
        CHP_STORE_OP_RECORD_WRITE, /* rados_shared: any other write (records, indexes, leases) */
        CHP_STORE_OP_RECORD_READ,  /* rados_shared: any other read */
        CHP_STORE_NOPS
};
enum chp_store_op_error {
        CHP_STORE_ERR_UNAVAILABLE, /* timeout, no connection: the cluster did not answer */
        CHP_STORE_ERR_NOSPC,       /* ENOSPC, EDQUOT: the pool is full or over quota */
        CHP_STORE_ERR_LOCK,        /* a write refused: the pool's lock may have lapsed */
        CHP_STORE_ERR_OTHER,
        CHP_STORE_NERRS
};
#define CHP_STORE_OP_BUCKETS 11
/* The latency buckets' upper bounds, in seconds: those of chapar_commit_seconds. */
extern const double chp_store_op_buckets[CHP_STORE_OP_BUCKETS];

/* A snapshot of counters the backend keeps with atomics since open (each read on its own: they
 * need not add up exactly while operations run). */
struct chp_store_backend_stats {
        const char *backend;                                  /* "local", "rados"; static */
        uint64_t op_le[CHP_STORE_NOPS][CHP_STORE_OP_BUCKETS]; /* completed ops at most bucket */
        uint64_t op_count[CHP_STORE_NOPS];                    /* completed ops (+Inf) */
        uint64_t op_sum_us[CHP_STORE_NOPS];                   /* their latency, summed */
        uint64_t inflight;                                    /* operations in flight now */
        uint64_t errors[CHP_STORE_NOPS][CHP_STORE_NERRS];     /* failed operations */
        uint64_t lock_renewals_failed; /* renewals of the pool's lock that failed */
        bool lock_lost; /* now: the lock may have lapsed, writes are refused (CHP_EUNAVAILABLE) */
        /* the local read cache ([store] cache_size; rados.c, cache.h), when there is one */
        bool cache;
        uint64_t cache_hits, cache_misses; /* chunks served from it, or looked for in vain */
        uint64_t cache_stored, cache_dropped, cache_evictions; /* fills written or dropped; files
                                                                  removed for room or damage */
        uint64_t cache_bytes, cache_chunks;                   /* held now */
};
/* Fills out from the store's backend, from any thread; -ENOTSUP when the backend counts nothing
 * (the local backend). Takes no transaction and never waits. */
__attribute__((warn_unused_result)) int
chp_store_backend_stats(struct chp_store *s, struct chp_store_backend_stats *out /* out */);

/* ---- fault injection (test builds only) ------------------------------------------------- */

#ifdef CHAPAR_FAULT_INJECTION
/* The places where the store writes. Tests make the nth call at a site fail, to show that every
 * acknowledged chunk survives, every failure reaches its caller and reads go on. */
enum chp_store_fault_site {
        CHP_FAULT_SEG_WRITE,  /* pwrite of chunk bytes into a segment (puts and compaction); a
                                 failing call first writes half its bytes: a torn append */
        CHP_FAULT_SEG_SYNC,   /* fdatasync of a segment */
        CHP_FAULT_SEG_CREATE, /* creating a segment file: its open, then (sync full) the fsync
                                 of the segments directory; two calls */
        CHP_FAULT_COMMIT,     /* the batch's LMDB commit (fails as if LMDB had failed it) */
        CHP_FAULT_SITES
};

/* From the nth call at site on (1 = the next one), count calls fail with err (a negative errno);
 * count 0 disarms the site. Any thread; takes effect for calls made after it returns. */
void chp_store_fault_arm(struct chp_store *s, enum chp_store_fault_site site, uint64_t nth,
                         uint64_t count, int err);

/* How many calls the store has made at site since it was opened. A store opened in this build
 * also arms what the environment variable CHAPAR_STORE_FAULT lists ("SITE:NTH:COUNT:ERR", SITE
 * write|sync|create|commit, ERR EIO|ENOSPC|EDQUOT, comma-separated), for whole-relay tests.
 * With CHAPAR_STORE_DEFER_READS=MS set at open, it reads as over a remote backend: no chunk has a
 * file (chp_store_locate gives fd -1) and chp_store_read_async completes every non-inline read
 * from a thread of the store's, MS milliseconds (0 allowed) after the call; chp_store_lookup
 * answers every lookup the same way. At close the store logs how many were deferred, and how
 * many chunk reads and record reads of chp_store_lookup's kinds were made synchronously
 * meanwhile (which a remote backend would have made a loop thread wait for). */
uint64_t chp_store_fault_calls(struct chp_store *s, enum chp_store_fault_site site);

/* Calls fn(ctx) in chp_store_audit after each mark and before it submits its repairs, so that a
 * test can land requests in between; NULL removes it. Set it before the audit starts. */
void chp_store_audit_hook(struct chp_store *s, void (*fn)(void *ctx), void *ctx);
/* Sets the most references one audit pass marks (default 4 Mi), so that tests see several. */
void chp_store_audit_limit(struct chp_store *s, size_t refs_max);
#endif

/* ---- audit ----------------------------------------------------------------------------- */

/* The mark-and-sweep audit, online: counts every chunk's true references (files' manifests,
 * the chunk entries of uploads that exist) in one read snapshot on the calling thread (mark),
 * then hands the writer small batches of repairs (CHP_REQ_AUDIT, a few thousand records each,
 * so the writer is never held for long): a reference count that differs from the truth is
 * corrected by the difference (which requests committed since the snapshot leave unchanged),
 * upload entries of vanished uploads are dropped, a tenant's usage that differs from its files
 * and uploads is corrected the same way, and a chunk referenced by nothing is recorded
 * as an orphan and freed by a later audit once orphan_grace has passed since (a put of the
 * chunk in between restarts that clock: a chunk being attached is never freed). Not on a loop
 * thread (it waits for the writer); one audit at a time (a second call waits). now: unix
 * seconds. Returns 0 with *out filled, or a negative code (what was repaired before it stays
 * repaired). Memory: CHP_HASH_BYTES per reference during the mark, at most 128 MiB: a store with
 * more is marked and swept in several passes, each over a range of chunk addresses. */
__attribute__((warn_unused_result)) int chp_store_audit(struct chp_store *s, uint64_t now,
                                                        struct chp_audit_stats *out /* out */);

/* ---- scrub ----------------------------------------------------------------------------- */

struct chp_verify_stats {
        uint64_t chunks, bytes, files, uploads, segments, unreferenced, problems;
};

/* Checks every chunk's XXH3 and SHA-256, every manifest's chunks, every reference count and
 * every segment's accounting; calls problem() once per problem found. Returns 0 when it could
 * run (problems are counted in stats), or a negative code when it could not read the store. */
__attribute__((warn_unused_result)) int chp_store_verify(struct chp_store *s,
                                                         chp_verify_problem_fn problem, void *ctx,
                                                         struct chp_verify_stats *stats /* out */);

#endif
