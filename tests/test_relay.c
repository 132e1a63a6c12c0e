/* A real chapard on port 0 in a temp dir, driven by the test client (tests/relay_client.c):
 * round trip, resume at every chunk boundary, dedup, download while uploading, 64 concurrent
 * clients, garbage beside a normal transfer, flow control, and SIGTERM mid-transfer followed by
 * a restart, a resume and a clean `chapard verify`. */
#include "harness.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "relay_client.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static struct rc_relay relay;

static bool started(void)
{
        if (relay.pid > 0)
                return true;
        int rc = rc_relay_start(&relay, false, NULL);
        if (rc)
                fprintf(stderr, "cannot start chapard: %d (is CHAPARD set?)\n", rc);
        return rc == 0;
}

static bool same(const struct rc_file *f, const uint8_t *data, uint64_t len)
{
        return len == f->total && (len == 0 || memcmp(data, f->data, len) == 0);
}

static bool roundtrip(struct rc_conn *c, uint64_t size, uint32_t chunk, uint32_t seed)
{
        struct rc_file f;
        if (rc_file_make(&f, size, chunk, seed, 0) != 0)
                return false;
        struct rc_put_stats st;
        uint8_t *out = NULL;
        uint64_t len = 0;
        int rc = rc_put(c, &f, &st);
        if (!rc)
                rc = rc_get(c, f.file_id, &out, &len);
        bool ok = rc == 0 && same(&f, out, len) && st.chunks_sent == f.count;
        if (!ok)
                fprintf(stderr, "  roundtrip of %llu bytes: rc %d (%s)\n", (unsigned long long)size,
                        rc, c->last_msg);
        free(out);
        rc_file_free(&f);
        return ok;
}

TEST(roundtrip_sizes)
{
        REQUIRE(started());
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        const uint32_t cs = 64 * KiB;
        uint64_t sizes[] = {0, 1, 1000, cs - 1, cs, cs + 1, 10 * cs + 17, 5 * MiB + 3};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                CHECK(roundtrip(&c, sizes[i], cs, 100 + (uint32_t)i));
        CHECK(roundtrip(&c, 9 * MiB, MiB, 200));
        CHECK(roundtrip(&c, 20 * MiB + 5, 8 * MiB, 201));
        rc_close(&c);
}

TEST(resume_at_every_chunk_boundary)
{
        REQUIRE(started());
        const uint32_t cs = 64 * KiB, n = 6;
        for (uint32_t cut = 0; cut <= n; cut++) {
                struct rc_file f;
                REQUIRE_OK(rc_file_make(&f, (uint64_t)n * cs - 100, cs, 300 + cut, 0));
                struct rc_conn c;
                REQUIRE_OK(rc_connect(&c, relay.addr));
                uint8_t id[CHP_UPLOAD_ID_BYTES], id2[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
                uint8_t *missing;
                bool complete;
                struct rc_put_stats st = {0};
                REQUIRE_OK(rc_open(&c, &f, id, &missing, &complete));
                CHECK(!complete);
                CHECK_OK(rc_send_chunks(&c, &f, id, missing, cut, &st));
                CHECK_EQ(st.chunks_sent, cut);
                free(missing);
                /* the cut: the connection goes away without a word */
                rc_close(&c);
                REQUIRE_OK(rc_connect(&c, relay.addr));
                REQUIRE_OK(rc_open(&c, &f, id2, &missing, &complete));
                CHECK(memcmp(id, id2, sizeof(id)) == 0); /* the same session, resumed */
                uint32_t still = 0;
                for (uint32_t i = 0; i < n; i++)
                        still += chp_bit(missing, i);
                CHECK_EQ(still, n - cut);
                memset(&st, 0, sizeof(st));
                CHECK_OK(rc_send_chunks(&c, &f, id2, missing, UINT32_MAX, &st));
                CHECK_EQ(st.chunks_sent, n - cut); /* nothing is sent twice */
                free(missing);
                CHECK_OK(rc_commit(&c, id2, fid));
                uint8_t *out = NULL;
                uint64_t len = 0;
                CHECK_OK(rc_get(&c, f.file_id, &out, &len));
                CHECK(same(&f, out, len));
                free(out);
                rc_close(&c);
                rc_file_free(&f);
        }
}

TEST(dedup_sends_no_chunk_bytes)
{
        REQUIRE(started());
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_file a, b;
        REQUIRE_OK(rc_file_make(&a, 3 * MiB + 77, MiB, 400, 1));
        REQUIRE_OK(rc_file_make(&b, 3 * MiB + 77, MiB, 400, 2)); /* same chunks, other meta */
        CHECK(memcmp(a.file_id, b.file_id, CHP_HASH_BYTES) != 0);
        struct rc_put_stats st;
        CHECK_OK(rc_put(&c, &a, &st));
        CHECK_EQ(st.chunks_sent, 4);
        CHECK_OK(rc_put(&c, &b, &st));
        CHECK_EQ(st.chunks_sent, 0);
        CHECK_EQ(st.bytes_sent, 0);
        CHECK(!st.was_complete);
        /* the very same file again: complete at once, no session at all */
        CHECK_OK(rc_put(&c, &a, &st));
        CHECK(st.was_complete);
        CHECK_EQ(st.bytes_sent, 0);
        uint8_t *out = NULL;
        uint64_t len = 0;
        CHECK_OK(rc_get(&c, b.file_id, &out, &len));
        CHECK(same(&b, out, len));
        free(out);
        rc_file_free(&a);
        rc_file_free(&b);
        rc_close(&c);
}

TEST(mismatch_and_bad_requests_keep_the_connection)
{
        REQUIRE(started());
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 2 * 64 * KiB, 64 * KiB, 500, 0));
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t *missing;
        bool complete;
        REQUIRE_OK(rc_open(&c, &f, id, &missing, &complete));
        free(missing);
        /* chunk 0 with a flipped byte: refused, nothing stored */
        uint8_t prefix[CHP_CHUNK_PREFIX];
        chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), id, 0);
        f.data[10] ^= 1;
        CHECK_OK(rc_send(&c, CHP_F_CHUNK, 77, prefix, sizeof(prefix), f.data, 64 * KiB));
        struct chp_frame_header h;
        uint8_t *reply;
        CHECK_OK(rc_recv(&c, &h, &reply));
        CHECK_EQ(h.type, CHP_F_ERROR);
        CHECK_EQ(h.id, 77);
        CHECK_EQ(c.last_error, CHP_WE_MISMATCH);
        f.data[10] ^= 1;
        uint8_t addrs[CHP_HASH_BYTES];
        CHECK_OK(chp_sha256(f.data, 64 * KiB, addrs));
        struct chp_msg_have hv = {.count = 1, .addrs = addrs};
        uint8_t hp[40];
        CHECK_OK(rc_call(&c, CHP_F_HAVE, hp, (size_t)chp_msg_have_encode(hp, sizeof(hp), &hv), &h,
                         &reply));
        CHECK_EQ(reply[4] & 1, 0);
        /* a wrong length, an unknown upload, a commit too early: errors, connection stays */
        CHECK_OK(rc_send(&c, CHP_F_CHUNK, 78, prefix, sizeof(prefix), f.data, 1000));
        CHECK_OK(rc_recv(&c, &h, &reply));
        CHECK(h.type == CHP_F_ERROR && c.last_error == CHP_WE_MISMATCH);
        uint8_t bogus[CHP_UPLOAD_ID_BYTES] = {9};
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_EQ(rc_commit(&c, bogus, fid), CHP_EREMOTE);
        CHECK_EQ(c.last_error, CHP_WE_NOT_FOUND);
        CHECK_EQ(rc_commit(&c, id, fid), CHP_EREMOTE);
        CHECK_EQ(c.last_error, CHP_WE_MISSING);
        CHECK_EQ(rc_call(&c, CHP_F_GET_MANIFEST, bogus, 16, &h, &reply), CHP_EREMOTE);
        CHECK_EQ(c.last_error, CHP_WE_BAD_FRAME); /* 16 bytes where 32 belong: fatal */
        rc_close(&c);
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_put_stats st;
        CHECK_OK(rc_put(&c, &f, &st)); /* resumes the session and completes */
        uint8_t ping[5] = "hello";
        CHECK_OK(rc_call(&c, CHP_F_PING, ping, 5, &h, &reply));
        CHECK(h.len == 5 && memcmp(reply, "hello", 5) == 0);
        rc_close(&c);
        rc_file_free(&f);
}

TEST(only_the_creator_deletes_an_upload)
{
        REQUIRE(started());
        struct rc_conn a, b;
        REQUIRE_OK(rc_connect(&a, relay.addr));
        REQUIRE_OK(rc_connect(&b, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 3 * 64 * KiB, 64 * KiB, 650, 0));
        uint8_t ida[CHP_UPLOAD_ID_BYTES], idb[CHP_UPLOAD_ID_BYTES];
        uint8_t *missing;
        bool complete;
        REQUIRE_OK(rc_open(&a, &f, ida, &missing, &complete));
        free(missing);
        /* someone else who knows the manifest resumes the same upload, but cannot delete it */
        REQUIRE_OK(rc_open(&b, &f, idb, &missing, &complete));
        free(missing);
        CHECK(memcmp(ida, idb, sizeof(ida)) == 0);
        struct chp_frame_header h;
        uint8_t *reply;
        CHECK_EQ(rc_call(&b, CHP_F_DELETE, idb, CHP_UPLOAD_ID_BYTES, &h, &reply), CHP_EREMOTE);
        CHECK_EQ(b.last_error, CHP_WE_UNAUTHORIZED);
        CHECK_OK(rc_call(&a, CHP_F_DELETE, ida, CHP_UPLOAD_ID_BYTES, &h, &reply));
        CHECK_EQ(h.len, 0);
        rc_close(&a);
        rc_close(&b);
        rc_file_free(&f);
}

/* Chunks of an upload sent on a connection that did not open it (a client spreading one upload
 * over several connections): the relay loads the upload's manifest from the store for them
 * (a lookup the CHUNK waits for, parked) and the file completes. */
TEST(chunks_on_a_connection_that_did_not_open)
{
        REQUIRE(started());
        struct rc_conn a, b;
        REQUIRE_OK(rc_connect(&a, relay.addr));
        REQUIRE_OK(rc_connect(&b, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 5 * 64 * KiB - 7, 64 * KiB, 660, 0));
        uint8_t id[CHP_UPLOAD_ID_BYTES], fid[CHP_HASH_BYTES];
        uint8_t *missing;
        bool complete;
        REQUIRE_OK(rc_open(&a, &f, id, &missing, &complete));
        CHECK(!complete);
        struct rc_put_stats st = {0};
        CHECK_OK(rc_send_chunks(&b, &f, id, missing, UINT32_MAX, &st));
        CHECK_EQ(st.chunks_sent, 5);
        free(missing);
        /* a chunk of an upload that does not exist is refused the same way, as before */
        uint8_t none[CHP_UPLOAD_ID_BYTES];
        memset(none, 0x5a, sizeof(none));
        REQUIRE_OK(rc_open(&a, &f, id, &missing, &complete)); /* nothing missing now */
        for (uint32_t i = 0; i < 5; i++)
                CHECK(!chp_bit(missing, i));
        free(missing);
        uint8_t *all = calloc(1, 1);
        all[0] = 0x1f;
        CHECK_EQ(rc_send_chunks(&b, &f, none, all, 1, &st), CHP_EREMOTE);
        CHECK_EQ(b.last_error, CHP_WE_NOT_FOUND);
        free(all);
        CHECK_OK(rc_commit(&b, id, fid));
        CHECK(memcmp(fid, f.file_id, CHP_HASH_BYTES) == 0);
        uint8_t *out = NULL;
        uint64_t len = 0;
        CHECK_OK(rc_get(&a, f.file_id, &out, &len));
        CHECK(same(&f, out, len));
        free(out);
        rc_close(&a);
        rc_close(&b);
        rc_file_free(&f);
}

TEST(download_while_uploading)
{
        REQUIRE(started());
        struct rc_conn up, down;
        REQUIRE_OK(rc_connect(&up, relay.addr));
        REQUIRE_OK(rc_connect(&down, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 8 * 64 * KiB, 64 * KiB, 600, 0));
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t *missing;
        bool complete;
        struct rc_put_stats st = {0};
        REQUIRE_OK(rc_open(&up, &f, id, &missing, &complete));
        CHECK_OK(rc_send_chunks(&up, &f, id, missing, 3, &st));
        /* the file id is a ticket already: its manifest is there, partial, with 3 chunks */
        struct chp_frame_header h;
        uint8_t *reply;
        CHECK_OK(rc_call(&down, CHP_F_GET_MANIFEST, f.file_id, 32, &h, &reply));
        struct chp_msg_manifest mm;
        REQUIRE_OK(chp_msg_manifest_decode(reply, h.len, &mm));
        CHECK_EQ(mm.state, CHP_UPLOAD_PARTIAL);
        CHECK(mm.present && mm.present[0] == 0x07);
        CHECK_OK(rc_call(&down, CHP_F_STAT, f.file_id, 32, &h, &reply));
        struct chp_msg_stat_ok so;
        REQUIRE_OK(chp_msg_stat_ok_decode(reply, h.len, &so));
        CHECK(so.state == CHP_UPLOAD_PARTIAL && so.chunks_present == 3 && so.chunk_count == 8);
        /* an acknowledged chunk is fetched at once, and a byte range of it */
        struct chp_manifest m;
        REQUIRE(chp_manifest_decode(f.manifest, f.manifest_len, &m) >= 0);
        struct chp_msg_get_chunk g = {.addr = m.addrs + 32 * 2, .offset = 100, .length = 50};
        uint8_t gp[40];
        CHECK_EQ(chp_msg_get_chunk_encode(gp, sizeof(gp), &g), 40);
        CHECK_OK(rc_call(&down, CHP_F_GET_CHUNK, gp, 40, &h, &reply));
        struct chp_msg_chunk_data d;
        REQUIRE_OK(chp_msg_chunk_data_decode(reply, h.len, &d));
        CHECK(d.len == 50 && d.offset == 100 && d.chunk_len == 64 * KiB &&
              memcmp(d.data, f.data + 2 * 64 * KiB + 100, 50) == 0);
        /* a chunk not yet sent is not there */
        g = (struct chp_msg_get_chunk){.addr = m.addrs + 32 * 5};
        CHECK_EQ(chp_msg_get_chunk_encode(gp, sizeof(gp), &g), 40);
        CHECK_EQ(rc_call(&down, CHP_F_GET_CHUNK, gp, 40, &h, &reply), CHP_EREMOTE);
        CHECK_EQ(down.last_error, CHP_WE_NOT_FOUND);
        CHECK_OK(rc_send_chunks(&up, &f, id, missing, UINT32_MAX, &st));
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_OK(rc_commit(&up, id, fid));
        uint8_t *out = NULL;
        uint64_t len = 0;
        CHECK_OK(rc_get(&down, f.file_id, &out, &len));
        CHECK(same(&f, out, len));
        free(out);
        free(missing);
        rc_file_free(&f);
        rc_close(&up);
        rc_close(&down);
}

struct client_job {
        uint32_t seed;
        bool ok;
};

static void *client_thread(void *arg)
{
        struct client_job *j = arg;
        struct rc_conn c;
        if (rc_connect(&c, relay.addr) != 0)
                return NULL;
        j->ok = roundtrip(&c, 300 * KiB + j->seed, 64 * KiB, 1000 + j->seed) &&
                roundtrip(&c, 70 * KiB, 64 * KiB, 5000 + j->seed);
        rc_close(&c);
        return NULL;
}

TEST(sixty_four_concurrent_clients)
{
        REQUIRE(started());
        enum { N = 64 };
        pthread_t t[N];
        struct client_job jobs[N];
        for (int i = 0; i < N; i++) {
                jobs[i] = (struct client_job){.seed = (uint32_t)i};
                REQUIRE(pthread_create(&t[i], NULL, client_thread, &jobs[i]) == 0);
        }
        int ok = 0;
        for (int i = 0; i < N; i++) {
                pthread_join(t[i], NULL);
                ok += jobs[i].ok;
        }
        CHECK_EQ(ok, N);
}

/* Sends bytes on a new connection and reads until the relay closes it; true if it did. */
static bool garbage_is_refused(const void *bytes, size_t len, uint32_t *code)
{
        struct rc_conn c = {.fd = -1};
        if (rc_connect(&c, relay.addr) != 0)
                return false;
        struct timeval tv = {.tv_sec = 10};
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ssize_t w = write(c.fd, bytes, len);
        *code = 0;
        bool closed = false;
        uint8_t buf[4096];
        for (int i = 0; i < 100; i++) {
                ssize_t r = read(c.fd, buf, sizeof(buf));
                if (r == 0 || (r < 0 && errno == ECONNRESET)) {
                        closed = true;
                        break;
                }
                if (r < 0)
                        break; /* timed out: the relay kept it open */
                if (r >= 18 && buf[0] == CHP_F_ERROR)
                        *code = (uint32_t)(buf[12] | buf[13] << 8);
        }
        rc_close(&c);
        return w == (ssize_t)len && closed;
}

struct bg {
        bool ok;
};

static void *normal_transfer(void *arg)
{
        struct bg *b = arg;
        struct rc_conn c;
        b->ok = rc_connect(&c, relay.addr) == 0 && roundtrip(&c, 12 * MiB, MiB, 700) &&
                roundtrip(&c, 3 * MiB, 64 * KiB, 701);
        rc_close(&c);
        return NULL;
}

TEST(garbage_beside_a_normal_transfer)
{
        REQUIRE(started());
        pthread_t t;
        struct bg b = {0};
        REQUIRE(pthread_create(&t, NULL, normal_transfer, &b) == 0);
        uint32_t code;
        /* random bytes */
        uint8_t junk[3000];
        uint64_t x = 88172645463325252ULL;
        for (size_t i = 0; i < sizeof(junk); i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                junk[i] = (uint8_t)x;
        }
        junk[0] = 0x3c; /* an unknown type, so the first header is certainly bad */
        junk[1] = junk[2] = junk[3] = 0;
        CHECK(garbage_is_refused(junk, sizeof(junk), &code));
        CHECK_EQ(code, CHP_WE_UNKNOWN_TYPE);
        /* a length that lies: a PING claiming 1 GiB */
        uint8_t lie[CHP_FRAME_HEADER];
        chp_frame_header_encode(lie, CHP_F_PING, 5, 1u << 30);
        CHECK(garbage_is_refused(lie, sizeof(lie), &code));
        CHECK_EQ(code, CHP_WE_TOO_BIG);
        /* nonzero reserved bits */
        chp_frame_header_encode(lie, CHP_F_PING, 5, 0);
        lie[2] = 1;
        CHECK(garbage_is_refused(lie, sizeof(lie), &code));
        CHECK_EQ(code, CHP_WE_BAD_FRAME);
        /* a reply type sent as a request */
        chp_frame_header_encode(lie, CHP_F_PING | CHP_F_REPLY, 5, 0);
        CHECK(garbage_is_refused(lie, sizeof(lie), &code));
        CHECK_EQ(code, CHP_WE_UNKNOWN_TYPE);
        /* a truncated HELLO: a complete frame whose payload stops inside HELLO's fields is
         * answered with an error naming it and the connection closed ... */
        {
                int fd = tu_native(relay.addr, false);
                REQUIRE(fd >= 0);
                uint8_t part[CHP_FRAME_HEADER + 3] = {0};
                chp_frame_header_encode(part, CHP_F_HELLO, 9, 3);
                part[CHP_FRAME_HEADER] = (uint8_t)CHP_PROTO_VERSION;
                CHECK(tu_send_all(fd, part, sizeof(part)));
                uint8_t got[256];
                size_t n = 0;
                struct chp_frame_header h = {0};
                double secs = tu_seconds_until_closed(fd, 10, got, sizeof(got), &n);
                CHECK(secs >= 0 && secs < 5);
                CHECK(chp_frame_header_decode(got, n, &h) == CHP_FRAME_HEADER);
                CHECK(h.type == CHP_F_ERROR && h.id == 9);
                CHECK(n >= CHP_FRAME_HEADER + 4 && got[CHP_FRAME_HEADER] == CHP_WE_BAD_FRAME);
                close(fd);
        }
        /* ... and one whose header promises a whole HELLO but whose peer stops after 3 bytes of
         * it and closes its side: the relay closes at once, replying nothing */
        {
                int fd = tu_native(relay.addr, false);
                REQUIRE(fd >= 0);
                uint8_t part[CHP_FRAME_HEADER + 3] = {0};
                chp_frame_header_encode(part, CHP_F_HELLO, 10, 8);
                CHECK(tu_send_all(fd, part, sizeof(part)));
                shutdown(fd, SHUT_WR);
                uint8_t got[256];
                size_t n = 1;
                double secs = tu_seconds_until_closed(fd, 10, got, sizeof(got), &n);
                CHECK(secs >= 0 && secs < 5);
                CHECK_EQ(n, 0);
                close(fd);
        }
        /* an OPEN whose manifest is malformed: an error, but the connection stays */
        {
                struct rc_conn c;
                REQUIRE_OK(rc_connect(&c, relay.addr));
                uint8_t bad[40] = {0};
                struct chp_frame_header h;
                uint8_t *reply;
                CHECK_EQ(rc_call(&c, CHP_F_OPEN, bad, sizeof(bad), &h, &reply), CHP_EREMOTE);
                CHECK_EQ(c.last_error, CHP_WE_BAD_MANIFEST);
                CHECK_OK(rc_call(&c, CHP_F_PING, "x", 1, &h, &reply));
                rc_close(&c);
        }
        /* frames before HELLO (after the plaintext preamble) */
        {
                int fd = tu_native(relay.addr, false);
                REQUIRE(fd >= 0);
                uint8_t ping[CHP_FRAME_HEADER];
                chp_frame_header_encode(ping, CHP_F_PING, 1, 0);
                CHECK(tu_send_all(fd, ping, sizeof(ping)));
                uint8_t buf[256];
                ssize_t r = read(fd, buf, sizeof(buf));
                CHECK(r >= 18 && buf[0] == CHP_F_ERROR && buf[12] == CHP_WE_NO_HELLO);
                CHECK_EQ(read(fd, buf, sizeof(buf)), 0);
                close(fd);
        }
        pthread_join(t, NULL);
        CHECK(b.ok);
        /* and the relay still serves */
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        CHECK(roundtrip(&c, 100 * KiB, 64 * KiB, 800));
        rc_close(&c);
}

TEST(flow_control_bounds_a_fast_sender)
{
        REQUIRE(started());
        /* A client that ignores the window: 64 chunks of 1 MiB sent without reading replies.
         * The relay stops reading once its window is full; the client's writes block instead of
         * the relay buffering. Then the client reads, and everything completes. */
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 64 * MiB, MiB, 900, 0));
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t *missing;
        bool complete;
        REQUIRE_OK(rc_open(&c, &f, id, &missing, &complete));
        free(missing);
        int flags = MSG_DONTWAIT;
        uint32_t queued = 0;
        uint64_t sent_bytes = 0;
        for (uint32_t i = 0; i < f.count; i++) {
                uint8_t frame[CHP_FRAME_HEADER + CHP_CHUNK_PREFIX];
                chp_frame_header_encode(frame, CHP_F_CHUNK, 10 + i, CHP_CHUNK_PREFIX + MiB);
                chp_msg_chunk_prefix_encode(frame + CHP_FRAME_HEADER, CHP_CHUNK_PREFIX, id, i);
                ssize_t w = send(c.fd, frame, sizeof(frame), flags);
                if (w != (ssize_t)sizeof(frame))
                        break;
                ssize_t got = 0;
                while (got < (ssize_t)MiB) {
                        ssize_t n = send(c.fd, f.data + (uint64_t)i * MiB + got, MiB - got, flags);
                        if (n <= 0)
                                break;
                        got += n;
                }
                sent_bytes += (uint64_t)got;
                if (got < (ssize_t)MiB)
                        break; /* the socket is full: the relay stopped reading */
                queued++;
        }
        /* the relay's window (32 MiB) plus socket buffers is well short of 64 MiB */
        CHECK(queued < f.count);
        CHECK(sent_bytes < 60ull * MiB);
        /* now the client listens: every chunk it queued whole is acknowledged */
        struct timeval tv = {.tv_sec = 20};
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        uint32_t acked = 0;
        struct chp_frame_header h;
        uint8_t *reply;
        while (acked < queued && rc_recv(&c, &h, &reply) == 0 &&
               h.type == (CHP_F_CHUNK | CHP_F_REPLY))
                acked++;
        CHECK_EQ(acked, queued);
        rc_close(&c);
        /* the same upload finishes over a well-behaved connection, sending only the rest */
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_put_stats st;
        CHECK_OK(rc_put(&c, &f, &st));
        CHECK(st.chunks_sent <= f.count - queued);
        rc_close(&c);
        rc_file_free(&f);
}

TEST(pipelined_gets_beyond_the_window)
{
        REQUIRE(started());
        /* A client that asks for more chunk bytes at once than the relay's window holds (40 GETs
         * of 1 MiB against 32 MiB), all in one write: the relay takes requests until its output
         * is full and the rest wait in its input buffer. Once the output drains those are
         * served too, not left there until a timeout closes the connection. */
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, relay.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 40 * MiB, MiB, 901, 0));
        struct rc_put_stats st;
        REQUIRE_OK(rc_put(&c, &f, &st));
        const size_t each = CHP_FRAME_HEADER + 40;
        uint8_t *req = malloc(f.count * each), (*addr)[CHP_HASH_BYTES] = calloc(f.count, 32);
        REQUIRE(req && addr);
        for (uint32_t i = 0; i < f.count; i++) {
                REQUIRE_OK(chp_sha256(f.data + (uint64_t)i * MiB, MiB, addr[i]));
                struct chp_msg_get_chunk q = {.addr = addr[i]};
                chp_frame_header_encode(req + i * each, CHP_F_GET_CHUNK, 100 + i, 40);
                REQUIRE(chp_msg_get_chunk_encode(req + i * each + CHP_FRAME_HEADER, 40, &q) == 40);
        }
        struct iovec iov = {req, f.count * each};
        REQUIRE_OK(rc_write_iov(c.fd, &iov, 1, NULL));
        struct timeval tv = {.tv_sec = 10};
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        uint32_t got = 0;
        struct chp_frame_header h;
        uint8_t *reply;
        while (got < f.count && rc_recv(&c, &h, &reply) == 0 &&
               h.type == (CHP_F_GET_CHUNK | CHP_F_REPLY) && h.id == 100 + got &&
               h.len == CHP_CHUNK_DATA_PREFIX + MiB &&
               memcmp(reply + CHP_CHUNK_DATA_PREFIX, f.data + (uint64_t)got * MiB, MiB) == 0)
                got++;
        CHECK_EQ(got, f.count);
        free(req);
        free(addr);
        rc_close(&c);
        rc_file_free(&f);
}

TEST(sigterm_mid_transfer_restart_resume_verify)
{
        struct rc_relay r = {0};
        REQUIRE_OK(rc_relay_start(&r, false, NULL));
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, r.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 24 * MiB + 5, MiB, 1100, 0));
        uint8_t id[CHP_UPLOAD_ID_BYTES];
        uint8_t *missing;
        bool complete;
        struct rc_put_stats st = {0};
        REQUIRE_OK(rc_open(&c, &f, id, &missing, &complete));
        CHECK_OK(rc_send_chunks(&c, &f, id, missing, 10, &st));
        free(missing);
        /* chunks in flight when the signal lands: send a few more without waiting */
        for (uint32_t i = 10; i < 14; i++) {
                uint8_t prefix[CHP_CHUNK_PREFIX];
                chp_msg_chunk_prefix_encode(prefix, sizeof(prefix), id, i);
                CHECK_OK(rc_send(&c, CHP_F_CHUNK, 500 + i, prefix, sizeof(prefix),
                                 f.data + (uint64_t)i * MiB, MiB));
        }
        CHECK_EQ(rc_relay_stop(&r, SIGTERM), 0); /* a graceful stop exits 0 */
        rc_close(&c);

        REQUIRE_OK(rc_relay_start(&r, true, NULL));
        REQUIRE_OK(rc_connect(&c, r.addr));
        uint8_t id2[CHP_UPLOAD_ID_BYTES];
        REQUIRE_OK(rc_open(&c, &f, id2, &missing, &complete));
        CHECK(memcmp(id, id2, sizeof(id)) == 0);
        uint32_t still = 0;
        for (uint32_t i = 0; i < f.count; i++)
                still += chp_bit(missing, i);
        CHECK(still <= f.count - 10);
        memset(&st, 0, sizeof(st));
        CHECK_OK(rc_send_chunks(&c, &f, id2, missing, UINT32_MAX, &st));
        CHECK_EQ(st.chunks_sent, still);
        free(missing);
        uint8_t fid[CHP_HASH_BYTES];
        CHECK_OK(rc_commit(&c, id2, fid));
        uint8_t *out = NULL;
        uint64_t len = 0;
        CHECK_OK(rc_get(&c, f.file_id, &out, &len));
        CHECK(same(&f, out, len));
        free(out);
        rc_close(&c);
        CHECK_EQ(rc_relay_stop(&r, SIGINT), 0);

        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "'%s' verify --data '%s/data' >/dev/null", r.chapard, r.dir);
        CHECK_EQ(system(cmd), 0);
        rc_file_free(&f);
        rc_relay_cleanup(&r);
}

TEST(timeouts_and_connection_cap)
{
        struct rc_relay r = {0};
        snprintf(r.dir, sizeof(r.dir), "/tmp/chapar-relay-XXXXXX");
        REQUIRE(mkdtemp(r.dir));
        char conf[300];
        snprintf(conf, sizeof(conf), "%s/chapard.ini", r.dir);
        FILE *f = fopen(conf, "w");
        REQUIRE(f);
        fprintf(f, "[server]\nidle_timeout = 2s\nio_timeout = 1s\nmax_connections = 4\n");
        fclose(f);
        const char *extra[] = {"--config", conf, "--threads", "1", NULL};
        REQUIRE_OK(rc_relay_start(&r, true, extra));
        /* idle: a connection that says HELLO and nothing else is closed after about 2 s */
        struct rc_conn idle;
        REQUIRE_OK(rc_connect(&idle, r.addr));
        double t = tu_seconds_until_closed(idle.fd, 10, NULL, 0, NULL);
        CHECK(t > 1.0 && t < 5.0);
        rc_close(&idle);
        /* slow peer: half a frame, then silence: closed after about 1 s */
        struct rc_conn slow;
        REQUIRE_OK(rc_connect(&slow, r.addr));
        uint8_t part[CHP_FRAME_HEADER + 4];
        chp_frame_header_encode(part, CHP_F_PING, 2, 10);
        CHECK_EQ(write(slow.fd, part, sizeof(part)), (ssize_t)sizeof(part));
        t = tu_seconds_until_closed(slow.fd, 10, NULL, 0, NULL);
        CHECK(t > 0.5 && t < 3.5);
        rc_close(&slow);
        /* the cap: four connections are served, a fifth is closed at once */
        struct rc_conn cs[4];
        for (int i = 0; i < 4; i++)
                REQUIRE_OK(rc_connect(&cs[i], r.addr));
        struct rc_conn extra_conn;
        CHECK(rc_connect(&extra_conn, r.addr) != 0);
        rc_close(&extra_conn);
        struct chp_frame_header h;
        uint8_t *reply;
        CHECK_OK(rc_call(&cs[3], CHP_F_PING, "x", 1, &h, &reply));
        for (int i = 0; i < 4; i++)
                rc_close(&cs[i]);
        CHECK_EQ(rc_relay_stop(&r, SIGTERM), 0);
        rc_relay_cleanup(&r);
}

/* With a tenant configured, a caller without a token is anonymous, from loopback too: HAVE does
 * not answer it and STAT tells it that a complete file exists, nothing of when it was made. */
TEST(anonymous_callers_learn_no_times)
{
        struct rc_relay r = {0};
        REQUIRE_OK(rc_relay_start(&r, false, NULL));
        struct rc_conn c;
        REQUIRE_OK(rc_connect(&c, r.addr));
        struct rc_file f;
        REQUIRE_OK(rc_file_make(&f, 100 * KiB, 64 * KiB, 1200, 0));
        struct rc_put_stats st;
        REQUIRE_OK(rc_put(&c, &f, &st)); /* no tenant yet: loopback uploads as a trusted caller */
        rc_close(&c);
        REQUIRE_OK(rc_relay_stop(&r, SIGTERM));
        char conf[300];
        snprintf(conf, sizeof(conf), "%s/tenant.ini", r.dir);
        FILE *cf = fopen(conf, "w");
        REQUIRE(cf);
        /* the public key of docs/tokens.md's first vector: a valid Ed25519 point */
        fprintf(cf, "[tenant \"acme\"]\ntoken_key = 21fe31dfa154a261:"
                    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\n");
        fclose(cf);
        const char *extra[] = {"--config", conf, NULL};
        REQUIRE_OK(rc_relay_start(&r, true, extra));
        REQUIRE_OK(rc_connect(&c, r.addr));
        struct chp_frame_header h;
        uint8_t *reply;
        REQUIRE_OK(rc_call(&c, CHP_F_STAT, f.file_id, CHP_HASH_BYTES, &h, &reply));
        struct chp_msg_stat_ok so;
        REQUIRE_OK(chp_msg_stat_ok_decode(reply, h.len, &so));
        CHECK_EQ(so.state, CHP_UPLOAD_COMPLETE);
        CHECK_EQ(so.flags, CHP_STAT_TIMES_WITHHELD);
        CHECK(so.created == 0 && so.expires == 0);
        uint8_t addr[CHP_HASH_BYTES];
        REQUIRE_OK(chp_sha256(f.data, 64 * KiB, addr)); /* the first chunk: stored */
        struct chp_msg_have hv = {.count = 1, .addrs = addr};
        uint8_t hp[40];
        CHECK_EQ(rc_call(&c, CHP_F_HAVE, hp, (size_t)chp_msg_have_encode(hp, sizeof(hp), &hv), &h,
                         &reply),
                 CHP_EREMOTE);
        CHECK_EQ(c.last_error, CHP_WE_UNAUTHORIZED);
        rc_close(&c);
        CHECK_EQ(rc_relay_stop(&r, SIGTERM), 0);
        rc_file_free(&f);
        rc_relay_cleanup(&r);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        int passed, failed = harness_run(&passed);
        if (relay.pid > 0 && rc_relay_stop(&relay, SIGTERM) != 0) {
                printf("FAIL the shared relay did not stop cleanly\n");
                failed++;
        }
        rc_relay_cleanup(&relay);
        return harness_report(passed, failed);
}
