/* store_int.h — what the pieces of the store share: struct chp_store and the functions one
 * file of server/store/ calls in another. Private to server/store/; callers use store.h.
 *
 * Threads: fields under "writer thread only" and every function taking an MDB_txn that writes
 * belong to the writer thread (writer.c); the segment table is shared under seg_lock; the rest
 * is fixed after chp_store_open. Errors are 0 / negative codes of err.h, as in store.h.
 */
#ifndef CHP_STORE_INT_H
#define CHP_STORE_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <lmdb.h>

#include "backend.h"
#include "err.h"
#include "records.h"
#include "store.h"

/* Sizing against the filesystem: a segment is at most 1/SEG_FS_SHARE of it, so that a full disk
 * is many segments, most of which die whole; puts leave 1/RESERVE_FS_SHARE of it free (within
 * RESERVE_MIN..RESERVE_MAX) for the index, so that GC can always commit. */
#define SEG_FS_SHARE     16
#define RESERVE_FS_SHARE 64
#define RESERVE_MIN      (1ull << 20)
#define RESERVE_MAX      (64ull << 20)
/* While space is short, segments (the open one included) whose live bytes are below this share
 * of their total are compacted, whatever compact_ratio says. */
#define SHORT_RATIO 0.75
/* An audit pass holds at most this many references (32 bytes each: 128 MiB). */
#define AUDIT_REFS_MAX ((size_t)4 << 20)

#ifdef CHAPAR_FAULT_INJECTION
struct fault_site {
        _Atomic uint64_t calls, first, last;
        _Atomic int err;
};
#endif

struct chp_store {
        struct chp_store_opts opts;
        uint64_t seg_max; /* segment_size, clamped to the filesystem at open */
        uint64_t reserve; /* bytes puts leave free */
        char *dir;
        int lock_fd;
        int segdir_fd; /* dir/segments, for the free space of the filesystem chunks go to */
        MDB_env *env;
        MDB_dbi db_chunks, db_refs, db_files, db_uploads, db_upchunks, db_expiry, db_meta,
            db_pending, db_tails;
        MDB_dbi db_filemeta; /* file id -> tus Upload-Metadata of the first upload that had some */
        MDB_dbi db_tenants;  /* tenant -> its usage (tenants.c) */
        MDB_dbi db_orphans;  /* chunk referenced by nothing -> when the audit first saw it so */
        MDB_dbi db_fileindex;        /* files by (tenant, created, id): listings (admin.c) */
        MDB_dbi db_quarantine;       /* file id -> when the operator quarantined it (admin.c) */
        struct chp_backend *backend; /* chunk bytes above inline_max */
        /* rados_shared: the records are the pool's (shared_int.h), and every public function
         * hands its call to shared_*; NULL: the local index */
        struct store_shared *shared;

        pthread_mutex_t q_lock;
        pthread_cond_t q_cond;
        struct chp_store_req *q_head, *q_tail;
        bool stopping;
        pthread_t writer;
        bool writer_started;
        pthread_mutex_t audit_lock; /* one chp_store_audit at a time: two would both correct
                                       the same drift */
        size_t audit_refs_max;      /* references one audit pass holds in memory */

        /* writer thread only */
        bool out_of_space; /* ENOSPC or EDQUOT seen since the last GC */
        bool space_known;  /* space_free is this batch's estimate */
        uint64_t space_free;
#ifdef CHAPAR_FAULT_INJECTION
        struct fault_site faults[CHP_FAULT_SITES];
        /* CHAPAR_STORE_DEFER_READS: chunk reads as a remote backend's (read.c); NULL: off */
        struct store_defer *defer;
        void (*audit_hook)(void *ctx);
        void *audit_hook_ctx;
#endif
};

/* What the store over the shared state (rados_shared) does not offer: the live scrub,
 * chp_store_refcount and the cheap chp_store_stats answer -ENOTSUP there (the listings, the
 * quarantine list's reads and chp_store_stats_counted are shared_admin.c's). */
#ifdef CHAPAR_RADOS
#define LOCAL_ONLY(s)                                                                              \
        do {                                                                                       \
                if ((s)->shared)                                                                   \
                        return -ENOTSUP;                                                           \
        } while (0)
#else
#define LOCAL_ONLY(s) ((void)(s))
#endif

/* ---- fault injection (store.c) ------------------------------------------------------------ */

#ifdef CHAPAR_FAULT_INJECTION
/* Counts a call at site; returns the armed error when this call is one that must fail. */
static inline int fault_at(struct chp_store *s, enum chp_store_fault_site site)
{
        struct fault_site *f = &s->faults[site];
        uint64_t n = atomic_fetch_add(&f->calls, 1) + 1;
        if (n >= atomic_load(&f->first) && n <= atomic_load(&f->last))
                return atomic_load(&f->err);
        return 0;
}
#else
#define fault_at(s, site) 0
#endif

#ifdef CHAPAR_FAULT_INJECTION
/* Test builds (read.c): when CHAPAR_STORE_DEFER_READS is set (to a delay in ms, 0 allowed), the
 * store reads chunk bytes as over a remote backend: chp_store_locate gives no file and
 * chp_store_read_async completes every non-inline read from a thread of the store's, after the
 * delay. start: -ENOMEM, -EAGAIN (no thread), 0 when unset. stop completes what is queued
 * (each done called once) and joins the thread; NULL-safe, called by chp_store_close. */
int store_defer_start(struct chp_store *s);
void store_defer_stop(struct chp_store *s);
#endif

/* ---- LMDB and records (store.c) ----------------------------------------------------------- */

static inline MDB_val val(const void *p, size_t n)
{
        return (MDB_val){.mv_size = n, .mv_data = (void *)p};
}

static inline bool is_space_error(int rc)
{
        return rc == -ENOSPC || rc == -EDQUOT;
}

/* The codec over LMDB values: CHP_ECORRUPT for a record that does not parse. */
static inline int parse_chunk(const MDB_val *v, struct chp_rec_chunk *c)
{
        return chp_rec_chunk_parse(v->mv_data, v->mv_size, c) < 0 ? CHP_ECORRUPT : 0;
}
/* The backend's place of a chunk record c of address addr (borrowed by the place). */
static inline struct chp_backend_place chunk_place(const struct chp_rec_chunk *c,
                                                   const uint8_t addr[CHP_HASH_BYTES])
{
        return (struct chp_backend_place){
            .unit = c->seg, .offset = c->offset, .addr = addr, .len = c->len};
}

static inline int parse_file(const MDB_val *v, struct chp_rec_file *f)
{
        return chp_rec_file_parse(v->mv_data, v->mv_size, f) < 0 ? CHP_ECORRUPT : 0;
}
static inline int parse_upload_rec(const MDB_val *v, struct chp_rec_upload *u)
{
        return chp_rec_upload_parse(v->mv_data, v->mv_size, u) < 0 ? CHP_ECORRUPT : 0;
}

/* ---- writer (writer.c) -------------------------------------------------------------------- */

void *store_writer_main(void *arg);
/* Takes len bytes of this batch's estimate of free space; -ENOSPC if puts may not have them
 * (compacting: GC moving live bytes, which may use the segment's worth puts leave for it). */
int store_space_take(struct chp_store *s, uint64_t len, bool compacting);

/* ---- requests (apply.c, gc.c) ------------------------------------------------------------- */

/* Applies one request inside txn (a nested transaction of the batch). Writer thread. */
int store_apply(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req);
int store_apply_gc(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req);
int store_file_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES],
                      struct chp_gc_stats *st);
int store_upload_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                        struct chp_gc_stats *st);

/* ---- administration (admin.c) ------------------------------------------------------------ */

/* Adds (add) or drops the index entries of a file (writer thread, or open). */
int store_index_file(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES],
                     const void *tenant, size_t tlen, uint64_t created, bool add);
/* Indexes every file into the (empty) fileindex db: at open, for a store written before it. */
int store_index_rebuild(struct chp_store *s, MDB_txn *txn);
/* CHP_EQUARANTINED when id is on the quarantine list, else 0 (or an LMDB error). */
int store_quarantine_check(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES]);
int store_apply_quarantine(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req);

/* ---- tenants' usage (tenants.c) ----------------------------------------------------------- */

/* A change to one tenant's usage; counters saturate at 0. day_bytes: bytes of uploads begun on
 * UTC day `day` (a record of another day starts that day over). */
struct usage_delta {
        int64_t stored_bytes, files, incomplete, incomplete_bytes;
        uint64_t day, day_bytes;
};

/* The usage of tenant (tlen bytes; "" is not tracked: zeros) in txn; unknown: zeros. */
int store_usage_get(struct chp_store *s, MDB_txn *txn, const void *tenant, size_t tlen,
                    struct chp_tenant_usage *out);
/* Applies d to tenant's record in txn (writer thread); the empty tenant is skipped. */
int store_usage_add(struct chp_store *s, MDB_txn *txn, const void *tenant, size_t tlen,
                    const struct usage_delta *d);
/* Applies d to u in memory (no I/O): true when a count would have gone below zero (kept at 0). */
bool store_usage_apply(struct chp_tenant_usage *u, const struct usage_delta *d);
/* Whether `sessions` more upload sessions adding `declared` known bytes fit q against use: 0, or
 * CHP_EQUOTA with *hit saying which limit they would pass. Pure. */
int store_quota_fits(const struct chp_tenant_usage *use, const struct chp_store_quota *q,
                     uint64_t declared, uint64_t sessions, enum chp_store_quota_hit *hit);
/* Recomputes every tenant's usage from the files and uploads dbs into the (empty) tenants db:
 * at open, for a store written before it existed. Records that do not parse are skipped. */
int store_usage_rebuild(struct chp_store *s, MDB_txn *txn, uint64_t now);
/* What files and upload records say each tenant holds (the day's bytes left 0), for verify and
 * the audit: a list sorted by name; the empty tenant is left out. */
struct tenant_sum {
        char name[CHP_TENANT_MAX];
        uint8_t len;
        bool seen; /* the caller's: its tenants record was found */
        struct chp_tenant_usage u;
};
struct usage_sums {
        struct tenant_sum *t;
        size_t n, cap;
};
int store_usage_count(struct chp_store *s, MDB_txn *txn, struct usage_sums *out);
/* tenant's sum, added (zeros) if absent; NULL when out of memory. */
struct tenant_sum *store_usage_find(struct usage_sums *l, const void *tenant, size_t tlen);
void store_usage_sums_free(struct usage_sums *l);
/* The contribution of an upload record to its tenant's incomplete uploads (sign +1 or -1);
 * a complete record contributes nothing. */
void store_usage_of_upload(const struct chp_rec_upload *u, int sign, struct usage_delta *d);

/* ---- audit (audit.c) ---------------------------------------------------------------------- */

/* A growing list of chunk addresses: the references the scrub and the audit count. */
struct addr_list {
        uint8_t *addrs; /* n * CHP_HASH_BYTES */
        size_t n, cap;
};
int store_addrs_push(struct addr_list *l, const uint8_t addr[CHP_HASH_BYTES]); /* or -ENOMEM */
void store_addrs_sort(struct addr_list *l);
/* How many times addr is in the sorted list. */
uint64_t store_addrs_count(const struct addr_list *l, const uint8_t addr[CHP_HASH_BYTES]);
void store_addrs_free(struct addr_list *l);
/* A chunk's stored reference count in txn (0 when it has none); CHP_ECORRUPT. */
int store_refs_get(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                   uint64_t *count);

enum audit_kind {
        AUDIT_FIX,     /* refs of addr: subtract drift (stored - true, at the mark) */
        AUDIT_ORPHAN,  /* addr was referenced by nothing at the mark */
        AUDIT_CLEAR,   /* addr has an orphans entry but was referenced or absent at the mark */
        AUDIT_UPCHUNK, /* key: an upchunks entry of an upload that did not exist */
        AUDIT_TAIL,    /* key: a tails entry of an upload that did not exist */
        AUDIT_USAGE,   /* key: a tenant whose usage record differed from its records */
};

struct chp_audit_item {
        uint8_t kind;
        uint8_t klen;
        uint8_t key[CHP_TENANT_MAX]; /* chunk address, upload id + be32, or tenant name */
        int64_t drift[4];            /* AUDIT_FIX: [0]; AUDIT_USAGE: stored bytes, files, incomplete
                                        uploads, incomplete bytes (record - truth, at the mark) */
};
int store_apply_audit(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req);
/* Drops addr's orphans entry, if any (a put of the chunk restarts its grace). */
int store_orphan_forget(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES]);
/* Frees a chunk record and its bytes (apply.c), counting into freed/bytes when not NULL. */
int store_chunk_free(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                     uint64_t *freed, uint64_t *bytes);

/* ---- reads (read.c) ----------------------------------------------------------------------- */

int store_read_begin(struct chp_store *s, MDB_txn **txn);

/* ---- the backend's host (apply.c: chunk records) ------------------------------------------ */

int store_chunk_get(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                    struct chp_backend_place *place, uint32_t *len, uint64_t *xxh3);
int store_chunk_moved(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                      const struct chp_backend_place *place, uint32_t len, uint64_t xxh3);

#endif
