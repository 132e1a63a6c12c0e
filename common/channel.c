/* conn.c — libchapar's connection to a relay: TCP, the Noise handshake, the record layer, and
 * frames with timeouts and cancellation. Internal to client/ (see client_int.h).
 *
 *   client                                          relay
 *     preamble "CHN1" pattern cipher hash 0  ------->
 *     [u16 len] Noise message 1 (-> e, es | -> e)  ->
 *     <---------------------------------------------- [u16 len] message 2 (<- e, ee [, s, es])
 *     [u16 len] message 3 (XX only: -> s, se) ------>
 *     records (u16 len + ciphertext) both ways, carrying the native frame stream
 *
 * The prologue is "chapar native 1" followed by the preamble, so a change to the offered pattern
 * or suite on the way breaks the handshake. "CHP0" instead of "CHN1" asks for plaintext, which a
 * relay grants only with --insecure-plaintext on loopback.
 */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "hash.h"

#define SLICE_MS 200 /* how often a wait looks at the cancel flag */

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for events on the socket, in slices so that a cancel is seen. */
static int wait_fd(struct chapar_client *c, short events)
{
        uint64_t deadline = now_ms() + (uint64_t)c->timeout_ms;
        for (;;) {
                if (c->cancel)
                        return CHAPAR_ECANCELED;
                struct pollfd p = {.fd = c->fd, .events = events};
                int r = poll(&p, 1, SLICE_MS);
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return CHAPAR_ENET;
                if (now_ms() > deadline) {
                        snprintf(c->last_error, sizeof(c->last_error),
                                 "no answer from %s within %d s", c->addr, c->timeout_ms / 1000);
                        return CHAPAR_ENET;
                }
        }
}

/* Reads what the socket has into the raw buffer (waiting for at least one byte). */
static int raw_fill(struct chapar_client *c)
{
        if (c->raw_cap - c->raw_len < 65536) {
                size_t cap = c->raw_cap ? c->raw_cap * 2 : 256 * 1024;
                uint8_t *nb = realloc(c->raw, cap);
                if (!nb)
                        return CHAPAR_ENOMEM;
                c->raw = nb;
                c->raw_cap = cap;
        }
        for (;;) {
                ssize_t n = recv(c->fd, c->raw + c->raw_len, c->raw_cap - c->raw_len, 0);
                if (n > 0) {
                        c->raw_len += (size_t)n;
                        return 0;
                }
                if (n == 0) {
                        snprintf(c->last_error, sizeof(c->last_error), "%s closed the connection",
                                 c->addr);
                        return CHAPAR_ENET;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return CHAPAR_ENET;
                int rc = wait_fd(c, POLLIN);
                if (rc)
                        return rc;
        }
}

static void raw_consume(struct chapar_client *c, size_t n)
{
        if (n == 0)
                return;
        memmove(c->raw, c->raw + n, c->raw_len - n);
        c->raw_len -= n;
}

/* Writes all of buf, reading what arrives meanwhile so neither side can block the other. */
static int write_all(struct chapar_client *c, const uint8_t *buf, size_t len)
{
        while (len > 0) {
                ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
                if (n > 0) {
                        buf += n;
                        len -= (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return CHAPAR_ENET;
                int rc = wait_fd(c, POLLOUT | POLLIN);
                if (rc)
                        return rc;
                struct pollfd p = {.fd = c->fd, .events = POLLIN};
                if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN) && (rc = raw_fill(c)))
                        return rc;
        }
        return 0;
}

/* ---- plaintext stream over the transport ------------------------------------------------- */

/* Room for n more bytes at the end of c->plain, moving what is unread to the front first. */
static int plain_room(struct chapar_client *c, size_t n)
{
        if (c->plain_off > 0 && c->plain_off == c->plain_len)
                c->plain_off = c->plain_len = 0;
        if (c->plain_cap - c->plain_len >= n)
                return 0;
        if (c->plain_off)
                memmove(c->plain, c->plain + c->plain_off, c->plain_len - c->plain_off);
        c->plain_len -= c->plain_off;
        c->plain_off = 0;
        size_t cap = c->plain_cap ? c->plain_cap : 256 * 1024;
        while (cap - c->plain_len < n)
                cap *= 2;
        if (cap == c->plain_cap)
                return 0;
        uint8_t *nb = realloc(c->plain, cap);
        if (!nb)
                return CHAPAR_ENOMEM;
        c->plain = nb;
        c->plain_cap = cap;
        return 0;
}

/* Makes at least n plaintext bytes available in c->plain. */
static int plain_need(struct chapar_client *c, size_t n)
{
        while (c->plain_len - c->plain_off < n) {
                if (!c->encrypted) {
                        /* plaintext: the raw buffer is the stream */
                        if (c->raw_len == 0) {
                                int rc = raw_fill(c);
                                if (rc)
                                        return rc;
                        }
                        size_t take = c->raw_len;
                        int rc = plain_room(c, take);
                        if (rc)
                                return rc;
                        memcpy(c->plain + c->plain_len, c->raw, take);
                        c->plain_len += take;
                        raw_consume(c, take);
                        continue;
                }
                ssize_t rl = chp_record_peek(c->raw, c->raw_len);
                if (rl == -EAGAIN) {
                        int rc = raw_fill(c);
                        if (rc)
                                return rc;
                        continue;
                }
                if (rl < 0)
                        goto bad;
                int rc = plain_room(c, CHP_RECORD_PLAIN_MAX);
                if (rc)
                        return rc;
                size_t got;
                bool closed;
                ssize_t used = chp_record_open(&c->rx, c->raw, c->raw_len, c->plain + c->plain_len,
                                               &got, &closed);
                if (used < 0)
                        goto bad;
                raw_consume(c, (size_t)used);
                c->plain_len += got;
                if (closed) {
                        snprintf(c->last_error, sizeof(c->last_error), "%s closed the connection",
                                 c->addr);
                        return CHAPAR_ENET;
                }
        }
        return 0;
bad:
        snprintf(c->last_error, sizeof(c->last_error),
                 "a record from %s failed authentication: the connection is not safe", c->addr);
        return CHAPAR_EINTEGRITY;
}

int cc_send(struct chapar_client *c, uint8_t type, uint32_t id, const void *a, size_t alen,
            const void *b, size_t blen)
{
        uint8_t hdr[CHP_FRAME_HEADER];
        chp_frame_header_encode(hdr, type, id, (uint32_t)(alen + blen));
        const struct {
                const uint8_t *p;
                size_t n;
        } parts[3] = {{hdr, sizeof(hdr)}, {a, alen}, {b, blen}};
        int rc = 0;
        if (!c->encrypted) {
                for (int i = 0; !rc && i < 3; i++)
                        if (parts[i].n)
                                rc = write_all(c, parts[i].p, parts[i].n);
                return rc;
        }
        /* cut the frame into full records, sealed into the staging buffer */
        size_t total = sizeof(hdr) + alen + blen, done = 0;
        int part = 0;
        size_t part_off = 0;
        while (done < total && !rc) {
                size_t n =
                    total - done < CHP_RECORD_PLAIN_MAX ? total - done : CHP_RECORD_PLAIN_MAX;
                uint8_t *stage = c->seal_buf + CHP_RECORD_HEADER;
                for (size_t got = 0; got < n;) {
                        while (part_off == parts[part].n) {
                                part++;
                                part_off = 0;
                        }
                        size_t take =
                            parts[part].n - part_off < n - got ? parts[part].n - part_off : n - got;
                        memcpy(stage + got, parts[part].p + part_off, take);
                        got += take;
                        part_off += take;
                }
                ssize_t sl = chp_record_seal(&c->tx, stage, n, c->seal_buf, CHP_RECORD_MAX);
                rc = sl < 0 ? CHAPAR_EPROTO : write_all(c, c->seal_buf, (size_t)sl);
                done += n;
        }
        return rc;
}

int cc_recv(struct chapar_client *c, struct chp_frame_header *h, uint8_t **payload)
{
        int rc = plain_need(c, CHP_FRAME_HEADER);
        if (rc)
                return rc;
        if (chp_frame_header_decode(c->plain + c->plain_off, CHP_FRAME_HEADER, h) < 0) {
                snprintf(c->last_error, sizeof(c->last_error), "malformed frame from %s", c->addr);
                return CHAPAR_EPROTO;
        }
        c->plain_off += CHP_FRAME_HEADER;
        if ((rc = plain_need(c, h->len)))
                return rc;
        *payload = c->plain + c->plain_off;
        c->plain_off += h->len;
        if (h->type == CHP_F_ERROR) {
                struct chp_msg_error e;
                if (chp_msg_error_decode(*payload, h->len, &e) != 0)
                        return CHAPAR_EPROTO;
                c->last_code = e.code;
                memcpy(c->last_error, e.msg, e.msg_len);
                c->last_error[e.msg_len] = '\0';
        }
        return 0;
}

int cc_call(struct chapar_client *c, uint8_t type, const void *p, size_t len,
            struct chp_frame_header *h, uint8_t **payload)
{
        uint32_t id = c->next_id++;
        int rc = cc_send(c, type, id, p, len, NULL, 0);
        if (!rc)
                rc = cc_recv(c, h, payload);
        if (rc)
                return rc;
        if (h->id != id)
                return CHAPAR_EPROTO;
        if (h->type == CHP_F_ERROR)
                return c->last_code == CHP_WE_NOT_FOUND ? CHAPAR_ENOTFOUND : CHAPAR_ERELAY;
        return h->type == (type | CHP_F_REPLY) ? 0 : CHAPAR_EPROTO;
}

/* ---- connect and handshake --------------------------------------------------------------- */

static int tcp_connect(struct chapar_client *c)
{
        char host[256], port[8];
        const char *colon = strrchr(c->addr, ':');
        if (!colon || colon == c->addr)
                return CHAPAR_EUSAGE;
        size_t hl = (size_t)(colon - c->addr);
        const char *h = c->addr;
        if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
                h++;
                hl -= 2;
        }
        if (hl >= sizeof(host) || strlen(colon + 1) >= sizeof(port) || !colon[1])
                return CHAPAR_EUSAGE;
        memcpy(host, h, hl);
        host[hl] = '\0';
        snprintf(port, sizeof(port), "%s", colon + 1);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        int gai = getaddrinfo(host, port, &hints, &res);
        if (gai != 0) {
                snprintf(c->last_error, sizeof(c->last_error), "cannot resolve %s: %s", host,
                         gai_strerror(gai));
                return CHAPAR_ENET;
        }
        int rc = CHAPAR_ENET;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        continue;
                c->fd = fd;
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
                    (errno == EINPROGRESS && wait_fd(c, POLLOUT) == 0)) {
                        int err = 0;
                        socklen_t sl = sizeof(err);
                        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                        if (err == 0) {
                                int one = 1;
                                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                                rc = 0;
                                break;
                        }
                        errno = err;
                }
                snprintf(c->last_error, sizeof(c->last_error), "cannot connect to %s: %s", c->addr,
                         strerror(errno));
                close(fd);
                c->fd = -1;
                if (c->cancel) {
                        rc = CHAPAR_ECANCELED;
                        break;
                }
        }
        freeaddrinfo(res);
        return rc;
}

static int hs_send(struct chapar_client *c, struct chp_noise_hs *hs)
{
        uint8_t msg[2 + 256];
        size_t n = 0;
        int rc = chp_noise_hs_write(hs, NULL, 0, msg + 2, sizeof(msg) - 2, &n);
        if (rc)
                return CHAPAR_EPROTO;
        msg[0] = (uint8_t)(n >> 8);
        msg[1] = (uint8_t)n;
        return write_all(c, msg, n + 2);
}

static int hs_recv(struct chapar_client *c, struct chp_noise_hs *hs)
{
        int rc;
        while (c->raw_len < 2)
                if ((rc = raw_fill(c)))
                        return rc;
        size_t n = (size_t)c->raw[0] << 8 | c->raw[1];
        if (n == 0)
                return CC_REFUSED;
        if (n > 1024) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "%s refused the handshake (is it a chapar relay, and does it allow "
                         "this transport?)",
                         c->addr);
                return CHAPAR_EPROTO;
        }
        while (c->raw_len < 2 + n)
                if ((rc = raw_fill(c)))
                        return rc;
        uint8_t payload[256];
        size_t plen;
        rc = chp_noise_hs_read(hs, c->raw + 2, n, payload, sizeof(payload), &plen);
        raw_consume(c, 2 + n);
        if (rc) {
                snprintf(c->last_error, sizeof(c->last_error),
                         "the handshake with %.200s failed: its messages do not verify", c->addr);
                return CHAPAR_EKEY;
        }
        return 0;
}

/* The Noise handshake. XX always: the relay proves it holds the static key it sends, and this
 * side compares that key with the pinned one itself, so a mismatch can be reported as exactly
 * that (with NK a wrong key only shows up as a failed decryption on the relay's side). */
static int handshake(struct chapar_client *c, struct chp_noise_suite suite)
{
        enum chp_noise_pattern pattern = c->ik ? CHP_NOISE_IK : CHP_NOISE_XX;
        uint8_t pre[CC_PREAMBLE] = {
            'C', 'H', 'N', '1', (uint8_t)pattern, (uint8_t)suite.cipher, (uint8_t)suite.hash, 0};
        uint8_t prologue[CC_PROLOGUE_MAX];
        size_t plen = cc_prologue(pre, prologue);
        struct chp_noise_hs hs;
        uint8_t s_priv[CHP_NOISE_DHLEN], s_pub[CHP_NOISE_DHLEN];
        uint8_t h[CHP_NOISE_HASHMAX];
        size_t hl;
        int rc = write_all(c, pre, sizeof(pre));
        if (rc)
                return rc;
        /* XX needs a static key on this side too: a fresh one, it identifies nobody; IK (relay to
         * relay) uses the relay's own, which the peer knows */
        if (c->ik)
                memcpy(s_priv, c->ik_priv, sizeof(s_priv));
        else
                chp_noise_keypair(s_priv, s_pub);
        if (chp_noise_hs_init(&hs, pattern, suite, true, prologue, plen, s_priv,
                              c->ik ? c->pinned : NULL) != 0) {
                rc = CHAPAR_EPROTO;
                goto out;
        }
        while (!chp_noise_hs_done(&hs)) {
                rc = chp_noise_hs_my_turn(&hs) ? hs_send(c, &hs) : hs_recv(c, &hs);
                if (rc)
                        goto out;
        }
        if (chp_noise_hs_remote_static(&hs, c->relay_key) != 0) {
                rc = CHAPAR_EPROTO;
                goto out;
        }
        if (c->have_pinned && sodium_memcmp(c->relay_key, c->pinned, CHAPAR_KEY_BYTES) != 0) {
                char got[CHP_HASH_HEXBYTES], want[CHP_HASH_HEXBYTES];
                chp_hex_encode(c->relay_key, CHAPAR_KEY_BYTES, got);
                chp_hex_encode(c->pinned, CHAPAR_KEY_BYTES, want);
                snprintf(c->last_error, sizeof(c->last_error),
                         "the relay at %.200s presented key %s, but %s is pinned for it (in "
                         "%.100s or by --relay-key); if its key changed on purpose, remove its "
                         "line from that file",
                         c->addr, got, want, c->known_relays);
                rc = CHAPAR_EKEY;
                goto out;
        }
        if (chp_noise_hs_split(&hs, &c->tx.cs, &c->rx.cs, h, &hl) != 0) {
                rc = CHAPAR_EPROTO;
                goto out;
        }
        c->encrypted = true;
out:
        chp_noise_hs_wipe(&hs);
        sodium_memzero(s_priv, sizeof(s_priv));
        return rc;
}

size_t cc_prologue(const uint8_t pre[CC_PREAMBLE], uint8_t out[CC_PROLOGUE_MAX])
{
        static const char label[] = "chapar native 1";
        memcpy(out, label, sizeof(label) - 1);
        memcpy(out + sizeof(label) - 1, pre, CC_PREAMBLE);
        return sizeof(label) - 1 + CC_PREAMBLE;
}

int cc_open(struct chapar_client *c)
{
        int rc = tcp_connect(c);
        if (rc)
                return rc;
        if (c->plaintext) {
                static const uint8_t pre[CC_PREAMBLE] = {'C', 'H', 'P', '0', 0, 0, 0, 0};
                rc = write_all(c, pre, sizeof(pre));
        } else if (!(c->seal_buf = malloc(CHP_RECORD_MAX))) {
                rc = CHAPAR_ENOMEM;
        } else {
                /* AES-GCM where this machine has AES-NI (it is the faster cipher there); a relay
                 * without it refuses, and the suite everyone implements is used instead */
                struct chp_noise_suite fast = {CHP_NOISE_AESGCM, CHP_NOISE_SHA256};
                struct chp_noise_suite common = {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B};
                rc = CC_REFUSED;
                if (chp_noise_suite_available(fast) && (rc = handshake(c, fast)) == CC_REFUSED) {
                        close(c->fd);
                        c->fd = -1;
                        c->raw_len = 0;
                        rc = tcp_connect(c);
                        if (!rc)
                                rc = CC_REFUSED;
                }
                if (rc == CC_REFUSED)
                        rc = handshake(c, common);
                if (rc == CC_REFUSED) {
                        snprintf(c->last_error, sizeof(c->last_error),
                                 "%.200s refused the handshake (is it a chapar relay?)", c->addr);
                        rc = CHAPAR_EPROTO;
                }
        }
        if (rc)
                return rc;
        uint8_t p[16];
        struct chp_msg_hello hello = {.version = CHP_PROTO_VERSION};
        ssize_t n = chp_msg_hello_encode(p, sizeof(p), &hello);
        struct chp_frame_header h;
        uint8_t *reply;
        if ((rc = cc_call(c, CHP_F_HELLO, p, (size_t)n, &h, &reply)))
                return rc == CHAPAR_ENET && c->plaintext ? CHAPAR_EPROTO : rc;
        return chp_msg_hello_ok_decode(reply, h.len, &c->hello) == 0 ? 0 : CHAPAR_EPROTO;
}

void cc_shutdown(struct chapar_client *c)
{
        if (c->fd >= 0 && c->encrypted && c->seal_buf) {
                /* the explicit close: the relay can tell an end from a cut */
                ssize_t sl = chp_record_seal(&c->tx, NULL, 0, c->seal_buf, CHP_RECORD_MAX);
                if (sl > 0) {
                        ssize_t w = send(c->fd, c->seal_buf, (size_t)sl, MSG_NOSIGNAL);
                        (void)w;
                }
        }
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        chp_record_wipe(&c->tx);
        chp_record_wipe(&c->rx);
        free(c->raw);
        free(c->plain);
        free(c->seal_buf);
        c->raw = c->plain = c->seal_buf = NULL;
}

int cc_connect_peer(const char *addr, const uint8_t peer_key[CHAPAR_KEY_BYTES],
                    const uint8_t my_priv[CHAPAR_KEY_BYTES], int timeout_ms,
                    struct chapar_client **out)
{
        struct chapar_client *c = calloc(1, sizeof(*c));
        *out = c;
        if (!c)
                return CHAPAR_ENOMEM;
        c->fd = -1;
        c->next_id = 1;
        c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
        snprintf(c->addr, sizeof(c->addr), "%s", addr);
        memcpy(c->pinned, peer_key, CHAPAR_KEY_BYTES);
        c->have_pinned = true;
        c->ik = true;
        memcpy(c->ik_priv, my_priv, CHAPAR_KEY_BYTES);
        return cc_open(c);
}
