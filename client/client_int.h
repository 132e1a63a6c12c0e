/* client_int.h — libchapar's internals shared by its files: the client struct and its link to
 * the relay (link.c), a chp_channel whose err.h codes become CHAPAR_E* codes and whose messages
 * land in last_error. Not installed. One thread per client.
 */
#ifndef CHAPAR_CLIENT_INT_H
#define CHAPAR_CLIENT_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "chapar.h"
#include "proto.h"

/* Nothing here is part of libchapar's ABI: the shared library exports chapar.h only. */
#pragma GCC visibility push(hidden)

struct chapar_client {
        struct chp_channel *ch; /* NULL until connected */
        int timeout_ms;
        volatile sig_atomic_t cancel;
        char addr[300]; /* HOST:PORT as given */
        bool plaintext; /* asked for --insecure-plaintext */
        bool have_pinned;
        uint8_t pinned[CHP_KEY_BYTES];
        uint8_t relay_key[CHP_KEY_BYTES]; /* what the relay proved it holds */
        char known_relays[4096];
        char cache_dir[4096]; /* "" = no cache */
        struct chp_msg_hello_ok hello;
        uint32_t last_code;
        char last_error[1024];
};

/* Opens c->ch to c->addr (XX, c->pinned if have_pinned; or plaintext) and fills relay_key and
 * hello. */
int cc_open(struct chapar_client *c);
/* Closes c->ch. */
void cc_shutdown(struct chapar_client *c);

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
/* The public code of the ERROR frame cc_recv returned last (CHAPAR_ERELAY, or CHAPAR_ENOTFOUND
 * for NOT_FOUND). */
int cc_remote_error(struct chapar_client *c);
/* Reserves n request ids for pipelined requests; returns the first. */
uint32_t cc_reserve_ids(struct chapar_client *c, uint32_t n);

#pragma GCC visibility pop

#endif
