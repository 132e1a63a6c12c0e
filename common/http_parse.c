/* http_parse.c — the request-head parser and header-value parsers of http_parse.h.
 *
 *   request-head  = [ CRLF ] request-line *( field-line CRLF ) CRLF      (RFC 9112 2.1, 2.2)
 *   request-line  = method SP request-target SP HTTP-version CRLF
 *   method        = token  ; GET HEAD POST PATCH DELETE OPTIONS PUT, case-sensitive
 *   request-target= origin-form / absolute-form             ; <= 2048 bytes  (RFC 9112 3.2)
 *   origin-form   = "/" *( %x21-7E )
 *   absolute-form = ( "http" / "https" ) "://" authority [ "/" *( %x21-7E ) ] [ ( "?" / "#" ) ... ]
 *   authority     = uri-host [ ":" port ]                  ; no userinfo; see chp_http_check_host
 *   HTTP-version  = "HTTP/1.0" / "HTTP/1.1"                ; other "HTTP/" DIGIT "." DIGIT: 505
 *   field-line    = token ":" OWS field-value OWS          ; no obs-fold, no space before ':'
 *   field-value   = *( VCHAR / obs-text / SP / HTAB )
 *   CRLF          = CR LF / LF                             ; a bare LF ends a line too
 *
 * The parser is one left-to-right pass that stops at the first byte that decides an error, so
 * a prefix of any input parses to -EAGAIN or to the same result as the whole input. Only the
 * first CHP_HTTP_MAX_HEAD bytes are ever looked at.
 *
 * The value parsers read tus 1.0 (Upload-Offset/-Length, Upload-Checksum, Upload-Metadata),
 * Range (RFC 9110 14.1-14.2), If-None-Match (RFC 9110 13.1.2, weak comparison), If-Range
 * (13.1.5, strong comparison) and Host (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3); and build the
 * Content-Disposition of a download from tus metadata (RFC 6266, RFC 8187).
 */
#include "http_parse.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define MAX_U63 ((uint64_t)INT64_MAX)

/* Every key offset of a metadata value this long fits a uint16_t, and there are at most
 * (CHP_HTTP_MAX_HEAD + 1) / 2 keys (one byte and a comma each). */
#define META_SORT_MAX_LEN CHP_HTTP_MAX_HEAD
#define META_MAX_KEYS     ((META_SORT_MAX_LEN + 1) / 2)
_Static_assert(META_SORT_MAX_LEN <= UINT16_MAX + 1, "key offsets fit uint16_t");

static const struct {
        const char *name;
        size_t len;
        enum chp_http_method method;
} methods[] = {
    {"GET", 3, CHP_HTTP_GET},     {"HEAD", 4, CHP_HTTP_HEAD},     {"POST", 4, CHP_HTTP_POST},
    {"PATCH", 5, CHP_HTTP_PATCH}, {"DELETE", 6, CHP_HTTP_DELETE}, {"OPTIONS", 7, CHP_HTTP_OPTIONS},
    {"PUT", 3, CHP_HTTP_PUT},
};

/* tchar (RFC 9110 5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static bool is_tchar(unsigned char c)
{
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
                return true;
        return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(unsigned char c)
{
        return c == ' ' || c == '\t';
}

static bool is_digit(unsigned char c)
{
        return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(unsigned char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static unsigned char lower(unsigned char c)
{
        return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static bool ieq_n(const unsigned char *a, const char *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (lower(a[i]) != lower((unsigned char)b[i]))
                        return false;
        return true;
}

/* Narrows [*p, *p + *n) to exclude leading and trailing OWS. */
static void trim_ows(const unsigned char **p, size_t *n)
{
        while (*n > 0 && is_ows((*p)[0])) {
                (*p)++;
                (*n)--;
        }
        while (*n > 0 && is_ows((*p)[*n - 1]))
                (*n)--;
}

/* ---- the request head ---------------------------------------------------------------------- */

/* The line end at u[i] (CR LF or LF): the index after it, -EAGAIN, or EBAD (a CR alone). */
static ssize_t line_end(const unsigned char *u, size_t end, size_t i)
{
        if (i >= end)
                return -EAGAIN;
        if (u[i] == '\n')
                return (ssize_t)(i + 1);
        if (u[i] != '\r')
                return CHP_HTTP_EBAD;
        if (i + 1 >= end)
                return -EAGAIN;
        return u[i + 1] == '\n' ? (ssize_t)(i + 2) : CHP_HTTP_EBAD;
}

/* An absolute-form target buf[t0..t1) (RFC 9112 3.2.2): its authority, and its path (with the
 * query) as the target; 0 or EBAD. */
static ssize_t absolute_form(const char *buf, size_t t0, size_t t1, struct chp_http_request *r)
{
        const unsigned char *u = (const unsigned char *)buf;
        size_t a0;
        if (t1 - t0 >= 7 && ieq_n(u + t0, "http://", 7))
                a0 = t0 + 7;
        else if (t1 - t0 >= 8 && ieq_n(u + t0, "https://", 8))
                a0 = t0 + 8;
        else
                return CHP_HTTP_EBAD;
        size_t a1 = a0;
        while (a1 < t1 && u[a1] != '/' && u[a1] != '?' && u[a1] != '#')
                a1++;
        struct chp_http_str authority = {buf + a0, a1 - a0};
        if (a1 == a0 || u[a0] == ':' || chp_http_check_host(authority) != 0)
                return CHP_HTTP_EBAD;
        r->authority = authority;
        /* an empty path is "/" (RFC 9112 3.2.2); left empty here, with the query dropped */
        r->target = (struct chp_http_str){buf + a1, a1 < t1 && u[a1] == '/' ? t1 - a1 : 0};
        return 0;
}

/* Parses u[0..end) into r; returns the head's size, -EAGAIN or a CHP_HTTP_E* code. */
static ssize_t parse_head(const char *buf, size_t end, struct chp_http_request *r)
{
        const unsigned char *u = (const unsigned char *)buf;
        size_t i = 0;
        ssize_t k;

        if (end == 0)
                return -EAGAIN;
        if (u[0] == '\r' || u[0] == '\n') { /* RFC 9112 2.2: one empty line may precede */
                if ((k = line_end(u, end, 0)) < 0)
                        return k;
                i = (size_t)k;
        }

        size_t m0 = i;
        for (;; i++) {
                if (i >= end)
                        return -EAGAIN;
                if (u[i] == ' ')
                        break;
                if (!is_tchar(u[i]))
                        return CHP_HTTP_EBAD;
        }
        if (i == m0)
                return CHP_HTTP_EBAD;
        size_t mi = 0, nm = sizeof(methods) / sizeof(methods[0]);
        while (mi < nm && !(methods[mi].len == i - m0 &&
                            memcmp(buf + m0, methods[mi].name, methods[mi].len) == 0))
                mi++;
        if (mi == nm)
                return CHP_HTTP_EMETHOD;
        r->method = methods[mi].method;
        i++;

        size_t t0 = i;
        for (;; i++) {
                if (i >= end)
                        return -EAGAIN;
                if (u[i] == ' ')
                        break;
                if (u[i] < 0x21 || u[i] > 0x7e || (i == t0 && u[i] != '/' && !is_alpha(u[i])))
                        return CHP_HTTP_EBAD;
                if (i - t0 >= CHP_HTTP_MAX_TARGET)
                        return CHP_HTTP_ETARGET;
        }
        if (i == t0)
                return CHP_HTTP_EBAD;
        if (u[t0] == '/') {
                r->target = (struct chp_http_str){buf + t0, i - t0};
        } else if ((k = absolute_form(buf, t0, i, r)) < 0) {
                return k;
        }
        i++;

        static const char version[] = "HTTP/D.D";
        for (size_t v = 0; v < sizeof(version) - 1; v++, i++) {
                if (i >= end)
                        return -EAGAIN;
                if (version[v] == 'D' ? !is_digit(u[i]) : u[i] != (unsigned char)version[v])
                        return CHP_HTTP_EBAD;
        }
        if ((k = line_end(u, end, i)) < 0)
                return k;
        if (u[i - 3] != '1' || u[i - 1] > '1')
                return CHP_HTTP_EVERSION;
        r->minor = u[i - 1] - '0';
        i = (size_t)k;

        for (;;) {
                if (i >= end)
                        return -EAGAIN;
                if (u[i] == '\r' || u[i] == '\n')
                        return line_end(u, end, i);
                if (is_ows(u[i])) /* obs-fold, or whitespace before the first field */
                        return CHP_HTTP_EBAD;
                if (r->nheaders == CHP_HTTP_MAX_HEADERS)
                        return CHP_HTTP_EHEADERS;

                size_t n0 = i;
                for (;; i++) {
                        if (i >= end)
                                return -EAGAIN;
                        if (u[i] == ':')
                                break;
                        if (!is_tchar(u[i]))
                                return CHP_HTTP_EBAD;
                }
                if (i == n0)
                        return CHP_HTTP_EBAD;
                size_t n1 = i++;

                while (i < end && is_ows(u[i]))
                        i++;
                size_t v0 = i, v1 = i; /* v1: after the last byte that is not OWS */
                for (;; i++) {
                        if (i >= end)
                                return -EAGAIN;
                        if (u[i] == '\r' || u[i] == '\n')
                                break;
                        if (is_ows(u[i]))
                                continue;
                        if (u[i] < 0x21 || u[i] == 0x7f)
                                return CHP_HTTP_EBAD;
                        v1 = i + 1;
                }
                if ((k = line_end(u, end, i)) < 0)
                        return k;
                i = (size_t)k;
                r->headers[r->nheaders++] = (struct chp_http_header){
                    .name = {buf + n0, n1 - n0},
                    .value = {buf + v0, v1 - v0},
                };
        }
}

ssize_t chp_http_parse_request(const char *buf, size_t len, struct chp_http_request *out)
{
        memset(out, 0, sizeof(*out));
        size_t end = len < CHP_HTTP_MAX_HEAD ? len : CHP_HTTP_MAX_HEAD;
        ssize_t rc = parse_head(buf, end, out);
        if (rc == -EAGAIN && len >= CHP_HTTP_MAX_HEAD)
                rc = CHP_HTTP_EHEADERS;
        if (rc < 0)
                memset(out, 0, sizeof(*out));
        return rc;
}

bool chp_http_str_ieq(struct chp_http_str s, const char *lit)
{
        size_t n = strlen(lit);
        return s.n == n && (n == 0 || ieq_n((const unsigned char *)s.p, lit, n));
}

const struct chp_http_str *chp_http_header(const struct chp_http_request *r, const char *name)
{
        for (size_t i = 0; i < r->nheaders; i++)
                if (chp_http_str_ieq(r->headers[i].name, name))
                        return &r->headers[i].value;
        return NULL;
}

size_t chp_http_header_count(const struct chp_http_request *r, const char *name)
{
        size_t count = 0;
        for (size_t i = 0; i < r->nheaders; i++)
                count += chp_http_str_ieq(r->headers[i].name, name);
        return count;
}

/* ---- numbers and ranges -------------------------------------------------------------------- */

/* Decimal digits at p[*i..n) into *v (at least one; leading zeros allowed); false on overflow
 * of 64 bits or no digit. Advances *i past the digits. */
static bool take_u64(const unsigned char *p, size_t n, size_t *i, uint64_t *v)
{
        size_t start = *i;
        uint64_t x = 0;
        for (; *i < n && is_digit(p[*i]); (*i)++) {
                unsigned d = p[*i] - '0';
                if (x > (UINT64_MAX - d) / 10)
                        return false;
                x = x * 10 + d;
        }
        *v = x;
        return *i > start;
}

int chp_http_parse_u64(struct chp_http_str s, uint64_t *out)
{
        *out = 0;
        const unsigned char *p = (const unsigned char *)s.p;
        size_t i = 0;
        uint64_t v;
        if (!take_u64(p, s.n, &i, &v) || i != s.n || v > MAX_U63)
                return -EINVAL;
        *out = v;
        return 0;
}

int chp_http_parse_range(struct chp_http_str s, uint64_t len, uint64_t *first, uint64_t *last)
{
        *first = *last = 0;
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n;
        trim_ows(&p, &n);
        if (n < 6 || !ieq_n(p, "bytes=", 6))
                return -EINVAL;
        p += 6;
        n -= 6;
        trim_ows(&p, &n);
        if (n == 0 || memchr(p, ',', n))
                return -EINVAL; /* none, or several: not served as multipart/byteranges */

        size_t i = 0;
        uint64_t a = 0, b = 0;
        bool has_a = i < n && is_digit(p[i]);
        if (has_a && !take_u64(p, n, &i, &a))
                return -EINVAL;
        if (i >= n || p[i] != '-')
                return -EINVAL;
        i++;
        bool has_b = i < n;
        if (has_b && !take_u64(p, n, &i, &b))
                return -EINVAL;
        if (i != n || (!has_a && !has_b) || (has_a && has_b && b < a))
                return -EINVAL;

        /* syntactically valid: now whether it is satisfiable (RFC 9110 14.1.1, 14.1.3) */
        if (len == 0)
                return -ERANGE;
        if (has_a) {
                if (a >= len)
                        return -ERANGE;
                *first = a;
                *last = has_b && b < len - 1 ? b : len - 1;
        } else {
                if (b == 0)
                        return -ERANGE;
                *first = b >= len ? 0 : len - b;
                *last = len - 1;
        }
        return 0;
}

/* ---- base64 and the tus headers ------------------------------------------------------------ */

static int b64_value(unsigned char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

/* The decoded length of canonical padded base64, or -1: whole quanta, padding only at the end,
 * and the bits a short final quantum leaves over all zero (RFC 4648 3.5). */
static ssize_t b64_check(const unsigned char *in, size_t n)
{
        if (n % 4 != 0 || n / 4 * 3 > (size_t)SSIZE_MAX)
                return -1;
        size_t pad = 0;
        for (size_t i = 0; i < n; i += 4) {
                bool final = i + 4 == n;
                int b = b64_value(in[i + 1]);
                if (b64_value(in[i]) < 0 || b < 0)
                        return -1;
                if (in[i + 2] == '=') {
                        if (!final || in[i + 3] != '=' || (b & 0x0f) != 0)
                                return -1;
                        pad = 2;
                        continue;
                }
                int c = b64_value(in[i + 2]);
                if (c < 0)
                        return -1;
                if (in[i + 3] == '=') {
                        if (!final || (c & 0x03) != 0)
                                return -1;
                        pad = 1;
                } else if (b64_value(in[i + 3]) < 0) {
                        return -1;
                }
        }
        return (ssize_t)(n / 4 * 3 - pad);
}

ssize_t chp_http_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
        const unsigned char *u = (const unsigned char *)in;
        ssize_t len = b64_check(u, n);
        if (len < 0 || (size_t)len > cap)
                return -EINVAL;
        size_t o = 0;
        for (size_t i = 0; i < n; i += 4) {
                uint32_t q = 0;
                for (size_t j = 0; j < 4; j++)
                        q = q << 6 | (u[i + j] == '=' ? 0u : (uint32_t)b64_value(u[i + j]));
                uint8_t bytes[3] = {(uint8_t)(q >> 16), (uint8_t)(q >> 8), (uint8_t)q};
                for (size_t j = 0; j < 3 && o < (size_t)len; j++)
                        out[o++] = bytes[j];
        }
        return len;
}

int chp_http_parse_checksum(struct chp_http_str s, int *algo, uint8_t out[32], size_t *out_len)
{
        *algo = 0;
        *out_len = 0;
        memset(out, 0, 32);
        const unsigned char *p = (const unsigned char *)s.p;
        const unsigned char *sp = s.n ? memchr(p, ' ', s.n) : NULL;
        if (!sp || sp == p)
                return -EINVAL;
        size_t an = (size_t)(sp - p);
        for (size_t i = 0; i < an; i++)
                if (!is_tchar(p[i]))
                        return -EINVAL;
        int a;
        size_t want;
        if (an == 4 && memcmp(p, "sha1", 4) == 0) {
                a = 1;
                want = 20;
        } else if (an == 6 && memcmp(p, "sha256", 6) == 0) {
                a = 256;
                want = 32;
        } else {
                return -ENOTSUP;
        }
        uint8_t d[32];
        ssize_t got = chp_http_base64_decode(s.p + an + 1, s.n - an - 1, d, sizeof(d));
        if (got < 0 || (size_t)got != want)
                return -EINVAL;
        memcpy(out, d, want);
        *algo = a;
        *out_len = want;
        return 0;
}

/* A metadata key ends at a space, a tab (trailing OWS of its pair), a comma or the end. */
static bool key_end(const unsigned char *p, size_t n, size_t i)
{
        return i >= n || p[i] == ' ' || p[i] == '\t' || p[i] == ',';
}

static int key_cmp(const unsigned char *p, size_t n, size_t a, size_t b)
{
        for (;; a++, b++) {
                bool ea = key_end(p, n, a), eb = key_end(p, n, b);
                if (ea || eb)
                        return (int)eb - (int)ea;
                if (p[a] != p[b])
                        return p[a] < p[b] ? -1 : 1;
        }
}

static void sift_down(uint16_t *v, size_t root, size_t count, const unsigned char *p, size_t n)
{
        for (;;) {
                size_t child = 2 * root + 1;
                if (child >= count)
                        return;
                if (child + 1 < count && key_cmp(p, n, v[child], v[child + 1]) < 0)
                        child++;
                if (key_cmp(p, n, v[root], v[child]) >= 0)
                        return;
                uint16_t t = v[root];
                v[root] = v[child];
                v[child] = t;
                root = child;
        }
}

/* Whether two keys (given by offset) are equal: heapsort, then neighbours — O(k log k) even for
 * keys an attacker picks, with no allocation. */
static bool sorted_keys_unique(uint16_t *v, size_t count, const unsigned char *p, size_t n)
{
        for (size_t i = count / 2; i-- > 0;)
                sift_down(v, i, count, p, n);
        for (size_t end = count; end > 1; end--) {
                uint16_t t = v[0];
                v[0] = v[end - 1];
                v[end - 1] = t;
                sift_down(v, 0, end - 1, p, n);
        }
        for (size_t i = 1; i < count; i++)
                if (key_cmp(p, n, v[i - 1], v[i]) == 0)
                        return false;
        return true;
}

/* The pair in p[*i..n) up to the next comma, without surrounding OWS: p[*e0..*e1). Advances
 * *i past the pair and its comma; *more tells whether a comma (so another pair) followed. */
static void next_pair(const unsigned char *p, size_t n, size_t *i, size_t *e0, size_t *e1,
                      bool *more)
{
        const unsigned char *c = *i < n ? memchr(p + *i, ',', n - *i) : NULL;
        *e0 = *i;
        *e1 = c ? (size_t)(c - p) : n;
        *i = c ? *e1 + 1 : n;
        *more = c != NULL;
        while (*e0 < *e1 && is_ows(p[*e0]))
                (*e0)++;
        while (*e1 > *e0 && is_ows(p[*e1 - 1]))
                (*e1)--;
}

/* The pair in p[*i..n) up to the next comma: validates it and sets *key to its key's offset.
 * Advances *i past the pair and its comma; *more tells whether a comma (so another pair)
 * followed. */
static bool take_pair(const unsigned char *p, size_t n, size_t *i, size_t *key, bool *more)
{
        size_t e0, e1;
        next_pair(p, n, i, &e0, &e1, more);
        size_t k = e0;
        while (k < e1 && p[k] != ' ') {
                if (p[k] < 0x21 || p[k] == 0x7f)
                        return false;
                k++;
        }
        *key = e0;
        return k > e0 && (k == e1 || b64_check(p + k + 1, e1 - k - 1) >= 0);
}

int chp_http_check_metadata(struct chp_http_str s)
{
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, i = 0, count = 0, key;
        bool more = true;
        while (i < n && is_ows(p[i]))
                i++;
        if (i == n)
                return 0; /* no pairs */

        uint16_t keys[META_MAX_KEYS];
        bool sortable = n <= META_SORT_MAX_LEN;
        while (more) {
                if (!take_pair(p, n, &i, &key, &more))
                        return -EINVAL;
                if (sortable)
                        keys[count++] = (uint16_t)key;
        }
        if (sortable)
                return sorted_keys_unique(keys, count, p, n) ? 0 : -EINVAL;

        /* longer than any request head can carry: quadratic, but only for local callers */
        bool more_a = true;
        for (size_t a = 0, ka; more_a;) {
                (void)take_pair(p, n, &a, &ka, &more_a);
                bool more_b = more_a;
                for (size_t b = a, kb; more_b;) {
                        (void)take_pair(p, n, &b, &kb, &more_b);
                        if (key_cmp(p, n, ka, kb) == 0)
                                return -EINVAL;
                }
        }
        return 0;
}

/* ---- If-None-Match ------------------------------------------------------------------------- */

bool chp_http_etag_matches(struct chp_http_str s, const char *etag)
{
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, elen = strlen(etag);
        trim_ows(&p, &n);
        if (n == 1 && p[0] == '*')
                return true;
        bool match = false;
        for (size_t i = 0; i < n;) {
                if (p[i] == ',' || is_ows(p[i])) { /* empty list elements are allowed */
                        i++;
                        continue;
                }
                if (p[i] == 'W') {
                        if (i + 1 >= n || p[i + 1] != '/')
                                return false;
                        i += 2;
                }
                if (i >= n || p[i] != '"')
                        return false;
                size_t t0 = ++i;
                while (i < n && p[i] != '"') {
                        if (p[i] < 0x21 || p[i] == 0x7f) /* etagc: %x21 / %x23-7E / obs-text */
                                return false;
                        i++;
                }
                if (i >= n)
                        return false;
                if (i - t0 == elen && memcmp(p + t0, etag, elen) == 0)
                        match = true;
                for (i++; i < n && is_ows(p[i]); i++)
                        ;
                if (i < n && p[i] != ',')
                        return false;
        }
        return match;
}

/* ---- Host ---------------------------------------------------------------------------------- */

int chp_http_check_host(struct chp_http_str s)
{
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, i = 0;
        if (n > 0 && p[0] == '[') { /* IP-literal: an IPv6 address (hex digits, ':' and '.') */
                for (i = 1; i < n && p[i] != ']'; i++)
                        if (!is_hex(p[i]) && p[i] != ':' && p[i] != '.')
                                return -EINVAL;
                if (i >= n || i == 1)
                        return -EINVAL;
                i++;
        } else { /* reg-name or IPv4address: unreserved / pct-encoded / sub-delims */
                for (; i < n && p[i] != ':'; i++) {
                        if (p[i] == '%') {
                                if (n - i < 3 || !is_hex(p[i + 1]) || !is_hex(p[i + 2]))
                                        return -EINVAL;
                                i += 2;
                        } else if (!is_alpha(p[i]) && !is_digit(p[i]) &&
                                   (p[i] == '\0' || !strchr("-._~!$&'()*+,;=", p[i]))) {
                                return -EINVAL;
                        }
                }
        }
        if (i == n)
                return 0;
        if (p[i] != ':' || n - i - 1 > 5)
                return -EINVAL;
        for (i++; i < n; i++)
                if (!is_digit(p[i]))
                        return -EINVAL;
        return 0;
}

/* ---- If-Range ------------------------------------------------------------------------------ */

bool chp_http_if_range_matches(struct chp_http_str s, const char *etag)
{
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, elen = strlen(etag);
        trim_ows(&p, &n);
        /* strong comparison: a weak tag or a date never matches */
        return n == elen + 2 && p[0] == '"' && p[n - 1] == '"' && memcmp(p + 1, etag, elen) == 0;
}

/* ---- tus metadata for a download ------------------------------------------------------------ */

int chp_http_metadata_get(struct chp_http_str s, const char *key, uint8_t *out, size_t cap,
                          size_t *out_len)
{
        *out_len = 0;
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, klen = strlen(key);
        bool more = true;
        for (size_t i = 0; i < n && more;) {
                size_t e0, e1;
                next_pair(p, n, &i, &e0, &e1, &more);
                size_t k = e0;
                while (k < e1 && p[k] != ' ')
                        k++;
                if (k - e0 != klen || memcmp(p + e0, key, klen) != 0)
                        continue;
                if (k == e1)
                        return 0; /* a key without a value: empty */
                ssize_t got = chp_http_base64_decode((const char *)p + k + 1, e1 - k - 1, out, cap);
                if (got < 0)
                        return -EINVAL;
                *out_len = (size_t)got;
                return 0;
        }
        return -ENOENT;
}

bool chp_http_media_type_ok(struct chp_http_str s)
{
        const unsigned char *p = (const unsigned char *)s.p;
        size_t n = s.n, i = 0;
        if (n > CHP_HTTP_MEDIA_TYPE_MAX)
                return false;
        for (int part = 0; part < 2; part++) { /* type "/" subtype */
                size_t t0 = i;
                while (i < n && is_tchar(p[i]))
                        i++;
                if (i == t0)
                        return false;
                if (part == 0 && (i == n || p[i++] != '/'))
                        return false;
        }
        while (i < n) { /* *( OWS ";" OWS token "=" ( token / quoted-string ) ) */
                while (i < n && is_ows(p[i]))
                        i++;
                if (i == n || p[i++] != ';')
                        return false;
                while (i < n && is_ows(p[i]))
                        i++;
                size_t t0 = i;
                while (i < n && is_tchar(p[i]))
                        i++;
                if (i == t0 || i == n || p[i++] != '=')
                        return false;
                if (i < n && p[i] == '"') {
                        for (i++; i < n && p[i] != '"'; i++)
                                if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '\\')
                                        return false;
                        if (i++ >= n)
                                return false;
                } else {
                        t0 = i;
                        while (i < n && is_tchar(p[i]))
                                i++;
                        if (i == t0)
                                return false;
                }
        }
        return true;
}

/* The length of the UTF-8 sequence at p[0..n) (1..4), or 0 when it is not valid UTF-8 (an
 * overlong form, a surrogate, past U+10FFFF, or cut short). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
        unsigned char c = p[0];
        size_t len;
        uint32_t cp;
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                len = 4, cp = c & 0x07;
        else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        return len;
}

/* RFC 8187 attr-char: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" /
 * "`" / "|" / "~" */
static bool is_attr_char(unsigned char c)
{
        return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$&+-.^_`|~", c));
}

ssize_t chp_http_content_disposition(const uint8_t *name, size_t n, char *out, size_t cap)
{
        static const char hexd[] = "0123456789ABCDEF";
        if (cap < CHP_HTTP_DISPOSITION_MAX)
                return -ENOBUFS;
        /* what of the name is used: up to CHP_HTTP_FILENAME_MAX bytes, cut at a character
         * boundary; invalid UTF-8 makes it a byte string shown only in the ASCII fallback */
        bool utf8 = true, ascii = true;
        size_t use = 0;
        while (use < n) {
                size_t l = utf8_len(name + use, n - use);
                if (l == 0) {
                        utf8 = false;
                        l = 1;
                }
                if (use + l > CHP_HTTP_FILENAME_MAX)
                        break;
                ascii = ascii && name[use] < 0x80;
                use += l;
        }
        /* a path or a control character is never part of a name */
        static const char head[] = "attachment; filename=\"", star[] = "; filename*=UTF-8''";
        size_t o = sizeof(head) - 1, shown = 0;
        memcpy(out, head, o);
        for (size_t i = 0; i < use; i++) {
                unsigned char c = name[i];
                if (c >= 0x80) {
                        /* one '_' per character, not per byte */
                        if (utf8 && (c & 0xc0) == 0x80)
                                continue;
                        c = '_';
                } else if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '/') {
                        c = '_';
                }
                out[o++] = (char)c;
                shown++;
        }
        if (shown == 0)
                return -EINVAL;
        out[o++] = '"';
        if (!ascii && utf8) {
                memcpy(out + o, star, sizeof(star) - 1);
                o += sizeof(star) - 1;
                for (size_t i = 0; i < use; i++) {
                        unsigned char c = name[i];
                        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
                                c = '_';
                        if (is_attr_char(c)) {
                                out[o++] = (char)c;
                        } else {
                                out[o++] = '%';
                                out[o++] = hexd[c >> 4];
                                out[o++] = hexd[c & 15];
                        }
                }
        }
        out[o] = '\0';
        return (ssize_t)o;
}
