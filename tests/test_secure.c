/* The relay's encrypted transport under attack, against a real chapard: a plaintext request to a
 * relay that does not allow it, a low-order ephemeral key, truncated and replayed handshake
 * messages, a flipped bit in a record, records out of order, a preamble offering what the relay
 * does not speak. Each must end that connection cleanly while the relay keeps serving a proper
 * client, which does a full upload and download over the same transport (NK and XX). */
#include "harness.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "channel.h"
#include "hash.h"
#include "noise.h"
#include "record.h"
#include "relay_client.h"
#include "testutil.h"

static struct rc_relay relay = {.encrypted_only = true};
static uint8_t relay_pub[CHP_KEY_BYTES];

static bool started(void)
{
        if (relay.pid > 0)
                return true;
        if (rc_relay_start(&relay, false, NULL) != 0)
                return false;
        return chp_hex_decode(relay.pubkey, strlen(relay.pubkey), relay_pub, CHP_KEY_BYTES) == 0;
}

static int dial(void)
{
        int fd = tu_dial(relay.addr);
        struct timeval tv = {.tv_sec = 10};
        if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        return fd;
}

static bool send_all(int fd, const void *p, size_t n)
{
        return write(fd, p, n) == (ssize_t)n;
}

static bool read_all(int fd, uint8_t *p, size_t n)
{
        size_t got = 0;
        while (got < n) {
                ssize_t r = read(fd, p + got, n - got);
                if (r <= 0)
                        return false;
                got += (size_t)r;
        }
        return true;
}

/* True once the relay has closed fd (EOF or reset), within 10 s. */
static bool relay_closed(int fd)
{
        uint8_t buf[4096];
        for (;;) {
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r == 0 || (r < 0 && errno == ECONNRESET))
                        return true;
                if (r < 0)
                        return false; /* timed out: still open */
        }
}

struct session {
        int fd;
        struct chp_noise_hs hs;
        struct chp_record_dir tx, rx;
        uint8_t msg1[256];
        size_t msg1_len;
};

/* Runs the client side of a handshake; fix_e (if not NULL) fixes the ephemeral key. */
static bool handshake(struct session *s, enum chp_noise_pattern pattern, const uint8_t *fix_e)
{
        uint8_t pre[CHP_PREAMBLE_BYTES], prologue[CHP_PROLOGUE_MAX];
        chp_channel_preamble_noise(pre, pattern, (struct chp_noise_suite){0, 0});
        size_t plen = chp_channel_prologue(pre, prologue);
        uint8_t s_priv[32], s_pub[32];
        chp_noise_keypair(s_priv, s_pub);
        if ((s->fd = dial()) < 0 ||
            chp_noise_hs_init(&s->hs, pattern, (struct chp_noise_suite){0, 0}, true, prologue, plen,
                              pattern == CHP_NOISE_XX ? s_priv : NULL,
                              pattern == CHP_NOISE_NK ? relay_pub : NULL) != 0)
                return false;
        if (fix_e)
                chp_noise_hs_fix_ephemeral(&s->hs, fix_e);
        if (!send_all(s->fd, pre, CHP_PREAMBLE_BYTES))
                return false;
        bool first = true;
        while (!chp_noise_hs_done(&s->hs)) {
                uint8_t msg[2 + 512], pl[64];
                size_t n, pn;
                if (chp_noise_hs_my_turn(&s->hs)) {
                        if (chp_noise_hs_write(&s->hs, NULL, 0, msg + 2, 512, &n) != 0)
                                return false;
                        msg[0] = (uint8_t)(n >> 8);
                        msg[1] = (uint8_t)n;
                        if (first) {
                                memcpy(s->msg1, msg, n + 2);
                                s->msg1_len = n + 2;
                                first = false;
                        }
                        if (!send_all(s->fd, msg, n + 2))
                                return false;
                } else {
                        if (!read_all(s->fd, msg, 2))
                                return false;
                        n = (size_t)msg[0] << 8 | msg[1];
                        if (n == 0 || n > 512 || !read_all(s->fd, msg + 2, n) ||
                            chp_noise_hs_read(&s->hs, msg + 2, n, pl, sizeof(pl), &pn) != 0)
                                return false;
                }
        }
        uint8_t h[64];
        size_t hl;
        return chp_noise_hs_split(&s->hs, &s->tx.cs, &s->rx.cs, h, &hl) == 0;
}

static bool send_record(struct session *s, const uint8_t *p, size_t n, uint8_t *out)
{
        ssize_t r = chp_record_seal(&s->tx, p, n, out, CHP_RECORD_MAX);
        return r > 0 && send_all(s->fd, out, (size_t)r);
}

/* HELLO over records; true if HELLO_OK comes back. */
static bool hello(struct session *s)
{
        uint8_t frame[CHP_FRAME_HEADER + 16], rec[256], reply[256];
        struct chp_msg_hello m = {.version = CHP_PROTO_VERSION};
        ssize_t n = chp_msg_hello_encode(frame + CHP_FRAME_HEADER, 16, &m);
        chp_frame_header_encode(frame, CHP_F_HELLO, 1, (uint32_t)n);
        if (!send_record(s, frame, CHP_FRAME_HEADER + (size_t)n, rec))
                return false;
        if (!read_all(s->fd, reply, 2))
                return false;
        size_t len = (size_t)reply[0] << 8 | reply[1];
        if (len > sizeof(reply) - 2 || !read_all(s->fd, reply + 2, len))
                return false;
        uint8_t plain[256];
        size_t pl;
        bool closed;
        return chp_record_open(&s->rx, reply, len + 2, plain, &pl, &closed) == (ssize_t)(len + 2) &&
               pl >= CHP_FRAME_HEADER && plain[0] == (CHP_F_HELLO | CHP_F_REPLY);
}

static void end(struct session *s)
{
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -1;
        chp_noise_hs_wipe(&s->hs);
        chp_record_wipe(&s->tx);
        chp_record_wipe(&s->rx);
}

/* A proper client still gets served. */
static bool still_serving(void)
{
        struct session s = {.fd = -1};
        bool ok = handshake(&s, CHP_NOISE_NK, NULL) && hello(&s);
        end(&s);
        return ok;
}

TEST(nk_and_xx_handshakes_carry_frames)
{
        REQUIRE(started());
        struct session s = {.fd = -1};
        CHECK(handshake(&s, CHP_NOISE_NK, NULL) && hello(&s));
        end(&s);
        CHECK(handshake(&s, CHP_NOISE_XX, NULL) && hello(&s));
        uint8_t rs[32];
        CHECK(chp_noise_hs_remote_static(&s.hs, rs) == -ENOENT || memcmp(rs, relay_pub, 32) == 0);
        end(&s);
}

TEST(plaintext_is_refused_without_the_flag)
{
        REQUIRE(started());
        int fd = dial();
        REQUIRE(fd >= 0);
        uint8_t pre[CHP_PREAMBLE_BYTES], len[2] = {9, 9};
        chp_channel_preamble_plain(pre);
        CHECK(send_all(fd, pre, sizeof(pre)));
        CHECK(read_all(fd, len, 2) && len[0] == 0 && len[1] == 0); /* the refusal */
        CHECK(relay_closed(fd));
        close(fd);
        CHECK(still_serving());
}

TEST(unknown_preambles_are_refused)
{
        REQUIRE(started());
        const struct chp_noise_suite common = {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B};
        const struct chp_noise_suite no_cipher = {(enum chp_noise_cipher)7, CHP_NOISE_BLAKE2B};
        uint8_t bad[5][CHP_PREAMBLE_BYTES];
        memcpy(bad[0], "GET / HT", CHP_PREAMBLE_BYTES);                        /* speaking HTTP */
        chp_channel_preamble_noise(bad[1], CHP_NOISE_IK, common);              /* IK: peers only */
        chp_channel_preamble_noise(bad[2], (enum chp_noise_pattern)9, common); /* no such pattern */
        chp_channel_preamble_noise(bad[3], CHP_NOISE_NK, no_cipher);           /* no such cipher */
        chp_channel_preamble_noise(bad[4], CHP_NOISE_NK, common);
        bad[4][7] = 1; /* reserved byte set */
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int fd = dial();
                REQUIRE(fd >= 0);
                CHECK(send_all(fd, bad[i], sizeof(bad[i])));
                CHECK(relay_closed(fd));
                close(fd);
        }
        CHECK(still_serving());
}

TEST(wrong_pinned_key_fails_the_handshake)
{
        REQUIRE(started());
        uint8_t saved[32];
        memcpy(saved, relay_pub, 32);
        relay_pub[0] ^= 0x55; /* NK toward a key the relay does not hold */
        struct session s = {.fd = -1};
        CHECK(!handshake(&s, CHP_NOISE_NK, NULL));
        CHECK(s.fd < 0 || relay_closed(s.fd));
        end(&s);
        memcpy(relay_pub, saved, 32);
        CHECK(still_serving());
}

TEST(low_order_ephemeral_fails_the_handshake)
{
        REQUIRE(started());
        /* a first message whose ephemeral key is the all-zero point: every DH with it is zero */
        int fd = dial();
        REQUIRE(fd >= 0);
        uint8_t pre[CHP_PREAMBLE_BYTES];
        chp_channel_preamble_noise(pre, CHP_NOISE_NK, (struct chp_noise_suite){0, 0});
        uint8_t msg[2 + 48] = {0, 48};
        CHECK(send_all(fd, pre, sizeof(pre)) && send_all(fd, msg, sizeof(msg)));
        CHECK(relay_closed(fd));
        close(fd);
        CHECK(still_serving());
}

TEST(truncated_and_replayed_handshake_messages_fail)
{
        REQUIRE(started());
        struct session s = {.fd = -1};
        REQUIRE(handshake(&s, CHP_NOISE_NK, NULL) && hello(&s));
        uint8_t msg1[256];
        size_t n1 = s.msg1_len;
        memcpy(msg1, s.msg1, n1);
        end(&s);
        uint8_t pre[CHP_PREAMBLE_BYTES];
        chp_channel_preamble_noise(pre, CHP_NOISE_NK, (struct chp_noise_suite){0, 0});
        /* truncated: the length says 48, a few bytes come, then the sender hangs up */
        int fd = dial();
        REQUIRE(fd >= 0);
        CHECK(send_all(fd, pre, sizeof(pre)) && send_all(fd, msg1, 10));
        shutdown(fd, SHUT_WR);
        CHECK(relay_closed(fd));
        close(fd);
        /* shorter than its length says, with a lying length */
        uint8_t cut[2 + 20] = {0, 20};
        memcpy(cut + 2, msg1 + 2, 20);
        fd = dial();
        REQUIRE(fd >= 0);
        CHECK(send_all(fd, pre, sizeof(pre)) && send_all(fd, cut, sizeof(cut)));
        CHECK(relay_closed(fd));
        close(fd);
        /* replayed: the relay answers with fresh keys, so the replayer's old records fail */
        fd = dial();
        REQUIRE(fd >= 0);
        CHECK(send_all(fd, pre, sizeof(pre)) && send_all(fd, msg1, n1));
        uint8_t m2[2 + 64];
        CHECK(read_all(fd, m2, 2));
        size_t n2 = (size_t)m2[0] << 8 | m2[1];
        CHECK(n2 > 0 && n2 <= 64 && read_all(fd, m2 + 2, n2));
        uint8_t junk_record[2 + 40] = {0, 40};
        randombytes_buf(junk_record + 2, 40);
        CHECK(send_all(fd, junk_record, sizeof(junk_record)));
        CHECK(relay_closed(fd));
        close(fd);
        CHECK(still_serving());
}

TEST(flipped_bit_and_reordered_records_close_the_connection)
{
        REQUIRE(started());
        struct session s = {.fd = -1};
        REQUIRE(handshake(&s, CHP_NOISE_NK, NULL) && hello(&s));
        uint8_t frame[CHP_FRAME_HEADER + 5], rec[64];
        chp_frame_header_encode(frame, CHP_F_PING, 2, 5);
        memcpy(frame + CHP_FRAME_HEADER, "hello", 5);
        ssize_t r = chp_record_seal(&s.tx, frame, sizeof(frame), rec, sizeof(rec));
        REQUIRE(r > 0);
        rec[10] ^= 0x01; /* one bit of the ciphertext */
        CHECK(send_all(s.fd, rec, (size_t)r));
        CHECK(relay_closed(s.fd));
        end(&s);
        /* two records sent in the wrong order */
        REQUIRE(handshake(&s, CHP_NOISE_NK, NULL) && hello(&s));
        uint8_t a[64], b[64];
        ssize_t ra = chp_record_seal(&s.tx, frame, sizeof(frame), a, sizeof(a));
        ssize_t rb = chp_record_seal(&s.tx, frame, sizeof(frame), b, sizeof(b));
        REQUIRE(ra > 0 && rb > 0);
        CHECK(send_all(s.fd, b, (size_t)rb));
        CHECK(relay_closed(s.fd));
        end(&s);
        CHECK(still_serving());
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        if (sodium_init() < 0)
                return 1;
        int passed, failed = harness_run(&passed);
        if (relay.pid > 0 && rc_relay_stop(&relay, SIGTERM) != 0) {
                printf("FAIL the relay did not stop cleanly\n");
                failed++;
        }
        rc_relay_cleanup(&relay);
        return harness_report(passed, failed);
}
