/* Records (common/record.c): round trips at 0 (the close record), 1 and CHP_RECORD_PLAIN_MAX bytes
 * for every suite; peek on partial input and bad lengths; every flipped bit refused; records out
 * of order or replayed refused; the rekey after CHP_RECORD_REKEY records, in step on both ends;
 * decryption in place; the sealed size of a stream.
 */
#include "harness.h"
#include "testutil.h"

#include <errno.h>
#include <stdbool.h>

#include <sodium.h>

#include "noise.h"
#include "record.h"

static const struct chp_noise_suite all_suites[] = {
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
    {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256},
};
#define NSUITES 3

/* Both ends of one direction, sharing a key as a finished handshake would leave them. */
static void dir_pair(struct chp_noise_suite su, uint8_t seed, struct chp_record_dir *tx,
                     struct chp_record_dir *rx)
{
        memset(tx, 0, sizeof(*tx));
        tx->cs.suite = su;
        for (int i = 0; i < CHP_NOISE_KEYLEN; i++)
                tx->cs.k[i] = (uint8_t)(seed * 31 + i);
        tx->cs.has_key = true;
        *rx = *tx;
}

static bool all_zero(const void *p, size_t n)
{
        return sodium_is_zero(p, n) == 1;
}

TEST(round_trip_sizes)
{
        uint8_t *plain = malloc(CHP_RECORD_PLAIN_MAX), *rec = malloc(CHP_RECORD_MAX),
                *got = malloc(CHP_RECORD_PLAIN_MAX);
        REQUIRE(plain && rec && got);
        for (size_t i = 0; i < CHP_RECORD_PLAIN_MAX; i++)
                plain[i] = (uint8_t)(i * 7 + 1);
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                struct chp_record_dir tx, rx;
                dir_pair(all_suites[si], 1, &tx, &rx);
                const size_t sizes[] = {1, 0, 2, CHP_RECORD_PLAIN_MAX, 1000, 0};
                for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
                        size_t len = sizes[k], pn = 7;
                        bool closed = true;
                        ssize_t n = chp_record_seal(&tx, plain, len, rec, CHP_RECORD_MAX);
                        CHECK_EQ(n, (long long)(len + 18));
                        if (n < 0)
                                continue;
                        CHECK_EQ(rec[0] << 8 | rec[1], (long long)(len + 16));
                        CHECK_EQ(chp_record_peek(rec, (size_t)n), n);
                        CHECK_EQ(chp_record_open(&rx, rec, (size_t)n, got, &pn, &closed), n);
                        CHECK_EQ(pn, len);
                        CHECK(closed == (len == 0));
                        CHECK(len == 0 || memcmp(got, plain, len) == 0);
                }
                CHECK(tx.count == 6 && rx.count == 6 && tx.cs.n == 6 && rx.cs.n == 6);
                chp_record_wipe(&tx);
                chp_record_wipe(&rx);
        }
        free(plain);
        free(rec);
        free(got);
}

TEST(seal_limits)
{
        struct chp_record_dir tx, rx;
        uint8_t *big = calloc(1, CHP_RECORD_MAX + 1);
        REQUIRE(big);
        dir_pair(all_suites[0], 2, &tx, &rx);
        CHECK_EQ(chp_record_seal(&tx, big, CHP_RECORD_PLAIN_MAX + 1, big, CHP_RECORD_MAX + 1),
                 -EINVAL);
        CHECK_EQ(chp_record_seal(&tx, big, 10, big, 27), -ENOSPC);
        CHECK_EQ(chp_record_seal(&tx, NULL, 0, big, 17), -ENOSPC);
        CHECK_EQ(chp_record_seal(&tx, NULL, 0, big, 18), 18);
        CHECK_EQ(chp_record_seal(&tx, NULL, 1, big, 100), -EINVAL);
        CHECK(tx.count == 1 && tx.cs.n == 1); /* the refusals consumed nothing */
        /* a direction without a key seals nothing */
        struct chp_record_dir none;
        memset(&none, 0, sizeof(none));
        CHECK_EQ(chp_record_seal(&none, big, 1, big + 100, 100), -EINVAL);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
        free(big);
}

TEST(peek_and_partial)
{
        uint8_t rec[64], got[64];
        size_t pn;
        bool closed;
        struct chp_record_dir tx, rx;
        dir_pair(all_suites[0], 3, &tx, &rx);
        ssize_t n = chp_record_seal(&tx, (const uint8_t *)"hello", 5, rec, sizeof(rec));
        REQUIRE(n == 23);
        CHECK_EQ(chp_record_peek(NULL, 0), -EAGAIN);
        for (size_t len = 0; len < (size_t)n; len++) {
                CHECK_EQ(chp_record_peek(rec, len), -EAGAIN);
                CHECK_EQ(chp_record_open(&rx, rec, len, got, &pn, &closed), -EAGAIN);
        }
        CHECK(rx.count == 0 && rx.cs.n == 0);              /* waiting consumed nothing */
        CHECK_EQ(chp_record_peek(rec, (size_t)n + 10), n); /* the next record's bytes are not its */
        CHECK_EQ(chp_record_open(&rx, rec, (size_t)n + 10, got, &pn, &closed), n);
        CHECK(pn == 5 && !closed && memcmp(got, "hello", 5) == 0);

        /* lengths under 16 are refused as soon as the header is there */
        for (unsigned l = 0; l < 16; l++) {
                uint8_t h[40] = {0, (uint8_t)l};
                CHECK_EQ(chp_record_peek(h, 2), -EBADMSG);
                CHECK_EQ(chp_record_peek(h, sizeof(h)), -EBADMSG);
                CHECK_EQ(chp_record_open(&rx, h, sizeof(h), got, &pn, &closed), -EBADMSG);
        }
        uint8_t h16[2] = {0, 16}, hmax[2] = {0xff, 0xff};
        CHECK_EQ(chp_record_peek(h16, 2), -EAGAIN);
        CHECK_EQ(chp_record_peek(hmax, 2), -EAGAIN);
        uint8_t *max = calloc(1, CHP_RECORD_MAX);
        REQUIRE(max);
        max[0] = max[1] = 0xff;
        CHECK_EQ(chp_record_peek(max, CHP_RECORD_MAX), CHP_RECORD_MAX);
        CHECK_EQ(chp_record_peek(max, CHP_RECORD_MAX - 1), -EAGAIN);
        free(max);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
}

/* Every bit of a record, header included, flipped: refused with -EBADMSG. The record sits in a
 * buffer long enough for any length the flipped header can claim, so a longer length finds bytes
 * (and a failing tag) rather than waiting for more. */
TEST(flipped_bits)
{
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                uint8_t *buf = calloc(1, CHP_RECORD_MAX), *got = malloc(CHP_RECORD_PLAIN_MAX);
                REQUIRE(buf && got);
                const size_t lens[] = {0, 1, 40};
                for (size_t li = 0; li < 3; li++) {
                        struct chp_record_dir tx, rx;
                        dir_pair(all_suites[si], 4, &tx, &rx);
                        uint8_t plain[40];
                        memset(plain, 'q', sizeof(plain));
                        ssize_t n = chp_record_seal(&tx, plain, lens[li], buf, CHP_RECORD_MAX);
                        REQUIRE(n == (ssize_t)lens[li] + 18);
                        int wrong = 0;
                        for (size_t bit = 0; bit < (size_t)n * 8; bit++) {
                                size_t pn = 9;
                                bool closed = true;
                                buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                                wrong += chp_record_open(&rx, buf, CHP_RECORD_MAX, got, &pn,
                                                         &closed) != -EBADMSG;
                                wrong += pn != 0 || closed || rx.count != 0 || rx.cs.n != 0;
                                buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                        }
                        CHECK_EQ(wrong, 0);
                        size_t pn;
                        bool closed;
                        CHECK_EQ(chp_record_open(&rx, buf, (size_t)n, got, &pn, &closed), n);
                        chp_record_wipe(&tx);
                        chp_record_wipe(&rx);
                        memset(buf, 0, CHP_RECORD_MAX);
                }
                free(buf);
                free(got);
        }
}

TEST(order_and_replay)
{
        struct chp_record_dir tx, rx;
        uint8_t r1[64], r2[64], r3[64], got[64];
        size_t pn;
        bool closed;
        dir_pair(all_suites[0], 5, &tx, &rx);
        REQUIRE(chp_record_seal(&tx, (const uint8_t *)"one", 3, r1, sizeof(r1)) == 21);
        REQUIRE(chp_record_seal(&tx, (const uint8_t *)"two", 3, r2, sizeof(r2)) == 21);
        REQUIRE(chp_record_seal(&tx, NULL, 0, r3, sizeof(r3)) == 18);
        CHECK_EQ(chp_record_open(&rx, r2, 21, got, &pn, &closed), -EBADMSG);
        CHECK_EQ(chp_record_open(&rx, r3, 18, got, &pn, &closed), -EBADMSG);
        CHECK_EQ(chp_record_open(&rx, r1, 21, got, &pn, &closed), 21);
        CHECK(memcmp(got, "one", 3) == 0);
        CHECK_EQ(chp_record_open(&rx, r1, 21, got, &pn, &closed), -EBADMSG); /* replayed */
        CHECK_EQ(chp_record_open(&rx, r2, 21, got, &pn, &closed), 21);
        CHECK(memcmp(got, "two", 3) == 0);
        /* a close record cannot be made from a data record by cutting it short */
        uint8_t cut[21];
        memcpy(cut, r3, 18);
        CHECK_EQ(chp_record_open(&rx, r3, 18, got, &pn, &closed), 18);
        CHECK(closed && pn == 0);
        memcpy(cut, r1, 21);
        cut[1] = 16;
        struct chp_record_dir rx2;
        dir_pair(all_suites[0], 5, &tx, &rx2);
        CHECK_EQ(chp_record_open(&rx2, cut, 18, got, &pn, &closed), -EBADMSG);
        CHECK(!closed);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
        chp_record_wipe(&rx2);
}

/* Decryption in place: plain = buf + header, as a receive buffer is used. */
TEST(in_place)
{
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                struct chp_record_dir tx, rx;
                dir_pair(all_suites[si], 6, &tx, &rx);
                uint8_t buf[300], want[200];
                for (size_t i = 0; i < sizeof(want); i++)
                        want[i] = (uint8_t)(i ^ 0x5a);
                /* seal in place too: the plaintext already sits after the header */
                memcpy(buf + 2, want, sizeof(want));
                ssize_t n = chp_record_seal(&tx, buf + 2, sizeof(want), buf, sizeof(buf));
                REQUIRE(n == 218);
                CHECK(memcmp(buf + 2, want, sizeof(want)) != 0);
                size_t pn;
                bool closed;
                CHECK_EQ(chp_record_open(&rx, buf, (size_t)n, buf + 2, &pn, &closed), n);
                CHECK(pn == sizeof(want) && memcmp(buf + 2, want, sizeof(want)) == 0);
                chp_record_wipe(&tx);
                chp_record_wipe(&rx);
        }
}

/* The rekey after CHP_RECORD_REKEY records: both ends, in step, and only there. */
TEST(rekey_in_step)
{
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                struct chp_record_dir tx, rx;
                dir_pair(all_suites[si], 7, &tx, &rx);
                tx.count = rx.count = CHP_RECORD_REKEY - 2; /* as if that many had passed */
                tx.cs.n = rx.cs.n = CHP_RECORD_REKEY - 2;
                uint8_t k0[32], rec[64], got[64];
                size_t pn;
                bool closed;
                memcpy(k0, tx.cs.k, 32);
                for (int i = 0; i < 4; i++) {
                        /* record REKEY-1, REKEY (after which both rekey), REKEY+1, REKEY+2 */
                        uint8_t p = (uint8_t)('0' + i);
                        ssize_t n = chp_record_seal(&tx, &p, 1, rec, sizeof(rec));
                        REQUIRE(n == 19);
                        CHECK_EQ(chp_record_open(&rx, rec, 19, got, &pn, &closed), 19);
                        CHECK(pn == 1 && got[0] == p);
                        bool rekeyed = tx.count >= CHP_RECORD_REKEY;
                        CHECK(rekeyed == (memcmp(tx.cs.k, k0, 32) != 0));
                        CHECK(memcmp(tx.cs.k, rx.cs.k, 32) == 0);
                        CHECK(tx.cs.n == rx.cs.n && tx.count == rx.count);
                }
                CHECK_EQ(tx.count, CHP_RECORD_REKEY + 2);
                CHECK_EQ(tx.cs.n, CHP_RECORD_REKEY + 2); /* Rekey leaves n alone */
                /* the new key is Rekey() of the old one */
                struct chp_noise_cs cs;
                memset(&cs, 0, sizeof(cs));
                cs.suite = all_suites[si];
                memcpy(cs.k, k0, 32);
                cs.has_key = true;
                chp_noise_rekey(&cs);
                CHECK(memcmp(cs.k, tx.cs.k, 32) == 0);
                /* a receiver out of step (its count does not reach the boundary) opens the
                 * last record under the old key and nothing after it */
                struct chp_record_dir tx2, off;
                uint8_t r1[32], r2[32];
                dir_pair(all_suites[si], 7, &tx2, &off);
                tx2.count = CHP_RECORD_REKEY - 1;
                tx2.cs.n = off.cs.n = CHP_RECORD_REKEY - 1;
                REQUIRE(chp_record_seal(&tx2, (const uint8_t *)"x", 1, r1, sizeof(r1)) == 19);
                REQUIRE(chp_record_seal(&tx2, (const uint8_t *)"y", 1, r2, sizeof(r2)) == 19);
                CHECK_EQ(chp_record_open(&off, r1, 19, got, &pn, &closed), 19);
                CHECK_EQ(chp_record_open(&off, r2, 19, got, &pn, &closed), -EBADMSG);
                sodium_memzero(k0, sizeof(k0));
                chp_noise_cs_wipe(&cs);
                chp_record_wipe(&tx);
                chp_record_wipe(&tx2);
                chp_record_wipe(&off);
                chp_record_wipe(&rx);
        }
}

TEST(sealed_size)
{
        CHECK_EQ(chp_record_sealed_size(0), 0);
        CHECK_EQ(chp_record_sealed_size(1), 19);
        CHECK_EQ(chp_record_sealed_size(CHP_RECORD_PLAIN_MAX), CHP_RECORD_MAX);
        CHECK_EQ(chp_record_sealed_size(CHP_RECORD_PLAIN_MAX + 1), CHP_RECORD_MAX + 19);
        CHECK_EQ(chp_record_sealed_size(3 * (size_t)CHP_RECORD_PLAIN_MAX), 3 * CHP_RECORD_MAX);
        CHECK(chp_record_sealed_size(SIZE_MAX) == SIZE_MAX);
}

TEST(wipe)
{
        struct chp_record_dir tx, rx;
        dir_pair(all_suites[0], 8, &tx, &rx);
        uint8_t rec[32];
        REQUIRE(chp_record_seal(&tx, (const uint8_t *)"a", 1, rec, sizeof(rec)) == 19);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
        chp_record_wipe(NULL);
        CHECK(all_zero(&tx, sizeof(tx)) && all_zero(&rx, sizeof(rx)));
        size_t pn;
        bool closed;
        uint8_t got[8];
        CHECK_EQ(chp_record_seal(&tx, (const uint8_t *)"a", 1, rec, sizeof(rec)), -EINVAL);
        CHECK(chp_record_open(&rx, rec, 19, got, &pn, &closed) < 0);
}

/* Sealing and opening records allocate nothing: the sweep must find no allocation to fail. */
static int record_pass(void *arg)
{
        (void)arg;
        uint8_t plain[300], rec[300 + 18], got[300];
        memset(plain, 0x5a, sizeof(plain));
        struct chp_record_dir tx, rx;
        dir_pair(all_suites[0], 9, &tx, &rx);
        size_t pn = 0;
        bool closed = true;
        ssize_t n = chp_record_seal(&tx, plain, sizeof(plain), rec, sizeof(rec));
        ssize_t m = n < 0 ? n : chp_record_open(&rx, rec, (size_t)n, got, &pn, &closed);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
        if (m < 0)
                return (int)m;
        return m == n && pn == sizeof(plain) && !closed && memcmp(got, plain, pn) == 0 ? 0 : 1;
}

TEST(allocation_failure)
{
        CHECK_EQ(tu_alloc_sweep("record seal/open", record_pass, NULL, 0), 0);
}

int main(void)
{
        if (sodium_init() < 0)
                return 1;
        int passed, failed = harness_run(&passed);
        return harness_report(passed, failed);
}
