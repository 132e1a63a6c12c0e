/* loop.h — one io_uring event loop per thread, and the state all loops share.
 *
 * A loop owns a ring (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has them), a provided-buffer
 * ring for headers and small frames, a listening socket (SO_REUSEPORT, one per loop) with a
 * multishot accept, and the connections it accepted. Store completions reach it through a queue
 * and an eventfd. chp_loop_run returns once the shared stop flag is set and every connection is
 * closed or parked. Each loop is created, run and destroyed by one thread; only chp_loop_post may
 * be called from other threads.
 */
#ifndef CHP_LOOP_H
#define CHP_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "store.h"

#define CHP_COMMIT_BUCKETS 11
extern const double chp_commit_buckets[CHP_COMMIT_BUCKETS]; /* seconds, upper bounds */

struct chp_peers;
struct conn;

/* Why the loop refused or closed connections, for /metrics (chp_loop_metrics). */
enum chp_accept_err { CHP_ACCEPT_EMFILE, CHP_ACCEPT_ENFILE, CHP_ACCEPT_NOMEM, CHP_ACCEPT_OTHER,
                      CHP_ACCEPT_NREASONS };
enum chp_close_reason {
        CHP_CLOSE_IDLE,              /* idle_timeout */
        CHP_CLOSE_STALLED,           /* io_timeout: no byte moved mid-frame or mid-send */
        CHP_CLOSE_HANDSHAKE_TIMEOUT, /* handshake_timeout */
        CHP_CLOSE_HEADER_TIMEOUT,    /* header_timeout */
        CHP_CLOSE_SLOW_BODY,         /* under min_body_rate */
        CHP_CLOSE_CAP,               /* refused: over max_connections */
        CHP_CLOSE_NO_FDS,            /* refused: out of file descriptors (busy reply) */
        CHP_CLOSE_NREASONS
};

struct chp_shared {
        /* The running configuration: an immutable snapshot that a reload (SIGHUP) replaces with
         * another. Read it afresh in each callback and never keep the pointer, or a string in
         * it, past the callback that read it: the old snapshot is freed once every loop has
         * passed a point between callbacks (see relay.c). */
        _Atomic(const struct chp_config *) cfg;
        struct chp_store *store;      /* borrowed */
        const struct chp_identity *identity; /* the relay's static key, borrowed */
        struct chp_peers *peers;             /* federation (server/peer.h) */
        atomic_int *stop; /* set by the main thread (SIGINT, SIGTERM) or by a loop that failed */
        atomic_uint_fast64_t mem_used; /* bytes of chunk and frame buffers across loops */
        atomic_uint conns;             /* open connections across loops */
        atomic_bool fds_warned;        /* max_connections was clamped and that was logged */
        /* the one body granted past memory_limit (at most its own frame), so that bodies
         * waiting on each other for memory always finish (loop.c: mem_grant) */
        _Atomic(struct conn *) mem_owner;
        atomic_uint mem_waiting;       /* connections waiting for memory, across loops */
        atomic_uint_fast64_t accept_errors[CHP_ACCEPT_NREASONS];
        atomic_uint_fast64_t closed[CHP_CLOSE_NREASONS];
        /* counters, read by metrics */
        atomic_uint_fast64_t bytes_in, bytes_out; /* on native connections, on the wire */
        atomic_uint_fast64_t http_bytes_in, http_bytes_out; /* on HTTP connections */
        atomic_uint_fast64_t chunks_stored, chunks_dedup, frames_bad;
        atomic_uint_fast64_t http_requests, uploads_active;
        atomic_uint_fast64_t errors[16];       /* by wire error code (native) */
        atomic_uint_fast64_t http_status[6];   /* by status class: 1xx..5xx (index 1..5) */
        /* commit latency: chunk submitted to the writer -> acknowledged */
        atomic_uint_fast64_t commit_le[CHP_COMMIT_BUCKETS]; /* cumulative, per bucket */
        atomic_uint_fast64_t commit_count, commit_sum_us;
        /* uploads with a request streaming into them: the tus face's (faces/tus.h) */
        struct chp_tus_claims *tus_claims;
};

struct chp_loop;
struct chp_tus_claims;

/* Creates a loop serving the native listening socket and the HTTP one (-1: none); both taken
 * over. */
__attribute__((warn_unused_result)) int chp_loop_create(struct chp_shared *sh, int native_fd,
                                                        int http_fd,
                                                        struct chp_loop **out /* out */);
/* Runs until stop; returns 0 or a negative code for a fatal ring error. */
int chp_loop_run(struct chp_loop *l);
/* Frees the loop and every connection left; the store must be closed first, so that no store
 * completion can still arrive. NULL is a no-op. */
void chp_loop_destroy(struct chp_loop *l);

/* Counts one chunk acknowledgement that took from since_us (chp_now_us) to now. Any thread. */
void chp_observe_commit(struct chp_shared *sh, uint64_t since_us);
uint64_t chp_now_us(void);

/* Appends the loop's metrics (Prometheus text: refused and closed connections by reason, accept
 * errors, the memory budget) at buf[*len], up to cap bytes; *len grows by what fit. Any thread. */
void chp_loop_metrics(struct chp_shared *sh, char *buf, size_t cap, size_t *len);

/* Opens a TCP listening socket on host:port (port 0 = any); *bound_port gets the port it bound.
 * A face's sockets (one per loop) share the address through SO_REUSEPORT, which Linux lets any
 * process of the same user join; so the face's first socket (first true) is made to listen
 * without it and fails with -EADDRINUSE when anyone else listens there, and the others (first
 * false, same port) join it. Then no other chapard can share the address. */
__attribute__((warn_unused_result)) int chp_listen(const char *host, uint16_t port, bool first,
                                                   int *fd /* out */, uint16_t *bound_port /* out */);

#endif
