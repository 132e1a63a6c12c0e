/* shared_write.c — chp_store_submit's requests over the shared state (shared_int.h): each store
 * request as the chp_rstate requests of docs/scale-out.md's table.
 */
#include <errno.h>

#include "shared_int.h"

int shared_submit(struct chp_store *s, struct chp_store_req *req)
{
        (void)s;
        (void)req;
        return -ENOTSUP;
}
