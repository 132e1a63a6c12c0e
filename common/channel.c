/* channel.c — the initiator's side of the native transport (see channel.h): TCP, the preamble,
 * the Noise handshake, the record layer, and frames with timeouts and cancellation.
 *
 *   initiator                                       relay (server/secure.c)
 *     preamble "CHN1" pattern cipher hash 0  ------->
 *     [u16 len] Noise message 1 ------------------>   XX: -> e        IK: -> e, es, s, ss
 *     <--------------------------------------------- [u16 len] message 2
 *                                                     XX: <- e, ee, s, es   IK: <- e, ee, se
 *     [u16 len] message 3 (XX only: -> s, se) ------>
 *     records (u16 len + ciphertext) both ways, carrying the native frame stream
 *     HELLO --------------------------------------->
 *     <--------------------------------------------- HELLO_OK (window, max in flight)
 *
 * The prologue is "chapar native 1" followed by the preamble, so a change to the offered pattern
 * or suite on the way breaks the handshake. "CHP0" instead of "CHN1" asks for plaintext, which a
 * relay grants only with --insecure-plaintext on loopback. A relay that refuses answers a zero
 * length where its handshake message would be.
 */
#include "channel.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sodium.h>

#include "err.h"
#include "hash.h"
#include "net.h"
#include "record.h"

#define SLICE_MS   200  /* how often a wait looks at the cancel flag */
#define REFUSED    1    /* internal: the relay refused the offered suite */
#define HS_MSG_MAX 1024 /* a longer handshake message is not a chapar relay's */
#define RAW_MIN    (256 * 1024)
/* Bytes a connection's socket may hold not yet sent: a writer waits beyond it. The kernel would
 * otherwise take megabytes, which a cut turns into whole chunks sent again although they never
 * left this machine, and which delay an endgame's resend; what is in flight is not limited. */
#define NOTSENT_LOWAT (256 * 1024)

struct chp_channel {
        int fd;
        int timeout_ms;
        const atomic_int *cancel;
        char addr[300]; /* HOST:PORT as given */
        char congestion[CHP_NET_CC_MAX]; /* asked for before connect; "": the system's */
        bool encrypted; /* the handshake is done */
        bool ik;
        bool have_remote;
        uint8_t static_priv[CHP_KEY_BYTES];
        uint8_t expected[CHP_KEY_BYTES];
        uint8_t remote_key[CHP_KEY_BYTES]; /* what the relay proved it holds */
        struct chp_record_dir tx, rx;
        uint8_t *raw; /* bytes from the socket; raw_off..raw_len not yet decrypted */
        size_t raw_off, raw_len, raw_cap;
        uint8_t *plain; /* decrypted frame stream not yet consumed */
        size_t plain_len, plain_off, plain_cap;
        uint8_t *seal_buf; /* one record being sealed */
        uint32_t next_id;
        struct chp_msg_hello_ok hello;
        uint32_t remote_code;
        char err[1024];
};

/* ---- the preamble ------------------------------------------------------------------------ */

void chp_channel_preamble_noise(uint8_t out[CHP_PREAMBLE_BYTES], enum chp_noise_pattern pattern,
                                struct chp_noise_suite suite)
{
        memcpy(out, CHP_PREAMBLE_NOISE, 4);
        out[4] = (uint8_t)pattern;
        out[5] = (uint8_t)suite.cipher;
        out[6] = (uint8_t)suite.hash;
        out[7] = 0;
}

void chp_channel_preamble_plain(uint8_t out[CHP_PREAMBLE_BYTES])
{
        memcpy(out, CHP_PREAMBLE_PLAIN, 4);
        memset(out + 4, 0, CHP_PREAMBLE_BYTES - 4);
}

size_t chp_channel_prologue(const uint8_t pre[CHP_PREAMBLE_BYTES], uint8_t out[CHP_PROLOGUE_MAX])
{
        static const char label[] = "chapar native 1";
        _Static_assert(sizeof(label) - 1 + CHP_PREAMBLE_BYTES <= CHP_PROLOGUE_MAX,
                       "the prologue fits");
        memcpy(out, label, sizeof(label) - 1);
        memcpy(out + sizeof(label) - 1, pre, CHP_PREAMBLE_BYTES);
        return sizeof(label) - 1 + CHP_PREAMBLE_BYTES;
}

/* ---- the socket -------------------------------------------------------------------------- */

static bool canceled(const struct chp_channel *ch)
{
        return ch->cancel && atomic_load_explicit(ch->cancel, memory_order_relaxed);
}

/* Waits for events on the socket, in slices so that a cancel is seen. */
static int wait_fd(struct chp_channel *ch, short events)
{
        uint64_t deadline = chp_net_now_ms() + (uint64_t)ch->timeout_ms;
        for (;;) {
                if (canceled(ch))
                        return -ECANCELED;
                struct pollfd p = {.fd = ch->fd, .events = events};
                int r = poll(&p, 1, SLICE_MS);
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (chp_net_now_ms() > deadline) {
                        snprintf(ch->err, sizeof(ch->err), "no answer from %s within %d s",
                                 ch->addr, ch->timeout_ms / 1000);
                        return -ETIMEDOUT;
                }
        }
}

/* Reads what the socket has into buf (cap > 0 bytes), waiting for at least one byte. */
static int sock_read(struct chp_channel *ch, uint8_t *buf, size_t cap, size_t *got)
{
        for (;;) {
                ssize_t n = recv(ch->fd, buf, cap, 0);
                if (n > 0) {
                        *got = (size_t)n;
                        return 0;
                }
                if (n == 0 || errno == ECONNRESET) {
                        snprintf(ch->err, sizeof(ch->err), "%s closed the connection", ch->addr);
                        return -ECONNRESET;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                int rc = wait_fd(ch, POLLIN);
                if (rc)
                        return rc;
        }
}

/* Reads what the socket has into the raw buffer (waiting for at least one byte). */
static int raw_fill(struct chp_channel *ch)
{
        if (ch->raw_cap - ch->raw_len < 65536 && ch->raw_off) {
                /* what is unread moves to the front when room runs out, not after every record */
                memmove(ch->raw, ch->raw + ch->raw_off, ch->raw_len - ch->raw_off);
                ch->raw_len -= ch->raw_off;
                ch->raw_off = 0;
        }
        if (ch->raw_cap - ch->raw_len < 65536) {
                size_t cap = ch->raw_cap ? ch->raw_cap * 2 : RAW_MIN;
                uint8_t *nb = realloc(ch->raw, cap);
                if (!nb)
                        return -ENOMEM;
                ch->raw = nb;
                ch->raw_cap = cap;
        }
        size_t got = 0;
        int rc = sock_read(ch, ch->raw + ch->raw_len, ch->raw_cap - ch->raw_len, &got);
        ch->raw_len += got;
        return rc;
}

static size_t raw_avail(const struct chp_channel *ch)
{
        return ch->raw_len - ch->raw_off;
}

static void raw_consume(struct chp_channel *ch, size_t n)
{
        ch->raw_off += n;
        if (ch->raw_off == ch->raw_len)
                ch->raw_off = ch->raw_len = 0;
}

/* Writes all of iov (modified), reading what arrives meanwhile so neither side can block the
 * other. */
static int write_iov(struct chp_channel *ch, struct iovec *iov, int n)
{
        while (n > 0) {
                struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
                ssize_t w = sendmsg(ch->fd, &mh, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno != EAGAIN) {
                        int e = errno == EPIPE ? ECONNRESET : errno;
                        snprintf(ch->err, sizeof(ch->err), "cannot write to %s: %s", ch->addr,
                                 strerror(errno));
                        return -e;
                }
                if (w < 0) {
                        int rc = wait_fd(ch, POLLOUT | POLLIN);
                        if (rc)
                                return rc;
                        struct pollfd p = {.fd = ch->fd, .events = POLLIN};
                        if (poll(&p, 1, 0) > 0 && (p.revents & POLLIN) && (rc = raw_fill(ch)))
                                return rc;
                        continue;
                }
                chp_net_iov_advance(&iov, &n, (size_t)w);
        }
        return 0;
}

static int write_all(struct chp_channel *ch, const uint8_t *buf, size_t len)
{
        struct iovec iov = {(void *)buf, len};
        return write_iov(ch, &iov, 1);
}

/* ---- the frame stream -------------------------------------------------------------------- */

/* Room for n more bytes at the end of ch->plain, moving what is unread to the front first. */
static int plain_room(struct chp_channel *ch, size_t n)
{
        if (ch->plain_off > 0 && ch->plain_off == ch->plain_len)
                ch->plain_off = ch->plain_len = 0;
        if (ch->plain_cap - ch->plain_len >= n)
                return 0;
        if (ch->plain_off)
                memmove(ch->plain, ch->plain + ch->plain_off, ch->plain_len - ch->plain_off);
        ch->plain_len -= ch->plain_off;
        ch->plain_off = 0;
        size_t cap = ch->plain_cap ? ch->plain_cap : RAW_MIN;
        while (cap - ch->plain_len < n)
                cap *= 2;
        if (cap == ch->plain_cap)
                return 0;
        uint8_t *nb = realloc(ch->plain, cap);
        if (!nb)
                return -ENOMEM;
        ch->plain = nb;
        ch->plain_cap = cap;
        return 0;
}

/* Makes at least n bytes of the frame stream available in ch->plain. */
static int plain_need(struct chp_channel *ch, size_t n)
{
        while (ch->plain_len - ch->plain_off < n) {
                int rc;
                if (!ch->encrypted) {
                        /* plaintext: the socket's bytes are the stream and go straight into
                         * plain; bytes a write read meanwhile (into raw) come first */
                        size_t take = raw_avail(ch), got = 0;
                        size_t want = n - (ch->plain_len - ch->plain_off);
                        if ((rc = plain_room(ch, take ? take : want)))
                                return rc;
                        if (take) {
                                memcpy(ch->plain + ch->plain_len, ch->raw + ch->raw_off, take);
                                raw_consume(ch, take);
                        } else if ((rc = sock_read(ch, ch->plain + ch->plain_len,
                                                   ch->plain_cap - ch->plain_len, &got))) {
                                return rc;
                        }
                        ch->plain_len += take + got;
                        continue;
                }
                ssize_t rl = chp_record_peek(ch->raw + ch->raw_off, raw_avail(ch));
                if (rl == -EAGAIN) {
                        if ((rc = raw_fill(ch)))
                                return rc;
                        continue;
                }
                if (rl < 0)
                        goto bad;
                if ((rc = plain_room(ch, CHP_RECORD_PLAIN_MAX)))
                        return rc;
                size_t got;
                bool closed;
                ssize_t used = chp_record_open(&ch->rx, ch->raw + ch->raw_off, raw_avail(ch),
                                               ch->plain + ch->plain_len, &got, &closed);
                if (used < 0)
                        goto bad;
                raw_consume(ch, (size_t)used);
                ch->plain_len += got;
                if (closed) {
                        snprintf(ch->err, sizeof(ch->err), "%s closed the connection", ch->addr);
                        return -ECONNRESET;
                }
        }
        return 0;
bad:
        snprintf(ch->err, sizeof(ch->err),
                 "a record from %s failed authentication: the connection is not safe", ch->addr);
        return CHP_EAUTH;
}

/* Writes parts as frame-stream bytes: as they are, or cut into full records and sealed. */
static int put_stream(struct chp_channel *ch, struct iovec *parts, int nparts)
{
        if (!ch->encrypted)
                return write_iov(ch, parts, nparts);
        size_t total = 0, done = 0, part_off = 0;
        for (int i = 0; i < nparts; i++)
                total += parts[i].iov_len;
        int part = 0, rc = 0;
        while (done < total && !rc) {
                size_t n =
                    total - done < CHP_RECORD_PLAIN_MAX ? total - done : CHP_RECORD_PLAIN_MAX;
                uint8_t *stage = ch->seal_buf + CHP_RECORD_HEADER;
                for (size_t got = 0; got < n;) {
                        while (part_off == parts[part].iov_len) {
                                part++;
                                part_off = 0;
                        }
                        size_t left = parts[part].iov_len - part_off;
                        size_t take = left < n - got ? left : n - got;
                        memcpy(stage + got, (uint8_t *)parts[part].iov_base + part_off, take);
                        got += take;
                        part_off += take;
                }
                ssize_t sl = chp_record_seal(&ch->tx, stage, n, ch->seal_buf, CHP_RECORD_MAX);
                rc = sl < 0 ? -EPROTO : write_all(ch, ch->seal_buf, (size_t)sl);
                done += n;
        }
        return rc;
}

int chp_channel_send(struct chp_channel *ch, uint8_t type, uint32_t id, const void *a, size_t alen,
                     const void *b, size_t blen)
{
        uint8_t hdr[CHP_FRAME_HEADER];
        chp_frame_header_encode(hdr, type, id, (uint32_t)(alen + blen));
        struct iovec parts[3] = {{hdr, sizeof(hdr)}, {(void *)a, alen}, {(void *)b, blen}};
        return put_stream(ch, parts, 3);
}

int chp_channel_write(struct chp_channel *ch, const void *buf, size_t len)
{
        struct iovec part = {(void *)buf, len};
        return put_stream(ch, &part, 1);
}

int chp_channel_recv(struct chp_channel *ch, struct chp_frame_header *h, uint8_t **payload)
{
        *payload = NULL;
        int rc = plain_need(ch, CHP_FRAME_HEADER);
        if (rc)
                return rc;
        if (chp_frame_header_decode(ch->plain + ch->plain_off, CHP_FRAME_HEADER, h) < 0) {
                snprintf(ch->err, sizeof(ch->err), "malformed frame from %s", ch->addr);
                return -EPROTO;
        }
        ch->plain_off += CHP_FRAME_HEADER;
        if ((rc = plain_need(ch, h->len)))
                return rc;
        *payload = ch->plain + ch->plain_off;
        ch->plain_off += h->len;
        if (h->type == CHP_F_ERROR) {
                struct chp_msg_error e;
                if (chp_msg_error_decode(*payload, h->len, &e) != 0) {
                        snprintf(ch->err, sizeof(ch->err), "malformed ERROR frame from %s",
                                 ch->addr);
                        return -EPROTO;
                }
                ch->remote_code = e.code;
                memcpy(ch->err, e.msg, e.msg_len);
                ch->err[e.msg_len] = '\0';
        }
        return 0;
}

int chp_channel_call(struct chp_channel *ch, uint8_t type, const void *p, size_t len,
                     struct chp_frame_header *h, uint8_t **payload)
{
        uint32_t id = ch->next_id++;
        int rc = chp_channel_send(ch, type, id, p, len, NULL, 0);
        if (!rc)
                rc = chp_channel_recv(ch, h, payload);
        if (rc)
                return rc;
        if (h->type == CHP_F_ERROR)
                return CHP_EREMOTE;
        if (h->id != id || h->type != (type | CHP_F_REPLY)) {
                snprintf(ch->err, sizeof(ch->err), "%s answered request %u with frame %u (type %u)",
                         ch->addr, (unsigned)id, (unsigned)h->id, (unsigned)h->type);
                return -EPROTO;
        }
        return 0;
}

uint32_t chp_channel_reserve_ids(struct chp_channel *ch, uint32_t n)
{
        uint32_t base = ch->next_id;
        ch->next_id += n;
        return base;
}

const struct chp_msg_hello_ok *chp_channel_hello(const struct chp_channel *ch)
{
        return &ch->hello;
}

const uint8_t *chp_channel_remote_key(const struct chp_channel *ch)
{
        return ch->encrypted ? ch->remote_key : NULL;
}

uint32_t chp_channel_remote_code(const struct chp_channel *ch)
{
        return ch->remote_code;
}

const char *chp_channel_error(const struct chp_channel *ch)
{
        return ch ? ch->err : "";
}

int chp_channel_fd(const struct chp_channel *ch)
{
        return ch->fd;
}

/* ---- connect and handshake --------------------------------------------------------------- */

static int tcp_connect(struct chp_channel *ch)
{
        char host[CHP_NET_HOST_MAX], port[8];
        uint16_t pn;
        if (chp_net_split_hostport(ch->addr, host, sizeof(host), &pn) != 0) {
                snprintf(ch->err, sizeof(ch->err), "%s is not HOST:PORT", ch->addr);
                return -EINVAL;
        }
        snprintf(port, sizeof(port), "%u", pn);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        struct addrinfo *res = NULL;
        int gai = getaddrinfo(host, port, &hints, &res);
        if (gai != 0) {
                snprintf(ch->err, sizeof(ch->err), "cannot resolve %s: %s", host,
                         gai_strerror(gai));
                return -EHOSTUNREACH;
        }
        int rc = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0) {
                        rc = -errno;
                        continue;
                }
                ch->fd = fd;
                int err = 0;
                /* before connect, so the handshake's first segments already run it; a refusal
                 * (not allowed, unknown) leaves the system's default */
                if (ch->congestion[0])
                        (void)!chp_net_set_congestion(fd, ch->congestion);
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                        rc = 0;
                } else if (errno != EINPROGRESS) {
                        err = errno;
                } else if ((rc = wait_fd(ch, POLLOUT)) == 0) {
                        socklen_t sl = sizeof(err);
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
                                err = errno;
                }
                if (!rc && !err) {
                        int one = 1, lowat = NOTSENT_LOWAT;
                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
                        break;
                }
                if (err) {
                        rc = -err;
                        snprintf(ch->err, sizeof(ch->err), "cannot connect to %s: %s", ch->addr,
                                 strerror(err));
                }
                close(fd);
                ch->fd = -1;
                if (rc == -ECANCELED)
                        break;
        }
        freeaddrinfo(res);
        return rc;
}

static int hs_send(struct chp_channel *ch, struct chp_noise_hs *hs)
{
        uint8_t msg[2 + 256];
        size_t n = 0;
        if (chp_noise_hs_write(hs, NULL, 0, msg + 2, sizeof(msg) - 2, &n) != 0)
                return -EPROTO;
        msg[0] = (uint8_t)(n >> 8);
        msg[1] = (uint8_t)n;
        return write_all(ch, msg, n + 2);
}

static int hs_recv(struct chp_channel *ch, struct chp_noise_hs *hs)
{
        int rc;
        while (raw_avail(ch) < 2)
                if ((rc = raw_fill(ch)))
                        return rc;
        const uint8_t *at = ch->raw + ch->raw_off;
        size_t n = (size_t)at[0] << 8 | at[1];
        if (n == 0)
                return REFUSED;
        if (n > HS_MSG_MAX) {
                snprintf(ch->err, sizeof(ch->err),
                         "%s refused the handshake (is it a chapar relay, and does it allow "
                         "this transport?)",
                         ch->addr);
                return -EPROTO;
        }
        while (raw_avail(ch) < 2 + n)
                if ((rc = raw_fill(ch)))
                        return rc;
        uint8_t payload[256];
        size_t plen;
        rc = chp_noise_hs_read(hs, ch->raw + ch->raw_off + 2, n, payload, sizeof(payload), &plen);
        raw_consume(ch, 2 + n);
        if (rc) {
                snprintf(ch->err, sizeof(ch->err),
                         "the handshake with %.200s failed: its messages do not verify", ch->addr);
                return CHP_EKEY;
        }
        return 0;
}

/* The Noise handshake. XX for clients: the relay proves it holds the static key it sends, and
 * this side compares that key with the expected one itself, so a mismatch can be reported as
 * exactly that (with NK a wrong key only shows up as a failed decryption on the relay's side).
 * IK between relays: both static keys are known to both. */
static int handshake(struct chp_channel *ch, struct chp_noise_suite suite)
{
        enum chp_noise_pattern pattern = ch->ik ? CHP_NOISE_IK : CHP_NOISE_XX;
        uint8_t pre[CHP_PREAMBLE_BYTES], prologue[CHP_PROLOGUE_MAX];
        chp_channel_preamble_noise(pre, pattern, suite);
        size_t plen = chp_channel_prologue(pre, prologue);
        struct chp_noise_hs hs;
        uint8_t s_priv[CHP_KEY_BYTES], s_pub[CHP_KEY_BYTES];
        uint8_t h[CHP_NOISE_HASHMAX];
        size_t hl;
        int rc = write_all(ch, pre, sizeof(pre));
        if (rc)
                return rc;
        /* XX needs a static key on this side too: a fresh one, it identifies nobody; IK (relay to
         * relay) uses the relay's own, which the peer knows */
        if (ch->ik)
                memcpy(s_priv, ch->static_priv, sizeof(s_priv));
        else
                chp_noise_keypair(s_priv, s_pub);
        if (chp_noise_hs_init(&hs, pattern, suite, true, prologue, plen, s_priv,
                              ch->ik ? ch->expected : NULL) != 0) {
                snprintf(ch->err, sizeof(ch->err), "cannot set up a handshake with %s", ch->addr);
                rc = -EPROTO;
                goto out;
        }
        while (!chp_noise_hs_done(&hs)) {
                rc = chp_noise_hs_my_turn(&hs) ? hs_send(ch, &hs) : hs_recv(ch, &hs);
                if (rc)
                        goto out;
        }
        if (chp_noise_hs_remote_static(&hs, ch->remote_key) != 0) {
                rc = -EPROTO;
                goto out;
        }
        if (ch->have_remote && sodium_memcmp(ch->remote_key, ch->expected, CHP_KEY_BYTES) != 0) {
                char got[CHP_HASH_HEXBYTES], want[CHP_HASH_HEXBYTES];
                chp_hex_encode(ch->remote_key, CHP_KEY_BYTES, got);
                chp_hex_encode(ch->expected, CHP_KEY_BYTES, want);
                snprintf(ch->err, sizeof(ch->err),
                         "the relay at %.200s presented key %s, but %s is pinned for it", ch->addr,
                         got, want);
                rc = CHP_EKEY;
                goto out;
        }
        if (chp_noise_hs_split(&hs, &ch->tx.cs, &ch->rx.cs, h, &hl) != 0) {
                rc = -EPROTO;
                goto out;
        }
        ch->encrypted = true;
out:
        chp_noise_hs_wipe(&hs);
        sodium_memzero(s_priv, sizeof(s_priv));
        return rc;
}

/* The transport: plaintext preamble, or the handshake with the fastest suite both sides have. */
static int transport(struct chp_channel *ch, bool plaintext)
{
        if (plaintext) {
                uint8_t pre[CHP_PREAMBLE_BYTES];
                chp_channel_preamble_plain(pre);
                return write_all(ch, pre, sizeof(pre));
        }
        if (!(ch->seal_buf = malloc(CHP_RECORD_MAX)))
                return -ENOMEM;
        /* AES-GCM where this machine has AES-NI (it is the faster cipher there); a relay without
         * it refuses, and the suite everyone implements is used instead */
        struct chp_noise_suite fast = {CHP_NOISE_AESGCM, CHP_NOISE_SHA256};
        struct chp_noise_suite common = {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B};
        int rc = REFUSED;
        if (chp_noise_suite_available(fast) && (rc = handshake(ch, fast)) == REFUSED) {
                close(ch->fd);
                ch->fd = -1;
                ch->raw_off = ch->raw_len = 0;
                rc = tcp_connect(ch);
                if (!rc)
                        rc = REFUSED;
        }
        if (rc == REFUSED)
                rc = handshake(ch, common);
        if (rc == REFUSED) {
                snprintf(ch->err, sizeof(ch->err),
                         "%.200s refused the handshake (is it a chapar relay?)", ch->addr);
                rc = -EPROTO;
        }
        return rc;
}

static int hello(struct chp_channel *ch, bool plaintext, const char *token)
{
        uint8_t p[16 + CHP_TOKEN_MAX];
        size_t tlen = token ? strlen(token) : 0;
        if (tlen > CHP_TOKEN_MAX) {
                snprintf(ch->err, sizeof(ch->err), "the token is over %d bytes", CHP_TOKEN_MAX);
                return -EINVAL;
        }
        struct chp_msg_hello hello = {.version = CHP_PROTO_VERSION,
                                      .token_len = (uint16_t)tlen,
                                      .token = (const uint8_t *)token};
        ssize_t n = chp_msg_hello_encode(p, sizeof(p), &hello);
        struct chp_frame_header h;
        uint8_t *reply;
        int rc = n < 0 ? (int)n : chp_channel_call(ch, CHP_F_HELLO, p, (size_t)n, &h, &reply);
        if (rc == -ECONNRESET && plaintext)
                return -EPROTO; /* a relay that does not allow plaintext closes at once */
        /* the channel is gone with this call: its refusal survives as a code of its own */
        if (rc == CHP_EREMOTE && ch->remote_code == CHP_WE_UNAUTHORIZED)
                return CHP_ETOKEN_MISSING;
        if (rc == CHP_EREMOTE && ch->remote_code == CHP_WE_LIMITED)
                return CHP_ELIMITED;
        if (rc)
                return rc;
        if (chp_msg_hello_ok_decode(reply, h.len, &ch->hello) != 0) {
                snprintf(ch->err, sizeof(ch->err), "malformed HELLO_OK from %s", ch->addr);
                return -EPROTO;
        }
        return 0;
}

int chp_channel_open(const struct chp_channel_opts *o, struct chp_channel **out, char *why,
                     size_t cap)
{
        *out = NULL;
        if (cap)
                why[0] = '\0';
        if (!o->addr || (o->ik && (!o->static_priv || !o->remote_key))) {
                snprintf(why, cap, "a channel needs an address (and for IK both keys)");
                return -EINVAL;
        }
        struct chp_channel *ch = calloc(1, sizeof(*ch));
        if (!ch) {
                snprintf(why, cap, "out of memory");
                return -ENOMEM;
        }
        ch->fd = -1;
        ch->next_id = 1;
        ch->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
        ch->cancel = o->cancel;
        ch->ik = o->ik;
        if (o->congestion && strlen(o->congestion) < sizeof(ch->congestion))
                snprintf(ch->congestion, sizeof(ch->congestion), "%s", o->congestion);
        snprintf(ch->addr, sizeof(ch->addr), "%s", o->addr);
        if (o->static_priv)
                memcpy(ch->static_priv, o->static_priv, CHP_KEY_BYTES);
        if (o->remote_key) {
                memcpy(ch->expected, o->remote_key, CHP_KEY_BYTES);
                ch->have_remote = true;
        }
        int rc = tcp_connect(ch);
        if (!rc)
                rc = transport(ch, o->plaintext);
        if (!rc)
                rc = hello(ch, o->plaintext, o->token);
        if (rc) {
                if (rc == -ECANCELED)
                        snprintf(why, cap, "canceled");
                else
                        snprintf(why, cap, "%s", ch->err[0] ? ch->err : chp_strerror(rc));
                chp_channel_close(ch);
                return rc;
        }
        *out = ch;
        return 0;
}

void chp_channel_close(struct chp_channel *ch)
{
        if (!ch)
                return;
        if (ch->fd >= 0 && ch->encrypted && ch->seal_buf) {
                /* the explicit close: the relay can tell an end from a cut */
                ssize_t sl = chp_record_seal(&ch->tx, NULL, 0, ch->seal_buf, CHP_RECORD_MAX);
                if (sl > 0) {
                        ssize_t w = send(ch->fd, ch->seal_buf, (size_t)sl, MSG_NOSIGNAL);
                        (void)w;
                }
        }
        if (ch->fd >= 0)
                close(ch->fd);
        chp_record_wipe(&ch->tx);
        chp_record_wipe(&ch->rx);
        free(ch->raw);
        free(ch->plain);
        free(ch->seal_buf);
        sodium_memzero(ch, sizeof(*ch));
        free(ch);
}
