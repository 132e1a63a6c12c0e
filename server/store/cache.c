/* cache.c — the RADOS backend's local read cache (cache.h). */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "manifest.h"

#define HEX         (2 * CHP_HASH_BYTES)
#define TMP_PREFIX  ".tmp-"
#define QUEUE_MAX   256         /* fills queued at once */
#define QUEUE_BYTES (64u << 20) /* bytes of fills queued (at most the cache's size, too) */

struct centry {
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t size;
        uint8_t ref;  /* CLOCK: used since the hand last passed */
        int32_t next; /* the bucket's chain, -1 at its end */
};

struct fill {
        struct fill *next;
        uint8_t addr[CHP_HASH_BYTES];
        uint32_t len;
        uint8_t data[];
};

struct chp_rcache {
        char *dir; /* DATA/cache */
        uint64_t size, total;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* the index: entries[0..n), buckets of chains by address */
        struct centry *e;
        size_t n, cap, hand;
        int32_t *bucket;
        size_t nbuckets; /* a power of two */
        /* the filler's queue */
        struct fill *head, *tail;
        size_t queued, queued_bytes, queue_bytes_max;
        uint8_t current[CHP_HASH_BYTES]; /* the fill being written */
        bool busy, cancelled, stopping;
        pthread_t filler;
        bool started;
        struct chp_rcache_stats st; /* under lock; bytes and chunks filled in by chp_rcache_stats */
};

/* ---- the index (under lock) --------------------------------------------------------------- */

static size_t bucket_of(const struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES])
{
        uint64_t h;
        memcpy(&h, addr, sizeof(h)); /* SHA-256: any bytes are uniform */
        return (size_t)h & (c->nbuckets - 1);
}

static int32_t find(const struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES])
{
        if (!c->nbuckets)
                return -1;
        for (int32_t i = c->bucket[bucket_of(c, addr)]; i >= 0; i = c->e[i].next)
                if (memcmp(c->e[i].addr, addr, CHP_HASH_BYTES) == 0)
                        return i;
        return -1;
}

static void link_entry(struct chp_rcache *c, int32_t i)
{
        size_t b = bucket_of(c, c->e[i].addr);
        c->e[i].next = c->bucket[b];
        c->bucket[b] = i;
}

static void unlink_entry(struct chp_rcache *c, int32_t i)
{
        int32_t *p = &c->bucket[bucket_of(c, c->e[i].addr)];
        while (*p != i)
                p = &c->e[*p].next;
        *p = c->e[i].next;
}

static int insert(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t size)
{
        if (c->n == c->cap) {
                size_t cap = c->cap ? 2 * c->cap : 1024;
                if (cap > INT32_MAX)
                        return -ENOMEM;
                struct centry *e = realloc(c->e, cap * sizeof(*e));
                if (!e)
                        return -ENOMEM;
                c->e = e;
                c->cap = cap;
        }
        if (c->n >= c->nbuckets) {
                size_t nb = c->nbuckets ? 2 * c->nbuckets : 1024;
                int32_t *b = malloc(nb * sizeof(*b));
                if (!b)
                        return -ENOMEM;
                free(c->bucket);
                c->bucket = b;
                c->nbuckets = nb;
                for (size_t i = 0; i < nb; i++)
                        b[i] = -1;
                for (size_t i = 0; i < c->n; i++)
                        link_entry(c, (int32_t)i);
        }
        struct centry *e = &c->e[c->n];
        memcpy(e->addr, addr, CHP_HASH_BYTES);
        e->size = size;
        e->ref = 0;
        link_entry(c, (int32_t)c->n++);
        c->total += size;
        return 0;
}

/* Removes entry i from the index (its file is the caller's). */
static void remove_entry(struct chp_rcache *c, int32_t i)
{
        unlink_entry(c, i);
        c->total -= c->e[i].size;
        int32_t last = (int32_t)--c->n;
        if (i != last) {
                unlink_entry(c, last);
                c->e[i] = c->e[last];
                link_entry(c, i);
        }
}

static void path_of(const struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], bool tmp,
                    char *out, size_t cap)
{
        char hex[HEX + 1];
        chp_hex_encode(addr, CHP_HASH_BYTES, hex);
        snprintf(out, cap, "%s/%s%s", c->dir, tmp ? TMP_PREFIX : "", hex);
}

/* Removes entry i and its file. */
static void evict(struct chp_rcache *c, int32_t i)
{
        char path[4096];
        path_of(c, c->e[i].addr, false, path, sizeof(path));
        if (unlink(path) != 0 && errno != ENOENT)
                chp_log_warn("store", "cache: cannot remove %s: %s", path, chp_strerror(-errno));
        remove_entry(c, i);
        c->st.evictions++;
}

/* CLOCK: evicts until room bytes more fit. */
static void make_room(struct chp_rcache *c, uint64_t room)
{
        while (c->n && c->total + room > c->size) {
                if (c->hand >= c->n)
                        c->hand = 0;
                struct centry *e = &c->e[c->hand];
                if (e->ref) {
                        e->ref = 0;
                        c->hand++;
                } else {
                        evict(c, (int32_t)c->hand); /* the last entry moved to hand */
                }
        }
}

/* ---- the filler ------------------------------------------------------------------------- */

/* Writes f's bytes to its temporary name, durably; 0 or a negative errno. */
static int write_tmp(const struct fill *f, const char *tmp)
{
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        int rc = 0;
        for (size_t done = 0; done < f->len && !rc;) {
                ssize_t w = write(fd, f->data + done, f->len - done);
                if (w < 0 && errno != EINTR)
                        rc = -errno;
                else if (w > 0)
                        done += (size_t)w;
        }
        if (!rc && fsync(fd) != 0)
                rc = -errno;
        close(fd);
        return rc;
}

static void store_fill(struct chp_rcache *c, struct fill *f)
{
        uint8_t sum[CHP_HASH_BYTES];
        if (chp_sha256(f->data, f->len, sum) != 0 || memcmp(sum, f->addr, CHP_HASH_BYTES) != 0)
                return; /* not the chunk's bytes: never cached */
        char tmp[4096], path[4096];
        path_of(c, f->addr, true, tmp, sizeof(tmp));
        path_of(c, f->addr, false, path, sizeof(path));
        int rc = write_tmp(f, tmp);
        pthread_mutex_lock(&c->lock);
        if (!rc && !c->cancelled && !c->stopping && find(c, f->addr) < 0) {
                make_room(c, f->len);
                if (rename(tmp, path) != 0)
                        rc = -errno;
                else if ((rc = insert(c, f->addr, f->len)) != 0)
                        unlink(path);
                else
                        c->st.stored++;
        }
        if (rc)
                c->st.dropped++;
        pthread_mutex_unlock(&c->lock);
        unlink(tmp); /* gone already once renamed */
        if (rc)
                chp_log_warn("store", "cache: cannot cache a chunk in %s: %s", c->dir,
                             chp_strerror(rc));
}

static void *filler_main(void *arg)
{
        struct chp_rcache *c = arg;
        pthread_mutex_lock(&c->lock);
        for (;;) {
                while (!c->stopping && !c->head)
                        pthread_cond_wait(&c->cond, &c->lock);
                if (c->stopping)
                        break;
                struct fill *f = c->head;
                c->head = f->next;
                if (!c->head)
                        c->tail = NULL;
                c->queued--;
                c->queued_bytes -= f->len;
                memcpy(c->current, f->addr, CHP_HASH_BYTES);
                c->busy = true;
                c->cancelled = false;
                pthread_mutex_unlock(&c->lock);
                store_fill(c, f);
                free(f);
                pthread_mutex_lock(&c->lock);
                c->busy = false;
        }
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* ---- the API ---------------------------------------------------------------------------- */

/* Rebuilds the index from the directory: temporary files and misnamed sizes go. */
static int scan(struct chp_rcache *c)
{
        DIR *d = opendir(c->dir);
        if (!d)
                return -errno;
        struct dirent *de;
        int rc = 0;
        while (!rc && (de = readdir(d))) {
                const char *name = de->d_name;
                uint8_t addr[CHP_HASH_BYTES];
                struct stat st;
                if (strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
                        unlinkat(dirfd(d), name, 0);
                        continue;
                }
                if (strlen(name) != HEX || chp_hex_decode(name, HEX, addr, sizeof(addr)) != 0 ||
                    fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
                        continue; /* not the cache's */
                if (st.st_size == 0 || st.st_size > CHP_CHUNK_MAX || find(c, addr) >= 0) {
                        unlinkat(dirfd(d), name, 0);
                        continue;
                }
                rc = insert(c, addr, (uint32_t)st.st_size);
        }
        closedir(d);
        make_room(c, 0); /* the size may have shrunk since */
        return rc;
}

int chp_rcache_open(const char *dir, uint64_t size, struct chp_rcache **out)
{
        *out = NULL;
        if (!size)
                return 0;
        struct chp_rcache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->size = size;
        c->queue_bytes_max = size < QUEUE_BYTES ? (size_t)size : QUEUE_BYTES;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        int rc = -ENOMEM;
        size_t n = strlen(dir) + sizeof("/cache");
        if (!(c->dir = malloc(n)))
                goto fail;
        snprintf(c->dir, n, "%s/cache", dir);
        if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
                rc = -errno;
                goto fail;
        }
        if ((rc = scan(c)))
                goto fail;
        if (pthread_create(&c->filler, NULL, filler_main, c) != 0) {
                rc = -EAGAIN;
                goto fail;
        }
        c->started = true;
        chp_log_info("store", "cache: %zu chunks of %llu bytes in %s (at most %llu)", c->n,
                     (unsigned long long)c->total, c->dir, (unsigned long long)c->size);
        *out = c;
        return 0;
fail:
        chp_log_error("store", "cache: cannot open %s: %s", c->dir ? c->dir : dir,
                      chp_strerror(rc));
        chp_rcache_close(c);
        return rc;
}

void chp_rcache_close(struct chp_rcache *c)
{
        if (!c)
                return;
        if (c->started) {
                pthread_mutex_lock(&c->lock);
                c->stopping = true;
                pthread_cond_signal(&c->cond);
                pthread_mutex_unlock(&c->lock);
                pthread_join(c->filler, NULL);
        }
        while (c->head) {
                struct fill *f = c->head;
                c->head = f->next;
                free(f);
        }
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        free(c->e);
        free(c->bucket);
        free(c->dir);
        free(c);
}

void chp_rcache_stats(struct chp_rcache *c, struct chp_rcache_stats *out)
{
        pthread_mutex_lock(&c->lock);
        *out = c->st;
        out->bytes = c->total;
        out->chunks = c->n;
        pthread_mutex_unlock(&c->lock);
}

/* addr's file when cached and of want bytes (0: of the size the index has), *len its size; a
 * miss is counted when count_miss. */
static int get(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t want,
               uint32_t *len, bool count_miss)
{
        pthread_mutex_lock(&c->lock);
        int32_t i = find(c, addr);
        if (i >= 0) {
                c->e[i].ref = 1;
                if (!want)
                        want = c->e[i].size;
        } else if (count_miss) {
                c->st.misses++;
        }
        pthread_mutex_unlock(&c->lock);
        if (i < 0)
                return -ENOENT;
        char path[4096];
        path_of(c, addr, false, path, sizeof(path));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == (off_t)want) {
                pthread_mutex_lock(&c->lock);
                c->st.hits++;
                pthread_mutex_unlock(&c->lock);
                if (len)
                        *len = want;
                return fd;
        }
        /* missing, or not the chunk's size (a torn or altered file): it goes, the pool serves */
        chp_log_warn("store", "cache: %s is %s: removed, the chunk is read from the pool", path,
                     fd < 0 ? "missing" : "of the wrong size");
        pthread_mutex_lock(&c->lock);
        if (count_miss)
                c->st.misses++;
        struct stat now;
        if ((i = find(c, addr)) >= 0) {
                if (fd < 0 || (stat(path, &now) == 0 && now.st_ino == st.st_ino))
                        evict(c, i);
        }
        pthread_mutex_unlock(&c->lock);
        if (fd >= 0)
                close(fd);
        return -ENOENT;
}

int chp_rcache_get(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t len)
{
        return len ? get(c, addr, len, NULL, true) : -ENOENT;
}

int chp_rcache_find(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t *len,
                    bool count_miss)
{
        return get(c, addr, 0, len, count_miss);
}

/* Under lock: whether a fill of addr (len bytes) is not to be queued: the cache is stopping, the
 * chunk is cached, queued or being written, or the queue is full (a drop, counted). */
static bool fill_skip(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], uint32_t len)
{
        if (c->stopping || find(c, addr) >= 0 ||
            (c->busy && memcmp(c->current, addr, CHP_HASH_BYTES) == 0))
                return true;
        for (struct fill *q = c->head; q; q = q->next)
                if (memcmp(q->addr, addr, CHP_HASH_BYTES) == 0)
                        return true;
        if (c->queued >= QUEUE_MAX || c->queued_bytes + len > c->queue_bytes_max) {
                c->st.dropped++;
                return true;
        }
        return false;
}

void chp_rcache_fill(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES], const void *data,
                     uint32_t len)
{
        if (!len || len > c->size || len > c->queue_bytes_max)
                return;
        /* asked first, so that a chunk already cached or queued costs no copy of its bytes */
        pthread_mutex_lock(&c->lock);
        bool skip = fill_skip(c, addr, len);
        pthread_mutex_unlock(&c->lock);
        if (skip)
                return;
        struct fill *f = malloc(sizeof(*f) + len); /* the copy, outside the lock */
        if (!f)
                return;
        f->next = NULL;
        memcpy(f->addr, addr, CHP_HASH_BYTES);
        f->len = len;
        memcpy(f->data, data, len);
        pthread_mutex_lock(&c->lock);
        skip = fill_skip(c, addr, len); /* again: another thread may have queued it meanwhile */
        if (!skip) {
                if (c->tail)
                        c->tail->next = f;
                else
                        c->head = f;
                c->tail = f;
                c->queued++;
                c->queued_bytes += len;
                pthread_cond_signal(&c->cond);
        }
        pthread_mutex_unlock(&c->lock);
        if (skip)
                free(f);
}

void chp_rcache_forget(struct chp_rcache *c, const uint8_t addr[CHP_HASH_BYTES])
{
        pthread_mutex_lock(&c->lock);
        int32_t i = find(c, addr);
        if (i >= 0)
                evict(c, i);
        if (c->busy && memcmp(c->current, addr, CHP_HASH_BYTES) == 0)
                c->cancelled = true;
        struct fill **p = &c->head, *prev = NULL;
        while (*p) {
                struct fill *f = *p;
                if (memcmp(f->addr, addr, CHP_HASH_BYTES) != 0) {
                        prev = f;
                        p = &f->next;
                        continue;
                }
                *p = f->next;
                if (c->tail == f)
                        c->tail = prev;
                c->queued--;
                c->queued_bytes -= f->len;
                free(f);
        }
        pthread_mutex_unlock(&c->lock);
}
