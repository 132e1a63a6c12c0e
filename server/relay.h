/* relay.h — chapard as a whole: the store, one event loop per thread, the ready file, periodic
 * GC, and a graceful stop.
 *
 * chp_relay_run returns when *stop becomes nonzero (the signal handler sets it) and every loop
 * has finished or parked its in-flight work; 0 on a clean stop, a negative code when start-up
 * failed (after logging what failed). Main thread only.
 */
#ifndef CHP_RELAY_H
#define CHP_RELAY_H

#include <signal.h>

#include "config.h"

int chp_relay_run(const struct chp_config *cfg, volatile sig_atomic_t *stop);

#endif
