// pocketgpt bare-metal harness: the string functions the engine uses (rt.c)
#ifndef PG_RT_STRING_H
#define PG_RT_STRING_H
#include <stddef.h>
void *memcpy(void *restrict d, const void *restrict s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
void *memchr(const void *s, int c, size_t n);
size_t strlen(const char *s);
#endif
