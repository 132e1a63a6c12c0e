/* chapar.c — the chapar command: put, get, stat and offer of end-to-end encrypted files.
 *
 *   chapar put FILE [--relay HOST:PORT] [--relay-key KEY] [--token TOKEN] [--name NAME] ...
 *   chapar get TICKET|DESCRIPTOR [-o PATH|DIR|-] [--via HOST:PORT] [--token TOKEN] [--json]
 *   chapar stat TICKET|DESCRIPTOR [--via HOST:PORT] [--json]
 *   chapar offer TICKET --to PEER-KEY [--token TOKEN]
 *   chapar forget TICKET|FILE
 *   chapar relays [remove HOST:PORT]
 *   chapar help | --help | -h | --version
 *
 * stdout carries only the result (the ticket, the path, one JSON object, or with -o - the file),
 * so T=$(chapar put f) works; progress and notes go to stderr. put --json also describes the file
 * as a MIMI ExternalPart (mimi.h), and get and stat take such a DESCRIPTOR in place of a ticket.
 * Exit codes (chapar_error_class): 0 ok, 1 usage, 2 relay or network, 3 integrity or
 * authentication, 4 local I/O (also a file that changed while put read it).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chapar.h"
#include "hash.h"
#include "http_parse.h"
#include "mimi.h"
#include "net.h"
#include "proto.h"
#include "ticket.h"

#ifndef CHAPAR_VERSION
#error "CHAPAR_VERSION is CMake's PROJECT_VERSION, passed as a compile definition"
#endif

#define EXIT_USAGE 1 /* chapar_error_class(CHAPAR_EUSAGE) */

static struct chapar_client *current; /* for the SIGINT handler: cancel the running call */

static void on_sigint(int sig)
{
        (void)sig;
        if (current)
                chapar_cancel(current);
}

/* The whole usage: to stdout when asked for (exit 0), to stderr after a usage error. */
static int usage(FILE *to)
{
        fputs("usage: chapar COMMAND [ARGUMENTS]\n"
              "\n"
              "Sends and receives files through a chapar relay, encrypted end to end: put\n"
              "prints a ticket (chapar://HOST:PORT/RELAY-KEY/FILE-ID#FILE-KEY) that is all a\n"
              "recipient needs; the file key after '#' never reaches a relay.\n"
              "\n"
              "commands:\n"
              "  put FILE [--relay HOST:PORT] [--relay-key KEY] [--token TOKEN] [--name NAME]\n"
              "           [--type MEDIA-TYPE] [--chunk-size BYTES] [--no-pad] [--json]\n"
              "      Encrypts FILE, uploads it and prints its ticket. Run again after a cut, it\n"
              "      sends only what the relay lacks; the same content put again from this\n"
              "      machine sends nothing.\n"
              "      --relay HOST:PORT    the relay (default: $CHAPAR_RELAY or 127.0.0.1:7700)\n"
              "      --relay-key KEY      the relay's public key, 64 hex digits (its ready file's\n"
              "                           pubkey=); pinned for the address in\n"
              "                           ~/.config/chapar/known_relays, after which --relay\n"
              "                           alone is enough. A relay with no pin and no\n"
              "                           --relay-key is refused (exit 3)\n"
              "      --token TOKEN        the upload token a relay with tenants needs (from the\n"
              "                           messenger's backend; default: $CHAPAR_TOKEN)\n"
              "      --name NAME          the name the recipient sees (default: FILE's own)\n"
              "      --type MEDIA-TYPE    the file's media type, stored encrypted (text/plain;\n"
              "                           default: none, application/octet-stream in --json)\n"
              "      --json               the ticket and the transfer in one JSON object, with\n"
              "                           \"mimi_external_part\": the file as a MIMI ExternalPart\n"
              "                           (docs/interop.md) for a messenger to send\n"
              "      --chunk-size BYTES   a power of two, 65536 to 8388608 (default 1048576)\n"
              "      --no-pad             do not pad: by default the size is padded (at least\n"
              "                           4 KiB, then Padme buckets, at most about 12%) so the\n"
              "                           relay learns little of the real size\n"
              "      --ticket-out PATH    write the ticket to PATH as soon as the relay holds\n"
              "                           the file's manifest, before the chunks go: a recipient\n"
              "                           can start its get while the upload runs\n"
              "  get TICKET|DESCRIPTOR [-o PATH|DIR|-] [--via HOST:PORT] [--json]\n"
              "      Downloads the file, verifies every chunk and decrypts it; prints where it\n"
              "      went. Without -o it takes the sender's name, made safe (no path, no\n"
              "      leading dot, no control characters), in the current directory; an\n"
              "      existing file is never overwritten: the name becomes NAME (1).EXT,\n"
              "      NAME (2).EXT, ...\n"
              "      Run again after a cut, it resumes.\n"
              "      DESCRIPTOR: a MIMI ExternalPart as put --json writes it (the object, or\n"
              "      all of put --json's output): its JSON text, a file holding it, or - to\n"
              "      read it from stdin. The file must then also have the descriptor's size\n"
              "      and contentHash (SHA-256), else it is removed (exit 3)\n"
              "      -o PATH              write PATH, which must not exist (else exit 4)\n"
              "      -o DIR               the sender's name (made safe) in the directory DIR\n"
              "      -o -                 write the file to stdout, each chunk once verified; a\n"
              "                           failure part-way leaves stdout truncated and the exit\n"
              "                           code non-zero: use the output only after exit 0\n"
              "      --via HOST:PORT      fetch through this relay (a peer of the ticket's)\n"
              "      --token TOKEN        an upload token with the pull scope, for a --via relay\n"
              "                           with tenants to fetch the file from the ticket's\n"
              "                           relay (none is needed to download)\n"
              "  stat TICKET|DESCRIPTOR [--via HOST:PORT] [--json]\n"
              "      Shows what the relay holds of the file: its name, size and type (the\n"
              "      ticket's key opens them), whether the upload is complete, and when it was\n"
              "      created and expires (UTC; --json gives unix seconds).\n"
              "  offer TICKET --to PEER-KEY [--token TOKEN]\n"
              "      Asks the ticket's relay to offer the file to the peer relay whose public\n"
              "      key is PEER-KEY; that relay fetches it in the background. Use it when the\n"
              "      recipient gets files through that relay, so it is there before they ask.\n"
              "      The two relays must be configured as peers. A relay with tenants needs a\n"
              "      token with the offer scope (--token, default: $CHAPAR_TOKEN).\n"
              "  forget TICKET|FILE\n"
              "      Drops the cached file key of a put (this machine keeps it only while the\n"
              "      relay keeps the file): a later put of the same content uses a new key.\n"
              "  relays [remove HOST:PORT]\n"
              "      Lists the pinned relay keys (HOST:PORT KEY a line), or drops one.\n"
              "  help, --help, -h         this text\n"
              "  --version                the version of chapar and of its protocol\n"
              "\n"
              "flags of put, get and stat:\n"
              "  --json                   print one JSON object instead of the ticket or path\n"
              "  --insecure-plaintext     no transport encryption (the relay must allow it)\n"
              "  --trust-new-relay        pin the key a relay with no pin presents (trust on\n"
              "                           first use; put --relay, get and stat --via)\n"
              "\n"
              "flags of put and get:\n"
              "  --congestion-control NAME\n"
              "                           ask the kernel for this TCP congestion control (bbr,\n"
              "                           cubic, reno); refused (not in\n"
              "                           net.ipv4.tcp_allowed_congestion_control), the system's\n"
              "                           runs. --json says which ran (\"congestion\")\n"
              "  --connections N|auto     TCP connections to stripe the chunks over (1..8;\n"
              "                           default auto: 2, more while that pays)\n"
              "  --retry-for SECONDS      after a cut, reconnect and resume while the transfer\n"
              "                           moved within this long (default 120; 0: fail at once)\n"
              "\n"
              "exit codes:\n"
              "  0  ok\n"
              "  1  usage: an unknown command or flag, a missing or malformed argument\n"
              "  2  relay or network: the relay cannot be reached, refused the request (also\n"
              "     for want of a valid upload token, over a quota or a limit), has no such\n"
              "     file or spoke wrongly; also canceled, or out of memory\n"
              "  3  integrity or authentication: a chunk or the metadata failed verification\n"
              "     (wrong key or tampered data), or the relay's key is unknown (no pin, no\n"
              "     --relay-key) or not the pinned one\n"
              "  4  local I/O: a local file cannot be read or written, or the output exists;\n"
              "     also a file that changed while put read it (nothing inconsistent was sent:\n"
              "     run put again)\n",
              to);
        return to == stdout ? 0 : EXIT_USAGE;
}

/* A usage error: what is wrong, and where the usage is. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("chapar: ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n(chapar --help shows the usage)\n", stderr);
        return EXIT_USAGE;
}

/* Whether argv[i] asks for help. */
static bool is_help(const char *a)
{
        return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* An argument the command does not know: help, a flag of valued (space-separated) given no
 * value, an unknown flag, or a second operand. */
static int bad_arg(const char *cmd, const char *valued, int argc, char **argv, int i)
{
        const char *a = argv[i];
        size_t n = strlen(a);
        if (is_help(a))
                return usage(stdout);
        for (const char *p = valued; a[0] == '-' && (p = strstr(p, a)); p += n)
                if ((p == valued || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0') && i + 1 == argc)
                        return usage_error("%s: %s needs a value", cmd, a);
        if (a[0] == '-' && strcmp(a, "-") != 0)
                return usage_error("%s: unknown flag %s", cmd, a);
        return usage_error("%s: unexpected argument %s", cmd, a);
}

/* A relay address has a port: HOST:PORT or [IPv6]:PORT. 0, or the usage exit code after saying
 * what is missing. what is the flag (or variable) it came from. */
static int relay_addr_ok(const char *what, const char *v)
{
        const char *colon = v[0] == '[' ? strstr(v, "]:") : strrchr(v, ':');
        if (colon && v[0] == '[')
                colon++;
        if (!colon || colon == v || !colon[1] ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return usage_error("%s %s has no port: give HOST:PORT (e.g. 127.0.0.1:7700, "
                                   "[::1]:7700)",
                                   what, v);
        if (v[0] != '[' && memchr(v, ':', (size_t)(colon - v)))
                return usage_error("%s %s: write an IPv6 address in brackets, [ADDRESS]:PORT", what,
                                   v);
        return 0;
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

/* A JSON string: quotes, backslashes and controls escaped, invalid UTF-8 as U+FFFD. */
static void json_str(const char *s)
{
        putchar('"');
        for (size_t left = strlen(s); left;) {
                unsigned char ch = (unsigned char)*s;
                size_t l = chp_http_utf8_len((const unsigned char *)s, left);
                if (l == 0)
                        fputs("\\ufffd", stdout);
                else if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20 || ch == 0x7f)
                        printf("\\u%04x", ch);
                else
                        fwrite(s, 1, l, stdout);
                l = l ? l : 1;
                s += l;
                left -= l;
        }
        putchar('"');
}

/* A string from elsewhere (a sender's file name, a MIME type) shown on a terminal: controls
 * (C0, DEL, C1) and bytes that are not UTF-8 as \xNN, so that nothing in it drives the
 * terminal. */
static void show(FILE *to, const char *s)
{
        for (size_t left = strlen(s); left;) {
                const unsigned char *p = (const unsigned char *)s;
                size_t l = chp_http_utf8_len(p, left);
                bool ctl =
                    l == 1 ? p[0] < 0x20 || p[0] == 0x7f : l == 2 && p[0] == 0xc2 && p[1] < 0xa0;
                if (l == 0 || ctl) {
                        l = l ? l : 1;
                        for (size_t i = 0; i < l; i++)
                                fprintf(to, "\\x%02x", p[i]);
                } else {
                        fwrite(s, 1, l, to);
                }
                s += l;
                left -= l;
        }
}

/* unix seconds as ISO 8601 UTC (2026-11-30T10:00:00Z); 0 is "-". */
static const char *iso_date(uint64_t t, char out[32])
{
        struct tm tm;
        time_t tt = (time_t)t;
        if (t == 0 || !gmtime_r(&tt, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(out, 32, "-");
        return out;
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

/* trust: pin the relay's key when none is pinned for it (key, else the one it presents); token:
 * the upload token to present, or NULL */
static int connect_to(const char *relay, const uint8_t *key, bool plaintext, bool trust,
                      const char *token, struct chapar_client **c)
{
        struct chapar_opts o = {.relay = relay,
                                .relay_key = key,
                                .insecure_plaintext = plaintext,
                                .trust_new_relay = trust};
        int rc = chapar_connect_token(&o, token, c);
        if (rc)
                return fail(*c, "cannot use the relay", rc);
        show_warning(*c);
        current = *c;
        return 0;
}

/* The transfer flags put and get share (chapar_set_transport). */
struct xfer_args {
        const char *congestion;
        uint32_t connections;   /* 0 = auto */
        int32_t retry_s;        /* 0 = the library's default; negative = never */
        const char *ticket_out; /* put only */
};

/* Takes argv[*i] (and its value) when it is a transfer flag: 1 taken, 0 not one, or -code. */
static int xfer_flag(int argc, char **argv, int *i, bool put, struct xfer_args *x)
{
        const char *f = argv[*i];
        if (*i + 1 >= argc)
                return 0;
        if (strcmp(f, "--congestion-control") == 0) {
                x->congestion = argv[++*i];
                if (!*x->congestion || strlen(x->congestion) >= CHAPAR_CC_MAX)
                        return -usage_error("--congestion-control takes an algorithm name "
                                            "(bbr, cubic, reno), at most %d bytes",
                                            CHAPAR_CC_MAX - 1);
                return 1;
        }
        if (strcmp(f, "--connections") == 0) {
                const char *v = argv[++*i];
                char *end;
                unsigned long n = strcmp(v, "auto") == 0 ? 0 : strtoul(v, &end, 10);
                if (strcmp(v, "auto") != 0 &&
                    (*v < '0' || *v > '9' || *end || n < 1 || n > CHAPAR_CONNECTIONS_MAX))
                        return -usage_error("--connections takes 1 to %d, or auto",
                                            CHAPAR_CONNECTIONS_MAX);
                x->connections = (uint32_t)n;
                return 1;
        }
        if (strcmp(f, "--retry-for") == 0) {
                const char *v = argv[++*i];
                char *end;
                unsigned long n = strtoul(v, &end, 10);
                if (*v < '0' || *v > '9' || *end || n > 86400)
                        return -usage_error("--retry-for takes seconds, 0 to 86400");
                x->retry_s = n ? (int32_t)n : -1;
                return 1;
        }
        if (put && strcmp(f, "--ticket-out") == 0) {
                x->ticket_out = argv[++*i];
                return 1;
        }
        return 0;
}

/* put --ticket-out: the ticket, written to a temporary name and renamed, so a reader polling
 * for the file never sees half of it. */
static void write_ticket_out(void *ctx, const char *ticket)
{
        const char *path = ctx;
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", ticket) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
                fprintf(stderr, "chapar: cannot write the ticket to %s: %s\n", path,
                        strerror(errno));
}

/* Applies the transfer flags to c. */
static int xfer_apply(struct chapar_client *c, const struct xfer_args *x)
{
        struct chapar_transport t = {.size = sizeof(t),
                                     .congestion = x->congestion,
                                     .connections = x->connections,
                                     .retry_s = x->retry_s};
        if (x->ticket_out) {
                t.on_ticket = write_ticket_out;
                t.ctx = (void *)x->ticket_out;
        }
        int rc = chapar_set_transport(c, &t);
        return rc ? fail(c, "transport", rc) : 0;
}

/* The transfer's fields of --json output. */
static void xfer_json(struct chapar_client *c)
{
        struct chapar_transfer_stats st = {.size = sizeof(st)};
        if (chapar_transfer_stats(c, &st) != 0)
                return;
        printf(",\"connections\":%u,\"reconnects\":%u,\"bytes_resent\":%llu,\"congestion\":",
               st.connections, st.reconnects, (unsigned long long)st.bytes_resent);
        json_str(st.congestion);
}

/* The file put would send, checked before any connection: a regular file this user can read. */
static int put_file_ok(const char *file)
{
        struct stat st;
        if (stat(file, &st) != 0 || access(file, R_OK) != 0) {
                fprintf(stderr, "chapar: cannot read %s: %s\n", file, strerror(errno));
                return 4;
        }
        if (S_ISDIR(st.st_mode)) {
                fprintf(stderr,
                        "chapar: %s is a directory; put sends one file (pack a directory first, "
                        "e.g. tar -cf dir.tar DIR)\n",
                        file);
                return 4;
        }
        if (!S_ISREG(st.st_mode)) {
                fprintf(stderr, "chapar: %s is not a regular file; put sends regular files only\n",
                        file);
                return 4;
        }
        return 0;
}

/* What put --json's descriptor says of the content, and the file's state when it was read. */
struct content_hash {
        uint8_t sha256[CHP_HASH_BYTES];
        uint64_t size;
        struct stat st;
};

/* SHA-256 of an open file from offset 0 to its end; *size gets the bytes read. 0 or
 * CHAPAR_EIO / CHAPAR_ENOMEM. */
static int hash_fd(int fd, uint8_t out[CHP_HASH_BYTES], uint64_t *size)
{
        enum { BUF = 1 << 20 };
        struct chp_sha256 h = {0};
        unsigned char *buf = malloc(BUF);
        int rc = CHAPAR_ENOMEM;
        *size = 0;
        if (!buf || chp_sha256_init(&h) != 0)
                goto out;
        for (;;) {
                ssize_t n = read(fd, buf, BUF);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        rc = CHAPAR_EIO;
                        goto out;
                }
                if (n == 0)
                        break;
                if (chp_sha256_update(&h, buf, (size_t)n) != 0)
                        goto out;
                *size += (uint64_t)n;
        }
        rc = chp_sha256_final(&h, out) == 0 ? 0 : CHAPAR_ENOMEM;
out:
        chp_sha256_free(&h);
        free(buf);
        return rc;
}

/* The SHA-256 of a file, read by a thread of its own while the put reads and sends it: the
 * descriptor's pass over the file overlaps the upload instead of coming before it. */
struct hash_job {
        int fd;
        int rc;
        bool threaded;
        pthread_t th;
        struct content_hash ch;
};

static void *hash_run(void *arg)
{
        struct hash_job *j = arg;
        j->rc = hash_fd(j->fd, j->ch.sha256, &j->ch.size);
        return NULL;
}

/* Opens path and starts hashing it (in the calling thread when no thread can be made). 0, or
 * the exit code after saying why not; on 0, hash_finish must follow. */
static int hash_start(const char *path, struct hash_job *j)
{
        memset(j, 0, sizeof(*j));
        j->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (j->fd < 0 || fstat(j->fd, &j->ch.st) != 0) {
                fprintf(stderr, "chapar: %s: %s\n", path, strerror(errno));
                if (j->fd >= 0)
                        close(j->fd);
                return chapar_error_class(CHAPAR_EIO);
        }
        j->threaded = pthread_create(&j->th, NULL, hash_run, j) == 0;
        if (!j->threaded)
                hash_run(j);
        return 0;
}

/* Waits for the hash; 0, or the exit code after saying why there is none. */
static int hash_finish(const char *path, struct hash_job *j)
{
        if (j->threaded)
                pthread_join(j->th, NULL);
        close(j->fd);
        int rc = j->rc;
        if (!rc && j->ch.size != (uint64_t)j->ch.st.st_size)
                rc = CHAPAR_ECHANGED;
        if (rc)
                fprintf(stderr, "chapar: %s: cannot hash it for the MIMI descriptor: %s\n", path,
                        chapar_strerror(rc));
        return rc ? chapar_error_class(rc) : 0;
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
               a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
               a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* put --json's "mimi_external_part" (mimi.h, docs/interop.md) for the put r of file, as JSON
 * into out: the content hashed before the put, if the file is still what was hashed; the expiry
 * the relay tells (left out when it does not). 0 or the exit code after saying why not. */
static int mimi_part(struct chapar_client *c, const char *file, const struct chapar_put_opts *po,
                     const struct chapar_put_result *r, const struct content_hash *ch, char *out,
                     size_t cap)
{
        struct stat now;
        if (stat(file, &now) != 0 || !same_stat(&now, &ch->st)) {
                fprintf(stderr,
                        "chapar: %s: %s (no descriptor for content that may not be "
                        "what was sent)\n",
                        file, chapar_strerror(CHAPAR_ECHANGED));
                return chapar_error_class(CHAPAR_ECHANGED);
        }
        struct chp_mimi_part p = {.size = ch->size};
        if (chp_ticket_parse(r->ticket, strlen(r->ticket), &p.ticket) != 0 || !p.ticket.has_key) {
                fprintf(stderr, "chapar: put: the library returned a ticket this tool cannot "
                                "read\n");
                return chapar_error_class(CHAPAR_EPROTO);
        }
        memcpy(p.content_hash, ch->sha256, sizeof(p.content_hash));
        snprintf(p.content_type, sizeof(p.content_type), "%s",
                 po->mime ? po->mime : "application/octet-stream");
        const char *slash = strrchr(file, '/');
        snprintf(p.filename, sizeof(p.filename), "%s",
                 po->name ? po->name
                 : slash  ? slash + 1
                          : file);
        struct chapar_stat_result st;
        int rc = chapar_stat(c, r->ticket, &st);
        if (rc == 0 && !st.times_withheld && st.expires <= UINT32_MAX) {
                p.has_expires = true;
                p.expires = (uint32_t)st.expires;
        } else {
                fprintf(stderr, "chapar: put: the relay did not tell when the file expires: the "
                                "descriptor has no expires\n");
        }
        ssize_t n = chp_mimi_format(&p, out, cap);
        explicit_bzero(&p, sizeof(p));
        if (n < 0) {
                fprintf(stderr, "chapar: put: cannot write the MIMI descriptor\n");
                return chapar_error_class(CHAPAR_EPROTO);
        }
        return 0;
}

static int cmd_put(int argc, char **argv)
{
        const char *file = NULL, *relay = NULL, *token = NULL;
        uint8_t key[CHAPAR_KEY_BYTES];
        bool have_key = false, json = false, plaintext = false, trust = false;
        struct chapar_put_opts po = {0};
        struct xfer_args xa = {0};
        for (int i = 0; i < argc; i++) {
                int x = xfer_flag(argc, argv, &i, true, &xa);
                if (x < 0)
                        return -x;
                if (x > 0)
                        continue;
                if (strcmp(argv[i], "--relay") == 0 && i + 1 < argc) {
                        relay = argv[++i];
                } else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) {
                        token = argv[++i];
                } else if (strcmp(argv[i], "--relay-key") == 0 && i + 1 < argc) {
                        if (chp_hex_decode(argv[i + 1], strlen(argv[i + 1]), key,
                                           CHAPAR_KEY_BYTES) != 0)
                                return usage_error("--relay-key takes 64 hex digits");
                        have_key = true;
                        i++;
                } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
                        po.name = argv[++i];
                } else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
                        po.mime = argv[++i];
                } else if (strcmp(argv[i], "--json") == 0) {
                        json = true;
                } else if (strcmp(argv[i], "--pad") == 0) {
                        po.pad = true; /* the default now; still accepted */
                } else if (strcmp(argv[i], "--no-pad") == 0) {
                        po.no_pad = true;
                } else if (strcmp(argv[i], "--insecure-plaintext") == 0) {
                        plaintext = true;
                } else if (strcmp(argv[i], "--trust-new-relay") == 0) {
                        trust = true;
                } else if (strcmp(argv[i], "--chunk-size") == 0 && i + 1 < argc) {
                        char *end;
                        unsigned long v = strtoul(argv[++i], &end, 10);
                        if (*end || end == argv[i] || v > UINT32_MAX)
                                return usage_error("--chunk-size takes a number of bytes: %s",
                                                   argv[i]);
                        po.chunk_size = (uint32_t)v;
                } else if (argv[i][0] == '-' || file) {
                        return bad_arg("put",
                                       "--relay --relay-key --token --name --type "
                                       "--chunk-size --congestion-control --connections "
                                       "--retry-for --ticket-out",
                                       argc, argv, i);
                } else {
                        file = argv[i];
                }
        }
        if (!file)
                return usage_error("put: which file? chapar put FILE");
        if (po.name && strlen(po.name) > 255)
                return usage_error("--name: at most 255 bytes");
        if (po.mime && (!*po.mime || strlen(po.mime) > CHP_E2E_MIME_MAX))
                return usage_error("--type: a media type (text/plain), at most %d bytes",
                                   CHP_E2E_MIME_MAX);
        const char *env = getenv("CHAPAR_RELAY");
        int rc = relay         ? relay_addr_ok("--relay", relay)
                 : env && *env ? relay_addr_ok("$CHAPAR_RELAY", env)
                               : 0;
        if (rc || (rc = put_file_ok(file)))
                return rc;
        if (!token)
                token = getenv("CHAPAR_TOKEN");
        struct chapar_client *c = NULL;
        /* a key given by --relay-key is pinned for the address when none is */
        rc = connect_to(relay, have_key ? key : NULL, plaintext, trust || have_key, token, &c);
        if (rc) {
                chapar_close(c);
                return rc;
        }
        if ((rc = xfer_apply(c, &xa))) {
                chapar_close(c);
                return rc;
        }
        struct progress pg = {
            .on = isatty(STDERR_FILENO) && !json, .start = chp_net_now_s(), .verb = "put"};
        po.progress = show_progress;
        po.progress_ctx = &pg;
        struct chapar_put_result r;
        /* --json describes the file as a MIMI ExternalPart: its SHA-256 is read while the put
         * runs; a change to the file between the two reads shows in its stat afterwards */
        struct hash_job hj;
        if (json && (rc = hash_start(file, &hj)) != 0) {
                chapar_close(c);
                return rc;
        }
        rc = chapar_put_path(c, file, &po, &r);
        int hash_rc = json ? hash_finish(file, &hj) : 0;
        if (rc) {
                if (rc == CHAPAR_EAUTH && !(token && *token))
                        fprintf(stderr, "chapar: this relay takes uploads with an upload token "
                                        "only: pass --token TOKEN or set CHAPAR_TOKEN\n");
                rc = fail(c, file, rc);
                chapar_close(c);
                return rc;
        }
        show_warning(c);
        char mimi[CHP_MIMI_FORMAT_MAX];
        if (json && (rc = hash_rc ? hash_rc
                                  : mimi_part(c, file, &po, &r, &hj.ch, mimi, sizeof(mimi))) != 0) {
                chapar_close(c);
                return rc;
        }
        if (json) {
                char hex[CHP_HASH_HEXBYTES];
                chp_hex_encode(r.file_id, sizeof(r.file_id), hex);
                printf("{\"ticket\":");
                json_str(r.ticket);
                printf(",\"file_id\":\"%s\",\"bytes_total\":%llu,\"bytes_sent\":%llu,"
                       "\"chunks_total\":%u,\"chunks_sent\":%u,\"chunks_deduplicated\":%u,"
                       "\"seconds\":%.3f",
                       hex, (unsigned long long)r.bytes_total, (unsigned long long)r.bytes_sent,
                       r.chunks_total, r.chunks_sent, r.chunks_deduplicated, r.seconds);
                xfer_json(c);
                printf(",\"mimi_external_part\":%s}\n", mimi);
        } else {
                printf("%s\n", r.ticket);
        }
        chapar_close(c);
        return 0;
}

/* The relay to use for a ticket: --via, or the ticket's own (whose key it carries). */
static int ticket_client(const char *ticket, const char *via, bool plaintext, bool trust,
                         const char *token, struct chapar_client **c)
{
        struct chp_ticket t;
        if (chp_ticket_parse(ticket, strlen(ticket), &t) != 0)
                return usage_error("not a chapar ticket (chapar://HOST:PORT/KEY/ID#KEY): %.40s%s",
                                   ticket, strlen(ticket) > 40 ? "..." : "");
        char addr[300];
        chp_ticket_relay_addr(&t, addr, sizeof(addr));
        return connect_to(via ? via : addr, via ? NULL : t.relay_key, plaintext, via && trust,
                          token, c);
}

/* The arguments get and stat share: TICKET [--via HOST:PORT] [--json] [--insecure-plaintext],
 * and for get [-o PATH]. Connects to the relay they name. Returns 0 or the exit code; -1 when
 * the usage was asked for and printed (the command exits 0). */
struct ticket_args {
        const char *ticket, *out, *via, *token;
        bool json, plaintext, trust;
        struct xfer_args xfer; /* get only */
        bool mimi;             /* the operand was a MIMI descriptor: */
        struct chp_mimi_part part;       /* what it said, */
        char ticket_buf[CHP_TICKET_MAX]; /* and the ticket made of it (ticket points here) */
};

/* Reads at most CHP_MIMI_JSON_MAX + 1 bytes of fd into buf; the count, or -1. */
static ssize_t read_upto(int fd, char *buf, size_t cap)
{
        size_t n = 0;
        while (n < cap) {
                ssize_t r = read(fd, buf + n, cap - n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -1;
                if (r == 0)
                        break;
                n += (size_t)r;
        }
        return (ssize_t)n;
}

/* The operand of get or stat that is not a ticket: a MIMI descriptor (docs/interop.md) given as
 * its JSON text (it begins with '{'), as "-" (read from stdin) or as a file's path; the ticket it
 * names goes to a->ticket_buf. 0, or the exit code after saying what is wrong. */
static int load_descriptor(const char *arg, struct ticket_args *a)
{
        const char *text = arg + strspn(arg, " \t\r\n");
        size_t len = strlen(text);
        char *buf = NULL;
        int rc = 0;
        if (*text != '{') {
                int fd = strcmp(arg, "-") == 0 ? STDIN_FILENO : open(arg, O_RDONLY | O_CLOEXEC);
                ssize_t n = -1;
                if (fd >= 0 && (buf = malloc(CHP_MIMI_JSON_MAX + 1)))
                        n = read_upto(fd, buf, CHP_MIMI_JSON_MAX + 1);
                if (fd > STDIN_FILENO)
                        close(fd);
                if (n < 0) {
                        free(buf);
                        return usage_error("not a chapar ticket (chapar://HOST:PORT/KEY/ID#KEY) "
                                           "nor a readable MIMI descriptor file: %.40s%s",
                                           arg, strlen(arg) > 40 ? "..." : "");
                }
                text = buf;
                len = (size_t)n;
        }
        const char *why = "";
        if (len > CHP_MIMI_JSON_MAX) {
                rc = usage_error("the MIMI descriptor is longer than %d bytes", CHP_MIMI_JSON_MAX);
        } else if (chp_mimi_parse(text, len, &a->part, &why) != 0) {
                rc = usage_error("not a usable MIMI descriptor: %s", why);
        } else if (chp_ticket_format(&a->part.ticket, a->ticket_buf, sizeof(a->ticket_buf)) < 0) {
                rc = usage_error("not a usable MIMI descriptor: its url does not make a ticket");
        } else {
                a->ticket = a->ticket_buf;
                a->mimi = true;
        }
        if (buf)
                explicit_bzero(buf, CHP_MIMI_JSON_MAX + 1);
        free(buf);
        return rc;
}

static int ticket_command(const char *cmd, int argc, char **argv, bool with_out,
                          struct ticket_args *a, struct chapar_client **c)
{
        memset(a, 0, sizeof(*a));
        *c = NULL;
        for (int i = 0; i < argc; i++) {
                int x = with_out ? xfer_flag(argc, argv, &i, false, &a->xfer) : 0;
                if (x < 0)
                        return -x;
                if (x > 0)
                        continue;
                if (with_out && strcmp(argv[i], "-o") == 0 && i + 1 < argc)
                        a->out = argv[++i];
                else if (strcmp(argv[i], "--via") == 0 && i + 1 < argc)
                        a->via = argv[++i];
                else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
                        a->token = argv[++i]; /* a pull-through by --via may need one */
                else if (strcmp(argv[i], "--json") == 0)
                        a->json = true;
                else if (strcmp(argv[i], "--insecure-plaintext") == 0)
                        a->plaintext = true;
                else if (strcmp(argv[i], "--trust-new-relay") == 0)
                        a->trust = true;
                else if ((argv[i][0] == '-' && strcmp(argv[i], "-") != 0) || a->ticket)
                        return is_help(argv[i])
                                   ? (usage(stdout), -1)
                                   : bad_arg(cmd,
                                             with_out ? "-o --via --token --congestion-control "
                                                        "--connections --retry-for"
                                                      : "--via --token",
                                             argc, argv, i);
                else
                        a->ticket = argv[i];
        }
        if (!a->ticket)
                return usage_error("%s: which ticket? chapar %s TICKET|DESCRIPTOR", cmd, cmd);
        if (a->out && strcmp(a->out, "-") == 0 && a->json)
                return usage_error("get: -o - writes the file to stdout; --json cannot share it");
        int rc = a->via ? relay_addr_ok("--via", a->via) : 0;
        if (!rc && strncmp(a->ticket, "chapar://", 9) != 0)
                rc = load_descriptor(a->ticket, a);
        if (!rc)
                rc = ticket_client(a->ticket, a->via, a->plaintext, a->trust, a->token, c);
        if (!rc && with_out)
                rc = xfer_apply(*c, &a->xfer);
        if (rc) {
                chapar_close(*c);
                *c = NULL;
        }
        return rc;
}

/* get DESCRIPTOR -o -: the file to stdout through a pipe, hashed on the way by a thread. */
struct tee {
        int in; /* the pipe's read end; the thread closes it (and sets -1) when it gives up */
        int rc; /* 0, CHAPAR_EIO (stdout) or CHAPAR_ENOMEM */
        uint8_t sha256[CHP_HASH_BYTES];
};

static void *tee_run(void *arg)
{
        struct tee *t = arg;
        struct chp_sha256 h = {0};
        static char buf[1 << 16];
        if (chp_sha256_init(&h) != 0)
                t->rc = CHAPAR_ENOMEM;
        while (!t->rc) {
                ssize_t n = read(t->in, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        t->rc = CHAPAR_EIO;
                if (n <= 0)
                        break;
                if (!t->rc && chp_sha256_update(&h, buf, (size_t)n) != 0)
                        t->rc = CHAPAR_ENOMEM;
                for (ssize_t off = 0; !t->rc && off < n;) {
                        ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));
                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w <= 0)
                                t->rc = CHAPAR_EIO;
                        else
                                off += w;
                }
        }
        if (t->rc) { /* the get's next write fails (EPIPE) instead of waiting for a reader */
                close(t->in);
                t->in = -1;
        } else if (chp_sha256_final(&h, t->sha256) != 0) {
                t->rc = CHAPAR_ENOMEM;
        }
        chp_sha256_free(&h);
        return NULL;
}

static int get_stdout_hashed(struct chapar_client *c, const char *ticket,
                             const struct chapar_get_opts *go, struct chapar_get_result *r,
                             uint8_t sha256[CHP_HASH_BYTES])
{
        int fds[2];
        pthread_t th;
        struct tee t = {.rc = 0};
        if (pipe2(fds, O_CLOEXEC) != 0)
                return CHAPAR_EIO;
        t.in = fds[0];
        if (pthread_create(&th, NULL, tee_run, &t) != 0) {
                close(fds[0]);
                close(fds[1]);
                return CHAPAR_ENOMEM;
        }
        int rc = chapar_get_fd(c, ticket, fds[1], go, r);
        close(fds[1]);
        pthread_join(th, NULL);
        if (t.in >= 0)
                close(t.in);
        if (!rc)
                rc = t.rc;
        memcpy(sha256, t.sha256, CHP_HASH_BYTES);
        return rc;
}

/* A get of a MIMI descriptor: what arrived must be what it describes (size and contentHash);
 * when it is not, the file written is removed. got is the SHA-256 of what went to stdout, or
 * NULL: hash the file at r->path. 0 or the exit code after saying what differs. */
static int check_part(const struct chp_mimi_part *p, const struct chapar_get_result *r,
                      const uint8_t *got)
{
        uint8_t sha256[CHP_HASH_BYTES];
        uint64_t size = r->bytes_total;
        const char *what = NULL;
        if (!got) {
                int fd = open(r->path, O_RDONLY | O_CLOEXEC);
                int rc = fd < 0 ? CHAPAR_EIO : hash_fd(fd, sha256, &size);
                if (fd >= 0)
                        close(fd);
                if (rc) {
                        fprintf(stderr,
                                "chapar: get: cannot read %s back to check its "
                                "contentHash: %s\n",
                                r->path, chapar_strerror(rc));
                        unlink(r->path);
                        return chapar_error_class(rc);
                }
                got = sha256;
        }
        if (size != p->size || r->bytes_total != p->size)
                what = "size";
        else if (memcmp(got, p->content_hash, CHP_HASH_BYTES) != 0)
                what = "contentHash";
        if (!what)
                return 0;
        if (got == sha256)
                unlink(r->path);
        fprintf(stderr,
                "chapar: get: the file is not what the MIMI descriptor says: its %s "
                "differs (%s)\n",
                what, got == sha256 ? "the file was removed" : "discard what stdout received");
        return chapar_error_class(CHAPAR_EINTEGRITY);
}

static int cmd_get(int argc, char **argv)
{
        struct ticket_args a;
        struct chapar_client *c;
        int rc = ticket_command("get", argc, argv, true, &a, &c);
        if (rc)
                return rc < 0 ? 0 : rc;
        const char *ticket = a.ticket, *out = a.out;
        bool json = a.json, to_stdout = out && strcmp(out, "-") == 0;
        struct progress pg = {
                .on = isatty(STDERR_FILENO) && !json, .start = chp_net_now_s(), .verb = "get"};
        struct chapar_get_opts go = {.progress = show_progress, .progress_ctx = &pg};
        struct chapar_get_result r;
        uint8_t got[CHP_HASH_BYTES];
        if (to_stdout && a.mimi) {
                rc = get_stdout_hashed(c, ticket, &go, &r, got);
        } else if (to_stdout) {
                rc = chapar_get_fd(c, ticket, STDOUT_FILENO, &go, &r);
                if (!rc && fflush(stdout) != 0)
                        rc = CHAPAR_EIO;
        } else {
                rc = chapar_get(c, ticket, out, &go, &r);
        }
        if (rc) {
                rc = fail(c, "get", rc);
                chapar_close(c);
                return rc;
        }
        if (a.mimi && (rc = check_part(&a.part, &r, to_stdout ? got : NULL)) != 0) {
                chapar_close(c);
                return rc;
        }
        const char *leaf = strrchr(r.path, '/');
        leaf = leaf ? leaf + 1 : r.path;
        if (!to_stdout && (!out || strcmp(out, r.path) != 0) && strcmp(leaf, r.name) != 0) {
                fprintf(stderr, "chapar: saved as %s (the sender named it \"", r.path);
                show(stderr, r.name);
                fprintf(stderr, "\")\n");
        }
        if (to_stdout) {
                /* stdout is the file */
        } else if (json) {
                printf("{\"file\":");
                json_str(r.path);
                printf(",\"bytes_total\":%llu,\"bytes_received\":%llu,\"seconds\":%.3f",
                       (unsigned long long)r.bytes_total, (unsigned long long)r.bytes_received,
                       r.seconds);
                xfer_json(c);
                printf("}\n");
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
        int rc = ticket_command("stat", argc, argv, false, &a, &c);
        if (rc)
                return rc < 0 ? 0 : rc;
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
                       "\"expires\":%llu,\"times_withheld\":%s",
                       r.complete ? "true" : "false", (unsigned long long)r.stored_bytes, r.chunks,
                       r.chunks_present, r.chunk_size, (unsigned long long)r.created,
                       (unsigned long long)r.expires, r.times_withheld ? "true" : "false");
                if (r.has_meta) {
                        printf(",\"size\":%llu,\"name\":", (unsigned long long)r.plain_size);
                        json_str(r.name);
                        printf(",\"mime\":");
                        json_str(r.mime);
                }
                printf("}\n");
        } else {
                char created[32], expires[32];
                if (r.has_meta) {
                        printf("name      ");
                        show(stdout, r.name);
                        printf("\nsize      %llu bytes\ntype      ",
                               (unsigned long long)r.plain_size);
                        show(stdout, r.mime[0] ? r.mime : "-");
                        printf("\n");
                }
                printf("state     %s (%u of %u chunks)\nstored    %llu bytes in %u-byte "
                       "chunks\ncreated   %s\nexpires   %s\n",
                       r.complete ? "complete" : "uploading", r.chunks_present, r.chunks,
                       (unsigned long long)r.stored_bytes, r.chunk_size,
                       r.times_withheld ? "not told (no upload token)"
                                        : iso_date(r.created, created),
                       r.times_withheld ? "not told (no upload token)"
                       : r.expires      ? iso_date(r.expires, expires)
                                        : "never");
        }
        chapar_close(c);
        return 0;
}

/* The ticket's relay offers the file to a peer relay (which fetches it in the background). */
static int cmd_offer(int argc, char **argv)
{
        const char *ticket = NULL, *token = NULL;
        uint8_t key[CHAPAR_KEY_BYTES];
        bool have_key = false;
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) {
                        token = argv[++i];
                } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
                        if (chp_hex_decode(argv[i + 1], strlen(argv[i + 1]), key,
                                           CHAPAR_KEY_BYTES) != 0)
                                return usage_error("--to takes a relay key (64 hex digits)");
                        have_key = true;
                        i++;
                } else if (argv[i][0] == '-' || ticket) {
                        return bad_arg("offer", "--to --token", argc, argv, i);
                } else {
                        ticket = argv[i];
                }
        }
        if (!ticket || !have_key)
                return usage_error("offer: chapar offer TICKET --to PEER-KEY [--token TOKEN]");
        if (!token)
                token = getenv("CHAPAR_TOKEN");
        struct chapar_client *c = NULL;
        int rc = ticket_client(ticket, NULL, false, false, token, &c);
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
        if (argc == 1 && is_help(argv[0]))
                return usage(stdout);
        if (argc != 1 || argv[0][0] == '-')
                return usage_error("forget: give one TICKET or FILE");
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
        if (argc >= 1 && is_help(argv[0]))
                return usage(stdout);
        if (argc != 2 || strcmp(argv[0], "remove") != 0)
                return usage_error("relays: chapar relays, or chapar relays remove HOST:PORT");
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
                return usage(stderr);
        const char *cmd = argv[1];
        if (is_help(cmd) || strcmp(cmd, "help") == 0)
                return usage(stdout);
        if (strcmp(cmd, "--version") == 0) {
                printf("chapar %s\nprotocol %d\n", CHAPAR_VERSION, CHP_PROTO_VERSION);
                return 0;
        }
        if (strcmp(cmd, "put") == 0)
                return cmd_put(argc - 2, argv + 2);
        if (strcmp(cmd, "get") == 0)
                return cmd_get(argc - 2, argv + 2);
        if (strcmp(cmd, "stat") == 0)
                return cmd_stat(argc - 2, argv + 2);
        if (strcmp(cmd, "offer") == 0)
                return cmd_offer(argc - 2, argv + 2);
        if (strcmp(cmd, "forget") == 0)
                return cmd_forget(argc - 2, argv + 2);
        if (strcmp(cmd, "relays") == 0)
                return cmd_relays(argc - 2, argv + 2);
        return usage_error("unknown command %s", cmd);
}
