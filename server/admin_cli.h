/* admin_cli.h — chapard's admin and admin-key subcommands: the operator's side of the admin face
 * (admin.h).
 *
 *   chapard admin [--data DIR | --admin HOST:PORT --key FILE] [--json] COMMAND
 *     list [--tenant T] [--limit N] [--cursor C] [--uploads] [--all]
 *     stats | delete FILE-ID | quarantine FILE-ID | unquarantine FILE-ID | quarantined
 *     verify [--rate BYTES-PER-S] | status
 *   chapard admin-key --out FILE     a new operator key (mode 0600, never overwritten)
 *
 * Without --admin it talks to DIR/admin.sock (--data, default ./data). Output is for people, or
 * the face's JSON with --json. Each function takes the arguments after the subcommand's name and
 * returns the exit status: 0 done, 1 refused (not found, bad request, a verify that found
 * problems), 2 usage or the face cannot be reached. Main thread; libsodium initialised.
 */
#ifndef CHP_ADMIN_CLI_H
#define CHP_ADMIN_CLI_H

int chp_admin_cli(int argc, char **argv);
int chp_admin_cli_key(int argc, char **argv);

#endif
