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
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "proto.h"
#include "secure.h"

#define MAX_UPL 8 /* uploads a connection keeps at hand */

struct upl {
        bool used;
        bool created_here; /* this connection opened it first (and may delete it) */
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t file_id[CHP_HASH_BYTES];
        uint8_t *manifest; /* owned */
        size_t manifest_len;
        struct chp_manifest m; /* points into manifest */
        uint64_t last_used;
};

/* A request waiting for the store's writer. */
struct op {
        struct conn_op base; /* first: the loop routes the completion through it */
        uint32_t frame_id;
        uint8_t type;
        uint8_t *buf; /* payload owned by the op (chunk bytes, manifest), or NULL */
        size_t buf_len;
        uint32_t index;
        uint32_t chunk_len;
        struct chp_upload *upload; /* OPEN */
};

struct native {
        bool hello;
        bool stopping;
        uint32_t inflight;    /* requests not yet answered */
        uint64_t window_used; /* chunk bytes received and not yet acknowledged */
        bool in_frame;        /* a payload is arriving into `payload` */
        struct chp_frame_header hdr;
        uint8_t *payload;
        struct chp_sha256 sha;
        size_t hashed; /* payload bytes fed to sha */
        struct upl upl[MAX_UPL];
};

static uint64_t now_s(void)
{
        return (uint64_t)time(NULL);
}

static void native_on_store_done(struct conn_op *base);
static void native_on_input(struct conn *c);
static bool native_can_read(const struct conn *c);

/* ---- memory budget ----------------------------------------------------------------------- */

static uint8_t *payload_alloc(struct conn *c, size_t n)
{
        uint8_t *p = malloc(n ? n : 1);
        if (p)
                atomic_fetch_add(&c->sh->mem_used, n);
        return p;
}

static void payload_free(struct chp_shared *sh, uint8_t *p, size_t n)
{
        if (!p)
                return;
        atomic_fetch_sub(&sh->mem_used, n);
        free(p);
}

/* ---- replies ----------------------------------------------------------------------------- */

/* Queues a frame header and returns where its payload_len bytes go (NULL: out of memory, and
 * the connection is closed). */
static uint8_t *reply_frame(struct conn *c, uint8_t type, uint32_t id, size_t payload_len)
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

__attribute__((format(printf, 4, 5))) static void reply_error(struct conn *c, uint32_t id,
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
        if (code < 16)
                atomic_fetch_add(&c->sh->metrics->errors[code], 1);
        uint8_t *p = reply_frame(c, CHP_F_ERROR, id, CHP_ERROR_PREFIX + (size_t)n);
        if (p && chp_msg_error_encode(p, CHP_ERROR_PREFIX + (size_t)n, &e) < 0)
                conn_close(c);
        if (fatal_code(code)) {
                atomic_fetch_add(&c->sh->metrics->frames_bad, 1);
                chp_log_info("native", "closing a connection: %s (%s)", chp_wire_strerror(code),
                             msg);
                conn_close_after_flush(c);
        }
}

static uint32_t wire_code(int rc)
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
        }
        return CHP_WE_INTERNAL;
}

static void reply_store_error(struct conn *c, uint32_t id, int rc)
{
        reply_error(c, id, wire_code(rc), "%s", chp_strerror(rc));
}

/* ---- uploads at hand --------------------------------------------------------------------- */

static void upl_clear(struct upl *u)
{
        free(u->manifest);
        memset(u, 0, sizeof(*u));
}

static struct upl *upl_find(struct native *n, const uint8_t *id)
{
        for (int i = 0; i < MAX_UPL; i++)
                if (n->upl[i].used && memcmp(n->upl[i].id, id, CHP_UPLOAD_ID_BYTES) == 0) {
                        n->upl[i].last_used = chp_net_now_ms();
                        return &n->upl[i];
                }
        return NULL;
}

/* Keeps manifest (taken over) for upload id; evicts the least recently used. */
static struct upl *upl_add(struct native *n, const uint8_t *id, const uint8_t *file_id,
                           uint8_t *manifest, size_t len)
{
        struct upl *u = upl_find(n, id);
        if (!u) {
                u = &n->upl[0];
                for (int i = 0; i < MAX_UPL; i++) {
                        if (!n->upl[i].used) {
                                u = &n->upl[i];
                                break;
                        }
                        if (n->upl[i].last_used < u->last_used)
                                u = &n->upl[i];
                }
        }
        upl_clear(u);
        if (chp_manifest_decode(manifest, len, &u->m) < 0) {
                free(manifest);
                return NULL;
        }
        u->used = true;
        memcpy(u->id, id, CHP_UPLOAD_ID_BYTES);
        memcpy(u->file_id, file_id, CHP_HASH_BYTES);
        u->manifest = manifest;
        u->manifest_len = len;
        u->last_used = chp_net_now_ms();
        return u;
}

/* The upload at hand, or loaded from the store (another connection opened it). */
static struct upl *upl_get(struct conn *c, const uint8_t *id)
{
        struct upl *u = upl_find(c->nat, id);
        if (u)
                return u;
        uint8_t *m = NULL, file_id[CHP_HASH_BYTES];
        size_t len = 0;
        if (chp_store_upload_manifest(c->sh->store, id, &m, &len) != 0)
                return NULL;
        if (chp_manifest_id(m, len, file_id) != 0) {
                free(m);
                return NULL;
        }
        return upl_add(c->nat, id, file_id, m, len);
}

/* ---- requests that go through the store's writer ----------------------------------------- */

static struct op *op_new(struct conn *c, uint8_t type, uint32_t id, enum chp_store_req_type rt)
{
        struct op *op = calloc(1, sizeof(*op));
        if (!op)
                return NULL;
        op->base.c = c;
        op->frame_id = id;
        op->type = type;
        op->base.req.type = rt;
        op->base.req.done = conn_op_done;
        op->base.done = native_on_store_done;
        return op;
}

static void op_free(struct op *op)
{
        payload_free(op->base.c->sh, op->buf, op->buf_len);
        free(op->upload);
        free(op);
}

/* Hands op to the writer; on refusal answers the request and frees op. */
static bool op_submit(struct conn *c, struct op *op)
{
        op->base.t0 = chp_net_now_us();
        int rc = chp_store_submit(c->sh->store, &op->base.req);
        if (rc) {
                reply_store_error(c, op->frame_id, rc);
                op_free(op);
                return false;
        }
        c->nat->inflight++;
        conn_hold(c);
        return true;
}

/* ---- frame handlers ---------------------------------------------------------------------- */

static void on_hello(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct native *n = c->nat;
        struct chp_msg_hello m;
        if (n->hello) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "HELLO sent twice");
                return;
        }
        if (chp_msg_hello_decode(p, h->len, &m) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed HELLO");
                return;
        }
        if (m.version != CHP_PROTO_VERSION) {
                reply_error(c, h->id, CHP_WE_VERSION, "this relay speaks version %u, not %u",
                            CHP_PROTO_VERSION, m.version);
                return;
        }
        n->hello = true;
        const struct chp_config *cfg = c->sh->cfg;
        struct chp_msg_hello_ok ok = {.version = CHP_PROTO_VERSION,
                                      .features = CHP_FEATURE_NONE,
                                      .max_frame = CHP_CHUNK_FRAME_MAX,
                                      .window_bytes = cfg->window_bytes,
                                      .max_inflight = cfg->max_inflight};
        uint8_t *out = reply_frame(c, CHP_F_HELLO | CHP_F_REPLY, h->id, CHP_HELLO_OK_BYTES);
        if (out && chp_msg_hello_ok_encode(out, CHP_HELLO_OK_BYTES, &ok) != CHP_HELLO_OK_BYTES)
                conn_close(c);
}

static void on_open(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned)
{
        struct chp_msg_open m;
        struct chp_manifest man;
        if (chp_msg_open_decode(p, h->len, &m) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed OPEN");
                goto drop;
        }
        if (chp_manifest_decode(m.manifest, m.manifest_len, &man) < 0) {
                reply_error(c, h->id, CHP_WE_BAD_MANIFEST, "the manifest does not decode");
                goto drop;
        }
        struct op *op = op_new(c, CHP_F_OPEN, h->id, CHP_REQ_UPLOAD_CREATE);
        if (!op || !(op->upload = calloc(1, sizeof(*op->upload)))) {
                free(op);
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                goto drop;
        }
        /* the op keeps the payload: the manifest stays at hand for the chunks to come */
        if (owned) {
                op->buf = p;
                op->buf_len = h->len;
        } else {
                op->buf = payload_alloc(c, h->len);
                if (!op->buf) {
                        op_free(op);
                        reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                        return;
                }
                memcpy(op->buf, p, h->len);
                op->buf_len = h->len;
        }
        const uint8_t *enc = op->buf + (m.manifest - p);
        const struct chp_config *cfg = c->sh->cfg;
        uint64_t now = now_s();
        uint64_t life =
            m.expires_in && m.expires_in < cfg->file_expiry ? m.expires_in : cfg->file_expiry;
        struct chp_upload *u = op->upload;
        randombytes_buf(u->id, sizeof(u->id));
        u->declared_size = man.total_size;
        u->chunk_size = man.chunk_size;
        u->created = now;
        u->expires = cfg->upload_expiry ? now + cfg->upload_expiry : 0;
        u->file_expires = life ? now + life : 0;
        op->base.req.u.upload_create.upload = u;
        op->base.req.u.upload_create.manifest = enc;
        op->base.req.u.upload_create.manifest_len = m.manifest_len;
        op_submit(c, op);
        return;
drop:
        if (owned)
                payload_free(c->sh, p, h->len);
}

static void open_done(struct conn *c, struct op *op)
{
        struct chp_store_req *r = &op->base.req;
        if (r->status) {
                reply_store_error(c, op->frame_id, r->status);
                return;
        }
        const uint8_t *enc = r->u.upload_create.manifest;
        size_t enc_len = r->u.upload_create.manifest_len;
        struct chp_manifest m;
        if (chp_manifest_decode(enc, enc_len, &m) < 0) {
                reply_error(c, op->frame_id, CHP_WE_INTERNAL, "manifest lost");
                return;
        }
        size_t map_len = chp_bitmap_bytes(m.chunk_count);
        uint8_t *missing = calloc(1, map_len ? map_len : 1);
        uint8_t *have = calloc(1, m.chunk_count ? m.chunk_count : 1);
        uint8_t zero_id[CHP_UPLOAD_ID_BYTES] = {0};
        const uint8_t *upload_id = zero_id;
        int rc = missing && have ? 0 : -ENOMEM;
        if (!rc && !r->u.upload_create.complete) {
                upload_id = r->u.upload_create.upload_id;
                rc = chp_store_upload_chunks(c->sh->store, upload_id, have, NULL, m.chunk_count);
                for (uint32_t i = 0; !rc && i < m.chunk_count; i++)
                        if (!have[i])
                                chp_bit_set(missing, i);
        }
        if (rc) {
                reply_store_error(c, op->frame_id, rc);
        } else {
                struct chp_msg_open_ok ok = {
                    .upload_id = upload_id,
                    .file_id = r->u.upload_create.file_id,
                    .state = r->u.upload_create.complete ? CHP_UPLOAD_COMPLETE : CHP_UPLOAD_PARTIAL,
                    .chunk_count = m.chunk_count,
                    .missing = missing};
                size_t len = CHP_OPEN_OK_PREFIX + map_len;
                uint8_t *out = reply_frame(c, CHP_F_OPEN | CHP_F_REPLY, op->frame_id, len);
                if (out && chp_msg_open_ok_encode(out, len, &ok) != (ssize_t)len)
                        conn_close(c);
                if (!r->u.upload_create.complete) {
                        /* keep the manifest at hand: the payload leaves the memory budget */
                        size_t off = (size_t)(enc - op->buf);
                        uint8_t *copy = malloc(enc_len ? enc_len : 1);
                        struct upl *u = NULL;
                        if (copy) {
                                memcpy(copy, op->buf + off, enc_len);
                                u = upl_add(c->nat, upload_id, r->u.upload_create.file_id, copy,
                                            enc_len);
                        }
                        if (u && !r->u.upload_create.resumed)
                                u->created_here = true;
                }
        }
        free(missing);
        free(have);
}

static void on_chunk(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned)
{
        struct native *n = c->nat;
        struct chp_msg_chunk m;
        uint8_t sum[CHP_HASH_BYTES];
        if (chp_msg_chunk_decode(p, h->len, &m) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "CHUNK shorter than its prefix");
                goto drop;
        }
        struct upl *u = upl_get(c, m.upload_id);
        if (!u) {
                reply_error(c, h->id, CHP_WE_NOT_FOUND, "no such upload");
                goto drop;
        }
        if (m.index >= u->m.chunk_count || m.len != chp_manifest_chunk_len(&u->m, m.index)) {
                reply_error(c, h->id, CHP_WE_MISMATCH,
                            "chunk %u: %zu bytes where the manifest has %u", m.index, m.len,
                            m.index < u->m.chunk_count ? chp_manifest_chunk_len(&u->m, m.index)
                                                       : 0);
                goto drop;
        }
        int rc;
        if (owned) {
                /* hashed while it arrived; the rest now */
                rc = chp_sha256_update(&n->sha, p + n->hashed, h->len - n->hashed);
                if (!rc)
                        rc = chp_sha256_final(&n->sha, sum);
        } else {
                rc = chp_sha256(m.data, m.len, sum);
        }
        const uint8_t *want = u->m.addrs + (size_t)m.index * CHP_HASH_BYTES;
        if (rc || memcmp(sum, want, CHP_HASH_BYTES) != 0) {
                reply_error(c, h->id, CHP_WE_MISMATCH,
                            "chunk %u does not hash to its address; nothing stored", m.index);
                goto drop;
        }
        struct op *op = op_new(c, CHP_F_CHUNK, h->id, CHP_REQ_PUT);
        if (!op) {
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                goto drop;
        }
        if (owned) {
                op->buf = p;
        } else if ((op->buf = payload_alloc(c, h->len))) {
                memcpy(op->buf, p, h->len);
        } else {
                free(op);
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                return;
        }
        op->buf_len = h->len;
        op->index = m.index;
        op->chunk_len = (uint32_t)m.len;
        memcpy(op->base.req.u.put.addr, want, CHP_HASH_BYTES);
        op->base.req.u.put.data = op->buf + CHP_CHUNK_PREFIX;
        op->base.req.u.put.len = (uint32_t)m.len;
        op->base.req.u.put.verified = true;
        op->base.req.u.put.has_upload = true;
        memcpy(op->base.req.u.put.upload_id, m.upload_id, CHP_UPLOAD_ID_BYTES);
        op->base.req.u.put.index = m.index;
        if (op_submit(c, op))
                n->window_used += m.len;
        return;
drop:
        if (owned)
                payload_free(c->sh, p, h->len);
}

static void chunk_done(struct conn *c, struct op *op)
{
        c->nat->window_used -= op->chunk_len;
        chp_metrics_observe_commit(c->sh->metrics, op->base.t0);
        if (op->base.req.status) {
                reply_store_error(c, op->frame_id, op->base.req.status);
                return;
        }
        if (op->base.req.u.put.deduplicated)
                atomic_fetch_add(&c->sh->metrics->chunks_dedup, 1);
        else
                atomic_fetch_add(&c->sh->metrics->chunks_stored, 1);
        struct chp_msg_chunk_ok ok = {
            .index = op->index, .flags = op->base.req.u.put.deduplicated ? CHP_CHUNK_DEDUP : 0};
        uint8_t *out = reply_frame(c, CHP_F_CHUNK | CHP_F_REPLY, op->frame_id, CHP_CHUNK_OK_BYTES);
        if (out && chp_msg_chunk_ok_encode(out, CHP_CHUNK_OK_BYTES, &ok) != CHP_CHUNK_OK_BYTES)
                conn_close(c);
}

static void on_upload_request(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        if (chp_msg_id_decode(p, h->len, CHP_UPLOAD_ID_BYTES, &id) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "%s carries a 16-byte upload id",
                            chp_frame_type_name(h->type));
                return;
        }
        bool commit = h->type == CHP_F_COMMIT;
        if (!commit) {
                /* Anyone who holds the file id can see a running upload's manifest (download
                 * while uploading) and so resume it; deleting it is kept for the connection
                 * that created it. Abandoned uploads expire on their own. */
                struct upl *u = upl_find(c->nat, id);
                if (!u || !u->created_here) {
                        reply_error(c, h->id, CHP_WE_UNAUTHORIZED,
                                    "only the connection that created an upload may delete it; "
                                    "it expires by itself");
                        return;
                }
        }
        struct op *op = op_new(c, h->type, h->id, commit ? CHP_REQ_COMMIT : CHP_REQ_UPLOAD_DELETE);
        if (!op) {
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                return;
        }
        if (commit) {
                op->base.req.u.commit.has_upload = true;
                memcpy(op->base.req.u.commit.upload_id, id, CHP_UPLOAD_ID_BYTES);
        } else {
                memcpy(op->base.req.u.upload_delete.upload_id, id, CHP_UPLOAD_ID_BYTES);
        }
        op_submit(c, op);
}

static void upload_request_done(struct conn *c, struct op *op)
{
        struct chp_store_req *r = &op->base.req;
        const uint8_t *id =
            op->type == CHP_F_COMMIT ? r->u.commit.upload_id : r->u.upload_delete.upload_id;
        struct upl *u = upl_find(c->nat, id);
        int rc = r->status;
        if (rc == -ENOENT && op->type == CHP_F_COMMIT && u) {
                /* committed before (its reply lost with an earlier connection)? */
                uint8_t *m = NULL;
                size_t len = 0;
                if (chp_store_file_get(c->sh->store, u->file_id, &m, &len, NULL) == 0) {
                        memcpy(r->u.commit.file_id, u->file_id, CHP_HASH_BYTES);
                        rc = 0;
                }
                free(m);
        }
        if (rc) {
                reply_store_error(c, op->frame_id, rc);
                return;
        }
        if (u)
                upl_clear(u);
        if (op->type == CHP_F_DELETE) {
                reply_frame(c, CHP_F_DELETE | CHP_F_REPLY, op->frame_id, 0);
                return;
        }
        uint8_t *out = reply_frame(c, CHP_F_COMMIT | CHP_F_REPLY, op->frame_id, CHP_HASH_BYTES);
        if (out)
                memcpy(out, r->u.commit.file_id, CHP_HASH_BYTES);
}

/* ---- requests answered on the loop thread ------------------------------------------------ */

static void on_have(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_have m;
        if (chp_msg_have_decode(p, h->len, &m) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed HAVE");
                return;
        }
        uint8_t present[CHP_HAVE_MAX], map[CHP_HAVE_MAX / 8 + 1] = {0};
        int rc = chp_store_has(c->sh->store, m.addrs, m.count, present);
        if (rc) {
                reply_store_error(c, h->id, rc);
                return;
        }
        for (uint32_t i = 0; i < m.count; i++)
                if (present[i])
                        chp_bit_set(map, i);
        size_t len = CHP_HAVE_OK_PREFIX + chp_bitmap_bytes(m.count);
        uint8_t *out = reply_frame(c, CHP_F_HAVE | CHP_F_REPLY, h->id, len);
        if (out && chp_msg_have_ok_encode(out, len, m.count, map) != (ssize_t)len)
                conn_close(c);
}

/* A pending (still uploading) file: its manifest and which chunks are stored so far. */
static int pending_file(struct conn *c, const uint8_t *file_id, uint8_t **manifest, size_t *len,
                        uint8_t **present, uint32_t *stored)
{
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
        struct chp_manifest m;
        *manifest = *present = NULL;
        *stored = 0;
        int rc = chp_store_pending(c->sh->store, file_id, upload_id);
        if (!rc)
                rc = chp_store_upload_manifest(c->sh->store, upload_id, manifest, len);
        if (!rc && chp_manifest_decode(*manifest, *len, &m) < 0)
                rc = CHP_ECORRUPT;
        uint8_t *have = NULL;
        if (!rc) {
                have = calloc(1, m.chunk_count ? m.chunk_count : 1);
                *present = calloc(1, chp_bitmap_bytes(m.chunk_count) + 1);
                if (!have || !*present)
                        rc = -ENOMEM;
        }
        if (!rc)
                rc = chp_store_upload_chunks(c->sh->store, upload_id, have, NULL, m.chunk_count);
        for (uint32_t i = 0; !rc && i < m.chunk_count; i++)
                if (have[i]) {
                        chp_bit_set(*present, i);
                        (*stored)++;
                }
        free(have);
        if (rc) {
                free(*manifest);
                free(*present);
                *manifest = *present = NULL;
        }
        return rc;
}

/* A file this relay lacks, whose origin (from the ticket) is another relay: fetched from it if
 * it is a peer. Returns true when the request is answered here. */
static bool via_origin(struct conn *c, const struct chp_frame_header *h,
                       const struct chp_msg_file_req *q, bool pending, uint32_t stored)
{
        if (!q->has_origin || sodium_memcmp(q->origin_key, c->sh->identity->pub, CHP_KEY_BYTES) == 0)
                return false; /* this relay is the origin: what it has is all there is */
        char hex[CHP_HASH_HEXBYTES], msg[CHP_PEER_MSG_MAX];
        int peer = chp_peers_find(c->sh->peers, q->origin_key);
        if (peer < 0) {
                chp_hex_encode(q->origin_key, CHP_KEY_BYTES, hex);
                reply_error(c, h->id, CHP_WE_UNAUTHORIZED,
                            "the file's origin relay %.*s (key %.16s...) is not a peer of this "
                            "relay: fetch it from its origin",
                            (int)q->addr_len, q->origin_addr, hex);
                return true;
        }
        enum chp_fetch_state st = chp_peers_fetch(c->sh->peers, peer, q->file_id, msg, sizeof(msg));
        if (st == CHP_FETCH_FAILED) {
                if (pending)
                        reply_error(c, h->id, CHP_WE_UNAVAILABLE,
                                    "%s; this relay holds %u chunks of the file", msg, stored);
                else
                        reply_error(c, h->id, CHP_WE_UNAVAILABLE, "%s", msg);
                return true;
        }
        if (!pending) {
                /* the fetch has not stored the manifest yet */
                reply_error(c, h->id, CHP_WE_FETCHING, "fetching from %s",
                            chp_peers_name(c->sh->peers, peer));
                return true;
        }
        return false; /* partial: what is here is served, the rest is on its way */
}

static void on_get_manifest(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_file_req q;
        if (chp_msg_file_req_decode(p, h->len, &q) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME,
                            "GET_MANIFEST carries a 32-byte file id and an optional origin");
                return;
        }
        const uint8_t *id = q.file_id;
        uint8_t *man = NULL, *present = NULL;
        size_t len = 0;
        uint32_t stored = 0;
        struct chp_msg_manifest r = {.state = CHP_UPLOAD_COMPLETE};
        int rc = chp_store_file_get(c->sh->store, id, &man, &len, NULL);
        if (rc == -ENOENT) {
                rc = pending_file(c, id, &man, &len, &present, &stored);
                r.state = CHP_UPLOAD_PARTIAL;
                if ((rc == 0 || rc == -ENOENT) && via_origin(c, h, &q, rc == 0, stored)) {
                        free(man);
                        free(present);
                        return;
                }
        }
        if (rc) {
                reply_error(c, h->id, wire_code(rc), "%s",
                            rc == -ENOENT ? "no such file" : chp_strerror(rc));
                return;
        }
        struct chp_manifest m;
        if (chp_manifest_decode(man, len, &m) < 0) {
                reply_store_error(c, h->id, CHP_ECORRUPT);
        } else {
                r.manifest = man;
                r.manifest_len = (uint32_t)len;
                r.present = present;
                size_t out_len =
                    CHP_MANIFEST_PREFIX + len +
                    (r.state == CHP_UPLOAD_PARTIAL ? chp_bitmap_bytes(m.chunk_count) : 0);
                uint8_t *out = reply_frame(c, CHP_F_GET_MANIFEST | CHP_F_REPLY, h->id, out_len);
                if (out && chp_msg_manifest_encode(out, out_len, &r) != (ssize_t)out_len)
                        conn_close(c);
        }
        free(man);
        free(present);
}

static void on_get_chunk(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_get_chunk m;
        if (chp_msg_get_chunk_decode(p, h->len, &m) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed GET_CHUNK");
                return;
        }
        struct chp_chunk_loc loc;
        int rc = chp_store_locate(c->sh->store, m.addr, &loc);
        if (rc) {
                reply_error(c, h->id, wire_code(rc), "%s",
                            rc == -ENOENT ? "no such chunk" : chp_strerror(rc));
                return;
        }
        uint32_t len = m.length ? m.length : loc.len - (m.offset < loc.len ? m.offset : loc.len);
        if (m.offset > loc.len || len > loc.len - m.offset) {
                chp_store_loc_release(c->sh->store, &loc);
                reply_error(c, h->id, CHP_WE_NOT_FOUND, "range %u+%u outside the %u-byte chunk",
                            m.offset, len, loc.len);
                return;
        }
        struct chp_msg_chunk_data d = {.addr = m.addr, .offset = m.offset, .chunk_len = loc.len};
        size_t out_len = CHP_CHUNK_DATA_PREFIX + len;
        if (loc.is_inline || loc.fd < 0) {
                /* inline chunks come out of LMDB, and a backend without files (fd -1) has
                 * nothing to read through the ring: copy them, checked against their XXH3.
                 * chp_store_read runs here, on the loop thread: an LMDB page not yet in
                 * memory, or such a backend's fetch, stalls this loop's other connections
                 * for as long as it takes (a store-side read would be needed to avoid it). */
                chp_store_loc_release(c->sh->store, &loc);
                uint8_t *buf = malloc(loc.len ? loc.len : 1);
                ssize_t n = buf ? chp_store_read(c->sh->store, m.addr, buf, loc.len) : -ENOMEM;
                if (n != (ssize_t)loc.len) {
                        free(buf);
                        reply_store_error(c, h->id, n < 0 ? (int)n : CHP_ECORRUPT);
                        return;
                }
                uint8_t *out = reply_frame(c, CHP_F_GET_CHUNK | CHP_F_REPLY, h->id, out_len);
                if (out) {
                        chp_msg_chunk_data_prefix_encode(out, CHP_CHUNK_DATA_PREFIX, &d);
                        memcpy(out + CHP_CHUNK_DATA_PREFIX, buf + m.offset, len);
                }
                free(buf);
                return;
        }
        /* segment chunks go from the page cache to the socket: only the header is copied */
        uint8_t *out = reply_frame(c, CHP_F_GET_CHUNK | CHP_F_REPLY, h->id, CHP_CHUNK_DATA_PREFIX);
        if (!out) {
                chp_store_loc_release(c->sh->store, &loc);
                return;
        }
        chp_frame_header_encode(out - CHP_FRAME_HEADER, CHP_F_GET_CHUNK | CHP_F_REPLY, h->id,
                                (uint32_t)out_len);
        chp_msg_chunk_data_prefix_encode(out, CHP_CHUNK_DATA_PREFIX, &d);
        if (conn_out_splice(c, &loc, loc.offset + m.offset, len) != 0)
                conn_close(c);
}

static void on_stat(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        if (chp_msg_id_decode(p, h->len, CHP_HASH_BYTES, &id) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "STAT carries a 32-byte file id");
                return;
        }
        uint8_t *man = NULL, *present = NULL;
        size_t len = 0;
        struct chp_file_info info = {0};
        struct chp_msg_stat_ok st = {.state = CHP_UPLOAD_COMPLETE};
        int rc = chp_store_file_get(c->sh->store, id, &man, &len, &info);
        if (rc == -ENOENT) {
                st.state = CHP_UPLOAD_PARTIAL;
                rc = pending_file(c, id, &man, &len, &present, &st.chunks_present);
        }
        struct chp_manifest m;
        if (!rc && chp_manifest_decode(man, len, &m) < 0)
                rc = CHP_ECORRUPT;
        if (rc) {
                reply_error(c, h->id, wire_code(rc), "%s",
                            rc == -ENOENT ? "no such file" : chp_strerror(rc));
        } else {
                st.size = m.total_size;
                st.chunk_count = m.chunk_count;
                st.chunk_size = m.chunk_size;
                if (st.state == CHP_UPLOAD_COMPLETE)
                        st.chunks_present = m.chunk_count;
                st.created = info.created;
                st.expires = info.expires;
                uint8_t *out = reply_frame(c, CHP_F_STAT | CHP_F_REPLY, h->id, CHP_STAT_OK_BYTES);
                if (out && chp_msg_stat_ok_encode(out, CHP_STAT_OK_BYTES, &st) != CHP_STAT_OK_BYTES)
                        conn_close(c);
        }
        free(man);
        free(present);
}

/* A peer asks this relay to pull one of its files (an offer ahead of any request). */
static void on_prefetch(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        char msg[CHP_PEER_MSG_MAX];
        int peer = secure_peer(c);
        if (chp_msg_id_decode(p, h->len, CHP_HASH_BYTES, &id) != 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "PREFETCH carries a 32-byte file id");
                return;
        }
        if (peer < 0) {
                reply_error(c, h->id, CHP_WE_UNAUTHORIZED,
                            "PREFETCH is for peers (a Noise IK connection from a configured peer)");
                return;
        }
        if (chp_peers_fetch(c->sh->peers, peer, id, msg, sizeof(msg)) == CHP_FETCH_FAILED) {
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "%s", msg);
                return;
        }
        reply_frame(c, CHP_F_PREFETCH | CHP_F_REPLY, h->id, 0);
}

/* A client asks this relay to offer one of its files to a peer (for a recipient there). */
static void on_offer(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_offer m;
        if (chp_msg_offer_decode(p, h->len, &m) < 0) {
                reply_error(c, h->id, CHP_WE_BAD_FRAME, "OFFER carries a file id and a peer key");
                return;
        }
        int peer = chp_peers_find(c->sh->peers, m.peer_key);
        uint8_t *man = NULL;
        size_t len;
        if (peer < 0) {
                reply_error(c, h->id, CHP_WE_NOT_FOUND, "no peer with that key");
                return;
        }
        if (chp_store_file_get(c->sh->store, m.file_id, &man, &len, NULL) != 0) {
                reply_error(c, h->id, CHP_WE_NOT_FOUND, "no such file here to offer");
                return;
        }
        free(man);
        if (chp_peers_offer(c->sh->peers, peer, m.file_id) != 0) {
                reply_error(c, h->id, CHP_WE_UNAVAILABLE, "too many offers in progress");
                return;
        }
        reply_frame(c, CHP_F_OFFER | CHP_F_REPLY, h->id, 0);
}

static void on_ping(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_ping m;
        if (chp_msg_ping_decode(p, h->len, &m) < 0) {
                reply_error(c, h->id, CHP_WE_TOO_BIG, "PING carries at most %d bytes",
                            CHP_PING_MAX);
                return;
        }
        uint8_t *out = reply_frame(c, CHP_F_PING | CHP_F_REPLY, h->id, m.len);
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
                on_open(c, h, p, owned);
                return;
        case CHP_F_CHUNK:
                on_chunk(c, h, p, owned);
                return;
        case CHP_F_COMMIT:
        case CHP_F_DELETE:
                on_upload_request(c, h, p);
                break;
        case CHP_F_HAVE:
                on_have(c, h, p);
                break;
        case CHP_F_GET_MANIFEST:
                on_get_manifest(c, h, p);
                break;
        case CHP_F_GET_CHUNK:
                on_get_chunk(c, h, p);
                break;
        case CHP_F_STAT:
                on_stat(c, h, p);
                break;
        case CHP_F_PING:
                on_ping(c, h, p);
                break;
        case CHP_F_PREFETCH:
                on_prefetch(c, h, p);
                break;
        case CHP_F_OFFER:
                on_offer(c, h, p);
                break;
        default:
                reply_error(c, h->id, CHP_WE_UNKNOWN_TYPE, "frame type 0x%02x is not a request",
                            h->type);
                break;
        }
        if (owned)
                payload_free(c->sh, p, h->len);
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
                reply_error(c, 0, CHP_WE_BAD_FRAME, "nonzero flags or reserved bits");
        else if (!max)
                reply_error(c, 0, CHP_WE_UNKNOWN_TYPE, "unknown frame type 0x%02x", b[0]);
        else
                reply_error(c, 0, CHP_WE_TOO_BIG, "%s frame of %u bytes (at most %u)",
                            chp_frame_type_name(b[0]),
                            (unsigned)(b[8] | b[9] << 8 | b[10] << 16 | (unsigned)b[11] << 24),
                            max);
}

static void native_on_input(struct conn *c)
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
                        reply_error(c, h.id, CHP_WE_NO_HELLO, "the first frame must be HELLO");
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
                        reply_error(c, h.id, CHP_WE_UNAVAILABLE, "out of memory");
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

static void native_on_store_done(struct conn_op *base)
{
        struct op *op = (struct op *)base;
        struct conn *c = base->c;
        c->nat->inflight--;
        if (!c->closed) {
                switch (op->type) {
                case CHP_F_OPEN:
                        open_done(c, op);
                        break;
                case CHP_F_CHUNK:
                        chunk_done(c, op);
                        break;
                default:
                        upload_request_done(c, op);
                        break;
                }
                /* replies went out; flow control may allow the next frames */
                native_on_input(c);
                conn_flush(c);
                conn_maybe_read(c);
        } else if (op->type == CHP_F_CHUNK) {
                c->nat->window_used -= op->chunk_len;
        }
        op_free(op);
        conn_release(c);
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
        for (int i = 0; i < MAX_UPL; i++)
                upl_clear(&n->upl[i]);
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
