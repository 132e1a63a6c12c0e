/* Fuzz target for chp_ticket_parse: any input is either rejected with -EBADMSG or is a canonical
 * ticket — formatting the parsed struct gives back exactly the input bytes (and needs exactly
 * that many), parsing that again gives the identical struct, and the relay address fits
 * CHP_TICKET_ADDR_MAX. Anything else aborts. Linked with libFuzzer, or with replay.c to run the
 * committed corpus under ctest. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ticket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const struct chp_ticket *a, const struct chp_ticket *b)
{
        return memcmp(a->host, b->host, sizeof(a->host)) == 0 && a->port == b->port &&
               memcmp(a->relay_key, b->relay_key, sizeof(a->relay_key)) == 0 &&
               memcmp(a->file_id, b->file_id, sizeof(a->file_id)) == 0 &&
               a->has_key == b->has_key &&
               memcmp(a->file_key, b->file_key, sizeof(a->file_key)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct chp_ticket t, again;
        int rc = chp_ticket_parse((const char *)data, size, &t);
        if (rc == -EBADMSG)
                return 0;
        if (rc != 0)
                abort();

        size_t hlen = strnlen(t.host, sizeof(t.host));
        if (hlen == 0 || hlen == sizeof(t.host) || t.port == 0)
                abort();
        if (!t.has_key)
                for (size_t i = 0; i < sizeof(t.file_key); i++)
                        if (t.file_key[i])
                                abort();

        char out[CHP_TICKET_MAX];
        ssize_t n = chp_ticket_format(&t, out, sizeof(out));
        if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0 || out[n] != '\0')
                abort();
        if (chp_ticket_format(&t, out, (size_t)n) != -ENOSPC)
                abort();
        if (chp_ticket_parse(out, (size_t)n, &again) != 0 || !same(&t, &again))
                abort();

        /* "HOST:PORT" or "[HOST]:PORT", whole: the port's digits end the string */
        char addr[CHP_TICKET_ADDR_MAX];
        chp_ticket_relay_addr(&t, addr, sizeof(addr));
        size_t br = memchr(t.host, ':', hlen) ? 1 : 0, p = 2 * br + hlen;
        if ((br && (addr[0] != '[' || addr[hlen + 1] != ']')) ||
            memcmp(addr + br, t.host, hlen) != 0 || addr[p] != ':')
                abort();
        unsigned port = 0;
        for (p++; addr[p] >= '0' && addr[p] <= '9'; p++)
                port = port * 10 + (unsigned)(addr[p] - '0');
        if (addr[p] != '\0' || port != t.port)
                abort();
        return 0;
}
