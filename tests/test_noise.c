/* Noise (common/noise.c): the behaviour the test vectors (test_noise_vectors.c) cannot show:
 * names, every pattern and suite end to end, pinned keys that do not match, low-order keys,
 * truncated, flipped, replayed and reordered messages, tampered transport messages, wrong turns,
 * nonce exhaustion, Rekey, and that secrets are gone after wipe and split.
 */
#include "harness.h"

#include <errno.h>
#include <stdbool.h>

#include <sodium.h>

#include "noise.h"
#include "test_noise.h"

/* Deterministic keys, so a handshake can be replayed message for message. */
static void fixed_key(uint8_t k[CHP_KEY_BYTES], uint8_t seed)
{
        for (int i = 0; i < CHP_KEY_BYTES; i++)
                k[i] = (uint8_t)(seed + 37 * i);
}

struct pair {
        enum chp_noise_pattern pat;
        struct chp_noise_suite su;
        struct chp_noise_hs i, r;
        uint8_t is[CHP_KEY_BYTES], ipub[CHP_KEY_BYTES];
        uint8_t rs[CHP_KEY_BYTES], rpub[CHP_KEY_BYTES];
};

/* Both ends with fixed statics and ephemerals (eseed varies the ephemerals: another session);
 * pin replaces the responder key the initiator pins (NK, IK). */
static int pair_init(struct pair *p, enum chp_noise_pattern pat, struct chp_noise_suite su,
                     uint8_t eseed, const uint8_t *pin)
{
        uint8_t e[CHP_KEY_BYTES];
        memset(p, 0, sizeof(*p));
        p->pat = pat;
        p->su = su;
        fixed_key(p->is, 1);
        fixed_key(p->rs, 2);
        if (chp_noise_public(p->is, p->ipub) != 0 || chp_noise_public(p->rs, p->rpub) != 0)
                return -1;
        static const uint8_t prologue[] = "chapar test prologue";
        int rc = chp_noise_hs_init(&p->i, pat, su, true, prologue, sizeof(prologue),
                                   init_has_s(pat) ? p->is : NULL,
                                   init_has_rs(pat) ? (pin ? pin : p->rpub) : NULL);
        if (rc == 0)
                rc = chp_noise_hs_init(&p->r, pat, su, false, prologue, sizeof(prologue), p->rs,
                                       NULL);
        fixed_key(e, (uint8_t)(100 + eseed));
        chp_noise_hs_fix_ephemeral(&p->i, e);
        fixed_key(e, (uint8_t)(200 + eseed));
        chp_noise_hs_fix_ephemeral(&p->r, e);
        return rc;
}

/* Message k's payload: a few bytes that differ per message. */
static size_t payload_for(int k, uint8_t *buf)
{
        size_t n = (size_t)(3 + 5 * k);
        for (size_t j = 0; j < n; j++)
                buf[j] = (uint8_t)('a' + k + j);
        return n;
}

/* Writes message k (the sender is whoever's turn it is) into msg; reads it on the other side
 * when deliver is set. Returns the first failing code. */
static int pair_step(struct pair *p, int k, uint8_t *msg, size_t cap, size_t *len, bool deliver)
{
        uint8_t pl[64], got[CHP_NOISE_MSGMAX];
        size_t pn = payload_for(k, pl), gn = 0;
        struct chp_noise_hs *s = k % 2 == 0 ? &p->i : &p->r, *r = k % 2 == 0 ? &p->r : &p->i;
        int rc = chp_noise_hs_write(s, pl, pn, msg, cap, len);
        if (rc != 0 || !deliver)
                return rc;
        rc = chp_noise_hs_read(r, msg, *len, got, sizeof(got), &gn);
        if (rc == 0 && (gn != pn || memcmp(got, pl, pn) != 0))
                return -9999;
        return rc;
}

/* Runs the pair's first k messages. */
static int pair_advance(struct pair *p, int k)
{
        uint8_t msg[512];
        size_t len;
        for (int j = 0; j < k; j++) {
                int rc = pair_step(p, j, msg, sizeof(msg), &len, true);
                if (rc != 0)
                        return rc;
        }
        return 0;
}

static bool all_zero(const void *p, size_t n)
{
        return sodium_is_zero(p, n) == 1;
}

/* A wiped or failed handshake: every byte zero, refusing every further call. */
static bool hs_dead(struct chp_noise_hs *hs)
{
        uint8_t buf[256], pl[16];
        size_t n = 1;
        return all_zero(hs, sizeof(*hs)) && !chp_noise_hs_my_turn(hs) && !chp_noise_hs_done(hs) &&
               chp_noise_hs_write(hs, NULL, 0, buf, sizeof(buf), &n) == -EINVAL && n == 0 &&
               chp_noise_hs_read(hs, buf, 64, pl, sizeof(pl), &n) == -EINVAL;
}

TEST(names)
{
        enum chp_noise_pattern p;
        struct chp_noise_suite s;
        char buf[64];
        for (int i = 0; i < NPATTERNS; i++) {
                for (int j = 0; j < NSUITES; j++) {
                        char want[64];
                        snprintf(want, sizeof(want), "Noise_%s_25519_%s", pattern_names[i],
                                 suite_names[j]);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, sizeof(buf)),
                                 (long long)strlen(want));
                        CHECK(strcmp(buf, want) == 0);
                        REQUIRE_OK(chp_noise_parse_name(want, &p, &s));
                        CHECK(p == all_patterns[i]);
                        CHECK(s.cipher == all_suites[j].cipher && s.hash == all_suites[j].hash);
                        size_t n = strlen(want);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, n), -ENOSPC);
                        CHECK_EQ(chp_noise_name(all_patterns[i], all_suites[j], buf, n + 1),
                                 (long long)n);
                }
        }
        static const char *const refused[] = {
            "Noise_XX_448_ChaChaPoly_BLAKE2b",   "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
            "Noise_NN_25519_ChaChaPoly_BLAKE2b", "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            "Noise_XX_25519_AESGCM_BLAKE2b",     "Noise_XX_25519_ChaChaPoly_BLAKE2b ",
            "Noise_XX_25519_ChaChaPoly_BLAKE",   "noise_XX_25519_ChaChaPoly_BLAKE2b",
            "Noise_KK_25519_AESGCM_SHA256",      "",
        };
        for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
                CHECK_EQ(chp_noise_parse_name(refused[i], &p, &s), -EINVAL);
        CHECK_EQ(chp_noise_parse_name(NULL, &p, &s), -EINVAL);
        struct chp_noise_suite aes_blake = {CHP_NOISE_AESGCM, CHP_NOISE_BLAKE2B};
        CHECK_EQ(chp_noise_name(CHP_NOISE_XX, aes_blake, buf, sizeof(buf)), -EINVAL);
        CHECK(!chp_noise_suite_available(aes_blake));
        CHECK(chp_noise_suite_available(all_suites[0]));
        CHECK(chp_noise_suite_available(all_suites[2]));
        CHECK_EQ(chp_noise_suite_available(all_suites[1]), crypto_aead_aes256gcm_is_available());
}

TEST(keypair_public)
{
        uint8_t a[CHP_KEY_BYTES], apub[CHP_KEY_BYTES], b[CHP_KEY_BYTES], bpub[CHP_KEY_BYTES],
            again[CHP_KEY_BYTES];
        chp_noise_keypair(a, apub);
        chp_noise_keypair(b, bpub);
        CHECK(memcmp(a, b, sizeof(a)) != 0 && memcmp(apub, bpub, sizeof(apub)) != 0);
        CHECK_OK(chp_noise_public(a, again));
        CHECK(memcmp(again, apub, sizeof(again)) == 0);
        CHECK_EQ(chp_noise_public(NULL, again), -EINVAL);
        sodium_memzero(a, sizeof(a));
        sodium_memzero(b, sizeof(b));
}

/* Every pattern and suite with random keys, then transport both ways, in place too. */
TEST(handshake_and_transport_all)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                for (int si = 0; si < NSUITES; si++) {
                        enum chp_noise_pattern pat = all_patterns[pi];
                        struct chp_noise_suite su = all_suites[si];
                        if (!chp_noise_suite_available(su))
                                continue;
                        uint8_t is[32], ipub[32], rs[32], rpub[32], k[32];
                        chp_noise_keypair(is, ipub);
                        chp_noise_keypair(rs, rpub);
                        struct chp_noise_hs I, R;
                        REQUIRE_OK(chp_noise_hs_init(&I, pat, su, true, NULL, 0,
                                                     init_has_s(pat) ? is : NULL,
                                                     init_has_rs(pat) ? rpub : NULL));
                        REQUIRE_OK(chp_noise_hs_init(&R, pat, su, false, NULL, 0, rs, NULL));
                        CHECK_EQ(chp_noise_hs_remote_static(&R, k), -ENOENT);
                        for (int m = 0; m < nmsgs(pat); m++) {
                                uint8_t msg[256], pl[64], got[64];
                                size_t n, pn = payload_for(m, pl), gn;
                                struct chp_noise_hs *s = m % 2 ? &R : &I, *r = m % 2 ? &I : &R;
                                CHECK(chp_noise_hs_my_turn(s) && !chp_noise_hs_my_turn(r));
                                CHECK(!chp_noise_hs_done(s) && !chp_noise_hs_done(r));
                                REQUIRE_OK(chp_noise_hs_write(s, pl, pn, msg, sizeof(msg), &n));
                                REQUIRE_OK(chp_noise_hs_read(r, msg, n, got, sizeof(got), &gn));
                                CHECK(gn == pn && memcmp(got, pl, pn) == 0);
                        }
                        CHECK(chp_noise_hs_done(&I) && chp_noise_hs_done(&R));
                        CHECK(!chp_noise_hs_my_turn(&I) && !chp_noise_hs_my_turn(&R));
                        /* what each side learnt of the other */
                        CHECK_OK(chp_noise_hs_remote_static(&I, k));
                        CHECK(memcmp(k, rpub, 32) == 0);
                        if (init_has_s(pat)) {
                                CHECK_OK(chp_noise_hs_remote_static(&R, k));
                                CHECK(memcmp(k, ipub, 32) == 0);
                        } else {
                                CHECK_EQ(chp_noise_hs_remote_static(&R, k), -ENOENT);
                        }
                        struct chp_noise_cs is_, ir, rs_, rr;
                        uint8_t hi[CHP_NOISE_HASHMAX], hr[CHP_NOISE_HASHMAX];
                        size_t hin, hrn;
                        REQUIRE_OK(chp_noise_hs_split(&I, &is_, &ir, hi, &hin));
                        REQUIRE_OK(chp_noise_hs_split(&R, &rs_, &rr, hr, &hrn));
                        CHECK_EQ(hin, su.hash == CHP_NOISE_BLAKE2B ? 64 : 32);
                        CHECK(hin == hrn && memcmp(hi, hr, hin) == 0);
                        /* the peer key survives Split; wipe ends it */
                        CHECK_OK(chp_noise_hs_remote_static(&I, k));
                        CHECK(memcmp(k, rpub, 32) == 0);
                        chp_noise_hs_wipe(&I);
                        CHECK_EQ(chp_noise_hs_remote_static(&I, k), -ENOENT);
                        chp_noise_hs_wipe(&R);

                        for (int j = 0; j < 6; j++) {
                                uint8_t buf[300], orig[284];
                                size_t len = (size_t)j * 47;
                                for (size_t b = 0; b < len; b++)
                                        orig[b] = buf[b] = (uint8_t)(b * 3 + (size_t)j);
                                struct chp_noise_cs *s = j % 2 ? &rs_ : &is_,
                                                    *r = j % 2 ? &ir : &rr;
                                /* in place both ways */
                                REQUIRE_OK(chp_noise_encrypt(s, NULL, 0, buf, len, buf));
                                CHECK(len == 0 || memcmp(buf, orig, len) != 0);
                                REQUIRE_OK(chp_noise_decrypt(r, NULL, 0, buf, len + 16, buf));
                                CHECK(len == 0 || memcmp(buf, orig, len) == 0);
                        }
                        CHECK(is_.n == 3 && rr.n == 3 && rs_.n == 3 && ir.n == 3);
                        chp_noise_cs_wipe(&is_);
                        chp_noise_cs_wipe(&ir);
                        chp_noise_cs_wipe(&rs_);
                        chp_noise_cs_wipe(&rr);
                        sodium_memzero(is, sizeof(is));
                        sodium_memzero(rs, sizeof(rs));
                }
        }
}

TEST(wrong_pinned_key)
{
        uint8_t other[32], other_pub[32], msg[256], pl[64];
        size_t n, pn;
        fixed_key(other, 9);
        REQUIRE_OK(chp_noise_public(other, other_pub));
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_IK};
                for (int pi = 0; pi < 2; pi++) {
                        struct pair p;
                        REQUIRE_OK(pair_init(&p, pats[pi], all_suites[si], 0, other_pub));
                        REQUIRE_OK(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n));
                        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                        CHECK_EQ(pn, 0);
                        CHECK(hs_dead(&p.r));
                        chp_noise_hs_wipe(&p.i);
                }
        }
}

/* Points of order 1, 2, 4 and 8 (libsodium's list): X25519 with any of them is all zeros. */
static const uint8_t low_order[][32] = {
    {0},
    {1},
    {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
     0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
     0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
    {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
     0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
     0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
};

TEST(low_order_keys)
{
        struct chp_noise_suite su = all_suites[0];
        for (size_t li = 0; li < sizeof(low_order) / sizeof(low_order[0]); li++) {
                const uint8_t *pt = low_order[li];
                uint8_t d[32], sk[32], msg[512], pl[128];
                size_t n, pn;
                fixed_key(sk, 5);
                REQUIRE(crypto_scalarmult(d, sk, pt) != 0); /* it really is low order */

                /* NK and IK responders: "es" with the peer's e fails on reading */
                enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_IK};
                for (int pi = 0; pi < 2; pi++) {
                        struct pair p;
                        REQUIRE_OK(pair_init(&p, pats[pi], su, 0, NULL));
                        REQUIRE_OK(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n));
                        memcpy(msg, pt, 32);
                        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                        CHECK(hs_dead(&p.r));
                        chp_noise_hs_wipe(&p.i);
                }
                /* XX: the responder takes e (nothing is keyed yet) and fails on "ee" */
                struct pair p;
                REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
                memcpy(msg, pt, 32);
                REQUIRE_OK(chp_noise_hs_read(&p.r, msg, 32, pl, sizeof(pl), &pn));
                CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, msg, sizeof(msg), &n), -EBADMSG);
                CHECK_EQ(n, 0);
                CHECK(hs_dead(&p.r));
                chp_noise_hs_wipe(&p.i);
                /* XX initiator: a reply whose e is low order fails on reading ("ee") */
                REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
                REQUIRE_OK(pair_step(&p, 0, msg, sizeof(msg), &n, true));
                REQUIRE_OK(pair_step(&p, 1, msg, sizeof(msg), &n, false));
                memcpy(msg, pt, 32);
                CHECK_EQ(chp_noise_hs_read(&p.i, msg, n, pl, sizeof(pl), &pn), -EBADMSG);
                CHECK(hs_dead(&p.i));
                chp_noise_hs_wipe(&p.r);
                /* a pinned low-order responder key fails the initiator's first write */
                for (int pi = 0; pi < 2; pi++) {
                        REQUIRE_OK(pair_init(&p, pats[pi], su, 0, pt));
                        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n), -EBADMSG);
                        CHECK(hs_dead(&p.i));
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

/* A pair run up to message k, message k written (not delivered) into msg, and the side that is
 * to read it. The receiver is built once and each damaged message goes to a copy of it (the
 * structs are plain values, noise.h): the same bytes a session replayed from scratch would hold,
 * without the key generation and the k messages before it for every bit or cut. */
static int pair_before(struct pair *p, enum chp_noise_pattern pat, struct chp_noise_suite su, int k,
                       uint8_t *msg, size_t cap, size_t *n, struct chp_noise_hs **rcv)
{
        int rc = pair_init(p, pat, su, 0, NULL);
        if (rc == 0)
                rc = pair_advance(p, k);
        if (rc == 0)
                rc = pair_step(p, k, msg, cap, n, false);
        *rcv = k % 2 ? &p->i : &p->r;
        return rc;
}

/* The copies' control: the undamaged message, read by a copy of the receiver, gives message k's
 * payload; so a refusal of a damaged one is the damage's doing. */
static bool copy_reads_intact(const struct chp_noise_hs *rcv, int k, const uint8_t *msg, size_t n)
{
        struct chp_noise_hs r = *rcv;
        uint8_t want[64], pl[512];
        size_t wn = payload_for(k, want), pn = 0;
        bool ok = chp_noise_hs_read(&r, msg, n, pl, sizeof(pl), &pn) == 0 && pn == wn &&
                  memcmp(pl, want, wn) == 0;
        chp_noise_hs_wipe(&r);
        return ok;
}

TEST(truncated_and_extended_messages)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                for (int k = 0; k < nmsgs(pat); k++) {
                        struct pair p;
                        struct chp_noise_hs *rcv, r;
                        uint8_t msg[512], pl[512];
                        size_t n, pn;
                        REQUIRE_OK(
                            pair_before(&p, pat, all_suites[0], k, msg, sizeof(msg) - 1, &n, &rcv));
                        CHECK(copy_reads_intact(rcv, k, msg, n));
                        /* XX's first message is e and a cleartext payload: only a cut into e
                         * shows; every other message is authenticated to its last byte */
                        bool open = pat == CHP_NOISE_XX && k == 0;
                        size_t bad_below = open ? 32 : n;
                        for (size_t cut = 0; cut < n; cut++) {
                                r = *rcv;
                                int rc = chp_noise_hs_read(&r, msg, cut, pl, sizeof(pl), &pn);
                                CHECK_EQ(rc, cut < bad_below ? -EBADMSG : 0);
                                if (rc != 0)
                                        CHECK(hs_dead(&r));
                                chp_noise_hs_wipe(&r);
                        }
                        if (!open) {
                                /* one byte too many is as bad */
                                r = *rcv;
                                msg[n] = 0;
                                CHECK_EQ(chp_noise_hs_read(&r, msg, n + 1, pl, sizeof(pl), &pn),
                                         -EBADMSG);
                                chp_noise_hs_wipe(&r);
                        }
                        chp_noise_hs_wipe(&p.i);
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

/* Every bit of every authenticated handshake message matters. */
TEST(flipped_handshake_bits)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                for (int k = 0; k < nmsgs(pat); k++) {
                        if (pat == CHP_NOISE_XX && k == 0)
                                continue; /* unauthenticated by design */
                        struct pair p;
                        struct chp_noise_hs *rcv, r;
                        uint8_t msg[512], pl[512];
                        size_t n, pn;
                        REQUIRE_OK(
                            pair_before(&p, pat, all_suites[2], k, msg, sizeof(msg), &n, &rcv));
                        CHECK(copy_reads_intact(rcv, k, msg, n));
                        int wrong = 0;
                        for (size_t bit = 0; bit < n * 8; bit++) {
                                r = *rcv;
                                msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                                wrong +=
                                    chp_noise_hs_read(&r, msg, n, pl, sizeof(pl), &pn) != -EBADMSG;
                                msg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                                chp_noise_hs_wipe(&r);
                        }
                        CHECK_EQ(wrong, 0);
                        chp_noise_hs_wipe(&p.i);
                        chp_noise_hs_wipe(&p.r);
                }
        }
}

TEST(replayed_and_reordered_messages)
{
        for (int pi = 0; pi < NPATTERNS; pi++) {
                enum chp_noise_pattern pat = all_patterns[pi];
                struct pair a, b;
                uint8_t m0[512], m1[512], m2[512], pl[512];
                size_t n0, n1, n2 = 0, pn;

                /* the same message read twice: the second is out of turn */
                REQUIRE_OK(pair_init(&a, pat, all_suites[0], 0, NULL));
                REQUIRE_OK(pair_step(&a, 0, m0, sizeof(m0), &n0, true));
                CHECK_EQ(chp_noise_hs_read(&a.r, m0, n0, pl, sizeof(pl), &pn), -EINVAL);
                REQUIRE_OK(pair_step(&a, 1, m1, sizeof(m1), &n1, true));
                CHECK_EQ(chp_noise_hs_read(&a.i, m1, n1, pl, sizeof(pl), &pn), -EINVAL);
                if (pat == CHP_NOISE_XX) {
                        REQUIRE_OK(pair_step(&a, 2, m2, sizeof(m2), &n2, true));
                        CHECK_EQ(chp_noise_hs_read(&a.r, m2, n2, pl, sizeof(pl), &pn), -EINVAL);
                }
                CHECK(chp_noise_hs_done(&a.i) && chp_noise_hs_done(&a.r));

                /* session a's reply replayed into session b (other ephemerals) */
                REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                REQUIRE_OK(pair_advance(&b, 1));
                CHECK_EQ(chp_noise_hs_read(&b.i, m1, n1, pl, sizeof(pl), &pn), -EBADMSG);
                CHECK(hs_dead(&b.i));
                chp_noise_hs_wipe(&b.r);
                if (pat == CHP_NOISE_XX) { /* and its third message */
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                        REQUIRE_OK(pair_advance(&b, 2));
                        CHECK_EQ(chp_noise_hs_read(&b.r, m2, n2, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.i);
                        chp_noise_hs_wipe(&b.r);
                }

                /* out of order: the reply read as a first message (XX's first message is
                 * unauthenticated, so there it is the third read as the second that fails) */
                if (pat != CHP_NOISE_XX) {
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 1, NULL));
                        CHECK_EQ(chp_noise_hs_read(&b.r, m1, n1, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.i);
                }
                if (pat == CHP_NOISE_XX) {
                        REQUIRE_OK(pair_init(&b, pat, all_suites[0], 0, NULL));
                        REQUIRE_OK(pair_advance(&b, 1));
                        CHECK_EQ(chp_noise_hs_read(&b.i, m2, n2, pl, sizeof(pl), &pn), -EBADMSG);
                        chp_noise_hs_wipe(&b.r);
                }
                chp_noise_hs_wipe(&a.i);
                chp_noise_hs_wipe(&a.r);
        }
}

/* A finished pair's transport states. */
static int transport_pair(struct chp_noise_suite su, struct chp_noise_cs *isend,
                          struct chp_noise_cs *irecv, struct chp_noise_cs *rsend,
                          struct chp_noise_cs *rrecv)
{
        struct pair p;
        if (pair_init(&p, CHP_NOISE_XX, su, 0, NULL) != 0 || pair_advance(&p, 3) != 0)
                return -1;
        int rc = chp_noise_hs_split(&p.i, isend, irecv, NULL, NULL);
        if (rc == 0)
                rc = chp_noise_hs_split(&p.r, rsend, rrecv, NULL, NULL);
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);
        return rc;
}

TEST(transport_tampering_and_order)
{
        for (int si = 0; si < NSUITES; si++) {
                if (!chp_noise_suite_available(all_suites[si]))
                        continue;
                struct chp_noise_cs is, ir, rs, rr;
                REQUIRE_OK(transport_pair(all_suites[si], &is, &ir, &rs, &rr));
                uint8_t ad[3] = {1, 2, 3}, m1[64], m2[64], out[64];
                const uint8_t plain[] = "a transport message";
                size_t len = sizeof(plain), clen = len + 16;
                REQUIRE_OK(chp_noise_encrypt(&is, ad, sizeof(ad), plain, len, m1));
                REQUIRE_OK(chp_noise_encrypt(&is, ad, sizeof(ad), plain, len, m2));
                CHECK(memcmp(m1, m2, clen) != 0); /* another nonce */
                int wrong = 0;
                for (size_t bit = 0; bit < clen * 8; bit++) {
                        m1[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                        wrong += chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out) != -EBADMSG;
                        wrong += rr.n != 0;
                        m1[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                }
                CHECK_EQ(wrong, 0);
                ad[0] ^= 1; /* the associated data is authenticated too */
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                ad[0] ^= 1;
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, 15, out), -EBADMSG);
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen - 1, out), -EBADMSG);
                /* out of order, then in order, then replayed */
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m2, clen, out), -EBADMSG);
                CHECK_EQ(rr.n, 0);
                CHECK_OK(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out));
                CHECK(memcmp(out, plain, len) == 0);
                CHECK_OK(chp_noise_decrypt(&rr, ad, sizeof(ad), m2, clen, out));
                CHECK_EQ(chp_noise_decrypt(&rr, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                CHECK_EQ(rr.n, 2);
                /* the directions have different keys */
                CHECK_EQ(chp_noise_decrypt(&ir, ad, sizeof(ad), m1, clen, out), -EBADMSG);
                chp_noise_cs_wipe(&is);
                chp_noise_cs_wipe(&ir);
                chp_noise_cs_wipe(&rs);
                chp_noise_cs_wipe(&rr);
        }
}

/* The nonce layouts the specification fixes: ChaChaPoly little-endian, AESGCM big-endian. */
TEST(nonce_encoding)
{
        for (int si = 0; si < NSUITES; si++) {
                struct chp_noise_suite su = all_suites[si];
                if (!chp_noise_suite_available(su))
                        continue;
                struct chp_noise_cs cs;
                memset(&cs, 0, sizeof(cs));
                cs.suite = su;
                fixed_key(cs.k, 77);
                cs.has_key = true;
                cs.n = 0x0102030405060708ull;
                uint8_t got[32], want[32], nonce[12] = {0};
                unsigned long long wl;
                REQUIRE_OK(chp_noise_encrypt(&cs, NULL, 0, (const uint8_t *)"x", 1, got));
                CHECK(cs.n == 0x0102030405060709ull);
                for (int i = 0; i < 8; i++)
                        nonce[su.cipher == CHP_NOISE_AESGCM ? 4 + i : 11 - i] = (uint8_t)(i + 1);
                if (su.cipher == CHP_NOISE_AESGCM)
                        crypto_aead_aes256gcm_encrypt(want, &wl, (const uint8_t *)"x", 1, NULL, 0,
                                                      NULL, nonce, cs.k);
                else
                        crypto_aead_chacha20poly1305_ietf_encrypt(want, &wl, (const uint8_t *)"x",
                                                                  1, NULL, 0, NULL, nonce, cs.k);
                CHECK(memcmp(got, want, 17) == 0);
                chp_noise_cs_wipe(&cs);
        }
}

TEST(nonce_exhaustion_and_rekey)
{
        for (int si = 0; si < NSUITES; si++) {
                struct chp_noise_suite su = all_suites[si];
                if (!chp_noise_suite_available(su))
                        continue;
                struct chp_noise_cs is, ir, rs, rr;
                REQUIRE_OK(transport_pair(su, &is, &ir, &rs, &rr));
                uint8_t c[32], p[16];
                /* n = 2^64-1 is never used: the last message is n = 2^64-2 */
                is.n = rr.n = UINT64_MAX - 1;
                CHECK_OK(chp_noise_encrypt(&is, NULL, 0, (const uint8_t *)"z", 1, c));
                CHECK_OK(chp_noise_decrypt(&rr, NULL, 0, c, 17, p));
                CHECK(is.n == UINT64_MAX && rr.n == UINT64_MAX);
                CHECK_EQ(chp_noise_encrypt(&is, NULL, 0, (const uint8_t *)"z", 1, c), -EBADMSG);
                CHECK_EQ(chp_noise_decrypt(&rr, NULL, 0, c, 17, p), -EBADMSG);
                CHECK(is.n == UINT64_MAX);

                /* Rekey = the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zeros) */
                uint8_t old[32], zeros[32] = {0}, want[48], nonce[12];
                unsigned long long wl;
                memcpy(old, rs.k, 32);
                memset(nonce, 0xff, sizeof(nonce));
                memset(nonce, 0, 4);
                if (su.cipher == CHP_NOISE_AESGCM)
                        crypto_aead_aes256gcm_encrypt(want, &wl, zeros, 32, NULL, 0, NULL, nonce,
                                                      old);
                else
                        crypto_aead_chacha20poly1305_ietf_encrypt(want, &wl, zeros, 32, NULL, 0,
                                                                  NULL, nonce, old);
                uint64_t n = rs.n;
                chp_noise_rekey(&rs);
                CHECK(memcmp(rs.k, want, 32) == 0);
                CHECK(rs.n == n); /* Rekey leaves n alone */
                /* one side rekeyed: nothing decrypts; both: it works again */
                CHECK_OK(chp_noise_encrypt(&rs, NULL, 0, (const uint8_t *)"y", 1, c));
                CHECK_EQ(chp_noise_decrypt(&ir, NULL, 0, c, 17, p), -EBADMSG);
                chp_noise_rekey(&ir);
                CHECK_OK(chp_noise_decrypt(&ir, NULL, 0, c, 17, p));
                CHECK(p[0] == 'y');
                sodium_memzero(old, sizeof(old));
                sodium_memzero(want, sizeof(want));
                chp_noise_cs_wipe(&is);
                chp_noise_cs_wipe(&ir);
                chp_noise_cs_wipe(&rs);
                chp_noise_cs_wipe(&rr);
        }
}

TEST(wrong_turn_and_early_split)
{
        struct pair p;
        struct chp_noise_cs s, r;
        uint8_t msg[512], other[512], pl[64], h[CHP_NOISE_HASHMAX];
        size_t n, n0, pn, hl;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, all_suites[0], 0, NULL));
        /* the responder may not speak first, nor the initiator read first */
        CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_read(&p.i, other, 48, pl, sizeof(pl), &pn), -EINVAL);
        REQUIRE_OK(pair_step(&p, 0, msg, sizeof(msg), &n0, false));
        /* the initiator wrote: it must not write again, nor split; the responder must read */
        CHECK_EQ(chp_noise_hs_write(&p.r, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, other, sizeof(other), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &r, h, &hl), -EINVAL);
        CHECK(all_zero(&s, sizeof(s)) && all_zero(&r, sizeof(r)) && hl == 0);
        /* none of that hurt: the handshake goes on */
        REQUIRE_OK(chp_noise_hs_read(&p.r, msg, n0, pl, sizeof(pl), &pn));
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n0, pl, sizeof(pl), &pn), -EINVAL);
        REQUIRE_OK(pair_step(&p, 1, msg, sizeof(msg), &n, true));
        CHECK_EQ(chp_noise_hs_split(&p.r, &s, &r, h, &hl), -EINVAL);
        REQUIRE_OK(pair_step(&p, 2, msg, sizeof(msg), &n, true));
        /* done: no more handshake messages either way */
        CHECK_EQ(chp_noise_hs_write(&p.i, NULL, 0, msg, sizeof(msg), &n), -EINVAL);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, sizeof(pl), &pn), -EINVAL);
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &s, h, &hl), -EINVAL);
        CHECK_OK(chp_noise_hs_split(&p.i, &s, &r, h, &hl));
        /* a split handshake is spent */
        CHECK_EQ(chp_noise_hs_split(&p.i, &s, &r, h, &hl), -EINVAL);
        CHECK(all_zero(&s, sizeof(s)));
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);
}

TEST(misuse)
{
        uint8_t k[32], pub[32], msg[CHP_NOISE_MSGMAX + 64], *pl = malloc(CHP_NOISE_MSGMAX);
        REQUIRE(pl);
        struct chp_noise_hs hs;
        struct chp_noise_suite su = all_suites[0];
        fixed_key(k, 3);
        REQUIRE_OK(chp_noise_public(k, pub));
        /* exactly the keys the pattern uses */
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_NK, su, true, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_NK, su, true, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_IK, su, true, NULL, 0, k, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, true, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, true, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, false, NULL, 0, NULL, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_IK, su, false, NULL, 0, k, pub), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, (enum chp_noise_pattern)7, su, false, NULL, 0, k, NULL),
                 -EINVAL);
        struct chp_noise_suite aes_blake = {CHP_NOISE_AESGCM, CHP_NOISE_BLAKE2B};
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, aes_blake, false, NULL, 0, k, NULL), -EINVAL);
        CHECK_EQ(chp_noise_hs_init(&hs, CHP_NOISE_XX, su, false, NULL, 5, k, NULL), -EINVAL);
        CHECK(hs_dead(&hs));
        CHECK_EQ(chp_noise_hs_init(NULL, CHP_NOISE_XX, su, false, NULL, 0, k, NULL), -EINVAL);

        /* room: -ENOSPC leaves the handshake as it was, so a retry works */
        struct pair p;
        size_t n = 7, pn = 7;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_IK, su, 0, NULL));
        CHECK_EQ(chp_noise_hs_write(&p.i, (const uint8_t *)"abc", 3, msg, 32 + 48 + 16 + 3 - 1, &n),
                 -ENOSPC);
        CHECK_EQ(n, 0);
        REQUIRE_OK(chp_noise_hs_write(&p.i, (const uint8_t *)"abc", 3, msg, 32 + 48 + 16 + 3, &n));
        CHECK_EQ(n, 32 + 48 + 16 + 3);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, n, pl, 2, &pn), -ENOSPC);
        CHECK_EQ(pn, 0);
        REQUIRE_OK(chp_noise_hs_read(&p.r, msg, n, pl, 3, &pn));
        CHECK(pn == 3 && memcmp(pl, "abc", 3) == 0);
        chp_noise_hs_wipe(&p.i);
        chp_noise_hs_wipe(&p.r);

        /* a handshake message is at most 65535 bytes */
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, su, 0, NULL));
        memset(pl, 'p', CHP_NOISE_MSGMAX);
        CHECK_EQ(chp_noise_hs_write(&p.i, pl, CHP_NOISE_MSGMAX - 31, msg, sizeof(msg), &n),
                 -EINVAL);
        REQUIRE_OK(chp_noise_hs_write(&p.i, pl, CHP_NOISE_MSGMAX - 32, msg, sizeof(msg), &n));
        CHECK_EQ(n, CHP_NOISE_MSGMAX);
        CHECK_EQ(chp_noise_hs_read(&p.r, msg, CHP_NOISE_MSGMAX + 1, pl, CHP_NOISE_MSGMAX, &pn),
                 -EBADMSG);
        chp_noise_hs_wipe(&p.i);

        /* transport: no key, too long */
        struct chp_noise_cs cs;
        memset(&cs, 0, sizeof(cs));
        CHECK_EQ(chp_noise_encrypt(&cs, NULL, 0, pl, 1, msg), -EINVAL);
        CHECK_EQ(chp_noise_decrypt(&cs, NULL, 0, msg, 17, pl), -EINVAL);
        chp_noise_rekey(&cs); /* no key: nothing to do */
        CHECK(all_zero(&cs, sizeof(cs)));
        cs.suite = su;
        fixed_key(cs.k, 4);
        cs.has_key = true;
        CHECK_EQ(chp_noise_encrypt(&cs, NULL, 0, pl, CHP_NOISE_PLAINMAX + 1, msg), -EINVAL);
        CHECK_OK(chp_noise_encrypt(&cs, NULL, 0, pl, CHP_NOISE_PLAINMAX, msg));
        CHECK_EQ(cs.n, 1);
        chp_noise_cs_wipe(&cs);
        chp_noise_cs_wipe(NULL);
        chp_noise_hs_wipe(NULL);
        free(pl);
}

TEST(secrets_gone_after_split_and_wipe)
{
        struct pair p;
        struct chp_noise_cs s, r;
        REQUIRE_OK(pair_init(&p, CHP_NOISE_IK, all_suites[0], 0, NULL));
        REQUIRE_OK(pair_advance(&p, 2));
        CHECK(!all_zero(p.i.ck, sizeof(p.i.ck)) && !all_zero(p.i.e_priv, 32));
        REQUIRE_OK(chp_noise_hs_split(&p.i, &s, &r, NULL, NULL));
        /* after Split only the peer's public key is left */
        CHECK(all_zero(p.i.s_priv, sizeof(p.i.s_priv)) && all_zero(p.i.e_priv, 32) &&
              all_zero(p.i.s_pub, 32) && all_zero(p.i.e_pub, 32) && all_zero(p.i.re, 32));
        CHECK(all_zero(p.i.ck, sizeof(p.i.ck)) && all_zero(p.i.h, sizeof(p.i.h)));
        CHECK(all_zero(&p.i.cs, sizeof(p.i.cs)) && p.i.hashlen == 0 && !p.i.has_s);
        CHECK(p.i.has_rs && memcmp(p.i.rs, p.rpub, 32) == 0);
        CHECK(!chp_noise_hs_done(&p.i) && !chp_noise_hs_my_turn(&p.i));
        chp_noise_hs_wipe(&p.i);
        CHECK(all_zero(&p.i, sizeof(p.i)));
        CHECK(!all_zero(s.k, 32) && s.has_key);
        chp_noise_cs_wipe(&s);
        chp_noise_cs_wipe(&r);
        CHECK(all_zero(&s, sizeof(s)) && all_zero(&r, sizeof(r)));
        /* a handshake wiped midway */
        chp_noise_hs_wipe(&p.r);
        REQUIRE_OK(pair_init(&p, CHP_NOISE_XX, all_suites[0], 0, NULL));
        REQUIRE_OK(pair_advance(&p, 1));
        chp_noise_hs_wipe(&p.r);
        CHECK(hs_dead(&p.r));
        chp_noise_hs_wipe(&p.i);
}

int main(void)
{
        if (sodium_init() < 0) {
                fprintf(stderr, "sodium_init failed\n");
                return 1;
        }
        int passed, failed = harness_run(&passed);
        return harness_report(passed, failed);
}
