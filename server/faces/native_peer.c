/* native_peer.c — the native face's federation requests: a file this relay lacks is pulled
 * through from its origin relay when that is a peer (GET_MANIFEST, via native_read.c); a peer
 * asks this relay to pull one of its files (PREFETCH); a client asks this relay to offer one of
 * its files to a peer (OFFER). The fetching itself is peer.c's. A fetch on a client's behalf
 * needs the pull scope and an offer the offer scope (gate.h): an anonymous client never makes
 * this relay fetch; a configured peer's PREFETCH (and its pull-through, a relay asking for one of
 * its clients) is the peer's, authenticated by its Noise IK key.
 *
 * Loop thread only. OFFER looks its file up with chp_store_lookup (native_read.c's nlookup).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "err.h"
#include "gate.h"
#include "identity.h"
#include "native_int.h"
#include "peer.h"
#include "secure.h"

/* A file this relay lacks, whose origin (from the ticket) is another relay: fetched from it if
 * it is a peer. Returns true when the request is answered here. */
bool native_peer_via_origin(struct conn *c, uint32_t frame_id, const struct chp_msg_file_req *q,
                            bool pending, uint32_t stored)
{
        if (!q->has_origin ||
            sodium_memcmp(q->origin_key, c->sh->identity->pub, CHP_KEY_BYTES) == 0)
                return false; /* this relay is the origin: what it has is all there is */
        char hex[CHP_HASH_HEXBYTES], msg[CHP_PEER_MSG_MAX];
        int peer = chp_peers_find(c->sh->peers, q->origin_key);
        if (peer < 0) {
                chp_hex_encode(q->origin_key, CHP_KEY_BYTES, hex);
                native_reply_error(
                    c, frame_id, CHP_WE_UNAUTHORIZED,
                    "the file's origin relay %.*s (key %.16s...) is not a peer of this "
                    "relay: fetch it from its origin",
                    (int)q->addr_len, q->origin_addr, hex);
                return true;
        }
        int rc = secure_peer(c) >= 0
                     ? 0
                     : chp_gate_allow(&c->nat->caller, CHP_TOKEN_SCOPE_PULL, (uint64_t)time(NULL));
        if (rc) {
                if (pending)
                        return false; /* what is here is served; nothing is fetched for it */
                native_reply_refusal(c, frame_id, rc,
                                     "pull-through from the file's origin (fetch it from its "
                                     "origin relay instead)");
                return true;
        }
        enum chp_fetch_state st =
            chp_peers_fetch(c->sh->peers, peer, q->file_id, msg, sizeof(msg), NULL);
        if (st == CHP_FETCH_FAILED) {
                if (pending)
                        native_reply_error(c, frame_id, CHP_WE_UNAVAILABLE,
                                           "%s; this relay holds %u chunks of the file", msg,
                                           stored);
                else
                        native_reply_error(c, frame_id, CHP_WE_UNAVAILABLE, "%s", msg);
                return true;
        }
        if (!pending) {
                /* the fetch has not stored the manifest yet */
                native_reply_error(c, frame_id, CHP_WE_FETCHING, "fetching from %s",
                                   chp_peers_name(c->sh->peers, peer));
                return true;
        }
        return false; /* partial: what is here is served, the rest is on its way */
}

/* A peer asks this relay to pull one of its files (an offer ahead of any request). */
void native_peer_prefetch(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        const uint8_t *id;
        char msg[CHP_PEER_MSG_MAX];
        int peer = secure_peer(c);
        if (chp_msg_id_decode(p, h->len, CHP_HASH_BYTES, &id) != 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME,
                                   "PREFETCH carries a 32-byte file id");
                return;
        }
        if (peer < 0) {
                native_reply_error(
                    c, h->id, CHP_WE_UNAUTHORIZED,
                    "PREFETCH is for peers (a Noise IK connection from a configured peer)");
                return;
        }
        if (chp_peers_fetch(c->sh->peers, peer, id, msg, sizeof(msg), NULL) == CHP_FETCH_FAILED) {
                native_reply_error(c, h->id, CHP_WE_UNAVAILABLE, "%s", msg);
                return;
        }
        native_reply_frame(c, CHP_F_PREFETCH | CHP_F_REPLY, h->id, 0);
}

/* OFFER: the file is here (or not): offered to the peer. */
static void offer_got_file(struct conn *c, struct nlookup *op)
{
        if (op->q.status)
                native_reply_error(c, op->frame_id, CHP_WE_NOT_FOUND, "no such file here to offer");
        else if (chp_peers_offer(c->sh->peers, op->peer, op->file_id) != 0)
                native_reply_error(c, op->frame_id, CHP_WE_UNAVAILABLE,
                                   "too many offers in progress");
        else
                native_reply_frame(c, CHP_F_OFFER | CHP_F_REPLY, op->frame_id, 0);
        nlookup_free(op);
}

/* A client asks this relay to offer one of its files to a peer (for a recipient there). */
void native_peer_offer(struct conn *c, const struct chp_frame_header *h, const uint8_t *p)
{
        struct chp_msg_offer m;
        if (chp_msg_offer_decode(p, h->len, &m) < 0) {
                native_reply_error(c, h->id, CHP_WE_BAD_FRAME,
                                   "OFFER carries a file id and a peer key");
                return;
        }
        int rc = chp_gate_allow(&c->nat->caller, CHP_TOKEN_SCOPE_OFFER, (uint64_t)time(NULL));
        if (rc) {
                native_reply_refusal(c, h->id, rc, "OFFER");
                return;
        }
        int peer = chp_peers_find(c->sh->peers, m.peer_key);
        if (peer < 0) {
                native_reply_error(c, h->id, CHP_WE_NOT_FOUND, "no peer with that key");
                return;
        }
        struct nlookup *op = nlookup_new(c, h->id);
        if (!op) {
                native_reply_store_error(c, h->id, -ENOMEM);
                return;
        }
        op->peer = peer;
        memcpy(op->file_id, m.file_id, CHP_HASH_BYTES);
        op->q = (struct chp_store_lookup){.kind = CHP_LOOKUP_FILE}; /* whether it is here */
        memcpy(op->q.id, m.file_id, CHP_HASH_BYTES);
        nlookup_ask(c, op, offer_got_file);
}
