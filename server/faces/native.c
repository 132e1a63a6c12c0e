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
uint8_t *native_reply_frame(struct conn *c, uint8_t type, uint32_t id, size_t payload_len)
{
        uint8_t *p = conn_out_reserve(c, CHP_FRAME_HEADER + payload_len);
        if (!p) {
                conn_close(c);
                return NULL;
        }
        chp_frame_header_encode(p, type, id, (uint32_t)payload_len);
        c->last_active = chp_net_now_ms();
        return p + CHP_FRAME_HEADER;
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
        uint8_t *p = native_reply_frame(c, CHP_F_ERROR, id, CHP_ERROR_PREFIX + (size_t)n);
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
                return CHP_WE_UNAVAILABLE;
        case CHP_ETOKEN_SCOPE:
        case CHP_ETOKEN_FILE:
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

/* What a client over a concurrency limit is told to wait: uploads in progress end in seconds. */
#define RETRY_AFTER_S 5

void native_reply_refusal(struct conn *c, uint32_t id, int rc, const char *what)
{
        chp_metrics_refuse(c->sh->metrics, rc);
        uint32_t code = native_wire_code(rc);
        if (code == CHP_WE_LIMITED)
                native_reply_error(c, id, code, "retry after %d s: %s: %s", RETRY_AFTER_S, what,
                                   chp_strerror(rc));
        else
                native_reply_error(c, id, code, "%s: %s", what, chp_strerror(rc));
}

void native_reply_store_error(struct conn *c, uint32_t id, int rc)
{
        native_reply_error(c, id, native_wire_code(rc), "%s", chp_strerror(rc));
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
        n->hello = true;
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
               n->window_used < cfg->window_bytes && c->out_bytes < cfg->window_bytes;
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
