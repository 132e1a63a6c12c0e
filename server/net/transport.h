/* transport.h — the seam between a connection's socket and the protocol spoken over it.
 *
 * A transport turns received bytes into the protocol's plaintext (handed on with conn_deliver)
 * and seals queued plaintext before it is sent: the Noise preamble, handshake and records for
 * the native face (secure.h's chp_secure_transport), or nothing for HTTP (chp_transport_plain,
 * here). The loop calls a connection's transport only through c->tr; a transport acts on the
 * connection only through conn.h's functions. Loop thread only; an int error is a negative
 * code, after which the loop closes the connection.
 */
#ifndef CHP_TRANSPORT_H
#define CHP_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;

struct chp_transport_ops {
        const char *name;
        int (*attach)(struct conn *c);  /* a new connection: set up c->sec; -ENOMEM */
        void (*detach)(struct conn *c); /* the connection is being freed (also after a failed
                                           attach) */
        /* bytes received into a provided buffer (borrowed for the call) */
        int (*input)(struct conn *c, const uint8_t *p, size_t n);
        /* room to receive straight into while a body arrives, *len bytes at most in one
         * receive (NULL: use the provided buffers), then received() with the count */
        uint8_t *(*recv_space)(struct conn *c, size_t *len /* out */);
        int (*received)(struct conn *c, size_t n);
        /* bytes are the protocol's as they come: a body may be received straight into */
        bool (*plaintext)(const struct conn *c);
        /* queued plaintext is sealed before it is sent (wire items never are) */
        bool (*sealing)(const struct conn *c);
        /* the most that seal() writes for n plaintext bytes */
        size_t (*sealed_size)(size_t n);
        /* seals n plaintext bytes into out (cap bytes, sealed_size(n) suffice); returns the
         * length written */
        ssize_t (*seal)(struct conn *c, const uint8_t *plain, size_t n, uint8_t *out, size_t cap);
        /* queues the explicit end, if the transport has one and has not queued it: whether it
         * did. Called once nothing unsealed is queued (the end is sealed after the last words) */
        bool (*close_record)(struct conn *c);
        bool (*pending)(const struct conn *c);     /* the peer owes transport bytes */
        bool (*handshaking)(const struct conn *c); /* handshake_timeout runs */
};

/* The pass-through: bytes reach the protocol as they come and leave as queued; no state, no
 * handshake, no end record. What a protocol without a transport of its own gets. */
extern const struct chp_transport_ops chp_transport_plain;

#endif
