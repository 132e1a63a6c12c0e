/* secure.h — the transport under the native protocol on a relay connection: the preamble, the
 * Noise handshake as responder, and the record layer (see secure.c for the diagram).
 *
 * Bytes received go in through secure_input (or straight into the raw buffer via
 * secure_recv_space + secure_received); plaintext comes out into the body the protocol waits
 * for, then c->in. Handshake replies are queued as wire items. Loop thread only; errors are
 * negative codes after which the connection is closed.
 */
#ifndef CHP_SECURE_H
#define CHP_SECURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;
struct secure;

/* For protocols that run inside the transport (ops->secure); others get c->sec NULL and every
 * function below passes bytes straight through. -ENOMEM */
int secure_attach(struct conn *c);
void secure_detach(struct conn *c);

/* The client asked for (and was granted) no transport encryption. */
bool secure_plaintext(const struct conn *c);
/* The handshake is done: frames travel in records. */
bool secure_records(const struct conn *c);
/* The configured peer this connection authenticated as (Noise IK), or -1. */
int secure_peer(const struct conn *c);
/* The preamble or the Noise handshake is not done yet (handshake_timeout runs). */
bool secure_handshaking(const struct conn *c);
/* A preamble, handshake or record is under way: the peer owes bytes. */
bool secure_pending(const struct conn *c);

int secure_input(struct conn *c, const uint8_t *p, size_t n);
/* Room to receive straight into while a body is arriving over records (NULL: use the provided
 * buffers); then secure_received with the count. */
uint8_t *secure_recv_space(struct conn *c, size_t *len /* out */);
int secure_received(struct conn *c, size_t n);

/* Seals n plaintext bytes as records into out (chp_record_sealed_size(n) bytes); returns the
 * length written. */
ssize_t secure_seal(struct conn *c, const uint8_t *plain, size_t n, uint8_t *out, size_t cap);
/* Queues the explicit close record (records only). */
void secure_close_record(struct conn *c);

#endif
