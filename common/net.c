/* net.c — HOST:PORT parsing, listening sockets, congestion control, the monotonic clock (see
 * net.h). */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- HOST:PORT --------------------------------------------------------------------------- */

static bool is_name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.';
}

int chp_net_split_hostport(const char *s, char *host, size_t hostcap, uint16_t *port)
{
        *port = 0;
        if (hostcap)
                host[0] = '\0';
        if (!s)
                return -EINVAL;
        const char *h, *colon;
        size_t hlen;
        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close || close[1] != ':')
                        return -EINVAL;
                h = s + 1;
                hlen = (size_t)(close - h);
                colon = close + 1;
        } else {
                colon = strchr(s, ':');
                if (!colon || strchr(colon + 1, ':')) /* no port, or an unbracketed IPv6 */
                        return -EINVAL;
                h = s;
                hlen = (size_t)(colon - s);
                for (size_t i = 0; i < hlen; i++)
                        if (!is_name_char(h[i]))
                                return -EINVAL;
        }
        if (hlen == 0 || hlen >= hostcap || hlen >= CHP_NET_HOST_MAX)
                return -EINVAL;

        const char *p = colon + 1;
        size_t plen = strlen(p);
        if (plen == 0 || plen > 5)
                return -EINVAL;
        uint32_t v = 0;
        for (size_t i = 0; i < plen; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return -EINVAL;
                v = v * 10 + (uint32_t)(p[i] - '0');
        }
        if (v > 65535)
                return -EINVAL;

        char tmp[CHP_NET_HOST_MAX];
        memcpy(tmp, h, hlen);
        tmp[hlen] = '\0';
        if (s[0] == '[') {
                struct in6_addr a6;
                if (inet_pton(AF_INET6, tmp, &a6) != 1)
                        return -EINVAL;
        }
        memcpy(host, tmp, hlen + 1);
        *port = (uint16_t)v;
        return 0;
}

/* ---- listening sockets ------------------------------------------------------------------- */

int chp_net_listen(const char *host, uint16_t port, bool first, int *fd, uint16_t *bound_port)
{
        *fd = -1;
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *res = NULL;
        char portstr[8];
        snprintf(portstr, sizeof(portstr), "%u", port);
        if (getaddrinfo(host, portstr, &hints, &res) != 0 || !res)
                return -EADDRNOTAVAIL;
        int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = 0, one = 1;
        if (s < 0) {
                rc = -errno;
                goto out;
        }
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* The first socket listens before it has SO_REUSEPORT: the kernel then refuses it when
         * any socket listens on the address (the check and the claim are one step in listen()).
         * SO_REUSEPORT set afterwards lets this relay's other sockets join it; another chapard's
         * first socket, which lacks it, still cannot. */
        if ((!first && setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
            bind(s, res->ai_addr, res->ai_addrlen) != 0 || listen(s, 4096) != 0 ||
            (first && setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)) {
                rc = -errno;
                goto out;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(s, (struct sockaddr *)&ss, &sl) != 0) {
                rc = -errno;
                goto out;
        }
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
        *fd = s;
        s = -1;
out:
        if (s >= 0)
                close(s);
        freeaddrinfo(res);
        return rc;
}

/* ---- the clock --------------------------------------------------------------------------- */

uint64_t chp_net_now_ms(void)
{
        struct timespec ts;
        (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t chp_net_now_us(void)
{
        struct timespec ts;
        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

double chp_net_now_s(void)
{
        struct timespec ts;
        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void chp_net_iov_advance(struct iovec **iov, int *n, size_t w)
{
        while (*n > 0 && w >= (*iov)->iov_len) {
                w -= (*iov)->iov_len;
                (*iov)++;
                (*n)--;
        }
        if (*n > 0) {
                (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + w;
                (*iov)->iov_len -= w;
        }
}

int chp_net_set_congestion(int fd, const char *name)
{
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n >= CHP_NET_CC_MAX)
                return -EINVAL;
        if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)n) != 0)
                return -errno;
        return 0;
}

int chp_net_congestion(int fd, char *out, size_t cap)
{
        char buf[CHP_NET_CC_MAX] = {0};
        socklen_t len = sizeof(buf) - 1;
        if (cap < CHP_NET_CC_MAX)
                return -EINVAL;
        if (getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, buf, &len) != 0)
                return -errno;
        buf[len < sizeof(buf) ? len : sizeof(buf) - 1] = '\0';
        snprintf(out, cap, "%s", buf);
        return 0;
}

void chp_net_cond_init(pthread_cond_t *cv)
{
        pthread_condattr_t ca;
        if (pthread_condattr_init(&ca) != 0) {
                pthread_cond_init(cv, NULL);
                return;
        }
        if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 || pthread_cond_init(cv, &ca) != 0)
                pthread_cond_init(cv, NULL);
        pthread_condattr_destroy(&ca);
}
