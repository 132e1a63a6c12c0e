/* bench_rstate.c — the shared state's compound RADOS operations (server/store/rados_state.h)
 * under load, for bench/rstate.sh, which puts them beside `rados bench` on the same pool:
 *   upload    FILES files of CHUNKS chunks of SIZE bytes, each an upload create, then per chunk
 *             CHUNK_PUT (u<id>) + UPLOAD_PUT_CHUNK with WINDOW chunks in flight in all (across
 *             files), then COMMIT once its chunks are in (the file's chunks referred, keys,
 *             usage, record, the upload removed)
 *   download  FILE_GET of each of those files, then CHUNK_READ of each chunk its manifest names,
 *             WINDOW reads in flight in all; then again with CHUNK_READ_XXH3 (the store's read:
 *             the put's XXH3 checked instead of SHA-256), download_xxh3_MBps
 *   small     SMALL files of one 64 KiB chunk, the upload flow above with WINDOW files at once:
 *             files per second and the mean latency of one COMMIT (submit to done)
 * Data is random (getrandom), hashed before the clock starts; CHUNK_PUT hashes it again and
 * CHUNK_READ checks it, on these two cores, which rados bench does not. One handle, one
 * tenant ("bench"). Prints `name value` lines: upload_MBps, download_MBps, small_files_per_s,
 * commit_ms, limited (MB = 10^6 bytes). An upload create or commit answered CHP_ELIMITED (the
 * tenant's usage object lost its compare-and-set 8 times) is counted and submitted again.
 * Usage: bench_rstate CONF POOL USER [-f FILES] [-c CHUNKS] [-n SMALL] [-w WINDOW] [-1] [-u]
 *   defaults: -f 16 -c 8 -n 200 -w 16; -1: the small files one at a time as well (commit_ms_1);
 *   -u: tenant "" (usage not tracked: no compare-and-set on t/<tenant>).
 * Also printed: sha256_MBps, one core's SHA-256 of 1 MiB blocks, which CHUNK_PUT and CHUNK_READ
 * each pay per chunk.
 * Exit 0, 1 on usage errors, 2 when a request fails (its kind and code on stderr).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "hash.h"
#include "manifest.h"
#include "rados_state.h"
#include "records.h"

static const char *tenant = "bench";

#define BIG   (1u << 20)
#define SMALL CHP_CHUNK_MIN

/* One request in flight and what it is for. */
struct job {
        struct chp_rstate_req r;
        uint32_t file, chunk;
        double t0;
        struct job *next; /* the done list */
};

struct file {
        uint8_t uid[CHP_UPLOAD_ID_BYTES], id[CHP_HASH_BYTES];
        uint8_t *addrs; /* chunks * 32 */
        uint8_t *man, *rec;
        size_t man_len, rec_len;
        uint32_t next, done; /* chunks submitted, chunks finished */
        bool ready;          /* created (upload) or its manifest read (download) */
        struct job open, commit;
};

static struct chp_rstate *st;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job *done_list;
static uint32_t limited; /* requests answered CHP_ELIMITED and submitted again */

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_done(struct chp_rstate_req *r, int rc)
{
        struct job *j = r->arg;
        if (rc == CHP_ELIMITED && (r->kind == CHP_RS_UPLOAD_CREATE || r->kind == CHP_RS_COMMIT)) {
                /* the tenant's usage: compare-and-set lost 8 times; a relay answers 429 */
                __atomic_add_fetch(&limited, 1, __ATOMIC_RELAXED);
                if ((rc = chp_rstate_submit(st, r)) == 0)
                        return;
        }
        if (rc) {
                fprintf(stderr, "bench_rstate: request kind %d (file %u chunk %u) failed: %d\n",
                        (int)r->kind, j->file, j->chunk, rc);
                exit(2);
        }
        pthread_mutex_lock(&mu);
        j->next = done_list;
        done_list = j;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
}

static void go(struct job *j, enum chp_rstate_kind kind, uint32_t file, uint32_t chunk)
{
        memset(&j->r, 0, sizeof(j->r));
        j->r.kind = kind;
        j->r.done = on_done;
        j->r.arg = j;
        j->file = file;
        j->chunk = chunk;
        j->t0 = now_s();
}

static void submit(struct job *j)
{
        int rc = chp_rstate_submit(st, &j->r);
        if (rc) {
                fprintf(stderr, "bench_rstate: submit of kind %d failed: %d\n", (int)j->r.kind, rc);
                exit(2);
        }
}

/* The finished jobs, newest first (waits for one). */
static struct job *wait_done(void)
{
        pthread_mutex_lock(&mu);
        while (!done_list)
                pthread_cond_wait(&cv, &mu);
        struct job *j = done_list;
        done_list = NULL;
        pthread_mutex_unlock(&mu);
        return j;
}

static void *xmalloc(size_t n)
{
        void *p = calloc(1, n);
        if (!p) {
                perror("bench_rstate");
                exit(2);
        }
        return p;
}

static void fill_random(void *buf, size_t n)
{
        for (size_t off = 0; off < n;) {
                ssize_t got = getrandom((uint8_t *)buf + off, n - off, 0);
                if (got < 0 && errno != EINTR) {
                        perror("getrandom");
                        exit(2);
                }
                off += got > 0 ? (size_t)got : 0;
        }
}

/* nf files of k chunks of len bytes in data: addresses, manifests, upload records. */
static struct file *make_files(uint32_t nf, uint32_t k, uint32_t len, uint8_t *data, uint64_t t)
{
        struct file *fs = xmalloc(nf * sizeof(*fs));
        for (uint32_t f = 0; f < nf; f++) {
                struct file *x = &fs[f];
                fill_random(x->uid, sizeof(x->uid));
                x->addrs = xmalloc((size_t)k * CHP_HASH_BYTES);
                for (uint32_t i = 0; i < k; i++)
                        if (chp_sha256(data + ((size_t)f * k + i) * len, len,
                                       x->addrs + (size_t)i * CHP_HASH_BYTES))
                                exit(2);
                struct chp_manifest m = {.version = 1,
                                         .chunk_size = len,
                                         .total_size = (uint64_t)k * len,
                                         .chunk_count = k,
                                         .addrs = x->addrs};
                x->man_len = chp_manifest_encoded_size(&m);
                x->man = xmalloc(x->man_len);
                if (chp_manifest_encode(&m, x->man, x->man_len) < 0 ||
                    chp_manifest_id(x->man, x->man_len, x->id))
                        exit(2);
                struct chp_rec_upload ur = {.flags = CHP_REC_UPLOAD_HAS_MANIFEST,
                                            .chunk_size = len,
                                            .manifest_len = (uint32_t)x->man_len,
                                            .declared = m.total_size,
                                            .created = t,
                                            .expires = t + 3600,
                                            .file_expires = t + 86400,
                                            .tenant_len = strlen(tenant),
                                            .file_id = x->id};
                x->rec_len = CHP_REC_UPLOAD_BYTES + strlen(tenant) + x->man_len;
                x->rec = xmalloc(x->rec_len);
                chp_rec_upload_encode(x->rec, &ur);
                memcpy(x->rec + CHP_REC_UPLOAD_BYTES, tenant, strlen(tenant));
                memcpy(x->rec + CHP_REC_UPLOAD_BYTES + strlen(tenant), x->man, x->man_len);
        }
        return fs;
}

/* The lowest file whose chunks are not all submitted (nf when none). */
static uint32_t lowest(struct file *fs, uint32_t nf)
{
        uint32_t f = 0;
        while (f < nf && fs[f].next == fs[f].open.chunk)
                f++;
        return f;
}

/* WINDOW jobs for chunk requests, the free ones on a stack. */
struct win {
        struct job *slots;
        uint32_t *free, n;
};

static void win_init(struct win *w, uint32_t n)
{
        w->slots = xmalloc(n * sizeof(*w->slots));
        w->free = xmalloc(n * sizeof(*w->free));
        for (w->n = 0; w->n < n; w->n++)
                w->free[w->n] = w->n;
}

/* The next chunk of files low .. opened - 1 that is ready, in a free job begun as kind with its
 * address; NULL when there is none or no free job. */
static struct job *win_next(struct win *w, struct file *fs, uint32_t low, uint32_t opened,
                            uint32_t k, enum chp_rstate_kind kind)
{
        for (uint32_t f = low; f < opened && w->n; f++) {
                struct file *x = &fs[f];
                if (!x->ready || x->next == k)
                        continue;
                struct job *j = &w->slots[w->free[--w->n]];
                go(j, kind, f, x->next);
                memcpy(j->r.u.chunk.addr, x->addrs + (size_t)x->next++ * CHP_HASH_BYTES,
                       CHP_HASH_BYTES);
                return j;
        }
        return NULL;
}

/* Uploads fs (nf files of k chunks of len bytes from data), window chunks in flight; returns the
 * seconds taken and adds the commits' latencies to *commit_s. */
static double upload(struct file *fs, uint32_t nf, uint32_t k, uint32_t len, const uint8_t *data,
                     uint32_t window, uint64_t t, double *commit_s)
{
        struct win w;
        win_init(&w, window);
        uint32_t opened = 0, committed = 0, ahead = (window + k - 1) / k + 1;
        for (uint32_t f = 0; f < nf; f++)
                fs[f].open.chunk = k; /* lowest()'s bound */
        double t0 = now_s();
        while (committed < nf) {
                uint32_t low = lowest(fs, nf);
                for (; opened < nf && opened < low + ahead; opened++) {
                        struct job *j = &fs[opened].open;
                        go(j, CHP_RS_UPLOAD_CREATE, opened, k);
                        memcpy(j->r.u.upload.id, fs[opened].uid, CHP_UPLOAD_ID_BYTES);
                        j->r.u.upload.rec = fs[opened].rec;
                        j->r.u.upload.rec_len = fs[opened].rec_len;
                        submit(j);
                }
                for (struct job *j; (j = win_next(&w, fs, low, opened, k, CHP_RS_CHUNK_PUT));) {
                        j->r.u.chunk.data = data + ((size_t)j->file * k + j->chunk) * len;
                        j->r.u.chunk.len = len;
                        j->r.u.chunk.ref.kind = 'u';
                        memcpy(j->r.u.chunk.ref.id, fs[j->file].uid, CHP_UPLOAD_ID_BYTES);
                        j->r.u.chunk.lease = t + 3600;
                        submit(j);
                }
                for (struct job *j = wait_done(), *n; j; j = n) {
                        n = j->next;
                        struct file *x = &fs[j->file];
                        switch (j->r.kind) {
                        case CHP_RS_UPLOAD_CREATE:
                                x->ready = true;
                                break;
                        case CHP_RS_CHUNK_PUT: {
                                uint32_t c = j->chunk;
                                go(j, CHP_RS_UPLOAD_PUT_CHUNK, j->file, c);
                                memcpy(j->r.u.upload.id, x->uid, CHP_UPLOAD_ID_BYTES);
                                j->r.u.upload.index = c;
                                memcpy(j->r.u.upload.addr, x->addrs + (size_t)c * CHP_HASH_BYTES,
                                       CHP_HASH_BYTES);
                                submit(j);
                                break;
                        }
                        case CHP_RS_UPLOAD_PUT_CHUNK:
                                w.free[w.n++] = (uint32_t)(j - w.slots);
                                if (++x->done == k) {
                                        struct job *c = &x->commit;
                                        go(c, CHP_RS_COMMIT, j->file, k);
                                        c->r.u.commit.manifest = x->man;
                                        c->r.u.commit.manifest_len = x->man_len;
                                        c->r.u.commit.tenant = tenant;
                                        c->r.u.commit.created = t;
                                        c->r.u.commit.expires = t + 86400;
                                        c->r.u.commit.has_upload = true;
                                        memcpy(c->r.u.commit.upload_id, x->uid,
                                               CHP_UPLOAD_ID_BYTES);
                                        c->r.u.commit.declared = (uint64_t)k * len;
                                        submit(c);
                                }
                                break;
                        case CHP_RS_COMMIT:
                                *commit_s += now_s() - j->t0;
                                if (memcmp(j->r.u.commit.file_id, x->id, CHP_HASH_BYTES)) {
                                        fprintf(stderr, "bench_rstate: commit: another file id\n");
                                        exit(2);
                                }
                                committed++;
                                break;
                        default:
                                break;
                        }
                }
        }
        double s = now_s() - t0;
        free(w.slots);
        free(w.free);
        return s;
}

/* Reads fs back (FILE_GET, then every chunk), window reads in flight; returns the seconds. */
static double download(struct file *fs, uint32_t nf, uint32_t k, uint32_t len, uint32_t window,
                       enum chp_rstate_kind read)
{
        struct win w;
        win_init(&w, window);
        uint8_t *bufs = xmalloc((size_t)window * len);
        uint32_t opened = 0, finished = 0, ahead = (window + k - 1) / k + 1;
        for (uint32_t f = 0; f < nf; f++)
                fs[f].next = fs[f].done = 0, fs[f].ready = false;
        double t0 = now_s();
        while (finished < nf) {
                uint32_t low = lowest(fs, nf);
                for (; opened < nf && opened < low + ahead; opened++) {
                        struct job *j = &fs[opened].open;
                        go(j, CHP_RS_FILE_GET, opened, k);
                        memcpy(j->r.u.file.id, fs[opened].id, CHP_HASH_BYTES);
                        submit(j);
                }
                for (struct job *j; (j = win_next(&w, fs, low, opened, k, read));) {
                        j->r.u.chunk.buf = bufs + (size_t)(j - w.slots) * len;
                        j->r.u.chunk.cap = len;
                        submit(j);
                }
                for (struct job *j = wait_done(), *n; j; j = n) {
                        n = j->next;
                        struct file *x = &fs[j->file];
                        if (j->r.kind == CHP_RS_FILE_GET) {
                                struct chp_manifest m;
                                const struct chp_rec_file *rf = &j->r.u.file.file;
                                if (chp_manifest_decode(rf->manifest, rf->manifest_len, &m) < 0 ||
                                    m.chunk_count != k) {
                                        fprintf(stderr, "bench_rstate: file %u: bad manifest\n",
                                                j->file);
                                        exit(2);
                                }
                                memcpy(x->addrs, m.addrs, (size_t)k * CHP_HASH_BYTES);
                                chp_rstate_req_release(&j->r);
                                x->ready = true;
                        } else {
                                if (j->r.u.chunk.got != len) {
                                        fprintf(stderr, "bench_rstate: a short chunk\n");
                                        exit(2);
                                }
                                w.free[w.n++] = (uint32_t)(j - w.slots);
                                if (++x->done == k)
                                        finished++;
                        }
                }
        }
        double s = now_s() - t0;
        free(w.slots);
        free(w.free);
        free(bufs);
        return s;
}

static void free_files(struct file *fs, uint32_t nf)
{
        for (uint32_t f = 0; f < nf; f++) {
                free(fs[f].addrs);
                free(fs[f].man);
                free(fs[f].rec);
        }
        free(fs);
}

int main(int argc, char **argv)
{
        uint32_t nf = 16, k = 8, ns = 200, window = 16;
        bool serial = false;
        int o;
        while ((o = getopt(argc, argv, "f:c:n:w:1u")) != -1) {
                switch (o) {
                case 'f':
                        nf = (uint32_t)strtoul(optarg, NULL, 10);
                        break;
                case 'c':
                        k = (uint32_t)strtoul(optarg, NULL, 10);
                        break;
                case 'n':
                        ns = (uint32_t)strtoul(optarg, NULL, 10);
                        break;
                case 'w':
                        window = (uint32_t)strtoul(optarg, NULL, 10);
                        break;
                case '1':
                        serial = true;
                        break;
                case 'u':
                        tenant = "";
                        break;
                default:
                        goto usage;
                }
        }
        if (argc - optind != 3 || !nf || !k || !ns || !window || window > 1024 || k > 1024) {
        usage:
                fprintf(stderr,
                        "usage: %s CONF POOL USER [-f FILES] [-c CHUNKS] [-n SMALL] "
                        "[-w WINDOW] [-1] [-u]\n",
                        argv[0]);
                return 1;
        }
        const char *user = argv[optind + 2];
        if (strncmp(user, "client.", 7) == 0)
                user += 7;
        struct chp_rstate_opts so = {.conf = argv[optind], .pool = argv[optind + 1], .user = user};
        int rc = chp_rstate_open(&so, &st);
        if (rc) {
                fprintf(stderr, "bench_rstate: cannot open the shared state: %d\n", rc);
                return 2;
        }
        uint64_t t = (uint64_t)time(NULL);
        double commit_s = 0;

        uint8_t *data = xmalloc((size_t)nf * k * BIG), h[CHP_HASH_BYTES];
        fill_random(data, (size_t)nf * k * BIG);
        double h0 = now_s();
        for (uint32_t i = 0; i < 64; i++)
                if (chp_sha256(data + (size_t)(i % (nf * k)) * BIG, BIG, h))
                        return 2;
        printf("sha256_MBps %.1f\n", 64 * (double)BIG / 1e6 / (now_s() - h0));
        struct file *fs = make_files(nf, k, BIG, data, t);
        double up = upload(fs, nf, k, BIG, data, window, t, &commit_s);
        double down = download(fs, nf, k, BIG, window, CHP_RS_CHUNK_READ);
        double down_h = download(fs, nf, k, BIG, window, CHP_RS_CHUNK_READ_XXH3);
        double bytes = (double)nf * k * BIG;
        printf(
            "upload_MBps %.1f\ndownload_MBps %.1f\ndownload_xxh3_MBps %.1f\nbig_commit_ms %.2f\n",
            bytes / 1e6 / up, bytes / 1e6 / down, bytes / 1e6 / down_h, commit_s * 1e3 / nf);
        free_files(fs, nf);
        free(data);

        for (int pass = 0; pass < (serial ? 2 : 1); pass++) {
                uint32_t w = pass ? 1 : window;
                data = xmalloc((size_t)ns * SMALL);
                fill_random(data, (size_t)ns * SMALL);
                fs = make_files(ns, 1, SMALL, data, t);
                commit_s = 0;
                double s = upload(fs, ns, 1, SMALL, data, w, t, &commit_s);
                if (pass)
                        printf("commit_ms_1 %.2f\nsmall_files_per_s_1 %.1f\n", commit_s * 1e3 / ns,
                               ns / s);
                else
                        printf("small_files_per_s %.1f\ncommit_ms %.2f\n", ns / s,
                               commit_s * 1e3 / ns);
                free_files(fs, ns);
                free(data);
        }
        printf("limited %u\n", limited);
        chp_rstate_close(st);
        return 0;
}
