/* The shared state in RADOS (server/store/rados_state.h) on the throw-away cluster that
 * tests/ceph/rados_state.sh starts. Two handles on one pool, each its own librados client, act as
 * two relays ("a" and "b"); a third client ("raw") looks at the objects. Races are driven by the
 * order the test imposes: a request paused at a step (req.hold) while the other handle acts, or
 * two requests submitted at once whose outcome does not depend on which lands first.
 * Usage: test_rados_state CONF POOL USER OSD_PID (the last test stops the OSD, SIGSTOP, and
 * continues it on every path out of this program; the wrapper's EXIT trap continues it too).
 */
#include "../harness.h"

#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/random.h>
#include <time.h>

#include <rados/librados.h>

#include "err.h"
#include "manifest.h"
#include "rados_state.h"

#include "stopped.h"

#define WAIT_S 60 /* a hang guard, not a timing check */

static const char *conf, *pool, *user;
static pid_t osd;
static struct chp_rstate *a, *b;
static rados_t raw;
static rados_ioctx_t rio[6]; /* c f u p t i */
enum { C, F, U, P, T, I };
static const char *const nsn[] = {"c", "f", "u", "p", "t", "i"};

/* ---- data ---- */

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t data[66000];
        uint32_t len;
};

static void make_chunk(struct chunk *c, uint32_t len)
{
        c->len = len;
        if (getrandom(c->data, len, 0) != (ssize_t)len || chp_sha256(c->data, len, c->addr))
                abort();
}

static void rand_id(uint8_t *id, size_t n)
{
        if (getrandom(id, n, 0) != (ssize_t)n)
                abort();
}

/* A file of two chunks (64 KiB, 1000 bytes) and its manifest. */
struct file {
        struct chunk c[2];
        uint8_t man[CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES];
        size_t man_len;
        uint8_t id[CHP_HASH_BYTES];
};

static void make_file(struct file *f)
{
        make_chunk(&f->c[0], CHP_CHUNK_MIN);
        make_chunk(&f->c[1], 1000);
        uint8_t addrs[2 * CHP_HASH_BYTES];
        memcpy(addrs, f->c[0].addr, CHP_HASH_BYTES);
        memcpy(addrs + CHP_HASH_BYTES, f->c[1].addr, CHP_HASH_BYTES);
        struct chp_manifest m = {.version = 1,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = CHP_CHUNK_MIN + 1000,
                                 .chunk_count = 2,
                                 .addrs = addrs};
        ssize_t n = chp_manifest_encode(&m, f->man, sizeof(f->man));
        if (n < 0 || chp_manifest_id(f->man, (size_t)n, f->id))
                abort();
        f->man_len = (size_t)n;
}

/* ---- looking at the objects (the raw client) ---- */

static void hex(const uint8_t *id, size_t n, char *out)
{
        chp_hex_encode(id, n, out);
}

static bool exists(int ns, const char *oid)
{
        uint64_t size;
        time_t mtime;
        return rados_stat(rio[ns], oid, &size, &mtime) == 0;
}

static uint64_t size_of(int ns, const char *oid)
{
        uint64_t size = 0;
        time_t mtime;
        return rados_stat(rio[ns], oid, &size, &mtime) == 0 ? size : UINT64_MAX;
}

/* An xattr of 16 hex digits as a number; UINT64_MAX - 1 when absent or empty. */
static uint64_t xnum(int ns, const char *oid, const char *name)
{
        char v[32];
        int n = rados_getxattr(rio[ns], oid, name, v, sizeof(v) - 1);
        if (n <= 0)
                return UINT64_MAX - 1;
        v[n] = 0;
        return strtoull(v, NULL, 16);
}

static bool omap_has(int ns, const char *oid, const char *key)
{
        rados_read_op_t op = rados_create_read_op();
        rados_omap_iter_t it;
        int prval = 0;
        const char *keys[] = {key};
        rados_read_op_omap_get_vals_by_keys(op, keys, 1, &it, &prval);
        int rc = rados_read_op_operate(op, rio[ns], oid, 0);
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

static void chunk_oid(const struct chunk *c, char oid[80])
{
        hex(c->addr, CHP_HASH_BYTES, oid);
}

static void ref_of(char kind, const uint8_t *id, char key[80])
{
        key[0] = kind;
        hex(id, kind == 'u' ? CHP_UPLOAD_ID_BYTES : CHP_HASH_BYTES, key + 1);
}

/* ---- requests ---- */

static int chunk_put(struct chp_rstate *st, const struct chunk *c, char kind, const uint8_t *id,
                     uint64_t lease, bool *created)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_PUT};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.data = c->data;
        r.u.chunk.len = c->len;
        r.u.chunk.ref.kind = kind;
        memcpy(r.u.chunk.ref.id, id, kind == 'u' ? CHP_UPLOAD_ID_BYTES : CHP_HASH_BYTES);
        r.u.chunk.lease = lease;
        int rc = chp_rstate_run(st, &r);
        if (created)
                *created = r.u.chunk.created;
        return rc;
}

static int chunk_refer(struct chp_rstate *st, const struct chunk *c, const uint8_t fid[32],
                       uint64_t lease, bool *extended)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_REFER};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.ref.kind = 'f';
        memcpy(r.u.chunk.ref.id, fid, CHP_HASH_BYTES);
        r.u.chunk.lease = lease;
        int rc = chp_rstate_run(st, &r);
        if (extended)
                *extended = r.u.chunk.extended;
        return rc;
}

static int chunk_remove(struct chp_rstate *st, const struct chunk *c, uint64_t now, uint64_t lease,
                        bool *removed)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_REMOVE};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.now = now;
        r.u.chunk.grace = 100;
        r.u.chunk.index_lease = lease;
        int rc = chp_rstate_run(st, &r);
        *removed = r.u.chunk.removed;
        return rc;
}

static void commit_req(struct chp_rstate_req *r, const struct file *f, const char *tenant,
                       uint64_t expires)
{
        memset(r, 0, sizeof(*r));
        r->kind = CHP_RS_COMMIT;
        r->u.commit.manifest = f->man;
        r->u.commit.manifest_len = f->man_len;
        r->u.commit.tenant = tenant;
        r->u.commit.created = 1000;
        r->u.commit.expires = expires;
}

static struct chp_tenant_usage usage(const char *tenant)
{
        struct chp_rstate_req r = {.kind = CHP_RS_USAGE_GET};
        r.u.usage.tenant = tenant;
        if (chp_rstate_run(a, &r))
                abort();
        return r.u.usage.usage;
}

/* Puts both chunks of f into upload uid (lease: the upload's expiry). */
static int put_file_chunks(struct chp_rstate *st, const struct file *f, const uint8_t *uid,
                           uint64_t lease)
{
        int rc = 0;
        for (int i = 0; i < 2 && !rc; i++)
                rc = chunk_put(st, &f->c[i], 'u', uid, lease, NULL);
        return rc;
}

/* Asynchronous requests and paused ones, waited for with a bound. */
struct async {
        sem_t done, held;
        int rc;
};

static void async_done(struct chp_rstate_req *r, int rc)
{
        struct async *x = r->arg;
        x->rc = rc;
        sem_post(&x->done);
}

static void async_held(struct chp_rstate_req *r)
{
        struct async *x = r->arg;
        sem_post(&x->held);
}

static int submit(struct chp_rstate *st, struct chp_rstate_req *r, struct async *x)
{
        sem_init(&x->done, 0, 0);
        sem_init(&x->held, 0, 0);
        r->done = async_done;
        r->on_hold = async_held;
        r->arg = x;
        return chp_rstate_submit(st, r);
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

static int wait_done(struct async *x)
{
        if (!sem_wait_s(&x->done)) {
                fprintf(stderr, "a request did not complete within %d s\n", WAIT_S);
                exit(1);
        }
        return x->rc;
}

static void wait_held(struct async *x)
{
        if (!sem_wait_s(&x->held)) {
                fprintf(stderr, "a request did not reach its hold within %d s\n", WAIT_S);
                exit(1);
        }
}

/* ---- chunks ---- */

/* Two relays store the same bytes at once: one object, written once, naming both uploads, its
 * lease the larger of theirs. */
TEST(same_chunk_through_two_handles_at_once)
{
        struct chunk c;
        make_chunk(&c, 5000);
        uint8_t ua[16], ub[16];
        rand_id(ua, 16);
        rand_id(ub, 16);
        struct chp_rstate_req ra = {.kind = CHP_RS_CHUNK_PUT}, rb;
        memcpy(ra.u.chunk.addr, c.addr, CHP_HASH_BYTES);
        ra.u.chunk.data = c.data;
        ra.u.chunk.len = c.len;
        rb = ra;
        ra.u.chunk.ref.kind = rb.u.chunk.ref.kind = 'u';
        memcpy(ra.u.chunk.ref.id, ua, 16);
        memcpy(rb.u.chunk.ref.id, ub, 16);
        ra.u.chunk.lease = 5000;
        rb.u.chunk.lease = 7000;
        struct async xa, xb;
        REQUIRE_OK(submit(a, &ra, &xa));
        REQUIRE_OK(submit(b, &rb, &xb));
        CHECK_OK(wait_done(&xa));
        CHECK_OK(wait_done(&xb));
        CHECK_EQ(ra.u.chunk.created + rb.u.chunk.created, 1);
        char oid[80], k[80];
        chunk_oid(&c, oid);
        CHECK_EQ(size_of(C, oid), 5000);
        ref_of('u', ua, k);
        CHECK(omap_has(C, oid, k));
        ref_of('u', ub, k);
        CHECK(omap_has(C, oid, k));
        CHECK_EQ(xnum(C, oid, "e"), 7000);
        /* the lease index has a key for the lease (either's, the larger one at least) */
        char shard[16], key[100];
        snprintf(shard, sizeof(shard), "cexp.%02x", c.addr[0]);
        snprintf(key, sizeof(key), "%016x%s", 7000, oid);
        CHECK(omap_has(I, shard, key));
}

/* A lease only grows; a refer of a chunk that is not there is -ENOENT and creates nothing; a
 * put whose bytes are not its address is refused. */
TEST(chunk_lease_only_grows)
{
        struct chunk c;
        make_chunk(&c, 3000);
        uint8_t u[16], f[32];
        rand_id(u, 16);
        rand_id(f, 32);
        bool created = false, ext = true;
        CHECK_OK(chunk_put(a, &c, 'u', u, 100, &created));
        CHECK(created);
        char oid[80];
        chunk_oid(&c, oid);
        CHECK_OK(chunk_refer(b, &c, f, 50, &ext));
        CHECK(!ext);
        CHECK_EQ(xnum(C, oid, "e"), 100);
        CHECK_OK(chunk_refer(b, &c, f, 200, &ext));
        CHECK(ext);
        CHECK_EQ(xnum(C, oid, "e"), 200);
        CHECK_OK(chunk_put(b, &c, 'u', u, 150, &created));
        CHECK(!created);
        CHECK_EQ(xnum(C, oid, "e"), 200);

        struct chunk d;
        make_chunk(&d, 100);
        CHECK_EQ(chunk_refer(a, &d, f, 50, NULL), -ENOENT);
        chunk_oid(&d, oid);
        CHECK(!exists(C, oid));
        d.data[0] ^= 1;
        CHECK_EQ(chunk_put(a, &d, 'u', u, 10, NULL), CHP_EMISMATCH);
}

/* Removal is guarded by the lease (+ grace); the lease key is dropped either way. */
TEST(chunk_remove_only_when_expired)
{
        struct chunk c;
        make_chunk(&c, 2000);
        uint8_t u[16];
        rand_id(u, 16);
        CHECK_OK(chunk_put(a, &c, 'u', u, 1000, NULL));
        char oid[80], shard[16], key[100];
        chunk_oid(&c, oid);
        snprintf(shard, sizeof(shard), "cexp.%02x", c.addr[0]);
        snprintf(key, sizeof(key), "%016x%s", 1000, oid);
        CHECK(omap_has(I, shard, key));
        bool removed = true;
        /* 1000 + grace 100 is not past at 1100 */
        CHECK_OK(chunk_remove(b, &c, 1100, 0, &removed));
        CHECK(!removed);
        CHECK(exists(C, oid));
        CHECK_OK(chunk_remove(b, &c, 1101, 1000, &removed));
        CHECK(removed);
        CHECK(!exists(C, oid));
        CHECK(!omap_has(I, shard, key));
        CHECK_OK(chunk_remove(b, &c, 1101, 0, &removed)); /* gone: nothing to do */
        CHECK(!removed);
}

/* A chunk shared by two files: file B's extend against GC's remove, in both orders. */
TEST(extend_against_expire_on_a_shared_chunk)
{
        struct chunk c;
        make_chunk(&c, 2000);
        uint8_t fa[32], fb[32];
        rand_id(fa, 32);
        rand_id(fb, 32);
        CHECK_OK(chunk_put(a, &c, 'f', fa, 10, NULL));
        bool ext = false, removed = true;
        char oid[80];
        chunk_oid(&c, oid);
        /* extend first: the remove (now - grace = 15 > 10) is cancelled */
        CHECK_OK(chunk_refer(a, &c, fb, 20, &ext));
        CHECK(ext);
        CHECK_OK(chunk_remove(b, &c, 115, 10, &removed));
        CHECK(!removed);
        CHECK(exists(C, oid));
        /* remove first (now past 20 + grace): B's extend then finds nothing */
        CHECK_OK(chunk_remove(b, &c, 121, 20, &removed));
        CHECK(removed);
        CHECK_EQ(chunk_refer(a, &c, fb, 30, &ext), -ENOENT);
        CHECK(!exists(C, oid));
}

/* A chunk read by address on the other handle, and one whose bytes went bad. */
TEST(chunk_read_by_address)
{
        struct chunk c;
        make_chunk(&c, 4000);
        uint8_t u[16];
        rand_id(u, 16);
        CHECK_OK(chunk_put(a, &c, 'u', u, 100, NULL));
        static uint8_t buf[CHP_CHUNK_MAX];
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_READ};
        memcpy(r.u.chunk.addr, c.addr, CHP_HASH_BYTES);
        r.u.chunk.buf = buf;
        r.u.chunk.cap = sizeof(buf);
        CHECK_OK(chp_rstate_run(b, &r));
        CHECK_EQ(r.u.chunk.got, 4000);
        CHECK(memcmp(buf, c.data, 4000) == 0);
        char oid[80];
        chunk_oid(&c, oid);
        CHECK_OK(rados_write(rio[C], oid, "x", 1, 10));
        CHECK_EQ(chp_rstate_run(b, &r), CHP_ECORRUPT);
        r.u.chunk.addr[0] ^= 1;
        CHECK_EQ(chp_rstate_run(b, &r), -ENOENT);
}

/* ---- the commit ---- */

/* A file committed through a (with its upload) is read through b: record, manifest, chunks;
 * usage counts the file and no more the upload; the upload and its pending object are gone. */
TEST(commit_on_a_read_on_b)
{
        struct file f;
        make_file(&f);
        const char *tenant = "t-read";
        uint8_t uid[16];
        rand_id(uid, 16);
        /* the upload: its record, its pending object, its chunks */
        uint8_t rec[CHP_REC_UPLOAD_BYTES + 6 + sizeof(f.man)];
        struct chp_rec_upload ur = {.flags = CHP_REC_UPLOAD_HAS_MANIFEST,
                                    .chunk_size = CHP_CHUNK_MIN,
                                    .manifest_len = (uint32_t)f.man_len,
                                    .declared = CHP_CHUNK_MIN + 1000,
                                    .created = 1000,
                                    .expires = 5000,
                                    .file_expires = 9000,
                                    .tenant_len = 6,
                                    .file_id = f.id};
        chp_rec_upload_encode(rec, &ur);
        memcpy(rec + CHP_REC_UPLOAD_BYTES, tenant, 6);
        memcpy(rec + CHP_REC_UPLOAD_BYTES + 6, f.man, f.man_len);
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(r.u.upload.id, uid, 16);
        r.u.upload.rec = rec;
        r.u.upload.rec_len = CHP_REC_UPLOAD_BYTES + 6 + f.man_len;
        REQUIRE_OK(chp_rstate_run(a, &r));
        CHECK_EQ(usage(tenant).incomplete, 1);
        CHECK_EQ(usage(tenant).incomplete_bytes, CHP_CHUNK_MIN + 1000);
        memset(&r, 0, sizeof(r));
        r.kind = CHP_RS_PENDING_TAKE;
        memcpy(r.u.pending.file_id, f.id, 32);
        memcpy(r.u.pending.upload_id, uid, 16);
        REQUIRE_OK(chp_rstate_run(a, &r));
        REQUIRE_OK(put_file_chunks(a, &f, uid, 5000));

        commit_req(&r, &f, tenant, 9000);
        r.u.commit.has_upload = true;
        memcpy(r.u.commit.upload_id, uid, 16);
        r.u.commit.declared = CHP_CHUNK_MIN + 1000;
        r.u.commit.meta = "filename x";
        r.u.commit.meta_len = 10;
        REQUIRE_OK(chp_rstate_run(a, &r));
        CHECK(!r.u.commit.existed);
        CHECK(memcmp(r.u.commit.file_id, f.id, 32) == 0);
        struct chp_tenant_usage use = usage(tenant);
        CHECK_EQ(use.files, 1);
        CHECK_EQ(use.stored_bytes, CHP_CHUNK_MIN + 1000);
        CHECK_EQ(use.incomplete, 0);
        CHECK_EQ(use.incomplete_bytes, 0);
        char oid[80], k[80];
        hex(uid, 16, oid);
        CHECK(!exists(U, oid));
        hex(f.id, 32, oid);
        CHECK(!exists(P, oid));
        chunk_oid(&f.c[0], oid);
        ref_of('f', f.id, k);
        CHECK(omap_has(C, oid, k));
        CHECK_EQ(xnum(C, oid, "e"), 9000);

        struct chp_rstate_req g = {.kind = CHP_RS_FILE_GET};
        memcpy(g.u.file.id, f.id, 32);
        REQUIRE_OK(chp_rstate_run(b, &g));
        CHECK_EQ(g.u.file.file.expires, 9000);
        CHECK_EQ(g.u.file.file.size, CHP_CHUNK_MIN + 1000);
        CHECK_EQ(g.u.file.file.tenant_len, 6);
        CHECK_EQ(g.u.file.got_meta_len, 10);
        struct chp_manifest m;
        REQUIRE(chp_manifest_decode(g.u.file.file.manifest, g.u.file.file.manifest_len, &m) > 0);
        static uint8_t buf[CHP_CHUNK_MAX];
        for (uint32_t i = 0; i < m.chunk_count; i++) {
                struct chp_rstate_req c = {.kind = CHP_RS_CHUNK_READ};
                memcpy(c.u.chunk.addr, m.addrs + i * 32, 32);
                c.u.chunk.buf = buf;
                c.u.chunk.cap = sizeof(buf);
                CHECK_OK(chp_rstate_run(b, &c));
                CHECK_EQ(c.u.chunk.got, f.c[i].len);
                CHECK(memcmp(buf, f.c[i].data, f.c[i].len) == 0);
        }
        chp_rstate_req_release(&g);
        /* the index keys */
        char shard[16], key[120];
        snprintf(shard, sizeof(shard), "exp.%02x", f.id[0]);
        hex(f.id, 32, oid);
        snprintf(key, sizeof(key), "%016xf%s", 9000, oid);
        CHECK(omap_has(I, shard, key));
        snprintf(key, sizeof(key), "%016llx%s", (unsigned long long)~(uint64_t)1000, oid);
        CHECK(omap_has(I, "list.742d72656164", key));

        /* committed again (a retry): found, not counted twice */
        commit_req(&r, &f, tenant, 9000);
        REQUIRE_OK(chp_rstate_run(b, &r));
        CHECK(r.u.commit.existed);
        CHECK_EQ(usage(tenant).files, 1);
}

static size_t upload_rec(uint8_t *out, const char *tenant, uint64_t declared)
{
        size_t tl = strlen(tenant);
        struct chp_rec_upload ur = {.chunk_size = CHP_CHUNK_MIN,
                                    .declared = declared,
                                    .created = 86400 * 3,
                                    .expires = 5000,
                                    .tenant_len = tl};
        chp_rec_upload_encode(out, &ur);
        memcpy(out + CHP_REC_UPLOAD_BYTES, tenant, tl);
        return CHP_REC_UPLOAD_BYTES + tl;
}

/* A tus upload is kept, complete, for HEAD: its commit completes it instead of removing it, and
 * a retried commit (on the other handle) does not count it out of incomplete twice. */
TEST(commit_keeps_a_tus_upload)
{
        struct file f;
        make_file(&f);
        uint8_t uid[16], rec[200];
        rand_id(uid, 16);
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(r.u.upload.id, uid, 16);
        r.u.upload.rec = rec;
        r.u.upload.rec_len = upload_rec(rec, "t-keep", CHP_CHUNK_MIN + 1000);
        REQUIRE_OK(chp_rstate_run(a, &r));
        rand_id(r.u.upload.id, 16); /* another upload, open throughout: usage is not at zero */
        REQUIRE_OK(chp_rstate_run(a, &r));
        REQUIRE_OK(put_file_chunks(a, &f, uid, 5000));
        CHECK_EQ(usage("t-keep").incomplete, 2);
        for (int i = 0; i < 2; i++) {
                commit_req(&r, &f, "t-keep", 9000);
                r.u.commit.has_upload = r.u.commit.keep_upload = true;
                memcpy(r.u.commit.upload_id, uid, 16);
                r.u.commit.declared = CHP_CHUNK_MIN + 1000;
                REQUIRE_OK(chp_rstate_run(i ? b : a, &r));
                CHECK_EQ(r.u.commit.existed, i == 1);
                struct chp_tenant_usage use = usage("t-keep");
                CHECK_EQ(use.incomplete, 1);
                CHECK_EQ(use.incomplete_bytes, CHP_CHUNK_MIN + 1000);
                CHECK_EQ(use.files, 1);
        }
        struct chp_rstate_req g = {.kind = CHP_RS_UPLOAD_GET};
        memcpy(g.u.upload.id, uid, 16);
        REQUIRE_OK(chp_rstate_run(b, &g));
        CHECK(g.u.upload.complete);
        CHECK(memcmp(g.u.upload.file_id, f.id, 32) == 0);
        chp_rstate_req_release(&g);
}

/* Commit against GC, lease extended first: the commit's refers land, then GC's remove of an
 * expired chunk (its upload's lease long past) is cancelled, and the commit completes. */
TEST(commit_against_gc_extend_first)
{
        struct file f;
        make_file(&f);
        uint8_t uid[16];
        rand_id(uid, 16);
        REQUIRE_OK(put_file_chunks(a, &f, uid, 10));
        struct chp_rstate_req r;
        struct async x;
        commit_req(&r, &f, "t-gc1", 9000);
        r.hold = 1; /* after every chunk refer */
        REQUIRE_OK(submit(a, &r, &x));
        wait_held(&x);
        bool removed = true;
        CHECK_OK(chunk_remove(b, &f.c[0], 500, 10, &removed));
        CHECK(!removed);
        chp_rstate_resume(&r);
        CHECK_OK(wait_done(&x));
        char oid[80];
        chunk_oid(&f.c[0], oid);
        CHECK(exists(C, oid));
        hex(f.id, 32, oid);
        CHECK(exists(F, oid));
}

/* Commit against GC, remove first: the commit fails (CHP_EMISSING, the chunk named) before any
 * file exists, and counts nothing. */
TEST(commit_against_gc_remove_first)
{
        struct file f;
        make_file(&f);
        uint8_t uid[16];
        rand_id(uid, 16);
        REQUIRE_OK(put_file_chunks(a, &f, uid, 10));
        bool removed = false;
        CHECK_OK(chunk_remove(b, &f.c[1], 500, 10, &removed));
        CHECK(removed);
        struct chp_rstate_req r;
        commit_req(&r, &f, "t-gc2", 9000);
        CHECK_EQ(chp_rstate_run(a, &r), CHP_EMISSING);
        CHECK_EQ(r.u.commit.missing, 1);
        char oid[80];
        hex(f.id, 32, oid);
        CHECK(!exists(F, oid));
        CHECK_EQ(usage("t-gc2").files, 0);
}

/* Quarantine against commit: a commit after the quarantine is refused; one paused after counting
 * (step 3) while b quarantines is refused at its file create and takes its count back; a lift
 * lets a commit through. */
TEST(quarantine_against_commit)
{
        struct file f;
        make_file(&f);
        uint8_t uid[16];
        rand_id(uid, 16);
        REQUIRE_OK(put_file_chunks(a, &f, uid, 5000));
        struct chp_rstate_req q = {.kind = CHP_RS_FILE_QUARANTINE};
        memcpy(q.u.file.id, f.id, 32);
        q.u.file.now = 777;
        REQUIRE_OK(chp_rstate_run(b, &q));
        CHECK(!q.u.file.existed);
        char oid[80];
        hex(f.id, 32, oid);
        CHECK(omap_has(I, "quarantine", oid));
        struct chp_rstate_req r;
        commit_req(&r, &f, "t-q", 9000);
        CHECK_EQ(chp_rstate_run(a, &r), CHP_EQUARANTINED);
        CHECK_EQ(size_of(F, oid), 0);
        CHECK_EQ(usage("t-q").files, 0);
        char coid[80], k[80];
        chunk_oid(&f.c[0], coid);
        ref_of('f', f.id, k);
        CHECK(!omap_has(C, coid, k)); /* refused before it named any chunk */
        struct chp_rstate_req g = {.kind = CHP_RS_FILE_GET};
        memcpy(g.u.file.id, f.id, 32);
        CHECK_EQ(chp_rstate_run(b, &g), CHP_EQUARANTINED);
        CHECK_EQ(g.u.file.since, 777);

        struct chp_rstate_req l = {.kind = CHP_RS_FILE_LIFT};
        memcpy(l.u.file.id, f.id, 32);
        REQUIRE_OK(chp_rstate_run(a, &l));
        CHECK(!exists(F, oid));
        CHECK(!omap_has(I, "quarantine", oid));
        CHECK_EQ(chp_rstate_run(a, &l), -ENOENT);

        struct async x;
        commit_req(&r, &f, "t-q", 9000);
        r.hold = 3; /* counted, the file not yet written */
        REQUIRE_OK(submit(a, &r, &x));
        wait_held(&x);
        CHECK_EQ(usage("t-q").files, 1);
        REQUIRE_OK(chp_rstate_run(b, &q));
        chp_rstate_resume(&r);
        CHECK_EQ(wait_done(&x), CHP_EQUARANTINED);
        CHECK_EQ(usage("t-q").files, 0);
        CHECK_EQ(size_of(F, oid), 0);

        CHECK_OK(chp_rstate_run(a, &l));
        commit_req(&r, &f, "t-q", 9000);
        CHECK_OK(chp_rstate_run(a, &r));
        CHECK_EQ(usage("t-q").files, 1);
        /* quarantining a stored file: a tombstone, its keys and its count gone */
        REQUIRE_OK(chp_rstate_run(b, &q));
        CHECK(q.u.file.existed);
        CHECK_EQ(size_of(F, oid), 0);
        CHECK_EQ(usage("t-q").files, 0);
        char shard[16], key[120];
        snprintf(shard, sizeof(shard), "exp.%02x", f.id[0]);
        snprintf(key, sizeof(key), "%016xf%s", 9000, oid);
        CHECK(!omap_has(I, shard, key));
}

/* ---- files ---- */

static size_t file_rec(uint8_t *out, const struct file *f, const char *tenant, uint64_t expires)
{
        size_t tl = strlen(tenant);
        chp_rec_file_encode(out, (uint8_t)tl, (uint32_t)f->man_len, 1000, expires,
                            CHP_CHUNK_MIN + 1000);
        memcpy(out + CHP_REC_FILE_BYTES, tenant, tl);
        memcpy(out + CHP_REC_FILE_BYTES + tl, f->man, f->man_len);
        return CHP_REC_FILE_BYTES + tl + f->man_len;
}

/* Create, extend (only up), expire (only when due), delete (not a tombstone). */
TEST(file_put_extend_expire_delete)
{
        struct file f;
        make_file(&f);
        uint8_t rec[256];
        struct chp_rstate_req r = {.kind = CHP_RS_FILE_PUT};
        memcpy(r.u.file.id, f.id, 32);
        r.u.file.rec = rec;
        r.u.file.rec_len = file_rec(rec, &f, "t-f", 100);
        REQUIRE_OK(chp_rstate_run(a, &r));
        CHECK(!r.u.file.existed);
        char oid[80];
        hex(f.id, 32, oid);
        CHECK_EQ(xnum(F, oid, "e"), 100);
        r.u.file.rec_len = file_rec(rec, &f, "t-f", 200);
        REQUIRE_OK(chp_rstate_run(b, &r));
        CHECK(r.u.file.existed);
        CHECK(r.u.file.extended);
        CHECK_EQ(xnum(F, oid, "e"), 200);
        r.u.file.rec_len = file_rec(rec, &f, "t-f", 150);
        REQUIRE_OK(chp_rstate_run(b, &r));
        CHECK(!r.u.file.extended);
        struct chp_rstate_req g = {.kind = CHP_RS_FILE_GET};
        memcpy(g.u.file.id, f.id, 32);
        REQUIRE_OK(chp_rstate_run(a, &g));
        CHECK_EQ(g.u.file.file.expires, 200); /* the record's expiry moved with e */
        chp_rstate_req_release(&g);

        struct chp_rstate_req e = {.kind = CHP_RS_FILE_EXPIRE};
        memcpy(e.u.file.id, f.id, 32);
        e.u.file.now = 200;
        CHECK_OK(chp_rstate_run(a, &e));
        CHECK(!e.u.file.removed);
        CHECK(exists(F, oid));
        e.u.file.now = 201;
        CHECK_OK(chp_rstate_run(b, &e));
        CHECK(e.u.file.removed);
        CHECK(!exists(F, oid));
        char shard[16], key[120];
        snprintf(shard, sizeof(shard), "exp.%02x", f.id[0]);
        snprintf(key, sizeof(key), "%016xf%s", 200, oid);
        CHECK(!omap_has(I, shard, key));

        struct chp_rstate_req d = {.kind = CHP_RS_FILE_DELETE};
        memcpy(d.u.file.id, f.id, 32);
        CHECK_EQ(chp_rstate_run(a, &d), -ENOENT);
        r.u.file.rec_len = file_rec(rec, &f, "t-f", 300);
        REQUIRE_OK(chp_rstate_run(a, &r));
        struct chp_rstate_req l = {.kind = CHP_RS_FILE_LIFT};
        memcpy(l.u.file.id, f.id, 32);
        CHECK_EQ(chp_rstate_run(a, &l), -ENOENT); /* not quarantined: a lift removes nothing */
        CHECK(exists(F, oid));
        CHECK_OK(chp_rstate_run(b, &d));
        CHECK(!exists(F, oid));
        struct chp_rstate_req q = {.kind = CHP_RS_FILE_QUARANTINE};
        memcpy(q.u.file.id, f.id, 32);
        q.u.file.now = 5;
        REQUIRE_OK(chp_rstate_run(a, &q));
        CHECK_EQ(chp_rstate_run(b, &d), CHP_EQUARANTINED);
        CHECK(exists(F, oid));
        CHECK_EQ(chp_rstate_run(b, &r), CHP_EQUARANTINED);
}

/* ---- uploads and pending ---- */

/* Two relays take the pending object of one file id at once: one wins, the other learns its
 * upload; a swap from a dead owner, and drops that only the owner's succeeds. */
TEST(pending_take_by_two_handles)
{
        uint8_t fid[32], ua[16], ub[16];
        rand_id(fid, 32);
        rand_id(ua, 16);
        rand_id(ub, 16);
        struct chp_rstate_req ra = {.kind = CHP_RS_PENDING_TAKE}, rb;
        memcpy(ra.u.pending.file_id, fid, 32);
        rb = ra;
        memcpy(ra.u.pending.upload_id, ua, 16);
        memcpy(rb.u.pending.upload_id, ub, 16);
        struct async xa, xb;
        REQUIRE_OK(submit(a, &ra, &xa));
        REQUIRE_OK(submit(b, &rb, &xb));
        int rca = wait_done(&xa), rcb = wait_done(&xb);
        REQUIRE((rca == 0 && rcb == -EEXIST) || (rca == -EEXIST && rcb == 0));
        struct chp_rstate_req *loser = rca ? &ra : &rb;
        const uint8_t *winner = rca ? ub : ua, *lost = rca ? ua : ub;
        CHECK(memcmp(loser->u.pending.owner, winner, 16) == 0);
        /* the loser may not drop it */
        struct chp_rstate_req d = {.kind = CHP_RS_PENDING_DROP};
        memcpy(d.u.pending.file_id, fid, 32);
        memcpy(d.u.pending.upload_id, lost, 16);
        CHECK_OK(chp_rstate_run(a, &d));
        CHECK(!d.u.pending.dropped);
        /* the winner's upload died: the loser swaps it in; a second swap from it fails */
        struct chp_rstate_req s = {.kind = CHP_RS_PENDING_SWAP};
        memcpy(s.u.pending.file_id, fid, 32);
        memcpy(s.u.pending.dead, winner, 16);
        memcpy(s.u.pending.upload_id, lost, 16);
        CHECK_OK(chp_rstate_run(b, &s));
        CHECK_EQ(chp_rstate_run(a, &s), -EEXIST);
        CHECK(memcmp(s.u.pending.owner, lost, 16) == 0);
        struct chp_rstate_req g = {.kind = CHP_RS_PENDING_GET};
        memcpy(g.u.pending.file_id, fid, 32);
        CHECK_OK(chp_rstate_run(a, &g));
        CHECK(memcmp(g.u.pending.owner, lost, 16) == 0);
        CHECK_OK(chp_rstate_run(a, &d));
        CHECK(d.u.pending.dropped);
        CHECK_EQ(chp_rstate_run(a, &g), -ENOENT);
}

/* An upload: put chunks while open, complete (again: the same file is success), then puts are
 * refused; removal takes the record and the offset object. */
TEST(upload_put_complete_remove)
{
        uint8_t uid[16], fid[32], other[32], addr[32];
        rand_id(uid, 16);
        rand_id(fid, 32);
        rand_id(other, 32);
        rand_id(addr, 32);
        uint8_t rec[200];
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(r.u.upload.id, uid, 16);
        r.u.upload.rec = rec;
        r.u.upload.rec_len = upload_rec(rec, "t-up", 100);
        REQUIRE_OK(chp_rstate_run(a, &r));
        struct chp_rstate_req p = {.kind = CHP_RS_UPLOAD_PUT_CHUNK};
        memcpy(p.u.upload.id, uid, 16);
        memcpy(p.u.upload.addr, addr, 32);
        p.u.upload.index = 3;
        CHECK_OK(chp_rstate_run(b, &p));
        char oid[80];
        hex(uid, 16, oid);
        CHECK(omap_has(U, oid, "00000003"));
        struct chp_rstate_req c = {.kind = CHP_RS_UPLOAD_COMPLETE};
        memcpy(c.u.upload.id, uid, 16);
        memcpy(c.u.upload.file_id, fid, 32);
        CHECK_OK(chp_rstate_run(a, &c));
        CHECK(!c.u.upload.complete);
        CHECK_OK(chp_rstate_run(b, &c));
        CHECK(c.u.upload.complete);
        memcpy(c.u.upload.file_id, other, 32);
        CHECK_EQ(chp_rstate_run(b, &c), -EEXIST);
        CHECK_EQ(chp_rstate_run(b, &p), -ENOENT);
        struct chp_rstate_req g = {.kind = CHP_RS_UPLOAD_GET};
        memcpy(g.u.upload.id, uid, 16);
        CHECK_OK(chp_rstate_run(b, &g));
        CHECK(g.u.upload.complete);
        CHECK(memcmp(g.u.upload.file_id, fid, 32) == 0);
        chp_rstate_req_release(&g);
        struct chp_rstate_req t = {.kind = CHP_RS_TUS_APPEND};
        memcpy(t.u.tus.upload_id, uid, 16);
        t.u.tus.data = "abc";
        t.u.tus.len = 3;
        CHECK_OK(chp_rstate_run(a, &t));
        struct chp_rstate_req d = {.kind = CHP_RS_UPLOAD_REMOVE};
        memcpy(d.u.upload.id, uid, 16);
        CHECK_OK(chp_rstate_run(a, &d));
        CHECK(!exists(U, oid));
        char toid[96];
        snprintf(toid, sizeof(toid), "%s.t", oid);
        CHECK(!exists(U, toid));
        CHECK_EQ(chp_rstate_run(a, &d), -ENOENT);
        CHECK_EQ(chp_rstate_run(a, &p), -ENOENT);
}

static int page(struct chp_rstate_req *r, enum chp_rstate_index index, const char *after,
                uint32_t max)
{
        r->kind = CHP_RS_INDEX_PAGE;
        r->u.page.index = index;
        r->u.page.after = after;
        r->u.page.max = max;
        return chp_rstate_run(b, r);
}

/* Index pages: an upload's chunks in index order, two at a time; the quarantine list with its
 * since; a file's keys in its tenant's list and its expiry shard. */
TEST(index_pages)
{
        uint8_t uid[16], rec[200], addr[32];
        rand_id(uid, 16);
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(r.u.upload.id, uid, 16);
        r.u.upload.rec = rec;
        r.u.upload.rec_len = upload_rec(rec, "t-page", 100);
        REQUIRE_OK(chp_rstate_run(a, &r));
        for (uint32_t i = 0; i < 3; i++) {
                struct chp_rstate_req p = {.kind = CHP_RS_UPLOAD_PUT_CHUNK};
                memcpy(p.u.upload.id, uid, 16);
                memset(addr, (int)i + 1, 32);
                memcpy(p.u.upload.addr, addr, 32);
                p.u.upload.index = 2 - i;
                REQUIRE_OK(chp_rstate_run(a, &p));
        }
        struct chp_rstate_req g = {0};
        memcpy(g.u.page.id, uid, 16);
        REQUIRE_OK(page(&g, CHP_RS_INDEX_UPLOAD_CHUNKS, NULL, 2));
        CHECK_EQ(g.u.page.n, 2);
        CHECK(g.u.page.more);
        CHECK(strcmp(g.u.page.entries[0].key, "00000000") == 0);
        CHECK(strcmp(g.u.page.entries[1].key, "00000001") == 0);
        CHECK_EQ(g.u.page.entries[0].val_len, 32);
        CHECK_EQ(g.u.page.entries[0].val[0], 3); /* index 0 was the third put */
        char last[CHP_RSTATE_KEY_MAX];
        memcpy(last, g.u.page.entries[1].key, sizeof(last));
        chp_rstate_req_release(&g);
        REQUIRE_OK(page(&g, CHP_RS_INDEX_UPLOAD_CHUNKS, last, 2));
        CHECK_EQ(g.u.page.n, 1);
        CHECK(!g.u.page.more);
        CHECK(g.u.page.n == 1 && strcmp(g.u.page.entries[0].key, "00000002") == 0);
        chp_rstate_req_release(&g);

        struct file f;
        make_file(&f);
        REQUIRE_OK(put_file_chunks(a, &f, uid, 5000));
        struct chp_rstate_req c;
        commit_req(&c, &f, "t-page", 0x1234);
        REQUIRE_OK(chp_rstate_run(a, &c));
        char id[80], want[120];
        hex(f.id, 32, id);
        memset(&g, 0, sizeof(g));
        g.u.page.tenant = "t-page";
        REQUIRE_OK(page(&g, CHP_RS_INDEX_LIST, NULL, 10));
        snprintf(want, sizeof(want), "%016llx%s", (unsigned long long)~(uint64_t)1000, id);
        CHECK(g.u.page.n == 1 && strcmp(g.u.page.entries[0].key, want) == 0);
        chp_rstate_req_release(&g);
        memset(&g, 0, sizeof(g));
        g.u.page.shard = f.id[0];
        REQUIRE_OK(page(&g, CHP_RS_INDEX_EXP, "0000000000001234", CHP_RSTATE_PAGE_MAX));
        snprintf(want, sizeof(want), "%016xf%s", 0x1234, id);
        bool seen = false;
        for (uint32_t i = 0; i < g.u.page.n; i++)
                seen |= strcmp(g.u.page.entries[i].key, want) == 0;
        CHECK(seen);
        chp_rstate_req_release(&g);

        struct chp_rstate_req q = {.kind = CHP_RS_FILE_QUARANTINE};
        memcpy(q.u.file.id, f.id, 32);
        q.u.file.now = 4242;
        REQUIRE_OK(chp_rstate_run(a, &q));
        memset(&g, 0, sizeof(g));
        REQUIRE_OK(page(&g, CHP_RS_INDEX_QUARANTINE, NULL, CHP_RSTATE_PAGE_MAX));
        seen = false;
        for (uint32_t i = 0; i < g.u.page.n; i++)
                if (strcmp(g.u.page.entries[i].key, id) == 0)
                        seen = g.u.page.entries[i].val_len == 8 &&
                               g.u.page.entries[i].val[0] == (4242 & 0xff) &&
                               g.u.page.entries[i].val[1] == (4242 >> 8);
        CHECK(seen);
        chp_rstate_req_release(&g);
        memset(&g, 0, sizeof(g));
        CHECK_EQ(page(&g, CHP_RS_INDEX_QUARANTINE, NULL, 0), -EINVAL);
}

/* tus offsets: two writers at one offset, exactly one moves it; absorb drops the tail. */
TEST(tus_offset_guarded)
{
        uint8_t uid[16];
        rand_id(uid, 16);
        struct chp_rstate_req t = {.kind = CHP_RS_TUS_APPEND}, u;
        memcpy(t.u.tus.upload_id, uid, 16);
        t.u.tus.data = "hello";
        t.u.tus.len = 5;
        u = t;
        u.u.tus.data = "HELLO";
        struct async xa, xb;
        REQUIRE_OK(submit(a, &t, &xa));
        REQUIRE_OK(submit(b, &u, &xb));
        int ra = wait_done(&xa), rb = wait_done(&xb);
        REQUIRE((ra == 0 && rb == -ESTALE) || (ra == -ESTALE && rb == 0));
        CHECK_EQ((ra ? &t : &u)->u.tus.offset, 5);
        t.u.tus.old = 5;
        t.u.tus.data = " world";
        t.u.tus.len = 6;
        CHECK_OK(chp_rstate_run(a, &t));
        CHECK_EQ(t.u.tus.offset, 11);
        CHECK_EQ(chp_rstate_run(b, &t), -ESTALE); /* a resend at the old offset */
        CHECK_EQ(t.u.tus.offset, 11);
        char buf[64];
        struct chp_rstate_req g = {.kind = CHP_RS_TUS_GET};
        memcpy(g.u.tus.upload_id, uid, 16);
        g.u.tus.buf = buf;
        g.u.tus.cap = sizeof(buf);
        CHECK_OK(chp_rstate_run(b, &g));
        CHECK_EQ(g.u.tus.offset, 11);
        CHECK_EQ(g.u.tus.got, 11);
        CHECK(memcmp(buf + 5, " world", 6) == 0);
        struct chp_rstate_req ab = {.kind = CHP_RS_TUS_ABSORB};
        memcpy(ab.u.tus.upload_id, uid, 16);
        ab.u.tus.old = 11;
        ab.u.tus.len = 0;
        CHECK_OK(chp_rstate_run(a, &ab));
        CHECK_OK(chp_rstate_run(b, &g));
        CHECK_EQ(g.u.tus.offset, 11);
        CHECK_EQ(g.u.tus.got, 0);
}

/* ---- usage ---- */

/* A tenant with room for one more upload: two relays create one each at once, exactly one is
 * refused. Then the compare-and-set race made certain: both usage adds paused after their read,
 * continued together; one lands, the other re-reads and is refused by the quota. */
TEST(quota_on_two_handles)
{
        struct chp_store_quota quota = {.max_stored = UINT64_MAX,
                                        .max_incomplete = 1,
                                        .max_per_day = UINT64_MAX,
                                        .now = 86400 * 3};
        uint8_t ua[16], ub[16], rec[200];
        rand_id(ua, 16);
        rand_id(ub, 16);
        struct chp_rstate_req ra = {.kind = CHP_RS_UPLOAD_CREATE}, rb;
        ra.u.upload.rec = rec;
        ra.u.upload.rec_len = upload_rec(rec, "t-quota", 10);
        ra.u.upload.quota = &quota;
        rb = ra;
        memcpy(ra.u.upload.id, ua, 16);
        memcpy(rb.u.upload.id, ub, 16);
        struct async xa, xb;
        REQUIRE_OK(submit(a, &ra, &xa));
        REQUIRE_OK(submit(b, &rb, &xb));
        int rca = wait_done(&xa), rcb = wait_done(&xb);
        CHECK((rca == 0 && rcb == CHP_EQUOTA) || (rca == CHP_EQUOTA && rcb == 0));
        CHECK_EQ((rca ? &ra : &rb)->u.upload.quota_hit, CHP_QUOTA_INCOMPLETE);
        CHECK_EQ(usage("t-quota").incomplete, 1);
        char oid[80];
        hex(rca ? ua : ub, 16, oid);
        CHECK(!exists(U, oid));

        quota.max_incomplete = 2;
        struct chp_rstate_req sa = {.kind = CHP_RS_USAGE_ADD}, sb;
        sa.u.usage.tenant = "t-quota";
        sa.u.usage.d.incomplete = 1;
        sa.u.usage.quota = &quota;
        sa.u.usage.sessions = 1;
        sa.hold = 1;
        sb = sa;
        REQUIRE_OK(submit(a, &sa, &xa));
        REQUIRE_OK(submit(b, &sb, &xb));
        wait_held(&xa);
        wait_held(&xb);
        chp_rstate_resume(&sa);
        CHECK_OK(wait_done(&xa));
        chp_rstate_resume(&sb);
        CHECK_EQ(wait_done(&xb), CHP_EQUOTA);
        CHECK_EQ(sb.u.usage.tries, 1); /* its write was cancelled, its re-read refused */
        CHECK_EQ(usage("t-quota").incomplete, 2);
}

/* Many requests at once wait in the handle's queue (never more than its 4 operations in flight);
 * a commit of 2100 chunks refers them a window at a time, and its record (over 64 KiB) is read
 * whole on the other handle. */
struct many {
        sem_t done;
        int errors;
        pthread_mutex_t mu;
};

static void many_done(struct chp_rstate_req *r, int rc)
{
        struct many *m = r->arg;
        if (rc) {
                pthread_mutex_lock(&m->mu);
                m->errors++;
                pthread_mutex_unlock(&m->mu);
        }
        sem_post(&m->done);
}

TEST(many_chunks_bounded_and_a_large_record)
{
        enum { N = 2100, LEN = 100 };
        uint8_t(*data)[LEN] = malloc((size_t)N * LEN);
        uint8_t *addrs = malloc((size_t)N * CHP_HASH_BYTES);
        struct chp_rstate_req *rs = calloc(N, sizeof(*rs));
        size_t man_cap = CHP_MANIFEST_HEADER + (size_t)N * CHP_HASH_BYTES;
        uint8_t *man = malloc(man_cap);
        REQUIRE(data && addrs && rs && man);
        uint8_t uid[16];
        rand_id(uid, 16);
        struct many m = {.mu = PTHREAD_MUTEX_INITIALIZER};
        sem_init(&m.done, 0, 0);
        for (int i = 0; i < N; i++) {
                rand_id(data[i], LEN);
                if (chp_sha256(data[i], LEN, addrs + (size_t)i * CHP_HASH_BYTES))
                        abort();
                rs[i].kind = CHP_RS_CHUNK_PUT;
                memcpy(rs[i].u.chunk.addr, addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES);
                rs[i].u.chunk.data = data[i];
                rs[i].u.chunk.len = LEN;
                rs[i].u.chunk.ref.kind = 'u';
                memcpy(rs[i].u.chunk.ref.id, uid, 16);
                rs[i].u.chunk.lease = 5000;
                rs[i].done = many_done;
                rs[i].arg = &m;
                REQUIRE_OK(chp_rstate_submit(a, &rs[i]));
        }
        uint32_t now, peak, queued;
        chp_rstate_inflight(a, &now, &peak, &queued);
        CHECK(queued > 0); /* 2100 requests do not fit 4 slots */
        for (int i = 0; i < N; i++)
                REQUIRE(sem_wait_s(&m.done));
        CHECK_EQ(m.errors, 0);
        chp_rstate_inflight(a, &now, &peak, &queued);
        CHECK_EQ(peak, 4);
        CHECK_EQ(queued, 0);

        struct chp_manifest mf = {.version = 1,
                                  .chunk_size = CHP_CHUNK_MIN,
                                  .total_size = (uint64_t)N * CHP_CHUNK_MIN,
                                  .chunk_count = N,
                                  .addrs = addrs};
        ssize_t n = chp_manifest_encode(&mf, man, man_cap);
        REQUIRE(n > 65536);
        struct chp_rstate_req r;
        memset(&r, 0, sizeof(r));
        r.kind = CHP_RS_COMMIT;
        r.u.commit.manifest = man;
        r.u.commit.manifest_len = (size_t)n;
        r.u.commit.tenant = "t-many";
        r.u.commit.expires = 9000;
        REQUIRE_OK(chp_rstate_run(a, &r));
        char oid[80], k[80];
        hex(addrs + (size_t)(N - 1) * CHP_HASH_BYTES, 32, oid);
        ref_of('f', r.u.commit.file_id, k);
        CHECK(omap_has(C, oid, k));
        CHECK_EQ(xnum(C, oid, "e"), 9000);
        struct chp_rstate_req g = {.kind = CHP_RS_FILE_GET};
        memcpy(g.u.file.id, r.u.commit.file_id, 32);
        REQUIRE_OK(chp_rstate_run(b, &g));
        CHECK_EQ(g.u.file.file.manifest_len, (size_t)n);
        CHECK(g.u.file.file.manifest_len == (size_t)n &&
              memcmp(g.u.file.file.manifest, man, (size_t)n) == 0);
        chp_rstate_req_release(&g);
        chp_rstate_inflight(a, &now, &peak, &queued);
        CHECK_EQ(peak, 4);
        free(data);
        free(addrs);
        free(rs);
        free(man);
}

/* Last: a cluster that does not answer (the OSD stopped) fails a write and a read with
 * CHP_EUNAVAILABLE within the handle's op_timeout; both work again once it answers. */
TEST(cluster_silent_is_unavailable)
{
        struct chp_rstate_opts o = {.conf = conf, .pool = pool, .user = user, .op_timeout = 2};
        struct chp_rstate *c = NULL;
        REQUIRE_OK(chp_rstate_open(&o, &c));
        struct chunk ch;
        make_chunk(&ch, 1500);
        uint8_t uid[16];
        rand_id(uid, 16);
        static uint8_t buf[CHP_CHUNK_MAX];
        struct chp_rstate_req rd = {.kind = CHP_RS_CHUNK_READ};
        memcpy(rd.u.chunk.addr, ch.addr, CHP_HASH_BYTES);
        rd.u.chunk.buf = buf;
        rd.u.chunk.cap = sizeof(buf);
        REQUIRE(kill(osd, SIGSTOP) == 0);
        REQUIRE(ceph_wait_stopped(osd));
        int put = chunk_put(c, &ch, 'u', uid, 100, NULL);
        int read = chp_rstate_run(c, &rd);
        kill(osd, SIGCONT);
        CHECK_EQ(put, CHP_EUNAVAILABLE);
        CHECK_EQ(read, CHP_EUNAVAILABLE);
        CHECK_OK(
            chunk_put(c, &ch, 'u', uid, 100, NULL)); /* the first may have landed: either way */
        CHECK_OK(chp_rstate_run(c, &rd));
        CHECK_EQ(rd.u.chunk.got, 1500);
        chp_rstate_close(c);
}

static int open_handle(struct chp_rstate **st)
{
        struct chp_rstate_opts o = {.conf = conf, .pool = pool, .user = user, .inflight = 4};
        return chp_rstate_open(&o, st);
}

static void osd_continue(void)
{
        kill(osd, SIGCONT); /* every exit path: the OSD must not stay stopped */
}

int main(int argc, char **argv)
{
        if (argc != 5 || strtol(argv[4], NULL, 10) <= 0) {
                fprintf(stderr, "usage: %s CONF POOL USER OSD_PID\n", argv[0]);
                return 2;
        }
        osd = (pid_t)strtol(argv[4], NULL, 10);
        atexit(osd_continue);
        conf = argv[1];
        pool = argv[2];
        user = strncmp(argv[3], "client.", 7) == 0 ? argv[3] + 7 : argv[3];
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
