/* record.h — the encrypted record layer that carries the native frame stream after a Noise
 * handshake.
 *
 * A record is a 2-byte big-endian length L (16..65535) and L bytes of Noise transport ciphertext
 * of L - 16 plaintext bytes, with empty associated data. A record whose plaintext is empty is
 * the explicit close: the stream ended on purpose, so a cut without it is a truncation, not an
 * end. Each direction rekeys (Noise Rekey()) after every CHP_RECORD_REKEY records, on both ends
 * in step, so no key encrypts more than that. Parsers never read past len and allocate nothing.
 * One thread per struct. Errors: -EAGAIN (need more bytes), -EBADMSG (bad length, tag mismatch:
 * the connection must close), -ENOSPC.
 */
#ifndef CHP_RECORD_H
#define CHP_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "noise.h"

#define CHP_RECORD_HEADER    2
#define CHP_RECORD_MAX       (CHP_RECORD_HEADER + CHP_NOISE_MSGMAX)
#define CHP_RECORD_PLAIN_MAX CHP_NOISE_PLAINMAX
#define CHP_RECORD_REKEY     (1u << 20)

struct chp_record_dir {
        struct chp_noise_cs cs;
        uint64_t count; /* records in this direction */
};

/* Seals len (<= CHP_RECORD_PLAIN_MAX; 0 = the close record) plaintext bytes as one record in
 * out; returns the record's length (len + 18). */
__attribute__((warn_unused_result)) ssize_t chp_record_seal(struct chp_record_dir *d,
                                                            const uint8_t *plain, size_t len,
                                                            uint8_t *out, size_t cap);
/* Bytes the records for len plaintext bytes take (cut into full records). */
size_t chp_record_sealed_size(size_t len);

/* Reads one record from buf: returns the bytes it took; its plaintext (at most
 * CHP_RECORD_PLAIN_MAX bytes) goes to plain and its length to *plain_len; *closed is set for the
 * close record. plain may equal buf + CHP_RECORD_HEADER (decryption in place). */
__attribute__((warn_unused_result)) ssize_t chp_record_open(struct chp_record_dir *d,
                                                            const uint8_t *buf, size_t len,
                                                            uint8_t *plain,
                                                            size_t *plain_len /* out */,
                                                            bool *closed /* out */);
/* Length of the record starting at buf (header included), -EAGAIN, or -EBADMSG (L < 16). */
__attribute__((warn_unused_result)) ssize_t chp_record_peek(const uint8_t *buf, size_t len);

void chp_record_wipe(struct chp_record_dir *d);

#endif
