/* records.c — the store's LMDB value codec (records.h has the layouts and the contract). */
#include "records.h"

#include <errno.h>
#include <string.h>

#include "bytes.h"

ssize_t chp_rec_chunk_parse(const uint8_t *buf, size_t len, struct chp_rec_chunk *out)
{
        struct chp_rec_chunk c;
        if (len < CHP_REC_CHUNK_BYTES)
                return -EBADMSG;
        c.kind = buf[0];
        c.len = chp_get_le32(buf + 4);
        c.xxh3 = chp_get_le64(buf + 8);
        c.seg = chp_get_le32(buf + 16);
        c.offset = chp_get_le64(buf + 24);
        c.inline_data = NULL;
        if (c.kind == CHP_REC_CHUNK_INLINE) {
                if (len - CHP_REC_CHUNK_BYTES != (size_t)c.len)
                        return -EBADMSG;
                c.inline_data = buf + CHP_REC_CHUNK_BYTES;
        } else if (c.kind != CHP_REC_CHUNK_SEG || len != CHP_REC_CHUNK_BYTES ||
                   c.offset > (uint64_t)INT64_MAX - c.len) {
                /* an extent past what a file offset can hold is damage, not a bad argument */
                return -EBADMSG;
        }
        *out = c;
        return (ssize_t)len;
}

void chp_rec_chunk_encode(uint8_t out[CHP_REC_CHUNK_BYTES], uint8_t kind, uint32_t len,
                          uint64_t xxh3, uint32_t seg, uint64_t offset)
{
        memset(out, 0, CHP_REC_CHUNK_BYTES);
        out[0] = kind;
        chp_put_le32(out + 4, len);
        chp_put_le64(out + 8, xxh3);
        chp_put_le32(out + 16, seg);
        chp_put_le64(out + 24, offset);
}

ssize_t chp_rec_refs_parse(const uint8_t *buf, size_t len, uint64_t *count)
{
        if (len != CHP_REC_REFS_BYTES)
                return -EBADMSG;
        *count = chp_get_le64(buf);
        return (ssize_t)len;
}

void chp_rec_refs_encode(uint8_t out[CHP_REC_REFS_BYTES], uint64_t count)
{
        chp_put_le64(out, count);
}

ssize_t chp_rec_file_parse(const uint8_t *buf, size_t len, struct chp_rec_file *out)
{
        struct chp_rec_file f;
        if (len < CHP_REC_FILE_BYTES || buf[0] != 1)
                return -EBADMSG;
        f.tenant_len = buf[1];
        f.manifest_len = chp_get_le32(buf + 4);
        f.created = chp_get_le64(buf + 8);
        f.expires = chp_get_le64(buf + 16);
        f.size = chp_get_le64(buf + 24);
        if (f.tenant_len > CHP_TENANT_MAX || len - CHP_REC_FILE_BYTES < f.tenant_len ||
            len - CHP_REC_FILE_BYTES - f.tenant_len != (size_t)f.manifest_len)
                return -EBADMSG;
        f.tenant = buf + CHP_REC_FILE_BYTES;
        f.manifest = f.tenant + f.tenant_len;
        *out = f;
        return (ssize_t)len;
}

void chp_rec_file_encode(uint8_t out[CHP_REC_FILE_BYTES], uint8_t tenant_len, uint32_t manifest_len,
                         uint64_t created, uint64_t expires, uint64_t size)
{
        memset(out, 0, CHP_REC_FILE_BYTES);
        out[0] = 1;
        out[1] = tenant_len;
        chp_put_le32(out + 4, manifest_len);
        chp_put_le64(out + 8, created);
        chp_put_le64(out + 16, expires);
        chp_put_le64(out + 24, size);
}

void chp_rec_file_set_expires(uint8_t *rec, uint64_t expires)
{
        chp_put_le64(rec + 16, expires);
}

ssize_t chp_rec_upload_parse(const uint8_t *buf, size_t len, struct chp_rec_upload *out)
{
        struct chp_rec_upload r;
        /* version 1 had no subject: its byte 3 is 0, and so is the subject's length */
        if (len < CHP_REC_UPLOAD_BYTES || (buf[0] != 1 && buf[0] != CHP_REC_UPLOAD_VERSION) ||
            (buf[0] == 1 && buf[3] != 0))
                return -EBADMSG;
        r.tenant_len = buf[1];
        r.flags = buf[2];
        r.subject_len = buf[3];
        r.chunk_size = chp_get_le32(buf + 4);
        r.declared = chp_get_le64(buf + 8);
        r.created = chp_get_le64(buf + 16);
        r.expires = chp_get_le64(buf + 24);
        r.meta_len = chp_get_le32(buf + 32);
        r.manifest_len = chp_get_le32(buf + 36);
        r.file_id = buf + 40;
        r.file_expires = chp_get_le64(buf + 72);
        /* sizes are bounded before they are added, so the sum cannot wrap */
        if (r.tenant_len > CHP_TENANT_MAX || r.subject_len > CHP_TOKEN_SUBJECT_MAX ||
            r.meta_len > CHP_UPLOAD_META_MAX || r.manifest_len > len ||
            len != CHP_REC_UPLOAD_BYTES + r.tenant_len + r.subject_len + r.meta_len +
                       (size_t)r.manifest_len ||
            (!(r.flags & CHP_REC_UPLOAD_HAS_MANIFEST) && r.manifest_len))
                return -EBADMSG;
        r.tenant = buf + CHP_REC_UPLOAD_BYTES;
        r.subject = r.tenant + r.tenant_len;
        r.meta = r.subject + r.subject_len;
        r.manifest = r.meta + r.meta_len;
        *out = r;
        return (ssize_t)len;
}

void chp_rec_upload_encode(uint8_t out[CHP_REC_UPLOAD_BYTES], const struct chp_rec_upload *r)
{
        memset(out, 0, CHP_REC_UPLOAD_BYTES);
        out[0] = CHP_REC_UPLOAD_VERSION;
        out[1] = (uint8_t)r->tenant_len;
        out[2] = r->flags;
        out[3] = (uint8_t)r->subject_len;
        chp_put_le32(out + 4, r->chunk_size);
        chp_put_le64(out + 8, r->declared);
        chp_put_le64(out + 16, r->created);
        chp_put_le64(out + 24, r->expires);
        chp_put_le32(out + 32, r->meta_len);
        chp_put_le32(out + 36, r->manifest_len);
        if (r->file_id)
                memcpy(out + 40, r->file_id, CHP_HASH_BYTES);
        chp_put_le64(out + 72, r->file_expires);
}

void chp_rec_upload_set_expires(uint8_t *rec, uint64_t expires)
{
        chp_put_le64(rec + 24, expires);
}

void chp_rec_upload_set_complete(uint8_t *rec, const uint8_t file_id[CHP_HASH_BYTES])
{
        rec[2] |= CHP_REC_UPLOAD_COMPLETE;
        memcpy(rec + 40, file_id, CHP_HASH_BYTES);
}

void chp_rec_upload_to_public(const uint8_t id[CHP_UPLOAD_ID_BYTES], const struct chp_rec_upload *r,
                              struct chp_upload *u)
{
        memcpy(u->id, id, CHP_UPLOAD_ID_BYTES);
        memcpy(u->tenant, r->tenant, r->tenant_len);
        u->tenant[r->tenant_len] = '\0';
        memcpy(u->subject, r->subject, r->subject_len);
        u->subject[r->subject_len] = '\0';
        u->chunk_size = r->chunk_size;
        u->declared_size = r->declared;
        u->created = r->created;
        u->expires = r->expires;
        u->meta_len = r->meta_len;
        memcpy(u->meta, r->meta, r->meta_len);
        u->has_manifest = r->flags & CHP_REC_UPLOAD_HAS_MANIFEST;
        u->file_expires = r->file_expires;
        u->complete = r->flags & CHP_REC_UPLOAD_COMPLETE;
        memcpy(u->file_id, r->file_id, CHP_HASH_BYTES);
}

ssize_t chp_rec_seg_parse(const uint8_t *buf, size_t len, struct chp_rec_seg *out)
{
        if (len != CHP_REC_SEG_BYTES)
                return -EBADMSG;
        out->total = chp_get_le64(buf);
        out->live = chp_get_le64(buf + 8);
        out->state = chp_get_le32(buf + 16);
        return (ssize_t)len;
}

void chp_rec_seg_encode(uint8_t out[CHP_REC_SEG_BYTES], const struct chp_rec_seg *r)
{
        memset(out, 0, CHP_REC_SEG_BYTES);
        chp_put_le64(out, r->total);
        chp_put_le64(out + 8, r->live);
        chp_put_le32(out + 16, r->state);
}

void chp_rec_segidx_key(uint8_t out[CHP_REC_SEGIDX_KEY], uint32_t seg, uint64_t offset)
{
        chp_put_be32(out, seg);
        chp_put_be64(out + 4, offset);
}

ssize_t chp_rec_tenant_parse(const uint8_t *buf, size_t len, struct chp_tenant_usage *out)
{
        if (len != CHP_REC_TENANT_BYTES || buf[0] != CHP_REC_TENANT_VERSION)
                return -EBADMSG;
        out->stored_bytes = chp_get_le64(buf + 8);
        out->files = chp_get_le64(buf + 16);
        out->incomplete = chp_get_le64(buf + 24);
        out->incomplete_bytes = chp_get_le64(buf + 32);
        out->day = chp_get_le64(buf + 40);
        out->day_bytes = chp_get_le64(buf + 48);
        return (ssize_t)len;
}

void chp_rec_tenant_encode(uint8_t out[CHP_REC_TENANT_BYTES], const struct chp_tenant_usage *u)
{
        memset(out, 0, CHP_REC_TENANT_BYTES);
        out[0] = CHP_REC_TENANT_VERSION;
        chp_put_le64(out + 8, u->stored_bytes);
        chp_put_le64(out + 16, u->files);
        chp_put_le64(out + 24, u->incomplete);
        chp_put_le64(out + 32, u->incomplete_bytes);
        chp_put_le64(out + 40, u->day);
        chp_put_le64(out + 48, u->day_bytes);
}

ssize_t chp_rec_orphan_parse(const uint8_t *buf, size_t len, uint64_t *since)
{
        if (len != CHP_REC_ORPHAN_BYTES)
                return -EBADMSG;
        *since = chp_get_le64(buf);
        return (ssize_t)len;
}

void chp_rec_orphan_encode(uint8_t out[CHP_REC_ORPHAN_BYTES], uint64_t since)
{
        chp_put_le64(out, since);
}

size_t chp_rec_expiry_key(uint8_t out[CHP_REC_EXPIRY_KEY_MAX], uint64_t expires, char kind,
                          const uint8_t *id, size_t idlen)
{
        chp_put_be64(out, expires);
        out[8] = (uint8_t)kind;
        memcpy(out + 9, id, idlen);
        return 9 + idlen;
}
