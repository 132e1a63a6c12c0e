/* rados.c — the RADOS chunk backend (backend.h): each chunk above inline_max is one object of the
 * pool, named by the lowercase hex of its address, in the namespace "c".
 *
 * The store's LMDB index keeps every chunk record as with segments; this backend adds a "rados"
 * db holding one totals record (objects and bytes the index knows), kept in the same nested
 * transactions as the chunk records. Writes (writer thread): put starts rados_aio_write_full and
 * returns, with at most rados_inflight operations in flight; sync waits for the batch's puts
 * (the first error fails the batch); drops are remembered and their objects removed once the
 * batch commits, without waiting on the acknowledgement path (the removals are reaped later;
 * one that fails leaves an object the index does not know, which verify reports). Reads (any
 * thread) are rados_read; read_async is rados_aio_read with done called on librados' thread.
 * One relay per pool: open takes an exclusive RADOS lock on the object "owner" of namespace "i",
 * renewed by a thread of the backend, released by close. Its cookie names the data directory
 * (an id kept in the "rados" db) and the host, so that a relay restarted after a crash breaks the
 * lock its previous run left instead of waiting for it to expire. Once a renewal has failed and
 * the lease (30 s, counted from before the last success) may have lapsed, puts fail with
 * CHP_EUNAVAILABLE and removals wait, until the renewer renews the lock or, when nobody holds it,
 * takes it again with the same cookie. Counters (op_stats): each write, read and removal is timed
 * from its start to its completion (its callback), with what is in flight and errors by class.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>

#include "backend.h"
#include "bytes.h"
#include "cache.h"
#include "err.h"
#include "log.h"
#include "net.h"

#define NS_CHUNKS    "c"
#define NS_INFO      "i"
#define LOCK_OBJECT  "owner"
#define LOCK_NAME    "chapar"
#define LOCK_SECONDS 30 /* the lock's duration by default; renewed every third of it */
#define OID_BYTES    (2 * CHP_HASH_BYTES + 1)

struct rput {
        rados_completion_t c; /* NULL once waited for */
        uint8_t addr[CHP_HASH_BYTES];
        uint64_t seq;
        int rc; /* the write's result once waited for */
};

struct rdrop {
        uint8_t addr[CHP_HASH_BYTES];
        uint64_t seq;
};

struct rremove {
        rados_completion_t c;
        uint8_t addr[CHP_HASH_BYTES];
        bool superseded; /* a put stored addr since: the removal is not tried again */
};

struct rados_be {
        struct chp_backend base;
        struct chp_backend_host host;
        rados_t cluster;
        rados_ioctx_t io;      /* namespace "c" */
        rados_ioctx_t io_info; /* namespace "i" */
        MDB_env *env;
        MDB_dbi db;
        char *pool;
        uint32_t inflight_max;
        bool connected, locked;
        char cookie[128]; /* the directory's id (hex) @ the host's name */
        struct chp_rcache *cache; /* DATA/cache ([store] cache_size), or NULL */

        /* the batch (writer thread) */
        struct rput *puts;
        size_t nputs, puts_cap, waited; /* puts[0..waited) have completed */
        struct rdrop *drops;
        size_t ndrops, drops_cap;
        uint64_t seq;
        /* removals started and not yet reaped (writer thread, and close) */
        struct rremove *removes;
        size_t nremoves, removes_cap;
        /* objects to remove: dead chunks' (their drop committed), undone puts', and those whose
         * removal failed for want of an answer; started as room allows, never waited for on the
         * acknowledgement path; a put of the address takes it off */
        uint8_t (*doomed)[CHP_HASH_BYTES];
        size_t ndoomed, doomed_cap;

        /* the lock's renewal */
        pthread_t renewer;
        bool renewer_started, stopping;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint32_t lock_seconds;
        /* when the lease may lapse (CLOCK_MONOTONIC, µs): counted from before the last take or
         * renewal that succeeded; past it, writes and removals are refused */
        atomic_uint_fast64_t lease_end;

        /* counters for chp_store_backend_stats (any thread) */
        atomic_uint_fast64_t op_le[CHP_STORE_NOPS][CHP_STORE_OP_BUCKETS];
        atomic_uint_fast64_t op_count[CHP_STORE_NOPS], op_sum_us[CHP_STORE_NOPS];
        atomic_uint_fast64_t errors[CHP_STORE_NOPS][CHP_STORE_NERRS];
        atomic_int_fast64_t inflight;
        atomic_uint_fast64_t renewals_failed;
};

#define RADOS_BE(b) ((struct rados_be *)(b))

struct mark {
        size_t nputs, ndrops;
};

/* ---- errors and names --------------------------------------------------------------------- */

/* A librados result as a store code: the cluster not answering is CHP_EUNAVAILABLE (retry
 * later); ENOSPC and EDQUOT keep their meaning (a full pool or a quota). */
static int rados_rc(int rc)
{
        switch (rc) {
        case -ETIMEDOUT:
        case -ENOTCONN:
        case -ESHUTDOWN: /* also Ceph's EBLOCKLISTED (108): this client was fenced */
        case -EIO:
        case -ECONNREFUSED:
                return CHP_EUNAVAILABLE;
        }
        return rc;
}

static void oid_of(const uint8_t addr[CHP_HASH_BYTES], char oid[OID_BYTES])
{
        chp_hex_encode(addr, CHP_HASH_BYTES, oid);
}

/* ---- counters (any thread) ---------------------------------------------------------------- */

static uint64_t now_us(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* Whether the pool's lock may have lapsed: this relay may no longer own the pool. */
static bool lease_lapsed(struct rados_be *b)
{
        return now_us() >= atomic_load(&b->lease_end);
}

static void count_error(struct rados_be *b, enum chp_store_op op, int rc)
{
        enum chp_store_op_error e = rc == CHP_EUNAVAILABLE           ? CHP_STORE_ERR_UNAVAILABLE
                                    : rc == -ENOSPC || rc == -EDQUOT ? CHP_STORE_ERR_NOSPC
                                                                     : CHP_STORE_ERR_OTHER;
        atomic_fetch_add(&b->errors[op][e], 1);
}

/* An operation started at t0 (now_us) completed with rc (0 or a store code): its latency, and
 * its error if any. */
static void op_end(struct rados_be *b, enum chp_store_op op, uint64_t t0, int rc)
{
        uint64_t us = now_us() - t0;
        for (size_t i = 0; i < CHP_STORE_OP_BUCKETS; i++)
                if ((double)us / 1e6 <= chp_store_op_buckets[i])
                        atomic_fetch_add(&b->op_le[op][i], 1);
        atomic_fetch_add(&b->op_count[op], 1);
        atomic_fetch_add(&b->op_sum_us[op], us);
        atomic_fetch_sub(&b->inflight, 1);
        if (rc)
                count_error(b, op, rc);
}

/* An asynchronous write or removal, timed by its completion's callback (librados' thread). */
struct optime {
        struct rados_be *b;
        uint64_t t0;
        enum chp_store_op op;
};

static void op_complete(rados_completion_t c, void *arg)
{
        struct optime *t = arg;
        int rc = rados_aio_get_return_value(c);
        if (t->op == CHP_STORE_OP_REMOVE && rc == -ENOENT)
                rc = 0;
        op_end(t->b, t->op, t->t0, rc < 0 ? rados_rc(rc) : 0);
        free(t);
}

/* Makes *c, whose callback times the operation started next (counted in flight from now), and
 * sets *t to its timing record: NULL when out of memory (the operation then goes uncounted). */
static int timed_completion(struct rados_be *b, enum chp_store_op op, rados_completion_t *c,
                            struct optime **t)
{
        *t = malloc(sizeof(**t));
        if (*t) {
                **t = (struct optime){.b = b, .t0 = now_us(), .op = op};
                if (rados_aio_create_completion2(*t, op_complete, c) == 0) {
                        atomic_fetch_add(&b->inflight, 1);
                        return 0;
                }
                free(*t);
                *t = NULL;
        }
        int rc = rados_aio_create_completion2(NULL, NULL, c);
        return rc < 0 ? rc : rc ? -ENOMEM : 0;
}

/* The operation timed by t was refused when submitted (rc, a store code): its completion never
 * completes, its callback never runs. */
static void timed_refused(struct rados_be *b, enum chp_store_op op, struct optime *t, int rc)
{
        if (t) {
                atomic_fetch_sub(&b->inflight, 1);
                free(t);
        }
        count_error(b, op, rc);
}

/* ---- totals (in the index) ---------------------------------------------------------------- */

static const char totals_key[] = "totals";

static int totals_get(struct rados_be *b, MDB_txn *txn, uint64_t *objects, uint64_t *bytes)
{
        MDB_val k = {sizeof(totals_key) - 1, (void *)totals_key}, v;
        int rc = mdb_get(txn, b->db, &k, &v);
        *objects = *bytes = 0;
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return store_mdb_rc(rc);
        if (v.mv_size != 16)
                return CHP_ECORRUPT;
        *objects = chp_get_le64(v.mv_data);
        *bytes = chp_get_le64((const uint8_t *)v.mv_data + 8);
        return 0;
}

static int totals_add(struct rados_be *b, MDB_txn *txn, int64_t objects, int64_t bytes)
{
        uint64_t o, n;
        int rc = totals_get(b, txn, &o, &n);
        if (rc)
                return rc;
        o = objects < 0 && o < (uint64_t)-objects ? 0 : o + (uint64_t)objects;
        n = bytes < 0 && n < (uint64_t)-bytes ? 0 : n + (uint64_t)bytes;
        uint8_t rec[16];
        chp_put_le64(rec, o);
        chp_put_le64(rec + 8, n);
        MDB_val k = {sizeof(totals_key) - 1, (void *)totals_key}, v = {sizeof(rec), rec};
        return store_mdb_rc(mdb_put(txn, b->db, &k, &v, 0));
}

/* ---- operations in flight (writer thread) ------------------------------------------------- */

/* Queues addr's object for removal. */
static int doom(struct rados_be *b, const uint8_t addr[CHP_HASH_BYTES])
{
        if (b->ndoomed == b->doomed_cap) {
                size_t cap = b->doomed_cap ? 2 * b->doomed_cap : 256;
                uint8_t(*n)[CHP_HASH_BYTES] = realloc(b->doomed, cap * CHP_HASH_BYTES);
                if (!n)
                        return -ENOMEM;
                b->doomed = n;
                b->doomed_cap = cap;
        }
        memcpy(b->doomed[b->ndoomed++], addr, CHP_HASH_BYTES);
        return 0;
}

/* Releases the removals that have completed; one that failed for want of an answer is kept to
 * try again. wait_one: waits for the oldest first. */
static void removes_reap(struct rados_be *b, bool wait_one)
{
        if (wait_one && b->nremoves)
                rados_aio_wait_for_complete_and_cb(b->removes[0].c);
        size_t keep = 0;
        for (size_t i = 0; i < b->nremoves; i++) {
                struct rremove *r = &b->removes[i];
                if (!rados_aio_is_complete_and_cb(r->c)) {
                        b->removes[keep++] = *r;
                        continue;
                }
                int rc = rados_aio_get_return_value(r->c);
                rados_aio_release(r->c);
                if (rc >= 0 || rc == -ENOENT)
                        continue;
                if (r->superseded)
                        continue;
                if (rados_rc(rc) == CHP_EUNAVAILABLE && doom(b, r->addr) == 0)
                        continue;
                char oid[OID_BYTES];
                oid_of(r->addr, oid);
                chp_log_warn("store",
                             "rados: removing object %s failed (%s): it stays in pool %s until "
                             "removed by hand (verify lists it)",
                             oid, chp_strerror(rados_rc(rc)), b->pool);
        }
        b->nremoves = keep;
}

/* A put stores addr again: an earlier removal of it, queued, failed or in flight, must not be
 * started or tried again (RADOS applies one client's operations on an object in order, so the
 * removal in flight comes before the write). */
static void doom_cancel(struct rados_be *b, const uint8_t addr[CHP_HASH_BYTES])
{
        for (size_t i = 0; i < b->ndoomed; i++)
                if (memcmp(b->doomed[i], addr, CHP_HASH_BYTES) == 0)
                        memcpy(b->doomed[i--], b->doomed[--b->ndoomed], CHP_HASH_BYTES);
        for (size_t i = 0; i < b->nremoves; i++)
                if (memcmp(b->removes[i].addr, addr, CHP_HASH_BYTES) == 0)
                        b->removes[i].superseded = true;
}

/* Waits for put i and keeps its result. */
static void put_wait(struct rados_be *b, size_t i)
{
        struct rput *p = &b->puts[i];
        if (!p->c)
                return;
        rados_aio_wait_for_complete_and_cb(p->c); /* its counters too */
        int rc = rados_aio_get_return_value(p->c);
        p->rc = rc < 0 ? rados_rc(rc) : 0;
        rados_aio_release(p->c);
        p->c = NULL;
}

/* Makes room for one more operation in flight. */
static void room_for_one(struct rados_be *b)
{
        removes_reap(b, false);
        while ((b->nputs - b->waited) + b->nremoves >= b->inflight_max) {
                if (b->waited < b->nputs)
                        put_wait(b, b->waited++);
                else
                        removes_reap(b, true);
        }
}

/* Starts removing the object of addr (a slot in removes is free: doomed_start's check). */
static void remove_start(struct rados_be *b, const uint8_t addr[CHP_HASH_BYTES])
{
        char oid[OID_BYTES];
        oid_of(addr, oid);
        rados_completion_t c;
        struct optime *t;
        int rc;
        if (timed_completion(b, CHP_STORE_OP_REMOVE, &c, &t) != 0)
                return;
        if ((rc = rados_aio_remove(b->io, oid, c)) != 0) {
                timed_refused(b, CHP_STORE_OP_REMOVE, t, rados_rc(rc));
                rados_aio_release(c);
                return;
        }
        struct rremove *r = &b->removes[b->nremoves++];
        *r = (struct rremove){.c = c};
        memcpy(r->addr, addr, CHP_HASH_BYTES);
}

/* Starts the queued removals: as many as there is room for, or (wait, at close) all of those
 * queued now, waiting for room. A removal that fails again meanwhile is queued for later. */
static void doomed_start(struct rados_be *b, bool wait)
{
        removes_reap(b, false);
        if (lease_lapsed(b))
                return; /* the pool may be another relay's now: its objects stay queued */
        size_t n = b->ndoomed;
        if (b->removes_cap < b->inflight_max) {
                struct rremove *r = realloc(b->removes, b->inflight_max * sizeof(*r));
                if (!r)
                        return;
                b->removes = r;
                b->removes_cap = b->inflight_max;
        }
        while (n && b->ndoomed) {
                if ((b->nputs - b->waited) + b->nremoves >= b->inflight_max) {
                        if (!wait)
                                return;
                        removes_reap(b, true);
                        continue;
                }
                uint8_t addr[CHP_HASH_BYTES];
                memcpy(addr, b->doomed[--b->ndoomed], CHP_HASH_BYTES);
                n--;
                remove_start(b, addr);
        }
}

/* ---- the write half (writer thread) ------------------------------------------------------- */

static void r_batch_begin(struct chp_backend *base)
{
        struct rados_be *b = RADOS_BE(base);
        b->nputs = b->waited = b->ndrops = 0;
        doomed_start(b, false);
}

static int r_put(struct chp_backend *base, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                 const void *data, uint32_t len, struct chp_backend_place *place)
{
        struct rados_be *b = RADOS_BE(base);
        int rc;
        if (lease_lapsed(b)) {
                /* the lock was not renewed in time: another relay may own the pool now */
                atomic_fetch_add(&b->errors[CHP_STORE_OP_WRITE][CHP_STORE_ERR_LOCK], 1);
                return CHP_EUNAVAILABLE;
        }
        if (b->nputs == b->puts_cap) {
                size_t cap = b->puts_cap ? 2 * b->puts_cap : 64;
                struct rput *n = realloc(b->puts, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                b->puts = n;
                b->puts_cap = cap;
        }
        if ((rc = totals_add(b, txn, 1, len)))
                return rc;
        doom_cancel(b, addr);
        room_for_one(b);
        struct rput *p = &b->puts[b->nputs];
        *p = (struct rput){.seq = ++b->seq};
        memcpy(p->addr, addr, CHP_HASH_BYTES);
        char oid[OID_BYTES];
        oid_of(addr, oid);
        struct optime *t;
        if ((rc = timed_completion(b, CHP_STORE_OP_WRITE, &p->c, &t)))
                return rc;
        if ((rc = rados_aio_write_full(b->io, oid, p->c, data, len))) {
                timed_refused(b, CHP_STORE_OP_WRITE, t, rados_rc(rc));
                rados_aio_release(p->c);
                return rados_rc(rc);
        }
        b->nputs++;
        *place = (struct chp_backend_place){.unit = 0, .offset = 0};
        return 0;
}

static int r_sync(struct chp_backend *base)
{
        struct rados_be *b = RADOS_BE(base);
        int err = 0;
        for (size_t i = 0; i < b->nputs; i++) {
                put_wait(b, i);
                if (b->puts[i].rc && !err)
                        err = b->puts[i].rc;
        }
        b->waited = b->nputs;
        if (err == -ENOSPC || err == -EDQUOT)
                b->host.out_of_space(b->host.ctx);
        if (err)
                chp_log_error("store", "rados: writing a chunk to pool %s failed: %s", b->pool,
                              chp_strerror(err));
        return err;
}

/* Whether a put after seq (still in the batch) stores addr again. */
static bool put_after(struct rados_be *b, const uint8_t addr[CHP_HASH_BYTES], uint64_t seq)
{
        for (size_t i = 0; i < b->nputs; i++)
                if (b->puts[i].seq > seq && memcmp(b->puts[i].addr, addr, CHP_HASH_BYTES) == 0)
                        return true;
        return false;
}

static void r_batch_end(struct chp_backend *base, bool committed)
{
        struct rados_be *b = RADOS_BE(base);
        for (size_t i = 0; committed && i < b->ndrops; i++)
                if (!put_after(b, b->drops[i].addr, b->drops[i].seq))
                        if (doom(b, b->drops[i].addr) != 0)
                                chp_log_warn("store", "rados: out of memory: a dead chunk's "
                                                      "object stays (verify lists it)");
        for (size_t i = 0; i < b->nputs; i++)
                put_wait(b, i);
        b->nputs = b->waited = b->ndrops = 0;
        doomed_start(b, false);
}

static int r_drop(struct chp_backend *base, MDB_txn *txn, const struct chp_backend_place *place,
                  uint32_t len)
{
        struct rados_be *b = RADOS_BE(base);
        if (b->ndrops == b->drops_cap) {
                size_t cap = b->drops_cap ? 2 * b->drops_cap : 64;
                struct rdrop *n = realloc(b->drops, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                b->drops = n;
                b->drops_cap = cap;
        }
        int rc = totals_add(b, txn, -1, -(int64_t)len);
        if (rc)
                return rc;
        struct rdrop *d = &b->drops[b->ndrops++];
        memcpy(d->addr, place->addr, CHP_HASH_BYTES);
        if (b->cache) /* early (the drop may yet roll back): a cached file is only a copy */
                chp_rcache_forget(b->cache, place->addr);
        d->seq = ++b->seq;
        return 0;
}

static void r_mark(struct chp_backend *base, struct chp_backend_mark *out)
{
        struct rados_be *b = RADOS_BE(base);
        struct mark m = {b->nputs, b->ndrops};
        memset(out, 0, sizeof(*out));
        memcpy(out, &m, sizeof(m));
}

/* Whether anything in the batch but put i concerns addr. */
static bool addr_elsewhere(struct rados_be *b, size_t i)
{
        const uint8_t *addr = b->puts[i].addr;
        for (size_t j = 0; j < b->nputs; j++)
                if (j != i && memcmp(b->puts[j].addr, addr, CHP_HASH_BYTES) == 0)
                        return true;
        for (size_t j = 0; j < b->ndrops; j++)
                if (memcmp(b->drops[j].addr, addr, CHP_HASH_BYTES) == 0)
                        return true;
        return false;
}

/* The undone puts' objects go (a put that failed may have been written all the same: a timeout
 * says nothing), unless something else in the batch concerns the same address (a drop of it,
 * another put): then the object may be referenced after all, and is left. */
static void r_rollback(struct chp_backend *base, const struct chp_backend_mark *in)
{
        struct rados_be *b = RADOS_BE(base);
        struct mark m;
        memcpy(&m, in, sizeof(m));
        for (size_t i = m.nputs; i < b->nputs; i++) {
                put_wait(b, i);
                if (!addr_elsewhere(b, i))
                        doom(b, b->puts[i].addr); /* else the object stays: verify lists it */
        }
        if (b->nputs > m.nputs)
                b->nputs = m.nputs;
        if (b->waited > b->nputs)
                b->waited = b->nputs;
        if (b->ndrops > m.ndrops)
                b->ndrops = m.ndrops;
}

static void r_full(struct chp_backend *base)
{
        (void)base; /* nothing is appended: the pool says when it is full */
}

/* ---- reads (any thread) ------------------------------------------------------------------- */

static int read_result(struct rados_be *b, const uint8_t *addr, int n, uint32_t len)
{
        if (n == (int)len)
                return 0;
        char oid[OID_BYTES];
        oid_of(addr, oid);
        if (n == -ENOENT) {
                chp_log_error("store", "rados: chunk %s has a record but no object in pool %s", oid,
                              b->pool);
                return CHP_ECORRUPT;
        }
        if (n >= 0) {
                chp_log_error("store", "rados: object %s holds %d bytes, its record says %u", oid,
                              n, len);
                return CHP_ECORRUPT;
        }
        return rados_rc(n);
}

static int r_read(struct chp_backend *base, const struct chp_backend_place *place, uint32_t len,
                  void *buf)
{
        struct rados_be *b = RADOS_BE(base);
        char oid[OID_BYTES];
        oid_of(place->addr, oid);
        uint64_t t0 = now_us();
        atomic_fetch_add(&b->inflight, 1);
        int rc = read_result(b, place->addr, rados_read(b->io, oid, buf, len, 0), len);
        op_end(b, CHP_STORE_OP_READ, t0, rc);
        /* no cache fill: downloads read with read_async; this read serves the scrub, which
         * would otherwise push every chunk of the pool through the cache */
        return rc;
}

/* The chunk's file in the read cache, when it is there whole; else no file: callers read. */
static int r_span(struct chp_backend *base, const struct chp_backend_place *place,
                  struct chp_backend_span *out)
{
        struct rados_be *b = RADOS_BE(base);
        int fd = b->cache && place->len ? chp_rcache_get(b->cache, place->addr, place->len) : -1;
        if (fd < 0)
                return -EOPNOTSUPP;
        *out = (struct chp_backend_span){.fd = fd, .offset = 0, .ref = b};
        return 0;
}

static void r_span_release(struct chp_backend *base, struct chp_backend_span *span)
{
        (void)base;
        if (span->fd >= 0)
                close(span->fd);
}

struct aread {
        struct rados_be *b;
        rados_completion_t c;
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t len;
        uint64_t t0;
        void *buf;
        chp_backend_read_fn done;
        void *ctx;
};

/* librados' thread: the read completed. */
static void aread_complete(rados_completion_t c, void *arg)
{
        struct aread *a = arg;
        int rc = read_result(a->b, a->addr, rados_aio_get_return_value(c), a->len);
        op_end(a->b, CHP_STORE_OP_READ, a->t0, rc);
        if (!rc && a->b->cache) /* a copy for the filler, before buf is the caller's again */
                chp_rcache_fill(a->b->cache, a->addr, a->buf, a->len);
        chp_backend_read_fn done = a->done;
        void *ctx = a->ctx;
        rados_aio_release(c);
        free(a);
        done(ctx, rc);
}

static int r_read_async(struct chp_backend *base, const struct chp_backend_place *place,
                        uint32_t len, void *buf, chp_backend_read_fn done, void *ctx)
{
        struct rados_be *b = RADOS_BE(base);
        struct aread *a = malloc(sizeof(*a));
        if (!a)
                return -ENOMEM;
        *a = (struct aread){
            .b = b, .len = len, .t0 = now_us(), .buf = buf, .done = done, .ctx = ctx};
        memcpy(a->addr, place->addr, CHP_HASH_BYTES);
        int rc = rados_aio_create_completion2(a, aread_complete, &a->c);
        if (rc) {
                free(a);
                return rc < 0 ? rc : -ENOMEM;
        }
        char oid[OID_BYTES];
        oid_of(place->addr, oid);
        atomic_fetch_add(&b->inflight, 1); /* before: the callback may run at once */
        if ((rc = rados_aio_read(b->io, oid, a->c, buf, len, 0))) {
                atomic_fetch_sub(&b->inflight, 1);
                count_error(b, CHP_STORE_OP_READ, rados_rc(rc));
                rados_aio_release(a->c);
                free(a);
                return rados_rc(rc);
        }
        return 0;
}

/* ---- verify and stats --------------------------------------------------------------------- */

struct vstate {
        MDB_txn *txn;
        uint64_t objects, bytes; /* what the chunk records claimed */
};

static int r_verify_begin(struct chp_backend *base, MDB_txn *txn, struct chp_backend_verify *v)
{
        (void)base;
        struct vstate *vs = calloc(1, sizeof(*vs));
        if (!vs)
                return -ENOMEM;
        vs->txn = txn;
        v->state = vs;
        v->units = 0;
        return 0;
}

static int r_verify_chunk(struct chp_backend *base, struct chp_backend_verify *v,
                          const uint8_t addr[CHP_HASH_BYTES], const struct chp_backend_place *place,
                          uint32_t len, void *buf)
{
        struct rados_be *b = RADOS_BE(base);
        struct vstate *vs = v->state;
        (void)place;
        char oid[OID_BYTES];
        oid_of(addr, oid);
        vs->objects++;
        vs->bytes += len;
        uint64_t size;
        time_t mtime;
        int rc = rados_stat(b->io, oid, &size, &mtime);
        if (rc == -ENOENT) {
                chp_backend_problem(v, "chunk %s: no object in pool %s", oid, b->pool);
                return 1;
        }
        if (rc < 0)
                return rados_rc(rc); /* the cluster: verify cannot go on */
        if (size != len) {
                chp_backend_problem(v, "chunk %s: object holds %llu bytes, its record says %u", oid,
                                    (unsigned long long)size, len);
                return 1;
        }
        int n = rados_read(b->io, oid, buf, len, 0);
        if (n < 0 && n != -ENOENT)
                return rados_rc(n);
        if (n != (int)len) {
                chp_backend_problem(v, "chunk %s: cannot read its %u bytes from pool %s", oid, len,
                                    b->pool);
                return 1;
        }
        return 0;
}

/* Every object of the namespace is a chunk the index knows; the totals are what the chunks
 * claimed. */
static int r_verify_end(struct chp_backend *base, struct chp_backend_verify *v, bool ok)
{
        struct rados_be *b = RADOS_BE(base);
        struct vstate *vs = v->state;
        if (!vs)
                return 0;
        int rc = 0;
        uint64_t objects, bytes;
        if (ok && !(rc = totals_get(b, vs->txn, &objects, &bytes)) &&
            (objects != vs->objects || bytes != vs->bytes))
                chp_backend_problem(
                    v,
                    "rados totals: %llu objects of %llu bytes, but the chunk records hold "
                    "%llu of %llu",
                    (unsigned long long)objects, (unsigned long long)bytes,
                    (unsigned long long)vs->objects, (unsigned long long)vs->bytes);
        rados_list_ctx_t list;
        if (ok && !rc && (rc = rados_nobjects_list_open(b->io, &list)) < 0)
                rc = rados_rc(rc);
        else if (ok && !rc) {
                const char *entry, *key, *nspace;
                while ((rc = rados_nobjects_list_next(list, &entry, &key, &nspace)) == 0) {
                        uint8_t addr[CHP_HASH_BYTES];
                        struct chp_backend_place at;
                        uint32_t len;
                        uint64_t xxh3;
                        if (strlen(entry) != 2 * CHP_HASH_BYTES ||
                            chp_hex_decode(entry, 2 * CHP_HASH_BYTES, addr, sizeof(addr)) != 0) {
                                chp_backend_problem(
                                    v, "pool %s: object \"%s\" in namespace c is not a chunk",
                                    b->pool, entry);
                                continue;
                        }
                        if (b->host.chunk_get(b->host.ctx, vs->txn, addr, &at, &len, &xxh3) != 0)
                                chp_backend_problem(
                                    v,
                                    "pool %s: object %s is no chunk of the index (unreferenced: "
                                    "a put that never committed, or a removal that failed)",
                                    b->pool, entry);
                }
                rados_nobjects_list_close(list);
                rc = rc == -ENOENT ? 0 : rados_rc(rc);
        }
        free(vs);
        v->state = NULL;
        return rc;
}

static int r_stats(struct chp_backend *base, MDB_txn *txn, struct chp_store_stats *out,
                   uint64_t *chunks)
{
        uint64_t objects, bytes;
        int rc = totals_get(RADOS_BE(base), txn, &objects, &bytes);
        if (rc)
                return rc;
        *chunks = objects;
        out->segments = 0;
        out->segment_bytes = bytes;
        out->live_bytes = bytes;
        return 0;
}

/* ---- the pool's lock ---------------------------------------------------------------------- */

static int lock_take(struct rados_be *b, uint8_t flags)
{
        struct timeval tv = {.tv_sec = b->lock_seconds};
        return rados_lock_exclusive(b->io_info, LOCK_OBJECT, LOCK_NAME, b->cookie,
                                    "chapar relay (one per pool)", &tv, flags);
}

/* The lock is held with this directory's cookie, by a process that is gone: this one holds the
 * directory (its flock) on the same host. Breaks that lock; true when it did. */
static bool lock_break_own(struct rados_be *b)
{
        int exclusive;
        char tag[256], clients[1024], cookies[1024], addrs[1024];
        size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
        ssize_t n = rados_list_lockers(b->io_info, LOCK_OBJECT, LOCK_NAME, &exclusive, tag, &tl,
                                       clients, &cl, cookies, &kl, addrs, &al);
        if (n != 1 || strnlen(cookies, kl) >= kl || strnlen(clients, cl) >= cl ||
            strcmp(cookies, b->cookie) != 0)
                return false;
        chp_log_warn("store",
                     "rados: breaking the lock on pool %s that a previous run of this relay (%s) "
                     "left",
                     b->pool, clients);
        return rados_break_lock(b->io_info, LOCK_OBJECT, LOCK_NAME, clients, cookies) == 0;
}

/* One renewal: renews the lock, or takes it anew when it lapsed and nobody else holds it (with
 * this directory's cookie). A success moves the lease's end; a failure is counted and logged
 * (-EBUSY, another holder, once until a success). */
static void lock_renew(struct rados_be *b, bool *busy_logged)
{
        uint64_t t0 = now_us();
        bool lapsed = lease_lapsed(b);
        int rc = lock_take(b, LIBRADOS_LOCK_FLAG_MUST_RENEW);
        if (rc == -ENOENT) /* ours expired (or was broken): take it again if it is free */
                rc = lock_take(b, 0);
        if (rc >= 0) {
                atomic_store(&b->lease_end, t0 + (uint64_t)b->lock_seconds * 1000000u);
                *busy_logged = false;
                if (lapsed)
                        chp_log_warn("store",
                                     "rados: took the lock on pool %s again: writes resume",
                                     b->pool);
                return;
        }
        atomic_fetch_add(&b->renewals_failed, 1);
        if (rc == -EBUSY || rc == -EEXIST) {
                if (!*busy_logged)
                        chp_log_error("store",
                                      "rados: another holder took the lock on pool %s: this relay "
                                      "refuses writes once its lease lapses, until the lock is "
                                      "free again",
                                      b->pool);
                *busy_logged = true;
                return;
        }
        chp_log_error("store",
                      "rados: renewing the lock on pool %s failed: %s (once the lease lapses, "
                      "writes are refused until it is renewed)",
                      b->pool, chp_strerror(rados_rc(rc)));
}

static void *renewer_main(void *arg)
{
        struct rados_be *b = arg;
        bool busy_logged = false;
        uint32_t every = b->lock_seconds / 3 ? b->lock_seconds / 3 : 1;
        pthread_mutex_lock(&b->lock);
        while (!b->stopping) {
                struct timespec at;
                clock_gettime(CLOCK_MONOTONIC, &at);
                at.tv_sec += every;
                while (!b->stopping && pthread_cond_timedwait(&b->cond, &b->lock, &at) == 0)
                        ;
                if (b->stopping)
                        break;
                pthread_mutex_unlock(&b->lock);
                lock_renew(b, &busy_logged);
                pthread_mutex_lock(&b->lock);
        }
        pthread_mutex_unlock(&b->lock);
        return NULL;
}

static void r_op_stats(struct chp_backend *base, struct chp_store_backend_stats *out)
{
        struct rados_be *b = RADOS_BE(base);
        out->backend = "rados";
        for (int op = 0; op < CHP_STORE_NOPS; op++) {
                for (int i = 0; i < CHP_STORE_OP_BUCKETS; i++)
                        out->op_le[op][i] = atomic_load(&b->op_le[op][i]);
                out->op_count[op] = atomic_load(&b->op_count[op]);
                out->op_sum_us[op] = atomic_load(&b->op_sum_us[op]);
                for (int e = 0; e < CHP_STORE_NERRS; e++)
                        out->errors[op][e] = atomic_load(&b->errors[op][e]);
        }
        int64_t n = atomic_load(&b->inflight);
        out->inflight = n > 0 ? (uint64_t)n : 0;
        out->lock_renewals_failed = atomic_load(&b->renewals_failed);
        out->lock_lost = lease_lapsed(b);
        if (b->cache) {
                struct chp_rcache_stats cs;
                chp_rcache_stats(b->cache, &cs);
                out->cache = true;
                out->cache_hits = cs.hits;
                out->cache_misses = cs.misses;
                out->cache_stored = cs.stored;
                out->cache_dropped = cs.dropped;
                out->cache_evictions = cs.evictions;
                out->cache_bytes = cs.bytes;
                out->cache_chunks = cs.chunks;
        }
}

/* ---- open / close ------------------------------------------------------------------------- */

static void r_close(struct chp_backend *base)
{
        struct rados_be *b = RADOS_BE(base);
        if (!b)
                return;
        if (b->renewer_started) {
                pthread_mutex_lock(&b->lock);
                b->stopping = true;
                pthread_cond_signal(&b->cond);
                pthread_mutex_unlock(&b->lock);
                pthread_join(b->renewer, NULL);
        }
        for (size_t i = 0; i < b->nputs; i++)
                put_wait(b, i);
        while (b->nremoves)
                removes_reap(b, true);
        if (b->ndoomed && b->io && lease_lapsed(b))
                chp_log_warn("store",
                             "rados: %zu objects of dead chunks stay in pool %s: its lock may have "
                             "lapsed (verify lists them)",
                             b->ndoomed, b->pool);
        else if (b->ndoomed && b->io) {
                doomed_start(b, true); /* once: what fails now stays (verify lists it) */
                while (b->nremoves)
                        removes_reap(b, true);
                if (b->ndoomed)
                        chp_log_warn("store",
                                     "rados: %zu objects of dead chunks could not be removed from "
                                     "pool %s (verify lists them)",
                                     b->ndoomed, b->pool);
        }
        if (b->io) {
                rados_aio_flush(b->io);
                rados_ioctx_destroy(b->io);
        }
        if (b->io_info) {
                if (b->locked)
                        rados_unlock(b->io_info, LOCK_OBJECT, LOCK_NAME, b->cookie);
                rados_ioctx_destroy(b->io_info);
        }
        if (b->cluster)
                rados_shutdown(b->cluster);
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        chp_rcache_close(b->cache); /* after the shutdown: no read completes any more */
        free(b->puts);
        free(b->drops);
        free(b->removes);
        free(b->doomed);
        free(b->pool);
        free(b);
}

static const struct chp_backend_ops rados_ops = {
    .name = "rados",
    .close = r_close,
    .batch_begin = r_batch_begin,
    .put = r_put,
    .sync = r_sync,
    .batch_end = r_batch_end,
    .drop = r_drop,
    .mark = r_mark,
    .rollback = r_rollback,
    .full = r_full,
    .reclaim = NULL,
    .read = r_read,
    .span = r_span,
    .span_release = r_span_release,
    .read_async = r_read_async,
    .verify_begin = r_verify_begin,
    .verify_chunk = r_verify_chunk,
    .verify_end = r_verify_end,
    .stats = r_stats,
    .op_stats = r_op_stats,
};

rados_t chp_rados_cluster(struct chp_backend *base)
{
        return base && base->ops == &rados_ops ? RADOS_BE(base)->cluster : NULL;
}

struct chp_rcache *chp_rados_cache(struct chp_backend *base)
{
        return base && base->ops == &rados_ops ? RADOS_BE(base)->cache : NULL;
}

static int open_db(struct rados_be *b)
{
        MDB_txn *txn;
        int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
        if (rc)
                return store_mdb_rc(rc);
        /* the directory's id, made once: the cookie of the pool's lock */
        MDB_val k = {5, "owner"}, v;
        uint8_t id[16];
        if (!(rc = mdb_dbi_open(txn, "rados", MDB_CREATE, &b->db)) &&
            (rc = mdb_get(txn, b->db, &k, &v)) == MDB_NOTFOUND) {
                if (getrandom(id, sizeof(id), 0) != sizeof(id)) {
                        mdb_txn_abort(txn);
                        return -EIO;
                }
                v = (MDB_val){sizeof(id), id};
                rc = mdb_put(txn, b->db, &k, &v, 0);
        } else if (!rc && v.mv_size == sizeof(id)) {
                memcpy(id, v.mv_data, sizeof(id));
        } else if (!rc) {
                rc = MDB_CORRUPTED;
        }
        if (rc) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        char host[64] = "";
        gethostname(host, sizeof(host) - 1);
        char hex[33];
        chp_hex_encode(id, sizeof(id), hex);
        snprintf(b->cookie, sizeof(b->cookie), "%s@%s", hex, host);
        return store_mdb_rc(mdb_txn_commit(txn));
}

static int connect_cluster(struct rados_be *b, const struct chp_store_opts *o)
{
        const char *user = o->rados_user && *o->rados_user ? o->rados_user : NULL;
        if (user && strncmp(user, "client.", 7) == 0)
                user += 7; /* the id alone is wanted; the full name is accepted too */
        int rc = rados_create(&b->cluster, user);
        if (rc < 0) {
                b->cluster = NULL;
                return rc;
        }
        if ((rc = rados_conf_read_file(b->cluster, o->rados_conf)) < 0) {
                chp_log_error("store", "rados: cannot read %s: %s", o->rados_conf,
                              chp_strerror(rc));
                return rc;
        }
        char t[16];
        snprintf(t, sizeof(t), "%u", o->rados_op_timeout ? o->rados_op_timeout : 30);
        const char *keys[] = {"rados_osd_op_timeout", "rados_mon_op_timeout",
                              "client_mount_timeout"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                if ((rc = rados_conf_set(b->cluster, keys[i], t)) < 0)
                        return rc;
        if ((rc = rados_connect(b->cluster)) < 0) {
                chp_log_error("store", "rados: cannot connect to the cluster of %s: %s",
                              o->rados_conf, chp_strerror(rc));
                return rc == -ETIMEDOUT || rc == -ENOTCONN || rc == -EIO || rc == -ECONNREFUSED
                           ? CHP_EUNAVAILABLE
                           : rc;
        }
        b->connected = true;
        if ((rc = rados_ioctx_create(b->cluster, o->rados_pool, &b->io)) < 0) {
                b->io = NULL;
                if (rc == -ENOENT)
                        chp_log_error("store", "rados: no such pool: %s", o->rados_pool);
                return rados_rc(rc);
        }
        if ((rc = rados_ioctx_create(b->cluster, o->rados_pool, &b->io_info)) < 0) {
                b->io_info = NULL;
                return rados_rc(rc);
        }
        rados_ioctx_set_namespace(b->io, NS_CHUNKS);
        rados_ioctx_set_namespace(b->io_info, NS_INFO);
        return 0;
}

int chp_rados_open(const struct chp_store_opts *o, MDB_env *env, const struct chp_backend_host *h,
                   struct chp_backend **out)
{
        *out = NULL;
        if (!o->rados_conf || !*o->rados_conf || !o->rados_pool || !*o->rados_pool) {
                chp_log_error("store", "rados: rados_conf and rados_pool are required");
                return -EINVAL;
        }
        struct rados_be *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->base.ops = &rados_ops;
        b->host = *h;
        b->env = env;
        b->inflight_max = o->rados_inflight ? o->rados_inflight : 64;
        b->lock_seconds = o->rados_lock_seconds ? o->rados_lock_seconds : LOCK_SECONDS;
        pthread_mutex_init(&b->lock, NULL);
        chp_net_cond_init(&b->cond);
        int rc;
        b->pool = strdup(o->rados_pool);
        if (!b->pool) {
                rc = -ENOMEM;
                goto out;
        }
        if ((rc = open_db(b)) || (rc = connect_cluster(b, o)))
                goto out;
        if (o->rados_shared) {
                /* many relays on the pool: the shared state's guards are their safety, and the
                 * records this backend's index would keep are in the pool (shared.c) */
                if (chp_rcache_open(o->dir, o->cache_size, &b->cache) != 0)
                        chp_log_warn("store", "rados: going on without the read cache");
                *out = &b->base;
                return 0;
        }
        uint64_t t0 = now_us();
        rc = lock_take(b, 0);
        if (rc == -EBUSY && lock_break_own(b))
                rc = lock_take(b, 0);
        if (rc == -EBUSY || rc == -EEXIST) {
                chp_log_error("store",
                              "rados: another relay uses pool %s; until the shared state of "
                              "docs/scale-out.md is built, one relay per pool",
                              b->pool);
                rc = CHP_ELOCKED;
                goto out;
        }
        if (rc < 0) {
                rc = rados_rc(rc);
                goto out;
        }
        b->locked = true;
        atomic_store(&b->lease_end, t0 + (uint64_t)b->lock_seconds * 1000000u);
        if (pthread_create(&b->renewer, NULL, renewer_main, b) != 0) {
                rc = -EAGAIN;
                goto out;
        }
        b->renewer_started = true;
        if (chp_rcache_open(o->dir, o->cache_size, &b->cache) != 0)
                chp_log_warn("store", "rados: going on without the read cache");
        *out = &b->base;
        return 0;
out:
        r_close(&b->base);
        return rc;
}
