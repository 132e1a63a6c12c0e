/* gate.h — who may do what on this relay, and what it costs them: callers identified from their
 * upload token and address, scopes checked, each token's budget charged (docs/tokens.md), each
 * tenant's uploads in progress counted.
 *
 * A caller is identified once: per native connection at HELLO, per HTTP request that creates an
 * upload (tus POST, `Authorization: Bearer`). It is one of
 *   CHP_CALLER_TOKEN      a valid token of a configured tenant: what its scopes allow, within its
 *                         budget and the tenant's limits
 *   CHP_CALLER_TRUSTED    no token, and the relay is --open, or no tenant is configured and the
 *                         caller is on loopback: uploads, offers and pull-through as before tenants
 *   CHP_CALLER_ANONYMOUS  no token otherwise: downloads by file id only
 * A token that is presented and fails verification is refused (CHP_ETOKEN_*), never taken as no
 * token. With tenants configured (and no --open) every upload, offer and pull-through needs a
 * token, from loopback too.
 *
 * The gate's state is shared by every loop thread under one mutex, held only for a table lookup:
 *   - the ledger: for each token id, the files charged to it (once each, however often the
 *     upload is resumed or reopened) and their bytes, kept until the token expires (+ skew);
 *     at most CHP_GATE_TOKENS token ids and CHP_GATE_FILES charges per token, beyond which new
 *     ones are refused CHP_ELIMITED (not silently forgotten: forgetting would refill a budget);
 *   - per tenant, the uploads in progress (for max_concurrent_uploads).
 * The ledger is kept in memory and, once chp_gate_persist has named the data directory, in the
 * file DIR/ledger too: every change of a charge is appended there before it is made (and before
 * the admission is answered), so a restart, or a crash of the relay, does not let a token spend
 * its budget again; the file is replayed at start (tokens expired by then skipped), rewritten
 * with only what is live, and rewritten so again when it has grown past twice that. Appends are
 * not fsynced: a machine that loses power may forget the charges of its last seconds (what the
 * kernel had not written back). The tenant's limits are the store's (stored bytes, incomplete
 * uploads, bytes per day: struct chp_store_quota, checked by the writer in the transaction that
 * creates the upload, so concurrent uploads cannot overshoot them).
 *
 * Errors: CHP_ETOKEN_* (token invalid: 401; out of scope: 403), CHP_ETOKEN_MISSING (401),
 * CHP_ETOKEN_FILE (403), CHP_EQUOTA (403), CHP_ETOOBIG (413), CHP_ELIMITED (429), -ENOMEM,
 * -errno of the ledger file's append (the admission is refused: a charge not written is not
 * made).
 */
#ifndef CHP_CONF_GATE_H
#define CHP_CONF_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "hash.h"
#include "noise.h" /* CHP_KEY_BYTES */
#include "store.h" /* struct chp_store_quota */
#include "token.h"

#define CHP_GATE_TOKENS 65536 /* token ids the ledger holds at once */
#define CHP_GATE_FILES  4096  /* files charged to one token id (max_files above it is capped) */

enum chp_caller_kind {
        CHP_CALLER_ANONYMOUS,
        CHP_CALLER_TRUSTED,
        CHP_CALLER_TOKEN,
};

struct chp_caller {
        enum chp_caller_kind kind;
        uint8_t scopes;         /* CHP_TOKEN_SCOPE_* granted: ALL when trusted, 0 when anonymous */
        struct chp_token token; /* CHP_CALLER_TOKEN: the verified token's fields; else zero */
};

/* Identifies a caller from the token text it presented (token NULL or len 0: none) and whether
 * its address is loopback, against the running configuration cfg and this relay's public key
 * (the audience a token may name; cfg's tenant names and audience names are the others).
 * 0 and *out filled, or a CHP_ETOKEN_* code (the token does not verify). Pure; any thread. */
__attribute__((warn_unused_result)) int chp_gate_identify(const struct chp_config *cfg,
                                                          const uint8_t relay_key[CHP_KEY_BYTES],
                                                          bool peer_loopback, const char *token,
                                                          size_t len, uint64_t now,
                                                          struct chp_caller *out /* out */);

/* Whether the caller may do what scope names (one CHP_TOKEN_SCOPE_* bit): 0,
 * CHP_ETOKEN_MISSING (anonymous) or CHP_ETOKEN_SCOPE. A token past its expiry (+ skew) at `now`
 * is CHP_ETOKEN_EXPIRED: a connection outlives its token. Pure. */
__attribute__((warn_unused_result)) int chp_gate_allow(const struct chp_caller *c, uint8_t scope,
                                                       uint64_t now);

/* Whether STAT and HAVE may tell this caller whether a file or chunk exists and when it was
 * created: not to anonymous callers (it would let anyone who learns a file id watch for its
 * upload and its fetches). Pure. */
bool chp_gate_may_probe(const struct chp_caller *c);

struct chp_gate;

__attribute__((warn_unused_result)) int chp_gate_new(struct chp_gate **out /* out */);
void chp_gate_free(struct chp_gate *g); /* NULL is a no-op */

/* What chp_gate_persist found in the ledger file. */
struct chp_gate_ledger_load {
        uint64_t records;       /* replayed into the ledger */
        uint64_t expired;       /* of tokens expired (+ skew) by then: dropped */
        uint64_t unkept;        /* over the ledger's bounds (CHP_GATE_TOKENS, CHP_GATE_FILES) */
        uint64_t dropped_bytes; /* a torn or corrupt tail (or a file that is not a ledger),
                                   ignored from its first bad record on: warn about it */
};

/* Keeps the ledger in dir/ledger from now on: replays that file if there is one (a torn or
 * corrupt tail is ignored and counted in *out, never an error), then rewrites it compacted.
 * Call once, at start, before any admission. 0, or -errno: the file could not be read or
 * rewritten (the ledger is then in memory only, and may hold part of the file). */
__attribute__((warn_unused_result)) int
chp_gate_persist(struct chp_gate *g, const char *dir, uint64_t now,
                 struct chp_gate_ledger_load *out /* out */);

/* One upload's admission: filled by chp_gate_upload_begin, released by chp_gate_upload_end. */
struct chp_gate_upload {
        char tenant[CHP_TENANT_NAME_MAX + 1]; /* the store record's tenant; "" when trusted */
        uint64_t expires_max;         /* the latest expiry the file may get (unix s); 0 = none */
        struct chp_store_quota quota; /* the tenant's limits, for the store's upload create */
        bool has_quota;               /* a tenant's: pass &quota; else pass NULL */
        bool holds_slot;              /* counts as one of the tenant's uploads in progress */
        bool charged;                 /* this admission charged key to the token (refundable) */
        uint8_t token_id[CHP_TOKEN_ID_BYTES]; /* with charged: the token id and key charged */
        uint8_t key[CHP_HASH_BYTES];
};

/* Admits an upload of `size` bytes (CHP_UPLOAD_SIZE_UNKNOWN: a deferred tus length, charged by
 * chp_gate_upload_grow when known) under caller c. key names the file for the ledger: its file id
 * for a native upload (is_file_id), or its upload id (zero-padded) for tus. In order:
 *   scope upload (chp_gate_allow); a token's file id other than key (CHP_ETOKEN_FILE);
 *   size over the tenant's max_file_size or the token's max_bytes (CHP_ETOOBIG);
 *   the token's budget: unless key is already charged to the token id, its bytes + size over
 *   max_bytes or its files + 1 over max_files (CHP_EQUOTA), else both charged;
 *   the tenant's uploads in progress at max_concurrent_uploads (CHP_ELIMITED), else one taken.
 * expires_max is now + the smaller of the token's max_file_life and the tenant's; quota carries
 * the tenant's store limits. Trusted callers pass with nothing charged. 0 or an error (nothing
 * charged or taken). Any thread. */
__attribute__((warn_unused_result)) int
chp_gate_upload_begin(struct chp_gate *g, const struct chp_config *cfg, const struct chp_caller *c,
                      const uint8_t key[CHP_HASH_BYTES], bool is_file_id, uint64_t size,
                      uint64_t now, struct chp_gate_upload *out /* out */);

/* Admits an upload of `size` bytes that the tenant named `tenant` authorised itself, with no
 * token (an XMPP server's signed URL: faces/xmpp.c): size over the tenant's max_file_size
 * (CHP_ETOOBIG); the tenant's uploads in progress at max_concurrent_uploads (CHP_ELIMITED), else
 * one taken. expires_max is now + the tenant's max_file_life; quota carries its store limits.
 * Nothing is charged to any token. 0 or an error (-ENOENT: no such tenant; nothing taken). Any
 * thread. */
__attribute__((warn_unused_result)) int
chp_gate_upload_begin_tenant(struct chp_gate *g, const struct chp_config *cfg, const char *tenant,
                             uint64_t size, uint64_t now, struct chp_gate_upload *out /* out */);

/* A deferred length became known (tus): charges `size` to the token's budget for key, checked as
 * in chp_gate_upload_begin (CHP_ETOOBIG, CHP_EQUOTA). 0 or an error. Any thread. */
__attribute__((warn_unused_result)) int
chp_gate_upload_grow(struct chp_gate *g, const struct chp_config *cfg, const struct chp_caller *c,
                     const uint8_t key[CHP_HASH_BYTES], uint64_t size, uint64_t now);

/* The store limits of the tenant named `tenant` at `now` (for an upload record re-created with
 * a length that became known): true and *out filled, or false (no such tenant: no limits). */
bool chp_gate_tenant_quota(const struct chp_config *cfg, const char *tenant, uint64_t now,
                           struct chp_store_quota *out /* out */);

/* What a CHP_EQUOTA refusal hit, for its message: the tenant's store limit named by hit, or
 * (CHP_QUOTA_NONE: the gate's refusal) the token's budget. A static string. */
const char *chp_gate_quota_name(enum chp_store_quota_hit hit);

/* The upload admitted by u was not created after all (the store refused it: the tenant's quota,
 * a full disk): takes back the charge u made, so the token's budget is as before the admission.
 * A charge made by an earlier admission of the same key stays. Idempotent. Any thread. */
void chp_gate_upload_refund(struct chp_gate *g, struct chp_gate_upload *u);

/* The upload stopped receiving (committed, abandoned, its connection closed): gives back its
 * slot. The ledger keeps the charge. Idempotent; a zeroed struct is a no-op. Any thread. */
void chp_gate_upload_end(struct chp_gate *g, struct chp_gate_upload *u);

/* Drops ledger entries of tokens expired (+ skew) by now, and rewrites the ledger file compacted
 * when it has grown past twice what is live (and 1 MiB). Called now and then by the relay.
 * 0, or -errno: the rewrite failed (the file in use is kept, appended to as before). */
int chp_gate_expire(struct chp_gate *g, uint64_t now);

#endif
