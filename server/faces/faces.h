/* faces.h — what the relay needs to serve the faces: each face's ops table, given to the loop
 * with its listening socket (net/loop.h, struct chp_listener_spec), and the state a face's
 * connections share, given beside it (.face, which a connection finds in c->face).
 *
 * The native face shares nothing (.face = NULL). The HTTP face shares the tus table of uploads
 * a request is writing now: one writer per upload, so a PATCH claims its upload while its body
 * streams, and another PATCH (or a HEAD, whose offset would be moving) gets 423 and retries. The
 * relay makes the table with chp_tus_claims_new before the loops start and frees it with
 * chp_tus_claims_free after they are gone (caller-owned; NULL is a no-op); tus.c claims and
 * releases from any loop thread. Errors: -ENOMEM.
 */
#ifndef CHP_FACES_H
#define CHP_FACES_H

struct proto_ops;
struct chp_tus_claims;

extern const struct proto_ops native_ops; /* .face: NULL */
extern const struct proto_ops http_ops;   /* .face: the struct chp_tus_claims */

__attribute__((warn_unused_result)) int chp_tus_claims_new(struct chp_tus_claims **out /* out */);
void chp_tus_claims_free(struct chp_tus_claims *t);

#endif
