/* http.c — chapard's HTTP/1.1 face: the request loop, responses, routing, /metrics, /healthz.
 *
 *   bytes in c->in --> head parsed as it arrives (chp_http_parse_resume), once per request
 *                  --> copied out, routed:  /files/...  tus.c      /f/<id>  download.c
 *                                           /xmpp/NAME/...  xmpp.c
 *                                           /metrics, /healthz  here
 *                  --> one response per request, in order; a body the handler left unread is
 *                      read and dropped, or the connection closes (unread_body_rule)
 *
 * Loop thread only. One request at a time per connection, in order (pipelined requests wait in
 * the input buffer). HTTP is plaintext: it is meant for loopback or behind a TLS terminator.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "http.h"
#include "metrics.h"
#include "peer.h"

/* a body left unread by a response is read and dropped up to this size; a longer one closes */
#define UNREAD_MAX (64u << 10)
/* Seconds a 503 (a relay shutting down, a storage cluster that did not answer) asks to wait. */
#define HTTP_RETRY_AFTER_S 5
#define EXPOSE                                                                                     \
        "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Location, "                \
        "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "                                \
        "Tus-Checksum-Algorithm, Chapar-File-Id, Content-Range, ETag, WWW-Authenticate, "          \
        "Retry-After, Chapar-Relay-Key"

/* ---- responses --------------------------------------------------------------------------- */

void http_add(struct resp *r, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(r->buf + r->len, sizeof(r->buf) - r->len, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(r->buf) - r->len)
                r->overflow = true;
        else
                r->len += (size_t)n;
}

static const char *reason(int status)
{
        switch (status) {
        case 100:
                return "Continue";
        case 200:
                return "OK";
        case 201:
                return "Created";
        case 204:
                return "No Content";
        case 206:
                return "Partial Content";
        case 304:
                return "Not Modified";
        case 400:
                return "Bad Request";
        case 401:
                return "Unauthorized";
        case 403:
                return "Forbidden";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 409:
                return "Conflict";
        case 410:
                return "Gone";
        case 411:
                return "Length Required";
        case 412:
                return "Precondition Failed";
        case 413:
                return "Content Too Large";
        case 414:
                return "URI Too Long";
        case 415:
                return "Unsupported Media Type";
        case 416:
                return "Range Not Satisfiable";
        case 423:
                return "Locked";
        case 429:
                return "Too Many Requests";
        case 431:
                return "Request Header Fields Too Large";
        case 451:
                return "Unavailable For Legal Reasons";
        case 460:
                return "Checksum Mismatch";
        case 500:
                return "Internal Server Error";
        case 501:
                return "Not Implemented";
        case 503:
                return "Service Unavailable";
        case 505:
                return "HTTP Version Not Supported";
        case 507:
                return "Insufficient Storage";
        }
        return "Unknown";
}

/* The one rule for a response that leaves part of the request's body unread (an error, a 405,
 * anything answered from the head alone): the connection goes on only if the rest can be read
 * and dropped first -- at most UNREAD_MAX bytes, and only when the client is sending it (not
 * one that waits for a 100 Continue it never got, whose next bytes may be its next request).
 * Otherwise the connection closes after the response. Either way body bytes are never parsed
 * as a request. Decided here, before the head says whether the connection stays open. */
static void unread_body_rule(struct http *h)
{
        if (h->body_left > UNREAD_MAX || (h->body_left && h->expect_continue && !h->continued))
                h->close_after = true;
}

void http_start(struct http *h, struct resp *r, int status)
{
        unread_body_rule(h);
        r->len = 0;
        r->overflow = false;
        r->status = status;
        http_add(r, "HTTP/1.1 %d %s\r\n", status, reason(status));
        if (h->route == R_FILES || h->route == R_UPLOAD)
                http_add(r, "Tus-Resumable: " TUS_VERSION "\r\n");
        if (h->has_origin) {
                const char *allowed = h->c->sh->cfg->cors_origins;
                if (strcmp(allowed, "*") == 0) {
                        http_add(r, "Access-Control-Allow-Origin: *\r\n");
                } else {
                        /* echo the origin when it is on the list */
                        size_t ol = strlen(h->origin);
                        for (const char *p = allowed; *p;) {
                                size_t n = strcspn(p, " ,");
                                if (n == ol && strncmp(p, h->origin, n) == 0) {
                                        http_add(
                                            r,
                                            "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n",
                                            h->origin);
                                        break;
                                }
                                p += n;
                                p += strspn(p, " ,");
                        }
                }
                http_add(r, "Access-Control-Expose-Headers: " EXPOSE "\r\n");
        }
        if (!h->keep_alive || h->close_after || h->stopping)
                http_add(r, "Connection: close\r\n");
}

/* Ends the head (with Content-Length body_len unless no_length) and queues it with the body. */
void http_finish(struct http *h, struct resp *r, const void *body, size_t body_len, bool no_length)
{
        struct conn *c = h->c;
        if (!no_length)
                http_add(r, "Content-Length: %zu\r\n", body_len);
        http_add(r, "\r\n");
        if (r->status >= 100 && r->status < 600)
                atomic_fetch_add(&c->sh->metrics->http_status[r->status / 100], 1);
        chp_metrics_http_status(c->sh->metrics, h->method, r->status);
        h->log_status = r->status;
        if (r->overflow) {
                conn_close(c);
                return;
        }
        size_t n = r->len + (h->head_only ? 0 : body_len);
        uint8_t *out = conn_out_reserve(c, n);
        if (!out) {
                conn_close(c);
                return;
        }
        memcpy(out, r->buf, r->len);
        if (!h->head_only && body_len)
                memcpy(out + r->len, body, body_len);
        c->last_active = chp_net_now_ms();
}

void http_simple(struct http *h, int status, const char *msg)
{
        struct resp r;
        /* decided before the head is written, so that it says "Connection: close" when the
         * relay will close (a malformed request, a server error; a body left unread is
         * http_start()'s rule) */
        if (status >= 400)
                h->close_after = h->close_after || status >= 500 || status == 400 ||
                                 status == 414 || status == 431 || status == 505 || status == 501;
        http_start(h, &r, status);
        if (status == 412 || h->route == R_FILES || h->route == R_UPLOAD)
                http_add(&r, "Tus-Version: " TUS_VERSION "\r\n");
        if (status == 503) /* shutting down, or the storage cluster did not answer */
                http_add(&r, "Retry-After: %d\r\n", HTTP_RETRY_AFTER_S);
        if (msg) {
                http_add(&r, "Content-Type: text/plain\r\n");
                char body[512];
                int n = snprintf(body, sizeof(body), "%s\n", msg);
                http_finish(h, &r, body, (size_t)n, false);
        } else {
                http_finish(h, &r, NULL, 0, false);
        }
}

void http_date(uint64_t t, char *out, size_t cap)
{
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int http_status_of(int rc)
{
        int status = chp_err_http_status(rc); /* the request head parser's */
        if (status)
                return status;
        switch (rc) {
        case -ENOENT:
                return 404;
        case CHP_EMAPFULL:
        case -ENOSPC:
        case -EDQUOT:
                return 507;
        case CHP_ECLOSED:
                return 503;
        case -ESTALE: /* another relay moved the upload's offset (shared state): HEAD again */
                return 409;
        case -EINVAL:
        case -EBADMSG:
                return 400;
        }
        return 500;
}

/* ---- request state ----------------------------------------------------------------------- */

static void request_reset(struct http *h)
{
        tus_reset(h);
        download_reset(h);
        h->ph = PH_HEAD;
        chp_http_parser_init(&h->hp);
        h->route = R_NONE;
        h->body_left = 0;
        h->has_origin = h->expect_continue = h->continued = h->head_only = false;
        if (h->c->body)
                h->c->body = NULL;
}

/* ---- the access log ---------------------------------------------------------------------- */

static const char *method_name(int m)
{
        static const char *const names[] = {
            [CHP_HTTP_GET] = "GET",       [CHP_HTTP_HEAD] = "HEAD",
            [CHP_HTTP_POST] = "POST",     [CHP_HTTP_PATCH] = "PATCH",
            [CHP_HTTP_DELETE] = "DELETE", [CHP_HTTP_OPTIONS] = "OPTIONS",
            [CHP_HTTP_PUT] = "PUT",
        };
        return m >= 0 && m <= CHP_HTTP_PUT ? names[m] : "-";
}

/* The request's line: what it asked, who asked (the token of a POST), what came of it. */
static void access_line(struct http *h)
{
        struct conn *c = h->c;
        if (!h->log_open)
                return;
        h->log_open = false;
        char id[CHP_HASH_HEXBYTES] = "", status[8];
        if (h->route == R_FILE)
                chp_hex_encode(h->id, CHP_HASH_BYTES, id);
        else if (h->route == R_UPLOAD || (h->route == R_FILES && h->created))
                chp_hex_encode(h->id, CHP_UPLOAD_ID_BYTES, id);
        snprintf(status, sizeof(status), "%d", h->log_status);
        /* the file name a tus upload declared: the metadata is checked and decoded here only */
        uint8_t name[CHP_UPLOAD_META_MAX];
        size_t name_len = 0;
        if (h->log_meta.n && chp_http_check_metadata(h->log_meta) == 0 &&
            chp_http_metadata_get(h->log_meta, "filename", name, sizeof(name), &name_len) != 0)
                name_len = 0;
        bool tok = h->caller.kind == CHP_CALLER_TOKEN;
        uint64_t body = h->log_in >= h->body_left ? h->log_in - h->body_left : 0;
        struct chp_alog_entry e = {
            .face = "http",
            .addr = h->addr,
            .tenant = tok ? h->caller.token.tenant : NULL,
            .subject = tok ? h->caller.token.subject : NULL,
            .method = method_name(h->method),
            .path = h->log_path.p,
            .path_len = h->log_path.n,
            .id = id,
            .name = (const char *)name,
            .name_len = name_len,
            .agent = h->log_agent.p,
            .agent_len = h->log_agent.n,
            .bytes_in = body,
            .bytes_out = c->queued_total - h->log_out0,
            .status = status,
            .duration_us = chp_net_now_us() - h->log_t0,
        };
        chp_alog_write(c->sh->alog, &e);
}

/* The response is queued: either close, or go on with the next request (after dropping what
 * is left of this one's body: see unread_body_rule). */
void http_request_done(struct http *h)
{
        struct conn *c = h->c;
        access_line(h);
        bool close = !h->keep_alive || h->close_after || h->stopping;
        uint64_t unread = h->body_left;
        request_reset(h);
        if (close) {
                conn_close_after_flush(c);
        } else if (unread) {
                h->ph = PH_DISCARD;
                h->body_left = unread;
        }
        /* a pipelined request may be waiting: the caller goes back to http_on_input */
}

/* PH_DISCARD: reads and drops the rest of the body (into the head buffer, free by now); true
 * once it is all gone and the next request may be parsed. */
static bool discard_body(struct http *h)
{
        struct conn *c = h->c;
        if (c->body) {
                if (c->body_got < c->body_len)
                        return false;
                h->body_left -= c->body_len;
                c->body = NULL;
        }
        while (h->body_left) {
                size_t have = c->in_len < h->body_left ? c->in_len : (size_t)h->body_left;
                if (!have)
                        break;
                conn_consume(c, have);
                h->body_left -= have;
        }
        if (h->body_left) {
                /* received as a body, so that a client that stops sending meets io_timeout */
                size_t want = h->body_left < HEAD_MAX ? (size_t)h->body_left : HEAD_MAX;
                conn_want_body(c, (uint8_t *)h->head, want, 0);
                return false;
        }
        h->ph = PH_HEAD;
        return true;
}

/* ---- metrics ----------------------------------------------------------------------------- */

/* A peer's name as a Prometheus label value: \, " and newline escaped (config.c admits none of
 * them today; this keeps a later change from breaking the page). */
static const char *label(const char *s, char *out, size_t cap)
{
        size_t o = 0;
        for (; *s && o + 3 <= cap; s++) {
                if (*s == '\\' || *s == '"' || *s == '\n')
                        out[o++] = '\\';
                out[o++] = *s == '\n' ? 'n' : *s;
        }
        out[o] = '\0';
        return out;
}

/* The series by peer (the peer layer's, which net/metrics.c cannot call), after the rest. */
static void peer_metrics(struct chp_shared *sh, char *buf, size_t cap, size_t *len)
{
        size_t n = chp_peers_count(sh->peers) > 0 ? (size_t)chp_peers_count(sh->peers) : 0;
        struct chp_peer_stat *st = n ? calloc(n, sizeof(*st)) : NULL;
        char name[2 * CHP_PEER_NAME_BYTES];
        n = st ? chp_peers_stats(sh->peers, st, n) : 0;
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_peer_fetches_total Fetches from each configured peer, by how they "
            "ended.\n# TYPE chapar_peer_fetches_total counter\n");
        for (size_t i = 0; i < n; i++)
                for (int o = 0; o < CHP_FETCHED_NOUTCOMES; o++)
                        chp_metrics_put(
                            buf, cap, len,
                            "chapar_peer_fetches_total{peer=\"%s\",outcome=\"%s\"} %llu\n",
                            label(st[i].name, name, sizeof(name)),
                            chp_metrics_fetch_outcome((enum chp_fetch_outcome)o),
                            (unsigned long long)st[i].fetches[o]);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_peer_offers_sent_total Offers (PREFETCH) each configured peer "
            "accepted.\n# TYPE chapar_peer_offers_sent_total counter\n");
        for (size_t i = 0; i < n; i++)
                chp_metrics_put(buf, cap, len, "chapar_peer_offers_sent_total{peer=\"%s\"} %llu\n",
                                label(st[i].name, name, sizeof(name)),
                                (unsigned long long)st[i].offers_sent);
        chp_metrics_put(
            buf, cap, len,
            "# HELP chapar_peer_up Whether the last connection to each configured peer succeeded "
            "(0 also when none was tried yet).\n# TYPE chapar_peer_up gauge\n");
        for (size_t i = 0; i < n; i++)
                chp_metrics_put(buf, cap, len, "chapar_peer_up{peer=\"%s\"} %d\n",
                                label(st[i].name, name, sizeof(name)), st[i].state == CHP_PEER_UP);
        free(st);
}

static void metrics(struct http *h)
{
        struct chp_shared *sh = h->c->sh;
        size_t n = 0, cap = 65536 + 4096 * (size_t)chp_peers_count(sh->peers);
        char *body = malloc(cap);
        if (!body) {
                http_simple(h, 500, NULL);
                http_request_done(h);
                return;
        }
        chp_metrics_render(sh, body, cap, &n);
        peer_metrics(sh, body, cap, &n);
        struct resp r;
        http_start(h, &r, 200);
        http_add(&r, "Content-Type: text/plain; version=0.0.4\r\n");
        http_finish(h, &r, body, n, false);
        free(body);
        http_request_done(h);
}

/* ---- request dispatch -------------------------------------------------------------------- */

/* Route and method; returns false when the response is already queued. */
static bool route(struct http *h, const struct chp_http_request *req)
{
        struct chp_http_str t = req->target;
        size_t q = 0;
        while (q < t.n && t.p[q] != '?')
                q++;
        t.n = q; /* the query string is ignored, but for /f/'s origin */
        if (t.n == 7 && memcmp(t.p, "/files/", 7) == 0) {
                h->route = R_FILES;
        } else if (t.n == 6 && memcmp(t.p, "/files", 6) == 0) {
                h->route = R_FILES;
        } else if (t.n > 7 && memcmp(t.p, "/files/", 7) == 0) {
                h->route = R_UPLOAD;
                if (tus_parse_id(t, h->id) != 0) {
                        http_simple(h, 404, "no such upload");
                        return false;
                }
        } else if (t.n > 3 && memcmp(t.p, "/f/", 3) == 0) {
                h->route = R_FILE;
                if (!download_parse_id(t, h->id)) {
                        http_simple(h, 404, "no such file");
                        return false;
                }
                if (download_parse_origin(chp_http_target_query(req->target), h->dl.origin,
                                          &h->dl.has_origin) != 0) {
                        http_simple(h, 400,
                                    "origin= must be a relay's public key (64 hex digits), once");
                        return false;
                }
        } else if (t.n > 6 && memcmp(t.p, "/xmpp/", 6) == 0) {
                h->route = R_XMPP; /* xmpp.c checks the rest, and the method */
                return true;
        } else if (t.n == 8 && memcmp(t.p, "/metrics", 8) == 0) {
                h->route = R_METRICS;
        } else if (t.n == 8 && memcmp(t.p, "/healthz", 8) == 0) {
                h->route = R_HEALTHZ;
        } else {
                http_simple(h, 404, "not found");
                return false;
        }
        static const char *const allow[] = {
            [R_FILES] = "OPTIONS, POST",     [R_UPLOAD] = "OPTIONS, HEAD, PATCH, DELETE",
            [R_FILE] = "OPTIONS, GET, HEAD", [R_METRICS] = "GET, HEAD",
            [R_HEALTHZ] = "GET, HEAD",
        };
        int m = h->method;
        bool ok = m == CHP_HTTP_OPTIONS || (h->route == R_FILES && m == CHP_HTTP_POST) ||
                  (h->route == R_UPLOAD &&
                   (m == CHP_HTTP_HEAD || m == CHP_HTTP_PATCH || m == CHP_HTTP_DELETE)) ||
                  ((h->route == R_FILE || h->route == R_METRICS || h->route == R_HEALTHZ) &&
                   (m == CHP_HTTP_GET || m == CHP_HTTP_HEAD));
        if (!ok) {
                struct resp r;
                http_start(h, &r, 405);
                http_add(&r, "Allow: %s\r\n", allow[h->route]);
                http_finish(h, &r, NULL, 0, false);
                return false;
        }
        if ((h->route == R_FILES || h->route == R_UPLOAD) && m != CHP_HTTP_OPTIONS &&
            !tus_version_ok(h, req))
                return false;
        return true;
}

/* A complete request head: everything needed is taken from it before it is consumed. */
static void on_request(struct http *h, const struct chp_http_request *req)
{
        struct conn *c = h->c;
        atomic_fetch_add(&c->sh->metrics->http_requests, 1);
        h->method = (int)req->method;
        if (c->sh->alog) {
                if (!h->addr[0])
                        chp_alog_peer_addr(c->fd, h->addr);
                h->log_open = true;
                h->log_status = 0;
                h->log_path = req->target;
                const struct chp_http_str *ua = chp_http_header(req, "User-Agent");
                const struct chp_http_str *meta = chp_http_header(req, "Upload-Metadata");
                h->log_agent = ua ? *ua : (struct chp_http_str){0};
                h->log_meta =
                    meta && req->method == CHP_HTTP_POST ? *meta : (struct chp_http_str){0};
        }
        h->head_only = req->method == CHP_HTTP_HEAD;
        const struct chp_http_str *conn = chp_http_header(req, "Connection");
        h->keep_alive = req->minor == 1 ? !(conn && chp_http_str_ieq(*conn, "close"))
                                        : (conn && chp_http_str_ieq(*conn, "keep-alive"));
        const struct chp_http_str *origin = chp_http_header(req, "Origin");
        if (origin && origin->n < sizeof(h->origin)) {
                memcpy(h->origin, origin->p, origin->n);
                h->origin[origin->n] = '\0';
                h->has_origin = true;
        }
        /* for absolute Location URLs: an absolute-form target's authority wins over Host
         * (RFC 9112 3.2.2); both are checked (chp_http_check_host) before they are used */
        const struct chp_http_str *host = chp_http_header(req, "Host");
        const struct chp_http_str *authority = req->authority.n ? &req->authority : host;
        h->host[0] = '\0';
        if (authority && authority->n < sizeof(h->host)) {
                memcpy(h->host, authority->p, authority->n);
                h->host[authority->n] = '\0';
        }
        const struct chp_http_str *expect = chp_http_header(req, "Expect");
        h->expect_continue = expect && chp_http_str_ieq(*expect, "100-continue");
        /* X-HTTP-Method-Override, for clients that can only send GET and POST (tus) */
        const struct chp_http_str *ovr = chp_http_header(req, "X-HTTP-Method-Override");
        if (ovr && req->method == CHP_HTTP_POST) {
                if (chp_http_str_ieq(*ovr, "PATCH"))
                        h->method = CHP_HTTP_PATCH;
                else if (chp_http_str_ieq(*ovr, "DELETE"))
                        h->method = CHP_HTTP_DELETE;
                else if (chp_http_str_ieq(*ovr, "HEAD"))
                        h->method = CHP_HTTP_HEAD, h->head_only = true;
        }
        /* the body: Content-Length only (no chunked transfer coding) */
        const struct chp_http_str *cl = chp_http_header(req, "Content-Length");
        uint64_t body = 0;
        if (chp_http_header(req, "Transfer-Encoding")) {
                h->close_after = true;
                http_simple(h, 411, "a Content-Length body is required (no chunked coding)");
                return;
        }
        if (cl && (chp_http_header_count(req, "Content-Length") != 1 ||
                   chp_http_parse_u64(*cl, &body) != 0)) {
                h->close_after = true;
                http_simple(h, 400, "bad Content-Length");
                return;
        }
        h->body_left = body;
        h->log_in += body;
        /* RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with several Host
         * lines or an invalid one, is answered 400 */
        size_t hosts = chp_http_header_count(req, "Host");
        if ((req->minor == 1 && hosts == 0) || hosts > 1 ||
            (host && chp_http_check_host(*host) != 0)) {
                http_simple(h, 400, "exactly one valid Host header is required");
                return;
        }
        if (h->stopping) {
                http_simple(h, 503, "the relay is stopping");
                return;
        }
        if (!route(h, req))
                return;
        if (body && h->method != CHP_HTTP_PATCH && h->method != CHP_HTTP_POST &&
            !(h->route == R_XMPP && h->method == CHP_HTTP_PUT)) {
                http_simple(h, 400, "this request takes no body"); /* and closes */
                return;
        }
        switch (h->route) {
        case R_FILES:
                if (h->method == CHP_HTTP_OPTIONS)
                        tus_options(h, req);
                else
                        tus_post(h, req);
                return;
        case R_UPLOAD:
                if (h->method == CHP_HTTP_OPTIONS)
                        tus_options(h, req);
                else if (h->method == CHP_HTTP_HEAD)
                        tus_head(h);
                else if (h->method == CHP_HTTP_PATCH)
                        tus_patch(h, req);
                else
                        tus_delete(h);
                return;
        case R_FILE:
                if (h->method == CHP_HTTP_OPTIONS)
                        tus_options(h, req);
                else
                        download_get(h, req);
                return;
        case R_XMPP:
                xmpp_request(h, req);
                return;
        case R_METRICS:
                metrics(h);
                return;
        case R_HEALTHZ: {
                struct resp r;
                http_start(h, &r, 200);
                http_add(&r, "Content-Type: text/plain\r\n");
                http_finish(h, &r, "ok\n", 3, false);
                http_request_done(h);
                return;
        }
        case R_NONE:
                break;
        }
}

void http_on_input(struct conn *c)
{
        struct http *h = c->proto;
        if (c->closed)
                return;
        if (h->ph == PH_BODY) {
                if (c->body)
                        tus_body_progress(h);
                return;
        }
        for (;;) {
                if (h->ph == PH_DISCARD && !discard_body(h))
                        return;
                if (h->ph != PH_HEAD || c->closing || c->closed)
                        return;
                struct chp_http_request req;
                ssize_t n = chp_http_parse_resume(&h->hp, (const char *)c->in, c->in_len, &req);
                if (n == -EAGAIN)
                        return;
                if (n < 0) {
                        h->keep_alive = false;
                        h->method = -1; /* none that could be trusted */
                        h->log_open = c->sh->alog != NULL;
                        h->log_t0 = chp_net_now_us();
                        h->log_out0 = c->queued_total;
                        h->log_in = c->in_len;
                        h->log_path = h->log_agent = h->log_meta = (struct chp_http_str){0};
                        if (h->log_open && !h->addr[0])
                                chp_alog_peer_addr(c->fd, h->addr);
                        http_simple(h, http_status_of((int)n), "malformed request");
                        access_line(h);
                        conn_close_after_flush(c);
                        return;
                }
                /* the head is copied out of the input buffer, so that the body (which follows
                 * it there) can be consumed while the head is still being read */
                if (!h->head && !(h->head = malloc(HEAD_MAX))) {
                        conn_close(c);
                        return;
                }
                memcpy(h->head, c->in, (size_t)n);
                chp_http_request_move(&req, (const char *)c->in, h->head);
                conn_consume(c, (size_t)n);
                h->log_t0 = chp_net_now_us();
                h->log_out0 = c->queued_total;
                h->log_in = (uint64_t)n; /* the body's length is added once it is known */
                h->ph = PH_CREATE;       /* busy until the handler says otherwise */
                h->close_after = false;
                on_request(h, &req);
                if (h->ph == PH_CREATE && !h->pending)
                        http_request_done(h); /* answered at once (an error) */
        }
}

/* ---- protocol hooks ---------------------------------------------------------------------- */

static bool http_can_read(const struct conn *c)
{
        const struct http *h = c->proto;
        if (h->ph == PH_BODY || h->ph == PH_DISCARD)
                return false; /* body bytes go into buffers armed by body_progress/discard_body */
        /* a download waiting for a peer's fetch reads too, so that a client that goes away ends
         * the wait (what it sends meanwhile waits in c->in) */
        return (h->ph == PH_HEAD || h->ph == PH_FETCH) && !h->stopping &&
               c->out_bytes < c->sh->cfg->window_bytes && c->in_len < HEAD_MAX;
}

static bool http_busy(const struct conn *c)
{
        const struct http *h = c->proto;
        return h->ph != PH_HEAD || h->pending > 0;
}

static void http_stop(struct conn *c)
{
        ((struct http *)c->proto)->stopping = true;
}

static void http_on_drain(struct conn *c)
{
        struct http *h = c->proto;
        if (h->ph != PH_SEND)
                return;
        download_fill(c);
        if (h->ph == PH_HEAD || h->ph == PH_DISCARD)
                http_on_input(c); /* the download is queued whole: the next request */
}

static int http_attach(struct conn *c)
{
        struct http *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->c = c;
        h->keep_alive = true;
        chp_http_parser_init(&h->hp);
        if (chp_sha256_init(&h->sha) != 0) {
                free(h);
                return -ENOMEM;
        }
        h->sha_ok = true;
        c->proto = h;
        return 0;
}

static void http_detach(struct conn *c)
{
        struct http *h = c->proto;
        if (!h)
                return;
        access_line(h); /* a request the connection's end cut short */
        request_reset(h);
        if (h->sha_ok)
                chp_sha256_free(&h->sha);
        free(h->head);
        free(h);
        c->proto = NULL;
}

const struct proto_ops http_ops = {
    .name = "http",
    .secure = false,
    .attach = http_attach,
    .detach = http_detach,
    .on_input = http_on_input,
    .can_read = http_can_read,
    .busy = http_busy,
    .stop = http_stop,
    .on_drain = http_on_drain,
    .on_tick = download_tick,
    .busy_reply = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n",
    .limited_reply = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
};
