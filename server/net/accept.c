/* accept.c — the loop's listening sockets: the multishot accept, admitting a connection (the
 * connection cap, the descriptor budget, the cap per client address) or refusing it ("busy", or
 * "too many" for its address), and backing off and shedding the backlog through a reserve
 * descriptor when accepts fail. Loop thread only (net/loop_int.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "congestion.h"
#include "conn.h"
#include "err.h"
#include "log.h"
#include "loop_int.h"
#include "metrics.h"

/* accept failures (out of descriptors or memory): the listener pauses, doubling up to a second */
#define ACCEPT_PAUSE_MIN_MS 100
#define ACCEPT_PAUSE_MAX_MS 1000
#define ACCEPT_LOG_MS       10000 /* one warning per this period, with a count */
#define SHED_MAX            256   /* connections answered "busy" per accept failure */
#define FD_HEADROOM         64    /* descriptors kept back from max_connections */

void chp_loop_arm_accept(struct chp_loop *l)
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

bool chp_loop_any_accept_armed(const struct chp_loop *l)
{
        for (int i = 0; i < MAX_LISTENERS; i++)
                if (l->lis[i].armed)
                        return true;
        return false;
}

/* A connection the relay does not take: reply (the face's busy or limited reply: HTTP's 503 or
 * 429), if it has one, then it is closed. The socket is not blocked on: what does not fit in its
 * buffer is not sent. */
static void refuse(int fd, const char *reply)
{
        if (reply) {
                ssize_t w = send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
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
                        refuse(fd, li->ops->busy_reply);
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

void chp_loop_on_accept(struct chp_loop *l, struct listener *li, struct io_uring_cqe *cqe)
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
                refuse(fd, li->ops->busy_reply);
                return;
        }
        /* the client's address, for the limits per address (an unknown one is not counted) */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        struct chp_limits_key peer = {0};
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
                (void)chp_limits_key_from_addr((struct sockaddr *)&ss, sl, &peer);
        uint64_t now = chp_net_now_ms();
        int32_t slot;
        if (chp_limits_conn_open(l->sh->limits, &peer, now, &slot) != 0) {
                /* many at a time under attack: counters, not a log line each */
                atomic_fetch_add(&l->sh->metrics->closed[CHP_CLOSE_ADDRESS_CAP], 1);
                chp_metrics_refuse(l->sh->metrics, CHP_ELIMITED);
                refuse(fd, li->ops->limited_reply);
                return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* set again: a route's congctl (ip route ... congctl NAME) takes precedence over what the
         * socket inherited from its listener, the relay's own choice over both */
        if (l->sh->congestion)
                chp_congestion_apply(l->sh->congestion, fd);
        struct conn *c = aligned_alloc(16, (sizeof(struct conn) + 15) & ~(size_t)15);
        if (!c) {
                chp_limits_conn_close(l->sh->limits, slot);
                close(fd);
                return;
        }
        *c = (struct conn){.loop = l,
                           .sh = l->sh,
                           .fd = fd,
                           .refs = 1,
                           .pipe = {-1, -1},
                           .ops = li->ops,
                           .face = li->face,
                           .tr = li->ops->transport ? li->ops->transport : &chp_transport_plain,
                           .peer = peer,
                           .lim_slot = slot,
                           .lim_subject = CHP_LIMITS_NONE};
        c->born = c->last_active = c->last_progress = c->rate_t0 = now;
        /* the first HTTP head is due header_timeout after accept (a native connection has
         * handshake_timeout for its handshake first) */
        if (!li->ops->secure)
                c->head_since = c->born;
        if (c->tr->attach(c) != 0 || c->ops->attach(c) != 0) {
                c->ops->detach(c);
                c->tr->detach(c);
                chp_limits_conn_close(l->sh->limits, slot);
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
unsigned chp_loop_fd_budget(struct chp_shared *sh)
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
