/* The store: put/get/dedup, reference counts, files, uploads, expiry, GC, compaction, reopen,
 * torn tails, a full map, and chapard verify's view of all of it.
 *
 * `test_store make-store DIR` (used by tests/verify_cli.sh) builds a small store in DIR and
 * then flips one byte of a stored chunk, so that a scrub must find it. `test_store full-disk DIR`
 * (used by tests/enospc.sh, DIR on a small tmpfs) fills the disk, lets data expire and expects
 * puts to work again after GC, both while running and across a restart. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "err.h"
#include "log.h"
#include "manifest.h"
#include "records.h"
#include "store.h"

static char dir[256];

static const char *dir_base = "/tmp";

static void fresh_dir(void)
{
        char cmd[300];
        if (dir[0]) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", dir);
        }
        snprintf(dir, sizeof(dir), "%s/chapar-test-store-XXXXXX", dir_base);
        if (!mkdtemp(dir))
                abort();
}

static struct chp_store *open_store(uint32_t inline_max, uint64_t segment_size)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.inline_max = inline_max;
        o.segment_size = segment_size;
        o.map_size = (uint64_t)256 << 20;
        struct chp_store *s = NULL;
        int rc = chp_store_open(&o, &s);
        if (rc)
                fprintf(stderr, "open: %s\n", chp_strerror(rc));
        return s;
}

/* Deterministic, distinct chunk content. */
static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
        uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
        for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t)x;
        }
}

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t *data;
        uint32_t len;
};

static struct chunk make_chunk(uint32_t len, uint32_t seed)
{
        struct chunk c = {.len = len, .data = malloc(len ? len : 1)};
        fill(c.data, len, seed);
        if (chp_sha256(c.data, len, c.addr) != 0)
                abort();
        return c;
}

static int put_chunk(struct chp_store *s, const struct chunk *c)
{
        return chp_store_put(s, c->addr, c->data, c->len);
}

static bool reads_back(struct chp_store *s, const struct chunk *c)
{
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        ssize_t n = chp_store_read(s, c->addr, buf, CHP_CHUNK_MAX);
        bool ok = n == (ssize_t)c->len && memcmp(buf, c->data, c->len) == 0;
        free(buf);
        return ok;
}

/* Encodes a manifest for n chunks of chunk_size (the last one last_len). Caller frees. */
static uint8_t *manifest_of(const struct chunk *cs, uint32_t n, uint32_t chunk_size, size_t *len)
{
        uint8_t *addrs = malloc((size_t)n * CHP_HASH_BYTES + 1);
        uint64_t total = 0;
        for (uint32_t i = 0; i < n; i++) {
                memcpy(addrs + (size_t)i * CHP_HASH_BYTES, cs[i].addr, CHP_HASH_BYTES);
                total += cs[i].len;
        }
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = chunk_size,
                                 .total_size = total,
                                 .chunk_count = n,
                                 .addrs = addrs};
        size_t cap = chp_manifest_encoded_size(&m);
        uint8_t *buf = malloc(cap);
        ssize_t r = chp_manifest_encode(&m, buf, cap);
        free(addrs);
        if (r < 0) {
                free(buf);
                return NULL;
        }
        *len = (size_t)r;
        return buf;
}

static uint64_t verify_problems(struct chp_store *s)
{
        struct chp_verify_stats st;
        int rc = chp_store_verify(s, NULL, NULL, &st);
        if (rc)
                return 1000000;
        return st.problems;
}

static long long segment_file_bytes(void);
static long long committed_bytes(struct chp_store *s);
static int delete_file(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES]);

static uint64_t refs(struct chp_store *s, const struct chunk *c)
{
        uint64_t n = 99;
        if (chp_store_refcount(s, c->addr, &n) != 0)
                return 98;
        return n;
}

/* Each record parser on a heap copy of exactly len bytes (so that ASan sees any read past len):
 * returns len or -EBADMSG, and every shorter prefix of a valid record is -EBADMSG. */
static ssize_t parse_copy(int kind, const uint8_t *rec, size_t len, void *out)
{
        uint8_t *b = malloc(len ? len : 1);
        if (!b)
                return -ENOMEM;
        memcpy(b, rec, len);
        ssize_t n = kind == 0   ? chp_rec_chunk_parse(b, len, out)
                    : kind == 1 ? chp_rec_file_parse(b, len, out)
                    : kind == 2 ? chp_rec_upload_parse(b, len, out)
                    : kind == 3 ? chp_rec_seg_parse(b, len, out)
                    : kind == 5 ? chp_rec_tenant_parse(b, len, out)
                    : kind == 6 ? chp_rec_orphan_parse(b, len, out)
                                : chp_rec_refs_parse(b, len, out);
        free(b);
        return n;
}

static int prefixes_rejected(int kind, const uint8_t *rec, size_t len)
{
        union {
                struct chp_rec_chunk c;
                struct chp_rec_file f;
                struct chp_rec_upload u;
                struct chp_rec_seg g;
                struct chp_tenant_usage t;
                uint64_t r;
        } out;
        for (size_t n = 0; n < len; n++)
                if (parse_copy(kind, rec, n, &out) != -EBADMSG)
                        return 0;
        return 1;
}

TEST(records_codec)
{
        uint8_t rec[CHP_REC_UPLOAD_BYTES + 256];
        struct chp_rec_chunk c;
        chp_rec_chunk_encode(rec, CHP_REC_CHUNK_SEG, 70000, 0x1122334455667788ull, 7, 1u << 30);
        CHECK_EQ(parse_copy(0, rec, CHP_REC_CHUNK_BYTES, &c), CHP_REC_CHUNK_BYTES);
        CHECK(c.kind == CHP_REC_CHUNK_SEG && c.len == 70000 && c.seg == 7 &&
              c.offset == (1u << 30) && c.xxh3 == 0x1122334455667788ull && !c.inline_data);
        CHECK(prefixes_rejected(0, rec, CHP_REC_CHUNK_BYTES));
        CHECK_EQ(parse_copy(0, rec, CHP_REC_CHUNK_BYTES + 1, &c), -EBADMSG);
        chp_rec_chunk_encode(rec, CHP_REC_CHUNK_INLINE, 5, 1, 0, 0);
        memcpy(rec + CHP_REC_CHUNK_BYTES, "bytes", 5);
        CHECK_EQ(chp_rec_chunk_parse(rec, CHP_REC_CHUNK_BYTES + 5, &c), CHP_REC_CHUNK_BYTES + 5);
        CHECK(c.inline_data == rec + CHP_REC_CHUNK_BYTES);
        CHECK_EQ(parse_copy(0, rec, CHP_REC_CHUNK_BYTES + 4, &c), -EBADMSG);
        chp_rec_chunk_encode(rec, 3, 0, 0, 0, 0);
        CHECK_EQ(parse_copy(0, rec, CHP_REC_CHUNK_BYTES, &c), -EBADMSG); /* unknown kind */

        struct chp_rec_file f;
        chp_rec_file_encode(rec, 3, 10, 100, 200, 300);
        memcpy(rec + CHP_REC_FILE_BYTES, "tenmanifest12", 13);
        CHECK_EQ(parse_copy(1, rec, CHP_REC_FILE_BYTES + 13, &f), CHP_REC_FILE_BYTES + 13);
        CHECK(f.tenant_len == 3 && f.manifest_len == 10 && f.created == 100 && f.expires == 200 &&
              f.size == 300);
        CHECK(prefixes_rejected(1, rec, CHP_REC_FILE_BYTES + 13));
        chp_rec_file_set_expires(rec, 201);
        CHECK_EQ(chp_rec_file_parse(rec, CHP_REC_FILE_BYTES + 13, &f), CHP_REC_FILE_BYTES + 13);
        CHECK_EQ(f.expires, 201);
        chp_rec_file_encode(rec, CHP_TENANT_MAX + 1, 0, 0, 0, 0);
        CHECK_EQ(parse_copy(1, rec, CHP_REC_FILE_BYTES + CHP_TENANT_MAX + 1, &f), -EBADMSG);
        chp_rec_file_encode(rec, 40, 0, 0, 0, 0); /* tenant longer than the value */
        CHECK_EQ(parse_copy(1, rec, CHP_REC_FILE_BYTES + 10, &f), -EBADMSG);

        uint8_t fid[CHP_HASH_BYTES];
        memset(fid, 0xab, sizeof(fid));
        struct chp_rec_upload u = {.flags = CHP_REC_UPLOAD_HAS_MANIFEST,
                                   .chunk_size = 1u << 20,
                                   .meta_len = 4,
                                   .manifest_len = 6,
                                   .declared = 5000,
                                   .created = 1,
                                   .expires = 2,
                                   .file_expires = 3,
                                   .tenant_len = 2,
                                   .file_id = fid},
                              got;
        chp_rec_upload_encode(rec, &u);
        memcpy(rec + CHP_REC_UPLOAD_BYTES, "t1metamanife", 12);
        size_t ulen = CHP_REC_UPLOAD_BYTES + 12;
        CHECK_EQ(parse_copy(2, rec, ulen, &got), (ssize_t)ulen);
        CHECK(got.flags == u.flags && got.chunk_size == u.chunk_size && got.meta_len == 4 &&
              got.manifest_len == 6 && got.declared == 5000 && got.file_expires == 3 &&
              got.tenant_len == 2);
        CHECK(prefixes_rejected(2, rec, ulen));
        chp_rec_upload_set_complete(rec, fid);
        CHECK_EQ(chp_rec_upload_parse(rec, ulen, &got), (ssize_t)ulen);
        CHECK(got.flags & CHP_REC_UPLOAD_COMPLETE);
        CHECK(memcmp(got.file_id, fid, CHP_HASH_BYTES) == 0);
        u.flags = 0; /* a manifest without the flag */
        chp_rec_upload_encode(rec, &u);
        CHECK_EQ(parse_copy(2, rec, ulen, &got), -EBADMSG);
        u.flags = CHP_REC_UPLOAD_HAS_MANIFEST;
        u.manifest_len = UINT32_MAX; /* lengths that would wrap the sum */
        chp_rec_upload_encode(rec, &u);
        CHECK_EQ(parse_copy(2, rec, ulen, &got), -EBADMSG);
        u.manifest_len = 6;

        /* version 2 records the subject after the tenant; version 1 (no subject) still reads */
        u.subject_len = 5;
        chp_rec_upload_encode(rec, &u);
        CHECK_EQ(rec[0], CHP_REC_UPLOAD_VERSION);
        CHECK_EQ(rec[3], 5);
        memcpy(rec + CHP_REC_UPLOAD_BYTES, "t1alicemetamanife", 17);
        size_t slen = CHP_REC_UPLOAD_BYTES + 17;
        CHECK_EQ(parse_copy(2, rec, slen, &got), (ssize_t)slen);
        CHECK(got.tenant_len == 2 && got.subject_len == 5 && got.meta_len == 4 &&
              got.manifest_len == 6);
        CHECK(chp_rec_upload_parse(rec, slen, &got) == (ssize_t)slen &&
              memcmp(got.tenant, "t1", 2) == 0 && memcmp(got.subject, "alice", 5) == 0 &&
              memcmp(got.meta, "meta", 4) == 0 && memcmp(got.manifest, "manife", 6) == 0);
        CHECK(prefixes_rejected(2, rec, slen));
        struct chp_upload *pub = calloc(1, sizeof(*pub));
        REQUIRE(pub);
        chp_rec_upload_to_public(fid, &got, pub);
        CHECK(strcmp(pub->tenant, "t1") == 0 && strcmp(pub->subject, "alice") == 0);
        rec[3] = CHP_TOKEN_SUBJECT_MAX + 1; /* a subject longer than a token's */
        CHECK_EQ(
            parse_copy(2, rec, CHP_REC_UPLOAD_BYTES + 2 + CHP_TOKEN_SUBJECT_MAX + 1 + 4 + 6, &got),
            -EBADMSG); /* though the lengths add up */
        u.subject_len = 0;
        chp_rec_upload_encode(rec, &u);
        rec[0] = 1; /* a record written before subjects: the same layout, byte 3 zero */
        memcpy(rec + CHP_REC_UPLOAD_BYTES, "t1metamanife", 12);
        CHECK_EQ(parse_copy(2, rec, ulen, &got), (ssize_t)ulen);
        CHECK(got.subject_len == 0 && got.tenant_len == 2 && got.meta_len == 4);
        CHECK(chp_rec_upload_parse(rec, ulen, &got) == (ssize_t)ulen &&
              memcmp(got.meta, "meta", 4) == 0);
        memset(pub->subject, 'x', sizeof(pub->subject));
        chp_rec_upload_to_public(fid, &got, pub);
        CHECK(strcmp(pub->tenant, "t1") == 0 && pub->subject[0] == '\0');
        rec[3] = 5; /* version 1 has no subject length */
        CHECK_EQ(parse_copy(2, rec, ulen + 5, &got), -EBADMSG);
        rec[0] = CHP_REC_UPLOAD_VERSION + 1; /* a version this code does not know */
        rec[3] = 0;
        CHECK_EQ(parse_copy(2, rec, ulen, &got), -EBADMSG);
        free(pub);

        struct chp_rec_seg g = {.total = 9, .live = 4, .state = CHP_REC_SEG_SEALED}, g2;
        chp_rec_seg_encode(rec, &g);
        CHECK_EQ(parse_copy(3, rec, CHP_REC_SEG_BYTES, &g2), CHP_REC_SEG_BYTES);
        CHECK(g2.total == 9 && g2.live == 4 && g2.state == CHP_REC_SEG_SEALED);
        CHECK(prefixes_rejected(3, rec, CHP_REC_SEG_BYTES));

        uint64_t refs = 0;
        chp_rec_refs_encode(rec, 42);
        CHECK_EQ(parse_copy(4, rec, CHP_REC_REFS_BYTES, &refs), CHP_REC_REFS_BYTES);
        CHECK_EQ(refs, 42);
        CHECK(prefixes_rejected(4, rec, CHP_REC_REFS_BYTES));

        struct chp_tenant_usage tu = {.stored_bytes = 1,
                                      .files = 2,
                                      .incomplete = 3,
                                      .incomplete_bytes = 4,
                                      .day = 20000,
                                      .day_bytes = UINT64_MAX},
                                tu2;
        chp_rec_tenant_encode(rec, &tu);
        CHECK_EQ(rec[0], CHP_REC_TENANT_VERSION);
        CHECK_EQ(rec[8], 1); /* little-endian */
        CHECK_EQ(parse_copy(5, rec, CHP_REC_TENANT_BYTES, &tu2), CHP_REC_TENANT_BYTES);
        CHECK(memcmp(&tu, &tu2, sizeof(tu)) == 0);
        CHECK(prefixes_rejected(5, rec, CHP_REC_TENANT_BYTES));
        CHECK_EQ(parse_copy(5, rec, CHP_REC_TENANT_BYTES + 1, &tu2), -EBADMSG);
        rec[0] = CHP_REC_TENANT_VERSION + 1; /* a version this code does not know */
        CHECK_EQ(parse_copy(5, rec, CHP_REC_TENANT_BYTES, &tu2), -EBADMSG);

        uint64_t since = 0;
        chp_rec_orphan_encode(rec, 1234567);
        CHECK_EQ(parse_copy(6, rec, CHP_REC_ORPHAN_BYTES, &since), CHP_REC_ORPHAN_BYTES);
        CHECK_EQ(since, 1234567);
        CHECK(prefixes_rejected(6, rec, CHP_REC_ORPHAN_BYTES));

        uint8_t key[CHP_REC_EXPIRY_KEY_MAX];
        CHECK_EQ(chp_rec_expiry_key(key, 5, CHP_REC_EXPIRY_UPLOAD, fid, CHP_UPLOAD_ID_BYTES),
                 9 + CHP_UPLOAD_ID_BYTES);
        CHECK(key[7] == 5 && key[8] == CHP_REC_EXPIRY_UPLOAD);
}

TEST(put_get_both_layouts)
{
        uint32_t sizes[] = {0, 1, 1000, 16 * 1024, 16 * 1024 + 1, 100000, CHP_CHUNK_MAX};
        for (int layout = 0; layout < 2; layout++) {
                fresh_dir();
                struct chp_store *s =
                    open_store(layout ? CHP_STORE_INLINE_ALL : 16 * 1024, (uint64_t)64 << 20);
                REQUIRE(s);
                for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                        struct chunk c = make_chunk(sizes[i], (uint32_t)i);
                        CHECK_OK(put_chunk(s, &c));
                        CHECK(reads_back(s, &c));
                        struct chp_chunk_loc loc;
                        CHECK_OK(chp_store_locate(s, c.addr, &loc));
                        CHECK_EQ(loc.len, sizes[i]);
                        CHECK_EQ(loc.is_inline, layout == 1 || sizes[i] <= 16 * 1024);
                        if (!loc.is_inline) {
                                uint8_t *b = malloc(sizes[i]);
                                CHECK_EQ(pread(loc.fd, b, sizes[i], (off_t)loc.offset),
                                         (ssize_t)sizes[i]);
                                CHECK(memcmp(b, c.data, sizes[i]) == 0);
                                free(b);
                        }
                        chp_store_loc_release(s, &loc);
                        free(c.data);
                }
                struct chp_store_stats st;
                CHECK_OK(chp_store_stats(s, &st));
                CHECK_EQ(st.chunks, 7);
                CHECK_EQ(st.inline_chunks, layout ? 7 : 4);
                CHECK_EQ(verify_problems(s), 0);
                chp_store_close(s);
        }
}

TEST(mismatch_stores_nothing)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk c = make_chunk(50000, 7);
        c.data[100] ^= 1; /* the bytes no longer match the address */
        CHECK_EQ(put_chunk(s, &c), CHP_EMISMATCH);
        uint8_t present = 9;
        CHECK_OK(chp_store_has(s, c.addr, 1, &present));
        CHECK_EQ(present, 0);
        CHECK_EQ(chp_store_read(s, c.addr, c.data, c.len), -ENOENT);
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.chunks, 0);
        CHECK_EQ(st.segment_bytes, 0);
        /* oversized chunks are refused outright */
        struct chp_store_req big = {.type = CHP_REQ_PUT};
        big.u.put.data = c.data;
        big.u.put.len = CHP_CHUNK_MAX + 1;
        CHECK_EQ(chp_store_submit(s, &big), CHP_ETOOBIG);
        chp_store_close(s);
        free(c.data);
}

TEST(dedup_and_has)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk a = make_chunk(200000, 1), b = make_chunk(300, 2), c = make_chunk(5000, 3);
        struct chp_store_req req = {.type = CHP_REQ_PUT};
        memcpy(req.u.put.addr, a.addr, CHP_HASH_BYTES);
        req.u.put.data = a.data;
        req.u.put.len = a.len;
        CHECK_OK(chp_store_run(s, &req));
        CHECK(!req.u.put.deduplicated);
        CHECK_OK(chp_store_run(s, &req));
        CHECK(req.u.put.deduplicated);
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segment_bytes, 200000); /* written once */
        CHECK_OK(put_chunk(s, &b));
        uint8_t addrs[3 * CHP_HASH_BYTES], present[3];
        memcpy(addrs, a.addr, 32);
        memcpy(addrs + 32, b.addr, 32);
        memcpy(addrs + 64, c.addr, 32);
        CHECK_OK(chp_store_has(s, addrs, 3, present));
        CHECK(present[0] == 1 && present[1] == 1 && present[2] == 0);
        chp_store_close(s);
        free(a.data);
        free(b.data);
        free(c.data);
}

TEST(files_refcounts_expiry_gc)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)16 << 20);
        REQUIRE(s);
        const uint32_t cs = 64 * 1024;
        struct chunk ch[4];
        for (int i = 0; i < 4; i++)
                ch[i] = make_chunk(i == 3 ? 100 : cs, 100 + (uint32_t)i);
        /* a commit that names a chunk not stored is refused */
        size_t len1 = 0, len2 = 0;
        uint8_t *m1 = manifest_of(ch, 3, cs, &len1);
        uint8_t id1[CHP_HASH_BYTES], id2[CHP_HASH_BYTES];
        CHECK_EQ(chp_store_commit(s, m1, len1, 0, id1), CHP_EMISSING);
        for (int i = 0; i < 4; i++)
                CHECK_OK(put_chunk(s, &ch[i]));
        CHECK_EQ(refs(s, &ch[0]), 0);
        CHECK_OK(chp_store_commit(s, m1, len1, 1000, id1));
        /* file 2 shares chunk 1 and has a short last chunk */
        struct chunk f2[2] = {ch[1], ch[3]};
        uint8_t *m2 = manifest_of(f2, 2, cs, &len2);
        CHECK_OK(chp_store_commit(s, m2, len2, 2000, id2));
        CHECK_EQ(refs(s, &ch[0]), 1);
        CHECK_EQ(refs(s, &ch[1]), 2);
        CHECK_EQ(refs(s, &ch[3]), 1);
        /* committing again is idempotent */
        CHECK_OK(chp_store_commit(s, m1, len1, 1000, id1));
        CHECK_EQ(refs(s, &ch[1]), 2);
        uint8_t *got;
        size_t glen;
        struct chp_file_info info;
        CHECK_OK(chp_store_file_get(s, id1, &got, &glen, &info));
        CHECK_EQ(glen, len1);
        CHECK(got && memcmp(got, m1, len1) == 0);
        CHECK_EQ(info.expires, 1000);
        CHECK_EQ(info.size, 3 * (uint64_t)cs);
        free(got);
        /* existence only: no copy, info still filled */
        info.expires = 0;
        CHECK_OK(chp_store_file_get(s, id1, NULL, NULL, &info));
        CHECK_EQ(info.expires, 1000);
        uint8_t want[CHP_HASH_BYTES];
        CHECK_OK(chp_manifest_id(m1, len1, want));
        CHECK(memcmp(want, id1, CHP_HASH_BYTES) == 0);
        CHECK_EQ(verify_problems(s), 0);

        /* nothing is due yet */
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 999, &gs));
        CHECK_EQ(gs.files_expired, 0);
        /* file 1 expires: chunks 0 and 2 die, chunk 1 lives on in file 2 */
        CHECK_OK(chp_store_gc(s, 1500, &gs));
        CHECK_EQ(gs.files_expired, 1);
        CHECK_EQ(gs.chunks_freed, 2);
        CHECK_EQ(chp_store_file_get(s, id1, &got, &glen, NULL), -ENOENT);
        CHECK_EQ(chp_store_file_get(s, id1, NULL, NULL, NULL), -ENOENT);
        CHECK_EQ(refs(s, &ch[1]), 1);
        CHECK(!reads_back(s, &ch[0]));
        CHECK(reads_back(s, &ch[1]));
        CHECK(reads_back(s, &ch[3]));
        CHECK_EQ(verify_problems(s), 0);
        /* explicit delete drops the rest */
        struct chp_store_req del = {.type = CHP_REQ_FILE_DELETE};
        memcpy(del.u.file_delete.file_id, id2, CHP_HASH_BYTES);
        CHECK_OK(chp_store_run(s, &del));
        CHECK_EQ(chp_store_run(s, &del), -ENOENT);
        CHECK(!reads_back(s, &ch[1]));
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.chunks, 0);
        CHECK_EQ(st.live_bytes, 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(m1);
        free(m2);
        for (int i = 0; i < 4; i++)
                free(ch[i].data);
}

TEST(uploads_and_attach)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_upload *u = calloc(1, sizeof(*u));
        memset(u->id, 0xab, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "acme");
        u->declared_size = 3 * 65536;
        u->chunk_size = 65536;
        u->created = 10;
        u->expires = 500;
        u->meta_len = 5;
        memcpy(u->meta, "hello", 5);
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        CHECK_OK(chp_store_run(s, &cr));
        struct chp_upload *back = calloc(1, sizeof(*back));
        CHECK_OK(chp_store_upload_get(s, u->id, back));
        CHECK(strcmp(back->tenant, "acme") == 0 && back->meta_len == 5 &&
              memcmp(back->meta, "hello", 5) == 0 && back->expires == 500 &&
              back->declared_size == 3 * 65536);

        struct chunk ch[3];
        for (int i = 0; i < 3; i++)
                ch[i] = make_chunk(65536, 200 + (uint32_t)i);
        /* chunk 1 is put for the upload; chunk 0 exists already and is attached without bytes;
         * attaching an absent chunk fails */
        CHECK_OK(put_chunk(s, &ch[0]));
        struct chp_store_req p = {.type = CHP_REQ_PUT};
        p.u.put.has_upload = true;
        memcpy(p.u.put.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        memcpy(p.u.put.addr, ch[0].addr, CHP_HASH_BYTES);
        p.u.put.index = 0;
        CHECK_OK(chp_store_run(s, &p));
        CHECK(p.u.put.deduplicated);
        memcpy(p.u.put.addr, ch[2].addr, CHP_HASH_BYTES);
        p.u.put.index = 2;
        CHECK_EQ(chp_store_run(s, &p), CHP_EMISSING);
        memcpy(p.u.put.addr, ch[1].addr, CHP_HASH_BYTES);
        p.u.put.data = ch[1].data;
        p.u.put.len = ch[1].len;
        p.u.put.index = 1;
        CHECK_OK(chp_store_run(s, &p));
        CHECK_OK(chp_store_run(s, &p)); /* a resend changes nothing */
        CHECK_EQ(refs(s, &ch[1]), 1);
        CHECK_EQ(refs(s, &ch[0]), 1);
        /* a put for an unknown upload is refused */
        struct chp_store_req q = p;
        memset(q.u.put.upload_id, 0xcd, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(s, &q), -ENOENT);

        uint8_t have[3], addrs[3 * CHP_HASH_BYTES];
        CHECK_OK(chp_store_upload_chunks(s, u->id, have, addrs, 3));
        CHECK(have[0] == 1 && have[1] == 1 && have[2] == 0);
        CHECK(memcmp(addrs + CHP_HASH_BYTES, ch[1].addr, CHP_HASH_BYTES) == 0);
        CHECK_EQ(verify_problems(s), 0);

        /* finish: chunk 2, then commit with the upload; the upload's references go, the file's
         * stay */
        memcpy(p.u.put.addr, ch[2].addr, CHP_HASH_BYTES);
        p.u.put.data = ch[2].data;
        p.u.put.index = 2;
        CHECK_OK(chp_store_run(s, &p));
        size_t mlen = 0;
        uint8_t *m = manifest_of(ch, 3, 65536, &mlen);
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.manifest = m;
        c.u.commit.manifest_len = mlen;
        c.u.commit.tenant = "acme";
        c.u.commit.has_upload = true;
        memcpy(c.u.commit.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &c));
        CHECK_EQ(chp_store_upload_get(s, u->id, back), -ENOENT);
        for (int i = 0; i < 3; i++)
                CHECK_EQ(refs(s, &ch[i]), 1);
        CHECK_EQ(verify_problems(s), 0);

        /* an abandoned upload expires and releases its chunks */
        u->id[0] = 0x01;
        u->expires = 50;
        CHECK_OK(chp_store_run(s, &cr));
        struct chunk lone = make_chunk(70000, 300);
        memcpy(p.u.put.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        memcpy(p.u.put.addr, lone.addr, CHP_HASH_BYTES);
        p.u.put.data = lone.data;
        p.u.put.len = lone.len;
        p.u.put.index = 0;
        CHECK_OK(chp_store_run(s, &p));
        CHECK_EQ(refs(s, &lone), 1);
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 100, &gs));
        CHECK_EQ(gs.uploads_expired, 1);
        CHECK_EQ(gs.chunks_freed, 1);
        CHECK(!reads_back(s, &lone));
        CHECK(reads_back(s, &ch[2]));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(m);
        free(u);
        free(back);
        free(lone.data);
        for (int i = 0; i < 3; i++)
                free(ch[i].data);
}

TEST(native_open_resume_commit)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk ch[3];
        for (int i = 0; i < 3; i++)
                ch[i] = make_chunk(i == 2 ? 1000 : 65536, 400 + (uint32_t)i);
        size_t mlen = 0;
        uint8_t *m = manifest_of(ch, 3, 65536, &mlen);
        uint8_t fid[CHP_HASH_BYTES];
        REQUIRE_OK(chp_manifest_id(m, mlen, fid));
        CHECK_OK(put_chunk(s, &ch[1])); /* stored before, by someone else */

        struct chp_upload *u = calloc(1, sizeof(*u));
        memset(u->id, 0x11, CHP_UPLOAD_ID_BYTES);
        u->chunk_size = 65536;
        u->expires = 1000;
        u->file_expires = 5000;
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        open.u.upload_create.upload = u;
        open.u.upload_create.manifest = m;
        open.u.upload_create.manifest_len = mlen;
        CHECK_OK(chp_store_run(s, &open));
        CHECK(!open.u.upload_create.complete && !open.u.upload_create.resumed);
        CHECK(memcmp(open.u.upload_create.file_id, fid, CHP_HASH_BYTES) == 0);
        uint8_t have[3], pend[CHP_UPLOAD_ID_BYTES];
        CHECK_OK(chp_store_upload_chunks(s, u->id, have, NULL, 3));
        CHECK(have[0] == 0 && have[1] == 1 && have[2] == 0); /* deduplicated at open */
        CHECK_OK(chp_store_pending(s, fid, pend));
        CHECK(memcmp(pend, u->id, CHP_UPLOAD_ID_BYTES) == 0);
        uint8_t *back = NULL;
        size_t blen = 0;
        CHECK_OK(chp_store_upload_manifest(s, u->id, &back, &blen));
        CHECK(blen == mlen && back && memcmp(back, m, mlen) == 0);
        free(back);

        /* a second open of the same manifest (another connection, another id) resumes */
        memset(u->id, 0x22, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &open));
        CHECK(open.u.upload_create.resumed);
        memset(pend, 0x11, CHP_UPLOAD_ID_BYTES);
        CHECK(memcmp(open.u.upload_create.upload_id, pend, CHP_UPLOAD_ID_BYTES) == 0);

        /* commit too early: missing chunks */
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.has_upload = true;
        memcpy(c.u.commit.upload_id, pend, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(s, &c), CHP_EMISSING);
        for (uint32_t i = 0; i < 3; i += 2) {
                struct chp_store_req p = {.type = CHP_REQ_PUT};
                memcpy(p.u.put.addr, ch[i].addr, CHP_HASH_BYTES);
                p.u.put.data = ch[i].data;
                p.u.put.len = ch[i].len;
                p.u.put.has_upload = true;
                memcpy(p.u.put.upload_id, pend, CHP_UPLOAD_ID_BYTES);
                p.u.put.index = i;
                CHECK_OK(chp_store_run(s, &p));
        }
        CHECK_EQ(verify_problems(s), 0);
        CHECK_OK(chp_store_run(s, &c));
        CHECK(memcmp(c.u.commit.file_id, fid, CHP_HASH_BYTES) == 0);
        CHECK_EQ(chp_store_pending(s, fid, pend), -ENOENT);
        struct chp_file_info info;
        CHECK_OK(chp_store_file_get(s, fid, &back, &blen, &info));
        CHECK_EQ(info.expires, 5000);
        free(back);
        for (int i = 0; i < 3; i++)
                CHECK_EQ(refs(s, &ch[i]), 1);
        /* opening a stored file says so and creates nothing */
        memset(u->id, 0x33, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &open));
        CHECK(open.u.upload_create.complete);
        struct chp_upload *none = calloc(1, sizeof(*none));
        CHECK_EQ(chp_store_upload_get(s, u->id, none), -ENOENT);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(none);
        free(u);
        free(m);
        for (int i = 0; i < 3; i++)
                free(ch[i].data);
}

TEST(sequential_upload_tail_and_completion)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_upload *u = calloc(1, sizeof(*u));
        memset(u->id, 0x77, CHP_UPLOAD_ID_BYTES);
        u->chunk_size = 65536;
        u->declared_size = 65536 + 100;
        u->expires = 1000;
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        REQUIRE_OK(chp_store_run(s, &cr));
        uint32_t chunks = 9;
        size_t tail = 9;
        CHECK_OK(chp_store_upload_progress(s, u->id, &chunks, &tail));
        CHECK(chunks == 0 && tail == 0);
        /* two pieces of the first chunk arrive in two requests: kept as a tail */
        struct chunk whole = make_chunk(65536, 900), last = make_chunk(100, 901);
        struct chp_store_req t = {.type = CHP_REQ_TAIL_APPEND};
        memcpy(t.u.tail_append.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        t.u.tail_append.data = whole.data;
        t.u.tail_append.len = 1000;
        CHECK_OK(chp_store_run(s, &t));
        t.u.tail_append.data = whole.data + 1000;
        t.u.tail_append.len = 2000;
        CHECK_OK(chp_store_run(s, &t));
        CHECK_OK(chp_store_upload_progress(s, u->id, &chunks, &tail));
        CHECK(chunks == 0 && tail == 3000);
        uint8_t buf[65536];
        CHECK_EQ(chp_store_upload_tail(s, u->id, buf, sizeof(buf)), 3000);
        CHECK(memcmp(buf, whole.data, 3000) == 0);
        CHECK_EQ(chp_store_upload_tail(s, u->id, buf, 10), -ENOBUFS);
        CHECK_EQ(verify_problems(s), 0);
        /* the chunk completes: it absorbs the tail, which goes */
        struct chp_store_req p = {.type = CHP_REQ_PUT};
        memcpy(p.u.put.addr, whole.addr, CHP_HASH_BYTES);
        p.u.put.data = whole.data;
        p.u.put.len = whole.len;
        p.u.put.has_upload = true;
        memcpy(p.u.put.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        p.u.put.clear_tail = true;
        CHECK_OK(chp_store_run(s, &p));
        CHECK_OK(chp_store_upload_progress(s, u->id, &chunks, &tail));
        CHECK(chunks == 1 && tail == 0);
        /* the last, short chunk; then the file, keeping the upload record as complete */
        memcpy(p.u.put.addr, last.addr, CHP_HASH_BYTES);
        p.u.put.data = last.data;
        p.u.put.len = last.len;
        p.u.put.index = 1;
        CHECK_OK(chp_store_run(s, &p));
        struct chunk both[2] = {whole, last};
        size_t mlen = 0;
        uint8_t *m = manifest_of(both, 2, 65536, &mlen);
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.manifest = m;
        c.u.commit.manifest_len = mlen;
        c.u.commit.has_upload = true;
        c.u.commit.keep_upload = true;
        memcpy(c.u.commit.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &c));
        struct chp_upload *back = calloc(1, sizeof(*back));
        CHECK_OK(chp_store_upload_get(s, u->id, back));
        CHECK(back->complete && memcmp(back->file_id, c.u.commit.file_id, CHP_HASH_BYTES) == 0);
        CHECK_EQ(refs(s, &whole), 1); /* the file's reference; the upload's are gone */
        CHECK_EQ(verify_problems(s), 0);
        /* a tail of an unknown upload is refused */
        memset(t.u.tail_append.upload_id, 0x78, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(s, &t), -ENOENT);
        /* the completed record expires like any upload, and the file stays */
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 2000, &gs));
        CHECK_EQ(gs.uploads_expired, 1);
        CHECK(reads_back(s, &whole) && reads_back(s, &last));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(back);
        free(m);
        free(u);
        free(whole.data);
        free(last.data);
}

/* A commit that keeps the upload's record with keep_expires: the record lives until then (the
 * file's expiry: XMPP uploads find their file by it), no longer its own expiry; 0 keeps it. */
TEST(kept_upload_takes_the_commits_expiry)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk ch = make_chunk(1000, 950);
        size_t mlen = 0;
        uint8_t *m = manifest_of(&ch, 1, 65536, &mlen);
        struct chp_upload *u = calloc(1, sizeof(*u));
        struct chp_upload *back = calloc(1, sizeof(*back));
        for (int keep = 0; keep < 3; keep++) {
                /* keep 0: unchanged (1000); 1: 5000; 2: never (UINT64_MAX) */
                memset(u->id, 0x60 + keep, CHP_UPLOAD_ID_BYTES);
                u->chunk_size = 65536;
                u->declared_size = ch.len;
                u->expires = 1000;
                struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
                cr.u.upload_create.upload = u;
                REQUIRE_OK(chp_store_run(s, &cr));
                struct chp_store_req p = {.type = CHP_REQ_PUT};
                memcpy(p.u.put.addr, ch.addr, CHP_HASH_BYTES);
                p.u.put.data = ch.data;
                p.u.put.len = ch.len;
                p.u.put.has_upload = true;
                memcpy(p.u.put.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
                CHECK_OK(chp_store_run(s, &p));
                struct chp_store_req c = {.type = CHP_REQ_COMMIT};
                c.u.commit.manifest = m;
                c.u.commit.manifest_len = mlen;
                c.u.commit.expires = 5000;
                c.u.commit.has_upload = true;
                c.u.commit.keep_upload = true;
                c.u.commit.keep_expires = keep == 0 ? 0 : keep == 1 ? 5000 : UINT64_MAX;
                memcpy(c.u.commit.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
                CHECK_OK(chp_store_run(s, &c));
                CHECK_OK(chp_store_upload_get(s, u->id, back));
                CHECK(back->complete);
                CHECK_EQ(back->expires, keep == 0 ? 1000u : keep == 1 ? 5000u : 0u);
        }
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 2000, &gs)); /* only the record that kept its expiry goes */
        CHECK_EQ(gs.uploads_expired, 1);
        memset(u->id, 0x60, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_upload_get(s, u->id, back), -ENOENT);
        memset(u->id, 0x61, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_upload_get(s, u->id, back));
        CHECK_OK(chp_store_gc(s, 6000, &gs)); /* the file and its record go together */
        CHECK_EQ(gs.uploads_expired, 1);
        CHECK_EQ(gs.files_expired, 1);
        CHECK_EQ(chp_store_upload_get(s, u->id, back), -ENOENT);
        memset(u->id, 0x62, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_upload_get(s, u->id, back)); /* never */
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(back);
        free(u);
        free(m);
        free(ch.data);
}

TEST(compaction_and_reopen)
{
        fresh_dir();
        const uint64_t segsz = CHP_CHUNK_MAX; /* smallest allowed: 8 MiB segments */
        struct chp_store *s = open_store(16 * 1024, segsz);
        REQUIRE(s);
        enum { N = 40 };
        const uint32_t cs = 1024 * 1024;
        struct chunk ch[N];
        uint8_t ids[N][CHP_HASH_BYTES];
        for (int i = 0; i < N; i++) {
                ch[i] = make_chunk(cs, 1000 + (uint32_t)i);
                CHECK_OK(put_chunk(s, &ch[i]));
                size_t mlen = 0;
                uint8_t *m = manifest_of(&ch[i], 1, cs, &mlen);
                /* three files in four expire early: every segment ends up a quarter live */
                CHECK_OK(chp_store_commit(s, m, mlen, i % 4 ? 100 : 0, ids[i]));
                free(m);
        }
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK(st.segments >= 5);
        uint64_t before = st.segment_bytes;
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 200, &gs));
        CHECK_EQ(gs.files_expired, N - N / 4);
        CHECK(gs.segments_compacted >= 3);
        CHECK(gs.bytes_moved > 0);
        CHECK_OK(chp_store_stats(s, &st));
        CHECK(st.segment_bytes < before);
        CHECK_EQ(st.live_bytes, (uint64_t)N / 4 * cs);
        for (int i = 0; i < N; i++)
                CHECK(reads_back(s, &ch[i]) == (i % 4 == 0));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);

        /* everything is where it was after a reopen */
        s = open_store(16 * 1024, segsz);
        REQUIRE(s);
        for (int i = 0; i < N; i += 4)
                CHECK(reads_back(s, &ch[i]));
        CHECK_EQ(verify_problems(s), 0);
        /* dropping the rest kills whole segments, which are deleted */
        for (int i = 0; i < N; i += 4) {
                struct chp_store_req del = {.type = CHP_REQ_FILE_DELETE};
                memcpy(del.u.file_delete.file_id, ids[i], CHP_HASH_BYTES);
                CHECK_OK(chp_store_run(s, &del));
        }
        CHECK_OK(chp_store_gc(s, 300, &gs));
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.live_bytes, 0);
        CHECK(st.segments <= 1); /* only the open segment may remain */
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < N; i++)
                free(ch[i].data);
}

/* Files whose chunks are in a one-segment store, committed with expiry exp(i). */
static void put_files(struct chp_store *s, struct chunk *ch, uint8_t (*ids)[CHP_HASH_BYTES], int n,
                      uint32_t seed, uint64_t (*exp)(int))
{
        for (int i = 0; i < n; i++) {
                ch[i] = make_chunk(1024 * 1024, seed + (uint32_t)i);
                CHECK_OK(put_chunk(s, &ch[i]));
                size_t mlen = 0;
                uint8_t *m = manifest_of(&ch[i], 1, 1024 * 1024, &mlen);
                CHECK_OK(chp_store_commit(s, m, mlen, exp(i), ids[i]));
                free(m);
        }
}

static uint64_t all_at_100(int i)
{
        (void)i;
        return 100;
}

/* With the default segment size a small relay never fills its open segment: once everything in
 * it expired, GC must still give the bytes back (it seals and drops the segment). */
TEST(dead_open_segment_is_dropped)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)256 << 20);
        REQUIRE(s);
        struct chunk ch[4];
        uint8_t ids[4][CHP_HASH_BYTES];
        put_files(s, ch, ids, 4, 7000, all_at_100);
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 50, &gs)); /* nothing dead yet: the segment stays open */
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segment_bytes, 4 << 20);
        CHECK_OK(chp_store_gc(s, 200, &gs));
        CHECK_EQ(gs.files_expired, 4);
        CHECK_EQ(gs.segments_deleted, 1);
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segments, 0);
        CHECK_EQ(st.segment_bytes, 0);
        CHECK_EQ(segment_file_bytes(), 0);
        /* the next put starts a new segment */
        struct chunk c = make_chunk(1024 * 1024, 7100);
        CHECK_OK(put_chunk(s, &c));
        CHECK(reads_back(s, &c));
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segments, 1);
        CHECK_EQ(segment_file_bytes(), 1 << 20);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_store(16 * 1024, (uint64_t)256 << 20);
        REQUIRE(s);
        CHECK(reads_back(s, &c));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < 4; i++)
                free(ch[i].data);
        free(c.data);
}

static uint64_t quarter_kept(int i)
{
        return i % 4 == 0 ? 0 : (i == 1 || i == 2 || i == 3 || i == 5) ? 100 : 300;
}

/* A sparse open segment is sealed and compacted once its dead bytes reach half a segment; before
 * that it is left alone (sealing it at every GC would churn). */
TEST(sparse_open_segment_is_compacted)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)16 << 20);
        REQUIRE(s);
        enum { N = 12 };
        struct chunk ch[N];
        uint8_t ids[N][CHP_HASH_BYTES];
        put_files(s, ch, ids, N, 7200, quarter_kept);
        struct chp_gc_stats gs;
        struct chp_store_stats st;
        CHECK_OK(chp_store_gc(s, 200, &gs)); /* 4 MiB of 12 dead: under half a segment */
        CHECK_EQ(gs.files_expired, 4);
        CHECK_EQ(gs.segments_sealed, 0);
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segment_bytes, 12 << 20);
        CHECK_OK(chp_store_gc(s, 400, &gs)); /* 9 MiB dead, 3 live */
        CHECK_EQ(gs.files_expired, 5);
        CHECK_EQ(gs.segments_sealed, 1);
        CHECK_EQ(gs.segments_compacted, 1);
        CHECK_EQ(gs.bytes_moved, 3 << 20);
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segment_bytes, 3 << 20);
        CHECK_EQ(st.live_bytes, 3 << 20);
        CHECK_EQ(segment_file_bytes(), 3 << 20);
        for (int i = 0; i < N; i++)
                CHECK(reads_back(s, &ch[i]) == (i % 4 == 0));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_store(16 * 1024, (uint64_t)16 << 20);
        REQUIRE(s);
        for (int i = 0; i < N; i += 4)
                CHECK(reads_back(s, &ch[i]));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < N; i++)
                free(ch[i].data);
}

/* Below the reserve only requests that store new bytes are refused (chunks, kept tails, upload
 * records with their manifests): deletes, commits of stored chunks and GC, which free space or
 * need none to speak of, go on. A reserve larger than any disk makes every disk look full. */
TEST(full_disk_refuses_new_bytes_only)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_upload *u = calloc(1, sizeof(*u));
        memset(u->id, 0x31, CHP_UPLOAD_ID_BYTES);
        u->chunk_size = 65536;
        u->declared_size = CHP_UPLOAD_SIZE_UNKNOWN;
        u->expires = 1000;
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        REQUIRE_OK(chp_store_run(s, &cr));
        struct chunk a = make_chunk(200000, 9700), b = make_chunk(200000, 9701),
                     small = make_chunk(1000, 9702);
        CHECK_OK(put_chunk(s, &a));
        size_t mlen = 0;
        uint8_t *m = manifest_of(&a, 1, 256 * 1024, &mlen);
        uint8_t id[CHP_HASH_BYTES], id2[CHP_HASH_BYTES];
        CHECK_OK(chp_store_commit(s, m, mlen, 100, id));
        chp_store_close(s);

        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.segment_size = (uint64_t)64 << 20;
        o.map_size = (uint64_t)256 << 20;
        o.space_reserve = (uint64_t)1 << 62;
        REQUIRE_OK(chp_store_open(&o, &s));
        CHECK_EQ(put_chunk(s, &b), -ENOSPC);
        CHECK_EQ(put_chunk(s, &small), -ENOSPC);
        struct chp_store_req t = {.type = CHP_REQ_TAIL_APPEND};
        memcpy(t.u.tail_append.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        t.u.tail_append.data = b.data;
        t.u.tail_append.len = 4000;
        CHECK_EQ(chp_store_run(s, &t), -ENOSPC);
        memset(u->id, 0x32, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(s, &cr), -ENOSPC);
        CHECK_OK(put_chunk(s, &a)); /* stored already: nothing new */
        CHECK(reads_back(s, &a));
        CHECK_OK(chp_store_commit(s, m, mlen, 0, id2)); /* extends the file's life */
        CHECK_OK(delete_file(s, id));
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 2000, &gs));
        CHECK_EQ(gs.uploads_expired, 1);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_OK(put_chunk(s, &b));
        CHECK(reads_back(s, &b));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(m);
        free(u);
        free(a.data);
        free(b.data);
        free(small.data);
}

TEST(torn_tail_and_stray_segments)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk a = make_chunk(100000, 5);
        CHECK_OK(put_chunk(s, &a));
        chp_store_close(s);
        /* a crash mid-append leaves bytes the index never saw; another leaves a whole file */
        char path[400];
        snprintf(path, sizeof(path), "%s/segments/00000001.seg", dir);
        int fd = open(path, O_WRONLY | O_APPEND);
        REQUIRE(fd >= 0);
        CHECK_EQ(write(fd, "torn tail garbage", 17), 17);
        close(fd);
        snprintf(path, sizeof(path), "%s/segments/00000009.seg", dir);
        fd = open(path, O_WRONLY | O_CREAT, 0600);
        REQUIRE(fd >= 0);
        CHECK_EQ(write(fd, "x", 1), 1);
        close(fd);
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct stat sb;
        snprintf(path, sizeof(path), "%s/segments/00000001.seg", dir);
        CHECK_OK(stat(path, &sb));
        CHECK_EQ(sb.st_size, 100000);
        snprintf(path, sizeof(path), "%s/segments/00000009.seg", dir);
        CHECK_EQ(stat(path, &sb), -1);
        CHECK(reads_back(s, &a));
        struct chunk b = make_chunk(100000, 6);
        CHECK_OK(put_chunk(s, &b));
        CHECK(reads_back(s, &b));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(a.data);
        free(b.data);
}

TEST(second_open_is_refused)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        struct chp_store *t = NULL;
        CHECK_EQ(chp_store_open(&o, &t), CHP_ELOCKED);
        CHECK(t == NULL);
        chp_store_close(s);
        chp_store_close(NULL);
}

TEST(full_map_is_a_clean_error)
{
        fresh_dir();
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.inline_max = CHP_STORE_INLINE_ALL;
        o.map_size = 4 << 20; /* 4 MiB of index */
        struct chp_store *s = NULL;
        REQUIRE_OK(chp_store_open(&o, &s));
        int stored = 0, rc = 0;
        struct chunk keep[64];
        for (int i = 0; i < 64; i++) {
                keep[i] = make_chunk(256 * 1024, 5000 + (uint32_t)i);
                rc = put_chunk(s, &keep[i]);
                if (rc)
                        break;
                stored++;
        }
        CHECK_EQ(rc, CHP_EMAPFULL);
        CHECK(stored > 0);
        /* what was acknowledged is intact, and the store still works for reads */
        for (int i = 0; i < stored; i++)
                CHECK(reads_back(s, &keep[i]));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        REQUIRE_OK(chp_store_open(&o, &s));
        for (int i = 0; i < stored; i++)
                CHECK(reads_back(s, &keep[i]));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i <= stored && i < 64; i++)
                free(keep[i].data);
}

/* Flips one bit of the first segment file at offset, as bit rot would. */
static bool flip_segment_byte(off_t offset)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/segments/00000001.seg", dir);
        int fd = open(path, O_RDWR);
        if (fd < 0)
                return false;
        uint8_t byte;
        bool ok = pread(fd, &byte, 1, offset) == 1;
        byte ^= 0x40;
        ok = ok && pwrite(fd, &byte, 1, offset) == 1;
        close(fd);
        return ok;
}

TEST(verify_finds_bit_rot)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk a = make_chunk(100000, 77), b = make_chunk(100000, 78);
        CHECK_OK(put_chunk(s, &a));
        CHECK_OK(put_chunk(s, &b));
        chp_store_close(s);
        REQUIRE(flip_segment_byte(150000));
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_EQ(verify_problems(s), 1);
        CHECK(reads_back(s, &a));
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        CHECK_EQ(chp_store_read(s, b.addr, buf, CHP_CHUNK_MAX), CHP_ECORRUPT);
        free(buf);
        chp_store_close(s);
        free(a.data);
        free(b.data);
}

/* ---- asynchronous reads (chp_store_read_async) ------------------------------------------
 * The local store reads at once; CHAPAR_STORE_DEFER_READS (this build only) makes it read as a
 * remote backend would: later, once, on a thread of the store's, with the XXH3 checked. */

/* defer: the value of CHAPAR_STORE_DEFER_READS (ms of delay) at open; NULL: unset */
static struct chp_store *open_deferring(const char *defer)
{
        if (defer)
                setenv("CHAPAR_STORE_DEFER_READS", defer, 1);
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        unsetenv("CHAPAR_STORE_DEFER_READS");
        return s;
}

/* One read's completion, as a caller would see it. */
struct waiter {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int calls;
        ssize_t result;
        pthread_t thread; /* that ran done */
};

static void waiter_init(struct waiter *w)
{
        memset(w, 0, sizeof(*w));
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
}

static void waiter_done(void *ctx, ssize_t result)
{
        struct waiter *w = ctx;
        pthread_mutex_lock(&w->lock);
        w->calls++;
        w->result = result;
        w->thread = pthread_self();
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

/* Waits for the first call of done; returns its result. */
static ssize_t waiter_wait(struct waiter *w)
{
        pthread_mutex_lock(&w->lock);
        while (w->calls == 0)
                pthread_cond_wait(&w->cond, &w->lock);
        ssize_t r = w->result;
        pthread_mutex_unlock(&w->lock);
        return r;
}

static int calls_of(struct waiter *w)
{
        pthread_mutex_lock(&w->lock);
        int n = w->calls;
        pthread_mutex_unlock(&w->lock);
        return n;
}

static void waiter_free(struct waiter *w)
{
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
}

TEST(local_reads_at_once)
{
        fresh_dir();
        struct chp_store *s = open_deferring(NULL);
        REQUIRE(s);
        struct chunk small = make_chunk(1000, 1), big = make_chunk(200000, 2);
        CHECK_OK(chp_store_put(s, small.addr, small.data, small.len));
        CHECK_OK(chp_store_put(s, big.addr, big.data, big.len));
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        struct waiter w;
        waiter_init(&w);
        /* inline and segment bytes are at hand: the length now, done never called */
        CHECK_EQ(chp_store_read_async(s, small.addr, buf, CHP_CHUNK_MAX, waiter_done, &w),
                 small.len);
        CHECK(memcmp(buf, small.data, small.len) == 0);
        CHECK_EQ(chp_store_read_async(s, big.addr, buf, CHP_CHUNK_MAX, waiter_done, &w), big.len);
        CHECK(memcmp(buf, big.data, big.len) == 0);
        struct chunk none = make_chunk(5000, 3);
        CHECK_EQ(chp_store_read_async(s, none.addr, buf, CHP_CHUNK_MAX, waiter_done, &w), -ENOENT);
        CHECK_EQ(chp_store_read_async(s, big.addr, buf, big.len - 1, waiter_done, &w), -ENOBUFS);
        chp_store_close(s);
        CHECK_EQ(calls_of(&w), 0);
        waiter_free(&w);
        free(buf);
        free(small.data);
        free(big.data);
        free(none.data);
}

TEST(deferred_reads_complete_later_once)
{
        fresh_dir();
        struct chp_store *s = open_deferring("20");
        REQUIRE(s);
        struct chunk small = make_chunk(1000, 4), big = make_chunk(300000, 5);
        CHECK_OK(chp_store_put(s, small.addr, small.data, small.len));
        CHECK_OK(chp_store_put(s, big.addr, big.data, big.len));
        /* a remote backend has no file to splice from: faces take the read path */
        struct chp_chunk_loc loc;
        REQUIRE(chp_store_locate(s, big.addr, &loc) == 0);
        CHECK_EQ(loc.fd, -1);
        CHECK(!loc.is_inline);
        CHECK_EQ(loc.len, big.len);
        chp_store_loc_release(s, &loc);
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        struct waiter w;
        waiter_init(&w);
        /* inline bytes are still at hand */
        CHECK_EQ(chp_store_read_async(s, small.addr, buf, CHP_CHUNK_MAX, waiter_done, &w),
                 small.len);
        CHECK(memcmp(buf, small.data, small.len) == 0);
        CHECK_EQ(calls_of(&w), 0);
        /* what is known to be missing, or too big, is said at once */
        struct chunk none = make_chunk(50000, 6);
        CHECK_EQ(chp_store_read_async(s, none.addr, buf, CHP_CHUNK_MAX, waiter_done, &w), -ENOENT);
        CHECK_EQ(chp_store_read_async(s, big.addr, buf, 1000, waiter_done, &w), -ENOBUFS);
        CHECK_EQ(calls_of(&w), 0);
        memset(buf, 0, CHP_CHUNK_MAX);
        CHECK_EQ(chp_store_read_async(s, big.addr, buf, CHP_CHUNK_MAX, waiter_done, &w),
                 -EINPROGRESS);
        CHECK_EQ(waiter_wait(&w), big.len);
        CHECK(memcmp(buf, big.data, big.len) == 0);
        CHECK(!pthread_equal(w.thread, pthread_self()));
        chp_store_close(s); /* whatever the store still had would complete by now */
        CHECK_EQ(calls_of(&w), 1);
        waiter_free(&w);
        free(buf);
        free(small.data);
        free(big.data);
        free(none.data);
}

TEST(deferred_read_checks_xxh3)
{
        fresh_dir();
        struct chp_store *s = open_deferring(NULL);
        REQUIRE(s);
        struct chunk a = make_chunk(100000, 7), b = make_chunk(100000, 8);
        CHECK_OK(chp_store_put(s, a.addr, a.data, a.len));
        CHECK_OK(chp_store_put(s, b.addr, b.data, b.len));
        chp_store_close(s);
        REQUIRE(flip_segment_byte(150000)); /* inside b */
        s = open_deferring("0");
        REQUIRE(s);
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        struct waiter wa, wb;
        waiter_init(&wa);
        waiter_init(&wb);
        CHECK_EQ(chp_store_read_async(s, a.addr, buf, CHP_CHUNK_MAX, waiter_done, &wa),
                 -EINPROGRESS);
        CHECK_EQ(waiter_wait(&wa), a.len);
        CHECK_EQ(chp_store_read_async(s, b.addr, buf, CHP_CHUNK_MAX, waiter_done, &wb),
                 -EINPROGRESS);
        CHECK_EQ(waiter_wait(&wb), CHP_ECORRUPT);
        chp_store_close(s);
        CHECK_EQ(calls_of(&wa), 1);
        CHECK_EQ(calls_of(&wb), 1);
        waiter_free(&wa);
        waiter_free(&wb);
        free(buf);
        free(a.data);
        free(b.data);
}

/* Reads still queued when the store closes complete before chp_store_close returns, each
 * exactly once, so that a relay's loops can be freed after it. */
TEST(close_completes_outstanding_reads)
{
        fresh_dir();
        struct chp_store *s = open_deferring("50");
        REQUIRE(s);
        struct chunk c = make_chunk(70000, 9);
        CHECK_OK(chp_store_put(s, c.addr, c.data, c.len));
        enum { N = 8 };
        uint8_t *bufs[N];
        struct waiter w[N];
        for (int i = 0; i < N; i++) {
                waiter_init(&w[i]);
                bufs[i] = malloc(c.len);
                CHECK_EQ(chp_store_read_async(s, c.addr, bufs[i], c.len, waiter_done, &w[i]),
                         -EINPROGRESS);
        }
        chp_store_close(s);
        for (int i = 0; i < N; i++) {
                CHECK_EQ(calls_of(&w[i]), 1);
                CHECK(w[i].result == (ssize_t)c.len || w[i].result == CHP_ECLOSED);
                if (w[i].result == (ssize_t)c.len)
                        CHECK(memcmp(bufs[i], c.data, c.len) == 0);
                waiter_free(&w[i]);
                free(bufs[i]);
        }
        free(c.data);
}

/* ---- asynchronous record lookups (chp_store_lookup) ----------------------------------------
 * Each kind answers what its synchronous function answers: at once from the local store, and
 * later, once, from a thread of the store's when CHAPAR_STORE_DEFER_READS is set. */

/* One lookup's completion, as a caller would see it. */
struct lwait {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int calls;
        pthread_t thread; /* that ran done */
};

static void lookup_arrived(struct chp_store_lookup *q)
{
        struct lwait *w = q->ctx;
        pthread_mutex_lock(&w->lock);
        w->calls++;
        w->thread = pthread_self();
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

/* Asks q and returns its status once answered: now (deferred false: done never called) or
 * later (deferred: -EINPROGRESS, then done exactly once, on another thread). */
static int ask(struct chp_store *s, struct chp_store_lookup *q, bool deferred)
{
        struct lwait w = {.calls = 0};
        pthread_mutex_init(&w.lock, NULL);
        pthread_cond_init(&w.cond, NULL);
        q->done = lookup_arrived;
        q->ctx = &w;
        q->status = 12345; /* overwritten by every answer */
        int rc = chp_store_lookup(s, q);
        if (deferred && rc != -EINPROGRESS) {
                CHECK_EQ(rc, -EINPROGRESS); /* answered now: fails here, without waiting */
        } else if (deferred) {
                pthread_mutex_lock(&w.lock);
                while (w.calls == 0)
                        pthread_cond_wait(&w.cond, &w.lock);
                pthread_mutex_unlock(&w.lock);
                CHECK(!pthread_equal(w.thread, pthread_self()));
                rc = q->status;
        } else {
                CHECK_EQ(rc, q->status);
        }
        pthread_mutex_lock(&w.lock);
        CHECK_EQ(w.calls, deferred ? 1 : 0);
        pthread_mutex_unlock(&w.lock);
        pthread_cond_destroy(&w.cond);
        pthread_mutex_destroy(&w.lock);
        return rc;
}

/* A store holding one of everything a lookup reads: a file with tus metadata (committed from a
 * tus upload), a native upload with one of its three chunks (its file pending), a tus upload
 * with 3000 tail bytes. */
struct lookup_world {
        struct chunk ch[3], whole;
        uint8_t *man; /* the native upload's manifest */
        size_t man_len;
        uint8_t pending_fid[CHP_HASH_BYTES], file_id[CHP_HASH_BYTES];
        uint8_t *file_man;
        size_t file_man_len;
        struct chp_upload *native, *tus;
};

static const char world_meta[] = "filename aGVsbG8udHh0,filetype dGV4dC9wbGFpbg==";

static void world_build(struct chp_store *s, struct lookup_world *w)
{
        memset(w, 0, sizeof(*w));
        for (int i = 0; i < 3; i++)
                w->ch[i] = make_chunk(i == 2 ? 1000 : 65536, 1700 + (uint32_t)i);
        w->whole = make_chunk(65536, 1710);
        w->man = manifest_of(w->ch, 3, 65536, &w->man_len);
        REQUIRE_OK(chp_manifest_id(w->man, w->man_len, w->pending_fid));
        REQUIRE_OK(put_chunk(s, &w->ch[1]));
        w->native = calloc(1, sizeof(*w->native));
        memset(w->native->id, 0x41, CHP_UPLOAD_ID_BYTES);
        w->native->chunk_size = 65536;
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        open.u.upload_create.upload = w->native;
        open.u.upload_create.manifest = w->man;
        open.u.upload_create.manifest_len = w->man_len;
        REQUIRE_OK(chp_store_run(s, &open));

        /* a tus upload of one chunk, with metadata, committed as a file */
        struct chp_upload *t = calloc(1, sizeof(*t));
        memset(t->id, 0x42, CHP_UPLOAD_ID_BYTES);
        t->chunk_size = 65536;
        t->declared_size = 65536;
        t->meta_len = (uint32_t)strlen(world_meta);
        memcpy(t->meta, world_meta, t->meta_len);
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = t;
        REQUIRE_OK(chp_store_run(s, &cr));
        struct chp_store_req p = {.type = CHP_REQ_PUT};
        memcpy(p.u.put.addr, w->whole.addr, CHP_HASH_BYTES);
        p.u.put.data = w->whole.data;
        p.u.put.len = w->whole.len;
        p.u.put.has_upload = true;
        memcpy(p.u.put.upload_id, t->id, CHP_UPLOAD_ID_BYTES);
        REQUIRE_OK(chp_store_run(s, &p));
        w->file_man = manifest_of(&w->whole, 1, 65536, &w->file_man_len);
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.manifest = w->file_man;
        c.u.commit.manifest_len = w->file_man_len;
        c.u.commit.has_upload = true;
        c.u.commit.keep_upload = true; /* as tus does: the metadata stays with the file */
        c.u.commit.expires = 7000;
        memcpy(c.u.commit.upload_id, t->id, CHP_UPLOAD_ID_BYTES);
        REQUIRE_OK(chp_store_run(s, &c));
        memcpy(w->file_id, c.u.commit.file_id, CHP_HASH_BYTES);

        /* a tus upload under way: 3000 bytes kept as its tail */
        memset(t->id, 0x43, CHP_UPLOAD_ID_BYTES);
        t->declared_size = 200000;
        REQUIRE_OK(chp_store_run(s, &cr));
        struct chp_store_req ta = {.type = CHP_REQ_TAIL_APPEND};
        memcpy(ta.u.tail_append.upload_id, t->id, CHP_UPLOAD_ID_BYTES);
        ta.u.tail_append.data = w->ch[0].data;
        ta.u.tail_append.len = 3000;
        REQUIRE_OK(chp_store_run(s, &ta));
        w->tus = t;
}

static void world_free(struct lookup_world *w)
{
        for (int i = 0; i < 3; i++)
                free(w->ch[i].data);
        free(w->whole.data);
        free(w->man);
        free(w->file_man);
        free(w->native);
        free(w->tus);
}

/* Every kind of lookup on w, answered now or deferred; each answer as the synchronous one. */
static void lookups_answer(struct chp_store *s, struct lookup_world *w, bool deferred)
{
        struct chp_store_lookup q;
        uint8_t unknown[CHP_HASH_BYTES];
        memset(unknown, 0x99, sizeof(unknown));

        /* FILE: the manifest and info; existence only; unknown */
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE, .want_manifest = true};
        memcpy(q.id, w->file_id, CHP_HASH_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.manifest_len == w->file_man_len && q.manifest &&
              memcmp(q.manifest, w->file_man, w->file_man_len) == 0);
        CHECK_EQ(q.info.expires, 7000);
        CHECK_EQ(q.info.size, 65536);
        uint8_t *taken = q.manifest; /* a caller may take the manifest */
        q.manifest = NULL;
        chp_store_lookup_clear(&q);
        free(taken);
        q.want_manifest = false;
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.manifest == NULL && q.info.size == 65536);
        memcpy(q.id, unknown, CHP_HASH_BYTES);
        CHECK_EQ(ask(s, &q, deferred), -ENOENT);

        /* FILE_META: the tus metadata the file kept, the request's; none for a file without */
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE_META};
        memcpy(q.id, w->file_id, CHP_HASH_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.len == strlen(world_meta) && q.meta && memcmp(q.meta, world_meta, q.len) == 0);
        chp_store_lookup_clear(&q);
        CHECK(q.meta == NULL && q.len == 0);
        memcpy(q.id, unknown, CHP_HASH_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.len == 0 && q.meta == NULL);

        /* UPLOAD: the record */
        struct chp_upload *up = calloc(1, sizeof(*up));
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD, .upload = up};
        memcpy(q.id, w->tus->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(memcmp(up->id, w->tus->id, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK(up->declared_size == 200000 && up->meta_len == strlen(world_meta));
        memcpy(q.id, unknown, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(ask(s, &q, deferred), -ENOENT);
        free(up);

        /* UPLOAD_PROGRESS: chunks and tail length; with a buffer, the tail bytes */
        uint8_t tail[65536];
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_PROGRESS};
        memcpy(q.id, w->tus->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.chunks == 0 && q.len == 3000);
        q.buf = tail;
        q.cap = sizeof(tail);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.len == 3000 && memcmp(tail, w->ch[0].data, 3000) == 0);
        q.cap = 10;
        CHECK_EQ(ask(s, &q, deferred), -ENOBUFS);
        memcpy(q.id, unknown, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(ask(s, &q, deferred), -ENOENT);

        /* UPLOAD_CHUNKS: which of the native upload's chunks it has, and their addresses */
        uint8_t have[3], addrs[3 * CHP_HASH_BYTES];
        memset(have, 7, sizeof(have));
        q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_UPLOAD_CHUNKS, .n = 3, .present = have, .chunk_addrs = addrs};
        memcpy(q.id, w->native->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(have[0] == 0 && have[1] == 1 && have[2] == 0);
        CHECK(memcmp(addrs + CHP_HASH_BYTES, w->ch[1].addr, CHP_HASH_BYTES) == 0);
        memcpy(q.id, unknown, CHP_UPLOAD_ID_BYTES);
        CHECK(ask(s, &q, deferred) < 0);

        /* UPLOAD_MANIFEST: a copy, the request's until cleared */
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_MANIFEST};
        memcpy(q.id, w->native->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(q.manifest_len == w->man_len && q.manifest &&
              memcmp(q.manifest, w->man, w->man_len) == 0);
        chp_store_lookup_clear(&q);
        CHECK(q.manifest == NULL);
        memcpy(q.id, w->tus->id, CHP_UPLOAD_ID_BYTES); /* a tus upload has none */
        CHECK_EQ(ask(s, &q, deferred), -ENOENT);
        CHECK(q.manifest == NULL);

        /* PENDING: the upload writing a file */
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_PENDING};
        memcpy(q.id, w->pending_fid, CHP_HASH_BYTES);
        CHECK_OK(ask(s, &q, deferred));
        CHECK(memcmp(q.upload_id, w->native->id, CHP_UPLOAD_ID_BYTES) == 0);
        memcpy(q.id, w->file_id, CHP_HASH_BYTES); /* stored, not pending */
        CHECK_EQ(ask(s, &q, deferred), -ENOENT);

        /* HAS: which of n addresses are stored */
        uint8_t asked[3 * CHP_HASH_BYTES], present[3];
        memcpy(asked, w->ch[0].addr, CHP_HASH_BYTES);
        memcpy(asked + CHP_HASH_BYTES, w->ch[1].addr, CHP_HASH_BYTES);
        memcpy(asked + 2 * CHP_HASH_BYTES, w->whole.addr, CHP_HASH_BYTES);
        memset(present, 7, sizeof(present));
        q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_HAS, .addrs = asked, .n = 3, .present = present};
        CHECK_OK(ask(s, &q, deferred));
        CHECK(present[0] == 0 && present[1] == 1 && present[2] == 1);

        /* a kind the store does not know, or a request without its buffer */
        q = (struct chp_store_lookup){.kind = (enum chp_store_lookup_kind)99};
        CHECK_EQ(chp_store_lookup(s, &q), -EINVAL);
        q = (struct chp_store_lookup){.kind = CHP_LOOKUP_HAS, .n = 1, .addrs = asked};
        CHECK_EQ(ask(s, &q, deferred), -EINVAL);
}

TEST(lookups_local_answer_now)
{
        fresh_dir();
        struct chp_store *s = open_deferring(NULL);
        REQUIRE(s);
        struct lookup_world w;
        world_build(s, &w);
        lookups_answer(s, &w, false);
        chp_store_close(s);
        world_free(&w);
}

TEST(lookups_deferred_answer_later_once)
{
        fresh_dir();
        struct chp_store *s = open_deferring("5");
        REQUIRE(s);
        struct lookup_world w;
        world_build(s, &w);
        lookups_answer(s, &w, true);
        chp_store_close(s);
        world_free(&w);
}

/* Lookups still queued when the store closes are answered before chp_store_close returns, each
 * exactly once (a relay frees its loops after the store). */
TEST(close_answers_outstanding_lookups)
{
        fresh_dir();
        struct chp_store *s = open_deferring("50");
        REQUIRE(s);
        struct lookup_world w;
        world_build(s, &w);
        enum { N = 8 };
        struct chp_store_lookup q[N];
        struct lwait lw = {.calls = 0};
        pthread_mutex_init(&lw.lock, NULL);
        pthread_cond_init(&lw.cond, NULL);
        for (int i = 0; i < N; i++) {
                q[i] = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE,
                                                 .want_manifest = true,
                                                 .done = lookup_arrived,
                                                 .ctx = &lw};
                memcpy(q[i].id, w.file_id, CHP_HASH_BYTES);
                CHECK_EQ(chp_store_lookup(s, &q[i]), -EINPROGRESS);
        }
        chp_store_close(s);
        CHECK_EQ(lw.calls, N);
        for (int i = 0; i < N; i++) {
                CHECK(q[i].status == 0 || q[i].status == CHP_ECLOSED);
                if (q[i].status == 0)
                        CHECK(q[i].manifest_len == w.file_man_len);
                chp_store_lookup_clear(&q[i]); /* nothing leaks (ASan) */
        }
        pthread_cond_destroy(&lw.cond);
        pthread_mutex_destroy(&lw.lock);
        world_free(&w);
}

/* ---- I/O faults (the store is built with CHAPAR_FAULT_INJECTION here) ---------------------- */

static const char *site_name[CHP_FAULT_SITES] = {"segment write", "segment sync", "segment create",
                                                 "index commit"};

/* One run of a fixed workload (puts of segment and inline chunks, files, a delete, a GC that
 * compacts, more puts) with one fault armed: the nth call at site fails with err. */
struct fault_run {
        struct chp_store *s;
        enum chp_store_fault_site site;
        uint64_t n; /* the call that fails (counted from open); 0: none */
        int err;
        int failures; /* operations that reported the fault */
        bool fired;   /* the armed call was reached */
        struct chunk ch[10];
        bool live[10]; /* acknowledged and still referenced or unreferenced-but-kept */
        uint8_t ids[5][CHP_HASH_BYTES];
        int file_state[5]; /* 0 never committed, 1 committed (acknowledged), 2 deleted/expired */
};

/* Runs op. If the failing call happened during op, op must fail with the injected error (unless
 * absorbed: GC keeps its expiry and drops when a compaction cannot write, and says nothing); else
 * it must succeed. A failed op must succeed when tried again (the fault is one call, and a store
 * that failed a write keeps working), and after a failure every chunk acknowledged and still
 * referenced must read back: reads go on. */
#define FAULTY_OP(fr, op, absorbed)                                                                \
        do {                                                                                       \
                uint64_t c0_ = chp_store_fault_calls((fr)->s, (fr)->site);                         \
                int rc_ = (op);                                                                    \
                uint64_t c1_ = chp_store_fault_calls((fr)->s, (fr)->site);                         \
                bool hit_ = (fr)->n > c0_ && (fr)->n <= c1_;                                       \
                CHECK_EQ(rc_, hit_ && !(absorbed) ? (fr)->err : 0);                                \
                if (rc_ != 0) {                                                                    \
                        (fr)->failures++;                                                          \
                        for (int j_ = 0; j_ < 10; j_++)                                            \
                                if ((fr)->live[j_])                                                \
                                        CHECK(reads_back((fr)->s, &(fr)->ch[j_]));                 \
                        rc_ = (op);                                                                \
                        CHECK_OK(rc_);                                                             \
                }                                                                                  \
        } while (0)
#define FAULTY(fr, op) FAULTY_OP(fr, op, false)

static void fault_put(struct fault_run *fr, int i)
{
        FAULTY(fr, put_chunk(fr->s, &fr->ch[i]));
        fr->live[i] = true;
}

static void fault_commit(struct fault_run *fr, int f, int a, int b, uint64_t expires)
{
        struct chunk pair[2] = {fr->ch[a], fr->ch[b]};
        size_t mlen = 0;
        uint8_t *m = manifest_of(pair, 2, 1024 * 1024, &mlen);
        FAULTY(fr, chp_store_commit(fr->s, m, mlen, expires, fr->ids[f]));
        fr->file_state[f] = 1;
        free(m);
}

static int delete_file(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES])
{
        struct chp_store_req del = {.type = CHP_REQ_FILE_DELETE};
        memcpy(del.u.file_delete.file_id, id, CHP_HASH_BYTES);
        return chp_store_run(s, &del);
}

static int gc_at(struct chp_store *s, uint64_t now)
{
        struct chp_gc_stats gs;
        return chp_store_gc(s, now, &gs);
}

static void fault_workload(struct fault_run *fr)
{
        for (int i = 0; i < 4; i++)
                fault_put(fr, i); /* 0, 1, 3: segment chunks; 2: inline */
        fault_commit(fr, 0, 0, 1, 100);
        fault_commit(fr, 1, 2, 3, 0);
        for (int i = 4; i < 8; i++)
                fault_put(fr, i);
        fault_commit(fr, 2, 4, 5, 100);
        fault_commit(fr, 3, 6, 7, 0);
        FAULTY(fr, delete_file(fr->s, fr->ids[1]));
        fr->file_state[1] = 2;
        fr->live[2] = fr->live[3] = false;
        /* files 0 and 2 expire: 4 MiB dead of 5 in the open segment, which is sealed and compacted
         * (chunks 6 and 7 are copied) */
        FAULTY_OP(fr, gc_at(fr->s, 200),
                  fr->site == CHP_FAULT_SEG_WRITE || fr->site == CHP_FAULT_SEG_CREATE);
        fr->file_state[0] = fr->file_state[2] = 2;
        fr->live[0] = fr->live[1] = fr->live[4] = fr->live[5] = false;
        for (int i = 8; i < 10; i++)
                fault_put(fr, i);
        fault_commit(fr, 4, 8, 9, 0);
}

/* What must hold after the workload, and again after a reopen with no fault armed. */
static void fault_check(struct fault_run *fr, struct chp_store *s)
{
        for (int i = 0; i < 10; i++)
                CHECK(reads_back(s, &fr->ch[i]) == fr->live[i]);
        for (int f = 0; f < 5; f++) {
                uint8_t *m = NULL;
                size_t len = 0;
                int rc = chp_store_file_get(s, fr->ids[f], &m, &len, NULL);
                CHECK_EQ(rc, fr->file_state[f] == 1 ? 0 : -ENOENT);
                free(m);
        }
        CHECK_EQ(verify_problems(s), 0);
        CHECK_EQ(segment_file_bytes(), committed_bytes(s));
}

static struct chp_store *open_fault_store(void)
{
        return open_store(16 * 1024, CHP_CHUNK_MAX);
}

static void fault_chunks(struct fault_run *fr)
{
        for (int i = 0; i < 10; i++)
                fr->ch[i] = make_chunk(i == 2   ? 2000
                                       : i == 1 ? 100000
                                                : 1024 * 1024,
                                       8000 + (uint32_t)i);
}

/* Drives the workload once per call at each write site (and one past the last), with ENOSPC and
 * with EIO: every failure reaches its caller as the injected error, the store goes on serving
 * reads and taking writes, and after a reopen everything acknowledged is there and verify is
 * clean. */
TEST(io_faults_at_every_write)
{
        struct fault_run base = {0};
        fault_chunks(&base);
        fresh_dir();
        base.s = open_fault_store();
        REQUIRE(base.s);
        fault_workload(&base);
        uint64_t calls[CHP_FAULT_SITES];
        for (int site = 0; site < CHP_FAULT_SITES; site++)
                calls[site] = chp_store_fault_calls(base.s, (enum chp_store_fault_site)site);
        CHECK_EQ(base.failures, 0);
        fault_check(&base, base.s);
        chp_store_close(base.s);
        const int errs[2] = {-ENOSPC, -EIO};
        /* ninety-odd stores: on a tmpfs when there is one, where fdatasync costs nothing (the
         * faults are injected, so the medium does not matter) */
        struct stat sb;
        if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
                dir_base = "/dev/shm";
        int runs = 0, reported = 0;
        for (int site = 0; site < CHP_FAULT_SITES; site++) {
                CHECK(calls[site] > 0); /* the workload reaches every site */
                printf("  %s: %llu calls in the workload\n", site_name[site],
                       (unsigned long long)calls[site]);
                for (int e = 0; e < 2; e++) {
                        for (uint64_t n = 1; n <= calls[site] + 1; n++) {
                                struct fault_run fr = {.site = (enum chp_store_fault_site)site,
                                                       .n = n,
                                                       .err = errs[e]};
                                memcpy(fr.ch, base.ch, sizeof(fr.ch));
                                fresh_dir();
                                fr.s = open_fault_store();
                                REQUIRE(fr.s);
                                chp_store_fault_arm(fr.s, fr.site, n, 1, fr.err);
                                fault_workload(&fr);
                                fr.fired = chp_store_fault_calls(fr.s, fr.site) >= n;
                                int before = harness_failed_now;
                                fault_check(&fr, fr.s);
                                chp_store_close(fr.s);
                                fr.s = open_fault_store();
                                REQUIRE(fr.s);
                                fault_check(&fr, fr.s);
                                chp_store_close(fr.s);
                                if (n <= calls[site])
                                        CHECK(fr.fired);
                                else
                                        CHECK_EQ(fr.failures, 0);
                                if (harness_failed_now && !before)
                                        fprintf(stderr, "  (fault: %s call %llu, %s)\n",
                                                site_name[site], (unsigned long long)n,
                                                chp_strerror(fr.err));
                                runs++;
                                reported += fr.failures;
                        }
                }
        }
        printf("  %d runs, %d operations failed with the injected error\n", runs, reported);
        dir_base = "/tmp";
        CHECK(reported > 0);
        for (int i = 0; i < 10; i++)
                free(base.ch[i].data);
}

/* Holds the writer thread inside a done callback, so that the requests submitted meanwhile form
 * one batch when it is let go. */
struct gate {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool entered, open;
        int done;
};

static void gate_done(struct chp_store_req *req)
{
        struct gate *g = req->ctx;
        pthread_mutex_lock(&g->mu);
        g->entered = true;
        pthread_cond_broadcast(&g->cv);
        while (!g->open)
                pthread_cond_wait(&g->cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
}

static void count_done(struct chp_store_req *req)
{
        struct gate *g = req->ctx;
        pthread_mutex_lock(&g->mu);
        g->done++;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
}

/* A batch whose segment sync fails (or whose commit fails) acknowledges none of its requests: each
 * gets the error, once, and none of their chunks is readable. After a failed sync nothing more is
 * appended to that segment (fsyncgate: the kernel may have dropped the pages it could not write,
 * and a second fdatasync could succeed without writing them): the next put starts a new one. */
TEST(failed_sync_or_commit_fails_the_whole_batch)
{
        const enum chp_store_fault_site sites[2] = {CHP_FAULT_SEG_SYNC, CHP_FAULT_COMMIT};
        for (int t = 0; t < 2; t++) {
                fresh_dir();
                struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
                REQUIRE(s);
                struct chunk first = make_chunk(300000, 9000);
                CHECK_OK(put_chunk(s, &first));
                enum { N = 4 };
                struct chunk ch[N];
                struct chp_store_req req[N];
                struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false,
                                 0};
                struct chunk lead = make_chunk(200000, 9001);
                struct chp_store_req lead_req = {.type = CHP_REQ_PUT, .done = gate_done, .ctx = &g};
                memcpy(lead_req.u.put.addr, lead.addr, CHP_HASH_BYTES);
                lead_req.u.put.data = lead.data;
                lead_req.u.put.len = lead.len;
                REQUIRE_OK(chp_store_submit(s, &lead_req));
                pthread_mutex_lock(&g.mu);
                while (!g.entered)
                        pthread_cond_wait(&g.cv, &g.mu);
                pthread_mutex_unlock(&g.mu);
                /* the writer waits in lead's done: these four queue up as one batch */
                for (int i = 0; i < N; i++) {
                        ch[i] = make_chunk(i == 3 ? 1000 : 250000, 9100 + (uint32_t)i);
                        req[i] = (struct chp_store_req){
                            .type = CHP_REQ_PUT, .done = count_done, .ctx = &g};
                        memcpy(req[i].u.put.addr, ch[i].addr, CHP_HASH_BYTES);
                        req[i].u.put.data = ch[i].data;
                        req[i].u.put.len = ch[i].len;
                        CHECK_OK(chp_store_submit(s, &req[i]));
                }
                chp_store_fault_arm(s, sites[t], 1, 1, -EIO);
                pthread_mutex_lock(&g.mu);
                g.open = true;
                pthread_cond_broadcast(&g.cv);
                while (g.done < N)
                        pthread_cond_wait(&g.cv, &g.mu);
                pthread_mutex_unlock(&g.mu);
                CHECK_EQ(lead_req.status, 0);
                for (int i = 0; i < N; i++) {
                        CHECK_EQ(req[i].status, -EIO);
                        uint8_t present = 9;
                        CHECK_OK(chp_store_has(s, ch[i].addr, 1, &present));
                        CHECK_EQ(present, 0);
                }
                CHECK_EQ(g.done, N); /* each done exactly once: nothing is retried later */
                CHECK(reads_back(s, &first));
                CHECK(reads_back(s, &lead));
                /* the same puts again succeed; after a failed sync they go to a new segment */
                for (int i = 0; i < N; i++) {
                        CHECK_OK(put_chunk(s, &ch[i]));
                        CHECK(reads_back(s, &ch[i]));
                }
                struct chp_chunk_loc a, b;
                CHECK_OK(chp_store_locate(s, first.addr, &a));
                CHECK_OK(chp_store_locate(s, ch[0].addr, &b));
                if (sites[t] == CHP_FAULT_SEG_SYNC) {
                        CHECK(a.seg != b.seg);
                        CHECK_EQ(b.offset, 0);
                } else {
                        CHECK(a.seg == b.seg); /* the segment's bytes were fine */
                }
                chp_store_loc_release(s, &a);
                chp_store_loc_release(s, &b);
                CHECK_EQ(segment_file_bytes(), committed_bytes(s));
                CHECK_EQ(verify_problems(s), 0);
                chp_store_close(s);
                s = open_store(16 * 1024, (uint64_t)64 << 20);
                REQUIRE(s);
                CHECK(reads_back(s, &first));
                CHECK(reads_back(s, &lead));
                for (int i = 0; i < N; i++)
                        CHECK(reads_back(s, &ch[i]));
                CHECK_EQ(verify_problems(s), 0);
                chp_store_close(s);
                for (int i = 0; i < N; i++)
                        free(ch[i].data);
                free(first.data);
                free(lead.data);
        }
}

static uint64_t half_at_100(int i)
{
        return i % 2 ? 100 : 0;
}

/* A put that runs out of space part-way leaves nothing of itself in the segment file, and the
 * segment takes no more appends (the next put starts a new one). Space is then short: GC seals a
 * sparse open segment at once (here half dead, far less than half a segment) and compacts it. */
TEST(out_of_space_seals_and_reclaims)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk ch[4];
        uint8_t ids[4][CHP_HASH_BYTES];
        put_files(s, ch, ids, 4, 9500, half_at_100);
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 200, &gs)); /* 2 MiB dead of 4: not worth sealing yet */
        CHECK_EQ(gs.files_expired, 2);
        CHECK_EQ(gs.segments_sealed, 0);
        struct chunk b = make_chunk(1024 * 1024, 9600);
        chp_store_fault_arm(s, CHP_FAULT_SEG_WRITE, 1, 1, -ENOSPC);
        CHECK_EQ(put_chunk(s, &b), -ENOSPC);
        CHECK_EQ(segment_file_bytes(), committed_bytes(s)); /* the torn half is gone */
        CHECK_EQ(committed_bytes(s), 4 << 20);
        /* space is short now: GC seals the half-dead open segment and compacts it */
        CHECK_OK(chp_store_gc(s, 300, &gs));
        CHECK_EQ(gs.segments_sealed, 1);
        CHECK_EQ(gs.segments_compacted, 1);
        CHECK_EQ(gs.bytes_moved, 2 << 20);
        CHECK_EQ(committed_bytes(s), 2 << 20);
        CHECK_EQ(segment_file_bytes(), 2 << 20);
        for (int i = 0; i < 4; i++)
                CHECK(reads_back(s, &ch[i]) == (i % 2 == 0));
        CHECK_OK(put_chunk(s, &b));
        CHECK(reads_back(s, &b));
        CHECK_EQ(verify_problems(s), 0);
        /* a put failing with EIO: the segment it went to takes no more appends */
        struct chunk c = make_chunk(1024 * 1024, 9601), d = make_chunk(1024 * 1024, 9602);
        chp_store_fault_arm(s, CHP_FAULT_SEG_WRITE, 1, 1, -EIO);
        CHECK_EQ(put_chunk(s, &c), -EIO);
        CHECK_OK(put_chunk(s, &d));
        struct chp_chunk_loc loc;
        CHECK_OK(chp_store_locate(s, d.addr, &loc));
        CHECK_EQ(loc.offset, 0);
        chp_store_loc_release(s, &loc);
        CHECK_EQ(segment_file_bytes(), committed_bytes(s));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK(reads_back(s, &b) && reads_back(s, &d) && reads_back(s, &ch[0]));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < 4; i++)
                free(ch[i].data);
        free(b.data);
        free(c.data);
        free(d.data);
}

static uint64_t six_at_100(int i)
{
        return i < 6 ? 100 : 0;
}

/* After a failed sync the open segment is suspect. Work that starts a new segment and is then
 * undone (here a compaction that meets a chunk failing its checksum) brings the suspect one back
 * as the open segment: it must still take no more appends. */
TEST(suspect_segment_stays_suspect_after_an_undo)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, CHP_CHUNK_MAX);
        REQUIRE(s);
        struct chunk ch[9];
        uint8_t ids[9][CHP_HASH_BYTES];
        put_files(s, ch, ids, 9, 9800, six_at_100); /* 0..7 fill segment 1; 8 opens segment 2 */
        struct chunk c = make_chunk(1024 * 1024, 9900);
        chp_store_fault_arm(s, CHP_FAULT_SEG_SYNC, 1, 1, -EIO);
        CHECK_EQ(put_chunk(s, &c), -EIO); /* segment 2 is suspect now */
        /* rot chunk 7 (the last in segment 1) so that compacting segment 1 fails on it, after
         * chunk 6 was copied into a new segment */
        char path[400];
        snprintf(path, sizeof(path), "%s/segments/00000001.seg", dir);
        int fd = open(path, O_RDWR);
        REQUIRE(fd >= 0);
        uint8_t byte;
        CHECK_EQ(pread(fd, &byte, 1, 7 * 1024 * 1024 + 5), 1);
        byte ^= 1;
        CHECK_EQ(pwrite(fd, &byte, 1, 7 * 1024 * 1024 + 5), 1);
        close(fd);
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, 200, &gs));
        CHECK_EQ(gs.files_expired, 6);
        CHECK_EQ(gs.segments_compacted, 0); /* undone: chunk 7 fails its checksum */
        CHECK_OK(put_chunk(s, &c));
        struct chp_chunk_loc loc, old;
        CHECK_OK(chp_store_locate(s, c.addr, &loc));
        CHECK_OK(chp_store_locate(s, ch[8].addr, &old));
        CHECK(loc.seg != old.seg); /* not appended to the suspect segment 2 */
        CHECK_EQ(loc.offset, 0);
        chp_store_loc_release(s, &loc);
        chp_store_loc_release(s, &old);
        CHECK(reads_back(s, &ch[6]) && reads_back(s, &ch[8]) && reads_back(s, &c));
        CHECK_EQ(verify_problems(s), 1); /* the rotten chunk, and nothing else */
        chp_store_close(s);
        for (int i = 0; i < 9; i++)
                free(ch[i].data);
        free(c.data);
}

/* ---- a full disk (tests/enospc.sh runs this on a small tmpfs) ------------------------------ */

struct filled {
        struct chunk ch[512];
        uint8_t ids[512][CHP_HASH_BYTES];
        bool has_file[512];
        uint64_t expires[512];
        int n;
};

/* Puts 1 MiB chunks, each committed as a file expiring at `expires` (every eighth never expires,
 * when keep_some), until the disk is full. Returns the code that ended the fill. */
static int fill_disk(struct chp_store *s, struct filled *f, uint32_t seed, uint64_t expires,
                     bool keep_some)
{
        const uint32_t cs = 1024 * 1024;
        int rc = 0;
        while (f->n < 512) {
                struct chunk c = make_chunk(cs, seed + (uint32_t)f->n);
                if ((rc = put_chunk(s, &c))) {
                        free(c.data);
                        break;
                }
                int i = f->n++;
                f->ch[i] = c;
                f->expires[i] = keep_some && i % 8 == 0 ? 0 : expires;
                size_t mlen = 0;
                uint8_t *m = manifest_of(&c, 1, cs, &mlen);
                rc = chp_store_commit(s, m, mlen, f->expires[i], f->ids[i]);
                free(m);
                if (rc)
                        break;
                f->has_file[i] = true;
        }
        return rc;
}

/* Every acknowledged chunk that is still meant to exist reads back; `now` says which expired. */
static int count_unreadable(struct chp_store *s, const struct filled *f, uint64_t now)
{
        int bad = 0;
        for (int i = 0; i < f->n; i++) {
                bool alive = f->has_file[i] && (f->expires[i] == 0 || f->expires[i] > now);
                if (alive && !reads_back(s, &f->ch[i]))
                        bad++;
        }
        return bad;
}

static void print_space(const char *when, struct chp_store *s)
{
        struct chp_store_stats st;
        if (chp_store_stats(s, &st) == 0)
                printf("  %s: %llu chunks, %llu segments, %llu segment bytes, %llu live\n", when,
                       (unsigned long long)st.chunks, (unsigned long long)st.segments,
                       (unsigned long long)st.segment_bytes, (unsigned long long)st.live_bytes);
}

/* Bytes in the store's segment files, and the bytes its index says they hold. */
static long long segment_file_bytes(void)
{
        char path[400];
        snprintf(path, sizeof(path), "%s/segments", dir);
        DIR *d = opendir(path);
        long long sum = 0;
        struct dirent *e;
        while (d && (e = readdir(d))) {
                struct stat sb;
                if (e->d_name[0] != '.' && fstatat(dirfd(d), e->d_name, &sb, 0) == 0)
                        sum += sb.st_size;
        }
        if (d)
                closedir(d);
        return sum;
}

static long long committed_bytes(struct chp_store *s)
{
        struct chp_store_stats st;
        return chp_store_stats(s, &st) == 0 ? (long long)st.segment_bytes : -1;
}

static struct chp_store *open_default(uint64_t reserve)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o); /* the defaults, segment_size included: that is the case */
        o.dir = dir;
        o.space_reserve = reserve;
        struct chp_store *s = NULL;
        int rc = chp_store_open(&o, &s);
        if (rc)
                fprintf(stderr, "open: %s\n", chp_strerror(rc));
        return s;
}

/* Fills the disk, lets everything but a few files expire, and expects puts to work again after
 * one GC, without a restart; then fills it again and expects the same across a restart. */
static void run_full_disk(void)
{
        static struct filled f; /* static: 512 chunk records are too many for the stack */
        struct chp_gc_stats gs;
        struct chunk probe = make_chunk(1024 * 1024, 900000);
        struct chp_store *s = open_default(0);
        REQUIRE(s);
        int rc = fill_disk(s, &f, 1000, 1000, true);
        printf("  first fill: %d chunks acknowledged, then %s\n", f.n, chp_strerror(rc));
        print_space("full", s);
        CHECK_EQ(rc, -ENOSPC);
        REQUIRE(f.n >= 8);
        CHECK_EQ(put_chunk(s, &probe), -ENOSPC); /* still full */
        CHECK_EQ(count_unreadable(s, &f, 0), 0);
        CHECK_EQ(verify_problems(s), 0);
        CHECK_OK(chp_store_gc(s, 500, &gs)); /* nothing due yet: still full */
        CHECK_EQ(put_chunk(s, &probe), -ENOSPC);

        /* everything but every eighth file expires; GC must turn that into free bytes */
        REQUIRE_OK(chp_store_gc(s, 2000, &gs));
        for (int round = 0; gs.more && round < 10; round++)
                REQUIRE_OK(chp_store_gc(s, 2000, &gs));
        printf("  gc: %llu files expired, %llu chunks freed, %llu segments dropped, %llu "
               "compacted\n",
               (unsigned long long)gs.files_expired, (unsigned long long)gs.chunks_freed,
               (unsigned long long)gs.segments_deleted, (unsigned long long)gs.segments_compacted);
        print_space("after gc", s);
        CHECK_OK(put_chunk(s, &probe)); /* room again, no restart */
        CHECK_EQ(count_unreadable(s, &f, 2000), 0);
        CHECK_EQ(verify_problems(s), 0);

        /* fill it again; this time the relay restarts before GC runs */
        int first = f.n;
        rc = fill_disk(s, &f, 50000, 3000, false);
        printf("  second fill: %d more chunks acknowledged, then %s\n", f.n - first,
               chp_strerror(rc));
        CHECK_EQ(rc, -ENOSPC);
        CHECK(f.n - first >= 8);
        CHECK_EQ(count_unreadable(s, &f, 2000), 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_default(0);
        REQUIRE(s);
        struct chunk probe2 = make_chunk(1024 * 1024, 900001);
        CHECK_EQ(put_chunk(s, &probe2), -ENOSPC); /* a restart alone frees nothing */
        REQUIRE_OK(chp_store_gc(s, 4000, &gs));
        for (int round = 0; gs.more && round < 10; round++)
                REQUIRE_OK(chp_store_gc(s, 4000, &gs));
        print_space("after restart and gc", s);
        CHECK_OK(put_chunk(s, &probe2));
        CHECK(reads_back(s, &probe2));
        CHECK_EQ(count_unreadable(s, &f, 4000), 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);

        /* Without the reserve the filesystem itself says ENOSPC, part-way through an append (or
         * at the index's commit). Nothing torn may stay in the segment files, and once another
         * file on the disk goes, appends work again without a restart. */
        char ballast[300];
        snprintf(ballast, sizeof(ballast), "%s.ballast", dir);
        int fd = open(ballast, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        REQUIRE(fd >= 0);
        uint8_t *junk = calloc(1, 4 << 20);
        CHECK_EQ(write(fd, junk, 4 << 20), 4 << 20);
        close(fd);
        free(junk);
        s = open_default(CHP_STORE_RESERVE_NONE);
        REQUIRE(s);
        first = f.n;
        rc = fill_disk(s, &f, 70000, 5000, false);
        printf("  without a reserve: %d more chunks acknowledged, then %s\n", f.n - first,
               chp_strerror(rc));
        CHECK_EQ(rc, -ENOSPC);
        CHECK_EQ(segment_file_bytes(), committed_bytes(s));
        CHECK_EQ(count_unreadable(s, &f, 4000), 0);
        CHECK_EQ(verify_problems(s), 0);
        CHECK_OK(unlink(ballast));
        struct chunk after[2] = {make_chunk(1024 * 1024, 900002), make_chunk(1024 * 1024, 900003)};
        for (int i = 0; i < 2; i++) {
                CHECK_OK(put_chunk(s, &after[i]));
                CHECK(reads_back(s, &after[i]));
        }
        CHECK_EQ(segment_file_bytes(), committed_bytes(s));
        CHECK_EQ(count_unreadable(s, &f, 4000), 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        s = open_default(0);
        REQUIRE(s);
        for (int i = 0; i < 2; i++)
                CHECK(reads_back(s, &after[i]));
        CHECK_EQ(count_unreadable(s, &f, 4000), 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < f.n; i++)
                free(f.ch[i].data);
        free(probe.data);
        free(probe2.data);
        free(after[0].data);
        free(after[1].data);
}

/* ---- tenants' usage and quotas ------------------------------------------------------------ */

static struct chp_tenant_usage usage_of(struct chp_store *s, const char *tenant)
{
        struct chp_tenant_usage u;
        memset(&u, 0xee, sizeof(u));
        if (chp_store_tenant_usage(s, tenant, &u) != 0)
                memset(&u, 0xdd, sizeof(u));
        return u;
}

#define CHECK_USAGE(u, stored, nfiles, inc, inc_bytes)                                             \
        do {                                                                                       \
                CHECK_EQ((u).stored_bytes, stored);                                                \
                CHECK_EQ((u).files, nfiles);                                                       \
                CHECK_EQ((u).incomplete, inc);                                                     \
                CHECK_EQ((u).incomplete_bytes, inc_bytes);                                         \
        } while (0)

static const uint64_t DAY0 = 20000ull * 86400 + 3600; /* a UTC day, one hour in */

/* A tus-like upload record (no manifest) of tenant, id byte idb. Caller frees. */
static struct chp_upload *tus_upload(const char *tenant, uint8_t idb, uint64_t declared,
                                     uint64_t created, uint64_t expires)
{
        struct chp_upload *u = calloc(1, sizeof(*u));
        memset(u->id, idb, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "%s", tenant);
        u->declared_size = declared;
        u->chunk_size = 65536;
        u->created = created;
        u->expires = expires;
        return u;
}

static int create_upload(struct chp_store *s, const struct chp_upload *u,
                         const struct chp_store_quota *q, enum chp_store_quota_hit *hit)
{
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        cr.u.upload_create.quota = q;
        cr.u.upload_create.quota_hit = (enum chp_store_quota_hit)99;
        int rc = chp_store_run(s, &cr);
        if (hit)
                *hit = cr.u.upload_create.quota_hit;
        return rc;
}

static int put_for_upload(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES], uint32_t i,
                          const struct chunk *c, bool with_bytes)
{
        struct chp_store_req p = {.type = CHP_REQ_PUT};
        memcpy(p.u.put.addr, c->addr, CHP_HASH_BYTES);
        p.u.put.data = with_bytes ? c->data : NULL;
        p.u.put.len = c->len;
        p.u.put.has_upload = true;
        memcpy(p.u.put.upload_id, id, CHP_UPLOAD_ID_BYTES);
        p.u.put.index = i;
        return chp_store_run(s, &p);
}

static int commit_upload(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                         const uint8_t *m, size_t mlen, const char *tenant, bool keep,
                         uint64_t expires, uint8_t file_id[CHP_HASH_BYTES])
{
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.manifest = m;
        c.u.commit.manifest_len = mlen;
        c.u.commit.tenant = tenant;
        c.u.commit.expires = expires;
        c.u.commit.has_upload = true;
        c.u.commit.keep_upload = keep;
        memcpy(c.u.commit.upload_id, id, CHP_UPLOAD_ID_BYTES);
        int rc = chp_store_run(s, &c);
        if (rc == 0 && file_id)
                memcpy(file_id, c.u.commit.file_id, CHP_HASH_BYTES);
        return rc;
}

TEST(tenant_usage_follows_files_and_uploads)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_tenant_usage u = usage_of(s, "acme");
        CHECK_USAGE(u, 0, 0, 0, 0); /* unknown: zeros */
        /* a tus upload of a known size, and a deferred one */
        struct chp_upload *a = tus_upload("acme", 0xa1, 65536 + 100, DAY0, DAY0 + 1000);
        struct chp_upload *b =
            tus_upload("acme", 0xb1, CHP_UPLOAD_SIZE_UNKNOWN, DAY0 + 10, DAY0 + 500);
        REQUIRE_OK(create_upload(s, a, NULL, NULL));
        REQUIRE_OK(create_upload(s, b, NULL, NULL));
        u = usage_of(s, "acme");
        CHECK_USAGE(u, 0, 0, 2, 65536 + 100);
        CHECK_EQ(u.day, DAY0 / 86400);
        CHECK_EQ(u.day_bytes, 65536 + 100);
        /* the deferred length becomes known: the record is re-created, not a new upload */
        b->declared_size = 5000;
        REQUIRE_OK(create_upload(s, b, NULL, NULL));
        u = usage_of(s, "acme");
        CHECK_USAGE(u, 0, 0, 2, 65536 + 100 + 5000);
        CHECK_EQ(u.day_bytes, 65536 + 100 + 5000);
        /* a's file is committed, its record kept as complete: files count, incomplete not */
        struct chunk whole = make_chunk(65536, 2001), last = make_chunk(100, 2002);
        CHECK_OK(put_for_upload(s, a->id, 0, &whole, true));
        CHECK_OK(put_for_upload(s, a->id, 1, &last, true));
        struct chunk both[2] = {whole, last};
        size_t mlen = 0;
        uint8_t *m = manifest_of(both, 2, 65536, &mlen);
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_OK(commit_upload(s, a->id, m, mlen, "acme", true, DAY0 + 5000, fid));
        u = usage_of(s, "acme");
        CHECK_USAGE(u, 65536 + 100, 1, 1, 5000);
        /* committing the same bytes again (another tenant too) changes no one's usage */
        CHECK_OK(chp_store_commit(s, m, mlen, DAY0 + 6000, fid));
        u = usage_of(s, "acme");
        CHECK_USAGE(u, 65536 + 100, 1, 1, 5000);
        /* b is deleted; a's completed record expiring later changes nothing */
        struct chp_store_req del = {.type = CHP_REQ_UPLOAD_DELETE};
        memcpy(del.u.upload_delete.upload_id, b->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &del));
        struct chp_gc_stats gs;
        CHECK_OK(chp_store_gc(s, DAY0 + 2000, &gs));
        CHECK_EQ(gs.uploads_expired, 1);
        u = usage_of(s, "acme");
        CHECK_USAGE(u, 65536 + 100, 1, 0, 0);
        CHECK_EQ(u.day_bytes, 65536 + 100 + 5000); /* bytes begun that day stay begun */

        /* a native upload of tenant beta: its manifest's size; committed from its manifest */
        struct chp_upload *n = tus_upload("beta", 0xc1, 0, DAY0 + 86400, DAY0 + 90000);
        n->file_expires = DAY0 + 100000;
        struct chunk nc = make_chunk(65536, 2003);
        size_t nlen = 0;
        uint8_t *nm = manifest_of(&nc, 1, 65536, &nlen);
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        open.u.upload_create.upload = n;
        open.u.upload_create.manifest = nm;
        open.u.upload_create.manifest_len = nlen;
        REQUIRE_OK(chp_store_run(s, &open));
        u = usage_of(s, "beta");
        CHECK_USAGE(u, 0, 0, 1, 65536);
        CHECK_EQ(u.day, DAY0 / 86400 + 1);
        CHECK_OK(put_for_upload(s, n->id, 0, &nc, true));
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.has_upload = true;
        memcpy(c.u.commit.upload_id, n->id, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &c));
        u = usage_of(s, "beta");
        CHECK_USAGE(u, 65536, 1, 0, 0);
        CHECK_USAGE(usage_of(s, "acme"), 65536 + 100, 1, 0, 0);
        /* files go: deleted, expired */
        CHECK_OK(delete_file(s, fid));
        CHECK_USAGE(usage_of(s, "acme"), 0, 0, 0, 0);
        CHECK_OK(chp_store_gc(s, DAY0 + 200000, &gs));
        CHECK_EQ(gs.files_expired, 1);
        CHECK_USAGE(usage_of(s, "beta"), 0, 0, 0, 0);
        /* the empty tenant (trusted callers) is not tracked */
        CHECK_USAGE(usage_of(s, ""), 0, 0, 0, 0);
        CHECK_USAGE(usage_of(s, NULL), 0, 0, 0, 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(a);
        free(b);
        free(n);
        free(m);
        free(nm);
        free(whole.data);
        free(last.data);
        free(nc.data);
}

/* Opens the store's LMDB environment directly (the store closed), as an older build or damage
 * would have left it, and runs fn in a write transaction. */
static int raw_index(int (*fn)(MDB_txn *txn, void *ctx), void *ctx)
{
        char path[300];
        snprintf(path, sizeof(path), "%s/index", dir);
        MDB_env *env;
        MDB_txn *txn;
        int rc = mdb_env_create(&env);
        if (rc)
                return rc;
        mdb_env_set_maxdbs(env, 16);
        mdb_env_set_mapsize(env, (size_t)256 << 20);
        if ((rc = mdb_env_open(env, path, MDB_NOTLS, 0600)) ||
            (rc = mdb_txn_begin(env, NULL, 0, &txn))) {
                mdb_env_close(env);
                return rc;
        }
        rc = fn(txn, ctx);
        if (rc)
                mdb_txn_abort(txn);
        else
                rc = mdb_txn_commit(txn);
        mdb_env_close(env);
        return rc;
}

static int drop_tenants_db(MDB_txn *txn, void *ctx)
{
        (void)ctx;
        MDB_dbi dbi;
        int rc = mdb_dbi_open(txn, "tenants", 0, &dbi);
        return rc ? rc : mdb_drop(txn, dbi, 1);
}

static int tenants_db_exists(MDB_txn *txn, void *ctx)
{
        MDB_dbi dbi;
        *(bool *)ctx = mdb_dbi_open(txn, "tenants", 0, &dbi) == 0;
        return 0;
}

TEST(tenant_usage_rebuilt_on_upgrade)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        uint64_t now = (uint64_t)time(NULL);
        enum { N = 6 };
        struct chunk ch[N];
        const char *tenants[] = {"acme", "beta", ""};
        for (int i = 0; i < N; i++) {
                ch[i] = make_chunk(1000 + (uint32_t)i * 700, 3000 + (uint32_t)i);
                struct chp_upload *u =
                    tus_upload(tenants[i % 3], (uint8_t)(0x10 + i), ch[i].len, now, now + 1000);
                REQUIRE_OK(create_upload(s, u, NULL, NULL));
                CHECK_OK(put_for_upload(s, u->id, 0, &ch[i], true));
                if (i < 4) { /* four files, two uploads left incomplete */
                        size_t mlen = 0;
                        uint8_t *m = manifest_of(&ch[i], 1, 65536, &mlen);
                        CHECK_OK(commit_upload(s, u->id, m, mlen, tenants[i % 3], i % 2, 0, NULL));
                        free(m);
                }
                free(u);
        }
        struct chp_upload *d = tus_upload("beta", 0x77, CHP_UPLOAD_SIZE_UNKNOWN, now, now + 99);
        REQUIRE_OK(create_upload(s, d, NULL, NULL));
        free(d);
        struct chp_tenant_usage before[2] = {usage_of(s, "acme"), usage_of(s, "beta")};
        /* acme: files 0 and 3; beta: file 1, upload 4 and d (unknown size) incomplete */
        CHECK_USAGE(before[0], 1000 + 3100, 2, 0, 0);
        CHECK_USAGE(before[1], 1700, 1, 2, 3800);
        chp_store_close(s);

        /* as a store written before usage was kept: no tenants db */
        REQUIRE_OK(raw_index(drop_tenants_db, NULL));
        bool exists = true;
        REQUIRE_OK(raw_index(tenants_db_exists, &exists));
        CHECK(!exists);
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_tenant_usage after[2] = {usage_of(s, "acme"), usage_of(s, "beta")};
        for (int t = 0; t < 2; t++)
                CHECK_USAGE(after[t], before[t].stored_bytes, before[t].files, before[t].incomplete,
                            before[t].incomplete_bytes);
        /* the day's bytes, as far as records tell: uploads still recorded (kept complete, or
         * incomplete), begun today */
        CHECK_EQ(after[0].day, now / 86400);
        CHECK_EQ(after[0].day_bytes, 3100);
        CHECK_EQ(after[1].day_bytes, 1700 + 3800);
        chp_store_close(s);
        /* once there, it is not counted again */
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_USAGE(usage_of(s, "beta"), 1700, 1, 2, 3800);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < N; i++)
                free(ch[i].data);
}

static const struct chp_store_quota NO_QUOTA = {UINT64_MAX, UINT64_MAX, UINT64_MAX, DAY0};

TEST(quota_refuses_only_new_sessions)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_store_quota q = NO_QUOTA;
        q.max_stored = 100000;
        q.max_incomplete = 2;
        enum chp_store_quota_hit hit;
        struct chp_upload *a = tus_upload("acme", 0x01, 60000, DAY0, DAY0 + 1000);
        CHECK_OK(create_upload(s, a, &q, &hit));
        CHECK_EQ(hit, CHP_QUOTA_NONE);
        /* stored + incomplete + declared: 60000 + 50000 > 100000 */
        struct chp_upload *b = tus_upload("acme", 0x02, 50000, DAY0, DAY0 + 1000);
        CHECK_EQ(create_upload(s, b, &q, &hit), CHP_EQUOTA);
        CHECK_EQ(hit, CHP_QUOTA_STORED);
        struct chp_upload *back = calloc(1, sizeof(*back));
        CHECK_EQ(chp_store_upload_get(s, b->id, back), -ENOENT); /* nothing written */
        CHECK_USAGE(usage_of(s, "acme"), 0, 0, 1, 60000);
        /* another tenant has its own usage */
        snprintf(b->tenant, sizeof(b->tenant), "beta");
        CHECK_OK(create_upload(s, b, &q, &hit));
        /* a deferred length counts 0 bytes; then the count of incomplete uploads */
        struct chp_upload *c = tus_upload("acme", 0x03, CHP_UPLOAD_SIZE_UNKNOWN, DAY0, DAY0 + 9);
        CHECK_OK(create_upload(s, c, &q, &hit));
        struct chp_upload *d = tus_upload("acme", 0x04, 1, DAY0, DAY0 + 1000);
        CHECK_EQ(create_upload(s, d, &q, &hit), CHP_EQUOTA);
        CHECK_EQ(hit, CHP_QUOTA_INCOMPLETE);
        /* re-creating an existing record (its length became known) is no new session, but the
         * bytes it adds count: 60000 + 50000 would pass max_stored, 60000 + 30000 does not */
        c->declared_size = 50000;
        CHECK_EQ(create_upload(s, c, &q, &hit), CHP_EQUOTA);
        CHECK_EQ(hit, CHP_QUOTA_STORED);
        CHECK_OK(chp_store_upload_get(s, c->id, back));
        CHECK_EQ(back->declared_size, CHP_UPLOAD_SIZE_UNKNOWN); /* left as it was */
        c->declared_size = 30000;
        CHECK_OK(create_upload(s, c, &q, &hit));
        CHECK_EQ(hit, CHP_QUOTA_NONE);
        CHECK_USAGE(usage_of(s, "acme"), 0, 0, 2, 90000);
        /* bytes begun per UTC day: 90000 begun today */
        q = NO_QUOTA;
        q.max_per_day = 90000;
        CHECK_EQ(create_upload(s, d, &q, &hit), CHP_EQUOTA);
        CHECK_EQ(hit, CHP_QUOTA_PER_DAY);
        q.now = DAY0 + 86400; /* the next day starts from zero */
        d->created = q.now;
        CHECK_OK(create_upload(s, d, &q, &hit));
        struct chp_tenant_usage u = usage_of(s, "acme");
        CHECK_EQ(u.day, DAY0 / 86400 + 1);
        CHECK_EQ(u.day_bytes, 1);

        /* a resumed upload and a file stored already are not new: not refused at the limit */
        struct chunk nc = make_chunk(65536, 4000);
        size_t nlen = 0;
        uint8_t *nm = manifest_of(&nc, 1, 65536, &nlen);
        struct chp_upload *n = tus_upload("gamma", 0x41, 0, DAY0, DAY0 + 1000);
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        open.u.upload_create.upload = n;
        open.u.upload_create.manifest = nm;
        open.u.upload_create.manifest_len = nlen;
        q = NO_QUOTA;
        q.max_incomplete = 1;
        open.u.upload_create.quota = &q;
        CHECK_OK(chp_store_run(s, &open));
        CHECK(!open.u.upload_create.resumed && !open.u.upload_create.complete);
        memset(n->id, 0x42, CHP_UPLOAD_ID_BYTES); /* another connection, at the limit */
        CHECK_OK(chp_store_run(s, &open));
        CHECK(open.u.upload_create.resumed);
        CHECK_EQ(open.u.upload_create.quota_hit, CHP_QUOTA_NONE);
        uint8_t first[CHP_UPLOAD_ID_BYTES];
        memset(first, 0x41, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(put_for_upload(s, first, 0, &nc, true));
        struct chp_store_req c2 = {.type = CHP_REQ_COMMIT};
        c2.u.commit.has_upload = true;
        memcpy(c2.u.commit.upload_id, first, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &c2));
        q.max_stored = 1; /* gamma holds 65536 bytes now */
        memset(n->id, 0x43, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &open));
        CHECK(open.u.upload_create.complete);
        /* but a new one is refused */
        nc.data[0] ^= 1;
        free(nm);
        REQUIRE_OK(chp_sha256(nc.data, nc.len, nc.addr));
        nm = manifest_of(&nc, 1, 65536, &nlen);
        open.u.upload_create.manifest = nm;
        memset(n->id, 0x44, CHP_UPLOAD_ID_BYTES);
        CHECK_EQ(chp_store_run(s, &open), CHP_EQUOTA);
        CHECK_EQ(open.u.upload_create.quota_hit, CHP_QUOTA_STORED);
        CHECK_USAGE(usage_of(s, "gamma"), 65536, 1, 0, 0);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(a);
        free(b);
        free(c);
        free(d);
        free(n);
        free(nm);
        free(nc.data);
        free(back);
}

/* One OPEN (upload create with a manifest) of upload id byte idb under tenant and subject. */
static int open_as(struct chp_store *s, const uint8_t *m, size_t mlen, const char *tenant,
                   const char *subject, uint8_t idb, struct chp_store_req *open /* out */)
{
        struct chp_upload *u = tus_upload(tenant, idb, 0, DAY0, DAY0 + 1000);
        if (!u)
                return -ENOMEM;
        snprintf(u->subject, sizeof(u->subject), "%s", subject);
        memset(open, 0, sizeof(*open));
        open->type = CHP_REQ_UPLOAD_CREATE;
        open->u.upload_create.upload = u;
        open->u.upload_create.manifest = m;
        open->u.upload_create.manifest_len = mlen;
        int rc = chp_store_run(s, open);
        open->u.upload_create.upload = NULL;
        free(u);
        return rc;
}

/* An upload session begun under a token's subject is resumed only under the same tenant and
 * subject, or by the relay's own (trusted callers, federation: no subject); a file already stored
 * is COMPLETE to anyone. */
TEST(resume_needs_the_same_subject)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk ch[2] = {make_chunk(65536, 4100), make_chunk(65536, 4101)};
        size_t mlen = 0;
        uint8_t *m = manifest_of(ch, 2, 65536, &mlen);
        REQUIRE(m);
        struct chp_store_req open;
        uint8_t first[CHP_UPLOAD_ID_BYTES], pend[CHP_UPLOAD_ID_BYTES];
        memset(first, 0x51, sizeof(first));
        CHECK_OK(open_as(s, m, mlen, "acme", "alice", 0x51, &open));
        CHECK(!open.u.upload_create.resumed && !open.u.upload_create.complete);
        struct chp_upload *back = calloc(1, sizeof(*back));
        REQUIRE(back);
        CHECK_OK(chp_store_upload_get(s, first, back));
        CHECK(strcmp(back->tenant, "acme") == 0 && strcmp(back->subject, "alice") == 0);

        /* the same subject (another token of it) resumes */
        CHECK_OK(open_as(s, m, mlen, "acme", "alice", 0x52, &open));
        CHECK(open.u.upload_create.resumed);
        CHECK(memcmp(open.u.upload_create.upload_id, first, CHP_UPLOAD_ID_BYTES) == 0);
        struct chp_tenant_usage before = usage_of(s, "acme");

        /* another subject, or the same subject name of another tenant: refused, nothing changed
         * (a chunk stored meanwhile is not attached to the upload, no record is made) */
        CHECK_OK(put_chunk(s, &ch[1]));
        CHECK_EQ(open_as(s, m, mlen, "acme", "bob", 0x53, &open), CHP_ETOKEN_SUBJECT);
        CHECK(!open.u.upload_create.resumed && !open.u.upload_create.complete);
        CHECK_EQ(open_as(s, m, mlen, "beta", "alice", 0x54, &open), CHP_ETOKEN_SUBJECT);
        uint8_t id[CHP_UPLOAD_ID_BYTES], have[2] = {9, 9};
        memset(id, 0x53, sizeof(id));
        CHECK_EQ(chp_store_upload_get(s, id, back), -ENOENT);
        memset(id, 0x54, sizeof(id));
        CHECK_EQ(chp_store_upload_get(s, id, back), -ENOENT);
        CHECK_OK(chp_store_pending(s, open.u.upload_create.file_id, pend));
        CHECK(memcmp(pend, first, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK_OK(chp_store_upload_chunks(s, first, have, NULL, 2));
        CHECK(have[0] == 0 && have[1] == 0);
        struct chp_tenant_usage after = usage_of(s, "acme");
        CHECK(memcmp(&before, &after, sizeof(before)) == 0);
        after = usage_of(s, "beta");
        CHECK_USAGE(after, 0, 0, 0, 0);
        CHECK_EQ(refs(s, &ch[1]), 0);

        /* the relay's own: a trusted caller (no tenant, no subject) and a federation fetch (a
         * peer's tenant, no subject) resume it, and attach what is stored */
        CHECK_OK(open_as(s, m, mlen, "", "", 0x55, &open));
        CHECK(open.u.upload_create.resumed);
        CHECK(memcmp(open.u.upload_create.upload_id, first, CHP_UPLOAD_ID_BYTES) == 0);
        CHECK_OK(chp_store_upload_chunks(s, first, have, NULL, 2));
        CHECK(have[0] == 0 && have[1] == 1);
        CHECK_OK(open_as(s, m, mlen, "peer:b", "", 0x56, &open));
        CHECK(open.u.upload_create.resumed);
        CHECK_OK(chp_store_upload_get(s, first, back));
        CHECK(strcmp(back->subject, "alice") == 0); /* a resume changes no record */

        /* once stored, the file is COMPLETE to anyone */
        CHECK_OK(put_for_upload(s, first, 0, &ch[0], true));
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.has_upload = true;
        memcpy(c.u.commit.upload_id, first, CHP_UPLOAD_ID_BYTES);
        CHECK_OK(chp_store_run(s, &c));
        CHECK_OK(open_as(s, m, mlen, "acme", "bob", 0x57, &open));
        CHECK(open.u.upload_create.complete);
        CHECK_OK(open_as(s, m, mlen, "beta", "carol", 0x58, &open));
        CHECK(open.u.upload_create.complete);

        /* an upload begun with no subject (trusted, or recorded before subjects) is anyone's */
        struct chunk oc = make_chunk(65536, 4102);
        size_t olen = 0;
        uint8_t *om = manifest_of(&oc, 1, 65536, &olen);
        REQUIRE(om);
        CHECK_OK(open_as(s, om, olen, "", "", 0x61, &open));
        CHECK(!open.u.upload_create.resumed);
        CHECK_OK(open_as(s, om, olen, "acme", "bob", 0x62, &open));
        CHECK(open.u.upload_create.resumed);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(back);
        free(m);
        free(om);
        free(oc.data);
        for (int i = 0; i < 2; i++)
                free(ch[i].data);
}

struct racer {
        struct chp_store *s;
        pthread_barrier_t *start;
        struct chp_upload *u;
        const struct chp_store_quota *q;
        int rc;
        enum chp_store_quota_hit hit;
};

static void *race_create(void *arg)
{
        struct racer *r = arg;
        pthread_barrier_wait(r->start);
        r->rc = create_upload(r->s, r->u, r->q, &r->hit);
        return NULL;
}

TEST(quota_holds_against_concurrent_creates)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chp_store_quota q = NO_QUOTA;
        q.max_stored = 100000; /* room for one of the two */
        enum { ROUNDS = 20 };
        int passed = 0, refused = 0;
        for (int round = 0; round < ROUNDS; round++) {
                char tenant[16];
                snprintf(tenant, sizeof(tenant), "t%d", round);
                pthread_barrier_t start;
                pthread_barrier_init(&start, NULL, 2);
                struct racer r[2];
                pthread_t th[2];
                for (int i = 0; i < 2; i++) {
                        r[i] = (struct racer){.s = s, .start = &start, .q = &q};
                        r[i].u = tus_upload(tenant, (uint8_t)(2 * round + i + 1), 60000, DAY0,
                                            DAY0 + 100);
                        REQUIRE(pthread_create(&th[i], NULL, race_create, &r[i]) == 0);
                }
                for (int i = 0; i < 2; i++)
                        pthread_join(th[i], NULL);
                pthread_barrier_destroy(&start);
                for (int i = 0; i < 2; i++) {
                        passed += r[i].rc == 0;
                        refused += r[i].rc == CHP_EQUOTA && r[i].hit == CHP_QUOTA_STORED;
                        free(r[i].u);
                }
                CHECK_USAGE(usage_of(s, tenant), 0, 0, 1, 60000);
        }
        CHECK_EQ(passed, ROUNDS);
        CHECK_EQ(refused, ROUNDS);
        chp_store_close(s);
}

/* ---- the mark-and-sweep audit ------------------------------------------------------------- */

static uint64_t grace_default(void)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        return o.orphan_grace;
}

struct damage {
        const struct chunk *over, *under, *dangling;
};

/* Reference counts drift (one too many, one lost) and an upload whose record vanished leaves
 * its chunk entry and kept tail behind. */
static int do_damage(MDB_txn *txn, void *ctx)
{
        const struct damage *d = ctx;
        MDB_dbi refs, upchunks, tails;
        int rc;
        if ((rc = mdb_dbi_open(txn, "refs", 0, &refs)) ||
            (rc = mdb_dbi_open(txn, "upchunks", 0, &upchunks)) ||
            (rc = mdb_dbi_open(txn, "tails", 0, &tails)))
                return rc;
        uint8_t five[CHP_REC_REFS_BYTES], one[CHP_REC_REFS_BYTES];
        chp_rec_refs_encode(five, 5);
        chp_rec_refs_encode(one, 1);
        MDB_val k = {CHP_HASH_BYTES, (void *)d->over->addr}, v = {sizeof(five), five};
        if ((rc = mdb_put(txn, refs, &k, &v, 0)))
                return rc;
        k.mv_data = (void *)d->under->addr;
        if ((rc = mdb_del(txn, refs, &k, NULL)))
                return rc;
        k.mv_data = (void *)d->dangling->addr;
        v = (MDB_val){sizeof(one), one};
        if ((rc = mdb_put(txn, refs, &k, &v, 0)))
                return rc;
        uint8_t uk[CHP_UPLOAD_ID_BYTES + 4];
        memset(uk, 0x99, CHP_UPLOAD_ID_BYTES);
        memset(uk + CHP_UPLOAD_ID_BYTES, 0, 4);
        k = (MDB_val){sizeof(uk), uk};
        v = (MDB_val){CHP_HASH_BYTES, (void *)d->dangling->addr};
        if ((rc = mdb_put(txn, upchunks, &k, &v, 0)))
                return rc;
        v = (MDB_val){3, "xyz"};
        return mdb_put(txn, tails, &k, &v, 0);
}

TEST(audit_repairs_drift_and_frees_orphans)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        const uint64_t G = grace_default(), T = DAY0;
        struct chunk a = make_chunk(65536, 5001), b = make_chunk(300, 5002),
                     c = make_chunk(65536, 5003), o = make_chunk(90000, 5004),
                     d = make_chunk(500, 5005);
        struct chunk ab[2] = {a, b};
        size_t mlen = 0;
        uint8_t *m = manifest_of(ab, 2, 65536, &mlen);
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_OK(put_chunk(s, &a));
        CHECK_OK(put_chunk(s, &b));
        CHECK_OK(chp_store_commit(s, m, mlen, 0, fid));
        struct chp_upload *u = tus_upload("acme", 0x51, 3 * 65536, T, 0);
        REQUIRE_OK(create_upload(s, u, NULL, NULL));
        CHECK_OK(put_for_upload(s, u->id, 0, &c, true));
        CHECK_OK(put_chunk(s, &o)); /* stored, never attached: a PATCH whose checksum failed */
        struct chp_audit_stats st;
        /* a healthy store: the orphan is found, nothing else is touched */
        CHECK_OK(chp_store_audit(s, T, &st));
        CHECK_EQ(st.chunks, 4);
        CHECK_EQ(st.references, 3);
        CHECK_EQ(st.refs_fixed, 0);
        CHECK_EQ(st.dangling, 0);
        CHECK_EQ(st.orphans, 1);
        CHECK_EQ(st.chunks_freed, 0);
        CHECK_OK(put_chunk(s, &d)); /* the chunk of an upload whose record will vanish */
        chp_store_close(s);

        struct damage dm = {.over = &a, .under = &b, .dangling = &d};
        REQUIRE_OK(raw_index(do_damage, &dm));
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK(verify_problems(s) >= 4);
        CHECK_OK(chp_store_audit(s, T + 10, &st));
        CHECK_EQ(st.chunks, 5);
        CHECK_EQ(st.references, 3); /* the vanished upload's entry is no reference */
        CHECK_EQ(st.refs_fixed, 3);
        CHECK_EQ(st.dangling, 2);
        CHECK_EQ(st.orphans, 2); /* o (since T) and d (since now) */
        CHECK_EQ(st.chunks_freed, 0);
        CHECK_EQ(refs(s, &a), 1);
        CHECK_EQ(refs(s, &b), 1);
        CHECK_EQ(refs(s, &c), 1);
        CHECK_EQ(refs(s, &d), 0);
        CHECK_EQ(verify_problems(s), 0);
        /* o's grace ends first, then d's */
        CHECK_OK(chp_store_audit(s, T + G - 1, &st));
        CHECK_EQ(st.chunks_freed, 0);
        CHECK_EQ(st.orphans, 2);
        CHECK_OK(chp_store_audit(s, T + G, &st));
        CHECK_EQ(st.chunks_freed, 1);
        CHECK_EQ(st.bytes_freed, o.len);
        CHECK(!reads_back(s, &o));
        CHECK(reads_back(s, &d));
        CHECK_OK(chp_store_audit(s, T + 10 + G, &st));
        CHECK_EQ(st.chunks_freed, 1);
        CHECK_EQ(st.bytes_freed, d.len);
        CHECK_EQ(st.orphans, 0);
        CHECK(!reads_back(s, &d));
        CHECK(reads_back(s, &a) && reads_back(s, &b) && reads_back(s, &c));
        struct chp_store_stats ss;
        CHECK_OK(chp_store_stats(s, &ss));
        CHECK_EQ(ss.chunks, 3);
        CHECK_EQ(ss.live_bytes, a.len + c.len); /* b is inline */
        CHECK_EQ(verify_problems(s), 0);
        /* nothing left to do */
        CHECK_OK(chp_store_audit(s, T + 3 * G, &st));
        CHECK(st.refs_fixed == 0 && st.dangling == 0 && st.orphans == 0 && st.chunks_freed == 0);
        /* and the upload goes on */
        CHECK_OK(put_for_upload(s, u->id, 1, &o, true));
        CHECK_EQ(refs(s, &o), 1);
        chp_store_close(s);
        free(m);
        free(u);
        free(a.data);
        free(b.data);
        free(c.data);
        free(o.data);
        free(d.data);
}

/* Tenants' usage records drift: acme's says too much, beta's is gone, a ghost tenant has one. */
static int damage_usage(MDB_txn *txn, void *ctx)
{
        (void)ctx;
        MDB_dbi dbi;
        int rc = mdb_dbi_open(txn, "tenants", 0, &dbi);
        if (rc)
                return rc;
        uint8_t rec[CHP_REC_TENANT_BYTES];
        struct chp_tenant_usage wrong = {.stored_bytes = 1u << 30, .files = 7, .incomplete = 5};
        chp_rec_tenant_encode(rec, &wrong);
        MDB_val k = {4, "acme"}, v = {sizeof(rec), rec};
        if ((rc = mdb_put(txn, dbi, &k, &v, 0)))
                return rc;
        k = (MDB_val){5, "ghost"};
        if ((rc = mdb_put(txn, dbi, &k, &v, 0)))
                return rc;
        k = (MDB_val){4, "beta"};
        return mdb_del(txn, dbi, &k, NULL);
}

struct create_meanwhile {
        struct chp_store *s;
        const struct chp_upload *u;
        int rc;
};

static void create_meanwhile(void *ctx)
{
        struct create_meanwhile *c = ctx;
        c->rc = create_upload(c->s, c->u, NULL, NULL);
}

TEST(audit_repairs_tenant_usage)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk c = make_chunk(5000, 8001), e = make_chunk(6000, 8002);
        struct chp_upload *a = tus_upload("acme", 0x81, c.len, DAY0, 0);
        struct chp_upload *b = tus_upload("beta", 0x82, 9999, DAY0, 0);
        REQUIRE_OK(create_upload(s, a, NULL, NULL));
        REQUIRE_OK(create_upload(s, b, NULL, NULL));
        CHECK_OK(put_for_upload(s, a->id, 0, &c, true));
        size_t mlen = 0;
        uint8_t *m = manifest_of(&c, 1, 65536, &mlen);
        CHECK_OK(commit_upload(s, a->id, m, mlen, "acme", false, 0, NULL));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        REQUIRE_OK(raw_index(damage_usage, NULL));
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_EQ(verify_problems(s), 3);
        /* a change between the mark and the sweep is kept: the correction is by difference */
        struct chp_upload *a2 = tus_upload("acme", 0x83, e.len, DAY0, 0);
        struct create_meanwhile mc = {.s = s, .u = a2, .rc = -1};
        chp_store_audit_hook(s, create_meanwhile, &mc);
        struct chp_audit_stats st;
        CHECK_OK(chp_store_audit(s, DAY0, &st));
        chp_store_audit_hook(s, NULL, NULL);
        CHECK_OK(mc.rc);
        CHECK_EQ(st.usage_fixed, 3);
        CHECK_USAGE(usage_of(s, "acme"), c.len, 1, 1, e.len);
        CHECK_USAGE(usage_of(s, "beta"), 0, 0, 1, 9999);
        CHECK_USAGE(usage_of(s, "ghost"), 0, 0, 0, 0);
        CHECK_EQ(verify_problems(s), 0);
        CHECK_OK(chp_store_audit(s, DAY0, &st));
        CHECK_EQ(st.usage_fixed, 0);
        chp_store_close(s);
        free(m);
        free(a);
        free(a2);
        free(b);
        free(c.data);
        free(e.data);
}

static int overcount(MDB_txn *txn, void *ctx)
{
        const struct chunk *ch = ctx;
        MDB_dbi refs;
        int rc = mdb_dbi_open(txn, "refs", 0, &refs);
        uint8_t seven[CHP_REC_REFS_BYTES];
        chp_rec_refs_encode(seven, 7);
        for (int i = 0; !rc && i < 10; i++) {
                MDB_val k = {CHP_HASH_BYTES, (void *)ch[i].addr}, v = {sizeof(seven), seven};
                rc = mdb_put(txn, refs, &k, &v, 0);
        }
        return rc ? rc : damage_usage(txn, NULL);
}

TEST(audit_in_passes_when_references_do_not_fit)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        const uint64_t G = grace_default(), T = DAY0;
        enum { N = 40, LOOSE = 10 };
        struct chunk ch[N + LOOSE];
        for (int i = 0; i < N + LOOSE; i++) {
                ch[i] = make_chunk(1000, 9000 + (uint32_t)i);
                CHECK_OK(put_chunk(s, &ch[i]));
        }
        for (int f = 0; f < N / 2; f++) { /* acme's files: chunks f and f + N/2 */
                struct chunk two[2] = {ch[f], ch[f + N / 2]};
                two[0].len = 65536; /* the manifest's sizes only; no chunk is read */
                size_t mlen = 0;
                uint8_t *m = manifest_of(two, 2, 65536, &mlen);
                struct chp_store_req c = {.type = CHP_REQ_COMMIT};
                c.u.commit.manifest = m;
                c.u.commit.manifest_len = mlen;
                c.u.commit.tenant = "acme";
                CHECK_OK(chp_store_run(s, &c));
                free(m);
        }
        struct chp_upload *b = tus_upload("beta", 0x91, 9999, T, 0);
        REQUIRE_OK(create_upload(s, b, NULL, NULL));
        struct chp_tenant_usage acme = usage_of(s, "acme");
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        REQUIRE_OK(raw_index(overcount, ch));
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_EQ(verify_problems(s), 13);
        chp_store_audit_limit(s, 8); /* 40 references: at least 5 passes */
        struct chp_audit_stats st;
        CHECK_OK(chp_store_audit(s, T, &st));
        CHECK(st.passes >= 5);
        CHECK_EQ(st.chunks, N + LOOSE);
        CHECK_EQ(st.references, N);
        CHECK_EQ(st.refs_fixed, 10);
        CHECK_EQ(st.usage_fixed, 3); /* once, not once per pass */
        CHECK_EQ(st.orphans, LOOSE);
        CHECK_USAGE(usage_of(s, "acme"), acme.stored_bytes, N / 2, 0, 0);
        CHECK_EQ(verify_problems(s), 0);
        CHECK_OK(chp_store_audit(s, T + G, &st));
        CHECK_EQ(st.chunks_freed, LOOSE);
        for (int i = 0; i < N + LOOSE; i++)
                CHECK(reads_back(s, &ch[i]) == (i < N));
        CHECK_EQ(verify_problems(s), 0);
        printf("  %llu passes of at most 8 references each\n", (unsigned long long)st.passes);
        chp_store_close(s);
        free(b);
        for (int i = 0; i < N + LOOSE; i++)
                free(ch[i].data);
}

/* What lands between an audit's mark and its sweep. */
struct meanwhile {
        struct chp_store *s;
        const struct chunk *put;    /* put again without an upload (deduplicated) */
        const struct chunk *attach; /* attached to upload, as index 0, without bytes */
        const uint8_t *upload;
        int rc;
};

static void land_meanwhile(void *ctx)
{
        struct meanwhile *w = ctx;
        if (w->put && !w->rc)
                w->rc = put_chunk(w->s, w->put);
        if (w->attach && !w->rc)
                w->rc = put_for_upload(w->s, w->upload, 0, w->attach, false);
}

TEST(audit_spares_chunks_put_after_its_mark)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        const uint64_t G = grace_default(), T = DAY0;
        struct chunk x = make_chunk(80000, 6001), y = make_chunk(80000, 6002);
        CHECK_OK(put_chunk(s, &x));
        CHECK_OK(put_chunk(s, &y));
        struct chp_audit_stats st;
        CHECK_OK(chp_store_audit(s, T, &st));
        CHECK_EQ(st.orphans, 2);
        /* past their grace, but a client stores x again (a tus PATCH whose chunks are attached
         * once the whole body checks out) and attaches y, after the mark, before the sweep */
        struct chp_upload *u = tus_upload("acme", 0x61, 2 * 80000, T, 0);
        REQUIRE_OK(create_upload(s, u, NULL, NULL));
        struct meanwhile w = {.s = s, .put = &x, .attach = &y, .upload = u->id};
        chp_store_audit_hook(s, land_meanwhile, &w);
        CHECK_OK(chp_store_audit(s, T + G, &st));
        chp_store_audit_hook(s, NULL, NULL);
        CHECK_OK(w.rc);
        CHECK_EQ(st.chunks_freed, 0);
        CHECK_EQ(st.orphans, 1); /* x: its grace starts over */
        CHECK(reads_back(s, &x) && reads_back(s, &y));
        /* the client attaches x within the grace: an upload that completes */
        CHECK_OK(chp_store_audit(s, T + 2 * G - 1, &st));
        CHECK_EQ(st.chunks_freed, 0);
        CHECK_OK(put_for_upload(s, u->id, 1, &x, false));
        struct chunk yx[2] = {y, x};
        size_t mlen = 0;
        uint8_t *m = manifest_of(yx, 2, 131072, &mlen);
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_OK(commit_upload(s, u->id, m, mlen, "acme", false, 0, fid));
        CHECK_OK(chp_store_audit(s, T + 5 * G, &st));
        CHECK(st.refs_fixed == 0 && st.orphans == 0 && st.chunks_freed == 0);
        CHECK(reads_back(s, &x) && reads_back(s, &y));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        free(m);
        free(u);
        free(x.data);
        free(y.data);
}

struct uploader {
        struct chp_store *s;
        int files_ok;
};

static struct chunk upload_chunk(int f, int i)
{
        return make_chunk(i == 2 ? 5000 : 65536, 7000 + (uint32_t)(f * 3 + i));
}

/* Uploads, as a tus client with checksums does: chunks stored first, attached once the body
 * checks out, then the file committed. */
static void *upload_many(void *arg)
{
        struct uploader *up = arg;
        for (int f = 0; f < 30; f++) {
                struct chunk ch[3];
                for (int i = 0; i < 3; i++)
                        ch[i] = upload_chunk(f, i);
                struct chp_upload *u = tus_upload("acme", 0, 2 * 65536 + 5000, DAY0, 0);
                u->id[0] = (uint8_t)f;
                bool ok = create_upload(up->s, u, NULL, NULL) == 0;
                for (int i = 0; ok && i < 3; i++)
                        ok = put_chunk(up->s, &ch[i]) == 0;
                for (int i = 0; ok && i < 3; i++)
                        ok = put_for_upload(up->s, u->id, (uint32_t)i, &ch[i], false) == 0;
                size_t mlen = 0;
                uint8_t *m = manifest_of(ch, 3, 65536, &mlen);
                ok = ok && commit_upload(up->s, u->id, m, mlen, "acme", true, 0, NULL) == 0;
                for (int i = 0; ok && i < 3; i++)
                        ok = reads_back(up->s, &ch[i]);
                up->files_ok += ok;
                free(m);
                free(u);
                for (int i = 0; i < 3; i++)
                        free(ch[i].data);
        }
        return NULL;
}

TEST(audit_online_beside_uploads)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        /* every chunk the uploader will send is stored already, an orphan past its grace: the
         * audits running meanwhile may free each one until the uploader puts it again */
        for (int i = 0; i < 90; i++) {
                struct chunk c = upload_chunk(i / 3, i % 3);
                CHECK_OK(put_chunk(s, &c));
                free(c.data);
        }
        struct chp_audit_stats st;
        CHECK_OK(chp_store_audit(s, DAY0, &st));
        CHECK_EQ(st.orphans, 90);
        struct uploader up = {.s = s};
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, upload_many, &up) == 0);
        uint64_t runs = 0, freed = 0, now = DAY0 + grace_default();
        int rc = 0;
        for (; runs < 200 && !rc; runs++) {
                rc = chp_store_audit(s, now, &st);
                freed += st.chunks_freed;
        }
        pthread_join(th, NULL);
        CHECK_OK(rc);
        CHECK_EQ(up.files_ok, 30);
        CHECK_OK(chp_store_audit(s, now, &st));
        CHECK_EQ(st.refs_fixed, 0);
        CHECK_EQ(st.orphans, 0);
        CHECK_EQ(st.chunks, 90);
        CHECK_EQ(verify_problems(s), 0);
        printf("  %llu audits beside 30 uploads freed %llu chunks not yet sent again\n",
               (unsigned long long)runs, (unsigned long long)freed);
        chp_store_close(s);
}

static int make_damaged(const char *d)
{
        snprintf(dir, sizeof(dir), "%s", d);
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        if (!s)
                return 2;
        struct chunk a = make_chunk(100000, 1);
        size_t mlen = 0;
        uint8_t *m = manifest_of(&a, 1, 128 * 1024, &mlen);
        uint8_t id[CHP_HASH_BYTES];
        int rc = put_chunk(s, &a);
        if (!rc)
                rc = chp_store_commit(s, m, mlen, 0, id);
        chp_store_close(s);
        free(m);
        free(a.data);
        if (rc)
                return 2;
        if (getenv("CHAPAR_DAMAGE")) {
                char path[400];
                snprintf(path, sizeof(path), "%s/segments/00000001.seg", d);
                int fd = open(path, O_RDWR);
                uint8_t x = 0xff;
                if (fd < 0 || pwrite(fd, &x, 1, 500) != 1)
                        return 2;
                close(fd);
        }
        return 0;
}

/* ---- administration: listings, quarantine, the live scrub ----------------------------------- */

static int commit_as(struct chp_store *s, const struct chunk *c, const char *tenant,
                     uint8_t id[CHP_HASH_BYTES])
{
        size_t mlen;
        uint8_t *m = manifest_of(c, 1, 131072, &mlen);
        struct chp_store_req r = {.type = CHP_REQ_COMMIT};
        r.u.commit.manifest = m;
        r.u.commit.manifest_len = mlen;
        r.u.commit.tenant = tenant;
        int rc = put_chunk(s, c);
        if (!rc)
                rc = chp_store_run(s, &r);
        if (!rc && id)
                memcpy(id, r.u.commit.file_id, CHP_HASH_BYTES);
        free(m);
        return rc;
}

static int quarantine(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], bool lift,
                      bool *deleted)
{
        struct chp_store_req r = {.type = CHP_REQ_QUARANTINE};
        memcpy(r.u.quarantine.file_id, id, CHP_HASH_BYTES);
        r.u.quarantine.lift = lift;
        int rc = chp_store_run(s, &r);
        if (deleted)
                *deleted = r.u.quarantine.deleted;
        return rc;
}

/* Pages through tenant's files `page` at a time; counts those seen (each must be in ids, seen
 * once) and checks the order, newest first. Returns how many, or -1 on a wrong page. */
static int page_all(struct chp_store *s, const char *tenant, size_t page,
                    uint8_t (*ids)[CHP_HASH_BYTES], int nids, const char **tenants)
{
        struct chp_file_entry *e = calloc(page, sizeof(*e));
        uint8_t cur[CHP_LIST_CURSOR_BYTES];
        bool more = true, first = true;
        int seen = 0;
        char *hit = calloc((size_t)nids, 1);
        uint64_t last_created = UINT64_MAX;
        while (more) {
                size_t n;
                if (chp_store_files_list(s, tenant, first ? NULL : cur, e, page, &n, &more, cur)) {
                        seen = -1;
                        break;
                }
                first = false;
                for (size_t i = 0; i < n; i++) {
                        int j = 0;
                        while (j < nids && memcmp(ids[j], e[i].id, CHP_HASH_BYTES) != 0)
                                j++;
                        if (j == nids || hit[j] || e[i].info.created > last_created ||
                            (tenant && strcmp(e[i].info.tenant, tenant) != 0) ||
                            strcmp(e[i].info.tenant, tenants[j]) != 0 || e[i].info.size != 1000) {
                                seen = -1;
                                goto out;
                        }
                        hit[j] = 1;
                        last_created = e[i].info.created;
                        seen++;
                }
                if (more && n != page) {
                        seen = -1;
                        break;
                }
        }
out:
        free(hit);
        free(e);
        return seen;
}

TEST(files_listed_by_tenant_newest_first_each_once)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        enum { N = 23 };
        uint8_t ids[N][CHP_HASH_BYTES];
        const char *tenants[N];
        struct chunk ch[N];
        for (int i = 0; i < N; i++) {
                tenants[i] = i % 3 == 0 ? "acme" : i % 3 == 1 ? "bolt" : "";
                ch[i] = make_chunk(1000, 9000 + (uint32_t)i);
                REQUIRE_OK(commit_as(s, &ch[i], i % 3 == 2 ? NULL : tenants[i], ids[i]));
        }
        CHECK_EQ(page_all(s, "acme", 3, ids, N, tenants), 8);
        CHECK_EQ(page_all(s, "bolt", 2, ids, N, tenants), 8);
        CHECK_EQ(page_all(s, "", 1000, ids, N, tenants), 7);
        CHECK_EQ(page_all(s, NULL, 5, ids, N, tenants), N);
        CHECK_EQ(page_all(s, NULL, N, ids, N, tenants), N); /* one full page, nothing more */
        CHECK_EQ(page_all(s, "nobody", 4, ids, N, tenants), 0);
        /* a deleted file leaves the listings; the index survives a reopen */
        CHECK_OK(delete_file(s, ids[0]));
        chp_store_close(s);
        s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        CHECK_EQ(page_all(s, "acme", 4, ids, N, tenants), 7);
        CHECK_EQ(page_all(s, NULL, 7, ids, N, tenants), N - 1);
        struct chp_file_entry e[2];
        size_t n;
        bool more;
        uint8_t cur[CHP_LIST_CURSOR_BYTES];
        CHECK_EQ(chp_store_files_list(s, NULL, NULL, e, 0, &n, &more, cur), -EINVAL);
        CHECK_EQ(chp_store_files_list(s, NULL, NULL, e, CHP_LIST_MAX + 1, &n, &more, cur), -EINVAL);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < N; i++)
                free(ch[i].data);
}

static int count_tenant(void *ctx, const char *tenant, const struct chp_tenant_usage *u)
{
        uint64_t *v = ctx;
        if (strcmp(tenant, "acme") == 0)
                v[0] = u->files, v[1] = u->stored_bytes;
        v[2]++;
        return 0;
}

TEST(uploads_listed_and_tenants_walked)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        enum { N = 9 };
        for (int i = 0; i < N; i++) {
                struct chp_upload *u = tus_upload(i % 2 ? "acme" : "bolt", (uint8_t)(0x10 + i),
                                                  5000, DAY0 + (uint64_t)(i % 4), 0);
                REQUIRE_OK(create_upload(s, u, NULL, NULL));
                free(u);
        }
        struct chp_upload *out = calloc(N, sizeof(*out));
        uint8_t cur[CHP_LIST_CURSOR_BYTES];
        size_t n, total = 0;
        bool more = true, first = true;
        uint8_t seen[N] = {0};
        uint64_t last = UINT64_MAX;
        while (more) {
                REQUIRE_OK(
                    chp_store_uploads_list(s, NULL, first ? NULL : cur, out, 2, &n, &more, cur));
                first = false;
                for (size_t i = 0; i < n; i++) {
                        int j = out[i].id[0] - 0x10;
                        CHECK(j >= 0 && j < N && !seen[j] && out[i].created <= last);
                        if (j >= 0 && j < N)
                                seen[j] = 1;
                        last = out[i].created;
                }
                total += n;
        }
        CHECK_EQ(total, N);
        REQUIRE_OK(chp_store_uploads_list(s, "acme", NULL, out, N, &n, &more, cur));
        CHECK_EQ(n, 4);
        CHECK(!more);
        for (size_t i = 0; i < n; i++)
                CHECK(strcmp(out[i].tenant, "acme") == 0);
        free(out);
        struct chunk c = make_chunk(1000, 4242);
        REQUIRE_OK(commit_as(s, &c, "acme", NULL));
        uint64_t v[3] = {0};
        CHECK_OK(chp_store_tenants_each(s, count_tenant, v));
        CHECK_EQ(v[0], 1);
        CHECK_EQ(v[1], 1000);
        CHECK_EQ(v[2], 2);
        chp_store_close(s);
        free(c.data);
}

TEST(quarantine_deletes_and_refuses)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk c = make_chunk(100000, 31337), other = make_chunk(1000, 31338);
        uint8_t id[CHP_HASH_BYTES], oid[CHP_HASH_BYTES];
        REQUIRE_OK(commit_as(s, &c, "acme", id));
        REQUIRE_OK(commit_as(s, &other, "acme", oid));
        CHECK_EQ(chp_store_quarantined(s, id, NULL), 0);
        bool deleted = false;
        CHECK_OK(quarantine(s, id, false, &deleted));
        CHECK(deleted);
        uint64_t since = 0;
        CHECK_EQ(chp_store_quarantined(s, id, &since), 1);
        CHECK(since > 0);
        CHECK_EQ(chp_store_file_get(s, id, NULL, NULL, NULL), CHP_EQUARANTINED);
        CHECK_OK(chp_store_file_get(s, oid, NULL, NULL, NULL)); /* others unaffected */
        CHECK_EQ(usage_of(s, "acme").files, 1);
        CHECK_EQ(refs(s, &c), 0);
        /* it cannot come back: neither committed nor opened as a native upload */
        CHECK_EQ(commit_as(s, &c, "acme", NULL), CHP_EQUARANTINED);
        size_t mlen;
        uint8_t *m = manifest_of(&c, 1, 131072, &mlen);
        struct chp_upload *u = tus_upload("acme", 0x77, 100000, DAY0, 0);
        u->chunk_size = 131072;
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        cr.u.upload_create.manifest = m;
        cr.u.upload_create.manifest_len = mlen;
        CHECK_EQ(chp_store_run(s, &cr), CHP_EQUARANTINED);
        /* quarantining again is harmless, and the list holds it once */
        CHECK_OK(quarantine(s, id, false, &deleted));
        CHECK(!deleted);
        CHECK_EQ(verify_problems(s), 0);
        /* lifted: it may be stored again */
        CHECK_OK(quarantine(s, id, true, NULL));
        CHECK_EQ(quarantine(s, id, true, NULL), -ENOENT);
        CHECK_EQ(chp_store_file_get(s, id, NULL, NULL, NULL), -ENOENT);
        CHECK_OK(commit_as(s, &c, "acme", NULL));
        free(m);
        free(u);
        chp_store_close(s);
        free(c.data);
        free(other.data);
}

static void note_problem(void *ctx, const char *p)
{
        (void)p;
        (*(int *)ctx)++;
}

struct scrub_thread {
        struct chp_store *s;
        struct chp_scrub p;
        int rc;
};

static void *scrub_thread_main(void *arg)
{
        struct scrub_thread *t = arg;
        t->rc = chp_store_scrub(t->s, 1, &t->p, NULL, NULL);
        return NULL;
}

TEST(live_scrub_finds_bit_rot_while_open)
{
        fresh_dir();
        struct chp_store *s = open_store(16 * 1024, (uint64_t)64 << 20);
        REQUIRE(s);
        struct chunk a = make_chunk(100000, 77), b = make_chunk(100000, 78),
                     t = make_chunk(500, 79);
        CHECK_OK(put_chunk(s, &a));
        CHECK_OK(put_chunk(s, &b));
        CHECK_OK(put_chunk(s, &t));
        struct chp_scrub p = {0};
        int problems = 0;
        CHECK_OK(chp_store_scrub(s, 0, &p, note_problem, &problems));
        CHECK_EQ(p.chunks, 3);
        CHECK_EQ(p.problems, 0);
        CHECK_EQ(p.bytes, 200500);
        CHECK_EQ(p.total, 3);
        /* one byte of b flipped under the open store: the scrub finds it without a restart */
        REQUIRE(flip_segment_byte(150000));
        struct chp_scrub q = {0};
        CHECK_OK(chp_store_scrub(s, 0, &q, note_problem, &problems));
        CHECK_EQ(q.chunks, 3);
        CHECK_EQ(q.problems, 1);
        CHECK_EQ(problems, 1);
        /* throttled to 1 byte/s, it sleeps for days after its first chunk: a stop ends it */
        struct scrub_thread st = {.s = s};
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, scrub_thread_main, &st) == 0);
        while (atomic_load(&st.p.chunks) == 0)
                usleep(1000); /* waiting for an event (the first chunk read), not for time */
        atomic_store(&st.p.stop, 1);
        pthread_join(th, NULL);
        CHECK_OK(st.rc);
        CHECK_EQ(st.p.chunks, 1);
        /* stopped before it starts: nothing read */
        struct chp_scrub r = {0};
        atomic_store(&r.stop, 1);
        CHECK_OK(chp_store_scrub(s, 0, &r, NULL, NULL));
        CHECK_EQ(r.chunks, 0);
        chp_store_close(s);
        free(a.data);
        free(b.data);
        free(t.data);
}

/* test_store list-bench DIR: times listings over 100k files (not a test: a measurement for the
 * admin face's listings, docs/operations.md). Files are committed in groups from async submits. */
static void bench_done(struct chp_store_req *req)
{
        atomic_fetch_sub((atomic_int *)req->ctx, 1);
}

static double bench_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int list_bench(const char *where)
{
        snprintf(dir, sizeof(dir), "%s", where);
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.sync = CHP_SYNC_NONE;
        o.map_size = (uint64_t)4 << 30;
        struct chp_store *s;
        if (chp_store_open(&o, &s))
                return 1;
        enum { N = 100000, GROUP = 1000 };
        static uint8_t mans[GROUP][256];
        static size_t lens[GROUP];
        static struct chp_store_req reqs[GROUP];
        double t0 = bench_now();
        struct chp_store_stats st;
        if (chp_store_stats(s, &st) || st.files < N) {
                for (int g = 0; g < N / GROUP; g++) {
                        atomic_int left = GROUP;
                        for (int i = 0; i < GROUP; i++) {
                                /* a one-chunk manifest of a distinct address: put its bytes first
                                 */
                                struct chunk c = make_chunk(64, (uint32_t)(g * GROUP + i));
                                uint8_t *m = manifest_of(&c, 1, 65536, &lens[i]);
                                memcpy(mans[i], m, lens[i]);
                                free(m);
                                if (put_chunk(s, &c))
                                        return 1;
                                free(c.data);
                                reqs[i] = (struct chp_store_req){
                                    .type = CHP_REQ_COMMIT, .done = bench_done, .ctx = &left};
                                reqs[i].u.commit.manifest = mans[i];
                                reqs[i].u.commit.manifest_len = lens[i];
                                reqs[i].u.commit.tenant = i % 10 ? "big" : "small";
                                if (chp_store_submit(s, &reqs[i]))
                                        return 1;
                        }
                        while (atomic_load(&left))
                                usleep(1000);
                }
        }
        double t1 = bench_now();
        static struct chp_file_entry e[CHP_LIST_MAX];
        size_t n;
        bool more;
        uint8_t cur[CHP_LIST_CURSOR_BYTES];
        const int reps = 1000;
        double a = bench_now();
        for (int r = 0; r < reps; r++)
                if (chp_store_files_list(s, "small", NULL, e, 100, &n, &more, cur))
                        return 1;
        double page = (bench_now() - a) / reps;
        /* what a page costs without the index: every file record read (here: the whole listing
         * walked, 1000 at a time, which reads each record once, as a scan-and-sort page would) */
        a = bench_now();
        size_t total = 0;
        bool first = true;
        more = true;
        while (more) {
                if (chp_store_files_list(s, NULL, first ? NULL : cur, e, CHP_LIST_MAX, &n, &more,
                                         cur))
                        return 1;
                first = false;
                total += n;
        }
        double scan = bench_now() - a;
        printf(
            "list-bench: %zu files (made in %.1f s); a page of 100 of tenant small (10%%) by the "
            "index: %.1f us; every record read once (a scan's floor): %.1f ms; ratio %.0f\n",
            total, t1 - t0, page * 1e6, scan * 1e3, scan / page);
        chp_store_close(s);
        return 0;
}

int main(int argc, char **argv)
{
        chp_log_set_level(CHP_LOG_ERROR);
        if (argc == 3 && strcmp(argv[1], "list-bench") == 0)
                return list_bench(argv[2]);
        if (argc == 3 && strcmp(argv[1], "make-store") == 0)
                return make_damaged(argv[2]);
        if (argc == 3 && strcmp(argv[1], "full-disk") == 0) {
                snprintf(dir, sizeof(dir), "%s", argv[2]);
                chp_log_set_level(CHP_LOG_WARN); /* show how each ENOSPC came about */
                run_full_disk();
                printf("full-disk: %s\n", harness_failed_now ? "FAILED" : "ok");
                return harness_failed_now ? 1 : 0;
        }
        int passed, failed = harness_run(&passed);
        if (dir[0]) {
                char cmd[300];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", dir);
        }
        return harness_report(passed, failed);
}
