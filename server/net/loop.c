/* loop.c — the io_uring event loop: accept, receive, send, splice, timers, store completions.
 *
 * user_data packs a pointer (a struct conn or the loop, both 16-byte aligned) with the operation
 * kind in its low four bits; it is built and taken apart only by ud_pack/ud_op/ud_ptr below.
 * Every connection has at most one receive and one send-side operation (send, splice, or the read
 * of a stored chunk's slice to be sealed) in flight, so ordering on the socket follows from the
 * state in struct conn alone.
 */
#include "loop.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "uring_compat.h"

#define RING_ENTRIES  4096
#define BUF_COUNT     512 /* provided buffers per loop (power of two) */
#define BUF_SIZE      (16 * 1024)
#define BUF_GROUP     0
#define TICK_MS       200
#define OUT_CHUNK     (16 * 1024) /* coalescing capacity of a small output item */
#define STOP_GRACE_MS 5000
#define SEAL_SLICE    (256 * 1024) /* stored chunk bytes sealed at a time */
#define DRAIN_LOW     (4u << 20)   /* below this much queued output, ask for more */
/* accept failures (out of descriptors or memory): the listener pauses, doubling up to a second */
#define ACCEPT_PAUSE_MIN_MS 100
#define ACCEPT_PAUSE_MAX_MS 1000
#define ACCEPT_LOG_MS       10000 /* one warning per this period, with a count */
#define SHED_MAX            256   /* connections answered "busy" per accept failure */
#define FD_HEADROOM         64    /* descriptors kept back from max_connections */
/* the memory budget: body bytes are granted ahead of their arrival, a little at first and
 * doubling while they keep coming, so a body that trickles holds little */
#define GRANT_MIN   (16u * 1024)
#define GRANT_MAX   (1024u * 1024)
#define PRESSURE_MS 2000 /* while others wait for memory, the rate floor's window */
/* lingering close of a plaintext connection: at most this long and this many bytes dropped */
#define LINGER_MS  5000
#define LINGER_MAX (64u << 20)

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

struct out_item {
        struct out_item *next;
        bool splice;
        bool wire;                /* already in wire form: never sealed, never appended to */
        size_t len, off, cap;     /* bytes: len queued, off sent; splice: len to send, off sent */
        struct chp_chunk_loc loc; /* splice only */
        uint64_t file_off;        /* splice only */
        uint8_t data[];           /* bytes only */
};

/* A listening socket and what its connections speak. */
struct listener {
        int fd;
        bool armed;
        const struct proto_ops *ops;
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

static uint64_t ud_pack(const void *p, enum op op)
{
        return (uint64_t)(uintptr_t)p | (uint64_t)op;
}

static enum op ud_op(uint64_t ud)
{
        return (enum op)(ud & 15);
}

static void *ud_ptr(uint64_t ud)
{
        return (void *)(uintptr_t)(ud & ~(uint64_t)15);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static struct io_uring_sqe *get_sqe(struct chp_loop *l)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
        if (!sqe) {
                io_uring_submit(&l->ring);
                sqe = io_uring_get_sqe(&l->ring);
        }
        return sqe; /* NULL only if the kernel refuses to take submissions */
}

/* ---- arming operations ------------------------------------------------------------------- */

static void arm_accept(struct chp_loop *l)
{
        uint64_t now = 0;
        for (int i = 0; i < MAX_LISTENERS; i++) {
                struct listener *li = &l->lis[i];
                if (li->armed || l->stopping || li->fd < 0)
                        continue;
                if (li->paused_until) {
                        if (!now)
                                now = chp_net_now_ms();
                        if (now < li->paused_until)
                                continue; /* backing off after a failure; the tick retries */
                        li->paused_until = 0;
                }
                struct io_uring_sqe *sqe = get_sqe(l);
                if (!sqe)
                        return;
                io_uring_prep_multishot_accept(sqe, li->fd, NULL, NULL, SOCK_CLOEXEC);
                io_uring_sqe_set_data64(sqe, ud_pack(li, OP_ACCEPT));
                li->armed = true;
        }
}

static bool any_accept_armed(const struct chp_loop *l)
{
        for (int i = 0; i < MAX_LISTENERS; i++)
                if (l->lis[i].armed)
                        return true;
        return false;
}

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

static void arm_recv(struct conn *c)
{
        struct chp_loop *l = c->loop;
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe)
                return;
        uint8_t *raw;
        size_t room;
        if (c->body && c->tr->plaintext(c) && !c->lingering) {
                /* the body's final buffer, straight from the socket, as far as granted */
                size_t n = c->body_len - c->body_got;
                io_uring_prep_recv(sqe, c->fd, c->body + c->body_got,
                                   n < c->grant_left ? n : c->grant_left, 0);
        } else if ((raw = c->tr->recv_space(c, &room))) {
                /* a body over the transport (records): large receives into its buffer, sized
                 * by it from the grant */
                io_uring_prep_recv(sqe, c->fd, raw, room, 0);
        } else {
                io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
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
        if (c->body ? !mem_grant(c) : !c->ops->can_read(c))
                return;
        arm_recv(c);
}

/* ---- output ------------------------------------------------------------------------------ */

static void out_free(struct conn *c, struct out_item *it)
{
        if (it->splice)
                chp_store_loc_release(c->sh->store, &it->loc);
        free(it);
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
                if (c->out_tail)
                        c->out_tail->next = t;
                else
                        c->out_head = t;
                c->out_tail = t;
        }
        uint8_t *p = t->data + t->len;
        t->len += n;
        c->out_bytes += n;
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
        if (c->out_tail)
                c->out_tail->next = t;
        else
                c->out_head = t;
        c->out_tail = t;
        c->out_bytes += n;
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
 * sent, and c->slice is neither reused nor freed, until its completion (on_read). Returns 0
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
        if (c->out_tail)
                c->out_tail->next = t;
        else
                c->out_head = t;
        c->out_tail = t;
        c->out_bytes += len;
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

/* The last words are sent. A plaintext (HTTP) client may still be sending a request body that
 * was answered without being read; closing with those bytes unread would make the kernel reset
 * the connection, and the client, still writing, would likely never read the answer. So the
 * write side is shut (the client sees the end after the answer) and what it still sends is
 * dropped until it closes, for at most LINGER_MS and LINGER_MAX bytes (nginx's lingering
 * close). Over Noise records the end is a close record and the connection just closes. */
static void conn_finish(struct conn *c)
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
                arm_recv(c); /* into provided buffers, dropped as they come (on_recv) */
}

void conn_flush(struct conn *c)
{
        if (c->send_armed || c->closed)
                return;
        struct out_item *it = c->out_head;
        if (!it) {
                if (c->closing)
                        conn_finish(c);
                return;
        }
        struct chp_loop *l = c->loop;
        if (!it->wire && c->tr->sealing(c)) {
                if (it->splice) {
                        if (read_slice(c) != 0)
                                conn_close(c);
                        return; /* sealed and sent once read (on_read) */
                }
                if (seal_head(c) != 0) {
                        conn_close(c);
                        return;
                }
                it = c->out_head;
        }
        struct io_uring_sqe *sqe = get_sqe(l);
        if (!sqe)
                return;
        if (!it->splice) {
                /* MSG_MORE when a splice follows: its header and bytes leave in one segment */
                int flags = MSG_NOSIGNAL | (it->next && it->next->splice ? MSG_MORE : 0);
                io_uring_prep_send(sqe, c->fd, it->data + it->off, it->len - it->off, flags);
                io_uring_sqe_set_data64(sqe, ud_pack(c, OP_SEND));
        } else if (c->pipe_fill > 0) {
                io_uring_prep_splice(sqe, c->pipe[0], -1, c->fd, -1, (unsigned)c->pipe_fill,
                                     SPLICE_F_MOVE);
                io_uring_sqe_set_data64(sqe, ud_pack(c, OP_SPLICE_OUT));
        } else {
                if (ensure_pipe(c) != 0) {
                        conn_close(c);
                        return;
                }
                size_t n = it->len - it->off;
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
        while (c->out_head) {
                struct out_item *it = c->out_head;
                c->out_head = it->next;
                out_free(c, it);
        }
        if (c->pipe[0] >= 0) {
                close(c->pipe[0]);
                close(c->pipe[1]);
        }
        if (c->fd >= 0)
                close(c->fd);
        free(c->in);
        free(c->slice);
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

void conn_close_after_flush(struct conn *c)
{
        if (c->closing)
                return;
        c->tr->close_record(c); /* over records, the end is said, not just a cut */
        c->closing = true;
        c->last_progress = chp_net_now_ms();
        if (!c->out_head && !c->send_armed)
                conn_finish(c);
}

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
 * requests in flight or receiving a body owes none; the handshake has a deadline of its own. */
static bool in_head(const struct conn *c)
{
        if (c->body || c->closing || c->closed || c->tr->handshaking(c) || c->ops->busy(c))
                return false;
        return c->in_len > 0 || c->tr->pending(c) || (!c->ops->secure && !c->replied);
}

/* header_timeout counts from the first byte of a head (from accept for a first HTTP head). */
static void head_track(struct conn *c, uint64_t now)
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

/* A connection the relay cannot take: the face's busy reply if it has one (HTTP's 503), then
 * it is closed. The socket is not blocked on: what does not fit in its buffer is not sent. */
static void refuse_busy(int fd, const struct proto_ops *ops)
{
        if (ops->busy_reply) {
                ssize_t w =
                    send(fd, ops->busy_reply, strlen(ops->busy_reply), MSG_DONTWAIT | MSG_NOSIGNAL);
                (void)w;
                shutdown(fd, SHUT_WR);
        }
        close(fd);
}

/* Out of descriptors: gives up the reserve descriptor to take the waiting connections one at a
 * time, answers each "busy" and closes it, then takes the reserve back. Without this the
 * connections would wait in the backlog until their clients gave up. */
static void shed_backlog(struct chp_loop *l, struct listener *li)
{
        if (l->reserve_fd >= 0) {
                close(l->reserve_fd);
                l->reserve_fd = -1;
        }
        int fl = fcntl(li->fd, F_GETFL);
        /* no accept of the ring is armed on this listener now: a non-blocking accept here
         * cannot race one (the flag is put back before the listener is re-armed) */
        if (fl >= 0 && fcntl(li->fd, F_SETFL, fl | O_NONBLOCK) == 0) {
                for (int i = 0; i < SHED_MAX; i++) {
                        int fd = accept4(li->fd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd < 0)
                                break;
                        refuse_busy(fd, li->ops);
                        atomic_fetch_add(&l->sh->metrics->closed[CHP_CLOSE_NO_FDS], 1);
                }
                fcntl(li->fd, F_SETFL, fl);
        }
        l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void accept_failed(struct chp_loop *l, struct listener *li, int err)
{
        enum chp_accept_err why = err == -EMFILE                      ? CHP_ACCEPT_EMFILE
                                  : err == -ENFILE                    ? CHP_ACCEPT_ENFILE
                                  : err == -ENOMEM || err == -ENOBUFS ? CHP_ACCEPT_NOMEM
                                                                      : CHP_ACCEPT_OTHER;
        atomic_fetch_add(&l->sh->metrics->accept_errors[why], 1);
        if (why == CHP_ACCEPT_EMFILE || why == CHP_ACCEPT_ENFILE)
                shed_backlog(l, li);
        uint64_t now = chp_net_now_ms();
        /* the kernel ended the multishot accept; re-arming it at once would fail again at once:
         * back off (doubling) and let the tick re-arm it */
        if (!li->armed) {
                li->pause_ms = li->pause_ms ? li->pause_ms * 2 : ACCEPT_PAUSE_MIN_MS;
                if (li->pause_ms > ACCEPT_PAUSE_MAX_MS)
                        li->pause_ms = ACCEPT_PAUSE_MAX_MS;
                li->paused_until = now + li->pause_ms;
        }
        l->accept_fails++;
        if (!l->accept_log_at || now - l->accept_log_at >= ACCEPT_LOG_MS) {
                char since[64] = "";
                if (l->accept_log_at)
                        snprintf(since, sizeof(since), " (%u failures since the last warning)",
                                 l->accept_fails);
                chp_log_warn("loop",
                             "accept: %s%s; new connections are answered busy and closed until "
                             "it clears (chapar_accept_errors_total)",
                             chp_strerror(err), since);
                l->accept_log_at = now;
                l->accept_fails = 0;
        }
}

static void on_accept(struct chp_loop *l, struct listener *li, struct io_uring_cqe *cqe)
{
        if (!(cqe->flags & IORING_CQE_F_MORE))
                li->armed = false; /* re-armed after this batch unless stopping or paused */
        if (cqe->res < 0) {
                if (cqe->res != -ECANCELED)
                        accept_failed(l, li, cqe->res);
                return;
        }
        li->pause_ms = 0;
        int fd = cqe->res;
        const struct chp_config *cfg = l->sh->cfg;
        unsigned cap = cfg->max_connections < l->fd_conns ? cfg->max_connections : l->fd_conns;
        if (l->stopping || atomic_load(&l->sh->conns) >= cap) {
                chp_log_debug("loop", "connection refused: %s",
                              l->stopping ? "stopping" : "connection cap reached");
                if (!l->stopping)
                        atomic_fetch_add(&l->sh->metrics->closed[CHP_CLOSE_CAP], 1);
                refuse_busy(fd, li->ops);
                return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = aligned_alloc(16, (sizeof(struct conn) + 15) & ~(size_t)15);
        if (!c) {
                close(fd);
                return;
        }
        *c = (struct conn){
            .loop = l, .sh = l->sh, .fd = fd, .refs = 1, .pipe = {-1, -1}, .ops = li->ops,
            .tr = li->ops->transport ? li->ops->transport : &chp_transport_plain};
        c->born = c->last_active = c->last_progress = c->rate_t0 = chp_net_now_ms();
        /* the first HTTP head is due header_timeout after accept (a native connection has
         * handshake_timeout for its handshake first) */
        if (!li->ops->secure)
                c->head_since = c->born;
        if (c->tr->attach(c) != 0 || c->ops->attach(c) != 0) {
                c->ops->detach(c);
                c->tr->detach(c);
                close(fd);
                free(c);
                return;
        }
        c->next = l->conns;
        if (l->conns)
                l->conns->prev = c;
        l->conns = c;
        l->nconns++;
        atomic_fetch_add(&l->sh->conns, 1);
        conn_maybe_read(c);
}

static void recycle_buffer(struct chp_loop *l, unsigned bid)
{
        io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE,
                              (unsigned short)bid, io_uring_buf_ring_mask(BUF_COUNT), 0);
        io_uring_buf_ring_advance(l->br, 1);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
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
                if (rc && !c->closed)
                        conn_close(c);
                if (!c->closed)
                        c->ops->on_input(c);
                head_track(c, c->last_progress);
                conn_kick(c);
        }
        conn_release(c);
}

static void on_send(struct conn *c, struct io_uring_cqe *cqe, enum op op)
{
        c->send_armed = false;
        int res = cqe->res;
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
                conn_flush(c);
                conn_maybe_read(c); /* output drained: flow control may allow reading */
        }
        conn_release(c);
}

/* A slice of a stored chunk read for sealing (read_slice): sealed once whole, then sent. */
static void on_read(struct conn *c, struct io_uring_cqe *cqe)
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
 * memory, or for the writer with no body asked for) does not count. */
static bool body_too_slow(struct conn *c, uint64_t now, uint64_t rate, uint64_t window)
{
        if (!c->body || c->mem_wait || !rate) {
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
                head_track(c, now);
                if (c->closing) {
                        if (c->lingering ? now >= c->linger_until : now - c->last_progress > io)
                                conn_close(c); /* could not flush its last words in time */
                } else if (c->tr->handshaking(c) && now - c->born > hs) {
                        why = CHP_CLOSE_HANDSHAKE_TIMEOUT;
                } else if (c->head_since && now - c->head_since > head) {
                        why = CHP_CLOSE_HEADER_TIMEOUT;
                } else if (body_too_slow(c, now, cfg->min_body_rate,
                                         pressure && c->mem_held ? PRESSURE_MS : window)) {
                        why = CHP_CLOSE_SLOW_BODY;
                } else if (((partial && !c->mem_wait) || sending) && now - c->last_progress > io) {
                        why = CHP_CLOSE_STALLED; /* (waiting for memory is the relay's doing) */
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
        /* connections paused by the shared memory budget get another chance */
        for (struct conn *c = l->conns; c; c = c->next)
                conn_maybe_read(c);
}

/* ---- create / run / destroy -------------------------------------------------------------- */

static unsigned open_fds(void)
{
        unsigned n = 0;
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return 0;
        while (readdir(d))
                n++;
        closedir(d);
        return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own descriptor */
}

/* Raises the soft descriptor limit to the hard one and returns how many connections it leaves
 * room for: the limit less what is open now (store, rings, listeners) and some headroom (pipes
 * of downloads, federation, reserves). Warns once when max_connections is more than that. */
static unsigned fd_budget(struct chp_shared *sh)
{
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
                return UINT_MAX;
        if (rl.rlim_cur < rl.rlim_max) {
                struct rlimit up = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
                if (setrlimit(RLIMIT_NOFILE, &up) == 0)
                        rl.rlim_cur = rl.rlim_max;
        }
        if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UINT_MAX)
                return UINT_MAX;
        uint64_t keep = (uint64_t)open_fds() + FD_HEADROOM + 4u * sh->cfg->threads;
        unsigned fit = rl.rlim_cur > keep + 1 ? (unsigned)(rl.rlim_cur - keep) : 1;
        if (sh->cfg->max_connections > fit && !atomic_exchange(&sh->fds_warned, true))
                chp_log_warn("loop",
                             "max_connections %u is more than the descriptor limit (%llu) "
                             "allows: taking at most %u connections (raise LimitNOFILE= or "
                             "ulimit -n; a downloading connection takes two more descriptors)",
                             sh->cfg->max_connections, (unsigned long long)rl.rlim_cur, fit);
        return fit;
}

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
                l->lis[i] = i < n ? (struct listener){.fd = lis[i].fd, .ops = lis[i].ops}
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
        l->fd_conns = fd_budget(sh);
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
        arm_accept(l);
        arm_wake(l);
        arm_tick(l);
        for (;;) {
                if (l->stopping && l->nconns == 0 && !any_accept_armed(l))
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
                                on_accept(l, ud_ptr(ud), cqe);
                                break;
                        case OP_RECV:
                                on_recv(ud_ptr(ud), cqe);
                                break;
                        case OP_SEND:
                        case OP_SPLICE_IN:
                        case OP_SPLICE_OUT:
                                on_send(ud_ptr(ud), cqe, ud_op(ud));
                                break;
                        case OP_WAKE:
                                l->wake_armed = false;
                                drain_done(l);
                                break;
                        case OP_TICK:
                                on_tick(l);
                                break;
                        case OP_READ:
                                on_read(ud_ptr(ud), cqe);
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
                arm_accept(l);
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
