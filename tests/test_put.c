/* libchapar's put against a real chapard on port 0, through a test build of libchapar whose
 * put.c calls hooks (client_int.h, CHAPAR_TEST_HOOKS): the file is rewritten between the put's
 * passes, and every seal, the manifest and every chunk sent are recorded.
 *
 * - A file that changes between the passes fails the put with CHAPAR_ECHANGED and a message
 *   that says so when a later pass reads it (unless all that is sent was read once: then that
 *   snapshot is the file put); nothing inconsistent is sent (every chunk sent hashes to its address
 * in the manifest of its OPEN) and the file key never seals two plaintexts at one nonce: over every
 *   seal of the run, (key, index, last) maps to one plaintext — the nonce is a function of those
 *   (v1 chunks) or of those and the plaintext (v2, synthetic nonces), so this holds under both,
 *   and with v2's 24-byte nonce prefix (CHP_E2E_CHUNK_OVERHEAD 40) (key, nonce) is checked too.
 * - After a failed put, both the old and the new content put and download intact.
 * - A put whose ciphertext is not kept seals each chunk exactly twice (the addressing pass and
 *   once for sending), also when the relay's window is full.
 * - The relay answers a CHUNK for an upload that another connection committed meanwhile with
 *   ERROR COMMITTED (NOT_FOUND on a connection that never opened it), and OPEN again with
 *   COMPLETE (concurrent senders: tests/put_race.sh).
 */
#include "harness.h"
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chapar.h"
#include "client_int.h"
#include "hash.h"
#include "manifest.h"
#include "relay_client.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static struct rc_relay relay;
static char cache_dir[400], known[400], path[400];

/* ---- what the hooks record --------------------------------------------------------------- */

struct seal_rec {
        uint8_t key[CHP_FILE_KEY_BYTES];
        uint64_t index;
        bool last;
        uint8_t plain[CHP_HASH_BYTES]; /* SHA-256 of the plaintext */
        uint8_t nonce[24];             /* the sealed chunk's first 24 bytes */
};

static struct {
        pthread_mutex_t lock;
        struct seal_rec *seals;
        size_t nseals, cap;
        uint32_t *seals_per_index; /* this put's seals by index (up to 4096) */
        struct chp_manifest m;
        uint8_t *manifest;
        size_t sent, sent_bad;  /* chunks sent, and those not matching their address */
        const uint8_t *rewrite; /* with rewrite_at: the bytes the file gets after that pass */
        size_t rewrite_len;
        int rewrite_at;
} rec = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_between(void *ctx, int pass)
{
        (void)ctx;
        if (pass != rec.rewrite_at || !rec.rewrite)
                return;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        CHECK(fd >= 0 && pwrite(fd, rec.rewrite, rec.rewrite_len, 0) == (ssize_t)rec.rewrite_len);
        if (fd >= 0)
                close(fd);
}

static void on_sealed(void *ctx, const uint8_t key[CHP_FILE_KEY_BYTES], uint64_t index, bool last,
                      const uint8_t *plain, size_t len, const uint8_t *sealed, size_t sealed_len)
{
        (void)ctx;
        struct seal_rec r = {.index = index, .last = last};
        memcpy(r.key, key, sizeof(r.key));
        CHECK(chp_sha256(plain, len, r.plain) == 0);
        memcpy(r.nonce, sealed, sealed_len < 24 ? sealed_len : 24);
        pthread_mutex_lock(&rec.lock);
        if (rec.nseals == rec.cap) {
                rec.cap = rec.cap ? 2 * rec.cap : 256;
                rec.seals = realloc(rec.seals, rec.cap * sizeof(*rec.seals));
        }
        if (rec.seals)
                rec.seals[rec.nseals++] = r;
        if (index < 4096)
                rec.seals_per_index[index]++;
        pthread_mutex_unlock(&rec.lock);
}

static void on_manifest(void *ctx, const uint8_t *m, size_t len)
{
        (void)ctx;
        free(rec.manifest);
        rec.manifest = malloc(len);
        REQUIRE(rec.manifest);
        memcpy(rec.manifest, m, len);
        CHECK(chp_manifest_decode(rec.manifest, len, &rec.m) >= 0);
}

static void on_sent(void *ctx, uint64_t index, const uint8_t *bytes, size_t len)
{
        (void)ctx;
        uint8_t sum[CHP_HASH_BYTES];
        rec.sent++;
        if (!rec.manifest || index >= rec.m.chunk_count || chp_sha256(bytes, len, sum) != 0 ||
            memcmp(sum, rec.m.addrs + index * CHP_HASH_BYTES, CHP_HASH_BYTES) != 0)
                rec.sent_bad++;
}

/* Arms the hooks for one put; the seal record accumulates over the whole program. */
static void arm(int rewrite_at, const uint8_t *rewrite, size_t len, uint64_t keep_budget)
{
        rec.rewrite_at = rewrite_at;
        rec.rewrite = rewrite;
        rec.rewrite_len = len;
        rec.sent = rec.sent_bad = 0;
        memset(rec.seals_per_index, 0, 4096 * sizeof(uint32_t));
        free(rec.manifest);
        rec.manifest = NULL;
        cc_put_hooks = (struct cc_put_hooks){.between = on_between,
                                             .sealed = on_sealed,
                                             .manifest = on_manifest,
                                             .sent = on_sent,
                                             .keep_budget = keep_budget};
}

static int cmp_seal(const void *a, const void *b)
{
        const struct seal_rec *x = a, *y = b;
        int d = memcmp(x->key, y->key, sizeof(x->key));
        if (d)
                return d;
        if (x->index != y->index)
                return x->index < y->index ? -1 : 1;
        return (int)x->last - (int)y->last;
}

static int cmp_nonce(const void *a, const void *b)
{
        const struct seal_rec *x = a, *y = b;
        int d = memcmp(x->key, y->key, sizeof(x->key));
        return d ? d : memcmp(x->nonce, y->nonce, sizeof(x->nonce));
}

/* The number of (key, index, last) — and, for chunks with a nonce prefix, (key, nonce) — that
 * sealed more than one plaintext over the whole run. */
static size_t nonce_reuses(void)
{
        size_t bad = 0;
        qsort(rec.seals, rec.nseals, sizeof(*rec.seals), cmp_seal);
        for (size_t i = 1; i < rec.nseals; i++)
                if (cmp_seal(&rec.seals[i - 1], &rec.seals[i]) == 0 &&
                    memcmp(rec.seals[i - 1].plain, rec.seals[i].plain, CHP_HASH_BYTES) != 0)
                        bad++;
        if (CHP_E2E_CHUNK_OVERHEAD >= 24 + 16) {
                qsort(rec.seals, rec.nseals, sizeof(*rec.seals), cmp_nonce);
                for (size_t i = 1; i < rec.nseals; i++)
                        if (cmp_nonce(&rec.seals[i - 1], &rec.seals[i]) == 0 &&
                            memcmp(rec.seals[i - 1].plain, rec.seals[i].plain, CHP_HASH_BYTES) != 0)
                                bad++;
        }
        return bad;
}

/* ---- the client -------------------------------------------------------------------------- */

static bool started(void)
{
        if (relay.pid > 0)
                return true;
        int rc = rc_relay_start(&relay, false, NULL);
        if (rc) {
                fprintf(stderr, "cannot start chapard: %d (is CHAPARD set?)\n", rc);
                return false;
        }
        snprintf(cache_dir, sizeof(cache_dir), "%s/cache", relay.dir);
        snprintf(known, sizeof(known), "%s/known_relays", relay.dir);
        snprintf(path, sizeof(path), "%s/file", relay.dir);
        rec.seals_per_index = calloc(4096, sizeof(uint32_t));
        return rec.seals_per_index != NULL;
}

static struct chapar_client *client(void)
{
        uint8_t key[CHAPAR_KEY_BYTES];
        if (chp_hex_decode(relay.pubkey, strlen(relay.pubkey), key, sizeof(key)) != 0)
                return NULL;
        struct chapar_opts o = {
            .relay = relay.addr, .relay_key = key, .known_relays = known, .cache_dir = cache_dir};
        struct chapar_client *c = NULL;
        if (chapar_connect(&o, &c) != 0) {
                fprintf(stderr, "  connect: %s\n", c ? chapar_last_error(c) : "?");
                chapar_close(c);
                return NULL;
        }
        return c;
}

static bool write_file(const uint8_t *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = fd >= 0 && write(fd, data, len) == (ssize_t)len;
        if (fd >= 0)
                close(fd);
        return ok;
}

/* The connections put() asks for (0: adapt), and what its last put used. */
static uint32_t put_connections;
static struct chapar_transfer_stats put_stats;

/* Puts the file (chunk size cs); the put's code, and its ticket in ticket. */
static int put(uint32_t cs, char *ticket, char *err, size_t errcap)
{
        struct chapar_client *c = client();
        if (!c)
                return CHAPAR_ENET;
        struct chapar_transport t = {.size = sizeof(t), .connections = put_connections};
        if (chapar_set_transport(c, &t) != 0) {
                chapar_close(c);
                return CHAPAR_EUSAGE;
        }
        /* unpadded, so that the chunk counts below are the file's own */
        struct chapar_put_opts o = {.chunk_size = cs, .no_pad = true};
        struct chapar_put_result r;
        int rc = chapar_put_path(c, path, &o, &r);
        if (!rc && ticket)
                snprintf(ticket, CHAPAR_TICKET_MAX, "%s", r.ticket);
        if (err)
                snprintf(err, errcap, "%s", chapar_last_error(c));
        put_stats = (struct chapar_transfer_stats){.size = sizeof(put_stats)};
        (void)chapar_transfer_stats(c, &put_stats);
        chapar_close(c);
        return rc;
}

/* Whether the ticket downloads to exactly data. */
static bool gets(const char *ticket, const uint8_t *data, size_t len)
{
        struct chapar_client *c = client();
        char out[500];
        snprintf(out, sizeof(out), "%s/out", relay.dir);
        unlink(out);
        struct chapar_get_result r;
        int rc = c ? chapar_get(c, ticket, out, NULL, &r) : CHAPAR_ENET;
        if (rc)
                fprintf(stderr, "  get: %s: %s\n", chapar_strerror(rc),
                        c ? chapar_last_error(c) : "");
        bool ok = rc == 0;
        chapar_close(c);
        uint8_t *got = malloc(len + 1);
        int fd = open(out, O_RDONLY | O_CLOEXEC);
        ok = ok && got && fd >= 0 && read(fd, got, len + 1) == (ssize_t)len &&
             memcmp(got, data, len) == 0;
        if (fd >= 0)
                close(fd);
        free(got);
        return ok;
}

/* A put of a, changed to b after pass `at`; with again, a was put before (so the key cache gives
 * the put its key, and the relay has the file). */
static void changed_after(int at, bool again, uint64_t keep, unsigned seed, int want)
{
        const uint32_t cs = 64 * KiB;
        const size_t size = 20 * cs + 77;
        uint8_t *a = tu_pattern(size, seed), *b = tu_pattern(size, seed + 1);
        REQUIRE(a && b && write_file(a, size));
        char ta[CHAPAR_TICKET_MAX], tb[CHAPAR_TICKET_MAX], err[1024];
        rec.nseals = 0;
        arm(0, NULL, 0, keep);
        if (again)
                CHECK_OK(put(cs, ta, err, sizeof(err)));

        arm(at, b, size, keep);
        int rc = put(cs, NULL, err, sizeof(err));
        CHECK_EQ(rc, want);
        if (want)
                CHECK(strstr(chapar_strerror(rc), "changed while it was being sent") && err[0]);
        CHECK_EQ(rec.sent_bad, 0);
        if (rc != want)
                fprintf(stderr, "  put of a changing file: %d (%s)\n", rc, err);

        /* the new content puts and downloads; so does the old one again */
        arm(0, NULL, 0, keep);
        CHECK_OK(put(cs, tb, err, sizeof(err)));
        CHECK_EQ(rec.sent_bad, 0);
        CHECK(gets(tb, b, size));
        REQUIRE(write_file(a, size));
        CHECK_OK(put(cs, ta, err, sizeof(err)));
        CHECK(gets(ta, a, size));
        CHECK_EQ(nonce_reuses(), 0);
        cc_put_hooks = (struct cc_put_hooks){0};
        free(a);
        free(b);
}

/* After the first read: content put before is sealed again under its cached key, and that read
 * sees the change; new content is sent as read the first time (all of it kept), a consistent
 * snapshot. */
TEST(changed_after_the_first_read)
{
        REQUIRE(started());
        changed_after(1, true, 0, 10, CHAPAR_ECHANGED);
        changed_after(1, false, 0, 12, 0);
}

/* Only 4 chunks' ciphertext kept: the rest are sealed again for sending, of the new bytes. */
TEST(changed_between_sealing_and_sending)
{
        REQUIRE(started());
        changed_after(2, false, 4 * 64 * KiB, 20, CHAPAR_ECHANGED);
}

/* All the ciphertext kept: what is sent is what was sealed, a consistent snapshot, and the put
 * succeeds without reading the file again. */
TEST(changed_after_sealing_when_all_is_kept)
{
        REQUIRE(started());
        changed_after(2, false, 0, 30, 0);
}

/* Nothing kept and 40 chunks of 1 MiB, so that the relay's window (32 MiB) fills, put over
 * conns connections (0: adapting): each chunk is sealed once to address it and once to send it,
 * never more, and sent once, as its address. */
static void sealed_twice(uint32_t conns, unsigned seed)
{
        const uint32_t cs = MiB, n = 40;
        const size_t size = n * (size_t)(cs - CHP_E2E_CHUNK_OVERHEAD) - 1000 - seed;
        uint8_t *a = tu_pattern(size, seed);
        REQUIRE(a && write_file(a, size));
        char t[CHAPAR_TICKET_MAX], err[1024];
        arm(0, NULL, 0, 1);
        put_connections = conns;
        CHECK_OK(put(cs, t, err, sizeof(err)));
        put_connections = 0;
        CHECK_EQ(rec.sent, n);
        CHECK_EQ(rec.sent_bad, 0);
        for (uint32_t i = 0; i < n; i++)
                CHECK_EQ(rec.seals_per_index[i], 2);
        CHECK_EQ(put_stats.reconnects, 0);
        CHECK_EQ(put_stats.bytes_resent, 0);
        if (conns)
                CHECK_EQ(put_stats.connections, conns);
        cc_put_hooks = (struct cc_put_hooks){0};
        CHECK(gets(t, a, size));
        free(a);
}

TEST(no_chunk_sealed_twice_for_sending)
{
        REQUIRE(started());
        sealed_twice(0, 40);
}

/* The same over 4 connections: they take the chunks sealed again from one pool in any order. */
TEST(four_connections_share_the_sealed_chunks)
{
        REQUIRE(started());
        sealed_twice(4, 41);
}

/* A file changed between sealing and sending, over 4 connections: the first chunk read
 * differently stops them all, and nothing inconsistent is sent. */
TEST(changed_with_four_connections)
{
        REQUIRE(started());
        put_connections = 4;
        changed_after(2, false, 4 * 64 * KiB, 50, CHAPAR_ECHANGED);
        put_connections = 0;
}

/* on_ticket: called once, before any chunk is sent, with the ticket the put returns. */
static struct {
        int calls;
        size_t sent_before;
        char ticket[CHAPAR_TICKET_MAX];
} early;

static void on_early_ticket(void *ctx, const char *ticket)
{
        (void)ctx;
        early.calls++;
        early.sent_before = rec.sent;
        snprintf(early.ticket, sizeof(early.ticket), "%s", ticket);
}

TEST(ticket_before_the_chunks)
{
        REQUIRE(started());
        const uint32_t cs = 64 * KiB;
        const size_t size = 12 * cs + 5;
        uint8_t *a = tu_pattern(size, 77);
        REQUIRE(a && write_file(a, size));
        arm(0, NULL, 0, 0);
        struct chapar_client *c = client();
        REQUIRE(c);
        struct chapar_transport t = {.size = sizeof(t), .on_ticket = on_early_ticket};
        REQUIRE_OK(chapar_set_transport(c, &t));
        struct chapar_put_opts o = {.chunk_size = cs, .no_pad = true};
        struct chapar_put_result r;
        CHECK_OK(chapar_put_path(c, path, &o, &r));
        CHECK_EQ(early.calls, 1);
        CHECK_EQ(early.sent_before, 0);
        CHECK(rec.sent > 0);
        CHECK(strcmp(early.ticket, r.ticket) == 0);
        struct chapar_transfer_stats st = {.size = sizeof(st)};
        CHECK_OK(chapar_transfer_stats(c, &st));
        CHECK(st.connections >= 1 && st.congestion[0] != '\0');
        chapar_close(c);
        cc_put_hooks = (struct cc_put_hooks){0};
        CHECK(gets(r.ticket, a, size));
        free(a);
}

/* chapar_set_transport refuses what it cannot honour, and the struct's size lets it grow. */
TEST(transport_settings_checked)
{
        REQUIRE(started());
        struct chapar_client *c = client();
        REQUIRE(c);
        struct chapar_transport t = {.size = sizeof(t), .connections = CHAPAR_CONNECTIONS_MAX + 1};
        CHECK_EQ(chapar_set_transport(c, &t), CHAPAR_EUSAGE);
        t = (struct chapar_transport){.size = 4};
        CHECK_EQ(chapar_set_transport(c, &t), CHAPAR_EUSAGE);
        t = (struct chapar_transport){.size = sizeof(t), .congestion = "a-name-far-too-long"};
        CHECK_EQ(chapar_set_transport(c, &t), CHAPAR_EUSAGE);
        /* reno is always allowed: the connection made already runs it */
        t = (struct chapar_transport){.size = sizeof(t), .congestion = "reno"};
        CHECK_OK(chapar_set_transport(c, &t));
        struct chapar_transfer_stats st = {.size = 4};
        CHECK_EQ(chapar_transfer_stats(c, &st), CHAPAR_EUSAGE);
        chapar_close(c);
}

/* A second connection for the same client pins the key the relay proved on the first; the
 * backoff grows, with jitter, and stays within its bounds. */
TEST(extra_connection_and_backoff)
{
        REQUIRE(started());
        struct chapar_client *c = client();
        REQUIRE(c);
        struct chp_channel *ch = NULL;
        CHECK_OK(cc_open_extra(c, &ch));
        CHECK(ch && memcmp(chp_channel_remote_key(ch), chapar_relay_key(c), CHP_KEY_BYTES) == 0);
        chp_channel_close(ch);
        chapar_close(c);
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int i = 0; i < 200; i++) {
                uint32_t b = cc_backoff_ms(0);
                lo = b < lo ? b : lo;
                hi = b > hi ? b : hi;
                CHECK(cc_backoff_ms(30) >= 2500 && cc_backoff_ms(30) <= 5000);
        }
        CHECK(lo >= 100 && hi <= 200 && lo < hi);
        CHECK(cc_backoff_ms(3) >= 800 && cc_backoff_ms(3) <= 1600);
}

/* The adaptive count put and get share: one more connection per interval while the last one
 * raised the rate by CC_ADAPT_GAIN; the interval restarts while an added one opens; no room
 * (half the chunks left, the maximum) or no gain ends the adding for good. */
TEST(adaptive_connection_count)
{
        struct cc_adapt a;
        cc_adapt_init(&a, false, 0, 0);
        CHECK(!cc_adapt_step(&a, 10, 1000, false, 2, 100, 0));
        cc_adapt_init(&a, true, 0, 0); /* times in binary fractions: exact differences */
        CHECK(!cc_adapt_step(&a, 0.25, 250, false, 2, 100, 0)); /* within 0.5 s */
        CHECK(cc_adapt_step(&a, 0.5, 500, false, 2, 100, 0));   /* first rate: 1000 B/s */
        CHECK(!cc_adapt_step(&a, 1.0, 600, true, 2, 100, 0));   /* the third opens: restart */
        CHECK(!cc_adapt_step(&a, 1.25, 900, false, 3, 100, 0));
        CHECK(cc_adapt_step(&a, 1.5, 1200, false, 3, 100, 0)); /* 1200 B/s: +20% */
        /* a long path measures over 4 round trips */
        CHECK(!cc_adapt_step(&a, 3.0, 3000, false, 4, 100, 0.5)); /* 1.5 s: not yet */
        CHECK(a.on);
        CHECK(!cc_adapt_step(&a, 3.5, 3720, false, 4, 100, 0.5)); /* 1260 B/s: +5%, stays */
        CHECK(!a.on);
        CHECK(!cc_adapt_step(&a, 9, 9000, false, 4, 100, 0));
        cc_adapt_init(&a, true, 0, 0);
        CHECK(!cc_adapt_step(&a, 1, 1000, false, 2, 5, 0)); /* 3 > 5 / 2: no room */
        cc_adapt_init(&a, true, 0, 0);
        CHECK(!cc_adapt_step(&a, 1, 1000, false, CHAPAR_CONNECTIONS_MAX, 1000, 0));
        /* more flows pay under loss-based congestion control, not under BBR */
        CHECK(cc_adapt_pays("cubic") && cc_adapt_pays("reno") && !cc_adapt_pays("bbr"));
}

/* A path that is not a regular file is refused at once: a FIFO with no writer does not block the
 * put. Run in a child that SIGALRM ends if it blocks (so the relay is still stopped); needs no
 * relay: the client's connect failed. */
TEST(put_path_of_a_fifo)
{
        REQUIRE(started());
        char fifo[500];
        snprintf(fifo, sizeof(fifo), "%s/fifo", relay.dir);
        REQUIRE(mkfifo(fifo, 0600) == 0);
        fflush(NULL);
        pid_t child = fork();
        REQUIRE(child >= 0);
        if (child == 0) {
                struct chapar_opts o = {
                    .relay = "127.0.0.1:1", .known_relays = known, .cache_dir = ""};
                struct chapar_client *c = NULL;
                int rc = chapar_connect(&o, &c); /* no pin: CHAPAR_EKEY, nothing dialled */
                struct chapar_put_result r;
                alarm(10);
                if (c && rc == CHAPAR_EKEY)
                        rc = chapar_put_path(c, fifo, NULL, &r);
                _exit(rc == CHAPAR_EIO ? 0 : 1);
        }
        int st = 0;
        CHECK(waitpid(child, &st, 0) == child);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (WIFSIGNALED(st))
                fprintf(stderr, "  the put of a FIFO blocked (signal %d)\n", WTERMSIG(st));
        unlink(fifo);
}

/* Two connections open the same upload; one commits it; the other's next CHUNK is told so. */
TEST(relay_says_committed)
{
        REQUIRE(started());
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 3 * 64 * KiB - 100, 64 * KiB, 50, 0));
        struct rc_conn a, b, other;
        REQUIRE_OK(rc_connect(&a, relay.addr));
        REQUIRE_OK(rc_connect(&b, relay.addr));
        REQUIRE_OK(rc_connect(&other, relay.addr));
        uint8_t ida[CHP_UPLOAD_ID_BYTES], idb[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
        uint8_t *missing = NULL, *missing_a = NULL;
        bool complete = true;
        REQUIRE_OK(rc_open(&a, &f, ida, &missing_a, &complete));
        CHECK_OK(rc_open(&b, &f, idb, &missing, &complete));
        free(missing);
        CHECK(!complete && memcmp(ida, idb, sizeof(ida)) == 0);
        struct rc_put_stats st = {0};
        CHECK_OK(rc_send_chunks(&a, &f, ida, missing_a, UINT32_MAX, &st));
        free(missing_a);
        CHECK_OK(rc_commit(&a, ida, fid));

        uint32_t len = 64 * KiB;
        uint8_t *frame = malloc(CHP_CHUNK_PREFIX + len);
        REQUIRE(frame);
        chp_msg_chunk_prefix_encode(frame, CHP_CHUNK_PREFIX, idb, 0);
        memcpy(frame + CHP_CHUNK_PREFIX, f.data, len);
        struct chp_frame_header h;
        uint8_t *reply;
        CHECK_EQ(rc_call(&b, CHP_F_CHUNK, frame, CHP_CHUNK_PREFIX + len, &h, &reply), CHP_EREMOTE);
        CHECK_EQ(b.last_error, CHP_WE_COMMITTED);
        CHECK_EQ(rc_call(&other, CHP_F_CHUNK, frame, CHP_CHUNK_PREFIX + len, &h, &reply),
                 CHP_EREMOTE);
        CHECK_EQ(other.last_error, CHP_WE_NOT_FOUND);
        CHECK_OK(rc_open(&b, &f, idb, &missing, &complete));
        free(missing);
        CHECK(complete);
        free(frame);
        rc_close(&a);
        rc_close(&b);
        rc_close(&other);
        rc_file_free(&f);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        int passed, failed = harness_run(&passed);
        if (relay.pid > 0 && rc_relay_stop(&relay, SIGTERM) != 0) {
                fprintf(stderr, "chapard did not stop cleanly\n");
                failed++;
        }
        rc_relay_cleanup(&relay);
        free(rec.seals);
        free(rec.seals_per_index);
        free(rec.manifest);
        return harness_report(passed, failed);
}
