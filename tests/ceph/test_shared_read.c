/* The store's reads over the shared state ([store] rados_shared; server/store/shared_read.c) on
 * the throw-away cluster that tests/ceph/shared_read.sh starts. The records are written with a
 * chp_rstate handle of the test's own ("the other relay": a commit, uploads with chunk entries, a
 * kept tail, a pending file, a quarantined id, chunks), then a store opened with backend RADOS
 * and rados_shared on that pool answers every lookup kind of store.h later (-EINPROGRESS, then
 * done on another thread) and every synchronous read the same; unknown ids are -ENOENT, the
 * quarantined file CHP_EQUARANTINED; chunk reads give the bytes, CHP_ECORRUPT for an object whose
 * bytes were changed, -ENOENT for a missing one, -ENOBUFS for a buffer too small.
 * Usage: test_shared_read CONF POOL USER
 */
#include "../harness.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <netdb.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>

#include "err.h"
#include "manifest.h"
#include "rados_state.h"
#include "records.h"
#include "store.h"

#include "../relay_client.h"

#define WAIT_S     60  /* a hang guard, not a timing check */
#define MANY       300 /* chunk entries of one upload: more than one page of its omap */
#define HAS_N      40  /* addresses one HAS lookup asks about: more than it asks at once */
#define TAIL_BYTES 100

static const char *conf, *pool, *user;
static struct chp_rstate *w; /* the other relay's handle: writes the records */
static struct chp_store *s;  /* the store under test */
static rados_t raw;
static rados_ioctx_t rawc; /* namespace c, to damage a chunk */
static char dir[64];

/* ---- data ---- */

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t data[CHP_CHUNK_MIN];
        uint32_t len;
};

static void rand_bytes(void *p, size_t n)
{
        if (getrandom(p, n, 0) != (ssize_t)n)
                abort();
}

static void make_chunk(struct chunk *c, uint32_t len)
{
        c->len = len;
        rand_bytes(c->data, len);
        if (chp_sha256(c->data, len, c->addr))
                abort();
}

/* A file of FILE_CHUNKS chunks: whole ones of CHP_CHUNK_MIN bytes, the last LAST_LEN. */
#define FILE_CHUNKS 2
#define LAST_LEN    1000
#define FILE_SIZE   ((FILE_CHUNKS - 1) * CHP_CHUNK_MIN + LAST_LEN)

struct file {
        struct chunk c[FILE_CHUNKS];
        uint8_t addrs[FILE_CHUNKS * CHP_HASH_BYTES];
        uint8_t man[CHP_MANIFEST_HEADER + FILE_CHUNKS * CHP_HASH_BYTES];
        size_t man_len;
        uint8_t id[CHP_HASH_BYTES];
};

static void make_file(struct file *f)
{
        for (int i = 0; i < FILE_CHUNKS; i++) {
                make_chunk(&f->c[i], i == FILE_CHUNKS - 1 ? LAST_LEN : CHP_CHUNK_MIN);
                memcpy(f->addrs + i * CHP_HASH_BYTES, f->c[i].addr, CHP_HASH_BYTES);
        }
        struct chp_manifest m = {.version = 1,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = FILE_SIZE,
                                 .chunk_count = FILE_CHUNKS,
                                 .addrs = f->addrs};
        ssize_t n = chp_manifest_encode(&m, f->man, sizeof(f->man));
        if (n < 0 || chp_manifest_id(f->man, (size_t)n, f->id))
                abort();
        f->man_len = (size_t)n;
}

static const char meta[] = "filename dGVzdC50eHQ=";
static const char tenant[] = "acme";

static struct file fa;     /* committed, with tus metadata */
static struct file fg;     /* uploaded natively (upload un), pending, not committed */
static struct chunk cbad;  /* stored, then its object's bytes changed */
static struct chunk cnone; /* never stored */
static uint8_t quarantined[CHP_HASH_BYTES];
static uint8_t un[CHP_UPLOAD_ID_BYTES]; /* native: fg's manifest; chunks 0, 1 and 3 (a gap) */
static uint8_t ut[CHP_UPLOAD_ID_BYTES]; /* tus: MANY chunks from 0, TAIL_BYTES kept */
static uint8_t uc[CHP_UPLOAD_ID_BYTES]; /* completed as fa */
static uint8_t tail[TAIL_BYTES];
static uint8_t many_addr[MANY][CHP_HASH_BYTES];

/* ---- writing with the other relay's handle ---- */

static int put_chunk(const struct chunk *c, char kind, const uint8_t *id)
{
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_PUT};
        memcpy(r.u.chunk.addr, c->addr, CHP_HASH_BYTES);
        r.u.chunk.data = c->data;
        r.u.chunk.len = c->len;
        r.u.chunk.ref.kind = kind;
        memcpy(r.u.chunk.ref.id, id, kind == 'u' ? CHP_UPLOAD_ID_BYTES : CHP_HASH_BYTES);
        r.u.chunk.lease = CHP_RSTATE_NEVER - 1;
        return chp_rstate_run(w, &r);
}

static int create_upload(const uint8_t id[CHP_UPLOAD_ID_BYTES], const struct file *f)
{
        uint8_t rec[CHP_REC_UPLOAD_BYTES + 256 + CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES];
        struct chp_rec_upload r = {
            .flags = f ? CHP_REC_UPLOAD_HAS_MANIFEST : 0,
            .chunk_size = CHP_CHUNK_MIN,
            .meta_len = sizeof(meta) - 1,
            .manifest_len = f ? (uint32_t)f->man_len : 0,
            .declared = f ? FILE_SIZE : CHP_UPLOAD_SIZE_UNKNOWN,
            .created = 2000,
            .expires = 4000000000u,
            .file_expires = f ? 4000000000u : 0,
            .tenant_len = sizeof(tenant) - 1,
            .subject_len = 3,
            .file_id = f ? f->id : NULL,
        };
        chp_rec_upload_encode(rec, &r);
        size_t n = CHP_REC_UPLOAD_BYTES;
        memcpy(rec + n, tenant, r.tenant_len);
        n += r.tenant_len;
        memcpy(rec + n, "bob", 3);
        n += 3;
        memcpy(rec + n, meta, r.meta_len);
        n += r.meta_len;
        if (f) {
                memcpy(rec + n, f->man, f->man_len);
                n += f->man_len;
        }
        struct chp_rstate_req q = {.kind = CHP_RS_UPLOAD_CREATE};
        memcpy(q.u.upload.id, id, CHP_UPLOAD_ID_BYTES);
        q.u.upload.rec = rec;
        q.u.upload.rec_len = n;
        return chp_rstate_run(w, &q);
}

static int upload_chunk(const uint8_t id[CHP_UPLOAD_ID_BYTES], uint32_t index,
                        const uint8_t addr[CHP_HASH_BYTES])
{
        struct chp_rstate_req q = {.kind = CHP_RS_UPLOAD_PUT_CHUNK};
        memcpy(q.u.upload.id, id, CHP_UPLOAD_ID_BYTES);
        q.u.upload.index = index;
        memcpy(q.u.upload.addr, addr, CHP_HASH_BYTES);
        return chp_rstate_run(w, &q);
}

/* Writes every record the tests read; 0 or the first error (named on stderr). */
static int write_records(void)
{
        int rc;
#define W(expr)                                                                                    \
        do {                                                                                       \
                if ((rc = (expr)) != 0) {                                                          \
                        fprintf(stderr, "writing the records: %s: %s\n", #expr, chp_strerror(rc)); \
                        return rc;                                                                 \
                }                                                                                  \
        } while (0)
        make_file(&fa);
        make_file(&fg);
        make_chunk(&cbad, 3000);
        make_chunk(&cnone, 2000);
        rand_bytes(quarantined, sizeof(quarantined));
        rand_bytes(un, sizeof(un));
        rand_bytes(ut, sizeof(ut));
        rand_bytes(uc, sizeof(uc));
        rand_bytes(tail, sizeof(tail));
        rand_bytes(many_addr, sizeof(many_addr));

        /* fa: its chunks, then the commit (with tus metadata) */
        for (int i = 0; i < FILE_CHUNKS; i++)
                W(put_chunk(&fa.c[i], 'f', fa.id));
        struct chp_rstate_req r = {.kind = CHP_RS_COMMIT};
        r.u.commit.manifest = fa.man;
        r.u.commit.manifest_len = fa.man_len;
        r.u.commit.tenant = tenant;
        r.u.commit.created = 1000;
        r.u.commit.expires = 4000000000u;
        r.u.commit.meta = meta;
        r.u.commit.meta_len = sizeof(meta) - 1;
        W(chp_rstate_run(w, &r));
        if (memcmp(r.u.commit.file_id, fa.id, CHP_HASH_BYTES) != 0) {
                fprintf(stderr, "the commit named another file id\n");
                return -EINVAL;
        }

        /* un: a native upload of fg, chunks 0 and 1 and an entry at 3, pending */
        W(create_upload(un, &fg));
        for (int i = 0; i < FILE_CHUNKS; i++) {
                W(put_chunk(&fg.c[i], 'u', un));
                W(upload_chunk(un, (uint32_t)i, fg.c[i].addr));
        }
        W(upload_chunk(un, 3, fg.c[0].addr));
        struct chp_rstate_req p = {.kind = CHP_RS_PENDING_TAKE};
        memcpy(p.u.pending.file_id, fg.id, CHP_HASH_BYTES);
        memcpy(p.u.pending.upload_id, un, CHP_UPLOAD_ID_BYTES);
        W(chp_rstate_run(w, &p));

        /* ut: a tus upload of MANY chunk entries and a kept tail */
        W(create_upload(ut, NULL));
        for (uint32_t i = 0; i < MANY; i++)
                W(upload_chunk(ut, i, many_addr[i]));
        struct chp_rstate_req t = {.kind = CHP_RS_TUS_APPEND};
        memcpy(t.u.tus.upload_id, ut, CHP_UPLOAD_ID_BYTES);
        t.u.tus.old = 0;
        t.u.tus.data = tail;
        t.u.tus.len = TAIL_BYTES;
        W(chp_rstate_run(w, &t));

        /* uc: completed as fa */
        W(create_upload(uc, NULL));
        struct chp_rstate_req c = {.kind = CHP_RS_UPLOAD_COMPLETE};
        memcpy(c.u.upload.id, uc, CHP_UPLOAD_ID_BYTES);
        memcpy(c.u.upload.file_id, fa.id, CHP_HASH_BYTES);
        W(chp_rstate_run(w, &c));

        /* a quarantined id (a tombstone) */
        struct chp_rstate_req qr = {.kind = CHP_RS_FILE_QUARANTINE};
        memcpy(qr.u.file.id, quarantined, CHP_HASH_BYTES);
        qr.u.file.now = 5000;
        W(chp_rstate_run(w, &qr));

        /* cbad: stored, then one byte of its object changed behind the store's back */
        W(put_chunk(&cbad, 'u', un));
        char oid[2 * CHP_HASH_BYTES + 1];
        chp_hex_encode(cbad.addr, CHP_HASH_BYTES, oid);
        char flipped = (char)(cbad.data[7] ^ 0x40);
        W(rados_write(rawc, oid, &flipped, 1, 7));
        return 0;
#undef W
}

/* ---- asking the store ---- */

struct answer {
        sem_t done;
        pthread_t asker;
        bool other_thread;
};

static void answered(struct chp_store_lookup *q)
{
        struct answer *a = q->ctx;
        a->other_thread = !pthread_equal(pthread_self(), a->asker);
        sem_post(&a->done);
}

/* Waits for what was posted to sem, then destroys it; a hang (WAIT_S) ends the test. */
static void await(sem_t *sem, const char *what)
{
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += WAIT_S;
        int rc;
        while ((rc = sem_timedwait(sem, &t)) != 0 && errno == EINTR)
                ;
        if (rc) {
                fprintf(stderr, "%s did not complete within %d s\n", what, WAIT_S);
                exit(1);
        }
        sem_destroy(sem);
}

/* chp_store_lookup(q), which must answer later through done on another thread: q->status. */
static int ask(struct chp_store_lookup *q)
{
        struct answer a = {.asker = pthread_self()};
        sem_init(&a.done, 0, 0);
        q->done = answered;
        q->ctx = &a;
        int rc = chp_store_lookup(s, q);
        if (rc != -EINPROGRESS) {
                fprintf(stderr, "lookup kind %d answered now (%s), not later\n", q->kind,
                        chp_strerror(rc));
                sem_destroy(&a.done);
                return rc == 0 ? -EDOM : rc;
        }
        await(&a.done, "a lookup");
        if (!a.other_thread) {
                fprintf(stderr, "lookup kind %d answered on the asking thread\n", q->kind);
                return -EDOM;
        }
        return q->status;
}

static struct chp_store_lookup lookup_of(enum chp_store_lookup_kind kind, const uint8_t *id,
                                         size_t idlen)
{
        struct chp_store_lookup q = {.kind = kind};
        memcpy(q.id, id, idlen);
        return q;
}

/* ---- files ---- */

TEST(file_lookup_and_file_get)
{
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_FILE, fa.id, CHP_HASH_BYTES);
        CHECK_OK(ask(&q));
        CHECK(q.manifest == NULL); /* info only */
        CHECK(strcmp(q.info.tenant, tenant) == 0);
        CHECK_EQ(q.info.created, 1000);
        CHECK_EQ(q.info.expires, 4000000000u);
        CHECK_EQ(q.info.size, FILE_SIZE);
        q.want_manifest = true;
        CHECK_OK(ask(&q));
        REQUIRE(q.manifest != NULL);
        CHECK_EQ(q.manifest_len, fa.man_len);
        CHECK(memcmp(q.manifest, fa.man, fa.man_len) == 0);
        chp_store_lookup_clear(&q);

        uint8_t *man = NULL;
        size_t len = 0;
        struct chp_file_info info;
        CHECK_OK(chp_store_file_get(s, fa.id, &man, &len, &info));
        REQUIRE(man != NULL);
        CHECK_EQ(len, fa.man_len);
        CHECK(memcmp(man, fa.man, fa.man_len) == 0);
        CHECK(strcmp(info.tenant, tenant) == 0);
        CHECK_EQ(info.size, FILE_SIZE);
        free(man);
        CHECK_OK(chp_store_file_get(s, fa.id, NULL, NULL, NULL));
}

TEST(unknown_and_quarantined_files)
{
        uint8_t none[CHP_HASH_BYTES];
        rand_bytes(none, sizeof(none));
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_FILE, none, CHP_HASH_BYTES);
        q.want_manifest = true;
        CHECK_EQ(ask(&q), -ENOENT);
        CHECK(q.manifest == NULL);
        q = lookup_of(CHP_LOOKUP_FILE, quarantined, CHP_HASH_BYTES);
        CHECK_EQ(ask(&q), CHP_EQUARANTINED);
        /* a file not yet committed (only uploading) is unknown too */
        q = lookup_of(CHP_LOOKUP_FILE, fg.id, CHP_HASH_BYTES);
        CHECK_EQ(ask(&q), -ENOENT);
        uint8_t *man = (uint8_t *)1;
        size_t len = 1;
        CHECK_EQ(chp_store_file_get(s, none, &man, &len, NULL), -ENOENT);
        CHECK(man == NULL);
        CHECK_EQ(chp_store_file_get(s, quarantined, NULL, NULL, NULL), CHP_EQUARANTINED);
}

TEST(file_meta)
{
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_FILE_META, fa.id, CHP_HASH_BYTES);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.len, sizeof(meta) - 1);
        CHECK(q.meta && memcmp(q.meta, meta, sizeof(meta) - 1) == 0);
        chp_store_lookup_clear(&q);
        uint8_t buf[CHP_UPLOAD_META_MAX];
        CHECK_EQ(chp_store_file_meta(s, fa.id, buf, sizeof(buf)), (ssize_t)sizeof(meta) - 1);
        CHECK(memcmp(buf, meta, sizeof(meta) - 1) == 0);
        CHECK_EQ(chp_store_file_meta(s, fa.id, buf, 4), -ENOBUFS);
        /* unknown or quarantined: none */
        q = lookup_of(CHP_LOOKUP_FILE_META, quarantined, CHP_HASH_BYTES);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.len, 0);
        CHECK(q.meta == NULL);
        CHECK_EQ(chp_store_file_meta(s, fg.id, buf, sizeof(buf)), 0);
}

/* ---- uploads ---- */

TEST(upload_records)
{
        struct chp_upload u;
        memset(&u, 0xee, sizeof(u));
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_UPLOAD, un, CHP_UPLOAD_ID_BYTES);
        q.upload = &u;
        CHECK_OK(ask(&q));
        CHECK(memcmp(u.id, un, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK(strcmp(u.tenant, tenant) == 0);
        CHECK(strcmp(u.subject, "bob") == 0);
        CHECK_EQ(u.chunk_size, CHP_CHUNK_MIN);
        CHECK_EQ(u.declared_size, FILE_SIZE);
        CHECK_EQ(u.created, 2000);
        CHECK_EQ(u.meta_len, sizeof(meta) - 1);
        CHECK(memcmp(u.meta, meta, sizeof(meta) - 1) == 0);
        CHECK(u.has_manifest);
        CHECK(memcmp(u.file_id, fg.id, CHP_HASH_BYTES) == 0);
        CHECK(!u.complete);

        /* complete: from the upload's state, with the file it became */
        struct chp_upload v;
        CHECK_OK(chp_store_upload_get(s, uc, &v));
        CHECK(v.complete);
        CHECK(!v.has_manifest);
        CHECK(memcmp(v.file_id, fa.id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(v.declared_size, CHP_UPLOAD_SIZE_UNKNOWN);

        /* a lookup without room for the record is malformed */
        q = lookup_of(CHP_LOOKUP_UPLOAD, un, CHP_UPLOAD_ID_BYTES);
        q.done = answered;
        CHECK_EQ(chp_store_lookup(s, &q), -EINVAL);
}

TEST(upload_manifest)
{
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_UPLOAD_MANIFEST, un, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.manifest_len, fg.man_len);
        CHECK(q.manifest && memcmp(q.manifest, fg.man, fg.man_len) == 0);
        chp_store_lookup_clear(&q);
        uint8_t *man = NULL;
        size_t len = 0;
        CHECK_OK(chp_store_upload_manifest(s, un, &man, &len));
        CHECK_EQ(len, fg.man_len);
        CHECK(man && memcmp(man, fg.man, fg.man_len) == 0);
        free(man);
        /* a tus upload has none */
        q = lookup_of(CHP_LOOKUP_UPLOAD_MANIFEST, ut, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(ask(&q), -ENOENT);
        CHECK_EQ(chp_store_upload_manifest(s, ut, &man, &len), -ENOENT);
}

TEST(upload_progress_and_tail)
{
        /* chunks 0 and 1, then a gap before 3; no tail */
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_UPLOAD_PROGRESS, un, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.chunks, 2);
        CHECK_EQ(q.len, 0);
        /* MANY chunks over several pages, and the kept tail */
        q = lookup_of(CHP_LOOKUP_UPLOAD_PROGRESS, ut, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.chunks, MANY);
        CHECK_EQ(q.len, TAIL_BYTES);
        uint8_t buf[2 * TAIL_BYTES];
        memset(buf, 0, sizeof(buf));
        q.buf = buf;
        q.cap = sizeof(buf);
        CHECK_OK(ask(&q));
        CHECK_EQ(q.len, TAIL_BYTES);
        CHECK(memcmp(buf, tail, TAIL_BYTES) == 0);

        uint32_t chunks = 0;
        size_t tl = 0;
        CHECK_OK(chp_store_upload_progress(s, ut, &chunks, &tl));
        CHECK_EQ(chunks, MANY);
        CHECK_EQ(tl, TAIL_BYTES);
        memset(buf, 0, sizeof(buf));
        CHECK_EQ(chp_store_upload_tail(s, ut, buf, sizeof(buf)), TAIL_BYTES);
        CHECK(memcmp(buf, tail, TAIL_BYTES) == 0);
        CHECK_EQ(chp_store_upload_tail(s, ut, buf, TAIL_BYTES - 1), -ENOBUFS);
}

TEST(upload_chunks)
{
        uint8_t have[5], addrs[5 * CHP_HASH_BYTES];
        memset(have, 7, sizeof(have));
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_UPLOAD_CHUNKS, un, CHP_UPLOAD_ID_BYTES);
        q.n = 5;
        q.present = have;
        q.chunk_addrs = addrs;
        CHECK_OK(ask(&q));
        CHECK(have[0] == 1 && have[1] == 1 && have[2] == 0 && have[3] == 1 && have[4] == 0);
        CHECK(memcmp(addrs, fg.c[0].addr, CHP_HASH_BYTES) == 0);
        CHECK(memcmp(addrs + CHP_HASH_BYTES, fg.c[1].addr, CHP_HASH_BYTES) == 0);
        CHECK(memcmp(addrs + 3 * CHP_HASH_BYTES, fg.c[0].addr, CHP_HASH_BYTES) == 0);
        /* indexes at or past n are not reported */
        memset(have, 7, sizeof(have));
        CHECK_OK(chp_store_upload_chunks(s, un, have, NULL, 3));
        CHECK(have[0] == 1 && have[1] == 1 && have[2] == 0 && have[3] == 7);

        /* over several pages of the omap */
        static uint8_t many_have[MANY + 1], many[(MANY + 1) * CHP_HASH_BYTES];
        CHECK_OK(chp_store_upload_chunks(s, ut, many_have, many, MANY + 1));
        bool all = true;
        for (uint32_t i = 0; i < MANY; i++)
                all = all && many_have[i] == 1 &&
                      memcmp(many + i * CHP_HASH_BYTES, many_addr[i], CHP_HASH_BYTES) == 0;
        CHECK(all);
        CHECK_EQ(many_have[MANY], 0);
}

TEST(unknown_uploads)
{
        uint8_t none[CHP_UPLOAD_ID_BYTES], have[2];
        rand_bytes(none, sizeof(none));
        struct chp_upload u;
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_UPLOAD, none, CHP_UPLOAD_ID_BYTES);
        q.upload = &u;
        CHECK_EQ(ask(&q), -ENOENT);
        q = lookup_of(CHP_LOOKUP_UPLOAD_PROGRESS, none, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(ask(&q), -ENOENT);
        q = lookup_of(CHP_LOOKUP_UPLOAD_CHUNKS, none, CHP_UPLOAD_ID_BYTES);
        q.n = 2;
        q.present = have;
        CHECK_EQ(ask(&q), -ENOENT);
        q = lookup_of(CHP_LOOKUP_UPLOAD_MANIFEST, none, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(ask(&q), -ENOENT);
        uint32_t chunks;
        size_t tl;
        CHECK_EQ(chp_store_upload_get(s, none, &u), -ENOENT);
        CHECK_EQ(chp_store_upload_progress(s, none, &chunks, &tl), -ENOENT);
        CHECK_EQ(chp_store_upload_chunks(s, none, have, NULL, 2), -ENOENT);
        uint8_t buf[8];
        CHECK_EQ(chp_store_upload_tail(s, none, buf, sizeof(buf)), 0); /* no bytes kept */
}

TEST(pending)
{
        struct chp_store_lookup q = lookup_of(CHP_LOOKUP_PENDING, fg.id, CHP_HASH_BYTES);
        CHECK_OK(ask(&q));
        CHECK(memcmp(q.upload_id, un, CHP_UPLOAD_ID_BYTES) == 0);
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        CHECK_OK(chp_store_pending(s, fg.id, id));
        CHECK(memcmp(id, un, CHP_UPLOAD_ID_BYTES) == 0);
        q = lookup_of(CHP_LOOKUP_PENDING, fa.id, CHP_HASH_BYTES);
        CHECK_EQ(ask(&q), -ENOENT);
        CHECK_EQ(chp_store_pending(s, fa.id, id), -ENOENT);
}

/* ---- chunks ---- */

TEST(has)
{
        /* more addresses than are asked at once: stored ones at known places */
        static uint8_t addrs[HAS_N * CHP_HASH_BYTES];
        uint8_t present[HAS_N], want[HAS_N];
        rand_bytes(addrs, sizeof(addrs));
        memset(want, 0, sizeof(want));
        const uint8_t *stored[] = {fa.c[0].addr, fa.c[1].addr, fg.c[0].addr, fg.c[1].addr,
                                   cbad.addr};
        size_t at[] = {0, 7, 16, 17, HAS_N - 1};
        for (size_t k = 0; k < 5; k++) {
                memcpy(addrs + at[k] * CHP_HASH_BYTES, stored[k], CHP_HASH_BYTES);
                want[at[k]] = 1;
        }
        memset(present, 9, sizeof(present));
        struct chp_store_lookup q = {
            .kind = CHP_LOOKUP_HAS, .addrs = addrs, .n = HAS_N, .present = present};
        CHECK_OK(ask(&q));
        CHECK(memcmp(present, want, HAS_N) == 0);
        memset(present, 9, sizeof(present));
        CHECK_OK(chp_store_has(s, addrs, HAS_N, present));
        CHECK(memcmp(present, want, HAS_N) == 0);
        memset(present, 9, sizeof(present));
        CHECK_OK(chp_store_has(s, cnone.addr, 1, present));
        CHECK_EQ(present[0], 0);
}

struct read_answer {
        sem_t done;
        ssize_t result;
};

static void read_arrived(void *ctx, ssize_t result)
{
        struct read_answer *a = ctx;
        a->result = result;
        sem_post(&a->done);
}

/* chp_store_read_async, which must complete later: its result. */
static ssize_t read_later(const uint8_t addr[CHP_HASH_BYTES], void *buf, size_t cap)
{
        struct read_answer a;
        sem_init(&a.done, 0, 0);
        ssize_t rc = chp_store_read_async(s, addr, buf, cap, read_arrived, &a);
        if (rc != -EINPROGRESS) {
                fprintf(stderr, "a chunk read completed now (%zd), not later\n", rc);
                sem_destroy(&a.done);
                return rc >= 0 ? -EDOM : rc;
        }
        await(&a.done, "a chunk read");
        return a.result;
}

TEST(chunk_reads)
{
        static uint8_t buf[CHP_CHUNK_MAX];
        struct chp_chunk_loc loc;
        CHECK_OK(chp_store_locate(s, fa.c[0].addr, &loc));
        CHECK(loc.remote);
        CHECK_EQ(loc.fd, -1);
        chp_store_loc_release(s, &loc);

        for (int i = 0; i < FILE_CHUNKS; i++) {
                const struct chunk *c = &fa.c[i];
                memset(buf, 0, c->len);
                CHECK_EQ(read_later(c->addr, buf, sizeof(buf)), (ssize_t)c->len);
                CHECK(memcmp(buf, c->data, c->len) == 0);
                memset(buf, 0, c->len);
                CHECK_EQ(chp_store_read(s, c->addr, buf, c->len), (ssize_t)c->len);
                CHECK(memcmp(buf, c->data, c->len) == 0);
        }
        CHECK_EQ(read_later(fa.c[1].addr, buf, 999), -ENOBUFS);
        CHECK_EQ(chp_store_read(s, fa.c[1].addr, buf, 999), -ENOBUFS);
        CHECK_EQ(read_later(cbad.addr, buf, sizeof(buf)), CHP_ECORRUPT);
        CHECK_EQ(chp_store_read(s, cbad.addr, buf, sizeof(buf)), CHP_ECORRUPT);
        CHECK_EQ(read_later(cnone.addr, buf, sizeof(buf)), -ENOENT);
        CHECK_EQ(chp_store_read(s, cnone.addr, buf, sizeof(buf)), -ENOENT);
}

/* ---- the rest ---- */

TEST(tenant_usage_refcount_stats)
{
        struct chp_rstate_req r = {.kind = CHP_RS_USAGE_GET};
        r.u.usage.tenant = tenant;
        REQUIRE_OK(chp_rstate_run(w, &r));
        struct chp_tenant_usage u;
        CHECK_OK(chp_store_tenant_usage(s, tenant, &u));
        CHECK(memcmp(&u, &r.u.usage.usage, sizeof(u)) == 0);
        CHECK_EQ(u.files, 1);
        CHECK_EQ(u.stored_bytes, FILE_SIZE);
        CHECK_OK(chp_store_tenant_usage(s, "", &u));
        CHECK_EQ(u.files, 0);
        CHECK_OK(chp_store_tenant_usage(s, "nobody", &u));
        CHECK_EQ(u.files, 0);
        uint64_t count;
        CHECK_EQ(chp_store_refcount(s, fa.c[0].addr, &count), -ENOTSUP);
        struct chp_store_stats st;
        CHECK_EQ(chp_store_stats(s, &st), -ENOTSUP);
}

/* ---- a relay on the shared state: the faces' reads (download.c, native_read.c) ---- */

/* The HTTP face's host:port from the relay's ready file. */
static int http_addr(const struct rc_relay *r, char *out, size_t cap)
{
        char path[300], line[160];
        snprintf(path, sizeof(path), "%s/ready", r->dir);
        FILE *f = fopen(path, "r");
        if (!f)
                return -errno;
        int rc = -ENOENT;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "http=", 5) == 0) {
                        line[strcspn(line, "\n")] = '\0';
                        snprintf(out, cap, "%.120s", line + 5);
                        rc = 0;
                }
        fclose(f);
        return rc;
}

/* GET path from hostport with extra header lines, Connection: close; the whole response into
 * *resp (caller frees), its length in *len. 0 or -errno. */
static int http_get(const char *hostport, const char *path, const char *extra, char **resp,
                    size_t *len)
{
        char host[128], *colon;
        snprintf(host, sizeof(host), "%s", hostport);
        if (!(colon = strrchr(host, ':')))
                return -EINVAL;
        *colon = '\0';
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
        if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
                return -EINVAL;
        int fd = socket(ai->ai_family, SOCK_STREAM, 0);
        struct timeval tv = {.tv_sec = WAIT_S};
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
            connect(fd, ai->ai_addr, ai->ai_addrlen)) {
                freeaddrinfo(ai);
                if (fd >= 0)
                        close(fd);
                return -errno;
        }
        freeaddrinfo(ai);
        char req[512];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n", path, extra);
        struct iovec iov = {.iov_base = req, .iov_len = (size_t)n};
        int rc = rc_write_iov(fd, &iov, 1, NULL);
        size_t cap = 1 << 20, got = 0;
        char *buf = malloc(cap);
        while (!rc && buf) {
                ssize_t r = read(fd, buf + got, cap - got);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        rc = -errno;
                if (r <= 0)
                        break;
                got += (size_t)r;
                if (got == cap) {
                        rc = -EFBIG;
                        break;
                }
        }
        close(fd);
        if (!buf)
                return -ENOMEM;
        if (rc) {
                free(buf);
                return rc;
        }
        *resp = buf;
        *len = got;
        return 0;
}

/* The body of an HTTP response that has status; NULL otherwise. */
static const char *body_of(const char *resp, size_t len, const char *status, size_t *blen)
{
        size_t sl = strlen(status);
        if (len < 9 + sl || memcmp(resp + 9, status, sl) != 0)
                return NULL;
        const char *end = memmem(resp, len, "\r\n\r\n", 4);
        if (!end)
                return NULL;
        *blen = len - (size_t)(end + 4 - resp);
        return end + 4;
}

/* GET_CHUNK of addr (offset, length) on c: 0 with the reply's chunk_len and slice, or a code. */
static int get_chunk(struct rc_conn *c, const uint8_t *addr, uint32_t offset, uint32_t length,
                     uint32_t *chunk_len, uint8_t *out, size_t *out_len)
{
        uint8_t p[64];
        struct chp_msg_get_chunk m = {.addr = addr, .offset = offset, .length = length};
        ssize_t n = chp_msg_get_chunk_encode(p, sizeof(p), &m);
        struct chp_frame_header h;
        uint8_t *reply = NULL;
        int rc = n < 0 ? (int)n : rc_call(c, CHP_F_GET_CHUNK, p, (size_t)n, &h, &reply);
        struct chp_msg_chunk_data d;
        if (!rc && (rc = chp_msg_chunk_data_decode(reply, h.len, &d)) == 0) {
                *chunk_len = d.chunk_len;
                *out_len = d.len;
                memcpy(out, d.data, d.len);
        }
        return rc; /* reply is the channel's */
}

static struct rc_relay r; /* stopped on every way out (atexit) */

static void relay_cleanup(void)
{
        rc_relay_cleanup(&r);
}

TEST(relay_serves_the_pools_files)
{
        if (!getenv("CHAPARD")) {
                fprintf(stderr, "no CHAPARD: the relay's part is not run\n");
                return;
        }
        atexit(relay_cleanup);
        const char *extra[] = {"--store",        "rados", "--rados-conf", conf,
                               "--rados-pool",   pool,    "--rados-user", user,
                               "--rados-shared", NULL};
        REQUIRE_OK(rc_relay_start(&r, false, extra));
        static uint8_t whole[FILE_SIZE];
        for (int i = 0; i < FILE_CHUNKS; i++)
                memcpy(whole + (size_t)i * CHP_CHUNK_MIN, fa.c[i].data, fa.c[i].len);

        /* native: GET_MANIFEST and every GET_CHUNK, then slices of a chunk */
        struct rc_conn c = {.fd = -1};
        int rc = rc_connect(&c, r.addr);
        CHECK_OK(rc);
        uint8_t *got = NULL;
        uint64_t got_len = 0;
        if (!rc) {
                CHECK_OK(rc_get(&c, fa.id, &got, &got_len));
                CHECK_EQ(got_len, FILE_SIZE);
                CHECK(got && memcmp(got, whole, FILE_SIZE) == 0);
                free(got);
                static uint8_t slice[CHP_CHUNK_MIN];
                uint32_t clen = 0;
                size_t n = 0;
                CHECK_OK(get_chunk(&c, fa.c[0].addr, 100, 50, &clen, slice, &n));
                CHECK_EQ(clen, CHP_CHUNK_MIN);
                CHECK_EQ(n, 50);
                CHECK(memcmp(slice, fa.c[0].data + 100, 50) == 0);
                CHECK_OK(get_chunk(&c, fa.c[1].addr, 900, 0, &clen, slice, &n));
                CHECK_EQ(clen, LAST_LEN);
                CHECK_EQ(n, LAST_LEN - 900);
                CHECK(memcmp(slice, fa.c[1].data + 900, LAST_LEN - 900) == 0);
                /* outside the chunk, missing, damaged: errors, and the connection goes on */
                CHECK_EQ(get_chunk(&c, fa.c[1].addr, 990, 20, &clen, slice, &n), CHP_EREMOTE);
                CHECK(strstr(c.last_msg, "outside") != NULL);
                CHECK_EQ(get_chunk(&c, cnone.addr, 0, 0, &clen, slice, &n), CHP_EREMOTE);
                CHECK_EQ(get_chunk(&c, cbad.addr, 0, 0, &clen, slice, &n), CHP_EREMOTE);
                CHECK_OK(get_chunk(&c, fa.c[0].addr, 0, 10, &clen, slice, &n));
        }
        rc_close(&c);

        /* HTTP: the whole file, and a range across its two chunks */
        char hp[160], path[80], *resp = NULL;
        size_t len = 0, blen = 0;
        REQUIRE_OK(http_addr(&r, hp, sizeof(hp)));
        snprintf(path, sizeof(path), "/f/");
        chp_hex_encode(fa.id, CHP_HASH_BYTES, path + 3);
        if (!(rc = http_get(hp, path, "", &resp, &len))) {
                const char *b = body_of(resp, len, "200", &blen);
                CHECK(b != NULL);
                CHECK_EQ(blen, FILE_SIZE);
                CHECK(b && blen == FILE_SIZE && memcmp(b, whole, FILE_SIZE) == 0);
                free(resp);
        }
        CHECK_OK(rc);
        if (!(rc = http_get(hp, path, "Range: bytes=65000-65599\r\n", &resp, &len))) {
                const char *b = body_of(resp, len, "206", &blen);
                CHECK(b != NULL);
                CHECK_EQ(blen, 600);
                CHECK(b && blen == 600 && memcmp(b, whole + 65000, 600) == 0);
                free(resp);
        }
        CHECK_OK(rc);
        /* /metrics goes on without the store's counts (-ENOTSUP over the shared state) */
        if (!(rc = http_get(hp, "/metrics", "", &resp, &len))) {
                CHECK(body_of(resp, len, "200", &blen) != NULL);
                free(resp);
        }
        CHECK_OK(rc);
        CHECK_EQ(rc_relay_stop(&r, SIGTERM), 0);
        rc_relay_cleanup(&r);
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
        struct chp_rstate_opts ro = {.conf = conf, .pool = pool, .user = user};
        if (chp_rstate_open(&ro, &w)) {
                fprintf(stderr, "cannot open the shared state on %s\n", pool);
                return 1;
        }
        if (rados_create(&raw, user) < 0 || rados_conf_read_file(raw, conf) < 0 ||
            rados_connect(raw) < 0 || rados_ioctx_create(raw, pool, &rawc) < 0)
                return 1;
        rados_ioctx_set_namespace(rawc, "c");
        if (write_records())
                return 1;
        snprintf(dir, sizeof(dir), "/tmp/chapar-shread-XXXXXX");
        if (!mkdtemp(dir))
                return 1;
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.map_size = (uint64_t)64 << 20;
        o.backend = CHP_STORE_RADOS;
        o.rados_conf = conf;
        o.rados_pool = pool;
        o.rados_user = user;
        o.rados_inflight = 8; /* fewer than a HAS lookup's addresses */
        o.rados_shared = true;
        int rc = chp_store_open(&o, &s);
        if (rc) {
                fprintf(stderr, "chp_store_open (rados_shared): %s\n", chp_strerror(rc));
                return 1;
        }
        int passed, failed = harness_run(&passed);
        chp_store_close(s);
        chp_rstate_close(w);
        rados_ioctx_destroy(rawc);
        rados_shutdown(raw);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", dir);
        return harness_report(passed, failed);
}
