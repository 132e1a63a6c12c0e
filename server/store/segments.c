/* segments.c — the append-only segment files that hold chunks above inline_max: the table of
 * open segments (shared with readers, reference counted), creating, loading and cutting files,
 * and appending (writer thread) with the segment accounting kept in the same transaction.
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
#include "log.h"
#include "store_int.h"

void store_seg_path(const struct chp_store *s, uint32_t num, char *out, size_t cap)
{
        snprintf(out, cap, "%s/segments/%08u.seg", s->dir, num);
}

/* ---- segment table ------------------------------------------------------------------------ */

struct chp_seg *store_seg_get(struct chp_store *s, uint32_t num)
{
        pthread_mutex_lock(&s->seg_lock);
        struct chp_seg *g = s->segs[num % SEG_BUCKETS];
        while (g && g->num != num)
                g = g->next;
        if (g)
                atomic_fetch_add(&g->refs, 1);
        pthread_mutex_unlock(&s->seg_lock);
        return g;
}

void store_seg_put(struct chp_seg *g)
{
        if (g && atomic_fetch_sub(&g->refs, 1) == 1) {
                close(g->fd);
                free(g);
        }
}

static int seg_add(struct chp_store *s, uint32_t num, int fd, struct chp_seg **out)
{
        struct chp_seg *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->num = num;
        g->fd = fd;
        atomic_init(&g->refs, 1);
        pthread_mutex_lock(&s->seg_lock);
        g->next = s->segs[num % SEG_BUCKETS];
        s->segs[num % SEG_BUCKETS] = g;
        pthread_mutex_unlock(&s->seg_lock);
        if (out)
                *out = g;
        return 0;
}

/* Drops the table's reference: readers that hold the segment keep its fd until they release. */
void store_seg_retire(struct chp_store *s, uint32_t num)
{
        struct chp_seg *found = NULL;
        pthread_mutex_lock(&s->seg_lock);
        struct chp_seg **pp = &s->segs[num % SEG_BUCKETS];
        while (*pp && (*pp)->num != num)
                pp = &(*pp)->next;
        if (*pp) {
                found = *pp;
                *pp = found->next;
        }
        pthread_mutex_unlock(&s->seg_lock);
        store_seg_put(found);
}

static int seg_create(struct chp_store *s, uint32_t num, struct chp_seg **out)
{
        char path[4096];
        store_seg_path(s, num, path, sizeof(path));
        int err = fault_at(s, CHP_FAULT_SEG_CREATE);
        if (err)
                return err;
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        /* the new name must survive a crash before anything in it is acknowledged */
        if (s->opts.sync == CHP_SYNC_FULL && ((err = fault_at(s, CHP_FAULT_SEG_CREATE)) ||
                                              (fsync(s->segdir_fd) != 0 && (err = -errno)))) {
                close(fd);
                unlink(path);
                return err;
        }
        int rc = seg_add(s, num, fd, out);
        if (rc)
                close(fd);
        return rc;
}

/* Opens every segment the index knows, cuts torn tails (bytes past the committed total that a
 * crash left behind), removes files the index does not know, and finds the open segment. */
int store_seg_load(struct chp_store *s)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (rc)
                return store_mdb_rc(rc);
        rc = mdb_cursor_open(txn, s->db_segments, &cur);
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
                uint32_t state = r.state;
                if (num >= s->seg_next)
                        s->seg_next = num + 1;
                char path[4096];
                store_seg_path(s, num, path, sizeof(path));
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
                int err = seg_add(s, num, fd, &g);
                if (err) {
                        close(fd);
                        mdb_cursor_close(cur);
                        mdb_txn_abort(txn);
                        return err;
                }
                if (state == CHP_REC_SEG_OPEN) {
                        s->open_seg = g;
                        s->open_end = total;
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
        snprintf(segdir, sizeof(segdir), "%s/segments", s->dir);
        DIR *d = opendir(segdir);
        if (!d)
                return -errno;
        struct dirent *e;
        while ((e = readdir(d))) {
                unsigned num;
                char tail;
                if (sscanf(e->d_name, "%8u.se%c", &num, &tail) != 2 || tail != 'g')
                        continue;
                if (num >= s->seg_next && num < UINT32_MAX)
                        s->seg_next = num + 1; /* even if its unlink below fails */
                struct chp_seg *g = store_seg_get(s, num);
                if (g) {
                        store_seg_put(g);
                        continue;
                }
                chp_log_info("store", "removing segment file %s that the index does not know",
                             e->d_name);
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        return 0;
}

static void mark_dirty(struct chp_store *s, struct chp_seg *g)
{
        for (int i = 0; i < s->ndirty; i++)
                if (s->dirty[i] == g)
                        return;
        if (s->ndirty < MAX_DIRTY) {
                atomic_fetch_add(&g->refs, 1);
                s->dirty[s->ndirty++] = g;
        } else if (s->opts.sync == CHP_SYNC_FULL &&
                   (fault_at(s, CHP_FAULT_SEG_SYNC) || fdatasync(g->fd) != 0)) {
                s->sync_failed = true; /* more segments than slots: sync this one now */
        }
}

/* Cuts what lies past `end` in g's file: bytes of appends that failed or were rolled back. They
 * are never referenced (the index describes a prefix), so this only gives the space back. */
void store_seg_cut(struct chp_seg *g, uint64_t end)
{
        struct stat st;
        if (fstat(g->fd, &st) == 0 && (uint64_t)st.st_size > end &&
            ftruncate(g->fd, (off_t)end) != 0)
                chp_log_warn("store", "segment %u: cannot cut %llu unreferenced bytes: %s", g->num,
                             (unsigned long long)((uint64_t)st.st_size - end), strerror(errno));
}

/* Seals the open segment at its current end: it takes no more appends, and GC may drop or compact
 * it. Writer thread, inside txn; undo restores open_seg if txn aborts. */
int store_seg_seal_open(struct chp_store *s, MDB_txn *txn)
{
        struct chp_rec_seg r;
        int rc = store_seg_rec_get(s, txn, s->open_seg->num, &r);
        if (rc)
                return rc;
        r.total = s->open_end;
        r.state = CHP_REC_SEG_SEALED;
        if ((rc = store_seg_rec_put(s, txn, s->open_seg->num, &r)))
                return rc;
        store_seg_cut(s->open_seg, s->open_end);
        s->open_seg = NULL;
        s->open_end = 0;
        return 0;
}

/* Appends len bytes to the open segment, rolling over to a new one when it is full (or must not
 * take more: seal_next). Writer thread, inside txn. On success *seg and *offset say where the
 * bytes are; the segment's total is recorded in txn. On failure nothing the index knows refers to
 * the written bytes, and a failed write leaves the segment to be sealed by the next append. */
int store_seg_append(struct chp_store *s, MDB_txn *txn, const void *data, uint32_t len,
                     uint32_t *seg, uint64_t *offset)
{
        int rc;
        struct chp_rec_seg r;
        if ((rc = store_space_take(s, len)))
                return rc;
        if (!s->open_seg || s->seal_next || (s->open_end > 0 && s->open_end + len > s->seg_max)) {
                if (s->open_seg && (rc = store_seg_seal_open(s, txn)))
                        return rc;
                if (s->ncreated == (int)(sizeof(s->created) / sizeof(s->created[0])))
                        return -EAGAIN; /* this request fails; batch_bytes vs segment_size
                                           makes it unreachable with sane settings */
                uint32_t next = s->seg_next++;
                struct chp_seg *g;
                if ((rc = seg_create(s, next, &g))) {
                        if (is_space_error(rc))
                                s->out_of_space = true;
                        return rc;
                }
                s->created[s->ncreated++] = next;
                r = (struct chp_rec_seg){.total = 0, .live = 0, .state = CHP_REC_SEG_OPEN};
                if ((rc = store_seg_rec_put(s, txn, next, &r)))
                        return rc;
                s->open_seg = g;
                s->open_end = 0;
                s->seal_next = false;
        }
        const uint8_t *p = data;
        uint64_t at = s->open_end;
        size_t done = 0;
        int err = fault_at(s, CHP_FAULT_SEG_WRITE);
        if (err && pwrite(s->open_seg->fd, p, len / 2, (off_t)at) < 0)
                err = -errno; /* the injected failure tears the append, as a full disk would */
        while (!err && done < len) {
                ssize_t n = pwrite(s->open_seg->fd, p + done, len - done, (off_t)(at + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        err = -errno;
                else
                        done += (size_t)n;
        }
        if (err) {
                /* The bytes written are cut by undo; the segment itself is suspect (a failed
                 * write may have left pages the kernel will never write back) or the disk is
                 * full: either way the next append starts a new segment. */
                s->seal_next = true;
                if (is_space_error(err))
                        s->out_of_space = true;
                chp_log_warn("store", "segment %u: append of %u bytes failed: %s", s->open_seg->num,
                             len, chp_strerror(err));
                return err;
        }
        if ((rc = store_seg_rec_get(s, txn, s->open_seg->num, &r)))
                return rc;
        r.total = at + len;
        r.live += len;
        if ((rc = store_seg_rec_put(s, txn, s->open_seg->num, &r)))
                return rc;
        s->open_end = at + len;
        mark_dirty(s, s->open_seg);
        *seg = s->open_seg->num;
        *offset = at;
        return 0;
}
