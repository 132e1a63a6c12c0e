/* SHA-256 against published vectors (FIPS 180-2 examples and the empty string), streaming in
 * odd-sized pieces must equal one-shot, the hex codec, and err.h's table of codes. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "hash.h"
#include "err.h"
#include "xxh.h"

static void hex_of(const char *msg, size_t len, char out[CHP_HASH_HEXBYTES])
{
        uint8_t d[CHP_HASH_BYTES];
        if (chp_sha256(msg, len, d) != 0) {
                out[0] = '\0';
                return;
        }
        chp_hex_encode(d, sizeof(d), out);
}

TEST(sha256_vectors)
{
        char hex[CHP_HASH_HEXBYTES];
        hex_of("", 0, hex);
        CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
        hex_of("abc", 3, hex);
        CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
        const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        hex_of(m, strlen(m), hex);
        CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
}

TEST(sha256_million_a_streaming)
{
        struct chp_sha256 h;
        REQUIRE_OK(chp_sha256_init(&h));
        char block[1000];
        memset(block, 'a', sizeof(block));
        for (int i = 0; i < 1000; i++)
                CHECK_OK(chp_sha256_update(&h, block, sizeof(block)));
        uint8_t d[CHP_HASH_BYTES];
        CHECK_OK(chp_sha256_final(&h, d));
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(d, sizeof(d), hex);
        CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);

        /* reset reuses the context: odd-sized pieces give the one-shot digest */
        uint8_t buf[4099], one[CHP_HASH_BYTES], streamed[CHP_HASH_BYTES];
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t)(i * 131 + 7);
        CHECK_OK(chp_sha256(buf, sizeof(buf), one));
        CHECK_OK(chp_sha256_reset(&h));
        size_t off = 0, step = 1;
        while (off < sizeof(buf)) {
                size_t n = step < sizeof(buf) - off ? step : sizeof(buf) - off;
                CHECK_OK(chp_sha256_update(&h, buf + off, n));
                off += n;
                step = step * 3 + 1;
        }
        CHECK_OK(chp_sha256_final(&h, streamed));
        CHECK(memcmp(one, streamed, sizeof(one)) == 0);
        chp_sha256_free(&h);
        chp_sha256_free(NULL);
}

TEST(hex_codec)
{
        uint8_t in[4] = {0x00, 0xab, 0x7f, 0xff}, out[4] = {0};
        char hex[9];
        chp_hex_encode(in, 4, hex);
        CHECK(strcmp(hex, "00ab7fff") == 0);
        CHECK_OK(chp_hex_decode("00AB7fff", 8, out, 4));
        CHECK(memcmp(in, out, 4) == 0);
        CHECK_EQ(chp_hex_decode("00ab7ff", 7, out, 4), -EINVAL);
        CHECK_EQ(chp_hex_decode("00ab7ffg", 8, out, 4), -EINVAL);
}

TEST(xxh3_known_value)
{
        /* XXH3-64 of the empty input with seed 0, as xxhsum -H3 prints it. */
        CHECK(chp_xxh3("", 0) == 0x2d06800538d394c2ULL);
        CHECK(chp_xxh3("a", 1) != chp_xxh3("b", 1));
}

TEST(strerror_covers_codes)
{
        CHECK(strcmp(chp_strerror(CHP_EMISMATCH), "unknown error") != 0);
        CHECK(strcmp(chp_strerror(CHP_ELOCKED), "unknown error") != 0);
        CHECK(strcmp(chp_strerror(-ENOENT), "unknown error") != 0);
        CHECK(strcmp(chp_strerror(-40000), "unknown error") == 0);
}

/* Every project code has its own message (no two alike, none the fallback), chp_strerror never
 * returns NULL, and exactly the HTTP parser's, the token checks' and the limits' codes (and
 * CHP_ETOOBIG) name a status. */
TEST(strerror_every_code_distinct)
{
        for (int a = CHP_ERR_BASE - 1; a >= CHP_ERR_LAST; a--) {
                const char *ma = chp_strerror(a);
                CHECK(ma != NULL && ma[0] != '\0');
                CHECK(strcmp(ma, "unknown error") != 0);
                for (int b = a - 1; b >= CHP_ERR_LAST; b--)
                        CHECK(strcmp(ma, chp_strerror(b)) != 0);
                int st = chp_err_http_status(a);
                CHECK(a > CHP_EHTTP_BAD && a != CHP_ETOOBIG ? st == 0 : st >= 400 && st <= 599);
        }
        CHECK_EQ(chp_err_http_status(CHP_EHTTP_TARGET), 414);
        CHECK_EQ(chp_err_http_status(CHP_ETOOBIG), 413);
        CHECK_EQ(chp_err_http_status(CHP_ETOKEN_MISSING), 401);
        CHECK_EQ(chp_err_http_status(CHP_EQUOTA), 403);
        CHECK_EQ(chp_err_http_status(CHP_ELIMITED), 429);
        CHECK_EQ(chp_err_http_status(CHP_ETOKEN_SUBJECT), 403);
        CHECK_EQ(chp_err_http_status(-EINVAL), 0);
        const int probe[] = {0, -1, -EINVAL, -4095, -4096, -29999, CHP_ERR_BASE, CHP_ERR_LAST - 1,
                             -40000, 1, 400, -400, -2147483647 - 1, 2147483647};
        for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++)
                CHECK(chp_strerror(probe[i]) != NULL);
}

/* The digests with the Nth allocation failing (OpenSSL's, routed through allocfail.c): every
 * failure must be an error (-ENOMEM for the context, hash.h; OpenSSL 3 reports a failed
 * allocation inside the digest's set-up only as -EIO), leak nothing (ASan), and the digest be
 * right once nothing fails. */
static int sha_pass(void *arg)
{
        const uint8_t *want = arg;
        uint8_t got[CHP_HASH_BYTES];
        int rc = chp_sha256("abc", 3, got);
        if (rc)
                return rc;
        if (memcmp(got, want, sizeof(got)) != 0)
                return 1;
        struct chp_sha256 h;
        if ((rc = chp_sha256_init(&h)))
                return rc;
        rc = chp_sha256_update(&h, "ab", 2);
        if (!rc)
                rc = chp_sha256_update(&h, "c", 1);
        if (!rc)
                rc = chp_sha256_final(&h, got);
        chp_sha256_free(&h);
        return rc ? rc : memcmp(got, want, sizeof(got)) == 0 ? 0 : 1;
}

TEST(allocation_failure)
{
        uint8_t want[CHP_HASH_BYTES];
        REQUIRE_OK(chp_sha256("abc", 3, want));
        int points = tu_alloc_sweep("sha256", sha_pass, want, 0);
        printf("  sha256: %d allocation points failed in turn\n", points);
        CHECK(points >= 2);
        uint8_t got[CHP_HASH_BYTES];
        struct chp_sha256 h;
        chp_alloc_fail_after(1); /* the context itself */
        CHECK_EQ(chp_sha256("abc", 3, got), -ENOMEM);
        chp_alloc_fail_after(1);
        CHECK_EQ(chp_sha256_init(&h), -ENOMEM);
        chp_alloc_fail_after(0);
}

HARNESS_MAIN()
