/* link.c — libchapar's link to its relay: a chp_channel (common/channel.h) with the known-relays
 * pin, its err.h codes mapped to the public CHAPAR_E* codes in one table, and its messages kept
 * in the client's last_error. Internal to client/ (see client_int.h).
 */
#include "client_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "err.h"
#include "net.h"

#define BACKOFF_FIRST_MS 200  /* the first reconnect waits up to this ... */
#define BACKOFF_MAX_MS   5000 /* ... doubling up to this */

/* The public code for a channel's code (CHP_EREMOTE: for remote, the ERROR frame's code). */
static int map_code_of(int rc, uint32_t remote)
{
        switch (rc) {
        case 0:
                return 0;
        case -ENOMEM:
                return CHAPAR_ENOMEM;
        case -ECANCELED:
                return CHAPAR_ECANCELED;
        case -EINVAL:
                return CHAPAR_EUSAGE;
        case CHP_EKEY:
                return CHAPAR_EKEY;
        case CHP_EAUTH:
                return CHAPAR_EINTEGRITY;
        case CHP_ETOKEN_MISSING: /* HELLO refused: the relay's reason is in last_error */
                return CHAPAR_EAUTH;
        case CHP_ELIMITED:
                return CHAPAR_ELIMITED;
        case CHP_EREMOTE:
                switch (remote) {
                case CHP_WE_NOT_FOUND:
                        return CHAPAR_ENOTFOUND;
                case CHP_WE_UNAUTHORIZED:
                case CHP_WE_FORBIDDEN:
                        return CHAPAR_EAUTH;
                case CHP_WE_QUOTA:
                        return CHAPAR_EQUOTA;
                case CHP_WE_LIMITED:
                        return CHAPAR_ELIMITED;
                }
                return CHAPAR_ERELAY;
        case -EPROTO:
        case -EBADMSG:
                return CHAPAR_EPROTO;
        default:
                return CHAPAR_ENET; /* -ECONNRESET, -ETIMEDOUT, -ECONNREFUSED, ... */
        }
}

static int map_code(const struct chapar_client *c, int rc)
{
        return map_code_of(rc, c->last_code);
}

int cc_code(int rc, uint32_t remote_code)
{
        return map_code_of(rc, remote_code);
}

/* The public code for a channel's code; c->last_error gets the channel's message. */
static int public_code(struct chapar_client *c, int rc)
{
        if (rc == 0)
                return 0;
        if (c->ch && rc != CHP_EREMOTE)
                snprintf(c->last_error, sizeof(c->last_error), "%s", chp_channel_error(c->ch));
        return map_code(c, rc);
}

/* A client whose connect failed has no channel: its calls fail as the connection would. */
static int unconnected(struct chapar_client *c)
{
        snprintf(c->last_error, sizeof(c->last_error), "not connected to %.200s", c->addr);
        return CHAPAR_ENET;
}

/* A channel to c's relay with c's pin, token and congestion control, canceled by cancel (which
 * must outlive the channel); why gets the channel's message. */
static int open_channel(struct chapar_client *c, const atomic_int *cancel, struct chp_channel **ch,
                        char *why, size_t cap)
{
        struct chp_channel_opts o = {.addr = c->addr,
                                     .plaintext = c->plaintext,
                                     .remote_key = c->have_pinned ? c->pinned : NULL,
                                     .timeout_ms = c->timeout_ms,
                                     .cancel = cancel,
                                     .token = c->token[0] ? c->token : NULL,
                                     .congestion = c->congestion};
        return chp_channel_open(&o, ch, why, cap);
}

int cc_open(struct chapar_client *c)
{
        int rc = open_channel(c, &c->cancel, &c->ch, c->last_error, sizeof(c->last_error));
        if (rc == CHP_EKEY && strstr(c->last_error, " presented key ")) {
                size_t n = strlen(c->last_error);
                snprintf(c->last_error + n, sizeof(c->last_error) - n,
                         " (in %.100s or by --relay-key); if its key changed on purpose, remove "
                         "its line from that file",
                         c->known_relays);
        }
        if (rc)
                return public_code(c, rc);
        const uint8_t *key = chp_channel_remote_key(c->ch);
        if (key)
                memcpy(c->relay_key, key, CHP_KEY_BYTES);
        c->hello = *chp_channel_hello(c->ch);
        return 0;
}

void cc_dial_prepare(const struct chapar_client *c, struct cc_dial *d)
{
        memset(d, 0, sizeof(*d));
        snprintf(d->addr, sizeof(d->addr), "%s", c->addr);
        snprintf(d->token, sizeof(d->token), "%s", c->token);
        snprintf(d->congestion, sizeof(d->congestion), "%s", c->congestion);
        d->plaintext = c->plaintext;
        /* the relay proved its key on c->ch: another connection must prove the same one */
        memcpy(d->key, c->relay_key, CHP_KEY_BYTES);
        d->timeout_ms = c->timeout_ms;
        d->cancel = &c->cancel;
        d->connected = c->ch != NULL;
}

int cc_dial(struct cc_dial *d, struct chp_channel **out, char *why, size_t cap)
{
        *out = NULL;
        if (!d->connected) {
                snprintf(why, cap, "not connected to %.200s", d->addr);
                return CHAPAR_ENET;
        }
        struct chp_channel_opts o = {.addr = d->addr,
                                     .plaintext = d->plaintext,
                                     .remote_key = d->plaintext ? NULL : d->key,
                                     .timeout_ms = d->timeout_ms,
                                     .cancel = d->cancel,
                                     .token = d->token[0] ? d->token : NULL,
                                     .congestion = d->congestion};
        int rc = chp_channel_open(&o, out, why, cap);
        sodium_memzero(d->token, sizeof(d->token));
        return cc_code(rc, 0);
}

int cc_open_extra(struct chapar_client *c, struct chp_channel **out)
{
        struct cc_dial d;
        cc_dial_prepare(c, &d);
        return cc_dial(&d, out, c->last_error, sizeof(c->last_error));
}

uint32_t cc_backoff_ms(uint32_t attempt)
{
        uint32_t cap = BACKOFF_FIRST_MS << (attempt < 5 ? attempt : 5);
        if (cap > BACKOFF_MAX_MS)
                cap = BACKOFF_MAX_MS;
        return cap / 2 + randombytes_uniform(cap / 2 + 1); /* jitter: in [cap/2, cap] */
}

void cc_stats_begin(struct chapar_client *c)
{
        c->stats = (struct chapar_transfer_stats){.size = sizeof(c->stats), .connections = 1};
        if (c->ch)
                (void)chp_net_congestion(chp_channel_fd(c->ch), c->stats.congestion,
                                         sizeof(c->stats.congestion));
}

void cc_shutdown(struct chapar_client *c)
{
        chp_channel_close(c->ch);
        c->ch = NULL;
}

int cc_send(struct chapar_client *c, uint8_t type, uint32_t id, const void *a, size_t alen,
            const void *b, size_t blen)
{
        if (!c->ch)
                return unconnected(c);
        return public_code(c, chp_channel_send(c->ch, type, id, a, alen, b, blen));
}

int cc_recv(struct chapar_client *c, struct chp_frame_header *h, uint8_t **payload)
{
        if (!c->ch)
                return unconnected(c);
        int rc = chp_channel_recv(c->ch, h, payload);
        if (!rc && h->type == CHP_F_ERROR) {
                c->last_code = chp_channel_remote_code(c->ch);
                snprintf(c->last_error, sizeof(c->last_error), "%s", chp_channel_error(c->ch));
        }
        return public_code(c, rc);
}

int cc_call(struct chapar_client *c, uint8_t type, const void *p, size_t len,
            struct chp_frame_header *h, uint8_t **payload)
{
        if (!c->ch)
                return unconnected(c);
        int rc = chp_channel_call(c->ch, type, p, len, h, payload);
        if (rc == CHP_EREMOTE) {
                c->last_code = chp_channel_remote_code(c->ch);
                snprintf(c->last_error, sizeof(c->last_error), "%s", chp_channel_error(c->ch));
        }
        return public_code(c, rc);
}

int cc_remote_error(struct chapar_client *c)
{
        return public_code(c, CHP_EREMOTE);
}

uint32_t cc_reserve_ids(struct chapar_client *c, uint32_t n)
{
        return c->ch ? chp_channel_reserve_ids(c->ch, n) : 1; /* its requests fail anyway */
}

/* ---- the adaptive connection count -------------------------------------------------------- */

void cc_adapt_init(struct cc_adapt *a, bool on, double now, uint64_t bytes)
{
        *a = (struct cc_adapt){.on = on, .t0 = now, .b0 = bytes};
}

bool cc_adapt_pays(const char *congestion)
{
        return strcmp(congestion, "bbr") != 0;
}

bool cc_adapt_step(struct cc_adapt *a, double now, uint64_t bytes, bool pending, uint32_t open,
                   uint64_t left, double rtt_s)
{
        double interval = 4 * rtt_s > CC_ADAPT_MIN_S ? 4 * rtt_s : CC_ADAPT_MIN_S;
        if (!a->on)
                return false;
        if (pending) { /* measure from when the added one is open */
                a->t0 = now;
                a->b0 = bytes;
                return false;
        }
        if (now - a->t0 < interval)
                return false;
        double rate = (double)(bytes - a->b0) / (now - a->t0);
        a->t0 = now;
        a->b0 = bytes;
        if (open >= CHAPAR_CONNECTIONS_MAX || open + 1 > left / 2 ||
            (a->last > 0 && rate < CC_ADAPT_GAIN * a->last)) {
                a->on = false; /* the last one did not pay, or there is no room: stay */
                return false;
        }
        a->last = rate;
        return true;
}

void cc_adapt_stop(struct cc_adapt *a)
{
        a->on = false;
}
