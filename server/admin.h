/* admin.h — the operator's admin face: a small HTTP/1.1 server on the Unix socket DATA/admin.sock
 * (mode 0600 in the 0700 data directory: whoever may open it is the operator) and, with
 * admin_listen, on TCP, where every request must carry the operator key (admin_key, made by
 * chapard admin-key) as "Authorization: Bearer HEX"; a request without it gets 401.
 *
 *   GET /                      the status page (HTML): uptime, throughput, transfers now, store
 *                              usage by tenant, peers, refusals
 *   GET /status                the same numbers as JSON
 *   GET /files?tenant=T&limit=N&cursor=C    files newest first, a page (next cursor in "next")
 *   GET /uploads?tenant=T&limit=N&cursor=C  upload sessions, likewise
 *   GET /stats                 usage per tenant and the store's totals
 *   DELETE /files/ID           delete a file now (404 when unknown)
 *   PUT /quarantine/ID, DELETE /quarantine/ID, GET /quarantine   the quarantine list
 *   POST /verify?rate=BYTES    start the live scrub (409 while one runs); GET /verify: progress
 * Answers are JSON; with ?format=text (what chapard admin prints) plain lines for people.
 *
 * The face runs on a thread of its own with its own listeners (poll), not on the relay's loops:
 * a delete or quarantine waits for the store's writer and a listing walks LMDB, which a loop
 * thread must never do, and one request at a time is plenty for an operator. A client gets
 * ADMIN_IO_TIMEOUT_S per request, so no client holds the face for longer. The scrub runs on a
 * further thread while the face goes on answering.
 *
 * chp_admin_start: any thread, once; caller frees with chp_admin_stop (NULL is a no-op), before
 * the store closes. Errors are negative codes; err says what went wrong for the log.
 */
#ifndef CHP_ADMIN_H
#define CHP_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#define CHP_ADMIN_SOCKET    "admin.sock"
#define CHP_ADMIN_KEY_BYTES 32 /* the operator key; its file holds it as 64 hex digits */
#define CHP_ADMIN_ERR_MAX   256

struct chp_shared;
struct chp_config;
struct chp_admin;

/* Listens on DATA/admin.sock (a stale socket file left by a relay that died is replaced: the
 * store's lock says no other relay runs on DATA) and, with cfg->admin_listen, on TCP; the TCP
 * address it bound is written to tcp_addr (HOST:PORT, "" without). sh is borrowed for the
 * face's life; cfg only during the call. */
__attribute__((warn_unused_result)) int chp_admin_start(struct chp_shared *sh,
                                                        const struct chp_config *cfg,
                                                        struct chp_admin **out /* out */,
                                                        char *tcp_addr /* out */, size_t cap,
                                                        char err[CHP_ADMIN_ERR_MAX]);

/* Stops the scrub (if one runs) and the face, removes the socket file, frees. */
void chp_admin_stop(struct chp_admin *a);

/* Reads an operator key file (64 hex digits, then optional whitespace) into key. -EINVAL with
 * err set when it does not hold one, -errno when it cannot be read. */
__attribute__((warn_unused_result)) int
chp_admin_key_load(const char *path, uint8_t key[CHP_ADMIN_KEY_BYTES], char err[CHP_ADMIN_ERR_MAX]);

#endif
