/* congestion.c — the relay's TCP congestion control (see congestion.h). The kernel's own lists
 * are read from /proc for the warning, so that it names what this machine has and allows. */
#include "congestion.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define PROC_CC  "/proc/sys/net/ipv4/"
#define LIST_MAX 512 /* a list of algorithms as /proc gives it */

/* The first line of a /proc file into buf (cap bytes), without its newline; "" when unreadable. */
static void read_proc(const char *name, char *buf, size_t cap)
{
        char path[96];
        snprintf(path, sizeof(path), PROC_CC "%s", name);
        buf[0] = '\0';
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        ssize_t n = read(fd, buf, cap - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
}

/* One warning for a refused setting: why, how to allow it, what runs instead. */
static void warn_refused(const char *wanted, int rc, const char *fallback)
{
        char list[LIST_MAX];
        if (rc == -EPERM) {
                read_proc("tcp_allowed_congestion_control", list, sizeof(list));
                chp_log_warn("relay",
                             "congestion_control = %s: not allowed to a process without "
                             "CAP_NET_ADMIN; net.ipv4.tcp_allowed_congestion_control is (%s). "
                             "To allow it, add it there (sysctl -w "
                             "net.ipv4.tcp_allowed_congestion_control='%s %s', kept in a file "
                             "under /etc/sysctl.d; the chapar package ships one for bbr) or give "
                             "chapard CAP_NET_ADMIN (AmbientCapabilities= in its unit). Going on "
                             "with the system's default, %s",
                             wanted, list, list, wanted, fallback);
        } else if (rc == -ENOENT) {
                read_proc("tcp_available_congestion_control", list, sizeof(list));
                chp_log_warn("relay",
                             "congestion_control = %s: this kernel has no TCP congestion control "
                             "of that name (available: %s; a module is loaded with modprobe "
                             "tcp_%s, at boot from a file under /etc/modules-load.d). Going on "
                             "with the system's default, %s",
                             wanted, list, wanted, fallback);
        } else {
                chp_log_warn("relay",
                             "congestion_control = %s: refused by the kernel (%s). Going on with "
                             "the system's default, %s",
                             wanted, chp_strerror(rc), fallback);
        }
}

void chp_congestion_choose(const char *wanted, struct chp_congestion *out)
{
        *out = (struct chp_congestion){0};
        snprintf(out->wanted, sizeof(out->wanted), "%s", wanted ? wanted : CHP_CONGESTION_SYSTEM);
        char def[CHP_NET_CC_MAX];
        read_proc("tcp_congestion_control", def, sizeof(def));
        if (strcmp(out->wanted, CHP_CONGESTION_SYSTEM) == 0) {
                snprintf(out->running, sizeof(out->running), "%s", def);
                return;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                /* no probe: each socket tries it (a refusal there leaves its default) */
                out->set = true;
                snprintf(out->running, sizeof(out->running), "%s", out->wanted);
                return;
        }
        int rc = chp_net_set_congestion(fd, out->wanted);
        if (rc == 0) {
                out->set = true;
                if (chp_net_congestion(fd, out->running, sizeof(out->running)) != 0)
                        snprintf(out->running, sizeof(out->running), "%s", out->wanted);
        } else {
                /* the probe kept what a new socket gets: the default, /proc's when unreadable */
                if (!def[0] && chp_net_congestion(fd, def, sizeof(def)) != 0)
                        def[0] = '\0';
                snprintf(out->running, sizeof(out->running), "%s", def);
                warn_refused(out->wanted, rc, def[0] ? def : "unknown");
        }
        close(fd);
}

void chp_congestion_apply(const struct chp_congestion *cc, int fd)
{
        if (!cc || !cc->set)
                return;
        int rc = chp_net_set_congestion(fd, cc->running);
        if (rc)
                chp_log_warn("relay", "cannot set TCP congestion control %s on a socket: %s",
                             cc->running, chp_strerror(rc));
}

const char *chp_congestion_name(const struct chp_congestion *cc)
{
        return cc && cc->set ? cc->running : NULL;
}
