/* E2E chunk and metadata sealing: round trips at the chunk-boundary sizes, the predicted stored
 * size, every way a relay could mangle chunks (flip, reorder, truncate, wrong key), known-answer
 * vectors that pin the construction (KDF context and ids, nonce layout, metadata encoding), the
 * strict metadata parser, and Padmé. */
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
        CHECK_EQ(chp_e2e_plain_chunk(CHP_CHUNK_MIN), CHP_CHUNK_MIN - 16);
        CHECK_EQ(chp_e2e_plain_chunk(CHP_CHUNK_MAX), CHP_CHUNK_MAX - 16);
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
                uint32_t cs = sizes[s], pc = cs - 16;
                CHECK_EQ(chp_e2e_chunk_count(0, cs), 1);
                CHECK_EQ(chp_e2e_cipher_size(0, cs), 16);
                CHECK_EQ(chp_e2e_chunk_count(1, cs), 1);
                CHECK_EQ(chp_e2e_chunk_count(pc, cs), 1);
                CHECK_EQ(chp_e2e_cipher_size(pc, cs), cs);
                CHECK_EQ(chp_e2e_chunk_count(pc + 1, cs), 2);
                CHECK_EQ(chp_e2e_cipher_size(pc + 1, cs), (uint64_t)cs + 17);
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
                uint32_t cs = sizes[s], pc = cs - 16;
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
        uint8_t key[CHP_FILE_KEY_BYTES], out[64];
        fixed_key(key);
        /* more than the largest chunk can hold */
        uint8_t *big = calloc(1, CHP_CHUNK_MAX + 16);
        REQUIRE(big);
        CHECK_EQ(chp_e2e_seal_chunk(key, 0, true, big, CHP_CHUNK_MAX - 15, big), -EINVAL);
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, big, CHP_CHUNK_MAX + 1, big), -EBADMSG);
        free(big);
        /* shorter than a tag */
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, out, 0, out + 32), -EBADMSG);
        CHECK_EQ(chp_e2e_open_chunk(key, 0, true, out, 15, out + 32), -EBADMSG);
        /* an empty chunk is a bare tag, and it authenticates */
        CHECK_OK(chp_e2e_seal_chunk(key, 0, true, NULL, 0, out));
        CHECK_OK(chp_e2e_open_chunk(key, 0, true, out, 16, out + 32));
        CHECK_EQ(chp_e2e_open_chunk(key, 0, false, out, 16, out + 32), -EBADMSG);
        CHECK_EQ(chp_e2e_open_chunk(key, 1, true, out, 16, out + 32), -EBADMSG);
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
        a->n = 2ull * (a->cs - 16) + 999;
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
                /* first byte, a middle bit, the last ciphertext byte, every tag byte */
                size_t spots[] = {0, len / 2, len - 17, len - 16, len - 9, len - 1};
                for (size_t k = 0; k < sizeof(spots) / sizeof(spots[0]); k++) {
                        uint8_t bit = (uint8_t)(1u << (k % 8));
                        a.c[i * a.cs + spots[k]] ^= bit;
                        memset(a.back, 0xAA, a.cs);
                        CHECK_EQ(open_as(&a, a.key, i, i, i == 2), -EBADMSG);
                        /* no unauthenticated plaintext is released */
                        CHECK(memcmp(a.back, a.plain + i * (a.cs - 16), 16) != 0);
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
        /* an index that differs only in a high byte of the 11-byte counter */
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

/* The construction, restated with libsodium directly: subkey 1 of crypto_kdf under "chaparE2",
 * nonce = 11-byte big-endian index || last. Pinned also by a vector computed outside libsodium
 * (Python hashlib.blake2b with key/salt/person + cryptography's ChaCha20Poly1305). */
TEST(chunk_known_answer)
{
        uint8_t key[CHP_FILE_KEY_BYTES], sub[32], ours[64], theirs[64];
        fixed_key(key);
        const char *msg = "The STREAM construction";
        size_t len = strlen(msg);
        REQUIRE(crypto_kdf_derive_from_key(sub, sizeof(sub), 1, "chaparE2", key) == 0);
        char h[2 * 64 + 1];
        chp_hex_encode(sub, sizeof(sub), h);
        CHECK(strcmp(h, "f078c64818fe1f975a6f838680953b8ff3ce49d553d52005adc09c946836a7ed") == 0);

        struct {
                uint64_t index;
                bool last;
                const char *expect;
        } v[] = {
            {0x0102030405060708ull, true,
             "087abd2b46c4d98808c41ae020a0658a44cf4ffbf86251b428f44549d9654b3c4fdbba532652b8"},
            {0, false,
             "bdb361806b16040acc3012c6be819700f479c684752f387f8b8ecd0cc557a7726a8c0f90a30a12"},
        };
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
                uint8_t nonce[12] = {0};
                for (int i = 0; i < 8; i++)
                        nonce[3 + i] = (uint8_t)(v[k].index >> (56 - 8 * i));
                nonce[11] = v[k].last;
                unsigned long long clen = 0;
                REQUIRE(crypto_aead_chacha20poly1305_ietf_encrypt(theirs, &clen,
                                                                  (const uint8_t *)msg, len, NULL,
                                                                  0, NULL, nonce, sub) == 0);
                REQUIRE(clen == len + 16);
                CHECK_OK(chp_e2e_seal_chunk(key, v[k].index, v[k].last, (const uint8_t *)msg, len,
                                            ours));
                CHECK(memcmp(ours, theirs, len + 16) == 0);
                chp_hex_encode(ours, len + 16, h);
                CHECK(strcmp(h, v[k].expect) == 0);
        }
        sodium_memzero(sub, sizeof(sub));
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
        CHECK_EQ(n, 24 + 15 + strlen(m.name) + strlen(m.mime) + 16);
        REQUIRE(n > 0);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        /* a fresh nonce each time: the same metadata seals differently */
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob2, sizeof(blob2)), n);
        CHECK(memcmp(blob, blob2, (size_t)n) != 0);

        /* empty strings, and both at their maxima (the largest blob) */
        memset(&m, 0, sizeof(m));
        m.chunk_size = CHP_CHUNK_MIN;
        n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        CHECK_EQ(n, 24 + 15 + 16);
        CHECK_OK(chp_e2e_open_meta(key, blob, (size_t)n, &back));
        CHECK(meta_eq(&m, &back));
        memset(m.name, 'n', CHP_E2E_NAME_MAX);
        memset(m.mime, 'm', CHP_E2E_MIME_MAX);
        m.chunk_size = CHP_CHUNK_MAX;
        m.plain_size = UINT64_MAX;
        n = chp_e2e_seal_meta(key, &m, blob, sizeof(blob));
        CHECK_EQ(n, CHP_E2E_META_MAX);
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

TEST(meta_seal_errors)
{
        uint8_t key[CHP_FILE_KEY_BYTES], blob[CHP_E2E_META_MAX + 8];
        chp_e2e_keygen(key);
        struct chp_e2e_meta m = sample_meta();
        size_t need = 24 + 15 + strlen(m.name) + strlen(m.mime) + 16;
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, need - 1), -ENOSPC);
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, 0), -ENOSPC);
        CHECK_EQ(chp_e2e_seal_meta(key, &m, blob, need), need);
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
        /* every bit of nonce, ciphertext and tag matters */
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
        /* chunk and metadata keys differ: a chunk sealed with the same key is no blob */
        uint8_t chunk[64 + 16];
        memset(chunk, 0, sizeof(chunk));
        CHECK_OK(chp_e2e_seal_chunk(key, 0, true, chunk, 64, chunk));
        CHECK_EQ(chp_e2e_open_meta(key, chunk, sizeof(chunk), &back), -EBADMSG);
}

/* Seals an arbitrary plaintext the way chp_e2e_seal_meta does (subkey 2, XChaCha, nonce prefix),
 * so the parser behind the tag can be tested on encodings seal_meta never writes. */
static size_t craft(const uint8_t *key, const uint8_t *pt, size_t len, uint8_t *blob)
{
        uint8_t sub[32];
        if (crypto_kdf_derive_from_key(sub, sizeof(sub), 2, "chaparE2", key) != 0)
                return 0;
        randombytes_buf(blob, 24);
        unsigned long long clen = 0;
        int rc = crypto_aead_xchacha20poly1305_ietf_encrypt(blob + 24, &clen, pt, len, NULL, 0,
                                                            NULL, blob, sub);
        sodium_memzero(sub, sizeof(sub));
        return rc == 0 ? 24 + (size_t)clen : 0;
}

/* version, plain_size, chunk_size, name_len, name, mime_len, mime */
static size_t encode(uint8_t *p, uint8_t version, uint64_t plain, uint32_t cs, const char *name,
                     size_t nlen, const char *mime, size_t mlen)
{
        size_t o = 0;
        p[o++] = version;
        for (int i = 0; i < 8; i++)
                p[o++] = (uint8_t)(plain >> (8 * i));
        for (int i = 0; i < 4; i++)
                p[o++] = (uint8_t)(cs >> (8 * i));
        p[o++] = (uint8_t)nlen;
        memcpy(p + o, name, nlen);
        o += nlen;
        p[o++] = (uint8_t)mlen;
        memcpy(p + o, mime, mlen);
        return o + mlen;
}

TEST(meta_parser_is_strict)
{
        REQUIRE(sodium_init() >= 0);
        uint8_t key[CHP_FILE_KEY_BYTES], pt[600], blob[700];
        chp_e2e_keygen(key);
        struct chp_e2e_meta back;
        char longname[300];
        memset(longname, 'a', sizeof(longname));

        /* the documented encoding opens: this pins the layout */
        size_t n = encode(pt, 1, 42, CHP_CHUNK_MIN, "a.txt", 5, "text/plain", 10);
        size_t b = craft(key, pt, n, blob);
        REQUIRE(b == n + 40);
        CHECK_OK(chp_e2e_open_meta(key, blob, b, &back));
        CHECK_EQ(back.plain_size, 42);
        CHECK_EQ(back.chunk_size, CHP_CHUNK_MIN);
        CHECK(strcmp(back.name, "a.txt") == 0 && strcmp(back.mime, "text/plain") == 0);

        struct {
                const char *why;
                size_t len;
        } cases[16];
        size_t nc = 0;
        uint8_t pts[16][600];
        memset(pts, 0, sizeof(pts));
#define CASE(why_, expr_)                                                                          \
        do {                                                                                       \
                cases[nc].why = why_;                                                              \
                cases[nc].len = (expr_);                                                           \
                nc++;                                                                              \
        } while (0)
        CASE("version 0", encode(pts[nc], 0, 1, CHP_CHUNK_MIN, "a", 1, "b", 1));
        CASE("version 2", encode(pts[nc], 2, 1, CHP_CHUNK_MIN, "a", 1, "b", 1));
        CASE("chunk size 0", encode(pts[nc], 1, 1, 0, "a", 1, "b", 1));
        CASE("chunk size not 2^k", encode(pts[nc], 1, 1, CHP_CHUNK_MIN + 1, "a", 1, "b", 1));
        CASE("chunk size too big", encode(pts[nc], 1, 1, CHP_CHUNK_MAX * 2, "a", 1, "b", 1));
        CASE("mime too long", encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "a", 1, longname, 128));
        CASE("NUL in name", encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "a\0b", 3, "b", 1));
        CASE("NUL in mime", encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "a", 1, "b\0", 2));
        /* trailing byte after the mime */
        n = encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "a", 1, "b", 1);
        pts[nc][n] = 'x';
        CASE("trailing byte", n + 1);
        /* lengths that run past the plaintext */
        n = encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "abc", 3, "b", 1);
        pts[nc][13] = 200;
        CASE("name_len past end", n);
        n = encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "abc", 3, "b", 1);
        pts[nc][13 + 1 + 3] = 2;
        CASE("mime_len past end", n);
        /* no mime_len byte at all */
        CASE("missing mime_len", encode(pts[nc], 1, 1, CHP_CHUNK_MIN, "a", 1, "", 0) - 1);
        CASE("shorter than fixed part", 14);
        CASE("empty", 0);
#undef CASE
        for (size_t i = 0; i < nc; i++) {
                b = craft(key, pts[i], cases[i].len, blob);
                REQUIRE(b == cases[i].len + 40);
                int rc = chp_e2e_open_meta(key, blob, b, &back);
                if (rc != -EBADMSG)
                        fprintf(stderr, "  case '%s' gave %d\n", cases[i].why, rc);
                CHECK_EQ(rc, -EBADMSG);
        }
        /* the maximal name (255) still opens */
        n = encode(pt, 1, 1, CHP_CHUNK_MIN, longname, 255, "", 0);
        b = craft(key, pt, n, blob);
        CHECK_OK(chp_e2e_open_meta(key, blob, b, &back));
        CHECK_EQ(strlen(back.name), 255);
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

/* Sealing and opening (chunks and metadata) allocate nothing: the sweep must find no
 * allocation to fail. */
static int e2e_pass(void *arg)
{
        (void)arg;
        uint8_t key[CHP_FILE_KEY_BYTES], plain[1000], sealed[1000 + CHP_E2E_CHUNK_OVERHEAD],
            back[1000];
        fixed_key(key);
        fill(plain, sizeof(plain), 5);
        int rc = chp_e2e_seal_chunk(key, 3, true, plain, sizeof(plain), sealed);
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

TEST(allocation_failure)
{
        CHECK_EQ(tu_alloc_sweep("e2e seal/open", e2e_pass, NULL, 0), 0);
}

HARNESS_MAIN()
