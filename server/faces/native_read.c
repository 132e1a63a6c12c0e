/* native_read.c — the native face's reads: HAVE, GET_MANIFEST, GET_CHUNK and STAT, answered
 * from the store on the loop thread (no writer). A file still uploading is served as PARTIAL
 * with the chunks stored so far; one this relay lacks may be pulled from its origin
 * (native_peer.c). HAVE and STAT tell an anonymous caller (gate.h) nothing that GET_MANIFEST
 * would not: no chunk map, no upload in progress, no creation time. Chunk bytes in segment files
 * are spliced to the socket; inline ones copied; a backend without files (RADOS) fills a buffer
 * of the request's (chp_store_read_async) and the reply follows from its completion, posted to
 * this loop, while the connection reads on.
 *
 * Records (files, pending uploads, chunk maps) are asked with chp_store_lookup (struct nlookup,
 * native_int.h): answered at once by the local store, or later from the store's thread, when
 * the request goes on from the posted answer (a chain of lookups, one at a time).
 *
 * Loop thread only (the store's thread only posts a read's or a lookup's completion).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "native_int.h"

/* ---- record lookups ---------------------------------------------------------------------- */

struct nlookup *nlookup_new(struct conn *c, uint32_t frame_id)
{
        struct nlookup *op = calloc(1, sizeof(*op));
        if (!op)
                return NULL;
        op->base.c = c;
        op->frame_id = frame_id;
        return op;
}

void nlookup_free(struct nlookup *op)
{
        if (!op)
                return;
        chp_store_lookup_clear(&op->q);
        free(op->manifest);
        free(op->present);
        free(op->have);
        free(op->buf);
        if (op->free_ctx)
                op->free_ctx(op->ctx);
        free(op);
}

/* The store's thread: the answer is in; the loop goes on. */
static void nlookup_arrived(struct chp_store_lookup *q)
{
        struct nlookup *op = q->ctx;
        chp_loop_post(op->base.c->loop, &op->base.req);
}

/* Loop thread: the answer of a lookup that was under way (it held the connection). */
static void nlookup_done(struct conn_op *base)
{
        struct nlookup *op = (struct nlookup *)base;
        struct conn *c = base->c;
        c->nat->inflight--;
        if (!c->closed) {
                op->then(c, op);
                native_on_input(c); /* flow control may allow the next frames */
                conn_flush(c);
                conn_maybe_read(c);
        } else {
                nlookup_free(op);
        }
        conn_release(c);
}

void nlookup_ask(struct conn *c, struct nlookup *op, nlookup_fn then)
{
        op->then = then;
        op->base.done = nlookup_done;
        op->q.done = nlookup_arrived;
        op->q.ctx = op;
        if (chp_store_lookup(c->sh->store, &op->q) != -EINPROGRESS) {
                then(c, op);
                return;
        }
        op->base.t0 = chp_net_now_us();
        c->nat->inflight++;
        conn_hold(c);
}

/* ---- HAVE -------------------------------------------------------------------------------- */

static void have_answer(struct conn *c, struct nlookup *op)
{
        uint32_t count = (uint32_t)op->q.n;
        if (op->q.status) {
                native_reply_store_error(c, op->frame_id, op->q.status);
                nlookup_free(op);
                return;
        }
        uint8_t map[CHP_HAVE_MAX / 8 + 1] = {0};
        for (uint32_t i = 0; i < count; i++)
                if (op->q.present[i])
                        chp_bit_set(map, i);
        size_t len = CHP_HAVE_OK_PREFIX + chp_bitmap_bytes(count);
        uint8_t *out = native_reply_frame(c, CHP_F_HAVE | CHP_F_REPLY, op->frame_id, len);
        if (out && chp_msg_have_ok_encode(out, len, count, map) != (ssize_t)len)
                conn_close(c);
        nlookup_free(op);
}

void native_read_have(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_have m;
        if (chp_msg_have_decode(p, h->len, &m) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed HAVE");
                return;
        }
        if (!chp_gate_may_probe(&c->nat->caller)) {
                /* which chunks exist would tell anyone when a file they know of is uploaded */
                native_reply_refusal(c, h->id, CHP_ETOKEN_MISSING, "HAVE");
                return;
        }
        /* the addresses are copied: the payload is borrowed only until this returns */
        size_t bytes = (size_t)m.count * CHP_HASH_BYTES;
        struct nlookup *op = nlookup_new(c, h->id);
        if (!op || !(op->buf = malloc(bytes + m.count + 1))) {
                nlookup_free(op);
                native_reply_store_error(c, h->id, -ENOMEM);
                return;
        }
        memcpy(op->buf, m.addrs, bytes);
        op->q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_HAS, .addrs = op->buf, .n = m.count, .present = op->buf + bytes};
        nlookup_ask(c, op, have_answer);
}

/* ---- a pending (still uploading) file: its manifest and the chunks stored so far ---------- */

static void pending_end(struct conn *c, struct nlookup *op, int rc)
{
        free(op->have);
        op->have = NULL;
        if (rc) {
                free(op->manifest);
                free(op->present);
                op->manifest = op->present = NULL;
                op->manifest_len = 0;
                op->stored = 0;
        }
        op->pending_rc = rc;
        op->after_pending(c, op);
}

static void pending_got_chunks(struct conn *c, struct nlookup *op)
{
        int rc = op->q.status;
        for (uint32_t i = 0; !rc && i < op->chunk_count; i++)
                if (op->have[i]) {
                        chp_bit_set(op->present, i);
                        op->stored++;
                }
        pending_end(c, op, rc);
}

static void pending_got_manifest(struct conn *c, struct nlookup *op)
{
        struct chp_store_lookup *q = &op->q;
        struct chp_manifest m;
        int rc = q->status;
        if (!rc) {
                op->manifest = q->manifest; /* taken over */
                op->manifest_len = q->manifest_len;
                q->manifest = NULL;
                if (chp_manifest_decode(op->manifest, op->manifest_len, &m) < 0)
                        rc = CHP_ECORRUPT;
        }
        if (!rc) {
                op->chunk_count = m.chunk_count;
                op->have = calloc(1, m.chunk_count ? m.chunk_count : 1);
                op->present = calloc(1, chp_bitmap_bytes(m.chunk_count) + 1);
                if (!op->have || !op->present)
                        rc = -ENOMEM;
        }
        if (rc) {
                pending_end(c, op, rc);
                return;
        }
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
        memcpy(upload_id, q->id, CHP_UPLOAD_ID_BYTES);
        *q = (struct chp_store_lookup){
            .kind = CHP_LOOKUP_UPLOAD_CHUNKS, .n = m.chunk_count, .present = op->have};
        memcpy(q->id, upload_id, CHP_UPLOAD_ID_BYTES);
        nlookup_ask(c, op, pending_got_chunks);
}

static void pending_got_upload(struct conn *c, struct nlookup *op)
{
        struct chp_store_lookup *q = &op->q;
        if (q->status) {
                pending_end(c, op, q->status);
                return;
        }
        uint8_t upload_id[CHP_UPLOAD_ID_BYTES];
        memcpy(upload_id, q->upload_id, CHP_UPLOAD_ID_BYTES);
        *q = (struct chp_store_lookup){.kind = CHP_LOOKUP_UPLOAD_MANIFEST};
        memcpy(q->id, upload_id, CHP_UPLOAD_ID_BYTES);
        nlookup_ask(c, op, pending_got_manifest);
}

/* The upload writing op->file_id, its manifest and chunk map (op->manifest, present, stored);
 * then op->after_pending with op->pending_rc (-ENOENT: no such upload). */
static void pending_file(struct conn *c, struct nlookup *op, nlookup_fn after)
{
        op->after_pending = after;
        op->stored = 0;
        op->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_PENDING};
        memcpy(op->q.id, op->file_id, CHP_HASH_BYTES);
        nlookup_ask(c, op, pending_got_upload);
}

/* ---- GET_MANIFEST ------------------------------------------------------------------------ */

static void manifest_answer(struct conn *c, struct nlookup *op, int rc)
{
        uint32_t id = op->frame_id;
        struct chp_manifest m;
        if (rc) {
                native_reply_error(c, id, native_wire_code(rc), "%s",
                                   rc == -ENOENT ? "no such file" : chp_strerror(rc));
        } else if (chp_manifest_decode(op->manifest, op->manifest_len, &m) < 0) {
                native_reply_store_error(c, id, CHP_ECORRUPT);
        } else {
                struct chp_msg_manifest r = {.state = op->state,
                                             .manifest = op->manifest,
                                             .manifest_len = (uint32_t)op->manifest_len,
                                             .present = op->present};
                size_t out_len =
                    CHP_MANIFEST_PREFIX + op->manifest_len +
                    (r.state == CHP_UPLOAD_PARTIAL ? chp_bitmap_bytes(m.chunk_count) : 0);
                uint8_t *out = native_reply_frame(c, CHP_F_GET_MANIFEST | CHP_F_REPLY, id, out_len);
                if (out && chp_msg_manifest_encode(out, out_len, &r) != (ssize_t)out_len)
                        conn_close(c);
        }
        nlookup_free(op);
}

static void manifest_after_pending(struct conn *c, struct nlookup *op)
{
        int rc = op->pending_rc;
        op->state = CHP_UPLOAD_PARTIAL;
        if ((rc == 0 || rc == -ENOENT) &&
            native_peer_via_origin(c, op->frame_id, &op->fq, rc == 0, op->stored)) {
                nlookup_free(op);
                return;
        }
        manifest_answer(c, op, rc);
}

static void manifest_got_file(struct conn *c, struct nlookup *op)
{
        struct chp_store_lookup *q = &op->q;
        if (q->status == -ENOENT) {
                pending_file(c, op, manifest_after_pending);
                return;
        }
        op->manifest = q->manifest; /* taken over */
        op->manifest_len = q->manifest_len;
        q->manifest = NULL;
        manifest_answer(c, op, q->status);
}

void native_read_manifest(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_file_req fq;
        if (chp_msg_file_req_decode(p, h->len, &fq) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME,
                                   "GET_MANIFEST carries a 32-byte file id and an optional origin");
                return;
        }
        struct nlookup *op = nlookup_new(c, h->id);
        if (!op) {
                native_reply_store_error(c, h->id, -ENOMEM);
                return;
        }
        /* the request is copied: the payload is borrowed only until this returns */
        memcpy(op->file_id, fq.file_id, CHP_HASH_BYTES);
        op->fq = (struct chp_msg_file_req){.file_id = op->file_id, .has_origin = fq.has_origin};
        if (fq.has_origin) {
                memcpy(op->origin_key, fq.origin_key, CHP_KEY_BYTES);
                memcpy(op->origin_addr, fq.origin_addr, fq.addr_len);
                op->fq.origin_key = op->origin_key;
                op->fq.origin_addr = op->origin_addr;
                op->fq.addr_len = fq.addr_len;
        }
        op->state = CHP_UPLOAD_COMPLETE;
        op->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE, .want_manifest = true};
        memcpy(op->q.id, op->file_id, CHP_HASH_BYTES);
        nlookup_ask(c, op, manifest_got_file);
}

/* A GET_CHUNK whose bytes the store copies into buf: at once, or later from its backend. Its
 * buffer is charged to the memory budget and its bytes to the connection's window until then. */
struct chunk_read {
        struct conn_op base; /* first: the loop routes the completion through it */
        uint32_t frame_id;
        struct chp_msg_chunk_data d; /* d.addr points into addr */
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t len; /* of the slice asked for, from d.offset (remote: as asked, 0 = the rest) */
        ssize_t result;
        uint8_t *buf; /* cap bytes */
        uint32_t cap; /* d.chunk_len, or remote: CHP_CHUNK_MAX */
        bool remote;  /* the shared state's: d.chunk_len is learnt from the read's length */
};

static void chunk_read_free(struct chp_shared *sh, struct chunk_read *r)
{
        native_payload_free(sh, r->buf, r->cap);
        free(r);
}

/* Queues the reply to r: its slice, or the store's error. */
static void chunk_read_answer(struct conn *c, struct chunk_read *r)
{
        if (r->remote && r->result > 0) {
                /* the chunk's length is known now: the range is checked against it */
                uint32_t clen = (uint32_t)r->result, off = r->d.offset;
                uint32_t len = r->len ? r->len : clen - (off < clen ? off : clen);
                if (off > clen || len > clen - off) {
                        native_reply_error(c, r->frame_id, CHP_WE_NOT_FOUND,
                                           "range %u+%u outside the %u-byte chunk", off, len, clen);
                        return;
                }
                r->d.chunk_len = clen;
                r->len = len;
        }
        if (r->result != (ssize_t)r->d.chunk_len) {
                native_reply_store_error(c, r->frame_id,
                                         r->result < 0 ? (int)r->result : CHP_ECORRUPT);
                return;
        }
        size_t out_len = CHP_CHUNK_DATA_PREFIX + r->len;
        uint8_t *out = native_reply_frame(c, CHP_F_GET_CHUNK | CHP_F_REPLY, r->frame_id, out_len);
        if (out) {
                chp_msg_chunk_data_prefix_encode(out, CHP_CHUNK_DATA_PREFIX, &r->d);
                memcpy(out + CHP_CHUNK_DATA_PREFIX, r->buf + r->d.offset, r->len);
        }
}

/* The store's thread: the bytes are in (or not); the loop answers. */
static void chunk_read_arrived(void *ctx, ssize_t result)
{
        struct chunk_read *r = ctx;
        r->result = result;
        chp_loop_post(r->base.c->loop, &r->base.req);
}

/* Loop thread: the completion, also after the connection closed (it held the connection and
 * owns the buffer the store was filling). */
static void chunk_read_done(struct conn_op *base)
{
        struct chunk_read *r = (struct chunk_read *)base;
        struct conn *c = base->c;
        c->nat->inflight--;
        c->nat->reading -= r->cap;
        if (!c->closed) {
                chunk_read_answer(c, r);
                native_on_input(c); /* flow control may allow the next frames */
                conn_flush(c);
                conn_maybe_read(c);
        }
        chunk_read_free(c->sh, r);
        conn_release(c);
}

/* A chunk with no file to splice from: copied, checked against its XXH3. Inline ones come out of
 * LMDB at once; a remote backend's are fetched without blocking this loop. */
static void read_copy(struct conn *c, uint32_t frame_id, const struct chp_msg_chunk_data *d,
                      uint32_t len, bool remote)
{
        uint32_t cap = remote ? CHP_CHUNK_MAX : d->chunk_len;
        struct chunk_read *r = calloc(1, sizeof(*r));
        uint8_t *buf = r ? native_payload_alloc(c, cap) : NULL;
        if (!buf) {
                free(r);
                native_reply_store_error(c, frame_id, -ENOMEM);
                return;
        }
        r->base.c = c;
        r->base.done = chunk_read_done;
        r->frame_id = frame_id;
        r->d = *d;
        memcpy(r->addr, d->addr, CHP_HASH_BYTES);
        r->d.addr = r->addr;
        r->len = len;
        r->buf = buf;
        r->cap = cap;
        r->remote = remote;
        r->base.t0 = chp_net_now_us();
        /* not into r->result: once under way, r is the completion's (another thread's) */
        ssize_t n = chp_store_read_async(c->sh->store, r->addr, buf, cap, chunk_read_arrived, r);
        if (n == -EINPROGRESS) {
                c->nat->inflight++;
                c->nat->reading += cap;
                conn_hold(c);
                return;
        }
        r->result = n;
        chunk_read_answer(c, r);
        chunk_read_free(c->sh, r);
}

void native_read_chunk(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_get_chunk m;
        if (chp_msg_get_chunk_decode(p, h->len, &m) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "malformed GET_CHUNK");
                return;
        }
        struct chp_chunk_loc loc;
        int rc = chp_store_locate(c->sh->store, m.addr, &loc);
        if (rc) {
                native_reply_error(c, h->id, native_wire_code(rc), "%s",
                                   rc == -ENOENT ? "no such chunk" : chp_strerror(rc));
                return;
        }
        if (loc.remote) {
                /* the shared state: the length and range are checked once the bytes are in */
                struct chp_msg_chunk_data d = {.addr = m.addr, .offset = m.offset};
                read_copy(c, h->id, &d, m.length, true);
                return;
        }
        uint32_t len = m.length ? m.length : loc.len - (m.offset < loc.len ? m.offset : loc.len);
        if (m.offset > loc.len || len > loc.len - m.offset) {
                chp_store_loc_release(c->sh->store, &loc);
                native_reply_error(c, h->id, CHP_WE_NOT_FOUND,
                                   "range %u+%u outside the %u-byte chunk", m.offset, len, loc.len);
                return;
        }
        struct chp_msg_chunk_data d = {.addr = m.addr, .offset = m.offset, .chunk_len = loc.len};
        size_t out_len = CHP_CHUNK_DATA_PREFIX + len;
        if (loc.is_inline || loc.fd < 0) {
                /* inline, or a backend without files (fd -1): nothing to splice */
                chp_store_loc_release(c->sh->store, &loc);
                read_copy(c, h->id, &d, len, false);
                return;
        }
        /* segment chunks go from the page cache to the socket: only the header is copied */
        uint8_t *out =
            native_reply_frame(c, CHP_F_GET_CHUNK | CHP_F_REPLY, h->id, CHP_CHUNK_DATA_PREFIX);
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

static void stat_answer(struct conn *c, struct nlookup *op, int rc)
{
        struct chp_manifest m;
        if (!rc && chp_manifest_decode(op->manifest, op->manifest_len, &m) < 0)
                rc = CHP_ECORRUPT;
        if (rc) {
                native_reply_error(c, op->frame_id, native_wire_code(rc), "%s",
                                   rc == -ENOENT ? "no such file" : chp_strerror(rc));
        } else {
                struct chp_msg_stat_ok st = {.state = op->state,
                                             .size = m.total_size,
                                             .chunk_count = m.chunk_count,
                                             .chunk_size = m.chunk_size,
                                             .chunks_present = op->stored};
                if (st.state == CHP_UPLOAD_COMPLETE)
                        st.chunks_present = m.chunk_count;
                if (op->probe) {
                        st.created = op->info.created;
                        st.expires = op->info.expires;
                } else {
                        st.flags = CHP_STAT_TIMES_WITHHELD;
                }
                uint8_t *out = native_reply_frame(c, CHP_F_STAT | CHP_F_REPLY, op->frame_id,
                                                  CHP_STAT_OK_BYTES);
                if (out && chp_msg_stat_ok_encode(out, CHP_STAT_OK_BYTES, &st) != CHP_STAT_OK_BYTES)
                        conn_close(c);
        }
        nlookup_free(op);
}

static void stat_after_pending(struct conn *c, struct nlookup *op)
{
        stat_answer(c, op, op->pending_rc);
}

static void stat_got_file(struct conn *c, struct nlookup *op)
{
        struct chp_store_lookup *q = &op->q;
        /* To an anonymous caller STAT says what GET_MANIFEST would (a complete file), never
         * that an upload is under way or when a file was created: not even its expiry, which is
         * the creation time plus a life the caller may know. */
        if (q->status == -ENOENT && op->probe) {
                op->state = CHP_UPLOAD_PARTIAL;
                pending_file(c, op, stat_after_pending);
                return;
        }
        op->manifest = q->manifest; /* taken over */
        op->manifest_len = q->manifest_len;
        op->info = q->info;
        q->manifest = NULL;
        stat_answer(c, op, q->status);
}

void native_read_stat(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        if (chp_msg_id_decode(p, h->len, CHP_HASH_BYTES, &id) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "STAT carries a 32-byte file id");
                return;
        }
        struct nlookup *op = nlookup_new(c, h->id);
        if (!op) {
                native_reply_store_error(c, h->id, -ENOMEM);
                return;
        }
        memcpy(op->file_id, id, CHP_HASH_BYTES);
        op->probe = chp_gate_may_probe(&c->nat->caller);
        op->state = CHP_UPLOAD_COMPLETE;
        op->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE, .want_manifest = true};
        memcpy(op->q.id, id, CHP_HASH_BYTES);
        nlookup_ask(c, op, stat_got_file);
}
