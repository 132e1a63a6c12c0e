/* put.c — chapar_put_fd and chapar_put_path: read a file, seal it chunk by chunk under its file
 * key, send the manifest (OPEN), then the chunks the relay still lacks within its window, then
 * COMMIT, and make the ticket.
 *
 *   1. hash the plaintext; the key cache (keycache.c) gives the key of the last put of the same
 *      content, so the ciphertext, addresses and manifest come out the same and the relay resumes
 *      or deduplicates the upload
 *   2. seal and address every chunk, keeping the ciphertext for step 4 when all of it fits in
 *      KEEP_BUDGET
 *   3. OPEN with the manifest; the reply names the missing chunks
 *   4. send those (resealing any not kept), then COMMIT
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "ticket.h"

#define KEEP_BUDGET (256u << 20) /* ciphertext kept between hashing and sending */

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return CHAPAR_EIO;
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        *got = done;
        return 0;
}

struct put_state {
        int fd;
        uint64_t size, padded;
        uint32_t chunk_size, plain_chunk;
        uint64_t count;
        uint8_t key[CHP_FILE_KEY_BYTES];
        uint8_t *addrs;
        uint8_t **kept;   /* ciphertext kept from the hashing pass, or NULL */
        uint8_t *scratch; /* one plaintext chunk */
};

/* Ciphertext of chunk i into out (chunk_size bytes at most); returns its length. */
static int seal_chunk(struct put_state *p, uint64_t i, uint8_t *out, size_t *len)
{
        uint64_t off = i * p->plain_chunk;
        size_t want = p->padded - off < p->plain_chunk ? (size_t)(p->padded - off) : p->plain_chunk;
        size_t got = 0;
        int rc = 0;
        if (off < p->size) {
                size_t real = p->size - off < want ? (size_t)(p->size - off) : want;
                if ((rc = pread_full(p->fd, p->scratch, real, off, &got)))
                        return rc;
                if (got != real)
                        return CHAPAR_EIO; /* the file shrank under us */
        }
        memset(p->scratch + got, 0, want - got); /* padding */
        if (chp_e2e_seal_chunk(p->key, i, i + 1 == p->count, p->scratch, want, out) != 0)
                return CHAPAR_EIO;
        *len = want + CHP_E2E_CHUNK_OVERHEAD;
        return 0;
}

static int hash_file(int fd, uint64_t size, uint8_t out[CHP_HASH_BYTES])
{
        struct chp_sha256 h;
        uint8_t *buf = malloc(1 << 20);
        int rc = buf && chp_sha256_init(&h) == 0 ? 0 : CHAPAR_ENOMEM;
        for (uint64_t off = 0; !rc && off < size;) {
                size_t got;
                size_t want = size - off < (1u << 20) ? (size_t)(size - off) : (1u << 20);
                rc = pread_full(fd, buf, want, off, &got);
                if (!rc && got != want)
                        rc = CHAPAR_EIO;
                if (!rc && chp_sha256_update(&h, buf, got) != 0)
                        rc = CHAPAR_EIO;
                off += got;
        }
        if (!rc && chp_sha256_final(&h, out) != 0)
                rc = CHAPAR_EIO;
        chp_sha256_free(&h);
        free(buf);
        return rc;
}

static int make_ticket(struct chapar_client *c, const uint8_t *file_id,
                       const uint8_t key[CHP_FILE_KEY_BYTES], char *out, size_t cap)
{
        struct chp_ticket t = {0};
        if (chp_net_split_hostport(c->addr, t.host, sizeof(t.host), &t.port) != 0)
                return CHAPAR_EUSAGE;
        memcpy(t.relay_key, c->relay_key, CHP_KEY_BYTES);
        memcpy(t.file_id, file_id, CHP_HASH_BYTES);
        t.has_key = true;
        memcpy(t.file_key, key, CHP_FILE_KEY_BYTES);
        ssize_t n = chp_ticket_format(&t, out, cap);
        sodium_memzero(&t, sizeof(t));
        return n < 0 ? CHAPAR_EUSAGE : 0;
}

/* send_chunks: the upload ended under us because another sender of the same manifest committed
 * it; OPEN again (it answers COMPLETE). */
#define UPLOAD_GONE 1

/* Whether an ERROR reply to a CHUNK says the upload was committed meanwhile: COMMITTED, or from a
 * relay older than that code NOT_FOUND, believed once per put (*not_found_ok). */
static bool upload_gone(struct chapar_client *c, bool *not_found_ok)
{
        if (c->last_code == CHP_WE_COMMITTED)
                return true;
        if (c->last_code == CHP_WE_NOT_FOUND && *not_found_ok) {
                *not_found_ok = false;
                return true;
        }
        return false;
}

/* Sends the missing chunks, as many in flight as the relay's window allows; UPLOAD_GONE when the
 * upload was committed by someone else (the replies in flight are drained first). */
static int send_chunks(struct chapar_client *c, struct put_state *p, const uint8_t *upload_id,
                       const uint8_t *missing, const struct chapar_put_opts *o,
                       struct chapar_put_result *r, uint64_t already, bool *not_found_ok)
{
        bool gone = false;
        uint8_t *buf = malloc(p->chunk_size);
        uint32_t *lens = calloc(p->count, sizeof(*lens));
        uint64_t next = 0, window = 0, done_bytes = already;
        uint32_t inflight = 0, base = cc_reserve_ids(c, (uint32_t)p->count + 1);
        uint64_t total = chp_e2e_cipher_size(p->padded, p->chunk_size);
        int rc = buf && lens ? 0 : CHAPAR_ENOMEM;
        while (!rc) {
                while (!gone && next < p->count && inflight < c->hello.max_inflight) {
                        if (!chp_bit(missing, (uint32_t)next)) {
                                next++;
                                continue;
                        }
                        size_t len = 0;
                        uint8_t *bytes = p->kept ? p->kept[next] : NULL;
                        if (bytes) {
                                len = lens[next] =
                                    (uint32_t)(next + 1 == p->count ? total - next * p->chunk_size
                                                                    : p->chunk_size);
                        } else if ((rc = seal_chunk(p, next, buf, &len))) {
                                break;
                        } else {
                                bytes = buf;
                        }
                        if (window + len > c->hello.window_bytes && inflight > 0)
                                break; /* wait for acknowledgements first */
                        uint8_t prefix[CHP_CHUNK_PREFIX];
                        chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), upload_id,
                                                    (uint32_t)next);
                        if ((rc = cc_send(c, CHP_F_CHUNK, base + (uint32_t)next, prefix,
                                          sizeof(prefix), bytes, len)))
                                break;
                        lens[next] = (uint32_t)len;
                        window += len;
                        inflight++;
                        r->chunks_sent++;
                        r->bytes_sent += len;
                        if (p->kept && p->kept[next]) {
                                sodium_memzero(p->kept[next], len);
                                free(p->kept[next]);
                                p->kept[next] = NULL;
                        }
                        next++;
                }
                if (rc || inflight == 0)
                        break;
                struct chp_frame_header h;
                uint8_t *reply;
                if ((rc = cc_recv(c, &h, &reply)))
                        break;
                if (h.type == CHP_F_ERROR) {
                        uint32_t idx = h.id - base;
                        if (h.id < base || idx >= p->count || !lens[idx]) {
                                rc = CHAPAR_EPROTO;
                                break;
                        }
                        if (!gone && !upload_gone(c, not_found_ok)) {
                                rc = cc_remote_error(c);
                                break;
                        }
                        gone = true; /* send nothing more; drain what is in flight */
                        window -= lens[idx];
                        lens[idx] = 0;
                        inflight--;
                        continue;
                }
                struct chp_msg_chunk_ok ok;
                if (h.type != (CHP_F_CHUNK | CHP_F_REPLY) ||
                    chp_msg_chunk_ok_decode(reply, h.len, &ok) != 0 || ok.index >= p->count ||
                    h.id != base + ok.index || !lens[ok.index]) {
                        rc = CHAPAR_EPROTO;
                        break;
                }
                window -= lens[ok.index];
                done_bytes += lens[ok.index];
                inflight--;
                if (ok.flags & CHP_CHUNK_DEDUP)
                        r->chunks_deduplicated++;
                if (o && o->progress)
                        o->progress(o->progress_ctx, done_bytes, total);
        }
        free(buf);
        free(lens);
        return rc ? rc : gone ? UPLOAD_GONE : 0;
}

int chapar_put_fd(struct chapar_client *c, int fd, const struct chapar_put_opts *o,
                  struct chapar_put_result *r)
{
        memset(r, 0, sizeof(*r));
        double t0 = chp_net_now_s();
        struct put_state p = {.fd = fd};
        struct stat st;
        uint8_t plain_hash[CHP_HASH_BYTES], blob[CHP_E2E_META_MAX], upload_id[CHP_UPLOAD_ID_BYTES];
        uint8_t *manifest = NULL, *missing = NULL, *open_msg = NULL;
        char entry[4300];
        int rc;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
                return CHAPAR_EIO;
        p.chunk_size = o && o->chunk_size ? o->chunk_size : CHP_CHUNK_DEFAULT;
        if (p.chunk_size < CHP_CHUNK_MIN || p.chunk_size > CHP_CHUNK_MAX ||
            (p.chunk_size & (p.chunk_size - 1)))
                return CHAPAR_EUSAGE;
        bool pad = o && o->pad;
        p.size = (uint64_t)st.st_size;
        p.padded = pad ? chp_e2e_padme(p.size) : p.size;
        p.plain_chunk = chp_e2e_plain_chunk(p.chunk_size);
        p.count = chp_e2e_chunk_count(p.padded, p.chunk_size);
        if (p.count > CHP_MANIFEST_MAX_CHUNKS ||
            CHP_MANIFEST_HEADER + p.count * CHP_HASH_BYTES + CHP_E2E_META_MAX + 8 >
                CHP_OPEN_MAX_PAYLOAD) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the file is too large for %u-byte chunks: use a larger chunk size",
                         p.chunk_size);
                return CHAPAR_EUSAGE;
        }

        /* 1. the content's key: the same as last time for the same content */
        if ((rc = hash_file(fd, p.size, plain_hash)))
                return rc;
        ssize_t blob_len = cc_keycache_find(c, plain_hash, p.chunk_size, pad, p.key, blob,
                                            sizeof(blob), entry, sizeof(entry));
        if (blob_len < 0)
                return (int)blob_len;
        struct chp_e2e_meta meta = {.plain_size = p.size, .chunk_size = p.chunk_size}, old;
        snprintf(meta.name, sizeof(meta.name), "%s", o && o->name ? o->name : "");
        snprintf(meta.mime, sizeof(meta.mime), "%s", o && o->mime ? o->mime : "");
        if (!blob_len || chp_e2e_open_meta(p.key, blob, (size_t)blob_len, &old) != 0 ||
            memcmp(&old, &meta, sizeof(meta)) != 0) {
                blob_len = chp_e2e_seal_meta(p.key, &meta, blob, sizeof(blob));
                if (blob_len < 0) {
                        rc = CHAPAR_EUSAGE;
                        goto out;
                }
                /* only a new entry is written: concurrent puts of the same content all read the
                 * existing one and so send the same manifest */
                cc_keycache_store(entry, p.key, blob, (size_t)blob_len);
        }

        /* 2. encrypt and address every chunk; keep the ciphertext while it fits the budget */
        p.addrs = malloc(p.count * CHP_HASH_BYTES);
        p.scratch = malloc(p.plain_chunk);
        uint64_t total = chp_e2e_cipher_size(p.padded, p.chunk_size);
        if (total <= KEEP_BUDGET)
                p.kept = calloc(p.count, sizeof(*p.kept));
        uint8_t *cbuf = malloc(p.chunk_size);
        if (!p.addrs || !p.scratch || !cbuf) {
                free(cbuf);
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        for (uint64_t i = 0; i < p.count && !rc; i++) {
                size_t len;
                if (c->cancel) {
                        rc = CHAPAR_ECANCELED;
                        break;
                }
                if ((rc = seal_chunk(&p, i, cbuf, &len)))
                        break;
                if (chp_sha256(cbuf, len, p.addrs + i * CHP_HASH_BYTES) != 0)
                        rc = CHAPAR_EIO;
                if (p.kept && (p.kept[i] = malloc(len)))
                        memcpy(p.kept[i], cbuf, len);
        }
        free(cbuf);
        if (rc)
                goto out;

        /* 3. the manifest; OPEN says what the relay still lacks */
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = p.chunk_size,
                                 .total_size = total,
                                 .chunk_count = (uint32_t)p.count,
                                 .meta_len = (uint32_t)blob_len,
                                 .meta = blob,
                                 .addrs = p.addrs};
        size_t mlen = chp_manifest_encoded_size(&m);
        manifest = malloc(mlen);
        open_msg = malloc(mlen + 8);
        if (!manifest || !open_msg || chp_manifest_encode(&m, manifest, mlen) != (ssize_t)mlen) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        struct chp_msg_open om = {
            .expires_in = o ? o->expires_in : 0, .manifest = manifest, .manifest_len = mlen};
        ssize_t ol = chp_msg_open_encode(open_msg, mlen + 8, &om);
        struct chp_frame_header h;
        uint8_t *reply;
        bool not_found_ok = true;
        int opens = 0;
reopen:
        if (++opens > 4) { /* committed under us again and again: cannot happen with one file */
                rc = CHAPAR_EPROTO;
                goto out;
        }
        if (ol < 0 || (rc = cc_call(c, CHP_F_OPEN, open_msg, (size_t)ol, &h, &reply)))
                goto out;
        struct chp_msg_open_ok ok;
        if (chp_msg_open_ok_decode(reply, h.len, &ok) != 0 || ok.chunk_count != p.count ||
            chp_manifest_id(manifest, mlen, r->file_id) != 0 ||
            memcmp(ok.file_id, r->file_id, CHP_HASH_BYTES) != 0) {
                rc = CHAPAR_EPROTO;
                goto out;
        }
        memcpy(upload_id, ok.upload_id, CHP_UPLOAD_ID_BYTES);
        size_t map = chp_bitmap_bytes(ok.chunk_count);
        free(missing);
        missing = malloc(map ? map : 1);
        if (!missing) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        memcpy(missing, ok.missing, map);
        bool complete = ok.state == CHP_UPLOAD_COMPLETE;
        uint64_t already = 0;
        uint32_t nmissing = 0;
        for (uint64_t i = 0; i < p.count; i++) {
                if (!complete && chp_bit(missing, (uint32_t)i)) {
                        nmissing++;
                        continue;
                }
                already += i + 1 == p.count ? total - i * p.chunk_size : p.chunk_size;
        }
        r->chunks_total = (uint32_t)p.count;
        r->bytes_total = total;
        r->chunks_deduplicated = (uint32_t)p.count - nmissing;
        if (o && o->progress)
                o->progress(o->progress_ctx, already, total);

        /* 4. the chunks, then the commit */
        if (!complete) {
                rc = send_chunks(c, &p, upload_id, missing, o, r, already, &not_found_ok);
                if (rc == UPLOAD_GONE)
                        goto reopen;
                if (rc)
                        goto out;
                uint8_t fid[CHP_HASH_BYTES];
                if ((rc = cc_call(c, CHP_F_COMMIT, upload_id, CHP_UPLOAD_ID_BYTES, &h, &reply)))
                        goto out;
                if (h.len != CHP_HASH_BYTES) {
                        rc = CHAPAR_EPROTO;
                        goto out;
                }
                memcpy(fid, reply, CHP_HASH_BYTES);
                if (memcmp(fid, r->file_id, CHP_HASH_BYTES) != 0) {
                        rc = CHAPAR_EPROTO;
                        goto out;
                }
        }
        rc = make_ticket(c, r->file_id, p.key, r->ticket, sizeof(r->ticket));
        r->seconds = chp_net_now_s() - t0;
out:
        if (p.kept) {
                for (uint64_t i = 0; i < p.count; i++)
                        free(p.kept[i]);
                free(p.kept);
        }
        sodium_memzero(p.key, sizeof(p.key));
        if (p.scratch)
                sodium_memzero(p.scratch, p.plain_chunk);
        free(p.scratch);
        free(p.addrs);
        free(manifest);
        free(open_msg);
        free(missing);
        return rc;
}

int chapar_put_path(struct chapar_client *c, const char *path, const struct chapar_put_opts *o,
                    struct chapar_put_result *r)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot read %.300s: %s", path,
                         strerror(errno));
                return CHAPAR_EIO;
        }
        struct chapar_put_opts with_name = o ? *o : (struct chapar_put_opts){0};
        if (!with_name.name) {
                const char *slash = strrchr(path, '/');
                with_name.name = slash ? slash + 1 : path;
        }
        int rc = chapar_put_fd(c, fd, &with_name, r);
        close(fd);
        return rc;
}
