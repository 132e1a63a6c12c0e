/* token.c — the upload token's canonical encoding, its signature and its checks (see token.h and
 * docs/tokens.md, the spec this file follows).
 *
 *   FIELDS (little-endian)
 *     0  u8   version = 1
 *     1  u8   scopes: bit 0 upload, 1 offer, 2 pull-through; nonzero, no other bit
 *     2  8    key id
 *    10  16   token id
 *    26  u64  issued_at        34  u64  expires_at       42  u64  max_bytes
 *    50  u32  max_files        54  u32  max_file_life
 *    58  u8   audience kind: 1 then 32 bytes of relay key | 2 then u8 n (1..63) and a name
 *         u8 n (1..63) tenant name       names: [a-z0-9._-]
 *         u8 n (1..64) subject           [A-Za-z0-9._~-]
 *         u8 has_file_id (0 | 1), then 32 bytes of file id when 1
 *   TOKEN = base64url_nopad(FIELDS || Ed25519(seed, CONTEXT || 0x00 || FIELDS))
 *
 * Every byte string has one reading and every token one spelling: decode refuses what encode
 * would not write. Nothing here allocates (libsodium's SHA-256 and Ed25519 do not).
 */
#include "token.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "err.h"

#define CONTEXT_LEN (sizeof(CHP_TOKEN_CONTEXT) - 1 + 1) /* with its 0x00 */

_Static_assert(CHP_TOKEN_FIXED_BYTES ==
                   2 + CHP_TOKEN_KID_BYTES + CHP_TOKEN_ID_BYTES + 3 * 8 + 2 * 4 + 1,
               "the fixed part is the fields before the audience's value");
_Static_assert(CHP_TOKEN_FIELDS_MAX == 285 && CHP_TOKEN_TEXT_MAX == 467, "sizes as the spec says");
_Static_assert(CHP_TOKEN_SEED_BYTES == crypto_sign_SEEDBYTES &&
                   CHP_TOKEN_PUB_BYTES == crypto_sign_PUBLICKEYBYTES &&
                   CHP_TOKEN_SIG_BYTES == crypto_sign_BYTES,
               "Ed25519 sizes");
_Static_assert(1 + CHP_TOKEN_NAME_MAX > CHP_KEY_BYTES, "a named audience is the longer form");

static bool name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool subject_char(char c)
{
        return name_char(c) || (c >= 'A' && c <= 'Z') || c == '~';
}

bool chp_token_name_valid(const char *s, size_t len)
{
        if (len == 0 || len > CHP_TOKEN_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!name_char(s[i]))
                        return false;
        return true;
}

bool chp_token_subject_valid(const char *s, size_t len)
{
        if (len == 0 || len > CHP_TOKEN_SUBJECT_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!subject_char(s[i]))
                        return false;
        return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
        uint8_t acc = 0;
        for (size_t i = 0; i < n; i++)
                acc |= p[i];
        return acc == 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n)
{
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
                v |= (uint64_t)p[i] << (8 * i);
        return v;
}

/* Whether t is something encode may write: every rule decode checks, on the struct. */
static bool token_valid(const struct chp_token *t)
{
        size_t tl = strnlen(t->tenant, sizeof(t->tenant));
        size_t sl = strnlen(t->subject, sizeof(t->subject));
        size_t al = strnlen(t->audience_name, sizeof(t->audience_name));
        if (t->version != CHP_TOKEN_VERSION || t->scopes == 0 ||
            (t->scopes & ~CHP_TOKEN_SCOPE_ALL) != 0 || !chp_token_name_valid(t->tenant, tl) ||
            !chp_token_subject_valid(t->subject, sl))
                return false;
        if (t->audience == CHP_TOKEN_AUD_RELAY) {
                if (al != 0)
                        return false;
        } else if (t->audience == CHP_TOKEN_AUD_NAME) {
                if (!chp_token_name_valid(t->audience_name, al) ||
                    !all_zero(t->audience_key, sizeof(t->audience_key)))
                        return false;
        } else {
                return false;
        }
        return t->has_file_id || all_zero(t->file_id, sizeof(t->file_id));
}

ssize_t chp_token_encode(const struct chp_token *t, uint8_t *out, size_t cap)
{
        if (!token_valid(t))
                return -EINVAL;
        size_t tl = strlen(t->tenant), sl = strlen(t->subject), al = strlen(t->audience_name);
        size_t need = CHP_TOKEN_FIXED_BYTES +
                      (t->audience == CHP_TOKEN_AUD_RELAY ? CHP_KEY_BYTES : 1 + al) + 1 + tl + 1 +
                      sl + 1 + (t->has_file_id ? CHP_HASH_BYTES : 0);
        if (need > cap)
                return -ENOSPC;
        uint8_t *p = out;
        *p++ = t->version;
        *p++ = t->scopes;
        memcpy(p, t->kid, CHP_TOKEN_KID_BYTES);
        p += CHP_TOKEN_KID_BYTES;
        memcpy(p, t->id, CHP_TOKEN_ID_BYTES);
        p += CHP_TOKEN_ID_BYTES;
        put_le(p, t->issued_at, 8);
        put_le(p + 8, t->expires_at, 8);
        put_le(p + 16, t->max_bytes, 8);
        put_le(p + 24, t->max_files, 4);
        put_le(p + 28, t->max_file_life, 4);
        p += 32;
        *p++ = t->audience;
        if (t->audience == CHP_TOKEN_AUD_RELAY) {
                memcpy(p, t->audience_key, CHP_KEY_BYTES);
                p += CHP_KEY_BYTES;
        } else {
                *p++ = (uint8_t)al;
                memcpy(p, t->audience_name, al);
                p += al;
        }
        *p++ = (uint8_t)tl;
        memcpy(p, t->tenant, tl);
        p += tl;
        *p++ = (uint8_t)sl;
        memcpy(p, t->subject, sl);
        p += sl;
        *p++ = t->has_file_id ? 1 : 0;
        if (t->has_file_id) {
                memcpy(p, t->file_id, CHP_HASH_BYTES);
                p += CHP_HASH_BYTES;
        }
        return (ssize_t)(p - out);
}

/* A length-prefixed string at buf[*at]: checked by valid, copied NUL-terminated into dst. */
static bool take_string(const uint8_t *buf, size_t len, size_t *at,
                        bool (*valid)(const char *, size_t), char *dst)
{
        if (*at >= len)
                return false;
        size_t n = buf[*at];
        if (n > len - *at - 1 || !valid((const char *)buf + *at + 1, n))
                return false;
        memcpy(dst, buf + *at + 1, n);
        dst[n] = '\0';
        *at += 1 + n;
        return true;
}

ssize_t chp_token_decode(const uint8_t *buf, size_t len, struct chp_token *out)
{
        memset(out, 0, sizeof(*out));
        struct chp_token t;
        memset(&t, 0, sizeof(t));
        if (len < 1)
                return -EBADMSG;
        if (buf[0] != CHP_TOKEN_VERSION)
                return CHP_EVERSION;
        if (len < CHP_TOKEN_FIXED_BYTES)
                return -EBADMSG;
        const uint8_t *p = buf;
        t.version = *p++;
        t.scopes = *p++;
        if (t.scopes == 0 || (t.scopes & ~CHP_TOKEN_SCOPE_ALL) != 0)
                return -EBADMSG;
        memcpy(t.kid, p, CHP_TOKEN_KID_BYTES);
        p += CHP_TOKEN_KID_BYTES;
        memcpy(t.id, p, CHP_TOKEN_ID_BYTES);
        p += CHP_TOKEN_ID_BYTES;
        t.issued_at = get_le(p, 8);
        t.expires_at = get_le(p + 8, 8);
        t.max_bytes = get_le(p + 16, 8);
        t.max_files = (uint32_t)get_le(p + 24, 4);
        t.max_file_life = (uint32_t)get_le(p + 28, 4);
        p += 32;
        t.audience = *p++;
        size_t at = (size_t)(p - buf);
        if (t.audience == CHP_TOKEN_AUD_RELAY) {
                if (len - at < CHP_KEY_BYTES)
                        return -EBADMSG;
                memcpy(t.audience_key, buf + at, CHP_KEY_BYTES);
                at += CHP_KEY_BYTES;
        } else if (t.audience == CHP_TOKEN_AUD_NAME) {
                if (!take_string(buf, len, &at, chp_token_name_valid, t.audience_name))
                        return -EBADMSG;
        } else {
                return -EBADMSG;
        }
        if (!take_string(buf, len, &at, chp_token_name_valid, t.tenant) ||
            !take_string(buf, len, &at, chp_token_subject_valid, t.subject) || at >= len)
                return -EBADMSG;
        uint8_t flag = buf[at++];
        if (flag > 1)
                return -EBADMSG;
        if (flag == 1) {
                if (len - at < CHP_HASH_BYTES)
                        return -EBADMSG;
                t.has_file_id = true;
                memcpy(t.file_id, buf + at, CHP_HASH_BYTES);
                at += CHP_HASH_BYTES;
        }
        *out = t;
        return (ssize_t)at;
}

void chp_token_key_from_seed(const uint8_t seed[CHP_TOKEN_SEED_BYTES], struct chp_token_key *out)
{
        uint8_t sk[crypto_sign_SECRETKEYBYTES], digest[crypto_hash_sha256_BYTES];
        memset(out, 0, sizeof(*out));
        crypto_sign_seed_keypair(out->pub, sk, seed);
        crypto_hash_sha256(digest, out->pub, sizeof(out->pub));
        memcpy(out->kid, digest, CHP_TOKEN_KID_BYTES);
        sodium_memzero(sk, sizeof(sk));
}

/* CONTEXT || 0x00 || FIELDS, the bytes a signature covers. */
static size_t signed_message(const uint8_t *fields, size_t n,
                             uint8_t msg[CONTEXT_LEN + CHP_TOKEN_FIELDS_MAX])
{
        memcpy(msg, CHP_TOKEN_CONTEXT, CONTEXT_LEN); /* the literal's NUL is the 0x00 */
        memcpy(msg + CONTEXT_LEN, fields, n);
        return CONTEXT_LEN + n;
}

ssize_t chp_token_sign(const struct chp_token *t, const uint8_t seed[CHP_TOKEN_SEED_BYTES],
                       char *out, size_t cap)
{
        uint8_t blob[CHP_TOKEN_BYTES_MAX], msg[CONTEXT_LEN + CHP_TOKEN_FIELDS_MAX];
        uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
        if (cap > 0)
                out[0] = '\0';
        ssize_t n = chp_token_encode(t, blob, CHP_TOKEN_FIELDS_MAX);
        if (n < 0)
                return n;
        size_t mlen = signed_message(blob, (size_t)n, msg);
        crypto_sign_seed_keypair(pk, sk, seed);
        crypto_sign_detached(blob + n, NULL, msg, mlen, sk);
        sodium_memzero(sk, sizeof(sk));
        return chp_token_base64_encode(blob, (size_t)n + CHP_TOKEN_SIG_BYTES, out, cap);
}

int chp_token_parse(const char *s, size_t len, struct chp_token_signed *out)
{
        memset(out, 0, sizeof(*out));
        uint8_t blob[CHP_TOKEN_BYTES_MAX];
        if (len > CHP_TOKEN_TEXT_MAX - 1)
                return -EBADMSG;
        ssize_t n = chp_token_base64_decode(s, len, blob, sizeof(blob));
        if (n < 0)
                return -EBADMSG; /* -ENOSPC cannot happen under the length check above */
        struct chp_token t;
        ssize_t f = chp_token_decode(blob, (size_t)n, &t);
        if (f < 0)
                return (int)f;
        if ((size_t)n - (size_t)f != CHP_TOKEN_SIG_BYTES)
                return -EBADMSG;
        out->t = t;
        memcpy(out->fields, blob, (size_t)f);
        out->fields_len = (size_t)f;
        memcpy(out->sig, blob + f, CHP_TOKEN_SIG_BYTES);
        return 0;
}

/* Whether the token's audience is this relay or a name it answers to. */
static bool audience_ok(const struct chp_token *t, const struct chp_token_policy *p)
{
        if (t->audience == CHP_TOKEN_AUD_RELAY)
                return p->relay_key && memcmp(p->relay_key, t->audience_key, CHP_KEY_BYTES) == 0;
        for (size_t i = 0; i < p->naudience_names; i++)
                if (p->audience_names[i] && strcmp(p->audience_names[i], t->audience_name) == 0)
                        return true;
        return false;
}

int chp_token_verify(const struct chp_token_signed *tok, const struct chp_token_policy *p)
{
        const struct chp_token *t = &tok->t;
        const struct chp_token_key *key = NULL;
        if (p->tenant && strcmp(p->tenant, t->tenant) == 0)
                for (size_t i = 0; i < p->nkeys && !key; i++)
                        if (memcmp(p->keys[i].kid, t->kid, CHP_TOKEN_KID_BYTES) == 0)
                                key = &p->keys[i];
        if (!key)
                return CHP_ETOKEN_KEY;
        uint8_t msg[CONTEXT_LEN + CHP_TOKEN_FIELDS_MAX];
        if (tok->fields_len > CHP_TOKEN_FIELDS_MAX)
                return CHP_ETOKEN_SIGNATURE;
        size_t mlen = signed_message(tok->fields, tok->fields_len, msg);
        if (crypto_sign_verify_detached(tok->sig, msg, mlen, key->pub) != 0)
                return CHP_ETOKEN_SIGNATURE;
        if (!audience_ok(t, p))
                return CHP_ETOKEN_AUDIENCE;
        if (t->expires_at <= t->issued_at || t->expires_at - t->issued_at > CHP_TOKEN_LIFE_MAX)
                return CHP_ETOKEN_LIFE;
        if (t->issued_at > CHP_TOKEN_SKEW && p->now < t->issued_at - CHP_TOKEN_SKEW)
                return CHP_ETOKEN_EARLY;
        if (p->now > t->expires_at && p->now - t->expires_at > CHP_TOKEN_SKEW)
                return CHP_ETOKEN_EXPIRED;
        if ((t->scopes & p->need_scopes) != p->need_scopes)
                return CHP_ETOKEN_SCOPE;
        return 0;
}

static bool lower_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

int chp_token_key_parse(const char *s, size_t len, struct chp_token_key *out)
{
        memset(out, 0, sizeof(*out));
        const size_t kh = 2 * CHP_TOKEN_KID_BYTES, ph = 2 * CHP_TOKEN_PUB_BYTES;
        struct chp_token_key k;
        if (len != kh + 1 + ph || s[kh] != ':' || !lower_hex(s, kh) || !lower_hex(s + kh + 1, ph) ||
            chp_hex_decode(s, kh, k.kid, sizeof(k.kid)) != 0 ||
            chp_hex_decode(s + kh + 1, ph, k.pub, sizeof(k.pub)) != 0)
                return -EBADMSG;
        *out = k;
        return 0;
}

void chp_token_key_format(const struct chp_token_key *k, char out[CHP_TOKEN_KEY_LINE_MAX])
{
        chp_hex_encode(k->kid, sizeof(k->kid), out);
        out[2 * CHP_TOKEN_KID_BYTES] = ':';
        chp_hex_encode(k->pub, sizeof(k->pub), out + 2 * CHP_TOKEN_KID_BYTES + 1);
}

/* libsodium's base64url without padding refuses '=', a length of 1 mod 4 and nonzero unused
 * bits. It does not tell a short buffer from bad input, so the lengths are checked here first;
 * and 1.0.18 reads some bytes over 0x7f as letters (fuzz_token's crash-base64-non-ascii-byte:
 * 0xb4 as '_'), so the alphabet is checked here too. */
#define B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING

static bool base64url_char(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_';
}

ssize_t chp_token_base64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
        if (cap > 0)
                out[0] = '\0';
        if (sodium_base64_ENCODED_LEN(n, B64) > cap)
                return -ENOSPC;
        sodium_bin2base64(out, cap, in, n, B64);
        return (ssize_t)strlen(out);
}

ssize_t chp_token_base64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
        if (len % 4 == 1)
                return -EBADMSG;
        for (size_t i = 0; i < len; i++)
                if (!base64url_char(s[i]))
                        return -EBADMSG;
        if (len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > cap)
                return -ENOSPC;
        size_t n = 0;
        if (sodium_base642bin(out, cap, s, len, NULL, &n, NULL, B64) != 0)
                return -EBADMSG;
        return (ssize_t)n;
}
