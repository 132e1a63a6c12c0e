/* conn.h — a connection as the loop drives it, the transport its bytes pass through (Noise or
 * pass-through, struct chp_transport_ops) and the protocol that speaks over it (struct
 * proto_ops). Internal to server/; loop thread only.
 *
 * Input: bytes received go through the transport (transport.h) into c->in, except while the
 * protocol has asked for a body (conn_want_body), when they land straight in the body buffer. After
 * every receive the loop calls the protocol's on_input. Output: replies are queued with conn_out_*
 * and sent in order, one operation in flight at a time; chunk bytes from a segment are spliced from
 * the page cache to the socket or, over records, read through the ring and then sealed (a segment
 * read never blocks the loop thread). Under a byte rate per client address, receives and sends are
 * sized to what its buckets hold, or wait for the loop's tick (conf/client_limits.h).
 * A connection is freed once it is closed and no io_uring or store operation refers to it.
 */
#ifndef CHP_CONN_H
#define CHP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client_limits.h"
#include "loop.h"
#include "net.h"
#include "store.h"
#include "transport.h"

struct out_item;
struct native;
struct secure;

struct conn {
        struct chp_loop *loop;
        struct chp_shared *sh;
        int fd;
        unsigned refs;   /* 1 while open, + 1 per operation in flight (ring or store) */
        bool closing;    /* no more reads; close once output is flushed */
        bool closed;     /* shut down: nothing more is sent */
        bool recv_armed; /* a recv is in flight */
        bool send_armed; /* a send or splice is in flight */
        bool want_buffers; /* the provided-buffer ring ran dry: re-arm recv later */
        /* lingering close: the last words are sent and the write side shut; what the client
         * still sends is read and dropped until it closes too, linger_until or LINGER_MAX */
        bool lingering;
        uint64_t linger_until; /* ms */
        size_t linger_bytes;

        uint8_t *in; /* received bytes not yet consumed */
        size_t in_len, in_cap;
        uint8_t *body; /* when set, receives go here until body_got == body_len */
        size_t body_len, body_got;

        struct out_item *out_head, *out_tail;
        size_t out_bytes; /* queued and not yet sent */
        int pipe[2];      /* for splicing; -1 until first needed */
        size_t pipe_size, pipe_fill;
        /* over records: a slice of a stored chunk being read through the ring to be sealed;
         * the ring owns it while a read is in flight (send_armed) */
        uint8_t *slice;
        size_t slice_len, slice_got;

        uint64_t last_active; /* ms: last request or reply */
        uint64_t last_progress; /* ms: last byte moved while a frame or send was partial */
        uint64_t born;          /* ms: accepted (the handshake deadline counts from here) */
        uint64_t head_since;    /* ms: a head (HTTP head, native frame header) began; 0: none */
        bool replied;           /* something was queued to send: the connection was used */
        /* the body rate floor: bytes received since rate_t0 */
        uint64_t rx_bytes, rate_t0, rate_b0;
        /* the memory budget for the body being received (see conn_mem_settle) */
        size_t mem_held;   /* bytes of sh->mem_used this connection holds, granted or arrived */
        size_t grant_left; /* of which granted and not yet arrived */
        size_t grant_next; /* the next grant (0: the first, small one); kept across bodies */
        bool mem_wait;     /* waiting for the budget to grant more */
        /* the limits per client address (conf/client_limits.h) */
        struct chp_limits_key peer; /* the client's address as they count it (nobody: unknown) */
        int32_t lim_slot;           /* its handle in sh->limits; CHP_LIMITS_NONE: not counted */
        int32_t lim_subject;        /* its token subject's (native HELLO); CHP_LIMITS_NONE: none */
        uint64_t read_wait_until;   /* ms: receives wait for the address's byte rate; 0: none */
        uint64_t send_wait_until;   /* ms: sends wait for it (download_rate_per_address) */
        size_t send_taken;          /* bytes the send armed took from that rate's bucket */
        bool rate_exempt;           /* a configured peer relay (its pinned key): the byte rates per
                                       address do not hold it back (its address still counts connections) */
        bool throttled; /* since the rate floor last looked: the byte rate held receives back */
        /* for the access log: plaintext bytes queued to send (conn_out_reserve, conn_out_splice)
         * and bytes sent on the wire, over the connection's life (rx_bytes: received) */
        uint64_t queued_total, tx_bytes;

        bool want_tick; /* the protocol's on_tick runs at each loop tick while set */

        const struct proto_ops *ops;
        void *face;  /* what the face's connections share (chp_listener_spec.face), borrowed */
        void *proto; /* the protocol's state */
        struct native *nat; /* == proto for native connections */
        const struct chp_transport_ops *tr; /* the transport under the protocol */
        struct secure *sec; /* the Noise transport's state (secure.c); NULL for pass-through */
        struct conn *prev, *next; /* the loop's list */
};

/* Asks for the next len bytes to go straight into buf (already of them are there). Body bytes
 * are charged to the shared memory budget (memory_limit) as they are granted and arrive, never
 * for what a header merely announces: a connection that trickles holds only what it sent. The
 * charge stays with the connection until the protocol takes it over with conn_mem_settle. */
void conn_want_body(struct conn *c, uint8_t *buf, size_t len, size_t already);
/* n bytes landed in the body (the transport's and the loop's receive paths). */
void conn_body_arrived(struct conn *c, size_t n);
/* The protocol takes over the body's buffer as exactly total bytes of the budget (it later
 * subtracts total from sh->mem_used when it frees the buffer): the connection's charge is
 * topped up or refunded to total and then holds nothing. */
void conn_mem_settle(struct conn *c, size_t total);
/* The body's buffer is dropped: its charge goes back to the budget. */
void conn_mem_drop(struct conn *c);
/* Hands received plaintext to the protocol (the transports' output): into the body it is
 * waiting for, the rest appended to c->in. -ENOMEM */
int conn_deliver(struct conn *c, const uint8_t *p, size_t n);
/* Drops the first n bytes of c->in. */
void conn_consume(struct conn *c, size_t n);
/* Appends plaintext to c->in (the transport's output). -ENOMEM */
int conn_in_append(struct conn *c, const uint8_t *p, size_t n);

/* Reserves n bytes at the end of the output queue and returns where to write them; NULL on
 * allocation failure. The bytes go out in queue order. */
uint8_t *conn_out_reserve(struct conn *c, size_t n);
/* Reserves n bytes that go out exactly as written, outside the record layer (handshake
 * messages, sealed records); NULL on allocation failure. */
uint8_t *conn_out_wire(struct conn *c, size_t n);
/* Queues len bytes of a stored chunk (loc taken over: released once sent). The chunk must be
 * in a file (loc->fd >= 0; others are copied with chp_store_read and queued as bytes). Returns
 * 0, -ENOMEM or -EINVAL (no file); on error loc is released here. */
int conn_out_splice(struct conn *c, struct chp_chunk_loc *loc, uint64_t offset, uint32_t len);
/* Starts sending whatever is queued (called by the loop after each protocol callback). */
void conn_flush(struct conn *c);

/* Stops reading; closes once queued output is out (or io_timeout passes). */
void conn_close_after_flush(struct conn *c);
/* Closes now: pending output is dropped. */
void conn_close(struct conn *c);

/* An operation outside the ring (a store request) holds the connection. */
void conn_hold(struct conn *c);
void conn_release(struct conn *c);

/* Whether the connection may read more (the protocol's flow control and the memory budget). */
void conn_maybe_read(struct conn *c);

/* Queues a store request done callback to this connection's loop (any thread). */
void chp_loop_post(struct chp_loop *l, struct chp_store_req *req);

/* ---- the protocols that speak over connections ------------------------------------------ */

/* What a connection speaks: the native protocol or HTTP (their tables are in faces/faces.h). The
 * loop calls these; each protocol keeps its state in c->proto. */
struct proto_ops {
        const char *name;
        bool secure;                          /* runs inside secure.c's transport */
        const struct chp_transport_ops *transport; /* NULL: bytes pass straight through */
        int (*attach)(struct conn *c);        /* a new connection; -ENOMEM */
        void (*detach)(struct conn *c);       /* the connection is being freed */
        void (*on_input)(struct conn *c);     /* new bytes in c->in or the body */
        bool (*can_read)(const struct conn *c); /* flow control */
        bool (*busy)(const struct conn *c);   /* requests in flight or a message half received */
        void (*stop)(struct conn *c);         /* the relay is stopping: take no new requests */
        void (*on_drain)(struct conn *c);     /* the output queue ran low (may be NULL) */
        /* the loop's tick (every 200 ms, and at once when the relay begins to stop, after
         * stop) for an open connection whose protocol set c->want_tick: a request that waits
         * for something outside the connection and the store (a fetch from a peer) looks
         * again; the loop flushes after it. May be NULL. */
        void (*on_tick)(struct conn *c);
        /* sent to a connection refused over the cap or out of descriptors, then closed; NULL:
         * just closed (the native face has no word for "busy" before its handshake -- a
         * handshake refusal would read as "not a chapar relay" and not be retried) */
        const char *busy_reply;
        /* the same for a connection refused over max_connections_per_address; NULL: closed */
        const char *limited_reply;
};

/* Every store request a protocol makes starts with this, so the loop can route its completion:
 * req first (the completion gives back its address), then the connection. */
struct conn_op {
        struct chp_store_req req;
        struct conn *c;
        void (*done)(struct conn_op *op); /* loop thread */
        uint64_t t0;                      /* chp_net_now_us() at submission */
};

/* The store's done callback for a struct conn_op: queues it to the connection's loop. */
void conn_op_done(struct chp_store_req *req);

#endif
