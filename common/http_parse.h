/* http_parse.h — a strict HTTP/1.1 request-head parser and the header values chapar's HTTP face
 * reads (tus 1.0 upload headers, Range, ETag preconditions), in the picohttpparser style.
 *
 * chp_http_parse_request parses a request head (request line + headers + empty line) from
 * buf[0..len) (chp_http_parse_resume: as it arrives, each byte looked at once): it allocates
 * nothing, never reads past len, and points into buf (borrowed: valid while buf is and
 * unchanged). Returns the bytes the head takes (the body starts there),
 * -EAGAIN when the head is not complete yet, or a CHP_EHTTP_* code of err.h telling which
 * status to answer (400, 414, 431, 501, 505: chp_err_http_status). Value parsers return 0 or
 * -EINVAL (and the codes their comments add: -ERANGE, -ENOTSUP). Pure functions; any thread.
 */
#ifndef CHP_HTTP_PARSE_H
#define CHP_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define CHP_HTTP_MAX_HEADERS    64
#define CHP_HTTP_MAX_TARGET     2048          /* bytes of the request target */
#define CHP_HTTP_MAX_HEAD       (16 * 1024)   /* bytes of the whole request head */


enum chp_http_method {
        CHP_HTTP_GET, CHP_HTTP_HEAD, CHP_HTTP_POST, CHP_HTTP_PATCH, CHP_HTTP_DELETE,
        CHP_HTTP_OPTIONS, CHP_HTTP_PUT,
};

struct chp_http_str {
        const char *p; /* into the caller's buffer, not NUL-terminated */
        size_t n;
};

struct chp_http_header {
        struct chp_http_str name, value; /* value without surrounding whitespace */
};

struct chp_http_request {
        enum chp_http_method method;
        /* The path and query: an origin-form target as sent, or what follows an absolute-form
         * target's authority -- which starts with '/', or is empty when that has no path (the
         * path is "/" then, and the query is not kept). */
        struct chp_http_str target;
        struct chp_http_str authority; /* absolute-form only: host[:port]; else empty */
        int minor;                  /* HTTP/1.<minor>: 0 or 1 */
        struct chp_http_header headers[CHP_HTTP_MAX_HEADERS];
        size_t nheaders;
};

/* Rules: request line "METHOD SP target SP HTTP/1.x CRLF" (a bare LF is accepted as line end;
 * no leading empty lines beyond one CRLF); method among enum chp_http_method (another token:
 * EMETHOD; not a token: EBAD); target origin-form or absolute-form (http or https, an
 * authority that chp_http_check_host accepts, not empty and without userinfo; RFC 9112
 * 3.2.2), visible ASCII only, at most CHP_HTTP_MAX_TARGET bytes (longer: ETARGET); header
 * names are tokens, no whitespace before the colon, no obs-fold (a line starting with SP/HT: EBAD), values without CTLs other than HT;
 * at most CHP_HTTP_MAX_HEADERS headers and CHP_HTTP_MAX_HEAD bytes in all (EHEADERS; a head
 * that is not complete within CHP_HTTP_MAX_HEAD bytes is EHEADERS, not EAGAIN). */
__attribute__((warn_unused_result)) ssize_t chp_http_parse_request(
        const char *buf, size_t len, struct chp_http_request *out /* out */);

/* Where the parse of one request head stands, so that a head arriving in pieces is parsed once:
 * each call goes on from the byte where the last one stopped (picohttpparser's last_len, carried
 * through the whole head: no byte is looked at twice). Caller-owned, allocates nothing; the
 * fields are the parser's own. */
struct chp_http_parser {
        size_t pos;     /* bytes of the head looked at */
        int state;
        bool cr;        /* the last byte was a CR: its LF is due */
        int32_t result; /* once there is one */
        uint16_t mark[4];
        uint16_t target[2], authority[2]; /* offsets into the head: start, end */
        enum chp_http_method method;
        int minor;
        size_t nheaders;
        uint16_t headers[CHP_HTTP_MAX_HEADERS][4]; /* name start, end; value start, end */
};

/* Sets ps up for a new request head. */
void chp_http_parser_init(struct chp_http_parser *ps);

/* Goes on parsing a request head from where the last call on ps stopped. buf[0..len) is the head
 * so far: the bytes earlier calls saw, unchanged (buf itself may have moved), then new ones.
 * Returns what chp_http_parse_request returns for buf[0..len) -- the same however the bytes were
 * cut -- but looks only at the new ones, so a head that arrives a byte at a time costs O(n).
 * Once the result is not -EAGAIN, every call returns it again (filling out again, from buf, on
 * success) until chp_http_parser_init. A len below the bytes ps has seen starts over. */
__attribute__((warn_unused_result)) ssize_t chp_http_parse_resume(
        struct chp_http_parser *ps, const char *buf, size_t len,
        struct chp_http_request *out /* out */);

/* Repoints r, parsed from the bytes at from, into a copy of them at to (so that the head can be
 * kept while the buffer it arrived in is reused). */
void chp_http_request_move(struct chp_http_request *r, const char *from, const char *to);

/* The first header named name (ASCII case-insensitive), or NULL. */
const struct chp_http_str *chp_http_header(const struct chp_http_request *r, const char *name);
/* How many headers are named name. */
size_t chp_http_header_count(const struct chp_http_request *r, const char *name);

/* Exact case-insensitive match of s against a C string. */
bool chp_http_str_ieq(struct chp_http_str s, const char *lit);

/* A non-negative decimal integer (Content-Length, Upload-Offset, Upload-Length): digits only,
 * no sign or spaces, at most 2^63-1. */
__attribute__((warn_unused_result)) int chp_http_parse_u64(struct chp_http_str s,
                                                           uint64_t *out /* out */);

/* A single byte range of a representation of size len ("bytes=a-b", "bytes=a-", "bytes=-n").
 * Returns 0 with [*first, *last] inclusive; -ERANGE when syntactically valid but unsatisfiable
 * (answer 416); -EINVAL when malformed or several ranges (ignore the header: answer 200). */
__attribute__((warn_unused_result)) int chp_http_parse_range(struct chp_http_str s, uint64_t len,
                                                             uint64_t *first /* out */,
                                                             uint64_t *last /* out */);

/* tus Upload-Checksum: "<algorithm> <base64 digest>". Algorithm "sha1" (20-byte digest) or
 * "sha256" (32 bytes) → *algo 1 or 256 and the decoded digest in out; -EINVAL when malformed
 * or the length does not fit the algorithm; -ENOTSUP for another algorithm (answer 400). */
__attribute__((warn_unused_result)) int chp_http_parse_checksum(struct chp_http_str s,
                                                                int *algo /* out */,
                                                                uint8_t out[32] /* out */,
                                                                size_t *out_len /* out */);

/* tus Upload-Metadata: comma-separated "key base64value" or "key" pairs; keys are non-empty,
 * without spaces or commas, unique; values valid base64. Returns 0 or -EINVAL (validation only:
 * the relay keeps the header as sent). */
__attribute__((warn_unused_result)) int chp_http_check_metadata(struct chp_http_str s);

/* Whether an If-None-Match value matches the entity tag etag (given without quotes): "*", or a
 * comma-separated list of (possibly weak W/) quoted tags, one equal to etag. */
bool chp_http_etag_matches(struct chp_http_str s, const char *etag);

/* A Host header value or an absolute-form authority (RFC 3986 3.2.2-3.2.3): uri-host [":" port]
 * where uri-host is a bracketed IPv6 address or a reg-name / IPv4 address of unreserved,
 * pct-encoded and sub-delims characters (may be empty), and port is at most 5 digits. 0 or
 * -EINVAL. Such a value holds no whitespace, '/', '@' or control byte. */
__attribute__((warn_unused_result)) int chp_http_check_host(struct chp_http_str s);

/* Whether an If-Range value lets a Range apply (RFC 9110 13.1.5): only an entity tag that is
 * strongly equal to "etag" (given without quotes). A weak tag, a date or anything malformed
 * does not match: then the whole representation is sent. */
bool chp_http_if_range_matches(struct chp_http_str s, const char *etag);

/* The decoded value of key in a tus Upload-Metadata value s (as chp_http_check_metadata accepts)
 * into out (cap bytes) and *out_len: 0 (a key without a value gives length 0), -ENOENT when the
 * key is absent, -EINVAL when its value does not decode into cap bytes. */
__attribute__((warn_unused_result)) int chp_http_metadata_get(struct chp_http_str s,
                                                              const char *key,
                                                              uint8_t *out /* out */, size_t cap,
                                                              size_t *out_len /* out */);

#define CHP_HTTP_MEDIA_TYPE_MAX 255 /* bytes of a media type served as Content-Type */

/* Whether s is a media type that may be served as a Content-Type: type "/" subtype, tokens,
 * then parameters "; name=value" (value a token or a quoted string without backslashes or
 * control bytes), at most CHP_HTTP_MEDIA_TYPE_MAX bytes. */
bool chp_http_media_type_ok(struct chp_http_str s);

#define CHP_HTTP_FILENAME_MAX    255 /* bytes of a file name used in Content-Disposition */
#define CHP_HTTP_DISPOSITION_MAX (64 + 4 * CHP_HTTP_FILENAME_MAX) /* its longest value + NUL */

/* A Content-Disposition value for a download named name[0..n) (any bytes: tus metadata):
 * attachment; filename="<ASCII fallback>" and, when the name is non-ASCII UTF-8,
 * filename*=UTF-8''<percent-encoded> (RFC 6266, RFC 8187). The name is cut to at most
 * CHP_HTTP_FILENAME_MAX bytes at a character boundary; in the fallback each non-ASCII
 * character, control byte, '"', '\\' and '/' becomes '_'; in filename* controls, '/' and '\\'
 * become '_' and everything but attr-char is percent-encoded. The result (NUL-terminated in
 * out, cap >= CHP_HTTP_DISPOSITION_MAX, else -ENOBUFS) is printable ASCII only. Returns its
 * length, or -EINVAL for an empty name. */
ssize_t chp_http_content_disposition(const uint8_t *name, size_t n, char *out /* out */,
                                     size_t cap);

/* The length of the UTF-8 sequence at p[0..n) (1..4; n >= 1), or 0 when it is not valid UTF-8
 * (an overlong form, a surrogate, past U+10FFFF, or cut short). */
size_t chp_http_utf8_len(const unsigned char *p, size_t n);

/* Standard base64 (RFC 4648 with padding) decode into out (cap bytes); returns the length or
 * -EINVAL. */
__attribute__((warn_unused_result)) ssize_t chp_http_base64_decode(const char *in, size_t n,
                                                                   uint8_t *out, size_t cap);

/* The query of a target (after the first '?'; empty when there is none). */
struct chp_http_str chp_http_target_query(struct chp_http_str target);

/* The value of parameter name in a query string (name=value pairs separated by '&'), still
 * percent-encoded, in *val. Returns how many times name appears (0: absent, *val untouched;
 * more than 1: the first is given; callers that take one value refuse repeats). A parameter
 * without '=' has an empty value. */
unsigned chp_http_query_param(struct chp_http_str query, const char *name,
                              struct chp_http_str *val /* out */);

/* Percent-decodes p[0..n) into out (cap bytes; n is always enough). plus_space: '+' is a space
 * (form encoding, RFC 1866 8.2.1), else '+' stays (a path). Returns the decoded length, or
 * -EINVAL for a broken escape or a decoded NUL, -ENOBUFS when out is too small. */
__attribute__((warn_unused_result)) ssize_t
chp_http_pct_decode(const char *p, size_t n, bool plus_space, char *out, size_t cap);

#endif
