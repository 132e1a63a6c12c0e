/* chapar.c — the chapar command: put, get and stat of end-to-end encrypted files.
 *
 *   chapar put FILE [--relay HOST:PORT] [--relay-key KEY] [--json] [--chunk-size BYTES] [--pad]
 *   chapar get TICKET [-o PATH] [--via HOST:PORT] [--json]
 *   chapar stat TICKET [--via HOST:PORT] [--json]
 *   chapar forget TICKET|FILE
 *   chapar relays [remove HOST:PORT]
 *
 * stdout carries only the result (the ticket, or one JSON object), so T=$(chapar put f) works;
 * progress goes to stderr when it is a terminal. Exit codes: 0 ok, 1 usage, 2 relay or network,
 * 3 integrity or authentication, 4 local I/O.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chapar.h"
#include "hash.h"
#include "net.h"
#include "ticket.h"

static struct chapar_client *current; /* for the SIGINT handler: cancel the running call */

static void on_sigint(int sig)
{
        (void)sig;
        if (current)
                chapar_cancel(current);
}

static int usage(void)
{
        fprintf(stderr,
                "usage: chapar put FILE [--relay HOST:PORT] [--relay-key KEY] [--json]\n"
                "                       [--chunk-size BYTES] [--pad] [--insecure-plaintext]\n"
                "       chapar get TICKET [-o PATH] [--via HOST:PORT] [--json]\n"
                "       chapar stat TICKET [--via HOST:PORT] [--json]\n"
                "       chapar offer TICKET --to PEER-KEY\n"
                "       chapar put|get|stat ... --trust-new-relay  (pin a new relay's key)\n"
                "       chapar forget TICKET|FILE  (drop the file's cached key)\n"
                "       chapar relays [remove HOST:PORT]  (list the pinned keys, or drop one)\n"
                "default relay: $CHAPAR_RELAY, else 127.0.0.1:7700\n");
        return 1;
}

struct progress {
        bool on;
        double start, last;
        const char *verb;
};

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
        struct progress *p = ctx;
        double t = chp_net_now_s();
        if (!p->on || (t - p->last < 0.1 && done < total))
                return;
        p->last = t;
        double el = t - p->start, rate = el > 0 ? (double)done / el : 0;
        double eta = rate > 0 ? (double)(total - done) / rate : 0;
        int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
        char bar[31];
        int fill = pct * 30 / 100;
        for (int i = 0; i < 30; i++)
                bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %3d%% %.1f/%.1f MB %.1f MB/s ETA %.0fs ", p->verb, bar, pct,
                (double)done / 1e6, (double)total / 1e6, rate / 1e6, eta);
        if (done >= total)
                fputc('\n', stderr);
}

/* A JSON string: quotes and control characters escaped. */
static void json_str(const char *s)
{
        putchar('"');
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20)
                        printf("\\u%04x", ch);
                else
                        putchar(ch);
        }
        putchar('"');
}

static int fail(struct chapar_client *c, const char *what, int rc)
{
        const char *detail = chapar_last_error(c);
        fprintf(stderr, "chapar: %s: %s%s%s\n", what, chapar_strerror(rc), *detail ? ": " : "",
                detail);
        return chapar_error_class(rc);
}

/* A warning libchapar left on a call that worked (a key cache it did not use, a pin it could
 * not record). */
static void show_warning(struct chapar_client *c)
{
        const char *w = chapar_last_error(c);
        if (strncmp(w, "warning: ", 9) == 0)
                fprintf(stderr, "chapar: %s\n", w);
}

/* trust: pin the relay's key when none is pinned for it (key, else the one it presents) */
static int connect_to(const char *relay, const uint8_t *key, bool plaintext, bool trust,
                      struct chapar_client **c)
{
        struct chapar_opts o = {.relay = relay,
                                .relay_key = key,
                                .insecure_plaintext = plaintext,
                                .trust_new_relay = trust};
        int rc = chapar_connect(&o, c);
        if (rc)
                return fail(*c, "cannot use the relay", rc);
        show_warning(*c);
        current = *c;
        return 0;
}

static int cmd_put(int argc, char **argv)
{
        const char *file = NULL, *relay = NULL;
        uint8_t key[CHAPAR_KEY_BYTES];
        bool have_key = false, json = false, plaintext = false, trust = false;
        struct chapar_put_opts po = {0};
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--relay") == 0 && i + 1 < argc) {
                        relay = argv[++i];
                } else if (strcmp(argv[i], "--relay-key") == 0 && i + 1 < argc) {
                        if (chp_hex_decode(argv[i + 1], strlen(argv[i + 1]), key, CHAPAR_KEY_BYTES) != 0) {
                                fprintf(stderr, "chapar: --relay-key takes 64 hex digits\n");
                                return 1;
                        }
                        have_key = true;
                        i++;
                } else if (strcmp(argv[i], "--json") == 0) {
                        json = true;
                } else if (strcmp(argv[i], "--pad") == 0) {
                        po.pad = true;
                } else if (strcmp(argv[i], "--insecure-plaintext") == 0) {
                        plaintext = true;
                } else if (strcmp(argv[i], "--trust-new-relay") == 0) {
                        trust = true;
                } else if (strcmp(argv[i], "--chunk-size") == 0 && i + 1 < argc) {
                        char *end;
                        unsigned long v = strtoul(argv[++i], &end, 10);
                        if (*end || v > UINT32_MAX)
                                return usage();
                        po.chunk_size = (uint32_t)v;
                } else if (argv[i][0] == '-' || file) {
                        return usage();
                } else {
                        file = argv[i];
                }
        }
        if (!file)
                return usage();
        struct chapar_client *c = NULL;
        /* a key given by --relay-key is pinned for the address when none is */
        int rc = connect_to(relay, have_key ? key : NULL, plaintext, trust || have_key, &c);
        if (rc) {
                chapar_close(c);
                return rc;
        }
        struct progress pg = {
                .on = isatty(STDERR_FILENO) && !json, .start = chp_net_now_s(), .verb = "put"};
        po.progress = show_progress;
        po.progress_ctx = &pg;
        struct chapar_put_result r;
        rc = chapar_put_path(c, file, &po, &r);
        if (rc) {
                rc = fail(c, file, rc);
                chapar_close(c);
                return rc;
        }
        show_warning(c);
        if (json) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(r.file_id, sizeof(r.file_id), hex);
                printf("{\"ticket\":");
                json_str(r.ticket);
                printf(",\"file_id\":\"%s\",\"bytes_total\":%llu,\"bytes_sent\":%llu,"
                       "\"chunks_total\":%u,\"chunks_sent\":%u,\"chunks_deduplicated\":%u,"
                       "\"seconds\":%.3f}\n",
                       hex, (unsigned long long)r.bytes_total, (unsigned long long)r.bytes_sent,
                       r.chunks_total, r.chunks_sent, r.chunks_deduplicated, r.seconds);
        } else {
                printf("%s\n", r.ticket);
        }
        chapar_close(c);
        return 0;
}

/* The relay to use for a ticket: --via, or the ticket's own (whose key it carries). */
static int ticket_client(const char *ticket, const char *via, bool plaintext, bool trust,
                         struct chapar_client **c)
{
        struct chp_ticket t;
        if (chp_ticket_parse(ticket, strlen(ticket), &t) != 0) {
                fprintf(stderr, "chapar: not a chapar ticket: %.40s...\n", ticket);
                return 1;
        }
        char addr[300];
        chp_ticket_relay_addr(&t, addr, sizeof(addr));
        return connect_to(via ? via : addr, via ? NULL : t.relay_key, plaintext, via && trust, c);
}

/* The arguments get and stat share: TICKET [--via HOST:PORT] [--json] [--insecure-plaintext],
 * and for get [-o PATH]. Connects to the relay they name. Returns 0 or the exit code. */
struct ticket_args {
        const char *ticket, *out, *via;
        bool json, plaintext, trust;
};

static int ticket_command(int argc, char **argv, bool with_out, struct ticket_args *a,
                          struct chapar_client **c)
{
        memset(a, 0, sizeof(*a));
        *c = NULL;
        for (int i = 0; i < argc; i++) {
                if (with_out && strcmp(argv[i], "-o") == 0 && i + 1 < argc)
                        a->out = argv[++i];
                else if (strcmp(argv[i], "--via") == 0 && i + 1 < argc)
                        a->via = argv[++i];
                else if (strcmp(argv[i], "--json") == 0)
                        a->json = true;
                else if (strcmp(argv[i], "--insecure-plaintext") == 0)
                        a->plaintext = true;
                else if (strcmp(argv[i], "--trust-new-relay") == 0)
                        a->trust = true;
                else if (argv[i][0] == '-' || a->ticket)
                        return usage();
                else
                        a->ticket = argv[i];
        }
        if (!a->ticket)
                return usage();
        int rc = ticket_client(a->ticket, a->via, a->plaintext, a->trust, c);
        if (rc) {
                chapar_close(*c);
                *c = NULL;
        }
        return rc;
}

static int cmd_get(int argc, char **argv)
{
        struct ticket_args a;
        struct chapar_client *c;
        int rc = ticket_command(argc, argv, true, &a, &c);
        if (rc)
                return rc;
        const char *ticket = a.ticket, *out = a.out;
        bool json = a.json;
        struct progress pg = {
                .on = isatty(STDERR_FILENO) && !json, .start = chp_net_now_s(), .verb = "get"};
        struct chapar_get_opts go = {.progress = show_progress, .progress_ctx = &pg};
        struct chapar_get_result r;
        rc = chapar_get(c, ticket, out, &go, &r);
        if (rc) {
                rc = fail(c, "get", rc);
                chapar_close(c);
                return rc;
        }
        if (json) {
                printf("{\"file\":");
                json_str(r.path);
                printf(",\"bytes_total\":%llu,\"bytes_received\":%llu,\"seconds\":%.3f}\n",
                       (unsigned long long)r.bytes_total, (unsigned long long)r.bytes_received,
                       r.seconds);
        } else {
                printf("%s\n", r.path);
        }
        chapar_close(c);
        return 0;
}

static int cmd_stat(int argc, char **argv)
{
        struct ticket_args a;
        struct chapar_client *c;
        int rc = ticket_command(argc, argv, false, &a, &c);
        if (rc)
                return rc;
        const char *ticket = a.ticket;
        bool json = a.json;
        struct chapar_stat_result r;
        rc = chapar_stat(c, ticket, &r);
        if (rc) {
                rc = fail(c, "stat", rc);
                chapar_close(c);
                return rc;
        }
        if (json) {
                printf("{\"complete\":%s,\"stored_bytes\":%llu,\"chunks\":%u,"
                       "\"chunks_present\":%u,\"chunk_size\":%u,\"created\":%llu,"
                       "\"expires\":%llu",
                       r.complete ? "true" : "false", (unsigned long long)r.stored_bytes, r.chunks,
                       r.chunks_present, r.chunk_size, (unsigned long long)r.created,
                       (unsigned long long)r.expires);
                if (r.has_meta) {
                        printf(",\"size\":%llu,\"name\":", (unsigned long long)r.plain_size);
                        json_str(r.name);
                        printf(",\"mime\":");
                        json_str(r.mime);
                }
                printf("}\n");
        } else {
                if (r.has_meta)
                        printf("name      %s\nsize      %llu bytes\ntype      %s\n", r.name,
                               (unsigned long long)r.plain_size, r.mime[0] ? r.mime : "-");
                printf("state     %s (%u of %u chunks)\nstored    %llu bytes in %u-byte "
                       "chunks\nexpires   %llu\n",
                       r.complete ? "complete" : "uploading", r.chunks_present, r.chunks,
                       (unsigned long long)r.stored_bytes, r.chunk_size,
                       (unsigned long long)r.expires);
        }
        chapar_close(c);
        return 0;
}

/* The ticket's relay offers the file to a peer relay (which fetches it in the background). */
static int cmd_offer(int argc, char **argv)
{
        const char *ticket = NULL;
        uint8_t key[CHAPAR_KEY_BYTES];
        bool have_key = false;
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
                        if (chp_hex_decode(argv[i + 1], strlen(argv[i + 1]), key, CHAPAR_KEY_BYTES) != 0) {
                                fprintf(stderr, "chapar: --to takes a relay key (64 hex digits)\n");
                                return 1;
                        }
                        have_key = true;
                        i++;
                } else if (argv[i][0] == '-' || ticket) {
                        return usage();
                } else {
                        ticket = argv[i];
                }
        }
        if (!ticket || !have_key)
                return usage();
        struct chapar_client *c = NULL;
        int rc = ticket_client(ticket, NULL, false, false, &c);
        if (rc) {
                chapar_close(c);
                return rc;
        }
        rc = chapar_offer(c, ticket, key);
        if (rc)
                rc = fail(c, "offer", rc);
        chapar_close(c);
        return rc;
}

/* Removes the cached key of a ticket's file or of a file's content: the next put of it makes a
 * new key. Exit 0 when something was removed, 1 when nothing was. */
static int cmd_forget(int argc, char **argv)
{
        if (argc != 1 || argv[0][0] == '-')
                return usage();
        unsigned n;
        int rc = chapar_forget(NULL, argv[0], &n);
        bool ticket = strncmp(argv[0], "chapar://", 9) == 0;
        if (rc == CHAPAR_EUSAGE) {
                fprintf(stderr, "chapar: forget: the ticket carries no file key (#...): nothing "
                                "to match\n");
                return 1;
        }
        if (rc) {
                fprintf(stderr, "chapar: forget: %s: %s\n", ticket ? "ticket" : argv[0],
                        rc == CHAPAR_EIO ? "cannot be read" : chapar_strerror(rc));
                return chapar_error_class(rc);
        }
        if (n == 0) {
                fprintf(stderr, "chapar: forget: no cached key for %s\n",
                        ticket ? "this ticket" : argv[0]);
                return 1;
        }
        printf("forgot the cached key of %s (%u entr%s)\n", ticket ? "the ticket's file" : argv[0],
               n, n == 1 ? "y" : "ies");
        return 0;
}

static void print_relay(void *ctx, const char *addr, const uint8_t key[CHAPAR_KEY_BYTES])
{
        (void)ctx;
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(key, CHAPAR_KEY_BYTES, hex);
        printf("%s %s\n", addr, hex);
}

/* chapar relays: the pins, "HOST:PORT KEY" a line; chapar relays remove HOST:PORT. */
static int cmd_relays(int argc, char **argv)
{
        if (argc == 0) {
                int rc = chapar_relays_list(NULL, print_relay, NULL);
                if (rc)
                        fprintf(stderr, "chapar: relays: cannot read the known-relays file\n");
                return chapar_error_class(rc);
        }
        if (argc != 2 || strcmp(argv[0], "remove") != 0)
                return usage();
        int rc = chapar_relays_remove(NULL, argv[1]);
        if (rc == CHAPAR_ENOTFOUND) {
                fprintf(stderr, "chapar: relays: no key is pinned for %s\n", argv[1]);
                return 1;
        }
        if (rc) {
                fprintf(stderr, "chapar: relays: cannot rewrite the known-relays file\n");
                return chapar_error_class(rc);
        }
        printf("removed the pinned key of %s\n", argv[1]);
        return 0;
}

int main(int argc, char **argv)
{
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        if (argc < 2)
                return usage();
        if (strcmp(argv[1], "put") == 0)
                return cmd_put(argc - 2, argv + 2);
        if (strcmp(argv[1], "get") == 0)
                return cmd_get(argc - 2, argv + 2);
        if (strcmp(argv[1], "stat") == 0)
                return cmd_stat(argc - 2, argv + 2);
        if (strcmp(argv[1], "offer") == 0)
                return cmd_offer(argc - 2, argv + 2);
        if (strcmp(argv[1], "forget") == 0)
                return cmd_forget(argc - 2, argv + 2);
        if (strcmp(argv[1], "relays") == 0)
                return cmd_relays(argc - 2, argv + 2);
        return usage();
}
