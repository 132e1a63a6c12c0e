/* store.c — opening and closing the store, the LMDB environment, and the fault hook.
 *
 * The store's pieces (server/store/): records.c the value codec, segments.c the segment files,
 * writer.c the group-committing writer thread, apply.c what each request does to the index,
 * gc.c expiry, sealing and compaction, read.c the read API, verify.c the scrub, tenants.c each
 * tenant's usage, audit.c the mark-and-sweep audit. store_int.h holds struct chp_store;
 * docs/storage.md the format and the commit protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "log.h"
#include "manifest.h"
#include "store_int.h"
#ifdef CHAPAR_RADOS
#include "shared_int.h"
#endif

/* ---- fault injection ---------------------------------------------------------------------- */

#ifdef CHAPAR_FAULT_INJECTION
void chp_store_fault_arm(struct chp_store *s, enum chp_store_fault_site site, uint64_t nth,
                         uint64_t count, int err)
{
        struct fault_site *f = &s->faults[site];
        atomic_store(&f->first, UINT64_MAX);
        atomic_store(&f->last, 0);
        if (!count || !nth)
                return;
        uint64_t first = atomic_load(&f->calls) + nth;
        atomic_store(&f->err, err);
        atomic_store(&f->last, count > UINT64_MAX - first ? UINT64_MAX : first + count - 1);
        atomic_store(&f->first, first);
}

uint64_t chp_store_fault_calls(struct chp_store *s, enum chp_store_fault_site site)
{
        return atomic_load(&s->faults[site].calls);
}

void chp_store_audit_hook(struct chp_store *s, void (*fn)(void *ctx), void *ctx)
{
        s->audit_hook = fn;
        s->audit_hook_ctx = ctx;
}

void chp_store_audit_limit(struct chp_store *s, size_t refs_max)
{
        s->audit_refs_max = refs_max;
}

/* Arms the faults CHAPAR_STORE_FAULT lists, so that a whole relay built with the hook can be
 * driven from a test script: "SITE:NTH:COUNT:ERR[,...]", SITE one of write, sync, create,
 * commit, ERR one of EIO, ENOSPC, EDQUOT. A malformed entry is logged and ignored. */
static void fault_from_env(struct chp_store *s)
{
        const char *env = getenv("CHAPAR_STORE_FAULT");
        static const char *const sites[CHP_FAULT_SITES] = {"write", "sync", "create", "commit"};
        while (env && *env) {
                char site[16], err[16];
                unsigned long long nth, count;
                int used = 0;
                int site_no = -1, code = 0;
                if (sscanf(env, "%15[a-z]:%llu:%llu:%15[A-Z]%n", site, &nth, &count, err, &used) ==
                    4) {
                        for (int i = 0; i < CHP_FAULT_SITES; i++)
                                if (strcmp(site, sites[i]) == 0)
                                        site_no = i;
                        code = strcmp(err, "EIO") == 0      ? -EIO
                               : strcmp(err, "ENOSPC") == 0 ? -ENOSPC
                               : strcmp(err, "EDQUOT") == 0 ? -EDQUOT
                                                            : 0;
                }
                if (site_no < 0 || !code) {
                        chp_log_error("store", "CHAPAR_STORE_FAULT: cannot parse \"%s\"", env);
                        return;
                }
                chp_store_fault_arm(s, (enum chp_store_fault_site)site_no, nth, count, code);
                chp_log_warn("store", "fault injection: %s calls %llu..+%llu fail with %s", site,
                             nth, count, err);
                env += used;
                if (*env == ',')
                        env++;
        }
}
#endif

/* ---- LMDB --------------------------------------------------------------------------------- */

int store_mdb_rc(int rc)
{
        switch (rc) {
        case MDB_SUCCESS:
                return 0;
        case MDB_NOTFOUND:
                return -ENOENT;
        case MDB_MAP_FULL:
                return CHP_EMAPFULL;
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
                return CHP_ECORRUPT;
        case MDB_VERSION_MISMATCH:
                return CHP_EVERSION;
        }
        if (rc > 0)
                return -rc; /* LMDB passes errno values through */
        chp_log_error("store", "lmdb: %s", mdb_strerror(rc));
        return CHP_ESTORE;
}

/* ---- the backend's host ------------------------------------------------------------------ */

static int host_space_take(void *ctx, uint64_t len, bool compacting)
{
        return store_space_take(ctx, len, compacting);
}

static void host_out_of_space(void *ctx)
{
        ((struct chp_store *)ctx)->out_of_space = true;
}

#ifdef CHAPAR_FAULT_INJECTION
static int host_fault(void *ctx, int site)
{
        return fault_at(ctx, (enum chp_store_fault_site)site);
}
#endif

/* ---- open / close ------------------------------------------------------------------------- */

void chp_store_opts_default(struct chp_store_opts *o)
{
        memset(o, 0, sizeof(*o));
        o->dir = "./data";
        o->sync = CHP_SYNC_FULL;
        o->inline_max = 16 * 1024;
        o->map_size = (uint64_t)64 << 30;
        o->segment_size = (uint64_t)256 << 20;
        o->batch_bytes = (uint64_t)64 << 20;
        o->linger_us = 0;
        o->compact_ratio = 0.5;
        o->gc_batch = 10000;
        o->space_reserve = 0;
        o->orphan_grace = 7ull * 24 * 3600;
        o->backend = CHP_STORE_LOCAL;
        o->rados_inflight = 64;
        o->rados_op_timeout = 30;
}

static int mkdir_p(const char *path)
{
        if (mkdir(path, 0700) == 0 || errno == EEXIST)
                return 0;
        return -errno;
}

/* The backend a directory's chunk records point into, kept in meta "backend" from the first
 * open: a directory must not switch (its records would be read from the wrong place). A store
 * from before the key is local's, unless it holds no backend chunk at all. */
static int backend_kind(struct chp_store *s, MDB_txn *txn)
{
        const char *want = s->opts.backend == CHP_STORE_RADOS ? "rados" : "local";
        MDB_val k = val("backend", 7), v;
        int rc = mdb_get(txn, s->db_meta, &k, &v);
        if (rc == 0) {
                if (v.mv_size == strlen(want) && memcmp(v.mv_data, want, v.mv_size) == 0)
                        return 0;
                chp_log_error("store",
                              "%s was made with the %.*s chunk backend, not %s: a directory "
                              "cannot switch backends",
                              s->dir, (int)v.mv_size, (const char *)v.mv_data, want);
                return -EINVAL;
        }
        if (rc != MDB_NOTFOUND)
                return store_mdb_rc(rc);
        if (s->opts.backend == CHP_STORE_RADOS) {
                MDB_cursor *cur;
                if ((rc = mdb_cursor_open(txn, s->db_chunks, &cur)))
                        return store_mdb_rc(rc);
                int op = MDB_FIRST;
                bool local = false;
                while (!local && (rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
                        struct chp_rec_chunk c;
                        op = MDB_NEXT;
                        local = parse_chunk(&v, &c) == 0 && c.kind == CHP_REC_CHUNK_SEG;
                }
                mdb_cursor_close(cur);
                if (local) {
                        chp_log_error("store",
                                      "%s holds chunks in segment files (the local backend): "
                                      "it cannot be opened with the rados backend",
                                      s->dir);
                        return -EINVAL;
                }
                if (rc && rc != MDB_NOTFOUND)
                        return store_mdb_rc(rc);
        }
        k = val("backend", 7);
        v = val(want, strlen(want));
        return store_mdb_rc(mdb_put(txn, s->db_meta, &k, &v, 0));
}

static int open_dbs(struct chp_store *s)
{
        MDB_txn *txn;
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc)
                return store_mdb_rc(rc);
        struct {
                const char *name;
                MDB_dbi *dbi;
        } dbs[] = {
            {"chunks", &s->db_chunks},     {"refs", &s->db_refs},         {"files", &s->db_files},
            {"uploads", &s->db_uploads},   {"upchunks", &s->db_upchunks}, {"expiry", &s->db_expiry},

            {"meta", &s->db_meta},         {"pending", &s->db_pending},   {"tails", &s->db_tails},
            {"filemeta", &s->db_filemeta}, {"orphans", &s->db_orphans},
        };
        for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
                rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
                if (rc)
                        goto out;
        }
        /* a store written before tenants' usage was kept: count it once, from the records */
        bool rebuild = false;
        rc = mdb_dbi_open(txn, "tenants", 0, &s->db_tenants);
        if (rc == MDB_NOTFOUND) {
                rebuild = true;
                rc = mdb_dbi_open(txn, "tenants", MDB_CREATE, &s->db_tenants);
        }
        if (rc)
                goto out;
        if (rebuild) {
                int err = store_usage_rebuild(s, txn, (uint64_t)time(NULL));
                if (err) {
                        mdb_txn_abort(txn);
                        return err;
                }
        }
        /* a store written before listings were indexed: index its files once */
        rc = mdb_dbi_open(txn, "fileindex", 0, &s->db_fileindex);
        rebuild = rc == MDB_NOTFOUND;
        if (rebuild)
                rc = mdb_dbi_open(txn, "fileindex", MDB_CREATE, &s->db_fileindex);
        if (!rc)
                rc = mdb_dbi_open(txn, "quarantine", MDB_CREATE, &s->db_quarantine);
        if (rc)
                goto out;
        if (rebuild) {
                int err = store_index_rebuild(s, txn);
                if (err) {
                        mdb_txn_abort(txn);
                        return err;
                }
        }
        int kind = backend_kind(s, txn);
        if (kind) {
                mdb_txn_abort(txn);
                return kind;
        }
        MDB_val k = val("schema", 6), v;
        rc = mdb_get(txn, s->db_meta, &k, &v);
        if (rc == MDB_NOTFOUND) {
                uint8_t ver[4];
                chp_put_le32(ver, CHP_REC_SCHEMA_VERSION);
                v = val(ver, 4);
                rc = mdb_put(txn, s->db_meta, &k, &v, 0);
        } else if (rc == 0 &&
                   (v.mv_size != 4 || chp_get_le32(v.mv_data) != CHP_REC_SCHEMA_VERSION)) {
                mdb_txn_abort(txn);
                return CHP_EVERSION;
        }
        if (rc)
                goto out;
        return store_mdb_rc(mdb_txn_commit(txn));
out:
        mdb_txn_abort(txn);
        return store_mdb_rc(rc);
}

/* Sizes segments and the space reserve against the filesystem the segments live on. */
static void size_to_fs(struct chp_store *s)
{
        struct statvfs v;
        s->seg_max = s->opts.segment_size;
        s->reserve = s->opts.space_reserve == CHP_STORE_RESERVE_NONE ? 0 : s->opts.space_reserve;
        if (fstatvfs(s->segdir_fd, &v) != 0) {
                if (!s->opts.space_reserve)
                        s->reserve = RESERVE_MIN;
                return;
        }
        uint64_t fs = (uint64_t)v.f_blocks * (uint64_t)v.f_frsize;
        uint64_t cap = fs / SEG_FS_SHARE > CHP_CHUNK_MAX ? fs / SEG_FS_SHARE : CHP_CHUNK_MAX;
        if (s->seg_max > cap) {
                s->seg_max = cap;
                chp_log_info("store",
                             "segments are %llu bytes: segment_size is more than 1/%d of the "
                             "%llu-byte filesystem",
                             (unsigned long long)cap, SEG_FS_SHARE, (unsigned long long)fs);
        }
        if (!s->opts.space_reserve) {
                uint64_t r = fs / RESERVE_FS_SHARE;
                s->reserve = r < RESERVE_MIN ? RESERVE_MIN : r > RESERVE_MAX ? RESERVE_MAX : r;
        }
        uint64_t avail = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
        if (s->opts.space_reserve != CHP_STORE_RESERVE_NONE && avail < s->reserve)
                chp_log_warn("store",
                             "only %llu bytes free on the data directory's filesystem, under the "
                             "%llu kept for GC: puts fail with ENOSPC, and GC may be unable to "
                             "commit until something else frees space",
                             (unsigned long long)avail, (unsigned long long)s->reserve);
}

int chp_store_open(const struct chp_store_opts *o, struct chp_store **out)
{
        *out = NULL;
        if (o->segment_size < CHP_CHUNK_MAX || o->map_size < (1u << 20) || o->compact_ratio < 0 ||
            o->compact_ratio > 1)
                return -EINVAL;
        struct chp_store *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->opts = *o;
        s->lock_fd = -1;
        s->segdir_fd = -1;
        pthread_mutex_init(&s->q_lock, NULL);
        pthread_cond_init(&s->q_cond, NULL);
        pthread_mutex_init(&s->audit_lock, NULL);
        s->audit_refs_max = AUDIT_REFS_MAX;
        int rc;
        char path[4096];
        s->dir = strdup(o->dir);
        if (!s->dir) {
                rc = -ENOMEM;
                goto out;
        }
        s->opts.dir = s->dir;
        if ((rc = mkdir_p(s->dir)))
                goto out;
        snprintf(path, sizeof(path), "%s/index", s->dir);
        if ((rc = mkdir_p(path)))
                goto out;
        snprintf(path, sizeof(path), "%s/segments", s->dir);
        if ((rc = mkdir_p(path)))
                goto out;
        s->segdir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->segdir_fd < 0) {
                rc = -errno;
                goto out;
        }
        snprintf(path, sizeof(path), "%s/LOCK", s->dir);
        s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->lock_fd < 0) {
                rc = -errno;
                goto out;
        }
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
                rc = errno == EWOULDBLOCK ? CHP_ELOCKED : -errno;
                goto out;
        }

        if ((rc = store_mdb_rc(mdb_env_create(&s->env))))
                goto out;
        mdb_env_set_maxdbs(s->env, 24);
        mdb_env_set_maxreaders(s->env, 1024);
        if ((rc = store_mdb_rc(mdb_env_set_mapsize(s->env, (size_t)o->map_size))))
                goto out;
        unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
        if (o->sync == CHP_SYNC_NONE)
                flags |= MDB_NOSYNC | MDB_NOMETASYNC;
        snprintf(path, sizeof(path), "%s/index", s->dir);
        if ((rc = store_mdb_rc(mdb_env_open(s->env, path, flags, 0600))))
                goto out;
        int dead = 0;
        mdb_reader_check(s->env, &dead);
        if (dead)
                chp_log_info("store", "cleared %d stale reader slots", dead);
        if ((rc = open_dbs(s)))
                goto out;
        size_to_fs(s);
        struct chp_segments_opts so = {
            .dir = s->dir, .env = s->env, .sync = o->sync, .seg_max = s->seg_max};
        struct chp_backend_host host = {
            .ctx = s,
            .space_take = host_space_take,
            .out_of_space = host_out_of_space,
#ifdef CHAPAR_FAULT_INJECTION
            .fault = host_fault,
#endif
            .chunk_get = store_chunk_get,
            .chunk_moved = store_chunk_moved,
        };
        if (o->backend == CHP_STORE_RADOS) {
#ifdef CHAPAR_RADOS
                rc = chp_rados_open(o, s->env, &host, &s->backend);
#else
                rc = -ENOTSUP; /* built without librados */
#endif
        } else {
                rc = chp_segments_open(&so, &host, &s->backend);
        }
        if (rc)
                goto out;
#ifdef CHAPAR_RADOS
        if (o->backend == CHP_STORE_RADOS && o->rados_shared && (rc = shared_open(s)))
                goto out;
#endif
#ifdef CHAPAR_FAULT_INJECTION
        fault_from_env(s);
        if ((rc = store_defer_start(s)))
                goto out;
#endif
        if (pthread_create(&s->writer, NULL, store_writer_main, s) != 0) {
                rc = -EAGAIN;
                goto out;
        }
        s->writer_started = true;
        *out = s;
        return 0;
out:
        chp_store_close(s);
        return rc;
}

const double chp_store_op_buckets[CHP_STORE_OP_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};

int chp_store_backend_stats(struct chp_store *s, struct chp_store_backend_stats *out)
{
        memset(out, 0, sizeof(*out));
        if (!s->backend->ops->op_stats)
                return -ENOTSUP;
        s->backend->ops->op_stats(s->backend, out);
#ifdef CHAPAR_RADOS
        if (s->shared) { /* the records' operations: the shared state's handle */
                uint32_t now, peak, queued;
                chp_rstate_inflight(s->shared->st, &now, &peak, &queued);
                out->inflight += now;
                chp_rstate_op_stats(s->shared->st, out);
        }
#endif
        return 0;
}

void chp_store_close(struct chp_store *s)
{
        if (!s)
                return;
#ifdef CHAPAR_FAULT_INJECTION
        store_defer_stop(s); /* its reads use the backend: they end first */
#endif
#ifdef CHAPAR_RADOS
        shared_close(s); /* its requests use the backend's cluster: they end first */
#endif
        if (s->writer_started) {
                pthread_mutex_lock(&s->q_lock);
                s->stopping = true;
                pthread_cond_broadcast(&s->q_cond);
                pthread_mutex_unlock(&s->q_lock);
                pthread_join(s->writer, NULL);
        }
        if (s->backend)
                s->backend->ops->close(s->backend);
        if (s->env)
                mdb_env_close(s->env);
        if (s->segdir_fd >= 0)
                close(s->segdir_fd);
        if (s->lock_fd >= 0)
                close(s->lock_fd); /* releases the flock */
        pthread_cond_destroy(&s->q_cond);
        pthread_mutex_destroy(&s->q_lock);
        pthread_mutex_destroy(&s->audit_lock);
        free(s->dir);
        free(s);
}
