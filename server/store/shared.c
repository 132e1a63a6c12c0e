/* shared.c — the store over the shared state ([store] rados_shared, shared_int.h): opening the
 * chp_rstate handle on the backend's cluster, counting what is in flight so that close waits for
 * it, and the collection: CHP_REQ_GC runs chp_rstate_gc on a thread of its own (it blocks),
 * chp_store_audit runs chp_rstate_audit on the caller's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "shared_int.h"

/* How long past its lease a chunk stays before GC removes it: a relay whose clock is behind, or
 * a commit between its refer and its file write, has this long (docs/scale-out.md, gc_grace). */
#define GC_GRACE_DEFAULT 3600

static void *gc_main(void *arg);

int shared_open(struct chp_store *s)
{
        struct store_shared *sh = calloc(1, sizeof(*sh));
        if (!sh)
                return -ENOMEM;
        sh->s = s;
        sh->gc_grace = s->opts.gc_grace ? s->opts.gc_grace : GC_GRACE_DEFAULT;
        pthread_mutex_init(&sh->lock, NULL);
        pthread_cond_init(&sh->cond, NULL);
        char host[64] = "";
        gethostname(host, sizeof(host) - 1);
        snprintf(sh->cookie, sizeof(sh->cookie), "%s.%ld", host, (long)getpid());
        struct chp_rstate_opts ro = {
            .cluster = chp_rados_cluster(s->backend),
            .conf = s->opts.rados_conf,
            .pool = s->opts.rados_pool,
            .user = s->opts.rados_user,
            .op_timeout = s->opts.rados_op_timeout,
            .inflight = s->opts.rados_inflight,
        };
        int rc = chp_rstate_open(&ro, &sh->st);
        if (rc) {
                chp_log_error("store", "rados: cannot open the shared state in pool %s: %s",
                              s->opts.rados_pool, chp_strerror(rc));
                goto fail;
        }
        if (pthread_create(&sh->gc_thread, NULL, gc_main, sh) != 0) {
                rc = -EAGAIN;
                goto fail;
        }
        sh->gc_started = true;
        s->shared = sh;
        return 0;
fail:
        chp_rstate_close(sh->st);
        pthread_cond_destroy(&sh->cond);
        pthread_mutex_destroy(&sh->lock);
        free(sh);
        return rc;
}

void shared_close(struct chp_store *s)
{
        struct store_shared *sh = s->shared;
        if (!sh)
                return;
        pthread_mutex_lock(&sh->lock);
        sh->closing = true;
        pthread_cond_broadcast(&sh->cond);
        pthread_mutex_unlock(&sh->lock);
        if (sh->gc_started)
                pthread_join(sh->gc_thread, NULL); /* it ends the queued GC requests first */
        pthread_mutex_lock(&sh->lock);
        while (sh->ops)
                pthread_cond_wait(&sh->cond, &sh->lock);
        pthread_mutex_unlock(&sh->lock);
        chp_rstate_close(sh->st);
        pthread_cond_destroy(&sh->cond);
        pthread_mutex_destroy(&sh->lock);
        free(sh);
        s->shared = NULL;
}

int shared_op_begin(struct store_shared *sh)
{
        pthread_mutex_lock(&sh->lock);
        int rc = sh->closing ? CHP_ECLOSED : 0;
        if (!rc)
                sh->ops++;
        pthread_mutex_unlock(&sh->lock);
        return rc;
}

void shared_op_end(struct store_shared *sh)
{
        pthread_mutex_lock(&sh->lock);
        if (--sh->ops == 0)
                pthread_cond_broadcast(&sh->cond);
        pthread_mutex_unlock(&sh->lock);
}

/* ---- GC --------------------------------------------------------------------------------- */

int shared_gc_submit(struct store_shared *sh, struct chp_store_req *req)
{
        req->next = NULL;
        pthread_mutex_lock(&sh->lock);
        if (sh->closing) {
                pthread_mutex_unlock(&sh->lock);
                return CHP_ECLOSED;
        }
        if (sh->gc_tail)
                sh->gc_tail->next = req;
        else
                sh->gc_head = req;
        sh->gc_tail = req;
        pthread_cond_broadcast(&sh->cond);
        pthread_mutex_unlock(&sh->lock);
        return 0;
}

/* One CHP_REQ_GC: a pass under the pool's GC lock, whose stats become the request's. Another
 * relay collecting (busy) is not an error: its pass does the work. */
static void gc_one(struct store_shared *sh, struct chp_store_req *req)
{
        struct chp_rstate_gc_opts o = {
            .now = req->u.gc.now,
            .grace = sh->gc_grace,
            .cookie = sh->cookie,
        };
        struct chp_rstate_gc_stats st;
        int rc = chp_rstate_gc(sh->st, &o, &st);
        struct chp_gc_stats *g = &req->u.gc.stats;
        memset(g, 0, sizeof(*g));
        g->files_expired = st.files_expired;
        g->uploads_expired = st.uploads_removed;
        g->chunks_freed = st.chunks_removed;
        if (st.busy)
                chp_log_debug("store", "rados: gc: another relay holds the pool's GC lock");
        if (st.lease_lost)
                chp_log_warn("store", "rados: gc: the GC lock lapsed mid-pass; the next pass "
                                      "goes on");
        req->status = rc;
}

static void *gc_main(void *arg)
{
        struct store_shared *sh = arg;
        pthread_mutex_lock(&sh->lock);
        for (;;) {
                struct chp_store_req *req = sh->gc_head;
                if (!req) {
                        if (sh->closing)
                                break;
                        pthread_cond_wait(&sh->cond, &sh->lock);
                        continue;
                }
                sh->gc_head = req->next;
                if (!sh->gc_head)
                        sh->gc_tail = NULL;
                bool closing = sh->closing;
                pthread_mutex_unlock(&sh->lock);
                if (closing)
                        req->status = CHP_ECLOSED; /* not started: close does not wait a pass */
                else
                        gc_one(sh, req);
                if (req->done)
                        req->done(req);
                pthread_mutex_lock(&sh->lock);
        }
        pthread_mutex_unlock(&sh->lock);
        return NULL;
}

/* ---- the audit -------------------------------------------------------------------------- */

int shared_audit(struct chp_store *s, uint64_t now, struct chp_audit_stats *out)
{
        struct store_shared *sh = s->shared;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        struct chp_rstate_audit_opts o = {.now = now};
        struct chp_rstate_audit_stats st;
        memset(&st, 0, sizeof(st));
        rc = chp_rstate_audit(sh->st, &o, &st);
        shared_op_end(sh);
        memset(out, 0, sizeof(*out));
        out->chunks = st.chunks;
        out->refs_fixed = st.lowered + st.refs_confirmed;
        out->dangling = st.refs_dropped;
        out->passes = 1;
        return rc;
}
