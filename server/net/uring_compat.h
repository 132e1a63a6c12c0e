/* uring_compat.h — what liburing 2.3 (Debian 12) lacks, behind feature checks, and the kernel
 * probe run at start-up.
 *
 * chp_uring_setup_buf_ring allocates and registers a provided-buffer ring (liburing 2.4's
 * io_uring_setup_buf_ring, written on io_uring_register_buf_ring); free it with
 * chp_uring_free_buf_ring. chp_uring_probe checks the opcodes chapard needs and writes what is
 * missing into `missing` (a readable list); returns 0 when everything is there, -ENOSYS when not.
 * Start-up / owning loop thread only.
 */
#ifndef CHP_URING_COMPAT_H
#define CHP_URING_COMPAT_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <liburing.h>

static inline struct io_uring_buf_ring *chp_uring_setup_buf_ring(struct io_uring *ring,
                                                                 unsigned entries, int bgid,
                                                                 int *err /* out */)
{
        size_t size = entries * sizeof(struct io_uring_buf);
        void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED) {
                *err = -errno;
                return NULL;
        }
        struct io_uring_buf_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.ring_addr = (unsigned long)mem;
        reg.ring_entries = entries;
        reg.bgid = (unsigned short)bgid;
        int rc = io_uring_register_buf_ring(ring, &reg, 0);
        if (rc) {
                munmap(mem, size);
                *err = rc;
                return NULL;
        }
        struct io_uring_buf_ring *br = mem;
        io_uring_buf_ring_init(br);
        *err = 0;
        return br;
}

static inline void chp_uring_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br,
                                           unsigned entries, int bgid)
{
        if (!br)
                return;
        io_uring_unregister_buf_ring(ring, bgid);
        munmap(br, entries * sizeof(struct io_uring_buf));
}

static inline int chp_uring_probe(char *missing, size_t cap)
{
        static const struct {
                int op;
                const char *name;
        } need[] = {
                {IORING_OP_ACCEPT, "accept"}, {IORING_OP_RECV, "recv"},
                {IORING_OP_SEND, "send"},     {IORING_OP_SPLICE, "splice"},
                {IORING_OP_READ, "read"},     {IORING_OP_TIMEOUT, "timeout"},
        };
        missing[0] = '\0';
        struct io_uring_probe *p = io_uring_get_probe();
        if (!p) {
                snprintf(missing, cap, "io_uring itself (io_uring_get_probe failed)");
                return -ENOSYS;
        }
        size_t used = 0;
        for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
                if (io_uring_opcode_supported(p, need[i].op))
                        continue;
                int n = snprintf(missing + used, cap - used, "%s%s", used ? ", " : "",
                                 need[i].name);
                if (n > 0 && (size_t)n < cap - used)
                        used += (size_t)n;
        }
        io_uring_free_probe(p);
        return used ? -ENOSYS : 0;
}

#endif
