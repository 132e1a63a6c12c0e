/* notify.h — tells the service manager how the relay is doing: systemd's notification protocol
 * (sd_notify(3)) without libsystemd.
 *
 * chp_notify sends one datagram of "KEY=VALUE" lines ("READY=1", "STOPPING=1", "STATUS=...") to
 * the AF_UNIX socket named by $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace.
 * Without that variable (not started by systemd with Type=notify) it does nothing. Returns 0
 * when sent or not asked for, -EAFNOSUPPORT for an address it does not speak (vsock), -EINVAL
 * for one too long, or the negative errno of socket/sendto. Any thread; keeps no state.
 */
#ifndef CHP_NOTIFY_H
#define CHP_NOTIFY_H

__attribute__((warn_unused_result)) int chp_notify(const char *state);

#endif
