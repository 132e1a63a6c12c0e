/* relay_client.h — a relay process under test (start on port 0 with a ready file, stop with a
 * signal), and the native protocol client the tests drive it with (bench/native_client.h).
 * The calling thread owns the relay; errors are negative errnos (-ECHILD: it exited early).
 */
#ifndef CHP_RELAY_CLIENT_H
#define CHP_RELAY_CLIENT_H

#include <stdbool.h>
#include <sys/types.h>

#include "native_client.h"

/* ---- a relay under test ------------------------------------------------------------------ */

struct rc_relay {
        pid_t pid;
        char dir[256];       /* temp dir: data/ and ready */
        char addr[128];      /* host:port of the native face */
        char pubkey[72];     /* the relay's public key, hex */
        bool encrypted_only; /* start without --insecure-plaintext */
        char chapard[512];
};
/* Starts chapard (path from $CHAPARD) in a new temp dir (or reusing r->dir when reuse), extra
 * arguments appended; waits for its ready file. */
int rc_relay_start(struct rc_relay *r, bool reuse, const char *const *extra);
/* Sends sig and waits; returns the exit status (or -1). */
int rc_relay_stop(struct rc_relay *r, int sig);
/* Removes the temp dir. */
void rc_relay_cleanup(struct rc_relay *r);

#endif
