/* The administration reads over the shared state (server/store/shared_admin.c, [store]
 * rados_shared) on the throw-away cluster that tests/ceph/shared_admin.sh starts. Two stores on
 * one pool act as two relays: "a" writes (files of two tenants and of none, upload sessions, a
 * quarantine), "b" answers the operator's questions: files and uploads listings (pages, cursors,
 * tenant filters, every tenant), the tenants walk, the quarantine list and the counts.
 * Usage: test_shared_admin CONF POOL USER
 */
#include "../harness.h"

#include <errno.h>
#include <ftw.h>
#include <sys/random.h>
#include <time.h>

#include "err.h"
#include "manifest.h"
#include "store.h"

#define NFILES  7
#define NUPLOAD 3

static const char *conf, *pool, *user;
static struct chp_store *a, *b;
static char dirs[2][64];

static const char *const tenant_of[NFILES] = {"alpha", "alpha", "alpha", "beta", "beta", "", ""};

struct file {
        uint8_t data[2][CHP_CHUNK_MIN];
        uint32_t len[2];
        uint8_t addr[2][CHP_HASH_BYTES];
        uint8_t man[CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES];
        size_t man_len;
        uint8_t id[CHP_HASH_BYTES];
        uint64_t size;
};

static struct file files[NFILES];
static struct chp_upload uploads[NUPLOAD];
static uint64_t t0;

static uint64_t now(void)
{
        return (uint64_t)time(NULL);
}

static void fill(void *p, size_t n)
{
        if (getrandom(p, n, 0) != (ssize_t)n)
                abort();
}

static int file_index(const uint8_t id[CHP_HASH_BYTES])
{
        for (int i = 0; i < NFILES; i++)
                if (memcmp(files[i].id, id, CHP_HASH_BYTES) == 0)
                        return i;
        return -1;
}

/* Writes file i through a: its two chunks, then its commit under its tenant. */
static int store_file(int i)
{
        struct file *f = &files[i];
        f->len[0] = CHP_CHUNK_MIN;
        f->len[1] = 500 + (uint32_t)i;
        uint8_t addrs[2 * CHP_HASH_BYTES];
        for (int c = 0; c < 2; c++) {
                fill(f->data[c], f->len[c]);
                if (chp_sha256(f->data[c], f->len[c], f->addr[c]))
                        return -EIO;
                memcpy(addrs + c * CHP_HASH_BYTES, f->addr[c], CHP_HASH_BYTES);
                struct chp_store_req r = {.type = CHP_REQ_PUT};
                memcpy(r.u.put.addr, f->addr[c], CHP_HASH_BYTES);
                r.u.put.data = f->data[c];
                r.u.put.len = f->len[c];
                int rc = chp_store_run(a, &r);
                if (rc)
                        return rc;
        }
        f->size = f->len[0] + f->len[1];
        struct chp_manifest m = {.version = 1,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = f->size,
                                 .chunk_count = 2,
                                 .addrs = addrs};
        ssize_t n = chp_manifest_encode(&m, f->man, sizeof(f->man));
        if (n < 0 || chp_manifest_id(f->man, (size_t)n, f->id))
                return -EINVAL;
        f->man_len = (size_t)n;
        struct chp_store_req r = {.type = CHP_REQ_COMMIT};
        r.u.commit.manifest = f->man;
        r.u.commit.manifest_len = f->man_len;
        r.u.commit.tenant = tenant_of[i][0] ? tenant_of[i] : NULL;
        r.u.commit.expires = i == 0 ? 0 : now() + 7200; /* file 0 never expires */
        return chp_store_run(a, &r);
}

/* Creates upload session i through a: tus-like (no manifest: an offset object beside it),
 * created i seconds in the past so that the listing's order is known. */
static int store_upload(int i)
{
        struct chp_upload *u = &uploads[i];
        memset(u, 0, sizeof(*u));
        fill(u->id, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "%s", i < 2 ? "alpha" : "beta");
        snprintf(u->subject, sizeof(u->subject), "sub%d", i);
        u->declared_size = 1000 + (uint64_t)i;
        u->chunk_size = CHP_CHUNK_MIN;
        u->created = t0 - 10 - (uint64_t)i;
        u->expires = now() + 3600;
        u->file_expires = now() + 7200;
        struct chp_store_req r = {.type = CHP_REQ_UPLOAD_CREATE};
        r.u.upload_create.upload = u;
        return chp_store_run(a, &r);
}

/* Every page of b's files listing of tenant, max entries each, into out (newest first). */
static int list_all(const char *tenant, size_t max, struct chp_file_entry *out, size_t cap,
                    size_t *total, int *pages)
{
        uint8_t cur[CHP_LIST_CURSOR_BYTES], next[CHP_LIST_CURSOR_BYTES];
        bool more = true, first = true;
        *total = 0;
        *pages = 0;
        while (more) {
                struct chp_file_entry page[CHP_LIST_MAX];
                size_t n;
                int rc =
                    chp_store_files_list(b, tenant, first ? NULL : cur, page, max, &n, &more, next);
                if (rc)
                        return rc;
                if (n > max || *total + n > cap || ++*pages > 50)
                        return -E2BIG;
                memcpy(out + *total, page, n * sizeof(*page));
                *total += n;
                memcpy(cur, next, sizeof(cur));
                first = false;
        }
        return 0;
}

/* Whether the entries go newest first: (created, id) strictly descending. */
static bool newest_first(const struct chp_file_entry *e, size_t n)
{
        for (size_t i = 1; i < n; i++) {
                if (e[i].info.created > e[i - 1].info.created)
                        return false;
                if (e[i].info.created == e[i - 1].info.created &&
                    memcmp(e[i].id, e[i - 1].id, CHP_HASH_BYTES) >= 0)
                        return false;
        }
        return true;
}

/* Whether the entries are exactly the files of tenant (NULL: all) but skip (-1: none), each
 * with its record's info. */
static bool entries_are(const struct chp_file_entry *e, size_t n, const char *tenant, int skip)
{
        bool seen[NFILES] = {false};
        for (size_t i = 0; i < n; i++) {
                int k = file_index(e[i].id);
                if (k < 0 || k == skip || seen[k]) {
                        fprintf(stderr, "  entry %zu: file %d (unknown, skipped or twice)\n", i, k);
                        return false;
                }
                seen[k] = true;
                if (strcmp(e[i].info.tenant, tenant_of[k]) != 0 ||
                    e[i].info.size != files[k].size || e[i].info.created < t0 ||
                    e[i].info.created > now() ||
                    (k == 0 ? e[i].info.expires != 0 : e[i].info.expires <= now())) {
                        fprintf(stderr, "  entry %zu: file %d's info is not its record's\n", i, k);
                        return false;
                }
        }
        for (int k = 0; k < NFILES; k++)
                if (k != skip && (!tenant || strcmp(tenant, tenant_of[k]) == 0) && !seen[k]) {
                        fprintf(stderr, "  file %d is missing\n", k);
                        return false;
                }
        return true;
}

TEST(write_through_a)
{
        t0 = now();
        for (int i = 0; i < NFILES; i++)
                CHECK_OK(store_file(i));
        for (int i = 0; i < NUPLOAD; i++)
                CHECK_OK(store_upload(i));
}

TEST(files_every_tenant_in_pages)
{
        struct chp_file_entry all[NFILES + 4];
        size_t n;
        int pages;
        /* pages of 3 and of 1: a cursor in the middle of files committed in one second */
        for (size_t max = 1; max <= 3; max += 2) {
                REQUIRE(list_all(NULL, max, all, NFILES + 4, &n, &pages) == 0);
                CHECK_EQ(n, NFILES);
                CHECK_EQ(pages, (NFILES + max - 1) / max);
                CHECK(newest_first(all, n));
                CHECK(entries_are(all, n, NULL, -1));
        }
        /* one page holds them all: no more */
        struct chp_file_entry page[NFILES + 1];
        uint8_t next[CHP_LIST_CURSOR_BYTES];
        bool more = true;
        CHECK_OK(chp_store_files_list(b, NULL, NULL, page, NFILES, &n, &more, next));
        CHECK_EQ(n, NFILES);
        CHECK(!more);
        CHECK_EQ(chp_store_files_list(b, NULL, NULL, page, 0, &n, &more, next), -EINVAL);
}

TEST(files_by_tenant)
{
        struct chp_file_entry e[NFILES + 4];
        size_t n;
        int pages;
        REQUIRE(list_all("alpha", 2, e, NFILES + 4, &n, &pages) == 0);
        CHECK_EQ(n, 3);
        CHECK_EQ(pages, 2);
        CHECK(newest_first(e, n));
        CHECK(entries_are(e, n, "alpha", -1));
        REQUIRE(list_all("beta", 10, e, NFILES + 4, &n, &pages) == 0);
        CHECK_EQ(n, 2);
        CHECK(entries_are(e, n, "beta", -1));
        REQUIRE(list_all("", 1, e, NFILES + 4, &n, &pages) == 0); /* files without a tenant */
        CHECK_EQ(n, 2);
        CHECK_EQ(pages, 2);
        CHECK(entries_are(e, n, "", -1));
        REQUIRE(list_all("nobody", 5, e, NFILES + 4, &n, &pages) == 0);
        CHECK_EQ(n, 0);
        CHECK_EQ(pages, 1);
}

TEST(uploads_listed)
{
        struct chp_upload out[NUPLOAD + 2];
        size_t n;
        bool more;
        uint8_t next[CHP_LIST_CURSOR_BYTES];
        /* every tenant, two a page: uploads 0, 1 (newest first), then 2 */
        REQUIRE(chp_store_uploads_list(b, NULL, NULL, out, 2, &n, &more, next) == 0);
        REQUIRE(n == 2);
        CHECK(more);
        CHECK(memcmp(out[0].id, uploads[0].id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK(memcmp(out[1].id, uploads[1].id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK_EQ(out[0].created, uploads[0].created);
        CHECK_EQ(out[1].declared_size, uploads[1].declared_size);
        CHECK(strcmp(out[0].subject, "sub0") == 0);
        CHECK(strcmp(out[1].tenant, "alpha") == 0);
        uint8_t cur[CHP_LIST_CURSOR_BYTES];
        memcpy(cur, next, sizeof(cur));
        REQUIRE(chp_store_uploads_list(b, NULL, cur, out, 2, &n, &more, next) == 0);
        REQUIRE(n == 1);
        CHECK(!more);
        CHECK(memcmp(out[0].id, uploads[2].id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK(strcmp(out[0].tenant, "beta") == 0);
        /* by tenant */
        CHECK_OK(chp_store_uploads_list(b, "alpha", NULL, out, 10, &n, &more, next));
        CHECK_EQ(n, 2);
        CHECK(!more);
        CHECK_OK(chp_store_uploads_list(b, "", NULL, out, 10, &n, &more, next));
        CHECK_EQ(n, 0);
}

struct tenants_seen {
        int n;
        char names[4][16];
        struct chp_tenant_usage u[4];
};

static int tenant_seen(void *ctx, const char *tenant, const struct chp_tenant_usage *u)
{
        struct tenants_seen *t = ctx;
        if (t->n == 4)
                return -E2BIG;
        snprintf(t->names[t->n], sizeof(t->names[0]), "%s", tenant);
        t->u[t->n++] = *u;
        return 0;
}

static int stop_walk(void *ctx, const char *tenant, const struct chp_tenant_usage *u)
{
        (void)tenant;
        (void)u;
        ++*(int *)ctx;
        return 42;
}

TEST(tenants_walked)
{
        struct tenants_seen t = {0};
        REQUIRE(chp_store_tenants_each(b, tenant_seen, &t) == 0);
        REQUIRE(t.n == 2);
        CHECK(strcmp(t.names[0], "alpha") == 0); /* in name order */
        CHECK(strcmp(t.names[1], "beta") == 0);
        CHECK_EQ(t.u[0].files, 3);
        CHECK_EQ(t.u[0].stored_bytes, files[0].size + files[1].size + files[2].size);
        CHECK_EQ(t.u[0].incomplete, 2);
        CHECK_EQ(t.u[1].files, 2);
        CHECK_EQ(t.u[1].incomplete, 1);
        int calls = 0;
        CHECK_EQ(chp_store_tenants_each(b, stop_walk, &calls), 42);
        CHECK_EQ(calls, 1);
}

struct qseen {
        int n;
        uint8_t ids[4][CHP_HASH_BYTES];
        uint64_t since[4];
};

static int q_seen(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since)
{
        struct qseen *q = ctx;
        if (q->n == 4)
                return -E2BIG;
        memcpy(q->ids[q->n], id, CHP_HASH_BYTES);
        q->since[q->n++] = since;
        return 0;
}

static uint8_t unknown_id[CHP_HASH_BYTES];

TEST(quarantine_listed)
{
        uint64_t since = 0;
        CHECK_EQ(chp_store_quarantined(b, files[1].id, &since), 0); /* no list yet */
        uint64_t before = now();
        struct chp_store_req r = {.type = CHP_REQ_QUARANTINE};
        memcpy(r.u.quarantine.file_id, files[1].id, CHP_HASH_BYTES);
        REQUIRE(chp_store_run(a, &r) == 0);
        CHECK(r.u.quarantine.deleted);
        fill(unknown_id, sizeof(unknown_id)); /* an id never stored can be quarantined too */
        struct chp_store_req r2 = {.type = CHP_REQ_QUARANTINE};
        memcpy(r2.u.quarantine.file_id, unknown_id, CHP_HASH_BYTES);
        REQUIRE(chp_store_run(a, &r2) == 0);
        CHECK_EQ(chp_store_quarantined(b, files[1].id, &since), 1);
        CHECK(since >= before && since <= now());
        CHECK_EQ(chp_store_quarantined(b, unknown_id, NULL), 1);
        CHECK_EQ(chp_store_quarantined(b, files[2].id, &since), 0);
        struct qseen q = {0};
        REQUIRE(chp_store_quarantine_each(b, q_seen, &q) == 0);
        REQUIRE(q.n == 2);
        /* in id order */
        int first = memcmp(files[1].id, unknown_id, CHP_HASH_BYTES) < 0 ? 0 : 1;
        CHECK(memcmp(q.ids[first], files[1].id, CHP_HASH_BYTES) == 0);
        CHECK(memcmp(q.ids[1 - first], unknown_id, CHP_HASH_BYTES) == 0);
        CHECK(q.since[first] >= before && q.since[first] <= now());
        /* the quarantined file is no longer listed */
        struct chp_file_entry e[NFILES + 4];
        size_t n;
        int pages;
        REQUIRE(list_all(NULL, 2, e, NFILES + 4, &n, &pages) == 0);
        CHECK_EQ(n, NFILES - 1);
        CHECK(entries_are(e, n, NULL, 1));
        REQUIRE(list_all("alpha", 1, e, NFILES + 4, &n, &pages) == 0);
        CHECK_EQ(n, 2);
}

TEST(stats_counted)
{
        struct chp_store_stats st;
        /* the cheap counts (/metrics, on a loop thread) do not list the pool */
        CHECK_EQ(chp_store_stats(b, &st), -ENOTSUP);
        REQUIRE(chp_store_stats_counted(b, &st) == 0);
        CHECK_EQ(st.files, NFILES - 1);  /* tombstones are not files */
        CHECK_EQ(st.uploads, NUPLOAD);   /* offset objects are not uploads */
        CHECK_EQ(st.chunks, 2 * NFILES); /* a quarantined file's chunks wait for GC */
        CHECK_EQ(st.segments, 0);
}

/* ---- set-up ---- */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static void remove_dirs(void)
{
        for (int i = 0; i < 2; i++)
                if (dirs[i][0] && nftw(dirs[i], rm_one, 8, FTW_DEPTH | FTW_PHYS) != 0)
                        fprintf(stderr, "cannot remove %s\n", dirs[i]);
}

/* Stores a and b: each a directory of its own, both over the shared state of one pool. */
static int open_stores(void)
{
        struct chp_store **s[2] = {&a, &b};
        for (int i = 0; i < 2; i++) {
                snprintf(dirs[i], sizeof(dirs[i]), "/tmp/chp-sa.XXXXXX");
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
                int rc = chp_store_open(&o, s[i]);
                if (rc)
                        return rc;
        }
        return 0;
}

int main(int argc, char **argv)
{
        if (argc != 4) {
                fprintf(stderr, "usage: %s CONF POOL USER\n", argv[0]);
                return 2;
        }
        conf = argv[1];
        pool = argv[2];
        user = argv[3];
        if (strncmp(user, "client.", 7) == 0)
                user += 7; /* librados wants the id */
        atexit(remove_dirs);
        int rc = open_stores();
        if (rc) {
                fprintf(stderr, "cannot open two stores on pool %s: %s\n", pool, chp_strerror(rc));
                return 1;
        }
        int passed, failed = harness_run(&passed);
        chp_store_close(a);
        chp_store_close(b);
        return harness_report(passed, failed);
}
