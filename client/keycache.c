/* keycache.c — libchapar's local key cache, which makes puts resumable and deduplicated, and
 * chapar_forget.
 *
 * Layout (under cache_dir): keys/ (mode 0700, ours), and in it one entry per content,
 * keys/<hex> (mode 0600, ours), where <hex> = SHA-256(content name || chunk size || pad flag)
 * and the content name is put.c's (cc_content_id: the size and every plaintext chunk's SHA-256).
 * The same content at the same settings is encrypted the same way again, so the relay deduplicates
 * it, and the same put run twice sends the same manifest, so the relay resumes it. An entry is a
 * versioned record (little-endian): 0   4  magic "CHPK" 4   1  version, 1 5   3  reserved, 0 8   8
 * expires_at: unix seconds after which the entry is not used (and is deleted); 0 never 16  32  file
 * id of the last put that completed, zeros before 48  32  file key 80   …  sealed metadata blob of
 * the last put (CHP_E2E_META_MAX bytes at most) Anything else is not read. expires_at follows the
 * relay: the file's expiry as STAT reports it once the relay has the whole file; before that (a put
 * cut midway, to resume) the put's expires_in or the relay's default upload lifetime. A directory
 * or entry that is not ours, that others may access or that is a symbolic link is never read or
 * written: the put goes on with a fresh key and a warning in last_error. An entry that cannot be
 * read or written costs the put its resumability, never its success.
 */
#include "client_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "ticket.h"

#define ENTRY_MAGIC   "CHPK"
#define ENTRY_VERSION 1
#define ENTRY_HEADER  80 /* up to the blob */
#define ENTRY_MAX     (ENTRY_HEADER + CHP_E2E_META_MAX)
/* An entry's life before the relay has the whole file: the relay's default upload lifetime
 * (upload_expiry, 7 days), as long as a cut put can be resumed there. */
#define PROVISIONAL_S (7u * 24 * 3600)

struct entry {
        uint64_t expires_at;
        uint8_t file_id[CHP_HASH_BYTES];
        uint8_t key[CHP_FILE_KEY_BYTES];
        const uint8_t *blob; /* into the buffer parsed */
        size_t blob_len;
};

static void warn(struct chapar_client *c, const char *fmt, ...)
{
        if (!c)
                return;
        int n = snprintf(c->last_error, sizeof(c->last_error), "warning: ");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->last_error + n, sizeof(c->last_error) - (size_t)n, fmt, ap);
        va_end(ap);
}

/* true when st is ours and nobody else may use it; else warns (naming path) and returns false */
static bool private_to_us(struct chapar_client *c, const struct stat *st, const char *path,
                          const char *what)
{
        if (st->st_uid != geteuid()) {
                warn(c, "%s %.300s belongs to uid %u, not to this user: not used", what, path,
                     (unsigned)st->st_uid);
                return false;
        }
        if (st->st_mode & 077) {
                warn(c, "%s %.300s has mode %03o, others may use it: not used (chmod %s it)", what,
                     path, (unsigned)(st->st_mode & 0777), S_ISDIR(st->st_mode) ? "700" : "600");
                return false;
        }
        return true;
}

/* The entry of a record in buf: 0, or -EBADMSG when it is not an entry of this version. */
static int entry_parse(const uint8_t *buf, size_t len, struct entry *e)
{
        static const uint8_t zero[3];
        if (len < ENTRY_HEADER || len > ENTRY_MAX || memcmp(buf, ENTRY_MAGIC, 4) != 0 ||
            buf[4] != ENTRY_VERSION || memcmp(buf + 5, zero, 3) != 0)
                return -EBADMSG;
        e->expires_at = chp_get_le64(buf + 8);
        memcpy(e->file_id, buf + 16, CHP_HASH_BYTES);
        memcpy(e->key, buf + 48, CHP_FILE_KEY_BYTES);
        e->blob = buf + ENTRY_HEADER;
        e->blob_len = len - ENTRY_HEADER;
        return 0;
}

static bool expired(const struct entry *e)
{
        return e->expires_at && (uint64_t)time(NULL) >= e->expires_at;
}

/* Reads entry name in dfd (path names it in warnings) into buf (ENTRY_MAX + 1 bytes): its length,
 * -ENOENT when there is none, -EPERM when it is refused (warned with c), or another -errno. */
static ssize_t entry_read(struct chapar_client *c, int dfd, const char *name, const char *path,
                          uint8_t *buf)
{
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                int e = errno;
                if (e == ELOOP)
                        warn(c, "key-cache entry %.300s is a symbolic link: not used", path);
                return e == ELOOP ? -EPERM : -e;
        }
        struct stat st;
        ssize_t n = -EPERM;
        if (fstat(fd, &st) != 0) {
                n = -errno;
        } else if (!S_ISREG(st.st_mode)) {
                warn(c, "key-cache entry %.300s is not a file: not used", path);
        } else if (private_to_us(c, &st, path, "key-cache entry")) {
                size_t got = 0;
                while (got <= ENTRY_MAX) {
                        ssize_t r = read(fd, buf + got, ENTRY_MAX + 1 - got);
                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r <= 0) {
                                n = r < 0 ? -errno : (ssize_t)got;
                                break;
                        }
                        got += (size_t)r;
                        n = (ssize_t)got;
                }
        }
        close(fd);
        return n;
}

/* keys/ under the cache, created (0700) when create and missing: an O_DIRECTORY fd, or -1 when
 * there is none or it is refused (warned with c). */
static int keys_dir(struct chapar_client *c, const char *dir, bool create)
{
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create && cc_mkdir_p(dir, 0700) == 0)
                fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno != ENOENT)
                        warn(c, "key cache %.300s cannot be opened (%s): not used", dir,
                             strerror(errno));
                return -1;
        }
        struct stat st;
        if (fstat(fd, &st) != 0 || !private_to_us(c, &st, dir, "key cache")) {
                close(fd);
                return -1;
        }
        return fd;
}

/* The entry's file name for this content, CHP_HASH_HEXBYTES. */
static int entry_name(const uint8_t plain_hash[CHP_HASH_BYTES], uint32_t chunk_size, bool pad,
                      char name[CHP_HASH_HEXBYTES])
{
        uint8_t id_in[CHP_HASH_BYTES + 5], id[CHP_HASH_BYTES];
        memcpy(id_in, plain_hash, CHP_HASH_BYTES);
        chp_put_le32(id_in + CHP_HASH_BYTES, chunk_size);
        id_in[CHP_HASH_BYTES + 4] = pad;
        if (chp_sha256(id_in, sizeof(id_in), id) != 0)
                return CHAPAR_EIO;
        chp_hex_encode(id, sizeof(id), name);
        return 0;
}

ssize_t cc_keycache_find(struct chapar_client *c, const uint8_t plain_hash[CHP_HASH_BYTES],
                         uint32_t chunk_size, bool pad, uint8_t key[CHP_FILE_KEY_BYTES],
                         uint8_t *blob, size_t cap, char *entry, size_t entry_cap)
{
        entry[0] = '\0';
        chp_e2e_keygen(key); /* unless the entry gives the last put's */
        if (!c->cache_dir[0])
                return 0;
        char dir[4200], name[CHP_HASH_HEXBYTES], path[4300];
        if (entry_name(plain_hash, chunk_size, pad, name) != 0)
                return CHAPAR_EIO;
        snprintf(dir, sizeof(dir), "%s/keys", c->cache_dir);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int dfd = keys_dir(c, dir, true);
        if (dfd < 0)
                return 0; /* no cache: the put works, it just cannot be resumed */
        uint8_t *buf = malloc(ENTRY_MAX + 1);
        ssize_t n = buf ? entry_read(c, dfd, name, path, buf) : -ENOMEM;
        ssize_t blob_len = 0;
        struct entry e;
        if (n >= 0 && entry_parse(buf, (size_t)n, &e) == 0) {
                if (expired(&e)) {
                        unlinkat(dfd, name, 0);
                } else if (e.blob_len <= cap) {
                        memcpy(key, e.key, CHP_FILE_KEY_BYTES);
                        memcpy(blob, e.blob, e.blob_len);
                        blob_len = (ssize_t)e.blob_len;
                }
        }
        if (n != -EPERM) /* a refused entry is left alone; any other is (re)written */
                snprintf(entry, entry_cap, "%s", path);
        if (buf)
                sodium_memzero(buf, ENTRY_MAX + 1);
        sodium_memzero(&e, sizeof(e));
        free(buf);
        close(dfd);
        return blob_len;
}

/* The relay's expiry of a complete file (STAT): 0 and *expires, or an error. Leaves the client's
 * last error as it was: a failure here costs the entry its precise lifetime, not the put. */
static int relay_expiry(struct chapar_client *c, const uint8_t *file_id, uint64_t *expires)
{
        char saved[sizeof(c->last_error)];
        uint32_t saved_code = c->last_code;
        memcpy(saved, c->last_error, sizeof(saved));
        struct chp_frame_header h;
        uint8_t *reply;
        struct chp_msg_stat_ok st;
        int rc = cc_call(c, CHP_F_STAT, file_id, CHP_HASH_BYTES, &h, &reply);
        if (!rc && (chp_msg_stat_ok_decode(reply, h.len, &st) != 0 ||
                    st.state != CHP_UPLOAD_COMPLETE || (st.flags & CHP_STAT_TIMES_WITHHELD)))
                rc = CHAPAR_EPROTO;
        if (!rc)
                *expires = st.expires;
        memcpy(c->last_error, saved, sizeof(saved));
        c->last_code = saved_code;
        return rc;
}

void cc_keycache_store(struct chapar_client *c, const char *entry,
                       const uint8_t key[CHP_FILE_KEY_BYTES], const uint8_t *blob, size_t len,
                       const uint8_t *file_id, uint32_t expires_in)
{
        if (!entry[0] || len > CHP_E2E_META_MAX)
                return;
        uint64_t expires = (uint64_t)time(NULL) + (expires_in ? expires_in : PROVISIONAL_S);
        if (file_id && relay_expiry(c, file_id, &expires) != 0)
                return; /* the entry written before the chunks stays as it is */
        uint8_t rec[ENTRY_MAX] = {0};
        memcpy(rec, ENTRY_MAGIC, 4);
        rec[4] = ENTRY_VERSION;
        chp_put_le64(rec + 8, expires);
        if (file_id)
                memcpy(rec + 16, file_id, CHP_HASH_BYTES);
        memcpy(rec + 48, key, CHP_FILE_KEY_BYTES);
        memcpy(rec + ENTRY_HEADER, blob, len);
        size_t total = ENTRY_HEADER + len;
        char tmp[4400];
        snprintf(tmp, sizeof(tmp), "%s.XXXXXX", entry); /* not an entry's name: scans skip it */
        int fd = mkstemp(tmp);                          /* mode 0600 */
        if (fd >= 0) {
                bool ok = write(fd, rec, total) == (ssize_t)total && fsync(fd) == 0;
                close(fd);
                if (!ok || rename(tmp, entry) != 0)
                        unlink(tmp);
        }
        sodium_memzero(rec, sizeof(rec));
}

/* ---- chapar_forget ----------------------------------------------------------------------- */

static bool is_entry_name(const char *s)
{
        size_t i = 0;
        for (; s[i]; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return i == CHP_HASH_HEXBYTES - 1;
}

/* Removes the entries holding key (and any found expired); *n counts the first kind. */
static int forget_key(const char *dir, const uint8_t key[CHP_FILE_KEY_BYTES], unsigned *n)
{
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : CHAPAR_EIO;
        uint8_t *buf = malloc(ENTRY_MAX + 1);
        if (!buf) {
                closedir(d);
                return CHAPAR_ENOMEM;
        }
        struct dirent *de;
        struct entry e;
        while ((de = readdir(d))) {
                if (!is_entry_name(de->d_name))
                        continue;
                ssize_t len = entry_read(NULL, dirfd(d), de->d_name, "", buf);
                if (len < 0 || entry_parse(buf, (size_t)len, &e) != 0)
                        continue;
                bool mine = sodium_memcmp(e.key, key, CHP_FILE_KEY_BYTES) == 0, old = expired(&e);
                if ((mine || old) && unlinkat(dirfd(d), de->d_name, 0) == 0 && !old)
                        (*n)++;
        }
        sodium_memzero(buf, ENTRY_MAX + 1);
        sodium_memzero(&e, sizeof(e));
        free(buf);
        closedir(d);
        return 0;
}

int chapar_forget(const char *cache_dir, const char *target, unsigned *removed)
{
        if (removed)
                *removed = 0;
        if (!target || sodium_init() < 0)
                return !target ? CHAPAR_EUSAGE : CHAPAR_ENOMEM;
        char base[4096], dir[4200];
        cc_cache_path(cache_dir, base, sizeof(base));
        if (!base[0])
                return 0; /* no cache */
        snprintf(dir, sizeof(dir), "%s/keys", base);
        unsigned n = 0;
        int rc = 0;
        struct chp_ticket t;
        if (chp_ticket_parse(target, strlen(target), &t) == 0) {
                rc = t.has_key ? forget_key(dir, t.file_key, &n) : CHAPAR_EUSAGE;
                sodium_memzero(&t, sizeof(t));
        } else {
                /* the content is named per chunk size and padding (put.c): every pair is
                 * looked up, one read of the file each */
                /* O_NONBLOCK: a FIFO is refused below (not a regular file), not waited on */
                int fd = open(target, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                rc = fd < 0 ? CHAPAR_EIO : 0;
                for (uint32_t cs = CHP_CHUNK_MIN; !rc && cs <= CHP_CHUNK_MAX; cs <<= 1) {
                        for (int pad = 0; !rc && pad < 2; pad++) {
                                uint8_t h[CHP_HASH_BYTES];
                                char name[CHP_HASH_HEXBYTES], path[4300];
                                rc = cc_content_id(fd, cs, pad, h);
                                if (rc == CHAPAR_EUSAGE) { /* too many chunks at this size */
                                        rc = 0;
                                        continue;
                                }
                                if (!rc)
                                        rc = entry_name(h, cs, pad, name);
                                if (rc) /* then name was never written */
                                        break;
                                snprintf(path, sizeof(path), "%s/%s", dir, name);
                                if (unlink(path) == 0)
                                        n++;
                        }
                }
                if (fd >= 0)
                        close(fd);
        }
        if (removed)
                *removed = n;
        return rc;
}
