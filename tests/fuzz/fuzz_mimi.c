/* Fuzz target for chp_mimi_parse (client/mimi.c, the chapar tool's MIMI descriptors): any input
 * is refused with -EBADMSG, a reason and a cleared output, or parses to a part with its key whose
 * chp_mimi_format fits CHP_MIMI_FORMAT_MAX and parses again to the identical part, and formatting
 * that gives the same bytes (the written form is canonical). Anything else aborts. Linked with
 * libFuzzer, or with replay.c to run the committed corpus under ctest. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mimi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int all_zero(const void *p, size_t n)
{
        const unsigned char *b = p;
        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return 0;
        return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct chp_mimi_part p, again;
        const char *why = NULL;
        memset(&p, 0x5a, sizeof(p));
        int rc = chp_mimi_parse((const char *)data, size, &p, &why);
        if (rc == -EBADMSG) {
                if (!why || !*why || !all_zero(&p, sizeof(p)))
                        abort();
                return 0;
        }
        if (rc != 0 || !why || *why || !p.ticket.has_key)
                abort();
        if (strnlen(p.content_type, sizeof(p.content_type)) == sizeof(p.content_type) ||
            strnlen(p.filename, sizeof(p.filename)) == sizeof(p.filename))
                abort();

        static char out[CHP_MIMI_FORMAT_MAX], out2[CHP_MIMI_FORMAT_MAX];
        ssize_t n = chp_mimi_format(&p, out, sizeof(out));
        if (n <= 0 || (size_t)n >= sizeof(out) || out[n] != '\0')
                abort();
        if (chp_mimi_parse(out, (size_t)n, &again, &why) != 0 || memcmp(&p, &again, sizeof(p)) != 0)
                abort();
        if (chp_mimi_format(&again, out2, sizeof(out2)) != n || memcmp(out, out2, (size_t)n) != 0)
                abort();
        return 0;
}
