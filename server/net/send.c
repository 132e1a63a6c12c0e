/* send.c — a connection's send side: the output queue (coalesced bytes, wire-form records,
 * slices of stored chunks), sealing over records just before sending, splicing stored chunks
 * from the page cache through a pipe, and reading them through the ring when they must be
 * sealed; the byte rate per client address (download_rate_per_address: sends sized to it, or
 * held back until the loop's tick). One send-side operation in flight per connection. Loop
 * thread only (conn.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "loop_int.h"
#include "metrics.h"

#define OUT_CHUNK  (16 * 1024)  /* coalescing capacity of a small output item */
#define SEAL_SLICE (256 * 1024) /* stored chunk bytes sealed at a time */
#define DRAIN_LOW  (4u << 20)   /* below this much queued output, ask for more */

struct out_item {
        struct out_item *next;
        bool splice;
        bool wire;                /* already in wire form: never sealed, never appended to */
        size_t len, off, cap;     /* bytes: len queued, off sent; splice: len to send, off sent */
        struct chp_chunk_loc loc; /* splice only */
        uint64_t file_off;        /* splice only */
        uint8_t data[];           /* bytes only */
};

/* ---- the byte rate per client address --------------------------------------------------- */

/* Whether sends still wait for the byte rate (conn_rate_room). Every send counts, not only a
 * download's bytes: a reply, a handshake message or a record goes out in order with the rest.
 * The wait ends when its time comes or the rate is turned off (a reload); then the connection
 * counts as making progress: the time held back was the relay's doing, not a stall of the
 * client's (io_timeout). */
static bool send_waits(struct conn *c)
{
        if (!c->send_wait_until)
                return false;
        uint64_t now = chp_net_now_ms();
        if (now < c->send_wait_until && c->sh->cfg->download_rate_per_address)
                return true;
        c->send_wait_until = 0;
        c->last_progress = now;
        return false;
}

/* ---- output ------------------------------------------------------------------------------ */

static void out_free(struct conn *c, struct out_item *it)
{
        if (it->splice)
                chp_store_loc_release(c->sh->store, &it->loc);
        free(it);
}

/* Queues t at the tail; its n bytes count as queued output. */
static void out_push(struct conn *c, struct out_item *t, size_t n)
{
        if (c->out_tail)
                c->out_tail->next = t;
        else
                c->out_head = t;
        c->out_tail = t;
        c->out_bytes += n;
}

uint8_t *conn_out_reserve(struct conn *c, size_t n)
{
        struct out_item *t = c->out_tail;
        /* appending to an item whose send is in flight is safe: the item never moves, and
         * the bytes past what the send covers go out with the next one */
        if (!t || t->splice || t->wire || t->cap - t->len < n) {
                size_t cap = n > OUT_CHUNK ? n : OUT_CHUNK;
                t = malloc(sizeof(*t) + cap);
                if (!t)
                        return NULL;
                *t = (struct out_item){.cap = cap};
                out_push(c, t, 0);
        }
        uint8_t *p = t->data + t->len;
        t->len += n;
        c->out_bytes += n;
        c->queued_total += n;
        c->replied = true;
        return p;
}

static struct out_item *wire_item(size_t n)
{
        struct out_item *t = malloc(sizeof(*t) + (n ? n : 1));
        if (t)
                *t = (struct out_item){.wire = true, .len = n, .cap = n};
        return t;
}

uint8_t *conn_out_wire(struct conn *c, size_t n)
{
        struct out_item *t = wire_item(n);
        if (!t)
                return NULL;
        out_push(c, t, n);
        c->replied = true;
        return t->data;
}

/* Over records, the head of the queue is sealed just before it is sent: a plaintext item is
 * replaced by its records (seal_head); a stored chunk is read through the ring, up to SEAL_SLICE
 * at a time, into c->slice (read_slice), and once the slice is in, its records are queued ahead
 * of the rest of the chunk (seal_slice). So a cold page delays only its own connection. */
static int seal_head(struct conn *c)
{
        struct out_item *it = c->out_head, *w;
        size_t n = it->len - it->off;
        if (!(w = wire_item(c->tr->sealed_size(n))))
                return -ENOMEM;
        ssize_t r = c->tr->seal(c, it->data + it->off, n, w->data, w->cap);
        if (r < 0) {
                free(w);
                return (int)r;
        }
        w->len = (size_t)r;
        w->next = it->next;
        c->out_head = w;
        if (c->out_tail == it)
                c->out_tail = w;
        c->out_bytes = c->out_bytes - n + w->len;
        free(it);
        return 0;
}

/* Arms the read of the next slice of the stored chunk at the head (or of the rest of a slice
 * the kernel gave back short). The read counts as the send-side operation: nothing else is
 * sent, and c->slice is neither reused nor freed, until its completion (conn_on_read). Returns 0
 * (armed, or no SQE now: the next flush tries again) or -ENOMEM. */
static int read_slice(struct conn *c)
{
        struct out_item *it = c->out_head;
        if (!c->slice) {
                size_t n = it->len - it->off < SEAL_SLICE ? it->len - it->off : SEAL_SLICE;
                if (!(c->slice = malloc(n)))
                        return -ENOMEM;
                c->slice_len = n;
                c->slice_got = 0;
        }
        struct io_uring_sqe *sqe = get_sqe(c->loop);
        if (!sqe)
                return 0;
        io_uring_prep_read(sqe, it->loc.fd, c->slice + c->slice_got,
                           (unsigned)(c->slice_len - c->slice_got),
                           it->file_off + it->off + c->slice_got);
        io_uring_sqe_set_data64(sqe, ud_pack(c, OP_READ));
        c->send_armed = true;
        c->refs++;
        return 0;
}

/* The slice is all in: its records go ahead of the rest of the chunk (or replace the chunk's
 * item when it was the last slice). Returns 0 or a negative code. */
static int seal_slice(struct conn *c)
{
        struct out_item *it = c->out_head, *w;
        size_t n = c->slice_len;
        if (!(w = wire_item(c->tr->sealed_size(n))))
                return -ENOMEM;
        ssize_t r = c->tr->seal(c, c->slice, n, w->data, w->cap);
        free(c->slice);
        c->slice = NULL;
        c->slice_len = c->slice_got = 0;
        if (r < 0) {
                free(w);
                return (int)r;
        }
        w->len = (size_t)r;
        it->off += n;
        c->out_bytes = c->out_bytes - n + w->len;
        if (it->off == it->len) {
                /* the chunk is all in records now */
                w->next = it->next;
                if (c->out_tail == it)
                        c->out_tail = w;
                out_free(c, it);
        } else {
                w->next = it;
        }
        c->out_head = w;
        return 0;
}

int conn_out_splice(struct conn *c, struct chp_chunk_loc *loc, uint64_t offset, uint32_t len)
{
        struct out_item *t = loc->fd >= 0 ? malloc(sizeof(*t)) : NULL;
        if (!t) {
                chp_store_loc_release(c->sh->store, loc);
                return loc->fd >= 0 ? -ENOMEM : -EINVAL;
        }
        *t = (struct out_item){.splice = true, .len = len, .loc = *loc, .file_off = offset};
        loc->seg = NULL;
        out_push(c, t, len);
        c->queued_total += len;
        return 0;
}

static int ensure_pipe(struct conn *c)
{
        if (c->pipe[0] >= 0)
                return 0;
        if (pipe2(c->pipe, O_CLOEXEC) != 0)
                return -errno;
        /* a pipe as large as a typical chunk halves the number of splice round trips */
        int sz = fcntl(c->pipe[1], F_SETPIPE_SZ, 1 << 20);
        c->pipe_size = sz > 0 ? (size_t)sz : 65536;
        return 0;
}

void conn_flush(struct conn *c)
{
        if (c->send_armed || c->closed || send_waits(c))
                return;
        struct out_item *it = c->out_head;
        if (!it) {
                /* closing: the transport's end goes after everything else (conn.c) */
                if (c->closing && !c->tr->close_record(c))
                        conn_finish(c);
                if (!(it = c->out_head) || c->closed)
                        return;
        }
        struct chp_loop *l = c->loop;
        if (!it->wire && c->tr->sealing(c)) {
                if (it->splice) {
                        if (read_slice(c) != 0)
                                conn_close(c);
                        return; /* sealed and sent once read (conn_on_read) */
                }
                if (seal_head(c) != 0) {
                        conn_close(c);
                        return;
                }
                it = c->out_head;
        }
        /* what goes to the socket now: a send of bytes, or of what the pipe holds; the address's
         * byte rate may make it less, or none until the tick (reading a chunk into the pipe
         * moves nothing to the client and never waits) */
        size_t n = !it->splice ? it->len - it->off : c->pipe_fill;
        if (n > 0 && !(n = conn_rate_room(c, true, n)))
                return;
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe) {
                conn_rate_refund(c, 0);
                return;
        }
        if (!it->splice) {
                /* MSG_MORE when a splice follows: its header and bytes leave in one segment
                 * (not for a part the byte rate cut: the rest waits, and so would the part) */
                bool more = it->next && it->next->splice && n == it->len - it->off;
                int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
                io_uring_prep_send(sqe, c->fd, it->data + it->off, n, flags);
                io_uring_sqe_set_data64(sqe, ud_pack(c, OP_SEND));
        } else if (c->pipe_fill > 0) {
                io_uring_prep_splice(sqe, c->pipe[0], -1, c->fd, -1, (unsigned)n, SPLICE_F_MOVE);
                io_uring_sqe_set_data64(sqe, ud_pack(c, OP_SPLICE_OUT));
        } else {
                if (ensure_pipe(c) != 0) {
                        conn_close(c);
                        return;
                }
                n = it->len - it->off;
                if (n > c->pipe_size)
                        n = c->pipe_size;
                io_uring_prep_splice(sqe, it->loc.fd, (int64_t)(it->file_off + it->off), c->pipe[1],
                                     -1, (unsigned)n, SPLICE_F_MOVE);
                io_uring_sqe_set_data64(sqe, ud_pack(c, OP_SPLICE_IN));
        }
        c->send_armed = true;
        c->refs++;
}

static void sent(struct conn *c, size_t n)
{
        struct out_item *it = c->out_head;
        it->off += n;
        c->out_bytes -= n;
        c->tx_bytes += n;
        c->last_progress = chp_net_now_ms();
        /* bytes on the wire, by face */
        struct chp_metrics *m = c->sh->metrics;
        atomic_fetch_add(c->ops->secure ? &m->bytes_out : &m->http_bytes_out, n);
        if (it->off == it->len) {
                c->out_head = it->next;
                if (!c->out_head)
                        c->out_tail = NULL;
                out_free(c, it);
                if (c->ops->on_drain && c->out_bytes < DRAIN_LOW)
                        c->ops->on_drain(c); /* a download queues its next chunks */
        }
}

/* ---- freeing ----------------------------------------------------------------------------- */

void conn_send_free(struct conn *c)
{
        while (c->out_head) {
                struct out_item *it = c->out_head;
                c->out_head = it->next;
                out_free(c, it);
        }
        if (c->pipe[0] >= 0) {
                close(c->pipe[0]);
                close(c->pipe[1]);
        }
        free(c->slice);
}

/* ---- completions ------------------------------------------------------------------------- */

void conn_on_send(struct conn *c, struct io_uring_cqe *cqe, enum op op)
{
        c->send_armed = false;
        int res = cqe->res;
        /* what the address's byte rate gave this send and it did not move goes back */
        if (c->send_taken)
                conn_rate_refund(c, op != OP_SPLICE_IN && res > 0 ? (size_t)res : 0);
        if (c->closed) {
                if (op == OP_SPLICE_IN && res > 0)
                        c->pipe_fill += (size_t)res;
        } else if (res < 0 || (res == 0 && op != OP_SEND)) {
                if (res != -EPIPE && res != -ECONNRESET)
                        chp_log_debug("loop", "%s: %s", op == OP_SEND ? "send" : "splice",
                                      res ? chp_strerror(res) : "unexpected end of segment");
                conn_close(c);
        } else if (op == OP_SEND) {
                sent(c, (size_t)res);
        } else if (op == OP_SPLICE_IN) {
                c->pipe_fill = (size_t)res; /* the bytes now sit in the pipe */
        } else {
                c->pipe_fill -= (size_t)res;
                sent(c, (size_t)res);
        }
        if (!c->closed) {
                c->last_active = chp_net_now_ms();
                conn_output_moved(c); /* flow control may allow taking more input */
        }
        conn_release(c);
}

/* A slice of a stored chunk read for sealing (read_slice): sealed once whole, then sent. */
void conn_on_read(struct conn *c, struct io_uring_cqe *cqe)
{
        c->send_armed = false;
        int res = cqe->res;
        if (c->closed) {
                /* c->slice goes with the connection (conn_free) */
        } else if (res <= 0) {
                chp_log_debug("loop", "read for sealing: %s",
                              res ? chp_strerror(res) : "unexpected end of segment");
                conn_close(c);
        } else {
                c->slice_got += (size_t)res;
                /* a short read leaves the slice to be finished by the next flush's read */
                if (c->slice_got == c->slice_len && seal_slice(c) != 0)
                        conn_close(c);
        }
        if (!c->closed) {
                conn_flush(c);
                conn_maybe_read(c);
        }
        conn_release(c);
}
