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
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "store.h"

struct chp_shared {
        const struct chp_config *cfg; /* borrowed */
        struct chp_store *store;      /* borrowed */
        const struct chp_identity *identity; /* the relay's static key, borrowed */
        volatile sig_atomic_t *stop;  /* set by the signal handler */
        atomic_uint_fast64_t mem_used; /* bytes of chunk and frame buffers across loops */
        atomic_uint conns;             /* open connections across loops */
        /* counters, read by metrics */
        atomic_uint_fast64_t bytes_in, bytes_out, chunks_stored, chunks_dedup, frames_bad;
};

struct chp_loop;

/* Creates a loop serving the listening socket listen_fd (taken over). */
__attribute__((warn_unused_result)) int chp_loop_create(struct chp_shared *sh, int listen_fd,
                                                        struct chp_loop **out /* out */);
/* Runs until stop; returns 0 or a negative code for a fatal ring error. */
int chp_loop_run(struct chp_loop *l);
/* Frees the loop and every connection left; the store must be closed first, so that no store
 * completion can still arrive. NULL is a no-op. */
void chp_loop_destroy(struct chp_loop *l);

/* Opens a TCP listening socket on host:port (port 0 = any) with SO_REUSEPORT; *bound_port gets
 * the port it bound. */
__attribute__((warn_unused_result)) int chp_listen(const char *host, uint16_t port,
                                                   int *fd /* out */, uint16_t *bound_port /* out */);

#endif
