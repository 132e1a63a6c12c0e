/* SHA-256 against published vectors (FIPS 180-2 examples and the empty string), streaming in
 * odd-sized pieces must equal one-shot, and the hex codec. */
#include "harness.h"

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

HARNESS_MAIN()
