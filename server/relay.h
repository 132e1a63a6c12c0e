/* relay.h — chapard as a whole: the store, one event loop per thread, the ready file, periodic
 * GC, reloads, and a graceful stop.
 *
 * chp_relay_run blocks SIGHUP, SIGUSR1, SIGINT and SIGTERM in the calling thread before it
 * starts any thread (so every thread inherits the mask; they stay blocked when it returns) and
 * takes them on the main thread: SIGINT and SIGTERM set *stop; SIGHUP reloads (src->load, then
 * what can change while running is applied: log level, limits, timeouts, peers; the rest is kept
 * and named in the log); SIGHUP and SIGUSR1 reopen the access log (--access-log). It returns when
 * *stop becomes nonzero (a signal, a loop's fatal error, or the caller) and every loop has finished
 * or parked its in-flight work: 0 on a clean stop, a negative code when start-up failed (after
 * logging what failed) or a loop failed. Once it listens it writes the ready file and tells
 * systemd READY=1 (notify.h); the ready file is removed on every return.
 * Main thread only.
 */
#ifndef CHP_RELAY_H
#define CHP_RELAY_H

#include <signal.h>
#include <stdatomic.h>

#include "config.h"

/* Where a reload reads the configuration from: load fills out (zeroed) exactly as at start-up
 * (defaults, the --config file, the flags, chp_config_finish) and returns 0, or a negative code
 * with a message in err; out is the relay's to free either way. */
struct chp_relay_source {
        int (*load)(void *ctx, struct chp_config *out, char err[CHP_CONFIG_ERR_MAX]);
        void *ctx;
        const char *file; /* the --config file, for messages; NULL without one */
};

/* Blocks SIGHUP, SIGUSR1, SIGINT and SIGTERM in the calling thread (set gets them). chp_relay_run
 * does it itself; a caller that reads its configuration first calls it earlier, so a SIGHUP during
 * start-up waits for the relay instead of killing it. */
void chp_relay_block_signals(sigset_t *set /* out */);

/* cfg is borrowed for the whole run (a reload replaces what the loops see, never cfg itself). */
int chp_relay_run(const struct chp_config *cfg, const struct chp_relay_source *src,
                  atomic_int *stop);

#endif
