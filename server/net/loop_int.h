/* loop_int.h — what the loop's files share, private to them (net/): the loop structure, the
 * provided-buffer ring's geometry, user_data packing, and the calls by which the event loop
 * (loop.c) hands each completion to the listeners (accept.c) or to a connection's receive side
 * (conn.c) or send side (send.c). Everything here is loop thread only, like the loop itself.
 *
 * user_data packs a pointer (a struct conn, a struct listener or the loop, all 16-byte aligned)
 * with the operation kind in its low four bits; it is built and taken apart only by
 * ud_pack/ud_op/ud_ptr below.
 */
#ifndef CHP_LOOP_INT_H
#define CHP_LOOP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "loop.h"
#include "uring_compat.h"

#define BUF_COUNT 512 /* provided buffers per loop (power of two) */
#define BUF_SIZE  (16 * 1024)
#define BUF_GROUP 0

enum op {
        OP_ACCEPT = 1,
        OP_RECV,
        OP_SEND,
        OP_SPLICE_IN,  /* segment file -> pipe */
        OP_SPLICE_OUT, /* pipe -> socket */
        OP_WAKE,       /* eventfd: store completions queued */
        OP_TICK,
        OP_READ, /* segment file -> c->slice, to be sealed */
};

/* A listening socket and what its connections speak. */
struct listener {
        int fd;
        bool armed;
        const struct proto_ops *ops;
        void *face;
        uint64_t paused_until; /* ms: accept failed; not re-armed before this */
        unsigned pause_ms;     /* the current back-off, 0 after a success */
} __attribute__((aligned(16)));

#define MAX_LISTENERS CHP_LOOP_LISTENERS

struct chp_loop {
        struct chp_shared *sh;
        struct listener lis[MAX_LISTENERS];
        struct io_uring ring;
        bool ring_ok;
        struct io_uring_buf_ring *br;
        uint8_t *bufs;
        int wake_fd;
        uint64_t wake_val;
        bool wake_armed, tick_armed;
        struct __kernel_timespec tick_ts;

        pthread_mutex_t done_lock;
        struct chp_store_req *done_head, *done_tail;

        struct conn *conns; /* all open or closing connections */
        unsigned nconns;
        unsigned want_buffers; /* connections waiting for provided buffers */
        bool stopping;
        uint64_t stop_deadline;
        uint64_t last_sweep;
        unsigned fd_conns;      /* connections the descriptor limit allows */
        int reserve_fd;         /* given up to answer "busy" when descriptors run out */
        uint64_t accept_log_at; /* ms: last accept-failure warning */
        unsigned accept_fails;  /* since then */
} __attribute__((aligned(16)));

/* ---- user_data --------------------------------------------------------------------------- */

static inline uint64_t ud_pack(const void *p, enum op op)
{
        return (uint64_t)(uintptr_t)p | (uint64_t)op;
}

static inline enum op ud_op(uint64_t ud)
{
        return (enum op)(ud & 15);
}

static inline void *ud_ptr(uint64_t ud)
{
        return (void *)(uintptr_t)(ud & ~(uint64_t)15);
}

/* The next SQE, submitting what is queued when the ring is full; NULL only if the kernel
 * refuses to take submissions (the caller then arms nothing, and a later pass tries again). */
static inline struct io_uring_sqe *get_sqe(struct chp_loop *l)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
        if (!sqe) {
                io_uring_submit(&l->ring);
                sqe = io_uring_get_sqe(&l->ring);
        }
        return sqe;
}

/* ---- accept.c: the listeners ------------------------------------------------------------- */

/* Arms the multishot accept of every listener not armed, stopping or backing off. */
void chp_loop_arm_accept(struct chp_loop *l);
/* Whether an accept is still in flight (the loop ends only once none is). */
bool chp_loop_any_accept_armed(const struct chp_loop *l);
/* An accept completion: a new connection (or a refusal), or a failure that pauses li. */
void chp_loop_on_accept(struct chp_loop *l, struct listener *li, struct io_uring_cqe *cqe);
/* How many connections the descriptor limit leaves room for (raising the soft limit first). */
unsigned chp_loop_fd_budget(struct chp_shared *sh);

/* ---- conn.c: a connection's receive side and lifetime ------------------------------------ */

/* A receive completed (OP_RECV): the bytes go through the transport to the protocol. */
void conn_on_recv(struct conn *c, struct io_uring_cqe *cqe);
/* Starts or ends the head deadline (header_timeout) as the connection enters or leaves a head. */
void conn_head_track(struct conn *c, uint64_t now);
/* The last words are sent: closes, or for plaintext lingers (reads and drops) first. */
void conn_finish(struct conn *c);
/* Output went out (send.c): frames the face left in c->in while its output was full are offered
 * to it again if it can take them now, then the connection writes and reads as it may. */
void conn_output_moved(struct conn *c);
/* The byte rate of the connection's client address, for receives (send false:
 * upload_rate_per_address) or sends (download_rate_per_address): how much of want the next one
 * may move now; 0: none, and the connection waits until read_wait_until or send_wait_until (the
 * loop's tick tries again). Without that rate, or for an address not counted, want, at the cost
 * of one field's check. A send's bytes are taken from the bucket at once (c->send_taken); the
 * send's completion gives back what it did not move (conn_rate_refund). */
size_t conn_rate_room(struct conn *c, bool send, size_t want);
/* n bytes were received: charged to the address's receive rate. */
void conn_rate_charge(struct conn *c, size_t n, uint64_t now);
/* The send that took c->send_taken moved `moved` bytes (0: none, or it was never armed): the
 * rest goes back to the address's bucket. */
void conn_rate_refund(struct conn *c, size_t moved);

/* ---- send.c: a connection's send side ---------------------------------------------------- */

/* A send or splice completed (OP_SEND, OP_SPLICE_IN, OP_SPLICE_OUT). */
void conn_on_send(struct conn *c, struct io_uring_cqe *cqe, enum op op);
/* A read of a stored chunk's slice for sealing completed (OP_READ). */
void conn_on_read(struct conn *c, struct io_uring_cqe *cqe);
/* Frees the send side of a connection being freed: its output queue (stored chunks released),
 * its splice pipe and a slice being sealed. Nothing of it may be in flight. */
void conn_send_free(struct conn *c);

#endif
