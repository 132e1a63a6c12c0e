/* native_client.c — a small blocking client of the native protocol (see native_client.h). */
#include "native_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bytes.h"
#include "manifest.h"
#include "net.h"

int rc_write_iov(int fd, struct iovec *iov, int n, uint64_t *done)
{
        while (n > 0) {
                ssize_t w = writev(fd, iov, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (done)
                        *done += (uint64_t)w;
                chp_net_iov_advance(&iov, &n, (size_t)w);
        }
        return 0;
}

int rc_read_all(int fd, void *buf, size_t len)
{
        size_t got = 0;
        while (got < len) {
                ssize_t r = read(fd, (uint8_t *)buf + got, len - got);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ECONNRESET;
                got += (size_t)r;
        }
        return 0;
}

/* Keeps the channel's message for a failure (an ERROR reply's code too). */
static int kept(struct rc_conn *c, int rc)
{
        if (rc && c->ch) {
                snprintf(c->last_msg, sizeof(c->last_msg), "%s", chp_channel_error(c->ch));
                if (rc == CHP_EREMOTE)
                        c->last_error = chp_channel_remote_code(c->ch);
        }
        return rc;
}

int rc_send(struct rc_conn *c, uint8_t type, uint32_t id, const void *a, size_t alen, const void *b,
            size_t blen)
{
        return kept(c, chp_channel_send(c->ch, type, id, a, alen, b, blen));
}

int rc_recv(struct rc_conn *c, struct chp_frame_header *h, uint8_t **payload)
{
        int rc = chp_channel_recv(c->ch, h, payload);
        if (!rc && h->type == CHP_F_ERROR)
                kept(c, CHP_EREMOTE); /* returned like any other frame */
        return kept(c, rc);
}

int rc_call(struct rc_conn *c, uint8_t type, const void *p, size_t len, struct chp_frame_header *h,
            uint8_t **payload)
{
        return kept(c, chp_channel_call(c->ch, type, p, len, h, payload));
}

int rc_dial(struct rc_conn *c, const char *hostport, bool plaintext, int timeout_ms)
{
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        struct chp_channel_opts o = {
            .addr = hostport, .plaintext = plaintext, .timeout_ms = timeout_ms};
        int rc = chp_channel_open(&o, &c->ch, c->last_msg, sizeof(c->last_msg));
        if (!rc) {
                c->hello = *chp_channel_hello(c->ch);
                c->fd = chp_channel_fd(c->ch);
        }
        return rc;
}

int rc_connect(struct rc_conn *c, const char *hostport)
{
        int rc = rc_dial(c, hostport, true, 0);
        int fl = rc ? 0 : fcntl(c->fd, F_GETFL);
        if (!rc && (fl < 0 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) != 0))
                rc = -errno;
        return rc;
}

void rc_close(struct rc_conn *c)
{
        chp_channel_close(c->ch);
        c->ch = NULL;
        c->fd = -1;
}

/* ---- files ------------------------------------------------------------------------------- */

int rc_file_make(struct rc_file *f, uint64_t total, uint32_t chunk_size, uint32_t seed,
                 uint32_t meta_tag)
{
        memset(f, 0, sizeof(*f));
        f->chunk_size = chunk_size;
        f->total = total;
        f->count = (uint32_t)chp_manifest_chunk_count(total, chunk_size);
        f->data = malloc(total ? total : 1);
        uint8_t *addrs = malloc((size_t)f->count * CHP_HASH_BYTES + 1);
        if (!f->data || !addrs) {
                free(addrs);
                rc_file_free(f);
                return -ENOMEM;
        }
        uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
        for (uint64_t i = 0; i < total; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f->data[i] = (uint8_t)(x >> 24);
        }
        for (uint32_t i = 0; i < f->count; i++) {
                uint64_t off = (uint64_t)i * chunk_size;
                uint64_t len = total - off < chunk_size ? total - off : chunk_size;
                if (chp_sha256(f->data + off, len, addrs + (size_t)i * CHP_HASH_BYTES) != 0) {
                        free(addrs);
                        rc_file_free(f);
                        return -EIO;
                }
        }
        uint8_t meta[4];
        chp_put_le32(meta, meta_tag);
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = chunk_size,
                                 .total_size = total,
                                 .chunk_count = f->count,
                                 .meta_len = 4,
                                 .meta = meta,
                                 .addrs = addrs};
        f->manifest_len = chp_manifest_encoded_size(&m);
        f->manifest = malloc(f->manifest_len);
        ssize_t n = f->manifest ? chp_manifest_encode(&m, f->manifest, f->manifest_len) : -ENOMEM;
        free(addrs);
        if (n < 0 || chp_manifest_id(f->manifest, f->manifest_len, f->file_id) != 0) {
                rc_file_free(f);
                return n < 0 ? (int)n : -EIO;
        }
        return 0;
}

void rc_file_free(struct rc_file *f)
{
        free(f->data);
        free(f->manifest);
        f->data = f->manifest = NULL;
}

static uint32_t chunk_len(const struct rc_file *f, uint32_t i)
{
        uint64_t off = (uint64_t)i * f->chunk_size;
        return (uint32_t)(f->total - off < f->chunk_size ? f->total - off : f->chunk_size);
}

int rc_open(struct rc_conn *c, const struct rc_file *f, uint8_t upload_id[CHP_UPLOAD_ID_BYTES],
            uint8_t **missing, bool *complete)
{
        *missing = NULL;
        size_t len = 8 + f->manifest_len;
        uint8_t *p = malloc(len);
        if (!p)
                return -ENOMEM;
        struct chp_msg_open m = {.manifest = f->manifest, .manifest_len = f->manifest_len};
        chp_msg_open_encode(p, len, &m);
        struct chp_frame_header h;
        uint8_t *reply;
        int rc = rc_call(c, CHP_F_OPEN, p, len, &h, &reply);
        free(p);
        if (rc)
                return rc;
        struct chp_msg_open_ok ok;
        if (chp_msg_open_ok_decode(reply, h.len, &ok) != 0 || ok.chunk_count != f->count ||
            memcmp(ok.file_id, f->file_id, CHP_HASH_BYTES) != 0)
                return -EPROTO;
        memcpy(upload_id, ok.upload_id, CHP_UPLOAD_ID_BYTES);
        *complete = ok.state == CHP_UPLOAD_COMPLETE;
        size_t bytes = chp_bitmap_bytes(f->count);
        *missing = malloc(bytes + 1);
        if (!*missing)
                return -ENOMEM;
        memcpy(*missing, ok.missing, bytes);
        return 0;
}

int rc_send_chunks(struct rc_conn *c, const struct rc_file *f, const uint8_t *upload_id,
                   const uint8_t *missing, uint32_t max_chunks, struct rc_put_stats *st)
{
        uint32_t next = 0, sent = 0, acked = 0;
        uint64_t window = 0;
        uint32_t inflight = 0;
        uint32_t *lens = calloc(f->count + 1, sizeof(*lens)); /* by frame id - base */
        uint32_t base = chp_channel_reserve_ids(c->ch, f->count + 1);
        int rc = lens ? 0 : -ENOMEM;
        while (!rc) {
                /* send while the relay's window allows */
                while (next < f->count && sent < max_chunks && inflight < c->hello.max_inflight &&
                       window + chunk_len(f, next) <= c->hello.window_bytes) {
                        if (!chp_bit(missing, next)) {
                                next++;
                                continue;
                        }
                        uint8_t prefix[CHP_CHUNK_PREFIX];
                        chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), upload_id, next);
                        uint32_t id = base + next;
                        uint32_t len = chunk_len(f, next);
                        rc = rc_send(c, CHP_F_CHUNK, id, prefix, sizeof(prefix),
                                     f->data + (uint64_t)next * f->chunk_size, len);
                        if (rc)
                                break;
                        lens[next] = len;
                        window += len;
                        inflight++;
                        sent++;
                        st->chunks_sent++;
                        st->bytes_sent += len;
                        next++;
                }
                if (rc || inflight == 0)
                        break;
                struct chp_frame_header h;
                uint8_t *reply;
                if ((rc = rc_recv(c, &h, &reply)))
                        break;
                if (h.type == CHP_F_ERROR) {
                        rc = CHP_EREMOTE;
                        break;
                }
                struct chp_msg_chunk_ok ok;
                if (h.type != (CHP_F_CHUNK | CHP_F_REPLY) ||
                    chp_msg_chunk_ok_decode(reply, h.len, &ok) != 0 || ok.index >= f->count ||
                    h.id != base + ok.index) {
                        rc = -EPROTO;
                        break;
                }
                window -= lens[ok.index];
                inflight--;
                acked++;
                if (ok.flags & CHP_CHUNK_DEDUP)
                        st->chunks_dedup++;
        }
        free(lens);
        return rc;
}

int rc_commit(struct rc_conn *c, const uint8_t *upload_id, uint8_t file_id[CHP_HASH_BYTES])
{
        struct chp_frame_header h;
        uint8_t *reply;
        int rc = rc_call(c, CHP_F_COMMIT, upload_id, CHP_UPLOAD_ID_BYTES, &h, &reply);
        if (rc)
                return rc;
        if (h.len != CHP_HASH_BYTES)
                return -EPROTO;
        memcpy(file_id, reply, CHP_HASH_BYTES);
        return 0;
}

int rc_put(struct rc_conn *c, const struct rc_file *f, struct rc_put_stats *st)
{
        uint8_t id[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
        uint8_t *missing;
        bool complete;
        memset(st, 0, sizeof(*st));
        int rc = rc_open(c, f, id, &missing, &complete);
        if (rc)
                return rc;
        st->was_complete = complete;
        if (!complete) {
                rc = rc_send_chunks(c, f, id, missing, UINT32_MAX, st);
                if (!rc)
                        rc = rc_commit(c, id, fid);
                if (!rc && memcmp(fid, f->file_id, CHP_HASH_BYTES) != 0)
                        rc = -EPROTO;
        }
        free(missing);
        return rc;
}

int rc_get(struct rc_conn *c, const uint8_t file_id[CHP_HASH_BYTES], uint8_t **out, uint64_t *len)
{
        return rc_fetch(c, file_id, out, len, true);
}

int rc_fetch(struct rc_conn *c, const uint8_t file_id[CHP_HASH_BYTES], uint8_t **out, uint64_t *len,
             bool verify)
{
        if (out)
                *out = NULL;
        *len = 0;
        struct chp_frame_header h;
        uint8_t *reply;
        int rc = rc_call(c, CHP_F_GET_MANIFEST, file_id, CHP_HASH_BYTES, &h, &reply);
        if (rc)
                return rc;
        struct chp_msg_manifest mm;
        struct chp_manifest m;
        if (chp_msg_manifest_decode(reply, h.len, &mm) != 0 ||
            chp_manifest_decode(mm.manifest, mm.manifest_len, &m) < 0)
                return -EPROTO;
        uint8_t *man = malloc(mm.manifest_len);
        uint8_t *data = out ? malloc(m.total_size ? m.total_size : 1) : NULL;
        if (!man || (out && !data)) {
                free(man);
                free(data);
                return -ENOMEM;
        }
        memcpy(man, mm.manifest, mm.manifest_len);
        if (chp_manifest_decode(man, mm.manifest_len, &m) < 0) {
                free(man);
                free(data);
                return -EPROTO;
        }
        uint32_t next = 0, done = 0, inflight = 0;
        uint32_t base = chp_channel_reserve_ids(c->ch, m.chunk_count + 1);
        while (!rc && done < m.chunk_count) {
                while (next < m.chunk_count && inflight < 16) {
                        struct chp_msg_get_chunk g = {.addr = m.addrs + (size_t)next * 32};
                        uint8_t p[40];
                        chp_msg_get_chunk_encode(p, sizeof(p), &g);
                        if ((rc = rc_send(c, CHP_F_GET_CHUNK, base + next, p, sizeof(p), NULL, 0)))
                                break;
                        next++;
                        inflight++;
                }
                if (rc || (rc = rc_recv(c, &h, &reply)))
                        break;
                if (h.type == CHP_F_ERROR) {
                        rc = CHP_EREMOTE;
                        break;
                }
                struct chp_msg_chunk_data d;
                uint32_t i = h.id - base;
                uint8_t sum[CHP_HASH_BYTES];
                if (h.type != (CHP_F_GET_CHUNK | CHP_F_REPLY) || i >= m.chunk_count ||
                    chp_msg_chunk_data_decode(reply, h.len, &d) != 0 ||
                    d.len != chp_manifest_chunk_len(&m, i) || d.offset != 0 ||
                    (verify && (chp_sha256(d.data, d.len, sum) != 0 ||
                                memcmp(sum, m.addrs + (size_t)i * 32, 32) != 0))) {
                        rc = -EPROTO;
                        break;
                }
                if (data)
                        memcpy(data + (uint64_t)i * m.chunk_size, d.data, d.len);
                inflight--;
                done++;
        }
        if (rc) {
                free(data);
        } else {
                if (out)
                        *out = data;
                *len = m.total_size;
        }
        free(man);
        return rc;
}
