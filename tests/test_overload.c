/* A real chapard under hostile load (issue 11): descriptors running out, slowloris heads and
 * handshakes, bodies that trickle, and connections that are never used. Each test starts its own
 * relay (one thread, port 0, a temp dir, its log captured to a file) and checks what the relay
 * must bound: its CPU, its log, its memory budget, how long a client may hold a connection, and
 * that a normal client is still served. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "net.h"
#include "relay_client.h"

#define MiB (1024u * 1024u)

struct relay {
        struct rc_relay r; /* pid and dir, for rc_relay_stop and rc_relay_cleanup */
        char http[128];    /* host:port of the HTTP face */
        char log[300];
};

/* The relay of the test running now: a test that ends early (REQUIRE) leaves it to the next
 * spawn or to main, which stop it and remove its directory. */
static struct relay rl;

static void pause_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

/* Starts chapard with conf as its [server] settings, one thread, its stderr in x->log; nofile
 * (when nonzero) becomes its descriptor limit, soft and hard, before it starts. */
static void finish(struct relay *x);

static int spawn(struct relay *x, const char *conf, rlim_t nofile, const char *level)
{
        finish(x);
        memset(x, 0, sizeof(*x));
        const char *bin = getenv("CHAPARD");
        if (!bin)
                return -ENOENT;
        snprintf(x->r.chapard, sizeof(x->r.chapard), "%s", bin);
        snprintf(x->r.dir, sizeof(x->r.dir), "/tmp/chapar-overload-XXXXXX");
        if (!mkdtemp(x->r.dir))
                return -errno;
        char data[300], ready[300], ini[300];
        snprintf(data, sizeof(data), "%s/data", x->r.dir);
        snprintf(ready, sizeof(ready), "%s/ready", x->r.dir);
        snprintf(ini, sizeof(ini), "%s/chapard.ini", x->r.dir);
        snprintf(x->log, sizeof(x->log), "%s/log", x->r.dir);
        FILE *f = fopen(ini, "w");
        if (!f)
                return -errno;
        fprintf(f, "[server]\n%s", conf);
        fclose(f);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open(x->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (fd < 0 || dup2(fd, 2) < 0)
                        _exit(126);
                if (nofile) {
                        struct rlimit lim = {nofile, nofile};
                        if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
                                _exit(126);
                }
                execl(bin, bin, "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                      "--ready-file", ready, "--log-level", level, "--insecure-plaintext",
                      "--threads", "1", "--config", ini, (char *)NULL);
                _exit(127);
        }
        x->r.pid = pid;
        for (int i = 0; i < 1000; i++) {
                FILE *rf = fopen(ready, "r");
                if (rf) {
                        char line[120];
                        while (fgets(line, sizeof(line), rf)) {
                                line[strcspn(line, "\n")] = '\0';
                                if (strncmp(line, "native=", 7) == 0)
                                        snprintf(x->r.addr, sizeof(x->r.addr), "%s", line + 7);
                                else if (strncmp(line, "http=", 5) == 0)
                                        snprintf(x->http, sizeof(x->http), "%s", line + 5);
                        }
                        fclose(rf);
                        if (x->r.addr[0] && x->http[0])
                                return 0;
                }
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        x->r.pid = 0;
                        return -ECHILD;
                }
                pause_ms(10);
        }
        rc_relay_stop(&x->r, SIGKILL);
        return -ETIMEDOUT;
}

/* Stops the relay (if it still runs) and removes its directory; again is a no-op. */
static void finish(struct relay *x)
{
        rc_relay_cleanup(&x->r);
}

/* Whether the relay has closed fd (end of stream or reset), reading whatever it said first. */
static bool closed_by_relay(int fd)
{
        char buf[512];
        for (;;) {
                ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (r > 0)
                        continue;
                return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
        }
}

/* One HTTP request on a new connection; the status, or -1. Reads the reply (5 s at most) into
 * out. */
static int http_call(const char *hostport, const char *req, char *out, size_t cap)
{
        int fd = tu_dial(hostport);
        if (fd < 0)
                return -1;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        size_t n = 0;
        if (tu_send_all(fd, req, strlen(req))) {
                ssize_t r;
                while (n + 1 < cap && (r = read(fd, out + n, cap - 1 - n)) > 0)
                        n += (size_t)r;
        }
        close(fd);
        out[n] = '\0';
        int status = -1;
        if (sscanf(out, "HTTP/1.1 %d", &status) != 1)
                return -1;
        return status;
}

/* The value of one metric line ("name{labels}"), or -1. */
static double metric(const char *hostport, const char *name)
{
        static char buf[65536];
        if (http_call(hostport, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      buf, sizeof(buf)) != 200)
                return -1;
        size_t len = strlen(name);
        for (char *p = buf; (p = strstr(p, name)); p += len)
                if ((p == buf || p[-1] == '\n') && p[len] == ' ')
                        return strtod(p + len + 1, NULL);
        return -1;
}

static double metric_sum(const char *hostport, const char *const *names)
{
        double sum = 0;
        for (int i = 0; names[i]; i++) {
                double v = metric(hostport, names[i]);
                if (v < 0)
                        return -1;
                sum += v;
        }
        return sum;
}

static bool healthy(const char *hostport)
{
        char buf[1024];
        return http_call(hostport, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                         buf, sizeof(buf)) == 200;
}

static int count_lines(const char *path, const char *needle)
{
        FILE *f = fopen(path, "r");
        if (!f)
                return -1;
        char line[1024];
        int n = 0;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, needle) && ++n <= 3)
                        fprintf(stderr, "  log: %s", line);
        fclose(f);
        return n;
}

/* Our own descriptor limit as high as it goes: the floods below need thousands. */
static rlim_t raise_own_limit(void)
{
        struct rlimit lim;
        if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
                return 1024;
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
        return lim.rlim_cur;
}

static int still_open(const int *fds, int n)
{
        int open_n = 0;
        for (int i = 0; i < n; i++)
                if (fds[i] >= 0 && !closed_by_relay(fds[i]))
                        open_n++;
        return open_n;
}

static void close_all(int *fds, int n)
{
        for (int i = 0; i < n; i++)
                if (fds[i] >= 0) {
                        close(fds[i]);
                        fds[i] = -1;
                }
}

/* ---- descriptors --------------------------------------------------------------------------- */

/* CPU seconds (user + system) the process has used. */
static double cpu_seconds(pid_t pid)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        /* after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
         * cmajflt utime stime */
        if (!p ||
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -1;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Opens n connections to the HTTP face without sending anything; fds[] gets them (-1 where the
 * connect itself failed). */
static void flood(const char *hostport, int *fds, int n)
{
        for (int i = 0; i < n; i++)
                fds[i] = tu_dial(hostport);
}

/* The relay runs out of descriptors with connections of its own: downloads of chunks stored in
 * segments take a pipe (two descriptors) each, so they fill a descriptor limit long before
 * max_connections, clamped to that limit, is reached. Then accept fails: it must back off
 * instead of spinning, say so in a few log lines and a metric, answer the connections it
 * cannot take and close them, and serve again once the downloads are gone. */
TEST(out_of_descriptors_backs_off_and_sheds)
{
        enum { LIMIT = 160, DL = 60, N = 300 };
        raise_own_limit();
        REQUIRE_OK(spawn(&rl, "", LIMIT, "warn"));
        struct rc_conn c;
        struct rc_file f;
        struct rc_put_stats st;
        uint8_t addr[CHP_HASH_BYTES];
        REQUIRE_OK(rc_connect(&c, rl.r.addr));
        REQUIRE_OK(rc_file_make(&f, 1 * MiB, 1 * MiB, 3, 0));
        REQUIRE_OK(rc_put(&c, &f, &st));
        REQUIRE_OK(chp_sha256(f.data, f.total, addr));
        rc_close(&c);
        rc_file_free(&f);
        /* downloads that are never read: each holds its socket and its pipe */
        static int dl[DL], fds[N];
        uint8_t frame[CHP_FRAME_HEADER + 64];
        struct chp_msg_get_chunk g = {.addr = addr};
        ssize_t glen = chp_msg_get_chunk_encode(frame + CHP_FRAME_HEADER, 64, &g);
        REQUIRE(glen > 0);
        chp_frame_header_encode(frame, CHP_F_GET_CHUNK, 2, (uint32_t)glen);
        for (int i = 0; i < DL; i++) {
                dl[i] = tu_native(rl.r.addr, true);
                if (dl[i] >= 0)
                        tu_send_all(dl[i], frame, CHP_FRAME_HEADER + (size_t)glen);
        }
        pause_ms(500);
        double cpu0 = cpu_seconds(rl.r.pid), t0 = chp_net_now_s();
        flood(rl.http, fds, N);
        pause_ms(3000);
        double cpu = cpu_seconds(rl.r.pid) - cpu0, span = chp_net_now_s() - t0;
        /* the connections the relay could not take are answered and closed, not left waiting
         * in its backlog */
        int open_n = still_open(fds, N);
        fprintf(stderr, "  %d of %d connections left open, relay CPU %.2f s in %.1f s\n", open_n, N,
                cpu, span);
        CHECK(open_n <= N / 4);
        /* a spinning accept burns a whole core; backing off costs next to nothing */
        CHECK(cpu >= 0 && cpu < 0.25 * span);
        close_all(fds, N);
        close_all(dl, DL);
        /* served again once the descriptors are back */
        bool ok = false;
        for (int i = 0; i < 50 && !(ok = healthy(rl.http)); i++)
                pause_ms(100);
        CHECK(ok);
        CHECK_OK(rc_connect(&c, rl.r.addr));
        rc_close(&c);
        CHECK(metric(rl.http, "chapar_accept_errors_total{reason=\"emfile\"}") > 0);
        CHECK(metric(rl.http, "chapar_connections_closed_total{reason=\"no_fds\"}") > 0);
        /* bounded log: one warning per ten seconds, not one per failed accept */
        int lines = count_lines(rl.log, "accept");
        fprintf(stderr, "  %d log lines about accept\n", lines);
        CHECK(lines >= 1 && lines <= 3);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* Started under a descriptor limit smaller than max_connections: the relay says so, takes no
 * more connections than it has descriptors for, and closes the rest at once. */
TEST(a_low_descriptor_limit_clamps_max_connections)
{
        enum { LIMIT = 200, N = 300 };
        raise_own_limit();
        REQUIRE_OK(spawn(&rl, "", LIMIT, "warn"));
        static int fds[N];
        flood(rl.http, fds, N);
        pause_ms(1000);
        int open_n = still_open(fds, N);
        fprintf(stderr, "  %d of %d connections open\n", open_n, N);
        CHECK(open_n < LIMIT);
        CHECK(count_lines(rl.log, "is more than the descriptor limit") == 1);
        close_all(fds, N);
        bool ok = false;
        for (int i = 0; i < 50 && !(ok = healthy(rl.http)); i++)
                pause_ms(100);
        CHECK(ok);
        CHECK(metric(rl.http, "chapar_connections_closed_total{reason=\"cap\"}") > 0);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* ---- deadlines ----------------------------------------------------------------------------- */

/* Slowloris: HTTP heads, native handshakes and native frame headers that trickle one byte now
 * and then (each byte is progress, so io_timeout never fires) are all closed by their
 * deadlines, while a normal request is served during the attack. */
TEST(slowloris_is_cut_at_the_head_and_handshake_deadlines)
{
        rlim_t have = raise_own_limit();
        int n = have > 2300 ? 2000 : (int)have - 300;
        REQUIRE(n >= 500);
        REQUIRE_OK(spawn(&rl, "header_timeout = 2s\nhandshake_timeout = 2s\n", 0, "info"));
        int *fds = calloc((size_t)n, sizeof(int));
        REQUIRE(fds);
        double t0 = chp_net_now_s();
        for (int i = 0; i < n; i++) {
                int kind = i % 4; /* half HTTP heads, a quarter handshakes, a quarter frames */
                fds[i] = tu_dial(kind < 2 ? rl.http : rl.r.addr);
                if (fds[i] < 0)
                        continue;
                if (kind < 2)
                        tu_send_all(fds[i], "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: ", 37);
                else if (kind == 2)
                        tu_send_all(fds[i], "CHN1", 4); /* half a preamble */
                else
                        tu_send_all(fds[i], "CHP0\0\0\0\0\x0d\0\0", 11); /* preamble, 3 of 12 */
        }
        double opened = chp_net_now_s() - t0;
        int opened_n = 0;
        for (int i = 0; i < n; i++)
                opened_n += fds[i] >= 0;
        CHECK_EQ(opened_n, n);
        /* a byte a second from each: progress, but no head ever ends */
        bool served = false;
        int open_n = n;
        while (chp_net_now_s() - t0 < opened + 2 + 4 && open_n > 0) { /* deadline + sweep slack */
                open_n = 0;
                for (int i = 0; i < n; i++) {
                        if (fds[i] < 0)
                                continue;
                        if (closed_by_relay(fds[i])) {
                                close(fds[i]);
                                fds[i] = -1;
                                continue;
                        }
                        open_n++;
                        if (i % 4 == 3)
                                continue; /* frames: the rest of the header never comes */
                        ssize_t w = send(fds[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                        (void)w;
                }
                if (!served)
                        served = healthy(rl.http);
                pause_ms(1000);
        }
        double took = chp_net_now_s() - t0;
        fprintf(stderr, "  %d connections opened in %.2f s; %d still open after %.2f s\n", n,
                opened, open_n, took);
        CHECK_EQ(open_n, 0);
        CHECK(served);
        const char *why[] = {"chapar_connections_closed_total{reason=\"header_timeout\"}",
                             "chapar_connections_closed_total{reason=\"handshake_timeout\"}", NULL};
        CHECK(metric_sum(rl.http, why) >= n);
        close_all(fds, n);
        free(fds);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* A CHUNK body that never ends: one byte now and then is progress (io_timeout never fires) but
 * under min_body_rate, so it is cut after the window. */
TEST(a_body_under_the_rate_floor_is_cut)
{
        REQUIRE_OK(spawn(&rl, "min_body_rate = 1K\nbody_rate_window = 2s\n", 0, "warn"));
        int fd = tu_native(rl.r.addr, true);
        REQUIRE(fd >= 0);
        uint8_t hdr[CHP_FRAME_HEADER];
        chp_frame_header_encode(hdr, CHP_F_CHUNK, 2, 1 * MiB);
        REQUIRE(tu_send_all(fd, hdr, sizeof(hdr)));
        double t0 = chp_net_now_s();
        bool closed = false;
        while (!closed && chp_net_now_s() - t0 < 10) {
                ssize_t w = send(fd, "abcdefgh", 8, MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)w;
                pause_ms(250);
                closed = closed_by_relay(fd);
        }
        double took = chp_net_now_s() - t0;
        fprintf(stderr, "  closed after %.2f s\n", took);
        CHECK(closed && took >= 1.5 && took < 5.0);
        close(fd);
        CHECK_EQ(metric(rl.http, "chapar_connections_closed_total{reason=\"slow_body\"}"), 1);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* ---- memory -------------------------------------------------------------------------------- */

/* In a child, so that a relay that never answers cannot hang the test: a new connection's
 * HELLO, then a 10 MiB upload and its download. Exit 0 when both worked. */
static int upload_in_child(const char *addr, int timeout_s)
{
        pid_t pid = fork();
        if (pid == 0) {
                alarm((unsigned)timeout_s);
                struct rc_conn c;
                if (rc_connect(&c, addr) != 0)
                        _exit(2);
                struct rc_file f;
                struct rc_put_stats st;
                uint8_t *out = NULL;
                uint64_t len = 0;
                if (rc_file_make(&f, 10 * MiB, 1 * MiB, 7, 0) != 0 || rc_put(&c, &f, &st) != 0 ||
                    rc_get(&c, f.file_id, &out, &len) != 0 || len != f.total ||
                    memcmp(out, f.data, len) != 0)
                        _exit(3);
                _exit(0);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid)
                return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Starts a tus upload of size bytes; its path (/files/<id>) into path, or false. */
static bool tus_create(const char *hostport, uint64_t size, char *path, size_t cap)
{
        char req[256], buf[2048];
        snprintf(req, sizeof(req),
                 "POST /files/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n"
                 "Upload-Length: %llu\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                 (unsigned long long)size);
        if (http_call(hostport, req, buf, sizeof(buf)) != 201)
                return false;
        const char *loc = strstr(buf, "/files/");
        if (!loc)
                return false;
        snprintf(path, cap, "%.39s", loc);
        return true;
}

/* Bodies that announce megabytes and then trickle, more of them than memory_limit could hold
 * at their announced sizes (128 native CHUNK frames of 8 MiB, 64 tus PATCH bodies of 8 MiB,
 * against 16 MiB): they hold only what they sent, so a new HELLO is answered and a 10 MiB
 * upload goes through while they go on. The rate floor is off here: the budget alone must
 * hold. */
TEST(trickling_bodies_do_not_starve_uploads)
{
        enum { NATIVE = 128, TUS = 64 };
        raise_own_limit();
        REQUIRE_OK(
            spawn(&rl, "memory_limit = 16M\nmin_body_rate = 0\ntus_chunk_size = 8M\n", 0, "warn"));
        int fds[NATIVE + TUS];
        uint8_t hdr[CHP_FRAME_HEADER + 1];
        for (int i = 0; i < NATIVE; i++) {
                fds[i] = tu_native(rl.r.addr, true);
                chp_frame_header_encode(hdr, CHP_F_CHUNK, 2, 8 * MiB);
                hdr[CHP_FRAME_HEADER] = 'x';
                CHECK(fds[i] >= 0 && tu_send_all(fds[i], hdr, sizeof(hdr)));
        }
        for (int i = 0; i < TUS; i++) {
                char path[64], req[512];
                fds[NATIVE + i] = -1;
                if (!tus_create(rl.http, 8 * MiB, path, sizeof(path))) {
                        CHECK(!"tus POST failed");
                        continue;
                }
                fds[NATIVE + i] = tu_dial(rl.http);
                int n = snprintf(req, sizeof(req),
                                 "PATCH %s HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n"
                                 "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream"
                                 "\r\nContent-Length: %u\r\n\r\nx",
                                 path, 8 * MiB);
                CHECK(fds[NATIVE + i] >= 0 && tu_send_all(fds[NATIVE + i], req, (size_t)n));
        }
        pause_ms(500); /* the relay has read the headers and the first bytes */
        CHECK_EQ(upload_in_child(rl.r.addr, 20), 0);
        /* the tricklers are all still there: nobody was cut to make room */
        CHECK_EQ(still_open(fds, NATIVE + TUS), NATIVE + TUS);
        for (int i = 0; i < NATIVE + TUS; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* Bodies that sent megabytes fast and then stopped hold all of memory_limit (one of them past
 * it, as the owner of the reserve): a new upload has to wait. While it waits, they are held to
 * min_body_rate over 2 s instead of the long window, so they are cut and the upload goes
 * through well before io_timeout or the window would have freed anything. */
TEST(stalled_bodies_are_cut_while_others_wait)
{
        enum { HOLDERS = 4 };
        REQUIRE_OK(spawn(&rl,
                         "memory_limit = 16M\nmin_body_rate = 1K\nbody_rate_window = 10m\n"
                         "io_timeout = 10m\n",
                         0, "warn"));
        static uint8_t block[4 * MiB];
        memset(block, 'h', sizeof(block));
        int fds[HOLDERS];
        for (int i = 0; i < HOLDERS; i++) {
                fds[i] = tu_native(rl.r.addr, true);
                REQUIRE(fds[i] >= 0);
                struct timeval tv = {.tv_sec = 10};
                setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                uint8_t hdr[CHP_FRAME_HEADER];
                chp_frame_header_encode(hdr, CHP_F_CHUNK, 2, 8 * MiB);
                CHECK(tu_send_all(fds[i], hdr, sizeof(hdr)) && tu_send_all(fds[i], block, sizeof(block)));
        }
        /* wait until the relay holds it all */
        double used = 0;
        for (int i = 0; i < 100 && (used = metric(rl.http, "chapar_memory_used_bytes")) < 16 * MiB;
             i++)
                pause_ms(100);
        fprintf(stderr, "  %.0f bytes held\n", used);
        REQUIRE(used >= 16 * MiB);
        double t0 = chp_net_now_s();
        CHECK_EQ(upload_in_child(rl.r.addr, 20), 0);
        fprintf(stderr, "  upload done in %.2f s\n", chp_net_now_s() - t0);
        CHECK(metric(rl.http, "chapar_connections_closed_total{reason=\"slow_body\"}") >= 1);
        CHECK(still_open(fds, HOLDERS) < HOLDERS);
        for (int i = 0; i < HOLDERS; i++)
                close(fds[i]);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

/* ---- noise --------------------------------------------------------------------------------- */

/* Connections opened and never used are closed without a log line each (they are counted). */
TEST(unused_connections_are_counted_not_logged)
{
        enum { N = 20 };
        REQUIRE_OK(spawn(&rl, "io_timeout = 1s\n", 0, "info"));
        int fds[N];
        for (int i = 0; i < N; i++)
                fds[i] = tu_dial(rl.r.addr);
        double t0 = chp_net_now_s();
        int open_n = N;
        while (open_n > 0 && chp_net_now_s() - t0 < 15) {
                pause_ms(200);
                open_n = still_open(fds, N);
        }
        CHECK_EQ(open_n, 0);
        close_all(fds, N);
        CHECK_EQ(count_lines(rl.log, "closing"), 0);
        CHECK_EQ(count_lines(rl.log, "stalled"), 0);
        const char *why[] = {"chapar_connections_closed_total{reason=\"handshake_timeout\"}",
                             "chapar_connections_closed_total{reason=\"stalled\"}", NULL};
        CHECK(metric_sum(rl.http, why) >= N);
        CHECK_EQ(rc_relay_stop(&rl.r, SIGTERM), 0);
        finish(&rl);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        int passed, failed = harness_run(&passed);
        finish(&rl);
        return harness_report(passed, failed);
}
