/* fuzz.h — what every fuzz target shares: EXPECT, the target's own check. A failed check names
 * its file, line and condition on stderr and aborts, which libFuzzer (and the replay driver,
 * tests/fuzz/replay.c) report as a crash with the input that caused it. */
#ifndef CHP_FUZZ_H
#define CHP_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define EXPECT(cond)                                                                               \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: EXPECT(%s) failed\n", __FILE__, __LINE__, #cond);  \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

#endif
