/* proto.h — the native chunk protocol v1: frames and the messages they carry.
 *
 * A connection carries a stream of frames, each a 12-byte header and a payload (docs/protocol.md
 * has the diagrams). Requests carry an id chosen by the client; the reply carries the same id, so
 * many requests can be in flight and replies may come back in any order. The same byte stream runs
 * in plaintext or inside the Noise record layer.
 *
 * Decoders take (buf, len, out), allocate nothing, never read past len and point into buf
 * (borrowed); they return 0 (or bytes consumed for the header), -EAGAIN when more bytes are needed
 * (header only) or -EBADMSG; nonzero reserved or flag bits that v1 does not define are -EBADMSG.
 * Encoders write into a caller's buffer and return bytes written, -ENOSPC, or -EINVAL for a
 * message their decoder would reject (so whatever encodes, decodes). Pure functions; any thread.
 */
#ifndef CHP_PROTO_H
#define CHP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hash.h"
#include "manifest.h"
#include "noise.h" /* CHP_KEY_BYTES */

#define CHP_PROTO_VERSION 1
#define CHP_FRAME_HEADER  12
/* An upload id: on the wire, in the store and (as 32 hex digits) in tus paths. */
#define CHP_UPLOAD_ID_BYTES 16
/* Payload bounds: a CHUNK or CHUNK_DATA frame carries at most one chunk; an OPEN frame carries a
 * manifest of up to CHP_OPEN_MAX_PAYLOAD bytes (about 260,000 chunks); everything else is small. */
#define CHP_CHUNK_FRAME_MAX  (CHP_CHUNK_MAX + 64)
#define CHP_OPEN_MAX_PAYLOAD (8u * 1024 * 1024)
#define CHP_CTRL_MAX_PAYLOAD (64u * 1024)
#define CHP_HAVE_MAX         2000 /* addresses in one HAVE */
#define CHP_TOKEN_MAX        4096
#define CHP_ERROR_MSG_MAX    512
#define CHP_PING_MAX         64 /* payload bytes of a PING (chp_msg_ping_decode refuses more) */

enum chp_frame_type {
        CHP_F_HELLO = 0x01,
        CHP_F_OPEN = 0x02,
        CHP_F_CHUNK = 0x03,
        CHP_F_COMMIT = 0x04,
        CHP_F_HAVE = 0x05,
        CHP_F_GET_MANIFEST = 0x06,
        CHP_F_GET_CHUNK = 0x07,
        CHP_F_STAT = 0x08,
        CHP_F_DELETE = 0x09,
        CHP_F_PING = 0x0a,
        CHP_F_PREFETCH = 0x0b, /* peer to relay: pull this file from me (federation) */
        CHP_F_OFFER = 0x0c,    /* client to its relay: offer this file to that peer */
        CHP_F_REPLY = 0x80, /* a reply's type is its request's type | CHP_F_REPLY */
        CHP_F_ERROR = 0xff,
};

/* Error codes on the wire (never errno values, which differ between systems). */
enum chp_wire_err {
        CHP_WE_BAD_FRAME = 1,    /* malformed frame or payload; the connection closes */
        CHP_WE_UNKNOWN_TYPE = 2, /* the connection closes */
        CHP_WE_TOO_BIG = 3,      /* over a size limit; the connection closes */
        CHP_WE_NOT_FOUND = 4,
        CHP_WE_MISMATCH = 5, /* bytes do not hash to the address the manifest gives */
        CHP_WE_MISSING = 6,  /* commit before every chunk is stored */
        CHP_WE_BAD_MANIFEST = 7,
        CHP_WE_VERSION = 8,      /* no common protocol version; the connection closes */
        CHP_WE_NO_HELLO = 9,     /* the first frame was not HELLO; the connection closes */
        CHP_WE_NO_SPACE = 10,    /* the relay's disk or index is full */
        CHP_WE_UNAVAILABLE = 11, /* shutting down or overloaded: retry later */
        CHP_WE_INTERNAL = 12,
        CHP_WE_UNAUTHORIZED = 13,
        CHP_WE_FETCHING = 14,  /* the relay is fetching the file from its origin: ask again
                                  shortly */
        CHP_WE_COMMITTED = 15, /* the upload was committed (by another connection): OPEN
                                  again, which answers COMPLETE */
        /* CHP_WE_UNAUTHORIZED (13): no token where one is needed, or one that does not verify */
        CHP_WE_FORBIDDEN = 16,   /* the token does not allow this request (scope, another file) */
        CHP_WE_QUOTA = 17,       /* over the token's budget, the tenant's quota or a size limit */
        CHP_WE_LIMITED = 18,     /* over a rate or concurrency limit; the message begins
                                    "retry after N s" */
        CHP_WE_QUARANTINED = 19, /* the relay's operator quarantined this file id: it is never
                                    stored or served again (HTTP 451) */
        CHP_WE_MAX = 31,         /* codes are below 32 (metrics count them by code) */
};

struct chp_frame_header {
        uint8_t type;
        uint8_t flags; /* 0 in v1 */
        uint32_t id;
        uint32_t len; /* payload bytes */
};

/* Largest payload a frame of this type may carry (0 for unknown types). */
uint32_t chp_frame_max_payload(uint8_t type);

void chp_frame_header_encode(uint8_t out[CHP_FRAME_HEADER], uint8_t type, uint32_t id,
                             uint32_t len);
/* CHP_FRAME_HEADER, -EAGAIN (fewer than 12 bytes) or -EBADMSG (nonzero reserved bits, unknown
 * type, payload over its type's bound). */
__attribute__((warn_unused_result)) ssize_t
chp_frame_header_decode(const uint8_t *buf, size_t len, struct chp_frame_header *out /* out */);

/* ---- requests ---------------------------------------------------------------------------- */

struct chp_msg_hello {
        uint16_t version;
        uint32_t features;
        uint16_t token_len;
        const uint8_t *token;
};

struct chp_msg_open {
        uint32_t expires_in; /* seconds; 0 = the relay's default */
        const uint8_t *manifest;
        size_t manifest_len;
};

struct chp_msg_chunk {
        const uint8_t *upload_id;
        uint32_t index;
        const uint8_t *data; /* the rest of the payload */
        size_t len;
};

struct chp_msg_have {
        uint32_t count;
        const uint8_t *addrs;
};

struct chp_msg_get_chunk {
        const uint8_t *addr;
        uint32_t offset, length; /* length 0 = to the end of the chunk */
};

#define CHP_CHUNK_PREFIX (CHP_UPLOAD_ID_BYTES + 4) /* bytes of a CHUNK payload before the data */

__attribute__((warn_unused_result)) int chp_msg_hello_decode(const uint8_t *p, size_t len,
                                                             struct chp_msg_hello *out /* out */);
__attribute__((warn_unused_result)) int chp_msg_open_decode(const uint8_t *p, size_t len,
                                                            struct chp_msg_open *out /* out */);
__attribute__((warn_unused_result)) int chp_msg_chunk_decode(const uint8_t *p, size_t len,
                                                             struct chp_msg_chunk *out /* out */);
__attribute__((warn_unused_result)) int chp_msg_have_decode(const uint8_t *p, size_t len,
                                                            struct chp_msg_have *out /* out */);
__attribute__((warn_unused_result)) int chp_msg_get_chunk_decode(const uint8_t *p, size_t len,
                                                                 struct chp_msg_get_chunk *out);
/* GET_MANIFEST and STAT carry a file id, and may name the file's origin relay (from the ticket)
 * so that a relay which lacks the file can fetch it from that relay, if it is a peer:
 *   file id(32) [origin key(32) addr_len u8 addr] */
#define CHP_ORIGIN_ADDR_MAX 255
struct chp_msg_file_req {
        const uint8_t *file_id;
        bool has_origin;
        const uint8_t *origin_key; /* CHP_KEY_BYTES */
        const char *origin_addr;   /* addr_len bytes, not NUL-terminated */
        uint8_t addr_len;
};
__attribute__((warn_unused_result)) int
chp_msg_file_req_decode(const uint8_t *p, size_t len, struct chp_msg_file_req *out /* out */);
ssize_t chp_msg_file_req_encode(uint8_t *buf, size_t cap, const struct chp_msg_file_req *m);

/* OFFER: file id(32) + the peer's public key(32), exactly. */
#define CHP_OFFER_BYTES (CHP_HASH_BYTES + CHP_KEY_BYTES)
struct chp_msg_offer {
        const uint8_t *file_id;  /* CHP_HASH_BYTES */
        const uint8_t *peer_key; /* CHP_KEY_BYTES */
};
/* CHP_OFFER_BYTES, or -EBADMSG for any other length. */
__attribute__((warn_unused_result)) ssize_t
chp_msg_offer_decode(const uint8_t *buf, size_t len, struct chp_msg_offer *out /* out */);
/* CHP_OFFER_BYTES, or -ENOSPC. */
ssize_t chp_msg_offer_encode(uint8_t *buf, size_t cap, const struct chp_msg_offer *m);

/* PING and its reply: up to CHP_PING_MAX opaque bytes, echoed. */
struct chp_msg_ping {
        const uint8_t *data; /* the whole payload */
        size_t len;
};
/* len (all of it is the payload), or -EBADMSG when over CHP_PING_MAX. */
__attribute__((warn_unused_result)) ssize_t chp_msg_ping_decode(const uint8_t *buf, size_t len,
                                                                struct chp_msg_ping *out /* out */);
/* m->len, -EINVAL when over CHP_PING_MAX, or -ENOSPC. */
ssize_t chp_msg_ping_encode(uint8_t *buf, size_t cap, const struct chp_msg_ping *m);

/* COMMIT and DELETE carry an upload id; PREFETCH a file id: exactly n bytes. */
__attribute__((warn_unused_result)) int chp_msg_id_decode(const uint8_t *p, size_t len, size_t n,
                                                          const uint8_t **id /* out */);

ssize_t chp_msg_hello_encode(uint8_t *buf, size_t cap, const struct chp_msg_hello *m);
ssize_t chp_msg_open_encode(uint8_t *buf, size_t cap, const struct chp_msg_open *m);
/* Only the prefix: the chunk's bytes follow it in the same frame. */
ssize_t chp_msg_chunk_prefix_encode(uint8_t *buf, size_t cap, const uint8_t *upload_id,
                                    uint32_t index);
ssize_t chp_msg_have_encode(uint8_t *buf, size_t cap, const struct chp_msg_have *m);
ssize_t chp_msg_get_chunk_encode(uint8_t *buf, size_t cap, const struct chp_msg_get_chunk *m);

/* ---- replies ----------------------------------------------------------------------------- */

#define CHP_FEATURE_NONE 0

/* Fixed reply sizes, and the fixed part of the variable ones. */
#define CHP_HELLO_OK_BYTES 20 /* version u16, reserved u16, then 4 u32s */
#define CHP_CHUNK_OK_BYTES 8  /* index u32, flags u32 */
#define CHP_STAT_OK_BYTES  40 /* see struct chp_msg_stat_ok */
#define CHP_HAVE_OK_PREFIX 4  /* count u32, before the bitmap */
#define CHP_ERROR_PREFIX   6  /* code u32, msg_len u16, before the message */
/* upload id, file id, state u8, reserved u8 + u16, chunk_count u32, before the missing bitmap */
#define CHP_OPEN_OK_PREFIX  (CHP_UPLOAD_ID_BYTES + CHP_HASH_BYTES + 8)
#define CHP_MANIFEST_PREFIX 8 /* state u8, reserved u8 + u16, manifest_len u32, before it */

struct chp_msg_hello_ok {
        uint16_t version;
        uint32_t features;
        uint32_t max_frame;    /* largest payload the relay accepts */
        uint32_t window_bytes; /* chunk bytes a client may have unacknowledged */
        uint32_t max_inflight; /* requests a client may have unanswered */
};

enum chp_upload_state { CHP_UPLOAD_PARTIAL = 0, CHP_UPLOAD_COMPLETE = 1 };

struct chp_msg_open_ok {
        const uint8_t *upload_id; /* CHP_UPLOAD_ID_BYTES */
        const uint8_t *file_id;   /* CHP_HASH_BYTES */
        uint8_t state;            /* enum chp_upload_state */
        uint32_t chunk_count;
        const uint8_t *missing; /* bitmap: bit i (byte i/8, bit i%8) set = chunk i missing */
};

struct chp_msg_chunk_ok {
        uint32_t index;
        uint32_t flags; /* CHP_CHUNK_DEDUP */
};
#define CHP_CHUNK_DEDUP 1u

struct chp_msg_manifest {
        uint8_t state; /* CHP_UPLOAD_COMPLETE, or PARTIAL while its upload runs */
        const uint8_t *manifest;
        uint32_t manifest_len;
        const uint8_t *present; /* PARTIAL only: bitmap of chunks stored so far */
};

struct chp_msg_chunk_data {
        const uint8_t *addr;
        uint32_t offset;    /* of the first byte carried */
        uint32_t chunk_len; /* of the whole chunk */
        const uint8_t *data;
        size_t len;
};
#define CHP_CHUNK_DATA_PREFIX (CHP_HASH_BYTES + 8)

/* STAT_OK's flags (the byte after state). TIMES_WITHHELD: created and expires are not told
 * (both 0), because the caller is anonymous. */
#define CHP_STAT_TIMES_WITHHELD 0x01

struct chp_msg_stat_ok {
        uint8_t state;
        uint8_t flags; /* CHP_STAT_*; a decoder refuses bits it does not know */
        uint64_t size;
        uint32_t chunk_count, chunk_size, chunks_present;
        uint64_t created, expires;
};

struct chp_msg_error {
        uint32_t code;   /* enum chp_wire_err */
        const char *msg; /* not NUL-terminated */
        uint16_t msg_len;
};

/* Chunk bitmaps: bit i is bit i%8 (least significant first) of byte i/8; the unused high bits of
 * the last byte are sent as 0 and ignored on receipt. */
static inline size_t chp_bitmap_bytes(uint32_t bits)
{
        return ((size_t)bits + 7) / 8;
}
static inline bool chp_bit(const uint8_t *map, uint32_t i)
{
        return map[i / 8] >> (i % 8) & 1;
}
static inline void chp_bit_set(uint8_t *map, uint32_t i)
{
        map[i / 8] = (uint8_t)(map[i / 8] | 1u << (i % 8));
}

ssize_t chp_msg_hello_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_hello_ok *m);
ssize_t chp_msg_open_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_open_ok *m);
ssize_t chp_msg_chunk_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_chunk_ok *m);
ssize_t chp_msg_manifest_encode(uint8_t *buf, size_t cap, const struct chp_msg_manifest *m);
ssize_t chp_msg_chunk_data_prefix_encode(uint8_t *buf, size_t cap,
                                         const struct chp_msg_chunk_data *m);
/* HAVE's reply: count u32, then a bitmap with bit i set when address i is stored. */
ssize_t chp_msg_have_ok_encode(uint8_t *buf, size_t cap, uint32_t count, const uint8_t *bitmap);
__attribute__((warn_unused_result)) int chp_msg_have_ok_decode(const uint8_t *p, size_t len,
                                                               uint32_t *count /* out */,
                                                               const uint8_t **bitmap /* out */);
ssize_t chp_msg_stat_ok_encode(uint8_t *buf, size_t cap, const struct chp_msg_stat_ok *m);
ssize_t chp_msg_error_encode(uint8_t *buf, size_t cap, const struct chp_msg_error *m);

__attribute__((warn_unused_result)) int chp_msg_hello_ok_decode(const uint8_t *p, size_t len,
                                                                struct chp_msg_hello_ok *out);
__attribute__((warn_unused_result)) int chp_msg_open_ok_decode(const uint8_t *p, size_t len,
                                                               struct chp_msg_open_ok *out);
__attribute__((warn_unused_result)) int chp_msg_chunk_ok_decode(const uint8_t *p, size_t len,
                                                                struct chp_msg_chunk_ok *out);
__attribute__((warn_unused_result)) int chp_msg_manifest_decode(const uint8_t *p, size_t len,
                                                                struct chp_msg_manifest *out);
__attribute__((warn_unused_result)) int chp_msg_chunk_data_decode(const uint8_t *p, size_t len,
                                                                  struct chp_msg_chunk_data *out);
__attribute__((warn_unused_result)) int chp_msg_stat_ok_decode(const uint8_t *p, size_t len,
                                                               struct chp_msg_stat_ok *out);
__attribute__((warn_unused_result)) int chp_msg_error_decode(const uint8_t *p, size_t len,
                                                             struct chp_msg_error *out);

/* A name for a frame type, for logs: "OPEN" for the request, "OPEN_OK" for its reply ("?" for
 * unknown types). */
const char *chp_frame_type_name(uint8_t type);
/* A readable explanation of a wire error code. */
const char *chp_wire_strerror(uint32_t code);

#endif
