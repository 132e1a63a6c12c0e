/* conn.c — a connection's receive side and lifetime: receives into provided buffers or
 * straight into a body, the shared memory budget for bodies, the byte rates per client address
 * (receives and sends sized to them, or held back until the loop's tick), the input buffer the
 * protocol reads, the head deadline's tracking, the reference count, and closing (at once, after
 * flushing, or lingering for a plaintext client). The send side is send.c. Loop thread only
 * (conn.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "loop_int.h"
#include "metrics.h"

/* the memory budget: body bytes are granted ahead of their arrival, a little at first and
 * doubling while they keep coming, so a body that trickles holds little */
#define GRANT_MIN (16u * 1024)
#define GRANT_MAX (1024u * 1024)
/* lingering close of a plaintext connection: at most this long and this many bytes dropped */
#define LINGER_MS  5000
#define LINGER_MAX (64u << 20)

/* ---- the memory budget for bodies -------------------------------------------------------- */

static void mem_wait_end(struct conn *c)
{
        if (c->mem_wait) {
                c->mem_wait = false;
                atomic_fetch_sub(&c->sh->mem_waiting, 1);
        }
}

/* Takes n bytes of the budget if they fit under limit. */
static bool mem_take(struct chp_shared *sh, uint64_t n, uint64_t limit)
{
        uint64_t used = atomic_load(&sh->mem_used);
        do {
                if (used + n > limit)
                        return false;
        } while (!atomic_compare_exchange_weak(&sh->mem_used, &used, used + n));
        return true;
}

/* Before a receive into the body: makes sure some of it is granted. Bodies that wait for each
 * other's memory could wait forever, so one of them at a time (the owner) is granted past
 * memory_limit — at most one frame, its own — and finishes; it gives that right back when its
 * body is settled. False: the budget is spent; the connection waits (the tick asks again). */
static bool mem_grant(struct conn *c)
{
        if (c->grant_left > 0 || c->body_got >= c->body_len)
                return true;
        struct chp_shared *sh = c->sh;
        size_t step = c->grant_next ? c->grant_next : GRANT_MIN;
        size_t want = c->body_len - c->body_got < step ? c->body_len - c->body_got : step;
        uint64_t limit = sh->cfg->memory_limit;
        struct conn *none = NULL;
        if (!mem_take(sh, want, limit) &&
            !((atomic_load(&sh->mem_owner) == c ||
               atomic_compare_exchange_strong(&sh->mem_owner, &none, c)) &&
              mem_take(sh, want, UINT64_MAX))) {
                if (!c->mem_wait) {
                        c->mem_wait = true;
                        atomic_fetch_add(&sh->mem_waiting, 1);
                }
                return false;
        }
        mem_wait_end(c);
        c->grant_left = want;
        c->mem_held += want;
        c->grant_next = step < GRANT_MAX ? 2 * step : GRANT_MAX;
        return true;
}

void conn_body_arrived(struct conn *c, size_t n)
{
        c->body_got += n;
        if (n <= c->grant_left) {
                c->grant_left -= n;
                return;
        }
        /* more than granted (a record's worth over the transport): charged as it is */
        size_t over = n - c->grant_left;
        c->grant_left = 0;
        c->mem_held += over;
        atomic_fetch_add(&c->sh->mem_used, over);
}

void conn_mem_settle(struct conn *c, size_t total)
{
        struct chp_shared *sh = c->sh;
        struct conn *me = c;
        atomic_compare_exchange_strong(&sh->mem_owner, &me, NULL);
        if (total > c->mem_held)
                atomic_fetch_add(&sh->mem_used, total - c->mem_held);
        else if (total < c->mem_held)
                atomic_fetch_sub(&sh->mem_used, c->mem_held - total);
        c->mem_held = 0;
        c->grant_left = 0; /* grant_next stays: the next body of a fast sender starts fast */
        mem_wait_end(c);
}

void conn_mem_drop(struct conn *c)
{
        conn_mem_settle(c, 0);
}

/* ---- the byte rates per client address -------------------------------------------------- */

/* Whether a rate holds the connection's receives (upload_rate_per_address, or
 * upload_rate_per_subject once it has a subject) or sends (download_rate_per_address): false
 * when none is set, or the address (and subject) are not counted. */
static bool rate_of(const struct conn *c, bool send)
{
        if ((c->lim_slot == CHP_LIMITS_NONE && c->lim_subject == CHP_LIMITS_NONE) || c->rate_exempt)
                return false; /* (the common case, and no shared state read for it) */
        const struct chp_config *cfg = c->sh->cfg;
        if (send)
                return c->lim_slot != CHP_LIMITS_NONE && cfg->download_rate_per_address;
        return (c->lim_slot != CHP_LIMITS_NONE && cfg->upload_rate_per_address) ||
               (c->lim_subject != CHP_LIMITS_NONE && cfg->upload_rate_per_subject);
}

size_t conn_rate_room(struct conn *c, bool send, size_t want)
{
        if (!rate_of(c, send))
                return want;
        uint32_t wait;
        uint64_t now = chp_net_now_ms();
        struct chp_limits *lim = c->sh->limits;
        size_t room = send ? chp_limits_send_take(lim, c->lim_slot, want, now, &wait)
                           : chp_limits_read_room(lim, c->lim_slot, want, now, &wait);
        if (!send && room) /* and what the subject's bucket allows of that */
                room = chp_limits_read_room(lim, c->lim_subject, room, now, &wait);
        if (send)
                c->send_taken = room;
        else if (room < want)
                c->throttled = true;
        if (!room) {
                struct chp_metrics *m = c->sh->metrics;
                *(send ? &c->send_wait_until : &c->read_wait_until) = now + wait;
                atomic_fetch_add(send ? &m->sends_throttled : &m->reads_throttled, 1);
        }
        return room;
}

void conn_rate_charge(struct conn *c, size_t n, uint64_t now)
{
        if (rate_of(c, false)) {
                chp_limits_read_charge(c->sh->limits, c->lim_slot, n, now);
                chp_limits_read_charge(c->sh->limits, c->lim_subject, n, now);
        }
}

void conn_rate_refund(struct conn *c, size_t moved)
{
        size_t taken = c->send_taken;
        c->send_taken = 0;
        if (moved < taken)
                chp_limits_send_refund(c->sh->limits, c->lim_slot, taken - moved, chp_net_now_ms());
}

static void arm_recv(struct conn *c)
{
        struct chp_loop *l = c->loop;
        uint8_t *dst;
        size_t len;
        bool select = false;
        if (c->body && c->tr->plaintext(c) && !c->lingering) {
                /* the body's final buffer, straight from the socket, as far as granted */
                size_t n = c->body_len - c->body_got;
                dst = c->body + c->body_got;
                len = n < c->grant_left ? n : c->grant_left;
        } else if (!(dst = c->tr->recv_space(c, &len))) {
                /* a body over the transport (records) has large receives into its buffer,
                 * sized by it from the grant; anything else goes into a provided buffer */
                len = BUF_SIZE;
                select = true;
        }
        /* what a lingering connection sends is dropped, not charged */
        if (!c->lingering && len && !(len = conn_rate_room(c, false, len)))
                return;
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe)
                return;
        io_uring_prep_recv(sqe, c->fd, dst, len, 0);
        if (select) {
                /* a shorter len than the buffer's is honoured: the byte rate's room */
                sqe->flags |= IOSQE_BUFFER_SELECT;
                sqe->buf_group = BUF_GROUP;
        }
        io_uring_sqe_set_data64(sqe, ud_pack(c, OP_RECV));
        c->recv_armed = true;
        c->refs++;
}

void conn_maybe_read(struct conn *c)
{
        if (c->recv_armed || c->closing || c->closed || c->want_buffers)
                return;
        if (c->read_wait_until) {
                if (chp_net_now_ms() < c->read_wait_until)
                        return; /* the byte rate per address: the tick asks again */
                c->read_wait_until = 0;
        }
        if (c->body ? !mem_grant(c) : !c->ops->can_read(c))
                return;
        arm_recv(c);
}

/* ---- connection lifetime ----------------------------------------------------------------- */

void conn_hold(struct conn *c)
{
        c->refs++;
}

static void conn_free(struct conn *c)
{
        struct chp_loop *l = c->loop;
        if (c->want_buffers)
                l->want_buffers--;
        c->ops->detach(c);
        conn_mem_drop(c); /* whatever the protocol did not take over */
        c->tr->detach(c);
        conn_send_free(c);
        chp_limits_conn_close(c->sh->limits, c->lim_slot);
        chp_limits_conn_close(c->sh->limits, c->lim_subject);
        if (c->fd >= 0)
                close(c->fd);
        free(c->in);
        if (c->prev)
                c->prev->next = c->next;
        else
                l->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        l->nconns--;
        atomic_fetch_sub(&c->sh->conns, 1);
        free(c);
}

void conn_release(struct conn *c)
{
        if (--c->refs == 0)
                conn_free(c);
}

void conn_close(struct conn *c)
{
        if (c->closed)
                return;
        c->closed = true;
        c->closing = true;
        /* wakes any receive or send in flight; they complete and drop their references */
        shutdown(c->fd, SHUT_RDWR);
        conn_release(c);
}

/* The last words are sent. A plaintext (HTTP) client may still be sending a request body that
 * was answered without being read; closing with those bytes unread would make the kernel reset
 * the connection, and the client, still writing, would likely never read the answer. So the
 * write side is shut (the client sees the end after the answer) and what it still sends is
 * dropped until it closes, for at most LINGER_MS and LINGER_MAX bytes (nginx's lingering
 * close). Over Noise records the end is a close record and the connection just closes. */
void conn_finish(struct conn *c)
{
        if (c->closed || c->lingering)
                return;
        if (c->ops->secure || c->loop->stopping) {
                conn_close(c);
                return;
        }
        c->lingering = true;
        c->linger_until = chp_net_now_ms() + LINGER_MS;
        shutdown(c->fd, SHUT_WR);
        if (!c->recv_armed)
                arm_recv(c); /* into provided buffers, dropped as they come (conn_on_recv) */
}

void conn_close_after_flush(struct conn *c)
{
        if (c->closing)
                return;
        c->closing = true;
        c->last_progress = chp_net_now_ms();
        /* over records, the end is said, not just a cut: once the last words are sealed
         * (conn_flush, when the queue drains) */
        if (!c->out_head && !c->send_armed && !c->tr->close_record(c))
                conn_finish(c);
}

/* ---- input ------------------------------------------------------------------------------- */

void conn_want_body(struct conn *c, uint8_t *buf, size_t len, size_t already)
{
        c->body = buf;
        c->body_len = len;
        c->body_got = already;
}

void conn_consume(struct conn *c, size_t n)
{
        if (n >= c->in_len) {
                c->in_len = 0;
                return;
        }
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
}

int conn_deliver(struct conn *c, const uint8_t *p, size_t n)
{
        if (c->body && c->body_got < c->body_len) {
                size_t take = c->body_len - c->body_got < n ? c->body_len - c->body_got : n;
                memcpy(c->body + c->body_got, p, take);
                conn_body_arrived(c, take);
                p += take;
                n -= take;
        }
        return n ? conn_in_append(c, p, n) : 0;
}

int conn_in_append(struct conn *c, const uint8_t *p, size_t n)
{
        if (c->in_cap - c->in_len < n) {
                size_t cap = c->in_cap ? c->in_cap : 4096;
                while (cap - c->in_len < n)
                        cap *= 2;
                uint8_t *in = realloc(c->in, cap);
                if (!in)
                        return -ENOMEM;
                c->in = in;
                c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, p, n);
        c->in_len += n;
        return 0;
}

/* Whether the connection owes the rest of a head: an HTTP request head (the first one from
 * accept), or a native frame header or small frame after the handshake. A connection with
 * requests in flight or receiving a body owes none; the handshake has a deadline of its own.
 * Nor does one whose input waits for its output to drain (the face's flow control): what is in
 * c->in may be whole frames the face has not taken yet, held back by a client that reads slowly
 * or by the address's download_rate_per_address; the send's own deadline (io_timeout) covers
 * that wait, and the head's starts afresh once the face reads again. */
static bool in_head(const struct conn *c)
{
        if (c->body || c->closing || c->closed || c->tr->handshaking(c) || c->ops->busy(c) ||
            (c->out_head && !c->ops->can_read(c)))
                return false;
        return c->in_len > 0 || c->tr->pending(c) || (!c->ops->secure && !c->replied);
}

/* header_timeout counts from the first byte of a head (from accept for a first HTTP head). */
void conn_head_track(struct conn *c, uint64_t now)
{
        if (!in_head(c))
                c->head_since = 0;
        else if (!c->head_since)
                c->head_since = now;
}

/* After a protocol callback: keep reading and writing as the state allows. */
static void conn_kick(struct conn *c)
{
        if (c->closed)
                return;
        conn_flush(c);
        conn_maybe_read(c);
}

void conn_output_moved(struct conn *c)
{
        /* A face whose flow control counts its queued output stops taking frames from c->in
         * when the output is full; frames already received wait there, and no receive will
         * announce them again (the client may have sent its last request): offer them now. */
        if (!c->closed && !c->closing && !c->body && c->in_len > 0 && c->ops->can_read(c))
                c->ops->on_input(c);
        conn_kick(c);
}

/* ---- receive completions ----------------------------------------------------------------- */

static void recycle_buffer(struct chp_loop *l, unsigned bid)
{
        io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
                              (unsigned short)bid, io_uring_buf_ring_mask(BUF_COUNT), 0);
        io_uring_buf_ring_advance(l->br, 1);
}

void conn_on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
        struct chp_loop *l = c->loop;
        c->recv_armed = false;
        int res = cqe->res;
        bool had_buffer = cqe->flags & IORING_CQE_F_BUFFER;
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (res == -ENOBUFS) {
                c->want_buffers = true; /* re-armed at the end of this batch */
                l->want_buffers++;
        } else if (res <= 0 || c->closed) {
                if (had_buffer)
                        recycle_buffer(l, bid);
                if (res < 0 && res != -ECONNRESET && res != -ECANCELED)
                        chp_log_debug("loop", "recv: %s", chp_strerror(res));
                conn_close(c);
        } else if (c->lingering) {
                /* dropped; the client's end (res 0) or the bound closes (conn_finish) */
                if (had_buffer)
                        recycle_buffer(l, bid);
                c->linger_bytes += (size_t)res;
                if (c->linger_bytes > LINGER_MAX)
                        conn_close(c);
                else
                        arm_recv(c);
        } else {
                struct chp_metrics *m = c->sh->metrics;
                atomic_fetch_add(c->ops->secure ? &m->bytes_in : &m->http_bytes_in, (uint64_t)res);
                c->last_progress = chp_net_now_ms();
                int rc = 0;
                if (had_buffer) {
                        rc = c->tr->input(c, l->bufs + (size_t)bid * BUF_SIZE, (size_t)res);
                        recycle_buffer(l, bid);
                } else if (c->body && c->tr->plaintext(c)) {
                        conn_body_arrived(c, (size_t)res);
                } else {
                        rc = c->tr->received(c, (size_t)res);
                }
                c->rx_bytes += (uint64_t)res;
                conn_rate_charge(c, (size_t)res, c->last_progress);
                if (rc && !c->closed)
                        conn_close(c);
                if (!c->closed)
                        c->ops->on_input(c);
                conn_head_track(c, c->last_progress);
                conn_kick(c);
        }
        conn_release(c);
}
