#include "relay_client.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- a relay under test ------------------------------------------------------------------ */

int rc_relay_start(struct rc_relay *r, bool reuse, const char *const *extra)
{
        const char *bin = getenv("CHAPARD");
        if (!bin)
                return -ENOENT;
        snprintf(r->chapard, sizeof(r->chapard), "%s", bin);
        if (!reuse) {
                snprintf(r->dir, sizeof(r->dir), "/tmp/chapar-relay-XXXXXX");
                if (!mkdtemp(r->dir))
                        return -errno;
        }
        char data[300], ready[300];
        snprintf(data, sizeof(data), "%s/data", r->dir);
        snprintf(ready, sizeof(ready), "%s/ready", r->dir);
        unlink(ready);
        const char *argv[32] = {r->chapard,    "--data",       data,
                                "--listen",    "127.0.0.1:0",  "--http",
                                "127.0.0.1:0", "--ready-file", ready,
                                "--log-level", "warn",         "--insecure-plaintext"};
        int argc = r->encrypted_only ? 11 : 12;
        for (int i = 0; extra && extra[i] && argc < 31; i++)
                argv[argc++] = extra[i];
        argv[argc] = NULL;
        r->pid = fork();
        if (r->pid < 0)
                return -errno;
        if (r->pid == 0) {
                execv(r->chapard, (char *const *)argv);
                _exit(127);
        }
        /* wait for the ready file (10 s at most) */
        for (int i = 0; i < 1000; i++) {
                FILE *f = fopen(ready, "r");
                if (f) {
                        char line[120];
                        bool ok = false;
                        while (fgets(line, sizeof(line), f)) {
                                line[strcspn(line, "\n")] = '\0';
                                if (strncmp(line, "native=", 7) == 0) {
                                        snprintf(r->addr, sizeof(r->addr), "%s", line + 7);
                                        ok = true;
                                } else if (strncmp(line, "pubkey=", 7) == 0) {
                                        snprintf(r->pubkey, sizeof(r->pubkey), "%.64s", line + 7);
                                }
                        }
                        fclose(f);
                        if (ok)
                                return 0;
                }
                int status;
                if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
                        r->pid = 0;
                        return -ECHILD;
                }
                struct timespec ts = {0, 10 * 1000000L};
                nanosleep(&ts, NULL);
        }
        rc_relay_stop(r, SIGKILL);
        return -ETIMEDOUT;
}

int rc_relay_stop(struct rc_relay *r, int sig)
{
        if (r->pid <= 0)
                return -1;
        kill(r->pid, sig);
        int status = 0;
        /* a graceful stop must finish within 15 s */
        for (int i = 0; i < 1500; i++) {
                if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
                        r->pid = 0;
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                }
                struct timespec ts = {0, 10 * 1000000L};
                nanosleep(&ts, NULL);
        }
        kill(r->pid, SIGKILL);
        waitpid(r->pid, &status, 0);
        r->pid = 0;
        return -1;
}

void rc_relay_cleanup(struct rc_relay *r)
{
        if (r->pid > 0)
                rc_relay_stop(r, SIGKILL);
        if (r->dir[0]) {
                char cmd[400];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", r->dir);
                r->dir[0] = '\0';
        }
}
