/* tus.c — chapard's tus 1.0.0 face: uploads created, resumed and finished over HTTP.
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
 *
 * Loop thread only. Bodies are never buffered whole: a PATCH body lands in chunk-sized buffers
 * handed to the store; at most window_bytes of them are in flight before the relay stops
 * reading. With Upload-Checksum the chunks are stored first and attached to the upload only
 * once the whole body matched, so a mismatch appends nothing (460). One request writes an
 * upload at a time (a claim; a second writer gets 423).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sys/socket.h>

#include <sodium.h>

#include "err.h"
#include "gate.h"
#include "http.h"
#include "metrics.h"
#include "faces.h"

/* seconds a 429 asks a client to wait: a tenant's uploads in progress are at their limit */
#define CHP_TUS_RETRY_AFTER 5
#define TUS_EXT                                                                                    \
        "creation,creation-with-upload,creation-defer-length,termination,checksum,"                \
        "expiration"
/* what a preflight lets a page send: tus-js-client's headers, Authorization (its `headers` option
 * carries the upload token), and the download's; cors_headers adds more */
#define ALLOW_HDRS                                                                                 \
        "Authorization, Content-Type, Upload-Offset, Upload-Length, Upload-Defer-Length, "         \
        "Upload-Metadata, Upload-Checksum, Upload-Concat, Tus-Resumable, "                         \
        "X-HTTP-Method-Override, X-Requested-With, Range, If-None-Match"

struct hop {
        struct conn_op base;
        uint8_t *buf; /* chunk bytes owned by the op */
        size_t len;
        struct chp_upload *upload;
        uint8_t *manifest;
        struct chp_store_quota quota; /* an upload create's tenant limits (req.quota points here) */
};

static void hop_done(struct conn_op *base);
static void maybe_reply(struct http *h);
static void create_submit(struct http *h, struct hop *op);

/* ---- the one-writer claims ---------------------------------------------------------------- */

/* Upload ids with a writer, in no order; shared by every loop thread under lock. */
struct chp_tus_claims {
        pthread_mutex_t lock;
        uint8_t (*ids)[CHP_UPLOAD_ID_BYTES];
        size_t n, cap;
};

int chp_tus_claims_new(struct chp_tus_claims **out)
{
        *out = NULL;
        struct chp_tus_claims *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        int rc = pthread_mutex_init(&t->lock, NULL);
        if (rc) {
                free(t);
                return -rc;
        }
        *out = t;
        return 0;
}

void chp_tus_claims_free(struct chp_tus_claims *t)
{
        if (!t)
                return;
        pthread_mutex_destroy(&t->lock);
        free(t->ids);
        free(t);
}

static bool held(const struct chp_tus_claims *t, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        for (size_t i = 0; i < t->n; i++)
                if (memcmp(t->ids[i], id, CHP_UPLOAD_ID_BYTES) == 0)
                        return true;
        return false;
}

/* Marks the upload as written by this request; false if another request already is, or out
 * of memory. Any thread; release undoes it. */
static bool claim(struct chp_tus_claims *t, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        pthread_mutex_lock(&t->lock);
        bool ok = !held(t, id);
        if (ok && t->n == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 64;
                uint8_t(*ids)[CHP_UPLOAD_ID_BYTES] = realloc(t->ids, cap * sizeof(*ids));
                if (ids) {
                        t->ids = ids;
                        t->cap = cap;
                } else {
                        ok = false;
                }
        }
        if (ok)
                memcpy(t->ids[t->n++], id, CHP_UPLOAD_ID_BYTES);
        pthread_mutex_unlock(&t->lock);
        return ok;
}

/* Whether a request is writing the upload now. */
static bool busy(struct chp_tus_claims *t, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        pthread_mutex_lock(&t->lock);
        bool b = held(t, id);
        pthread_mutex_unlock(&t->lock);
        return b;
}

static void release(struct chp_tus_claims *t, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->n; i++) {
                if (memcmp(t->ids[i], id, CHP_UPLOAD_ID_BYTES) == 0) {
                        memcpy(t->ids[i], t->ids[--t->n], CHP_UPLOAD_ID_BYTES);
                        break;
                }
        }
        pthread_mutex_unlock(&t->lock);
}

/* ---- tokens ------------------------------------------------------------------------------- */

/* The token of `Authorization: Bearer TOKEN` (RFC 6750 2.1: the scheme case-insensitive, one or
 * more spaces, a b64token). 0 with *tok, *len (NULL, 0: no Bearer credentials: no header, or
 * another scheme); -EBADMSG for several Authorization lines or a Bearer without a valid token. */
static int bearer(const struct chp_http_request *req, const char **tok, size_t *len)
{
        *tok = NULL;
        *len = 0;
        const struct chp_http_str *v = chp_http_header(req, "Authorization");
        if (!v)
                return 0;
        if (chp_http_header_count(req, "Authorization") != 1)
                return -EBADMSG;
        if (v->n < 6 || strncasecmp(v->p, "Bearer", 6) != 0 || (v->n > 6 && v->p[6] != ' '))
                return 0;
        size_t i = 6;
        while (i < v->n && v->p[i] == ' ')
                i++;
        size_t start = i;
        while (i < v->n && (isalnum((unsigned char)v->p[i]) || strchr("-._~+/", v->p[i])))
                i++;
        while (i < v->n && v->p[i] == '=')
                i++;
        if (i == start || i != v->n)
                return -EBADMSG;
        *tok = v->p + start;
        *len = i - start;
        return 0;
}

/* http.h: the refusal of the token and limit checks; a download's (pull-through) names the pull
 * scope and leaves out tus's headers. */
void http_refuse(struct http *h, int rc, bool had_token, const char *why)
{
        chp_metrics_refuse(h->c->sh->metrics, rc);
        int status = chp_err_http_status(rc);
        if (!status)
                status = 403;
        struct resp r;
        bool tus = h->route != R_FILE;
        http_start(h, &r, status);
        if (tus)
                http_add(&r, "Tus-Version: " TUS_VERSION "\r\n");
        if (status == 401)
                http_add(&r, "WWW-Authenticate: Bearer realm=\"chapar\"%s\r\n",
                         had_token ? ", error=\"invalid_token\"" : "");
        else if (rc == CHP_ETOKEN_SCOPE)
                http_add(&r,
                         "WWW-Authenticate: Bearer realm=\"chapar\", "
                         "error=\"insufficient_scope\", scope=\"%s\"\r\n",
                         tus ? "upload" : "pull");
        if (status == 429)
                http_add(&r, "Retry-After: %u\r\n", CHP_TUS_RETRY_AFTER);
        http_add(&r, "Content-Type: text/plain\r\n");
        char body[512];
        int n = snprintf(body, sizeof(body), "%s%s%s\n", chp_strerror(rc), why ? ": " : "",
                         why ? why : "");
        if (n < 0 || (size_t)n >= sizeof(body))
                n = (int)sizeof(body) - 1;
        http_finish(h, &r, body, (size_t)n, false);
}

/* http.h: who sent the request. */
int http_identify(struct http *h, const struct chp_http_request *req, uint64_t now, bool *had_token)
{
        struct chp_shared *sh = h->c->sh;
        const char *tok;
        size_t len;
        int rc = bearer(req, &tok, &len);
        *had_token = rc != 0 || len > 0;
        if (rc) {
                http_refuse(h, CHP_ETOKEN_SIGNATURE, true,
                            "malformed Authorization: Bearer header");
                return rc;
        }
        rc = chp_gate_identify(sh->cfg, sh->identity->pub, h->c->peer.loopback, tok, len, now,
                               &h->caller);
        if (rc && chp_err_http_status(rc) == 0)
                http_refuse(h, CHP_ETOKEN_SIGNATURE, true,
                            "malformed token"); /* not base64url, ... */
        else if (rc)
                http_refuse(h, rc, true, NULL);
        return rc;
}

/* The gate's key for a tus upload: its id, zero-padded (conf/gate.h). */
static void upload_key(const uint8_t id[CHP_UPLOAD_ID_BYTES], uint8_t key[CHP_HASH_BYTES])
{
        memset(key, 0, CHP_HASH_BYTES);
        memcpy(key, id, CHP_UPLOAD_ID_BYTES);
}

/* The largest file a tenant may store (its max_file_size): bounds a deferred-length upload's
 * bytes before its length is declared. UINT64_MAX for a trusted upload (tenant ""). */
static uint64_t tenant_file_max(const struct chp_config *cfg, const char *tenant)
{
        if (!tenant[0])
                return UINT64_MAX;
        const struct chp_tenant_config *t = chp_config_find_tenant(cfg, tenant, strlen(tenant));
        return t ? t->max_file_size : 0; /* a tenant removed by a reload takes no more bytes */
}

/* ---- store requests ---------------------------------------------------------------------- */

static void budget_free(struct chp_shared *sh, uint8_t *p, size_t n)
{
        if (p) {
                atomic_fetch_sub(&sh->mem_used, n);
                free(p);
        }
}

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
        op->base.t0 = chp_net_now_us();
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
        /* where the client's bytes go: after this chunk's bytes kept before them */
        op->base.req.u.tail_append.has_offset = true;
        op->base.req.u.tail_append.offset = (uint64_t)h->next_index * h->cs + h->base;
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
void tus_body_progress(struct http *h)
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

int tus_parse_id(struct chp_http_str path, uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        /* /files/<32 lowercase hex> */
        if (path.n != 7 + 2 * CHP_UPLOAD_ID_BYTES)
                return -EINVAL;
        for (size_t i = 7; i < path.n; i++)
                if (!((path.p[i] >= '0' && path.p[i] <= '9') ||
                      (path.p[i] >= 'a' && path.p[i] <= 'f')))
                        return -EINVAL;
        return chp_hex_decode(path.p + 7, 2 * CHP_UPLOAD_ID_BYTES, id, CHP_UPLOAD_ID_BYTES);
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

/* Loads the upload for a PATCH/HEAD: its record, where it stands, its kept tail (with_tail), by
 * record lookups (http_lookup); then loaded(h, rc, req) with h->up, cs, length, start,
 * next_index (and the tail begun in h->chunk) set when rc is 0. */
typedef void (*loaded_fn)(struct http *h, int rc, const struct chp_http_request *req);

static void load_got_tail(struct http *h, struct chp_store_lookup *q,
                          const struct chp_http_request *req)
{
        int rc = q->status;
        if (!rc) {
                h->fill = h->base = q->len;
                /* the kept bytes begin this chunk: they are part of its address, not of this
                 * body */
                rc = chp_sha256_update(&h->sha, h->chunk, h->fill) == 0 ? 0 : -EIO;
        }
        chp_store_lookup_clear(q);
        h->loaded(h, rc, req);
}

static void load_got_progress(struct http *h, struct chp_store_lookup *q,
                              const struct chp_http_request *req)
{
        int rc = q->status;
        size_t tail = q->len;
        if (!rc) {
                h->next_index = q->chunks;
                h->start = progress_bytes(q->chunks, tail, h->cs, h->length);
        }
        chp_store_lookup_clear(q);
        if (rc || !h->load_tail || !tail) {
                h->loaded(h, rc, req);
                return;
        }
        if (!chunk_begin(h)) {
                h->loaded(h, -EBUSY, req);
                return;
        }
        *q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_UPLOAD_PROGRESS, .buf = h->chunk, .cap = h->cs};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, load_got_tail);
}

static void load_got_record(struct http *h, struct chp_store_lookup *q,
                            const struct chp_http_request *req)
{
        int rc = q->status;
        chp_store_lookup_clear(q);
        if (!rc && h->up->has_manifest)
                rc = -ENOENT; /* a native upload, not for tus */
        if (rc) {
                h->loaded(h, rc, req);
                return;
        }
        h->cs = h->up->chunk_size;
        h->length = h->up->declared_size;
        if (h->up->complete) {
                h->start = h->length;
                memcpy(h->file_id, h->up->file_id, CHP_HASH_BYTES);
                h->committed = true;
                h->loaded(h, 0, req);
                return;
        }
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_PROGRESS};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, load_got_progress);
}

static void load_upload(struct http *h, const struct chp_http_request *req, bool with_tail,
                        loaded_fn loaded)
{
        h->loaded = loaded;
        h->load_tail = with_tail;
        h->up = calloc(1, sizeof(*h->up));
        if (!h->up) {
                loaded(h, -ENOMEM, req);
                return;
        }
        struct chp_store_lookup *q = &h->lk.q;
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD, .upload = h->up};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, load_got_record);
}

static void head_loaded(struct http *h, int rc, const struct chp_http_request *req)
{
        (void)req;
        if (rc) {
                http_simple(h, rc == -ENOENT ? 404 : http_status_of(rc), NULL);
                return;
        }
        struct resp r;
        char date[64];
        http_start(h, &r, 200);
        http_add(&r, "Cache-Control: no-store\r\nUpload-Offset: %llu\r\n",
                 (unsigned long long)h->start);
        if (h->length == CHP_UPLOAD_SIZE_UNKNOWN)
                http_add(&r, "Upload-Defer-Length: 1\r\n");
        else
                http_add(&r, "Upload-Length: %llu\r\n", (unsigned long long)h->length);
        if (h->up->meta_len)
                http_add(&r, "Upload-Metadata: %.*s\r\n", (int)h->up->meta_len,
                         (const char *)h->up->meta);
        if (h->up->expires) {
                http_date(h->up->expires, date, sizeof(date));
                http_add(&r, "Upload-Expires: %s\r\n", date);
        }
        if (h->committed) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(h->file_id, CHP_HASH_BYTES, hex);
                http_add(&r, "Chapar-File-Id: %s\r\n", hex);
        }
        http_finish(h, &r, NULL, 0, true);
        http_request_done(h);
}

void tus_head(struct http *h)
{
        /* while a PATCH streams into the upload its offset is moving: the client asks again */
        if (busy(h->c->face, h->id)) {
                http_simple(h, 423, "another request is writing this upload; retry shortly");
                return;
        }
        load_upload(h, NULL, false, head_loaded);
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
        tus_body_progress(h);
}

/* The reply to a PATCH or a POST with a body: its status and the upload's offset now. */
static void reply_offset(struct http *h, int rc, uint64_t offset, bool complete)
{
        if (h->route == R_XMPP) {
                xmpp_reply(h, rc);
                return;
        }
        if (rc) {
                http_simple(h, http_status_of(rc), chp_strerror(rc));
                http_request_done(h);
                return;
        }
        struct resp r;
        http_start(h, &r, h->created ? 201 : 204);
        if (h->created) {
                char hex[2 * CHP_UPLOAD_ID_BYTES + 1];
                chp_hex_encode(h->id, CHP_UPLOAD_ID_BYTES, hex);
                if (h->host[0])
                        http_add(&r, "Location: http://%s/files/%s\r\n", h->host, hex);
                else
                        http_add(&r, "Location: /files/%s\r\n", hex);
                if (h->up && h->up->expires) {
                        char date[64];
                        http_date(h->up->expires, date, sizeof(date));
                        http_add(&r, "Upload-Expires: %s\r\n", date);
                }
        }
        http_add(&r, "Upload-Offset: %llu\r\n", (unsigned long long)offset);
        if (complete) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(h->file_id, CHP_HASH_BYTES, hex);
                http_add(&r, "Chapar-File-Id: %s\r\n", hex);
        }
        http_finish(h, &r, NULL, 0, !h->created);
        http_request_done(h);
}

/* An upload tus_limits_admit counted on the address and subject is no longer incomplete (see
 * chp_limits_upload_end): by_caller, one the POST of h began, under its token's subject; else the
 * one h->up records (NULL: not loaded, no subject). */
static void limits_end(struct http *h, bool by_caller)
{
        const char *t = NULL, *s = NULL;
        if (by_caller && h->caller.kind == CHP_CALLER_TOKEN) {
                t = h->caller.token.tenant;
                s = h->caller.token.subject;
        } else if (!by_caller && h->up) {
                t = h->up->tenant;
                s = h->up->subject;
        }
        chp_limits_upload_end(h->c->sh->limits, &h->c->peer, t, s, chp_net_now_ms());
}

/* The chunks of an upload whose last byte is durable: its manifest, then the file. */
static void flush_got_chunks(struct http *h, struct chp_store_lookup *q,
                             const struct chp_http_request *req)
{
        (void)req;
        struct conn *c = h->c;
        uint32_t n = (uint32_t)q->n;
        uint8_t *addrs = q->chunk_addrs;
        int rc = q->status;
        chp_store_lookup_clear(q);
        struct hop *op = rc ? NULL : hop_new(h, CHP_REQ_COMMIT);
        if (!rc && !op)
                rc = -ENOMEM;
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = h->cs,
                                 .total_size = h->length,
                                 .chunk_count = n,
                                 .addrs = addrs};
        size_t mlen = chp_manifest_encoded_size(&m);
        if (!rc && (chp_manifest_check(&m) != 0 || !(op->manifest = malloc(mlen)) ||
                    chp_manifest_encode(&m, op->manifest, mlen) < 0))
                rc = -EIO;
        free(h->lk_buf);
        h->lk_buf = NULL;
        if (rc) {
                if (op)
                        hop_free(op);
                reply_offset(h, rc, 0, false);
                return;
        }
        struct chp_store_req *r = &op->base.req;
        const struct chp_config *cfg = c->sh->cfg;
        r->u.commit.manifest = op->manifest;
        r->u.commit.manifest_len = mlen;
        r->u.commit.tenant = h->up->tenant;
        uint64_t expires = cfg->file_expiry ? (uint64_t)time(NULL) + cfg->file_expiry : 0;
        /* no later than the token and the tenant allowed at creation */
        uint64_t cap = h->up->file_expires;
        if (cap && (!expires || expires > cap))
                expires = cap;
        r->u.commit.expires = expires;
        r->u.commit.has_upload = true;
        r->u.commit.keep_upload = true;
        /* an XMPP upload's record is how GET finds its file: it lives as long as the file */
        if (h->route == R_XMPP)
                r->u.commit.keep_expires = expires ? expires : UINT64_MAX;
        memcpy(r->u.commit.upload_id, h->id, CHP_UPLOAD_ID_BYTES);
        h->ph = PH_COMMIT;
        if (submit(h, op))
                return; /* on with the reply when it is committed */
        reply_offset(h, h->failed, 0, false);
}

/* Where the upload stands once the writer has this request's chunks: the reply, or (its last
 * byte durable) its chunk list, for the commit. */
static void flush_got_progress(struct http *h, struct chp_store_lookup *q,
                               const struct chp_http_request *req)
{
        int rc = q->status;
        uint32_t chunks = q->chunks;
        uint64_t offset = progress_bytes(chunks, q->len, h->cs, h->length);
        chp_store_lookup_clear(q);
        if (rc || h->length == CHP_UPLOAD_SIZE_UNKNOWN || offset != h->length) {
                reply_offset(h, rc, offset, false);
                return;
        }
        /* the last byte is durable: the chunks' addresses, for the manifest */
        uint32_t n = chunks;
        h->lk_buf = malloc((size_t)n * (CHP_HASH_BYTES + 1) + 1);
        if (!h->lk_buf) {
                reply_offset(h, -ENOMEM, 0, false);
                return;
        }
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_CHUNKS,
                                       .n = n,
                                       .chunk_addrs = h->lk_buf,
                                       .present = h->lk_buf + (size_t)n * CHP_HASH_BYTES};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, req, flush_got_chunks);
}

/* Whether the writer is done with this request: then reply (or commit, then reply). The
 * upload's progress and chunk list are looked up (http_lookup) meanwhile. */
static void maybe_reply(struct http *h)
{
        if (h->ph != PH_FLUSH && h->ph != PH_COMMIT)
                return;
        if (h->pending)
                return;
        if (h->failed == 460) {
                http_simple(h, 460,
                            "Upload-Checksum does not match the body; nothing was appended");
                http_request_done(h);
                return;
        }
        if (h->failed) {
                http_simple(h, http_status_of(h->failed), chp_strerror(h->failed));
                http_request_done(h);
                return;
        }
        if (h->ph == PH_COMMIT) {
                reply_offset(h, 0, h->length, true);
                return;
        }
        struct chp_store_lookup *q = &h->lk.q;
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_PROGRESS};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, NULL, flush_got_progress);
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
                chp_metrics_observe_commit(c->sh->metrics, base->t0);
                if (!r->status)
                        atomic_fetch_add(r->u.put.deduplicated ? &c->sh->metrics->chunks_dedup
                                                               : &c->sh->metrics->chunks_stored,
                                         1);
        }
        if (r->status && !h->failed)
                h->failed = r->status;
        /* the uploads' life by face, as the store saw it (also when the client has gone) */
        struct chp_metrics *m = c->sh->metrics;
        if (!r->status && r->type == CHP_REQ_UPLOAD_CREATE)
                atomic_fetch_add(&m->uploads_created[CHP_METRICS_HTTP], 1);
        else if (!r->status && r->type == CHP_REQ_COMMIT)
                atomic_fetch_add(&m->uploads_finished[CHP_METRICS_HTTP], 1);
        else if (!r->status && r->type == CHP_REQ_UPLOAD_DELETE)
                atomic_fetch_add(&m->uploads_terminated[CHP_METRICS_HTTP], 1);
        if (r->status && r->type == CHP_REQ_UPLOAD_CREATE && h->ph == PH_CREATE)
                chp_gate_upload_refund(c->sh->gate, &h->gu); /* nothing was created */
        else if (r->status == CHP_EQUOTA && r->type == CHP_REQ_UPLOAD_CREATE)
                chp_metrics_refuse(c->sh->metrics, CHP_EQUOTA); /* a PATCH's length (maybe_reply) */
        /* the limits' count of incomplete uploads: a POST's create failed, or one is finished */
        if (r->status ? r->type == CHP_REQ_UPLOAD_CREATE && h->ph == PH_CREATE
                      : r->type == CHP_REQ_COMMIT || r->type == CHP_REQ_UPLOAD_DELETE)
                limits_end(h, h->ph == PH_CREATE);
        if (!c->closed) {
                if (r->type == CHP_REQ_UPLOAD_CREATE && h->ph == PH_CREATE) {
                        if (r->status == CHP_EQUOTA) {
                                http_refuse(h, CHP_EQUOTA, h->caller.kind == CHP_CALLER_TOKEN,
                                            chp_gate_quota_name(r->u.upload_create.quota_hit));
                                http_request_done(h);
                        } else if (r->status) {
                                http_simple(h, http_status_of(r->status), chp_strerror(r->status));
                                http_request_done(h);
                        } else {
                                h->failed = 0;
                                body_start(h);
                        }
                } else if (r->type == CHP_REQ_COMMIT && h->ph == PH_COMMIT && !r->status) {
                        memcpy(h->file_id, r->u.commit.file_id, CHP_HASH_BYTES);
                        h->committed = true;
                        maybe_reply(h);
                } else if (r->type == CHP_REQ_UPLOAD_DELETE && h->route == R_XMPP) {
                        xmpp_dropped(h, r->status);
                } else if (r->type == CHP_REQ_UPLOAD_DELETE) {
                        http_simple(h, r->status ? http_status_of(r->status) : 204, NULL);
                        http_request_done(h);
                } else if (h->ph == PH_BODY && !c->body) {
                        tus_body_progress(h); /* the window opened: read on */
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

/* ---- the requests' heads ------------------------------------------------------------------ */

bool tus_version_ok(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *v = chp_http_header(req, "Tus-Resumable");
        if (v && chp_http_str_ieq(*v, TUS_VERSION))
                return true;
        http_simple(h, 412, "Tus-Resumable: 1.0.0 is required");
        return false;
}

static bool offset_content_type(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *ct = chp_http_header(req, "Content-Type");
        if (ct && chp_http_str_ieq(*ct, "application/offset+octet-stream"))
                return true;
        http_simple(h, 415, "Content-Type must be application/offset+octet-stream");
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
                http_simple(h, 400,
                            rc == -ENOTSUP ? "checksum algorithm not supported (sha1, sha256)"
                                           : "malformed Upload-Checksum");
                return false;
        }
        h->csum = EVP_MD_CTX_new();
        if (!h->csum ||
            EVP_DigestInit_ex(h->csum, algo == 1 ? EVP_sha1() : EVP_sha256(), NULL) != 1) {
                http_simple(h, 500, NULL);
                return false;
        }
        return true;
}

void tus_options(struct http *h, const struct chp_http_request *req)
{
        struct resp r;
        http_start(h, &r, 204);
        http_add(&r,
                 "Tus-Version: " TUS_VERSION "\r\nTus-Extension: " TUS_EXT
                 "\r\nTus-Max-Size: %llu\r\nTus-Checksum-Algorithm: sha1,sha256\r\n",
                 (unsigned long long)h->c->sh->cfg->tus_max_size);
        if (h->has_origin && chp_http_header(req, "Access-Control-Request-Method")) {
                /* a preflight: answered without a token (browsers never send credentials on
                 * one, RFC 6750 headers included) */
                http_add(&r,
                         "Access-Control-Allow-Methods: GET, HEAD, POST, PATCH, DELETE, OPTIONS\r\n"
                         "Access-Control-Allow-Headers: " ALLOW_HDRS);
                /* the operator's extra names, checked as header names when the config was read
                 * (config.c), joined with ", " */
                const char *extra = h->c->sh->cfg->cors_headers;
                for (const char *p = extra ? extra : ""; *p;) {
                        p += strspn(p, " ,");
                        size_t n = strcspn(p, " ,");
                        if (n)
                                http_add(&r, ", %.*s", (int)n, p);
                        p += n;
                }
                http_add(&r, "\r\nAccess-Control-Max-Age: 86400\r\n");
        }
        http_finish(h, &r, NULL, 0, false);
        http_request_done(h);
}

/* Whether the limits per address and per subject (conf/client_limits.h) admit one more upload;
 * if not, the POST is answered 429 with Retry-After and the refusal counted. */
bool tus_limits_admit(struct http *h)
{
        uint32_t retry;
        struct conn *c = h->c;
        bool tok = h->caller.kind == CHP_CALLER_TOKEN;
        if (!chp_limits_upload_begin(c->sh->limits, &c->peer, tok ? h->caller.token.tenant : NULL,
                                     tok ? h->caller.token.subject : NULL, chp_net_now_ms(),
                                     &retry))
                return true;
        chp_metrics_refuse(c->sh->metrics, CHP_ELIMITED);
        struct resp r;
        http_start(h, &r, 429);
        http_add(&r, "Retry-After: %u\r\nContent-Type: text/plain\r\n", retry);
        static const char msg[] = "too many new or incomplete uploads; retry later\n";
        http_finish(h, &r, msg, sizeof(msg) - 1, false);
        return false;
}

void tus_post(struct http *h, const struct chp_http_request *req)
{
        struct conn *c = h->c;
        const struct chp_config *cfg = c->sh->cfg;
        uint64_t now = (uint64_t)time(NULL);
        /* who asks, before anything about the upload is said: 401 to whoever has no token */
        bool had_token;
        if (http_identify(h, req, now, &had_token) != 0)
                return;
        if (h->caller.kind == CHP_CALLER_ANONYMOUS) {
                http_refuse(h, CHP_ETOKEN_MISSING, false, NULL);
                return;
        }
        const struct chp_http_str *len = chp_http_header(req, "Upload-Length");
        const struct chp_http_str *defer = chp_http_header(req, "Upload-Defer-Length");
        const struct chp_http_str *meta = chp_http_header(req, "Upload-Metadata");
        uint64_t length = CHP_UPLOAD_SIZE_UNKNOWN;
        if (len && (defer || chp_http_parse_u64(*len, &length) != 0)) {
                http_simple(h, 400, "bad Upload-Length");
                return;
        }
        if (!len && !(defer && chp_http_str_ieq(*defer, "1"))) {
                http_simple(h, 400, "Upload-Length or Upload-Defer-Length: 1 is required");
                return;
        }
        if (length != CHP_UPLOAD_SIZE_UNKNOWN && length > cfg->tus_max_size) {
                http_simple(h, 413, "larger than Tus-Max-Size");
                return;
        }
        if (meta && (meta->n > CHP_UPLOAD_META_MAX || chp_http_check_metadata(*meta) != 0)) {
                http_simple(h, 400, "malformed or oversized Upload-Metadata");
                return;
        }
        if (h->body_left && !offset_content_type(h, req))
                return;
        if (h->body_left && length != CHP_UPLOAD_SIZE_UNKNOWN && h->body_left > length) {
                http_simple(h, 413, "the body is longer than Upload-Length");
                return;
        }
        if (h->body_left > cfg->tus_max_size) {
                http_simple(h, 413, "larger than Tus-Max-Size");
                return;
        }
        if (!checksum_setup(h, req))
                return;
        struct hop *op = hop_new(h, CHP_REQ_UPLOAD_CREATE);
        h->up = calloc(1, sizeof(*h->up));
        if (!op || !h->up) {
                free(op);
                http_simple(h, 500, NULL);
                return;
        }
        struct chp_upload *u = h->up;
        randombytes_buf(u->id, sizeof(u->id));
        memcpy(h->id, u->id, CHP_UPLOAD_ID_BYTES);
        /* the admission: scope, the tenant's largest file, the token's budget (charged to this
         * upload id, once however often it is resumed), a slot among the tenant's uploads in
         * progress (held until this request ends) */
        uint8_t key[CHP_HASH_BYTES];
        upload_key(u->id, key);
        /* the limits per address and subject first: a POST refused by them charges no budget */
        if (!tus_limits_admit(h)) {
                free(op);
                return;
        }
        int rc =
            chp_gate_upload_begin(c->sh->gate, cfg, &h->caller, key, false, length, now, &h->gu);
        /* a deferred length is bounded by the tenant's largest file until it is declared */
        if (!rc && length == CHP_UPLOAD_SIZE_UNKNOWN &&
            h->body_left > tenant_file_max(cfg, h->gu.tenant))
                rc = CHP_ETOOBIG;
        if (rc) {
                limits_end(h, true);
                free(op);
                http_refuse(h, rc, had_token,
                            rc == CHP_EQUOTA ? chp_gate_quota_name(CHP_QUOTA_NONE) : NULL);
                return;
        }
        snprintf(u->tenant, sizeof(u->tenant), "%s", h->gu.tenant);
        /* recorded for the store's sake; a tus upload is resumed by its URL, the capability,
         * with no token (a PATCH that declares a deferred length needs its tenant's) */
        if (h->caller.kind == CHP_CALLER_TOKEN)
                snprintf(u->subject, sizeof(u->subject), "%s", h->caller.token.subject);
        u->declared_size = length;
        u->chunk_size = h->cs = cfg->tus_chunk_size;
        u->created = now;
        u->expires = cfg->upload_expiry ? u->created + cfg->upload_expiry : 0;
        /* the token's and the tenant's longest file life: the file (and the session that would
         * make it) expire by then (maybe_reply caps the commit's expiry with file_expires) */
        u->file_expires = h->gu.expires_max;
        if (u->file_expires && (!u->expires || u->expires > u->file_expires))
                u->expires = u->file_expires;
        if (meta) {
                memcpy(u->meta, meta->p, meta->n);
                u->meta_len = (uint32_t)meta->n;
        }
        h->length = length;
        create_submit(h, op);
}

/* h->up (the new session's record, every field set) is created in the store with h->gu's tenant
 * limits, by op (or a new one when op is NULL); once created its body streams (body_start, from
 * hop_done). On a failure here the response is queued and the limits' count given back. */
static void create_submit(struct http *h, struct hop *op)
{
        if (!op && !(op = hop_new(h, CHP_REQ_UPLOAD_CREATE))) {
                limits_end(h, true);
                http_simple(h, 500, NULL);
                return;
        }
        op->upload = malloc(sizeof(*h->up));
        if (!op->upload) {
                limits_end(h, true);
                hop_free(op);
                http_simple(h, 500, NULL);
                return;
        }
        *op->upload = *h->up;
        op->base.req.u.upload_create.upload = op->upload;
        if (h->gu.has_quota) {
                /* the tenant's store limits, checked by the writer as the session is created */
                op->quota = h->gu.quota;
                op->base.req.u.upload_create.quota = &op->quota;
        }
        h->cs = h->up->chunk_size;
        h->start = 0;
        h->next_index = 0;
        h->created = true;
        h->ph = PH_CREATE;
        if (!submit(h, op)) {
                limits_end(h, true);
                http_simple(h, http_status_of(h->failed), chp_strerror(h->failed));
                return;
        }
        atomic_fetch_add(&h->c->sh->metrics->uploads_active, 1);
}

void tus_create(struct http *h)
{
        h->length = h->up->declared_size;
        create_submit(h, NULL);
}

bool tus_claim(struct http *h)
{
        if (!claim(h->c->face, h->id))
                return false;
        h->claimed = true;
        return true;
}

void tus_drop(struct http *h)
{
        struct hop *op = hop_new(h, CHP_REQ_UPLOAD_DELETE);
        if (!op) {
                http_simple(h, 500, NULL);
                return;
        }
        memcpy(op->base.req.u.upload_delete.upload_id, h->id, CHP_UPLOAD_ID_BYTES);
        h->ph = PH_CREATE;
        if (!submit(h, op))
                http_simple(h, http_status_of(h->failed), NULL);
}

/* A tenant's upload whose deferred length this PATCH declares: the length is charged to the
 * token the PATCH carries (the token of the POST, or another of the same tenant; tus-js-client
 * sends its headers on every request), as the POST would have been. false when the refusal is
 * queued. */
static bool length_charge(struct http *h, const struct chp_http_request *req, uint64_t declared)
{
        struct conn *c = h->c;
        const struct chp_config *cfg = c->sh->cfg;
        uint64_t now = (uint64_t)time(NULL);
        bool had_token;
        if (http_identify(h, req, now, &had_token) != 0)
                return false;
        if (h->caller.kind != CHP_CALLER_TOKEN) {
                http_refuse(
                    h, CHP_ETOKEN_MISSING, false,
                    "a PATCH that declares a deferred Upload-Length carries the upload's token");
                return false;
        }
        if (strcmp(h->caller.token.tenant, h->up->tenant) != 0) {
                http_refuse(h, CHP_ETOKEN_SCOPE, true, "the token is another tenant's");
                return false;
        }
        uint8_t key[CHP_HASH_BYTES];
        upload_key(h->id, key);
        int rc = chp_gate_upload_grow(c->sh->gate, cfg, &h->caller, key, declared, now);
        if (rc) {
                http_refuse(h, rc, true,
                            rc == CHP_EQUOTA ? chp_gate_quota_name(CHP_QUOTA_NONE) : NULL);
                return false;
        }
        return true;
}

static void patch_loaded(struct http *h, int rc, const struct chp_http_request *req);

void tus_patch(struct http *h, const struct chp_http_request *req)
{
        const struct chp_http_str *off = chp_http_header(req, "Upload-Offset");
        uint64_t offset;
        if (!offset_content_type(h, req))
                return;
        if (!off || chp_http_parse_u64(*off, &offset) != 0) {
                http_simple(h, 400, "Upload-Offset is required");
                return;
        }
        /* one writer per upload: a client resuming while its cut PATCH's chunks still land
         * would otherwise race it (its offset would be stale) */
        if (!claim(h->c->face, h->id)) {
                http_simple(h, 423, "another request is writing this upload; retry shortly");
                return;
        }
        h->claimed = true;
        load_upload(h, req, true, patch_loaded);
}

/* The upload is loaded (or not): the PATCH's checks against it, then its body. */
static void patch_loaded(struct http *h, int rc, const struct chp_http_request *req)
{
        const struct chp_http_str *off = chp_http_header(req, "Upload-Offset");
        const struct chp_http_str *len = chp_http_header(req, "Upload-Length");
        uint64_t offset = 0, length;
        if (rc) {
                http_simple(h, rc == -ENOENT ? 404 : http_status_of(rc), NULL);
                return;
        }
        if (!off || chp_http_parse_u64(*off, &offset) != 0) {
                http_simple(h, 400, "Upload-Offset is required"); /* tus_patch checked it */
                return;
        }
        if (offset != h->start) {
                char msg[96];
                snprintf(msg, sizeof(msg), "Upload-Offset is %llu here",
                         (unsigned long long)h->start);
                http_simple(h, 409, msg);
                return;
        }
        if (h->committed) {
                if (h->body_left) {
                        http_simple(h, 409, "the upload is complete");
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
                        http_simple(h, 400, "bad Upload-Length");
                        return;
                }
                if (length > max) {
                        http_simple(h, 413, "Upload-Length is larger than Tus-Max-Size");
                        return;
                }
        }
        /* every check comes before the deferred length is recorded: a request refused here
         * leaves the upload as it was (and has nothing in flight that would go on with it) */
        uint64_t declared = len ? length : h->length;
        if (declared != CHP_UPLOAD_SIZE_UNKNOWN && h->start + h->body_left > declared) {
                http_simple(h, 413, "the body goes past Upload-Length");
                return;
        }
        /* a deferred length is bounded too: refused before anything of the body is stored */
        if (declared == CHP_UPLOAD_SIZE_UNKNOWN && h->body_left &&
            (h->start > max || h->body_left > max - h->start)) {
                http_simple(h, 413, "the upload would be larger than Tus-Max-Size");
                return;
        }
        /* ... and by the tenant's largest file, until the length is declared and charged */
        uint64_t fmax = tenant_file_max(h->c->sh->cfg, h->up->tenant);
        if (declared == CHP_UPLOAD_SIZE_UNKNOWN && h->body_left &&
            (h->start > fmax || h->body_left > fmax - h->start)) {
                http_refuse(h, CHP_ETOOBIG, false, "the upload would be larger than max_file_size");
                return;
        }
        if (declared != h->length && h->up->tenant[0] && !length_charge(h, req, declared))
                return;
        if (!checksum_setup(h, req))
                return;
        if (declared != h->length) {
                /* the deferred length becomes known: recorded before the chunks */
                struct hop *op = hop_new(h, CHP_REQ_UPLOAD_CREATE);
                if (!op || !(op->upload = malloc(sizeof(*h->up)))) {
                        free(op);
                        http_simple(h, 500, NULL);
                        return;
                }
                *op->upload = *h->up;
                op->upload->declared_size = declared;
                op->base.req.u.upload_create.upload = op->upload;
                /* the bytes the length adds count against the tenant's store quota */
                if (chp_gate_tenant_quota(h->c->sh->cfg, h->up->tenant, (uint64_t)time(NULL),
                                          &op->quota))
                        op->base.req.u.upload_create.quota = &op->quota;
                if (!submit(h, op)) {
                        http_simple(h, http_status_of(h->failed), NULL);
                        return;
                }
                h->length = declared;
        }
        body_start(h);
}

/* The upload's record is in (or not: then no subject): delete it. */
static void delete_got_record(struct http *h, struct chp_store_lookup *q,
                              const struct chp_http_request *req)
{
        (void)req;
        int rc = q->status;
        chp_store_lookup_clear(q);
        if (rc) {
                free(h->up);
                h->up = NULL;
        }
        struct hop *op = hop_new(h, CHP_REQ_UPLOAD_DELETE);
        if (!op) {
                http_simple(h, 500, NULL);
                http_request_done(h);
                return;
        }
        memcpy(op->base.req.u.upload_delete.upload_id, h->id, CHP_UPLOAD_ID_BYTES);
        h->ph = PH_FLUSH;
        if (!submit(h, op)) {
                http_simple(h, http_status_of(h->failed), NULL);
                http_request_done(h);
        }
}

void tus_delete(struct http *h)
{
        /* its record first, for the subject its limits count it under (limits_end) */
        h->up = calloc(1, sizeof(*h->up));
        if (!h->up) {
                http_simple(h, 500, NULL);
                http_request_done(h);
                return;
        }
        struct chp_store_lookup *q = &h->lk.q;
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD, .upload = h->up};
        memcpy(q->id, h->id, CHP_UPLOAD_ID_BYTES);
        http_lookup(h, NULL, delete_got_record);
}

void tus_reset(struct http *h)
{
        if (h->chunk)
                conn_mem_drop(h->c); /* charged as its bytes arrived (conn_want_body) */
        free(h->chunk);
        h->chunk = NULL;
        free(h->up);
        h->up = NULL;
        free(h->attach);
        h->attach = NULL;
        free(h->lk_buf);
        h->lk_buf = NULL;
        h->nattach = h->attach_cap = 0;
        EVP_MD_CTX_free(h->csum);
        h->csum = NULL;
        h->fill = h->base = 0;
        if (h->claimed)
                release(h->c->face, h->id);
        chp_gate_upload_end(h->c->sh->gate, &h->gu); /* the slot, if the POST took one */
        memset(&h->gu, 0, sizeof(h->gu));
        memset(&h->caller, 0, sizeof(h->caller));
        h->created = h->set_length = h->committed = h->claimed = false;
        h->failed = 0;
}
