/* get.c — chapar_get and chapar_get_fd: fetch a file's chunks striped over the client's
 * transport.connections connections (or as many as make it faster), GET_INFLIGHT requests out on
 * each, check each chunk against its address and open it with the ticket's key; chapar_get
 * writes the plaintext to a partial file that becomes the target only when every chunk has
 * verified, chapar_get_fd writes it in order to a descriptor. A connection that breaks is made
 * again (backoff, up to transport.retry_s without progress) and its chunks fetched again.
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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
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

#define GET_INFLIGHT    16          /* requests out per connection */
#define GET_WINDOW_MAX  (16u << 20) /* plaintext chunks chapar_get_fd holds for reordering */
#define GET_POLL_MS     50          /* an idle connection, the caller's loop, an upload's map */
#define GET_STEAL_MIN_S 0.25        /* endgame: a chunk held this much longer than chunks take */
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
 * slots.
 *
 * The chunks are striped over up to CHAPAR_CONNECTIONS_MAX connections, a thread each (the
 * channel API blocks): a connection takes the next chunk to fetch whenever it has fewer than
 * GET_INFLIGHT requests out, so a slow one takes fewer. It verifies, opens and writes what it
 * receives itself; the calling thread writes the descriptor in order, saves the partial file's
 * state, calls progress, adds connections (connections = 0) and, while the file is uploading,
 * asks for the newer map of stored chunks. A connection that breaks gives its chunks back and is
 * made again after cc_backoff_ms; when nothing is left to ask for, an idle connection asks again
 * for a chunk another has held far longer than chunks take (endgame). Everything below `mu`
 * is under it unless it says otherwise. */
enum { CK_TODO, CK_ASKED, CK_CLAIMED, CK_DONE }; /* claimed: being written by one connection */

struct getter;

/* One connection of the stripe. ch and the state flags are under the getter's mu; q is the
 * connection's own (its thread's). */
struct conn {
        struct getter *g;
        pthread_t th;
        bool started, exited;
        bool primary;             /* its channel is c->ch: a replacement becomes c->ch */
        bool busy;                /* in send or recv: the end shuts its socket down */
        bool broken;              /* its socket was shut down or failed: not reusable */
        bool cut;                 /* the last channel broke: the next open is a reconnect */
        struct chp_channel *ch;   /* NULL: not open */
        struct chp_channel *dead; /* the primary's broken channel, until replaced */
        uint32_t base, attempt;
        struct {
                uint32_t k;
                double at;
                bool sent;
        } q[GET_INFLIGHT]; /* requests out, oldest first */
        uint32_t n;
        uint8_t *buf; /* one chunk's plaintext */
};

struct getter {
        struct chapar_client *c;
        struct fetch *x;
        struct part *pt;
        uint8_t *plain;   /* descriptor: w slots */
        uint8_t *have;    /* chunks written: pt->have, or the window's own map */
        int out_fd;       /* -1: the partial file */
        uint32_t next, w; /* descriptor: the next chunk to write; the window's size */
        uint32_t done;
        uint64_t done_bytes;
        const struct chapar_get_opts *o;
        struct chapar_get_result *r;

        pthread_mutex_t mu;
        pthread_mutex_t open_mu; /* who changes c (cc_open_extra, a manifest, c->ch) holds it */
        pthread_cond_t cv;       /* a chunk done, a connection gone, the window moved, stop */
        uint8_t *st;             /* CK_* per chunk */
        uint8_t *owners;         /* connections that asked for it and have no reply yet */
        double *asked;           /* when it was last asked for */
        uint32_t lo;             /* no CK_TODO chunk below it */
        bool complete;           /* else x->f.present says what may be asked for */
        struct conn conns[CHAPAR_CONNECTIONS_MAX];
        uint32_t nconns, open_now, alive;
        bool stop, pending_open;
        bool flushing;               /* a connection writes the window */
        double last_progress, avg_s; /* the last chunk's arrival; mean ask-to-reply time */
        int32_t retry_s;
        int rc; /* the first failure, why it says why (remote: an ERROR frame's code) */
        char why[1024];
        bool remote;
        uint32_t remote_code;
        uint32_t reconnects, max_open;
        uint64_t resent;
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

/* Records the get's first failure and stops it. */
static void __attribute__((format(printf, 3, 4)))
g_fail(struct getter *g, int rc, const char *fmt, ...)
{
        if (!g->rc) {
                g->rc = rc;
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(g->why, sizeof(g->why), fmt, ap);
                va_end(ap);
        }
        g->stop = true;
        pthread_cond_broadcast(&g->cv);
}

/* Waits on cv for at most ms. */
static void g_wait(struct getter *g, uint32_t ms)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
}

/* The end (exclusive) of what may be asked for now: the window's, for a descriptor. */
static uint32_t ask_end(const struct getter *g)
{
        uint32_t count = g->x->f.m.chunk_count;
        if (g->out_fd < 0 || g->next + g->w >= count)
                return count;
        return g->next + g->w;
}

/* The next chunk to ask for: not asked, stored (while uploading), in the window. */
static bool take(struct getter *g, uint32_t *out)
{
        uint32_t count = g->x->f.m.chunk_count, end = ask_end(g);
        while (g->lo < count && g->st[g->lo] != CK_TODO)
                g->lo++;
        for (uint32_t k = g->lo; k < end; k++)
                if (g->st[k] == CK_TODO && (g->complete || chp_bit(g->x->f.present, k))) {
                        *out = k;
                        return true;
                }
        return false;
}

static bool conn_has(const struct conn *cn, uint32_t k)
{
        for (uint32_t i = 0; i < cn->n; i++)
                if (cn->q[i].k == k)
                        return true;
        return false;
}

/* Endgame: the chunk asked for longest ago, when that is far longer than chunks take, and no
 * other connection asked for it again yet. */
static bool steal(struct getter *g, const struct conn *cn, double now, uint32_t *out)
{
        double limit = 4 * g->avg_s + GET_STEAL_MIN_S, oldest = now - limit;
        uint32_t end = ask_end(g), best = UINT32_MAX;
        for (uint32_t k = g->out_fd >= 0 ? g->next : 0; k < end; k++)
                if (g->st[k] == CK_ASKED && g->owners[k] == 1 && g->asked[k] < oldest &&
                    !conn_has(cn, k)) {
                        oldest = g->asked[k];
                        best = k;
                }
        *out = best;
        return best != UINT32_MAX;
}

static void conn_ask(struct getter *g, struct conn *cn, uint32_t k, double now)
{
        g->st[k] = CK_ASKED;
        g->owners[k]++;
        g->asked[k] = now;
        cn->q[cn->n].k = k;
        cn->q[cn->n].at = now;
        cn->q[cn->n].sent = false;
        cn->n++;
}

/* Gives back what cn asked for; a chunk nobody else is fetching can be asked for again. */
static void conn_return(struct getter *g, struct conn *cn)
{
        for (uint32_t i = 0; i < cn->n; i++) {
                uint32_t k = cn->q[i].k;
                if (--g->owners[k] == 0 && g->st[k] == CK_ASKED) {
                        g->st[k] = CK_TODO;
                        if (k < g->lo)
                                g->lo = k;
                }
        }
        cn->n = 0;
}

/* cn's channel broke (rc from the channel): its chunks go back; the reply it was receiving, at
 * most one chunk, counts as resent (its bytes may have arrived in part). Returns with the
 * channel closed, or kept in cn->dead when it is c->ch. */
static void conn_cut(struct getter *g, struct conn *cn, int rc)
{
        char why[512];
        snprintf(why, sizeof(why), "%s", cn->ch ? chp_channel_error(cn->ch) : "");
        if (!*why)
                snprintf(why, sizeof(why), "%s", strerror(rc < 0 && rc > -4096 ? -rc : EIO));
        struct chp_channel *ch = cn->ch;
        cn->ch = NULL;
        g->open_now--;
        if (!g->stop && cn->n)
                g->resent += chp_manifest_chunk_len(&g->x->f.m, cn->q[0].k);
        conn_return(g, cn);
        cn->broken = false;
        cn->cut = true;
        if (cn->primary)
                cn->dead = ch; /* c->ch until its replacement is open */
        pthread_cond_broadcast(&g->cv);
        if (!g->stop) {
                if (rc == -ECANCELED)
                        g_fail(g, CHAPAR_ECANCELED, "canceled");
                else if (rc == -ENOMEM)
                        g_fail(g, CHAPAR_ENOMEM, "out of memory");
                else if (g->retry_s < 0)
                        g_fail(g, CHAPAR_ENET, "the connection to the relay broke: %s", why);
                else
                        snprintf(g->why, sizeof(g->why), "%s", why); /* for giving up later */
        }
        if (!cn->primary) {
                pthread_mutex_unlock(&g->mu);
                chp_channel_close(ch);
                pthread_mutex_lock(&g->mu);
        }
}

/* Opens cn's channel, after a backoff when it is made again after a cut. False when cn gives
 * up (a stop, a failure), its thread then ends. */
static bool conn_open(struct getter *g, struct conn *cn)
{
        struct chapar_client *c = g->c;
        if (cn->cut) {
                int32_t retry = g->retry_s ? g->retry_s : 120;
                if (chp_net_now_s() - g->last_progress > retry) {
                        char why[sizeof(g->why)];
                        snprintf(why, sizeof(why), "%s", g->why);
                        g_fail(g, CHAPAR_ENET,
                               "the connection to the relay broke and no chunk arrived for %d s: "
                               "%.400s",
                               (int)retry, why);
                        return false;
                }
                g_wait(g, cc_backoff_ms(cn->attempt++)); /* woken early by a stop */
                if (g->stop)
                        return false;
        }
        pthread_mutex_unlock(&g->mu);
        struct chp_channel *ch = NULL, *old = NULL;
        char why[sizeof(g->why)];
        struct cc_dial d;
        pthread_mutex_lock(&g->open_mu);
        cc_dial_prepare(c, &d);
        pthread_mutex_unlock(&g->open_mu);
        int rc = cc_dial(&d, &ch, why, sizeof(why)); /* handshakes of several connections overlap */
        if (!rc && cn->primary) {
                pthread_mutex_lock(&g->open_mu);
                old = cn->dead;
                c->ch = ch;
                pthread_mutex_unlock(&g->open_mu);
        }
        chp_channel_close(old);
        pthread_mutex_lock(&g->mu);
        if (cn->primary && !rc)
                cn->dead = NULL;
        if (rc) {
                bool first = !cn->cut;
                if (rc == CHAPAR_ECANCELED || rc == CHAPAR_EKEY || rc == CHAPAR_EAUTH ||
                    rc == CHAPAR_ENOMEM) {
                        g_fail(g, rc, "%s", why);
                        return false;
                }
                if (!g->rc) /* else it says why the get failed */
                        snprintf(g->why, sizeof(g->why), "%s", why);
                if (first && g->open_now > 0) /* an added connection the relay refuses: fewer */
                        return false;
                if (g->retry_s < 0) {
                        g_fail(g, CHAPAR_ENET, "%s", why);
                        return false;
                }
                cn->cut = true;
                return !g->stop;
        }
        if (g->stop) {
                pthread_mutex_unlock(&g->mu);
                if (!cn->primary)
                        chp_channel_close(ch);
                pthread_mutex_lock(&g->mu);
                if (!cn->primary)
                        return false;
        }
        cn->ch = ch;
        cn->base = chp_channel_reserve_ids(ch, g->x->f.m.chunk_count + 1);
        if (cn->cut)
                g->reconnects++;
        cn->cut = false;
        g->pending_open = false;
        if (++g->open_now > g->max_open)
                g->max_open = g->open_now;
        return !g->stop;
}

/* Descriptor: writes every chunk from next on that has arrived (mu held; released while
 * writing: the slot of next is no connection's until next moves). Called by the connection
 * that completes a chunk, unless another is writing (flushing). */
static int flush_window(struct getter *g)
{
        uint32_t count = g->x->f.m.chunk_count;
        size_t slot = chp_e2e_plain_chunk(g->x->f.m.chunk_size);
        while (g->next < count && chp_bit(g->have, g->next)) {
                uint32_t k = g->next;
                size_t n = chunk_plain_len(
                    g, k, chp_manifest_chunk_len(&g->x->f.m, k) - CHP_E2E_CHUNK_OVERHEAD);
                const uint8_t *p = g->plain + (size_t)(k % g->w) * slot;
                pthread_mutex_unlock(&g->mu);
                int e = 0;
                while (n && !e) {
                        ssize_t w = write(g->out_fd, p, n);
                        if (w > 0) {
                                p += w;
                                n -= (size_t)w;
                        } else if (w == 0 || errno != EINTR) {
                                e = w == 0 ? EIO : errno;
                        }
                }
                pthread_mutex_lock(&g->mu);
                if (e) {
                        g_fail(g, CHAPAR_EIO, "cannot write the output: %s", strerror(e));
                        return CHAPAR_EIO;
                }
                g->next++;
                pthread_cond_broadcast(&g->cv); /* the window moved */
        }
        return 0;
}

/* Verifies, opens and writes the reply h/p that cn received. Called without mu; 0, or the
 * failure already recorded. */
static int conn_reply(struct getter *g, struct conn *cn, const struct chp_frame_header *h,
                      uint8_t *p)
{
        const struct chp_manifest *m = &g->x->f.m;
        struct chp_msg_chunk_data d;
        uint8_t sum[CHP_HASH_BYTES];
        if (h->type == CHP_F_ERROR) {
                pthread_mutex_lock(&g->mu);
                if (!g->rc) {
                        g->remote = true;
                        g->remote_code = chp_channel_remote_code(cn->ch);
                }
                g_fail(g, CHAPAR_ERELAY, "%s", chp_channel_error(cn->ch));
                pthread_mutex_unlock(&g->mu);
                return CHAPAR_ERELAY;
        }
        uint32_t k = h->id - cn->base, i = 0;
        while (i < cn->n && cn->q[i].k != k)
                i++;
        if (h->type != (CHP_F_GET_CHUNK | CHP_F_REPLY) || k >= m->chunk_count || i == cn->n ||
            chp_msg_chunk_data_decode(p, h->len, &d) != 0 || d.offset != 0 ||
            d.len != chp_manifest_chunk_len(m, k) || d.len < CHP_E2E_CHUNK_OVERHEAD) {
                pthread_mutex_lock(&g->mu);
                g_fail(g, CHAPAR_EPROTO, "the relay sent a reply this client did not ask for");
                pthread_mutex_unlock(&g->mu);
                return CHAPAR_EPROTO;
        }
        /* the address first (what the relay stored): then the chunk is k, whoever fetched it */
        if (chp_sha256(d.data, d.len, sum) != 0 ||
            sodium_memcmp(sum, m->addrs + (size_t)k * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0) {
                pthread_mutex_lock(&g->mu);
                g_fail(g, CHAPAR_EINTEGRITY,
                       "chunk %u failed verification: wrong key or tampered data", k);
                pthread_mutex_unlock(&g->mu);
                return CHAPAR_EINTEGRITY;
        }
        double now = chp_net_now_s();
        pthread_mutex_lock(&g->mu);
        double took = now - cn->q[i].at;
        memmove(&cn->q[i], &cn->q[i + 1], (cn->n - i - 1) * sizeof(cn->q[0]));
        cn->n--;
        g->owners[k]--;
        g->avg_s = g->avg_s ? 0.875 * g->avg_s + 0.125 * took : took;
        g->last_progress = now;
        cn->attempt = 0;
        g->r->bytes_received += d.len;
        bool mine = g->st[k] < CK_CLAIMED;
        if (mine)
                g->st[k] = CK_CLAIMED;
        else
                g->resent += d.len; /* another connection fetched it too */
        pthread_mutex_unlock(&g->mu);
        if (!mine)
                return 0;
        /* then the tag (what the sender sealed), opened straight into the window's slot for k
         * (in the window: free, and only k's) or the connection's buffer */
        size_t slot = chp_e2e_plain_chunk(m->chunk_size);
        uint8_t *plain = g->out_fd >= 0 ? g->plain + (size_t)(k % g->w) * slot : cn->buf;
        if (chp_e2e_open_chunk(g->x->t.file_key, k, k + 1 == m->chunk_count, d.data, d.len,
                               plain) != 0) {
                pthread_mutex_lock(&g->mu);
                g_fail(g, CHAPAR_EINTEGRITY,
                       "chunk %u failed verification: wrong key or tampered data", k);
                pthread_mutex_unlock(&g->mu);
                return CHAPAR_EINTEGRITY;
        }
        size_t n = chunk_plain_len(g, k, d.len - CHP_E2E_CHUNK_OVERHEAD);
        int rc = 0, e = 0;
        if (g->out_fd < 0 && n &&
            pwrite(g->pt->fd, plain, n, (off_t)((uint64_t)k * slot)) != (ssize_t)n)
                e = errno ? errno : EIO;
        pthread_mutex_lock(&g->mu);
        if (e) {
                g_fail(g, CHAPAR_EIO, "cannot write %.300s: %s", g->pt->tmp, strerror(e));
                rc = CHAPAR_EIO;
        } else {
                g->st[k] = CK_DONE;
                chp_bit_set(g->have, k);
                g->done++;
                g->done_bytes += n;
                /* the last chunk ends the wait; progress and the endgame look every GET_POLL_MS
                 * (a wake-up per chunk costs the calling thread a switch for nothing) */
                if (g->done == g->x->f.m.chunk_count)
                        pthread_cond_broadcast(&g->cv);
                if (g->out_fd >= 0 && !g->flushing) { /* it writes what is in order */
                        g->flushing = true;
                        rc = flush_window(g);
                        g->flushing = false;
                }
        }
        pthread_mutex_unlock(&g->mu);
        return rc;
}

/* Sends cn's requests not sent yet. Called without mu. */
static int conn_send(struct getter *g, struct conn *cn)
{
        const struct chp_manifest *m = &g->x->f.m;
        for (uint32_t i = 0; i < cn->n; i++) {
                if (cn->q[i].sent)
                        continue;
                uint32_t k = cn->q[i].k;
                struct chp_msg_get_chunk q = {.addr = m->addrs + (size_t)k * CHP_HASH_BYTES};
                uint8_t qp[40];
                if (chp_msg_get_chunk_encode(qp, sizeof(qp), &q) != 40)
                        return -EPROTO;
                int rc = chp_channel_send(cn->ch, CHP_F_GET_CHUNK, cn->base + k, qp, sizeof(qp),
                                          NULL, 0);
                if (rc)
                        return rc;
                cn->q[i].sent = true;
        }
        return 0;
}

static void *conn_main(void *arg)
{
        struct conn *cn = arg;
        struct getter *g = cn->g;
        pthread_mutex_lock(&g->mu);
        while (!g->stop) {
                if (!cn->ch) {
                        if (!conn_open(g, cn))
                                break;
                        continue;
                }
                double now = chp_net_now_s();
                uint32_t k;
                while (cn->n < GET_INFLIGHT && take(g, &k))
                        conn_ask(g, cn, k, now);
                if (cn->n == 0 && steal(g, cn, now, &k))
                        conn_ask(g, cn, k, now);
                if (cn->n == 0) {
                        g_wait(g, GET_POLL_MS);
                        continue;
                }
                cn->busy = true;
                pthread_mutex_unlock(&g->mu);
                struct chp_frame_header h;
                uint8_t *p = NULL;
                int rc = conn_send(g, cn);
                if (!rc)
                        rc = chp_channel_recv(cn->ch, &h, &p);
                if (!rc && conn_reply(g, cn, &h, p) != 0)
                        rc = 1; /* recorded: the get stops */
                pthread_mutex_lock(&g->mu);
                cn->busy = false;
                if (rc && rc != 1)
                        conn_cut(g, cn, rc);
        }
        cn->exited = true;
        g->alive--;
        if (!cn->ch && !cn->cut)
                g->pending_open = false; /* it never opened: measure without it */
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        return NULL;
}

/* Starts another connection (mu held). */
static int conn_start(struct getter *g, bool primary)
{
        struct conn *cn = &g->conns[g->nconns];
        *cn = (struct conn){.g = g, .primary = primary};
        cn->buf = malloc(g->x->f.m.chunk_size);
        if (!cn->buf)
                return CHAPAR_ENOMEM;
        if (primary) {
                cn->ch = g->c->ch;
                cn->base = chp_channel_reserve_ids(cn->ch, g->x->f.m.chunk_count + 1);
                if (++g->open_now > g->max_open)
                        g->max_open = g->open_now;
        } else {
                g->pending_open = true;
        }
        if (pthread_create(&cn->th, NULL, conn_main, cn) != 0) {
                free(cn->buf);
                cn->buf = NULL;
                return CHAPAR_ENOMEM;
        }
        cn->started = true;
        g->nconns++;
        g->alive++;
        return 0;
}

/* The partial file's state as it is now (mu held; released while writing). */
static void save_state(struct getter *g, uint8_t *snap)
{
        struct part *pt = g->pt;
        memcpy(snap, pt->have, pt->have_len);
        pthread_mutex_unlock(&g->mu);
        uint8_t *real = pt->have;
        pt->have = snap; /* part_save reads pt->have: the copy, which no thread changes */
        part_save(pt, g->x->t.file_id, g->x->f.m.chunk_count);
        pthread_mutex_lock(&g->mu);
        pt->have = real;
}

/* While the file uploads: the newer map of stored chunks (mu held; released meanwhile). A
 * broken c->ch is made again (after a backoff); false when the get must stop. */
static void poll_manifest(struct getter *g, double *next_poll, uint32_t *attempt)
{
        struct chapar_client *c = g->c;
        struct fetch *x = g->x;
        pthread_mutex_unlock(&g->mu);
        struct cc_fetched f = {0};
        pthread_mutex_lock(&g->open_mu);
        int rc = cc_fetch_manifest(c, &x->t, &f);
        char why[sizeof(g->why)];
        snprintf(why, sizeof(why), "%s", c->last_error);
        if (rc == CHAPAR_ENET && g->retry_s >= 0) {
                struct chp_channel *ch = NULL;
                if (cc_open_extra(c, &ch) == 0) {
                        chp_channel_close(c->ch);
                        c->ch = ch;
                        rc = 1; /* made again: poll at once */
                }
        }
        pthread_mutex_unlock(&g->open_mu);
        pthread_mutex_lock(&g->mu);
        double now = chp_net_now_s();
        if (rc == 0) {
                size_t n = chp_bitmap_bytes(x->f.m.chunk_count);
                if (f.complete) {
                        g->complete = true;
                } else if (f.present) {
                        for (size_t i = 0; i < n; i++)
                                x->f.present[i] |= f.present[i];
                }
                *attempt = 0;
                *next_poll = now + GET_POLL_MS / 1000.0;
                pthread_cond_broadcast(&g->cv);
        } else if (rc == 1) {
                g->reconnects++;
                *next_poll = now;
        } else if (rc == CHAPAR_ENET && g->retry_s >= 0 &&
                   now - g->last_progress <= (g->retry_s ? g->retry_s : 120)) {
                *next_poll = now + cc_backoff_ms((*attempt)++) / 1000.0;
        } else {
                if (rc == CHAPAR_ERELAY || rc == CHAPAR_ENOTFOUND) {
                        g->remote = true;
                        g->remote_code = c->last_code;
                }
                g_fail(g, rc, "%s", why);
        }
        pthread_mutex_unlock(&g->mu);
        cc_fetched_free(&f);
        pthread_mutex_lock(&g->mu);
}

/* Whether a chunk could be asked for now, by any connection (mu held). */
static bool any_to_ask(struct getter *g)
{
        uint32_t k;
        return take(g, &k);
}

/* The connection's round trip (TCP_INFO), in seconds; 0 when unknown. */
static double rtt_s(struct chp_channel *ch)
{
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (!ch || getsockopt(chp_channel_fd(ch), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
                return 0;
        return ti.tcpi_rtt / 1e6;
}

/* Ends the connections: those waiting on a reply that no longer matters are shut down; c->ch is
 * left a channel with nothing in flight (or NULL when none is left). */
static void stripe_end(struct getter *g)
{
        struct chapar_client *c = g->c;
        pthread_mutex_lock(&g->mu);
        g->stop = true;
        pthread_cond_broadcast(&g->cv);
        for (uint32_t i = 0; i < g->nconns; i++) {
                struct conn *cn = &g->conns[i];
                if (cn->ch && (cn->busy || cn->n)) {
                        shutdown(chp_channel_fd(cn->ch), SHUT_RDWR);
                        cn->broken = true;
                }
        }
        pthread_mutex_unlock(&g->mu);
        for (uint32_t i = 0; i < g->nconns; i++)
                if (g->conns[i].started)
                        pthread_join(g->conns[i].th, NULL);
        /* single-threaded from here */
        struct conn *primary = NULL;
        for (uint32_t i = 0; i < g->nconns; i++)
                if (g->conns[i].primary)
                        primary = &g->conns[i];
        if (primary) {
                struct chp_channel *keep = NULL;
                if (primary->ch && !primary->broken && primary->n == 0) {
                        keep = primary->ch;
                } else {
                        for (uint32_t i = 0; i < g->nconns && !keep; i++) {
                                struct conn *cn = &g->conns[i];
                                if (cn != primary && cn->ch && !cn->broken && cn->n == 0) {
                                        keep = cn->ch;
                                        cn->ch = NULL;
                                }
                        }
                        if (primary->ch != keep)
                                chp_channel_close(primary->ch);
                        if (primary->dead && primary->dead != primary->ch)
                                chp_channel_close(primary->dead);
                }
                primary->ch = NULL;
                primary->dead = NULL;
                c->ch = keep;
        }
        for (uint32_t i = 0; i < g->nconns; i++) {
                struct conn *cn = &g->conns[i];
                if (cn != primary)
                        chp_channel_close(cn->ch);
                cn->ch = NULL;
                if (cn->buf)
                        sodium_memzero(cn->buf, g->x->f.m.chunk_size);
                free(cn->buf);
                cn->buf = NULL;
        }
}

/* Fetches what is missing over the stripe; a file still uploading is looked at again until it
 * is complete. */
static int get_all(struct getter *g)
{
        struct chapar_client *c = g->c;
        struct fetch *x = g->x;
        uint32_t count = x->f.m.chunk_count;
        if (g->done == count)
                return 0;
        uint32_t want = c->transport.connections;
        bool adapt = want == 0;
        uint32_t left = count - g->done;
        if (adapt)
                want = left / 2 < CC_ADAPT_FIRST ? 1 : CC_ADAPT_FIRST;
        if (want > left)
                want = left;
        size_t n = count ? count : 1;
        uint8_t *snap = g->pt ? malloc(g->pt->have_len + 1) : NULL;
        g->st = calloc(n, 1);
        g->owners = calloc(n, 1);
        g->asked = calloc(n, sizeof(double));
        if (!g->st || !g->owners || !g->asked || (g->pt && !snap)) {
                free(snap);
                return CHAPAR_ENOMEM;
        }
        for (uint32_t k = 0; k < count; k++)
                if (chp_bit(g->have, k))
                        g->st[k] = CK_DONE;
        g->complete = x->f.complete;
        g->retry_s = c->transport.retry_s;
        g->last_progress = chp_net_now_s();
        pthread_mutex_init(&g->mu, NULL);
        pthread_mutex_init(&g->open_mu, NULL);
        chp_net_cond_init(&g->cv);
        double rtt = rtt_s(c->ch);

        pthread_mutex_lock(&g->mu);
        int rc = 0;
        /* a complete file: c->ch is the first connection; else it asks for the newer maps */
        for (uint32_t i = 0; i < want && !rc; i++)
                rc = conn_start(g, i == 0 && g->complete);
        if (rc)
                g_fail(g, rc, "out of memory");
        double now = chp_net_now_s(), next_poll = now;
        uint64_t reported = UINT64_MAX;
        uint32_t saved = g->done, poll_attempt = 0;
        struct cc_adapt ad;
        cc_adapt_init(&ad, adapt, now, g->r->bytes_received);
        while (!g->stop) {
                if (g->out_fd >= 0 ? g->next == count : g->done == count)
                        break;
                if (atomic_load_explicit(&c->cancel, memory_order_relaxed)) {
                        g_fail(g, CHAPAR_ECANCELED, "canceled");
                        break;
                }
                if (g->alive == 0) {
                        g_fail(g, CHAPAR_ENET, "%s", *g->why ? g->why : "no connection left");
                        break;
                }
                if (g->pt && g->done - saved >= 64) {
                        saved = g->done;
                        save_state(g, snap);
                }
                if (g->o && g->o->progress && g->done_bytes != reported) {
                        uint64_t d = reported = g->done_bytes;
                        pthread_mutex_unlock(&g->mu);
                        g->o->progress(g->o->progress_ctx, d, x->meta.plain_size);
                        pthread_mutex_lock(&g->mu);
                        continue;
                }
                now = chp_net_now_s();
                if (cc_adapt_step(&ad, now, g->r->bytes_received, g->pending_open, g->nconns,
                                  count - g->done, rtt) &&
                    conn_start(g, false) != 0)
                        cc_adapt_stop(&ad);
                if (!g->complete && now >= next_poll && !any_to_ask(g)) {
                        poll_manifest(g, &next_poll, &poll_attempt);
                        continue;
                }
                g_wait(g, GET_POLL_MS);
        }
        pthread_mutex_unlock(&g->mu);
        stripe_end(g);
        c->stats.connections = g->max_open ? g->max_open : 1;
        c->stats.reconnects = g->reconnects;
        c->stats.bytes_resent = g->resent;
        rc = g->rc;
        if (rc && g->remote) {
                c->last_code = g->remote_code;
                snprintf(c->last_error, sizeof(c->last_error), "%s", g->why);
                rc = cc_remote_error(c);
        } else if (rc) {
                snprintf(c->last_error, sizeof(c->last_error), "%s", g->why);
        }
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->open_mu);
        pthread_mutex_destroy(&g->mu);
        free(snap);
        free(g->st);
        free(g->owners);
        free(g->asked);
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
        int rc;
        if ((rc = target_init(c, &tg, out_path)) || (rc = fetch_open(c, ticket, &x)))
                goto out;
        uint32_t count = x.f.m.chunk_count;
        uint32_t plain_chunk = chp_e2e_plain_chunk(x.f.m.chunk_size);
        snprintf(r->name, sizeof(r->name), "%s", x.meta.name);
        tg.sender = x.meta.name;
        r->bytes_total = x.meta.plain_size;
        if ((rc = part_open(c, &pt, &tg, x.t.file_id, count)))
                goto out;
        struct getter g = {
            .c = c, .x = &x, .pt = &pt, .have = pt.have, .out_fd = -1, .o = o, .r = r};
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
        /* the window: GET_WINDOW_MAX of plaintext, enough for every connection's requests */
        uint32_t w = (uint32_t)(GET_WINDOW_MAX / slot);
        w = w < 2                                       ? 2
            : w > GET_INFLIGHT * CHAPAR_CONNECTIONS_MAX ? GET_INFLIGHT * CHAPAR_CONNECTIONS_MAX
                                                        : w;
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
        struct getter g = {
            .c = c, .x = &x, .plain = win, .have = have, .out_fd = fd, .w = w, .o = o, .r = r};
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
