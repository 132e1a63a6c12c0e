/* loop.c — the io_uring event loop: the ring and its provided buffers, the completion dispatch,
 * store completions, the timers (deadlines, the body rate floor) and stopping.
 *
 * What a completion means is handled where its state lives: accepts in accept.c, receives
 * and a connection's lifetime in conn.c, sends, splices and reads for sealing in
 * send.c; loop_int.h is what they share. Every connection has at most one receive and
 * one send-side operation (send, splice, or the read of a stored chunk's slice to be sealed) in
 * flight, so ordering on the socket follows from the state in struct conn alone.
 */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "loop_int.h"
#include "metrics.h"
#include "uring_compat.h"

#define RING_ENTRIES  4096
#define TICK_MS       200
#define STOP_GRACE_MS 5000
#define PRESSURE_MS   2000 /* while others wait for memory, the rate floor's window */

/* ---- arming operations ------------------------------------------------------------------- */

static void arm_wake(struct chp_loop *l)
{
        if (l->wake_armed)
                return;
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe)
                return;
        io_uring_prep_read(sqe, l->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
        io_uring_sqe_set_data64(sqe, ud_pack(l, OP_WAKE));
        l->wake_armed = true;
}

static void arm_tick(struct chp_loop *l)
{
        if (l->tick_armed)
                return;
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe)
                return;
        l->tick_ts.tv_sec = 0;
        l->tick_ts.tv_nsec = TICK_MS * 1000000L;
        io_uring_prep_timeout(sqe, &l->tick_ts, 0, 0);
        io_uring_sqe_set_data64(sqe, ud_pack(l, OP_TICK));
        l->tick_armed = true;
}

/* ---- store completions ------------------------------------------------------------------- */

void chp_loop_post(struct chp_loop *l, struct chp_store_req *req)
{
        pthread_mutex_lock(&l->done_lock);
        bool was_empty = !l->done_head;
        req->next = NULL;
        if (l->done_tail)
                l->done_tail->next = req;
        else
                l->done_head = req;
        l->done_tail = req;
        pthread_mutex_unlock(&l->done_lock);
        if (was_empty) {
                uint64_t one = 1;
                ssize_t w = write(l->wake_fd, &one, sizeof(one));
                (void)w; /* an eventfd write fails only when the counter would overflow */
        }
}

void conn_op_done(struct chp_store_req *req)
{
        chp_loop_post(((struct conn_op *)req)->c->loop, req);
}

static void drain_done(struct chp_loop *l)
{
        pthread_mutex_lock(&l->done_lock);
        struct chp_store_req *r = l->done_head;
        l->done_head = l->done_tail = NULL;
        pthread_mutex_unlock(&l->done_lock);
        while (r) {
                struct chp_store_req *next = r->next;
                r->next = NULL;
                struct conn_op *op = (struct conn_op *)r;
                op->done(op);
                r = next;
        }
}

/* ---- timers and stopping ----------------------------------------------------------------- */

/* The body rate floor: a connection receiving a body must bring min_body_rate bytes/s over each
 * window (the first window is its grace). Time it spends held back by the relay (waiting for
 * memory, or for the writer with no body asked for) does not count, nor a window in which the
 * byte rate of its address held its receives back (that address sends faster than allowed). */
static bool body_too_slow(struct conn *c, uint64_t now, uint64_t rate, uint64_t window)
{
        bool held = c->mem_wait || c->throttled;
        c->throttled = false;
        if (!c->body || held || !rate) {
                c->rate_t0 = now;
                c->rate_b0 = c->rx_bytes;
                return false;
        }
        uint64_t span = now - c->rate_t0;
        if (span < window)
                return false;
        if ((c->rx_bytes - c->rate_b0) * 1000 < rate * span)
                return true;
        c->rate_t0 = now;
        c->rate_b0 = c->rx_bytes;
        return false;
}

static void sweep(struct chp_loop *l, uint64_t now)
{
        const struct chp_config *cfg = l->sh->cfg;
        uint64_t idle = (uint64_t)cfg->idle_timeout * 1000, io = (uint64_t)cfg->io_timeout * 1000;
        uint64_t hs = (uint64_t)cfg->handshake_timeout * 1000;
        uint64_t head = (uint64_t)cfg->header_timeout * 1000;
        uint64_t window = (uint64_t)cfg->body_rate_window * 1000;
        /* while bodies wait for memory, those holding some are held to the floor sooner */
        bool pressure = atomic_load(&l->sh->mem_waiting) > 0;
        struct conn *c = l->conns;
        while (c) {
                struct conn *next = c->next;
                if (c->closed) {
                        c = next;
                        continue;
                }
                /* bytes of a frame are here but not all of it; progress is any byte moved */
                bool partial = c->in_len > 0 || c->body || c->tr->pending(c);
                bool sending = c->out_head != NULL;
                enum chp_close_reason why = CHP_CLOSE_NREASONS;
                conn_head_track(c, now);
                if (c->closing) {
                        if (c->lingering ? now >= c->linger_until
                                         : !c->send_wait_until && now - c->last_progress > io)
                                conn_close(c); /* could not flush its last words in time */
                } else if (c->tr->handshaking(c) && now - c->born > hs) {
                        why = CHP_CLOSE_HANDSHAKE_TIMEOUT;
                } else if (c->head_since && now - c->head_since > head) {
                        why = CHP_CLOSE_HEADER_TIMEOUT;
                } else if (body_too_slow(c, now, cfg->min_body_rate,
                                         pressure && c->mem_held ? PRESSURE_MS : window)) {
                        why = CHP_CLOSE_SLOW_BODY;
                } else if (((partial && !c->mem_wait && !c->read_wait_until) ||
                            (sending && !c->send_wait_until)) &&
                           now - c->last_progress > io) {
                        /* (waiting for memory or for a byte rate is the relay's doing) */
                        why = CHP_CLOSE_STALLED;
                } else if (!partial && !sending && !c->ops->busy(c) &&
                           now - c->last_active > idle) {
                        why = CHP_CLOSE_IDLE;
                } else if (l->stopping && !c->ops->busy(c) && !sending) {
                        conn_close(c);
                } else if (l->stopping && now > l->stop_deadline) {
                        chp_log_warn("loop", "stop: closing a connection with work in flight");
                        conn_close(c);
                }
                if (why != CHP_CLOSE_NREASONS) {
                        /* clients' doing, and many at a time under attack: a counter, not a
                         * log line each (chapar_connections_closed_total) */
                        atomic_fetch_add(&l->sh->metrics->closed[why], 1);
                        chp_log_debug("loop", "closing a %s connection: %s", c->ops->name,
                                      chp_metrics_close_reason(why));
                        conn_close(c);
                }
                c = next;
        }
}

static void begin_stop(struct chp_loop *l)
{
        l->stopping = true;
        l->stop_deadline = chp_net_now_ms() + STOP_GRACE_MS;
        for (int i = 0; i < MAX_LISTENERS; i++) {
                struct listener *li = &l->lis[i];
                if (li->fd < 0 || !li->armed)
                        continue;
                struct io_uring_sqe *sqe = get_sqe(l);
                if (sqe) {
                        io_uring_prep_cancel64(sqe, ud_pack(li, OP_ACCEPT), 0);
                        io_uring_sqe_set_data64(sqe, 0);
                }
                /* the fd is closed once the accept is gone (see chp_loop_run) */
        }
        for (struct conn *c = l->conns; c; c = c->next)
                c->ops->stop(c);
}

static void on_tick(struct chp_loop *l)
{
        l->tick_armed = false;
        uint64_t now = chp_net_now_ms();
        if (*l->sh->stop && !l->stopping)
                begin_stop(l);
        if (l->stopping || now - l->last_sweep >= 1000) {
                l->last_sweep = now;
                sweep(l, now);
        }
        /* connections paused by the shared memory budget or a byte rate get another chance;
         * those waiting for something else look again (proto_ops.on_tick) */
        struct conn *next;
        for (struct conn *c = l->conns; c; c = next) {
                next = c->next;
                conn_hold(c); /* a flush may close it */
                if (c->want_tick && !c->closed && c->ops->on_tick) {
                        c->ops->on_tick(c);
                        conn_flush(c);
                } else if (c->send_wait_until) {
                        conn_flush(c);
                }
                conn_maybe_read(c);
                conn_release(c);
        }
}

/* ---- create / run / destroy -------------------------------------------------------------- */

int chp_loop_create(struct chp_shared *sh, const struct chp_listener_spec *lis, size_t n,
                    struct chp_loop **out)
{
        *out = NULL;
        struct chp_loop *l =
            n <= MAX_LISTENERS ? aligned_alloc(16, (sizeof(*l) + 15) & ~(size_t)15) : NULL;
        if (!l) {
                for (size_t i = 0; i < n; i++)
                        if (lis[i].fd >= 0)
                                close(lis[i].fd);
                return n <= MAX_LISTENERS ? -ENOMEM : -EINVAL;
        }
        memset(l, 0, sizeof(*l));
        l->sh = sh;
        for (size_t i = 0; i < MAX_LISTENERS; i++)
                l->lis[i] =
                    i < n
                        ? (struct listener){.fd = lis[i].fd, .ops = lis[i].ops, .face = lis[i].face}
                        : (struct listener){.fd = -1};
        l->wake_fd = -1;
        l->reserve_fd = -1;
        pthread_mutex_init(&l->done_lock, NULL);
        int rc;
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
        rc = io_uring_queue_init_params(RING_ENTRIES, &l->ring, &p);
        if (rc == -EINVAL) {
                /* kernels before 6.1 lack DEFER_TASKRUN: run without it */
                chp_log_warn("loop", "io_uring: SINGLE_ISSUER/DEFER_TASKRUN not supported; "
                                     "running without them");
                memset(&p, 0, sizeof(p));
                rc = io_uring_queue_init_params(RING_ENTRIES, &l->ring, &p);
        }
        if (rc)
                goto fail;
        l->ring_ok = true;
        l->bufs = aligned_alloc(4096, (size_t)BUF_COUNT * BUF_SIZE);
        if (!l->bufs) {
                rc = -ENOMEM;
                goto fail;
        }
        l->br = chp_uring_setup_buf_ring(&l->ring, BUF_COUNT, BUF_GROUP, &rc);
        if (!l->br)
                goto fail;
        for (unsigned i = 0; i < BUF_COUNT; i++)
                io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * BUF_SIZE, BUF_SIZE,
                                      (unsigned short)i, io_uring_buf_ring_mask(BUF_COUNT), (int)i);
        io_uring_buf_ring_advance(l->br, BUF_COUNT);
        l->wake_fd = eventfd(0, EFD_CLOEXEC);
        if (l->wake_fd < 0) {
                rc = -errno;
                goto fail;
        }
        l->fd_conns = chp_loop_fd_budget(sh);
        l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        *out = l;
        return 0;
fail:
        chp_log_error("loop", "cannot set up io_uring: %s", chp_strerror(rc));
        chp_loop_destroy(l);
        return rc;
}

int chp_loop_run(struct chp_loop *l)
{
        chp_loop_arm_accept(l);
        arm_wake(l);
        arm_tick(l);
        for (;;) {
                if (l->stopping && l->nconns == 0 && !chp_loop_any_accept_armed(l))
                        break;
                int rc = io_uring_submit_and_wait(&l->ring, 1);
                if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
                        chp_log_error("loop", "io_uring_submit_and_wait: %s", chp_strerror(rc));
                        return rc;
                }
                struct io_uring_cqe *cqe;
                unsigned head, seen = 0;
                io_uring_for_each_cqe(&l->ring, head, cqe)
                {
                        seen++;
                        uint64_t ud = cqe->user_data;
                        if (!ud)
                                continue; /* a cancel request's own completion */
                        switch (ud_op(ud)) {
                        case OP_ACCEPT:
                                chp_loop_on_accept(l, ud_ptr(ud), cqe);
                                break;
                        case OP_RECV:
                                conn_on_recv(ud_ptr(ud), cqe);
                                break;
                        case OP_SEND:
                        case OP_SPLICE_IN:
                        case OP_SPLICE_OUT:
                                conn_on_send(ud_ptr(ud), cqe, ud_op(ud));
                                break;
                        case OP_WAKE:
                                l->wake_armed = false;
                                drain_done(l);
                                break;
                        case OP_TICK:
                                on_tick(l);
                                break;
                        case OP_READ:
                                conn_on_read(ud_ptr(ud), cqe);
                                break;
                        }
                }
                io_uring_cq_advance(&l->ring, seen);
                /* connections that found the buffer ring empty try again now that buffers
                 * from this batch have been returned */
                for (struct conn *c = l->conns; l->want_buffers && c; c = c->next) {
                        if (c->want_buffers) {
                                c->want_buffers = false;
                                l->want_buffers--;
                                conn_maybe_read(c);
                        }
                }
                for (int i = 0; l->stopping && i < MAX_LISTENERS; i++) {
                        if (!l->lis[i].armed && l->lis[i].fd >= 0) {
                                close(l->lis[i].fd);
                                l->lis[i].fd = -1;
                        }
                }
                chp_loop_arm_accept(l);
                arm_wake(l);
                arm_tick(l);
        }
        return 0;
}

void chp_loop_destroy(struct chp_loop *l)
{
        if (!l)
                return;
        /* completions that arrived after the loop stopped (the store drains on close) */
        drain_done(l);
        while (l->conns) {
                struct conn *c = l->conns;
                c->refs = 1;
                c->closed = true;
                conn_release(c);
        }
        if (l->ring_ok) {
                chp_uring_free_buf_ring(&l->ring, l->br, BUF_COUNT, BUF_GROUP);
                io_uring_queue_exit(&l->ring);
        }
        free(l->bufs);
        if (l->wake_fd >= 0)
                close(l->wake_fd);
        if (l->reserve_fd >= 0)
                close(l->reserve_fd);
        for (int i = 0; i < MAX_LISTENERS; i++)
                if (l->lis[i].fd >= 0)
                        close(l->lis[i].fd);
        pthread_mutex_destroy(&l->done_lock);
        free(l);
}
