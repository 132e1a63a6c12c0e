/* Upload tokens: the codec's round trips and its one spelling, every rejection of decode, parse
 * and base64url, every verdict of verify at its boundary, the key line, and docs/tokens.md's
 * test vectors (the same bytes tests/interop/mint_token.mjs computes with node:crypto). Inputs
 * are decoded from exact-size heap copies so ASan catches any read past len. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include <sodium.h>

#include "err.h"
#include "token.h"

/* docs/tokens.md's vectors: RFC 8032's first test key as the seed */
#define SEED    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
#define PUB     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
#define KID     "21fe31dfa154a261"
#define RELAY   "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define FILE_ID "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define T0      1767225600 /* 2026-01-01T00:00:00Z */

#define V1_FIELDS                                                                                  \
        "010121fe31dfa154a26100112233445566778899aabbccddeeff00b955690000000010c75569000000000000" \
        "00400000000010000000803a0900018520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98e"   \
        "aa9b4e6a116578616d706c652d6d657373656e67657208755f35663361396300"
#define V1_SIG                                                                                     \
        "6d90a296762656b95146021a15e4af628f5c67771096addfd7d9e74c2014e93cb8cd42d847e1aaa548d8444e" \
        "2431490d6e238c2b54ce434956ffc14028a44308"
#define V1_TOKEN                                                                                   \
        "AQEh_jHfoVSiYQARIjNEVWZ3iJmqu8zd7v8AuVVpAAAAABDHVWkAAAAAAAAAQAAAAAAQAAAAgDoJAAGFIPAJiTCn" \
        "VHSLfdy0PvdaDb86DSY4GvTrpKmOqptOahFleGFtcGxlLW1lc3Nlbmdlcgh1XzVmM2E5YwBtkKKWdiZWuVFGAhoV" \
        "5K9ij1xndxCWrd_X2edMIBTpPLjNQthH4aqlSNhETiQxSQ1uI4wrVM5DSVb_wUAopEMI"
#define V2_FIELDS                                                                                  \
        "010721fe31dfa154a261f0e1d2c3b4a5968778695a4b3c2d1e0f00b9556900000000800a5769000000004"    \
        "04b4c00000000000100000080510100021272656c6179732e6578616d706c652e6f72670c636861742e6578"  \
        "616d706c6507616c6963652d3701e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b785"  \
        "2b855"
#define V2_SIG                                                                                     \
        "6ac5eb8c80d0bc7dc215d262eb43fa261c5c258bcb20d67b9ab5263e2032dfb6ac6494a48997f3bec6ab1cd1" \
        "0561b7b950734956b1d8ad8a36c5062d53a8c30c"
#define V2_TOKEN                                                                                   \
        "AQch_jHfoVSiYfDh0sO0pZaHeGlaSzwtHg8AuVVpAAAAAIAKV2kAAAAAQEtMAAAAAAABAAAAgFEBAAIScmVsYXlz" \
        "LmV4YW1wbGUub3JnDGNoYXQuZXhhbXBsZQdhbGljZS03AeOwxEKY_BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV" \
        "asXrjIDQvH3CFdJi60P6JhxcJYvLINZ7mrUmPiAy37asZJSkiZfzvsarHNEFYbe5UHNJVrHYrYo2xQYtU6jDDA"

static void unhex(const char *h, uint8_t *out, size_t n)
{
        if (chp_hex_decode(h, strlen(h), out, n) != 0)
                abort(); /* a constant of this file is wrong */
}

static uint8_t seed[CHP_TOKEN_SEED_BYTES];

/* docs/tokens.md's vector 1: a relay audience, upload only, no file id. */
static struct chp_token vector1(void)
{
        struct chp_token t;
        memset(&t, 0, sizeof(t));
        t.version = CHP_TOKEN_VERSION;
        t.scopes = CHP_TOKEN_SCOPE_UPLOAD;
        unhex(KID, t.kid, sizeof(t.kid));
        unhex("00112233445566778899aabbccddeeff", t.id, sizeof(t.id));
        t.issued_at = T0;
        t.expires_at = T0 + 3600;
        t.max_bytes = 1073741824;
        t.max_files = 16;
        t.max_file_life = 604800;
        t.audience = CHP_TOKEN_AUD_RELAY;
        unhex(RELAY, t.audience_key, sizeof(t.audience_key));
        snprintf(t.tenant, sizeof(t.tenant), "example-messenger");
        snprintf(t.subject, sizeof(t.subject), "u_5f3a9c");
        return t;
}

/* Vector 2: a named audience, every scope, one file id, the longest life. */
static struct chp_token vector2(void)
{
        struct chp_token t = vector1();
        t.scopes = CHP_TOKEN_SCOPE_ALL;
        unhex("f0e1d2c3b4a5968778695a4b3c2d1e0f", t.id, sizeof(t.id));
        t.expires_at = T0 + 86400;
        t.max_bytes = 5000000;
        t.max_files = 1;
        t.max_file_life = 86400;
        t.audience = CHP_TOKEN_AUD_NAME;
        memset(t.audience_key, 0, sizeof(t.audience_key));
        snprintf(t.audience_name, sizeof(t.audience_name), "relays.example.org");
        snprintf(t.tenant, sizeof(t.tenant), "chat.example");
        snprintf(t.subject, sizeof(t.subject), "alice-7");
        t.has_file_id = true;
        unhex(FILE_ID, t.file_id, sizeof(t.file_id));
        return t;
}

/* The longest token there is: every string at its maximum. */
static struct chp_token longest(void)
{
        struct chp_token t = vector2();
        memset(t.audience_name, 'a', CHP_TOKEN_NAME_MAX);
        memset(t.tenant, 'b', CHP_TOKEN_NAME_MAX);
        memset(t.subject, 'C', CHP_TOKEN_SUBJECT_MAX);
        t.max_bytes = UINT64_MAX;
        t.max_files = UINT32_MAX;
        t.max_file_life = UINT32_MAX;
        return t;
}

static bool token_eq(const struct chp_token *a, const struct chp_token *b)
{
        return a->version == b->version && a->scopes == b->scopes &&
               memcmp(a->kid, b->kid, sizeof(a->kid)) == 0 &&
               memcmp(a->id, b->id, sizeof(a->id)) == 0 && a->issued_at == b->issued_at &&
               a->expires_at == b->expires_at && a->max_bytes == b->max_bytes &&
               a->max_files == b->max_files && a->max_file_life == b->max_file_life &&
               a->audience == b->audience &&
               memcmp(a->audience_key, b->audience_key, sizeof(a->audience_key)) == 0 &&
               strcmp(a->audience_name, b->audience_name) == 0 &&
               strcmp(a->tenant, b->tenant) == 0 && strcmp(a->subject, b->subject) == 0 &&
               a->has_file_id == b->has_file_id &&
               memcmp(a->file_id, b->file_id, sizeof(a->file_id)) == 0;
}

static ssize_t decode_n(const uint8_t *p, size_t n, struct chp_token *t)
{
        uint8_t *copy = tu_exact_copy(p, n);
        ssize_t rc = chp_token_decode(copy, n, t);
        free(copy);
        return rc;
}

static int parse_n(const char *s, size_t n, struct chp_token_signed *out)
{
        char *copy = (char *)tu_exact_copy((const uint8_t *)s, n);
        int rc = chp_token_parse(copy, n, out);
        free(copy);
        return rc;
}

static int parse_s(const char *s, struct chp_token_signed *out)
{
        return parse_n(s, strlen(s), out);
}

/* A policy that accepts vector 1 and 2 at T0: the key, the relay key, the name. */
static struct chp_token_key the_key;
static uint8_t relay_key[CHP_KEY_BYTES];
static const char *const names[] = {"other.example", "relays.example.org"};

static struct chp_token_policy policy(const char *tenant)
{
        return (struct chp_token_policy){.tenant = tenant,
                                         .keys = &the_key,
                                         .nkeys = 1,
                                         .relay_key = relay_key,
                                         .audience_names = names,
                                         .naudience_names = 2,
                                         .need_scopes = CHP_TOKEN_SCOPE_UPLOAD,
                                         .now = T0};
}

__attribute__((constructor)) static void setup(void)
{
        if (sodium_init() < 0)
                abort();
        unhex(SEED, seed, sizeof(seed));
        unhex(RELAY, relay_key, sizeof(relay_key));
        chp_token_key_from_seed(seed, &the_key);
}

/* Mints t with the vectors' seed and parses it back. */
static int mint(const struct chp_token *t, struct chp_token_signed *out, char *text)
{
        ssize_t n = chp_token_sign(t, seed, text, CHP_TOKEN_TEXT_MAX);
        if (n < 0)
                return (int)n;
        return parse_n(text, (size_t)n, out);
}

TEST(key_from_seed)
{
        /* RFC 8032 section 7.1, test 1: the public key of this seed */
        CHECK(tu_same_hex(the_key.pub, sizeof(the_key.pub), PUB));
        uint8_t digest[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(digest, the_key.pub, sizeof(the_key.pub));
        CHECK(memcmp(the_key.kid, digest, CHP_TOKEN_KID_BYTES) == 0);
        CHECK(tu_same_hex(the_key.kid, sizeof(the_key.kid), KID));
}

TEST(vectors)
{
        struct chp_token v[2] = {vector1(), vector2()};
        const char *fields[2] = {V1_FIELDS, V2_FIELDS}, *sigs[2] = {V1_SIG, V2_SIG};
        const char *tokens[2] = {V1_TOKEN, V2_TOKEN};
        for (int i = 0; i < 2; i++) {
                uint8_t buf[CHP_TOKEN_FIELDS_MAX];
                ssize_t n = chp_token_encode(&v[i], buf, sizeof(buf));
                REQUIRE(n > 0);
                CHECK(tu_same_hex(buf, (size_t)n, fields[i]));
                char text[CHP_TOKEN_TEXT_MAX];
                n = chp_token_sign(&v[i], seed, text, sizeof(text));
                CHECK_EQ(n, (ssize_t)strlen(tokens[i]));
                CHECK(n > 0 && strcmp(text, tokens[i]) == 0);
                struct chp_token_signed s;
                REQUIRE_OK(parse_s(tokens[i], &s));
                CHECK(token_eq(&s.t, &v[i]));
                CHECK(tu_same_hex(s.fields, s.fields_len, fields[i]));
                CHECK(tu_same_hex(s.sig, sizeof(s.sig), sigs[i]));
                struct chp_token_policy p = policy(v[i].tenant);
                CHECK_OK(chp_token_verify(&s, &p));
        }
}

TEST(round_trip)
{
        struct chp_token all[3] = {vector1(), vector2(), longest()};
        for (int i = 0; i < 3; i++) {
                uint8_t buf[CHP_TOKEN_FIELDS_MAX];
                ssize_t n = chp_token_encode(&all[i], buf, sizeof(buf));
                REQUIRE(n > 0);
                struct chp_token back;
                CHECK_EQ(decode_n(buf, (size_t)n, &back), n);
                CHECK(token_eq(&back, &all[i]));
                /* short of room by one byte, and exactly enough */
                uint8_t small[CHP_TOKEN_FIELDS_MAX];
                CHECK_EQ(chp_token_encode(&all[i], small, (size_t)n - 1), -ENOSPC);
                CHECK_EQ(chp_token_encode(&all[i], small, (size_t)n), n);
        }
        uint8_t buf[CHP_TOKEN_FIELDS_MAX];
        struct chp_token t = longest();
        CHECK_EQ(chp_token_encode(&t, buf, sizeof(buf)), CHP_TOKEN_FIELDS_MAX);
        char text[CHP_TOKEN_TEXT_MAX];
        CHECK_EQ(chp_token_sign(&t, seed, text, sizeof(text)), CHP_TOKEN_TEXT_MAX - 1);
        CHECK_EQ(chp_token_sign(&t, seed, text, sizeof(text) - 1), -ENOSPC);
        /* decode leaves what follows FIELDS to the caller; parse refuses it */
        ssize_t n = chp_token_encode(&t, buf, sizeof(buf));
        uint8_t more[CHP_TOKEN_FIELDS_MAX + 1];
        memcpy(more, buf, (size_t)n);
        more[n] = 0;
        struct chp_token back;
        CHECK_EQ(decode_n(more, (size_t)n + 1, &back), n);
}

TEST(encode_refuses_invalid)
{
        uint8_t buf[CHP_TOKEN_FIELDS_MAX];
        struct chp_token t;
#define BAD(change)                                                                                \
        do {                                                                                       \
                t = vector2();                                                                     \
                change;                                                                            \
                CHECK_EQ(chp_token_encode(&t, buf, sizeof(buf)), -EINVAL);                         \
        } while (0)
        BAD(t.version = 0);
        BAD(t.version = 2);
        BAD(t.scopes = 0);
        BAD(t.scopes = 8);
        BAD(t.scopes = 0x81);
        BAD(t.audience = 0);
        BAD(t.audience = 3);
        BAD(t.audience_name[0] = '\0');
        BAD(t.audience_name[0] = 'R');
        BAD(t.audience_key[3] = 1);            /* a named audience has no key */
        BAD(t.audience = CHP_TOKEN_AUD_RELAY); /* a relay audience has no name */
        BAD(memset(t.audience_name, 'a', sizeof(t.audience_name))); /* unterminated */
        BAD(t.tenant[0] = '\0');
        BAD(t.tenant[2] = ' ');
        BAD(t.tenant[2] = 'A');
        BAD(memset(t.tenant, 'a', sizeof(t.tenant)));
        BAD(t.subject[0] = '\0');
        BAD(t.subject[1] = '/');
        BAD(t.subject[1] = '+');
        BAD(memset(t.subject, 'a', sizeof(t.subject)));
        BAD((t.has_file_id = false)); /* a file id without its flag */
#undef BAD
        char text[CHP_TOKEN_TEXT_MAX];
        t = vector1();
        t.scopes = 0;
        CHECK_EQ(chp_token_sign(&t, seed, text, sizeof(text)), -EINVAL);
        CHECK_EQ(text[0], '\0');
}

TEST(names)
{
        CHECK(chp_token_name_valid("a", 1));
        CHECK(chp_token_name_valid("a.b_c-9", 7));
        CHECK(!chp_token_name_valid("", 0));
        CHECK(!chp_token_name_valid("Abc", 3));
        CHECK(!chp_token_name_valid("a b", 3));
        CHECK(!chp_token_name_valid("a\0b", 3));
        char s[CHP_TOKEN_SUBJECT_MAX + 1];
        memset(s, 'x', sizeof(s));
        CHECK(chp_token_name_valid(s, CHP_TOKEN_NAME_MAX));
        CHECK(!chp_token_name_valid(s, CHP_TOKEN_NAME_MAX + 1));
        CHECK(chp_token_subject_valid(s, CHP_TOKEN_SUBJECT_MAX));
        CHECK(!chp_token_subject_valid(s, CHP_TOKEN_SUBJECT_MAX + 1));
        CHECK(chp_token_subject_valid("Ab~9._-", 7));
        CHECK(!chp_token_subject_valid("a=", 2));
        CHECK(!chp_token_subject_valid("", 0));
}

/* Fields with one byte changed: decode must refuse (with want) or read them canonically. */
static void expect_decode(const char *hex_fields, size_t at, uint8_t value, ssize_t want)
{
        uint8_t buf[CHP_TOKEN_FIELDS_MAX + 8];
        size_t n = strlen(hex_fields) / 2;
        unhex(hex_fields, buf, n);
        buf[at] = value;
        struct chp_token t;
        ssize_t rc = decode_n(buf, n, &t);
        if (rc != want)
                fprintf(stderr, "  byte %zu = 0x%02x: decode returned %zd, want %zd\n", at, value,
                        rc, want);
        CHECK_EQ(rc, want);
}

TEST(decode_refuses)
{
        struct chp_token t;
        /* every truncation, including nothing at all */
        uint8_t buf[CHP_TOKEN_FIELDS_MAX];
        size_t n2 = strlen(V2_FIELDS) / 2, n1 = strlen(V1_FIELDS) / 2;
        unhex(V2_FIELDS, buf, n2);
        for (size_t n = 0; n < n2; n++)
                CHECK_EQ(decode_n(buf, n, &t), -EBADMSG);
        unhex(V1_FIELDS, buf, n1);
        for (size_t n = 0; n < n1; n++)
                CHECK_EQ(decode_n(buf, n, &t), -EBADMSG);
        /* unknown versions: a version other than 1 is not read further, however short */
        expect_decode(V1_FIELDS, 0, 0, CHP_EVERSION);
        expect_decode(V1_FIELDS, 0, 2, CHP_EVERSION);
        expect_decode(V1_FIELDS, 0, 0xff, CHP_EVERSION);
        uint8_t two = 2;
        CHECK_EQ(decode_n(&two, 1, &t), CHP_EVERSION);
        /* scopes: none, or an unknown bit */
        expect_decode(V1_FIELDS, 1, 0, -EBADMSG);
        expect_decode(V1_FIELDS, 1, 0x08, -EBADMSG);
        expect_decode(V1_FIELDS, 1, 0x80, -EBADMSG);
        expect_decode(V1_FIELDS, 1, 0x07, (ssize_t)n1); /* every known bit is fine */
        /* audience kind */
        expect_decode(V1_FIELDS, 58, 0, -EBADMSG);
        expect_decode(V1_FIELDS, 58, 3, -EBADMSG);
        expect_decode(V1_FIELDS, 58, 2, -EBADMSG); /* a key read as a name: its length 0x85 */
        /* V2: audience name length 0x12 at 59, tenant length at 78, subject length at 91,
         * the file id flag at 99 */
        expect_decode(V2_FIELDS, 59, 0, -EBADMSG);
        expect_decode(V2_FIELDS, 59, 64, -EBADMSG);
        expect_decode(V2_FIELDS, 60, 'R', -EBADMSG);
        expect_decode(V2_FIELDS, 60, 0, -EBADMSG);
        expect_decode(V2_FIELDS, 78, 0, -EBADMSG);
        expect_decode(V2_FIELDS, 79, '/', -EBADMSG);
        expect_decode(V2_FIELDS, 91, 0, -EBADMSG);
        expect_decode(V2_FIELDS, 91, 65, -EBADMSG);
        expect_decode(V2_FIELDS, 92, ' ', -EBADMSG);
        expect_decode(V2_FIELDS, 92, 0x80, -EBADMSG);
        expect_decode(V2_FIELDS, 99, 2, -EBADMSG);
        expect_decode(V2_FIELDS, 99, 0xff, -EBADMSG);
        expect_decode(V2_FIELDS, 99, 0, 100); /* no file id: what follows is the caller's */
        expect_decode(V1_FIELDS, n1 - 1, 1, -EBADMSG); /* a flag with no file id after it */
        /* a length running past the end */
        expect_decode(V1_FIELDS, 92, 9, -EBADMSG);
}

/* Every single-bit change of an encoding either is refused or reads as a token that encodes to
 * exactly the changed bytes: one spelling per token. */
TEST(bit_flips_stay_canonical)
{
        const char *all[2] = {V1_FIELDS, V2_FIELDS};
        for (int v = 0; v < 2; v++) {
                uint8_t buf[CHP_TOKEN_FIELDS_MAX], again[CHP_TOKEN_FIELDS_MAX];
                size_t n = strlen(all[v]) / 2;
                for (size_t bit = 0; bit < 8 * n; bit++) {
                        unhex(all[v], buf, n);
                        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                        struct chp_token t;
                        ssize_t rc = decode_n(buf, n, &t);
                        if (rc < 0) {
                                CHECK(rc == -EBADMSG || rc == CHP_EVERSION);
                                continue;
                        }
                        ssize_t m = chp_token_encode(&t, again, sizeof(again));
                        CHECK(m == rc && memcmp(again, buf, (size_t)m) == 0);
                }
        }
}

TEST(parse_refuses)
{
        struct chp_token_signed s;
        char text[CHP_TOKEN_TEXT_MAX + 8];
        size_t n = strlen(V1_TOKEN);
        /* every truncation */
        for (size_t k = 0; k < n; k++)
                CHECK(parse_n(V1_TOKEN, k, &s) == -EBADMSG);
        /* a byte more or less of signature: base64url of FIELDS || SIG with one byte added */
        uint8_t blob[CHP_TOKEN_BYTES_MAX + 3];
        ssize_t bn = chp_token_base64_decode(V1_TOKEN, n, blob, sizeof(blob));
        REQUIRE(bn > 0);
        for (int extra = -2; extra <= 2; extra++) {
                if (extra == 0)
                        continue;
                blob[bn] = 0x41, blob[bn + 1] = 0x42;
                ssize_t tn =
                    chp_token_base64_encode(blob, (size_t)(bn + extra), text, sizeof(text));
                REQUIRE(tn > 0);
                CHECK_EQ(parse_n(text, (size_t)tn, &s), -EBADMSG);
        }
        /* padding, whitespace, the standard alphabet, a NUL */
        snprintf(text, sizeof(text), "%s=", V1_TOKEN);
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        snprintf(text, sizeof(text), "%s==", V1_TOKEN);
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        snprintf(text, sizeof(text), " %s", V1_TOKEN);
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        snprintf(text, sizeof(text), "%s\n", V1_TOKEN);
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        const char *p = strchr(V1_TOKEN, '_'); /* a '_' in the token read as '/' */
        REQUIRE(p);
        snprintf(text, sizeof(text), "%s", V1_TOKEN);
        text[p - V1_TOKEN] = '/';
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        p = strchr(V1_TOKEN, '-');
        if (p) {
                snprintf(text, sizeof(text), "%s", V1_TOKEN);
                text[p - V1_TOKEN] = '+';
                CHECK_EQ(parse_s(text, &s), -EBADMSG);
        }
        memcpy(text, V1_TOKEN, n);
        text[10] = '\0';
        CHECK_EQ(parse_n(text, n, &s), -EBADMSG);
        /* V2 is 196 bytes (1 mod 3): its last character carries 2 bits of the last byte and 4
         * unused bits, which must be 0 */
        size_t n2 = strlen(V2_TOKEN);
        CHECK_EQ(n2 % 4, 2);
        snprintf(text, sizeof(text), "%s", V2_TOKEN);
        CHECK_EQ(text[n2 - 1], 'A'); /* 0b000000 */
        CHECK_OK(parse_s(text, &s));
        text[n2 - 1] = 'B'; /* 0b000001 */
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        text[n2 - 1] = 'P'; /* 0b001111 */
        CHECK_EQ(parse_s(text, &s), -EBADMSG);
        text[n2 - 1] = 'Q'; /* 0b010000: another last byte, canonically spelled */
        CHECK_OK(parse_s(text, &s));
        /* over the longest token */
        memset(text, 'A', sizeof(text));
        CHECK_EQ(parse_n(text, CHP_TOKEN_TEXT_MAX, &s), -EBADMSG);
        /* an unknown version is reported as such */
        blob[0] = 2;
        ssize_t tn = chp_token_base64_encode(blob, (size_t)bn, text, sizeof(text));
        REQUIRE(tn > 0);
        CHECK_EQ(parse_n(text, (size_t)tn, &s), CHP_EVERSION);
        CHECK(s.fields_len == 0 && s.t.version == 0); /* cleared, not filled */
}

TEST(base64url)
{
        /* RFC 4648 section 10, without the padding */
        const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
        const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
        for (int i = 0; i < 7; i++) {
                char out[16];
                uint8_t back[16];
                size_t n = strlen(in[i]);
                CHECK_EQ(chp_token_base64_encode((const uint8_t *)in[i], n, out, sizeof(out)),
                         (ssize_t)strlen(want[i]));
                CHECK(strcmp(out, want[i]) == 0);
                CHECK_EQ(chp_token_base64_decode(want[i], strlen(want[i]), back, sizeof(back)),
                         (ssize_t)n);
                CHECK(memcmp(back, in[i], n) == 0);
                CHECK_EQ(chp_token_base64_encode((const uint8_t *)in[i], n, out, strlen(want[i])),
                         -ENOSPC); /* no room for the NUL */
                if (n > 0)
                        CHECK_EQ(chp_token_base64_decode(want[i], strlen(want[i]), back, n - 1),
                                 -ENOSPC);
        }
        /* the URL-safe alphabet's last two characters */
        const uint8_t fb[] = {0xfb, 0xff, 0xbf};
        char out[8];
        CHECK_EQ(chp_token_base64_encode(fb, 3, out, sizeof(out)), 4);
        CHECK(strcmp(out, "-_-_") == 0);
        uint8_t back[8];
        CHECK_EQ(chp_token_base64_decode("-_-_", 4, back, sizeof(back)), 3);
        CHECK(memcmp(back, fb, 3) == 0);
        CHECK_EQ(chp_token_base64_decode("+/+/", 4, back, sizeof(back)), -EBADMSG);
        CHECK_EQ(chp_token_base64_decode("Zg==", 4, back, sizeof(back)), -EBADMSG);
        CHECK_EQ(chp_token_base64_decode("Z", 1, back, sizeof(back)), -EBADMSG);
        CHECK_EQ(chp_token_base64_decode("Zm9vY", 5, back, sizeof(back)), -EBADMSG);
        CHECK_EQ(chp_token_base64_decode("Zh", 2, back, sizeof(back)), -EBADMSG);  /* "f"'s twin */
        CHECK_EQ(chp_token_base64_decode("Zm9", 3, back, sizeof(back)), -EBADMSG); /* "fo"'s */
        CHECK_EQ(chp_token_base64_decode("Zm 9", 4, back, sizeof(back)), -EBADMSG);
        /* bytes over 0x7f, which libsodium 1.0.18 reads as letters (fuzz_token found 0xb4) */
        for (unsigned c = 0x80; c <= 0xff; c++) {
                char s[4] = {'Z', 'm', '9', (char)c};
                CHECK_EQ(chp_token_base64_decode(s, 4, back, sizeof(back)), -EBADMSG);
        }
}

TEST(verify_verdicts)
{
        struct chp_token_signed s;
        char text[CHP_TOKEN_TEXT_MAX];
        struct chp_token t = vector1();
        REQUIRE_OK(mint(&t, &s, text));
        struct chp_token_policy p = policy("example-messenger");
        CHECK_OK(chp_token_verify(&s, &p));

        /* the key: another tenant, another key id, no keys, a key under the wrong id */
        p.tenant = "chat.example";
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_KEY);
        p = policy("example-messenger");
        p.nkeys = 0;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_KEY);
        p.tenant = NULL;
        p.nkeys = 1;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_KEY);
        struct chp_token_key keys[2] = {the_key, the_key};
        keys[0].kid[0] ^= 1;
        keys[1].pub[0] ^= 1; /* the right id, another key: a key id is a name, not a proof */
        p = policy("example-messenger");
        p.keys = keys;
        p.nkeys = 1;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_KEY);
        p.nkeys = 2;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_SIGNATURE);
        keys[1] = the_key; /* the second of two keys: rotation */
        CHECK_OK(chp_token_verify(&s, &p));

        /* the signature: any bit of FIELDS or SIG changed */
        p = policy("example-messenger");
        for (size_t bit = 0; bit < 8 * sizeof(s.sig); bit += 7) {
                struct chp_token_signed c = s;
                c.sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_SIGNATURE);
        }
        struct chp_token_signed c = s;
        c.fields[30] ^= 1; /* issued_at, which parse would read just as well */
        CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_SIGNATURE);
        /* a token minted by another key under this key's id */
        uint8_t other[CHP_TOKEN_SEED_BYTES];
        memset(other, 7, sizeof(other));
        REQUIRE(chp_token_sign(&t, other, text, sizeof(text)) > 0);
        REQUIRE_OK(parse_s(text, &c));
        CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_SIGNATURE);

        /* the audience: another relay's key, no relay key, a name not listed */
        p.relay_key = NULL;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_AUDIENCE);
        uint8_t another[CHP_KEY_BYTES];
        memcpy(another, relay_key, sizeof(another));
        another[31] ^= 0x80;
        p.relay_key = another;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_AUDIENCE);
        t = vector2();
        REQUIRE_OK(mint(&t, &c, text));
        p = policy("chat.example");
        CHECK_OK(chp_token_verify(&c, &p));
        p.naudience_names = 1; /* "other.example" only */
        CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_AUDIENCE);
        p.naudience_names = 0;
        CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_AUDIENCE);
        const char *prefix[] = {"relays.example.or"};
        p.audience_names = prefix;
        p.naudience_names = 1;
        CHECK_EQ(chp_token_verify(&c, &p), CHP_ETOKEN_AUDIENCE);
}

/* A token issued at T0 living life seconds, checked at now. */
static int verdict(uint64_t life, uint64_t now, uint8_t scopes, uint8_t need)
{
        struct chp_token t = vector1();
        t.expires_at = T0 + life;
        t.scopes = scopes;
        struct chp_token_signed s;
        char text[CHP_TOKEN_TEXT_MAX];
        int rc = mint(&t, &s, text);
        if (rc)
                return rc;
        struct chp_token_policy p = policy("example-messenger");
        p.now = now;
        p.need_scopes = need;
        return chp_token_verify(&s, &p);
}

TEST(verify_times_and_scopes)
{
        const uint8_t U = CHP_TOKEN_SCOPE_UPLOAD;
        /* lifetime: none, the maximum, one second over */
        CHECK_EQ(verdict(0, T0, U, U), CHP_ETOKEN_LIFE);
        CHECK_OK(verdict(1, T0, U, U));
        CHECK_OK(verdict(CHP_TOKEN_LIFE_MAX, T0, U, U));
        CHECK_EQ(verdict(CHP_TOKEN_LIFE_MAX + 1, T0, U, U), CHP_ETOKEN_LIFE);
        struct chp_token t = vector1();
        t.expires_at = T0 - 1; /* before issue */
        struct chp_token_signed s;
        char text[CHP_TOKEN_TEXT_MAX];
        REQUIRE_OK(mint(&t, &s, text));
        struct chp_token_policy p = policy("example-messenger");
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_LIFE);
        /* the skew, both ends */
        CHECK_OK(verdict(3600, T0 - CHP_TOKEN_SKEW, U, U));
        CHECK_EQ(verdict(3600, T0 - CHP_TOKEN_SKEW - 1, U, U), CHP_ETOKEN_EARLY);
        CHECK_EQ(verdict(3600, 0, U, U), CHP_ETOKEN_EARLY);
        CHECK_OK(verdict(3600, T0 + 3600 + CHP_TOKEN_SKEW, U, U));
        CHECK_EQ(verdict(3600, T0 + 3600 + CHP_TOKEN_SKEW + 1, U, U), CHP_ETOKEN_EXPIRED);
        CHECK_EQ(verdict(3600, UINT64_MAX, U, U), CHP_ETOKEN_EXPIRED);
        /* times near the ends of the range do not wrap */
        t = vector1();
        t.issued_at = UINT64_MAX - 10;
        t.expires_at = UINT64_MAX;
        REQUIRE_OK(mint(&t, &s, text));
        p.now = UINT64_MAX;
        CHECK_OK(chp_token_verify(&s, &p));
        p.now = 0;
        CHECK_EQ(chp_token_verify(&s, &p), CHP_ETOKEN_EARLY);
        t.issued_at = 0;
        t.expires_at = 10;
        REQUIRE_OK(mint(&t, &s, text));
        CHECK_OK(chp_token_verify(&s, &p));
        /* scopes: every need against every grant */
        for (uint8_t have = 1; have <= CHP_TOKEN_SCOPE_ALL; have++)
                for (uint8_t need = 0; need <= CHP_TOKEN_SCOPE_ALL; need++)
                        CHECK_EQ(verdict(3600, T0, have, need),
                                 (have & need) == need ? 0 : CHP_ETOKEN_SCOPE);
}

TEST(key_line)
{
        char line[CHP_TOKEN_KEY_LINE_MAX];
        chp_token_key_format(&the_key, line);
        CHECK(strcmp(line, KID ":" PUB) == 0);
        struct chp_token_key k;
        REQUIRE_OK(chp_token_key_parse(line, strlen(line), &k));
        CHECK(memcmp(&k, &the_key, sizeof(k)) == 0);
        const char *bad[] = {
            "",
            KID PUB,
            KID ";" PUB,
            "21FE31DFA154A261:" PUB,
            KID ":D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A",
            KID ":" PUB "0",
            "1fe31dfa154a261:" PUB,
            KID ":" PUB " ",
            " " KID ":" PUB,
            KID ":" PUB "\n",
            "21fe31dfa154a26g:" PUB,
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char *copy = (char *)tu_exact_copy((const uint8_t *)bad[i], strlen(bad[i]));
                CHECK_EQ(chp_token_key_parse(copy, strlen(bad[i]), &k), -EBADMSG);
                free(copy);
        }
        CHECK(k.kid[0] == 0 && k.pub[0] == 0); /* cleared */
}

TEST(error_messages)
{
        for (int code = CHP_ETOKEN_KEY; code >= CHP_ETOKEN_SCOPE; code--)
                CHECK(strcmp(chp_strerror(code), "unknown error") != 0);
        CHECK(strstr(chp_strerror(CHP_ETOKEN_EXPIRED), "expired") != NULL);
        /* issue 14: 401 for a token that is not valid, 403 for one out of scope */
        for (int code = CHP_ETOKEN_KEY; code > CHP_ETOKEN_SCOPE; code--)
                CHECK_EQ(chp_err_http_status(code), 401);
        CHECK_EQ(chp_err_http_status(CHP_ETOKEN_SCOPE), 403);
}

/* The whole codec: nothing in it allocates, so no allocation can fail it. */
static int token_pass(void *arg)
{
        (void)arg;
        struct chp_token t = vector2();
        struct chp_token_signed s;
        char text[CHP_TOKEN_TEXT_MAX];
        ssize_t n = chp_token_sign(&t, seed, text, sizeof(text));
        if (n < 0)
                return (int)n;
        int rc = chp_token_parse(text, (size_t)n, &s);
        if (rc)
                return rc;
        struct chp_token_policy p = policy("chat.example");
        rc = chp_token_verify(&s, &p);
        if (rc)
                return rc;
        char line[CHP_TOKEN_KEY_LINE_MAX];
        struct chp_token_key k;
        chp_token_key_format(&the_key, line);
        return chp_token_key_parse(line, strlen(line), &k) ? 1 : (token_eq(&s.t, &t) ? 0 : 1);
}

TEST(allocation_failure)
{
        CHECK_EQ(tu_alloc_sweep("token codec", token_pass, NULL, 0), 0);
}

HARNESS_MAIN()
