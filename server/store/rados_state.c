/* rados_state.c — the handle, the engine that runs requests' librados operations (bounded, driven
 * by completions), and the chunk operations of docs/scale-out.md's table. The commit,
 * uploads, pending, usage and tus offsets are in rados_state_flows.c, the files in
 * rados_state_files.c.
 *
 * Threads: librados calls each completion's callback on its own thread; the callback releases
 * the completion and the operation, starts a queued operation if there is room, and runs the
 * request's next step there. Delays (usage retries' jitter) and failures found when an operation
 * is submitted go through the handle's timer thread, so that no done callback runs inside
 * chp_rstate_submit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>

#include "bytes.h"
#include "log.h"
#include "rados_state_int.h"
#include "xxh.h"

struct chp_rstate {
        rados_t cluster;
        bool own_cluster;
        rados_ioctx_t io[NS_N];
        uint32_t inflight_max;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        uint32_t inflight, peak, queued;
        struct rop *qhead, *qtail;
        uint64_t active; /* requests submitted and not yet done */
        /* the timer thread */
        pthread_t timer;
        bool timer_started, stopping;
        pthread_cond_t tcv;
        struct chp_rstate_priv *timers;
        /* chp_rstate_op_stats */
        _Atomic uint64_t op_le[CHP_STORE_NOPS][CHP_STORE_OP_BUCKETS], op_count[CHP_STORE_NOPS],
            op_sum_us[CHP_STORE_NOPS], errors[CHP_STORE_NOPS][CHP_STORE_NERRS];
};

static const char *const ns_names[NS_N] = {"c", "f", "u", "p", "t", "i"};

/* ---- names and numbers -------------------------------------------------------------------- */

void hex16(uint64_t v, char out[HEX16])
{
        snprintf(out, HEX16, "%016llx", (unsigned long long)v);
}

bool unhex16(const uint8_t *s, size_t len, uint64_t *v)
{
        if (len != 16)
                return false;
        uint64_t r = 0;
        for (size_t i = 0; i < 16; i++) {
                uint8_t c = s[i];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (d < 0)
                        return false;
                r = r << 4 | (uint64_t)d;
        }
        *v = r;
        return true;
}

void oid_hex(const uint8_t *id, size_t n, char oid[OID_MAX])
{
        chp_hex_encode(id, n, oid);
}

void shard_oid(const char *prefix, const uint8_t *id, char oid[OID_MAX])
{
        snprintf(oid, OID_MAX, "%s.%02x", prefix, id[0]);
}

void list_oid(const char *tenant, size_t tlen, char oid[OID_MAX])
{
        memcpy(oid, "list.", 5);
        chp_hex_encode((const uint8_t *)tenant, tlen, oid + 5);
}

size_t exp_key(char *out, uint64_t expires, char kind, const uint8_t *id, size_t idlen)
{
        hex16(expires, out);
        out[16] = kind;
        chp_hex_encode(id, idlen, out + 17);
        return 17 + 2 * idlen;
}

size_t list_key(char *out, uint64_t created, const uint8_t *id)
{
        hex16(~created, out);
        chp_hex_encode(id, CHP_HASH_BYTES, out + 16);
        return 16 + 2 * CHP_HASH_BYTES;
}

int rs_unavailable(int rc)
{
        switch (rc) {
        case -ETIMEDOUT:
        case -ENOTCONN:
        case -ESHUTDOWN: /* also Ceph's EBLOCKLISTED: this client was fenced */
        case -EIO:
        case -ECONNREFUSED:
                return CHP_EUNAVAILABLE;
        }
        return rc;
}

static uint64_t mono_us(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ---- the engine --------------------------------------------------------------------------- */

static void rop_release(struct rop *o)
{
        if (o->w)
                rados_release_write_op(o->w);
        if (o->r)
                rados_release_read_op(o->r);
        o->w = NULL;
        o->r = NULL;
}

void rop_write(struct chp_rstate_priv *p, int ns, const char *oid)
{
        rop_release(&p->op);
        p->op.ns = ns;
        snprintf(p->op.oid, OID_MAX, "%s", oid);
        p->op.w = rados_create_write_op();
}

void rop_read(struct chp_rstate_priv *p, int ns, const char *oid)
{
        rop_release(&p->op);
        p->op.ns = ns;
        snprintf(p->op.oid, OID_MAX, "%s", oid);
        p->op.r = rados_create_read_op();
}

static void *timer_main(void *arg)
{
        struct chp_rstate *st = arg;
        pthread_mutex_lock(&st->mu);
        for (;;) {
                struct chp_rstate_priv **first = NULL;
                for (struct chp_rstate_priv **pp = &st->timers; *pp; pp = &(*pp)->tnext)
                        if (!first || (*pp)->due_us < (*first)->due_us)
                                first = pp;
                if (!first) {
                        if (st->stopping)
                                break;
                        pthread_cond_wait(&st->tcv, &st->mu);
                        continue;
                }
                uint64_t now = mono_us();
                if ((*first)->due_us > now) {
                        struct timespec t;
                        clock_gettime(CLOCK_MONOTONIC, &t);
                        uint64_t ns = (uint64_t)t.tv_nsec + ((*first)->due_us - now) * 1000u;
                        t.tv_sec += (time_t)(ns / 1000000000u);
                        t.tv_nsec = (long)(ns % 1000000000u);
                        pthread_cond_timedwait(&st->tcv, &st->mu, &t);
                        continue;
                }
                struct chp_rstate_priv *p = *first;
                *first = p->tnext;
                pthread_mutex_unlock(&st->mu);
                p->timer_fn(p, p->timer_rc);
                pthread_mutex_lock(&st->mu);
        }
        pthread_mutex_unlock(&st->mu);
        return NULL;
}

void later(struct chp_rstate_priv *p, uint64_t us, step_fn fn, int rc)
{
        struct chp_rstate *st = p->st;
        p->due_us = mono_us() + us;
        p->timer_fn = fn;
        p->timer_rc = rc;
        pthread_mutex_lock(&st->mu);
        p->tnext = st->timers;
        st->timers = p;
        pthread_cond_signal(&st->tcv);
        pthread_mutex_unlock(&st->mu);
}

static void rop_start(struct chp_rstate *st, struct rop *o);

/* An operation's slot is free: the oldest queued operation takes it, or it is given back. */
static void slot_free(struct chp_rstate *st)
{
        struct rop *next = NULL;
        pthread_mutex_lock(&st->mu);
        if ((next = st->qhead)) {
                if (!(st->qhead = next->qnext))
                        st->qtail = NULL;
                st->queued--;
        } else {
                st->inflight--;
        }
        pthread_mutex_unlock(&st->mu);
        if (next)
                rop_start(st, next);
}

/* Counts p's operation, which completed with rc (librados'). */
static void op_count(struct chp_rstate *st, const struct chp_rstate_priv *p, int rc)
{
        enum chp_store_op op =
            p->op.ns != NS_C ? (p->op.w ? CHP_STORE_OP_RECORD_WRITE : CHP_STORE_OP_RECORD_READ)
            : !p->op.w       ? CHP_STORE_OP_READ
            : p->req->kind == CHP_RS_CHUNK_REMOVE ? CHP_STORE_OP_REMOVE
                                                  : CHP_STORE_OP_WRITE;
        uint64_t us = mono_us() - p->op.t0_us;
        for (size_t i = 0; i < CHP_STORE_OP_BUCKETS; i++)
                if ((double)us / 1e6 <= chp_store_op_buckets[i])
                        atomic_fetch_add(&st->op_le[op][i], 1);
        atomic_fetch_add(&st->op_count[op], 1);
        atomic_fetch_add(&st->op_sum_us[op], us);
        if (rs_unavailable(rc) == CHP_EUNAVAILABLE)
                atomic_fetch_add(&st->errors[op][CHP_STORE_ERR_UNAVAILABLE], 1);
        else if (rc == -ENOSPC || rc == -EDQUOT)
                atomic_fetch_add(&st->errors[op][CHP_STORE_ERR_NOSPC], 1);
}

void chp_rstate_op_stats(struct chp_rstate *st, struct chp_store_backend_stats *out)
{
        for (int op = 0; op < CHP_STORE_NOPS; op++) {
                for (int i = 0; i < CHP_STORE_OP_BUCKETS; i++)
                        out->op_le[op][i] += atomic_load(&st->op_le[op][i]);
                out->op_count[op] += atomic_load(&st->op_count[op]);
                out->op_sum_us[op] += atomic_load(&st->op_sum_us[op]);
                for (int e = 0; e < CHP_STORE_NERRS; e++)
                        out->errors[op][e] += atomic_load(&st->errors[op][e]);
        }
}

static void rop_complete(rados_completion_t c, void *arg)
{
        struct chp_rstate_priv *p = arg;
        struct chp_rstate *st = p->st;
        int rc = rados_aio_get_return_value(c);
        op_count(st, p, rc);
        p->op.version = rados_aio_get_version(c);
        rados_aio_release(c);
        slot_free(st);
        step_fn fn = p->next;
        fn(p, rc);
}

/* Starts o, whose slot is counted. A failure to start completes it through the timer. */
static void rop_start(struct chp_rstate *st, struct rop *o)
{
        struct chp_rstate_priv *p =
            (struct chp_rstate_priv *)((char *)o - offsetof(struct chp_rstate_priv, op));
        rados_completion_t c;
        int rc = -ENOMEM;
        o->t0_us = mono_us();
        if ((o->w || o->r) && (rc = rados_aio_create_completion2(p, rop_complete, &c)) == 0) {
                rados_ioctx_t io = st->io[o->ns];
                rc = o->w ? rados_aio_write_op_operate(o->w, io, c, o->oid, NULL,
                                                       LIBRADOS_OPERATION_NOFLAG)
                          : rados_aio_read_op_operate(o->r, io, c, o->oid,
                                                      LIBRADOS_OPERATION_NOFLAG);
                if (rc == 0)
                        return;
                rados_aio_release(c);
        }
        slot_free(st);
        later(p, 0, p->next, rc < 0 ? rc : -EIO);
}

void rop_go(struct chp_rstate_priv *p, step_fn next)
{
        struct chp_rstate *st = p->st;
        p->next = next;
        p->op.qnext = NULL;
        pthread_mutex_lock(&st->mu);
        if (st->inflight >= st->inflight_max) {
                if (st->qtail)
                        st->qtail->qnext = &p->op;
                else
                        st->qhead = &p->op;
                st->qtail = &p->op;
                st->queued++;
                pthread_mutex_unlock(&st->mu);
                return;
        }
        if (++st->inflight > st->peak)
                st->peak = st->inflight;
        pthread_mutex_unlock(&st->mu);
        rop_start(st, &p->op);
}

static void priv_free(struct chp_rstate_priv *p)
{
        if (p->op.oit)
                rados_omap_get_end(p->op.oit);
        rop_release(&p->op);
        flows_free(p);
        free(p->x.m);
        free(p->data);
        free(p->rec);
        free(p->sub);
        free(p);
}

void finish(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate *st = p->st;
        struct chp_rstate_req *req = p->req;
        if (rc == -ECANCELED) { /* a guard this file did not map: never leaked */
                chp_log_warn("store", "rados: an unmapped guard failure (kind %d)", req->kind);
                rc = CHP_ECORRUPT;
        }
        req->priv = NULL;
        priv_free(p);
        req->done(req, rs_unavailable(rc));
        pthread_mutex_lock(&st->mu);
        if (--st->active == 0)
                pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
}

bool hold_here(struct chp_rstate_priv *p, int step, step_fn fn)
{
        if (p->req->hold != step || !p->req->on_hold || p->held_once)
                return false; /* a step retried after its hold does not pause again */
        p->held_once = true;
        p->held_fn = fn;
        p->req->on_hold(p->req);
        return true;
}

void chp_rstate_resume(struct chp_rstate_req *req)
{
        struct chp_rstate_priv *p = req->priv;
        step_fn fn = p->held_fn;
        p->held_fn = NULL;
        fn(p, 0);
}

/* A child request's done: the parent's p->after continues with its result. */
static void sub_done(struct chp_rstate_req *sub, int rc)
{
        struct chp_rstate_priv *p = sub->arg;
        p->after(p, rc);
}

/* Runs sub (p->sub, owned by p) with flags; its done continues in p->after unless done is given.
 * Returns 0 or a submit error (then nothing runs). */
int sub_go(struct chp_rstate_priv *p, struct chp_rstate_req *sub, unsigned flags,
           void (*done)(struct chp_rstate_req *, int))
{
        sub->done = done ? done : sub_done;
        if (!done)
                sub->arg = p;
        return rs_submit(p->st, sub, flags);
}

void chp_rstate_inflight(struct chp_rstate *st, uint32_t *now, uint32_t *peak, uint32_t *queued)
{
        pthread_mutex_lock(&st->mu);
        *now = st->inflight;
        *peak = st->peak;
        *queued = st->queued;
        pthread_mutex_unlock(&st->mu);
}

void chp_rstate_req_release(struct chp_rstate_req *req)
{
        if (!req)
                return;
        switch (req->kind) {
        case CHP_RS_FILE_GET:
                free(req->u.file.got);
                free(req->u.file.got_meta);
                req->u.file.got = req->u.file.got_meta = NULL;
                break;
        case CHP_RS_UPLOAD_GET:
                free(req->u.upload.got);
                req->u.upload.got = NULL;
                break;
        case CHP_RS_INDEX_PAGE:
                free(req->u.page.entries);
                req->u.page.entries = NULL;
                break;
        default:
                break;
        }
}

/* Sets (or drops) one key of an index object (namespace i), then next. */
void index_key(struct chp_rstate_priv *p, const char *oid, const char *key, bool drop, step_fn next)
{
        const char *keys[] = {key};
        const char *vals[] = {""};
        size_t lens[] = {0};
        rop_write(p, NS_I, oid);
        if (drop)
                rados_write_op_omap_rm_keys(p->op.w, keys, 1);
        else
                rados_write_op_omap_set(p->op.w, keys, vals, lens, 1);
        rop_go(p, next);
}

/* ---- an object's bytes and small xattrs (obj_read) ---------------------------------------- */

static void take_xattrs(struct chp_rstate_priv *p)
{
        const char *name, *val;
        size_t len;
        struct xattrs *x = &p->x;
        free(x->m);
        memset(x, 0, sizeof(*x));
        if (!p->op.xit)
                return;
        while (p->op.xattrs_rv >= 0 && rados_getxattrs_next(p->op.xit, &name, &val, &len) == 0 &&
               name) {
                const uint8_t *v = (const uint8_t *)val;
                if (len == 0)
                        continue; /* "" is what a tombstone leaves: compares as absent */
                if (!strcmp(name, "e"))
                        x->has_e = unhex16(v, len, &x->e);
                else if (!strcmp(name, "q"))
                        x->has_q = unhex16(v, len, &x->q) || true;
                else if (!strcmp(name, "n"))
                        x->has_n = unhex16(v, len, &x->n);
                else if (!strcmp(name, "m") && (x->m = malloc(len))) {
                        memcpy(x->m, v, len);
                        x->m_len = len;
                } else if (!strcmp(name, "s") && len <= sizeof(x->s)) {
                        memcpy(x->s, v, len);
                        x->s_len = len;
                } else if (!strcmp(name, "u") && len <= sizeof(x->u)) {
                        memcpy(x->u, v, len);
                        x->u_len = len;
                }
        }
        rados_getxattrs_end(p->op.xit);
        p->op.xit = NULL;
}

static void obj_read_rest(struct chp_rstate_priv *p, int rc)
{
        if (rc == 0 && (p->op.read_rv < 0 || p->op.got + READ_HEAD != p->data_len))
                rc = p->op.read_rv < 0 ? p->op.read_rv : -EAGAIN;
        if (rc == -ERANGE || rc == -EOVERFLOW)
                rc = -EAGAIN; /* it changed between the two reads: read it again */
        if (rc == -EAGAIN && ++p->tries < 8) {
                obj_read(p, p->op.ns, p->op.oid, p->after);
                return;
        }
        p->after(p, rc);
}

static void obj_read_head(struct chp_rstate_priv *p, int rc)
{
        take_xattrs(p); /* frees the iterator on every path */
        p->found = rc == 0;
        if (rc == -ENOENT) {
                p->after(p, 0);
                return;
        }
        if (rc < 0 || p->op.stat_rv < 0 || p->op.read_rv < 0) {
                p->after(p, rc < 0 ? rc : p->op.stat_rv < 0 ? p->op.stat_rv : p->op.read_rv);
                return;
        }
        p->version = p->op.version;
        p->data_len = p->op.size;
        if (p->op.size <= READ_HEAD) {
                p->data_len = p->op.got;
                p->after(p, 0);
                return;
        }
        uint8_t *d = realloc(p->data, p->op.size);
        if (!d) {
                p->after(p, -ENOMEM);
                return;
        }
        p->data = d;
        char oid[OID_MAX];
        snprintf(oid, sizeof(oid), "%s", p->op.oid);
        rop_read(p, p->op.ns, oid);
        rados_read_op_assert_version(p->op.r, p->version);
        rados_read_op_read(p->op.r, READ_HEAD, p->op.size - READ_HEAD, (char *)d + READ_HEAD,
                           &p->op.got, &p->op.read_rv);
        rop_go(p, obj_read_rest);
}

/* Reads oid's size, xattrs, version and bytes into p (found, x, version, data); then after(p, 0)
 * (found false when there is no object) or after(p, error). */
void obj_read(struct chp_rstate_priv *p, int ns, const char *oid, step_fn after)
{
        p->after = after;
        uint8_t *d = realloc(p->data, READ_HEAD);
        if (!d) {
                later(p, 0, after, -ENOMEM);
                return;
        }
        p->data = d;
        char o[OID_MAX];
        snprintf(o, sizeof(o), "%s", oid);
        rop_read(p, ns, o);
        p->op.got = 0;
        p->op.read_rv = p->op.stat_rv = p->op.xattrs_rv = 0;
        rados_read_op_stat(p->op.r, &p->op.size, &p->op.mtime, &p->op.stat_rv);
        rados_read_op_getxattrs(p->op.r, &p->op.xit, &p->op.xattrs_rv);
        rados_read_op_read(p->op.r, 0, READ_HEAD, (char *)d, &p->op.got, &p->op.read_rv);
        rop_go(p, obj_read_head);
}

/* ---- chunks ------------------------------------------------------------------------------- */

static void ref_key(const struct chp_rstate_ref *r, char key[2 + 2 * CHP_HASH_BYTES])
{
        key[0] = r->kind;
        chp_hex_encode(r->id, r->kind == 'u' ? CHP_UPLOAD_ID_BYTES : CHP_HASH_BYTES, key + 1);
}

/* The referrer's value: its expiry (8 bytes LE) and state (1 pending: a commit's file key). */
static void ref_set(struct chp_rstate_req *q, rados_write_op_t w)
{
        char key[2 + 2 * CHP_HASH_BYTES];
        uint8_t val[9];
        ref_key(&q->u.chunk.ref, key);
        chp_put_le64(val, q->u.chunk.lease);
        val[8] = q->u.chunk.ref.kind == 'f' ? 1 : 0;
        const char *keys[] = {key};
        const char *vals[] = {(const char *)val};
        size_t lens[] = {sizeof(val)};
        rados_write_op_omap_set(w, keys, vals, lens, 1);
}

static void chunk_create(struct chp_rstate_priv *p, int rc);
static void chunk_refer(struct chp_rstate_priv *p, int rc);

void chunk_done(struct chp_rstate_priv *p, int rc)
{
        finish(p, rc);
}

static void chunk_noextend_done(struct chp_rstate_priv *p, int rc)
{
        if (rc == -ENOENT && p->req->kind == CHP_RS_CHUNK_PUT && ++p->tries < 4) {
                chunk_create(p, 0); /* GC removed it meanwhile: store it again */
                return;
        }
        finish(p, rc);
}

static void chunk_refer_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        if (rc == 0) {
                q->u.chunk.extended = true;
                finish(p, 0);
                return;
        }
        if (rc != -ECANCELED) {
                chunk_noextend_done(p, rc);
                return;
        }
        /* the lease is already at least L: only name the referrer */
        oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
        rop_write(p, NS_C, oid);
        rados_write_op_assert_exists(p->op.w);
        ref_set(q, p->op.w);
        rop_go(p, chunk_noextend_done);
}

static void chunk_refer(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc) {
                finish(p, rc);
                return;
        }
        char oid[OID_MAX], l[HEX16];
        oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
        hex16(q->u.chunk.lease, l);
        rop_write(p, NS_C, oid);
        rados_write_op_assert_exists(p->op.w);
        ref_set(q, p->op.w);
        rados_write_op_cmpxattr(p->op.w, "e", LIBRADOS_CMPXATTR_OP_GT, l, 16);
        rados_write_op_setxattr(p->op.w, "e", l, 16);
        rop_go(p, chunk_refer_done);
}

static void chunk_create_done(struct chp_rstate_priv *p, int rc)
{
        if (rc == 0) {
                p->req->u.chunk.created = p->req->u.chunk.extended = true;
                finish(p, 0);
        } else if (rc == -EEXIST) {
                chunk_refer(p, 0); /* another relay (or an earlier put) stored it */
        } else {
                finish(p, rc);
        }
}

static void chunk_create(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc) {
                finish(p, rc);
                return;
        }
        char oid[OID_MAX], l[HEX16], h[HEX16];
        oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
        hex16(q->u.chunk.lease, l);
        hex16(chp_xxh3(q->u.chunk.data, q->u.chunk.len), h);
        rop_write(p, NS_C, oid);
        rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(p->op.w, q->u.chunk.data, q->u.chunk.len);
        rados_write_op_setxattr(p->op.w, "h", h, 16);
        rados_write_op_setxattr(p->op.w, "e", l, 16);
        ref_set(q, p->op.w);
        rop_go(p, chunk_create_done);
}

/* Sets (or drops) the lease index key of lease + addr, then next. */
static void cexp_key(struct chp_rstate_priv *p, uint64_t lease, bool drop, step_fn next)
{
        const uint8_t *addr = p->req->u.chunk.addr;
        char oid[OID_MAX], key[HEX16 + 2 * CHP_HASH_BYTES];
        shard_oid("cexp", addr, oid);
        hex16(lease, key);
        chp_hex_encode(addr, CHP_HASH_BYTES, key + 16);
        index_key(p, oid, key, drop, next);
}

static void chunk_removed(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc == 0)
                q->u.chunk.removed = true;
        else if (rc != -ECANCELED && rc != -ENOENT) {
                finish(p, rc);
                return;
        }
        /* removed, extended past the key's lease (its new key exists) or gone: the key is stale */
        if (q->u.chunk.index_lease)
                cexp_key(p, q->u.chunk.index_lease, true, chunk_done);
        else
                finish(p, 0);
}

static void chunk_read_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        uint8_t h[CHP_HASH_BYTES];
        if (rc == 0 && (rc = p->op.stat_rv < 0 ? p->op.stat_rv : p->op.read_rv) == 0) {
                if (p->op.size > q->u.chunk.cap)
                        rc = -EMSGSIZE;
                else if ((rc = chp_sha256(q->u.chunk.buf, p->op.got, h)) == 0 &&
                         memcmp(h, q->u.chunk.addr, CHP_HASH_BYTES) != 0)
                        rc = CHP_ECORRUPT;
                else
                        q->u.chunk.got = (uint32_t)p->op.got;
        }
        finish(p, rc);
}

static void chunk_stat_done(struct chp_rstate_priv *p, int rc)
{
        if (rc == 0 && (rc = p->op.stat_rv) == 0)
                p->req->u.chunk.got = p->op.size > UINT32_MAX ? UINT32_MAX : (uint32_t)p->op.size;
        finish(p, rc);
}

/* CHUNK_READ_XXH3: the bytes against the put's XXH3 (xattr h), or their address without one. */
static void chunk_read_h_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        const char *name, *val;
        size_t len;
        uint64_t h = 0;
        bool has_h = false;
        if (p->op.xit) {
                while (rc == 0 && p->op.xattrs_rv >= 0 &&
                       rados_getxattrs_next(p->op.xit, &name, &val, &len) == 0 && name)
                        if (!strcmp(name, "h"))
                                has_h = unhex16((const uint8_t *)val, len, &h);
                rados_getxattrs_end(p->op.xit);
                p->op.xit = NULL;
        }
        if (rc == 0 && (rc = p->op.stat_rv < 0 ? p->op.stat_rv : p->op.read_rv) == 0 &&
            p->op.size > q->u.chunk.cap)
                rc = -EMSGSIZE;
        if (rc == 0 && has_h) {
                if (chp_xxh3(q->u.chunk.buf, p->op.got) != h)
                        rc = CHP_ECORRUPT;
                else
                        q->u.chunk.got = (uint32_t)p->op.got;
                finish(p, rc);
                return;
        }
        chunk_read_done(p, rc);
}

static int chunk_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], l[HEX16];
        uint8_t h[CHP_HASH_BYTES];
        q->u.chunk.created = q->u.chunk.extended = q->u.chunk.removed = false;
        q->u.chunk.got = 0;
        switch (q->kind) {
        case CHP_RS_CHUNK_PUT:
                if (!q->u.chunk.data || q->u.chunk.len == 0 || q->u.chunk.len > CHP_CHUNK_MAX)
                        return -EINVAL;
                if (!q->u.chunk.verified && (chp_sha256(q->u.chunk.data, q->u.chunk.len, h) ||
                                             memcmp(h, q->u.chunk.addr, CHP_HASH_BYTES)))
                        return CHP_EMISMATCH;
                /* fall through */
        case CHP_RS_CHUNK_REFER:
                if (q->u.chunk.ref.kind != 'f' && q->u.chunk.ref.kind != 'u')
                        return -EINVAL;
                cexp_key(p, q->u.chunk.lease, false,
                         q->kind == CHP_RS_CHUNK_PUT ? chunk_create : chunk_refer);
                return 0;
        case CHP_RS_CHUNK_REMOVE:
                oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
                hex16(q->u.chunk.now > q->u.chunk.grace ? q->u.chunk.now - q->u.chunk.grace : 0, l);
                rop_write(p, NS_C, oid);
                rados_write_op_cmpxattr(p->op.w, "e", LIBRADOS_CMPXATTR_OP_GT, l, 16);
                rados_write_op_remove(p->op.w);
                rop_go(p, chunk_removed);
                return 0;
        case CHP_RS_CHUNK_READ:
                if (!q->u.chunk.buf)
                        return -EINVAL;
                oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
                rop_read(p, NS_C, oid);
                p->op.read_rv = p->op.stat_rv = 0;
                rados_read_op_stat(p->op.r, &p->op.size, &p->op.mtime, &p->op.stat_rv);
                rados_read_op_read(p->op.r, 0, q->u.chunk.cap, q->u.chunk.buf, &p->op.got,
                                   &p->op.read_rv);
                rop_go(p, chunk_read_done);
                return 0;
        case CHP_RS_CHUNK_STAT:
                oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
                rop_read(p, NS_C, oid);
                p->op.stat_rv = 0;
                rados_read_op_stat(p->op.r, &p->op.size, &p->op.mtime, &p->op.stat_rv);
                rop_go(p, chunk_stat_done);
                return 0;
        case CHP_RS_CHUNK_READ_XXH3:
                if (!q->u.chunk.buf)
                        return -EINVAL;
                oid_hex(q->u.chunk.addr, CHP_HASH_BYTES, oid);
                rop_read(p, NS_C, oid);
                p->op.read_rv = p->op.stat_rv = p->op.xattrs_rv = 0;
                rados_read_op_stat(p->op.r, &p->op.size, &p->op.mtime, &p->op.stat_rv);
                rados_read_op_getxattrs(p->op.r, &p->op.xit, &p->op.xattrs_rv);
                rados_read_op_read(p->op.r, 0, q->u.chunk.cap, q->u.chunk.buf, &p->op.got,
                                   &p->op.read_rv);
                rop_go(p, chunk_read_h_done);
                return 0;
        default:
                return -EINVAL;
        }
}

rados_ioctx_t rs_io(struct chp_rstate *st, int ns)
{
        return st->io[ns];
}

/* ---- the handle and submission ------------------------------------------------------------ */

int rs_submit(struct chp_rstate *st, struct chp_rstate_req *req, unsigned flags)
{
        if (!st || !req || !req->done)
                return -EINVAL;
        struct chp_rstate_priv *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->st = st;
        p->req = req;
        p->flags = flags;
        req->priv = p;
        pthread_mutex_lock(&st->mu);
        st->active++;
        pthread_mutex_unlock(&st->mu);
        bool chunk = req->kind <= CHP_RS_CHUNK_READ || req->kind == CHP_RS_CHUNK_STAT ||
                     req->kind == CHP_RS_CHUNK_READ_XXH3; /* the kinds added at the end */
        int rc = chunk                            ? chunk_start(p)
                 : req->kind <= CHP_RS_INDEX_PAGE ? file_start(p)
                                                  : flows_start(p);
        if (rc) {
                /* nothing was started */
                req->priv = NULL;
                priv_free(p);
                pthread_mutex_lock(&st->mu);
                if (--st->active == 0)
                        pthread_cond_broadcast(&st->cv);
                pthread_mutex_unlock(&st->mu);
        }
        return rc;
}

int chp_rstate_submit(struct chp_rstate *st, struct chp_rstate_req *req)
{
        return rs_submit(st, req, 0);
}

struct waiter {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool done;
        int rc;
};

static void run_done(struct chp_rstate_req *req, int rc)
{
        struct waiter *w = req->arg;
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        w->done = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
}

int chp_rstate_run(struct chp_rstate *st, struct chp_rstate_req *req)
{
        struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        req->done = run_done;
        req->arg = &w;
        int rc = chp_rstate_submit(st, req);
        if (rc)
                return rc;
        pthread_mutex_lock(&w.mu);
        while (!w.done)
                pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        return w.rc;
}

int chp_rstate_open(const struct chp_rstate_opts *o, struct chp_rstate **out)
{
        *out = NULL;
        if (!o || !o->pool || !*o->pool || (!o->cluster && (!o->conf || !*o->conf)))
                return -EINVAL;
        struct chp_rstate *st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        pthread_mutex_init(&st->mu, NULL);
        pthread_cond_init(&st->cv, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&st->tcv, &ca);
        pthread_condattr_destroy(&ca);
        st->inflight_max = o->inflight ? o->inflight : 64;
        int rc = 0;
        if (o->cluster) {
                st->cluster = o->cluster;
        } else {
                char t[16];
                snprintf(t, sizeof(t), "%u", o->op_timeout ? o->op_timeout : 30);
                if ((rc = rados_create(&st->cluster, o->user && *o->user ? o->user : NULL)) < 0)
                        goto out;
                st->own_cluster = true;
                if ((rc = rados_conf_read_file(st->cluster, o->conf)) < 0 ||
                    (rc = rados_conf_set(st->cluster, "rados_osd_op_timeout", t)) < 0 ||
                    (rc = rados_conf_set(st->cluster, "rados_mon_op_timeout", t)) < 0 ||
                    (rc = rados_connect(st->cluster)) < 0)
                        goto out;
        }
        for (int i = 0; i < NS_N; i++) {
                if ((rc = rados_ioctx_create(st->cluster, o->pool, &st->io[i])) < 0) {
                        st->io[i] = NULL;
                        goto out;
                }
                rados_ioctx_set_namespace(st->io[i], ns_names[i]);
        }
        if ((rc = -pthread_create(&st->timer, NULL, timer_main, st)))
                goto out;
        st->timer_started = true;
        *out = st;
        return 0;
out:
        chp_log_error("store", "rados: the shared state on pool %s: %s", o->pool,
                      chp_strerror(rs_unavailable(rc)));
        chp_rstate_close(st);
        return rs_unavailable(rc);
}

void chp_rstate_close(struct chp_rstate *st)
{
        if (!st)
                return;
        pthread_mutex_lock(&st->mu);
        while (st->active)
                pthread_cond_wait(&st->cv, &st->mu);
        st->stopping = true;
        pthread_cond_signal(&st->tcv);
        pthread_mutex_unlock(&st->mu);
        if (st->timer_started)
                pthread_join(st->timer, NULL);
        for (int i = 0; i < NS_N; i++)
                if (st->io[i])
                        rados_ioctx_destroy(st->io[i]);
        if (st->own_cluster)
                rados_shutdown(st->cluster);
        pthread_cond_destroy(&st->tcv);
        pthread_cond_destroy(&st->cv);
        pthread_mutex_destroy(&st->mu);
        free(st);
}
