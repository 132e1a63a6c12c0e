/* native_client.h — a small blocking client of the native protocol over a chp_channel
 * (common/channel.h), for benchmarks and tests: files of opaque chunks, pipelined uploads and
 * downloads.
 *
 * One connection, one thread. A received payload is valid until the next receive. Uploads
 * pipeline their chunks up to the relay's window. Everything returns 0 or a negative code of
 * err.h; a relay ERROR reply is CHP_EREMOTE with the wire code in c->last_error, and any failure
 * of the channel leaves its message in c->last_msg.
 */
#ifndef CHP_NATIVE_CLIENT_H
#define CHP_NATIVE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "channel.h"
#include "err.h"
#include "proto.h"

struct rc_conn {
        struct chp_channel *ch; /* NULL when closed */
        int fd;                 /* its socket (-1 when closed), for poll() and for tests that
                                 * write raw frames on a plaintext connection */
        struct chp_msg_hello_ok hello;
        uint32_t last_error; /* the wire code of the last ERROR reply */
        char last_msg[CHP_ERROR_MSG_MAX + 1];
};

/* Blocking I/O helpers on a plain socket (the benchmark's HTTP client, raw test connections):
 * every byte of iov written (iov is modified; *done, if given, counts what went out), or exactly
 * len bytes read (-ECONNRESET at end of stream). 0 or -errno. */
int rc_write_iov(int fd, struct iovec *iov, int n, uint64_t *done);
int rc_read_all(int fd, void *buf, size_t len);

/* Opens c to hostport: encrypted (Noise XX, any relay key) or, with plaintext, the frame stream
 * as it is (a relay run with --insecure-plaintext); then HELLO. timeout_ms <= 0: 30 s. On
 * failure c->last_msg says why; rc_close(c) is safe either way. */
int rc_dial(struct rc_conn *c, const char *hostport, bool plaintext, int timeout_ms);
/* rc_dial in plaintext on a blocking socket, as the tests that read and write c->fd themselves
 * (with SO_RCVTIMEO) expect: the channel's own timeout no longer applies. The tests' relays run
 * with --insecure-plaintext. */
int rc_connect(struct rc_conn *c, const char *hostport);
void rc_close(struct rc_conn *c);

int rc_send(struct rc_conn *c, uint8_t type, uint32_t id, const void *a, size_t alen, const void *b,
            size_t blen);
int rc_recv(struct rc_conn *c, struct chp_frame_header *h, uint8_t **payload);
/* Sends a request and waits for its reply; ERROR replies become CHP_EREMOTE. */
int rc_call(struct rc_conn *c, uint8_t type, const void *p, size_t len, struct chp_frame_header *h,
            uint8_t **payload);

/* A file's chunks, already "encrypted": the relay sees them as opaque bytes. */
struct rc_file {
        uint32_t chunk_size;
        uint32_t count;
        uint64_t total;
        uint8_t *data;     /* total bytes */
        uint8_t *manifest; /* encoded */
        size_t manifest_len;
        uint8_t file_id[CHP_HASH_BYTES];
};
/* Builds a file of total bytes from a seed (meta_tag varies the manifest, not the chunks). */
int rc_file_make(struct rc_file *f, uint64_t total, uint32_t chunk_size, uint32_t seed,
                 uint32_t meta_tag);
void rc_file_free(struct rc_file *f);

struct rc_put_stats {
        uint32_t chunks_sent, chunks_dedup;
        uint64_t bytes_sent;
        bool was_complete;
};

/* OPEN; returns the upload id and the missing bitmap (caller frees *missing). */
int rc_open(struct rc_conn *c, const struct rc_file *f, uint8_t upload_id[CHP_UPLOAD_ID_BYTES],
            uint8_t **missing, bool *complete);
/* Sends the missing chunks (pipelined up to the window), at most max_chunks of them
 * (UINT32_MAX = all), and waits for their acknowledgements. */
int rc_send_chunks(struct rc_conn *c, const struct rc_file *f, const uint8_t *upload_id,
                   const uint8_t *missing, uint32_t max_chunks, struct rc_put_stats *st);
int rc_commit(struct rc_conn *c, const uint8_t *upload_id, uint8_t file_id[CHP_HASH_BYTES]);
/* open + send everything missing + commit */
int rc_put(struct rc_conn *c, const struct rc_file *f, struct rc_put_stats *st);
/* GET_MANIFEST + pipelined GET_CHUNKs; checks every chunk's address; *out gets the bytes
 * (caller frees). */
int rc_get(struct rc_conn *c, const uint8_t file_id[CHP_HASH_BYTES], uint8_t **out, uint64_t *len);
/* rc_get with the client's own check optional, and out NULL to receive without keeping the
 * bytes (benchmarks measure the relay, not the client's SHA-256 or page faults). */
int rc_fetch(struct rc_conn *c, const uint8_t file_id[CHP_HASH_BYTES], uint8_t **out, uint64_t *len,
             bool verify);

#endif
