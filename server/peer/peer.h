/* peer.h — federation: this relay fetching files from the relays it peers with, and offering
 * them files of its own.
 *
 * A fetch pulls a file's manifest and the chunks this relay lacks from a peer over Noise IK (this
 * relay's static key, the peer's pinned), checks every address (a peer is trusted no more than
 * a client), and stores them as an upload of the manifest, so this relay's clients can fetch
 * each chunk the moment it is stored (download while uploading); the last chunk commits the
 * file, cached for file_expiry. One fetch per file at a time: concurrent requests join it. An
 * offer asks a peer to fetch one of our files in the background (PREFETCH).
 * Work runs on a small pool of worker threads (at most fetch_workers_per_peer of them on one
 * peer); the functions below may be called from any thread. Errors are negative codes.
 * A file the origin still uploads is followed (cut-through): its manifest is polled again on the
 * same connection once the last poll's chunks are stored, an eighth of the time since a poll last
 * brought chunks later (at least 50 ms, at most 2 s, never more than 64 KiB/s of manifests);
 * beyond 250 ms between polls, or when another fetch waits for a worker on that peer, the worker
 * is given back between polls.
 * Limits, so that no peer pins the relay: a fetch gives up fetch_timeout after it was asked for
 * or after the last chunk a followed upload brought, and a followed upload that stores nothing
 * for fetch_timeout (at most 120 s) is given up ("not finished"); a peer sending less than
 * fetch_min_rate bytes/s over a 10 s window (or not finishing the connection and handshake
 * within one) is abandoned, the window starting again at each poll of a followed upload (waiting
 * for its sender is not the peer's slowness); "no such file" (and an origin that never finished)
 * is remembered for 30 s.
 * A stop ends every wait on a peer within a fraction of a second. How fetches end is counted
 * in chp_shared.metrics (chapar_fetches_total{outcome}), and by peer here (chp_peers_stats).
 */
#ifndef CHP_PEER_H
#define CHP_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"
#include "metrics.h"

struct chp_shared;
struct chp_peers;
struct chp_peer_directory;

#define CHP_PEER_MSG_MAX 256

struct chp_config;

/* Decodes the configured peers' keys; starts the workers (none if there are no peers). */
int chp_peers_start(struct chp_shared *sh, struct chp_peers **out /* out */);
/* Makes cfg's peers the configured ones (a reload), and takes its expiry settings: a peer added
 * is accepted and fetched from at once; a peer dropped is refused from now on (its connections
 * may finish the request in hand; a fetch from it stops at its next chunk). Everything is checked
 * first: on error (a key that does not decode: -EINVAL; peers changed too often since start:
 * -ENOSPC; -ENOMEM) nothing changed and err (cap bytes) says why. Main thread only; one call at a
 * time. */
int chp_peers_update(struct chp_peers *p, const struct chp_config *cfg, char *err, size_t cap);
/* Stops the workers and frees: a fetch in progress is canceled, and every wait on a peer ends
 * within a fraction of a second whatever the peer does. NULL is a no-op. */
void chp_peers_stop(struct chp_peers *p);

/* The index of the configured peer with this public key, or -1. An index stays valid (and names
 * the same peer) for the relay's life, even after a reload drops the peer. */
int chp_peers_find(const struct chp_peers *p, const uint8_t key[CHP_HASH_BYTES]);
/* How many peers are configured (0 with p NULL). */
int chp_peers_count(const struct chp_peers *p);
/* find and count for the transport (net/loop.h), which does not link this module. */
extern const struct chp_peer_directory chp_peers_directory;
/* A peer's name, for messages. */
const char *chp_peers_name(const struct chp_peers *p, int peer);

enum chp_fetch_state {
        CHP_FETCH_NONE,    /* never asked, or long ago */
        CHP_FETCH_RUNNING, /* queued or in progress */
        CHP_FETCH_DONE,    /* the file is here */
        CHP_FETCH_FAILED,  /* the last attempt failed (msg says why); reported once */
};

/* Starts a fetch of file_id from peer unless one runs; returns what the file's fetch is doing
 * now. A fetch that ended with the file here is DONE for a few seconds (a caller that found the
 * file missing just before it was committed looks again, no second fetch); later, or when the
 * file is gone again, a call fetches anew. A failure is returned once, within a few seconds of
 * it; the next call retries. A negative answer (the peer has no such file, or its upload never
 * finished) is returned to every call for 30 s without a new fetch. *negative (may be NULL) is
 * set with FAILED when the failure is such an answer, not a failure to ask. */
enum chp_fetch_state chp_peers_fetch(struct chp_peers *p, int peer,
                                     const uint8_t file_id[CHP_HASH_BYTES], char *msg, size_t cap,
                                     bool *negative /* out */);
/* Asks peer to fetch file_id from us (in the background). */
int chp_peers_offer(struct chp_peers *p, int peer, const uint8_t file_id[CHP_HASH_BYTES]);

/* What one configured peer has done (chp_peers_stats). Counted by the peer's name: a reload that
 * keeps the name (even with a new address or key) keeps its counts; a peer a reload removes is
 * no longer reported, and one added again under its old name goes on from its old counts. */
enum chp_peer_state {
        CHP_PEER_UNUSED,  /* no connection to it attempted yet */
        CHP_PEER_UP,      /* the last connection (handshake and HELLO) to it succeeded */
        CHP_PEER_FAILING, /* the last connection to it failed */
};
#define CHP_PEER_NAME_BYTES 65  /* a [peer "NAME"] (config.c: 1..64 of A-Z a-z 0-9 . _ -), NUL */
#define CHP_PEER_ADDR_BYTES 300 /* host:port and the NUL (longer ones are cut) */
struct chp_peer_stat {
        char name[CHP_PEER_NAME_BYTES];
        char address[CHP_PEER_ADDR_BYTES];
        enum chp_peer_state state;
        uint64_t fetches[CHP_FETCHED_NOUTCOMES]; /* fetches from it, by how they ended */
        uint64_t offers_sent;                    /* offers it accepted */
        int64_t last_fetch;                      /* Unix seconds its last fetch ended; 0: none */
        enum chp_fetch_outcome last_outcome;     /* and how (with last_fetch set) */
};
/* Fills out[0..] with the peers configured now, in the order they were added, at most cap of
 * them; returns how many it filled (0 with p NULL). Any thread (takes the module's lock). */
size_t chp_peers_stats(struct chp_peers *p, struct chp_peer_stat *out /* out */, size_t cap);
/* The word for a peer's state: "up", "failing", "never used". */
const char *chp_peers_state_name(enum chp_peer_state s);

#endif
