/* testutil.c — the shared C test helpers (see testutil.h). */
#include "testutil.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "net.h"
#include "proto.h"

uint8_t *tu_pattern(size_t n, unsigned seed)
{
        uint8_t *p = malloc(n ? n : 1);
        if (!p)
                return NULL;
        uint32_t x = 2166136261u ^ seed;
        for (size_t i = 0; i < n; i++) {
                x = x * 16777619u + (uint32_t)i;
                p[i] = (uint8_t)(x >> 13);
        }
        return p;
}

uint8_t *tu_exact_copy(const uint8_t *src, size_t len)
{
        uint8_t *p = malloc(len ? len : 1);
        if (p && len)
                memcpy(p, src, len);
        return p;
}

void tu_put32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

void tu_put64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

bool tu_same_hex(const uint8_t *p, size_t n, const char *want)
{
        char got[1024];
        if (2 * n + 1 > sizeof(got))
                return false;
        chp_hex_encode(p, n, got);
        if (strcmp(got, want) != 0) {
                fprintf(stderr, "  got  %s\n  want %s\n", got, want);
                return false;
        }
        return true;
}

int tu_dial(const char *hostport)
{
        char host[CHP_NET_HOST_MAX], port[8];
        uint16_t pn;
        if (chp_net_split_hostport(hostport, host, sizeof(host), &pn) != 0)
                return -1;
        snprintf(port, sizeof(port), "%u", pn);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
        if (getaddrinfo(host, port, &hints, &res) != 0)
                return -1;
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
                close(fd);
                fd = -1;
        }
        freeaddrinfo(res);
        return fd;
}

bool tu_send_all(int fd, const void *p, size_t n)
{
        const uint8_t *b = p;
        while (n) {
                ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                b += w;
                n -= (size_t)w;
        }
        return true;
}

int tu_native(const char *hostport, bool hello)
{
        int fd = tu_dial(hostport);
        if (fd < 0)
                return -1;
        uint8_t buf[8 + CHP_FRAME_HEADER + 16];
        size_t len = 8;
        memcpy(buf, "CHP0\0\0\0\0", 8);
        if (hello) {
                struct chp_msg_hello m = {.version = CHP_PROTO_VERSION};
                ssize_t n = chp_msg_hello_encode(buf + 8 + CHP_FRAME_HEADER, 16, &m);
                if (n < 0) {
                        close(fd);
                        return -1;
                }
                chp_frame_header_encode(buf + 8, CHP_F_HELLO, 1, (uint32_t)n);
                len += CHP_FRAME_HEADER + (size_t)n;
        }
        if (!tu_send_all(fd, buf, len)) {
                close(fd);
                return -1;
        }
        return fd;
}

double tu_seconds_until_closed(int fd, int limit_s, uint8_t *first, size_t cap, size_t *nfirst)
{
        struct timeval tv = {.tv_sec = limit_s};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        double t0 = chp_net_now_s();
        if (nfirst)
                *nfirst = 0;
        uint8_t buf[512];
        for (;;) {
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r > 0) {
                        if (first && nfirst && *nfirst < cap) {
                                size_t k = (size_t)r < cap - *nfirst ? (size_t)r : cap - *nfirst;
                                memcpy(first + *nfirst, buf, k);
                                *nfirst += k;
                        }
                        continue;
                }
                if (r < 0 && errno != ECONNRESET)
                        return -1;
                return chp_net_now_s() - t0;
        }
}
