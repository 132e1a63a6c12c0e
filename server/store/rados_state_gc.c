/* rados_state_gc.c — a GC pass over the shared state (docs/scale-out.md, "GC on two relays at
 * once"): the lock on i/gc, the due keys of i/exp.* and i/cexp.* read a page at a time, each sent
 * as its guarded request (at most inflight at once), then the keys that are done dropped in one
 * operation per shard and batch. The pass runs on its caller's thread and blocks; the requests'
 * callbacks only count and signal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"
#include "rados_state_int.h"

#define GC_LOCK   "gc"
#define GC_OID    "gc"
#define GC_LEASE  60
#define GC_INFL   32
#define GC_PAGE   256
#define GC_ID_HEX (2 * CHP_HASH_BYTES)

struct gc;

struct slot {
        struct gc *g;
        struct chp_rstate_req req;
        char key[CHP_RSTATE_KEY_MAX];
        char kind;   /* 'f', 'u' or 'c' */
        bool remove; /* an upload: the removal (after its read) */
        bool drop;   /* result: the key is done */
        bool gone;   /* result: removed by this pass (not a stale key) */
};

struct gc {
        struct chp_rstate *st;
        const struct chp_rstate_gc_opts *o;
        struct chp_rstate_gc_stats *s;
        uint64_t now, chunk_before; /* files, uploads: expiry < now; chunks: lease < chunk_before */
        char cookie[64];
        struct timeval lease;
        uint64_t renewed_us;
        uint32_t inflight, page;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        uint32_t pending;
        int err; /* the first error that stops the pass */
        struct slot *slots;
};

static uint64_t mono_us(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static bool parse_hex16(const char *s, uint64_t *v)
{
        return strnlen(s, 16) == 16 && unhex16((const uint8_t *)s, 16, v);
}

/* Renews the lock when a third of the lease has passed: false when the lease is lost. */
static bool renew(struct gc *g, bool force)
{
        uint64_t t = mono_us();
        if (!force && t - g->renewed_us < (uint64_t)g->lease.tv_sec * 1000000u / 3)
                return true;
        int rc = rados_lock_exclusive(rs_io(g->st, NS_I), GC_OID, GC_LOCK, g->cookie, "chapar gc",
                                      &g->lease, LIBRADOS_LOCK_FLAG_MUST_RENEW);
        if (rc == 0) {
                g->renewed_us = t;
                return true;
        }
        if (rc == -ENOENT || rc == -EBUSY || rc == -EEXIST)
                g->s->lease_lost = true; /* lapsed (and perhaps another's now) */
        else if (!g->err)
                g->err = rs_unavailable(rc);
        return false;
}

static void slot_end(struct slot *sl, int rc)
{
        struct gc *g = sl->g;
        pthread_mutex_lock(&g->mu);
        if (rc == 0 || rc == -ENOENT) {
                sl->drop = true;
        } else {
                g->s->errors++;
                if (rs_unavailable(rc) == CHP_EUNAVAILABLE && !g->err)
                        g->err = CHP_EUNAVAILABLE;
        }
        if (--g->pending == 0)
                pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
}

static void slot_done(struct chp_rstate_req *req, int rc)
{
        struct slot *sl = req->arg;
        struct gc *g = sl->g;
        switch (sl->kind) {
        case 'c':
                sl->gone = rc == 0 && req->u.chunk.removed;
                break;
        case 'f':
                sl->gone = rc == 0 && req->u.file.removed;
                break;
        default: /* 'u' */
                if (sl->remove) {
                        sl->gone = rc == 0;
                        break;
                }
                if (rc == 0) {
                        struct chp_rec_upload r;
                        bool due = chp_rec_upload_parse(req->u.upload.got, req->u.upload.got_len,
                                                        &r) >= 0 &&
                                   r.expires < g->now;
                        chp_rstate_req_release(req);
                        if (due) { /* uploads are never extended: the read expiry holds */
                                sl->remove = true;
                                req->kind = CHP_RS_UPLOAD_REMOVE;
                                if ((rc = chp_rstate_submit(g->st, req)) == 0)
                                        return;
                        }
                }
                break;
        }
        slot_end(sl, rc);
}

/* Fills sl's request for the due key; false for a key this design does not write. */
static bool slot_prepare(struct gc *g, struct slot *sl, enum chp_rstate_index idx, const char *key)
{
        size_t n = strlen(key);
        uint64_t when;
        memset(sl, 0, sizeof(*sl));
        sl->g = g;
        memcpy(sl->key, key, n + 1);
        sl->req.done = slot_done;
        sl->req.arg = sl;
        if (!parse_hex16(key, &when))
                return false;
        if (idx == CHP_RS_INDEX_CEXP) {
                sl->kind = 'c';
                sl->req.kind = CHP_RS_CHUNK_REMOVE;
                sl->req.u.chunk.now = g->now;
                sl->req.u.chunk.grace = g->o->grace;
                sl->req.u.chunk.index_lease = when;
                return n == 16 + GC_ID_HEX &&
                       chp_hex_decode(key + 16, GC_ID_HEX, sl->req.u.chunk.addr, CHP_HASH_BYTES) ==
                           0;
        }
        sl->kind = key[16];
        if (sl->kind == 'f') {
                sl->req.kind = CHP_RS_FILE_EXPIRE;
                sl->req.u.file.now = g->now;
                return n == 17 + GC_ID_HEX &&
                       chp_hex_decode(key + 17, GC_ID_HEX, sl->req.u.file.id, CHP_HASH_BYTES) == 0;
        }
        sl->req.kind = CHP_RS_UPLOAD_GET;
        return sl->kind == 'u' && n == 17 + 2 * CHP_UPLOAD_ID_BYTES &&
               chp_hex_decode(key + 17, 2 * CHP_UPLOAD_ID_BYTES, sl->req.u.upload.id,
                              CHP_UPLOAD_ID_BYTES) == 0;
}

/* Sends n slots' requests, waits for them, drops the keys that are done from oid. */
static void batch(struct gc *g, const char *oid, uint32_t n)
{
        pthread_mutex_lock(&g->mu);
        g->pending = n + 1;
        pthread_mutex_unlock(&g->mu);
        for (uint32_t i = 0; i < n; i++) {
                int rc = chp_rstate_submit(g->st, &g->slots[i].req);
                if (rc)
                        slot_end(&g->slots[i], rc);
        }
        pthread_mutex_lock(&g->mu);
        g->pending--;
        while (g->pending)
                pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
        const char *keys[CHP_RSTATE_PAGE_MAX];
        size_t k = 0;
        for (uint32_t i = 0; i < n; i++) {
                struct slot *sl = &g->slots[i];
                if (!sl->drop)
                        continue;
                keys[k++] = sl->key;
                if (!sl->gone)
                        g->s->keys_dropped++;
                else if (sl->kind == 'c')
                        g->s->chunks_removed++;
                else if (sl->kind == 'f')
                        g->s->files_expired++;
                else
                        g->s->uploads_removed++;
        }
        if (k == 0)
                return;
        rados_write_op_t w = rados_create_write_op();
        rados_write_op_omap_rm_keys(w, keys, k);
        int rc = rados_write_op_operate(w, rs_io(g->st, NS_I), oid, NULL, 0);
        rados_release_write_op(w);
        if (rc && rc != -ENOENT && !g->err)
                g->err = rs_unavailable(rc);
}

/* Whether a key is due: false ends the shard (keys are in expiry order). */
static bool due(const struct gc *g, enum chp_rstate_index idx, const char *key)
{
        uint64_t when;
        if (!parse_hex16(key, &when))
                return true; /* malformed: counted as an error, left */
        return when < (idx == CHP_RS_INDEX_CEXP ? g->chunk_before : g->now);
}

/* One shard: false when the pass must stop (lease lost, cluster gone). */
static bool shard(struct gc *g, enum chp_rstate_index idx, uint8_t sh)
{
        char oid[OID_MAX], after[CHP_RSTATE_KEY_MAX] = "";
        snprintf(oid, sizeof(oid), "%s.%02x", idx == CHP_RS_INDEX_CEXP ? "cexp" : "exp", sh);
        for (;;) {
                struct chp_rstate_req pg = {.kind = CHP_RS_INDEX_PAGE};
                pg.u.page.index = idx;
                pg.u.page.shard = sh;
                pg.u.page.after = after[0] ? after : NULL;
                pg.u.page.max = g->page;
                int rc = chp_rstate_run(g->st, &pg);
                if (rc) {
                        g->err = rs_unavailable(rc);
                        return false;
                }
                bool end = false; /* a key not due: the rest of the shard is not either */
                uint32_t i = 0;
                while (i < pg.u.page.n) {
                        if (g->o->on_batch)
                                g->o->on_batch(g->o->arg, g->s);
                        if (!renew(g, false)) {
                                chp_rstate_req_release(&pg);
                                return false;
                        }
                        uint32_t n = 0;
                        for (; i < pg.u.page.n && n < g->inflight; i++) {
                                const char *key = pg.u.page.entries[i].key;
                                if (!due(g, idx, key)) {
                                        end = true;
                                        break;
                                }
                                if (slot_prepare(g, &g->slots[n], idx, key))
                                        n++;
                                else
                                        g->s->errors++;
                        }
                        batch(g, oid, n);
                        if (g->err || end)
                                break;
                }
                if (pg.u.page.n)
                        snprintf(after, sizeof(after), "%s",
                                 pg.u.page.entries[pg.u.page.n - 1].key);
                chp_rstate_req_release(&pg);
                if (g->err)
                        return false;
                if (end || !pg.u.page.more)
                        return true;
        }
}

int chp_rstate_gc(struct chp_rstate *st, const struct chp_rstate_gc_opts *o,
                  struct chp_rstate_gc_stats *s)
{
        memset(s, 0, sizeof(*s));
        if (!st || !o)
                return -EINVAL;
        struct gc g = {.st = st, .o = o, .s = s};
        g.now = o->now ? o->now : (uint64_t)time(NULL);
        g.chunk_before = g.now > o->grace ? g.now - o->grace : 0;
        g.lease.tv_sec = o->lease ? o->lease : GC_LEASE;
        g.inflight = o->inflight ? o->inflight : GC_INFL;
        g.page = o->page ? o->page : GC_PAGE;
        if (g.inflight > CHP_RSTATE_PAGE_MAX || g.page > CHP_RSTATE_PAGE_MAX)
                return -EINVAL;
        if (o->cookie)
                snprintf(g.cookie, sizeof(g.cookie), "%s", o->cookie);
        else
                snprintf(g.cookie, sizeof(g.cookie), "gc-%ld", (long)getpid());
        rados_ioctx_t io = rs_io(st, NS_I);
        int rc = rados_lock_exclusive(io, GC_OID, GC_LOCK, g.cookie, "chapar gc", &g.lease, 0);
        if (rc == -EBUSY) {
                s->busy = true; /* another relay is collecting */
                return 0;
        }
        if (rc == -EEXIST) /* ours already (a pass before that did not unlock): renew it */
                rc = rados_lock_exclusive(io, GC_OID, GC_LOCK, g.cookie, "chapar gc", &g.lease,
                                          LIBRADOS_LOCK_FLAG_MUST_RENEW);
        if (rc)
                return rs_unavailable(rc);
        g.renewed_us = mono_us();
        if (!(g.slots = calloc(g.inflight, sizeof(*g.slots)))) {
                rados_unlock(io, GC_OID, GC_LOCK, g.cookie);
                return -ENOMEM;
        }
        pthread_mutex_init(&g.mu, NULL);
        pthread_cond_init(&g.cv, NULL);
        static const enum chp_rstate_index order[] = {CHP_RS_INDEX_EXP, CHP_RS_INDEX_CEXP};
        bool go = true;
        for (int k = 0; k < 2 && go; k++)
                for (unsigned sh = 0; sh < 256 && go; sh++)
                        go = shard(&g, order[k], (uint8_t)sh);
        if (!s->lease_lost)
                rados_unlock(io, GC_OID, GC_LOCK, g.cookie);
        pthread_cond_destroy(&g.cv);
        pthread_mutex_destroy(&g.mu);
        free(g.slots);
        return g.err;
}
