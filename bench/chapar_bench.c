/* chapar_bench.c — chapar-bench, a load generator for chapard's native and HTTP faces.
 *
 *   chapar-bench [--native HOST:PORT] [--http HOST:PORT] [--pid PID] --scenario NAME
 *                [--files N] [--size BYTES] [--conns C] [--idle N] [--seconds S]
 *                [--chunk BYTES] [--seed N] [--json] [--plaintext]
 *                [--background N] [--flood R] [--trickle-ms MS] [--cut-percent P]
 *                [--interval S] [--rate MBPS] [--rss-slack BYTES] [--fd-slack N]  (soak)
 *
 * One blocking connection per worker thread: the native face through bench/native_client over
 * the encrypted channel (common/channel.h: Noise XX, any relay key; --plaintext asks for the
 * plaintext frame stream of a relay run with --insecure-plaintext), the HTTP face through a minimal
 * keep-alive HTTP/1.1 client of its own (tus POST + one PATCH per upload, GET /f/<id> per
 * download). A request is the upload or the download of one whole file; its latency runs from
 * its first byte sent to its last byte received. Files are generated and hashed before the clock
 * starts, each from its own seed, so nothing deduplicates. With --pid the relay's CPU time
 * (/proc/PID/stat) and memory (/proc/PID/status) are read around every timed phase.
 *
 * Checks: every download's length; downloads up to SMALL_VERIFY bytes byte for byte; after each
 * run the first and the last file again, untimed, in full (native: every chunk's SHA-256 too);
 * after resume every file. Exit codes: 0 ok, 1 usage, 2 relay or network error (the message
 * says which request failed and how), 3 a download differs from its upload, 4 a local failure,
 * 5 the soak saw the relay's memory or file descriptors grow (or the relay exit).
 *
 * The soak runs the mix in rounds (fresh files each round, faces in turn) for --seconds, some
 * uploads cut and resumed, every download's SHA-256 compared with the upload's, while a
 * background thread holds slow and idle connections and floods connect-and-close, and a sampler
 * thread reads the relay's memory and open fds (/proc/PID) every few seconds. It does not own
 * the relay: stopping it and `chapard verify` are the caller's (tests/bench_smoke.sh does both).
 * MB = 10^6 bytes; latencies in ms, nearest-rank percentiles. Single process; main thread runs
 * the phases, worker threads the requests; no global mutable state.
 */
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "proto.h"
#include "native_client.h"

#define SMALL_VERIFY (1u << 20) /* downloads up to this size are compared byte for byte */
#define IO_TIMEOUT_S 60         /* a relay silent this long fails the request */
#define HC_BUF       (64u * 1024)
#define HC_HEAD_MAX  (16u * 1024)
#define HC_MSG_MAX   200 /* bytes of an error response's body kept for the message */
#define SCRATCH      (256u * 1024)
#define GEN_MAX      ((uint64_t)16 << 30) /* bytes of files generated for one face */
#define RESUME_TRIES 20
#define WHY_MAX      512

enum { EXIT_OK, EXIT_USAGE, EXIT_NET, EXIT_VERIFY, EXIT_LOCAL, EXIT_GROWTH };
enum { ERR_NET = -1, ERR_VERIFY = -2 }; /* results of one request (message in why) */

enum face { FACE_NATIVE, FACE_HTTP, FACES };
static const char *const face_names[FACES] = {"native", "http"};

enum scenario { SC_UPLOAD, SC_DOWNLOAD, SC_MIX, SC_FANOUT, SC_RESUME, SC_IDLE, SC_SOAK, SCENARIOS };
static const char *const scenario_names[SCENARIOS] = {"upload", "download", "mix", "fanout",
                                                      "resume", "idle",     "soak"};

/* PH_SOAK is the mix (uploads, each file downloaded by another connection) with cuts. */
enum phase { PH_UPLOAD, PH_DOWNLOAD, PH_MIX, PH_FANOUT, PH_RESUME, PH_SOAK };
static const char *const phase_names[] = {"upload", "download", "mix", "fanout", "resume", "soak"};

struct opts {
        const char *addr[FACES]; /* NULL: that face is not measured */
        long pid;                /* 0: no relay process to watch */
        int scenario;            /* enum scenario; -1 until given */
        unsigned files, conns, idle;
        uint64_t size; /* mix: a cap (0 = none) */
        uint32_t chunk;
        double seconds;
        unsigned resume_delay_ms; /* resume: pause between the cut and the reconnect */
        uint32_t seed;
        bool json;
        bool plaintext; /* the native face without Noise (--insecure-plaintext relays) */
        /* soak */
        unsigned background; /* slow and idle connections held (0: none) */
        unsigned flood;      /* connect-and-close per second (0: none) */
        unsigned trickle_ms; /* between two bytes of a trickling connection */
        unsigned cut_pct;    /* uploads cut mid-transfer and resumed, percent */
        double interval;     /* report interval, s (0: by --seconds) */
        double rate;         /* MB/s of uploads at most (0: unpaced) */
        uint64_t rss_slack;  /* bytes the relay's memory may grow by */
        unsigned fd_slack;   /* open fds the relay may grow by */
};

/* Mix categories: share in percent, size range in bytes. */
struct mix_kind {
        const char *name;
        unsigned percent;
        uint64_t lo, hi;
};
static const struct mix_kind mix_kinds[] = {
    {"photos", 60, 50u << 10, 300u << 10},
    {"voice", 20, 10u << 10, 100u << 10},
    {"videos", 15, 1u << 20, 20u << 20},
    {"files", 5, 20u << 20, 200u << 20},
};
#define MIX_KINDS (sizeof(mix_kinds) / sizeof(mix_kinds[0]))

struct bfile {
        struct rc_file f;                /* data, manifest, native file id */
        uint64_t size;                   /* f.total once generated */
        char http_id[CHP_HASH_HEXBYTES]; /* the relay's file id after a tus upload */
        bool uploaded;                   /* set by its uploader; read after the phase */
        unsigned uploader;               /* mix: the worker that uploaded it */
        uint8_t sha[CHP_HASH_BYTES];     /* soak: SHA-256 of the whole file */
};

struct samples {
        double *v; /* ms */
        size_t n, cap;
};

/* An HTTP/1.1 connection: fd -1 when closed; buf holds bytes read past the last response. */
struct hconn {
        int fd;
        uint8_t *buf; /* HC_BUF, owned */
        size_t off, len;
};

struct hresp {
        int status;
        bool has_length, close, has_offset;
        uint64_t length;    /* Content-Length */
        uint64_t offset;    /* Upload-Offset */
        uint64_t sent;      /* body bytes written by the request */
        char location[256]; /* path part of Location */
        char file_id[CHP_HASH_HEXBYTES];
        char msg[HC_MSG_MAX + 1]; /* an error response's body, for messages */
};

struct bench;

struct worker {
        struct bench *b;
        unsigned idx;
        struct rc_conn rc;
        bool rc_up; /* rc holds an open connection (rc.fd is not valid otherwise) */
        struct hconn hc;
        uint8_t *small;   /* SMALL_VERIFY bytes: small HTTP downloads, kept to compare */
        uint8_t *scratch; /* SCRATCH bytes: large HTTP downloads, read and discarded */
        uint64_t rng;
        /* per phase */
        struct samples up, down;
        uint64_t bytes, sent, cuts, retries, verified;
        double paused_s; /* resume: the current request's pause, not part of its latency */
        struct samples lat_t, lat_ms, lat_bytes; /* soak: every transfer's end, latency, size */
};

struct relay_snap {
        bool ok;
        double cpu_s;
        long rss_kib, hwm_kib;
};

/* One timed phase on one face: a row of the report. */
struct run {
        enum face face;
        enum phase phase;
        uint64_t bytes, requests, file_bytes, sent, cuts, retries;
        double secs, client_cpu_s;
        struct samples up, down; /* taken over from the workers */
        struct relay_snap before, after;
        bool capped;
};

struct idle_result {
        enum face face;
        unsigned conns, alive;
        double open_secs;
        struct relay_snap before, after, end;
};

/* Soak background: the kinds of connection held, in the order slots take them. */
enum bg_kind { BG_HEAD, BG_BODY, BG_IDLE_HTTP, BG_CHUNK, BG_IDLE_NATIVE, BG_KINDS };
static const char *const bg_names[BG_KINDS] = {"http_head_trickle", "http_body_trickle",
                                               "http_idle", "native_chunk_trickle", "native_idle"};

struct bg_stats { /* written by the background thread, read after it is joined */
        uint64_t opened[BG_KINDS], closed[BG_KINDS], failed[BG_KINDS];
        double longest_s[BG_KINDS]; /* the longest a connection of the kind stayed open */
        uint64_t trickled, flood, flood_failed;
};

struct soak_sample {
        double t; /* s since the soak began */
        long rss_kib, anon_kib;
        int fds, seg_fds; /* seg_fds: of them, the store's segment files (as many as it has) */
};

/* Growth of one quantity over the soak: the last third's max against the first third's. */
struct growth {
        double first, last, slack, slope_per_min; /* slope: least squares over every sample */
        bool judged, ok;
};

struct soak {
        double t0, end, secs, sample_s, interval_s;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool stop;       /* guarded by mu: the threads below end */
        bool relay_gone; /* guarded by mu: the sampler found no relay */
        /* the sampler thread's; read after it is joined */
        struct soak_sample *s;
        size_t ns, caps;
        struct bg_stats bg;
        /* the main thread's: every transfer (end time, ms, bytes) and per-face totals */
        struct samples t, ms, bytes;
        struct run total[FACES];
        bool have[FACES];
        unsigned rounds;
        uint64_t verified;
        struct growth mem, fds;
        bool anon;      /* mem is RssAnon (else VmRSS: a kernel without RssAnon) */
        uint64_t paced; /* guarded by mu: bytes of uploads started or let start */
};

struct report {
        struct run runs[8];
        unsigned nruns;
        struct idle_result idle[FACES];
        unsigned nidle;
        unsigned mix_counts[MIX_KINDS];
        struct soak soak;
};

struct bench {
        const struct opts *o;
        struct soak *soak; /* NULL unless the soak runs */
        enum face face;
        const char *addr;
        struct bfile *files;
        unsigned nfiles;
        struct worker *w;
        unsigned nw;
        pthread_mutex_t mu; /* guards everything below */
        pthread_cond_t cv;  /* any change of it */
        double deadline;    /* of the running phase (CLOCK_MONOTONIC): no request starts after it */
        enum phase phase;
        unsigned next;     /* next file to hand out */
        unsigned *pending; /* mix: uploaded files waiting for their download */
        unsigned npending, uploading, ready;
        unsigned rounds; /* fanout: downloads per connection */
        bool go, stop, capped;
        int exit_code;
        char err[1024];
};

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static uint64_t rand_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
        return lo + splitmix(s) % (hi - lo + 1);
}

static void pause_ms(unsigned ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
}

static int samples_add(struct samples *s, double ms)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? 2 * s->cap : 256;
                double *v = realloc(s->v, cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = ms;
        return 0;
}

static int samples_append(struct samples *to, const struct samples *from)
{
        for (size_t i = 0; i < from->n; i++)
                if (samples_add(to, from->v[i]))
                        return -ENOMEM;
        return 0;
}

static void samples_free(struct samples *s)
{
        free(s->v);
        s->v = NULL;
        s->n = s->cap = 0;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least q of all samples at or below it. s sorted. */
static double percentile(const struct samples *s, double q)
{
        double r = q * (double)s->n;
        size_t k = (size_t)r;
        if ((double)k < r)
                k++;
        if (k == 0)
                k = 1;
        return s->v[k - 1];
}

static void set_timeouts(int fd, int secs)
{
        struct timeval tv = {.tv_sec = secs};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A TCP connection to HOST:PORT with TCP_NODELAY, given up after secs (a relay whose accept
 * queue is full); returns the fd or -errno. */
static int tcp_connect(const char *hostport, int secs)
{
        char host[CHP_NET_HOST_MAX], port[8];
        uint16_t pn;
        if (chp_net_split_hostport(hostport, host, sizeof(host), &pn) != 0)
                return -EINVAL;
        snprintf(port, sizeof(port), "%u", pn);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
        if (getaddrinfo(host, port, &hints, &res) != 0)
                return -EINVAL;
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = fd < 0 ? -errno : 0;
        if (!rc)
                set_timeouts(fd, secs);
        if (!rc && connect(fd, res->ai_addr, res->ai_addrlen) != 0)
                rc = -errno;
        freeaddrinfo(res);
        if (rc) {
                if (fd >= 0)
                        close(fd);
                return rc;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return fd;
}

static const char *errno_text(int rc)
{
        if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -ETIMEDOUT)
                return "timed out waiting for the relay";
        if (rc == -ECONNRESET)
                return "the relay closed the connection";
        if (rc == -EPROTO)
                return "the relay's reply broke the protocol";
        if (rc == -EBADMSG)
                return "a malformed reply (is it the right face of chapard?)";
        return chp_strerror(rc);
}

/* The message for a native_client result on c: the relay's ERROR, or what the channel said. */
static void rc_text(const struct rc_conn *c, int rc, char *why, size_t cap)
{
        if (rc == CHP_EREMOTE)
                snprintf(why, cap, "relay error %u %s (%.300s)", (unsigned)c->last_error,
                         chp_wire_strerror(c->last_error), c->last_msg);
        else if (c->last_msg[0])
                snprintf(why, cap, "%.400s", c->last_msg);
        else
                snprintf(why, cap, "%s", errno_text(rc));
}

/* ---- a minimal HTTP/1.1 client ----------------------------------------------------------- */

static void hc_close(struct hconn *h)
{
        if (h->fd >= 0)
                close(h->fd);
        h->fd = -1;
        h->off = h->len = 0;
}

static int hc_connect(struct hconn *h, const char *hostport)
{
        hc_close(h);
        if (!h->buf && !(h->buf = malloc(HC_BUF)))
                return -ENOMEM;
        int fd = tcp_connect(hostport, IO_TIMEOUT_S);
        if (fd < 0)
                return fd;
        h->fd = fd;
        return 0;
}

/* Reads one response head into r; the body (if any) is left to hc_read_body. */
static int hc_read_head(struct hconn *h, struct hresp *r)
{
        uint8_t *end;
        for (;;) {
                end = memmem(h->buf + h->off, h->len - h->off, "\r\n\r\n", 4);
                if (end)
                        break;
                if (h->len - h->off >= HC_HEAD_MAX)
                        return -EMSGSIZE;
                if (h->off) {
                        memmove(h->buf, h->buf + h->off, h->len - h->off);
                        h->len -= h->off;
                        h->off = 0;
                }
                ssize_t n = read(h->fd, h->buf + h->len, HC_BUF - h->len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ECONNRESET;
                h->len += (size_t)n;
        }
        char *p = (char *)h->buf + h->off, *stop = (char *)end;
        h->off = (size_t)(end + 4 - h->buf);
        char *eol = memchr(p, '\r', (size_t)(stop - p) + 1);
        if (!eol || eol - p < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
                return -EBADMSG;
        r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        if (r->status < 100 || r->status > 599)
                return -EBADMSG;
        bool http10 = p[7] == '0';
        r->close = http10;
        while (eol < stop) {
                p = eol + 2;
                eol = memchr(p, '\r', (size_t)(stop - p) + 1);
                if (!eol)
                        return -EBADMSG;
                char *colon = memchr(p, ':', (size_t)(eol - p));
                if (!colon)
                        return -EBADMSG;
                size_t nlen = (size_t)(colon - p);
                char *v = colon + 1;
                while (v < eol && (*v == ' ' || *v == '\t'))
                        v++;
                size_t vlen = (size_t)(eol - v);
                while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                        vlen--;
                char val[300];
                if (vlen >= sizeof(val))
                        vlen = sizeof(val) - 1;
                memcpy(val, v, vlen);
                val[vlen] = '\0';
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(p, name, nlen) == 0)
                if (IS("Content-Length") || IS("Upload-Offset")) {
                        char *e;
                        errno = 0;
                        unsigned long long x = strtoull(val, &e, 10);
                        if (errno || e == val || *e)
                                return -EBADMSG;
                        if (IS("Content-Length")) {
                                r->length = x;
                                r->has_length = true;
                        } else {
                                r->offset = x;
                                r->has_offset = true;
                        }
                } else if (IS("Connection")) {
                        r->close = strcasecmp(val, "close") == 0 ||
                                   (http10 && strcasecmp(val, "keep-alive") != 0);
                } else if (IS("Transfer-Encoding")) {
                        return -EPROTONOSUPPORT; /* the relay always sends Content-Length */
                } else if (IS("Location")) {
                        const char *path = val;
                        if (strncmp(val, "http://", 7) == 0 || strncmp(val, "https://", 8) == 0) {
                                path = strchr(strstr(val, "//") + 2, '/');
                                if (!path)
                                        return -EBADMSG;
                        }
                        snprintf(r->location, sizeof(r->location), "%.255s", path);
                } else if (IS("Chapar-File-Id")) {
                        if (vlen != CHP_HASH_HEXBYTES - 1)
                                return -EBADMSG;
                        memcpy(r->file_id, val, vlen + 1);
                }
#undef IS
        }
        return 0;
}

/* Reads the body: into out (out_cap bytes at most) or, with out NULL, discarded into scratch
 * (SCRATCH bytes, or NULL for small bodies). An error response's body goes to r->msg. */
static int hc_read_body(struct hconn *h, struct hresp *r, uint8_t *out, uint64_t out_cap,
                        uint8_t *scratch)
{
        uint64_t left = r->length;
        if (out && left > out_cap)
                return -EMSGSIZE;
        bool keep_msg = !out && r->status >= 300;
        uint8_t tmp[4096];
        size_t scratch_len = scratch ? SCRATCH : sizeof(tmp);
        if (!scratch)
                scratch = tmp;
        uint64_t at = 0;
        while (left) {
                const uint8_t *src;
                size_t n;
                if (h->off < h->len) {
                        n = h->len - h->off < left ? h->len - h->off : (size_t)left;
                        src = h->buf + h->off;
                        if (out)
                                memcpy(out + at, src, n);
                        h->off += n;
                } else {
                        uint8_t *dst = out ? out + at : scratch;
                        size_t want = out || left < scratch_len ? (size_t)left : scratch_len;
                        ssize_t got = read(h->fd, dst, want);
                        if (got < 0 && errno == EINTR)
                                continue;
                        if (got < 0)
                                return -errno;
                        if (got == 0)
                                return -ECONNRESET;
                        n = (size_t)got;
                        src = dst;
                }
                if (keep_msg && at < HC_MSG_MAX) {
                        size_t m = HC_MSG_MAX - at < n ? HC_MSG_MAX - (size_t)at : n;
                        memcpy(r->msg + at, src, m);
                        r->msg[at + m] = '\0';
                }
                at += n;
                left -= n;
        }
        if (h->off == h->len)
                h->off = h->len = 0;
        return 0;
}

/* One request: head, then body_len bytes of body, of which only send_len are written when
 * send_len < body_len (a cut: the connection is closed and no response read). Otherwise reads
 * the response; its body goes to out (or is discarded, see hc_read_body). A write that fails
 * because the relay answered early (and closed) still reads that answer. The connection is
 * closed after a response with Connection: close, and after any failure. */
static int hc_request(struct hconn *h, const char *method, const char *path, const char *extra,
                      const uint8_t *body, uint64_t body_len, uint64_t send_len, uint8_t *out,
                      uint64_t out_cap, uint8_t *scratch, struct hresp *r)
{
        memset(r, 0, sizeof(*r));
        char head[1024];
        bool has_body = body_len || strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0;
        int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: bench\r\n%s", method, path,
                         extra);
        if (n > 0 && (size_t)n < sizeof(head) && has_body)
                n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %llu\r\n",
                              (unsigned long long)body_len);
        if (n > 0 && (size_t)n < sizeof(head))
                n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
        if (n < 0 || (size_t)n >= sizeof(head))
                return -EMSGSIZE;
        struct iovec iov[2] = {{head, (size_t)n}, {(void *)body, (size_t)send_len}};
        uint64_t wrote = 0;
        int rc = rc_write_iov(h->fd, iov, send_len ? 2 : 1, &wrote);
        r->sent = wrote > (uint64_t)n ? wrote - (uint64_t)n : 0;
        if (send_len < body_len) {
                hc_close(h);
                return rc;
        }
        int rc_head = hc_read_head(h, r);
        if (rc_head) {
                hc_close(h);
                return rc ? rc : rc_head;
        }
        /* the relay stopped reading, or refused a body it may not have read: either way the
         * connection cannot carry another request (chapard may close it without saying so) */
        if (rc || (has_body && r->status >= 300))
                r->close = true;
        bool no_body =
            strcmp(method, "HEAD") == 0 || r->status == 204 || r->status == 304 || r->status < 200;
        if (!no_body && !r->has_length) {
                hc_close(h);
                return -EBADMSG;
        }
        if (!no_body && (rc = hc_read_body(h, r, out, out_cap, scratch))) {
                hc_close(h);
                return rc;
        }
        if (r->close)
                hc_close(h);
        return 0;
}

static void hc_text(int rc, const struct hresp *r, char *why, size_t cap)
{
        if (rc)
                snprintf(why, cap, "%s", errno_text(rc));
        else
                snprintf(why, cap, "HTTP %d%s%.200s", r->status, r->msg[0] ? ": " : "", r->msg);
}

/* ---- the relay process ------------------------------------------------------------------- */

static void relay_snap(long pid, struct relay_snap *s)
{
        memset(s, 0, sizeof(*s));
        if (!pid)
                return;
        char path[64], line[1024];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return;
        size_t n = fread(line, 1, sizeof(line) - 1, f);
        fclose(f);
        line[n] = '\0';
        char *p = strrchr(line, ')'); /* comm may hold spaces and parentheses */
        if (!p)
                return;
        /* after ")": state (field 3), then fields 4..13, utime (14), stime (15) */
        p += 2;
        unsigned long long utime = 0, stime = 0;
        for (int field = 3; field <= 15 && *p; field++) {
                char *e;
                if (field == 14)
                        utime = strtoull(p, &e, 10);
                else if (field == 15)
                        stime = strtoull(p, &e, 10);
                e = strchr(p, ' ');
                if (!e)
                        break;
                p = e + 1;
        }
        long tck = sysconf(_SC_CLK_TCK);
        s->cpu_s = (double)(utime + stime) / (double)(tck > 0 ? tck : 100);
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
        if (!(f = fopen(path, "r")))
                return;
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "VmRSS:", 6) == 0)
                        s->rss_kib = strtol(line + 6, NULL, 10);
                else if (strncmp(line, "VmHWM:", 6) == 0)
                        s->hwm_kib = strtol(line + 6, NULL, 10);
        }
        fclose(f);
        s->ok = true;
}

static double client_cpu_s(void)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- failure and the task queue ---------------------------------------------------------- */

/* Records the first failure (its exit code and message) and stops every worker. */
__attribute__((format(printf, 3, 4))) static void fail(struct bench *b, int code, const char *fmt,
                                                       ...)
{
        pthread_mutex_lock(&b->mu);
        if (!b->exit_code) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(b->err, sizeof(b->err), fmt, ap);
                va_end(ap);
                b->exit_code = code;
        }
        b->stop = true;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
}

enum task_kind { T_NONE, T_UP, T_DOWN };
struct task {
        enum task_kind kind;
        unsigned file;
};

/* Caller holds b->mu. */
static bool out_of_time(struct bench *b)
{
        if (chp_net_now_s() < b->deadline)
                return false;
        b->capped = true;
        return true;
}

/* The next request for worker self, or T_NONE when the phase is over (or stopped). In mix, a
 * file's download goes to a worker other than its uploader (when there is one), and downloads
 * are handed out before new uploads, as a recipient fetches what arrived. */
static struct task next_task(struct bench *b, unsigned self)
{
        struct task t = {T_NONE, 0};
        pthread_mutex_lock(&b->mu);
        for (;;) {
                if (b->stop || out_of_time(b))
                        break;
                if (b->phase == PH_UPLOAD || b->phase == PH_RESUME) {
                        if (b->next < b->nfiles)
                                t = (struct task){T_UP, b->next++};
                        break;
                }
                if (b->phase == PH_DOWNLOAD) {
                        while (b->next < b->nfiles && !b->files[b->next].uploaded)
                                b->next++;
                        if (b->next < b->nfiles)
                                t = (struct task){T_DOWN, b->next++};
                        break;
                }
                /* PH_MIX */
                unsigned i;
                for (i = 0; i < b->npending; i++)
                        if (b->nw == 1 || b->files[b->pending[i]].uploader != self)
                                break;
                if (i < b->npending) {
                        t = (struct task){T_DOWN, b->pending[i]};
                        b->pending[i] = b->pending[--b->npending];
                        break;
                }
                if (b->next < b->nfiles) {
                        b->uploading++;
                        t = (struct task){T_UP, b->next++};
                        break;
                }
                if (!b->npending && !b->uploading)
                        break;
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 100 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        pthread_mutex_unlock(&b->mu);
        return t;
}

/* Mix: an upload ended (ok or not); a successful one queues the file's download. */
static void mix_uploaded(struct bench *b, unsigned self, unsigned i, bool ok)
{
        pthread_mutex_lock(&b->mu);
        b->uploading--;
        if (ok) {
                b->files[i].uploader = self;
                b->files[i].uploaded = true;
                b->pending[b->npending++] = i;
        }
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
}

/* ---- connections ------------------------------------------------------------------------- */

static void drop_conn(struct worker *w)
{
        if (w->rc_up)
                rc_close(&w->rc);
        w->rc_up = false;
        hc_close(&w->hc);
}

static int ensure_conn(struct worker *w)
{
        struct bench *b = w->b;
        int rc;
        if (b->face == FACE_NATIVE) {
                if (w->rc_up)
                        return 0;
                if ((rc = rc_dial(&w->rc, b->addr, b->o->plaintext, IO_TIMEOUT_S * 1000))) {
                        char why[WHY_MAX];
                        rc_text(&w->rc, rc, why, sizeof(why));
                        rc_close(&w->rc);
                        /* a reset mid-soak is the relay cutting a connection it had answered
                         * before, not a wrong face; a message that asks already needs no hint */
                        bool odd =
                            (rc == -EBADMSG || rc == -EPROTO || (rc == -ECONNRESET && !b->soak)) &&
                            !strchr(why, '?');
                        fail(b, EXIT_NET, "connection %u to the native face at %s: %s%s", w->idx,
                             b->addr, why,
                             !odd              ? ""
                             : b->o->plaintext ? " (is it chapard's native face, started with "
                                                 "--insecure-plaintext?)"
                                               : " (is it chapard's native face?)");
                        return ERR_NET;
                }
                w->rc_up = true;
                return 0;
        }
        if (w->hc.fd >= 0)
                return 0;
        if ((rc = hc_connect(&w->hc, b->addr))) {
                fail(b, EXIT_NET, "connection %u to the HTTP face at %s: %s", w->idx, b->addr,
                     errno_text(rc));
                return ERR_NET;
        }
        return 0;
}

/* ---- requests: each returns 0, ERR_NET or ERR_VERIFY with the reason in why ------------- */

static int native_put(struct worker *w, struct bfile *bf, char *why)
{
        struct rc_put_stats st;
        int rc = rc_put(&w->rc, &bf->f, &st);
        if (rc) {
                rc_text(&w->rc, rc, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        if (st.was_complete) {
                snprintf(why, WHY_MAX, "the relay already held the file (a reused --seed?)");
                return ERR_NET;
        }
        return 0;
}

/* tus: POST /files/ with Upload-Length, then one PATCH with the whole file. */
static int http_put(struct worker *w, struct bfile *bf, char *why)
{
        char extra[256];
        struct hresp r;
        snprintf(extra, sizeof(extra), "Tus-Resumable: 1.0.0\r\nUpload-Length: %llu\r\n",
                 (unsigned long long)bf->size);
        int rc = hc_request(&w->hc, "POST", "/files/", extra, NULL, 0, 0, NULL, 0, w->scratch, &r);
        if (rc || r.status != 201 || !r.location[0]) {
                hc_text(rc, &r, why, WHY_MAX);
                if (!rc && r.status == 201)
                        snprintf(why, WHY_MAX, "POST /files/ answered 201 without Location");
                drop_conn(w);
                return ERR_NET;
        }
        char path[sizeof(r.location)];
        memcpy(path, r.location, sizeof(path));
        if (ensure_conn(w)) /* after Connection: close */
                return ERR_NET;
        snprintf(extra, sizeof(extra),
                 "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                 "Content-Type: application/offset+octet-stream\r\n");
        rc = hc_request(&w->hc, "PATCH", path, extra, bf->f.data, bf->size, bf->size, NULL, 0,
                        w->scratch, &r);
        if (rc || r.status != 204) {
                hc_text(rc, &r, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        if (!r.has_offset || r.offset != bf->size || !r.file_id[0]) {
                snprintf(why, WHY_MAX,
                         "PATCH %s ended without Upload-Offset %llu and Chapar-File-Id", path,
                         (unsigned long long)bf->size);
                return ERR_NET;
        }
        memcpy(bf->http_id, r.file_id, sizeof(bf->http_id));
        return 0;
}

static int native_get(struct worker *w, const struct bfile *bf, double *ms, char *why)
{
        bool keep = bf->size <= SMALL_VERIFY;
        uint8_t *out = NULL;
        uint64_t len = 0;
        double t0 = chp_net_now_s();
        int rc = rc_fetch(&w->rc, bf->f.file_id, keep ? &out : NULL, &len, false);
        *ms = (chp_net_now_s() - t0) * 1e3;
        if (rc) {
                rc_text(&w->rc, rc, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        int res = 0;
        if (len != bf->size) {
                snprintf(why, WHY_MAX, "got %llu bytes instead of %llu", (unsigned long long)len,
                         (unsigned long long)bf->size);
                res = ERR_VERIFY;
        } else if (keep && memcmp(out, bf->f.data, len) != 0) {
                snprintf(why, WHY_MAX, "the bytes differ from those uploaded");
                res = ERR_VERIFY;
        }
        free(out);
        return res;
}

static int http_get(struct worker *w, const struct bfile *bf, uint8_t *out, uint64_t out_cap,
                    double *ms, char *why)
{
        char path[80];
        snprintf(path, sizeof(path), "/f/%s", bf->http_id);
        struct hresp r;
        double t0 = chp_net_now_s();
        int rc = hc_request(&w->hc, "GET", path, "", NULL, 0, 0, out, out_cap, w->scratch, &r);
        *ms = (chp_net_now_s() - t0) * 1e3;
        if (rc || r.status != 200) {
                hc_text(rc, &r, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        if (r.length != bf->size) {
                snprintf(why, WHY_MAX, "got %llu bytes instead of %llu",
                         (unsigned long long)r.length, (unsigned long long)bf->size);
                return ERR_VERIFY;
        }
        if (out && memcmp(out, bf->f.data, bf->size) != 0) {
                snprintf(why, WHY_MAX, "the bytes differ from those uploaded");
                return ERR_VERIFY;
        }
        return 0;
}

/* Untimed: the whole file again, compared byte for byte (native: every chunk hashed too). */
static int verify_full(struct worker *w, const struct bfile *bf, char *why)
{
        if (w->b->face == FACE_NATIVE) {
                uint8_t *out = NULL;
                uint64_t len = 0;
                int rc = rc_get(&w->rc, bf->f.file_id, &out, &len);
                if (rc) {
                        rc_text(&w->rc, rc, why, WHY_MAX);
                        drop_conn(w);
                        return rc == -EPROTO ? ERR_VERIFY : ERR_NET;
                }
                int res = 0;
                if (len != bf->size || memcmp(out, bf->f.data, len) != 0) {
                        snprintf(why, WHY_MAX, "the %llu bytes fetched differ from those uploaded",
                                 (unsigned long long)len);
                        res = ERR_VERIFY;
                }
                free(out);
                return res;
        }
        uint8_t *buf = malloc(bf->size);
        if (!buf) {
                snprintf(why, WHY_MAX, "out of memory");
                return ERR_NET;
        }
        double ms;
        int res = http_get(w, bf, buf, bf->size, &ms, why);
        free(buf);
        return res;
}

/* The pause after a cut (--resume-delay), left out of the request's latency. */
static void resume_pause(struct worker *w)
{
        unsigned ms = w->b->o->resume_delay_ms;
        if (ms) {
                pause_ms(ms);
                w->paused_s += ms / 1e3;
        }
}

/* Sends the file's missing chunks (pipelined within the relay's window) up to byte cut of the
 * file, writing the CHUNK that holds the cut only in part, and returns without reading the
 * replies still due: the caller cuts the connection mid-CHUNK. *sent counts chunk bytes. */
static int native_send_until_cut(struct rc_conn *c, const struct rc_file *f,
                                 const uint8_t *upload_id, const uint8_t *missing, uint64_t cut,
                                 uint64_t *sent)
{
        uint32_t *lens = calloc(f->count + 1, sizeof(*lens));
        if (!lens)
                return -ENOMEM;
        uint32_t base = chp_channel_reserve_ids(c->ch, f->count + 1), inflight = 0;
        uint64_t window = 0;
        int rc = 0;
        for (uint32_t i = 0; i < f->count && !rc; i++) {
                if (!chp_bit(missing, i))
                        continue;
                uint64_t off = (uint64_t)i * f->chunk_size;
                uint32_t len =
                    (uint32_t)(f->total - off < f->chunk_size ? f->total - off : f->chunk_size);
                while (
                    !rc && inflight > 0 &&
                    (inflight >= c->hello.max_inflight || window + len > c->hello.window_bytes)) {
                        struct chp_frame_header h;
                        uint8_t *reply;
                        struct chp_msg_chunk_ok ok;
                        if ((rc = rc_recv(c, &h, &reply)))
                                break;
                        if (h.type == CHP_F_ERROR)
                                rc = CHP_EREMOTE;
                        else if (h.type != (CHP_F_CHUNK | CHP_F_REPLY) ||
                                 chp_msg_chunk_ok_decode(reply, h.len, &ok) != 0 ||
                                 ok.index >= f->count || h.id != base + ok.index)
                                rc = -EPROTO;
                        else {
                                window -= lens[ok.index];
                                inflight--;
                        }
                }
                if (rc)
                        break;
                uint8_t prefix[CHP_CHUNK_PREFIX];
                chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), upload_id, i);
                bool last = off + len > cut;
                uint32_t part = last ? (uint32_t)(cut - off) : len;
                if (last) { /* the header claims the whole chunk; part of it goes out */
                        uint8_t head[CHP_FRAME_HEADER + CHP_CHUNK_PREFIX];
                        chp_frame_header_encode(head, CHP_F_CHUNK, base + i,
                                                CHP_CHUNK_PREFIX + len);
                        memcpy(head + CHP_FRAME_HEADER, prefix, sizeof(prefix));
                        rc = chp_channel_write(c->ch, head, sizeof(head));
                        if (!rc && part)
                                rc = chp_channel_write(c->ch, f->data + off, part);
                } else {
                        rc = rc_send(c, CHP_F_CHUNK, base + i, prefix, sizeof(prefix),
                                     f->data + off, len);
                }
                if (rc)
                        break;
                *sent += part;
                if (last)
                        break;
                lens[i] = len;
                window += len;
                inflight++;
        }
        free(lens);
        return rc;
}

/* An upload cut once mid-CHUNK at a random byte, then resumed on a new connection: the same
 * OPEN answers the chunks still missing. */
static int native_resume(struct worker *w, struct bfile *bf, char *why)
{
        uint8_t uid[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
        uint8_t *missing = NULL;
        bool complete;
        uint64_t sent = 0;
        int rc = rc_open(&w->rc, &bf->f, uid, &missing, &complete);
        if (!rc && complete) {
                free(missing);
                snprintf(why, WHY_MAX, "the relay already held the file (a reused --seed?)");
                return ERR_NET;
        }
        uint64_t cut = rand_range(&w->rng, 1, bf->size - 1);
        if (!rc)
                rc = native_send_until_cut(&w->rc, &bf->f, uid, missing, cut, &sent);
        free(missing);
        missing = NULL;
        if (rc) {
                rc_text(&w->rc, rc, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        drop_conn(w); /* the cut */
        w->cuts++;
        resume_pause(w);
        if (ensure_conn(w))
                return ERR_NET;
        struct rc_put_stats st = {0};
        rc = rc_open(&w->rc, &bf->f, uid, &missing, &complete);
        if (!rc && !complete)
                rc = rc_send_chunks(&w->rc, &bf->f, uid, missing, UINT32_MAX, &st);
        if (!rc && !complete)
                rc = rc_commit(&w->rc, uid, fid);
        free(missing);
        if (rc) {
                rc_text(&w->rc, rc, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        if (!complete && memcmp(fid, bf->f.file_id, CHP_HASH_BYTES) != 0) {
                snprintf(why, WHY_MAX, "COMMIT_OK named another file id");
                return ERR_VERIFY;
        }
        sent += st.bytes_sent;
        w->sent += sent;
        return 0;
}

/* tus: POST, a PATCH cut at a random byte, then on new connections HEAD + PATCH from the
 * offset the relay reports (again after a 409 or 423, while the cut request finishes). */
static int http_resume(struct worker *w, struct bfile *bf, char *why)
{
        char extra[256], path[256];
        struct hresp r;
        snprintf(extra, sizeof(extra), "Tus-Resumable: 1.0.0\r\nUpload-Length: %llu\r\n",
                 (unsigned long long)bf->size);
        int rc = hc_request(&w->hc, "POST", "/files/", extra, NULL, 0, 0, NULL, 0, w->scratch, &r);
        if (rc || r.status != 201 || !r.location[0]) {
                hc_text(rc, &r, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        memcpy(path, r.location, sizeof(path));
        if (ensure_conn(w))
                return ERR_NET;
        uint64_t cut = rand_range(&w->rng, 1, bf->size - 1), sent = 0;
        snprintf(extra, sizeof(extra),
                 "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                 "Content-Type: application/offset+octet-stream\r\n");
        rc = hc_request(&w->hc, "PATCH", path, extra, bf->f.data, bf->size, cut, NULL, 0,
                        w->scratch, &r);
        sent += r.sent;
        if (rc) {
                hc_text(rc, &r, why, WHY_MAX);
                drop_conn(w);
                return ERR_NET;
        }
        w->cuts++;
        resume_pause(w);
        for (int attempt = 0;; attempt++) {
                if (attempt == RESUME_TRIES) {
                        snprintf(why, WHY_MAX, "no PATCH of %s succeeded in %d attempts (%.200s)",
                                 path, RESUME_TRIES, r.msg);
                        return ERR_NET;
                }
                if (attempt)
                        pause_ms(20);
                if (ensure_conn(w))
                        return ERR_NET;
                rc = hc_request(&w->hc, "HEAD", path, "Tus-Resumable: 1.0.0\r\n", NULL, 0, 0, NULL,
                                0, w->scratch, &r);
                if (!rc && r.status == 423) { /* the cut request still holds the upload */
                        w->retries++;
                        continue;
                }
                if (rc || r.status != 200 || !r.has_offset || r.offset > bf->size) {
                        hc_text(rc, &r, why, WHY_MAX);
                        drop_conn(w);
                        return ERR_NET;
                }
                uint64_t off = r.offset;
                if (ensure_conn(w))
                        return ERR_NET;
                snprintf(extra, sizeof(extra),
                         "Tus-Resumable: 1.0.0\r\nUpload-Offset: %llu\r\n"
                         "Content-Type: application/offset+octet-stream\r\n",
                         (unsigned long long)off);
                rc = hc_request(&w->hc, "PATCH", path, extra, bf->f.data + off, bf->size - off,
                                bf->size - off, NULL, 0, w->scratch, &r);
                sent += r.sent;
                if (!rc && (r.status == 409 || r.status == 423)) {
                        /* 409: the cut request's bytes landed meanwhile; 423: the cut request
                         * still holds the upload (its last chunks are being stored) */
                        w->retries++;
                        drop_conn(w); /* the relay closes after an error with a body */
                        continue;
                }
                if (rc || r.status != 204) {
                        hc_text(rc, &r, why, WHY_MAX);
                        drop_conn(w);
                        return ERR_NET;
                }
                break;
        }
        if (!r.has_offset || r.offset != bf->size || !r.file_id[0]) {
                snprintf(why, WHY_MAX,
                         "PATCH %s ended without Upload-Offset %llu and Chapar-File-Id", path,
                         (unsigned long long)bf->size);
                return ERR_NET;
        }
        memcpy(bf->http_id, r.file_id, sizeof(bf->http_id));
        w->sent += sent;
        return 0;
}

static bool is_mix(enum phase ph)
{
        return ph == PH_MIX || ph == PH_SOAK;
}

/* Soak: a transfer that ended now, for the per-interval curve. */
static int soak_record(struct worker *w, double ms, uint64_t bytes)
{
        const struct soak *s = w->b->soak;
        if (!s)
                return 0;
        if (samples_add(&w->lat_t, chp_net_now_s() - s->t0) || samples_add(&w->lat_ms, ms) ||
            samples_add(&w->lat_bytes, (double)bytes))
                return -ENOMEM;
        return 0;
}

/* Soak: the whole file, timed, then its SHA-256 compared with the one of the bytes uploaded. */
static int soak_get(struct worker *w, const struct bfile *bf, double *ms, char *why)
{
        uint8_t *buf = NULL, sum[CHP_HASH_BYTES];
        uint64_t len = 0;
        int res = 0;
        if (w->b->face == FACE_NATIVE) {
                double t0 = chp_net_now_s();
                int rc = rc_fetch(&w->rc, bf->f.file_id, &buf, &len, false);
                *ms = (chp_net_now_s() - t0) * 1e3;
                if (rc) {
                        rc_text(&w->rc, rc, why, WHY_MAX);
                        drop_conn(w);
                        res = ERR_NET;
                        goto out;
                }
        } else {
                if (!(buf = malloc(bf->size ? bf->size : 1))) {
                        snprintf(why, WHY_MAX, "out of memory");
                        res = ERR_NET;
                        goto out;
                }
                if ((res = http_get(w, bf, buf, bf->size, ms, why)))
                        goto out;
                len = bf->size;
        }
        if (chp_sha256(buf, len, sum) != 0) {
                snprintf(why, WHY_MAX, "cannot hash the download");
                res = ERR_NET;
        } else if (len != bf->size || memcmp(sum, bf->sha, sizeof(sum)) != 0) {
                snprintf(why, WHY_MAX,
                         "the SHA-256 of the %llu bytes downloaded differs from the upload's",
                         (unsigned long long)len);
                res = ERR_VERIFY;
        } else {
                w->verified++;
        }
out:
        free(buf);
        return res;
}

/* Soak with --rate: waits until the uploads before this one fit the rate since the start (the
 * wait is not part of the upload's latency), at most until the soak ends. */
static void soak_pace(struct worker *w, uint64_t size)
{
        struct soak *s = w->b->soak;
        double rate = w->b->o->rate * 1e6;
        if (!s || rate <= 0)
                return;
        pthread_mutex_lock(&s->mu);
        double at = s->t0 + (double)s->paced / rate;
        s->paced += size;
        pthread_mutex_unlock(&s->mu);
        if (at > s->end)
                at = s->end;
        double wait = at - chp_net_now_s();
        if (wait > 0)
                pause_ms((unsigned)(wait * 1e3));
}

static int op_upload(struct worker *w, unsigned i)
{
        struct bench *b = w->b;
        struct bfile *bf = &b->files[i];
        char why[WHY_MAX] = "";
        int res = ensure_conn(w);
        if (res)
                return res;
        soak_pace(w, bf->size);
        w->paused_s = 0;
        bool cut = b->phase == PH_RESUME || (b->phase == PH_SOAK && bf->size >= 2 &&
                                             rand_range(&w->rng, 0, 99) < b->o->cut_pct);
        double t0 = chp_net_now_s();
        if (cut)
                res = b->face == FACE_NATIVE ? native_resume(w, bf, why) : http_resume(w, bf, why);
        else
                res = b->face == FACE_NATIVE ? native_put(w, bf, why) : http_put(w, bf, why);
        double ms = (chp_net_now_s() - t0 - w->paused_s) * 1e3;
        if (res) {
                fail(b, res == ERR_VERIFY ? EXIT_VERIFY : EXIT_NET,
                     "%s of file %u (%llu bytes) over %s connection %u failed: %s",
                     cut ? "resumed upload" : "upload", i, (unsigned long long)bf->size,
                     face_names[b->face], w->idx, why);
                return res;
        }
        if (samples_add(&w->up, ms) || soak_record(w, ms, bf->size)) {
                fail(b, EXIT_LOCAL, "out of memory");
                return ERR_NET;
        }
        w->bytes += bf->size;
        if (!is_mix(b->phase))
                bf->uploaded = true;
        return 0;
}

static int op_download(struct worker *w, unsigned i)
{
        struct bench *b = w->b;
        const struct bfile *bf = &b->files[i];
        char why[WHY_MAX] = "";
        double ms = 0;
        int res = ensure_conn(w);
        if (res)
                return res;
        if (b->phase == PH_SOAK)
                res = soak_get(w, bf, &ms, why);
        else if (b->face == FACE_NATIVE)
                res = native_get(w, bf, &ms, why);
        else if (bf->size <= SMALL_VERIFY)
                res = http_get(w, bf, w->small, SMALL_VERIFY, &ms, why);
        else
                res = http_get(w, bf, NULL, 0, &ms, why);
        if (res) {
                fail(b, res == ERR_VERIFY ? EXIT_VERIFY : EXIT_NET,
                     "download of file %u (%llu bytes) over %s connection %u failed: %s", i,
                     (unsigned long long)bf->size, face_names[b->face], w->idx, why);
                return res;
        }
        if (samples_add(&w->down, ms) || soak_record(w, ms, bf->size)) {
                fail(b, EXIT_LOCAL, "out of memory");
                return ERR_NET;
        }
        w->bytes += bf->size;
        return 0;
}

/* ---- phases ------------------------------------------------------------------------------ */

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct bench *b = w->b;
        bool ok = ensure_conn(w) == 0; /* connecting is not timed */
        pthread_mutex_lock(&b->mu);
        b->ready++;
        pthread_cond_broadcast(&b->cv);
        while (!b->go)
                pthread_cond_wait(&b->cv, &b->mu);
        pthread_mutex_unlock(&b->mu);
        if (!ok)
                return NULL;
        if (b->phase == PH_FANOUT) {
                for (unsigned r = 0; r < b->rounds; r++) {
                        pthread_mutex_lock(&b->mu);
                        bool done = b->stop || out_of_time(b);
                        pthread_mutex_unlock(&b->mu);
                        if (done || op_download(w, 0))
                                break;
                }
                return NULL;
        }
        for (;;) {
                struct task t = next_task(b, w->idx);
                if (t.kind == T_NONE)
                        break;
                if (t.kind == T_DOWN) {
                        if (op_download(w, t.file))
                                break;
                } else {
                        int res = op_upload(w, t.file);
                        if (is_mix(b->phase))
                                mix_uploaded(b, w->idx, t.file, res == 0);
                        if (res)
                                break;
                }
        }
        return NULL;
}

/* Runs one phase on every worker, each on its own connection; when run is not NULL it is
 * filled as a row of the report (the latency samples are taken over). Returns 0 or the exit
 * code of the first failure (its message in b->err). */
static int run_phase(struct bench *b, enum phase ph, struct run *run)
{
        pthread_t *th = calloc(b->nw, sizeof(*th));
        if (!th) {
                fail(b, EXIT_LOCAL, "out of memory");
                return b->exit_code;
        }
        b->phase = ph;
        b->next = b->npending = b->uploading = b->ready = 0;
        b->go = false;
        for (unsigned i = 0; i < b->nw; i++) {
                struct worker *w = &b->w[i];
                w->up.n = w->down.n = 0;
                w->lat_t.n = w->lat_ms.n = w->lat_bytes.n = 0;
                w->bytes = w->sent = w->cuts = w->retries = w->verified = 0;
        }
        unsigned started = 0;
        for (; started < b->nw; started++) {
                int rc = pthread_create(&th[started], NULL, worker_main, &b->w[started]);
                if (rc) {
                        fail(b, EXIT_LOCAL, "cannot start worker thread %u: %s", started,
                             strerror(rc));
                        break;
                }
        }
        pthread_mutex_lock(&b->mu);
        while (b->ready < started)
                pthread_cond_wait(&b->cv, &b->mu);
        pthread_mutex_unlock(&b->mu);
        struct relay_snap before, after;
        relay_snap(b->o->pid, &before);
        double c0 = client_cpu_s(), t0 = chp_net_now_s();
        pthread_mutex_lock(&b->mu);
        b->deadline = b->soak ? b->soak->end : t0 + b->o->seconds;
        b->go = true;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        double t1 = chp_net_now_s(), c1 = client_cpu_s();
        relay_snap(b->o->pid, &after);
        free(th);
        if (b->exit_code || !run)
                return b->exit_code;
        memset(run, 0, sizeof(*run));
        run->face = b->face;
        run->phase = ph;
        run->secs = t1 - t0;
        run->client_cpu_s = c1 - c0;
        run->before = before;
        run->after = after;
        run->capped = b->capped;
        for (unsigned i = 0; i < b->nw; i++) {
                struct worker *w = &b->w[i];
                run->bytes += w->bytes;
                run->requests += w->up.n + w->down.n;
                run->sent += w->sent;
                run->cuts += w->cuts;
                run->retries += w->retries;
                if (samples_append(&run->up, &w->up) || samples_append(&run->down, &w->down)) {
                        fail(b, EXIT_LOCAL, "out of memory");
                        return b->exit_code;
                }
        }
        if (ph == PH_RESUME)
                run->file_bytes = run->bytes;
        if (run->up.n)
                qsort(run->up.v, run->up.n, sizeof(double), cmp_double);
        if (run->down.n)
                qsort(run->down.v, run->down.n, sizeof(double), cmp_double);
        return 0;
}

/* Untimed checks after a run: the first and last uploaded files (every one with all), in full. */
static int verify_files(struct bench *b, bool all)
{
        unsigned first = b->nfiles, last = 0, checked = 0;
        for (unsigned i = 0; i < b->nfiles; i++) {
                if (!b->files[i].uploaded)
                        continue;
                if (first == b->nfiles)
                        first = i;
                last = i;
        }
        struct worker *w = &b->w[0];
        for (unsigned i = first; i < b->nfiles && i <= last; i++) {
                if (!b->files[i].uploaded || (!all && i != first && i != last))
                        continue;
                char why[WHY_MAX] = "";
                if (ensure_conn(w))
                        return b->exit_code;
                int res = verify_full(w, &b->files[i], why);
                if (res) {
                        fail(b, res == ERR_VERIFY ? EXIT_VERIFY : EXIT_NET,
                             "checking file %u (%llu bytes) over %s failed: %s", i,
                             (unsigned long long)b->files[i].size, face_names[b->face], why);
                        return b->exit_code;
                }
                checked++;
        }
        if (!checked && !b->capped) {
                fail(b, EXIT_NET, "no file was uploaded");
                return b->exit_code;
        }
        return 0;
}

/* ---- generating files -------------------------------------------------------------------- */

struct gen {
        struct bench *b;
        uint32_t seed;
        atomic_uint next;
        atomic_int err;
};

static void *gen_main(void *arg)
{
        struct gen *g = arg;
        for (;;) {
                unsigned i = atomic_fetch_add(&g->next, 1);
                if (i >= g->b->nfiles || atomic_load(&g->err))
                        break;
                struct bfile *bf = &g->b->files[i];
                int rc = rc_file_make(&bf->f, bf->size, g->b->o->chunk, g->seed + i, i);
                if (!rc && g->b->soak)
                        rc = chp_sha256(bf->f.data, bf->size, bf->sha);
                if (rc)
                        atomic_store(&g->err, rc);
        }
        return NULL;
}

/* Builds every file (sizes already set) from seed + its index, on all cores. */
static int gen_files(struct bench *b, uint32_t seed)
{
        uint64_t total = 0;
        for (unsigned i = 0; i < b->nfiles; i++)
                total += b->files[i].size;
        if (total > GEN_MAX) {
                fail(b, EXIT_USAGE,
                     "the files would take %.1f GB of memory (at most %.1f): fewer --files or a "
                     "smaller --size",
                     (double)total / 1e9, (double)GEN_MAX / 1e9);
                return b->exit_code;
        }
        struct gen g = {.b = b, .seed = seed};
        atomic_init(&g.next, 0);
        atomic_init(&g.err, 0);
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned n = cores < 1 ? 1 : cores > 16 ? 16 : (unsigned)cores;
        pthread_t th[16];
        unsigned started = 0;
        for (; started < n; started++)
                if (pthread_create(&th[started], NULL, gen_main, &g) != 0)
                        break;
        if (!started)
                gen_main(&g);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        if (atomic_load(&g.err)) {
                fail(b, EXIT_LOCAL, "cannot generate the files: %s",
                     chp_strerror(atomic_load(&g.err)));
                return b->exit_code;
        }
        return 0;
}

/* ---- idle connections -------------------------------------------------------------------- */

/* Opens n idle connections: native a channel (handshake, HELLO and its HELLO_OK) into nc[i],
 * HTTP one GET /healthz into fds[i]; then nothing. */
static int idle_open(struct bench *b, int *fds, struct rc_conn *nc, unsigned n)
{
        struct hconn h = {.fd = -1};
        int res = 0;
        for (unsigned i = 0; i < n && !res; i++) {
                int rc;
                char why[WHY_MAX];
                if (b->face == FACE_NATIVE) {
                        rc = rc_dial(&nc[i], b->addr, b->o->plaintext, 10 * 1000);
                        if (rc) {
                                rc_text(&nc[i], rc, why, sizeof(why));
                                rc_close(&nc[i]);
                        }
                } else {
                        struct hresp r;
                        rc = hc_connect(&h, b->addr);
                        if (!rc)
                                rc = hc_request(&h, "GET", "/healthz", "", NULL, 0, 0, NULL, 0,
                                                NULL, &r);
                        if (!rc && (r.status != 200 || h.fd < 0))
                                rc = -EPROTO;
                        snprintf(why, sizeof(why), "%s", errno_text(rc));
                        if (!rc) {
                                fds[i] = h.fd;
                                h.fd = -1;
                                set_timeouts(fds[i], 10);
                        }
                        hc_close(&h);
                }
                if (rc) {
                        fail(b, EXIT_NET, "idle connection %u of %u to %s: %s", i + 1, n, b->addr,
                             why);
                        res = b->exit_code;
                }
        }
        free(h.buf);
        return res;
}

/* Whether the idle connection still answers: PING/PONG or GET /healthz. */
static bool idle_alive(struct bench *b, int fd, struct rc_conn *nc, struct hconn *h)
{
        if (b->face == FACE_NATIVE) {
                struct chp_frame_header fh;
                uint8_t *reply;
                return nc->ch && rc_call(nc, CHP_F_PING, NULL, 0, &fh, &reply) == 0 && fh.len == 0;
        }
        struct hresp r;
        h->fd = fd;
        h->off = h->len = 0;
        bool ok = hc_request(h, "GET", "/healthz", "", NULL, 0, 0, NULL, 0, NULL, &r) == 0 &&
                  r.status == 200;
        h->fd = -1; /* the caller closes fd */
        return ok;
}

/* ---- scenarios --------------------------------------------------------------------------- */

static int add_run(struct bench *b, struct report *rep, enum phase ph)
{
        if (rep->nruns == sizeof(rep->runs) / sizeof(rep->runs[0])) {
                fail(b, EXIT_LOCAL, "too many runs");
                return b->exit_code;
        }
        int rc = run_phase(b, ph, &rep->runs[rep->nruns]);
        if (!rc)
                rep->nruns++;
        return rc;
}

static int scenario_idle(struct bench *b, struct report *rep)
{
        const struct opts *o = b->o;
        struct idle_result *ir = &rep->idle[rep->nidle];
        memset(ir, 0, sizeof(*ir));
        ir->face = b->face;
        ir->conns = o->idle;
        int *fds = malloc((o->idle + 1) * sizeof(*fds));
        struct rc_conn *nc = calloc(o->idle + 1, sizeof(*nc));
        if (!fds || !nc) {
                free(fds);
                free(nc);
                fail(b, EXIT_LOCAL, "out of memory");
                return b->exit_code;
        }
        for (unsigned i = 0; i < o->idle; i++)
                fds[i] = -1;
        relay_snap(o->pid, &ir->before);
        double t0 = chp_net_now_s();
        int rc = idle_open(b, fds, nc, o->idle);
        ir->open_secs = chp_net_now_s() - t0;
        if (!rc) {
                struct timespec ts = {1, 0}; /* let the relay settle before measuring */
                nanosleep(&ts, NULL);
                relay_snap(o->pid, &ir->after);
                rc = add_run(b, rep, PH_UPLOAD);
        }
        if (!rc)
                rc = add_run(b, rep, PH_DOWNLOAD);
        if (!rc) {
                struct hconn h = {.fd = -1, .buf = malloc(HC_BUF)};
                if (!h.buf) {
                        fail(b, EXIT_LOCAL, "out of memory");
                        rc = b->exit_code;
                }
                for (unsigned i = 0; i < o->idle && !rc; i++)
                        ir->alive += idle_alive(b, fds[i], &nc[i], &h);
                free(h.buf);
                relay_snap(o->pid, &ir->end);
                rep->nidle++;
        }
        for (unsigned i = 0; i < o->idle; i++) {
                if (fds[i] >= 0)
                        close(fds[i]);
                rc_close(&nc[i]);
        }
        free(fds);
        free(nc);
        return rc;
}

/* Soak: one round's phase run, its row folded into the face's total and its transfers into the
 * soak's curve. */
static int soak_round(struct bench *b, struct soak *s)
{
        struct run run;
        int rc = run_phase(b, PH_SOAK, &run);
        if (rc)
                return rc;
        struct run *t = &s->total[b->face];
        if (!s->have[b->face]) {
                *t = (struct run){.face = b->face, .phase = PH_SOAK, .before = run.before};
                s->have[b->face] = true;
        }
        t->bytes += run.bytes;
        t->requests += run.requests;
        t->sent += run.sent;
        t->cuts += run.cuts;
        t->retries += run.retries;
        t->secs += run.secs;
        t->client_cpu_s += run.client_cpu_s;
        t->after = run.after;
        int err = samples_append(&t->up, &run.up) || samples_append(&t->down, &run.down);
        samples_free(&run.up);
        samples_free(&run.down);
        for (unsigned i = 0; i < b->nw && !err; i++) {
                struct worker *w = &b->w[i];
                s->verified += w->verified;
                err = samples_append(&s->t, &w->lat_t) || samples_append(&s->ms, &w->lat_ms) ||
                      samples_append(&s->bytes, &w->lat_bytes);
        }
        if (err) {
                fail(b, EXIT_LOCAL, "out of memory");
                return b->exit_code;
        }
        return 0;
}

/* One face: files generated, workers connected, the scenario's phases run, files checked. In the
 * soak, one round of it (round numbers the files, so no round repeats another's). */
static int run_face(const struct opts *o, enum face face, struct report *rep, unsigned round)
{
        struct bench b = {.o = o, .face = face, .addr = o->addr[face]};
        if (o->scenario == SC_SOAK)
                b.soak = &rep->soak;
        pthread_mutex_init(&b.mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_cond_init(&b.cv, &ca);
        pthread_condattr_destroy(&ca);
        int sc = o->scenario;
        b.nfiles = sc == SC_FANOUT ? 1 : o->files;
        b.nw = o->conns;
        b.rounds = o->files;
        b.files = calloc(b.nfiles, sizeof(*b.files));
        b.pending = calloc(b.nfiles, sizeof(*b.pending));
        b.w = calloc(b.nw, sizeof(*b.w));
        int rc = 0;
        if (!b.files || !b.pending || !b.w) {
                fail(&b, EXIT_LOCAL, "out of memory");
                rc = b.exit_code;
                goto out;
        }
        for (unsigned i = 0; i < b.nw; i++) {
                struct worker *w = &b.w[i];
                w->b = &b;
                w->idx = i;
                w->hc.fd = -1;
                w->rng = o->seed * 0x100000001b3ULL + i + ((uint64_t)round << 32);
                w->small = face == FACE_HTTP ? malloc(SMALL_VERIFY) : NULL;
                w->scratch = malloc(SCRATCH);
                if ((face == FACE_HTTP && !w->small) || !w->scratch) {
                        fail(&b, EXIT_LOCAL, "out of memory");
                        rc = b.exit_code;
                        goto out;
                }
        }
        /* sizes: the mix draws the same sequence on every face (its content differs) */
        uint64_t rng = o->seed + round;
        for (unsigned i = 0; i < b.nfiles; i++) {
                uint64_t size = o->size;
                if (sc == SC_MIX || sc == SC_SOAK) {
                        unsigned pick = (unsigned)(splitmix(&rng) % 100), k = 0, acc = 0;
                        while (k + 1 < MIX_KINDS && pick >= acc + mix_kinds[k].percent)
                                acc += mix_kinds[k++].percent;
                        size = rand_range(&rng, mix_kinds[k].lo, mix_kinds[k].hi);
                        if (o->size && size > o->size)
                                size = o->size;
                        if (face == FACE_NATIVE || !o->addr[FACE_NATIVE])
                                rep->mix_counts[k]++;
                }
                b.files[i].size = size;
        }
        if ((rc = gen_files(&b, o->seed + (uint32_t)face * 0x9e3779b9u + round * b.nfiles)))
                goto out;
        switch (sc) {
        case SC_UPLOAD:
                rc = add_run(&b, rep, PH_UPLOAD);
                break;
        case SC_DOWNLOAD:
                rc = run_phase(&b, PH_UPLOAD, NULL);
                if (!rc)
                        rc = add_run(&b, rep, PH_DOWNLOAD);
                break;
        case SC_MIX:
                rc = add_run(&b, rep, PH_MIX);
                break;
        case SC_FANOUT:
                rc = run_phase(&b, PH_UPLOAD, NULL);
                if (!rc && !b.files[0].uploaded) {
                        fail(&b, EXIT_NET, "the file to fan out was not uploaded in time");
                        rc = b.exit_code;
                }
                if (!rc)
                        rc = add_run(&b, rep, PH_FANOUT);
                break;
        case SC_RESUME:
                rc = add_run(&b, rep, PH_RESUME);
                break;
        case SC_IDLE:
                rc = scenario_idle(&b, rep);
                break;
        case SC_SOAK:
                rc = soak_round(&b, b.soak);
                break;
        }
        if (!rc)
                rc = verify_files(&b, sc == SC_RESUME);
out:
        if (rc && b.err[0])
                fprintf(stderr, "chapar-bench: %s\n", b.err);
        for (unsigned i = 0; b.w && i < b.nw; i++) {
                drop_conn(&b.w[i]);
                free(b.w[i].hc.buf);
                free(b.w[i].small);
                free(b.w[i].scratch);
                samples_free(&b.w[i].up);
                samples_free(&b.w[i].down);
                samples_free(&b.w[i].lat_t);
                samples_free(&b.w[i].lat_ms);
                samples_free(&b.w[i].lat_bytes);
        }
        for (unsigned i = 0; b.files && i < b.nfiles; i++)
                rc_file_free(&b.files[i].f);
        free(b.w);
        free(b.pending);
        free(b.files);
        pthread_cond_destroy(&b.cv);
        pthread_mutex_destroy(&b.mu);
        return rc;
}

/* ---- soak: the relay's memory and fds, sampled ------------------------------------------- */

/* One sample of the relay: VmRSS, RssAnon (0 when the kernel has none), its open fds and of them
 * the store's segments (a *.seg file that still exists: one deleted is a leak, not the store).
 * Returns false when the process is gone. */
static bool soak_sample_relay(long pid, struct soak_sample *out)
{
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        out->rss_kib = out->anon_kib = 0;
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "VmRSS:", 6) == 0)
                        out->rss_kib = strtol(line + 6, NULL, 10);
                else if (strncmp(line, "RssAnon:", 8) == 0)
                        out->anon_kib = strtol(line + 8, NULL, 10);
        }
        fclose(f);
        snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
        DIR *d = opendir(path);
        if (!d)
                return false;
        int n = 0, seg = 0;
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                n++;
                char link[64], to[512];
                snprintf(link, sizeof(link), "/proc/%ld/fd/%.20s", pid, e->d_name);
                ssize_t len = readlink(link, to, sizeof(to) - 1);
                if (len >= 4 && memcmp(to + len - 4, ".seg", 4) == 0)
                        seg++;
        }
        closedir(d);
        out->fds = n;
        out->seg_fds = seg;
        return out->rss_kib > 0; /* a zombie has no VmRSS line */
}

/* Waits until the soak stops or secs pass; true when it stopped. */
static bool soak_wait(struct soak *s, double secs)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + secs;
        ts.tv_sec = (time_t)at;
        ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
        pthread_mutex_lock(&s->mu);
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
                ;
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        return stop;
}

struct soak_thread {
        struct soak *s;
        const struct opts *o;
};

static void *sampler_main(void *arg)
{
        struct soak_thread *st = arg;
        struct soak *s = st->s;
        do {
                struct soak_sample x = {.t = chp_net_now_s() - s->t0};
                if (!soak_sample_relay(st->o->pid, &x)) {
                        pthread_mutex_lock(&s->mu);
                        s->relay_gone = true;
                        pthread_mutex_unlock(&s->mu);
                        break;
                }
                if (s->ns == s->caps) {
                        size_t cap = s->caps ? 2 * s->caps : 256;
                        struct soak_sample *v = realloc(s->s, cap * sizeof(*v));
                        if (!v)
                                break;
                        s->s = v;
                        s->caps = cap;
                }
                s->s[s->ns++] = x;
        } while (!soak_wait(s, s->sample_s));
        return NULL;
}

/* ---- soak: the background of slow, idle and flooding connections ------------------------- */

#define BG_TICK_MS    50
#define BG_BODY_BYTES (1u << 20) /* the Content-Length of a trickled tus PATCH */
/* a trickled CHUNK claims --chunk bytes of data */
#define BG_SETUP_S 5 /* a relay that takes longer to set one up fails the setup */

struct bg_slot {
        enum bg_kind kind;
        int fd;
        struct rc_conn nc;   /* BG_CHUNK: its channel (nc.fd == fd) */
        double opened, next; /* when it was opened; when it may send or (re)open next */
        uint64_t left;       /* bytes it may still trickle */
};

/* Opens a slot's connection and sends what precedes its trickle without waiting for an answer
 * (a relay that starves answers late: the trickles must go on meanwhile; answers are read and
 * dropped by the poll loop). BG_CHUNK opens a channel in nc first (its handshake and HELLO are
 * waited for, BG_SETUP_S at most), then writes a CHUNK header whose payload trickles. Returns
 * the fd or -errno. */
static int bg_open(const struct opts *o, enum bg_kind kind, uint64_t *left, struct rc_conn *nc)
{
        *left = 0;
        if (kind == BG_CHUNK) {
                int rc = rc_dial(nc, o->addr[FACE_NATIVE], o->plaintext, BG_SETUP_S * 1000);
                uint8_t head[CHP_FRAME_HEADER];
                chp_frame_header_encode(head, CHP_F_CHUNK, 2, CHP_CHUNK_PREFIX + o->chunk);
                if (!rc)
                        rc = chp_channel_write(nc->ch, head, sizeof(head));
                if (rc) {
                        rc_close(nc);
                        return rc;
                }
                *left = CHP_CHUNK_PREFIX + o->chunk;
                return nc->fd;
        }
        bool http = kind <= BG_IDLE_HTTP;
        int fd = tcp_connect(o->addr[http ? FACE_HTTP : FACE_NATIVE], BG_SETUP_S);
        if (fd < 0 || kind == BG_IDLE_HTTP || kind == BG_IDLE_NATIVE)
                return fd;
        char head[512];
        size_t len = 0;
        if (kind == BG_HEAD) { /* a head that never ends: one more header byte at a time */
                len = (size_t)snprintf(head, sizeof(head),
                                       "GET /healthz HTTP/1.1\r\nHost: soak\r\nX-Soak: ");
                *left = UINT64_MAX;
        } else { /* BG_BODY: tus creation-with-upload whose body trickles */
                len = (size_t)snprintf(head, sizeof(head),
                                       "POST /files/ HTTP/1.1\r\nHost: soak\r\nTus-Resumable: "
                                       "1.0.0\r\nUpload-Length: %u\r\nContent-Type: "
                                       "application/offset+octet-stream\r\nContent-Length: "
                                       "%u\r\n\r\n",
                                       BG_BODY_BYTES, BG_BODY_BYTES);
                *left = BG_BODY_BYTES;
        }
        struct iovec iov = {head, len};
        int rc = rc_write_iov(fd, &iov, 1, NULL);
        if (rc) {
                close(fd);
                return rc;
        }
        return fd;
}

static void bg_drop(struct bg_stats *st, struct bg_slot *sl, double now, bool by_relay)
{
        if (sl->fd < 0)
                return;
        if (sl->nc.ch)
                rc_close(&sl->nc); /* closes fd */
        else
                close(sl->fd);
        sl->fd = -1;
        if (now - sl->opened > st->longest_s[sl->kind])
                st->longest_s[sl->kind] = now - sl->opened;
        if (by_relay)
                st->closed[sl->kind]++;
}

/* Holds o->background connections of the kinds the given faces allow, each trickling a byte every
 * o->trickle_ms or idle, reopened (at most once per trickle period) when the relay closes it; and
 * o->flood connect-and-close per second. Every trickle is spread over the period at random. */
static void *background_main(void *arg)
{
        struct soak_thread *bt = arg;
        struct soak *s = bt->s;
        const struct opts *o = bt->o;
        struct bg_stats *st = &s->bg;
        enum bg_kind kinds[BG_KINDS];
        unsigned nk = 0;
        for (int k = 0; k < BG_KINDS; k++)
                if (o->addr[k <= BG_IDLE_HTTP ? FACE_HTTP : FACE_NATIVE])
                        kinds[nk++] = (enum bg_kind)k;
        unsigned n = o->background;
        struct bg_slot *sl = calloc(n ? n : 1, sizeof(*sl));
        struct pollfd *pf = calloc(n ? n : 1, sizeof(*pf));
        if (!sl || !pf)
                goto out;
        uint64_t rng = o->seed ^ 0x5eed;
        double period = o->trickle_ms / 1e3, t0 = chp_net_now_s();
        for (unsigned i = 0; i < n; i++)
                sl[i] = (struct bg_slot){.kind = kinds[i % nk], .fd = -1, .next = t0};
        uint64_t flooded = 0;
        for (;;) {
                double now = chp_net_now_s(), tick = now;
                /* (re)open, for at most a tick: the trickles below must keep their pace */
                for (unsigned i = 0; i < n && now - tick < BG_TICK_MS / 1e3; i++) {
                        if (sl[i].fd >= 0 || now < sl[i].next)
                                continue;
                        if (soak_wait(s, 0)) /* opening may wait on a slow relay */
                                break;
                        int fd = bg_open(o, sl[i].kind, &sl[i].left, &sl[i].nc);
                        now = chp_net_now_s();
                        if (fd < 0) {
                                st->failed[sl[i].kind]++;
                                sl[i].next = now + (period > 1 ? period : 1);
                                continue;
                        }
                        st->opened[sl[i].kind]++;
                        sl[i].fd = fd;
                        sl[i].opened = now;
                        sl[i].next = now + period * (double)rand_range(&rng, 1, 1000) / 1000;
                }
                for (unsigned i = 0; i < n; i++) { /* trickle */
                        if (sl[i].fd < 0 || !sl[i].left || now < sl[i].next)
                                continue;
                        sl[i].next += period;
                        if (sl[i].next < now)
                                sl[i].next = now + period;
                        char byte = sl[i].kind == BG_HEAD ? 'a' : 0;
                        int sent; /* 1: out; 0: the socket is full; -1: the relay closed it */
                        if (sl[i].nc.ch) { /* a channel's byte goes out as a record of its own */
                                sent = chp_channel_write(sl[i].nc.ch, &byte, 1) == 0 ? 1 : -1;
                        } else {
                                ssize_t w = send(sl[i].fd, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                                sent = w == 1                                             ? 1
                                       : w < 0 && errno != EAGAIN && errno != EWOULDBLOCK ? -1
                                                                                          : 0;
                        }
                        if (sent > 0) {
                                st->trickled++;
                                sl[i].left--;
                        } else if (sent < 0) {
                                bg_drop(st, &sl[i], now, true);
                                sl[i].next = now + period;
                        }
                }
                /* the flood: as many connect-and-close as the rate allows so far, faces in turn */
                uint64_t due = (uint64_t)((now - t0) * o->flood);
                for (unsigned k = 0; flooded < due && k < 200; k++, flooded++) {
                        enum face f = (flooded & 1) && o->addr[FACE_NATIVE] ? FACE_NATIVE
                                      : o->addr[FACE_HTTP]                  ? FACE_HTTP
                                                                            : FACE_NATIVE;
                        int fd = tcp_connect(o->addr[f], BG_SETUP_S);
                        if (fd < 0) {
                                st->flood_failed++;
                        } else {
                                close(fd);
                                st->flood++;
                        }
                }
                /* a closed connection (or an answer: a 408 or a busy error before the close);
                 * a channel's bytes are read past it and dropped too: it never reads a frame */
                for (unsigned i = 0; i < n; i++)
                        pf[i] = (struct pollfd){.fd = sl[i].fd, .events = POLLIN | POLLRDHUP};
                if (soak_wait(s, 0))
                        break;
                int ready = poll(pf, n, BG_TICK_MS);
                now = chp_net_now_s();
                for (unsigned i = 0; ready > 0 && i < n; i++) {
                        if (sl[i].fd < 0 || !pf[i].revents)
                                continue;
                        char buf[4096];
                        ssize_t r = recv(sl[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
                        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
                            (pf[i].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                                bg_drop(st, &sl[i], now, true);
                                sl[i].next = now + period;
                        }
                }
        }
out:
        for (unsigned i = 0; sl && i < n; i++)
                bg_drop(st, &sl[i], chp_net_now_s(), false);
        free(pf);
        free(sl);
        return NULL;
}

/* ---- soak: the scenario ------------------------------------------------------------------ */

/* The last third's max against the first third's max plus slack; the slope for the report. */
static void growth_judge(const struct soak *s, int which, double slack, struct growth *g)
{
        memset(g, 0, sizeof(*g));
        g->slack = slack;
        size_t n = s->ns, third = n / 3;
        double st = 0, sv = 0, stt = 0, stv = 0;
        for (size_t i = 0; i < n; i++) {
                double v = which == 0 ? (double)(s->anon ? s->s[i].anon_kib : s->s[i].rss_kib)
                                      : (double)(s->s[i].fds - s->s[i].seg_fds);
                double t = s->s[i].t / 60;
                st += t;
                sv += v;
                stt += t * t;
                stv += t * v;
                if (i < third && v > g->first)
                        g->first = v;
                if (i >= n - third && v > g->last)
                        g->last = v;
        }
        double den = (double)n * stt - st * st;
        g->slope_per_min = n >= 2 && den > 0 ? ((double)n * stv - st * sv) / den : 0;
        g->judged = third >= 1;
        g->ok = !g->judged || g->last <= g->first + slack;
}

static int scenario_soak(const struct opts *o, struct report *rep)
{
        struct soak *s = &rep->soak;
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        s->interval_s = o->interval ? o->interval
                        : o->seconds >= 120
                            ? 60
                            : (o->seconds >= 10 ? (double)(int)(o->seconds / 5) : 1);
        /* at least a dozen samples, one every 5 s at most */
        s->sample_s = o->seconds / 12 < 5 ? o->seconds / 12 : 5;
        if (s->sample_s < 0.2)
                s->sample_s = 0.2;
        struct soak_sample probe;
        if (!soak_sample_relay(o->pid, &probe)) {
                fprintf(stderr,
                        "chapar-bench: cannot read /proc/%ld (status and fd): the soak "
                        "watches the relay's memory and fds (--pid of a relay of this user)\n",
                        o->pid);
                return EXIT_USAGE;
        }
        s->anon = probe.anon_kib > 0;
        struct soak_thread st = {s, o};
        pthread_t sampler, bg;
        s->t0 = chp_net_now_s();
        s->end = s->t0 + o->seconds;
        bool bg_up =
            (o->background || o->flood) && pthread_create(&bg, NULL, background_main, &st) == 0;
        bool sampler_up = pthread_create(&sampler, NULL, sampler_main, &st) == 0;
        int rc = sampler_up ? 0 : EXIT_LOCAL;
        if (!sampler_up)
                fprintf(stderr, "chapar-bench: cannot start the sampler thread\n");
        for (unsigned round = 0; !rc && chp_net_now_s() < s->end; round++) {
                for (int f = 0; f < FACES && !rc && chp_net_now_s() < s->end; f++)
                        if (o->addr[f])
                                rc = run_face(o, (enum face)f, rep, round);
                s->rounds = round + 1;
                pthread_mutex_lock(&s->mu);
                bool gone = s->relay_gone;
                pthread_mutex_unlock(&s->mu);
                if (gone)
                        break;
        }
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (bg_up)
                pthread_join(bg, NULL);
        if (sampler_up)
                pthread_join(sampler, NULL);
        s->secs = chp_net_now_s() - s->t0;
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        for (int f = 0; f < FACES; f++) {
                struct run *t = &s->total[f];
                if (!s->have[f])
                        continue;
                if (t->up.n)
                        qsort(t->up.v, t->up.n, sizeof(double), cmp_double);
                if (t->down.n)
                        qsort(t->down.v, t->down.n, sizeof(double), cmp_double);
                rep->runs[rep->nruns++] = *t; /* the samples are taken over */
                memset(t, 0, sizeof(*t));
        }
        growth_judge(s, 0, (double)o->rss_slack / 1024, &s->mem);
        growth_judge(s, 1, o->fd_slack, &s->fds);
        if (s->relay_gone) {
                fprintf(stderr, "chapar-bench: the relay (pid %ld) exited during the soak\n",
                        o->pid);
                rc = EXIT_GROWTH;
        } else if (!rc && (!s->mem.judged || !s->fds.judged)) {
                fprintf(stderr,
                        "chapar-bench: %zu samples of the relay are too few to judge "
                        "growth (a longer --seconds)\n",
                        s->ns);
                rc = EXIT_GROWTH;
        } else if (!rc && !s->mem.ok) {
                fprintf(stderr,
                        "chapar-bench: the relay's memory grew: %s peaked at %.1f MiB in the "
                        "first third of the soak and %.1f MiB in the last (more than %.1f MiB "
                        "of slack; %+.1f MiB a minute over the run)\n",
                        s->anon ? "RssAnon" : "VmRSS", s->mem.first / 1024, s->mem.last / 1024,
                        s->mem.slack / 1024, s->mem.slope_per_min / 1024);
                rc = EXIT_GROWTH;
        } else if (!rc && !s->fds.ok) {
                fprintf(stderr,
                        "chapar-bench: the relay's open file descriptors (besides the store's "
                        "segments) grew: at most %.0f in the first third of the soak, %.0f in "
                        "the last (more than %.0f of slack; %+.1f a minute over the run)\n",
                        s->fds.first, s->fds.last, s->fds.slack, s->fds.slope_per_min);
                rc = EXIT_GROWTH;
        }
        return rc;
}

/* Per-interval figures of the soak. */
struct soak_iv {
        double t0, t1;
        long rss_kib, anon_kib;
        int fds, seg_fds;
        size_t n;
        double mb, p99_ms;
};

/* Fills iv for interval j (0-based); false past the end. */
static bool soak_interval(const struct soak *s, unsigned j, struct soak_iv *iv)
{
        memset(iv, 0, sizeof(*iv));
        /* the run's last moments (less than half an interval) join the last interval */
        unsigned n = (unsigned)(s->secs / s->interval_s + 0.5);
        if (j >= (n ? n : 1))
                return false;
        iv->t0 = j * s->interval_s;
        iv->t1 = j + 1 >= n ? s->secs + 1 : iv->t0 + s->interval_s;
        iv->fds = -1;
        for (size_t i = 0; i < s->ns; i++) {
                const struct soak_sample *x = &s->s[i];
                if (x->t < iv->t0 || x->t >= iv->t1)
                        continue;
                if (x->rss_kib > iv->rss_kib)
                        iv->rss_kib = x->rss_kib;
                if (x->anon_kib > iv->anon_kib)
                        iv->anon_kib = x->anon_kib;
                if (x->fds > iv->fds)
                        iv->fds = x->fds;
                if (x->seg_fds > iv->seg_fds)
                        iv->seg_fds = x->seg_fds;
        }
        struct samples lat = {0};
        for (size_t i = 0; i < s->t.n; i++) {
                if (s->t.v[i] < iv->t0 || s->t.v[i] >= iv->t1)
                        continue;
                iv->mb += s->bytes.v[i] / 1e6;
                if (samples_add(&lat, s->ms.v[i]) == 0)
                        iv->n++;
        }
        if (lat.n) {
                qsort(lat.v, lat.n, sizeof(double), cmp_double);
                iv->p99_ms = percentile(&lat, 0.99);
        }
        samples_free(&lat);
        return true;
}

/* ---- the report -------------------------------------------------------------------------- */

static double mbps(const struct run *r)
{
        return r->secs > 0 ? (double)r->bytes / r->secs / 1e6 : 0;
}

static bool relay_cpu(const struct run *r, double *cpu_s)
{
        if (!r->before.ok || !r->after.ok)
                return false;
        *cpu_s = r->after.cpu_s - r->before.cpu_s;
        return true;
}

static void json_lat(const char *name, const struct samples *s)
{
        if (!s->n) {
                printf("\"%s\":null,", name);
                return;
        }
        double sum = 0;
        for (size_t i = 0; i < s->n; i++)
                sum += s->v[i];
        printf("\"%s\":{\"n\":%zu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
               "\"p999_ms\":%.3f,\"max_ms\":%.3f},",
               name, s->n, sum / (double)s->n, percentile(s, 0.5), percentile(s, 0.99),
               percentile(s, 0.999), s->v[s->n - 1]);
}

static void json_snap(const char *prefix, const struct relay_snap *s)
{
        if (s->ok)
                printf("\"%s_rss_kib\":%ld,\"%s_hwm_kib\":%ld", prefix, s->rss_kib, prefix,
                       s->hwm_kib);
        else
                printf("\"%s_rss_kib\":null,\"%s_hwm_kib\":null", prefix, prefix);
}

static void json_growth(const char *name, const struct growth *g, double unit)
{
        printf("\"%s\":{\"first_third_max\":%.0f,\"last_third_max\":%.0f,\"slack\":%.0f,"
               "\"slope_per_min\":%.1f,\"judged\":%s,\"ok\":%s}",
               name, g->first * unit, g->last * unit, g->slack * unit, g->slope_per_min * unit,
               g->judged ? "true" : "false", g->ok ? "true" : "false");
}

static void json_soak(const struct opts *o, const struct soak *s)
{
        printf(",\"soak\":{\"seconds\":%.1f,\"rounds\":%u,\"interval_s\":%.1f,"
               "\"sample_s\":%.2f,\"samples\":%zu,\"transfers\":%zu,\"verified\":%llu,"
               "\"cut_percent\":%u,\"rate_mb_per_s\":%.0f,\"memory\":\"%s\",\"relay_exited\":%s,"
               "\"intervals\":[",
               s->secs, s->rounds, s->interval_s, s->sample_s, s->ns, s->t.n,
               (unsigned long long)s->verified, o->cut_pct, o->rate, s->anon ? "RssAnon" : "VmRSS",
               s->relay_gone ? "true" : "false");
        struct soak_iv iv;
        for (unsigned j = 0; soak_interval(s, j, &iv); j++) {
                printf("%s{\"t_s\":%.1f,\"rss_kib\":%ld,\"anon_kib\":%ld,\"fds\":%d,"
                       "\"seg_fds\":%d,\"transfers\":%zu,\"mb\":%.2f,\"p99_ms\":",
                       j ? "," : "", iv.t0, iv.rss_kib, iv.anon_kib, iv.fds, iv.seg_fds, iv.n,
                       iv.mb);
                if (iv.n)
                        printf("%.3f}", iv.p99_ms);
                else
                        printf("null}");
        }
        printf("],");
        json_growth("rss_growth_kib", &s->mem, 1);
        printf(",");
        json_growth("fd_growth", &s->fds, 1);
        printf(",\"background\":{\"conns\":%u,\"flood_per_s\":%u,\"trickle_ms\":%u,", o->background,
               o->flood, o->trickle_ms);
        for (int k = 0; k < BG_KINDS; k++)
                printf("\"%s\":{\"opened\":%llu,\"closed_by_relay\":%llu,\"failed\":%llu,"
                       "\"longest_s\":%.1f},",
                       bg_names[k], (unsigned long long)s->bg.opened[k],
                       (unsigned long long)s->bg.closed[k], (unsigned long long)s->bg.failed[k],
                       s->bg.longest_s[k]);
        printf("\"trickled_bytes\":%llu,\"flood\":%llu,\"flood_failed\":%llu}}",
               (unsigned long long)s->bg.trickled, (unsigned long long)s->bg.flood,
               (unsigned long long)s->bg.flood_failed);
}

static void print_json(const struct opts *o, const struct report *rep)
{
        printf("{\"scenario\":\"%s\",\"seed\":%u,\"files\":%u,\"size\":%llu,\"conns\":%u,"
               "\"chunk_size\":%u,\"seconds_cap\":%.0f,\"pid\":",
               scenario_names[o->scenario], o->seed, o->files, (unsigned long long)o->size,
               o->conns, o->chunk, o->seconds);
        if (o->pid)
                printf("%ld", o->pid);
        else
                printf("null");
        if (o->scenario == SC_RESUME)
                printf(",\"resume_delay_ms\":%u", o->resume_delay_ms);
        printf(",\"runs\":[");
        for (unsigned i = 0; i < rep->nruns; i++) {
                const struct run *r = &rep->runs[i];
                double cpu;
                printf("%s{\"face\":\"%s\",\"phase\":\"%s\",\"bytes\":%llu,\"requests\":%llu,"
                       "\"seconds\":%.4f,\"mb_per_s\":%.2f,\"req_per_s\":%.2f,",
                       i ? "," : "", face_names[r->face], phase_names[r->phase],
                       (unsigned long long)r->bytes, (unsigned long long)r->requests, r->secs,
                       mbps(r), r->secs > 0 ? (double)r->requests / r->secs : 0);
                json_lat("upload", &r->up);
                json_lat("download", &r->down);
                if (relay_cpu(r, &cpu)) {
                        printf("\"relay_cpu_s\":%.3f,", cpu);
                        if (r->bytes)
                                printf("\"relay_cpu_s_per_gb\":%.3f,",
                                       cpu / ((double)r->bytes / 1e9));
                        else
                                printf("\"relay_cpu_s_per_gb\":null,");
                } else {
                        printf("\"relay_cpu_s\":null,\"relay_cpu_s_per_gb\":null,");
                }
                if (r->after.ok)
                        printf("\"relay_vm_rss_kib\":%ld,\"relay_vm_hwm_kib\":%ld,",
                               r->after.rss_kib, r->after.hwm_kib);
                else
                        printf("\"relay_vm_rss_kib\":null,\"relay_vm_hwm_kib\":null,");
                printf("\"client_cpu_s\":%.3f,\"capped\":%s", r->client_cpu_s,
                       r->capped ? "true" : "false");
                uint64_t resent = r->sent > r->file_bytes ? r->sent - r->file_bytes : 0;
                if (r->phase == PH_SOAK)
                        printf(",\"cuts\":%llu,\"retries\":%llu", (unsigned long long)r->cuts,
                               (unsigned long long)r->retries);
                if (r->phase == PH_RESUME)
                        printf(",\"cuts\":%llu,\"retries\":%llu,\"bytes_sent\":%llu,"
                               "\"resent_bytes\":%llu,\"resent_ratio\":%.4f",
                               (unsigned long long)r->cuts, (unsigned long long)r->retries,
                               (unsigned long long)r->sent, (unsigned long long)resent,
                               r->file_bytes ? (double)resent / (double)r->file_bytes : 0);
                printf("}");
        }
        printf("]");
        if (o->scenario == SC_IDLE) {
                printf(",\"idle\":[");
                for (unsigned i = 0; i < rep->nidle; i++) {
                        const struct idle_result *ir = &rep->idle[i];
                        printf("%s{\"face\":\"%s\",\"conns\":%u,\"open_seconds\":%.3f,"
                               "\"alive_after\":%u,",
                               i ? "," : "", face_names[ir->face], ir->conns, ir->open_secs,
                               ir->alive);
                        json_snap("relay_before", &ir->before);
                        printf(",");
                        json_snap("relay_after", &ir->after);
                        printf(",");
                        json_snap("relay_end", &ir->end);
                        if (ir->before.ok && ir->after.ok && ir->conns)
                                printf(",\"bytes_per_conn\":%.0f",
                                       (double)(ir->after.rss_kib - ir->before.rss_kib) * 1024 /
                                           ir->conns);
                        else
                                printf(",\"bytes_per_conn\":null");
                        printf("}");
                }
                printf("]");
        }
        if (o->scenario == SC_SOAK)
                json_soak(o, &rep->soak);
        if (o->scenario == SC_MIX || o->scenario == SC_SOAK) {
                printf(",\"mix\":{");
                for (unsigned k = 0; k < MIX_KINDS; k++)
                        printf("%s\"%s\":%u", k ? "," : "", mix_kinds[k].name, rep->mix_counts[k]);
                printf("}");
        }
        printf("}\n");
}

static void lat3(char *out, size_t cap, const struct samples *s)
{
        if (!s->n)
                snprintf(out, cap, "%8s %8s %8s", "-", "-", "-");
        else
                snprintf(out, cap, "%8.2f %8.2f %8.2f", percentile(s, 0.5), percentile(s, 0.99),
                         percentile(s, 0.999));
}

static void table_growth(const char *what, const struct growth *g, double unit, const char *u)
{
        printf("  %s: at most %.1f%s in the first third, %.1f%s in the last (slack %.1f%s; "
               "%+.2f%s a minute): %s\n",
               what, g->first / unit, u, g->last / unit, u, g->slack / unit, u,
               g->slope_per_min / unit, u,
               !g->judged ? "too few samples"
               : g->ok    ? "ok"
                          : "GREW");
}

static void table_soak(const struct opts *o, const struct soak *s)
{
        printf("\nsoak: %u round(s) in %.1f s; %zu transfers, %llu downloads matched their "
               "upload's SHA-256; relay sampled %zu times (every %.1f s)\n",
               s->rounds, s->secs, s->t.n, (unsigned long long)s->verified, s->ns, s->sample_s);
        printf("%8s %9s %9s %9s %6s %8s %10s %9s\n", "t s", "transfers", "MB", "p99 ms", "fds",
               "seg fds", "VmRSS MiB", "anon MiB");
        struct soak_iv iv;
        for (unsigned j = 0; soak_interval(s, j, &iv); j++) {
                char p99[32] = "-";
                if (iv.n)
                        snprintf(p99, sizeof(p99), "%.1f", iv.p99_ms);
                printf("%8.0f %9zu %9.1f %9s %6d %8d %10.1f %9.1f\n", iv.t0, iv.n, iv.mb, p99,
                       iv.fds, iv.seg_fds, (double)iv.rss_kib / 1024, (double)iv.anon_kib / 1024);
        }
        table_growth(s->anon ? "memory (RssAnon)" : "memory (VmRSS)", &s->mem, 1024, " MiB");
        table_growth("open fds besides segments", &s->fds, 1, "");
        printf("  background: %u connections (a byte every %u ms), %u connect-and-close a "
               "second\n",
               o->background, o->trickle_ms, o->flood);
        for (int k = 0; k < BG_KINDS; k++)
                if (s->bg.opened[k] || s->bg.failed[k])
                        printf("    %-22s %6llu opened, %6llu closed by the relay, %4llu failed "
                               "to open; the longest held %.1f s\n",
                               bg_names[k], (unsigned long long)s->bg.opened[k],
                               (unsigned long long)s->bg.closed[k],
                               (unsigned long long)s->bg.failed[k], s->bg.longest_s[k]);
        printf("    flood: %llu connected and closed, %llu failed to connect; %llu bytes "
               "trickled\n",
               (unsigned long long)s->bg.flood, (unsigned long long)s->bg.flood_failed,
               (unsigned long long)s->bg.trickled);
}

static void print_table(const struct opts *o, const struct report *rep)
{
        printf("chapar-bench %s: ", scenario_names[o->scenario]);
        if (o->scenario == SC_FANOUT)
                printf("1 file of %.2f MiB fetched %u time(s) by each of %u connections",
                       (double)o->size / 1048576, o->files, o->conns);
        else if (o->scenario == SC_MIX)
                printf("%u files (messenger mix%s) over %u connections", o->files,
                       o->size ? ", capped" : "", o->conns);
        else if (o->scenario == SC_SOAK)
                printf("%.0f s of rounds of %u files (messenger mix%s, %u%% of uploads cut and "
                       "resumed, uploads at most %.0f MB/s) over %u connections",
                       rep->soak.secs, o->files, o->size ? ", capped" : "", o->cut_pct, o->rate,
                       o->conns);
        else
                printf("%u files of %.2f MiB over %u connections", o->files,
                       (double)o->size / 1048576, o->conns);
        printf(", %u KiB chunks, seed %u\n\n", o->chunk / 1024, o->seed);
        printf("%-6s %-8s %6s %9s %7s %8s %8s | %-26s | %-26s | %9s %9s\n", "face", "phase", "reqs",
               "MB", "secs", "MB/s", "req/s", "upload ms p50/p99/p99.9",
               "download ms p50/p99/p99.9", "CPU s/GB", "HWM MiB");
        for (unsigned i = 0; i < rep->nruns; i++) {
                const struct run *r = &rep->runs[i];
                char up[64], down[64], cpu_gb[16] = "-", hwm[16] = "-";
                double cpu;
                lat3(up, sizeof(up), &r->up);
                lat3(down, sizeof(down), &r->down);
                if (relay_cpu(r, &cpu) && r->bytes)
                        snprintf(cpu_gb, sizeof(cpu_gb), "%.2f", cpu / ((double)r->bytes / 1e9));
                if (r->after.ok)
                        snprintf(hwm, sizeof(hwm), "%.1f", (double)r->after.hwm_kib / 1024);
                printf("%-6s %-8s %6llu %9.1f %7.2f %8.1f %8.1f | %-26s | %-26s | %9s %9s%s\n",
                       face_names[r->face], phase_names[r->phase], (unsigned long long)r->requests,
                       (double)r->bytes / 1e6, r->secs, mbps(r),
                       r->secs > 0 ? (double)r->requests / r->secs : 0, up, down, cpu_gb, hwm,
                       r->capped ? "  (capped by --seconds)" : "");
        }
        for (unsigned i = 0; i < rep->nruns; i++) {
                const struct run *r = &rep->runs[i];
                if (r->phase != PH_RESUME)
                        continue;
                uint64_t resent = r->sent > r->file_bytes ? r->sent - r->file_bytes : 0;
                printf("\n%s resume (reconnected %u ms after each cut): %llu cuts; %.1f MB sent "
                       "for %.1f MB of files: %.2f MB "
                       "resent (%.2f%% of the files, %.1f KB per cut)\n",
                       face_names[r->face], o->resume_delay_ms, (unsigned long long)r->cuts,
                       (double)r->sent / 1e6, (double)r->file_bytes / 1e6, (double)resent / 1e6,
                       r->file_bytes ? 100.0 * (double)resent / (double)r->file_bytes : 0,
                       r->cuts ? (double)resent / 1e3 / (double)r->cuts : 0);
                if (r->retries)
                        printf("  %llu request(s) answered 409 or 423 (the cut request still "
                               "finishing) "
                               "and were sent again\n",
                               (unsigned long long)r->retries);
        }
        for (unsigned i = 0; i < rep->nidle; i++) {
                const struct idle_result *ir = &rep->idle[i];
                printf("\n%s idle: %u connections opened in %.2f s; %u still answered after the "
                       "runs\n",
                       face_names[ir->face], ir->conns, ir->open_secs, ir->alive);
                if (ir->before.ok && ir->after.ok && ir->end.ok)
                        printf("  relay RSS %.1f MiB before, %.1f MiB with them idle (%.0f bytes "
                               "per connection), %.1f MiB after the runs; peak %.1f MiB\n",
                               (double)ir->before.rss_kib / 1024, (double)ir->after.rss_kib / 1024,
                               (double)(ir->after.rss_kib - ir->before.rss_kib) * 1024 /
                                   (ir->conns ? ir->conns : 1),
                               (double)ir->end.rss_kib / 1024, (double)ir->end.hwm_kib / 1024);
                else
                        printf("  (relay memory unknown: give --pid)\n");
        }
        if (o->scenario == SC_SOAK)
                table_soak(o, &rep->soak);
        if (o->scenario == SC_MIX || o->scenario == SC_SOAK) {
                printf("\nmix:");
                for (unsigned k = 0; k < MIX_KINDS; k++)
                        printf(" %u %s (%llu-%llu KiB)%s", rep->mix_counts[k], mix_kinds[k].name,
                               (unsigned long long)(mix_kinds[k].lo >> 10),
                               (unsigned long long)(mix_kinds[k].hi >> 10),
                               k + 1 < MIX_KINDS ? "," : "");
                printf("%s\n", o->size ? " (sizes capped by --size)" : "");
        }
        if (!o->pid)
                printf("\n(relay CPU and memory: give --pid)\n");
}

/* ---- main -------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: chapar-bench [--native HOST:PORT] [--http HOST:PORT] [--pid PID]\n"
                "                    --scenario NAME [--files N] [--size BYTES] [--conns C]\n"
                "                    [--idle N] [--seconds S] [--chunk BYTES] [--seed N] [--json]\n"
                "                    [--plaintext]\n"
                "                    [--resume-delay MS] [--background N] [--flood R]\n"
                "                    [--trickle-ms MS] [--cut-percent P] [--interval S]\n"
                "                    [--rate MBPS] [--rss-slack BYTES] [--fd-slack N]\n"
                "\n"
                "Load for a running chapard. The native face is encrypted (Noise XX, as chapar\n"
                "connects); --plaintext asks for plaintext, from a relay run with\n"
                "--insecure-plaintext (to measure what encryption costs).\n"
                "Each face given is measured in turn. Scenarios:\n"
                "  upload    N files (default 64) of S bytes (default 4M) over C connections (4)\n"
                "  download  the same, downloaded (uploaded first, untimed)\n"
                "  mix       a messenger mix (N default 200): 60%% photos 50-300 KiB, 20%% voice\n"
                "            10-100 KiB, 15%% videos 1-20 MiB, 5%% files 20-200 MiB (--size caps\n"
                "            them), each uploaded, then downloaded by another connection\n"
                "  fanout    one file of S bytes, downloaded at once by C connections (default\n"
                "            100), N times each (default 1)\n"
                "  resume    N files (default 16), each cut once mid-CHUNK at a random byte and\n"
                "            resumed on a new connection (after --resume-delay ms, default 0,\n"
                "            not counted in the latency): bytes resent\n"
                "  idle      --idle connections (default 10000) opened and left idle while\n"
                "            upload and download run on C others: relay memory per connection\n"
                "  soak      the mix for --seconds (default 300) in rounds of N files (default\n"
                "            40, sizes capped at 16M unless --size), faces in turn; --cut-percent\n"
                "            (default 20) of uploads cut at a random byte and resumed; every\n"
                "            download's SHA-256 checked; uploads paced to --rate MB/s (default\n"
                "            10, 0: unpaced); beside it --background connections (default 32)\n"
                "            trickling a head, a 1 MiB tus body or a --chunk CHUNK a byte every\n"
                "            --trickle-ms (1000) or idle, and --flood connect-and-close a second\n"
                "            (10). Needs --pid: fails (exit 5) when the relay exits, or its\n"
                "            RssAnon or open fds (besides the store's segments) peak in the last\n"
                "            third of the run higher than in the first third by more than\n"
                "            --rss-slack (64M) or --fd-slack (64).\n"
                "            Reports memory, fds and p99 latency per --interval (60 s, or a\n"
                "            fifth of a run shorter than 120 s).\n"
                "Sizes take K, M, G suffixes (powers of 1024). --seconds caps each phase (default\n"
                "300; no request starts later, and a capped run says so); --chunk is the native "
                "chunk size (default 1M); --pid reads the relay's\n"
                "CPU time and memory from /proc. MB = 10^6 bytes.\n"
                "Exit: 0 ok, 1 usage, 2 relay or network error, 3 a download differs, 4 local,\n"
                "5 the relay grew or exited (soak).\n");
}

/* A count or size: digits, then optionally K, M or G (powers of 1024, "KiB" etc. too). */
static int parse_u64(const char *s, bool suffix, uint64_t *out)
{
        char *e;
        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &e, 10);
        if (errno)
                return -EINVAL;
        unsigned shift = 0;
        if (suffix && *e) {
                switch (*e) {
                case 'k':
                case 'K':
                        shift = 10;
                        break;
                case 'm':
                case 'M':
                        shift = 20;
                        break;
                case 'g':
                case 'G':
                        shift = 30;
                        break;
                default:
                        return -EINVAL;
                }
                e++;
                if (strcasecmp(e, "iB") == 0 || strcasecmp(e, "B") == 0)
                        e += strlen(e);
        }
        if (*e || (shift && v > (UINT64_MAX >> shift)))
                return -EINVAL;
        *out = (uint64_t)v << shift;
        return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
        bool files_set = false, size_set = false, conns_set = false, seed_set = false;
        *o = (struct opts){.scenario = -1,
                           .idle = 10000,
                           .chunk = CHP_CHUNK_DEFAULT,
                           .seconds = 300,
                           .background = 32,
                           .flood = 10,
                           .trickle_ms = 1000,
                           .cut_pct = 20,
                           .rate = 10,
                           .rss_slack = 64u << 20,
                           .fd_slack = 64};
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                uint64_t x = 0;
                bool bad = false;
                if (strcmp(a, "--json") == 0) {
                        o->json = true;
                        continue;
                }
                if (strcmp(a, "--plaintext") == 0) {
                        o->plaintext = true;
                        continue;
                }
                if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                        usage(stdout);
                        exit(EXIT_OK);
                }
                if (!v) {
                        fprintf(stderr, "chapar-bench: %s needs a value\n", a);
                        return -EINVAL;
                }
                i++;
                if (strcmp(a, "--native") == 0) {
                        o->addr[FACE_NATIVE] = v;
                } else if (strcmp(a, "--http") == 0) {
                        o->addr[FACE_HTTP] = v;
                } else if (strcmp(a, "--pid") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > INT32_MAX;
                        o->pid = (long)x;
                } else if (strcmp(a, "--scenario") == 0) {
                        for (int k = 0; k < SCENARIOS; k++)
                                if (strcmp(v, scenario_names[k]) == 0)
                                        o->scenario = k;
                        bad = o->scenario < 0;
                } else if (strcmp(a, "--files") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > 1000000;
                        o->files = (unsigned)x;
                        files_set = true;
                } else if (strcmp(a, "--size") == 0) {
                        bad = parse_u64(v, true, &x) || x == 0 || x > ((uint64_t)64 << 30);
                        o->size = x;
                        size_set = true;
                } else if (strcmp(a, "--conns") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > 4096;
                        o->conns = (unsigned)x;
                        conns_set = true;
                } else if (strcmp(a, "--idle") == 0) {
                        bad = parse_u64(v, false, &x) || x > 1000000;
                        o->idle = (unsigned)x;
                } else if (strcmp(a, "--seconds") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > 86400;
                        o->seconds = (double)x;
                } else if (strcmp(a, "--chunk") == 0) {
                        bad = parse_u64(v, true, &x) || x < CHP_CHUNK_MIN || x > CHP_CHUNK_MAX ||
                              (x & (x - 1));
                        o->chunk = (uint32_t)x;
                } else if (strcmp(a, "--resume-delay") == 0) {
                        bad = parse_u64(v, false, &x) || x > 60000;
                        o->resume_delay_ms = (unsigned)x;
                } else if (strcmp(a, "--background") == 0) {
                        bad = parse_u64(v, false, &x) || x > 100000;
                        o->background = (unsigned)x;
                } else if (strcmp(a, "--flood") == 0) {
                        bad = parse_u64(v, false, &x) || x > 10000;
                        o->flood = (unsigned)x;
                } else if (strcmp(a, "--trickle-ms") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > 600000;
                        o->trickle_ms = (unsigned)x;
                } else if (strcmp(a, "--cut-percent") == 0) {
                        bad = parse_u64(v, false, &x) || x > 100;
                        o->cut_pct = (unsigned)x;
                } else if (strcmp(a, "--interval") == 0) {
                        bad = parse_u64(v, false, &x) || x == 0 || x > 86400;
                        o->interval = (double)x;
                } else if (strcmp(a, "--rate") == 0) {
                        bad = parse_u64(v, false, &x) || x > 1000000;
                        o->rate = (double)x;
                } else if (strcmp(a, "--rss-slack") == 0) {
                        bad = parse_u64(v, true, &x) || x > ((uint64_t)1 << 40);
                        o->rss_slack = x;
                } else if (strcmp(a, "--fd-slack") == 0) {
                        bad = parse_u64(v, false, &x) || x > 1000000;
                        o->fd_slack = (unsigned)x;
                } else if (strcmp(a, "--seed") == 0) {
                        bad = parse_u64(v, false, &x) || x > UINT32_MAX;
                        o->seed = (uint32_t)x;
                        seed_set = true;
                } else {
                        fprintf(stderr, "chapar-bench: unknown option %s\n", a);
                        return -EINVAL;
                }
                if (bad) {
                        fprintf(stderr, "chapar-bench: bad value for %s: %s\n", a, v);
                        return -EINVAL;
                }
        }
        if (o->scenario < 0) {
                fprintf(stderr, "chapar-bench: --scenario is required\n");
                return -EINVAL;
        }
        if (!o->addr[FACE_NATIVE] && !o->addr[FACE_HTTP]) {
                fprintf(stderr, "chapar-bench: give --native HOST:PORT and/or --http HOST:PORT\n");
                return -EINVAL;
        }
        if (!files_set)
                o->files = o->scenario == SC_MIX      ? 200
                           : o->scenario == SC_FANOUT ? 1
                           : o->scenario == SC_RESUME ? 16
                           : o->scenario == SC_SOAK   ? 40
                                                      : 64;
        if (!size_set)
                o->size = o->scenario == SC_MIX ? 0 : o->scenario == SC_SOAK ? 16u << 20 : 4u << 20;
        if (o->scenario == SC_SOAK && !o->pid) {
                fprintf(stderr, "chapar-bench: soak needs --pid of the relay (it watches its "
                                "memory and file descriptors)\n");
                return -EINVAL;
        }
        if (!conns_set)
                o->conns = o->scenario == SC_FANOUT ? 100 : 4;
        if (o->scenario == SC_RESUME && o->size < 2) {
                fprintf(stderr, "chapar-bench: resume needs --size of at least 2 bytes\n");
                return -EINVAL;
        }
        if (!seed_set) { /* a fresh seed: a relay that kept an earlier run's files dedups none */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t s =
                    (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
                o->seed = (uint32_t)splitmix(&s);
        }
        return 0;
}

/* Raises RLIMIT_NOFILE to its hard limit; checks the idle scenario fits in it. */
static int raise_nofile(const struct opts *o)
{
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
                return 0;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
                getrlimit(RLIMIT_NOFILE, &rl);
        }
        uint64_t need = (o->scenario == SC_IDLE ? (uint64_t)o->idle : 0) +
                        (o->scenario == SC_SOAK ? (uint64_t)o->background : 0) + o->conns + 64;
        if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
                fprintf(stderr,
                        "chapar-bench: %llu file descriptors needed, the limit is %llu (raise "
                        "the hard limit: ulimit -Hn, or fewer --idle/--conns)\n",
                        (unsigned long long)need, (unsigned long long)rl.rlim_cur);
                return -EMFILE;
        }
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o;
        if (parse_args(argc, argv, &o)) {
                usage(stderr);
                return EXIT_USAGE;
        }
        signal(SIGPIPE, SIG_IGN); /* a relay that closes mid-write is an error, not a signal */
        if (raise_nofile(&o))
                return EXIT_USAGE;
        struct report *rep = calloc(1, sizeof(*rep));
        if (!rep) {
                fprintf(stderr, "chapar-bench: out of memory\n");
                return EXIT_LOCAL;
        }
        int rc = 0;
        if (o.scenario == SC_SOAK)
                rc = scenario_soak(&o, rep);
        for (int f = 0; f < FACES && !rc && o.scenario != SC_SOAK; f++)
                if (o.addr[f])
                        rc = run_face(&o, (enum face)f, rep, 0);
        /* a soak's curve is its evidence: printed whether or not the soak passed */
        if (!rc || (o.scenario == SC_SOAK && rep->soak.ns)) {
                if (o.json)
                        print_json(&o, rep);
                else
                        print_table(&o, rep);
        }
        for (unsigned i = 0; i < rep->nruns; i++) {
                samples_free(&rep->runs[i].up);
                samples_free(&rep->runs[i].down);
        }
        for (int f = 0; f < FACES; f++) {
                samples_free(&rep->soak.total[f].up);
                samples_free(&rep->soak.total[f].down);
        }
        samples_free(&rep->soak.t);
        samples_free(&rep->soak.ms);
        samples_free(&rep->soak.bytes);
        free(rep->soak.s);
        free(rep);
        return rc;
}
