/* client_int.h — libchapar's internals shared by its files: the client struct and the
 * connection layer (conn.c). Not installed. One thread per client.
 */
#ifndef CHAPAR_CLIENT_INT_H
#define CHAPAR_CLIENT_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chapar.h"
#include "noise.h"
#include "proto.h"
#include "record.h"

#define CC_PREAMBLE     8
#define CC_REFUSED      1 /* internal: the relay refused the offered suite */
#define CC_PROLOGUE_MAX 32

struct chapar_client {
        int fd;
        int timeout_ms;
        volatile sig_atomic_t cancel;
        char addr[300]; /* HOST:PORT as given */
        bool plaintext; /* asked for --insecure-plaintext */
        bool encrypted; /* the handshake is done */
        bool have_pinned;
        bool ik; /* relay to relay: Noise IK with ik_priv */
        uint8_t ik_priv[CHAPAR_KEY_BYTES];
        uint8_t pinned[CHAPAR_KEY_BYTES];
        uint8_t relay_key[CHAPAR_KEY_BYTES]; /* what the relay proved it holds */
        char known_relays[4096];
        char cache_dir[4096]; /* "" = no cache */
        struct chp_record_dir tx, rx;
        uint8_t *raw; /* bytes from the socket not yet decrypted */
        size_t raw_len, raw_cap;
        uint8_t *plain; /* decrypted frame stream not yet consumed */
        size_t plain_len, plain_off, plain_cap;
        uint8_t *seal_buf; /* one record being sealed */
        uint32_t next_id;
        struct chp_msg_hello_ok hello;
        uint32_t last_code;
        char last_error[1024];
};

/* The prologue for a preamble; returns its length. */
size_t cc_prologue(const uint8_t pre[CC_PREAMBLE], uint8_t out[CC_PROLOGUE_MAX]);

/* TCP connect, handshake (or the plaintext preamble) and HELLO. */
int cc_open(struct chapar_client *c);
void cc_shutdown(struct chapar_client *c);

/* For a relay fetching from a peer (server/peer.c): connects to addr with Noise IK, this relay's
 * static private key my_priv and the peer's key pinned, then HELLO. Caller frees *out with
 * chapar_close (also after a failure, for chapar_last_error). */
int cc_connect_peer(const char *addr, const uint8_t peer_key[CHAPAR_KEY_BYTES],
                    const uint8_t my_priv[CHAPAR_KEY_BYTES], int timeout_ms,
                    struct chapar_client **out);

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

#endif
