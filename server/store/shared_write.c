/* shared_write.c — chp_store_submit's requests over the shared state (shared_int.h): each store
 * request as the chp_rstate requests of docs/scale-out.md's table, chained from their done
 * callbacks (librados' threads and the rstate timer's: nothing here blocks).
 *
 *   PUT            [UPLOAD_GET] CHUNK_PUT | CHUNK_REFER  [UPLOAD_PUT_CHUNK]  [TUS_ABSORB]
 *   COMMIT         [UPLOAD_GET] COMMIT
 *   UPLOAD_CREATE  FILE_GET  PENDING_TAKE ( UPLOAD_GET | PENDING_SWAP )*  [UPLOAD_CREATE]
 *                  (CHUNK_REFER UPLOAD_PUT_CHUNK)* ATTACH_WINDOW at a time
 *                  (tus: UPLOAD_GET UPLOAD_CREATE, or USAGE_ADD UPLOAD_REPLACE: a length known)
 *   UPLOAD_DELETE  UPLOAD_GET [PENDING_DROP] UPLOAD_REMOVE USAGE_ADD
 *   FILE_DELETE    FILE_DELETE
 *   TAIL_APPEND    UPLOAD_GET TUS_APPEND
 *   QUARANTINE     FILE_QUARANTINE PENDING_GET [the upload delete of its owner] | FILE_LIFT
 *
 * Expiries: the store's 0 ("never") is CHP_RSTATE_NEVER in the pool (a file's e, a chunk's
 * lease, an upload record's expires, which is its e), since the pool's guards compare numbers.
 *
 * Order: the LMDB writer applies requests in the order they came; the faces rely on it for a
 * tus upload, whose chunk puts (which absorb the kept tail) and tail appends follow each other
 * without waiting. Here those kinds (a tus UPLOAD_CREATE, a PUT with clear_tail, a TAIL_APPEND)
 * of one upload run one after the other, in submission order (sh->tus_head); everything else
 * runs at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "manifest.h"
#include "shared_int.h"

#define ATTACH_WINDOW 16 /* an upload create's chunk attaches in flight */
#define TRIES         8  /* retries of a guarded step another relay moved meanwhile */

/* One chunk attach of an upload create: CHUNK_REFER, then UPLOAD_PUT_CHUNK. */
struct kid {
        struct shared_wop *w;
        uint32_t index;
        struct chp_rstate_req r;
};

struct shared_wop {
        struct store_shared *sh;
        struct chp_store_req *req;
        struct chp_rstate_req r; /* the step in flight */
        void (*step)(struct shared_wop *w, int rc);
        uint32_t tries;
        int saved_rc; /* a failure kept while a step undoes what came before */
        uint64_t now;
        /* an upload's record (UPLOAD_GET's, taken over), parsed */
        uint8_t *rec;
        size_t rec_len;
        struct chp_rec_upload up;
        bool up_complete;
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES]; /* the upload being worked on */
        uint64_t lease;                         /* its expiry, as the pool's */
        /* UPLOAD_CREATE: the new record, the manifest (the request's), its file id */
        uint8_t *newrec;
        size_t newrec_len;
        struct chp_manifest m;
        uint8_t file_id[CHP_HASH_BYTES];
        /* COMMIT of an upload's own manifest: copies from its record */
        char tenant[CHP_TENANT_MAX + 1];
        /* tus order */
        struct shared_wop *tnext;
        bool in_tus;
        /* attaches */
        pthread_mutex_t mu;
        bool mu_init;
        uint32_t a_next, a_running;
        int a_err;
        struct kid kids[ATTACH_WINDOW];
};

typedef void (*wstep)(struct shared_wop *w, int rc);

static uint64_t pool_expiry(uint64_t e)
{
        return e ? e : CHP_RSTATE_NEVER;
}

static bool tus_ordered(const struct chp_store_req *req)
{
        switch (req->type) {
        case CHP_REQ_TAIL_APPEND:
                return true;
        case CHP_REQ_PUT:
                return req->u.put.has_upload && req->u.put.clear_tail;
        case CHP_REQ_UPLOAD_CREATE: /* a tus record, or its re-creation with a known length */
                return req->u.upload_create.upload && !req->u.upload_create.manifest;
        default:
                return false;
        }
}

static const uint8_t *tus_id(const struct chp_store_req *req)
{
        switch (req->type) {
        case CHP_REQ_TAIL_APPEND:
                return req->u.tail_append.upload_id;
        case CHP_REQ_UPLOAD_CREATE:
                return req->u.upload_create.upload->id;
        default:
                return req->u.put.upload_id;
        }
}

static void wop_free(struct shared_wop *w)
{
        if (!w)
                return;
        chp_rstate_req_release(&w->r);
        if (w->mu_init)
                pthread_mutex_destroy(&w->mu);
        free(w->rec);
        free(w->newrec);
        free(w);
}

/* Takes w out of the tus order; returns the next request of its upload, now free to start. */
static struct shared_wop *tus_leave(struct shared_wop *w)
{
        struct store_shared *sh = w->sh;
        struct shared_wop *next = NULL;
        if (!w->in_tus)
                return NULL;
        pthread_mutex_lock(&sh->lock);
        struct shared_wop **pp = &sh->tus_head;
        while (*pp != w)
                pp = &(*pp)->tnext;
        *pp = w->tnext;
        for (struct shared_wop *o = w->tnext; o; o = o->tnext)
                if (memcmp(tus_id(o->req), tus_id(w->req), CHP_UPLOAD_ID_BYTES) == 0) {
                        next = o;
                        break;
                }
        pthread_mutex_unlock(&sh->lock);
        w->in_tus = false;
        return next;
}

static int wop_start(struct shared_wop *w);
static void end(struct shared_wop *w, int rc);

/* Starts the request that waited for w's upload; a refusal now ends it. */
static void tus_next(struct shared_wop *next)
{
        if (!next)
                return;
        int rc = wop_start(next);
        if (rc)
                end(next, rc);
}

/* The request is over: its status, its done, and the next of its upload's tus order. */
static void end(struct shared_wop *w, int rc)
{
        struct store_shared *sh = w->sh;
        struct chp_store_req *req = w->req;
        struct shared_wop *next = tus_leave(w);
        wop_free(w);
        req->status = rc;
        if (req->done)
                req->done(req);
        shared_op_end(sh);
        tus_next(next);
}

static void rs_done(struct chp_rstate_req *r, int rc)
{
        struct shared_wop *w = r->arg;
        w->step(w, rc);
}

/* The next step: a fresh rstate request of kind in w->r. */
static struct chp_rstate_req *rq(struct shared_wop *w, enum chp_rstate_kind kind)
{
        chp_rstate_req_release(&w->r);
        memset(&w->r, 0, sizeof(w->r));
        w->r.kind = kind;
        return &w->r;
}

/* Submits w->r; its done continues in step. 0, or the submit's refusal (step never runs). */
static int go(struct shared_wop *w, wstep step)
{
        w->step = step;
        w->r.done = rs_done;
        w->r.arg = w;
        return chp_rstate_submit(w->sh->st, &w->r);
}

/* go() from a done callback: a refusal ends the request. */
static void go_or_end(struct shared_wop *w, wstep step)
{
        int rc = go(w, step);
        if (rc)
                end(w, rc);
}

/* UPLOAD_GET of id into w (rec, up, up_complete, lease, upload_id); then step. */
static int upload_get(struct shared_wop *w, const uint8_t id[CHP_UPLOAD_ID_BYTES], wstep step)
{
        memcpy(w->upload_id, id, CHP_UPLOAD_ID_BYTES);
        memcpy(rq(w, CHP_RS_UPLOAD_GET)->u.upload.id, id, CHP_UPLOAD_ID_BYTES);
        return go(w, step);
}

/* The lease of native upload id, kept (lease nonzero) or forgotten (0). */
static void lease_keep(struct store_shared *sh, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                       uint64_t lease)
{
        struct shared_lease *l = &sh->leases[id[0] % SHARED_LEASES];
        pthread_mutex_lock(&sh->lock);
        if (lease) {
                memcpy(l->id, id, CHP_UPLOAD_ID_BYTES);
                l->lease = lease;
        } else if (memcmp(l->id, id, CHP_UPLOAD_ID_BYTES) == 0) {
                l->lease = 0;
        }
        pthread_mutex_unlock(&sh->lock);
}

/* The kept lease of native upload id, or 0. */
static uint64_t lease_find(struct store_shared *sh, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        const struct shared_lease *l = &sh->leases[id[0] % SHARED_LEASES];
        pthread_mutex_lock(&sh->lock);
        uint64_t lease = memcmp(l->id, id, CHP_UPLOAD_ID_BYTES) == 0 ? l->lease : 0;
        pthread_mutex_unlock(&sh->lock);
        return lease;
}

/* UPLOAD_GET's result taken into w: 0, or a code. */
static int upload_take(struct shared_wop *w, int rc)
{
        if (rc)
                return rc;
        free(w->rec);
        w->rec = w->r.u.upload.got;
        w->rec_len = w->r.u.upload.got_len;
        w->r.u.upload.got = NULL;
        w->up_complete = w->r.u.upload.complete;
        if (chp_rec_upload_parse(w->rec, w->rec_len, &w->up) < 0)
                return CHP_ECORRUPT;
        w->lease = pool_expiry(w->up.expires);
        if ((w->up.flags & CHP_REC_UPLOAD_HAS_MANIFEST) && !w->up_complete &&
            (w->req->type == CHP_REQ_PUT || w->req->type == CHP_REQ_UPLOAD_CREATE))
                lease_keep(w->sh, w->upload_id, w->lease); /* its puts follow */
        return 0;
}

/* ---- PUT --------------------------------------------------------------------------------- */

static void put_absorb(struct shared_wop *w, uint64_t old);

/* The tus offset the chunk reaches: its index's start plus its length (a refer knows no
 * length: a whole chunk, or what is left of a declared size). */
static uint64_t put_reach(const struct shared_wop *w)
{
        const struct chp_store_req *req = w->req;
        uint64_t cs = w->up.chunk_size, start = (uint64_t)req->u.put.index * cs;
        uint64_t len = req->u.put.data ? req->u.put.len : cs;
        if (!req->u.put.data && w->up.declared != CHP_UPLOAD_SIZE_UNKNOWN)
                len = w->up.declared > start ? w->up.declared - start : 0;
        return start + (len < cs ? len : cs);
}

static void put_absorbed(struct shared_wop *w, int rc)
{
        uint64_t reach = put_reach(w);
        if (rc == -ESTALE && ++w->tries < TRIES) {
                uint64_t at = w->r.u.tus.offset; /* where the offset is now */
                if (at >= reach)
                        end(w, 0); /* a resend, or a later chunk's absorb: nothing is kept */
                else
                        put_absorb(w, at);
                return;
        }
        if (rc == -ENOENT && w->r.u.tus.old != 0 && ++w->tries < TRIES) {
                put_absorb(w, 0); /* no offset object yet: this chunk makes it */
                return;
        }
        end(w, rc == -ESTALE ? CHP_EUNAVAILABLE : rc);
}

/* The tus offset object's n moves from old to where this chunk ends, its tail bytes (inside
 * the chunk now) dropped. */
static void put_absorb(struct shared_wop *w, uint64_t old)
{
        uint64_t reach = put_reach(w);
        if (reach <= old || reach - old > CHP_CHUNK_MAX) {
                /* nothing to absorb; or the kept offset is behind by more than this chunk (an
                 * earlier chunk never came): it stays, and the client resends from there */
                end(w, 0);
                return;
        }
        struct chp_rstate_req *r = rq(w, CHP_RS_TUS_ABSORB);
        memcpy(r->u.tus.upload_id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        r->u.tus.old = old;
        r->u.tus.len = (uint32_t)(reach - old);
        go_or_end(w, put_absorbed);
}

static void put_listed(struct shared_wop *w, int rc)
{
        if (rc || !w->req->u.put.clear_tail || (w->up.flags & CHP_REC_UPLOAD_HAS_MANIFEST)) {
                end(w, rc);
                return;
        }
        /* first guess: the offset is at this chunk's start (no tail kept before it) */
        w->tries = 0;
        put_absorb(w, (uint64_t)w->req->u.put.index * w->up.chunk_size);
}

static void put_stored(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == -ENOENT && !req->u.put.data)
                rc = CHP_EMISSING; /* attaching a chunk that is not stored, as the local store */
        if (rc) {
                end(w, rc);
                return;
        }
        req->u.put.deduplicated = !req->u.put.data || !w->r.u.chunk.created;
        if (!req->u.put.has_upload) {
                end(w, 0);
                return;
        }
        struct chp_rstate_req *r = rq(w, CHP_RS_UPLOAD_PUT_CHUNK);
        memcpy(r->u.upload.id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        r->u.upload.index = req->u.put.index;
        memcpy(r->u.upload.addr, req->u.put.addr, CHP_HASH_BYTES);
        go_or_end(w, put_listed);
}

/* The chunk itself, naming ref with lease w->lease. */
static int put_chunk(struct shared_wop *w, char kind, const uint8_t *id, size_t idlen)
{
        struct chp_store_req *req = w->req;
        struct chp_rstate_req *r = rq(w, req->u.put.data ? CHP_RS_CHUNK_PUT : CHP_RS_CHUNK_REFER);
        memcpy(r->u.chunk.addr, req->u.put.addr, CHP_HASH_BYTES);
        r->u.chunk.data = req->u.put.data;
        r->u.chunk.len = req->u.put.len;
        r->u.chunk.verified = true; /* chp_store_submit hashed it, or its caller did */
        r->u.chunk.ref.kind = kind;
        memcpy(r->u.chunk.ref.id, id, idlen);
        r->u.chunk.lease = w->lease;
        return go(w, put_stored);
}

static void put_upload_got(struct shared_wop *w, int rc)
{
        if ((rc = upload_take(w, rc)) ||
            (rc = put_chunk(w, 'u', w->upload_id, CHP_UPLOAD_ID_BYTES)))
                end(w, rc);
}

/* A chunk put without an upload (a tus body stored before its checksum is known, a federation
 * fetch before its commit) must name a referrer, or the audit would lower its lease at once:
 * it names the file key of id 0 (no manifest hashes to it), whose key is pending and so
 * counted live by the audit until its lease passes — now + orphan_grace, the store's promise
 * to a chunk put and not yet attached. A later put extends it; an attach or commit names its
 * own referrer with its own lease. */
static int put_start(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        req->u.put.deduplicated = false;
        if (req->u.put.has_upload && !req->u.put.clear_tail &&
            (w->lease = lease_find(w->sh, req->u.put.upload_id))) {
                /* a native upload's, known: UPLOAD_PUT_CHUNK's guard finds it gone or done */
                memcpy(w->upload_id, req->u.put.upload_id, CHP_UPLOAD_ID_BYTES);
                w->up.flags = CHP_REC_UPLOAD_HAS_MANIFEST;
                return put_chunk(w, 'u', w->upload_id, CHP_UPLOAD_ID_BYTES);
        }
        if (req->u.put.has_upload)
                return upload_get(w, req->u.put.upload_id, put_upload_got);
        static const uint8_t none[CHP_HASH_BYTES];
        uint64_t grace = w->sh->s->opts.orphan_grace;
        w->lease = grace > CHP_RSTATE_NEVER - 1 - w->now ? CHP_RSTATE_NEVER : w->now + grace;
        return put_chunk(w, 'f', none, CHP_HASH_BYTES);
}

/* ---- COMMIT ------------------------------------------------------------------------------ */

static void commit_done(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == 0) {
                memcpy(req->u.commit.file_id, w->r.u.commit.file_id, CHP_HASH_BYTES);
                req->u.commit.existed = w->r.u.commit.existed;
        }
        end(w, rc);
}

/* The rstate COMMIT; with the upload's record in w (has_upload and found), its metadata and
 * declared size go with it, and without a manifest in the request, its manifest, tenant and file
 * expiry. */
static int commit_go(struct shared_wop *w, bool have_upload)
{
        struct chp_store_req *req = w->req;
        struct chp_rstate_req *r = rq(w, CHP_RS_COMMIT);
        r->u.commit.manifest = req->u.commit.manifest;
        r->u.commit.manifest_len = req->u.commit.manifest_len;
        r->u.commit.tenant = req->u.commit.tenant ? req->u.commit.tenant : "";
        r->u.commit.expires = pool_expiry(req->u.commit.expires);
        r->u.commit.created = w->now;
        r->u.commit.has_upload = req->u.commit.has_upload;
        r->u.commit.keep_upload = req->u.commit.keep_upload;
        r->u.commit.keep_expires = req->u.commit.keep_expires == UINT64_MAX
                                       ? CHP_RSTATE_NEVER
                                       : req->u.commit.keep_expires;
        memcpy(r->u.commit.upload_id, req->u.commit.upload_id, CHP_UPLOAD_ID_BYTES);
        if (have_upload) {
                r->u.commit.meta = w->up.meta_len ? w->up.meta : NULL;
                r->u.commit.meta_len = w->up.meta_len;
                r->u.commit.declared = w->up.declared;
        }
        if (!req->u.commit.manifest) {
                if (!have_upload || !(w->up.flags & CHP_REC_UPLOAD_HAS_MANIFEST))
                        return have_upload ? -EINVAL : -ENOENT;
                memcpy(w->tenant, w->up.tenant, w->up.tenant_len);
                w->tenant[w->up.tenant_len] = '\0';
                r->u.commit.manifest = w->up.manifest;
                r->u.commit.manifest_len = w->up.manifest_len;
                r->u.commit.tenant = w->tenant;
                r->u.commit.expires = pool_expiry(w->up.file_expires);
                r->u.commit.keep_upload = false; /* as the local store: the upload goes */
        }
        return go(w, commit_done);
}

static void commit_upload_got(struct shared_wop *w, int rc)
{
        /* a manifest in the request commits also when the upload is gone (as the local store) */
        rc = upload_take(w, rc);
        if (rc == -ENOENT && w->req->u.commit.manifest)
                rc = commit_go(w, false);
        else if (rc == 0)
                rc = commit_go(w, true);
        if (rc)
                end(w, rc);
}

static int commit_start(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        req->u.commit.existed = false;
        if (req->u.commit.has_upload) {
                lease_keep(w->sh, req->u.commit.upload_id, 0); /* it ends here */
                return upload_get(w, req->u.commit.upload_id, commit_upload_got);
        }
        if (!req->u.commit.manifest)
                return -EBADMSG;
        return commit_go(w, false);
}

/* ---- UPLOAD_DELETE (also a quarantine's drop of the upload writing its file) ------------- */

static void udel_counted(struct shared_wop *w, int rc)
{
        (void)rc; /* the record is gone; usage left high errs on refusing (the audit's) */
        end(w, 0);
}

static void udel_removed(struct shared_wop *w, int rc)
{
        lease_keep(w->sh, w->upload_id, 0);
        if (rc) {
                end(w, w->req->type == CHP_REQ_QUARANTINE && rc == -ENOENT ? 0 : rc);
                return;
        }
        if (w->up_complete) {
                end(w, 0); /* a complete upload counts as incomplete no more */
                return;
        }
        uint64_t known = w->up.declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : w->up.declared;
        memcpy(w->tenant, w->up.tenant, w->up.tenant_len);
        w->tenant[w->up.tenant_len] = '\0';
        struct chp_rstate_req *r = rq(w, CHP_RS_USAGE_ADD);
        r->u.usage.tenant = w->tenant;
        r->u.usage.d.incomplete = -1;
        r->u.usage.d.incomplete_bytes = -(int64_t)known;
        go_or_end(w, udel_counted);
}

static void udel_dropped(struct shared_wop *w, int rc)
{
        if (rc) {
                end(w, rc);
                return;
        }
        memcpy(rq(w, CHP_RS_UPLOAD_REMOVE)->u.upload.id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        go_or_end(w, udel_removed);
}

static void udel_got(struct shared_wop *w, int rc)
{
        if ((rc = upload_take(w, rc))) {
                end(w, w->req->type == CHP_REQ_QUARANTINE && rc == -ENOENT ? 0 : rc);
                return;
        }
        if (!(w->up.flags & CHP_REC_UPLOAD_HAS_MANIFEST) || !w->up.file_id) {
                udel_dropped(w, 0);
                return;
        }
        struct chp_rstate_req *r = rq(w, CHP_RS_PENDING_DROP);
        memcpy(r->u.pending.file_id, w->up.file_id, CHP_HASH_BYTES);
        memcpy(r->u.pending.upload_id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        go_or_end(w, udel_dropped);
}

/* ---- QUARANTINE and FILE_DELETE ---------------------------------------------------------- */

static void quar_pending(struct shared_wop *w, int rc)
{
        if (rc) {
                end(w, rc == -ENOENT ? 0 : rc); /* no upload writes it */
                return;
        }
        uint8_t owner[CHP_UPLOAD_ID_BYTES];
        memcpy(owner, w->r.u.pending.owner, CHP_UPLOAD_ID_BYTES);
        if ((rc = upload_get(w, owner, udel_got)))
                end(w, rc);
}

static void quar_done(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc || req->u.quarantine.lift) {
                end(w, rc);
                return;
        }
        req->u.quarantine.deleted = w->r.u.file.existed;
        /* an upload writing it now would only be refused at its commit: drop it at once */
        memcpy(rq(w, CHP_RS_PENDING_GET)->u.pending.file_id, req->u.quarantine.file_id,
               CHP_HASH_BYTES);
        go_or_end(w, quar_pending);
}

static void fdel_done(struct shared_wop *w, int rc)
{
        end(w, rc == CHP_EQUARANTINED ? -ENOENT : rc); /* a tombstone is no file to delete */
}

/* ---- UPLOAD_CREATE ----------------------------------------------------------------------- */

static void attach_file_got(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == 0) {
                req->u.upload_create.complete = true;
                req->u.upload_create.resumed = false;
                end(w, 0);
                return;
        }
        /* deleted or expired meanwhile: the client opens again (and gets a new upload) */
        end(w, rc == -ENOENT ? CHP_EUNAVAILABLE : rc);
}

static void attach_over(struct shared_wop *w)
{
        if (w->a_err == -ENOENT) {
                /* the upload ended while its stored chunks were attached: its file committed by
                 * another client of the same manifest (on any relay), as the local store's one
                 * transaction would have answered "complete" */
                memcpy(rq(w, CHP_RS_FILE_GET)->u.file.id, w->file_id, CHP_HASH_BYTES);
                go_or_end(w, attach_file_got);
                return;
        }
        end(w, w->a_err);
}

static bool attach_next(struct shared_wop *w, struct kid *k);

static void kid_listed(struct chp_rstate_req *r, int rc)
{
        struct kid *k = r->arg;
        struct shared_wop *w = k->w;
        if (rc) {
                pthread_mutex_lock(&w->mu);
                if (!w->a_err)
                        w->a_err = rc;
                pthread_mutex_unlock(&w->mu);
        }
        if (attach_next(w, k))
                attach_over(w);
}

static void kid_referred(struct chp_rstate_req *r, int rc)
{
        struct kid *k = r->arg;
        struct shared_wop *w = k->w;
        if (rc == 0) {
                uint8_t addr[CHP_HASH_BYTES];
                memcpy(addr, r->u.chunk.addr, CHP_HASH_BYTES);
                memset(r, 0, sizeof(*r));
                r->kind = CHP_RS_UPLOAD_PUT_CHUNK;
                memcpy(r->u.upload.id, w->upload_id, CHP_UPLOAD_ID_BYTES);
                r->u.upload.index = k->index;
                memcpy(r->u.upload.addr, addr, CHP_HASH_BYTES);
                r->done = kid_listed;
                r->arg = k;
                if ((rc = chp_rstate_submit(w->sh->st, r)) == 0)
                        return;
        }
        kid_listed(r, rc == -ENOENT ? 0 : rc); /* not stored: the client sends it */
}

/* Gives k the next chunk of the manifest; true when k was the last one running and nothing is
 * left (the caller then ends the request). */
static bool attach_next(struct shared_wop *w, struct kid *k)
{
        for (;;) {
                pthread_mutex_lock(&w->mu);
                if (w->a_err || w->a_next >= w->m.chunk_count) {
                        bool last = --w->a_running == 0;
                        pthread_mutex_unlock(&w->mu);
                        return last;
                }
                uint32_t i = w->a_next++;
                pthread_mutex_unlock(&w->mu);
                struct chp_rstate_req *r = &k->r;
                memset(r, 0, sizeof(*r));
                r->kind = CHP_RS_CHUNK_REFER;
                memcpy(r->u.chunk.addr, w->m.addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES);
                r->u.chunk.ref.kind = 'u';
                memcpy(r->u.chunk.ref.id, w->upload_id, CHP_UPLOAD_ID_BYTES);
                r->u.chunk.lease = w->lease;
                r->done = kid_referred;
                r->arg = k;
                k->w = w;
                k->index = i;
                int rc = chp_rstate_submit(w->sh->st, r);
                if (rc == 0)
                        return false;
                pthread_mutex_lock(&w->mu);
                if (!w->a_err)
                        w->a_err = rc;
                pthread_mutex_unlock(&w->mu);
        }
}

/* Every chunk of the manifest that the pool holds is attached to w->upload_id (lease w->lease),
 * ATTACH_WINDOW at a time; then the request ends. */
static void attach(struct shared_wop *w)
{
        uint32_t n = w->m.chunk_count < ATTACH_WINDOW ? w->m.chunk_count : ATTACH_WINDOW;
        if (n == 0) {
                end(w, 0);
                return;
        }
        pthread_mutex_init(&w->mu, NULL);
        w->mu_init = true;
        w->a_running = n;
        bool last = false;
        for (uint32_t i = 0; i < n; i++)
                last = attach_next(w, &w->kids[i]) || last;
        if (last)
                attach_over(w);
}

static void create_released(struct shared_wop *w, int rc)
{
        (void)rc; /* a pending key left behind is swapped away as a dead owner's */
        end(w, w->saved_rc);
}

static void create_made(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == CHP_EQUOTA)
                req->u.upload_create.quota_hit = w->r.u.upload.quota_hit;
        if (rc && req->u.upload_create.manifest) {
                /* the pending key names an upload that will not be: give it back */
                w->saved_rc = rc;
                struct chp_rstate_req *r = rq(w, CHP_RS_PENDING_DROP);
                memcpy(r->u.pending.file_id, w->file_id, CHP_HASH_BYTES);
                memcpy(r->u.pending.upload_id, w->upload_id, CHP_UPLOAD_ID_BYTES);
                go_or_end(w, create_released);
                return;
        }
        if (rc || !req->u.upload_create.manifest) {
                end(w, rc);
                return;
        }
        lease_keep(w->sh, w->upload_id, w->lease);
        attach(w);
}

/* The new upload's record (w->newrec) is created, with the quota. */
static int create_new(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        const struct chp_upload *u = req->u.upload_create.upload;
        struct chp_rstate_req *r = rq(w, CHP_RS_UPLOAD_CREATE);
        memcpy(w->upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        memcpy(r->u.upload.id, u->id, CHP_UPLOAD_ID_BYTES);
        r->u.upload.rec = w->newrec;
        r->u.upload.rec_len = w->newrec_len;
        r->u.upload.quota = req->u.upload_create.quota;
        w->lease = pool_expiry(u->expires);
        return go(w, create_made);
}

static void create_pending(struct shared_wop *w, int rc);
static int pending_take(struct shared_wop *w);

/* Whether the request's upload u may resume the recorded upload r (store.h's subject rule). */
static bool resume_allowed(const struct chp_rec_upload *r, const struct chp_upload *u)
{
        size_t tlen = strnlen(u->tenant, CHP_TENANT_MAX), slen = strlen(u->subject);
        if (r->subject_len == 0 || slen == 0)
                return true;
        return r->tenant_len == tlen && r->subject_len == slen &&
               memcmp(r->tenant, u->tenant, tlen) == 0 && memcmp(r->subject, u->subject, slen) == 0;
}

static void create_swapped(struct shared_wop *w, int rc)
{
        if (rc == 0) {
                rc = create_new(w); /* the dead owner's key is ours now */
        } else if (rc == -EEXIST && ++w->tries < TRIES) {
                create_pending(w, rc); /* another relay swapped first: its upload, then */
                return;
        } else if (rc == -ENOENT && ++w->tries < TRIES) {
                rc = pending_take(w); /* dropped meanwhile: take it */
        }
        if (rc)
                end(w, rc);
}

static void create_owner_got(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        uint8_t owner[CHP_UPLOAD_ID_BYTES];
        memcpy(owner, w->upload_id, CHP_UPLOAD_ID_BYTES);
        rc = upload_take(w, rc);
        if (rc == 0 && !w->up_complete) {
                if (!resume_allowed(&w->up, req->u.upload_create.upload)) {
                        end(w, CHP_ETOKEN_SUBJECT); /* nothing was changed */
                        return;
                }
                req->u.upload_create.resumed = true;
                memcpy(req->u.upload_create.upload_id, owner, CHP_UPLOAD_ID_BYTES);
                attach(w); /* w->upload_id and w->lease are the owner's */
                return;
        }
        if (rc && rc != -ENOENT) {
                end(w, rc);
                return;
        }
        /* the owner is gone (or finished): its key is taken over */
        struct chp_rstate_req *r = rq(w, CHP_RS_PENDING_SWAP);
        memcpy(r->u.pending.file_id, w->file_id, CHP_HASH_BYTES);
        memcpy(r->u.pending.upload_id, req->u.upload_create.upload->id, CHP_UPLOAD_ID_BYTES);
        memcpy(r->u.pending.dead, owner, CHP_UPLOAD_ID_BYTES);
        go_or_end(w, create_swapped);
}

/* PENDING_TAKE's (or SWAP's) result: ours, or another upload's (its owner in w->r). */
static void create_pending(struct shared_wop *w, int rc)
{
        if (rc == 0) {
                if ((rc = create_new(w)))
                        end(w, rc);
                return;
        }
        if (rc != -EEXIST) {
                end(w, rc);
                return;
        }
        uint8_t owner[CHP_UPLOAD_ID_BYTES];
        memcpy(owner, w->r.u.pending.owner, CHP_UPLOAD_ID_BYTES);
        if ((rc = upload_get(w, owner, create_owner_got)))
                end(w, rc);
}

static int pending_take(struct shared_wop *w)
{
        struct chp_rstate_req *r = rq(w, CHP_RS_PENDING_TAKE);
        memcpy(r->u.pending.file_id, w->file_id, CHP_HASH_BYTES);
        memcpy(r->u.pending.upload_id, w->req->u.upload_create.upload->id, CHP_UPLOAD_ID_BYTES);
        return go(w, create_pending);
}

static void create_file_got(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == 0) {
                req->u.upload_create.complete = true;
                end(w, 0);
                return;
        }
        if (rc != -ENOENT || (rc = pending_take(w)))
                end(w, rc); /* CHP_EQUARANTINED among them */
}

static void recreate_counted(struct shared_wop *w, int rc)
{
        struct chp_store_req *req = w->req;
        if (rc == CHP_EQUOTA)
                req->u.upload_create.quota_hit = w->r.u.usage.quota_hit;
        if (rc) {
                end(w, rc);
                return;
        }
        /* a record that went meanwhile leaves usage high: the audit's, erring on refusing */
        struct chp_rstate_req *r = rq(w, CHP_RS_UPLOAD_REPLACE);
        memcpy(r->u.upload.id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        r->u.upload.rec = w->newrec;
        r->u.upload.rec_len = w->newrec_len;
        go_or_end(w, end);
}

/* A tus upload re-created under its id (its deferred length became known): not new, but the
 * bytes the length adds count against the tenant's limits as a new upload's do (store.h); its
 * chunks and kept tail stay. */
static int recreate(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        const struct chp_upload *u = req->u.upload_create.upload;
        size_t tlen = strlen(u->tenant);
        if ((w->up.flags & CHP_REC_UPLOAD_HAS_MANIFEST) || w->up_complete)
                return -EEXIST; /* native upload ids are never reused; nor a finished one */
        if (w->up.tenant_len != tlen || memcmp(w->up.tenant, u->tenant, tlen) != 0)
                return -EINVAL;
        const struct chp_store_quota *quota = req->u.upload_create.quota;
        uint64_t known = u->declared_size == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : u->declared_size;
        uint64_t old = w->up.declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : w->up.declared;
        uint64_t day = (quota ? quota->now : u->created ? u->created : w->now) / 86400;
        uint64_t added = known > old ? known - old : 0;
        memcpy(w->tenant, u->tenant, tlen);
        w->tenant[tlen] = '\0';
        struct chp_rstate_req *r = rq(w, CHP_RS_USAGE_ADD);
        r->u.usage.tenant = w->tenant;
        r->u.usage.d.incomplete_bytes = (int64_t)known - (int64_t)old;
        r->u.usage.d.day = day;
        r->u.usage.d.day_bytes = added;
        if (quota && added) {
                r->u.usage.quota = quota;
                r->u.usage.declared = added;
        }
        return go(w, recreate_counted);
}

static void create_tus_looked(struct shared_wop *w, int rc)
{
        if ((rc = upload_take(w, rc)) == 0)
                rc = recreate(w);
        else if (rc == -ENOENT)
                rc = create_new(w);
        if (rc)
                end(w, rc);
}

/* The record of the new upload, as apply.c writes it; its expires is the pool's. */
static int create_record(struct shared_wop *w, const uint8_t *enc, size_t enc_len)
{
        const struct chp_upload *u = w->req->u.upload_create.upload;
        size_t tlen = strlen(u->tenant), slen = strlen(u->subject);
        w->newrec_len = CHP_REC_UPLOAD_BYTES + tlen + slen + u->meta_len + enc_len;
        if (!(w->newrec = malloc(w->newrec_len)))
                return -ENOMEM;
        struct chp_rec_upload r = {
            .flags = enc ? CHP_REC_UPLOAD_HAS_MANIFEST : 0,
            .chunk_size = u->chunk_size,
            .meta_len = u->meta_len,
            .manifest_len = (uint32_t)enc_len,
            .declared = enc ? w->m.total_size : u->declared_size,
            .created = u->created ? u->created : w->now,
            .expires = pool_expiry(u->expires),
            .file_expires = u->file_expires,
            .tenant_len = tlen,
            .subject_len = slen,
            .file_id = enc ? w->file_id : NULL,
        };
        chp_rec_upload_encode(w->newrec, &r);
        uint8_t *q = w->newrec + CHP_REC_UPLOAD_BYTES;
        memcpy(q, u->tenant, tlen);
        memcpy(q += tlen, u->subject, slen);
        memcpy(q += slen, u->meta, u->meta_len);
        if (enc_len)
                memcpy(q + u->meta_len, enc, enc_len);
        return 0;
}

static int create_start(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        const struct chp_upload *u = req->u.upload_create.upload;
        if (!u)
                return -EINVAL;
        const uint8_t *enc = req->u.upload_create.manifest;
        size_t enc_len = enc ? req->u.upload_create.manifest_len : 0;
        if (strnlen(u->tenant, CHP_TENANT_MAX + 1) > CHP_TENANT_MAX ||
            strnlen(u->subject, CHP_TOKEN_SUBJECT_MAX + 1) > CHP_TOKEN_SUBJECT_MAX ||
            u->meta_len > CHP_UPLOAD_META_MAX || u->chunk_size < CHP_CHUNK_MIN ||
            u->chunk_size > CHP_CHUNK_MAX || (u->chunk_size & (u->chunk_size - 1)))
                return -EINVAL;
        memcpy(req->u.upload_create.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        req->u.upload_create.quota_hit = CHP_QUOTA_NONE;
        req->u.upload_create.complete = req->u.upload_create.resumed = false;
        int rc;
        if (enc) {
                if (chp_manifest_decode(enc, enc_len, &w->m) < 0 ||
                    w->m.chunk_size != u->chunk_size)
                        return -EBADMSG;
                if ((rc = chp_manifest_id(enc, enc_len, w->file_id)))
                        return rc;
                memcpy(req->u.upload_create.file_id, w->file_id, CHP_HASH_BYTES);
        }
        if ((rc = create_record(w, enc, enc_len)))
                return rc;
        if (!enc)
                return upload_get(w, u->id, create_tus_looked);
        memcpy(rq(w, CHP_RS_FILE_GET)->u.file.id, w->file_id, CHP_HASH_BYTES);
        return go(w, create_file_got);
}

/* ---- TAIL_APPEND ------------------------------------------------------------------------- */

static void tail_appended(struct shared_wop *w, int rc)
{
        if (rc == -ESTALE && w->req->u.tail_append.has_offset) {
                end(w, -ESTALE); /* the client's offset is not the upload's any more */
                return;
        }
        if (rc == -ESTALE && ++w->tries < TRIES) {
                /* the offset was elsewhere (it is in r now): append there, as the local store
                 * appends after the last piece; this upload's puts and appends are in order */
                uint64_t at = w->r.u.tus.offset;
                struct chp_rstate_req *r = rq(w, CHP_RS_TUS_APPEND);
                memcpy(r->u.tus.upload_id, w->upload_id, CHP_UPLOAD_ID_BYTES);
                r->u.tus.old = at;
                r->u.tus.data = w->req->u.tail_append.data;
                r->u.tus.len = w->req->u.tail_append.len;
                go_or_end(w, tail_appended);
                return;
        }
        end(w, rc == -ESTALE ? CHP_EUNAVAILABLE : rc);
}

static void tail_upload_got(struct shared_wop *w, int rc)
{
        if ((rc = upload_take(w, rc))) {
                end(w, rc);
                return;
        }
        /* the client's offset, guarded; else a first guess of 0, which creates the offset
         * object of an upload with nothing kept yet */
        w->tries = 0;
        struct chp_rstate_req *r = rq(w, CHP_RS_TUS_APPEND);
        memcpy(r->u.tus.upload_id, w->upload_id, CHP_UPLOAD_ID_BYTES);
        r->u.tus.old = w->req->u.tail_append.has_offset ? w->req->u.tail_append.offset : 0;
        r->u.tus.data = w->req->u.tail_append.data;
        r->u.tus.len = w->req->u.tail_append.len;
        go_or_end(w, tail_appended);
}

/* ---- submission -------------------------------------------------------------------------- */

/* The first step of w's request: 0, or a refusal (then nothing of it ran). */
static int wop_start(struct shared_wop *w)
{
        struct chp_store_req *req = w->req;
        switch (req->type) {
        case CHP_REQ_PUT:
                return put_start(w);
        case CHP_REQ_COMMIT:
                return commit_start(w);
        case CHP_REQ_UPLOAD_CREATE:
                return create_start(w);
        case CHP_REQ_UPLOAD_DELETE:
                return upload_get(w, req->u.upload_delete.upload_id, udel_got);
        case CHP_REQ_FILE_DELETE:
                memcpy(rq(w, CHP_RS_FILE_DELETE)->u.file.id, req->u.file_delete.file_id,
                       CHP_HASH_BYTES);
                return go(w, fdel_done);
        case CHP_REQ_TAIL_APPEND:
                if (!req->u.tail_append.data || req->u.tail_append.len == 0 ||
                    req->u.tail_append.len > CHP_CHUNK_MAX)
                        return -EINVAL;
                return upload_get(w, req->u.tail_append.upload_id, tail_upload_got);
        case CHP_REQ_QUARANTINE: {
                struct chp_rstate_req *r =
                    rq(w, req->u.quarantine.lift ? CHP_RS_FILE_LIFT : CHP_RS_FILE_QUARANTINE);
                req->u.quarantine.deleted = false;
                memcpy(r->u.file.id, req->u.quarantine.file_id, CHP_HASH_BYTES);
                r->u.file.now = w->now;
                return go(w, quar_done);
        }
        default: /* CHP_REQ_AUDIT: the local audit's repairs; CHP_REQ_GC: shared.c's */
                return -ENOTSUP;
        }
}

int shared_submit(struct chp_store *s, struct chp_store_req *req)
{
        struct store_shared *sh = s->shared;
        if (req->type == CHP_REQ_AUDIT || req->type == CHP_REQ_GC)
                return -ENOTSUP;
        struct shared_wop *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        int rc = shared_op_begin(sh);
        if (rc) {
                free(w);
                return rc;
        }
        w->sh = sh;
        w->req = req;
        w->now = (uint64_t)time(NULL);
        req->status = 0;
        bool wait = false;
        if (tus_ordered(req)) {
                pthread_mutex_lock(&sh->lock);
                struct shared_wop **pp = &sh->tus_head;
                for (; *pp; pp = &(*pp)->tnext)
                        if (memcmp(tus_id((*pp)->req), tus_id(req), CHP_UPLOAD_ID_BYTES) == 0)
                                wait = true;
                *pp = w;
                w->in_tus = true;
                pthread_mutex_unlock(&sh->lock);
        }
        if (wait)
                return 0; /* started when the one before it of its upload ends */
        rc = wop_start(w);
        if (rc) {
                struct shared_wop *next = tus_leave(w);
                wop_free(w);
                shared_op_end(sh);
                tus_next(next);
        }
        return rc;
}
