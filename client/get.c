/* get.c — chapar_get: fetch a file's chunks GET_INFLIGHT at a time, check each against its
 * address and open it with the ticket's key, and write the plaintext to a partial file that
 * becomes the target only when every chunk has verified.
 *
 * Partial downloads live beside their target: TARGET.chapar-part (plaintext written so far) and
 * TARGET.chapar-part.state (file id, chunk count, bitmap of chunks written), so an interrupted get
 * resumes; a chunk that fails verification discards both.
 */
#include "client_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "e2e.h"
#include "hash.h"
#include "manifest.h"
#include "net.h"
#include "ticket.h"

#define GET_INFLIGHT 16

/* A name safe to create in the current directory: the sender's name is untrusted, so only its
 * last path component is kept, control characters become '_', and ".", ".." or nothing become
 * "chapar-download". */
static void safe_name(const char *name, char *out, size_t cap)
{
        const char *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                base = "chapar-download";
        snprintf(out, cap, "%s", base);
        for (char *p = out; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '_';
}

struct part {
        char tmp[4200], state[4300];
        int fd;
        uint8_t *have; /* bitmap of chunks written */
        size_t have_len;
};

/* The state file: file id, chunk count, bitmap. A partial download of another file is
 * discarded. */
static int part_open(struct part *pt, const char *target, const uint8_t *file_id, uint32_t count)
{
        snprintf(pt->tmp, sizeof(pt->tmp), "%s.chapar-part", target);
        snprintf(pt->state, sizeof(pt->state), "%s.chapar-part.state", target);
        pt->have_len = chp_bitmap_bytes(count);
        pt->have = calloc(1, pt->have_len + 1);
        if (!pt->have)
                return CHAPAR_ENOMEM;
        int sfd = open(pt->state, O_RDONLY | O_CLOEXEC);
        bool resume = false;
        if (sfd >= 0) {
                uint8_t head[36];
                if (read(sfd, head, 36) == 36 && memcmp(head, file_id, 32) == 0 &&
                    chp_get_le32(head + 32) == count &&
                    read(sfd, pt->have, pt->have_len) == (ssize_t)pt->have_len)
                        resume = true;
                close(sfd);
        }
        if (!resume)
                memset(pt->have, 0, pt->have_len);
        pt->fd = open(pt->tmp, O_RDWR | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0600);
        return pt->fd < 0 ? CHAPAR_EIO : 0;
}

static int part_save(struct part *pt, const uint8_t *file_id, uint32_t count)
{
        char tmp[4400];
        snprintf(tmp, sizeof(tmp), "%s.tmp", pt->state);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return CHAPAR_EIO;
        uint8_t head[36];
        memcpy(head, file_id, 32);
        chp_put_le32(head + 32, count);
        bool ok =
            write(fd, head, 36) == 36 && write(fd, pt->have, pt->have_len) == (ssize_t)pt->have_len;
        close(fd);
        return ok && rename(tmp, pt->state) == 0 ? 0 : CHAPAR_EIO;
}

static void part_discard(struct part *pt)
{
        if (pt->fd >= 0)
                close(pt->fd);
        pt->fd = -1;
        unlink(pt->tmp);
        unlink(pt->state);
}

struct getter {
        struct chapar_client *c;
        const struct chp_ticket *t;
        const struct cc_fetched *f;
        const struct chp_e2e_meta *meta;
        struct part *pt;
        uint8_t *plain;
        uint32_t base, done;
        uint64_t done_bytes;
        const struct chapar_get_opts *o;
        struct chapar_get_result *r;
};

/* Receives one CHUNK_DATA reply, verifies it (address, then tag) and writes its plaintext. */
static int get_one(struct getter *g)
{
        struct chapar_client *c = g->c;
        const struct chp_manifest *m = &g->f->m;
        struct chp_frame_header h;
        uint8_t *reply, sum[CHP_HASH_BYTES];
        struct chp_msg_chunk_data d;
        int rc = cc_recv(c, &h, &reply);
        if (rc)
                return rc;
        if (h.type == CHP_F_ERROR)
                return cc_remote_error(c);
        uint32_t k = h.id - g->base;
        if (h.type != (CHP_F_GET_CHUNK | CHP_F_REPLY) || k >= m->chunk_count ||
            chp_msg_chunk_data_decode(reply, h.len, &d) != 0 || d.offset != 0 ||
            d.len != chp_manifest_chunk_len(m, k) || d.len < CHP_E2E_CHUNK_OVERHEAD ||
            chp_bit(g->pt->have, k))
                return CHAPAR_EPROTO;
        /* the address first (what the relay stored), then the tag (what the sender sealed) */
        if (chp_sha256(d.data, d.len, sum) != 0 ||
            sodium_memcmp(sum, m->addrs + (size_t)k * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0 ||
            chp_e2e_open_chunk(g->t->file_key, k, k + 1 == m->chunk_count, d.data, d.len,
                               g->plain) != 0) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "chunk %u failed verification: wrong key or tampered data", k);
                return CHAPAR_EINTEGRITY;
        }
        uint64_t plain_size = g->meta->plain_size;
        uint64_t off = (uint64_t)k * chp_e2e_plain_chunk(m->chunk_size);
        size_t n = d.len - CHP_E2E_CHUNK_OVERHEAD;
        if (off >= plain_size)
                n = 0; /* padding only */
        else if (off + n > plain_size)
                n = (size_t)(plain_size - off);
        if (n && pwrite(g->pt->fd, g->plain, n, (off_t)off) != (ssize_t)n)
                return CHAPAR_EIO;
        chp_bit_set(g->pt->have, k);
        g->done++;
        g->done_bytes += n;
        g->r->bytes_received += d.len;
        if (g->done % 64 == 0 && part_save(g->pt, g->t->file_id, m->chunk_count) != 0)
                return CHAPAR_EIO;
        if (g->o && g->o->progress)
                g->o->progress(g->o->progress_ctx, g->done_bytes, plain_size);
        return 0;
}

/* Asks for every chunk not yet written (and, while uploading, stored), GET_INFLIGHT at once. */
static int get_pass(struct getter *g)
{
        const struct chp_manifest *m = &g->f->m;
        uint32_t inflight = 0;
        int rc = 0;
        for (uint32_t i = 0; i < m->chunk_count && !rc; i++) {
                if (chp_bit(g->pt->have, i) || (!g->f->complete && !chp_bit(g->f->present, i)))
                        continue;
                struct chp_msg_get_chunk q = {.addr = m->addrs + (size_t)i * CHP_HASH_BYTES};
                uint8_t qp[40];
                if (chp_msg_get_chunk_encode(qp, sizeof(qp), &q) != 40)
                        return CHAPAR_EPROTO;
                if ((rc = cc_send(g->c, CHP_F_GET_CHUNK, g->base + i, qp, sizeof(qp), NULL, 0)))
                        break;
                if (++inflight >= GET_INFLIGHT) {
                        rc = get_one(g);
                        inflight--;
                }
        }
        while (!rc && inflight--)
                rc = get_one(g);
        return rc;
}

int chapar_get(struct chapar_client *c, const char *ticket, const char *out_path,
               const struct chapar_get_opts *o, struct chapar_get_result *r)
{
        memset(r, 0, sizeof(*r));
        double t0 = chp_net_now_s();
        struct chp_ticket t;
        struct cc_fetched f = {0};
        struct part pt = {.fd = -1};
        struct chp_e2e_meta meta;
        uint8_t *plain = NULL;
        int rc;
        if (chp_ticket_parse(ticket, strlen(ticket), &t) != 0 || !t.has_key) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "not a chapar ticket with a key (chapar://HOST:PORT/KEY/ID#KEY)");
                return CHAPAR_EUSAGE;
        }
        if ((rc = cc_fetch_manifest(c, &t, &f)))
                goto out;
        uint64_t sealed = 0;
        if (chp_e2e_open_meta(t.file_key, f.m.meta, f.m.meta_len, &meta) != 0 ||
            meta.chunk_size != f.m.chunk_size ||
            (sealed = chp_e2e_cipher_size(meta.plain_size, meta.chunk_size)) == 0 ||
            sealed > f.m.total_size) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the file's metadata does not open with this ticket's key");
                rc = CHAPAR_EINTEGRITY;
                goto out;
        }
        uint32_t count = f.m.chunk_count, cs = f.m.chunk_size;
        uint32_t plain_chunk = chp_e2e_plain_chunk(cs);
        if (f.m.total_size < (uint64_t)count * CHP_E2E_CHUNK_OVERHEAD ||
            count != chp_e2e_chunk_count(f.m.total_size - (uint64_t)count * CHP_E2E_CHUNK_OVERHEAD,
                                         cs)) {
                rc = CHAPAR_EINTEGRITY;
                goto out;
        }
        snprintf(r->name, sizeof(r->name), "%s", meta.name);
        if (out_path)
                snprintf(r->path, sizeof(r->path), "%s", out_path);
        else
                safe_name(meta.name, r->path, sizeof(r->path));
        r->bytes_total = meta.plain_size;
        if ((rc = part_open(&pt, r->path, t.file_id, count)))
                goto out;
        plain = malloc(cs);
        if (!plain) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        struct getter g = {.c = c,
                           .t = &t,
                           .f = &f,
                           .meta = &meta,
                           .pt = &pt,
                           .plain = plain,
                           .base = cc_reserve_ids(c, count + 1),
                           .o = o,
                           .r = r};
        for (uint32_t i = 0; i < count; i++) {
                if (chp_bit(pt.have, i)) {
                        g.done++;
                        g.done_bytes += plain_chunk;
                }
        }
        if (g.done_bytes > meta.plain_size)
                g.done_bytes = meta.plain_size;
        /* fetch what is missing; a file still uploading is looked at again until complete */
        while (!rc && g.done < count) {
                if ((rc = get_pass(&g)) || g.done == count)
                        break;
                if (f.complete) {
                        rc = CHAPAR_EPROTO; /* a complete file left chunks unfetched */
                        break;
                }
                part_save(&pt, t.file_id, count);
                struct timespec ts = {0, 50 * 1000000L}; /* chunks arrive as they are stored */
                nanosleep(&ts, NULL);
                if (c->cancel) {
                        rc = CHAPAR_ECANCELED;
                        break;
                }
                cc_fetched_free(&f);
                if ((rc = cc_fetch_manifest(c, &t, &f)))
                        break;
        }
        if (!rc && (ftruncate(pt.fd, (off_t)meta.plain_size) != 0 || fsync(pt.fd) != 0 ||
                    rename(pt.tmp, r->path) != 0))
                rc = CHAPAR_EIO;
        if (!rc) {
                close(pt.fd);
                pt.fd = -1;
                unlink(pt.state);
        } else if (rc == CHAPAR_EINTEGRITY) {
                part_discard(&pt); /* nothing unverified is left behind */
        } else if (pt.fd >= 0) {
                part_save(&pt, t.file_id, count); /* resumable */
        }
        r->seconds = chp_net_now_s() - t0;
out:
        if (pt.fd >= 0)
                close(pt.fd);
        free(pt.have);
        if (plain)
                sodium_memzero(plain, f.m.chunk_size);
        free(plain);
        cc_fetched_free(&f);
        sodium_memzero(&t, sizeof(t));
        sodium_memzero(&meta, sizeof(meta));
        return rc;
}
