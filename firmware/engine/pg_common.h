// pocketgpt engine: shared definitions (status codes, tensor types, memory arena, parallel-for).
//
// The engine is portable C11: no OS, allocator or chip headers. The caller owns every byte of
// memory (size queries say how much), nothing is allocated after init, and every fallible call
// returns a pg_code and fills a pg_status with a message a person can act on. 32-bit clean;
// little-endian is assumed and checked at init.
#ifndef PG_COMMON_H
#define PG_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
#error "pocketgpt engine: GGUF tensors are little-endian; big-endian targets are not supported"
#endif

typedef enum {
    PG_OK = 0,
    PG_ERR_FORMAT,       // the model blob is malformed (bad magic, offsets, sizes, shapes)
    PG_ERR_UNSUPPORTED,  // well-formed but uses something this build cannot run
    PG_ERR_MEMORY,       // the caller's buffer is too small
    PG_ERR_ARG,          // a bad argument (token id out of range, context full, ...)
} pg_code;

typedef struct {
    pg_code code;
    char msg[224];
} pg_status;

// Fill `st` (may be NULL) with code and a printf-style message; returns code.
pg_code pg_fail(pg_status *st, pg_code code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void pg_status_ok(pg_status *st);

// ggml tensor type ids (gguf GGMLQuantizationType values); the byte layouts are ggml's.
enum {
    PG_TYPE_F32 = 0, PG_TYPE_F16 = 1, PG_TYPE_Q4_0 = 2, PG_TYPE_Q4_1 = 3,
    PG_TYPE_Q5_0 = 6, PG_TYPE_Q5_1 = 7, PG_TYPE_Q8_0 = 8,
    PG_TYPE_Q2_K = 10, PG_TYPE_Q3_K = 11, PG_TYPE_Q4_K = 12, PG_TYPE_Q5_K = 13, PG_TYPE_Q6_K = 14,
    PG_TYPE_IQ4_NL = 20,
    PG_TYPE_COUNT = 21,
};

// Weights per block and bytes per block of a type; 0 when this build does not know the type.
uint32_t pg_type_block(uint32_t type);
uint32_t pg_type_block_bytes(uint32_t type);
const char *pg_type_name(uint32_t type);

// Bump allocator over caller memory. With base == NULL it only counts (used for size queries).
typedef struct {
    uint8_t *base;
    size_t size;
    size_t used;
} pg_arena;

// a * b, or SIZE_MAX when it does not fit (then pg_arena_take fails cleanly on 32-bit targets)
size_t pg_size_mul(size_t a, size_t b);

void pg_arena_init(pg_arena *a, void *base, size_t size);
// `n` bytes aligned to `align` (a power of two); NULL when counting or when memory runs out
// (check pg_arena_overflow afterwards).
void *pg_arena_take(pg_arena *a, size_t n, size_t align);
int pg_arena_overflow(const pg_arena *a);

// The caller's parallel-for: run fn(arg, i, n) for i in [0, n) and return when all are done.
// The host binding gives a persistent pthread pool, the ESP32 port FreeRTOS tasks; NULL = serial.
typedef void (*pg_task_fn)(void *arg, int task, int n_tasks);
typedef struct {
    void (*run)(void *pool, pg_task_fn fn, void *arg, int n_tasks);
    void *pool;
    int n_threads;  // how many tasks to split work into (>= 1)
} pg_parallel;

// IEEE half -> float, portable (inline: every quantized kernel calls it per block).
static inline float pg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FFu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union {
        uint32_t u;
        float f;
    } v = {bits};
    return v.f;
}

// float -> IEEE half, round to nearest even (overflow to infinity), portable.
static inline uint16_t pg_f32_to_f16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    uint32_t x = v.u, sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));  // inf, nan
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // rounds past 65504: infinity
    if (ax < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (ax < 0x33000000u) return (uint16_t)sign;  // under half the smallest subnormal
        uint32_t man = (ax & 0x7FFFFFu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23);  // 14..24
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((ax >> 13) - (112u << 10));  // rebias the exponent (127 - 15 = 112)
    uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

#endif
