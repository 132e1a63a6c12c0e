/* secure.h — the transport under the native protocol on a relay connection: the preamble, the
 * Noise handshake as responder, and the record layer (see secure.c for the diagram).
 *
 * The loop drives it only through chp_secure_transport (conn.h's struct chp_transport_ops):
 * bytes received go in, plaintext comes out through conn_deliver, handshake replies and sealed
 * records are queued as wire items. The state hangs off c->sec, freed by its detach. Loop
 * thread only; errors are negative codes after which the connection is closed.
 */
#ifndef CHP_SECURE_H
#define CHP_SECURE_H

#include "conn.h"

/* The native face's transport (proto_ops.transport). */
extern const struct chp_transport_ops chp_secure_transport;

/* The configured peer this connection authenticated as (Noise IK), or -1 (also before the
 * handshake is done, and on a plaintext connection). */
int secure_peer(const struct conn *c);

#endif
