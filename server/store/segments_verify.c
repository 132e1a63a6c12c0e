/* segments_verify.c — the segments backend's part of the scrub (every segment file against its
 * record, every chunk's place, the segment index, the live-byte accounting) and its stats. Any
 * thread, in the caller's read snapshot.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bytes.h"
#include "segments_int.h"

/* ---- verify and stats --------------------------------------------------------------------- */

struct vseg {
        uint32_t num;
        uint64_t total, live, seen_live;
        uint32_t state;
        struct chp_seg *g;
};

struct vstate {
        MDB_txn *txn;
        struct vseg *segs; /* in number order, as the index keeps them */
        size_t nsegs;
};

void chp_backend_problem(struct chp_backend_verify *v, const char *fmt, ...)
{
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        v->problem(v->ctx, msg);
}

static struct vseg *vseg_find(struct vstate *vs, uint32_t num)
{
        size_t lo = 0, hi = vs->nsegs;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (vs->segs[mid].num == num)
                        return &vs->segs[mid];
                if (vs->segs[mid].num < num)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Every segment record: its file exists and holds its committed bytes; a known state. */
int segs_verify_begin(struct chp_backend *base, MDB_txn *txn, struct chp_backend_verify *v)
{
        struct segments *b = SEGMENTS(base);
        struct vstate *vs = calloc(1, sizeof(*vs));
        if (!vs)
                return -ENOMEM;
        vs->txn = txn;
        v->state = vs;
        MDB_cursor *cur;
        int rc = mdb_cursor_open(txn, b->db_segments, &cur);
        if (rc)
                return store_mdb_rc(rc);
        MDB_val k, d;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_seg r;
                if (k.mv_size != 4 || chp_rec_seg_parse(d.mv_data, d.mv_size, &r) < 0) {
                        chp_backend_problem(v, "segments: malformed record");
                        continue;
                }
                struct vseg *n = realloc(vs->segs, (vs->nsegs + 1) * sizeof(*n));
                if (!n) {
                        mdb_cursor_close(cur);
                        return -ENOMEM;
                }
                vs->segs = n;
                struct vseg *g = &vs->segs[vs->nsegs++];
                *g = (struct vseg){.num = chp_get_be32(k.mv_data),
                                   .total = r.total,
                                   .live = r.live,
                                   .state = r.state};
                g->g = segs_get(b, g->num);
                struct stat sb;
                if (!g->g)
                        chp_backend_problem(v, "segment %u: file missing", g->num);
                else if (fstat(g->g->fd, &sb) != 0 || (uint64_t)sb.st_size < g->total)
                        chp_backend_problem(
                            v, "segment %u: file shorter than its committed %llu bytes", g->num,
                            (unsigned long long)g->total);
                if (g->state != CHP_REC_SEG_OPEN && g->state != CHP_REC_SEG_SEALED)
                        chp_backend_problem(v, "segment %u: unknown state %u", g->num, g->state);
                if (g->live > g->total)
                        chp_backend_problem(v, "segment %u: live bytes exceed total", g->num);
        }
        mdb_cursor_close(cur);
        v->units = vs->nsegs;
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

int segs_verify_chunk(struct chp_backend *base, struct chp_backend_verify *v,
                      const uint8_t addr[CHP_HASH_BYTES], const struct chp_backend_place *place,
                      uint32_t len, void *buf)
{
        struct segments *b = SEGMENTS(base);
        struct vstate *vs = v->state;
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(addr, CHP_HASH_BYTES, hex);
        struct vseg *g = vseg_find(vs, place->unit);
        if (!g || !g->g) {
                chp_backend_problem(v, "chunk %s: in unknown or missing segment %u", hex,
                                    place->unit);
                return 1;
        }
        if (place->offset + len > g->total) {
                chp_backend_problem(v, "chunk %s: past the committed end of segment %u", hex,
                                    place->unit);
                return 1;
        }
        g->seen_live += len;
        uint8_t ik[CHP_REC_SEGIDX_KEY];
        chp_rec_segidx_key(ik, place->unit, place->offset);
        MDB_val ikey = val(ik, sizeof(ik)), ival;
        if (mdb_get(vs->txn, b->db_segidx, &ikey, &ival) != 0 || ival.mv_size != CHP_HASH_BYTES ||
            memcmp(ival.mv_data, addr, CHP_HASH_BYTES))
                chp_backend_problem(v, "chunk %s: segment index entry missing or wrong", hex);
        if (segs_pread_full(g->g->fd, buf, len, place->offset) != (ssize_t)len) {
                chp_backend_problem(v, "chunk %s: cannot read %u bytes from segment %u", hex, len,
                                    place->unit);
                return 1;
        }
        return 0;
}

/* Every segment index entry belongs to a chunk that points back to it; every segment's live
 * bytes are what its chunks hold. */
int segs_verify_end(struct chp_backend *base, struct chp_backend_verify *v, bool ok)
{
        struct segments *b = SEGMENTS(base);
        struct vstate *vs = v->state;
        int rc = 0;
        if (!vs)
                return 0;
        MDB_cursor *cur = NULL;
        if (ok && (rc = mdb_cursor_open(vs->txn, b->db_segidx, &cur)) != 0)
                rc = store_mdb_rc(rc);
        MDB_val k, d;
        int op = MDB_FIRST;
        while (cur && (rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
                op = MDB_NEXT;
                if (k.mv_size != CHP_REC_SEGIDX_KEY || d.mv_size != CHP_HASH_BYTES) {
                        chp_backend_problem(v, "segment index: malformed entry");
                        continue;
                }
                uint32_t seg = chp_get_be32(k.mv_data);
                uint64_t off = chp_get_be64((const uint8_t *)k.mv_data + 4);
                struct chp_backend_place at;
                uint32_t len;
                uint64_t xxh3;
                if (b->host.chunk_get(b->host.ctx, vs->txn, d.mv_data, &at, &len, &xxh3) != 0 ||
                    at.unit != seg || at.offset != off)
                        chp_backend_problem(v,
                                            "segment index: stale entry for segment %u offset %llu",
                                            seg, (unsigned long long)off);
        }
        if (cur) {
                mdb_cursor_close(cur);
                rc = rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
        }
        for (size_t i = 0; ok && !rc && i < vs->nsegs; i++)
                if (vs->segs[i].seen_live != vs->segs[i].live)
                        chp_backend_problem(v, "segment %u: live bytes %llu but chunks hold %llu",
                                            vs->segs[i].num, (unsigned long long)vs->segs[i].live,
                                            (unsigned long long)vs->segs[i].seen_live);
        for (size_t i = 0; i < vs->nsegs; i++)
                segs_put(vs->segs[i].g);
        free(vs->segs);
        free(vs);
        v->state = NULL;
        return rc;
}

int segs_stats(struct chp_backend *base, MDB_txn *txn, struct chp_store_stats *out,
               uint64_t *chunks)
{
        struct segments *b = SEGMENTS(base);
        MDB_stat st;
        int rc = mdb_stat(txn, b->db_segidx, &st);
        if (rc)
                return store_mdb_rc(rc);
        *chunks = st.ms_entries;
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, b->db_segments, &cur)))
                return store_mdb_rc(rc);
        MDB_val k, v;
        int op = MDB_FIRST;
        while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                op = MDB_NEXT;
                struct chp_rec_seg g;
                if (chp_rec_seg_parse(v.mv_data, v.mv_size, &g) < 0)
                        continue;
                out->segments++;
                out->segment_bytes += g.total;
                out->live_bytes += g.live;
        }
        mdb_cursor_close(cur);
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}
