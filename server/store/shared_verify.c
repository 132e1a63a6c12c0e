/* shared_verify.c — chapard verify over the shared state (docs/scale-out.md, "Verify and
 * metrics"), read-only and blocking (a tool's thread): the invariant every relay relies on, that
 * each live file's and upload's chunks exist, name it as a referrer and are leased at least until
 * it expires, and that each chunk's bytes are what its name and its h say. Synchronous librados
 * calls on the store's handle (rs_io), one object at a time; it takes no lock, so it is meant for a
 * pool at rest (a relay writing meanwhile may show a commit half done).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>

#include "bytes.h"
#include "hash.h"
#include "manifest.h"
#include "rados_state_int.h"
#include "shared_int.h"
#include "xxh.h"

#define RECORD_MAX (64u << 20) /* a file record: a manifest of a million chunks and change */

struct sverify {
        struct store_shared *sh; /* its handle's I/O contexts (rs_io) */
        chp_verify_problem_fn fn;
        void *ctx;
        struct chp_verify_stats st;
        uint8_t *buf; /* CHP_CHUNK_MAX + 1 */
};

static void problem(struct sverify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(struct sverify *v, const char *fmt, ...)
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

/* An xattr of 16 hex digits (a lease, an expiry, an XXH3): 0, -ENODATA when absent or "",
 * CHP_ECORRUPT when not 16 hex digits, or librados' error. */
static int xattr16(struct sverify *v, int ns, const char *oid, const char *name, uint64_t *out)
{
        char b[32];
        int n = rados_getxattr(rs_io(v->sh->st, ns), oid, name, b, sizeof(b));
        if (n < 0)
                return n;
        if (n == 0)
                return -ENODATA;
        return unhex16((const uint8_t *)b, (size_t)n, out) ? 0 : CHP_ECORRUPT;
}

/* Whether chunk addr names the referrer key (kind + id hex) with a lease of at least until:
 * reports what is wrong, as owner's chunk i. The cluster not answering: its code. */
static int check_ref(struct sverify *v, const char *owner, uint32_t i,
                     const uint8_t addr[CHP_HASH_BYTES], const char *key, uint64_t until)
{
        char oid[2 * CHP_HASH_BYTES + 1];
        chp_hex_encode(addr, CHP_HASH_BYTES, oid);
        uint64_t lease;
        int rc = xattr16(v, NS_C, oid, "e", &lease);
        if (rc == -ENOENT) {
                problem(v, "%s: chunk %u (%s) is not stored", owner, i, oid);
                return 0;
        }
        if (rc == -ENODATA || rc == CHP_ECORRUPT) {
                problem(v, "chunk %s: no lease (e)", oid);
                return 0;
        }
        if (rc)
                return rc;
        if (lease < until)
                problem(v, "%s: chunk %u (%s) is leased until %llu, before it expires (%llu)",
                        owner, i, oid, (unsigned long long)lease, (unsigned long long)until);
        rados_read_op_t op = rados_create_read_op();
        if (!op)
                return -ENOMEM;
        rados_omap_iter_t it = NULL;
        int rv = 0;
        const char *keys[] = {key};
        size_t lens[] = {strlen(key)};
        rados_read_op_omap_get_vals_by_keys2(op, keys, 1, lens, &it, &rv);
        rc = rados_read_op_operate(op, rs_io(v->sh->st, NS_C), oid, 0);
        if (!rc && !rv && rados_omap_iter_size(it) != 1)
                problem(v, "%s: chunk %u (%s) does not name it as a referrer", owner, i, oid);
        if (it)
                rados_omap_get_end(it);
        rados_release_read_op(op);
        return rc ? rc : rv;
}

/* Reads a whole object into *out (malloc'd, *len bytes; at most max): 0, -EFBIG, or librados'. */
static int read_all(rados_ioctx_t io, const char *oid, size_t max, uint8_t **out, size_t *len)
{
        uint64_t size;
        time_t mtime;
        int rc = rados_stat(io, oid, &size, &mtime);
        if (rc)
                return rc;
        if (size > max)
                return -EFBIG;
        uint8_t *b = malloc(size ? size : 1);
        if (!b)
                return -ENOMEM;
        int n = size ? rados_read(io, oid, (char *)b, size, 0) : 0;
        if (n < 0) {
                free(b);
                return n;
        }
        *out = b;
        *len = (size_t)n;
        return 0;
}

static int check_file(void *ctx, const char *oid)
{
        struct sverify *v = ctx;
        uint8_t id[CHP_HASH_BYTES];
        if (strlen(oid) != 2 * CHP_HASH_BYTES || chp_hex_decode(oid, strlen(oid), id, sizeof(id))) {
                problem(v, "file object %s: not a file id", oid);
                return 0;
        }
        uint64_t since;
        int rc = xattr16(v, NS_F, oid, "q", &since);
        uint8_t *rec = NULL;
        size_t len = 0;
        if (rc == 0) { /* a tombstone: no data, and on the operator's list */
                if ((rc = read_all(rs_io(v->sh->st, NS_F), oid, RECORD_MAX, &rec, &len)))
                        return rc == -ENOENT ? 0 : rc;
                free(rec);
                if (len)
                        problem(v, "file %s: quarantined, but its record is still there", oid);
                rados_read_op_t op = rados_create_read_op();
                if (!op)
                        return -ENOMEM;
                rados_omap_iter_t it = NULL;
                int rv = 0;
                const char *keys[] = {oid};
                size_t lens[] = {strlen(oid)};
                rados_read_op_omap_get_vals_by_keys2(op, keys, 1, lens, &it, &rv);
                rc = rados_read_op_operate(op, rs_io(v->sh->st, NS_I), "quarantine", 0);
                if ((rc == 0 && rv == 0 && rados_omap_iter_size(it) != 1) || rc == -ENOENT)
                        problem(v, "file %s: a tombstone not on the quarantine list", oid);
                if (it)
                        rados_omap_get_end(it);
                rados_release_read_op(op);
                return rc == -ENOENT ? 0 : rc;
        }
        if (rc != -ENODATA && rc != CHP_ECORRUPT)
                return rc == -ENOENT ? 0 : rc; /* gone since the listing */
        if ((rc = read_all(rs_io(v->sh->st, NS_F), oid, RECORD_MAX, &rec, &len)))
                return rc == -ENOENT  ? 0
                       : rc == -EFBIG ? (problem(v, "file %s: too big", oid), 0)
                                      : rc;
        v->st.files++;
        struct chp_rec_file f;
        struct chp_manifest m;
        uint8_t got[CHP_HASH_BYTES];
        uint64_t e;
        if (chp_rec_file_parse(rec, len, &f) < 0) {
                problem(v, "file %s: its record does not parse", oid);
        } else if (chp_manifest_decode(f.manifest, f.manifest_len, &m) < 0) {
                problem(v, "file %s: its manifest does not parse", oid);
        } else if (chp_sha256(f.manifest, f.manifest_len, got) || memcmp(got, id, sizeof(id))) {
                problem(v, "file %s: its manifest's hash is not its id", oid);
        } else if (xattr16(v, NS_F, oid, "e", &e) != 0 || e != f.expires) {
                problem(v, "file %s: its e is not its record's expiry", oid);
        } else {
                char key[2 + 2 * CHP_HASH_BYTES];
                key[0] = 'f';
                memcpy(key + 1, oid, 2 * CHP_HASH_BYTES + 1);
                uint64_t until = f.expires ? f.expires : CHP_RSTATE_NEVER;
                for (uint32_t i = 0; i < m.chunk_count && !rc; i++)
                        rc = check_ref(v, oid, i, m.addrs + (size_t)i * CHP_HASH_BYTES, key, until);
        }
        free(rec);
        return rc;
}

static int check_upload(void *ctx, const char *oid)
{
        struct sverify *v = ctx;
        size_t n = strlen(oid);
        if (n == 2 * CHP_UPLOAD_ID_BYTES + 2 && strcmp(oid + n - 2, ".t") == 0)
                return 0; /* a tus offset object: its upload's */
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        if (n != 2 * CHP_UPLOAD_ID_BYTES || chp_hex_decode(oid, n, id, sizeof(id))) {
                problem(v, "upload object %s: not an upload id", oid);
                return 0;
        }
        uint8_t *rec = NULL;
        size_t len = 0;
        int rc = read_all(rs_io(v->sh->st, NS_U), oid, RECORD_MAX, &rec, &len);
        if (rc)
                return rc == -ENOENT ? 0 : rc;
        v->st.uploads++;
        struct chp_rec_upload u;
        if (chp_rec_upload_parse(rec, len, &u) < 0) {
                problem(v, "upload %s: its record does not parse", oid);
                free(rec);
                return 0;
        }
        uint64_t until = u.expires ? u.expires : CHP_RSTATE_NEVER;
        free(rec);
        char key[2 + 2 * CHP_HASH_BYTES];
        key[0] = 'u';
        memcpy(key + 1, oid, n + 1);
        char after[16] = "";
        unsigned char more = 1;
        while (more && !rc) {
                rados_read_op_t op = rados_create_read_op();
                if (!op)
                        return -ENOMEM;
                rados_omap_iter_t it = NULL;
                int rv = 0;
                rados_read_op_omap_get_vals2(op, after, NULL, 256, &it, &more, &rv);
                rc = rados_read_op_operate(op, rs_io(v->sh->st, NS_U), oid, 0);
                if (!rc)
                        rc = rv;
                char *k, *val;
                size_t klen, vlen;
                while (!rc && rados_omap_get_next2(it, &k, &val, &klen, &vlen) == 0 && k) {
                        uint64_t index;
                        if (klen != 8 || vlen != CHP_HASH_BYTES) {
                                problem(v, "upload %s: a chunk entry that does not parse", oid);
                                continue;
                        }
                        memcpy(after, k, 8);
                        after[8] = '\0';
                        index = strtoull(after, NULL, 16);
                        rc = check_ref(v, oid, (uint32_t)index, (const uint8_t *)val, key, until);
                }
                if (it)
                        rados_omap_get_end(it);
                rados_release_read_op(op);
        }
        return rc == -ENOENT ? 0 : rc;
}

static int check_chunk(void *ctx, const char *oid)
{
        struct sverify *v = ctx;
        uint8_t addr[CHP_HASH_BYTES], got[CHP_HASH_BYTES];
        if (strlen(oid) != 2 * CHP_HASH_BYTES ||
            chp_hex_decode(oid, strlen(oid), addr, sizeof(addr))) {
                problem(v, "chunk object %s: not an address", oid);
                return 0;
        }
        int n = rados_read(rs_io(v->sh->st, NS_C), oid, (char *)v->buf, CHP_CHUNK_MAX + 1, 0);
        if (n == -ENOENT)
                return 0; /* removed since the listing */
        if (n < 0)
                return n;
        v->st.chunks++;
        v->st.bytes += (uint64_t)n;
        uint64_t h;
        int rc;
        if ((size_t)n > CHP_CHUNK_MAX)
                problem(v, "chunk %s: longer than a chunk may be", oid);
        else if ((rc = chp_sha256(v->buf, (size_t)n, got)))
                return rc;
        else if (memcmp(got, addr, sizeof(addr)))
                problem(v, "chunk %s: its bytes do not hash to its name", oid);
        else if (xattr16(v, NS_C, oid, "h", &h) != 0 || h != chp_xxh3(v->buf, (size_t)n))
                problem(v, "chunk %s: its h is not the XXH3 of its bytes", oid);
        /* referenced by nothing: GC removes it once its lease and gc_grace are past */
        rados_read_op_t op = rados_create_read_op();
        if (!op)
                return -ENOMEM;
        rados_omap_iter_t it = NULL;
        unsigned char more = 0;
        int rv = 0;
        rados_read_op_omap_get_keys2(op, "", 1, &it, &more, &rv);
        rc = rados_read_op_operate(op, rs_io(v->sh->st, NS_C), oid, 0);
        if (!rc && !rv && rados_omap_iter_size(it) == 0)
                v->st.unreferenced++;
        if (it)
                rados_omap_get_end(it);
        rados_release_read_op(op);
        return rc == -ENOENT ? 0 : rc ? rc : rv;
}

int shared_verify(struct chp_store *s, chp_verify_problem_fn fn, void *ctx,
                  struct chp_verify_stats *stats)
{
        memset(stats, 0, sizeof(*stats));
        struct sverify v = {.sh = s->shared, .fn = fn, .ctx = ctx};
        int rc = (v.buf = malloc(CHP_CHUNK_MAX + 1)) ? 0 : -ENOMEM;
        if (!rc)
                rc = shared_each_object(v.sh, NS_F, check_file, &v);
        if (!rc)
                rc = shared_each_object(v.sh, NS_U, check_upload, &v);
        if (!rc)
                rc = shared_each_object(v.sh, NS_C, check_chunk, &v);
        free(v.buf);
        if (rc)
                return rs_unavailable(rc);
        *stats = v.st;
        return 0;
}
