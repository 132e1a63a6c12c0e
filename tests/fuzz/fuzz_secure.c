/* Fuzz target for the relay's side of the transport (server/secure.c, included): the bytes a
 * client sends to a native connection before and around the frame stream — the preamble, the
 * length-prefixed Noise handshake messages (NK, XX, or IK from a configured peer) and then
 * records — fed to the responder the way the loop feeds it. fuzz_noise covers the handshake and
 * record primitives; this covers the state machine on top: preamble checks, the plaintext and
 * peer rules, message framing, buffering of partial input, delivery into a waiting body and
 * c->in, the close record, and the relay's own replies.
 *
 * Byte 0 chooses the relay and the feeding:
 *   bit 0  --insecure-plaintext is on       bit 1  one [peer] is configured (IK is offered)
 *   bit 2  input arrives in small pieces    bit 3  over records, pieces go through
 *                                                  secure_recv_space/secure_received
 *   bit 4  the protocol waits for a 100-byte body as soon as records start
 * the rest is what the client sends. The connection functions secure.c calls are replaced by
 * recorders here; every reply the relay queues must be a well-formed handshake message (or the
 * zero-length refusal), the state must match the reply (refusal: closing; records: no handshake
 * left), and detaching must free everything (LeakSanitizer). Randomness (the relay's
 * ephemeral key) comes from a generator reset for every input, so a whole conversation —
 * handshake and records — is a reproducible input.
 *
 * Linked with libFuzzer, or with replay.c to run the committed corpus under ctest. Built with
 * -DCHP_FUZZ_SECURE_GEN (and no fuzzer) it is the program that writes the seed corpus:
 *   cc -DCHP_FUZZ_SECURE_GEN -D_GNU_SOURCE -Icommon -Iserver tests/fuzz/fuzz_secure.c \
 *      build/lib/libchapar_common.a -lsodium -lcrypto -lxxhash -lpthread -o gen \
 *      && ./gen tests/fuzz/corpus/secure
 */
#include "../../server/net/secure.c"

#include <stdio.h>

#include "config.h"
#include "identity.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { F_PLAIN = 1, F_PEER = 2, F_PIECES = 4, F_RECV_SPACE = 8, F_BODY = 16 };
#define BODY_LEN 100

/* ---- deterministic randomness --------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

static const char *rng_name(void)
{
        return "fuzz";
}

static uint32_t rng_random(void)
{
        return (uint32_t)rng_next();
}

static void rng_buf(void *const buf, const size_t size)
{
        uint8_t *p = buf;
        for (size_t i = 0; i < size; i++)
                p[i] = (uint8_t)rng_next();
}

static struct randombytes_implementation rng_impl = {
    .implementation_name = rng_name, .random = rng_random, .buf = rng_buf};

/* ---- the connection secure.c sees ------------------------------------------------------------ */

struct chp_peers {
        int n;
        uint8_t key[CHP_KEY_BYTES];
};

static int fake_peers_count(const struct chp_peers *p)
{
        return p ? p->n : 0;
}

static int fake_peers_find(const struct chp_peers *p, const uint8_t key[CHP_KEY_BYTES])
{
        return p && p->n && memcmp(p->key, key, CHP_KEY_BYTES) == 0 ? 0 : -1;
}

static const struct chp_peer_directory fake_peer_dir = {fake_peers_find, fake_peers_count};

/* What the relay queued to send, outside the record layer. */
static uint8_t *wire;
static size_t wire_len, wire_cap;

uint8_t *conn_out_wire(struct conn *c, size_t n)
{
        (void)c;
        if (wire_cap - wire_len < n) {
                size_t cap = wire_cap ? wire_cap : 4096;
                while (cap - wire_len < n)
                        cap *= 2;
                uint8_t *nb = realloc(wire, cap);
                if (!nb)
                        return NULL;
                wire = nb;
                wire_cap = cap;
        }
        wire_len += n;
        return wire + wire_len - n;
}

static int in_append(struct conn *c, const uint8_t *p, size_t n)
{
        if (c->in_cap - c->in_len < n) {
                size_t cap = c->in_cap ? c->in_cap : 4096;
                while (cap - c->in_len < n)
                        cap *= 2;
                uint8_t *nb = realloc(c->in, cap);
                if (!nb)
                        return -ENOMEM;
                c->in = nb;
                c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, p, n);
        c->in_len += n;
        return 0;
}

/* body bytes the transport delivered (the loop's memory accounting is not under test here) */
void conn_body_arrived(struct conn *c, size_t n)
{
        c->body_got += n;
}

/* Plaintext from the transport, as the loop takes it: into the waiting body, the rest to c->in
 * (the target checks both ends of that split). */
int conn_deliver(struct conn *c, const uint8_t *p, size_t n)
{
        if (c->body && c->body_got < c->body_len) {
                size_t take = c->body_len - c->body_got < n ? c->body_len - c->body_got : n;
                memcpy(c->body + c->body_got, p, take);
                conn_body_arrived(c, take);
                p += take;
                n -= take;
        }
        return n ? in_append(c, p, n) : 0;
}

void conn_close_after_flush(struct conn *c)
{
        c->closing = true;
}

void conn_close(struct conn *c)
{
        c->closed = true;
}

static const struct proto_ops ops = {.name = "fuzz", .secure = true};

/* Fixed keys: the relay's, and the peer's (a client with it may use IK when F_PEER is set). */
enum { SEED_RELAY = 3, SEED_PEER = 5, SEED_CLIENT = 9, SEED_CLIENT_E = 11 };

static void fixed_key(uint8_t k[32], uint8_t seed)
{
        for (int i = 0; i < 32; i++)
                k[i] = (uint8_t)(seed * 29 + 41 * i);
}

static struct chp_identity identity;
static struct chp_peers one_peer = {.n = 1};

static void init(void)
{
        static bool ready;
        if (ready)
                return;
        EXPECT(randombytes_set_implementation(&rng_impl) == 0);
        EXPECT(sodium_init() >= 0);
        chp_log_set_level(CHP_LOG_ERROR);
        fixed_key(identity.priv, SEED_RELAY);
        EXPECT(chp_noise_public(identity.priv, identity.pub) == 0);
        uint8_t priv[CHP_KEY_BYTES];
        fixed_key(priv, SEED_PEER);
        EXPECT(chp_noise_public(priv, one_peer.key) == 0);
        ready = true;
}

struct relay {
        struct chp_config cfg;
        struct chp_shared sh;
        struct chp_metrics metrics;
        struct conn c;
        uint8_t *body;
};

static void relay_start(struct relay *r, uint8_t flags)
{
        memset(r, 0, sizeof(*r));
        r->cfg.insecure_plaintext = flags & F_PLAIN;
        r->sh.cfg = &r->cfg;
        r->sh.metrics = &r->metrics;
        r->sh.identity = &identity;
        r->sh.peers = flags & F_PEER ? &one_peer : NULL;
        r->sh.peer_dir = &fake_peer_dir;
        r->c.sh = &r->sh;
        r->c.ops = &ops;
        EXPECT(secure_attach(&r->c) == 0 && r->c.sec);
        EXPECT(secure_pending(&r->c) && !secure_plaintext(&r->c) && !secure_records(&r->c));
        wire_len = 0;
        rng_state = 0;
}

/* The protocol starts waiting for a body once frames can flow. */
static void maybe_want_body(struct relay *r, uint8_t flags)
{
        if (!(flags & F_BODY) || r->body || !(secure_records(&r->c) || secure_plaintext(&r->c)))
                return;
        r->body = malloc(BODY_LEN);
        EXPECT(r->body);
        r->c.body = r->body;
        r->c.body_len = BODY_LEN;
        r->c.body_got = 0;
}

/* Feeds n bytes: straight in, or (records, F_RECV_SPACE, a body waited for) into the space
 * secure_recv_space offers. Returns what secure_input or secure_received returned. */
static int feed(struct relay *r, uint8_t flags, const uint8_t *p, size_t n)
{
        size_t room;
        uint8_t *space = flags & F_RECV_SPACE ? secure_recv_space(&r->c, &room) : NULL;
        if (space && room >= n) {
                EXPECT(secure_records(&r->c) && r->c.body);
                memcpy(space, p, n);
                return secure_received(&r->c, n);
        }
        /* an exact-size copy, so ASan sees a read past the piece */
        uint8_t *copy = malloc(n ? n : 1);
        EXPECT(copy);
        memcpy(copy, p, n);
        int rc = secure_input(&r->c, copy, n);
        free(copy);
        return rc;
}

/* The relay's replies: handshake messages, each a u16 length and at most HS_MSG_MAX bytes; a
 * refusal (length 0) is the last thing sent. Record bytes are never queued here by input. */
static void check_wire(const struct relay *r)
{
        size_t off = 0, msgs = 0;
        bool refused = false;
        while (off < wire_len) {
                EXPECT(!refused && wire_len - off >= 2);
                size_t n = (size_t)wire[off] << 8 | wire[off + 1];
                EXPECT(n <= HS_MSG_MAX && wire_len - off - 2 >= n);
                refused = n == 0;
                off += 2 + n;
                msgs++;
        }
        EXPECT(msgs <= 1); /* a responder writes one message in NK, XX and IK */
        if (refused)
                EXPECT(r->c.closing && !secure_records(&r->c) && !secure_plaintext(&r->c));
        if (secure_records(&r->c))
                EXPECT(msgs == 1 && !r->c.sec->hs);
}

static void relay_finish(struct relay *r)
{
        check_wire(r);
        EXPECT(r->c.body_got <= r->c.body_len);
        if (secure_records(&r->c)) {
                /* what the relay would send next: a reply frame, then the close record */
                uint8_t plain[64], out[64 + CHP_RECORD_HEADER + CHP_NOISE_TAGLEN];
                memset(plain, 'p', sizeof(plain));
                EXPECT(secure_seal(&r->c, plain, sizeof(plain), out, sizeof(out)) ==
                       (ssize_t)sizeof(out));
                size_t before = wire_len;
                secure_close_record(&r->c);
                EXPECT(wire_len == before + CHP_RECORD_HEADER + CHP_NOISE_TAGLEN);
                EXPECT(!secure_records(&r->c));
        }
        secure_detach(&r->c);
        EXPECT(!r->c.sec);
        secure_detach(&r->c); /* NULL-safe */
        free(r->c.in);
        free(r->body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        init();
        if (size < 1)
                return 0;
        uint8_t flags = data[0];
        const uint8_t *p = data + 1;
        size_t n = size - 1;
        struct relay r;
        relay_start(&r, flags);
        uint32_t piece_rng = flags * 2654435761u + 1;
        while (n > 0 && !r.c.closed) {
                size_t take = n;
                if (flags & F_PIECES) {
                        piece_rng = piece_rng * 1103515245u + 12345u;
                        take = 1 + (piece_rng >> 16) % 97;
                        if (take > n)
                                take = n;
                }
                maybe_want_body(&r, flags);
                int rc = feed(&r, flags, p, take);
                EXPECT(rc == 0 || rc == -EBADMSG || rc == -EACCES || rc == -EIO ||
                       rc == -ENOMEM);
                if (rc != 0)
                        break; /* the loop closes the connection */
                p += take;
                n -= take;
        }
        relay_finish(&r);
        return 0;
}

#ifdef CHP_FUZZ_SECURE_GEN
/* ---- the seed corpus: whole conversations with the fixed keys ------------------------------- */

static uint8_t seed_buf[1 << 16];
static size_t seed_len;

static void put(const void *q, size_t n)
{
        EXPECT(seed_len + n <= sizeof(seed_buf));
        memcpy(seed_buf + seed_len, q, n);
        seed_len += n;
}

static void save(const char *dir, const char *name)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "wb");
        EXPECT(f && fwrite(seed_buf, 1, seed_len, f) == seed_len && fclose(f) == 0);
        printf("%s: %zu bytes\n", path, seed_len);
}

/* Sends what the seed has beyond `sent` to the relay, which answers into the wire buffer. */
static size_t relay_take(struct relay *r, uint8_t flags, size_t sent)
{
        EXPECT(feed(r, flags, seed_buf + sent, seed_len - sent) == 0);
        return seed_len;
}

/* A whole conversation as a client: preamble, handshake, records holding text, the close
 * record. Written as the relay under the same flags answers, so it replays exactly. */
static void converse(const char *dir, const char *name, uint8_t flags,
                     enum chp_noise_pattern pat, struct chp_noise_suite su, bool close)
{
        struct relay r;
        relay_start(&r, flags);
        seed_len = 0;
        put(&flags, 1);
        uint8_t pre[PREAMBLE] = {'C', 'H', 'N', '1', (uint8_t)pat, (uint8_t)su.cipher,
                                 (uint8_t)su.hash, 0};
        put(pre, sizeof(pre));
        uint8_t prologue[sizeof(label) - 1 + PREAMBLE];
        memcpy(prologue, label, sizeof(label) - 1);
        memcpy(prologue + sizeof(label) - 1, pre, PREAMBLE);
        uint8_t s[32], e[32];
        fixed_key(s, pat == CHP_NOISE_IK ? SEED_PEER : SEED_CLIENT);
        fixed_key(e, SEED_CLIENT_E);
        struct chp_noise_hs hs;
        EXPECT(chp_noise_hs_init(&hs, pat, su, true, prologue, sizeof(prologue),
                                 pat == CHP_NOISE_NK ? NULL : s,
                                 pat == CHP_NOISE_XX ? NULL : identity.pub) == 0);
        chp_noise_hs_fix_ephemeral(&hs, e);
        uint8_t msg[HS_MSG_MAX], pl[HS_MSG_MAX];
        size_t ml, pn;
        EXPECT(chp_noise_hs_write(&hs, NULL, 0, msg, sizeof(msg), &ml) == 0);
        uint8_t h2[2] = {(uint8_t)(ml >> 8), (uint8_t)ml};
        put(h2, 2);
        put(msg, ml);
        size_t sent = relay_take(&r, flags, 1);
        EXPECT(wire_len >= 2);
        size_t rl = (size_t)wire[0] << 8 | wire[1];
        EXPECT(rl > 0 && chp_noise_hs_read(&hs, wire + 2, rl, pl, sizeof(pl), &pn) == 0);
        if (pat == CHP_NOISE_XX) {
                EXPECT(chp_noise_hs_write(&hs, NULL, 0, msg, sizeof(msg), &ml) == 0);
                h2[0] = (uint8_t)(ml >> 8);
                h2[1] = (uint8_t)ml;
                put(h2, 2);
                put(msg, ml);
                sent = relay_take(&r, flags, sent);
        }
        EXPECT(secure_records(&r.c));
        struct chp_record_dir tx = {0}, rx = {0};
        EXPECT(chp_noise_hs_split(&hs, &tx.cs, &rx.cs, NULL, NULL) == 0);
        static const char *const texts[] = {"\x0a\0\0\0\x01\0\0\0\x04\0\0\0ping", "more", "frames"};
        uint8_t rec[256];
        for (int i = 0; i < 3; i++) {
                size_t len = i == 0 ? 16 : strlen(texts[i]);
                ssize_t k = chp_record_seal(&tx, (const uint8_t *)texts[i], len, rec, sizeof(rec));
                EXPECT(k > 0);
                put(rec, (size_t)k);
        }
        if (close) {
                ssize_t k = chp_record_seal(&tx, NULL, 0, rec, sizeof(rec));
                EXPECT(k > 0);
                put(rec, (size_t)k);
        }
        sent = relay_take(&r, flags, sent);
        EXPECT(!r.c.closed);
        chp_noise_hs_wipe(&hs);
        chp_record_wipe(&tx);
        chp_record_wipe(&rx);
        relay_finish(&r);
        save(dir, name);
}

static void raw(const char *dir, const char *name, uint8_t flags, const void *q, size_t n)
{
        seed_len = 0;
        put(&flags, 1);
        put(q, n);
        save(dir, name);
}

int main(int argc, char **argv)
{
        if (argc != 2) {
                fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
                return 2;
        }
        init();
        const char *dir = argv[1];
        const struct chp_noise_suite cb = {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
                                     as = {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
                                     cs = {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256};
        converse(dir, "valid-nk", 0, CHP_NOISE_NK, cb, true);
        converse(dir, "valid-nk-pieces-body", F_PIECES | F_BODY, CHP_NOISE_NK, cb, true);
        converse(dir, "valid-nk-recv-space", F_PIECES | F_BODY | F_RECV_SPACE, CHP_NOISE_NK, cb,
                 false);
        converse(dir, "valid-xx", 0, CHP_NOISE_XX, cb, true);
        converse(dir, "valid-xx-chachapoly-sha256", F_PIECES, CHP_NOISE_XX, cs, false);
        if (chp_noise_suite_available(as))
                converse(dir, "valid-xx-aesgcm-sha256", 0, CHP_NOISE_XX, as, true);
        converse(dir, "valid-ik-peer", F_PEER, CHP_NOISE_IK, cb, true);
        converse(dir, "valid-ik-peer-pieces-body", F_PEER | F_PIECES | F_BODY, CHP_NOISE_IK, cb,
                 false);
        raw(dir, "valid-plaintext", F_PLAIN | F_PIECES | F_BODY, "CHP0\0\0\0\0frames follow", 21);
        raw(dir, "invalid-plaintext-not-allowed", 0, "CHP0\0\0\0\0frames follow", 21);
        raw(dir, "invalid-preamble", 0, "CHN2\0\0\0\0", 8);
        raw(dir, "invalid-ik-without-peers", 0, "CHN1\x02\0\0\0", 8);
        raw(dir, "invalid-suite", 0, "CHN1\x01\x02\0\0", 8);
        raw(dir, "invalid-hs-length-zero", 0, "CHN1\x01\0\0\0\0\0", 10);
        raw(dir, "invalid-hs-length-over", 0, "CHN1\x01\0\0\0\x04\x01", 10);
        raw(dir, "invalid-hs-garbage", F_PEER, "CHN1\x02\0\0\0\0\x10xxxxxxxxxxxxxxxx", 26);
        return 0;
}
#endif
