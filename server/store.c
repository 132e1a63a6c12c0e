/* store.c — LMDB index + append-only segments, with one group-committing writer thread.
 *
 * On-disk format and the commit protocol are described in docs/storage.md; the record layouts
 * below are the authority. All integers in values are little-endian; keys that must sort by
 * number are big-endian.
 *
 *   chunks    addr(32)                    -> kind u8, 0[3], len u32, xxh3 u64, seg u32, 0 u32,
 *                                            offset u64  (32 bytes) [+ inline bytes]
 *   refs      addr(32)                    -> count u64 (absent = 0)
 *   files     file id(32)                 -> ver u8, tenant_len u8, 0 u16, manifest_len u32,
 *                                            created u64, expires u64, size u64, tenant, manifest
 *   uploads   upload id(16)               -> ver u8, tenant_len u8, flags u8, 0 u8,
 *                                            chunk_size u32, declared u64, created u64,
 *                                            expires u64, meta_len u32, manifest_len u32,
 *                                            file id(32), file_expires u64, tenant, meta,
 *                                            manifest
 *   pending   file id(32)                 -> upload id(16): the upload writing that file
 *   tails     upload id(16) + seq be32    -> bytes past the upload's last whole chunk
 *   upchunks  upload id(16) + index be32  -> addr(32)
 *   expiry    expires be64 + kind u8 + id -> (empty)
 *   segments  seg be32                    -> total u64, live u64, state u32, 0 u32
 *   segidx    seg be32 + offset be64      -> addr(32)
 *   meta      name                        -> value
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "bytes.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "xxh.h"

#define SCHEMA_VERSION 1

#define CHUNK_REC   32
#define KIND_SEG    1
#define KIND_INLINE 2

#define FILE_REC   32
#define UPLOAD_REC 80
#define UPLOAD_HAS_MANIFEST 1
#define UPLOAD_COMPLETE     2
#define SEG_REC    24
#define SEG_OPEN   1
#define SEG_SEALED 2

#define EXPIRY_FILE    'f'
#define EXPIRY_UPLOAD  'u'
#define EXPIRY_KEY_MAX (8 + 1 + CHP_HASH_BYTES)

#define SEG_BUCKETS 256
#define MAX_DIRTY   8

/* An open segment file, shared by the writer and readers. The table holds one reference; each
 * chp_chunk_loc holds one more; the fd closes when the last goes. */
struct chp_seg {
        uint32_t num;
        int fd;
        atomic_uint refs;
        struct chp_seg *next; /* bucket chain, under seg_lock */
};

struct chp_store {
        struct chp_store_opts opts;
        char *dir;
        int lock_fd;
        int segdir_fd;
        MDB_env *env;
        MDB_dbi db_chunks, db_refs, db_files, db_uploads, db_upchunks, db_expiry, db_segments,
            db_segidx, db_meta, db_pending, db_tails;

        pthread_mutex_t seg_lock;
        struct chp_seg *segs[SEG_BUCKETS];

        pthread_mutex_t q_lock;
        pthread_cond_t q_cond;
        struct chp_store_req *q_head, *q_tail;
        bool stopping;
        pthread_t writer;
        bool writer_started;

        /* writer thread only */
        struct chp_seg *open_seg;         /* NULL until the first append */
        uint64_t open_end;                /* bytes written to open_seg, committed or not */
        struct chp_seg *dirty[MAX_DIRTY]; /* appended to in this batch; one reference each */
        int ndirty;
        uint32_t created[64]; /* segments created in this batch, unknown to the index until it
                                 commits */
        int ncreated;
        uint32_t dead[64]; /* segments to unlink once the batch commits */
        int ndead;
        bool sync_failed;
        uint8_t *copy_buf; /* compaction buffer, CHP_CHUNK_MAX bytes */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int map_mdb(int rc)
{
        switch (rc) {
        case MDB_SUCCESS:
                return 0;
        case MDB_NOTFOUND:
                return -ENOENT;
        case MDB_MAP_FULL:
                return CHP_EMAPFULL;
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
                return CHP_ECORRUPT;
        case MDB_VERSION_MISMATCH:
                return CHP_EVERSION;
        }
        if (rc > 0)
                return -rc; /* LMDB passes errno values through */
        chp_log_error("store", "lmdb: %s", mdb_strerror(rc));
        return CHP_ESTORE;
}

static MDB_val val(const void *p, size_t n)
{
        return (MDB_val){.mv_size = n, .mv_data = (void *)p};
}

static void seg_path(const struct chp_store *s, uint32_t num, char *out, size_t cap)
{
        snprintf(out, cap, "%s/segments/%08u.seg", s->dir, num);
}

struct chunk_rec {
        uint8_t kind;
        uint32_t len;
        uint64_t xxh3;
        uint32_t seg;
        uint64_t offset;
        const uint8_t *inline_data; /* points into the LMDB value */
};

static int parse_chunk(const MDB_val *v, struct chunk_rec *c)
{
        const uint8_t *p = v->mv_data;
        if (v->mv_size < CHUNK_REC)
                return CHP_ECORRUPT;
        c->kind = p[0];
        c->len = chp_get_le32(p + 4);
        c->xxh3 = chp_get_le64(p + 8);
        c->seg = chp_get_le32(p + 16);
        c->offset = chp_get_le64(p + 24);
        c->inline_data = NULL;
        if (c->kind == KIND_INLINE) {
                if (v->mv_size != CHUNK_REC + (size_t)c->len)
                        return CHP_ECORRUPT;
                c->inline_data = p + CHUNK_REC;
        } else if (c->kind != KIND_SEG || v->mv_size != CHUNK_REC ||
                   c->offset > (uint64_t)INT64_MAX - c->len) {
                /* an extent past what a file offset can hold is damage, not a bad argument */
                return CHP_ECORRUPT;
        }
        return 0;
}

static void encode_chunk(uint8_t *p, uint8_t kind, uint32_t len, uint64_t xxh3, uint32_t seg,
                         uint64_t offset)
{
        memset(p, 0, CHUNK_REC);
        p[0] = kind;
        chp_put_le32(p + 4, len);
        chp_put_le64(p + 8, xxh3);
        chp_put_le32(p + 16, seg);
        chp_put_le64(p + 24, offset);
}

struct seg_rec {
        uint64_t total, live;
        uint32_t state;
};

static int get_seg_rec(struct chp_store *s, MDB_txn *txn, uint32_t num, struct seg_rec *r)
{
        uint8_t k[4];
        chp_put_be32(k, num);
        MDB_val key = val(k, 4), v;
        int rc = mdb_get(txn, s->db_segments, &key, &v);
        if (rc)
                return map_mdb(rc);
        if (v.mv_size != SEG_REC)
                return CHP_ECORRUPT;
        const uint8_t *p = v.mv_data;
        r->total = chp_get_le64(p);
        r->live = chp_get_le64(p + 8);
        r->state = chp_get_le32(p + 16);
        return 0;
}

static int put_seg_rec(struct chp_store *s, MDB_txn *txn, uint32_t num, const struct seg_rec *r)
{
        uint8_t k[4], p[SEG_REC] = {0};
        chp_put_be32(k, num);
        chp_put_le64(p, r->total);
        chp_put_le64(p + 8, r->live);
        chp_put_le32(p + 16, r->state);
        MDB_val key = val(k, 4), v = val(p, SEG_REC);
        return map_mdb(mdb_put(txn, s->db_segments, &key, &v, 0));
}

static void segidx_key(uint8_t k[12], uint32_t seg, uint64_t offset)
{
        chp_put_be32(k, seg);
        chp_put_be64(k + 4, offset);
}

static size_t expiry_key(uint8_t *k, uint64_t expires, char kind, const uint8_t *id, size_t idlen)
{
        chp_put_be64(k, expires);
        k[8] = (uint8_t)kind;
        memcpy(k + 9, id, idlen);
        return 9 + idlen;
}

/* ---- segment table ------------------------------------------------------------------------ */

static struct chp_seg *seg_get(struct chp_store *s, uint32_t num)
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

static void seg_put(struct chp_seg *g)
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
static void seg_retire(struct chp_store *s, uint32_t num)
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
        seg_put(found);
}

static int seg_create(struct chp_store *s, uint32_t num, struct chp_seg **out)
{
        char path[4096];
        seg_path(s, num, path, sizeof(path));
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        /* the new name must survive a crash before anything in it is acknowledged */
        if (s->opts.sync == CHP_SYNC_FULL && fsync(s->segdir_fd) != 0) {
                int err = -errno;
                close(fd);
                unlink(path);
                return err;
        }
        int rc = seg_add(s, num, fd, out);
        if (rc)
                close(fd);
        return rc;
}

/* ---- open / close ------------------------------------------------------------------------- */

void chp_store_opts_default(struct chp_store_opts *o)
{
        memset(o, 0, sizeof(*o));
        o->dir = "./data";
        o->sync = CHP_SYNC_FULL;
        o->inline_max = 16 * 1024;
        o->map_size = (uint64_t)64 << 30;
        o->segment_size = (uint64_t)256 << 20;
        o->batch_bytes = (uint64_t)64 << 20;
        o->linger_us = 0;
        o->compact_ratio = 0.5;
        o->gc_batch = 10000;
}

static int mkdir_p(const char *path)
{
        if (mkdir(path, 0700) == 0 || errno == EEXIST)
                return 0;
        return -errno;
}

static int open_dbs(struct chp_store *s)
{
        MDB_txn *txn;
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc)
                return map_mdb(rc);
        struct {
                const char *name;
                MDB_dbi *dbi;
        } dbs[] = {
            {"chunks", &s->db_chunks},     {"refs", &s->db_refs},         {"files", &s->db_files},
            {"uploads", &s->db_uploads},   {"upchunks", &s->db_upchunks}, {"expiry", &s->db_expiry},
            {"segments", &s->db_segments}, {"segidx", &s->db_segidx},     {"meta", &s->db_meta},
            {"pending", &s->db_pending},   {"tails", &s->db_tails},
        };
        for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
                rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
                if (rc)
                        goto out;
        }
        MDB_val k = val("schema", 6), v;
        rc = mdb_get(txn, s->db_meta, &k, &v);
        if (rc == MDB_NOTFOUND) {
                uint8_t ver[4];
                chp_put_le32(ver, SCHEMA_VERSION);
                v = val(ver, 4);
                rc = mdb_put(txn, s->db_meta, &k, &v, 0);
        } else if (rc == 0 && (v.mv_size != 4 || chp_get_le32(v.mv_data) != SCHEMA_VERSION)) {
                mdb_txn_abort(txn);
                return CHP_EVERSION;
        }
        if (rc)
                goto out;
        return map_mdb(mdb_txn_commit(txn));
out:
        mdb_txn_abort(txn);
        return map_mdb(rc);
}

/* Opens every segment the index knows, cuts torn tails (bytes past the committed total that a
 * crash left behind), removes files the index does not know, and finds the open segment. */
static int load_segments(struct chp_store *s)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (rc)
                return map_mdb(rc);
        rc = mdb_cursor_open(txn, s->db_segments, &cur);
        if (rc)
                goto out;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != 4 || v.mv_size != SEG_REC) {
                        rc = MDB_CORRUPTED;
                        goto out;
                }
                uint32_t num = chp_get_be32(k.mv_data);
                uint64_t total = chp_get_le64(v.mv_data);
                uint32_t state = chp_get_le32((const uint8_t *)v.mv_data + 16);
                char path[4096];
                seg_path(s, num, path, sizeof(path));
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
                if (state == SEG_OPEN) {
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
                return map_mdb(rc);

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
                struct chp_seg *g = seg_get(s, num);
                if (g) {
                        seg_put(g);
                        continue;
                }
                chp_log_info("store", "removing segment file %s that the index does not know",
                             e->d_name);
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
        return 0;
}

static void *writer_main(void *arg);

int chp_store_open(const struct chp_store_opts *o, struct chp_store **out)
{
        *out = NULL;
        if (o->segment_size < CHP_CHUNK_MAX || o->map_size < (1u << 20) || o->compact_ratio < 0 ||
            o->compact_ratio > 1)
                return -EINVAL;
        struct chp_store *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->opts = *o;
        s->lock_fd = -1;
        s->segdir_fd = -1;
        pthread_mutex_init(&s->seg_lock, NULL);
        pthread_mutex_init(&s->q_lock, NULL);
        pthread_cond_init(&s->q_cond, NULL);
        int rc;
        char path[4096];
        s->dir = strdup(o->dir);
        s->copy_buf = malloc(CHP_CHUNK_MAX);
        if (!s->dir || !s->copy_buf) {
                rc = -ENOMEM;
                goto out;
        }
        s->opts.dir = s->dir;
        if ((rc = mkdir_p(s->dir)))
                goto out;
        snprintf(path, sizeof(path), "%s/index", s->dir);
        if ((rc = mkdir_p(path)))
                goto out;
        snprintf(path, sizeof(path), "%s/segments", s->dir);
        if ((rc = mkdir_p(path)))
                goto out;
        s->segdir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->segdir_fd < 0) {
                rc = -errno;
                goto out;
        }
        snprintf(path, sizeof(path), "%s/LOCK", s->dir);
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->lock_fd < 0) {
                rc = -errno;
                goto out;
        }
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
                rc = errno == EWOULDBLOCK ? CHP_ELOCKED : -errno;
                goto out;
        }

        if ((rc = map_mdb(mdb_env_create(&s->env))))
                goto out;
        mdb_env_set_maxdbs(s->env, 16);
        mdb_env_set_maxreaders(s->env, 1024);
        if ((rc = map_mdb(mdb_env_set_mapsize(s->env, (size_t)o->map_size))))
                goto out;
        unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
        if (o->sync == CHP_SYNC_NONE)
                flags |= MDB_NOSYNC | MDB_NOMETASYNC;
        snprintf(path, sizeof(path), "%s/index", s->dir);
        if ((rc = map_mdb(mdb_env_open(s->env, path, flags, 0600))))
                goto out;
        int dead = 0;
        mdb_reader_check(s->env, &dead);
        if (dead)
                chp_log_info("store", "cleared %d stale reader slots", dead);
        if ((rc = open_dbs(s)))
                goto out;
        if ((rc = load_segments(s)))
                goto out;
        if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
                rc = -EAGAIN;
                goto out;
        }
        s->writer_started = true;
        *out = s;
        return 0;
out:
        chp_store_close(s);
        return rc;
}

void chp_store_close(struct chp_store *s)
{
        if (!s)
                return;
        if (s->writer_started) {
                pthread_mutex_lock(&s->q_lock);
                s->stopping = true;
                pthread_cond_broadcast(&s->q_cond);
                pthread_mutex_unlock(&s->q_lock);
                pthread_join(s->writer, NULL);
        }
        for (int b = 0; b < SEG_BUCKETS; b++) {
                struct chp_seg *g = s->segs[b];
                while (g) {
                        struct chp_seg *next = g->next;
                        seg_put(g);
                        g = next;
                }
        }
        if (s->env)
                mdb_env_close(s->env);
        if (s->segdir_fd >= 0)
                close(s->segdir_fd);
        if (s->lock_fd >= 0)
                close(s->lock_fd); /* releases the flock */
        pthread_cond_destroy(&s->q_cond);
        pthread_mutex_destroy(&s->q_lock);
        pthread_mutex_destroy(&s->seg_lock);
        free(s->copy_buf);
        free(s->dir);
        free(s);
}

/* ---- writer: chunk bytes and references --------------------------------------------------- */

static void mark_dirty(struct chp_store *s, struct chp_seg *g)
{
        for (int i = 0; i < s->ndirty; i++)
                if (s->dirty[i] == g)
                        return;
        if (s->ndirty < MAX_DIRTY) {
                atomic_fetch_add(&g->refs, 1);
                s->dirty[s->ndirty++] = g;
        } else if (s->opts.sync == CHP_SYNC_FULL && fdatasync(g->fd) != 0) {
                s->sync_failed = true; /* more segments than slots: sync this one now */
        }
}

/* Appends len bytes to the open segment, rolling over to a new one when it is full. Writer
 * thread, inside txn. On success *seg and *offset say where the bytes are; the segment's total
 * is recorded in txn. On failure nothing the index knows refers to the written bytes. */
static int seg_append(struct chp_store *s, MDB_txn *txn, const void *data, uint32_t len,
                      uint32_t *seg, uint64_t *offset)
{
        int rc;
        struct seg_rec r;
        if (!s->open_seg || (s->open_end > 0 && s->open_end + len > s->opts.segment_size)) {
                uint32_t next = 1;
                if (s->open_seg) {
                        if ((rc = get_seg_rec(s, txn, s->open_seg->num, &r)))
                                return rc;
                        r.total = s->open_end;
                        r.state = SEG_SEALED;
                        if ((rc = put_seg_rec(s, txn, s->open_seg->num, &r)))
                                return rc;
                        next = s->open_seg->num + 1;
                } else {
                        /* after the highest segment the index knows */
                        MDB_cursor *cur;
                        MDB_val k, v;
                        if ((rc = map_mdb(mdb_cursor_open(txn, s->db_segments, &cur))))
                                return rc;
                        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 4)
                                next = chp_get_be32(k.mv_data) + 1;
                        mdb_cursor_close(cur);
                }
                if (s->ncreated == (int)(sizeof(s->created) / sizeof(s->created[0])))
                        return -EAGAIN; /* this request fails; batch_bytes vs segment_size
                                           makes it unreachable with sane settings */
                struct chp_seg *g;
                if ((rc = seg_create(s, next, &g)))
                        return rc;
                s->created[s->ncreated++] = next;
                r = (struct seg_rec){.total = 0, .live = 0, .state = SEG_OPEN};
                if ((rc = put_seg_rec(s, txn, next, &r)))
                        return rc;
                s->open_seg = g;
                s->open_end = 0;
        }
        const uint8_t *p = data;
        uint64_t at = s->open_end;
        size_t done = 0;
        while (done < len) {
                ssize_t n = pwrite(s->open_seg->fd, p + done, len - done, (off_t)(at + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t)n;
        }
        if ((rc = get_seg_rec(s, txn, s->open_seg->num, &r)))
                return rc;
        r.total = at + len;
        r.live += len;
        if ((rc = put_seg_rec(s, txn, s->open_seg->num, &r)))
                return rc;
        s->open_end = at + len;
        mark_dirty(s, s->open_seg);
        *seg = s->open_seg->num;
        *offset = at;
        return 0;
}

/* Removes a chunk whose last reference went away. */
static int chunk_free(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                      struct chp_gc_stats *st)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        int rc = mdb_get(txn, s->db_chunks, &k, &v);
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return map_mdb(rc);
        struct chunk_rec c;
        if ((rc = parse_chunk(&v, &c)))
                return rc;
        if (c.kind == KIND_SEG) {
                uint8_t ik[12];
                segidx_key(ik, c.seg, c.offset);
                MDB_val ikey = val(ik, 12);
                rc = mdb_del(txn, s->db_segidx, &ikey, NULL);
                if (rc && rc != MDB_NOTFOUND)
                        return map_mdb(rc);
                struct seg_rec r;
                if ((rc = get_seg_rec(s, txn, c.seg, &r)) == 0) {
                        r.live = r.live >= c.len ? r.live - c.len : 0;
                        if ((rc = put_seg_rec(s, txn, c.seg, &r)))
                                return rc;
                } else if (rc != -ENOENT) {
                        return rc;
                }
        }
        if ((rc = map_mdb(mdb_del(txn, s->db_chunks, &k, NULL))))
                return rc;
        if (st) {
                st->chunks_freed++;
                st->bytes_freed += c.len;
        }
        return 0;
}

/* Adds delta to a chunk's reference count; at zero the chunk is freed. */
static int ref_add(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES], int delta,
                   struct chp_gc_stats *st)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        uint64_t count = 0;
        int rc = mdb_get(txn, s->db_refs, &k, &v);
        if (rc == 0) {
                if (v.mv_size != 8)
                        return CHP_ECORRUPT;
                count = chp_get_le64(v.mv_data);
        } else if (rc != MDB_NOTFOUND) {
                return map_mdb(rc);
        }
        if (delta < 0 && count == 0) {
                chp_log_warn("store", "reference count drift: releasing an unreferenced chunk");
                return chunk_free(s, txn, addr, st);
        }
        count = delta < 0 ? count - 1 : count + 1;
        if (count == 0) {
                if ((rc = map_mdb(mdb_del(txn, s->db_refs, &k, NULL))))
                        return rc;
                return chunk_free(s, txn, addr, st);
        }
        uint8_t c[8];
        chp_put_le64(c, count);
        v = val(c, 8);
        return map_mdb(mdb_put(txn, s->db_refs, &k, &v, 0));
}

static int drop_prefixed(struct chp_store *s, MDB_txn *txn, MDB_dbi db,
                         const uint8_t id[CHP_UPLOAD_ID_BYTES], struct chp_gc_stats *st);

static int upload_exists(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        return map_mdb(mdb_get(txn, s->db_uploads, &k, &v));
}

static int apply_put(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        int rc;
        if (req->u.put.has_upload && (rc = upload_exists(s, txn, req->u.put.upload_id)))
                return rc;
        MDB_val k = val(req->u.put.addr, CHP_HASH_BYTES), v;
        rc = mdb_get(txn, s->db_chunks, &k, &v);
        if (rc == 0) {
                req->u.put.deduplicated = true;
        } else if (rc != MDB_NOTFOUND) {
                return map_mdb(rc);
        } else if (!req->u.put.data) {
                return CHP_EMISSING;
        } else {
                uint32_t len = req->u.put.len;
                uint64_t sum = chp_xxh3(req->u.put.data, len);
                if (len <= s->opts.inline_max) {
                        v.mv_size = CHUNK_REC + (size_t)len;
                        if ((rc = map_mdb(mdb_put(txn, s->db_chunks, &k, &v, MDB_RESERVE))))
                                return rc;
                        encode_chunk(v.mv_data, KIND_INLINE, len, sum, 0, 0);
                        memcpy((uint8_t *)v.mv_data + CHUNK_REC, req->u.put.data, len);
                } else {
                        uint32_t seg;
                        uint64_t off;
                        if ((rc = seg_append(s, txn, req->u.put.data, len, &seg, &off)))
                                return rc;
                        uint8_t rec[CHUNK_REC], ik[12];
                        encode_chunk(rec, KIND_SEG, len, sum, seg, off);
                        v = val(rec, CHUNK_REC);
                        if ((rc = map_mdb(mdb_put(txn, s->db_chunks, &k, &v, 0))))
                                return rc;
                        segidx_key(ik, seg, off);
                        MDB_val ikey = val(ik, 12), ival = val(req->u.put.addr, CHP_HASH_BYTES);
                        if ((rc = map_mdb(mdb_put(txn, s->db_segidx, &ikey, &ival, 0))))
                                return rc;
                }
        }
        if (!req->u.put.has_upload)
                return 0;

        uint8_t uk[CHP_UPLOAD_ID_BYTES + 4];
        memcpy(uk, req->u.put.upload_id, CHP_UPLOAD_ID_BYTES);
        chp_put_be32(uk + CHP_UPLOAD_ID_BYTES, req->u.put.index);
        MDB_val ukey = val(uk, sizeof(uk)), uval;
        uint8_t old[CHP_HASH_BYTES];
        bool replaced = false;
        rc = mdb_get(txn, s->db_upchunks, &ukey, &uval);
        if (rc == 0) {
                if (uval.mv_size != CHP_HASH_BYTES)
                        return CHP_ECORRUPT;
                if (memcmp(uval.mv_data, req->u.put.addr, CHP_HASH_BYTES) == 0)
                        return req->u.put.clear_tail ? drop_prefixed(s, txn, s->db_tails,
                                                                     req->u.put.upload_id, NULL)
                                                     : 0; /* a resend the upload has already */
                /* the client replaced this index with other bytes: release the old ones */
                memcpy(old, uval.mv_data, CHP_HASH_BYTES);
                replaced = true;
        } else if (rc != MDB_NOTFOUND) {
                return map_mdb(rc);
        }
        if ((rc = ref_add(s, txn, req->u.put.addr, +1, NULL)))
                return rc;
        if (replaced && (rc = ref_add(s, txn, old, -1, NULL)))
                return rc;
        if (req->u.put.clear_tail &&
            (rc = drop_prefixed(s, txn, s->db_tails, req->u.put.upload_id, NULL)))
                return rc;
        uval = val(req->u.put.addr, CHP_HASH_BYTES);
        return map_mdb(mdb_put(txn, s->db_upchunks, &ukey, &uval, 0));
}

/* ---- writer: files and uploads ------------------------------------------------------------ */

static int expiry_set(struct chp_store *s, MDB_txn *txn, uint64_t expires, char kind,
                      const uint8_t *id, size_t idlen, bool add)
{
        if (!expires)
                return 0;
        uint8_t k[EXPIRY_KEY_MAX];
        MDB_val key = val(k, expiry_key(k, expires, kind, id, idlen)), v = val("", 0);
        int rc =
            add ? mdb_put(txn, s->db_expiry, &key, &v, 0) : mdb_del(txn, s->db_expiry, &key, NULL);
        return rc == MDB_NOTFOUND ? 0 : map_mdb(rc);
}

static int apply_commit(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        struct chp_manifest m;
        const uint8_t *enc = req->u.commit.manifest;
        size_t len = req->u.commit.manifest_len;
        if (!enc || chp_manifest_decode(enc, len, &m) < 0)
                return -EBADMSG;
        const char *tenant = req->u.commit.tenant ? req->u.commit.tenant : "";
        size_t tlen = strnlen(tenant, CHP_TENANT_MAX + 1);
        if (tlen > CHP_TENANT_MAX)
                return -EINVAL;
        int rc = chp_manifest_id(enc, len, req->u.commit.file_id);
        if (rc)
                return rc;
        uint64_t expires = req->u.commit.expires;
        MDB_val k = val(req->u.commit.file_id, CHP_HASH_BYTES), v;
        rc = mdb_get(txn, s->db_files, &k, &v);
        if (rc == 0) {
                /* Committing a stored file again extends its life; references stay as they are. */
                req->u.commit.existed = true;
                if (v.mv_size < FILE_REC)
                        return CHP_ECORRUPT;
                uint64_t old = chp_get_le64((const uint8_t *)v.mv_data + 16);
                if (old != 0 && (expires == 0 || expires > old)) {
                        uint8_t *copy = malloc(v.mv_size);
                        if (!copy)
                                return -ENOMEM;
                        memcpy(copy, v.mv_data, v.mv_size);
                        chp_put_le64(copy + 16, expires);
                        MDB_val nv = val(copy, v.mv_size);
                        rc = map_mdb(mdb_put(txn, s->db_files, &k, &nv, 0));
                        free(copy);
                        if (!rc)
                                rc = expiry_set(s, txn, old, EXPIRY_FILE, k.mv_data, CHP_HASH_BYTES,
                                                false);
                        if (!rc)
                                rc = expiry_set(s, txn, expires, EXPIRY_FILE, k.mv_data,
                                                CHP_HASH_BYTES, true);
                        if (rc)
                                return rc;
                }
        } else if (rc != MDB_NOTFOUND) {
                return map_mdb(rc);
        } else {
                for (uint32_t i = 0; i < m.chunk_count; i++) {
                        MDB_val ck = val(m.addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES), cv;
                        rc = mdb_get(txn, s->db_chunks, &ck, &cv);
                        if (rc == MDB_NOTFOUND)
                                return CHP_EMISSING;
                        if (rc)
                                return map_mdb(rc);
                }
                for (uint32_t i = 0; i < m.chunk_count; i++)
                        if ((rc = ref_add(s, txn, m.addrs + (size_t)i * CHP_HASH_BYTES, +1, NULL)))
                                return rc;
                v.mv_size = FILE_REC + tlen + len;
                if ((rc = map_mdb(mdb_put(txn, s->db_files, &k, &v, MDB_RESERVE))))
                        return rc;
                uint8_t *p = v.mv_data;
                memset(p, 0, FILE_REC);
                p[0] = 1;
                p[1] = (uint8_t)tlen;
                chp_put_le32(p + 4, (uint32_t)len);
                chp_put_le64(p + 8, (uint64_t)time(NULL));
                chp_put_le64(p + 16, expires);
                chp_put_le64(p + 24, m.total_size);
                memcpy(p + FILE_REC, tenant, tlen);
                memcpy(p + FILE_REC + tlen, enc, len);
                if ((rc = expiry_set(s, txn, expires, EXPIRY_FILE, req->u.commit.file_id,
                                     CHP_HASH_BYTES, true)))
                        return rc;
        }
        return 0;
}

struct file_rec {
        uint8_t tenant_len;
        uint32_t manifest_len;
        uint64_t created, expires, size;
        const uint8_t *tenant, *manifest;
};

static int parse_file(const MDB_val *v, struct file_rec *f)
{
        const uint8_t *p = v->mv_data;
        if (v->mv_size < FILE_REC || p[0] != 1)
                return CHP_ECORRUPT;
        f->tenant_len = p[1];
        f->manifest_len = chp_get_le32(p + 4);
        f->created = chp_get_le64(p + 8);
        f->expires = chp_get_le64(p + 16);
        f->size = chp_get_le64(p + 24);
        if (f->tenant_len > CHP_TENANT_MAX ||
            v->mv_size != FILE_REC + (size_t)f->tenant_len + f->manifest_len)
                return CHP_ECORRUPT;
        f->tenant = p + FILE_REC;
        f->manifest = p + FILE_REC + f->tenant_len;
        return 0;
}

static int file_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES],
                       struct chp_gc_stats *st)
{
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        int rc = mdb_get(txn, s->db_files, &k, &v);
        if (rc)
                return map_mdb(rc);
        struct file_rec f;
        struct chp_manifest m;
        if ((rc = parse_file(&v, &f)))
                return rc;
        if (chp_manifest_decode(f.manifest, f.manifest_len, &m) < 0)
                return CHP_ECORRUPT;
        /* The value's memory is only valid until the next write: keep a copy of the addresses. */
        size_t n = (size_t)m.chunk_count * CHP_HASH_BYTES;
        uint8_t *addrs = malloc(n ? n : 1);
        if (!addrs)
                return -ENOMEM;
        memcpy(addrs, m.addrs, n);
        uint64_t expires = f.expires;
        rc = map_mdb(mdb_del(txn, s->db_files, &k, NULL));
        for (uint32_t i = 0; !rc && i < m.chunk_count; i++)
                rc = ref_add(s, txn, addrs + (size_t)i * CHP_HASH_BYTES, -1, st);
        free(addrs);
        if (!rc)
                rc = expiry_set(s, txn, expires, EXPIRY_FILE, id, CHP_HASH_BYTES, false);
        return rc;
}

struct upload_rec {
        uint8_t flags;
        uint32_t chunk_size, meta_len, manifest_len;
        uint64_t declared, created, expires, file_expires;
        size_t tenant_len;
        const uint8_t *file_id, *tenant, *meta, *manifest; /* into the LMDB value */
};

static int parse_upload_rec(const MDB_val *v, struct upload_rec *r)
{
        const uint8_t *p = v->mv_data;
        if (v->mv_size < UPLOAD_REC || p[0] != 1)
                return CHP_ECORRUPT;
        r->tenant_len = p[1];
        r->flags = p[2];
        r->chunk_size = chp_get_le32(p + 4);
        r->declared = chp_get_le64(p + 8);
        r->created = chp_get_le64(p + 16);
        r->expires = chp_get_le64(p + 24);
        r->meta_len = chp_get_le32(p + 32);
        r->manifest_len = chp_get_le32(p + 36);
        r->file_id = p + 40;
        r->file_expires = chp_get_le64(p + 72);
        if (r->tenant_len > CHP_TENANT_MAX || r->meta_len > CHP_UPLOAD_META_MAX ||
            v->mv_size != UPLOAD_REC + r->tenant_len + r->meta_len + (size_t)r->manifest_len ||
            (!(r->flags & UPLOAD_HAS_MANIFEST) && r->manifest_len))
                return CHP_ECORRUPT;
        r->tenant = p + UPLOAD_REC;
        r->meta = r->tenant + r->tenant_len;
        r->manifest = r->meta + r->meta_len;
        return 0;
}

/* Deletes every entry of db whose key starts with the 16-byte upload id, calling each(addr) for
 * upchunks so that references are released. */
static int drop_prefixed(struct chp_store *s, MDB_txn *txn, MDB_dbi db,
                         const uint8_t id[CHP_UPLOAD_ID_BYTES], struct chp_gc_stats *st)
{
        MDB_cursor *cur;
        int rc = map_mdb(mdb_cursor_open(txn, db, &cur));
        if (rc)
                return rc;
        for (;;) {
                MDB_val ck = val(id, CHP_UPLOAD_ID_BYTES), cv;
                rc = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE);
                if (rc == MDB_NOTFOUND || ck.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(ck.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0) {
                        rc = 0;
                        break;
                }
                if (rc)
                        break;
                uint8_t addr[CHP_HASH_BYTES];
                bool is_ref = db == s->db_upchunks;
                if (is_ref && cv.mv_size != CHP_HASH_BYTES) {
                        rc = MDB_CORRUPTED;
                        break;
                }
                if (is_ref)
                        memcpy(addr, cv.mv_data, CHP_HASH_BYTES);
                if ((rc = mdb_cursor_del(cur, 0)))
                        break;
                if (is_ref) {
                        int err = ref_add(s, txn, addr, -1, st);
                        if (err) {
                                mdb_cursor_close(cur);
                                return err;
                        }
                }
        }
        mdb_cursor_close(cur);
        return map_mdb(rc);
}

/* Releases what an upload holds: its chunk references, kept tail, and pending entry. */
static int upload_release(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                          const struct upload_rec *u, struct chp_gc_stats *st)
{
        int rc;
        if (u->flags & UPLOAD_HAS_MANIFEST) {
                MDB_val pk = val(u->file_id, CHP_HASH_BYTES), pv;
                if (mdb_get(txn, s->db_pending, &pk, &pv) == 0 &&
                    pv.mv_size == CHP_UPLOAD_ID_BYTES &&
                    memcmp(pv.mv_data, id, CHP_UPLOAD_ID_BYTES) == 0 &&
                    (rc = map_mdb(mdb_del(txn, s->db_pending, &pk, NULL))))
                        return rc;
        }
        if ((rc = drop_prefixed(s, txn, s->db_tails, id, st)))
                return rc;
        return drop_prefixed(s, txn, s->db_upchunks, id, st);
}

static int upload_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                         struct chp_gc_stats *st)
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        int rc = mdb_get(txn, s->db_uploads, &k, &v);
        if (rc)
                return map_mdb(rc);
        struct upload_rec u;
        if ((rc = parse_upload_rec(&v, &u)))
                return rc;
        uint8_t file_id[CHP_HASH_BYTES];
        memcpy(file_id, u.file_id, CHP_HASH_BYTES); /* the value moves once we write */
        u.file_id = file_id;
        if ((rc = map_mdb(mdb_del(txn, s->db_uploads, &k, NULL))))
                return rc;
        if ((rc = expiry_set(s, txn, u.expires, EXPIRY_UPLOAD, id, CHP_UPLOAD_ID_BYTES, false)))
                return rc;
        return upload_release(s, txn, id, &u, st);
}

/* Marks an upload complete (file id recorded) and releases what it held; the record stays
 * until it expires so that a client asking about the upload learns where its file went. */
static int upload_complete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                           const uint8_t file_id[CHP_HASH_BYTES])
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct upload_rec u;
        int rc = map_mdb(mdb_get(txn, s->db_uploads, &k, &v));
        if (rc || (rc = parse_upload_rec(&v, &u)))
                return rc;
        uint8_t *copy = malloc(v.mv_size);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, v.mv_data, v.mv_size);
        copy[2] |= UPLOAD_COMPLETE;
        memcpy(copy + 40, file_id, CHP_HASH_BYTES);
        MDB_val nv = val(copy, v.mv_size);
        uint8_t old_file[CHP_HASH_BYTES];
        memcpy(old_file, u.file_id, CHP_HASH_BYTES);
        u.file_id = old_file;
        rc = map_mdb(mdb_put(txn, s->db_uploads, &k, &nv, 0));
        free(copy);
        return rc ? rc : upload_release(s, txn, id, &u, NULL);
}

/* Records every chunk of the manifest that the store already holds as durable for the upload. */
static int attach_existing(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                           const struct chp_manifest *m)
{
        for (uint32_t i = 0; i < m->chunk_count; i++) {
                const uint8_t *addr = m->addrs + (size_t)i * CHP_HASH_BYTES;
                uint8_t uk[CHP_UPLOAD_ID_BYTES + 4];
                memcpy(uk, id, CHP_UPLOAD_ID_BYTES);
                chp_put_be32(uk + CHP_UPLOAD_ID_BYTES, i);
                MDB_val ukey = val(uk, sizeof(uk)), ak = val(addr, CHP_HASH_BYTES), d;
                int rc = mdb_get(txn, s->db_upchunks, &ukey, &d);
                if (rc == 0)
                        continue;
                if (rc != MDB_NOTFOUND)
                        return map_mdb(rc);
                rc = mdb_get(txn, s->db_chunks, &ak, &d);
                if (rc == MDB_NOTFOUND)
                        continue;
                if (rc)
                        return map_mdb(rc);
                if ((rc = ref_add(s, txn, addr, +1, NULL)))
                        return rc;
                d = val(addr, CHP_HASH_BYTES);
                if ((rc = map_mdb(mdb_put(txn, s->db_upchunks, &ukey, &d, 0))))
                        return rc;
        }
        return 0;
}

static int apply_upload_create(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        const struct chp_upload *u = req->u.upload_create.upload;
        const uint8_t *enc = req->u.upload_create.manifest;
        size_t enc_len = enc ? req->u.upload_create.manifest_len : 0;
        size_t tlen = strnlen(u->tenant, CHP_TENANT_MAX + 1);
        if (tlen > CHP_TENANT_MAX || u->meta_len > CHP_UPLOAD_META_MAX ||
            u->chunk_size < CHP_CHUNK_MIN || u->chunk_size > CHP_CHUNK_MAX ||
            (u->chunk_size & (u->chunk_size - 1)))
                return -EINVAL;
        struct chp_manifest m;
        uint8_t file_id[CHP_HASH_BYTES];
        int rc;
        memcpy(req->u.upload_create.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        if (enc) {
                if (chp_manifest_decode(enc, enc_len, &m) < 0 || m.chunk_size != u->chunk_size)
                        return -EBADMSG;
                if ((rc = chp_manifest_id(enc, enc_len, file_id)))
                        return rc;
                memcpy(req->u.upload_create.file_id, file_id, CHP_HASH_BYTES);
                MDB_val fk = val(file_id, CHP_HASH_BYTES), d;
                if ((rc = mdb_get(txn, s->db_files, &fk, &d)) == 0) {
                        req->u.upload_create.complete = true;
                        return 0;
                }
                if (rc != MDB_NOTFOUND)
                        return map_mdb(rc);
                if ((rc = mdb_get(txn, s->db_pending, &fk, &d)) == 0 &&
                    d.mv_size == CHP_UPLOAD_ID_BYTES) {
                        uint8_t existing[CHP_UPLOAD_ID_BYTES];
                        memcpy(existing, d.mv_data, CHP_UPLOAD_ID_BYTES);
                        MDB_val ek = val(existing, CHP_UPLOAD_ID_BYTES);
                        if (mdb_get(txn, s->db_uploads, &ek, &d) == 0) {
                                req->u.upload_create.resumed = true;
                                memcpy(req->u.upload_create.upload_id, existing,
                                       CHP_UPLOAD_ID_BYTES);
                                return attach_existing(s, txn, existing, &m);
                        }
                } else if (rc && rc != MDB_NOTFOUND) {
                        return map_mdb(rc);
                }
        }
        MDB_val k = val(u->id, CHP_UPLOAD_ID_BYTES), v;
        rc = mdb_get(txn, s->db_uploads, &k, &v);
        if (rc == 0) {
                struct upload_rec old;
                if (enc || (rc = parse_upload_rec(&v, &old)))
                        return enc ? -EEXIST : rc; /* native upload ids are never reused */
                if (old.flags & UPLOAD_HAS_MANIFEST)
                        return -EEXIST;
                if ((rc = expiry_set(s, txn, old.expires, EXPIRY_UPLOAD, u->id,
                                     CHP_UPLOAD_ID_BYTES, false)))
                        return rc;
        } else if (rc != MDB_NOTFOUND) {
                return map_mdb(rc);
        }
        v.mv_size = UPLOAD_REC + tlen + u->meta_len + enc_len;
        if ((rc = map_mdb(mdb_put(txn, s->db_uploads, &k, &v, MDB_RESERVE))))
                return rc;
        uint8_t *p = v.mv_data;
        memset(p, 0, UPLOAD_REC);
        p[0] = 1;
        p[1] = (uint8_t)tlen;
        p[2] = enc ? UPLOAD_HAS_MANIFEST : 0;
        chp_put_le32(p + 4, u->chunk_size);
        chp_put_le64(p + 8, enc ? m.total_size : u->declared_size);
        chp_put_le64(p + 16, u->created);
        chp_put_le64(p + 24, u->expires);
        chp_put_le32(p + 32, u->meta_len);
        chp_put_le32(p + 36, (uint32_t)enc_len);
        if (enc)
                memcpy(p + 40, file_id, CHP_HASH_BYTES);
        chp_put_le64(p + 72, u->file_expires);
        memcpy(p + UPLOAD_REC, u->tenant, tlen);
        memcpy(p + UPLOAD_REC + tlen, u->meta, u->meta_len);
        if (enc_len)
                memcpy(p + UPLOAD_REC + tlen + u->meta_len, enc, enc_len);
        if ((rc = expiry_set(s, txn, u->expires, EXPIRY_UPLOAD, u->id, CHP_UPLOAD_ID_BYTES, true)))
                return rc;
        if (!enc)
                return 0;
        MDB_val fk = val(file_id, CHP_HASH_BYTES), iv = val(u->id, CHP_UPLOAD_ID_BYTES);
        if ((rc = map_mdb(mdb_put(txn, s->db_pending, &fk, &iv, 0))))
                return rc;
        /* the manifest in the value may have moved: decode our own copy of the pointers again */
        if (chp_manifest_decode(enc, enc_len, &m) < 0)
                return -EBADMSG;
        return attach_existing(s, txn, u->id, &m);
}

/* ---- writer: GC and compaction ------------------------------------------------------------ */

static void queue_dead(struct chp_store *s, uint32_t num)
{
        if (s->ndead < (int)(sizeof(s->dead) / sizeof(s->dead[0])))
                s->dead[s->ndead++] = num;
}

/* Moves a sealed segment's live chunks to the open segment and drops it from the index. */
static int compact_segment(struct chp_store *s, MDB_txn *txn, uint32_t victim,
                           struct chp_gc_stats *st)
{
        struct chp_seg *g = seg_get(s, victim);
        if (!g)
                return -ENOENT;
        MDB_cursor *cur;
        int rc = map_mdb(mdb_cursor_open(txn, s->db_segidx, &cur));
        if (rc) {
                seg_put(g);
                return rc;
        }
        for (;;) {
                uint8_t ik[12];
                segidx_key(ik, victim, 0);
                MDB_val k = val(ik, 12), v;
                rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
                if (rc == MDB_NOTFOUND || k.mv_size != 12 || chp_get_be32(k.mv_data) != victim) {
                        rc = 0;
                        break;
                }
                if (rc || v.mv_size != CHP_HASH_BYTES) {
                        rc = rc ? map_mdb(rc) : CHP_ECORRUPT;
                        break;
                }
                uint8_t addr[CHP_HASH_BYTES];
                memcpy(addr, v.mv_data, CHP_HASH_BYTES);
                uint64_t old_off = chp_get_be64((const uint8_t *)k.mv_data + 4);
                MDB_val ck = val(addr, CHP_HASH_BYTES), cv;
                struct chunk_rec c;
                if (mdb_get(txn, s->db_chunks, &ck, &cv) != 0 || parse_chunk(&cv, &c) != 0 ||
                    c.kind != KIND_SEG || c.seg != victim || c.offset != old_off) {
                        chp_log_warn("store", "segment %u: stale index entry dropped", victim);
                        if ((rc = map_mdb(mdb_cursor_del(cur, 0))))
                                break;
                        continue;
                }
                ssize_t n = pread(g->fd, s->copy_buf, c.len, (off_t)c.offset);
                if (n != (ssize_t)c.len || chp_xxh3(s->copy_buf, c.len) != c.xxh3) {
                        /* Never copy bad bytes forward; keep the segment for the scrub to report.
                         */
                        chp_log_error("store",
                                      "segment %u: chunk at %llu fails its checksum; "
                                      "segment kept",
                                      victim, (unsigned long long)c.offset);
                        rc = CHP_ECORRUPT;
                        break;
                }
                if ((rc = map_mdb(mdb_cursor_del(cur, 0))))
                        break;
                uint32_t seg;
                uint64_t off;
                if ((rc = seg_append(s, txn, s->copy_buf, c.len, &seg, &off)))
                        break;
                uint8_t rec[CHUNK_REC], nk[12];
                encode_chunk(rec, KIND_SEG, c.len, c.xxh3, seg, off);
                cv = val(rec, CHUNK_REC);
                if ((rc = map_mdb(mdb_put(txn, s->db_chunks, &ck, &cv, 0))))
                        break;
                segidx_key(nk, seg, off);
                MDB_val nkey = val(nk, 12), nval = val(addr, CHP_HASH_BYTES);
                if ((rc = map_mdb(mdb_put(txn, s->db_segidx, &nkey, &nval, 0))))
                        break;
                struct seg_rec r;
                if ((rc = get_seg_rec(s, txn, victim, &r)))
                        break;
                r.live = r.live >= c.len ? r.live - c.len : 0;
                if ((rc = put_seg_rec(s, txn, victim, &r)))
                        break;
                st->bytes_moved += c.len;
        }
        mdb_cursor_close(cur);
        seg_put(g);
        if (rc)
                return rc;
        uint8_t sk[4];
        chp_put_be32(sk, victim);
        MDB_val skey = val(sk, 4);
        if ((rc = map_mdb(mdb_del(txn, s->db_segments, &skey, NULL))))
                return rc;
        st->segments_compacted++;
        queue_dead(s, victim);
        return 0;
}

static int apply_gc(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        struct chp_gc_stats *st = &req->u.gc.stats;
        memset(st, 0, sizeof(*st));
        MDB_cursor *cur;
        int rc;
        uint32_t removed = 0;

        /* expired files and uploads, oldest first */
        for (;;) {
                if ((rc = map_mdb(mdb_cursor_open(txn, s->db_expiry, &cur))))
                        return rc;
                MDB_val k, v;
                rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
                uint8_t key[512]; /* any LMDB key (511 bytes at most), so a malformed one too */
                size_t klen = k.mv_size;
                if (rc == 0 && klen <= sizeof(key))
                        memcpy(key, k.mv_data, klen);
                mdb_cursor_close(cur);
                if (rc == MDB_NOTFOUND)
                        break;
                if (rc)
                        return map_mdb(rc);
                if (klen > sizeof(key))
                        return CHP_ECORRUPT;
                /* an entry of a length this store never writes is dropped below: stopping at
                 * it would stop expiry for ever */
                bool malformed = klen < 9 || klen > EXPIRY_KEY_MAX;
                if (!malformed && chp_get_be64(key) > req->u.gc.now)
                        break;
                if (removed >= s->opts.gc_batch) {
                        st->more = true;
                        break;
                }
                if (malformed) {
                        rc = -ENOENT;
                } else if (key[8] == EXPIRY_FILE && klen == 9 + CHP_HASH_BYTES) {
                        rc = file_delete(s, txn, key + 9, st);
                        st->files_expired += rc == 0;
                } else if (key[8] == EXPIRY_UPLOAD && klen == 9 + CHP_UPLOAD_ID_BYTES) {
                        rc = upload_delete(s, txn, key + 9, st);
                        st->uploads_expired += rc == 0;
                } else {
                        rc = -ENOENT;
                }
                if (rc == -ENOENT) {
                        /* an expiry entry whose record is gone: drop the entry */
                        MDB_val dk = val(key, klen);
                        rc = mdb_del(txn, s->db_expiry, &dk, NULL);
                        rc = rc == MDB_NOTFOUND ? 0 : map_mdb(rc);
                }
                if (rc)
                        return rc;
                removed++;
        }

        /* dead segments go whole; sparse ones are compacted (bounded work per request) */
        uint32_t victims[64];
        int nvictims = 0;
        if ((rc = map_mdb(mdb_cursor_open(txn, s->db_segments, &cur))))
                return rc;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0 && nvictims < 64) {
                op = MDB_NEXT;
                if (k.mv_size != 4 || v.mv_size != SEG_REC)
                        continue;
                uint32_t num = chp_get_be32(k.mv_data);
                uint64_t total = chp_get_le64(v.mv_data);
                uint64_t live = chp_get_le64((const uint8_t *)v.mv_data + 8);
                uint32_t state = chp_get_le32((const uint8_t *)v.mv_data + 16);
                if (state != SEG_SEALED || (s->open_seg && s->open_seg->num == num))
                        continue;
                if (live == 0 || (double)live < s->opts.compact_ratio * (double)total)
                        victims[nvictims++] = num;
        }
        mdb_cursor_close(cur);
        if (rc && rc != MDB_NOTFOUND)
                return map_mdb(rc);
        uint64_t moved_limit = s->opts.batch_bytes;
        for (int i = 0; i < nvictims; i++) {
                struct seg_rec r;
                if ((rc = get_seg_rec(s, txn, victims[i], &r)))
                        return rc;
                if (r.live == 0) {
                        uint8_t sk[4];
                        chp_put_be32(sk, victims[i]);
                        MDB_val skey = val(sk, 4);
                        if ((rc = map_mdb(mdb_del(txn, s->db_segments, &skey, NULL))))
                                return rc;
                        st->segments_deleted++;
                        queue_dead(s, victims[i]);
                        continue;
                }
                if (st->bytes_moved >= moved_limit) {
                        st->more = true;
                        continue;
                }
                if ((rc = compact_segment(s, txn, victims[i], st))) {
                        if (rc == CHP_ECORRUPT)
                                continue; /* reported; the rest can still be compacted */
                        return rc;
                }
        }
        return 0;
}

/* ---- writer thread ------------------------------------------------------------------------ */

/* What a request or a batch changed outside LMDB, so an abort can undo it. */
struct undo {
        struct chp_seg *open_seg;
        uint64_t open_end;
        int ncreated, ndead;
};

static void undo_save(const struct chp_store *s, struct undo *u)
{
        *u = (struct undo){s->open_seg, s->open_end, s->ncreated, s->ndead};
}

static void undo_apply(struct chp_store *s, const struct undo *u)
{
        for (int i = u->ncreated; i < s->ncreated; i++) {
                char path[4096];
                seg_path(s, s->created[i], path, sizeof(path));
                unlink(path);
                seg_retire(s, s->created[i]);
        }
        s->ncreated = u->ncreated;
        s->ndead = u->ndead;
        s->open_seg = u->open_seg;
        s->open_end = u->open_end; /* bytes past it are unreferenced and will be overwritten */
}

static int apply_tail_append(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        const uint8_t *id = req->u.tail_append.upload_id;
        int rc = upload_exists(s, txn, id);
        if (rc)
                return rc;
        if (!req->u.tail_append.data || req->u.tail_append.len == 0 ||
            req->u.tail_append.len > CHP_CHUNK_MAX)
                return -EINVAL;
        /* after the last piece */
        MDB_cursor *cur;
        uint32_t seq = 0;
        if ((rc = map_mdb(mdb_cursor_open(txn, s->db_tails, &cur))))
                return rc;
        uint8_t k[CHP_UPLOAD_ID_BYTES + 4];
        memcpy(k, id, CHP_UPLOAD_ID_BYTES);
        chp_put_be32(k + CHP_UPLOAD_ID_BYTES, UINT32_MAX);
        MDB_val key = val(k, sizeof(k)), v;
        int r = mdb_cursor_get(cur, &key, &v, MDB_SET_RANGE);
        r = r == 0 ? mdb_cursor_get(cur, &key, &v, MDB_PREV) : mdb_cursor_get(cur, &key, &v, MDB_LAST);
        if (r == 0 && key.mv_size == sizeof(k) && memcmp(key.mv_data, id, CHP_UPLOAD_ID_BYTES) == 0)
                seq = chp_get_be32((const uint8_t *)key.mv_data + CHP_UPLOAD_ID_BYTES) + 1;
        mdb_cursor_close(cur);
        chp_put_be32(k + CHP_UPLOAD_ID_BYTES, seq);
        key = val(k, sizeof(k));
        v = val(req->u.tail_append.data, req->u.tail_append.len);
        return map_mdb(mdb_put(txn, s->db_tails, &key, &v, 0));
}

/* Commits a file and ends the upload that wrote it; without a manifest in the request, the
 * upload's own (native uploads) is used, with its tenant and file lifetime. */
static int apply_commit_upload(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        const uint8_t *id = req->u.commit.upload_id;
        int rc;
        if (req->u.commit.manifest) {
                if ((rc = apply_commit(s, txn, req)))
                        return rc;
                rc = req->u.commit.keep_upload
                             ? upload_complete(s, txn, id, req->u.commit.file_id)
                             : upload_delete(s, txn, id, NULL);
                return rc == -ENOENT ? 0 : rc;
        }
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct upload_rec u;
        if ((rc = map_mdb(mdb_get(txn, s->db_uploads, &k, &v))) || (rc = parse_upload_rec(&v, &u)))
                return rc;
        if (!(u.flags & UPLOAD_HAS_MANIFEST))
                return -EINVAL;
        /* the value moves once we write: work from copies */
        uint8_t *enc = malloc(u.manifest_len ? u.manifest_len : 1);
        if (!enc)
                return -ENOMEM;
        memcpy(enc, u.manifest, u.manifest_len);
        char tenant[CHP_TENANT_MAX + 1];
        memcpy(tenant, u.tenant, u.tenant_len);
        tenant[u.tenant_len] = '\0';
        req->u.commit.manifest = enc;
        req->u.commit.manifest_len = u.manifest_len;
        req->u.commit.tenant = tenant;
        req->u.commit.expires = u.file_expires;
        rc = apply_commit(s, txn, req);
        req->u.commit.manifest = NULL;
        req->u.commit.manifest_len = 0;
        req->u.commit.tenant = NULL;
        free(enc);
        if (!rc)
                rc = upload_delete(s, txn, id, NULL);
        return rc;
}

static int apply(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        switch (req->type) {
        case CHP_REQ_PUT:
                return apply_put(s, txn, req);
        case CHP_REQ_COMMIT:
                if (!req->u.commit.has_upload)
                        return apply_commit(s, txn, req);
                return apply_commit_upload(s, txn, req);
        case CHP_REQ_FILE_DELETE:
                return file_delete(s, txn, req->u.file_delete.file_id, NULL);
        case CHP_REQ_UPLOAD_CREATE:
                if (!req->u.upload_create.upload)
                        return -EINVAL;
                return apply_upload_create(s, txn, req);
        case CHP_REQ_UPLOAD_DELETE:
                return upload_delete(s, txn, req->u.upload_delete.upload_id, NULL);
        case CHP_REQ_GC:
                return apply_gc(s, txn, req);
        case CHP_REQ_TAIL_APPEND:
                return apply_tail_append(s, txn, req);
        }
        return -EINVAL;
}

/* Applies a batch in one LMDB transaction, each request in a nested transaction of its own so
 * that one request's failure leaves the others intact. Sets every request's status. */
static void run_batch(struct chp_store *s, struct chp_store_req *batch)
{
        struct undo batch_undo;
        s->ncreated = 0;
        s->ndead = 0;
        s->ndirty = 0;
        s->sync_failed = false;
        undo_save(s, &batch_undo);

        MDB_txn *txn;
        int rc = map_mdb(mdb_txn_begin(s->env, NULL, 0, &txn));
        if (rc)
                goto fail;
        for (struct chp_store_req *r = batch; r; r = r->next) {
                struct undo u;
                undo_save(s, &u);
                MDB_txn *child;
                r->status = map_mdb(mdb_txn_begin(s->env, txn, 0, &child));
                if (r->status)
                        continue;
                r->status = apply(s, child, r);
                if (r->status == 0)
                        r->status = map_mdb(mdb_txn_commit(child));
                else
                        mdb_txn_abort(child);
                if (r->status)
                        undo_apply(s, &u);
        }
        /* the bytes first, then the index that points at them */
        if (s->opts.sync == CHP_SYNC_FULL) {
                for (int i = 0; i < s->ndirty; i++)
                        if (fdatasync(s->dirty[i]->fd) != 0)
                                s->sync_failed = true;
        }
        if (s->sync_failed) {
                chp_log_error("store", "fdatasync of a segment failed: batch not committed");
                mdb_txn_abort(txn);
                rc = -EIO;
                goto fail;
        }
        rc = map_mdb(mdb_txn_commit(txn));
        if (rc)
                goto fail;
        for (int i = 0; i < s->ndead; i++) {
                char path[4096];
                seg_path(s, s->dead[i], path, sizeof(path));
                unlink(path);
                seg_retire(s, s->dead[i]);
        }
        goto out;
fail:
        chp_log_error("store", "batch failed: %s", chp_strerror(rc));
        undo_apply(s, &batch_undo);
        for (struct chp_store_req *r = batch; r; r = r->next)
                if (r->status == 0)
                        r->status = rc;
out:
        for (int i = 0; i < s->ndirty; i++)
                seg_put(s->dirty[i]);
        s->ndirty = 0;
}

static uint64_t req_bytes(const struct chp_store_req *r)
{
        return r->type == CHP_REQ_PUT && r->u.put.data ? r->u.put.len : 0;
}

static void *writer_main(void *arg)
{
        struct chp_store *s = arg;
        pthread_mutex_lock(&s->q_lock);
        for (;;) {
                while (!s->q_head && !s->stopping)
                        pthread_cond_wait(&s->q_cond, &s->q_lock);
                if (!s->q_head)
                        break; /* stopping and drained */
                if (s->opts.linger_us && !s->q_head->next && !s->stopping) {
                        struct timespec until;
                        clock_gettime(CLOCK_REALTIME, &until);
                        until.tv_nsec += (long)s->opts.linger_us * 1000;
                        until.tv_sec += until.tv_nsec / 1000000000;
                        until.tv_nsec %= 1000000000;
                        pthread_cond_timedwait(&s->q_cond, &s->q_lock, &until);
                }
                /* take a prefix of the queue of at most batch_bytes (at least one request) */
                struct chp_store_req *batch = s->q_head, *last = batch;
                uint64_t bytes = req_bytes(batch);
                while (last->next && bytes + req_bytes(last->next) <= s->opts.batch_bytes) {
                        last = last->next;
                        bytes += req_bytes(last);
                }
                s->q_head = last->next;
                if (!s->q_head)
                        s->q_tail = NULL;
                last->next = NULL;
                pthread_mutex_unlock(&s->q_lock);

                run_batch(s, batch);
                while (batch) {
                        struct chp_store_req *next = batch->next;
                        batch->next = NULL;
                        if (batch->done)
                                batch->done(batch);
                        batch = next;
                }
                pthread_mutex_lock(&s->q_lock);
        }
        pthread_mutex_unlock(&s->q_lock);
        return NULL;
}

int chp_store_submit(struct chp_store *s, struct chp_store_req *req)
{
        if (req->type == CHP_REQ_PUT && req->u.put.data) {
                if (req->u.put.len > CHP_CHUNK_MAX)
                        return CHP_ETOOBIG;
                if (!req->u.put.verified) {
                        uint8_t got[CHP_HASH_BYTES];
                        int rc = chp_sha256(req->u.put.data, req->u.put.len, got);
                        if (rc)
                                return rc;
                        if (memcmp(got, req->u.put.addr, CHP_HASH_BYTES) != 0)
                                return CHP_EMISMATCH;
                }
        }
        if (req->type == CHP_REQ_PUT)
                req->u.put.deduplicated = false;
        req->status = 0;
        req->next = NULL;
        pthread_mutex_lock(&s->q_lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->q_lock);
                return CHP_ECLOSED;
        }
        if (s->q_tail)
                s->q_tail->next = req;
        else
                s->q_head = req;
        s->q_tail = req;
        pthread_cond_signal(&s->q_cond);
        pthread_mutex_unlock(&s->q_lock);
        return 0;
}

struct waiter {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
};

static void waiter_done(struct chp_store_req *req)
{
        struct waiter *w = req->ctx;
        pthread_mutex_lock(&w->lock);
        w->done = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

int chp_store_run(struct chp_store *s, struct chp_store_req *req)
{
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
        req->done = waiter_done;
        req->ctx = &w;
        int rc = chp_store_submit(s, req);
        if (rc)
                return rc;
        pthread_mutex_lock(&w.lock);
        while (!w.done)
                pthread_cond_wait(&w.cond, &w.lock);
        pthread_mutex_unlock(&w.lock);
        pthread_cond_destroy(&w.cond);
        pthread_mutex_destroy(&w.lock);
        return req->status;
}

int chp_store_put(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], const void *data,
                  uint32_t len)
{
        struct chp_store_req req = {.type = CHP_REQ_PUT};
        memcpy(req.u.put.addr, addr, CHP_HASH_BYTES);
        req.u.put.data = data;
        req.u.put.len = len;
        return chp_store_run(s, &req);
}

int chp_store_commit(struct chp_store *s, const uint8_t *manifest, size_t len, uint64_t expires,
                     uint8_t file_id[CHP_HASH_BYTES])
{
        struct chp_store_req req = {.type = CHP_REQ_COMMIT};
        req.u.commit.manifest = manifest;
        req.u.commit.manifest_len = len;
        req.u.commit.expires = expires;
        int rc = chp_store_run(s, &req);
        if (rc == 0)
                memcpy(file_id, req.u.commit.file_id, CHP_HASH_BYTES);
        return rc;
}

int chp_store_gc(struct chp_store *s, uint64_t now, struct chp_gc_stats *stats)
{
        struct chp_store_req req = {.type = CHP_REQ_GC};
        req.u.gc.now = now;
        int rc = chp_store_run(s, &req);
        if (rc == 0 && stats)
                *stats = req.u.gc.stats;
        return rc;
}

/* ---- reads ------------------------------------------------------------------------------- */

static int read_begin(struct chp_store *s, MDB_txn **txn)
{
        return map_mdb(mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn));
}

/* Looks addr up in one snapshot: the record, and for segment chunks a reference to the segment
 * (taken while the snapshot is open). Inline bytes are copied into buf when buf is not NULL.
 * A miss in the segment table means compaction moved the chunk after the snapshot was taken: a
 * fresh snapshot sees the new place, so the caller retries. */
static int lookup(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], struct chp_chunk_loc *l,
                  void *buf, size_t cap)
{
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        struct chunk_rec c;
        rc = map_mdb(mdb_get(txn, s->db_chunks, &k, &v));
        if (!rc)
                rc = parse_chunk(&v, &c);
        if (!rc) {
                *l = (struct chp_chunk_loc){.len = c.len, .xxh3 = c.xxh3, .fd = -1};
                if (buf && c.len > cap) {
                        rc = -ENOBUFS;
                } else if (c.kind == KIND_INLINE) {
                        l->is_inline = true;
                        if (buf)
                                memcpy(buf, c.inline_data, c.len);
                } else if (!(l->seg = seg_get(s, c.seg))) {
                        rc = -EAGAIN;
                } else {
                        l->fd = l->seg->fd;
                        l->offset = c.offset;
                }
        }
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_locate(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES],
                     struct chp_chunk_loc *loc)
{
        memset(loc, 0, sizeof(*loc));
        loc->fd = -1;
        for (int attempt = 0; attempt < 4; attempt++) {
                int rc = lookup(s, addr, loc, NULL, 0);
                if (rc != -EAGAIN)
                        return rc;
        }
        return CHP_ECORRUPT;
}

void chp_store_loc_release(struct chp_store *s, struct chp_chunk_loc *loc)
{
        (void)s;
        if (!loc)
                return;
        seg_put(loc->seg);
        loc->seg = NULL;
        loc->fd = -1;
}

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
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

ssize_t chp_store_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                       size_t cap)
{
        struct chp_chunk_loc loc;
        int rc = -EAGAIN;
        for (int attempt = 0; rc == -EAGAIN && attempt < 4; attempt++)
                rc = lookup(s, addr, &loc, buf, cap);
        if (rc)
                return rc == -EAGAIN ? CHP_ECORRUPT : rc;
        if (!loc.is_inline) {
                ssize_t n = pread_full(loc.fd, buf, loc.len, loc.offset);
                chp_store_loc_release(s, &loc);
                if (n < 0)
                        return n;
        }
        if (chp_xxh3(buf, loc.len) != loc.xxh3)
                return CHP_ECORRUPT;
        return (ssize_t)loc.len;
}

int chp_store_has(struct chp_store *s, const uint8_t *addrs, size_t n, uint8_t *present)
{
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        for (size_t i = 0; i < n; i++) {
                MDB_val k = val(addrs + i * CHP_HASH_BYTES, CHP_HASH_BYTES), v;
                int r = mdb_get(txn, s->db_chunks, &k, &v);
                if (r && r != MDB_NOTFOUND) {
                        rc = map_mdb(r);
                        break;
                }
                present[i] = r == 0;
        }
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_refcount(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], uint64_t *count)
{
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        int r = mdb_get(txn, s->db_refs, &k, &v);
        if (r == MDB_NOTFOUND)
                *count = 0;
        else if (r)
                rc = map_mdb(r);
        else if (v.mv_size != 8)
                rc = CHP_ECORRUPT;
        else
                *count = chp_get_le64(v.mv_data);
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_file_get(struct chp_store *s, const uint8_t id[CHP_HASH_BYTES], uint8_t **manifest,
                       size_t *len, struct chp_file_info *info)
{
        *manifest = NULL;
        *len = 0;
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        struct file_rec f;
        uint8_t *copy = NULL;
        rc = map_mdb(mdb_get(txn, s->db_files, &k, &v));
        if (!rc)
                rc = parse_file(&v, &f);
        if (!rc && !(copy = malloc(f.manifest_len ? f.manifest_len : 1)))
                rc = -ENOMEM;
        if (!rc) {
                memcpy(copy, f.manifest, f.manifest_len);
                if (info) {
                        memcpy(info->tenant, f.tenant, f.tenant_len);
                        info->tenant[f.tenant_len] = '\0';
                        info->created = f.created;
                        info->expires = f.expires;
                        info->size = f.size;
                }
                *manifest = copy;
                *len = f.manifest_len;
        }
        mdb_txn_abort(txn);
        return rc;
}

static int parse_upload(const uint8_t *id, const MDB_val *v, struct chp_upload *u)
{
        struct upload_rec r;
        int rc = parse_upload_rec(v, &r);
        if (rc)
                return rc;
        memcpy(u->id, id, CHP_UPLOAD_ID_BYTES);
        memcpy(u->tenant, r.tenant, r.tenant_len);
        u->tenant[r.tenant_len] = '\0';
        u->chunk_size = r.chunk_size;
        u->declared_size = r.declared;
        u->created = r.created;
        u->expires = r.expires;
        u->meta_len = r.meta_len;
        memcpy(u->meta, r.meta, r.meta_len);
        u->has_manifest = r.flags & UPLOAD_HAS_MANIFEST;
        u->file_expires = r.file_expires;
        u->complete = r.flags & UPLOAD_COMPLETE;
        memcpy(u->file_id, r.file_id, CHP_HASH_BYTES);
        return 0;
}

int chp_store_upload_get(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                         struct chp_upload *out)
{
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        rc = map_mdb(mdb_get(txn, s->db_uploads, &k, &v));
        if (!rc)
                rc = parse_upload(id, &v, out);
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_upload_manifest(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint8_t **manifest, size_t *len)
{
        *manifest = NULL;
        *len = 0;
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct upload_rec u;
        uint8_t *copy = NULL;
        rc = map_mdb(mdb_get(txn, s->db_uploads, &k, &v));
        if (!rc)
                rc = parse_upload_rec(&v, &u);
        if (!rc && !(u.flags & UPLOAD_HAS_MANIFEST))
                rc = -ENOENT;
        if (!rc && !(copy = malloc(u.manifest_len)))
                rc = -ENOMEM;
        if (!rc) {
                memcpy(copy, u.manifest, u.manifest_len);
                *manifest = copy;
                *len = u.manifest_len;
        }
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_upload_progress(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint32_t *chunks, size_t *tail_len)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        uint32_t n = 0;
        size_t tail = 0;
        if ((rc = mdb_get(txn, s->db_uploads, &k, &v)) ||
            (rc = mdb_cursor_open(txn, s->db_upchunks, &cur)))
                goto out;
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0 ||
                    chp_get_be32((const uint8_t *)k.mv_data + CHP_UPLOAD_ID_BYTES) != n)
                        break; /* another upload, or a gap */
                n++;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (rc && rc != MDB_NOTFOUND)
                goto out;
        if ((rc = mdb_cursor_open(txn, s->db_tails, &cur)))
                goto out;
        k = val(id, CHP_UPLOAD_ID_BYTES);
        op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                tail += v.mv_size;
        }
        if (rc == MDB_NOTFOUND || rc == 0)
                rc = 0;
        if (!rc) {
                *chunks = n;
                *tail_len = tail;
        }
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return map_mdb(rc);
}

ssize_t chp_store_upload_tail(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                              uint8_t *buf, size_t cap)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        size_t len = 0;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        if ((rc = mdb_cursor_open(txn, s->db_tails, &cur)))
                goto out;
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                if (cap - len < v.mv_size) {
                        rc = ENOBUFS;
                        goto out;
                }
                memcpy(buf + len, v.mv_data, v.mv_size);
                len += v.mv_size;
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return rc ? (ssize_t)map_mdb(rc) : (ssize_t)len;
}

int chp_store_pending(struct chp_store *s, const uint8_t file_id[CHP_HASH_BYTES],
                      uint8_t upload_id[CHP_UPLOAD_ID_BYTES])
{
        MDB_txn *txn;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(file_id, CHP_HASH_BYTES), v;
        rc = map_mdb(mdb_get(txn, s->db_pending, &k, &v));
        if (!rc && v.mv_size != CHP_UPLOAD_ID_BYTES)
                rc = CHP_ECORRUPT;
        if (!rc)
                memcpy(upload_id, v.mv_data, CHP_UPLOAD_ID_BYTES);
        mdb_txn_abort(txn);
        return rc;
}

int chp_store_upload_chunks(struct chp_store *s, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                            uint8_t *have, uint8_t *addrs, size_t n)
{
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        if ((rc = mdb_get(txn, s->db_uploads, &k, &v)) ||
            (rc = mdb_cursor_open(txn, s->db_upchunks, &cur)))
                goto out;
        memset(have, 0, n);
        int op = MDB_SET_RANGE;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_UPLOAD_ID_BYTES + 4 ||
                    memcmp(k.mv_data, id, CHP_UPLOAD_ID_BYTES) != 0)
                        break;
                uint32_t i = chp_get_be32((const uint8_t *)k.mv_data + CHP_UPLOAD_ID_BYTES);
                if (i >= n)
                        break;
                if (v.mv_size != CHP_HASH_BYTES) {
                        rc = MDB_CORRUPTED;
                        goto out;
                }
                have[i] = 1;
                if (addrs)
                        memcpy(addrs + (size_t)i * CHP_HASH_BYTES, v.mv_data, CHP_HASH_BYTES);
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return map_mdb(rc);
}

int chp_store_stats(struct chp_store *s, struct chp_store_stats *out)
{
        memset(out, 0, sizeof(*out));
        MDB_txn *txn;
        MDB_cursor *cur = NULL;
        int rc = read_begin(s, &txn);
        if (rc)
                return rc;
        MDB_stat st;
        struct chp_store_stats r = {0};
        if ((rc = mdb_stat(txn, s->db_chunks, &st)))
                goto out;
        r.chunks = st.ms_entries;
        if ((rc = mdb_stat(txn, s->db_segidx, &st)))
                goto out;
        r.inline_chunks = r.chunks - st.ms_entries;
        if ((rc = mdb_stat(txn, s->db_files, &st)))
                goto out;
        r.files = st.ms_entries;
        if ((rc = mdb_stat(txn, s->db_uploads, &st)))
                goto out;
        r.uploads = st.ms_entries;
        if ((rc = mdb_cursor_open(txn, s->db_segments, &cur)))
                goto out;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                if (v.mv_size != SEG_REC)
                        continue;
                r.segments++;
                r.segment_bytes += chp_get_le64(v.mv_data);
                r.live_bytes += chp_get_le64((const uint8_t *)v.mv_data + 8);
        }
        if (rc == MDB_NOTFOUND)
                rc = 0;
        if (!rc)
                *out = r;
out:
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        return map_mdb(rc);
}

/* ---- scrub ------------------------------------------------------------------------------- */

struct vseg {
        uint32_t num;
        uint64_t total, live, seen_live;
        uint32_t state;
        struct chp_seg *g;
};

struct verify {
        struct chp_store *s;
        MDB_txn *txn;
        chp_verify_problem_fn fn;
        void *ctx;
        struct chp_verify_stats st;
        struct vseg *segs;
        size_t nsegs;
        uint8_t *buf;  /* one chunk, for segment reads */
        uint8_t *refs; /* expected references: one address per reference */
        size_t nrefs, caprefs;
};

__attribute__((format(printf, 2, 3))) static void problem(struct verify *v, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        v->st.problems++;
        if (v->fn)
                v->fn(v->ctx, msg);
}

static const char *hex32(const uint8_t *p, char out[CHP_HASH_HEXBYTES])
{
        chp_hex_encode(p, CHP_HASH_BYTES, out);
        return out;
}

static struct vseg *vseg_find(struct verify *v, uint32_t num)
{
        size_t lo = 0, hi = v->nsegs;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (v->segs[mid].num == num)
                        return &v->segs[mid];
                if (v->segs[mid].num < num)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static int expect_ref(struct verify *v, const uint8_t *addr)
{
        if (v->nrefs == v->caprefs) {
                size_t cap = v->caprefs ? v->caprefs * 2 : 1024;
                uint8_t *n = realloc(v->refs, cap * CHP_HASH_BYTES);
                if (!n)
                        return -ENOMEM;
                v->refs = n;
                v->caprefs = cap;
        }
        memcpy(v->refs + v->nrefs++ * CHP_HASH_BYTES, addr, CHP_HASH_BYTES);
        return 0;
}

static bool chunk_exists(struct verify *v, const uint8_t *addr)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), d;
        return mdb_get(v->txn, v->s->db_chunks, &k, &d) == 0;
}

typedef int (*scan_fn)(struct verify *v, const MDB_val *k, const MDB_val *d);

/* Calls fn for every entry of db in key order; stops at fn's first error (a negative code). */
static int scan(struct verify *v, MDB_dbi db, scan_fn fn)
{
        MDB_cursor *cur;
        int rc = mdb_cursor_open(v->txn, db, &cur);
        if (rc)
                return map_mdb(rc);
        MDB_val k, d;
        int op = MDB_FIRST, err = 0;
        while (!err && (rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                err = fn(v, &k, &d);
        }
        mdb_cursor_close(cur);
        if (err)
                return err;
        return rc == MDB_NOTFOUND ? 0 : map_mdb(rc);
}

static int check_segment(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        if (k->mv_size != 4 || d->mv_size != SEG_REC) {
                problem(v, "segments: malformed record");
                return 0;
        }
        struct vseg *n = realloc(v->segs, (v->nsegs + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        v->segs = n;
        struct vseg *g = &v->segs[v->nsegs++];
        const uint8_t *p = d->mv_data;
        *g = (struct vseg){.num = chp_get_be32(k->mv_data),
                           .total = chp_get_le64(p),
                           .live = chp_get_le64(p + 8),
                           .state = chp_get_le32(p + 16)};
        g->g = seg_get(v->s, g->num);
        struct stat sb;
        if (!g->g)
                problem(v, "segment %u: file missing", g->num);
        else if (fstat(g->g->fd, &sb) != 0 || (uint64_t)sb.st_size < g->total)
                problem(v, "segment %u: file shorter than its committed %llu bytes", g->num,
                        (unsigned long long)g->total);
        if (g->state != SEG_OPEN && g->state != SEG_SEALED)
                problem(v, "segment %u: unknown state %u", g->num, g->state);
        if (g->live > g->total)
                problem(v, "segment %u: live bytes exceed total", g->num);
        return 0;
}

static int check_chunk(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES];
        v->st.chunks++;
        struct chunk_rec c;
        if (k->mv_size != CHP_HASH_BYTES || parse_chunk(d, &c) != 0 || c.len > CHP_CHUNK_MAX) {
                problem(v, "chunk record malformed (key %zu bytes)", k->mv_size);
                return 0;
        }
        const uint8_t *addr = k->mv_data;
        const uint8_t *bytes = c.inline_data;
        if (c.kind == KIND_SEG) {
                struct vseg *g = vseg_find(v, c.seg);
                if (!g || !g->g) {
                        problem(v, "chunk %s: in unknown or missing segment %u", hex32(addr, hex),
                                c.seg);
                        return 0;
                }
                if (c.offset + c.len > g->total) {
                        problem(v, "chunk %s: past the committed end of segment %u",
                                hex32(addr, hex), c.seg);
                        return 0;
                }
                g->seen_live += c.len;
                uint8_t ik[12];
                segidx_key(ik, c.seg, c.offset);
                MDB_val ikey = val(ik, 12), ival;
                if (mdb_get(v->txn, v->s->db_segidx, &ikey, &ival) != 0 ||
                    ival.mv_size != CHP_HASH_BYTES || memcmp(ival.mv_data, addr, CHP_HASH_BYTES))
                        problem(v, "chunk %s: segment index entry missing or wrong",
                                hex32(addr, hex));
                if (pread_full(g->g->fd, v->buf, c.len, c.offset) != (ssize_t)c.len) {
                        problem(v, "chunk %s: cannot read %u bytes from segment %u",
                                hex32(addr, hex), c.len, c.seg);
                        return 0;
                }
                bytes = v->buf;
        }
        v->st.bytes += c.len;
        uint8_t sum[CHP_HASH_BYTES];
        if (chp_xxh3(bytes, c.len) != c.xxh3)
                problem(v, "chunk %s: checksum mismatch (bit rot)", hex32(addr, hex));
        else if (chp_sha256(bytes, c.len, sum) != 0 || memcmp(sum, addr, CHP_HASH_BYTES) != 0)
                problem(v, "chunk %s: bytes do not hash to the address", hex32(addr, hex));
        MDB_val rk = val(addr, CHP_HASH_BYTES), rv;
        if (mdb_get(v->txn, v->s->db_refs, &rk, &rv) == MDB_NOTFOUND)
                v->st.unreferenced++;
        return 0;
}

/* Every segment index entry belongs to a chunk that points back to it. */
static int check_segidx(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        struct chunk_rec c;
        MDB_val cv;
        if (k->mv_size != 12 || d->mv_size != CHP_HASH_BYTES) {
                problem(v, "segment index: malformed entry");
                return 0;
        }
        MDB_val ck = val(d->mv_data, CHP_HASH_BYTES);
        uint32_t seg = chp_get_be32(k->mv_data);
        uint64_t off = chp_get_be64((const uint8_t *)k->mv_data + 4);
        if (mdb_get(v->txn, v->s->db_chunks, &ck, &cv) != 0 || parse_chunk(&cv, &c) != 0 ||
            c.kind != KIND_SEG || c.seg != seg || c.offset != off)
                problem(v, "segment index: stale entry for segment %u offset %llu", seg,
                        (unsigned long long)off);
        return 0;
}

static bool expiry_present(struct verify *v, uint64_t expires, char kind, const uint8_t *id,
                           size_t idlen)
{
        uint8_t k[EXPIRY_KEY_MAX];
        MDB_val key = val(k, expiry_key(k, expires, kind, id, idlen)), d;
        return mdb_get(v->txn, v->s->db_expiry, &key, &d) == 0;
}

static int check_file(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES], hex2[CHP_HASH_HEXBYTES];
        v->st.files++;
        struct file_rec f;
        struct chp_manifest m;
        uint8_t id[CHP_HASH_BYTES];
        if (k->mv_size != CHP_HASH_BYTES || parse_file(d, &f) != 0) {
                problem(v, "file record malformed");
                return 0;
        }
        const uint8_t *key = k->mv_data;
        if (chp_manifest_decode(f.manifest, f.manifest_len, &m) < 0) {
                problem(v, "file %s: manifest does not decode", hex32(key, hex));
                return 0;
        }
        if (chp_manifest_id(f.manifest, f.manifest_len, id) != 0 ||
            memcmp(id, key, CHP_HASH_BYTES) != 0)
                problem(v, "file %s: id is not the hash of its manifest", hex32(key, hex));
        if (f.expires && !expiry_present(v, f.expires, EXPIRY_FILE, key, CHP_HASH_BYTES))
                problem(v, "file %s: missing from the expiry index", hex32(key, hex));
        for (uint32_t i = 0; i < m.chunk_count; i++) {
                const uint8_t *a = m.addrs + (size_t)i * CHP_HASH_BYTES;
                if (!chunk_exists(v, a))
                        problem(v, "file %s: chunk %u (%s) is not stored", hex32(key, hex), i,
                                hex32(a, hex2));
                int rc = expect_ref(v, a);
                if (rc)
                        return rc;
        }
        return 0;
}

static int check_upload(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        v->st.uploads++;
        struct chp_upload *u = malloc(sizeof(*u));
        if (!u)
                return -ENOMEM;
        if (k->mv_size != CHP_UPLOAD_ID_BYTES || parse_upload(k->mv_data, d, u) != 0)
                problem(v, "upload record malformed");
        else if (u->expires &&
                 !expiry_present(v, u->expires, EXPIRY_UPLOAD, k->mv_data, CHP_UPLOAD_ID_BYTES))
                problem(v, "upload: missing from the expiry index");
        free(u);
        return 0;
}

static int check_upchunk(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        char hex[CHP_HASH_HEXBYTES];
        if (k->mv_size != CHP_UPLOAD_ID_BYTES + 4 || d->mv_size != CHP_HASH_BYTES) {
                problem(v, "upload chunk entry malformed");
                return 0;
        }
        MDB_val uk = val(k->mv_data, CHP_UPLOAD_ID_BYTES), ud;
        if (mdb_get(v->txn, v->s->db_uploads, &uk, &ud) != 0)
                problem(v, "upload chunk entry for an upload that does not exist");
        if (!chunk_exists(v, d->mv_data))
                problem(v, "upload chunk %s is not stored", hex32(d->mv_data, hex));
        return expect_ref(v, d->mv_data);
}

static int check_tail(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        (void)d;
        MDB_val uk = val(k->mv_data, CHP_UPLOAD_ID_BYTES), ud;
        if (k->mv_size != CHP_UPLOAD_ID_BYTES + 4 || mdb_get(v->txn, v->s->db_uploads, &uk, &ud))
                problem(v, "kept tail bytes of an upload that does not exist");
        return 0;
}

static int check_pending(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        MDB_val uk = val(d->mv_data, d->mv_size), ud;
        struct upload_rec u;
        if (k->mv_size != CHP_HASH_BYTES || d->mv_size != CHP_UPLOAD_ID_BYTES ||
            mdb_get(v->txn, v->s->db_uploads, &uk, &ud) != 0 || parse_upload_rec(&ud, &u) != 0 ||
            !(u.flags & UPLOAD_HAS_MANIFEST) || memcmp(u.file_id, k->mv_data, CHP_HASH_BYTES))
                problem(v, "pending entry for an upload that does not exist or differs");
        return 0;
}

static int check_expiry(struct verify *v, const MDB_val *k, const MDB_val *d)
{
        (void)d;
        const uint8_t *p = k->mv_data;
        MDB_val rk, rd;
        MDB_dbi db;
        if (k->mv_size == 9 + CHP_HASH_BYTES && p[8] == EXPIRY_FILE) {
                db = v->s->db_files;
                rk = val(p + 9, CHP_HASH_BYTES);
        } else if (k->mv_size == 9 + CHP_UPLOAD_ID_BYTES && p[8] == EXPIRY_UPLOAD) {
                db = v->s->db_uploads;
                rk = val(p + 9, CHP_UPLOAD_ID_BYTES);
        } else {
                problem(v, "expiry entry malformed");
                return 0;
        }
        if (mdb_get(v->txn, db, &rk, &rd) != 0)
                problem(v, "expiry entry for a record that does not exist");
        return 0;
}

static int cmp_addr(const void *a, const void *b)
{
        return memcmp(a, b, CHP_HASH_BYTES);
}

/* The stored reference counts must equal the references files and uploads make. */
static int verify_refs(struct verify *v)
{
        if (v->nrefs)
                qsort(v->refs, v->nrefs, CHP_HASH_BYTES, cmp_addr);
        MDB_cursor *cur;
        int rc = mdb_cursor_open(v->txn, v->s->db_refs, &cur);
        if (rc)
                return map_mdb(rc);
        MDB_val k, d;
        char hex[CHP_HASH_HEXBYTES];
        size_t i = 0;
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
        for (;;) {
                bool have_stored = rc == 0;
                if (rc && rc != MDB_NOTFOUND)
                        break;
                if (!have_stored && i >= v->nrefs) {
                        rc = 0;
                        break;
                }
                const uint8_t *want = i < v->nrefs ? v->refs + i * CHP_HASH_BYTES : NULL;
                int c = !have_stored ? 1 : !want ? -1 : memcmp(k.mv_data, want, CHP_HASH_BYTES);
                if (have_stored && (k.mv_size != CHP_HASH_BYTES || d.mv_size != 8)) {
                        problem(v, "reference count record malformed");
                        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
                        continue;
                }
                uint64_t expected = 0;
                const uint8_t *addr = c <= 0 ? k.mv_data : want;
                if (c >= 0) {
                        while (i < v->nrefs &&
                               memcmp(v->refs + i * CHP_HASH_BYTES, addr, CHP_HASH_BYTES) == 0) {
                                expected++;
                                i++;
                        }
                }
                uint64_t stored = c <= 0 ? chp_get_le64(d.mv_data) : 0;
                if (stored != expected)
                        problem(v, "chunk %s: reference count %llu, but %llu references exist",
                                hex32(addr, hex), (unsigned long long)stored,
                                (unsigned long long)expected);
                if (c <= 0)
                        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        return map_mdb(rc);
}

int chp_store_verify(struct chp_store *s, chp_verify_problem_fn fn, void *ctx,
                     struct chp_verify_stats *stats)
{
        memset(stats, 0, sizeof(*stats));
        struct verify v = {.s = s, .fn = fn, .ctx = ctx};
        v.buf = malloc(CHP_CHUNK_MAX);
        if (!v.buf)
                return -ENOMEM;
        int rc = read_begin(s, &v.txn);
        if (rc)
                goto out;
        /* segments first: chunk checks look them up and add up their live bytes */
        const struct {
                MDB_dbi db;
                scan_fn fn;
        } passes[] = {
            {s->db_segments, check_segment}, {s->db_chunks, check_chunk},
            {s->db_segidx, check_segidx},    {s->db_files, check_file},
            {s->db_uploads, check_upload},   {s->db_upchunks, check_upchunk},
            {s->db_expiry, check_expiry},    {s->db_pending, check_pending},
            {s->db_tails, check_tail},
        };
        for (size_t i = 0; !rc && i < sizeof(passes) / sizeof(passes[0]); i++)
                rc = scan(&v, passes[i].db, passes[i].fn);
        for (size_t i = 0; !rc && i < v.nsegs; i++)
                if (v.segs[i].seen_live != v.segs[i].live)
                        problem(&v, "segment %u: live bytes %llu but chunks hold %llu",
                                v.segs[i].num, (unsigned long long)v.segs[i].live,
                                (unsigned long long)v.segs[i].seen_live);
        if (!rc)
                rc = verify_refs(&v);
        mdb_txn_abort(v.txn);
        v.st.segments = v.nsegs;
        if (!rc)
                *stats = v.st;
out:
        for (size_t i = 0; i < v.nsegs; i++)
                seg_put(v.segs[i].g);
        free(v.segs);
        free(v.refs);
        free(v.buf);
        return rc;
}
