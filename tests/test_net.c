/* test_net.c — common/net: the HOST:PORT grammar case by case, the listening-socket rule (a
 * face's first socket refuses a taken address, the others join it), and the clock. */
#include "harness.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

struct hp_case {
        const char *in;
        int rc;
        const char *host;
        unsigned port;
};

static const struct hp_case cases[] = {
    /* accepted: IPv4, names, bracketed IPv6, the port's whole range */
    {"127.0.0.1:7700", 0, "127.0.0.1", 7700},
    {"0.0.0.0:80", 0, "0.0.0.0", 80},
    {"localhost:0", 0, "localhost", 0},
    {"relay.example.org:65535", 0, "relay.example.org", 65535},
    {"Relay-1.Example.ORG:1", 0, "Relay-1.Example.ORG", 1},
    {"x:00080", 0, "x", 80},
    {"[::1]:7700", 0, "::1", 7700},
    {"[::]:0", 0, "::", 0},
    {"[2001:db8::7]:443", 0, "2001:db8::7", 443},
    {"[::ffff:192.0.2.1]:9", 0, "::ffff:192.0.2.1", 9},
    /* missing port */
    {"127.0.0.1", -EINVAL, NULL, 0},
    {"127.0.0.1:", -EINVAL, NULL, 0},
    {"[::1]", -EINVAL, NULL, 0},
    {"[::1]:", -EINVAL, NULL, 0},
    {"[::1]7700", -EINVAL, NULL, 0},
    /* ports out of range or not plain decimal */
    {"127.0.0.1:65536", -EINVAL, NULL, 0},
    {"127.0.0.1:99999", -EINVAL, NULL, 0},
    {"127.0.0.1:123456", -EINVAL, NULL, 0},
    {"127.0.0.1:4294967297", -EINVAL, NULL, 0},
    {"127.0.0.1:000080", -EINVAL, NULL, 0},
    {"127.0.0.1:-1", -EINVAL, NULL, 0},
    {"127.0.0.1:+80", -EINVAL, NULL, 0},
    {"127.0.0.1:80x", -EINVAL, NULL, 0},
    {"127.0.0.1:0x50", -EINVAL, NULL, 0},
    {"127.0.0.1: 80", -EINVAL, NULL, 0},
    {"127.0.0.1:80 ", -EINVAL, NULL, 0},
    {"127.0.0.1:http", -EINVAL, NULL, 0},
    {"127.0.0.1:80:81", -EINVAL, NULL, 0},
    /* empty host */
    {"", -EINVAL, NULL, 0},
    {":", -EINVAL, NULL, 0},
    {":7700", -EINVAL, NULL, 0},
    {"[]:7700", -EINVAL, NULL, 0},
    /* IPv6 without brackets, unbalanced or misplaced brackets */
    {"::1:7700", -EINVAL, NULL, 0},
    {"2001:db8::7:443", -EINVAL, NULL, 0},
    {"[::1:7700", -EINVAL, NULL, 0},
    {"::1]:7700", -EINVAL, NULL, 0},
    {"[[::1]]:7700", -EINVAL, NULL, 0},
    {"[::1]]:7700", -EINVAL, NULL, 0},
    {"a[::1]:7700", -EINVAL, NULL, 0},
    /* brackets hold an IPv6 address and nothing else */
    {"[nothex]:7700", -EINVAL, NULL, 0},
    {"[127.0.0.1]:80", -EINVAL, NULL, 0},
    {"[localhost]:80", -EINVAL, NULL, 0},
    {"[::1%lo]:80", -EINVAL, NULL, 0},
    /* characters a host name cannot have */
    {"a b:80", -EINVAL, NULL, 0},
    {"a/b:80", -EINVAL, NULL, 0},
    {"a_b:80", -EINVAL, NULL, 0},
    {"user@host:80", -EINVAL, NULL, 0},
    {" host:80", -EINVAL, NULL, 0},
};

TEST(split_hostport_cases)
{
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct hp_case *k = &cases[i];
                char host[64];
                uint16_t port = 1234;
                int rc = chp_net_split_hostport(k->in, host, sizeof(host), &port);
                bool ok = rc == k->rc && (rc != 0 ? port == 0 && host[0] == '\0'
                                                  : strcmp(host, k->host) == 0 && port == k->port);
                if (!ok)
                        fprintf(stderr, "  case %zu \"%s\": rc %d host \"%s\" port %u\n", i, k->in,
                                rc, host, port);
                CHECK(ok);
        }
}

TEST(split_hostport_capacity)
{
        char small[4];
        uint16_t port = 7;
        CHECK_EQ(chp_net_split_hostport("abcd:1", small, sizeof(small), &port), -EINVAL);
        CHECK(small[0] == '\0' && port == 0);
        CHECK_OK(chp_net_split_hostport("abc:1", small, sizeof(small), &port));
        CHECK(strcmp(small, "abc") == 0 && port == 1);
        CHECK_EQ(chp_net_split_hostport("[::ffff]:1", small, sizeof(small), &port), -EINVAL);
        CHECK_EQ(chp_net_split_hostport("a:1", small, 0, &port), -EINVAL);
        CHECK_EQ(chp_net_split_hostport(NULL, small, sizeof(small), &port), -EINVAL);

        /* the longest host that fits CHP_NET_HOST_MAX with its NUL, and one byte more */
        char in[CHP_NET_HOST_MAX + 8], host[CHP_NET_HOST_MAX + 8];
        memset(in, 'a', CHP_NET_HOST_MAX - 1);
        memcpy(in + CHP_NET_HOST_MAX - 1, ":9", 3);
        CHECK_OK(chp_net_split_hostport(in, host, sizeof(host), &port));
        CHECK(strlen(host) == CHP_NET_HOST_MAX - 1 && port == 9);
        memset(in, 'a', CHP_NET_HOST_MAX);
        memcpy(in + CHP_NET_HOST_MAX, ":9", 3);
        CHECK_EQ(chp_net_split_hostport(in, host, sizeof(host), &port), -EINVAL);
}

TEST(listen_first_socket_is_exclusive)
{
        int a = -1, b = -1, c = -1;
        uint16_t pa = 0, pb = 0, pc = 0;
        REQUIRE_OK(chp_net_listen("127.0.0.1", 0, true, &a, &pa));
        CHECK(a >= 0 && pa != 0);
        /* another face's first socket on the same address is refused ... */
        CHECK_EQ(chp_net_listen("127.0.0.1", pa, true, &b, &pb), -EADDRINUSE);
        CHECK(b == -1);
        /* ... while this face's other sockets join it */
        CHECK_OK(chp_net_listen("127.0.0.1", pa, false, &c, &pc));
        CHECK(c >= 0 && pc == pa);
        if (c >= 0)
                close(c);
        close(a);
        CHECK_EQ(chp_net_listen("no-such-host.invalid", 0, true, &b, &pb), -EADDRNOTAVAIL);
        CHECK(b == -1);
}

TEST(clock_is_monotonic_and_consistent)
{
        uint64_t ms0 = chp_net_now_ms(), us0 = chp_net_now_us();
        double s0 = chp_net_now_s();
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        uint64_t ms1 = chp_net_now_ms(), us1 = chp_net_now_us();
        double s1 = chp_net_now_s();
        CHECK(ms1 >= ms0 + 20);
        CHECK(us1 >= us0 + 20000);
        CHECK(s1 >= s0 + 0.020);
        /* the three read one clock: they agree to within the time between the reads */
        CHECK(us1 / 1000 >= ms1 && us1 / 1000 - ms1 < 1000);
        CHECK((double)us1 / 1e6 <= s1 + 1e-6 && s1 - (double)us1 / 1e6 < 1.0);
}

TEST(congestion_control_set_and_read)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        char cc[CHP_NET_CC_MAX];
        REQUIRE_OK(chp_net_congestion(fd, cc, sizeof(cc)));
        CHECK(cc[0] != '\0');
        /* reno is built into every kernel and always allowed */
        CHECK_OK(chp_net_set_congestion(fd, "reno"));
        CHECK_OK(chp_net_congestion(fd, cc, sizeof(cc)));
        CHECK(strcmp(cc, "reno") == 0);
        CHECK_EQ(chp_net_set_congestion(fd, "no-such-cc"), -ENOENT);
        CHECK_EQ(chp_net_set_congestion(fd, ""), -EINVAL);
        CHECK_EQ(chp_net_set_congestion(fd, "a-name-far-too-long-for-it"), -EINVAL);
        CHECK_OK(chp_net_congestion(fd, cc, sizeof(cc)));
        CHECK(strcmp(cc, "reno") == 0); /* refusals left it as it was */
        CHECK_EQ(chp_net_congestion(fd, cc, 4), -EINVAL);
        close(fd);
}

HARNESS_MAIN()
