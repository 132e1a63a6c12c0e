/* Fuzz target for common/net's HOST:PORT parser. The input (up to its first NUL, at most 511
 * bytes) goes through chp_net_split_hostport with the first byte choosing the host buffer's size,
 * and the answer must match a reference written the other way round (split at the last ':',
 * then check the host part) byte for byte; an accepted address must format back to one that
 * splits the same. Anything else aborts. Linked with libFuzzer, or with replay.c to run the
 * committed corpus under ctest. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The grammar of net.h, read from the right: PORT after the last ':', then the host part. */
static int reference(const char *s, size_t cap, char *host, uint16_t *port)
{
        const char *colon = strrchr(s, ':');
        if (!colon)
                return -EINVAL;
        const char *p = colon + 1;
        size_t plen = strlen(p);
        if (plen < 1 || plen > 5 || strspn(p, "0123456789") != plen)
                return -EINVAL;
        unsigned long v = strtoul(p, NULL, 10);
        if (v > 65535)
                return -EINVAL;
        size_t hlen = (size_t)(colon - s);
        const char *h = s;
        bool v6 = hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']';
        if (v6) {
                h++;
                hlen -= 2;
                if (memchr(h, '[', hlen) || memchr(h, ']', hlen))
                        return -EINVAL;
        } else {
                for (size_t i = 0; i < hlen; i++)
                        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.",
                                    h[i]) ||
                            h[i] == '\0')
                                return -EINVAL;
        }
        if (hlen == 0 || hlen + 1 > cap || hlen + 1 > CHP_NET_HOST_MAX)
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        struct in6_addr a6;
        if (v6 && inet_pton(AF_INET6, host, &a6) != 1)
                return -EINVAL;
        *port = (uint16_t)v;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        size_t cap = data[0] == 0 ? CHP_NET_HOST_MAX + 8 : data[0];
        char s[512];
        size_t n = size - 1 < sizeof(s) - 1 ? size - 1 : sizeof(s) - 1;
        memcpy(s, data + 1, n);
        s[n] = '\0';

        char host[CHP_NET_HOST_MAX + 8], want[CHP_NET_HOST_MAX + 8];
        memset(host, 'X', sizeof(host));
        uint16_t port = 1, wport = 0;
        int rc = chp_net_split_hostport(s, host, cap, &port);
        int wrc = reference(s, cap, want, &wport);
        EXPECT(rc == wrc);
        if (rc != 0) {
                EXPECT(rc == -EINVAL && port == 0 && host[0] == '\0');
                return 0;
        }
        EXPECT(strcmp(host, want) == 0 && port == wport);
        size_t hlen = strlen(host);
        EXPECT(hlen > 0 && hlen < cap && hlen < CHP_NET_HOST_MAX);
        char addr[CHP_NET_HOST_MAX + 16], again[CHP_NET_HOST_MAX];
        uint16_t port2 = 0;
        snprintf(addr, sizeof(addr), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
        EXPECT(chp_net_split_hostport(addr, again, sizeof(again), &port2) == 0);
        EXPECT(port2 == port && strcmp(again, host) == 0);
        return 0;
}
