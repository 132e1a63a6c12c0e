/* tenants.c — each tenant's usage (bytes and files stored, incomplete uploads, bytes begun
 * today), kept in the tenants db by the writer in the same transaction as the change it counts,
 * so that a quota check in that transaction sees every upload committed before it. The empty
 * tenant (trusted callers, never under a quota) is not tracked: LMDB has no empty keys.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "store_int.h"

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
        bool drift = false;
        u.stored_bytes = add_signed(u.stored_bytes, d->stored_bytes, &drift);
        u.files = add_signed(u.files, d->files, &drift);
        u.incomplete = add_signed(u.incomplete, d->incomplete, &drift);
        u.incomplete_bytes = add_signed(u.incomplete_bytes, d->incomplete_bytes, &drift);
        if (d->day_bytes) {
                if (u.day != d->day) {
                        u.day = d->day;
                        u.day_bytes = 0;
                }
                u.day_bytes = u.day_bytes > UINT64_MAX - d->day_bytes ? UINT64_MAX
                                                                      : u.day_bytes + d->day_bytes;
        }
        if (drift)
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

int store_usage_rebuild(struct chp_store *s, MDB_txn *txn, uint64_t now)
{
        uint64_t skipped = 0, counted = 0;
        for (int pass = 0; pass < 2; pass++) {
                MDB_cursor *cur;
                MDB_val k, v;
                int err = 0; /* a store code, apart from LMDB's rc */
                int rc = mdb_cursor_open(txn, pass ? s->db_uploads : s->db_files, &cur);
                if (rc)
                        return store_mdb_rc(rc);
                /* the cursor reads one db and the usage is written to another: LMDB keeps a
                 * cursor valid across writes to other dbs of its transaction */
                int op = MDB_FIRST;
                while (!err && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                        op = MDB_NEXT;
                        char tenant[CHP_TENANT_MAX];
                        size_t tlen = 0;
                        struct usage_delta d;
                        if (usage_of_record(&v, !pass, now, tenant, &tlen, &d))
                                skipped++;
                        else if (!(err = store_usage_add(s, txn, tenant, tlen, &d)))
                                counted++;
                }
                mdb_cursor_close(cur);
                if (err)
                        return err;
                if (rc != MDB_NOTFOUND)
                        return store_mdb_rc(rc);
        }
        if (counted)
                chp_log_info("store", "tenant usage counted from %llu files and uploads",
                             (unsigned long long)counted);
        if (skipped)
                chp_log_warn("store", "tenant usage: %llu malformed records not counted",
                             (unsigned long long)skipped);
        return 0;
}

int chp_store_tenant_usage(struct chp_store *s, const char *tenant, struct chp_tenant_usage *out)
{
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
