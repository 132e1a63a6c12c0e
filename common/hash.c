#include "hash.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>

/* OpenSSL 3 fetches the algorithm implementation on every EVP_DigestInit_ex(EVP_sha256()); an
 * explicitly fetched EVP_MD skips that lookup, which matters when every chunk is hashed. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *md(void)
{
        pthread_once(&sha256_once, fetch_sha256);
        return sha256_md ? sha256_md : EVP_sha256();
}

int chp_sha256_init(struct chp_sha256 *h)
{
        h->ctx = EVP_MD_CTX_new();
        if (!h->ctx)
                return -ENOMEM;
        if (EVP_DigestInit_ex(h->ctx, md(), NULL) != 1) {
                EVP_MD_CTX_free(h->ctx);
                h->ctx = NULL;
                return -EIO;
        }
        return 0;
}

int chp_sha256_reset(struct chp_sha256 *h)
{
        return EVP_DigestInit_ex(h->ctx, md(), NULL) == 1 ? 0 : -EIO;
}

int chp_sha256_update(struct chp_sha256 *h, const void *data, size_t len)
{
        return EVP_DigestUpdate(h->ctx, data, len) == 1 ? 0 : -EIO;
}

int chp_sha256_final(struct chp_sha256 *h, uint8_t out[CHP_HASH_BYTES])
{
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != CHP_HASH_BYTES)
                return -EIO;
        return 0;
}

void chp_sha256_free(struct chp_sha256 *h)
{
        if (!h)
                return;
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
}

int chp_sha256(const void *data, size_t len, uint8_t out[CHP_HASH_BYTES])
{
        struct chp_sha256 h;
        int rc = chp_sha256_init(&h);
        if (rc)
                return rc; /* EVP_Digest would say only "failed" when it cannot allocate */
        rc = chp_sha256_update(&h, data, len);
        if (!rc)
                rc = chp_sha256_final(&h, out);
        chp_sha256_free(&h);
        return rc;
}

void chp_hex_encode(const uint8_t *in, size_t n, char *out)
{
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 15];
        }
        out[2 * n] = '\0';
}

static int nibble(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int chp_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t n)
{
        if (hexlen != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < hexlen; i++)
                if (nibble(hex[i]) < 0)
                        return -EINVAL;
        for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t)(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
        return 0;
}
