/* admin.c — what the operator's admin face asks of the store (store.h, "administration"): the
 * files index by (tenant, created, id) that listings page through, the quarantine list, the
 * tenants walk and the live scrub.
 *
 * The fileindex db holds two keys per file, both with an empty value:
 *   'a' created(be64) id(32)                       every file
 *   't' tenant_len(1) tenant created(be64) id(32)  the files of one tenant ("" included)
 * so that a page of either listing is a cursor walk backwards from a key, never a scan.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "log.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#define SHARED(s, call)                                                                            \
        do {                                                                                       \
                if ((s)->shared)                                                                   \
                        return call;                                                               \
        } while (0)
#else
#define SHARED(s, call) ((void)(s))
#endif

#define INDEX_KEY_MAX (2 + CHP_TENANT_MAX + CHP_LIST_CURSOR_BYTES)
#define SCRUB_BATCH   256 /* chunk addresses taken from one read snapshot */
#define SCRUB_SLICE_S 0.1 /* longest sleep between checks of the stop flag */

/* The key prefix of a listing: every file (tenant NULL) or one tenant's. */
static size_t index_prefix(uint8_t *k, const void *tenant, size_t tlen, bool all)
{
        if (all) {
                k[0] = 'a';
                return 1;
        }
        k[0] = 't';
        k[1] = (uint8_t)tlen;
        memcpy(k + 2, tenant, tlen);
        return 2 + tlen;
}

static size_t index_key(uint8_t *k, const void *tenant, size_t tlen, bool all, uint64_t created,
                        const uint8_t id[CHP_HASH_BYTES])
{
        size_t n = index_prefix(k, tenant, tlen, all);
        chp_put_be64(k + n, created);
        memcpy(k + n + 8, id, CHP_HASH_BYTES);
        return n + CHP_LIST_CURSOR_BYTES;
}

int store_index_file(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES],
                     const void *tenant, size_t tlen, uint64_t created, bool add)
{
        uint8_t k[INDEX_KEY_MAX];
        for (int all = 0; all < 2; all++) {
                MDB_val key = val(k, index_key(k, tenant, tlen, all, created, id)), v = val("", 0);
                int rc = add ? mdb_put(txn, s->db_fileindex, &key, &v, 0)
                             : mdb_del(txn, s->db_fileindex, &key, NULL);
                if (rc && !(rc == MDB_NOTFOUND && !add))
                        return store_mdb_rc(rc);
        }
        return 0;
}

int store_index_rebuild(struct chp_store *s, MDB_txn *txn)
{
        MDB_cursor *cur;
        int rc = mdb_cursor_open(txn, s->db_files, &cur);
        if (rc)
                return store_mdb_rc(rc);
        MDB_val k, v;
        int op = MDB_FIRST, err = 0;
        uint64_t n = 0;
        while (!err && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_file f;
                if (k.mv_size != CHP_HASH_BYTES || parse_file(&v, &f) != 0)
                        continue; /* verify reports it */
                err = store_index_file(s, txn, k.mv_data, f.tenant, f.tenant_len, f.created, true);
                n++;
        }
        mdb_cursor_close(cur);
        if (!err && n)
                chp_log_info("store", "indexed %llu files for listings", (unsigned long long)n);
        return err ? err : rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

int store_quarantine_check(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES])
{
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        int rc = mdb_get(txn, s->db_quarantine, &k, &v);
        if (rc == 0)
                return CHP_EQUARANTINED;
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

int store_apply_quarantine(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        const uint8_t *id = req->u.quarantine.file_id;
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        req->u.quarantine.deleted = false;
        if (req->u.quarantine.lift)
                return store_mdb_rc(mdb_del(txn, s->db_quarantine, &k, NULL));
        uint8_t since[8];
        chp_put_be64(since, (uint64_t)time(NULL));
        v = val(since, sizeof(since));
        int rc = mdb_put(txn, s->db_quarantine, &k, &v, MDB_NOOVERWRITE);
        if (rc && rc != MDB_KEYEXIST) /* already there: keep the first time */
                return store_mdb_rc(rc);
        rc = store_file_delete(s, txn, id, NULL);
        if (rc == 0)
                req->u.quarantine.deleted = true;
        else if (rc != -ENOENT)
                return rc;
        /* an upload writing it now would only be refused at its commit: drop it at once */
        uint8_t up[CHP_UPLOAD_ID_BYTES];
        rc = mdb_get(txn, s->db_pending, &k, &v);
        if (rc == 0 && v.mv_size == CHP_UPLOAD_ID_BYTES) {
                memcpy(up, v.mv_data, CHP_UPLOAD_ID_BYTES);
                rc = store_upload_delete(s, txn, up, NULL);
                return rc == -ENOENT ? 0 : rc;
        }
        return rc == MDB_NOTFOUND || rc == 0 ? 0 : store_mdb_rc(rc);
}

/* ---- listings ------------------------------------------------------------------------------ */

int chp_store_files_list(struct chp_store *s, const char *tenant,
                         const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_file_entry *out,
                         size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES])
{
        SHARED(s, shared_files_list(s, tenant, cursor, out, max, n, more, next));
        *n = 0;
        *more = false;
        size_t tlen = tenant ? strnlen(tenant, CHP_TENANT_MAX + 1) : 0;
        if (tlen > CHP_TENANT_MAX || max == 0 || max > CHP_LIST_MAX)
                return -EINVAL;
        uint8_t seek[INDEX_KEY_MAX];
        size_t plen = index_prefix(seek, tenant, tlen, tenant == NULL);
        if (cursor)
                memcpy(seek + plen, cursor, CHP_LIST_CURSOR_BYTES);
        else
                memset(seek + plen, 0xff, CHP_LIST_CURSOR_BYTES);
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, s->db_fileindex, &cur))) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        /* the first key below seek: SET_RANGE finds the first at or above it */
        MDB_val k = val(seek, plen + CHP_LIST_CURSOR_BYTES), v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        rc = rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
             : rc == 0          ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                                : rc;
        size_t got = 0;
        int err = 0;
        while (rc == 0 && k.mv_size == plen + CHP_LIST_CURSOR_BYTES &&
               memcmp(k.mv_data, seek, plen) == 0) {
                if (got == max) {
                        *more = true;
                        break;
                }
                const uint8_t *tail = (const uint8_t *)k.mv_data + plen;
                struct chp_file_entry *e = &out[got];
                memset(e, 0, sizeof(*e));
                memcpy(e->id, tail + 8, CHP_HASH_BYTES);
                MDB_val fk = val(e->id, CHP_HASH_BYTES), fv;
                struct chp_rec_file f;
                if ((err = store_mdb_rc(mdb_get(txn, s->db_files, &fk, &fv))) ||
                    (err = parse_file(&fv, &f)))
                        break; /* an index entry without its file: CHP_ECORRUPT for verify */
                memcpy(e->info.tenant, f.tenant, f.tenant_len);
                e->info.tenant[f.tenant_len] = '\0';
                e->info.created = f.created;
                e->info.expires = f.expires;
                e->info.size = f.size;
                memcpy(next, tail, CHP_LIST_CURSOR_BYTES);
                got++;
                rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        if (err)
                return err == -ENOENT ? CHP_ECORRUPT : err;
        if (rc && rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        *n = got;
        return 0;
}

static void upload_cursor(const struct chp_upload *u, uint8_t c[CHP_LIST_CURSOR_BYTES])
{
        memset(c, 0, CHP_LIST_CURSOR_BYTES);
        chp_put_be64(c, u->created);
        memcpy(c + 8, u->id, CHP_UPLOAD_ID_BYTES);
}

int chp_store_uploads_list(struct chp_store *s, const char *tenant,
                           const uint8_t cursor[CHP_LIST_CURSOR_BYTES], struct chp_upload *out,
                           size_t max, size_t *n, bool *more, uint8_t next[CHP_LIST_CURSOR_BYTES])
{
        SHARED(s, shared_uploads_list(s, tenant, cursor, out, max, n, more, next));
        *n = 0;
        *more = false;
        size_t tlen = tenant ? strnlen(tenant, CHP_TENANT_MAX + 1) : 0;
        if (tlen > CHP_TENANT_MAX || max == 0 || max > CHP_LIST_MAX)
                return -EINVAL;
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, s->db_uploads, &cur))) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        /* out is kept sorted newest first; a record goes in when it is below the cursor and
         * newer than the page's last (binary search, then a move) */
        size_t got = 0;
        bool over = false;
        MDB_val k, v;
        int op = MDB_FIRST;
        uint8_t key[CHP_LIST_CURSOR_BYTES], mid[CHP_LIST_CURSOR_BYTES];
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_upload r;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES || parse_upload_rec(&v, &r) != 0)
                        continue;
                if (tenant && (r.tenant_len != tlen || memcmp(r.tenant, tenant, tlen) != 0))
                        continue;
                struct chp_upload u;
                chp_rec_upload_to_public(k.mv_data, &r, &u);
                upload_cursor(&u, key);
                if (cursor && memcmp(key, cursor, CHP_LIST_CURSOR_BYTES) >= 0)
                        continue;
                size_t lo = 0, hi = got;
                while (lo < hi) {
                        size_t m = (lo + hi) / 2;
                        upload_cursor(&out[m], mid);
                        if (memcmp(mid, key, CHP_LIST_CURSOR_BYTES) > 0)
                                lo = m + 1;
                        else
                                hi = m;
                }
                if (lo == max) {
                        over = true;
                        continue;
                }
                if (got == max)
                        over = true;
                size_t keep = got < max ? got : max - 1;
                memmove(&out[lo + 1], &out[lo], (keep - lo) * sizeof(out[0]));
                out[lo] = u;
                if (got < max)
                        got++;
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        if (rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        *n = got;
        *more = over;
        if (over)
                upload_cursor(&out[got - 1], next);
        return 0;
}

/* Calls each(ctx2, key, value) for every entry of db in one snapshot; stops at a nonzero
 * return, which it returns. */
static int walk(struct chp_store *s, MDB_dbi db,
                int (*each)(void *w, const MDB_val *k, const MDB_val *v), void *w)
{
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, db, &cur))) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        MDB_val k, v;
        int op = MDB_FIRST, err = 0;
        while (!err && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                err = each(w, &k, &v);
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        if (err)
                return err;
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

struct tenants_walk {
        int (*fn)(void *ctx, const char *tenant, const struct chp_tenant_usage *u);
        void *ctx;
};

static int tenant_one(void *w, const MDB_val *k, const MDB_val *v)
{
        const struct tenants_walk *t = w;
        struct chp_tenant_usage u;
        char name[CHP_TENANT_MAX + 1];
        if (k->mv_size == 0 || k->mv_size > CHP_TENANT_MAX ||
            chp_rec_tenant_parse(v->mv_data, v->mv_size, &u) < 0)
                return CHP_ECORRUPT;
        memcpy(name, k->mv_data, k->mv_size);
        name[k->mv_size] = '\0';
        return t->fn(t->ctx, name, &u);
}

int chp_store_tenants_each(struct chp_store *s,
                           int (*fn)(void *ctx, const char *tenant,
                                     const struct chp_tenant_usage *u),
                           void *ctx)
{
        SHARED(s, shared_tenants_each(s, fn, ctx));
        struct tenants_walk t = {fn, ctx};
        return walk(s, s->db_tenants, tenant_one, &t);
}

int chp_store_quarantined(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint64_t *since)
{
        SHARED(s, shared_quarantined(s, id, since));
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        rc = mdb_get(txn, s->db_quarantine, &k, &v);
        if (rc == 0 && since)
                *since = v.mv_size == 8 ? chp_get_be64(v.mv_data) : 0;
        mdb_txn_abort(txn);
        return rc == 0 ? 1 : rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

struct quarantine_walk {
        int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since);
        void *ctx;
};

static int quarantine_one(void *w, const MDB_val *k, const MDB_val *v)
{
        const struct quarantine_walk *q = w;
        if (k->mv_size != CHP_HASH_BYTES)
                return 0;
        return q->fn(q->ctx, k->mv_data, v->mv_size == 8 ? chp_get_be64(v->mv_data) : 0);
}

int chp_store_quarantine_each(struct chp_store *s,
                              int (*fn)(void *ctx, const uint8_t id[CHP_HASH_BYTES],
                                        uint64_t since),
                              void *ctx)
{
        SHARED(s, shared_quarantine_each(s, fn, ctx));
        struct quarantine_walk q = {fn, ctx};
        return walk(s, s->db_quarantine, quarantine_one, &q);
}

/* ---- the live scrub ------------------------------------------------------------------------ */

/* Up to SCRUB_BATCH chunk addresses after `after` (NULL: from the first) in one snapshot. */
static int scrub_batch(struct chp_store *s, const uint8_t *after, uint8_t *addrs, size_t *n)
{
        *n = 0;
        MDB_txn *txn;
        int rc = store_read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, s->db_chunks, &cur))) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        MDB_val k = val(after, CHP_HASH_BYTES), v;
        rc = mdb_cursor_get(cur, &k, &v, after ? MDB_SET_RANGE : MDB_FIRST);
        if (rc == 0 && after && k.mv_size == CHP_HASH_BYTES &&
            memcmp(k.mv_data, after, CHP_HASH_BYTES) == 0)
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        while (rc == 0 && *n < SCRUB_BATCH) {
                if (k.mv_size == CHP_HASH_BYTES)
                        memcpy(addrs + (*n)++ * CHP_HASH_BYTES, k.mv_data, CHP_HASH_BYTES);
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return rc == 0 || rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

static void scrub_problem(chp_verify_problem_fn fn, void *ctx, struct chp_scrub *p,
                          const uint8_t addr[CHP_HASH_BYTES], const char *what)
{
        atomic_fetch_add(&p->problems, 1);
        if (!fn)
                return;
        char hex[CHP_HASH_HEXBYTES], msg[160];
        chp_hex_encode(addr, CHP_HASH_BYTES, hex);
        snprintf(msg, sizeof(msg), "chunk %s: %s", hex, what);
        fn(ctx, msg);
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int chp_store_scrub(struct chp_store *s, uint64_t rate, struct chp_scrub *p,
                    chp_verify_problem_fn problem, void *ctx)
{
        LOCAL_ONLY(s);
        struct chp_store_stats st;
        int rc = chp_store_stats(s, &st);
        if (rc)
                return rc;
        atomic_store(&p->total, st.chunks);
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        uint8_t *addrs = malloc(SCRUB_BATCH * CHP_HASH_BYTES);
        uint8_t last[CHP_HASH_BYTES];
        bool started = false;
        double t0 = now_s();
        uint64_t bytes = 0;
        if (!buf || !addrs) {
                rc = -ENOMEM;
                goto out;
        }
        for (;;) {
                size_t n;
                if ((rc = scrub_batch(s, started ? last : NULL, addrs, &n)) || n == 0)
                        break;
                for (size_t i = 0; i < n && !atomic_load(&p->stop); i++) {
                        const uint8_t *a = addrs + i * CHP_HASH_BYTES;
                        ssize_t len = chp_store_read(s, a, buf, CHP_CHUNK_MAX);
                        uint8_t sum[CHP_HASH_BYTES];
                        if (len == -ENOENT) {
                                atomic_fetch_add(&p->missing, 1);
                                continue;
                        }
                        atomic_fetch_add(&p->chunks, 1);
                        if (len == CHP_ECORRUPT)
                                scrub_problem(problem, ctx, p, a, "checksum mismatch (bit rot)");
                        else if (len < 0)
                                scrub_problem(problem, ctx, p, a, chp_strerror((int)len));
                        else if (chp_sha256(buf, (size_t)len, sum) != 0 ||
                                 memcmp(sum, a, CHP_HASH_BYTES) != 0)
                                scrub_problem(problem, ctx, p, a,
                                              "bytes do not hash to the address");
                        if (len > 0) {
                                bytes += (uint64_t)len;
                                atomic_fetch_add(&p->bytes, (uint64_t)len);
                        }
                        /* the rate: sleep until `bytes` are due, in slices short enough
                         * that a stop is seen within SCRUB_SLICE_S */
                        double ahead;
                        while (rate && !atomic_load(&p->stop) &&
                               (ahead = (double)bytes / (double)rate - (now_s() - t0)) > 0) {
                                double d = ahead < SCRUB_SLICE_S ? ahead : SCRUB_SLICE_S;
                                struct timespec ts = {0, (long)(d * 1e9)};
                                nanosleep(&ts, NULL);
                        }
                }
                if (atomic_load(&p->stop))
                        break;
                memcpy(last, addrs + (n - 1) * CHP_HASH_BYTES, CHP_HASH_BYTES);
                started = true;
        }
out:
        free(addrs);
        free(buf);
        return rc;
}
