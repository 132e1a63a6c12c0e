/* Fuzz target for the native protocol codec (common/proto.c): the input is a byte stream of
 * frames, read the way a connection reads them. Each header either needs more bytes, is refused
 * for a reason visible in its bytes, or decodes to exactly its fields; each complete frame's
 * payload is copied to an exact-size buffer (so ASan catches a read past len) and handed to the
 * decoder for its type, requests and replies alike. A decode either fails with -EBADMSG and
 * leaves its out-parameters alone, or points only inside the payload and re-encodes to exactly the
 * payload's bytes (every v1 payload has one encoding). Anything else aborts. Linked with
 * libFuzzer, or with replay.c to run the committed corpus under ctest. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "manifest.h"
#include "proto.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void expect_inside(const void *ptr, size_t n, const uint8_t *buf, size_t len)
{
        const uint8_t *q = ptr;
        if (n == 0)
                return;
        EXPECT(q >= buf && q <= buf + len && n <= (size_t)(buf + len - q));
}

/* A decode that failed: only -EBADMSG, and the out-parameter untouched. */
static void expect_refused(int rc, const void *out, const void *before, size_t n)
{
        EXPECT(rc == -EBADMSG);
        EXPECT(memcmp(out, before, n) == 0);
}

/* enc wrote n bytes into a len-byte buffer: it must be exactly the payload, and one byte less
 * room must be -ENOSPC. */
static void expect_same(ssize_t n, const uint8_t *again, const uint8_t *p, size_t len)
{
        EXPECT(n >= 0 && (size_t)n == len);
        EXPECT(len == 0 || memcmp(again, p, len) == 0);
}

/* Re-encodes a successfully decoded payload p[0..len) and compares. The buffer is len bytes, so
 * a too-long encoding shows as -ENOSPC. */
static void check_payload(uint8_t type, const uint8_t *p, size_t len)
{
        uint8_t *again = malloc(len ? len : 1);
        if (!again)
                return;
        size_t shorter = len ? len - 1 : 0;
        union {
                struct chp_msg_hello hello;
                struct chp_msg_open open;
                struct chp_msg_chunk chunk;
                struct chp_msg_have have;
                struct chp_msg_get_chunk get_chunk;
                struct chp_msg_hello_ok hello_ok;
                struct chp_msg_open_ok open_ok;
                struct chp_msg_chunk_ok chunk_ok;
                struct chp_msg_manifest manifest;
                struct chp_msg_chunk_data chunk_data;
                struct chp_msg_stat_ok stat_ok;
                struct chp_msg_error error;
                struct chp_msg_offer offer;
                struct chp_msg_ping ping;
        } u, before;
        memset(&u, 0xa5, sizeof(u));
        memcpy(&before, &u, sizeof(u));
        int rc;

        switch (type) {
        case CHP_F_HELLO:
                rc = chp_msg_hello_decode(p, len, &u.hello);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(u.hello.token_len <= CHP_TOKEN_MAX);
                expect_inside(u.hello.token, u.hello.token_len, p, len);
                expect_same(chp_msg_hello_encode(again, len, &u.hello), again, p, len);
                EXPECT(chp_msg_hello_encode(again, shorter, &u.hello) == -ENOSPC);
                break;
        case CHP_F_OPEN: {
                rc = chp_msg_open_decode(p, len, &u.open);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                expect_inside(u.open.manifest, u.open.manifest_len, p, len);
                EXPECT(u.open.manifest_len + 8 == len);
                expect_same(chp_msg_open_encode(again, len, &u.open), again, p, len);
                EXPECT(chp_msg_open_encode(again, shorter, &u.open) == -ENOSPC);
                /* what the relay does next: decode the manifest it carries */
                struct chp_manifest m;
                ssize_t mrc = chp_manifest_decode(u.open.manifest, u.open.manifest_len, &m);
                EXPECT(mrc == -EBADMSG || (mrc >= 0 && (size_t)mrc == u.open.manifest_len));
                break;
        }
        case CHP_F_CHUNK:
                rc = chp_msg_chunk_decode(p, len, &u.chunk);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        EXPECT(len < CHP_CHUNK_PREFIX);
                        break;
                }
                expect_inside(u.chunk.upload_id, CHP_UPLOAD_ID_BYTES, p, len);
                EXPECT(u.chunk.data == p + CHP_CHUNK_PREFIX);
                EXPECT(u.chunk.len + CHP_CHUNK_PREFIX == len);
                expect_same(chp_msg_chunk_prefix_encode(again, CHP_CHUNK_PREFIX, u.chunk.upload_id,
                                                        u.chunk.index),
                            again, p, CHP_CHUNK_PREFIX);
                break;
        case CHP_F_HAVE:
                rc = chp_msg_have_decode(p, len, &u.have);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(u.have.count <= CHP_HAVE_MAX);
                expect_inside(u.have.addrs, (size_t)u.have.count * CHP_HASH_BYTES, p, len);
                expect_same(chp_msg_have_encode(again, len, &u.have), again, p, len);
                EXPECT(chp_msg_have_encode(again, shorter, &u.have) == -ENOSPC);
                break;
        case CHP_F_GET_CHUNK:
                rc = chp_msg_get_chunk_decode(p, len, &u.get_chunk);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                expect_inside(u.get_chunk.addr, CHP_HASH_BYTES, p, len);
                expect_same(chp_msg_get_chunk_encode(again, len, &u.get_chunk), again, p, len);
                EXPECT(chp_msg_get_chunk_encode(again, shorter, &u.get_chunk) == -ENOSPC);
                break;
        case CHP_F_GET_MANIFEST:
        case CHP_F_STAT: {
                struct chp_msg_file_req q;
                uint8_t re[32 + 33 + 255];
                rc = chp_msg_file_req_decode(p, len, &q);
                if (rc == 0) {
                        ssize_t n = chp_msg_file_req_encode(re, sizeof(re), &q);
                        EXPECT(n == (ssize_t)len && memcmp(re, p, len) == 0);
                }
                break;
        }
        case CHP_F_OFFER: {
                ssize_t n = chp_msg_offer_decode(p, len, &u.offer);
                if (n < 0) {
                        EXPECT(len != CHP_OFFER_BYTES);
                        expect_refused((int)n, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(n == CHP_OFFER_BYTES && len == CHP_OFFER_BYTES);
                EXPECT(u.offer.file_id == p && u.offer.peer_key == p + CHP_HASH_BYTES);
                EXPECT(chp_msg_offer_encode(again, shorter, &u.offer) == -ENOSPC);
                expect_same(chp_msg_offer_encode(again, len, &u.offer), again, p, len);
                break;
        }
        case CHP_F_COMMIT:
        case CHP_F_DELETE:
        case CHP_F_PREFETCH:
        case CHP_F_COMMIT | CHP_F_REPLY:
        case CHP_F_DELETE | CHP_F_REPLY:
        case CHP_F_PREFETCH | CHP_F_REPLY:
        case CHP_F_OFFER | CHP_F_REPLY: {
                size_t n = type == CHP_F_COMMIT || type == CHP_F_DELETE ? CHP_UPLOAD_ID_BYTES
                           : type == (CHP_F_DELETE | CHP_F_REPLY) ||
                                           type == (CHP_F_PREFETCH | CHP_F_REPLY) ||
                                           type == (CHP_F_OFFER | CHP_F_REPLY)
                                   ? 0
                                   : CHP_HASH_BYTES;
                const uint8_t *id = (const uint8_t *)&before;
                rc = chp_msg_id_decode(p, len, n, &id);
                EXPECT(rc == (len == n ? 0 : -EBADMSG));
                EXPECT(rc == 0 ? id == p : id == (const uint8_t *)&before);
                break;
        }
        case CHP_F_PING:
        case CHP_F_PING | CHP_F_REPLY: {
                /* opaque bytes, echoed */
                ssize_t n = chp_msg_ping_decode(p, len, &u.ping);
                if (n < 0) {
                        EXPECT(len > CHP_PING_MAX);
                        expect_refused((int)n, &u, &before, sizeof(u));
                        break;
                }
                EXPECT((size_t)n == len && u.ping.data == p && u.ping.len == len);
                if (len)
                        EXPECT(chp_msg_ping_encode(again, shorter, &u.ping) == -ENOSPC);
                expect_same(chp_msg_ping_encode(again, len, &u.ping), again, p, len);
                break;
        }
        case CHP_F_HELLO | CHP_F_REPLY:
                rc = chp_msg_hello_ok_decode(p, len, &u.hello_ok);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                expect_same(chp_msg_hello_ok_encode(again, len, &u.hello_ok), again, p, len);
                EXPECT(chp_msg_hello_ok_encode(again, shorter, &u.hello_ok) == -ENOSPC);
                break;
        case CHP_F_OPEN | CHP_F_REPLY:
                rc = chp_msg_open_ok_decode(p, len, &u.open_ok);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(u.open_ok.state <= CHP_UPLOAD_COMPLETE);
                expect_inside(u.open_ok.upload_id, CHP_UPLOAD_ID_BYTES, p, len);
                expect_inside(u.open_ok.file_id, CHP_HASH_BYTES, p, len);
                expect_inside(u.open_ok.missing, chp_bitmap_bytes(u.open_ok.chunk_count), p, len);
                expect_same(chp_msg_open_ok_encode(again, len, &u.open_ok), again, p, len);
                EXPECT(chp_msg_open_ok_encode(again, shorter, &u.open_ok) == -ENOSPC);
                break;
        case CHP_F_CHUNK | CHP_F_REPLY:
                rc = chp_msg_chunk_ok_decode(p, len, &u.chunk_ok);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT((u.chunk_ok.flags & ~CHP_CHUNK_DEDUP) == 0);
                expect_same(chp_msg_chunk_ok_encode(again, len, &u.chunk_ok), again, p, len);
                EXPECT(chp_msg_chunk_ok_encode(again, shorter, &u.chunk_ok) == -ENOSPC);
                break;
        case CHP_F_GET_MANIFEST | CHP_F_REPLY: {
                rc = chp_msg_manifest_decode(p, len, &u.manifest);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                struct chp_manifest m;
                EXPECT(chp_manifest_decode(u.manifest.manifest, u.manifest.manifest_len, &m) >= 0);
                expect_inside(u.manifest.manifest, u.manifest.manifest_len, p, len);
                if (u.manifest.state == CHP_UPLOAD_PARTIAL)
                        expect_inside(u.manifest.present, chp_bitmap_bytes(m.chunk_count), p, len);
                else
                        EXPECT(u.manifest.state == CHP_UPLOAD_COMPLETE && !u.manifest.present);
                expect_same(chp_msg_manifest_encode(again, len, &u.manifest), again, p, len);
                EXPECT(chp_msg_manifest_encode(again, shorter, &u.manifest) == -ENOSPC);
                break;
        }
        case CHP_F_GET_CHUNK | CHP_F_REPLY:
                rc = chp_msg_chunk_data_decode(p, len, &u.chunk_data);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(u.chunk_data.addr == p && u.chunk_data.data == p + CHP_CHUNK_DATA_PREFIX);
                EXPECT(u.chunk_data.len + CHP_CHUNK_DATA_PREFIX == len);
                EXPECT((uint64_t)u.chunk_data.offset + u.chunk_data.len <= u.chunk_data.chunk_len);
                expect_same(
                    chp_msg_chunk_data_prefix_encode(again, CHP_CHUNK_DATA_PREFIX, &u.chunk_data),
                    again, p, CHP_CHUNK_DATA_PREFIX);
                break;
        case CHP_F_HAVE | CHP_F_REPLY: {
                uint32_t count = 0xa5a5a5a5u;
                const uint8_t *map = (const uint8_t *)&before;
                rc = chp_msg_have_ok_decode(p, len, &count, &map);
                if (rc != 0) {
                        EXPECT(rc == -EBADMSG && count == 0xa5a5a5a5u &&
                               map == (const uint8_t *)&before);
                        break;
                }
                EXPECT(count <= CHP_HAVE_MAX);
                expect_inside(map, chp_bitmap_bytes(count), p, len);
                expect_same(chp_msg_have_ok_encode(again, len, count, map), again, p, len);
                EXPECT(chp_msg_have_ok_encode(again, shorter, count, map) == -ENOSPC);
                break;
        }
        case CHP_F_STAT | CHP_F_REPLY:
                rc = chp_msg_stat_ok_decode(p, len, &u.stat_ok);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                expect_same(chp_msg_stat_ok_encode(again, len, &u.stat_ok), again, p, len);
                EXPECT(chp_msg_stat_ok_encode(again, shorter, &u.stat_ok) == -ENOSPC);
                break;
        case CHP_F_ERROR:
                rc = chp_msg_error_decode(p, len, &u.error);
                if (rc != 0) {
                        expect_refused(rc, &u, &before, sizeof(u));
                        break;
                }
                EXPECT(u.error.msg_len <= CHP_ERROR_MSG_MAX);
                expect_inside(u.error.msg, u.error.msg_len, p, len);
                (void)chp_wire_strerror(u.error.code);
                expect_same(chp_msg_error_encode(again, len, &u.error), again, p, len);
                EXPECT(chp_msg_error_encode(again, shorter, &u.error) == -ENOSPC);
                break;
        default:
                abort(); /* the header decoder let through a type nobody decodes */
        }
        free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        size_t off = 0;
        for (;;) {
                const uint8_t *h = data + off;
                size_t avail = size - off;
                struct chp_frame_header fh;
                memset(&fh, 0xa5, sizeof(fh));
                ssize_t rc = chp_frame_header_decode(h, avail, &fh);
                if (rc == -EAGAIN) {
                        EXPECT(avail < CHP_FRAME_HEADER);
                        return 0;
                }
                /* refused exactly when the bytes say so; a relay closes the connection then */
                EXPECT(avail >= CHP_FRAME_HEADER);
                uint32_t max = chp_frame_max_payload(h[0]);
                int bad =
                    h[1] != 0 || h[2] != 0 || h[3] != 0 || max == 0 || chp_get_le32(h + 8) > max;
                if (rc == -EBADMSG) {
                        EXPECT(bad && fh.type == 0xa5 && fh.len == 0xa5a5a5a5u);
                        return 0;
                }
                EXPECT(rc == CHP_FRAME_HEADER && !bad);
                EXPECT(fh.type == h[0] && fh.flags == 0 && fh.id == chp_get_le32(h + 4) &&
                       fh.len == chp_get_le32(h + 8));
                EXPECT(chp_frame_type_name(fh.type)[0] != '?');
                uint8_t re[CHP_FRAME_HEADER];
                chp_frame_header_encode(re, fh.type, fh.id, fh.len);
                EXPECT(memcmp(re, h, CHP_FRAME_HEADER) == 0);

                if (fh.len > avail - CHP_FRAME_HEADER)
                        return 0; /* the payload has not arrived yet */
                uint8_t *payload = malloc(fh.len ? fh.len : 1);
                if (!payload)
                        return 0;
                if (fh.len)
                        memcpy(payload, h + CHP_FRAME_HEADER, fh.len);
                check_payload(fh.type, payload, fh.len);
                free(payload);
                off += CHP_FRAME_HEADER + fh.len;
        }
}
