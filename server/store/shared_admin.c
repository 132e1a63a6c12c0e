/* shared_admin.c — the administration reads of store.h over the shared state (docs/scale-out.md,
 * "What lives where"): files and uploads listings, the tenants walk, the quarantine list and the
 * store's counts. Synchronous librados calls on the rstate handle's I/O contexts (rs_io), and the
 * records read as lookups waited for (shared_lookup_wait): for admin threads that may block.
 *
 * Files are listed from the index objects i/list.<tenant hex> (omap <~created 16 hex><id hex>,
 * ascending = newest first, then ids ascending). store.h's order is (created, id) descending, so
 * each list object is read from the cursor's created on, until max + 1 entries are taken and the
 * created second of the last one is read whole; the candidates of every list object are then
 * sorted and the page is cut from them. Every tenant's listing merges every list object of
 * namespace i.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>

#include "bytes.h"
#include "hash.h"
#include "rados_state_int.h"
#include "shared_int.h"

#define OMAP_PAGE 256
#define LIST_KEY  (HEX16 - 1 + 2 * CHP_HASH_BYTES) /* <~created 16 hex><id hex 64> */

/* ---- helpers ----------------------------------------------------------------------------- */

/* Calls fn(ctx, oid) for each object of namespace ns, in the listing's (hash) order; fn's nonzero
 * return stops the walk and is returned. */
int shared_each_object(struct store_shared *sh, int ns, int (*fn)(void *ctx, const char *oid),
                       void *ctx)
{
        rados_list_ctx_t l;
        int rc = rados_nobjects_list_open(rs_io(sh->st, ns), &l);
        if (rc)
                return rc;
        const char *oid, *loc, *nsp;
        while ((rc = rados_nobjects_list_next(l, &oid, &loc, &nsp)) == 0) {
                char name[OID_MAX];
                if (strlen(oid) >= sizeof(name))
                        continue; /* not a name this design writes */
                memcpy(name, oid, strlen(oid) + 1);
                if ((rc = fn(ctx, name)))
                        break;
        }
        rados_nobjects_list_close(l);
        return rc == -ENOENT ? 0 : rc; /* -ENOENT: the listing's end */
}

/* Calls fn(ctx, key, val, vlen) for each omap key of i/<oid> after `after` ("" from the first),
 * in key order, in pages of OMAP_PAGE; fn returns 0 to go on, 1 to stop (0 returned), or a
 * negative code (returned). No object: no keys. */
static int each_key(struct store_shared *sh, const char *oid, const char *after,
                    int (*fn)(void *ctx, const char *key, const char *val, size_t vlen), void *ctx)
{
        char last[CHP_RSTATE_KEY_MAX + 1];
        snprintf(last, sizeof(last), "%s", after);
        for (;;) {
                rados_read_op_t op = rados_create_read_op();
                if (!op)
                        return -ENOMEM;
                rados_omap_iter_t it = NULL;
                unsigned char more = 0;
                int rv = 0;
                rados_read_op_omap_get_vals2(op, last, NULL, OMAP_PAGE, &it, &more, &rv);
                int rc = rados_read_op_operate(op, rs_io(sh->st, NS_I), oid, 0);
                if (!rc)
                        rc = rv;
                char *key, *val;
                size_t klen, vlen, got = 0;
                while (!rc && it && rados_omap_get_next2(it, &key, &val, &klen, &vlen) == 0 &&
                       key) {
                        if (klen > CHP_RSTATE_KEY_MAX) {
                                rc = CHP_ECORRUPT; /* not a key this design writes */
                                break;
                        }
                        memcpy(last, key, klen);
                        last[klen] = '\0';
                        got++;
                        rc = fn(ctx, last, val, vlen);
                }
                if (it)
                        rados_omap_get_end(it);
                rados_release_read_op(op);
                if (rc == -ENOENT || rc == 1)
                        return 0;
                if (rc || !more || !got)
                        return rc;
        }
}

/* 0 when the hex name decodes to exactly n bytes. */
static int unhex(const char *s, size_t len, uint8_t *out, size_t n)
{
        return len == 2 * n && chp_hex_decode(s, len, out, n) == 0 ? 0 : -EINVAL;
}

static void cursor_of(uint64_t created, const uint8_t *id, size_t idlen,
                      uint8_t c[CHP_LIST_CURSOR_BYTES])
{
        memset(c, 0, CHP_LIST_CURSOR_BYTES);
        chp_put_be64(c, created);
        memcpy(c + 8, id, idlen);
}

/* ---- files ------------------------------------------------------------------------------- */

struct cand {
        uint8_t c[CHP_LIST_CURSOR_BYTES]; /* created (big-endian) and id: the listing's order */
};

static int cand_desc(const void *x, const void *y)
{
        return memcmp(((const struct cand *)y)->c, ((const struct cand *)x)->c,
                      CHP_LIST_CURSOR_BYTES);
}

struct flist {
        struct store_shared *sh;
        const uint8_t *cursor; /* NULL: from the newest */
        size_t max;
        struct cand *v; /* candidates so far; sorted, at most max + 1, between list objects */
        size_t n, cap;
        /* the list object being read */
        size_t taken;
        bool bounded;
        uint64_t bound; /* once bounded: an older created second ends this object */
};

static int flist_key(void *ctx, const char *key, const char *val, size_t vlen)
{
        struct flist *l = ctx;
        (void)val;
        (void)vlen;
        uint64_t inv;
        uint8_t id[CHP_HASH_BYTES];
        struct cand c;
        if (strlen(key) != LIST_KEY || !unhex16((const uint8_t *)key, HEX16 - 1, &inv) ||
            unhex(key + HEX16 - 1, 2 * CHP_HASH_BYTES, id, CHP_HASH_BYTES))
                return 0; /* not a listing key: verify's business */
        uint64_t created = ~inv;
        if (l->bounded && created < l->bound)
                return 1; /* every entry that can be on the page is taken */
        cursor_of(created, id, CHP_HASH_BYTES, c.c);
        if (l->cursor && memcmp(c.c, l->cursor, CHP_LIST_CURSOR_BYTES) >= 0)
                return 0;
        if (l->n == l->cap) {
                size_t cap = l->cap ? 2 * l->cap : 2 * (l->max + 1);
                struct cand *v = realloc(l->v, cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                l->v = v;
                l->cap = cap;
        }
        l->v[l->n++] = c;
        if (++l->taken == l->max + 1 && (!l->bounded || created > l->bound)) {
                l->bounded = true;
                l->bound = created;
        }
        return 0;
}

/* Reads the candidates of one list object into l, then keeps the best max + 1 of all. */
static int flist_object(struct flist *l, const char *oid)
{
        char after[HEX16] = "";
        if (l->cursor) /* keys from the cursor's created second on (older ones follow it) */
                hex16(~chp_get_be64(l->cursor), after);
        l->taken = 0;
        /* the page so far: an object's entries older than its last are not needed */
        l->bounded = l->n == l->max + 1;
        l->bound = l->bounded ? chp_get_be64(l->v[l->max].c) : 0;
        int rc = each_key(l->sh, oid, after, flist_key, l);
        if (rc)
                return rc;
        if (l->n > 1) /* v is NULL while nothing is taken */
                qsort(l->v, l->n, sizeof(*l->v), cand_desc);
        if (l->n > l->max + 1)
                l->n = l->max + 1;
        return 0;
}

static int flist_each(void *ctx, const char *oid)
{
        return strncmp(oid, "list.", 5) == 0 ? flist_object(ctx, oid) : 0;
}

int shared_files_list(struct chp_store *s, const char *tenant,
                      const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_file_entry *out,
                      size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES])
{
        struct store_shared *sh = s->shared;
        *n = 0;
        *more = false;
        size_t tlen = tenant ? strnlen(tenant, CHP_TENANT_MAX + 1) : 0;
        if (tlen > CHP_TENANT_MAX || max == 0 || max > CHP_LIST_MAX)
                return -EINVAL;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        struct flist l = {.sh = sh, .cursor = cursor, .max = max};
        if (tenant) {
                char oid[OID_MAX];
                list_oid(tenant, tlen, oid);
                rc = flist_object(&l, oid);
        } else {
                rc = shared_each_object(sh, NS_I, flist_each, &l);
        }
        size_t got = 0, take = l.n < max ? l.n : max;
        for (size_t i = 0; !rc && i < take; i++) {
                struct chp_store_lookup q = {.kind = CHP_LOOKUP_FILE};
                memcpy(q.id, l.v[i].c + 8, CHP_HASH_BYTES);
                int r = shared_lookup_wait(s, &q);
                if (r == -ENOENT || r == CHP_EQUARANTINED)
                        continue; /* deleted since its key was read (or the key outlived it) */
                if (r) {
                        rc = r;
                        break;
                }
                struct chp_file_entry *e = &out[got++];
                memset(e, 0, sizeof(*e));
                memcpy(e->id, q.id, CHP_HASH_BYTES);
                e->info = q.info;
        }
        if (!rc) {
                *n = got;
                *more = l.n > max;
                if (*more)
                        memcpy(next, l.v[max - 1].c, CHP_LIST_CURSOR_BYTES);
        }
        free(l.v);
        shared_op_end(sh);
        return rc ? rs_unavailable(rc) : 0;
}

/* ---- uploads ----------------------------------------------------------------------------- */

struct ulist {
        struct chp_store *s;
        const char *tenant;
        const uint8_t *cursor;
        size_t max;
        struct chp_upload *v; /* 2 (max + 1): sorted and cut to max + 1 when full */
        size_t n;
};

static int upload_desc(const void *x, const void *y)
{
        const struct chp_upload *a = x, *b = y;
        uint8_t ca[CHP_LIST_CURSOR_BYTES], cb[CHP_LIST_CURSOR_BYTES];
        cursor_of(a->created, a->id, CHP_UPLOAD_ID_BYTES, ca);
        cursor_of(b->created, b->id, CHP_UPLOAD_ID_BYTES, cb);
        return memcmp(cb, ca, CHP_LIST_CURSOR_BYTES);
}

static void ulist_cut(struct ulist *l)
{
        qsort(l->v, l->n, sizeof(*l->v), upload_desc);
        if (l->n > l->max + 1)
                l->n = l->max + 1;
}

static int ulist_each(void *ctx, const char *oid)
{
        struct ulist *l = ctx;
        struct chp_upload *u = &l->v[l->n];
        struct chp_store_lookup q = {.kind = CHP_LOOKUP_UPLOAD, .upload = u};
        if (unhex(oid, strlen(oid), q.id, CHP_UPLOAD_ID_BYTES))
                return 0; /* an offset object (<id>.t), or not an upload's */
        int rc = shared_lookup_wait(l->s, &q);
        if (rc == -ENOENT)
                return 0; /* gone since the listing */
        if (rc)
                return rc;
        if (l->tenant && strcmp(u->tenant, l->tenant) != 0)
                return 0;
        uint8_t c[CHP_LIST_CURSOR_BYTES];
        cursor_of(u->created, u->id, CHP_UPLOAD_ID_BYTES, c);
        if (l->cursor && memcmp(c, l->cursor, CHP_LIST_CURSOR_BYTES) >= 0)
                return 0;
        if (++l->n == 2 * (l->max + 1))
                ulist_cut(l);
        return 0;
}

int shared_uploads_list(struct chp_store *s, const char *tenant,
                        const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_upload *out,
                        size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES])
{
        struct store_shared *sh = s->shared;
        *n = 0;
        *more = false;
        size_t tlen = tenant ? strnlen(tenant, CHP_TENANT_MAX + 1) : 0;
        if (tlen > CHP_TENANT_MAX || max == 0 || max > CHP_LIST_MAX)
                return -EINVAL;
        struct ulist l = {.s = s, .tenant = tenant, .cursor = cursor, .max = max};
        if (!(l.v = calloc(2 * (max + 1), sizeof(*l.v))))
                return -ENOMEM;
        int rc = shared_op_begin(sh);
        if (!rc) {
                rc = shared_each_object(sh, NS_U, ulist_each, &l);
                shared_op_end(sh);
        }
        if (!rc) {
                ulist_cut(&l);
                *n = l.n < max ? l.n : max;
                memcpy(out, l.v, *n * sizeof(*out));
                *more = l.n > max;
                if (*more)
                        cursor_of(out[max - 1].created, out[max - 1].id, CHP_UPLOAD_ID_BYTES, next);
        }
        free(l.v);
        return rc ? rs_unavailable(rc) : 0;
}

/* ---- tenants ----------------------------------------------------------------------------- */

struct tnames {
        char (*v)[CHP_TENANT_MAX + 1];
        size_t n, cap;
};

static int tname_each(void *ctx, const char *oid)
{
        struct tnames *t = ctx;
        size_t len = strlen(oid);
        if (len == 0 || len % 2 || len / 2 > CHP_TENANT_MAX)
                return 0;
        if (t->n == t->cap) {
                size_t cap = t->cap ? 2 * t->cap : 64;
                void *v = realloc(t->v, cap * sizeof(*t->v));
                if (!v)
                        return -ENOMEM;
                t->v = v;
                t->cap = cap;
        }
        if (unhex(oid, len, (uint8_t *)t->v[t->n], len / 2))
                return 0;
        t->v[t->n][len / 2] = '\0';
        if (strlen(t->v[t->n]) == len / 2) /* no NUL inside */
                t->n++;
        return 0;
}

static int tname_cmp(const void *x, const void *y)
{
        return strcmp(x, y);
}

int shared_tenants_each(struct chp_store *s,
                        int (*fn)(void *ctx, const char *tenant, const struct chp_tenant_usage *u),
                        void *ctx)
{
        struct store_shared *sh = s->shared;
        struct tnames t = {0};
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        rc = shared_each_object(sh, NS_T, tname_each, &t);
        shared_op_end(sh);
        if (!rc && t.n > 1)
                qsort(t.v, t.n, sizeof(*t.v), tname_cmp);
        if (rc)
                rc = rs_unavailable(rc);
        for (size_t i = 0; !rc && i < t.n; i++) {
                struct chp_tenant_usage u;
                rc = shared_tenant_usage(s, t.v[i], &u);
                if (rc == -ENOENT)
                        rc = 0; /* gone since the listing */
                else if (!rc)
                        rc = fn(ctx, t.v[i], &u); /* its nonzero return ends the walk */
        }
        free(t.v);
        return rc;
}

/* ---- the quarantine list ----------------------------------------------------------------- */

int shared_quarantined(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint64_t *since)
{
        struct store_shared *sh = s->shared;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        char key[2 * CHP_HASH_BYTES + 1];
        chp_hex_encode(id, CHP_HASH_BYTES, key);
        rados_read_op_t op = rados_create_read_op();
        if (!op) {
                shared_op_end(sh);
                return -ENOMEM;
        }
        rados_omap_iter_t it = NULL;
        int rv = 0;
        const char *keys[] = {key};
        size_t lens[] = {2 * CHP_HASH_BYTES};
        rados_read_op_omap_get_vals_by_keys2(op, keys, 1, lens, &it, &rv);
        rc = rados_read_op_operate(op, rs_io(sh->st, NS_I), "quarantine", 0);
        if (!rc)
                rc = rv;
        char *k, *v;
        size_t klen, vlen;
        int found = 0;
        if (!rc && it && rados_omap_get_next2(it, &k, &v, &klen, &vlen) == 0 && k) {
                found = 1;
                if (since)
                        *since = vlen == 8 ? chp_get_le64((const uint8_t *)v) : 0;
        }
        if (it)
                rados_omap_get_end(it);
        rados_release_read_op(op);
        shared_op_end(sh);
        if (rc == -ENOENT)
                return 0; /* no list yet */
        return rc ? rs_unavailable(rc) : found;
}

struct qwalk {
        int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since);
        void *ctx;
        int stopped; /* fn's nonzero return */
        uint64_t count;
};

static int qwalk_key(void *ctx, const char *key, const char *val, size_t vlen)
{
        struct qwalk *q = ctx;
        uint8_t id[CHP_HASH_BYTES];
        if (unhex(key, strlen(key), id, CHP_HASH_BYTES))
                return 0;
        q->count++;
        if (!q->fn)
                return 0;
        int rc = q->fn(q->ctx, id, vlen == 8 ? chp_get_le64((const uint8_t *)val) : 0);
        if (rc) {
                q->stopped = rc;
                return 1;
        }
        return 0;
}

int shared_quarantine_each(struct chp_store *s,
                           int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since),
                           void *ctx)
{
        struct store_shared *sh = s->shared;
        struct qwalk q = {fn, ctx, 0, 0};
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        rc = each_key(sh, "quarantine", "", qwalk_key, &q);
        shared_op_end(sh);
        return rc ? rs_unavailable(rc) : q.stopped;
}

/* ---- counts ------------------------------------------------------------------------------ */

static int count_each(void *ctx, const char *oid)
{
        (void)oid;
        (*(uint64_t *)ctx)++;
        return 0;
}

static int count_upload(void *ctx, const char *oid)
{
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        if (unhex(oid, strlen(oid), id, sizeof(id)) == 0)
                (*(uint64_t *)ctx)++;
        return 0;
}

int shared_stats(struct chp_store *s, struct chp_store_stats *out)
{
        struct store_shared *sh = s->shared;
        struct chp_store_stats r = {0};
        struct qwalk q = {0};
        uint64_t fobjs = 0;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        if (!(rc = shared_each_object(sh, NS_C, count_each, &r.chunks)) &&
            !(rc = shared_each_object(sh, NS_F, count_each, &fobjs)) &&
            !(rc = shared_each_object(sh, NS_U, count_upload, &r.uploads)))
                rc = each_key(sh, "quarantine", "", qwalk_key, &q);
        shared_op_end(sh);
        if (rc)
                return rs_unavailable(rc);
        /* the file objects but the tombstones, which the quarantine list names */
        r.files = fobjs > q.count ? fobjs - q.count : 0;
        *out = r;
        return 0;
}
