/* main.c — the chapard command: the relay and its operator subcommands.
 *
 *   chapard [flags]             run the relay (see DESIGN's contract and config.h)
 *   chapard verify --data DIR   scrub the store; exit 0 when clean, 1 listing each problem,
 *                               2 when the store cannot be opened
 *   chapard keygen --out FILE   write a relay key pair (mode 0600), print the public key
 *   chapard tenant-key --out FILE, chapard token ...   a tenant's signing key, upload tokens
 *                               (token_cli.h, docs/tokens.md)
 *   chapard check-config FILE   the checks chapard makes of its configuration at start, on FILE
 *                               alone (like nginx -t): exit 0 when it would start, 1 with the
 *                               first error (PATH:LINE: ...) when it would not
 *   chapard admin ..., chapard admin-key --out FILE   the admin face's client and the operator
 *                               key (admin_cli.h, docs/operations.md "Administration")
 *   chapard --version           "chapard VERSION" (CMake's PROJECT_VERSION), then the protocol
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "hash.h"
#include "identity.h"
#include "err.h"
#include "log.h"
#include "proto.h"
#include "relay.h"
#include "store.h"
#include "token_cli.h"
#include "admin_cli.h"

#ifndef CHAPAR_VERSION
#error "CHAPAR_VERSION is CMake's PROJECT_VERSION, passed as a compile definition"
#endif

static int usage(FILE *to)
{
        fprintf(to, "usage: chapard [--config FILE] [--data DIR] [--listen HOST:PORT]\n"
                    "               [--http HOST:PORT] [--threads N] [--sync full|none]\n"
                    "               [--key FILE] [--insecure-plaintext] [--ready-file PATH]\n"
                    "               [--log-level error|warn|info|debug] [--open]\n"
                    "               [--access-log FILE|-] [--log-format logfmt|json]\n"
                    "               [--admin-listen HOST:PORT --admin-key FILE]\n"
                    "               [--store local|rados --rados-conf FILE --rados-pool POOL\n"
                    "                [--rados-user NAME] [--rados-shared]]\n"
                    "       chapard check-config FILE\n"
                    "       chapard verify --data DIR [--store rados --rados-conf FILE\n"
                    "                      --rados-pool POOL [--rados-user NAME]\n"
                    "                      [--rados-shared]]\n"
                    "       chapard admin [--data DIR | --admin HOST:PORT --key FILE] [--json]\n"
                    "                     list|stats|delete ID|quarantine ID|unquarantine ID|\n"
                    "                     quarantined|verify|status   (chapard admin --help)\n"
                    "       chapard admin-key --out FILE\n"
                    "       chapard keygen --out FILE\n"
                    "       chapard tenant-key --out FILE\n"
                    "       chapard token --key FILE --tenant NAME [--ttl SECONDS] [--bytes N]\n"
                    "                     [--scope upload,offer,pull] [--audience RELAY-KEY]\n"
                    "       chapard token --verify TOKEN --key-line KID:PUBLIC-KEY\n"
                    "       chapard --help | --version\n");
        return to == stderr ? 1 : 0;
}

static void print_problem(void *ctx, const char *problem)
{
        (void)ctx;
        printf("problem: %s\n", problem);
}

static int cmd_verify(int argc, char **argv)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        const char *dir = "./data";
        for (int i = 0; i < argc; i++) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (strcmp(argv[i], "--data") == 0 && v)
                        dir = v;
                else if (strcmp(argv[i], "--store") == 0 && v && strcmp(v, "local") == 0)
                        o.backend = CHP_STORE_LOCAL;
                else if (strcmp(argv[i], "--store") == 0 && v && strcmp(v, "rados") == 0)
                        o.backend = CHP_STORE_RADOS;
                else if (strcmp(argv[i], "--rados-conf") == 0 && v)
                        o.rados_conf = v;
                else if (strcmp(argv[i], "--rados-pool") == 0 && v)
                        o.rados_pool = v;
                else if (strcmp(argv[i], "--rados-user") == 0 && v)
                        o.rados_user = v;
                else if (strcmp(argv[i], "--rados-shared") == 0) {
                        o.rados_shared = true;
                        continue; /* a flag: no value */
                } else
                        return usage(stderr);
                i++;
        }
        if (o.backend == CHP_STORE_RADOS && (!o.rados_conf || !o.rados_pool)) {
                fprintf(stderr,
                        "chapard verify: --store rados needs --rados-conf and --rados-pool\n");
                return 2;
        }
        o.dir = dir;
        struct chp_store *s;
        int rc = chp_store_open(&o, &s);
        if (rc) {
                fprintf(stderr, "chapard verify: cannot open %s: %s\n", dir, chp_strerror(rc));
                return 2;
        }
        struct chp_verify_stats st;
        rc = chp_store_verify(s, print_problem, NULL, &st);
        chp_store_close(s);
        if (rc) {
                fprintf(stderr, "chapard verify: %s\n", chp_strerror(rc));
                return 2;
        }
        printf("%llu chunks (%llu bytes, %llu unreferenced), %llu files, %llu uploads, "
               "%llu segments: %llu problems\n",
               (unsigned long long)st.chunks, (unsigned long long)st.bytes,
               (unsigned long long)st.unreferenced, (unsigned long long)st.files,
               (unsigned long long)st.uploads, (unsigned long long)st.segments,
               (unsigned long long)st.problems);
        return st.problems ? 1 : 0;
}

static int cmd_keygen(int argc, char **argv)
{
        if (argc != 2 || strcmp(argv[0], "--out") != 0)
                return usage(stderr);
        struct chp_identity id;
        char err[CHP_IDENTITY_ERR_MAX], hex[CHP_HASH_HEXBYTES];
        if (chp_identity_generate(argv[1], &id, err) != 0) {
                fprintf(stderr, "chapard keygen: %s\n", err);
                return 2;
        }
        chp_hex_encode(id.pub, sizeof(id.pub), hex);
        chp_identity_wipe(&id);
        printf("%s\n", hex);
        return 0;
}

/* Everything chapard checks of its configuration before it opens the store: the file's syntax
 * and values (peers' and tenants' keys included), the cross-field rules (the no-tenant rule) and
 * a relay key file named by `key`. Prints nginx -t's two lines on success. */
static int cmd_check_config(int argc, char **argv)
{
        if (argc != 1 || argv[0][0] == '-')
                return usage(stderr);
        const char *file = argv[0];
        struct chp_config cfg;
        char err[CHP_CONFIG_ERR_MAX];
        chp_config_defaults(&cfg);
        int rc = chp_config_load_file(&cfg, file, err);
        if (!rc)
                printf("chapard: the configuration file %s syntax is ok\n", file);
        else
                fprintf(stderr, "chapard: %s\n", err);
        if (!rc && (rc = chp_config_finish(&cfg, err)))
                fprintf(stderr, "chapard: %s: %s\n", file, err);
        /* the peers' keys are decoded when federation starts (chp_peers_update) */
        for (unsigned i = 0; !rc && i < cfg.npeers; i++) {
                uint8_t key[CHP_HASH_BYTES];
                const char *pk = cfg.peers[i].pubkey;
                if ((rc = chp_hex_decode(pk, strlen(pk), key, sizeof(key))))
                        fprintf(stderr, "chapard: %s: [peer \"%s\"] pubkey must be 64 hex digits\n",
                                file, cfg.peers[i].name);
        }
        if (!rc && cfg.key_file) {
                struct chp_identity id;
                char kerr[CHP_IDENTITY_ERR_MAX];
                if ((rc = chp_identity_load(cfg.key_file, &id, kerr)))
                        fprintf(stderr, "chapard: %s: key = %s: %s\n", file, cfg.key_file, kerr);
                else
                        chp_identity_wipe(&id);
        }
        if (rc)
                fprintf(stderr, "chapard: configuration file %s test failed\n", file);
        else
                printf("chapard: configuration file %s test is successful\n", file);
        chp_config_free(&cfg);
        return rc ? 1 : 0;
}

struct args {
        int argc;
        char **argv;
};

/* The configuration as the command line gives it: defaults, the --config file, the flags (which
 * win), checked. At start-up and again on every SIGHUP. */
static int load_config(void *ctx, struct chp_config *cfg, char err[CHP_CONFIG_ERR_MAX])
{
        const struct args *a = ctx;
        chp_config_defaults(cfg);
        const char *file = chp_config_find_file(a->argc + 1, a->argv - 1);
        int rc = 0;
        if (file)
                rc = chp_config_load_file(cfg, file, err);
        if (!rc)
                rc = chp_config_parse_args(cfg, a->argc, a->argv, err);
        if (!rc)
                rc = chp_config_finish(cfg, err);
        return rc;
}

static int cmd_relay(int argc, char **argv)
{
        /* from the start: a SIGHUP (the terminal closing) never kills the relay; chp_relay_run
         * takes these signals on the main thread */
        sigset_t sigs;
        chp_relay_block_signals(&sigs);
        signal(SIGPIPE, SIG_IGN);
        struct args a = {argc, argv};
        struct chp_config cfg;
        char err[CHP_CONFIG_ERR_MAX];
        int rc = load_config(&a, &cfg, err);
        if (rc) {
                fprintf(stderr, "chapard: %s\n", err);
                chp_config_free(&cfg);
                return 1;
        }
        chp_log_set_level(cfg.log_level);
        chp_log_set_format(cfg.log_format);
        struct chp_relay_source src = {load_config, &a, chp_config_find_file(argc + 1, argv - 1)};
        atomic_int stop = 0;
        rc = chp_relay_run(&cfg, &src, &stop);
        chp_config_free(&cfg);
        return rc ? 2 : 0;
}

int main(int argc, char **argv)
{
        if (sodium_init() < 0) {
                fprintf(stderr, "chapard: libsodium failed to initialise\n");
                return 2;
        }
        chp_log_set_level(CHP_LOG_WARN);
        if (argc >= 2 && strcmp(argv[1], "verify") == 0)
                return cmd_verify(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "check-config") == 0)
                return cmd_check_config(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "keygen") == 0)
                return cmd_keygen(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "admin") == 0)
                return chp_admin_cli(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "admin-key") == 0)
                return chp_admin_cli_key(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "tenant-key") == 0)
                return chp_token_cli_tenant_key(argc - 2, argv + 2);
        if (argc >= 2 && strcmp(argv[1], "token") == 0)
                return chp_token_cli_token(argc - 2, argv + 2);
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
                return usage(stdout);
        if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
                printf("chapard %s\nprotocol %d\n", CHAPAR_VERSION, CHP_PROTO_VERSION);
                return 0;
        }
        return cmd_relay(argc - 1, argv + 1);
}
