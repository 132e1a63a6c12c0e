/* hash.h — SHA-256 content addresses through OpenSSL EVP, and their hex form.
 *
 * A chunk's address and a file's id are SHA-256 of their bytes. struct chp_sha256 is a streaming
 * context: init once, then update/final, reset to reuse it without reallocating; free it with
 * chp_sha256_free (NULL-safe). A context belongs to one thread at a time. Functions return 0 or a
 * negative code (-ENOMEM when OpenSSL cannot allocate the context, -EIO when it fails: OpenSSL 3
 * reports an allocation inside the digest's set-up only as a failure).
 */
#ifndef CHP_HASH_H
#define CHP_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CHP_HASH_BYTES    32
#define CHP_HASH_HEXBYTES (2 * CHP_HASH_BYTES + 1) /* with the terminating NUL */

struct chp_sha256 {
        void *ctx; /* EVP_MD_CTX, owned */
};

__attribute__((warn_unused_result)) int chp_sha256_init(struct chp_sha256 *h);
/* Starts a new digest on an initialised context. */
__attribute__((warn_unused_result)) int chp_sha256_reset(struct chp_sha256 *h);
__attribute__((warn_unused_result)) int chp_sha256_update(struct chp_sha256 *h, const void *data,
                                                          size_t len);
/* Writes the digest; the context must be reset before it is updated again. */
__attribute__((warn_unused_result)) int chp_sha256_final(struct chp_sha256 *h,
                                                         uint8_t out[CHP_HASH_BYTES]);
void chp_sha256_free(struct chp_sha256 *h);

/* One-shot digest of data. */
__attribute__((warn_unused_result)) int chp_sha256(const void *data, size_t len,
                                                   uint8_t out[CHP_HASH_BYTES]);

/* Lowercase hex of n bytes into out, which holds 2n+1 bytes (NUL-terminated). */
void chp_hex_encode(const uint8_t *in, size_t n, char *out);
/* Decodes exactly 2n hex digits (either case) from hex into n bytes. Returns 0 or -EINVAL;
 * out is untouched on failure. */
__attribute__((warn_unused_result)) int chp_hex_decode(const char *hex, size_t hexlen, uint8_t *out,
                                                       size_t n);

#endif
