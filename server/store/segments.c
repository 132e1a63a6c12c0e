/* segments.c — the first chunk backend (backend.h): segs_append-only segment files.
 *
 * Chunks are appended to the open segment; a segment is sealed when full (or suspect), and GC
 * drops a sealed segment once nothing in it lives, or compacts it (moves its live chunks to the
 * open segment) once it is sparse. The backend keeps, in the store's LMDB and in the batch's
 * transaction, a record per segment (committed total, live bytes, state) and an index from
 * (segment, offset) to address, so that the files and the index always agree after a commit: a
 * crash leaves at most bytes past a segment's committed total, cut at the next open.
 *
 * The table of open segment files is shared with readers (reference counted, under a lock); the
 * rest is the writer thread's. docs/storage.md explains the layout and the commit protocol.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "segments_int.h"

static void seg_path(const struct segments *b, uint32_t num, char *out, size_t cap)
{
        snprintf(out, cap, "%s/segments/%08u.seg", b->dir, num);
}

int segs_rec_get(struct segments *b, MDB_txn *txn, uint32_t num, struct chp_rec_seg *r)
{
        uint8_t k[4];
        chp_put_be32(k, num);
        MDB_val key = val(k, 4), v;
        int rc = mdb_get(txn, b->db_segments, &key, &v);
        if (rc)
                return store_mdb_rc(rc);
        return chp_rec_seg_parse(v.mv_data, v.mv_size, r) < 0 ? CHP_ECORRUPT : 0;
}

int segs_rec_put(struct segments *b, MDB_txn *txn, uint32_t num, const struct chp_rec_seg *r)
{
        uint8_t k[4], p[CHP_REC_SEG_BYTES];
        chp_put_be32(k, num);
        chp_rec_seg_encode(p, r);
        MDB_val key = val(k, 4), v = val(p, sizeof(p));
        return store_mdb_rc(mdb_put(txn, b->db_segments, &key, &v, 0));
}

int segs_rec_del(struct segments *b, MDB_txn *txn, uint32_t num)
{
        uint8_t k[4];
        chp_put_be32(k, num);
        MDB_val key = val(k, 4);
        return store_mdb_rc(mdb_del(txn, b->db_segments, &key, NULL));
}

/* Reads exactly len bytes at off; CHP_ECORRUPT if the file ends first. */
ssize_t segs_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return CHP_ECORRUPT; /* the index points past the end of the segment */
                done += (size_t)n;
        }
        return (ssize_t)done;
}

/* ---- segment table ------------------------------------------------------------------------ */

struct chp_seg *segs_get(struct segments *b, uint32_t num)
{
        pthread_mutex_lock(&b->lock);
        struct chp_seg *g = b->segs[num % SEG_BUCKETS];
        while (g && g->num != num)
                g = g->next;
        if (g)
                atomic_fetch_add(&g->refs, 1);
        pthread_mutex_unlock(&b->lock);
        return g;
}

void segs_put(struct chp_seg *g)
{
        if (g && atomic_fetch_sub(&g->refs, 1) == 1) {
                close(g->fd);
                free(g);
        }
}

static int seg_add(struct segments *b, uint32_t num, int fd, struct chp_seg **out)
{
        struct chp_seg *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->num = num;
        g->fd = fd;
        atomic_init(&g->refs, 1);
        pthread_mutex_lock(&b->lock);
        g->next = b->segs[num % SEG_BUCKETS];
        b->segs[num % SEG_BUCKETS] = g;
        pthread_mutex_unlock(&b->lock);
        if (out)
                *out = g;
        return 0;
}

/* Drops the table's reference: readers that hold the segment keep its fd until they release. */
static void seg_retire(struct segments *b, uint32_t num)
{
        struct chp_seg *found = NULL;
        pthread_mutex_lock(&b->lock);
        struct chp_seg **pp = &b->segs[num % SEG_BUCKETS];
        while (*pp && (*pp)->num != num)
                pp = &(*pp)->next;
        if (*pp) {
                found = *pp;
                *pp = found->next;
        }
        pthread_mutex_unlock(&b->lock);
        segs_put(found);
}

static int seg_create(struct segments *b, uint32_t num, struct chp_seg **out)
{
        char path[4096];
        seg_path(b, num, path, sizeof(path));
        int err = fault(b, CHP_FAULT_SEG_CREATE);
        if (err)
                return err;
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        /* the new name must survive a crash before anything in it is acknowledged */
        if (b->sync == CHP_SYNC_FULL && ((err = fault(b, CHP_FAULT_SEG_CREATE)) ||
                                         (fsync(b->segdir_fd) != 0 && (err = -errno)))) {
                close(fd);
                unlink(path);
                return err;
        }
        int rc = seg_add(b, num, fd, out);
        if (rc)
                close(fd);
        return rc;
}

/* Opens every segment the index knows, cuts torn tails (bytes past the committed total that a
 * crash left behind), removes files the index does not know, and finds the open segment. */
static int seg_load(struct segments *b)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn);
        if (rc)
                return store_mdb_rc(rc);
        rc = mdb_cursor_open(txn, b->db_segments, &cur);
        if (rc)
                goto out;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_seg r;
                if (k.mv_size != 4 || chp_rec_seg_parse(v.mv_data, v.mv_size, &r) < 0) {
                        rc = MDB_CORRUPTED;
                        goto out;
                }
                uint32_t num = chp_get_be32(k.mv_data);
                uint64_t total = r.total;
                if (num >= b->seg_next)
                        b->seg_next = num + 1;
                char path[4096];
                seg_path(b, num, path, sizeof(path));
                int fd = open(path, O_RDWR | O_CLOEXEC);
                if (fd < 0) {
                        chp_log_error("store", "segment %u is missing (%s); its chunks are lost",
                                      num, strerror(errno));
                        continue;
                }
                struct stat st;
                if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > total) {
                        chp_log_info("store", "segment %u: cutting torn tail of %llu bytes", num,
                                     (unsigned long long)((uint64_t)st.st_size - total));
                        if (ftruncate(fd, (off_t)total) != 0 || fdatasync(fd) != 0) {
                                rc = errno;
                                close(fd);
                                goto out;
                        }
                } else if ((uint64_t)st.st_size < total) {
                        chp_log_error("store", "segment %u is shorter than its index says", num);
                }
                struct chp_seg *g;
                int err = seg_add(b, num, fd, &g);
                if (err) {
                        close(fd);
                        mdb_cursor_close(cur);
                        mdb_txn_abort(txn);
                        return err;
                }
                if (r.state == CHP_REC_SEG_OPEN) {
                        b->open_seg = g;
                        b->open_end = total;
                }
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        if (rc)
                return store_mdb_rc(rc);

        /* Segment files the index does not know were created by a batch that never committed,
         * or belong to a segment whose deletion committed before the unlink ran. */
        char segdir[4096];
        snprintf(segdir, sizeof(segdir), "%s/segments", b->dir);
        DIR *d = opendir(segdir);
        if (!d)
                return -errno;
        struct dirent *e;
        while ((e = readdir(d))) {
                unsigned num;
                char tail;
                if (sscanf(e->d_name, "%8u.se%c", &num, &tail) != 2 || tail != 'g')
                        continue;
                if (num >= b->seg_next && num < UINT32_MAX)
                        b->seg_next = num + 1; /* even if its unlink below fails */
                struct chp_seg *g = segs_get(b, num);
                if (g) {
                        segs_put(g);
                        continue;
                }
                chp_log_info("store", "removing segment file %s that the index does not know",
                             e->d_name);
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        return 0;
}

/* ---- appending (writer thread) ------------------------------------------------------------ */

static void mark_dirty(struct segments *b, struct chp_seg *g)
{
        for (int i = 0; i < b->ndirty; i++)
                if (b->dirty[i] == g)
                        return;
        if (b->ndirty < MAX_DIRTY) {
                atomic_fetch_add(&g->refs, 1);
                b->dirty[b->ndirty++] = g;
        } else if (b->sync == CHP_SYNC_FULL &&
                   (fault(b, CHP_FAULT_SEG_SYNC) || fdatasync(g->fd) != 0)) {
                b->sync_failed = true; /* more segments than slots: sync this one now */
        }
}

/* Cuts what lies past `end` in g's file: bytes of appends that failed or were rolled back. They
 * are never referenced (the index describes a prefix), so this only gives the space back. */
static void seg_cut(struct chp_seg *g, uint64_t end)
{
        struct stat st;
        if (fstat(g->fd, &st) == 0 && (uint64_t)st.st_size > end &&
            ftruncate(g->fd, (off_t)end) != 0)
                chp_log_warn("store", "segment %u: cannot cut %llu unreferenced bytes: %s", g->num,
                             (unsigned long long)((uint64_t)st.st_size - end), strerror(errno));
}

/* Seals the open segment at its current end: it takes no more appends, and GC may drop or
 * compact it. Inside txn; rollback restores open_seg if txn aborts. */
int segs_seal_open(struct segments *b, MDB_txn *txn)
{
        struct chp_rec_seg r;
        int rc = segs_rec_get(b, txn, b->open_seg->num, &r);
        if (rc)
                return rc;
        r.total = b->open_end;
        r.state = CHP_REC_SEG_SEALED;
        if ((rc = segs_rec_put(b, txn, b->open_seg->num, &r)))
                return rc;
        seg_cut(b->open_seg, b->open_end);
        b->open_seg = NULL;
        b->open_end = 0;
        return 0;
}

/* Appends chunk addr (len bytes) to the open segment, rolling over to a new one when it is full
 * (or must not take more: seal_next), and indexes it. Inside txn. On success *place says where
 * the bytes are; the segment's total is recorded in txn. On failure nothing the index knows
 * refers to the written bytes, and a failed write leaves the segment to be sealed by the next
 * segs_append. compacting: GC moving live bytes, which may use the room puts leave for it. */
int segs_append(struct segments *b, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                const void *data, uint32_t len, bool compacting, struct chp_backend_place *place)
{
        int rc;
        struct chp_rec_seg r;
        if ((rc = b->host.space_take(b->host.ctx, len, compacting))) {
                b->seal_next = true;
                return rc;
        }
        if (!b->open_seg || b->seal_next || (b->open_end > 0 && b->open_end + len > b->seg_max)) {
                if (b->open_seg && (rc = segs_seal_open(b, txn)))
                        return rc;
                if (b->ncreated == MAX_CREATED)
                        return -EAGAIN; /* this request fails; batch_bytes vs segment_size
                                           makes it unreachable with sane settings */
                uint32_t next = b->seg_next++;
                struct chp_seg *g;
                if ((rc = seg_create(b, next, &g))) {
                        if (is_space_error(rc))
                                b->host.out_of_space(b->host.ctx);
                        return rc;
                }
                b->created[b->ncreated++] = next;
                r = (struct chp_rec_seg){.total = 0, .live = 0, .state = CHP_REC_SEG_OPEN};
                if ((rc = segs_rec_put(b, txn, next, &r)))
                        return rc;
                b->open_seg = g;
                b->open_end = 0;
                b->seal_next = false;
        }
        const uint8_t *p = data;
        uint64_t at = b->open_end;
        size_t done = 0;
        int err = fault(b, CHP_FAULT_SEG_WRITE);
        if (err && pwrite(b->open_seg->fd, p, len / 2, (off_t)at) < 0)
                err = -errno; /* the injected failure tears the segs_append, as a full disk would */
        while (!err && done < len) {
                ssize_t n = pwrite(b->open_seg->fd, p + done, len - done, (off_t)(at + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        err = -errno;
                else
                        done += (size_t)n;
        }
        if (err) {
                /* The bytes written are cut by rollback; the segment itself is suspect (a failed
                 * write may have left pages the kernel will never write back) or the disk is
                 * full: either way the next segs_append starts a new segment. */
                b->seal_next = true;
                if (is_space_error(err))
                        b->host.out_of_space(b->host.ctx);
                chp_log_warn("store", "segment %u: segs_append of %u bytes failed: %s",
                             b->open_seg->num, len, chp_strerror(err));
                return err;
        }
        if ((rc = segs_rec_get(b, txn, b->open_seg->num, &r)))
                return rc;
        r.total = at + len;
        r.live += len;
        if ((rc = segs_rec_put(b, txn, b->open_seg->num, &r)))
                return rc;
        uint8_t ik[CHP_REC_SEGIDX_KEY];
        chp_rec_segidx_key(ik, b->open_seg->num, at);
        MDB_val ikey = val(ik, sizeof(ik)), ival = val(addr, CHP_HASH_BYTES);
        if ((rc = store_mdb_rc(mdb_put(txn, b->db_segidx, &ikey, &ival, 0))))
                return rc;
        b->open_end = at + len;
        mark_dirty(b, b->open_seg);
        *place = (struct chp_backend_place){.unit = b->open_seg->num, .offset = at};
        return 0;
}

/* ---- the write half (writer thread) ------------------------------------------------------- */

static void seg_batch_begin(struct chp_backend *base)
{
        struct segments *b = SEGMENTS(base);
        b->ncreated = 0;
        b->ndead = 0;
        b->ndirty = 0;
        b->sync_failed = false;
}

static int seg_put_chunk(struct chp_backend *base, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                         const void *data, uint32_t len, struct chp_backend_place *place)
{
        return segs_append(SEGMENTS(base), txn, addr, data, len, false, place);
}

/* pwrite has completed every put already: the barrier is fdatasync of the batch's segments. */
static int seg_sync(struct chp_backend *base)
{
        struct segments *b = SEGMENTS(base);
        int sync_err = -EIO;
        if (b->sync == CHP_SYNC_FULL) {
                for (int i = 0; i < b->ndirty; i++) {
                        int err = fault(b, CHP_FAULT_SEG_SYNC);
                        if (!err && fdatasync(b->dirty[i]->fd) != 0)
                                err = -errno;
                        if (err && !b->sync_failed)
                                sync_err = err;
                        b->sync_failed = b->sync_failed || err;
                }
        }
        if (!b->sync_failed)
                return 0;
        /* fsyncgate: after a failed fdatasync the kernel may have dropped the dirty pages and a
         * second call may well succeed without writing them. So nothing in this batch is
         * acknowledged, nothing is retried, and the segment takes no more appends: the next one
         * seals it at its committed length and starts another. */
        chp_log_error("store", "fdatasync of a segment failed: batch not committed; "
                               "the segment takes no more appends");
        b->seal_next = true;
        return sync_err;
}

static void seg_batch_end(struct chp_backend *base, bool committed)
{
        struct segments *b = SEGMENTS(base);
        for (int i = 0; committed && i < b->ndead; i++) {
                char path[4096];
                seg_path(b, b->dead[i], path, sizeof(path));
                unlink(path);
                seg_retire(b, b->dead[i]);
        }
        for (int i = 0; i < b->ndirty; i++)
                segs_put(b->dirty[i]);
        b->ndirty = 0;
}

static int seg_drop(struct chp_backend *base, MDB_txn *txn, const struct chp_backend_place *place,
                    uint32_t len)
{
        struct segments *b = SEGMENTS(base);
        uint8_t ik[CHP_REC_SEGIDX_KEY];
        chp_rec_segidx_key(ik, place->unit, place->offset);
        MDB_val ikey = val(ik, sizeof(ik));
        int rc = mdb_del(txn, b->db_segidx, &ikey, NULL);
        if (rc && rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        struct chp_rec_seg r;
        if ((rc = segs_rec_get(b, txn, place->unit, &r)) == 0) {
                r.live = r.live >= len ? r.live - len : 0;
                return segs_rec_put(b, txn, place->unit, &r);
        }
        return rc == -ENOENT ? 0 : rc;
}

void segs_mark(struct chp_backend *base, struct chp_backend_mark *out)
{
        struct segments *b = SEGMENTS(base);
        struct mark m = {b->open_seg, b->open_end, b->ncreated, b->ndead, b->seal_next};
        memset(out, 0, sizeof(*out));
        memcpy(out, &m, sizeof(m));
}

void segs_rollback(struct chp_backend *base, const struct chp_backend_mark *in)
{
        struct segments *b = SEGMENTS(base);
        struct mark m;
        memcpy(&m, in, sizeof(m));
        for (int i = m.ncreated; i < b->ncreated; i++) {
                char path[4096];
                seg_path(b, b->created[i], path, sizeof(path));
                unlink(path);
                seg_retire(b, b->created[i]);
        }
        b->ncreated = m.ncreated;
        b->ndead = m.ndead;
        b->open_seg = m.open_seg;
        b->open_end = m.open_end;
        /* a suspect segment that comes back as the open one is still suspect; a failure during
         * the undone work may have made it so too: rollback never clears seal_next */
        b->seal_next = b->seal_next || m.seal_next;
        /* bytes past it are unreferenced: cut them now rather than overwrite them later, so that
         * a failed segs_append (a full disk, say) gives its space back at once */
        if (b->open_seg)
                seg_cut(b->open_seg, b->open_end);
}

static void seg_full(struct chp_backend *base)
{
        SEGMENTS(base)->seal_next = true;
}

/* ---- reads (any thread) ------------------------------------------------------------------- */

static int seg_read(struct chp_backend *base, const struct chp_backend_place *place, uint32_t len,
                    void *buf)
{
        struct chp_seg *g = segs_get(SEGMENTS(base), place->unit);
        if (!g)
                return -EAGAIN; /* compaction moved the chunk after the caller's snapshot */
        ssize_t n = segs_pread_full(g->fd, buf, len, place->offset);
        segs_put(g);
        return n < 0 ? (int)n : 0;
}

static int seg_span(struct chp_backend *base, const struct chp_backend_place *place,
                    struct chp_backend_span *out)
{
        struct chp_seg *g = segs_get(SEGMENTS(base), place->unit);
        if (!g)
                return -EAGAIN;
        *out = (struct chp_backend_span){.fd = g->fd, .offset = place->offset, .ref = g};
        return 0;
}

static void seg_span_release(struct chp_backend *base, struct chp_backend_span *span)
{
        (void)base;
        segs_put(span->ref);
        span->ref = NULL;
        span->fd = -1;
}

/* ---- open / close ------------------------------------------------------------------------- */

static void seg_close(struct chp_backend *base)
{
        struct segments *b = SEGMENTS(base);
        if (!b)
                return;
        for (int i = 0; i < SEG_BUCKETS; i++) {
                struct chp_seg *g = b->segs[i];
                while (g) {
                        struct chp_seg *next = g->next;
                        segs_put(g);
                        g = next;
                }
        }
        if (b->segdir_fd >= 0)
                close(b->segdir_fd);
        pthread_mutex_destroy(&b->lock);
        free(b->copy_buf);
        free(b->dir);
        free(b);
}

static const struct chp_backend_ops segment_ops = {
    .name = "segments",
    .close = seg_close,
    .batch_begin = seg_batch_begin,
    .put = seg_put_chunk,
    .sync = seg_sync,
    .batch_end = seg_batch_end,
    .drop = seg_drop,
    .mark = segs_mark,
    .rollback = segs_rollback,
    .full = seg_full,
    .reclaim = segs_reclaim,
    .read = seg_read,
    .span = seg_span,
    .span_release = seg_span_release,
    .verify_begin = segs_verify_begin,
    .verify_chunk = segs_verify_chunk,
    .verify_end = segs_verify_end,
    .stats = segs_stats,
};

static int open_dbs(struct segments *b)
{
        MDB_txn *txn;
        int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
        if (rc)
                return store_mdb_rc(rc);
        if ((rc = mdb_dbi_open(txn, "segments", MDB_CREATE, &b->db_segments)) ||
            (rc = mdb_dbi_open(txn, "segidx", MDB_CREATE, &b->db_segidx))) {
                mdb_txn_abort(txn);
                return store_mdb_rc(rc);
        }
        return store_mdb_rc(mdb_txn_commit(txn));
}

int chp_segments_open(const struct chp_segments_opts *o, const struct chp_backend_host *h,
                      struct chp_backend **out)
{
        *out = NULL;
        struct segments *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->base.ops = &segment_ops;
        b->host = *h;
        b->env = o->env;
        b->sync = o->sync;
        b->seg_max = o->seg_max;
        b->segdir_fd = -1;
        b->seg_next = 1;
        pthread_mutex_init(&b->lock, NULL);
        int rc;
        char path[4096];
        b->dir = strdup(o->dir);
        b->copy_buf = malloc(CHP_CHUNK_MAX);
        if (!b->dir || !b->copy_buf) {
                rc = -ENOMEM;
                goto out;
        }
        snprintf(path, sizeof(path), "%s/segments", b->dir);
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
                rc = -errno;
                goto out;
        }
        b->segdir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (b->segdir_fd < 0) {
                rc = -errno;
                goto out;
        }
        if ((rc = open_dbs(b)) || (rc = seg_load(b)))
                goto out;
        *out = &b->base;
        return 0;
out:
        seg_close(&b->base);
        return rc;
}
