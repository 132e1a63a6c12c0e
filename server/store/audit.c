/* audit.c — the mark-and-sweep audit (chp_store_audit in store.h), online.
 *
 * Mark, on the calling thread, in one read snapshot T0: every reference files' manifests and
 * existing uploads' chunk entries make, sorted; compared with the refs db it gives each chunk's
 * drift (stored count - true count), and the chunks nothing references. Sweep, on the writer,
 * in CHP_REQ_AUDIT batches committed at T1 > T0 between other requests:
 *   - a count is corrected by its drift: every request committed between T0 and T1 changed the
 *     stored count and the true count alike, so stored(T1) - drift is the truth at T1;
 *   - an orphan (no reference at T0, none stored at T1) is recorded in the orphans db with the
 *     time, and freed by a later audit when it is still unreferenced after orphan_grace. A put
 *     of the chunk (apply.c) drops the record, so a chunk stored by a client that has not yet
 *     attached it (a tus PATCH checked as a whole, then attached) is never freed under it: a put
 *     landing after the mark meets either no record (kept) or a fresh one;
 *   - upload chunk entries and kept tails of uploads that do not exist are dropped, if the
 *     upload still does not exist at T1 (their references were not counted as true).
 * Memory: CHP_HASH_BYTES per reference, for the mark; a store with more references than
 * audit_refs_max is marked and swept in passes over ranges of addresses, each in a snapshot of
 * its own (the argument above holds per chunk, so per range).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif

#define AUDIT_BATCH 2048 /* repairs per writer request */

struct mark {
        struct chp_store *s;
        MDB_txn *txn;
        unsigned lo, hi;       /* this pass: addresses whose first byte is in [lo, hi) */
        bool first;            /* this pass also marks upload entries and usage */
        size_t refs_max;       /* -E2BIG past this many references: split the pass */
        struct addr_list refs; /* one address per true reference (in range) */
        uint8_t last[CHP_UPLOAD_ID_BYTES]; /* mark_upload_entry: the last entry's upload, */
        bool have_last, last_exists;       /* whether it exists, */
        bool tails;                        /* and whether the entries are kept tails */
        struct chp_audit_item *items;
        size_t nitems, capitems;
        struct chp_audit_stats *st;
};

int store_addrs_push(struct addr_list *l, const uint8_t addr[CHP_HASH_BYTES])
{
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 1024;
                uint8_t *n = realloc(l->addrs, cap * CHP_HASH_BYTES);
                if (!n)
                        return -ENOMEM;
                l->addrs = n;
                l->cap = cap;
        }
        memcpy(l->addrs + l->n++ * CHP_HASH_BYTES, addr, CHP_HASH_BYTES);
        return 0;
}

static int cmp_addr(const void *a, const void *b)
{
        return memcmp(a, b, CHP_HASH_BYTES);
}

void store_addrs_sort(struct addr_list *l)
{
        if (l->n)
                qsort(l->addrs, l->n, CHP_HASH_BYTES, cmp_addr);
}

uint64_t store_addrs_count(const struct addr_list *l, const uint8_t addr[CHP_HASH_BYTES])
{
        size_t lo = 0, hi = l->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (memcmp(l->addrs + mid * CHP_HASH_BYTES, addr, CHP_HASH_BYTES) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        uint64_t n = 0;
        while (lo + n < l->n &&
               memcmp(l->addrs + (lo + n) * CHP_HASH_BYTES, addr, CHP_HASH_BYTES) == 0)
                n++;
        return n;
}

void store_addrs_free(struct addr_list *l)
{
        free(l->addrs);
        *l = (struct addr_list){0};
}

int store_refs_get(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                   uint64_t *count)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        *count = 0;
        int rc = mdb_get(txn, s->db_refs, &k, &v);
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return store_mdb_rc(rc);
        return chp_rec_refs_parse(v.mv_data, v.mv_size, count) < 0 ? CHP_ECORRUPT : 0;
}

static int add_item(struct mark *m, enum audit_kind kind, const uint8_t *key, size_t klen,
                    int64_t drift)
{
        if (m->nitems == m->capitems) {
                size_t cap = m->capitems ? m->capitems * 2 : 64;
                struct chp_audit_item *n = realloc(m->items, cap * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                m->items = n;
                m->capitems = cap;
        }
        struct chp_audit_item *it = &m->items[m->nitems++];
        memset(it, 0, sizeof(*it));
        it->kind = (uint8_t)kind;
        memcpy(it->key, key, klen);
        it->klen = (uint8_t)klen;
        it->drift[0] = drift;
        return 0;
}

typedef int (*mark_fn)(struct mark *m, const MDB_val *k, const MDB_val *v);

/* Calls fn for every entry of db in key order, until its first error; by_addr: only the keys
 * (chunk addresses) of this pass's range. */
static int scan(struct mark *m, MDB_dbi db, bool by_addr, mark_fn fn)
{
        MDB_cursor *cur;
        uint8_t lo = (uint8_t)m->lo;
        MDB_val k = val(&lo, 1), v;
        int err = 0, rc = mdb_cursor_open(m->txn, db, &cur);
        if (rc)
                return store_mdb_rc(rc);
        int op = by_addr ? MDB_SET_RANGE : MDB_FIRST;
        while (!err && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (by_addr && ((const uint8_t *)k.mv_data)[0] >= m->hi)
                        break;
                err = fn(m, &k, &v);
        }
        mdb_cursor_close(cur);
        return err ? err : rc == MDB_NOTFOUND || rc == 0 ? 0 : store_mdb_rc(rc);
}

/* A true reference to addr, if addr is in this pass's range. */
static int ref_push(struct mark *m, const uint8_t *addr)
{
        if (addr[0] < m->lo || addr[0] >= m->hi)
                return 0;
        if (m->refs.n >= m->refs_max)
                return -E2BIG;
        return store_addrs_push(&m->refs, addr);
}

/* Every reference of a file (malformed records are verify's to report: skipped). */
static int mark_file(struct mark *m, const MDB_val *k, const MDB_val *v)
{
        (void)k;
        struct chp_rec_file f;
        struct chp_manifest man;
        int err = 0;
        if (parse_file(v, &f) || chp_manifest_decode(f.manifest, f.manifest_len, &man) < 0)
                return 0;
        for (uint32_t i = 0; !err && i < man.chunk_count; i++)
                err = ref_push(m, man.addrs + (size_t)i * CHP_HASH_BYTES);
        return err;
}

/* An upload chunk entry (a reference) or kept tail (m->tails) of an existing upload; of an
 * upload that does not exist, a dangling entry. */
static int mark_upload_entry(struct mark *m, const MDB_val *k, const MDB_val *v)
{
        if (k->mv_size != CHP_UPLOAD_ID_BYTES + 4 || (!m->tails && v->mv_size != CHP_HASH_BYTES))
                return 0; /* malformed: verify reports it */
        /* entries are sorted by upload id: one look-up per upload */
        if (!m->have_last || memcmp(m->last, k->mv_data, CHP_UPLOAD_ID_BYTES) != 0) {
                MDB_val uk = val(k->mv_data, CHP_UPLOAD_ID_BYTES), d;
                memcpy(m->last, k->mv_data, CHP_UPLOAD_ID_BYTES);
                m->have_last = true;
                m->last_exists = mdb_get(m->txn, m->s->db_uploads, &uk, &d) == 0;
        }
        if (!m->last_exists)
                return m->first ? add_item(m, m->tails ? AUDIT_TAIL : AUDIT_UPCHUNK, k->mv_data,
                                           k->mv_size, 0)
                                : 0;
        return m->tails ? 0 : ref_push(m, v->mv_data);
}

static uint64_t true_refs(const struct mark *m, const uint8_t *addr)
{
        return store_addrs_count(&m->refs, addr);
}

static int64_t diff(uint64_t a, uint64_t b)
{
        return a >= b ? (int64_t)(a - b > INT64_MAX ? INT64_MAX : a - b)
                      : -(int64_t)(b - a > INT64_MAX ? INT64_MAX : b - a);
}

/* A stored count that differs from the truth. */
static int mark_count(struct mark *m, const MDB_val *k, const MDB_val *v)
{
        uint64_t stored;
        if (k->mv_size != CHP_HASH_BYTES || chp_rec_refs_parse(v->mv_data, v->mv_size, &stored) < 0)
                return 0;
        uint64_t want = true_refs(m, k->mv_data);
        return stored == want
                   ? 0
                   : add_item(m, AUDIT_FIX, k->mv_data, CHP_HASH_BYTES, diff(stored, want));
}

/* A chunk nothing references. */
static int mark_chunk(struct mark *m, const MDB_val *k, const MDB_val *v)
{
        (void)v;
        if (k->mv_size != CHP_HASH_BYTES)
                return 0;
        m->st->chunks++;
        return true_refs(m, k->mv_data) ? 0
                                        : add_item(m, AUDIT_ORPHAN, k->mv_data, CHP_HASH_BYTES, 0);
}

/* An orphan record that no longer holds: its chunk is gone or referenced. */
static int mark_orphan_rec(struct mark *m, const MDB_val *k, const MDB_val *v)
{
        (void)v;
        MDB_val ck = *k, d;
        if (k->mv_size != CHP_HASH_BYTES)
                return 0;
        if (mdb_get(m->txn, m->s->db_chunks, &ck, &d) == 0 && !true_refs(m, k->mv_data))
                return 0;
        return add_item(m, AUDIT_CLEAR, k->mv_data, CHP_HASH_BYTES, 0);
}

/* True references that have no stored count at all. */
static int mark_uncounted(struct mark *m)
{
        for (size_t i = 0; i < m->refs.n;) {
                const uint8_t *addr = m->refs.addrs + i * CHP_HASH_BYTES;
                uint64_t n = true_refs(m, addr), stored;
                int err = store_refs_get(m->s, m->txn, addr, &stored);
                if (err && err != CHP_ECORRUPT)
                        return err;
                if (!err && stored == 0 &&
                    (err = add_item(m, AUDIT_FIX, addr, CHP_HASH_BYTES, diff(0, n))))
                        return err;
                i += n;
        }
        return 0;
}

static int usage_item(struct mark *m, const struct tenant_sum *t,
                      const struct chp_tenant_usage *rec)
{
        int64_t d[4] = {diff(rec->stored_bytes, t->u.stored_bytes), diff(rec->files, t->u.files),
                        diff(rec->incomplete, t->u.incomplete),
                        diff(rec->incomplete_bytes, t->u.incomplete_bytes)};
        if (!d[0] && !d[1] && !d[2] && !d[3])
                return 0;
        int rc = add_item(m, AUDIT_USAGE, (const uint8_t *)t->name, t->len, 0);
        if (!rc)
                memcpy(m->items[m->nitems - 1].drift, d, sizeof(d));
        return rc;
}

/* Tenants whose usage record differs from what their files and uploads hold (verify's rule). */
static int mark_usage(struct mark *m)
{
        struct usage_sums sums = {0};
        struct chp_tenant_usage zero = {0}, rec;
        MDB_cursor *cur = NULL;
        MDB_val k, d;
        int r, rc = store_usage_count(m->s, m->txn, &sums);
        if (rc || (rc = store_mdb_rc(mdb_cursor_open(m->txn, m->s->db_tenants, &cur))))
                goto out;
        int op = MDB_FIRST;
        while (!rc && (r = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size == 0 || k.mv_size > CHP_TENANT_MAX ||
                    chp_rec_tenant_parse(d.mv_data, d.mv_size, &rec) < 0)
                        memset(&rec, 0, sizeof(rec)); /* rewritten from the truth */
                struct tenant_sum *t = store_usage_find(&sums, k.mv_data, k.mv_size);
                if (!t) {
                        rc = -ENOMEM;
                        break;
                }
                t->seen = true;
                rc = usage_item(m, t, &rec);
        }
        if (!rc && r != MDB_NOTFOUND)
                rc = store_mdb_rc(r);
        for (size_t i = 0; !rc && i < sums.n; i++)
                if (!sums.t[i].seen)
                        rc = usage_item(m, &sums.t[i], &zero);
out:
        mdb_cursor_close(cur);
        store_usage_sums_free(&sums);
        return rc;
}

static int mark(struct chp_store *s, struct mark *m)
{
        int rc = store_read_begin(s, &m->txn);
        if (rc)
                return rc;
        m->have_last = m->tails = false;
        if (!(rc = scan(m, s->db_files, false, mark_file)) &&
            !(rc = scan(m, s->db_upchunks, false, mark_upload_entry)) && m->first) {
                m->tails = true;
                m->have_last = false;
                rc = scan(m, s->db_tails, false, mark_upload_entry);
        }
        if (!rc) {
                store_addrs_sort(&m->refs);
                m->st->references = m->refs.n;
                if (!(rc = scan(m, s->db_refs, true, mark_count)) && !(rc = mark_uncounted(m)) &&
                    !(rc = scan(m, s->db_chunks, true, mark_chunk)) &&
                    !(rc = scan(m, s->db_orphans, true, mark_orphan_rec)) && m->first)
                        rc = mark_usage(m);
        }
        mdb_txn_abort(m->txn);
        m->txn = NULL;
        return rc;
}

/* The writer applies a pass's repairs, AUDIT_BATCH at a time; counts into st. */
static int sweep(struct chp_store *s, const struct mark *m, uint64_t now,
                 struct chp_audit_stats *st)
{
        for (size_t at = 0; at < m->nitems; at += AUDIT_BATCH) {
                struct chp_store_req req = {.type = CHP_REQ_AUDIT};
                req.u.audit.items = m->items + at;
                req.u.audit.n = m->nitems - at < AUDIT_BATCH ? m->nitems - at : AUDIT_BATCH;
                req.u.audit.now = now;
                int rc = chp_store_run(s, &req);
                if (rc)
                        return rc;
                const struct chp_audit_stats *b = &req.u.audit.stats;
                st->refs_fixed += b->refs_fixed;
                st->dangling += b->dangling;
                st->orphans += b->orphans;
                st->chunks_freed += b->chunks_freed;
                st->bytes_freed += b->bytes_freed;
                st->usage_fixed += b->usage_fixed;
        }
        return 0;
}

/* Passes over address ranges, each a snapshot and its sweep: one over every address while the
 * references fit in audit_refs_max, else ranges halved until they do (addresses are hashes:
 * ranges of first bytes hold about equal shares). */
int chp_store_audit(struct chp_store *s, uint64_t now, struct chp_audit_stats *out)
{
#ifdef CHAPAR_RADOS
        if (s->shared)
                return shared_audit(s, now, out);
#endif
        memset(out, 0, sizeof(*out));
        struct chp_audit_stats st = {0};
        struct mark m = {.s = s};
        unsigned lo = 0, width = 256;
        bool once = false; /* the pass over upload entries and usage is done */
        int rc = 0;
        pthread_mutex_lock(&s->audit_lock);
        while (!rc && lo < 256) {
                struct chp_audit_stats pass = {0};
                m.st = &pass;
                m.lo = lo;
                m.hi = lo + width;
                m.first = !once;
                m.refs_max = width > 1 ? s->audit_refs_max : SIZE_MAX;
                m.nitems = 0;
                rc = mark(s, &m);
                store_addrs_free(&m.refs);
                if (rc == -E2BIG) {
                        rc = 0;
                        width /= 2;
                        continue;
                }
                if (rc)
                        break;
#ifdef CHAPAR_FAULT_INJECTION
                if (s->audit_hook)
                        s->audit_hook(s->audit_hook_ctx);
#endif
                rc = sweep(s, &m, now, &pass);
                st.chunks += pass.chunks;
                st.references += pass.references;
                st.refs_fixed += pass.refs_fixed;
                st.dangling += pass.dangling;
                st.orphans += pass.orphans;
                st.chunks_freed += pass.chunks_freed;
                st.bytes_freed += pass.bytes_freed;
                st.usage_fixed += pass.usage_fixed;
                st.passes++;
                once = true;
                lo += width;
        }
        pthread_mutex_unlock(&s->audit_lock);
        free(m.items);
        if (!rc)
                *out = st;
        return rc;
}

/* ---- the writer's half -------------------------------------------------------------------- */

int store_orphan_forget(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES])
{
        MDB_val k = val(addr, CHP_HASH_BYTES);
        int rc = mdb_del(txn, s->db_orphans, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

static int64_t neg(int64_t v)
{
        return v == INT64_MIN ? INT64_MAX : -v;
}

static int fix(struct chp_store *s, MDB_txn *txn, const uint8_t *addr, int64_t drift,
               struct chp_audit_stats *st)
{
        uint64_t stored, want;
        int rc = store_refs_get(s, txn, addr, &stored);
        if (rc)
                return rc == CHP_ECORRUPT ? 0 : rc; /* malformed since the mark: verify's */
        if (drift >= 0) {
                want = stored >= (uint64_t)drift ? stored - (uint64_t)drift : 0;
        } else {
                uint64_t up = drift == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-drift;
                want = stored > UINT64_MAX - up ? UINT64_MAX : stored + up;
        }
        if (want == stored)
                return 0;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        if (want == 0) {
                rc = mdb_del(txn, s->db_refs, &k, NULL);
                rc = rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
        } else {
                uint8_t c[CHP_REC_REFS_BYTES];
                chp_rec_refs_encode(c, want);
                v = val(c, sizeof(c));
                rc = store_mdb_rc(mdb_put(txn, s->db_refs, &k, &v, 0));
        }
        if (!rc)
                st->refs_fixed++;
        return rc;
}

static int orphan(struct chp_store *s, MDB_txn *txn, const uint8_t *addr, uint64_t now,
                  struct chp_audit_stats *st)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        uint64_t stored, since;
        int rc = mdb_get(txn, s->db_chunks, &k, &v);
        if (rc == MDB_NOTFOUND)
                return store_orphan_forget(s, txn, addr);
        if (rc)
                return store_mdb_rc(rc);
        if ((rc = store_refs_get(s, txn, addr, &stored)))
                return rc == CHP_ECORRUPT ? 0 : rc; /* verify's to report */
        if (stored)
                return store_orphan_forget(s, txn, addr); /* attached since the mark */
        rc = mdb_get(txn, s->db_orphans, &k, &v);
        if (rc == 0 && chp_rec_orphan_parse(v.mv_data, v.mv_size, &since) >= 0 && since <= now &&
            now - since >= s->opts.orphan_grace)
                return store_chunk_free(s, txn, addr, &st->chunks_freed, &st->bytes_freed);
        if (rc && rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        st->orphans++;
        if (rc == 0 && v.mv_size == CHP_REC_ORPHAN_BYTES)
                return 0; /* waiting out its grace */
        uint8_t rec[CHP_REC_ORPHAN_BYTES];
        chp_rec_orphan_encode(rec, now);
        v = val(rec, sizeof(rec));
        return store_mdb_rc(mdb_put(txn, s->db_orphans, &k, &v, 0));
}

static int clear(struct chp_store *s, MDB_txn *txn, const uint8_t *addr)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        uint64_t stored;
        int rc = mdb_get(txn, s->db_chunks, &k, &v);
        if (rc == 0) {
                int err = store_refs_get(s, txn, addr, &stored);
                if (err)
                        return err;
                if (stored == 0)
                        return 0; /* an orphan again: the next audit's to judge */
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        }
        return store_orphan_forget(s, txn, addr);
}

static int dangling(struct chp_store *s, MDB_txn *txn, MDB_dbi db, const uint8_t *key,
                    struct chp_audit_stats *st)
{
        MDB_val uk = val(key, CHP_UPLOAD_ID_BYTES), d;
        int rc = mdb_get(txn, s->db_uploads, &uk, &d);
        if (rc == 0)
                return 0; /* the upload exists now: its entries are its own */
        if (rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        MDB_val k = val(key, CHP_UPLOAD_ID_BYTES + 4);
        rc = mdb_del(txn, db, &k, NULL);
        if (rc == MDB_NOTFOUND)
                return 0;
        st->dangling += rc == 0;
        return store_mdb_rc(rc);
}

/* A tenant's usage, corrected by its drift (requests since the mark changed record and truth
 * alike). */
static int usage_fix(struct chp_store *s, MDB_txn *txn, const struct chp_audit_item *it,
                     struct chp_audit_stats *st)
{
        if (it->klen == 0 || it->klen > CHP_TENANT_MAX)
                return 0;
        struct chp_tenant_usage rec;
        int rc = store_usage_get(s, txn, it->key, it->klen, &rec);
        if (rc == CHP_ECORRUPT) /* store_usage_add starts it over from zero */
                rc = 0;
        if (rc)
                return rc;
        struct usage_delta d = {.stored_bytes = neg(it->drift[0]),
                                .files = neg(it->drift[1]),
                                .incomplete = neg(it->drift[2]),
                                .incomplete_bytes = neg(it->drift[3])};
        if ((rc = store_usage_add(s, txn, it->key, it->klen, &d)))
                return rc;
        st->usage_fixed++;
        return 0;
}

int store_apply_audit(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        struct chp_audit_stats *st = &req->u.audit.stats;
        memset(st, 0, sizeof(*st));
        int rc = 0;
        for (size_t i = 0; !rc && i < req->u.audit.n; i++) {
                const struct chp_audit_item *it = &req->u.audit.items[i];
                switch (it->kind) {
                case AUDIT_FIX:
                        rc = fix(s, txn, it->key, it->drift[0], st);
                        break;
                case AUDIT_ORPHAN:
                        rc = orphan(s, txn, it->key, req->u.audit.now, st);
                        break;
                case AUDIT_CLEAR:
                        rc = clear(s, txn, it->key);
                        break;
                case AUDIT_UPCHUNK:
                        rc = dangling(s, txn, s->db_upchunks, it->key, st);
                        break;
                case AUDIT_TAIL:
                        rc = dangling(s, txn, s->db_tails, it->key, st);
                        break;
                case AUDIT_USAGE:
                        rc = usage_fix(s, txn, it, st);
                        break;
                default:
                        rc = -EINVAL;
                }
        }
        return rc;
}
