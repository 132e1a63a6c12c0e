/* token_cli.h — chapard's tenant-key and token subcommands (docs/tokens.md): an operator's (and
 * the tests') way to make a tenant's signing key and to mint and inspect upload tokens.
 *
 * A tenant key file is text, mode 0600, never overwritten:
 *     chapar-tenant-key 1
 *     seed <64 hex>        the Ed25519 private key as its 32-byte seed
 *     public <64 hex>
 * Loading refuses a file another user owns or others may access, and one whose public line does
 * not belong to its seed. Each function takes the arguments after the subcommand's name, prints
 * its results on stdout and its errors on stderr, and returns the process's exit status: 0, 1
 * (a token --verify that fails; an error), 2 (usage). Main thread; libsodium initialised.
 */
#ifndef CHP_TOKEN_CLI_H
#define CHP_TOKEN_CLI_H

/* chapard tenant-key --out FILE: writes a new key; the last line printed is exactly
 * "token_key = KID:PUBLIC-KEY", the line a relay's [tenant "NAME"] section takes. */
int chp_token_cli_tenant_key(int argc, char **argv);

/* chapard token --key FILE --tenant NAME [options]: prints one token and a newline.
 * chapard token --verify TOKEN --key-line KID:PUB [options]: prints the token's fields and
 * "valid", or the reason it is refused on stderr (exit 1). */
int chp_token_cli_token(int argc, char **argv);

#endif
