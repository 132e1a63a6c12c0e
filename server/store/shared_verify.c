/* shared_verify.c — chapard verify over the shared state (docs/scale-out.md, "Verify and
 * metrics"), read-only and blocking (a tool's thread): the invariant every relay relies on, that
 * each live file's and upload's chunks exist, name it as a referrer and are leased at least until
 * it expires, and that each chunk's bytes are what its name and its h say. Synchronous librados
 * calls on the backend's cluster, one object at a time; it takes no lock, so it is meant for a
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

enum { VC, VF, VU, VI, VNS };
static const char *const ns_names[VNS] = {"c", "f", "u", "i"};

struct sverify {
        rados_ioctx_t io[VNS];
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
        int n = rados_getxattr(v->io[ns], oid, name, b, sizeof(b));
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
        int rc = xattr16(v, VC, oid, "e", &lease);
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
        rc = rados_read_op_operate(op, v->io[VC], oid, 0);
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

/* Calls fn for each object of namespace ns; fn's nonzero return stops the walk and is returned. */
static int each_object(struct sverify *v, int ns, int (*fn)(struct sverify *v, const char *oid))
{
        rados_list_ctx_t l;
        int rc = rados_nobjects_list_open(v->io[ns], &l);
        if (rc)
                return rc;
        const char *oid, *loc, *nsp;
        while ((rc = rados_nobjects_list_next(l, &oid, &loc, &nsp)) == 0) {
                char name[OID_MAX];
                snprintf(name, sizeof(name), "%s", oid);
                if ((rc = fn(v, name)))
                        break;
        }
        rados_nobjects_list_close(l);
        return rc == -ENOENT ? 0 : rc; /* -ENOENT: the listing's end */
}

static int check_file(struct sverify *v, const char *oid)
{
        uint8_t id[CHP_HASH_BYTES];
        if (strlen(oid) != 2 * CHP_HASH_BYTES || chp_hex_decode(oid, strlen(oid), id, sizeof(id))) {
                problem(v, "file object %s: not a file id", oid);
                return 0;
        }
        uint64_t since;
        int rc = xattr16(v, VF, oid, "q", &since);
        uint8_t *rec = NULL;
        size_t len = 0;
        if (rc == 0) { /* a tombstone: no data, and on the operator's list */
                if ((rc = read_all(v->io[VF], oid, RECORD_MAX, &rec, &len)))
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
                rc = rados_read_op_operate(op, v->io[VI], "quarantine", 0);
                if ((rc == 0 && rv == 0 && rados_omap_iter_size(it) != 1) || rc == -ENOENT)
                        problem(v, "file %s: a tombstone not on the quarantine list", oid);
                if (it)
                        rados_omap_get_end(it);
                rados_release_read_op(op);
                return rc == -ENOENT ? 0 : rc;
        }
        if (rc != -ENODATA && rc != CHP_ECORRUPT)
                return rc == -ENOENT ? 0 : rc; /* gone since the listing */
        if ((rc = read_all(v->io[VF], oid, RECORD_MAX, &rec, &len)))
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
        } else if (xattr16(v, VF, oid, "e", &e) != 0 || e != f.expires) {
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

static int check_upload(struct sverify *v, const char *oid)
{
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
        int rc = read_all(v->io[VU], oid, RECORD_MAX, &rec, &len);
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
                rc = rados_read_op_operate(op, v->io[VU], oid, 0);
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

static int check_chunk(struct sverify *v, const char *oid)
{
        uint8_t addr[CHP_HASH_BYTES], got[CHP_HASH_BYTES];
        if (strlen(oid) != 2 * CHP_HASH_BYTES ||
            chp_hex_decode(oid, strlen(oid), addr, sizeof(addr))) {
                problem(v, "chunk object %s: not an address", oid);
                return 0;
        }
        int n = rados_read(v->io[VC], oid, (char *)v->buf, CHP_CHUNK_MAX + 1, 0);
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
        else if (xattr16(v, VC, oid, "h", &h) != 0 || h != chp_xxh3(v->buf, (size_t)n))
                problem(v, "chunk %s: its h is not the XXH3 of its bytes", oid);
        /* referenced by nothing: GC removes it once its lease and gc_grace are past */
        rados_read_op_t op = rados_create_read_op();
        if (!op)
                return -ENOMEM;
        rados_omap_iter_t it = NULL;
        unsigned char more = 0;
        int rv = 0;
        rados_read_op_omap_get_keys2(op, "", 1, &it, &more, &rv);
        rc = rados_read_op_operate(op, v->io[VC], oid, 0);
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
        rados_t cluster = chp_rados_cluster(s->backend);
        if (!cluster)
                return -EINVAL;
        struct sverify v = {.fn = fn, .ctx = ctx};
        int rc = 0;
        for (int i = 0; i < VNS && !rc; i++) {
                rc = rados_ioctx_create(cluster, s->opts.rados_pool, &v.io[i]);
                if (rc)
                        v.io[i] = NULL;
                else
                        rados_ioctx_set_namespace(v.io[i], ns_names[i]);
        }
        if (!rc && !(v.buf = malloc(CHP_CHUNK_MAX + 1)))
                rc = -ENOMEM;
        if (!rc)
                rc = each_object(&v, VF, check_file);
        if (!rc)
                rc = each_object(&v, VU, check_upload);
        if (!rc)
                rc = each_object(&v, VC, check_chunk);
        for (int i = 0; i < VNS; i++)
                if (v.io[i])
                        rados_ioctx_destroy(v.io[i]);
        free(v.buf);
        if (rc)
                return rs_unavailable(rc);
        *stats = v.st;
        return 0;
}
