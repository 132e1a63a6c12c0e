/* Fuzz target for chp_manifest_decode: any input either is rejected with -EBADMSG or decodes to
 * a manifest whose pointers lie inside the input, whose chunk lengths sum to its total size, and
 * which re-encodes to exactly the input bytes (the encoding is canonical). Anything else aborts.
 * Linked with libFuzzer, or with replay.c to run the committed corpus under ctest. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct chp_manifest m;
        ssize_t rc = chp_manifest_decode(data, size, &m);
        if (rc == -EBADMSG)
                return 0;
        if (rc < 0 || (size_t)rc != size)
                abort();

        /* canonical: the checked struct re-encodes to the same bytes, at the same size */
        if (chp_manifest_check(&m) != 0 || chp_manifest_encoded_size(&m) != size)
                abort();
        size_t addrs_len = (size_t)m.chunk_count * CHP_HASH_BYTES;
        if (m.addrs < data || addrs_len > (size_t)(data + size - m.addrs))
                abort();
        if (m.meta_len && (m.meta < data || m.meta_len > (size_t)(data + size - m.meta)))
                abort();
        uint8_t *again = malloc(size);
        if (!again)
                return 0;
        if (chp_manifest_encode(&m, again, size - 1) != -ENOSPC)
                abort();
        if (chp_manifest_encode(&m, again, size) != rc || memcmp(again, data, size) != 0)
                abort();
        free(again);

        uint64_t sum = 0;
        for (uint32_t i = 0; i < m.chunk_count; i++) {
                uint32_t len = chp_manifest_chunk_len(&m, i);
                if (len == 0 || len > m.chunk_size)
                        abort();
                sum += len;
        }
        if (sum != m.total_size || chp_manifest_chunk_len(&m, m.chunk_count) != 0)
                abort();
        return 0;
}
