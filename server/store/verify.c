/* verify.c — the scrub: every record, checksum and reference count, and (through the backend's
 * verify hooks) every place and the backend's accounting, in one read snapshot
 * (chp_store_verify in store.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif
#include "xxh.h"

/* ---- scrub ------------------------------------------------------------------------------- */

struct verify {
        struct chp_store *s;
        MDB_txn *txn;
        chp_verify_problem_fn fn;
        void *ctx;
        struct chp_verify_stats st;
        struct chp_backend_verify bv; /* the backend's scan */
        uint8_t *buf;                 /* one chunk, for backend reads */
        struct addr_list refs;        /* expected references: one address per reference */
};

__attribute__((format(printf, 2, 3))) static void problem(struct verify *v, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        v->st.problems++;
        if (v->fn)
                v->fn(v->ctx, msg);
}

static const char *hex32(const uint8_t *p, char out[CHP_HASH_HEXBYTES])
{
        chp_hex_encode(p, CHP_HASH_BYTES, out);
        return out;
}

static int expect_ref(struct verify *v, const uint8_t *addr)
{
        return store_addrs_push(&v->refs, addr);
}

static bool chunk_exists(struct verify *v, const uint8_t *addr)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), d;
        return mdb_get(v->txn, v->s->db_chunks, &k, &d) == 0;
}

typedef int (*scan_fn)(struct verify *v, const MDB_val *k, const MDB_val *d);

/* Calls fn for every entry of db in key order; stops at fn's first error (a negative code). */
static int scan(struct verify *v, MDB_dbi db, scan_fn fn)
{
        MDB_cursor *cur;
        int rc = mdb_cursor_open(v->txn, db, &cur);
        if (rc)
                return store_mdb_rc(rc);
        MDB_val k, d;
        int op = MDB_FIRST, err = 0;
        while (!err && (rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                err = fn(v, &k, &d);
        }
        mdb_cursor_close(cur);
        if (err)
                return err;
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

/* The backend's problems are the scrub's. */
static void backend_problem(void *ctx, const char *msg)
{
        problem(ctx, "%s", msg);
}

static int check_chunk(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES];
        v->st.chunks++;
        struct chp_rec_chunk c;
        if (k->mv_size != CHP_HASH_BYTES || parse_chunk(d, &c) != 0 || c.len > CHP_CHUNK_MAX) {
                problem(v, "chunk record malformed (key %zu bytes)", k->mv_size);
                return 0;
        }
        const uint8_t *addr = k->mv_data;
        const uint8_t *bytes = c.inline_data;
        if (c.kind == CHP_REC_CHUNK_SEG) {
                struct chp_backend *b = v->s->backend;
                struct chp_backend_place at = chunk_place(&c, addr);
                int rc = b->ops->verify_chunk(b, &v->bv, addr, &at, c.len, v->buf);
                if (rc)
                        return rc < 0 ? rc : 0; /* a problem the backend reported */
                bytes = v->buf;
        }
        v->st.bytes += c.len;
        uint8_t sum[CHP_HASH_BYTES];
        if (chp_xxh3(bytes, c.len) != c.xxh3)
                problem(v, "chunk %s: checksum mismatch (bit rot)", hex32(addr, hex));
        else if (chp_sha256(bytes, c.len, sum) != 0 || memcmp(sum, addr, CHP_HASH_BYTES) != 0)
                problem(v, "chunk %s: bytes do not hash to the address", hex32(addr, hex));
        MDB_val rk = val(addr, CHP_HASH_BYTES), rv;
        if (mdb_get(v->txn, v->s->db_refs, &rk, &rv) == MDB_NOTFOUND)
                v->st.unreferenced++;
        return 0;
}

static bool expiry_present(struct verify *v, uint64_t expires, char kind, const uint8_t *id,
                           size_t idlen)
{
        uint8_t k[CHP_REC_EXPIRY_KEY_MAX];
        MDB_val key = val(k, chp_rec_expiry_key(k, expires, kind, id, idlen)), d;
        return mdb_get(v->txn, v->s->db_expiry, &key, &d) == 0;
}

static int check_file(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES], hex2[CHP_HASH_HEXBYTES];
        v->st.files++;
        struct chp_rec_file f;
        struct chp_manifest m;
        uint8_t id[CHP_HASH_BYTES];
        if (k->mv_size != CHP_HASH_BYTES || parse_file(d, &f) != 0) {
                problem(v, "file record malformed");
                return 0;
        }
        const uint8_t *key = k->mv_data;
        if (chp_manifest_decode(f.manifest, f.manifest_len, &m) < 0) {
                problem(v, "file %s: manifest does not decode", hex32(key, hex));
                return 0;
        }
        if (chp_manifest_id(f.manifest, f.manifest_len, id) != 0 ||
            memcmp(id, key, CHP_HASH_BYTES) != 0)
                problem(v, "file %s: id is not the hash of its manifest", hex32(key, hex));
        if (f.expires && !expiry_present(v, f.expires, CHP_REC_EXPIRY_FILE, key, CHP_HASH_BYTES))
                problem(v, "file %s: missing from the expiry index", hex32(key, hex));
        for (uint32_t i = 0; i < m.chunk_count; i++) {
                const uint8_t *a = m.addrs + (size_t)i * CHP_HASH_BYTES;
                if (!chunk_exists(v, a))
                        problem(v, "file %s: chunk %u (%s) is not stored", hex32(key, hex), i,
                                hex32(a, hex2));
                int rc = expect_ref(v, a);
                if (rc)
                        return rc;
        }
        return 0;
}

static int check_upload(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        v->st.uploads++;
        struct chp_rec_upload u;
        if (k->mv_size != CHP_UPLOAD_ID_BYTES || parse_upload_rec(d, &u) != 0)
                problem(v, "upload record malformed");
        else if (u.expires && !expiry_present(v, u.expires, CHP_REC_EXPIRY_UPLOAD, k->mv_data,
                                              CHP_UPLOAD_ID_BYTES))
                problem(v, "upload: missing from the expiry index");
        return 0;
}

static int check_upchunk(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES];
        if (k->mv_size != CHP_UPLOAD_ID_BYTES + 4 || d->mv_size != CHP_HASH_BYTES) {
                problem(v, "upload chunk entry malformed");
                return 0;
        }
        MDB_val uk = val(k->mv_data, CHP_UPLOAD_ID_BYTES), ud;
        if (mdb_get(v->txn, v->s->db_uploads, &uk, &ud) != 0)
                problem(v, "upload chunk entry for an upload that does not exist");
        if (!chunk_exists(v, d->mv_data))
                problem(v, "upload chunk %s is not stored", hex32(d->mv_data, hex));
        return expect_ref(v, d->mv_data);
}

static int check_tail(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        (void)d;
        MDB_val uk = val(k->mv_data, CHP_UPLOAD_ID_BYTES), ud;
        if (k->mv_size != CHP_UPLOAD_ID_BYTES + 4 || mdb_get(v->txn, v->s->db_uploads, &uk, &ud))
                problem(v, "kept tail bytes of an upload that does not exist");
        return 0;
}

static int check_pending(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        MDB_val uk = val(d->mv_data, d->mv_size), ud;
        struct chp_rec_upload u;
        if (k->mv_size != CHP_HASH_BYTES || d->mv_size != CHP_UPLOAD_ID_BYTES ||
            mdb_get(v->txn, v->s->db_uploads, &uk, &ud) != 0 || parse_upload_rec(&ud, &u) != 0 ||
            !(u.flags & CHP_REC_UPLOAD_HAS_MANIFEST) ||
            memcmp(u.file_id, k->mv_data, CHP_HASH_BYTES))
                problem(v, "pending entry for an upload that does not exist or differs");
        return 0;
}

static int check_expiry(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        (void)d;
        const uint8_t *p = k->mv_data;
        MDB_val rk, rd;
        MDB_dbi db;
        if (k->mv_size == 9 + CHP_HASH_BYTES && p[8] == CHP_REC_EXPIRY_FILE) {
                db = v->s->db_files;
                rk = val(p + 9, CHP_HASH_BYTES);
        } else if (k->mv_size == 9 + CHP_UPLOAD_ID_BYTES && p[8] == CHP_REC_EXPIRY_UPLOAD) {
                db = v->s->db_uploads;
                rk = val(p + 9, CHP_UPLOAD_ID_BYTES);
        } else {
                problem(v, "expiry entry malformed");
                return 0;
        }
        if (mdb_get(v->txn, db, &rk, &rd) != 0)
                problem(v, "expiry entry for a record that does not exist");
        return 0;
}

/* The stored reference counts must equal the references files and uploads make. */
static int verify_refs(struct verify *v)
{
        store_addrs_sort(&v->refs);
        const uint8_t *refs = v->refs.addrs;
        size_t nrefs = v->refs.n;
        MDB_cursor *cur;
        int rc = mdb_cursor_open(v->txn, v->s->db_refs, &cur);
        if (rc)
                return store_mdb_rc(rc);
        MDB_val k, d;
        char hex[CHP_HASH_HEXBYTES];
        size_t i = 0;
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        for (;;) {
                bool have_stored = rc == 0;
                if (rc && rc != MDB_NOTFOUND)
                        break;
                if (!have_stored && i >= nrefs) {
                        rc = 0;
                        break;
                }
                const uint8_t *want = i < nrefs ? refs + i * CHP_HASH_BYTES : NULL;
                int c = !have_stored ? 1 : !want ? -1 : memcmp(k.mv_data, want, CHP_HASH_BYTES);
                if (have_stored &&
                    (k.mv_size != CHP_HASH_BYTES || d.mv_size != CHP_REC_REFS_BYTES)) {
                        problem(v, "reference count record malformed");
                        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
                        continue;
                }
                uint64_t expected = 0;
                const uint8_t *addr = c <= 0 ? k.mv_data : want;
                if (c >= 0) {
                        while (i < nrefs &&
                               memcmp(refs + i * CHP_HASH_BYTES, addr, CHP_HASH_BYTES) == 0) {
                                expected++;
                                i++;
                        }
                }
                uint64_t stored = 0;
                if (c <= 0 && chp_rec_refs_parse(d.mv_data, d.mv_size, &stored) < 0)
                        stored = 0; /* checked above */
                if (stored != expected)
                        problem(v, "chunk %s: reference count %llu, but %llu references exist",
                                hex32(addr, hex), (unsigned long long)stored,
                                (unsigned long long)expected);
                if (c <= 0)
                        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        return store_mdb_rc(rc);
}

/* A tenant's name for a message: printable ASCII, anything else as '?'. */
static const char *tenant_name(const struct tenant_sum *t, char out[CHP_TENANT_MAX + 1])
{
        for (size_t i = 0; i < t->len; i++)
                out[i] = t->name[i] > ' ' && t->name[i] < 0x7f ? t->name[i] : '?';
        out[t->len] = '\0';
        return out;
}

static void usage_differs(struct verify *v, const struct tenant_sum *t,
                          const struct chp_tenant_usage *rec)
{
        char name[CHP_TENANT_MAX + 1];
        if (rec->stored_bytes == t->u.stored_bytes && rec->files == t->u.files &&
            rec->incomplete == t->u.incomplete && rec->incomplete_bytes == t->u.incomplete_bytes)
                return;
        problem(v,
                "tenant %s: usage says %llu bytes in %llu files and %llu incomplete uploads "
                "(%llu bytes), but the records hold %llu, %llu, %llu (%llu)",
                tenant_name(t, name), (unsigned long long)rec->stored_bytes,
                (unsigned long long)rec->files, (unsigned long long)rec->incomplete,
                (unsigned long long)rec->incomplete_bytes, (unsigned long long)t->u.stored_bytes,
                (unsigned long long)t->u.files, (unsigned long long)t->u.incomplete,
                (unsigned long long)t->u.incomplete_bytes);
}

/* Each tenant's usage record must say what its files and upload records hold. */
static int verify_tenants(struct verify *v)
{
        struct usage_sums sums = {0};
        struct chp_tenant_usage zero = {0}, rec;
        MDB_cursor *cur = NULL;
        MDB_val k, d;
        int rc = store_usage_count(v->s, v->txn, &sums);
        if (rc || (rc = store_mdb_rc(mdb_cursor_open(v->txn, v->s->db_tenants, &cur))))
                goto out;
        int op = MDB_FIRST, r;
        while ((r = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size == 0 || k.mv_size > CHP_TENANT_MAX ||
                    chp_rec_tenant_parse(d.mv_data, d.mv_size, &rec) < 0) {
                        problem(v, "tenant usage record malformed");
                        continue;
                }
                struct tenant_sum *t = store_usage_find(&sums, k.mv_data, k.mv_size);
                if (!t) {
                        rc = -ENOMEM;
                        goto out;
                }
                t->seen = true;
                usage_differs(v, t, &rec);
        }
        if (r != MDB_NOTFOUND) {
                rc = store_mdb_rc(r);
                goto out;
        }
        for (size_t i = 0; i < sums.n; i++)
                if (!sums.t[i].seen)
                        usage_differs(v, &sums.t[i], &zero);
out:
        mdb_cursor_close(cur);
        store_usage_sums_free(&sums);
        return rc;
}

int chp_store_verify(struct chp_store *s, chp_verify_problem_fn fn, void *ctx,
                     struct chp_verify_stats *stats)
{
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_verify(s, fn, ctx, stats);
#endif
        memset(stats, 0, sizeof(*stats));
        struct verify v = {.s = s, .fn = fn, .ctx = ctx};
        struct chp_backend *b = s->backend;
        v.bv = (struct chp_backend_verify){.problem = backend_problem, .ctx = &v};
        v.buf = malloc(CHP_CHUNK_MAX);
        if (!v.buf)
                return -ENOMEM;
        int rc = store_read_begin(s, &v.txn);
        if (rc)
                goto out;
        /* the backend's records first: chunk checks look places up in them and add up what they
         * hold; then its accounting against what the chunks claimed */
        rc = b->ops->verify_begin(b, v.txn, &v.bv);
        if (!rc)
                rc = scan(&v, s->db_chunks, check_chunk);
        int end = b->ops->verify_end(b, &v.bv, rc == 0);
        rc = rc ? rc : end;
        const struct {
                MDB_dbi db;
                scan_fn fn;
        } passes[] = {
            {s->db_files, check_file},       {s->db_uploads, check_upload},
            {s->db_upchunks, check_upchunk}, {s->db_expiry, check_expiry},
            {s->db_pending, check_pending},  {s->db_tails, check_tail},
        };
        for (size_t i = 0; !rc && i < sizeof(passes) / sizeof(passes[0]); i++)
                rc = scan(&v, passes[i].db, passes[i].fn);
        if (!rc)
                rc = verify_refs(&v);
        if (!rc)
                rc = verify_tenants(&v);
        mdb_txn_abort(v.txn);
        v.st.segments = v.bv.units;
        if (!rc)
                *stats = v.st;
out:
        store_addrs_free(&v.refs);
        free(v.buf);
        return rc;
}
