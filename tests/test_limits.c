/* The limits table (server/conf/client_limits.h): address keys (IPv4, IPv6 /64, mapped,
 * loopback), connections per address, uploads per minute per address and per subject with their
 * Retry-After, incomplete uploads and their expiry, a subject's incomplete uploads, connections
 * and byte rate from any address, the byte bucket's room, wait and debt, the
 * fixed capacity with least-recently-used eviction of idle entries (never of connected ones),
 * the config keys, and many threads at once. Time is passed in, so nothing here sleeps. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "err.h"
#include "client_limits.h"

static struct chp_limits_key v4(const char *ip)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(1234)};
        inet_pton(AF_INET, ip, &sa.sin_addr);
        struct chp_limits_key k;
        int rc = chp_limits_key_from_addr((struct sockaddr *)&sa, sizeof(sa), &k);
        CHECK_OK(rc);
        return k;
}

static struct chp_limits_key v6(const char *ip)
{
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(1234)};
        inet_pton(AF_INET6, ip, &sa.sin6_addr);
        struct chp_limits_key k;
        int rc = chp_limits_key_from_addr((struct sockaddr *)&sa, sizeof(sa), &k);
        CHECK_OK(rc);
        return k;
}

static bool same(struct chp_limits_key a, struct chp_limits_key b)
{
        return memcmp(&a, &b, sizeof(a)) == 0;
}

/* A configuration with every limit off, for the test to set what it checks (only the numbers
 * chp_limits_configure reads: nothing to free). */
static void config_none(struct chp_config *c)
{
        memset(c, 0, sizeof(*c));
        c->upload_expiry = 3600;
}

static struct chp_limits *make(uint32_t capacity, const struct chp_config *c)
{
        struct chp_limits *l = NULL;
        if (chp_limits_new(capacity, &l) != 0)
                return NULL;
        chp_limits_configure(l, c);
        return l;
}

TEST(keys)
{
        struct chp_limits_key a = v4("192.0.2.7"), b = v4("192.0.2.8");
        CHECK_EQ(a.kind, CHP_LIMITS_IPV4);
        CHECK(!a.loopback);
        CHECK(!same(a, b));
        CHECK(same(a, v4("192.0.2.7")));
        /* an IPv4-mapped IPv6 address is its IPv4 address */
        CHECK(same(a, v6("::ffff:192.0.2.7")));
        /* one /64 is one key; the next /64 another */
        struct chp_limits_key p = v6("2001:db8:1:2::1"), q = v6("2001:db8:1:2:ffff:1:2:3");
        CHECK_EQ(p.kind, CHP_LIMITS_IPV6);
        CHECK(same(p, q));
        CHECK(!same(p, v6("2001:db8:1:3::1")));
        CHECK(v4("127.0.0.1").loopback);
        CHECK(v4("127.9.8.7").loopback);
        CHECK(v6("::1").loopback);
        CHECK(v6("::ffff:127.0.0.1").loopback);
        CHECK(!v6("2001:db8::1").loopback);
        /* other families and short lengths: nobody */
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        struct chp_limits_key k;
        memset(&k, 0xaa, sizeof(k));
        CHECK_EQ(chp_limits_key_from_addr((struct sockaddr *)&un, sizeof(un), &k), -EAFNOSUPPORT);
        CHECK_EQ(k.kind, CHP_LIMITS_NOBODY);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        CHECK_EQ(chp_limits_key_from_addr((struct sockaddr *)&sa, 4, &k), -EAFNOSUPPORT);
        CHECK_EQ(chp_limits_key_from_addr(NULL, 0, &k), -EAFNOSUPPORT);
}

TEST(new_refuses_bad_capacity)
{
        struct chp_limits *l = (struct chp_limits *)1;
        CHECK_EQ(chp_limits_new(1, &l), -EINVAL);
        CHECK(l == NULL);
        chp_limits_free(NULL);
}

TEST(connections_per_address)
{
        struct chp_config c;
        config_none(&c);
        c.max_connections_per_address = 3;
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        struct chp_limits_key a = v4("198.51.100.1"), b = v6("2001:db8::5");
        int32_t s[4];
        for (int i = 0; i < 3; i++) {
                CHECK_OK(chp_limits_conn_open(l, &a, 1000, &s[i]));
                CHECK(s[i] >= 0);
        }
        CHECK_EQ(chp_limits_conn_open(l, &a, 1000, &s[3]), CHP_ELIMITED);
        CHECK_EQ(s[3], CHP_LIMITS_NONE);
        /* another address has its own count */
        int32_t sb;
        CHECK_OK(chp_limits_conn_open(l, &b, 1000, &sb));
        /* a close makes room for one more */
        chp_limits_conn_close(l, s[0]);
        CHECK_OK(chp_limits_conn_open(l, &a, 1001, &s[0]));
        CHECK_EQ(chp_limits_conn_open(l, &a, 1001, &s[3]), CHP_ELIMITED);
        /* loopback is not counted unless limit_loopback */
        struct chp_limits_key lo = v4("127.0.0.1");
        int32_t sl;
        for (int i = 0; i < 10; i++) {
                CHECK_OK(chp_limits_conn_open(l, &lo, 1000, &sl));
                CHECK_EQ(sl, CHP_LIMITS_NONE);
        }
        struct chp_limits_key nobody = {0};
        CHECK_OK(chp_limits_conn_open(l, &nobody, 1000, &sl));
        CHECK_EQ(sl, CHP_LIMITS_NONE);
        c.limit_loopback = true;
        chp_limits_configure(l, &c);
        for (int i = 0; i < 3; i++)
                CHECK_OK(chp_limits_conn_open(l, &lo, 1000, &sl));
        CHECK_EQ(chp_limits_conn_open(l, &lo, 1000, &sl), CHP_ELIMITED);
        /* a cap raised by a reload applies at once; 0 is unlimited */
        c.max_connections_per_address = 0;
        chp_limits_configure(l, &c);
        for (int i = 0; i < 100; i++)
                CHECK_OK(chp_limits_conn_open(l, &a, 1002, &sl));
        chp_limits_conn_close(l, CHP_LIMITS_NONE); /* a no-op */
        chp_limits_free(l);
}

TEST(uploads_per_minute)
{
        struct chp_config c;
        config_none(&c);
        c.uploads_per_minute = 2;
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        struct chp_limits_key a = v4("203.0.113.9"), b = v4("203.0.113.10");
        uint32_t retry = 99;
        uint64_t t = 5000000;
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry));
        CHECK_EQ(retry, 0);
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry), CHP_ELIMITED);
        /* two a minute: the next one accrues in 30 s */
        CHECK(retry >= 30 && retry <= 31);
        /* a refusal takes nothing: still limited a little later, with a shorter wait */
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 20000, &retry), CHP_ELIMITED);
        CHECK(retry >= 10 && retry <= 11);
        /* another address is not affected */
        CHECK_OK(chp_limits_upload_begin(l, &b, NULL, NULL, t, &retry));
        /* after the wait it said, the upload goes through */
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 30000, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 30000, &retry), CHP_ELIMITED);
        /* the bucket holds a minute's worth at most: a long pause gives two, not more */
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 3600000, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 3600000, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 3600000, &retry), CHP_ELIMITED);
        /* loopback is exempt by default, and a NULL address is nobody */
        struct chp_limits_key lo = v6("::1");
        for (int i = 0; i < 10; i++) {
                CHECK_OK(chp_limits_upload_begin(l, &lo, NULL, NULL, t, &retry));
                CHECK_OK(chp_limits_upload_begin(l, NULL, NULL, NULL, t, &retry));
        }
        chp_limits_free(l);
}

TEST(uploads_per_subject)
{
        struct chp_config c;
        config_none(&c);
        c.uploads_per_minute = 3;
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        uint32_t retry;
        uint64_t t = 77000;
        /* one subject from ever new addresses (loopback too: exempt only per address) */
        char ip[32];
        for (int i = 0; i < 3; i++) {
                snprintf(ip, sizeof(ip), "10.0.0.%d", i + 1);
                struct chp_limits_key a = v4(ip);
                CHECK_OK(chp_limits_upload_begin(l, &a, "chat", "alice", t, &retry));
        }
        struct chp_limits_key lo = v4("127.0.0.1"), other = v4("10.0.0.99");
        CHECK_EQ(chp_limits_upload_begin(l, &lo, "chat", "alice", t, &retry), CHP_ELIMITED);
        CHECK(retry >= 20 && retry <= 21);
        CHECK_EQ(chp_limits_upload_begin(l, &other, "chat", "alice", t, &retry), CHP_ELIMITED);
        /* the refusal by subject took nothing from the address */
        for (int i = 0; i < 3; i++)
                CHECK_OK(chp_limits_upload_begin(l, &other, "chat", "bob", t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &other, "chat", "carol", t, &retry), CHP_ELIMITED);
        /* the same subject in another tenant is another subject; "" is none */
        CHECK_OK(chp_limits_upload_begin(l, &lo, "mail", "alice", t, &retry));
        for (int i = 0; i < 10; i++)
                CHECK_OK(chp_limits_upload_begin(l, &lo, "chat", "", t, &retry));
        chp_limits_free(l);
}

TEST(incomplete_uploads)
{
        struct chp_config c;
        config_none(&c);
        c.max_incomplete_per_address = 2;
        c.upload_expiry = 100; /* s */
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        struct chp_limits_key a = v4("192.0.2.1");
        uint32_t retry;
        uint64_t t = 1000000; /* generation 10 of 100 s */
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry), CHP_ELIMITED);
        CHECK_EQ(retry, CHP_LIMITS_RETRY_S);
        /* one committed: room for one more */
        chp_limits_upload_end(l, &a, NULL, NULL, t);
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t, &retry), CHP_ELIMITED);
        /* the next generation still counts them (the store may hold them until then) */
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 100000, &retry), CHP_ELIMITED);
        /* an end then comes off the older generation */
        chp_limits_upload_end(l, &a, NULL, NULL, t + 100000);
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 100000, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 100000, &retry), CHP_ELIMITED);
        /* two generations on, those never ended are forgotten (expired in the store) */
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry), CHP_ELIMITED);
        /* ends never go below zero */
        for (int i = 0; i < 10; i++)
                chp_limits_upload_end(l, &a, NULL, NULL, t + 300000);
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, NULL, NULL, t + 300000, &retry), CHP_ELIMITED);
        chp_limits_upload_end(l, NULL, NULL, NULL, t);
        chp_limits_free(l);
}

/* The subject's own limits, from any address: incomplete uploads, connections, byte rate. */
TEST(subject_limits)
{
        struct chp_config c;
        config_none(&c);
        c.max_incomplete_per_subject = 2;
        c.max_connections_per_subject = 2;
        c.upload_rate_per_subject = 64000;
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        uint32_t retry;
        uint64_t t = 1000000;
        struct chp_limits_key a = v4("10.0.0.1"), b = v4("10.0.0.2"), lo = v4("127.0.0.1");
        /* two incomplete uploads of alice from two addresses; a third, from either, refused */
        CHECK_OK(chp_limits_upload_begin(l, &a, "chat", "alice", t, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &b, "chat", "alice", t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &a, "chat", "alice", t, &retry), CHP_ELIMITED);
        CHECK_EQ(retry, CHP_LIMITS_RETRY_S);
        CHECK_EQ(chp_limits_upload_begin(l, &lo, "chat", "alice", t, &retry), CHP_ELIMITED);
        /* another subject from the same addresses is not; the addresses are not at a limit */
        CHECK_OK(chp_limits_upload_begin(l, &a, "chat", "bob", t, &retry));
        CHECK_OK(chp_limits_upload_begin(l, &b, "mail", "alice", t, &retry));
        /* one of alice's committed (from another address than it began): room for one more */
        chp_limits_upload_end(l, &lo, "chat", "alice", t);
        CHECK_OK(chp_limits_upload_begin(l, &lo, "chat", "alice", t, &retry));
        CHECK_EQ(chp_limits_upload_begin(l, &b, "chat", "alice", t, &retry), CHP_ELIMITED);
        /* an end without a subject leaves the subject's count */
        chp_limits_upload_end(l, &a, NULL, NULL, t);
        CHECK_EQ(chp_limits_upload_begin(l, &b, "chat", "alice", t, &retry), CHP_ELIMITED);
        /* two generations of upload_expiry on, those never ended are forgotten */
        CHECK_OK(chp_limits_upload_begin(l, &b, "chat", "alice", t + 2 * 3600 * 1000, &retry));

        /* connections: two of alice's, from anywhere; a third refused until one closes */
        int32_t s1, s2, s3, sb, none;
        CHECK_OK(chp_limits_conn_subject(l, "chat", "alice", t, &s1));
        CHECK_OK(chp_limits_conn_subject(l, "chat", "alice", t, &s2));
        CHECK(s1 >= 0 && s1 == s2);
        CHECK_EQ(chp_limits_conn_subject(l, "chat", "alice", t, &s3), CHP_ELIMITED);
        CHECK_EQ(s3, CHP_LIMITS_NONE);
        CHECK_OK(chp_limits_conn_subject(l, "chat", "bob", t, &sb));
        CHECK(sb >= 0 && sb != s1);
        CHECK_OK(chp_limits_conn_subject(l, "chat", "", t, &none));
        CHECK_EQ(none, CHP_LIMITS_NONE);
        CHECK_OK(chp_limits_conn_subject(l, NULL, NULL, t, &none));
        CHECK_EQ(none, CHP_LIMITS_NONE);
        chp_limits_conn_close(l, s2);
        CHECK_OK(chp_limits_conn_subject(l, "chat", "alice", t, &s3));

        /* the byte rate: the subject's connections share one bucket of upload_rate_per_subject,
         * whatever the address's rate (none here) */
        uint32_t wait;
        CHECK_EQ(chp_limits_read_room(l, s1, 1 << 20, t, &wait), 64000);
        chp_limits_read_charge(l, s1, 64000, t);
        CHECK_EQ(chp_limits_read_room(l, s3, 16384, t, &wait), 0);
        CHECK(wait >= 62 && wait <= 63); /* a quantum of 4000 bytes at 64000/s */
        CHECK_EQ(chp_limits_read_room(l, sb, 16384, t, &wait), 16384); /* bob's own */
        int32_t sa;
        REQUIRE_OK(chp_limits_conn_open(l, &a, t, &sa));
        CHECK_EQ(chp_limits_read_room(l, sa, 1 << 20, t, &wait), 1 << 20); /* no address rate */
        chp_limits_conn_close(l, s1);
        chp_limits_conn_close(l, s3);
        chp_limits_conn_close(l, sb);
        chp_limits_conn_close(l, sa);
        chp_limits_free(l);
}

TEST(byte_rate)
{
        struct chp_config c;
        config_none(&c);
        c.limit_loopback = true;
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        struct chp_limits_key a = v4("127.0.0.2");
        int32_t s;
        REQUIRE_OK(chp_limits_conn_open(l, &a, 0, &s));
        uint32_t wait = 7;
        /* no rate: everything, at once */
        CHECK_EQ(chp_limits_read_room(l, s, 1 << 20, 0, &wait), 1 << 20);
        CHECK_EQ(wait, 0);
        CHECK_EQ(chp_limits_read_room(l, CHP_LIMITS_NONE, 5, 0, &wait), 5);
        c.upload_rate_per_address = 64000;
        chp_limits_configure(l, &c);
        uint64_t t = 10000;
        /* the bucket holds one second's worth (a new entry starts with a full one) */
        int32_t s2;
        struct chp_limits_key b = v4("198.51.100.77");
        REQUIRE_OK(chp_limits_conn_open(l, &b, t, &s2));
        CHECK_EQ(chp_limits_read_room(l, s2, 1 << 20, t, &wait), 64000);
        CHECK_EQ(chp_limits_read_room(l, s2, 100, t, &wait), 100);
        /* room takes nothing; a charge does, and may go past the bucket (debt) */
        chp_limits_read_charge(l, s2, 64000 + 32000, t);
        CHECK_EQ(chp_limits_read_room(l, s2, 16384, t, &wait), 0);
        /* the debt (32000) and a quantum (4000 bytes: a sixteenth of the rate) at 64000/s */
        CHECK(wait >= 562 && wait <= 564);
        CHECK_EQ(chp_limits_read_room(l, s2, 16384, t + 400, &wait), 0);
        CHECK(wait >= 162 && wait <= 164);
        size_t room = chp_limits_read_room(l, s2, 16384, t + 563, &wait);
        CHECK(room >= 4000 && room <= 4100);
        CHECK_EQ(wait, 0);
        /* a read wanting less than the quantum needs only what it wants */
        chp_limits_read_charge(l, s2, room, t + 563);
        CHECK_EQ(chp_limits_read_room(l, s2, 100, t + 565, &wait), 100);
        /* reading N bytes as fast as allowed takes about (N - one second's worth) / rate */
        uint64_t now = t + 100000, start = now, got = 0, total = 640000;
        chp_limits_read_room(l, s2, 1, now, &wait); /* refills to a full bucket */
        while (got < total) {
                size_t want = total - got < 16384 ? (size_t)(total - got) : 16384;
                size_t n = chp_limits_read_room(l, s2, want, now, &wait);
                if (!n) {
                        CHECK(wait >= 1 && wait <= 1000);
                        now += wait;
                        continue;
                }
                chp_limits_read_charge(l, s2, n, now);
                got += n;
        }
        uint64_t ms = now - start;
        CHECK(ms >= 8900 && ms <= 9200); /* (640000 - 64000) / 64000 s = 9 s */
        /* the address's other connections share the bucket */
        int32_t s3;
        REQUIRE_OK(chp_limits_conn_open(l, &b, now, &s3));
        CHECK_EQ(chp_limits_read_room(l, s3, 16384, now, &wait), 0);
        CHECK(wait > 0);
        /* a slow rate waits for one second's worth at most */
        c.upload_rate_per_address = 100;
        chp_limits_configure(l, &c);
        chp_limits_read_room(l, s3, 1, now + 100000, &wait);
        CHECK_EQ(chp_limits_read_room(l, s3, 16384, now + 100000, &wait), 100);
        chp_limits_read_charge(l, s3, 100, now + 100000);
        CHECK_EQ(chp_limits_read_room(l, s3, 16384, now + 100000, &wait), 0);
        CHECK(wait >= 1000 && wait <= 1001);
        chp_limits_read_charge(l, CHP_LIMITS_NONE, 100, now); /* a no-op */
        chp_limits_free(l);
}

TEST(send_rate)
{
        struct chp_config c;
        config_none(&c);
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        struct chp_limits_key a = v4("198.51.100.8");
        int32_t s, s2;
        REQUIRE_OK(chp_limits_conn_open(l, &a, 0, &s));
        uint32_t wait = 7;
        /* no rate: everything, at once, taking nothing */
        CHECK_EQ(chp_limits_send_take(l, s, 1 << 20, 0, &wait), 1 << 20);
        CHECK_EQ(wait, 0);
        chp_limits_send_refund(l, s, 1 << 30, 0);
        c.download_rate_per_address = 64000;
        chp_limits_configure(l, &c);
        uint64_t t = 10000;
        /* one second's worth, taken at once (the bucket, empty while the rate was off, has
         * refilled since; the refund above gave nothing) */
        CHECK_EQ(chp_limits_send_take(l, s, 1 << 20, t, &wait), 64000);
        CHECK_EQ(chp_limits_send_take(l, s, 16384, t, &wait), 0);
        CHECK(wait >= 62 && wait <= 63); /* a quantum: 4000 bytes at 64000/s */
        /* what did not go out comes back, and is shared by the address's connections */
        chp_limits_send_refund(l, s, 20000, t);
        REQUIRE_OK(chp_limits_conn_open(l, &a, t, &s2));
        CHECK_EQ(chp_limits_send_take(l, s2, 16384, t, &wait), 16384);
        CHECK_EQ(chp_limits_send_take(l, s, 2000, t, &wait), 2000); /* less than a quantum */
        CHECK_EQ(chp_limits_send_take(l, s2, 16384, t, &wait), 0);  /* 1616 left */
        /* a refund never makes more than a full bucket */
        chp_limits_send_refund(l, s, 1 << 30, t);
        CHECK_EQ(chp_limits_send_take(l, s, 1 << 20, t, &wait), 64000);
        /* reads have a bucket of their own: off, and with a rate, not spent by sends */
        CHECK_EQ(chp_limits_read_room(l, s2, 1 << 20, t, &wait), 1 << 20);
        c.upload_rate_per_address = 1000;
        chp_limits_configure(l, &c);
        chp_limits_read_charge(l, s2, 5000, t + 1000);
        CHECK_EQ(chp_limits_read_room(l, s2, 100, t + 1000, &wait), 0);
        CHECK_EQ(chp_limits_send_take(l, s2, 1 << 20, t + 1000, &wait), 64000);
        /* many sends at once never overdraw: the next byte comes a quantum's refill later */
        uint64_t now = t + 3000;
        size_t took = 0;
        for (int i = 0; i < 10; i++)
                took += chp_limits_send_take(l, i & 1 ? s : s2, 65536, now, &wait);
        CHECK_EQ(took, 64000);
        CHECK_EQ(chp_limits_send_take(l, s, 65536, now, &wait), 0);
        CHECK(wait >= 62 && wait <= 63);
        /* sending N bytes as fast as allowed takes about (N - one second's worth) / rate */
        now += 2000;
        uint64_t start = now, got = 0, total = 640000;
        while (got < total) {
                size_t want = total - got < 65536 ? (size_t)(total - got) : 65536;
                size_t n = chp_limits_send_take(l, got & 1 ? s : s2, want, now, &wait);
                if (!n) {
                        CHECK(wait >= 1 && wait <= 1000);
                        now += wait;
                        continue;
                }
                got += n;
        }
        CHECK(now - start >= 8900 && now - start <= 9200);
        /* off again: at once */
        c.download_rate_per_address = 0;
        chp_limits_configure(l, &c);
        CHECK_EQ(chp_limits_send_take(l, s, 1 << 20, now, &wait), 1 << 20);
        CHECK_EQ(wait, 0);
        CHECK_EQ(chp_limits_send_take(l, CHP_LIMITS_NONE, 5, now, &wait), 5);
        chp_limits_send_refund(l, CHP_LIMITS_NONE, 100, now); /* a no-op */
        chp_limits_free(l);
}

TEST(eviction)
{
        struct chp_config c;
        config_none(&c);
        c.uploads_per_minute = 1;
        struct chp_limits *l = make(4, &c);
        REQUIRE(l);
        struct chp_limits_stats st;
        uint32_t retry;
        int32_t s[5];
        struct chp_limits_key k[5];
        char ip[32];
        for (int i = 0; i < 5; i++) {
                snprintf(ip, sizeof(ip), "192.0.2.%d", 10 + i);
                k[i] = v4(ip);
        }
        /* four connected addresses fill the table: a fifth is refused, not left uncounted */
        for (int i = 0; i < 4; i++)
                REQUIRE_OK(chp_limits_conn_open(l, &k[i], 1, &s[i]));
        CHECK_EQ(chp_limits_conn_open(l, &k[4], 1, &s[4]), CHP_ELIMITED);
        chp_limits_stats(l, &st);
        CHECK_EQ(st.entries, 4);
        CHECK_EQ(st.capacity, 4);
        CHECK_EQ(st.evictions, 0);
        /* an upload from the fifth is not refused for the table's sake */
        CHECK_OK(chp_limits_upload_begin(l, &k[4], NULL, NULL, 1, &retry));
        /* one closes: its entry is idle, and is what the fifth takes */
        chp_limits_conn_close(l, s[0]);
        CHECK_OK(chp_limits_conn_open(l, &k[4], 2, &s[4]));
        chp_limits_stats(l, &st);
        CHECK_EQ(st.evictions, 1);
        for (int i = 1; i < 5; i++)
                chp_limits_conn_close(l, s[i]);
        /* idle entries go least recently used first: uploads spend each one's only token */
        for (int i = 1; i < 5; i++)
                CHECK_OK(chp_limits_upload_begin(l, &k[i], NULL, NULL, 10, &retry));
        /* k[1] is used again (refused, but looked at), so k[2] is now the least recent */
        CHECK_EQ(chp_limits_upload_begin(l, &k[1], NULL, NULL, 10, &retry), CHP_ELIMITED);
        CHECK_OK(chp_limits_upload_begin(l, &k[0], NULL, NULL, 10, &retry)); /* evicts k[2] */
        CHECK_EQ(chp_limits_upload_begin(l, &k[1], NULL, NULL, 10, &retry), CHP_ELIMITED);
        CHECK_OK(chp_limits_upload_begin(l, &k[2], NULL, NULL, 10, &retry)); /* forgotten */
        chp_limits_stats(l, &st);
        CHECK_EQ(st.entries, 4);
        CHECK_EQ(st.evictions, 3);
        /* a subject never evicts the address it comes with, even in a table of two */
        struct chp_limits *m = make(2, &c);
        REQUIRE(m);
        CHECK_OK(chp_limits_upload_begin(m, &k[0], "t", "s0", 10, &retry));
        CHECK_OK(chp_limits_upload_begin(m, &k[1], "t", "s1", 10, &retry));
        CHECK_EQ(chp_limits_upload_begin(m, &k[1], "t", "s2", 10, &retry), CHP_ELIMITED);
        chp_limits_free(m);
        chp_limits_free(l);
}

TEST(config_keys)
{
        char path[] = "/tmp/chapar-test-limits-XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        const char text[] = "[server]\nmax_connections_per_address = 7\nuploads_per_minute = 0\n"
                            "upload_rate_per_address = 2M\nmax_incomplete_per_address = 9\n"
                            "download_rate_per_address = 3M\n"
                            "limit_loopback = true\n"
                            "max_connections_per_subject = 5\nupload_rate_per_subject = 1M\n"
                            "max_incomplete_per_subject = 4\n";
        CHECK_EQ(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
        close(fd);
        struct chp_config c;
        chp_config_defaults(&c);
        CHECK_EQ(c.max_connections_per_address, 256);
        CHECK_EQ(c.uploads_per_minute, 120);
        CHECK_EQ(c.upload_rate_per_address, 0);
        CHECK_EQ(c.download_rate_per_address, 64u << 20);
        CHECK_EQ(c.max_incomplete_per_address, 1000);
        CHECK(!c.limit_loopback);
        CHECK_EQ(c.max_connections_per_subject, 256);
        CHECK_EQ(c.upload_rate_per_subject, 0);
        CHECK_EQ(c.max_incomplete_per_subject, 1000);
        char err[CHP_CONFIG_ERR_MAX];
        CHECK_OK(chp_config_load_file(&c, path, err));
        unlink(path);
        CHECK_EQ(c.max_connections_per_address, 7);
        CHECK_EQ(c.uploads_per_minute, 0);
        CHECK_EQ(c.upload_rate_per_address, 2 << 20);
        CHECK_EQ(c.download_rate_per_address, 3 << 20);
        CHECK_EQ(c.max_incomplete_per_address, 9);
        CHECK(c.limit_loopback);
        CHECK_EQ(c.max_connections_per_subject, 5);
        CHECK_EQ(c.upload_rate_per_subject, 1 << 20);
        CHECK_EQ(c.max_incomplete_per_subject, 4);
        /* they reload: a running relay keeps none of them */
        struct chp_config running;
        chp_config_defaults(&running);
        int changed = 0;
        CHECK_OK(chp_config_keep_restart_settings(&c, &running, NULL, &changed));
        CHECK_EQ(c.max_connections_per_address, 7);
        CHECK_EQ(c.upload_rate_per_address, 2 << 20);
        CHECK_EQ(c.download_rate_per_address, 3 << 20);
        CHECK(c.limit_loopback);
        CHECK_EQ(c.max_incomplete_per_subject, 4);
        chp_config_free(&running);
        chp_config_free(&c);
}

/* ---- many threads ------------------------------------------------------------------------ */

struct worker {
        struct chp_limits *l;
        unsigned seed;
        int refused;
};

static void *hammer(void *arg)
{
        struct worker *w = arg;
        int32_t held[8];
        for (int i = 0; i < 8; i++)
                held[i] = CHP_LIMITS_NONE;
        for (int round = 0; round < 20000; round++) {
                char ip[32];
                snprintf(ip, sizeof(ip), "10.1.%u.%u", (w->seed + (unsigned)round) % 5,
                         (unsigned)round % 40);
                struct chp_limits_key k = v4(ip);
                uint64_t now = (uint64_t)round;
                int j = round % 8;
                chp_limits_conn_close(w->l, held[j]);
                held[j] = CHP_LIMITS_NONE;
                if (chp_limits_conn_open(w->l, &k, now, &held[j]) != 0)
                        w->refused++;
                uint32_t retry, wait;
                if (chp_limits_upload_begin(w->l, &k, "t", round % 3 ? "a" : "b", now, &retry) == 0)
                        chp_limits_upload_end(w->l, &k, NULL, NULL, now);
                size_t n = chp_limits_read_room(w->l, held[j], 1000, now, &wait);
                chp_limits_read_charge(w->l, held[j], n, now);
        }
        for (int i = 0; i < 8; i++)
                chp_limits_conn_close(w->l, held[i]);
        return NULL;
}

TEST(threads)
{
        struct chp_config c;
        config_none(&c);
        c.max_connections_per_address = 2;
        c.uploads_per_minute = 100;
        c.upload_rate_per_address = 100000;
        c.max_incomplete_per_address = 3;
        /* fewer entries than the 200 addresses and 2 subjects: evictions all the time */
        struct chp_limits *l = make(64, &c);
        REQUIRE(l);
        enum { N = 4 };
        pthread_t t[N];
        struct worker w[N];
        for (int i = 0; i < N; i++) {
                w[i] = (struct worker){.l = l, .seed = (unsigned)i * 7};
                REQUIRE(pthread_create(&t[i], NULL, hammer, &w[i]) == 0);
        }
        for (int i = 0; i < N; i++)
                pthread_join(t[i], NULL);
        struct chp_limits_stats st;
        chp_limits_stats(l, &st);
        CHECK(st.entries <= 64);
        CHECK(st.evictions > 0);
        /* every connection closed: each address takes its cap again */
        int32_t s[3];
        struct chp_limits_key k = v4("10.1.0.0");
        CHECK_OK(chp_limits_conn_open(l, &k, 0, &s[0]));
        CHECK_OK(chp_limits_conn_open(l, &k, 0, &s[1]));
        CHECK_EQ(chp_limits_conn_open(l, &k, 0, &s[2]), CHP_ELIMITED);
        chp_limits_free(l);
}

int main(void)
{
        if (sodium_init() < 0)
                return 1;
        int passed, failed = harness_run(&passed);
        return harness_report(passed, failed);
}
