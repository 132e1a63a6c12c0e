/* libchapar's key cache (client/keycache.c) without a relay: chapar_forget of a target that is
 * neither a ticket nor a file it can read answers CHAPAR_EIO at once (a FIFO with no writer
 * does not block it), reads nothing it did not write (the Sanitize build checks), and removes
 * nothing. */
#include "harness.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chapar.h"

static char dir[64], cache[128];

static bool made(void)
{
        if (dir[0])
                return true;
        snprintf(dir, sizeof(dir), "/tmp/chapar-keycache-XXXXXX");
        if (!mkdtemp(dir))
                return false;
        snprintf(cache, sizeof(cache), "%s/cache", dir);
        return true;
}

/* Leaves non-zero bytes in the stack the next call uses, so that a buffer it reads before
 * writing holds no terminator: ASan then sees the read run past it. */
__attribute__((noinline)) static void paint_stack(void)
{
        volatile char junk[64 * 1024];
        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = 'A';
}

/* A directory is not a file whose content has a cached key: CHAPAR_EIO, nothing removed. */
TEST(forget_a_directory)
{
        REQUIRE(made());
        unsigned n = 99;
        paint_stack();
        CHECK_EQ(chapar_forget(cache, dir, &n), CHAPAR_EIO);
        CHECK_EQ(n, 0);
}

/* A FIFO nobody writes to: refused, not waited on (SIGALRM ends the program if it blocks). */
TEST(forget_a_fifo)
{
        REQUIRE(made());
        char fifo[160];
        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        REQUIRE(mkfifo(fifo, 0600) == 0);
        unsigned n = 99;
        alarm(10);
        CHECK_EQ(chapar_forget(cache, fifo, &n), CHAPAR_EIO);
        alarm(0);
        CHECK_EQ(n, 0);
}

int main(void)
{
        int passed, failed = harness_run(&passed);
        if (dir[0]) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", dir);
        }
        return harness_report(passed, failed);
}
