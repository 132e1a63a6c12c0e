/* token.h — upload tokens: what a messenger's backend mints and a relay verifies (docs/tokens.md).
 *
 * A token is base64url (no padding) of FIELDS || SIG: FIELDS the canonical little-endian encoding
 * of struct chp_token, SIG an Ed25519 signature of "chapar upload token v1" || 0x00 || FIELDS by
 * one of the tenant's keys. Nothing here allocates; decoders never read past len and refuse
 * every non-canonical form (-EBADMSG; CHP_EVERSION for a version they do not know). Out-parameters
 * are cleared on entry, filled only on success. Seeds are wiped from every local copy. Pure
 * functions (libsodium initialised by the caller); any thread.
 */
#ifndef CHP_TOKEN_H
#define CHP_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"  /* CHP_HASH_BYTES: a file id */
#include "noise.h" /* CHP_KEY_BYTES: a relay's public key */

#define CHP_TOKEN_VERSION     1
#define CHP_TOKEN_CONTEXT     "chapar upload token v1" /* then one 0x00 byte, then FIELDS */
#define CHP_TOKEN_KID_BYTES   8
#define CHP_TOKEN_ID_BYTES    16
#define CHP_TOKEN_SEED_BYTES  32 /* an Ed25519 private key as its seed */
#define CHP_TOKEN_PUB_BYTES   32 /* an Ed25519 public key */
#define CHP_TOKEN_SIG_BYTES   64
#define CHP_TOKEN_NAME_MAX    63    /* a tenant or audience name: 1..63 of [a-z0-9._-] */
#define CHP_TOKEN_SUBJECT_MAX 64    /* a subject: 1..64 of [A-Za-z0-9._~-] */
#define CHP_TOKEN_SKEW        60    /* seconds of clock difference forgiven either side */
#define CHP_TOKEN_LIFE_MAX    86400 /* the longest expires_at - issued_at a relay accepts */

/* FIELDS at their longest: the fixed part, a named audience, tenant, subject and a file id. */
#define CHP_TOKEN_FIXED_BYTES 59
#define CHP_TOKEN_FIELDS_MAX                                                                       \
        (CHP_TOKEN_FIXED_BYTES + 1 + CHP_TOKEN_NAME_MAX + 1 + CHP_TOKEN_NAME_MAX + 1 +             \
         CHP_TOKEN_SUBJECT_MAX + 1 + CHP_HASH_BYTES)
#define CHP_TOKEN_BYTES_MAX (CHP_TOKEN_FIELDS_MAX + CHP_TOKEN_SIG_BYTES)
/* The text form at its longest, with a NUL: base64url of CHP_TOKEN_BYTES_MAX bytes. */
#define CHP_TOKEN_TEXT_MAX ((CHP_TOKEN_BYTES_MAX * 4 + 2) / 3 + 1)
/* "KID:PUBLIC-KEY" (16 and 64 lowercase hex digits) with a NUL. */
#define CHP_TOKEN_KEY_LINE_MAX (2 * CHP_TOKEN_KID_BYTES + 1 + 2 * CHP_TOKEN_PUB_BYTES + 1)

/* Scopes, a bit set: what the token lets its holder make the relay do. */
enum chp_token_scope {
        CHP_TOKEN_SCOPE_UPLOAD = 1 << 0, /* upload files (native OPEN, tus POST) */
        CHP_TOKEN_SCOPE_OFFER = 1 << 1,  /* offer a file to this relay's peers */
        CHP_TOKEN_SCOPE_PULL = 1 << 2,   /* pull-through: make this relay fetch from its peers */
        CHP_TOKEN_SCOPE_ALL = 0x07,
};

/* Whom a token is for: one relay (its static public key) or every relay of a federation that
 * accepts the name. */
enum chp_token_audience {
        CHP_TOKEN_AUD_RELAY = 1,
        CHP_TOKEN_AUD_NAME = 2,
};

struct chp_token {
        uint8_t version; /* CHP_TOKEN_VERSION */
        uint8_t scopes;  /* chp_token_scope bits, at least one, no others */
        uint8_t kid[CHP_TOKEN_KID_BYTES];
        uint8_t id[CHP_TOKEN_ID_BYTES]; /* random per token: what the relay charges files to */
        uint64_t issued_at;             /* Unix seconds */
        uint64_t expires_at;            /* Unix seconds */
        uint64_t max_bytes;             /* byte budget over every file uploaded under this id */
        uint32_t max_files;
        uint32_t max_file_life;                     /* seconds a file uploaded under it may live */
        uint8_t audience;                           /* chp_token_audience */
        uint8_t audience_key[CHP_KEY_BYTES];        /* CHP_TOKEN_AUD_RELAY; else zero */
        char audience_name[CHP_TOKEN_NAME_MAX + 1]; /* CHP_TOKEN_AUD_NAME; else empty */
        char tenant[CHP_TOKEN_NAME_MAX + 1];        /* NUL-terminated */
        char subject[CHP_TOKEN_SUBJECT_MAX + 1];    /* NUL-terminated */
        bool has_file_id;
        uint8_t file_id[CHP_HASH_BYTES]; /* the one file it allows; zero when !has_file_id */
};

/* A token as received: its fields, the encoded fields exactly as signed, and the signature. */
struct chp_token_signed {
        struct chp_token t;
        uint8_t fields[CHP_TOKEN_FIELDS_MAX];
        size_t fields_len;
        uint8_t sig[CHP_TOKEN_SIG_BYTES];
};

/* One token-verification key of a tenant, as `token_key = KID:PUBLIC-KEY` names it. */
struct chp_token_key {
        uint8_t kid[CHP_TOKEN_KID_BYTES];
        uint8_t pub[CHP_TOKEN_PUB_BYTES];
};

/* What a relay accepts, for chp_token_verify. Everything is borrowed for the call. */
struct chp_token_policy {
        const char *tenant;               /* the tenant whose keys follow */
        const struct chp_token_key *keys; /* its keys (any number, for rotation) */
        size_t nkeys;
        const uint8_t *relay_key;          /* this relay's public key (CHP_KEY_BYTES), or NULL */
        const char *const *audience_names; /* federation-wide names this relay answers to */
        size_t naudience_names;
        uint8_t need_scopes; /* every one of these bits must be granted */
        uint64_t now;        /* Unix seconds */
};

/* Whether s[0..len) is a valid tenant or audience name (1..63 of [a-z0-9._-]). */
bool chp_token_name_valid(const char *s, size_t len);
/* Whether s[0..len) is a valid subject (1..64 of [A-Za-z0-9._~-]). */
bool chp_token_subject_valid(const char *s, size_t len);

/* Writes the canonical FIELDS of t into out; the byte count, -EINVAL (t breaks a rule of the
 * format) or -ENOSPC (CHP_TOKEN_FIELDS_MAX always suffices). */
__attribute__((warn_unused_result)) ssize_t chp_token_encode(const struct chp_token *t,
                                                             uint8_t *out, size_t cap);
/* Decodes FIELDS from the start of buf: the bytes they take (the caller decides what may follow),
 * -EBADMSG (truncated, out of range, not canonical) or CHP_EVERSION (a version other than 1). */
__attribute__((warn_unused_result)) ssize_t chp_token_decode(const uint8_t *buf, size_t len,
                                                             struct chp_token *out /* out */);

/* The public key and key id of a seed: kid is the first 8 bytes of SHA-256(pub). */
void chp_token_key_from_seed(const uint8_t seed[CHP_TOKEN_SEED_BYTES],
                             struct chp_token_key *out /* out */);
/* Mints: encodes t, signs it with seed and writes the text form, NUL-terminated, into out.
 * Returns its length, -EINVAL (t invalid) or -ENOSPC (CHP_TOKEN_TEXT_MAX always suffices). The
 * token's kid is taken as given: callers set it from chp_token_key_from_seed or their own. */
__attribute__((warn_unused_result)) ssize_t chp_token_sign(const struct chp_token *t,
                                                           const uint8_t seed[CHP_TOKEN_SEED_BYTES],
                                                           char *out, size_t cap);
/* Parses a token's text form, exactly len bytes: base64url of FIELDS and exactly 64 bytes of
 * signature. 0, -EBADMSG or CHP_EVERSION. Checks no signature: chp_token_verify does. */
__attribute__((warn_unused_result)) int chp_token_parse(const char *s, size_t len,
                                                        struct chp_token_signed *out /* out */);
/* Checks a parsed token against a policy, in this order, returning the first failure:
 *   tenant differs from p->tenant, or kid not among p->keys   CHP_ETOKEN_KEY
 *   signature                                                 CHP_ETOKEN_SIGNATURE
 *   audience: not p->relay_key, not among p->audience_names   CHP_ETOKEN_AUDIENCE
 *   expires_at <= issued_at or more than CHP_TOKEN_LIFE_MAX   CHP_ETOKEN_LIFE
 *   now < issued_at - CHP_TOKEN_SKEW                          CHP_ETOKEN_EARLY
 *   now > expires_at + CHP_TOKEN_SKEW                         CHP_ETOKEN_EXPIRED
 *   a bit of p->need_scopes not in scopes                     CHP_ETOKEN_SCOPE
 * 0 when it passes every check. */
__attribute__((warn_unused_result)) int chp_token_verify(const struct chp_token_signed *tok,
                                                         const struct chp_token_policy *p);

/* "KID:PUBLIC-KEY", 16 and 64 lowercase hex digits, exactly len bytes: 0 or -EBADMSG. */
__attribute__((warn_unused_result)) int chp_token_key_parse(const char *s, size_t len,
                                                            struct chp_token_key *out /* out */);
void chp_token_key_format(const struct chp_token_key *k, char out[CHP_TOKEN_KEY_LINE_MAX]);

/* base64url (RFC 4648 section 5: A-Z a-z 0-9 - _) without padding. encode writes a NUL and
 * returns the length (-ENOSPC when cap is short); decode takes exactly len characters and
 * returns the byte count, -EBADMSG for any character outside the alphabet, '=', a length of 1
 * mod 4 or nonzero unused bits in the last character, -ENOSPC when cap is short. */
__attribute__((warn_unused_result)) ssize_t chp_token_base64_encode(const uint8_t *in, size_t n,
                                                                    char *out, size_t cap);
__attribute__((warn_unused_result)) ssize_t chp_token_base64_decode(const char *s, size_t len,
                                                                    uint8_t *out, size_t cap);

#endif
