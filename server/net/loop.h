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

struct chp_alog;
struct chp_gate;
struct chp_limits;
struct chp_metrics;
struct chp_peers;
struct conn;

/* The federation's peers as the transport sees them: find returns the index of the peer whose
 * static key is `key`, or -1; count returns how many peers are configured. */
struct chp_peer_directory {
        int (*find)(const struct chp_peers *p, const uint8_t key[CHP_KEY_BYTES]);
        int (*count)(const struct chp_peers *p);
};

struct chp_shared {
        /* The running configuration: an immutable snapshot that a reload (SIGHUP) replaces with
         * another. Read it afresh in each callback and never keep the pointer, or a string in
         * it, past the callback that read it: the old snapshot is freed once every loop has
         * passed a point between callbacks (see relay.c). */
        _Atomic(const struct chp_config *) cfg;
        struct chp_store *store;             /* borrowed */
        const struct chp_identity *identity; /* the relay's static key, borrowed */
        struct chp_peers *peers;             /* federation (server/peer/peer.h), opaque here */
        /* Who may open a relay-to-relay (IK) handshake, asked through functions so that the
         * transport does not depend on the federation module above it; NULL: no federation */
        const struct chp_peer_directory *peer_dir;
        atomic_int *stop; /* set by the main thread (SIGINT, SIGTERM) or by a loop that failed */
        atomic_uint_fast64_t mem_used; /* bytes of chunk and frame buffers across loops */
        atomic_uint conns;             /* open connections across loops */
        atomic_bool fds_warned;        /* max_connections was clamped and that was logged */
        /* the one body granted past memory_limit (at most its own frame), so that bodies
         * waiting on each other for memory always finish (conn.c: mem_grant) */
        _Atomic(struct conn *) mem_owner;
        atomic_uint mem_waiting;     /* connections waiting for memory, across loops */
        struct chp_metrics *metrics; /* counters (net/metrics.h), borrowed */
        struct chp_gate *gate;       /* callers, tokens, budgets (conf/gate.h), borrowed */
        /* limits per client address and subject (conf/client_limits.h), borrowed; NULL: none */
        struct chp_limits *limits;
        /* the access log (net/accesslog.h), borrowed; NULL: off */
        struct chp_alog *alog;
        /* the TCP congestion control chosen at start (net/congestion.h), borrowed; NULL: the
         * system's default, not reported */
        const struct chp_congestion *congestion;
};

struct chp_congestion;
struct chp_loop;

struct proto_ops;

/* What one listening socket serves: its connections run the face `ops` (borrowed; static). */
struct chp_listener_spec {
        int fd; /* taken over; -1: none */
        const struct proto_ops *ops;
        void *face; /* the face's state shared by its connections (borrowed), c->face */
};

/* Creates a loop serving the listening sockets in lis (at most CHP_LOOP_LISTENERS; every fd
 * taken over, also on failure). The loop knows faces only through their ops tables. */
#define CHP_LOOP_LISTENERS 2
__attribute__((warn_unused_result)) int chp_loop_create(struct chp_shared *sh,
                                                        const struct chp_listener_spec *lis,
                                                        size_t n, struct chp_loop **out /* out */);
/* Runs until stop; returns 0 or a negative code for a fatal ring error. */
int chp_loop_run(struct chp_loop *l);
/* Frees the loop and every connection left; the store must be closed first, so that no store
 * completion can still arrive. NULL is a no-op. */
void chp_loop_destroy(struct chp_loop *l);

#endif
