/* The store's requests over the shared state (server/store/shared_write.c, [store] rados_shared)
 * on the throw-away cluster that tests/ceph/shared_write.sh starts. Two stores ("a" and "b"),
 * each with a directory of its own, on one pool act as two relays; their requests are made with
 * chp_store_run (or chp_store_submit, to have two in flight at once), and what they did is looked
 * at through a chp_rstate handle of the test's own ("st"), never through the store's reads.
 * Usage: test_shared_write CONF POOL USER
 */
#include "../harness.h"

#include <errno.h>
#include <semaphore.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "manifest.h"
#include "rados_state.h"
#include "records.h"
#include "store.h"

static const char *conf, *pool, *user;
static struct chp_store *a, *b;
static struct chp_rstate *st;
static char dirs[2][64];

/* ---- data ---- */

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t data[CHP_CHUNK_MIN];
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

static void file_of(struct file *f)
{
        uint8_t addrs[2 * CHP_HASH_BYTES];
        memcpy(addrs, f->c[0].addr, CHP_HASH_BYTES);
        memcpy(addrs + CHP_HASH_BYTES, f->c[1].addr, CHP_HASH_BYTES);
        struct chp_manifest m = {.version = 1,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = f->c[0].len + f->c[1].len,
                                 .chunk_count = 2,
                                 .addrs = addrs};
        ssize_t n = chp_manifest_encode(&m, f->man, sizeof(f->man));
        if (n < 0 || chp_manifest_id(f->man, (size_t)n, f->id))
                abort();
        f->man_len = (size_t)n;
}

static struct file *make_file(void)
{
        struct file *f = calloc(1, sizeof(*f));
        if (!f)
                abort();
        make_chunk(&f->c[0], CHP_CHUNK_MIN);
        make_chunk(&f->c[1], 1000);
        file_of(f);
        return f;
}

static uint64_t now(void)
{
        return (uint64_t)time(NULL);
}

static void upload_init(struct chp_upload *u, const char *tenant, const char *subject)
{
        memset(u, 0, sizeof(*u));
        rand_id(u->id, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "%s", tenant);
        snprintf(u->subject, sizeof(u->subject), "%s", subject);
        u->declared_size = CHP_UPLOAD_SIZE_UNKNOWN;
        u->chunk_size = CHP_CHUNK_MIN;
        u->created = now();
        u->expires = now() + 3600;
        u->file_expires = now() + 7200;
}

/* ---- the stores' requests ---- */

static int create(struct chp_store *s, const struct chp_upload *u, const struct file *f,
                  const struct chp_store_quota *quota, struct chp_store_req *r)
{
        memset(r, 0, sizeof(*r));
        r->type = CHP_REQ_UPLOAD_CREATE;
        r->u.upload_create.upload = u;
        r->u.upload_create.manifest = f ? f->man : NULL;
        r->u.upload_create.manifest_len = f ? f->man_len : 0;
        r->u.upload_create.quota = quota;
        return chp_store_run(s, r);
}

static void put_req(struct chp_store_req *r, const struct chunk *c, bool with_data,
                    const uint8_t *upload_id, uint32_t index)
{
        memset(r, 0, sizeof(*r));
        r->type = CHP_REQ_PUT;
        memcpy(r->u.put.addr, c->addr, CHP_HASH_BYTES);
        r->u.put.data = with_data ? c->data : NULL;
        r->u.put.len = with_data ? c->len : 0;
        if (upload_id) {
                r->u.put.has_upload = true;
                memcpy(r->u.put.upload_id, upload_id, CHP_UPLOAD_ID_BYTES);
                r->u.put.index = index;
        }
}

static int put(struct chp_store *s, const struct chunk *c, const uint8_t *upload_id, uint32_t index,
               bool *dedup)
{
        struct chp_store_req r;
        put_req(&r, c, true, upload_id, index);
        int rc = chp_store_run(s, &r);
        if (dedup)
                *dedup = r.u.put.deduplicated;
        return rc;
}

static int commit(struct chp_store *s, const struct file *f, const uint8_t *upload_id, bool keep,
                  struct chp_store_req *r)
{
        memset(r, 0, sizeof(*r));
        r->type = CHP_REQ_COMMIT;
        r->u.commit.manifest = f ? f->man : NULL;
        r->u.commit.manifest_len = f ? f->man_len : 0;
        r->u.commit.expires = now() + 7200;
        if (upload_id) {
                r->u.commit.has_upload = true;
                r->u.commit.keep_upload = keep;
                memcpy(r->u.commit.upload_id, upload_id, CHP_UPLOAD_ID_BYTES);
        }
        return chp_store_run(s, r);
}

static void tail_req(struct chp_store_req *r, const uint8_t *upload_id, const void *data,
                     uint32_t len)
{
        memset(r, 0, sizeof(*r));
        r->type = CHP_REQ_TAIL_APPEND;
        memcpy(r->u.tail_append.upload_id, upload_id, CHP_UPLOAD_ID_BYTES);
        r->u.tail_append.data = data;
        r->u.tail_append.len = len;
}

static int tail(struct chp_store *s, const uint8_t *upload_id, const void *data, uint32_t len)
{
        struct chp_store_req r;
        tail_req(&r, upload_id, data, len);
        return chp_store_run(s, &r);
}

static int simple(struct chp_store *s, enum chp_store_req_type type, const uint8_t *id, bool lift,
                  bool *deleted)
{
        struct chp_store_req r = {.type = type};
        if (type == CHP_REQ_UPLOAD_DELETE)
                memcpy(r.u.upload_delete.upload_id, id, CHP_UPLOAD_ID_BYTES);
        else if (type == CHP_REQ_FILE_DELETE)
                memcpy(r.u.file_delete.file_id, id, CHP_HASH_BYTES);
        else {
                memcpy(r.u.quarantine.file_id, id, CHP_HASH_BYTES);
                r.u.quarantine.lift = lift;
        }
        int rc = chp_store_run(s, &r);
        if (deleted)
                *deleted = r.u.quarantine.deleted;
        return rc;
}

/* ---- looking at the pool (the test's own handle) ---- */

static int file_get(const uint8_t id[CHP_HASH_BYTES], uint8_t *meta, size_t *meta_len)
{
        struct chp_rstate_req r = {.kind = CHP_RS_FILE_GET};
        memcpy(r.u.file.id, id, CHP_HASH_BYTES);
        int rc = chp_rstate_run(st, &r);
        if (rc == 0 && meta_len) {
                *meta_len = r.u.file.got_meta_len;
                if (r.u.file.got_meta_len)
                        memcpy(meta, r.u.file.got_meta, r.u.file.got_meta_len);
        }
        chp_rstate_req_release(&r);
        return rc;
}

static int upload_get(const uint8_t id[CHP_UPLOAD_ID_BYTES], bool *complete, uint64_t *declared)
{
        struct chp_rstate_req r = {.kind = CHP_RS_UPLOAD_GET};
        memcpy(r.u.upload.id, id, CHP_UPLOAD_ID_BYTES);
        int rc = chp_rstate_run(st, &r);
        struct chp_rec_upload u;
        if (rc == 0 && chp_rec_upload_parse(r.u.upload.got, r.u.upload.got_len, &u) < 0)
                rc = CHP_ECORRUPT;
        if (rc == 0 && complete)
                *complete = r.u.upload.complete;
        if (rc == 0 && declared)
                *declared = u.declared;
        chp_rstate_req_release(&r);
        return rc;
}

static int pending_get(const uint8_t fid[CHP_HASH_BYTES], uint8_t owner[CHP_UPLOAD_ID_BYTES])
{
        struct chp_rstate_req r = {.kind = CHP_RS_PENDING_GET};
        memcpy(r.u.pending.file_id, fid, CHP_HASH_BYTES);
        int rc = chp_rstate_run(st, &r);
        if (rc == 0 && owner)
                memcpy(owner, r.u.pending.owner, CHP_UPLOAD_ID_BYTES);
        return rc;
}

/* How many chunks the upload's omap names; addrs[i] (two at most) for index i. */
static int upload_chunks(const uint8_t id[CHP_UPLOAD_ID_BYTES], uint8_t addrs[2][CHP_HASH_BYTES])
{
        struct chp_rstate_req r = {.kind = CHP_RS_INDEX_PAGE};
        r.u.page.index = CHP_RS_INDEX_UPLOAD_CHUNKS;
        memcpy(r.u.page.id, id, CHP_UPLOAD_ID_BYTES);
        r.u.page.max = 16;
        int rc = chp_rstate_run(st, &r);
        if (rc)
                return rc;
        int n = (int)r.u.page.n;
        for (uint32_t i = 0; i < r.u.page.n && addrs; i++) {
                unsigned idx = (unsigned)strtoul(r.u.page.entries[i].key, NULL, 16);
                if (idx < 2 && r.u.page.entries[i].val_len == CHP_HASH_BYTES)
                        memcpy(addrs[idx], r.u.page.entries[i].val, CHP_HASH_BYTES);
        }
        chp_rstate_req_release(&r);
        return n;
}

static int tus_get(const uint8_t id[CHP_UPLOAD_ID_BYTES], uint64_t *offset, uint8_t *buf,
                   uint32_t cap, uint32_t *got)
{
        struct chp_rstate_req r = {.kind = CHP_RS_TUS_GET};
        memcpy(r.u.tus.upload_id, id, CHP_UPLOAD_ID_BYTES);
        r.u.tus.buf = buf;
        r.u.tus.cap = cap;
        int rc = chp_rstate_run(st, &r);
        *offset = r.u.tus.offset;
        *got = r.u.tus.got;
        return rc;
}

static int usage_get(const char *tenant, struct chp_tenant_usage *u)
{
        struct chp_rstate_req r = {.kind = CHP_RS_USAGE_GET};
        r.u.usage.tenant = tenant;
        int rc = chp_rstate_run(st, &r);
        *u = r.u.usage.usage;
        return rc;
}

/* A chunk's lease is at least lease: a refer of that lease does not extend it. */
static bool lease_at_least(const struct chunk *c, uint64_t lease)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_REFER};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.ref.kind = 'f';
        rand_id(r.u.chunk.ref.id, CHP_HASH_BYTES); /* a key of the test's, pending */
        r.u.chunk.lease = lease;
        return chp_rstate_run(st, &r) == 0 && !r.u.chunk.extended;
}

static bool chunk_stored(const struct chunk *c)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_READ};
        uint8_t *buf = malloc(CHP_CHUNK_MIN);
        r.u.chunk.buf = buf;
        r.u.chunk.cap = CHP_CHUNK_MIN;
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        bool ok = buf && chp_rstate_run(st, &r) == 0 && r.u.chunk.got == c->len;
        free(buf);
        return ok;
}

/* Whether i/exp.<shard> has key. */
static bool exp_has(uint8_t shard, const char *key)
{
        struct chp_rstate_req r = {.kind = CHP_RS_INDEX_PAGE};
        r.u.page.index = CHP_RS_INDEX_EXP;
        r.u.page.shard = shard;
        r.u.page.max = CHP_RSTATE_PAGE_MAX;
        bool found = false;
        char after[CHP_RSTATE_KEY_MAX];
        for (;;) {
                if (chp_rstate_run(st, &r))
                        return false;
                for (uint32_t i = 0; i < r.u.page.n; i++)
                        found = found || strcmp(r.u.page.entries[i].key, key) == 0;
                bool more = r.u.page.more && r.u.page.n;
                if (more)
                        memcpy(after, r.u.page.entries[r.u.page.n - 1].key, sizeof(after));
                chp_rstate_req_release(&r);
                if (!more || found)
                        return found;
                r.u.page.after = after;
        }
}

/* ---- tests ---- */

/* A native upload begun on a, resumed on b (chunks put through both), committed on b; then the
 * same manifest on a again is complete. */
TEST(native_upload_across_relays)
{
        struct file *f = make_file();
        struct chp_upload u1, u2;
        struct chp_store_req r;
        uint8_t owner[CHP_UPLOAD_ID_BYTES], addrs[2][CHP_HASH_BYTES];
        upload_init(&u1, "nat", "alice");
        upload_init(&u2, "nat", "alice");
        REQUIRE(create(a, &u1, f, NULL, &r) == 0);
        CHECK(!r.u.upload_create.complete && !r.u.upload_create.resumed);
        CHECK(memcmp(r.u.upload_create.upload_id, u1.id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK(memcmp(r.u.upload_create.file_id, f->id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(upload_get(u1.id, NULL, NULL), 0);
        CHECK_EQ(pending_get(f->id, owner), 0);
        CHECK(memcmp(owner, u1.id, CHP_UPLOAD_ID_BYTES) == 0);

        bool dedup = true;
        CHECK_EQ(put(a, &f->c[0], u1.id, 0, &dedup), 0);
        CHECK(!dedup);
        REQUIRE(create(b, &u2, f, NULL, &r) == 0);
        CHECK(r.u.upload_create.resumed && !r.u.upload_create.complete);
        CHECK(memcmp(r.u.upload_create.upload_id, u1.id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK_EQ(upload_get(u2.id, NULL, NULL), -ENOENT); /* a resume records nothing */
        CHECK_EQ(put(b, &f->c[1], u1.id, 1, NULL), 0);
        CHECK_EQ(upload_chunks(u1.id, addrs), 2);
        CHECK(memcmp(addrs[0], f->c[0].addr, CHP_HASH_BYTES) == 0);
        CHECK(memcmp(addrs[1], f->c[1].addr, CHP_HASH_BYTES) == 0);

        REQUIRE(commit(b, NULL, u1.id, false, &r) == 0); /* the upload's own manifest */
        CHECK(memcmp(r.u.commit.file_id, f->id, CHP_HASH_BYTES) == 0);
        CHECK(!r.u.commit.existed);
        CHECK_EQ(file_get(f->id, NULL, NULL), 0);
        CHECK_EQ(upload_get(u1.id, NULL, NULL), -ENOENT);
        CHECK_EQ(pending_get(f->id, NULL), -ENOENT);
        /* a late put into it on the other relay (which wrote to it before): the upload is over */
        CHECK_EQ(put(a, &f->c[1], u1.id, 1, NULL), -ENOENT);
        struct chp_tenant_usage use;
        CHECK_EQ(usage_get("nat", &use), 0);
        CHECK_EQ(use.files, 1);
        CHECK_EQ(use.stored_bytes, CHP_CHUNK_MIN + 1000);
        CHECK_EQ(use.incomplete, 0);

        upload_init(&u2, "nat", "bob");
        REQUIRE(create(a, &u2, f, NULL, &r) == 0);
        CHECK(r.u.upload_create.complete);
        CHECK_EQ(upload_get(u2.id, NULL, NULL), -ENOENT);
        CHECK_EQ(commit(a, f, NULL, false, &r), 0); /* again: it existed */
        CHECK(r.u.commit.existed);
        free(f);
}

/* An upload created when some of its chunks are stored has them attached at once. */
TEST(create_attaches_stored_chunks)
{
        struct file *f = make_file();
        struct chp_upload u;
        struct chp_store_req r;
        uint8_t addrs[2][CHP_HASH_BYTES];
        upload_init(&u, "att", "");
        CHECK_EQ(put(b, &f->c[1], NULL, 0, NULL), 0);
        REQUIRE(create(a, &u, f, NULL, &r) == 0);
        memset(addrs, 0, sizeof(addrs));
        CHECK_EQ(upload_chunks(u.id, addrs), 1);
        CHECK(memcmp(addrs[1], f->c[1].addr, CHP_HASH_BYTES) == 0);
        /* an attach without bytes: the stored chunk is named, a missing one refused */
        put_req(&r, &f->c[0], false, u.id, 0);
        CHECK_EQ(chp_store_run(a, &r), CHP_EMISSING);
        CHECK_EQ(put(b, &f->c[0], NULL, 0, NULL), 0);
        put_req(&r, &f->c[0], false, u.id, 0);
        CHECK_EQ(chp_store_run(a, &r), 0);
        CHECK(r.u.put.deduplicated);
        CHECK_EQ(upload_chunks(u.id, NULL), 2);
        free(f);
}

/* The same chunk put through both relays is stored once; a put without an upload keeps it for
 * orphan_grace. */
TEST(dedup_across_relays)
{
        struct chunk *c = malloc(sizeof(*c));
        REQUIRE(c);
        make_chunk(c, 5000);
        bool dedup = true;
        CHECK_EQ(put(a, c, NULL, 0, &dedup), 0);
        CHECK(!dedup);
        CHECK_EQ(put(b, c, NULL, 0, &dedup), 0);
        CHECK(dedup);
        CHECK(chunk_stored(c));
        /* the test's own put: not created again */
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_PUT};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.data = c->data;
        r.u.chunk.len = c->len;
        r.u.chunk.ref.kind = 'f';
        r.u.chunk.lease = now();
        CHECK_EQ(chp_rstate_run(st, &r), 0);
        CHECK(!r.u.chunk.created);
        /* opened with orphan_grace 1000 s: leased at least that long, also after an audit
         * (which lowers a lease to what live referrers need) */
        struct chunk *d = malloc(sizeof(*d));
        REQUIRE(d);
        make_chunk(d, 3000);
        CHECK_EQ(put(b, d, NULL, 0, NULL), 0);
        struct chp_rstate_audit_opts ao = {.now = now()};
        struct chp_rstate_audit_stats as;
        CHECK_EQ(chp_rstate_audit(st, &ao, &as), 0);
        CHECK(as.chunks >= 2);
        CHECK(lease_at_least(d, now() + 900));
        free(d);
        CHECK(lease_at_least(c, now() + 900));
        CHECK(!lease_at_least(c, now() + 2000));
        /* into an upload that does not exist */
        uint8_t nobody[CHP_UPLOAD_ID_BYTES];
        rand_id(nobody, sizeof(nobody));
        CHECK_EQ(put(a, c, nobody, 0, NULL), -ENOENT);
        free(c);
}

/* A commit of a manifest whose chunks are not all stored: CHP_EMISSING, and no file. */
TEST(commit_missing)
{
        struct file *f = make_file();
        struct chp_store_req r;
        CHECK_EQ(put(a, &f->c[0], NULL, 0, NULL), 0);
        CHECK_EQ(commit(b, f, NULL, false, &r), CHP_EMISSING);
        CHECK_EQ(file_get(f->id, NULL, NULL), -ENOENT);
        CHECK_EQ(put(b, &f->c[1], NULL, 0, NULL), 0);
        CHECK_EQ(commit(a, f, NULL, false, &r), 0);
        CHECK(memcmp(r.u.commit.file_id, f->id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(file_get(f->id, NULL, NULL), 0);
        free(f);
}

/* The tenant's limit on incomplete uploads, counted across both relays. */
TEST(quota)
{
        struct file *f1 = make_file(), *f2 = make_file();
        struct chp_upload u1, u2;
        struct chp_store_req r;
        struct chp_store_quota q = {
            .max_stored = UINT64_MAX, .max_incomplete = 1, .max_per_day = UINT64_MAX, .now = now()};
        upload_init(&u1, "quo", "x");
        upload_init(&u2, "quo", "x");
        CHECK_EQ(create(a, &u1, f1, &q, &r), 0);
        CHECK_EQ(create(b, &u2, f2, &q, &r), CHP_EQUOTA);
        CHECK_EQ(r.u.upload_create.quota_hit, CHP_QUOTA_INCOMPLETE);
        CHECK_EQ(upload_get(u2.id, NULL, NULL), -ENOENT);
        CHECK_EQ(pending_get(f2->id, NULL), -ENOENT); /* given back */
        struct chp_tenant_usage use;
        CHECK_EQ(usage_get("quo", &use), 0);
        CHECK_EQ(use.incomplete, 1);
        CHECK_EQ(use.incomplete_bytes, CHP_CHUNK_MIN + 1000);
        /* a resume is not new: not refused */
        CHECK_EQ(create(b, &u2, f1, &q, &r), 0);
        CHECK(r.u.upload_create.resumed);
        /* the upload deleted, the tenant has room again */
        CHECK_EQ(simple(b, CHP_REQ_UPLOAD_DELETE, u1.id, false, NULL), 0);
        CHECK_EQ(upload_get(u1.id, NULL, NULL), -ENOENT);
        CHECK_EQ(pending_get(f1->id, NULL), -ENOENT);
        CHECK_EQ(simple(a, CHP_REQ_UPLOAD_DELETE, u1.id, false, NULL), -ENOENT);
        CHECK_EQ(usage_get("quo", &use), 0);
        CHECK_EQ(use.incomplete, 0);
        CHECK_EQ(create(b, &u2, f2, &q, &r), 0);
        CHECK(!r.u.upload_create.resumed);
        free(f1);
        free(f2);
}

/* An upload begun under a subject is resumed only under it (or by the relay's own). */
TEST(subject)
{
        struct file *f = make_file();
        struct chp_upload u1, u2;
        struct chp_store_req r;
        upload_init(&u1, "sub", "alice");
        upload_init(&u2, "sub", "bob");
        CHECK_EQ(create(a, &u1, f, NULL, &r), 0);
        CHECK_EQ(put(a, &f->c[0], NULL, 0, NULL), 0);
        CHECK_EQ(create(b, &u2, f, NULL, &r), CHP_ETOKEN_SUBJECT);
        CHECK_EQ(upload_chunks(u1.id, NULL), 0); /* nothing was changed */
        CHECK_EQ(upload_get(u2.id, NULL, NULL), -ENOENT);
        u2.subject[0] = '\0'; /* the relay's own */
        CHECK_EQ(create(b, &u2, f, NULL, &r), 0);
        CHECK(r.u.upload_create.resumed);
        CHECK_EQ(upload_chunks(u1.id, NULL), 1); /* the stored chunk, attached */
        free(f);
}

/* A file deleted on one relay is gone for both. */
TEST(file_delete)
{
        struct file *f = make_file();
        struct chp_store_req r;
        CHECK_EQ(put(a, &f->c[0], NULL, 0, NULL), 0);
        CHECK_EQ(put(a, &f->c[1], NULL, 0, NULL), 0);
        CHECK_EQ(commit(a, f, NULL, false, &r), 0);
        CHECK_EQ(file_get(f->id, NULL, NULL), 0);
        CHECK_EQ(simple(b, CHP_REQ_FILE_DELETE, f->id, false, NULL), 0);
        CHECK_EQ(file_get(f->id, NULL, NULL), -ENOENT);
        CHECK_EQ(simple(a, CHP_REQ_FILE_DELETE, f->id, false, NULL), -ENOENT);
        free(f);
}

/* A tail append that names the client's offset is refused (-ESTALE: tus answers 409) once
 * another relay moved the upload past it, e.g. a late append of a cut connection: the bytes are
 * not put at the wrong place. At the upload's offset it appends. */
static int tail_at(struct chp_store *s, const uint8_t *upload_id, const void *data, uint32_t len,
                   uint64_t offset)
{
        struct chp_store_req r;
        tail_req(&r, upload_id, data, len);
        r.u.tail_append.has_offset = true;
        r.u.tail_append.offset = offset;
        return chp_store_run(s, &r);
}

TEST(tail_append_at_the_clients_offset)
{
        struct chp_upload u;
        struct chp_store_req r;
        upload_init(&u, "", "");
        CHECK_EQ(create(a, &u, NULL, NULL, &r), 0);
        CHECK_EQ(tail_at(a, u.id, "late-", 5, 0), 0);     /* relay 1's, landing late */
        CHECK_EQ(tail_at(b, u.id, "abc", 3, 0), -ESTALE); /* relay 2 checked offset 0 */
        uint64_t off = 0;
        uint8_t buf[16];
        uint32_t got = 0;
        CHECK_EQ(tus_get(u.id, &off, buf, sizeof(buf), &got), 0);
        CHECK_EQ(off, 5);
        CHECK(got == 5 && memcmp(buf, "late-", 5) == 0);
        CHECK_EQ(tail_at(b, u.id, "abc", 3, 5), 0); /* after HEAD: offset 5 */
        CHECK_EQ(tus_get(u.id, &off, buf, sizeof(buf), &got), 0);
        CHECK_EQ(off, 8);
        CHECK(got == 8 && memcmp(buf, "late-abc", 8) == 0);
}

/* Expiry 0 ("never") goes into the pool as CHP_RSTATE_NEVER (GC compares numbers) and comes
 * back as 0 through the other store's reads: a file's info, an upload's record. */
TEST(never_expires_reads_back_as_zero)
{
        struct file *f = make_file();
        struct chp_store_req r;
        CHECK_EQ(put(a, &f->c[0], NULL, 0, NULL), 0);
        CHECK_EQ(put(a, &f->c[1], NULL, 0, NULL), 0);
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_COMMIT;
        r.u.commit.manifest = f->man;
        r.u.commit.manifest_len = f->man_len;
        r.u.commit.expires = 0;
        CHECK_EQ(chp_store_run(a, &r), 0);
        struct chp_file_info info;
        CHECK_EQ(chp_store_file_get(b, f->id, NULL, NULL, &info), 0);
        CHECK_EQ(info.expires, 0);
        struct chp_upload u, got;
        upload_init(&u, "", "");
        u.expires = 0;
        u.file_expires = 0;
        CHECK_EQ(create(a, &u, NULL, NULL, &r), 0);
        CHECK_EQ(chp_store_upload_get(b, r.u.upload_create.upload_id, &got), 0);
        CHECK_EQ(got.expires, 0);
        CHECK_EQ(got.file_expires, 0);
        free(f);
}

/* Quarantine drops the upload writing the file and refuses a new one; a stored file is deleted;
 * lift takes it off the list. */
TEST(quarantine)
{
        struct file *f = make_file(), *g = make_file();
        struct chp_upload u;
        struct chp_store_req r;
        bool deleted = true;
        upload_init(&u, "qua", "");
        CHECK_EQ(create(a, &u, f, NULL, &r), 0);
        CHECK_EQ(simple(b, CHP_REQ_QUARANTINE, f->id, false, &deleted), 0);
        CHECK(!deleted);
        CHECK_EQ(upload_get(u.id, NULL, NULL), -ENOENT);
        CHECK_EQ(pending_get(f->id, NULL), -ENOENT);
        upload_init(&u, "qua", "");
        CHECK_EQ(create(a, &u, f, NULL, &r), CHP_EQUARANTINED);
        CHECK_EQ(upload_get(u.id, NULL, NULL), -ENOENT);
        CHECK_EQ(simple(a, CHP_REQ_QUARANTINE, f->id, true, NULL), 0);
        CHECK_EQ(simple(b, CHP_REQ_QUARANTINE, f->id, true, NULL), -ENOENT);
        CHECK_EQ(create(b, &u, f, NULL, &r), 0);

        CHECK_EQ(put(a, &g->c[0], NULL, 0, NULL), 0);
        CHECK_EQ(put(a, &g->c[1], NULL, 0, NULL), 0);
        CHECK_EQ(commit(a, g, NULL, false, &r), 0);
        CHECK_EQ(simple(b, CHP_REQ_QUARANTINE, g->id, false, &deleted), 0);
        CHECK(deleted);
        CHECK_EQ(file_get(g->id, NULL, NULL), CHP_EQUARANTINED);
        CHECK_EQ(commit(a, g, NULL, false, &r), CHP_EQUARANTINED);
        free(f);
        free(g);
}

struct waiter {
        sem_t sem;
};

static void posted(struct chp_store_req *r)
{
        sem_post(&((struct waiter *)r->ctx)->sem);
}

/* Submits r1 and r2 to s at once (r2 before r1 is done), and waits for both. */
static bool run_both(struct chp_store *s, struct chp_store_req *r1, struct chp_store_req *r2)
{
        struct waiter w;
        sem_init(&w.sem, 0, 0);
        r1->done = r2->done = posted;
        r1->ctx = r2->ctx = &w;
        if (chp_store_submit(s, r1))
                return false;
        bool both = chp_store_submit(s, r2) == 0;
        for (int n = both ? 2 : 1; n > 0; n--)
                sem_wait(&w.sem);
        sem_destroy(&w.sem);
        return both;
}

/* A tus upload: tail bytes appended through both relays, a whole chunk that absorbs them (put
 * with clear_tail), a chunk and a tail submitted at once (kept in order), the commit that keeps
 * the upload complete with its metadata on the file. */
TEST(tus_tail)
{
        struct file *f = make_file();
        struct chp_upload u;
        struct chp_store_req r, r2;
        uint8_t *buf = malloc(CHP_CHUNK_MIN);
        REQUIRE(buf);
        upload_init(&u, "tus", "");
        u.declared_size = CHP_CHUNK_MIN + 1000;
        memcpy(u.meta, "filename ZS50eHQ=", 17);
        u.meta_len = 17;
        REQUIRE(create(a, &u, NULL, NULL, &r) == 0);
        CHECK(!r.u.upload_create.resumed && !r.u.upload_create.complete);
        bool done = false;
        uint64_t declared = 0;
        CHECK_EQ(upload_get(u.id, &done, &declared), 0);
        CHECK(!done);
        CHECK_EQ(declared, CHP_CHUNK_MIN + 1000);

        uint64_t off = 0;
        uint32_t got = 0;
        CHECK_EQ(tail(a, u.id, f->c[0].data, 500), 0);
        CHECK_EQ(tail(b, u.id, f->c[0].data + 500, 300), 0);
        CHECK_EQ(tus_get(u.id, &off, buf, CHP_CHUNK_MIN, &got), 0);
        CHECK_EQ(off, 800);
        CHECK_EQ(got, 800);
        CHECK(memcmp(buf, f->c[0].data, 800) == 0);

        /* the chunk that took those bytes in, and the next PATCH's tail, at once */
        put_req(&r, &f->c[0], true, u.id, 0);
        r.u.put.clear_tail = true;
        tail_req(&r2, u.id, f->c[1].data, 600);
        REQUIRE(run_both(a, &r, &r2));
        CHECK_EQ(r.status, 0);
        CHECK_EQ(r2.status, 0);
        CHECK_EQ(tus_get(u.id, &off, buf, CHP_CHUNK_MIN, &got), 0);
        CHECK_EQ(off, CHP_CHUNK_MIN + 600);
        CHECK_EQ(got, 600);
        CHECK(memcmp(buf, f->c[1].data, 600) == 0);
        CHECK_EQ(upload_chunks(u.id, NULL), 1);

        /* the last chunk, through b: the tail is inside it */
        put_req(&r, &f->c[1], true, u.id, 1);
        r.u.put.clear_tail = true;
        CHECK_EQ(chp_store_run(b, &r), 0);
        CHECK_EQ(tus_get(u.id, &off, buf, CHP_CHUNK_MIN, &got), 0);
        CHECK_EQ(off, CHP_CHUNK_MIN + 1000);
        CHECK_EQ(got, 0);
        CHECK_EQ(upload_chunks(u.id, NULL), 2);

        /* as tus.c commits: the manifest it built, the upload's tenant, the upload kept */
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_COMMIT;
        r.u.commit.manifest = f->man;
        r.u.commit.manifest_len = f->man_len;
        r.u.commit.tenant = "tus";
        r.u.commit.expires = now() + 7200;
        r.u.commit.has_upload = r.u.commit.keep_upload = true;
        memcpy(r.u.commit.upload_id, u.id, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(b, &r), 0);
        CHECK(memcmp(r.u.commit.file_id, f->id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(upload_get(u.id, &done, NULL), 0);
        CHECK(done);
        uint8_t meta[CHP_UPLOAD_META_MAX];
        size_t meta_len = 0;
        CHECK_EQ(file_get(f->id, meta, &meta_len), 0);
        CHECK_EQ(meta_len, 17);
        CHECK(memcmp(meta, "filename ZS50eHQ=", 17) == 0);
        struct chp_tenant_usage use;
        CHECK_EQ(usage_get("tus", &use), 0);
        CHECK_EQ(use.incomplete, 0);
        CHECK_EQ(use.files, 1);
        uint8_t nobody[CHP_UPLOAD_ID_BYTES];
        rand_id(nobody, sizeof(nobody));
        CHECK_EQ(tail(a, nobody, "x", 1), -ENOENT);
        free(buf);
        free(f);
}

/* A tus upload committed as xmpp.c commits it (keep_expires: its kept record lives as long as the
 * file): the record, its e and its expiry key move to the file's expiry; the old key goes. */
TEST(kept_upload_takes_the_commits_expiry)
{
        struct file *f = make_file();
        struct chp_upload u, back;
        struct chp_store_req r;
        upload_init(&u, "keep", "");
        u.declared_size = CHP_CHUNK_MIN + 1000;
        REQUIRE(create(a, &u, NULL, NULL, &r) == 0);
        for (uint32_t i = 0; i < 2; i++) {
                put_req(&r, &f->c[i], true, u.id, i);
                CHECK_EQ(chp_store_run(b, &r), 0);
        }
        uint64_t fexp = now() + 3 * 86400;
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_COMMIT;
        r.u.commit.manifest = f->man;
        r.u.commit.manifest_len = f->man_len;
        r.u.commit.tenant = "keep";
        r.u.commit.expires = fexp;
        r.u.commit.has_upload = r.u.commit.keep_upload = true;
        r.u.commit.keep_expires = fexp;
        memcpy(r.u.commit.upload_id, u.id, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(b, &r), 0);
        CHECK_EQ(chp_store_upload_get(a, u.id, &back), 0);
        CHECK(back.complete && memcmp(back.file_id, f->id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(back.expires, fexp);
        char key[80];
        snprintf(key, sizeof(key), "%016llx", (unsigned long long)fexp);
        key[16] = 'u';
        chp_hex_encode(u.id, CHP_UPLOAD_ID_BYTES, key + 17);
        CHECK(exp_has(u.id[0], key));
        snprintf(key, sizeof(key), "%016llx", (unsigned long long)u.expires);
        key[16] = 'u';
        chp_hex_encode(u.id, CHP_UPLOAD_ID_BYTES, key + 17);
        CHECK(!exp_has(u.id[0], key));
        free(f);
}

/* A tus upload re-created under its id (its deferred length now known, as tus.c does it, with
 * a chunk put submitted right behind it): the record gets the length, usage counts its bytes, a
 * quota the bytes would pass refuses it; its chunks and expiry key stay right. */
TEST(tus_recreate)
{
        struct chp_upload u, v;
        struct chp_store_req r, r2;
        struct chunk *c = malloc(sizeof(*c));
        REQUIRE(c);
        make_chunk(c, CHP_CHUNK_MIN);
        upload_init(&u, "tre", "");
        CHECK_EQ(create(a, &u, NULL, NULL, &r), 0);
        struct chp_tenant_usage use;
        CHECK_EQ(usage_get("tre", &use), 0);
        CHECK_EQ(use.incomplete, 1);
        CHECK_EQ(use.incomplete_bytes, 0);

        struct chp_store_quota q = {.max_stored = 100000,
                                    .max_incomplete = UINT64_MAX,
                                    .max_per_day = UINT64_MAX,
                                    .now = now()};
        v = u;
        v.declared_size = 200000;
        CHECK_EQ(create(b, &v, NULL, &q, &r), CHP_EQUOTA);
        CHECK_EQ(r.u.upload_create.quota_hit, CHP_QUOTA_STORED);
        uint64_t declared = 0;
        CHECK_EQ(upload_get(u.id, NULL, &declared), 0);
        CHECK(declared == CHP_UPLOAD_SIZE_UNKNOWN);

        v.declared_size = CHP_CHUNK_MIN + 500;
        v.expires = u.expires + 60;
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_UPLOAD_CREATE;
        r.u.upload_create.upload = &v;
        r.u.upload_create.quota = &q;
        put_req(&r2, c, true, u.id, 0);
        r2.u.put.clear_tail = true;
        REQUIRE(run_both(b, &r, &r2));
        CHECK_EQ(r.status, 0);
        CHECK_EQ(r2.status, 0);
        CHECK(!r.u.upload_create.resumed && !r.u.upload_create.complete);
        CHECK_EQ(upload_get(u.id, NULL, &declared), 0);
        CHECK_EQ(declared, CHP_CHUNK_MIN + 500);
        CHECK_EQ(upload_chunks(u.id, NULL), 1);
        CHECK_EQ(usage_get("tre", &use), 0);
        CHECK_EQ(use.incomplete, 1);
        CHECK_EQ(use.incomplete_bytes, CHP_CHUNK_MIN + 500);
        /* the expiry index names the new expiry, no longer the old one */
        char key[80];
        snprintf(key, sizeof(key), "%016llx", (unsigned long long)v.expires);
        key[16] = 'u';
        chp_hex_encode(u.id, CHP_UPLOAD_ID_BYTES, key + 17);
        CHECK(exp_has(u.id[0], key));
        snprintf(key, sizeof(key), "%016llx", (unsigned long long)u.expires);
        key[16] = 'u';
        chp_hex_encode(u.id, CHP_UPLOAD_ID_BYTES, key + 17);
        CHECK(!exp_has(u.id[0], key));
        free(c);
}

/* ---- set-up ---- */

/* GC through a store (CHP_REQ_GC: the pass runs on the store's GC thread under the pool's lock):
 * a file committed on one relay and expired is collected by the other, with its chunks once
 * their lease and gc_grace are past; a file that never expires, and its chunks, stay. Defined
 * last: its clock is ten days on, so it collects what the cases before left too. */
TEST(gc_through_the_other_store)
{
        struct file *gone = make_file(), *kept = make_file();
        struct chp_store_req r;
        for (int i = 0; i < 2; i++) {
                CHECK_EQ(put(a, &gone->c[i], NULL, 0, NULL), 0);
                CHECK_EQ(put(a, &kept->c[i], NULL, 0, NULL), 0);
        }
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_COMMIT;
        r.u.commit.manifest = gone->man;
        r.u.commit.manifest_len = gone->man_len;
        r.u.commit.expires = now() + 60;
        CHECK_EQ(chp_store_run(a, &r), 0);
        memset(&r, 0, sizeof(r));
        r.type = CHP_REQ_COMMIT;
        r.u.commit.manifest = kept->man;
        r.u.commit.manifest_len = kept->man_len;
        r.u.commit.expires = 0;
        CHECK_EQ(chp_store_run(a, &r), 0);

        struct chp_gc_stats g;
        CHECK_EQ(chp_store_gc(b, now() + 10 * 86400, &g), 0);
        CHECK(g.files_expired >= 1);
        CHECK(g.chunks_freed >= 2);
        CHECK_EQ(file_get(gone->id, NULL, NULL), -ENOENT);
        CHECK(!chunk_stored(&gone->c[0]) && !chunk_stored(&gone->c[1]));
        CHECK_EQ(file_get(kept->id, NULL, NULL), 0);
        CHECK(chunk_stored(&kept->c[0]) && chunk_stored(&kept->c[1]));
        CHECK_EQ(chp_store_file_get(a, kept->id, NULL, NULL, NULL), 0);
        free(gone);
        free(kept);
}

static int open_store(int i, struct chp_store **s)
{
        snprintf(dirs[i], sizeof(dirs[i]), "/tmp/chp-sw.XXXXXX");
        if (!mkdtemp(dirs[i])) {
                dirs[i][0] = '\0';
                return -errno;
        }
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dirs[i];
        o.map_size = (uint64_t)64 << 20;
        o.backend = CHP_STORE_RADOS;
        o.rados_shared = true;
        o.rados_conf = conf;
        o.rados_pool = pool;
        o.rados_user = user;
        o.rados_op_timeout = 30;
        o.rados_inflight = 4; /* fewer than an upload create's attaches: they queue */
        o.orphan_grace = 1000;
        return chp_store_open(&o, s);
}

static void cleanup(void)
{
        for (int i = 0; i < 2; i++) {
                char cmd[160];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dirs[i]);
                if (dirs[i][0] && system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", dirs[i]);
        }
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
        atexit(cleanup);
        struct chp_rstate_opts ro = {.conf = conf, .pool = pool, .user = user};
        int rc;
        if ((rc = open_store(0, &a)) || (rc = open_store(1, &b)) ||
            (rc = chp_rstate_open(&ro, &st))) {
                fprintf(stderr, "cannot open the stores on %s: %d\n", pool, rc);
                return 1;
        }
        int passed, failed = harness_run(&passed);
        chp_store_close(a);
        chp_store_close(b);
        chp_rstate_close(st);
        return harness_report(passed, failed);
}
