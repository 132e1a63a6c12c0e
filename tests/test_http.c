/* The HTTP request-head parser against heads real clients send (curl, tus-js-client in node and
 * in browsers, a CORS preflight), every prefix of them, every error class with its exact code,
 * the limits at and just over their bound; and the value parsers (Content-Length and tus
 * numbers, Range with the RFC 9110 examples, base64 with the RFC 4648 vectors, Upload-Checksum,
 * Upload-Metadata with the tus spec example, If-None-Match). Every input is parsed from an
 * exact-size heap copy so ASan catches any read past its length. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "http_parse.h"

/* ---- exact-size copies, released after each test that takes them ---- */

#define POOL_MAX 4096
static void *pool[POOL_MAX];
static size_t pool_n;

static void *hold(const void *p, size_t n)
{
        void *copy = malloc(n ? n : 1);
        if (!copy)
                abort();
        if (n)
                memcpy(copy, p, n);
        if (pool_n == POOL_MAX)
                abort();
        pool[pool_n++] = copy;
        return copy;
}

static void release(void)
{
        while (pool_n > 0)
                free(pool[--pool_n]);
}

/* A header value as the parser would hand it over: an exact-size copy of lit. */
static struct chp_http_str S(const char *lit) {
        size_t n = strlen(lit);
        return (struct chp_http_str){hold(lit, n), n};
}

/* Parses the first len bytes of s from an exact-size copy (kept until release()). */
static ssize_t
parse_n(const char *s, size_t len, struct chp_http_request *r)
{
        return chp_http_parse_request(hold(s, len), len, r);
}

static ssize_t parse(const char *s, struct chp_http_request *r)
{
        return parse_n(s, strlen(s), r);
}

/* Just the return code, copy released at once. */
static ssize_t code_n(const char *s, size_t len)
{
        struct chp_http_request r;
        char *copy = malloc(len ? len : 1);
        if (!copy)
                abort();
        if (len)
                memcpy(copy, s, len);
        ssize_t rc = chp_http_parse_request(copy, len, &r);
        free(copy);
        return rc;
}

static ssize_t code(const char *s)
{
        return code_n(s, strlen(s));
}

static bool str_is(struct chp_http_str s, const char *lit)
{
        size_t n = strlen(lit);
        return s.n == n && (n == 0 || memcmp(s.p, lit, n) == 0);
}

static bool value_is(const struct chp_http_request *r, const char *name, const char *lit)
{
        const struct chp_http_str *v = chp_http_header(r, name);
        return v && str_is(*v, lit);
}

/* ---- heads from real clients ---- */

#define CURL_RANGE                                                                                 \
        "GET /files/5f1e0d6c2b7a4e31 HTTP/1.1\r\n"                                                 \
        "Host: 127.0.0.1:7780\r\n"                                                                 \
        "Range: bytes=0-1023\r\n"                                                                  \
        "User-Agent: curl/8.5.0\r\n"                                                               \
        "Accept: */*\r\n"                                                                          \
        "\r\n"

/* tus-js-client 4 in node: creation with metadata (an empty value is sent as "key "). */
#define TUS_NODE_POST                                                                              \
        "POST /files/ HTTP/1.1\r\n"                                                                \
        "Tus-Resumable: 1.0.0\r\n"                                                                 \
        "Upload-Length: 11\r\n"                                                                    \
        "Upload-Metadata: filename aGVsbG8udHh0,filetype dGV4dC9wbGFpbg==,note \r\n"               \
        "Host: 127.0.0.1:7780\r\n"                                                                 \
        "Connection: keep-alive\r\n"                                                               \
        "Content-Length: 0\r\n"                                                                    \
        "\r\n"

/* tus-js-client in a browser (Chrome): creation, then the upload, then resuming with HEAD. */
#define TUS_BROWSER_POST                                                                           \
        "POST /files/ HTTP/1.1\r\n"                                                                \
        "Host: localhost:7780\r\n"                                                                 \
        "Connection: keep-alive\r\n"                                                               \
        "Content-Length: 0\r\n"                                                                    \
        "sec-ch-ua: \"Not_A Brand\";v=\"8\", \"Chromium\";v=\"120\"\r\n"                           \
        "Tus-Resumable: 1.0.0\r\n"                                                                 \
        "Upload-Metadata: filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,filetype "                 \
        "YXBwbGljYXRpb24vcGRm\r\n"                                                                 \
        "sec-ch-ua-mobile: ?0\r\n"                                                                 \
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "      \
        "Chrome/120.0.0.0 Safari/537.36\r\n"                                                       \
        "Upload-Length: 1048576\r\n"                                                               \
        "sec-ch-ua-platform: \"Linux\"\r\n"                                                        \
        "Accept: */*\r\n"                                                                          \
        "Origin: http://localhost:8080\r\n"                                                        \
        "Sec-Fetch-Site: same-site\r\n"                                                            \
        "Sec-Fetch-Mode: cors\r\n"                                                                 \
        "Sec-Fetch-Dest: empty\r\n"                                                                \
        "Referer: http://localhost:8080/\r\n"                                                      \
        "Accept-Encoding: gzip, deflate, br\r\n"                                                   \
        "Accept-Language: en-US,en;q=0.9,fa;q=0.8\r\n"                                             \
        "\r\n"

#define TUS_PATCH                                                                                  \
        "PATCH /files/24e533e02ec3bc40c387f1a0e460e216 HTTP/1.1\r\n"                               \
        "Tus-Resumable: 1.0.0\r\n"                                                                 \
        "Upload-Offset: 0\r\n"                                                                     \
        "Content-Type: application/offset+octet-stream\r\n"                                        \
        "Upload-Checksum: sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\r\n"                                   \
        "Host: 127.0.0.1:7780\r\n"                                                                 \
        "Connection: keep-alive\r\n"                                                               \
        "Content-Length: 11\r\n"                                                                   \
        "\r\n"

#define TUS_HEAD                                                                                   \
        "HEAD /files/24e533e02ec3bc40c387f1a0e460e216 HTTP/1.1\r\n"                                \
        "Tus-Resumable: 1.0.0\r\n"                                                                 \
        "Host: 127.0.0.1:7780\r\n"                                                                 \
        "Connection: keep-alive\r\n"                                                               \
        "\r\n"

#define BROWSER_PREFLIGHT                                                                          \
        "OPTIONS /files/ HTTP/1.1\r\n"                                                             \
        "Host: localhost:7780\r\n"                                                                 \
        "Connection: keep-alive\r\n"                                                               \
        "Accept: */*\r\n"                                                                          \
        "Access-Control-Request-Method: POST\r\n"                                                  \
        "Access-Control-Request-Headers: tus-resumable,upload-length,upload-metadata\r\n"          \
        "Origin: http://localhost:8080\r\n"                                                        \
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n"   \
        "Sec-Fetch-Mode: cors\r\n"                                                                 \
        "Sec-Fetch-Site: same-site\r\n"                                                            \
        "Sec-Fetch-Dest: empty\r\n"                                                                \
        "Referer: http://localhost:8080/\r\n"                                                      \
        "Accept-Encoding: gzip, deflate, br\r\n"                                                   \
        "Accept-Language: en-US,en;q=0.5\r\n"                                                      \
        "\r\n"

#define TUS_DELETE                                                                                 \
        "DELETE /files/24e533e02ec3bc40c387f1a0e460e216 HTTP/1.1\r\n"                              \
        "Tus-Resumable: 1.0.0\r\n"                                                                 \
        "Host: 127.0.0.1:7780\r\n"                                                                 \
        "\r\n"

#define PUT_10 "PUT /x HTTP/1.0\r\nContent-Length: 5\r\n\r\n"

/* A table row with a literal's exact length (some hold a NUL). */
#define ROW(lit, rc)                                                                               \
        {                                                                                          \
                lit, sizeof(lit) - 1, rc                                                           \
        }

static const char *const valid_heads[] = {
    CURL_RANGE,
    TUS_NODE_POST,
    TUS_BROWSER_POST,
    TUS_PATCH,
    TUS_HEAD,
    BROWSER_PREFLIGHT,
    TUS_DELETE,
    PUT_10,
    "GET / HTTP/1.1\n\n",                                    /* bare LF */
    "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",                 /* one leading empty line */
    "GET /?q=%20&a=b#frag HTTP/1.1\r\nX:\r\nY: \t \r\n\r\n", /* empty values */
};

TEST(curl_get_with_range)
{
        struct chp_http_request r;
        const char *head = CURL_RANGE "unexpected body bytes";
        ssize_t rc = parse(head, &r);
        REQUIRE(rc == (ssize_t)strlen(CURL_RANGE));
        CHECK_EQ(r.method, CHP_HTTP_GET);
        CHECK(str_is(r.target, "/files/5f1e0d6c2b7a4e31"));
        CHECK_EQ(r.minor, 1);
        CHECK_EQ(r.nheaders, 4);
        CHECK(str_is(r.headers[0].name, "Host") && str_is(r.headers[0].value, "127.0.0.1:7780"));
        CHECK(str_is(r.headers[3].name, "Accept") && str_is(r.headers[3].value, "*/*"));
        const struct chp_http_str *range = chp_http_header(&r, "range");
        REQUIRE(range);
        uint64_t first, last;
        CHECK_OK(chp_http_parse_range(*range, 5000, &first, &last));
        CHECK_EQ(first, 0);
        CHECK_EQ(last, 1023);
        release();
}

TEST(tus_js_client_node_creation)
{
        struct chp_http_request r;
        REQUIRE(parse(TUS_NODE_POST, &r) == (ssize_t)strlen(TUS_NODE_POST));
        CHECK_EQ(r.method, CHP_HTTP_POST);
        CHECK(str_is(r.target, "/files/"));
        CHECK_EQ(r.nheaders, 6);
        CHECK(value_is(&r, "Tus-Resumable", "1.0.0"));
        uint64_t v;
        CHECK_OK(chp_http_parse_u64(*chp_http_header(&r, "upload-length"), &v));
        CHECK_EQ(v, 11);
        CHECK_OK(chp_http_parse_u64(*chp_http_header(&r, "CONTENT-LENGTH"), &v));
        CHECK_EQ(v, 0);
        /* the trailing space of "note " is OWS around the field value */
        CHECK(value_is(&r, "upload-metadata",
                       "filename aGVsbG8udHh0,filetype dGV4dC9wbGFpbg==,note"));
        CHECK_OK(chp_http_check_metadata(*chp_http_header(&r, "Upload-Metadata")));
        release();
}

TEST(tus_js_client_browser_creation)
{
        struct chp_http_request r;
        REQUIRE(parse(TUS_BROWSER_POST, &r) == (ssize_t)strlen(TUS_BROWSER_POST));
        CHECK_EQ(r.method, CHP_HTTP_POST);
        CHECK_EQ(r.nheaders, 18);
        CHECK(value_is(&r, "SEC-CH-UA", "\"Not_A Brand\";v=\"8\", \"Chromium\";v=\"120\""));
        CHECK(value_is(&r, "origin", "http://localhost:8080"));
        CHECK_OK(chp_http_check_metadata(*chp_http_header(&r, "upload-metadata")));
        uint64_t v;
        CHECK_OK(chp_http_parse_u64(*chp_http_header(&r, "Upload-Length"), &v));
        CHECK_EQ(v, 1048576);
        release();
}

TEST(tus_patch_head_delete)
{
        struct chp_http_request r;
        const char *patch = TUS_PATCH "hello world";
        REQUIRE(parse(patch, &r) == (ssize_t)strlen(TUS_PATCH));
        CHECK_EQ(r.method, CHP_HTTP_PATCH);
        CHECK(value_is(&r, "content-type", "application/offset+octet-stream"));
        uint64_t off;
        CHECK_OK(chp_http_parse_u64(*chp_http_header(&r, "Upload-Offset"), &off));
        CHECK_EQ(off, 0);
        int algo;
        uint8_t digest[32];
        size_t dlen;
        CHECK_OK(
            chp_http_parse_checksum(*chp_http_header(&r, "upload-checksum"), &algo, digest, &dlen));
        CHECK_EQ(algo, 1);
        CHECK_EQ(dlen, 20);
        /* SHA-1("hello world") = 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed */
        CHECK(digest[0] == 0x2a && digest[1] == 0xae && digest[19] == 0xed);

        REQUIRE(parse(TUS_HEAD, &r) == (ssize_t)strlen(TUS_HEAD));
        CHECK_EQ(r.method, CHP_HTTP_HEAD);
        CHECK(str_is(r.target, "/files/24e533e02ec3bc40c387f1a0e460e216"));
        CHECK_EQ(r.nheaders, 3);

        REQUIRE(parse(TUS_DELETE, &r) == (ssize_t)strlen(TUS_DELETE));
        CHECK_EQ(r.method, CHP_HTTP_DELETE);

        REQUIRE(parse(PUT_10, &r) == (ssize_t)strlen(PUT_10));
        CHECK_EQ(r.method, CHP_HTTP_PUT);
        CHECK_EQ(r.minor, 0);
        release();
}

TEST(browser_preflight)
{
        struct chp_http_request r;
        REQUIRE(parse(BROWSER_PREFLIGHT, &r) == (ssize_t)strlen(BROWSER_PREFLIGHT));
        CHECK_EQ(r.method, CHP_HTTP_OPTIONS);
        CHECK(str_is(r.target, "/files/"));
        CHECK_EQ(r.nheaders, 13);
        CHECK(value_is(&r, "access-control-request-headers",
                       "tus-resumable,upload-length,upload-metadata"));
        CHECK(value_is(&r, "Access-Control-Request-Method", "POST"));
        CHECK(chp_http_header(&r, "Tus-Resumable") == NULL);
        release();
}

TEST(every_prefix_needs_more)
{
        for (size_t h = 0; h < sizeof(valid_heads) / sizeof(valid_heads[0]); h++) {
                size_t len = strlen(valid_heads[h]);
                CHECK_EQ(code_n(valid_heads[h], len), len);
                for (size_t k = 0; k < len; k++) {
                        ssize_t rc = code_n(valid_heads[h], k);
                        if (rc != -EAGAIN) {
                                fprintf(stderr, "  head %zu, prefix %zu: %zd\n", h, k, rc);
                                CHECK_EQ(rc, -EAGAIN);
                                break;
                        }
                }
        }
}

TEST(every_method)
{
        static const struct {
                const char *head;
                enum chp_http_method m;
        } t[] = {
            {"GET / HTTP/1.1\r\n\r\n", CHP_HTTP_GET},
            {"HEAD / HTTP/1.1\r\n\r\n", CHP_HTTP_HEAD},
            {"POST / HTTP/1.1\r\n\r\n", CHP_HTTP_POST},
            {"PATCH / HTTP/1.1\r\n\r\n", CHP_HTTP_PATCH},
            {"DELETE / HTTP/1.1\r\n\r\n", CHP_HTTP_DELETE},
            {"OPTIONS / HTTP/1.1\r\n\r\n", CHP_HTTP_OPTIONS},
            {"PUT / HTTP/1.1\r\n\r\n", CHP_HTTP_PUT},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                struct chp_http_request r;
                CHECK_EQ(parse(t[i].head, &r), strlen(t[i].head));
                CHECK_EQ(r.method, t[i].m);
                CHECK_EQ(r.nheaders, 0);
                CHECK(str_is(r.target, "/"));
        }
        release();
}

TEST(line_ends)
{
        struct chp_http_request r;
        const char *lf = "GET /a HTTP/1.1\nHost: x\nRange: bytes=1-\n\nbody";
        CHECK_EQ(parse(lf, &r), strlen(lf) - 4);
        CHECK_EQ(r.nheaders, 2);
        CHECK(value_is(&r, "range", "bytes=1-"));
        const char *mixed = "GET /a HTTP/1.1\r\nHost: x\nA: b\r\n\n";
        CHECK_EQ(parse(mixed, &r), strlen(mixed));
        CHECK(value_is(&r, "host", "x"));

        CHECK_EQ(code("\r\nGET / HTTP/1.1\r\n\r\n"), 20);
        CHECK_EQ(code("\nGET / HTTP/1.1\r\n\r\n"), 19);
        CHECK_EQ(code("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("\n\nGET / HTTP/1.1\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("\rGET / HTTP/1.1\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("GET / HTTP/1.1\rHost: x\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("GET / HTTP/1.1\r\nHost: x\r\n\r\r\n"), CHP_EHTTP_BAD);
        CHECK_EQ(code("GET / HTTP/1.1\r\nHost: x\r\n\r"), -EAGAIN);
        CHECK_EQ(code(""), -EAGAIN);
        release();
}

TEST(request_line_errors)
{
        static const struct {
                const char *head;
                size_t len;
                ssize_t rc;
        } t[] = {
            /* methods: another token is 501, not a token is 400 */
            ROW("get / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("Get / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("BREW /pot HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("CONNECT /x HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("TRACE / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("GETS / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("GE / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("M-SEARCH / HTTP/1.1\r\n\r\n", CHP_EHTTP_METHOD),
            ROW("GE(T / HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET\t/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW(" GET / HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            /* targets: origin-form or absolute-form (http, https), visible ASCII */
            ROW("GET  / HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET ftp://example.com/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET http:/example.com/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET http:///f/x HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),    /* no authority */
            ROW("GET http://:80/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),    /* no host */
            ROW("GET http://user@h/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD), /* userinfo */
            ROW("GET http://h:123456/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET http://[zz]/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET http://h%zz/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET 1http://h/ HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("OPTIONS * HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET example.com:80 HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /a\tb HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /a\x7f HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /a\x01 HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /\r\n\r\n", CHP_EHTTP_BAD), /* HTTP/0.9 */
            ROW("GET /\n\n", CHP_EHTTP_BAD),
            /* versions: other HTTP/x.y is 505, anything else 400 */
            ROW("GET / HTTP/2.0\r\n\r\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/1.2\r\n\r\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/1.9\r\n\r\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/0.9\r\n\r\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/3.0\n\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/0.0\r\n\r\n", CHP_EHTTP_VERSION),
            ROW("GET / HTTP/2\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.10\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/11.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/2.0x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1 \r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / http/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTPS/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1,1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/a.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /  HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1 extra\r\n\r\n", CHP_EHTTP_BAD),
            /* NUL anywhere in the request line */
            ROW("G\0T / HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET /\0 HTTP/1.1\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\0\r\n\r\n", CHP_EHTTP_BAD),
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                ssize_t rc = code_n(t[i].head, t[i].len);
                if (rc != t[i].rc)
                        fprintf(stderr, "  row %zu: %zd\n", i, rc);
                CHECK_EQ(rc, t[i].rc);
        }
}

TEST(absolute_form)
{
        static const struct {
                const char *head, *authority, *target;
        } t[] = {
            {"GET http://127.0.0.1:7780/f/abc HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.1:7780",
             "/f/abc"},
            {"GET HTTPS://relay.example/files/?a=b HTTP/1.1\r\n\r\n", "relay.example",
             "/files/?a=b"},
            {"GET http://[::1]:80/healthz HTTP/1.1\r\n\r\n", "[::1]:80", "/healthz"},
            {"GET http://h HTTP/1.1\r\n\r\n", "h", ""},     /* the path is "/" */
            {"GET http://h?q=1 HTTP/1.1\r\n\r\n", "h", ""}, /* ... and the query goes */
            {"GET http://h#frag HTTP/1.0\r\n\r\n", "h", ""},
            {"OPTIONS http://h:/files/ HTTP/1.1\r\n\r\n", "h:", "/files/"},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                struct chp_http_request r;
                ssize_t rc = parse(t[i].head, &r);
                CHECK_EQ(rc, (ssize_t)strlen(t[i].head));
                CHECK(str_is(r.authority, t[i].authority));
                CHECK(str_is(r.target, t[i].target));
        }
        struct chp_http_request r;
        CHECK(parse("GET /f/abc HTTP/1.1\r\nHost: h\r\n\r\n", &r) > 0);
        CHECK(r.authority.n == 0 && str_is(r.target, "/f/abc"));
        release();
}

TEST(host)
{
        static const char *const good[] = {
            "", "h", "127.0.0.1", "127.0.0.1:7780", "relay.example.com:443", "[::1]",
            "[::1]:7780", "[2001:db8::7]", "xn--bcher-kva.example", "a-b_c~d", "h%41", "h:",
            "a!$&'()*+,;=", "h:65535",
        };
        static const char *const bad[] = {
            "h h", "h/x", "user@h", "h:123456", "h:8o", "[]", "[::1", "[::1]x", "[g::1]", "h%4",
            "h%zz", "h\t", "h\"", "h:80:81", "ü.example", "h\\x", "h#", "h?",
        };
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                if (chp_http_check_host(S(good[i])) != 0)
                        fprintf(stderr, "  good '%s'\n", good[i]);
                CHECK_EQ(chp_http_check_host(S(good[i])), 0);
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (chp_http_check_host(S(bad[i])) != -EINVAL)
                        fprintf(stderr, "  bad '%s'\n", bad[i]);
                CHECK_EQ(chp_http_check_host(S(bad[i])), -EINVAL);
        }
        /* a NUL is no sub-delim (strchr finds the terminator): found by fuzz_http */
        CHECK_EQ(chp_http_check_host((struct chp_http_str){hold("h\0x", 3), 3}), -EINVAL);
        CHECK_EQ(chp_http_check_host((struct chp_http_str){hold("\0", 1), 1}), -EINVAL);
        release();
}

TEST(if_range)
{
        CHECK(chp_http_if_range_matches(S("\"abc\""), "abc"));
        CHECK(chp_http_if_range_matches(S(" \"abc\"\t"), "abc"));
        CHECK(!chp_http_if_range_matches(S("W/\"abc\""), "abc")); /* weak: never */
        CHECK(!chp_http_if_range_matches(S("\"abd\""), "abc"));
        CHECK(!chp_http_if_range_matches(S("\"abc\", \"abc\""), "abc"));
        CHECK(!chp_http_if_range_matches(S("abc"), "abc"));
        CHECK(!chp_http_if_range_matches(S("\"abc"), "abc"));
        CHECK(!chp_http_if_range_matches(S("*"), "abc"));
        CHECK(!chp_http_if_range_matches(S("Sat, 29 Oct 1994 19:43:31 GMT"), "abc"));
        CHECK(!chp_http_if_range_matches(S(""), "abc"));
        CHECK(!chp_http_if_range_matches(S("\""), ""));
        CHECK(chp_http_if_range_matches(S("\"\""), ""));
        release();
}

TEST(metadata_get)
{
        /* the tus spec example and tus-js-client's empty value */
        struct chp_http_str m =
            S("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype "
              "YXBwbGljYXRpb24vcGRm ");
        uint8_t out[64];
        size_t n = 99;
        CHECK_EQ(chp_http_metadata_get(m, "filename", out, sizeof(out), &n), 0);
        CHECK(n == 25 && memcmp(out, "world_domination_plan.pdf", 25) == 0);
        CHECK_EQ(chp_http_metadata_get(m, "filetype", out, sizeof(out), &n), 0);
        CHECK(n == 15 && memcmp(out, "application/pdf", 15) == 0);
        CHECK_EQ(chp_http_metadata_get(m, "is_confidential", out, sizeof(out), &n), 0);
        CHECK_EQ(n, 0);
        CHECK_EQ(chp_http_metadata_get(m, "file", out, sizeof(out), &n), -ENOENT);
        CHECK_EQ(chp_http_metadata_get(m, "filenamex", out, sizeof(out), &n), -ENOENT);
        CHECK_EQ(chp_http_metadata_get(m, "filename", out, 10, &n), -EINVAL); /* too small */
        CHECK_EQ(n, 0);
        CHECK_EQ(chp_http_metadata_get(S(""), "filename", out, sizeof(out), &n), -ENOENT);
        CHECK_EQ(chp_http_metadata_get(S("a !!!!"), "a", out, sizeof(out), &n), -EINVAL);
        release();
}

TEST(media_type)
{
        static const char *const good[] = {
            "application/pdf", "text/plain; charset=utf-8", "image/svg+xml",
            "text/plain;charset=\"utf-8\"", "multipart/x-a; a=b ;c=\"d e\"",
            "application/vnd.ms-excel",
        };
        static const char *const bad[] = {
            "", "text", "text/", "/plain", "text/plain;", "text/plain; a", "text/plain; a=",
            "text/pl ain", "text/plain\r\nSet-Cookie: a=b", "text/plain; a=\"b", "te\x01xt/plain",
            "text/plain; a=\"\\\"\"", "text/plain; a=\"\x7f\"", "text/html, text/plain",
        };
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
                if (!chp_http_media_type_ok(S(good[i])))
                        fprintf(stderr, "  good '%s'\n", good[i]);
                CHECK(chp_http_media_type_ok(S(good[i])));
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (chp_http_media_type_ok(S(bad[i])))
                        fprintf(stderr, "  bad '%s'\n", bad[i]);
                CHECK(!chp_http_media_type_ok(S(bad[i])));
        }
        char long_type[CHP_HTTP_MEDIA_TYPE_MAX + 2];
        memset(long_type, 'a', sizeof(long_type) - 1);
        long_type[sizeof(long_type) - 1] = '\0';
        long_type[1] = '/';
        CHECK(!chp_http_media_type_ok(S(long_type)));
        long_type[sizeof(long_type) - 2] = '\0';
        CHECK(chp_http_media_type_ok(S(long_type)));
        release();
}

static bool disposition_is(const char *name, size_t n, const char *want)
{
        char out[CHP_HTTP_DISPOSITION_MAX];
        ssize_t rc = chp_http_content_disposition(hold(name, n), n, out, sizeof(out));
        if (rc < 0 || (size_t)rc != strlen(out) || strcmp(out, want) != 0) {
                fprintf(stderr, "  got '%s' (%zd), want '%s'\n", rc < 0 ? "" : out, rc, want);
                return false;
        }
        for (ssize_t i = 0; i < rc; i++)
                if (out[i] < 0x20 || out[i] > 0x7e)
                        return false;
        return true;
}

TEST(content_disposition)
{
        CHECK(disposition_is("photo.jpg", 9, "attachment; filename=\"photo.jpg\""));
        CHECK(disposition_is("a \"b\"\\c.txt", 11, "attachment; filename=\"a _b__c.txt\""));
        /* header bytes and paths never pass */
        CHECK(disposition_is("x\r\nSet-Cookie: a=b", 18,
                             "attachment; filename=\"x__Set-Cookie: a=b\""));
        CHECK(disposition_is("../../etc/passwd", 16, "attachment; filename=\".._.._etc_passwd\""));
        CHECK(disposition_is("a\0b\x7f", 4, "attachment; filename=\"a_b_\""));
        /* non-ASCII UTF-8: a fallback with one '_' per character, and filename* */
        CHECK(disposition_is("caf\xc3\xa9 \xd9\x81.pdf", 12,
                             "attachment; filename=\"caf_ _.pdf\"; "
                             "filename*=UTF-8''caf%C3%A9%20%D9%81.pdf"));
        CHECK(disposition_is("\xe2\x82\xac\n%'.txt", 10,
                             "attachment; filename=\"__%'.txt\"; "
                             "filename*=UTF-8''%E2%82%AC_%25%27.txt"));
        /* not UTF-8 (a lone continuation byte, an overlong '/', a surrogate): fallback only */
        CHECK(disposition_is("a\x80" "b", 3, "attachment; filename=\"a_b\""));
        CHECK(disposition_is("\xc0\xafx", 3, "attachment; filename=\"__x\""));
        CHECK(disposition_is("\xed\xa0\x80", 3, "attachment; filename=\"___\""));
        /* cut at 255 bytes, at a character boundary */
        char name[300];
        memset(name, 'n', sizeof(name));
        char want[400];
        int w = snprintf(want, sizeof(want), "attachment; filename=\"%.*s\"", 255, name);
        CHECK(w > 0 && disposition_is(name, sizeof(name), want));
        memcpy(name + 254, "\xc3\xa9", 2); /* a 2-byte character across the cut */
        w = snprintf(want, sizeof(want), "attachment; filename=\"%.*s\"", 254, name);
        CHECK(w > 0 && disposition_is(name, sizeof(name), want));
        /* an empty name gives nothing; a short buffer is refused */
        char out[CHP_HTTP_DISPOSITION_MAX];
        CHECK_EQ(chp_http_content_disposition((const uint8_t *)"", 0, out, sizeof(out)), -EINVAL);
        CHECK_EQ(chp_http_content_disposition((const uint8_t *)"a", 1, out, 100), -ENOBUFS);
        /* the longest value fits: 255 bytes that each become %XX */
        uint8_t worst[CHP_HTTP_FILENAME_MAX];
        for (size_t i = 0; i < sizeof(worst); i += 3)
                memcpy(worst + i, "\xe2\x82\xac", 3);
        CHECK(chp_http_content_disposition(worst, sizeof(worst), out, sizeof(out)) > 0);
        CHECK(strlen(out) < sizeof(out));
        release();
}

TEST(header_errors)
{
        static const struct {
                const char *head;
                size_t len;
                ssize_t rc;
        } t[] = {
            ROW("GET / HTTP/1.1\r\nHost : x\r\n\r\n", CHP_EHTTP_BAD), /* space before colon */
            ROW("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\n Host: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", CHP_EHTTP_BAD), /* obs-fold */
            ROW("GET / HTTP/1.1\r\nA: b\r\n\tfolded\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\n: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nHost x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nHost\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nH\xc3\xa9: x\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: \x1b[0m\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\vc\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA\0: bc\r\n\r\n", CHP_EHTTP_BAD),
            ROW("GET / HTTP/1.1\r\nA: b\r\n\0\r\n\r\n", CHP_EHTTP_BAD),
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                ssize_t rc = code_n(t[i].head, t[i].len);
                if (rc != t[i].rc)
                        fprintf(stderr, "  row %zu: %zd\n", i, rc);
                CHECK_EQ(rc, t[i].rc);
        }
        /* obs-text, HTAB and SP are field content */
        struct chp_http_request r;
        const char *ok = "GET / HTTP/1.1\r\nX: caf\xc3\xa9 \xff\tb\r\n\r\n";
        CHECK_EQ(parse(ok, &r), strlen(ok));
        CHECK(value_is(&r, "x", "caf\xc3\xa9 \xff\tb"));
        const char *tchars = "GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n";
        CHECK_EQ(parse(tchars, &r), strlen(tchars));
        CHECK(str_is(r.headers[0].name, "!#$%&'*+-.^_`|~09azAZ"));
        release();
}

TEST(value_whitespace_is_trimmed)
{
        struct chp_http_request r;
        const char *h =
            "GET / HTTP/1.1\r\nA:b\r\nB:   two words \t \r\nC:\r\nD: \t\r\nE:\t\tx\n\r\n";
        REQUIRE(parse(h, &r) == (ssize_t)strlen(h));
        REQUIRE(r.nheaders == 5);
        CHECK(str_is(r.headers[0].value, "b"));
        CHECK(str_is(r.headers[1].value, "two words"));
        CHECK(str_is(r.headers[2].value, ""));
        CHECK(str_is(r.headers[3].value, ""));
        CHECK(str_is(r.headers[4].value, "x"));
        CHECK(str_is(r.headers[4].name, "E"));
        release();
}

TEST(lookup_is_case_insensitive)
{
        struct chp_http_request r;
        const char *h = "GET / HTTP/1.1\r\nUpload-Offset: 5\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n";
        REQUIRE(parse(h, &r) == (ssize_t)strlen(h));
        CHECK(value_is(&r, "upload-offset", "5"));
        CHECK(value_is(&r, "UPLOAD-OFFSET", "5"));
        CHECK(value_is(&r, "Upload-Offset", "5"));
        CHECK(value_is(&r, "x-a", "1")); /* the first */
        CHECK(chp_http_header(&r, "Upload-Offse") == NULL);
        CHECK(chp_http_header(&r, "Upload-Offsets") == NULL);
        CHECK(chp_http_header(&r, "") == NULL);
        CHECK_EQ(chp_http_header_count(&r, "X-a"), 3);
        CHECK_EQ(chp_http_header_count(&r, "upload-offset"), 1);
        CHECK_EQ(chp_http_header_count(&r, "Content-Length"), 0);

        CHECK(chp_http_str_ieq(S("Content-Length"), "content-length"));
        CHECK(chp_http_str_ieq(S(""), ""));
        CHECK(chp_http_str_ieq((struct chp_http_str){NULL, 0}, ""));
        CHECK(!chp_http_str_ieq(S("Content-Lengt"), "content-length"));
        CHECK(!chp_http_str_ieq(S("Content-Length"), "content-lengt"));
        CHECK(!chp_http_str_ieq(S("a"), ""));
        CHECK(!chp_http_str_ieq(S("["), "{")); /* only letters fold: '[' is 'Z' + 1 */
        CHECK(!chp_http_str_ieq(S("@"), "`"));
        release();
}

TEST(out_is_cleared_on_error)
{
        struct chp_http_request r;
        memset(&r, 0xa5, sizeof(r));
        CHECK_EQ(parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC : 3\r\n\r\n", &r), CHP_EHTTP_BAD);
        CHECK_EQ(r.nheaders, 0);
        CHECK(r.target.p == NULL && r.target.n == 0);
        CHECK(r.headers[0].name.p == NULL && r.headers[1].value.n == 0);
        memset(&r, 0xa5, sizeof(r));
        CHECK_EQ(parse("GET / HTTP/1.1\r\nA: 1\r\n", &r), -EAGAIN);
        CHECK_EQ(r.nheaders, 0);
        CHECK(r.headers[0].value.p == NULL);
        release();
}

/* ---- limits ---- */

/* "GET <target> HTTP/1.1\r\n" + nheaders "H<i>: v\r\n" + "\r\n" into buf (cap bytes). */
static size_t build_head(char *buf, size_t cap, size_t target_len, size_t nheaders)
{
        size_t n = 0;
        memcpy(buf, "GET /", 5);
        n = 5;
        for (size_t i = 1; i < target_len; i++)
                buf[n++] = (char)('a' + i % 26);
        n += (size_t)snprintf(buf + n, cap - n, " HTTP/1.1\r\n");
        for (size_t i = 0; i < nheaders; i++)
                n += (size_t)snprintf(buf + n, cap - n, "H%zu: v\r\n", i);
        n += (size_t)snprintf(buf + n, cap - n, "\r\n");
        return n;
}

TEST(header_count_limit)
{
        static char buf[8192];
        struct chp_http_request r;
        size_t n = build_head(buf, sizeof(buf), 1, CHP_HTTP_MAX_HEADERS);
        REQUIRE(parse_n(buf, n, &r) == (ssize_t)n);
        CHECK_EQ(r.nheaders, CHP_HTTP_MAX_HEADERS);
        CHECK(str_is(r.headers[63].name, "H63"));
        CHECK_EQ(chp_http_header_count(&r, "h63"), 1);
        n = build_head(buf, sizeof(buf), 1, CHP_HTTP_MAX_HEADERS + 1);
        CHECK_EQ(parse_n(buf, n, &r), CHP_EHTTP_HEADERS);
        CHECK_EQ(r.nheaders, 0);
        /* after the 64th, a folded line is still malformed rather than one header too many */
        n = build_head(buf, sizeof(buf), 1, CHP_HTTP_MAX_HEADERS);
        memcpy(buf + n - 2, " folded\r\n\r\n", 11);
        CHECK_EQ(parse_n(buf, n + 9, &r), CHP_EHTTP_BAD);
        release();
}

TEST(target_limit)
{
        static char buf[8192];
        struct chp_http_request r;
        size_t n = build_head(buf, sizeof(buf), CHP_HTTP_MAX_TARGET, 1);
        REQUIRE(parse_n(buf, n, &r) == (ssize_t)n);
        CHECK_EQ(r.target.n, CHP_HTTP_MAX_TARGET);
        CHECK(r.target.p[0] == '/');
        n = build_head(buf, sizeof(buf), CHP_HTTP_MAX_TARGET + 1, 1);
        CHECK_EQ(parse_n(buf, n, &r), CHP_EHTTP_TARGET);
        /* known as soon as the 2049th byte arrives, before the line ends */
        CHECK_EQ(code_n(buf, 4 + CHP_HTTP_MAX_TARGET), -EAGAIN);
        CHECK_EQ(code_n(buf, 4 + CHP_HTTP_MAX_TARGET + 1), CHP_EHTTP_TARGET);
        release();
}

/* A complete head of exactly total bytes: one header X whose value fills it. */
static char *head_of_size(size_t total)
{
        static const char pre[] = "POST /files/ HTTP/1.1\r\nX: ", post[] = "\r\n\r\n";
        char *b = malloc(total);
        if (!b)
                abort();
        memcpy(b, pre, sizeof(pre) - 1);
        memset(b + sizeof(pre) - 1, 'v', total - (sizeof(pre) - 1) - (sizeof(post) - 1));
        memcpy(b + total - (sizeof(post) - 1), post, sizeof(post) - 1);
        return b;
}

TEST(head_size_limit)
{
        struct chp_http_request r;
        char *b = head_of_size(CHP_HTTP_MAX_HEAD);
        CHECK_EQ(chp_http_parse_request(b, CHP_HTTP_MAX_HEAD, &r), CHP_HTTP_MAX_HEAD);
        CHECK_EQ(r.headers[0].value.n, CHP_HTTP_MAX_HEAD - 30);
        /* one byte short of complete: still waiting; the whole buffer minus the last byte */
        CHECK_EQ(chp_http_parse_request(b, CHP_HTTP_MAX_HEAD - 1, &r), -EAGAIN);
        free(b);

        b = head_of_size(CHP_HTTP_MAX_HEAD + 1);
        CHECK_EQ(chp_http_parse_request(b, CHP_HTTP_MAX_HEAD + 1, &r), CHP_EHTTP_HEADERS);
        CHECK_EQ(chp_http_parse_request(b, CHP_HTTP_MAX_HEAD, &r), CHP_EHTTP_HEADERS);
        CHECK_EQ(chp_http_parse_request(b, CHP_HTTP_MAX_HEAD - 1, &r), -EAGAIN);
        free(b);

        /* a small head followed by a large body is fine */
        size_t big = 3 * CHP_HTTP_MAX_HEAD;
        b = malloc(big);
        REQUIRE(b);
        memset(b, 'x', big);
        memcpy(b, TUS_HEAD, strlen(TUS_HEAD));
        CHECK_EQ(chp_http_parse_request(b, big, &r), strlen(TUS_HEAD));
        /* an error inside the limit wins over the size */
        memcpy(b, "GET / HTTP/1.1\r\nA : b", 21);
        CHECK_EQ(chp_http_parse_request(b, big, &r), CHP_EHTTP_BAD);
        free(b);
}

/* ---- a head that arrives in pieces ---- */

static bool same_str(struct chp_http_str a, const char *abase, struct chp_http_str b,
                     const char *bbase)
{
        return a.n == b.n && (a.p == NULL) == (b.p == NULL) && (!a.p || a.p - abase == b.p - bbase);
}

/* Whether a (parsed from abase) and b (from bbase) are the same request at the same offsets. */
static bool same_request(const struct chp_http_request *a, const char *abase,
                         const struct chp_http_request *b, const char *bbase)
{
        if (a->method != b->method || a->minor != b->minor || a->nheaders != b->nheaders ||
            !same_str(a->target, abase, b->target, bbase) ||
            !same_str(a->authority, abase, b->authority, bbase))
                return false;
        for (size_t k = 0; k < a->nheaders; k++)
                if (!same_str(a->headers[k].name, abase, b->headers[k].name, bbase) ||
                    !same_str(a->headers[k].value, abase, b->headers[k].value, bbase))
                        return false;
        return true;
}

/* s fed to chp_http_parse_resume cut at k (k == 0: a byte at a time), each piece appended to an
 * exact-size copy that moves on every call; the result, checked against the one-shot parse. */
static bool pieces_match(const char *s, size_t len, size_t k)
{
        struct chp_http_request one, r;
        ssize_t want = chp_http_parse_request(s, len, &one);
        struct chp_http_parser ps;
        chp_http_parser_init(&ps);
        ssize_t got = -EAGAIN;
        char *copy = NULL;
        for (size_t have = 0; got == -EAGAIN && have < len;) {
                have = k == 0 ? have + 1 : have < k ? k : len;
                free(copy);
                copy = malloc(have);
                if (!copy)
                        abort();
                memcpy(copy, s, have);
                got = chp_http_parse_resume(&ps, copy, have, &r);
                if (got == -EAGAIN && ps.pos != have)
                        got = -EINVAL; /* every byte given must have been taken in */
        }
        bool ok = got == want && (want <= 0 || same_request(&one, s, &r, copy));
        free(copy);
        if (!ok)
                fprintf(stderr, "  cut at %zu: %zd, one-shot %zd\n", k, got, want);
        return ok;
}

TEST(resume_matches_one_shot)
{
        static const char *const heads[] = {
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "\nGET / HTTP/1.0\nHost: a\nX:\n\n",
            "GET / HTTP/1.1\r\nX:   \t v a l \t \r\nY:\t\r\n\r\n",
            "GET http://a.example:80/x?q=1 HTTP/1.1\r\nHost: b\r\n\r\n",
            "OPTIONS https://a.example HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\r\n\r\n",
            "GET / HTTP/1.1\r\nA : b\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n\rX",
            "BREW / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET http://user@a/ HTTP/1.1\r\n\r\n",
        };
        for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
                size_t len = strlen(heads[h]);
                for (size_t k = 0; k < len; k++)
                        CHECK(pieces_match(heads[h], len, k));
        }
        for (size_t h = 0; h < sizeof(valid_heads) / sizeof(valid_heads[0]); h++) {
                size_t len = strlen(valid_heads[h]);
                for (size_t k = 0; k < len; k += 7)
                        CHECK(pieces_match(valid_heads[h], len, k));
        }
        char *b = head_of_size(CHP_HTTP_MAX_HEAD + 1);
        CHECK(pieces_match(b, CHP_HTTP_MAX_HEAD + 1, 100));
        free(b);
}

/* A 16 KB head that arrives a byte at a time costs O(n): each call looks only at the new byte.
 * Proved by overwriting every field-line byte already looked at with NUL (a 400 if it were read
 * again) before the next call; the head still parses, whole. */
TEST(resume_reads_each_byte_once)
{
        static const char line[] = "PATCH /files/abc HTTP/1.1\r\n";
        char *b = malloc(CHP_HTTP_MAX_HEAD);
        REQUIRE(b);
        size_t n = (size_t)snprintf(b, CHP_HTTP_MAX_HEAD, "%sHost: x\r\n", line);
        for (int k = 0; k < 58; k++) {
                n += (size_t)snprintf(b + n, CHP_HTTP_MAX_HEAD - n, "X-Pad-%02d: ", k);
                memset(b + n, 'a', 264);
                n += 264;
                memcpy(b + n, "\r\n", 2);
                n += 2;
        }
        memcpy(b + n, "\r\n", 2);
        n += 2;
        REQUIRE(n > 16000 && n <= CHP_HTTP_MAX_HEAD);

        struct chp_http_parser ps;
        struct chp_http_request r;
        chp_http_parser_init(&ps);
        ssize_t rc = -EAGAIN;
        size_t len = 0, calls = 0;
        while (rc == -EAGAIN && len < n) {
                rc = chp_http_parse_resume(&ps, b, ++len, &r);
                calls++;
                if (rc == -EAGAIN) {
                        CHECK_EQ(ps.pos, len);
                        if (len > sizeof(line) - 1)
                                b[len - 1] = '\0';
                }
        }
        CHECK_EQ(rc, n);
        CHECK_EQ(calls, n);
        CHECK_EQ(r.nheaders, 59);
        CHECK_EQ(r.method, CHP_HTTP_PATCH);
        CHECK(str_is(r.target, "/files/abc"));
        CHECK_EQ(r.headers[58].value.n, 264);
        free(b);
}

/* ---- numbers ---- */

TEST(parse_u64)
{
        static const struct {
                const char *s;
                int rc;
                uint64_t v;
        } t[] = {
            {"0", 0, 0},
            {"1", 0, 1},
            {"007", 0, 7},
            {"1048576", 0, 1048576},
            {"9223372036854775807", 0, INT64_MAX},
            {"0009223372036854775807", 0, INT64_MAX},
            {"9223372036854775808", -EINVAL, 0},
            {"18446744073709551615", -EINVAL, 0},
            {"18446744073709551616", -EINVAL, 0},
            {"99999999999999999999999", -EINVAL, 0},
            {"", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {"+1", -EINVAL, 0},
            {"-0", -EINVAL, 0},
            {" 1", -EINVAL, 0},
            {"1 ", -EINVAL, 0},
            {"1 2", -EINVAL, 0},
            {"0x10", -EINVAL, 0},
            {"1e3", -EINVAL, 0},
            {"1.0", -EINVAL, 0},
            {"12a", -EINVAL, 0},
            {"1,2", -EINVAL, 0},
            {"\xd9\xa1", -EINVAL, 0}, /* ARABIC-INDIC DIGIT ONE */
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                uint64_t v = 12345;
                int rc = chp_http_parse_u64(S(t[i].s), &v);
                if (rc != t[i].rc || v != t[i].v)
                        fprintf(stderr, "  row %zu \"%s\"\n", i, t[i].s);
                CHECK_EQ(rc, t[i].rc);
                CHECK(v == t[i].v);
        }
        uint64_t v = 1;
        CHECK_EQ(chp_http_parse_u64((struct chp_http_str){NULL, 0}, &v), -EINVAL);
        CHECK_EQ(v, 0);
        release();
}

TEST(range)
{
        static const struct {
                const char *s;
                uint64_t len;
                int rc;
                uint64_t first, last;
        } t[] = {
            /* RFC 9110 14.1.2, a representation of 10000 bytes */
            {"bytes=0-499", 10000, 0, 0, 499},
            {"bytes=500-999", 10000, 0, 500, 999},
            {"bytes=-500", 10000, 0, 9500, 9999},
            {"bytes=9500-", 10000, 0, 9500, 9999},
            {"bytes=0-0,-1", 10000, -EINVAL, 0, 0},
            {"bytes= 0-999, 4500-5499, -1000", 10000, -EINVAL, 0, 0},
            {"bytes=500-600,601-999", 10000, -EINVAL, 0, 0},
            {"bytes=500-700,601-999", 10000, -EINVAL, 0, 0},
            /* RFC 9110 14.1.1 */
            {"bytes=0-", 10000, 0, 0, 9999},
            {"bytes=0-0", 10000, 0, 0, 0},
            {"bytes=-1", 10000, 0, 9999, 9999},
            /* last-pos past the end is clamped; a suffix longer than len is the whole */
            {"bytes=0-99999", 10000, 0, 0, 9999},
            {"bytes=9999-10000", 10000, 0, 9999, 9999},
            {"bytes=-10000", 10000, 0, 0, 9999},
            {"bytes=-20000", 10000, 0, 0, 9999},
            {"bytes=0-18446744073709551615", 10000, 0, 0, 9999},
            {"bytes=-18446744073709551615", 10000, 0, 0, 9999},
            {"bytes=5-5", 6, 0, 5, 5},
            {"bytes=0-", 1, 0, 0, 0},
            {"bytes=-1", 1, 0, 0, 0},
            {"bytes=0-0", UINT64_MAX, 0, 0, 0},
            {"bytes=18446744073709551614-", UINT64_MAX, 0, UINT64_MAX - 1, UINT64_MAX - 1},
            {"bytes=-1", UINT64_MAX, 0, UINT64_MAX - 1, UINT64_MAX - 1},
            /* the unit is case-insensitive; whitespace around is tolerated */
            {"Bytes=1-2", 10, 0, 1, 2},
            {"BYTES=1-2", 10, 0, 1, 2},
            {"  bytes=1-2\t", 10, 0, 1, 2},
            {"bytes= 1-2", 10, 0, 1, 2},
            {"bytes=0001-0002", 10, 0, 1, 2},
            /* unsatisfiable: 416 */
            {"bytes=10000-", 10000, -ERANGE, 0, 0},
            {"bytes=10000-20000", 10000, -ERANGE, 0, 0},
            {"bytes=-0", 10000, -ERANGE, 0, 0},
            {"bytes=0-", 0, -ERANGE, 0, 0},
            {"bytes=0-0", 0, -ERANGE, 0, 0},
            {"bytes=-1", 0, -ERANGE, 0, 0},
            {"bytes=-0", 0, -ERANGE, 0, 0},
            {"bytes=18446744073709551615-", UINT64_MAX, -ERANGE, 0, 0},
            /* malformed: ignore the header */
            {"", 10, -EINVAL, 0, 0},
            {"bytes=", 10, -EINVAL, 0, 0},
            {"bytes=-", 10, -EINVAL, 0, 0},
            {"bytes", 10, -EINVAL, 0, 0},
            {"bytes 0-1", 10, -EINVAL, 0, 0},
            {"bytes =0-1", 10, -EINVAL, 0, 0},
            {"bytes=5-4", 10, -EINVAL, 0, 0},
            {"bytes=5-4", 0, -EINVAL, 0, 0},
            {"bytes=20-4", 10, -EINVAL, 0, 0},
            {"bytes=1", 10, -EINVAL, 0, 0},
            {"bytes=1-2-3", 10, -EINVAL, 0, 0},
            {"bytes=--1", 10, -EINVAL, 0, 0},
            {"bytes=-1-", 10, -EINVAL, 0, 0},
            {"bytes=+1-2", 10, -EINVAL, 0, 0},
            {"bytes=1-+2", 10, -EINVAL, 0, 0},
            {"bytes=1 -2", 10, -EINVAL, 0, 0},
            {"bytes=1- 2", 10, -EINVAL, 0, 0},
            {"bytes=0x1-2", 10, -EINVAL, 0, 0},
            {"bytes=1-2,", 10, -EINVAL, 0, 0},
            {",bytes=1-2", 10, -EINVAL, 0, 0},
            {"items=0-1", 10, -EINVAL, 0, 0},
            {"bytess=0-1", 10, -EINVAL, 0, 0},
            {"bytes=18446744073709551616-", 10, -EINVAL, 0, 0},
            {"bytes=0-18446744073709551616", 10, -EINVAL, 0, 0},
            {"bytes=-18446744073709551616", 10, -EINVAL, 0, 0},
            {"bytes=99999999999999999999-", 10, -EINVAL, 0, 0},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                uint64_t first = 77, last = 77;
                int rc = chp_http_parse_range(S(t[i].s), t[i].len, &first, &last);
                if (rc != t[i].rc || first != t[i].first || last != t[i].last)
                        fprintf(stderr,
                                "  row %zu \"%s\" len %" PRIu64 ": %d [%" PRIu64 ", %" PRIu64 "]\n",
                                i, t[i].s, t[i].len, rc, first, last);
                CHECK_EQ(rc, t[i].rc);
                CHECK(first == t[i].first && last == t[i].last);
        }
        release();
}

/* ---- base64 and the tus headers ---- */

/* A reference encoder, to round-trip every length and byte value. */
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

static ssize_t b64(const char *s, uint8_t *out, size_t cap)
{
        struct chp_http_str h = S(s);
        return chp_http_base64_decode(h.p, h.n, out, cap);
}

TEST(base64_rfc4648_vectors)
{
        static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                          "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
        const char *plain = "foobar";
        for (size_t i = 0; i < 7; i++) {
                uint8_t out[8];
                memset(out, 0, sizeof(out));
                CHECK_EQ(b64(enc[i], out, sizeof(out)), i);
                CHECK(memcmp(out, plain, i) == 0);
                /* an exact-size output is enough, one byte less is not */
                if (i > 0) {
                        uint8_t *exact = malloc(i);
                        REQUIRE(exact);
                        CHECK_EQ(b64(enc[i], exact, i), i);
                        CHECK(memcmp(exact, plain, i) == 0);
                        CHECK_EQ(b64(enc[i], exact, i - 1), -EINVAL);
                        free(exact);
                }
        }
        CHECK_EQ(chp_http_base64_decode(NULL, 0, NULL, 0), 0);
        uint8_t out[4];
        CHECK_EQ(b64("/+8=", out, sizeof(out)), 2);
        CHECK(out[0] == 0xff && out[1] == 0xef);
        release();
}

TEST(base64_rejects)
{
#define B(lit)                                                                                     \
        {                                                                                          \
                lit, sizeof(lit) - 1                                                               \
        }
        static const struct {
                const char *s;
                size_t n;
        } bad[] = {
            /* not whole quanta */
            B("Z"),
            B("Zg"),
            B("Zg="),
            B("Zm9vY"),
            B("Zg==="),
            B("Zm9vYg="),
            /* non-zero trailing bits */
            B("Zh=="),
            B("Zm9="),
            B("Zm9vYh=="),
            B("Zm9vYmF="),
            B("AB=="),
            /* padding misplaced */
            B("=Zg="),
            B("Z==="),
            B("===="),
            B("Zg==Zg=="),
            B("Zm8=Zm9v"),
            B("Z=g="),
            /* outside the alphabet */
            B("Zm-v"),
            B("Zm_v"),
            B("Zm9v\n"),
            B(" Zm9v"),
            B("Zm 9"),
            B("Zm9\x80"),
            B("Zm9\0"),
        };
#undef B
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                uint8_t out[16];
                memset(out, 0x5a, sizeof(out));
                ssize_t rc =
                    chp_http_base64_decode(hold(bad[i].s, bad[i].n), bad[i].n, out, sizeof(out));
                if (rc != -EINVAL)
                        fprintf(stderr, "  \"%s\": %zd\n", bad[i].s, rc);
                CHECK_EQ(rc, -EINVAL);
                CHECK(out[0] == 0x5a); /* nothing written */
        }
        release();
}

TEST(base64_round_trip)
{
        uint8_t in[300], out[300];
        char enc[400];
        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t)(255 - i);
        for (size_t n = 0; n <= sizeof(in); n++) {
                size_t e = b64_encode(in, n, enc);
                char *exact = hold(enc, e);
                memset(out, 0, sizeof(out));
                CHECK_EQ(chp_http_base64_decode(exact, e, out, sizeof(out)), n);
                CHECK(memcmp(in, out, n) == 0);
        }
        release();
}

TEST(checksum)
{
        int algo = 7;
        uint8_t d[32];
        size_t dl = 7;
        static const uint8_t sha1_empty[20] = {0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b,
                                               0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60,
                                               0x18, 0x90, 0xaf, 0xd8, 0x07, 0x09};
        static const uint8_t sha256_empty[32] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                                 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
                                                 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c,
                                                 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
        CHECK_OK(chp_http_parse_checksum(S("sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk="), &algo, d, &dl));
        CHECK_EQ(algo, 1);
        CHECK_EQ(dl, 20);
        CHECK(memcmp(d, sha1_empty, 20) == 0);
        for (size_t i = 20; i < 32; i++)
                CHECK_EQ(d[i], 0);
        CHECK_OK(chp_http_parse_checksum(S("sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
                                         &algo, d, &dl));
        CHECK_EQ(algo, 256);
        CHECK_EQ(dl, 32);
        CHECK(memcmp(d, sha256_empty, 32) == 0);

        static const struct {
                const char *s;
                int rc;
        } t[] = {
            {"md5 1B2M2Y8AsgTpgAmY7PhCfg==", -ENOTSUP},
            {"crc32 AAAAAA==", -ENOTSUP},
            {"SHA1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -ENOTSUP}, /* names are lowercase */
            {"Sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", -ENOTSUP},
            {"sha512 x", -ENOTSUP},
            {"", -EINVAL},
            {"sha1", -EINVAL},
            {"sha1 ", -EINVAL},
            {" sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -EINVAL},
            {"sha1  2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -EINVAL},
            {"sha1\t2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -EINVAL},
            {"sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk= ", -EINVAL},
            {"sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk", -EINVAL},
            {"sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwl=", -EINVAL}, /* trailing bits */
            {"sha1 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", -EINVAL},
            {"sha256 2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -EINVAL},
            {"sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=AAAA", -EINVAL},
            {"sha256 47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=", -EINVAL}, /* base64url */
            {"sh(a1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=", -EINVAL},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                algo = 7;
                dl = 7;
                memset(d, 0x5a, sizeof(d));
                int rc = chp_http_parse_checksum(S(t[i].s), &algo, d, &dl);
                if (rc != t[i].rc)
                        fprintf(stderr, "  \"%s\": %d\n", t[i].s, rc);
                CHECK_EQ(rc, t[i].rc);
                CHECK(algo == 0 && dl == 0 && d[0] == 0 && d[31] == 0);
        }
        CHECK_EQ(chp_http_parse_checksum((struct chp_http_str){NULL, 0}, &algo, d, &dl), -EINVAL);
        release();
}

TEST(metadata)
{
        static const struct {
                const char *s;
                int rc;
        } t[] = {
            {"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential", 0}, /* tus spec */
            {"", 0},
            {" \t ", 0},
            {"key", 0},
            {"key ", 0}, /* tus-js-client's empty value */
            {"a ,b YQ==", 0},
            {"filename aGVsbG8udHh0,filetype dGV4dC9wbGFpbg==", 0},
            {"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==, is_confidential", 0},
            {"a YQ== , b Yg==", 0},
            {"a,ab,abc,b", 0},
            {"name\xc3\xa9 YQ==", 0},
            {"a,a", -EINVAL},
            {"a YQ==,a", -EINVAL},
            {"abc,b,abc Yg==", -EINVAL},
            {"a, a", -EINVAL},
            {",a", -EINVAL},
            {"a,", -EINVAL},
            {"a, ", -EINVAL},
            {"a,,b", -EINVAL},
            {",", -EINVAL},
            {" YQ==", 0}, /* leading OWS of a pair: the key is "YQ==" */
            {"a  YQ==", -EINVAL},
            {"a YQ== x", -EINVAL},
            {"a YQ", -EINVAL},
            {"a Yh==", -EINVAL},
            {"a YQ=!", -EINVAL},
            {"k\tYQ==", -EINVAL},
            {"k\x01 YQ==", -EINVAL},
            {"k\x7f YQ==", -EINVAL},
            {"a-YQ==", 0}, /* a key, no value */
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                int rc = chp_http_check_metadata(S(t[i].s));
                if (rc != t[i].rc)
                        fprintf(stderr, "  \"%s\": %d\n", t[i].s, rc);
                CHECK_EQ(rc, t[i].rc);
        }
        CHECK_OK(chp_http_check_metadata((struct chp_http_str){NULL, 0}));
        release();
}

/* n distinct keys "k<i> dg==" joined by commas, then dup's key again when dup < n. */
static size_t many_keys(char *buf, size_t cap, size_t n, size_t dup)
{
        size_t o = 0;
        for (size_t i = 0; i < n; i++)
                o += (size_t)snprintf(buf + o, cap - o, "%sk%zu dg==", i ? "," : "", i);
        if (dup < n)
                o += (size_t)snprintf(buf + o, cap - o, ",k%zu", dup);
        return o;
}

TEST(metadata_many_keys)
{
        static char buf[1 << 17];
        /* fits a request head (sorted path) */
        size_t n = many_keys(buf, sizeof(buf), 1500, SIZE_MAX);
        REQUIRE(n <= CHP_HTTP_MAX_HEAD);
        CHECK_OK(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}));
        n = many_keys(buf, sizeof(buf), 1500, 777);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}), -EINVAL);
        n = many_keys(buf, sizeof(buf), 1500, 0);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}), -EINVAL);
        n = many_keys(buf, sizeof(buf), 1500, 1499);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}), -EINVAL);
        /* the most keys a head can hold: one byte each */
        size_t o = 0;
        for (size_t i = 0; o + 2 <= CHP_HTTP_MAX_HEAD; i++) {
                buf[o++] = (char)('!' + i % 90 + (i % 90 >= 11)); /* skip ',' */
                buf[o++] = ',';
        }
        buf[o - 1] = 'x';
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, o - 1), o - 1}), -EINVAL);
        /* longer than a head (the quadratic path) */
        n = many_keys(buf, sizeof(buf), 3000, SIZE_MAX);
        REQUIRE(n > CHP_HTTP_MAX_HEAD);
        CHECK_OK(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}));
        n = many_keys(buf, sizeof(buf), 3000, 2999);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}), -EINVAL);
        n = many_keys(buf, sizeof(buf), 3000, 5);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n), n}), -EINVAL);
        memcpy(buf + n, ",", 1);
        CHECK_EQ(chp_http_check_metadata((struct chp_http_str){hold(buf, n + 1), n + 1}), -EINVAL);
        release();
}

TEST(etag)
{
        static const struct {
                const char *s;
                bool match;
        } t[] = {
            {"\"abc\"", true},
            {"W/\"abc\"", true}, /* If-None-Match compares weakly */
            {"*", true},
            {" * ", true},
            {"\"x\", \"abc\"", true},
            {"\"x\",W/\"abc\" , \"y\"", true},
            {", \"abc\" ,", true},
            {"\"x\"", false},
            {"\"ab\"", false},
            {"\"abcd\"", false},
            {"\"ABC\"", false},
            {"", false},
            {"abc", false},
            {"\"abc", false},
            {"abc\"", false},
            {"w/\"abc\"", false},
            {"W\"abc\"", false},
            {"W/ \"abc\"", false},
            {"\"abc\" \"x\"", false},
            {"\"abc\", garbage", false},
            {"*, \"abc\"", false},
            {"**", false},
            {"\"a bc\"", false},
            {"\"abc\"x", false},
        };
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
                bool m = chp_http_etag_matches(S(t[i].s), "abc");
                if (m != t[i].match)
                        fprintf(stderr, "  '%s'\n", t[i].s);
                CHECK(m == t[i].match);
        }
        CHECK(chp_http_etag_matches(S("\"\""), ""));
        CHECK(!chp_http_etag_matches(S("\"\""), "a"));
        CHECK(chp_http_etag_matches(S("\"caf\xc3\xa9\""), "caf\xc3\xa9"));
        CHECK(!chp_http_etag_matches((struct chp_http_str){NULL, 0}, "abc"));
        release();
}

/* The request parser and the header helpers allocate nothing (http.h): the sweep must find no
 * allocation to fail. */
static int http_pass(void *arg)
{
        (void)arg;
        static const char req[] = "PATCH /files/abc HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                                  "Upload-Offset: 65536\r\nContent-Length: 10\r\n\r\n";
        struct chp_http_request r;
        ssize_t n = chp_http_parse_request(req, sizeof(req) - 1, &r);
        if (n < 0)
                return (int)n;
        const struct chp_http_str *off = chp_http_header(&r, "upload-offset");
        uint64_t v = 0;
        int rc = off ? chp_http_parse_u64(*off, &v) : 1;
        if (rc)
                return rc;
        return (size_t)n == sizeof(req) - 1 && v == 65536 ? 0 : 1;
}

TEST(query_and_percent)
{
        struct chp_http_str t = {"/f/x?a=1&origin=ab&b&origin=cd", 30}, q, v;
        q = chp_http_target_query(t);
        CHECK(str_is(q, "a=1&origin=ab&b&origin=cd"));
        CHECK_EQ(chp_http_query_param(q, "origin", &v), 2u); /* repeats are counted */
        CHECK(str_is(v, "ab"));                              /* the first is given */
        CHECK_EQ(chp_http_query_param(q, "b", &v), 1u);
        CHECK(str_is(v, ""));
        CHECK_EQ(chp_http_query_param(q, "or", &v), 0u); /* a prefix is not the name */
        CHECK_EQ(chp_http_query_param(q, "a", &v), 1u);
        CHECK(str_is(v, "1"));
        CHECK_EQ(chp_http_target_query((struct chp_http_str){"/f/x", 4}).n, 0u);
        CHECK_EQ(chp_http_target_query((struct chp_http_str){"/f/x?", 5}).n, 0u);

        char out[32];
        CHECK_EQ(chp_http_pct_decode("gr%C3%bc+x", 10, false, out, sizeof(out)), 6);
        CHECK(memcmp(out, "gr\xc3\xbc+x", 6) == 0); /* either case; '+' kept in a path */
        CHECK_EQ(chp_http_pct_decode("a+b%20", 6, true, out, sizeof(out)), 4);
        CHECK(memcmp(out, "a b ", 4) == 0); /* form encoding: '+' is a space */
        CHECK_EQ(chp_http_pct_decode("a%2", 3, false, out, sizeof(out)), -EINVAL);
        CHECK_EQ(chp_http_pct_decode("a%", 2, false, out, sizeof(out)), -EINVAL);
        CHECK_EQ(chp_http_pct_decode("%g1", 3, false, out, sizeof(out)), -EINVAL);
        CHECK_EQ(chp_http_pct_decode("a%00", 4, false, out, sizeof(out)), -EINVAL);
        CHECK_EQ(chp_http_pct_decode("abc", 3, false, out, 2), -ENOBUFS);
        CHECK_EQ(chp_http_pct_decode("", 0, false, out, 0), 0);
}

TEST(allocation_failure)
{
        CHECK_EQ(tu_alloc_sweep("http parser", http_pass, NULL, 0), 0);
}

HARNESS_MAIN()
