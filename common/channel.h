/* channel.h — the initiator's side of the native transport: one blocking connection to a relay
 * (TCP, the preamble, the Noise handshake or the plaintext preamble, the record layer, HELLO)
 * carrying frames. libchapar, the relay's federation, the test client and chapar-bench use it.
 * A channel is used by one thread at a time; only the cancel flag it was opened with may be set
 * from another thread or a signal handler. Every call that can fail returns 0 or a negative code
 * of err.h (a negative errno, CHP_EKEY, CHP_EAUTH, CHP_EREMOTE) and leaves a readable message in
 * chp_channel_error(). The preamble and prologue, which the relay's side (server/secure.c) reads,
 * are defined here and nowhere else.
 */
#ifndef CHP_CHANNEL_H
#define CHP_CHANNEL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "noise.h"
#include "proto.h"

#define CHP_CHANNEL_WUR __attribute__((warn_unused_result))

/* ---- the preamble: the 8 bytes a connection opens with ------------------------------------ */

#define CHP_PREAMBLE_BYTES 8
#define CHP_PREAMBLE_NOISE "CHN1" /* then pattern, cipher, hash, 0 */
#define CHP_PREAMBLE_PLAIN "CHP0" /* then four zero bytes: plaintext frames, loopback only */
#define CHP_PROLOGUE_MAX   32

/* "CHN1" pattern cipher hash 0: a Noise handshake of that pattern and suite follows. */
void chp_channel_preamble_noise(uint8_t out[CHP_PREAMBLE_BYTES], enum chp_noise_pattern pattern,
                                struct chp_noise_suite suite);
/* "CHP0" 0 0 0 0: the frame stream follows in plaintext. */
void chp_channel_preamble_plain(uint8_t out[CHP_PREAMBLE_BYTES]);
/* The Noise prologue for a preamble ("chapar native 1" + its 8 bytes, binding the version and
 * the offered pattern and suite into the handshake); returns its length. */
size_t chp_channel_prologue(const uint8_t pre[CHP_PREAMBLE_BYTES], uint8_t out[CHP_PROLOGUE_MAX]);

/* ---- a channel ---------------------------------------------------------------------------- */

struct chp_channel;

struct chp_channel_opts {
        const char *addr; /* HOST:PORT, [V6]:PORT; borrowed for the call */
        bool plaintext;   /* "CHP0": only a relay run with --insecure-plaintext grants it */
        bool ik;          /* Noise IK (relay to relay; static_priv and remote_key needed);
                           * otherwise XX, AES-GCM first where this machine has AES-NI */
        const uint8_t *static_priv; /* IK: this side's static key; XX: NULL (a fresh one) */
        const uint8_t *remote_key;  /* the key the relay must prove, or NULL (accept any) */
        int timeout_ms;             /* a wait longer than this fails (-ETIMEDOUT); <= 0: 30 s */
        const atomic_int *cancel; /* nonzero: calls return -ECANCELED; or NULL (lock-free: a signal
                                   * handler or another thread may set it) */
        const char *token; /* an upload token (docs/tokens.md) sent in HELLO, or NULL; borrowed */
        /* the TCP congestion control the socket asks for before it connects ("bbr", ...), or
         * NULL: the system's default; borrowed for the call. A refusal (chp_net_set_congestion's
         * -EPERM, -ENOENT) is no error: the socket keeps the default. */
        const char *congestion;
};

/* Connects, runs the handshake (or sends the plaintext preamble) and HELLO. On success *out is
 * the channel (caller frees with chp_channel_close); on failure *out stays NULL and why (cap
 * bytes) says what went wrong. CHP_EKEY: the relay proved another key than remote_key, or its
 * handshake messages do not verify; -EPROTO: the relay refused the handshake or spoke something
 * else; CHP_ETOKEN_MISSING: the relay refused the HELLO (no token where it needs one, or a token
 * that does not verify: why says which); CHP_ELIMITED: it is over a limit, retry later; network
 * failures are negative errnos (-ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, ...). */
CHP_CHANNEL_WUR int chp_channel_open(const struct chp_channel_opts *o,
                                     struct chp_channel **out /* out */, char *why, size_t cap);
/* Sends the explicit close (encrypted channels), closes the socket, wipes the keys, frees.
 * NULL is a no-op. */
void chp_channel_close(struct chp_channel *ch);

/* One frame of header + a + b (either may be empty). */
CHP_CHANNEL_WUR int chp_channel_send(struct chp_channel *ch, uint8_t type, uint32_t id,
                                     const void *a, size_t alen, const void *b, size_t blen);
/* Bytes of the frame stream as they are, for tests and benchmarks that write part of a frame
 * (a cut upload, a trickled CHUNK); encrypted, each call is sealed into its own records. */
CHP_CHANNEL_WUR int chp_channel_write(struct chp_channel *ch, const void *buf, size_t len);
/* The next frame; *payload (h->len bytes) is valid until the next call on ch. An ERROR frame is
 * returned like any other, its code and message kept for chp_channel_remote_code() and
 * chp_channel_error(). -ECONNRESET: the relay closed; CHP_EAUTH: a record failed
 * authentication; -EPROTO: a malformed frame. */
CHP_CHANNEL_WUR int chp_channel_recv(struct chp_channel *ch, struct chp_frame_header *h /* out */,
                                     uint8_t **payload /* out */);
/* A request with the next id and its reply (which must carry that id and the request's type):
 * an ERROR reply returns CHP_EREMOTE, any other mismatch -EPROTO. */
CHP_CHANNEL_WUR int chp_channel_call(struct chp_channel *ch, uint8_t type, const void *p,
                                     size_t len, struct chp_frame_header *h /* out */,
                                     uint8_t **payload /* out */);
/* Reserves n request ids for pipelined requests the caller numbers itself; returns the first
 * (the channel's own calls never use them). */
uint32_t chp_channel_reserve_ids(struct chp_channel *ch, uint32_t n);

/* What the relay said in HELLO_OK (its window, max in flight, ...). */
const struct chp_msg_hello_ok *chp_channel_hello(const struct chp_channel *ch);
/* The static key the relay proved (CHP_KEY_BYTES bytes), or NULL on a plaintext channel. */
const uint8_t *chp_channel_remote_key(const struct chp_channel *ch);
/* The wire code (CHP_WE_*) of the last ERROR frame received, 0 if none. */
uint32_t chp_channel_remote_code(const struct chp_channel *ch);
/* The last failure or ERROR frame's message; "" if none. Valid until the next call on ch. */
const char *chp_channel_error(const struct chp_channel *ch);
/* The socket, for poll() and socket options. Bytes read or written on it directly bypass the
 * stream: only a test or benchmark that means to break it (a raw frame, a drained answer) does. */
int chp_channel_fd(const struct chp_channel *ch);

#endif
