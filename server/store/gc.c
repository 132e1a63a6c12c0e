/* gc.c — a GC request: expired files and uploads, then the backend's reclamation (segments:
 * sealing the open segment, dropping dead segments, compacting sparse ones). Writer thread,
 * inside the batch's transaction.
 */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

#include "bytes.h"
#include "store_int.h"

/* Space is short when a write ran out of it since the last GC, or when the filesystem has less
 * free than the reserve and three segments (puts stop at one): then GC reclaims harder
 * (SHORT_RATIO). */
static bool space_short(struct chp_store *s)
{
        struct statvfs v;
        if (s->out_of_space)
                return true;
        if (fstatvfs(s->segdir_fd, &v) != 0)
                return false;
        uint64_t free_bytes = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
        return free_bytes < s->reserve + 3 * s->seg_max;
}

int store_apply_gc(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        struct chp_gc_stats *st = &req->u.gc.stats;
        memset(st, 0, sizeof(*st));
        MDB_cursor *cur;
        int rc;
        uint32_t removed = 0;
        bool short_ = space_short(s);
        s->out_of_space = false; /* the next write that runs out says so again */
        double ratio = s->opts.compact_ratio;
        if (short_ && ratio < SHORT_RATIO)
                ratio = SHORT_RATIO;

        /* expired files and uploads, oldest first */
        for (;;) {
                if ((rc = store_mdb_rc(mdb_cursor_open(txn, s->db_expiry, &cur))))
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
                        return store_mdb_rc(rc);
                if (klen > sizeof(key))
                        return CHP_ECORRUPT;
                /* an entry of a length this store never writes is dropped below: stopping at
                 * it would stop expiry for ever */
                bool malformed = klen < 9 || klen > CHP_REC_EXPIRY_KEY_MAX;
                if (!malformed && chp_get_be64(key) > req->u.gc.now)
                        break;
                if (removed >= s->opts.gc_batch) {
                        st->more = true;
                        break;
                }
                if (malformed) {
                        rc = -ENOENT;
                } else if (key[8] == CHP_REC_EXPIRY_FILE && klen == 9 + CHP_HASH_BYTES) {
                        rc = store_file_delete(s, txn, key + 9, st);
                        st->files_expired += rc == 0;
                } else if (key[8] == CHP_REC_EXPIRY_UPLOAD && klen == 9 + CHP_UPLOAD_ID_BYTES) {
                        rc = store_upload_delete(s, txn, key + 9, st);
                        st->uploads_expired += rc == 0;
                } else {
                        rc = -ENOENT;
                }
                if (rc == -ENOENT) {
                        /* an expiry entry whose record is gone: drop the entry */
                        MDB_val dk = val(key, klen);
                        rc = mdb_del(txn, s->db_expiry, &dk, NULL);
                        rc = rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
                }
                if (rc)
                        return rc;
                removed++;
        }

        /* then what the backend reclaims: for segments, sealing, dropping, compacting */
        if (s->backend->ops->reclaim)
                rc = s->backend->ops->reclaim(s->backend, txn, ratio, short_, s->opts.batch_bytes,
                                              st);
        return rc;
}
