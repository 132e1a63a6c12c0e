/* shared_read.c — the store's reads over the shared state (shared_int.h): lookups as chp_rstate
 * gets, chunk reads, and the synchronous reads waited for.
 *
 * A lookup is a small state machine (struct rlook) that runs one chp_rstate request at a time on
 * the handle (HAS: up to HAS_PARALLEL), each step continued from the previous one's done, on a
 * librados completion thread or the handle's timer thread. Its end sets q->status, frees the
 * machine, calls q->done and only then counts the lookup out (shared_op_end).
 *
 * Chunk bytes come from the backend's local read cache ([store] cache_size, cache.h) when it
 * holds them: chp_store_locate answers with the cached file (spliced as a segment's span, its fd
 * closed by the backend's span_release), the reads copy it and check its SHA-256 (the cache
 * knows no XXH3). Every chunk read from the pool is handed to the cache's filler, which checks
 * the SHA-256 before the file is renamed in: a cached file holds its address's bytes or goes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cache.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "records.h"
#include "shared_int.h"

#define HAS_PARALLEL 16  /* chunk stats of one HAS lookup in flight at once */
#define PAGE_KEYS    256 /* keys of an upload's chunk omap read at once */

struct rlook;

/* The pool writes "never" as CHP_RSTATE_NEVER, so that GC's comparisons hold (shared_write.c);
 * store.h's callers read it as 0. */
static uint64_t never_is_0(uint64_t t)
{
        return t == CHP_RSTATE_NEVER ? 0 : t;
}

/* One chunk stat of a HAS lookup. */
struct has_slot {
        struct chp_rstate_req r;
        struct rlook *l;
        size_t i; /* the address's index */
};

struct rlook {
        struct store_shared *sh;
        struct chp_store_lookup *q;
        struct chp_rstate_req r; /* the step in flight */
        /* UPLOAD_PROGRESS, UPLOAD_CHUNKS: the chunk omap's pages */
        char after[CHP_RSTATE_KEY_MAX];
        uint32_t chunk_size; /* the upload's */
        uint32_t chunks;     /* PROGRESS: indexes from 0 without a gap so far */
        uint8_t *tail;       /* PROGRESS without buf: room for the tail bytes */
        /* HAS */
        pthread_mutex_t mu;
        size_t next, running;
        int has_rc;
        bool ended;
        struct has_slot slots[]; /* HAS only */
};

static void look_end(struct rlook *l, int rc)
{
        struct store_shared *sh = l->sh;
        struct chp_store_lookup *q = l->q;
        chp_rstate_req_release(&l->r);
        if (rc) {
                free(q->manifest);
                free(q->meta);
                q->manifest = q->meta = NULL;
        }
        q->status = rc;
        if (q->kind == CHP_LOOKUP_HAS)
                pthread_mutex_destroy(&l->mu);
        free(l->tail);
        free(l);
        q->done(q); /* q is the caller's from here on */
        shared_op_end(sh);
}

/* Submits l->r (kind and inputs set) continuing in done: 0, or the refusal. */
static int look_start(struct rlook *l, enum chp_rstate_kind kind,
                      void (*done)(struct chp_rstate_req *, int))
{
        l->r.kind = kind;
        l->r.done = done;
        l->r.arg = l;
        return chp_rstate_submit(l->sh->st, &l->r);
}

/* look_start from a step's done: a refusal ends the lookup. */
static void look_go(struct rlook *l, enum chp_rstate_kind kind,
                    void (*done)(struct chp_rstate_req *, int))
{
        int rc = look_start(l, kind, done);
        if (rc)
                look_end(l, rc);
}

/* The upload record of a finished UPLOAD_GET, parsed; 0 or CHP_ECORRUPT. */
static int upload_parsed(struct chp_rstate_req *r, struct chp_rec_upload *u)
{
        return chp_rec_upload_parse(r->u.upload.got, r->u.upload.got_len, u) < 0 ? CHP_ECORRUPT : 0;
}

/* ---- files and pending ------------------------------------------------------------------- */

static void file_got(struct chp_rstate_req *r, int rc)
{
        struct rlook *l = r->arg;
        struct chp_store_lookup *q = l->q;
        const struct chp_rec_file *f = &r->u.file.file;
        if (q->kind == CHP_LOOKUP_FILE_META) {
                if (rc == -ENOENT || rc == CHP_EQUARANTINED)
                        rc = 0; /* unknown: no metadata */
                else if (!rc && r->u.file.got_meta_len > CHP_UPLOAD_META_MAX)
                        rc = CHP_ECORRUPT;
                else if (!rc && r->u.file.got_meta) {
                        q->meta = r->u.file.got_meta;
                        q->len = r->u.file.got_meta_len;
                        r->u.file.got_meta = NULL;
                }
                look_end(l, rc);
                return;
        }
        if (!rc && f->tenant_len > CHP_TENANT_MAX)
                rc = CHP_ECORRUPT;
        if (!rc && q->want_manifest) {
                if ((q->manifest = malloc(f->manifest_len ? f->manifest_len : 1))) {
                        memcpy(q->manifest, f->manifest, f->manifest_len);
                        q->manifest_len = f->manifest_len;
                } else {
                        rc = -ENOMEM;
                }
        }
        if (!rc) {
                memcpy(q->info.tenant, f->tenant, f->tenant_len);
                q->info.tenant[f->tenant_len] = '\0';
                q->info.created = f->created;
                q->info.expires = never_is_0(f->expires);
                q->info.size = f->size;
        }
        look_end(l, rc);
}

static void pending_got(struct chp_rstate_req *r, int rc)
{
        struct rlook *l = r->arg;
        if (!rc)
                memcpy(l->q->upload_id, r->u.pending.owner, CHP_UPLOAD_ID_BYTES);
        look_end(l, rc);
}

/* ---- uploads ----------------------------------------------------------------------------- */

static void page_got(struct chp_rstate_req *r, int rc);
static void tail_got(struct chp_rstate_req *r, int rc);

/* The next page of the upload's chunk omap after l->after. */
static void page_next(struct rlook *l)
{
        memset(&l->r.u.page, 0, sizeof(l->r.u.page));
        l->r.u.page.index = CHP_RS_INDEX_UPLOAD_CHUNKS;
        memcpy(l->r.u.page.id, l->q->id, CHP_UPLOAD_ID_BYTES);
        l->r.u.page.after = l->after[0] ? l->after : NULL;
        l->r.u.page.max = PAGE_KEYS;
        look_go(l, CHP_RS_INDEX_PAGE, page_got);
}

/* The tail bytes of the upload's offset object (u/<id>.t): into q->buf, or counted. */
static void tail_next(struct rlook *l, uint32_t chunk_size)
{
        struct chp_store_lookup *q = l->q;
        memset(&l->r.u.tus, 0, sizeof(l->r.u.tus));
        memcpy(l->r.u.tus.upload_id, q->id, CHP_UPLOAD_ID_BYTES);
        if (q->buf) {
                l->r.u.tus.buf = q->buf;
                l->r.u.tus.cap = q->cap > UINT32_MAX ? UINT32_MAX : (uint32_t)q->cap;
        } else {
                /* the tail stays under one chunk; pages are touched only as far as it goes */
                uint32_t cap =
                    chunk_size && chunk_size <= CHP_CHUNK_MAX ? chunk_size : CHP_CHUNK_MAX;
                if (!(l->tail = malloc(cap))) {
                        look_end(l, -ENOMEM);
                        return;
                }
                l->r.u.tus.buf = l->tail;
                l->r.u.tus.cap = cap;
        }
        look_go(l, CHP_RS_TUS_GET, tail_got);
}

static void tail_got(struct chp_rstate_req *r, int rc)
{
        struct rlook *l = r->arg;
        struct chp_store_lookup *q = l->q;
        if (rc == -ENOENT)
                rc = 0; /* no bytes kept yet: no offset object */
        else if (rc == -EMSGSIZE)
                rc = -ENOBUFS;
        if (!rc) {
                q->chunks = l->chunks;
                q->len = r->u.tus.got;
        }
        look_end(l, rc);
}

/* An upload chunk omap key (8 lowercase hex digits, rados_state.h) as its index. */
static bool chunk_index(const char *key, uint32_t *i)
{
        uint32_t v = 0;
        for (int k = 0; k < 8; k++) {
                char c = key[k];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (d < 0)
                        return false;
                v = v << 4 | (uint32_t)d;
        }
        *i = v;
        return key[8] == '\0';
}

static void page_got(struct chp_rstate_req *r, int rc)
{
        struct rlook *l = r->arg;
        struct chp_store_lookup *q = l->q;
        bool done = false;
        for (uint32_t k = 0; !rc && k < r->u.page.n && !done; k++) {
                const struct chp_rstate_entry *e = &r->u.page.entries[k];
                uint32_t i;
                if (!chunk_index(e->key, &i) || e->val_len != CHP_HASH_BYTES) {
                        rc = CHP_ECORRUPT;
                        break;
                }
                if (q->kind == CHP_LOOKUP_UPLOAD_PROGRESS) {
                        if (i != l->chunks)
                                done = true; /* a gap: what follows does not count */
                        else
                                l->chunks++;
                } else if (i >= q->n) {
                        done = true; /* keys sort by index: none after it is asked about */
                } else {
                        q->present[i] = 1;
                        if (q->chunk_addrs)
                                memcpy(q->chunk_addrs + i * CHP_HASH_BYTES, e->val, CHP_HASH_BYTES);
                }
        }
        bool more = !rc && !done && r->u.page.more && r->u.page.n;
        if (more)
                memcpy(l->after, r->u.page.entries[r->u.page.n - 1].key, CHP_RSTATE_KEY_MAX);
        chp_rstate_req_release(r);
        if (rc) {
                look_end(l, rc);
        } else if (more) {
                page_next(l);
        } else if (q->kind == CHP_LOOKUP_UPLOAD_PROGRESS) {
                tail_next(l, l->chunk_size);
        } else {
                look_end(l, 0);
        }
}

static void upload_got(struct chp_rstate_req *r, int rc)
{
        struct rlook *l = r->arg;
        struct chp_store_lookup *q = l->q;
        struct chp_rec_upload u;
        if (!rc)
                rc = upload_parsed(r, &u);
        if (rc) {
                look_end(l, rc);
                return;
        }
        switch (q->kind) {
        case CHP_LOOKUP_UPLOAD:
                chp_rec_upload_to_public(q->id, &u, q->upload);
                q->upload->expires = never_is_0(q->upload->expires);
                q->upload->file_expires = never_is_0(q->upload->file_expires);
                if (r->u.upload.complete) { /* the state s, not the record, says it */
                        q->upload->complete = true;
                        memcpy(q->upload->file_id, r->u.upload.file_id, CHP_HASH_BYTES);
                }
                break;
        case CHP_LOOKUP_UPLOAD_MANIFEST:
                if (!(u.flags & CHP_REC_UPLOAD_HAS_MANIFEST))
                        rc = -ENOENT;
                else if (!(q->manifest = malloc(u.manifest_len ? u.manifest_len : 1)))
                        rc = -ENOMEM;
                else {
                        memcpy(q->manifest, u.manifest, u.manifest_len);
                        q->manifest_len = u.manifest_len;
                }
                break;
        case CHP_LOOKUP_UPLOAD_CHUNKS:
                memset(q->present, 0, q->n);
                /* fall through */
        default: /* PROGRESS */
                l->chunk_size = u.chunk_size;
                chp_rstate_req_release(r);
                page_next(l);
                return;
        }
        look_end(l, rc);
}

/* ---- HAS: chunk stats in parallel --------------------------------------------------------- */

static void has_done(struct chp_rstate_req *r, int rc);

/* One slot's turn (slot NULL: the starter's count given back): counts the finished stat out
 * (had), starts the next address on the slot, or ends the lookup when nothing runs. The starter
 * (on the asking thread, where done must not run) does not end it: true tells it that it is
 * the last, and answers now. */
static bool has_step(struct rlook *l, struct has_slot *slot, bool had, int rc)
{
        for (;;) {
                pthread_mutex_lock(&l->mu);
                if (had) {
                        l->running--;
                        if (rc && !l->has_rc)
                                l->has_rc = rc;
                }
                bool go = slot && l->next < l->q->n && !l->has_rc;
                size_t i = l->next;
                if (go) {
                        l->next++;
                        l->running++;
                }
                bool last = !go && l->running == 0 && !l->ended;
                if (last)
                        l->ended = true;
                int end_rc = l->has_rc;
                pthread_mutex_unlock(&l->mu);
                if (last && !slot)
                        return true;
                if (last)
                        look_end(l, end_rc);
                if (!go)
                        return false;
                memset(&slot->r, 0, sizeof(slot->r));
                slot->r.kind = CHP_RS_CHUNK_STAT;
                slot->r.done = has_done;
                slot->r.arg = slot;
                slot->i = i;
                memcpy(slot->r.u.chunk.addr, l->q->addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES);
                rc = chp_rstate_submit(l->sh->st, &slot->r);
                if (!rc)
                        return false;
                had = true; /* refused: counted out above, next turn */
        }
}

static void has_done(struct chp_rstate_req *r, int rc)
{
        struct has_slot *slot = r->arg;
        struct rlook *l = slot->l;
        l->q->present[slot->i] = rc == 0;
        has_step(l, slot, true, rc == -ENOENT ? 0 : rc);
}

/* ---- the lookup ------------------------------------------------------------------------- */

int shared_lookup(struct chp_store *s, struct chp_store_lookup *q)
{
        struct store_shared *sh = s->shared;
        bool has = q->kind == CHP_LOOKUP_HAS;
        size_t nslots = has ? (q->n < HAS_PARALLEL ? q->n : HAS_PARALLEL) : 0;
        switch (q->kind) {
        case CHP_LOOKUP_FILE:
        case CHP_LOOKUP_FILE_META:
        case CHP_LOOKUP_UPLOAD_PROGRESS:
        case CHP_LOOKUP_UPLOAD_MANIFEST:
        case CHP_LOOKUP_PENDING:
                break;
        case CHP_LOOKUP_UPLOAD:
                if (!q->upload)
                        return q->status = -EINVAL;
                break;
        case CHP_LOOKUP_UPLOAD_CHUNKS:
                if (!q->present)
                        return q->status = -EINVAL;
                break;
        case CHP_LOOKUP_HAS:
                if (!q->present || (!q->addrs && q->n))
                        return q->status = -EINVAL;
                if (!q->n)
                        return q->status = 0; /* nothing to ask */
                break;
        default:
                return q->status = -EINVAL;
        }
        if (!q->done)
                return q->status = -EINVAL;
        struct rlook *l = calloc(1, sizeof(*l) + nslots * sizeof(struct has_slot));
        if (!l)
                return q->status = -ENOMEM;
        int rc = shared_op_begin(sh);
        if (rc) {
                free(l);
                return q->status = rc;
        }
        l->sh = sh;
        l->q = q;
        /* the first request refused: answered now; once one is under way, through done */
        switch (q->kind) {
        case CHP_LOOKUP_FILE:
        case CHP_LOOKUP_FILE_META:
                memcpy(l->r.u.file.id, q->id, CHP_HASH_BYTES);
                rc = look_start(l, CHP_RS_FILE_GET, file_got);
                break;
        case CHP_LOOKUP_PENDING:
                memcpy(l->r.u.pending.file_id, q->id, CHP_HASH_BYTES);
                rc = look_start(l, CHP_RS_PENDING_GET, pending_got);
                break;
        case CHP_LOOKUP_HAS:
                pthread_mutex_init(&l->mu, NULL);
                l->running = 1; /* the starter's: nothing ends before every slot is started */
                for (size_t k = 0; k < nslots; k++) {
                        l->slots[k].l = l;
                        has_step(l, &l->slots[k], false, 0);
                }
                if (!has_step(l, NULL, true, 0))
                        return -EINPROGRESS;
                /* every stat done (or refused) before the starter let go: answered now */
                rc = l->has_rc;
                pthread_mutex_destroy(&l->mu);
                free(l);
                shared_op_end(sh);
                return q->status = rc;
        default: /* the UPLOAD kinds: the record first (-ENOENT when there is no upload) */
                memcpy(l->r.u.upload.id, q->id, CHP_UPLOAD_ID_BYTES);
                rc = look_start(l, CHP_RS_UPLOAD_GET, upload_got);
                break;
        }
        if (!rc)
                return -EINPROGRESS;
        free(l);
        shared_op_end(sh);
        return q->status = rc;
}

/* A waited lookup's done: wakes the waiting thread. */
struct waiter {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool done;
};

static void waiter_done(struct chp_store_lookup *q)
{
        struct waiter *w = q->ctx;
        pthread_mutex_lock(&w->mu);
        w->done = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
}

int shared_lookup_wait(struct chp_store *s, struct chp_store_lookup *q)
{
        struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        q->done = waiter_done;
        q->ctx = &w;
        int rc = shared_lookup(s, q);
        if (rc == -EINPROGRESS) {
                pthread_mutex_lock(&w.mu);
                while (!w.done)
                        pthread_cond_wait(&w.cv, &w.mu);
                pthread_mutex_unlock(&w.mu);
                rc = q->status;
        }
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
        return rc;
}

/* ---- chunk bytes -------------------------------------------------------------------------- */

int shared_locate(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES],
                  struct chp_chunk_loc *loc)
{
        memset(loc, 0, sizeof(*loc));
        loc->fd = -1;
        struct chp_rcache *c = chp_rados_cache(s->backend);
        uint32_t len;
        /* a miss is counted by the read that follows (chp_store_read_async) */
        int fd = c ? chp_rcache_find(c, addr, &len, false) : -ENOENT;
        if (fd >= 0) { /* released as the backend's span (rados.c: r_span, r_span_release) */
                loc->len = len;
                loc->fd = fd;
                loc->seg = (struct chp_seg *)s->backend;
                return 0;
        }
        loc->remote = true;
        return 0;
}

/* The chunk from the read cache into buf: its length; -ENOBUFS when cap is too small; -ENOENT
 * when it is not cached or its file is not its bytes any more (then removed): the pool serves. */
static ssize_t cached_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                           size_t cap)
{
        struct chp_rcache *c = chp_rados_cache(s->backend);
        uint32_t len;
        int fd = c ? chp_rcache_find(c, addr, &len, true) : -ENOENT;
        if (fd < 0)
                return -ENOENT;
        ssize_t rc = len > cap ? -ENOBUFS : 0;
        for (size_t done = 0; !rc && done < len;) {
                ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)done);
                if (n < 0 && errno != EINTR)
                        rc = -errno;
                else if (n == 0)
                        rc = -EIO; /* shorter than when it was opened */
                else if (n > 0)
                        done += (size_t)n;
        }
        close(fd);
        uint8_t sum[CHP_HASH_BYTES];
        if (!rc && (rc = chp_sha256(buf, len, sum)) == 0 && memcmp(sum, addr, CHP_HASH_BYTES) != 0)
                rc = CHP_ECORRUPT;
        if (rc == -ENOBUFS)
                return rc;
        if (rc) {
                char hex[2 * CHP_HASH_BYTES + 1];
                chp_hex_encode(addr, CHP_HASH_BYTES, hex);
                chp_log_warn("store", "cache: chunk %s: %s; removed, read from the pool", hex,
                             rc == CHP_ECORRUPT ? "its bytes do not hash to its address"
                                                : chp_strerror((int)rc));
                chp_rcache_forget(c, addr);
                return -ENOENT;
        }
        return (ssize_t)len;
}

/* A chunk read from the pool (n bytes, XXH3 checked): a copy for the cache's filler. */
static void cache_fill(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], const void *buf,
                       ssize_t n)
{
        struct chp_rcache *c = chp_rados_cache(s->backend);
        if (c && n > 0)
                chp_rcache_fill(c, addr, buf, (uint32_t)n);
}

struct chunk_read {
        struct chp_rstate_req r;
        struct store_shared *sh;
        chp_store_read_fn done;
        void *ctx;
};

/* The result of a CHUNK_READ_XXH3 as chp_store_read returns it. */
static ssize_t read_result(const struct chp_rstate_req *r, int rc)
{
        if (rc == -EMSGSIZE)
                return -ENOBUFS;
        return rc ? (ssize_t)rc : (ssize_t)r->u.chunk.got;
}

static void chunk_read_done(struct chp_rstate_req *r, int rc)
{
        struct chunk_read *cr = r->arg;
        struct store_shared *sh = cr->sh;
        chp_store_read_fn done = cr->done;
        void *ctx = cr->ctx;
        ssize_t result = read_result(r, rc);
        cache_fill(sh->s, r->u.chunk.addr, r->u.chunk.buf, result); /* before buf is done's */
        free(cr);
        done(ctx, result);
        shared_op_end(sh);
}

ssize_t shared_read_async(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                          size_t cap, chp_store_read_fn done, void *ctx)
{
        struct store_shared *sh = s->shared;
        if (!buf || !done)
                return -EINVAL;
        ssize_t n = cached_read(s, addr, buf, cap);
        if (n != -ENOENT)
                return n; /* at hand: read now, done not called */
        struct chunk_read *cr = calloc(1, sizeof(*cr));
        if (!cr)
                return -ENOMEM;
        int rc = shared_op_begin(sh);
        if (rc) {
                free(cr);
                return rc;
        }
        cr->sh = sh;
        cr->done = done;
        cr->ctx = ctx;
        cr->r.kind = CHP_RS_CHUNK_READ_XXH3;
        memcpy(cr->r.u.chunk.addr, addr, CHP_HASH_BYTES);
        cr->r.u.chunk.buf = buf;
        cr->r.u.chunk.cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
        cr->r.done = chunk_read_done;
        cr->r.arg = cr;
        if ((rc = chp_rstate_submit(sh->st, &cr->r))) {
                free(cr);
                shared_op_end(sh);
                return rc;
        }
        return -EINPROGRESS;
}

ssize_t shared_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf, size_t cap)
{
        struct store_shared *sh = s->shared;
        if (!buf)
                return -EINVAL;
        ssize_t n = cached_read(s, addr, buf, cap);
        if (n != -ENOENT)
                return n;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        struct chp_rstate_req r = {.kind = CHP_RS_CHUNK_READ_XXH3};
        memcpy(r.u.chunk.addr, addr, CHP_HASH_BYTES);
        r.u.chunk.buf = buf;
        r.u.chunk.cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
        n = read_result(&r, chp_rstate_run(sh->st, &r));
        cache_fill(s, addr, buf, n);
        shared_op_end(sh);
        return n;
}

int shared_tenant_usage(struct chp_store *s, const char *tenant, struct chp_tenant_usage *out)
{
        struct store_shared *sh = s->shared;
        memset(out, 0, sizeof(*out));
        if (tenant && strnlen(tenant, CHP_TENANT_MAX + 1) > CHP_TENANT_MAX)
                return -EINVAL;
        int rc = shared_op_begin(sh);
        if (rc)
                return rc;
        struct chp_rstate_req r = {.kind = CHP_RS_USAGE_GET};
        r.u.usage.tenant = tenant ? tenant : "";
        rc = chp_rstate_run(sh->st, &r);
        shared_op_end(sh);
        if (!rc)
                *out = r.u.usage.usage;
        return rc;
}
