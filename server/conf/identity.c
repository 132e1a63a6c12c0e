#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "hash.h"

#define HEADER "chapar-relay-key 1\n"

int chp_identity_generate(const char *path, struct chp_identity *id, char err[CHP_IDENTITY_ERR_MAX])
{
        struct chp_identity k;
        char text[200], hpriv[CHP_HASH_HEXBYTES], hpub[CHP_HASH_HEXBYTES];
        randombytes_buf(k.priv, sizeof(k.priv));
        crypto_scalarmult_base(k.pub, k.priv);
        chp_hex_encode(k.priv, sizeof(k.priv), hpriv);
        chp_hex_encode(k.pub, sizeof(k.pub), hpub);
        int n = snprintf(text, sizeof(text), HEADER "private %s\npublic %s\n", hpriv, hpub);
        int rc = 0;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                rc = -errno;
                snprintf(err, CHP_IDENTITY_ERR_MAX, "cannot create key file %s: %s", path,
                         strerror(errno));
        } else if (write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
                rc = -EIO;
                snprintf(err, CHP_IDENTITY_ERR_MAX, "cannot write key file %s", path);
                unlink(path);
        }
        if (fd >= 0)
                close(fd);
        if (!rc)
                *id = k;
        sodium_memzero(&k, sizeof(k));
        sodium_memzero(text, sizeof(text));
        sodium_memzero(hpriv, sizeof(hpriv));
        return rc;
}

int chp_identity_load(const char *path, struct chp_identity *id, char err[CHP_IDENTITY_ERR_MAX])
{
        char text[256];
        struct chp_identity k;
        uint8_t check[CHP_KEY_BYTES];
        int rc = -EINVAL;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                int e = errno;
                snprintf(err, CHP_IDENTITY_ERR_MAX, "cannot read key file %s: %s", path,
                         strerror(e));
                return -e;
        }
        /* a private key others could read, or that someone else controls, is not this relay's */
        struct stat st;
        if (fstat(fd, &st) != 0) {
                int e = errno;
                close(fd);
                snprintf(err, CHP_IDENTITY_ERR_MAX, "cannot read key file %s: %s", path,
                         strerror(e));
                return -e;
        }
        if (st.st_uid != geteuid() || (st.st_mode & 077)) {
                close(fd);
                if (st.st_uid != geteuid())
                        snprintf(err, CHP_IDENTITY_ERR_MAX,
                                 "key file %s belongs to uid %u, not to this user (uid %u): "
                                 "chown it, then chmod 600 %s",
                                 path, (unsigned)st.st_uid, (unsigned)geteuid(), path);
                else
                        snprintf(err, CHP_IDENTITY_ERR_MAX,
                                 "key file %s has mode %03o: others may read the relay's private "
                                 "key; run chmod 600 %s",
                                 path, (unsigned)(st.st_mode & 0777), path);
                return -EACCES;
        }
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        /* exactly: header, "private " 64 hex "\n", "public " 64 hex "\n" */
        const size_t hl = sizeof(HEADER) - 1;
        if (n != (ssize_t)(hl + 8 + 64 + 1 + 7 + 64 + 1) || memcmp(text, HEADER, hl) != 0 ||
            memcmp(text + hl, "private ", 8) != 0 || text[hl + 72] != '\n' ||
            memcmp(text + hl + 73, "public ", 7) != 0 || text[hl + 144] != '\n' ||
            chp_hex_decode(text + hl + 8, 64, k.priv, CHP_KEY_BYTES) != 0 ||
            chp_hex_decode(text + hl + 80, 64, k.pub, CHP_KEY_BYTES) != 0) {
                snprintf(err, CHP_IDENTITY_ERR_MAX,
                         "%s is not a chapar relay key file (make one with chapard keygen)", path);
                goto out;
        }
        crypto_scalarmult_base(check, k.priv);
        if (sodium_memcmp(check, k.pub, CHP_KEY_BYTES) != 0) {
                snprintf(err, CHP_IDENTITY_ERR_MAX,
                         "%s: the public key does not belong to the private key", path);
                goto out;
        }
        *id = k;
        rc = 0;
out:
        sodium_memzero(&k, sizeof(k));
        sodium_memzero(text, sizeof(text));
        return rc;
}

int chp_identity_load_or_create(const char *path, struct chp_identity *id,
                                char err[CHP_IDENTITY_ERR_MAX])
{
        if (access(path, F_OK) != 0 && errno == ENOENT) {
                int rc = chp_identity_generate(path, id, err);
                if (rc != -EEXIST)
                        return rc; /* created, or failed; lost a race: load what won */
        }
        return chp_identity_load(path, id, err);
}

void chp_identity_wipe(struct chp_identity *id)
{
        if (id)
                sodium_memzero(id, sizeof(*id));
}
