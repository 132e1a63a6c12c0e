/* e2e.c — format v2: synthetic-nonce chunk sealing, committed fixed-size metadata (see e2e.h).
 *
 *   file key K (32 random bytes)
 *     ├─ crypto_kdf(K, id 1, "chpE2Ev2") = chunk key ── XChaCha20-Poly1305-IETF per chunk
 *     ├─ crypto_kdf(K, id 2, "chpE2Ev2") = SIV key   ── N = BLAKE2b-192_SIV(i LE64 || last ||
 *     │                                                                 SHA-256(pt))
 *     │      sealed chunk = N[24] || ciphertext || tag[16]      (AD = i LE64 || last)
 *     ├─ crypto_kdf(K, id 3, "chpE2Ev2") = meta key  ── XChaCha20-Poly1305-IETF
 *     └─ crypto_kdf(K, id 4, "chpE2Ev2") = commitment
 *            blob = 2 || commitment[32] || nonce[24] (random) || seal(plain_size LE64,
 *                   chunk_size LE32, name_len u8, name[255], mime_len u8, mime[127]) || tag[16]
 *                   (AD = 2 || commitment)
 *
 * The SIV key and the chunk key are separate subkeys, as SIV needs: the nonce is a PRF output
 * the encryption key never touched. The context differs from v1's ("chaparE2"), so no v2 subkey
 * equals a v1 one even for a key cached before the upgrade. Subkeys and decrypted metadata live
 * on the stack and are wiped with sodium_memzero on every exit path. Nothing here allocates.
 *
 * Why v1 is not read: its metadata carries no commitment, so accepting it would let a sender
 * choose v1 and defeat the commitment; and its chunks have another overhead, which every caller
 * sizes chunks with. Files sealed by v1 stop opening at the upgrade (tickets live at most the
 * relay's file expiry, 30 days by default).
 */
#include "e2e.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "hash.h"

#include "manifest.h"

_Static_assert(CHP_FILE_KEY_BYTES == crypto_kdf_KEYBYTES, "file key is a kdf key");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32, "chunk and meta key size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == CHP_E2E_NONCE, "nonce size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == CHP_E2E_TAG, "tag size");
_Static_assert(CHP_E2E_NONCE >= crypto_generichash_BYTES_MIN &&
                   CHP_E2E_NONCE <= crypto_generichash_BYTES_MAX,
               "a BLAKE2b output is the nonce");
_Static_assert(crypto_generichash_KEYBYTES_MAX >= 32, "SIV key size");
_Static_assert(CHP_E2E_COMMIT_BYTES >= crypto_kdf_BYTES_MIN &&
                   CHP_E2E_COMMIT_BYTES <= crypto_kdf_BYTES_MAX,
               "the commitment is a kdf output");
_Static_assert(CHP_E2E_NAME_MAX <= 255 && CHP_E2E_MIME_MAX <= 255, "lengths are one byte");

#define KDF_CONTEXT   "chpE2Ev2"
#define SUBKEY_CHUNK  1
#define SUBKEY_SIV    2
#define SUBKEY_META   3
#define SUBKEY_COMMIT 4
#define CHUNK_AD      9 /* index u64 LE, last u8 */
#define SUBKEY_BYTES  crypto_aead_xchacha20poly1305_ietf_KEYBYTES
/* plain_size, chunk_size, name_len, name, mime_len, mime */
#define META_BODY   (8 + 4 + 1 + CHP_E2E_NAME_MAX + 1 + CHP_E2E_MIME_MAX)
#define META_AD     (1 + CHP_E2E_COMMIT_BYTES) /* version, commitment */
#define META_NONCE  META_AD                    /* where the nonce starts */
#define META_SEALED (META_AD + CHP_E2E_NONCE)  /* where the sealed body starts */

_Static_assert(sizeof(KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context is 8 bytes");
_Static_assert(CHP_E2E_META_BYTES == META_SEALED + META_BODY + CHP_E2E_TAG, "meta size");

/* libsodium 1.0.18 wants sodium_init() before randombytes; it is idempotent and thread-safe.
 * It fails only when the library cannot set itself up, and then no key may be produced:
 * abort, as libsodium's own randombytes does on failure. */
static void ensure_init(void)
{
        if (sodium_init() < 0)
                abort();
}

static bool valid_chunk_size(uint32_t chunk_size)
{
        return chunk_size >= CHP_CHUNK_MIN && chunk_size <= CHP_CHUNK_MAX &&
               (chunk_size & (chunk_size - 1)) == 0;
}

uint32_t chp_e2e_plain_chunk(uint32_t chunk_size)
{
        return valid_chunk_size(chunk_size) ? chunk_size - CHP_E2E_CHUNK_OVERHEAD : 0;
}

uint64_t chp_e2e_chunk_count(uint64_t plain_size, uint32_t chunk_size)
{
        uint32_t pc = chp_e2e_plain_chunk(chunk_size);
        if (pc == 0)
                return 0;
        if (plain_size == 0)
                return 1;
        return plain_size / pc + (plain_size % pc != 0);
}

uint64_t chp_e2e_cipher_size(uint64_t plain_size, uint32_t chunk_size)
{
        uint64_t n = chp_e2e_chunk_count(plain_size, chunk_size);
        if (n == 0 || n > (UINT64_MAX - plain_size) / CHP_E2E_CHUNK_OVERHEAD)
                return 0;
        return plain_size + n * CHP_E2E_CHUNK_OVERHEAD;
}

/* Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication with
 * PURBs", 2019): with E = floor(log2 L) and S = floor(log2 E) + 1, clear the low E - S bits of L
 * rounding up. L = 0 and 1 have no log2 E; they stay as they are. */
uint64_t chp_e2e_padme(uint64_t plain_size)
{
        if (plain_size < 2)
                return plain_size;
        unsigned e = 63u - (unsigned)__builtin_clzll(plain_size); /* >= 1 */
        unsigned s = 32u - (unsigned)__builtin_clz(e);            /* floor(log2 e) + 1 */
        uint64_t mask = ((uint64_t)1 << (e - s)) - 1;
        if (plain_size > UINT64_MAX - mask)
                return UINT64_MAX;
        return (plain_size + mask) & ~mask;
}

uint64_t chp_e2e_padded_size(uint64_t plain_size)
{
        /* padme(L) >= L, so the floor keeps the result monotonic */
        return plain_size < CHP_E2E_PAD_FLOOR ? CHP_E2E_PAD_FLOOR : chp_e2e_padme(plain_size);
}

void chp_e2e_keygen(uint8_t key[CHP_FILE_KEY_BYTES])
{
        ensure_init();
        crypto_kdf_keygen(key);
}

static int subkey(uint8_t out[SUBKEY_BYTES], uint64_t id, const uint8_t key[CHP_FILE_KEY_BYTES])
{
        return crypto_kdf_derive_from_key(out, SUBKEY_BYTES, id, KDF_CONTEXT, key) == 0 ? 0
                                                                                        : -EINVAL;
}

static void chunk_ad(uint8_t ad[CHUNK_AD], uint64_t index, bool last)
{
        for (int i = 0; i < 8; i++)
                ad[i] = (uint8_t)(index >> (8 * i));
        ad[8] = last ? 1 : 0;
}

int chp_e2e_seal_chunk(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                       const uint8_t *plain, size_t len, uint8_t *out)
{
        uint8_t digest[CHP_HASH_BYTES];
        if (len > CHP_CHUNK_MAX - CHP_E2E_CHUNK_OVERHEAD)
                return -EINVAL;
        int rc = chp_sha256(plain, len, digest); /* OpenSSL's context: -ENOMEM can happen */
        return rc ? rc : chp_e2e_seal_chunk_hashed(key, index, last, plain, len, digest, out);
}

int chp_e2e_seal_chunk_hashed(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                              const uint8_t *plain, size_t len,
                              const uint8_t digest[CHP_HASH_BYTES], uint8_t *out)
{
        if (len > CHP_CHUNK_MAX - CHP_E2E_CHUNK_OVERHEAD)
                return -EINVAL;
        uint8_t siv[SUBKEY_BYTES], ck[SUBKEY_BYTES], ad[CHUNK_AD];
        crypto_generichash_state h;
        unsigned long long clen = 0;
        int rc;
        chunk_ad(ad, index, last);
        if ((rc = subkey(siv, SUBKEY_SIV, key)) || (rc = subkey(ck, SUBKEY_CHUNK, key)))
                goto out;
        /* the nonce: PRF(index || last || SHA-256(plaintext)), written straight to the chunk's
         * head: the plaintext is hashed once, by SHA-256 (which the put needs anyway) */
        if (crypto_generichash_init(&h, siv, sizeof(siv), CHP_E2E_NONCE) != 0 ||
            crypto_generichash_update(&h, ad, sizeof(ad)) != 0 ||
            crypto_generichash_update(&h, digest, CHP_HASH_BYTES) != 0 ||
            crypto_generichash_final(&h, out, CHP_E2E_NONCE) != 0) {
                rc = -EINVAL;
                goto out;
        }
        if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + CHP_E2E_NONCE, &clen, plain, len, ad,
                                                       sizeof(ad), NULL, out, ck) != 0 ||
            clen != len + CHP_E2E_TAG)
                rc = -EINVAL;
out:
        sodium_memzero(&h, sizeof(h));
        sodium_memzero(siv, sizeof(siv));
        sodium_memzero(ck, sizeof(ck));
        return rc;
}

int chp_e2e_open_chunk(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                       const uint8_t *cipher, size_t len, uint8_t *out)
{
        /* nothing shorter than nonce + tag or longer than the largest chunk was ever sealed */
        if (len < CHP_E2E_CHUNK_OVERHEAD || len > CHP_CHUNK_MAX)
                return -EBADMSG;
        uint8_t ck[SUBKEY_BYTES], ad[CHUNK_AD];
        unsigned long long mlen = 0;
        int rc;
        chunk_ad(ad, index, last);
        if ((rc = subkey(ck, SUBKEY_CHUNK, key)))
                goto out;
        /* on failure libsodium leaves no plaintext in out */
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &mlen, NULL, cipher + CHP_E2E_NONCE,
                                                       len - CHP_E2E_NONCE, ad, sizeof(ad), cipher,
                                                       ck) != 0 ||
            mlen != len - CHP_E2E_CHUNK_OVERHEAD)
                rc = -EBADMSG;
out:
        sodium_memzero(ck, sizeof(ck));
        return rc;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
        for (int i = 0; i < n; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
        uint64_t v = 0;
        for (int i = n - 1; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

/* The key commitment: a kdf output, BLAKE2b with K as its key block, so finding two keys with
 * the same commitment is finding a BLAKE2b-256 collision. */
static int commitment(uint8_t out[CHP_E2E_COMMIT_BYTES], const uint8_t key[CHP_FILE_KEY_BYTES])
{
        return crypto_kdf_derive_from_key(out, CHP_E2E_COMMIT_BYTES, SUBKEY_COMMIT, KDF_CONTEXT,
                                          key) == 0
                   ? 0
                   : -EINVAL;
}

ssize_t chp_e2e_seal_meta(const uint8_t key[CHP_FILE_KEY_BYTES], const struct chp_e2e_meta *m,
                          uint8_t *out, size_t cap)
{
        size_t nlen = strnlen(m->name, sizeof(m->name));
        size_t mlen = strnlen(m->mime, sizeof(m->mime));
        if (!valid_chunk_size(m->chunk_size) || nlen > CHP_E2E_NAME_MAX || mlen > CHP_E2E_MIME_MAX)
                return -EINVAL;
        if (cap < CHP_E2E_META_BYTES)
                return -ENOSPC;

        ensure_init();
        uint8_t mk[SUBKEY_BYTES];
        uint8_t body[META_BODY];
        unsigned long long clen = 0;
        ssize_t rc = CHP_E2E_META_BYTES;
        out[0] = CHP_E2E_VERSION;
        if (commitment(out + 1, key) != 0 || subkey(mk, SUBKEY_META, key) != 0) {
                rc = -EINVAL;
                goto out;
        }
        /* fixed-size fields: the blob's length says nothing about the name or the type */
        memset(body, 0, sizeof(body));
        uint8_t *p = body;
        put_le(p, m->plain_size, 8);
        p += 8;
        put_le(p, m->chunk_size, 4);
        p += 4;
        *p++ = (uint8_t)nlen;
        memcpy(p, m->name, nlen);
        p += CHP_E2E_NAME_MAX;
        *p++ = (uint8_t)mlen;
        memcpy(p, m->mime, mlen);

        randombytes_buf(out + META_NONCE, CHP_E2E_NONCE);
        if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + META_SEALED, &clen, body, sizeof(body),
                                                       out, META_AD, NULL, out + META_NONCE,
                                                       mk) != 0 ||
            clen != sizeof(body) + CHP_E2E_TAG)
                rc = -EINVAL;
out:
        sodium_memzero(body, sizeof(body));
        sodium_memzero(mk, sizeof(mk));
        return rc;
}

/* A string field of cap bytes after its length byte: the length fits, no NUL inside, zeros after
 * (exactly one encoding per struct). */
static bool field_ok(size_t len, const uint8_t *p, size_t cap)
{
        if (len > cap || memchr(p, 0, len))
                return false;
        for (size_t i = len; i < cap; i++)
                if (p[i])
                        return false;
        return true;
}

/* Strict decoding of the sealed body. */
static int parse_meta(const uint8_t p[META_BODY], struct chp_e2e_meta *m)
{
        m->plain_size = get_le(p, 8);
        m->chunk_size = (uint32_t)get_le(p + 8, 4);
        if (!valid_chunk_size(m->chunk_size))
                return -EBADMSG;
        size_t off = 12;
        size_t nlen = p[off++];
        if (!field_ok(nlen, p + off, CHP_E2E_NAME_MAX))
                return -EBADMSG;
        memcpy(m->name, p + off, nlen);
        m->name[nlen] = '\0';
        off += CHP_E2E_NAME_MAX;
        size_t mlen = p[off++];
        if (!field_ok(mlen, p + off, CHP_E2E_MIME_MAX))
                return -EBADMSG;
        memcpy(m->mime, p + off, mlen);
        m->mime[mlen] = '\0';
        return 0;
}

int chp_e2e_open_meta(const uint8_t key[CHP_FILE_KEY_BYTES], const uint8_t *blob, size_t len,
                      struct chp_e2e_meta *out)
{
        memset(out, 0, sizeof(*out));
        if (len != CHP_E2E_META_BYTES || blob[0] != CHP_E2E_VERSION)
                return -EBADMSG;
        uint8_t mk[SUBKEY_BYTES], commit[CHP_E2E_COMMIT_BYTES];
        uint8_t body[META_BODY];
        unsigned long long plen = 0;
        struct chp_e2e_meta m;
        memset(&m, 0, sizeof(m));
        int rc = 0;
        if (commitment(commit, key) != 0 || subkey(mk, SUBKEY_META, key) != 0) {
                rc = -EINVAL;
                goto out;
        }
        /* the key first: a blob committed to another key is refused before any decryption */
        if (sodium_memcmp(commit, blob + 1, CHP_E2E_COMMIT_BYTES) != 0) {
                rc = -EBADMSG;
                goto out;
        }
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(body, &plen, NULL, blob + META_SEALED,
                                                       len - META_SEALED, blob, META_AD,
                                                       blob + META_NONCE, mk) != 0 ||
            plen != sizeof(body)) {
                rc = -EBADMSG;
                goto out;
        }
        rc = parse_meta(body, &m);
        if (rc == 0)
                *out = m;
out:
        sodium_memzero(&m, sizeof(m));
        sodium_memzero(body, sizeof(body));
        sodium_memzero(mk, sizeof(mk));
        sodium_memzero(commit, sizeof(commit));
        return rc;
}
