/* keycache.c — libchapar's local key cache, which makes puts resumable and deduplicated.
 *
 * Layout (under cache_dir, mode 0700):
 *   keys/<hex>    the file key (32 bytes) and the sealed metadata blob of the last put of that
 *                 content, where <hex> = SHA-256(plaintext SHA-256 || chunk size || pad flag).
 *                 The same content at the same settings is encrypted the same way again, so the
 *                 relay deduplicates it, and the same put run twice sends the same manifest, so
 *                 the relay resumes it.
 * Used by put.c only (see client_int.h). An entry that cannot be read or written costs the put
 * its resumability, never its success.
 */
#include "client_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "e2e.h"
#include "hash.h"

ssize_t cc_keycache_find(struct chapar_client *c, const uint8_t plain_hash[CHP_HASH_BYTES],
                         uint32_t chunk_size, bool pad, uint8_t key[CHP_FILE_KEY_BYTES],
                         uint8_t *blob, size_t cap, char *entry, size_t entry_cap)
{
        entry[0] = '\0';
        if (!c->cache_dir[0]) {
                chp_e2e_keygen(key);
                return 0;
        }
        uint8_t id_in[CHP_HASH_BYTES + 5], id[CHP_HASH_BYTES];
        memcpy(id_in, plain_hash, CHP_HASH_BYTES);
        chp_put_le32(id_in + CHP_HASH_BYTES, chunk_size);
        id_in[CHP_HASH_BYTES + 4] = pad;
        char hex[CHP_HASH_HEXBYTES], dir[4200];
        if (chp_sha256(id_in, sizeof(id_in), id) != 0)
                return CHAPAR_EIO;
        chp_hex_encode(id, sizeof(id), hex);
        snprintf(dir, sizeof(dir), "%s/keys", c->cache_dir);
        snprintf(entry, entry_cap, "%s/%s", dir, hex);
        int fd = open(entry, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                uint8_t buf[CHP_FILE_KEY_BYTES + CHP_E2E_META_MAX];
                ssize_t n = read(fd, buf, sizeof(buf));
                close(fd);
                if (n >= CHP_FILE_KEY_BYTES && (size_t)n - CHP_FILE_KEY_BYTES <= cap) {
                        memcpy(key, buf, CHP_FILE_KEY_BYTES);
                        memcpy(blob, buf + CHP_FILE_KEY_BYTES, (size_t)n - CHP_FILE_KEY_BYTES);
                        sodium_memzero(buf, sizeof(buf));
                        return n - CHP_FILE_KEY_BYTES;
                }
                sodium_memzero(buf, sizeof(buf));
        }
        chp_e2e_keygen(key);
        if (cc_mkdir_p(dir, 0700) != 0)
                entry[0] = '\0'; /* no cache: the put works, it just cannot be resumed */
        return 0;
}

void cc_keycache_store(const char *entry, const uint8_t key[CHP_FILE_KEY_BYTES],
                       const uint8_t *blob, size_t len)
{
        if (!entry[0])
                return;
        char tmp[4400];
        snprintf(tmp, sizeof(tmp), "%s.tmp", entry);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        bool ok = write(fd, key, CHP_FILE_KEY_BYTES) == CHP_FILE_KEY_BYTES &&
                  write(fd, blob, len) == (ssize_t)len && fsync(fd) == 0;
        close(fd);
        if (!ok || rename(tmp, entry) != 0)
                unlink(tmp);
}
