/* stopped.h — for the RADOS tests that stop the OSD (SIGSTOP) to make the cluster silent. */
#ifndef CHP_TESTS_CEPH_STOPPED_H
#define CHP_TESTS_CEPH_STOPPED_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Whether pid has stopped (its state 'T' in /proc), waiting up to 5 s: kill(SIGSTOP) returns
 * before every thread of a busy process has stopped, and an operation sent meanwhile is served. */
static inline bool ceph_wait_stopped(pid_t pid)
{
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
        for (int i = 0; i < 500; i++) {
                FILE *f = fopen(path, "r");
                if (!f)
                        return false;
                bool stopped = false;
                while (fgets(line, sizeof line, f))
                        if (strncmp(line, "State:", 6) == 0)
                                stopped = strchr(line, 'T') != NULL;
                fclose(f);
                if (stopped)
                        return true;
                usleep(10000);
        }
        return false;
}

#endif
