// pocketgpt bare-metal harness: formatted output into a buffer only (rt.c)
#ifndef PG_RT_STDIO_H
#define PG_RT_STDIO_H
#include <stdarg.h>
#include <stddef.h>
int vsnprintf(char *restrict buf, size_t cap, const char *restrict fmt, va_list ap);
int snprintf(char *restrict buf, size_t cap, const char *restrict fmt, ...);
#endif
