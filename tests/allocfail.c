/* allocfail.c — the allocation-failure switch of testutil.h, for the codec tests only: their
 * executables are linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, so every
 * allocation of the program's own objects (common/, the test) comes here; OpenSSL's are routed
 * here by CRYPTO_set_mem_functions before its first one. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "testutil.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static atomic_long countdown; /* allocations until the failure; 0: disarmed */
static atomic_bool failed;

void chp_alloc_fail_after(long n)
{
        atomic_store(&failed, false);
        atomic_store(&countdown, n > 0 ? n : 0);
}

bool chp_alloc_failed(void)
{
        return atomic_load(&failed);
}

static bool fail_now(void)
{
        long c = atomic_load(&countdown);
        while (c > 0 && !atomic_compare_exchange_weak(&countdown, &c, c - 1))
                ;
        if (c != 1)
                return false;
        atomic_store(&failed, true);
        errno = ENOMEM;
        return true;
}

void *__wrap_malloc(size_t n)
{
        return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
        return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
        return fail_now() ? NULL : __real_realloc(p, n);
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
        (void)file, (void)line;
        return __wrap_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
        (void)file, (void)line;
        return __wrap_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
        (void)file, (void)line;
        free(p);
}

__attribute__((constructor(101))) static void route_openssl(void)
{
        CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
}

int tu_alloc_sweep(const char *what, int (*fn)(void *arg), void *arg, int want_err)
{
        for (long n = 1;; n++) {
                chp_alloc_fail_after(n);
                int rc = fn(arg);
                bool hit = chp_alloc_failed();
                chp_alloc_fail_after(0);
                if (!hit) {
                        if (rc != 0) {
                                fprintf(stderr, "  %s: returned %d with no allocation failing\n",
                                        what, rc);
                                return -1;
                        }
                        return (int)(n - 1);
                }
                if (rc != 0 && (want_err ? rc != want_err : rc > 0)) {
                        fprintf(stderr, "  %s: allocation %ld failed, returned %d (want %d)\n",
                                what, n, rc, want_err);
                        return -1;
                }
        }
}
