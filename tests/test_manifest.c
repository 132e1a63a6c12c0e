/* The manifest encoding: a hand-written golden encoding and its SHA-256, round trips of every
 * shape, encode's refusals, decode's refusal of every truncation, trailing byte, corrupted header
 * field and size that would overflow, decoded pointers inside the input, chunk lengths, file ids.
 * Every buffer handed to decode is malloc'd at its exact size so ASan catches a read past len. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "hash.h"
#include "manifest.h"

/* Field offsets, written out again here so the test checks the layout of manifest.h. */
enum {
        O_VERSION = 4,
        O_FLAGS = 5,
        O_RESERVED = 6,
        O_CHUNK_SIZE = 8,
        O_TOTAL = 12,
        O_COUNT = 20,
        O_META_LEN = 24
};

/* A raw encoding with arbitrary header values and a body of body_len pattern bytes; lets a test
 * break one rule while keeping every other one (including the length). Caller frees. */
struct raw {
        uint8_t version, flags;
        uint16_t reserved;
        uint32_t chunk_size;
        uint64_t total_size;
        uint32_t chunk_count, meta_len;
};

static uint8_t *raw_encode(const struct raw *r, size_t body_len)
{
        uint8_t *p = tu_pattern(CHP_MANIFEST_HEADER + body_len, 7);
        if (!p)
                return NULL;
        memcpy(p, "CHPM", 4);
        p[O_VERSION] = r->version;
        p[O_FLAGS] = r->flags;
        p[O_RESERVED] = (uint8_t)r->reserved;
        p[O_RESERVED + 1] = (uint8_t)(r->reserved >> 8);
        tu_put32(p + O_CHUNK_SIZE, r->chunk_size);
        tu_put64(p + O_TOTAL, r->total_size);
        tu_put32(p + O_COUNT, r->chunk_count);
        tu_put32(p + O_META_LEN, r->meta_len);
        return p;
}

/* The body length a raw header claims, or SIZE_MAX when it would not fit in memory for a test. */
static size_t raw_body(const struct raw *r)
{
        uint64_t n = (uint64_t)r->chunk_count * CHP_HASH_BYTES + r->meta_len;
        return n > (64u << 20) ? SIZE_MAX : (size_t)n;
}

/* A valid raw header for total bytes at chunk_size with meta_len bytes of metadata. */
static struct raw raw_valid(uint32_t chunk_size, uint64_t total, uint32_t meta_len)
{
        return (struct raw){
            .version = 1,
            .chunk_size = chunk_size,
            .total_size = total,
            .chunk_count = (uint32_t)chp_manifest_chunk_count(total, chunk_size),
            .meta_len = meta_len,
        };
}

/* Decodes r (with the body length its header claims) and returns the result. */
static ssize_t raw_decode(const struct raw *r)
{
        size_t body = raw_body(r);
        if (body == SIZE_MAX)
                return -E2BIG;
        uint8_t *p = raw_encode(r, body);
        if (!p)
                return -ENOMEM;
        struct chp_manifest m;
        ssize_t rc = chp_manifest_decode(p, CHP_MANIFEST_HEADER + body, &m);
        free(p);
        return rc;
}

/* Decodes r with exactly len bytes (header plus pattern bytes) and returns the result. */
static ssize_t raw_decode_len(const struct raw *r, size_t len)
{
        uint8_t *p = raw_encode(r, len - CHP_MANIFEST_HEADER);
        if (!p)
                return -ENOMEM;
        struct chp_manifest m;
        ssize_t rc = chp_manifest_decode(p, len, &m);
        free(p);
        return rc;
}

static int inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
        if (n == 0)
                return p == NULL || (p >= buf && p <= buf + len);
        return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

/* Encodes m, checks the bytes decode back to m with pointers inside the buffer, and that
 * re-encoding gives the same bytes. Returns the number of failed checks. */
static int round_trip(const struct chp_manifest *m)
{
        int bad = 0;
#define RT(cond)                                                                                   \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr,                                                            \
                                "  round_trip(chunk_size %" PRIu32 " total %" PRIu64               \
                                " meta %" PRIu32 "): %s failed\n",                                 \
                                m->chunk_size, m->total_size, m->meta_len, #cond);                 \
                        bad++;                                                                     \
                }                                                                                  \
        } while (0)
        RT(chp_manifest_check(m) == 0);
        size_t n = chp_manifest_encoded_size(m);
        RT(n == CHP_MANIFEST_HEADER + (size_t)m->chunk_count * CHP_HASH_BYTES + m->meta_len);
        uint8_t *buf = malloc(n), *again = malloc(n);
        if (!buf || !again) {
                free(buf);
                free(again);
                return bad + 1;
        }
        RT(chp_manifest_encode(m, buf, n) == (ssize_t)n);
        RT(memcmp(buf, "CHPM\x01\x00\x00\x00", 8) == 0);

        struct chp_manifest d;
        RT(chp_manifest_decode(buf, n, &d) == (ssize_t)n);
        RT(d.version == CHP_MANIFEST_VERSION);
        RT(d.chunk_size == m->chunk_size);
        RT(d.total_size == m->total_size);
        RT(d.chunk_count == m->chunk_count);
        RT(d.meta_len == m->meta_len);
        size_t addrs_len = (size_t)m->chunk_count * CHP_HASH_BYTES;
        RT(inside(d.addrs, addrs_len, buf, n));
        RT(inside(d.meta, d.meta_len, buf, n));
        if (addrs_len && inside(d.addrs, addrs_len, buf, n)) {
                RT(d.addrs == buf + CHP_MANIFEST_HEADER);
                RT(memcmp(d.addrs, m->addrs, addrs_len) == 0);
        }
        if (m->meta_len && inside(d.meta, d.meta_len, buf, n)) {
                RT(d.meta == buf + CHP_MANIFEST_HEADER + addrs_len);
                RT(memcmp(d.meta, m->meta, m->meta_len) == 0);
        }
        uint64_t sum = 0;
        for (uint32_t i = 0; i < d.chunk_count; i++) {
                uint32_t cl = chp_manifest_chunk_len(&d, i);
                RT(cl >= 1 && cl <= d.chunk_size);
                sum += cl;
        }
        RT(sum == d.total_size);
        RT(chp_manifest_encode(&d, again, n) == (ssize_t)n);
        RT(memcmp(buf, again, n) == 0);
        free(buf);
        free(again);
#undef RT
        return bad;
}

/* A valid manifest for total bytes at chunk_size; addrs and meta are pattern bytes, freed with
 * free_manifest. */
static struct chp_manifest make(uint32_t chunk_size, uint64_t total, uint32_t meta_len)
{
        uint32_t count = (uint32_t)chp_manifest_chunk_count(total, chunk_size);
        return (struct chp_manifest){
            .version = CHP_MANIFEST_VERSION,
            .chunk_size = chunk_size,
            .total_size = total,
            .chunk_count = count,
            .meta_len = meta_len,
            .addrs = count ? tu_pattern((size_t)count * CHP_HASH_BYTES, 1) : NULL,
            .meta = meta_len ? tu_pattern(meta_len, 2) : NULL,
        };
}

static void free_manifest(struct chp_manifest *m)
{
        free((void *)m->addrs);
        free((void *)m->meta);
}

/* The golden encoding, written by hand from the layout in manifest.h: two chunks of a
 * 65537-byte file at 64 KiB, addresses 00..3f, metadata "abc". */
static const uint8_t golden_header[CHP_MANIFEST_HEADER] = {
    'C',  'H',  'P',  'M',  0x01, 0x00, 0x00, 0x00, /* magic, version, flags, reserved */
    0x00, 0x00, 0x01, 0x00,                         /* chunk_size 65536 */
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, /* total_size 65537 */
    0x02, 0x00, 0x00, 0x00,                         /* chunk_count 2 */
    0x03, 0x00, 0x00, 0x00,                         /* meta_len 3 */
};
#define GOLDEN_LEN (CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES + 3)
/* sha256 of the golden encoding, computed independently (Python hashlib) */
static const char golden_id[] = "7973ce832d286090af2c44ec698ed7fed967af705195ab1c77ae7068e6bb36e6";

static void golden(uint8_t out[GOLDEN_LEN])
{
        memcpy(out, golden_header, CHP_MANIFEST_HEADER);
        for (int i = 0; i < 2 * CHP_HASH_BYTES; i++)
                out[CHP_MANIFEST_HEADER + i] = (uint8_t)i;
        memcpy(out + CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES, "abc", 3);
}

TEST(golden_encoding)
{
        uint8_t want[GOLDEN_LEN], addrs[2 * CHP_HASH_BYTES], got[GOLDEN_LEN + 8];
        golden(want);
        for (int i = 0; i < 2 * CHP_HASH_BYTES; i++)
                addrs[i] = (uint8_t)i;
        struct chp_manifest m = {
            .version = 1,
            .chunk_size = 65536,
            .total_size = 65537,
            .chunk_count = 2,
            .meta_len = 3,
            .addrs = addrs,
            .meta = (const uint8_t *)"abc",
        };
        CHECK_EQ(chp_manifest_encoded_size(&m), GOLDEN_LEN);
        memset(got, 0xee, sizeof(got));
        CHECK_EQ(chp_manifest_encode(&m, got, sizeof(got)), GOLDEN_LEN);
        CHECK(memcmp(got, want, GOLDEN_LEN) == 0);
        CHECK_EQ(got[GOLDEN_LEN], 0xee); /* nothing past the encoding */

        uint8_t *buf = tu_exact_copy(want, GOLDEN_LEN);
        REQUIRE(buf);
        struct chp_manifest d;
        CHECK_EQ(chp_manifest_decode(buf, GOLDEN_LEN, &d), GOLDEN_LEN);
        CHECK_EQ(d.version, 1);
        CHECK_EQ(d.chunk_size, 65536);
        CHECK_EQ(d.total_size, 65537);
        CHECK_EQ(d.chunk_count, 2);
        CHECK_EQ(d.meta_len, 3);
        CHECK(d.addrs == buf + CHP_MANIFEST_HEADER);
        CHECK(d.meta == buf + CHP_MANIFEST_HEADER + 2 * CHP_HASH_BYTES);
        CHECK_EQ(chp_manifest_chunk_len(&d, 0), 65536);
        CHECK_EQ(chp_manifest_chunk_len(&d, 1), 1);

        uint8_t id[CHP_HASH_BYTES];
        char hex[CHP_HASH_HEXBYTES];
        CHECK_OK(chp_manifest_id(buf, GOLDEN_LEN, id));
        chp_hex_encode(id, sizeof(id), hex);
        CHECK(strcmp(hex, golden_id) == 0);
        free(buf);
}

TEST(round_trips)
{
        const uint32_t k64 = CHP_CHUNK_MIN, m1 = CHP_CHUNK_DEFAULT, m8 = CHP_CHUNK_MAX;
        const struct {
                uint32_t chunk_size;
                uint64_t total;
                uint32_t meta_len;
        } cases[] = {
            {m1, 0, 0},                                 /* empty file: no chunks */
            {m1, 0, 17},                                /* empty file with metadata */
            {k64, 1, 0},                                /* one one-byte chunk */
            {k64, k64, 0},                              /* one full chunk */
            {k64, k64 - 1, 5},                          /* one short chunk */
            {k64, 3ull * k64, 0},                       /* exact multiple */
            {k64, 3ull * k64 + 5, 40},                  /* last chunk shorter */
            {m1, 7ull * m1 - 1, 1},                     /* last chunk one byte short */
            {m8, 2ull * m8 + 1, CHP_MANIFEST_MAX_META}, /* largest chunk, max meta */
            {k64, 0, CHP_MANIFEST_MAX_META},            /* only metadata, max */
            {k64, (1ull << 32) + 5, 3},                 /* total_size above 32 bits: 65537 chunks */
            {1u << 17, 12345678901ull, 9},              /* a middle chunk size */
        };
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
                struct chp_manifest m =
                    make(cases[c].chunk_size, cases[c].total, cases[c].meta_len);
                CHECK_EQ(round_trip(&m), 0);
                free_manifest(&m);
        }
}

TEST(round_trip_limits)
{
        /* the largest file at the largest chunk count: 2^20 chunks of 1 MiB = 1 TiB */
        struct chp_manifest m =
            make(CHP_CHUNK_DEFAULT, CHP_MANIFEST_MAX_TOTAL, CHP_MANIFEST_MAX_META);
        REQUIRE(m.addrs && m.meta);
        CHECK_EQ(m.chunk_count, CHP_MANIFEST_MAX_CHUNKS);
        CHECK_EQ(round_trip(&m), 0);
        free_manifest(&m);

        /* the most chunks at the smallest chunk size */
        m = make(CHP_CHUNK_MIN, (uint64_t)CHP_MANIFEST_MAX_CHUNKS * CHP_CHUNK_MIN - 1, 0);
        REQUIRE(m.addrs);
        CHECK_EQ(m.chunk_count, CHP_MANIFEST_MAX_CHUNKS);
        CHECK_EQ(round_trip(&m), 0);
        free_manifest(&m);

        /* the largest total at the largest chunk size */
        m = make(CHP_CHUNK_MAX, CHP_MANIFEST_MAX_TOTAL, 0);
        REQUIRE(m.addrs);
        CHECK_EQ(m.chunk_count, CHP_MANIFEST_MAX_TOTAL / CHP_CHUNK_MAX);
        CHECK_EQ(round_trip(&m), 0);
        free_manifest(&m);
}

TEST(chunk_count)
{
        CHECK(chp_manifest_chunk_count(0, CHP_CHUNK_MIN) == 0);
        CHECK(chp_manifest_chunk_count(1, CHP_CHUNK_MIN) == 1);
        CHECK(chp_manifest_chunk_count(CHP_CHUNK_MIN, CHP_CHUNK_MIN) == 1);
        CHECK(chp_manifest_chunk_count(CHP_CHUNK_MIN + 1, CHP_CHUNK_MIN) == 2);
        CHECK(chp_manifest_chunk_count(CHP_MANIFEST_MAX_TOTAL, CHP_CHUNK_DEFAULT) == 1u << 20);
        CHECK(chp_manifest_chunk_count(UINT64_MAX, CHP_CHUNK_MIN) == 1ull << 48);
        CHECK(chp_manifest_chunk_count(UINT64_MAX, 1) == UINT64_MAX);
}

TEST(chunk_len)
{
        uint8_t addrs[4 * CHP_HASH_BYTES] = {0};
        struct chp_manifest m = {
            .version = 1,
            .chunk_size = CHP_CHUNK_MIN,
            .total_size = 3ull * CHP_CHUNK_MIN + 5,
            .chunk_count = 4,
            .addrs = addrs,
        };
        REQUIRE_OK(chp_manifest_check(&m));
        CHECK_EQ(chp_manifest_chunk_len(&m, 0), CHP_CHUNK_MIN);
        CHECK_EQ(chp_manifest_chunk_len(&m, 2), CHP_CHUNK_MIN);
        CHECK_EQ(chp_manifest_chunk_len(&m, 3), 5);
        CHECK_EQ(chp_manifest_chunk_len(&m, 4), 0); /* no such chunk */
        CHECK_EQ(chp_manifest_chunk_len(&m, UINT32_MAX), 0);

        m.total_size = 4ull * CHP_CHUNK_MIN; /* exact multiple: the last chunk is full */
        CHECK_EQ(chp_manifest_chunk_len(&m, 3), CHP_CHUNK_MIN);

        m.chunk_count = 1;
        m.total_size = 1;
        CHECK_EQ(chp_manifest_chunk_len(&m, 0), 1);

        /* index * chunk_size above 32 bits: the last of 65537 chunks of a 2^32+5 byte file */
        m.total_size = (1ull << 32) + 5;
        m.chunk_count = 65537;
        CHECK_EQ(chp_manifest_chunk_len(&m, 65535), CHP_CHUNK_MIN);
        CHECK_EQ(chp_manifest_chunk_len(&m, 65536), 5);

        m.chunk_size = CHP_CHUNK_MAX;
        m.total_size = CHP_MANIFEST_MAX_TOTAL - 1;
        m.chunk_count = (uint32_t)(CHP_MANIFEST_MAX_TOTAL / CHP_CHUNK_MAX);
        CHECK_EQ(chp_manifest_chunk_len(&m, m.chunk_count - 1), CHP_CHUNK_MAX - 1);
        CHECK_EQ(chp_manifest_chunk_len(&m, m.chunk_count - 2), CHP_CHUNK_MAX);
}

TEST(encode_rejects_invalid)
{
        struct chp_manifest good = make(CHP_CHUNK_MIN, 3ull * CHP_CHUNK_MIN + 1, 4);
        REQUIRE(good.addrs && good.meta);
        REQUIRE_OK(chp_manifest_check(&good));
        size_t cap = 64u << 10;
        uint8_t *buf = malloc(cap);
        REQUIRE(buf);
        struct chp_manifest m;
        int n = 0;
#define REJECT(field, value)                                                                       \
        do {                                                                                       \
                m = good;                                                                          \
                m.field = value;                                                                   \
                CHECK_EQ(chp_manifest_check(&m), -EINVAL);                                         \
                CHECK_EQ(chp_manifest_encode(&m, buf, cap), -EINVAL);                              \
                n++;                                                                               \
        } while (0)
        REJECT(version, 0);
        REJECT(version, 2);
        REJECT(version, 0x101);
        REJECT(chunk_size, 0);
        REJECT(chunk_size, 1);
        REJECT(chunk_size, CHP_CHUNK_MIN / 2);
        REJECT(chunk_size, CHP_CHUNK_MIN - 1);
        REJECT(chunk_size, CHP_CHUNK_MIN + 1);
        REJECT(chunk_size, 3 * CHP_CHUNK_MIN);
        REJECT(chunk_size, CHP_CHUNK_MAX + 1);
        REJECT(chunk_size, CHP_CHUNK_MAX * 2);
        REJECT(chunk_size, 0x80000000u);
        REJECT(chunk_count, good.chunk_count + 1);
        REJECT(chunk_count, good.chunk_count - 1);
        REJECT(chunk_count, 0);
        REJECT(chunk_count, UINT32_MAX);
        REJECT(total_size, 0);
        REJECT(total_size, 4ull * CHP_CHUNK_MIN + 1);
        REJECT(total_size, 2ull * CHP_CHUNK_MIN); /* one chunk too many for this total */
        REJECT(meta_len, CHP_MANIFEST_MAX_META + 1);
        REJECT(meta_len, UINT32_MAX);
        REJECT(addrs, NULL);
        REJECT(meta, NULL);
#undef REJECT
        CHECK_EQ(n, 23);

        /* each limit alone, the other fields consistent */
        m = good;
        m.chunk_size = CHP_CHUNK_MAX;
        m.total_size = CHP_MANIFEST_MAX_TOTAL + 1;
        m.chunk_count = (uint32_t)chp_manifest_chunk_count(m.total_size, m.chunk_size);
        CHECK_EQ(chp_manifest_check(&m), -EINVAL);
        m.total_size = CHP_MANIFEST_MAX_TOTAL;
        m.chunk_count = (uint32_t)chp_manifest_chunk_count(m.total_size, m.chunk_size);
        CHECK_OK(chp_manifest_check(&m));

        m = good;
        m.chunk_count = CHP_MANIFEST_MAX_CHUNKS + 1;
        m.total_size = (uint64_t)m.chunk_count * CHP_CHUNK_MIN;
        CHECK_EQ(chp_manifest_check(&m), -EINVAL);
        CHECK_EQ(chp_manifest_encode(&m, buf, cap), -EINVAL);

        m = good;
        m.meta_len =
            CHP_MANIFEST_MAX_META; /* meta points at 4 bytes: only check it, never encode */
        CHECK_OK(chp_manifest_check(&m));

        /* no chunks and no metadata: both pointers may be NULL */
        m = good;
        m.total_size = 0;
        m.chunk_count = 0;
        m.meta_len = 0;
        m.addrs = NULL;
        m.meta = NULL;
        CHECK_OK(chp_manifest_check(&m));
        CHECK_EQ(chp_manifest_encode(&m, buf, cap), CHP_MANIFEST_HEADER);
        free(buf);
        free_manifest(&good);
}

TEST(encode_rejects_small_buffer)
{
        struct chp_manifest m = make(CHP_CHUNK_MIN, 2ull * CHP_CHUNK_MIN + 1, 9);
        REQUIRE(m.addrs && m.meta);
        size_t n = chp_manifest_encoded_size(&m);
        CHECK_EQ(n, CHP_MANIFEST_HEADER + 3 * CHP_HASH_BYTES + 9);
        uint8_t *buf = malloc(n);
        REQUIRE(buf);
        CHECK_EQ(chp_manifest_encode(&m, NULL, 0), -ENOSPC);
        CHECK_EQ(chp_manifest_encode(&m, buf, 1), -ENOSPC);
        CHECK_EQ(chp_manifest_encode(&m, buf, CHP_MANIFEST_HEADER), -ENOSPC);
        CHECK_EQ(chp_manifest_encode(&m, buf, n - 1), -ENOSPC);
        CHECK_EQ(chp_manifest_encode(&m, buf, n), (ssize_t)n);
        /* an invalid struct is -EINVAL whatever the buffer */
        m.version = 9;
        CHECK_EQ(chp_manifest_encode(&m, buf, 0), -EINVAL);
        free(buf);
        free_manifest(&m);
}

/* Every prefix of a valid encoding, and the encoding plus one byte, is rejected. */
static void check_truncations(const struct chp_manifest *m)
{
        size_t n = chp_manifest_encoded_size(m);
        uint8_t *full = malloc(n + 1);
        REQUIRE(full);
        REQUIRE(chp_manifest_encode(m, full, n + 1) == (ssize_t)n);
        int accepted = 0;
        for (size_t len = 0; len < n; len++) {
                uint8_t *p = tu_exact_copy(full, len);
                REQUIRE(p);
                struct chp_manifest d;
                if (chp_manifest_decode(p, len, &d) != -EBADMSG) {
                        fprintf(stderr, "  prefix of %zu/%zu bytes not rejected\n", len, n);
                        accepted++;
                }
                free(p);
        }
        CHECK_EQ(accepted, 0);
        struct chp_manifest d;
        CHECK_EQ(chp_manifest_decode(NULL, 0, &d), -EBADMSG);
        for (int extra = 0; extra < 256; extra += 85) {
                full[n] = (uint8_t)extra;
                uint8_t *p = tu_exact_copy(full, n + 1);
                REQUIRE(p);
                CHECK_EQ(chp_manifest_decode(p, n + 1, &d), -EBADMSG);
                CHECK_EQ(chp_manifest_decode(p, n, &d), (ssize_t)n);
                free(p);
        }
        free(full);
}

TEST(decode_rejects_truncated_and_trailing)
{
        struct chp_manifest m = make(CHP_CHUNK_MIN, 3ull * CHP_CHUNK_MIN + 5, 33);
        REQUIRE(m.addrs && m.meta);
        check_truncations(&m);
        free_manifest(&m);
        m = make(CHP_CHUNK_DEFAULT, 0, 0);
        check_truncations(&m);
        free_manifest(&m);
        m = make(CHP_CHUNK_MAX, 1, 0);
        REQUIRE(m.addrs);
        check_truncations(&m);
        free_manifest(&m);
        m = make(CHP_CHUNK_MIN, 0, CHP_MANIFEST_MAX_META);
        REQUIRE(m.meta);
        check_truncations(&m);
        free_manifest(&m);
}

TEST(decode_rejects_bad_fixed_fields)
{
        uint8_t base[GOLDEN_LEN];
        golden(base);
        uint8_t *p = tu_exact_copy(base, GOLDEN_LEN);
        REQUIRE(p);
        struct chp_manifest d;
        REQUIRE(chp_manifest_decode(p, GOLDEN_LEN, &d) == GOLDEN_LEN);
        /* every bit of magic, version, flags and reserved, flipped alone */
        for (size_t off = 0; off < O_CHUNK_SIZE; off++) {
                for (int bit = 0; bit < 8; bit++) {
                        memcpy(p, base, GOLDEN_LEN);
                        p[off] ^= (uint8_t)(1u << bit);
                        if (chp_manifest_decode(p, GOLDEN_LEN, &d) != -EBADMSG) {
                                fprintf(stderr, "  byte %zu bit %d accepted\n", off, bit);
                                CHECK(0);
                        }
                }
        }
        const uint8_t versions[] = {0, 2, 0xff};
        for (size_t i = 0; i < sizeof(versions); i++) {
                memcpy(p, base, GOLDEN_LEN);
                p[O_VERSION] = versions[i];
                CHECK_EQ(chp_manifest_decode(p, GOLDEN_LEN, &d), -EBADMSG);
        }
        memcpy(p, "chpm", 4);
        CHECK_EQ(chp_manifest_decode(p, GOLDEN_LEN, &d), -EBADMSG);

        /* a failed decode leaves nothing behind in *out (cleared on entry) */
        memset(&d, 0xaa, sizeof(d));
        CHECK_EQ(chp_manifest_decode(p, GOLDEN_LEN, &d), -EBADMSG);
        CHECK(d.addrs == NULL && d.meta == NULL && d.chunk_count == 0 && d.total_size == 0);
        free(p);
}

TEST(decode_rejects_bad_sizes)
{
        const uint32_t k64 = CHP_CHUNK_MIN;
        struct raw r;

        r = raw_valid(k64, 3ull * k64 + 5, 7);
        CHECK_EQ(raw_decode(&r), CHP_MANIFEST_HEADER + 4 * CHP_HASH_BYTES + 7); /* the control */
        r.flags = 1;
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r.flags = 0;
        r.reserved = 0x100;
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r.reserved = 1;
        CHECK_EQ(raw_decode(&r), -EBADMSG);

        /* chunk_size outside the rules, chunk_count made consistent so only chunk_size is wrong */
        const uint32_t bad_sizes[] = {
            0,           1,         2,           k64 / 2,           k64 - 1,
            k64 + 1,     3 * k64,   5 * k64 - 1, CHP_CHUNK_MAX + 1, CHP_CHUNK_MAX * 2,
            0x80000000u, UINT32_MAX};
        for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
                r = raw_valid(bad_sizes[i], 1000000, 0);
                if (bad_sizes[i] == 0)
                        r.chunk_count = 1;
                if (raw_decode(&r) != -EBADMSG) {
                        fprintf(stderr, "  chunk_size %" PRIu32 " accepted\n", bad_sizes[i]);
                        CHECK(0);
                }
        }
        /* every power of two in range is accepted */
        int good = 0;
        for (uint32_t cs = k64; cs <= CHP_CHUNK_MAX; cs <<= 1) {
                r = raw_valid(cs, 20000000, 1);
                good += raw_decode(&r) > 0;
        }
        CHECK_EQ(good, 8);

        /* chunk_count other than ceil(total / chunk_size) */
        const struct {
                uint64_t total;
                uint32_t count;
        } mismatch[] = {
            {0, 1},
            {1, 0},
            {1, 2},
            {k64, 2},
            {k64 + 1, 1},
            {3ull * k64, 4},
            {3ull * k64 + 1, 3},
            {(1ull << 32) + 5, 1},     /* what a total truncated to 32 bits (5) would give */
            {(1ull << 32) + 5, 65536}, /* the floor instead of the ceiling */
        };
        for (size_t i = 0; i < sizeof(mismatch) / sizeof(mismatch[0]); i++) {
                r = raw_valid(k64, mismatch[i].total, 0);
                r.chunk_count = mismatch[i].count;
                if (raw_decode(&r) != -EBADMSG) {
                        fprintf(stderr, "  total %" PRIu64 " with %" PRIu32 " chunks accepted\n",
                                mismatch[i].total, mismatch[i].count);
                        CHECK(0);
                }
        }

        /* total_size over the limit, chunk_count consistent (131073 chunks of 8 MiB) */
        r = raw_valid(CHP_CHUNK_MAX, CHP_MANIFEST_MAX_TOTAL + 1, 0);
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r = raw_valid(CHP_CHUNK_MAX, CHP_MANIFEST_MAX_TOTAL, 0);
        CHECK_EQ(raw_decode(&r), CHP_MANIFEST_HEADER + (1 << 17) * CHP_HASH_BYTES);
        /* total_size whose high bits alone are set */
        r = raw_valid(CHP_CHUNK_MAX, 1ull << 63, 0);
        r.chunk_count = 0;
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r = raw_valid(CHP_CHUNK_MAX, UINT64_MAX, 0);
        r.chunk_count = UINT32_MAX;
        CHECK_EQ(raw_decode_len(&r, CHP_MANIFEST_HEADER), -EBADMSG);

        /* chunk_count over the limit, total consistent (2^20 + 1 chunks of 64 KiB) */
        r = raw_valid(k64, ((uint64_t)CHP_MANIFEST_MAX_CHUNKS + 1) * k64, 0);
        CHECK_EQ(r.chunk_count, CHP_MANIFEST_MAX_CHUNKS + 1);
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r = raw_valid(k64, (uint64_t)CHP_MANIFEST_MAX_CHUNKS * k64, 0);
        CHECK_EQ(raw_decode(&r), CHP_MANIFEST_HEADER + CHP_MANIFEST_MAX_CHUNKS * CHP_HASH_BYTES);

        /* meta_len over the limit */
        r = raw_valid(k64, 5, CHP_MANIFEST_MAX_META + 1);
        CHECK_EQ(raw_decode(&r), -EBADMSG);
        r = raw_valid(k64, 5, CHP_MANIFEST_MAX_META);
        CHECK_EQ(raw_decode(&r), CHP_MANIFEST_HEADER + CHP_HASH_BYTES + CHP_MANIFEST_MAX_META);
}

/* Header values whose encoded size overflows 32- or 64-bit arithmetic, each given exactly the
 * length the wrapped computation would produce (and a few other short lengths): all rejected,
 * none read past the buffer. */
TEST(decode_rejects_overflowing_sizes)
{
        const struct {
                uint32_t count, meta_len;
        } huge[] = {
            {UINT32_MAX, 0},
            {UINT32_MAX, UINT32_MAX},
            {0x08000000u, 0},     /* 32 * count == 2^32 */
            {0x08000000u, 4},     /* wraps to 28 + 4 in 32 bits */
            {0x07ffffffu, 0x20},  /* 32 * count + meta == 2^32 */
            {0x07ffffffu, 0x24},  /* ... + 4 */
            {0, UINT32_MAX},      /* 28 + meta wraps to 27 */
            {0, UINT32_MAX - 27}, /* 28 + meta == 2^32 */
            {0, UINT32_MAX - 20}, /* 28 + meta wraps to 7 */
            {1u << 31, 1u << 31},
            {CHP_MANIFEST_MAX_CHUNKS + 1, 0},
            {0, CHP_MANIFEST_MAX_META + 1},
        };
        const uint32_t sizes[] = {CHP_CHUNK_MIN, CHP_CHUNK_MAX};
        int accepted = 0;
        for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
                for (size_t s = 0; s < 2; s++) {
                        struct raw r = {
                            .version = 1,
                            .chunk_size = sizes[s],
                            .chunk_count = huge[i].count,
                            .meta_len = huge[i].meta_len,
                        };
                        /* the total that makes chunk_count consistent, where one exists */
                        r.total_size = (uint64_t)huge[i].count * sizes[s];
                        uint32_t wrapped =
                            (uint32_t)(CHP_MANIFEST_HEADER + (uint32_t)(huge[i].count * 32u) +
                                       huge[i].meta_len);
                        size_t lens[] = {CHP_MANIFEST_HEADER, CHP_MANIFEST_HEADER + 4,
                                         CHP_MANIFEST_HEADER + 64, wrapped};
                        for (size_t l = 0; l < 4; l++) {
                                if (lens[l] < CHP_MANIFEST_HEADER || lens[l] > (1u << 20))
                                        continue;
                                if (raw_decode_len(&r, lens[l]) != -EBADMSG) {
                                        fprintf(stderr,
                                                "  count %" PRIu32 " meta %" PRIu32
                                                " len %zu accepted\n",
                                                huge[i].count, huge[i].meta_len, lens[l]);
                                        accepted++;
                                }
                        }
                }
        }
        CHECK_EQ(accepted, 0);
}

TEST(decoded_pointers_inside_input)
{
        /* one buffer holding several encodings: each decode points only into its own slice */
        struct chp_manifest a = make(CHP_CHUNK_MIN, 2ull * CHP_CHUNK_MIN + 3, 11);
        struct chp_manifest b = make(CHP_CHUNK_DEFAULT, 0, 0);
        struct chp_manifest c = make(CHP_CHUNK_MAX, 5, 0);
        REQUIRE(a.addrs && a.meta && c.addrs);
        size_t na = chp_manifest_encoded_size(&a), nb = chp_manifest_encoded_size(&b),
               nc = chp_manifest_encoded_size(&c);
        uint8_t *buf = malloc(na + nb + nc);
        REQUIRE(buf);
        CHECK_EQ(chp_manifest_encode(&a, buf, na), (ssize_t)na);
        CHECK_EQ(chp_manifest_encode(&b, buf + na, nb), (ssize_t)nb);
        CHECK_EQ(chp_manifest_encode(&c, buf + na + nb, nc), (ssize_t)nc);

        struct chp_manifest d;
        CHECK_EQ(chp_manifest_decode(buf, na, &d), (ssize_t)na);
        CHECK(inside(d.addrs, 3 * CHP_HASH_BYTES, buf, na));
        CHECK(inside(d.meta, 11, buf, na));
        CHECK(d.meta + 11 == buf + na);

        CHECK_EQ(chp_manifest_decode(buf + na, nb, &d), (ssize_t)nb);
        CHECK_EQ(d.chunk_count, 0);
        CHECK_EQ(d.meta_len, 0);
        CHECK(inside(d.addrs, 0, buf + na, nb));
        CHECK(inside(d.meta, 0, buf + na, nb));

        CHECK_EQ(chp_manifest_decode(buf + na + nb, nc, &d), (ssize_t)nc);
        CHECK(inside(d.addrs, CHP_HASH_BYTES, buf + na + nb, nc));
        CHECK(d.addrs + CHP_HASH_BYTES == buf + na + nb + nc);
        CHECK(memcmp(d.addrs, c.addrs, CHP_HASH_BYTES) == 0);
        CHECK_EQ(chp_manifest_chunk_len(&d, 0), 5);

        /* the two encodings back to back are one manifest plus trailing bytes */
        CHECK_EQ(chp_manifest_decode(buf, na + nb, &d), -EBADMSG);
        free(buf);
        free_manifest(&a);
        free_manifest(&b);
        free_manifest(&c);
}

TEST(file_id)
{
        struct chp_manifest m = make(CHP_CHUNK_MIN, 2ull * CHP_CHUNK_MIN + 3, 6);
        REQUIRE(m.addrs && m.meta);
        size_t n = chp_manifest_encoded_size(&m);
        uint8_t *buf = malloc(n);
        REQUIRE(buf);
        REQUIRE(chp_manifest_encode(&m, buf, n) == (ssize_t)n);

        uint8_t id[CHP_HASH_BYTES], want[CHP_HASH_BYTES], other[CHP_HASH_BYTES];
        REQUIRE_OK(chp_manifest_id(buf, n, id));
        REQUIRE_OK(chp_sha256(buf, n, want));
        CHECK(memcmp(id, want, sizeof(id)) == 0);
        /* deterministic */
        REQUIRE_OK(chp_manifest_id(buf, n, other));
        CHECK(memcmp(id, other, sizeof(id)) == 0);

        /* any single byte changed (one bit of it) changes the id */
        int same = 0;
        for (size_t i = 0; i < n; i++) {
                buf[i] ^= (uint8_t)(1u << (i % 8));
                REQUIRE_OK(chp_manifest_id(buf, n, other));
                same += memcmp(id, other, sizeof(id)) == 0;
                buf[i] ^= (uint8_t)(1u << (i % 8));
        }
        CHECK_EQ(same, 0);
        /* so does the length */
        REQUIRE_OK(chp_manifest_id(buf, n - 1, other));
        CHECK(memcmp(id, other, sizeof(id)) != 0);
        /* and the id is back once the bytes are */
        REQUIRE_OK(chp_manifest_id(buf, n, other));
        CHECK(memcmp(id, other, sizeof(id)) == 0);
        free(buf);
        free_manifest(&m);
}

/* The codec with the Nth allocation failing, N = 1, 2, ...: encode and decode allocate nothing;
 * the id's digest does (OpenSSL's), and every failure there must be an error (-ENOMEM for the
 * context, see hash.h) with no id written and nothing leaked (ASan), and the id must be right
 * once nothing fails. */
struct id_case {
        const struct chp_manifest *m;
        uint8_t *buf;
        size_t n;
        uint8_t want[CHP_HASH_BYTES];
};

static int id_pass(void *arg)
{
        struct id_case *c = arg;
        struct chp_manifest d;
        uint8_t id[CHP_HASH_BYTES];
        if (chp_manifest_encode(c->m, c->buf, c->n) != (ssize_t)c->n ||
            chp_manifest_decode(c->buf, c->n, &d) != (ssize_t)c->n)
                return 1;
        memset(id, 0xee, sizeof(id));
        int rc = chp_manifest_id(c->buf, c->n, id);
        if (rc != 0) {
                static const uint8_t zero[CHP_HASH_BYTES];
                return memcmp(id, zero, sizeof(id)) == 0 ? rc : 1; /* no half-written id */
        }
        return memcmp(id, c->want, sizeof(id)) == 0 ? 0 : 1;
}

TEST(allocation_failure)
{
        struct chp_manifest m = make(CHP_CHUNK_MIN, 5 * (uint64_t)CHP_CHUNK_MIN + 7, 40);
        struct id_case c = {.m = &m, .n = chp_manifest_encoded_size(&m)};
        c.buf = malloc(c.n);
        REQUIRE(c.buf && m.addrs && m.meta);
        REQUIRE(chp_manifest_encode(&m, c.buf, c.n) == (ssize_t)c.n);
        REQUIRE_OK(chp_manifest_id(c.buf, c.n, c.want)); /* OpenSSL's one-time set-up done */
        int points = tu_alloc_sweep("manifest encode/decode/id", id_pass, &c, 0);
        printf("  manifest: %d allocation points failed in turn\n", points);
        CHECK(points >= 1);
        chp_alloc_fail_after(1); /* the digest's context */
        CHECK_EQ(id_pass(&c), -ENOMEM);
        chp_alloc_fail_after(0);
        free(c.buf);
        free_manifest(&m);
}

HARNESS_MAIN()
