/* Fuzz target for http_parse.c: the input is parsed as a request head. The result must be a
 * head length or one of the documented codes; a prefix of the input parses to -EAGAIN or the
 * same result, and so does the input fed in pieces (chp_http_parse_resume); a parsed head
 * points only inside the input and keeps every invariant of http_parse.h (known
 * method, a visible-ASCII target within CHP_HTTP_MAX_TARGET that is a path or, after an
 * absolute-form's valid authority, empty; HTTP/1.0 or 1.1, at most CHP_HTTP_MAX_HEADERS
 * token-named headers with trimmed CTL-free values). Every header value and the raw input then
 * go through each value parser, checked against its contract and, for base64 and metadata,
 * against an independent reference; a Content-Disposition built from the raw bytes is printable
 * ASCII with its name quoted safely. Anything else aborts. Linked with
 * libFuzzer, or with replay.c to run the committed corpus under ctest. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ensure(cond)                                                                               \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
        return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static bool is_tchar(unsigned char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_code(ssize_t rc)
{
        return rc == -EAGAIN || rc == CHP_EHTTP_BAD || rc == CHP_EHTTP_TARGET ||
               rc == CHP_EHTTP_HEADERS || rc == CHP_EHTTP_METHOD || rc == CHP_EHTTP_VERSION;
}

/* Parses the first len bytes from an exact-size copy, so ASan sees a read past len. */
static ssize_t parse_prefix(const uint8_t *data, size_t len)
{
        struct chp_http_request r;
        char *copy = malloc(len ? len : 1);
        ensure(copy);
        if (len)
                memcpy(copy, data, len);
        ssize_t rc = chp_http_parse_request(copy, len, &r);
        free(copy);
        return rc;
}

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
        static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t o = 0;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t q = (uint32_t)in[i] << 16;
                if (i + 1 < n)
                        q |= (uint32_t)in[i + 1] << 8;
                if (i + 2 < n)
                        q |= in[i + 2];
                out[o++] = a[q >> 18 & 63];
                out[o++] = a[q >> 12 & 63];
                out[o++] = i + 1 < n ? a[q >> 6 & 63] : '=';
                out[o++] = i + 2 < n ? a[q & 63] : '=';
        }
        return o;
}

/* Whether s is canonical base64: it decodes, and encoding the result gives s back. */
static bool check_base64(const char *s, size_t n)
{
        size_t cap = n / 4 * 3 + 3;
        uint8_t *out = malloc(cap);
        char *again = malloc(n + 4);
        ensure(out && again);
        ssize_t got = chp_http_base64_decode(s, n, out, cap);
        ensure(got == -EINVAL || (got >= 0 && (size_t)got <= cap));
        if (got >= 0) {
                ensure(b64_encode(out, (size_t)got, again) == n);
                ensure(n == 0 || memcmp(again, s, n) == 0);
                if (got > 0) /* one byte less room is refused */
                        ensure(chp_http_base64_decode(s, n, out, (size_t)got - 1) == -EINVAL);
        }
        free(out);
        free(again);
        return got >= 0;
}

static bool ows(char c)
{
        return c == ' ' || c == '\t';
}

/* Upload-Metadata, the slow obvious way: split on commas, trim, split on the first space. */
static int metadata_reference(const char *p, size_t n)
{
        size_t i = 0;
        while (i < n && ows(p[i]))
                i++;
        if (i == n)
                return 0;
        size_t npairs = 1;
        for (size_t k = 0; k < n; k++)
                npairs += p[k] == ',';
        size_t *ks = malloc(npairs * sizeof(*ks)), *kn = malloc(npairs * sizeof(*kn));
        ensure(ks && kn);
        int rc = 0;
        size_t start = 0;
        for (size_t e = 0; e < npairs && rc == 0; e++) {
                size_t stop = start;
                while (stop < n && p[stop] != ',')
                        stop++;
                size_t a = start, b = stop;
                start = stop + 1;
                while (a < b && ows(p[a]))
                        a++;
                while (b > a && ows(p[b - 1]))
                        b--;
                size_t sp = a;
                while (sp < b && p[sp] != ' ')
                        sp++;
                ks[e] = a;
                kn[e] = sp - a;
                if (kn[e] == 0)
                        rc = -EINVAL;
                for (size_t k = a; k < sp && rc == 0; k++)
                        if ((unsigned char)p[k] < 0x21 || p[k] == 0x7f)
                                rc = -EINVAL;
                if (rc == 0 && sp < b && !check_base64(p + sp + 1, b - sp - 1))
                        rc = -EINVAL;
                for (size_t f = 0; f < e && rc == 0; f++)
                        if (kn[f] == kn[e] && memcmp(p + ks[f], p + ks[e], kn[e]) == 0)
                                rc = -EINVAL;
        }
        free(ks);
        free(kn);
        return rc;
}

static bool is_all_digits(const char *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i] < '0' || p[i] > '9')
                        return false;
        return n > 0;
}

/* Runs every value parser on s and checks each contract. */
static void values(struct chp_http_str s)
{
        uint64_t v = 1;
        int rc = chp_http_parse_u64(s, &v);
        ensure(rc == 0 || (rc == -EINVAL && v == 0));
        if (rc == 0) {
                ensure(v <= INT64_MAX && is_all_digits(s.p, s.n));
                size_t z = 0;
                while (z + 1 < s.n && s.p[z] == '0')
                        z++;
                char dec[24];
                int w = snprintf(dec, sizeof(dec), "%" PRIu64, v);
                ensure(w > 0 && (size_t)w == s.n - z && memcmp(dec, s.p + z, s.n - z) == 0);
        }

        static const uint64_t lens[] = {0, 1, 2, 100, 10000, UINT64_MAX};
        int syntax = 0;
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                uint64_t first = 5, last = 5;
                rc = chp_http_parse_range(s, lens[i], &first, &last);
                ensure(rc == 0 || rc == -ERANGE || rc == -EINVAL);
                if (rc == 0)
                        ensure(first <= last && last < lens[i]);
                else
                        ensure(first == 0 && last == 0);
                ensure(lens[i] != 0 || rc != 0);
                /* whether it is malformed does not depend on the length */
                if (i == 0)
                        syntax = rc == -EINVAL;
                ensure(syntax == (rc == -EINVAL));
        }

        int algo = 9;
        uint8_t d[32];
        size_t dl = 9;
        memset(d, 0x5a, sizeof(d));
        rc = chp_http_parse_checksum(s, &algo, d, &dl);
        ensure(rc == 0 || rc == -EINVAL || rc == -ENOTSUP);
        if (rc == 0) {
                ensure((algo == 1 && dl == 20) || (algo == 256 && dl == 32));
                ensure(memcmp(s.p, algo == 1 ? "sha1 " : "sha256 ", algo == 1 ? 5 : 7) == 0);
        } else {
                ensure(algo == 0 && dl == 0);
        }
        for (size_t i = rc == 0 ? dl : 0; i < sizeof(d); i++)
                ensure(d[i] == 0);

        rc = chp_http_check_metadata(s);
        ensure(rc == 0 || rc == -EINVAL);
        ensure(rc == metadata_reference(s.p, s.n));

        static const char *const etags[] = {"abc", "", "W/", "*"};
        for (size_t i = 0; i < sizeof(etags) / sizeof(etags[0]); i++) {
                if (!chp_http_etag_matches(s, etags[i]))
                        continue;
                /* a match is "*" alone or the quoted tag somewhere in the value */
                char q[8];
                int w = snprintf(q, sizeof(q), "\"%s\"", etags[i]);
                const char *a = s.p, *b = s.p + s.n;
                while (a < b && ows(*a))
                        a++;
                while (b > a && ows(b[-1]))
                        b--;
                ensure((b - a == 1 && *a == '*') || memmem(s.p, s.n, q, (size_t)w) != NULL);
        }

        (void)check_base64(s.p, s.n);

        if (chp_http_check_host(s) == 0)
                for (size_t i = 0; i < s.n; i++)
                        ensure(s.p[i] > 0x20 && s.p[i] < 0x7f && !strchr("/@\"\\ ", s.p[i]));
        if (chp_http_if_range_matches(s, "abc")) {
                const char *a = s.p, *b = s.p + s.n;
                while (a < b && ows(*a))
                        a++;
                while (b > a && ows(b[-1]))
                        b--;
                ensure(b - a == 5 && memcmp(a, "\"abc\"", 5) == 0);
        }
        uint8_t val[64];
        size_t vn = 99;
        rc = chp_http_metadata_get(s, "filename", val, sizeof(val), &vn);
        ensure(rc == 0 || rc == -ENOENT || rc == -EINVAL);
        ensure(rc == 0 ? vn <= sizeof(val) : vn == 0);
        if (rc == 0 && vn > 0)
                ensure(memmem(s.p, s.n, "filename ", 9) != NULL);
        if (chp_http_media_type_ok(s)) {
                ensure(s.n <= CHP_HTTP_MEDIA_TYPE_MAX && memchr(s.p, '/', s.n));
                for (size_t i = 0; i < s.n; i++)
                        ensure(s.p[i] == '\t' || (s.p[i] >= 0x20 && s.p[i] < 0x7f));
        }
        char disp[CHP_HTTP_DISPOSITION_MAX];
        ssize_t dn = chp_http_content_disposition((const uint8_t *)s.p, s.n, disp, sizeof(disp));
        ensure(dn > 0 || (dn == -EINVAL && s.n == 0));
        if (dn > 0) {
                ensure((size_t)dn == strlen(disp) && (size_t)dn < sizeof(disp));
                ensure(memcmp(disp, "attachment; filename=\"", 22) == 0);
                for (ssize_t i = 0; i < dn; i++)
                        ensure(disp[i] >= 0x20 && disp[i] < 0x7f);
                /* the quoted name holds no quote or backslash: it ends at the next quote */
                const char *q = strchr(disp + 22, '"');
                ensure(q && !memchr(disp + 22, '\\', (size_t)(q - disp - 22)));
                ensure(q[1] == '\0' || strncmp(q + 1, "; filename*=UTF-8''", 19) == 0);
        }
}

static void check_head(const char *buf, size_t len, const struct chp_http_request *r)
{
        ensure((unsigned)r->method <= CHP_HTTP_PUT);
        ensure(inside(r->target.p, r->target.n, buf, len));
        ensure(r->target.n <= CHP_HTTP_MAX_TARGET);
        ensure(r->target.n == 0 ? r->authority.n > 0 : r->target.p[0] == '/');
        for (size_t i = 0; i < r->target.n; i++)
                ensure(r->target.p[i] >= 0x21 && r->target.p[i] <= 0x7e);
        if (r->authority.n) {
                ensure(inside(r->authority.p, r->authority.n, buf, len));
                ensure(r->authority.p + r->authority.n <= r->target.p);
                ensure(chp_http_check_host(r->authority) == 0 && r->authority.p[0] != ':');
        }
        ensure(r->minor == 0 || r->minor == 1);
        ensure(r->nheaders <= CHP_HTTP_MAX_HEADERS);
        ensure(buf[len - 1] == '\n');

        const char *prev = r->target.p + r->target.n;
        for (size_t h = 0; h < r->nheaders; h++) {
                struct chp_http_str name = r->headers[h].name, value = r->headers[h].value;
                ensure(inside(name.p, name.n, buf, len) && inside(value.p, value.n, buf, len));
                ensure(name.p > prev && value.p > name.p + name.n);
                prev = value.p + value.n;
                ensure(name.n >= 1 && name.p[name.n] == ':');
                for (size_t i = 0; i < name.n; i++)
                        ensure(is_tchar((unsigned char)name.p[i]));
                for (size_t i = 0; i < value.n; i++) {
                        unsigned char c = (unsigned char)value.p[i];
                        ensure(c == '\t' || (c >= 0x20 && c != 0x7f));
                }
                ensure(value.n == 0 || (!ows(value.p[0]) && !ows(value.p[value.n - 1])));

                char key[CHP_HTTP_MAX_HEAD + 1];
                memcpy(key, name.p, name.n);
                key[name.n] = '\0';
                const struct chp_http_str *first = chp_http_header(r, key);
                ensure(first && first <= &r->headers[h].value);
                ensure(chp_http_header_count(r, key) >= 1);
                ensure(chp_http_str_ieq(name, key));
                values(value);
        }
}

/* The same bytes fed to chp_http_parse_resume a byte at a time, then in pieces the input picks:
 * the same result and, for a head, the same request; every byte given is taken in. */
static void check_pieces(const char *buf, size_t size, ssize_t rc, const struct chp_http_request *r)
{
        for (int pass = 0; pass < 2; pass++) {
                struct chp_http_parser ps;
                struct chp_http_request p;
                chp_http_parser_init(&ps);
                ssize_t got = -EAGAIN;
                for (size_t len = 0; got == -EAGAIN && len < size;) {
                        size_t step = pass == 0 ? 1 : 1 + (unsigned char)buf[len] % 61;
                        len = step < size - len ? len + step : size;
                        got = chp_http_parse_resume(&ps, buf, len, &p);
                        ensure(got != -EAGAIN || ps.pos == len);
                }
                ensure(got == rc);
                if (rc <= 0)
                        continue;
                ensure(p.method == r->method && p.minor == r->minor &&
                       p.nheaders == r->nheaders && p.target.p == r->target.p &&
                       p.target.n == r->target.n && p.authority.p == r->authority.p &&
                       p.authority.n == r->authority.n);
                for (size_t k = 0; k < r->nheaders; k++)
                        ensure(p.headers[k].name.p == r->headers[k].name.p &&
                               p.headers[k].name.n == r->headers[k].name.n &&
                               p.headers[k].value.p == r->headers[k].value.p &&
                               p.headers[k].value.n == r->headers[k].value.n);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *buf = (const char *)data;
        struct chp_http_request r;
        ssize_t rc = chp_http_parse_request(buf, size, &r);
        ensure(rc > 0 || is_code(rc));
        ensure(rc != -EAGAIN || size < CHP_HTTP_MAX_HEAD);
        if (rc > 0) {
                ensure((size_t)rc <= size && rc <= CHP_HTTP_MAX_HEAD);
                check_head(buf, (size_t)rc, &r);
                /* the head alone parses the same; one byte less needs more */
                ensure(parse_prefix(data, (size_t)rc) == rc);
                ensure(parse_prefix(data, (size_t)rc - 1) == -EAGAIN);
                ensure(parse_prefix(data, (size_t)rc / 2) == -EAGAIN);
        } else {
                ensure(r.nheaders == 0 && r.target.p == NULL && r.authority.p == NULL);
                ssize_t half = parse_prefix(data, size / 2);
                ensure(half == -EAGAIN || half == rc);
                if (size > 0)
                        ensure(parse_prefix(data, size - 1) == -EAGAIN ||
                               parse_prefix(data, size - 1) == rc);
        }
        check_pieces(buf, size, rc, &r);
        values((struct chp_http_str){buf, size});
        return 0;
}
