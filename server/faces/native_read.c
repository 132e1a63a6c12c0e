/* native_read.c — the native face's reads: HAVE, GET_MANIFEST, GET_CHUNK and STAT, answered
 * from the store on the loop thread (no writer). A file still uploading is served as PARTIAL
 * with the chunks stored so far; one this relay lacks may be pulled from its origin
 * (native_peer.c). HAVE and STAT tell an anonymous caller (gate.h) nothing that GET_MANIFEST
 * would not: no chunk map, no upload in progress, no creation time. Chunk bytes in segment files
 * are spliced to the socket; inline ones copied; a backend without files (RADOS) fills a buffer
 * of the request's (chp_store_read_async) and the reply follows from its completion, posted to
 * this loop, while the connection reads on.
 *
 * Loop thread only (the store's thread only posts a read's completion).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "native_int.h"

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
        uint8_t present[CHP_HAVE_MAX], map[CHP_HAVE_MAX / 8 + 1] = {0};
        int rc = chp_store_has(c->sh->store, m.addrs, m.count, present);
        if (rc) {
                native_reply_store_error(c, h->id, rc);
                return;
        }
        for (uint32_t i = 0; i < m.count; i++)
                if (present[i])
                        chp_bit_set(map, i);
        size_t len = CHP_HAVE_OK_PREFIX + chp_bitmap_bytes(m.count);
        uint8_t *out = native_reply_frame(c, CHP_F_HAVE | CHP_F_REPLY, h->id, len);
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

void native_read_manifest(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_file_req q;
        if (chp_msg_file_req_decode(p, h->len, &q) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME,
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
                if ((rc == 0 || rc == -ENOENT) &&
                    native_peer_via_origin(c, h, &q, rc == 0, stored)) {
                        free(man);
                        free(present);
                        return;
                }
        }
        if (rc) {
                native_reply_error(c, h->id, native_wire_code(rc), "%s",
                                   rc == -ENOENT ? "no such file" : chp_strerror(rc));
                return;
        }
        struct chp_manifest m;
        if (chp_manifest_decode(man, len, &m) < 0) {
                native_reply_store_error(c, h->id, CHP_ECORRUPT);
        } else {
                r.manifest = man;
                r.manifest_len = (uint32_t)len;
                r.present = present;
                size_t out_len =
                    CHP_MANIFEST_PREFIX + len +
                    (r.state == CHP_UPLOAD_PARTIAL ? chp_bitmap_bytes(m.chunk_count) : 0);
                uint8_t *out =
                    native_reply_frame(c, CHP_F_GET_MANIFEST | CHP_F_REPLY, h->id, out_len);
                if (out && chp_msg_manifest_encode(out, out_len, &r) != (ssize_t)out_len)
                        conn_close(c);
        }
        free(man);
        free(present);
}

/* A GET_CHUNK whose bytes the store copies into buf: at once, or later from its backend. Its
 * buffer is charged to the memory budget and its bytes to the connection's window until then. */
struct chunk_read {
        struct conn_op base; /* first: the loop routes the completion through it */
        uint32_t frame_id;
        struct chp_msg_chunk_data d; /* d.addr points into addr */
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t len; /* of the slice asked for, from d.offset */
        ssize_t result;
        uint8_t *buf; /* d.chunk_len bytes */
};

static void chunk_read_free(struct chp_shared *sh, struct chunk_read *r)
{
        native_payload_free(sh, r->buf, r->d.chunk_len);
        free(r);
}

/* Queues the reply to r: its slice, or the store's error. */
static void chunk_read_answer(struct conn *c, struct chunk_read *r)
{
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
        c->nat->reading -= r->d.chunk_len;
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
                      uint32_t len)
{
        struct chunk_read *r = calloc(1, sizeof(*r));
        uint8_t *buf = r ? native_payload_alloc(c, d->chunk_len) : NULL;
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
        r->base.t0 = chp_net_now_us();
        /* not into r->result: once under way, r is the completion's (another thread's) */
        ssize_t n =
            chp_store_read_async(c->sh->store, r->addr, buf, d->chunk_len, chunk_read_arrived, r);
        if (n == -EINPROGRESS) {
                c->nat->inflight++;
                c->nat->reading += d->chunk_len;
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
                read_copy(c, h->id, &d, len);
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

void native_read_stat(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        if (chp_msg_id_decode(p, h->len, CHP_HASH_BYTES, &id) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME, "STAT carries a 32-byte file id");
                return;
        }
        uint8_t *man = NULL, *present = NULL;
        size_t len = 0;
        struct chp_file_info info = {0};
        struct chp_msg_stat_ok st = {.state = CHP_UPLOAD_COMPLETE};
        bool probe = chp_gate_may_probe(&c->nat->caller);
        int rc = chp_store_file_get(c->sh->store, id, &man, &len, &info);
        /* To an anonymous caller STAT says what GET_MANIFEST would (a complete file), never
         * that an upload is under way or when a file was created: not even its expiry, which is
         * the creation time plus a life the caller may know. */
        if (rc == -ENOENT && probe) {
                st.state = CHP_UPLOAD_PARTIAL;
                rc = pending_file(c, id, &man, &len, &present, &st.chunks_present);
        }
        struct chp_manifest m;
        if (!rc && chp_manifest_decode(man, len, &m) < 0)
                rc = CHP_ECORRUPT;
        if (rc) {
                native_reply_error(c, h->id, native_wire_code(rc), "%s",
                                   rc == -ENOENT ? "no such file" : chp_strerror(rc));
        } else {
                st.size = m.total_size;
                st.chunk_count = m.chunk_count;
                st.chunk_size = m.chunk_size;
                if (st.state == CHP_UPLOAD_COMPLETE)
                        st.chunks_present = m.chunk_count;
                if (probe) {
                        st.created = info.created;
                        st.expires = info.expires;
                } else {
                        st.flags = CHP_STAT_TIMES_WITHHELD;
                }
                uint8_t *out =
                    native_reply_frame(c, CHP_F_STAT | CHP_F_REPLY, h->id, CHP_STAT_OK_BYTES);
                if (out && chp_msg_stat_ok_encode(out, CHP_STAT_OK_BYTES, &st) != CHP_STAT_OK_BYTES)
                        conn_close(c);
        }
        free(man);
        free(present);
}
