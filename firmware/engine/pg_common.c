// pocketgpt engine: status messages, type table, arena.
#include "pg_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

pg_code pg_fail(pg_status *st, pg_code code, const char *fmt, ...) {
    if (st) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
        va_end(ap);
        st->code = code;
    }
    return code;
}

void pg_status_ok(pg_status *st) {
    if (st) {
        st->code = PG_OK;
        st->msg[0] = '\0';
    }
}

typedef struct {
    uint8_t block;
    uint16_t bytes;
    const char *name;
} pg_type_info;

// (weights per block, bytes per block) as in ggml-common.h
static const pg_type_info s_types[PG_TYPE_COUNT] = {
    [PG_TYPE_F32] = {1, 4, "F32"},        [PG_TYPE_F16] = {1, 2, "F16"},
    [PG_TYPE_Q4_0] = {32, 18, "Q4_0"},    [PG_TYPE_Q4_1] = {32, 20, "Q4_1"},
    [PG_TYPE_Q5_0] = {32, 22, "Q5_0"},    [PG_TYPE_Q5_1] = {32, 24, "Q5_1"},
    [PG_TYPE_Q8_0] = {32, 34, "Q8_0"},    [PG_TYPE_Q2_K] = {0, 84, "Q2_K"},
    [PG_TYPE_Q3_K] = {0, 110, "Q3_K"},    [PG_TYPE_Q4_K] = {0, 144, "Q4_K"},
    [PG_TYPE_Q5_K] = {0, 176, "Q5_K"},    [PG_TYPE_Q6_K] = {0, 210, "Q6_K"},
    [PG_TYPE_IQ4_NL] = {32, 18, "IQ4_NL"},
};

uint32_t pg_type_block(uint32_t type) {
    if (type >= PG_TYPE_COUNT || s_types[type].bytes == 0) return 0;
    return s_types[type].block ? s_types[type].block : 256u;  // K-quants: super-blocks of 256
}

uint32_t pg_type_block_bytes(uint32_t type) {
    return type < PG_TYPE_COUNT ? s_types[type].bytes : 0;
}

const char *pg_type_name(uint32_t type) {
    return (type < PG_TYPE_COUNT && s_types[type].name) ? s_types[type].name : "unknown";
}

size_t pg_size_mul(size_t a, size_t b) {
    if (a != 0 && b > SIZE_MAX / a) return SIZE_MAX;
    return a * b;
}

void pg_arena_init(pg_arena *a, void *base, size_t size) {
    a->base = (uint8_t *)base;
    a->size = base ? size : 0;
    a->used = 0;
}

void *pg_arena_take(pg_arena *a, size_t n, size_t align) {
    size_t start = (a->used + (align - 1)) & ~(align - 1);
    if (start < a->used || n > SIZE_MAX - start) {
        a->used = SIZE_MAX;
        return NULL;
    }
    a->used = start + n;
    if (!a->base || a->used > a->size) return NULL;
    return a->base + start;
}

int pg_arena_overflow(const pg_arena *a) { return a->base == NULL || a->used > a->size; }
