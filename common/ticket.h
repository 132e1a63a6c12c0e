/* ticket.h — the one string a messenger puts in a chat message to share a file.
 *
 *   chapar://HOST:PORT/RELAY-KEY/FILE-ID#FILE-KEY
 *
 * HOST is a DNS name, an IPv4 address or a bracketed IPv6 address; PORT 1..65535; RELAY-KEY is
 * the origin relay's static public key (X25519), FILE-ID the SHA-256 of the file's manifest, and
 * FILE-KEY the file's 32-byte key, each as 64 lowercase hex digits. Everything after '#' is a URL
 * fragment: it is never sent to any relay. A ticket without "#FILE-KEY" names the file for a
 * relay (stat, federation) but cannot decrypt it. The parser allocates nothing, never reads past
 * len, and rejects anything that is not exactly this form (a name whose last label looks numeric
 * must be a dotted quad, so no resolver reads "127.1" as an address). Pure functions; any thread.
 */
#ifndef CHP_TICKET_H
#define CHP_TICKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "e2e.h"
#include "hash.h"
#include "noise.h" /* CHP_KEY_BYTES */

#define CHP_TICKET_HOST_MAX 253
/* "chapar://" + "[host]:65535" + 3 * (1 + 64) + NUL */
#define CHP_TICKET_MAX (9 + CHP_TICKET_HOST_MAX + 2 + 6 + 3 * 65 + 1)

struct chp_ticket {
        char host[CHP_TICKET_HOST_MAX + 1]; /* without brackets, NUL-terminated */
        uint16_t port;
        uint8_t relay_key[CHP_KEY_BYTES];
        uint8_t file_id[CHP_HASH_BYTES];
        bool has_key;
        uint8_t file_key[CHP_FILE_KEY_BYTES];
};

/* "[host]:65535" + NUL: what chp_ticket_relay_addr writes at most. */
#define CHP_TICKET_ADDR_MAX (CHP_TICKET_HOST_MAX + 2 + 6 + 1)

/* Writes t as a NUL-terminated string; returns its length, -EINVAL (bad host or port 0) or
 * -ENOSPC (out of CHP_TICKET_MAX bytes always suffices). */
__attribute__((warn_unused_result)) ssize_t chp_ticket_format(const struct chp_ticket *t, char *out,
                                                              size_t cap);
/* Parses exactly len bytes; 0 or -EBADMSG. *out is cleared on entry, filled only on success. */
__attribute__((warn_unused_result)) int chp_ticket_parse(const char *s, size_t len,
                                                         struct chp_ticket *out /* out */);
/* "HOST:PORT" (IPv6 bracketed) of a ticket's relay, for connecting; NUL-terminated, cut short
 * when cap is under CHP_TICKET_ADDR_MAX (nothing written when cap is 0). */
void chp_ticket_relay_addr(const struct chp_ticket *t, char *out, size_t cap);

#endif
