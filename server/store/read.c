/* read.c — the read API of store.h: each call one LMDB read snapshot, any thread. Also the
 * asynchronous chunk read (chp_store_read_async) and, in test builds, the switch that makes the
 * local store read like a remote backend (CHAPAR_STORE_DEFER_READS). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "log.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif
#include "xxh.h"

#ifdef CHAPAR_FAULT_INJECTION
struct defer_job {
        struct defer_job *next;
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t len;
        void *buf;
        chp_backend_read_fn done;
        void *ctx;
        struct chp_store_lookup *q; /* not NULL: a lookup, answered instead of a chunk read */
        struct timespec due;        /* CLOCK_MONOTONIC: queued + the delay */
};

struct store_defer {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct defer_job *head, *tail;
        bool stopping;
        pthread_t thread;
        uint64_t delay_ms;
        /* reported at close, for whole-relay tests: reads completed later, and chunk reads
         * that waited in the caller's thread (chp_store_read) for what a remote backend would
         * have fetched; the same for lookups (chp_store_lookup) and the synchronous record reads
         * of their kinds (chp_store_file_get, ...) */
        atomic_uint_fast64_t deferred, blocking;
        atomic_uint_fast64_t lookups, records_blocking;
};

/* A synchronous record read: over a remote backend the calling thread would wait for it. */
static void record_blocking(struct chp_store *s)
{
        if (s->defer)
                atomic_fetch_add(&s->defer->records_blocking, 1);
}

#define deferring(s) ((s)->defer != NULL)
#else
#define deferring(s)       false
#define record_blocking(s) ((void)(s))
#endif

/* ---- reads ------------------------------------------------------------------------------- */

int store_read_begin(struct chp_store *s, MDB_txn **txn)
{
        return store_mdb_rc(mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn));
}

/* Looks addr up in one snapshot: the record, and for backend chunks, inside that snapshot, the
 * bytes (buf not NULL: copied into buf) or a file span (buf NULL). Inline bytes are copied into
 * buf when buf is not NULL. -EAGAIN from the backend means compaction moved the chunk after the
 * snapshot was taken: a fresh snapshot sees the new place, so the caller retries. */
static int lookup(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], struct chp_chunk_loc *l,
                  void *buf, size_t cap)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        struct chp_rec_chunk c;
        rc = store_mdb_rc(mdb_get(txn, s->db_chunks, &k, &v));
        if (!rc)
                rc = parse_chunk(&v, &c);
        if (!rc) {
                struct chp_backend *b = s->backend;
                struct chp_backend_place at = chunk_place(&c, addr);
                struct chp_backend_span span;
                *l = (struct chp_chunk_loc){.len = c.len, .xxh3 = c.xxh3, .fd = -1};
                if (buf && c.len > cap) {
                        rc = -ENOBUFS;
                } else if (c.kind == CHP_REC_CHUNK_INLINE) {
                        l->is_inline = true;
                        if (buf)
                                memcpy(buf, c.inline_data, c.len);
                } else if (buf) {
                        rc = b->ops->read(b, &at, c.len, buf);
                } else if (!b->ops->span || deferring(s) ||
                           (rc = b->ops->span(b, &at, &span)) == -EOPNOTSUPP) {
                        rc = 0; /* no file: the caller reads with chp_store_read */
                } else if (!rc) {
                        l->fd = span.fd;
                        l->offset = span.offset;
                        l->seg = span.ref;
                }
        }
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_locate(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES],
                     struct chp_chunk_loc *loc)
{
        memset(loc, 0, sizeof(*loc));
        loc->fd = -1;
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_locate(s, addr, loc);
#endif
        for (int attempt = 0; attempt < 4; attempt++) {
                int rc = lookup(s, addr, loc, NULL, 0);
                if (rc != -EAGAIN)
                        return rc;
        }
        return CHP_ECORRUPT;
}

void chp_store_loc_release(struct chp_store *s, struct chp_chunk_loc *loc)
{
        if (!loc)
                return;
        if (loc->seg) {
                struct chp_backend_span span = {
                    .fd = loc->fd, .offset = loc->offset, .ref = loc->seg};
                s->backend->ops->span_release(s->backend, &span);
        }
        loc->seg = NULL;
        loc->fd = -1;
}

ssize_t chp_store_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                       size_t cap)
{
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_read(s, addr, buf, cap);
#endif
        struct chp_chunk_loc loc = {.fd = -1};
        int rc = -EAGAIN;
        for (int attempt = 0; rc == -EAGAIN && attempt < 4; attempt++)
                rc = lookup(s, addr, &loc, buf, cap);
        if (rc)
                return rc == -EAGAIN ? CHP_ECORRUPT : rc;
#ifdef CHAPAR_FAULT_INJECTION
        if (s->defer && !loc.is_inline)
                atomic_fetch_add(&s->defer->blocking, 1); /* a remote fetch would block here */
#endif
        if (chp_xxh3(buf, loc.len) != loc.xxh3)
                return CHP_ECORRUPT;
        return (ssize_t)loc.len;
}

/* ---- asynchronous chunk reads ------------------------------------------------------------ */

/* A read the backend completes later: what the completion checks and whom it tells. */
struct async_read {
        uint8_t addr[CHP_HASH_BYTES]; /* the place's addr points here */
        struct chp_backend_place place;
        uint32_t len;
        uint64_t xxh3;
        bool is_inline;
        void *buf; /* the caller's, borrowed until done */
        chp_store_read_fn done;
        void *ctx;
};

#ifdef CHAPAR_FAULT_INJECTION
static int defer_enqueue(struct chp_store *s, struct defer_job *j);
static int lookup_now(struct chp_store *s, struct chp_store_lookup *q);
static int defer_read_async(struct chp_store *s, const struct chp_backend_place *place,
                            uint32_t len, void *buf, chp_backend_read_fn done, void *ctx);
#endif

/* The record of a->addr in one snapshot: inline bytes copied into buf, else the place of the
 * backend's bytes in a->place. */
static int find_place(struct chp_store *s, struct async_read *a, size_t cap)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(a->addr, CHP_HASH_BYTES), v;
        struct chp_rec_chunk c;
        rc = store_mdb_rc(mdb_get(txn, s->db_chunks, &k, &v));
        if (!rc)
                rc = parse_chunk(&v, &c);
        if (!rc && c.len > cap)
                rc = -ENOBUFS;
        if (!rc) {
                a->len = c.len;
                a->xxh3 = c.xxh3;
                a->is_inline = c.kind == CHP_REC_CHUNK_INLINE;
                if (a->is_inline)
                        memcpy(a->buf, c.inline_data, c.len);
                else
                        a->place = chunk_place(&c, a->addr);
        }
        mdb_txn_abort(txn);
        return rc;
}

/* The backend's completion (its thread): the bytes checked, the caller told, once. */
static void async_read_done(void *ctx, int result)
{
        struct async_read *a = ctx;
        ssize_t r = result < 0                            ? (ssize_t)result
                    : chp_xxh3(a->buf, a->len) != a->xxh3 ? (ssize_t)CHP_ECORRUPT
                                                          : (ssize_t)a->len;
        chp_store_read_fn done = a->done;
        void *done_ctx = a->ctx;
        free(a);
        done(done_ctx, r);
}

ssize_t chp_store_read_async(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                             size_t cap, chp_store_read_fn done, void *ctx)
{
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_read_async(s, addr, buf, cap, done, ctx);
#endif
        struct chp_backend *b = s->backend;
        if (!b->ops->read_async && !deferring(s))
                return chp_store_read(s, addr, buf, cap); /* local bytes: at hand */
        struct async_read *a = malloc(sizeof(*a));
        if (!a)
                return -ENOMEM;
        *a = (struct async_read){.buf = buf, .done = done, .ctx = ctx};
        memcpy(a->addr, addr, CHP_HASH_BYTES);
        ssize_t ret = find_place(s, a, cap);
        if (!ret && a->is_inline) {
                ret = chp_xxh3(buf, a->len) != a->xxh3 ? CHP_ECORRUPT : (ssize_t)a->len;
        } else if (!ret) {
                int rc;
#ifdef CHAPAR_FAULT_INJECTION
                if (s->defer)
                        rc = defer_read_async(s, &a->place, a->len, buf, async_read_done, a);
                else
#endif
                        rc = b->ops->read_async(b, &a->place, a->len, buf, async_read_done, a);
                if (!rc)
                        return -EINPROGRESS; /* a is the completion's now */
                ret = rc;
        }
        free(a);
        return ret;
}

/* ---- test builds: reads deferred as over a remote backend --------------------------------- */

#ifdef CHAPAR_FAULT_INJECTION
/* The bytes of a job as a remote backend would fetch them: a fresh snapshot, 0 or a code. */
static int defer_read(struct chp_store *s, const struct defer_job *j)
{
        struct chp_chunk_loc loc = {.fd = -1};
        int rc = -EAGAIN;
        for (int attempt = 0; rc == -EAGAIN && attempt < 4; attempt++)
                rc = lookup(s, j->addr, &loc, j->buf, j->len);
        if (rc == -EAGAIN || (!rc && loc.len != j->len))
                rc = CHP_ECORRUPT;
        return rc;
}

static void *defer_main(void *arg)
{
        struct chp_store *s = arg;
        struct store_defer *d = s->defer;
        pthread_mutex_lock(&d->lock);
        for (;;) {
                while (!d->head && !d->stopping)
                        pthread_cond_wait(&d->cond, &d->lock);
                struct defer_job *j = d->head;
                if (!j)
                        break; /* stopping, and nothing left */
                d->head = j->next;
                if (!d->head)
                        d->tail = NULL;
                bool stopping = d->stopping;
                pthread_mutex_unlock(&d->lock);
                while (!stopping &&
                       clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &j->due, NULL) == EINTR)
                        ;
                if (j->q) {
                        struct chp_store_lookup *q = j->q;
                        free(j);
                        q->status = lookup_now(s, q);
                        atomic_fetch_add(&d->lookups, 1);
                        q->done(q); /* q is the caller's from here on */
                } else {
                        j->done(j->ctx, defer_read(s, j));
                        free(j);
                        atomic_fetch_add(&d->deferred, 1);
                }
                pthread_mutex_lock(&d->lock);
        }
        pthread_mutex_unlock(&d->lock);
        return NULL;
}

static int defer_read_async(struct chp_store *s, const struct chp_backend_place *place,
                            uint32_t len, void *buf, chp_backend_read_fn done, void *ctx)
{
        struct defer_job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        memcpy(j->addr, place->addr, CHP_HASH_BYTES);
        j->len = len;
        j->buf = buf;
        j->done = done;
        j->ctx = ctx;
        return defer_enqueue(s, j);
}

/* Queues j (taken over) to be run after the delay; CHP_ECLOSED (j freed) once stopping. */
static int defer_enqueue(struct chp_store *s, struct defer_job *j)
{
        struct store_defer *d = s->defer;
        clock_gettime(CLOCK_MONOTONIC, &j->due);
        j->due.tv_sec += (time_t)(d->delay_ms / 1000);
        j->due.tv_nsec += (long)(d->delay_ms % 1000) * 1000000;
        if (j->due.tv_nsec >= 1000000000) {
                j->due.tv_sec++;
                j->due.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&d->lock);
        bool stopping = d->stopping;
        if (!stopping) {
                if (d->tail)
                        d->tail->next = j;
                else
                        d->head = j;
                d->tail = j;
                pthread_cond_signal(&d->cond);
        }
        pthread_mutex_unlock(&d->lock);
        if (stopping) {
                free(j);
                return CHP_ECLOSED;
        }
        return 0;
}

int store_defer_start(struct chp_store *s)
{
        const char *env = getenv("CHAPAR_STORE_DEFER_READS");
        if (!env || !*env)
                return 0;
        char *end;
        unsigned long long ms = strtoull(env, &end, 10);
        if (*end || env[0] == '-' || ms > 60000) {
                chp_log_error("store", "CHAPAR_STORE_DEFER_READS: not a delay in ms: \"%s\"", env);
                return 0;
        }
        struct store_defer *d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->delay_ms = ms;
        pthread_mutex_init(&d->lock, NULL);
        pthread_cond_init(&d->cond, NULL);
        s->defer = d;
        if (pthread_create(&d->thread, NULL, defer_main, s) != 0) {
                pthread_cond_destroy(&d->cond);
                pthread_mutex_destroy(&d->lock);
                free(d);
                s->defer = NULL;
                return -EAGAIN;
        }
        chp_log_warn("store", "fault injection: chunk reads and lookups deferred by %llu ms", ms);
        return 0;
}

void store_defer_stop(struct chp_store *s)
{
        struct store_defer *d = s->defer;
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->stopping = true;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->thread, NULL);
        chp_log_warn("store",
                     "fault injection: %llu chunk reads deferred, %llu read synchronously; "
                     "%llu lookups deferred, %llu record reads synchronous",
                     (unsigned long long)atomic_load(&d->deferred),
                     (unsigned long long)atomic_load(&d->blocking),
                     (unsigned long long)atomic_load(&d->lookups),
                     (unsigned long long)atomic_load(&d->records_blocking));
        pthread_cond_destroy(&d->cond);
        pthread_mutex_destroy(&d->lock);
        free(d);
        s->defer = NULL;
}
#endif

static int rec_has(struct chp_store *s, const uint8_t *addrs, size_t n, uint8_t *present)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        for (size_t i = 0; i < n; i++) {
                MDB_val k = val(addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES), v;
                int r = mdb_get(txn, s->db_chunks, &k, &v);
                if (r && r != MDB_NOTFOUND) {
                        rc = store_mdb_rc(r);
                        break;
                }
                present[i] = r == 0;
        }
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_refcount(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], uint64_t *count)
{
        LOCAL_ONLY(s); /* a chunk's referrers are keys of its object's omap: not counted cheaply */
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        int r = mdb_get(txn, s->db_refs, &k, &v);
        if (r == MDB_NOTFOUND)
                *count = 0;
        else if (r)
                rc = store_mdb_rc(r);
        else if (chp_rec_refs_parse(v.mv_data, v.mv_size, count) < 0)
                rc = CHP_ECORRUPT;
        mdb_txn_abort(txn);
        return rc;
}

static int rec_file_get(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint8_t **manifest,
                        size_t *len, struct chp_file_info *info)
{
        if (manifest) {
                *manifest = NULL;
                *len = 0;
        }
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        struct chp_rec_file f;
        uint8_t *copy = NULL;
        rc = store_mdb_rc(mdb_get(txn, s->db_files, &k, &v));
        if (rc == -ENOENT && store_quarantine_check(s, txn, id) == CHP_EQUARANTINED)
                rc = CHP_EQUARANTINED; /* only then: a stored file is never on the list */
        if (!rc)
                rc = parse_file(&v, &f);
        if (!rc && manifest && !(copy = malloc(f.manifest_len ? f.manifest_len : 1)))
                rc = -ENOMEM;
        if (!rc) {
                if (copy)
                        memcpy(copy, f.manifest, f.manifest_len);
                if (info) {
                        memcpy(info->tenant, f.tenant, f.tenant_len);
                        info->tenant[f.tenant_len] = '\0';
                        info->created = f.created;
                        info->expires = f.expires;
                        info->size = f.size;
                }
                if (manifest) {
                        *manifest = copy;
                        *len = f.manifest_len;
                }
        }
        mdb_txn_abort(txn);
        return rc;
}

static int rec_upload_get(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                          struct chp_upload *out)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct chp_rec_upload r;
        rc = store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v));
        if (!rc)
                rc = parse_upload_rec(&v, &r);
        if (!rc)
                chp_rec_upload_to_public(id, &r, out);
        mdb_txn_abort(txn);
        return rc;
}

static int rec_upload_manifest(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                               uint8_t **manifest, size_t *len)
{
        *manifest = NULL;
        *len = 0;
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct chp_rec_upload u;
        uint8_t *copy = NULL;
        rc = store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v));
        if (!rc)
                rc = parse_upload_rec(&v, &u);
        if (!rc && !(u.flags & CHP_REC_UPLOAD_HAS_MANIFEST))
                rc = -ENOENT;
        if (!rc && !(copy = malloc(u.manifest_len)))
                rc = -ENOMEM;
        if (!rc) {
                memcpy(copy, u.manifest, u.manifest_len);
                *manifest = copy;
                *len = u.manifest_len;
        }
        mdb_txn_abort(txn);
        return rc;
}

static int rec_upload_progress(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                               uint32_t *chunks, size_t *tail_len)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        uint32_t n = 0;
        size_t tail = 0;
        if ((rc = mdb_get(txn, s->db_uploads, &k, &v)) ||
            (rc = mdb_cursor_open(txn, s->db_upchunks, &cur)))
                goto out;
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0 ||
                    chp_get_be32((const uint8_t *)k.mv_data + CHP_UPLOAD_ID_BYTES) != n)
                        break; /* another upload, or a gap */
                n++;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (rc && rc != MDB_NOTFOUND)
                goto out;
        if ((rc = mdb_cursor_open(txn, s->db_tails, &cur)))
                goto out;
        k = val(id, CHP_UPLOAD_ID_BYTES);
        op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                tail += v.mv_size;
        }
        if (rc == MDB_NOTFOUND || rc == 0)
                rc = 0;
        if (!rc) {
                *chunks = n;
                *tail_len = tail;
        }
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return store_mdb_rc(rc);
}

static ssize_t rec_upload_tail(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                               uint8_t *buf, size_t cap)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        size_t len = 0;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        if ((rc = mdb_cursor_open(txn, s->db_tails, &cur)))
                goto out;
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                if (cap - len < v.mv_size) {
                        rc = ENOBUFS;
                        goto out;
                }
                memcpy(buf + len, v.mv_data, v.mv_size);
                len += v.mv_size;
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return rc ? (ssize_t)store_mdb_rc(rc) : (ssize_t)len;
}

static ssize_t rec_file_meta(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint8_t *buf,
                             size_t cap)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        ssize_t n = 0;
        rc = mdb_get(txn, s->db_filemeta, &k, &v);
        if (rc == 0 && v.mv_size > CHP_UPLOAD_META_MAX)
                n = CHP_ECORRUPT;
        else if (rc == 0 && v.mv_size > cap)
                n = -ENOBUFS;
        else if (rc == 0)
                memcpy(buf, v.mv_data, (n = (ssize_t)v.mv_size));
        else if (rc != MDB_NOTFOUND)
                n = store_mdb_rc(rc);
        mdb_txn_abort(txn);
        return n;
}

static int rec_pending(struct chp_store *s, const uint8_t file_id[CHP_HASH_BYTES],
                       uint8_t upload_id[CHP_UPLOAD_ID_BYTES])
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(file_id, CHP_HASH_BYTES), v;
        rc = store_mdb_rc(mdb_get(txn, s->db_pending, &k, &v));
        if (!rc && v.mv_size != CHP_UPLOAD_ID_BYTES)
                rc = CHP_ECORRUPT;
        if (!rc)
                memcpy(upload_id, v.mv_data, CHP_UPLOAD_ID_BYTES);
        mdb_txn_abort(txn);
        return rc;
}

static int rec_upload_chunks(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                             uint8_t *have, uint8_t *addrs, size_t n)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        if ((rc = mdb_get(txn, s->db_uploads, &k, &v)) ||
            (rc = mdb_cursor_open(txn, s->db_upchunks, &cur)))
                goto out;
        memset(have, 0, n);
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                uint32_t i = chp_get_be32((const uint8_t *)k.mv_data + CHP_UPLOAD_ID_BYTES);
                if (i >= n)
                        break;
                if (v.mv_size != CHP_HASH_BYTES) {
                        rc = MDB_CORRUPTED;
                        goto out;
                }
                have[i] = 1;
                if (addrs)
                        memcpy(addrs + (size_t)i * CHP_HASH_BYTES, v.mv_data, CHP_HASH_BYTES);
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return store_mdb_rc(rc);
}

int chp_store_stats(struct chp_store *s, struct chp_store_stats *out)
{
        memset(out, 0, sizeof(*out));
        LOCAL_ONLY(s); /* the pool's objects are not counted cheaply: chp_store_stats_counted */
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_stat st;
        struct chp_store_stats r = {0};
        uint64_t held = 0;
        if ((rc = mdb_stat(txn, s->db_chunks, &st)))
                goto out;
        r.chunks = st.ms_entries;
        if ((rc = mdb_stat(txn, s->db_files, &st)))
                goto out;
        r.files = st.ms_entries;
        if ((rc = mdb_stat(txn, s->db_uploads, &st)))
                goto out;
        r.uploads = st.ms_entries;
        rc = store_mdb_rc(rc);
        if (!rc && !(rc = s->backend->ops->stats(s->backend, txn, &r, &held))) {
                r.inline_chunks = r.chunks - held;
                *out = r;
        }
        mdb_txn_abort(txn);
        return rc;
out:
        mdb_txn_abort(txn);
        return store_mdb_rc(rc);
}

int chp_store_stats_counted(struct chp_store *s, struct chp_store_stats *out)
{
#ifdef CHAPAR_RADOS
        if (s->shared) {
                memset(out, 0, sizeof(*out));
                return shared_stats(s, out); /* by listing the pool's namespaces */
        }
#endif
        return chp_store_stats(s, out);
}

/* ---- asynchronous record lookups ---------------------------------------------------------- */

/* Answers q from this store's snapshot, on the calling thread: its status. */
static int lookup_now(struct chp_store *s, struct chp_store_lookup *q)
{
        ssize_t n;
        int rc;
        switch (q->kind) {
        case CHP_LOOKUP_FILE:
                return rec_file_get(s, q->id, q->want_manifest ? &q->manifest : NULL,
                                    &q->manifest_len, &q->info);
        case CHP_LOOKUP_FILE_META: {
                uint8_t meta[CHP_UPLOAD_META_MAX]; /* most files have none: no allocation */
                n = rec_file_meta(s, q->id, meta, sizeof(meta));
                if (n <= 0)
                        return (int)n;
                if (!(q->meta = malloc((size_t)n)))
                        return -ENOMEM;
                memcpy(q->meta, meta, (size_t)n);
                q->len = (size_t)n;
                return 0;
        }
        case CHP_LOOKUP_UPLOAD:
                return q->upload ? rec_upload_get(s, q->id, q->upload) : -EINVAL;
        case CHP_LOOKUP_UPLOAD_PROGRESS:
                rc = rec_upload_progress(s, q->id, &q->chunks, &q->len);
                if (rc || !q->buf)
                        return rc;
                n = rec_upload_tail(s, q->id, q->buf, q->cap);
                if (n < 0)
                        return (int)n;
                q->len = (size_t)n; /* what was read: the writer may have added since */
                return 0;
        case CHP_LOOKUP_UPLOAD_CHUNKS:
                return q->present ? rec_upload_chunks(s, q->id, q->present, q->chunk_addrs, q->n)
                                  : -EINVAL;
        case CHP_LOOKUP_UPLOAD_MANIFEST:
                return rec_upload_manifest(s, q->id, &q->manifest, &q->manifest_len);
        case CHP_LOOKUP_PENDING:
                return rec_pending(s, q->id, q->upload_id);
        case CHP_LOOKUP_HAS:
                return q->present && (q->addrs || !q->n) ? rec_has(s, q->addrs, q->n, q->present)
                                                         : -EINVAL;
        }
        return -EINVAL;
}

void chp_store_lookup_clear(struct chp_store_lookup *q)
{
        if (!q)
                return;
        free(q->manifest);
        free(q->meta);
        q->manifest = q->meta = NULL;
        q->manifest_len = 0;
        q->info = (struct chp_file_info){0};
        q->len = 0;
        q->chunks = 0;
        memset(q->upload_id, 0, sizeof(q->upload_id));
}

int chp_store_lookup(struct chp_store *s, struct chp_store_lookup *q)
{
        q->manifest = q->meta = NULL; /* not the caller's to free: whatever they held */
        chp_store_lookup_clear(q);
        q->status = 0;
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_lookup(s, q);
#endif
#ifdef CHAPAR_FAULT_INJECTION
        if (s->defer && q->kind <= CHP_LOOKUP_HAS) {
                if (!q->done)
                        return q->status = -EINVAL;
                struct defer_job *j = calloc(1, sizeof(*j));
                if (!j)
                        return q->status = -ENOMEM;
                j->q = q;
                int rc = defer_enqueue(s, j);
                return rc ? (q->status = rc) : -EINPROGRESS; /* q is the thread's now */
        }
#endif
        return q->status = lookup_now(s, q);
}

/* The synchronous record reads: what a remote backend would make the caller wait for. Over the
 * shared state each is the lookup of its kind, waited for (shared_wait). */

#ifdef CHAPAR_RADOS
#define SHARED(s) ((s)->shared != NULL)

/* q (kind and inputs set) answered over the shared state on this thread: its status. */
static int shared_wait(struct chp_store *s, struct chp_store_lookup *q)
{
        q->manifest = q->meta = NULL;
        chp_store_lookup_clear(q);
        q->status = 0;
        return shared_lookup_wait(s, q);
}
#else
#define SHARED(s)         false
#define shared_wait(s, q) (-ENOTSUP)
#endif

int chp_store_has(struct chp_store *s, const uint8_t *addrs, size_t n, uint8_t *present)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {
                    .kind = CHP_LOOKUP_HAS, .addrs = addrs, .n = n, .present = present};
                return shared_wait(s, &q);
        }
        record_blocking(s);
        return rec_has(s, addrs, n, present);
}

int chp_store_file_get(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint8_t **manifest,
                       size_t *len, struct chp_file_info *info)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_FILE,
                                             .want_manifest = manifest != NULL};
                memcpy(q.id, id, CHP_HASH_BYTES);
                if (manifest) {
                        *manifest = NULL;
                        *len = 0;
                }
                int rc = shared_wait(s, &q);
                if (!rc && manifest) {
                        *manifest = q.manifest;
                        *len = q.manifest_len;
                        q.manifest = NULL;
                }
                if (!rc && info)
                        *info = q.info;
                chp_store_lookup_clear(&q);
                return rc;
        }
        record_blocking(s);
        return rec_file_get(s, id, manifest, len, info);
}

ssize_t chp_store_file_meta(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint8_t *buf,
                            size_t cap)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_FILE_META};
                memcpy(q.id, id, CHP_HASH_BYTES);
                ssize_t n = shared_wait(s, &q);
                if (!n && q.len > cap)
                        n = -ENOBUFS;
                else if (!n && q.len)
                        memcpy(buf, q.meta, (n = (ssize_t)q.len));
                chp_store_lookup_clear(&q);
                return n;
        }
        record_blocking(s);
        return rec_file_meta(s, id, buf, cap);
}

int chp_store_upload_get(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                         struct chp_upload *out)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_UPLOAD, .upload = out};
                memcpy(q.id, id, CHP_UPLOAD_ID_BYTES);
                return shared_wait(s, &q);
        }
        record_blocking(s);
        return rec_upload_get(s, id, out);
}

int chp_store_upload_manifest(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint8_t **manifest, size_t *len)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_UPLOAD_MANIFEST};
                memcpy(q.id, id, CHP_UPLOAD_ID_BYTES);
                *manifest = NULL;
                *len = 0;
                int rc = shared_wait(s, &q);
                if (!rc) {
                        *manifest = q.manifest;
                        *len = q.manifest_len;
                        q.manifest = NULL;
                }
                chp_store_lookup_clear(&q);
                return rc;
        }
        record_blocking(s);
        return rec_upload_manifest(s, id, manifest, len);
}

int chp_store_upload_progress(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint32_t *chunks, size_t *tail_len)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_UPLOAD_PROGRESS};
                memcpy(q.id, id, CHP_UPLOAD_ID_BYTES);
                int rc = shared_wait(s, &q);
                if (!rc) {
                        *chunks = q.chunks;
                        *tail_len = q.len;
                }
                return rc;
        }
        record_blocking(s);
        return rec_upload_progress(s, id, chunks, tail_len);
}

ssize_t chp_store_upload_tail(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint8_t *buf, size_t cap)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {
                    .kind = CHP_LOOKUP_UPLOAD_PROGRESS, .buf = buf, .cap = cap};
                memcpy(q.id, id, CHP_UPLOAD_ID_BYTES);
                int rc = shared_wait(s, &q);
                if (rc == -ENOENT)
                        return 0; /* as the local store: an unknown upload keeps no bytes */
                return rc ? rc : (ssize_t)q.len;
        }
        record_blocking(s);
        return rec_upload_tail(s, id, buf, cap);
}

int chp_store_pending(struct chp_store *s, const uint8_t file_id[CHP_HASH_BYTES],
                      uint8_t upload_id[CHP_UPLOAD_ID_BYTES])
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_PENDING};
                memcpy(q.id, file_id, CHP_HASH_BYTES);
                int rc = shared_wait(s, &q);
                if (!rc)
                        memcpy(upload_id, q.upload_id, CHP_UPLOAD_ID_BYTES);
                return rc;
        }
        record_blocking(s);
        return rec_pending(s, file_id, upload_id);
}

int chp_store_upload_chunks(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                            uint8_t *have, uint8_t *addrs, size_t n)
{
        if (SHARED(s)) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_UPLOAD_CHUNKS,
                                             .n = n,
                                             .present = have,
                                             .chunk_addrs = addrs};
                memcpy(q.id, id, CHP_UPLOAD_ID_BYTES);
                return shared_wait(s, &q);
        }
        record_blocking(s);
        return rec_upload_chunks(s, id, have, addrs, n);
}
