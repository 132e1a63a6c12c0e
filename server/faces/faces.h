/* tus.h — what the tus face shares across loop threads: the table of uploads a request is
 * writing now. One writer per upload: a PATCH claims its upload while its body streams, and
 * another PATCH (or a HEAD, whose offset would be moving) gets 423 and retries.
 *
 * The relay makes the table with chp_tus_claims_new before the loops start and frees it with
 * chp_tus_claims_free after they are gone (caller-owned; NULL is a no-op); the tus code (tus.c)
 * claims and releases from any loop thread. Errors: -ENOMEM.
 */
#ifndef CHP_FACES_TUS_H
#define CHP_FACES_TUS_H

struct chp_tus_claims;

__attribute__((warn_unused_result)) int chp_tus_claims_new(struct chp_tus_claims **out /* out */);
void chp_tus_claims_free(struct chp_tus_claims *t);

#endif
