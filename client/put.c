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
 *   4. send those: kept ones at once, the others sealed again by a worker thread running ahead
 *      of the sender into a bounded queue, each checked against its step-1 hash before it is
 *      sealed and against its manifest address before it is sent; then COMMIT
 *
 * So a key never seals two plaintexts as one (index, last) — whatever the chunk format's nonce
 * — and a file that changes under the put stops it with CHAPAR_ECHANGED before anything
 * inconsistent is sent or advertised. A new file is read once before OPEN, content put before
 * twice; a chunk not kept is read once more to be sent.
 * Threads: the caller's, up to three workers in steps 1 and 2, one in step 4; they share only
 * the put's state, never the client. Everything the caller sees happens on its thread.
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "ticket.h"

#define KEEP_BUDGET   (256u << 20) /* ciphertext kept between sealing and sending */
#define MAX_WORKERS   4            /* threads of steps 1 and 2, the caller's included */
#define QUEUE_BYTES   (32u << 20)  /* what step 4's worker may seal ahead of the sender */
#define QUEUE_MIN     2
#define QUEUE_MAX     8
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

/* ---- step 4: sealing again ahead of the sender ------------------------------------------- */

struct slot {
        uint8_t *buf; /* chunk_size bytes */
        uint64_t index;
        int rc; /* != 0: sealing stopped here */
};

/* A bounded queue of chunks sealed again, in the order the sender sends them; one producer
 * thread, the caller's thread consumes. The slots [head, head + count) are the consumer's, the
 * others the producer's; count under the lock hands them over. */
struct reseal {
        struct put_state *p;
        const uint64_t *todo; /* the chunks to seal again, in order */
        uint64_t ntodo;
        struct slot slots[QUEUE_MAX];
        unsigned depth, head, count;
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
                pthread_mutex_lock(&q->lock);
                while (q->count == q->depth && !q->stop)
                        pthread_cond_wait(&q->moved, &q->lock);
                bool stop = q->stop;
                struct slot *s = &q->slots[(q->head + q->count) % q->depth];
                pthread_mutex_unlock(&q->lock);
                if (stop)
                        break;
                uint64_t i = q->todo[k];
                uint8_t sum[CHP_HASH_BYTES];
                s->index = i;
                s->rc = seal_checked(p, i, q->plain, s->buf);
                if (!s->rc && chp_sha256(s->buf, cipher_len(p, i), sum) != 0)
                        s->rc = CHAPAR_EIO;
                if (!s->rc && memcmp(sum, p->addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0)
                        s->rc = CHAPAR_ECHANGED; /* not what OPEN advertised: never sent */
                pthread_mutex_lock(&q->lock);
                q->count++;
                pthread_cond_signal(&q->moved);
                pthread_mutex_unlock(&q->lock);
                if (s->rc)
                        break;
        }
        return NULL;
}

/* Starts sealing todo[0..ntodo) ahead of the sender. */
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

/* The next sealed chunk, in todo's order; waits for it. */
static struct slot *reseal_take(struct reseal *q)
{
        pthread_mutex_lock(&q->lock);
        while (q->count == 0)
                pthread_cond_wait(&q->moved, &q->lock);
        struct slot *s = &q->slots[q->head];
        pthread_mutex_unlock(&q->lock);
        return s;
}

/* Gives the slot reseal_take returned back to the producer. */
static void reseal_release(struct reseal *q)
{
        pthread_mutex_lock(&q->lock);
        q->head = (q->head + 1) % q->depth;
        q->count--;
        pthread_cond_signal(&q->moved);
        pthread_mutex_unlock(&q->lock);
}

/* Stops the producer and frees the queue; a never-started queue is a no-op. */
static void reseal_stop(struct reseal *q)
{
        if (q->running) {
                pthread_mutex_lock(&q->lock);
                q->stop = true;
                pthread_cond_signal(&q->moved);
                pthread_mutex_unlock(&q->lock);
                pthread_join(q->thread, NULL);
        }
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

/* Whether an ERROR reply to a CHUNK says the upload was committed meanwhile: COMMITTED, or from a
 * relay older than that code NOT_FOUND, believed once per put (*not_found_ok). */
static bool upload_gone(struct chapar_client *c, bool *not_found_ok)
{
        if (c->last_code == CHP_WE_COMMITTED)
                return true;
        if (c->last_code == CHP_WE_NOT_FOUND && *not_found_ok) {
                *not_found_ok = false;
                return true;
        }
        return false;
}

/* Sends the missing chunks in index order, as many in flight as the relay's window allows:
 * kept ones from memory, the others from the queue a worker seals them into. A chunk is taken
 * only once the window has room for it, so none is sealed and then dropped. UPLOAD_GONE when
 * the upload was committed by someone else (the replies in flight are drained first). */
static int send_chunks(struct chapar_client *c, struct put_state *p, const uint8_t *upload_id,
                       const uint8_t *missing, const struct chapar_put_opts *o,
                       struct chapar_put_result *r, uint64_t already, bool *not_found_ok)
{
        uint64_t *order = malloc((p->count ? p->count : 1) * sizeof(*order));
        uint32_t *lens = calloc(p->count, sizeof(*lens));
        uint64_t nsend = 0, first_todo = 0;
        struct reseal q = {0};
        int rc = order && lens ? 0 : CHAPAR_ENOMEM;
        for (uint64_t i = 0; !rc && i < p->count; i++) {
                if (!chp_bit(missing, (uint32_t)i))
                        continue;
                if (i < p->nkept)
                        first_todo = nsend + 1;
                order[nsend++] = i;
        }
        if (!rc)
                rc = reseal_start(&q, p, order + first_todo, nsend - first_todo);
        uint64_t k = 0, window = 0, done_bytes = already;
        uint32_t inflight = 0, base = cc_reserve_ids(c, (uint32_t)p->count + 1);
        bool gone = false;
        while (!rc) {
                while (!gone && k < nsend && inflight < c->hello.max_inflight) {
                        uint64_t i = order[k];
                        size_t len = cipher_len(p, i);
                        if (window + len > c->hello.window_bytes && inflight > 0)
                                break; /* wait for acknowledgements first */
                        const uint8_t *bytes = p->kept + i * p->chunk_size;
                        struct slot *s = NULL;
                        if (i >= p->nkept) {
                                s = reseal_take(&q);
                                if (s->rc) {
                                        rc = s->rc == CHAPAR_ECHANGED ? changed(c, p, s->index)
                                                                      : s->rc;
                                        break;
                                }
                                bytes = s->buf;
                        }
                        uint8_t prefix[CHP_CHUNK_PREFIX];
                        chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), upload_id, (uint32_t)i);
                        HOOK(sent, i, bytes, len);
                        rc = cc_send(c, CHP_F_CHUNK, base + (uint32_t)i, prefix, sizeof(prefix),
                                     bytes, len);
                        if (s)
                                reseal_release(&q);
                        if (rc)
                                break;
                        lens[i] = (uint32_t)len;
                        window += len;
                        inflight++;
                        r->chunks_sent++;
                        r->bytes_sent += len;
                        k++;
                }
                if (rc || inflight == 0)
                        break;
                struct chp_frame_header h;
                uint8_t *reply;
                if ((rc = cc_recv(c, &h, &reply)))
                        break;
                if (h.type == CHP_F_ERROR) {
                        uint32_t idx = h.id - base;
                        if (h.id < base || idx >= p->count || !lens[idx]) {
                                rc = CHAPAR_EPROTO;
                                break;
                        }
                        if (!gone && !upload_gone(c, not_found_ok)) {
                                rc = cc_remote_error(c);
                                break;
                        }
                        gone = true; /* send nothing more; drain what is in flight */
                        window -= lens[idx];
                        lens[idx] = 0;
                        inflight--;
                        continue;
                }
                struct chp_msg_chunk_ok ok;
                if (h.type != (CHP_F_CHUNK | CHP_F_REPLY) ||
                    chp_msg_chunk_ok_decode(reply, h.len, &ok) != 0 || ok.index >= p->count ||
                    h.id != base + ok.index || !lens[ok.index]) {
                        rc = CHAPAR_EPROTO;
                        break;
                }
                window -= lens[ok.index];
                done_bytes += lens[ok.index];
                lens[ok.index] = 0;
                inflight--;
                if (ok.flags & CHP_CHUNK_DEDUP)
                        r->chunks_deduplicated++;
                if (o && o->progress)
                        o->progress(o->progress_ctx, done_bytes, p->total);
        }
        reseal_stop(&q);
        free(order);
        free(lens);
        return rc ? rc : gone ? UPLOAD_GONE : 0;
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
                rc = send_chunks(c, &p, upload_id, missing, o, r, already, &not_found_ok);
                if (rc == UPLOAD_GONE)
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
