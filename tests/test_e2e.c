/* E2E chunk and metadata sealing (format v2): round trips at the chunk-boundary sizes, the
 * predicted stored size, every way a relay could mangle chunks (flip, reorder, truncate, wrong
 * key), the synthetic nonce (deterministic, a function of the plaintext, never shared by two
 * plaintexts), the key commitment, the fixed-size metadata and its strict parser, known-answer
 * vectors computed outside libsodium (tests/e2e_vectors.py checks the V_* constants below),
 * Padmé and the padded size. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include <sodium.h>

#include "e2e.h"
#include "hash.h"
#include "manifest.h"

static const uint32_t sizes[] = {CHP_CHUNK_MIN, 1024u * 1024};

static void fixed_key(uint8_t key[CHP_FILE_KEY_BYTES])
{
        for (int i = 0; i < CHP_FILE_KEY_BYTES; i++)
                key[i] = (uint8_t)i;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t)x;
        }
}

/* Seals plain (n bytes) as a whole file at chunk size cs into a malloc'ed buffer of
 * chp_e2e_cipher_size bytes; NULL on failure. */
static uint8_t *seal_file(const uint8_t *key, const uint8_t *plain, uint64_t n, uint32_t cs)
{
        uint64_t count = chp_e2e_chunk_count(n, cs), csize = chp_e2e_cipher_size(n, cs);
        uint32_t pc = chp_e2e_plain_chunk(cs);
        uint8_t *out = malloc((size_t)csize);
        if (!out)
                return NULL;
        uint64_t off = 0, coff = 0;
        for (uint64_t i = 0; i < count; i++) {
                size_t len = (size_t)(n - off < pc ? n - off : pc);
                if (chp_e2e_seal_chunk(key, i, i == count - 1, plain + off, len, out + coff) != 0) {
                        free(out);
                        return NULL;
                }
                off += len;
                coff += len + CHP_E2E_CHUNK_OVERHEAD;
        }
        if (off != n || coff != csize) {
                free(out);
                return NULL;
        }
        return out;
}

/* Stored length of chunk i of a file whose sealed size is csize. */
static size_t chunk_len(uint64_t csize, uint32_t cs, uint64_t i)
{
        uint64_t start = i * cs;
        return (size_t)(csize - start < cs ? csize - start : cs);
}

TEST(sizes)
{
        /* a chunk carries its 24-byte nonce and its 16-byte tag */
        CHECK_EQ(CHP_E2E_CHUNK_OVERHEAD, 40);
        CHECK_EQ(chp_e2e_plain_chunk(CHP_CHUNK_MIN), CHP_CHUNK_MIN - 40);
        CHECK_EQ(chp_e2e_plain_chunk(CHP_CHUNK_MAX), CHP_CHUNK_MAX - 40);
        /* not a valid chunk size: 0 everywhere */
        const uint32_t bad[] = {0,
                                16,
                                CHP_CHUNK_MIN / 2,
                                CHP_CHUNK_MIN + 1,
                                3 * CHP_CHUNK_MIN,
                                CHP_CHUNK_MAX * 2,
                                UINT32_MAX};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                CHECK_EQ(chp_e2e_plain_chunk(bad[i]), 0);
                CHECK_EQ(chp_e2e_chunk_count(1000, bad[i]), 0);
                CHECK_EQ(chp_e2e_cipher_size(1000, bad[i]), 0);
        }
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                uint32_t cs = sizes[s], pc = cs - 40;
                CHECK_EQ(chp_e2e_chunk_count(0, cs), 1);
                CHECK_EQ(chp_e2e_cipher_size(0, cs), 40);
                CHECK_EQ(chp_e2e_chunk_count(1, cs), 1);
                CHECK_EQ(chp_e2e_chunk_count(pc, cs), 1);
                CHECK_EQ(chp_e2e_cipher_size(pc, cs), cs);
                CHECK_EQ(chp_e2e_chunk_count(pc + 1, cs), 2);
                CHECK_EQ(chp_e2e_cipher_size(pc + 1, cs), (uint64_t)cs + 41);
                CHECK_EQ(chp_e2e_chunk_count(10ull * pc, cs), 10);
                CHECK_EQ(chp_e2e_cipher_size(10ull * pc, cs), 10ull * cs);
                /* the manifest counts the same chunks over the stored size */
                const uint64_t plains[] = {0, 1, pc - 1, pc, pc + 1, 7ull * pc + 3, 1ull << 40};
                for (size_t i = 0; i < sizeof(plains) / sizeof(plains[0]); i++) {
                        uint64_t c = chp_e2e_cipher_size(plains[i], cs);
                        CHECK_EQ(chp_manifest_chunk_count(c, cs),
                                 chp_e2e_chunk_count(plains[i], cs));
                }
        }
        /* a stored size that would not fit in 64 bits */
        CHECK_EQ(chp_e2e_cipher_size(UINT64_MAX, CHP_CHUNK_MIN), 0);
        CHECK(chp_e2e_chunk_count(UINT64_MAX, CHP_CHUNK_MIN) > 0);
}

TEST(round_trips)
{
        uint8_t key[CHP_FILE_KEY_BYTES];
        chp_e2e_keygen(key);
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                uint32_t cs = sizes[s], pc = cs - CHP_E2E_CHUNK_OVERHEAD;
                const uint64_t plains[] = {0, 1, pc - 1, pc, pc + 1, 3ull * pc + 1234};
                for (size_t k = 0; k < sizeof(plains) / sizeof(plains[0]); k++) {
                        uint64_t n = plains[k];
                        uint8_t *plain = malloc((size_t)n + 1), *back = malloc((size_t)n + 1);
                        REQUIRE(plain && back);
                        fill(plain, (size_t)n, (uint32_t)(n + s));
                        uint8_t *c = seal_file(key, plain, n, cs);
                        REQUIRE(c);
                        uint64_t csize = chp_e2e_cipher_size(n, cs),
                                 count = chp_e2e_chunk_count(n, cs);
                        uint64_t off = 0;
                        for (uint64_t i = 0; i < count; i++) {
                                size_t len = chunk_len(csize, cs, i);
                                CHECK(len >= CHP_E2E_CHUNK_OVERHEAD && len <= cs);
                                CHECK_OK(chp_e2e_open_chunk(key, i, i == count - 1, c + i * cs, len,
                                                            back + off));
                                off += len - CHP_E2E_CHUNK_OVERHEAD;
                        }
                        CHECK_EQ(off, n);
                        CHECK(n == 0 || memcmp(plain, back, (size_t)n) == 0);
                        /* the ciphertext does not carry the plaintext */
                        CHECK(n < 64 || memcmp(plain, c, 64) != 0);
                        free(c);
                        free(plain);
                        free(back);
                }
        }
}

TEST(chunk_limits)
{
        uint8_t key[CHP_FILE_KEY_BYTES], out[128];
        fixed_key(key);
        /* more than the largest chunk can hold */
        uint8_t *big = calloc(1, CHP_CHUNK_MAX + 64), *sealed = malloc(CHP_CHUNK_MAX + 64);
        REQUIRE(big && sealed);
        CHECK_EQ(chp_e2e_seal_chunk(key, 0, true, big, CHP_CHUNK_MAX - CHP_E2E_CHUNK_OVERHEAD + 1,
                                    sealed),
                 -EINVAL);
        CHECK_OK(
            chp_e2e_seal_chunk(key, 0, true, big, CHP_CHUNK_MAX - CHP_E2E_CHUNK_OVERHEAD, sealed));
        CHECK_OK(chp_e2e_open_chunk(key, 0, true, sealed, CHP_CHUNK_MAX, big));
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, big, CHP_CHUNK_MAX + 1, big), -EBADMSG);
        free(big);
        free(sealed);
        /* shorter than nonce + tag */
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, out, 0, out + 64), -EBADMSG);
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, out, CHP_E2E_CHUNK_OVERHEAD - 1, out + 64),
                 -EBADMSG);
        /* an empty chunk is a bare nonce and tag, and it authenticates */
        CHECK_OK(chp_e2e_seal_chunk(key, 0, true, NULL, 0, out));
        CHECK_OK(chp_e2e_open_chunk(key, 0, true, out, CHP_E2E_CHUNK_OVERHEAD, out + 64));
        CHECK_EQ(chp_e2e_open_chunk(key, 0, false, out, CHP_E2E_CHUNK_OVERHEAD, out + 64),
                 -EBADMSG);
        CHECK_EQ(chp_e2e_open_chunk(key, 1, true, out, CHP_E2E_CHUNK_OVERHEAD, out + 64), -EBADMSG);
}

/* A three-chunk file at 64 KiB with a short last chunk, for the attacks below. */
struct attack {
        uint8_t key[CHP_FILE_KEY_BYTES];
        uint8_t *plain, *c, *back;
        uint64_t n, csize;
        uint32_t cs;
};

static int attack_setup(struct attack *a)
{
        memset(a, 0, sizeof(*a));
        chp_e2e_keygen(a->key);
        a->cs = CHP_CHUNK_MIN;
        a->n = 2ull * (a->cs - CHP_E2E_CHUNK_OVERHEAD) + 999;
        a->csize = chp_e2e_cipher_size(a->n, a->cs);
        a->plain = malloc((size_t)a->n);
        a->back = malloc(a->cs);
        if (!a->plain || !a->back)
                return -1;
        fill(a->plain, (size_t)a->n, 7);
        a->c = seal_file(a->key, a->plain, a->n, a->cs);
        return a->c ? 0 : -1;
}

static void attack_free(struct attack *a)
{
        free(a->plain);
        free(a->c);
        free(a->back);
}

static int open_as(struct attack *a, const uint8_t *key, uint64_t stored, uint64_t as, bool last)
{
        return chp_e2e_open_chunk(key, as, last, a->c + stored * a->cs,
                                  chunk_len(a->csize, a->cs, stored), a->back);
}

TEST(tamper_fails)
{
        struct attack a;
        REQUIRE(attack_setup(&a) == 0);
        for (uint64_t i = 0; i < 3; i++) {
                size_t len = chunk_len(a.csize, a.cs, i);
                CHECK_OK(open_as(&a, a.key, i, i, i == 2));
                /* the nonce's first and last byte, the first ciphertext byte, a middle bit, the
                 * last ciphertext byte, tag bytes */
                size_t spots[] = {0, 23, 24, len / 2, len - 17, len - 16, len - 9, len - 1};
                for (size_t k = 0; k < sizeof(spots) / sizeof(spots[0]); k++) {
                        uint8_t bit = (uint8_t)(1u << (k % 8));
                        a.c[i * a.cs + spots[k]] ^= bit;
                        memset(a.back, 0xAA, a.cs);
                        CHECK_EQ(open_as(&a, a.key, i, i, i == 2), -EBADMSG);
                        /* no unauthenticated plaintext is released */
                        CHECK(memcmp(a.back, a.plain + i * (a.cs - CHP_E2E_CHUNK_OVERHEAD), 16) !=
                              0);
                        a.c[i * a.cs + spots[k]] ^= bit;
                }
                CHECK_OK(open_as(&a, a.key, i, i, i == 2));
        }
        attack_free(&a);
}

TEST(reorder_fails)
{
        struct attack a;
        REQUIRE(attack_setup(&a) == 0);
        for (uint64_t i = 0; i < 3; i++)
                for (uint64_t j = 0; j < 3; j++) {
                        if (i == j)
                                continue;
                        CHECK_EQ(open_as(&a, a.key, i, j, i == 2), -EBADMSG);
                        CHECK_EQ(open_as(&a, a.key, i, j, j == 2), -EBADMSG);
                }
        /* an index that differs only in a high byte */
        CHECK_EQ(open_as(&a, a.key, 0, 1ull << 56, false), -EBADMSG);
        CHECK_EQ(open_as(&a, a.key, 0, UINT64_MAX, false), -EBADMSG);
        attack_free(&a);
}

TEST(truncation_fails)
{
        struct attack a;
        REQUIRE(attack_setup(&a) == 0);
        /* dropping the tail: a middle chunk presented as the last */
        CHECK_EQ(open_as(&a, a.key, 0, 0, true), -EBADMSG);
        CHECK_EQ(open_as(&a, a.key, 1, 1, true), -EBADMSG);
        /* extending: the last chunk presented as not last */
        CHECK_EQ(open_as(&a, a.key, 2, 2, false), -EBADMSG);
        /* a chunk cut short */
        CHECK_EQ(chp_e2e_open_chunk(a.key, 2, true, a.c + 2 * a.cs, chunk_len(a.csize, a.cs, 2) - 1,
                                    a.back),
                 -EBADMSG);
        CHECK_OK(open_as(&a, a.key, 2, 2, true));
        attack_free(&a);
}

TEST(wrong_key_fails)
{
        struct attack a;
        REQUIRE(attack_setup(&a) == 0);
        uint8_t other[CHP_FILE_KEY_BYTES];
        memcpy(other, a.key, sizeof(other));
        other[31] ^= 1;
        for (uint64_t i = 0; i < 3; i++)
                CHECK_EQ(open_as(&a, other, i, i, i == 2), -EBADMSG);
        attack_free(&a);
}

TEST(keygen)
{
        uint8_t a[CHP_FILE_KEY_BYTES], b[CHP_FILE_KEY_BYTES], zero[CHP_FILE_KEY_BYTES] = {0};
        chp_e2e_keygen(a);
        chp_e2e_keygen(b);
        CHECK(memcmp(a, b, sizeof(a)) != 0);
        CHECK(memcmp(a, zero, sizeof(a)) != 0);
}

/* Known answers, computed outside libsodium by tests/e2e_vectors.py (which ctest runs against
 * these very constants): key = 00 01 .. 1f, kdf context "chpE2Ev2".
 *   V_CHUNK_KEY, V_SIV_KEY, V_META_KEY, V_COMMIT: subkeys 1, 2, 3, 4
 *   V_CHUNK_A: chunk 0x0102030405060708, last, "synthetic nonces, v2"
 *   V_CHUNK_B: chunk 0, not last, the 100 bytes 7 * i mod 256
 *   V_CHUNK_C: chunk 5, last, empty
 *   V_META:    plain_size 0x0123456789abcdef, chunk size 1 MiB, name "holiday photos
 *              (2024).tar.zst", mime "application/zstd", nonce 40 41 .. 57 */
static const char V_CHUNK_KEY[] =
    "55ea2265021501882625543573bf6f654872c5533aa9719e76f01b34bb14f4d1";
static const char V_SIV_KEY[] = "8738ac79661d7aca904621579bf15f82482f116762452973e8cf39ed46eef81e";
static const char V_META_KEY[] = "599730640897b247d2a8a545fce838d2627b6c033b70267d98e16b566e732c2c";
static const char V_COMMIT[] = "c559f6f333bdfeb166ec8a918553c15c39cbf703123a824430a061270e6ef43b";
static const char V_CHUNK_A[] =
    "7e3ddbfbfb309885932a65a11a3db3d5674803a89431dd044df5270a3f711811acb8a079efddf8a6b4f719f5"
    "1cd0e367956a5375c1f3c7aa74d2fb43";
static const char V_CHUNK_B[] =
    "fe5e21e38794bcd7953f39ded06ef1ac56eae4dd8750f0007c81612c565df0375eab8202abf0290bb3393f1d"
    "de5ee6f7599c4b6ac004ff753dfdee695b2f2611c87540d297d6bde652d8d686c421a9ac6ca092e66ee8bf46"
    "f86ccb4bb3b8fb2881894baa102df29fbeae96c3de686b0945cb8a620ef4cb47ac68f71ccf90b6cd7d2bbaa4"
    "2f451beeb9a540a6";
static const char V_CHUNK_C[] =
    "681926cef53dcf83c9141b0d5d72dac5aa900d0b91c25bbedf24d2b08a2b33e74a919c2af49bb112";
static const char V_META[] =
    "02c559f6f333bdfeb166ec8a918553c15c39cbf703123a824430a061270e6ef43b404142434445464748494a"
    "4b4c4d4e4f505152535455565739e9c4efe28153f1dbf7e0bc6a01771bb5fcda89a26c80ea0713ccfae6a5e8"
    "883a78df4e766430cf5d0943c6a4b5c73983295141de3b9af65b1a2ee89dd7add8ae8eae23643d3ddb9504f2"
    "e5e1c7d298c8d36e8ab006efb72bf6f445121de689f775924728fd4cc0a91cabb28d14262c12afa65ef9b53f"
    "127e4ef982dbefeb615a7614fcf3d1a8669c5ba885fa71243f980893814729b0be8637f9aa0f5d1a5804adb2"
    "cbbcd8cfe6151cd7b1f6019f832cc7432cc3bce8b796144d6f3f5d042ce80a931795d95a9d0d12d5946219b2"
    "ee5dbe1cbd0219e8dd17d5177a6bdb343a87f4b2be2b6fff0d6bfcb0f81f84c76e3ee6f1e5e0befd49e94004"
    "36b7b9178a8ec78cfbe7b738bb5eaf10df7752c1c63d98ea26262923bc4948941c7d5386b278d4b96dd92c59"
    "7597f49ffc4a9e97b364435fb986252c4d7f18be0d055bb5af441ca73eb9bfe751b74f95127f6ee75d34b0aa"
    "75e9d52927b2c0c57fcefe4c4e4887d46f62204fa4b2b45b22fe11fd1bcc34b456ebf9da11977e45621770da"
    "018772580fd6bc8d385648ab577046d3d01e27dba21cf03089d9dfc0aa";
static bool same_hex_str(const uint8_t *p, size_t n, const char *want)
{
        return strlen(want) == 2 * n && tu_same_hex(p, n, want);
}

TEST(subkeys_known_answer)
{
        uint8_t key[CHP_FILE_KEY_BYTES], sub[32];
        fixed_key(key);
        const char *want[] = {V_CHUNK_KEY, V_SIV_KEY, V_META_KEY, V_COMMIT};
        for (uint64_t id = 1; id <= 4; id++) {
                REQUIRE(crypto_kdf_derive_from_key(sub, sizeof(sub), id, "chpE2Ev2", key) == 0);
                CHECK(same_hex_str(sub, sizeof(sub), want[id - 1]));
        }
        sodium_memzero(sub, sizeof(sub));
}

TEST(chunk_known_answer)
{
        uint8_t key[CHP_FILE_KEY_BYTES], plain[100], out[100 + CHP_E2E_CHUNK_OVERHEAD], back[100];
        fixed_key(key);
        const char *a = "synthetic nonces, v2";
        CHECK_OK(chp_e2e_seal_chunk(key, 0x0102030405060708ull, true, (const uint8_t *)a, strlen(a),
                                    out));
        CHECK(same_hex_str(out, strlen(a) + CHP_E2E_CHUNK_OVERHEAD, V_CHUNK_A));
        CHECK_OK(chp_e2e_open_chunk(key, 0x0102030405060708ull, true, out,
                                    strlen(a) + CHP_E2E_CHUNK_OVERHEAD, back));
        CHECK(memcmp(back, a, strlen(a)) == 0);
        for (int i = 0; i < 100; i++)
                plain[i] = (uint8_t)(7 * i);
        CHECK_OK(chp_e2e_seal_chunk(key, 0, false, plain, sizeof(plain), out));
        CHECK(same_hex_str(out, sizeof(out), V_CHUNK_B));
        CHECK_OK(chp_e2e_open_chunk(key, 0, false, out, sizeof(out), back));
        CHECK(memcmp(back, plain, sizeof(plain)) == 0);
        CHECK_OK(chp_e2e_seal_chunk(key, 5, true, NULL, 0, out));
        CHECK(same_hex_str(out, CHP_E2E_CHUNK_OVERHEAD, V_CHUNK_C));
        CHECK_OK(chp_e2e_open_chunk(key, 5, true, out, CHP_E2E_CHUNK_OVERHEAD, back));
}

/* Dedup and resume need it: the same (key, index, last, plaintext) seals to the same bytes. */
TEST(chunk_is_deterministic)
{
        uint8_t key[CHP_FILE_KEY_BYTES];
        chp_e2e_keygen(key);
        const size_t lens[] = {0, 1, 100, CHP_CHUNK_MIN - CHP_E2E_CHUNK_OVERHEAD};
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
                uint8_t *p = malloc(lens[k] + 1), *c1 = malloc(lens[k] + CHP_E2E_CHUNK_OVERHEAD),
                        *c2 = malloc(lens[k] + CHP_E2E_CHUNK_OVERHEAD);
                REQUIRE(p && c1 && c2);
                fill(p, lens[k], (uint32_t)k + 11);
                CHECK_OK(chp_e2e_seal_chunk(key, 9, k % 2, p, lens[k], c1));
                CHECK_OK(chp_e2e_seal_chunk(key, 9, k % 2, p, lens[k], c2));
                CHECK(memcmp(c1, c2, lens[k] + CHP_E2E_CHUNK_OVERHEAD) == 0);
                free(p);
                free(c1);
                free(c2);
        }
}

/* The nonce is a function of the plaintext and the position: one changed byte anywhere, another
 * index or another last flag gives another nonce. */
TEST(nonce_follows_plaintext)
{
        uint8_t key[CHP_FILE_KEY_BYTES], p[1000], base[1000 + CHP_E2E_CHUNK_OVERHEAD],
            c[1000 + CHP_E2E_CHUNK_OVERHEAD];
        chp_e2e_keygen(key);
        fill(p, sizeof(p), 3);
        REQUIRE_OK(chp_e2e_seal_chunk(key, 4, false, p, sizeof(p), base));
        const size_t spots[] = {0, 1, 499, 998, 999};
        for (size_t k = 0; k < sizeof(spots) / sizeof(spots[0]); k++) {
                p[spots[k]] ^= 0x01;
                CHECK_OK(chp_e2e_seal_chunk(key, 4, false, p, sizeof(p), c));
                CHECK(memcmp(c, base, CHP_E2E_NONCE) != 0);
                p[spots[k]] ^= 0x01;
        }
        CHECK_OK(chp_e2e_seal_chunk(key, 5, false, p, sizeof(p), c));
        CHECK(memcmp(c, base, CHP_E2E_NONCE) != 0);
        CHECK_OK(chp_e2e_seal_chunk(key, 4, true, p, sizeof(p), c));
        CHECK(memcmp(c, base, CHP_E2E_NONCE) != 0);
        /* the same plaintext one byte shorter (what a shrinking file gives) */
        CHECK_OK(chp_e2e_seal_chunk(key, 4, false, p, sizeof(p) - 1, c));
        CHECK(memcmp(c, base, CHP_E2E_NONCE) != 0);
        CHECK_OK(chp_e2e_seal_chunk(key, 4, false, p, sizeof(p), c));
        CHECK(memcmp(c, base, sizeof(base)) == 0);
}

/* What a file that changes between the reads of a put does: the same key seals two different
 * plaintexts at the same index. With a nonce shared by both, the ciphertexts' XOR would be the
 * plaintexts' XOR (a two-time pad); with synthetic nonces it is unrelated to it. */
TEST(no_two_time_pad)
{
        uint8_t key[CHP_FILE_KEY_BYTES], p1[4096], p2[4096];
        uint8_t c1[sizeof(p1) + CHP_E2E_CHUNK_OVERHEAD], c2[sizeof(p2) + CHP_E2E_CHUNK_OVERHEAD];
        chp_e2e_keygen(key);
        fill(p1, sizeof(p1), 21);
        memcpy(p2, p1, sizeof(p2));
        for (size_t i = 0; i < sizeof(p2); i += 64)
                p2[i] ^= 0x5a; /* a file edited in place */
        REQUIRE_OK(chp_e2e_seal_chunk(key, 0, true, p1, sizeof(p1), c1));
        REQUIRE_OK(chp_e2e_seal_chunk(key, 0, true, p2, sizeof(p2), c2));
        const size_t body = CHP_E2E_CHUNK_OVERHEAD - CHP_E2E_TAG; /* where the ciphertext starts */
        size_t same = 0;
        for (size_t i = 0; i < sizeof(p1); i++)
                same += (uint8_t)(c1[body + i] ^ c2[body + i]) == (uint8_t)(p1[i] ^ p2[i]);
        /* by chance about 1 in 256 */
        if (same > sizeof(p1) / 32)
                fprintf(stderr, "  %zu of %zu ciphertext bytes XOR to the plaintexts' XOR\n", same,
                        sizeof(p1));
        CHECK(same <= sizeof(p1) / 32);
}

struct seen {
        uint8_t nonce[CHP_E2E_NONCE];
        uint8_t input[CHP_HASH_BYTES]; /* SHA-256 of index || last || plaintext */
};

static int by_nonce(const void *a, const void *b)
{
        return memcmp(a, b, CHP_E2E_NONCE);
}

/* Many plaintexts that share a long prefix, at a few positions: no nonce ever comes back for
 * another input (and the same input, sealed again, gives its nonce back). */
TEST(nonce_never_repeats)
{
        enum { N = 20000 };
        uint8_t key[CHP_FILE_KEY_BYTES], p[96], c[96 + CHP_E2E_CHUNK_OVERHEAD], in[9 + 96];
        struct seen *s = calloc(N, sizeof(*s));
        REQUIRE(s);
        chp_e2e_keygen(key);
        fill(p, sizeof(p), 99);
        uint32_t x = 2463534242u;
        for (int k = 0; k < N; k++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                uint64_t index = x % 8;
                bool last = (x >> 3) & 1;
                size_t len = 32 + (x >> 4) % 65; /* 32 common bytes, then a varying tail */
                for (size_t i = 32; i < len; i++) {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        p[i] = (uint8_t)(x % 3); /* few values: many inputs repeat */
                }
                REQUIRE_OK(chp_e2e_seal_chunk(key, index, last, p, len, c));
                for (int i = 0; i < 8; i++)
                        in[i] = (uint8_t)(index >> (8 * i));
                in[8] = last;
                memcpy(in + 9, p, len);
                memcpy(s[k].nonce, c, CHP_E2E_NONCE);
                REQUIRE(chp_sha256(in, 9 + len, s[k].input) == 0);
        }
        qsort(s, N, sizeof(*s), by_nonce);
        size_t clashes = 0, repeats = 0;
        for (int k = 1; k < N; k++) {
                if (memcmp(s[k].nonce, s[k - 1].nonce, CHP_E2E_NONCE) != 0)
                        continue;
                if (memcmp(s[k].input, s[k - 1].input, CHP_HASH_BYTES) == 0)
                        repeats++;
                else
                        clashes++;
        }
        if (clashes)
                fprintf(stderr, "  %zu nonces came back for another input\n", clashes);
        CHECK_EQ(clashes, 0);
        CHECK(repeats > 0 && repeats < N / 2); /* the sample had both repeats and new inputs */
        free(s);
}

static struct chp_e2e_meta sample_meta(void)
{
        struct chp_e2e_meta m;
        memset(&m, 0, sizeof(m));
        m.plain_size = 0x0123456789abcdefull;
        m.chunk_size = CHP_CHUNK_DEFAULT;
        snprintf(m.name, sizeof(m.name), "%s", "holiday photos (2024).tar.zst");
        snprintf(m.mime, sizeof(m.mime), "%s", "application/zstd");
        return m;
}

static bool meta_eq(const struct chp_e2e_meta *a, const struct chp_e2e_meta *b)
{
        return a->plain_size == b->plain_size && a->chunk_size == b->chunk_size &&
               strcmp(a->name, b->name) == 0 && strcmp(a->mime, b->mime) == 0;
}

TEST(meta_round_trip)
{
        uint8_t key[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX], blob2[CHP_E2E_META_MAX];
        chp_e2e_keygen(key);
        struct chp_e2e_meta m = sample_meta(), back;
        ssize_t n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        CHECK_EQ(n, CHP_E2E_META_BYTES);
        REQUIRE(n > 0);
        CHECK_EQ(blob[0], 2);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        /* a fresh nonce each time: the same metadata seals differently, under one commitment */
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob2, sizeof(blob2)), n);
        CHECK(memcmp(blob, blob2, 1 + CHP_E2E_COMMIT_BYTES) == 0);
        CHECK(memcmp(blob, blob2, (size_t)n) != 0);

        /* empty strings, and both at their maxima */
        memset(&m, 0, sizeof(m));
        m.chunk_size = CHP_CHUNK_MIN;
        n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        CHECK_EQ(n, CHP_E2E_META_BYTES);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        memset(m.name, 'n', CHP_E2E_NAME_MAX);
        memset(m.mime, 'm', CHP_E2E_MIME_MAX);
        m.chunk_size = CHP_CHUNK_MAX;
        m.plain_size = UINT64_MAX;
        n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        CHECK_EQ(n, CHP_E2E_META_BYTES);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        /* UTF-8 names pass through untouched */
        memset(&m, 0, sizeof(m));
        m.chunk_size = CHP_CHUNK_DEFAULT;
        snprintf(m.name, sizeof(m.name), "%s", "\xd9\x86\xd8\xa7\xd9\x85\xd9\x87.txt");
        n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        REQUIRE(n > 0);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
}

/* The blob's length says nothing about the name or the MIME type. */
TEST(meta_fixed_size)
{
        uint8_t key[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX];
        chp_e2e_keygen(key);
        CHECK_EQ(CHP_E2E_META_BYTES, 1 + 32 + 24 + 8 + 4 + 1 + 255 + 1 + 127 + 16);
        const size_t names[] = {0, 1, 17, 200, CHP_E2E_NAME_MAX};
        const size_t mimes[] = {0, 1, 10, CHP_E2E_MIME_MAX};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                for (size_t j = 0; j < sizeof(mimes) / sizeof(mimes[0]); j++) {
                        struct chp_e2e_meta m, back;
                        memset(&m, 0, sizeof(m));
                        m.chunk_size = CHP_CHUNK_DEFAULT;
                        m.plain_size = names[i] * 1000 + mimes[j];
                        memset(m.name, 'a', names[i]);
                        memset(m.mime, 'b', mimes[j]);
                        ssize_t n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
                        CHECK_EQ(n, CHP_E2E_META_BYTES);
                        CHECK(n > 0 && chp_e2e_open_meta(key, blob, (size_t)n, &back) == 0 &&
                              meta_eq(&m, &back));
                }
}

TEST(meta_seal_errors)
{
        uint8_t key[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX + 8];
        chp_e2e_keygen(key);
        struct chp_e2e_meta m = sample_meta();
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, CHP_E2E_META_BYTES - 1), -ENOSPC);
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, 0), -ENOSPC);
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, CHP_E2E_META_BYTES), CHP_E2E_META_BYTES);
        const uint32_t bad[] = {0, CHP_CHUNK_MIN - 1, CHP_CHUNK_MIN + 4096, CHP_CHUNK_MAX * 2};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                m.chunk_size = bad[i];
                CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, sizeof(blob)), -EINVAL);
        }
        m = sample_meta();
        memset(m.name, 'x', sizeof(m.name)); /* not NUL-terminated */
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, sizeof(blob)), -EINVAL);
        m = sample_meta();
        memset(m.mime, 'x', sizeof(m.mime));
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, sizeof(blob)), -EINVAL);
}

TEST(meta_tamper_and_wrong_key)
{
        uint8_t key[CHP_FILE_KEY_BYTES], other[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX + 1];
        chp_e2e_keygen(key);
        memcpy(other, key, sizeof(key));
        other[0] ^= 0x80;
        struct chp_e2e_meta m = sample_meta(), back;
        ssize_t n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        REQUIRE(n > 0);
        CHECK_EQ(chp_e2e_open_meta(other, blob, (size_t)n, &back), -EBADMSG);
        /* every bit of version, commitment, nonce, ciphertext and tag matters */
        for (ssize_t i = 0; i < n; i++) {
                blob[i] ^= (uint8_t)(1u << (i % 8));
                CHECK_EQ(chp_e2e_open_meta(key, blob, (size_t)n, &back), -EBADMSG);
                blob[i] ^= (uint8_t)(1u << (i % 8));
        }
        /* out is cleared on failure */
        CHECK(back.name[0] == '\0' && back.plain_size == 0 && back.chunk_size == 0);
        /* every truncation, and a trailing byte after the tag */
        for (ssize_t k = 0; k < n; k++)
                CHECK_EQ(chp_e2e_open_meta(key, blob, (size_t)k, &back), -EBADMSG);
        blob[n] = 0;
        CHECK_EQ(chp_e2e_open_meta(key, blob, (size_t)n + 1, &back), -EBADMSG);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        /* a chunk sealed with the same key is no blob */
        uint8_t plain[CHP_E2E_META_BYTES - CHP_E2E_CHUNK_OVERHEAD], chunk[CHP_E2E_META_BYTES];
        memset(plain, 0, sizeof(plain));
        CHECK_OK(chp_e2e_seal_chunk(key, 0, true, plain, sizeof(plain), chunk));
        CHECK_EQ(chp_e2e_open_meta(key, chunk, sizeof(chunk), &back), -EBADMSG);
}

/* Seals an arbitrary body the way chp_e2e_seal_meta does (version and commitment in clear and as
 * AD, subkey 3, XChaCha under a random nonce), with the version, the commitment and the key the
 * test chooses, so the checks in front of and behind the tag can be tested on blobs seal_meta
 * never writes. Returns the blob's length, 0 on failure. */
static size_t craft(const uint8_t *key, uint8_t version, const uint8_t *commit, const uint8_t *body,
                    size_t len, uint8_t *blob)
{
        uint8_t sub[32];
        if (crypto_kdf_derive_from_key(sub, sizeof(sub), 3, "chpE2Ev2", key) != 0)
                return 0;
        blob[0] = version;
        memcpy(blob + 1, commit, 32);
        randombytes_buf(blob + 33, 24);
        unsigned long long clen = 0;
        int rc = crypto_aead_xchacha20poly1305_ietf_encrypt(blob + 57, &clen, body, len, blob, 33,
                                                            NULL, blob + 33, sub);
        sodium_memzero(sub, sizeof(sub));
        return rc == 0 ? 57 + (size_t)clen : 0;
}

static void commit_of(const uint8_t *key, uint8_t out[32])
{
        if (crypto_kdf_derive_from_key(out, 32, 4, "chpE2Ev2", key) != 0)
                memset(out, 0, 32);
}

#define BODY (8 + 4 + 1 + 255 + 1 + 127)

/* The documented body: plain_size, chunk_size, name_len, name[255], mime_len, mime[127]. */
static void encode(uint8_t p[BODY], uint64_t plain, uint32_t cs, const char *name, size_t nlen,
                   const char *mime, size_t mlen)
{
        memset(p, 0, BODY);
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(plain >> (8 * i));
        for (int i = 0; i < 4; i++)
                p[8 + i] = (uint8_t)(cs >> (8 * i));
        p[12] = (uint8_t)nlen;
        memcpy(p + 13, name, nlen < 255 ? nlen : 255);
        p[268] = (uint8_t)mlen;
        memcpy(p + 269, mime, mlen < 127 ? mlen : 127);
}

/* A ticket with another key: the blob names the key it was sealed under, and no other opens it. */
TEST(key_commitment)
{
        REQUIRE(sodium_init() >= 0);
        uint8_t k[CHP_FILE_KEY_BYTES], k2[CHP_FILE_KEY_BYTES], ck[32], ck2[32];
        uint8_t body[BODY], blob[CHP_E2E_META_MAX + 64];
        struct chp_e2e_meta back, m = sample_meta();
        chp_e2e_keygen(k);
        chp_e2e_keygen(k2);
        commit_of(k, ck);
        commit_of(k2, ck2);
        CHECK(memcmp(ck, ck2, 32) != 0);

        /* seal_meta writes the commitment of its key in clear after the version */
        ssize_t n = chp_e2e_seal_meta(k, &m, blob, sizeof(blob));
        REQUIRE(n == CHP_E2E_META_BYTES);
        CHECK(blob[0] == 2 && memcmp(blob + 1, ck, 32) == 0);

        /* a blob that authenticates under K' but is committed to K: only the commitment check can
         * refuse it (the control, committed to K', opens) */
        encode(body, 7, CHP_CHUNK_MIN, "evil.txt", 8, "text/plain", 10);
        size_t b = craft(k2, 2, ck2, body, sizeof(body), blob);
        REQUIRE(b == CHP_E2E_META_BYTES);
        CHECK_OK(chp_e2e_open_meta(k2, blob, b, &back));
        CHECK(strcmp(back.name, "evil.txt") == 0);
        b = craft(k2, 2, ck, body, sizeof(body), blob);
        REQUIRE(b == CHP_E2E_META_BYTES);
        CHECK_EQ(chp_e2e_open_meta(k2, blob, b, &back), -EBADMSG);
        CHECK_EQ(chp_e2e_open_meta(k, blob, b, &back), -EBADMSG);

        /* a blob under K whose commitment was replaced: refused under both keys */
        n = chp_e2e_seal_meta(k, &m, blob, sizeof(blob));
        REQUIRE(n == CHP_E2E_META_BYTES);
        memcpy(blob + 1, ck2, 32);
        CHECK_EQ(chp_e2e_open_meta(k, blob, (size_t)n, &back), -EBADMSG);
        CHECK_EQ(chp_e2e_open_meta(k2, blob, (size_t)n, &back), -EBADMSG);
        memcpy(blob + 1, ck, 32);
        CHECK_OK(chp_e2e_open_meta(k, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        sodium_memzero(k, sizeof(k));
        sodium_memzero(k2, sizeof(k2));
}

TEST(meta_known_answer)
{
        uint8_t key[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX];
        fixed_key(key);
        REQUIRE(strlen(V_META) == 2 * CHP_E2E_META_BYTES);
        REQUIRE(chp_hex_decode(V_META, strlen(V_META), blob, sizeof(blob)) == 0);
        struct chp_e2e_meta m = sample_meta(), back;
        CHECK_OK(chp_e2e_open_meta(key, blob, CHP_E2E_META_BYTES, &back));
        CHECK(meta_eq(&m, &back));
        CHECK(same_hex_str(blob + 1, 32, V_COMMIT));
}

TEST(meta_parser_is_strict)
{
        REQUIRE(sodium_init() >= 0);
        uint8_t key[CHP_FILE_KEY_BYTES], ck[32], body[BODY + 1], blob[CHP_E2E_META_MAX + 64];
        chp_e2e_keygen(key);
        commit_of(key, ck);
        struct chp_e2e_meta back;
        char longname[300];
        memset(longname, 'a', sizeof(longname));

        /* the documented encoding opens: this pins the layout */
        encode(body, 42, CHP_CHUNK_MIN, "a.txt", 5, "text/plain", 10);
        size_t b = craft(key, 2, ck, body, BODY, blob);
        REQUIRE(b == CHP_E2E_META_BYTES);
        CHECK_OK(chp_e2e_open_meta(key, blob, b, &back));
        CHECK_EQ(back.plain_size, 42);
        CHECK_EQ(back.chunk_size, CHP_CHUNK_MIN);
        CHECK(strcmp(back.name, "a.txt") == 0 && strcmp(back.mime, "text/plain") == 0);
        /* both fields full */
        encode(body, 1, CHP_CHUNK_MIN, longname, 255, longname, 127);
        b = craft(key, 2, ck, body, BODY, blob);
        CHECK_OK(chp_e2e_open_meta(key, blob, b, &back));
        CHECK(strlen(back.name) == 255 && strlen(back.mime) == 127);

        struct {
                const char *why;
                uint8_t version;
                size_t len;
                uint8_t body[BODY + 1];
        } cases[16];
        size_t nc = 0;
        memset(cases, 0, sizeof(cases));
#define CASE(why_, version_, len_)                                                                 \
        do {                                                                                       \
                cases[nc].why = why_;                                                              \
                cases[nc].version = version_;                                                      \
                cases[nc].len = len_;                                                              \
                nc++;                                                                              \
        } while (0)
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        CASE("version 1", 1, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        CASE("version 3", 3, BODY);
        encode(cases[nc].body, 1, 0, "a", 1, "b", 1);
        CASE("chunk size 0", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN + 1, "a", 1, "b", 1);
        CASE("chunk size not 2^k", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MAX * 2, "a", 1, "b", 1);
        CASE("chunk size too big", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, longname, 128);
        CASE("mime longer than its field", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a\0b", 3, "b", 1);
        CASE("NUL in name", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b\0", 2);
        CASE("NUL in mime", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        cases[nc].body[13 + 1] = 'b'; /* a byte after the name's length */
        CASE("name padding not zero", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "", 0);
        cases[nc].body[BODY - 1] = 1;
        CASE("mime padding not zero", 2, BODY);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        CASE("body one byte short", 2, BODY - 1);
        encode(cases[nc].body, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        CASE("body one byte long", 2, BODY + 1);
        CASE("empty body", 2, 0);
#undef CASE
        for (size_t i = 0; i < nc; i++) {
                b = craft(key, cases[i].version, ck, cases[i].body, cases[i].len, blob);
                REQUIRE(b == cases[i].len + 57 + 16);
                int rc = chp_e2e_open_meta(key, blob, b, &back);
                if (rc != -EBADMSG)
                        fprintf(stderr, "  case '%s' gave %d\n", cases[i].why, rc);
                CHECK_EQ(rc, -EBADMSG);
        }
}

/* Padding by default: a 4 KiB floor, Padmé above it. */
TEST(padded_size)
{
        const uint64_t v[][2] = {{0, 4096},
                                 {1, 4096},
                                 {1000, 4096},
                                 {4095, 4096},
                                 {4096, 4096},
                                 {4097, 4352},
                                 {65536, 65536},
                                 {1048577, 1081344},
                                 {1000000000, 1006632960},
                                 {UINT64_MAX, UINT64_MAX}};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
                uint64_t got = chp_e2e_padded_size(v[i][0]);
                if (got != v[i][1])
                        fprintf(stderr, "  padded_size(%" PRIu64 ") = %" PRIu64 "\n", v[i][0], got);
                CHECK_EQ(got, v[i][1]);
        }
        /* monotonic, never below the size or the floor, a fixed point of itself */
        uint64_t prev = 0;
        for (uint64_t L = 0; L <= 1u << 18; L++) {
                uint64_t p = chp_e2e_padded_size(L);
                if (p < L || p < prev || p < CHP_E2E_PAD_FLOOR || chp_e2e_padded_size(p) != p) {
                        fprintf(stderr, "  padded_size(%" PRIu64 ") = %" PRIu64 "\n", L, p);
                        CHECK(0);
                        return;
                }
                prev = p;
        }
}

/* Padmé by hand, with E = floor(log2 L), S = floor(log2 E) + 1, mask = 2^(E-S) - 1:
 *   L = 9:      E = 3,  S = 2, mask 1     -> 10
 *   L = 15:     E = 3,  S = 2, mask 1     -> 16
 *   L = 17:     E = 4,  S = 3, mask 1     -> 18
 *   L = 33:     E = 5,  S = 3, mask 3     -> 36
 *   L = 100:    E = 6,  S = 3, mask 7     -> 104
 *   L = 257:    E = 8,  S = 4, mask 15    -> 272
 *   L = 1000:   E = 9,  S = 4, mask 31    -> 1024
 *   L = 1025:   E = 10, S = 4, mask 63    -> 1088
 *   L = 2^20+1: E = 20, S = 5, mask 32767 -> 2^20 + 2^15 = 1081344
 *   L = 10^9:   E = 29, S = 5, mask 2^24-1 -> 60 * 2^24 = 1006632960
 * Small L (E <= 2) have mask 0: 2..7 stay as they are. */
TEST(padme_values)
{
        const uint64_t v[][2] = {{0, 0},
                                 {1, 1},
                                 {2, 2},
                                 {3, 3},
                                 {4, 4},
                                 {7, 7},
                                 {8, 8},
                                 {9, 10},
                                 {10, 10},
                                 {15, 16},
                                 {16, 16},
                                 {17, 18},
                                 {33, 36},
                                 {100, 104},
                                 {255, 256},
                                 {256, 256},
                                 {257, 272},
                                 {1000, 1024},
                                 {1025, 1088},
                                 {65536, 65536},
                                 {1048577, 1081344},
                                 {1000000000, 1006632960}};
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
                uint64_t got = chp_e2e_padme(v[i][0]);
                if (got != v[i][1])
                        fprintf(stderr, "  padme(%" PRIu64 ") = %" PRIu64 "\n", v[i][0], got);
                CHECK_EQ(got, v[i][1]);
        }
        /* the top of the range: 2^63 + 1 rounds to 2^63 + 2^57; past 2^64 - 2^57 it saturates */
        CHECK(chp_e2e_padme((1ull << 63) + 1) == (1ull << 63) + (1ull << 57));
        CHECK(chp_e2e_padme(UINT64_MAX - (1ull << 57) + 1) == UINT64_MAX - (1ull << 57) + 1);
        CHECK(chp_e2e_padme(UINT64_MAX - (1ull << 57) + 2) == UINT64_MAX);
        CHECK(chp_e2e_padme(UINT64_MAX) == UINT64_MAX);
}

TEST(padme_properties)
{
        uint64_t prev = 0;
        for (uint64_t L = 0; L <= 1u << 20; L++) {
                uint64_t p = chp_e2e_padme(L);
                if (p < L || p < prev || (L >= 256 && (p - L) * 100 > 12 * L) ||
                    chp_e2e_padme(p) != p) {
                        fprintf(stderr, "  padme(%" PRIu64 ") = %" PRIu64 "\n", L, p);
                        CHECK(0);
                        return;
                }
                prev = p;
        }
        /* sampled over the whole 64-bit range: still >= L, idempotent, <= 12% over */
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < 100000; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                uint64_t L = x >> (i % 64);
                uint64_t p = chp_e2e_padme(L);
                CHECK(p >= L);
                CHECK(chp_e2e_padme(p) == p);
                if (L >= 256 && p != UINT64_MAX)
                        CHECK(p - L <= L / 100 * 12);
                CHECK(chp_e2e_padme(L + (L < UINT64_MAX)) >= p);
        }
        /* few distinct sizes: E = 20, S = 5, so 1 MiB .. 2 MiB - 1 pads to the multiples of
         * 2^15 from 2^20 to 2^21 inclusive: 33 sizes */
        uint64_t distinct = 0, last = 0;
        for (uint64_t L = 1u << 20; L < 1u << 21; L++) {
                uint64_t p = chp_e2e_padme(L);
                distinct += p != last;
                last = p;
        }
        CHECK_EQ(distinct, 33);
}

/* Sealing a chunk whose SHA-256 the caller has (as a put does), opening it, and sealing and
 * opening metadata allocate nothing: the sweep must find no allocation to fail. */
static int e2e_pass(void *arg)
{
        const uint8_t *digest = arg;
        uint8_t key[CHP_FILE_KEY_BYTES], plain[1000], sealed[1000 + CHP_E2E_CHUNK_OVERHEAD],
            back[1000];
        fixed_key(key);
        fill(plain, sizeof(plain), 5);
        int rc = chp_e2e_seal_chunk_hashed(key, 3, true, plain, sizeof(plain), digest, sealed);
        if (rc)
                return rc;
        if ((rc = chp_e2e_open_chunk(key, 3, true, sealed, sizeof(sealed), back)))
                return rc;
        if (memcmp(plain, back, sizeof(plain)) != 0)
                return 1;
        struct chp_e2e_meta m = sample_meta(), got;
        uint8_t blob[1024];
        ssize_t n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        if (n < 0)
                return (int)n;
        if ((rc = chp_e2e_open_meta(key, blob, (size_t)n, &got)))
                return rc;
        return meta_eq(&m, &got) ? 0 : 1;
}

/* chp_e2e_seal_chunk hashes the plaintext itself, through OpenSSL, which allocates: a failed
 * allocation there is an error (-ENOMEM, or -EIO from OpenSSL's init), never wrong bytes; the
 * same bytes come out as from the hashed variant. */
static int e2e_seal_pass(void *arg)
{
        const uint8_t *want = arg;
        uint8_t key[CHP_FILE_KEY_BYTES], plain[1000], sealed[1000 + CHP_E2E_CHUNK_OVERHEAD];
        fixed_key(key);
        fill(plain, sizeof(plain), 5);
        int rc = chp_e2e_seal_chunk(key, 3, true, plain, sizeof(plain), sealed);
        if (rc)
                return rc;
        return memcmp(sealed, want, sizeof(sealed)) == 0 ? 0 : 1;
}

TEST(allocation_failure)
{
        uint8_t plain[1000], digest[CHP_HASH_BYTES], key[CHP_FILE_KEY_BYTES];
        uint8_t sealed[1000 + CHP_E2E_CHUNK_OVERHEAD];
        fill(plain, sizeof(plain), 5);
        fixed_key(key);
        REQUIRE_OK(chp_sha256(plain, sizeof(plain), digest));
        REQUIRE_OK(chp_e2e_seal_chunk_hashed(key, 3, true, plain, sizeof(plain), digest, sealed));
        CHECK_EQ(tu_alloc_sweep("e2e seal (hashed)/open", e2e_pass, digest, 0), 0);
        CHECK(tu_alloc_sweep("e2e seal with its own SHA-256", e2e_seal_pass, sealed, 0) > 0);
}

HARNESS_MAIN()
