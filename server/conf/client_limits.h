/* client_limits.h — rate and concurrency limits per client address and per subject (a token's
 * tenant and subject): connections at once, new uploads per minute, bytes per second read (and,
 * per address only, sent), and incomplete uploads (begun, not yet committed or deleted). The module
 * is "limits" (chp_limits_*); the file is not limits.h, which would hide the C library's <limits.h>
 * from every file that has this directory on its include path.
 *
 * One table, shared by every loop thread under one mutex held only for a lookup and a bucket's
 * arithmetic. Its capacity is fixed at chp_limits_new: a key not in it takes a free entry or
 * evicts the least recently used entry that holds no open connection, so the table never grows.
 * An entry with connections is never evicted (their count must come down when they close); when
 * every entry holds connections, a new address is refused (CHP_ELIMITED) rather than not counted.
 * Evicting an entry forgets its history: a client that makes the relay evict its entry (by
 * bringing more distinct addresses or subjects than the table holds) gets a fresh budget — the
 * relay-wide limits (max_connections, memory_limit) still bound it.
 *
 * Keys: an IPv4 address (/32), an IPv6 /64 prefix (one host's or one customer's share of the
 * address space), or a subject. A connection has a handle (slot) for its address's entry and,
 * once it has presented a token (native HELLO), one for its subject's; a slot reads at its
 * entry's rate (upload_rate_per_address or upload_rate_per_subject). The limits come from the
 * running configuration (chp_limits_configure: at start and on every reload). Loopback addresses
 * are exempt from the per-address limits unless limit_loopback is set (a TLS terminator or reverse
 * proxy on the same host brings every client from 127.0.0.1, and the relay's operator runs its own
 * tools there); the per-subject limits hold from any address. Incomplete uploads are counted in
 * memory: an upload that is neither committed nor deleted is forgotten between one and two
 * upload_expiry periods after it began (when the store expires it).
 *
 * Errors: CHP_ELIMITED (over a limit: retry later), -EINVAL, -ENOMEM. Every function is safe from
 * any thread. A NULL table limits nothing (every call succeeds and counts nothing), and
 * CHP_LIMITS_NONE is a handle that counts nothing.
 */
#ifndef CHP_CONF_CLIENT_LIMITS_H
#define CHP_CONF_CLIENT_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define CHP_LIMITS_ENTRIES   65536 /* the relay's table: addresses and subjects at once */
#define CHP_LIMITS_KEY_BYTES 16
#define CHP_LIMITS_NONE      (-1) /* a connection the table does not count */
/* the Retry-After of a refusal whose end cannot be foreseen (connections or incomplete uploads
 * at their cap: they end when the client's own work does) */
#define CHP_LIMITS_RETRY_S 60

enum chp_limits_kind {
        CHP_LIMITS_NOBODY = 0, /* no address known (not counted) */
        CHP_LIMITS_IPV4,
        CHP_LIMITS_IPV6, /* the /64 prefix */
        CHP_LIMITS_SUBJECT,
};

/* What the table counts under: made by chp_limits_key_from_addr for a client address; subjects
 * are keyed inside (chp_limits_upload_begin). A zeroed key is nobody. */
struct chp_limits_key {
        uint8_t kind; /* enum chp_limits_kind */
        bool loopback;
        uint8_t bytes[CHP_LIMITS_KEY_BYTES];
};

/* The key of a client's address (sockaddr_in or sockaddr_in6 of len bytes; an IPv4-mapped IPv6
 * address is its IPv4 address): 0, or -EAFNOSUPPORT (another family, or len too short) with *out
 * zeroed (nobody). Pure. */
int chp_limits_key_from_addr(const struct sockaddr *sa, socklen_t len,
                             struct chp_limits_key *out /* out */);

struct chp_limits;

/* A table of `capacity` entries (at least 2), all limits off until chp_limits_configure. 0 or
 * -EINVAL / -ENOMEM. Free with chp_limits_free (NULL is a no-op). */
__attribute__((warn_unused_result)) int chp_limits_new(uint32_t capacity,
                                                       struct chp_limits **out /* out */);
void chp_limits_free(struct chp_limits *l);

/* Takes the limits of cfg ([server] max_connections_per_address, uploads_per_minute,
 * upload_rate_per_address, download_rate_per_address, max_incomplete_per_address, limit_loopback,
 * max_connections_per_subject, upload_rate_per_subject, max_incomplete_per_subject,
 * upload_expiry); what is counted already is kept. */
void chp_limits_configure(struct chp_limits *l, const struct chp_config *cfg);

/* A connection from addr was accepted: 0 with *slot its handle (CHP_LIMITS_NONE when addr is not
 * counted: nobody, or exempt loopback), or CHP_ELIMITED: addr has max_connections_per_address
 * open, or every entry of the table holds connections. now_ms: a monotonic clock. */
__attribute__((warn_unused_result)) int chp_limits_conn_open(struct chp_limits *l,
                                                             const struct chp_limits_key *addr,
                                                             uint64_t now_ms,
                                                             int32_t *slot /* out */);
/* A connection presented a token of tenant and subject (NULL or "": none): 0 with *slot the
 * subject's handle (CHP_LIMITS_NONE for none), to read with and to close with
 * chp_limits_conn_close like an address's; or CHP_ELIMITED: the subject has
 * max_connections_per_subject open (from any addresses), or every entry holds connections. */
__attribute__((warn_unused_result)) int
chp_limits_conn_subject(struct chp_limits *l, const char *tenant, const char *subject,
                        uint64_t now_ms, int32_t *slot /* out */);
/* The connection of slot (an address's or a subject's) closed. */
void chp_limits_conn_close(struct chp_limits *l, int32_t slot);

/* How many bytes a connection of slot may read now, at most want: want when no byte rate is set
 * for the slot's kind (upload_rate_per_address, upload_rate_per_subject) or slot is
 * CHP_LIMITS_NONE; less when the address's (or subject's) bucket holds less; 0 when it is empty (or
 * in debt), and then *wait_ms (at least 1) says when to ask again. It takes nothing: the bytes read
 * are charged with chp_limits_read_charge, so a receive waiting for its client holds no share of
 * the rate. Receives armed at once on one address may take more than the bucket held; the debt
 * makes the next ones wait until the rate is kept on average. */
size_t chp_limits_read_room(struct chp_limits *l, int32_t slot, size_t want, uint64_t now_ms,
                            uint32_t *wait_ms /* out */);
/* n bytes were read on a connection of slot. */
void chp_limits_read_charge(struct chp_limits *l, int32_t slot, size_t n, uint64_t now_ms);
/* How many bytes of want a connection of slot may send now under download_rate_per_address:
 * want when no such rate is set or slot is CHP_LIMITS_NONE; else what the address's bucket holds,
 * at most want, and those bytes are taken from it at once; 0 when it holds less than a useful
 * amount, and then *wait_ms (at least 1) says when to ask again. Taking before the send (unlike a
 * read's charge after it) keeps the address's connections sending at once from overdrawing the
 * bucket: none waits longer than a refill. A bucket of its own: reading and sending do not share
 * a budget. */
size_t chp_limits_send_take(struct chp_limits *l, int32_t slot, size_t want, uint64_t now_ms,
                            uint32_t *wait_ms /* out */);
/* n bytes taken by chp_limits_send_take did not go out (a short send, a failed one): given back,
 * up to a full bucket. */
void chp_limits_send_refund(struct chp_limits *l, int32_t slot, size_t n, uint64_t now_ms);

/* An upload is about to be admitted from addr (NULL or nobody: no address) for a token's tenant
 * and subject (NULL or "": no subject): 0, and it counts as one new upload and one incomplete
 * upload for the address and the subject; or CHP_ELIMITED with *retry_after_s (1 or more) when
 * the address or the subject is over uploads_per_minute, the address over
 * max_incomplete_per_address or the subject over max_incomplete_per_subject, and nothing is
 * counted. */
__attribute__((warn_unused_result)) int
chp_limits_upload_begin(struct chp_limits *l, const struct chp_limits_key *addr, const char *tenant,
                        const char *subject, uint64_t now_ms, uint32_t *retry_after_s /* out */);
/* An upload begun from addr for tenant and subject (NULL or "": none; as told to
 * chp_limits_upload_begin, or as recorded with the upload) is no longer incomplete: it was
 * committed or deleted, or the begin turned out not to start a new one (a resume, a file already
 * stored, a failed create). */
void chp_limits_upload_end(struct chp_limits *l, const struct chp_limits_key *addr,
                           const char *tenant, const char *subject, uint64_t now_ms);

struct chp_limits_stats {
        uint32_t entries;   /* in use */
        uint32_t capacity;  /* the table's fixed size */
        uint64_t evictions; /* entries reused for another key since the start */
};
void chp_limits_stats(struct chp_limits *l, struct chp_limits_stats *out /* out */);

#endif
