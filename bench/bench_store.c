/* bench_store.c — put/get/churn throughput of the chunk store, next to the raw disk.
 *
 * For chunk sizes 64 KiB, 1 MiB and 4 MiB, sync full and none, and two layouts (segments with the
 * default inline_max; everything in LMDB with CHP_STORE_INLINE_ALL), each in a fresh directory:
 *   put    N MiB of distinct pseudo-random chunks, addresses hashed beforehand (verified = true so
 *          hashing is not timed), submitted from T threads with W requests in flight in all so
 *          the writer can group-commit; once a file's chunks are acknowledged its manifest is
 *          committed (16 chunks a file, fewer when that would leave under 64 files, so that a
 *          tenth of the files is close to a tenth of the bytes);
 *   get    every chunk read back with chp_store_read (and, for segments, locate + pread), mostly
 *          from the page cache since it was just written;
 *   churn  R rounds of: delete the oldest tenth of the files (media expire in upload order),
 *          chp_store_gc, put as many new ones; the put MB/s of each round shows how the layout
 *          ages. Segments are N/8 MiB (at least 8) by default so that GC has sealed segments to
 *          delete and compact.
 * After the churn, untimed: store counts, deleted chunks gone, and a full chp_store_verify.
 * The disk ceiling is measured in the same run: N MiB in 1 MiB write(2)s, one fdatasync at the
 * end, and again with an fdatasync every 64 MiB, each DISK_REPEATS times (alternating); every put
 * figure is also given as a ratio to the median of the first. MB = 10^6 bytes.
 * Exit 0 on success, 1 on usage errors, 2 when the store or disk fails, 3 when the store
 * misbehaved (wrong counts, verify problems; details on stderr), 130 when stopped by SIGINT,
 * SIGTERM or SIGPIPE (the temporary stores are removed first).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "../common/manifest.h"
#include "../common/net.h"
#include "store.h"

#define MIB              (1024u * 1024)
#define FILE_CHUNKS_MAX  16u /* chunks per file manifest (fewer when a run has few chunks) */
#define FILES_MIN        64u /* aim for at least this many files so a tenth is meaningful */
#define MANIFEST_CAP     (CHP_MANIFEST_HEADER + FILE_CHUNKS_MAX * CHP_HASH_BYTES)
#define DISK_WRITE_BYTES MIB
#define DISK_SYNC_EVERY  (64ull * MIB)
#define DISK_REPEATS     3 /* this VM's disk swings 0.34-2.4 GB/s run to run: take a median */
#define GC_PASSES_MAX    1000
#define THREADS_MAX      64
#define WINDOW_MAX       4096
#define ROUNDS_MAX       32
#define RESULTS_MAX      (12 * (3 + ROUNDS_MAX)) /* configurations * phases */
#define PATH_CAP         4096
#define TENANT           "bench"
#define DEFAULT_MIB      256u
#define DEFAULT_ROUNDS   3u
#define DEFAULT_THREADS  2u
#define DEFAULT_WINDOW   16u
#define DEFAULT_BASE     "/var/tmp"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
        (void)sig;
        stop = 1;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
        uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* Fills len bytes with xorshift64* output seeded from seed: distinct seeds, distinct bytes. */
static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
        uint64_t s = splitmix64(&seed) | 1;
        size_t i = 0;
        for (; i + 8 <= len; i += 8) {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                uint64_t v = s * 0x2545f4914f6cdd1dull;
                memcpy(p + i, &v, 8);
        }
        for (; i < len; i++) {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                p[i] = (uint8_t)((s * 0x2545f4914f6cdd1dull) >> 56);
        }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(path) == 0 ? 0 : -errno;
}

/* Removes path and everything under it. Returns 0 or a negative errno. */
static int rm_tree(const char *path)
{
        int rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (rc == -1)
                return -errno;
        return rc; /* 0, or the first negative errno rm_entry returned */
}

/* Flushes the file system that holds dir, so one configuration's dirty pages do not slow the
 * next one down. Returns 0 or a negative errno. */
static int sync_fs(const char *dir)
{
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int rc = syncfs(fd) == 0 ? 0 : -errno;
        close(fd);
        return rc;
}

/* Parses a decimal unsigned in [lo, hi]. Returns 0 or -EINVAL. */
static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out /* out */)
{
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi)
                return -EINVAL;
        *out = (uint32_t)v;
        return 0;
}

/* ---- results ------------------------------------------------------------------------------ */

struct result {
        const char *layout, *sync;
        uint32_t chunk_size;
        char phase[16];
        double seconds, mbps, ops;
        double vs_disk; /* put phases only; < 0 otherwise */
        bool has_gc;
        double gc_seconds, delete_seconds;
        struct chp_gc_stats gc;
};

struct report {
        bool json;
        uint32_t mib, rounds, threads, window;
        uint64_t segment_size;
        char base[PATH_CAP];
        double disk_once_mbps, disk_every_mbps; /* medians of DISK_REPEATS runs */
        double disk_once[DISK_REPEATS], disk_every[DISK_REPEATS];
        size_t n;
        struct result r[RESULTS_MAX];
        uint64_t problems; /* store oddities seen (verify problems, wrong counts) */
};

static const char *size_name(uint32_t size, char *buf, size_t cap)
{
        if (size % MIB == 0)
                snprintf(buf, cap, "%uM", size / MIB);
        else
                snprintf(buf, cap, "%uK", size / 1024);
        return buf;
}

static void print_result(const struct report *rep, const struct result *r)
{
        char sz[16];
        if (rep->json)
                return;
        printf("%-8s  %-4s  %5s  %-9s  %9.1f  %9.0f", r->layout, r->sync,
               size_name(r->chunk_size, sz, sizeof(sz)), r->phase, r->mbps, r->ops);
        if (r->vs_disk >= 0)
                printf("  %6.2fx disk", r->vs_disk);
        if (r->has_gc) {
                printf("  (delete %.3f s, gc %.3f s: %" PRIu64 " chunks freed, %" PRIu64
                       " segs deleted, %" PRIu64 " compacted, %.1f MiB moved)",
                       r->delete_seconds, r->gc_seconds, r->gc.chunks_freed, r->gc.segments_deleted,
                       r->gc.segments_compacted, (double)r->gc.bytes_moved / MIB);
        }
        printf("\n");
        fflush(stdout);
}

static struct result *add_result(struct report *rep, const char *layout, const char *sync,
                                 uint32_t chunk_size, const char *phase, uint64_t bytes,
                                 uint64_t ops, double seconds, bool is_put)
{
        if (rep->n == RESULTS_MAX)
                return NULL;
        struct result *r = &rep->r[rep->n++];
        memset(r, 0, sizeof(*r));
        r->layout = layout;
        r->sync = sync;
        r->chunk_size = chunk_size;
        snprintf(r->phase, sizeof(r->phase), "%s", phase);
        r->seconds = seconds;
        r->mbps = seconds > 0 ? (double)bytes / seconds / 1e6 : 0;
        r->ops = seconds > 0 ? (double)ops / seconds : 0;
        r->vs_disk = is_put && rep->disk_once_mbps > 0 ? r->mbps / rep->disk_once_mbps : -1;
        return r;
}

static void print_json(const struct report *rep)
{
        printf("{\"mib\":%u,\"rounds\":%u,\"threads\":%u,\"window\":%u,\"segment_size\":%" PRIu64
               ",\"disk\":{\"fdatasync_once_mbps\":%.1f,\"fdatasync_every_64mib_mbps\":%.1f,",
               rep->mib, rep->rounds, rep->threads, rep->window, rep->segment_size,
               rep->disk_once_mbps, rep->disk_every_mbps);
        printf("\"fdatasync_once_samples\":[");
        for (int i = 0; i < DISK_REPEATS; i++)
                printf("%s%.1f", i ? "," : "", rep->disk_once[i]);
        printf("],\"fdatasync_every_64mib_samples\":[");
        for (int i = 0; i < DISK_REPEATS; i++)
                printf("%s%.1f", i ? "," : "", rep->disk_every[i]);
        printf("]},\"store_problems\":%" PRIu64 ",\"results\":[", rep->problems);
        for (size_t i = 0; i < rep->n; i++) {
                const struct result *r = &rep->r[i];
                printf("%s{\"layout\":\"%s\",\"sync\":\"%s\",\"chunk_size\":%u,\"phase\":\"%s\","
                       "\"seconds\":%.4f,\"mbps\":%.1f,\"chunks_per_s\":%.1f",
                       i ? "," : "", r->layout, r->sync, r->chunk_size, r->phase, r->seconds,
                       r->mbps, r->ops);
                if (r->vs_disk >= 0)
                        printf(",\"vs_disk\":%.3f", r->vs_disk);
                if (r->has_gc) {
                        printf(",\"delete_seconds\":%.4f,\"gc_seconds\":%.4f,\"gc\":{"
                               "\"chunks_freed\":%" PRIu64 ",\"bytes_freed\":%" PRIu64
                               ",\"segments_deleted\":%" PRIu64 ",\"segments_compacted\":%" PRIu64
                               ",\"bytes_moved\":%" PRIu64 "}",
                               r->delete_seconds, r->gc_seconds, r->gc.chunks_freed,
                               r->gc.bytes_freed, r->gc.segments_deleted, r->gc.segments_compacted,
                               r->gc.bytes_moved);
                }
                printf("}");
        }
        printf("]}\n");
        fflush(stdout);
}

/* ---- raw disk ceiling --------------------------------------------------------------------- */

/* Writes total bytes to a new file in dir in 1 MiB write(2)s, fdatasync every sync_every bytes
 * (0: only at the end), and returns MB/s in *mbps. Returns 0 or a negative errno. */
static int disk_write(const char *dir, uint64_t total, uint64_t sync_every, double *mbps /* out */)
{
        char path[PATH_CAP];
        uint8_t *buf = NULL;
        int fd = -1, rc = 0;

        *mbps = 0;
        if (snprintf(path, sizeof(path), "%s/disk-ceiling", dir) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        buf = malloc(DISK_WRITE_BYTES);
        if (!buf)
                return -ENOMEM;
        fill_random(buf, DISK_WRITE_BYTES, 0xd15c);
        rc = sync_fs(dir);
        if (rc < 0)
                goto out;
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                rc = -errno;
                goto out;
        }
        double t0 = chp_net_now_s();
        uint64_t done = 0, since_sync = 0;
        while (done < total) {
                size_t want =
                    total - done < DISK_WRITE_BYTES ? (size_t)(total - done) : DISK_WRITE_BYTES;
                ssize_t n = write(fd, buf, want);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        rc = -errno;
                        goto out;
                }
                done += (uint64_t)n;
                since_sync += (uint64_t)n;
                if (sync_every && since_sync >= sync_every && done < total) {
                        if (fdatasync(fd) != 0) {
                                rc = -errno;
                                goto out;
                        }
                        since_sync = 0;
                }
        }
        if (fdatasync(fd) != 0) {
                rc = -errno;
                goto out;
        }
        double t = chp_net_now_s() - t0;
        *mbps = t > 0 ? (double)total / t / 1e6 : 0;
out:
        if (fd >= 0) {
                close(fd);
                if (unlink(path) != 0 && rc == 0)
                        rc = -errno;
        }
        free(buf);
        return rc;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* Median of n <= DISK_REPEATS samples, without reordering them. */
static double median(const double *v, size_t n)
{
        double tmp[DISK_REPEATS];
        memcpy(tmp, v, n * sizeof(*v));
        qsort(tmp, n, sizeof(*tmp), cmp_double);
        return tmp[n / 2];
}

static void min_max(const double *v, size_t n, double *lo /* out */, double *hi /* out */)
{
        *lo = *hi = v[0];
        for (size_t i = 1; i < n; i++) {
                *lo = v[i] < *lo ? v[i] : *lo;
                *hi = v[i] > *hi ? v[i] : *hi;
        }
}

/* ---- one configuration's data set --------------------------------------------------------- */

/* Chunk slots are grouped into files: file f owns slots [f * fchunks, min((f+1) * fchunks, n)).
 * A churn round regenerates the slots of deleted files with new content, so memory stays at N MiB
 * however many rounds run. live[] lists the file slots oldest first (a ring starting at head). */
struct dataset {
        struct chp_store *store;
        uint32_t chunk_size;
        size_t nchunks, fchunks, nfiles;
        uint8_t *data;                 /* nchunks * chunk_size */
        uint8_t *addrs;                /* nchunks * CHP_HASH_BYTES */
        struct chp_store_req *puts;    /* nchunks */
        uint8_t *manifests;            /* nfiles * MANIFEST_CAP */
        size_t *manifest_len;          /* nfiles */
        struct chp_store_req *commits; /* nfiles */
        uint8_t *file_ids;             /* nfiles * CHP_HASH_BYTES */
        uint32_t *file_left;           /* nfiles: puts of the file not yet done */
        size_t *live;                  /* nfiles: file slots, oldest first from head */
        size_t head;
        uint64_t seed;
};

static void dataset_free(struct dataset *d)
{
        if (!d)
                return;
        free(d->data);
        free(d->addrs);
        free(d->puts);
        free(d->manifests);
        free(d->manifest_len);
        free(d->commits);
        free(d->file_ids);
        free(d->file_left);
        free(d->live);
        memset(d, 0, sizeof(*d));
}

static size_t file_first(const struct dataset *d, size_t f)
{
        return f * d->fchunks;
}

static size_t file_count(const struct dataset *d, size_t f)
{
        size_t first = f * d->fchunks;
        return d->nchunks - first < d->fchunks ? d->nchunks - first : d->fchunks;
}

/* Fills file f's slots with fresh content, hashes them and encodes its manifest. Untimed. */
static int dataset_make_file(struct dataset *d, size_t f)
{
        size_t first = file_first(d, f), n = file_count(d, f);
        for (size_t i = first; i < first + n; i++) {
                uint8_t *p = d->data + i * (size_t)d->chunk_size;
                fill_random(p, d->chunk_size, d->seed++);
                int rc = chp_sha256(p, d->chunk_size, d->addrs + i * CHP_HASH_BYTES);
                if (rc < 0)
                        return rc;
        }
        struct chp_manifest m = {
            .version = CHP_MANIFEST_VERSION,
            .chunk_size = d->chunk_size,
            .total_size = (uint64_t)n * d->chunk_size,
            .chunk_count = (uint32_t)n,
            .meta_len = 0,
            .addrs = d->addrs + first * CHP_HASH_BYTES,
            .meta = NULL,
        };
        ssize_t len = chp_manifest_encode(&m, d->manifests + f * MANIFEST_CAP, MANIFEST_CAP);
        if (len < 0)
                return (int)len;
        d->manifest_len[f] = (size_t)len;
        return 0;
}

static int dataset_init(struct dataset *d, uint32_t chunk_size, uint64_t total, uint64_t seed)
{
        int rc = 0;
        memset(d, 0, sizeof(*d));
        d->chunk_size = chunk_size;
        d->seed = seed;
        d->nchunks = (size_t)((total + chunk_size - 1) / chunk_size);
        if (d->nchunks == 0)
                d->nchunks = 1;
        d->fchunks = d->nchunks / FILES_MIN;
        if (d->fchunks < 1)
                d->fchunks = 1;
        if (d->fchunks > FILE_CHUNKS_MAX)
                d->fchunks = FILE_CHUNKS_MAX;
        d->nfiles = (d->nchunks + d->fchunks - 1) / d->fchunks;

        d->data = malloc(d->nchunks * (size_t)chunk_size);
        d->addrs = calloc(d->nchunks, CHP_HASH_BYTES);
        d->puts = calloc(d->nchunks, sizeof(*d->puts));
        d->manifests = calloc(d->nfiles, MANIFEST_CAP);
        d->manifest_len = calloc(d->nfiles, sizeof(*d->manifest_len));
        d->commits = calloc(d->nfiles, sizeof(*d->commits));
        d->file_ids = calloc(d->nfiles, CHP_HASH_BYTES);
        d->file_left = calloc(d->nfiles, sizeof(*d->file_left));
        d->live = calloc(d->nfiles, sizeof(*d->live));
        if (!d->data || !d->addrs || !d->puts || !d->manifests || !d->manifest_len || !d->commits ||
            !d->file_ids || !d->file_left || !d->live) {
                rc = -ENOMEM;
                goto out;
        }
        for (size_t f = 0; f < d->nfiles; f++) {
                d->live[f] = f;
                rc = dataset_make_file(d, f);
                if (rc < 0)
                        goto out;
        }
out:
        if (rc < 0)
                dataset_free(d);
        return rc;
}

/* ---- put phase: T submitting threads, W requests in flight in all ------------------------- */

struct putter {
        struct dataset *d;
        const size_t *files; /* the phase's file slots; this thread takes every T-th from first */
        size_t first, stride, nfiles_all;
        size_t window;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        /* under mu: */
        size_t inflight;        /* puts submitted and not done */
        size_t commits_pending; /* commits submitted and not done */
        size_t commits_done;
        size_t *ready; /* file slots whose puts are all done, FIFO */
        size_t ready_head, ready_tail;
        uint64_t dedup, existed;
        int err;
};

static void put_done(struct chp_store_req *req)
{
        struct putter *p = req->ctx;
        struct dataset *d = p->d;
        size_t f = (size_t)(req - d->puts) / d->fchunks;
        int status = req->status;
        bool dedup = req->u.put.deduplicated;

        pthread_mutex_lock(&p->mu);
        p->inflight--;
        if (status < 0 && p->err == 0)
                p->err = status;
        if (dedup)
                p->dedup++;
        if (--d->file_left[f] == 0)
                p->ready[p->ready_tail++] = f;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
}

static void commit_done(struct chp_store_req *req)
{
        struct putter *p = req->ctx;
        int status = req->status;
        bool existed = req->u.commit.existed;

        pthread_mutex_lock(&p->mu);
        p->commits_pending--;
        p->commits_done++;
        if (status < 0 && p->err == 0)
                p->err = status;
        if (existed)
                p->existed++;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
}

/* Submits one request; on refusal records the error and undoes the in-flight count (*count).
 * Called with p->mu not held. */
static void submit_one(struct putter *p, struct chp_store_req *req, size_t *count)
{
        int rc = chp_store_submit(p->d->store, req);
        if (rc < 0) {
                pthread_mutex_lock(&p->mu);
                (*count)--;
                if (p->err == 0)
                        p->err = rc;
                pthread_mutex_unlock(&p->mu);
        }
}

static void *putter_main(void *arg)
{
        struct putter *p = arg;
        struct dataset *d = p->d;
        size_t nmine = 0, fi = p->first, ci = 0; /* next file (index into files) and chunk */
        for (size_t i = p->first; i < p->nfiles_all; i += p->stride)
                nmine++;

        pthread_mutex_lock(&p->mu);
        for (;;) {
                if (p->err != 0 || stop)
                        break;
                if (p->ready_head < p->ready_tail) {
                        size_t f = p->ready[p->ready_head++];
                        struct chp_store_req *req = &d->commits[f];
                        memset(req, 0, sizeof(*req));
                        req->type = CHP_REQ_COMMIT;
                        req->u.commit.manifest = d->manifests + f * MANIFEST_CAP;
                        req->u.commit.manifest_len = d->manifest_len[f];
                        req->u.commit.tenant = TENANT;
                        req->u.commit.expires = 0;
                        req->done = commit_done;
                        req->ctx = p;
                        p->commits_pending++;
                        pthread_mutex_unlock(&p->mu);
                        submit_one(p, req, &p->commits_pending);
                        pthread_mutex_lock(&p->mu);
                        continue;
                }
                if (p->commits_done == nmine)
                        break;
                if (p->inflight < p->window && fi < p->nfiles_all) {
                        size_t f = p->files[fi];
                        if (ci == 0)
                                d->file_left[f] = (uint32_t)file_count(d, f);
                        size_t slot = file_first(d, f) + ci;
                        struct chp_store_req *req = &d->puts[slot];
                        memset(req, 0, sizeof(*req));
                        req->type = CHP_REQ_PUT;
                        memcpy(req->u.put.addr, d->addrs + slot * CHP_HASH_BYTES, CHP_HASH_BYTES);
                        req->u.put.data = d->data + slot * (size_t)d->chunk_size;
                        req->u.put.len = d->chunk_size;
                        req->u.put.verified = true;
                        req->done = put_done;
                        req->ctx = p;
                        p->inflight++;
                        if (++ci == file_count(d, f)) {
                                ci = 0;
                                fi += p->stride;
                        }
                        pthread_mutex_unlock(&p->mu);
                        submit_one(p, req, &p->inflight);
                        pthread_mutex_lock(&p->mu);
                        continue;
                }
                pthread_cond_wait(&p->cv, &p->mu);
        }
        /* Nothing of ours may stay in flight, error or not. */
        while (p->inflight > 0 || p->commits_pending > 0)
                pthread_cond_wait(&p->cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        return NULL;
}

struct put_outcome {
        double seconds;
        uint64_t dedup, existed;
};

/* Puts and commits the given files with nthreads submitters sharing window requests in flight.
 * Returns 0 or the first error a request reported (all requests are done either way). */
static int put_files(struct dataset *d, const size_t *files, size_t nfiles, uint32_t nthreads,
                     uint32_t window, struct put_outcome *out /* out */)
{
        struct putter p[THREADS_MAX];
        pthread_t tid[THREADS_MAX];
        uint32_t nstarted = 0, ninit = 0;
        int rc = 0;

        memset(out, 0, sizeof(*out));
        if (nthreads > nfiles)
                nthreads = (uint32_t)nfiles;
        if (nthreads == 0)
                return 0;
        for (; ninit < nthreads; ninit++) {
                struct putter *q = &p[ninit];
                memset(q, 0, sizeof(*q));
                q->d = d;
                q->files = files;
                q->first = ninit;
                q->stride = nthreads;
                q->nfiles_all = nfiles;
                q->window = window / nthreads + (ninit < window % nthreads ? 1 : 0);
                if (q->window == 0)
                        q->window = 1;
                q->ready = calloc(nfiles / nthreads + 1, sizeof(*q->ready));
                if (!q->ready) {
                        rc = -ENOMEM;
                        goto out;
                }
                int e = pthread_mutex_init(&q->mu, NULL);
                if (e != 0) {
                        free(q->ready);
                        rc = -e;
                        goto out;
                }
                e = pthread_cond_init(&q->cv, NULL);
                if (e != 0) {
                        pthread_mutex_destroy(&q->mu);
                        free(q->ready);
                        rc = -e;
                        goto out;
                }
        }
        double t0 = chp_net_now_s();
        for (; nstarted < nthreads; nstarted++) {
                int e = pthread_create(&tid[nstarted], NULL, putter_main, &p[nstarted]);
                if (e != 0) {
                        rc = -e;
                        break;
                }
        }
        for (uint32_t i = 0; i < nstarted; i++) {
                int e = pthread_join(tid[i], NULL);
                if (e != 0 && rc == 0)
                        rc = -e;
        }
        out->seconds = chp_net_now_s() - t0;
        for (uint32_t i = 0; i < nstarted; i++) {
                if (p[i].err != 0 && rc == 0)
                        rc = p[i].err;
                out->dedup += p[i].dedup;
                out->existed += p[i].existed;
        }
        if (rc == 0 && nstarted == nthreads && stop)
                rc = -EINTR;
        if (rc == 0) {
                for (size_t i = 0; i < nfiles; i++)
                        memcpy(d->file_ids + files[i] * CHP_HASH_BYTES,
                               d->commits[files[i]].u.commit.file_id, CHP_HASH_BYTES);
        }
out:
        /* The store's done callbacks signal and unlock p[i].mu as their last act on it; every
         * putter waited for all of its requests, so nothing of ours is in flight here. */
        for (uint32_t i = 0; i < ninit; i++) {
                pthread_cond_destroy(&p[i].cv);
                pthread_mutex_destroy(&p[i].mu);
                free(p[i].ready);
        }
        return rc;
}

/* ---- get phase ---------------------------------------------------------------------------- */

struct getter {
        struct dataset *d;
        size_t first, stride;
        bool pread_variant;
        int err;
        size_t bad_slot;
};

static int read_located(struct chp_store *s, const uint8_t *addr, uint8_t *buf, size_t cap)
{
        struct chp_chunk_loc loc;
        int rc = chp_store_locate(s, addr, &loc);
        if (rc < 0)
                return rc;
        if (loc.is_inline) {
                chp_store_loc_release(s, &loc);
                return (int)chp_store_read(s, addr, buf, cap);
        }
        if (loc.len > cap) {
                chp_store_loc_release(s, &loc);
                return -ENOBUFS;
        }
        size_t got = 0;
        while (got < loc.len) {
                ssize_t n = pread(loc.fd, buf + got, loc.len - got, (off_t)(loc.offset + got));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        rc = n < 0 ? -errno : -EIO;
                        break;
                }
                got += (size_t)n;
        }
        chp_store_loc_release(s, &loc);
        return rc < 0 ? rc : (int)got;
}

static void *getter_main(void *arg)
{
        struct getter *g = arg;
        struct dataset *d = g->d;
        uint8_t *buf = malloc(d->chunk_size);
        if (!buf) {
                g->err = -ENOMEM;
                return NULL;
        }
        for (size_t i = g->first; i < d->nchunks && !stop; i += g->stride) {
                const uint8_t *addr = d->addrs + i * CHP_HASH_BYTES;
                ssize_t n;
                if (g->pread_variant)
                        n = read_located(d->store, addr, buf, d->chunk_size);
                else
                        n = chp_store_read(d->store, addr, buf, d->chunk_size);
                if (n < 0 || (size_t)n != d->chunk_size) {
                        g->err = n < 0 ? (int)n : -EIO; /* -EIO: short chunk */
                        g->bad_slot = i;
                        break;
                }
        }
        free(buf);
        return NULL;
}

static int get_all(struct dataset *d, uint32_t nthreads, bool pread_variant,
                   double *seconds /* out */)
{
        struct getter g[THREADS_MAX];
        pthread_t tid[THREADS_MAX];
        uint32_t nstarted = 0;
        int rc = 0;

        *seconds = 0;
        double t0 = chp_net_now_s();
        for (; nstarted < nthreads; nstarted++) {
                g[nstarted] = (struct getter){
                    .d = d, .first = nstarted, .stride = nthreads, .pread_variant = pread_variant};
                int e = pthread_create(&tid[nstarted], NULL, getter_main, &g[nstarted]);
                if (e != 0) {
                        rc = -e;
                        break;
                }
        }
        for (uint32_t i = 0; i < nstarted; i++) {
                int e = pthread_join(tid[i], NULL);
                if (e != 0 && rc == 0)
                        rc = -e;
        }
        *seconds = chp_net_now_s() - t0;
        for (uint32_t i = 0; i < nstarted; i++) {
                if (g[i].err != 0 && rc == 0) {
                        char hex[CHP_HASH_HEXBYTES];
                        chp_hex_encode(d->addrs + g[i].bad_slot * CHP_HASH_BYTES, CHP_HASH_BYTES,
                                       hex);
                        fprintf(stderr, "bench_store: %s of chunk %zu (%s): %s\n",
                                pread_variant ? "locate+pread" : "chp_store_read", g[i].bad_slot,
                                hex, g[i].err == -EIO ? "wrong length" : chp_strerror(g[i].err));
                        rc = g[i].err;
                }
        }
        if (rc == 0 && stop)
                rc = -EINTR;
        return rc;
}

/* Untimed: compares every 61st chunk read back with what was put. Returns mismatches found. */
static uint64_t check_sample(struct dataset *d)
{
        uint64_t bad = 0;
        uint8_t *buf = malloc(d->chunk_size);
        if (!buf)
                return 0;
        for (size_t i = 0; i < d->nchunks; i += 61) {
                ssize_t n =
                    chp_store_read(d->store, d->addrs + i * CHP_HASH_BYTES, buf, d->chunk_size);
                if (n != (ssize_t)d->chunk_size ||
                    memcmp(buf, d->data + i * (size_t)d->chunk_size, d->chunk_size) != 0) {
                        fprintf(stderr, "bench_store: chunk %zu reads back different bytes\n", i);
                        bad++;
                }
        }
        free(buf);
        return bad;
}

/* ---- churn -------------------------------------------------------------------------------- */

struct churn_outcome {
        double delete_seconds, gc_seconds;
        struct chp_gc_stats gc;
        struct put_outcome put;
        size_t nfiles;
        uint64_t bytes, chunks;
        uint64_t still_present; /* deleted chunks the store still has after GC */
};

static int churn_round(struct dataset *d, uint32_t nthreads, uint32_t window,
                       struct churn_outcome *o /* out */)
{
        size_t k = (d->nfiles + 5) / 10;
        size_t *victims = NULL;
        uint8_t *old_addrs = NULL, *present = NULL;
        size_t nold = 0;
        int rc = 0;

        memset(o, 0, sizeof(*o));
        if (k == 0)
                k = 1;
        if (k > d->nfiles)
                k = d->nfiles;
        victims = calloc(k, sizeof(*victims));
        old_addrs = calloc(k * d->fchunks, CHP_HASH_BYTES);
        present = calloc(k * d->fchunks, 1);
        if (!victims || !old_addrs || !present) {
                rc = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < k; i++) {
                size_t f = d->live[(d->head + i) % d->nfiles];
                victims[i] = f;
                memcpy(old_addrs + nold * CHP_HASH_BYTES,
                       d->addrs + file_first(d, f) * CHP_HASH_BYTES,
                       file_count(d, f) * CHP_HASH_BYTES);
                nold += file_count(d, f);
        }

        double t0 = chp_net_now_s();
        for (size_t i = 0; i < k; i++) {
                struct chp_store_req req;
                memset(&req, 0, sizeof(req));
                req.type = CHP_REQ_FILE_DELETE;
                memcpy(req.u.file_delete.file_id, d->file_ids + victims[i] * CHP_HASH_BYTES,
                       CHP_HASH_BYTES);
                rc = chp_store_run(d->store, &req);
                if (rc < 0) {
                        fprintf(stderr, "bench_store: file delete: %s\n", chp_strerror(rc));
                        goto out;
                }
        }
        double t1 = chp_net_now_s();
        o->delete_seconds = t1 - t0;
        for (int pass = 0; pass < GC_PASSES_MAX; pass++) {
                struct chp_gc_stats st;
                rc = chp_store_gc(d->store, (uint64_t)time(NULL), &st);
                if (rc < 0) {
                        fprintf(stderr, "bench_store: gc: %s\n", chp_strerror(rc));
                        goto out;
                }
                o->gc.files_expired += st.files_expired;
                o->gc.uploads_expired += st.uploads_expired;
                o->gc.chunks_freed += st.chunks_freed;
                o->gc.bytes_freed += st.bytes_freed;
                o->gc.segments_deleted += st.segments_deleted;
                o->gc.segments_compacted += st.segments_compacted;
                o->gc.bytes_moved += st.bytes_moved;
                if (!st.more)
                        break;
        }
        o->gc_seconds = chp_net_now_s() - t1;

        rc = chp_store_has(d->store, old_addrs, nold, present);
        if (rc < 0) {
                fprintf(stderr, "bench_store: has: %s\n", chp_strerror(rc));
                goto out;
        }
        for (size_t i = 0; i < nold; i++)
                o->still_present += present[i];

        /* New content into the freed slots (untimed), then put them as the newest files. */
        for (size_t i = 0; i < k; i++) {
                rc = dataset_make_file(d, victims[i]);
                if (rc < 0)
                        goto out;
        }
        rc = put_files(d, victims, k, nthreads, window, &o->put);
        if (rc < 0)
                goto out;
        d->head = (d->head + k) % d->nfiles; /* the victims are now the newest, at the tail */
        o->nfiles = k;
        for (size_t i = 0; i < k; i++) {
                o->chunks += file_count(d, victims[i]);
                o->bytes += (uint64_t)file_count(d, victims[i]) * d->chunk_size;
        }
out:
        free(present);
        free(old_addrs);
        free(victims);
        return rc;
}

/* ---- one configuration -------------------------------------------------------------------- */

struct config {
        const char *layout;
        uint32_t inline_max;
        const char *sync_name;
        enum chp_sync sync;
        uint32_t chunk_size;
};

static void verify_problem(void *ctx, const char *problem)
{
        uint64_t *count = ctx;
        if (*count < 20)
                fprintf(stderr, "bench_store: verify: %s\n", problem);
        (*count)++;
}

static int run_config(struct report *rep, const struct config *c, uint64_t seed)
{
        char dir[PATH_CAP];
        struct dataset d;
        struct chp_store *s = NULL;
        bool have_dir = false, have_data = false;
        int rc = 0;
        double secs = 0;
        struct result *r;

        if (snprintf(dir, sizeof(dir), "%s/store-%s-%s-%u-XXXXXX", rep->base, c->layout,
                     c->sync_name, c->chunk_size) >= (int)sizeof(dir))
                return -ENAMETOOLONG;
        if (!mkdtemp(dir)) {
                rc = -errno;
                fprintf(stderr, "bench_store: mkdtemp %s: %s\n", dir, chp_strerror(rc));
                return rc;
        }
        have_dir = true;

        rc = dataset_init(&d, c->chunk_size, (uint64_t)rep->mib * MIB, seed);
        if (rc < 0) {
                fprintf(stderr, "bench_store: preparing data: %s\n", chp_strerror(rc));
                goto out;
        }
        have_data = true;

        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.sync = c->sync;
        o.inline_max = c->inline_max;
        o.segment_size = rep->segment_size;
        rc = chp_store_open(&o, &s);
        if (rc < 0) {
                fprintf(stderr, "bench_store: chp_store_open %s: %s\n", dir, chp_strerror(rc));
                goto out;
        }
        d.store = s;

        /* put */
        struct put_outcome po;
        rc = put_files(&d, d.live, d.nfiles, rep->threads, rep->window, &po);
        if (rc < 0) {
                fprintf(stderr, "bench_store: put (%s %s %u): %s\n", c->layout, c->sync_name,
                        c->chunk_size, chp_strerror(rc));
                goto out;
        }
        if (po.dedup || po.existed) {
                fprintf(stderr,
                        "bench_store: %" PRIu64 " distinct chunks reported deduplicated, %" PRIu64
                        " new files reported existing\n",
                        po.dedup, po.existed);
                rep->problems++;
        }
        r = add_result(rep, c->layout, c->sync_name, c->chunk_size, "put",
                       (uint64_t)d.nchunks * d.chunk_size, d.nchunks, po.seconds, true);
        if (r)
                print_result(rep, r);

        /* get */
        rc = get_all(&d, rep->threads, false, &secs);
        if (rc < 0)
                goto out;
        r = add_result(rep, c->layout, c->sync_name, c->chunk_size, "get",
                       (uint64_t)d.nchunks * d.chunk_size, d.nchunks, secs, false);
        if (r)
                print_result(rep, r);
        if (c->inline_max != CHP_STORE_INLINE_ALL) {
                rc = get_all(&d, rep->threads, true, &secs);
                if (rc < 0)
                        goto out;
                r = add_result(rep, c->layout, c->sync_name, c->chunk_size, "get-pread",
                               (uint64_t)d.nchunks * d.chunk_size, d.nchunks, secs, false);
                if (r)
                        print_result(rep, r);
        }
        rep->problems += check_sample(&d);

        /* churn */
        for (uint32_t round = 1; round <= rep->rounds && !stop; round++) {
                struct churn_outcome co;
                char phase[16];
                rc = churn_round(&d, rep->threads, rep->window, &co);
                if (rc < 0) {
                        fprintf(stderr, "bench_store: churn round %u (%s %s %u): %s\n", round,
                                c->layout, c->sync_name, c->chunk_size, chp_strerror(rc));
                        goto out;
                }
                if (co.still_present) {
                        fprintf(stderr,
                                "bench_store: %" PRIu64 " chunks of deleted files still stored "
                                "after gc\n",
                                co.still_present);
                        rep->problems++;
                }
                snprintf(phase, sizeof(phase), "churn%u", round);
                r = add_result(rep, c->layout, c->sync_name, c->chunk_size, phase, co.bytes,
                               co.chunks, co.put.seconds, true);
                if (r) {
                        r->has_gc = true;
                        r->delete_seconds = co.delete_seconds;
                        r->gc_seconds = co.gc_seconds;
                        r->gc = co.gc;
                        print_result(rep, r);
                }
        }
        if (stop) {
                rc = -EINTR;
                goto out;
        }

        /* Untimed consistency checks: counts, then a full scrub. */
        struct chp_store_stats st;
        rc = chp_store_stats(s, &st);
        if (rc < 0) {
                fprintf(stderr, "bench_store: stats: %s\n", chp_strerror(rc));
                goto out;
        }
        if (st.chunks != d.nchunks || st.files != d.nfiles) {
                fprintf(stderr,
                        "bench_store: store counts %" PRIu64 " chunks, %" PRIu64
                        " files; expected %zu, %zu\n",
                        st.chunks, st.files, d.nchunks, d.nfiles);
                rep->problems++;
        }
        struct chp_verify_stats vs;
        uint64_t problems = 0;
        rc = chp_store_verify(s, verify_problem, &problems, &vs);
        if (rc < 0) {
                fprintf(stderr, "bench_store: verify: %s\n", chp_strerror(rc));
                goto out;
        }
        if (vs.problems || problems) {
                fprintf(stderr, "bench_store: verify (%s %s %u) found %" PRIu64 " problems\n",
                        c->layout, c->sync_name, c->chunk_size, vs.problems);
                rep->problems += vs.problems ? vs.problems : problems;
        }
out:
        chp_store_close(s);
        if (have_data)
                dataset_free(&d);
        if (have_dir) {
                int e = rm_tree(dir);
                if (e < 0) {
                        fprintf(stderr, "bench_store: removing %s: %s\n", dir, chp_strerror(e));
                        if (rc == 0)
                                rc = e;
                }
                e = sync_fs(rep->base);
                if (e < 0 && rc == 0)
                        rc = e;
        }
        return rc;
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: bench_store [--dir DIR] [--mib N] [--rounds R] [--json]\n"
                "                   [--threads T] [--window W] [--segment-mib S] [--only PATTERN]\n"
                "  --dir DIR        parent of the temporary stores (default: a new directory "
                "under " DEFAULT_BASE ", removed afterwards)\n"
                "  --mib N          MiB put per configuration (default %u)\n"
                "  --rounds R       churn rounds (default %u)\n"
                "  --threads T      submitting and reading threads (default %u)\n"
                "  --window W       puts in flight over all threads (default %u)\n"
                "  --segment-mib S  segment size (default max(N/8, 8) MiB)\n"
                "  --only PATTERN   run the configurations whose \"layout/sync/chunk\" contains "
                "PATTERN\n"
                "                   (e.g. segments/none/4M, lmdb-all, /64K)\n"
                "  --json           one JSON object instead of the table\n",
                DEFAULT_MIB, DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_WINDOW);
}

int main(int argc, char **argv)
{
        struct report *rep = NULL;
        const char *dir_arg = NULL;
        bool own_base = false;
        const char *only = NULL;
        uint32_t segment_mib = 0;
        int rc = 0, exit_code = 0;

        rep = calloc(1, sizeof(*rep));
        if (!rep) {
                fprintf(stderr, "bench_store: %s\n", chp_strerror(-ENOMEM));
                return 2;
        }
        rep->mib = DEFAULT_MIB;
        rep->rounds = DEFAULT_ROUNDS;
        rep->threads = DEFAULT_THREADS;
        rep->window = DEFAULT_WINDOW;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int e = 0;
                if (strcmp(a, "--json") == 0) {
                        rep->json = true;
                        continue;
                }
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        usage(stdout);
                        goto out;
                }
                if (!v) {
                        usage(stderr);
                        exit_code = 1;
                        goto out;
                }
                if (strcmp(a, "--dir") == 0)
                        dir_arg = v;
                else if (strcmp(a, "--mib") == 0)
                        e = parse_u32(v, 1, 1u << 20, &rep->mib);
                else if (strcmp(a, "--rounds") == 0)
                        e = parse_u32(v, 0, ROUNDS_MAX, &rep->rounds);
                else if (strcmp(a, "--threads") == 0)
                        e = parse_u32(v, 1, THREADS_MAX, &rep->threads);
                else if (strcmp(a, "--window") == 0)
                        e = parse_u32(v, 1, WINDOW_MAX, &rep->window);
                else if (strcmp(a, "--only") == 0)
                        only = v;
                else if (strcmp(a, "--segment-mib") == 0)
                        e = parse_u32(v, 1, 1u << 20, &segment_mib);
                else
                        e = -EINVAL;
                if (e < 0) {
                        fprintf(stderr, "bench_store: bad option %s %s\n", a, v);
                        usage(stderr);
                        exit_code = 1;
                        goto out;
                }
                i++;
        }
        if (segment_mib == 0)
                segment_mib = rep->mib / 8 > 8 ? rep->mib / 8 : 8;
        rep->segment_size = (uint64_t)segment_mib * MIB;
        if (rep->window < rep->threads)
                rep->window = rep->threads;

        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
            sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGPIPE, &sa, NULL) != 0) {
                rc = -errno;
                fprintf(stderr, "bench_store: sigaction: %s\n", chp_strerror(rc));
                goto out;
        }

        if (dir_arg) {
                if (snprintf(rep->base, sizeof(rep->base), "%s", dir_arg) >=
                    (int)sizeof(rep->base)) {
                        fprintf(stderr, "bench_store: --dir too long\n");
                        exit_code = 1;
                        goto out;
                }
                if (mkdir(rep->base, 0700) != 0 && errno != EEXIST) {
                        rc = -errno;
                        fprintf(stderr, "bench_store: mkdir %s: %s\n", rep->base, chp_strerror(rc));
                        goto out;
                }
        } else {
                snprintf(rep->base, sizeof(rep->base), "%s/chapar-bench-XXXXXX", DEFAULT_BASE);
                if (!mkdtemp(rep->base)) {
                        rc = -errno;
                        fprintf(stderr, "bench_store: mkdtemp %s: %s\n", rep->base,
                                chp_strerror(rc));
                        goto out;
                }
                own_base = true;
        }

        uint64_t total = (uint64_t)rep->mib * MIB;
        for (int i = 0; i < DISK_REPEATS && rc == 0 && !stop; i++) {
                rc = disk_write(rep->base, total, 0, &rep->disk_once[i]);
                if (rc == 0)
                        rc = disk_write(rep->base, total, DISK_SYNC_EVERY, &rep->disk_every[i]);
        }
        if (rc == 0 && stop)
                rc = -EINTR;
        if (rc < 0) {
                fprintf(stderr, "bench_store: raw disk write in %s: %s\n", rep->base,
                        chp_strerror(rc));
                goto out;
        }
        rep->disk_once_mbps = median(rep->disk_once, DISK_REPEATS);
        rep->disk_every_mbps = median(rep->disk_every, DISK_REPEATS);
        if (!rep->json) {
                printf("bench_store: %u MiB per configuration, %u churn rounds, %u threads, "
                       "%u puts in flight, segments of %u MiB, in %s\n",
                       rep->mib, rep->rounds, rep->threads, rep->window, segment_mib, rep->base);
                double lo1, hi1, lo2, hi2;
                min_max(rep->disk_once, DISK_REPEATS, &lo1, &hi1);
                min_max(rep->disk_every, DISK_REPEATS, &lo2, &hi2);
                printf("disk: %u MiB in 1 MiB write(2)s, median of %d (min-max): fdatasync once "
                       "%.1f MB/s (%.1f-%.1f), fdatasync every 64 MiB %.1f MB/s (%.1f-%.1f)\n",
                       rep->mib, DISK_REPEATS, rep->disk_once_mbps, lo1, hi1, rep->disk_every_mbps,
                       lo2, hi2);
                printf("\"x disk\" = put MB/s / %.1f MB/s (fdatasync once); MB = 10^6 bytes\n",
                       rep->disk_once_mbps);
                printf("%-8s  %-4s  %5s  %-9s  %9s  %9s\n", "layout", "sync", "chunk", "phase",
                       "MB/s", "chunks/s");
                fflush(stdout);
        }

        static const uint32_t sizes[] = {64u * 1024, MIB, 4u * MIB};
        static const struct {
                const char *name;
                uint32_t inline_max;
        } layouts[] = {{"segments", 16u * 1024}, {"lmdb-all", CHP_STORE_INLINE_ALL}};
        static const struct {
                const char *name;
                enum chp_sync sync;
        } syncs[] = {{"full", CHP_SYNC_FULL}, {"none", CHP_SYNC_NONE}};
        _Static_assert(sizeof(layouts) / sizeof(layouts[0]) * sizeof(syncs) / sizeof(syncs[0]) *
                               sizeof(sizes) / sizeof(sizes[0]) ==
                           12,
                       "RESULTS_MAX counts 12 configurations");
        uint64_t seed = 1;
        for (size_t li = 0; li < sizeof(layouts) / sizeof(layouts[0]); li++) {
                for (size_t si = 0; si < sizeof(syncs) / sizeof(syncs[0]); si++) {
                        for (size_t zi = 0; zi < sizeof(sizes) / sizeof(sizes[0]); zi++) {
                                if (stop) {
                                        rc = -EINTR;
                                        goto out;
                                }
                                struct config c = {
                                    .layout = layouts[li].name,
                                    .inline_max = layouts[li].inline_max,
                                    .sync_name = syncs[si].name,
                                    .sync = syncs[si].sync,
                                    .chunk_size = sizes[zi],
                                };
                                char name[64], sz[16];
                                snprintf(name, sizeof(name), "%s/%s/%s", c.layout, c.sync_name,
                                         size_name(c.chunk_size, sz, sizeof(sz)));
                                if (only && !strstr(name, only)) {
                                        seed += (uint64_t)1 << 40;
                                        continue;
                                }
                                rc = run_config(rep, &c, seed);
                                seed += (uint64_t)1 << 40;
                                if (rc < 0)
                                        goto out;
                        }
                }
        }
        if (rep->json)
                print_json(rep);
        else if (rep->problems)
                printf("store problems seen: %" PRIu64 " (details on stderr)\n", rep->problems);
        if (rep->problems)
                exit_code = 3;
out:
        if (rc < 0) {
                if (rc != -EINTR)
                        fprintf(stderr, "bench_store: stopped: %s\n", chp_strerror(rc));
                exit_code = rc == -EINTR ? 130 : 2;
        }
        if (own_base) {
                int e = rm_tree(rep->base);
                if (e < 0)
                        fprintf(stderr, "bench_store: removing %s: %s\n", rep->base,
                                chp_strerror(e));
        }
        free(rep);
        return exit_code;
}
