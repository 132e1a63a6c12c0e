/* rados_state_flows.c — the requests of rados_state.h that span objects or retry: the commit of
 * a manifest (docs/scale-out.md's seven steps, its chunk refers COMMIT_WINDOW at a time), upload
 * sessions, pending, tenant usage by compare-and-set, and tus offset objects. Threads and
 * continuations as in rados_state_int.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bytes.h"
#include "log.h"
#include "manifest.h"
#include "rados_state_int.h"

#define COMMIT_WINDOW 16 /* a commit's chunk refers in flight */
#define USAGE_TRIES   8

struct commit_state {
        pthread_mutex_t mu;
        struct chp_manifest m;
        uint32_t next, running, missing;
        int err;
        bool existed_before, close_upload;
        struct chp_rstate_req kids[COMMIT_WINDOW];
};

void flows_free(struct chp_rstate_priv *p)
{
        if (p->cs) {
                pthread_mutex_destroy(&p->cs->mu);
                free(p->cs);
                p->cs = NULL;
        }
}

/* An upload's offset object: <upload id hex>.t */
static void tail_oid(const uint8_t id[CHP_UPLOAD_ID_BYTES], char oid[OID_MAX])
{
        oid_hex(id, CHP_UPLOAD_ID_BYTES, oid);
        memcpy(oid + 2 * CHP_UPLOAD_ID_BYTES, ".t", 3);
}

static struct chp_rstate_req *sub_new(struct chp_rstate_priv *p, enum chp_rstate_kind kind)
{
        if (!p->sub && !(p->sub = malloc(sizeof(*p->sub))))
                return NULL;
        memset(p->sub, 0, sizeof(*p->sub));
        p->sub->kind = kind;
        return p->sub;
}

/* A child USAGE_ADD of d to p->tenant (quota: checked for declared, sessions), then then(p, rc). */
static int usage_sub(struct chp_rstate_priv *p, const struct usage_delta *d,
                     const struct chp_store_quota *quota, uint64_t declared, uint64_t sessions,
                     step_fn then)
{
        struct chp_rstate_req *u = sub_new(p, CHP_RS_USAGE_ADD);
        if (!u)
                return -ENOMEM;
        u->u.usage.tenant = p->tenant;
        u->u.usage.d = *d;
        u->u.usage.quota = quota;
        u->u.usage.declared = declared;
        u->u.usage.sessions = sessions;
        p->after = then;
        return sub_go(p, u, 0, NULL);
}

int usage_sub_file(struct chp_rstate_priv *p, step_fn then)
{
        struct usage_delta d = {.stored_bytes = -(int64_t)p->size, .files = -1};
        return usage_sub(p, &d, NULL, 0, 0, then);
}

static void fail_or(struct chp_rstate_priv *p, int rc)
{
        if (rc)
                finish(p, rc);
}

/* ---- tenant usage ------------------------------------------------------------------------- */

static void usage_read(struct chp_rstate_priv *p, int rc);

static void usage_written(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc == -ECANCELED || rc == -EEXIST || rc == -ENOENT) {
                /* another relay changed it since we read it: read again, after a while */
                if (q->u.usage.tries >= USAGE_TRIES) {
                        finish(p, CHP_ELIMITED);
                        return;
                }
                uint32_t r = 0;
                if (getrandom(&r, sizeof(r), 0) != sizeof(r))
                        r = (uint32_t)(uintptr_t)p;
                later(p, 1000u + r % (1000u << q->u.usage.tries), usage_read, 0);
                return;
        }
        finish(p, rc);
}

static void usage_got(struct chp_rstate_priv *p, int rc);

static void usage_decide(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        struct chp_tenant_usage u = q->u.usage.usage;
        char oid[OID_MAX];
        uint8_t rec[CHP_REC_TENANT_BYTES];
        (void)rc;
        if (q->u.usage.quota && store_quota_fits(&u, q->u.usage.quota, q->u.usage.declared,
                                                 q->u.usage.sessions, &q->u.usage.quota_hit)) {
                finish(p, CHP_EQUOTA);
                return;
        }
        if (store_usage_apply(&u, &q->u.usage.d))
                chp_log_warn("store", "tenant usage would go below zero: kept at zero");
        chp_rec_tenant_encode(rec, &u);
        oid_hex((const uint8_t *)p->tenant, p->tlen, oid);
        rop_write(p, NS_T, oid);
        if (p->usage_found) {
                rados_write_op_cmpxattr(p->op.w, "u", LIBRADOS_CMPXATTR_OP_EQ,
                                        (const char *)p->old_usage, p->old_usage_len);
        } else {
                rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        }
        rados_write_op_setxattr(p->op.w, "u", (const char *)rec, sizeof(rec));
        q->u.usage.usage = u;
        q->u.usage.tries++;
        rop_go(p, usage_written);
}

static void usage_got(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc) {
                finish(p, rc);
                return;
        }
        memset(&q->u.usage.usage, 0, sizeof(q->u.usage.usage));
        p->usage_found = p->found;
        /* the value the write compares with: what was read, whatever it is */
        p->old_usage_len = p->x.u_len < sizeof(p->old_usage) ? p->x.u_len : sizeof(p->old_usage);
        memcpy(p->old_usage, p->x.u, p->old_usage_len);
        if (p->found && p->x.u_len &&
            chp_rec_tenant_parse(p->x.u, p->x.u_len, &q->u.usage.usage) < 0) {
                chp_log_warn("store", "tenant usage record malformed: counted again from zero");
                memset(&q->u.usage.usage, 0, sizeof(q->u.usage.usage));
        }
        if (q->kind == CHP_RS_USAGE_GET) {
                finish(p, 0);
                return;
        }
        if (hold_here(p, 1, usage_decide))
                return;
        usage_decide(p, 0);
}

static void usage_read(struct chp_rstate_priv *p, int rc)
{
        char oid[OID_MAX];
        (void)rc;
        oid_hex((const uint8_t *)p->tenant, p->tlen, oid);
        obj_read(p, NS_T, oid, usage_got);
}

/* ---- the commit --------------------------------------------------------------------------- */

static void commit_keys(struct chp_rstate_priv *p, int rc);
static void commit_close_upload(struct chp_rstate_priv *p, int rc);

static void commit_done(struct chp_rstate_priv *p, int rc)
{
        finish(p, rc);
}

static void commit_uncounted(struct chp_rstate_priv *p, int rc)
{
        (void)rc; /* a failed take-back leaves usage high, as the design allows */
        if (p->saved_rc)
                finish(p, p->saved_rc);
        else
                commit_close_upload(p, 0);
}

/* Step 6: the upload stops counting as incomplete. */
static void commit_pending_dropped(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        (void)rc; /* another upload owns the id now: left as it is */
        if (!p->cs->close_upload) {
                finish(p, 0);
                return;
        }
        uint64_t known = q->u.commit.declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : q->u.commit.declared;
        struct usage_delta d = {.incomplete = -1, .incomplete_bytes = -(int64_t)known};
        fail_or(p, usage_sub(p, &d, NULL, 0, 0, commit_done));
}

static void commit_upload_closed(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc && rc != -ENOENT && rc != -EEXIST) {
                finish(p, rc);
                return;
        }
        /* counted as incomplete no more only when this commit closed it */
        p->cs->close_upload = rc == 0 && !(q->u.commit.keep_upload && p->sub->u.upload.complete);
        struct chp_rstate_req *d = sub_new(p, CHP_RS_PENDING_DROP);
        if (!d) {
                finish(p, -ENOMEM);
                return;
        }
        memcpy(d->u.pending.file_id, q->u.commit.file_id, CHP_HASH_BYTES);
        memcpy(d->u.pending.upload_id, q->u.commit.upload_id, CHP_UPLOAD_ID_BYTES);
        p->after = commit_pending_dropped;
        fail_or(p, sub_go(p, d, 0, NULL));
}

/* Step 5: the upload completes (tus, kept for HEAD) or goes. */
static void commit_close_upload(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        (void)rc;
        if (!q->u.commit.has_upload) {
                finish(p, 0);
                return;
        }
        struct chp_rstate_req *u =
            sub_new(p, q->u.commit.keep_upload ? CHP_RS_UPLOAD_COMPLETE : CHP_RS_UPLOAD_REMOVE);
        if (!u) {
                finish(p, -ENOMEM);
                return;
        }
        memcpy(u->u.upload.id, q->u.commit.upload_id, CHP_UPLOAD_ID_BYTES);
        memcpy(u->u.upload.file_id, q->u.commit.file_id, CHP_HASH_BYTES);
        u->u.upload.keep_expires = q->u.commit.keep_upload ? q->u.commit.keep_expires : 0;
        p->after = commit_upload_closed;
        fail_or(p, sub_go(p, u, 0, NULL));
}

/* Step 4 done: from here on the file exists (or the commit failed). */
static void commit_filed(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        bool existed = rc == 0 && p->sub->u.file.existed;
        if (rc == 0)
                q->u.commit.existed = existed;
        if (p->counted && (rc || existed)) {
                /* quarantined, or another commit stored it first: take back step 3 */
                p->saved_rc = rc;
                struct usage_delta d = {.stored_bytes = -(int64_t)p->size, .files = -1};
                fail_or(p, usage_sub(p, &d, NULL, 0, 0, commit_uncounted));
                return;
        }
        if (rc) {
                finish(p, rc);
                return;
        }
        if (hold_here(p, 4, commit_close_upload))
                return;
        commit_close_upload(p, 0);
}

static void commit_file(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        (void)rc;
        struct chp_rstate_req *f = sub_new(p, CHP_RS_FILE_PUT);
        if (!f) {
                finish(p, -ENOMEM);
                return;
        }
        memcpy(f->u.file.id, q->u.commit.file_id, CHP_HASH_BYTES);
        f->u.file.rec = p->rec;
        f->u.file.rec_len = p->rec_len;
        f->u.file.meta = q->u.commit.meta;
        f->u.file.meta_len = q->u.commit.meta_len;
        p->after = commit_filed;
        fail_or(p, sub_go(p, f, RS_SKIP_KEYS, NULL));
}

static void commit_counted(struct chp_rstate_priv *p, int rc)
{
        if (rc) {
                finish(p, rc);
                return;
        }
        p->counted = !p->cs->existed_before;
        if (hold_here(p, 3, commit_file))
                return;
        commit_file(p, 0);
}

/* Step 3: the tenant's usage counts the file before it exists (unless it was stored). */
static void commit_count_go(struct chp_rstate_priv *p, int rc)
{
        (void)rc;
        if (p->cs->existed_before) {
                commit_counted(p, 0);
                return;
        }
        struct usage_delta d = {.stored_bytes = (int64_t)p->size, .files = 1};
        fail_or(p, usage_sub(p, &d, NULL, 0, 0, commit_counted));
}

static void commit_count(struct chp_rstate_priv *p, int rc)
{
        if (rc) {
                finish(p, rc);
                return;
        }
        if (hold_here(p, 2, commit_count_go))
                return;
        commit_count_go(p, 0);
}

/* Step 1 over: every chunk named the file (or some are missing). */
static void commit_referred(struct chp_rstate_priv *p)
{
        struct commit_state *cs = p->cs;
        if (cs->err) {
                finish(p, cs->err);
        } else if (cs->missing) {
                p->req->u.commit.missing = cs->missing;
                finish(p, CHP_EMISSING);
        } else if (!hold_here(p, 1, commit_keys)) {
                commit_keys(p, 0);
        }
}

static void commit_keys(struct chp_rstate_priv *p, int rc)
{
        (void)rc;
        file_keys(p, false, commit_count); /* step 2 */
}

static void refer_done(struct chp_rstate_req *kid, int rc);

/* Gives kid the next chunk; true when kid was the last one running and nothing is left. */
static bool refer_next(struct chp_rstate_priv *p, struct chp_rstate_req *kid)
{
        struct commit_state *cs = p->cs;
        struct chp_rstate_req *q = p->req;
        for (;;) {
                pthread_mutex_lock(&cs->mu);
                if (cs->err || cs->next >= cs->m.chunk_count) {
                        bool last = --cs->running == 0;
                        pthread_mutex_unlock(&cs->mu);
                        return last;
                }
                uint32_t i = cs->next++;
                pthread_mutex_unlock(&cs->mu);
                memset(kid, 0, sizeof(*kid));
                kid->kind = CHP_RS_CHUNK_REFER;
                memcpy(kid->u.chunk.addr, cs->m.addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES);
                kid->u.chunk.ref.kind = 'f';
                memcpy(kid->u.chunk.ref.id, q->u.commit.file_id, CHP_HASH_BYTES);
                kid->u.chunk.lease = q->u.commit.expires;
                kid->arg = p;
                int rc = sub_go(p, kid, 0, refer_done);
                if (rc == 0)
                        return false;
                pthread_mutex_lock(&cs->mu);
                cs->err = rc;
                pthread_mutex_unlock(&cs->mu);
        }
}

static void refer_done(struct chp_rstate_req *kid, int rc)
{
        struct chp_rstate_priv *p = kid->arg;
        struct commit_state *cs = p->cs;
        pthread_mutex_lock(&cs->mu);
        if (rc == -ENOENT)
                cs->missing++;
        else if (rc && !cs->err)
                cs->err = rc;
        pthread_mutex_unlock(&cs->mu);
        if (refer_next(p, kid))
                commit_referred(p);
}

/* Step 0: a tombstone refuses the commit before anything is written; a stored file is not
 * counted again. Then step 1. */
static void commit_looked(struct chp_rstate_priv *p, int rc)
{
        struct commit_state *cs = p->cs;
        if (rc) {
                finish(p, rc);
                return;
        }
        if (p->found && p->x.has_q) {
                finish(p, CHP_EQUARANTINED);
                return;
        }
        cs->existed_before = p->found;
        uint32_t n = cs->m.chunk_count < COMMIT_WINDOW ? cs->m.chunk_count : COMMIT_WINDOW;
        if (n == 0) {
                commit_referred(p);
                return;
        }
        cs->running = n;
        bool last = false;
        for (uint32_t i = 0; i < n; i++)
                last = refer_next(p, &cs->kids[i]) || last;
        if (last)
                commit_referred(p);
}

static int commit_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        const char *t = q->u.commit.tenant ? q->u.commit.tenant : "";
        size_t tlen = strnlen(t, CHP_TENANT_MAX + 1);
        char oid[OID_MAX];
        if (!q->u.commit.manifest || tlen > CHP_TENANT_MAX ||
            q->u.commit.manifest_len > UINT32_MAX - CHP_REC_FILE_BYTES - CHP_TENANT_MAX)
                return -EINVAL;
        struct commit_state *cs = calloc(1, sizeof(*cs));
        if (!cs)
                return -ENOMEM;
        pthread_mutex_init(&cs->mu, NULL);
        p->cs = cs;
        q->u.commit.existed = false;
        q->u.commit.missing = 0;
        if (chp_manifest_decode(q->u.commit.manifest, q->u.commit.manifest_len, &cs->m) < 0)
                return -EBADMSG;
        int rc =
            chp_manifest_id(q->u.commit.manifest, q->u.commit.manifest_len, q->u.commit.file_id);
        if (rc)
                return rc;
        memcpy(p->tenant, t, tlen);
        p->tenant[tlen] = 0;
        p->tlen = tlen;
        p->created = q->u.commit.created;
        p->expires = q->u.commit.expires;
        p->size = cs->m.total_size;
        p->rec_len = CHP_REC_FILE_BYTES + tlen + q->u.commit.manifest_len;
        if (!(p->rec = malloc(p->rec_len)))
                return -ENOMEM;
        chp_rec_file_encode(p->rec, (uint8_t)tlen, (uint32_t)q->u.commit.manifest_len, p->created,
                            p->expires, p->size);
        memcpy(p->rec + CHP_REC_FILE_BYTES, t, tlen);
        memcpy(p->rec + CHP_REC_FILE_BYTES + tlen, q->u.commit.manifest, q->u.commit.manifest_len);
        oid_hex(q->u.commit.file_id, CHP_HASH_BYTES, oid);
        obj_read(p, NS_F, oid, commit_looked);
        return 0;
}

/* ---- uploads ------------------------------------------------------------------------------ */

static void upload_created(struct chp_rstate_priv *p, int rc)
{
        finish(p, rc == -EEXIST ? 0 : rc); /* ids are random: a retry of our own create */
}

static void upload_replaced(struct chp_rstate_priv *p, int rc);

/* CREATE's exclusive create of the record, or REPLACE's write of it (open only; its expiry in
 * p->created). */
static void upload_create(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        bool replace = q->kind == CHP_RS_UPLOAD_REPLACE;
        char oid[OID_MAX], e[HEX16];
        if (rc) {
                finish(p, rc);
                return;
        }
        oid_hex(q->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
        hex16(replace ? p->created : p->expires, e);
        rop_write(p, NS_U, oid);
        if (replace)
                rados_write_op_cmpxattr(p->op.w, "s", LIBRADOS_CMPXATTR_OP_EQ, "o", 1);
        else
                rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(p->op.w, (const char *)q->u.upload.rec, q->u.upload.rec_len);
        rados_write_op_setxattr(p->op.w, "e", e, 16);
        if (!replace)
                rados_write_op_setxattr(p->op.w, "s", "o", 1);
        rop_go(p, replace ? upload_replaced : upload_created);
}

/* The upload's key in i/exp.xx, set or dropped; then next. */
static void upload_key(struct chp_rstate_priv *p, bool drop, step_fn next)
{
        const uint8_t *id = p->req->u.upload.id;
        char oid[OID_MAX], key[HEX16 + 1 + 2 * CHP_UPLOAD_ID_BYTES];
        shard_oid("exp", id, oid);
        exp_key(key, p->expires, 'u', id, CHP_UPLOAD_ID_BYTES);
        index_key(p, oid, key, drop, next);
}

static void upload_counted(struct chp_rstate_priv *p, int rc)
{
        if (rc == CHP_EQUOTA)
                p->req->u.upload.quota_hit = p->sub->u.usage.quota_hit;
        if (rc)
                finish(p, rc);
        else
                upload_key(p, false, upload_create);
}

static void upload_completed(struct chp_rstate_priv *p, int rc);

static void upload_state_read(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char want[1 + 2 * CHP_HASH_BYTES + 1];
        if (rc || !p->found) {
                finish(p, rc ? rc : -ENOENT);
                return;
        }
        want[0] = 'c';
        chp_hex_encode(q->u.upload.file_id, CHP_HASH_BYTES, want + 1);
        if (p->x.s_len == 1 + 2 * CHP_HASH_BYTES && memcmp(p->x.s, want, p->x.s_len) == 0) {
                q->u.upload.complete = true; /* completed already, as this file: a retry */
                finish(p, 0);
        } else {
                finish(p, p->x.s_len == 1 && p->x.s[0] == 'o' ? -EAGAIN : -EEXIST);
        }
}

static void upload_completed(struct chp_rstate_priv *p, int rc)
{
        char oid[OID_MAX];
        if (rc == -ECANCELED) {
                oid_hex(p->req->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
                obj_read(p, NS_U, oid, upload_state_read);
                return;
        }
        finish(p, rc);
}

/* COMPLETE with keep_expires: the write of the state (and of the record with its new expiry,
 * p->expires, when p->data holds it); then the old expiry's key (p->size) goes. */
static void upload_complete_write(struct chp_rstate_priv *p, step_fn after)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], v[1 + 2 * CHP_HASH_BYTES + 1], e[HEX16];
        oid_hex(q->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
        v[0] = 'c';
        chp_hex_encode(q->u.upload.file_id, CHP_HASH_BYTES, v + 1);
        rop_write(p, NS_U, oid);
        rados_write_op_cmpxattr(p->op.w, "s", LIBRADOS_CMPXATTR_OP_EQ, "o", 1);
        rados_write_op_setxattr(p->op.w, "s", v, 1 + 2 * CHP_HASH_BYTES);
        if (p->data) {
                hex16(p->expires, e);
                /* the record as read: a REPLACE since (a deferred length) reads it again */
                rados_write_op_assert_version(p->op.w, p->version);
                rados_write_op_write_full(p->op.w, (const char *)p->data, p->data_len);
                rados_write_op_setxattr(p->op.w, "e", e, 16);
        }
        rop_go(p, after);
}

static void upload_keep_looked(struct chp_rstate_priv *p, int rc);

static void upload_kept(struct chp_rstate_priv *p, int rc)
{
        if ((rc == -ERANGE || rc == -EOVERFLOW) && ++p->tries < 8) {
                char oid[OID_MAX];
                oid_hex(p->req->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
                obj_read(p, NS_U, oid, upload_keep_looked);
                return;
        }
        if (rc) {
                upload_completed(p, rc); /* -ECANCELED: completed already, or not open */
                return;
        }
        if (p->size == p->expires) {
                finish(p, 0);
                return;
        }
        p->expires = p->size;
        upload_key(p, true, chunk_done);
}

static void upload_keep_keyed(struct chp_rstate_priv *p, int rc)
{
        if (rc) {
                finish(p, rc);
                return;
        }
        upload_complete_write(p, upload_kept);
}

/* COMPLETE with keep_expires: the record as it is; its new expiry's key first. */
static void upload_keep_looked(struct chp_rstate_priv *p, int rc)
{
        struct chp_rec_upload r;
        if (rc || !p->found) {
                finish(p, rc ? rc : -ENOENT);
                return;
        }
        if (chp_rec_upload_parse(p->data, p->data_len, &r) < 0) {
                finish(p, CHP_ECORRUPT);
                return;
        }
        p->size = p->x.has_e ? p->x.e : r.expires; /* the old expiry, whose key goes last */
        p->expires = p->req->u.upload.keep_expires;
        chp_rec_upload_set_expires(p->data, p->expires);
        if (p->size == p->expires) {
                upload_keep_keyed(p, 0);
                return;
        }
        upload_key(p, false, upload_keep_keyed);
}

static void upload_put_done(struct chp_rstate_priv *p, int rc)
{
        finish(p, rc == -ECANCELED ? -ENOENT : rc); /* gone or complete: the upload is over */
}

static void upload_tail_dropped(struct chp_rstate_priv *p, int rc)
{
        if (rc && rc != -ENOENT) {
                finish(p, rc);
                return;
        }
        if (p->x.has_e)
                upload_key(p, true, chunk_done);
        else
                finish(p, 0);
}

static void upload_removed(struct chp_rstate_priv *p, int rc)
{
        char oid[OID_MAX];
        if (rc) {
                finish(p, rc);
                return;
        }
        tail_oid(p->req->u.upload.id, oid);
        rop_write(p, NS_U, oid);
        rados_write_op_remove(p->op.w);
        rop_go(p, upload_tail_dropped);
}

static void upload_looked(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        if (rc || !p->found) {
                finish(p, rc ? rc : -ENOENT);
                return;
        }
        if (q->kind == CHP_RS_UPLOAD_GET) {
                struct chp_rec_upload r;
                if (chp_rec_upload_parse(p->data, p->data_len, &r) < 0) {
                        finish(p, CHP_ECORRUPT);
                        return;
                }
                q->u.upload.complete = p->x.s_len == 1 + 2 * CHP_HASH_BYTES && p->x.s[0] == 'c' &&
                                       chp_hex_decode((const char *)p->x.s + 1, 2 * CHP_HASH_BYTES,
                                                      q->u.upload.file_id, CHP_HASH_BYTES) == 0;
                q->u.upload.got = p->data;
                q->u.upload.got_len = p->data_len;
                p->data = NULL;
                finish(p, 0);
                return;
        }
        /* REMOVE */
        p->expires = p->x.e;
        oid_hex(q->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
        rop_write(p, NS_U, oid);
        rados_write_op_remove(p->op.w);
        rop_go(p, upload_removed);
}

/* REPLACE: the old expiry's key (p->size) goes once the new record (p->created) is in. */
static void upload_replaced(struct chp_rstate_priv *p, int rc)
{
        if (rc == -ECANCELED || rc == -ENOENT) {
                finish(p, -ENOENT); /* completed or removed since it was read */
                return;
        }
        if (rc || p->size == p->created) {
                finish(p, rc);
                return;
        }
        p->expires = p->size;
        upload_key(p, true, chunk_done);
}

/* REPLACE: the record as it is; the new expiry's (p->created) key first. */
static void upload_replace_looked(struct chp_rstate_priv *p, int rc)
{
        if (rc || !p->found || p->x.s_len != 1 || p->x.s[0] != 'o') {
                finish(p, rc ? rc : -ENOENT);
                return;
        }
        p->size = p->x.e; /* the old expiry, whose key goes last */
        if (p->size == p->created) {
                upload_create(p, 0);
                return;
        }
        p->expires = p->created;
        upload_key(p, false, upload_create);
}

static int upload_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], v[1 + 2 * CHP_HASH_BYTES + 1], k[9];
        struct chp_rec_upload r;
        oid_hex(q->u.upload.id, CHP_UPLOAD_ID_BYTES, oid);
        q->u.upload.quota_hit = CHP_QUOTA_NONE;
        q->u.upload.complete = false;
        q->u.upload.got = NULL;
        q->u.upload.got_len = 0;
        switch (q->kind) {
        case CHP_RS_UPLOAD_CREATE: {
                if (!q->u.upload.rec ||
                    chp_rec_upload_parse(q->u.upload.rec, q->u.upload.rec_len, &r) < 0 ||
                    r.tenant_len > CHP_TENANT_MAX)
                        return -EINVAL;
                memcpy(p->tenant, r.tenant, r.tenant_len);
                p->tenant[r.tenant_len] = 0;
                p->tlen = r.tenant_len;
                p->expires = r.expires;
                uint64_t known = r.declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : r.declared;
                uint64_t now = q->u.upload.quota ? q->u.upload.quota->now : r.created;
                struct usage_delta d = {.incomplete = 1,
                                        .incomplete_bytes = (int64_t)known,
                                        .day = now / 86400,
                                        .day_bytes = known};
                return usage_sub(p, &d, q->u.upload.quota, known, 1, upload_counted);
        }
        case CHP_RS_UPLOAD_PUT_CHUNK: {
                snprintf(k, sizeof(k), "%08x", q->u.upload.index);
                const char *keys[] = {k};
                const char *vals[] = {(const char *)q->u.upload.addr};
                size_t lens[] = {CHP_HASH_BYTES};
                rop_write(p, NS_U, oid);
                rados_write_op_assert_exists(p->op.w);
                rados_write_op_cmpxattr(p->op.w, "s", LIBRADOS_CMPXATTR_OP_EQ, "o", 1);
                rados_write_op_omap_set(p->op.w, keys, vals, lens, 1);
                rop_go(p, upload_put_done);
                return 0;
        }
        case CHP_RS_UPLOAD_COMPLETE:
                if (q->u.upload.keep_expires) {
                        obj_read(p, NS_U, oid, upload_keep_looked);
                        return 0;
                }
                v[0] = 'c';
                chp_hex_encode(q->u.upload.file_id, CHP_HASH_BYTES, v + 1);
                rop_write(p, NS_U, oid);
                rados_write_op_cmpxattr(p->op.w, "s", LIBRADOS_CMPXATTR_OP_EQ, "o", 1);
                rados_write_op_setxattr(p->op.w, "s", v, 1 + 2 * CHP_HASH_BYTES);
                rop_go(p, upload_completed);
                return 0;
        case CHP_RS_UPLOAD_REMOVE:
        case CHP_RS_UPLOAD_GET:
                obj_read(p, NS_U, oid, upload_looked);
                return 0;
        case CHP_RS_UPLOAD_REPLACE:
                if (!q->u.upload.rec ||
                    chp_rec_upload_parse(q->u.upload.rec, q->u.upload.rec_len, &r) < 0)
                        return -EINVAL;
                p->created = r.expires; /* the new expiry, until the old one is read */
                obj_read(p, NS_U, oid, upload_replace_looked);
                return 0;
        default:
                return -EINVAL;
        }
}

/* ---- pending ------------------------------------------------------------------------------ */

static void pending_take(struct chp_rstate_priv *p, int rc);

static void pending_read(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc) {
                finish(p, rc);
                return;
        }
        if (!p->found || p->x.u_len != 2 * CHP_UPLOAD_ID_BYTES ||
            chp_hex_decode((const char *)p->x.u, p->x.u_len, q->u.pending.owner,
                           CHP_UPLOAD_ID_BYTES)) {
                if (!p->found && q->kind == CHP_RS_PENDING_TAKE && ++p->tries < 4)
                        pending_take(p, 0); /* dropped meanwhile: take it again */
                else
                        finish(p, p->found ? CHP_ECORRUPT : -ENOENT);
                return;
        }
        finish(p, q->kind == CHP_RS_PENDING_GET ? 0 : -EEXIST);
}

static void pending_written(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        if (q->kind == CHP_RS_PENDING_DROP) {
                q->u.pending.dropped = rc == 0;
                finish(p, rc == -ECANCELED || rc == -ENOENT ? 0 : rc);
                return;
        }
        if (rc == -EEXIST || rc == -ECANCELED) { /* another upload owns it: which */
                oid_hex(q->u.pending.file_id, CHP_HASH_BYTES, oid);
                obj_read(p, NS_P, oid, pending_read);
                return;
        }
        finish(p, rc);
}

static void pending_take(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], u[2 * CHP_UPLOAD_ID_BYTES + 1];
        (void)rc;
        oid_hex(q->u.pending.file_id, CHP_HASH_BYTES, oid);
        chp_hex_encode(q->u.pending.upload_id, CHP_UPLOAD_ID_BYTES, u);
        rop_write(p, NS_P, oid);
        rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_setxattr(p->op.w, "u", u, 2 * CHP_UPLOAD_ID_BYTES);
        rop_go(p, pending_written);
}

static int pending_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], u[2 * CHP_UPLOAD_ID_BYTES + 1], d[2 * CHP_UPLOAD_ID_BYTES + 1];
        oid_hex(q->u.pending.file_id, CHP_HASH_BYTES, oid);
        chp_hex_encode(q->u.pending.upload_id, CHP_UPLOAD_ID_BYTES, u);
        chp_hex_encode(q->u.pending.dead, CHP_UPLOAD_ID_BYTES, d);
        memset(q->u.pending.owner, 0, CHP_UPLOAD_ID_BYTES);
        q->u.pending.dropped = false;
        switch (q->kind) {
        case CHP_RS_PENDING_TAKE:
                pending_take(p, 0);
                return 0;
        case CHP_RS_PENDING_SWAP:
                rop_write(p, NS_P, oid);
                rados_write_op_cmpxattr(p->op.w, "u", LIBRADOS_CMPXATTR_OP_EQ, d, 32);
                rados_write_op_setxattr(p->op.w, "u", u, 32);
                rop_go(p, pending_written);
                return 0;
        case CHP_RS_PENDING_DROP:
                rop_write(p, NS_P, oid);
                rados_write_op_cmpxattr(p->op.w, "u", LIBRADOS_CMPXATTR_OP_EQ, u, 32);
                rados_write_op_remove(p->op.w);
                rop_go(p, pending_written);
                return 0;
        case CHP_RS_PENDING_GET:
                obj_read(p, NS_P, oid, pending_read);
                return 0;
        default:
                return -EINVAL;
        }
}

/* ---- tus offset objects ------------------------------------------------------------------- */

static void tus_looked(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc == 0 && !p->found)
                rc = -ENOENT;
        if (rc) {
                finish(p, rc);
                return;
        }
        q->u.tus.offset = p->x.has_n ? p->x.n : 0;
        if (q->kind != CHP_RS_TUS_GET) {
                finish(p, -ESTALE); /* another writer moved the offset (tus: 409) */
                return;
        }
        if (p->data_len > q->u.tus.cap) {
                finish(p, -EMSGSIZE);
                return;
        }
        if (p->data_len)
                memcpy(q->u.tus.buf, p->data, p->data_len);
        q->u.tus.got = (uint32_t)p->data_len;
        finish(p, 0);
}

static void tus_written(struct chp_rstate_priv *p, int rc);

static void tus_op(struct chp_rstate_priv *p, bool create)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], old[HEX16], n[HEX16];
        tail_oid(q->u.tus.upload_id, oid);
        hex16(q->u.tus.old, old);
        hex16(q->u.tus.old + q->u.tus.len, n);
        rop_write(p, NS_U, oid);
        if (create)
                rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        else
                rados_write_op_cmpxattr(p->op.w, "n", LIBRADOS_CMPXATTR_OP_EQ, old, 16);
        if (q->kind == CHP_RS_TUS_APPEND)
                rados_write_op_append(p->op.w, q->u.tus.data, q->u.tus.len);
        else
                rados_write_op_truncate(p->op.w, 0);
        rados_write_op_setxattr(p->op.w, "n", n, 16);
        p->step = create;
        rop_go(p, tus_written);
}

static void tus_written(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        if (rc == 0) {
                q->u.tus.offset = q->u.tus.old + q->u.tus.len;
                finish(p, 0);
        } else if (rc == -ENOENT && !p->step && q->u.tus.old == 0) {
                tus_op(p, true); /* the upload's first bytes (or first whole chunk) */
        } else if (rc == -ECANCELED || rc == -EEXIST) {
                tail_oid(q->u.tus.upload_id, oid);
                obj_read(p, NS_U, oid, tus_looked);
        } else {
                finish(p, rc);
        }
}

static int tus_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        q->u.tus.got = 0;
        switch (q->kind) {
        case CHP_RS_TUS_APPEND:
                if (!q->u.tus.data || !q->u.tus.len)
                        return -EINVAL;
                /* fall through */
        case CHP_RS_TUS_ABSORB:
                if (q->u.tus.old > UINT64_MAX - q->u.tus.len)
                        return -EINVAL;
                tus_op(p, false);
                return 0;
        case CHP_RS_TUS_GET:
                tail_oid(q->u.tus.upload_id, oid);
                obj_read(p, NS_U, oid, tus_looked);
                return 0;
        default:
                return -EINVAL;
        }
}

int flows_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        switch (q->kind) {
        case CHP_RS_COMMIT:
                return commit_start(p);
        case CHP_RS_UPLOAD_CREATE:
        case CHP_RS_UPLOAD_PUT_CHUNK:
        case CHP_RS_UPLOAD_COMPLETE:
        case CHP_RS_UPLOAD_REMOVE:
        case CHP_RS_UPLOAD_GET:
        case CHP_RS_UPLOAD_REPLACE:
                return upload_start(p);
        case CHP_RS_PENDING_TAKE:
        case CHP_RS_PENDING_SWAP:
        case CHP_RS_PENDING_DROP:
        case CHP_RS_PENDING_GET:
                return pending_start(p);
        case CHP_RS_USAGE_ADD:
        case CHP_RS_USAGE_GET: {
                const char *t = q->u.usage.tenant ? q->u.usage.tenant : "";
                size_t tlen = strnlen(t, CHP_TENANT_MAX + 1);
                if (tlen > CHP_TENANT_MAX)
                        return -EINVAL;
                memset(&q->u.usage.usage, 0, sizeof(q->u.usage.usage));
                q->u.usage.quota_hit = CHP_QUOTA_NONE;
                q->u.usage.tries = 0;
                if (tlen == 0) { /* the trusted callers' tenant is not tracked */
                        later(p, 0, chunk_done, 0);
                        return 0;
                }
                memcpy(p->tenant, t, tlen);
                p->tenant[tlen] = 0;
                p->tlen = tlen;
                usage_read(p, 0);
                return 0;
        }
        case CHP_RS_TUS_APPEND:
        case CHP_RS_TUS_ABSORB:
        case CHP_RS_TUS_GET:
                return tus_start(p);
        default:
                return -EINVAL;
        }
}
