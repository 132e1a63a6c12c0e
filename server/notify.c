#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int chp_notify(const char *state)
{
        const char *name = getenv("NOTIFY_SOCKET");
        if (!name || !name[0])
                return 0;
        if (name[0] != '/' && name[0] != '@')
                return -EAFNOSUPPORT;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len = strlen(name);
        if (len > sizeof(sa.sun_path) || (name[0] == '/' && len == sizeof(sa.sun_path)))
                return -EINVAL;
        memcpy(sa.sun_path, name, len);
        if (name[0] == '@')
                sa.sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL */
        socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        int rc = 0;
        if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
                rc = -errno;
        close(fd);
        return rc;
}
