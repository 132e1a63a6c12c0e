/* rados_state_audit.c — the audit that lowers chunks' leases (docs/scale-out.md, "The audit:
 * lowering leases"): for each chunk of namespace c, its referrers read with the object's version,
 * each referrer's record looked at, then one write guarded by that version drops the dead keys,
 * confirms the pending file keys whose file exists and sets the lease to what the live ones need.
 * Blocking, on its caller's thread (as chp_rstate_gc), with librados calls of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "err.h"
#include "hash.h"
#include "rados_state_int.h"

#define REFS_MAX 256 /* referrers read per chunk (a dedup factor's worth: a few) */

struct ref {
        char key[2 + 2 * CHP_HASH_BYTES];
        uint64_t expires;
        uint8_t state; /* 1: pending (a commit's file key) */
        bool live, confirm;
        bool hold; /* pending, no file yet: its value may understate the commit's expiry (a
                      later refer with a shorter one overwrites it), so the lease stays */
};

/* Reads c/oid's referrers and the object's version: 0, -ENOENT, or an error. */
static int refs_read(rados_ioctx_t io, const char *oid, struct ref *refs, size_t *n,
                     uint64_t *version)
{
        rados_read_op_t op = rados_create_read_op();
        rados_omap_iter_t it = NULL;
        unsigned char more = 0;
        int prval = 0;
        rados_read_op_omap_get_vals2(op, "", NULL, REFS_MAX, &it, &more, &prval);
        rados_completion_t c;
        int rc = rados_aio_create_completion2(NULL, NULL, &c);
        if (rc == 0) {
                rc = rados_aio_read_op_operate(op, io, c, oid, 0);
                if (rc == 0) {
                        rados_aio_wait_for_complete(c);
                        rc = rados_aio_get_return_value(c);
                        *version = rados_aio_get_version(c);
                }
                rados_aio_release(c);
        }
        *n = 0;
        if (rc == 0 && prval < 0)
                rc = prval;
        if (rc == 0 && more)
                rc = -E2BIG; /* more referrers than an audit looks at: left as it is */
        char *key, *val;
        size_t klen, vlen;
        while (rc == 0 && it && rados_omap_get_next2(it, &key, &val, &klen, &vlen) == 0 && key) {
                if (klen >= sizeof(refs[0].key) || vlen != 9)
                        continue; /* not a referrer key of this design: kept */
                struct ref *r = &refs[(*n)++];
                memcpy(r->key, key, klen);
                r->key[klen] = 0;
                r->expires = chp_get_le64((const uint8_t *)val);
                r->state = (uint8_t)val[8];
                r->live = r->confirm = r->hold = false;
        }
        if (it)
                rados_omap_get_end(it);
        rados_release_read_op(op);
        return rc;
}

/* Whether the referrer's record is live (docs/scale-out.md's step 2): 0 or an error. */
static int judge(struct chp_rstate *st, struct ref *r, uint64_t now)
{
        uint64_t size;
        time_t mtime;
        char q[32];
        if (r->key[0] == 'u') {
                int rc = rados_stat(rs_io(st, NS_U), r->key + 1, &size, &mtime);
                r->live = rc == 0;
                return rc == -ENOENT ? 0 : rc;
        }
        if (r->key[0] != 'f') {
                r->live = true; /* unknown: kept */
                return 0;
        }
        int rc = rados_getxattr(rs_io(st, NS_F), r->key + 1, "q", q, sizeof(q));
        if (rc == -ENOENT) { /* no file: live only while its commit may still write it */
                r->live = r->state == 1 && r->expires >= now;
                r->hold = r->live;
                return 0;
        }
        if (rc == -ENODATA)
                rc = 0; /* no q: no tombstone */
        if (rc < 0)
                return rc;
        r->live = rc == 0; /* q set: a tombstone, dead */
        if (!r->live)
                return 0;
        /* the file's own expiry: a later commit of it with a shorter one overwrote the key's
         * value, while the file kept the longer (an extension refers the chunk first, which
         * changes its version: this audit's write would then fail) */
        char e[HEX16];
        uint64_t fe;
        rc = rados_getxattr(rs_io(st, NS_F), r->key + 1, "e", e, 16);
        if (rc == -ENOENT || rc == -ENODATA) {
                r->live = false; /* gone meanwhile, or a tombstone now */
                return 0;
        }
        if (rc < 0)
                return rc;
        if (rc == 16 && unhex16((const uint8_t *)e, 16, &fe) && fe > r->expires) {
                r->expires = fe;
                r->confirm = true; /* the key's value corrected */
        }
        r->confirm = r->confirm || r->state == 1;
        return 0;
}

int chp_rstate_audit(struct chp_rstate *st, const struct chp_rstate_audit_opts *o,
                     struct chp_rstate_audit_stats *s)
{
        memset(s, 0, sizeof(*s));
        if (!st || !o)
                return -EINVAL;
        uint64_t now = o->now ? o->now : (uint64_t)time(NULL);
        rados_ioctx_t io = rs_io(st, NS_C);
        rados_list_ctx_t lc;
        int rc = rados_nobjects_list_open(io, &lc);
        if (rc < 0)
                return rs_unavailable(rc);
        struct ref *refs = malloc(REFS_MAX * sizeof(*refs));
        if (!refs) {
                rados_nobjects_list_close(lc);
                return -ENOMEM;
        }
        const char *entry;
        int err = 0;
        while (!err && (!o->max || s->chunks < o->max) &&
               rados_nobjects_list_next(lc, &entry, NULL, NULL) == 0) {
                char oid[OID_MAX];
                uint8_t addr[CHP_HASH_BYTES];
                snprintf(oid, sizeof(oid), "%s", entry);
                if (strlen(oid) != 2 * CHP_HASH_BYTES ||
                    chp_hex_decode(oid, 2 * CHP_HASH_BYTES, addr, CHP_HASH_BYTES))
                        continue;
                s->chunks++;
                size_t n = 0;
                uint64_t v = 0;
                rc = refs_read(io, oid, refs, &n, &v);
                if (rc == -ENOENT || rc == -E2BIG)
                        continue;
                if (rc) {
                        err = rs_unavailable(rc);
                        break;
                }
                uint64_t need = 0;
                size_t dead = 0, confirm = 0;
                for (size_t i = 0; i < n && !err; i++) {
                        if ((rc = judge(st, &refs[i], now)) < 0) {
                                err = rs_unavailable(rc);
                                break;
                        }
                        if (!refs[i].live)
                                dead++;
                        else if (refs[i].expires > need)
                                need = refs[i].expires;
                        confirm += refs[i].confirm;
                }
                if (err)
                        break;
                char e[HEX16 + 1] = "";
                int el = rados_getxattr(io, oid, "e", e, HEX16 - 1);
                uint64_t lease = 0;
                bool has_lease = el == 16 && unhex16((const uint8_t *)e, 16, &lease);
                for (size_t i = 0; i < n; i++)
                        if (refs[i].hold && need < lease)
                                need = lease;
                if (!dead && !confirm && has_lease && lease == need)
                        continue;
                if (o->on_chunk)
                        o->on_chunk(o->arg, addr);
                /* the key of the new lease first: an index key may point at nothing, never a
                 * lease without its key */
                char ioid[OID_MAX], ikey[HEX16 + 2 * CHP_HASH_BYTES];
                shard_oid("cexp", addr, ioid);
                hex16(need, ikey);
                memcpy(ikey + 16, oid, 2 * CHP_HASH_BYTES + 1);
                const char *ik[] = {ikey};
                const char *iv[] = {""};
                size_t il[] = {0};
                rados_write_op_t w = rados_create_write_op();
                rados_write_op_omap_set(w, ik, iv, il, 1);
                rc = rados_write_op_operate(w, rs_io(st, NS_I), ioid, NULL, 0);
                rados_release_write_op(w);
                if (rc) {
                        err = rs_unavailable(rc);
                        break;
                }
                const char *dk[REFS_MAX], *ck[REFS_MAX], *cv[REFS_MAX];
                uint8_t vals[REFS_MAX][9];
                size_t cl[REFS_MAX], nd = 0, nc = 0;
                for (size_t i = 0; i < n; i++) {
                        if (!refs[i].live) {
                                dk[nd++] = refs[i].key;
                        } else if (refs[i].confirm) {
                                chp_put_le64(vals[nc], refs[i].expires);
                                vals[nc][8] = 0;
                                ck[nc] = refs[i].key;
                                cv[nc] = (const char *)vals[nc];
                                cl[nc++] = 9;
                        }
                }
                hex16(need, e);
                w = rados_create_write_op();
                rados_write_op_assert_version(w, v);
                if (nd)
                        rados_write_op_omap_rm_keys(w, dk, nd);
                if (nc)
                        rados_write_op_omap_set(w, ck, cv, cl, nc);
                rados_write_op_setxattr(w, "e", e, 16);
                rc = rados_write_op_operate(w, io, oid, NULL, 0);
                rados_release_write_op(w);
                if (rc == -ERANGE || rc == -EOVERFLOW || rc == -ENOENT) {
                        s->raced++; /* written (or removed) meanwhile: the next audit's */
                        continue;
                }
                if (rc) {
                        err = rs_unavailable(rc);
                        break;
                }
                s->refs_dropped += nd;
                s->refs_confirmed += nc;
                if (!has_lease || need < lease)
                        s->lowered++;
        }
        free(refs);
        rados_nobjects_list_close(lc);
        return err;
}
