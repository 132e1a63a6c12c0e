/* client_int.h — libchapar's internals shared by its files: the client struct and its link to
 * the relay (link.c), a chp_channel whose err.h codes become CHAPAR_E* codes and whose messages
 * land in last_error; the paths shared by the known-relays file and the key cache (libchapar.c);
 * the key cache (keycache.c); the manifest fetch that get and stat share (query.c). Not installed.
 * One thread per client. Functions returning int return 0 or a CHAPAR_E* code unless they say
 * otherwise.
 */
#ifndef CHAPAR_CLIENT_INT_H
#define CHAPAR_CLIENT_INT_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "channel.h"
#include "chapar.h"
#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "proto.h"
#include "ticket.h"

/* Nothing here is part of libchapar's ABI: the shared library exports chapar.h only. */
#pragma GCC visibility push(hidden)

struct chapar_client {
        struct chp_channel *ch; /* NULL until connected */
        int timeout_ms;
        atomic_int cancel; /* chapar_cancel: from a signal handler or another thread */
        char addr[300]; /* HOST:PORT as given */
        bool plaintext; /* asked for --insecure-plaintext */
        bool have_pinned;
        uint8_t pinned[CHP_KEY_BYTES];
        uint8_t relay_key[CHP_KEY_BYTES]; /* what the relay proved it holds */
        char known_relays[4096];
        char cache_dir[4096]; /* "" = no cache */
        char token[CHP_TOKEN_MAX + 1]; /* sent in HELLO; "" = none */
        struct chp_msg_hello_ok hello;
        uint32_t last_code;
        char last_error[1024];
        struct chapar_transport transport;  /* chapar_set_transport's, defaults filled in */
        char congestion[CHAPAR_CC_MAX];     /* transport.congestion points here */
        struct chapar_transfer_stats stats; /* of the last put or get */
};

/* Opens c->ch to c->addr (XX, c->pinned if have_pinned; or plaintext) and fills relay_key and
 * hello. */
int cc_open(struct chapar_client *c);
/* Starts c->stats for a transfer on c->ch: one connection, nothing resent, the congestion
 * control its socket runs. */
void cc_stats_begin(struct chapar_client *c);
/* Another connection to c's relay for the same transfer (a stripe, or one made again after a
 * cut): c's token and congestion control, and the key the relay proved on c->ch (which must be
 * open) pinned. *out is the caller's to close (chp_channel_close); on failure it is NULL and
 * c->last_error says why. Any thread, as long as no other thread changes c. */
int cc_open_extra(struct chapar_client *c, struct chp_channel **out);
/* cc_open_extra in two steps, so that connections of one transfer can handshake at the same
 * time: cc_dial_prepare copies what a connection needs from c (the caller keeps c from changing
 * meanwhile, e.g. under its lock); cc_dial then touches no client (any thread; the copy's token
 * is wiped), and why (cap bytes) says what went wrong. The client's cancel flag still stops it. */
struct cc_dial {
        char addr[300];
        char token[CHP_TOKEN_MAX + 1];
        char congestion[CHAPAR_CC_MAX];
        bool plaintext, connected;
        uint8_t key[CHP_KEY_BYTES];
        int timeout_ms;
        const atomic_int *cancel;
};
void cc_dial_prepare(const struct chapar_client *c, struct cc_dial *d);
int cc_dial(struct cc_dial *d, struct chp_channel **out, char *why, size_t cap);
/* Milliseconds to wait before reconnect attempt number attempt (0, 1, ...): exponential from
 * 200 ms up to 5 s, with jitter (a uniform draw in the upper half), so that the clients a cut
 * dropped together do not come back together. */
uint32_t cc_backoff_ms(uint32_t attempt);
/* The public code for a channel's code rc (common/err.h; CHAPAR_ENET for the network's: reset,
 * timeout, EOF, refused), remote_code being the wire code of the ERROR frame behind a
 * CHP_EREMOTE. Touches no client: any thread (put.c's connections classify their cuts with it). */
int cc_code(int rc, uint32_t remote_code);
/* The adaptive connection count of a put or get (struct chapar_transport's connections = 0): it
 * starts with CC_ADAPT_FIRST, measures the transfer's rate over each interval (CC_ADAPT_MIN_S, or
 * 4 round trips when longer) from the moment the last added connection is open, and adds one
 * while the last one raised the rate by CC_ADAPT_GAIN, up to CHAPAR_CONNECTIONS_MAX and to half
 * the chunks left; once an addition did not pay, it stays. The coordinating thread's state. */
#define CC_ADAPT_FIRST 2
#define CC_ADAPT_GAIN  1.10
#define CC_ADAPT_MIN_S 0.5
struct cc_adapt {
        bool on;     /* still adding */
        double t0;   /* the interval's start ... */
        uint64_t b0; /* ... and the bytes done then */
        double last; /* the rate of the interval before the last addition; 0: none yet */
};
/* Whether adding connections can pay under the congestion control the kernel runs on them: a
 * loss-based one (cubic, reno) halves a flow's rate at each random loss, so more flows fill a
 * lossy link; BBR paces each flow at the rate it measures, and more BBR flows only overfill the
 * bottleneck's queue (the link lab: 5 flows took 1.35x one's time on good-4g, 1.55x on long).
 * Then an adapting put keeps the CC_ADAPT_FIRST it starts with. (Not for a get: the relay
 * sends, and the client cannot see the algorithm the relay's side runs.) */
bool cc_adapt_pays(const char *congestion);
/* Starts measuring at now with bytes done; on: connections = 0 (for a put, and cc_adapt_pays). */
void cc_adapt_init(struct cc_adapt *a, bool on, double now, uint64_t bytes);
/* Whether to add a connection now: pending when an added one is not open yet (the interval
 * restarts), open the connections there are, left the chunks still to move, rtt_s the path's
 * round trip (0 unknown). The caller that cannot add one after true calls cc_adapt_stop. */
bool cc_adapt_step(struct cc_adapt *a, double now, uint64_t bytes, bool pending, uint32_t open,
                   uint64_t left, double rtt_s);
void cc_adapt_stop(struct cc_adapt *a);
/* Closes c->ch. */
void cc_shutdown(struct chapar_client *c);

/* A frame of header + a + b. */
int cc_send(struct chapar_client *c, uint8_t type, uint32_t id, const void *a, size_t alen,
            const void *b, size_t blen);
/* The next frame; its payload is valid until the next receive. ERROR frames fill last_code and
 * last_error and are returned like any other frame. */
int cc_recv(struct chapar_client *c, struct chp_frame_header *h, uint8_t **payload);
/* A request and its reply; an ERROR reply becomes CHAPAR_ERELAY (CHAPAR_ENOTFOUND for
 * NOT_FOUND). */
int cc_call(struct chapar_client *c, uint8_t type, const void *p, size_t len,
            struct chp_frame_header *h, uint8_t **payload);
/* The public code of the ERROR frame cc_recv returned last (CHAPAR_ERELAY, or CHAPAR_ENOTFOUND
 * for NOT_FOUND). */
int cc_remote_error(struct chapar_client *c);
/* Reserves n request ids for pipelined requests; returns the first. */
uint32_t cc_reserve_ids(struct chapar_client *c, uint32_t n);

/* Creates path and its missing parents with mode: 0 or -errno. */
int cc_mkdir_p(const char *path, mode_t mode);
/* The known-relays file and the cache directory: given, else their defaults (chapar.h). */
void cc_known_relays_path(const char *given, char *out, size_t cap);
void cc_cache_path(const char *given, char *out, size_t cap);

/* The key-cache entry for this content (keycache.c): fills key and, when the entry has one, the
 * sealed metadata blob of the last put (cap bytes at most) and returns the blob's length, 0 if
 * none; or a negative CHAPAR_E* code. With no usable entry, key is a fresh random key and entry
 * (the path to store to, entry_cap bytes) is prepared; entry is "" when there is no cache or the
 * entry there is refused (not ours, others may read it, a link: a "warning: ..." in
 * c->last_error). An expired entry is deleted. */
ssize_t cc_keycache_find(struct chapar_client *c, const uint8_t plain_hash[CHP_HASH_BYTES],
                         uint32_t chunk_size, bool pad, uint8_t key[CHP_FILE_KEY_BYTES],
                         uint8_t *blob, size_t cap, char *entry, size_t entry_cap);
/* The name put.c gives a file's content in the key cache (the plain_hash of cc_keycache_find) at
 * this chunk size and padding, reading fd from offset 0: what `chapar forget FILE` looks up. */
int cc_content_id(int fd, uint32_t chunk_size, bool pad, uint8_t out[CHP_HASH_BYTES]);
/* Writes key and blob to entry atomically (temporary file 0600, fsync, rename); does nothing
 * when entry is "" and leaves no trace when the write fails. Called twice by a put: before the
 * chunks go, with file_id NULL (the entry lives expires_in seconds, or the relay's default
 * upload lifetime, long enough to resume a cut put), and once the relay has the whole file, with
 * its file_id (the entry lives as long as the relay keeps the file: STAT's expiry, asked of the
 * relay here, so nothing may be in flight on c). */
void cc_keycache_store(struct chapar_client *c, const char *entry,
                       const uint8_t key[CHP_FILE_KEY_BYTES], const uint8_t *blob, size_t len,
                       const uint8_t *file_id, uint32_t expires_in);

/* The file name the sender's name becomes (get.c), written to out (cap > CC_SAFE_NAME_MAX): its
 * last path component ('/' or '\\'), controls, invalid UTF-8 and the characters Windows refuses
 * turned into '_', leading dots into '_', leading spaces and trailing dots and spaces dropped, a
 * Windows device name prefixed with '_', the dot before a partial file's own ending
 * (".chapar-part", ".chapar-part.state", ".chapar-part.state.tmp", any case) turned into '_',
 * "chapar-download" for what is left empty, and with n > 0 " (n)" before the extension; cut to
 * CC_SAFE_NAME_MAX bytes at a character boundary, the extension (at most 32 bytes; ".tar.gz"
 * is one) kept. Only a name's first 4 KiB is read.
 * Returns the length, or -EINVAL for a cap too small or n > CC_SAFE_NAME_TRIES. */
#define CC_SAFE_NAME_MAX   255
#define CC_SAFE_NAME_TRIES 999
int cc_safe_name(const char *sender, unsigned n, char *out, size_t cap);

/* A file's manifest as the relay sent it (query.c). Owns manifest and present; m points into
 * manifest. Freed with cc_fetched_free. */
struct cc_fetched {
        uint8_t *manifest;
        size_t len;
        struct chp_manifest m;
        bool complete;
        uint8_t *present; /* PARTIAL: chunks stored so far */
};

/* GET_MANIFEST for t's file into f (zeroed by the caller), checked against the file id: a relay
 * cannot substitute another manifest (CHAPAR_EINTEGRITY). When the connected relay is not the
 * ticket's origin, the origin is named, so that a relay peering with it fetches the file; while
 * it does, the call waits (up to the client's timeout, cancelable). f is freed with
 * cc_fetched_free whatever this returns. */
int cc_fetch_manifest(struct chapar_client *c, const struct chp_ticket *t, struct cc_fetched *f);
/* Frees what f owns and zeroes it; a zeroed f is a no-op. */
void cc_fetched_free(struct cc_fetched *f);

#ifdef CHAPAR_TEST_HOOKS
/* Test builds of libchapar only (tests/CMakeLists.txt builds one with -DCHAPAR_TEST_HOOKS; the
 * shipped library has none of this): calls put.c makes so that a test can change the file
 * between its passes and watch every seal and every chunk sent. Set by the test before a put,
 * never during one. NULL members are not called. */
struct cc_put_hooks {
        void *ctx;
        /* After pass 1 (the plaintext hashed, the key chosen) and pass 2 (every chunk sealed and
         * addressed; before OPEN), on the calling thread. */
        void (*between)(void *ctx, int pass);
        /* Every chunk sealed (plain: len bytes, sealed: sealed_len), from any thread: the
         * callback serialises itself. */
        void (*sealed)(void *ctx, const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                       const uint8_t *plain, size_t len, const uint8_t *sealed, size_t sealed_len);
        /* The encoded manifest OPEN carries (calling thread), then every chunk as it is sent
         * (its connection's thread; put.c calls one at a time). */
        void (*manifest)(void *ctx, const uint8_t *manifest, size_t len);
        void (*sent)(void *ctx, uint64_t index, const uint8_t *bytes, size_t len);
        uint64_t keep_budget; /* ciphertext bytes kept from pass 2 for sending; 0 = the default */
};
extern struct cc_put_hooks cc_put_hooks;
#endif

#pragma GCC visibility pop

#endif
