/* test_noise.h — what the two Noise test programs (test_noise.c, test_noise_vectors.c) share:
 * the patterns and suites common/noise.c implements, their names in a protocol name, and which
 * keys each pattern gives the initiator. Test-only; static tables, nothing to free.
 */
#ifndef CHP_TEST_NOISE_H
#define CHP_TEST_NOISE_H

#include <stdbool.h>

#include "noise.h"

static const struct chp_noise_suite all_suites[] = {
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_BLAKE2B},
    {CHP_NOISE_AESGCM, CHP_NOISE_SHA256},
    {CHP_NOISE_CHACHAPOLY, CHP_NOISE_SHA256},
};
#define NSUITES 3
static const enum chp_noise_pattern all_patterns[] = {CHP_NOISE_NK, CHP_NOISE_XX, CHP_NOISE_IK};
#define NPATTERNS 3
static const char *const pattern_names[] = {"NK", "XX", "IK"};
static const char *const suite_names[] = {"ChaChaPoly_BLAKE2b", "AESGCM_SHA256",
                                          "ChaChaPoly_SHA256"};

static inline int suite_index(struct chp_noise_suite s)
{
        for (int i = 0; i < NSUITES; i++)
                if (all_suites[i].cipher == s.cipher && all_suites[i].hash == s.hash)
                        return i;
        return -1;
}

static inline int nmsgs(enum chp_noise_pattern p)
{
        return p == CHP_NOISE_XX ? 3 : 2;
}

static inline bool init_has_s(enum chp_noise_pattern p)
{
        return p != CHP_NOISE_NK;
}

static inline bool init_has_rs(enum chp_noise_pattern p)
{
        return p != CHP_NOISE_XX;
}

#endif
