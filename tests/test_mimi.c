/* MIMI ExternalPart descriptors (client/mimi.c): the exact text chp_mimi_format writes, parse
 * and format round trips (alone and inside put --json's object), JSON as RFC 8259 has it
 * (escapes, surrogate pairs, numbers, whitespace), and refusal with a reason of everything else:
 * every truncation, every field of the wrong type, size or value, duplicates, nesting, bytes
 * after the object, lone surrogates, U+0000, raw controls, invalid UTF-8, too long. Inputs are
 * parsed from exact-size heap copies so ASan catches any read past len. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "mimi.h"

#define R   "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210"
#define I   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define K   "deadbeefcafebabe0f1e2d3c4b5a69788796a5b4c3d2e1f0aaaaaaaaaaaaaaaa"
#define H   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define URL "chapar://relay.example:7700/" R "/" I
/* mimi.c keeps the first 1024 bytes of a string value */
#define VAL_MAX_TEST 1024

/* What chp_mimi_format writes for example() — the documented form, byte for byte. */
#define EXAMPLE                                                                                    \
        "{\"cardinality\":2,\"contentType\":\"text/plain\",\"url\":\"" URL "\",\"expires\":"       \
        "1798693068,\"size\":4,\"encAlg\":51714,\"key\":\"" K "\",\"nonce\":\"\",\"aad\":\"\","    \
        "\"hashAlg\":1,\"contentHash\":\"" H "\",\"description\":\"\",\"filename\":"               \
        "\"test.txt\"}"

static int parse_n(const char *s, size_t len, struct chp_mimi_part *p, const char **why)
{
        char *copy = malloc(len ? len : 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, s, len);
        int rc = chp_mimi_parse(copy, len, p, why);
        free(copy);
        return rc;
}

static int parse_s(const char *s, struct chp_mimi_part *p, const char **why)
{
        return parse_n(s, strlen(s), p, why);
}

static void example(struct chp_mimi_part *p)
{
        memset(p, 0, sizeof(*p));
        const char t[] = URL "#" K;
        if (chp_ticket_parse(t, sizeof(t) - 1, &p->ticket) != 0)
                abort();
        p->size = 4;
        if (chp_hex_decode(H, 64, p->content_hash, 32) != 0)
                abort();
        p->has_expires = true;
        p->expires = 1798693068;
        snprintf(p->content_type, sizeof(p->content_type), "text/plain");
        snprintf(p->filename, sizeof(p->filename), "test.txt");
}

static bool part_eq(const struct chp_mimi_part *a, const struct chp_mimi_part *b)
{
        return strcmp(a->ticket.host, b->ticket.host) == 0 && a->ticket.port == b->ticket.port &&
               memcmp(a->ticket.relay_key, b->ticket.relay_key, 32) == 0 &&
               memcmp(a->ticket.file_id, b->ticket.file_id, 32) == 0 &&
               a->ticket.has_key == b->ticket.has_key &&
               memcmp(a->ticket.file_key, b->ticket.file_key, 32) == 0 && a->size == b->size &&
               memcmp(a->content_hash, b->content_hash, 32) == 0 &&
               a->has_expires == b->has_expires && a->expires == b->expires &&
               strcmp(a->content_type, b->content_type) == 0 &&
               strcmp(a->filename, b->filename) == 0;
}

static bool all_zero(const void *p, size_t n)
{
        const unsigned char *b = p;
        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

/* s with the first occurrence of from replaced by to, in a static buffer. */
static const char *edit(const char *s, const char *from, const char *to)
{
        static char out[8192];
        const char *at = strstr(s, from);
        if (!at)
                abort();
        snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
        return out;
}

/* Refused with -EBADMSG, a reason containing word, and a cleared output. */
static bool refused(const char *s, const char *word)
{
        struct chp_mimi_part p;
        memset(&p, 0xa5, sizeof(p));
        const char *why = NULL;
        int rc = parse_s(s, &p, &why);
        bool ok = rc == -EBADMSG && why && *why && strstr(why, word) && all_zero(&p, sizeof(p));
        if (!ok)
                fprintf(stderr, "  not refused as '%s' (rc %d, why: %s): %.160s\n", word, rc,
                        why ? why : "(null)", s);
        return ok;
}

TEST(format_writes_the_documented_text)
{
        struct chp_mimi_part p;
        example(&p);
        char out[CHP_MIMI_FORMAT_MAX];
        ssize_t n = chp_mimi_format(&p, out, sizeof(out));
        CHECK_EQ(n, (ssize_t)strlen(EXAMPLE));
        CHECK(strcmp(out, EXAMPLE) == 0);
        CHECK_EQ(chp_mimi_format(&p, out, (size_t)n), -ENOSPC);
        CHECK_EQ(chp_mimi_format(&p, out, 0), -ENOSPC);
        p.has_expires = false;
        n = chp_mimi_format(&p, out, sizeof(out));
        CHECK(n > 0 && !strstr(out, "expires"));
        p.ticket.has_key = false;
        CHECK_EQ(chp_mimi_format(&p, out, sizeof(out)), -EINVAL);
}

TEST(parse_round_trips)
{
        struct chp_mimi_part want, got;
        example(&want);
        const char *why = NULL;
        REQUIRE_OK(parse_s(EXAMPLE, &got, &why));
        CHECK(why && *why == '\0');
        CHECK(part_eq(&want, &got));
        CHECK(got.ticket.has_key);

        /* a part without expires, contentType, filename, description or cardinality */
        const char *min = "{\"url\":\"" URL "\",\"size\":4,\"encAlg\":51714,\"key\":\"" K
                          "\",\"nonce\":\"\",\"aad\":\"\",\"hashAlg\":1,\"contentHash\":\"" H "\"}";
        REQUIRE_OK(parse_s(min, &got, NULL));
        CHECK(!got.has_expires && got.content_type[0] == '\0' && got.filename[0] == '\0');
        CHECK(memcmp(got.ticket.file_key, want.ticket.file_key, 32) == 0);

        /* whitespace everywhere it may be, upper-case hex, members in another order, unknown
         * members of every kind skipped */
        const char *spaced =
            " \r\n\t{ \"hashAlg\" : 1 , \"unknown\" : [ ] , \"x\": -0.5e+3, \"y\": true, \"z\": "
            "null, \"w\": false, \"contentHash\": \"" H "\", \"url\" :\"" URL
            "\", \"key\": \"DEADBEEFCAFEBABE0F1E2D3C4B5A69788796A5B4C3D2E1F0AAAAAAAAAAAAAAAA\", "
            "\"size\": 4, \"encAlg\": 51714, \"nonce\": \"\", \"aad\": \"\" } \n";
        CHECK(refused(spaced, "array")); /* arrays are not skipped: the descriptor has none */
        spaced = edit(spaced, "\"unknown\" : [ ] ,", "");
        REQUIRE_OK(parse_s(spaced, &got, NULL));
        CHECK(memcmp(got.ticket.file_key, want.ticket.file_key, 32) == 0);
        CHECK_EQ(got.size, 4);
}

TEST(inside_put_json)
{
        char buf[8192];
        snprintf(buf, sizeof(buf),
                 "{\"ticket\":\"" URL "#" K "\",\"file_id\":\"" I "\",\"bytes_total\":4096,"
                 "\"seconds\":0.012,\"congestion\":\"cubic\",\"mimi_external_part\":%s}\n",
                 EXAMPLE);
        struct chp_mimi_part want, got;
        example(&want);
        REQUIRE_OK(parse_s(buf, &got, NULL));
        CHECK(part_eq(&want, &got));

        /* the part twice, the part's members beside it, another object, an object in the part */
        char twice[8192];
        snprintf(twice, sizeof(twice), "{\"mimi_external_part\":%s,\"mimi_external_part\":%s}",
                 EXAMPLE, EXAMPLE);
        CHECK(refused(twice, "twice"));
        snprintf(twice, sizeof(twice), "{\"size\":4,\"mimi_external_part\":%s}", EXAMPLE);
        CHECK(refused(twice, "both"));
        snprintf(twice, sizeof(twice), "{\"other\":{},\"mimi_external_part\":%s}", EXAMPLE);
        CHECK(refused(twice, "object"));
        CHECK(refused(edit(buf, "\"cardinality\":2", "\"cardinality\":2,\"n\":{}"), "object"));
        CHECK(refused(edit(buf, "\"cardinality\":2", "\"cardinality\":2,\"n\":[[[[[[1]]]]]]"),
                      "array"));
        char deep[4000];
        memset(deep, '[', sizeof(deep) - 1);
        deep[sizeof(deep) - 1] = '\0';
        CHECK(refused(deep, "object"));
}

TEST(strings_as_json_has_them)
{
        struct chp_mimi_part got;
        /* escapes, a two-byte and a four-byte character by \u, raw UTF-8 */
        const char *s = edit(EXAMPLE, "\"test.txt\"",
                             "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\xc3\xa9\"");
        REQUIRE_OK(parse_s(s, &got, NULL));
        CHECK(strcmp(got.filename, "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\xc3\xa9") == 0);
        /* and written back escaped, parsing to the same */
        char out[CHP_MIMI_FORMAT_MAX];
        struct chp_mimi_part again;
        REQUIRE(chp_mimi_format(&got, out, sizeof(out)) > 0);
        REQUIRE_OK(parse_s(out, &again, NULL));
        CHECK(part_eq(&got, &again));

        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"\\ud83d\""), "surrogate"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"\\ude00x\""), "surrogate"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"\\ud83d\\u0041\""), "surrogate"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\\u0000b\""), "U+0000"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\\u00g0\""), "hex"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\\x41\""), "escape"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\tb\""), "control"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\xff\""), "UTF-8"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"a\xc3\""), "UTF-8"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "\"\xed\xa0\x80\""), "UTF-8"));
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", "'test.txt'"), "JSON"));

        /* a NUL byte anywhere is refused */
        size_t len = strlen(EXAMPLE);
        char *copy = malloc(len);
        REQUIRE(copy);
        for (size_t i = 0; i < len; i += 7) {
                memcpy(copy, EXAMPLE, len);
                copy[i] = '\0';
                CHECK_EQ(parse_n(copy, len, &got, NULL), -EBADMSG);
        }
        free(copy);
}

TEST(bounds_of_strings_and_numbers)
{
        struct chp_mimi_part got;
        char big[2 * VAL_MAX_TEST + 64];
        char name[300];
        memset(name, 'n', 255);
        name[255] = '\0';
        snprintf(big, sizeof(big), "\"%s\"", name);
        REQUIRE_OK(parse_s(edit(EXAMPLE, "\"test.txt\"", big), &got, NULL));
        CHECK_EQ(strlen(got.filename), 255);
        snprintf(big, sizeof(big), "\"%sn\"", name);
        CHECK(refused(edit(EXAMPLE, "\"test.txt\"", big), "filename"));
        char type[200];
        memset(type, 't', 127);
        type[127] = '\0';
        snprintf(big, sizeof(big), "\"%s\"", type);
        REQUIRE_OK(parse_s(edit(EXAMPLE, "\"text/plain\"", big), &got, NULL));
        snprintf(big, sizeof(big), "\"%st\"", type);
        CHECK(refused(edit(EXAMPLE, "\"text/plain\"", big), "contentType"));
        /* a long description and a long unknown member are read through */
        char longs[3 * VAL_MAX_TEST];
        memset(longs, 'd', sizeof(longs) - 1);
        longs[sizeof(longs) - 1] = '\0';
        size_t cap = sizeof(longs) + sizeof(EXAMPLE) + 64;
        char *doc = malloc(cap);
        REQUIRE(doc);
        snprintf(doc, cap, "{\"zz\":\"%s\",%s", longs, EXAMPLE + 1);
        CHECK_OK(parse_s(edit(doc, "\"description\":\"\"", "\"description\":\"dd\""), &got, NULL));
        free(doc);

        CHECK_OK(parse_s(edit(EXAMPLE, "\"size\":4", "\"size\":18446744073709551615"), &got, NULL));
        CHECK(got.size == UINT64_MAX);
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":18446744073709551616"), "size"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":4.0"), "size"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":4e0"), "size"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":-4"), "size"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":\"4\""), "size"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":04"), "JSON"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":4."), "point"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":4e"), "exponent"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":-"), "digits"));
        CHECK_OK(parse_s(edit(EXAMPLE, "1798693068", "4294967295"), &got, NULL));
        CHECK(refused(edit(EXAMPLE, "1798693068", "4294967296"), "expires"));
        CHECK_OK(parse_s(edit(EXAMPLE, "1798693068", "0"), &got, NULL));
        CHECK(got.has_expires && got.expires == 0);

        /* too long as a whole, even if it were well formed */
        size_t n = CHP_MIMI_JSON_MAX + 1;
        char *huge = malloc(n);
        REQUIRE(huge);
        memset(huge, ' ', n);
        memcpy(huge, EXAMPLE, strlen(EXAMPLE));
        const char *why = NULL;
        CHECK_EQ(parse_n(huge, n, &got, &why), -EBADMSG);
        CHECK(why && strstr(why, "64 KiB"));
        CHECK_OK(parse_n(huge, n - 1, &got, NULL));
        free(huge);
}

TEST(fields_that_are_not_chapars)
{
        CHECK(refused(edit(EXAMPLE, "\"encAlg\":51714", "\"encAlg\":1"), "encAlg"));
        CHECK(refused(edit(EXAMPLE, "\"encAlg\":51714", "\"encAlg\":0"), "encAlg is 0"));
        CHECK(refused(edit(EXAMPLE, "\"encAlg\":51714", "\"encAlg\":65536"), "encAlg"));
        CHECK(refused(edit(EXAMPLE, "\"encAlg\":51714", "\"encAlg\":51713"), "encAlg"));
        CHECK(refused(edit(EXAMPLE, "\"hashAlg\":1", "\"hashAlg\":8"), "hashAlg"));
        CHECK(refused(edit(EXAMPLE, "\"hashAlg\":1", "\"hashAlg\":256"), "hashAlg"));
        CHECK(refused(edit(EXAMPLE, "\"cardinality\":2", "\"cardinality\":1"), "cardinality"));
        CHECK(refused(edit(EXAMPLE, K, "deadbeef"), "key"));
        CHECK(refused(edit(EXAMPLE, K, K "00"), "key"));
        CHECK(refused(edit(EXAMPLE, "\"key\":\"de", "\"key\":\"zz"), "key"));
        CHECK(refused(edit(EXAMPLE, "\"key\":\"" K "\"", "\"key\":32"), "key"));
        CHECK(refused(edit(EXAMPLE, H, "9f86"), "contentHash"));
        CHECK(refused(edit(EXAMPLE, "\"nonce\":\"\"", "\"nonce\":\"000000000000000000000000\""),
                      "nonce"));
        CHECK(refused(edit(EXAMPLE, "\"aad\":\"\"", "\"aad\":\"00\""), "aad"));
        CHECK(refused(edit(EXAMPLE, "\"aad\":\"\"", "\"aad\":null"), "aad"));
        CHECK(refused(edit(EXAMPLE, URL, URL "#" K), "fragment"));
        CHECK(refused(edit(EXAMPLE, URL, "https://relay.example/f/" I), "chapar URL"));
        CHECK(refused(edit(EXAMPLE, "7700", "0"), "chapar URL"));
        CHECK(refused(edit(EXAMPLE, "\"description\":\"\"", "\"description\":7"), "description"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4,", ""), "size is missing"));
        CHECK(refused(edit(EXAMPLE, "\"key\":\"" K "\",", ""), "key is missing"));
        CHECK(refused(edit(EXAMPLE, "\"nonce\":\"\",", ""), "nonce is missing"));
        CHECK(refused(edit(EXAMPLE, "\"aad\":\"\",", ""), "aad is missing"));
        CHECK(refused(edit(EXAMPLE, "\"hashAlg\":1,", ""), "hashAlg is missing"));
        CHECK(refused(edit(EXAMPLE, "\"encAlg\":51714,", ""), "encAlg is missing"));
        CHECK(refused(edit(EXAMPLE, "\"contentHash\":\"" H "\",", ""), "contentHash is missing"));
        CHECK(refused(edit(EXAMPLE, "\"url\":\"" URL "\",", ""), "url is missing"));
        CHECK(refused(edit(EXAMPLE, "{", "{\"size\":4,"), "twice"));
        CHECK(refused(edit(EXAMPLE, "{", "{\"key\":\"" K "\","), "twice"));
}

TEST(not_one_json_object)
{
        CHECK(refused("", "object"));
        CHECK(refused("   ", "object"));
        CHECK(refused("[]", "object"));
        CHECK(refused("\"x\"", "object"));
        CHECK(refused("{}", "missing"));
        CHECK(refused(EXAMPLE " {}", "follows"));
        CHECK(refused(EXAMPLE "x", "follows"));
        CHECK(refused(edit(EXAMPLE, ",\"size\"", ",,\"size\""), "JSON"));
        CHECK(refused(edit(EXAMPLE, "\"size\":", "\"size\" "), "':'"));
        CHECK(refused(edit(EXAMPLE, "}", ",}"), "JSON"));
        CHECK(refused(edit(EXAMPLE, ",\"size\"", " \"size\""), "JSON"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":tru"), "word"));
        CHECK(refused(edit(EXAMPLE, "\"size\":4", "\"size\":+4"), "character"));
}

TEST(every_truncation_is_refused)
{
        char buf[8192];
        snprintf(buf, sizeof(buf), "{\"seconds\":0.5,\"mimi_external_part\":%s}", EXAMPLE);
        const char *docs[] = {EXAMPLE, buf};
        for (size_t d = 0; d < 2; d++) {
                size_t len = strlen(docs[d]);
                for (size_t n = 0; n < len; n++) {
                        struct chp_mimi_part p;
                        int rc = parse_n(docs[d], n, &p, NULL);
                        if (rc != -EBADMSG) {
                                fprintf(stderr, "  prefix %zu of %zu: rc %d\n", n, len, rc);
                                CHECK(0);
                                break;
                        }
                        CHECK(all_zero(&p, sizeof(p)));
                }
        }
}

HARNESS_MAIN()
