// What the engine's C test program shares between its files (test_engine.c, test_textout.c): the
// failure count and CHECK, and the tests main calls from the other file.
#ifndef PG_ENGINE_TEST_H
#define PG_ENGINE_TEST_H

#include <stdio.h>

#include "gpt2.h"

extern int test_failures;
#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            test_failures++;                                                     \
        }                                                                     \
    } while (0)

// test_textout.c
void test_textout(void);
void test_textout_words(void);
void test_reply_guard(const pg_model *m);
void test_guard_masks(const pg_model *m);
void test_topic(const pg_model *m);

#endif
