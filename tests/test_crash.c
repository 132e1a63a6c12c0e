/* Crash test: a child writing under sync full is SIGKILLed at random moments, twenty times.
 *
 * Every round forks a child (fork, not exec: HARNESS_MAIN's main takes no arguments; the parent
 * holds no store and no thread at that moment) that opens the store in one data directory, the
 * same for all rounds, so state accumulates. The child creates upload sessions (a third of them
 * native: manifest given up front), keeps several chunk puts in flight attached to the sessions
 * by index, commits manifests of completed uploads, deletes older files and sessions, runs GC
 * (which compacts segments), and resumes the native sessions the previous kill cut short,
 * sending only the chunks the store says it lacks. Each acknowledgement is reported to the parent
 * as one fixed-size record written with a single write(2) to a pipe (atomic: smaller than
 * PIPE_BUF); that is "told committed". The parent SIGKILLs the child after a random delay,
 * drains the records written before the death, reopens the store and checks that verify finds no
 * problem, that every acknowledged chunk reads back byte for byte (contents are regenerated from
 * the seed) with its reference count, that every acknowledged file and session is there, and
 * that every acknowledged delete stayed deleted. Two rounds also append garbage to the newest
 * segment file (a torn tail) and add a segment file the index does not know before reopening.
 *
 * Four rounds are fault rounds (the store is built with CHAPAR_FAULT_INJECTION): the child arms
 * one I/O fault (a segment write, a segment sync, the index commit or a segment creation fails
 * with EIO or ENOSPC, at one of the first few such calls) and, when a request reports it (or GC
 * absorbs it), stops where it is and says so; the parent kills it then. The same checks show
 * that a write failure loses nothing acknowledged and leaves nothing a reopen cannot clean.
 *
 * CHAPAR_CRASH_SEED=N replays a run's contents and kill schedule (the instruction a kill lands on
 * still depends on timing). CHAPAR_CRASH_KEEP=1 keeps the data directory after a failure.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "store.h"

#define ROUNDS            20
#define UPLOADS_PER_ROUND 4096u /* upload number u = round * UPLOADS_PER_ROUND + k */
#define MAX_CHUNKS        6u    /* chunks per upload */
#define MAX_CHUNK         (1024u * 1024)
#define INLINE_MAX        (16u * 1024)
#define MIN_CHUNK         16u /* shorter chunks of two uploads could be equal: one address */
#define SEGMENT_SIZE      (8ull << 20)
#define MAP_SIZE          (1ull << 30)
#define SLOTS             4  /* puts a child keeps in flight */
#define WINDOW            6  /* committed files a child keeps before deleting the oldest */
#define KEEP_EVERY        16 /* uploads with k % KEEP_EVERY == 0 are kept for the whole run */
#define KILL_MIN_MS       20
#define KILL_MAX_MS       400
#define EARLY_KILL_MAX_MS 60 /* every fifth round: counted from fork, lands in open or start-up */
#define READY_TIMEOUT_MS  20000
#define CHILD_LIMIT_S     30 /* a child still alive then dies of SIGALRM: the parent reports it */
#define MANIFEST_CAP      (CHP_MANIFEST_HEADER + MAX_CHUNKS * CHP_HASH_BYTES + 64)
#define META_LEN          16
#define TENANT            "crash"
#define MAX_REPORTS       30 /* failure lines printed per round */

enum { CHILD_EXIT_OPEN = 10, CHILD_EXIT_STORE = 11, CHILD_EXIT_PIPE = 12, CHILD_EXIT_NOMEM = 13 };

static bool torn_round(uint32_t round)
{
        return round == 6 || round == 13;
}

#define FAULT_WAIT_MS 10000 /* a fault round's child reaches its fault well within this */

/* Rounds 2, 7, 11 and 17 arm one I/O fault each, a different site every time. */
static int fault_round(uint32_t round)
{
        return round == 2 ? 1 : round == 7 ? 2 : round == 11 ? 3 : round == 17 ? 4 : 0;
}

static const struct {
        enum chp_store_fault_site site;
        int err;
        unsigned max_nth; /* the fault is at call 1..max_nth of its site in the round */
        const char *name;
} faults[4] = {
    {CHP_FAULT_SEG_WRITE, -ENOSPC, 6, "a segment write"},
    {CHP_FAULT_SEG_SYNC, -EIO, 4, "a segment sync"},
    {CHP_FAULT_COMMIT, -EIO, 6, "the index commit"},
    {CHP_FAULT_SEG_CREATE, -ENOSPC, 1, "a segment creation"},
};

/* ---- deterministic contents -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

/* What upload u holds: its chunk size, chunk count and total size. A quarter are one small chunk
 * (mostly inline, sometimes exactly at or just past the inline threshold); the rest have 1-6
 * chunks of 64 KiB-1 MiB, and a third of those end in a chunk small enough to live inline. A
 * third of all uploads are native: created with their manifest, committed without one. */
struct plan {
        uint32_t chunk_size, count;
        uint64_t total;
        bool native; /* a native upload: its manifest is given when the session is created */
};

static struct plan plan_of(uint64_t seed, uint32_t u)
{
        static const uint32_t sizes[] = {64u << 10, 128u << 10, 256u << 10, 1u << 20};
        uint64_t r = mix64(seed ^ mix64(0x706c616e00000000ull | u));
        struct plan p = {.native = mix64(r ^ 0x6e6174697665ull) % 3 == 0};
        if (r % 4 == 0) {
                r = mix64(r);
                p.chunk_size = CHP_CHUNK_MIN;
                p.count = 1;
                if (r % 8 == 0)
                        p.total = INLINE_MAX;
                else if (r % 8 == 1)
                        p.total = INLINE_MAX + 1 + (r >> 8) % (CHP_CHUNK_MIN - INLINE_MAX);
                else
                        p.total = MIN_CHUNK + (r >> 8) % (INLINE_MAX - MIN_CHUNK + 1);
                return p;
        }
        r = mix64(r);
        p.chunk_size = sizes[r % 4];
        r = mix64(r);
        p.count = 1 + (uint32_t)(r % MAX_CHUNKS);
        r = mix64(r);
        uint64_t last = r % 3 == 0 ? MIN_CHUNK + (r >> 8) % (INLINE_MAX - MIN_CHUNK + 1)
                                   : MIN_CHUNK + (r >> 8) % (p.chunk_size - MIN_CHUNK + 1);
        p.total = (uint64_t)(p.count - 1) * p.chunk_size + last;
        return p;
}

static uint32_t chunk_len(const struct plan *p, uint32_t i)
{
        return i + 1 < p->count ? p->chunk_size
                                : (uint32_t)(p->total - (uint64_t)(p->count - 1) * p->chunk_size);
}

static void fill_bytes(uint64_t s, uint8_t *buf, size_t len)
{
        size_t off = 0;
        for (; off + 8 <= len; off += 8) {
                uint64_t v = mix64(s++);
                memcpy(buf + off, &v, 8);
        }
        if (off < len) {
                uint64_t v = mix64(s);
                memcpy(buf + off, &v, len - off);
        }
}

static void fill_chunk(uint64_t seed, uint32_t u, uint32_t i, uint8_t *buf, uint32_t len)
{
        fill_bytes(mix64(seed ^ mix64(((uint64_t)u << 8) | i)), buf, len);
}

static void upload_id_of(uint64_t seed, uint32_t u, uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        fill_bytes(mix64(seed ^ mix64(0x75706c6400000000ull | u)), id, CHP_UPLOAD_ID_BYTES);
}

static void upload_of(uint64_t seed, uint32_t u, struct chp_upload *up)
{
        struct plan p = plan_of(seed, u);
        memset(up, 0, sizeof(*up));
        upload_id_of(seed, u, up->id);
        snprintf(up->tenant, sizeof(up->tenant), "%s", TENANT);
        up->declared_size = p.total;
        up->chunk_size = p.chunk_size;
        up->created = 1700000000u + u;
        up->expires = 0;
        up->meta_len = (uint32_t)snprintf((char *)up->meta, sizeof(up->meta), "crash upload %u", u);
}

/* ---- the parent's model, inherited by each child through fork ----------------------------- */

enum {
        UP_TOUCHED = 1,   /* an UPLOAD_CREATE was about to be submitted */
        UP_CREATED = 2,   /* ... and was acknowledged */
        UP_COMMITTED = 4, /* its manifest was committed (the upload session went with it) */
        UP_RETIRING = 8,  /* its file and session were about to be deleted: no promise either way */
        UP_RETIRED = 16,  /* both deletes were acknowledged */
};

struct up_state {
        uint8_t flags;
        uint8_t acked;  /* bit i: chunk i was acknowledged */
        uint8_t *addrs; /* count * CHP_HASH_BYTES, computed on demand; NULL until then */
};

struct model {
        uint64_t seed;
        uint32_t n; /* ROUNDS * UPLOADS_PER_ROUND */
        struct up_state *up;
        uint8_t *scratch; /* MAX_CHUNK bytes for regenerating contents; one thread at a time */
        uint64_t acks, commits, retired, gcs, gc_compacted, gc_deleted, resumes, resent;
        uint64_t faults, faults_absorbed;
};

static bool kept_forever(uint32_t u)
{
        return (u % UPLOADS_PER_ROUND) % KEEP_EVERY == 0;
}

static struct model *model_new(uint64_t seed)
{
        struct model *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->seed = seed;
        m->n = ROUNDS * UPLOADS_PER_ROUND;
        m->up = calloc(m->n, sizeof(*m->up));
        m->scratch = malloc(MAX_CHUNK);
        if (!m->up || !m->scratch) {
                free(m->up);
                free(m->scratch);
                free(m);
                return NULL;
        }
        return m;
}

static void model_free(struct model *m)
{
        if (!m)
                return;
        for (uint32_t u = 0; u < m->n; u++)
                free(m->up[u].addrs);
        free(m->up);
        free(m->scratch);
        free(m);
}

/* Chunk addresses of upload u (cached). NULL when out of memory or hashing failed. */
static uint8_t *addrs_of(struct model *m, uint32_t u)
{
        struct up_state *st = &m->up[u];
        if (st->addrs)
                return st->addrs;
        struct plan p = plan_of(m->seed, u);
        uint8_t *a = malloc((size_t)p.count * CHP_HASH_BYTES);
        if (!a)
                return NULL;
        for (uint32_t i = 0; i < p.count; i++) {
                uint32_t len = chunk_len(&p, i);
                fill_chunk(m->seed, u, i, m->scratch, len);
                if (chp_sha256(m->scratch, len, a + (size_t)i * CHP_HASH_BYTES) != 0) {
                        free(a);
                        return NULL;
                }
        }
        st->addrs = a;
        return a;
}

/* Encodes upload u's manifest into buf (MANIFEST_CAP bytes) and computes its file id. */
static ssize_t manifest_of(uint64_t seed, uint32_t u, const uint8_t *addrs, uint8_t *buf,
                           uint8_t file_id[CHP_HASH_BYTES])
{
        struct plan p = plan_of(seed, u);
        uint8_t meta[META_LEN];
        fill_bytes(mix64(seed ^ mix64(0x6d65746100000000ull | u)), meta, sizeof(meta));
        struct chp_manifest man = {
            .version = CHP_MANIFEST_VERSION,
            .chunk_size = p.chunk_size,
            .total_size = p.total,
            .chunk_count = p.count,
            .meta_len = META_LEN,
            .addrs = addrs,
            .meta = meta,
        };
        ssize_t n = chp_manifest_encode(&man, buf, MANIFEST_CAP);
        if (n < 0)
                return n;
        int rc = chp_manifest_id(buf, (size_t)n, file_id);
        return rc < 0 ? rc : n;
}

/* ---- records: child to parent ------------------------------------------------------------- */

enum rec_type {
        REC_READY = 1, /* the store is open */
        REC_CREATING,  /* u: UPLOAD_CREATE about to be submitted */
        REC_CREATED,   /* u: acknowledged */
        REC_CHUNK,     /* u, i: the put of chunk i of upload u was acknowledged */
        REC_COMMITTED, /* u: the manifest commit was acknowledged */
        REC_RETIRING,  /* u: FILE_DELETE + UPLOAD_DELETE about to be submitted */
        REC_RETIRED,   /* u: both acknowledged */
        REC_GC,        /* u: segments compacted, i: segments deleted (GC stats) */
        REC_RESUMED,   /* u: a native upload cut short by a kill was resumed, i: chunks resent */
        REC_FAULT,     /* u: the armed fault happened (i: 1 if GC absorbed it); the child stops */
};

struct rec {
        uint32_t type, u, i, pad;
};
_Static_assert(sizeof(struct rec) == 16 && sizeof(struct rec) <= PIPE_BUF,
               "a record must be written atomically");

/* ---- the child ---------------------------------------------------------------------------- */

struct child;

struct slot {
        struct chp_store_req req;
        struct child *c;
        uint8_t *buf; /* MAX_CHUNK bytes, borrowed by the store while busy */
        uint32_t k, i;
        bool busy;
};

struct retire_op {
        struct chp_store_req del_file, del_upload;
        struct child *c;
        uint32_t u;
        int pending;
};

struct child {
        struct chp_store *s;
        struct model *m;
        uint32_t round, base;
        int fd; /* pipe to the parent */
        pthread_mutex_t mu;
        pthread_cond_t cv;
        int puts, retires;                /* in flight; under mu */
        uint8_t acked[UPLOADS_PER_ROUND]; /* per k: chunks acknowledged; under mu */
        uint8_t count[UPLOADS_PER_ROUND]; /* per k: chunks; main thread */
        struct slot slots[SLOTS];
        uint32_t window[UPLOADS_PER_ROUND]; /* committed, deletable files of this round */
        uint32_t win_head, win_tail, deletes;
        int fault;         /* 1 + index into faults[], or 0 */
        uint64_t fault_at; /* the failing call's number at its site */
        atomic_bool faulted;
};

static void send_rec(int fd, uint32_t type, uint32_t u, uint32_t i)
{
        struct rec r = {.type = type, .u = u, .i = i};
        if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
                _exit(CHILD_EXIT_PIPE);
}

/* The armed fault happened: tell the parent once, then stop this thread for good (the parent
 * kills the child). */
static void child_faulted(struct child *c, bool absorbed)
{
        if (!atomic_exchange(&c->faulted, true))
                send_rec(c->fd, REC_FAULT, (uint32_t)c->fault, absorbed);
        for (;;)
                pause();
}

static void child_die(struct child *c, const char *what, uint32_t u, int status)
{
        if (c->fault && status == faults[c->fault - 1].err)
                child_faulted(c, false); /* a request reported the injected error */
        fprintf(stderr, "crash child (round %u): %s (upload %u): %d %s\n", c->round, what, u,
                status, chp_strerror(status));
        _exit(CHILD_EXIT_STORE);
}

static void put_done(struct chp_store_req *req)
{
        struct slot *sl = req->ctx;
        struct child *c = sl->c;
        if (req->status != 0)
                child_die(c, "put", c->base + sl->k, req->status);
        send_rec(c->fd, REC_CHUNK, c->base + sl->k, sl->i);
        pthread_mutex_lock(&c->mu);
        c->acked[sl->k]++;
        sl->busy = false;
        c->puts--;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
}

/* Deleting a file or session that is not there is fine: a commit may or may not have landed. */
static void retire_done(struct chp_store_req *req)
{
        struct retire_op *op = req->ctx;
        struct child *c = op->c;
        if (req->status != 0 && req->status != -ENOENT)
                child_die(c, req->type == CHP_REQ_FILE_DELETE ? "file delete" : "upload delete",
                          op->u, req->status);
        pthread_mutex_lock(&c->mu);
        if (--op->pending == 0) {
                send_rec(c->fd, REC_RETIRED, op->u, 0);
                c->retires--;
                pthread_cond_signal(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
}

/* Deletes upload u's file and session without waiting. The op is never freed: the child dies. */
static void start_retire(struct child *c, uint32_t u)
{
        const uint8_t *addrs = addrs_of(c->m, u);
        struct retire_op *op = calloc(1, sizeof(*op));
        uint8_t man[MANIFEST_CAP];
        if (!addrs || !op)
                _exit(CHILD_EXIT_NOMEM);
        op->c = c;
        op->u = u;
        op->pending = 2;
        op->del_file.type = CHP_REQ_FILE_DELETE;
        ssize_t ml = manifest_of(c->m->seed, u, addrs, man, op->del_file.u.file_delete.file_id);
        if (ml < 0)
                child_die(c, "manifest", u, (int)ml);
        op->del_file.done = retire_done;
        op->del_file.ctx = op;
        op->del_upload.type = CHP_REQ_UPLOAD_DELETE;
        upload_id_of(c->m->seed, u, op->del_upload.u.upload_delete.upload_id);
        op->del_upload.done = retire_done;
        op->del_upload.ctx = op;
        c->m->up[u].flags |= UP_RETIRING;
        send_rec(c->fd, REC_RETIRING, u, 0);
        pthread_mutex_lock(&c->mu);
        c->retires++;
        pthread_mutex_unlock(&c->mu);
        int rc = chp_store_submit(c->s, &op->del_file);
        if (rc != 0)
                child_die(c, "submit file delete", u, rc);
        rc = chp_store_submit(c->s, &op->del_upload);
        if (rc != 0)
                child_die(c, "submit upload delete", u, rc);
}

static void run_gc(struct child *c)
{
        struct chp_store_req req = {.type = CHP_REQ_GC};
        req.u.gc.now = (uint64_t)time(NULL);
        int rc = chp_store_run(c->s, &req);
        if (rc != 0)
                child_die(c, "gc", 0, rc);
        const struct chp_gc_stats *st = &req.u.gc.stats;
        send_rec(c->fd, REC_GC, (uint32_t)st->segments_compacted, (uint32_t)st->segments_deleted);
        /* a compaction that cannot write is undone and GC goes on: nothing to report */
        if (c->fault && chp_store_fault_calls(c->s, faults[c->fault - 1].site) >= c->fault_at)
                child_faulted(c, true);
}

/* Creates upload k of this round; returns the buffer for its chunk addresses (filled already for
 * a native upload, whose manifest needs them). */
static uint8_t *create_upload(struct child *c, uint32_t k)
{
        uint32_t u = c->base + k;
        struct plan p = plan_of(c->m->seed, u);
        struct chp_upload up;
        uint8_t man[MANIFEST_CAP], file_id[CHP_HASH_BYTES];
        uint8_t *addrs = p.native ? addrs_of(c->m, u) : malloc((size_t)p.count * CHP_HASH_BYTES);
        if (!addrs)
                _exit(CHILD_EXIT_NOMEM);
        upload_of(c->m->seed, u, &up);
        c->count[k] = (uint8_t)p.count;
        struct chp_store_req req = {.type = CHP_REQ_UPLOAD_CREATE};
        req.u.upload_create.upload = &up;
        if (p.native) {
                ssize_t ml = manifest_of(c->m->seed, u, addrs, man, file_id);
                if (ml < 0)
                        child_die(c, "manifest", u, (int)ml);
                req.u.upload_create.manifest = man;
                req.u.upload_create.manifest_len = (size_t)ml;
        }
        send_rec(c->fd, REC_CREATING, u, 0);
        int rc = chp_store_run(c->s, &req);
        if (rc != 0)
                child_die(c, "upload create", u, rc);
        if (memcmp(req.u.upload_create.upload_id, up.id, CHP_UPLOAD_ID_BYTES) != 0 ||
            req.u.upload_create.complete || req.u.upload_create.resumed ||
            (p.native && memcmp(req.u.upload_create.file_id, file_id, CHP_HASH_BYTES) != 0))
                child_die(c, "upload create: unexpected id or complete/resumed", u, 0);
        send_rec(c->fd, REC_CREATED, u, 0);
        return addrs;
}

/* A native upload is committed without a manifest: the store uses the one it was created with. */
static void commit_upload(struct child *c, uint32_t u)
{
        uint8_t man[MANIFEST_CAP], want[CHP_HASH_BYTES];
        const uint8_t *addrs = c->m->up[u].addrs;
        ssize_t ml = manifest_of(c->m->seed, u, addrs, man, want);
        if (ml < 0)
                child_die(c, "manifest", u, (int)ml);
        struct chp_store_req req = {.type = CHP_REQ_COMMIT};
        if (!plan_of(c->m->seed, u).native) {
                req.u.commit.manifest = man;
                req.u.commit.manifest_len = (size_t)ml;
                req.u.commit.tenant = TENANT;
        }
        req.u.commit.expires = 0;
        req.u.commit.has_upload = true;
        upload_id_of(c->m->seed, u, req.u.commit.upload_id);
        int rc = chp_store_run(c->s, &req);
        if (rc != 0)
                child_die(c, "commit", u, rc);
        if (memcmp(req.u.commit.file_id, want, CHP_HASH_BYTES) != 0 || req.u.commit.existed)
                child_die(c, "commit: wrong file id or existed", u, 0);
        c->m->up[u].flags |= UP_COMMITTED;
        send_rec(c->fd, REC_COMMITTED, u, 0);
}

static void submit_put(struct child *c, struct slot *sl, uint32_t k, uint32_t i, uint8_t *addrs)
{
        uint32_t u = c->base + k;
        struct plan p = plan_of(c->m->seed, u);
        uint32_t len = chunk_len(&p, i);
        fill_chunk(c->m->seed, u, i, sl->buf, len);
        memset(&sl->req, 0, sizeof(sl->req));
        sl->req.type = CHP_REQ_PUT;
        if (chp_sha256(sl->buf, len, sl->req.u.put.addr) != 0)
                child_die(c, "sha256", u, -EIO);
        memcpy(addrs + (size_t)i * CHP_HASH_BYTES, sl->req.u.put.addr, CHP_HASH_BYTES);
        sl->req.u.put.data = sl->buf;
        sl->req.u.put.len = len;
        sl->req.u.put.verified = i % 2 == 0; /* odd chunks are hashed again by submit */
        sl->req.u.put.has_upload = true;
        upload_id_of(c->m->seed, u, sl->req.u.put.upload_id);
        sl->req.u.put.index = i;
        sl->req.done = put_done;
        sl->req.ctx = sl;
        sl->k = k;
        sl->i = i;
        pthread_mutex_lock(&c->mu);
        sl->busy = true;
        c->puts++;
        pthread_mutex_unlock(&c->mu);
        int rc = chp_store_submit(c->s, &sl->req);
        if (rc != 0)
                child_die(c, "submit put", u, rc);
}

/* All of upload k's chunks are acknowledged: commit it (three in four), and keep at most WINDOW
 * deletable files of this round, deleting the oldest and running GC every second delete. */
static void finish_upload(struct child *c, uint32_t k)
{
        uint32_t u = c->base + k;
        if (k % 4 == 3)
                return; /* left open: the next round resumes it if native, else deletes it */
        commit_upload(c, u);
        if (kept_forever(u))
                return;
        c->window[c->win_tail++] = u;
        if (c->win_tail - c->win_head > WINDOW) {
                start_retire(c, c->window[c->win_head++]);
                if (++c->deletes % 2 == 0)
                        run_gc(c);
        }
}

/* A native session of the previous round that a kill (or the one-in-four rule) left open. */
static bool resumable(const struct model *m, uint32_t u, uint32_t round)
{
        uint8_t f = m->up[u].flags;
        return plan_of(m->seed, u).native && (f & UP_CREATED) &&
               !(f & (UP_COMMITTED | UP_RETIRING | UP_RETIRED)) &&
               u / UPLOADS_PER_ROUND + 1 == round;
}

/* Opens native upload u again with its manifest, as a client reconnecting after the crash would:
 * the store must resume the session (or say the file is complete, when the commit landed without
 * its acknowledgement). Sends only the chunks the session lacks, then commits. */
static void resume(struct child *c, uint32_t u)
{
        struct plan p = plan_of(c->m->seed, u);
        uint8_t *addrs = addrs_of(c->m, u);
        struct chp_upload *up = malloc(sizeof(*up));
        uint8_t man[MANIFEST_CAP], file_id[CHP_HASH_BYTES], have[MAX_CHUNKS];
        if (!addrs || !up)
                _exit(CHILD_EXIT_NOMEM);
        upload_of(c->m->seed, u, up);
        ssize_t ml = manifest_of(c->m->seed, u, addrs, man, file_id);
        if (ml < 0)
                child_die(c, "manifest", u, (int)ml);
        struct chp_store_req req = {.type = CHP_REQ_UPLOAD_CREATE};
        req.u.upload_create.upload = up;
        req.u.upload_create.manifest = man;
        req.u.upload_create.manifest_len = (size_t)ml;
        int rc = chp_store_run(c->s, &req);
        if (rc != 0)
                child_die(c, "resume", u, rc);
        if (req.u.upload_create.complete) {
                c->m->up[u].flags |= UP_COMMITTED; /* the store says the file is there */
                send_rec(c->fd, REC_COMMITTED, u, 0);
                free(up);
                return;
        }
        if (!req.u.upload_create.resumed ||
            memcmp(req.u.upload_create.upload_id, up->id, CHP_UPLOAD_ID_BYTES) != 0)
                child_die(c, "resume: the acknowledged session was not resumed", u, 0);
        if ((rc = chp_store_upload_chunks(c->s, up->id, have, NULL, p.count)) != 0)
                child_die(c, "resume: upload_chunks", u, rc);
        uint32_t resent = 0;
        for (uint32_t i = 0; i < p.count; i++) {
                if (!have[i]) {
                        struct chp_store_req put = {.type = CHP_REQ_PUT};
                        uint32_t len = chunk_len(&p, i);
                        fill_chunk(c->m->seed, u, i, c->m->scratch, len);
                        memcpy(put.u.put.addr, addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES);
                        put.u.put.data = c->m->scratch;
                        put.u.put.len = len;
                        put.u.put.has_upload = true;
                        memcpy(put.u.put.upload_id, up->id, CHP_UPLOAD_ID_BYTES);
                        put.u.put.index = i;
                        if ((rc = chp_store_run(c->s, &put)) != 0)
                                child_die(c, "resume: put", u, rc);
                        resent++;
                }
                /* durable, by the store's word: acknowledged */
                if (!have[i] || !(c->m->up[u].acked & (1u << i)))
                        send_rec(c->fd, REC_CHUNK, u, i);
        }
        send_rec(c->fd, REC_RESUMED, u, resent);
        commit_upload(c, u);
        free(up);
}

/* Deletes what earlier rounds left: open sessions, files of rounds before the previous one,
 * deletes a kill interrupted. Keeps the previous round's files one more round, and resumes the
 * previous round's open native sessions. */
static void retire_old(struct child *c)
{
        for (uint32_t u = 0; u < c->base; u++) {
                uint8_t f = c->m->up[u].flags;
                if (!(f & UP_TOUCHED) || (f & UP_RETIRED) || resumable(c->m, u, c->round))
                        continue;
                if ((f & UP_COMMITTED) && !(f & UP_RETIRING) &&
                    (kept_forever(u) || u / UPLOADS_PER_ROUND + 1 == c->round))
                        continue;
                start_retire(c, u);
        }
        pthread_mutex_lock(&c->mu);
        while (c->retires > 0)
                pthread_cond_wait(&c->cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
        run_gc(c);
        for (uint32_t u = c->base - (c->round ? UPLOADS_PER_ROUND : 0); u < c->base; u++)
                if (resumable(c->m, u, c->round))
                        resume(c, u);
}

static void child_loop(struct child *c)
{
        uint32_t next_k = 0, handled = 0, cur = 0, cur_i = 0;
        uint8_t *cur_addrs = NULL;
        bool have_cur = false;
        for (;;) {
                bool more = next_k < UPLOADS_PER_ROUND || (have_cur && cur_i < c->count[cur]);
                uint32_t done_upto = handled;
                pthread_mutex_lock(&c->mu);
                while (c->puts == SLOTS || (!more && c->puts > 0))
                        pthread_cond_wait(&c->cv, &c->mu);
                while (done_upto < next_k && c->acked[done_upto] == c->count[done_upto])
                        done_upto++;
                pthread_mutex_unlock(&c->mu);
                for (; handled < done_upto; handled++)
                        finish_upload(c, handled);
                if (!more) {
                        for (;;)
                                pause(); /* nothing left to write: wait for the kill */
                }
                for (int j = 0; j < SLOTS; j++) {
                        pthread_mutex_lock(&c->mu);
                        bool busy = c->slots[j].busy;
                        pthread_mutex_unlock(&c->mu);
                        if (busy)
                                continue;
                        if (!have_cur || cur_i == c->count[cur]) {
                                if (next_k == UPLOADS_PER_ROUND)
                                        break;
                                cur = next_k;
                                cur_addrs = create_upload(c, cur);
                                next_k++;
                                cur_i = 0;
                                have_cur = true;
                        }
                        submit_put(c, &c->slots[j], cur, cur_i, cur_addrs);
                        if (++cur_i == c->count[cur])
                                c->m->up[c->base + cur].addrs = cur_addrs;
                }
        }
}

static void store_opts(struct chp_store_opts *o, const char *dir)
{
        chp_store_opts_default(o);
        o->dir = dir;
        o->sync = CHP_SYNC_FULL;
        o->inline_max = INLINE_MAX;
        o->map_size = MAP_SIZE;
        o->segment_size = SEGMENT_SIZE;
}

/* Runs in the forked child; never returns. */
static void child_main(struct model *m, const char *dir, uint32_t round, int fd, pid_t parent)
{
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(CHILD_EXIT_PIPE);
        alarm(CHILD_LIMIT_S);
        struct child *c = calloc(1, sizeof(*c));
        if (!c)
                _exit(CHILD_EXIT_NOMEM);
        c->m = m;
        c->round = round;
        c->base = round * UPLOADS_PER_ROUND;
        c->fd = fd;
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        for (int j = 0; j < SLOTS; j++) {
                c->slots[j].c = c;
                c->slots[j].buf = malloc(MAX_CHUNK);
                if (!c->slots[j].buf)
                        _exit(CHILD_EXIT_NOMEM);
        }
        struct chp_store_opts o;
        store_opts(&o, dir);
        int rc = chp_store_open(&o, &c->s);
        if (rc != 0) {
                fprintf(stderr, "crash child (round %u): open: %s\n", round, chp_strerror(rc));
                _exit(CHILD_EXIT_OPEN);
        }
        send_rec(fd, REC_READY, 0, 0);
        if ((c->fault = fault_round(round))) {
                uint64_t rnd = mix64(m->seed ^ round ^ 0x6661756c74ull);
                enum chp_store_fault_site site = faults[c->fault - 1].site;
                uint64_t nth = 1 + rnd % faults[c->fault - 1].max_nth;
                c->fault_at = chp_store_fault_calls(c->s, site) + nth;
                chp_store_fault_arm(c->s, site, nth, 1, faults[c->fault - 1].err);
        }
        retire_old(c);
        child_loop(c);
        _exit(0);
}

/* ---- the parent --------------------------------------------------------------------------- */

struct check {
        struct chp_store *s;
        struct model *m;
        uint32_t round;
        unsigned bad;
        uint8_t *rbuf; /* MAX_CHUNK bytes */
};

__attribute__((format(printf, 2, 3))) static void bad(struct check *ck, const char *fmt, ...)
{
        if (ck->bad++ >= MAX_REPORTS)
                return;
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  round %u (seed %llu): ", ck->round, (unsigned long long)ck->m->seed);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

static void on_problem(void *ctx, const char *problem)
{
        struct check *ck = ctx;
        bad(ck, "verify: %s", problem);
}

/* Chunk i of upload u must read back identical (must_exist), or else be absent. */
static void check_chunk(struct check *ck, uint32_t u, uint32_t i, const uint8_t *addr,
                        bool must_exist)
{
        struct plan p = plan_of(ck->m->seed, u);
        uint32_t len = chunk_len(&p, i);
        ssize_t n = chp_store_read(ck->s, addr, ck->rbuf, MAX_CHUNK);
        if (n == -ENOENT && !must_exist)
                return;
        if (n < 0) {
                bad(ck, "upload %u chunk %u (%u bytes%s): read: %s", u, i, len,
                    must_exist ? ", acknowledged" : "", chp_strerror((int)n));
                return;
        }
        if ((size_t)n != len) {
                bad(ck, "upload %u chunk %u: read %zd bytes, wrote %u", u, i, n, len);
                return;
        }
        fill_chunk(ck->m->seed, u, i, ck->m->scratch, len);
        if (memcmp(ck->rbuf, ck->m->scratch, len) != 0)
                bad(ck, "upload %u chunk %u (%u bytes): contents differ", u, i, len);
}

static void check_refcount(struct check *ck, uint32_t u, uint32_t i, const uint8_t *addr,
                           uint64_t want)
{
        uint64_t n = 0;
        int rc = chp_store_refcount(ck->s, addr, &n);
        if (rc != 0)
                bad(ck, "upload %u chunk %u: refcount: %s", u, i, chp_strerror(rc));
        else if (n != want)
                bad(ck, "upload %u chunk %u: refcount %llu, expected %llu", u, i,
                    (unsigned long long)n, (unsigned long long)want);
}

static void check_file(struct check *ck, uint32_t u, const uint8_t *id, const uint8_t *man,
                       size_t man_len)
{
        uint8_t *got = NULL;
        size_t got_len = 0;
        struct chp_file_info info;
        int rc = chp_store_file_get(ck->s, id, &got, &got_len, &info);
        if (rc != 0) {
                bad(ck, "upload %u: committed file: %s", u, chp_strerror(rc));
                return;
        }
        if (got_len != man_len || memcmp(got, man, man_len) != 0)
                bad(ck, "upload %u: stored manifest differs (%zu bytes, expected %zu)", u, got_len,
                    man_len);
        if (info.size != plan_of(ck->m->seed, u).total || strcmp(info.tenant, TENANT) != 0)
                bad(ck, "upload %u: file info size %llu tenant '%s'", u,
                    (unsigned long long)info.size, info.tenant);
        free(got);
}

/* A native session's manifest and its pending entry (file id -> session). */
static void check_native_session(struct check *ck, uint32_t u, const struct chp_upload *got,
                                 const uint8_t *id, const uint8_t *man, size_t man_len)
{
        uint8_t *stored = NULL, pending[CHP_UPLOAD_ID_BYTES];
        size_t stored_len = 0;
        if (!got->has_manifest || memcmp(got->file_id, id, CHP_HASH_BYTES) != 0)
                bad(ck, "upload %u: native session lost its manifest flag or file id", u);
        int rc = chp_store_upload_manifest(ck->s, got->id, &stored, &stored_len);
        if (rc != 0)
                bad(ck, "upload %u: native session manifest: %s", u, chp_strerror(rc));
        else if (stored_len != man_len || memcmp(stored, man, man_len) != 0)
                bad(ck, "upload %u: native session manifest differs", u);
        free(stored);
        rc = chp_store_pending(ck->s, id, pending);
        if (rc != 0)
                bad(ck, "upload %u: no pending entry for the native session: %s", u,
                    chp_strerror(rc));
        else if (memcmp(pending, got->id, CHP_UPLOAD_ID_BYTES) != 0)
                bad(ck, "upload %u: pending entry names another session", u);
}

/* An open upload session: its record and every acknowledged chunk index are there. */
static void check_session(struct check *ck, uint32_t u, const uint8_t *addrs, const uint8_t *id,
                          const uint8_t *man, size_t man_len)
{
        struct plan p = plan_of(ck->m->seed, u);
        struct chp_upload want, *got = malloc(sizeof(*got));
        uint8_t have[MAX_CHUNKS], got_addrs[MAX_CHUNKS * CHP_HASH_BYTES];
        if (!got) {
                bad(ck, "out of memory");
                return;
        }
        upload_of(ck->m->seed, u, &want);
        int rc = chp_store_upload_get(ck->s, want.id, got);
        if (rc != 0) {
                bad(ck, "upload %u: acknowledged session: %s", u, chp_strerror(rc));
                goto out;
        }
        if (got->declared_size != want.declared_size || got->chunk_size != want.chunk_size ||
            strcmp(got->tenant, want.tenant) != 0 || got->meta_len != want.meta_len ||
            memcmp(got->meta, want.meta, want.meta_len) != 0)
                bad(ck, "upload %u: session record differs", u);
        if (p.native)
                check_native_session(ck, u, got, id, man, man_len);
        else if (got->has_manifest)
                bad(ck, "upload %u: session created without a manifest has one", u);
        rc = chp_store_upload_chunks(ck->s, want.id, have, got_addrs, p.count);
        if (rc != 0) {
                bad(ck, "upload %u: upload_chunks: %s", u, chp_strerror(rc));
                goto out;
        }
        for (uint32_t i = 0; i < p.count; i++) {
                if (!(ck->m->up[u].acked & (1u << i)))
                        continue;
                if (!have[i])
                        bad(ck, "upload %u: acknowledged chunk %u not recorded in the session", u,
                            i);
                else if (memcmp(got_addrs + i * CHP_HASH_BYTES, addrs + i * CHP_HASH_BYTES,
                                CHP_HASH_BYTES) != 0)
                        bad(ck, "upload %u: session chunk %u has the wrong address", u, i);
        }
out:
        free(got);
}

static void check_upload(struct check *ck, uint32_t u)
{
        const struct up_state *st = &ck->m->up[u];
        struct plan p = plan_of(ck->m->seed, u);
        const uint8_t *addrs = addrs_of(ck->m, u);
        uint8_t man[MANIFEST_CAP], id[CHP_HASH_BYTES], upload_id[CHP_UPLOAD_ID_BYTES];
        struct chp_upload *scratch_up = NULL;
        if (!addrs) {
                bad(ck, "out of memory");
                return;
        }
        ssize_t ml = manifest_of(ck->m->seed, u, addrs, man, id);
        if (ml < 0) {
                bad(ck, "upload %u: manifest encoding: %s", u, chp_strerror((int)ml));
                return;
        }
        upload_id_of(ck->m->seed, u, upload_id);
        bool ended =
            (st->flags & UP_RETIRED) || ((st->flags & UP_COMMITTED) && !(st->flags & UP_RETIRING));
        if (p.native && ended) {
                uint8_t pending[CHP_UPLOAD_ID_BYTES];
                int rc = chp_store_pending(ck->s, id, pending);
                if (rc != -ENOENT)
                        bad(ck, "upload %u: pending entry outlived its session (%d)", u, rc);
        }
        if (st->flags & UP_RETIRED) {
                uint8_t *got = NULL;
                size_t got_len = 0;
                int rc = chp_store_file_get(ck->s, id, &got, &got_len, NULL);
                if (rc != -ENOENT)
                        bad(ck, "upload %u: deleted file: get returned %d", u, rc);
                free(got);
                scratch_up = malloc(sizeof(*scratch_up));
                if (scratch_up) {
                        rc = chp_store_upload_get(ck->s, upload_id, scratch_up);
                        if (rc != -ENOENT)
                                bad(ck, "upload %u: deleted session: get returned %d", u, rc);
                        free(scratch_up);
                }
                for (uint32_t i = 0; i < p.count; i++) {
                        check_refcount(ck, u, i, addrs + i * CHP_HASH_BYTES, 0);
                        check_chunk(ck, u, i, addrs + i * CHP_HASH_BYTES, false);
                }
                return;
        }
        for (uint32_t i = 0; i < p.count; i++) {
                bool acked = !(st->flags & UP_RETIRING) && (st->acked & (1u << i));
                check_chunk(ck, u, i, addrs + i * CHP_HASH_BYTES, acked);
                if (acked)
                        check_refcount(ck, u, i, addrs + i * CHP_HASH_BYTES, 1);
        }
        if (st->flags & UP_RETIRING)
                return;
        if (st->flags & UP_COMMITTED) {
                check_file(ck, u, id, man, (size_t)ml);
                scratch_up = malloc(sizeof(*scratch_up));
                if (scratch_up) {
                        int rc = chp_store_upload_get(ck->s, upload_id, scratch_up);
                        if (rc != -ENOENT)
                                bad(ck, "upload %u: session still there after its commit (%d)", u,
                                    rc);
                        free(scratch_up);
                }
        } else if (st->flags & UP_CREATED) {
                uint8_t *got = NULL;
                size_t got_len = 0;
                /* A commit that landed without its acknowledgement took the session with it. */
                if (chp_store_file_get(ck->s, id, &got, &got_len, NULL) == 0)
                        check_file(ck, u, id, man, (size_t)ml);
                else
                        check_session(ck, u, addrs, id, man, (size_t)ml);
                free(got);
        }
}

static void check_store(struct check *ck, struct chp_verify_stats *vs)
{
        int rc = chp_store_verify(ck->s, on_problem, ck, vs);
        if (rc != 0)
                bad(ck, "verify could not run: %s", chp_strerror(rc));
        else if (vs->problems != 0)
                bad(ck, "verify found %llu problems", (unsigned long long)vs->problems);
        uint32_t end = (ck->round + 1) * UPLOADS_PER_ROUND;
        for (uint32_t u = 0; u < end; u++)
                if (ck->m->up[u].flags || ck->m->up[u].acked)
                        check_upload(ck, u);
}

/* Applies one record; returns false for a record that makes no sense. */
static bool apply(struct model *m, const struct rec *r, uint32_t round, bool *ready)
{
        if (r->type == REC_READY) {
                *ready = true;
                return true;
        }
        if (r->type == REC_GC) {
                m->gcs++;
                m->gc_compacted += r->u;
                m->gc_deleted += r->i;
                return true;
        }
        if (r->u >= (round + 1) * UPLOADS_PER_ROUND)
                return false;
        struct up_state *st = &m->up[r->u];
        switch (r->type) {
        case REC_CREATING:
                st->flags |= UP_TOUCHED;
                return true;
        case REC_CREATED:
                st->flags |= UP_CREATED;
                return true;
        case REC_CHUNK:
                if (r->i >= plan_of(m->seed, r->u).count)
                        return false;
                st->acked |= (uint8_t)(1u << r->i);
                m->acks++;
                return true;
        case REC_COMMITTED:
                st->flags |= UP_COMMITTED;
                m->commits++;
                return true;
        case REC_RETIRING:
                st->flags |= UP_RETIRING;
                return true;
        case REC_RETIRED:
                st->flags |= UP_RETIRED;
                m->retired++;
                return true;
        case REC_RESUMED:
                m->resumes++;
                m->resent += r->i;
                return true;
        case REC_FAULT:
                m->faults++;
                m->faults_absorbed += r->i != 0;
                return true;
        default:
                return false;
        }
}

/* Reads what is in the pipe; returns 1 at end of file, 0 otherwise, -1 on a bad record. */
static int read_records(int fd, struct model *m, uint32_t round, bool *ready, uint8_t *pend,
                        size_t *npend)
{
        uint8_t buf[4096];
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n == 0)
                        return 1;
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -1;
                for (ssize_t j = 0; j < n; j++) {
                        pend[(*npend)++] = buf[j];
                        if (*npend < sizeof(struct rec))
                                continue;
                        struct rec r;
                        memcpy(&r, pend, sizeof(r));
                        *npend = 0;
                        if (!apply(m, &r, round, ready)) {
                                fprintf(stderr, "  round %u: bad record type %u u %u i %u\n", round,
                                        r.type, r.u, r.i);
                                return -1;
                        }
                }
        }
}

struct round_info {
        unsigned delay_ms;
        bool from_fork;
        bool fault; /* kill when the child reports its fault (or FAULT_WAIT_MS after open) */
        bool was_ready;
        uint64_t acks_before;
};

/* Forks a child, kills it after ri->delay_ms (counted from fork or from its READY record), reaps
 * it and applies every record it wrote. Returns 0, or -1 when the child did not die of our kill
 * or the records were bad. */
static int run_round(struct model *m, const char *dir, uint32_t round, struct round_info *ri)
{
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
                perror("pipe2");
                return -1;
        }
        fflush(NULL);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
                perror("fork");
                close(fds[0]);
                close(fds[1]);
                return -1;
        }
        if (pid == 0) {
                close(fds[0]);
                child_main(m, dir, round, fds[1], parent);
        }
        close(fds[1]);
        int fd = fds[0], ret = 0, eof = 0;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        uint8_t pend[sizeof(struct rec)];
        size_t npend = 0;
        bool ready = false;
        uint64_t start = chp_net_now_ms(), ready_at = 0, faults_before = m->faults;
        for (;;) {
                uint64_t t = chp_net_now_ms(), deadline;
                if (ri->from_fork)
                        deadline = start + ri->delay_ms;
                else if (ready)
                        deadline = ready_at + (ri->fault ? FAULT_WAIT_MS : ri->delay_ms);
                else
                        deadline = start + READY_TIMEOUT_MS;
                if (t >= deadline || eof || m->faults > faults_before)
                        break;
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int left = (int)(deadline - t);
                if (poll(&pfd, 1, left) < 0 && errno != EINTR)
                        break;
                bool was = ready;
                eof = read_records(fd, m, round, &ready, pend, &npend);
                if (eof < 0) {
                        ret = -1;
                        break;
                }
                if (ready && !was)
                        ready_at = chp_net_now_ms();
        }
        kill(pid, SIGKILL);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        /* Records written before the death count: drain to end of file. */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        if (ret == 0 && read_records(fd, m, round, &ready, pend, &npend) != 1)
                ret = -1;
        close(fd);
        ri->was_ready = ready;
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
                fprintf(stderr, "  round %u: the child did not die of our SIGKILL: %s %d\n", round,
                        WIFEXITED(status) ? "exit status" : "signal",
                        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
                ret = -1;
        }
        if (npend != 0) {
                fprintf(stderr, "  round %u: a partial record in the pipe\n", round);
                ret = -1;
        }
        if (!ready && !ri->from_fork) {
                fprintf(stderr, "  round %u: the child never opened the store\n", round);
                ret = -1;
        }
        return ret;
}

/* The newest segment file: the greatest name under DIR/segments (store.c names them %08u.seg). */
static int newest_segment(const char *dir, char *path, size_t cap, unsigned *num)
{
        char sdir[PATH_MAX], best[NAME_MAX + 1] = "";
        snprintf(sdir, sizeof(sdir), "%s/segments", dir);
        DIR *d = opendir(sdir);
        if (!d)
                return -errno;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
                unsigned n;
                char tail;
                if (sscanf(e->d_name, "%8u.se%c", &n, &tail) != 2 || tail != 'g')
                        continue;
                if (strcmp(e->d_name, best) > 0) {
                        snprintf(best, sizeof(best), "%s", e->d_name);
                        *num = n;
                }
        }
        closedir(d);
        if (!best[0])
                return -ENOENT;
        if ((size_t)snprintf(path, cap, "%s/%s", sdir, best) >= cap)
                return -ENAMETOOLONG;
        return 0;
}

static int append_junk(const char *path, uint64_t rnd, size_t len)
{
        uint8_t *junk = malloc(len);
        if (!junk)
                return -ENOMEM;
        fill_bytes(rnd, junk, len);
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        int rc = fd < 0 ? -errno : 0;
        if (fd >= 0) {
                if (write(fd, junk, len) != (ssize_t)len)
                        rc = -EIO;
                close(fd);
        }
        free(junk);
        return rc;
}

/* What a crash in the middle of writing leaves: 1 byte - 300 KiB of garbage after the newest
 * segment's end, and a whole segment file the index never heard of. */
struct tear {
        char seg[PATH_MAX], stray[PATH_MAX];
        off_t before;
        size_t added;
};

static int tear_tail(struct tear *t, uint64_t rnd)
{
        struct stat sb;
        if (stat(t->seg, &sb) != 0)
                return -errno;
        t->before = sb.st_size;
        t->added = 1 + (size_t)(rnd % (300u * 1024));
        return append_junk(t->seg, mix64(rnd), t->added);
}

static int tear_segments(const char *dir, uint64_t rnd, struct tear *t)
{
        unsigned num = 0;
        int rc = newest_segment(dir, t->seg, sizeof(t->seg), &num);
        if (rc == -ENOENT)
                t->seg[0] = '\0'; /* GC deleted every segment: only the stray file then */
        else if (rc != 0 || (rc = tear_tail(t, rnd)) != 0)
                return rc;
        if ((size_t)snprintf(t->stray, sizeof(t->stray), "%s/segments/%08u.seg", dir, num + 1) >=
            sizeof(t->stray))
                return -ENAMETOOLONG;
        return append_junk(t->stray, mix64(rnd + 1), 4096 + (size_t)(rnd % 65536));
}

/* After the reopen: the tail is cut (the file may also be gone, if no batch that wrote it ever
 * committed) and the stray file removed. */
static void check_torn(struct check *ck, const struct tear *t)
{
        struct stat sb;
        if (t->seg[0] && stat(t->seg, &sb) == 0 && sb.st_size > t->before)
                bad(ck, "torn tail of %s not cut: %lld bytes, %lld before %zu bytes of garbage",
                    t->seg, (long long)sb.st_size, (long long)t->before, t->added);
        if (stat(t->stray, &sb) == 0)
                bad(ck, "segment file %s that the index does not know was not removed", t->stray);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static uint64_t seed_from_env(void)
{
        const char *s = getenv("CHAPAR_CRASH_SEED");
        if (s && *s) {
                char *end = NULL;
                errno = 0;
                unsigned long long v = strtoull(s, &end, 0);
                if (errno == 0 && end && *end == '\0')
                        return v;
                fprintf(stderr, "ignoring CHAPAR_CRASH_SEED=%s: not a number\n", s);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)getpid();
}

TEST(sigkill_twenty_rounds)
{
        uint64_t seed = seed_from_env();
        printf("seed %llu (CHAPAR_CRASH_SEED=%llu replays it)\n", (unsigned long long)seed,
               (unsigned long long)seed);
        char dir[] = "/tmp/chapar-crash-XXXXXX";
        REQUIRE(mkdtemp(dir) != NULL);
        struct model *m = model_new(seed);
        uint8_t *rbuf = malloc(MAX_CHUNK);
        struct check ck = {.m = m, .rbuf = rbuf};
        uint64_t rng = mix64(seed ^ 0x6b696c6c00000000ull), t0 = chp_net_now_ms();
        uint32_t rounds = 0;
        unsigned torn = 0;
        if (!m || !rbuf) {
                bad(&ck, "out of memory");
                goto out;
        }
        for (uint32_t r = 0; r < ROUNDS; r++) {
                struct round_info ri = {.acks_before = m->acks};
                rng = mix64(rng);
                ri.from_fork = r % 5 == 4;
                ri.fault = fault_round(r) != 0;
                uint64_t faults_before = m->faults;
                ri.delay_ms =
                    ri.from_fork
                        ? 1 + (unsigned)(rng % EARLY_KILL_MAX_MS)
                        : KILL_MIN_MS + (unsigned)((rng >> 16) % (KILL_MAX_MS - KILL_MIN_MS + 1));
                ck.round = r;
                if (run_round(m, dir, r, &ri) != 0) {
                        bad(&ck, "the child round failed (see above)");
                        break;
                }
                rounds++;

                struct tear tear = {0};
                if (torn_round(r)) {
                        int rc = tear_segments(dir, mix64(rng ^ r), &tear);
                        if (rc != 0) {
                                bad(&ck, "could not tear a segment: %s", chp_strerror(rc));
                                break;
                        }
                }

                uint64_t t1 = chp_net_now_ms();
                struct chp_store_opts o;
                store_opts(&o, dir);
                int rc = chp_store_open(&o, &ck.s);
                if (rc != 0) {
                        bad(&ck, "reopen after the kill: %s", chp_strerror(rc));
                        break;
                }
                struct chp_verify_stats vs = {0};
                check_store(&ck, &vs);
                chp_store_close(ck.s);
                ck.s = NULL;

                if (torn_round(r)) {
                        torn++;
                        check_torn(&ck, &tear);
                }
                if (ri.fault && m->faults == faults_before)
                        bad(&ck, "the fault (%s) was never reached",
                            faults[fault_round(r) - 1].name);
                char how[128];
                if (ri.fault)
                        snprintf(how, sizeof(how), "killed when %s failed with %s",
                                 faults[fault_round(r) - 1].name,
                                 chp_strerror(faults[fault_round(r) - 1].err));
                else
                        snprintf(how, sizeof(how), "killed %3u ms after %s", ri.delay_ms,
                                 ri.from_fork ? "fork" : "open");
                printf("round %2u: %s%s, +%llu acks; verify: %llu chunks, %.1f "
                       "MiB, %llu files, %llu uploads, %llu segments; checked in %llu ms%s\n",
                       r, how, ri.was_ready ? "" : " (before open finished)",
                       (unsigned long long)(m->acks - ri.acks_before),
                       (unsigned long long)vs.chunks, (double)vs.bytes / (1 << 20),
                       (unsigned long long)vs.files, (unsigned long long)vs.uploads,
                       (unsigned long long)vs.segments, (unsigned long long)(chp_net_now_ms() - t1),
                       torn_round(r) ? "; torn segment tail" : "");
                fflush(stdout);
                if (ck.bad)
                        break;
        }
        printf("%llu I/O faults injected (%llu absorbed by GC)\n", (unsigned long long)m->faults,
               (unsigned long long)m->faults_absorbed);
        printf("%u rounds (%u with a torn segment tail), %llu chunks acknowledged, %llu files "
               "committed, %llu deleted, %llu GC runs (segments: %llu compacted, %llu "
               "deleted), %llu native uploads resumed (%llu chunks resent), %llu ms, seed %llu\n",
               rounds, torn, (unsigned long long)m->acks, (unsigned long long)m->commits,
               (unsigned long long)m->retired, (unsigned long long)m->gcs,
               (unsigned long long)m->gc_compacted, (unsigned long long)m->gc_deleted,
               (unsigned long long)m->resumes, (unsigned long long)m->resent,
               (unsigned long long)(chp_net_now_ms() - t0), (unsigned long long)seed);
        CHECK_EQ(rounds, ROUNDS);
        CHECK(m->acks > 0);
out:
        CHECK_EQ(ck.bad, 0);
        if (ck.bad && getenv("CHAPAR_CRASH_KEEP"))
                fprintf(stderr, "  data directory kept: %s\n", dir);
        else
                nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(rbuf);
        model_free(m);
}

HARNESS_MAIN()
