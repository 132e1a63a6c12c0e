#include "proto.h"

#include <errno.h>
#include <string.h>

#include "bytes.h"

/* ---- bounded reader and writer ----------------------------------------------------------- */

struct rd {
        const uint8_t *p;
        size_t len, off;
        bool bad;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
        if (r->bad || r->len - r->off < n) {
                r->bad = true;
                return NULL;
        }
        const uint8_t *at = r->p + r->off;
        r->off += n;
        return at;
}

static uint8_t rd_u8(struct rd *r)
{
        const uint8_t *p = rd_take(r, 1);
        return p ? p[0] : 0;
}

static uint16_t rd_u16(struct rd *r)
{
        const uint8_t *p = rd_take(r, 2);
        return p ? chp_get_le16(p) : 0;
}

static uint32_t rd_u32(struct rd *r)
{
        const uint8_t *p = rd_take(r, 4);
        return p ? chp_get_le32(p) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
        const uint8_t *p = rd_take(r, 8);
        return p ? chp_get_le64(p) : 0;
}

/* Ends a decode: every byte consumed, nothing short. */
static int rd_end(const struct rd *r)
{
        return r->bad || r->off != r->len ? -EBADMSG : 0;
}

struct wr {
        uint8_t *p;
        size_t cap, len;
        bool full;
};

static uint8_t *wr_take(struct wr *w, size_t n)
{
        if (w->full || w->cap - w->len < n) {
                w->full = true;
                return NULL;
        }
        uint8_t *at = w->p + w->len;
        w->len += n;
        return at;
}

static void wr_u8(struct wr *w, uint8_t v)
{
        uint8_t *p = wr_take(w, 1);
        if (p)
                p[0] = v;
}

static void wr_u16(struct wr *w, uint16_t v)
{
        uint8_t *p = wr_take(w, 2);
        if (p)
                chp_put_le16(p, v);
}

static void wr_u32(struct wr *w, uint32_t v)
{
        uint8_t *p = wr_take(w, 4);
        if (p)
                chp_put_le32(p, v);
}

static void wr_u64(struct wr *w, uint64_t v)
{
        uint8_t *p = wr_take(w, 8);
        if (p)
                chp_put_le64(p, v);
}

static void wr_bytes(struct wr *w, const void *src, size_t n)
{
        uint8_t *p = wr_take(w, n);
        if (p && n)
                memcpy(p, src, n);
}

static ssize_t wr_end(const struct wr *w)
{
        return w->full ? -ENOSPC : (ssize_t)w->len;
}

/* ---- frames ------------------------------------------------------------------------------ */

/* Bitmap bytes for the largest chunk count a manifest that fits in an OPEN frame can have. */
#define OPEN_MAX_BITMAP (CHP_OPEN_MAX_PAYLOAD / CHP_HASH_BYTES / 8 + 1)
_Static_assert((CHP_OPEN_MAX_PAYLOAD + 64 - 8 - CHP_MANIFEST_HEADER) / CHP_HASH_BYTES <=
                   8 * (OPEN_MAX_BITMAP),
               "OPEN_OK and MANIFEST bounds hold the bitmap of any manifest OPEN can carry");

uint32_t chp_frame_max_payload(uint8_t type)
{
        switch (type) {
        case CHP_F_CHUNK:
        case CHP_F_GET_CHUNK | CHP_F_REPLY: /* CHUNK_DATA */
                return CHP_CHUNK_FRAME_MAX;
        case CHP_F_OPEN:
                return CHP_OPEN_MAX_PAYLOAD + 64;
        case CHP_F_GET_MANIFEST | CHP_F_REPLY: /* MANIFEST: OPEN's manifest + a PARTIAL bitmap */
                return CHP_OPEN_MAX_PAYLOAD + 64 + OPEN_MAX_BITMAP;
        case CHP_F_OPEN | CHP_F_REPLY:
                return 64 + OPEN_MAX_BITMAP;
        case CHP_F_HELLO:
        case CHP_F_COMMIT:
        case CHP_F_HAVE:
        case CHP_F_GET_MANIFEST:
        case CHP_F_GET_CHUNK:
        case CHP_F_STAT:
        case CHP_F_DELETE:
        case CHP_F_PING:
        case CHP_F_PREFETCH:
        case CHP_F_OFFER:
        case CHP_F_PREFETCH | CHP_F_REPLY:
        case CHP_F_OFFER | CHP_F_REPLY:
        case CHP_F_HELLO | CHP_F_REPLY:
        case CHP_F_CHUNK | CHP_F_REPLY: /* CHUNK_OK */
        case CHP_F_COMMIT | CHP_F_REPLY:
        case CHP_F_HAVE | CHP_F_REPLY:
        case CHP_F_STAT | CHP_F_REPLY:
        case CHP_F_DELETE | CHP_F_REPLY:
        case CHP_F_PING | CHP_F_REPLY:
        case CHP_F_ERROR:
                return CHP_CTRL_MAX_PAYLOAD;
        }
        return 0;
}

void chp_frame_header_encode(uint8_t out[CHP_FRAME_HEADER], uint8_t type, uint32_t id, uint32_t len)
{
        out[0] = type;
        out[1] = 0;
        out[2] = 0;
        out[3] = 0;
        chp_put_le32(out + 4, id);
        chp_put_le32(out + 8, len);
}

ssize_t chp_frame_header_decode(const uint8_t *buf, size_t len, struct chp_frame_header *out)
{
        if (len < CHP_FRAME_HEADER)
                return -EAGAIN;
        if (buf[1] != 0 || buf[2] != 0 || buf[3] != 0)
                return -EBADMSG;
        uint32_t plen = chp_get_le32(buf + 8);
        uint32_t max = chp_frame_max_payload(buf[0]);
        if (max == 0 || plen > max)
                return -EBADMSG;
        out->type = buf[0];
        out->flags = buf[1];
        out->id = chp_get_le32(buf + 4);
        out->len = plen;
        return CHP_FRAME_HEADER;
}

/* ---- requests ---------------------------------------------------------------------------- */

int chp_msg_hello_decode(const uint8_t *p, size_t len, struct chp_msg_hello *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_hello m;
        m.version = rd_u16(&r);
        uint16_t reserved = rd_u16(&r);
        m.features = rd_u32(&r);
        m.token_len = rd_u16(&r);
        if (reserved != 0 || m.token_len > CHP_TOKEN_MAX)
                return -EBADMSG;
        m.token = rd_take(&r, m.token_len);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_hello_encode(uint8_t *buf, size_t cap, const struct chp_msg_hello *m)
{
        struct wr w = {buf, cap, 0, false};
        if (m->token_len > CHP_TOKEN_MAX)
                return -EINVAL;
        wr_u16(&w, m->version);
        wr_u16(&w, 0);
        wr_u32(&w, m->features);
        wr_u16(&w, m->token_len);
        wr_bytes(&w, m->token, m->token_len);
        return wr_end(&w);
}

int chp_msg_open_decode(const uint8_t *p, size_t len, struct chp_msg_open *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_open m;
        m.expires_in = rd_u32(&r);
        if (rd_u32(&r) != 0 || r.bad) /* flags: none defined in v1 */
                return -EBADMSG;
        m.manifest_len = len - r.off;
        m.manifest = rd_take(&r, m.manifest_len);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_open_encode(uint8_t *buf, size_t cap, const struct chp_msg_open *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_u32(&w, m->expires_in);
        wr_u32(&w, 0);
        wr_bytes(&w, m->manifest, m->manifest_len);
        return wr_end(&w);
}

int chp_msg_chunk_decode(const uint8_t *p, size_t len, struct chp_msg_chunk *out)
{
        if (len < CHP_CHUNK_PREFIX)
                return -EBADMSG;
        out->upload_id = p;
        out->index = chp_get_le32(p + CHP_UPLOAD_ID_BYTES);
        out->data = p + CHP_CHUNK_PREFIX;
        out->len = len - CHP_CHUNK_PREFIX;
        return 0;
}

ssize_t chp_msg_chunk_prefix_encode(uint8_t *buf, size_t cap, const uint8_t *upload_id,
                                    uint32_t index)
{
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, upload_id, CHP_UPLOAD_ID_BYTES);
        wr_u32(&w, index);
        return wr_end(&w);
}

int chp_msg_have_decode(const uint8_t *p, size_t len, struct chp_msg_have *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_have m;
        m.count = rd_u32(&r);
        if (m.count > CHP_HAVE_MAX)
                return -EBADMSG;
        m.addrs = rd_take(&r, (size_t)m.count * CHP_HASH_BYTES);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_have_encode(uint8_t *buf, size_t cap, const struct chp_msg_have *m)
{
        struct wr w = {buf, cap, 0, false};
        if (m->count > CHP_HAVE_MAX)
                return -EINVAL;
        wr_u32(&w, m->count);
        wr_bytes(&w, m->addrs, (size_t)m->count * CHP_HASH_BYTES);
        return wr_end(&w);
}

int chp_msg_get_chunk_decode(const uint8_t *p, size_t len, struct chp_msg_get_chunk *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_get_chunk m;
        m.addr = rd_take(&r, CHP_HASH_BYTES);
        m.offset = rd_u32(&r);
        m.length = rd_u32(&r);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_get_chunk_encode(uint8_t *buf, size_t cap, const struct chp_msg_get_chunk *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, m->addr, CHP_HASH_BYTES);
        wr_u32(&w, m->offset);
        wr_u32(&w, m->length);
        return wr_end(&w);
}

int chp_msg_file_req_decode(const uint8_t *p, size_t len, struct chp_msg_file_req *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_file_req m = {0};
        m.file_id = rd_take(&r, CHP_HASH_BYTES);
        if (!r.bad && r.off < len) {
                m.has_origin = true;
                m.origin_key = rd_take(&r, CHP_HASH_BYTES);
                m.addr_len = rd_u8(&r);
                m.origin_addr = (const char *)rd_take(&r, m.addr_len);
                if (!r.bad && m.addr_len == 0)
                        return -EBADMSG;
        }
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_file_req_encode(uint8_t *buf, size_t cap, const struct chp_msg_file_req *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, m->file_id, CHP_HASH_BYTES);
        if (m->has_origin) {
                if (m->addr_len == 0)
                        return -EINVAL;
                wr_bytes(&w, m->origin_key, CHP_HASH_BYTES);
                wr_u8(&w, m->addr_len);
                wr_bytes(&w, m->origin_addr, m->addr_len);
        }
        return wr_end(&w);
}

int chp_msg_id_decode(const uint8_t *p, size_t len, size_t n, const uint8_t **id)
{
        if (len != n)
                return -EBADMSG;
        *id = p;
        return 0;
}

ssize_t chp_msg_offer_decode(const uint8_t *buf, size_t len, struct chp_msg_offer *out)
{
        struct rd r = {buf, len, 0, false};
        struct chp_msg_offer m;
        m.file_id = rd_take(&r, CHP_HASH_BYTES);
        m.peer_key = rd_take(&r, CHP_KEY_BYTES);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return CHP_OFFER_BYTES;
}

ssize_t chp_msg_offer_encode(uint8_t *buf, size_t cap, const struct chp_msg_offer *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, m->file_id, CHP_HASH_BYTES);
        wr_bytes(&w, m->peer_key, CHP_KEY_BYTES);
        return wr_end(&w);
}

ssize_t chp_msg_ping_decode(const uint8_t *buf, size_t len, struct chp_msg_ping *out)
{
        if (len > CHP_PING_MAX)
                return -EBADMSG;
        out->data = buf;
        out->len = len;
        return (ssize_t)len;
}

ssize_t chp_msg_ping_encode(uint8_t *buf, size_t cap, const struct chp_msg_ping *m)
{
        if (m->len > CHP_PING_MAX)
                return -EINVAL;
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, m->data, m->len);
        return wr_end(&w);
}

/* ---- replies ----------------------------------------------------------------------------- */

ssize_t chp_msg_hello_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_hello_ok *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_u16(&w, m->version);
        wr_u16(&w, 0);
        wr_u32(&w, m->features);
        wr_u32(&w, m->max_frame);
        wr_u32(&w, m->window_bytes);
        wr_u32(&w, m->max_inflight);
        return wr_end(&w);
}

int chp_msg_hello_ok_decode(const uint8_t *p, size_t len, struct chp_msg_hello_ok *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_hello_ok m;
        m.version = rd_u16(&r);
        uint16_t reserved = rd_u16(&r);
        m.features = rd_u32(&r);
        m.max_frame = rd_u32(&r);
        m.window_bytes = rd_u32(&r);
        m.max_inflight = rd_u32(&r);
        if (rd_end(&r) || reserved != 0)
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_open_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_open_ok *m)
{
        struct wr w = {buf, cap, 0, false};
        if (m->state > CHP_UPLOAD_COMPLETE || m->chunk_count > CHP_MANIFEST_MAX_CHUNKS)
                return -EINVAL;
        wr_bytes(&w, m->upload_id, CHP_UPLOAD_ID_BYTES);
        wr_bytes(&w, m->file_id, CHP_HASH_BYTES);
        wr_u8(&w, m->state);
        wr_u8(&w, 0);
        wr_u16(&w, 0);
        wr_u32(&w, m->chunk_count);
        wr_bytes(&w, m->missing, chp_bitmap_bytes(m->chunk_count));
        return wr_end(&w);
}

int chp_msg_open_ok_decode(const uint8_t *p, size_t len, struct chp_msg_open_ok *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_open_ok m;
        m.upload_id = rd_take(&r, CHP_UPLOAD_ID_BYTES);
        m.file_id = rd_take(&r, CHP_HASH_BYTES);
        m.state = rd_u8(&r);
        uint8_t reserved8 = rd_u8(&r);
        uint16_t reserved16 = rd_u16(&r);
        m.chunk_count = rd_u32(&r);
        if (m.chunk_count > CHP_MANIFEST_MAX_CHUNKS || m.state > CHP_UPLOAD_COMPLETE ||
            reserved8 != 0 || reserved16 != 0)
                return -EBADMSG;
        m.missing = rd_take(&r, chp_bitmap_bytes(m.chunk_count));
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_chunk_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_chunk_ok *m)
{
        struct wr w = {buf, cap, 0, false};
        if ((m->flags & ~CHP_CHUNK_DEDUP) != 0)
                return -EINVAL;
        wr_u32(&w, m->index);
        wr_u32(&w, m->flags);
        return wr_end(&w);
}

int chp_msg_chunk_ok_decode(const uint8_t *p, size_t len, struct chp_msg_chunk_ok *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_chunk_ok m;
        m.index = rd_u32(&r);
        m.flags = rd_u32(&r);
        if (rd_end(&r) || (m.flags & ~CHP_CHUNK_DEDUP) != 0)
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_manifest_encode(uint8_t *buf, size_t cap, const struct chp_msg_manifest *m)
{
        struct wr w = {buf, cap, 0, false};
        struct chp_manifest d;
        /* the decoder checks the manifest in either state, so the encoder does too */
        if (m->state > CHP_UPLOAD_COMPLETE ||
            chp_manifest_decode(m->manifest, m->manifest_len, &d) < 0)
                return -EINVAL;
        wr_u8(&w, m->state);
        wr_u8(&w, 0);
        wr_u16(&w, 0);
        wr_u32(&w, m->manifest_len);
        wr_bytes(&w, m->manifest, m->manifest_len);
        if (m->state == CHP_UPLOAD_PARTIAL)
                wr_bytes(&w, m->present, chp_bitmap_bytes(d.chunk_count));
        return wr_end(&w);
}

int chp_msg_manifest_decode(const uint8_t *p, size_t len, struct chp_msg_manifest *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_manifest m = {0};
        m.state = rd_u8(&r);
        uint8_t reserved8 = rd_u8(&r);
        uint16_t reserved16 = rd_u16(&r);
        m.manifest_len = rd_u32(&r);
        m.manifest = rd_take(&r, m.manifest_len);
        if (r.bad || m.state > CHP_UPLOAD_COMPLETE || reserved8 != 0 || reserved16 != 0)
                return -EBADMSG;
        struct chp_manifest d;
        if (chp_manifest_decode(m.manifest, m.manifest_len, &d) < 0)
                return -EBADMSG;
        if (m.state == CHP_UPLOAD_PARTIAL)
                m.present = rd_take(&r, chp_bitmap_bytes(d.chunk_count));
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_chunk_data_prefix_encode(uint8_t *buf, size_t cap,
                                         const struct chp_msg_chunk_data *m)
{
        struct wr w = {buf, cap, 0, false};
        wr_bytes(&w, m->addr, CHP_HASH_BYTES);
        wr_u32(&w, m->offset);
        wr_u32(&w, m->chunk_len);
        return wr_end(&w);
}

int chp_msg_chunk_data_decode(const uint8_t *p, size_t len, struct chp_msg_chunk_data *out)
{
        if (len < CHP_CHUNK_DATA_PREFIX)
                return -EBADMSG;
        struct chp_msg_chunk_data m;
        m.addr = p;
        m.offset = chp_get_le32(p + CHP_HASH_BYTES);
        m.chunk_len = chp_get_le32(p + CHP_HASH_BYTES + 4);
        m.data = p + CHP_CHUNK_DATA_PREFIX;
        m.len = len - CHP_CHUNK_DATA_PREFIX;
        if (m.offset > m.chunk_len || m.len > (size_t)(m.chunk_len - m.offset))
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_have_ok_encode(uint8_t *buf, size_t cap, uint32_t count, const uint8_t *bitmap)
{
        struct wr w = {buf, cap, 0, false};
        if (count > CHP_HAVE_MAX)
                return -EINVAL;
        wr_u32(&w, count);
        wr_bytes(&w, bitmap, chp_bitmap_bytes(count));
        return wr_end(&w);
}

int chp_msg_have_ok_decode(const uint8_t *p, size_t len, uint32_t *count, const uint8_t **bitmap)
{
        struct rd r = {p, len, 0, false};
        uint32_t n = rd_u32(&r);
        if (n > CHP_HAVE_MAX)
                return -EBADMSG;
        const uint8_t *map = rd_take(&r, chp_bitmap_bytes(n));
        if (rd_end(&r))
                return -EBADMSG;
        *count = n;
        *bitmap = map;
        return 0;
}

ssize_t chp_msg_stat_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_stat_ok *m)
{
        struct wr w = {buf, cap, 0, false};
        if (m->state > CHP_UPLOAD_COMPLETE || (m->flags & ~CHP_STAT_TIMES_WITHHELD))
                return -EINVAL;
        wr_u8(&w, m->state);
        wr_u8(&w, m->flags);
        wr_u16(&w, 0);
        wr_u32(&w, m->chunk_count);
        wr_u64(&w, m->size);
        wr_u32(&w, m->chunk_size);
        wr_u32(&w, m->chunks_present);
        wr_u64(&w, m->created);
        wr_u64(&w, m->expires);
        return wr_end(&w);
}

int chp_msg_stat_ok_decode(const uint8_t *p, size_t len, struct chp_msg_stat_ok *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_stat_ok m;
        m.state = rd_u8(&r);
        m.flags = rd_u8(&r);
        uint16_t reserved16 = rd_u16(&r);
        m.chunk_count = rd_u32(&r);
        m.size = rd_u64(&r);
        m.chunk_size = rd_u32(&r);
        m.chunks_present = rd_u32(&r);
        m.created = rd_u64(&r);
        m.expires = rd_u64(&r);
        if (rd_end(&r) || m.state > CHP_UPLOAD_COMPLETE || (m.flags & ~CHP_STAT_TIMES_WITHHELD) ||
            reserved16 != 0)
                return -EBADMSG;
        *out = m;
        return 0;
}

ssize_t chp_msg_error_encode(uint8_t *buf, size_t cap, const struct chp_msg_error *m)
{
        struct wr w = {buf, cap, 0, false};
        uint16_t n = m->msg_len > CHP_ERROR_MSG_MAX ? CHP_ERROR_MSG_MAX : m->msg_len;
        wr_u32(&w, m->code);
        wr_u16(&w, n);
        wr_bytes(&w, m->msg, n);
        return wr_end(&w);
}

int chp_msg_error_decode(const uint8_t *p, size_t len, struct chp_msg_error *out)
{
        struct rd r = {p, len, 0, false};
        struct chp_msg_error m;
        m.code = rd_u32(&r);
        m.msg_len = rd_u16(&r);
        if (m.msg_len > CHP_ERROR_MSG_MAX)
                return -EBADMSG;
        m.msg = (const char *)rd_take(&r, m.msg_len);
        if (rd_end(&r))
                return -EBADMSG;
        *out = m;
        return 0;
}

const char *chp_frame_type_name(uint8_t type)
{
        /* [request type] = {request name, reply name} */
        static const char *const names[][2] = {
            [CHP_F_HELLO] = {"HELLO", "HELLO_OK"},
            [CHP_F_OPEN] = {"OPEN", "OPEN_OK"},
            [CHP_F_CHUNK] = {"CHUNK", "CHUNK_OK"},
            [CHP_F_COMMIT] = {"COMMIT", "COMMIT_OK"},
            [CHP_F_HAVE] = {"HAVE", "HAVE_OK"},
            [CHP_F_GET_MANIFEST] = {"GET_MANIFEST", "MANIFEST"},
            [CHP_F_GET_CHUNK] = {"GET_CHUNK", "CHUNK_DATA"},
            [CHP_F_STAT] = {"STAT", "STAT_OK"},
            [CHP_F_DELETE] = {"DELETE", "DELETE_OK"},
            [CHP_F_PING] = {"PING", "PONG"},
            [CHP_F_PREFETCH] = {"PREFETCH", "PREFETCH_OK"},
            [CHP_F_OFFER] = {"OFFER", "OFFER_OK"},
        };
        if (type == CHP_F_ERROR)
                return "ERROR";
        uint8_t base = type & (uint8_t)~CHP_F_REPLY;
        if (base < sizeof(names) / sizeof(names[0]) && names[base][0])
                return names[base][(type & CHP_F_REPLY) != 0];
        return "?";
}

const char *chp_wire_strerror(uint32_t code)
{
        switch (code) {
        case CHP_WE_BAD_FRAME:
                return "malformed frame";
        case CHP_WE_UNKNOWN_TYPE:
                return "unknown frame type";
        case CHP_WE_TOO_BIG:
                return "over a size limit";
        case CHP_WE_NOT_FOUND:
                return "not found";
        case CHP_WE_MISMATCH:
                return "chunk does not match its address";
        case CHP_WE_MISSING:
                return "chunks are missing";
        case CHP_WE_BAD_MANIFEST:
                return "malformed manifest";
        case CHP_WE_VERSION:
                return "unsupported protocol version";
        case CHP_WE_NO_HELLO:
                return "expected HELLO first";
        case CHP_WE_NO_SPACE:
                return "relay storage is full";
        case CHP_WE_UNAVAILABLE:
                return "relay unavailable, retry later";
        case CHP_WE_INTERNAL:
                return "internal relay error";
        case CHP_WE_UNAUTHORIZED:
                return "not authorized";
        case CHP_WE_FETCHING:
                return "fetching from the origin relay; ask again shortly";
        case CHP_WE_COMMITTED:
                return "the upload was committed";
        case CHP_WE_FORBIDDEN:
                return "the token does not allow this";
        case CHP_WE_QUOTA:
                return "over the token's budget or the tenant's quota";
        case CHP_WE_LIMITED:
                return "over a rate limit, retry later";
        case CHP_WE_QUARANTINED:
                return "unavailable for legal reasons (quarantined by the relay's operator)";
        }
        return "unknown error";
}
