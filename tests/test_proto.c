/* The native wire protocol codec (common/proto.c) against docs/protocol.md: hand-written golden
 * encodings, a round trip of every encoder/decoder pair, the header's -EAGAIN/-EBADMSG rules and
 * per-type payload bounds (exactly at the bound accepted, one over rejected), every decoder's
 * refusal of every truncation and of a trailing byte, reserved fields and out-of-range values,
 * encoders refusing what decoders would refuse, bitmap helpers and the name tables. Every buffer
 * handed to a decoder is malloc'd at its exact size so ASan catches a read past len. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "manifest.h"
#include "proto.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* An encoded valid manifest of count chunks (64 KiB each, the last shorter) and meta_len bytes of
 * metadata; caller frees *enc with free(). Returns the encoding's length, 0 on failure. */
static size_t make_manifest(uint32_t count, uint32_t meta_len, uint8_t **enc)
{
        *enc = NULL;
        uint8_t *addrs = tu_pattern((size_t)count * CHP_HASH_BYTES, count);
        uint8_t *meta = tu_pattern(meta_len, 99);
        struct chp_manifest m = {
            .version = CHP_MANIFEST_VERSION,
            .chunk_size = CHP_CHUNK_MIN,
            .total_size = count ? (uint64_t)count * CHP_CHUNK_MIN - 100 : 0,
            .chunk_count = count,
            .meta_len = meta_len,
            .addrs = addrs,
            .meta = meta,
        };
        size_t n = chp_manifest_encoded_size(&m);
        uint8_t *buf = malloc(n);
        ssize_t rc = buf ? chp_manifest_encode(&m, buf, n) : -ENOMEM;
        free(addrs);
        free(meta);
        if (rc < 0 || (size_t)rc != n) {
                free(buf);
                return 0;
        }
        *enc = buf;
        return n;
}

/* Every decoder behind one signature, so truncation and trailing-byte checks can loop. */
typedef int (*decode_fn)(const uint8_t *p, size_t len);

static int dec_hello(const uint8_t *p, size_t len)
{
        struct chp_msg_hello m;
        return chp_msg_hello_decode(p, len, &m);
}
static int dec_open(const uint8_t *p, size_t len)
{
        struct chp_msg_open m;
        return chp_msg_open_decode(p, len, &m);
}
static int dec_have(const uint8_t *p, size_t len)
{
        struct chp_msg_have m;
        return chp_msg_have_decode(p, len, &m);
}
static int dec_get_chunk(const uint8_t *p, size_t len)
{
        struct chp_msg_get_chunk m;
        return chp_msg_get_chunk_decode(p, len, &m);
}
static int dec_upload_id(const uint8_t *p, size_t len)
{
        const uint8_t *id;
        return chp_msg_id_decode(p, len, CHP_UPLOAD_ID_BYTES, &id);
}
static int dec_file_id(const uint8_t *p, size_t len)
{
        const uint8_t *id;
        return chp_msg_id_decode(p, len, CHP_HASH_BYTES, &id);
}
static int dec_hello_ok(const uint8_t *p, size_t len)
{
        struct chp_msg_hello_ok m;
        return chp_msg_hello_ok_decode(p, len, &m);
}
static int dec_open_ok(const uint8_t *p, size_t len)
{
        struct chp_msg_open_ok m;
        return chp_msg_open_ok_decode(p, len, &m);
}
static int dec_chunk_ok(const uint8_t *p, size_t len)
{
        struct chp_msg_chunk_ok m;
        return chp_msg_chunk_ok_decode(p, len, &m);
}
static int dec_manifest(const uint8_t *p, size_t len)
{
        struct chp_msg_manifest m;
        return chp_msg_manifest_decode(p, len, &m);
}
static int dec_chunk_data(const uint8_t *p, size_t len)
{
        struct chp_msg_chunk_data m;
        return chp_msg_chunk_data_decode(p, len, &m);
}
static int dec_have_ok(const uint8_t *p, size_t len)
{
        uint32_t count;
        const uint8_t *map;
        return chp_msg_have_ok_decode(p, len, &count, &map);
}
static int dec_stat_ok(const uint8_t *p, size_t len)
{
        struct chp_msg_stat_ok m;
        return chp_msg_stat_ok_decode(p, len, &m);
}
static int dec_error(const uint8_t *p, size_t len)
{
        struct chp_msg_error m;
        return chp_msg_error_decode(p, len, &m);
}

static int dec_offer(const uint8_t *p, size_t len)
{
        struct chp_msg_offer m;
        ssize_t n = chp_msg_offer_decode(p, len, &m);
        return n == CHP_OFFER_BYTES ? 0 : n < 0 ? (int)n : -EPROTO;
}

/* Decodes an exact-size copy of p[0..len). */
static int dec_exact(decode_fn fn, const uint8_t *p, size_t len)
{
        uint8_t *c = tu_exact_copy(p, len);
        if (!c)
                return -ENOMEM;
        int rc = fn(c, len);
        free(c);
        return rc;
}

/* Counts the ways a strict decoder (whose payload has a fixed or self-described length) fails to
 * behave: the whole payload must decode, and every prefix and the payload plus one byte must not.
 * Returns 0 when all hold. */
static int strict_failures(decode_fn fn, const uint8_t *p, size_t len)
{
        int bad = 0;
        if (dec_exact(fn, p, len) != 0) {
                fprintf(stderr, "  valid payload of %zu bytes rejected\n", len);
                bad++;
        }
        for (size_t k = 0; k < len; k++) {
                if (dec_exact(fn, p, k) != -EBADMSG) {
                        fprintf(stderr, "  truncation to %zu of %zu bytes accepted\n", k, len);
                        bad++;
                }
        }
        uint8_t *longer = malloc(len + 1);
        if (!longer)
                return bad + 1;
        memcpy(longer, p, len);
        longer[len] = 0;
        if (fn(longer, len + 1) != -EBADMSG) {
                fprintf(stderr, "  trailing byte after %zu bytes accepted\n", len);
                bad++;
        }
        free(longer);
        return bad;
}

/* ---- frame header ------------------------------------------------------------------------ */

static const uint8_t known_types[] = {
    CHP_F_HELLO,
    CHP_F_OPEN,
    CHP_F_CHUNK,
    CHP_F_COMMIT,
    CHP_F_HAVE,
    CHP_F_GET_MANIFEST,
    CHP_F_GET_CHUNK,
    CHP_F_STAT,
    CHP_F_DELETE,
    CHP_F_PING,
    CHP_F_PREFETCH,
    CHP_F_OFFER,
    0x8b,
    0x8c,
    0x81,
    0x82,
    0x83,
    0x84,
    0x85,
    0x86,
    0x87,
    0x88,
    0x89,
    0x8a,
    CHP_F_ERROR,
};

static int is_known(unsigned t)
{
        for (size_t i = 0; i < sizeof(known_types); i++)
                if (known_types[i] == t)
                        return 1;
        return 0;
}

TEST(header_golden)
{
        uint8_t h[CHP_FRAME_HEADER];
        chp_frame_header_encode(h, CHP_F_CHUNK, 0x01020304u, 0x00000a0bu);
        /* type, flags 0, reserved 0, then id and len little-endian */
        CHECK(tu_same_hex(h, sizeof(h), "03000000040302010b0a0000"));
        chp_frame_header_encode(h, CHP_F_ERROR, 0xffffffffu, 6);
        CHECK(tu_same_hex(h, sizeof(h), "ff000000ffffffff06000000"));
}

TEST(header_round_trip_every_type)
{
        for (size_t i = 0; i < sizeof(known_types); i++) {
                uint8_t t = known_types[i];
                uint32_t max = chp_frame_max_payload(t);
                uint32_t lens[] = {0, 1, max / 2, max};
                for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
                        uint8_t *h = malloc(CHP_FRAME_HEADER);
                        REQUIRE(h);
                        uint32_t id = 0x9e3779b9u * (uint32_t)(i + 1) + (uint32_t)j;
                        chp_frame_header_encode(h, t, id, lens[j]);
                        struct chp_frame_header fh;
                        memset(&fh, 0x5a, sizeof(fh));
                        CHECK_EQ(chp_frame_header_decode(h, CHP_FRAME_HEADER, &fh),
                                 CHP_FRAME_HEADER);
                        CHECK_EQ(fh.type, t);
                        CHECK_EQ(fh.flags, 0);
                        CHECK_EQ(fh.id, id);
                        CHECK_EQ(fh.len, lens[j]);
                        free(h);
                }
        }
}

TEST(header_short_is_eagain)
{
        uint8_t full[CHP_FRAME_HEADER];
        chp_frame_header_encode(full, CHP_F_PING, 7, 3);
        for (size_t k = 0; k < CHP_FRAME_HEADER; k++) {
                uint8_t *c = tu_exact_copy(full, k);
                REQUIRE(c);
                struct chp_frame_header fh;
                memset(&fh, 0x5a, sizeof(fh));
                CHECK_EQ(chp_frame_header_decode(c, k, &fh), -EAGAIN);
                CHECK_EQ(fh.type, 0x5a); /* untouched */
                free(c);
        }
        /* even a header that is already visibly bad needs all 12 bytes first */
        uint8_t bad[4] = {0x00, 0xff, 0xff, 0xff};
        struct chp_frame_header fh;
        CHECK_EQ(chp_frame_header_decode(bad, sizeof(bad), &fh), -EAGAIN);
}

TEST(header_reserved_bits_rejected)
{
        for (int byte = 1; byte <= 3; byte++) {
                for (int bit = 0; bit < 8; bit++) {
                        uint8_t *h = malloc(CHP_FRAME_HEADER);
                        REQUIRE(h);
                        chp_frame_header_encode(h, CHP_F_HELLO, 1, 10);
                        h[byte] = (uint8_t)(1u << bit);
                        struct chp_frame_header fh;
                        memset(&fh, 0x5a, sizeof(fh));
                        CHECK_EQ(chp_frame_header_decode(h, CHP_FRAME_HEADER, &fh), -EBADMSG);
                        CHECK_EQ(fh.type, 0x5a);
                        free(h);
                }
        }
}

TEST(header_types_and_bounds)
{
        int known = 0;
        for (unsigned t = 0; t < 256; t++) {
                uint32_t max = chp_frame_max_payload((uint8_t)t);
                uint8_t h[CHP_FRAME_HEADER];
                struct chp_frame_header fh;
                if (!is_known(t)) {
                        CHECK_EQ(max, 0);
                        chp_frame_header_encode(h, (uint8_t)t, 1, 0);
                        CHECK_EQ(chp_frame_header_decode(h, sizeof(h), &fh), -EBADMSG);
                        continue;
                }
                known++;
                CHECK(max >= 64);
                chp_frame_header_encode(h, (uint8_t)t, 1, max);
                CHECK_EQ(chp_frame_header_decode(h, sizeof(h), &fh), CHP_FRAME_HEADER);
                CHECK_EQ(fh.len, max);
                chp_frame_header_encode(h, (uint8_t)t, 1, max + 1);
                CHECK_EQ(chp_frame_header_decode(h, sizeof(h), &fh), -EBADMSG);
                chp_frame_header_encode(h, (uint8_t)t, 1, UINT32_MAX);
                CHECK_EQ(chp_frame_header_decode(h, sizeof(h), &fh), -EBADMSG);
        }
        CHECK_EQ(known, 25);
}

/* The bounds are large enough for the largest message of each type that the rest of the
 * protocol allows. */
TEST(header_bounds_fit_largest_messages)
{
        CHECK(chp_frame_max_payload(CHP_F_CHUNK) >= CHP_CHUNK_PREFIX + CHP_CHUNK_MAX);
        CHECK(chp_frame_max_payload(CHP_F_GET_CHUNK | CHP_F_REPLY) >=
              CHP_CHUNK_DATA_PREFIX + CHP_CHUNK_MAX);
        CHECK(chp_frame_max_payload(CHP_F_HELLO) >= 10 + CHP_TOKEN_MAX);
        CHECK(chp_frame_max_payload(CHP_F_HAVE) >= 4 + CHP_HAVE_MAX * CHP_HASH_BYTES);
        CHECK(chp_frame_max_payload(CHP_F_HAVE | CHP_F_REPLY) >= 4 + (CHP_HAVE_MAX + 7) / 8);
        CHECK(chp_frame_max_payload(CHP_F_ERROR) >= 6 + CHP_ERROR_MSG_MAX);
        CHECK(chp_frame_max_payload(CHP_F_PING) >= CHP_PING_MAX);
        CHECK(chp_frame_max_payload(CHP_F_PING | CHP_F_REPLY) >= CHP_PING_MAX);
        CHECK(chp_frame_max_payload(CHP_F_STAT | CHP_F_REPLY) >= 40);
        CHECK(chp_frame_max_payload(CHP_F_HELLO | CHP_F_REPLY) >= 20);
}

/* The largest manifest an OPEN frame can carry comes back in OPEN_OK's bitmap and, while the
 * upload runs, in a PARTIAL MANIFEST with its bitmap: both replies must fit their bounds. */
TEST(largest_open_manifest_fits_every_reply)
{
        uint32_t open_max = chp_frame_max_payload(CHP_F_OPEN);
        /* as many chunks as fit after OPEN's 8-byte prefix, metadata filling the rest */
        uint32_t count = (open_max - 8 - CHP_MANIFEST_HEADER) / CHP_HASH_BYTES;
        uint32_t meta = open_max - 8 - CHP_MANIFEST_HEADER - count * CHP_HASH_BYTES;
        uint8_t *man = NULL;
        size_t man_len = make_manifest(count, meta, &man);
        REQUIRE(man_len == open_max - 8);

        uint8_t *buf = malloc(open_max + 2 * 64 * 1024);
        uint8_t *bitmap = tu_pattern(chp_bitmap_bytes(count), 3);
        REQUIRE(buf && bitmap);
        struct chp_msg_open o = {.expires_in = 60, .manifest = man, .manifest_len = man_len};
        CHECK_EQ(chp_msg_open_encode(buf, open_max + 1, &o), open_max);

        uint8_t uid[CHP_UPLOAD_ID_BYTES] = {1}, fid[CHP_HASH_BYTES] = {2};
        struct chp_msg_open_ok ok = {uid, fid, CHP_UPLOAD_PARTIAL, count, bitmap};
        ssize_t n = chp_msg_open_ok_encode(buf, open_max, &ok);
        CHECK(n > 0 && (size_t)n <= chp_frame_max_payload(CHP_F_OPEN | CHP_F_REPLY));

        struct chp_msg_manifest mm = {CHP_UPLOAD_PARTIAL, man, (uint32_t)man_len, bitmap};
        n = chp_msg_manifest_encode(buf, open_max + 2 * 64 * 1024, &mm);
        CHECK(n > 0 && (size_t)n <= chp_frame_max_payload(CHP_F_GET_MANIFEST | CHP_F_REPLY));
        mm.state = CHP_UPLOAD_COMPLETE;
        n = chp_msg_manifest_encode(buf, open_max + 2 * 64 * 1024, &mm);
        CHECK(n > 0 && (size_t)n <= chp_frame_max_payload(CHP_F_GET_MANIFEST | CHP_F_REPLY));
        free(buf);
        free(bitmap);
        free(man);
}

/* ---- requests ---------------------------------------------------------------------------- */

TEST(hello_golden_and_round_trip)
{
        const uint8_t token[] = {'a', 'b', 'c'};
        struct chp_msg_hello in = {CHP_PROTO_VERSION, 0x01020304u, sizeof(token), token};
        uint8_t *buf = malloc(13);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_hello_encode(buf, 12, &in), -ENOSPC);
        CHECK_EQ(chp_msg_hello_encode(buf, 13, &in), 13);
        /* version 1, reserved, features, token_len 3, "abc" */
        CHECK(tu_same_hex(buf, 13,
                       "0100"
                       "0000"
                       "04030201"
                       "0300"
                       "616263"));
        struct chp_msg_hello out;
        REQUIRE_OK(chp_msg_hello_decode(buf, 13, &out));
        CHECK_EQ(out.version, CHP_PROTO_VERSION);
        CHECK_EQ(out.features, 0x01020304u);
        CHECK_EQ(out.token_len, 3);
        CHECK(out.token == buf + 10);
        CHECK_EQ(strict_failures(dec_hello, buf, 13), 0);

        /* empty token, and the largest one */
        struct chp_msg_hello empty = {CHP_PROTO_VERSION, 0, 0, NULL};
        CHECK_EQ(chp_msg_hello_encode(buf, 13, &empty), 10);
        CHECK_EQ(strict_failures(dec_hello, buf, 10), 0);
        free(buf);

        uint8_t *big = tu_pattern(CHP_TOKEN_MAX + 1, 5);
        uint8_t *enc = malloc(10 + CHP_TOKEN_MAX + 1);
        REQUIRE(big && enc);
        struct chp_msg_hello max = {CHP_PROTO_VERSION, 0, CHP_TOKEN_MAX, big};
        CHECK_EQ(chp_msg_hello_encode(enc, 10 + CHP_TOKEN_MAX, &max), 10 + CHP_TOKEN_MAX);
        CHECK_EQ(dec_exact(dec_hello, enc, 10 + CHP_TOKEN_MAX), 0);
        max.token_len = CHP_TOKEN_MAX + 1;
        CHECK_EQ(chp_msg_hello_encode(enc, 10 + CHP_TOKEN_MAX + 1, &max), -EINVAL);
        free(big);
        free(enc);
}

TEST(hello_rejects_reserved_and_long_token)
{
        uint8_t p[10 + 8];
        struct chp_msg_hello in = {CHP_PROTO_VERSION, 0, 8, (const uint8_t *)"12345678"};
        REQUIRE(chp_msg_hello_encode(p, sizeof(p), &in) == (ssize_t)sizeof(p));
        for (int i = 2; i < 4; i++) {
                uint8_t c[sizeof(p)];
                memcpy(c, p, sizeof(p));
                c[i] = 1;
                CHECK_EQ(dec_exact(dec_hello, c, sizeof(c)), -EBADMSG);
        }
        /* a token length over the limit is refused even when that many bytes follow */
        size_t n = 10 + CHP_TOKEN_MAX + 1;
        uint8_t *big = tu_pattern(n, 1);
        REQUIRE(big);
        memset(big, 0, 10);
        big[8] = (uint8_t)((CHP_TOKEN_MAX + 1) & 0xff);
        big[9] = (uint8_t)((CHP_TOKEN_MAX + 1) >> 8);
        CHECK_EQ(dec_exact(dec_hello, big, n), -EBADMSG);
        free(big);
}

TEST(open_round_trip)
{
        uint8_t *man = NULL;
        size_t man_len = make_manifest(3, 17, &man);
        REQUIRE(man_len);
        size_t n = 8 + man_len;
        uint8_t *buf = malloc(n);
        REQUIRE(buf);
        struct chp_msg_open in = {3600, man, man_len};
        CHECK_EQ(chp_msg_open_encode(buf, n - 1, &in), -ENOSPC);
        CHECK_EQ(chp_msg_open_encode(buf, n, &in), (ssize_t)n);
        CHECK(tu_same_hex(buf, 8, "100e000000000000"));
        CHECK(memcmp(buf + 8, man, man_len) == 0);
        struct chp_msg_open out;
        REQUIRE_OK(chp_msg_open_decode(buf, n, &out));
        CHECK_EQ(out.expires_in, 3600);
        CHECK_EQ(out.manifest_len, man_len);
        CHECK(out.manifest == buf + 8);

        /* the manifest is the rest of the payload: shorter than the 8-byte prefix is malformed,
         * anything from 8 bytes on decodes (the relay checks the manifest itself) */
        for (size_t k = 0; k <= n; k++) {
                int rc = dec_exact(dec_open, buf, k);
                CHECK_EQ(rc, k < 8 ? -EBADMSG : 0);
        }
        for (int i = 4; i < 8; i++) {
                uint8_t *c = tu_exact_copy(buf, n);
                REQUIRE(c);
                c[i] = 0x80;
                CHECK_EQ(chp_msg_open_decode(c, n, &out), -EBADMSG);
                free(c);
        }
        free(buf);
        free(man);
}

TEST(chunk_round_trip)
{
        uint8_t uid[CHP_UPLOAD_ID_BYTES];
        for (int i = 0; i < CHP_UPLOAD_ID_BYTES; i++)
                uid[i] = (uint8_t)(0xa0 + i);
        uint8_t *buf = malloc(CHP_CHUNK_PREFIX + 5);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_chunk_prefix_encode(buf, CHP_CHUNK_PREFIX - 1, uid, 7), -ENOSPC);
        CHECK_EQ(chp_msg_chunk_prefix_encode(buf, CHP_CHUNK_PREFIX, uid, 0x01020304u),
                 CHP_CHUNK_PREFIX);
        CHECK(tu_same_hex(buf, CHP_CHUNK_PREFIX, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf04030201"));
        memcpy(buf + CHP_CHUNK_PREFIX, "hello", 5);
        for (size_t k = 0; k <= CHP_CHUNK_PREFIX + 5; k++) {
                uint8_t *c = tu_exact_copy(buf, k);
                REQUIRE(c);
                struct chp_msg_chunk out;
                memset(&out, 0x5a, sizeof(out));
                int rc = chp_msg_chunk_decode(c, k, &out);
                if (k < CHP_CHUNK_PREFIX) {
                        CHECK_EQ(rc, -EBADMSG);
                        CHECK_EQ(out.index, 0x5a5a5a5au);
                } else {
                        CHECK_EQ(rc, 0);
                        CHECK(out.upload_id == c);
                        CHECK_EQ(out.index, 0x01020304u);
                        CHECK(out.data == c + CHP_CHUNK_PREFIX);
                        CHECK_EQ(out.len, k - CHP_CHUNK_PREFIX);
                }
                free(c);
        }
        free(buf);
}

TEST(have_round_trip)
{
        uint32_t counts[] = {0, 1, 5, CHP_HAVE_MAX};
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
                uint32_t count = counts[i];
                size_t n = 4 + (size_t)count * CHP_HASH_BYTES;
                uint8_t *addrs = tu_pattern((size_t)count * CHP_HASH_BYTES, count);
                uint8_t *buf = malloc(n);
                REQUIRE(addrs && buf);
                struct chp_msg_have in = {count, addrs};
                CHECK_EQ(chp_msg_have_encode(buf, n - 1, &in), -ENOSPC);
                CHECK_EQ(chp_msg_have_encode(buf, n, &in), (ssize_t)n);
                struct chp_msg_have out;
                REQUIRE_OK(chp_msg_have_decode(buf, n, &out));
                CHECK_EQ(out.count, count);
                CHECK(out.addrs == buf + 4);
                CHECK(memcmp(out.addrs, addrs, n - 4) == 0);
                if (count <= 5)
                        CHECK_EQ(strict_failures(dec_have, buf, n), 0);
                free(addrs);
                free(buf);
        }
        /* over the limit: refused both ways, even when the bytes are there */
        size_t n = 4 + (size_t)(CHP_HAVE_MAX + 1) * CHP_HASH_BYTES;
        uint8_t *buf = tu_pattern(n, 2);
        REQUIRE(buf);
        struct chp_msg_have in = {CHP_HAVE_MAX + 1, buf + 4};
        uint8_t *enc = malloc(n);
        REQUIRE(enc);
        CHECK_EQ(chp_msg_have_encode(enc, n, &in), -EINVAL);
        buf[0] = (uint8_t)((CHP_HAVE_MAX + 1) & 0xff);
        buf[1] = (uint8_t)((CHP_HAVE_MAX + 1) >> 8);
        buf[2] = buf[3] = 0;
        CHECK_EQ(dec_exact(dec_have, buf, n), -EBADMSG);
        /* a count whose byte size would wrap a 32-bit multiply */
        buf[0] = 0x00, buf[1] = 0x00, buf[2] = 0x00, buf[3] = 0x08; /* 2^27 * 32 = 2^32 */
        CHECK_EQ(dec_exact(dec_have, buf, 4), -EBADMSG);
        free(enc);
        free(buf);
}

TEST(get_chunk_round_trip)
{
        uint8_t addr[CHP_HASH_BYTES];
        memset(addr, 0xcd, sizeof(addr));
        struct chp_msg_get_chunk in = {addr, 0x10000, 0};
        uint8_t *buf = malloc(40);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_get_chunk_encode(buf, 39, &in), -ENOSPC);
        CHECK_EQ(chp_msg_get_chunk_encode(buf, 40, &in), 40);
        CHECK(tu_same_hex(buf + 32, 8, "0000010000000000"));
        struct chp_msg_get_chunk out;
        REQUIRE_OK(chp_msg_get_chunk_decode(buf, 40, &out));
        CHECK(out.addr == buf);
        CHECK_EQ(out.offset, 0x10000);
        CHECK_EQ(out.length, 0);
        CHECK_EQ(strict_failures(dec_get_chunk, buf, 40), 0);
        free(buf);
}

TEST(id_payloads)
{
        uint8_t *p = tu_pattern(CHP_HASH_BYTES, 4);
        REQUIRE(p);
        const uint8_t *id = NULL;
        REQUIRE_OK(chp_msg_id_decode(p, CHP_UPLOAD_ID_BYTES, CHP_UPLOAD_ID_BYTES, &id));
        CHECK(id == p);
        CHECK_EQ(strict_failures(dec_upload_id, p, CHP_UPLOAD_ID_BYTES), 0);
        CHECK_EQ(strict_failures(dec_file_id, p, CHP_HASH_BYTES), 0);
        /* DELETE's reply is empty: an id of zero bytes */
        id = NULL;
        CHECK_OK(chp_msg_id_decode(p, 0, 0, &id));
        CHECK_EQ(chp_msg_id_decode(p, 1, 0, &id), -EBADMSG);
        free(p);
}

/* OFFER: the file id, then the peer's key; exactly CHP_OFFER_BYTES. */
TEST(offer_golden_and_round_trip)
{
        uint8_t *fid = tu_pattern(CHP_HASH_BYTES, 1), *key = tu_pattern(CHP_KEY_BYTES, 2);
        uint8_t *buf = malloc(CHP_OFFER_BYTES);
        REQUIRE(fid && key && buf);
        CHECK_EQ(CHP_OFFER_BYTES, 64);
        struct chp_msg_offer in = {.file_id = fid, .peer_key = key};
        CHECK_EQ(chp_msg_offer_encode(buf, CHP_OFFER_BYTES - 1, &in), -ENOSPC);
        CHECK_EQ(chp_msg_offer_encode(buf, CHP_OFFER_BYTES, &in), CHP_OFFER_BYTES);
        CHECK(memcmp(buf, fid, CHP_HASH_BYTES) == 0);
        CHECK(memcmp(buf + CHP_HASH_BYTES, key, CHP_KEY_BYTES) == 0);
        struct chp_msg_offer out;
        CHECK_EQ(chp_msg_offer_decode(buf, CHP_OFFER_BYTES, &out), CHP_OFFER_BYTES);
        CHECK(out.file_id == buf && out.peer_key == buf + CHP_HASH_BYTES);
        CHECK_EQ(strict_failures(dec_offer, buf, CHP_OFFER_BYTES), 0);
        free(fid);
        free(key);
        free(buf);
}

/* PING: 0..CHP_PING_MAX opaque bytes, all of the payload, echoed as they came. */
TEST(ping_round_trip_and_bound)
{
        uint8_t *p = tu_pattern(CHP_PING_MAX + 1, 3), echo[CHP_PING_MAX + 1];
        REQUIRE(p);
        for (size_t len = 0; len <= CHP_PING_MAX; len += len < 3 ? 1 : 61) {
                uint8_t *c = tu_exact_copy(p, len);
                REQUIRE(c || len == 0);
                struct chp_msg_ping m = {NULL, 99};
                CHECK_EQ(chp_msg_ping_decode(c, len, &m), (ssize_t)len);
                CHECK(m.data == c && m.len == len);
                if (len)
                        CHECK_EQ(chp_msg_ping_encode(echo, len - 1, &m), -ENOSPC);
                CHECK_EQ(chp_msg_ping_encode(echo, sizeof(echo), &m), (ssize_t)len);
                CHECK(len == 0 || memcmp(echo, p, len) == 0);
                free(c);
        }
        struct chp_msg_ping m = {NULL, 99};
        CHECK_EQ(chp_msg_ping_decode(p, CHP_PING_MAX + 1, &m), -EBADMSG);
        CHECK(m.data == NULL && m.len == 99);
        m = (struct chp_msg_ping){p, CHP_PING_MAX + 1};
        CHECK_EQ(chp_msg_ping_encode(echo, sizeof(echo), &m), -EINVAL);
        free(p);
}

/* ---- replies ----------------------------------------------------------------------------- */

/* The named sizes the relay reserves its replies by are what the encoders write. */
TEST(named_reply_sizes)
{
        uint8_t buf[128], id[CHP_HASH_BYTES] = {0};
        struct chp_msg_hello_ok hello = {1, 0, 1, 1, 1};
        CHECK_EQ(chp_msg_hello_ok_encode(buf, sizeof(buf), &hello), CHP_HELLO_OK_BYTES);
        struct chp_msg_chunk_ok chunk = {7, CHP_CHUNK_DEDUP};
        CHECK_EQ(chp_msg_chunk_ok_encode(buf, sizeof(buf), &chunk), CHP_CHUNK_OK_BYTES);
        struct chp_msg_stat_ok stat = {.state = CHP_UPLOAD_COMPLETE, .size = 1};
        CHECK_EQ(chp_msg_stat_ok_encode(buf, sizeof(buf), &stat), CHP_STAT_OK_BYTES);
        CHECK_EQ(chp_msg_have_ok_encode(buf, sizeof(buf), 0, id), CHP_HAVE_OK_PREFIX);
        struct chp_msg_error err = {CHP_WE_MISSING, "", 0};
        CHECK_EQ(chp_msg_error_encode(buf, sizeof(buf), &err), CHP_ERROR_PREFIX);
        struct chp_msg_open_ok open = {id, id, CHP_UPLOAD_COMPLETE, 0, NULL};
        CHECK_EQ(chp_msg_open_ok_encode(buf, sizeof(buf), &open), CHP_OPEN_OK_PREFIX);
        /* a MANIFEST reply is its prefix, then the manifest */
        uint8_t *man = NULL;
        size_t mlen = make_manifest(1, 0, &man);
        REQUIRE(man);
        uint8_t *out = malloc(CHP_MANIFEST_PREFIX + mlen);
        REQUIRE(out);
        struct chp_msg_manifest mr = {CHP_UPLOAD_COMPLETE, man, (uint32_t)mlen, NULL};
        CHECK_EQ(chp_msg_manifest_encode(out, CHP_MANIFEST_PREFIX + mlen, &mr),
                 (ssize_t)(CHP_MANIFEST_PREFIX + mlen));
        free(out);
        free(man);
}

TEST(hello_ok_golden_and_round_trip)
{
        struct chp_msg_hello_ok in = {1, 0, 8u << 20 | 64, 64u << 20, 256};
        uint8_t *buf = malloc(20);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_hello_ok_encode(buf, 19, &in), -ENOSPC);
        CHECK_EQ(chp_msg_hello_ok_encode(buf, 20, &in), 20);
        CHECK(tu_same_hex(buf, 20,
                       "0100"
                       "0000"
                       "00000000"
                       "40008000"
                       "00000004"
                       "00010000"));
        struct chp_msg_hello_ok out;
        REQUIRE_OK(chp_msg_hello_ok_decode(buf, 20, &out));
        CHECK_EQ(out.version, 1);
        CHECK_EQ(out.features, 0);
        CHECK_EQ(out.max_frame, in.max_frame);
        CHECK_EQ(out.window_bytes, in.window_bytes);
        CHECK_EQ(out.max_inflight, 256);
        CHECK_EQ(strict_failures(dec_hello_ok, buf, 20), 0);
        buf[3] = 1;
        CHECK_EQ(dec_exact(dec_hello_ok, buf, 20), -EBADMSG);
        free(buf);
}

TEST(open_ok_round_trip)
{
        uint8_t uid[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
        memset(uid, 0x11, sizeof(uid));
        memset(fid, 0x22, sizeof(fid));
        uint8_t missing[2] = {0x05, 0x01}; /* chunks 0, 2 and 8 of 9 */
        struct chp_msg_open_ok in = {uid, fid, CHP_UPLOAD_PARTIAL, 9, missing};
        size_t n = 56 + 2;
        uint8_t *buf = malloc(n);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_open_ok_encode(buf, n - 1, &in), -ENOSPC);
        CHECK_EQ(chp_msg_open_ok_encode(buf, n, &in), (ssize_t)n);
        CHECK(tu_same_hex(buf + 48, 10, "00000000090000000501"));
        struct chp_msg_open_ok out;
        REQUIRE_OK(chp_msg_open_ok_decode(buf, n, &out));
        CHECK(out.upload_id == buf && out.file_id == buf + 16 && out.missing == buf + 56);
        CHECK_EQ(out.state, CHP_UPLOAD_PARTIAL);
        CHECK_EQ(out.chunk_count, 9);
        CHECK(chp_bit(out.missing, 0) && !chp_bit(out.missing, 1) && chp_bit(out.missing, 2));
        CHECK(chp_bit(out.missing, 8));
        CHECK_EQ(strict_failures(dec_open_ok, buf, n), 0);

        /* reserved bytes, unknown state, too many chunks */
        for (size_t i = 49; i < 52; i++) {
                uint8_t *c = tu_exact_copy(buf, n);
                REQUIRE(c);
                c[i] = 1;
                CHECK_EQ(dec_exact(dec_open_ok, c, n), -EBADMSG);
                free(c);
        }
        buf[48] = 2;
        CHECK_EQ(dec_exact(dec_open_ok, buf, n), -EBADMSG);
        in.state = 2;
        CHECK_EQ(chp_msg_open_ok_encode(buf, n, &in), -EINVAL);
        in.state = CHP_UPLOAD_COMPLETE;
        in.chunk_count = CHP_MANIFEST_MAX_CHUNKS + 1;
        CHECK_EQ(chp_msg_open_ok_encode(buf, n, &in), -EINVAL);
        free(buf);

        /* COMPLETE, no chunks: just the 56-byte prefix */
        in = (struct chp_msg_open_ok){uid, fid, CHP_UPLOAD_COMPLETE, 0, NULL};
        buf = malloc(56);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_open_ok_encode(buf, 56, &in), 56);
        CHECK_EQ(strict_failures(dec_open_ok, buf, 56), 0);
        /* a chunk count over the limit is refused before its bitmap is looked for */
        buf[52] = 0x01, buf[53] = 0x00, buf[54] = 0x10, buf[55] = 0x00; /* 2^20 + 1 */
        CHECK_EQ(dec_exact(dec_open_ok, buf, 56), -EBADMSG);
        free(buf);
}

TEST(chunk_ok_golden_and_round_trip)
{
        struct chp_msg_chunk_ok in = {41, CHP_CHUNK_DEDUP};
        uint8_t *buf = malloc(8);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_chunk_ok_encode(buf, 7, &in), -ENOSPC);
        CHECK_EQ(chp_msg_chunk_ok_encode(buf, 8, &in), 8);
        CHECK(tu_same_hex(buf, 8, "2900000001000000"));
        struct chp_msg_chunk_ok out;
        REQUIRE_OK(chp_msg_chunk_ok_decode(buf, 8, &out));
        CHECK_EQ(out.index, 41);
        CHECK_EQ(out.flags, CHP_CHUNK_DEDUP);
        CHECK_EQ(strict_failures(dec_chunk_ok, buf, 8), 0);
        /* flags v1 does not define are refused both ways */
        buf[4] = 2;
        CHECK_EQ(dec_exact(dec_chunk_ok, buf, 8), -EBADMSG);
        buf[4] = 0;
        buf[7] = 0x80;
        CHECK_EQ(dec_exact(dec_chunk_ok, buf, 8), -EBADMSG);
        in.flags = 2;
        CHECK_EQ(chp_msg_chunk_ok_encode(buf, 8, &in), -EINVAL);
        free(buf);
}

TEST(manifest_reply_round_trip)
{
        uint8_t *man = NULL;
        size_t man_len = make_manifest(10, 5, &man);
        REQUIRE(man_len);
        uint8_t present[2] = {0xff, 0x02}; /* chunks 0..7 and 9 */

        /* PARTIAL: prefix, manifest, bitmap */
        struct chp_msg_manifest in = {CHP_UPLOAD_PARTIAL, man, (uint32_t)man_len, present};
        size_t n = 8 + man_len + 2;
        uint8_t *buf = malloc(n);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_manifest_encode(buf, n - 1, &in), -ENOSPC);
        CHECK_EQ(chp_msg_manifest_encode(buf, n, &in), (ssize_t)n);
        uint8_t want[4] = {(uint8_t)man_len, (uint8_t)(man_len >> 8), 0, 0};
        CHECK(tu_same_hex(buf, 4, "00000000"));
        CHECK(memcmp(buf + 4, want, 4) == 0);
        struct chp_msg_manifest out;
        REQUIRE_OK(chp_msg_manifest_decode(buf, n, &out));
        CHECK_EQ(out.state, CHP_UPLOAD_PARTIAL);
        CHECK_EQ(out.manifest_len, man_len);
        CHECK(out.manifest == buf + 8);
        CHECK(out.present == buf + 8 + man_len);
        CHECK(chp_bit(out.present, 9) && !chp_bit(out.present, 8));
        CHECK_EQ(strict_failures(dec_manifest, buf, n), 0);
        for (size_t i = 1; i < 4; i++) {
                uint8_t *c = tu_exact_copy(buf, n);
                REQUIRE(c);
                c[i] = 0x40;
                CHECK_EQ(dec_exact(dec_manifest, c, n), -EBADMSG);
                free(c);
        }
        /* a manifest that does not decode is refused both ways */
        uint8_t *c = tu_exact_copy(buf, n);
        REQUIRE(c);
        c[8 + 4] = 2; /* manifest version */
        CHECK_EQ(dec_exact(dec_manifest, c, n), -EBADMSG);
        free(c);
        uint8_t *bad_man = tu_exact_copy(man, man_len);
        REQUIRE(bad_man);
        bad_man[4] = 2;
        struct chp_msg_manifest bad = {CHP_UPLOAD_COMPLETE, bad_man, (uint32_t)man_len, NULL};
        CHECK_EQ(chp_msg_manifest_encode(buf, n, &bad), -EINVAL);
        bad.state = CHP_UPLOAD_PARTIAL;
        bad.present = present;
        CHECK_EQ(chp_msg_manifest_encode(buf, n, &bad), -EINVAL);
        free(bad_man);
        in.state = 2;
        CHECK_EQ(chp_msg_manifest_encode(buf, n, &in), -EINVAL);
        buf[0] = 2;
        CHECK_EQ(dec_exact(dec_manifest, buf, n), -EBADMSG);
        free(buf);

        /* COMPLETE: no bitmap, so PARTIAL's bitmap bytes are trailing garbage there */
        in.state = CHP_UPLOAD_COMPLETE;
        n = 8 + man_len;
        buf = malloc(n + 2);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_manifest_encode(buf, n + 2, &in), (ssize_t)n);
        REQUIRE_OK(chp_msg_manifest_decode(buf, n, &out));
        CHECK_EQ(out.state, CHP_UPLOAD_COMPLETE);
        CHECK(out.present == NULL);
        CHECK_EQ(strict_failures(dec_manifest, buf, n), 0);
        memcpy(buf + n, present, 2);
        CHECK_EQ(dec_exact(dec_manifest, buf, n + 2), -EBADMSG);
        free(buf);
        free(man);

        /* an empty file: a PARTIAL reply has a zero-byte bitmap */
        man_len = make_manifest(0, 0, &man);
        REQUIRE(man_len == CHP_MANIFEST_HEADER);
        in = (struct chp_msg_manifest){CHP_UPLOAD_PARTIAL, man, (uint32_t)man_len, NULL};
        buf = malloc(8 + man_len);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_manifest_encode(buf, 8 + man_len, &in), (ssize_t)(8 + man_len));
        CHECK_EQ(strict_failures(dec_manifest, buf, 8 + man_len), 0);
        free(buf);
        free(man);
}

TEST(manifest_reply_length_field_cannot_overrun)
{
        /* a manifest_len pointing past the payload, up to UINT32_MAX */
        uint32_t lens[] = {CHP_MANIFEST_HEADER + 1, 1u << 31, UINT32_MAX, UINT32_MAX - 7};
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                uint8_t *p = tu_pattern(8 + CHP_MANIFEST_HEADER, 9);
                REQUIRE(p);
                p[0] = CHP_UPLOAD_COMPLETE, p[1] = p[2] = p[3] = 0;
                p[4] = (uint8_t)lens[i], p[5] = (uint8_t)(lens[i] >> 8);
                p[6] = (uint8_t)(lens[i] >> 16), p[7] = (uint8_t)(lens[i] >> 24);
                CHECK_EQ(dec_exact(dec_manifest, p, 8 + CHP_MANIFEST_HEADER), -EBADMSG);
                free(p);
        }
}

TEST(chunk_data_round_trip)
{
        uint8_t addr[CHP_HASH_BYTES];
        memset(addr, 0x77, sizeof(addr));
        struct chp_msg_chunk_data in = {addr, 3, 8, NULL, 0};
        uint8_t *buf = malloc(CHP_CHUNK_DATA_PREFIX + 5);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_chunk_data_prefix_encode(buf, CHP_CHUNK_DATA_PREFIX - 1, &in), -ENOSPC);
        CHECK_EQ(chp_msg_chunk_data_prefix_encode(buf, CHP_CHUNK_DATA_PREFIX, &in),
                 CHP_CHUNK_DATA_PREFIX);
        CHECK(tu_same_hex(buf + 32, 8, "0300000008000000"));
        memcpy(buf + CHP_CHUNK_DATA_PREFIX, "12345", 5);
        /* bytes 3..7 of an 8-byte chunk: every shorter prefix of the data is fine, one more byte
         * would run past the chunk's end */
        for (size_t k = 0; k <= CHP_CHUNK_DATA_PREFIX + 5; k++) {
                uint8_t *c = tu_exact_copy(buf, k);
                REQUIRE(c);
                struct chp_msg_chunk_data out;
                memset(&out, 0x5a, sizeof(out));
                int rc = chp_msg_chunk_data_decode(c, k, &out);
                if (k < CHP_CHUNK_DATA_PREFIX) {
                        CHECK_EQ(rc, -EBADMSG);
                        CHECK_EQ(out.offset, 0x5a5a5a5au);
                } else {
                        CHECK_EQ(rc, 0);
                        CHECK(out.addr == c);
                        CHECK_EQ(out.offset, 3);
                        CHECK_EQ(out.chunk_len, 8);
                        CHECK(out.data == c + CHP_CHUNK_DATA_PREFIX);
                        CHECK_EQ(out.len, k - CHP_CHUNK_DATA_PREFIX);
                }
                free(c);
        }
        uint8_t *longer = malloc(CHP_CHUNK_DATA_PREFIX + 6);
        REQUIRE(longer);
        memcpy(longer, buf, CHP_CHUNK_DATA_PREFIX + 5);
        longer[CHP_CHUNK_DATA_PREFIX + 5] = '6';
        CHECK_EQ(dec_chunk_data(longer, CHP_CHUNK_DATA_PREFIX + 6), -EBADMSG);
        free(longer);
        /* an offset past the chunk's end, and one whose sum with the data would wrap */
        buf[32] = 9;
        CHECK_EQ(dec_exact(dec_chunk_data, buf, CHP_CHUNK_DATA_PREFIX), -EBADMSG);
        buf[32] = 0xff, buf[33] = 0xff, buf[34] = 0xff, buf[35] = 0xff;
        buf[36] = 0xff, buf[37] = 0xff, buf[38] = 0xff, buf[39] = 0xff;
        CHECK_EQ(dec_exact(dec_chunk_data, buf, CHP_CHUNK_DATA_PREFIX), 0);
        CHECK_EQ(dec_exact(dec_chunk_data, buf, CHP_CHUNK_DATA_PREFIX + 1), -EBADMSG);
        free(buf);
}

TEST(have_ok_round_trip)
{
        uint32_t counts[] = {0, 1, 8, 9, CHP_HAVE_MAX};
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
                uint32_t count = counts[i];
                size_t n = 4 + chp_bitmap_bytes(count);
                uint8_t *map = tu_pattern(chp_bitmap_bytes(count), count);
                uint8_t *buf = malloc(n);
                REQUIRE(map && buf);
                CHECK_EQ(chp_msg_have_ok_encode(buf, n - 1, count, map), -ENOSPC);
                CHECK_EQ(chp_msg_have_ok_encode(buf, n, count, map), (ssize_t)n);
                uint32_t got = 0;
                const uint8_t *gmap = NULL;
                REQUIRE_OK(chp_msg_have_ok_decode(buf, n, &got, &gmap));
                CHECK_EQ(got, count);
                CHECK(gmap == buf + 4);
                CHECK(memcmp(gmap, map, n - 4) == 0);
                CHECK_EQ(strict_failures(dec_have_ok, buf, n), 0);
                free(map);
                free(buf);
        }
        uint8_t map[251] = {0};
        uint8_t buf[4 + 251];
        CHECK_EQ(chp_msg_have_ok_encode(buf, sizeof(buf), CHP_HAVE_MAX + 1, map), -EINVAL);
        buf[0] = (uint8_t)((CHP_HAVE_MAX + 1) & 0xff);
        buf[1] = (uint8_t)((CHP_HAVE_MAX + 1) >> 8);
        buf[2] = buf[3] = 0;
        memset(buf + 4, 0, 251);
        CHECK_EQ(dec_exact(dec_have_ok, buf, sizeof(buf)), -EBADMSG);
}

TEST(stat_ok_golden_and_round_trip)
{
        struct chp_msg_stat_ok in = {
            .state = CHP_UPLOAD_COMPLETE,
            .size = 0x0102030405060708ull,
            .chunk_count = 3,
            .chunk_size = CHP_CHUNK_MIN,
            .chunks_present = 2,
            .created = 1700000000,
            .expires = 0,
        };
        uint8_t *buf = malloc(40);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_stat_ok_encode(buf, 39, &in), -ENOSPC);
        CHECK_EQ(chp_msg_stat_ok_encode(buf, 40, &in), 40);
        CHECK(tu_same_hex(buf, 40,
                       "01000000"
                       "03000000"
                       "0807060504030201"
                       "00000100"
                       "02000000"
                       "00f1536500000000"
                       "0000000000000000"));
        struct chp_msg_stat_ok out;
        REQUIRE_OK(chp_msg_stat_ok_decode(buf, 40, &out));
        CHECK_EQ(out.state, in.state);
        CHECK(out.size == in.size);
        CHECK_EQ(out.chunk_count, 3);
        CHECK_EQ(out.chunk_size, CHP_CHUNK_MIN);
        CHECK_EQ(out.chunks_present, 2);
        CHECK(out.created == in.created && out.expires == 0);
        CHECK_EQ(strict_failures(dec_stat_ok, buf, 40), 0);
        /* byte 1 is the flags: the one known bit decodes, any other is refused; 2..3 reserved */
        for (size_t i = 1; i < 4; i++) {
                uint8_t *c = tu_exact_copy(buf, 40);
                REQUIRE(c);
                c[i] = 2;
                CHECK_EQ(dec_exact(dec_stat_ok, c, 40), -EBADMSG);
                free(c);
        }
        buf[1] = CHP_STAT_TIMES_WITHHELD;
        REQUIRE_OK(chp_msg_stat_ok_decode(buf, 40, &out));
        CHECK_EQ(out.flags, CHP_STAT_TIMES_WITHHELD);
        buf[1] = 0;
        in.flags = 0x80;
        CHECK_EQ(chp_msg_stat_ok_encode(buf, 40, &in), -EINVAL);
        in.flags = 0;
        buf[0] = 2;
        CHECK_EQ(dec_exact(dec_stat_ok, buf, 40), -EBADMSG);
        in.state = 2;
        CHECK_EQ(chp_msg_stat_ok_encode(buf, 40, &in), -EINVAL);
        free(buf);
}

TEST(error_golden_and_round_trip)
{
        struct chp_msg_error in = {CHP_WE_MISSING, "missing", 7};
        uint8_t *buf = malloc(13);
        REQUIRE(buf);
        CHECK_EQ(chp_msg_error_encode(buf, 12, &in), -ENOSPC);
        CHECK_EQ(chp_msg_error_encode(buf, 13, &in), 13);
        CHECK(tu_same_hex(buf, 13, "0600000007006d697373696e67"));
        struct chp_msg_error out;
        REQUIRE_OK(chp_msg_error_decode(buf, 13, &out));
        CHECK_EQ(out.code, CHP_WE_MISSING);
        CHECK_EQ(out.msg_len, 7);
        CHECK(out.msg == (const char *)buf + 6);
        CHECK_EQ(strict_failures(dec_error, buf, 13), 0);
        free(buf);

        /* an empty message; a long one is cut to CHP_ERROR_MSG_MAX; longer on the wire is
         * refused even when the bytes are there */
        uint8_t small[6];
        struct chp_msg_error empty = {CHP_WE_INTERNAL, NULL, 0};
        CHECK_EQ(chp_msg_error_encode(small, sizeof(small), &empty), 6);
        CHECK_EQ(strict_failures(dec_error, small, 6), 0);
        char *text = (char *)tu_pattern(CHP_ERROR_MSG_MAX + 10, 8);
        uint8_t *enc = malloc(6 + CHP_ERROR_MSG_MAX + 10);
        REQUIRE(text && enc);
        struct chp_msg_error lng = {CHP_WE_BAD_FRAME, text, CHP_ERROR_MSG_MAX + 10};
        CHECK_EQ(chp_msg_error_encode(enc, 6 + CHP_ERROR_MSG_MAX + 10, &lng),
                 6 + CHP_ERROR_MSG_MAX);
        CHECK_EQ(dec_exact(dec_error, enc, 6 + CHP_ERROR_MSG_MAX), 0);
        memcpy(enc + 6, text, CHP_ERROR_MSG_MAX + 1);
        enc[4] = (uint8_t)((CHP_ERROR_MSG_MAX + 1) & 0xff);
        enc[5] = (uint8_t)((CHP_ERROR_MSG_MAX + 1) >> 8);
        CHECK_EQ(dec_exact(dec_error, enc, 6 + CHP_ERROR_MSG_MAX + 1), -EBADMSG);
        free(text);
        free(enc);
}

/* Decoders write their out-parameters only on success. */
TEST(decoders_leave_out_alone_on_failure)
{
        uint8_t junk[3] = {0xff, 0xff, 0xff};
        union {
                struct chp_msg_hello hello;
                struct chp_msg_open open;
                struct chp_msg_have have;
                struct chp_msg_get_chunk get_chunk;
                struct chp_msg_hello_ok hello_ok;
                struct chp_msg_open_ok open_ok;
                struct chp_msg_chunk_ok chunk_ok;
                struct chp_msg_manifest manifest;
                struct chp_msg_stat_ok stat_ok;
                struct chp_msg_error error;
                struct chp_msg_offer offer;
                struct chp_msg_ping ping;
                unsigned char bytes[128];
        } u, ref;
        memset(&ref, 0x5a, sizeof(ref));
#define UNTOUCHED(call)                                                                            \
        do {                                                                                       \
                memcpy(&u, &ref, sizeof(u));                                                       \
                CHECK_EQ((call), -EBADMSG);                                                        \
                CHECK(memcmp(&u, &ref, sizeof(u)) == 0);                                           \
        } while (0)
        UNTOUCHED(chp_msg_hello_decode(junk, sizeof(junk), &u.hello));
        UNTOUCHED(chp_msg_open_decode(junk, sizeof(junk), &u.open));
        UNTOUCHED(chp_msg_have_decode(junk, sizeof(junk), &u.have));
        UNTOUCHED(chp_msg_get_chunk_decode(junk, sizeof(junk), &u.get_chunk));
        UNTOUCHED(chp_msg_hello_ok_decode(junk, sizeof(junk), &u.hello_ok));
        UNTOUCHED(chp_msg_open_ok_decode(junk, sizeof(junk), &u.open_ok));
        UNTOUCHED(chp_msg_chunk_ok_decode(junk, sizeof(junk), &u.chunk_ok));
        UNTOUCHED(chp_msg_manifest_decode(junk, sizeof(junk), &u.manifest));
        UNTOUCHED(chp_msg_stat_ok_decode(junk, sizeof(junk), &u.stat_ok));
        UNTOUCHED(chp_msg_error_decode(junk, sizeof(junk), &u.error));
        UNTOUCHED(chp_msg_offer_decode(junk, sizeof(junk), &u.offer));
        uint8_t big[CHP_PING_MAX + 1] = {0};
        UNTOUCHED(chp_msg_ping_decode(big, sizeof(big), &u.ping));
#undef UNTOUCHED
        const uint8_t *id = (const uint8_t *)&ref;
        CHECK_EQ(chp_msg_id_decode(junk, sizeof(junk), 16, &id), -EBADMSG);
        CHECK(id == (const uint8_t *)&ref);
        uint32_t count = 77;
        const uint8_t *map = id;
        CHECK_EQ(chp_msg_have_ok_decode(junk, sizeof(junk), &count, &map), -EBADMSG);
        CHECK(count == 77 && map == id);
}

/* ---- a stream of frames ------------------------------------------------------------------ */

/* Several frames back to back, read the way a connection reads them: headers and payloads fed in
 * pieces, -EAGAIN until a header is complete. */
TEST(frame_stream)
{
        uint8_t stream[256];
        size_t n = 0;
        struct chp_msg_hello hello = {CHP_PROTO_VERSION, 0, 0, NULL};
        ssize_t len = chp_msg_hello_encode(stream + n + CHP_FRAME_HEADER, 64, &hello);
        REQUIRE(len == 10);
        chp_frame_header_encode(stream + n, CHP_F_HELLO, 1, (uint32_t)len);
        n += CHP_FRAME_HEADER + (size_t)len;
        uint8_t uid[CHP_UPLOAD_ID_BYTES] = {9};
        len = chp_msg_chunk_prefix_encode(stream + n + CHP_FRAME_HEADER, 64, uid, 4);
        REQUIRE(len == CHP_CHUNK_PREFIX);
        memcpy(stream + n + CHP_FRAME_HEADER + len, "xyz", 3);
        chp_frame_header_encode(stream + n, CHP_F_CHUNK, 2, (uint32_t)len + 3);
        n += CHP_FRAME_HEADER + (size_t)len + 3;
        chp_frame_header_encode(stream + n, CHP_F_PING, 3, 0);
        n += CHP_FRAME_HEADER;

        const uint8_t want_types[] = {CHP_F_HELLO, CHP_F_CHUNK, CHP_F_PING};
        size_t off = 0, frames = 0;
        while (off < n) {
                struct chp_frame_header fh;
                ssize_t rc = -EAGAIN;
                size_t avail = 0;
                while (rc == -EAGAIN && off + avail <= n) {
                        uint8_t *c = tu_exact_copy(stream + off, avail);
                        REQUIRE(c);
                        rc = chp_frame_header_decode(c, avail, &fh);
                        free(c);
                        avail++;
                }
                REQUIRE(rc == CHP_FRAME_HEADER);
                REQUIRE(frames < sizeof(want_types));
                CHECK_EQ(fh.type, want_types[frames]);
                CHECK_EQ(fh.id, frames + 1);
                REQUIRE(off + CHP_FRAME_HEADER + fh.len <= n);
                const uint8_t *pl = stream + off + CHP_FRAME_HEADER;
                if (fh.type == CHP_F_CHUNK) {
                        struct chp_msg_chunk ch;
                        REQUIRE_OK(chp_msg_chunk_decode(pl, fh.len, &ch));
                        CHECK_EQ(ch.index, 4);
                        CHECK(ch.len == 3 && memcmp(ch.data, "xyz", 3) == 0);
                }
                off += CHP_FRAME_HEADER + fh.len;
                frames++;
        }
        CHECK_EQ(frames, 3);
        CHECK_EQ(off, n);
}

/* ---- bitmaps and names ------------------------------------------------------------------- */

TEST(bitmap_helpers)
{
        CHECK_EQ(chp_bitmap_bytes(0), 0);
        CHECK_EQ(chp_bitmap_bytes(1), 1);
        CHECK_EQ(chp_bitmap_bytes(8), 1);
        CHECK_EQ(chp_bitmap_bytes(9), 2);
        CHECK_EQ(chp_bitmap_bytes(CHP_HAVE_MAX), 250);
        CHECK_EQ(chp_bitmap_bytes(UINT32_MAX), 536870912ull); /* no 32-bit wrap */

        uint8_t map[4] = {0};
        chp_bit_set(map, 0);
        CHECK_EQ(map[0], 0x01);
        chp_bit_set(map, 7);
        CHECK_EQ(map[0], 0x81);
        chp_bit_set(map, 8);
        CHECK_EQ(map[1], 0x01);
        chp_bit_set(map, 31);
        CHECK_EQ(map[3], 0x80);
        chp_bit_set(map, 31); /* idempotent */
        CHECK_EQ(map[3], 0x80);
        CHECK_EQ(map[2], 0);
        for (uint32_t i = 0; i < 32; i++)
                CHECK_EQ(chp_bit(map, i), i == 0 || i == 7 || i == 8 || i == 31);

        /* any set of bits reads back as set, and nothing else does */
        uint8_t big[64] = {0};
        uint8_t *want = tu_pattern(512, 11);
        REQUIRE(want);
        for (uint32_t i = 0; i < 512; i++)
                if (want[i] & 1)
                        chp_bit_set(big, i);
        for (uint32_t i = 0; i < 512; i++)
                CHECK_EQ(chp_bit(big, i), want[i] & 1);
        free(want);
}

TEST(frame_type_names)
{
        static const struct {
                uint8_t type;
                const char *name;
        } names[] = {
            {0x01, "HELLO"},      {0x02, "OPEN"},         {0x03, "CHUNK"},     {0x04, "COMMIT"},
            {0x05, "HAVE"},       {0x06, "GET_MANIFEST"}, {0x07, "GET_CHUNK"}, {0x08, "STAT"},
            {0x09, "DELETE"},     {0x0a, "PING"},         {0x81, "HELLO_OK"},  {0x82, "OPEN_OK"},
            {0x83, "CHUNK_OK"},   {0x84, "COMMIT_OK"},    {0x85, "HAVE_OK"},   {0x86, "MANIFEST"},
            {0x87, "CHUNK_DATA"}, {0x88, "STAT_OK"},      {0x89, "DELETE_OK"}, {0x8a, "PONG"},
            {0x0b, "PREFETCH"},   {0x0c, "OFFER"},        {0x8b, "PREFETCH_OK"},
            {0x8c, "OFFER_OK"},   {0xff, "ERROR"},
        };
        int named = 0;
        for (unsigned t = 0; t < 256; t++) {
                const char *got = chp_frame_type_name((uint8_t)t);
                REQUIRE(got);
                const char *want = "?";
                for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                        if (names[i].type == t)
                                want = names[i].name;
                if (strcmp(got, want) != 0) {
                        fprintf(stderr, "  type 0x%02x: got %s, want %s\n", t, got, want);
                        harness_failed_now = 1;
                }
                /* exactly the types the header decoder accepts have names */
                CHECK_EQ(strcmp(got, "?") != 0, chp_frame_max_payload((uint8_t)t) != 0);
                named += strcmp(got, "?") != 0;
        }
        CHECK_EQ(named, 25);
}

TEST(file_request_with_and_without_origin)
{
        uint8_t id[32], key[32], buf[128];
        memset(id, 1, 32);
        memset(key, 2, 32);
        struct chp_msg_file_req m = {.file_id = id}, back;
        ssize_t n = chp_msg_file_req_encode(buf, sizeof(buf), &m);
        CHECK_EQ(n, 32);
        CHECK_OK(chp_msg_file_req_decode(buf, (size_t)n, &back));
        CHECK(!back.has_origin && back.file_id == buf);
        m = (struct chp_msg_file_req){.file_id = id, .has_origin = true, .origin_key = key,
                                      .origin_addr = "relay.a:7700", .addr_len = 12};
        n = chp_msg_file_req_encode(buf, sizeof(buf), &m);
        CHECK_EQ(n, 32 + 32 + 1 + 12);
        CHECK_OK(chp_msg_file_req_decode(buf, (size_t)n, &back));
        CHECK(back.has_origin && back.addr_len == 12 && memcmp(back.origin_addr, "relay.a:7700", 12) == 0 &&
              memcmp(back.origin_key, key, 32) == 0);
        for (ssize_t k = 0; k < n; k++) /* every other length is malformed */
                if (k != 32)
                        CHECK_EQ(chp_msg_file_req_decode(buf, (size_t)k, &back), -EBADMSG);
        buf[64] = 0; /* an empty address */
        CHECK_EQ(chp_msg_file_req_decode(buf, 65, &back), -EBADMSG);
        m.addr_len = 0;
        CHECK_EQ(chp_msg_file_req_encode(buf, sizeof(buf), &m), -EINVAL);
}

TEST(wire_strerror)
{
        const char *seen[CHP_WE_MAX + 1] = {0};
        for (uint32_t code = CHP_WE_BAD_FRAME; code <= CHP_WE_QUARANTINED; code++) {
                const char *s = chp_wire_strerror(code);
                REQUIRE(s);
                CHECK(strcmp(s, "unknown error") != 0);
                CHECK(strlen(s) > 0);
                for (uint32_t j = 1; j < code; j++)
                        CHECK(seen[j] == NULL || strcmp(seen[j], s) != 0);
                seen[code] = s;
        }
        CHECK(strcmp(chp_wire_strerror(0), "unknown error") == 0);
        CHECK(strcmp(chp_wire_strerror(CHP_WE_QUARANTINED + 1), "unknown error") == 0);
        CHECK(strcmp(chp_wire_strerror(UINT32_MAX), "unknown error") == 0);
}

/* The codec allocates nothing (proto.h): encoders and decoders of every request and reply kind
 * run with the Nth allocation failing; the sweep must find no allocation to fail. */
static int proto_pass(void *arg)
{
        (void)arg;
        uint8_t buf[256], hdr[CHP_FRAME_HEADER];
        struct chp_frame_header h;
        chp_frame_header_encode(hdr, CHP_F_HELLO, 7, 8);
        if (chp_frame_header_decode(hdr, sizeof(hdr), &h) != CHP_FRAME_HEADER || h.id != 7)
                return 1;
        struct chp_msg_hello hello = {.version = CHP_PROTO_VERSION}, hd;
        ssize_t n = chp_msg_hello_encode(buf, sizeof(buf), &hello);
        if (n < 0)
                return (int)n;
        int rc = chp_msg_hello_decode(buf, (size_t)n, &hd);
        if (rc)
                return rc;
        struct chp_msg_hello_ok ok = {.version = CHP_PROTO_VERSION, .window_bytes = 1 << 20}, od;
        if ((n = chp_msg_hello_ok_encode(buf, sizeof(buf), &ok)) < 0)
                return (int)n;
        if ((rc = chp_msg_hello_ok_decode(buf, (size_t)n, &od)))
                return rc;
        return od.window_bytes == ok.window_bytes ? 0 : 1;
}

TEST(allocation_failure)
{
        /* the switch itself: armed for the second allocation, only that one fails */
        void *(*volatile alloc)(size_t) = malloc;
        chp_alloc_fail_after(2);
        void *a = alloc(8), *b = alloc(8), *c = alloc(8);
        CHECK(a && !b && c && chp_alloc_failed());
        chp_alloc_fail_after(0);
        free(a);
        free(c);
        CHECK_EQ(tu_alloc_sweep("proto codec", proto_pass, NULL, 0), 0);
}

HARNESS_MAIN()
