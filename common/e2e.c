/* e2e.c — STREAM-style chunk sealing and sealed metadata over libsodium (see e2e.h).
 *
 *   file key K (32 random bytes)
 *     ├─ crypto_kdf(K, id 1, "chaparE2") = chunk key  ── ChaCha20-Poly1305-IETF per chunk
 *     │      nonce[12] = index as 11 bytes big-endian || last (1 for the final chunk, else 0)
 *     │      sealed chunk = ciphertext || tag[16]            (no additional data)
 *     └─ crypto_kdf(K, id 2, "chaparE2") = meta key   ── XChaCha20-Poly1305-IETF
 *            blob = nonce[24] (random) || seal(version u8 = 1, plain_size u64 LE,
 *                   chunk_size u32 LE, name_len u8, name, mime_len u8, mime) || tag[16]
 *
 * A u64 index always fits the 88-bit counter. Subkeys and decrypted metadata live on the stack
 * and are wiped with sodium_memzero on every exit path.
 */
#include "e2e.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "manifest.h"

_Static_assert(CHP_FILE_KEY_BYTES == crypto_kdf_KEYBYTES, "file key is a kdf key");
_Static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == 32, "chunk key size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12, "chunk nonce size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == CHP_E2E_TAG, "chunk tag size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32, "meta key size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24, "meta nonce size");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == CHP_E2E_TAG, "meta tag size");
_Static_assert(CHP_E2E_NAME_MAX <= 255 && CHP_E2E_MIME_MAX <= 255, "lengths are one byte");

#define KDF_CONTEXT  "chaparE2"
#define SUBKEY_CHUNK 1
#define SUBKEY_META  2
#define META_VERSION 1
#define META_NONCE   crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
/* version, plain_size, chunk_size, name_len, mime_len */
#define META_FIXED     (1 + 8 + 4 + 1 + 1)
#define META_PLAIN_MAX (META_FIXED + CHP_E2E_NAME_MAX + CHP_E2E_MIME_MAX)

_Static_assert(sizeof(KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context is 8 bytes");
_Static_assert(CHP_E2E_META_MAX == META_NONCE + META_PLAIN_MAX + CHP_E2E_TAG, "meta max");

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

void chp_e2e_keygen(uint8_t key[CHP_FILE_KEY_BYTES])
{
        ensure_init();
        crypto_kdf_keygen(key);
}

static void chunk_nonce(uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES], uint64_t index,
                        bool last)
{
        /* 11 bytes big-endian: the top three are always zero for a u64 */
        memset(nonce, 0, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
        for (int i = 0; i < 8; i++)
                nonce[10 - i] = (uint8_t)(index >> (8 * i));
        nonce[11] = last ? 1 : 0;
}

int chp_e2e_seal_chunk(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                       const uint8_t *plain, size_t len, uint8_t *out)
{
        if (len > CHP_CHUNK_MAX - CHP_E2E_TAG)
                return -EINVAL;
        uint8_t subkey[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
        uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
        int rc = 0;
        if (crypto_kdf_derive_from_key(subkey, sizeof(subkey), SUBKEY_CHUNK, KDF_CONTEXT, key) !=
            0) {
                rc = -EINVAL;
                goto out;
        }
        chunk_nonce(nonce, index, last);
        unsigned long long clen = 0;
        if (crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, plain, len, NULL, 0, NULL, nonce,
                                                      subkey) != 0 ||
            clen != len + CHP_E2E_TAG)
                rc = -EINVAL;
out:
        sodium_memzero(subkey, sizeof(subkey));
        return rc;
}

int chp_e2e_open_chunk(const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                       const uint8_t *cipher, size_t len, uint8_t *out)
{
        /* nothing shorter than a tag or longer than the largest chunk was ever sealed */
        if (len < CHP_E2E_TAG || len > CHP_CHUNK_MAX)
                return -EBADMSG;
        uint8_t subkey[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
        uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
        int rc = 0;
        if (crypto_kdf_derive_from_key(subkey, sizeof(subkey), SUBKEY_CHUNK, KDF_CONTEXT, key) !=
            0) {
                rc = -EINVAL;
                goto out;
        }
        chunk_nonce(nonce, index, last);
        unsigned long long mlen = 0;
        /* on failure libsodium leaves no plaintext in out */
        if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, cipher, len, NULL, 0, nonce,
                                                      subkey) != 0 ||
            mlen != len - CHP_E2E_TAG)
                rc = -EBADMSG;
out:
        sodium_memzero(subkey, sizeof(subkey));
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

ssize_t chp_e2e_seal_meta(const uint8_t key[CHP_FILE_KEY_BYTES], const struct chp_e2e_meta *m,
                          uint8_t *out, size_t cap)
{
        size_t nlen = strnlen(m->name, sizeof(m->name));
        size_t mlen = strnlen(m->mime, sizeof(m->mime));
        if (!valid_chunk_size(m->chunk_size) || nlen > CHP_E2E_NAME_MAX || mlen > CHP_E2E_MIME_MAX)
                return -EINVAL;
        size_t plen = META_FIXED + nlen + mlen;
        size_t blob = META_NONCE + plen + CHP_E2E_TAG;
        if (cap < blob)
                return -ENOSPC;

        ensure_init();
        uint8_t subkey[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
        uint8_t plain[META_PLAIN_MAX];
        ssize_t rc = (ssize_t)blob;
        if (crypto_kdf_derive_from_key(subkey, sizeof(subkey), SUBKEY_META, KDF_CONTEXT, key) !=
            0) {
                rc = -EINVAL;
                goto out;
        }
        uint8_t *p = plain;
        *p++ = META_VERSION;
        put_le(p, m->plain_size, 8);
        p += 8;
        put_le(p, m->chunk_size, 4);
        p += 4;
        *p++ = (uint8_t)nlen;
        memcpy(p, m->name, nlen);
        p += nlen;
        *p++ = (uint8_t)mlen;
        memcpy(p, m->mime, mlen);

        randombytes_buf(out, META_NONCE);
        unsigned long long clen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + META_NONCE, &clen, plain, plen, NULL,
                                                       0, NULL, out, subkey) != 0 ||
            clen != plen + CHP_E2E_TAG)
                rc = -EINVAL;
out:
        sodium_memzero(plain, sizeof(plain));
        sodium_memzero(subkey, sizeof(subkey));
        return rc;
}

/* Strict decoding of the sealed plaintext: exactly one encoding per struct. */
static int parse_meta(const uint8_t *p, size_t len, struct chp_e2e_meta *m)
{
        if (len < META_FIXED || p[0] != META_VERSION)
                return -EBADMSG;
        m->plain_size = get_le(p + 1, 8);
        m->chunk_size = (uint32_t)get_le(p + 9, 4);
        if (!valid_chunk_size(m->chunk_size))
                return -EBADMSG;
        size_t off = 13;
        size_t nlen = p[off++];
        if (nlen > CHP_E2E_NAME_MAX || nlen > len - off || memchr(p + off, 0, nlen))
                return -EBADMSG;
        memcpy(m->name, p + off, nlen);
        m->name[nlen] = '\0';
        off += nlen;
        if (off >= len)
                return -EBADMSG;
        size_t mlen = p[off++];
        if (mlen > CHP_E2E_MIME_MAX || mlen != len - off || memchr(p + off, 0, mlen))
                return -EBADMSG;
        memcpy(m->mime, p + off, mlen);
        m->mime[mlen] = '\0';
        return 0;
}

int chp_e2e_open_meta(const uint8_t key[CHP_FILE_KEY_BYTES], const uint8_t *blob, size_t len,
                      struct chp_e2e_meta *out)
{
        memset(out, 0, sizeof(*out));
        if (len < META_NONCE + META_FIXED + CHP_E2E_TAG || len > CHP_E2E_META_MAX)
                return -EBADMSG;
        uint8_t subkey[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
        uint8_t plain[META_PLAIN_MAX];
        struct chp_e2e_meta m;
        memset(&m, 0, sizeof(m));
        int rc = 0;
        if (crypto_kdf_derive_from_key(subkey, sizeof(subkey), SUBKEY_META, KDF_CONTEXT, key) !=
            0) {
                rc = -EINVAL;
                goto out;
        }
        unsigned long long plen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &plen, NULL, blob + META_NONCE,
                                                       len - META_NONCE, NULL, 0, blob,
                                                       subkey) != 0 ||
            plen != len - META_NONCE - CHP_E2E_TAG) {
                rc = -EBADMSG;
                goto out;
        }
        rc = parse_meta(plain, (size_t)plen, &m);
        if (rc == 0)
                *out = m;
out:
        sodium_memzero(&m, sizeof(m));
        sodium_memzero(plain, sizeof(plain));
        sodium_memzero(subkey, sizeof(subkey));
        return rc;
}
