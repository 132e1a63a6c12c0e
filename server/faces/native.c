/* native.c — the native chunk protocol v1 on a relay connection (docs/protocol.md).
 *
 *   client                                   relay
 *     HELLO --------------------------------->
 *     <--------------------------------------- HELLO_OK (window, max in flight)
 *     OPEN(manifest) ------------------------>   store: open/resume, attach known chunks
 *     <--------------------------------------- OPEN_OK (upload id, file id, missing)
 *     CHUNK(i) ... CHUNK(j) ----------------->   hashed as they arrive, queued to the writer
 *     <--------------------------------------- CHUNK_OK(i) ... once durable
 *     COMMIT -------------------------------->
 *     <--------------------------------------- COMMIT_OK (file id)
 *
 * Loop thread only. Frames are parsed from the connection's input; a CHUNK or OPEN payload that
 * has not fully arrived gets a buffer of its own which the socket fills directly (no copy through
 * the input buffer) and which is handed to the store as is. Replies are queued on the connection;
 * requests that need the writer complete in native_on_store_done.
 *
 * This file holds the frame loop and the session (HELLO, PING, dispatch, flow control, attach and
 * detach) and the replies; the requests themselves are answered in native_upload.c,
 * native_read.c and native_peer.c (native_int.h).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "conn.h"
#include "err.h"
#include "gate.h"
#include "identity.h"
#include "log.h"
#include "manifest.h"
#include "metrics.h"
#include "native_int.h"
#include "proto.h"
#include "secure.h"

static bool native_can_read(const struct conn *c);

/* ---- memory budget ----------------------------------------------------------------------- */

uint8_t *native_payload_alloc(struct conn *c, size_t n)
{
        uint8_t *p = malloc(n ? n : 1);
        if (p)
                atomic_fetch_add(&c->sh->mem_used, n);
        return p;
}

void native_payload_free(struct chp_shared *sh, uint8_t *p, size_t n)
{
        if (!p)
                return;
        atomic_fetch_sub(&sh->mem_used, n);
        free(p);
}

/* ---- replies ----------------------------------------------------------------------------- */

/* Queues a frame header and returns where its payload_len bytes go (NULL: out of memory, and
 * the connection is closed). */
/* ---- the access log ----------------------------------------------------------------------
 * One line per request that does work (OPEN, COMMIT, DELETE, GET_MANIFEST, STAT, HAVE, OFFER,
 * PREFETCH), written when its reply is queued; CHUNK and GET_CHUNK, too many to log one by one,
 * are counted into the connection's SESSION line, written when it closes. */

static bool logged_type(uint8_t t)
{
        return t == CHP_F_OPEN || t == CHP_F_COMMIT || t == CHP_F_DELETE ||
               t == CHP_F_GET_MANIFEST || t == CHP_F_STAT || t == CHP_F_HAVE || t == CHP_F_OFFER ||
               t == CHP_F_PREFETCH;
}

static void log_line(struct conn *c, const char *method, const struct nlog *q, uint64_t bytes_out,
                     const char *status, uint64_t t0)
{
        struct native *n = c->nat;
        char hex[CHP_HASH_HEXBYTES] = "";
        if (q && q->id_len)
                chp_hex_encode(q->obj, q->id_len, hex);
        bool tok = n->caller.kind == CHP_CALLER_TOKEN;
        struct chp_alog_entry e = {
            .face = secure_peer(c) >= 0 ? "peer" : "native",
            .addr = n->addr,
            .tenant = tok ? n->caller.token.tenant : NULL,
            .subject = tok ? n->caller.token.subject : NULL,
            .method = method,
            .id = hex,
            .bytes_in = q ? q->bytes_in : c->rx_bytes,
            .bytes_out = bytes_out,
            .status = status,
            .duration_us = chp_net_now_us() - t0,
            .chunks_in = q ? 0 : n->chunks_in,
            .chunks_out = q ? 0 : n->chunks_out,
        };
        chp_alog_write(c->sh->alog, &e);
}

/* A request frame arrived: remembered until its reply (p: its whole payload). */
static void log_request(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct native *n = c->nat;
        if (h->type == CHP_F_CHUNK)
                n->chunks_in++;
        if (!c->sh->alog || !logged_type(h->type))
                return;
        if (!n->log && !(n->log = calloc(NLOG_MAX, sizeof(*n->log))))
                return;
        if (n->nlog == NLOG_MAX)
                return; /* more than a client may have in flight: not logged */
        struct nlog *q = &n->log[n->nlog++];
        *q = (struct nlog){.id = h->id,
                           .type = h->type,
                           .bytes_in = CHP_FRAME_HEADER + h->len,
                           .t0 = chp_net_now_us()};
        struct chp_msg_open m;
        if (h->type == CHP_F_COMMIT || h->type == CHP_F_DELETE) {
                if (h->len >= CHP_UPLOAD_ID_BYTES)
                        memcpy(q->obj, p, q->id_len = CHP_UPLOAD_ID_BYTES);
        } else if (h->type == CHP_F_OPEN) {
                /* the file id is the manifest's hash: paid for only while the log is on */
                if (chp_msg_open_decode(p, h->len, &m) == 0 &&
                    chp_manifest_id(m.manifest, m.manifest_len, q->obj) == 0)
                        q->id_len = CHP_HASH_BYTES;
        } else if (h->type != CHP_F_HAVE && h->len >= CHP_HASH_BYTES) {
                memcpy(q->obj, p, q->id_len = CHP_HASH_BYTES); /* they begin with a file id */
        }
}

/* A reply is queued: the line of the request it answers (code: the ERROR's, 0 for a reply). */
static void log_reply(struct conn *c, uint8_t type, uint32_t id, size_t len, uint32_t code)
{
        struct native *n = c->nat;
        if (type == (CHP_F_GET_CHUNK | CHP_F_REPLY))
                n->chunks_out++;
        for (uint32_t i = 0; i < n->nlog; i++) {
                struct nlog *q = &n->log[i];
                if (q->id != id || (type != CHP_F_ERROR && type != (q->type | CHP_F_REPLY)))
                        continue;
                char status[12] = "ok";
                if (type == CHP_F_ERROR)
                        snprintf(status, sizeof(status), "%u", code);
                log_line(c, chp_frame_type_name(q->type), q, CHP_FRAME_HEADER + len, status, q->t0);
                n->log[i] = n->log[--n->nlog];
                return;
        }
}

/* The connection ends: requests never answered, then the SESSION line. */
static void log_session(struct conn *c)
{
        struct native *n = c->nat;
        if (!c->sh->alog)
                return;
        for (uint32_t i = 0; i < n->nlog; i++)
                log_line(c, chp_frame_type_name(n->log[i].type), &n->log[i], 0, "closed",
                         n->log[i].t0);
        n->nlog = 0;
        log_line(c, "SESSION", NULL, c->tx_bytes, "ok", n->born_us);
}

static uint8_t *reply_frame(struct conn *c, uint8_t type, uint32_t id, size_t payload_len,
                            uint32_t code)
{
        uint8_t *p = conn_out_reserve(c, CHP_FRAME_HEADER + payload_len);
        if (!p) {
                conn_close(c);
                return NULL;
        }
        chp_frame_header_encode(p, type, id, (uint32_t)payload_len);
        c->last_active = chp_net_now_ms();
        if (c->nat->nlog || type == (CHP_F_GET_CHUNK | CHP_F_REPLY))
                log_reply(c, type, id, payload_len, code);
        return p + CHP_FRAME_HEADER;
}

uint8_t *native_reply_frame(struct conn *c, uint8_t type, uint32_t id, size_t payload_len)
{
        return reply_frame(c, type, id, payload_len, 0);
}

static bool fatal_code(uint32_t code)
{
        return code == CHP_WE_BAD_FRAME || code == CHP_WE_UNKNOWN_TYPE || code == CHP_WE_TOO_BIG ||
               code == CHP_WE_VERSION || code == CHP_WE_NO_HELLO;
}

__attribute__((format(printf, 4, 5))) void native_reply_error(struct conn *c, uint32_t id,
                                                              uint32_t code, const char *fmt, ...)
{
        char msg[CHP_ERROR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n < 0)
                n = 0;
        if ((size_t)n >= sizeof(msg))
                n = (int)sizeof(msg) - 1;
        struct chp_msg_error e = {.code = code, .msg = msg, .msg_len = (uint16_t)n};
        if (code <= CHP_WE_MAX)
                atomic_fetch_add(&c->sh->metrics->errors[code], 1);
        uint8_t *p = reply_frame(c, CHP_F_ERROR, id, CHP_ERROR_PREFIX + (size_t)n, code);
        if (p && chp_msg_error_encode(p, CHP_ERROR_PREFIX + (size_t)n, &e) < 0)
                conn_close(c);
        if (fatal_code(code)) {
                atomic_fetch_add(&c->sh->metrics->frames_bad, 1);
                chp_log_info("native", "closing a connection: %s (%s)", chp_wire_strerror(code),
                             msg);
                conn_close_after_flush(c);
        }
}

uint32_t native_wire_code(int rc)
{
        switch (rc) {
        case -ENOENT:
                return CHP_WE_NOT_FOUND;
        case CHP_EMISMATCH:
                return CHP_WE_MISMATCH;
        case CHP_EMISSING:
                return CHP_WE_MISSING;
        case -EBADMSG:
                return CHP_WE_BAD_MANIFEST;
        case CHP_EMAPFULL:
        case -ENOSPC:
        case -EDQUOT:
                return CHP_WE_NO_SPACE;
        case CHP_ECLOSED:
        case CHP_EUNAVAILABLE: /* the storage cluster did not answer */
                return CHP_WE_UNAVAILABLE;
        case CHP_ETOKEN_SCOPE:
        case CHP_ETOKEN_FILE:
        case CHP_ETOKEN_SUBJECT:
                return CHP_WE_FORBIDDEN;
        case CHP_EQUOTA:
        case CHP_ETOOBIG:
                return CHP_WE_QUOTA;
        case CHP_ELIMITED:
                return CHP_WE_LIMITED;
        case CHP_EQUARANTINED:
                return CHP_WE_QUARANTINED;
        }
        if (rc <= CHP_ETOKEN_KEY && rc >= CHP_ETOKEN_MISSING)
                return CHP_WE_UNAUTHORIZED; /* missing, or one that does not verify */
        return CHP_WE_INTERNAL;
}

/* What a client over a concurrency limit, or refused for want of storage that answers, is told
 * to wait: uploads in progress end in seconds; the cluster's op timeout is seconds too. */
#define RETRY_AFTER_S 5

void native_reply_refusal(struct conn *c, uint32_t id, int rc, const char *what)
{
        chp_metrics_refuse(c->sh->metrics, rc);
        uint32_t code = native_wire_code(rc);
        if (code == CHP_WE_LIMITED || code == CHP_WE_UNAVAILABLE)
                native_reply_error(c, id, code, "retry after %d s: %s: %s", RETRY_AFTER_S, what,
                                   chp_strerror(rc));
        else
                native_reply_error(c, id, code, "%s: %s", what, chp_strerror(rc));
}

void native_reply_store_error(struct conn *c, uint32_t id, int rc)
{
        uint32_t code = native_wire_code(rc);
        if (code == CHP_WE_UNAVAILABLE)
                native_reply_error(c, id, code, "retry after %d s: %s", RETRY_AFTER_S,
                                   chp_strerror(rc));
        else
                native_reply_error(c, id, code, "%s", chp_strerror(rc));
}

/* ---- frame handlers ---------------------------------------------------------------------- */

static void on_hello(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct native *n = c->nat;
        struct chp_msg_hello m;
        if (n->hello) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "HELLO sent twice");
                return;
        }
        if (chp_msg_hello_decode(p, h->len, &m) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed HELLO");
                return;
        }
        if (m.version != CHP_PROTO_VERSION) {
                native_reply_error(c, h->id, CHP_WE_VERSION, "this relay speaks version %u, not %u",
                                   CHP_PROTO_VERSION, m.version);
                return;
        }
        const struct chp_config *cfg = c->sh->cfg;
        /* A token that does not verify ends the connection: the client meant to be someone, and
         * carrying on as anonymous would only fail later, less clearly. */
        int rc =
            chp_gate_identify(cfg, c->sh->identity->pub, c->peer.loopback,
                              (const char *)m.token, m.token_len, (uint64_t)time(NULL), &n->caller);
        if (rc) {
                chp_metrics_refuse(c->sh->metrics, rc);
                native_reply_error(c, h->id, CHP_WE_UNAUTHORIZED, "the HELLO token: %s",
                                   chp_strerror(rc));
                conn_close_after_flush(c);
                return;
        }
        /* its subject's connections and byte rate (conf/client_limits.h), from any address */
        bool tok = n->caller.kind == CHP_CALLER_TOKEN;
        if (tok &&
            chp_limits_conn_subject(c->sh->limits, n->caller.token.tenant, n->caller.token.subject,
                                    chp_net_now_ms(), &c->lim_subject) != 0) {
                chp_metrics_refuse(c->sh->metrics, CHP_ELIMITED);
                native_reply_error(c, h->id, CHP_WE_LIMITED,
                                   "retry after %d s: too many connections of this subject",
                                   CHP_LIMITS_RETRY_S);
                conn_close_after_flush(c);
                return;
        }
        n->hello = true;
        /* a peer relay fetches for its own users: what it pulls is not one client's download */
        c->rate_exempt = secure_peer(c) >= 0;
        struct chp_msg_hello_ok ok = {.version = CHP_PROTO_VERSION,
                                      .features = CHP_FEATURE_NONE,
                                      .max_frame = CHP_CHUNK_FRAME_MAX,
                                      .window_bytes = cfg->window_bytes,
                                      .max_inflight = cfg->max_inflight};
        uint8_t *out = native_reply_frame(c, CHP_F_HELLO | CHP_F_REPLY, h->id, CHP_HELLO_OK_BYTES);
        if (out && chp_msg_hello_ok_encode(out, CHP_HELLO_OK_BYTES, &ok) != CHP_HELLO_OK_BYTES)
                conn_close(c);
}

static void on_ping(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_ping m;
        if (chp_msg_ping_decode(p, h->len, &m) < 0) {
                native_reply_error(c, h->id, CHP_WE_TOO_BIG, "PING carries at most %d bytes",
                                   CHP_PING_MAX);
                return;
        }
        uint8_t *out = native_reply_frame(c, CHP_F_PING | CHP_F_REPLY, h->id, m.len);
        if (out && chp_msg_ping_encode(out, m.len, &m) != (ssize_t)m.len)
                conn_close(c);
}

/* ---- frame dispatch ---------------------------------------------------------------------- */

/* Handles one complete frame. p is the payload: owned (a buffer of its own, which the handler
 * takes over) or borrowed from the input buffer. */
static void handle_frame(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned)
{
        c->last_active = chp_net_now_ms();
        atomic_fetch_add(&c->sh->metrics->native_requests[h->type], 1);
        log_request(c, h, p);
        switch (h->type) {
        case CHP_F_HELLO:
                on_hello(c, h, p);
                break;
        case CHP_F_OPEN:
                native_upload_open(c, h, p, owned);
                return;
        case CHP_F_CHUNK:
                native_upload_chunk(c, h, p, owned);
                return;
        case CHP_F_COMMIT:
        case CHP_F_DELETE:
                native_upload_finish(c, h, p);
                break;
        case CHP_F_HAVE:
                native_read_have(c, h, p);
                break;
        case CHP_F_GET_MANIFEST:
                native_read_manifest(c, h, p);
                break;
        case CHP_F_GET_CHUNK:
                native_read_chunk(c, h, p);
                break;
        case CHP_F_STAT:
                native_read_stat(c, h, p);
                break;
        case CHP_F_PING:
                on_ping(c, h, p);
                break;
        case CHP_F_PREFETCH:
                native_peer_prefetch(c, h, p);
                break;
        case CHP_F_OFFER:
                native_peer_offer(c, h, p);
                break;
        default:
                native_reply_error(c, h->id, CHP_WE_UNKNOWN_TYPE,
                                   "frame type 0x%02x is not a request", h->type);
                break;
        }
        if (owned)
                native_payload_free(c->sh, p, h->len);
}

/* Payloads that get a buffer of their own when they do not arrive with their header. */
static bool big_payload(uint8_t type)
{
        return type == CHP_F_CHUNK || type == CHP_F_OPEN;
}

static void bad_header(struct conn *c)
{
        const uint8_t *b = c->in;
        uint32_t max = chp_frame_max_payload(b[0]);
        if (b[1] || b[2] || b[3])
                native_reply_error(c, 0, CHP_WE_BAD_FRAME, "nonzero flags or reserved bits");
        else if (!max)
                native_reply_error(c, 0, CHP_WE_UNKNOWN_TYPE, "unknown frame type 0x%02x", b[0]);
        else
                native_reply_error(
                    c, 0, CHP_WE_TOO_BIG, "%s frame of %u bytes (at most %u)",
                    chp_frame_type_name(b[0]),
                    (unsigned)(b[8] | b[9] << 8 | b[10] << 16 | (unsigned)b[11] << 24), max);
}

void native_on_input(struct conn *c)
{
        struct native *n = c->nat;
        if (c->closed)
                return;
        if (n->in_frame) {
                if (n->hdr.type == CHP_F_CHUNK && c->body_got > n->hashed) {
                        /* hash while the bytes are still in cache */
                        size_t from = n->hashed > CHP_CHUNK_PREFIX ? n->hashed : CHP_CHUNK_PREFIX;
                        if (c->body_got > from &&
                            chp_sha256_update(&n->sha, n->payload + from, c->body_got - from) != 0)
                                from = c->body_got = n->hashed = 0; /* fails the hash check */
                        n->hashed = c->body_got;
                }
                if (c->body_got < c->body_len)
                        return;
                c->body = NULL;
                n->in_frame = false;
                uint8_t *p = n->payload;
                n->payload = NULL;
                conn_mem_settle(c, n->hdr.len); /* the frame's buffer, charged whole from here */
                handle_frame(c, &n->hdr, p, true);
        }
        while (!c->closing && !n->in_frame && native_can_read(c)) {
                struct chp_frame_header h;
                ssize_t r = chp_frame_header_decode(c->in, c->in_len, &h);
                if (r == -EAGAIN)
                        return;
                if (r < 0) {
                        bad_header(c);
                        return;
                }
                if (!n->hello && h.type != CHP_F_HELLO) {
                        native_reply_error(c, h.id, CHP_WE_NO_HELLO,
                                           "the first frame must be HELLO");
                        return;
                }
                size_t avail = c->in_len - CHP_FRAME_HEADER;
                if (h.len <= avail) {
                        handle_frame(c, &h, c->in + CHP_FRAME_HEADER, false);
                        conn_consume(c, CHP_FRAME_HEADER + h.len);
                        continue;
                }
                if (!big_payload(h.type))
                        return; /* a small frame: wait for the rest in the input buffer */
                /* charged to the memory budget as it arrives (conn_want_body), not now */
                uint8_t *p = malloc(h.len);
                if (!p) {
                        native_reply_error(c, h.id, CHP_WE_UNAVAILABLE, "out of memory");
                        conn_close_after_flush(c);
                        return;
                }
                memcpy(p, c->in + CHP_FRAME_HEADER, avail);
                conn_consume(c, CHP_FRAME_HEADER + avail);
                n->hdr = h;
                n->payload = p;
                n->in_frame = true;
                n->hashed = 0;
                if (h.type == CHP_F_CHUNK && chp_sha256_reset(&n->sha) != 0) {
                        conn_close(c);
                        return;
                }
                conn_want_body(c, p, h.len, avail);
                native_on_input(c); /* hash what is already here */
                return;
        }
}

static bool native_can_read(const struct conn *c)
{
        const struct native *n = c->nat;
        const struct chp_config *cfg = c->sh->cfg;
        return !n->stopping && n->inflight < cfg->max_inflight &&
               n->window_used < cfg->window_bytes && c->out_bytes + n->reading < cfg->window_bytes;
}

static bool native_busy(const struct conn *c)
{
        return c->nat->inflight > 0 || c->nat->in_frame;
}

static void native_stop(struct conn *c)
{
        c->nat->stopping = true;
}

static int native_attach(struct conn *c)
{
        struct native *n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        if (chp_sha256_init(&n->sha) != 0) {
                free(n);
                return -ENOMEM;
        }
        c->nat = n;
        c->proto = n;
        n->born_us = chp_net_now_us();
        if (c->sh->alog)
                chp_alog_peer_addr(c->fd, n->addr);
        return 0;
}

static void native_detach(struct conn *c)
{
        struct native *n = c->nat;
        if (!n)
                return;
        if (n->payload) {
                conn_mem_drop(c); /* a frame cut short: what of it was charged */
                free(n->payload);
        }
        native_upload_forget_all(c);
        log_session(c);
        free(n->log);
        chp_sha256_free(&n->sha);
        free(n);
        c->nat = NULL;
}

const struct proto_ops native_ops = {
    .name = "native",
    .secure = true,
    .transport = &chp_secure_transport,
    .attach = native_attach,
    .detach = native_detach,
    .on_input = native_on_input,
    .can_read = native_can_read,
    .busy = native_busy,
    .stop = native_stop,
};
