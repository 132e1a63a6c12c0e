/* Fuzz target for upload tokens (common/token.c): the input is read four ways, and each reading
 * is either refused with its documented code or canonical —
 *   as FIELDS (chp_token_decode): -EBADMSG or CHP_EVERSION; else encoding the token gives back
 *     exactly the bytes it consumed;
 *   as a token's text (chp_token_parse): -EBADMSG or CHP_EVERSION, output cleared; else the
 *     base64url of fields || sig is the input, the fields decode to the same token, and verify
 *     against a fixed policy answers 0 or one of its CHP_ETOKEN_* codes;
 *   as base64url (chp_token_base64_decode): -EBADMSG; else encoding gives back the input;
 *   as a key line (chp_token_key_parse): -EBADMSG; else formatting gives back the input.
 * Anything else aborts. Linked with libFuzzer, or with replay.c to run the committed corpus. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "err.h"
#include "fuzz.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool all_zero(const void *p, size_t n)
{
        const uint8_t *b = p;
        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

static void fields(const uint8_t *data, size_t size)
{
        struct chp_token t;
        ssize_t rc = chp_token_decode(data, size, &t);
        if (rc < 0) {
                EXPECT(rc == -EBADMSG || rc == CHP_EVERSION);
                EXPECT(all_zero(&t, sizeof(t)));
                return;
        }
        EXPECT((size_t)rc <= size && rc <= CHP_TOKEN_FIELDS_MAX);
        uint8_t again[CHP_TOKEN_FIELDS_MAX];
        ssize_t n = chp_token_encode(&t, again, sizeof(again));
        EXPECT(n == rc && memcmp(again, data, (size_t)n) == 0);
}

static void text(const uint8_t *data, size_t size)
{
        static struct chp_token_signed s; /* static: 400 bytes the stack need not carry */
        int rc = chp_token_parse((const char *)data, size, &s);
        if (rc) {
                EXPECT(rc == -EBADMSG || rc == CHP_EVERSION);
                EXPECT(all_zero(&s, sizeof(s)));
                return;
        }
        uint8_t blob[CHP_TOKEN_BYTES_MAX];
        memcpy(blob, s.fields, s.fields_len);
        memcpy(blob + s.fields_len, s.sig, sizeof(s.sig));
        char out[CHP_TOKEN_TEXT_MAX];
        ssize_t n = chp_token_base64_encode(blob, s.fields_len + sizeof(s.sig), out, sizeof(out));
        EXPECT(n >= 0 && (size_t)n == size && memcmp(out, data, size) == 0);
        struct chp_token t;
        EXPECT(chp_token_decode(s.fields, s.fields_len, &t) == (ssize_t)s.fields_len);

        /* verify answers a verdict, whatever the token says */
        static const struct chp_token_key key = {{0x21, 0xfe, 0x31, 0xdf, 0xa1, 0x54, 0xa2, 0x61}};
        static const char *const names[] = {"relays.example.org"};
        uint8_t relay[CHP_KEY_BYTES] = {0x85, 0x20};
        struct chp_token_policy p = {.tenant = s.t.tenant,
                                     .keys = &key,
                                     .nkeys = 1,
                                     .relay_key = relay,
                                     .audience_names = names,
                                     .naudience_names = 1,
                                     .need_scopes = CHP_TOKEN_SCOPE_UPLOAD,
                                     .now = 1767225600};
        rc = chp_token_verify(&s, &p);
        EXPECT(rc == 0 || (rc <= CHP_ETOKEN_KEY && rc >= CHP_ETOKEN_SCOPE));
}

static void base64(const uint8_t *data, size_t size)
{
        uint8_t out[1024];
        ssize_t n = chp_token_base64_decode((const char *)data, size, out, sizeof(out));
        if (n == -ENOSPC) {
                EXPECT(size > sizeof(out));
                return;
        }
        if (n < 0) {
                EXPECT(n == -EBADMSG);
                return;
        }
        char again[1400];
        EXPECT(chp_token_base64_encode(out, (size_t)n, again, sizeof(again)) == (ssize_t)size);
        EXPECT(memcmp(again, data, size) == 0);
}

static void key_line(const uint8_t *data, size_t size)
{
        struct chp_token_key k;
        int rc = chp_token_key_parse((const char *)data, size, &k);
        if (rc) {
                EXPECT(rc == -EBADMSG && all_zero(&k, sizeof(k)));
                return;
        }
        char line[CHP_TOKEN_KEY_LINE_MAX];
        chp_token_key_format(&k, line);
        EXPECT(size == CHP_TOKEN_KEY_LINE_MAX - 1 && memcmp(line, data, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static bool ready;
        if (!ready) {
                EXPECT(sodium_init() >= 0);
                ready = true;
        }
        fields(data, size);
        text(data, size);
        base64(data, size);
        key_line(data, size);
        return 0;
}
