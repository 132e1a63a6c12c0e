/* identity.h — the relay's static key pair (X25519), its file format and where it lives.
 *
 * A key file is text, mode 0600:
 *     chapar-relay-key 1
 *     private <64 hex>
 *     public <64 hex>
 * The public key is what clients pin and what tickets carry (lowercase hex). Without --key the
 * relay keeps its key in DATA/relay.key, created on first start. Loading refuses a file that is
 * not owned by this user or that group or others may access (-EACCES), and checks that the public
 * half matches the private one. Start-up thread only; errors are negative codes with a message
 * in err.
 */
#ifndef CHP_IDENTITY_H
#define CHP_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "noise.h" /* CHP_KEY_BYTES */

#define CHP_IDENTITY_ERR_MAX 256

struct chp_identity {
        uint8_t priv[CHP_KEY_BYTES];
        uint8_t pub[CHP_KEY_BYTES];
};

/* A new key pair written to path (which must not exist: -EEXIST). */
int chp_identity_generate(const char *path, struct chp_identity *id /* out */,
                          char err[CHP_IDENTITY_ERR_MAX]);
/* Reads and checks a key file. */
int chp_identity_load(const char *path, struct chp_identity *id /* out */,
                      char err[CHP_IDENTITY_ERR_MAX]);
/* Loads path, creating it when it does not exist (for the data directory's own key). */
int chp_identity_load_or_create(const char *path, struct chp_identity *id /* out */,
                                char err[CHP_IDENTITY_ERR_MAX]);
void chp_identity_wipe(struct chp_identity *id);

#endif
