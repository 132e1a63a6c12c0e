/* Fuzz target for the Noise handshake (common/noise.c) and the record layer (common/record.c),
 * fed the way a connection feeds them. Every key, ephemeral ones included, is fixed, so a whole
 * valid conversation is a reproducible input and mutations start deep inside it.
 *
 * Byte 0 chooses: mode = b % 7, suite = (b / 7) % 3 (ChaChaPoly_BLAKE2b, AESGCM_SHA256 — if this
 * machine has AES-NI, else the first — ChaChaPoly_SHA256). The rest of the input is:
 *   mode 0-2  a responder of NK, XX, IK: chunks (2-byte big-endian length + bytes) holding the
 *             initiator's handshake messages (the first; for XX also the third), then a record
 *             stream the responder opens with the session keys;
 *   mode 3-5  an initiator of NK, XX, IK that has sent its first message: a chunk holding the
 *             responder's reply, then a record stream (XX: the initiator writes the third message
 *             in between, as it would);
 *   mode 6    a record stream opened with a fixed key.
 * Each message and record is copied to an exact-size buffer, so ASan catches a read past its end.
 * Every result is checked: a read either succeeds or is -EBADMSG and leaves the handshake wiped;
 * a write fails only for a low-order peer ephemeral; a record opens exactly as its header says or
 * is refused without changing the direction. Anything else aborts.
 *
 * Linked with libFuzzer, or with replay.c to run the committed corpus under ctest. Built with
 * -DCHP_FUZZ_NOISE_GEN (and no fuzzer) it is instead the program that writes the seed corpus:
 *   cc -DCHP_FUZZ_NOISE_GEN -Icommon tests/fuzz/fuzz_noise.c common/noise.c common/record.c \
 *      -lsodium -o gen && ./gen tests/fuzz/corpus/noise
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "noise.h"
#include "record.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NMODES       7
#define MODE_RECORDS 6

static const struct chp_noise_suite suites[] = {
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
    {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256},
};
static const enum chp_noise_pattern pats[] = {CHP_NOISE_NK, CHP_NOISE_XX, CHP_NOISE_IK};
static const uint8_t prologue[] = "chapar fuzz prologue";

enum { SEED_IS = 1, SEED_RS = 2, SEED_IE = 101, SEED_RE = 201, SEED_RECORD = 50 };

static void fixed_key(uint8_t k[32], uint8_t seed)
{
        for (int i = 0; i < 32; i++)
                k[i] = (uint8_t)(seed + 37 * i);
}

static bool zero(const void *p, size_t n)
{
        const uint8_t *b = p;
        uint8_t acc = 0;
        for (size_t i = 0; i < n; i++)
                acc |= b[i];
        return acc == 0;
}

/* One side of the handshake, with the fixed keys. */
static void setup(struct chp_noise_hs *hs, enum chp_noise_pattern pat, struct chp_noise_suite su,
                  bool initiator)
{
        uint8_t s[32], rpub[32], e[32];
        fixed_key(s, initiator ? SEED_IS : SEED_RS);
        fixed_key(e, SEED_RS);
        EXPECT(chp_noise_public(e, rpub) == 0);
        bool has_s = !initiator || pat != CHP_NOISE_NK;
        bool has_rs = initiator && pat != CHP_NOISE_XX;
        EXPECT(chp_noise_hs_init(hs, pat, su, initiator, prologue, sizeof(prologue),
                                 has_s ? s : NULL, has_rs ? rpub : NULL) == 0);
        fixed_key(e, initiator ? SEED_IE : SEED_RE);
        chp_noise_hs_fix_ephemeral(hs, e);
}

static struct chp_noise_suite pick_suite(uint8_t b)
{
        struct chp_noise_suite su = suites[(b / NMODES) % 3];
        return chp_noise_suite_available(su) ? su : suites[0];
}

/* The next 2-byte-length chunk, copied to an exact-size allocation (caller frees); NULL when the
 * input has no complete chunk left. */
static uint8_t *next_chunk(const uint8_t **p, size_t *n, size_t *len)
{
        if (*n < 2)
                return NULL;
        size_t l = (size_t)(*p)[0] << 8 | (*p)[1];
        if (*n - 2 < l)
                return NULL;
        uint8_t *c = malloc(l ? l : 1);
        if (!c)
                return NULL;
        memcpy(c, *p + 2, l);
        *p += 2 + l;
        *n -= 2 + l;
        *len = l;
        return c;
}

/* A read: succeeds, or is -EBADMSG and the handshake is wiped. */
static int checked_read(struct chp_noise_hs *hs, const uint8_t *msg, size_t len)
{
        uint8_t *pl = malloc(len ? len : 1); /* a payload is never longer than its message */
        size_t pn = 12345;
        EXPECT(pl);
        int rc = chp_noise_hs_read(hs, msg, len, len ? pl : NULL, len, &pn);
        if (rc == 0) {
                EXPECT(pn <= len && (chp_noise_hs_my_turn(hs) || chp_noise_hs_done(hs)));
        } else {
                EXPECT(rc == -EBADMSG && pn == 0 && zero(hs, sizeof(*hs)));
                EXPECT(!chp_noise_hs_my_turn(hs) && !chp_noise_hs_done(hs));
        }
        free(pl);
        return rc;
}

/* What the fixed parties say in handshake message k (part of the transcript, so the seeds and
 * the target must agree). */
static const uint8_t *payload_of(int k)
{
        return (const uint8_t *)(k == 0 ? "hi" : "reply");
}

static size_t payload_len(int k)
{
        return k == 0 ? 2 : 5;
}

/* A write: fails only when the peer's ephemeral is of low order (the "ee" DH is all zeros). */
static int checked_write(struct chp_noise_hs *hs, uint8_t *out, size_t cap, size_t *len)
{
        uint8_t d[32], re[32], e[32];
        memcpy(re, hs->re, 32);
        memcpy(e, hs->e_priv, 32); /* fixed, so known before the write */
        bool low = hs->has_re && crypto_scalarmult(d, e, re) != 0;
        int rc = chp_noise_hs_write(hs, payload_of(hs->step), payload_len(hs->step), out, cap, len);
        EXPECT(rc == 0 ? !low : rc == -EBADMSG && low && zero(hs, sizeof(*hs)));
        sodium_memzero(e, sizeof(e));
        sodium_memzero(d, sizeof(d));
        return rc;
}

/* A record stream opened with d; each plaintext is sealed again with echo_tx and must open with
 * echo_rx to the same bytes. */
static void records(struct chp_record_dir *d, const uint8_t *p, size_t n)
{
        struct chp_record_dir etx, erx;
        memset(&etx, 0, sizeof(etx));
        etx.cs.suite = d->cs.suite;
        fixed_key(etx.cs.k, SEED_RECORD + 1);
        etx.cs.has_key = true;
        erx = etx;
        for (int i = 0;; i++) {
                size_t pn = 777;
                bool closed = true;
                uint64_t n0 = d->cs.n, c0 = d->count;
                ssize_t peek = chp_record_peek(p, n);
                size_t l = n >= 2 ? (size_t)p[0] << 8 | p[1] : 0;
                if (peek == -EAGAIN) {
                        EXPECT(n < 2 || (l >= 16 && n - 2 < l));
                        EXPECT(chp_record_open(d, p, n, NULL, &pn, &closed) == -EAGAIN);
                        EXPECT(pn == 0 && !closed && d->cs.n == n0 && d->count == c0);
                        break;
                }
                if (peek == -EBADMSG) {
                        EXPECT(n >= 2 && l < 16);
                        EXPECT(chp_record_open(d, p, n, NULL, &pn, &closed) == -EBADMSG);
                        EXPECT(pn == 0 && !closed && d->cs.n == n0 && d->count == c0);
                        break;
                }
                EXPECT(peek >= 18 && (size_t)peek == l + 2 && (size_t)peek <= n);
                size_t rl = (size_t)peek, plen = rl - 18;
                uint8_t *rec = malloc(rl), *plain = plen ? malloc(plen) : NULL, *out = plain;
                EXPECT(rec && (plain || !plen));
                memcpy(rec, p, rl);
                if (i % 2)
                        out = rec + 2; /* in place */
                ssize_t rc = chp_record_open(d, rec, rl, out, &pn, &closed);
                if (rc < 0) {
                        EXPECT(rc == -EBADMSG && pn == 0 && !closed);
                        EXPECT(d->cs.n == n0 && d->count == c0);
                        free(rec);
                        free(plain);
                        break;
                }
                EXPECT(rc == peek && pn == plen && closed == (plen == 0) && d->count == c0 + 1);
                uint8_t *again = malloc(rl), *back = malloc(plen ? plen : 1);
                EXPECT(again && back);
                size_t bn;
                bool bc;
                EXPECT(chp_record_seal(&etx, out, plen, again, rl) == peek);
                EXPECT(chp_record_seal(&etx, out, plen, again, rl - 1) == -ENOSPC);
                EXPECT(chp_record_open(&erx, again, rl, back, &bn, &bc) == peek);
                EXPECT(bn == plen && bc == closed && (!plen || memcmp(back, out, plen) == 0));
                free(again);
                free(back);
                free(rec);
                free(plain);
                p += rl;
                n -= rl;
                if (closed)
                        break; /* the stream ended on purpose */
        }
        chp_record_wipe(&etx);
        chp_record_wipe(&erx);
}

/* After the last handshake message: Split, then the rest of the input is the peer's records. */
static void transport(struct chp_noise_hs *hs, const uint8_t *p, size_t n)
{
        struct chp_record_dir tx, rx;
        uint8_t h[CHP_NOISE_HASHMAX];
        size_t hl;
        memset(&tx, 0, sizeof(tx));
        memset(&rx, 0, sizeof(rx));
        EXPECT(chp_noise_hs_done(hs));
        EXPECT(chp_noise_hs_split(hs, &tx.cs, &rx.cs, h, &hl) == 0);
        EXPECT(hl == (hs->suite.hash == CHP_NOISE_BLAKE2B ? 64u : 32u));
        EXPECT(zero(hs->ck, sizeof(hs->ck)) && zero(hs->e_priv, 32) && zero(hs->s_priv, 32));
        records(&rx, p, n);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
}

static void responder(enum chp_noise_pattern pat, struct chp_noise_suite su, const uint8_t *p,
                      size_t n)
{
        struct chp_noise_hs hs;
        uint8_t out[512];
        size_t len, ol;
        setup(&hs, pat, su, false);
        uint8_t *m = next_chunk(&p, &n, &len);
        if (!m)
                goto out;
        int rc = checked_read(&hs, m, len);
        free(m);
        if (rc != 0 || checked_write(&hs, out, sizeof(out), &ol) != 0)
                goto out;
        if (pat == CHP_NOISE_XX) {
                m = next_chunk(&p, &n, &len);
                if (!m)
                        goto out;
                rc = checked_read(&hs, m, len);
                free(m);
                if (rc != 0)
                        goto out;
        }
        transport(&hs, p, n);
out:
        chp_noise_hs_wipe(&hs);
}

static void initiator(enum chp_noise_pattern pat, struct chp_noise_suite su, const uint8_t *p,
                      size_t n)
{
        struct chp_noise_hs hs;
        uint8_t out[512];
        size_t len, ol;
        setup(&hs, pat, su, true);
        EXPECT(checked_write(&hs, out, sizeof(out), &ol) == 0);
        uint8_t *m = next_chunk(&p, &n, &len);
        if (!m)
                goto out;
        int rc = checked_read(&hs, m, len);
        free(m);
        if (rc != 0)
                goto out;
        if (pat == CHP_NOISE_XX)
                EXPECT(checked_write(&hs, out, sizeof(out), &ol) == 0);
        transport(&hs, p, n);
out:
        chp_noise_hs_wipe(&hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static bool ready;
        if (!ready) {
                EXPECT(sodium_init() >= 0);
                ready = true;
        }
        if (size < 1)
                return 0;
        unsigned mode = data[0] % NMODES;
        struct chp_noise_suite su = pick_suite(data[0]);
        if (mode < 3) {
                responder(pats[mode], su, data + 1, size - 1);
        } else if (mode < 6) {
                initiator(pats[mode - 3], su, data + 1, size - 1);
        } else {
                struct chp_record_dir d;
                memset(&d, 0, sizeof(d));
                d.cs.suite = su;
                fixed_key(d.cs.k, SEED_RECORD);
                d.cs.has_key = true;
                records(&d, data + 1, size - 1);
                chp_record_wipe(&d);
        }
        return 0;
}

#ifdef CHP_FUZZ_NOISE_GEN
/* ---- the seed corpus: valid conversations with the fixed keys, and a few broken ones ---- */

struct seed {
        uint8_t buf[4096];
        size_t n;
};

static void put(struct seed *s, const void *p, size_t n)
{
        EXPECT(s->n + n <= sizeof(s->buf));
        memcpy(s->buf + s->n, p, n);
        s->n += n;
}

static void put_chunk(struct seed *s, const uint8_t *p, size_t n)
{
        uint8_t h[2] = {(uint8_t)(n >> 8), (uint8_t)n};
        put(s, h, 2);
        put(s, p, n);
}

static void put_records(struct seed *s, struct chp_record_dir *d)
{
        static const char *const texts[] = {"hello relay", "", NULL};
        uint8_t rec[64];
        for (int i = 0; texts[i]; i++) {
                size_t len = strlen(texts[i]);
                ssize_t n = chp_record_seal(d, (const uint8_t *)texts[i], len, rec, sizeof(rec));
                EXPECT(n > 0);
                put(s, rec, (size_t)n);
        }
}

static void save(const char *dir, const char *name, const struct seed *s)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        EXPECT(f && fwrite(s->buf, 1, s->n, f) == s->n && fclose(f) == 0);
        printf("%s: %zu bytes\n", path, s->n);
}

/* A whole handshake between the fixed parties; the messages and each side's records. */
struct convo {
        uint8_t msg[3][512];
        size_t len[3];
        struct chp_record_dir itx, rtx;
};

static void converse(enum chp_noise_pattern pat, struct chp_noise_suite su, struct convo *c)
{
        struct chp_noise_hs i, r;
        struct chp_noise_cs unused;
        uint8_t pl[512];
        size_t pn;
        memset(c, 0, sizeof(*c));
        setup(&i, pat, su, true);
        setup(&r, pat, su, false);
        int msgs = pat == CHP_NOISE_XX ? 3 : 2;
        for (int k = 0; k < msgs; k++) {
                struct chp_noise_hs *w = k % 2 ? &r : &i, *rd = k % 2 ? &i : &r;
                EXPECT(chp_noise_hs_write(w, payload_of(k), payload_len(k), c->msg[k],
                                          sizeof(c->msg[k]), &c->len[k]) == 0);
                EXPECT(chp_noise_hs_read(rd, c->msg[k], c->len[k], pl, sizeof(pl), &pn) == 0);
        }
        EXPECT(chp_noise_hs_split(&i, &c->itx.cs, &unused, NULL, NULL) == 0);
        EXPECT(chp_noise_hs_split(&r, &c->rtx.cs, &unused, NULL, NULL) == 0);
        chp_noise_cs_wipe(&unused);
}

static const char *const pat_names[] = {"nk", "xx", "ik"};
static const char *const suite_names[] = {"chachapoly-blake2b", "aesgcm-sha256",
                                          "chachapoly-sha256"};

int main(int argc, char **argv)
{
        if (argc != 2 || sodium_init() < 0) {
                fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
                return 2;
        }
        const char *dir = argv[1];
        char name[128];
        struct convo c;
        struct seed s;
        for (int pi = 0; pi < 3; pi++) {
                for (int si = 0; si < 3; si++) {
                        if (si != 0 && pats[pi] != CHP_NOISE_XX)
                                continue;
                        converse(pats[pi], suites[si], &c);
                        /* the responder reading the initiator's messages and records */
                        memset(&s, 0, sizeof(s));
                        s.buf[0] = (uint8_t)(pi + NMODES * si);
                        s.n = 1;
                        put_chunk(&s, c.msg[0], c.len[0]);
                        if (pats[pi] == CHP_NOISE_XX)
                                put_chunk(&s, c.msg[2], c.len[2]);
                        put_records(&s, &c.itx);
                        snprintf(name, sizeof(name), "valid-resp-%s-%s", pat_names[pi],
                                 suite_names[si]);
                        save(dir, name, &s);
                        if (si != 0) {
                                chp_record_wipe(&c.itx);
                                chp_record_wipe(&c.rtx);
                                continue;
                        }
                        /* the initiator reading the reply and the responder's records */
                        memset(&s, 0, sizeof(s));
                        s.buf[0] = (uint8_t)(3 + pi);
                        s.n = 1;
                        put_chunk(&s, c.msg[1], c.len[1]);
                        put_records(&s, &c.rtx);
                        snprintf(name, sizeof(name), "valid-init-%s", pat_names[pi]);
                        save(dir, name, &s);
                        if (pats[pi] == CHP_NOISE_XX) { /* a flipped bit in the reply */
                                s.buf[1 + 2 + 40] ^= 0x10;
                                save(dir, "invalid-init-xx-flipped-bit", &s);
                        }
                        if (pats[pi] == CHP_NOISE_IK) { /* a first message cut short */
                                memset(&s, 0, sizeof(s));
                                s.buf[0] = (uint8_t)pi;
                                s.n = 1;
                                put_chunk(&s, c.msg[0], c.len[0] - 1);
                                save(dir, "invalid-resp-ik-truncated", &s);
                        }
                        chp_record_wipe(&c.itx);
                        chp_record_wipe(&c.rtx);
                }
        }
        /* low-order ephemerals: NK fails on reading ("es"), XX on the reply ("ee") */
        uint8_t low[48] = {0};
        memset(&s, 0, sizeof(s));
        s.buf[0] = 0;
        s.n = 1;
        put_chunk(&s, low, 48);
        save(dir, "invalid-resp-nk-low-order-e", &s);
        memset(&s, 0, sizeof(s));
        s.buf[0] = 1;
        s.n = 1;
        low[0] = 1;
        put_chunk(&s, low, 32);
        save(dir, "invalid-resp-xx-low-order-e", &s);

        /* records with the fixed key */
        struct chp_record_dir d;
        memset(&d, 0, sizeof(d));
        d.cs.suite = suites[0];
        fixed_key(d.cs.k, SEED_RECORD);
        d.cs.has_key = true;
        memset(&s, 0, sizeof(s));
        s.buf[0] = MODE_RECORDS;
        s.n = 1;
        uint8_t plain[1000], rec[1100];
        memset(plain, 'r', sizeof(plain));
        ssize_t rn = chp_record_seal(&d, plain, 3, rec, sizeof(rec));
        EXPECT(rn > 0);
        put(&s, rec, (size_t)rn);
        rn = chp_record_seal(&d, plain, sizeof(plain), rec, sizeof(rec));
        EXPECT(rn > 0);
        put(&s, rec, (size_t)rn);
        struct seed partial = s;
        rn = chp_record_seal(&d, NULL, 0, rec, sizeof(rec));
        EXPECT(rn > 0);
        put(&s, rec, (size_t)rn);
        save(dir, "valid-records-fixed-key", &s);
        partial.n -= 10;
        save(dir, "invalid-records-partial", &partial);
        memset(&s, 0, sizeof(s));
        s.buf[0] = MODE_RECORDS;
        s.n = 1;
        uint8_t bad[17] = {0, 15};
        put(&s, bad, sizeof(bad));
        save(dir, "invalid-records-length-15", &s);
        chp_record_wipe(&d);
        return 0;
}
#endif
