/* Tickets: format/parse round trips for every host form, the one canonical spelling, and
 * rejection of everything else — wrong scheme, missing or malformed parts, non-canonical hex,
 * ports and hosts, trailing bytes, embedded NULs and every truncation. Inputs are parsed from
 * exact-size heap copies so ASan catches any read past len. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>

#include "ticket.h"

#define R "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210"
#define I "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define K "deadbeefcafebabe0f1e2d3c4b5a69788796a5b4c3d2e1f0aaaaaaaaaaaaaaaa"

/* Parses len bytes from an exact-size heap copy. */
static int parse_n(const char *s, size_t len, struct chp_ticket *t)
{
        char *copy = malloc(len ? len : 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, s, len);
        int rc = chp_ticket_parse(copy, len, t);
        free(copy);
        return rc;
}

static int parse_s(const char *s, struct chp_ticket *t)
{
        return parse_n(s, strlen(s), t);
}

static bool ticket_eq(const struct chp_ticket *a, const struct chp_ticket *b)
{
        return strcmp(a->host, b->host) == 0 && a->port == b->port &&
               memcmp(a->relay_key, b->relay_key, sizeof(a->relay_key)) == 0 &&
               memcmp(a->file_id, b->file_id, sizeof(a->file_id)) == 0 &&
               a->has_key == b->has_key &&
               (!a->has_key || memcmp(a->file_key, b->file_key, sizeof(a->file_key)) == 0);
}

static struct chp_ticket make(const char *host, uint16_t port, bool has_key)
{
        struct chp_ticket t;
        memset(&t, 0, sizeof(t));
        snprintf(t.host, sizeof(t.host), "%s", host);
        t.port = port;
        for (int i = 0; i < 32; i++) {
                t.relay_key[i] = (uint8_t)(i * 7 + 1);
                t.file_id[i] = (uint8_t)(255 - i);
                t.file_key[i] = has_key ? (uint8_t)(i * 13 + 5) : 0;
        }
        t.has_key = has_key;
        return t;
}

static void str_of(char *buf, size_t cap, char c, size_t n)
{
        if (n >= cap)
                n = cap - 1;
        memset(buf, c, n);
        buf[n] = '\0';
}

TEST(parse_known)
{
        struct chp_ticket t;
        const char *s = "chapar://relay.example.com:7446/" R "/" I "#" K;
        REQUIRE_OK(parse_s(s, &t));
        CHECK(strcmp(t.host, "relay.example.com") == 0);
        CHECK_EQ(t.port, 7446);
        CHECK_EQ(t.relay_key[0], 0x00);
        CHECK_EQ(t.relay_key[1], 0x11);
        CHECK_EQ(t.relay_key[31], 0x10);
        CHECK_EQ(t.file_id[0], 0xe3);
        CHECK_EQ(t.file_id[31], 0x55);
        CHECK(t.has_key);
        CHECK_EQ(t.file_key[0], 0xde);
        CHECK_EQ(t.file_key[31], 0xaa);

        char out[CHP_TICKET_MAX];
        CHECK_EQ(chp_ticket_format(&t, out, sizeof(out)), strlen(s));
        CHECK(strcmp(out, s) == 0);

        /* without the key: names the file, cannot decrypt it */
        const char *nokey = "chapar://[2001:db8::1]:1/" R "/" I;
        REQUIRE_OK(parse_s(nokey, &t));
        CHECK(strcmp(t.host, "2001:db8::1") == 0);
        CHECK_EQ(t.port, 1);
        CHECK(!t.has_key);
        uint8_t zero[32] = {0};
        CHECK(memcmp(t.file_key, zero, 32) == 0);
        CHECK_EQ(chp_ticket_format(&t, out, sizeof(out)), strlen(nokey));
        CHECK(strcmp(out, nokey) == 0);
}

TEST(round_trips)
{
        char label63[64], name253[254];
        str_of(label63, sizeof(label63), 'q', 63);
        /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
        snprintf(name253, sizeof(name253), "%s.%s.%s.%.61s", label63, label63, label63, label63);
        REQUIRE(strlen(name253) == 253);
        const char *hosts[] = {"relay.example.com",
                               "localhost",
                               "a",
                               "A-1.Example.ORG",
                               "xn--mgbh0fb.example",
                               "1.2.3.com",
                               "123.example",
                               "0x1.example",
                               "9a",
                               label63,
                               name253,
                               "1.2.3.4",
                               "0.0.0.0",
                               "255.255.255.255",
                               "10.0.200.9",
                               "::1",
                               "::",
                               "2001:db8::1",
                               "2001:DB8:0:0:8:800:200C:417A",
                               "::ffff:192.0.2.1",
                               "fe80::1:2:3:4",
                               "1111:2222:3333:4444:5555:6666:123.123.123.123"};
        const uint16_t ports[] = {1, 443, 7446, 65535};
        for (size_t h = 0; h < sizeof(hosts) / sizeof(hosts[0]); h++)
                for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++)
                        for (int k = 0; k < 2; k++) {
                                struct chp_ticket t = make(hosts[h], ports[p], k), back;
                                char s[CHP_TICKET_MAX], again[CHP_TICKET_MAX];
                                ssize_t n = chp_ticket_format(&t, s, sizeof(s));
                                if (n <= 0)
                                        fprintf(stderr, "  format %s: %zd\n", hosts[h], n);
                                REQUIRE(n > 0);
                                CHECK_EQ(n, strlen(s));
                                CHECK((strchr(hosts[h], ':') != NULL) == (s[9] == '['));
                                CHECK_OK(parse_n(s, (size_t)n, &back));
                                CHECK(ticket_eq(&t, &back));
                                CHECK_EQ(chp_ticket_format(&back, again, sizeof(again)), n);
                                CHECK(strcmp(s, again) == 0);
                        }
}

TEST(format_errors)
{
        char out[CHP_TICKET_MAX];
        struct chp_ticket t = make("relay.example.com", 443, true);
        t.port = 0;
        CHECK_EQ(chp_ticket_format(&t, out, sizeof(out)), -EINVAL);
        const char *bad[] = {"",         "a..b",  ".a",    "a.",           "-a",      "a-",
                             "a_b",      "a b",   "[::1]", "::g",          "1.2.3",   "256.1.1.1",
                             "01.2.3.4", "127.1", "a:b",   "fe80::1%eth0", "ex/ample"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                t = make(bad[i], 443, true);
                CHECK_EQ(chp_ticket_format(&t, out, sizeof(out)), -EINVAL);
        }
        /* a host that fills the array without a NUL */
        t = make("x", 443, true);
        memset(t.host, 'a', sizeof(t.host));
        CHECK_EQ(chp_ticket_format(&t, out, sizeof(out)), -EINVAL);

        /* cap: the exact length plus the NUL */
        t = make("relay.example.com", 443, true);
        ssize_t n = chp_ticket_format(&t, out, sizeof(out));
        REQUIRE(n > 0);
        CHECK_EQ(chp_ticket_format(&t, out, (size_t)n), -ENOSPC);
        CHECK_EQ(chp_ticket_format(&t, out, 0), -ENOSPC);
        CHECK_EQ(chp_ticket_format(&t, out, (size_t)n + 1), n);

        /* the longest ticket fits CHP_TICKET_MAX */
        char label63[64], name253[254];
        str_of(label63, sizeof(label63), 'z', 63);
        snprintf(name253, sizeof(name253), "%s.%s.%s.%.61s", label63, label63, label63, label63);
        t = make(name253, 65535, true);
        n = chp_ticket_format(&t, out, sizeof(out));
        CHECK(n > 0 && (size_t)n < CHP_TICKET_MAX);
        t = make("1111:2222:3333:4444:5555:6666:123.123.123.123", 65535, true);
        n = chp_ticket_format(&t, out, sizeof(out));
        CHECK(n > 0 && (size_t)n < CHP_TICKET_MAX);
}

static void expect_reject(const char *s)
{
        struct chp_ticket t;
        memset(&t, 0x5a, sizeof(t));
        int rc = parse_s(s, &t);
        if (rc != -EBADMSG)
                fprintf(stderr, "  accepted (%d): %s\n", rc, s);
        CHECK_EQ(rc, -EBADMSG);
        /* out is cleared on entry, filled only on success */
        CHECK(t.host[0] == '\0' && t.port == 0 && !t.has_key && t.file_key[0] == 0);
}

TEST(reject_scheme_and_structure)
{
        expect_reject("");
        expect_reject("chapar://");
        expect_reject("chapr://h:1/" R "/" I);
        expect_reject("CHAPAR://h:1/" R "/" I);
        expect_reject("Chapar://h:1/" R "/" I);
        expect_reject("https://h:1/" R "/" I);
        expect_reject("chapar:/h:1/" R "/" I);
        expect_reject("chapar:h:1/" R "/" I);
        expect_reject(" chapar://h:1/" R "/" I);
        /* missing parts */
        expect_reject("chapar://h/" R "/" I);
        expect_reject("chapar://h:/" R "/" I);
        expect_reject("chapar://:1/" R "/" I);
        expect_reject("chapar://h:1");
        expect_reject("chapar://h:1/");
        expect_reject("chapar://h:1/" R);
        expect_reject("chapar://h:1/" R "/");
        expect_reject("chapar://h:1//" I);
        expect_reject("chapar://h:1/" R I);
        expect_reject("chapar://h:1/" R "/" I "#");
        /* trailing junk */
        expect_reject("chapar://h:1/" R "/" I "/");
        expect_reject("chapar://h:1/" R "/" I " ");
        expect_reject("chapar://h:1/" R "/" I "\n");
        expect_reject("chapar://h:1/" R "/" I "?x=1");
        expect_reject("chapar://h:1/" R "/" I "#" K "#");
        expect_reject("chapar://h:1/" R "/" I "#" K "0");
        expect_reject("chapar://h:1/" R "/" I "#" K "/");
        expect_reject("chapar://h:1/" R "/" I "/" K);
        expect_reject("chapar://user@h:1/" R "/" I);
}

TEST(reject_hex)
{
        /* 63 and 65 digits in each position */
        expect_reject("chapar://h:1/" R "0/" I);
        expect_reject("chapar://h:1/"
                      "0" R "/" I);
        expect_reject("chapar://h:1/" R "/" I "0");
        expect_reject("chapar://h:1/" R "/" I "#" K "0");
        char s[CHP_TICKET_MAX + 8];
        snprintf(s, sizeof(s), "chapar://h:1/%.63s/%s", R, I);
        expect_reject(s);
        snprintf(s, sizeof(s), "chapar://h:1/%s/%.63s", R, I);
        expect_reject(s);
        snprintf(s, sizeof(s), "chapar://h:1/%s/%s#%.63s", R, I, K);
        expect_reject(s);
        /* uppercase and non-hex digits, in every field */
        const char *good = "chapar://h:1/" R "/" I "#" K;
        struct chp_ticket t;
        REQUIRE_OK(parse_s(good, &t));
        size_t base = strlen("chapar://h:1/");
        const size_t starts[] = {base, base + 65, base + 130};
        for (size_t f = 0; f < 3; f++)
                for (size_t k = 0; k < 64; k += 7) {
                        snprintf(s, sizeof(s), "%s", good);
                        char *c = &s[starts[f] + k];
                        if (*c >= 'a' && *c <= 'f') {
                                *c = (char)(*c - 'a' + 'A');
                                expect_reject(s);
                        }
                        *c = 'g';
                        expect_reject(s);
                        *c = ' ';
                        expect_reject(s);
                }
        expect_reject("chapar://h:1/"
                      "00112233445566778899AABBCCDDEEFF0123456789ABCDEFFEDCBA9876543210"
                      "/" I);
}

TEST(reject_ports)
{
        const char *bad[] = {"0",     "00", "65536", "65540",      "99999", "100000",
                             "07446", "01", "",      "+80",        "-1",    " 80",
                             "80 ",   "8o", "0x50",  "4294967297", "655350"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char s[CHP_TICKET_MAX + 32];
                snprintf(s, sizeof(s), "chapar://h:%s/%s/%s", bad[i], R, I);
                expect_reject(s);
        }
        struct chp_ticket t;
        CHECK_OK(parse_s("chapar://h:65535/" R "/" I, &t));
        CHECK_EQ(t.port, 65535);
        CHECK_OK(parse_s("chapar://h:10/" R "/" I, &t));
        CHECK_EQ(t.port, 10);
}

TEST(reject_hosts)
{
        char label64[65], name254[300], v6long[64], v6huge[201];
        str_of(label64, sizeof(label64), 'q', 64);
        str_of(v6huge, sizeof(v6huge), '1', 200);
        v6huge[0] = '[';
        v6huge[199] = ']';
        /* 63 + 1 + 63 + 1 + 63 + 1 + 62 = 254 */
        snprintf(name254, sizeof(name254), "%.63s.%.63s.%.63s.%.62s", label64, label64, label64,
                 label64);
        REQUIRE(strlen(name254) == 254);
        /* 46 characters inside the brackets: longer than any IPv6 text form */
        snprintf(v6long, sizeof(v6long), "1111:2222:3333:4444:5555:6666:123.123.123.1234");
        REQUIRE(strlen(v6long) == 46);
        const char *bad[] = {"", label64, name254, "a..b", ".a", "a.", "-a.com", "a-.com",
                             "a.-b.com", "a_b.com", "a b", "a%2eb", "\xc3\xa9.com", "a\tb",
                             /* numeric last labels must be a canonical dotted quad */
                             "1.2.3", "123", "127.1", "0x7f000001", "0X7F.1", "1.2.3.0x4",
                             "example.0x", "example.123", "01.2.3.4", "1.2.3.04", "256.1.1.1",
                             "1.2.3.255.", "1.2.3.4.5", "1..3.4", "1.2.3.-4", "1.2.3.1000",
                             /* IPv6 only in brackets, and only what inet_pton accepts */
                             "[]", "[::1", "::1]", "[::1]]", "[[::1]]", "[1.2.3.4]",
                             "[example.com]", "[::g]", "[:::1]", "[1:2:3:4:5:6:7:8:9]",
                             "[fe80::1%eth0]", "[ ::1]", "[::1 ]", v6huge, v6long};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char s[CHP_TICKET_MAX + 128];
                const char *h = bad[i];
                char br[80];
                if (h == v6long) {
                        snprintf(br, sizeof(br), "[%s]", v6long);
                        h = br;
                }
                snprintf(s, sizeof(s), "chapar://%s:443/%s/%s", h, R, I);
                expect_reject(s);
        }
        /* unbracketed IPv6: the first ':' ends the host, the rest is no port */
        expect_reject("chapar://::1:443/" R "/" I);
        expect_reject("chapar://2001:db8::1:443/" R "/" I);
}

TEST(embedded_nul_and_truncations)
{
        const char *good = "chapar://relay.example.com:7446/" R "/" I "#" K;
        size_t len = strlen(good), nokey = len - 65;
        struct chp_ticket t;
        REQUIRE_OK(parse_n(good, len, &t));
        REQUIRE_OK(parse_n(good, nokey, &t));
        CHECK(!t.has_key);
        char s[CHP_TICKET_MAX + 2];
        for (size_t i = 0; i < len; i++) {
                memcpy(s, good, len);
                s[i] = '\0';
                CHECK_EQ(parse_n(s, len, &t), -EBADMSG);
        }
        memcpy(s, good, len);
        s[len] = '\0';
        CHECK_EQ(parse_n(s, len + 1, &t), -EBADMSG);
        CHECK_EQ(parse_n(s, nokey + 1, &t), -EBADMSG);
        /* every prefix but the one that is itself a ticket (without "#FILE-KEY") */
        for (size_t k = 0; k < len; k++)
                CHECK_EQ(parse_n(good, k, &t), k == nokey ? 0 : -EBADMSG);

        const char *v6 = "chapar://[2001:db8::1]:65535/" R "/" I;
        len = strlen(v6);
        /* a NUL inside the brackets must not end the address early (found by fuzz_ticket) */
        for (size_t i = 0; i < len; i++) {
                memcpy(s, v6, len);
                s[i] = '\0';
                CHECK_EQ(parse_n(s, len, &t), -EBADMSG);
        }
        const char v6nul[] = "chapar://[::1\0]:1/" R "/" I;
        CHECK_EQ(parse_n(v6nul, sizeof(v6nul) - 1, &t), -EBADMSG);
        for (size_t k = 0; k < len; k++)
                CHECK_EQ(parse_n(v6, k, &t), -EBADMSG);
        CHECK_OK(parse_n(v6, len, &t));
        /* the parser stops at len: a valid ticket followed by junk outside len is fine */
        memcpy(s, good, nokey);
        s[nokey] = 'X';
        CHECK_OK(chp_ticket_parse(s, nokey, &t));
}

TEST(relay_addr)
{
        char out[CHP_TICKET_ADDR_MAX];
        struct chp_ticket t = make("relay.example.com", 443, false);
        chp_ticket_relay_addr(&t, out, sizeof(out));
        CHECK(strcmp(out, "relay.example.com:443") == 0);
        t = make("::1", 7446, false);
        chp_ticket_relay_addr(&t, out, sizeof(out));
        CHECK(strcmp(out, "[::1]:7446") == 0);
        t = make("1.2.3.4", 65535, true);
        chp_ticket_relay_addr(&t, out, sizeof(out));
        CHECK(strcmp(out, "1.2.3.4:65535") == 0);

        /* from a parsed ticket */
        REQUIRE_OK(parse_s("chapar://[fe80::1:2]:9/" R "/" I "#" K, &t));
        chp_ticket_relay_addr(&t, out, sizeof(out));
        CHECK(strcmp(out, "[fe80::1:2]:9") == 0);

        /* cut short, always NUL-terminated; cap 0 writes nothing */
        t = make("relay.example.com", 443, false);
        chp_ticket_relay_addr(&t, out, 6);
        CHECK(strcmp(out, "relay") == 0);
        out[0] = '#';
        chp_ticket_relay_addr(&t, out, 0);
        CHECK(out[0] == '#');

        /* the longest address fits CHP_TICKET_ADDR_MAX */
        char label63[64], name253[254];
        str_of(label63, sizeof(label63), 'w', 63);
        snprintf(name253, sizeof(name253), "%s.%s.%s.%.61s", label63, label63, label63, label63);
        t = make(name253, 65535, false);
        chp_ticket_relay_addr(&t, out, sizeof(out));
        CHECK_EQ(strlen(out), 253 + 6);
        CHECK(strcmp(out + 253, ":65535") == 0);
}

/* The parser and formatter allocate nothing (ticket.h): the sweep must find no allocation. */
static int ticket_pass(void *arg)
{
        (void)arg;
        static const char s[] = "chapar://[::1]:7700/" R "/" I "#" K;
        struct chp_ticket t;
        char out[512], addr[CHP_TICKET_ADDR_MAX];
        int rc = chp_ticket_parse(s, sizeof(s) - 1, &t);
        if (rc)
                return rc;
        chp_ticket_relay_addr(&t, addr, sizeof(addr));
        ssize_t n = chp_ticket_format(&t, out, sizeof(out));
        if (n < 0)
                return (int)n;
        return (size_t)n == sizeof(s) - 1 && memcmp(out, s, (size_t)n) == 0 ? 0 : 1;
}

TEST(allocation_failure)
{
        CHECK_EQ(tu_alloc_sweep("ticket codec", ticket_pass, NULL, 0), 0);
}

HARNESS_MAIN()
