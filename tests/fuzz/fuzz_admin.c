/* Fuzz target for the admin face's request decoding (server/admin.c, included for its static
 * parsers): the input is a request target's query string, run through query_get for every
 * parameter the face reads, page_params (tenant, limit, cursor, and the 400s it answers) and
 * parse_id. Each decoded value must be NUL-terminated inside its buffer and hold no NUL; a query
 * that does not decode must set bad_query; page_params accepts only limits of 1..CHP_LIST_MAX
 * and cursors of 80 hex digits. The response body it builds (a 400's) is freed. Linked with
 * libFuzzer, or with replay.c to run the committed corpus under ctest. */
#include "../../server/admin.c"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct req r = {.status = 200};
        if (size >= sizeof(r.query))
                size = sizeof(r.query) - 1;
        memcpy(r.query, data, size);
        r.query[size] = '\0';
        const char *names[] = {"tenant", "limit", "cursor", "rate", "format"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                char v[CHP_TENANT_MAX + 1];
                memset(v, 'x', sizeof(v));
                r.bad_query = false;
                if (query_get(&r, names[i], v, sizeof(v))) {
                        if (strlen(v) >= sizeof(v) || r.bad_query)
                                abort();
                }
        }
        char tenant[CHP_TENANT_MAX + 1];
        bool has_tenant, has_cursor;
        size_t limit = 0;
        uint8_t cursor[CHP_LIST_CURSOR_BYTES];
        r.bad_query = false;
        if (page_params(&r, tenant, &has_tenant, &limit, cursor, &has_cursor)) {
                if (limit < 1 || limit > CHP_LIST_MAX || r.status != 200 || r.bad_query)
                        abort();
        } else if (r.status != 400 && !r.bad_query) {
                abort();
        }
        uint8_t id[CHP_HASH_BYTES];
        (void)parse_id(r.query, id);
        free(r.body.p);
        return 0;
}
