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
 * Content-Disposition of a download from tus metadata (RFC 6266, RFC 8187); and read a
 * target's query parameters and percent-decode them (RFC 3986 2.1), for every caller on the
 * relay's HTTP faces.
 */
#include "http_parse.h"
#include "hash.h"

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

/* Where the parse of a head stands (chp_http_parser.state). Each state is resumed at ps->pos, the
 * first byte not looked at yet; the marks hold where the element being read began. */
enum {
        S_START,    /* the head's first byte: an empty line may precede the request line */
        S_METHOD,   /* mark[0]: the method's first byte */
        S_TARGET,   /* mark[0]: the target's first byte */
        S_VERSION,  /* mark[0]: the version's first byte */
        S_LINE_END, /* after the version: the request line's end (mark[0] still the version) */
        S_FIELD,    /* a field line's first byte, or the empty line ending the head */
        S_NAME,     /* mark[0]: the field name's first byte */
        S_OWS,      /* mark[0..1]: the name; whitespace before the value */
        S_VALUE,    /* mark[0..1]: the name; mark[2..3]: the value without trailing OWS */
        S_DONE,     /* a result is in ps->result */
};

_Static_assert(CHP_HTTP_MAX_HEAD <= UINT16_MAX, "offsets into a head fit uint16_t");

/* The line end at u[*i] (CR LF or LF, the CR possibly seen by an earlier call): 1 when the line
 * is over (*i past it), 0 when a CR waits for its LF (*i past the CR), or EBAD. */
static int line_end(struct chp_http_parser *ps, const unsigned char *u, size_t *i)
{
        if (u[*i] == '\n') {
                ps->cr = false;
                (*i)++;
                return 1;
        }
        if (u[*i] != '\r' || ps->cr)
                return CHP_EHTTP_BAD;
        ps->cr = true;
        (*i)++;
        return 0;
}

/* An absolute-form target buf[t0..t1) (RFC 9112 3.2.2): its authority, and its path (with the
 * query) as the target; 0 or EBAD. */
static int absolute_form(const char *buf, size_t t0, size_t t1, struct chp_http_parser *ps)
{
        const unsigned char *u = (const unsigned char *)buf;
        size_t a0;
        if (t1 - t0 >= 7 && ieq_n(u + t0, "http://", 7))
                a0 = t0 + 7;
        else if (t1 - t0 >= 8 && ieq_n(u + t0, "https://", 8))
                a0 = t0 + 8;
        else
                return CHP_EHTTP_BAD;
        size_t a1 = a0;
        while (a1 < t1 && u[a1] != '/' && u[a1] != '?' && u[a1] != '#')
                a1++;
        struct chp_http_str authority = {buf + a0, a1 - a0};
        if (a1 == a0 || u[a0] == ':' || chp_http_check_host(authority) != 0)
                return CHP_EHTTP_BAD;
        ps->authority[0] = (uint16_t)a0;
        ps->authority[1] = (uint16_t)a1;
        /* an empty path is "/" (RFC 9112 3.2.2); left empty here, with the query dropped */
        ps->target[0] = (uint16_t)a1;
        ps->target[1] = (uint16_t)(a1 < t1 && u[a1] == '/' ? t1 : a1);
        return 0;
}

/* The method named by buf[m0..m1) into ps; 0, EMETHOD or EBAD (empty). */
static int method(const char *buf, size_t m0, size_t m1, struct chp_http_parser *ps)
{
        if (m1 == m0)
                return CHP_EHTTP_BAD;
        size_t mi = 0, nm = sizeof(methods) / sizeof(methods[0]);
        while (mi < nm && !(methods[mi].len == m1 - m0 &&
                            memcmp(buf + m0, methods[mi].name, methods[mi].len) == 0))
                mi++;
        if (mi == nm)
                return CHP_EHTTP_METHOD;
        ps->method = methods[mi].method;
        return 0;
}

/* Goes on with the head in u[0..end) from ps->pos, looking at each byte once: the head's size,
 * -EAGAIN (all of u[0..end) taken in, ps->pos == end) or a CHP_EHTTP_* code. The loops stop at
 * the first byte that decides an error, so the result is the same however the head is cut. */
static ssize_t resume(struct chp_http_parser *ps, const char *buf, size_t end)
{
        const unsigned char *u = (const unsigned char *)buf;
        static const char version[] = "HTTP/D.D";
        size_t i = ps->pos;
        int rc = 0;
        while (i < end) {
                size_t m = ps->mark[0];
                switch (ps->state) {
                case S_START: /* RFC 9112 2.2: one empty line may precede */
                        if (ps->cr || u[i] == '\r' || u[i] == '\n') {
                                if ((rc = line_end(ps, u, &i)) <= 0)
                                        break;
                                rc = 0;
                        }
                        ps->mark[0] = (uint16_t)i;
                        ps->state = S_METHOD;
                        break;
                case S_METHOD:
                        for (; i < end && u[i] != ' '; i++)
                                if (!is_tchar(u[i]))
                                        return CHP_EHTTP_BAD;
                        if (i == end || (rc = method(buf, m, i, ps)) < 0)
                                break;
                        ps->mark[0] = (uint16_t)++i;
                        ps->state = S_TARGET;
                        break;
                case S_TARGET:
                        for (; i < end && u[i] != ' '; i++) {
                                if (u[i] < 0x21 || u[i] > 0x7e ||
                                    (i == m && u[i] != '/' && !is_alpha(u[i])))
                                        return CHP_EHTTP_BAD;
                                if (i - m >= CHP_HTTP_MAX_TARGET)
                                        return CHP_EHTTP_TARGET;
                        }
                        if (i == end)
                                break;
                        if (i == m)
                                return CHP_EHTTP_BAD;
                        if (u[m] == '/') {
                                ps->target[0] = (uint16_t)m;
                                ps->target[1] = (uint16_t)i;
                        } else if ((rc = absolute_form(buf, m, i, ps)) < 0) {
                                break;
                        }
                        ps->mark[0] = (uint16_t)++i;
                        ps->state = S_VERSION;
                        break;
                case S_VERSION:
                        for (; i < end && i - m < sizeof(version) - 1; i++) {
                                char v = version[i - m];
                                if (v == 'D' ? !is_digit(u[i]) : u[i] != (unsigned char)v)
                                        return CHP_EHTTP_BAD;
                        }
                        if (i - m == sizeof(version) - 1)
                                ps->state = S_LINE_END;
                        break;
                case S_LINE_END:
                        if ((rc = line_end(ps, u, &i)) <= 0)
                                break;
                        rc = 0;
                        if (u[m + 5] != '1' || u[m + 7] > '1')
                                return CHP_EHTTP_VERSION;
                        ps->minor = u[m + 7] - '0';
                        ps->state = S_FIELD;
                        break;
                case S_FIELD:
                        if (ps->cr || u[i] == '\r' || u[i] == '\n') {
                                if ((rc = line_end(ps, u, &i)) <= 0)
                                        break;
                                return (ssize_t)i; /* the empty line: the head is complete */
                        }
                        if (is_ows(u[i])) /* obs-fold, or whitespace before the first field */
                                return CHP_EHTTP_BAD;
                        if (ps->nheaders == CHP_HTTP_MAX_HEADERS)
                                return CHP_EHTTP_HEADERS;
                        ps->mark[0] = (uint16_t)i;
                        ps->state = S_NAME;
                        break;
                case S_NAME:
                        for (; i < end && u[i] != ':'; i++)
                                if (!is_tchar(u[i]))
                                        return CHP_EHTTP_BAD;
                        if (i == end)
                                break;
                        if (i == m)
                                return CHP_EHTTP_BAD;
                        ps->mark[1] = (uint16_t)i++;
                        ps->state = S_OWS;
                        break;
                case S_OWS:
                        while (i < end && is_ows(u[i]))
                                i++;
                        if (i == end)
                                break;
                        ps->mark[2] = ps->mark[3] = (uint16_t)i;
                        ps->state = S_VALUE;
                        break;
                case S_VALUE:
                        for (; !ps->cr && i < end && u[i] != '\r' && u[i] != '\n'; i++) {
                                if (is_ows(u[i]))
                                        continue;
                                if (u[i] < 0x21 || u[i] == 0x7f)
                                        return CHP_EHTTP_BAD;
                                ps->mark[3] = (uint16_t)(i + 1); /* after the last non-OWS */
                        }
                        if (i == end || (rc = line_end(ps, u, &i)) <= 0)
                                break;
                        rc = 0;
                        memcpy(ps->headers[ps->nheaders++], ps->mark, sizeof(ps->mark));
                        ps->state = S_FIELD;
                        break;
                }
                if (rc < 0)
                        return rc;
        }
        ps->pos = i;
        return -EAGAIN;
}

void chp_http_parser_init(struct chp_http_parser *ps)
{
        memset(ps, 0, sizeof(*ps));
}

/* The request ps parsed, pointing into buf. */
static void fill(const struct chp_http_parser *ps, const char *buf, struct chp_http_request *r)
{
        r->method = ps->method;
        r->minor = ps->minor;
        r->target = (struct chp_http_str){buf + ps->target[0], ps->target[1] - ps->target[0]};
        r->authority =
            (struct chp_http_str){buf + ps->authority[0], ps->authority[1] - ps->authority[0]};
        if (!r->authority.n)
                r->authority.p = NULL;
        r->nheaders = ps->nheaders;
        for (size_t k = 0; k < ps->nheaders; k++) {
                const uint16_t *h = ps->headers[k];
                r->headers[k] = (struct chp_http_header){
                    .name = {buf + h[0], (size_t)(h[1] - h[0])},
                    .value = {buf + h[2], (size_t)(h[3] - h[2])},
                };
        }
}

ssize_t chp_http_parse_resume(struct chp_http_parser *ps, const char *buf, size_t len,
                              struct chp_http_request *out)
{
        memset(out, 0, sizeof(*out));
        if (ps->state != S_DONE) {
                if (len < ps->pos) /* not the buffer parsed so far: start again */
                        chp_http_parser_init(ps);
                size_t end = len < CHP_HTTP_MAX_HEAD ? len : CHP_HTTP_MAX_HEAD;
                ssize_t rc = resume(ps, buf, end);
                if (rc == -EAGAIN && len >= CHP_HTTP_MAX_HEAD)
                        rc = CHP_EHTTP_HEADERS;
                if (rc == -EAGAIN)
                        return rc;
                ps->state = S_DONE;
                ps->result = (int32_t)rc;
        }
        if (ps->result > 0)
                fill(ps, buf, out);
        return ps->result;
}

ssize_t chp_http_parse_request(const char *buf, size_t len, struct chp_http_request *out)
{
        struct chp_http_parser ps;
        chp_http_parser_init(&ps);
        return chp_http_parse_resume(&ps, buf, len, out);
}

void chp_http_request_move(struct chp_http_request *r, const char *from, const char *to)
{
        if (r->target.p)
                r->target.p = to + (r->target.p - from);
        if (r->authority.p)
                r->authority.p = to + (r->authority.p - from);
        for (size_t k = 0; k < r->nheaders; k++) {
                r->headers[k].name.p = to + (r->headers[k].name.p - from);
                r->headers[k].value.p = to + (r->headers[k].value.p - from);
        }
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

/* Shared with the client, which checks the file names senders give (client/get.c). */
size_t chp_http_utf8_len(const unsigned char *p, size_t n)
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
                size_t l = chp_http_utf8_len(name + use, n - use);
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

/* ---- query strings and percent-encoding --------------------------------------------------- */

struct chp_http_str chp_http_target_query(struct chp_http_str target)
{
        const char *q = memchr(target.p, '?', target.n);
        if (!q)
                return (struct chp_http_str){target.p + target.n, 0};
        return (struct chp_http_str){q + 1, target.n - (size_t)(q + 1 - target.p)};
}

unsigned chp_http_query_param(struct chp_http_str query, const char *name, struct chp_http_str *val)
{
        size_t nl = strlen(name);
        unsigned seen = 0;
        for (size_t i = 0; i < query.n;) {
                size_t e = i;
                while (e < query.n && query.p[e] != '&')
                        e++;
                const char *p = query.p + i;
                size_t n = e - i;
                if (n >= nl && memcmp(p, name, nl) == 0 && (n == nl || p[nl] == '=')) {
                        if (seen++ == 0)
                                *val = n == nl ? (struct chp_http_str){p + n, 0}
                                               : (struct chp_http_str){p + nl + 1, n - nl - 1};
                }
                i = e + 1;
        }
        return seen;
}

ssize_t chp_http_pct_decode(const char *p, size_t n, bool plus_space, char *out, size_t cap)
{
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                char c = p[i];
                if (c == '%') {
                        uint8_t b;
                        if (i + 2 >= n || chp_hex_decode(p + i + 1, 2, &b, 1) != 0)
                                return -EINVAL;
                        c = (char)b;
                        i += 2;
                } else if (c == '+' && plus_space) {
                        c = ' ';
                }
                if (c == '\0')
                        return -EINVAL;
                if (o == cap)
                        return -ENOBUFS;
                out[o++] = c;
        }
        return (ssize_t)o;
}
