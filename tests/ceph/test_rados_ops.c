/* test_rados_ops.c — the librados facts docs/scale-out.md rests on, pinned against a real OSD.
 *
 * Usage: test_rados_ops CONF POOL USER OSD_PID (tests/rados_ops.sh starts the cluster and stops
 * it). Each TEST is one fact: the operation the RADOS backend will send (a compound write op
 * through rados_aio_write_op_operate, its completion from rados_aio_create_completion2 with a
 * callback; the synchronous calls where only the answer matters) and the exact code it completes
 * with. Each pinned fact is printed as one "fact: ..." line. The last test stops the OSD
 * (SIGSTOP to OSD_PID, which must be one of this cluster's ceph-osd processes) and continues it
 * on every path out of this program that runs code; the wrapper's EXIT trap continues it too.
 * Every wait is bounded: an operation that never completes ends the program with a message.
 */
#include "../harness.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "stopped.h"

#include <rados/librados.h>

/* How long any one operation may take before the program gives up on it (not a pass/fail
 * timing: a hang guard). */
#define OP_WAIT_S 60

/* The lease of the lock test, and how long it may take another cookie to get the lock after it. */
#define LEASE_S    2
#define LAPSE_WAIT 20

/* rados_osd_op_timeout of the OSD-stop test, as librados reads it. */
#define OP_TIMEOUT "2"

static const char *conf, *pool, *user;
static pid_t osd_pid;
static rados_t cl;
static rados_ioctx_t io;
static volatile sig_atomic_t osd_stopped;

/* The guard values of the cmpxattr tests: 16 hex digits, as the design's leases. */
static const char E10[] = "0000000000000010";
static const char E20[] = "0000000000000020";
#define ELEN (sizeof E10 - 1)

/* ---- completions with a callback, waited for with a bound ---- */

struct done {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool fired;
        pthread_t thread; /* the thread the callback ran on */
};

static void done_init(struct done *d)
{
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_mutex_init(&d->mu, NULL);
        pthread_cond_init(&d->cv, &a);
        pthread_condattr_destroy(&a);
        d->fired = false;
}

static void done_destroy(struct done *d)
{
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
}

/* cb_complete of rados_aio_create_completion2: runs on a librados thread. */
static void on_complete(rados_completion_t c, void *arg)
{
        (void)c;
        struct done *d = arg;
        pthread_mutex_lock(&d->mu);
        d->fired = true;
        d->thread = pthread_self();
        pthread_cond_signal(&d->cv);
        pthread_mutex_unlock(&d->mu);
}

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits for the callback at most secs; a completion that never comes ends the program (its
 * buffers are still librados's, so nothing can be released). */
static void done_wait(struct done *d, int secs, const char *what)
{
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        end.tv_sec += secs;
        pthread_mutex_lock(&d->mu);
        int rc = 0;
        while (!d->fired && rc != ETIMEDOUT)
                rc = pthread_cond_timedwait(&d->cv, &d->mu, &end);
        bool fired = d->fired;
        pthread_mutex_unlock(&d->mu);
        if (!fired) {
                fprintf(stderr, "test_rados_ops: %s: no completion in %d s\n", what, secs);
                exit(1);
        }
}

/* One asynchronous operation: its completion, what it reported. */
struct aio {
        struct done d;
        rados_completion_t c;
};

static void aio_start(struct aio *a)
{
        done_init(&a->d);
        if (rados_aio_create_completion2(&a->d, on_complete, &a->c) != 0) {
                fprintf(stderr, "test_rados_ops: rados_aio_create_completion2 failed\n");
                exit(1);
        }
}

/* Waits for a started operation; its return value, its version in *version when given. */
static int aio_finish(struct aio *a, int secs, const char *what, uint64_t *version)
{
        done_wait(&a->d, secs, what);
        int rc = rados_aio_get_return_value(a->c);
        if (version)
                *version = rados_aio_get_version(a->c);
        rados_aio_release(a->c);
        done_destroy(&a->d);
        return rc;
}

/* After the call that started the operation returned started: the operation's code (waited for),
 * or started's when it did not start. */
static int aio_end(struct aio *a, int started, const char *what, uint64_t *version)
{
        if (started == 0)
                return aio_finish(a, OP_WAIT_S, what, version);
        rados_aio_release(a->c);
        done_destroy(&a->d);
        return started;
}

/* Runs a compound write op on oid in ioctx x the way the backend will; releases op. */
static int wop_in(rados_ioctx_t x, rados_write_op_t op, const char *oid, uint64_t *version)
{
        struct aio a;
        aio_start(&a);
        int rc = rados_aio_write_op_operate(op, x, a.c, oid, NULL, LIBRADOS_OPERATION_NOFLAG);
        rc = aio_end(&a, rc, oid, version);
        rados_release_write_op(op);
        return rc;
}

static int wop(rados_write_op_t op, const char *oid, uint64_t *version)
{
        return wop_in(io, op, oid, version);
}

/* The same for a read op. */
static int rop(rados_read_op_t op, const char *oid, uint64_t *version)
{
        struct aio a;
        aio_start(&a);
        int rc = rados_aio_read_op_operate(op, io, a.c, oid, LIBRADOS_OPERATION_NOFLAG);
        rc = aio_end(&a, rc, oid, version);
        rados_release_read_op(op);
        return rc;
}

/* An object with xattr name = value (made if missing, not exclusive). */
static int put_xattr(const char *oid, const char *name, const char *value, size_t len)
{
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_create(op, 0, NULL);
        rados_write_op_setxattr(op, name, value, len);
        return wop(op, oid, NULL);
}

/* Sends cmpxattr(name, cmp, value) followed by setxattr(mark, "1") on oid: the op's code. */
static int guarded_mark(const char *oid, const char *name, uint8_t cmp, const char *value,
                        size_t len, const char *mark)
{
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_cmpxattr(op, name, cmp, value, len);
        rados_write_op_setxattr(op, mark, "1", 1);
        return wop(op, oid, NULL);
}

/* Whether oid has xattr name (stored with any value, also an empty one). */
static bool has_xattr(const char *oid, const char *name)
{
        char buf[64];
        return rados_getxattr(io, oid, name, buf, sizeof buf) >= 0;
}

static bool exists(const char *oid)
{
        uint64_t size;
        time_t mtime;
        return rados_stat(io, oid, &size, &mtime) == 0;
}

/* A connected cluster handle as the user, with extra conf keys (NULL-terminated pairs) set
 * before the connection; NULL on failure (printed). */
static rados_t connect_as(const char *const *kv)
{
        rados_t c;
        int rc = rados_create2(&c, "ceph", user, 0);
        if (rc < 0) {
                fprintf(stderr, "  rados_create2(%s): %d\n", user, rc);
                return NULL;
        }
        rc = rados_conf_read_file(c, conf);
        for (; rc == 0 && kv && kv[0]; kv += 2)
                rc = rados_conf_set(c, kv[0], kv[1]);
        if (rc == 0)
                rc = rados_conf_set(c, "client_mount_timeout", "30");
        if (rc == 0)
                rc = rados_connect(c);
        if (rc < 0) {
                fprintf(stderr, "  connecting to %s: %d\n", conf, rc);
                rados_shutdown(c);
                return NULL;
        }
        return c;
}

/* A second client (another relay) with its I/O context on the pool in *x; NULL on failure. Undone
 * by disconnect(). */
static rados_t connect_io(const char *const *kv, rados_ioctx_t *x)
{
        rados_t c = connect_as(kv);
        if (c && rados_ioctx_create(c, pool, x) < 0) {
                fprintf(stderr, "  rados_ioctx_create(%s) failed\n", pool);
                rados_shutdown(c);
                c = NULL;
        }
        return c;
}

static void disconnect(rados_t c, rados_ioctx_t x)
{
        rados_ioctx_destroy(x);
        rados_shutdown(c);
}

/* ---- the facts ---- */

/* The driver's completion path: cb_complete runs once per operation, on a librados thread (not
 * the caller's), and the return value is readable once it ran. */
TEST(completion_callback_runs_on_a_librados_thread)
{
        struct aio a;
        aio_start(&a);
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_write_full(op, "x", 1);
        REQUIRE_OK(rados_aio_write_op_operate(op, io, a.c, "cb", NULL, LIBRADOS_OPERATION_NOFLAG));
        done_wait(&a.d, OP_WAIT_S, "cb");
        CHECK(!pthread_equal(a.d.thread, pthread_self()));
        CHECK(rados_aio_is_complete(a.c));
        CHECK_OK(aio_finish(&a, 0, "cb", NULL));
        rados_release_write_op(op);
        printf("fact: cb_complete of rados_aio_create_completion2 runs on a librados thread\n");
}

/* Which of GT and LT passes with stored "…10" and given "…20". Given OP stored: GT passes
 * (20 > 10); stored OP given: LT passes (10 < 20). The design's tables are written for the
 * first. The failing one completes with exactly -ECANCELED and its setxattr did not happen. */
TEST(cmpxattr_compares_given_op_stored)
{
        REQUIRE_OK(put_xattr("dir", "e", E10, ELEN));
        int gt = guarded_mark("dir", "e", LIBRADOS_CMPXATTR_OP_GT, E20, ELEN, "gt");
        int lt = guarded_mark("dir", "e", LIBRADOS_CMPXATTR_OP_LT, E20, ELEN, "lt");
        printf("  stored e=%s, given %s: GT -> %d, LT -> %d\n", E10, E20, gt, lt);
        if (gt == 0 && lt == -ECANCELED)
                printf("fact: cmpxattr compares given OP stored (GT passes when given > stored)\n");
        else if (lt == 0 && gt == -ECANCELED)
                printf("fact: cmpxattr compares stored OP given (LT passes when given > stored)\n");
        CHECK_EQ(gt, 0);
        CHECK_EQ(lt, -ECANCELED);
        CHECK(has_xattr("dir", "gt"));
        CHECK(!has_xattr("dir", "lt"));
        /* equal values: neither strict comparison passes, EQ does */
        CHECK_EQ(guarded_mark("dir", "e", LIBRADOS_CMPXATTR_OP_GT, E10, ELEN, "gt2"), -ECANCELED);
        CHECK_EQ(guarded_mark("dir", "e", LIBRADOS_CMPXATTR_OP_EQ, E10, ELEN, "eq"), 0);
        /* the comparison is of byte strings: "9" > "10" */
        REQUIRE_OK(put_xattr("dir", "s", "10", 2));
        CHECK_EQ(guarded_mark("dir", "s", LIBRADOS_CMPXATTR_OP_GT, "9", 1, "str"), 0);
        printf("fact: cmpxattr compares byte strings (given \"9\" GT stored \"10\" passes)\n");
}

/* A failed guard anywhere in a compound op, even after the writes, leaves the object as it was
 * (data, xattrs, omap, version) and completes the op with exactly -ECANCELED. */
TEST(failed_guard_cancels_the_whole_op)
{
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_write_full(op, "old", 3);
        rados_write_op_setxattr(op, "e", E10, ELEN);
        uint64_t v0 = 0, v1 = 0;
        REQUIRE_OK(wop(op, "cancel", &v0));

        op = rados_create_write_op();
        const char *k = "key", *val = "v";
        size_t vlen = 1;
        rados_write_op_setxattr(op, "x", "1", 1);
        rados_write_op_write_full(op, "new", 3);
        rados_write_op_omap_set(op, &k, &val, &vlen, 1);
        rados_write_op_cmpxattr(op, "e", LIBRADOS_CMPXATTR_OP_EQ, E20, ELEN);
        int rc = wop(op, "cancel", NULL);
        printf("  setxattr, write_full, omap_set, then a failing cmpxattr: %d\n", rc);
        CHECK_EQ(rc, -ECANCELED);
        char buf[8] = {0};
        CHECK_EQ(rados_read(io, "cancel", buf, sizeof buf, 0), 3);
        CHECK(memcmp(buf, "old", 3) == 0);
        CHECK(!has_xattr("cancel", "x"));

        rados_read_op_t r = rados_create_read_op();
        rados_omap_iter_t it = NULL;
        unsigned char more = 1;
        int prval = 1;
        rados_read_op_omap_get_vals2(r, "", "", 10, &it, &more, &prval);
        CHECK_OK(rop(r, "cancel", &v1));
        CHECK_EQ(prval, 0);
        if (it) {
                CHECK_EQ(rados_omap_iter_size(it), 0);
                rados_omap_get_end(it);
        }
        CHECK_EQ(v1, v0);
        printf("fact: a failed cmpxattr cancels the whole compound op (nothing of it applied) "
               "with -ECANCELED (%d)\n",
               -ECANCELED);
}

/* A missing xattr compares as the empty string; so does one set to "" (the quarantine's
 * setxattr(e, "")). */
TEST(missing_xattr_compares_as_empty)
{
        REQUIRE_OK(put_xattr("miss", "other", "1", 1));
        CHECK_EQ(guarded_mark("miss", "m", LIBRADOS_CMPXATTR_OP_EQ, "", 0, "eq"), 0);
        CHECK_EQ(guarded_mark("miss", "m", LIBRADOS_CMPXATTR_OP_GT, E10, ELEN, "gt"), 0);
        CHECK_EQ(guarded_mark("miss", "m", LIBRADOS_CMPXATTR_OP_EQ, "x", 1, "eqx"), -ECANCELED);
        CHECK_EQ(guarded_mark("miss", "m", LIBRADOS_CMPXATTR_OP_LT, E10, ELEN, "lt"), -ECANCELED);
        CHECK_EQ(guarded_mark("miss", "m", LIBRADOS_CMPXATTR_OP_NE, "", 0, "ne"), -ECANCELED);
        CHECK(has_xattr("miss", "eq") && has_xattr("miss", "gt"));
        CHECK(!has_xattr("miss", "eqx") && !has_xattr("miss", "lt") && !has_xattr("miss", "ne"));
        printf("fact: a missing xattr compares as \"\" (EQ \"\" passes, GT \"%s\" passes, "
               "NE \"\" fails)\n",
               E10);

        REQUIRE_OK(put_xattr("miss", "q", "", 0));
        CHECK(has_xattr("miss", "q"));
        CHECK_EQ(guarded_mark("miss", "q", LIBRADOS_CMPXATTR_OP_EQ, "", 0, "qeq"), 0);
        CHECK_EQ(guarded_mark("miss", "q", LIBRADOS_CMPXATTR_OP_NE, "", 0, "qne"), -ECANCELED);
        printf("fact: an xattr set to \"\" is stored and compares as \"\", like a missing one\n");
}

/* A cmpxattr guard on an object that does not exist: the op fails, and does not create the
 * object (file extend, upload complete and pending swap rely on it). */
TEST(cmpxattr_on_a_missing_object_fails)
{
        int eq = guarded_mark("none1", "e", LIBRADOS_CMPXATTR_OP_EQ, "", 0, "mark");
        CHECK_EQ(eq, -ENOENT);
        CHECK(!exists("none1"));
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_cmpxattr(op, "e", LIBRADOS_CMPXATTR_OP_GT, E20, ELEN);
        rados_write_op_remove(op);
        int rm = wop(op, "none2", NULL);
        CHECK_EQ(rm, -ENOENT);
        printf("fact: cmpxattr on a missing object fails with -ENOENT (%d) and creates nothing "
               "(EQ \"\" + setxattr: %d, GT + remove: %d)\n",
               -ENOENT, eq, rm);
}

/* An exclusive create with write_full and setxattr is one operation: both land, or, on an object
 * that exists, none does and the op completes with -EEXIST. A non-exclusive create on an existing
 * object passes (the quarantine's). */
TEST(exclusive_create)
{
        char bytes[65536], back[65536 + 1];
        for (size_t i = 0; i < sizeof bytes; i++)
                bytes[i] = (char)(i * 131 + 7);
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(op, bytes, sizeof bytes);
        rados_write_op_setxattr(op, "h", "hash1", 5);
        REQUIRE_OK(wop(op, "excl", NULL));
        CHECK_EQ(rados_read(io, "excl", back, sizeof back, 0), sizeof bytes);
        CHECK(memcmp(back, bytes, sizeof bytes) == 0);
        char h[8] = {0};
        CHECK_EQ(rados_getxattr(io, "excl", "h", h, sizeof h), 5);
        CHECK(memcmp(h, "hash1", 5) == 0);

        op = rados_create_write_op();
        rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        rados_write_op_write_full(op, "other", 5);
        rados_write_op_setxattr(op, "h", "hash2", 5);
        int rc = wop(op, "excl", NULL);
        CHECK_EQ(rc, -EEXIST);
        CHECK_EQ(rados_read(io, "excl", back, sizeof back, 0), sizeof bytes);
        CHECK(memcmp(back, bytes, sizeof bytes) == 0);
        CHECK_EQ(rados_getxattr(io, "excl", "h", h, sizeof h), 5);
        CHECK(memcmp(h, "hash1", 5) == 0);
        printf("fact: create(exclusive) on an existing object fails with -EEXIST (%d), its "
               "write_full and setxattr not applied\n",
               rc);

        op = rados_create_write_op();
        rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
        rados_write_op_setxattr(op, "q", "1", 1);
        CHECK_OK(wop(op, "excl", NULL));
        printf("fact: create(not exclusive) on an existing object passes\n");
}

/* What a second relay sees of objects made by create(exclusive) + write_full while it reads them:
 * each read finds no object or all its bytes, never an object without them. The creates and the
 * reads of NSEEN objects are all in flight at once, from two clients. */
#define NSEEN    200
#define SEEN_LEN 4096
TEST(create_and_write_full_are_seen_together)
{
        rados_ioctx_t io2;
        rados_t cl2 = connect_io(NULL, &io2);
        REQUIRE(cl2);
        static char bytes[SEEN_LEN], back[NSEEN][SEEN_LEN + 1];
        static struct aio w[NSEEN], r[NSEEN];
        rados_write_op_t ops[NSEEN];
        char oid[NSEEN][16];
        memset(bytes, 'b', sizeof bytes);
        int sw = 0, sr = 0;
        for (int i = 0; i < NSEEN; i++) {
                snprintf(oid[i], sizeof oid[i], "seen%d", i);
                aio_start(&w[i]);
                aio_start(&r[i]);
                ops[i] = rados_create_write_op();
                rados_write_op_create(ops[i], LIBRADOS_CREATE_EXCLUSIVE, NULL);
                rados_write_op_write_full(ops[i], bytes, sizeof bytes);
                sw |= rados_aio_write_op_operate(ops[i], io, w[i].c, oid[i], NULL,
                                                 LIBRADOS_OPERATION_NOFLAG);
                sr |= rados_aio_read(io2, oid[i], r[i].c, back[i], sizeof back[i], 0);
        }
        REQUIRE(sw == 0 && sr == 0);
        int found = 0, missing = 0, partial = 0;
        for (int i = 0; i < NSEEN; i++) {
                CHECK_OK(aio_finish(&w[i], OP_WAIT_S, oid[i], NULL));
                rados_release_write_op(ops[i]);
                int rc = aio_finish(&r[i], OP_WAIT_S, oid[i], NULL);
                if (rc == -ENOENT)
                        missing++;
                else if (rc == SEEN_LEN && memcmp(back[i], bytes, SEEN_LEN) == 0)
                        found++;
                else
                        partial++, fprintf(stderr, "  %s: read %d\n", oid[i], rc);
        }
        printf("  reads racing the creates: %d found all bytes, %d no object, %d anything else\n",
               found, missing, partial);
        CHECK_EQ(partial, 0);
        CHECK_EQ(found + missing, NSEEN);
        printf("fact: create(exclusive) + write_full is seen whole or not at all by another "
               "client's racing reads\n");
        disconnect(cl2, io2);
}

/* assert_exists on a missing object: -ENOENT, and the op's other writes do not create it. */
TEST(assert_exists_on_a_missing_object)
{
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_assert_exists(op);
        rados_write_op_setxattr(op, "e", E10, ELEN);
        int rc = wop(op, "absent", NULL);
        CHECK_EQ(rc, -ENOENT);
        CHECK(!exists("absent"));
        REQUIRE_OK(put_xattr("present", "e", E10, ELEN));
        op = rados_create_write_op();
        rados_write_op_assert_exists(op);
        rados_write_op_setxattr(op, "f", E10, ELEN);
        CHECK_OK(wop(op, "present", NULL));
        printf("fact: assert_exists on a missing object fails with -ENOENT (%d), nothing created\n",
               rc);
}

/* The version a completion reports, and assert_version's codes. Every write, an omap_set alone
 * too, moves the version (the audit's guard rests on it); a read op's completion reports it. */
TEST(assert_version)
{
        uint64_t v1 = 0, v2, vr = 0, v3 = 0, v4 = 0;
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_write_full(op, "one", 3);
        REQUIRE_OK(wop(op, "ver", &v1));
        REQUIRE_OK(rados_write_full(io, "ver", "two", 3));
        v2 = rados_get_last_version(io);
        printf("  versions: aio write op %" PRIu64 ", then rados_write_full %" PRIu64 "\n", v1, v2);
        CHECK(v1 > 0);
        CHECK(v2 > v1);

        char buf[4];
        size_t got = 0;
        int prval = 1;
        rados_read_op_t r = rados_create_read_op();
        rados_read_op_read(r, 0, sizeof buf, buf, &got, &prval);
        CHECK_OK(rop(r, "ver", &vr));
        CHECK_EQ(vr, v2);

        op = rados_create_write_op();
        rados_write_op_assert_version(op, v1);
        rados_write_op_setxattr(op, "old", "1", 1);
        int older = wop(op, "ver", NULL);
        op = rados_create_write_op();
        rados_write_op_assert_version(op, v2 + 1);
        rados_write_op_setxattr(op, "new", "1", 1);
        int newer = wop(op, "ver", NULL);
        CHECK_EQ(older, -ERANGE);
        CHECK_EQ(newer, -EOVERFLOW);
        CHECK(!has_xattr("ver", "old") && !has_xattr("ver", "new"));
        printf("fact: assert_version(v) fails with -ERANGE (%d) when the object is newer than v, "
               "-EOVERFLOW (%d) when older\n",
               older, newer);

        op = rados_create_write_op();
        rados_write_op_assert_version(op, v2);
        rados_write_op_setxattr(op, "cur", "1", 1);
        CHECK_OK(wop(op, "ver", &v3));
        CHECK(v3 > v2);
        const char *k = "k", *val = "v";
        size_t vlen = 1;
        op = rados_create_write_op();
        rados_write_op_omap_set(op, &k, &val, &vlen, 1);
        CHECK_OK(wop(op, "ver", &v4));
        CHECK(v4 > v3);
        op = rados_create_write_op();
        rados_write_op_assert_version(op, v3);
        CHECK_EQ(wop(op, "ver", NULL), -ERANGE);
        printf("fact: assert_version with the current version passes; every write, an omap_set "
               "alone too, moves the version; a read op's completion reports it\n");
}

/* One omap key/value as the iterator gave it. */
struct kv {
        char key[16];
        char val[16];
        size_t vlen;
};

/* Reads up to max keys after start_after: how many (into out[]), *more; -1 on failure. */
static int omap_read(const char *oid, const char *start_after, uint64_t max, struct kv *out,
                     int cap, unsigned char *more)
{
        rados_read_op_t r = rados_create_read_op();
        rados_omap_iter_t it = NULL;
        int prval = 1, n = 0;
        *more = 2;
        rados_read_op_omap_get_vals2(r, start_after, "", max, &it, more, &prval);
        if (rop(r, oid, NULL) != 0 || prval != 0 || !it)
                return -1;
        for (;;) {
                char *k, *v;
                size_t kl, vl;
                if (rados_omap_get_next2(it, &k, &v, &kl, &vl) != 0 || !k)
                        break;
                if (n < cap && kl < sizeof out[n].key && vl <= sizeof out[n].val) {
                        memcpy(out[n].key, k, kl);
                        out[n].key[kl] = 0;
                        memcpy(out[n].val, v, vl);
                        out[n].vlen = vl;
                }
                n++;
        }
        rados_omap_get_end(it);
        return n;
}

/* omap_set, then the keys back in ascending byte order with their (binary) values, paged by
 * max_return and start_after; omap_rm_keys, also of a key that is not there. */
TEST(omap_set_get_rm)
{
        const char *keys[3] = {"u02", "f01", "u01"};
        const char *vals[3] = {"\0\1\2\3\4\5\6\7c", "\377\0a", "b"};
        size_t klens[3] = {3, 3, 3}, vlens[3] = {9, 3, 1};
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_omap_set2(op, keys, vals, klens, vlens, 3);
        REQUIRE_OK(wop(op, "omap", NULL));

        struct kv got[8];
        unsigned char more;
        int n = omap_read("omap", "", 100, got, 8, &more);
        REQUIRE(n == 3);
        CHECK(!strcmp(got[0].key, "f01") && !strcmp(got[1].key, "u01") &&
              !strcmp(got[2].key, "u02"));
        CHECK(got[0].vlen == 3 && memcmp(got[0].val, vals[1], 3) == 0);
        CHECK(got[1].vlen == 1 && memcmp(got[1].val, "b", 1) == 0);
        CHECK(got[2].vlen == 9 && memcmp(got[2].val, vals[0], 9) == 0);
        CHECK_EQ(more, 0);

        n = omap_read("omap", "", 2, got, 8, &more);
        CHECK_EQ(n, 2);
        CHECK_EQ(more, 1);
        n = omap_read("omap", "u01", 100, got, 8, &more);
        CHECK(n == 1 && !strcmp(got[0].key, "u02"));
        CHECK_EQ(more, 0);

        const char *rm[2] = {"u01", "nosuch"};
        op = rados_create_write_op();
        rados_write_op_omap_rm_keys(op, rm, 2);
        CHECK_OK(wop(op, "omap", NULL));
        n = omap_read("omap", "", 100, got, 8, &more);
        CHECK(n == 2 && !strcmp(got[0].key, "f01") && !strcmp(got[1].key, "u02"));
        printf("fact: omap_get_vals2 returns keys in ascending byte order with binary values, "
               "pages by max_return/start_after with pmore; omap_rm_keys of a missing key "
               "passes\n");
}

/* The GC lock: -EBUSY for another relay, -EEXIST for the holder re-locking without a renew
 * flag, MUST_RENEW renews while held; after the lease lapses another relay takes it and the
 * first one's MUST_RENEW fails. */
TEST(lock_lease)
{
        rados_ioctx_t io2;
        rados_t cl2 = connect_io(NULL, &io2);
        REQUIRE(cl2);
        struct timeval lease = {.tv_sec = LEASE_S, .tv_usec = 0};
        CHECK_OK(rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease, 0));
        int busy = rados_lock_exclusive(io2, "gc", "gc", "B", "relay B", &lease, 0);
        CHECK_EQ(busy, -EBUSY);
        int again = rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease, 0);
        CHECK_EQ(again, -EEXIST);
        CHECK_OK(rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease,
                                      LIBRADOS_LOCK_FLAG_MUST_RENEW));
        int never = rados_lock_exclusive(io2, "gc", "gc", "B", "relay B", &lease,
                                         LIBRADOS_LOCK_FLAG_MUST_RENEW);
        CHECK_EQ(never, -ENOENT);
        printf("fact: rados_lock_exclusive: another (client, cookie) gets -EBUSY (%d), the holder "
               "re-locking without a renew flag -EEXIST (%d), MUST_RENEW renews while held and "
               "fails with -ENOENT (%d) for a lock not held\n",
               busy, again, never);

        /* the lease lapses: B gets the lock (polled every 100 ms, at most LAPSE_WAIT s) */
        double t0 = now_s();
        int b = -EBUSY;
        while (b == -EBUSY && now_s() - t0 < LAPSE_WAIT) {
                usleep(100 * 1000);
                b = rados_lock_exclusive(io2, "gc", "gc", "B", "relay B", &lease, 0);
        }
        CHECK_EQ(b, 0);
        printf("  B got the lock %.1f s after A's renewal (lease %d s)\n", now_s() - t0, LEASE_S);
        int renew = rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease,
                                         LIBRADOS_LOCK_FLAG_MUST_RENEW);
        CHECK_EQ(renew, -ENOENT);
        int unlock = rados_unlock(io, "gc", "gc", "A");
        CHECK_EQ(unlock, -ENOENT);
        CHECK_EQ(rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease, 0), -EBUSY);
        CHECK_OK(rados_unlock(io2, "gc", "gc", "B"));
        CHECK_OK(rados_lock_exclusive(io, "gc", "gc", "A", "relay A", &lease, 0));
        CHECK_OK(rados_unlock(io, "gc", "gc", "A"));
        printf("fact: after the lease lapses another cookie takes the lock; the old holder's "
               "MUST_RENEW fails with -ENOENT (%d), its unlock with -ENOENT (%d)\n",
               renew, unlock);
        disconnect(cl2, io2);
}

/* Removing or reading what is not there; write_full and read back byte for byte. */
TEST(remove_write_read)
{
        int rm = rados_remove(io, "nothing");
        CHECK_EQ(rm, -ENOENT);

        size_t n = 1 << 20;
        char *bytes = malloc(n), *back = malloc(n + 1);
        REQUIRE(bytes && back);
        for (size_t i = 0; i < n; i++)
                bytes[i] = (char)((i * 2654435761u) >> 13);
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_write_full(op, bytes, n);
        CHECK_OK(wop(op, "big", NULL));
        struct aio a;
        aio_start(&a);
        CHECK_OK(rados_aio_read(io, "big", a.c, back, n + 1, 0));
        CHECK_EQ(aio_finish(&a, OP_WAIT_S, "big", NULL), (long long)n);
        CHECK(memcmp(back, bytes, n) == 0);

        aio_start(&a);
        CHECK_OK(rados_aio_read(io, "nothing", a.c, back, n, 0));
        int rd = aio_finish(&a, OP_WAIT_S, "nothing", NULL);
        CHECK_EQ(rd, -ENOENT);
        free(bytes);
        free(back);
        printf("fact: rados_remove and rados_aio_read of a missing object fail with -ENOENT "
               "(%d, %d); rados_aio_read returns the bytes read\n",
               rm, rd);
}

/* The OSD is continued by whoever ends this program first. */
static void continue_osd(void)
{
        if (osd_stopped && kill(osd_pid, SIGCONT) == 0)
                osd_stopped = 0;
}

static void on_signal(int sig)
{
        continue_osd();
        signal(sig, SIG_DFL);
        raise(sig);
}

/* Whether pid is a ceph-osd of the cluster whose conf we were given. */
static bool is_our_osd(pid_t pid)
{
        char path[64], cmd[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        size_t n = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
                if (!cmd[i])
                        cmd[i] = ' ';
        cmd[n] = 0;
        return strstr(cmd, "ceph-osd") && strstr(cmd, conf);
}

/* With rados_osd_op_timeout set before connecting, an operation against a stopped OSD completes
 * with -ETIMEDOUT instead of waiting for it. Run last: the OSD is stopped meanwhile. */
TEST(osd_op_timeout_against_a_stopped_osd)
{
        REQUIRE(is_our_osd(osd_pid));
        const char *kv[] = {"rados_osd_op_timeout", OP_TIMEOUT, NULL};
        rados_ioctx_t io3;
        rados_t cl3 = connect_io(kv, &io3);
        REQUIRE(cl3);
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_write_full(op, "before", 6);
        int first = wop_in(io3, op, "stall", NULL);
        CHECK_OK(first);

        int w = 1, r = 1;
        double took = -1;
        char buf[16];
        if (first == 0 && kill(osd_pid, SIGSTOP) == 0) {
                osd_stopped = 1;
                REQUIRE(ceph_wait_stopped(osd_pid));
                double t0 = now_s();
                struct aio aw, ar;
                aio_start(&aw);
                aio_start(&ar);
                op = rados_create_write_op();
                rados_write_op_setxattr(op, "late", "1", 1);
                int sw = rados_aio_write_op_operate(op, io3, aw.c, "stall", NULL,
                                                    LIBRADOS_OPERATION_NOFLAG);
                int sr = rados_aio_read(io3, "stall", ar.c, buf, sizeof buf, 0);
                w = aio_end(&aw, sw, "stalled write", NULL);
                r = aio_end(&ar, sr, "stalled read", NULL);
                took = now_s() - t0;
                rados_release_write_op(op);
                continue_osd();
                CHECK_OK(sw);
                CHECK_OK(sr);
        }
        CHECK_EQ(osd_stopped, 0);
        CHECK_EQ(w, -ETIMEDOUT);
        CHECK_EQ(r, -ETIMEDOUT);
        printf("fact: with rados_osd_op_timeout=%s a write op and a read against a stopped OSD "
               "complete with -ETIMEDOUT (%d, %d) after %.1f s\n",
               OP_TIMEOUT, w, r, took);

        /* The write was on the OSD's socket when it timed out: continued, the OSD applies it.
         * -ETIMEDOUT means "not known", never "not done" (read through the same client, so after
         * the late write). */
        char lb[4];
        int late = rados_getxattr(io3, "stall", "late", lb, sizeof lb);
        CHECK_EQ(late, 1);
        printf("fact: a write op that completed with -ETIMEDOUT was still applied once the OSD "
               "continued (getxattr: %d)\n",
               late);

        /* the OSD continued: operations pass again (the default client, no timeout) */
        rados_write_op_t again = rados_create_write_op();
        rados_write_op_write_full(again, "after", 5);
        CHECK_OK(wop(again, "stall", NULL));
        disconnect(cl3, io3);
}

int main(int argc, char **argv)
{
        if (argc != 5) {
                fprintf(stderr, "usage: test_rados_ops CONF POOL USER OSD_PID\n");
                return 2;
        }
        conf = argv[1];
        pool = argv[2];
        user = argv[3];
        osd_pid = (pid_t)strtol(argv[4], NULL, 10);
        if (osd_pid <= 1) {
                fprintf(stderr, "test_rados_ops: bad OSD_PID '%s'\n", argv[4]);
                return 2;
        }
        atexit(continue_osd);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGABRT, on_signal);
        signal(SIGSEGV, on_signal);

        cl = connect_io(NULL, &io);
        if (!cl)
                return 1;
        int passed, failed = harness_run(&passed);
        disconnect(cl, io);
        return harness_report(passed, failed);
}
