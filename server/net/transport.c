/* transport.c — the pass-through transport (see transport.h). */
#include "transport.h"

#include <errno.h>

#include "conn.h"

/* A body is received straight into (plaintext), so input and received see only what
 * arrives outside one. */
static int pt_attach(struct conn *c)
{
        (void)c;
        return 0;
}

static bool pt_no_end(struct conn *c)
{
        (void)c;
        return false;
}

static void pt_nothing(struct conn *c)
{
        (void)c;
}

static uint8_t *pt_recv_space(struct conn *c, size_t *len)
{
        (void)c;
        *len = 0;
        return NULL;
}

static int pt_received(struct conn *c, size_t n)
{
        (void)c;
        (void)n;
        return -EINVAL; /* never: pt_recv_space gives no room */
}

static bool pt_yes(const struct conn *c)
{
        (void)c;
        return true;
}

static bool pt_no(const struct conn *c)
{
        (void)c;
        return false;
}

static size_t pt_sealed_size(size_t n)
{
        return n;
}

static ssize_t pt_seal(struct conn *c, const uint8_t *plain, size_t n, uint8_t *out, size_t cap)
{
        (void)c, (void)plain, (void)n, (void)out, (void)cap;
        return -EINVAL; /* never: pt_no as sealing */
}

const struct chp_transport_ops chp_transport_plain = {
    .name = "plain",
    .attach = pt_attach,
    .detach = pt_nothing,
    .input = conn_deliver,
    .recv_space = pt_recv_space,
    .received = pt_received,
    .plaintext = pt_yes,
    .sealing = pt_no,
    .sealed_size = pt_sealed_size,
    .seal = pt_seal,
    .close_record = pt_no_end,
    .pending = pt_no,
    .handshaking = pt_no,
};
