/* accesslog.c — the access log's formatting and its writer thread (see accesslog.h).
 *
 *   loop threads: format on the stack --mutex, memcpy--> buf  (signal when it was empty, and
 *                 when it passes BATCH_BYTES)
 *   writer:       wait for a first line, then up to BATCH_MS for more (or BATCH_BYTES)
 *                 --swap buf and spare--> write(2) spare whole, outside the mutex
 *                 a reopen request: what was buffered goes to the old file, then open afresh
 * Batching matters: a write(2) and a wake-up per line cost a busy relay more than the
 * formatting (a third of a small-file download's CPU, measured); one per 50 ms costs nothing.
 */
#include "accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

#define BUF_BYTES   (1u << 20)  /* lines the loops may queue ahead of the disk */
#define BATCH_BYTES (64u << 10) /* written at once when this much is waiting... */
#define BATCH_MS    50          /* ...else what came within this long of the first line */

struct chp_alog {
        char *path; /* NULL: stderr */
        enum chp_log_format fmt;
        int fd; /* the writer's; STDERR_FILENO for "-" */
        pthread_mutex_t mu;
        pthread_cond_t cv;
        char *buf, *spare; /* loops fill buf; the writer writes spare */
        size_t len;
        bool stop, reopen;
        pthread_t writer;
        atomic_uint_fast64_t dropped;
};

static int open_file(const char *path)
{
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        return fd < 0 ? -errno : fd;
}

/* Writes n bytes whole (O_APPEND: each write lands at the end); false when the file refused. */
static bool write_all(int fd, const char *p, size_t n)
{
        while (n) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                p += w;
                n -= (size_t)w;
        }
        return true;
}

static size_t count_lines(const char *p, size_t n)
{
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                k += p[i] == '\n';
        return k;
}

static void *writer_main(void *arg)
{
        struct chp_alog *a = arg;
        bool failed = false; /* logged once until a write succeeds again */
        for (;;) {
                pthread_mutex_lock(&a->mu);
                while (!a->len && !a->reopen && !a->stop)
                        pthread_cond_wait(&a->cv, &a->mu);
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_nsec += BATCH_MS * 1000000L;
                if (until.tv_nsec >= 1000000000L) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000L;
                }
                while (a->len < BATCH_BYTES && !a->reopen && !a->stop)
                        if (pthread_cond_timedwait(&a->cv, &a->mu, &until) == ETIMEDOUT)
                                break;
                char *out = a->buf;
                size_t n = a->len;
                a->buf = a->spare;
                a->spare = out;
                a->len = 0;
                bool reopen = a->reopen, stop = a->stop;
                a->reopen = false;
                pthread_mutex_unlock(&a->mu);
                if (n && !write_all(a->fd, out, n)) {
                        atomic_fetch_add(&a->dropped, count_lines(out, n));
                        if (!failed)
                                chp_log_error("accesslog", "cannot write the access log: %s",
                                              strerror(errno));
                        failed = true;
                } else if (n) {
                        failed = false;
                }
                if (reopen && a->path) {
                        int fd = open_file(a->path);
                        if (fd < 0) {
                                chp_log_error("accesslog",
                                              "reopening %s: %s; still writing to "
                                              "the file open before",
                                              a->path, strerror(-fd));
                        } else {
                                close(a->fd);
                                a->fd = fd;
                        }
                }
                if (stop && !n)
                        return NULL;
        }
}

int chp_alog_open(const char *path, enum chp_log_format fmt, struct chp_alog **out)
{
        *out = NULL;
        struct chp_alog *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->fmt = fmt;
        a->fd = -1;
        int rc = -ENOMEM;
        a->buf = malloc(BUF_BYTES);
        a->spare = malloc(BUF_BYTES);
        if (!a->buf || !a->spare)
                goto fail;
        if (strcmp(path, "-") == 0) {
                a->fd = STDERR_FILENO;
        } else {
                if (!(a->path = strdup(path)))
                        goto fail;
                if ((rc = open_file(path)) < 0)
                        goto fail;
                a->fd = rc;
        }
        pthread_mutex_init(&a->mu, NULL);
        chp_net_cond_init(&a->cv);
        if ((rc = -pthread_create(&a->writer, NULL, writer_main, a)) != 0) {
                pthread_cond_destroy(&a->cv);
                pthread_mutex_destroy(&a->mu);
                goto fail;
        }
        *out = a;
        return 0;
fail:
        if (a->path && a->fd >= 0)
                close(a->fd);
        free(a->path);
        free(a->buf);
        free(a->spare);
        free(a);
        return rc;
}

void chp_alog_close(struct chp_alog *a)
{
        if (!a)
                return;
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->writer, NULL);
        if (a->path)
                close(a->fd);
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
        free(a->path);
        free(a->buf);
        free(a->spare);
        free(a);
}

void chp_alog_reopen(struct chp_alog *a)
{
        if (!a)
                return;
        pthread_mutex_lock(&a->mu);
        a->reopen = true;
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
}

uint64_t chp_alog_dropped(const struct chp_alog *a)
{
        return a ? atomic_load(&((struct chp_alog *)a)->dropped) : 0;
}

/* ---- formatting -------------------------------------------------------------------------- */

struct line {
        char b[CHP_ALOG_LINE_MAX];
        size_t n;
        bool json, first;
};

static void raw(struct line *l, const char *s, size_t n)
{
        if (n > sizeof(l->b) - 2 - l->n) /* room for the closing brace and the newline */
                n = sizeof(l->b) - 2 - l->n;
        memcpy(l->b + l->n, s, n);
        l->n += n;
}

static void key(struct line *l, const char *k)
{
        if (l->json) {
                raw(l, l->first ? "\"" : ",\"", l->first ? 1 : 2);
                raw(l, k, strlen(k));
                raw(l, "\":", 2);
        } else {
                if (!l->first)
                        raw(l, " ", 1);
                raw(l, k, strlen(k));
                raw(l, "=", 1);
        }
        l->first = false;
}

/* logfmt: bare when the value has nothing but printable ASCII other than space, '=', '"' and
 * '\\'; else quoted, with '"' and '\\' escaped and every other byte outside printable ASCII as
 * \u00XX (the escape Go's logfmt readers and JSON share). JSON: always a string. At most max
 * bytes of the value are written (max <= 512; a value cut short ends in "..."), so that the
 * line, escapes and all, always fits CHP_ALOG_LINE_MAX and is never cut mid-value. */
static void str(struct line *l, const char *k, const char *v, size_t n, size_t max)
{
        key(l, k);
        if (!v)
                n = 0;
        bool cut = n > max;
        if (cut)
                n = max;
        bool quote = l->json || n == 0;
        for (size_t i = 0; i < n && !quote; i++) {
                unsigned char ch = (unsigned char)v[i];
                quote = ch <= ' ' || ch >= 0x7f || ch == '=' || ch == '"' || ch == '\\';
        }
        if (!quote) {
                raw(l, v, n);
                return;
        }
        if (!l->json && n == 0)
                return; /* logfmt: key= is the empty value */
        char esc[6 * 512 + 8];
        size_t e = chp_log_json_escape(v, n, esc, sizeof(esc));
        raw(l, "\"", 1);
        raw(l, esc, e);
        if (cut)
                raw(l, "...", 3);
        raw(l, "\"", 1);
}

static void cstr(struct line *l, const char *k, const char *v)
{
        str(l, k, v, v ? strlen(v) : 0, 128);
}

static void num(struct line *l, const char *k, uint64_t v)
{
        char t[24];
        int n = snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
        key(l, k);
        raw(l, t, (size_t)n);
}

void chp_alog_write(struct chp_alog *a, const struct chp_alog_entry *e)
{
        if (!a)
                return;
        struct line l;
        l.n = 0;
        l.json = a->fmt == CHP_LOG_JSON;
        l.first = true;
        if (l.json)
                raw(&l, "{", 1);
        char when[CHP_LOG_TIME_MAX];
        chp_log_time(when);
        cstr(&l, "time", when);
        cstr(&l, "face", e->face);
        cstr(&l, "addr", e->addr);
        cstr(&l, "tenant", e->tenant);
        cstr(&l, "subject", e->subject);
        cstr(&l, "method", e->method);
        str(&l, "path", e->path, e->path_len, 512);
        cstr(&l, "id", e->id);
        num(&l, "bytes_in", e->bytes_in);
        num(&l, "bytes_out", e->bytes_out);
        /* a number in JSON when it is one (an HTTP status, a wire error code), else "ok" */
        const char *st = e->status ? e->status : "";
        bool digits = *st != '\0' && strspn(st, "0123456789") == strlen(st) && strlen(st) < 10;
        if (l.json && digits)
                num(&l, "status", strtoull(st, NULL, 10));
        else
                cstr(&l, "status", st);
        char dur[32];
        int dn = snprintf(dur, sizeof(dur), "%llu.%06llu",
                          (unsigned long long)(e->duration_us / 1000000),
                          (unsigned long long)(e->duration_us % 1000000));
        key(&l, "duration");
        raw(&l, dur, (size_t)dn);
        if (e->chunks_in || e->chunks_out || (e->method && strcmp(e->method, "SESSION") == 0)) {
                num(&l, "chunks_in", e->chunks_in);
                num(&l, "chunks_out", e->chunks_out);
        }
        if (e->name_len)
                str(&l, "name", e->name, e->name_len, 128);
        if (e->agent_len)
                str(&l, "agent", e->agent, e->agent_len, 128);
        if (l.json)
                l.b[l.n++] = '}';
        l.b[l.n++] = '\n';

        pthread_mutex_lock(&a->mu);
        size_t before = a->len;
        bool fits = a->len + l.n <= BUF_BYTES;
        if (fits) {
                memcpy(a->buf + a->len, l.b, l.n);
                a->len += l.n;
        }
        /* the writer is woken by the first line after it emptied the buffer (it then waits
         * BATCH_MS for more) and by the line that makes a batch: the rest ride along */
        if (fits && (before == 0 || (before < BATCH_BYTES && a->len >= BATCH_BYTES)))
                pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
        if (!fits)
                atomic_fetch_add(&a->dropped, 1);
}

void chp_alog_peer_addr(int fd, char out[CHP_ALOG_ADDR_MAX])
{
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char ip[INET6_ADDRSTRLEN];
        out[0] = '\0';
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
                return;
        if (ss.ss_family == AF_INET) {
                const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
                if (inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip)))
                        snprintf(out, CHP_ALOG_ADDR_MAX, "%s:%u", ip, ntohs(s4->sin_port));
        } else if (ss.ss_family == AF_INET6) {
                const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
                if (inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip)))
                        snprintf(out, CHP_ALOG_ADDR_MAX, "[%s]:%u", ip, ntohs(s6->sin6_port));
        }
}
