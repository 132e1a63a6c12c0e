/* harness.h — the tiny test harness: each tests/test_<module>.c is its own program.
 *
 * TEST(name) { ... } defines a test; CHECK(cond) records a failure and goes on; REQUIRE(cond)
 * records it and ends the test; CHECK_EQ/CHECK_OK compare integers with both values printed.
 * main() is written by HARNESS_MAIN(), which runs every test in order and exits 0 when all passed,
 * 1 otherwise, after printing "N passed, N failed"; a test program with its own main() calls
 * harness_run and harness_report around its own set-up and clean-up. Exit 77 (skip) only for a missing kernel
 * feature, through HARNESS_SKIP(reason).
 */
#ifndef CHP_HARNESS_H
#define CHP_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct harness_test {
        const char *name;
        void (*fn)(void);
};

#define HARNESS_MAX_TESTS 256
static struct harness_test harness_tests[HARNESS_MAX_TESTS];
static int harness_ntests;
static int harness_failed_now;

#define TEST(name)                                                                                 \
        static void test_##name(void);                                                             \
        __attribute__((constructor)) static void register_##name(void)                             \
        {                                                                                          \
                if (harness_ntests < HARNESS_MAX_TESTS)                                            \
                        harness_tests[harness_ntests++] = (struct harness_test){#name, test_##name}; \
        }                                                                                          \
        static void test_##name(void)

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
                        harness_failed_now = 1;                                                    \
                }                                                                                  \
        } while (0)

#define REQUIRE(cond)                                                                              \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__,       \
                                #cond);                                                            \
                        harness_failed_now = 1;                                                    \
                        return;                                                                    \
                }                                                                                  \
        } while (0)

#define CHECK_EQ(a, b)                                                                             \
        do {                                                                                       \
                long long va_ = (long long)(a), vb_ = (long long)(b);                              \
                if (va_ != vb_) {                                                                  \
                        fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n",        \
                                __FILE__, __LINE__, #a, #b, va_, vb_);                             \
                        harness_failed_now = 1;                                                    \
                }                                                                                  \
        } while (0)

/* For functions returning 0 or a negative code. */
#define CHECK_OK(expr) CHECK_EQ((expr), 0)
#define REQUIRE_OK(expr)                                                                           \
        do {                                                                                       \
                long long v_ = (long long)(expr);                                                  \
                if (v_ != 0) {                                                                     \
                        fprintf(stderr, "  %s:%d: %s returned %lld\n", __FILE__, __LINE__, #expr,  \
                                v_);                                                               \
                        harness_failed_now = 1;                                                    \
                        return;                                                                    \
                }                                                                                  \
        } while (0)

#define HARNESS_SKIP(reason)                                                                       \
        do {                                                                                       \
                printf("skipped: %s\n", reason);                                                   \
                exit(77);                                                                          \
        } while (0)

/* Runs every test in order; prints a line per test. Returns the number that failed. */
static int harness_run(int *passed)
{
        int failed = 0;
        *passed = 0;
        for (int i = 0; i < harness_ntests; i++) {
                harness_failed_now = 0;
                harness_tests[i].fn();
                printf("%s %s\n", harness_failed_now ? "FAIL" : "ok  ", harness_tests[i].name);
                fflush(stdout);
                failed += harness_failed_now;
                *passed += !harness_failed_now;
        }
        return failed;
}

/* Prints the closing line ctest readers look for; the exit status. */
static int harness_report(int passed, int failed)
{
        printf("%d passed, %d failed\n", passed, failed);
        return failed || !harness_ntests ? 1 : 0;
}

#define HARNESS_MAIN()                                                                             \
        int main(void)                                                                             \
        {                                                                                          \
                int passed, failed = harness_run(&passed);                                         \
                return harness_report(passed, failed);                                             \
        }

#endif
