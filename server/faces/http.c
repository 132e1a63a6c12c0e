/* http.c — chapard's HTTP/1.1 face: tus 1.0.0 uploads, Range downloads, /metrics, /healthz.
 *
 *   tus client                                   relay
 *     POST /files/  Upload-Length ---------------->   store: upload session (no manifest)
 *     <-------------------------------------------- 201 Location: /files/<id>
 *     PATCH /files/<id> Upload-Offset: 0 + body -->   cut into chunks as it streams: each full
 *                                                     chunk hashed and put (durable), the bytes
 *                                                     past the last whole chunk kept as "tail"
 *     <-------------------------------------------- 204 Upload-Offset: <durable bytes>
 *     ... last PATCH completes the upload --------->   manifest from the chunks, committed
 *     <-------------------------------------------- 204 + Chapar-File-Id: <file id>
 *     GET /f/<file id>  Range: bytes=a-b --------->   chunks spliced from the page cache
 *
 * Loop thread only. One request at a time per connection, in order (pipelined requests wait in
 * the input buffer). Bodies are never buffered whole: a PATCH body lands in chunk-sized buffers
 * handed to the store; at most window_bytes of them are in flight before the relay stops
 * reading. With Upload-Checksum the chunks are stored first and attached to the upload only
 * once the whole body matched, so a mismatch appends nothing (460). HTTP is plaintext: it is
 * meant for loopback or behind a TLS terminator.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "conn.h"
#include "err.h"
#include "hash.h"
#include "http_parse.h"
#include "log.h"
#include "manifest.h"

#define HEAD_MAX    CHP_HTTP_MAX_HEAD
#define RESP_MAX    4096
#define DRAIN_LOW   (4u << 20) /* keep this many download bytes queued */
/* a body left unread by a response is read and dropped up to this size; a longer one closes */
#define UNREAD_MAX  (64u << 10)
#define TUS_VERSION "1.0.0"
#define TUS_EXT                                                                                    \
        "creation,creation-with-upload,creation-defer-length,termination,checksum,"                \
        "expiration"
#define EXPOSE                                                                                     \
        "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Location, "                \
        "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, "                                \
        "Tus-Checksum-Algorithm, Chapar-File-Id, Content-Range, ETag"
#define ALLOW_HDRS                                                                                 \
        "Content-Type, Upload-Offset, Upload-Length, Upload-Defer-Length, "                        \
        "Upload-Metadata, Upload-Checksum, Upload-Concat, Tus-Resumable, "                         \
        "X-HTTP-Method-Override, X-Requested-With, Range, If-None-Match"

enum route { R_NONE, R_FILES, R_UPLOAD, R_FILE, R_METRICS, R_HEALTHZ };
/* PH_DISCARD: the response is out, the rest of the request's body is read and dropped */
enum phase { PH_HEAD, PH_CREATE, PH_BODY, PH_FLUSH, PH_COMMIT, PH_SEND, PH_DISCARD };

struct attach {
        uint32_t index;
        uint8_t addr[CHP_HASH_BYTES];
};

struct hop {
        struct conn_op base;
        uint8_t *buf; /* chunk bytes owned by the op */
        size_t len;
        struct chp_upload *upload;
        uint8_t *manifest;
};

struct download {
        uint8_t *manifest; /* owned */
        struct chp_manifest m;
        uint64_t next, last; /* byte positions still to queue: [next, last] */
};

struct http {
        struct conn *c;
        enum phase ph;
        bool stopping;
        /* the request being served */
        int method;
        enum route route;
        uint8_t id[CHP_HASH_BYTES];
        bool keep_alive, close_after, head_only;
        char origin[256];
        bool has_origin, expect_continue, continued; /* continued: 100 Continue was sent */
        uint64_t body_left; /* body bytes not read yet (the response may leave some unread) */
        /* tus */
        struct chp_upload *up;
        bool created; /* a POST that made the upload */
        uint32_t cs;
        uint64_t length;     /* declared, or UINT64_MAX while deferred */
        bool set_length;     /* this PATCH carries the length of a deferred upload */
        uint64_t start;      /* durable offset at the request's start */
        uint32_t next_index; /* chunk being filled */
        uint8_t *chunk;      /* its buffer (cs bytes), counted in the memory budget */
        size_t fill, base;   /* bytes in chunk; of which the first base were kept before */
        struct chp_sha256 sha;
        bool sha_ok;
        EVP_MD_CTX *csum; /* Upload-Checksum over the body */
        uint8_t csum_want[32];
        size_t csum_len;
        struct attach *attach; /* checksum mode: chunks stored, to attach at the end */
        uint32_t nattach, attach_cap;
        uint64_t inflight; /* chunk bytes with the writer */
        uint32_t pending;  /* store requests outstanding */
        int failed;        /* the first of their errors */
        uint8_t file_id[CHP_HASH_BYTES];
        bool committed;
        bool claimed; /* this request is the upload's one writer (chp_upload_claim) */
        struct download dl;
        char *head;     /* the request head being served (HEAD_MAX bytes) */
        struct chp_http_parser hp; /* the next request's head, as far as it has arrived */
        char host[256]; /* the Host header, for absolute Location URLs */
};

static void http_on_input(struct conn *c);
static void hop_done(struct conn_op *base);
static void maybe_reply(struct http *h);

/* ---- responses --------------------------------------------------------------------------- */

struct resp {
        char buf[RESP_MAX];
        size_t len;
        int status; /* the status line's, counted when the response is queued */
        bool overflow;
};

__attribute__((format(printf, 2, 3))) static void add(struct resp *r, const char *fmt, ...)
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
        case 431:
                return "Request Header Fields Too Large";
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

static void start(struct http *h, struct resp *r, int status)
{
        unread_body_rule(h);
        r->len = 0;
        r->overflow = false;
        r->status = status;
        add(r, "HTTP/1.1 %d %s\r\n", status, reason(status));
        if (h->route == R_FILES || h->route == R_UPLOAD)
                add(r, "Tus-Resumable: " TUS_VERSION "\r\n");
        if (h->has_origin) {
                const char *allowed = h->c->sh->cfg->cors_origins;
                if (strcmp(allowed, "*") == 0) {
                        add(r, "Access-Control-Allow-Origin: *\r\n");
                } else {
                        /* echo the origin when it is on the list */
                        size_t ol = strlen(h->origin);
                        for (const char *p = allowed; *p;) {
                                size_t n = strcspn(p, " ,");
                                if (n == ol && strncmp(p, h->origin, n) == 0) {
                                        add(r,
                                            "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n",
                                            h->origin);
                                        break;
                                }
                                p += n;
                                p += strspn(p, " ,");
                        }
                }
                add(r, "Access-Control-Expose-Headers: " EXPOSE "\r\n");
        }
        if (!h->keep_alive || h->close_after || h->stopping)
                add(r, "Connection: close\r\n");
}

/* Ends the head (with Content-Length body_len unless no_length) and queues it with the body. */
static void finish(struct http *h, struct resp *r, const void *body, size_t body_len,
                   bool no_length)
{
        struct conn *c = h->c;
        if (!no_length)
                add(r, "Content-Length: %zu\r\n", body_len);
        add(r, "\r\n");
        if (r->status >= 100 && r->status < 600)
                atomic_fetch_add(&c->sh->http_status[r->status / 100], 1);
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
        c->last_active = chp_now_ms();
}

static void simple(struct http *h, int status, const char *msg)
{
        struct resp r;
        /* decided before the head is written, so that it says "Connection: close" when the
         * relay will close (a malformed request, a server error; a body left unread is
         * start()'s rule) */
        if (status >= 400)
                h->close_after = h->close_after || status >= 500 || status == 400 ||
                                 status == 414 || status == 431 || status == 505 || status == 501;
        start(h, &r, status);
        if (status == 412 || h->route == R_FILES || h->route == R_UPLOAD)
                add(&r, "Tus-Version: " TUS_VERSION "\r\n");
        if (msg) {
                add(&r, "Content-Type: text/plain\r\n");
                char body[512];
                int n = snprintf(body, sizeof(body), "%s\n", msg);
                finish(h, &r, body, (size_t)n, false);
        } else {
                finish(h, &r, NULL, 0, false);
        }
}

static void http_date(uint64_t t, char *out, size_t cap)
{
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static int status_of(int rc)
{
        switch (rc) {
        case -ENOENT:
                return 404;
        case CHP_EMAPFULL:
        case -ENOSPC:
        case -EDQUOT:
                return 507;
        case CHP_ECLOSED:
                return 503;
        case -EINVAL:
        case -EBADMSG:
                return 400;
        }
        return 500;
}

/* ---- request state ----------------------------------------------------------------------- */

static void budget_free(struct chp_shared *sh, uint8_t *p, size_t n)
{
        if (p) {
                atomic_fetch_sub(&sh->mem_used, n);
                free(p);
        }
}

static void request_reset(struct http *h)
{
        struct chp_shared *sh = h->c->sh;
        if (h->chunk)
                conn_mem_drop(h->c); /* charged as its bytes arrived (conn_want_body) */
        free(h->chunk);
        h->chunk = NULL;
        free(h->up);
        h->up = NULL;
        free(h->attach);
        h->attach = NULL;
        h->nattach = h->attach_cap = 0;
        EVP_MD_CTX_free(h->csum);
        h->csum = NULL;
        free(h->dl.manifest);
        memset(&h->dl, 0, sizeof(h->dl));
        h->ph = PH_HEAD;
        chp_http_parser_init(&h->hp);
        h->route = R_NONE;
        h->body_left = 0;
        h->fill = h->base = 0;
        if (h->claimed)
                chp_upload_release(sh, h->id);
        h->created = h->set_length = h->committed = h->claimed = false;
        h->failed = 0;
        h->has_origin = h->expect_continue = h->continued = h->head_only = false;
        if (h->c->body)
                h->c->body = NULL;
}

/* The response is queued: either close, or go on with the next request (after dropping what
 * is left of this one's body: see unread_body_rule). */
static void request_done(struct http *h)
{
        struct conn *c = h->c;
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

/* ---- store requests ---------------------------------------------------------------------- */

static struct hop *hop_new(struct http *h, enum chp_store_req_type type)
{
        struct hop *op = calloc(1, sizeof(*op));
        if (!op)
                return NULL;
        op->base.c = h->c;
        op->base.req.type = type;
        op->base.req.done = conn_op_done;
        op->base.done = hop_done;
        return op;
}

static void hop_free(struct hop *op)
{
        budget_free(op->base.c->sh, op->buf, op->len);
        free(op->upload);
        free(op->manifest);
        free(op);
}

static bool submit(struct http *h, struct hop *op)
{
        op->base.t0 = chp_now_us();
        int rc = chp_store_submit(h->c->sh->store, &op->base.req);
        if (rc) {
                if (!h->failed)
                        h->failed = rc;
                hop_free(op);
                return false;
        }
        h->pending++;
        conn_hold(h->c);
        return true;
}

/* ---- tus: the body into chunks ----------------------------------------------------------- */

/* Takes a fresh chunk buffer if the window allows; the body keeps arriving into it. */
static bool chunk_begin(struct http *h)
{
        struct conn *c = h->c;
        const struct chp_config *cfg = c->sh->cfg;
        if (h->chunk)
                return true;
        if (h->inflight + h->cs > cfg->window_bytes)
                return false; /* back-pressure: read on once the writer catches up */
        /* the memory budget is charged as the body arrives, not for the whole chunk now */
        h->chunk = malloc(h->cs);
        if (!h->chunk)
                return false;
        h->fill = h->base = 0;
        if (chp_sha256_reset(&h->sha) != 0)
                h->failed = -EIO;
        return true;
}

/* Hands the filled (or final) chunk to the writer. */
static int chunk_put(struct http *h)
{
        uint8_t addr[CHP_HASH_BYTES];
        if (chp_sha256_final(&h->sha, addr) != 0)
                return -EIO;
        struct hop *op = hop_new(h, CHP_REQ_PUT);
        if (!op)
                return -ENOMEM;
        struct chp_store_req *r = &op->base.req;
        conn_mem_settle(h->c, h->cs); /* the op frees it as cs bytes of the budget */
        op->buf = h->chunk;
        op->len = h->cs;
        h->chunk = NULL;
        memcpy(r->u.put.addr, addr, CHP_HASH_BYTES);
        r->u.put.data = op->buf;
        r->u.put.len = (uint32_t)h->fill;
        r->u.put.verified = true;
        if (h->csum) {
                /* attached once the whole body is known to match its checksum */
                if (h->nattach == h->attach_cap) {
                        uint32_t cap = h->attach_cap ? h->attach_cap * 2 : 16;
                        struct attach *na = realloc(h->attach, cap * sizeof(*na));
                        if (!na) {
                                hop_free(op);
                                return -ENOMEM;
                        }
                        h->attach = na;
                        h->attach_cap = cap;
                }
                h->attach[h->nattach].index = h->next_index;
                memcpy(h->attach[h->nattach].addr, addr, CHP_HASH_BYTES);
                h->nattach++;
        } else {
                r->u.put.has_upload = true;
                memcpy(r->u.put.upload_id, h->up->id, CHP_UPLOAD_ID_BYTES);
                r->u.put.index = h->next_index;
                r->u.put.clear_tail = true; /* any kept tail is inside this chunk now */
        }
        h->inflight += h->cs;
        h->next_index++;
        return submit(h, op) ? 0 : h->failed;
}

/* Bytes past the last whole chunk, kept durably so that the next PATCH continues them. */
static int tail_keep(struct http *h)
{
        size_t n = h->fill - h->base;
        if (!n)
                return 0;
        struct hop *op = hop_new(h, CHP_REQ_TAIL_APPEND);
        if (!op)
                return -ENOMEM;
        op->buf = malloc(n);
        if (!op->buf) {
                hop_free(op);
                return -ENOMEM;
        }
        atomic_fetch_add(&h->c->sh->mem_used, n);
        op->len = n;
        memcpy(op->buf, h->chunk + h->base, n);
        memcpy(op->base.req.u.tail_append.upload_id, h->up->id, CHP_UPLOAD_ID_BYTES);
        op->base.req.u.tail_append.data = op->buf;
        op->base.req.u.tail_append.len = (uint32_t)n;
        return submit(h, op) ? 0 : h->failed;
}

static int attach_all(struct http *h)
{
        for (uint32_t i = 0; i < h->nattach; i++) {
                struct hop *op = hop_new(h, CHP_REQ_PUT);
                if (!op)
                        return -ENOMEM;
                struct chp_store_req *r = &op->base.req;
                memcpy(r->u.put.addr, h->attach[i].addr, CHP_HASH_BYTES);
                r->u.put.has_upload = true;
                memcpy(r->u.put.upload_id, h->up->id, CHP_UPLOAD_ID_BYTES);
                r->u.put.index = h->attach[i].index;
                r->u.put.clear_tail = true;
                if (!submit(h, op))
                        return h->failed;
        }
        return 0;
}

/* The body is all here: check it, keep its tail or finish the upload. */
static void body_end(struct http *h)
{
        int rc = 0;
        if (h->csum) {
                uint8_t got[EVP_MAX_MD_SIZE];
                unsigned n = 0;
                if (EVP_DigestFinal_ex(h->csum, got, &n) != 1 || n != h->csum_len ||
                    sodium_memcmp(got, h->csum_want, n) != 0) {
                        /* 460: nothing of this body becomes part of the upload (its chunks
                         * were stored content-addressed, but never attached) */
                        h->ph = PH_FLUSH;
                        h->failed = 460;
                        return;
                }
                /* verified: what follows (the last short chunk, the tail) is attached at once */
                EVP_MD_CTX_free(h->csum);
                h->csum = NULL;
                rc = attach_all(h);
        }
        bool final = h->length != CHP_UPLOAD_SIZE_UNKNOWN &&
                     (uint64_t)h->next_index * h->cs + (h->chunk ? h->fill : 0) == h->length;
        if (!rc && h->chunk) {
                if (final && h->fill > 0)
                        rc = chunk_put(h);
                else if (!final)
                        rc = tail_keep(h);
        }
        if (rc && !h->failed)
                h->failed = rc;
        h->ph = PH_FLUSH;
}

/* n body bytes are now at chunk[fill]: hash them (and the checksum) and count them. */
static void absorb(struct http *h, size_t n)
{
        if (h->csum && EVP_DigestUpdate(h->csum, h->chunk + h->fill, n) != 1)
                h->failed = -EIO;
        /* hashed while the bytes are still in cache */
        if (chp_sha256_update(&h->sha, h->chunk + h->fill, n) != 0)
                h->failed = -EIO;
        h->fill += n;
        h->body_left -= n;
}

/* Moves the body along: what arrived into the chunk buffer, full chunks to the writer, the next
 * piece asked for (straight into the chunk buffer), or the end. */
static void body_progress(struct http *h)
{
        struct conn *c = h->c;
        if (c->body) {
                if (c->body_got > h->fill)
                        absorb(h, c->body_got - h->fill);
                if (c->body_got < c->body_len)
                        return; /* more of this piece to come */
                c->body = NULL;
        }
        for (;;) {
                if (h->failed) {
                        /* the writer failed: stop here, answer, and close (the rest of the body
                         * is not read) */
                        h->close_after = true;
                        h->ph = PH_FLUSH;
                        maybe_reply(h);
                        return;
                }
                if (h->chunk && h->fill == h->cs) {
                        int rc = chunk_put(h);
                        if (rc && !h->failed)
                                h->failed = rc;
                        continue;
                }
                if (h->body_left == 0) {
                        body_end(h);
                        maybe_reply(h);
                        return;
                }
                if (!chunk_begin(h))
                        return; /* the window is full: a store completion resumes */
                size_t want = h->cs - h->fill < h->body_left ? h->cs - h->fill : h->body_left;
                /* bytes that came with the head (or right after it) are used first */
                size_t have = c->in_len < want ? c->in_len : want;
                if (have) {
                        memcpy(h->chunk + h->fill, c->in, have);
                        conn_consume(c, have);
                        absorb(h, have);
                        continue;
                }
                conn_want_body(c, h->chunk, h->fill + want, h->fill);
                return;
        }
}

/* ---- tus requests ------------------------------------------------------------------------ */

static int parse_upload_id(struct chp_http_str path, uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        /* /files/<32 lowercase hex> */
        if (path.n != 7 + 32)
                return -EINVAL;
        for (size_t i = 7; i < path.n; i++)
                if (!((path.p[i] >= '0' && path.p[i] <= '9') ||
                      (path.p[i] >= 'a' && path.p[i] <= 'f')))
                        return -EINVAL;
        return chp_hex_decode(path.p + 7, 32, id, CHP_UPLOAD_ID_BYTES);
}

/* Bytes durable in a sequential upload: whole chunks (the last one, stored only when it ends the
 * upload, may be shorter) and the kept tail. */
static uint64_t progress_bytes(uint32_t chunks, size_t tail, uint32_t cs, uint64_t length)
{
        uint64_t whole = (uint64_t)chunks * cs;
        if (length != CHP_UPLOAD_SIZE_UNKNOWN && whole > length)
                whole = length;
        return whole + tail;
}

/* Loads the upload for a PATCH/HEAD: its record, where it stands, its kept tail. */
static int load_upload(struct http *h, bool with_tail)
{
        struct chp_store *s = h->c->sh->store;
        h->up = calloc(1, sizeof(*h->up));
        if (!h->up)
                return -ENOMEM;
        int rc = chp_store_upload_get(s, h->id, h->up);
        if (rc)
                return rc;
        if (h->up->has_manifest)
                return -ENOENT; /* a native upload, not for tus */
        h->cs = h->up->chunk_size;
        h->length = h->up->declared_size;
        if (h->up->complete) {
                h->start = h->length;
                memcpy(h->file_id, h->up->file_id, CHP_HASH_BYTES);
                h->committed = true;
                return 0;
        }
        uint32_t chunks;
        size_t tail;
        if ((rc = chp_store_upload_progress(s, h->id, &chunks, &tail)))
                return rc;
        h->next_index = chunks;
        h->start = progress_bytes(chunks, tail, h->cs, h->length);
        if (!with_tail || !tail)
                return 0;
        if (!chunk_begin(h))
                return -EBUSY;
        ssize_t n = chp_store_upload_tail(s, h->id, h->chunk, h->cs);
        if (n < 0)
                return (int)n;
        h->fill = h->base = (size_t)n;
        /* the kept bytes begin this chunk: they are part of its address, not of this body */
        return chp_sha256_update(&h->sha, h->chunk, h->fill) == 0 ? 0 : -EIO;
}

static void head_upload(struct http *h)
{
        /* while a PATCH streams into the upload its offset is moving: the client asks again */
        if (chp_upload_busy(h->c->sh, h->id)) {
                simple(h, 423, "another request is writing this upload; retry shortly");
                return;
        }
        int rc = load_upload(h, false);
        if (rc) {
                simple(h, rc == -ENOENT ? 404 : status_of(rc), NULL);
                return;
        }
        struct resp r;
        char date[64];
        start(h, &r, 200);
        add(&r, "Cache-Control: no-store\r\nUpload-Offset: %llu\r\n", (unsigned long long)h->start);
        if (h->length == CHP_UPLOAD_SIZE_UNKNOWN)
                add(&r, "Upload-Defer-Length: 1\r\n");
        else
                add(&r, "Upload-Length: %llu\r\n", (unsigned long long)h->length);
        if (h->up->meta_len)
                add(&r, "Upload-Metadata: %.*s\r\n", (int)h->up->meta_len,
                    (const char *)h->up->meta);
        if (h->up->expires) {
                http_date(h->up->expires, date, sizeof(date));
                add(&r, "Upload-Expires: %s\r\n", date);
        }
        if (h->committed) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(h->file_id, CHP_HASH_BYTES, hex);
                add(&r, "Chapar-File-Id: %s\r\n", hex);
        }
        finish(h, &r, NULL, 0, true);
        request_done(h);
}

/* After validation: the body streams into chunks (PATCH, or POST with a body). */
static void body_start(struct http *h)
{
        struct conn *c = h->c;
        if (h->expect_continue && h->body_left) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                uint8_t *out = conn_out_reserve(c, sizeof(cont) - 1);
                if (out)
                        memcpy(out, cont, sizeof(cont) - 1);
                h->continued = true;
        }
        h->ph = PH_BODY;
        c->body = NULL;
        body_progress(h);
}

/* Whether the writer is done with this request: then reply (or commit, then reply). */
static void maybe_reply(struct http *h)
{
        if (h->ph != PH_FLUSH && h->ph != PH_COMMIT)
                return;
        if (h->pending)
                return;
        struct conn *c = h->c;
        if (h->failed == 460) {
                simple(h, 460, "Upload-Checksum does not match the body; nothing was appended");
                request_done(h);
                return;
        }
        if (h->failed) {
                simple(h, status_of(h->failed), chp_strerror(h->failed));
                request_done(h);
                return;
        }
        uint64_t offset;
        uint32_t chunks;
        size_t tail;
        int rc = 0;
        bool complete = false;
        if (h->ph == PH_FLUSH) {
                rc = chp_store_upload_progress(c->sh->store, h->id, &chunks, &tail);
                offset = progress_bytes(chunks, tail, h->cs, h->length);
                if (!rc && h->length != CHP_UPLOAD_SIZE_UNKNOWN && offset == h->length) {
                        /* the last byte is durable: the manifest, then the file */
                        uint32_t n = chunks;
                        uint8_t *have = calloc(1, n ? n : 1);
                        uint8_t *addrs = malloc((size_t)n * CHP_HASH_BYTES + 1);
                        struct hop *op = hop_new(h, CHP_REQ_COMMIT);
                        rc = have && addrs && op ? 0 : -ENOMEM;
                        if (!rc)
                                rc = chp_store_upload_chunks(c->sh->store, h->id, have, addrs, n);
                        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                                 .chunk_size = h->cs,
                                                 .total_size = h->length,
                                                 .chunk_count = n,
                                                 .addrs = addrs};
                        size_t mlen = chp_manifest_encoded_size(&m);
                        if (!rc && (chp_manifest_check(&m) != 0 || !(op->manifest = malloc(mlen)) ||
                                    chp_manifest_encode(&m, op->manifest, mlen) < 0))
                                rc = -EIO;
                        free(have);
                        free(addrs);
                        if (rc) {
                                if (op)
                                        hop_free(op);
                        } else {
                                struct chp_store_req *r = &op->base.req;
                                const struct chp_config *cfg = c->sh->cfg;
                                r->u.commit.manifest = op->manifest;
                                r->u.commit.manifest_len = mlen;
                                r->u.commit.tenant = h->up->tenant;
                                r->u.commit.expires =
                                    cfg->file_expiry ? (uint64_t)time(NULL) + cfg->file_expiry : 0;
                                r->u.commit.has_upload = true;
                                r->u.commit.keep_upload = true;
                                memcpy(r->u.commit.upload_id, h->id, CHP_UPLOAD_ID_BYTES);
                                h->ph = PH_COMMIT;
                                if (submit(h, op))
                                        return; /* on with the reply when it is committed */
                                rc = h->failed;
                        }
                }
        } else {
                offset = h->length;
                complete = true;
        }
        if (rc) {
                simple(h, status_of(rc), chp_strerror(rc));
                request_done(h);
                return;
        }
        struct resp r;
        start(h, &r, h->created ? 201 : 204);
        if (h->created) {
                char hex[2 * CHP_UPLOAD_ID_BYTES + 1];
                chp_hex_encode(h->id, CHP_UPLOAD_ID_BYTES, hex);
                if (h->host[0])
                        add(&r, "Location: http://%s/files/%s\r\n", h->host, hex);
                else
                        add(&r, "Location: /files/%s\r\n", hex);
                if (h->up && h->up->expires) {
                        char date[64];
                        http_date(h->up->expires, date, sizeof(date));
                        add(&r, "Upload-Expires: %s\r\n", date);
                }
        }
        add(&r, "Upload-Offset: %llu\r\n", (unsigned long long)offset);
        if (complete) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(h->file_id, CHP_HASH_BYTES, hex);
                add(&r, "Chapar-File-Id: %s\r\n", hex);
        }
        finish(h, &r, NULL, 0, !h->created);
        request_done(h);
}

static void hop_done(struct conn_op *base)
{
        struct hop *op = (struct hop *)base;
        struct conn *c = base->c;
        struct http *h = c->proto;
        struct chp_store_req *r = &base->req;
        h->pending--;
        if (r->type == CHP_REQ_PUT && op->buf) {
                h->inflight -= h->cs;
                chp_observe_commit(c->sh, base->t0);
                if (!r->status)
                        atomic_fetch_add(r->u.put.deduplicated ? &c->sh->chunks_dedup
                                                               : &c->sh->chunks_stored,
                                         1);
        }
        if (r->status && !h->failed)
                h->failed = r->status;
        if (!c->closed) {
                if (r->type == CHP_REQ_UPLOAD_CREATE && h->ph == PH_CREATE) {
                        if (r->status) {
                                simple(h, status_of(r->status), chp_strerror(r->status));
                                request_done(h);
                        } else {
                                h->failed = 0;
                                body_start(h);
                        }
                } else if (r->type == CHP_REQ_COMMIT && h->ph == PH_COMMIT && !r->status) {
                        memcpy(h->file_id, r->u.commit.file_id, CHP_HASH_BYTES);
                        h->committed = true;
                        maybe_reply(h);
                } else if (r->type == CHP_REQ_UPLOAD_DELETE) {
                        simple(h, r->status ? status_of(r->status) : 204, NULL);
                        request_done(h);
                } else if (h->ph == PH_BODY && !c->body) {
                        body_progress(h); /* the window opened: read on */
                } else {
                        maybe_reply(h);
                }
                if (h->ph == PH_HEAD || h->ph == PH_DISCARD)
                        http_on_input(c); /* answered: the next request */
                conn_flush(c);
                conn_maybe_read(c);
        }
        hop_free(op);
        conn_release(c);
}

/* ---- downloads --------------------------------------------------------------------------- */

static bool parse_file_id(struct chp_http_str path, uint8_t id[CHP_HASH_BYTES])
{
        /* /f/<64 lowercase hex> */
        if (path.n != 3 + 64)
                return false;
        for (size_t i = 3; i < path.n; i++)
                if (!((path.p[i] >= '0' && path.p[i] <= '9') ||
                      (path.p[i] >= 'a' && path.p[i] <= 'f')))
                        return false;
        return chp_hex_decode(path.p + 3, 64, id, CHP_HASH_BYTES) == 0;
}

/* Queues download bytes until DRAIN_LOW are waiting (called again as they drain). */
static void dl_fill(struct conn *c)
{
        struct http *h = c->proto;
        struct download *d = &h->dl;
        if (!d->manifest || c->closed)
                return;
        uint32_t cs = d->m.chunk_size;
        while (d->next <= d->last && c->out_bytes < DRAIN_LOW) {
                uint32_t i = (uint32_t)(d->next / cs);
                uint32_t off = (uint32_t)(d->next % cs);
                uint32_t clen = chp_manifest_chunk_len(&d->m, i);
                uint64_t upto = (uint64_t)i * cs + clen - 1;
                uint32_t n = (uint32_t)((upto < d->last ? upto : d->last) - d->next + 1);
                const uint8_t *addr = d->m.addrs + (size_t)i * CHP_HASH_BYTES;
                struct chp_chunk_loc loc;
                int rc = chp_store_locate(c->sh->store, addr, &loc);
                if (rc || loc.len != clen) {
                        if (!rc)
                                chp_store_loc_release(c->sh->store, &loc);
                        chp_log_error("http", "download: chunk %u of a file is missing (%s)", i,
                                      chp_strerror(rc ? rc : CHP_ECORRUPT));
                        conn_close(c); /* the head is out: the body can only be cut */
                        return;
                }
                if (loc.is_inline) {
                        uint8_t *buf = malloc(clen ? clen : 1);
                        ssize_t got = buf ? chp_store_read(c->sh->store, addr, buf, clen) : -1;
                        uint8_t *out = got == (ssize_t)clen ? conn_out_reserve(c, n) : NULL;
                        if (out)
                                memcpy(out, buf + off, n);
                        free(buf);
                        if (!out) {
                                conn_close(c);
                                return;
                        }
                } else if (conn_out_splice(c, &loc, loc.offset + off, n) != 0) {
                        conn_close(c);
                        return;
                }
                d->next += n;
        }
        if (d->next > d->last) {
                free(d->manifest);
                d->manifest = NULL;
                h->ph = PH_HEAD;
                request_done(h);
        }
}

/* Content-Type and Content-Disposition of a download: the filetype and filename that the tus
 * upload which stored the file gave in Upload-Metadata, when they are sane (the type a media
 * type, the name made safe by chp_http_content_disposition); else application/octet-stream and
 * no disposition. Metadata never reaches the head unchecked. A type the uploader chose is
 * always an attachment, never rendered inline (an uploaded text/html page would otherwise run
 * as the relay's origin), and never sniffed. */
static void file_names(struct http *h, struct resp *r)
{
        struct chp_store *s = h->c->sh->store;
        uint8_t *meta = malloc(CHP_UPLOAD_META_MAX);
        uint8_t *val = malloc(CHP_UPLOAD_META_MAX);
        char *disp = malloc(CHP_HTTP_DISPOSITION_MAX);
        ssize_t mlen = meta ? chp_store_file_meta(s, h->id, meta, CHP_UPLOAD_META_MAX) : 0;
        struct chp_http_str m = {(const char *)meta, mlen > 0 ? (size_t)mlen : 0};
        size_t n;
        bool typed = false;
        if (m.n && val && chp_http_check_metadata(m) == 0) {
                if (chp_http_metadata_get(m, "filetype", val, CHP_UPLOAD_META_MAX, &n) == 0 &&
                    chp_http_media_type_ok((struct chp_http_str){(const char *)val, n})) {
                        add(r, "Content-Type: %.*s\r\n", (int)n, (const char *)val);
                        typed = true;
                }
                if (disp &&
                    chp_http_metadata_get(m, "filename", val, CHP_UPLOAD_META_MAX, &n) == 0 &&
                    chp_http_content_disposition(val, n, disp, CHP_HTTP_DISPOSITION_MAX) > 0)
                        add(r, "Content-Disposition: %s\r\n", disp);
                else if (typed)
                        add(r, "Content-Disposition: attachment\r\n");
        }
        if (!typed)
                add(r, "Content-Type: application/octet-stream\r\n");
        add(r, "X-Content-Type-Options: nosniff\r\n");
        free(disp);
        free(val);
        free(meta);
}

static void get_file(struct http *h, const struct chp_http_request *req)
{
        struct conn *c = h->c;
        uint8_t *man = NULL;
        size_t len = 0;
        int rc = chp_store_file_get(c->sh->store, h->id, &man, &len, NULL);
        if (rc) {
                simple(h, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "no such file" : NULL);
                request_done(h);
                return;
        }
        struct download *d = &h->dl;
        d->manifest = man;
        if (chp_manifest_decode(man, len, &d->m) < 0) {
                simple(h, 500, NULL);
                request_done(h);
                return;
        }
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(h->id, CHP_HASH_BYTES, hex);
        uint64_t total = d->m.total_size;
        const struct chp_http_str *inm = chp_http_header(req, "If-None-Match");
        struct resp r;
        if (inm && chp_http_etag_matches(*inm, hex)) {
                start(h, &r, 304);
                add(&r, "ETag: \"%s\"\r\n", hex);
                finish(h, &r, NULL, 0, true);
                request_done(h);
                return;
        }
        const struct chp_http_str *range = chp_http_header(req, "Range");
        const struct chp_http_str *if_range = chp_http_header(req, "If-Range");
        uint64_t first = 0, last = total ? total - 1 : 0;
        int status = 200;
        /* If-Range: the Range applies only while the client's copy is this file (a strong
         * ETag match); otherwise the whole file is sent */
        if (if_range && (chp_http_header_count(req, "If-Range") != 1 ||
                         !chp_http_if_range_matches(*if_range, hex)))
                range = NULL;
        if (range && chp_http_header_count(req, "Range") == 1) {
                rc = chp_http_parse_range(*range, total, &first, &last);
                if (rc == -ERANGE) {
                        start(h, &r, 416);
                        add(&r, "Content-Range: bytes */%llu\r\n", (unsigned long long)total);
                        finish(h, &r, NULL, 0, false);
                        request_done(h);
                        return;
                }
                if (rc == 0)
                        status = 206;
                else
                        first = 0, last = total ? total - 1 : 0;
        }
        start(h, &r, status);
        file_names(h, &r);
        add(&r,
            "Accept-Ranges: bytes\r\nETag: \"%s\"\r\nCache-Control: private, immutable\r\n",
            hex);
        if (status == 206)
                add(&r, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                    (unsigned long long)last, (unsigned long long)total);
        uint64_t body = total ? last - first + 1 : 0;
        add(&r, "Content-Length: %llu\r\n", (unsigned long long)body);
        finish(h, &r, NULL, 0, true);
        if (h->head_only || body == 0) {
                request_done(h);
                return;
        }
        d->next = first;
        d->last = last;
        h->ph = PH_SEND;
        dl_fill(c);
}

/* ---- metrics ----------------------------------------------------------------------------- */

static void metrics(struct http *h)
{
        struct chp_shared *sh = h->c->sh;
        char *body = malloc(16384);
        if (!body) {
                simple(h, 500, NULL);
                request_done(h);
                return;
        }
        size_t n = 0, cap = 16384;
#define M(...)                                                                                     \
        do {                                                                                       \
                int w_ = snprintf(body + n, cap - n, __VA_ARGS__);                                 \
                if (w_ > 0 && (size_t)w_ < cap - n)                                                \
                        n += (size_t)w_;                                                           \
        } while (0)
        struct chp_store_stats st = {0};
        int src = chp_store_stats(sh->store, &st);
        M("# HELP chapar_connections Open connections (native and HTTP).\n"
          "# TYPE chapar_connections gauge\nchapar_connections %u\n",
          atomic_load(&sh->conns));
        M("# HELP chapar_bytes_received_total Bytes received, by face.\n"
          "# TYPE chapar_bytes_received_total counter\n"
          "chapar_bytes_received_total{face=\"native\"} %llu\n"
          "chapar_bytes_received_total{face=\"http\"} %llu\n",
          (unsigned long long)atomic_load(&sh->bytes_in),
          (unsigned long long)atomic_load(&sh->http_bytes_in));
        M("# HELP chapar_bytes_sent_total Bytes sent, by face.\n"
          "# TYPE chapar_bytes_sent_total counter\n"
          "chapar_bytes_sent_total{face=\"native\"} %llu\n"
          "chapar_bytes_sent_total{face=\"http\"} %llu\n",
          (unsigned long long)atomic_load(&sh->bytes_out),
          (unsigned long long)atomic_load(&sh->http_bytes_out));
        M("# HELP chapar_chunks_stored_total Chunks written to the store.\n"
          "# TYPE chapar_chunks_stored_total counter\nchapar_chunks_stored_total %llu\n"
          "# HELP chapar_dedup_hits_total Chunks received that the store already held.\n"
          "# TYPE chapar_dedup_hits_total counter\nchapar_dedup_hits_total %llu\n",
          (unsigned long long)atomic_load(&sh->chunks_stored),
          (unsigned long long)atomic_load(&sh->chunks_dedup));
        M("# HELP chapar_http_requests_total HTTP requests served.\n"
          "# TYPE chapar_http_requests_total counter\nchapar_http_requests_total %llu\n",
          (unsigned long long)atomic_load(&sh->http_requests));
        M("# HELP chapar_http_responses_total HTTP responses by status class.\n"
          "# TYPE chapar_http_responses_total counter\n");
        for (int i = 1; i <= 5; i++)
                M("chapar_http_responses_total{class=\"%dxx\"} %llu\n", i,
                  (unsigned long long)atomic_load(&sh->http_status[i]));
        M("# HELP chapar_errors_total Native protocol errors sent, by code.\n"
          "# TYPE chapar_errors_total counter\n");
        for (uint32_t i = 1; i < 16; i++)
                if (atomic_load(&sh->errors[i]))
                        M("chapar_errors_total{code=\"%u\"} %llu\n", i,
                          (unsigned long long)atomic_load(&sh->errors[i]));
        M("chapar_errors_total{code=\"bad_frame_closed\"} %llu\n",
          (unsigned long long)atomic_load(&sh->frames_bad));
        M("# HELP chapar_uploads_active Upload sessions in the store.\n"
          "# TYPE chapar_uploads_active gauge\nchapar_uploads_active %llu\n",
          (unsigned long long)st.uploads);
        M("# HELP chapar_commit_seconds From a chunk handed to the writer to its acknowledgement.\n"
          "# TYPE chapar_commit_seconds histogram\n");
        for (size_t i = 0; i < CHP_COMMIT_BUCKETS; i++)
                M("chapar_commit_seconds_bucket{le=\"%g\"} %llu\n", chp_commit_buckets[i],
                  (unsigned long long)atomic_load(&sh->commit_le[i]));
        M("chapar_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
          "chapar_commit_seconds_sum %.6f\nchapar_commit_seconds_count %llu\n",
          (unsigned long long)atomic_load(&sh->commit_count),
          (double)atomic_load(&sh->commit_sum_us) / 1e6,
          (unsigned long long)atomic_load(&sh->commit_count));
        if (!src)
                M("# HELP chapar_store_chunks Chunks in the store.\n"
                  "# TYPE chapar_store_chunks gauge\nchapar_store_chunks %llu\n"
                  "# HELP chapar_store_files Files in the store.\n"
                  "# TYPE chapar_store_files gauge\nchapar_store_files %llu\n"
                  "# HELP chapar_store_segments Segment files.\n"
                  "# TYPE chapar_store_segments gauge\nchapar_store_segments %llu\n"
                  "# HELP chapar_store_segment_bytes Bytes in segment files.\n"
                  "# TYPE chapar_store_segment_bytes gauge\nchapar_store_segment_bytes %llu\n"
                  "# HELP chapar_store_live_bytes Bytes of live chunks in segments.\n"
                  "# TYPE chapar_store_live_bytes gauge\nchapar_store_live_bytes %llu\n",
                  (unsigned long long)st.chunks, (unsigned long long)st.files,
                  (unsigned long long)st.segments, (unsigned long long)st.segment_bytes,
                  (unsigned long long)st.live_bytes);
#undef M
        chp_loop_metrics(sh, body, cap, &n);
        struct resp r;
        start(h, &r, 200);
        add(&r, "Content-Type: text/plain; version=0.0.4\r\n");
        finish(h, &r, body, n, false);
        free(body);
        request_done(h);
}

/* ---- request dispatch -------------------------------------------------------------------- */

static bool tus_version_ok(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *v = chp_http_header(req, "Tus-Resumable");
        if (v && chp_http_str_ieq(*v, TUS_VERSION))
                return true;
        simple(h, 412, "Tus-Resumable: 1.0.0 is required");
        return false;
}

static bool offset_content_type(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *ct = chp_http_header(req, "Content-Type");
        if (ct && chp_http_str_ieq(*ct, "application/offset+octet-stream"))
                return true;
        simple(h, 415, "Content-Type must be application/offset+octet-stream");
        return false;
}

/* Upload-Checksum: the digest the body must have. false when the response is already queued. */
static bool checksum_setup(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *v = chp_http_header(req, "Upload-Checksum");
        if (!v)
                return true;
        int algo;
        int rc = chp_http_parse_checksum(*v, &algo, h->csum_want, &h->csum_len);
        if (rc) {
                simple(h, 400,
                       rc == -ENOTSUP ? "checksum algorithm not supported (sha1, sha256)"
                                      : "malformed Upload-Checksum");
                return false;
        }
        h->csum = EVP_MD_CTX_new();
        if (!h->csum ||
            EVP_DigestInit_ex(h->csum, algo == 1 ? EVP_sha1() : EVP_sha256(), NULL) != 1) {
                simple(h, 500, NULL);
                return false;
        }
        return true;
}

static void options(struct http *h, const struct chp_http_request *req)
{
        struct resp r;
        start(h, &r, 204);
        add(&r,
            "Tus-Version: " TUS_VERSION "\r\nTus-Extension: " TUS_EXT
            "\r\nTus-Max-Size: %llu\r\nTus-Checksum-Algorithm: sha1,sha256\r\n",
            (unsigned long long)h->c->sh->cfg->tus_max_size);
        if (h->has_origin && chp_http_header(req, "Access-Control-Request-Method"))
                add(&r, "Access-Control-Allow-Methods: GET, HEAD, POST, PATCH, DELETE, OPTIONS\r\n"
                        "Access-Control-Allow-Headers: " ALLOW_HDRS
                        "\r\nAccess-Control-Max-Age: 86400\r\n");
        finish(h, &r, NULL, 0, false);
        request_done(h);
}

static void post(struct http *h, const struct chp_http_request *req)
{
        struct conn *c = h->c;
        const struct chp_config *cfg = c->sh->cfg;
        const struct chp_http_str *len = chp_http_header(req, "Upload-Length");
        const struct chp_http_str *defer = chp_http_header(req, "Upload-Defer-Length");
        const struct chp_http_str *meta = chp_http_header(req, "Upload-Metadata");
        uint64_t length = CHP_UPLOAD_SIZE_UNKNOWN;
        if (len && (defer || chp_http_parse_u64(*len, &length) != 0)) {
                simple(h, 400, "bad Upload-Length");
                return;
        }
        if (!len && !(defer && chp_http_str_ieq(*defer, "1"))) {
                simple(h, 400, "Upload-Length or Upload-Defer-Length: 1 is required");
                return;
        }
        if (length != CHP_UPLOAD_SIZE_UNKNOWN && length > cfg->tus_max_size) {
                simple(h, 413, "larger than Tus-Max-Size");
                return;
        }
        if (meta && (meta->n > CHP_UPLOAD_META_MAX || chp_http_check_metadata(*meta) != 0)) {
                simple(h, 400, "malformed or oversized Upload-Metadata");
                return;
        }
        if (h->body_left && !offset_content_type(h, req))
                return;
        if (h->body_left && length != CHP_UPLOAD_SIZE_UNKNOWN && h->body_left > length) {
                simple(h, 413, "the body is longer than Upload-Length");
                return;
        }
        if (h->body_left > cfg->tus_max_size) {
                simple(h, 413, "larger than Tus-Max-Size");
                return;
        }
        if (!checksum_setup(h, req))
                return;
        struct hop *op = hop_new(h, CHP_REQ_UPLOAD_CREATE);
        h->up = calloc(1, sizeof(*h->up));
        if (!op || !h->up) {
                free(op);
                simple(h, 500, NULL);
                return;
        }
        struct chp_upload *u = h->up;
        randombytes_buf(u->id, sizeof(u->id));
        memcpy(h->id, u->id, CHP_UPLOAD_ID_BYTES);
        u->declared_size = length;
        u->chunk_size = h->cs = cfg->tus_chunk_size;
        u->created = (uint64_t)time(NULL);
        u->expires = cfg->upload_expiry ? u->created + cfg->upload_expiry : 0;
        if (meta) {
                memcpy(u->meta, meta->p, meta->n);
                u->meta_len = (uint32_t)meta->n;
        }
        op->upload = malloc(sizeof(*u));
        if (!op->upload) {
                hop_free(op);
                simple(h, 500, NULL);
                return;
        }
        *op->upload = *u;
        op->base.req.u.upload_create.upload = op->upload;
        h->length = length;
        h->start = 0;
        h->next_index = 0;
        h->created = true;
        h->ph = PH_CREATE;
        if (!submit(h, op)) {
                simple(h, status_of(h->failed), chp_strerror(h->failed));
                return;
        }
        atomic_fetch_add(&c->sh->uploads_active, 1);
}

static void patch(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *off = chp_http_header(req, "Upload-Offset");
        const struct chp_http_str *len = chp_http_header(req, "Upload-Length");
        uint64_t offset, length;
        if (!offset_content_type(h, req))
                return;
        if (!off || chp_http_parse_u64(*off, &offset) != 0) {
                simple(h, 400, "Upload-Offset is required");
                return;
        }
        /* one writer per upload: a client resuming while its cut PATCH's chunks still land
         * would otherwise race it (its offset would be stale) */
        if (!chp_upload_claim(h->c->sh, h->id)) {
                simple(h, 423, "another request is writing this upload; retry shortly");
                return;
        }
        h->claimed = true;
        int rc = load_upload(h, true);
        if (rc) {
                simple(h, rc == -ENOENT ? 404 : status_of(rc), NULL);
                return;
        }
        if (offset != h->start) {
                char msg[96];
                snprintf(msg, sizeof(msg), "Upload-Offset is %llu here",
                         (unsigned long long)h->start);
                simple(h, 409, msg);
                return;
        }
        if (h->committed) {
                if (h->body_left) {
                        simple(h, 409, "the upload is complete");
                        return;
                }
                h->ph = PH_COMMIT;
                maybe_reply(h);
                return;
        }
        uint64_t max = h->c->sh->cfg->tus_max_size;
        if (len) {
                if (chp_http_parse_u64(*len, &length) != 0 ||
                    (h->length != CHP_UPLOAD_SIZE_UNKNOWN && length != h->length) ||
                    length < h->start) {
                        simple(h, 400, "bad Upload-Length");
                        return;
                }
                if (length > max) {
                        simple(h, 413, "Upload-Length is larger than Tus-Max-Size");
                        return;
                }
        }
        /* every check comes before the deferred length is recorded: a request refused here
         * leaves the upload as it was (and has nothing in flight that would go on with it) */
        uint64_t declared = len ? length : h->length;
        if (declared != CHP_UPLOAD_SIZE_UNKNOWN && h->start + h->body_left > declared) {
                simple(h, 413, "the body goes past Upload-Length");
                return;
        }
        /* a deferred length is bounded too: refused before anything of the body is stored */
        if (declared == CHP_UPLOAD_SIZE_UNKNOWN && h->body_left &&
            (h->start > max || h->body_left > max - h->start)) {
                simple(h, 413, "the upload would be larger than Tus-Max-Size");
                return;
        }
        if (!checksum_setup(h, req))
                return;
        if (declared != h->length) {
                /* the deferred length becomes known: recorded before the chunks */
                struct hop *op = hop_new(h, CHP_REQ_UPLOAD_CREATE);
                if (!op || !(op->upload = malloc(sizeof(*h->up)))) {
                        free(op);
                        simple(h, 500, NULL);
                        return;
                }
                *op->upload = *h->up;
                op->upload->declared_size = declared;
                op->base.req.u.upload_create.upload = op->upload;
                if (!submit(h, op)) {
                        simple(h, status_of(h->failed), NULL);
                        return;
                }
                h->length = declared;
        }
        body_start(h);
}

static void delete_upload(struct http *h)
{
        struct hop *op = hop_new(h, CHP_REQ_UPLOAD_DELETE);
        if (!op) {
                simple(h, 500, NULL);
                request_done(h);
                return;
        }
        memcpy(op->base.req.u.upload_delete.upload_id, h->id, CHP_UPLOAD_ID_BYTES);
        h->ph = PH_FLUSH;
        if (!submit(h, op)) {
                simple(h, status_of(h->failed), NULL);
                request_done(h);
        }
}

/* Route and method; returns false when the response is already queued. */
static bool route(struct http *h, const struct chp_http_request *req)
{
        struct chp_http_str t = req->target;
        size_t q = 0;
        while (q < t.n && t.p[q] != '?')
                q++;
        t.n = q; /* the query string is ignored */
        if (t.n == 7 && memcmp(t.p, "/files/", 7) == 0) {
                h->route = R_FILES;
        } else if (t.n == 6 && memcmp(t.p, "/files", 6) == 0) {
                h->route = R_FILES;
        } else if (t.n > 7 && memcmp(t.p, "/files/", 7) == 0) {
                h->route = R_UPLOAD;
                if (parse_upload_id(t, h->id) != 0) {
                        simple(h, 404, "no such upload");
                        return false;
                }
        } else if (t.n > 3 && memcmp(t.p, "/f/", 3) == 0) {
                h->route = R_FILE;
                if (!parse_file_id(t, h->id)) {
                        simple(h, 404, "no such file");
                        return false;
                }
        } else if (t.n == 8 && memcmp(t.p, "/metrics", 8) == 0) {
                h->route = R_METRICS;
        } else if (t.n == 8 && memcmp(t.p, "/healthz", 8) == 0) {
                h->route = R_HEALTHZ;
        } else {
                simple(h, 404, "not found");
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
                start(h, &r, 405);
                add(&r, "Allow: %s\r\n", allow[h->route]);
                finish(h, &r, NULL, 0, false);
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
        atomic_fetch_add(&c->sh->http_requests, 1);
        h->method = (int)req->method;
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
                simple(h, 411, "a Content-Length body is required (no chunked coding)");
                return;
        }
        if (cl && (chp_http_header_count(req, "Content-Length") != 1 ||
                   chp_http_parse_u64(*cl, &body) != 0)) {
                h->close_after = true;
                simple(h, 400, "bad Content-Length");
                return;
        }
        h->body_left = body;
        /* RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with several Host
         * lines or an invalid one, is answered 400 */
        size_t hosts = chp_http_header_count(req, "Host");
        if ((req->minor == 1 && hosts == 0) || hosts > 1 ||
            (host && chp_http_check_host(*host) != 0)) {
                simple(h, 400, "exactly one valid Host header is required");
                return;
        }
        if (h->stopping) {
                simple(h, 503, "the relay is stopping");
                return;
        }
        if (!route(h, req))
                return;
        if (body && h->method != CHP_HTTP_PATCH && h->method != CHP_HTTP_POST) {
                simple(h, 400, "this request takes no body"); /* and closes */
                return;
        }
        switch (h->route) {
        case R_FILES:
                if (h->method == CHP_HTTP_OPTIONS)
                        options(h, req);
                else
                        post(h, req);
                return;
        case R_UPLOAD:
                if (h->method == CHP_HTTP_OPTIONS)
                        options(h, req);
                else if (h->method == CHP_HTTP_HEAD)
                        head_upload(h);
                else if (h->method == CHP_HTTP_PATCH)
                        patch(h, req);
                else
                        delete_upload(h);
                return;
        case R_FILE:
                if (h->method == CHP_HTTP_OPTIONS)
                        options(h, req);
                else
                        get_file(h, req);
                return;
        case R_METRICS:
                metrics(h);
                return;
        case R_HEALTHZ: {
                struct resp r;
                start(h, &r, 200);
                add(&r, "Content-Type: text/plain\r\n");
                finish(h, &r, "ok\n", 3, false);
                request_done(h);
                return;
        }
        case R_NONE:
                break;
        }
}

static void http_on_input(struct conn *c)
{
        struct http *h = c->proto;
        if (c->closed)
                return;
        if (h->ph == PH_BODY) {
                if (c->body)
                        body_progress(h);
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
                        simple(h, (int)-n, "malformed request");
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
                h->ph = PH_CREATE; /* busy until the handler says otherwise */
                h->close_after = false;
                on_request(h, &req);
                if (h->ph == PH_CREATE && !h->pending)
                        request_done(h); /* answered at once (an error) */
        }
}

/* ---- protocol hooks ---------------------------------------------------------------------- */

static bool http_can_read(const struct conn *c)
{
        const struct http *h = c->proto;
        if (h->ph == PH_BODY || h->ph == PH_DISCARD)
                return false; /* body bytes go into buffers armed by body_progress/discard_body */
        return h->ph == PH_HEAD && !h->stopping && c->out_bytes < c->sh->cfg->window_bytes &&
               c->in_len < HEAD_MAX;
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
        dl_fill(c);
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
};
