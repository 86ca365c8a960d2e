// pocketgpt bare-metal harness: the float functions the engine uses (rt.c)
#ifndef PG_RT_MATH_H
#define PG_RT_MATH_H
#define INFINITY (__builtin_inff())
#define NAN (__builtin_nanf(""))
#define HUGE_VALF (__builtin_huge_valf())
#define isnan(x) __builtin_isnan(x)
#define isinf(x) __builtin_isinf(x)
#define isfinite(x) __builtin_isfinite(x)
#define signbit(x) __builtin_signbit(x)
float sqrtf(float x);
float expf(float x);
float expm1f(float x);
float tanhf(float x);
float fabsf(float x);
#endif
