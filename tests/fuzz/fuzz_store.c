/* Fuzz target for the store's record decoders (server/store/records.h, public) and the scrub's
 * per-record checks (server/store/verify.c, included for its static functions; the rest of the
 * store is linked from chapar_store): what the relay reads back from LMDB is outside input too
 * (a damaged or hostile index), so every record it decodes is fuzzed, directly and through the
 * public read calls.
 *
 * The input is a flags byte and then records, each [db u8][klen u8][vlen u16 le][key][value],
 * db taken modulo the 11 databases (chunks refs files uploads upchunks expiry segments segidx
 * meta pending tails; with flags bit 4, the meta slot is filemeta instead, so that the corpus
 * written before filemeta existed keeps its meaning); an incomplete record ends the input.
 * segments and segidx are the segments backend's databases, reached by their names. For each
 * input:
 *   1. every value is decoded on an exact-size heap copy (so ASan sees a read past its end) by
 *      its database's decoder (chunk, refs, file, upload, segment records) and the decoded
 *      fields are checked against the bytes: lengths add up to the value's size and every
 *      pointer stays inside it;
 *   2. the databases of one long-lived store are emptied and the records written in, raw;
 *   3. every read call is made for every key (locate, read, has, refcount, file_get, file_meta,
 *      upload_get/manifest/progress/tail/chunks, pending, stats) and must answer 0 or a code;
 *      the scrub's per-record checks run over exact-size copies of every key and value (the
 *      backend's segment records and segment index through its verify_begin/verify_end, over
 *      the index, around the chunk checks), then chp_store_verify over the whole index;
 *   4. with flags bits 2 and 3 both set, the store is closed and opened again over the records
 *      (the schema check, the tenants' usage counted from the records, and the segments backend
 *      cutting and removing segment files), read and verified, then rebuilt from scratch;
 *      otherwise, with flags bit 0, a GC request at time
 *      now (bit 1: far in the future, else 1000) expires and deletes what the records say, and
 *      the store is verified again, then audited (chp_store_audit) and verified again.
 * The store holds one segment, written once at start-up (two 64 KiB chunks), so segment chunk
 * records can point at real bytes. It stays the writer's open segment, which GC never drops.
 *
 * Linked with libFuzzer, or with replay.c to run the committed corpus under ctest. Built with
 * -DCHP_FUZZ_STORE_GEN (and no fuzzer) it is the program that writes the seed corpus: a real
 * store's index after a few uploads, commits and tails, dumped one database at a time:
 *   cc -DCHP_FUZZ_STORE_GEN -D_GNU_SOURCE -Icommon -Iserver -Iserver/store \
 *      tests/fuzz/fuzz_store.c build/lib/libchapar_store.a build/lib/libchapar_common.a \
 *      -llmdb -lsodium -lcrypto -lxxhash -lpthread -o gen && ./gen tests/fuzz/corpus/store
 *
 * verify.c defines chp_store_verify, so the archive's verify.o is never linked in beside it.
 */
#include "../../server/store/verify.c"

#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "bytes.h"
#include "hash.h"
#include "log.h"
#include "manifest.h"
#include "records.h"
#include "store.h"
#include "store_int.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input's database slots (a record's db byte modulo NDBS), as the corpus has always used
 * them; DB_FILEMETA is no slot of its own: the meta slot under flags bit 4 (FLAG_FILEMETA). */
#define NDBS 11
enum {
        DB_CHUNKS,
        DB_REFS,
        DB_FILES,
        DB_UPLOADS,
        DB_UPCHUNKS,
        DB_EXPIRY,
        DB_SEGMENTS,
        DB_SEGIDX,
        DB_META,
        DB_PENDING,
        DB_TAILS,
        DB_FILEMETA
};
#define NDBS_ALL      12
#define FLAG_FILEMETA 16

static unsigned slot_of(uint8_t flags, uint8_t db)
{
        unsigned d = db % NDBS;
        return d == DB_META && (flags & FLAG_FILEMETA) ? DB_FILEMETA : d;
}

/* The segments backend's databases are its own (segments_int.h); the store's environment has
 * them open under these names, and opening an open database gives back its handle. */
static MDB_dbi backend_dbi(MDB_txn *txn, const char *name)
{
        MDB_dbi dbi;
        EXPECT(mdb_dbi_open(txn, name, 0, &dbi) == 0);
        return dbi;
}

static MDB_dbi dbi_of(const struct chp_store *s, MDB_txn *txn, unsigned db)
{
        switch (db) {
        case DB_CHUNKS:
                return s->db_chunks;
        case DB_REFS:
                return s->db_refs;
        case DB_FILES:
                return s->db_files;
        case DB_UPLOADS:
                return s->db_uploads;
        case DB_UPCHUNKS:
                return s->db_upchunks;
        case DB_EXPIRY:
                return s->db_expiry;
        case DB_SEGMENTS:
                return backend_dbi(txn, "segments");
        case DB_SEGIDX:
                return backend_dbi(txn, "segidx");
        case DB_META:
                return s->db_meta;
        case DB_PENDING:
                return s->db_pending;
        case DB_TAILS:
                return s->db_tails;
        default:
                return s->db_filemeta;
        }
}

/* ---- the long-lived store ---------------------------------------------------------------- */

static struct chp_store *store;
static char store_dir[256];
static uint8_t *chunk_buf; /* CHP_CHUNK_MAX bytes */

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
                x = x * 1103515245u + 12345u;
                p[i] = (uint8_t)(x >> 16);
        }
}

/* The same two segment chunks in every store this file opens, so seeds point at real bytes. */
static void put_segment_chunks(struct chp_store *s)
{
        for (uint32_t i = 0; i < 2; i++) {
                fill(chunk_buf, CHP_CHUNK_MIN, 7 + i);
                uint8_t addr[CHP_HASH_BYTES];
                EXPECT(chp_sha256(chunk_buf, CHP_CHUNK_MIN, addr) == 0);
                EXPECT(chp_store_put(s, addr, chunk_buf, CHP_CHUNK_MIN) == 0);
        }
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static void store_cleanup(void)
{
        chp_store_close(store);
        store = NULL;
        if (store_dir[0])
                nftw(store_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(chunk_buf);
}

static int try_open_store(const char *dir, struct chp_store **s)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.sync = CHP_SYNC_NONE;
        o.inline_max = 1024;
        o.map_size = 64u << 20;
        o.segment_size = CHP_CHUNK_MAX;
        o.compact_ratio = 0.5;
        return chp_store_open(&o, s);
}

static struct chp_store *open_store(const char *dir)
{
        struct chp_store *s;
        EXPECT(try_open_store(dir, &s) == 0);
        /* the backend this file knows the databases of */
        EXPECT(strcmp(s->backend->ops->name, "segments") == 0);
        return s;
}

static void init(void)
{
        const char *tmp = getenv("TMPDIR");
        snprintf(store_dir, sizeof(store_dir), "%s/fuzz_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        EXPECT(mkdtemp(store_dir));
        chunk_buf = malloc(CHP_CHUNK_MAX);
        EXPECT(chunk_buf);
        chp_log_set_level(CHP_LOG_ERROR);
        store = open_store(store_dir);
        put_segment_chunks(store);
        atexit(store_cleanup);
}

static void read_all(uint8_t flags, const uint8_t *p, size_t n);
static void verify_all(void);

/* Opening a store whose index holds the records: the schema check and load_segments (which
 * cuts segment files to their recorded totals and removes files it does not know). The data
 * directory is then rebuilt from scratch, so the next input finds the same store. */
static void reopen(uint8_t flags, const uint8_t *p, size_t n)
{
        /* as if written before tenants' usage was kept: the open counts it from the records */
        MDB_txn *txn;
        EXPECT(mdb_txn_begin(store->env, NULL, 0, &txn) == 0);
        EXPECT(mdb_drop(txn, store->db_tenants, 1) == 0);
        EXPECT(mdb_txn_commit(txn) == 0);
        chp_store_close(store);
        store = NULL;
        struct chp_store *s;
        int rc = try_open_store(store_dir, &s);
        EXPECT(rc == 0 || rc == CHP_EVERSION || rc == CHP_ECORRUPT);
        if (rc == 0) {
                store = s;
                read_all(flags, p, n);
                verify_all();
                chp_store_close(store);
                store = NULL;
        }
        nftw(store_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        EXPECT(mkdir(store_dir, 0700) == 0);
        store = open_store(store_dir);
        put_segment_chunks(store);
}

/* ---- step 1: the decoders on exact-size copies -------------------------------------------- */

static bool inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
        const uint8_t *q = p;
        return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

static void decode_value(unsigned db, const uint8_t *key, size_t klen, const uint8_t *v,
                         size_t vlen)
{
        switch (db) {
        case DB_CHUNKS: {
                struct chp_rec_chunk c;
                ssize_t n = chp_rec_chunk_parse(v, vlen, &c);
                if (n < 0) {
                        EXPECT(n == -EBADMSG);
                        break;
                }
                EXPECT((size_t)n == vlen);
                EXPECT(c.kind == CHP_REC_CHUNK_SEG || c.kind == CHP_REC_CHUNK_INLINE);
                if (c.kind == CHP_REC_CHUNK_INLINE)
                        EXPECT(c.inline_data == v + CHP_REC_CHUNK_BYTES &&
                               vlen == CHP_REC_CHUNK_BYTES + (size_t)c.len);
                else
                        EXPECT(!c.inline_data && vlen == CHP_REC_CHUNK_BYTES);
                break;
        }
        case DB_REFS: {
                uint64_t count;
                ssize_t n = chp_rec_refs_parse(v, vlen, &count);
                EXPECT(n == -EBADMSG || (n == CHP_REC_REFS_BYTES && vlen == CHP_REC_REFS_BYTES));
                break;
        }
        case DB_FILES: {
                struct chp_rec_file f;
                ssize_t r = chp_rec_file_parse(v, vlen, &f);
                if (r < 0) {
                        EXPECT(r == -EBADMSG);
                        break;
                }
                EXPECT((size_t)r == vlen);
                EXPECT(f.tenant_len <= CHP_TENANT_MAX);
                EXPECT(vlen == CHP_REC_FILE_BYTES + (size_t)f.tenant_len + f.manifest_len);
                EXPECT(inside(f.tenant, f.tenant_len, v, vlen));
                EXPECT(inside(f.manifest, f.manifest_len, v, vlen));
                struct chp_manifest m;
                ssize_t n = chp_manifest_decode(f.manifest, f.manifest_len, &m);
                EXPECT(n == -EBADMSG || (n >= 0 && (size_t)n == f.manifest_len));
                break;
        }
        case DB_UPLOADS: {
                struct chp_rec_upload r;
                ssize_t n = chp_rec_upload_parse(v, vlen, &r);
                if (n < 0) {
                        EXPECT(n == -EBADMSG);
                        break;
                }
                EXPECT((size_t)n == vlen);
                EXPECT(r.tenant_len <= CHP_TENANT_MAX && r.meta_len <= CHP_UPLOAD_META_MAX);
                EXPECT(vlen ==
                       CHP_REC_UPLOAD_BYTES + r.tenant_len + r.meta_len + (size_t)r.manifest_len);
                EXPECT(inside(r.file_id, CHP_HASH_BYTES, v, vlen));
                EXPECT(inside(r.tenant, r.tenant_len, v, vlen));
                EXPECT(inside(r.meta, r.meta_len, v, vlen));
                EXPECT(inside(r.manifest, r.manifest_len, v, vlen));
                EXPECT((r.flags & CHP_REC_UPLOAD_HAS_MANIFEST) || r.manifest_len == 0);
                if (klen != CHP_UPLOAD_ID_BYTES)
                        break;
                struct chp_upload *u = malloc(sizeof(*u));
                EXPECT(u);
                chp_rec_upload_to_public(key, &r, u);
                EXPECT(strlen(u->tenant) <= r.tenant_len && u->meta_len == r.meta_len);
                EXPECT(u->has_manifest == !!(r.flags & CHP_REC_UPLOAD_HAS_MANIFEST));
                free(u);
                break;
        }
        case DB_SEGMENTS: {
                struct chp_rec_seg g;
                ssize_t n = chp_rec_seg_parse(v, vlen, &g);
                EXPECT(n == -EBADMSG || (n == CHP_REC_SEG_BYTES && vlen == CHP_REC_SEG_BYTES));
                break;
        }
        }
}

/* ---- step 2: the records into the index --------------------------------------------------- */

static void write_records(uint8_t flags, const uint8_t *p, size_t n)
{
        MDB_txn *txn;
        EXPECT(mdb_txn_begin(store->env, NULL, 0, &txn) == 0);
        for (unsigned d = 0; d < NDBS_ALL; d++)
                EXPECT(mdb_drop(txn, dbi_of(store, txn, d), 0) == 0);
        /* what the store derives itself (usage, the audit's orphans) starts empty too */
        EXPECT(mdb_drop(txn, store->db_tenants, 0) == 0);
        EXPECT(mdb_drop(txn, store->db_orphans, 0) == 0);
        while (n >= 4) {
                size_t klen = p[1], vlen = (size_t)p[2] | (size_t)p[3] << 8;
                if (n - 4 < klen + vlen)
                        break;
                MDB_val k = val(p + 4, klen), v = val(p + 4 + klen, vlen);
                /* refused keys (empty, or in a database that wants another size) are skipped */
                (void)mdb_put(txn, dbi_of(store, txn, slot_of(flags, p[0])), &k, &v, 0);
                p += 4 + klen + vlen;
                n -= 4 + klen + vlen;
        }
        EXPECT(mdb_txn_commit(txn) == 0);
}

/* ---- step 3: the read calls ---------------------------------------------------------------- */

static bool is_code(int64_t rc)
{
        if (rc == 0 || rc == -ENOENT || rc == CHP_ECORRUPT || rc == -ENOBUFS || rc == -ENOMEM)
                return true;
        fprintf(stderr, "fuzz_store: unexpected code %lld (%s)\n", (long long)rc,
                chp_strerror((int)rc));
        return false;
}

static void read_chunk(const uint8_t addr[CHP_HASH_BYTES])
{
        struct chp_chunk_loc loc;
        int rc = chp_store_locate(store, addr, &loc);
        EXPECT(is_code(rc));
        if (rc == 0) {
                EXPECT(loc.is_inline ? loc.fd == -1 : loc.fd >= 0);
                chp_store_loc_release(store, &loc);
        }
        ssize_t n = chp_store_read(store, addr, chunk_buf, CHP_CHUNK_MAX);
        EXPECT(is_code(n < 0 ? n : 0) && n <= (ssize_t)CHP_CHUNK_MAX);
        uint8_t small[16];
        n = chp_store_read(store, addr, small, sizeof(small));
        EXPECT(is_code(n < 0 ? n : 0) && n <= (ssize_t)sizeof(small));
        uint8_t present = 7;
        EXPECT(chp_store_has(store, addr, 1, &present) == 0 && present <= 1);
        uint64_t count;
        EXPECT(is_code(chp_store_refcount(store, addr, &count)));
}

static void read_file(const uint8_t id[CHP_HASH_BYTES])
{
        uint8_t meta[CHP_UPLOAD_META_MAX];
        ssize_t m = chp_store_file_meta(store, id, meta, sizeof(meta));
        EXPECT(is_code(m < 0 ? m : 0) && m <= (ssize_t)sizeof(meta));
        m = chp_store_file_meta(store, id, meta, 3);
        EXPECT(is_code(m < 0 ? m : 0) && m <= 3);
        uint8_t *man = NULL;
        size_t len = 0;
        struct chp_file_info info;
        int rc = chp_store_file_get(store, id, &man, &len, &info);
        EXPECT(is_code(rc));
        if (rc == 0)
                EXPECT(man && strlen(info.tenant) <= CHP_TENANT_MAX);
        else
                EXPECT(!man && len == 0);
        free(man);
}

static void read_upload(const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        struct chp_upload *u = malloc(sizeof(*u));
        EXPECT(u);
        int rc = chp_store_upload_get(store, id, u);
        EXPECT(is_code(rc));
        if (rc == 0)
                EXPECT(strlen(u->tenant) <= CHP_TENANT_MAX && u->meta_len <= CHP_UPLOAD_META_MAX);
        free(u);
        uint8_t *man = NULL;
        size_t len = 0;
        rc = chp_store_upload_manifest(store, id, &man, &len);
        EXPECT(is_code(rc) && (rc == 0 || (!man && len == 0)));
        free(man);
        uint32_t chunks;
        size_t tail;
        EXPECT(is_code(chp_store_upload_progress(store, id, &chunks, &tail)));
        uint8_t tb[64];
        ssize_t n = chp_store_upload_tail(store, id, tb, sizeof(tb));
        EXPECT(is_code(n < 0 ? n : 0) && n <= (ssize_t)sizeof(tb));
        n = chp_store_upload_tail(store, id, chunk_buf, CHP_CHUNK_MAX);
        EXPECT(is_code(n < 0 ? n : 0) && n <= (ssize_t)CHP_CHUNK_MAX);
        uint8_t have[8], addrs[8 * CHP_HASH_BYTES];
        rc = chp_store_upload_chunks(store, id, have, addrs, 8);
        EXPECT(is_code(rc));
        for (int i = 0; rc == 0 && i < 8; i++)
                EXPECT(have[i] <= 1);
}

static void read_all(uint8_t flags, const uint8_t *p, size_t n)
{
        while (n >= 4) {
                size_t klen = p[1], vlen = (size_t)p[2] | (size_t)p[3] << 8;
                if (n - 4 < klen + vlen)
                        break;
                unsigned db = slot_of(flags, p[0]);
                uint8_t key[CHP_HASH_BYTES] = {0};
                memcpy(key, p + 4, klen < sizeof(key) ? klen : sizeof(key));
                switch (db) {
                case DB_CHUNKS:
                case DB_REFS:
                        read_chunk(key);
                        break;
                case DB_FILES:
                case DB_FILEMETA:
                        read_file(key);
                        break;
                case DB_UPLOADS:
                case DB_UPCHUNKS:
                case DB_TAILS:
                        read_upload(key);
                        break;
                case DB_PENDING: {
                        uint8_t up[CHP_UPLOAD_ID_BYTES];
                        int rc = chp_store_pending(store, key, up);
                        EXPECT(is_code(rc));
                        if (rc == 0)
                                read_upload(up);
                        break;
                }
                }
                p += 4 + klen + vlen;
                n -= 4 + klen + vlen;
        }
        struct chp_store_stats st;
        EXPECT(chp_store_stats(store, &st) == 0);
}

/* The scrub's per-record checks, each on exact-size copies of its key and value, in
 * chp_store_verify's order: the backend's own records first (its verify_begin reads the segment
 * records from the index; chunk checks look their places up in what it found), the chunk checks,
 * the backend's verify_end (the segment index and the live-byte accounting), then the rest. */
static void scrub_copies(uint8_t flags, const uint8_t *p, size_t n)
{
        static const scan_fn checks[NDBS_ALL] = {
            [DB_CHUNKS] = check_chunk,     [DB_FILES] = check_file,    [DB_UPLOADS] = check_upload,
            [DB_UPCHUNKS] = check_upchunk, [DB_EXPIRY] = check_expiry, [DB_PENDING] = check_pending,
            [DB_TAILS] = check_tail,
        };
        struct verify v = {.s = store};
        struct chp_backend *b = store->backend;
        v.bv = (struct chp_backend_verify){.problem = backend_problem, .ctx = &v};
        v.buf = chunk_buf;
        EXPECT(store_read_begin(store, &v.txn) == 0);
        int rc = b->ops->verify_begin(b, v.txn, &v.bv);
        EXPECT(rc == 0 || rc == -ENOMEM);
        for (int pass = 0; pass < 2; pass++) {
                const uint8_t *q = p;
                size_t left = n;
                while (left >= 4) {
                        size_t klen = q[1], vlen = (size_t)q[2] | (size_t)q[3] << 8;
                        if (left - 4 < klen + vlen)
                                break;
                        unsigned db = slot_of(flags, q[0]);
                        if (checks[db] && (db == DB_CHUNKS) == (pass == 0)) {
                                uint8_t *k = malloc(klen ? klen : 1), *d = malloc(vlen ? vlen : 1);
                                EXPECT(k && d);
                                memcpy(k, q + 4, klen);
                                memcpy(d, q + 4 + klen, vlen);
                                MDB_val mk = val(k, klen), md = val(d, vlen);
                                rc = checks[db](&v, &mk, &md);
                                EXPECT(rc == 0 || rc == -ENOMEM);
                                free(k);
                                free(d);
                        }
                        q += 4 + klen + vlen;
                        left -= 4 + klen + vlen;
                }
                if (pass == 0) {
                        rc = b->ops->verify_end(b, &v.bv, true);
                        EXPECT(rc == 0 || rc == -ENOMEM);
                }
        }
        mdb_txn_abort(v.txn);
        store_addrs_free(&v.refs);
}

/* After a GC that finished, the expiry index starts with an entry of this store's shape that is
 * due after now (or is empty): GC works in key order and stops there, so a malformed entry
 * first would stop expiry for ever. Entries past the first are reached as time passes. */
static void expect_expired(uint64_t now)
{
        MDB_txn *txn;
        MDB_cursor *cur;
        EXPECT(store_read_begin(store, &txn) == 0);
        EXPECT(mdb_cursor_open(txn, store->db_expiry, &cur) == 0);
        MDB_val k, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0) {
                EXPECT(k.mv_size >= 9 && k.mv_size <= CHP_REC_EXPIRY_KEY_MAX);
                EXPECT(chp_get_be64(k.mv_data) > now);
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
}

static void verify_all(void)
{
        struct chp_verify_stats st;
        int rc = chp_store_verify(store, NULL, NULL, &st);
        EXPECT(rc == 0 || rc == -ENOMEM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!store)
                init();
        if (size < 1)
                return 0;
        uint8_t flags = data[0];
        const uint8_t *p = data + 1;
        size_t n = size - 1;

        for (const uint8_t *q = p; (size_t)(q - p) + 4 <= n;) {
                size_t left = n - (size_t)(q - p);
                size_t klen = q[1], vlen = (size_t)q[2] | (size_t)q[3] << 8;
                if (left - 4 < klen + vlen)
                        break;
                uint8_t *k = malloc(klen ? klen : 1), *d = malloc(vlen ? vlen : 1);
                EXPECT(k && d);
                memcpy(k, q + 4, klen);
                memcpy(d, q + 4 + klen, vlen);
                decode_value(slot_of(flags, q[0]), k, klen, d, vlen);
                free(k);
                free(d);
                q += 4 + klen + vlen;
        }

        write_records(flags, p, n);
        read_all(flags, p, n);
        scrub_copies(flags, p, n);
        verify_all();
        if ((flags & 12) == 12) {
                reopen(flags, p, n);
        } else if (flags & 1) {
                struct chp_gc_stats st;
                uint64_t now = flags & 2 ? UINT64_MAX / 2 : 1000;
                int rc = chp_store_gc(store, now, &st);
                EXPECT(rc == 0 || rc == CHP_ECORRUPT || rc == -ENOENT);
                if (rc == 0 && !st.more)
                        expect_expired(now);
                verify_all();
                /* the audit reads every manifest and upload entry, and repairs what it finds */
                struct chp_audit_stats as;
                rc = chp_store_audit(store, now, &as);
                EXPECT(rc == 0 || rc == CHP_ECORRUPT || rc == -ENOENT);
                verify_all();
        }
        return 0;
}

#ifdef CHP_FUZZ_STORE_GEN
/* ---- the seed corpus: a real store's index ------------------------------------------------ */

static uint8_t out_buf[1 << 20];
static size_t out_len;

static void dump_db(struct chp_store *s, unsigned db)
{
        MDB_txn *txn;
        MDB_cursor *cur;
        EXPECT(store_read_begin(s, &txn) == 0);
        EXPECT(mdb_cursor_open(txn, dbi_of(s, txn, db), &cur) == 0);
        MDB_val k, v;
        int op = MDB_FIRST;
        while (mdb_cursor_get(cur, &k, &v, op) == 0) {
                op = MDB_NEXT;
                EXPECT(k.mv_size <= 255 && v.mv_size <= 65535);
                EXPECT(out_len + 4 + k.mv_size + v.mv_size <= sizeof(out_buf));
                uint8_t *w = out_buf + out_len;
                w[0] = (uint8_t)(db == DB_FILEMETA ? DB_META : db); /* under FLAG_FILEMETA */
                w[1] = (uint8_t)k.mv_size;
                w[2] = (uint8_t)v.mv_size;
                w[3] = (uint8_t)(v.mv_size >> 8);
                memcpy(w + 4, k.mv_data, k.mv_size);
                memcpy(w + 4 + k.mv_size, v.mv_data, v.mv_size);
                out_len += 4 + k.mv_size + v.mv_size;
        }
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
}

static void save(const char *dir, const char *name, uint8_t flags, const unsigned *dbs, size_t ndbs,
                 struct chp_store *s)
{
        out_buf[0] = flags;
        out_len = 1;
        for (size_t i = 0; i < ndbs; i++)
                dump_db(s, dbs[i]);
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        EXPECT(f && fwrite(out_buf, 1, out_len, f) == out_len && fclose(f) == 0);
        printf("%s: %zu bytes\n", path, out_len);
}

static void run(struct chp_store *s, struct chp_store_req *r)
{
        EXPECT(chp_store_run(s, r) == 0);
}

int main(int argc, char **argv)
{
        if (argc != 2) {
                fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
                return 2;
        }
        char dir[] = "/tmp/fuzz_store_gen.XXXXXX";
        EXPECT(mkdtemp(dir));
        strncpy(store_dir, dir, sizeof(store_dir) - 1);
        chunk_buf = malloc(CHP_CHUNK_MAX);
        EXPECT(chunk_buf);
        struct chp_store *s = open_store(dir);
        store = s;
        atexit(store_cleanup);
        put_segment_chunks(s);

        /* a file of two chunks: the first in the segment, the second (100 bytes) inline */
        uint8_t addrs[2 * CHP_HASH_BYTES], small[100];
        fill(chunk_buf, CHP_CHUNK_MIN, 7);
        EXPECT(chp_sha256(chunk_buf, CHP_CHUNK_MIN, addrs) == 0);
        fill(small, sizeof(small), 11);
        EXPECT(chp_sha256(small, sizeof(small), addrs + CHP_HASH_BYTES) == 0);
        EXPECT(chp_store_put(s, addrs + CHP_HASH_BYTES, small, sizeof(small)) == 0);
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = CHP_CHUNK_MIN,
                                 .total_size = CHP_CHUNK_MIN + sizeof(small),
                                 .chunk_count = 2,
                                 .meta_len = 4,
                                 .addrs = addrs,
                                 .meta = (const uint8_t *)"meta"};
        uint8_t enc[512];
        ssize_t elen = chp_manifest_encode(&m, enc, sizeof(enc));
        EXPECT(elen > 0);
        struct chp_store_req c = {.type = CHP_REQ_COMMIT};
        c.u.commit.manifest = enc;
        c.u.commit.manifest_len = (size_t)elen;
        c.u.commit.tenant = "acme";
        c.u.commit.expires = 5000;
        run(s, &c);

        /* a tus upload with one chunk attached and a kept tail */
        struct chp_upload *u = calloc(1, sizeof(*u));
        EXPECT(u);
        memset(u->id, 0x11, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "acme");
        u->chunk_size = CHP_CHUNK_MIN;
        u->declared_size = 3 * CHP_CHUNK_MIN;
        u->expires = 900;
        u->meta_len = 14;
        memcpy(u->meta, "filename YS50eA", 14);
        struct chp_store_req cr = {.type = CHP_REQ_UPLOAD_CREATE};
        cr.u.upload_create.upload = u;
        run(s, &cr);
        struct chp_store_req p = {.type = CHP_REQ_PUT};
        memcpy(p.u.put.addr, addrs, CHP_HASH_BYTES);
        p.u.put.has_upload = true;
        memcpy(p.u.put.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        p.u.put.index = 0;
        run(s, &p);
        struct chp_store_req t = {.type = CHP_REQ_TAIL_APPEND};
        memcpy(t.u.tail_append.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        t.u.tail_append.data = small;
        t.u.tail_append.len = 40;
        run(s, &t);
        t.u.tail_append.data = small + 40;
        t.u.tail_append.len = 20;
        run(s, &t);

        /* a native upload of a manifest naming one stored and one missing chunk (pending) */
        uint8_t addrs2[2 * CHP_HASH_BYTES];
        memcpy(addrs2, addrs, CHP_HASH_BYTES);
        memset(addrs2 + CHP_HASH_BYTES, 0x5a, CHP_HASH_BYTES);
        struct chp_manifest m2 = m;
        m2.addrs = addrs2;
        m2.meta_len = 0;
        m2.meta = NULL;
        uint8_t enc2[512];
        ssize_t elen2 = chp_manifest_encode(&m2, enc2, sizeof(enc2));
        EXPECT(elen2 > 0);
        memset(u, 0, sizeof(*u));
        memset(u->id, 0x22, CHP_UPLOAD_ID_BYTES);
        u->chunk_size = CHP_CHUNK_MIN;
        u->expires = 800;
        u->file_expires = 7000;
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        open.u.upload_create.upload = u;
        open.u.upload_create.manifest = enc2;
        open.u.upload_create.manifest_len = (size_t)elen2;
        run(s, &open);
        free(u);

        const char *out = argv[1];
        const unsigned all[NDBS] = {DB_SEGMENTS, DB_CHUNKS,  DB_REFS,     DB_SEGIDX,
                                    DB_FILES,    DB_UPLOADS, DB_UPCHUNKS, DB_EXPIRY,
                                    DB_PENDING,  DB_TAILS,   DB_META};
        save(out, "valid-whole-index", 0, all, NDBS, s);
        save(out, "valid-whole-index-gc-now", 1, all, NDBS, s);
        save(out, "valid-whole-index-gc-later", 3, all, NDBS, s);
        save(out, "valid-whole-index-reopen", 12, all, NDBS, s);
        const unsigned chunks[] = {DB_SEGMENTS, DB_CHUNKS, DB_SEGIDX, DB_REFS};
        save(out, "valid-chunks", 0, chunks, 4, s);
        const unsigned files[] = {DB_FILES, DB_EXPIRY};
        save(out, "valid-files", 0, files, 2, s);
        const unsigned uploads[] = {DB_UPLOADS, DB_UPCHUNKS, DB_TAILS, DB_PENDING};
        save(out, "valid-uploads", 0, uploads, 4, s);

        /* last, so that the seeds above stay as they were: a tus upload with metadata committed
         * as the first file (kept, complete), which gives that file its filemeta entry */
        u = calloc(1, sizeof(*u));
        EXPECT(u);
        memset(u->id, 0x33, CHP_UPLOAD_ID_BYTES);
        snprintf(u->tenant, sizeof(u->tenant), "acme");
        u->chunk_size = CHP_CHUNK_MIN;
        u->declared_size = m.total_size;
        u->expires = 950;
        u->meta_len = 14;
        memcpy(u->meta, "filename YS50eA", 14);
        struct chp_store_req cr3 = {.type = CHP_REQ_UPLOAD_CREATE};
        cr3.u.upload_create.upload = u;
        run(s, &cr3);
        struct chp_store_req c3 = c;
        c3.u.commit.has_upload = true;
        c3.u.commit.keep_upload = true;
        memcpy(c3.u.commit.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        run(s, &c3);
        free(u);
        const unsigned filemeta[] = {DB_FILES, DB_FILEMETA, DB_UPLOADS, DB_EXPIRY};
        save(out, "valid-filemeta", FLAG_FILEMETA, filemeta, 4, s);
        return 0;
}
#endif
