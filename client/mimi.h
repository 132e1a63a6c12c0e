/* mimi.h — a chapar file as a MIMI ExternalPart (draft-ietf-mimi-content-08, section "External
 * content"), written and read as one JSON object whose members carry the draft's field names.
 *
 *   {"cardinality":2,"contentType":"...","url":"chapar://HOST:PORT/RELAY-KEY/FILE-ID",
 *    "expires":UNIX-SECONDS,"size":PLAIN-BYTES,"encAlg":51714,"key":"<64 hex>","nonce":"",
 *    "aad":"","hashAlg":1,"contentHash":"<64 hex: SHA-256 of the plaintext>","description":"",
 *    "filename":"..."}
 *
 * url is the ticket without its '#FILE-KEY'; key is that file key; encAlg is a number from the
 * private-use range of the IANA AEAD registry (RFC 5116 section 6), because chapar's per-chunk
 * scheme (e2e.h) is no registered AEAD; nonce and aad are empty (each chunk carries its own
 * nonce, its AD is its position). docs/interop.md says why each field is what it is.
 *
 * chp_mimi_parse reads either that object or an object holding it as "mimi_external_part" (the
 * whole output of `chapar put --json`). It is strict and bounded: the input is one JSON object
 * (RFC 8259, UTF-8) of at most CHP_MIMI_JSON_MAX bytes, nested at most one level (that member),
 * no arrays, no duplicate member names; it allocates nothing and never reads past len. Pure
 * functions; any thread. Errors: -EBADMSG (with *why, a static sentence, saying what is wrong),
 * -ENOSPC (chp_mimi_format's cap).
 */
#ifndef CHP_MIMI_H
#define CHP_MIMI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "e2e.h"
#include "hash.h"
#include "ticket.h"

/* encAlg: chapar's format v2 (e2e.h) under the draft's AEAD field; 0xCA00 | CHP_E2E_VERSION, in
 * the AEAD registry's private-use range 32768..65535 (no IANA number names it). */
#define CHP_MIMI_ENC_ALG 0xCA02
_Static_assert(CHP_MIMI_ENC_ALG == (0xCA00 | CHP_E2E_VERSION), "encAlg follows the e2e format");
/* hashAlg: sha-256 in the IANA Named Information Hash Algorithm Registry (RFC 6920). */
#define CHP_MIMI_HASH_ALG 1
/* cardinality of an ExternalPart in the draft's NestedPart */
#define CHP_MIMI_EXTERNAL 2
/* The longest descriptor text chp_mimi_parse reads (put --json's output is well under 2 KiB). */
#define CHP_MIMI_JSON_MAX 65536
/* What chp_mimi_format writes at most (every string escaped at its worst), its NUL included. */
#define CHP_MIMI_FORMAT_MAX 4096

struct chp_mimi_part {
        struct chp_ticket ticket;             /* from url and key: has_key is always true */
        uint64_t size;                        /* the plaintext's bytes */
        uint8_t content_hash[CHP_HASH_BYTES]; /* SHA-256 of the plaintext */
        bool has_expires; /* expires was given (the parser does not require it) */
        uint32_t expires; /* unix seconds; 0 = never */
        char content_type[CHP_E2E_MIME_MAX + 1]; /* "" when not given */
        char filename[CHP_E2E_NAME_MAX + 1];     /* "" when not given */
};

/* Parses exactly len bytes of JSON (see above). Required members: url (a ticket without the
 * key), encAlg = CHP_MIMI_ENC_ALG, key (64 hex digits), nonce = "", aad = "", hashAlg =
 * CHP_MIMI_HASH_ALG, contentHash (64 hex digits), size; checked when present: cardinality = 2,
 * expires (0..2^32-1), contentType (at most CHP_E2E_MIME_MAX bytes), filename (at most
 * CHP_E2E_NAME_MAX), description (any string); other members are skipped (still checked as
 * JSON). 0 or -EBADMSG; *out is cleared on entry and filled only on success; *why (may be NULL)
 * gets a static sentence on failure, "" on success. */
__attribute__((warn_unused_result)) int
chp_mimi_parse(const char *buf, size_t len, struct chp_mimi_part *out /* out */, const char **why);

/* Writes p as the JSON object above (no newline), NUL-terminated: description "", expires left
 * out unless has_expires. Returns its length, -EINVAL (p's ticket does not format or has no
 * key) or -ENOSPC (CHP_MIMI_FORMAT_MAX always suffices). */
__attribute__((warn_unused_result)) ssize_t chp_mimi_format(const struct chp_mimi_part *p,
                                                            char *out, size_t cap);

#endif
