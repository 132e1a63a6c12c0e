/* peer.c — federation workers: fetch files from peers, offer files to them (see peer.h).
 *
 *   client ---GET_MANIFEST(id, origin A)--> relay B                          relay A
 *                                             job: IK handshake ------------>
 *                                                  GET_MANIFEST(id) -------->
 *                                             <-------------------------------- MANIFEST
 *                                             store: upload of the manifest (pending: the
 *                                             client sees it PARTIAL and fetches what is here)
 *                                                  GET_CHUNK x16 in flight ->
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

#include <sodium.h>

#include "channel.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "manifest.h"
#include "proto.h"
#include "store.h"

#define WORKERS       2
#define MAX_JOBS      256
#define FETCH_WINDOW  16 /* GET_CHUNKs in flight toward the peer */
#define FAIL_MEMORY_S 3  /* a failure is reported for this long; then a request retries */
#define PEER_TIMEOUT  15000
#define MAX_SLOTS     (4 * CHP_MAX_PEERS) /* peers configured over the process's life */

/* A slot is written once, before nslots counts it, and never changed after: loop threads read
 * it without a lock, a connection may keep its index. A reload that drops a peer clears its
 * active flag; one that adds or changes a peer takes a new slot. */
struct peer {
        char name[65];
        char addr[300];
        uint8_t key[CHP_HASH_BYTES];
        atomic_bool active;
};

enum job_kind { JOB_FETCH, JOB_OFFER };

struct job {
        bool used;
        enum job_kind kind;
        int peer;
        uint8_t file_id[CHP_HASH_BYTES];
        enum chp_fetch_state state;
        bool queued;   /* waiting for a worker */
        bool reported; /* a failure was told to a requester: the next request retries */
        time_t ended;
        char msg[CHP_PEER_MSG_MAX];
};

struct chp_peers {
        struct chp_shared *sh;
        struct peer *peers; /* MAX_SLOTS */
        atomic_int nslots;  /* slots in use (release-stored once a slot is filled) */
        atomic_int nactive; /* of them, peers configured now */
        atomic_uint_fast64_t upload_expiry, file_expiry; /* the running configuration's */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct job jobs[MAX_JOBS];
        bool stopping;
        pthread_t threads[WORKERS];
        int nthreads;
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

/* Stores the chunks of the manifest that this relay lacks, fetched from the peer. */
static int fetch_chunks(struct chp_peers *p, struct job *j, struct chp_channel *ch,
                        const struct chp_manifest *m, const uint8_t upload_id[CHP_UPLOAD_ID_BYTES])
{
        struct chp_store *store = p->sh->store;
        const struct peer *pe = &p->peers[j->peer];
        uint8_t *have = calloc(1, m->chunk_count ? m->chunk_count : 1);
        struct puts ps = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
        int rc =
            have ? chp_store_upload_chunks(store, upload_id, have, NULL, m->chunk_count) : -ENOMEM;
        uint32_t base = chp_channel_reserve_ids(ch, m->chunk_count + 1), next = 0, inflight = 0;
        while (!rc) {
                while (next < m->chunk_count && inflight < FETCH_WINDOW && !rc) {
                        if (have[next]) {
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
                puts_wait(&ps, FETCH_WINDOW);
                if (ps.failed)
                        rc = ps.failed;
                pthread_mutex_lock(&p->lock);
                bool stop = p->stopping;
                pthread_mutex_unlock(&p->lock);
                if (stop)
                        rc = CHP_ECLOSED;
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
static int peer_open(struct chp_peers *p, const struct peer *pe, struct chp_channel **out,
                     char *why, size_t cap)
{
        struct chp_channel_opts o = {.addr = pe->addr,
                                     .ik = true,
                                     .static_priv = p->sh->identity->priv,
                                     .remote_key = pe->key,
                                     .timeout_ms = PEER_TIMEOUT};
        return chp_channel_open(&o, out, why, cap);
}

static int do_fetch(struct chp_peers *p, struct job *j)
{
        const struct peer *pe = &p->peers[j->peer];
        struct chp_store *store = p->sh->store;
        uint64_t upload_expiry = atomic_load(&p->upload_expiry);
        uint64_t file_expiry = atomic_load(&p->file_expiry);
        struct chp_channel *ch = NULL;
        uint8_t *man = NULL, id[CHP_HASH_BYTES];
        char why[CHP_PEER_MSG_MAX] = "out of memory";
        struct chp_upload *u = calloc(1, sizeof(*u));
        int rc = u ? peer_open(p, pe, &ch, why, sizeof(why)) : -ENOMEM;
        if (rc) {
                job_msg(p, j, "cannot reach peer %s at %s: %s", pe->name, pe->addr, why);
                rc = -ECONNREFUSED;
                goto out;
        }
        for (;;) {
                struct chp_frame_header h;
                uint8_t *reply;
                struct chp_msg_manifest mm;
                struct chp_manifest m;
                rc = chp_channel_call(ch, CHP_F_GET_MANIFEST, j->file_id, CHP_HASH_BYTES, &h,
                                      &reply);
                if (rc) {
                        bool none =
                            rc == CHP_EREMOTE && chp_channel_remote_code(ch) == CHP_WE_NOT_FOUND;
                        job_msg(p, j, "peer %s: %s", pe->name,
                                none ? "no such file there" : chp_channel_error(ch));
                        rc = none ? -ENOENT : -ECONNRESET;
                        goto out;
                }
                if (chp_msg_manifest_decode(reply, h.len, &mm) != 0 ||
                    chp_manifest_id(mm.manifest, mm.manifest_len, id) != 0 ||
                    sodium_memcmp(id, j->file_id, CHP_HASH_BYTES) != 0) {
                        chp_log_warn("peer",
                                     "peer %s sent a manifest that is not the file's: "
                                     "disconnected",
                                     pe->name);
                        job_msg(p, j, "peer %s sent a manifest that is not the file's", pe->name);
                        rc = CHP_EMISMATCH;
                        goto out;
                }
                free(man);
                man = malloc(mm.manifest_len);
                if (!man) {
                        rc = -ENOMEM;
                        goto out;
                }
                memcpy(man, mm.manifest, mm.manifest_len);
                size_t mlen = mm.manifest_len;
                bool complete_there = mm.state == CHP_UPLOAD_COMPLETE;
                if (chp_manifest_decode(man, mlen, &m) < 0) {
                        rc = CHP_EMISMATCH;
                        goto out;
                }
                /* an upload of the manifest here: clients see it at once, chunk by chunk */
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
                if ((rc = fetch_chunks(p, j, ch, &m, open.u.upload_create.upload_id)))
                        goto out;
                if (!complete_there) {
                        /* still uploading at the origin: look again shortly */
                        struct timespec ts = {0, 200 * 1000000L};
                        nanosleep(&ts, NULL);
                        continue;
                }
                struct chp_store_req commit = {.type = CHP_REQ_COMMIT};
                commit.u.commit.has_upload = true;
                memcpy(commit.u.commit.upload_id, open.u.upload_create.upload_id,
                       CHP_UPLOAD_ID_BYTES);
                rc = chp_store_run(store, &commit);
                if (!rc)
                        chp_log_info("peer", "fetched a file of %llu bytes from %s",
                                     (unsigned long long)m.total_size, pe->name);
                goto out;
        }
out:
        if (rc && !j->msg[0])
                job_msg(p, j, "fetch from %s failed: %s", pe->name, chp_strerror(rc));
        chp_channel_close(ch);
        free(man);
        free(u);
        return rc;
}

static int do_offer(struct chp_peers *p, struct job *j)
{
        const struct peer *pe = &p->peers[j->peer];
        struct chp_channel *ch = NULL;
        char why[CHP_PEER_MSG_MAX];
        int rc = peer_open(p, pe, &ch, why, sizeof(why));
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
        chp_channel_close(ch);
        return rc;
}

static void *worker(void *arg)
{
        struct chp_peers *p = arg;
        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct job *j = NULL;
                while (!p->stopping) {
                        for (int i = 0; i < MAX_JOBS && !j; i++)
                                if (p->jobs[i].used && p->jobs[i].queued)
                                        j = &p->jobs[i];
                        if (j)
                                break;
                        pthread_cond_wait(&p->cond, &p->lock);
                }
                if (p->stopping)
                        break;
                j->queued = false;
                j->msg[0] = '\0';
                pthread_mutex_unlock(&p->lock);
                int rc = CHP_ECLOSED;
                if (!atomic_load(&p->peers[j->peer].active)) /* dropped by a reload meanwhile */
                        job_msg(p, j, "%s is no longer a peer of this relay",
                                p->peers[j->peer].name);
                else
                        rc = j->kind == JOB_FETCH ? do_fetch(p, j) : do_offer(p, j);
                pthread_mutex_lock(&p->lock);
                j->state = rc ? CHP_FETCH_FAILED : CHP_FETCH_DONE;
                j->ended = time(NULL);
                if (j->kind == JOB_OFFER)
                        j->used = false;
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
        pthread_cond_init(&p->cond, NULL);
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
        /* new slots are filled, then published; only the active flags change in place */
        int m = n;
        for (unsigned i = 0; i < cfg->npeers && i < CHP_MAX_PEERS; i++) {
                if (slot_of(p, m, &want[i]) >= 0)
                        continue;
                struct peer *pe = &p->peers[m];
                memcpy(pe->name, want[i].name, sizeof(pe->name));
                memcpy(pe->addr, want[i].addr, sizeof(pe->addr));
                memcpy(pe->key, want[i].key, CHP_HASH_BYTES);
                atomic_init(&pe->active, false);
                keep[m++] = true;
        }
        atomic_store(&p->nslots, m);
        int active = 0, was = atomic_load(&p->nactive);
        for (int i = 0; i < m; i++) {
                atomic_store(&p->peers[i].active, keep[i]);
                active += keep[i];
        }
        atomic_store(&p->nactive, active);
        atomic_store(&p->upload_expiry, cfg->upload_expiry);
        atomic_store(&p->file_expiry, cfg->file_expiry);
        if (active != was || added)
                chp_log_info("peer", "%d peers configured", active);
        /* the workers start with the first peer (at start-up or on a reload) */
        pthread_mutex_lock(&p->lock);
        for (int i = p->nthreads; active && i < WORKERS; i++) {
                if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
                        break;
                p->nthreads++;
        }
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
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->nthreads; i++)
                pthread_join(p->threads[i], NULL);
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

enum chp_fetch_state chp_peers_fetch(struct chp_peers *p, int peer,
                                     const uint8_t file_id[CHP_HASH_BYTES], char *msg, size_t cap)
{
        msg[0] = '\0';
        if (!peer_active(p, peer)) {
                snprintf(msg, cap, "%s is no longer a peer of this relay", chp_peers_name(p, peer));
                return CHP_FETCH_FAILED;
        }
        pthread_mutex_lock(&p->lock);
        bool found;
        struct job *j = job_slot(p, JOB_FETCH, file_id, &found);
        enum chp_fetch_state st = CHP_FETCH_NONE;
        if (found && j->state == CHP_FETCH_RUNNING) {
                st = CHP_FETCH_RUNNING;
        } else if (found && j->state == CHP_FETCH_FAILED && !j->reported &&
                   time(NULL) - j->ended < FAIL_MEMORY_S) {
                /* told once (to whoever is waiting on it); the next request tries again */
                st = CHP_FETCH_FAILED;
                j->reported = true;
                snprintf(msg, cap, "%s", j->msg);
        } else if (j) {
                /* new, or done/failed long enough ago: (re)start where the store stands */
                *j = (struct job){.used = true,
                                  .kind = JOB_FETCH,
                                  .peer = peer,
                                  .state = CHP_FETCH_RUNNING,
                                  .queued = true};
                memcpy(j->file_id, file_id, CHP_HASH_BYTES);
                pthread_cond_signal(&p->cond);
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
                *j = (struct job){.used = true,
                                  .kind = JOB_OFFER,
                                  .peer = peer,
                                  .state = CHP_FETCH_RUNNING,
                                  .queued = true};
                memcpy(j->file_id, file_id, CHP_HASH_BYTES);
                pthread_cond_signal(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
        return rc;
}
