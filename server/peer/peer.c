/* peer.c — federation workers: fetch files from peers, offer files to them (see peer.h).
 *
 *   client ---GET_MANIFEST(id, origin A)--> relay B                          relay A
 *                                             job: IK handshake ------------>
 *                                                  GET_MANIFEST(id) -------->
 *                                             <-------------------------------- MANIFEST
 *                                             store: upload of the manifest (pending: the
 *                                             client sees it PARTIAL and fetches what is here)
 *                                                  GET_CHUNK x N in flight -> (N: A's window
 *                                                  in chunks, at most its max_inflight)
 *                                             <-------------------------------- CHUNK_DATA
 *                                             address checked, stored (durable), next ...
 *                                             last chunk: commit, the file is cached here
 */
#include "peer.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <netinet/in.h>
#include <sys/socket.h>

#include <sodium.h>

#include "channel.h"
#include "config.h"
#include "congestion.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "manifest.h"
#include "metrics.h"
#include "net.h"
#include "proto.h"
#include "store.h"

#define WORKERS       4
#define MAX_JOBS      256
#define FETCH_WINDOW  16 /* chunks fetched and not yet stored here (puts_wait) */
#define FAIL_MEMORY_S 3  /* a failure is reported for this long; then a request retries */
#define NEGATIVE_S                                                                                 \
        30                  /* "no such file" (or an origin that never finishes) is answered from  \
                             * memory this long: repeated requests do not each cause a fetch */
#define PEER_TIMEOUT  15000 /* one wait on the peer's socket */
#define RATE_WINDOW_S 10    /* fetch_min_rate is measured over each window this long */
/* Following an upload still running at the origin (cut-through): the next poll comes an eighth
 * of the time since the last one that brought chunks, at least FOLLOW_MIN_MS (or what keeps the
 * manifests polled under FOLLOW_BYTES_S) and at most FOLLOW_MAX_MS: while the upload stores
 * chunks B lags it by little, a sender that resumes after a pause of T is seen within T/8, and
 * one that stopped is polled ever more rarely. While the interval is at most FOLLOW_HOLD_MS the
 * worker keeps its channel and follows; beyond, it is given back between polls. An origin that
 * stores nothing for fetch_timeout (at most FOLLOW_STALL_MS) is given up. */
#define FOLLOW_MIN_MS   50
#define FOLLOW_IDLE_DIV 8
#define FOLLOW_BYTES_S  65536 /* manifest bytes polled per second, at most (one file) */
#define FOLLOW_MAX_MS   2000
#define FOLLOW_HOLD_MS  250
#define FOLLOW_STALL_MS 120000 /* the client's default retry_s: a sender silent longer is gone */
#define WATCH_MS      250   /* how often the watchdog looks at the running jobs */
#define MAX_SLOTS     (4 * CHP_MAX_PEERS) /* peers configured over the process's life */

/* A slot is written once, before nslots counts it, and never changed after: loop threads read
 * it without a lock, a connection may keep its index. A reload that drops a peer clears its
 * active flag; one that adds or changes a peer takes a new slot. */
struct peer {
        char name[CHP_PEER_NAME_BYTES];
        char addr[CHP_PEER_ADDR_BYTES];
        uint8_t key[CHP_HASH_BYTES];
        atomic_bool active;
        int stat; /* its counts in chp_peers.stats: every slot of one name shares them */
};

_Static_assert(CHP_PEER_NAME_BYTES == CHP_TENANT_NAME_MAX + 1, "a peer's name and its NUL");

/* What a peer (by name) has done, for chp_peers_stats. Under the lock. */
struct peer_stat {
        char name[CHP_PEER_NAME_BYTES];
        enum chp_peer_state state;
        uint64_t fetches[CHP_FETCHED_NOUTCOMES];
        uint64_t offers_sent;
        int64_t last_fetch;
        enum chp_fetch_outcome last_outcome;
};

enum job_kind { JOB_FETCH, JOB_OFFER };

/* do_fetch's answers when the origin still uploads the file: poll it again later (not before
 * j->backoff_ms); or give up, its upload has stored nothing for the stall limit */
#define PENDING 1
#define STALLED 2

/* A job is queued (waiting for a worker, maybe not before not_before_ms), running (a worker has
 * it) or ended (state DONE or FAILED). Everything but cancel is under the lock. */
struct job {
        bool used;
        enum job_kind kind;
        int peer;
        uint8_t file_id[CHP_HASH_BYTES];
        enum chp_fetch_state state;
        bool queued;   /* waiting for a worker */
        bool running;  /* a worker has it */
        bool reported; /* a failure was told to a requester: the next request retries */
        time_t ended;
        time_t negative_until;  /* a failure answered from memory until then, without a fetch */
        uint64_t seq;           /* queue order: among equals, the longest waiting runs first */
        uint64_t deadline_ms;   /* the job gives up then: fetch_timeout after it was asked for,
                                 * or after a followed upload last brought chunks */
        uint64_t not_before_ms; /* a job polling a pending origin waits until then */
        uint64_t progress_ms;   /* asked for, or its last poll of a pending origin with chunks */
        uint32_t backoff_ms;    /* the next poll of a pending origin comes this much later */
        atomic_int cancel; /* set by the watchdog or stop: the channel's waits end */
        int fd;            /* the channel's socket while running, else -1 (the watchdog
                              reads its byte count) */
        uint64_t win_start_ms, win_bytes; /* the current fetch_min_rate window */
        char why[CHP_PEER_MSG_MAX];       /* why the job was canceled */
        enum chp_fetch_outcome outcome;   /* and what that counts as */
        char msg[CHP_PEER_MSG_MAX];
};

struct chp_peers {
        struct chp_shared *sh;
        struct peer *peers; /* MAX_SLOTS */
        atomic_int nslots;  /* slots in use (release-stored once a slot is filled) */
        atomic_int nactive; /* of them, peers configured now */
        atomic_uint_fast64_t upload_expiry, file_expiry; /* the running configuration's */
        atomic_uint_fast64_t fetch_timeout_ms;
        atomic_uint min_rate; /* bytes/s; 0: no floor */
        atomic_int per_peer;  /* jobs running against one peer at most */
        pthread_mutex_t lock;
        pthread_cond_t cond;       /* a job queued or ended, or stopping (CLOCK_MONOTONIC) */
        pthread_cond_t watch_cond; /* the watchdog's sleep: stopping (CLOCK_MONOTONIC) */
        struct job jobs[MAX_JOBS];
        int busy[MAX_SLOTS]; /* jobs running against each peer */
        struct peer_stat stats[MAX_SLOTS]; /* by name; names never leave it */
        int nstats;
        uint64_t seq;
        bool stopping;
        pthread_t threads[WORKERS];
        int nthreads;
        pthread_t watch;
        bool watching;
};

/* ---- a fetch ---------------------------------------------------------------------------- */

struct puts {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int inflight;
        int failed;
};

struct put_op {
        struct chp_store_req req;
        struct puts *ps;
        uint8_t *buf;
};

static void put_done(struct chp_store_req *req)
{
        struct put_op *op = (struct put_op *)req;
        struct puts *ps = op->ps;
        pthread_mutex_lock(&ps->lock);
        if (req->status && !ps->failed)
                ps->failed = req->status;
        ps->inflight--;
        pthread_cond_signal(&ps->cond);
        pthread_mutex_unlock(&ps->lock);
        free(op->buf);
        free(op);
}

static void puts_wait(struct puts *ps, int below)
{
        pthread_mutex_lock(&ps->lock);
        while (ps->inflight > below)
                pthread_cond_wait(&ps->cond, &ps->lock);
        pthread_mutex_unlock(&ps->lock);
}

__attribute__((format(printf, 3, 4))) static void job_msg(struct chp_peers *p, struct job *j,
                                                          const char *fmt, ...)
{
        char msg[CHP_PEER_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&p->lock);
        snprintf(j->msg, sizeof(j->msg), "%s", msg);
        pthread_mutex_unlock(&p->lock);
}

static bool canceled(struct job *j)
{
        return atomic_load(&j->cancel) != 0;
}

/* GET_CHUNKs a fetch keeps in flight: as many chunks of chunk_size as the peer's window holds (so
 * a long fat path stays full whatever the chunk size: 32 MiB by default), at most the requests
 * the peer takes at once, at least one. */
static uint32_t fetch_window(const struct chp_msg_hello_ok *hello, uint32_t chunk_size)
{
        uint32_t n = chunk_size ? hello->window_bytes / chunk_size : 1;
        if (n > hello->max_inflight)
                n = hello->max_inflight;
        return n ? n : 1;
}

/* Stores the chunks of the manifest that this relay lacks and the peer has (all, with there
 * NULL; else those set in the bitmap there), fetched from the peer; *got counts those stored.
 * Stops (CHP_ECLOSED) when the job is canceled. */
static int fetch_chunks(struct chp_peers *p, struct job *j, struct chp_channel *ch,
                        const struct chp_manifest *m, const uint8_t upload_id[CHP_UPLOAD_ID_BYTES],
                        const uint8_t *there, uint32_t *got)
{
        struct chp_store *store = p->sh->store;
        const struct peer *pe = &p->peers[j->peer];
        uint8_t *have = calloc(1, m->chunk_count ? m->chunk_count : 1);
        struct puts ps = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
        int rc =
            have ? chp_store_upload_chunks(store, upload_id, have, NULL, m->chunk_count) : -ENOMEM;
        uint32_t base = chp_channel_reserve_ids(ch, m->chunk_count + 1), next = 0, inflight = 0;
        uint32_t window = fetch_window(chp_channel_hello(ch), m->chunk_size);
        *got = 0;
        while (!rc) {
                if (canceled(j)) {
                        rc = CHP_ECLOSED;
                        break;
                }
                while (next < m->chunk_count && inflight < window && !rc) {
                        if (have[next] || (there && !chp_bit(there, next))) {
                                next++;
                                continue;
                        }
                        struct chp_msg_get_chunk g = {.addr = m->addrs + (size_t)next * 32};
                        uint8_t q[40];
                        if (chp_msg_get_chunk_encode(q, sizeof(q), &g) != 40 ||
                            chp_channel_send(ch, CHP_F_GET_CHUNK, base + next, q, sizeof(q), NULL,
                                             0) != 0)
                                rc = -ECONNRESET;
                        inflight++;
                        next++;
                }
                if (rc || inflight == 0)
                        break;
                struct chp_frame_header h;
                uint8_t *reply, sum[CHP_HASH_BYTES];
                struct chp_msg_chunk_data d;
                if (chp_channel_recv(ch, &h, &reply) != 0) {
                        job_msg(p, j, "lost the connection to %s: %s", pe->name,
                                chp_channel_error(ch));
                        rc = -ECONNRESET;
                        break;
                }
                inflight--;
                uint32_t i = h.id - base;
                if (h.type == CHP_F_ERROR) {
                        job_msg(p, j, "%s answered: %s", pe->name, chp_channel_error(ch));
                        rc = -ENOENT;
                        break;
                }
                if (h.type != (CHP_F_GET_CHUNK | CHP_F_REPLY) || i >= m->chunk_count ||
                    chp_msg_chunk_data_decode(reply, h.len, &d) != 0 || d.offset != 0 ||
                    d.len != chp_manifest_chunk_len(m, i) || chp_sha256(d.data, d.len, sum) != 0 ||
                    sodium_memcmp(sum, m->addrs + (size_t)i * 32, 32) != 0) {
                        /* a peer is trusted no more than a client: nothing of it is stored */
                        chp_log_warn("peer",
                                     "peer %s sent a chunk that does not match its "
                                     "address: disconnected",
                                     pe->name);
                        job_msg(p, j, "peer %s sent bytes that do not match their address",
                                pe->name);
                        rc = CHP_EMISMATCH;
                        break;
                }
                struct put_op *op = calloc(1, sizeof(*op));
                uint8_t *copy = malloc(d.len ? d.len : 1);
                if (!op || !copy) {
                        free(op);
                        free(copy);
                        rc = -ENOMEM;
                        break;
                }
                memcpy(copy, d.data, d.len);
                op->buf = copy;
                op->ps = &ps;
                op->req.type = CHP_REQ_PUT;
                op->req.done = put_done;
                memcpy(op->req.u.put.addr, sum, CHP_HASH_BYTES);
                op->req.u.put.data = copy;
                op->req.u.put.len = (uint32_t)d.len;
                op->req.u.put.verified = true;
                op->req.u.put.has_upload = true;
                memcpy(op->req.u.put.upload_id, upload_id, CHP_UPLOAD_ID_BYTES);
                op->req.u.put.index = i;
                pthread_mutex_lock(&ps.lock);
                ps.inflight++;
                pthread_mutex_unlock(&ps.lock);
                if ((rc = chp_store_submit(store, &op->req))) {
                        pthread_mutex_lock(&ps.lock);
                        ps.inflight--;
                        pthread_mutex_unlock(&ps.lock);
                        free(copy);
                        free(op);
                        break;
                }
                (*got)++;
                puts_wait(&ps, FETCH_WINDOW);
                if (ps.failed)
                        rc = ps.failed;
                if (!rc && !atomic_load(&pe->active)) {
                        job_msg(p, j, "%s is no longer a peer of this relay", pe->name);
                        rc = CHP_ECLOSED;
                }
        }
        puts_wait(&ps, 0);
        if (!rc && ps.failed)
                rc = ps.failed;
        free(have);
        return rc;
}

/* A channel to a peer: Noise IK with this relay's key, the peer's pinned, then HELLO. */
static int peer_open(struct chp_peers *p, struct job *j, const struct peer *pe,
                     struct chp_channel **out, char *why, size_t cap)
{
        struct chp_channel_opts o = {.addr = pe->addr,
                                     .ik = true,
                                     .static_priv = p->sh->identity->priv,
                                     .remote_key = pe->key,
                                     .timeout_ms = PEER_TIMEOUT,
                                     .cancel = &j->cancel,
                                     .congestion = chp_congestion_name(p->sh->congestion)};
        int rc = chp_channel_open(&o, out, why, cap);
        pthread_mutex_lock(&p->lock);
        p->stats[pe->stat].state = rc ? CHP_PEER_FAILING : CHP_PEER_UP;
        /* the watchdog measures the peer's throughput on this socket from now on */
        if (!rc)
                j->fd = chp_channel_fd(*out);
        pthread_mutex_unlock(&p->lock);
        return rc;
}

/* Closes the channel peer_open gave (NULL is a no-op), after the watchdog lets go of it. */
static void peer_close(struct chp_peers *p, struct job *j, struct chp_channel *ch)
{
        pthread_mutex_lock(&p->lock);
        j->fd = -1;
        pthread_mutex_unlock(&p->lock);
        chp_channel_close(ch);
}

/* Bytes received on a TCP socket since it was opened, from the kernel (0 if it cannot say). */
static uint64_t tcp_bytes_received(int fd)
{
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        memset(&ti, 0, sizeof(ti));
        if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
            len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
                return 0;
        return ti.tcpi_bytes_received;
}

/* GET_MANIFEST of j's file on ch. The first call (*man NULL) takes the manifest, checked
 * against the file id, into *man (malloc'd), *mlen and *m; a later one must carry the same
 * bytes. *complete: the file is complete there; else *there (malloc'd once) is its map of the
 * chunks stored there so far. -ENOENT: the peer has no such file; else a failure (j->msg). */
static int ask_manifest(struct chp_peers *p, struct job *j, struct chp_channel *ch, uint8_t **man,
                        size_t *mlen, struct chp_manifest *m, uint8_t **there, bool *complete)
{
        const struct peer *pe = &p->peers[j->peer];
        struct chp_frame_header h;
        uint8_t *reply, id[CHP_HASH_BYTES];
        struct chp_msg_manifest mm;
        int rc = chp_channel_call(ch, CHP_F_GET_MANIFEST, j->file_id, CHP_HASH_BYTES, &h, &reply);
        if (rc) {
                bool none = rc == CHP_EREMOTE && chp_channel_remote_code(ch) == CHP_WE_NOT_FOUND;
                job_msg(p, j, "peer %s: %s", pe->name,
                        none ? "no such file there" : chp_channel_error(ch));
                return none ? -ENOENT : -ECONNRESET;
        }
        bool first = *man == NULL;
        if (chp_msg_manifest_decode(reply, h.len, &mm) != 0 ||
            (first ? chp_manifest_id(mm.manifest, mm.manifest_len, id) != 0 ||
                         sodium_memcmp(id, j->file_id, CHP_HASH_BYTES) != 0
                   : mm.manifest_len != *mlen || memcmp(mm.manifest, *man, *mlen) != 0)) {
                chp_log_warn("peer",
                             "peer %s sent a manifest that is not the file's: "
                             "disconnected",
                             pe->name);
                job_msg(p, j, "peer %s sent a manifest that is not the file's", pe->name);
                return CHP_EMISMATCH;
        }
        if (first) {
                if (!(*man = malloc(mm.manifest_len)))
                        return -ENOMEM;
                memcpy(*man, mm.manifest, mm.manifest_len);
                *mlen = mm.manifest_len;
                if (chp_manifest_decode(*man, *mlen, m) < 0)
                        return CHP_EMISMATCH;
        }
        *complete = mm.state == CHP_UPLOAD_COMPLETE;
        if (!*complete) {
                /* only the chunks the origin has so far are asked for (the bitmap is in the
                 * reply, valid until the next call on the channel) */
                size_t bl = chp_bitmap_bytes(m->chunk_count);
                if (!*there && !(*there = malloc(bl ? bl : 1)))
                        return -ENOMEM;
                memcpy(*there, mm.present, bl);
        }
        return 0;
}

/* Whether another job waits for a worker on j's peer, held back by fetch_workers_per_peer. Under
 * the lock. */
static bool peer_wanted(struct chp_peers *p, const struct job *j, uint64_t now)
{
        if (p->busy[j->peer] < atomic_load(&p->per_peer))
                return false;
        for (int i = 0; i < MAX_JOBS; i++) {
                const struct job *o = &p->jobs[i];
                if (o != j && o->used && o->queued && o->peer == j->peer && o->not_before_ms <= now)
                        return true;
        }
        return false;
}

/* After a poll of a pending origin (its manifest mlen bytes) that brought got chunks: when the
 * next comes (j->backoff_ms, see FOLLOW_*), and 0 to poll again on this channel (after sleeping
 * that long), PENDING to give the worker back until then, STALLED (j->msg says why) once the origin
 * has stored nothing for fetch_timeout (at most FOLLOW_STALL_MS), CHP_ECLOSED when the job is
 * canceled meanwhile. Progress moves the job's deadline: fetch_timeout counts from the last chunk
 * that came. */
static int follow(struct chp_peers *p, struct job *j, uint32_t got, size_t mlen)
{
        uint64_t now = chp_net_now_ms(), timeout = atomic_load(&p->fetch_timeout_ms);
        uint64_t stall = timeout < FOLLOW_STALL_MS ? timeout : FOLLOW_STALL_MS;
        uint64_t floor = (uint64_t)mlen * 1000 / FOLLOW_BYTES_S;
        if (floor < FOLLOW_MIN_MS)
                floor = FOLLOW_MIN_MS;
        if (floor > FOLLOW_MAX_MS)
                floor = FOLLOW_MAX_MS;
        int rc = 0;
        pthread_mutex_lock(&p->lock);
        if (got) {
                j->progress_ms = now;
                if (now + timeout > j->deadline_ms)
                        j->deadline_ms = now + timeout;
        }
        uint64_t b = (now - j->progress_ms) / FOLLOW_IDLE_DIV;
        j->backoff_ms = (uint32_t)(b < floor ? floor : b > FOLLOW_MAX_MS ? FOLLOW_MAX_MS : b);
        if (now + j->backoff_ms >= j->progress_ms + stall ||
            now + j->backoff_ms >= j->deadline_ms) {
                snprintf(j->msg, sizeof(j->msg),
                         "the upload of this file at %s is not finished (nothing new there "
                         "within %llu s)",
                         p->peers[j->peer].name, (unsigned long long)stall / 1000);
                rc = STALLED;
        } else if (j->backoff_ms > FOLLOW_HOLD_MS || peer_wanted(p, j, now)) {
                rc = PENDING;
        }
        pthread_mutex_unlock(&p->lock);
        if (rc)
                return rc;
        for (uint64_t until = now + j->backoff_ms; !canceled(j);) {
                uint64_t t = chp_net_now_ms();
                if (t >= until)
                        break;
                uint64_t ms = until - t < FOLLOW_MIN_MS ? until - t : FOLLOW_MIN_MS;
                struct timespec ts = {0, (long)ms * 1000000L};
                nanosleep(&ts, NULL);
        }
        if (canceled(j))
                return CHP_ECLOSED;
        /* the peer sent what it had: the wait for the sender is not the peer's slowness, so the
         * fetch_min_rate window starts again at every poll */
        pthread_mutex_lock(&p->lock);
        j->win_start_ms = chp_net_now_ms();
        j->win_bytes = tcp_bytes_received(j->fd);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

/* A fetch: the manifest, the chunks the peer has and this relay lacks, and the commit once the
 * file is complete. While the origin still uploads it, follows the upload (follow) on the same
 * channel. 0: the file is here; PENDING: the origin still uploads it (poll again after
 * j->backoff_ms); STALLED: its upload there stopped making progress; -ENOENT: the peer has no
 * such file; another negative code: a failure (j->msg says why). */
static int do_fetch(struct chp_peers *p, struct job *j)
{
        const struct peer *pe = &p->peers[j->peer];
        struct chp_store *store = p->sh->store;
        uint64_t upload_expiry = atomic_load(&p->upload_expiry);
        uint64_t file_expiry = atomic_load(&p->file_expiry);
        struct chp_channel *ch = NULL;
        uint8_t *man = NULL, *there = NULL;
        char why[CHP_PEER_MSG_MAX] = "out of memory";
        struct chp_upload *u = calloc(1, sizeof(*u));
        struct chp_manifest m;
        size_t mlen = 0;
        bool complete_there = false;
        int rc = u ? peer_open(p, j, pe, &ch, why, sizeof(why)) : -ENOMEM;
        if (rc) {
                job_msg(p, j, "cannot reach peer %s at %s: %s", pe->name, pe->addr, why);
                rc = -ECONNREFUSED;
                goto out;
        }
        if ((rc = ask_manifest(p, j, ch, &man, &mlen, &m, &there, &complete_there)))
                goto out;
        /* an upload of the manifest here: clients see it at once, chunk by chunk (a later pass
         * finds the same upload) */
        struct chp_store_req open = {.type = CHP_REQ_UPLOAD_CREATE};
        randombytes_buf(u->id, sizeof(u->id));
        snprintf(u->tenant, sizeof(u->tenant), "peer:%.58s", pe->name);
        u->chunk_size = m.chunk_size;
        u->created = (uint64_t)time(NULL);
        u->expires = u->created + (upload_expiry ? upload_expiry : 86400);
        u->file_expires = file_expiry ? u->created + file_expiry : 0;
        open.u.upload_create.upload = u;
        open.u.upload_create.manifest = man;
        open.u.upload_create.manifest_len = mlen;
        if ((rc = chp_store_run(store, &open)))
                goto out;
        if (open.u.upload_create.complete)
                goto out; /* already here */
        for (;;) {
                uint32_t got = 0;
                rc = fetch_chunks(p, j, ch, &m, open.u.upload_create.upload_id,
                                  complete_there ? NULL : there, &got);
                if (rc || complete_there)
                        break;
                /* still uploading at the origin: follow it while it makes progress */
                if ((rc = follow(p, j, got, mlen)) ||
                    (rc = ask_manifest(p, j, ch, &man, &mlen, &m, &there, &complete_there)))
                        goto out;
        }
        if (rc)
                goto out;
        struct chp_store_req commit = {.type = CHP_REQ_COMMIT};
        commit.u.commit.has_upload = true;
        memcpy(commit.u.commit.upload_id, open.u.upload_create.upload_id, CHP_UPLOAD_ID_BYTES);
        rc = chp_store_run(store, &commit);
        if (!rc) {
                /* what the socket ran, as the kernel says: congestion_control at work */
                char cc[CHP_NET_CC_MAX];
                if (chp_net_congestion(chp_channel_fd(ch), cc, sizeof(cc)) != 0)
                        snprintf(cc, sizeof(cc), "?");
                chp_log_info("peer",
                             "fetched a file of %llu bytes from %s, TCP congestion control %s",
                             (unsigned long long)m.total_size, pe->name, cc);
        }
out:
        if (rc < 0 && !j->msg[0])
                job_msg(p, j, "fetch from %s failed: %s", pe->name, chp_strerror(rc));
        peer_close(p, j, ch);
        free(there);
        free(man);
        free(u);
        return rc;
}

static int do_offer(struct chp_peers *p, struct job *j)
{
        const struct peer *pe = &p->peers[j->peer];
        struct chp_channel *ch = NULL;
        char why[CHP_PEER_MSG_MAX];
        int rc = peer_open(p, j, pe, &ch, why, sizeof(why));
        if (!rc) {
                struct chp_frame_header h;
                uint8_t *reply;
                rc = chp_channel_call(ch, CHP_F_PREFETCH, j->file_id, CHP_HASH_BYTES, &h, &reply);
                if (rc)
                        snprintf(why, sizeof(why), "%s", chp_channel_error(ch));
        }
        if (rc) {
                job_msg(p, j, "offer to %s failed: %s", pe->name, why);
                chp_log_warn("peer", "%s", j->msg);
        }
        peer_close(p, j, ch);
        return rc;
}

/* ---- the workers and the watchdog ------------------------------------------------------- */

/* Cancels a running job (under the lock): its channel's waits end within a fraction of a
 * second, and why becomes its message. */
__attribute__((format(printf, 2, 3))) static void cancel_job(struct job *j, const char *fmt, ...)
{
        if (atomic_load(&j->cancel))
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->why, sizeof(j->why), fmt, ap);
        va_end(ap);
        atomic_store(&j->cancel, 1);
}

/* Wakes every WATCH_MS: a running job past its deadline, or whose peer sent less than
 * fetch_min_rate over the last window (a connection and handshake must finish within one
 * window), is canceled. The worker then sees the cancel within the channel's wait slice. */
static void *watchdog(void *arg)
{
        struct chp_peers *p = arg;
        pthread_mutex_lock(&p->lock);
        while (!p->stopping) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += WATCH_MS * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&p->watch_cond, &p->lock, &ts);
                uint64_t now = chp_net_now_ms();
                uint64_t rate = atomic_load(&p->min_rate);
                for (int i = 0; i < MAX_JOBS && !p->stopping; i++) {
                        struct job *j = &p->jobs[i];
                        if (!j->used || !j->running || atomic_load(&j->cancel))
                                continue;
                        const char *name = p->peers[j->peer].name;
                        if (now >= j->deadline_ms) {
                                j->outcome = CHP_FETCHED_TIMEOUT;
                                cancel_job(
                                    j, "gave up on %s after fetch_timeout (%llu s)", name,
                                    (unsigned long long)(atomic_load(&p->fetch_timeout_ms) / 1000));
                                continue;
                        }
                        if (!rate || now - j->win_start_ms < RATE_WINDOW_S * 1000)
                                continue;
                        uint64_t b = tcp_bytes_received(j->fd);
                        uint64_t in = b > j->win_bytes ? b - j->win_bytes : 0;
                        if (in < rate * RATE_WINDOW_S) {
                                j->outcome = CHP_FETCHED_TOO_SLOW;
                                cancel_job(j,
                                           "%s sent %llu bytes in %d s, below fetch_min_rate "
                                           "(%llu bytes/s): abandoned",
                                           name, (unsigned long long)in, RATE_WINDOW_S,
                                           (unsigned long long)rate);
                                continue;
                        }
                        j->win_start_ms = now;
                        j->win_bytes = b;
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* The next job a worker may run now (under the lock): queued, due, its peer below
 * fetch_workers_per_peer; of those, the one whose peer has the fewest running, then the longest
 * waiting. *wake: when the earliest job not yet due is. */
static struct job *next_job(struct chp_peers *p, uint64_t now, uint64_t *wake)
{
        int limit = atomic_load(&p->per_peer);
        struct job *best = NULL;
        *wake = UINT64_MAX;
        for (int i = 0; i < MAX_JOBS; i++) {
                struct job *j = &p->jobs[i];
                if (!j->used || !j->queued)
                        continue;
                if (j->not_before_ms > now) {
                        if (j->not_before_ms < *wake)
                                *wake = j->not_before_ms;
                        continue;
                }
                if (p->busy[j->peer] >= limit)
                        continue;
                if (!best || p->busy[j->peer] < p->busy[best->peer] ||
                    (p->busy[j->peer] == p->busy[best->peer] && j->seq < best->seq))
                        best = j;
        }
        return best;
}

/* Ends a job (under the lock): a fetch is counted as outcome, a failure logged, and remembered
 * for NEGATIVE_S when negative (the file is not there, or the origin never finished it). */
static void job_end(struct chp_peers *p, struct job *j, int rc, bool negative,
                    enum chp_fetch_outcome outcome)
{
        j->state = rc ? CHP_FETCH_FAILED : CHP_FETCH_DONE;
        j->ended = time(NULL);
        j->negative_until = rc && negative ? j->ended + NEGATIVE_S : 0;
        struct peer_stat *ps = &p->stats[p->peers[j->peer].stat];
        if (j->kind == JOB_OFFER) {
                ps->offers_sent += rc == 0;
                j->used = false;
                return;
        }
        if (!rc)
                outcome = CHP_FETCHED_DONE;
        ps->fetches[outcome]++;
        ps->last_fetch = (int64_t)j->ended;
        ps->last_outcome = outcome;
        if (p->sh->metrics) /* none in a test without them */
                atomic_fetch_add(&p->sh->metrics->fetches[outcome], 1);
        if (!rc)
                return;
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(j->file_id, CHP_HASH_BYTES, hex);
        chp_log_info("peer", "fetch of %.16s... failed: %s", hex, j->msg);
}

static void wait_until(struct chp_peers *p, uint64_t wake)
{
        if (wake == UINT64_MAX) {
                pthread_cond_wait(&p->cond, &p->lock);
                return;
        }
        struct timespec ts = {.tv_sec = (time_t)(wake / 1000),
                              .tv_nsec = (long)(wake % 1000) * 1000000L};
        pthread_cond_timedwait(&p->cond, &p->lock, &ts);
}

static void *worker(void *arg)
{
        struct chp_peers *p = arg;
        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct job *j = NULL;
                while (!p->stopping) {
                        uint64_t wake;
                        if ((j = next_job(p, chp_net_now_ms(), &wake)))
                                break;
                        wait_until(p, wake);
                }
                if (p->stopping)
                        break;
                uint64_t now = chp_net_now_ms();
                j->queued = false;
                j->msg[0] = j->why[0] = '\0';
                atomic_store(&j->cancel, 0);
                if (now >= j->deadline_ms) {
                        snprintf(j->msg, sizeof(j->msg),
                                 "gave up on %s after fetch_timeout (%llu s)",
                                 p->peers[j->peer].name,
                                 (unsigned long long)(atomic_load(&p->fetch_timeout_ms) / 1000));
                        job_end(p, j, -ETIMEDOUT, false, CHP_FETCHED_TIMEOUT);
                        continue;
                }
                j->running = true;
                j->fd = -1;
                j->win_start_ms = now;
                j->win_bytes = 0;
                p->busy[j->peer]++;
                pthread_mutex_unlock(&p->lock);
                int rc = CHP_ECLOSED;
                if (!atomic_load(&p->peers[j->peer].active)) /* dropped by a reload meanwhile */
                        job_msg(p, j, "%s is no longer a peer of this relay",
                                p->peers[j->peer].name);
                else
                        rc = j->kind == JOB_FETCH ? do_fetch(p, j) : do_offer(p, j);
                pthread_mutex_lock(&p->lock);
                j->running = false;
                p->busy[j->peer]--;
                pthread_cond_broadcast(&p->cond); /* a place against this peer is free */
                if (atomic_load(&j->cancel)) {
                        if (j->why[0])
                                snprintf(j->msg, sizeof(j->msg), "%s", j->why);
                        else
                                snprintf(j->msg, sizeof(j->msg), "the relay is stopping");
                        job_end(p, j, rc ? rc : CHP_ECLOSED, false,
                                j->why[0] ? j->outcome : CHP_FETCHED_FAILED);
                        continue;
                }
                if (rc == STALLED) {
                        job_end(p, j, -EAGAIN, true, CHP_FETCHED_UNFINISHED);
                        continue;
                }
                if (rc != PENDING) {
                        job_end(p, j, rc, rc == -ENOENT,
                                rc == -ENOENT ? CHP_FETCHED_NOT_FOUND : CHP_FETCHED_FAILED);
                        continue;
                }
                /* the origin still uploads the file, slowly or not at all for now: the worker
                 * is given back until the next poll (follow set when) */
                now = chp_net_now_ms();
                j->not_before_ms = now + j->backoff_ms;
                j->seq = ++p->seq;
                j->queued = true;
                pthread_cond_broadcast(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* ---- the interface ----------------------------------------------------------------------- */

int chp_peers_start(struct chp_shared *sh, struct chp_peers **out)
{
        *out = NULL;
        char err[CHP_PEER_MSG_MAX];
        struct chp_peers *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->sh = sh;
        pthread_mutex_init(&p->lock, NULL);
        chp_net_cond_init(&p->cond);
        chp_net_cond_init(&p->watch_cond);
        p->peers = calloc(MAX_SLOTS, sizeof(*p->peers));
        if (!p->peers) {
                chp_peers_stop(p);
                return -ENOMEM;
        }
        int rc = chp_peers_update(p, sh->cfg, err, sizeof(err));
        if (rc) {
                chp_log_error("peer", "%s", err);
                chp_peers_stop(p);
                return rc;
        }
        *out = p;
        return 0;
}

/* The slot holding exactly this peer (name, address, key), or -1. */
static int slot_of(const struct chp_peers *p, int n, const struct peer *want)
{
        for (int i = 0; i < n; i++) {
                const struct peer *pe = &p->peers[i];
                if (strcmp(pe->name, want->name) == 0 && strcmp(pe->addr, want->addr) == 0 &&
                    memcmp(pe->key, want->key, CHP_HASH_BYTES) == 0)
                        return i;
        }
        return -1;
}

int chp_peers_update(struct chp_peers *p, const struct chp_config *cfg, char *err, size_t cap)
{
        err[0] = '\0';
        struct peer *want = calloc(CHP_MAX_PEERS, sizeof(*want));
        int n = atomic_load(&p->nslots), added = 0, rc = 0;
        bool keep[MAX_SLOTS] = {false};
        if (!want)
                return -ENOMEM;
        /* everything is checked before anything changes: a bad peer leaves the running set */
        for (unsigned i = 0; i < cfg->npeers && i < CHP_MAX_PEERS; i++) {
                const struct chp_peer_config *pc = &cfg->peers[i];
                struct peer *w = &want[i];
                if (!pc->pubkey ||
                    chp_hex_decode(pc->pubkey, strlen(pc->pubkey), w->key, CHP_HASH_BYTES) != 0) {
                        snprintf(err, cap, "peer \"%s\": pubkey must be 64 hex digits", pc->name);
                        rc = -EINVAL;
                        goto out;
                }
                snprintf(w->name, sizeof(w->name), "%s", pc->name);
                snprintf(w->addr, sizeof(w->addr), "%s", pc->address ? pc->address : "");
                int at = slot_of(p, n, w);
                if (at >= 0)
                        keep[at] = true;
                else
                        added++;
        }
        if (n + added > MAX_SLOTS) {
                snprintf(err, cap,
                         "peers were changed too often since the relay started (%d slots of %d "
                         "used): restart it to apply this change",
                         n, MAX_SLOTS);
                rc = -ENOSPC;
                goto out;
        }
        /* new slots are filled, then published; only the active flags change in place. A new
         * slot counts into the stats of its name (a peer that changed keeps its counts). */
        int m = n;
        pthread_mutex_lock(&p->lock);
        for (unsigned i = 0; i < cfg->npeers && i < CHP_MAX_PEERS; i++) {
                if (slot_of(p, m, &want[i]) >= 0)
                        continue;
                struct peer *pe = &p->peers[m];
                memcpy(pe->name, want[i].name, sizeof(pe->name));
                memcpy(pe->addr, want[i].addr, sizeof(pe->addr));
                memcpy(pe->key, want[i].key, CHP_HASH_BYTES);
                atomic_init(&pe->active, false);
                pe->stat = 0;
                while (pe->stat < p->nstats && strcmp(p->stats[pe->stat].name, pe->name) != 0)
                        pe->stat++;
                if (pe->stat == p->nstats) /* a new name: at most one per slot, so it fits */
                        memcpy(p->stats[p->nstats++].name, pe->name, sizeof(pe->name));
                keep[m++] = true;
        }
        pthread_mutex_unlock(&p->lock);
        atomic_store(&p->nslots, m);
        int active = 0, was = atomic_load(&p->nactive);
        for (int i = 0; i < m; i++) {
                atomic_store(&p->peers[i].active, keep[i]);
                active += keep[i];
        }
        atomic_store(&p->nactive, active);
        atomic_store(&p->upload_expiry, cfg->upload_expiry);
        atomic_store(&p->file_expiry, cfg->file_expiry);
        atomic_store(&p->fetch_timeout_ms, cfg->fetch_timeout * 1000);
        atomic_store(&p->min_rate, cfg->fetch_min_rate);
        atomic_store(&p->per_peer, (int)cfg->fetch_workers_per_peer);
        if (active != was || added)
                chp_log_info("peer", "%d peers configured", active);
        /* the workers start with the first peer (at start-up or on a reload) */
        pthread_mutex_lock(&p->lock);
        for (int i = p->nthreads; active && i < WORKERS; i++) {
                if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
                        break;
                p->nthreads++;
        }
        if (p->nthreads && !p->watching)
                p->watching = pthread_create(&p->watch, NULL, watchdog, p) == 0;
        pthread_mutex_unlock(&p->lock);
out:
        free(want);
        return rc;
}

void chp_peers_stop(struct chp_peers *p)
{
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        for (int i = 0; i < MAX_JOBS; i++)
                atomic_store(&p->jobs[i].cancel, 1); /* a channel's wait ends within its slice */
        pthread_cond_broadcast(&p->cond);
        pthread_cond_broadcast(&p->watch_cond);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->nthreads; i++)
                pthread_join(p->threads[i], NULL);
        if (p->watching)
                pthread_join(p->watch, NULL);
        pthread_cond_destroy(&p->watch_cond);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p->peers);
        free(p);
}

int chp_peers_find(const struct chp_peers *p, const uint8_t key[CHP_HASH_BYTES])
{
        int n = p ? atomic_load(&p->nslots) : 0;
        for (int i = 0; i < n; i++)
                if (atomic_load(&p->peers[i].active) &&
                    sodium_memcmp(p->peers[i].key, key, CHP_HASH_BYTES) == 0)
                        return i;
        return -1;
}

int chp_peers_count(const struct chp_peers *p)
{
        return p ? atomic_load(&p->nactive) : 0;
}

const struct chp_peer_directory chp_peers_directory = {chp_peers_find, chp_peers_count};

const char *chp_peers_name(const struct chp_peers *p, int peer)
{
        return peer >= 0 && peer < atomic_load(&p->nslots) ? p->peers[peer].name : "?";
}

size_t chp_peers_stats(struct chp_peers *p, struct chp_peer_stat *out, size_t cap)
{
        size_t k = 0;
        if (cap)
                memset(out, 0, cap * sizeof(*out));
        if (!p)
                return 0;
        pthread_mutex_lock(&p->lock);
        int n = atomic_load(&p->nslots);
        for (int i = 0; i < n && k < cap; i++) {
                const struct peer *pe = &p->peers[i];
                if (!atomic_load(&pe->active))
                        continue;
                const struct peer_stat *ps = &p->stats[pe->stat];
                struct chp_peer_stat *o = &out[k++];
                memcpy(o->name, pe->name, sizeof(o->name));
                memcpy(o->address, pe->addr, sizeof(o->address));
                o->state = ps->state;
                memcpy(o->fetches, ps->fetches, sizeof(o->fetches));
                o->offers_sent = ps->offers_sent;
                o->last_fetch = ps->last_fetch;
                o->last_outcome = ps->last_outcome;
        }
        pthread_mutex_unlock(&p->lock);
        return k;
}

const char *chp_peers_state_name(enum chp_peer_state s)
{
        switch (s) {
        case CHP_PEER_UP:
                return "up";
        case CHP_PEER_FAILING:
                return "failing";
        default:
                return "never used";
        }
}

/* Whether peer is a slot of a peer configured now. */
static bool peer_active(const struct chp_peers *p, int peer)
{
        return peer >= 0 && peer < atomic_load(&p->nslots) && atomic_load(&p->peers[peer].active);
}

/* The job for (kind, file), a free slot, or the oldest finished one. Under the lock. */
static struct job *job_slot(struct chp_peers *p, enum job_kind kind,
                            const uint8_t file_id[CHP_HASH_BYTES], bool *found)
{
        struct job *free_slot = NULL, *oldest = NULL;
        *found = false;
        for (int i = 0; i < MAX_JOBS; i++) {
                struct job *j = &p->jobs[i];
                if (j->used && j->kind == kind && memcmp(j->file_id, file_id, 32) == 0) {
                        *found = true;
                        return j;
                }
                if (!j->used && !free_slot)
                        free_slot = j;
                if (j->used && j->state != CHP_FETCH_RUNNING &&
                    (!oldest || j->ended < oldest->ended))
                        oldest = j;
        }
        return free_slot ? free_slot : oldest;
}

/* Makes j a new job, queued (under the lock). */
static void job_queue(struct chp_peers *p, struct job *j, enum job_kind kind, int peer,
                      const uint8_t file_id[CHP_HASH_BYTES])
{
        memset(j, 0, sizeof(*j));
        j->used = true;
        j->kind = kind;
        j->peer = peer;
        j->state = CHP_FETCH_RUNNING;
        j->queued = true;
        j->seq = ++p->seq;
        j->progress_ms = chp_net_now_ms();
        j->deadline_ms = j->progress_ms + atomic_load(&p->fetch_timeout_ms);
        j->fd = -1;
        atomic_store(&j->cancel, p->stopping);
        memcpy(j->file_id, file_id, CHP_HASH_BYTES);
        pthread_cond_broadcast(&p->cond);
}

enum chp_fetch_state chp_peers_fetch(struct chp_peers *p, int peer,
                                     const uint8_t file_id[CHP_HASH_BYTES], char *msg, size_t cap,
                                     bool *negative)
{
        msg[0] = '\0';
        if (negative)
                *negative = false;
        if (!peer_active(p, peer)) {
                snprintf(msg, cap, "%s is no longer a peer of this relay", chp_peers_name(p, peer));
                return CHP_FETCH_FAILED;
        }
        pthread_mutex_lock(&p->lock);
        bool found;
        struct job *j = job_slot(p, JOB_FETCH, file_id, &found);
        enum chp_fetch_state st = CHP_FETCH_NONE;
        time_t now = time(NULL);
        if (found && j->state == CHP_FETCH_RUNNING) {
                st = CHP_FETCH_RUNNING;
        } else if (found && j->state == CHP_FETCH_FAILED && now < j->negative_until &&
                   j->peer == peer) {
                /* the peer said it has no such file (or never finished it) moments ago: that
                 * answer again, without a fetch */
                st = CHP_FETCH_FAILED;
                if (j->reported && p->sh->metrics) /* the first to hear it waited for the fetch */
                        atomic_fetch_add(&p->sh->metrics->fetch_negative_hits, 1);
                j->reported = true;
                snprintf(msg, cap, "%s", j->msg);
                if (negative)
                        *negative = true;
        } else if (found && j->state == CHP_FETCH_DONE && j->peer == peer &&
                   now - j->ended < FAIL_MEMORY_S) {
                st = CHP_FETCH_DONE; /* committed moments ago: the caller looks again */
        } else if (found && j->state == CHP_FETCH_FAILED && !j->reported &&
                   now - j->ended < FAIL_MEMORY_S) {
                /* told once (to whoever is waiting on it); the next request tries again */
                st = CHP_FETCH_FAILED;
                j->reported = true;
                snprintf(msg, cap, "%s", j->msg);
        } else if (j) {
                /* new, or done/failed long enough ago: (re)start where the store stands */
                job_queue(p, j, JOB_FETCH, peer, file_id);
                st = CHP_FETCH_RUNNING;
        } else {
                snprintf(msg, cap, "too many fetches in progress");
                st = CHP_FETCH_FAILED;
        }
        pthread_mutex_unlock(&p->lock);
        return st;
}

int chp_peers_offer(struct chp_peers *p, int peer, const uint8_t file_id[CHP_HASH_BYTES])
{
        if (!peer_active(p, peer))
                return -ENOENT;
        pthread_mutex_lock(&p->lock);
        bool found;
        struct job *j = job_slot(p, JOB_OFFER, file_id, &found);
        int rc = 0;
        if (!j || (found && j->state == CHP_FETCH_RUNNING)) {
                rc = j ? 0 : -EBUSY;
        } else {
                job_queue(p, j, JOB_OFFER, peer, file_id);
        }
        pthread_mutex_unlock(&p->lock);
        return rc;
}
