/* main.c — the chapard command: subcommands and their exit codes.
 *
 *   chapard verify --data DIR   scrub the store; exit 0 when clean, 1 listing each problem,
 *                               2 when the store cannot be opened
 *
 * The relay itself (chapard with no subcommand) arrives with the event loop.
 */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "store.h"

static int usage(void)
{
        fprintf(stderr, "usage: chapard verify --data DIR\n");
        return 1;
}

static void print_problem(void *ctx, const char *problem)
{
        (void)ctx;
        printf("problem: %s\n", problem);
}

static int cmd_verify(int argc, char **argv)
{
        const char *dir = "./data";
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
                        dir = argv[++i];
                else
                        return usage();
        }
        struct chp_store_opts o;
        chp_store_opts_default(&o);
        o.dir = dir;
        struct chp_store *s;
        int rc = chp_store_open(&o, &s);
        if (rc) {
                fprintf(stderr, "chapard verify: cannot open %s: %s\n", dir, chp_strerror(rc));
                return 2;
        }
        struct chp_verify_stats st;
        rc = chp_store_verify(s, print_problem, NULL, &st);
        chp_store_close(s);
        if (rc) {
                fprintf(stderr, "chapard verify: %s\n", chp_strerror(rc));
                return 2;
        }
        printf("%llu chunks (%llu bytes, %llu unreferenced), %llu files, %llu uploads, "
               "%llu segments: %llu problems\n",
               (unsigned long long)st.chunks, (unsigned long long)st.bytes,
               (unsigned long long)st.unreferenced, (unsigned long long)st.files,
               (unsigned long long)st.uploads, (unsigned long long)st.segments,
               (unsigned long long)st.problems);
        return st.problems ? 1 : 0;
}

int main(int argc, char **argv)
{
        chp_log_set_level(CHP_LOG_WARN);
        if (argc >= 2 && strcmp(argv[1], "verify") == 0)
                return cmd_verify(argc - 2, argv + 2);
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
                return usage(), 0;
        fprintf(stderr,
                "chapard: the relay is not built yet; available: chapard verify --data DIR\n");
        return 1;
}
