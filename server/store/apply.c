/* apply.c — what each request does to the index, inside the batch's nested transaction: chunk
 * puts and references, file commits and deletes, upload sessions, kept tails. Writer thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "log.h"
#include "manifest.h"
#include "store_int.h"
#include "xxh.h"

int store_chunk_free(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                     uint64_t *freed, uint64_t *bytes)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        int rc = mdb_get(txn, s->db_chunks, &k, &v);
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return store_mdb_rc(rc);
        struct chp_rec_chunk c;
        if ((rc = parse_chunk(&v, &c)))
                return rc;
        if (c.kind == CHP_REC_CHUNK_SEG) {
                struct chp_backend_place at = chunk_place(&c, addr);
                if ((rc = s->backend->ops->drop(s->backend, txn, &at, c.len)))
                        return rc;
        }
        if ((rc = store_mdb_rc(mdb_del(txn, s->db_chunks, &k, NULL))) ||
            (rc = store_orphan_forget(s, txn, addr)))
                return rc;
        if (freed)
                (*freed)++;
        if (bytes)
                *bytes += c.len;
        return 0;
}

/* Removes a chunk whose last reference went away. */
static int chunk_free(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                      struct chp_gc_stats *st)
{
        return store_chunk_free(s, txn, addr, st ? &st->chunks_freed : NULL,
                                st ? &st->bytes_freed : NULL);
}

/* The backend's view of a chunk record: -ENOENT unless the chunk is stored in the backend. */
int store_chunk_get(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                    struct chp_backend_place *place, uint32_t *len, uint64_t *xxh3)
{
        struct chp_store *s = ctx;
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        struct chp_rec_chunk c;
        int rc = store_mdb_rc(mdb_get(txn, s->db_chunks, &k, &v));
        if (rc || (rc = parse_chunk(&v, &c)))
                return rc;
        if (c.kind != CHP_REC_CHUNK_SEG)
                return -ENOENT;
        *place = chunk_place(&c, addr);
        *len = c.len;
        *xxh3 = c.xxh3;
        return 0;
}

/* Records that chunk addr's bytes are at place in the backend (a put, or a move by reclaim). */
int store_chunk_moved(void *ctx, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES],
                      const struct chp_backend_place *place, uint32_t len, uint64_t xxh3)
{
        struct chp_store *s = ctx;
        uint8_t rec[CHP_REC_CHUNK_BYTES];
        chp_rec_chunk_encode(rec, CHP_REC_CHUNK_SEG, len, xxh3, place->unit, place->offset);
        MDB_val k = val(addr, CHP_HASH_BYTES), v = val(rec, sizeof(rec));
        return store_mdb_rc(mdb_put(txn, s->db_chunks, &k, &v, 0));
}

/* Adds delta to a chunk's reference count; at zero the chunk is freed. */
static int ref_add(struct chp_store *s, MDB_txn *txn, const uint8_t addr[CHP_HASH_BYTES], int delta,
                   struct chp_gc_stats *st)
{
        MDB_val k = val(addr, CHP_HASH_BYTES), v;
        uint64_t count = 0;
        int rc = mdb_get(txn, s->db_refs, &k, &v);
        if (rc == 0) {
                if (chp_rec_refs_parse(v.mv_data, v.mv_size, &count) < 0)
                        return CHP_ECORRUPT;
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        }
        if (delta < 0 && count == 0) {
                chp_log_warn("store", "reference count drift: releasing an unreferenced chunk");
                return chunk_free(s, txn, addr, st);
        }
        count = delta < 0 ? count - 1 : count + 1;
        if (count == 0) {
                if ((rc = store_mdb_rc(mdb_del(txn, s->db_refs, &k, NULL))))
                        return rc;
                return chunk_free(s, txn, addr, st);
        }
        uint8_t c[CHP_REC_REFS_BYTES];
        chp_rec_refs_encode(c, count);
        v = val(c, sizeof(c));
        return store_mdb_rc(mdb_put(txn, s->db_refs, &k, &v, 0));
}

static int drop_prefixed(struct chp_store *s, MDB_txn *txn, MDB_dbi db,
                         const uint8_t id[CHP_UPLOAD_ID_BYTES], struct chp_gc_stats *st);

static int upload_exists(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES])
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        return store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v));
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
                /* whoever put it means to attach it: an orphan's grace starts over */
                if ((rc = store_orphan_forget(s, txn, req->u.put.addr)))
                        return rc;
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        } else if (!req->u.put.data) {
                return CHP_EMISSING;
        } else {
                uint32_t len = req->u.put.len;
                uint64_t sum = chp_xxh3(req->u.put.data, len);
                if (len <= s->opts.inline_max) {
                        if ((rc = store_space_take(s, CHP_REC_CHUNK_BYTES + (uint64_t)len, false)))
                                return rc;
                        v.mv_size = CHP_REC_CHUNK_BYTES + (size_t)len;
                        if ((rc = store_mdb_rc(mdb_put(txn, s->db_chunks, &k, &v, MDB_RESERVE))))
                                return rc;
                        chp_rec_chunk_encode(v.mv_data, CHP_REC_CHUNK_INLINE, len, sum, 0, 0);
                        memcpy((uint8_t *)v.mv_data + CHP_REC_CHUNK_BYTES, req->u.put.data, len);
                } else {
                        struct chp_backend_place at;
                        if ((rc = s->backend->ops->put(s->backend, txn, req->u.put.addr,
                                                       req->u.put.data, len, &at)))
                                return rc;
                        if ((rc = store_chunk_moved(s, txn, req->u.put.addr, &at, len, sum)))
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
                        return req->u.put.clear_tail
                                   ? drop_prefixed(s, txn, s->db_tails, req->u.put.upload_id, NULL)
                                   : 0; /* a resend the upload has already */
                /* the client replaced this index with other bytes: release the old ones */
                memcpy(old, uval.mv_data, CHP_HASH_BYTES);
                replaced = true;
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        }
        if ((rc = ref_add(s, txn, req->u.put.addr, +1, NULL)))
                return rc;
        if (replaced && (rc = ref_add(s, txn, old, -1, NULL)))
                return rc;
        if (req->u.put.clear_tail &&
            (rc = drop_prefixed(s, txn, s->db_tails, req->u.put.upload_id, NULL)))
                return rc;
        uval = val(req->u.put.addr, CHP_HASH_BYTES);
        return store_mdb_rc(mdb_put(txn, s->db_upchunks, &ukey, &uval, 0));
}

/* ---- writer: files and uploads ------------------------------------------------------------ */

static int expiry_set(struct chp_store *s, MDB_txn *txn, uint64_t expires, char kind,
                      const uint8_t *id, size_t idlen, bool add)
{
        if (!expires)
                return 0;
        uint8_t k[CHP_REC_EXPIRY_KEY_MAX];
        MDB_val key = val(k, chp_rec_expiry_key(k, expires, kind, id, idlen)), v = val("", 0);
        int rc =
            add ? mdb_put(txn, s->db_expiry, &key, &v, 0) : mdb_del(txn, s->db_expiry, &key, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
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
                struct chp_rec_file f;
                if ((rc = parse_file(&v, &f)))
                        return rc;
                uint64_t old = f.expires;
                if (old != 0 && (expires == 0 || expires > old)) {
                        uint8_t *copy = malloc(v.mv_size);
                        if (!copy)
                                return -ENOMEM;
                        memcpy(copy, v.mv_data, v.mv_size);
                        chp_rec_file_set_expires(copy, expires);
                        MDB_val nv = val(copy, v.mv_size);
                        rc = store_mdb_rc(mdb_put(txn, s->db_files, &k, &nv, 0));
                        free(copy);
                        if (!rc)
                                rc = expiry_set(s, txn, old, CHP_REC_EXPIRY_FILE, k.mv_data,
                                                CHP_HASH_BYTES, false);
                        if (!rc)
                                rc = expiry_set(s, txn, expires, CHP_REC_EXPIRY_FILE, k.mv_data,
                                                CHP_HASH_BYTES, true);
                        if (rc)
                                return rc;
                }
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        } else {
                if ((rc = store_quarantine_check(s, txn, req->u.commit.file_id)))
                        return rc;
                for (uint32_t i = 0; i < m.chunk_count; i++) {
                        MDB_val ck = val(m.addrs + (size_t)i * CHP_HASH_BYTES, CHP_HASH_BYTES), cv;
                        rc = mdb_get(txn, s->db_chunks, &ck, &cv);
                        if (rc == MDB_NOTFOUND)
                                return CHP_EMISSING;
                        if (rc)
                                return store_mdb_rc(rc);
                }
                for (uint32_t i = 0; i < m.chunk_count; i++)
                        if ((rc = ref_add(s, txn, m.addrs + (size_t)i * CHP_HASH_BYTES, +1, NULL)))
                                return rc;
                v.mv_size = CHP_REC_FILE_BYTES + tlen + len;
                if ((rc = store_mdb_rc(mdb_put(txn, s->db_files, &k, &v, MDB_RESERVE))))
                        return rc;
                uint8_t *p = v.mv_data;
                uint64_t created = (uint64_t)time(NULL);
                chp_rec_file_encode(p, (uint8_t)tlen, (uint32_t)len, created, expires,
                                    m.total_size);
                memcpy(p + CHP_REC_FILE_BYTES, tenant, tlen);
                memcpy(p + CHP_REC_FILE_BYTES + tlen, enc, len);
                if ((rc = store_index_file(s, txn, req->u.commit.file_id, tenant, tlen, created,
                                           true)))
                        return rc;
                if ((rc = expiry_set(s, txn, expires, CHP_REC_EXPIRY_FILE, req->u.commit.file_id,
                                     CHP_HASH_BYTES, true)))
                        return rc;
                struct usage_delta d = {.stored_bytes = (int64_t)m.total_size, .files = 1};
                if ((rc = store_usage_add(s, txn, tenant, tlen, &d)))
                        return rc;
        }
        return 0;
}

static int filemeta_drop(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES])
{
        MDB_val k = val(id, CHP_HASH_BYTES);
        int rc = mdb_del(txn, s->db_filemeta, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_mdb_rc(rc);
}

int store_file_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_HASH_BYTES],
                      struct chp_gc_stats *st)
{
        MDB_val k = val(id, CHP_HASH_BYTES), v;
        int rc = mdb_get(txn, s->db_files, &k, &v);
        if (rc)
                return store_mdb_rc(rc);
        struct chp_rec_file f;
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
        uint64_t expires = f.expires, created = f.created;
        char tenant[CHP_TENANT_MAX];
        size_t tlen = f.tenant_len;
        memcpy(tenant, f.tenant, tlen);
        struct usage_delta d = {.stored_bytes = -(int64_t)f.size, .files = -1};
        rc = store_mdb_rc(mdb_del(txn, s->db_files, &k, NULL));
        if (!rc)
                rc = store_index_file(s, txn, id, tenant, tlen, created, false);
        if (!rc)
                rc = store_usage_add(s, txn, tenant, tlen, &d);
        if (!rc)
                rc = filemeta_drop(s, txn, id);
        for (uint32_t i = 0; !rc && i < m.chunk_count; i++)
                rc = ref_add(s, txn, addrs + (size_t)i * CHP_HASH_BYTES, -1, st);
        free(addrs);
        if (!rc)
                rc = expiry_set(s, txn, expires, CHP_REC_EXPIRY_FILE, id, CHP_HASH_BYTES, false);
        return rc;
}

/* Deletes every entry of db whose key starts with the 16-byte upload id, calling each(addr) for
 * upchunks so that references are released. */
static int drop_prefixed(struct chp_store *s, MDB_txn *txn, MDB_dbi db,
                         const uint8_t id[CHP_UPLOAD_ID_BYTES], struct chp_gc_stats *st)
{
        MDB_cursor *cur;
        int rc = store_mdb_rc(mdb_cursor_open(txn, db, &cur));
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
        return store_mdb_rc(rc);
}

/* Releases what an upload holds: its chunk references, kept tail, and pending entry. */
static int upload_release(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                          const struct chp_rec_upload *u, struct chp_gc_stats *st)
{
        int rc;
        if (u->flags & CHP_REC_UPLOAD_HAS_MANIFEST) {
                MDB_val pk = val(u->file_id, CHP_HASH_BYTES), pv;
                if (mdb_get(txn, s->db_pending, &pk, &pv) == 0 &&
                    pv.mv_size == CHP_UPLOAD_ID_BYTES &&
                    memcmp(pv.mv_data, id, CHP_UPLOAD_ID_BYTES) == 0 &&
                    (rc = store_mdb_rc(mdb_del(txn, s->db_pending, &pk, NULL))))
                        return rc;
        }
        if ((rc = drop_prefixed(s, txn, s->db_tails, id, st)))
                return rc;
        return drop_prefixed(s, txn, s->db_upchunks, id, st);
}

int store_upload_delete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                        struct chp_gc_stats *st)
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        int rc = mdb_get(txn, s->db_uploads, &k, &v);
        if (rc)
                return store_mdb_rc(rc);
        struct chp_rec_upload u;
        if ((rc = parse_upload_rec(&v, &u)))
                return rc;
        uint8_t file_id[CHP_HASH_BYTES];
        memcpy(file_id, u.file_id, CHP_HASH_BYTES); /* the value moves once we write */
        u.file_id = file_id;
        char tenant[CHP_TENANT_MAX];
        memcpy(tenant, u.tenant, u.tenant_len);
        u.tenant = NULL;
        struct usage_delta d = {0};
        store_usage_of_upload(&u, -1, &d);
        if ((rc = store_mdb_rc(mdb_del(txn, s->db_uploads, &k, NULL))) ||
            (rc = store_usage_add(s, txn, tenant, u.tenant_len, &d)))
                return rc;
        if ((rc = expiry_set(s, txn, u.expires, CHP_REC_EXPIRY_UPLOAD, id, CHP_UPLOAD_ID_BYTES,
                             false)))
                return rc;
        return upload_release(s, txn, id, &u, st);
}

/* Marks an upload complete (file id recorded) and releases what it held; the record stays
 * until it expires so that a client asking about the upload learns where its file went. */
static int upload_complete(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                           const uint8_t file_id[CHP_HASH_BYTES], uint64_t keep_expires)
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct chp_rec_upload u;
        int rc = store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v));
        if (rc || (rc = parse_upload_rec(&v, &u)))
                return rc;
        uint8_t *copy = malloc(v.mv_size);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, v.mv_data, v.mv_size);
        chp_rec_upload_set_complete(copy, file_id);
        /* keep_expires (commit): the kept record lives from now on as long as asked */
        uint64_t expires = keep_expires == UINT64_MAX ? 0 : keep_expires;
        if (keep_expires && expires != u.expires) {
                chp_rec_upload_set_expires(copy, expires);
                if ((rc = expiry_set(s, txn, u.expires, CHP_REC_EXPIRY_UPLOAD, id,
                                     CHP_UPLOAD_ID_BYTES, false)) ||
                    (rc = expiry_set(s, txn, expires, CHP_REC_EXPIRY_UPLOAD, id,
                                     CHP_UPLOAD_ID_BYTES, true))) {
                        free(copy);
                        return rc;
                }
        }
        MDB_val nv = val(copy, v.mv_size);
        uint8_t old_file[CHP_HASH_BYTES];
        memcpy(old_file, u.file_id, CHP_HASH_BYTES);
        u.file_id = old_file;
        char tenant[CHP_TENANT_MAX];
        memcpy(tenant, u.tenant, u.tenant_len);
        u.tenant = NULL;
        struct usage_delta d = {0};
        store_usage_of_upload(&u, -1, &d); /* nothing if it was complete already */
        rc = store_mdb_rc(mdb_put(txn, s->db_uploads, &k, &nv, 0));
        if (!rc)
                rc = store_usage_add(s, txn, tenant, u.tenant_len, &d);
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
                        return store_mdb_rc(rc);
                rc = mdb_get(txn, s->db_chunks, &ak, &d);
                if (rc == MDB_NOTFOUND)
                        continue;
                if (rc)
                        return store_mdb_rc(rc);
                if ((rc = ref_add(s, txn, addr, +1, NULL)))
                        return rc;
                d = val(addr, CHP_HASH_BYTES);
                if ((rc = store_mdb_rc(mdb_put(txn, s->db_upchunks, &ukey, &d, 0))))
                        return rc;
        }
        return 0;
}

/* Whether `sessions` more upload sessions (1 new, or 0 for a re-created one) adding `declared`
 * known bytes fit tenant's limits; CHP_EQUOTA and *hit say which they would pass. */
static int quota_check(struct chp_store *s, MDB_txn *txn, const char *tenant, size_t tlen,
                       const struct chp_store_quota *q, uint64_t declared, uint64_t sessions,
                       enum chp_store_quota_hit *hit)
{
        struct chp_tenant_usage use;
        int rc = store_usage_get(s, txn, tenant, tlen, &use);
        if (rc)
                return rc;
        return store_quota_fits(&use, q, declared, sessions, hit);
}

/* Whether the upload u (a request's) may resume the recorded upload r: r was begun with no
 * subject (by the relay's own, or recorded before subjects), or u has none (a trusted caller or
 * a federation fetch: the operator's own), or both have the same tenant and subject. */
static bool resume_allowed(const struct chp_rec_upload *r, const struct chp_upload *u, size_t tlen,
                           size_t slen)
{
        if (r->subject_len == 0 || slen == 0)
                return true;
        return r->tenant_len == tlen && memcmp(r->tenant, u->tenant, tlen) == 0 &&
               r->subject_len == slen && memcmp(r->subject, u->subject, slen) == 0;
}

static int apply_upload_create(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        const struct chp_upload *u = req->u.upload_create.upload;
        const uint8_t *enc = req->u.upload_create.manifest;
        size_t enc_len = enc ? req->u.upload_create.manifest_len : 0;
        size_t tlen = strnlen(u->tenant, CHP_TENANT_MAX + 1);
        size_t slen = strnlen(u->subject, CHP_TOKEN_SUBJECT_MAX + 1);
        if (tlen > CHP_TENANT_MAX || slen > CHP_TOKEN_SUBJECT_MAX ||
            u->meta_len > CHP_UPLOAD_META_MAX || u->chunk_size < CHP_CHUNK_MIN ||
            u->chunk_size > CHP_CHUNK_MAX || (u->chunk_size & (u->chunk_size - 1)))
                return -EINVAL;
        struct chp_manifest m;
        uint8_t file_id[CHP_HASH_BYTES];
        int rc;
        memcpy(req->u.upload_create.upload_id, u->id, CHP_UPLOAD_ID_BYTES);
        req->u.upload_create.quota_hit = CHP_QUOTA_NONE;
        if (enc) {
                if (chp_manifest_decode(enc, enc_len, &m) < 0 || m.chunk_size != u->chunk_size)
                        return -EBADMSG;
                if ((rc = chp_manifest_id(enc, enc_len, file_id)))
                        return rc;
                memcpy(req->u.upload_create.file_id, file_id, CHP_HASH_BYTES);
                if ((rc = store_quarantine_check(s, txn, file_id)))
                        return rc;
                MDB_val fk = val(file_id, CHP_HASH_BYTES), d;
                if ((rc = mdb_get(txn, s->db_files, &fk, &d)) == 0) {
                        req->u.upload_create.complete = true;
                        return 0;
                }
                if (rc != MDB_NOTFOUND)
                        return store_mdb_rc(rc);
                if ((rc = mdb_get(txn, s->db_pending, &fk, &d)) == 0 &&
                    d.mv_size == CHP_UPLOAD_ID_BYTES) {
                        uint8_t existing[CHP_UPLOAD_ID_BYTES];
                        memcpy(existing, d.mv_data, CHP_UPLOAD_ID_BYTES);
                        MDB_val ek = val(existing, CHP_UPLOAD_ID_BYTES);
                        if (mdb_get(txn, s->db_uploads, &ek, &d) == 0) {
                                struct chp_rec_upload old;
                                if ((rc = parse_upload_rec(&d, &old)))
                                        return rc;
                                /* before anything is attached: a refusal changes nothing */
                                if (!resume_allowed(&old, u, tlen, slen))
                                        return CHP_ETOKEN_SUBJECT;
                                req->u.upload_create.resumed = true;
                                memcpy(req->u.upload_create.upload_id, existing,
                                       CHP_UPLOAD_ID_BYTES);
                                return attach_existing(s, txn, existing, &m);
                        }
                } else if (rc && rc != MDB_NOTFOUND) {
                        return store_mdb_rc(rc);
                }
        }
        uint64_t declared = enc ? m.total_size : u->declared_size;
        uint64_t known = declared == CHP_UPLOAD_SIZE_UNKNOWN ? 0 : declared;
        const struct chp_store_quota *quota = req->u.upload_create.quota;
        uint64_t now = quota ? quota->now : u->created ? u->created : (uint64_t)time(NULL);
        /* the new record's part of its tenant's usage (a replaced record's part goes) */
        struct usage_delta add = {.incomplete = 1,
                                  .incomplete_bytes = (int64_t)known,
                                  .day = now / 86400,
                                  .day_bytes = known};
        MDB_val k = val(u->id, CHP_UPLOAD_ID_BYTES), v;
        rc = mdb_get(txn, s->db_uploads, &k, &v);
        if (rc == 0) {
                /* a tus upload re-created under its id (its length became known): not new */
                struct chp_rec_upload old;
                if (enc || (rc = parse_upload_rec(&v, &old)))
                        return enc ? -EEXIST : rc; /* native upload ids are never reused */
                if (old.flags & CHP_REC_UPLOAD_HAS_MANIFEST)
                        return -EEXIST;
                char old_tenant[CHP_TENANT_MAX];
                memcpy(old_tenant, old.tenant, old.tenant_len);
                struct usage_delta sub = {0};
                store_usage_of_upload(&old, -1, &sub);
                uint64_t old_known =
                    old.declared == CHP_UPLOAD_SIZE_UNKNOWN || (old.flags & CHP_REC_UPLOAD_COMPLETE)
                        ? 0
                        : old.declared;
                add.day_bytes = known > old_known ? known - old_known : 0;
                /* bytes a deferred length adds count against the limits as a new upload's do */
                if (quota && add.day_bytes &&
                    (rc = quota_check(s, txn, u->tenant, tlen, quota, add.day_bytes, 0,
                                      &req->u.upload_create.quota_hit)))
                        return rc;
                if ((rc = expiry_set(s, txn, old.expires, CHP_REC_EXPIRY_UPLOAD, u->id,
                                     CHP_UPLOAD_ID_BYTES, false)) ||
                    (rc = store_usage_add(s, txn, old_tenant, old.tenant_len, &sub)))
                        return rc;
        } else if (rc != MDB_NOTFOUND) {
                return store_mdb_rc(rc);
        } else if (quota && (rc = quota_check(s, txn, u->tenant, tlen, quota, known, 1,
                                              &req->u.upload_create.quota_hit))) {
                return rc;
        }
        if ((rc = store_usage_add(s, txn, u->tenant, tlen, &add)))
                return rc;
        v.mv_size = CHP_REC_UPLOAD_BYTES + tlen + slen + u->meta_len + enc_len;
        if ((rc = store_space_take(s, v.mv_size, false))) /* a manifest may be megabytes */
                return rc;
        if ((rc = store_mdb_rc(mdb_put(txn, s->db_uploads, &k, &v, MDB_RESERVE))))
                return rc;
        uint8_t *p = v.mv_data;
        struct chp_rec_upload r = {
            .flags = enc ? CHP_REC_UPLOAD_HAS_MANIFEST : 0,
            .chunk_size = u->chunk_size,
            .meta_len = u->meta_len,
            .manifest_len = (uint32_t)enc_len,
            .declared = enc ? m.total_size : u->declared_size,
            .created = u->created,
            .expires = u->expires,
            .file_expires = u->file_expires,
            .tenant_len = tlen,
            .subject_len = slen,
            .file_id = enc ? file_id : NULL,
        };
        chp_rec_upload_encode(p, &r);
        uint8_t *q = p + CHP_REC_UPLOAD_BYTES;
        memcpy(q, u->tenant, tlen);
        memcpy(q += tlen, u->subject, slen);
        memcpy(q += slen, u->meta, u->meta_len);
        if (enc_len)
                memcpy(q + u->meta_len, enc, enc_len);
        if ((rc = expiry_set(s, txn, u->expires, CHP_REC_EXPIRY_UPLOAD, u->id, CHP_UPLOAD_ID_BYTES,
                             true)))
                return rc;
        if (!enc)
                return 0;
        MDB_val fk = val(file_id, CHP_HASH_BYTES), iv = val(u->id, CHP_UPLOAD_ID_BYTES);
        if ((rc = store_mdb_rc(mdb_put(txn, s->db_pending, &fk, &iv, 0))))
                return rc;
        /* the manifest in the value may have moved: decode our own copy of the pointers again */
        if (chp_manifest_decode(enc, enc_len, &m) < 0)
                return -EBADMSG;
        return attach_existing(s, txn, u->id, &m);
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
        if ((rc = store_space_take(s, req->u.tail_append.len, false)))
                return rc;
        /* after the last piece */
        MDB_cursor *cur;
        uint32_t seq = 0;
        if ((rc = store_mdb_rc(mdb_cursor_open(txn, s->db_tails, &cur))))
                return rc;
        uint8_t k[CHP_UPLOAD_ID_BYTES + 4];
        memcpy(k, id, CHP_UPLOAD_ID_BYTES);
        chp_put_be32(k + CHP_UPLOAD_ID_BYTES, UINT32_MAX);
        MDB_val key = val(k, sizeof(k)), v;
        int r = mdb_cursor_get(cur, &key, &v, MDB_SET_RANGE);
        r = r == 0 ? mdb_cursor_get(cur, &key, &v, MDB_PREV)
                   : mdb_cursor_get(cur, &key, &v, MDB_LAST);
        if (r == 0 && key.mv_size == sizeof(k) && memcmp(key.mv_data, id, CHP_UPLOAD_ID_BYTES) == 0)
                seq = chp_get_be32((const uint8_t *)key.mv_data + CHP_UPLOAD_ID_BYTES) + 1;
        mdb_cursor_close(cur);
        chp_put_be32(k + CHP_UPLOAD_ID_BYTES, seq);
        key = val(k, sizeof(k));
        v = val(req->u.tail_append.data, req->u.tail_append.len);
        return store_mdb_rc(mdb_put(txn, s->db_tails, &key, &v, 0));
}

/* The file keeps the upload's metadata (tus filename, filetype) for its downloads, unless an
 * earlier upload of the same bytes gave it some already: the first one stays. */
static int filemeta_keep(struct chp_store *s, MDB_txn *txn, const uint8_t id[CHP_UPLOAD_ID_BYTES],
                         const uint8_t file_id[CHP_HASH_BYTES])
{
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct chp_rec_upload u;
        int rc = store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v));
        if (rc || (rc = parse_upload_rec(&v, &u)) || u.meta_len == 0)
                return rc;
        MDB_val fk = val(file_id, CHP_HASH_BYTES), fv = val(u.meta, u.meta_len);
        rc = mdb_put(txn, s->db_filemeta, &fk, &fv, MDB_NOOVERWRITE);
        return rc == MDB_KEYEXIST ? 0 : store_mdb_rc(rc);
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
                rc = req->u.commit.keep_upload ? upload_complete(s, txn, id, req->u.commit.file_id,
                                                                 req->u.commit.keep_expires)
                                               : store_upload_delete(s, txn, id, NULL);
                if (!rc && req->u.commit.keep_upload)
                        rc = filemeta_keep(s, txn, id, req->u.commit.file_id);
                return rc == -ENOENT ? 0 : rc;
        }
        MDB_val k = val(id, CHP_UPLOAD_ID_BYTES), v;
        struct chp_rec_upload u;
        if ((rc = store_mdb_rc(mdb_get(txn, s->db_uploads, &k, &v))) ||
            (rc = parse_upload_rec(&v, &u)))
                return rc;
        if (!(u.flags & CHP_REC_UPLOAD_HAS_MANIFEST))
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
                rc = store_upload_delete(s, txn, id, NULL);
        return rc;
}

int store_apply(struct chp_store *s, MDB_txn *txn, struct chp_store_req *req)
{
        switch (req->type) {
        case CHP_REQ_PUT:
                return apply_put(s, txn, req);
        case CHP_REQ_COMMIT:
                if (!req->u.commit.has_upload)
                        return apply_commit(s, txn, req);
                return apply_commit_upload(s, txn, req);
        case CHP_REQ_FILE_DELETE:
                return store_file_delete(s, txn, req->u.file_delete.file_id, NULL);
        case CHP_REQ_UPLOAD_CREATE:
                if (!req->u.upload_create.upload)
                        return -EINVAL;
                return apply_upload_create(s, txn, req);
        case CHP_REQ_UPLOAD_DELETE:
                return store_upload_delete(s, txn, req->u.upload_delete.upload_id, NULL);
        case CHP_REQ_GC:
                return store_apply_gc(s, txn, req);
        case CHP_REQ_TAIL_APPEND:
                return apply_tail_append(s, txn, req);
        case CHP_REQ_AUDIT:
                return store_apply_audit(s, txn, req);
        case CHP_REQ_QUARANTINE:
                return store_apply_quarantine(s, txn, req);
        }
        return -EINVAL;
}
