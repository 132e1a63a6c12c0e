/* libchapar.c — the client handle (chapar.h): connect with its defaults (relay address, the
 * known-relays file that pins each relay's key, the cache directory), close, the accessors, the
 * known-relays file's list and remove, and what each CHAPAR_E* code means. The library's other
 * files:
 *   link.c      the channel to the relay and its error codes
 *   put.c       chapar_put_fd, chapar_put_path
 *   keycache.c  the file keys of past puts (resumable, deduplicated puts)
 *   get.c       chapar_get and its partial file
 *   query.c     chapar_stat, chapar_offer and the manifest fetch get shares
 */
#include "chapar.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "client_int.h"
#include "hash.h"
#include "net.h"

_Static_assert(CHAPAR_KEY_BYTES == CHP_KEY_BYTES, "the public key size is the one X25519 size");
/* trust_new_relay went into padding: callers built against the older header see the same layout */
_Static_assert(offsetof(struct chapar_opts, timeout_ms) == 4 * sizeof(void *) + 4 &&
                   sizeof(struct chapar_opts) == 4 * sizeof(void *) + 8,
               "struct chapar_opts keeps its layout");
/* times_withheld went into the padding after has_meta */
_Static_assert(offsetof(struct chapar_stat_result, times_withheld) == 49 &&
                   offsetof(struct chapar_stat_result, plain_size) == 56 &&
                   sizeof(struct chapar_stat_result) == 448,
               "struct chapar_stat_result keeps its layout");

int chapar_error_class(int err)
{
        switch (err) {
        case 0:
                return 0;
        case CHAPAR_EUSAGE:
                return 1;
        case CHAPAR_EKEY:
        case CHAPAR_EINTEGRITY:
                return 3;
        case CHAPAR_EIO:
        case CHAPAR_ECHANGED:
                return 4;
        }
        return 2;
}

const char *chapar_strerror(int err)
{
        switch (err) {
        case 0:
                return "ok";
        case CHAPAR_EUSAGE:
                return "invalid argument";
        case CHAPAR_ENET:
                return "cannot reach the relay";
        case CHAPAR_ERELAY:
                return "the relay refused the request";
        case CHAPAR_EKEY:
                return "the relay's key is not the pinned one, or no key is pinned for it";
        case CHAPAR_EINTEGRITY:
                return "verification failed: wrong key or tampered data";
        case CHAPAR_EIO:
                return "local file error";
        case CHAPAR_ENOMEM:
                return "out of memory";
        case CHAPAR_ECANCELED:
                return "canceled";
        case CHAPAR_ENOTFOUND:
                return "the relay has no such file";
        case CHAPAR_EPROTO:
                return "protocol error";
        case CHAPAR_ECHANGED:
                return "the file changed while it was being sent; run put again";
        case CHAPAR_EAUTH:
                return "the relay did not accept the upload token, or needs one";
        case CHAPAR_EQUOTA:
                return "over the upload token's budget or the relay's quota";
        case CHAPAR_ELIMITED:
                return "the relay is over a limit: retry later";
        }
        return "unknown error";
}

/* ---- paths ------------------------------------------------------------------------------- */

int cc_mkdir_p(const char *path, mode_t mode)
{
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s", path);
        for (char *p = tmp + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(tmp, mode) != 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        return mkdir(tmp, mode) == 0 || errno == EEXIST ? 0 : -errno;
}

static void default_dir(char *out, size_t cap, const char *xdg_var, const char *home_sub,
                        const char *leaf)
{
        const char *x = getenv(xdg_var), *home = getenv("HOME");
        if (x && *x)
                snprintf(out, cap, "%s/chapar%s", x, leaf);
        else
                snprintf(out, cap, "%s/%s/chapar%s", home && *home ? home : ".", home_sub, leaf);
}

void cc_known_relays_path(const char *given, char *out, size_t cap)
{
        if (given)
                snprintf(out, cap, "%s", given);
        else
                default_dir(out, cap, "XDG_CONFIG_HOME", ".config", "/known_relays");
}

void cc_cache_path(const char *given, char *out, size_t cap)
{
        if (given)
                snprintf(out, cap, "%s", given);
        else
                default_dir(out, cap, "XDG_CACHE_HOME", ".cache", "");
}

/* ---- known relays ------------------------------------------------------------------------ */

/* One line of the file, "HOST:PORT HEXKEY": true (addr points into line, key filled) or false
 * for a comment or a line that is not a pin. */
static bool known_parse(char *line, char **addr, uint8_t key[CHP_KEY_BYTES])
{
        char *sp = strchr(line, ' ');
        if (!sp || line[0] == '#')
                return false;
        *sp = '\0';
        char *hex = sp + 1;
        hex[strcspn(hex, "\r\n")] = '\0';
        *addr = line;
        return chp_hex_decode(hex, strlen(hex), key, CHP_KEY_BYTES) == 0;
}

/* Looks addr up: 0 (key filled), -ENOENT, or an error. */
static int known_lookup(const char *file, const char *addr, uint8_t key[CHP_KEY_BYTES])
{
        FILE *f = fopen(file, "r");
        if (!f)
                return errno == ENOENT ? -ENOENT : -errno;
        char line[512], *a;
        int rc = -ENOENT;
        while (fgets(line, sizeof(line), f)) {
                if (known_parse(line, &a, key) && strcmp(a, addr) == 0) {
                        rc = 0;
                        break;
                }
        }
        fclose(f);
        return rc;
}

int chapar_relays_list(const char *known_relays, chapar_relay_fn fn, void *ctx)
{
        char path[4096], line[512], *a;
        uint8_t key[CHP_KEY_BYTES];
        cc_known_relays_path(known_relays, path, sizeof(path));
        FILE *f = fopen(path, "r");
        if (!f)
                return errno == ENOENT ? 0 : CHAPAR_EIO;
        while (fgets(line, sizeof(line), f))
                if (known_parse(line, &a, key))
                        fn(ctx, a, key);
        int rc = ferror(f) ? CHAPAR_EIO : 0;
        fclose(f);
        return rc;
}

/* The file without addr's lines, written to a temporary file and renamed over it. */
int chapar_relays_remove(const char *known_relays, const char *addr)
{
        char path[4096], tmp[4200], line[512], copy[512], *a;
        uint8_t key[CHP_KEY_BYTES];
        cc_known_relays_path(known_relays, path, sizeof(path));
        FILE *in = fopen(path, "r");
        if (!in)
                return errno == ENOENT ? CHAPAR_ENOTFOUND : CHAPAR_EIO;
        snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
        int fd = mkstemp(tmp); /* mode 0600 */
        FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!out) {
                if (fd >= 0) {
                        close(fd);
                        unlink(tmp);
                }
                fclose(in);
                return CHAPAR_EIO;
        }
        unsigned removed = 0;
        while (fgets(line, sizeof(line), in)) {
                memcpy(copy, line, sizeof(line));
                if (known_parse(copy, &a, key) && strcmp(a, addr) == 0)
                        removed++;
                else
                        fputs(line, out);
        }
        bool ok = !ferror(in) && fflush(out) == 0 && fsync(fd) == 0;
        fclose(in);
        ok = fclose(out) == 0 && ok;
        if (ok && removed && rename(tmp, path) == 0)
                return 0;
        unlink(tmp);
        return !ok ? CHAPAR_EIO : !removed ? CHAPAR_ENOTFOUND : CHAPAR_EIO;
}

static int known_add(const char *file, const char *addr, const uint8_t key[CHP_KEY_BYTES])
{
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", file);
        char *slash = strrchr(dir, '/');
        if (slash) {
                *slash = '\0';
                if (cc_mkdir_p(dir, 0700) != 0)
                        return -EIO;
        }
        int fd = open(file, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        /* a file edited by hand may end without a newline: the pin must not join its last line */
        struct stat st;
        char last = '\n';
        if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
                last = '\n';
        char line[400], hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(key, CHP_KEY_BYTES, hex);
        int n = snprintf(line, sizeof(line), "%s%s %s\n", last == '\n' ? "" : "\n", addr, hex);
        int rc = write(fd, line, (size_t)n) == n ? 0 : -EIO;
        close(fd);
        return rc;
}

/* ---- connect ----------------------------------------------------------------------------- */

int chapar_connect(const struct chapar_opts *o, struct chapar_client **out)
{
        return chapar_connect_token(o, NULL, out);
}

int chapar_connect_token(const struct chapar_opts *o, const char *token, struct chapar_client **out)
{
        *out = NULL;
        if (sodium_init() < 0)
                return CHAPAR_ENOMEM;
        struct chapar_client *c = calloc(1, sizeof(*c));
        if (!c)
                return CHAPAR_ENOMEM;
        if (token && strlen(token) >= sizeof(c->token)) {
                *out = c;
                snprintf(c->last_error, sizeof(c->last_error), "the token is over %d bytes",
                         CHP_TOKEN_MAX);
                return CHAPAR_EUSAGE;
        }
        if (token)
                snprintf(c->token, sizeof(c->token), "%s", token);
        c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
        c->transport =
            (struct chapar_transport){.size = sizeof(c->transport), .congestion = c->congestion};
        c->plaintext = o->insecure_plaintext;
        const char *relay = o->relay;
        if (!relay)
                relay = getenv("CHAPAR_RELAY");
        if (!relay || !*relay)
                relay = "127.0.0.1:7700";
        snprintf(c->addr, sizeof(c->addr), "%s", relay);
        cc_known_relays_path(o->known_relays, c->known_relays, sizeof(c->known_relays));
        cc_cache_path(o->cache_dir, c->cache_dir, sizeof(c->cache_dir));
        *out = c; /* also on failure, so the caller can read last_error; chapar_close frees it */
        bool record = false; /* a new relay, trusted explicitly: pin its key once it is proven */
        if (!c->plaintext) {
                uint8_t known[CHP_KEY_BYTES] = {0};
                int k = known_lookup(c->known_relays, c->addr, known);
                if (o->relay_key) { /* the file only decides whether to record it */
                        record = k == -ENOENT && o->trust_new_relay;
                } else if (k != 0 && k != -ENOENT) {
                        snprintf(c->last_error, sizeof(c->last_error),
                                 "cannot read the known-relays file %.400s: %s", c->known_relays,
                                 strerror(-k));
                        return CHAPAR_EIO;
                } else if (k == -ENOENT && !o->trust_new_relay) {
                        snprintf(c->last_error, sizeof(c->last_error),
                                 "%.300s is not a known relay (no key pinned for it in %.400s): "
                                 "pass its key with --relay-key KEY (the public line of its key "
                                 "file, pubkey= in its ready file), or trust the key it presents "
                                 "with --trust-new-relay",
                                 c->addr, c->known_relays);
                        return CHAPAR_EKEY;
                } else {
                        record = k == -ENOENT;
                }
                c->have_pinned = k == 0 || o->relay_key;
                memcpy(c->pinned, o->relay_key ? o->relay_key : known, CHP_KEY_BYTES);
                sodium_memzero(known, sizeof(known));
        } else if (o->relay_key) {
                memcpy(c->pinned, o->relay_key, CHP_KEY_BYTES);
                c->have_pinned = true;
        }
        int rc = cc_open(c);
        if (!rc && record && known_add(c->known_relays, c->addr, c->relay_key) != 0)
                snprintf(c->last_error, sizeof(c->last_error),
                         "warning: cannot record the relay's key in %.400s", c->known_relays);
        return rc;
}

void chapar_close(struct chapar_client *c)
{
        if (!c)
                return;
        cc_shutdown(c);
        sodium_memzero(c, sizeof(*c));
        free(c);
}

const uint8_t *chapar_relay_key(const struct chapar_client *c)
{
        return c->relay_key;
}

const char *chapar_last_error(const struct chapar_client *c)
{
        return c ? c->last_error : "";
}

/* ---- transport ---------------------------------------------------------------------------- */

/* The bytes of a struct that begins with its size that both the caller's and this build's
 * layout hold: 0 when the caller's is too short for its first field past size. */
static size_t common_size(uint32_t theirs, size_t ours, size_t first_past_size)
{
        if (theirs < first_past_size)
                return 0;
        return theirs < ours ? theirs : ours;
}

int chapar_set_transport(struct chapar_client *c, const struct chapar_transport *t)
{
        size_t n =
            common_size(t->size, sizeof(*t),
                        offsetof(struct chapar_transport, connections) + sizeof(t->connections));
        struct chapar_transport v = {0};
        if (!n) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "struct chapar_transport: size %u is too small", t->size);
                return CHAPAR_EUSAGE;
        }
        memcpy(&v, t, n);
        if (v.connections > CHAPAR_CONNECTIONS_MAX) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "connections: at most %d per transfer", CHAPAR_CONNECTIONS_MAX);
                return CHAPAR_EUSAGE;
        }
        if (v.congestion && strlen(v.congestion) >= sizeof(c->congestion)) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "congestion control '%.40s': at most %d bytes", v.congestion,
                         CHAPAR_CC_MAX - 1);
                return CHAPAR_EUSAGE;
        }
        snprintf(c->congestion, sizeof(c->congestion), "%s", v.congestion ? v.congestion : "");
        v.congestion = c->congestion;
        v.size = sizeof(v);
        c->transport = v;
        if (c->ch && c->congestion[0]) /* the connection made already; a refusal keeps its own */
                (void)!chp_net_set_congestion(chp_channel_fd(c->ch), c->congestion);
        return 0;
}

int chapar_transfer_stats(const struct chapar_client *c, struct chapar_transfer_stats *out)
{
        size_t n = common_size(out->size, sizeof(*out),
                               offsetof(struct chapar_transfer_stats, connections) +
                                   sizeof(out->connections));
        if (!n)
                return CHAPAR_EUSAGE;
        uint32_t size = out->size;
        memcpy(out, &c->stats, n);
        out->size = size;
        return 0;
}

/* a signal handler may store to it only if it needs no lock */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "chapar_cancel needs a lock-free atomic_int");

void chapar_cancel(struct chapar_client *c)
{
        atomic_store_explicit(&c->cancel, 1, memory_order_relaxed); /* lock-free: signal-safe */
}
