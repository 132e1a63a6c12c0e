/* net.h — the small network vocabulary both sides share: HOST:PORT parsing, listening sockets and
 * the monotonic clock. chp_net_split_hostport is the one parser of "HOST:PORT" / "[IPv6]:PORT"
 * (the ticket grammar in ticket.c is a different one and keeps its own); it allocates nothing
 * and writes only into the caller's buffer. chp_net_listen returns a socket the caller closes.
 * Any thread may call anything here. Errors are 0 or a negative errno, never the global errno.
 */
#ifndef CHP_NET_H
#define CHP_NET_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes a host buffer needs for any host chp_net_split_hostport accepts, its NUL included: a DNS
 * name (253) or an IPv6 literal without its brackets, with room to spare. */
#define CHP_NET_HOST_MAX 256

/* Splits s into host and port. Accepted: NAME:PORT and IPv4:PORT (host of letters, digits, '-'
 * and '.'), and [IPv6]:PORT (an address inet_pton takes; host gets it without brackets). PORT is
 * 1 to 5 decimal digits, 0..65535, and ends s. The host must be non-empty and fit in hostcap
 * bytes with its NUL (and below CHP_NET_HOST_MAX). -EINVAL for anything else: a NULL s, no
 * port, an empty host, an unbracketed IPv6, unbalanced brackets, a port with a sign, spaces,
 * letters or more than 65535. On error host is "" (when hostcap > 0) and *port 0. */
__attribute__((warn_unused_result)) int chp_net_split_hostport(const char *s, char *host /* out */,
                                                               size_t hostcap,
                                                               uint16_t *port /* out */);

/* Opens a TCP listening socket on host:port (port 0 = any); *bound_port gets the port it bound,
 * *fd the socket (the caller closes it; -1 on error). A face's sockets (one per loop) share the
 * address through SO_REUSEPORT, which Linux lets any process of the same user join; so the
 * face's first socket (first true) is made to listen without it and fails with -EADDRINUSE when
 * anyone else listens there, and the others (first false, same port) join it. Then no other
 * chapard can share the address. -EADDRNOTAVAIL when host does not resolve. */
__attribute__((warn_unused_result)) int chp_net_listen(const char *host, uint16_t port, bool first,
                                                       int *fd /* out */,
                                                       uint16_t *bound_port /* out */);

/* TCP congestion control. CHP_NET_CC_MAX bytes hold any name the kernel uses, NUL included. */
#define CHP_NET_CC_MAX 16

/* Asks the kernel to run congestion control name ("bbr", "cubic", ...) on TCP socket fd
 * (TCP_CONGESTION). 0, or -ENOENT when the kernel has no such algorithm (nor a module it may
 * load), -EPERM when this process lacks CAP_NET_ADMIN and name is not in
 * net.ipv4.tcp_allowed_congestion_control, -EINVAL for a name that is empty or too long. On
 * error the socket keeps what it had. */
__attribute__((warn_unused_result)) int chp_net_set_congestion(int fd, const char *name);
/* The congestion control fd runs into out (cap >= CHP_NET_CC_MAX): 0 or -errno. */
int chp_net_congestion(int fd, char *out, size_t cap);

struct iovec;

/* After a writev/sendmsg that wrote w bytes of the n buffers at *iov: steps *iov and *n past the
 * buffers written whole and trims the first one left, so the call can be repeated on the rest. */
void chp_net_iov_advance(struct iovec **iov, int *n, size_t w);

/* Initialises *cv so that its timed waits (pthread_cond_timedwait) take deadlines on the
 * monotonic clock below, not the wall clock a settimeofday can move. (Should the attribute be
 * refused, which glibc never does, *cv is initialised with the default clock.) */
void chp_net_cond_init(pthread_cond_t *cv);

/* The monotonic clock (CLOCK_MONOTONIC), in milliseconds, microseconds or seconds. */
uint64_t chp_net_now_ms(void);
uint64_t chp_net_now_us(void);
double chp_net_now_s(void);

#endif
