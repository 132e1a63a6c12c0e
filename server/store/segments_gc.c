/* segments_gc.c — the segments backend's reclaim (GC, writer thread, inside the batch's
 * transaction): seal the open segment when that frees something, drop dead segments whole,
 * compact sparse ones by moving their live chunks to the open segment.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "err.h"
#include "log.h"
#include "segments_int.h"
#include "xxh.h"

/* Queues a segment to be unlinked once the batch commits; the caller checked there is room. */
static void queue_dead(struct segments *b, uint32_t num)
{
        if (b->ndead < MAX_DEAD)
                b->dead[b->ndead++] = num;
}

/* ---- reclaiming (GC, writer thread) ------------------------------------------------------- */

/* Moves a sealed segment's live chunks to the open segment and drops it from the index. */
static int compact_segment(struct segments *b, MDB_txn *txn, uint32_t victim,
                           struct chp_gc_stats *st)
{
        struct chp_seg *g = segs_get(b, victim);
        if (!g)
                return -ENOENT;
        MDB_cursor *cur;
        int rc = store_mdb_rc(mdb_cursor_open(txn, b->db_segidx, &cur));
        if (rc) {
                segs_put(g);
                return rc;
        }
        for (;;) {
                uint8_t ik[CHP_REC_SEGIDX_KEY];
                chp_rec_segidx_key(ik, victim, 0);
                MDB_val k = val(ik, sizeof(ik)), v;
                rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
                if (rc == MDB_NOTFOUND || k.mv_size != CHP_REC_SEGIDX_KEY ||
                    chp_get_be32(k.mv_data) != victim) {
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
                struct chp_backend_place at;
                uint32_t len;
                uint64_t xxh3;
                if (b->host.chunk_get(b->host.ctx, txn, addr, &at, &len, &xxh3) != 0 ||
                    at.unit != victim || at.offset != old_off) {
                        chp_log_warn("store", "segment %u: stale index entry dropped", victim);
                        if ((rc = store_mdb_rc(mdb_cursor_del(cur, 0))))
                                break;
                        continue;
                }
                ssize_t n = pread(g->fd, b->copy_buf, len, (off_t)at.offset);
                if (n != (ssize_t)len || chp_xxh3(b->copy_buf, len) != xxh3) {
                        /* Never copy bad bytes forward; keep the segment for the scrub to report.
                         */
                        chp_log_error("store",
                                      "segment %u: chunk at %llu fails its checksum; "
                                      "segment kept",
                                      victim, (unsigned long long)at.offset);
                        rc = CHP_ECORRUPT;
                        break;
                }
                if ((rc = store_mdb_rc(mdb_cursor_del(cur, 0))))
                        break;
                struct chp_backend_place to;
                if ((rc = segs_append(b, txn, addr, b->copy_buf, len, true, &to)))
                        break;
                if ((rc = b->host.chunk_moved(b->host.ctx, txn, addr, &to, len, xxh3)))
                        break;
                struct chp_rec_seg r;
                if ((rc = segs_rec_get(b, txn, victim, &r)))
                        break;
                r.live = r.live >= len ? r.live - len : 0;
                if ((rc = segs_rec_put(b, txn, victim, &r)))
                        break;
                st->bytes_moved += len;
        }
        mdb_cursor_close(cur);
        segs_put(g);
        if (rc)
                return rc;
        if ((rc = segs_rec_del(b, txn, victim)))
                return rc;
        st->segments_compacted++;
        queue_dead(b, victim);
        return 0;
}

/* Dead bytes in the open segment are reclaimable only once it is sealed. Seals it when nothing in
 * it lives (dropping it costs nothing), when it is sparse (below ratio) and either its dead bytes
 * reach half a segment or space is short. */
static int gc_seal_open(struct segments *b, MDB_txn *txn, double ratio, bool short_,
                        struct chp_gc_stats *st)
{
        if (!b->open_seg)
                return 0;
        struct chp_rec_seg r;
        int rc = segs_rec_get(b, txn, b->open_seg->num, &r);
        if (rc)
                return rc == -ENOENT ? 0 : rc; /* not in the index: nothing to seal */
        uint64_t dead = r.total - (r.live < r.total ? r.live : r.total);
        bool sparse = (double)r.live < ratio * (double)r.total;
        if (r.total == 0 || !(r.live == 0 || (sparse && (short_ || dead >= b->seg_max / 2))))
                return 0;
        if ((rc = segs_seal_open(b, txn)))
                return rc;
        st->segments_sealed++;
        return 0;
}

/* Compacts one segment in a nested transaction, so that a failure (no space to copy into, a
 * write error, a chunk failing its checksum) undoes that segment's moves alone. */
static int gc_compact(struct segments *b, MDB_txn *txn, uint32_t victim, struct chp_gc_stats *st)
{
        struct chp_backend_mark m;
        segs_mark(&b->base, &m);
        struct chp_gc_stats before = *st;
        MDB_txn *child;
        int rc = store_mdb_rc(mdb_txn_begin(b->env, txn, 0, &child));
        if (rc)
                return rc;
        rc = compact_segment(b, child, victim, st);
        if (!rc)
                rc = store_mdb_rc(mdb_txn_commit(child));
        else
                mdb_txn_abort(child);
        if (rc) {
                segs_rollback(&b->base, &m);
                *st = before;
        }
        return rc;
}

/* Seals the open segment when that frees something, drops dead segments whole and compacts
 * sparse ones (bounded work: at most MAX_DEAD segments and about move_budget bytes a pass). */
int segs_reclaim(struct chp_backend *base, MDB_txn *txn, double ratio, bool short_,
                 uint64_t move_budget, struct chp_gc_stats *st)
{
        struct segments *b = SEGMENTS(base);
        int rc;
        if ((rc = gc_seal_open(b, txn, ratio, short_, st)))
                return rc;

        uint32_t victims[MAX_DEAD];
        int nvictims = 0;
        MDB_cursor *cur;
        if ((rc = store_mdb_rc(mdb_cursor_open(txn, b->db_segments, &cur))))
                return rc;
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_seg r;
                if (k.mv_size != 4 || chp_rec_seg_parse(v.mv_data, v.mv_size, &r) < 0)
                        continue;
                uint32_t num = chp_get_be32(k.mv_data);
                if (r.state != CHP_REC_SEG_SEALED || (b->open_seg && b->open_seg->num == num))
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
                if ((rc = segs_rec_get(b, txn, victims[i], &r)))
                        return rc;
                if (r.live != 0)
                        continue;
                if (b->ndead == MAX_DEAD) {
                        st->more = true;
                        break;
                }
                if ((rc = segs_rec_del(b, txn, victims[i])))
                        return rc;
                st->segments_deleted++;
                queue_dead(b, victims[i]);
                victims[i] = 0; /* segment numbers start at 1 */
        }
        /* then the sparse ones, while there is room to copy into */
        for (int i = 0; i < nvictims; i++) {
                if (!victims[i])
                        continue;
                if (st->bytes_moved >= move_budget || b->ndead == MAX_DEAD) {
                        st->more = true;
                        break;
                }
                rc = gc_compact(b, txn, victims[i], st);
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
