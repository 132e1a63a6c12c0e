/* record.c — the record layer over Noise transport messages:
 *
 *   record := length (2 bytes, big-endian, 16..65535) || ENCRYPT(k, n, "", plaintext)
 *
 * Both ends count the records of each direction; after every CHP_RECORD_REKEY records the
 * direction's CipherState is rekeyed (Noise Rekey()), on the sealing side right after sealing and
 * on the opening side right after opening, so the two stay in step without a signal on the wire.
 * A record that does not open leaves the direction unchanged; the connection must close anyway.
 */
#include "record.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

_Static_assert(CHP_NOISE_MSGMAX <= 0xffff, "a record length fits in 2 bytes");
_Static_assert(CHP_RECORD_MAX == CHP_RECORD_HEADER + CHP_RECORD_PLAIN_MAX + CHP_NOISE_TAGLEN,
               "record sizes");

#define RECORD_OVERHEAD (CHP_RECORD_HEADER + CHP_NOISE_TAGLEN)

static void counted(struct chp_record_dir *d)
{
        d->count++;
        if (d->count % CHP_RECORD_REKEY == 0)
                chp_noise_rekey(&d->cs);
}

ssize_t chp_record_seal(struct chp_record_dir *d, const uint8_t *plain, size_t len, uint8_t *out,
                        size_t cap)
{
        if (!d || (!plain && len) || len > CHP_RECORD_PLAIN_MAX)
                return -EINVAL;
        if (!out || cap < len + RECORD_OVERHEAD)
                return -ENOSPC;
        size_t body = len + CHP_NOISE_TAGLEN;
        int rc = chp_noise_encrypt(&d->cs, NULL, 0, plain, len, out + CHP_RECORD_HEADER);
        if (rc != 0)
                return rc;
        out[0] = (uint8_t)(body >> 8);
        out[1] = (uint8_t)body;
        counted(d);
        return (ssize_t)(len + RECORD_OVERHEAD);
}

size_t chp_record_sealed_size(size_t len)
{
        size_t records = len / CHP_RECORD_PLAIN_MAX + (len % CHP_RECORD_PLAIN_MAX != 0);
        size_t extra = records * RECORD_OVERHEAD;
        return len > SIZE_MAX - extra ? SIZE_MAX : len + extra;
}

ssize_t chp_record_peek(const uint8_t *buf, size_t len)
{
        if (!buf || len < CHP_RECORD_HEADER)
                return -EAGAIN;
        size_t body = (size_t)buf[0] << 8 | buf[1];
        if (body < CHP_NOISE_TAGLEN)
                return -EBADMSG;
        if (len - CHP_RECORD_HEADER < body)
                return -EAGAIN;
        return (ssize_t)(CHP_RECORD_HEADER + body);
}

ssize_t chp_record_open(struct chp_record_dir *d, const uint8_t *buf, size_t len, uint8_t *plain,
                        size_t *plain_len, bool *closed)
{
        if (plain_len)
                *plain_len = 0;
        if (closed)
                *closed = false;
        if (!d || !plain_len || !closed)
                return -EINVAL;
        ssize_t n = chp_record_peek(buf, len);
        if (n < 0)
                return n;
        size_t body = (size_t)n - CHP_RECORD_HEADER;
        if (!plain && body > CHP_NOISE_TAGLEN)
                return -EINVAL;
        int rc = chp_noise_decrypt(&d->cs, NULL, 0, buf + CHP_RECORD_HEADER, body, plain);
        if (rc != 0)
                return rc == -EINVAL ? -EINVAL : -EBADMSG;
        counted(d);
        *plain_len = body - CHP_NOISE_TAGLEN;
        *closed = *plain_len == 0;
        return n;
}

void chp_record_wipe(struct chp_record_dir *d)
{
        if (d)
                sodium_memzero(d, sizeof(*d));
}
