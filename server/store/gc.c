/* gc.c — a GC request: expired files and uploads, then sealing the open segment, dropping dead
 * segments and compacting sparse ones. Writer thread, inside the batch's transaction.
 */
#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "bytes.h"
#include "log.h"
#include "store_int.h"
#include "xxh.h"

/* Queues a segment to be unlinked once the batch commits; the caller checked there is room. */
static void queue_dead(struct chp_store *s, uint32_t num)
{
        if (s->ndead < MAX_DEAD)
                s->dead[s->ndead++] = num;
}

/* Moves a sealed segment's live chunks to the open segment and drops it from the index. */
static int compact_segment(struct chp_store *s, MDB_txn *txn, uint32_t victim,
                           struct chp_gc_stats *st)
{
        struct chp_seg *g = store_seg_get(s, victim);
        if (!g)
                return -ENOENT;
        MDB_cursor *cur;
        int rc = store_mdb_rc(mdb_cursor_open(txn, s->db_segidx, &cur));
        if (rc) {
                store_seg_put(g);
                return rc;
        }
        for (;;) {
                uint8_t ik[12];
                chp_rec_segidx_key(ik, victim, 0);
                MDB_val k = val(ik, 12), v;
                rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
                if (rc == MDB_NOTFOUND || k.mv_size != 12 || chp_get_be32(k.mv_data) != victim) {
                        rc = 0;
                        break;
                }
                if (rc || v.mv_size != CHP_HASH_BYTES) {
                        rc = rc ? store_mdb_rc(rc) : CHP_ECORRUPT;
                        break;
                }
                uint8_t addr[CHP_HASH_BYTES];
                memcpy(addr, v.mv_data, CHP_HASH_BYTES);
                uint64_t old_off = chp_get_be64((const uint8_t *)k.mv_data + 4);
                MDB_val ck = val(addr, CHP_HASH_BYTES), cv;
                struct chp_rec_chunk c;
                if (mdb_get(txn, s->db_chunks, &ck, &cv) != 0 || parse_chunk(&cv, &c) != 0 ||
                    c.kind != CHP_REC_CHUNK_SEG || c.seg != victim || c.offset != old_off) {
                        chp_log_warn("store", "segment %u: stale index entry dropped", victim);
                        if ((rc = store_mdb_rc(mdb_cursor_del(cur, 0))))
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
                if ((rc = store_mdb_rc(mdb_cursor_del(cur, 0))))
                        break;
                uint32_t seg;
                uint64_t off;
                if ((rc = store_seg_append(s, txn, s->copy_buf, c.len, &seg, &off)))
                        break;
                uint8_t rec[CHP_REC_CHUNK_BYTES], nk[12];
                chp_rec_chunk_encode(rec, CHP_REC_CHUNK_SEG, c.len, c.xxh3, seg, off);
                cv = val(rec, CHP_REC_CHUNK_BYTES);
                if ((rc = store_mdb_rc(mdb_put(txn, s->db_chunks, &ck, &cv, 0))))
                        break;
                chp_rec_segidx_key(nk, seg, off);
                MDB_val nkey = val(nk, 12), nval = val(addr, CHP_HASH_BYTES);
                if ((rc = store_mdb_rc(mdb_put(txn, s->db_segidx, &nkey, &nval, 0))))
                        break;
                struct chp_rec_seg r;
                if ((rc = store_seg_rec_get(s, txn, victim, &r)))
                        break;
                r.live = r.live >= c.len ? r.live - c.len : 0;
                if ((rc = store_seg_rec_put(s, txn, victim, &r)))
                        break;
                st->bytes_moved += c.len;
        }
        mdb_cursor_close(cur);
        store_seg_put(g);
        if (rc)
                return rc;
        uint8_t sk[4];
        chp_put_be32(sk, victim);
        MDB_val skey = val(sk, 4);
        if ((rc = store_mdb_rc(mdb_del(txn, s->db_segments, &skey, NULL))))
                return rc;
        st->segments_compacted++;
        queue_dead(s, victim);
        return 0;
}

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

/* Dead bytes in the open segment are reclaimable only once it is sealed. Seals it when nothing in
 * it lives (dropping it costs nothing), when it is sparse (below ratio) and either its dead bytes
 * reach half a segment or space is short. */
static int gc_seal_open(struct chp_store *s, MDB_txn *txn, double ratio, bool short_,
                        struct chp_gc_stats *st)
{
        if (!s->open_seg)
                return 0;
        struct chp_rec_seg r;
        int rc = store_seg_rec_get(s, txn, s->open_seg->num, &r);
        if (rc)
                return rc == -ENOENT ? 0 : rc; /* not in the index: nothing to seal */
        uint64_t dead = r.total - (r.live < r.total ? r.live : r.total);
        bool sparse = (double)r.live < ratio * (double)r.total;
        if (r.total == 0 || !(r.live == 0 || (sparse && (short_ || dead >= s->seg_max / 2))))
                return 0;
        if ((rc = store_seg_seal_open(s, txn)))
                return rc;
        st->segments_sealed++;
        return 0;
}

/* Compacts one segment in a nested transaction, so that a failure (no space to copy into, a
 * write error, a chunk failing its checksum) undoes that segment's moves alone. */
static int gc_compact(struct chp_store *s, MDB_txn *txn, uint32_t victim, struct chp_gc_stats *st)
{
        struct undo u;
        store_undo_save(s, &u);
        struct chp_gc_stats before = *st;
        MDB_txn *child;
        int rc = store_mdb_rc(mdb_txn_begin(s->env, txn, 0, &child));
        if (rc)
                return rc;
        s->compacting = true;
        rc = compact_segment(s, child, victim, st);
        s->compacting = false;
        if (!rc)
                rc = store_mdb_rc(mdb_txn_commit(child));
        else
                mdb_txn_abort(child);
        if (rc) {
                store_undo_apply(s, &u);
                *st = before;
        }
        return rc;
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
                uint8_t key[CHP_REC_EXPIRY_KEY_MAX];
                size_t klen = k.mv_size;
                if (rc == 0 && klen <= CHP_REC_EXPIRY_KEY_MAX)
                        memcpy(key, k.mv_data, klen);
                mdb_cursor_close(cur);
                if (rc == MDB_NOTFOUND)
                        break;
                if (rc)
                        return store_mdb_rc(rc);
                if (klen < 9 || chp_get_be64(key) > req->u.gc.now)
                        break;
                if (removed >= s->opts.gc_batch) {
                        st->more = true;
                        break;
                }
                if (key[8] == CHP_REC_EXPIRY_FILE && klen == 9 + CHP_HASH_BYTES) {
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

        if ((rc = gc_seal_open(s, txn, ratio, short_, st)))
                return rc;

        /* dead segments go whole; sparse ones are compacted (bounded work per request) */
        uint32_t victims[MAX_DEAD];
        int nvictims = 0;
        if ((rc = store_mdb_rc(mdb_cursor_open(txn, s->db_segments, &cur))))
                return rc;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_seg r;
                if (k.mv_size != 4 || chp_rec_seg_parse(v.mv_data, v.mv_size, &r) < 0)
                        continue;
                uint32_t num = chp_get_be32(k.mv_data);
                if (r.state != CHP_REC_SEG_SEALED || (s->open_seg && s->open_seg->num == num))
                        continue;
                if (r.live != 0 && !((double)r.live < ratio * (double)r.total))
                        continue;
                if (nvictims == MAX_DEAD) {
                        st->more = true;
                        break;
                }
                victims[nvictims++] = num;
        }
        mdb_cursor_close(cur);
        if (rc && rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);

        /* first the segments that cost nothing to drop */
        for (int i = 0; i < nvictims; i++) {
                struct chp_rec_seg r;
                if ((rc = store_seg_rec_get(s, txn, victims[i], &r)))
                        return rc;
                if (r.live != 0)
                        continue;
                if (s->ndead == MAX_DEAD) {
                        st->more = true;
                        break;
                }
                uint8_t sk[4];
                chp_put_be32(sk, victims[i]);
                MDB_val skey = val(sk, 4);
                if ((rc = store_mdb_rc(mdb_del(txn, s->db_segments, &skey, NULL))))
                        return rc;
                st->segments_deleted++;
                queue_dead(s, victims[i]);
                victims[i] = 0; /* segment numbers start at 1 */
        }
        /* then the sparse ones, while there is room to copy into */
        for (int i = 0; i < nvictims; i++) {
                if (!victims[i])
                        continue;
                if (st->bytes_moved >= s->opts.batch_bytes || s->ndead == MAX_DEAD) {
                        st->more = true;
                        break;
                }
                rc = gc_compact(s, txn, victims[i], st);
                if (rc == CHP_ECORRUPT)
                        continue; /* reported; the rest can still be compacted */
                if (is_space_error(rc)) {
                        /* the segments dropped above free their space once this commits: then
                         * there may be room, so ask for another pass */
                        chp_log_info("store", "gc: no room to compact segment %u yet", victims[i]);
                        st->more = st->more || st->segments_deleted || st->segments_compacted;
                        break;
                }
                if (rc) {
                        /* a write error: the moves are undone and the segment stays; the rest
                         * of GC (expiry, drops) still commits */
                        chp_log_error("store", "gc: compacting segment %u failed: %s", victims[i],
                                      chp_strerror(rc));
                        break;
                }
        }
        return 0;
}
