/* GC of the shared state (chp_rstate_gc, server/store/rados_state.h) on the throw-away cluster that
 * tests/ceph/rados_gc.sh starts. Two handles on one pool act as two relays ("a" and "b"); a third
 * client ("raw") looks at the objects. The clock GC collects up to is the test's (opts.now), moved
 * forward by the test; each test starts later than the one before, so leftovers of earlier tests
 * are due (and collected) but never looked at again.
 * The race test's seed: CHAPAR_GC_SEED (else from the clock, printed); rounds: CHAPAR_GC_ROUNDS.
 * Usage: test_rados_gc CONF POOL USER
 */
#include "../harness.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>

#include "err.h"
#include "manifest.h"
#include "rados_state.h"

#define WAIT_S 60 /* a hang guard, not a timing check */
#define GRACE  100

static const char *conf, *pool, *user;
static struct chp_rstate *a, *b;
static rados_t raw;
static rados_ioctx_t rio[6]; /* c f u p t i */
enum { C, F, U, P, T, I };
static const char *const nsn[] = {"c", "f", "u", "p", "t", "i"};

/* ---- data ---- */

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t data[CHP_CHUNK_MIN];
        uint32_t len;
};

static uint64_t rng;
static uint32_t rnd(uint32_t n) /* xorshift64*: reproducible from the seed */
{
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return (uint32_t)((rng * 2685821657736338717ull) >> 33) % n;
}

/* A chunk of len bytes, from the seed (the race's, reproducible) or random. */
static void make_chunk_seeded(struct chunk *c, uint32_t len)
{
        c->len = len;
        for (uint32_t i = 0; i < len; i++)
                c->data[i] = (uint8_t)rnd(256);
        if (chp_sha256(c->data, len, c->addr))
                abort();
}

static void make_chunk(struct chunk *c, uint32_t len)
{
        c->len = len;
        if (getrandom(c->data, len, 0) != (ssize_t)len || chp_sha256(c->data, len, c->addr))
                abort();
}

/* A file of a big chunk (CHP_CHUNK_MIN) and a small one, its manifest and id. */
struct file {
        const struct chunk *c[2];
        uint8_t man[CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES];
        size_t man_len;
        uint8_t id[CHP_HASH_BYTES];
};

static void make_file(struct file *f, const struct chunk *big, const struct chunk *small)
{
        f->c[0] = big;
        f->c[1] = small;
        uint8_t addrs[2 * CHP_HASH_BYTES];
        memcpy(addrs, big->addr, CHP_HASH_BYTES);
        memcpy(addrs + CHP_HASH_BYTES, small->addr, CHP_HASH_BYTES);
        struct chp_manifest m = {.version = 1,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = CHP_CHUNK_MIN + small->len,
                                 .chunk_count = 2,
                                 .addrs = addrs};
        ssize_t n = chp_manifest_encode(&m, f->man, sizeof(f->man));
        if (n < 0 || chp_manifest_id(f->man, (size_t)n, f->id))
                abort();
        f->man_len = (size_t)n;
}

/* ---- looking at the objects (the raw client) ---- */

static bool exists(int ns, const uint8_t *id, size_t n)
{
        char oid[80];
        uint64_t size;
        time_t mtime;
        chp_hex_encode(id, n, oid);
        return rados_stat(rio[ns], oid, &size, &mtime) == 0;
}

/* A chunk's lease; 0 when it has none (or no object). */
static uint64_t lease_of(const struct chunk *c)
{
        char oid[80], v[32];
        chp_hex_encode(c->addr, CHP_HASH_BYTES, oid);
        int n = rados_getxattr(rio[C], oid, "e", v, sizeof(v) - 1);
        if (n <= 0)
                return 0;
        v[n] = 0;
        return strtoull(v, NULL, 16);
}

static bool omap_has(const char *oid, const char *key)
{
        rados_read_op_t op = rados_create_read_op();
        rados_omap_iter_t it;
        int prval = 0;
        const char *keys[] = {key};
        rados_read_op_omap_get_vals_by_keys(op, keys, 1, &it, &prval);
        int rc = rados_read_op_operate(op, rio[I], oid, 0);
        bool found = false;
        if (rc == 0 && prval == 0) {
                char *k, *v;
                size_t len;
                found = rados_omap_get_next(it, &k, &v, &len) == 0 && k != NULL;
                rados_omap_get_end(it);
        }
        rados_release_read_op(op);
        return found;
}

static bool cexp_has(const struct chunk *c, uint64_t lease)
{
        char oid[16], key[96];
        snprintf(oid, sizeof(oid), "cexp.%02x", c->addr[0]);
        snprintf(key, sizeof(key), "%016llx", (unsigned long long)lease);
        chp_hex_encode(c->addr, CHP_HASH_BYTES, key + 16);
        return omap_has(oid, key);
}

/* Objects left in a namespace. */
static unsigned count_objects(int ns)
{
        rados_list_ctx_t ctx;
        const char *entry;
        unsigned n = 0;
        if (rados_nobjects_list_open(rio[ns], &ctx) < 0)
                return UINT32_MAX;
        while (rados_nobjects_list_next(ctx, &entry, NULL, NULL) == 0)
                n++;
        rados_nobjects_list_close(ctx);
        return n;
}

/* Keys left in every shard of exp (cexp true: cexp). */
static unsigned count_keys(bool cexp)
{
        unsigned n = 0;
        for (unsigned sh = 0; sh < 256; sh++) {
                struct chp_rstate_req r = {.kind = CHP_RS_INDEX_PAGE};
                r.u.page.index = cexp ? CHP_RS_INDEX_CEXP : CHP_RS_INDEX_EXP;
                r.u.page.shard = (uint8_t)sh;
                r.u.page.max = CHP_RSTATE_PAGE_MAX;
                if (chp_rstate_run(a, &r))
                        return UINT32_MAX;
                n += r.u.page.n;
                for (uint32_t i = 0; i < r.u.page.n; i++)
                        printf("  left in %s.%02x: %s\n", cexp ? "cexp" : "exp", sh,
                               r.u.page.entries[i].key);
                chp_rstate_req_release(&r);
        }
        return n;
}

/* ---- requests ---- */

static int chunk_put(struct chp_rstate *st, const struct chunk *c, char kind, const uint8_t *id,
                     uint64_t lease)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_PUT};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.data = c->data;
        r.u.chunk.len = c->len;
        r.u.chunk.ref.kind = kind;
        memcpy(r.u.chunk.ref.id, id, kind == 'u' ? CHP_UPLOAD_ID_BYTES : CHP_HASH_BYTES);
        r.u.chunk.lease = lease;
        return chp_rstate_run(st, &r);
}

static void commit_req(struct chp_rstate_req *r, const struct file *f, uint64_t expires)
{
        memset(r, 0, sizeof(*r));
        r->kind = CHP_RS_COMMIT;
        r->u.commit.manifest = f->man;
        r->u.commit.manifest_len = f->man_len;
        r->u.commit.tenant = "gc";
        r->u.commit.created = expires > 100 ? expires - 100 : 0;
        r->u.commit.expires = expires;
}

/* Stores f (its chunks held by the file, then the commit) expiring at expires. */
static int store_file(struct chp_rstate *st, const struct file *f, uint64_t expires)
{
        int rc = 0;
        for (int i = 0; i < 2 && !rc; i++)
                rc = chunk_put(st, f->c[i], 'f', f->id, expires);
        if (rc)
                return rc;
        struct chp_rstate_req r;
        commit_req(&r, f, expires);
        return chp_rstate_run(st, &r);
}

static int delete_file(struct chp_rstate *st, const struct file *f)
{
        struct chp_rstate_req r = {.kind = CHP_RS_FILE_DELETE};
        memcpy(r.u.file.id, f->id, CHP_HASH_BYTES);
        return chp_rstate_run(st, &r);
}

static int upload_create(struct chp_rstate *st, const uint8_t uid[CHP_UPLOAD_ID_BYTES],
                         uint64_t expires)
{
        uint8_t rec[CHP_REC_UPLOAD_BYTES + 2];
        struct chp_rec_upload ur = {.chunk_size = CHP_CHUNK_MIN,
                                    .declared = 100,
                                    .created = expires - 100,
                                    .expires = expires,
                                    .tenant_len = 2};
        chp_rec_upload_encode(rec, &ur);
        memcpy(rec + CHP_REC_UPLOAD_BYTES, "gc", 2);
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(r.u.upload.id, uid, CHP_UPLOAD_ID_BYTES);
        r.u.upload.rec = rec;
        r.u.upload.rec_len = sizeof(rec);
        return chp_rstate_run(st, &r);
}

static int gc(struct chp_rstate *st, const char *cookie, uint64_t now,
              struct chp_rstate_gc_stats *s)
{
        struct chp_rstate_gc_opts o = {
            .now = now, .grace = GRACE, .cookie = cookie, .inflight = 4, .page = 8};
        return chp_rstate_gc(st, &o, s);
}

/* ---- GC removes what expired, and only that ---- */

/* Files expire at their expiry, uploads too, chunks grace after their lease; a chunk shared by an
 * expired and a live file stays (its first lease key, stale once the live file extended it, is
 * dropped without removing it); what is due but within grace stays with its key; a key naming
 * nothing is dropped. */
TEST(gc_removes_only_what_expired)
{
        static struct chunk s, x, y, w, v, z;
        make_chunk(&s, CHP_CHUNK_MIN);
        make_chunk(&x, 1000);
        make_chunk(&y, 1001);
        make_chunk(&w, 1002);
        make_chunk(&v, 1003);
        make_chunk(&z, 1004);
        const uint64_t t0 = 100000, now = t0 + 10 + GRACE + 1;
        struct file e, l;
        make_file(&e, &s, &x);
        make_file(&l, &s, &y);
        REQUIRE_OK(store_file(a, &e, t0 + 10));   /* s's first key: t0 + 10 */
        REQUIRE_OK(store_file(a, &l, t0 + 1000)); /* s extended to t0 + 1000 */
        uint8_t uu[CHP_UPLOAD_ID_BYTES], uv[CHP_UPLOAD_ID_BYTES], nobody[CHP_HASH_BYTES];
        getrandom(uu, sizeof(uu), 0);
        getrandom(uv, sizeof(uv), 0);
        getrandom(nobody, sizeof(nobody), 0);
        REQUIRE_OK(upload_create(a, uu, t0 + 10));
        REQUIRE_OK(chunk_put(a, &w, 'u', uu, t0 + 10));
        REQUIRE_OK(upload_create(a, uv, t0 + 1000));
        REQUIRE_OK(chunk_put(a, &v, 'u', uv, t0 + 1000));
        /* z: expired, not yet past grace at now */
        REQUIRE_OK(chunk_put(a, &z, 'f', nobody, now - GRACE + 5));
        /* a key naming a file that never was */
        char soid[16], skey[96];
        snprintf(soid, sizeof(soid), "exp.%02x", nobody[0]);
        snprintf(skey, sizeof(skey), "%016llxf", (unsigned long long)(t0 + 5));
        chp_hex_encode(nobody, CHP_HASH_BYTES, skey + 17);
        {
                const char *k[] = {skey};
                const char *vv[] = {""};
                size_t lens[] = {0};
                rados_write_op_t op = rados_create_write_op();
                rados_write_op_omap_set(op, k, vv, lens, 1);
                REQUIRE_OK(rados_write_op_operate(op, rio[I], soid, NULL, 0));
                rados_release_write_op(op);
        }
        CHECK(cexp_has(&s, t0 + 10));

        /* before anything is due: nothing goes */
        struct chp_rstate_gc_stats st;
        CHECK_OK(gc(b, "B", t0 + 5, &st));
        CHECK(!st.busy && !st.lease_lost);
        CHECK(exists(F, e.id, 32) && exists(U, uu, 16) && exists(C, x.addr, 32));

        CHECK_OK(gc(b, "B", now, &st));
        printf("  pass: %llu files, %llu uploads, %llu chunks removed, %llu keys dropped, %llu "
               "errors\n",
               (unsigned long long)st.files_expired, (unsigned long long)st.uploads_removed,
               (unsigned long long)st.chunks_removed, (unsigned long long)st.keys_dropped,
               (unsigned long long)st.errors);
        CHECK_EQ(st.errors, 0);
        CHECK(!st.busy && !st.lease_lost);
        CHECK(st.files_expired >= 1 && st.uploads_removed >= 1 && st.chunks_removed >= 2);
        /* expired: gone */
        CHECK(!exists(F, e.id, 32));
        CHECK(!exists(U, uu, 16));
        CHECK(!exists(C, x.addr, 32));
        CHECK(!exists(C, w.addr, 32));
        CHECK(!cexp_has(&x, t0 + 10));
        CHECK(!omap_has(soid, skey));
        /* live, or within grace: there, with their keys */
        CHECK(exists(F, l.id, 32));
        CHECK(exists(U, uv, 16));
        CHECK(exists(C, s.addr, 32) && lease_of(&s) == t0 + 1000);
        CHECK(exists(C, y.addr, 32) && exists(C, v.addr, 32));
        CHECK(exists(C, z.addr, 32) && cexp_has(&z, now - GRACE + 5));
        CHECK(!cexp_has(&s, t0 + 10) && cexp_has(&s, t0 + 1000));
}

/* ---- the lock ---- */

struct stall {
        sem_t holding, go;
        int calls;
};

static void stall_batch(void *arg, const struct chp_rstate_gc_stats *sofar)
{
        (void)sofar;
        struct stall *x = arg;
        if (x->calls++ == 0) { /* the first batch, with the lock held: stall here */
                sem_post(&x->holding);
                while (sem_wait(&x->go) != 0)
                        ;
        }
}

struct pass {
        struct chp_rstate_gc_opts o;
        struct chp_rstate_gc_stats s;
        int rc;
};

static void *pass_main(void *arg)
{
        struct pass *p = arg;
        p->rc = chp_rstate_gc(a, &p->o, &p->s);
        return NULL;
}

static bool sem_wait_s(sem_t *s)
{
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += WAIT_S;
        while (sem_timedwait(s, &t) != 0)
                if (errno != EINTR)
                        return false;
        return true;
}

/* A holds the lock: B's pass is skipped. A stalls past its 3 s lease (the test waits for the lock
 * to be free, polling the lockers, bounded); B then takes it and collects; A's renewal is refused
 * and A stops with nothing more removed. */
TEST(gc_lock_busy_and_lapsed)
{
        static struct chunk big, s1, s2;
        make_chunk(&big, CHP_CHUNK_MIN);
        make_chunk(&s1, 1100);
        make_chunk(&s2, 1101);
        const uint64_t t1 = 200000, now = t1 + 50 + GRACE;
        struct file gone, live;
        make_file(&gone, &big, &s1);
        make_file(&live, &big, &s2);
        REQUIRE_OK(store_file(a, &gone, t1 + 10));
        REQUIRE_OK(store_file(a, &live, t1 + 1000));

        struct stall x = {.calls = 0};
        sem_init(&x.holding, 0, 0);
        sem_init(&x.go, 0, 0);
        struct pass pa = {.o = {.now = now,
                                .grace = GRACE,
                                .lease = 3,
                                .cookie = "A",
                                .inflight = 4,
                                .page = 8,
                                .on_batch = stall_batch,
                                .arg = &x}};
        pthread_t th;
        REQUIRE_OK(pthread_create(&th, NULL, pass_main, &pa));
        REQUIRE(sem_wait_s(&x.holding));
        struct chp_rstate_gc_stats sb;
        CHECK_OK(gc(b, "B", now, &sb));
        CHECK(sb.busy);
        CHECK(exists(F, gone.id, 32)); /* B did nothing */

        /* A is stalled: wait for its lease to lapse (no lockers left), bounded */
        bool free_now = false;
        for (int i = 0; i < WAIT_S * 10 && !free_now; i++) {
                char tag[64], clients[256], cookies[256], addrs[256];
                size_t tl = sizeof(tag), cl = sizeof(clients), kl = sizeof(cookies),
                       al = sizeof(addrs);
                int excl;
                ssize_t n = rados_list_lockers(rio[I], "gc", "gc", &excl, tag, &tl, clients, &cl,
                                               cookies, &kl, addrs, &al);
                free_now = n == 0;
                if (!free_now)
                        usleep(100000);
        }
        REQUIRE(free_now);
        CHECK_OK(gc(b, "B", now, &sb));
        CHECK(!sb.busy && !sb.lease_lost);
        CHECK(sb.files_expired >= 1);
        CHECK(!exists(F, gone.id, 32));
        CHECK(!exists(C, s1.addr, 32));

        sem_post(&x.go); /* A wakes: its renewal must be refused */
        pthread_join(th, NULL);
        CHECK_OK(pa.rc);
        CHECK(pa.s.lease_lost);
        CHECK(!pa.s.busy);
        CHECK_EQ(pa.s.files_expired + pa.s.chunks_removed + pa.s.uploads_removed, 0);
        CHECK_EQ(x.calls, 1);
        CHECK(exists(F, live.id, 32));
        CHECK(exists(C, big.addr, 32) && lease_of(&big) >= t1 + 1000);
        CHECK(exists(C, s2.addr, 32));
        /* the lock is free again for anyone */
        CHECK_OK(gc(a, "A", now, &sb));
        CHECK(!sb.busy);
}

/* ---- the audit ---- */

struct refer_on {
        const struct chunk *c;
        const uint8_t *fid;
        uint64_t lease;
        int calls, rc;
};

static void refer_meanwhile(void *arg, const uint8_t addr[CHP_HASH_BYTES])
{
        struct refer_on *x = arg;
        if (memcmp(addr, x->c->addr, CHP_HASH_BYTES) != 0)
                return;
        x->calls++;
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_REFER};
        memcpy(r.u.chunk.addr, x->c->addr, CHP_HASH_BYTES);
        r.u.chunk.ref.kind = 'f';
        memcpy(r.u.chunk.ref.id, x->fid, CHP_HASH_BYTES);
        r.u.chunk.lease = x->lease;
        x->rc = chp_rstate_run(a, &r);
}

/* A file deleted early stops pinning its chunks once the audit saw it (confirmed) and then saw it
 * gone: the lease drops to what the live referrers need (0 for none), and GC then collects. An
 * upload's key holds while the upload lives; a key of an upload that never was does not. A
 * referrer added between the audit's read and its write cancels the lower (version guard). */
TEST(audit_lowers_leases)
{
        static struct chunk s, s2, x1, x2, g1, h1, f1, u1, d1;
        make_chunk(&s, CHP_CHUNK_MIN);
        make_chunk(&s2, CHP_CHUNK_MIN);
        make_chunk(&x1, 1200);
        make_chunk(&x2, 1201);
        make_chunk(&g1, 1202);
        make_chunk(&h1, 1203);
        make_chunk(&f1, 1204);
        make_chunk(&u1, 1205);
        make_chunk(&d1, 1206);
        const uint64_t t2 = 250000;
        struct file fa, fb, fg, fh, ff;
        make_file(&fa, &s, &x1);  /* deleted early */
        make_file(&fb, &s, &x2);  /* live, t2 + 50 */
        make_file(&fg, &s2, &g1); /* deleted early */
        make_file(&fh, &s2, &h1); /* live, t2 + 50 */
        make_file(&ff, &s, &f1);  /* refers s while the audit looks at it */
        REQUIRE_OK(store_file(a, &fa, t2 + 1000));
        REQUIRE_OK(store_file(a, &fb, t2 + 50));
        REQUIRE_OK(store_file(a, &fg, t2 + 1000));
        REQUIRE_OK(store_file(a, &fh, t2 + 50));
        uint8_t uu[CHP_UPLOAD_ID_BYTES], never[CHP_UPLOAD_ID_BYTES];
        getrandom(uu, sizeof(uu), 0);
        getrandom(never, sizeof(never), 0);
        REQUIRE_OK(upload_create(a, uu, t2 + 500));
        REQUIRE_OK(chunk_put(a, &u1, 'u', uu, t2 + 500));
        REQUIRE_OK(chunk_put(a, &d1, 'u', never, t2 + 700));

        struct chp_rstate_audit_opts o = {.now = t2 + 10};
        struct chp_rstate_audit_stats st;
        CHECK_OK(chp_rstate_audit(b, &o, &st)); /* confirms the files' keys */
        CHECK(st.refs_confirmed >= 8);
        CHECK_EQ(lease_of(&d1), 0);        /* its upload never was */
        CHECK_EQ(lease_of(&s), t2 + 1000); /* nothing deleted yet */
        REQUIRE_OK(delete_file(a, &fa));
        REQUIRE_OK(delete_file(a, &fg));

        struct refer_on x = {.c = &s, .fid = ff.id, .lease = t2 + 2000};
        o.on_chunk = refer_meanwhile;
        o.arg = &x;
        CHECK_OK(chp_rstate_audit(b, &o, &st));
        printf("  audit: %llu chunks, %llu lowered, %llu keys dropped, %llu confirmed, %llu "
               "raced\n",
               (unsigned long long)st.chunks, (unsigned long long)st.lowered,
               (unsigned long long)st.refs_dropped, (unsigned long long)st.refs_confirmed,
               (unsigned long long)st.raced);
        CHECK_EQ(x.calls, 1);
        CHECK_OK(x.rc);
        CHECK(st.raced >= 1);
        CHECK_EQ(lease_of(&s), t2 + 2000); /* the lower was cancelled by the new referrer */
        CHECK_EQ(lease_of(&s2), t2 + 50);  /* lowered to the live file's expiry */
        CHECK_EQ(lease_of(&x1), 0);
        CHECK_EQ(lease_of(&g1), 0);
        CHECK_EQ(lease_of(&u1), t2 + 500);
        CHECK(cexp_has(&s2, t2 + 50) && cexp_has(&x1, 0));

        /* GC past the lowered leases: the deleted files' chunks go, the rest stays */
        struct chp_rstate_gc_stats gs;
        CHECK_OK(gc(b, "B", t2 + 50 + GRACE + 1, &gs));
        CHECK(!exists(C, s2.addr, 32) && !exists(C, x1.addr, 32) && !exists(C, g1.addr, 32));
        CHECK(!exists(C, d1.addr, 32));
        CHECK(exists(C, s.addr, 32) && exists(C, u1.addr, 32));
}

/* ---- the randomised race ---- */

#define NBIG   3
#define NSMALL 4
#define NFILES (NBIG * NSMALL)

static struct chunk bigs[NBIG], smalls[NSMALL];
static struct file files[NFILES];
static uint64_t model[NFILES]; /* expiry of a live file; 0: not stored (or deleted) */

struct held {
        sem_t held, done;
        int rc;
};

static void held_on(struct chp_rstate_req *r)
{
        sem_post(&((struct held *)r->arg)->held);
}

static void held_done(struct chp_rstate_req *r, int rc)
{
        struct held *h = r->arg;
        h->rc = rc;
        sem_post(&h->done);
}

/* Every live file of the model exists and each of its chunks has a lease >= its expiry. */
static bool invariant(uint64_t now, int round)
{
        bool ok = true;
        for (int i = 0; i < NFILES; i++) {
                if (!model[i] || model[i] < now)
                        continue;
                if (!exists(F, files[i].id, 32)) {
                        printf("  round %d: live file %d (expires %llu) is gone\n", round, i,
                               (unsigned long long)model[i]);
                        ok = false;
                }
                for (int k = 0; k < 2; k++)
                        if (lease_of(files[i].c[k]) < model[i]) {
                                printf("  round %d: file %d's chunk %d: lease %llu < %llu\n", round,
                                       i, k, (unsigned long long)lease_of(files[i].c[k]),
                                       (unsigned long long)model[i]);
                                ok = false;
                        }
        }
        return ok;
}

/* One handle commits files sharing chunks with random expiries and deletes some; the other runs
 * GC passes and audits with the test's clock, sometimes while a commit is held after its chunks
 * were referred (step 1) and before the file is written. After each round the invariant holds for
 * every live file and every file expired before the last pass is gone; at the end, after a pass
 * past every lease and grace, nothing of the test is left (no chunk, file or upload object, no
 * index key). */
TEST(gc_randomised_race)
{
        const char *e = getenv("CHAPAR_GC_SEED");
        uint64_t seed =
            e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        const char *er = getenv("CHAPAR_GC_ROUNDS");
        int rounds = er ? atoi(er) : 40;
        printf("  seed %llu (CHAPAR_GC_SEED), %d rounds (CHAPAR_GC_ROUNDS)\n",
               (unsigned long long)seed, rounds);
        rng = seed ? seed : 1;
        for (int i = 0; i < NBIG; i++)
                make_chunk_seeded(&bigs[i], CHP_CHUNK_MIN);
        for (int i = 0; i < NSMALL; i++)
                make_chunk_seeded(&smalls[i], 900 + (uint32_t)i);
        for (int i = 0; i < NFILES; i++)
                make_file(&files[i], &bigs[i / NSMALL], &smalls[i % NSMALL]);
        memset(model, 0, sizeof(model));
        uint64_t clock = 300000, last_gc = 0;
        uint64_t removed = 0, held_commits = 0, passes = 0, audits = 0, lowered = 0;
        bool ok = true;
        for (int round = 0; round < rounds && ok; round++) {
                int commits = 1 + (int)rnd(3);
                for (int c = 0; c < commits; c++) {
                        int i = (int)rnd(NFILES);
                        uint64_t exp = clock + 1 + rnd(GRACE * 2);
                        const struct file *f = &files[i];
                        for (int k = 0; k < 2; k++)
                                REQUIRE_OK(chunk_put(a, f->c[k], 'f', f->id, exp));
                        struct chp_rstate_req r;
                        commit_req(&r, f, exp);
                        if (rnd(3) == 0) { /* a pass while the commit is held after step 1 */
                                struct held h;
                                sem_init(&h.held, 0, 0);
                                sem_init(&h.done, 0, 0);
                                r.hold = 1;
                                r.on_hold = held_on;
                                r.done = held_done;
                                r.arg = &h;
                                REQUIRE_OK(chp_rstate_submit(a, &r));
                                REQUIRE(sem_wait_s(&h.held));
                                struct chp_rstate_gc_stats s;
                                REQUIRE_OK(gc(b, "B", clock, &s));
                                removed += s.chunks_removed + s.files_expired;
                                passes++;
                                last_gc = clock;
                                chp_rstate_resume(&r);
                                REQUIRE(sem_wait_s(&h.done));
                                REQUIRE_OK(h.rc);
                                held_commits++;
                        } else {
                                REQUIRE_OK(chp_rstate_run(a, &r));
                        }
                        if (model[i] < exp)
                                model[i] = exp;
                }
                if (rnd(4) == 0) {
                        int i = (int)rnd(NFILES);
                        int rc = delete_file(a, &files[i]);
                        REQUIRE(rc == 0 || rc == -ENOENT);
                        model[i] = 0;
                }
                if (rnd(3) == 0) { /* the audit lowers what deleted files pinned */
                        struct chp_rstate_audit_opts ao = {.now = clock};
                        struct chp_rstate_audit_stats as;
                        REQUIRE_OK(chp_rstate_audit(b, &ao, &as));
                        audits++;
                        lowered += as.lowered;
                }
                clock += rnd(GRACE / 2);
                if (rnd(2) == 0) {
                        struct chp_rstate_gc_stats s;
                        REQUIRE_OK(gc(b, "B", clock, &s));
                        CHECK_EQ(s.errors, 0);
                        removed += s.chunks_removed + s.files_expired;
                        passes++;
                        last_gc = clock;
                }
                /* expired before the last pass: gone (and out of the model) */
                for (int i = 0; i < NFILES; i++)
                        if (model[i] && model[i] < last_gc) {
                                if (exists(F, files[i].id, 32)) {
                                        printf("  round %d: file %d expired at %llu, still there "
                                               "after a pass at %llu\n",
                                               round, i, (unsigned long long)model[i],
                                               (unsigned long long)last_gc);
                                        ok = false;
                                }
                                model[i] = 0;
                        }
                ok = invariant(clock, round) && ok;
        }
        CHECK(ok);
        printf("  %llu passes (%llu during a held commit), %llu objects removed, %llu audits "
               "(%llu leases lowered)\n",
               (unsigned long long)passes, (unsigned long long)held_commits,
               (unsigned long long)removed, (unsigned long long)audits,
               (unsigned long long)lowered);
        /* past every lease and grace: nothing left (of this test, nor of the tests before) */
        struct chp_rstate_gc_stats s;
        CHECK_OK(gc(b, "B", clock + 10 * GRACE + 1000000, &s));
        CHECK_EQ(s.errors, 0);
        CHECK_EQ(count_objects(C), 0);
        CHECK_EQ(count_objects(F), 0);
        CHECK_EQ(count_objects(U), 0);
        CHECK_EQ(count_keys(false), 0);
        CHECK_EQ(count_keys(true), 0);
}

static int open_handle(struct chp_rstate **st)
{
        struct chp_rstate_opts o = {.conf = conf, .pool = pool, .user = user, .inflight = 4};
        return chp_rstate_open(&o, st);
}

int main(int argc, char **argv)
{
        if (argc != 4) {
                fprintf(stderr, "usage: %s CONF POOL USER\n", argv[0]);
                return 2;
        }
        conf = argv[1];
        pool = argv[2];
        user = strncmp(argv[3], "client.", 7) == 0 ? argv[3] + 7 : argv[3];
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (open_handle(&a) || open_handle(&b)) {
                fprintf(stderr, "cannot open the shared state on %s\n", pool);
                return 1;
        }
        if (rados_create(&raw, user) < 0 || rados_conf_read_file(raw, conf) < 0 ||
            rados_connect(raw) < 0)
                return 1;
        for (int i = 0; i < 6; i++) {
                if (rados_ioctx_create(raw, pool, &rio[i]) < 0)
                        return 1;
                rados_ioctx_set_namespace(rio[i], nsn[i]);
        }
        int passed, failed = harness_run(&passed);
        chp_rstate_close(a);
        chp_rstate_close(b);
        for (int i = 0; i < 6; i++)
                rados_ioctx_destroy(rio[i]);
        rados_shutdown(raw);
        return harness_report(passed, failed);
}
