/* testutil.h — helpers the C tests share (tests/testutil.c, tests/allocfail.c); test-only.
 *
 * Bytes: a seeded pattern, exact-size copies, little-endian stores, hex comparison. Sockets: a
 * blocking dial of HOST:PORT, send-all, a plaintext native connection (preamble, optionally
 * HELLO), and waiting for the relay to close one. Allocation failure (allocfail.c, codec tests
 * only): the Nth allocation from now fails once; tu_alloc_sweep runs a case with N = 1, 2, ...
 * until it completes, each failing run having to return an error.
 */
#ifndef CHP_TESTUTIL_H
#define CHP_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* n bytes of a pattern that differs per seed (n may be 0); caller frees with free(). */
uint8_t *tu_pattern(size_t n, unsigned seed);
/* An exact-size copy of len bytes (len may be 0), so ASan sees any read past it. */
uint8_t *tu_exact_copy(const uint8_t *src, size_t len);
void tu_put32(uint8_t *p, uint32_t v);
void tu_put64(uint8_t *p, uint64_t v);
/* Whether p[0..n) is the lowercase hex want; prints both when not. */
bool tu_same_hex(const uint8_t *p, size_t n, const char *want);

/* A blocking TCP connection to HOST:PORT, or -1. */
int tu_dial(const char *hostport);
bool tu_send_all(int fd, const void *p, size_t n);
/* A connection that sent the plaintext native preamble; with hello, a HELLO too (its reply not
 * read). -1 on failure. */
int tu_native(const char *hostport, bool hello);
/* Reads (and drops) until the peer closes fd: the seconds it took, or -1 past limit_s. The
 * first bytes read, if first is given, land there (*nfirst of them). */
double tu_seconds_until_closed(int fd, int limit_s, uint8_t *first, size_t cap, size_t *nfirst);

/* The nth allocation from now (malloc, calloc, realloc of the program's own code, and
 * OpenSSL's) fails, once; 0 disarms. */
void chp_alloc_fail_after(long n);
/* Whether the armed failure has happened since the last chp_alloc_fail_after. */
bool chp_alloc_failed(void);
/* Runs fn(arg) with allocation N failing, N = 1, 2, ..., until a run sees no failure; that run
 * must return 0. fn returns 0 when all it checked was right, a negative code when the code
 * under test failed, a positive number when a result was wrong. A run that saw its failure
 * must return want_err (with want_err 0: any negative code), or 0 if the code recovered. The
 * number of failure points, or -1 (printed) when a run returned anything else. */
int tu_alloc_sweep(const char *what, int (*fn)(void *arg), void *arg, int want_err);

#endif
