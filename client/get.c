/* get.c — chapar_get and chapar_get_fd: fetch a file's chunks GET_INFLIGHT at a time, check each
 * against its address and open it with the ticket's key; chapar_get writes the plaintext to a
 * partial file that becomes the target only when every chunk has verified, chapar_get_fd writes
 * it in order to a descriptor.
 *
 * Partial downloads live beside their target: NAME.chapar-part (plaintext written so far) and
 * NAME.chapar-part.state (file id, chunk count, bitmap of chunks written), so an interrupted get
 * resumes; a chunk that fails verification discards both. Neither is ever opened through a
 * symlink, and the finished file never replaces an existing one (RENAME_NOREPLACE, or link on a
 * file system without it): the sender's name gets " (1)", " (2)", ... and a path the caller
 * named is refused.
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "e2e.h"
#include "hash.h"
#include "http_parse.h"
#include "manifest.h"
#include "net.h"
#include "ticket.h"

#define GET_INFLIGHT   16
#define GET_WINDOW_MAX (16u << 20) /* plaintext chunks chapar_get_fd holds for reordering */
#define PART_SUFFIX    ".chapar-part"
#define PART_LONGEST   ".chapar-part.state.tmp" /* the longest name a partial file adds */

/* ---- the sender's name ----------------------------------------------------------------------- */

/* Whether the n bytes at p are a character no file name gets: C0 and C1 controls, DEL, the
 * characters Windows refuses (a messenger client may run there) and the bidirectional
 * overrides that make "gpj.exe" read as "exe.jpg". */
static bool bad_char(const unsigned char *p, size_t n)
{
        if (n == 1)
                return p[0] < 0x20 || p[0] == 0x7f || strchr("<>:\"|?*", p[0]);
        if (n == 2)
                return p[0] == 0xc2 && p[1] < 0xa0; /* U+0080..U+009F */
        if (n == 3 && p[0] == 0xe2)
                return (p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) || /* U+202A..U+202E */
                       (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9);   /* U+2066..U+2069 */
        return false;
}

/* Whether s[0..n) names a Windows device (CON, PRN, AUX, NUL, COM0-9, LPT0-9, COM and LPT with
 * a superscript 1-3, CONIN$, CONOUT$), in any case, trailing spaces ignored. */
static bool reserved_stem(const char *s, size_t n)
{
        static const char *const dev[] = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"};
        while (n && s[n - 1] == ' ')
                n--;
        for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
                if (n == strlen(dev[i]) && strncasecmp(s, dev[i], n) == 0)
                        return true;
        if (n < 4 || (strncasecmp(s, "COM", 3) != 0 && strncasecmp(s, "LPT", 3) != 0))
                return false;
        if (n == 4)
                return s[3] >= '0' && s[3] <= '9';
        /* superscript one, two, three: U+00B9, U+00B2, U+00B3 */
        return n == 5 && (unsigned char)s[3] == 0xc2 &&
               ((unsigned char)s[4] == 0xb9 || (unsigned char)s[4] == 0xb2 ||
                (unsigned char)s[4] == 0xb3);
}

/* How many of the first n bytes of s to keep so that no UTF-8 character is cut. */
static size_t utf8_cut(const char *s, size_t n)
{
        while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
                n--;
        return n;
}

/* A name ending in one of the partial files' own (PART_SUFFIX, then ".state" or ".state.tmp",
 * in any case) gets '_' for that dot: a sender's file saved under such a name would be taken
 * by a later get for the partial download of the file it names, and "resumed" unverified. */
static void unpart(char *name, size_t len)
{
        static const char *const tails[] = {PART_SUFFIX, PART_SUFFIX ".state",
                                            PART_SUFFIX ".state.tmp"};
        for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
                size_t t = strlen(tails[i]);
                if (len >= t && strcasecmp(name + len - t, tails[i]) == 0) {
                        name[len - t] = '_';
                        return;
                }
        }
}

int cc_safe_name(const char *sender, unsigned n, char *out, size_t cap)
{
        if (cap < CC_SAFE_NAME_MAX + 1 || n > CC_SAFE_NAME_TRIES)
                return -EINVAL;
        const char *base = sender;
        for (const char *p = sender; *p; p++)
                if (*p == '/' || *p == '\\')
                        base = p + 1;
        char name[4096]; /* the whole name, cut to CC_SAFE_NAME_MAX below, extension kept */
        size_t len = 0;
        const unsigned char *p = (const unsigned char *)base;
        size_t left = strnlen(base, sizeof(name) - 1);
        while (left) {
                size_t l = chp_http_utf8_len(p, left);
                if (l == 0 || bad_char(p, l)) {
                        name[len++] = '_';
                        l = l ? l : 1;
                } else {
                        memcpy(name + len, p, l);
                        len += l;
                }
                p += l;
                left -= l;
        }
        /* leading spaces go, and trailing dots and spaces (Windows drops them) */
        size_t start = 0;
        while (start < len && name[start] == ' ')
                start++;
        while (len > start && (name[len - 1] == '.' || name[len - 1] == ' '))
                len--;
        memmove(name, name + start, len - start);
        len -= start;
        name[len] = '\0';
        if (len == 0)
                len = (size_t)snprintf(name, sizeof(name), "chapar-download");
        for (size_t i = 0; i < len && name[i] == '.'; i++)
                name[i] = '_'; /* no hidden files */
        /* before the extension is taken: " (1)" then goes before ".state" */
        unpart(name, len);
        size_t stem = strcspn(name, ".");
        bool reserved = reserved_stem(name, stem);
        /* the extension (".tar.gz" counts as one) stays whole when the name is cut */
        const char *dot = strrchr(name, '.');
        size_t ext = dot && dot != name && strlen(dot) <= 32 ? strlen(dot) : 0;
        if (ext && len - ext >= 4 && strncasecmp(name + len - ext - 4, ".tar", 4) == 0 &&
            ext + 4 <= 32 && len - ext - 4 > 0)
                ext += 4;
        char suffix[16] = "";
        if (n)
                snprintf(suffix, sizeof(suffix), " (%u)", n);
        size_t room = CC_SAFE_NAME_MAX - ext - strlen(suffix) - (reserved ? 1 : 0);
        size_t keep = len - ext <= room ? len - ext : utf8_cut(name, room);
        while (!ext && !n && keep && (name[keep - 1] == '.' || name[keep - 1] == ' '))
                keep--; /* cut, it must not end in a dot or space either */
        int w = snprintf(out, cap, "%s%.*s%s%s", reserved ? "_" : "", (int)keep, name, suffix,
                         name + len - ext);
        if (w > 0)
                unpart(out, strlen(out)); /* a cut stem may end in PART_SUFFIX before ".state" */
        return w;
}

/* ---- where the file goes ------------------------------------------------------------------- */

/* The target: a path the caller named (never replaced), or the sender's name, made safe, in a
 * directory (numbered until it is free). The partial files are named after either. */
struct target {
        const char *sender; /* borrowed: the sender's name */
        char dir[4096];     /* "" = the current directory */
        bool numbered;      /* the sender's name: " (n)" until free; else exactly path */
        char path[4096];    /* the file to create: the caller's, or the name's n-th form */
};

/* dir/leaf into out; -ENAMETOOLONG when it does not fit. */
static int join(char *out, size_t cap, const char *dir, const char *leaf)
{
        int w =
            *dir ? snprintf(out, cap, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", leaf)
                 : snprintf(out, cap, "%s", leaf);
        return w < 0 || (size_t)w >= cap ? -ENAMETOOLONG : 0;
}

/* Where out_path (or, when NULL, the current directory) sends the file: checked before
 * anything is fetched, so that a target that cannot be written is said at once. */
static int target_init(struct chapar_client *c, struct target *tg, const char *out_path)
{
        struct stat st;
        tg->numbered = !out_path || (stat(out_path, &st) == 0 && S_ISDIR(st.st_mode));
        if (tg->numbered) {
                snprintf(tg->dir, sizeof(tg->dir), "%s", out_path ? out_path : "");
                return 0;
        }
        if (snprintf(tg->path, sizeof(tg->path), "%s", out_path) >= (int)sizeof(tg->path)) {
                snprintf(c->last_error, sizeof(c->last_error), "the path is too long");
                return CHAPAR_EUSAGE;
        }
        const char *slash = strrchr(out_path, '/');
        if (slash)
                snprintf(tg->dir, sizeof(tg->dir), "%.*s",
                         slash == out_path ? 1 : (int)(slash - out_path), out_path);
        if (!*(slash ? slash + 1 : out_path)) {
                snprintf(c->last_error, sizeof(c->last_error), "%.300s: no such directory",
                         out_path);
                return CHAPAR_EIO;
        }
        int e = !*tg->dir ? 0 : stat(tg->dir, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
        if (e) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot write %.300s: %.300s: %s",
                         out_path, tg->dir, strerror(e));
                return CHAPAR_EIO;
        }
        if (lstat(out_path, &st) == 0) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "%.300s exists; not overwriting it (remove it, or choose another -o)",
                         out_path);
                return CHAPAR_EIO;
        }
        return 0;
}

/* The partial file's path for the target: its name cut so that every name the partial files
 * use fits a file name. */
static int target_part(const struct target *tg, char *out, size_t cap)
{
        char leaf[CC_SAFE_NAME_MAX + 1];
        if (tg->numbered) {
                if (cc_safe_name(tg->sender, 0, leaf, sizeof(leaf)) < 0)
                        return -EINVAL;
        } else {
                const char *slash = strrchr(tg->path, '/');
                const char *l = slash ? slash + 1 : tg->path;
                size_t ln = strnlen(l, CC_SAFE_NAME_MAX);
                memcpy(leaf, l, ln);
                leaf[ln] = '\0';
        }
        size_t keep = strlen(leaf), most = CC_SAFE_NAME_MAX - (sizeof(PART_LONGEST) - 1);
        if (keep > most)
                keep = utf8_cut(leaf, most);
        leaf[keep] = '\0';
        char part[CC_SAFE_NAME_MAX + sizeof(PART_SUFFIX)]; /* fits CC_SAFE_NAME_MAX: leaf was cut */
        snprintf(part, sizeof(part), "%s" PART_SUFFIX, leaf);
        return join(out, cap, tg->dir, part);
}

/* Renames from to to unless to exists (-EEXIST): RENAME_NOREPLACE, or where the file system
 * lacks it, a hard link (which fails on an existing name too) and an unlink. */
static int rename_noreplace(const char *from, const char *to)
{
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return -errno;
        if (link(from, to) != 0)
                return -errno;
        unlink(from);
        return 0;
}

/* Moves the finished partial file tmp to the target: the caller's path if it is still free,
 * else the first free form of the sender's name. */
static int target_finish(struct chapar_client *c, struct target *tg, const char *tmp)
{
        int rc = -EEXIST;
        if (!tg->numbered) {
                rc = rename_noreplace(tmp, tg->path);
        } else {
                for (unsigned n = 0; n <= CC_SAFE_NAME_TRIES && rc == -EEXIST; n++) {
                        char leaf[CC_SAFE_NAME_MAX + 1];
                        if (cc_safe_name(tg->sender, n, leaf, sizeof(leaf)) < 0 ||
                            (rc = join(tg->path, sizeof(tg->path), tg->dir, leaf)) != 0)
                                break;
                        rc = rename_noreplace(tmp, tg->path);
                }
        }
        if (rc == -EEXIST)
                snprintf(c->last_error, sizeof(c->last_error),
                         "%.300s exists; not overwriting it (the download is kept in %.300s)",
                         tg->numbered ? "every numbered name" : tg->path, tmp);
        else if (rc)
                snprintf(c->last_error, sizeof(c->last_error), "cannot create %.300s: %s", tg->path,
                         strerror(-rc));
        return rc ? CHAPAR_EIO : 0;
}

/* ---- the partial file ---------------------------------------------------------------------- */

struct part {
        char tmp[4200], state[4300];
        int fd;
        uint8_t *have; /* bitmap of chunks written */
        size_t have_len;
};

/* A fresh file at path, created here: whatever was there (a symlink, a stale file) is removed
 * first, and O_EXCL|O_NOFOLLOW make sure the file opened is the one created. */
static int create_fresh(const char *path, int flags)
{
        if (unlink(path) != 0 && errno != ENOENT)
                return -errno;
        int fd = open(path, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        return fd < 0 ? -errno : fd;
}

/* The state file: file id, chunk count, bitmap. A partial download of another file, or a
 * partial file that is not a plain file of its own, is discarded. */
static int part_open(struct chapar_client *c, struct part *pt, const struct target *tg,
                     const uint8_t *file_id, uint32_t count)
{
        int rc = target_part(tg, pt->tmp, sizeof(pt->tmp));
        if (!rc &&
            snprintf(pt->state, sizeof(pt->state), "%s.state", pt->tmp) >= (int)sizeof(pt->state))
                rc = -ENAMETOOLONG;
        if (rc) {
                snprintf(c->last_error, sizeof(c->last_error), "the path is too long");
                return CHAPAR_EIO;
        }
        pt->have_len = chp_bitmap_bytes(count);
        pt->have = calloc(1, pt->have_len + 1);
        if (!pt->have)
                return CHAPAR_ENOMEM;
        /* O_NONBLOCK: a FIFO at the state file's name reads as empty (no resume), not waited on */
        int sfd = open(pt->state, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        bool resume = false;
        if (sfd >= 0) {
                uint8_t head[36];
                if (read(sfd, head, 36) == 36 && memcmp(head, file_id, 32) == 0 &&
                    chp_get_le32(head + 32) == count &&
                    read(sfd, pt->have, pt->have_len) == (ssize_t)pt->have_len)
                        resume = true;
                close(sfd);
        }
        pt->fd = -1;
        struct stat st;
        if (resume) {
                pt->fd = open(pt->tmp, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
                if (pt->fd >= 0 &&
                    (fstat(pt->fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)) {
                        close(pt->fd);
                        pt->fd = -1;
                }
        }
        if (pt->fd < 0) {
                memset(pt->have, 0, pt->have_len);
                pt->fd = create_fresh(pt->tmp, O_RDWR);
        }
        if (pt->fd < 0) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot create %.300s: %s", pt->tmp,
                         strerror(-pt->fd));
                return CHAPAR_EIO;
        }
        return 0;
}

static int part_save(struct part *pt, const uint8_t *file_id, uint32_t count)
{
        char tmp[4400];
        snprintf(tmp, sizeof(tmp), "%s.tmp", pt->state);
        int fd = create_fresh(tmp, O_WRONLY);
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

/* ---- fetching ------------------------------------------------------------------------------ */

/* A file named by a ticket, its manifest fetched and its metadata opened and checked. */
struct fetch {
        struct chp_ticket t;
        struct cc_fetched f;
        struct chp_e2e_meta meta;
};

static void fetch_free(struct fetch *x)
{
        cc_fetched_free(&x->f);
        sodium_memzero(&x->t, sizeof(x->t));
        sodium_memzero(&x->meta, sizeof(x->meta));
}

static int fetch_open(struct chapar_client *c, const char *ticket, struct fetch *x)
{
        if (chp_ticket_parse(ticket, strlen(ticket), &x->t) != 0 || !x->t.has_key) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "not a chapar ticket with a key (chapar://HOST:PORT/KEY/ID#KEY)");
                return CHAPAR_EUSAGE;
        }
        int rc = cc_fetch_manifest(c, &x->t, &x->f);
        if (rc)
                return rc;
        const struct chp_manifest *m = &x->f.m;
        uint64_t sealed = 0;
        if (chp_e2e_open_meta(x->t.file_key, m->meta, m->meta_len, &x->meta) != 0 ||
            x->meta.chunk_size != m->chunk_size ||
            (sealed = chp_e2e_cipher_size(x->meta.plain_size, x->meta.chunk_size)) == 0 ||
            sealed > m->total_size) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the file's metadata does not open with this ticket's key");
                return CHAPAR_EINTEGRITY;
        }
        uint32_t count = m->chunk_count;
        if (m->total_size < (uint64_t)count * CHP_E2E_CHUNK_OVERHEAD ||
            count != chp_e2e_chunk_count(m->total_size - (uint64_t)count * CHP_E2E_CHUNK_OVERHEAD,
                                         m->chunk_size))
                return CHAPAR_EINTEGRITY;
        return 0;
}

/* Where verified plaintext goes: a partial file written at each chunk's offset (pt), or a
 * descriptor written in order (out_fd >= 0), chunks that arrive early held in a window of w
 * slots. */
struct getter {
        struct chapar_client *c;
        struct fetch *x;
        struct part *pt;
        uint8_t *plain;   /* one chunk's plaintext (partial file), or w slots (descriptor) */
        uint8_t *have;    /* chunks received: pt->have, or the window's own map */
        int out_fd;       /* -1: the partial file */
        uint32_t next, w; /* descriptor: the next chunk to write; the window's size */
        uint32_t base, done;
        uint64_t done_bytes;
        const struct chapar_get_opts *o;
        struct chapar_get_result *r;
};

/* The plaintext bytes of chunk k that belong to the file (padding excluded). */
static size_t chunk_plain_len(const struct getter *g, uint32_t k, size_t n)
{
        uint64_t plain_size = g->x->meta.plain_size;
        uint64_t off = (uint64_t)k * chp_e2e_plain_chunk(g->x->f.m.chunk_size);
        if (off >= plain_size)
                return 0; /* padding only */
        return off + n > plain_size ? (size_t)(plain_size - off) : n;
}

static int write_all(struct chapar_client *c, int fd, const uint8_t *p, size_t n)
{
        while (n) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) {
                        snprintf(c->last_error, sizeof(c->last_error),
                                 "cannot write the output: %s",
                                 w < 0 ? strerror(errno) : "no progress");
                        return CHAPAR_EIO;
                }
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Descriptor: writes every chunk from next on that has arrived. */
static int flush_window(struct getter *g)
{
        uint32_t count = g->x->f.m.chunk_count;
        size_t slot = chp_e2e_plain_chunk(g->x->f.m.chunk_size);
        while (g->next < count && chp_bit(g->have, g->next)) {
                uint32_t k = g->next;
                size_t n = chunk_plain_len(
                    g, k, chp_manifest_chunk_len(&g->x->f.m, k) - CHP_E2E_CHUNK_OVERHEAD);
                int rc = write_all(g->c, g->out_fd, g->plain + (size_t)(k % g->w) * slot, n);
                if (rc)
                        return rc;
                g->next++;
        }
        return 0;
}

/* Receives one CHUNK_DATA reply, verifies it (address, then tag) and writes its plaintext. */
static int get_one(struct getter *g)
{
        struct chapar_client *c = g->c;
        const struct chp_manifest *m = &g->x->f.m;
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
            chp_bit(g->have, k) || (g->out_fd >= 0 && (k < g->next || k >= g->next + g->w)))
                return CHAPAR_EPROTO;
        uint8_t *plain = g->plain;
        if (g->out_fd >= 0)
                plain += (size_t)(k % g->w) * chp_e2e_plain_chunk(m->chunk_size);
        /* the address first (what the relay stored), then the tag (what the sender sealed) */
        if (chp_sha256(d.data, d.len, sum) != 0 ||
            sodium_memcmp(sum, m->addrs + (size_t)k * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0 ||
            chp_e2e_open_chunk(g->x->t.file_key, k, k + 1 == m->chunk_count, d.data, d.len,
                               plain) != 0) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "chunk %u failed verification: wrong key or tampered data", k);
                return CHAPAR_EINTEGRITY;
        }
        size_t n = chunk_plain_len(g, k, d.len - CHP_E2E_CHUNK_OVERHEAD);
        uint64_t off = (uint64_t)k * chp_e2e_plain_chunk(m->chunk_size);
        chp_bit_set(g->have, k);
        if (g->out_fd >= 0) {
                if ((rc = flush_window(g)))
                        return rc;
        } else if (n && pwrite(g->pt->fd, plain, n, (off_t)off) != (ssize_t)n) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot write %.300s: %s",
                         g->pt->tmp, strerror(errno));
                return CHAPAR_EIO;
        }
        g->done++;
        g->done_bytes += n;
        g->r->bytes_received += d.len;
        if (g->pt && g->done % 64 == 0 && part_save(g->pt, g->x->t.file_id, m->chunk_count) != 0)
                return CHAPAR_EIO;
        if (g->o && g->o->progress)
                g->o->progress(g->o->progress_ctx, g->done_bytes, g->x->meta.plain_size);
        return 0;
}

/* Asks for every chunk not yet written (and, while uploading, stored), GET_INFLIGHT at once;
 * for a descriptor, in order and no further than the window reaches. */
static int get_pass(struct getter *g)
{
        const struct cc_fetched *f = &g->x->f;
        const struct chp_manifest *m = &f->m;
        bool ordered = g->out_fd >= 0;
        uint32_t inflight = 0;
        int rc = 0;
        for (uint32_t i = 0; i < m->chunk_count && !rc; i++) {
                if (chp_bit(g->have, i))
                        continue;
                if (!f->complete && !chp_bit(f->present, i)) {
                        if (ordered)
                                break; /* the window waits for it */
                        continue;
                }
                while (!rc && ordered && i >= g->next + g->w && inflight) {
                        rc = get_one(g);
                        inflight--;
                }
                struct chp_msg_get_chunk q = {.addr = m->addrs + (size_t)i * CHP_HASH_BYTES};
                uint8_t qp[40];
                if (rc || chp_msg_get_chunk_encode(qp, sizeof(qp), &q) != 40)
                        return rc ? rc : CHAPAR_EPROTO;
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

/* Fetches what is missing; a file still uploading is looked at again until it is complete. */
static int get_all(struct getter *g)
{
        struct fetch *x = g->x;
        uint32_t count = x->f.m.chunk_count;
        int rc = 0;
        while (!rc && g->done < count) {
                if ((rc = get_pass(g)) || g->done == count)
                        break;
                if (x->f.complete)
                        return CHAPAR_EPROTO; /* a complete file left chunks unfetched */
                if (g->pt)
                        part_save(g->pt, x->t.file_id, count);
                struct timespec ts = {0, 50 * 1000000L}; /* chunks arrive as they are stored */
                nanosleep(&ts, NULL);
                if (atomic_load_explicit(&g->c->cancel, memory_order_relaxed))
                        return CHAPAR_ECANCELED;
                /* the same file id: the same manifest, a newer map of stored chunks */
                cc_fetched_free(&x->f);
                if ((rc = cc_fetch_manifest(g->c, &x->t, &x->f)))
                        break;
        }
        return rc;
}

int chapar_get(struct chapar_client *c, const char *ticket, const char *out_path,
               const struct chapar_get_opts *o, struct chapar_get_result *r)
{
        memset(r, 0, sizeof(*r));
        cc_stats_begin(c);
        double t0 = chp_net_now_s();
        struct fetch x = {0};
        struct part pt = {.fd = -1};
        struct target tg = {0};
        uint8_t *plain = NULL;
        int rc;
        if ((rc = target_init(c, &tg, out_path)) || (rc = fetch_open(c, ticket, &x)))
                goto out;
        uint32_t count = x.f.m.chunk_count, cs = x.f.m.chunk_size;
        uint32_t plain_chunk = chp_e2e_plain_chunk(cs);
        snprintf(r->name, sizeof(r->name), "%s", x.meta.name);
        tg.sender = x.meta.name;
        r->bytes_total = x.meta.plain_size;
        if ((rc = part_open(c, &pt, &tg, x.t.file_id, count)))
                goto out;
        plain = malloc(cs);
        if (!plain) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        struct getter g = {.c = c,
                           .x = &x,
                           .pt = &pt,
                           .plain = plain,
                           .have = pt.have,
                           .out_fd = -1,
                           .base = cc_reserve_ids(c, count + 1),
                           .o = o,
                           .r = r};
        for (uint32_t i = 0; i < count; i++) {
                if (chp_bit(pt.have, i)) {
                        g.done++;
                        g.done_bytes += plain_chunk;
                }
        }
        if (g.done_bytes > x.meta.plain_size)
                g.done_bytes = x.meta.plain_size;
        rc = get_all(&g);
        if (!rc && (ftruncate(pt.fd, (off_t)x.meta.plain_size) != 0 || fsync(pt.fd) != 0)) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot write %.300s: %s", pt.tmp,
                         strerror(errno));
                rc = CHAPAR_EIO;
        }
        if (!rc)
                rc = target_finish(c, &tg, pt.tmp);
        if (!rc) {
                snprintf(r->path, sizeof(r->path), "%s", tg.path);
                close(pt.fd);
                pt.fd = -1;
                unlink(pt.state);
        } else if (rc == CHAPAR_EINTEGRITY) {
                part_discard(&pt); /* nothing unverified is left behind */
        } else if (pt.fd >= 0) {
                part_save(&pt, x.t.file_id, count); /* resumable */
        }
        r->seconds = chp_net_now_s() - t0;
out:
        if (pt.fd >= 0)
                close(pt.fd);
        free(pt.have);
        if (plain)
                sodium_memzero(plain, x.f.m.chunk_size);
        free(plain);
        fetch_free(&x);
        return rc;
}

int chapar_get_fd(struct chapar_client *c, const char *ticket, int fd,
                  const struct chapar_get_opts *o, struct chapar_get_result *r)
{
        memset(r, 0, sizeof(*r));
        cc_stats_begin(c);
        double t0 = chp_net_now_s();
        struct fetch x = {0};
        uint8_t *win = NULL, *have = NULL;
        size_t win_len = 0;
        int rc;
        if (fd < 0)
                return CHAPAR_EUSAGE;
        if ((rc = fetch_open(c, ticket, &x)))
                goto out;
        uint32_t count = x.f.m.chunk_count;
        size_t slot = chp_e2e_plain_chunk(x.f.m.chunk_size);
        uint32_t w = (uint32_t)(GET_WINDOW_MAX / slot);
        w = w < 2 ? 2 : w > GET_INFLIGHT ? GET_INFLIGHT : w;
        snprintf(r->name, sizeof(r->name), "%s", x.meta.name);
        snprintf(r->path, sizeof(r->path), "-");
        r->bytes_total = x.meta.plain_size;
        win_len = (size_t)w * slot;
        win = malloc(win_len);
        have = calloc(1, chp_bitmap_bytes(count) + 1);
        if (!win || !have) {
                rc = CHAPAR_ENOMEM;
                goto out;
        }
        struct getter g = {.c = c,
                           .x = &x,
                           .plain = win,
                           .have = have,
                           .out_fd = fd,
                           .w = w,
                           .base = cc_reserve_ids(c, count + 1),
                           .o = o,
                           .r = r};
        rc = get_all(&g);
        if (!rc && g.next != count)
                rc = CHAPAR_EPROTO;
        r->seconds = chp_net_now_s() - t0;
out:
        if (win)
                sodium_memzero(win, win_len);
        free(win);
        free(have);
        fetch_free(&x);
        return rc;
}
