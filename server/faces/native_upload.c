/* native_upload.c — the native face's uploads: OPEN, CHUNK, COMMIT and DELETE, the requests that
 * go through the store's writer, and their completion (native_on_store_done), which answers
 * them and lets the frame loop read on. Also the uploads a connection keeps at hand (manifests
 * for checking the chunks to come).
 *
 * Records a completion needs (the chunks an opened upload has, whether a file is stored) are
 * asked with chp_store_lookup (native_read.c's nlookup, which then owns the op); a CHUNK of an
 * upload this connection does not have at hand waits (parked, its payload kept) for the
 * upload's manifest the same way.
 *
 * Loop thread only (the writer thread only sees the chp_store_req inside an op).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err.h"
#include "metrics.h"
#include "native_int.h"

/* A request waiting for the store's writer. */
struct op {
        struct conn_op base; /* first: the loop routes the completion through it */
        uint32_t frame_id;
        uint8_t type;
        uint8_t *buf; /* payload owned by the op (chunk bytes, manifest), or NULL */
        size_t buf_len;
        uint32_t index;
        uint32_t chunk_len;
        struct chp_upload *upload;  /* OPEN */
        struct chp_gate_upload adm; /* OPEN: the gate's admission, until the upload is at hand */
        char tenant[CHP_TENANT_NAME_MAX + 1]; /* COMMIT: the upload's tenant ("": none) */
};

static uint64_t now_s(void)
{
        return (uint64_t)time(NULL);
}

static void native_on_store_done(struct conn_op *base);

/* ---- uploads at hand --------------------------------------------------------------------- */

/* The upload leaves this connection's hand: its slot among the tenant's uploads in progress
 * goes back to the gate. */
static void upl_clear(struct conn *c, struct upl *u)
{
        chp_gate_upload_end(c->sh->gate, &u->adm);
        free(u->manifest);
        memset(u, 0, sizeof(*u));
}

void native_upload_forget_all(struct conn *c)
{
        for (int i = 0; i < MAX_UPL; i++)
                upl_clear(c, &c->nat->upl[i]);
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
static struct upl *upl_add(struct conn *c, const uint8_t *id, const uint8_t *file_id,
                           uint8_t *manifest, size_t len)
{
        struct native *n = c->nat;
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
        upl_clear(c, u);
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

/* ---- requests that go through the store's writer ----------------------------------------- */

/* Whether the limits per address and per subject (conf/client_limits.h) admit one more upload;
 * if not, the OPEN is answered ERROR LIMITED "retry after N s" and the refusal counted. */
static bool limits_admit(struct conn *c, uint32_t frame_id)
{
        uint32_t retry;
        const struct chp_caller *who = &c->nat->caller;
        bool tok = who->kind == CHP_CALLER_TOKEN;
        if (!chp_limits_upload_begin(c->sh->limits, &c->peer, tok ? who->token.tenant : NULL,
                                     tok ? who->token.subject : NULL, chp_net_now_ms(), &retry))
                return true;
        chp_metrics_refuse(c->sh->metrics, CHP_ELIMITED);
        native_reply_error(c, frame_id, CHP_WE_LIMITED,
                           "retry after %u s: too many new or incomplete uploads", retry);
        return false;
}

/* An upload counted by limits_admit on c's address and subject is no longer incomplete (see
 * chp_limits_upload_end; a native upload is committed under its subject's token, and deleted
 * only by the connection that began it). */
static void limits_end(struct conn *c)
{
        const struct chp_caller *who = &c->nat->caller;
        bool tok = who->kind == CHP_CALLER_TOKEN;
        chp_limits_upload_end(c->sh->limits, &c->peer, tok ? who->token.tenant : NULL,
                              tok ? who->token.subject : NULL, chp_net_now_ms());
}

/* Whether a finished request ends an upload the limits count as incomplete: an OPEN that made no
 * new session (refused, resumed, or the file is stored), a COMMIT or DELETE that went through. */
static bool ends_incomplete(const struct op *op)
{
        const struct chp_store_req *r = &op->base.req;
        if (op->type == CHP_F_OPEN)
                return r->status || r->u.upload_create.complete || r->u.upload_create.resumed;
        return op->type != CHP_F_CHUNK && !r->status;
}

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
        chp_gate_upload_end(op->base.c->sh->gate, &op->adm); /* unless handed to an upl */
        native_payload_free(op->base.c->sh, op->buf, op->buf_len);
        free(op->upload);
        free(op);
}

/* Hands op to the writer; on refusal answers the request and frees op. */
static bool op_submit(struct conn *c, struct op *op)
{
        op->base.t0 = chp_net_now_us();
        int rc = chp_store_submit(c->sh->store, &op->base.req);
        if (rc) {
                native_reply_store_error(c, op->frame_id, rc);
                op_free(op);
                return false;
        }
        c->nat->inflight++;
        conn_hold(c);
        return true;
}

void native_upload_open(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned)
{
        struct chp_msg_open m;
        struct chp_manifest man;
        if (chp_msg_open_decode(p, h->len, &m) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed OPEN");
                goto drop;
        }
        uint8_t file_id[CHP_HASH_BYTES];
        if (chp_manifest_decode(m.manifest, m.manifest_len, &man) < 0 ||
            chp_manifest_id(m.manifest, m.manifest_len, file_id) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_MANIFEST, "the manifest does not decode");
                goto drop;
        }
        const struct chp_config *cfg = c->sh->cfg;
        uint64_t now = now_s();
        /* the limits per address and subject first: an OPEN refused by them charges no budget */
        if (!limits_admit(c, h->id))
                goto drop;
        struct chp_gate_upload adm;
        int rc = chp_gate_upload_begin(c->sh->gate, cfg, &c->nat->caller, file_id, true,
                                       man.total_size, now, &adm);
        if (rc) {
                limits_end(c);
                native_reply_refusal(c, h->id, rc,
                                     rc == CHP_EQUOTA ? "OPEN: the token's budget (max_bytes, max_files)"
                                                      : "OPEN");
                goto drop;
        }
        struct op *op = op_new(c, CHP_F_OPEN, h->id, CHP_REQ_UPLOAD_CREATE);
        if (!op || !(op->upload = calloc(1, sizeof(*op->upload)))) {
                free(op);
                chp_gate_upload_end(c->sh->gate, &adm);
                limits_end(c);
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                goto drop;
        }
        op->adm = adm;
        /* the op keeps the payload: the manifest stays at hand for the chunks to come */
        if (owned) {
                op->buf = p;
                op->buf_len = h->len;
        } else {
                op->buf = native_payload_alloc(c, h->len);
                if (!op->buf) {
                        op_free(op);
                        limits_end(c);
                        native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                        return;
                }
                memcpy(op->buf, p, h->len);
                op->buf_len = h->len;
        }
        const uint8_t *enc = op->buf + (m.manifest - p);
        uint64_t life =
            m.expires_in && m.expires_in < cfg->file_expiry ? m.expires_in : cfg->file_expiry;
        struct chp_upload *u = op->upload;
        snprintf(u->tenant, sizeof(u->tenant), "%s", op->adm.tenant);
        /* the subject it is begun under: only that subject may resume it (store.h) */
        if (c->nat->caller.kind == CHP_CALLER_TOKEN)
                snprintf(u->subject, sizeof(u->subject), "%s", c->nat->caller.token.subject);
        randombytes_buf(u->id, sizeof(u->id));
        u->declared_size = man.total_size;
        u->chunk_size = man.chunk_size;
        u->created = now;
        u->expires = cfg->upload_expiry ? now + cfg->upload_expiry : 0;
        u->file_expires = life ? now + life : 0;
        /* a token bounds its files' lives: the shorter of its own and its tenant's */
        if (op->adm.expires_max && (!u->file_expires || u->file_expires > op->adm.expires_max))
                u->file_expires = op->adm.expires_max;
        op->base.req.u.upload_create.quota = op->adm.has_quota ? &op->adm.quota : NULL;
        op->base.req.u.upload_create.upload = u;
        op->base.req.u.upload_create.manifest = enc;
        op->base.req.u.upload_create.manifest_len = m.manifest_len;
        if (!op_submit(c, op))
                limits_end(c);
        return;
drop:
        if (owned)
                native_payload_free(c->sh, p, h->len);
}

/* A completion that needs a record first (chp_store_lookup): op waits, owned by the lookup. */
static void op_ctx_free(void *ctx)
{
        op_free(ctx);
}

static struct nlookup *op_lookup(struct conn *c, struct op *op)
{
        struct nlookup *nl = nlookup_new(c, op->frame_id);
        if (nl) {
                nl->ctx = op;
                nl->free_ctx = op_ctx_free;
        }
        return nl;
}

/* OPEN_OK: the chunks the upload still misses (have: a byte per chunk, NULL: all of them). */
static void open_reply(struct conn *c, struct op *op, const uint8_t *have, int rc)
{
        struct chp_store_req *r = &op->base.req;
        const uint8_t *enc = r->u.upload_create.manifest;
        size_t enc_len = r->u.upload_create.manifest_len;
        struct chp_manifest m;
        if (!rc && chp_manifest_decode(enc, enc_len, &m) < 0) {
                native_reply_error(c, op->frame_id, CHP_WE_INTERNAL, "manifest lost");
                return;
        }
        size_t map_len = rc ? 0 : chp_bitmap_bytes(m.chunk_count);
        uint8_t *missing = rc ? NULL : calloc(1, map_len ? map_len : 1);
        uint8_t zero_id[CHP_UPLOAD_ID_BYTES] = {0};
        bool complete = r->u.upload_create.complete;
        const uint8_t *upload_id = complete ? zero_id : r->u.upload_create.upload_id;
        if (!rc && !missing)
                rc = -ENOMEM;
        for (uint32_t i = 0; !rc && have && i < m.chunk_count; i++)
                if (!have[i])
                        chp_bit_set(missing, i);
        if (rc) {
                native_reply_store_error(c, op->frame_id, rc);
                free(missing);
                return;
        }
        struct chp_msg_open_ok ok = {.upload_id = upload_id,
                                     .file_id = r->u.upload_create.file_id,
                                     .state = complete ? CHP_UPLOAD_COMPLETE : CHP_UPLOAD_PARTIAL,
                                     .chunk_count = m.chunk_count,
                                     .missing = missing};
        size_t len = CHP_OPEN_OK_PREFIX + map_len;
        uint8_t *out = native_reply_frame(c, CHP_F_OPEN | CHP_F_REPLY, op->frame_id, len);
        if (out && chp_msg_open_ok_encode(out, len, &ok) != (ssize_t)len)
                conn_close(c);
        free(missing);
        if (complete)
                return;
        /* keep the manifest at hand: the payload leaves the memory budget */
        size_t off = (size_t)(enc - op->buf);
        uint8_t *copy = malloc(enc_len ? enc_len : 1);
        struct upl *u = NULL;
        if (copy) {
                memcpy(copy, op->buf + off, enc_len);
                u = upl_add(c, upload_id, r->u.upload_create.file_id, copy, enc_len);
        }
        if (u && !r->u.upload_create.resumed)
                u->created_here = true;
        if (u) { /* the slot stays taken while the upload is at hand */
                u->adm = op->adm;
                op->adm.holds_slot = false;
        }
}

/* The file of an upload that ended between its OPEN and the look at its chunks: committed by
 * another sender of the same manifest (on this relay or another on a shared pool), OPEN
 * answers COMPLETE, as the local store's one transaction would have; else the upload's end. */
static void open_got_file(struct conn *c, struct nlookup *nl)
{
        struct op *op = nl->ctx;
        if (nl->q.status == 0) {
                op->base.req.u.upload_create.complete = true;
                op->base.req.u.upload_create.resumed = false;
                open_reply(c, op, NULL, 0);
        } else {
                open_reply(c, op, NULL, -ENOENT);
        }
        nlookup_free(nl);
}

static void open_got_chunks(struct conn *c, struct nlookup *nl)
{
        struct op *op = nl->ctx;
        if (nl->q.status == -ENOENT) {
                chp_store_lookup_clear(&nl->q);
                nl->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE};
                memcpy(nl->q.id, op->base.req.u.upload_create.file_id, CHP_HASH_BYTES);
                nlookup_ask(c, nl, open_got_file);
                return;
        }
        open_reply(c, op, nl->have, nl->q.status);
        nlookup_free(nl);
}

/* OPEN's completion; true when op went on to a lookup (which frees it). */
static bool open_done(struct conn *c, struct op *op)
{
        struct chp_store_req *r = &op->base.req;
        if (r->status)
                chp_gate_upload_refund(c->sh->gate, &op->adm); /* nothing was created */
        if (r->status == CHP_EQUOTA) {
                char what[96];
                snprintf(what, sizeof(what), "OPEN: %s",
                         chp_gate_quota_name(r->u.upload_create.quota_hit));
                native_reply_refusal(c, op->frame_id, r->status, what);
                return false;
        }
        if (r->status == CHP_ETOKEN_SUBJECT) {
                native_reply_refusal(
                    c, op->frame_id, r->status,
                    "OPEN (a resume needs a token of the subject that began the upload)");
                return false;
        }
        if (r->status) {
                native_reply_store_error(c, op->frame_id, r->status);
                return false;
        }
        struct chp_manifest m;
        if (r->u.upload_create.complete ||
            chp_manifest_decode(r->u.upload_create.manifest, r->u.upload_create.manifest_len, &m) <
                0) {
                open_reply(c, op, NULL, 0); /* nothing missing, or the manifest lost */
                return false;
        }
        /* which chunks the upload has (attached at open, or sent before a resume) */
        struct nlookup *nl = op_lookup(c, op);
        if (!nl || !(nl->have = calloc(1, m.chunk_count ? m.chunk_count : 1))) {
                if (nl)
                        nl->free_ctx = NULL; /* op stays the caller's */
                nlookup_free(nl);
                native_reply_store_error(c, op->frame_id, -ENOMEM);
                return false;
        }
        nl->q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_UPLOAD_CHUNKS, .n = m.chunk_count, .present = nl->have};
        memcpy(nl->q.id, r->u.upload_create.upload_id, CHP_UPLOAD_ID_BYTES);
        nlookup_ask(c, nl, open_got_chunks);
        return true;
}

/* A CHUNK whose upload is known (u), hashed (sum, or hash_rc): checked against the manifest
 * and handed to the writer. p (h->len bytes) is taken over when owned. */
static void chunk_checked(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned,
                          const struct chp_msg_chunk *m, const uint8_t sum[CHP_HASH_BYTES],
                          int hash_rc, struct upl *u)
{
        struct native *n = c->nat;
        if (m->index >= u->m.chunk_count || m->len != chp_manifest_chunk_len(&u->m, m->index)) {
                native_reply_error(
                    c, h->id, CHP_WE_MISMATCH, "chunk %u: %zu bytes where the manifest has %u",
                    m->index, m->len,
                    m->index < u->m.chunk_count ? chp_manifest_chunk_len(&u->m, m->index) : 0);
                goto drop;
        }
        const uint8_t *want = u->m.addrs + (size_t)m->index * CHP_HASH_BYTES;
        if (hash_rc || memcmp(sum, want, CHP_HASH_BYTES) != 0) {
                native_reply_error(c, h->id, CHP_WE_MISMATCH,
                                   "chunk %u does not hash to its address; nothing stored",
                                   m->index);
                goto drop;
        }
        struct op *op = op_new(c, CHP_F_CHUNK, h->id, CHP_REQ_PUT);
        if (!op) {
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                goto drop;
        }
        if (owned) {
                op->buf = p;
        } else if ((op->buf = native_payload_alloc(c, h->len))) {
                memcpy(op->buf, p, h->len);
        } else {
                free(op);
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                return;
        }
        op->buf_len = h->len;
        op->index = m->index;
        op->chunk_len = (uint32_t)m->len;
        memcpy(op->base.req.u.put.addr, want, CHP_HASH_BYTES);
        op->base.req.u.put.data = op->buf + CHP_CHUNK_PREFIX;
        op->base.req.u.put.len = (uint32_t)m->len;
        op->base.req.u.put.verified = true;
        op->base.req.u.put.has_upload = true;
        memcpy(op->base.req.u.put.upload_id, m->upload_id, CHP_UPLOAD_ID_BYTES);
        op->base.req.u.put.index = m->index;
        if (op_submit(c, op))
                n->window_used += m->len;
        return;
drop:
        if (owned)
                native_payload_free(c->sh, p, h->len);
}

/* A CHUNK of an upload not at hand (another connection opened it), waiting for its manifest:
 * the frame's payload (charged to the memory budget) and its hash. */
struct parked_chunk {
        struct chp_shared *sh;
        struct chp_frame_header h;
        uint8_t *p; /* h.len bytes, owned */
        uint8_t sum[CHP_HASH_BYTES];
        int hash_rc;
};

static void parked_free(void *ctx)
{
        struct parked_chunk *pc = ctx;
        native_payload_free(pc->sh, pc->p, pc->h.len);
        free(pc);
}

static void chunk_got_manifest(struct conn *c, struct nlookup *nl)
{
        struct parked_chunk *pc = nl->ctx;
        struct chp_store_lookup *q = &nl->q;
        struct chp_msg_chunk m;
        uint8_t file_id[CHP_HASH_BYTES];
        struct upl *u = NULL;
        if (chp_msg_chunk_decode(pc->p, pc->h.len, &m) == 0 && !q->status &&
            chp_manifest_id(q->manifest, q->manifest_len, file_id) == 0) {
                u = upl_add(c, m.upload_id, file_id, q->manifest, q->manifest_len);
                q->manifest = NULL; /* taken over (freed by upl_add when it does not decode) */
        }
        if (u) {
                uint8_t *p = pc->p;
                pc->p = NULL; /* taken over by chunk_checked */
                chunk_checked(c, &pc->h, p, true, &m, pc->sum, pc->hash_rc, u);
        } else {
                native_reply_error(c, pc->h.id, CHP_WE_NOT_FOUND, "no such upload");
        }
        nlookup_free(nl);
}

void native_upload_chunk(struct conn *c, const struct chp_frame_header *h, uint8_t *p, bool owned)
{
        struct native *n = c->nat;
        struct chp_msg_chunk m;
        uint8_t sum[CHP_HASH_BYTES];
        if (chp_msg_chunk_decode(p, h->len, &m) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "CHUNK shorter than its prefix");
                if (owned)
                        native_payload_free(c->sh, p, h->len);
                return;
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
        struct upl *u = upl_find(n, m.upload_id);
        if (u) {
                chunk_checked(c, h, p, owned, &m, sum, rc, u);
                return;
        }
        /* not at hand: its manifest is looked up, the frame parked meanwhile */
        struct parked_chunk *pc = calloc(1, sizeof(*pc));
        struct nlookup *nl = pc ? nlookup_new(c, h->id) : NULL;
        uint8_t *keep = !nl ? NULL : owned ? p : native_payload_alloc(c, h->len);
        if (!keep) {
                free(pc);
                nlookup_free(nl);
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                if (owned)
                        native_payload_free(c->sh, p, h->len);
                return;
        }
        if (!owned)
                memcpy(keep, p, h->len);
        *pc = (struct parked_chunk){.sh = c->sh, .h = *h, .p = keep, .hash_rc = rc};
        memcpy(pc->sum, sum, CHP_HASH_BYTES);
        nl->ctx = pc;
        nl->free_ctx = parked_free;
        nl->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_MANIFEST};
        memcpy(nl->q.id, m.upload_id, CHP_UPLOAD_ID_BYTES);
        nlookup_ask(c, nl, chunk_got_manifest);
}

static void chunk_reply(struct conn *c, struct op *op)
{
        if (op->base.req.status) {
                native_reply_store_error(c, op->frame_id, op->base.req.status);
                return;
        }
        if (op->base.req.u.put.deduplicated)
                atomic_fetch_add(&c->sh->metrics->chunks_dedup, 1);
        else
                atomic_fetch_add(&c->sh->metrics->chunks_stored, 1);
        struct chp_msg_chunk_ok ok = {
            .index = op->index, .flags = op->base.req.u.put.deduplicated ? CHP_CHUNK_DEDUP : 0};
        uint8_t *out =
            native_reply_frame(c, CHP_F_CHUNK | CHP_F_REPLY, op->frame_id, CHP_CHUNK_OK_BYTES);
        if (out && chp_msg_chunk_ok_encode(out, CHP_CHUNK_OK_BYTES, &ok) != CHP_CHUNK_OK_BYTES)
                conn_close(c);
}

static void chunk_got_file(struct conn *c, struct nlookup *nl)
{
        struct op *op = nl->ctx;
        if (nl->q.status == 0)
                native_reply_error(c, op->frame_id, CHP_WE_COMMITTED,
                                   "upload committed meanwhile; OPEN again to finish");
        else
                chunk_reply(c, op);
        nlookup_free(nl);
}

/* CHUNK's completion; true when op went on to a lookup (which frees it). An upload this
 * connection has at hand that is gone may be gone because its file was committed (by another
 * connection sending the same manifest): then the sender is told COMMITTED, not NOT_FOUND, and
 * re-OPENs to hear COMPLETE. */
static bool chunk_done(struct conn *c, struct op *op)
{
        c->nat->window_used -= op->chunk_len;
        chp_metrics_observe_commit(c->sh->metrics, op->base.t0);
        struct upl *u =
            op->base.req.status == -ENOENT ? upl_find(c->nat, op->base.req.u.put.upload_id) : NULL;
        struct nlookup *nl = u ? op_lookup(c, op) : NULL;
        if (!nl) {
                chunk_reply(c, op);
                return false;
        }
        nl->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE}; /* whether it is stored */
        memcpy(nl->q.id, u->file_id, CHP_HASH_BYTES);
        nlookup_ask(c, nl, chunk_got_file);
        return true;
}

void native_upload_finish(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        if (chp_msg_id_decode(p, h->len, CHP_UPLOAD_ID_BYTES, &id) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "%s carries a 16-byte upload id",
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
                        native_reply_error(
                            c, h->id, CHP_WE_UNAUTHORIZED,
                            "only the connection that created an upload may delete it; "
                            "it expires by itself");
                        return;
                }
        }
        struct op *op = op_new(c, h->type, h->id, commit ? CHP_REQ_COMMIT : CHP_REQ_UPLOAD_DELETE);
        if (!op) {
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "out of memory");
                return;
        }
        if (commit) {
                struct upl *u = upl_find(c->nat, id);
                if (u)
                        snprintf(op->tenant, sizeof(op->tenant), "%s", u->adm.tenant);
                op->base.req.u.commit.tenant = op->tenant[0] ? op->tenant : NULL;
                op->base.req.u.commit.has_upload = true;
                memcpy(op->base.req.u.commit.upload_id, id, CHP_UPLOAD_ID_BYTES);
        } else {
                memcpy(op->base.req.u.upload_delete.upload_id, id, CHP_UPLOAD_ID_BYTES);
        }
        op_submit(c, op);
}

/* COMMIT's or DELETE's reply, rc its outcome. */
static void finish_reply(struct conn *c, struct op *op, int rc)
{
        struct chp_store_req *r = &op->base.req;
        const uint8_t *id =
            op->type == CHP_F_COMMIT ? r->u.commit.upload_id : r->u.upload_delete.upload_id;
        if (rc) {
                native_reply_store_error(c, op->frame_id, rc);
                return;
        }
        struct upl *u = upl_find(c->nat, id);
        if (u)
                upl_clear(c, u);
        if (op->type == CHP_F_DELETE) {
                native_reply_frame(c, CHP_F_DELETE | CHP_F_REPLY, op->frame_id, 0);
                return;
        }
        uint8_t *out =
            native_reply_frame(c, CHP_F_COMMIT | CHP_F_REPLY, op->frame_id, CHP_HASH_BYTES);
        if (out)
                memcpy(out, r->u.commit.file_id, CHP_HASH_BYTES);
}

static void commit_got_file(struct conn *c, struct nlookup *nl)
{
        struct op *op = nl->ctx;
        int rc = op->base.req.status;
        if (nl->q.status == 0) { /* committed before: the file is there */
                memcpy(op->base.req.u.commit.file_id, nl->q.id, CHP_HASH_BYTES);
                rc = 0;
        }
        finish_reply(c, op, rc);
        nlookup_free(nl);
}

/* COMMIT's or DELETE's completion; true when op went on to a lookup (which frees it). */
static bool upload_request_done(struct conn *c, struct op *op)
{
        struct chp_store_req *r = &op->base.req;
        struct upl *u = op->type == CHP_F_COMMIT ? upl_find(c->nat, r->u.commit.upload_id) : NULL;
        struct nlookup *nl = r->status == -ENOENT && u ? op_lookup(c, op) : NULL;
        if (!nl) {
                finish_reply(c, op, r->status);
                return false;
        }
        /* committed before (its reply lost with an earlier connection)? */
        nl->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE};
        memcpy(nl->q.id, u->file_id, CHP_HASH_BYTES);
        nlookup_ask(c, nl, commit_got_file);
        return true;
}

static void native_on_store_done(struct conn_op *base)
{
        struct op *op = (struct op *)base;
        struct conn *c = base->c;
        c->nat->inflight--;
        /* the uploads' life by face, as the store saw it (also when the client has gone) */
        struct chp_store_req *r = &base->req;
        struct chp_metrics *m = c->sh->metrics;
        if (!r->status && op->type == CHP_F_OPEN && !r->u.upload_create.complete &&
            !r->u.upload_create.resumed)
                atomic_fetch_add(&m->uploads_created[CHP_METRICS_NATIVE], 1);
        else if (!r->status && op->type == CHP_F_COMMIT)
                atomic_fetch_add(&m->uploads_finished[CHP_METRICS_NATIVE], 1);
        else if (!r->status && op->type == CHP_F_DELETE)
                atomic_fetch_add(&m->uploads_terminated[CHP_METRICS_NATIVE], 1);
        if (ends_incomplete(op))
                limits_end(c);
        bool kept = false; /* op went on to a lookup, which frees it */
        if (!c->closed) {
                switch (op->type) {
                case CHP_F_OPEN:
                        kept = open_done(c, op);
                        break;
                case CHP_F_CHUNK:
                        kept = chunk_done(c, op);
                        break;
                default:
                        kept = upload_request_done(c, op);
                        break;
                }
                /* replies went out; flow control may allow the next frames */
                native_on_input(c);
                conn_flush(c);
                conn_maybe_read(c);
        } else if (op->type == CHP_F_CHUNK) {
                c->nat->window_used -= op->chunk_len;
        }
        if (!kept)
                op_free(op);
        conn_release(c);
}
