/* access.c — who may upload, from the configuration: the no-tenant rule (a relay that faces
 * more than this host must have tenants whose tokens it checks, or --open), the line the relay
 * logs about it at start and on reload, and the lookups of a tenant and of a tenant's key that the
 * token checks use. Pure functions of a finished configuration (config.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net.h"

/* Whether a face listening on addr (HOST:PORT as configured; NULL or "off": none) can be reached
 * only from this host. A name other than localhost counts as reachable from elsewhere. */
static bool only_loopback(const char *addr)
{
        char host[CHP_NET_HOST_MAX];
        uint16_t port;
        if (!addr || strcmp(addr, "off") == 0)
                return true;
        return chp_net_split_hostport(addr, host, sizeof(host), &port) == 0 &&
               chp_config_is_loopback(host);
}

/* Without a tenant nothing asks a client who it is, so the relay may face only this host unless
 * the operator said --open. A listener on loopback is refused nothing new: the relay behaves as
 * before tenants existed, for the clients that can reach it. With a tenant every upload, offer
 * and pull-through needs one of its tokens (gate.h), so any address will do. */
int chp_config_check_access(const struct chp_config *c, char err[CHP_CONFIG_ERR_MAX])
{
        err[0] = '\0';
        if (c->ntenants > 0 || c->open)
                return 0;
        const char *flag = !only_loopback(c->listen) ? "--listen"
                           : !only_loopback(c->http) ? "--http"
                                                     : NULL;
        if (!flag)
                return 0;
        snprintf(err, CHP_CONFIG_ERR_MAX,
                 "%s %s is not a loopback address and no tenant is configured, so anyone who "
                 "reaches it could upload; configure a [tenant \"NAME\"] with a token_key (chapard "
                 "tenant-key makes one), or pass --open (open = true in [server]) to take uploads "
                 "without a token from any address",
                 flag, flag[2] == 'l' ? c->listen : c->http);
        return -EINVAL;
}

const char *chp_config_describe_access(const struct chp_config *c, char *buf, size_t cap)
{
        if (c->ntenants == 0)
                return c->open
                           ? "--open: uploads, offers and pull-through without a token from any "
                             "address"
                           : "no tenant configured: uploads, offers and pull-through only from "
                             "loopback clients";
        snprintf(buf, cap,
                 c->open ? "--open and %u tenant%s: uploads, offers and pull-through without a "
                           "token from any address"
                         : "%u tenant%s: uploads, offers and pull-through need a token",
                 c->ntenants, c->ntenants == 1 ? "" : "s");
        unsigned xmpp = 0;
        for (unsigned i = 0; i < c->ntenants; i++)
                xmpp += c->tenants[i].xmpp_secret_len > 0;
        size_t n = strlen(buf);
        if (xmpp && n < cap)
                snprintf(buf + n, cap - n, "; %u XMPP domain%s by signed URLs at /xmpp/", xmpp,
                         xmpp == 1 ? " uploads" : "s upload");
        return buf;
}

const struct chp_tenant_config *chp_config_find_tenant(const struct chp_config *c, const char *name,
                                                       size_t len)
{
        for (unsigned i = 0; i < c->ntenants; i++) {
                const char *n = c->tenants[i].name;
                if (strlen(n) == len && memcmp(n, name, len) == 0)
                        return &c->tenants[i];
        }
        return NULL;
}

const struct chp_tenant_key *chp_tenant_find_key(const struct chp_tenant_config *t,
                                                 const uint8_t kid[CHP_TENANT_KID_BYTES])
{
        for (unsigned i = 0; i < t->nkeys; i++)
                if (memcmp(t->keys[i].kid, kid, CHP_TENANT_KID_BYTES) == 0)
                        return &t->keys[i];
        return NULL;
}
