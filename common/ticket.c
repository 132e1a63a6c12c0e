/* ticket.c — the canonical form of a ticket, and its strict parser (see ticket.h).
 *
 *   chapar://HOST:PORT/RELAY-KEY/FILE-ID[#FILE-KEY]
 *     HOST  DNS name: [A-Za-z0-9-] labels of 1..63 separated by '.', no label starts or ends
 *           with '-', 1..253 bytes; a name whose last label looks numeric (all digits, or "0x"
 *           and hex digits) must be a dotted quad — 0..255 each, no leading zeros — so that
 *           getaddrinfo never reads a name as an inet_aton number ("127.1", "0x7f000001")
 *           | '[' IPv6 (inet_pton AF_INET6, at most 45 bytes) ']'
 *     PORT  1..65535, decimal, no sign, no leading zero
 *     keys  exactly 64 lowercase hex digits each; nothing follows FILE-KEY
 *
 * One ticket has one spelling: format(parse(s)) == s for every s parse accepts. The file key is
 * a secret: local copies are wiped on every exit path.
 */
#include "ticket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#define SCHEME     "chapar://"
#define SCHEME_LEN (sizeof(SCHEME) - 1)
#define IPV6_MAX   (INET6_ADDRSTRLEN - 1)
#define LABEL_MAX  63
#define HEX32      64 /* hex digits of a 32-byte value */

_Static_assert(CHP_KEY_BYTES == 32 && CHP_HASH_BYTES == 32 && CHP_FILE_KEY_BYTES == 32,
               "every ticket field is 64 hex digits");
_Static_assert(IPV6_MAX == 45 && IPV6_MAX <= CHP_TICKET_HOST_MAX, "IPv6 text fits host");
_Static_assert(CHP_TICKET_MAX == SCHEME_LEN + 1 + CHP_TICKET_HOST_MAX + 1 + 6 + 3 * (1 + HEX32) + 1,
               "CHP_TICKET_MAX covers the longest ticket");

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_lower_hex(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'f');
}

static bool is_hex(char c)
{
        return is_lower_hex(c) || (c >= 'A' && c <= 'F');
}

static bool is_alnum(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A dotted quad, each part 0..255 without leading zeros. */
static bool valid_ipv4(const char *h, size_t n)
{
        size_t i = 0;
        for (int part = 0; part < 4; part++) {
                if (part > 0) {
                        if (i >= n || h[i] != '.')
                                return false;
                        i++;
                }
                size_t start = i;
                unsigned v = 0;
                while (i < n && is_digit(h[i]) && i - start < 3)
                        v = v * 10 + (unsigned)(h[i++] - '0');
                size_t digits = i - start;
                if (digits == 0 || v > 255 || (digits > 1 && h[start] == '0'))
                        return false;
        }
        return i == n;
}

/* Whether a label would be read as a number by inet_aton or the WHATWG host parser. */
static bool numeric_label(const char *l, size_t n)
{
        size_t i = 0;
        if (n >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X')) {
                for (i = 2; i < n; i++)
                        if (!is_hex(l[i]))
                                return false;
                return true;
        }
        for (i = 0; i < n; i++)
                if (!is_digit(l[i]))
                        return false;
        return true;
}

/* A DNS name or an IPv4 address, exactly n bytes (no ':'). */
static bool valid_name(const char *h, size_t n)
{
        if (n == 0 || n > CHP_TICKET_HOST_MAX)
                return false;
        size_t start = 0; /* of the current label */
        for (size_t i = 0; i <= n; i++) {
                if (i < n && h[i] != '.') {
                        if (!is_alnum(h[i]) && h[i] != '-')
                                return false;
                        continue;
                }
                size_t llen = i - start;
                if (llen == 0 || llen > LABEL_MAX || h[start] == '-' || h[i - 1] == '-')
                        return false;
                if (i == n && numeric_label(h + start, llen))
                        return valid_ipv4(h, n);
                start = i + 1;
        }
        return true;
}

/* The text between brackets: an IPv6 address inet_pton accepts. Only hex digits, ':' and '.'
 * reach inet_pton — in particular no NUL, which would end the copy early and let junk after it
 * through ("[::1\0junk]"). */
static bool valid_ipv6(const char *h, size_t n)
{
        if (n == 0 || n > IPV6_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_hex(h[i]) && h[i] != ':' && h[i] != '.')
                        return false;
        char copy[IPV6_MAX + 1];
        memcpy(copy, h, n);
        copy[n] = '\0';
        struct in6_addr a;
        return inet_pton(AF_INET6, copy, &a) == 1;
}

/* Exactly HEX32 lowercase hex digits at s[*i] into 32 bytes; advances *i. */
static bool take_hex32(const char *s, size_t len, size_t *i, uint8_t out[32])
{
        if (len - *i < HEX32)
                return false;
        const char *h = s + *i;
        for (size_t k = 0; k < HEX32; k++)
                if (!is_lower_hex(h[k]))
                        return false;
        for (size_t k = 0; k < 32; k++) {
                char a = h[2 * k], b = h[2 * k + 1];
                int hi = is_digit(a) ? a - '0' : a - 'a' + 10;
                int lo = is_digit(b) ? b - '0' : b - 'a' + 10;
                out[k] = (uint8_t)(hi << 4 | lo);
        }
        *i += HEX32;
        return true;
}

static bool take_char(const char *s, size_t len, size_t *i, char c)
{
        if (*i >= len || s[*i] != c)
                return false;
        (*i)++;
        return true;
}

static bool take_port(const char *s, size_t len, size_t *i, uint16_t *port)
{
        size_t start = *i;
        uint32_t v = 0;
        while (*i < len && is_digit(s[*i]) && *i - start < 5)
                v = v * 10 + (uint32_t)(s[(*i)++] - '0');
        size_t digits = *i - start;
        if (digits == 0 || s[start] == '0' || v > 65535)
                return false;
        *port = (uint16_t)v;
        return true;
}

static bool parse(const char *s, size_t len, struct chp_ticket *t)
{
        if (len < SCHEME_LEN || memcmp(s, SCHEME, SCHEME_LEN) != 0)
                return false;
        size_t i = SCHEME_LEN;
        if (i < len && s[i] == '[') {
                size_t start = ++i;
                while (i < len && s[i] != ']' && i - start <= IPV6_MAX)
                        i++;
                size_t hlen = i - start;
                if (i >= len || s[i] != ']' || !valid_ipv6(s + start, hlen))
                        return false;
                memcpy(t->host, s + start, hlen);
                t->host[hlen] = '\0';
                i++;
        } else {
                size_t start = i;
                while (i < len && s[i] != ':' && i - start <= CHP_TICKET_HOST_MAX)
                        i++;
                size_t hlen = i - start;
                if (!valid_name(s + start, hlen))
                        return false;
                memcpy(t->host, s + start, hlen);
                t->host[hlen] = '\0';
        }
        if (!take_char(s, len, &i, ':') || !take_port(s, len, &i, &t->port) ||
            !take_char(s, len, &i, '/') || !take_hex32(s, len, &i, t->relay_key) ||
            !take_char(s, len, &i, '/') || !take_hex32(s, len, &i, t->file_id))
                return false;
        if (i == len)
                return true;
        if (!take_char(s, len, &i, '#') || !take_hex32(s, len, &i, t->file_key))
                return false;
        t->has_key = true;
        return i == len;
}

int chp_ticket_parse(const char *s, size_t len, struct chp_ticket *out)
{
        memset(out, 0, sizeof(*out));
        struct chp_ticket t;
        memset(&t, 0, sizeof(t));
        int rc = -EBADMSG;
        if (parse(s, len, &t)) {
                *out = t;
                rc = 0;
        }
        sodium_memzero(&t, sizeof(t));
        return rc;
}

/* Decimal digits of a port (1..65535). */
static size_t port_digits(uint16_t port)
{
        size_t d = 1;
        for (unsigned v = port; v >= 10; v /= 10)
                d++;
        return d;
}

ssize_t chp_ticket_format(const struct chp_ticket *t, char *out, size_t cap)
{
        size_t hlen = strnlen(t->host, sizeof(t->host));
        if (hlen == sizeof(t->host) || t->port == 0)
                return -EINVAL;
        bool v6 = memchr(t->host, ':', hlen) != NULL;
        if (v6 ? !valid_ipv6(t->host, hlen) : !valid_name(t->host, hlen))
                return -EINVAL;
        size_t n = SCHEME_LEN + hlen + (v6 ? 2 : 0) + 1 + port_digits(t->port) + 2 * (1 + HEX32) +
                   (t->has_key ? 1 + HEX32 : 0);
        if (cap <= n)
                return -ENOSPC;

        char relay[HEX32 + 1], id[HEX32 + 1], key[HEX32 + 1] = "";
        chp_hex_encode(t->relay_key, sizeof(t->relay_key), relay);
        chp_hex_encode(t->file_id, sizeof(t->file_id), id);
        if (t->has_key)
                chp_hex_encode(t->file_key, sizeof(t->file_key), key);
        int w = snprintf(out, cap, "%s%s%s%s:%u/%s/%s%s%s", SCHEME, v6 ? "[" : "", t->host,
                         v6 ? "]" : "", (unsigned)t->port, relay, id, t->has_key ? "#" : "", key);
        sodium_memzero(key, sizeof(key));
        if (w < 0 || (size_t)w != n) { /* cannot happen: n is the exact length */
                sodium_memzero(out, cap);
                return -EINVAL;
        }
        return (ssize_t)n;
}

void chp_ticket_relay_addr(const struct chp_ticket *t, char *out, size_t cap)
{
        if (cap == 0)
                return;
        int hlen = (int)strnlen(t->host, sizeof(t->host) - 1);
        bool v6 = memchr(t->host, ':', (size_t)hlen) != NULL;
        snprintf(out, cap, "%s%.*s%s:%u", v6 ? "[" : "", hlen, t->host, v6 ? "]" : "",
                 (unsigned)t->port);
}
