/* noise.c — the Noise Protocol Framework, revision 34, for the three patterns chapar speaks:
 *
 *   NK:  <- s                  XX:  -> e                         IK:  <- s
 *        ...                        <- e, ee, s, es                   ...
 *        -> e, es                   -> s, se                          -> e, es, s, ss
 *        <- e, ee                                                     <- e, ee, se
 *
 * DH is X25519 (crypto_scalarmult); the AEAD is ChaCha20-Poly1305 (IETF, nonce = 4 zero bytes +
 * little-endian n) or AES-256-GCM (nonce = 4 zero bytes + big-endian n); HASH is BLAKE2b-512 or
 * SHA-256, and HMAC/HKDF are built on HASH exactly as section 4.3 of the specification says
 * (keyed BLAKE2b is not HMAC). Every secret that passes through a local variable is wiped before
 * the function returns, on success and on failure; a handshake that fails on a message (a tag
 * mismatch, a truncated message, a low-order key) is wiped whole and refuses further use.
 */
#include "noise.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

_Static_assert(crypto_scalarmult_BYTES == CHP_KEY_BYTES, "X25519 output is DHLEN");
_Static_assert(crypto_scalarmult_SCALARBYTES == CHP_KEY_BYTES, "X25519 scalar is DHLEN");
_Static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == CHP_NOISE_KEYLEN, "ChaChaPoly key");
_Static_assert(crypto_aead_aes256gcm_KEYBYTES == CHP_NOISE_KEYLEN, "AESGCM key");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == CHP_NOISE_TAGLEN, "ChaChaPoly tag");
_Static_assert(crypto_aead_aes256gcm_ABYTES == CHP_NOISE_TAGLEN, "AESGCM tag");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12, "ChaChaPoly nonce");
_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == 12, "AESGCM nonce");
_Static_assert(crypto_generichash_BYTES_MAX == CHP_NOISE_HASHMAX, "BLAKE2b-512");
_Static_assert(crypto_hash_sha256_BYTES <= CHP_NOISE_HASHMAX, "SHA-256");

#define NONCELEN 12
#define BLOCKMAX 128 /* HMAC block length: 128 for BLAKE2b, 64 for SHA-256 */

/* ---- patterns ---- */

enum token { T_END = 0, T_E, T_S, T_EE, T_ES, T_SE, T_SS };

#define MSGS_MAX 3
#define TOKS_MAX 5

struct pattern_def {
        const char *name;
        bool pre_rs; /* "<- s": the responder's static key is a pre-message */
        int nmsgs;
        uint8_t toks[MSGS_MAX][TOKS_MAX]; /* T_END-terminated */
};

static const struct pattern_def patterns[] = {
    [CHP_NOISE_NK] = {"NK", true, 2, {{T_E, T_ES}, {T_E, T_EE}}},
    [CHP_NOISE_XX] = {"XX", false, 3, {{T_E}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE}}},
    [CHP_NOISE_IK] = {"IK", true, 2, {{T_E, T_ES, T_S, T_SS}, {T_E, T_EE, T_SE}}},
};

static bool pattern_ok(enum chp_noise_pattern p)
{
        return p == CHP_NOISE_NK || p == CHP_NOISE_XX || p == CHP_NOISE_IK;
}

/* The three pairs this module implements. */
static bool suite_ok(struct chp_noise_suite s)
{
        return (s.cipher == CHP_NOISE_CHACHAPOLY && s.hash == CHP_NOISE_BLAKE2B) ||
               (s.cipher == CHP_NOISE_AESGCM && s.hash == CHP_NOISE_SHA256) ||
               (s.cipher == CHP_NOISE_CHACHAPOLY && s.hash == CHP_NOISE_SHA256);
}

/* Whether this side of the pattern holds a static key pair: it sends "s", or it is the
 * responder of a pattern whose responder key is known in advance. */
static bool needs_s(const struct pattern_def *p, bool initiator)
{
        if (!initiator && p->pre_rs)
                return true;
        for (int m = initiator ? 0 : 1; m < p->nmsgs; m += 2)
                for (int t = 0; t < TOKS_MAX && p->toks[m][t] != T_END; t++)
                        if (p->toks[m][t] == T_S)
                                return true;
        return false;
}

static const char *cipher_name(enum chp_noise_cipher c)
{
        return c == CHP_NOISE_AESGCM ? "AESGCM" : "ChaChaPoly";
}

static const char *hash_name(enum chp_noise_hash h)
{
        return h == CHP_NOISE_SHA256 ? "SHA256" : "BLAKE2b";
}

int chp_noise_parse_name(const char *name, enum chp_noise_pattern *pattern,
                         struct chp_noise_suite *suite)
{
        static const struct chp_noise_suite suites[] = {
            {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
            {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
            {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256},
        };
        static const enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_XX, CHP_NOISE_IK};
        if (pattern)
                *pattern = CHP_NOISE_NK;
        if (suite)
                memset(suite, 0, sizeof(*suite));
        if (!name || !pattern || !suite)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
                for (size_t j = 0; j < sizeof(suites) / sizeof(suites[0]); j++) {
                        char buf[64];
                        ssize_t n = chp_noise_name(pats[i], suites[j], buf, sizeof(buf));
                        if (n > 0 && strcmp(buf, name) == 0) {
                                *pattern = pats[i];
                                *suite = suites[j];
                                return 0;
                        }
                }
        }
        return -EINVAL;
}

ssize_t chp_noise_name(enum chp_noise_pattern pattern, struct chp_noise_suite suite, char *out,
                       size_t cap)
{
        if (cap && out)
                out[0] = '\0';
        if (!pattern_ok(pattern) || !suite_ok(suite))
                return -EINVAL;
        char buf[64];
        int n = snprintf(buf, sizeof(buf), "Noise_%s_25519_%s_%s", patterns[pattern].name,
                         cipher_name(suite.cipher), hash_name(suite.hash));
        if (n < 0 || (size_t)n >= sizeof(buf))
                return -EINVAL;
        if (!out || (size_t)n >= cap)
                return -ENOSPC;
        memcpy(out, buf, (size_t)n + 1);
        return n;
}

/* sodium_init is idempotent and thread-safe; it also detects AES-NI. */
static bool crypto_ready(void)
{
        return sodium_init() >= 0;
}

bool chp_noise_suite_available(struct chp_noise_suite suite)
{
        if (!suite_ok(suite) || !crypto_ready())
                return false;
        return suite.cipher != CHP_NOISE_AESGCM || crypto_aead_aes256gcm_is_available();
}

/* ---- HASH, HMAC-HASH, HKDF ---- */

struct hash_ctx {
        enum chp_noise_hash alg;
        union {
                crypto_generichash_state b2;
                crypto_hash_sha256_state sha;
        } u;
};

static size_t hash_len(enum chp_noise_hash alg)
{
        return alg == CHP_NOISE_SHA256 ? crypto_hash_sha256_BYTES : crypto_generichash_BYTES_MAX;
}

static size_t block_len(enum chp_noise_hash alg)
{
        return alg == CHP_NOISE_SHA256 ? 64 : 128;
}

/* These cannot fail with the lengths used here (libsodium only refuses bad output lengths). */
static void hash_init(struct hash_ctx *c, enum chp_noise_hash alg)
{
        c->alg = alg;
        if (alg == CHP_NOISE_SHA256)
                (void)crypto_hash_sha256_init(&c->u.sha);
        else
                (void)crypto_generichash_init(&c->u.b2, NULL, 0, crypto_generichash_BYTES_MAX);
}

static void hash_update(struct hash_ctx *c, const uint8_t *p, size_t n)
{
        if (n == 0)
                return;
        if (c->alg == CHP_NOISE_SHA256)
                (void)crypto_hash_sha256_update(&c->u.sha, p, n);
        else
                (void)crypto_generichash_update(&c->u.b2, p, n);
}

/* Writes hash_len bytes and wipes the context (it has seen key material). */
static void hash_final(struct hash_ctx *c, uint8_t *out)
{
        if (c->alg == CHP_NOISE_SHA256)
                (void)crypto_hash_sha256_final(&c->u.sha, out);
        else
                (void)crypto_generichash_final(&c->u.b2, out, crypto_generichash_BYTES_MAX);
        sodium_memzero(c, sizeof(*c));
}

/* HMAC-HASH(key, d1 || d2), RFC 2104 on the spec's HASH; keylen <= hash_len <= block_len. out
 * may alias d1 or d2 but not key. */
static void hmac(enum chp_noise_hash alg, const uint8_t *key, size_t keylen, const uint8_t *d1,
                 size_t n1, const uint8_t *d2, size_t n2, uint8_t *out)
{
        uint8_t pad[BLOCKMAX], inner[CHP_NOISE_HASHMAX];
        struct hash_ctx c;
        size_t bl = block_len(alg), hl = hash_len(alg);

        memset(pad, 0, sizeof(pad));
        memcpy(pad, key, keylen);
        for (size_t i = 0; i < bl; i++)
                pad[i] ^= 0x36;
        hash_init(&c, alg);
        hash_update(&c, pad, bl);
        hash_update(&c, d1, n1);
        hash_update(&c, d2, n2);
        hash_final(&c, inner);
        for (size_t i = 0; i < bl; i++)
                pad[i] ^= 0x36 ^ 0x5c;
        hash_init(&c, alg);
        hash_update(&c, pad, bl);
        hash_update(&c, inner, hl);
        hash_final(&c, out);
        sodium_memzero(pad, sizeof(pad));
        sodium_memzero(inner, sizeof(inner));
}

/* HKDF(chaining_key, ikm, 2 or 3): o1 may alias ck (MixKey writes the new ck over the old). */
static void hkdf(enum chp_noise_hash alg, const uint8_t *ck, const uint8_t *ikm, size_t ikmlen,
                 uint8_t *o1, uint8_t *o2, uint8_t *o3)
{
        uint8_t tk[CHP_NOISE_HASHMAX];
        const uint8_t one = 1, two = 2, three = 3;
        size_t hl = hash_len(alg);

        hmac(alg, ck, hl, ikm, ikmlen, NULL, 0, tk);
        hmac(alg, tk, hl, &one, 1, NULL, 0, o1);
        hmac(alg, tk, hl, o1, hl, &two, 1, o2);
        if (o3)
                hmac(alg, tk, hl, o2, hl, &three, 1, o3);
        sodium_memzero(tk, sizeof(tk));
}

/* ---- CipherState ---- */

static void make_nonce(uint8_t nonce[NONCELEN], enum chp_noise_cipher c, uint64_t n)
{
        memset(nonce, 0, 4);
        for (int i = 0; i < 8; i++) {
                uint8_t b = (uint8_t)(n >> (8 * i));
                if (c == CHP_NOISE_AESGCM)
                        nonce[NONCELEN - 1 - i] = b;
                else
                        nonce[4 + i] = b;
        }
}

/* ENCRYPT(k, n, ad, plain): len + 16 bytes to out (out may equal plain). */
static int aead_encrypt(enum chp_noise_cipher c, const uint8_t *k, uint64_t n, const uint8_t *ad,
                        size_t adlen, const uint8_t *plain, size_t len, uint8_t *out)
{
        static const uint8_t empty[1];
        uint8_t nonce[NONCELEN];
        unsigned long long clen = 0;
        int rc;

        make_nonce(nonce, c, n);
        if (!ad)
                ad = empty;
        if (!plain)
                plain = empty;
        if (c == CHP_NOISE_AESGCM)
                rc = crypto_aead_aes256gcm_encrypt(out, &clen, plain, len, ad, adlen, NULL, nonce,
                                                   k);
        else
                rc = crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, plain, len, ad, adlen,
                                                               NULL, nonce, k);
        return rc == 0 && clen == len + CHP_NOISE_TAGLEN ? 0 : -ENOTSUP;
}

/* DECRYPT(k, n, ad, cipher): len - 16 bytes to out (out may equal cipher; libsodium zeroes it on
 * a tag mismatch). len >= 16. */
static int aead_decrypt(enum chp_noise_cipher c, const uint8_t *k, uint64_t n, const uint8_t *ad,
                        size_t adlen, const uint8_t *cipher, size_t len, uint8_t *out)
{
        static const uint8_t empty[1];
        uint8_t nonce[NONCELEN], scratch[1];
        unsigned long long mlen = 0;
        int rc;

        make_nonce(nonce, c, n);
        if (!ad)
                ad = empty;
        if (!out)
                out = scratch; /* only when len == 16: nothing is written */
        if (c == CHP_NOISE_AESGCM)
                rc = crypto_aead_aes256gcm_decrypt(out, &mlen, NULL, cipher, len, ad, adlen, nonce,
                                                   k);
        else
                rc = crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, cipher, len, ad,
                                                               adlen, nonce, k);
        return rc == 0 && mlen == len - CHP_NOISE_TAGLEN ? 0 : -EBADMSG;
}

int chp_noise_encrypt(struct chp_noise_cs *cs, const uint8_t *ad, size_t adlen,
                      const uint8_t *plain, size_t len, uint8_t *out)
{
        if (!cs || !cs->has_key || !out || (!plain && len) || (!ad && adlen))
                return -EINVAL;
        if (len > CHP_NOISE_PLAINMAX)
                return -EINVAL;
        if (cs->n == UINT64_MAX) /* 2^64-1 is reserved for Rekey */
                return -EBADMSG;
        int rc = aead_encrypt(cs->suite.cipher, cs->k, cs->n, ad, adlen, plain, len, out);
        if (rc != 0)
                return rc;
        cs->n++;
        return 0;
}

int chp_noise_decrypt(struct chp_noise_cs *cs, const uint8_t *ad, size_t adlen,
                      const uint8_t *cipher, size_t len, uint8_t *out)
{
        if (!cs || !cs->has_key || !cipher || (!ad && adlen) || (!out && len > CHP_NOISE_TAGLEN))
                return -EINVAL;
        if (len < CHP_NOISE_TAGLEN || len > CHP_NOISE_MSGMAX || cs->n == UINT64_MAX)
                return -EBADMSG;
        int rc = aead_decrypt(cs->suite.cipher, cs->k, cs->n, ad, adlen, cipher, len, out);
        if (rc != 0)
                return rc;
        cs->n++;
        return 0;
}

void chp_noise_rekey(struct chp_noise_cs *cs)
{
        uint8_t zeros[CHP_NOISE_KEYLEN] = {0}, out[CHP_NOISE_KEYLEN + CHP_NOISE_TAGLEN];
        if (!cs || !cs->has_key)
                return;
        if (aead_encrypt(cs->suite.cipher, cs->k, UINT64_MAX, NULL, 0, zeros, sizeof(zeros), out) ==
            0)
                memcpy(cs->k, out, CHP_NOISE_KEYLEN);
        else
                chp_noise_cs_wipe(cs); /* cannot happen with a usable suite; never keep the key */
        sodium_memzero(out, sizeof(out));
}

void chp_noise_cs_wipe(struct chp_noise_cs *cs)
{
        if (cs)
                sodium_memzero(cs, sizeof(*cs));
}

/* ---- SymmetricState ---- */

static void mix_hash(struct chp_noise_hs *hs, const uint8_t *data, size_t len)
{
        struct hash_ctx c;
        hash_init(&c, hs->suite.hash);
        hash_update(&c, hs->h, hs->hashlen);
        hash_update(&c, data, len);
        hash_final(&c, hs->h);
}

static void mix_key(struct chp_noise_hs *hs, const uint8_t *ikm, size_t len)
{
        uint8_t tk[CHP_NOISE_HASHMAX];
        hkdf(hs->suite.hash, hs->ck, ikm, len, hs->ck, tk, NULL);
        memcpy(hs->cs.k, tk, CHP_NOISE_KEYLEN); /* truncated when HASHLEN is 64 */
        hs->cs.has_key = true;
        hs->cs.n = 0;
        sodium_memzero(tk, sizeof(tk));
}

/* EncryptAndHash: writes len (+ 16 once there is a key) bytes to out; *outlen gets the count. */
static int encrypt_and_hash(struct chp_noise_hs *hs, const uint8_t *plain, size_t len, uint8_t *out,
                            size_t *outlen)
{
        if (hs->cs.has_key) {
                int rc = chp_noise_encrypt(&hs->cs, hs->h, hs->hashlen, plain, len, out);
                if (rc != 0)
                        return rc;
                len += CHP_NOISE_TAGLEN;
        } else if (len) {
                memmove(out, plain, len);
        }
        mix_hash(hs, out, len);
        *outlen = len;
        return 0;
}

/* DecryptAndHash of the len bytes at c into out. h is computed over the ciphertext before
 * decryption, so out may equal c. */
static int decrypt_and_hash(struct chp_noise_hs *hs, const uint8_t *c, size_t len, uint8_t *out)
{
        uint8_t newh[CHP_NOISE_HASHMAX];
        struct hash_ctx hc;
        int rc = 0;

        hash_init(&hc, hs->suite.hash);
        hash_update(&hc, hs->h, hs->hashlen);
        hash_update(&hc, c, len);
        hash_final(&hc, newh);
        if (hs->cs.has_key)
                rc = chp_noise_decrypt(&hs->cs, hs->h, hs->hashlen, c, len, out);
        else if (len)
                memmove(out, c, len);
        if (rc == 0)
                memcpy(hs->h, newh, hs->hashlen);
        sodium_memzero(newh, sizeof(newh));
        return rc == 0 ? 0 : -EBADMSG;
}

/* MixKey(DH(priv, pub)); an all-zero result (a low-order pub) is -EBADMSG. */
static int mix_dh(struct chp_noise_hs *hs, const uint8_t *priv, const uint8_t *pub)
{
        uint8_t d[CHP_KEY_BYTES];
        int rc =
            crypto_scalarmult(d, priv, pub) == 0 && !sodium_is_zero(d, sizeof(d)) ? 0 : -EBADMSG;
        if (rc == 0)
                mix_key(hs, d, sizeof(d));
        sodium_memzero(d, sizeof(d));
        return rc;
}

/* ---- HandshakeState ---- */

/* An initialised, not wiped, not split handshake. */
static bool hs_live(const struct chp_noise_hs *hs)
{
        return hs && hs->hashlen != 0 && pattern_ok(hs->pattern) && hs->step >= 0 &&
               hs->step <= patterns[hs->pattern].nmsgs;
}

int chp_noise_hs_init(struct chp_noise_hs *hs, enum chp_noise_pattern pattern,
                      struct chp_noise_suite suite, bool initiator, const uint8_t *prologue,
                      size_t prologue_len, const uint8_t *s_priv, const uint8_t *rs)
{
        if (!hs)
                return -EINVAL;
        sodium_memzero(hs, sizeof(*hs));
        if (!pattern_ok(pattern) || !suite_ok(suite) || (!prologue && prologue_len))
                return -EINVAL;
        const struct pattern_def *p = &patterns[pattern];
        /* exactly the keys the pattern uses on this side */
        if ((s_priv != NULL) != needs_s(p, initiator) || (rs != NULL) != (initiator && p->pre_rs))
                return -EINVAL;
        if (!chp_noise_suite_available(suite))
                return -ENOTSUP;

        hs->pattern = pattern;
        hs->suite = suite;
        hs->cs.suite = suite;
        hs->initiator = initiator;
        hs->hashlen = hash_len(suite.hash);
        if (s_priv) {
                memcpy(hs->s_priv, s_priv, CHP_KEY_BYTES);
                if (crypto_scalarmult_base(hs->s_pub, hs->s_priv) != 0) {
                        chp_noise_hs_wipe(hs);
                        return -EINVAL;
                }
                hs->has_s = true;
        }
        if (rs) {
                memcpy(hs->rs, rs, CHP_KEY_BYTES);
                hs->has_rs = true;
        }

        /* InitializeSymmetric: the name itself when it fits in HASHLEN, else its hash */
        char name[64];
        ssize_t n = chp_noise_name(pattern, suite, name, sizeof(name));
        if (n < 0) {
                chp_noise_hs_wipe(hs);
                return -EINVAL;
        }
        if ((size_t)n <= hs->hashlen) {
                memcpy(hs->h, name, (size_t)n);
        } else {
                struct hash_ctx c;
                hash_init(&c, suite.hash);
                hash_update(&c, (const uint8_t *)name, (size_t)n);
                hash_final(&c, hs->h);
        }
        memcpy(hs->ck, hs->h, hs->hashlen);
        mix_hash(hs, prologue, prologue_len);
        if (p->pre_rs) /* "<- s": the responder's key, known to both before the first message */
                mix_hash(hs, initiator ? hs->rs : hs->s_pub, CHP_KEY_BYTES);
        hs->step = 0;
        return 0;
}

void chp_noise_hs_fix_ephemeral(struct chp_noise_hs *hs, const uint8_t e_priv[CHP_KEY_BYTES])
{
        if (!hs || !e_priv)
                return;
        memcpy(hs->e_priv, e_priv, CHP_KEY_BYTES);
        hs->fixed_e = true;
}

bool chp_noise_hs_my_turn(const struct chp_noise_hs *hs)
{
        return hs_live(hs) && hs->step < patterns[hs->pattern].nmsgs &&
               (hs->step % 2 == 0) == hs->initiator;
}

bool chp_noise_hs_done(const struct chp_noise_hs *hs)
{
        return hs_live(hs) && hs->step == patterns[hs->pattern].nmsgs;
}

/* The bytes message step takes besides its payload, and whether its payload is encrypted. */
static size_t msg_overhead(const struct chp_noise_hs *hs, bool *payload_keyed)
{
        const uint8_t *t = patterns[hs->pattern].toks[hs->step];
        bool key = hs->cs.has_key;
        size_t n = 0;
        for (int i = 0; i < TOKS_MAX && t[i] != T_END; i++) {
                if (t[i] == T_E)
                        n += CHP_KEY_BYTES;
                else if (t[i] == T_S)
                        n += (size_t)CHP_KEY_BYTES + (key ? CHP_NOISE_TAGLEN : 0u);
                else
                        key = true; /* every DH token is a MixKey */
        }
        *payload_keyed = key;
        return n;
}

/* The DH tokens mean the same on both sides: "es" is DH(e, rs) for the initiator and DH(s, re)
 * for the responder, and so on. */
static int dh_token(struct chp_noise_hs *hs, enum token t)
{
        bool i = hs->initiator;
        switch (t) {
        case T_EE:
                return hs->has_e && hs->has_re ? mix_dh(hs, hs->e_priv, hs->re) : -EINVAL;
        case T_ES:
                if (i)
                        return hs->has_e && hs->has_rs ? mix_dh(hs, hs->e_priv, hs->rs) : -EINVAL;
                return hs->has_s && hs->has_re ? mix_dh(hs, hs->s_priv, hs->re) : -EINVAL;
        case T_SE:
                if (i)
                        return hs->has_s && hs->has_re ? mix_dh(hs, hs->s_priv, hs->re) : -EINVAL;
                return hs->has_e && hs->has_rs ? mix_dh(hs, hs->e_priv, hs->rs) : -EINVAL;
        case T_SS:
                return hs->has_s && hs->has_rs ? mix_dh(hs, hs->s_priv, hs->rs) : -EINVAL;
        default:
                return -EINVAL;
        }
}

int chp_noise_hs_write(struct chp_noise_hs *hs, const uint8_t *payload, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len)
{
        if (out_len)
                *out_len = 0;
        if (!out_len || (!payload && len) || !chp_noise_hs_my_turn(hs))
                return -EINVAL;
        bool keyed;
        size_t over = msg_overhead(hs, &keyed);
        if (len > CHP_NOISE_MSGMAX ||
            over + len + (keyed ? CHP_NOISE_TAGLEN : 0) > CHP_NOISE_MSGMAX)
                return -EINVAL;
        size_t need = over + len + (keyed ? CHP_NOISE_TAGLEN : 0);
        if (!out || cap < need)
                return -ENOSPC;

        const uint8_t *t = patterns[hs->pattern].toks[hs->step];
        size_t off = 0, n = 0;
        int rc = 0;
        for (int i = 0; i < TOKS_MAX && t[i] != T_END && rc == 0; i++) {
                switch (t[i]) {
                case T_E:
                        if (!hs->fixed_e)
                                randombytes_buf(hs->e_priv, CHP_KEY_BYTES);
                        if (crypto_scalarmult_base(hs->e_pub, hs->e_priv) != 0) {
                                rc = -EINVAL;
                                break;
                        }
                        hs->has_e = true;
                        memcpy(out + off, hs->e_pub, CHP_KEY_BYTES);
                        mix_hash(hs, hs->e_pub, CHP_KEY_BYTES);
                        off += CHP_KEY_BYTES;
                        break;
                case T_S:
                        rc = encrypt_and_hash(hs, hs->s_pub, CHP_KEY_BYTES, out + off, &n);
                        off += n;
                        break;
                default:
                        rc = dh_token(hs, (enum token)t[i]);
                        break;
                }
        }
        if (rc == 0) {
                rc = encrypt_and_hash(hs, payload, len, out + off, &n);
                off += n;
        }
        if (rc != 0) {
                sodium_memzero(out, need);
                chp_noise_hs_wipe(hs);
                return rc;
        }
        hs->step++;
        *out_len = off;
        return 0;
}

int chp_noise_hs_read(struct chp_noise_hs *hs, const uint8_t *msg, size_t len, uint8_t *payload,
                      size_t cap, size_t *payload_len)
{
        if (payload_len)
                *payload_len = 0;
        if (!payload_len || (!msg && len) || !hs_live(hs) || chp_noise_hs_done(hs) ||
            chp_noise_hs_my_turn(hs))
                return -EINVAL;
        bool keyed;
        size_t over = msg_overhead(hs, &keyed), tag = keyed ? CHP_NOISE_TAGLEN : 0;
        int rc = 0;
        if (len > CHP_NOISE_MSGMAX || len < over + tag) {
                rc = -EBADMSG; /* truncated or oversized: the handshake is over */
                goto fail;
        }
        size_t plen = len - over - tag;
        if ((!payload && plen) || plen > cap)
                return -ENOSPC; /* nothing consumed: the caller may retry with more room */

        const uint8_t *t = patterns[hs->pattern].toks[hs->step];
        size_t off = 0;
        for (int i = 0; i < TOKS_MAX && t[i] != T_END && rc == 0; i++) {
                switch (t[i]) {
                case T_E:
                        memcpy(hs->re, msg + off, CHP_KEY_BYTES);
                        hs->has_re = true;
                        mix_hash(hs, hs->re, CHP_KEY_BYTES);
                        off += CHP_KEY_BYTES;
                        break;
                case T_S: {
                        size_t n = CHP_KEY_BYTES + (hs->cs.has_key ? CHP_NOISE_TAGLEN : 0);
                        rc = decrypt_and_hash(hs, msg + off, n, hs->rs);
                        hs->has_rs = rc == 0;
                        off += n;
                        break;
                }
                default:
                        rc = dh_token(hs, (enum token)t[i]);
                        break;
                }
        }
        if (rc == 0)
                rc = decrypt_and_hash(hs, msg + off, len - off, payload);
        if (rc != 0) {
                if (payload && plen)
                        sodium_memzero(payload, plen);
                goto fail;
        }
        hs->step++;
        *payload_len = plen;
        return 0;
fail:
        chp_noise_hs_wipe(hs);
        return rc;
}

int chp_noise_hs_split(struct chp_noise_hs *hs, struct chp_noise_cs *send,
                       struct chp_noise_cs *recv, uint8_t h[CHP_NOISE_HASHMAX], size_t *hashlen)
{
        uint8_t k1[CHP_NOISE_HASHMAX], k2[CHP_NOISE_HASHMAX], rs[CHP_KEY_BYTES];
        chp_noise_cs_wipe(send);
        chp_noise_cs_wipe(recv);
        if (h)
                memset(h, 0, CHP_NOISE_HASHMAX);
        if (hashlen)
                *hashlen = 0;
        if (!send || !recv || send == recv || !chp_noise_hs_done(hs))
                return -EINVAL;

        hkdf(hs->suite.hash, hs->ck, NULL, 0, k1, k2, NULL);
        struct chp_noise_cs *c1 = hs->initiator ? send : recv, *c2 = hs->initiator ? recv : send;
        c1->suite = c2->suite = hs->suite;
        memcpy(c1->k, k1, CHP_NOISE_KEYLEN);
        memcpy(c2->k, k2, CHP_NOISE_KEYLEN);
        c1->has_key = c2->has_key = true;
        if (h)
                memcpy(h, hs->h, hs->hashlen);
        if (hashlen)
                *hashlen = hs->hashlen;
        sodium_memzero(k1, sizeof(k1));
        sodium_memzero(k2, sizeof(k2));

        /* Wipe everything but the peer's public static key, which stays readable. */
        bool has_rs = hs->has_rs;
        memcpy(rs, hs->rs, sizeof(rs));
        enum chp_noise_pattern pattern = hs->pattern;
        struct chp_noise_suite suite = hs->suite;
        bool initiator = hs->initiator;
        chp_noise_hs_wipe(hs);
        hs->pattern = pattern;
        hs->suite = suite;
        hs->initiator = initiator;
        hs->has_rs = has_rs;
        memcpy(hs->rs, rs, sizeof(rs));
        return 0;
}

int chp_noise_hs_remote_static(const struct chp_noise_hs *hs, uint8_t out[CHP_KEY_BYTES])
{
        if (!hs || !out)
                return -EINVAL;
        memset(out, 0, CHP_KEY_BYTES);
        if (!hs->has_rs)
                return -ENOENT;
        memcpy(out, hs->rs, CHP_KEY_BYTES);
        return 0;
}

void chp_noise_hs_wipe(struct chp_noise_hs *hs)
{
        if (hs)
                sodium_memzero(hs, sizeof(*hs));
}

void chp_noise_keypair(uint8_t priv[CHP_KEY_BYTES], uint8_t pub[CHP_KEY_BYTES])
{
        (void)crypto_ready(); /* randombytes works without it; AES-NI detection needs it */
        do
                randombytes_buf(priv, CHP_KEY_BYTES);
        while (crypto_scalarmult_base(pub, priv) != 0);
}

int chp_noise_public(const uint8_t priv[CHP_KEY_BYTES], uint8_t pub[CHP_KEY_BYTES])
{
        if (!priv || !pub)
                return -EINVAL;
        if (crypto_scalarmult_base(pub, priv) != 0) {
                sodium_memzero(pub, CHP_KEY_BYTES);
                return -EINVAL;
        }
        return 0;
}
