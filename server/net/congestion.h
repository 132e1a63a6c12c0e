/* congestion.h — the relay's TCP congestion control (the congestion_control setting). Chosen once
 * at start by chp_congestion_choose, which tries the algorithm on a probe socket: a refusal is
 * one warning in the log (why, and how to allow it) and the relay goes on with the system's
 * default; it never stops the start. Then chp_congestion_apply sets it on each listening socket
 * (the sockets Linux accepts from a listener inherit its algorithm) and again on each accepted
 * one (a route's congctl, `ip route ... congctl NAME`, would otherwise take precedence over the
 * inherited one), and outgoing sockets ask for chp_congestion_name (federation). A struct
 * chp_congestion is filled by the main thread before the loops and peers run and read-only after:
 * then any thread may read it. Nothing here fails.
 */
#ifndef CHP_CONGESTION_H
#define CHP_CONGESTION_H

#include <stdbool.h>

#include "net.h"

/* The setting's value that leaves every socket at the kernel's default (tcp_congestion_control). */
#define CHP_CONGESTION_SYSTEM "system"

struct chp_congestion {
        char wanted[CHP_NET_CC_MAX];  /* the setting: CHP_CONGESTION_SYSTEM or an algorithm */
        char running[CHP_NET_CC_MAX]; /* what the relay's sockets run; "" when unknown */
        bool set; /* true: running is set on each socket; false: they keep the system's default */
};

/* Fills *out for the setting wanted (CHP_CONGESTION_SYSTEM, or an algorithm's name the config
 * has checked): tries it on a probe socket and logs one warning when the kernel refuses it
 * (-EPERM: not in net.ipv4.tcp_allowed_congestion_control for a process without CAP_NET_ADMIN;
 * -ENOENT: no such algorithm or module), naming the fixes and the default the relay runs then. */
void chp_congestion_choose(const char *wanted, struct chp_congestion *out /* out */);

/* Sets cc's algorithm on TCP socket fd when cc->set; else leaves fd as it is. */
void chp_congestion_apply(const struct chp_congestion *cc, int fd);

/* The algorithm an outgoing socket asks for: cc->running when cc->set, else NULL (the system's
 * default). cc may be NULL (NULL then). Borrowed from cc. */
const char *chp_congestion_name(const struct chp_congestion *cc);

#endif
