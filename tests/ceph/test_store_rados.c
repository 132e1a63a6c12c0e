/* The store over the RADOS backend (server/store/rados.c), on the throw-away cluster that
 * tests/ceph/store_rados.sh starts: chunks above inline_max become objects of the namespace "c"
 * named by their address and read back, across a commit and a reopen; the same chunk twice is
 * one object; a deleted file's chunks lose their objects; verify is clean; a second store on the
 * pool is refused, but a lock left by a crash is taken back by its directory; a directory keeps its
 * backend; an OSD that does not answer fails a put with
 * CHP_EUNAVAILABLE (counted), and puts work again once it answers; the backend counts its
 * operations; a lock lost to another holder refuses puts until it is taken back.
 * Usage: test_store_rados CONF POOL USER PIDFILE (PIDFILE: the monitor's PID, then the OSD's).
 */
#include "../harness.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <rados/librados.h>

#include "err.h"
#include "manifest.h"
#include "store.h"

#include "stopped.h"

static const char *conf, *pool, *user;
static uint32_t lock_seconds; /* the next open's lease of the pool's lock; 0: the default */
static pid_t osd;
static char dirs[4][64];

static void make_dirs(void)
{
        for (int i = 0; i < 4; i++) {
                snprintf(dirs[i], sizeof(dirs[i]), "/tmp/chapar-rados-XXXXXX");
                if (!mkdtemp(dirs[i]))
                        abort();
        }
}

static void cleanup(void)
{
        if (osd > 0)
                kill(osd, SIGCONT); /* every exit path: the OSD must not stay stopped */
        for (int i = 0; i < 4; i++) {
                char cmd[320];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dirs[i]);
                if (dirs[i][0] && system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", dirs[i]);
        }
}

static int open_in(const char *dir, enum chp_store_backend backend, uint32_t timeout,
                   struct chp_store **s)
{
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        o.map_size = (uint64_t)64 << 20;
        o.backend = backend;
        o.rados_conf = conf;
        o.rados_pool = pool;
        o.rados_user = user;
        o.rados_op_timeout = timeout;
        o.rados_inflight = 4; /* fewer than a file's chunks: put waits for room */
        o.rados_lock_seconds = lock_seconds;
        *s = NULL;
        return chp_store_open(&o, s);
}

struct chunk {
        uint8_t addr[CHP_HASH_BYTES];
        uint8_t *data;
        uint32_t len;
};

static struct chunk make_chunk(uint32_t len, uint32_t seed)
{
        struct chunk c = {.len = len, .data = malloc(len)};
        uint64_t x = 0x9e3779b97f4a7c15ULL * (seed + 1);
        for (uint32_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.data[i] = (uint8_t)x;
        }
        if (chp_sha256(c.data, len, c.addr) != 0)
                abort();
        return c;
}

static bool reads_back(struct chp_store *s, const struct chunk *c)
{
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        ssize_t n = chp_store_read(s, c->addr, buf, CHP_CHUNK_MAX);
        bool ok = n == (ssize_t)c->len && memcmp(buf, c->data, c->len) == 0;
        if (!ok)
                fprintf(stderr, "  read: %s\n", n < 0 ? chp_strerror((int)n) : "wrong bytes");
        free(buf);
        return ok;
}

/* The objects of the namespace "c", as librados lists them: count, and whether c is one. */
static int objects(const struct chunk *c, bool *has)
{
        rados_t cl;
        rados_ioctx_t io;
        rados_list_ctx_t l;
        int n = 0;
        *has = false;
        if (rados_create(&cl, user + 7) < 0)
                return -1;
        if (rados_conf_read_file(cl, conf) < 0 || rados_connect(cl) < 0 ||
            rados_ioctx_create(cl, pool, &io) < 0) {
                rados_shutdown(cl);
                return -1;
        }
        rados_ioctx_set_namespace(io, "c");
        char hex[CHP_HASH_HEXBYTES];
        if (c)
                chp_hex_encode(c->addr, CHP_HASH_BYTES, hex);
        if (rados_nobjects_list_open(io, &l) == 0) {
                const char *e;
                while (rados_nobjects_list_next(l, &e, NULL, NULL) == 0) {
                        n++;
                        if (c && strcmp(e, hex) == 0)
                                *has = true;
                }
                rados_nobjects_list_close(l);
        } else {
                n = -1;
        }
        rados_ioctx_destroy(io);
        rados_shutdown(cl);
        return n;
}

static uint64_t verify_problems(struct chp_store *s)
{
        struct chp_verify_stats st;
        int rc = chp_store_verify(s, NULL, NULL, &st);
        return rc ? 1000000 : st.problems;
}

#define CHUNK 65536

static struct chunk file_chunks[3];
static uint8_t file_id[CHP_HASH_BYTES];

TEST(put_read_commit_dedup)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[0], CHP_STORE_RADOS, 30, &s));
        struct chunk small = make_chunk(1000, 99); /* inline: stays in LMDB */
        CHECK_OK(chp_store_put(s, small.addr, small.data, small.len));
        CHECK(reads_back(s, &small));
        free(small.data);
        uint8_t addrs[3 * CHP_HASH_BYTES];
        for (int i = 0; i < 3; i++) {
                file_chunks[i] = make_chunk(i < 2 ? CHUNK : 40000, (uint32_t)i);
                CHECK_OK(
                    chp_store_put(s, file_chunks[i].addr, file_chunks[i].data, file_chunks[i].len));
                memcpy(addrs + i * CHP_HASH_BYTES, file_chunks[i].addr, CHP_HASH_BYTES);
        }
        for (int i = 0; i < 3; i++)
                CHECK(reads_back(s, &file_chunks[i]));
        struct chp_manifest m = {.version = CHP_MANIFEST_VERSION,
                                 .chunk_size = CHUNK,
                                 .total_size = 2 * CHUNK + 40000,
                                 .chunk_count = 3,
                                 .addrs = addrs};
        uint8_t mbuf[4096];
        ssize_t mlen = chp_manifest_encode(&m, mbuf, sizeof(mbuf));
        REQUIRE(mlen > 0);
        CHECK_OK(chp_store_commit(s, mbuf, (size_t)mlen, 0, file_id));
        /* the same chunk again: deduplicated, one object */
        CHECK_OK(chp_store_put(s, file_chunks[0].addr, file_chunks[0].data, file_chunks[0].len));
        bool has;
        CHECK_EQ(objects(&file_chunks[0], &has), 3);
        CHECK(has);
        struct chp_store_stats st;
        CHECK_OK(chp_store_stats(s, &st));
        CHECK_EQ(st.segment_bytes, 2 * CHUNK + 40000);
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
}

TEST(reopen_reads_then_delete_removes_objects)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[0], CHP_STORE_RADOS, 30, &s));
        for (int i = 0; i < 3; i++)
                CHECK(reads_back(s, &file_chunks[i]));
        CHECK_EQ(verify_problems(s), 0);
        struct chp_store_req del = {.type = CHP_REQ_FILE_DELETE};
        memcpy(del.u.file_delete.file_id, file_id, CHP_HASH_BYTES);
        CHECK_OK(chp_store_run(s, &del));
        uint8_t buf[16];
        CHECK(chp_store_read(s, file_chunks[1].addr, buf, sizeof(buf)) < 0);
        chp_store_close(s); /* completes the removals */
        bool has;
        CHECK_EQ(objects(&file_chunks[0], &has), 0);
        REQUIRE_OK(open_in(dirs[0], CHP_STORE_RADOS, 30, &s));
        CHECK_EQ(verify_problems(s), 0);
        chp_store_close(s);
        for (int i = 0; i < 3; i++)
                free(file_chunks[i].data);
}

TEST(one_store_per_pool)
{
        struct chp_store *a, *b;
        REQUIRE_OK(open_in(dirs[0], CHP_STORE_RADOS, 30, &a));
        CHECK_EQ(open_in(dirs[1], CHP_STORE_RADOS, 30, &b), CHP_ELOCKED);
        chp_store_close(a);
        /* released on close: the other directory may take the pool now */
        CHECK_OK(open_in(dirs[1], CHP_STORE_RADOS, 30, &b));
        chp_store_close(b);
}

/* A relay that died holding the pool's lock (30 s long): its own directory takes the pool at once,
 * another one is still refused. */
TEST(lock_left_by_a_crash)
{
        pid_t child = fork();
        REQUIRE(child >= 0);
        if (child == 0) {
                struct chp_store *s;
                _exit(open_in(dirs[1], CHP_STORE_RADOS, 30, &s) == 0 ? 0 : 1); /* no close */
        }
        int st;
        REQUIRE(waitpid(child, &st, 0) == child);
        REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        struct chp_store *s;
        CHECK_EQ(open_in(dirs[3], CHP_STORE_RADOS, 30, &s), CHP_ELOCKED);
        CHECK_OK(open_in(dirs[1], CHP_STORE_RADOS, 30, &s));
        chp_store_close(s);
}

/* Deletes the meta record of the backend dir was made with, as a store written before it had. */
static int forget_backend(const char *dir)
{
        char path[128];
        snprintf(path, sizeof(path), "%s/index", dir);
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi meta;
        int rc = mdb_env_create(&env);
        if (rc)
                return rc;
        mdb_env_set_maxdbs(env, 32);
        MDB_val k = {7, "backend"};
        if (!(rc = mdb_env_open(env, path, 0, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn))) {
                if (!(rc = mdb_dbi_open(txn, "meta", 0, &meta)) &&
                    !(rc = mdb_del(txn, meta, &k, NULL)))
                        rc = mdb_txn_commit(txn);
                else
                        mdb_txn_abort(txn);
        }
        mdb_env_close(env);
        return rc;
}

TEST(directory_keeps_its_backend)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[2], CHP_STORE_LOCAL, 30, &s));
        struct chunk c = make_chunk(CHUNK, 7);
        CHECK_OK(chp_store_put(s, c.addr, c.data, c.len));
        chp_store_close(s);
        CHECK_EQ(open_in(dirs[2], CHP_STORE_RADOS, 30, &s), -EINVAL);
        CHECK(!s);
        /* a directory from before the backend was recorded: its segment chunks say local */
        CHECK_OK(forget_backend(dirs[2]));
        CHECK_EQ(open_in(dirs[2], CHP_STORE_RADOS, 30, &s), -EINVAL);
        CHECK(!s);
        /* and a directory made with rados stays rados */
        CHECK_EQ(open_in(dirs[0], CHP_STORE_LOCAL, 30, &s), -EINVAL);
        CHECK(!s);
        free(c.data);
}

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

TEST(osd_silent_is_unavailable)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[3], CHP_STORE_RADOS, 3, &s));
        struct chunk c = make_chunk(CHUNK, 11), d = make_chunk(CHUNK, 12);
        REQUIRE(kill(osd, SIGSTOP) == 0);
        REQUIRE(ceph_wait_stopped(osd));
        double t0 = now_s();
        int rc = chp_store_put(s, c.addr, c.data, c.len);
        double took = now_s() - t0;
        kill(osd, SIGCONT);
        CHECK_EQ(rc, CHP_EUNAVAILABLE);
        struct chp_store_backend_stats bs;
        CHECK_OK(chp_store_backend_stats(s, &bs));
        CHECK(bs.errors[CHP_STORE_OP_WRITE][CHP_STORE_ERR_UNAVAILABLE] >= 1);
        fprintf(stderr, "  put with the OSD stopped failed after %.1f s\n", took);
        CHECK(took < 30); /* a bound on a hang, not a speed goal: the timeout is 3 s */
        CHECK_OK(chp_store_put(s, d.addr, d.data, d.len));
        CHECK(reads_back(s, &d));
        CHECK_OK(chp_store_put(s, c.addr, c.data, c.len));
        CHECK(reads_back(s, &c));
        chp_store_close(s);
        free(c.data);
        free(d.data);
}

/* Runs `rados -N c VERB OID [FILE]` on the pool: 0 when it succeeded. */
static int rados_cli(const char *verb, const char *oid, const char *file)
{
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "rados -c '%s' -n '%s' -p '%s' -N c %s %s %s", conf, user, pool,
                 verb, oid, file ? file : "");
        return system(cmd);
}

/* An object lost behind the relay's back is a clear error on read and a problem for verify; so
 * is an object the index does not know. */
TEST(lost_and_stray_objects)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[3], CHP_STORE_RADOS, 30, &s));
        struct chunk c = make_chunk(CHUNK, 21);
        REQUIRE_OK(chp_store_put(s, c.addr, c.data, c.len));
        CHECK_EQ(verify_problems(s), 0);
        char hex[CHP_HASH_HEXBYTES];
        chp_hex_encode(c.addr, CHP_HASH_BYTES, hex);
        REQUIRE_OK(rados_cli("rm", hex, NULL));
        uint8_t *buf = malloc(CHP_CHUNK_MAX);
        CHECK_EQ(chp_store_read(s, c.addr, buf, CHP_CHUNK_MAX), CHP_ECORRUPT);
        free(buf);
        CHECK_EQ(verify_problems(s), 1);
        REQUIRE_OK(rados_cli("put", "stray", "/dev/null"));
        CHECK_EQ(verify_problems(s), 2);
        CHECK_OK(rados_cli("rm", "stray", NULL));
        chp_store_close(s);
        free(c.data);
}

/* The backend counts its operations by kind, with their latencies, and what is in flight. */
TEST(op_stats)
{
        struct chp_store *s;
        REQUIRE_OK(open_in(dirs[3], CHP_STORE_RADOS, 30, &s));
        struct chunk c = make_chunk(CHUNK, 31);
        struct chp_store_backend_stats bs;
        REQUIRE_OK(chp_store_backend_stats(s, &bs));
        CHECK(strcmp(bs.backend, "rados") == 0);
        uint64_t writes = bs.op_count[CHP_STORE_OP_WRITE], reads = bs.op_count[CHP_STORE_OP_READ];
        CHECK_OK(chp_store_put(s, c.addr, c.data, c.len));
        CHECK(reads_back(s, &c));
        CHECK_OK(chp_store_backend_stats(s, &bs));
        CHECK_EQ(bs.op_count[CHP_STORE_OP_WRITE], writes + 1);
        CHECK_EQ(bs.op_count[CHP_STORE_OP_READ], reads + 1);
        CHECK(bs.op_le[CHP_STORE_OP_WRITE][CHP_STORE_OP_BUCKETS - 1] <= writes + 1);
        CHECK(bs.op_sum_us[CHP_STORE_OP_WRITE] > 0);
        CHECK_EQ(bs.inflight, 0);
        CHECK(!bs.lock_lost);
        chp_store_close(s);
        free(c.data);
}

/* The pool's lock through librados, as another relay would see it. */
static int lock_admin(rados_t *cl, rados_ioctx_t *io)
{
        if (rados_create(cl, user + 7) < 0)
                return -1;
        if (rados_conf_read_file(*cl, conf) < 0 || rados_connect(*cl) < 0 ||
            rados_ioctx_create(*cl, pool, io) < 0) {
                rados_shutdown(*cl);
                return -1;
        }
        rados_ioctx_set_namespace(*io, "i");
        return 0;
}

/* Polls the backend's counters (an event the test cannot be told of) until lock_lost is want. */
static bool lock_lost_becomes(struct chp_store *s, bool want)
{
        for (int i = 0; i < 600; i++) {
                struct chp_store_backend_stats bs;
                if (chp_store_backend_stats(s, &bs) == 0 && bs.lock_lost == want)
                        return true;
                usleep(100 * 1000);
        }
        return false;
}

/* Another holder broke the relay's lock and took the pool: once the lease has lapsed the relay
 * refuses writes (CHP_EUNAVAILABLE, counted), and takes the lock back once it is free. */
TEST(lost_lock_refuses_writes)
{
        struct chp_store *s;
        lock_seconds = 3;
        int rc = open_in(dirs[3], CHP_STORE_RADOS, 30, &s);
        lock_seconds = 0;
        REQUIRE_OK(rc);
        struct chunk c = make_chunk(CHUNK, 41), d = make_chunk(CHUNK, 42);
        rados_t cl;
        rados_ioctx_t io;
        REQUIRE(lock_admin(&cl, &io) == 0);
        int exclusive;
        char tag[256], clients[1024], cookies[1024], addrs[1024];
        size_t tl = sizeof(tag), ncl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
        REQUIRE(rados_list_lockers(io, "owner", "chapar", &exclusive, tag, &tl, clients, &ncl,
                                   cookies, &kl, addrs, &al) == 1);
        REQUIRE_OK(rados_break_lock(io, "owner", "chapar", clients, cookies));
        REQUIRE_OK(rados_lock_exclusive(io, "owner", "chapar", "another-relay", "test", NULL, 0));
        CHECK(lock_lost_becomes(s, true));
        CHECK_EQ(chp_store_put(s, c.addr, c.data, c.len), CHP_EUNAVAILABLE);
        struct chp_store_backend_stats bs;
        CHECK_OK(chp_store_backend_stats(s, &bs));
        CHECK(bs.errors[CHP_STORE_OP_WRITE][CHP_STORE_ERR_LOCK] >= 1);
        CHECK(bs.lock_renewals_failed >= 1);
        CHECK_OK(rados_unlock(io, "owner", "chapar", "another-relay"));
        CHECK(lock_lost_becomes(s, false));
        CHECK_OK(chp_store_put(s, d.addr, d.data, d.len));
        CHECK(reads_back(s, &d));
        /* the relay holds the lock again, with its own cookie */
        tl = sizeof(tag), ncl = sizeof(clients), kl = sizeof(cookies), al = sizeof(addrs);
        CHECK_EQ(rados_list_lockers(io, "owner", "chapar", &exclusive, tag, &tl, clients, &ncl,
                                    cookies, &kl, addrs, &al),
                 1);
        CHECK(strcmp(cookies, "another-relay") != 0);
        rados_ioctx_destroy(io);
        rados_shutdown(cl);
        chp_store_close(s);
        free(c.data);
        free(d.data);
}

int main(int argc, char **argv)
{
        if (argc != 5) {
                fprintf(stderr, "usage: %s CONF POOL USER PIDFILE\n", argv[0]);
                return 2;
        }
        conf = argv[1];
        pool = argv[2];
        user = argv[3];
        if (strncmp(user, "client.", 7) != 0)
                return 2;
        FILE *f = fopen(argv[4], "r");
        long mon = 0, o = 0;
        if (!f || fscanf(f, "%ld %ld", &mon, &o) != 2 || o <= 0) {
                fprintf(stderr, "cannot read the OSD's PID from %s\n", argv[4]);
                return 2;
        }
        fclose(f);
        osd = (pid_t)o;
        make_dirs();
        atexit(cleanup);
        int passed, failed = harness_run(&passed);
        return harness_report(passed, failed);
}
