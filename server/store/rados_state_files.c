/* rados_state_files.c — the file operations of rados_state.h (namespace f, their index keys in
 * i/exp.xx and i/list.<tenant hex>, the quarantine list i/quarantine): create or extend, get,
 * delete, quarantine (a tombstone), lift and expire, each guarded as docs/scale-out.md's table
 * says. Threads and continuations as in rados_state_int.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "rados_state_int.h"

/* The expires field of an encoded file record (records.h: after ver, tenant_len, 0, manifest_len
 * and created), rewritten by file extend in place. */
#define FILE_EXPIRES_AT 16

/* ---- files -------------------------------------------------------------------------------- */

/* The record index keys of a file (expires, created, tenant in p): set before the record is
 * written, dropped after it is gone; then after(p, 0) or after(p, error). */
static void file_keys_list(struct chp_rstate_priv *p, int rc);

static void file_keys_end(struct chp_rstate_priv *p, int rc)
{
        p->after(p, rc);
}

static void file_keys_op(struct chp_rstate_priv *p, bool list, bool drop, step_fn next)
{
        const uint8_t *id =
            p->req->kind == CHP_RS_COMMIT ? p->req->u.commit.file_id : p->req->u.file.id;
        char oid[OID_MAX], key[HEX16 + 1 + 2 * CHP_HASH_BYTES];
        if (list) {
                list_oid(p->tenant, p->tlen, oid);
                list_key(key, p->created, id);
        } else {
                shard_oid("exp", id, oid);
                exp_key(key, p->expires, 'f', id, CHP_HASH_BYTES);
        }
        p->step = drop;
        index_key(p, oid, key, drop, next);
}

static void file_keys_list(struct chp_rstate_priv *p, int rc)
{
        if (rc) {
                p->after(p, rc);
                return;
        }
        file_keys_op(p, true, p->step, file_keys_end);
}

void file_keys(struct chp_rstate_priv *p, bool drop, step_fn after)
{
        p->after = after;
        file_keys_op(p, false, drop, file_keys_list);
}

/* Takes tenant, created and expires from a parsed record into p. */
static void file_fields(struct chp_rstate_priv *p, const struct chp_rec_file *f)
{
        p->tlen = f->tenant_len;
        memcpy(p->tenant, f->tenant, f->tenant_len);
        p->tenant[p->tlen] = 0;
        p->created = f->created;
        p->expires = f->expires;
        p->size = f->size;
}

static void file_create(struct chp_rstate_priv *p, int rc);

static void file_meta_done(struct chp_rstate_priv *p, int rc)
{
        finish(p, rc == -ECANCELED || rc == -ENOENT ? 0 : rc); /* it has some, or is gone */
}

/* The file exists (not a tombstone): its tus metadata, if given and it has none. */
static void file_meta(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc || !q->u.file.meta || !q->u.file.meta_len) {
                finish(p, rc);
                return;
        }
        char oid[OID_MAX];
        oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
        rop_write(p, NS_F, oid);
        rados_write_op_cmpxattr(p->op.w, "q", LIBRADOS_CMPXATTR_OP_EQ, "", 0);
        rados_write_op_cmpxattr(p->op.w, "m", LIBRADOS_CMPXATTR_OP_EQ, "", 0);
        rados_write_op_setxattr(p->op.w, "m", q->u.file.meta, q->u.file.meta_len);
        rop_go(p, file_meta_done);
}

static void file_extend_checked(struct chp_rstate_priv *p, int rc)
{
        if (rc) {
                finish(p, rc);
        } else if (!p->found) {
                if (++p->tries < 4)
                        file_create(p, 0);
                else
                        finish(p, -EAGAIN);
        } else if (p->x.has_q) {
                p->req->u.file.since = p->x.q;
                finish(p, CHP_EQUARANTINED);
        } else {
                file_meta(p, 0); /* its expiry was already at least ours */
        }
}

static void file_extend_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        if (rc == 0) {
                q->u.file.extended = true;
                file_meta(p, 0);
        } else if (rc == -ECANCELED || rc == -ENOENT) {
                /* a tombstone, a longer expiry, or removed meanwhile: look */
                oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
                obj_read(p, NS_F, oid, file_extend_checked);
        } else {
                finish(p, rc);
        }
}

static void file_create_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc != -EEXIST) {
                finish(p, rc);
                return;
        }
        q->u.file.existed = true;
        char oid[OID_MAX], e[HEX16];
        uint8_t le[8];
        oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
        hex16(p->expires, e);
        chp_put_le64(le, p->expires);
        rop_write(p, NS_F, oid);
        rados_write_op_cmpxattr(p->op.w, "q", LIBRADOS_CMPXATTR_OP_EQ, "", 0);
        rados_write_op_cmpxattr(p->op.w, "e", LIBRADOS_CMPXATTR_OP_GT, e, 16);
        rados_write_op_setxattr(p->op.w, "e", e, 16);
        rados_write_op_write(p->op.w, (const char *)le, 8, FILE_EXPIRES_AT);
        rop_go(p, file_extend_done);
}

static void file_create(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc) {
                finish(p, rc);
                return;
        }
        char oid[OID_MAX], e[HEX16];
        oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
        hex16(p->expires, e);
        rop_write(p, NS_F, oid);
        rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(p->op.w, (const char *)q->u.file.rec, q->u.file.rec_len);
        rados_write_op_setxattr(p->op.w, "e", e, 16);
        if (q->u.file.meta && q->u.file.meta_len)
                rados_write_op_setxattr(p->op.w, "m", q->u.file.meta, q->u.file.meta_len);
        rop_go(p, file_create_done);
}

/* The file as read into p: -ENOENT, CHP_EQUARANTINED (since set), CHP_ECORRUPT, or 0 with
 * tenant, created, expires and size in p. */
static int file_found(struct chp_rstate_priv *p, struct chp_rec_file *f)
{
        if (!p->found)
                return -ENOENT;
        if (p->x.has_q) {
                p->req->u.file.since = p->x.q;
                return CHP_EQUARANTINED;
        }
        if (chp_rec_file_parse(p->data, p->data_len, f) < 0)
                return CHP_ECORRUPT;
        file_fields(p, f);
        return 0;
}

static void file_got(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        struct chp_rec_file f;
        if (rc == 0 && (rc = file_found(p, &f)) == 0) {
                q->u.file.got = p->data;
                q->u.file.got_len = p->data_len;
                q->u.file.got_meta = p->x.m;
                q->u.file.got_meta_len = p->x.m_len;
                q->u.file.file = f;
                p->data = NULL;
                p->x.m = NULL;
        }
        finish(p, rc);
}

/* After a file record went away: its index keys, then its tenant's usage. */
static void file_gone_usage(struct chp_rstate_priv *p, int rc)
{
        if (rc || usage_sub_file(p, chunk_done) != 0)
                finish(p, rc ? rc : -ENOMEM);
}

static void file_removed(struct chp_rstate_priv *p, int rc);

/* DELETE, EXPIRE, QUARANTINE: the file as read; send the guarded write. */
static void file_judged(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        struct chp_rec_file f;
        char oid[OID_MAX], t[HEX16];
        if (rc) {
                finish(p, rc);
                return;
        }
        int found = file_found(p, &f);
        oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
        rop_write(p, NS_F, oid);
        switch (q->kind) {
        case CHP_RS_FILE_DELETE:
        case CHP_RS_FILE_EXPIRE:
                if (found) {
                        /* gone or quarantined: nothing to delete (expire: nothing due) */
                        finish(p, q->kind == CHP_RS_FILE_EXPIRE && found == CHP_EQUARANTINED
                                      ? 0
                                      : found);
                        return;
                }
                rados_write_op_assert_version(p->op.w, p->version);
                rados_write_op_cmpxattr(p->op.w, "q", LIBRADOS_CMPXATTR_OP_EQ, "", 0);
                if (q->kind == CHP_RS_FILE_EXPIRE) {
                        hex16(q->u.file.now, t);
                        rados_write_op_cmpxattr(p->op.w, "e", LIBRADOS_CMPXATTR_OP_GT, t, 16);
                }
                rados_write_op_remove(p->op.w);
                break;
        default: /* CHP_RS_FILE_QUARANTINE */
                if (found == CHP_EQUARANTINED || found == CHP_ECORRUPT)
                        found = -ENOENT; /* a tombstone again; nothing counted to take back */
                q->u.file.existed = found == 0;
                if (found == 0 || p->found)
                        rados_write_op_assert_version(p->op.w, p->version);
                else
                        rados_write_op_create(p->op.w, LIBRADOS_CREATE_EXCLUSIVE, NULL);
                hex16(q->u.file.now, t);
                rados_write_op_truncate(p->op.w, 0);
                rados_write_op_setxattr(p->op.w, "q", t, 16);
                rados_write_op_setxattr(p->op.w, "e", "", 0);
                rados_write_op_setxattr(p->op.w, "m", "", 0);
                break;
        }
        rop_go(p, file_removed);
}

static void quarantine_listed(struct chp_rstate_priv *p, int rc)
{
        if (rc || !p->req->u.file.existed)
                finish(p, rc);
        else
                file_keys(p, true, file_gone_usage);
}

static void file_removed(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX], key[2 * CHP_HASH_BYTES + 1];
        if ((rc == -ERANGE || rc == -EOVERFLOW || rc == -EEXIST ||
             (rc == -ENOENT && q->kind == CHP_RS_FILE_QUARANTINE)) &&
            ++p->tries < 8) {
                /* it changed since it was read: read it again */
                oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
                obj_read(p, NS_F, oid, file_judged);
                return;
        }
        if (rc == -ECANCELED) { /* quarantined, or (expire) extended meanwhile */
                finish(p, q->kind == CHP_RS_FILE_DELETE ? CHP_EQUARANTINED : 0);
                return;
        }
        if (rc) {
                finish(p, rc == -ERANGE || rc == -EOVERFLOW || rc == -EEXIST ? -EAGAIN : rc);
                return;
        }
        if (q->kind != CHP_RS_FILE_QUARANTINE) {
                q->u.file.existed = q->u.file.removed = true;
                file_keys(p, true, file_gone_usage);
                return;
        }
        uint8_t since[8];
        chp_put_le64(since, q->u.file.now);
        chp_hex_encode(q->u.file.id, CHP_HASH_BYTES, key);
        const char *keys[] = {key};
        const char *vals[] = {(const char *)since};
        size_t lens[] = {8};
        rop_write(p, NS_I, "quarantine");
        rados_write_op_omap_set(p->op.w, keys, vals, lens, 1);
        rop_go(p, quarantine_listed);
}

static void lift_done(struct chp_rstate_priv *p, int rc)
{
        if (rc == -ECANCELED || rc == -ENOENT) {
                finish(p, -ENOENT); /* not quarantined */
                return;
        }
        if (rc) {
                finish(p, rc);
                return;
        }
        char key[2 * CHP_HASH_BYTES + 1];
        chp_hex_encode(p->req->u.file.id, CHP_HASH_BYTES, key);
        const char *keys[] = {key};
        rop_write(p, NS_I, "quarantine");
        rados_write_op_omap_rm_keys(p->op.w, keys, 1);
        rop_go(p, chunk_done);
}

/* ---- index pages ------------------------------------------------------------------------- */

static void page_done(struct chp_rstate_priv *p, int rc)
{
        struct chp_rstate_req *q = p->req;
        if (rc == 0 && p->op.omap_rv < 0)
                rc = p->op.omap_rv;
        if (rc == -ENOENT)
                rc = 0; /* no object: no keys */
        char *key, *val;
        size_t klen, vlen;
        while (rc == 0 && p->op.oit &&
               rados_omap_get_next2(p->op.oit, &key, &val, &klen, &vlen) == 0 && key) {
                if (klen >= CHP_RSTATE_KEY_MAX || q->u.page.n >= q->u.page.max) {
                        rc = CHP_ECORRUPT; /* not a key this design writes */
                        break;
                }
                struct chp_rstate_entry *e = &q->u.page.entries[q->u.page.n++];
                memcpy(e->key, key, klen);
                e->key[klen] = 0;
                e->val_len = (uint8_t)(vlen < sizeof(e->val) ? vlen : sizeof(e->val));
                if (e->val_len) /* an index key's value is empty: val may be NULL */
                        memcpy(e->val, val, e->val_len);
        }
        q->u.page.more = rc == 0 && p->op.omore;
        if (rc) {
                free(q->u.page.entries);
                q->u.page.entries = NULL;
                q->u.page.n = 0;
        }
        finish(p, rc);
}

static int page_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        int ns = NS_I;
        const char *t = q->u.page.tenant ? q->u.page.tenant : "";
        size_t tlen = strnlen(t, CHP_TENANT_MAX + 1);
        q->u.page.entries = NULL;
        q->u.page.n = 0;
        q->u.page.more = false;
        if (q->u.page.max == 0 || q->u.page.max > CHP_RSTATE_PAGE_MAX || tlen > CHP_TENANT_MAX)
                return -EINVAL;
        switch (q->u.page.index) {
        case CHP_RS_INDEX_UPLOAD_CHUNKS:
                ns = NS_U;
                oid_hex(q->u.page.id, CHP_UPLOAD_ID_BYTES, oid);
                break;
        case CHP_RS_INDEX_EXP:
        case CHP_RS_INDEX_CEXP:
                shard_oid(q->u.page.index == CHP_RS_INDEX_EXP ? "exp" : "cexp", &q->u.page.shard,
                          oid);
                break;
        case CHP_RS_INDEX_LIST:
                list_oid(t, tlen, oid);
                break;
        case CHP_RS_INDEX_QUARANTINE:
                snprintf(oid, sizeof(oid), "quarantine");
                break;
        default:
                return -EINVAL;
        }
        if (!(q->u.page.entries = calloc(q->u.page.max, sizeof(*q->u.page.entries))))
                return -ENOMEM;
        rop_read(p, ns, oid);
        p->op.omap_rv = 0;
        p->op.omore = 0;
        rados_read_op_omap_get_vals2(p->op.r, q->u.page.after ? q->u.page.after : "", NULL,
                                     q->u.page.max, &p->op.oit, &p->op.omore, &p->op.omap_rv);
        rop_go(p, page_done);
        return 0;
}

int file_start(struct chp_rstate_priv *p)
{
        struct chp_rstate_req *q = p->req;
        char oid[OID_MAX];
        struct chp_rec_file f;
        if (q->kind == CHP_RS_INDEX_PAGE)
                return page_start(p);
        q->u.file.existed = q->u.file.extended = q->u.file.removed = false;
        q->u.file.since = 0;
        q->u.file.got = q->u.file.got_meta = NULL;
        q->u.file.got_len = q->u.file.got_meta_len = 0;
        oid_hex(q->u.file.id, CHP_HASH_BYTES, oid);
        switch (q->kind) {
        case CHP_RS_FILE_PUT:
                if (!q->u.file.rec || chp_rec_file_parse(q->u.file.rec, q->u.file.rec_len, &f) < 0)
                        return -EINVAL;
                file_fields(p, &f);
                if (p->flags & RS_SKIP_KEYS)
                        later(p, 0, file_create, 0);
                else
                        file_keys(p, false, file_create);
                return 0;
        case CHP_RS_FILE_GET:
                obj_read(p, NS_F, oid, file_got);
                return 0;
        case CHP_RS_FILE_DELETE:
        case CHP_RS_FILE_EXPIRE:
        case CHP_RS_FILE_QUARANTINE:
                obj_read(p, NS_F, oid, file_judged);
                return 0;
        case CHP_RS_FILE_LIFT:
                rop_write(p, NS_F, oid);
                rados_write_op_cmpxattr(p->op.w, "q", LIBRADOS_CMPXATTR_OP_NE, "", 0);
                rados_write_op_remove(p->op.w);
                rop_go(p, lift_done);
                return 0;
        default:
                return -EINVAL;
        }
}
