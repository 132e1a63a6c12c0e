/* shared_read.c — the store's reads over the shared state (shared_int.h): lookups as chp_rstate
 * gets, chunk reads, and the synchronous reads waited for.
 */
#include <errno.h>
#include <string.h>

#include "shared_int.h"

int shared_lookup(struct chp_store *s, struct chp_store_lookup *q)
{
        (void)s;
        (void)q;
        return q->status = -ENOTSUP;
}

int shared_lookup_wait(struct chp_store *s, struct chp_store_lookup *q)
{
        (void)s;
        return q->status = -ENOTSUP;
}

int shared_locate(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES],
                  struct chp_chunk_loc *loc)
{
        (void)s;
        (void)addr;
        memset(loc, 0, sizeof(*loc));
        loc->fd = -1;
        loc->remote = true;
        return 0;
}

ssize_t shared_read_async(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf,
                          size_t cap, chp_store_read_fn done, void *ctx)
{
        (void)s, (void)addr, (void)buf, (void)cap, (void)done, (void)ctx;
        return -ENOTSUP;
}

ssize_t shared_read(struct chp_store *s, const uint8_t addr[CHP_HASH_BYTES], void *buf, size_t cap)
{
        (void)s, (void)addr, (void)buf, (void)cap;
        return -ENOTSUP;
}

int shared_tenant_usage(struct chp_store *s, const char *tenant, struct chp_tenant_usage *out)
{
        (void)s, (void)tenant;
        memset(out, 0, sizeof(*out));
        return -ENOTSUP;
}
