/* libchapar.c — the client handle (chapar.h): connect with its defaults (relay address, the
 * known-relays file that pins a relay's key on first use, the cache directory), close, the
 * accessors, and what each CHAPAR_E* code means. The library's other files:
 *   link.c      the channel to the relay and its error codes
 *   put.c       chapar_put_fd, chapar_put_path
 *   keycache.c  the file keys of past puts (resumable, deduplicated puts)
 *   get.c       chapar_get and its partial file
 *   query.c     chapar_stat, chapar_offer and the manifest fetch get shares
 */
#include "chapar.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "client_int.h"
#include "hash.h"

_Static_assert(CHAPAR_KEY_BYTES == CHP_KEY_BYTES, "the public key size is the one X25519 size");

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
                return "the relay's key does not match the pinned key";
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

/* ---- known relays ------------------------------------------------------------------------ */

/* Looks addr up: 0 (key filled), -ENOENT, or an error. Lines: "HOST:PORT HEXKEY". */
static int known_lookup(const char *file, const char *addr, uint8_t key[CHP_KEY_BYTES])
{
        FILE *f = fopen(file, "r");
        if (!f)
                return errno == ENOENT ? -ENOENT : -errno;
        char line[512];
        int rc = -ENOENT;
        while (fgets(line, sizeof(line), f)) {
                char *sp = strchr(line, ' ');
                if (!sp || line[0] == '#')
                        continue;
                *sp = '\0';
                char *hex = sp + 1;
                hex[strcspn(hex, "\r\n")] = '\0';
                if (strcmp(line, addr) == 0 &&
                    chp_hex_decode(hex, strlen(hex), key, CHP_KEY_BYTES) == 0) {
                        rc = 0;
                        break;
                }
        }
        fclose(f);
        return rc;
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
        int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        char line[400], hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(key, CHP_KEY_BYTES, hex);
        int n = snprintf(line, sizeof(line), "%s %s\n", addr, hex);
        int rc = write(fd, line, (size_t)n) == n ? 0 : -EIO;
        close(fd);
        return rc;
}

/* ---- connect ----------------------------------------------------------------------------- */

int chapar_connect(const struct chapar_opts *o, struct chapar_client **out)
{
        *out = NULL;
        if (sodium_init() < 0)
                return CHAPAR_ENOMEM;
        struct chapar_client *c = calloc(1, sizeof(*c));
        if (!c)
                return CHAPAR_ENOMEM;
        c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
        c->plaintext = o->insecure_plaintext;
        const char *relay = o->relay;
        if (!relay)
                relay = getenv("CHAPAR_RELAY");
        if (!relay || !*relay)
                relay = "127.0.0.1:7700";
        snprintf(c->addr, sizeof(c->addr), "%s", relay);
        if (o->known_relays)
                snprintf(c->known_relays, sizeof(c->known_relays), "%s", o->known_relays);
        else
                default_dir(c->known_relays, sizeof(c->known_relays), "XDG_CONFIG_HOME", ".config",
                            "/known_relays");
        if (o->cache_dir)
                snprintf(c->cache_dir, sizeof(c->cache_dir), "%s", o->cache_dir);
        else
                default_dir(c->cache_dir, sizeof(c->cache_dir), "XDG_CACHE_HOME", ".cache", "");
        bool tofu = false;
        if (o->relay_key) {
                memcpy(c->pinned, o->relay_key, CHP_KEY_BYTES);
                c->have_pinned = true;
        } else if (!c->plaintext) {
                int k = known_lookup(c->known_relays, c->addr, c->pinned);
                c->have_pinned = k == 0;
                tofu = k == -ENOENT;
        }
        int rc = cc_open(c);
        if (!rc && tofu &&
            known_add(c->known_relays, c->addr, c->relay_key) != 0) /* first use: pin it */
                snprintf(c->last_error, sizeof(c->last_error),
                         "warning: cannot record the relay's key in %.400s", c->known_relays);
        if (rc) {
                *out = c; /* so the caller can read last_error; chapar_close frees it */
                return rc;
        }
        *out = c;
        return 0;
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

void chapar_cancel(struct chapar_client *c)
{
        c->cancel = 1;
}
