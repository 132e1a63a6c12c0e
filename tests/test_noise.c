/* Noise (common/noise.c): every cacophony vector of the implemented patterns and suites, byte for
 * byte in both directions (handshake messages, handshake hash, transport messages), then the
 * behaviour the vectors cannot show: pinned keys that do not match, low-order keys, truncated,
 * replayed and reordered messages, tampered transport messages, wrong turns, nonce exhaustion,
 * Rekey, and that secrets are gone after wipe and split.
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

static const struct chp_noise_suite all_suites[] = {
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
    {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256},
};
#define NSUITES 3
static const enum chp_noise_pattern all_patterns[] = {CHP_NOISE_NK, CHP_NOISE_XX, CHP_NOISE_IK};
#define NPATTERNS 3
static const char *const pattern_names[] = {"NK", "XX", "IK"};
static const char *const suite_names[] = {"ChaChaPoly_BLAKE2b", "AESGCM_SHA256",
                                          "ChaChaPoly_SHA256"};

static int suite_index(struct chp_noise_suite s)
{
        for (int i = 0; i < NSUITES; i++)
                if (all_suites[i].cipher == s.cipher && all_suites[i].hash == s.hash)
                        return i;
        return -1;
}

static int nmsgs(enum chp_noise_pattern p)
{
        return p == CHP_NOISE_XX ? 3 : 2;
}

static bool init_has_s(enum chp_noise_pattern p)
{
        return p != CHP_NOISE_NK;
}

static bool init_has_rs(enum chp_noise_pattern p)
{
        return p != CHP_NOISE_XX;
}

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

/* ------------------------------------------------------------------------------------------ */
/* Behaviour                                                                                   */

/* Deterministic keys, so a handshake can be replayed message for message. */
static void fixed_key(uint8_t k[CHP_KEY_BYTES], uint8_t seed)
{
        for (int i = 0; i < CHP_KEY_BYTES; i++)
                k[i] = (uint8_t)(seed + 37 * i);
}

struct pair {
        enum chp_noise_pattern pat;
        struct chp_noise_suite su;
        struct chp_noise_hs i, r;
        uint8_t is[CHP_KEY_BYTES], ipub[CHP_KEY_BYTES];
        uint8_t rs[CHP_KEY_BYTES], rpub[CHP_KEY_BYTES];
};

/* Both ends with fixed statics and ephemerals (eseed varies the ephemerals: another session);
 * pin replaces the responder key the initiator pins (NK, IK). */
static int pair_init(struct pair *p, enum chp_noise_pattern pat, struct chp_noise_suite su,
                     uint8_t eseed, const uint8_t *pin)
{
        uint8_t e[CHP_KEY_BYTES];
        memset(p, 0, sizeof(*p));
        p->pat = pat;
        p->su = su;
        fixed_key(p->is, 1);
        fixed_key(p->rs, 2);
        if (chp_noise_public(p->is, p->ipub) != 0 || chp_noise_public(p->rs, p->rpub) != 0)
                return -1;
        static const uint8_t prologue[] = "chapar test prologue";
        int rc = chp_noise_hs_init(&p->i, pat, su, true, prologue, sizeof(prologue),
                                   init_has_s(pat) ? p->is : NULL,
                                   init_has_rs(pat) ? (pin ? pin : p->rpub) : NULL);
        if (rc == 0)
                rc = chp_noise_hs_init(&p->r, pat, su, false, prologue, sizeof(prologue), p->rs,
                                       NULL);
        fixed_key(e, (uint8_t)(100 + eseed));
        chp_noise_hs_fix_ephemeral(&p->i, e);
        fixed_key(e, (uint8_t)(200 + eseed));
        chp_noise_hs_fix_ephemeral(&p->r, e);
        return rc;
}

/* Message k's payload: a few bytes that differ per message. */
static size_t payload_for(int k, uint8_t *buf)
{
        size_t n = (size_t)(3 + 5 * k);
        for (size_t j = 0; j < n; j++)
                buf[j] = (uint8_t)('a' + k + j);
        return n;
}

/* Writes message k (the sender is whoever's turn it is) into msg; reads it on the other side
 * when deliver is set. Returns the first failing code. */
static int pair_step(struct pair *p, int k, uint8_t *msg, size_t cap, size_t *len, bool deliver)
{
        uint8_t pl[64], got[CHP_NOISE_MSGMAX];
        size_t pn = payload_for(k, pl), gn = 0;
        struct chp_noise_hs *s = k % 2 == 0 ? &p->i : &p->r, *r = k % 2 == 0 ? &p->r : &p->i;
        int rc = chp_noise_hs_write(s, pl, pn, msg, cap, len);
        if (rc != 0 || !deliver)
                return rc;
        rc = chp_noise_hs_read(r, msg, *len, got, sizeof(got), &gn);
        if (rc == 0 && (gn != pn || memcmp(got, pl, pn) != 0))
                return -9999;
        return rc;
}

/* Runs the pair's first k messages. */
static int pair_advance(struct pair *p, int k)
{
        uint8_t msg[512];
        size_t len;
        for (int j = 0; j < k; j++) {
                int rc = pair_step(p, j, msg, sizeof(msg), &len, true);
                if (rc != 0)
                        return rc;
        }
        return 0;
}

static bool all_zero(const void *p, size_t n)
{
        return sodium_is_zero(p, n) == 1;
}

/* A wiped or failed handshake: every byte zero, refusing every further call. */
static bool hs_dead(struct chp_noise_hs *hs)
{
        uint8_t buf[256], pl[16];
        size_t n = 1;
        return all_zero(hs, sizeof(*hs)) && !chp_noise_hs_my_turn(hs) && !chp_noise_hs_done(hs) &&
               chp_noise_hs_write(hs, NULL, 0, buf, sizeof(buf), &n) == -EINVAL && n == 0 &&
               chp_noise_hs_read(hs, buf, 64, pl, sizeof(pl), &n) == -EINVAL;
}

TEST(names)
{
        enum chp_noise_pattern p;
        struct chp_noise_suite s;
        char buf[64];
        for (int i = 0; i < NPATTERNS; i++) {
                for (int j = 0; j < NSUITES; j++) {
                        char want[64];
                        snprintf(want, sizeof(want), "Noise_%s_25519_%s", pattern_names[i],
                                 suite_names[j]);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, sizeof(buf)),
                                 (long long)strlen(want));
                        CHECK(strcmp(buf, want) == 0);
                        REQUIRE_OK(chp_noise_parse_name(want, &p, &s));
                        CHECK(p == all_patterns[i]);
                        CHECK(s.cipher == all_suites[j].cipher && s.hash == all_suites[j].hash);
                        size_t n = strlen(want);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, n), -ENOSPC);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, n + 1),
                                 (long long)n);
                }
        }
        static const char *const refused[] = {
            "Noise_XX_448_ChaChaPoly_BLAKE2b",   "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
            "Noise_NN_25519_ChaChaPoly_BLAKE2b", "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            "Noise_XX_25519_AESGCM_BLAKE2b",     "Noise_XX_25519_ChaChaPoly_BLAKE2b ",
            "Noise_XX_25519_ChaChaPoly_BLAKE",   "noise_XX_25519_ChaChaPoly_BLAKE2b",
            "Noise_KK_25519_AESGCM_SHA256",      "",
        };
        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
                CHECK_EQ(chp_noise_parse_name(refused[i], &p, &s), -EINVAL);
        CHECK_EQ(chp_noise_parse_name(NULL, &p, &s), -EINVAL);
        struct chp_noise_suite aes_blake = {CHP_NOISE_AESGCM, CHP_NOISE_BLAKE2B};
        CHECK_EQ(chp_noise_name(CHP_NOISE_XX, aes_blake, buf, sizeof(buf)), -EINVAL);
        CHECK(!chp_noise_suite_available(aes_blake));
        CHECK(chp_noise_suite_available(all_suites[0]));
        CHECK(chp_noise_suite_available(all_suites[2]));
        CHECK_EQ(chp_noise_suite_available(all_suites[1]), crypto_aead_aes256gcm_is_available());
}

TEST(keypair_public)
{
        uint8_t a[CHP_KEY_BYTES], apub[CHP_KEY_BYTES], b[CHP_KEY_BYTES],
            bpub[CHP_KEY_BYTES], again[CHP_KEY_BYTES];
        chp_noise_keypair(a, apub);
        chp_noise_keypair(b, bpub);
        CHECK(memcmp(a, b, sizeof(a)) != 0 && memcmp(apub, bpub, sizeof(apub)) != 0);
        CHECK_OK(chp_noise_public(a, again));
        CHECK(memcmp(again, apub, sizeof(again)) == 0);
        CHECK_EQ(chp_noise_public(NULL, again), -EINVAL);
        sodium_memzero(a, sizeof(a));
        sodium_memzero(b, sizeof(b));
}

/* Every pattern and suite with random keys, then transport both ways, in place too. */
TEST(handshake_and_transport_all)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                for (int si = 0; si < NSUITES; si++) {
                        enum chp_noise_pattern pat = all_patterns[pi];
                        struct chp_noise_suite su = all_suites[si];
                        if (!chp_noise_suite_available(su))
                                continue;
                        uint8_t is[32], ipub[32], rs[32], rpub[32], k[32];
                        chp_noise_keypair(is, ipub);
                        chp_noise_keypair(rs, rpub);
                        struct chp_noise_hs I, R;
                        REQUIRE_OK(chp_noise_hs_init(&I, pat, su, true, NULL, 0,
                                                     init_has_s(pat) ? is : NULL,
                                                     init_has_rs(pat) ? rpub : NULL));
                        REQUIRE_OK(chp_noise_hs_init(&R, pat, su, false, NULL, 0, rs, NULL));
                        CHECK_EQ(chp_noise_hs_remote_static(&R, k), -ENOENT);
                        for (int m = 0; m < nmsgs(pat); m++) {
                                uint8_t msg[256], pl[64], got[64];
                                size_t n, pn = payload_for(m, pl), gn;
                                struct chp_noise_hs *s = m % 2 ? &R : &I, *r = m % 2 ? &I : &R;
                                CHECK(chp_noise_hs_my_turn(s) && !chp_noise_hs_my_turn(r));
                                CHECK(!chp_noise_hs_done(s) && !chp_noise_hs_done(r));
                                REQUIRE_OK(chp_noise_hs_write(s, pl, pn, msg, sizeof(msg), &n));
                                REQUIRE_OK(chp_noise_hs_read(r, msg, n, got, sizeof(got), &gn));
                                CHECK(gn == pn && memcmp(got, pl, pn) == 0);
                        }
                        CHECK(chp_noise_hs_done(&I) && chp_noise_hs_done(&R));
                        CHECK(!chp_noise_hs_my_turn(&I) && !chp_noise_hs_my_turn(&R));
                        /* what each side learnt of the other */
                        CHECK_OK(chp_noise_hs_remote_static(&I, k));
                        CHECK(memcmp(k, rpub, 32) == 0);
                        if (init_has_s(pat)) {
                                CHECK_OK(chp_noise_hs_remote_static(&R, k));
                                CHECK(memcmp(k, ipub, 32) == 0);
                        } else {
                                CHECK_EQ(chp_noise_hs_remote_static(&R, k), -ENOENT);
                        }
                        struct chp_noise_cs is_, ir, rs_, rr;
                        uint8_t hi[CHP_NOISE_HASHMAX], hr[CHP_NOISE_HASHMAX];
                        size_t hin, hrn;
                        REQUIRE_OK(chp_noise_hs_split(&I, &is_, &ir, hi, &hin));
                        REQUIRE_OK(chp_noise_hs_split(&R, &rs_, &rr, hr, &hrn));
                        CHECK_EQ(hin, su.hash == CHP_NOISE_BLAKE2B ? 64 : 32);
                        CHECK(hin == hrn && memcmp(hi, hr, hin) == 0);
                        /* the peer key survives Split; wipe ends it */
                        CHECK_OK(chp_noise_hs_remote_static(&I, k));
                        CHECK(memcmp(k, rpub, 32) == 0);
                        chp_noise_hs_wipe(&I);
                        CHECK_EQ(chp_noise_hs_remote_static(&I, k), -ENOENT);
                        chp_noise_hs_wipe(&R);

                        for (int j = 0; j < 6; j++) {
                                uint8_t buf[300], orig[284];
                                size_t len = (size_t)j * 47;
                                for (size_t b = 0; b < len; b++)
                                        orig[b] = buf[b] = (uint8_t)(b * 3 + (size_t)j);
                                struct chp_noise_cs *s = j % 2 ? &rs_ : &is_,
                                                    *r = j % 2 ? &ir : &rr;
                                /* in place both ways */
                                REQUIRE_OK(chp_noise_encrypt(s, NULL, 0, buf, len, buf));
                                CHECK(len == 0 || memcmp(buf, orig, len) != 0);
                                REQUIRE_OK(chp_noise_decrypt(r, NULL, 0, buf, len + 16, buf));
                                CHECK(len == 0 || memcmp(buf, orig, len) == 0);
                        }
                        CHECK(is_.n == 3 && rr.n == 3 && rs_.n == 3 && ir.n == 3);
                        chp_noise_cs_wipe(&is_);
                        chp_noise_cs_wipe(&ir);
                        chp_noise_cs_wipe(&rs_);
                        chp_noise_cs_wipe(&rr);
                        sodium_memzero(is, sizeof(is));
                        sodium_memzero(rs, sizeof(rs));
                }
        }
}

TEST(wrong_pinned_key)
{
        uint8_t other[32], other_pub[32], msg[256], pl[64];
        size_t n, pn;
        fixed_key(other, 9);
        REQUIRE_OK(chp_noise_public(other, other_pub));
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_IK};
                for (int pi = 0; pi < 2; pi++) {
                        struct pair p;
                        REQUIRE_OK(pair_init(&p, pats[pi], all_suites[si], 0, other_pub));
                        REQUIRE_OK(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n));
                        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                        CHECK_EQ(pn, 0);
                        CHECK(hs_dead(&p.r));
                        chp_noise_hs_wipe(&p.i);
                }
        }
}

/* Points of order 1, 2, 4 and 8 (libsodium's list): X25519 with any of them is all zeros. */
static const uint8_t low_order[][32] = {
    {0},
    {1},
    {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
     0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
     0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
    {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
     0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
     0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
};

TEST(low_order_keys)
{
        struct chp_noise_suite su = all_suites[0];
        for (size_t li = 0; li < sizeof(low_order) / sizeof(low_order[0]); li++) {
                const uint8_t *pt = low_order[li];
                uint8_t d[32], sk[32], msg[512], pl[128];
                size_t n, pn;
                fixed_key(sk, 5);
                REQUIRE(crypto_scalarmult(d, sk, pt) != 0); /* it really is low order */

                /* NK and IK responders: "es" with the peer's e fails on reading */
                enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_IK};
                for (int pi = 0; pi < 2; pi++) {
                        struct pair p;
                        REQUIRE_OK(pair_init(&p, pats[pi], su, 0, NULL));
                        REQUIRE_OK(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n));
                        memcpy(msg, pt, 32);
                        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                        CHECK(hs_dead(&p.r));
                        chp_noise_hs_wipe(&p.i);
                }
                /* XX: the responder takes e (nothing is keyed yet) and fails on "ee" */
                struct pair p;
                REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
                memcpy(msg, pt, 32);
                REQUIRE_OK(chp_noise_hs_read(&p.r, msg, 32, pl, sizeof(pl), &pn));
                CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, msg, sizeof(msg), &n), -EBADMSG);
                CHECK_EQ(n, 0);
                CHECK(hs_dead(&p.r));
                chp_noise_hs_wipe(&p.i);
                /* XX initiator: a reply whose e is low order fails on reading ("ee") */
                REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
                REQUIRE_OK(pair_step(&p, 0, msg, sizeof(msg), &n, true));
                REQUIRE_OK(pair_step(&p, 1, msg, sizeof(msg), &n, false));
                memcpy(msg, pt, 32);
                CHECK_EQ(chp_noise_hs_read(&p.i, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                CHECK(hs_dead(&p.i));
                chp_noise_hs_wipe(&p.r);
                /* a pinned low-order responder key fails the initiator's first write */
                for (int pi = 0; pi < 2; pi++) {
                        REQUIRE_OK(pair_init(&p, pats[pi], su, 0, pt));
                        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n), -EBADMSG);
                        CHECK(hs_dead(&p.i));
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

/* A pair run up to message k, message k written (not delivered) into msg, and the side that is
 * to read it. The receiver is built once and each damaged message goes to a copy of it (the
 * structs are plain values, noise.h): the same bytes a session replayed from scratch would hold,
 * without the key generation and the k messages before it for every bit or cut. */
static int pair_before(struct pair *p, enum chp_noise_pattern pat, struct chp_noise_suite su, int k,
                       uint8_t *msg, size_t cap, size_t *n, struct chp_noise_hs **rcv)
{
        int rc = pair_init(p, pat, su, 0, NULL);
        if (rc == 0)
                rc = pair_advance(p, k);
        if (rc == 0)
                rc = pair_step(p, k, msg, cap, n, false);
        *rcv = k % 2 ? &p->i : &p->r;
        return rc;
}

/* The copies' control: the undamaged message, read by a copy of the receiver, gives message k's
 * payload; so a refusal of a damaged one is the damage's doing. */
static bool copy_reads_intact(const struct chp_noise_hs *rcv, int k, const uint8_t *msg, size_t n)
{
        struct chp_noise_hs r = *rcv;
        uint8_t want[64], pl[512];
        size_t wn = payload_for(k, want), pn = 0;
        bool ok = chp_noise_hs_read(&r, msg, n, pl, sizeof(pl), &pn) == 0 && pn == wn &&
                  memcmp(pl, want, wn) == 0;
        chp_noise_hs_wipe(&r);
        return ok;
}

TEST(truncated_and_extended_messages)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                for (int k = 0; k < nmsgs(pat); k++) {
                        struct pair p;
                        struct chp_noise_hs *rcv, r;
                        uint8_t msg[512], pl[512];
                        size_t n, pn;
                        REQUIRE_OK(
                            pair_before(&p, pat, all_suites[0], k, msg, sizeof(msg) - 1, &n, &rcv));
                        CHECK(copy_reads_intact(rcv, k, msg, n));
                        /* XX's first message is e and a cleartext payload: only a cut into e
                         * shows; every other message is authenticated to its last byte */
                        bool open = pat == CHP_NOISE_XX && k == 0;
                        size_t bad_below = open ? 32 : n;
                        for (size_t cut = 0; cut < n; cut++) {
                                r = *rcv;
                                int rc = chp_noise_hs_read(&r, msg, cut, pl, sizeof(pl), &pn);
                                CHECK_EQ(rc, cut < bad_below ? -EBADMSG : 0);
                                if (rc != 0)
                                        CHECK(hs_dead(&r));
                                chp_noise_hs_wipe(&r);
                        }
                        if (!open) {
                                /* one byte too many is as bad */
                                r = *rcv;
                                msg[n] = 0;
                                CHECK_EQ(chp_noise_hs_read(&r, msg, n + 1, pl, sizeof(pl), &pn),
                                         -EBADMSG);
                                chp_noise_hs_wipe(&r);
                        }
                        chp_noise_hs_wipe(&p.i);
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

/* Every bit of every authenticated handshake message matters. */
TEST(flipped_handshake_bits)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                for (int k = 0; k < nmsgs(pat); k++) {
                        if (pat == CHP_NOISE_XX && k == 0)
                                continue; /* unauthenticated by design */
                        struct pair p;
                        struct chp_noise_hs *rcv, r;
                        uint8_t msg[512], pl[512];
                        size_t n, pn;
                        REQUIRE_OK(
                            pair_before(&p, pat, all_suites[2], k, msg, sizeof(msg), &n, &rcv));
                        CHECK(copy_reads_intact(rcv, k, msg, n));
                        int wrong = 0;
                        for (size_t bit = 0; bit < n * 8; bit++) {
                                r = *rcv;
                                msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                                wrong +=
                                    chp_noise_hs_read(&r, msg, n, pl, sizeof(pl), &pn) != -EBADMSG;
                                msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                                chp_noise_hs_wipe(&r);
                        }
                        CHECK_EQ(wrong, 0);
                        chp_noise_hs_wipe(&p.i);
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

TEST(replayed_and_reordered_messages)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                struct pair a, b;
                uint8_t m0[512], m1[512], m2[512], pl[512];
                size_t n0, n1, n2 = 0, pn;

                /* the same message read twice: the second is out of turn */
                REQUIRE_OK(pair_init(&a, pat, all_suites[0], 0, NULL));
                REQUIRE_OK(pair_step(&a, 0, m0, sizeof(m0), &n0, true));
                CHECK_EQ(chp_noise_hs_read(&a.r, m0, n0, pl, sizeof(pl), &pn), -EINVAL);
                REQUIRE_OK(pair_step(&a, 1, m1, sizeof(m1), &n1, true));
                CHECK_EQ(chp_noise_hs_read(&a.i, m1, n1, pl, sizeof(pl), &pn), -EINVAL);
                if (pat == CHP_NOISE_XX) {
                        REQUIRE_OK(pair_step(&a, 2, m2, sizeof(m2), &n2, true));
                        CHECK_EQ(chp_noise_hs_read(&a.r, m2, n2, pl, sizeof(pl), &pn), -EINVAL);
                }
                CHECK(chp_noise_hs_done(&a.i) && chp_noise_hs_done(&a.r));

                /* session a's reply replayed into session b (other ephemerals) */
                REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                REQUIRE_OK(pair_advance(&b, 1));
                CHECK_EQ(chp_noise_hs_read(&b.i, m1, n1, pl, sizeof(pl), &pn), -EBADMSG);
                CHECK(hs_dead(&b.i));
                chp_noise_hs_wipe(&b.r);
                if (pat == CHP_NOISE_XX) { /* and its third message */
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                        REQUIRE_OK(pair_advance(&b, 2));
                        CHECK_EQ(chp_noise_hs_read(&b.r, m2, n2, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.i);
                        chp_noise_hs_wipe(&b.r);
                }

                /* out of order: the reply read as a first message (XX's first message is
                 * unauthenticated, so there it is the third read as the second that fails) */
                if (pat != CHP_NOISE_XX) {
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                        CHECK_EQ(chp_noise_hs_read(&b.r, m1, n1, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.i);
                }
                if (pat == CHP_NOISE_XX) {
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 0, NULL));
                        REQUIRE_OK(pair_advance(&b, 1));
                        CHECK_EQ(chp_noise_hs_read(&b.i, m2, n2, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.r);
                }
                chp_noise_hs_wipe(&a.i);
                chp_noise_hs_wipe(&a.r);
        }
}

/* A finished pair's transport states. */
static int transport_pair(struct chp_noise_suite su, struct chp_noise_cs *isend,
                          struct chp_noise_cs *irecv, struct chp_noise_cs *rsend,
                          struct chp_noise_cs *rrecv)
{
        struct pair p;
        if (pair_init(&p, CHP_NOISE_XX, su, 0, NULL) != 0 || pair_advance(&p, 3) != 0)
                return -1;
        int rc = chp_noise_hs_split(&p.i, isend, irecv, NULL, NULL);
        if (rc == 0)
                rc = chp_noise_hs_split(&p.r, rsend, rrecv, NULL, NULL);
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);
        return rc;
}

TEST(transport_tampering_and_order)
{
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                struct chp_noise_cs is, ir, rs, rr;
                REQUIRE_OK(transport_pair(all_suites[si], &is, &ir, &rs, &rr));
                uint8_t ad[3] = {1, 2, 3}, m1[64], m2[64], out[64];
                const uint8_t plain[] = "a transport message";
                size_t len = sizeof(plain), clen = len + 16;
                REQUIRE_OK(chp_noise_encrypt(&is, ad, sizeof(ad), plain, len, m1));
                REQUIRE_OK(chp_noise_encrypt(&is, ad, sizeof(ad), plain, len, m2));
                CHECK(memcmp(m1, m2, clen) != 0); /* another nonce */
                int wrong = 0;
                for (size_t bit = 0; bit < clen * 8; bit++) {
                        m1[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                        wrong += chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out) != -EBADMSG;
                        wrong += rr.n != 0;
                        m1[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                }
                CHECK_EQ(wrong, 0);
                ad[0] ^= 1; /* the associated data is authenticated too */
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                ad[0] ^= 1;
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, 15, out), -EBADMSG);
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen - 1, out), -EBADMSG);
                /* out of order, then in order, then replayed */
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m2, clen, out), -EBADMSG);
                CHECK_EQ(rr.n, 0);
                CHECK_OK(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out));
                CHECK(memcmp(out, plain, len) == 0);
                CHECK_OK(chp_noise_decrypt(&rr, ad, sizeof(ad), m2, clen, out));
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                CHECK_EQ(rr.n, 2);
                /* the directions have different keys */
                CHECK_EQ(chp_noise_decrypt(&ir, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                chp_noise_cs_wipe(&is);
                chp_noise_cs_wipe(&ir);
                chp_noise_cs_wipe(&rs);
                chp_noise_cs_wipe(&rr);
        }
}

/* The nonce layouts the specification fixes: ChaChaPoly little-endian, AESGCM big-endian. */
TEST(nonce_encoding)
{
        for (int si = 0; si < NSUITES; si++) {
                struct chp_noise_suite su = all_suites[si];
                if (!chp_noise_suite_available(su))
                        continue;
                struct chp_noise_cs cs;
                memset(&cs, 0, sizeof(cs));
                cs.suite = su;
                fixed_key(cs.k, 77);
                cs.has_key = true;
                cs.n = 0x0102030405060708ull;
                uint8_t got[32], want[32], nonce[12] = {0};
                unsigned long long wl;
                REQUIRE_OK(chp_noise_encrypt(&cs, NULL, 0, (const uint8_t *)"x", 1, got));
                CHECK(cs.n == 0x0102030405060709ull);
                for (int i = 0; i < 8; i++)
                        nonce[su.cipher == CHP_NOISE_AESGCM ? 4 + i : 11 - i] = (uint8_t)(i + 1);
                if (su.cipher == CHP_NOISE_AESGCM)
                        crypto_aead_aes256gcm_encrypt(want, &wl, (const uint8_t *)"x", 1, NULL, 0,
                                                      NULL, nonce, cs.k);
                else
                        crypto_aead_chacha20poly1305_ietf_encrypt(want, &wl, (const uint8_t *)"x",
                                                                  1, NULL, 0, NULL, nonce, cs.k);
                CHECK(memcmp(got, want, 17) == 0);
                chp_noise_cs_wipe(&cs);
        }
}

TEST(nonce_exhaustion_and_rekey)
{
        for (int si = 0; si < NSUITES; si++) {
                struct chp_noise_suite su = all_suites[si];
                if (!chp_noise_suite_available(su))
                        continue;
                struct chp_noise_cs is, ir, rs, rr;
                REQUIRE_OK(transport_pair(su, &is, &ir, &rs, &rr));
                uint8_t c[32], p[16];
                /* n = 2^64-1 is never used: the last message is n = 2^64-2 */
                is.n = rr.n = UINT64_MAX - 1;
                CHECK_OK(chp_noise_encrypt(&is, NULL, 0, (const uint8_t *)"z", 1, c));
                CHECK_OK(chp_noise_decrypt(&rr, NULL, 0, c, 17, p));
                CHECK(is.n == UINT64_MAX && rr.n == UINT64_MAX);
                CHECK_EQ(chp_noise_encrypt(&is, NULL, 0, (const uint8_t *)"z", 1, c), -EBADMSG);
                CHECK_EQ(chp_noise_decrypt(&rr, NULL, 0, c, 17, p), -EBADMSG);
                CHECK(is.n == UINT64_MAX);

                /* Rekey = the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zeros) */
                uint8_t old[32], zeros[32] = {0}, want[48], nonce[12];
                unsigned long long wl;
                memcpy(old, rs.k, 32);
                memset(nonce, 0xff, sizeof(nonce));
                memset(nonce, 0, 4);
                if (su.cipher == CHP_NOISE_AESGCM)
                        crypto_aead_aes256gcm_encrypt(want, &wl, zeros, 32, NULL, 0, NULL, nonce,
                                                      old);
                else
                        crypto_aead_chacha20poly1305_ietf_encrypt(want, &wl, zeros, 32, NULL, 0,
                                                                  NULL, nonce, old);
                uint64_t n = rs.n;
                chp_noise_rekey(&rs);
                CHECK(memcmp(rs.k, want, 32) == 0);
                CHECK(rs.n == n); /* Rekey leaves n alone */
                /* one side rekeyed: nothing decrypts; both: it works again */
                CHECK_OK(chp_noise_encrypt(&rs, NULL, 0, (const uint8_t *)"y", 1, c));
                CHECK_EQ(chp_noise_decrypt(&ir, NULL, 0, c, 17, p), -EBADMSG);
                chp_noise_rekey(&ir);
                CHECK_OK(chp_noise_decrypt(&ir, NULL, 0, c, 17, p));
                CHECK(p[0] == 'y');
                sodium_memzero(old, sizeof(old));
                sodium_memzero(want, sizeof(want));
                chp_noise_cs_wipe(&is);
                chp_noise_cs_wipe(&ir);
                chp_noise_cs_wipe(&rs);
                chp_noise_cs_wipe(&rr);
        }
}

TEST(wrong_turn_and_early_split)
{
        struct pair p;
        struct chp_noise_cs s, r;
        uint8_t msg[512], other[512], pl[64], h[CHP_NOISE_HASHMAX];
        size_t n, n0, pn, hl;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, all_suites[0], 0, NULL));
        /* the responder may not speak first, nor the initiator read first */
        CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_read(&p.i, other, 48, pl, sizeof(pl), &pn), -EINVAL);
        REQUIRE_OK(pair_step(&p, 0, msg, sizeof(msg), &n0, false));
        /* the initiator wrote: it must not write again, nor split; the responder must read */
        CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &r, h, &hl), -EINVAL);
        CHECK(all_zero(&s, sizeof(s)) && all_zero(&r, sizeof(r)) && hl == 0);
        /* none of that hurt: the handshake goes on */
        REQUIRE_OK(chp_noise_hs_read(&p.r, msg, n0, pl, sizeof(pl), &pn));
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n0, pl, sizeof(pl), &pn), -EINVAL);
        REQUIRE_OK(pair_step(&p, 1, msg, sizeof(msg), &n, true));
        CHECK_EQ(chp_noise_hs_split(&p.r, &s, &r, h, &hl), -EINVAL);
        REQUIRE_OK(pair_step(&p, 2, msg, sizeof(msg), &n, true));
        /* done: no more handshake messages either way */
        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EINVAL);
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &s, h, &hl), -EINVAL);
        CHECK_OK(chp_noise_hs_split(&p.i, &s, &r, h, &hl));
        /* a split handshake is spent */
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &r, h, &hl), -EINVAL);
        CHECK(all_zero(&s, sizeof(s)));
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);
}

TEST(misuse)
{
        uint8_t k[32], pub[32], msg[CHP_NOISE_MSGMAX + 64], *pl = malloc(CHP_NOISE_MSGMAX);
        REQUIRE(pl);
        struct chp_noise_hs hs;
        struct chp_noise_suite su = all_suites[0];
        fixed_key(k, 3);
        REQUIRE_OK(chp_noise_public(k, pub));
        /* exactly the keys the pattern uses */
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_NK, su, true, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_NK, su, true, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_IK, su, true, NULL, 0, k, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, true, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, true, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, false, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_IK, su, false, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, (enum chp_noise_pattern)7, su, false, NULL, 0, k, NULL),
                 -EINVAL);
        struct chp_noise_suite aes_blake = {CHP_NOISE_AESGCM, CHP_NOISE_BLAKE2B};
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, aes_blake, false, NULL, 0, k, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, false, NULL, 5, k, NULL), -EINVAL);
        CHECK(hs_dead(&hs));
        CHECK_EQ(chp_noise_hs_init(NULL, CHP_NOISE_XX, su, false, NULL, 0, k, NULL), -EINVAL);

        /* room: -ENOSPC leaves the handshake as it was, so a retry works */
        struct pair p;
        size_t n = 7, pn = 7;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_IK, su, 0, NULL));
        CHECK_EQ(chp_noise_hs_write(&p.i, (const uint8_t *)"abc", 3, msg, 32 + 48 + 16 + 3 - 1, &n),
                 -ENOSPC);
        CHECK_EQ(n, 0);
        REQUIRE_OK(chp_noise_hs_write(&p.i, (const uint8_t *)"abc", 3, msg, 32 + 48 + 16 + 3, &n));
        CHECK_EQ(n, 32 + 48 + 16 + 3);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, 2, &pn), -ENOSPC);
        CHECK_EQ(pn, 0);
        REQUIRE_OK(chp_noise_hs_read(&p.r, msg, n, pl, 3, &pn));
        CHECK(pn == 3 && memcmp(pl, "abc", 3) == 0);
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);

        /* a handshake message is at most 65535 bytes */
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
        memset(pl, 'p', CHP_NOISE_MSGMAX);
        CHECK_EQ(chp_noise_hs_write(&p.i, pl, CHP_NOISE_MSGMAX - 31, msg, sizeof(msg), &n),
                 -EINVAL);
        REQUIRE_OK(chp_noise_hs_write(&p.i, pl, CHP_NOISE_MSGMAX - 32, msg, sizeof(msg), &n));
        CHECK_EQ(n, CHP_NOISE_MSGMAX);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, CHP_NOISE_MSGMAX + 1, pl, CHP_NOISE_MSGMAX, &pn),
                 -EBADMSG);
        chp_noise_hs_wipe(&p.i);

        /* transport: no key, too long */
        struct chp_noise_cs cs;
        memset(&cs, 0, sizeof(cs));
        CHECK_EQ(chp_noise_encrypt(&cs, NULL, 0, pl, 1, msg), -EINVAL);
        CHECK_EQ(chp_noise_decrypt(&cs, NULL, 0, msg, 17, pl), -EINVAL);
        chp_noise_rekey(&cs); /* no key: nothing to do */
        CHECK(all_zero(&cs, sizeof(cs)));
        cs.suite = su;
        fixed_key(cs.k, 4);
        cs.has_key = true;
        CHECK_EQ(chp_noise_encrypt(&cs, NULL, 0, pl, CHP_NOISE_PLAINMAX + 1, msg), -EINVAL);
        CHECK_OK(chp_noise_encrypt(&cs, NULL, 0, pl, CHP_NOISE_PLAINMAX, msg));
        CHECK_EQ(cs.n, 1);
        chp_noise_cs_wipe(&cs);
        chp_noise_cs_wipe(NULL);
        chp_noise_hs_wipe(NULL);
        free(pl);
}

TEST(secrets_gone_after_split_and_wipe)
{
        struct pair p;
        struct chp_noise_cs s, r;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_IK, all_suites[0], 0, NULL));
        REQUIRE_OK(pair_advance(&p, 2));
        CHECK(!all_zero(p.i.ck, sizeof(p.i.ck)) && !all_zero(p.i.e_priv, 32));
        REQUIRE_OK(chp_noise_hs_split(&p.i, &s, &r, NULL, NULL));
        /* after Split only the peer's public key is left */
        CHECK(all_zero(p.i.s_priv, sizeof(p.i.s_priv)) && all_zero(p.i.e_priv, 32) &&
              all_zero(p.i.s_pub, 32) && all_zero(p.i.e_pub, 32) && all_zero(p.i.re, 32));
        CHECK(all_zero(p.i.ck, sizeof(p.i.ck)) && all_zero(p.i.h, sizeof(p.i.h)));
        CHECK(all_zero(&p.i.cs, sizeof(p.i.cs)) && p.i.hashlen == 0 && !p.i.has_s);
        CHECK(p.i.has_rs && memcmp(p.i.rs, p.rpub, 32) == 0);
        CHECK(!chp_noise_hs_done(&p.i) && !chp_noise_hs_my_turn(&p.i));
        chp_noise_hs_wipe(&p.i);
        CHECK(all_zero(&p.i, sizeof(p.i)));
        CHECK(!all_zero(s.k, 32) && s.has_key);
        chp_noise_cs_wipe(&s);
        chp_noise_cs_wipe(&r);
        CHECK(all_zero(&s, sizeof(s)) && all_zero(&r, sizeof(r)));
        /* a handshake wiped midway */
        chp_noise_hs_wipe(&p.r);
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, all_suites[0], 0, NULL));
        REQUIRE_OK(pair_advance(&p, 1));
        chp_noise_hs_wipe(&p.r);
        CHECK(hs_dead(&p.r));
        chp_noise_hs_wipe(&p.i);
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
