/* cutproxy — a TCP relay for test scripts that can hold one direction at a known byte count.
 *
 * Usage: cutproxy UPSTREAM-PORT DIR. Listens on 127.0.0.1:0 and writes its port to DIR/port;
 * each connection is forwarded to 127.0.0.1:UPSTREAM-PORT (a child process per connection).
 * A script arms a cut by writing "N" (or "N up") to DIR/arm: the first connection to see it
 * claims it and, after N more upstream-to-client (client-to-upstream) bytes, holds back what
 * that side sends and creates DIR/cut. DIR/go delivers it and lifts the hold (and is removed);
 * either side going away closes both, delivering nothing more. So "the peer died after N
 * bytes" or "the client got its first bytes while the rest was held" are exact on any machine.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dir_path;

static void path(char *out, size_t cap, const char *name)
{
        snprintf(out, cap, "%s/%s", dir_path, name);
}

static int exists(const char *name)
{
        char p[4096];
        struct stat st;
        path(p, sizeof p, name);
        return stat(p, &st) == 0;
}

/* Claims DIR/arm for this connection (rename is atomic between the children): "N" holds the
 * upstream's bytes after N, "N up" the client's. Sets *left and *dir (0 or 1, an index into
 * serve's sides); false when there is no arm. */
static bool claim_arm(long long *left, int *dir)
{
        char arm[4096], mine[4200], way[8] = "";
        path(arm, sizeof arm, "arm");
        snprintf(mine, sizeof mine, "%s/arm.%d", dir_path, (int)getpid());
        if (rename(arm, mine) != 0)
                return false;
        FILE *f = fopen(mine, "r");
        long long n = -1;
        if (!f || fscanf(f, "%lld %7s", &n, way) < 1)
                n = -1;
        if (f)
                fclose(f);
        unlink(mine);
        *left = n > 0 ? n : -1;
        *dir = strcmp(way, "up") == 0;
        return n > 0;
}

static void touch(const char *name)
{
        char p[4096];
        path(p, sizeof p, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
                close(fd);
}

static int write_all(int fd, const char *p, size_t n)
{
        while (n) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return -1;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Reads up to most bytes from `from`; sends them to `to`, or, when kept is set, appends them
 * there instead. The byte count, or -1 at the end of the stream or on an error. */
static ssize_t forward(int from, int to, size_t most, char **kept, size_t *nkept)
{
        char buf[65536];
        ssize_t n = read(from, buf, most < sizeof buf ? most : sizeof buf);
        if (n <= 0)
                return -1;
        if (!kept)
                return write_all(to, buf, (size_t)n) ? -1 : n;
        char *k = realloc(*kept, *nkept + (size_t)n);
        if (!k)
                return -1;
        memcpy(k + *nkept, buf, (size_t)n);
        *kept = k;
        *nkept += (size_t)n;
        return n;
}

/* Relays one connection. While held, what the held side sends is read (so that its end, when
 * it dies, is seen at once) but kept back; a release delivers it. */
static void serve(int down, int port)
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int up = socket(AF_INET, SOCK_STREAM, 0);
        if (up < 0 || connect(up, (struct sockaddr *)&a, sizeof a) != 0)
                _exit(0); /* the client sees its connection closed, as with no listener */
        const int from[2] = {up, down}, to[2] = {down, up}; /* 0: upstream to client, 1: back */
        long long left = -1; /* bytes of side dir until the hold; -1: not armed */
        int dir = 0, held = 0;
        char *kept = NULL;
        size_t nkept = 0;
        for (;;) {
                if (left < 0 && !held)
                        claim_arm(&left, &dir);
                if (held && exists("go")) {
                        char p[4096];
                        path(p, sizeof p, "go");
                        unlink(p);
                        if (write_all(to[dir], kept, nkept))
                                break;
                        held = 0;
                        left = -1;
                        nkept = 0;
                }
                struct pollfd p[2] = {{.fd = from[0], .events = POLLIN},
                                      {.fd = from[1], .events = POLLIN}};
                if (poll(p, 2, 50) < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < 2; i++) {
                        if (!p[i].revents)
                                continue;
                        bool limited = !held && left > 0 && i == dir;
                        ssize_t n = forward(from[i], to[i], limited ? (size_t)left : SIZE_MAX,
                                            held && i == dir ? &kept : NULL, &nkept);
                        if (n < 0)
                                _exit(0);
                        if (limited && (left -= n) == 0) {
                                held = 1;
                                touch("cut");
                        }
                }
        }
        _exit(0);
}

int main(int argc, char **argv)
{
        if (argc != 3) {
                fprintf(stderr, "usage: cutproxy UPSTREAM-PORT DIR\n");
                return 1;
        }
        char *end;
        long port = strtol(argv[1], &end, 10);
        if (*end || port < 1 || port > 65535) {
                fprintf(stderr, "cutproxy: not a port: %s\n", argv[1]);
                return 1;
        }
        dir_path = argv[2];
        signal(SIGCHLD, SIG_IGN);
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 16) != 0 ||
            getsockname(ls, (struct sockaddr *)&a, &len) != 0) {
                perror("cutproxy");
                return 1;
        }
        char p[4096], tmp[4200];
        path(p, sizeof p, "port");
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0 || rename(tmp, p)) {
                perror("cutproxy: port file");
                return 1;
        }
        for (;;) {
                int c = accept(ls, NULL, NULL);
                if (c < 0)
                        continue;
                if (fork() == 0) {
                        close(ls);
                        serve(c, (int)port);
                }
                close(c);
        }
}
