/*
 * linkem: a packet-level link emulator between two TUN devices, for the link lab (issue 16).
 *
 * This kernel has no netem, so links are emulated in user space: every IP packet read from end A
 * is written to end B (the "up" direction) and back (the "down" direction) after the direction's
 * rules: outages, random and Gilbert-Elliott loss, a rate limit with a bounded queue (tail drop
 * when the queue would hold more than `queue` of sending time), one-way delay and jitter.
 * One thread, one poll loop, a binary heap of scheduled deliveries; memory is a fixed pool of
 * LINKEM_SLOTS packet buffers allocated at start (a full pool drops, it never grows).
 * Counters go to stderr on SIGINT/SIGTERM/SIGUSR1. Exit status: 0 on a signal stop, 2 on bad
 * arguments, 1 on a runtime error.
 *
 *   linkem --a-ns /run/netns/client --a-dev tun0 --b-ns /run/netns/server --b-dev tun0 \
 *          --up rate=20mbit,delay=50ms,loss=1%,queue=100ms --down rate=20mbit,delay=50ms
 *   linkem --a-fd 3 --b-fd 4 --up ... --down ...      (ends already open, e.g. in a test)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define LINKEM_SLOTS     16384 /* packets in flight or queued, both directions together */
#define LINKEM_PKT_BYTES 2048  /* > the lab's 1500-byte MTU; a longer read is cut and dropped */
#define LINKEM_BATCH     64 /* reads per end per poll round, so one end cannot starve the other */
#define NS_PER_SEC       1000000000LL

struct dir_rule {
        double rate_bps;   /* 0 = unlimited */
        int64_t delay_ns;  /* one-way propagation delay */
        int64_t jitter_ns; /* uniform in [-jitter, +jitter], clamped at 0 */
        bool reorder;      /* let jitter reorder packets; otherwise delivery stays FIFO */
        double loss;       /* independent random loss, 0..1 */
        bool ge_on;        /* Gilbert-Elliott: p good->bad, r bad->good, loss in each state */
        double ge_p, ge_r, ge_loss_bad, ge_loss_good;
        int64_t queue_ns;  /* tail drop when the backlog exceeds this much sending time */
        int64_t outage_ns; /* drop everything for outage_ns at the end of each period */
        int64_t outage_every_ns;
};

struct dir_state {
        struct dir_rule rule;
        int in_fd, out_fd;
        int64_t link_free_ns; /* when the emulated wire finishes the last accepted packet */
        int64_t last_deliver_ns;
        bool ge_bad;
        uint64_t rx, tx, drop_loss, drop_queue, drop_outage, drop_pool, drop_write, bytes_tx;
};

struct slot {
        int64_t at_ns;
        uint64_t seq;
        uint16_t len;
        uint8_t dir;
        uint8_t data[LINKEM_PKT_BYTES];
};

struct linkem {
        struct dir_state dir[2]; /* 0 = up (A to B), 1 = down (B to A) */
        struct slot *slots;
        uint32_t *free_list, n_free;
        uint32_t *heap, n_heap; /* indices into slots, min-heap on (at_ns, seq) */
        uint64_t seq;
        uint64_t rng;
        int64_t start_ns;
        uint8_t scratch[LINKEM_PKT_BYTES]; /* where a packet goes to be dropped when the pool is
                                              empty */
};

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t dump_flag;

static void on_signal(int sig)
{
        if (sig == SIGUSR1)
                dump_flag = 1;
        else
                stop_flag = 1;
}

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* xorshift64*: reproducible with --seed, good enough for loss decisions. */
static double rnd(struct linkem *lk)
{
        lk->rng ^= lk->rng >> 12;
        lk->rng ^= lk->rng << 25;
        lk->rng ^= lk->rng >> 27;
        return (double)((lk->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static bool slot_before(const struct linkem *lk, uint32_t a, uint32_t b)
{
        const struct slot *x = &lk->slots[a], *y = &lk->slots[b];
        return x->at_ns < y->at_ns || (x->at_ns == y->at_ns && x->seq < y->seq);
}

static void heap_push(struct linkem *lk, uint32_t s)
{
        uint32_t i = lk->n_heap++;
        while (i > 0) {
                uint32_t parent = (i - 1) / 2;
                if (!slot_before(lk, s, lk->heap[parent]))
                        break;
                lk->heap[i] = lk->heap[parent];
                i = parent;
        }
        lk->heap[i] = s;
}

static uint32_t heap_pop(struct linkem *lk)
{
        uint32_t top = lk->heap[0];
        uint32_t last = lk->heap[--lk->n_heap];
        uint32_t i = 0;
        for (;;) {
                uint32_t c = 2 * i + 1;
                if (c >= lk->n_heap)
                        break;
                if (c + 1 < lk->n_heap && slot_before(lk, lk->heap[c + 1], lk->heap[c]))
                        c++;
                if (!slot_before(lk, lk->heap[c], last))
                        break;
                lk->heap[i] = lk->heap[c];
                i = c;
        }
        if (lk->n_heap > 0)
                lk->heap[i] = last;
        return top;
}

/* ---- argument parsing: every error names the offending text and returns -EINVAL ---- */

static int parse_double(const char *s, double *out)
{
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno != 0 || end == s || !isfinite(v) || v < 0)
                return -EINVAL;
        *out = v;
        return (int)(end - s);
}

struct unit {
        const char *suffix;
        double mul;
};

/* A number with one of units' suffixes ("" included where the table has it), scaled; at most
 * max after scaling. 0 or -EINVAL. */
static int parse_scaled(const char *s, const struct unit *units, size_t n, double max,
                        double *out /* out */)
{
        double v;
        int len = parse_double(s, &v);
        if (len < 0)
                return len;
        for (size_t i = 0; i < n; i++)
                if (strcmp(s + len, units[i].suffix) == 0) {
                        if (v * units[i].mul > max)
                                return -EINVAL;
                        *out = v * units[i].mul;
                        return 0;
                }
        return -EINVAL;
}

/* "50ms", "1.5s", "200us", bare number = ms; in ns. */
static int parse_time(const char *s, int64_t *out /* out */)
{
        static const struct unit units[] = {{"", 1e6}, {"ms", 1e6}, {"s", 1e9}, {"us", 1e3}};
        double ns;
        int rc = parse_scaled(s, units, sizeof(units) / sizeof(units[0]), 3600e9, &ns);
        if (rc == 0)
                *out = (int64_t)ns;
        return rc;
}

/* "20mbit", "500kbit", "1gbit", "64000" (bit/s). */
static int parse_rate(const char *s, double *out /* out */)
{
        static const struct unit units[] = {
            {"", 1}, {"bit", 1}, {"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}};
        return parse_scaled(s, units, sizeof(units) / sizeof(units[0]), 100e9, out);
}

/* "1%" or "0.01" -> probability. */
static int parse_prob(const char *s, double *out /* out */)
{
        double v;
        int n = parse_double(s, &v);
        if (n < 0)
                return n;
        if (strcmp(s + n, "%") == 0)
                v /= 100;
        else if (s[n] != '\0')
                return -EINVAL;
        if (v > 1)
                return -EINVAL;
        *out = v;
        return 0;
}

static int parse_rule(const char *spec, struct dir_rule *r /* out */)
{
        char buf[512];
        memset(r, 0, sizeof(*r));
        if (strlen(spec) >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, spec, strlen(spec) + 1);
        char *save = NULL;
        for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                char *val = strchr(kv, '=');
                if (val)
                        *val++ = '\0';
                int rc = -EINVAL;
                if (strcmp(kv, "reorder") == 0 && !val) {
                        r->reorder = true;
                        rc = 0;
                } else if (!val) {
                        rc = -EINVAL;
                } else if (strcmp(kv, "rate") == 0) {
                        rc = parse_rate(val, &r->rate_bps);
                } else if (strcmp(kv, "delay") == 0) {
                        rc = parse_time(val, &r->delay_ns);
                } else if (strcmp(kv, "jitter") == 0) {
                        rc = parse_time(val, &r->jitter_ns);
                } else if (strcmp(kv, "loss") == 0) {
                        rc = parse_prob(val, &r->loss);
                } else if (strcmp(kv, "queue") == 0) {
                        rc = parse_time(val, &r->queue_ns);
                } else if (strcmp(kv, "ge") == 0) {
                        /* ge=P:R:LOSSBAD:LOSSGOOD, each a probability ("0.5%" or "0.005"). */
                        char *f[4];
                        int nf = 0;
                        char *s2 = NULL;
                        for (char *t = strtok_r(val, ":", &s2); t && nf < 4;
                             t = strtok_r(NULL, ":", &s2))
                                f[nf++] = t;
                        if (nf == 4 && !strtok_r(NULL, ":", &s2) &&
                            parse_prob(f[0], &r->ge_p) == 0 && parse_prob(f[1], &r->ge_r) == 0 &&
                            parse_prob(f[2], &r->ge_loss_bad) == 0 &&
                            parse_prob(f[3], &r->ge_loss_good) == 0 && r->ge_r > 0) {
                                r->ge_on = true;
                                rc = 0;
                        }
                } else if (strcmp(kv, "outage") == 0) {
                        /* outage=3s/20s: down for 3 s at the end of every 20 s period. */
                        char *slash = strchr(val, '/');
                        if (slash) {
                                *slash = '\0';
                                if (parse_time(val, &r->outage_ns) == 0 &&
                                    parse_time(slash + 1, &r->outage_every_ns) == 0 &&
                                    r->outage_ns < r->outage_every_ns)
                                        rc = 0;
                        }
                }
                if (rc < 0) {
                        fprintf(stderr, "linkem: bad rule '%s%s%s' in '%s'\n", kv, val ? "=" : "",
                                val ? val : "", spec);
                        return -EINVAL;
                }
        }
        if (r->rate_bps > 0 && r->queue_ns == 0)
                r->queue_ns = 100 * 1000000LL; /* a rate without a queue bound would be a bug */
        return 0;
}

/* Opens the existing TUN device `dev` inside the network namespace at `ns_path` (NULL = ours).
 * Returns the fd or a negative errno; the caller's namespace is restored either way. */
static int open_tun(const char *ns_path, const char *dev)
{
        int self = -1, target = -1, fd = -1, rc;
        if (strlen(dev) >= IFNAMSIZ)
                return -ENAMETOOLONG;
        if (ns_path) {
                self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
                target = open(ns_path, O_RDONLY | O_CLOEXEC);
                if (self < 0 || target < 0) {
                        rc = -errno;
                        goto out;
                }
                if (setns(target, CLONE_NEWNET) < 0) {
                        rc = -errno;
                        goto out;
                }
        }
        fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                rc = -errno;
        } else {
                struct ifreq ifr;
                memset(&ifr, 0, sizeof(ifr));
                ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
                memcpy(ifr.ifr_name, dev, strlen(dev));
                rc = ioctl(fd, TUNSETIFF, &ifr) < 0 ? -errno : 0;
        }
        if (ns_path && setns(self, CLONE_NEWNET) < 0 && rc == 0)
                rc = -errno;
out:
        if (rc < 0 && fd >= 0)
                close(fd);
        if (self >= 0)
                close(self);
        if (target >= 0)
                close(target);
        return rc < 0 ? rc : fd;
}

static const char *drop_reason(struct linkem *lk, struct dir_state *d, size_t len, int64_t now)
{
        const struct dir_rule *r = &d->rule;
        if (r->outage_every_ns > 0) {
                int64_t phase = (now - lk->start_ns) % r->outage_every_ns;
                if (phase >= r->outage_every_ns - r->outage_ns)
                        return "outage";
        }
        if (r->loss > 0 && rnd(lk) < r->loss)
                return "loss";
        if (r->ge_on) {
                /* One state step per packet, then the loss of the state it lands in. */
                if (d->ge_bad ? rnd(lk) < r->ge_r : rnd(lk) < r->ge_p)
                        d->ge_bad = !d->ge_bad;
                if (rnd(lk) < (d->ge_bad ? r->ge_loss_bad : r->ge_loss_good))
                        return "loss";
        }
        if (r->rate_bps > 0) {
                int64_t start = d->link_free_ns > now ? d->link_free_ns : now;
                int64_t tx = (int64_t)((double)len * 8 * 1e9 / r->rate_bps);
                if (start + tx - now > r->queue_ns)
                        return "queue";
                d->link_free_ns = start + tx;
        }
        return NULL;
}

static void accept_packet(struct linkem *lk, int di, uint32_t s, size_t len, int64_t now)
{
        struct dir_state *d = &lk->dir[di];
        const struct dir_rule *r = &d->rule;
        const char *why = drop_reason(lk, d, len, now);
        if (why) {
                if (why[0] == 'o')
                        d->drop_outage++;
                else if (why[0] == 'l')
                        d->drop_loss++;
                else
                        d->drop_queue++;
                lk->free_list[lk->n_free++] = s;
                return;
        }
        int64_t at = (r->rate_bps > 0 ? d->link_free_ns : now) + r->delay_ns;
        if (r->jitter_ns > 0) {
                at += (int64_t)((rnd(lk) * 2 - 1) * (double)r->jitter_ns);
                if (at < now)
                        at = now;
        }
        if (!r->reorder && at < d->last_deliver_ns)
                at = d->last_deliver_ns;
        d->last_deliver_ns = at;
        struct slot *sl = &lk->slots[s];
        sl->at_ns = at;
        sl->seq = lk->seq++;
        sl->len = (uint16_t)len;
        sl->dir = (uint8_t)di;
        heap_push(lk, s);
}

/* Reads up to LINKEM_BATCH packets from one end. Returns 0 or a negative errno (fatal). */
static int read_end(struct linkem *lk, int di, int64_t now)
{
        struct dir_state *d = &lk->dir[di];
        for (int i = 0; i < LINKEM_BATCH; i++) {
                bool have = lk->n_free > 0;
                uint32_t s = have ? lk->free_list[--lk->n_free] : 0;
                uint8_t *buf = have ? lk->slots[s].data : lk->scratch;
                ssize_t n = read(d->in_fd, buf, LINKEM_PKT_BYTES);
                if (n < 0) {
                        int e = errno;
                        if (have)
                                lk->free_list[lk->n_free++] = s;
                        if (e == EAGAIN || e == EINTR)
                                return 0;
                        return -e;
                }
                if (n == 0) {
                        if (have)
                                lk->free_list[lk->n_free++] = s;
                        return -EPIPE;
                }
                d->rx++;
                if (!have) {
                        d->drop_pool++;
                        continue;
                }
                if (n >= LINKEM_PKT_BYTES) { /* cut: longer than the MTU we were told */
                        d->drop_write++;
                        lk->free_list[lk->n_free++] = s;
                        continue;
                }
                accept_packet(lk, di, s, (size_t)n, now);
        }
        return 0;
}

static void deliver_due(struct linkem *lk, int64_t now)
{
        while (lk->n_heap > 0 && lk->slots[lk->heap[0]].at_ns <= now) {
                uint32_t s = heap_pop(lk);
                struct slot *sl = &lk->slots[s];
                struct dir_state *d = &lk->dir[sl->dir];
                if (write(d->out_fd, sl->data, sl->len) == (ssize_t)sl->len) {
                        d->tx++;
                        d->bytes_tx += sl->len;
                } else {
                        d->drop_write++;
                }
                lk->free_list[lk->n_free++] = s;
        }
}

static void dump_stats(const struct linkem *lk)
{
        static const char *names[2] = {"up", "down"};
        for (int i = 0; i < 2; i++) {
                const struct dir_state *d = &lk->dir[i];
                fprintf(stderr,
                        "linkem %s: rx %" PRIu64 " tx %" PRIu64 " bytes %" PRIu64
                        " drop loss %" PRIu64 " queue %" PRIu64 " outage %" PRIu64 " pool %" PRIu64
                        " write %" PRIu64 "\n",
                        names[i], d->rx, d->tx, d->bytes_tx, d->drop_loss, d->drop_queue,
                        d->drop_outage, d->drop_pool, d->drop_write);
        }
}

static void usage(void)
{
        fprintf(stderr,
                "usage: linkem (--a-fd N | [--a-ns PATH] --a-dev IF) (--b-fd N | [--b-ns PATH] "
                "--b-dev IF)\n"
                "              --up RULES --down RULES [--seed N]\n"
                "RULES: comma-separated rate=20mbit delay=50ms jitter=5ms reorder loss=1%%\n"
                "       ge=P:R:LOSSBAD:LOSSGOOD queue=100ms outage=3s/20s\n"
                "up is A to B, down is B to A.\n");
}

static int parse_fd(const char *s, int *out /* out */)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno != 0 || *s == '\0' || *end != '\0' || v < 0 || v > 1 << 20)
                return -EINVAL;
        *out = (int)v;
        return 0;
}

int main(int argc, char **argv)
{
        const char *ns[2] = {NULL, NULL}, *dev[2] = {NULL, NULL}, *spec[2] = {NULL, NULL};
        int fd[2] = {-1, -1};
        uint64_t seed = 0x9e3779b97f4a7c15ULL;
        struct linkem lk;
        int rc = 2;

        memset(&lk, 0, sizeof(lk));
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                        usage();
                        return 0;
                }
                if (i + 1 >= argc) {
                        fprintf(stderr, "linkem: '%s' needs a value\n", a);
                        usage();
                        return 2;
                }
                const char *v = argv[++i];
                int bad = 0;
                if (strcmp(a, "--a-ns") == 0)
                        ns[0] = v;
                else if (strcmp(a, "--b-ns") == 0)
                        ns[1] = v;
                else if (strcmp(a, "--a-dev") == 0)
                        dev[0] = v;
                else if (strcmp(a, "--b-dev") == 0)
                        dev[1] = v;
                else if (strcmp(a, "--a-fd") == 0)
                        bad = parse_fd(v, &fd[0]);
                else if (strcmp(a, "--b-fd") == 0)
                        bad = parse_fd(v, &fd[1]);
                else if (strcmp(a, "--up") == 0)
                        spec[0] = v;
                else if (strcmp(a, "--down") == 0)
                        spec[1] = v;
                else if (strcmp(a, "--seed") == 0) {
                        char *end;
                        seed = strtoull(v, &end, 0);
                        bad = (*v == '\0' || *end != '\0') ? -EINVAL : 0;
                } else {
                        fprintf(stderr, "linkem: unknown option '%s'\n", a);
                        usage();
                        return 2;
                }
                if (bad) {
                        fprintf(stderr, "linkem: bad value '%s' for %s\n", v, a);
                        return 2;
                }
        }
        for (int i = 0; i < 2; i++) {
                if ((fd[i] >= 0) == (dev[i] != NULL) || (fd[i] >= 0 && ns[i])) {
                        fprintf(stderr, "linkem: end %c needs exactly one of --%c-fd or --%c-dev\n",
                                'a' + i, 'a' + i, 'a' + i);
                        usage();
                        return 2;
                }
                if (!spec[i]) {
                        fprintf(stderr, "linkem: --%s is required\n", i ? "down" : "up");
                        usage();
                        return 2;
                }
                if (parse_rule(spec[i], &lk.dir[i].rule) < 0)
                        return 2;
        }
        lk.rng = seed ? seed : 1;

        for (int i = 0; i < 2; i++) {
                if (dev[i]) {
                        fd[i] = open_tun(ns[i], dev[i]);
                        if (fd[i] < 0) {
                                fprintf(stderr, "linkem: cannot open TUN %s%s%s: %s\n", dev[i],
                                        ns[i] ? " in " : "", ns[i] ? ns[i] : "", strerror(-fd[i]));
                                rc = 1;
                                goto out;
                        }
                } else {
                        int fl = fcntl(fd[i], F_GETFL);
                        if (fl < 0 || fcntl(fd[i], F_SETFL, fl | O_NONBLOCK) < 0) {
                                fprintf(stderr, "linkem: fd %d: %s\n", fd[i], strerror(errno));
                                fd[i] = -1;
                                rc = 1;
                                goto out;
                        }
                }
        }
        lk.dir[0].in_fd = fd[0];
        lk.dir[0].out_fd = fd[1];
        lk.dir[1].in_fd = fd[1];
        lk.dir[1].out_fd = fd[0];

        lk.slots = calloc(LINKEM_SLOTS, sizeof(*lk.slots));
        lk.free_list = calloc(LINKEM_SLOTS, sizeof(*lk.free_list));
        lk.heap = calloc(LINKEM_SLOTS, sizeof(*lk.heap));
        if (!lk.slots || !lk.free_list || !lk.heap) {
                fprintf(stderr, "linkem: out of memory\n");
                rc = 1;
                goto out;
        }
        for (uint32_t i = 0; i < LINKEM_SLOTS; i++)
                lk.free_list[lk.n_free++] = LINKEM_SLOTS - 1 - i;

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);

        lk.start_ns = now_ns();
        fprintf(stderr, "linkem: running\n");
        rc = 0;
        while (!stop_flag) {
                if (dump_flag) {
                        dump_flag = 0;
                        dump_stats(&lk);
                }
                struct pollfd p[2] = {{.fd = fd[0], .events = POLLIN},
                                      {.fd = fd[1], .events = POLLIN}};
                struct timespec ts, *tsp = NULL;
                int64_t now = now_ns();
                if (lk.n_heap > 0) {
                        int64_t wait = lk.slots[lk.heap[0]].at_ns - now;
                        if (wait < 0)
                                wait = 0;
                        ts.tv_sec = (time_t)(wait / NS_PER_SEC);
                        ts.tv_nsec = (long)(wait % NS_PER_SEC);
                        tsp = &ts;
                }
                if (ppoll(p, 2, tsp, NULL) < 0 && errno != EINTR) {
                        fprintf(stderr, "linkem: poll: %s\n", strerror(errno));
                        rc = 1;
                        break;
                }
                now = now_ns();
                for (int i = 0; i < 2 && rc == 0; i++) {
                        if (p[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
                                fprintf(stderr, "linkem: end %c closed\n", 'a' + i);
                                rc = 1;
                        } else if (p[i].revents & POLLIN) {
                                int e = read_end(&lk, i, now);
                                if (e < 0) {
                                        fprintf(stderr, "linkem: read end %c: %s\n", 'a' + i,
                                                strerror(-e));
                                        rc = 1;
                                }
                        }
                }
                if (rc != 0)
                        break;
                deliver_due(&lk, now_ns());
        }
        dump_stats(&lk);
out:
        for (int i = 0; i < 2; i++)
                if (fd[i] >= 0)
                        close(fd[i]);
        free(lk.slots);
        free(lk.free_list);
        free(lk.heap);
        return rc;
}
