/* xxh.h — XXH3-64 checksums, compiled inline (XXH_INLINE_ALL) for speed.
 *
 * XXH3 is never a content address: it guards stored chunks against bit-rot, checks frames on
 * plaintext links and keys in-memory tables. Pure functions; any thread.
 */
#ifndef CHP_XXH_H
#define CHP_XXH_H

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

static inline uint64_t chp_xxh3(const void *data, size_t len)
{
        return XXH3_64bits(data, len);
}

#endif
