/* writer.c — the writer thread: the request queue, group commit (a batch's requests in one LMDB
 * transaction, its chunk bytes made durable before it commits), space accounting and undo, and
 * the synchronous conveniences over chp_store_submit.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "hash.h"
#include "log.h"
#include "manifest.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif

/* Takes len bytes from this batch's estimate of free space, refusing them (-ENOSPC) when they
 * would eat into what puts leave free: the reserve, so that GC can always commit the transaction
 * that frees space, and one segment more, so that GC can always copy a sparse segment's live
 * chunks out (compaction, compacting, may use that segment's worth). Without both a full disk
 * could stay full. The estimate is read once per batch. */
int store_space_take(struct chp_store *s, uint64_t len, bool compacting)
{
        if (s->opts.space_reserve == CHP_STORE_RESERVE_NONE)
                return 0; /* the filesystem says when it is full */
        uint64_t keep = s->reserve + (compacting ? 0 : s->seg_max);
        if (!s->space_known) {
                struct statvfs v;
                s->space_free = fstatvfs(s->segdir_fd, &v) == 0
                                    ? (uint64_t)v.f_bavail * (uint64_t)v.f_frsize
                                    : UINT64_MAX;
                s->space_known = true;
        }
        if (s->space_free < keep || s->space_free - keep < len) {
                s->out_of_space = true;
                s->backend->ops->full(s->backend);
                return -ENOSPC;
        }
        s->space_free -= len;
        return 0;
}

/* Applies a batch in one LMDB transaction, each request in a nested transaction of its own so
 * that one request's failure leaves the others intact. Sets every request's status. */
static void run_batch(struct chp_store *s, struct chp_store_req *batch)
{
        struct chp_backend *b = s->backend;
        struct chp_backend_mark batch_mark;
        s->space_known = false;
        b->ops->batch_begin(b);
        b->ops->mark(b, &batch_mark);

        MDB_txn *txn;
        int rc = store_mdb_rc(mdb_txn_begin(s->env, NULL, 0, &txn));
        if (rc)
                goto fail;
        for (struct chp_store_req *r = batch; r; r = r->next) {
                struct chp_backend_mark m;
                b->ops->mark(b, &m);
                MDB_txn *child;
                r->status = store_mdb_rc(mdb_txn_begin(s->env, txn, 0, &child));
                if (r->status)
                        continue;
                r->status = store_apply(s, child, r);
                if (r->status == 0)
                        r->status = store_mdb_rc(mdb_txn_commit(child));
                else
                        mdb_txn_abort(child);
                if (r->status)
                        b->ops->rollback(b, &m);
        }
        /* the bytes first (every put completed and durable), then the index that points at them */
        if ((rc = b->ops->sync(b))) {
                mdb_txn_abort(txn);
                if (is_space_error(rc))
                        s->out_of_space = true;
                goto fail;
        }
        if ((rc = fault_at(s, CHP_FAULT_COMMIT)))
                mdb_txn_abort(txn);
        else
                rc = store_mdb_rc(mdb_txn_commit(txn));
        if (rc) {
                if (is_space_error(rc))
                        s->out_of_space = true;
                goto fail;
        }
        b->ops->batch_end(b, true);
        return;
fail:
        chp_log_error("store", "batch failed: %s", chp_strerror(rc));
        b->ops->rollback(b, &batch_mark);
        b->ops->batch_end(b, false);
        for (struct chp_store_req *r = batch; r; r = r->next)
                if (r->status == 0)
                        r->status = rc;
}

static uint64_t req_bytes(const struct chp_store_req *r)
{
        return r->type == CHP_REQ_PUT && r->u.put.data ? r->u.put.len : 0;
}

void *store_writer_main(void *arg)
{
        struct chp_store *s = arg;
        pthread_mutex_lock(&s->q_lock);
        for (;;) {
                while (!s->q_head && !s->stopping)
                        pthread_cond_wait(&s->q_cond, &s->q_lock);
                if (!s->q_head)
                        break; /* stopping and drained */
                if (s->opts.linger_us && !s->q_head->next && !s->stopping) {
                        struct timespec until;
                        clock_gettime(CLOCK_REALTIME, &until);
                        until.tv_nsec += (long)s->opts.linger_us * 1000;
                        until.tv_sec += until.tv_nsec / 1000000000;
                        until.tv_nsec %= 1000000000;
                        pthread_cond_timedwait(&s->q_cond, &s->q_lock, &until);
                }
                /* take a prefix of the queue of at most batch_bytes (at least one request) */
                struct chp_store_req *batch = s->q_head, *last = batch;
                uint64_t bytes = req_bytes(batch);
                while (last->next && bytes + req_bytes(last->next) <= s->opts.batch_bytes) {
                        last = last->next;
                        bytes += req_bytes(last);
                }
                s->q_head = last->next;
                if (!s->q_head)
                        s->q_tail = NULL;
                last->next = NULL;
                pthread_mutex_unlock(&s->q_lock);

                run_batch(s, batch);
                while (batch) {
                        struct chp_store_req *next = batch->next;
                        batch->next = NULL;
                        if (batch->done)
                                batch->done(batch);
                        batch = next;
                }
                pthread_mutex_lock(&s->q_lock);
        }
        pthread_mutex_unlock(&s->q_lock);
        return NULL;
}

int chp_store_submit(struct chp_store *s, struct chp_store_req *req)
{
        if (req->type == CHP_REQ_PUT && req->u.put.data) {
                if (req->u.put.len > CHP_CHUNK_MAX)
                        return CHP_ETOOBIG;
                if (!req->u.put.verified) {
                        uint8_t got[CHP_HASH_BYTES];
                        int rc = chp_sha256(req->u.put.data, req->u.put.len, got);
                        if (rc)
                                return rc;
                        if (memcmp(got, req->u.put.addr, CHP_HASH_BYTES) != 0)
                                return CHP_EMISMATCH;
                }
        }
        if (req->type == CHP_REQ_PUT)
                req->u.put.deduplicated = false;
        req->status = 0;
        req->next = NULL;
#ifdef CHAPAR_RADOS
        if (s->shared)
                return req->type == CHP_REQ_GC ? shared_gc_submit(s->shared, req)
                                               : shared_submit(s, req);
#endif
        pthread_mutex_lock(&s->q_lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->q_lock);
                return CHP_ECLOSED;
        }
        if (s->q_tail)
                s->q_tail->next = req;
        else
                s->q_head = req;
        s->q_tail = req;
        pthread_cond_signal(&s->q_cond);
        pthread_mutex_unlock(&s->q_lock);
        return 0;
}

struct waiter {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
};

static void waiter_done(struct chp_store_req *req)
{
        struct waiter *w = req->ctx;
        pthread_mutex_lock(&w->lock);
        w->done = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

int chp_store_run(struct chp_store *s, struct chp_store_req *req)
{
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
        req->done = waiter_done;
        req->ctx = &w;
        int rc = chp_store_submit(s, req);
        if (rc)
                return rc;
        pthread_mutex_lock(&w.lock);
        while (!w.done)
                pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
        pthread_cond_destroy(&w.cond);
        pthread_mutex_destroy(&w.lock);
        return req->status;
}

int chp_store_put(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], const void *data,
                  uint32_t len)
{
        struct chp_store_req req = {.type = CHP_REQ_PUT};
        memcpy(req.u.put.addr, addr, CHP_HASH_BYTES);
        req.u.put.data = data;
        req.u.put.len = len;
        return chp_store_run(s, &req);
}

int chp_store_commit(struct chp_store *s, const uint8_t *manifest, size_t len, uint64_t expires,
                     uint8_t file_id[CHP_HASH_BYTES])
{
        struct chp_store_req req = {.type = CHP_REQ_COMMIT};
        req.u.commit.manifest = manifest;
        req.u.commit.manifest_len = len;
        req.u.commit.expires = expires;
        int rc = chp_store_run(s, &req);
        if (rc == 0)
                memcpy(file_id, req.u.commit.file_id, CHP_HASH_BYTES);
        return rc;
}

int chp_store_gc(struct chp_store *s, uint64_t now, struct chp_gc_stats *stats)
{
        struct chp_store_req req = {.type = CHP_REQ_GC};
        req.u.gc.now = now;
        int rc = chp_store_run(s, &req);
        if (rc == 0 && stats)
                *stats = req.u.gc.stats;
        return rc;
}
