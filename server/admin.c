/* admin.c — the admin face (admin.h): listeners, one request per connection, the handlers, the
 * status page and the live scrub's thread.
 */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "err.h"
#include "hash.h"
#include "http_parse.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "net.h"
#include "peer.h"
#include "store.h"

#define ADMIN_IO_TIMEOUT_S 5
#define ADMIN_HEAD_MAX     8192
#define ADMIN_PAGE_DEFAULT 100
#define SCRUB_RATE_DEFAULT (64ull << 20) /* bytes/s: a fraction of a disk's read rate */
#define SCRUB_PROBLEMS_MAX 20            /* problems the face keeps to report */
#define RATE_SAMPLES       10            /* seconds of throughput history */

struct scrub_run {
        pthread_t thread;
        bool started; /* a thread exists (joined before the next) */
        atomic_bool running;
        struct chp_scrub p;
        uint64_t rate;
        time_t began, ended;
        int rc;
        pthread_mutex_t lock; /* problems */
        char problems[SCRUB_PROBLEMS_MAX][160];
        unsigned nproblems;
};

struct chp_admin {
        struct chp_shared *sh;
        int unix_fd, tcp_fd, wake[2];
        char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        bool has_key;
        uint8_t key[CHP_ADMIN_KEY_BYTES];
        time_t started;
        pthread_t thread;
        bool thread_started;
        atomic_bool stopping;
        struct scrub_run scrub;
        /* throughput: bytes moved (all faces) sampled once a second, a ring */
        uint64_t samples[RATE_SAMPLES];
        double sample_at[RATE_SAMPLES];
        unsigned nsamples, next_sample;
};

/* ---- a growing response body ------------------------------------------------------------- */

struct buf {
        char *p;
        size_t n, cap;
        bool failed; /* out of memory: the request gets a 500 */
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
        if (b->failed)
                return;
        for (;;) {
                va_list ap;
                va_start(ap, fmt);
                int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
                va_end(ap);
                if (w < 0) {
                        b->failed = true;
                        return;
                }
                if (b->p && b->n + (size_t)w < b->cap) {
                        b->n += (size_t)w;
                        return;
                }
                size_t cap = b->cap ? b->cap * 2 : 4096;
                while (cap < b->n + (size_t)w + 1)
                        cap *= 2;
                char *np = realloc(b->p, cap);
                if (!np) {
                        b->failed = true;
                        return;
                }
                b->p = np;
                b->cap = cap;
        }
}

/* A string for JSON or HTML: only characters that need no escaping pass; others become '?'.
 * What the face prints (tenant names, problems, peer names) is ours or checked, so this only
 * keeps a surprise from breaking the document. */
static const char *safe(const char *s, char *out, size_t cap)
{
        size_t i = 0;
        for (; s[i] && i + 1 < cap; i++) {
                unsigned char c = (unsigned char)s[i];
                out[i] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' ||
                          c == '&')
                             ? '?'
                             : (char)c;
        }
        out[i] = '\0';
        return out;
}

/* ---- requests ------------------------------------------------------------------------------ */

struct req {
        struct chp_admin *a;
        const struct chp_http_request *h;
        char path[256];
        char query[512];
        bool text;      /* ?format=text */
        bool bad_query; /* a parameter did not decode (query_get) */
        int status;
        const char *type; /* Content-Type */
        struct buf body;
};

/* The value of query parameter name, percent-decoded into out; false when absent, or when bad
 * (a broken %-escape, a NUL, longer than cap): then r->bad_query is set and the request gets
 * 400 whatever the handler did. */
static bool query_get(struct req *r, const char *name, char *out, size_t cap)
{
        struct chp_http_str q = {r->query, strlen(r->query)}, v;
        if (!chp_http_query_param(q, name, &v))
                return false;
        ssize_t n = cap ? chp_http_pct_decode(v.p, v.n, true, out, cap - 1) : -ENOBUFS;
        if (n < 0) {
                r->bad_query = true;
                return false;
        }
        out[n] = '\0';
        return true;
}

__attribute__((format(printf, 3, 4))) static void fail(struct req *r, int status, const char *fmt,
                                                       ...)
{
        char msg[300], s[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        r->status = status;
        r->body.n = 0;
        if (r->text)
                put(&r->body, "error: %s\n", msg);
        else
                put(&r->body, "{\"error\":\"%s\"}\n", safe(msg, s, sizeof(s)));
}

static bool parse_id(const char *hex, uint8_t id[CHP_HASH_BYTES])
{
        return strlen(hex) == 2 * CHP_HASH_BYTES &&
               chp_hex_decode(hex, strlen(hex), id, CHP_HASH_BYTES) == 0;
}

/* The page parameters: tenant (absent: every tenant), limit, cursor. false: r answered 400. */
static bool page_params(struct req *r, char *tenant, bool *has_tenant, size_t *limit,
                        uint8_t cursor[CHP_LIST_CURSOR_BYTES], bool *has_cursor)
{
        char v[2 * CHP_LIST_CURSOR_BYTES + 1];
        *has_tenant = query_get(r, "tenant", tenant, CHP_TENANT_MAX + 1);
        if (r->bad_query)
                return false;
        *limit = ADMIN_PAGE_DEFAULT;
        if (query_get(r, "limit", v, sizeof(v))) {
                char *end;
                unsigned long n = strtoul(v, &end, 10);
                if (*end || !v[0] || n == 0 || n > CHP_LIST_MAX) {
                        fail(r, 400, "limit: a number from 1 to %d", CHP_LIST_MAX);
                        return false;
                }
                *limit = n;
        }
        *has_cursor = false;
        if (query_get(r, "cursor", v, sizeof(v))) {
                if (strlen(v) != 2 * CHP_LIST_CURSOR_BYTES ||
                    chp_hex_decode(v, strlen(v), cursor, CHP_LIST_CURSOR_BYTES) != 0) {
                        fail(r, 400, "cursor: the \"next\" of the page before (80 hex digits)");
                        return false;
                }
                *has_cursor = true;
        }
        return true;
}

static void put_next(struct req *r, bool more, const uint8_t next[CHP_LIST_CURSOR_BYTES])
{
        char hex[2 * CHP_LIST_CURSOR_BYTES + 1] = "";
        if (more)
                chp_hex_encode(next, CHP_LIST_CURSOR_BYTES, hex);
        if (r->text) {
                if (more)
                        put(&r->body, "more: --cursor %s\n", hex);
        } else {
                put(&r->body, "],\"next\":%s%s%s}\n", more ? "\"" : "", more ? hex : "null",
                    more ? "\"" : "");
        }
}

static void get_files(struct req *r)
{
        char tenant[CHP_TENANT_MAX + 1], id[CHP_HASH_HEXBYTES], t[CHP_TENANT_MAX + 1];
        bool has_tenant, has_cursor, more;
        size_t limit, n;
        uint8_t cursor[CHP_LIST_CURSOR_BYTES], next[CHP_LIST_CURSOR_BYTES];
        if (!page_params(r, tenant, &has_tenant, &limit, cursor, &has_cursor))
                return;
        struct chp_file_entry *e = calloc(limit, sizeof(*e));
        if (!e) {
                fail(r, 500, "out of memory");
                return;
        }
        int rc = chp_store_files_list(r->a->sh->store, has_tenant ? tenant : NULL,
                                      has_cursor ? cursor : NULL, e, limit, &n, &more, next);
        if (rc) {
                free(e);
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        if (!r->text)
                put(&r->body, "{\"files\":[");
        for (size_t i = 0; i < n; i++) {
                chp_hex_encode(e[i].id, CHP_HASH_BYTES, id);
                safe(e[i].info.tenant, t, sizeof(t));
                if (r->text)
                        put(&r->body, "%s  %-16s %12llu bytes  created %llu  expires %llu\n", id,
                            t[0] ? t : "-", (unsigned long long)e[i].info.size,
                            (unsigned long long)e[i].info.created,
                            (unsigned long long)e[i].info.expires);
                else
                        put(&r->body,
                            "%s{\"id\":\"%s\",\"tenant\":\"%s\",\"size\":%llu,\"created\":%llu,"
                            "\"expires\":%llu}",
                            i ? "," : "", id, t, (unsigned long long)e[i].info.size,
                            (unsigned long long)e[i].info.created,
                            (unsigned long long)e[i].info.expires);
        }
        free(e);
        if (r->text && n == 0)
                put(&r->body, "no files\n");
        put_next(r, more, next);
}

static void get_uploads(struct req *r)
{
        char tenant[CHP_TENANT_MAX + 1], id[2 * CHP_UPLOAD_ID_BYTES + 1], t[CHP_TENANT_MAX + 1];
        bool has_tenant, has_cursor, more;
        size_t limit, n;
        uint8_t cursor[CHP_LIST_CURSOR_BYTES], next[CHP_LIST_CURSOR_BYTES];
        if (!page_params(r, tenant, &has_tenant, &limit, cursor, &has_cursor))
                return;
        struct chp_upload *u = calloc(limit, sizeof(*u));
        if (!u) {
                fail(r, 500, "out of memory");
                return;
        }
        int rc = chp_store_uploads_list(r->a->sh->store, has_tenant ? tenant : NULL,
                                        has_cursor ? cursor : NULL, u, limit, &n, &more, next);
        if (rc) {
                free(u);
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        if (!r->text)
                put(&r->body, "{\"uploads\":[");
        for (size_t i = 0; i < n; i++) {
                chp_hex_encode(u[i].id, CHP_UPLOAD_ID_BYTES, id);
                safe(u[i].tenant, t, sizeof(t));
                long long size = u[i].declared_size == CHP_UPLOAD_SIZE_UNKNOWN
                                     ? -1
                                     : (long long)u[i].declared_size;
                if (r->text)
                        put(&r->body, "%s  %-16s %12lld bytes  created %llu  expires %llu%s\n", id,
                            t[0] ? t : "-", size, (unsigned long long)u[i].created,
                            (unsigned long long)u[i].expires, u[i].complete ? "  complete" : "");
                else
                        put(&r->body,
                            "%s{\"id\":\"%s\",\"tenant\":\"%s\",\"size\":%lld,\"created\":%llu,"
                            "\"expires\":%llu,\"complete\":%s}",
                            i ? "," : "", id, t, size, (unsigned long long)u[i].created,
                            (unsigned long long)u[i].expires, u[i].complete ? "true" : "false");
        }
        free(u);
        if (r->text && n == 0)
                put(&r->body, "no uploads\n");
        put_next(r, more, next);
}

struct tenant_walk {
        struct req *r;
        unsigned n;
        bool html; /* rows of the status page */
};

static int put_tenant(void *ctx, const char *tenant, const struct chp_tenant_usage *u)
{
        struct tenant_walk *w = ctx;
        char t[CHP_TENANT_MAX + 1];
        safe(tenant, t, sizeof(t));
        if (w->html)
                put(&w->r->body,
                    "<tr><td>%s</td><td class=\"files\">%llu</td><td class=\"bytes\">%llu</td>"
                    "<td>%llu</td></tr>",
                    t, (unsigned long long)u->files, (unsigned long long)u->stored_bytes,
                    (unsigned long long)u->incomplete);
        else if (w->r->text)
                put(&w->r->body,
                    "%-16s %8llu files %14llu bytes  %llu uploads incomplete (%llu bytes)\n", t,
                    (unsigned long long)u->files, (unsigned long long)u->stored_bytes,
                    (unsigned long long)u->incomplete, (unsigned long long)u->incomplete_bytes);
        else
                put(&w->r->body,
                    "%s{\"tenant\":\"%s\",\"files\":%llu,\"stored_bytes\":%llu,\"incomplete\":%llu,"
                    "\"incomplete_bytes\":%llu}",
                    w->n ? "," : "", t, (unsigned long long)u->files,
                    (unsigned long long)u->stored_bytes, (unsigned long long)u->incomplete,
                    (unsigned long long)u->incomplete_bytes);
        w->n++;
        return 0;
}

static void get_stats(struct req *r)
{
        struct chp_store_stats st;
        /* without the store's counts (a pool that cannot be listed now) the tenants still show */
        int src = chp_store_stats_counted(r->a->sh->store, &st), rc;
        struct tenant_walk w = {r, 0, false};
        if (!r->text)
                put(&r->body, "{\"tenants\":[");
        if ((rc = chp_store_tenants_each(r->a->sh->store, put_tenant, &w))) {
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        if (src && r->text)
                put(&r->body, "store: counts unavailable (%s)\n", chp_strerror(src));
        else if (src)
                put(&r->body, "],\"store\":{\"error\":\"%s\"}}\n", chp_strerror(src));
        else if (r->text)
                put(&r->body, "store: %llu files, %llu uploads, %llu chunks, %llu live bytes\n",
                    (unsigned long long)st.files, (unsigned long long)st.uploads,
                    (unsigned long long)st.chunks, (unsigned long long)st.live_bytes);
        else
                put(&r->body,
                    "],\"store\":{\"files\":%llu,\"uploads\":%llu,\"chunks\":%llu,"
                    "\"live_bytes\":%llu,\"segment_bytes\":%llu}}\n",
                    (unsigned long long)st.files, (unsigned long long)st.uploads,
                    (unsigned long long)st.chunks, (unsigned long long)st.live_bytes,
                    (unsigned long long)st.segment_bytes);
}

static void file_delete(struct req *r, const char *hex)
{
        struct chp_store_req q = {.type = CHP_REQ_FILE_DELETE};
        if (!parse_id(hex, q.u.file_delete.file_id)) {
                fail(r, 400, "a file id is 64 hex digits");
                return;
        }
        int rc = chp_store_run(r->a->sh->store, &q);
        if (rc == -ENOENT) {
                fail(r, 404, "no such file");
                return;
        }
        if (rc) {
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        chp_log_info("admin", "file %s deleted by the operator", hex);
        if (r->text)
                put(&r->body, "deleted %s\n", hex);
        else
                put(&r->body, "{\"deleted\":\"%s\"}\n", hex);
}

static void quarantine(struct req *r, const char *hex, bool lift)
{
        struct chp_store_req q = {.type = CHP_REQ_QUARANTINE};
        if (!parse_id(hex, q.u.quarantine.file_id)) {
                fail(r, 400, "a file id is 64 hex digits");
                return;
        }
        q.u.quarantine.lift = lift;
        int rc = chp_store_run(r->a->sh->store, &q);
        if (rc == -ENOENT && lift) {
                fail(r, 404, "not quarantined");
                return;
        }
        if (rc) {
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        chp_log_info("admin", "file %s %s by the operator%s", hex,
                     lift ? "taken off the quarantine list" : "quarantined",
                     q.u.quarantine.deleted ? " (its stored copy deleted)" : "");
        if (r->text)
                put(&r->body, "%s %s%s\n", lift ? "unquarantined" : "quarantined", hex,
                    q.u.quarantine.deleted ? " (stored copy deleted)" : "");
        else
                put(&r->body, "{\"%s\":\"%s\",\"deleted\":%s}\n",
                    lift ? "unquarantined" : "quarantined", hex,
                    q.u.quarantine.deleted ? "true" : "false");
}

static int put_quarantined(void *ctx, const uint8_t id[CHP_HASH_BYTES], uint64_t since)
{
        struct tenant_walk *w = ctx;
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(id, CHP_HASH_BYTES, hex);
        if (w->r->text)
                put(&w->r->body, "%s  since %llu\n", hex, (unsigned long long)since);
        else
                put(&w->r->body, "%s{\"id\":\"%s\",\"since\":%llu}", w->n ? "," : "", hex,
                    (unsigned long long)since);
        w->n++;
        return 0;
}

static void get_quarantine(struct req *r)
{
        struct tenant_walk w = {r, 0, false};
        if (!r->text)
                put(&r->body, "{\"quarantined\":[");
        int rc = chp_store_quarantine_each(r->a->sh->store, put_quarantined, &w);
        if (rc) {
                fail(r, 500, "%s", chp_strerror(rc));
                return;
        }
        if (!r->text)
                put(&r->body, "]}\n");
}

/* ---- the live scrub ------------------------------------------------------------------------ */

static void scrub_problem(void *ctx, const char *problem)
{
        struct scrub_run *s = ctx;
        chp_log_warn("admin", "verify: %s", problem);
        pthread_mutex_lock(&s->lock);
        if (s->nproblems < SCRUB_PROBLEMS_MAX)
                snprintf(s->problems[s->nproblems++], sizeof(s->problems[0]), "%s", problem);
        pthread_mutex_unlock(&s->lock);
}

static void *scrub_main(void *arg)
{
        struct chp_admin *a = arg;
        struct scrub_run *s = &a->scrub;
        s->rc = chp_store_scrub(a->sh->store, s->rate, &s->p, scrub_problem, s);
        s->ended = time(NULL);
        chp_log_info("admin", "verify: %llu chunks (%llu bytes) read back, %llu problems%s",
                     (unsigned long long)atomic_load(&s->p.chunks),
                     (unsigned long long)atomic_load(&s->p.bytes),
                     (unsigned long long)atomic_load(&s->p.problems),
                     s->rc ? ", stopped by an error" : "");
        atomic_store(&s->running, false);
        return NULL;
}

static void verify_status(struct req *r)
{
        struct scrub_run *s = &r->a->scrub;
        bool running = atomic_load(&s->running);
        const char *state = running ? "running" : s->started ? "done" : "never";
        unsigned long long chunks = atomic_load(&s->p.chunks), total = atomic_load(&s->p.total),
                           bytes = atomic_load(&s->p.bytes), problems = atomic_load(&s->p.problems);
        pthread_mutex_lock(&s->lock);
        if (r->text) {
                put(&r->body,
                    "verify: %s, %llu of %llu chunks (%llu bytes) read back, %llu problems\n",
                    state, chunks, total, bytes, problems);
                for (unsigned i = 0; i < s->nproblems; i++)
                        put(&r->body, "problem: %s\n", s->problems[i]);
                if (!running && s->started && s->rc)
                        put(&r->body, "error: %s\n", chp_strerror(s->rc));
        } else {
                put(&r->body,
                    "{\"state\":\"%s\",\"chunks\":%llu,\"total\":%llu,\"bytes\":%llu,"
                    "\"problems\":%llu,\"rate\":%llu,\"started\":%lld,\"ended\":%lld,\"error\":",
                    state, chunks, total, bytes, problems, (unsigned long long)s->rate,
                    (long long)s->began, (long long)(running ? 0 : s->ended));
                if (!running && s->started && s->rc)
                        put(&r->body, "\"%s\"", chp_strerror(s->rc));
                else
                        put(&r->body, "null");
                put(&r->body, ",\"found\":[");
                char m[160];
                for (unsigned i = 0; i < s->nproblems; i++)
                        put(&r->body, "%s\"%s\"", i ? "," : "", safe(s->problems[i], m, sizeof(m)));
                put(&r->body, "]}\n");
        }
        pthread_mutex_unlock(&s->lock);
}

static void verify_start(struct req *r)
{
        struct scrub_run *s = &r->a->scrub;
        uint64_t rate = SCRUB_RATE_DEFAULT;
        char v[32];
        if (query_get(r, "rate", v, sizeof(v))) {
                char *end;
                unsigned long long n = strtoull(v, &end, 10);
                if (*end || !v[0]) {
                        fail(r, 400, "rate: bytes per second (0: unthrottled)");
                        return;
                }
                rate = n;
        }
        if (r->bad_query)
                return;
        if (atomic_load(&s->running)) {
                fail(r, 409, "a verify is running: see GET /verify");
                return;
        }
        if (s->started)
                pthread_join(s->thread, NULL);
        s->started = false;
        memset(&s->p, 0, sizeof(s->p));
        s->nproblems = 0;
        s->rate = rate;
        s->rc = 0;
        s->began = time(NULL);
        s->ended = 0;
        atomic_store(&s->running, true);
        if (pthread_create(&s->thread, NULL, scrub_main, r->a) != 0) {
                atomic_store(&s->running, false);
                fail(r, 500, "cannot start a thread");
                return;
        }
        s->started = true;
        chp_log_info("admin", "verify started by the operator (%llu bytes/s)",
                     (unsigned long long)rate);
        r->status = 202;
        verify_status(r);
}

/* ---- the status page ----------------------------------------------------------------------- */

static uint64_t bytes_moved(const struct chp_metrics *m)
{
        return atomic_load(&m->bytes_in) + atomic_load(&m->bytes_out) +
               atomic_load(&m->http_bytes_in) + atomic_load(&m->http_bytes_out);
}

static double now_mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sample(struct chp_admin *a)
{
        a->samples[a->next_sample] = bytes_moved(a->sh->metrics);
        a->sample_at[a->next_sample] = now_mono();
        a->next_sample = (a->next_sample + 1) % RATE_SAMPLES;
        if (a->nsamples < RATE_SAMPLES)
                a->nsamples++;
}

/* Bytes per second over the samples kept (up to RATE_SAMPLES seconds), to now. */
static double throughput(struct chp_admin *a)
{
        if (!a->nsamples)
                return 0;
        unsigned oldest = a->nsamples < RATE_SAMPLES ? 0 : a->next_sample;
        double dt = now_mono() - a->sample_at[oldest];
        uint64_t db = bytes_moved(a->sh->metrics) - a->samples[oldest];
        return dt > 0.5 ? (double)db / dt : 0;
}

static void status(struct req *r, bool html)
{
        struct chp_admin *a = r->a;
        struct chp_shared *sh = a->sh;
        const struct chp_metrics *m = sh->metrics;
        struct chp_store_stats st = {0};
        /* without the store's counts (a pool that cannot be listed now) the rest still shows */
        int rc = chp_store_stats_counted(sh->store, &st);
        char counts[160];
        if (rc)
                snprintf(counts, sizeof(counts), "unavailable (%s)", chp_strerror(rc));
        else
                snprintf(counts, sizeof(counts),
                         "%llu files, %llu uploads, %llu chunks, %llu live bytes",
                         (unsigned long long)st.files, (unsigned long long)st.uploads,
                         (unsigned long long)st.chunks, (unsigned long long)st.live_bytes);
        long long uptime = (long long)(time(NULL) - a->started);
        double bps = throughput(a);
        unsigned long long conns = atomic_load(&sh->conns),
                           uploads = atomic_load(&m->uploads_active),
                           requests = atomic_load(&m->http_requests),
                           in = atomic_load(&m->bytes_in) + atomic_load(&m->http_bytes_in),
                           out = atomic_load(&m->bytes_out) + atomic_load(&m->http_bytes_out);
        if (html) {
                r->type = "text/html; charset=utf-8";
                put(&r->body,
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>chapard "
                    "status</title>"
                    "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 12px;"
                    "text-align:left}th{background:#eee}</style></head><body>"
                    "<h1>chapard status</h1><table id=\"overview\">"
                    "<tr><th>uptime</th><td id=\"uptime\">%lld s</td></tr>"
                    "<tr><th>throughput</th><td id=\"throughput\">%.0f bytes/s</td></tr>"
                    "<tr><th>connections now</th><td id=\"connections\">%llu</td></tr>"
                    "<tr><th>uploads now</th><td id=\"uploads\">%llu</td></tr>"
                    "<tr><th>HTTP requests</th><td id=\"requests\">%llu</td></tr>"
                    "<tr><th>bytes in / out</th><td id=\"bytes\">%llu / %llu</td></tr>"
                    "<tr><th>store</th><td id=\"store\">%s</td></tr></table>",
                    uptime, bps, conns, uploads, requests, in, out, counts);
                put(&r->body, "<h2>Store usage by tenant</h2><table id=\"tenants\"><tr><th>tenant"
                              "</th><th>files</th><th>bytes</th><th>incomplete uploads</th></tr>");
        } else {
                put(&r->body,
                    "{\"uptime\":%lld,\"throughput\":%.0f,\"connections\":%llu,\"uploads\":%llu,"
                    "\"http_requests\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,",
                    uptime, bps, conns, uploads, requests, in, out);
                if (rc)
                        put(&r->body, "\"store\":{\"error\":\"%s\"},", chp_strerror(rc));
                else
                        put(&r->body,
                            "\"store\":{\"files\":%llu,\"uploads\":%llu,\"chunks\":%llu,"
                            "\"live_bytes\":%llu},",
                            (unsigned long long)st.files, (unsigned long long)st.uploads,
                            (unsigned long long)st.chunks, (unsigned long long)st.live_bytes);
                put(&r->body, "\"tenants\":[");
        }
        struct tenant_walk w = {r, 0, html};
        /* a walk that fails midway keeps the tenants shown so far: the peers still show */
        if ((rc = chp_store_tenants_each(sh->store, put_tenant, &w)) && html)
                put(&r->body,
                    "<tr><td colspan=\"4\" id=\"tenants-error\">unavailable (%s)</td></tr>",
                    chp_strerror(rc));
        char name[128], addr[128];
        struct chp_peer_stat *ps = calloc(CHP_MAX_PEERS, sizeof(*ps));
        size_t np = ps ? chp_peers_stats(sh->peers, ps, CHP_MAX_PEERS) : 0;
        if (html) {
                put(&r->body, "</table><h2>Peers</h2><table id=\"peers\"><tr><th>peer</th>"
                              "<th>address</th><th>state</th><th>fetches done</th><th>not found"
                              "</th><th>failed or timed out</th><th>offers sent</th><th>last "
                              "fetch</th></tr>");
                for (size_t i = 0; i < np; i++) {
                        const struct chp_peer_stat *p = &ps[i];
                        char last[96] = "none";
                        if (p->last_fetch)
                                snprintf(last, sizeof(last), "%s, %lld s ago",
                                         chp_metrics_fetch_outcome(p->last_outcome),
                                         (long long)(time(NULL) - p->last_fetch));
                        safe(p->name, name, sizeof(name));
                        put(&r->body,
                            "<tr><td>%s</td><td>%s</td><td id=\"peer-%s-state\">%s</td>"
                            "<td id=\"peer-%s-done\">%llu</td><td id=\"peer-%s-not_found\">%llu"
                            "</td><td id=\"peer-%s-failed\">%llu</td><td>%llu</td><td>%s</td>"
                            "</tr>",
                            name, safe(p->address, addr, sizeof(addr)), name,
                            chp_peers_state_name(p->state), name,
                            (unsigned long long)p->fetches[CHP_FETCHED_DONE], name,
                            (unsigned long long)p->fetches[CHP_FETCHED_NOT_FOUND], name,
                            (unsigned long long)(p->fetches[CHP_FETCHED_TIMEOUT] +
                                                 p->fetches[CHP_FETCHED_TOO_SLOW] +
                                                 p->fetches[CHP_FETCHED_UNFINISHED] +
                                                 p->fetches[CHP_FETCHED_FAILED]),
                            (unsigned long long)p->offers_sent, last);
                }
                put(&r->body,
                    "</table><p id=\"fetches\">federation fetches: %llu done, %llu not "
                    "found, %llu failed or timed out</p>",
                    (unsigned long long)atomic_load(&m->fetches[CHP_FETCHED_DONE]),
                    (unsigned long long)atomic_load(&m->fetches[CHP_FETCHED_NOT_FOUND]),
                    (unsigned long long)(atomic_load(&m->fetches[CHP_FETCHED_TIMEOUT]) +
                                         atomic_load(&m->fetches[CHP_FETCHED_TOO_SLOW]) +
                                         atomic_load(&m->fetches[CHP_FETCHED_UNFINISHED]) +
                                         atomic_load(&m->fetches[CHP_FETCHED_FAILED])));
                put(&r->body, "<h2>Refusals</h2><table id=\"refusals\"><tr><th>reason</th>"
                              "<th>count</th></tr>");
        } else {
                if (rc)
                        put(&r->body, "],\"tenants_error\":\"%s\"", chp_strerror(rc));
                else
                        put(&r->body, "]");
                put(&r->body, ",\"peers\":[");
                for (size_t i = 0; i < np; i++) {
                        const struct chp_peer_stat *p = &ps[i];
                        put(&r->body, "%s{\"name\":\"%s\",\"address\":\"%s\",\"state\":\"%s\"",
                            i ? "," : "", safe(p->name, name, sizeof(name)),
                            safe(p->address, addr, sizeof(addr)), chp_peers_state_name(p->state));
                        put(&r->body, ",\"offers_sent\":%llu,\"last_fetch\":%lld,\"fetches\":{",
                            (unsigned long long)p->offers_sent, (long long)p->last_fetch);
                        for (int o = 0; o < CHP_FETCHED_NOUTCOMES; o++)
                                put(&r->body, "%s\"%s\":%llu", o ? "," : "",
                                    chp_metrics_fetch_outcome((enum chp_fetch_outcome)o),
                                    (unsigned long long)p->fetches[o]);
                        put(&r->body, "}}");
                }
                put(&r->body, "],\"refusals\":{");
        }
        free(ps);
        for (int i = 0; i < CHP_REFUSE_NREASONS; i++) {
                const char *why = chp_metrics_refusal_name((enum chp_refusal)i);
                unsigned long long n = atomic_load(&m->refused[i]);
                if (html)
                        put(&r->body, "<tr><td>%s</td><td id=\"refused-%s\">%llu</td></tr>", why,
                            why, n);
                else
                        put(&r->body, "%s\"%s\":%llu", i ? "," : "", why, n);
        }
        if (html)
                put(&r->body, "</table></body></html>\n");
        else
                put(&r->body, "}}\n");
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static void route(struct req *r)
{
        const char *p = r->path;
        enum chp_http_method m = r->h->method;
        if (strcmp(p, "/") == 0 && m == CHP_HTTP_GET)
                status(r, true);
        else if (strcmp(p, "/status") == 0 && m == CHP_HTTP_GET)
                status(r, false);
        else if (strcmp(p, "/files") == 0 && m == CHP_HTTP_GET)
                get_files(r);
        else if (strcmp(p, "/uploads") == 0 && m == CHP_HTTP_GET)
                get_uploads(r);
        else if (strcmp(p, "/stats") == 0 && m == CHP_HTTP_GET)
                get_stats(r);
        else if (strncmp(p, "/files/", 7) == 0 && m == CHP_HTTP_DELETE)
                file_delete(r, p + 7);
        else if (strcmp(p, "/quarantine") == 0 && m == CHP_HTTP_GET)
                get_quarantine(r);
        else if (strncmp(p, "/quarantine/", 12) == 0 && (m == CHP_HTTP_PUT || m == CHP_HTTP_DELETE))
                quarantine(r, p + 12, m == CHP_HTTP_DELETE);
        else if (strcmp(p, "/verify") == 0 && m == CHP_HTTP_POST)
                verify_start(r);
        else if (strcmp(p, "/verify") == 0 && m == CHP_HTTP_GET)
                verify_status(r);
        else
                fail(r, 404, "no such admin request: see docs/operations.md, Administration");
}

/* ---- connections --------------------------------------------------------------------------- */

static void send_all(int fd, const char *p, size_t n)
{
        while (n) {
                ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
                if (w <= 0)
                        return; /* the client went away or stalled past the timeout */
                p += w;
                n -= (size_t)w;
        }
}

static const char *reason(int status)
{
        switch (status) {
        case 200:
                return "OK";
        case 202:
                return "Accepted";
        case 400:
                return "Bad Request";
        case 401:
                return "Unauthorized";
        case 404:
                return "Not Found";
        case 409:
                return "Conflict";
        case 431:
                return "Request Header Fields Too Large";
        }
        return "Internal Server Error";
}

/* Whether the request carries the operator key: "Authorization: Bearer HEX". */
static bool authorized(const struct chp_admin *a, const struct chp_http_request *h)
{
        const struct chp_http_str *v = chp_http_header(h, "Authorization");
        uint8_t got[CHP_ADMIN_KEY_BYTES];
        char hex[2 * CHP_ADMIN_KEY_BYTES + 1];
        if (!a->has_key || !v || v->n != 7 + 2 * CHP_ADMIN_KEY_BYTES ||
            strncasecmp(v->p, "Bearer ", 7) != 0)
                return false;
        memcpy(hex, v->p + 7, 2 * CHP_ADMIN_KEY_BYTES);
        hex[2 * CHP_ADMIN_KEY_BYTES] = '\0';
        bool ok = chp_hex_decode(hex, strlen(hex), got, sizeof(got)) == 0 &&
                  sodium_memcmp(got, a->key, sizeof(got)) == 0;
        sodium_memzero(got, sizeof(got));
        sodium_memzero(hex, sizeof(hex));
        return ok;
}

/* Reads one request head, answers it, closes. */
static void serve(struct chp_admin *a, int fd, bool tcp)
{
        struct timeval tv = {ADMIN_IO_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        char head[ADMIN_HEAD_MAX];
        size_t got = 0;
        struct chp_http_request h;
        ssize_t n = -EAGAIN;
        struct req r = {.a = a, .h = &h, .status = 200, .type = "application/json"};
        double deadline = now_mono() + ADMIN_IO_TIMEOUT_S; /* for the whole head, not per read */
        while (n == -EAGAIN && got < sizeof(head)) {
                if (now_mono() > deadline)
                        return;
                ssize_t rd = recv(fd, head + got, sizeof(head) - got, 0);
                if (rd <= 0)
                        return; /* closed, or nothing within the timeout */
                got += (size_t)rd;
                n = chp_http_parse_request(head, got, &h);
        }
        if (n < 0) {
                r.h = NULL;
                fail(&r, n == CHP_EHTTP_HEADERS || n == -EAGAIN ? 431 : 400, "%s",
                     chp_strerror((int)n));
        } else {
                const char *t = h.target.p, *q = memchr(t, '?', h.target.n);
                size_t plen = q ? (size_t)(q - t) : h.target.n;
                size_t qlen = q ? h.target.n - plen - 1 : 0;
                if (plen >= sizeof(r.path) || qlen >= sizeof(r.query)) {
                        fail(&r, 400, "request target too long");
                } else {
                        memcpy(r.path, t, plen);
                        memcpy(r.query, q ? q + 1 : "", qlen);
                        char fmt[8];
                        r.text =
                            query_get(&r, "format", fmt, sizeof(fmt)) && strcmp(fmt, "text") == 0;
                        if (r.bad_query)
                                ; /* answered below, before anything is done */
                        else if (tcp && !authorized(a, &h))
                                fail(&r, 401,
                                     "the admin face on TCP needs the operator key: "
                                     "Authorization: Bearer KEY");
                        else
                                route(&r);
                        if (r.bad_query)
                                fail(&r, 400,
                                     "a query parameter does not decode (%%XX escapes, "
                                     "a value too long)");
                }
        }
        if (r.body.failed) {
                r.status = 500;
                r.body.n = 0;
        }
        if (r.text && r.type && strcmp(r.type, "application/json") == 0)
                r.type = "text/plain; charset=utf-8";
        char resp[512];
        int hl =
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                     "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'"
                     "\r\nConnection: close\r\n%s\r\n",
                     r.status, reason(r.status), r.type, r.body.n,
                     r.status == 401 ? "WWW-Authenticate: Bearer realm=\"chapard admin\"\r\n" : "");
        send_all(fd, resp, (size_t)hl);
        if (!(r.h && h.method == CHP_HTTP_HEAD))
                send_all(fd, r.body.p ? r.body.p : "", r.body.n);
        free(r.body.p);
}

static void *admin_main(void *arg)
{
        struct chp_admin *a = arg;
        struct pollfd pf[3] = {
            {a->wake[0], POLLIN, 0}, {a->unix_fd, POLLIN, 0}, {a->tcp_fd, POLLIN, 0}};
        nfds_t nf = a->tcp_fd >= 0 ? 3 : 2;
        double last = 0;
        while (!atomic_load(&a->stopping)) {
                if (now_mono() - last >= 1) {
                        sample(a);
                        last = now_mono();
                }
                int rc = poll(pf, nf, 1000);
                if (rc <= 0)
                        continue;
                for (nfds_t i = 1; i < nf; i++) {
                        if (!(pf[i].revents & POLLIN))
                                continue;
                        int fd = accept4(pf[i].fd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd < 0)
                                continue;
                        serve(a, fd, i == 2);
                        close(fd);
                }
        }
        return NULL;
}

/* ---- start and stop ------------------------------------------------------------------------ */

int chp_admin_key_load(const char *path, uint8_t key[CHP_ADMIN_KEY_BYTES],
                       char err[CHP_ADMIN_ERR_MAX])
{
        char text[2 * CHP_ADMIN_KEY_BYTES + 64];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                int rc = -errno;
                snprintf(err, CHP_ADMIN_ERR_MAX, "cannot read the admin key %s: %s", path,
                         chp_strerror(rc));
                return rc;
        }
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        size_t len = n > 0 ? (size_t)n : 0;
        while (len && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\r'))
                len--;
        text[len] = '\0';
        int rc = 0;
        if (len != 2 * CHP_ADMIN_KEY_BYTES ||
            chp_hex_decode(text, len, key, CHP_ADMIN_KEY_BYTES) != 0) {
                snprintf(err, CHP_ADMIN_ERR_MAX,
                         "%s does not hold an admin key (64 hex digits; make one with "
                         "chapard admin-key --out FILE)",
                         path);
                rc = -EINVAL;
        }
        sodium_memzero(text, sizeof(text));
        return rc;
}

/* Listens on DATA/admin.sock. The data directory is 0700, so the socket is the operator's from
 * the moment it exists; chmod makes it 0600 on top. */
static int listen_unix(struct chp_admin *a, const char *dir, char err[CHP_ADMIN_ERR_MAX])
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int w = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, CHP_ADMIN_SOCKET);
        if (w < 0 || (size_t)w >= sizeof(sa.sun_path)) {
                snprintf(err, CHP_ADMIN_ERR_MAX,
                         "the admin socket's path %s/%s is longer than a Unix socket allows", dir,
                         CHP_ADMIN_SOCKET);
                return -ENAMETOOLONG;
        }
        snprintf(a->sock_path, sizeof(a->sock_path), "%s", sa.sun_path);
        struct stat st;
        if (lstat(sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(sa.sun_path); /* a relay that died left it; the store's lock is ours */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(sa.sun_path, 0600) != 0 ||
            listen(fd, 16) != 0) {
                int rc = -errno;
                snprintf(err, CHP_ADMIN_ERR_MAX, "cannot listen on %s: %s", sa.sun_path,
                         chp_strerror(rc));
                close(fd);
                a->sock_path[0] = '\0';
                return rc;
        }
        a->unix_fd = fd;
        return 0;
}

int chp_admin_start(struct chp_shared *sh, const struct chp_config *cfg, struct chp_admin **out,
                    char *tcp_addr, size_t cap, char err[CHP_ADMIN_ERR_MAX])
{
        *out = NULL;
        err[0] = '\0';
        if (cap)
                tcp_addr[0] = '\0';
        struct chp_admin *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->sh = sh;
        a->unix_fd = a->tcp_fd = a->wake[0] = a->wake[1] = -1;
        a->started = time(NULL);
        pthread_mutex_init(&a->scrub.lock, NULL);
        int rc = 0;
        if (pipe2(a->wake, O_CLOEXEC) != 0) {
                rc = -errno;
                goto fail;
        }
        if ((rc = listen_unix(a, cfg->data_dir, err)))
                goto fail;
        if (cfg->admin_listen) {
                char host[CHP_NET_HOST_MAX];
                uint16_t port, bound;
                if ((rc = chp_admin_key_load(cfg->admin_key, a->key, err)))
                        goto fail;
                a->has_key = true;
                if ((rc = chp_net_split_hostport(cfg->admin_listen, host, sizeof(host), &port)) ||
                    (rc = chp_net_listen(host, port, true, &a->tcp_fd, &bound))) {
                        snprintf(err, CHP_ADMIN_ERR_MAX, "cannot listen on %s (admin): %s",
                                 cfg->admin_listen, chp_strerror(rc));
                        goto fail;
                }
                bool v6 = strchr(host, ':') != NULL;
                snprintf(tcp_addr, cap, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", bound);
        }
        if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
                rc = -EAGAIN;
                goto fail;
        }
        a->thread_started = true;
        *out = a;
        return 0;
fail:
        chp_admin_stop(a);
        return rc;
}

void chp_admin_stop(struct chp_admin *a)
{
        if (!a)
                return;
        atomic_store(&a->stopping, true);
        if (a->thread_started) {
                if (write(a->wake[1], "x", 1) < 0) {
                        /* the poll's timeout ends the wait instead */
                }
                pthread_join(a->thread, NULL);
        }
        if (a->scrub.started) {
                atomic_store(&a->scrub.p.stop, 1);
                pthread_join(a->scrub.thread, NULL);
        }
        if (a->unix_fd >= 0) {
                close(a->unix_fd);
                unlink(a->sock_path);
        }
        if (a->tcp_fd >= 0)
                close(a->tcp_fd);
        if (a->wake[0] >= 0) {
                close(a->wake[0]);
                close(a->wake[1]);
        }
        pthread_mutex_destroy(&a->scrub.lock);
        sodium_memzero(a->key, sizeof(a->key));
        free(a);
}
