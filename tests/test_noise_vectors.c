/* Noise (common/noise.c) against the cacophony test vectors: every vector of the implemented
 * patterns and suites, byte for byte in both directions (handshake messages, handshake hash,
 * transport messages). The file is JSON, read by the small strict reader below; the behaviour the
 * vectors cannot show is in test_noise.c.
 *
 * The vectors file is CHAPAR_NOISE_VECTORS (ctest sets it) or ../shared/vectors/noise/
 * cacophony.txt beside the repository. Missing, it fails the run under CI and otherwise turns a
 * run whose other tests passed into a skip (exit 77).
 */
#include "harness.h"

#include <errno.h>
#include <stdbool.h>

#include <sodium.h>

#include "hash.h"
#include "noise.h"
#include "test_noise.h"

/* ------------------------------------------------------------------------------------------ */
/* A small strict JSON reader: the whole grammar except string escapes (the vectors use none)  */

enum jtype { J_OBJ, J_ARR, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL };

struct jv {
        enum jtype t;
        const char *s; /* J_STR: the bytes between the quotes; J_NUM: the literal */
        size_t n;
        struct jv *kids; /* J_ARR: the elements; J_OBJ: key, value, key, value, ... */
        size_t nkids;
};

struct jparser {
        const char *p, *start, *end;
        int depth;
        const char *err;
};

static void jfree(struct jv *v)
{
        if (!v)
                return;
        for (size_t i = 0; i < v->nkids; i++)
                jfree(&v->kids[i]);
        free(v->kids);
        v->kids = NULL;
        v->nkids = 0;
}

static void jws(struct jparser *jp)
{
        while (jp->p < jp->end &&
               (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
                jp->p++;
}

static int jerr(struct jparser *jp, const char *msg)
{
        if (!jp->err)
                jp->err = msg;
        return -1;
}

static int jvalue(struct jparser *jp, struct jv *out);

static int jstring(struct jparser *jp, struct jv *out)
{
        if (jp->p >= jp->end || *jp->p != '"')
                return jerr(jp, "expected a string");
        const char *s = ++jp->p;
        while (jp->p < jp->end && *jp->p != '"') {
                unsigned char c = (unsigned char)*jp->p;
                if (c < 0x20)
                        return jerr(jp, "control character in a string");
                if (c == '\\')
                        return jerr(jp, "string escapes are not supported");
                jp->p++;
        }
        if (jp->p >= jp->end)
                return jerr(jp, "unterminated string");
        out->t = J_STR;
        out->s = s;
        out->n = (size_t)(jp->p - s);
        jp->p++;
        return 0;
}

static bool jdigit(const struct jparser *jp)
{
        return jp->p < jp->end && *jp->p >= '0' && *jp->p <= '9';
}

static int jnumber(struct jparser *jp, struct jv *out)
{
        const char *s = jp->p;
        if (jp->p < jp->end && *jp->p == '-')
                jp->p++;
        if (!jdigit(jp))
                return jerr(jp, "bad number");
        if (*jp->p == '0')
                jp->p++;
        else
                while (jdigit(jp))
                        jp->p++;
        if (jp->p < jp->end && *jp->p == '.') {
                jp->p++;
                if (!jdigit(jp))
                        return jerr(jp, "bad fraction");
                while (jdigit(jp))
                        jp->p++;
        }
        if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E')) {
                jp->p++;
                if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-'))
                        jp->p++;
                if (!jdigit(jp))
                        return jerr(jp, "bad exponent");
                while (jdigit(jp))
                        jp->p++;
        }
        out->t = J_NUM;
        out->s = s;
        out->n = (size_t)(jp->p - s);
        return 0;
}

static int jpush(struct jv *parent, size_t *cap, const struct jv *kid)
{
        if (parent->nkids == *cap) {
                size_t ncap = *cap ? *cap * 2 : 8;
                struct jv *nk = realloc(parent->kids, ncap * sizeof(*nk));
                if (!nk)
                        return -1;
                parent->kids = nk;
                *cap = ncap;
        }
        parent->kids[parent->nkids++] = *kid;
        return 0;
}

static int jcontainer(struct jparser *jp, struct jv *out, bool obj)
{
        size_t cap = 0;
        out->t = obj ? J_OBJ : J_ARR;
        if (++jp->depth > 32)
                return jerr(jp, "nested too deeply");
        jp->p++; /* '{' or '[' */
        jws(jp);
        if (jp->p < jp->end && *jp->p == (obj ? '}' : ']')) {
                jp->p++;
                jp->depth--;
                return 0;
        }
        for (;;) {
                struct jv kid = {0};
                jws(jp);
                if (obj) {
                        if (jstring(jp, &kid) != 0)
                                return -1;
                        for (size_t i = 0; i < out->nkids; i += 2)
                                if (out->kids[i].n == kid.n &&
                                    memcmp(out->kids[i].s, kid.s, kid.n) == 0)
                                        return jerr(jp, "duplicate key");
                        if (jpush(out, &cap, &kid) != 0)
                                return jerr(jp, "out of memory");
                        jws(jp);
                        if (jp->p >= jp->end || *jp->p != ':')
                                return jerr(jp, "expected ':'");
                        jp->p++;
                        jws(jp);
                        memset(&kid, 0, sizeof(kid));
                }
                if (jvalue(jp, &kid) != 0) {
                        jfree(&kid);
                        return -1;
                }
                if (jpush(out, &cap, &kid) != 0) {
                        jfree(&kid);
                        return jerr(jp, "out of memory");
                }
                jws(jp);
                if (jp->p < jp->end && *jp->p == ',') {
                        jp->p++;
                        continue;
                }
                if (jp->p < jp->end && *jp->p == (obj ? '}' : ']')) {
                        jp->p++;
                        jp->depth--;
                        return 0;
                }
                return jerr(jp, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
}

static int jliteral(struct jparser *jp, struct jv *out, const char *lit, enum jtype t)
{
        size_t n = strlen(lit);
        if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, lit, n) != 0)
                return jerr(jp, "unexpected character");
        jp->p += n;
        out->t = t;
        return 0;
}

static int jvalue(struct jparser *jp, struct jv *out)
{
        jws(jp);
        if (jp->p >= jp->end)
                return jerr(jp, "unexpected end of input");
        switch (*jp->p) {
        case '{':
                return jcontainer(jp, out, true);
        case '[':
                return jcontainer(jp, out, false);
        case '"':
                return jstring(jp, out);
        case 't':
                return jliteral(jp, out, "true", J_TRUE);
        case 'f':
                return jliteral(jp, out, "false", J_FALSE);
        case 'n':
                return jliteral(jp, out, "null", J_NULL);
        default:
                return jnumber(jp, out);
        }
}

/* Parses the whole of buf[0..len) as one JSON value; on failure says where and why (when
 * verbose). */
static int jparse(const char *buf, size_t len, struct jv *out, bool verbose)
{
        struct jparser jp = {buf, buf, buf + len, 0, NULL};
        memset(out, 0, sizeof(*out));
        if (jvalue(&jp, out) == 0) {
                jws(&jp);
                if (jp.p == jp.end)
                        return 0;
                jerr(&jp, "trailing bytes after the value");
        }
        if (verbose)
                fprintf(stderr, "  json: %s at byte %zu\n", jp.err ? jp.err : "error",
                        (size_t)(jp.p - jp.start));
        jfree(out);
        return -1;
}

static const struct jv *jget(const struct jv *obj, const char *key)
{
        if (!obj || obj->t != J_OBJ)
                return NULL;
        size_t n = strlen(key);
        for (size_t i = 0; i + 1 < obj->nkids; i += 2)
                if (obj->kids[i].n == n && memcmp(obj->kids[i].s, key, n) == 0)
                        return &obj->kids[i + 1];
        return NULL;
}

/* ------------------------------------------------------------------------------------------ */

struct bytes {
        uint8_t *p;
        size_t n;
};

/* A hex string field: 0 and the bytes (caller frees b->p), 1 when absent, -1 when malformed. */
static int hexfield(const struct jv *obj, const char *key, struct bytes *b)
{
        b->p = NULL;
        b->n = 0;
        const struct jv *v = jget(obj, key);
        if (!v)
                return 1;
        if (v->t != J_STR || v->n % 2 != 0)
                return -1;
        b->n = v->n / 2;
        b->p = malloc(b->n ? b->n : 1);
        if (!b->p)
                return -1;
        if (chp_hex_decode(v->s, v->n, b->p, b->n) != 0) {
                free(b->p);
                b->p = NULL;
                return -1;
        }
        return 0;
}

static void dump(const char *what, const uint8_t *p, size_t n)
{
        fprintf(stderr, "    %s (%zu):", what, n);
        for (size_t i = 0; i < n && i < 96; i++)
                fprintf(stderr, "%02x", p[i]);
        fprintf(stderr, "%s\n", n > 96 ? "..." : "");
}

static bool same(const char *what, const uint8_t *got, size_t gn, const struct bytes *want)
{
        if (gn == want->n && (gn == 0 || memcmp(got, want->p, gn) == 0))
                return true;
        fprintf(stderr, "  mismatch in %s\n", what);
        dump("got ", got, gn);
        dump("want", want->p, want->n);
        return false;
}

enum vec_result { VEC_FAILED = -1, VEC_SKIPPED = 0, VEC_UNAVAILABLE = 1, VEC_PASSED = 2 };

/* Runs one vector in both roles. */
static enum vec_result run_vector(const struct jv *v, size_t idx, int *combo)
{
        const struct jv *jn = jget(v, "protocol_name");
        const struct jv *msgs = jget(v, "messages");
        char name[96];
        if (!jn || jn->t != J_STR || jn->n >= sizeof(name) || !msgs || msgs->t != J_ARR) {
                fprintf(stderr, "  vector %zu: no protocol_name or messages\n", idx);
                return VEC_FAILED;
        }
        memcpy(name, jn->s, jn->n);
        name[jn->n] = '\0';
        enum chp_noise_pattern pat;
        struct chp_noise_suite su;
        if (chp_noise_parse_name(name, &pat, &su) != 0)
                return VEC_SKIPPED;
        *combo = (int)pat * NSUITES + suite_index(su);
        if (!chp_noise_suite_available(su))
                return VEC_UNAVAILABLE;

        enum vec_result res = VEC_FAILED;
        struct bytes ipro = {0}, rpro = {0}, ie = {0}, re = {0}, is = {0}, rs = {0}, irs = {0},
                     hh = {0}, pay = {0}, ct = {0};
        struct chp_noise_hs I, R;
        struct chp_noise_cs isend, irecv, rsend, rrecv;
        memset(&I, 0, sizeof(I));
        memset(&R, 0, sizeof(R));
        memset(&isend, 0, sizeof(isend));
        memset(&irecv, 0, sizeof(irecv));
        memset(&rsend, 0, sizeof(rsend));
        memset(&rrecv, 0, sizeof(rrecv));
        uint8_t *out = malloc(CHP_NOISE_MSGMAX), *back = malloc(CHP_NOISE_MSGMAX);
        if (!out || !back)
                goto out;

        if (hexfield(v, "init_prologue", &ipro) != 0 || hexfield(v, "resp_prologue", &rpro) != 0 ||
            hexfield(v, "init_ephemeral", &ie) != 0 || hexfield(v, "resp_ephemeral", &re) != 0 ||
            hexfield(v, "resp_static", &rs) != 0 || hexfield(v, "handshake_hash", &hh) != 0 ||
            (init_has_s(pat) && hexfield(v, "init_static", &is) != 0) ||
            (init_has_rs(pat) && hexfield(v, "init_remote_static", &irs) != 0) ||
            ie.n != CHP_KEY_BYTES || re.n != CHP_KEY_BYTES || rs.n != CHP_KEY_BYTES ||
            (init_has_s(pat) && is.n != CHP_KEY_BYTES) ||
            (init_has_rs(pat) && irs.n != CHP_KEY_BYTES)) {
                fprintf(stderr, "  vector %zu (%s): a key field is missing or malformed\n", idx,
                        name);
                goto out;
        }
        if (chp_noise_hs_init(&I, pat, su, true, ipro.p, ipro.n, init_has_s(pat) ? is.p : NULL,
                              init_has_rs(pat) ? irs.p : NULL) != 0 ||
            chp_noise_hs_init(&R, pat, su, false, rpro.p, rpro.n, rs.p, NULL) != 0) {
                fprintf(stderr, "  vector %zu (%s): hs_init failed\n", idx, name);
                goto out;
        }
        chp_noise_hs_fix_ephemeral(&I, ie.p);
        chp_noise_hs_fix_ephemeral(&R, re.p);

        bool split = false;
        for (size_t i = 0; i < msgs->nkids; i++) {
                const struct jv *m = &msgs->kids[i];
                free(pay.p);
                free(ct.p);
                pay.p = ct.p = NULL;
                if (hexfield(m, "payload", &pay) != 0 || hexfield(m, "ciphertext", &ct) != 0) {
                        fprintf(stderr, "  vector %zu (%s): message %zu malformed\n", idx, name, i);
                        goto out;
                }
                bool from_i = i % 2 == 0; /* senders alternate throughout */
                size_t n = 0, pn = 0;
                char what[64];
                snprintf(what, sizeof(what), "message %zu (%s)", i, from_i ? "i->r" : "r->i");
                if (!split) {
                        struct chp_noise_hs *s = from_i ? &I : &R, *r = from_i ? &R : &I;
                        if (!chp_noise_hs_my_turn(s) || chp_noise_hs_my_turn(r)) {
                                fprintf(stderr, "  vector %zu (%s): turn wrong at %zu\n", idx, name,
                                        i);
                                goto out;
                        }
                        int rc = chp_noise_hs_write(s, pay.p, pay.n, out, CHP_NOISE_MSGMAX, &n);
                        if (rc != 0 || !same(what, out, n, &ct)) {
                                fprintf(stderr, "  vector %zu (%s): write rc %d\n", idx, name, rc);
                                goto out;
                        }
                        rc = chp_noise_hs_read(r, ct.p, ct.n, back, CHP_NOISE_MSGMAX, &pn);
                        if (rc != 0 || !same(what, back, pn, &pay)) {
                                fprintf(stderr, "  vector %zu (%s): read rc %d\n", idx, name, rc);
                                goto out;
                        }
                        if (chp_noise_hs_done(&I) != chp_noise_hs_done(&R))
                                goto out;
                        if (!chp_noise_hs_done(&I))
                                continue;
                        /* the handshake is over: what each side learnt, then Split */
                        uint8_t k[CHP_KEY_BYTES], pub[CHP_KEY_BYTES];
                        if (chp_noise_public(rs.p, pub) != 0 ||
                            chp_noise_hs_remote_static(&I, k) != 0 ||
                            memcmp(k, pub, sizeof(k)) != 0) {
                                fprintf(stderr, "  vector %zu (%s): initiator's rs\n", idx, name);
                                goto out;
                        }
                        if (init_has_s(pat) && (chp_noise_public(is.p, pub) != 0 ||
                                                chp_noise_hs_remote_static(&R, k) != 0 ||
                                                memcmp(k, pub, sizeof(k)) != 0)) {
                                fprintf(stderr, "  vector %zu (%s): responder's rs\n", idx, name);
                                goto out;
                        }
                        uint8_t hi[CHP_NOISE_HASHMAX], hr[CHP_NOISE_HASHMAX];
                        size_t hin = 0, hrn = 0;
                        if (chp_noise_hs_split(&I, &isend, &irecv, hi, &hin) != 0 ||
                            chp_noise_hs_split(&R, &rsend, &rrecv, hr, &hrn) != 0 ||
                            !same("handshake hash (initiator)", hi, hin, &hh) ||
                            !same("handshake hash (responder)", hr, hrn, &hh)) {
                                fprintf(stderr, "  vector %zu (%s): split\n", idx, name);
                                goto out;
                        }
                        split = true;
                        continue;
                }
                struct chp_noise_cs *s = from_i ? &isend : &rsend, *r = from_i ? &rrecv : &irecv;
                if (chp_noise_encrypt(s, NULL, 0, pay.p, pay.n, out) != 0 ||
                    !same(what, out, pay.n + CHP_NOISE_TAGLEN, &ct) ||
                    chp_noise_decrypt(r, NULL, 0, ct.p, ct.n, back) != 0 ||
                    !same(what, back, ct.n - CHP_NOISE_TAGLEN, &pay)) {
                        fprintf(stderr, "  vector %zu (%s): transport %s\n", idx, name, what);
                        goto out;
                }
        }
        if (!split) {
                fprintf(stderr, "  vector %zu (%s): the handshake never finished\n", idx, name);
                goto out;
        }
        res = VEC_PASSED;
out:
        chp_noise_hs_wipe(&I);
        chp_noise_hs_wipe(&R);
        chp_noise_cs_wipe(&isend);
        chp_noise_cs_wipe(&irecv);
        chp_noise_cs_wipe(&rsend);
        chp_noise_cs_wipe(&rrecv);
        struct bytes *all[] = {&ipro, &rpro, &ie, &re, &is, &rs, &irs, &hh, &pay, &ct};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
                free(all[i]->p);
        free(out);
        free(back);
        return res;
}

static bool vectors_missing;

static char *read_whole(const char *path, size_t *len)
{
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t n = 0, cap = 0;
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 1 << 20;
                        char *nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return NULL;
                        }
                        buf = nb;
                }
                size_t r = fread(buf + n, 1, cap - n, f);
                if (r == 0)
                        break;
                n += r;
        }
        bool bad = ferror(f);
        fclose(f);
        if (bad) {
                free(buf);
                return NULL;
        }
        *len = n;
        return buf;
}

/* ../shared/vectors/noise/cacophony.txt beside the repository this file is in. */
static void default_vectors_path(char *out, size_t cap)
{
        const char *file = __FILE__, *slash = strrchr(file, '/');
        size_t dir = slash ? (size_t)(slash - file) : 0; /* .../tests */
        snprintf(out, cap, "%.*s%s../../shared/vectors/noise/cacophony.txt", (int)dir, file,
                 dir ? "/" : "");
}

TEST(cacophony_vectors)
{
        char path[4096];
        const char *env = getenv("CHAPAR_NOISE_VECTORS");
        if (env && *env)
                snprintf(path, sizeof(path), "%s", env);
        else
                default_vectors_path(path, sizeof(path));
        size_t len = 0;
        char *text = read_whole(path, &len);
        if (!text) {
                fprintf(stderr, "  cannot read the noise vectors at %s\n", path);
                if (getenv("CI")) {
                        CHECK(!"the noise vectors must be present under CI");
                } else {
                        vectors_missing = true;
                }
                return;
        }
        struct jv root;
        int prc = jparse(text, len, &root, true);
        CHECK_OK(prc);
        if (prc != 0) {
                free(text);
                return;
        }
        const struct jv *vecs = jget(&root, "vectors");
        CHECK(vecs && vecs->t == J_ARR && vecs->nkids > 0);

        int ran[NPATTERNS * NSUITES] = {0}, unavailable[NPATTERNS * NSUITES] = {0};
        int total = 0, skipped = 0, failed = 0;
        for (size_t i = 0; vecs && vecs->t == J_ARR && i < vecs->nkids; i++) {
                int combo = -1;
                enum vec_result r = run_vector(&vecs->kids[i], i, &combo);
                if (r == VEC_SKIPPED) {
                        skipped++;
                } else if (r == VEC_UNAVAILABLE) {
                        unavailable[combo]++;
                } else if (r == VEC_PASSED) {
                        ran[combo]++;
                        total++;
                } else {
                        failed++;
                }
        }
        printf("ran %d vectors (by suite:", total);
        for (int p = 0; p < NPATTERNS; p++)
                for (int s = 0; s < NSUITES; s++)
                        printf(" Noise_%s_25519_%s=%d%s", pattern_names[p], suite_names[s],
                               ran[p * NSUITES + s],
                               unavailable[p * NSUITES + s] ? " (no AES-NI here)" : "");
        printf("); %d failed, %d of other patterns/suites skipped\n", failed, skipped);
        CHECK_EQ(failed, 0);
        CHECK(total > 0);
        /* every implemented pattern and suite this machine can run has a vector that ran */
        for (int p = 0; p < NPATTERNS; p++) {
                for (int s = 0; s < NSUITES; s++) {
                        if (!chp_noise_suite_available(all_suites[s]))
                                continue;
                        if (ran[p * NSUITES + s] == 0)
                                fprintf(stderr, "  no vector ran for Noise_%s_25519_%s\n",
                                        pattern_names[p], suite_names[s]);
                        CHECK(ran[p * NSUITES + s] > 0);
                }
        }
        jfree(&root);
        free(text);
}

TEST(json_reader_is_strict)
{
        static const char *const bad[] = {
            "",      "{",          "{\"a\":}",   "{\"a\":1,}",
            "[1 2]", "{\"a\":1}x", "\"a\\\"b\"", "{\"a\":1,\"a\":2}",
            "[01]",  "tru",        "{a:1}",      "[\"\x01\"]",
            "[1.]",  "-",
        };
        static const char *const good[] = {
            "{}", "[]", " {\"a\": [\"00ff\", {}, [], 1, -0.5e3, true, false, null]} ", "\"x\""};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct jv v;
                CHECK_EQ(jparse(bad[i], strlen(bad[i]), &v, false), -1);
        }
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                struct jv v;
                CHECK_OK(jparse(good[i], strlen(good[i]), &v, true));
                jfree(&v);
        }
}

int main(void)
{
        if (sodium_init() < 0) {
                fprintf(stderr, "sodium_init failed\n");
                return 1;
        }
        int passed, failed = harness_run(&passed);
        if (vectors_missing && failed == 0) {
                printf("%d passed, %d failed\n", passed, failed);
                HARNESS_SKIP("the Noise test vectors are missing (set CHAPAR_NOISE_VECTORS)");
        }
        return harness_report(passed, failed);
}
