/* segments_int.h — what the files of the segments backend share (segments.c: the table of
 * segment files, appending, the write half, reads, open/close; segments_gc.c: reclaim;
 * segments_verify.c: verify and stats). Private to them; the store sees backend.h only.
 *
 * Threads: the segment table is shared under b->lock (references counted); everything else in
 * struct segments belongs to the writer thread, except what open sets and never changes.
 */
#ifndef CHP_STORE_SEGMENTS_INT_H
#define CHP_STORE_SEGMENTS_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <lmdb.h>

#include "backend.h"
#include "records.h"

#define SEG_BUCKETS 256
#define MAX_DIRTY   8
#define MAX_DEAD    64
#define MAX_CREATED 64

/* An open segment file, shared by the writer and readers. The table holds one reference; each
 * span (chp_chunk_loc) holds one more; the fd closes when the last goes. */
struct chp_seg {
        uint32_t num;
        int fd;
        atomic_uint refs;
        struct chp_seg *next; /* bucket chain, under lock */
};

struct segments {
        struct chp_backend base;
        struct chp_backend_host host;
        char *dir;
        int segdir_fd;
        MDB_env *env;
        MDB_dbi db_segments, db_segidx;
        enum chp_sync sync;
        uint64_t seg_max;

        pthread_mutex_t lock;
        struct chp_seg *segs[SEG_BUCKETS];

        /* writer thread only */
        struct chp_seg *open_seg;         /* NULL until the first segs_append */
        uint64_t open_end;                /* bytes written to open_seg, committed or not */
        struct chp_seg *dirty[MAX_DIRTY]; /* appended to in this batch; one reference each */
        int ndirty;
        uint32_t created[MAX_CREATED]; /* segments created in this batch, unknown to the index
                                          until it commits */
        int ncreated;
        uint32_t dead[MAX_DEAD]; /* segments to unlink once the batch commits */
        int ndead;
        uint32_t seg_next; /* number of the next segment created: never reused while open, so
                              a number queued for unlinking never names a new file */
        bool seal_next;    /* the open segment takes no more appends: the next one seals it and
                              starts a new segment (after a failed write or sync, or ENOSPC) */
        bool sync_failed;
        uint8_t *copy_buf; /* compaction buffer, CHP_CHUNK_MAX bytes */
};

/* What mark saves: the writer state a nested transaction's abort must restore. */
struct mark {
        struct chp_seg *open_seg;
        uint64_t open_end;
        int32_t ncreated, ndead;
        bool seal_next;
};
_Static_assert(sizeof(struct mark) <= sizeof(struct chp_backend_mark), "mark fits");

#define SEGMENTS(b) ((struct segments *)(b))

static inline MDB_val val(const void *p, size_t n)
{
        return (MDB_val){.mv_size = n, .mv_data = (void *)p};
}

static inline bool is_space_error(int rc)
{
        return rc == -ENOSPC || rc == -EDQUOT;
}

#ifdef CHAPAR_FAULT_INJECTION
/* The store's fault hook (tests): the error armed for this call at site, or 0. */
static inline int fault(struct segments *b, enum chp_store_fault_site site)
{
        return b->host.fault ? b->host.fault(b->host.ctx, (int)site) : 0;
}
#else
#define fault(b, site) 0
#endif

/* segments.c */
int segs_rec_get(struct segments *b, MDB_txn *txn, uint32_t num, struct chp_rec_seg *r);
int segs_rec_put(struct segments *b, MDB_txn *txn, uint32_t num, const struct chp_rec_seg *r);
int segs_rec_del(struct segments *b, MDB_txn *txn, uint32_t num);
/* Reads exactly len bytes at off; CHP_ECORRUPT if the file ends first. */
ssize_t segs_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* A reference to segment num (NULL if the table has none); release with segs_put. */
struct chp_seg *segs_get(struct segments *b, uint32_t num);
void segs_put(struct chp_seg *g); /* NULL is a no-op */
int segs_seal_open(struct segments *b, MDB_txn *txn);
int segs_append(struct segments *b, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                const void *data, uint32_t len, bool compacting,
                struct chp_backend_place *place /* out */);
void segs_mark(struct chp_backend *base, struct chp_backend_mark *out);
void segs_rollback(struct chp_backend *base, const struct chp_backend_mark *in);

/* segments_gc.c */
int segs_reclaim(struct chp_backend *base, MDB_txn *txn, double ratio, bool short_,
                 uint64_t move_budget, struct chp_gc_stats *st);

/* segments_verify.c */
int segs_verify_begin(struct chp_backend *base, MDB_txn *txn, struct chp_backend_verify *v);
int segs_verify_chunk(struct chp_backend *base, struct chp_backend_verify *v,
                      const uint8_t addr[CHP_HASH_BYTES], const struct chp_backend_place *place,
                      uint32_t len, void *buf);
int segs_verify_end(struct chp_backend *base, struct chp_backend_verify *v, bool ok);
int segs_stats(struct chp_backend *base, MDB_txn *txn, struct chp_store_stats *out,
               uint64_t *chunks);

#endif
