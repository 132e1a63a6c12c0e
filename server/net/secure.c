/* secure.c — the relay's side of the transport under the native protocol: the preamble, the
 * Noise handshake (as responder) and the record layer (common/record.h).
 *
 *   client                                          relay
 *     "CHN1" pattern cipher hash 0 --------------->   NK or XX; the suite if available here
 *     [u16 len] message 1 ------------------------>
 *     <-------------------------------------------- [u16 len] message 2
 *     [u16 len] message 3 (XX) ------------------->
 *     records <-----------------------------------> records (the frame stream)
 *
 *   "CHP0" 0 0 0 0 asks for plaintext: granted only with --insecure-plaintext (which the
 *   configuration allows only on a loopback address). A refusal is a zero length (two zero
 *   bytes) where the handshake message would be, then the connection closes.
 *
 * The prologue ("chapar native 1" + the preamble) binds the protocol version and the offered
 * pattern and suite into the handshake hash; both are defined once, in common/channel.h, whose
 * module is the initiator's side. Loop thread only.
 */
#include "secure.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "channel.h"
#include "conn.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "noise.h"
#include "record.h"

#define HS_MSG_MAX 1024
#define RAW_DIRECT (256 * 1024) /* a receive straight into the raw buffer during a body */

enum state { ST_PREAMBLE, ST_HANDSHAKE, ST_RECORDS, ST_PLAIN, ST_DEAD };

struct secure {
        enum state st;
        struct chp_noise_hs *hs; /* during the handshake only */
        struct chp_record_dir tx, rx;
        uint8_t *raw; /* received, not yet processed */
        size_t raw_len, raw_cap;
        uint8_t peer_static[CHP_KEY_BYTES];
        bool have_peer_static;
        int peer; /* index of the configured peer (IK), else -1 */
};

static int secure_attach(struct conn *c)
{
        c->sec = calloc(1, sizeof(*c->sec));
        if (!c->sec)
                return -ENOMEM;
        c->sec->peer = -1;
        return 0;
}

static int peer_count(const struct conn *c)
{
        return c->sh->peer_dir ? c->sh->peer_dir->count(c->sh->peers) : 0;
}

static int peer_find(const struct conn *c, const uint8_t key[CHP_KEY_BYTES])
{
        return c->sh->peer_dir ? c->sh->peer_dir->find(c->sh->peers, key) : -1;
}

int secure_peer(const struct conn *c)
{
        return c->sec && c->sec->st == ST_RECORDS ? c->sec->peer : -1;
}

static void secure_detach(struct conn *c)
{
        struct secure *s = c->sec;
        if (!s)
                return;
        if (s->hs) {
                chp_noise_hs_wipe(s->hs);
                free(s->hs);
        }
        chp_record_wipe(&s->tx);
        chp_record_wipe(&s->rx);
        free(s->raw);
        sodium_memzero(s, sizeof(*s));
        free(s);
        c->sec = NULL;
}

/* The client asked for (and was granted) no transport encryption. */
static bool secure_plaintext(const struct conn *c)
{
        return !c->sec || c->sec->st == ST_PLAIN;
}

static bool secure_records(const struct conn *c)
{
        return c->sec && c->sec->st == ST_RECORDS;
}

static bool secure_handshaking(const struct conn *c)
{
        const struct secure *s = c->sec;
        return s && (s->st == ST_PREAMBLE || s->st == ST_HANDSHAKE);
}

static bool secure_pending(const struct conn *c)
{
        const struct secure *s = c->sec;
        return s && (s->st == ST_PREAMBLE || s->st == ST_HANDSHAKE || s->raw_len > 0);
}

static int raw_room(struct secure *s, size_t n)
{
        if (s->raw_cap - s->raw_len >= n)
                return 0;
        size_t cap = s->raw_cap ? s->raw_cap : 32 * 1024;
        while (cap - s->raw_len < n)
                cap *= 2;
        uint8_t *nb = realloc(s->raw, cap);
        if (!nb)
                return -ENOMEM;
        s->raw = nb;
        s->raw_cap = cap;
        return 0;
}

/* Room to receive straight into while a body arrives over records: about as much as granted
 * (c->grant_left) but at least a whole record, since a record opens only whole; what arrives
 * past the grant is charged as it comes (conn_body_arrived). */
static uint8_t *secure_recv_space(struct conn *c, size_t *len)
{
        struct secure *s = c->sec;
        if (!s || s->st != ST_RECORDS || !c->body || raw_room(s, RAW_DIRECT) != 0)
                return NULL;
        size_t room = s->raw_cap - s->raw_len;
        size_t cap = c->grant_left + CHP_RECORD_HEADER + CHP_NOISE_TAGLEN;
        if (cap < CHP_RECORD_MAX)
                cap = CHP_RECORD_MAX;
        *len = room < cap ? room : cap;
        return s->raw + s->raw_len;
}

static size_t secure_sealed_size(size_t n)
{
        return chp_record_sealed_size(n);
}

/* A handshake message to send: length-prefixed, outside the record layer. */
static int send_hs(struct conn *c, const uint8_t *msg, size_t n)
{
        uint8_t *w = conn_out_wire(c, 2 + n);
        if (!w)
                return -ENOMEM;
        w[0] = (uint8_t)(n >> 8);
        w[1] = (uint8_t)n;
        if (n)
                memcpy(w + 2, msg, n);
        return 0;
}

static int refuse(struct conn *c, const char *why)
{
        chp_log_info("secure", "refusing a connection: %s", why);
        c->sec->st = ST_DEAD;
        send_hs(c, NULL, 0);
        conn_close_after_flush(c);
        return 0;
}

static int on_preamble(struct conn *c, const uint8_t *pre)
{
        struct secure *s = c->sec;
        uint8_t plain[CHP_PREAMBLE_BYTES];
        chp_channel_preamble_plain(plain);
        if (memcmp(pre, plain, CHP_PREAMBLE_BYTES) == 0) {
                if (!c->sh->cfg->insecure_plaintext)
                        return refuse(c, "plaintext asked of a relay without "
                                         "--insecure-plaintext");
                s->st = ST_PLAIN;
                return 0;
        }
        if (memcmp(pre, CHP_PREAMBLE_NOISE, 4) != 0 || pre[7] != 0)
                return refuse(c, "not a chapar native preamble");
        enum chp_noise_pattern pattern = (enum chp_noise_pattern)pre[4];
        struct chp_noise_suite suite = {(enum chp_noise_cipher)pre[5], (enum chp_noise_hash)pre[6]};
        if ((pattern != CHP_NOISE_NK && pattern != CHP_NOISE_XX && pattern != CHP_NOISE_IK) ||
            (pattern == CHP_NOISE_IK && peer_count(c) == 0) || pre[5] > CHP_NOISE_AESGCM ||
            pre[6] > CHP_NOISE_SHA256 || !chp_noise_suite_available(suite))
                return refuse(c, "a pattern or suite this relay does not offer");
        uint8_t prologue[CHP_PROLOGUE_MAX];
        size_t plen = chp_channel_prologue(pre, prologue);
        s->hs = calloc(1, sizeof(*s->hs));
        if (!s->hs)
                return -ENOMEM;
        if (chp_noise_hs_init(s->hs, pattern, suite, false, prologue, plen, c->sh->identity->priv,
                              NULL) != 0)
                return refuse(c, "handshake set-up failed");
        s->st = ST_HANDSHAKE;
        return 0;
}

/* Reads one handshake message (and answers when it is our turn). */
static int on_hs_message(struct conn *c, const uint8_t *msg, size_t n)
{
        struct secure *s = c->sec;
        uint8_t payload[HS_MSG_MAX], out[HS_MSG_MAX];
        size_t plen, olen;
        bool first = !s->have_peer_static;
        if (chp_noise_hs_read(s->hs, msg, n, payload, sizeof(payload), &plen) != 0) {
                atomic_fetch_add(&c->sh->metrics->frames_bad, 1);
                chp_log_info("secure", "closing a connection: its handshake message does not "
                                       "verify");
                s->st = ST_DEAD;
                conn_close(c);
                return -EBADMSG;
        }
        if (first && s->hs->pattern == CHP_NOISE_IK) {
                /* a relay-to-relay handshake: only from a relay this one peers with */
                char hex[CHP_HASH_HEXBYTES];
                if (chp_noise_hs_remote_static(s->hs, s->peer_static) != 0 ||
                    (s->peer = peer_find(c, s->peer_static)) < 0) {
                        chp_hex_encode(s->peer_static, CHP_HASH_BYTES, hex);
                        chp_log_warn("secure",
                                     "refusing a peer handshake from unknown key %s "
                                     "(not a [peer] of this relay)",
                                     hex);
                        s->st = ST_DEAD;
                        conn_close(c);
                        return -EACCES;
                }
                s->have_peer_static = true;
        }
        if (!chp_noise_hs_done(s->hs) && chp_noise_hs_my_turn(s->hs)) {
                if (chp_noise_hs_write(s->hs, NULL, 0, out, sizeof(out), &olen) != 0)
                        return -EIO;
                int rc = send_hs(c, out, olen);
                if (rc)
                        return rc;
        }
        if (!chp_noise_hs_done(s->hs))
                return 0;
        uint8_t h[CHP_NOISE_HASHMAX];
        size_t hl;
        int rc = chp_noise_hs_split(s->hs, &s->tx.cs, &s->rx.cs, h, &hl);
        chp_noise_hs_wipe(s->hs);
        free(s->hs);
        s->hs = NULL;
        sodium_memzero(h, sizeof(h));
        if (rc)
                return -EIO;
        s->st = ST_RECORDS;
        return 0;
}

/* Works through the raw buffer as far as it goes. */
static int process(struct conn *c)
{
        struct secure *s = c->sec;
        size_t off = 0;
        int rc = 0;
        while (!rc && !c->closed && off < s->raw_len) {
                const uint8_t *p = s->raw + off;
                size_t avail = s->raw_len - off;
                if (s->st == ST_PREAMBLE) {
                        if (avail < CHP_PREAMBLE_BYTES)
                                break;
                        rc = on_preamble(c, p);
                        off += CHP_PREAMBLE_BYTES;
                } else if (s->st == ST_HANDSHAKE) {
                        if (avail < 2)
                                break;
                        size_t n = (size_t)p[0] << 8 | p[1];
                        if (n == 0 || n > HS_MSG_MAX) {
                                s->st = ST_DEAD;
                                conn_close(c);
                                return -EBADMSG;
                        }
                        if (avail < 2 + n)
                                break;
                        rc = on_hs_message(c, p + 2, n);
                        off += 2 + n;
                } else if (s->st == ST_RECORDS) {
                        ssize_t rl = chp_record_peek(p, avail);
                        if (rl == -EAGAIN)
                                break;
                        size_t got;
                        bool closed;
                        /* decrypted in place: the record's plaintext overwrites its ciphertext */
                        uint8_t *plain = (uint8_t *)p + CHP_RECORD_HEADER;
                        if (rl < 0 ||
                            chp_record_open(&s->rx, p, avail, plain, &got, &closed) != rl) {
                                atomic_fetch_add(&c->sh->metrics->frames_bad, 1);
                                chp_log_info("secure", "closing a connection: a record does not "
                                                       "authenticate");
                                s->st = ST_DEAD;
                                conn_close(c);
                                return -EBADMSG;
                        }
                        off += (size_t)rl;
                        if (closed) {
                                s->st = ST_DEAD; /* the peer ended on purpose */
                                conn_close_after_flush(c);
                                break;
                        }
                        rc = conn_deliver(c, plain, got);
                } else if (s->st == ST_PLAIN) {
                        rc = conn_deliver(c, p, avail);
                        off += avail;
                } else {
                        off = s->raw_len; /* ST_DEAD: ignore what follows */
                }
        }
        if (off) {
                memmove(s->raw, s->raw + off, s->raw_len - off);
                s->raw_len -= off;
        }
        if (s->raw_len == 0 && !c->body && s->raw_cap > 64 * 1024) {
                free(s->raw); /* an idle connection keeps no big buffer */
                s->raw = NULL;
                s->raw_cap = 0;
        }
        return rc;
}

static int secure_input(struct conn *c, const uint8_t *p, size_t n)
{
        struct secure *s = c->sec;
        if (!s || (s->st == ST_PLAIN && s->raw_len == 0))
                return conn_deliver(c, p, n); /* no transport: straight through */
        int rc = raw_room(s, n);
        if (rc)
                return rc;
        memcpy(s->raw + s->raw_len, p, n);
        s->raw_len += n;
        return process(c);
}

static int secure_received(struct conn *c, size_t n)
{
        c->sec->raw_len += n;
        return process(c);
}

static ssize_t secure_seal(struct conn *c, const uint8_t *plain, size_t n, uint8_t *out, size_t cap)
{
        struct secure *s = c->sec;
        size_t done = 0, at = 0;
        do {
                size_t take = n - done < CHP_RECORD_PLAIN_MAX ? n - done : CHP_RECORD_PLAIN_MAX;
                ssize_t r = chp_record_seal(&s->tx, plain + done, take, out + at, cap - at);
                if (r < 0)
                        return r;
                at += (size_t)r;
                done += take;
        } while (done < n);
        return (ssize_t)at;
}

/* Over records, the end is said (a close record), not just a cut. Sealed here, so called only
 * once the frames before it are sealed (they are sealed as they are sent): sealed earlier it
 * would take a nonce before theirs, and they would go out unsealed once the state is dead. */
static bool secure_close_record(struct conn *c)
{
        struct secure *s = c->sec;
        if (!s || s->st != ST_RECORDS)
                return false;
        uint8_t *w = conn_out_wire(c, CHP_RECORD_HEADER + CHP_NOISE_TAGLEN);
        if (w && chp_record_seal(&s->tx, NULL, 0, w, CHP_RECORD_HEADER + CHP_NOISE_TAGLEN) < 0)
                conn_close(c);
        s->st = ST_DEAD;
        return w != NULL;
}

const struct chp_transport_ops chp_secure_transport = {
    .name = "noise",
    .attach = secure_attach,
    .detach = secure_detach,
    .input = secure_input,
    .recv_space = secure_recv_space,
    .received = secure_received,
    .plaintext = secure_plaintext,
    .sealing = secure_records,
    .sealed_size = secure_sealed_size,
    .seal = secure_seal,
    .close_record = secure_close_record,
    .pending = secure_pending,
    .handshaking = secure_handshaking,
};
