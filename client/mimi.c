/* mimi.c — MIMI ExternalPart descriptors of chapar files in JSON (see mimi.h).
 *
 * The parser is a cursor over the caller's bytes: one function per JSON production (string,
 * number, literal), an object at most two deep (the descriptor, or put --json's object holding
 * it), so the stack is bounded without a depth counter's help. Member values are checked against
 * the field they name as they are read; what the fields mean together is checked at the end.
 */
#include "mimi.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "http_parse.h" /* chp_http_utf8_len */

/* The members the draft names, in its order (the order chp_mimi_format writes them). */
enum field {
        F_CARDINALITY,
        F_CONTENT_TYPE,
        F_URL,
        F_EXPIRES,
        F_SIZE,
        F_ENC_ALG,
        F_KEY,
        F_NONCE,
        F_AAD,
        F_HASH_ALG,
        F_CONTENT_HASH,
        F_DESCRIPTION,
        F_FILENAME,
        F_COUNT,
        F_NONE = F_COUNT,
};

static const char *const field_names[F_COUNT] = {
    "cardinality", "contentType", "url",     "expires",     "size",        "encAlg",   "key",
    "nonce",       "aad",         "hashAlg", "contentHash", "description", "filename",
};

#define REQUIRED                                                                                   \
        ((1u << F_URL) | (1u << F_SIZE) | (1u << F_ENC_ALG) | (1u << F_KEY) | (1u << F_NONCE) |    \
         (1u << F_AAD) | (1u << F_HASH_ALG) | (1u << F_CONTENT_HASH))

#define WRAPPER_NAME "mimi_external_part"

/* The longest string value kept for checking; longer ones are read through and refused where a
 * field needs their text (no field's text is half this). */
#define VAL_MAX 1024

struct cur {
        const char *p, *end;
        const char *why;
};

enum vtype { V_STRING, V_NUMBER, V_LITERAL, V_OBJECT, V_ARRAY };

struct val {
        enum vtype type;
        size_t len;          /* string: decoded bytes (also past VAL_MAX) */
        char s[VAL_MAX + 1]; /* string: the first VAL_MAX decoded bytes, NUL-terminated */
        bool integer;        /* number: a non-negative integer that fits n */
        uint64_t n;
};

/* What one object's members said. */
struct raw {
        unsigned seen;         /* 1 << field, for the members read */
        struct chp_ticket url; /* has_key false */
        uint8_t key[CHP_FILE_KEY_BYTES];
        uint8_t content_hash[CHP_HASH_BYTES];
        uint64_t size, expires, enc_alg, hash_alg;
        char content_type[CHP_E2E_MIME_MAX + 1];
        char filename[CHP_E2E_NAME_MAX + 1];
};

static int bad(struct cur *c, const char *why)
{
        if (!c->why)
                c->why = why;
        return -EBADMSG;
}

static void ws(struct cur *c)
{
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
                c->p++;
}

/* The four hex digits of a \u escape. */
static int u16(struct cur *c, unsigned *out)
{
        uint8_t b[2];
        if (c->end - c->p < 4 || chp_hex_decode(c->p, 4, b, 2) != 0)
                return bad(c, "a \\u escape is not four hex digits");
        c->p += 4;
        *out = (unsigned)b[0] << 8 | b[1];
        return 0;
}

static void put_byte(struct val *v, unsigned char b)
{
        if (v->len < VAL_MAX)
                v->s[v->len] = (char)b;
        v->len++;
}

/* A string; c->p is at its opening quote. Decoded UTF-8 into v (escapes resolved; U+0000, raw
 * controls, lone surrogates and invalid UTF-8 refused). */
static int string(struct cur *c, struct val *v)
{
        v->type = V_STRING;
        v->len = 0;
        c->p++;
        for (;;) {
                if (c->p >= c->end)
                        return bad(c, "a string is not closed");
                unsigned char ch = (unsigned char)*c->p;
                if (ch == '"') {
                        c->p++;
                        break;
                }
                if (ch < 0x20)
                        return bad(c, "a control character inside a string");
                if (ch != '\\') {
                        size_t l =
                            chp_http_utf8_len((const unsigned char *)c->p, (size_t)(c->end - c->p));
                        if (l == 0)
                                return bad(c, "a string is not valid UTF-8");
                        for (size_t i = 0; i < l; i++)
                                put_byte(v, (unsigned char)c->p[i]);
                        c->p += l;
                        continue;
                }
                if (++c->p >= c->end)
                        return bad(c, "a string is not closed");
                char e = *c->p++;
                const char *simple = strchr("\"\\/bfnrt", e);
                if (e && simple) {
                        static const char to[] = "\"\\/\b\f\n\r\t";
                        put_byte(v, (unsigned char)to[simple - "\"\\/bfnrt"]);
                        continue;
                }
                if (e != 'u')
                        return bad(c, "an unknown escape inside a string");
                unsigned cp, lo;
                if (u16(c, &cp))
                        return -EBADMSG;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                        return bad(c, "a lone surrogate escape inside a string");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                        if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
                                return bad(c, "a lone surrogate escape inside a string");
                        c->p += 2;
                        if (u16(c, &lo))
                                return -EBADMSG;
                        if (lo < 0xdc00 || lo > 0xdfff)
                                return bad(c, "a lone surrogate escape inside a string");
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (cp == 0)
                        return bad(c, "a string holds U+0000");
                if (cp < 0x80) {
                        put_byte(v, (unsigned char)cp);
                } else if (cp < 0x800) {
                        put_byte(v, (unsigned char)(0xc0 | cp >> 6));
                        put_byte(v, (unsigned char)(0x80 | (cp & 0x3f)));
                } else if (cp < 0x10000) {
                        put_byte(v, (unsigned char)(0xe0 | cp >> 12));
                        put_byte(v, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
                        put_byte(v, (unsigned char)(0x80 | (cp & 0x3f)));
                } else {
                        put_byte(v, (unsigned char)(0xf0 | cp >> 18));
                        put_byte(v, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
                        put_byte(v, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
                        put_byte(v, (unsigned char)(0x80 | (cp & 0x3f)));
                }
        }
        v->s[v->len < VAL_MAX ? v->len : VAL_MAX] = '\0';
        return 0;
}

static bool digit(const struct cur *c)
{
        return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* A number in RFC 8259's grammar; v->integer when it is a plain non-negative integer that fits
 * 64 bits. */
static int number(struct cur *c, struct val *v)
{
        v->type = V_NUMBER;
        v->integer = true;
        v->n = 0;
        if (c->p < c->end && *c->p == '-') {
                v->integer = false;
                c->p++;
        }
        if (!digit(c))
                return bad(c, "a number has no digits");
        if (*c->p == '0') {
                c->p++;
        } else {
                for (; digit(c); c->p++) {
                        unsigned d = (unsigned)(*c->p - '0');
                        if (v->n > (UINT64_MAX - d) / 10)
                                v->integer = false;
                        else
                                v->n = v->n * 10 + d;
                }
        }
        if (c->p < c->end && *c->p == '.') {
                v->integer = false;
                c->p++;
                if (!digit(c))
                        return bad(c, "a number has no digits after its point");
                while (digit(c))
                        c->p++;
        }
        if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
                v->integer = false;
                c->p++;
                if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
                        c->p++;
                if (!digit(c))
                        return bad(c, "a number has no digits in its exponent");
                while (digit(c))
                        c->p++;
        }
        if (!v->integer)
                v->n = 0;
        return 0;
}

/* A value that is not an object or array; objects and arrays are only announced (type set,
 * c->p left at the bracket) for the caller to refuse or read. */
static int value(struct cur *c, struct val *v)
{
        ws(c);
        if (c->p >= c->end)
                return bad(c, "the text ends where a value should be");
        switch (*c->p) {
        case '"':
                return string(c, v);
        case '{':
                v->type = V_OBJECT;
                return 0;
        case '[':
                v->type = V_ARRAY;
                return 0;
        case 't':
        case 'f':
        case 'n': {
                static const char *const lits[] = {"true", "false", "null"};
                for (size_t i = 0; i < 3; i++) {
                        size_t l = strlen(lits[i]);
                        if ((size_t)(c->end - c->p) >= l && memcmp(c->p, lits[i], l) == 0) {
                                c->p += l;
                                v->type = V_LITERAL;
                                return 0;
                        }
                }
                return bad(c, "not JSON: an unknown word");
        }
        default:
                if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
                        return number(c, v);
                return bad(c, "not JSON: an unexpected character");
        }
}

static enum field field_of(const struct val *name)
{
        for (int f = 0; f < F_COUNT; f++)
                if (name->len == strlen(field_names[f]) && strcmp(name->s, field_names[f]) == 0)
                        return (enum field)f;
        return F_NONE;
}

/* 64 hex digits into 32 bytes. */
static int hex32(struct cur *c, const struct val *v, uint8_t out[32], const char *why)
{
        if (v->type != V_STRING || v->len != 64 || chp_hex_decode(v->s, 64, out, 32) != 0)
                return bad(c, why);
        return 0;
}

static int uint_of(struct cur *c, const struct val *v, uint64_t max, uint64_t *out, const char *why)
{
        if (v->type != V_NUMBER || !v->integer || v->n > max)
                return bad(c, why);
        *out = v->n;
        return 0;
}

static int text_of(struct cur *c, const struct val *v, char *out, size_t cap, const char *why)
{
        if (v->type != V_STRING || v->len >= cap)
                return bad(c, why);
        memcpy(out, v->s, v->len + 1);
        return 0;
}

/* One member of the descriptor: its value checked as its field's. */
static int member(struct cur *c, struct raw *r, enum field f, const struct val *v)
{
        uint64_t n;
        switch (f) {
        case F_CARDINALITY:
                if (uint_of(c, v, UINT64_MAX, &n, "cardinality is not a number") || n != 2)
                        return bad(c, "cardinality is not 2 (external)");
                return 0;
        case F_CONTENT_TYPE:
                return text_of(c, v, r->content_type, sizeof(r->content_type),
                               "contentType is not a string of at most 127 bytes");
        case F_URL:
                if (v->type != V_STRING || v->len > VAL_MAX)
                        return bad(c, "url is not a string");
                if (memchr(v->s, '#', v->len))
                        return bad(c, "url carries a fragment: the file key belongs in key");
                if (chp_ticket_parse(v->s, v->len, &r->url) != 0)
                        return bad(c, "url is not a chapar URL (chapar://HOST:PORT/RELAY-KEY/"
                                      "FILE-ID)");
                return 0;
        case F_EXPIRES:
                return uint_of(c, v, UINT32_MAX, &r->expires,
                               "expires is not a whole number of seconds below 2^32");
        case F_SIZE:
                return uint_of(c, v, UINT64_MAX, &r->size,
                               "size is not a whole number of bytes below 2^64");
        case F_ENC_ALG:
                return uint_of(c, v, UINT16_MAX, &r->enc_alg,
                               "encAlg is not a number from 0 to 65535");
        case F_KEY:
                if (v->type != V_STRING)
                        return bad(c, "key is not a string");
                return hex32(c, v, r->key, "key is not 32 bytes (64 hex digits)");
        case F_NONCE:
                if (v->type != V_STRING || v->len != 0)
                        return bad(c, "nonce is not empty: chapar's chunks carry their own");
                return 0;
        case F_AAD:
                if (v->type != V_STRING || v->len != 0)
                        return bad(c, "aad is not empty: chapar's chunks have their own");
                return 0;
        case F_HASH_ALG:
                return uint_of(c, v, UINT8_MAX, &r->hash_alg,
                               "hashAlg is not a number from 0 to 255");
        case F_CONTENT_HASH:
                if (v->type != V_STRING)
                        return bad(c, "contentHash is not a string");
                return hex32(c, v, r->content_hash,
                             "contentHash is not 32 bytes (64 hex digits, SHA-256)");
        case F_DESCRIPTION:
                if (v->type != V_STRING)
                        return bad(c, "description is not a string");
                return 0;
        case F_FILENAME:
                return text_of(c, v, r->filename, sizeof(r->filename),
                               "filename is not a string of at most 255 bytes");
        case F_NONE:
                break;
        }
        return 0;
}

/* An object; c->p at its '{'. In the outer one (inner != NULL) the member WRAPPER_NAME may be an
 * object, read into *inner; no other member may be an object or an array. */
static int object(struct cur *c, struct raw *r, struct raw *inner, bool *has_inner)
{
        struct val name, v;
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == '}') {
                c->p++;
                return 0;
        }
        for (;;) {
                ws(c);
                if (c->p >= c->end || *c->p != '"')
                        return bad(c, "not JSON: a member name should be here");
                if (string(c, &name))
                        return -EBADMSG;
                ws(c);
                if (c->p >= c->end || *c->p != ':')
                        return bad(c, "not JSON: a ':' should follow a member name");
                c->p++;
                if (value(c, &v))
                        return -EBADMSG;
                enum field f = field_of(&name);
                if (v.type == V_OBJECT && inner && name.len == strlen(WRAPPER_NAME) &&
                    strcmp(name.s, WRAPPER_NAME) == 0) {
                        if (*has_inner)
                                return bad(c, "mimi_external_part appears twice");
                        *has_inner = true;
                        if (object(c, inner, NULL, NULL))
                                return -EBADMSG;
                } else if (v.type == V_OBJECT || v.type == V_ARRAY) {
                        return bad(c, "an object or array where the descriptor has neither");
                } else if (f != F_NONE) {
                        if (r->seen & (1u << f))
                                return bad(c, "a member appears twice");
                        r->seen |= 1u << f;
                        if (member(c, r, f, &v))
                                return -EBADMSG;
                }
                ws(c);
                if (c->p < c->end && *c->p == ',') {
                        c->p++;
                        continue;
                }
                if (c->p < c->end && *c->p == '}') {
                        c->p++;
                        return 0;
                }
                return bad(c, "not JSON: ',' or '}' should follow a member");
        }
}

int chp_mimi_parse(const char *buf, size_t len, struct chp_mimi_part *out, const char **why)
{
        struct cur c = {.p = buf, .end = buf + len, .why = NULL};
        struct raw outer, inner;
        bool has_inner = false;
        memset(out, 0, sizeof(*out));
        memset(&outer, 0, sizeof(outer));
        memset(&inner, 0, sizeof(inner));
        int rc = -EBADMSG;
        if (len > CHP_MIMI_JSON_MAX) {
                bad(&c, "the descriptor is longer than 64 KiB");
                goto out;
        }
        ws(&c);
        if (c.p >= c.end || *c.p != '{') {
                bad(&c, "not a JSON object");
                goto out;
        }
        if (object(&c, &outer, &inner, &has_inner))
                goto out;
        ws(&c);
        if (c.p != c.end) {
                bad(&c, "something follows the JSON object");
                goto out;
        }
        if (has_inner && outer.seen) {
                bad(&c, "ExternalPart members both beside and inside mimi_external_part");
                goto out;
        }
        const struct raw *r = has_inner ? &inner : &outer;
        for (int f = 0; f < F_COUNT; f++)
                if ((REQUIRED & (1u << f)) && !(r->seen & (1u << f))) {
                        bad(&c, f == F_URL        ? "the member url is missing"
                                : f == F_SIZE     ? "the member size is missing"
                                : f == F_ENC_ALG  ? "the member encAlg is missing"
                                : f == F_KEY      ? "the member key is missing"
                                : f == F_NONCE    ? "the member nonce is missing"
                                : f == F_AAD      ? "the member aad is missing"
                                : f == F_HASH_ALG ? "the member hashAlg is missing"
                                                  : "the member contentHash is missing");
                        goto out;
                }
        if (r->enc_alg == 0) {
                bad(&c, "encAlg is 0 (not encrypted): a chapar file always is");
                goto out;
        }
        if (r->enc_alg != CHP_MIMI_ENC_ALG) {
                bad(&c, "encAlg is not 51714 (chapar's end-to-end format v2): another AEAD "
                        "cannot open a chapar file");
                goto out;
        }
        if (r->hash_alg != CHP_MIMI_HASH_ALG) {
                bad(&c, "hashAlg is not 1 (sha-256)");
                goto out;
        }
        out->ticket = r->url;
        out->ticket.has_key = true;
        memcpy(out->ticket.file_key, r->key, sizeof(r->key));
        out->size = r->size;
        memcpy(out->content_hash, r->content_hash, sizeof(out->content_hash));
        out->has_expires = r->seen & (1u << F_EXPIRES);
        out->expires = (uint32_t)r->expires;
        memcpy(out->content_type, r->content_type, sizeof(out->content_type));
        memcpy(out->filename, r->filename, sizeof(out->filename));
        rc = 0;
out:
        if (why)
                *why = rc ? c.why : "";
        sodium_memzero(outer.key, sizeof(outer.key));
        sodium_memzero(inner.key, sizeof(inner.key));
        return rc;
}

/* ---- writing ---------------------------------------------------------------------------- */

struct w {
        char *o;
        size_t cap, n;
};

static void raw_put(struct w *w, const char *s, size_t l)
{
        if (w->n < w->cap)
                memcpy(w->o + w->n, s, w->n + l <= w->cap ? l : w->cap - w->n);
        w->n += l;
}

__attribute__((format(printf, 2, 3))) static void fmt(struct w *w, const char *f, ...);

static void fmt(struct w *w, const char *f, ...)
{
        char tmp[256];
        va_list ap;
        va_start(ap, f);
        int l = vsnprintf(tmp, sizeof(tmp), f, ap);
        va_end(ap);
        if (l > 0)
                raw_put(w, tmp, (size_t)l < sizeof(tmp) ? (size_t)l : sizeof(tmp) - 1);
        sodium_memzero(tmp, sizeof(tmp)); /* it may have held the key's hex */
}

/* A JSON string: quotes, backslashes and controls escaped, invalid UTF-8 as U+FFFD. */
static void str_put(struct w *w, const char *s)
{
        raw_put(w, "\"", 1);
        for (size_t left = strlen(s); left;) {
                unsigned char ch = (unsigned char)*s;
                size_t l = chp_http_utf8_len((const unsigned char *)s, left);
                if (l == 0)
                        raw_put(w, "\\ufffd", 6);
                else if (ch == '"' || ch == '\\')
                        fmt(w, "\\%c", ch);
                else if (ch < 0x20 || ch == 0x7f)
                        fmt(w, "\\u%04x", ch);
                else
                        raw_put(w, s, l);
                l = l ? l : 1;
                s += l;
                left -= l;
        }
        raw_put(w, "\"", 1);
}

ssize_t chp_mimi_format(const struct chp_mimi_part *p, char *out, size_t cap)
{
        if (!p->ticket.has_key)
                return -EINVAL;
        struct chp_ticket t = p->ticket;
        t.has_key = false;
        memset(t.file_key, 0, sizeof(t.file_key));
        char url[CHP_TICKET_MAX], key[CHP_HASH_HEXBYTES], hash[CHP_HASH_HEXBYTES];
        if (chp_ticket_format(&t, url, sizeof(url)) < 0)
                return -EINVAL;
        chp_hex_encode(p->ticket.file_key, CHP_FILE_KEY_BYTES, key);
        chp_hex_encode(p->content_hash, CHP_HASH_BYTES, hash);
        struct w w = {.o = out, .cap = cap, .n = 0};
        fmt(&w, "{\"cardinality\":%d,\"contentType\":", CHP_MIMI_EXTERNAL);
        str_put(&w, p->content_type);
        raw_put(&w, ",\"url\":", 7);
        str_put(&w, url);
        if (p->has_expires)
                fmt(&w, ",\"expires\":%lu", (unsigned long)p->expires);
        fmt(&w, ",\"size\":%llu,\"encAlg\":%d,\"key\":\"%s\",\"nonce\":\"\",\"aad\":\"\"",
            (unsigned long long)p->size, CHP_MIMI_ENC_ALG, key);
        fmt(&w, ",\"hashAlg\":%d,\"contentHash\":\"%s\",\"description\":\"\",\"filename\":",
            CHP_MIMI_HASH_ALG, hash);
        str_put(&w, p->filename);
        raw_put(&w, "}", 1);
        sodium_memzero(key, sizeof(key));
        if (w.n >= cap)
                return -ENOSPC;
        out[w.n] = '\0';
        return (ssize_t)w.n;
}
