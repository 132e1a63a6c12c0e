/* put.c — chapar_put_fd and chapar_put_path: read a file, seal it chunk by chunk under its file
 * key, send the manifest (OPEN), then the chunks the relay still lacks within its window, then
 * COMMIT, and make the ticket.
 *
 *   1. seal and address every chunk under a fresh key (worker threads), hashing each plaintext
 *      chunk; the first KEEP_BUDGET bytes of ciphertext are kept for step 4. The hash of the
 *      chunks' hashes names the content in the key cache (keycache.c)
 *   2. only if the cache has a key for this content (the content was put before): seal and
 *      address every chunk again under that key, so the ciphertext, addresses and manifest come
 *      out the same and the relay resumes or deduplicates the upload; each read is checked
 *      against its step-1 hash before it is sealed. A new cache entry is written after step 1
 *      (the bytes sealed are the bytes hashed), never before
 *   3. OPEN with the manifest — it carries every address, so nothing is sent before step 1 (or
 *      2) is done; the reply names the missing chunks
 *   4. send those over several connections (struct chapar_transport: a fixed number, or 2 and
 *      one more while the last one added raised the acknowledged rate by 10%; never more than
 *      there are chunks): each OPENs the same upload and takes the next chunk when its share of
 *      the relay's window has room, so a slow one takes fewer. Kept chunks go from memory, the
 *      others from a bounded pool one worker seals them into ahead of the senders, each checked
 *      against its step-1 hash before it is sealed and against its manifest address before it
 *      is sent; a chunk sent again (after a cut, or in the endgame) is sealed again the same way
 *      on its connection's thread. When nothing is left to deal, an idle connection sends again
 *      what another has left unacknowledged STALL_FACTOR mean acknowledgement times (the relay
 *      stores a chunk once), and a connection still waiting at the end is shut down. A cut
 *      connection's chunks go back to the pool; it reconnects after cc_backoff_ms, OPENs again
 *      and the relay's map says what it stored (not sent again); the put gives up with the
 *      last network error once nothing moved for retry_s. Then COMMIT on c->ch, which is by then
 *      whichever connection OPENed the upload and has nothing in flight (a new one if none).
 *
 * So a key never seals two plaintexts as one (index, last) — whatever the chunk format's nonce
 * — and a file that changes under the put stops it with CHAPAR_ECHANGED before anything
 * inconsistent is sent or advertised. A new file is read once before OPEN, content put before
 * twice; a chunk not kept is read once more to be sent (and once per resend).
 * Memory: KEEP_BUDGET of kept ciphertext, the pool's QUEUE_MIN..QUEUE_MAX chunks (at most
 * QUEUE_BYTES unless that is fewer than QUEUE_MIN: a stalled sender holds one), and a plaintext
 * and a ciphertext chunk per connection that resends.
 * Threads: the caller's, up to three workers in steps 1 and 2; in step 4 one sealing worker and
 * one thread per connection (the first runs on c->ch). They share only the put's state; only
 * cc_dial_prepare reads the client, under a lock. Progress, on_ticket and every result happen on
 * the caller's thread.
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e.h"
#include "err.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "ticket.h"

#define KEEP_BUDGET   (256u << 20) /* ciphertext kept between sealing and sending */
#define MAX_WORKERS   4            /* threads of steps 1 and 2, the caller's included */
#define QUEUE_BYTES   (32u << 20)  /* what step 4's worker may seal ahead of the sender */
#define QUEUE_MIN     (CHAPAR_CONNECTIONS_MAX + 1) /* a stalled sender holds one slot */
#define QUEUE_MAX     16
#define STALL_FACTOR  4    /* a chunk unacknowledged this many mean acknowledgement times ... */
#define STALL_MIN_S   0.5  /* (at least this) is sent again by an idle connection, at the end */
#define GRACE_MIN_S   0.2  /* every chunk stored: the wait for duplicates' acknowledgements */
#define CONTENT_LABEL "chapar put content v2" /* the key-cache identity of a content */

#ifdef CHAPAR_TEST_HOOKS
struct cc_put_hooks cc_put_hooks;
#define HOOK(name, ...)                                                                            \
        do {                                                                                       \
                if (cc_put_hooks.name)                                                             \
                        cc_put_hooks.name(cc_put_hooks.ctx, __VA_ARGS__);                          \
        } while (0)
#define KEEP (cc_put_hooks.keep_budget ? cc_put_hooks.keep_budget : KEEP_BUDGET)
#else
#define HOOK(name, ...) ((void)0)
#define KEEP            KEEP_BUDGET
#endif

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return CHAPAR_EIO;
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        *got = done;
        return 0;
}

struct put_state {
        int fd;
        uint64_t size, padded;
        uint32_t chunk_size, plain_chunk;
        uint64_t count;
        uint64_t total; /* ciphertext bytes */
        uint8_t key[CHP_FILE_KEY_BYTES];
        uint8_t *sums;   /* SHA-256 of each plaintext chunk (step 1) */
        bool sums_known; /* after step 1: reads are checked against sums */
        uint8_t *addrs;  /* SHA-256 of each sealed chunk (step 2) */
        uint8_t *kept;   /* sealed chunks [0, nkept), chunk_size apart */
        uint64_t nkept;
        /* the parallel steps */
        atomic_uint_fast64_t next; /* the next chunk to take */
        atomic_int err;            /* the first error; the others stop on it */
        uint64_t changed;          /* with CHAPAR_ECHANGED: the chunk that read differently */
};

static size_t plain_len(const struct put_state *p, uint64_t i)
{
        uint64_t off = i * p->plain_chunk;
        return p->padded - off < p->plain_chunk ? (size_t)(p->padded - off) : p->plain_chunk;
}

static size_t cipher_len(const struct put_state *p, uint64_t i)
{
        return plain_len(p, i) + CHP_E2E_CHUNK_OVERHEAD;
}

/* Plaintext chunk i (padding included) into buf; *len its length. A file shorter than when the
 * put began is CHAPAR_ECHANGED. */
static int read_plain(const struct put_state *p, uint64_t i, uint8_t *buf, size_t *len)
{
        uint64_t off = i * p->plain_chunk;
        size_t want = plain_len(p, i), got = 0;
        if (off < p->size) {
                size_t real = p->size - off < want ? (size_t)(p->size - off) : want;
                int rc = pread_full(p->fd, buf, real, off, &got);
                if (rc)
                        return rc;
                if (got != real)
                        return CHAPAR_ECHANGED; /* the file shrank under us */
        }
        memset(buf + got, 0, want - got); /* padding */
        *len = want;
        return 0;
}

/* Reads chunk i, checks it against its step-1 hash (records it, in step 1) and seals it into out
 * (cipher_len bytes): so a key seals one plaintext per chunk index, whenever it is sealed. */
static int seal_checked(const struct put_state *p, uint64_t i, uint8_t *plain, uint8_t *out)
{
        size_t len;
        uint8_t sum[CHP_HASH_BYTES];
        int rc = read_plain(p, i, plain, &len);
        if (rc)
                return rc;
        if (chp_sha256(plain, len, sum) != 0)
                return CHAPAR_EIO;
        if (!p->sums_known)
                memcpy(p->sums + i * CHP_HASH_BYTES, sum, CHP_HASH_BYTES);
        else if (sodium_memcmp(sum, p->sums + i * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0)
                return CHAPAR_ECHANGED;
        if (chp_e2e_seal_chunk_hashed(p->key, i, i + 1 == p->count, plain, len, sum, out) != 0)
                return CHAPAR_EIO;
        HOOK(sealed, p->key, i, i + 1 == p->count, plain, len, out, len + CHP_E2E_CHUNK_OVERHEAD);
        return 0;
}

/* ---- steps 1 and 2: every chunk, on up to MAX_WORKERS threads ----------------------------- */

struct worker {
        struct put_state *p;
        int (*fn)(struct put_state *p, struct worker *w, uint64_t i);
        uint8_t *plain, *cipher;       /* plain_chunk and chunk_size bytes */
        atomic_int *cancel;            /* the caller's worker only */
        pthread_t thread;
        bool started;
};

static void *work(void *arg)
{
        struct worker *w = arg;
        struct put_state *p = w->p;
        while (atomic_load(&p->err) == 0) {
                uint64_t i = atomic_fetch_add(&p->next, 1);
                if (i >= p->count)
                        break;
                int rc = w->cancel && atomic_load_explicit(w->cancel, memory_order_relaxed)
                             ? CHAPAR_ECANCELED
                             : w->fn(p, w, i);
                int none = 0;
                if (rc && atomic_compare_exchange_strong(&p->err, &none, rc))
                        p->changed = i; /* read after the join */
        }
        return NULL;
}

static int seal_one(struct put_state *p, struct worker *w, uint64_t i)
{
        uint8_t *out = i < p->nkept ? p->kept + i * p->chunk_size : w->cipher;
        int rc = seal_checked(p, i, w->plain, out);
        if (!rc && chp_sha256(out, cipher_len(p, i), p->addrs + i * CHP_HASH_BYTES) != 0)
                rc = CHAPAR_EIO;
        return rc;
}

static unsigned worker_count(const struct put_state *p)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        if (n < 1)
                n = 1;
        if (n > MAX_WORKERS)
                n = MAX_WORKERS;
        return p->count < (uint64_t)n ? (unsigned)p->count : (unsigned)n;
}

/* Runs fn over every chunk: the caller's thread and as many workers as the machine has cores
 * (MAX_WORKERS at most; fewer if threads cannot be made). The first error, or 0. */
static int for_every_chunk(struct chapar_client *c, struct put_state *p,
                           int (*fn)(struct put_state *p, struct worker *w, uint64_t i))
{
        struct worker w[MAX_WORKERS] = {0};
        unsigned n = worker_count(p);
        atomic_store(&p->next, 0);
        atomic_store(&p->err, 0);
        int rc = 0;
        for (unsigned k = 0; k < n; k++) {
                w[k].p = p;
                w[k].fn = fn;
                w[k].plain = malloc(p->plain_chunk);
                w[k].cipher = malloc(p->chunk_size);
                if (!w[k].plain || !w[k].cipher)
                        rc = CHAPAR_ENOMEM;
        }
        w[0].cancel = &c->cancel;
        for (unsigned k = 1; !rc && k < n; k++)
                w[k].started = pthread_create(&w[k].thread, NULL, work, &w[k]) == 0;
        if (!rc)
                work(&w[0]);
        for (unsigned k = 0; k < n; k++) {
                if (w[k].started)
                        pthread_join(w[k].thread, NULL);
                if (w[k].plain)
                        sodium_memzero(w[k].plain, p->plain_chunk);
                free(w[k].plain);
                free(w[k].cipher);
        }
        return rc ? rc : atomic_load(&p->err);
}

/* ---- step 4: sealing again ahead of the senders ------------------------------------------ */

enum { SLOT_FREE, SLOT_FILLED, SLOT_TAKEN };

struct slot {
        uint8_t *buf; /* chunk_size bytes */
        uint64_t seq; /* its place in todo */
        uint64_t index;
        int state;
        int rc; /* != 0: sealing stopped here */
};

/* A bounded pool of chunks sealed again, in todo's order: one producer thread seals todo[seq]
 * into a free slot; the connections take them by seq (the order the chunks are dealt in) and
 * give each back once sent, in any order. State changes under the lock. */
struct reseal {
        struct put_state *p;
        const uint64_t *todo; /* the chunks to seal again, in order */
        uint64_t ntodo;
        struct slot slots[QUEUE_MAX];
        unsigned depth;
        bool stop;
        pthread_mutex_t lock;
        pthread_cond_t moved; /* a slot was filled or released, or stop */
        pthread_t thread;
        bool running;
        uint8_t *plain;
};

static void *reseal_run(void *arg)
{
        struct reseal *q = arg;
        struct put_state *p = q->p;
        for (uint64_t k = 0; k < q->ntodo; k++) {
                struct slot *s = NULL;
                pthread_mutex_lock(&q->lock);
                for (;;) {
                        for (unsigned j = 0; !s && j < q->depth; j++)
                                if (q->slots[j].state == SLOT_FREE)
                                        s = &q->slots[j];
                        if (s || q->stop)
                                break;
                        pthread_cond_wait(&q->moved, &q->lock);
                }
                bool stop = q->stop;
                pthread_mutex_unlock(&q->lock);
                if (stop)
                        break;
                uint64_t i = q->todo[k];
                uint8_t sum[CHP_HASH_BYTES];
                s->index = i;
                s->seq = k;
                s->rc = seal_checked(p, i, q->plain, s->buf);
                if (!s->rc && chp_sha256(s->buf, cipher_len(p, i), sum) != 0)
                        s->rc = CHAPAR_EIO;
                if (!s->rc && memcmp(sum, p->addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0)
                        s->rc = CHAPAR_ECHANGED; /* not what OPEN advertised: never sent */
                pthread_mutex_lock(&q->lock);
                s->state = SLOT_FILLED;
                pthread_cond_broadcast(&q->moved);
                pthread_mutex_unlock(&q->lock);
                if (s->rc)
                        break;
        }
        return NULL;
}

/* Starts sealing todo[0..ntodo) ahead of the senders. */
static int reseal_start(struct reseal *q, struct put_state *p, const uint64_t *todo, uint64_t ntodo)
{
        memset(q, 0, sizeof(*q));
        q->p = p;
        q->todo = todo;
        q->ntodo = ntodo;
        if (!ntodo)
                return 0;
        uint32_t d = QUEUE_BYTES / p->chunk_size;
        q->depth = d < QUEUE_MIN ? QUEUE_MIN : d > QUEUE_MAX ? QUEUE_MAX : d;
        if (ntodo < q->depth)
                q->depth = (unsigned)ntodo;
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->moved, NULL);
        q->plain = malloc(p->plain_chunk);
        bool ok = q->plain != NULL;
        for (unsigned k = 0; k < q->depth; k++)
                ok = (q->slots[k].buf = malloc(p->chunk_size)) && ok;
        if (!ok)
                return CHAPAR_ENOMEM;
        q->running = pthread_create(&q->thread, NULL, reseal_run, q) == 0;
        return q->running ? 0 : CHAPAR_ENOMEM;
}

/* The chunk sealed as todo[seq]; waits for it. NULL once the queue is halted. */
static struct slot *reseal_take(struct reseal *q, uint64_t seq)
{
        struct slot *s = NULL;
        pthread_mutex_lock(&q->lock);
        while (!q->stop) {
                for (unsigned j = 0; !s && j < q->depth; j++)
                        if (q->slots[j].state == SLOT_FILLED && q->slots[j].seq == seq)
                                s = &q->slots[j];
                if (s) {
                        s->state = SLOT_TAKEN;
                        break;
                }
                pthread_cond_wait(&q->moved, &q->lock);
        }
        pthread_mutex_unlock(&q->lock);
        return s;
}

/* Gives a slot reseal_take returned back to the producer. */
static void reseal_release(struct reseal *q, struct slot *s)
{
        pthread_mutex_lock(&q->lock);
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&q->moved);
        pthread_mutex_unlock(&q->lock);
}

/* Wakes and stops the producer and every reseal_take; a never-started queue is a no-op. */
static void reseal_halt(struct reseal *q)
{
        if (!q->depth)
                return;
        pthread_mutex_lock(&q->lock);
        q->stop = true;
        pthread_cond_broadcast(&q->moved);
        pthread_mutex_unlock(&q->lock);
}

/* Halts the queue and frees it, once no sender uses it any more. */
static void reseal_stop(struct reseal *q)
{
        reseal_halt(q);
        if (q->running)
                pthread_join(q->thread, NULL);
        if (q->depth) {
                pthread_mutex_destroy(&q->lock);
                pthread_cond_destroy(&q->moved);
        }
        for (unsigned k = 0; k < q->depth; k++)
                free(q->slots[k].buf);
        if (q->plain)
                sodium_memzero(q->plain, q->p->plain_chunk);
        free(q->plain);
        memset(q, 0, sizeof(*q));
}

static int make_ticket(struct chapar_client *c, const uint8_t *file_id,
                       const uint8_t key[CHP_FILE_KEY_BYTES], char *out, size_t cap)
{
        struct chp_ticket t = {0};
        if (chp_net_split_hostport(c->addr, t.host, sizeof(t.host), &t.port) != 0)
                return CHAPAR_EUSAGE;
        memcpy(t.relay_key, c->relay_key, CHP_KEY_BYTES);
        memcpy(t.file_id, file_id, CHP_HASH_BYTES);
        t.has_key = true;
        memcpy(t.file_key, key, CHP_FILE_KEY_BYTES);
        ssize_t n = chp_ticket_format(&t, out, cap);
        sodium_memzero(&t, sizeof(t));
        return n < 0 ? CHAPAR_EUSAGE : 0;
}

/* What a CHAPAR_ECHANGED means, in last_error. */
static int changed(struct chapar_client *c, const struct put_state *p, uint64_t i)
{
        snprintf(c->last_error, sizeof(c->last_error),
                 "chunk %llu (from byte %llu) read other bytes than when the put began; nothing "
                 "inconsistent was sent",
                 (unsigned long long)i, (unsigned long long)(i * p->plain_chunk));
        return CHAPAR_ECHANGED;
}

/* Seals and addresses every chunk under p->key (steps 1 and 2). */
static int seal_all(struct chapar_client *c, struct put_state *p)
{
        int rc = for_every_chunk(c, p, seal_one);
        return rc == CHAPAR_ECHANGED ? changed(c, p, p->changed) : rc;
}

/* send_chunks: the upload ended under us because another sender of the same manifest committed
 * it; OPEN again (it answers COMPLETE). */
#define UPLOAD_GONE 1
/* send_chunks: every chunk is stored but no connection is left to COMMIT on: c->ch is a new
 * one, which must OPEN first. */
#define UPLOAD_REOPEN 2

/* Whether an ERROR reply to a CHUNK (wire code) says the upload was committed meanwhile:
 * COMMITTED, or from a relay older than that code NOT_FOUND, believed once per put
 * (*not_found_ok). */
static bool upload_gone(uint32_t code, bool *not_found_ok)
{
        if (code == CHP_WE_COMMITTED)
                return true;
        if (code == CHP_WE_NOT_FOUND && *not_found_ok) {
                *not_found_ok = false;
                return true;
        }
        return false;
}

/* ---- step 4: the chunks, striped over several connections -------------------------------- */

#define CH_HAVE   1u /* the relay has the chunk (its OPEN map said so, or it acknowledged it) */
#define CH_SENT   2u /* sent at least once by this put: another send is a resend */
#define CH_QUEUED 4u /* on the retry list */

struct flight {
        uint64_t index;
        uint32_t len;
        double sent_at;
};

/* One connection and the thread that drives it. Fields below the line are the stripe's lock's. */
struct conn {
        struct stripe *s;
        pthread_t thread;
        bool started;
        struct chp_channel *ch;  /* the thread's while it runs, the caller's after the join */
        uint32_t base;           /* ids CHUNK frames on ch are numbered from */
        uint8_t *plain, *cipher; /* a chunk sealed again on this thread (a resend), lazily */
        /* ---- */
        int fd;       /* ch's socket while it is usable, for the coordinator's shutdown; or -1 */
        bool opened;  /* ch has OPENed the upload: it may send CHUNK frames and COMMIT */
        bool drained; /* the thread ended with nothing in flight on an opened ch */
        bool exited;  /* the thread ended */
        bool retired; /* the relay would not have this connection (not counted as wanted) */
        uint32_t attempt;  /* consecutive failed connects */
        struct flight *fl; /* what ch has in flight (max_inflight entries) */
        uint32_t nfl;
        uint64_t fl_bytes;
};

struct stripe {
        struct chapar_client *c; /* only its stable fields are read, by any thread */
        struct put_state *p;
        const uint8_t *open_msg; /* OPEN, as the caller sent it on c->ch */
        size_t open_len;
        const uint8_t *upload_id;
        struct reseal q;
        uint64_t *order, nsend, first_todo; /* what OPEN said is missing; [first_todo..) resealed */
        pthread_mutex_t hook_lock;
        pthread_mutex_t open_lock; /* held while a connection copies what it dials from c */
        pthread_mutex_t lock;
        pthread_cond_t cond; /* under lock: an acknowledgement, a cut, a thread's end, stop */
        /* ---- under lock */
        uint8_t *flags;          /* CH_* per chunk */
        uint8_t *copies;         /* connections that have the chunk in flight */
        uint64_t *retry, nretry; /* chunks back from a cut connection */
        uint64_t next_new;       /* order[next_new] is the next chunk sent for the first time */
        uint64_t left;           /* chunks of order the relay does not have yet */
        uint64_t done_bytes;
        double last_progress, ack_mean, ack_min;
        bool stop, gone, not_found_ok;
        unsigned want, open_now;
        int fatal; /* the first error that ends the put (CHAPAR_E*), 0 while none */
        uint32_t fatal_remote;
        uint64_t changed; /* with CHAPAR_ECHANGED: the chunk */
        char fatal_why[1024];
        int net_rc; /* the last cut, the error when reconnecting is given up */
        char net_why[1024];
        struct chp_channel *old_primary; /* c->ch after its connection was cut: closed at the end */
        struct chapar_transfer_stats *st;
        struct chapar_put_result *r;
        struct conn conns[CHAPAR_CONNECTIONS_MAX];
};

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits on s->cond (s->lock held) until the monotonic time until, or a signal. */
static void wait_until(struct stripe *s, double until)
{
        double t = until < 0 ? 0 : until;
        struct timespec ts = {.tv_sec = (time_t)t,
                              .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

/* Records the error that ends the put (the first one wins); s->lock held. */
static void set_fatal(struct stripe *s, int code, uint32_t remote, const char *why)
{
        if (!s->fatal) {
                s->fatal = code;
                s->fatal_remote = remote;
                snprintf(s->fatal_why, sizeof(s->fatal_why), "%s", why ? why : "");
        }
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
}

static uint32_t retry_limit_s(const struct stripe *s)
{
        return s->c->transport.retry_s == 0 ? 120u : (uint32_t)s->c->transport.retry_s;
}

/* How long a chunk may stay unacknowledged before an idle connection sends it again. */
static double stall_s(const struct stripe *s)
{
        double t = STALL_FACTOR * s->ack_mean;
        return t < STALL_MIN_S ? STALL_MIN_S : t;
}

/* The relay now has chunk i (s->lock held). */
static void have(struct stripe *s, uint64_t i, double now)
{
        if (s->flags[i] & CH_HAVE)
                return;
        s->flags[i] |= CH_HAVE;
        s->left--;
        s->done_bytes += cipher_len(s->p, i);
        s->last_progress = now;
        pthread_cond_broadcast(&s->cond);
}

/* The next chunk for k (s->lock held): back from a cut, else the next new one (*seq its place
 * in the reseal queue, or -1), else in the endgame the oldest chunk another connection has had
 * unacknowledged for stall_s (*wake: when the next one would be). false: none now. */
static bool deal(struct stripe *s, struct conn *k, uint64_t *index, int64_t *seq, double now,
                 double *wake)
{
        *seq = -1;
        while (s->nretry) {
                uint64_t i = s->retry[--s->nretry];
                s->flags[i] &= (uint8_t)~CH_QUEUED;
                if (!(s->flags[i] & CH_HAVE) && s->copies[i] == 0) {
                        *index = i;
                        return true;
                }
        }
        if (s->next_new < s->nsend) {
                uint64_t n = s->next_new++;
                *index = s->order[n];
                if (n >= s->first_todo)
                        *seq = (int64_t)(n - s->first_todo);
                return true; /* also when the relay has it meanwhile: its queue slot is used */
        }
        if (k->nfl)
                return false;
        const struct flight *oldest = NULL;
        for (unsigned j = 0; j < CHAPAR_CONNECTIONS_MAX; j++) {
                struct conn *o = &s->conns[j];
                for (uint32_t f = 0; o != k && f < o->nfl; f++) {
                        const struct flight *x = &o->fl[f];
                        if (!(s->flags[x->index] & CH_HAVE) && s->copies[x->index] == 1 &&
                            (!oldest || x->sent_at < oldest->sent_at))
                                oldest = x;
                }
        }
        if (!oldest)
                return false;
        if (now - oldest->sent_at < stall_s(s)) {
                *wake = oldest->sent_at + stall_s(s);
                return false;
        }
        *index = oldest->index;
        return true;
}

/* k's chunks in flight go back to the pool: k was cut (s->lock held). */
static void give_back(struct stripe *s, struct conn *k)
{
        for (uint32_t f = 0; f < k->nfl; f++) {
                uint64_t i = k->fl[f].index;
                s->copies[i]--;
                if (!(s->flags[i] & (CH_HAVE | CH_QUEUED)) && s->copies[i] == 0) {
                        s->flags[i] |= CH_QUEUED;
                        s->retry[s->nretry++] = i;
                }
        }
        k->nfl = 0;
        k->fl_bytes = 0;
        pthread_cond_broadcast(&s->cond);
}

/* Ends k's channel after a cut or at the end; c->ch's own is kept for the caller to close. */
static void drop_channel(struct stripe *s, struct conn *k)
{
        pthread_mutex_lock(&s->lock);
        if (k->opened)
                s->open_now--;
        k->opened = false;
        k->fd = -1;
        struct chp_channel *ch = k->ch;
        k->ch = NULL;
        bool primary = ch && ch == s->c->ch;
        if (primary)
                s->old_primary = ch;
        pthread_mutex_unlock(&s->lock);
        if (ch && !primary) {
                shutdown(chp_channel_fd(ch), SHUT_RDWR); /* nothing may block on a dead link */
                chp_channel_close(ch);
        }
}

/* OPEN on k's new channel: the same upload, and what the relay has of it. */
static int open_upload(struct stripe *s, struct conn *k)
{
        struct chp_frame_header h;
        uint8_t *reply;
        struct chp_msg_open_ok ok;
        int rc = chp_channel_call(k->ch, CHP_F_OPEN, s->open_msg, s->open_len, &h, &reply);
        if (rc)
                return rc;
        if (chp_msg_open_ok_decode(reply, h.len, &ok) != 0 || ok.chunk_count != s->p->count ||
            memcmp(ok.file_id, s->r->file_id, CHP_HASH_BYTES) != 0)
                return -EPROTO;
        double now = mono_s();
        pthread_mutex_lock(&s->lock);
        if (ok.state == CHP_UPLOAD_COMPLETE ||
            memcmp(ok.upload_id, s->upload_id, CHP_UPLOAD_ID_BYTES) != 0)
                s->gone = true; /* committed (and maybe begun again) meanwhile: OPEN once more */
        for (uint64_t i = 0; i < s->p->count; i++)
                if (ok.state == CHP_UPLOAD_COMPLETE || !chp_bit(ok.missing, (uint32_t)i))
                        have(s, i, now); /* stored, its acknowledgement maybe lost: not resent */
        pthread_mutex_unlock(&s->lock);
        return 0;
}

/* Connects k, OPENs, and counts it: 0, or a public code with why (cap bytes) saying why. */
static int connect_conn(struct stripe *s, struct conn *k, char *why, size_t cap)
{
        struct chapar_client *c = s->c;
        struct chp_channel *ch = NULL;
        struct cc_dial d;
        pthread_mutex_lock(&s->open_lock);
        cc_dial_prepare(c, &d);
        pthread_mutex_unlock(&s->open_lock);
        int rc = cc_dial(&d, &ch, why, cap); /* handshakes of several connections overlap */
        if (rc)
                return rc;
        k->ch = ch;
        k->base = chp_channel_reserve_ids(ch, (uint32_t)s->p->count + 1);
        pthread_mutex_lock(&s->lock);
        k->fd = chp_channel_fd(ch);
        pthread_mutex_unlock(&s->lock);
        rc = open_upload(s, k);
        if (rc) {
                uint32_t code = chp_channel_remote_code(ch);
                snprintf(why, cap, "%s", chp_channel_error(ch));
                return cc_code(rc, rc == CHP_EREMOTE ? code : 0);
        }
        pthread_mutex_lock(&s->lock);
        k->opened = true;
        if (++s->open_now > s->st->connections)
                s->st->connections = s->open_now;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

/* The ciphertext of chunk i for k to send: kept, from the reseal queue (*slot, to release), or
 * sealed again on this thread. NULL with *rc set on failure. */
static const uint8_t *chunk_bytes(struct stripe *s, struct conn *k, uint64_t i, int64_t seq,
                                  struct slot **slot, int *rc)
{
        struct put_state *p = s->p;
        *slot = NULL;
        *rc = 0;
        if (i < p->nkept)
                return p->kept + i * p->chunk_size;
        if (seq >= 0) {
                struct slot *sl = reseal_take(&s->q, (uint64_t)seq);
                if (!sl) {
                        *rc = CHAPAR_ECANCELED; /* halted: the put is ending anyway */
                        return NULL;
                }
                *slot = sl;
                if (sl->rc) {
                        *rc = sl->rc;
                        return NULL;
                }
                return sl->buf;
        }
        if (!k->plain && !(k->plain = malloc(p->plain_chunk)))
                *rc = CHAPAR_ENOMEM;
        if (!*rc && !k->cipher && !(k->cipher = malloc(p->chunk_size)))
                *rc = CHAPAR_ENOMEM;
        uint8_t sum[CHP_HASH_BYTES];
        if (!*rc)
                *rc = seal_checked(p, i, k->plain, k->cipher);
        if (!*rc && chp_sha256(k->cipher, cipher_len(p, i), sum) != 0)
                *rc = CHAPAR_EIO;
        if (!*rc && memcmp(sum, p->addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0)
                *rc = CHAPAR_ECHANGED;
        return *rc ? NULL : k->cipher;
}

/* One acknowledgement or ERROR frame on k. 0, 1 (the frame ended the put: fatal set), or a
 * channel code. */
static int take_reply(struct stripe *s, struct conn *k)
{
        struct chp_frame_header h;
        uint8_t *reply;
        int rc = chp_channel_recv(k->ch, &h, &reply);
        if (rc)
                return rc;
        uint64_t idx = h.id - k->base;
        bool error = h.type == CHP_F_ERROR;
        struct chp_msg_chunk_ok ok = {0};
        if (!error && (h.type != (CHP_F_CHUNK | CHP_F_REPLY) ||
                       chp_msg_chunk_ok_decode(reply, h.len, &ok) != 0 || ok.index != idx))
                return -EPROTO;
        double now = mono_s();
        pthread_mutex_lock(&s->lock);
        uint32_t f = 0;
        while (f < k->nfl && k->fl[f].index != idx)
                f++;
        if (h.id < k->base || f == k->nfl) {
                pthread_mutex_unlock(&s->lock);
                return -EPROTO; /* an answer to nothing we sent */
        }
        struct flight x = k->fl[f];
        k->fl[f] = k->fl[--k->nfl];
        k->fl_bytes -= x.len;
        s->copies[idx]--;
        if (error) {
                uint32_t code = chp_channel_remote_code(k->ch);
                if (!s->gone && !upload_gone(code, &s->not_found_ok)) {
                        set_fatal(s, cc_code(CHP_EREMOTE, code), code, chp_channel_error(k->ch));
                        pthread_mutex_unlock(&s->lock);
                        return 1;
                }
                s->gone = true; /* send nothing more; drain what is in flight */
                pthread_cond_broadcast(&s->cond);
        } else {
                double t = now - x.sent_at;
                s->ack_mean = s->ack_mean ? 0.875 * s->ack_mean + 0.125 * t : t;
                if (!s->ack_min || t < s->ack_min)
                        s->ack_min = t;
                if (!(s->flags[idx] & CH_HAVE) && (ok.flags & CHP_CHUNK_DEDUP))
                        s->r->chunks_deduplicated++;
                have(s, idx, now);
                k->attempt = 0;
        }
        pthread_mutex_unlock(&s->lock);
        return 0;
}

/* Sends and receives on k until nothing is left for it. 0 (done: drained, or stopped), 1
 * (fatal set), or a channel code (a cut). */
static int pump(struct stripe *s, struct conn *k)
{
        struct put_state *p = s->p;
        const struct chp_msg_hello_ok *hello = &s->c->hello;
        for (;;) {
                double now = mono_s(), wake = 0;
                uint64_t i = 0;
                int64_t seq = -1;
                bool got = false;
                pthread_mutex_lock(&s->lock);
                if (s->stop) {
                        pthread_mutex_unlock(&s->lock);
                        return 0;
                }
                /* k's share of the relay's window for this connection: the others take the rest */
                unsigned n = s->want ? s->want : 1;
                uint64_t share = hello->window_bytes / n;
                uint32_t slots = hello->max_inflight / n ? hello->max_inflight / n : 1;
                if (!s->gone && k->nfl < slots &&
                    (k->nfl == 0 || k->fl_bytes + p->chunk_size <= share))
                        got = deal(s, k, &i, &seq, now, &wake);
                if (!got && k->nfl == 0) {
                        if (s->left == 0 || s->gone) {
                                pthread_mutex_unlock(&s->lock);
                                return 0;
                        }
                        wait_until(s, wake ? wake : now + 1.0);
                        pthread_mutex_unlock(&s->lock);
                        continue;
                }
                size_t len = got ? cipher_len(p, i) : 0;
                bool skip = got && (s->flags[i] & CH_HAVE); /* dealt, but stored meanwhile */
                if (got && !skip) {
                        k->fl[k->nfl++] =
                            (struct flight){.index = i, .len = (uint32_t)len, .sent_at = now};
                        k->fl_bytes += len;
                        s->copies[i]++;
                        if (s->flags[i] & CH_SENT)
                                s->st->bytes_resent += len;
                        s->flags[i] |= CH_SENT;
                        s->r->chunks_sent++;
                        s->r->bytes_sent += len;
                }
                pthread_mutex_unlock(&s->lock);
                if (!got) {
                        int rc = take_reply(s, k);
                        if (rc)
                                return rc;
                        continue;
                }
                struct slot *sl = NULL;
                int rc = 0;
                const uint8_t *bytes = skip && seq < 0 ? NULL : chunk_bytes(s, k, i, seq, &sl, &rc);
                if (rc) {
                        if (sl)
                                reseal_release(&s->q, sl);
                        pthread_mutex_lock(&s->lock);
                        if (rc == CHAPAR_ECHANGED)
                                s->changed = i;
                        if (rc != CHAPAR_ECANCELED || !s->stop)
                                set_fatal(s, rc, 0, "");
                        pthread_mutex_unlock(&s->lock);
                        return 1;
                }
                if (!skip) {
                        uint8_t prefix[CHP_CHUNK_PREFIX];
                        chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), s->upload_id,
                                                    (uint32_t)i);
#ifdef CHAPAR_TEST_HOOKS
                        pthread_mutex_lock(&s->hook_lock);
                        HOOK(sent, i, bytes, len);
                        pthread_mutex_unlock(&s->hook_lock);
#endif
                        rc = chp_channel_send(k->ch, CHP_F_CHUNK, k->base + (uint32_t)i, prefix,
                                              sizeof(prefix), bytes, len);
                }
                if (sl)
                        reseal_release(&s->q, sl);
                if (rc)
                        return rc;
        }
}

/* A connection's thread: connect (but the first, which is c->ch), pump, and after a cut
 * reconnect with backoff while the put makes progress within retry_s. */
static void *conn_run(void *arg)
{
        struct conn *k = arg;
        struct stripe *s = k->s;
        bool ever = k->opened; /* this connection has worked once */
        char why[sizeof(s->net_why)];
        for (;;) {
                int code = 0;
                why[0] = 0;
                if (!k->opened) {
                        code = connect_conn(s, k, why, sizeof(why));
                        if (!code && ever) {
                                pthread_mutex_lock(&s->lock);
                                s->st->reconnects++;
                                pthread_mutex_unlock(&s->lock);
                        }
                        /* a limit is a cut for a connection that worked, and for one
                         * that never did the relay's answer to how many it allows */
                        if (code && code != CHAPAR_ENET && (code != CHAPAR_ELIMITED || !ever)) {
                                pthread_mutex_lock(&s->lock);
                                if (!ever && s->open_now > 0 && code != CHAPAR_ECANCELED) {
                                        /* the relay will not have another connection (a
                                         * limit, a token's): do without it */
                                        k->retired = true;
                                        s->want--;
                                } else if (!s->stop) {
                                        set_fatal(s, code, 0, why);
                                }
                                pthread_mutex_unlock(&s->lock);
                                drop_channel(s, k);
                                break;
                        }
                }
                if (!code) {
                        ever = true;
                        int rc = pump(s, k);
                        if (rc == 0) {
                                pthread_mutex_lock(&s->lock);
                                k->drained = k->opened && k->nfl == 0;
                                pthread_mutex_unlock(&s->lock);
                                break;
                        }
                        if (rc == 1)
                                break;
                        uint32_t remote = chp_channel_remote_code(k->ch);
                        code = cc_code(rc, rc == CHP_EREMOTE ? remote : 0);
                        snprintf(why, sizeof(why), "%s", chp_channel_error(k->ch));
                        if (code != CHAPAR_ENET) {
                                pthread_mutex_lock(&s->lock);
                                if (!s->stop) /* else aborted at the end: no error */
                                        set_fatal(s, code, remote, why);
                                give_back(s, k);
                                pthread_mutex_unlock(&s->lock);
                                drop_channel(s, k);
                                break;
                        }
                }
                /* a cut: k's chunks go back to the pool, and k comes back after a backoff as
                 * long as the put moved within retry_s */
                pthread_mutex_lock(&s->lock);
                give_back(s, k);
                if (!s->stop) {
                        s->net_rc = code;
                        snprintf(s->net_why, sizeof(s->net_why), "%s", why);
                }
                if (!s->stop && s->c->transport.retry_s < 0)
                        set_fatal(s, code, 0, why);
                pthread_mutex_unlock(&s->lock);
                drop_channel(s, k);
                pthread_mutex_lock(&s->lock);
                double until = mono_s() + cc_backoff_ms(k->attempt++) / 1000.0;
                while (!s->stop && mono_s() < until)
                        wait_until(s, until);
                if (!s->stop && mono_s() - s->last_progress > retry_limit_s(s))
                        set_fatal(s, s->net_rc, 0, s->net_why);
                bool stop = s->stop;
                pthread_mutex_unlock(&s->lock);
                if (stop)
                        break;
        }
        pthread_mutex_lock(&s->lock);
        k->exited = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* Frees s and what it owns (the connections' buffers; not their channels). */
static void stripe_free(struct stripe *s)
{
        for (unsigned j = 0; j < CHAPAR_CONNECTIONS_MAX; j++) {
                if (s->conns[j].plain)
                        sodium_memzero(s->conns[j].plain, s->p->plain_chunk);
                free(s->conns[j].plain);
                free(s->conns[j].cipher);
                free(s->conns[j].fl);
        }
        free(s->order);
        free(s->retry);
        free(s->flags);
        free(s->copies);
        free(s);
}

/* Starts the thread of conns[j]; false when it cannot be made. */
static bool conn_start(struct stripe *s, unsigned j)
{
        struct conn *k = &s->conns[j];
        k->started = pthread_create(&k->thread, NULL, conn_run, k) == 0;
        return k->started;
}

/* The missing chunks (missing: OPEN's map on c->ch), striped over connections, then every
 * connection ended, and c->ch one that has OPENed the upload and has nothing in flight (so the
 * caller's COMMIT finds its reply next). UPLOAD_GONE when the upload was committed by someone
 * else, UPLOAD_REOPEN when c->ch is new (the caller OPENs again). On the calling thread: the
 * connections' threads do the rest, this one watches, reports progress and adapts their number. */
static int send_chunks(struct chapar_client *c, struct put_state *p, const uint8_t *upload_id,
                       const uint8_t *missing, const struct chapar_put_opts *o,
                       struct chapar_put_result *r, uint64_t already, bool *not_found_ok,
                       const uint8_t *open_msg, size_t open_len)
{
        struct stripe *s = calloc(1, sizeof(*s));
        if (!s)
                return CHAPAR_ENOMEM;
        s->c = c;
        s->p = p;
        s->open_msg = open_msg;
        s->open_len = open_len;
        s->upload_id = upload_id;
        s->st = &c->stats;
        s->r = r;
        s->not_found_ok = *not_found_ok;
        uint64_t n = p->count ? p->count : 1;
        uint32_t slots = c->hello.max_inflight ? c->hello.max_inflight : 1;
        s->order = malloc(n * sizeof(*s->order));
        s->retry = malloc(n * sizeof(*s->retry));
        s->flags = calloc(n, 1);
        s->copies = calloc(n, 1);
        int rc = s->order && s->retry && s->flags && s->copies ? 0 : CHAPAR_ENOMEM;
        for (unsigned j = 0; j < CHAPAR_CONNECTIONS_MAX; j++) {
                s->conns[j] = (struct conn){.s = s, .fd = -1};
                if (!(s->conns[j].fl = malloc(slots * sizeof(struct flight))))
                        rc = CHAPAR_ENOMEM;
        }
        if (rc) {
                stripe_free(s);
                return rc;
        }
        for (uint64_t i = 0; i < p->count; i++) {
                if (!chp_bit(missing, (uint32_t)i)) {
                        s->flags[i] = CH_HAVE;
                        continue;
                }
                if (i < p->nkept)
                        s->first_todo = s->nsend + 1;
                s->order[s->nsend++] = i;
        }
        s->left = s->nsend;
        s->done_bytes = already;
        s->last_progress = mono_s();
        pthread_mutex_init(&s->hook_lock, NULL);
        pthread_mutex_init(&s->open_lock, NULL);
        pthread_mutex_init(&s->lock, NULL);
        chp_net_cond_init(&s->cond);
        rc = reseal_start(&s->q, p, s->order + s->first_todo, s->nsend - s->first_todo);

        /* how many: the caller's number, or 2 and then more while that pays; never more than
         * there are chunks to share (adapting: half of them) */
        bool adapt = c->transport.connections == 0;
        uint64_t cap = adapt ? s->nsend / 2 : s->nsend;
        unsigned want = adapt ? CC_ADAPT_FIRST : c->transport.connections;
        if (want > cap)
                want = cap ? (unsigned)cap : 1;
        s->want = want;
        struct conn *first = &s->conns[0];
        first->ch = c->ch;
        first->opened = true;
        first->fd = chp_channel_fd(c->ch);
        first->base = chp_channel_reserve_ids(c->ch, (uint32_t)p->count + 1);
        s->open_now = 1;
        unsigned started = 0;
        pthread_mutex_lock(&s->lock);
        for (unsigned j = 0; !rc && j < want; j++) {
                if (conn_start(s, j))
                        started++;
                else if (j == 0)
                        set_fatal(s, CHAPAR_ENOMEM, 0, "");
                else
                        s->want--;
        }
        if (rc)
                set_fatal(s, rc, 0, "");

        uint64_t reported = already;
        double end_at = 0;
        struct cc_adapt ad;
        cc_adapt_init(&ad, adapt && cc_adapt_pays(c->stats.congestion), mono_s(), already);
        while (!s->fatal) {
                double now = mono_s();
                if (atomic_load_explicit(&c->cancel, memory_order_relaxed)) {
                        set_fatal(s, CHAPAR_ECANCELED, 0, "canceled");
                        break;
                }
                bool all_exited = true;
                for (unsigned j = 0; j < started; j++)
                        all_exited = all_exited && s->conns[j].exited;
                if (s->left == 0 || s->gone) {
                        /* the others' last acknowledgements, a little while: a connection still
                         * waiting after that is stalled, and ended */
                        double grace =
                            2 * s->ack_mean < GRACE_MIN_S ? GRACE_MIN_S : 2 * s->ack_mean;
                        if (!end_at)
                                end_at = now + grace;
                        if (all_exited || now >= end_at)
                                break;
                } else if (all_exited) {
                        set_fatal(s, s->net_rc ? s->net_rc : CHAPAR_ENET, 0, s->net_why);
                        break;
                }
                if (s->done_bytes != reported && o && o->progress) {
                        uint64_t d = reported = s->done_bytes;
                        pthread_mutex_unlock(&s->lock);
                        o->progress(o->progress_ctx, d, p->total);
                        pthread_mutex_lock(&s->lock);
                        continue;
                }
                /* an acknowledgement's time is the put's round trip */
                if (s->left && !s->gone &&
                    cc_adapt_step(&ad, now, s->done_bytes, s->open_now < s->want, started, s->left,
                                  s->ack_min)) {
                        if (conn_start(s, started)) {
                                started++;
                                s->want++;
                        } else {
                                cc_adapt_stop(&ad);
                        }
                }
                wait_until(s, now + (ad.on ? CC_ADAPT_MIN_S / 4 : 0.1));
        }
        /* the end: every thread stops; a connection still blocked (stalled, or mid-chunk on a
         * failure) is shut down under it */
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        for (unsigned j = 0; j < started; j++)
                if (!s->conns[j].exited && s->conns[j].fd >= 0)
                        shutdown(s->conns[j].fd, SHUT_RDWR);
        pthread_mutex_unlock(&s->lock);
        reseal_halt(&s->q);
        for (unsigned j = 0; j < started; j++)
                pthread_join(s->conns[j].thread, NULL);
        reseal_stop(&s->q);
        if (o && o->progress && s->done_bytes != reported)
                o->progress(o->progress_ctx, s->done_bytes, p->total);

        /* c->ch: a connection that OPENed and has nothing in flight; else a new one */
        struct chp_channel *keep = NULL;
        for (unsigned j = 0; !keep && j < started; j++)
                if (s->conns[j].drained && s->conns[j].ch)
                        keep = s->conns[j].ch;
        rc = s->fatal;
        if (rc) {
                c->last_code = s->fatal_remote;
                if (rc == CHAPAR_ECHANGED)
                        rc = changed(c, p, s->changed);
                else if (s->fatal_why[0])
                        snprintf(c->last_error, sizeof(c->last_error), "%s", s->fatal_why);
        } else if (!keep) {
                if ((rc = cc_open_extra(c, &keep)) == 0)
                        rc = s->gone ? UPLOAD_GONE : UPLOAD_REOPEN;
        } else if (s->gone) {
                rc = UPLOAD_GONE;
        }
        for (unsigned j = 0; j < CHAPAR_CONNECTIONS_MAX; j++) {
                struct chp_channel *ch = s->conns[j].ch;
                if (ch && ch != keep) {
                        shutdown(chp_channel_fd(ch), SHUT_RDWR);
                        chp_channel_close(ch);
                }
        }
        if (s->old_primary && s->old_primary != keep) {
                shutdown(chp_channel_fd(s->old_primary), SHUT_RDWR);
                chp_channel_close(s->old_primary);
        }
        c->ch = keep;
        *not_found_ok = s->not_found_ok;
        pthread_mutex_destroy(&s->hook_lock);
        pthread_mutex_destroy(&s->open_lock);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        stripe_free(s);
        return rc;
}

/* The key cache's name of a content: SHA-256 of a label, the size and every plaintext chunk's
 * SHA-256 (p->sums, padding included), so that it depends on the chunk size and the padding. */
static int content_name(const struct put_state *p, uint8_t out[CHP_HASH_BYTES])
{
        struct chp_sha256 h;
        uint8_t size_le[8];
        for (int b = 0; b < 8; b++)
                size_le[b] = (uint8_t)(p->size >> (8 * b));
        int rc = chp_sha256_init(&h) == 0 &&
                         chp_sha256_update(&h, CONTENT_LABEL, sizeof(CONTENT_LABEL)) == 0 &&
                         chp_sha256_update(&h, size_le, sizeof(size_le)) == 0 &&
                         chp_sha256_update(&h, p->sums, p->count * CHP_HASH_BYTES) == 0 &&
                         chp_sha256_final(&h, out) == 0
                     ? 0
                     : CHAPAR_EIO;
        chp_sha256_free(&h);
        return rc;
}

int cc_content_id(int fd, uint32_t chunk_size, bool pad, uint8_t out[CHP_HASH_BYTES])
{
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
                return CHAPAR_EIO;
        struct put_state p = {.fd = fd, .size = (uint64_t)st.st_size, .chunk_size = chunk_size};
        p.padded = pad ? chp_e2e_padded_size(p.size) : p.size;
        p.plain_chunk = chp_e2e_plain_chunk(chunk_size);
        p.count = chp_e2e_chunk_count(p.padded, chunk_size);
        if (!p.plain_chunk || !p.count || p.count > CHP_MANIFEST_MAX_CHUNKS)
                return CHAPAR_EUSAGE;
        p.sums = malloc(p.count * CHP_HASH_BYTES);
        uint8_t *buf = malloc(p.plain_chunk);
        int rc = p.sums && buf ? 0 : CHAPAR_ENOMEM;
        for (uint64_t i = 0; !rc && i < p.count; i++) {
                size_t len;
                rc = read_plain(&p, i, buf, &len);
                if (!rc && chp_sha256(buf, len, p.sums + i * CHP_HASH_BYTES) != 0)
                        rc = CHAPAR_EIO;
        }
        if (!rc)
                rc = content_name(&p, out);
        if (buf)
                sodium_memzero(buf, p.plain_chunk);
        free(buf);
        free(p.sums);
        return rc;
}

int chapar_put_fd(struct chapar_client *c, int fd, const struct chapar_put_opts *o,
                  struct chapar_put_result *r)
{
        memset(r, 0, sizeof(*r));
        cc_stats_begin(c);
        double t0 = chp_net_now_s();
        struct put_state p = {.fd = fd};
        struct stat st;
        uint8_t content[CHP_HASH_BYTES], blob[CHP_E2E_META_MAX], upload_id[CHP_UPLOAD_ID_BYTES];
        uint8_t cached[CHP_FILE_KEY_BYTES];
        uint8_t *manifest = NULL, *missing = NULL, *open_msg = NULL;
        char entry[4300];
        int rc;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
                return CHAPAR_EIO;
        p.chunk_size = o && o->chunk_size ? o->chunk_size : CHP_CHUNK_DEFAULT;
        if (p.chunk_size < CHP_CHUNK_MIN || p.chunk_size > CHP_CHUNK_MAX ||
            (p.chunk_size & (p.chunk_size - 1)))
                return CHAPAR_EUSAGE;
        bool pad = !(o && o->no_pad); /* on by default; o->pad asks for nothing more */
        p.size = (uint64_t)st.st_size;
        p.padded = pad ? chp_e2e_padded_size(p.size) : p.size;
        p.plain_chunk = chp_e2e_plain_chunk(p.chunk_size);
        p.count = chp_e2e_chunk_count(p.padded, p.chunk_size);
        if (p.count > CHP_MANIFEST_MAX_CHUNKS ||
            CHP_MANIFEST_HEADER + p.count * CHP_HASH_BYTES + CHP_E2E_META_MAX + 8 >
                CHP_OPEN_MAX_PAYLOAD) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the file is too large for %u-byte chunks: use a larger chunk size",
                         p.chunk_size);
                return CHAPAR_EUSAGE;
        }
        p.total = chp_e2e_cipher_size(p.padded, p.chunk_size);

        /* 1. seal and address every chunk under a fresh key; keep the first KEEP bytes of
         * ciphertext. The content is named by the hash of its size and its chunks' hashes (a
         * tree, so that threads share the work); those stay for checking every later read. */
        p.sums = malloc(p.count * CHP_HASH_BYTES);
        p.addrs = malloc(p.count * CHP_HASH_BYTES);
        if (!p.sums || !p.addrs) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        p.nkept = KEEP / p.chunk_size;
        if (p.nkept > p.count)
                p.nkept = p.count;
        if (p.nkept && !(p.kept = malloc(p.nkept * p.chunk_size)))
                p.nkept = 0; /* then every chunk is sealed again for sending */
        chp_e2e_keygen(p.key);
        if ((rc = seal_all(c, &p)))
                goto out;
        p.sums_known = true;
        rc = content_name(&p, content);
        if (rc)
                goto out;
        HOOK(between, 1);

        /* 2. the key of the last put of this content, if there was one: then everything is sealed
         * again under it (each read checked against step 1) */
        ssize_t blob_len = cc_keycache_find(c, content, p.chunk_size, pad, cached, blob,
                                            sizeof(blob), entry, sizeof(entry));
        if (blob_len < 0) {
                rc = (int)blob_len;
                goto out;
        }
        if (blob_len > 0) {
                memcpy(p.key, cached, sizeof(p.key));
                if ((rc = seal_all(c, &p)))
                        goto out;
        }
        struct chp_e2e_meta meta = {.plain_size = p.size, .chunk_size = p.chunk_size}, old;
        snprintf(meta.name, sizeof(meta.name), "%s", o && o->name ? o->name : "");
        snprintf(meta.mime, sizeof(meta.mime), "%s", o && o->mime ? o->mime : "");
        if (!blob_len || chp_e2e_open_meta(p.key, blob, (size_t)blob_len, &old) != 0 ||
            memcmp(&old, &meta, sizeof(meta)) != 0) {
                blob_len = chp_e2e_seal_meta(p.key, &meta, blob, sizeof(blob));
                if (blob_len < 0) {
                        rc = CHAPAR_EUSAGE;
                        goto out;
                }
                /* Written only now, every chunk sealed under the key being the content the entry
                 * names: a later put of that content reuses the key on the same plaintext, never
                 * on other. An entry found intact is not written again: concurrent puts of the
                 * same content all read it and so send the same manifest. */
                cc_keycache_store(c, entry, p.key, blob, (size_t)blob_len, NULL,
                                  o ? o->expires_in : 0);
        }
        HOOK(between, 2);

        /* 3. the manifest; OPEN says what the relay still lacks */
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = p.chunk_size,
                                 .total_size = p.total,
                                 .chunk_count = (uint32_t)p.count,
                                 .meta_len = (uint32_t)blob_len,
                                 .meta = blob,
                                 .addrs = p.addrs};
        size_t mlen = chp_manifest_encoded_size(&m);
        manifest = malloc(mlen);
        open_msg = malloc(mlen + 8);
        if (!manifest || !open_msg || chp_manifest_encode(&m, manifest, mlen) != (ssize_t)mlen) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        struct chp_msg_open om = {
            .expires_in = o ? o->expires_in : 0, .manifest = manifest, .manifest_len = mlen};
        ssize_t ol = chp_msg_open_encode(open_msg, mlen + 8, &om);
        struct chp_frame_header h;
        uint8_t *reply;
        HOOK(manifest, manifest, mlen);
        bool not_found_ok = true;
        int opens = 0;
reopen:
        if (++opens > 4) { /* committed under us again and again: cannot happen with one file */
                rc = CHAPAR_EPROTO;
                goto out;
        }
        if (ol < 0 || (rc = cc_call(c, CHP_F_OPEN, open_msg, (size_t)ol, &h, &reply)))
                goto out;
        struct chp_msg_open_ok ok;
        if (chp_msg_open_ok_decode(reply, h.len, &ok) != 0 || ok.chunk_count != p.count ||
            chp_manifest_id(manifest, mlen, r->file_id) != 0 ||
            memcmp(ok.file_id, r->file_id, CHP_HASH_BYTES) != 0) {
                rc = CHAPAR_EPROTO;
                goto out;
        }
        memcpy(upload_id, ok.upload_id, CHP_UPLOAD_ID_BYTES);
        if (opens == 1 && c->transport.on_ticket) { /* the relay holds the manifest now */
                if ((rc = make_ticket(c, r->file_id, p.key, r->ticket, sizeof(r->ticket))))
                        goto out;
                c->transport.on_ticket(c->transport.ctx, r->ticket);
        }
        size_t map = chp_bitmap_bytes(ok.chunk_count);
        free(missing);
        missing = malloc(map ? map : 1);
        if (!missing) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        memcpy(missing, ok.missing, map);
        bool complete = ok.state == CHP_UPLOAD_COMPLETE;
        uint64_t already = 0;
        uint32_t nmissing = 0;
        for (uint64_t i = 0; i < p.count; i++) {
                if (!complete && chp_bit(missing, (uint32_t)i)) {
                        nmissing++;
                        continue;
                }
                already += cipher_len(&p, i);
        }
        r->chunks_total = (uint32_t)p.count;
        r->bytes_total = p.total;
        r->chunks_deduplicated = (uint32_t)p.count - nmissing;
        if (o && o->progress)
                o->progress(o->progress_ctx, already, p.total);

        /* 4. the chunks, then the commit */
        if (!complete) {
                rc = send_chunks(c, &p, upload_id, missing, o, r, already, &not_found_ok, open_msg,
                                 (size_t)ol);
                if (rc == UPLOAD_REOPEN)
                        opens--; /* not committed under us: every chunk is in, c->ch is new */
                if (rc == UPLOAD_GONE || rc == UPLOAD_REOPEN)
                        goto reopen;
                if (rc)
                        goto out;
                uint8_t fid[CHP_HASH_BYTES];
                if ((rc = cc_call(c, CHP_F_COMMIT, upload_id, CHP_UPLOAD_ID_BYTES, &h, &reply)))
                        goto out;
                if (h.len != CHP_HASH_BYTES) {
                        rc = CHAPAR_EPROTO;
                        goto out;
                }
                memcpy(fid, reply, CHP_HASH_BYTES);
                if (memcmp(fid, r->file_id, CHP_HASH_BYTES) != 0) {
                        rc = CHAPAR_EPROTO;
                        goto out;
                }
        }
        /* the relay has the whole file: the entry lives as long as it does there */
        cc_keycache_store(c, entry, p.key, blob, (size_t)blob_len, r->file_id, 0);
        rc = make_ticket(c, r->file_id, p.key, r->ticket, sizeof(r->ticket));
        r->seconds = chp_net_now_s() - t0;
out:
        sodium_memzero(p.key, sizeof(p.key));
        sodium_memzero(cached, sizeof(cached));
        free(p.kept);
        free(p.sums);
        free(p.addrs);
        free(manifest);
        free(open_msg);
        free(missing);
        return rc;
}

int chapar_put_path(struct chapar_client *c, const char *path, const struct chapar_put_opts *o,
                    struct chapar_put_result *r)
{
        /* O_NONBLOCK: a FIFO is refused by chapar_put_fd (not a regular file), not waited on;
         * reads of a regular file do not see the flag */
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot read %.300s: %s", path,
                         strerror(errno));
                return CHAPAR_EIO;
        }
        struct chapar_put_opts with_name = o ? *o : (struct chapar_put_opts){0};
        if (!with_name.name) {
                const char *slash = strrchr(path, '/');
                with_name.name = slash ? slash + 1 : path;
        }
        int rc = chapar_put_fd(c, fd, &with_name, r);
        close(fd);
        return rc;
}
