/* tenants.c — each tenant's usage (bytes and files stored, incomplete uploads, bytes begun
 * today), kept in the tenants db by the writer in the same transaction as the change it counts,
 * so that a quota check in that transaction sees every upload committed before it. The empty
 * tenant (trusted callers, never under a quota) is not tracked: LMDB has no empty keys.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif

int store_usage_get(struct chp_store *s, MDB_txn *txn, const void *tenant, size_t tlen,
                    struct chp_tenant_usage *out)
{
        memset(out, 0, sizeof(*out));
        if (tlen == 0 || tlen > CHP_TENANT_MAX)
                return 0;
        MDB_val k = val(tenant, tlen), v;
        int rc = mdb_get(txn, s->db_tenants, &k, &v);
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return store_mdb_rc(rc);
        if (chp_rec_tenant_parse(v.mv_data, v.mv_size, out) < 0) {
                memset(out, 0, sizeof(*out));
                return CHP_ECORRUPT;
        }
        return 0;
}

static uint64_t add_signed(uint64_t v, int64_t d, bool *drift)
{
        if (d >= 0)
                return v > UINT64_MAX - (uint64_t)d ? UINT64_MAX : v + (uint64_t)d;
        uint64_t m = d == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-d;
        if (m > v) {
                *drift = true;
                return 0;
        }
        return v - m;
}

bool store_usage_apply(struct chp_tenant_usage *u, const struct usage_delta *d)
{
        bool drift = false;
        u->stored_bytes = add_signed(u->stored_bytes, d->stored_bytes, &drift);
        u->files = add_signed(u->files, d->files, &drift);
        u->incomplete = add_signed(u->incomplete, d->incomplete, &drift);
        u->incomplete_bytes = add_signed(u->incomplete_bytes, d->incomplete_bytes, &drift);
        if (d->day_bytes) {
                if (u->day != d->day) {
                        u->day = d->day;
                        u->day_bytes = 0;
                }
                u->day_bytes = u->day_bytes > UINT64_MAX - d->day_bytes
                                   ? UINT64_MAX
                                   : u->day_bytes + d->day_bytes;
        }
        return drift;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

int store_quota_fits(const struct chp_tenant_usage *use, const struct chp_store_quota *q,
                     uint64_t declared, uint64_t sessions, enum chp_store_quota_hit *hit)
{
        uint64_t day_bytes = use->day == q->now / 86400 ? use->day_bytes : 0;
        if (add_sat(add_sat(use->stored_bytes, use->incomplete_bytes), declared) > q->max_stored)
                *hit = CHP_QUOTA_STORED;
        else if (sessions && add_sat(use->incomplete, sessions) > q->max_incomplete)
                *hit = CHP_QUOTA_INCOMPLETE;
        else if (add_sat(day_bytes, declared) > q->max_per_day)
                *hit = CHP_QUOTA_PER_DAY;
        return *hit == CHP_QUOTA_NONE ? 0 : CHP_EQUOTA;
}

int store_usage_add(struct chp_store *s, MDB_txn *txn, const void *tenant, size_t tlen,
                    const struct usage_delta *d)
{
        if (tlen == 0)
                return 0;
        struct chp_tenant_usage u;
        int rc = store_usage_get(s, txn, tenant, tlen, &u);
        if (rc == CHP_ECORRUPT) {
                chp_log_warn("store", "tenant usage record malformed: counted again from zero");
                rc = 0;
        }
        if (rc)
                return rc;
        if (store_usage_apply(&u, d))
                chp_log_warn("store", "tenant usage would go below zero: kept at zero");
        uint8_t rec[CHP_REC_TENANT_BYTES];
        chp_rec_tenant_encode(rec, &u);
        MDB_val k = val(tenant, tlen), v = val(rec, sizeof(rec));
        return store_mdb_rc(mdb_put(txn, s->db_tenants, &k, &v, 0));
}

void store_usage_of_upload(const struct chp_rec_upload *u, int sign, struct usage_delta *d)
{
        if (u->flags & CHP_REC_UPLOAD_COMPLETE)
                return;
        uint64_t known = u->declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : u->declared;
        d->incomplete += sign;
        d->incomplete_bytes += sign * (int64_t)known;
}

/* One record's part of its tenant's usage: a file (files) or an upload record; 1 when the
 * record does not parse. */
static int usage_of_record(const MDB_val *v, bool files, uint64_t now, char *tenant, size_t *tlen,
                           struct usage_delta *d)
{
        struct chp_rec_file f;
        struct chp_rec_upload u;
        memset(d, 0, sizeof(*d));
        if (files) {
                if (parse_file(v, &f) || f.size > INT64_MAX)
                        return 1;
                *tlen = f.tenant_len;
                memcpy(tenant, f.tenant, f.tenant_len);
                d->stored_bytes = (int64_t)f.size;
                d->files = 1;
                return 0;
        }
        if (parse_upload_rec(v, &u) ||
            (u.declared != CHP_UPLOAD_SIZE_UNKNOWN && u.declared > INT64_MAX))
                return 1;
        *tlen = u.tenant_len;
        memcpy(tenant, u.tenant, u.tenant_len);
        store_usage_of_upload(&u, +1, d);
        /* uploads begun today, as far as the records still tell */
        if (u.created / 86400 == now / 86400 && u.declared != CHP_UPLOAD_SIZE_UNKNOWN) {
                d->day = now / 86400;
                d->day_bytes = u.declared;
        }
        return 0;
}

typedef int (*usage_fn)(void *ctx, const char *tenant, size_t tlen, const struct usage_delta *d);

/* Calls fn with every file's and every upload record's part of its tenant's usage, in txn;
 * counts the records that do not parse into *skipped. */
static int usage_walk(struct chp_store *s, MDB_txn *txn, uint64_t now, usage_fn fn, void *ctx,
                      uint64_t *counted, uint64_t *skipped)
{
        for (int pass = 0; pass < 2; pass++) {
                MDB_cursor *cur;
                MDB_val k, v;
                int err = 0; /* a store code, apart from LMDB's rc */
                int rc = mdb_cursor_open(txn, pass ? s->db_uploads : s->db_files, &cur);
                if (rc)
                        return store_mdb_rc(rc);
                /* fn may write to another db: LMDB keeps a cursor valid across writes to other
                 * dbs of its transaction */
                int op = MDB_FIRST;
                while (!err && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                        op = MDB_NEXT;
                        char tenant[CHP_TENANT_MAX];
                        size_t tlen = 0;
                        struct usage_delta d;
                        if (usage_of_record(&v, !pass, now, tenant, &tlen, &d))
                                (*skipped)++;
                        else if (!(err = fn(ctx, tenant, tlen, &d)))
                                (*counted)++;
                }
                mdb_cursor_close(cur);
                if (err)
                        return err;
                if (rc != MDB_NOTFOUND)
                        return store_mdb_rc(rc);
        }
        return 0;
}

struct rebuild {
        struct chp_store *s;
        MDB_txn *txn;
};

static int rebuild_one(void *ctx, const char *tenant, size_t tlen, const struct usage_delta *d)
{
        struct rebuild *r = ctx;
        return store_usage_add(r->s, r->txn, tenant, tlen, d);
}

int store_usage_rebuild(struct chp_store *s, MDB_txn *txn, uint64_t now)
{
        uint64_t skipped = 0, counted = 0;
        struct rebuild r = {.s = s, .txn = txn};
        int rc = usage_walk(s, txn, now, rebuild_one, &r, &counted, &skipped);
        if (rc)
                return rc;
        if (counted)
                chp_log_info("store", "tenant usage counted from %llu files and uploads",
                             (unsigned long long)counted);
        if (skipped)
                chp_log_warn("store", "tenant usage: %llu malformed records not counted",
                             (unsigned long long)skipped);
        return 0;
}

/* The sum for tenant in the sorted list, added if new; NULL when out of memory. */
static struct tenant_sum *sum_of(struct usage_sums *l, const char *tenant, size_t tlen)
{
        size_t lo = 0, hi = l->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const struct tenant_sum *t = &l->t[mid];
                int c = memcmp(t->name, tenant, t->len < tlen ? t->len : tlen);
                if (c == 0)
                        c = t->len < tlen ? -1 : t->len > tlen;
                if (c == 0)
                        return &l->t[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 8;
                struct tenant_sum *n = realloc(l->t, cap * sizeof(*n));
                if (!n)
                        return NULL;
                l->t = n;
                l->cap = cap;
        }
        memmove(&l->t[lo + 1], &l->t[lo], (l->n - lo) * sizeof(*l->t));
        l->n++;
        struct tenant_sum *t = &l->t[lo];
        memset(t, 0, sizeof(*t));
        memcpy(t->name, tenant, tlen);
        t->len = (uint8_t)tlen;
        return t;
}

static int count_one(void *ctx, const char *tenant, size_t tlen, const struct usage_delta *d)
{
        if (tlen == 0)
                return 0;
        struct tenant_sum *t = sum_of(ctx, tenant, tlen);
        if (!t)
                return -ENOMEM;
        /* the parts are never negative here (+1 per record) */
        t->u.stored_bytes += (uint64_t)d->stored_bytes;
        t->u.files += (uint64_t)d->files;
        t->u.incomplete += (uint64_t)d->incomplete;
        t->u.incomplete_bytes += (uint64_t)d->incomplete_bytes;
        return 0;
}

int store_usage_count(struct chp_store *s, MDB_txn *txn, struct usage_sums *out)
{
        uint64_t counted = 0, skipped = 0;
        return usage_walk(s, txn, 0, count_one, out, &counted, &skipped);
}

struct tenant_sum *store_usage_find(struct usage_sums *l, const void *tenant, size_t tlen)
{
        return sum_of(l, tenant, tlen);
}

void store_usage_sums_free(struct usage_sums *l)
{
        free(l->t);
        *l = (struct usage_sums){0};
}

int chp_store_tenant_usage(struct chp_store *s, const char *tenant, struct chp_tenant_usage *out)
{
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_tenant_usage(s, tenant, out);
#endif
        memset(out, 0, sizeof(*out));
        size_t tlen = tenant ? strnlen(tenant, CHP_TENANT_MAX + 1) : 0;
        if (tlen > CHP_TENANT_MAX)
                return -EINVAL;
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        struct chp_tenant_usage u;
        rc = store_usage_get(s, txn, tenant, tlen, &u);
        mdb_txn_abort(txn);
        if (!rc)
                *out = u;
        return rc;
}
