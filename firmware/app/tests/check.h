// What the app's C test programs (test_app.c, test_audio.c) count: CHECK(cond) counts a check and,
// when cond is false, a failure with its place on stderr; main prints both and fails on any failure.
#ifndef PG_APP_TESTS_CHECK_H
#define PG_APP_TESTS_CHECK_H

#include <stdio.h>

static int failures = 0, checks = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#endif
