#include "manifest.h"

#include <errno.h>
#include <string.h>

#include "bytes.h"

/* Field offsets of the version-1 header (see the layout in manifest.h). */
#define OFF_MAGIC       0
#define OFF_VERSION     4
#define OFF_FLAGS       5
#define OFF_RESERVED    6
#define OFF_CHUNK_SIZE  8
#define OFF_TOTAL_SIZE  12
#define OFF_CHUNK_COUNT 20
#define OFF_META_LEN    24

_Static_assert(OFF_META_LEN + 4 == CHP_MANIFEST_HEADER, "header layout");
/* The largest valid encoding fits in a 32-bit size_t and in ssize_t, so once chunk_count and
 * meta_len are within their limits the size arithmetic below cannot overflow. */
_Static_assert((uint64_t)CHP_MANIFEST_HEADER + (uint64_t)CHP_MANIFEST_MAX_CHUNKS * CHP_HASH_BYTES +
                       CHP_MANIFEST_MAX_META <
                   (uint64_t)INT32_MAX,
               "largest manifest fits in ssize_t");
_Static_assert(CHP_MANIFEST_MAX_TOTAL / CHP_CHUNK_MAX <= CHP_MANIFEST_MAX_CHUNKS,
               "some chunk size can describe the largest file");

static const uint8_t magic[4] = {'C', 'H', 'P', 'M'};

static int chunk_size_ok(uint32_t chunk_size)
{
        return chunk_size >= CHP_CHUNK_MIN && chunk_size <= CHP_CHUNK_MAX &&
               (chunk_size & (chunk_size - 1)) == 0;
}

/* The size rules shared by check and decode; false when any field is out of its range or the
 * fields disagree with each other. */
static int sizes_ok(uint32_t chunk_size, uint64_t total_size, uint32_t chunk_count,
                    uint32_t meta_len)
{
        return chunk_size_ok(chunk_size) && total_size <= CHP_MANIFEST_MAX_TOTAL &&
               chunk_count <= CHP_MANIFEST_MAX_CHUNKS && meta_len <= CHP_MANIFEST_MAX_META &&
               chp_manifest_chunk_count(total_size, chunk_size) == chunk_count;
}

/* Encoded size from fields already known to be within their limits. */
static size_t encoded_size(uint32_t chunk_count, uint32_t meta_len)
{
        return CHP_MANIFEST_HEADER + (size_t)chunk_count * CHP_HASH_BYTES + meta_len;
}

uint64_t chp_manifest_chunk_count(uint64_t total_size, uint32_t chunk_size)
{
        if (chunk_size == 0) /* no valid manifest has it; answer without dividing by zero */
                return 0;
        return total_size / chunk_size + (total_size % chunk_size != 0);
}

uint32_t chp_manifest_chunk_len(const struct chp_manifest *m, uint32_t i)
{
        if (i >= m->chunk_count) /* out of range: there is no such chunk */
                return 0;
        if (i + 1 < m->chunk_count)
                return m->chunk_size;
        /* the last chunk holds what the others leave; 1..chunk_size bytes in a valid manifest */
        uint64_t before = (uint64_t)i * m->chunk_size;
        if (before >= m->total_size)
                return 0;
        uint64_t rest = m->total_size - before;
        return rest < m->chunk_size ? (uint32_t)rest : m->chunk_size;
}

int chp_manifest_check(const struct chp_manifest *m)
{
        if (m->version != CHP_MANIFEST_VERSION)
                return -EINVAL;
        if (!sizes_ok(m->chunk_size, m->total_size, m->chunk_count, m->meta_len))
                return -EINVAL;
        if (m->chunk_count && !m->addrs)
                return -EINVAL;
        if (m->meta_len && !m->meta)
                return -EINVAL;
        return 0;
}

size_t chp_manifest_encoded_size(const struct chp_manifest *m)
{
        /* Computed in 64 bits so that even an unchecked struct cannot wrap on a 32-bit size_t. */
        uint64_t n = CHP_MANIFEST_HEADER + (uint64_t)m->chunk_count * CHP_HASH_BYTES + m->meta_len;
        return n > SIZE_MAX ? SIZE_MAX : (size_t)n;
}

ssize_t chp_manifest_encode(const struct chp_manifest *m, uint8_t *buf, size_t cap)
{
        if (chp_manifest_check(m) != 0)
                return -EINVAL;
        size_t n = encoded_size(m->chunk_count, m->meta_len);
        if (cap < n)
                return -ENOSPC;

        memcpy(buf + OFF_MAGIC, magic, sizeof(magic));
        buf[OFF_VERSION] = CHP_MANIFEST_VERSION;
        buf[OFF_FLAGS] = 0;
        chp_put_le16(buf + OFF_RESERVED, 0);
        chp_put_le32(buf + OFF_CHUNK_SIZE, m->chunk_size);
        chp_put_le64(buf + OFF_TOTAL_SIZE, m->total_size);
        chp_put_le32(buf + OFF_CHUNK_COUNT, m->chunk_count);
        chp_put_le32(buf + OFF_META_LEN, m->meta_len);
        size_t addrs_len = (size_t)m->chunk_count * CHP_HASH_BYTES;
        /* memcpy with a NULL source is undefined even for 0 bytes, and both may be NULL then */
        if (addrs_len)
                memcpy(buf + CHP_MANIFEST_HEADER, m->addrs, addrs_len);
        if (m->meta_len)
                memcpy(buf + CHP_MANIFEST_HEADER + addrs_len, m->meta, m->meta_len);
        return (ssize_t)n;
}

ssize_t chp_manifest_decode(const uint8_t *buf, size_t len, struct chp_manifest *out)
{
        memset(out, 0, sizeof(*out));
        if (len < CHP_MANIFEST_HEADER)
                return -EBADMSG;
        if (memcmp(buf + OFF_MAGIC, magic, sizeof(magic)) != 0)
                return -EBADMSG;
        if (buf[OFF_VERSION] != CHP_MANIFEST_VERSION || buf[OFF_FLAGS] != 0 ||
            buf[OFF_RESERVED] != 0 || buf[OFF_RESERVED + 1] != 0)
                return -EBADMSG;

        uint32_t chunk_size = chp_get_le32(buf + OFF_CHUNK_SIZE);
        uint64_t total_size = chp_get_le64(buf + OFF_TOTAL_SIZE);
        uint32_t chunk_count = chp_get_le32(buf + OFF_CHUNK_COUNT);
        uint32_t meta_len = chp_get_le32(buf + OFF_META_LEN);
        /* The limits are checked before the size is computed, so it cannot overflow. */
        if (!sizes_ok(chunk_size, total_size, chunk_count, meta_len))
                return -EBADMSG;
        if (len != encoded_size(chunk_count, meta_len))
                return -EBADMSG;

        size_t addrs_len = (size_t)chunk_count * CHP_HASH_BYTES;
        *out = (struct chp_manifest){
            .version = CHP_MANIFEST_VERSION,
            .chunk_size = chunk_size,
            .total_size = total_size,
            .chunk_count = chunk_count,
            .meta_len = meta_len,
            .addrs = buf + CHP_MANIFEST_HEADER,
            .meta = meta_len ? buf + CHP_MANIFEST_HEADER + addrs_len : NULL,
        };
        return (ssize_t)len;
}

int chp_manifest_id(const uint8_t *buf, size_t len, uint8_t id[CHP_HASH_BYTES])
{
        uint8_t d[CHP_HASH_BYTES];
        memset(id, 0, CHP_HASH_BYTES);
        int rc = chp_sha256(buf, len, d);
        if (rc != 0)
                return rc;
        memcpy(id, d, sizeof(d));
        return 0;
}
