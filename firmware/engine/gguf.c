// pocketgpt engine: GGUF reader. Every read goes through a cursor that checks the remaining
// length first, so a malformed blob produces PG_ERR_FORMAT, never a read outside it.
#include "gguf.h"

#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t off;
    int bad;
} pg_cursor;

static int cur_need(pg_cursor *c, uint64_t n) {
    if (c->bad || n > (uint64_t)(c->size - c->off)) {
        c->bad = 1;
        return 0;
    }
    return 1;
}

static uint32_t cur_u32(pg_cursor *c) {
    uint32_t v = 0;
    if (cur_need(c, 4)) {
        memcpy(&v, c->p + c->off, 4);
        c->off += 4;
    }
    return v;
}

static uint64_t cur_u64(pg_cursor *c) {
    uint64_t v = 0;
    if (cur_need(c, 8)) {
        memcpy(&v, c->p + c->off, 8);
        c->off += 8;
    }
    return v;
}

static void cur_skip(pg_cursor *c, uint64_t n) {
    if (cur_need(c, n)) c->off += (size_t)n;
}

// Byte size of one scalar value type; 0 for string/array/unknown.
static uint32_t scalar_size(uint32_t t) {
    switch (t) {
    case PG_GGUF_UINT8: case PG_GGUF_INT8: case PG_GGUF_BOOL: return 1;
    case PG_GGUF_UINT16: case PG_GGUF_INT16: return 2;
    case PG_GGUF_UINT32: case PG_GGUF_INT32: case PG_GGUF_FLOAT32: return 4;
    case PG_GGUF_UINT64: case PG_GGUF_INT64: case PG_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

// Skip one value of type t; arrays of arrays are refused (no writer we read produces them).
static void cur_skip_value(pg_cursor *c, uint32_t t, int in_array) {
    uint32_t sz = scalar_size(t);
    if (sz) {
        cur_skip(c, sz);
    } else if (t == PG_GGUF_STRING) {
        uint64_t len = cur_u64(c);
        cur_skip(c, len);
    } else if (t == PG_GGUF_ARRAY && !in_array) {
        uint32_t et = cur_u32(c);
        uint64_t n = cur_u64(c);
        uint32_t esz = scalar_size(et);
        if (c->bad) return;
        if (esz) {
            if (n > (uint64_t)(c->size - c->off) / esz) {
                c->bad = 1;
                return;
            }
            c->off += (size_t)(n * esz);
        } else if (et == PG_GGUF_STRING) {
            // each string needs at least its 8-byte length: bounds the loop by the blob size
            if (n > (uint64_t)(c->size - c->off) / 8) {
                c->bad = 1;
                return;
            }
            for (uint64_t i = 0; i < n && !c->bad; i++) cur_skip_value(c, PG_GGUF_STRING, 1);
        } else {
            c->bad = 1;
        }
    } else {
        c->bad = 1;
    }
}

static int key_equals(const uint8_t *k, uint64_t klen, const char *key) {
    size_t n = strlen(key);
    return klen == n && memcmp(k, key, n) == 0;
}


// Read one tensor info at the cursor (inside the validated table); returns its data offset
// relative to the data section. n_bytes/data are filled by the caller once validated.
static uint64_t read_tensor_info(const pg_gguf *g, pg_cursor *w, pg_gguf_tensor *t) {
    memset(t, 0, sizeof *t);
    uint64_t nlen = cur_u64(w);
    t->name = (const char *)(w->p + w->off);
    t->name_len = (uint32_t)nlen;
    cur_skip(w, nlen);
    t->n_dims = cur_u32(w);
    for (uint32_t d = 0; d < t->n_dims && d < PG_GGUF_MAX_DIMS; d++) t->ne[d] = cur_u64(w);
    for (uint32_t d = t->n_dims; d < PG_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    t->type = cur_u32(w);
    (void)g;
    return cur_u64(w);
}

pg_code pg_gguf_open(pg_gguf *g, const void *blob, size_t size, pg_status *st) {
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1)
        return pg_fail(st, PG_ERR_UNSUPPORTED, "this CPU is big-endian; GGUF tensors are little-endian");
    memset(g, 0, sizeof *g);
    if (!blob || size < 24)
        return pg_fail(st, PG_ERR_FORMAT, "model blob is %zu bytes, too short for a GGUF header", size);
    pg_cursor c = {(const uint8_t *)blob, size, 0, 0};
    if (memcmp(c.p, "GGUF", 4) != 0)
        return pg_fail(st, PG_ERR_FORMAT, "not a GGUF file (bad magic); convert it with 'pocketgpt convert'");
    c.off = 4;
    g->version = cur_u32(&c);
    if (g->version != 2 && g->version != 3)
        return pg_fail(st, PG_ERR_UNSUPPORTED, "GGUF version %u, this engine reads 2 and 3; re-export the model",
                       (unsigned)g->version);
    g->n_tensors = cur_u64(&c);
    g->n_kv = cur_u64(&c);
    g->data = c.p;
    g->size = size;
    g->alignment = 32;
    // every kv takes >= 8+4 bytes, every tensor info >= 8+4+4+8: bounds the loops
    if (g->n_kv > size / 12 || g->n_tensors > size / 24)
        return pg_fail(st, PG_ERR_FORMAT, "GGUF header claims %llu keys and %llu tensors, more than the %zu-byte file can hold",
                       (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, size);
    g->kv_off = c.off;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        uint64_t klen = cur_u64(&c);
        if (!cur_need(&c, klen)) break;
        const uint8_t *k = c.p + c.off;
        c.off += (size_t)klen;
        uint32_t t = cur_u32(&c);
        size_t voff = c.off;
        cur_skip_value(&c, t, 0);
        if (c.bad)
            return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata entry %llu is damaged or runs past the end of the file",
                           (unsigned long long)i);
        if (key_equals(k, klen, "general.alignment")) {
            uint32_t a = 0;
            if (t != PG_GGUF_UINT32 || (memcpy(&a, c.p + voff, 4), a == 0) || (a & (a - 1)) != 0 || a > 65536)
                return pg_fail(st, PG_ERR_FORMAT, "general.alignment must be a power-of-two uint32 (got type %u value %u)",
                               (unsigned)t, (unsigned)a);
            g->alignment = a;
        }
    }
    if (c.bad) return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata runs past the end of the file (truncated?)");
    g->tinfo_off = c.off;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        uint64_t nlen = cur_u64(&c);
        cur_skip(&c, nlen);
        uint32_t nd = cur_u32(&c);
        if (c.bad) break;
        if (nd < 1 || nd > PG_GGUF_MAX_DIMS)
            return pg_fail(st, PG_ERR_FORMAT, "tensor %llu has %u dimensions (1..4 allowed)", (unsigned long long)i, (unsigned)nd);
        for (uint32_t d = 0; d < nd; d++) cur_u64(&c);
        cur_u32(&c);
        cur_u64(&c);
    }
    if (c.bad) return pg_fail(st, PG_ERR_FORMAT, "GGUF tensor table runs past the end of the file (truncated?)");
    uint64_t data_off = ((uint64_t)c.off + g->alignment - 1) / g->alignment * g->alignment;
    if (data_off > size)
        return pg_fail(st, PG_ERR_FORMAT, "GGUF data section starts at %llu, past the %zu-byte file", (unsigned long long)data_off, size);
    g->data_off = (size_t)data_off;
    // second pass over tensors: types, shapes, alignment and data ranges
    pg_cursor w = {c.p, size, g->tinfo_off, 0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        pg_gguf_tensor t;
        uint64_t toff = read_tensor_info(g, &w, &t);
        int nl = (int)(t.name_len > 64 ? 64 : t.name_len);
        uint32_t blk = pg_type_block(t.type);
        if (blk == 0)
            return pg_fail(st, PG_ERR_UNSUPPORTED, "tensor %.*s has type %u, which this engine does not know",
                           nl, t.name, (unsigned)t.type);
        uint64_t n_el = 1;
        for (uint32_t d = 0; d < t.n_dims; d++) {
            if (t.ne[d] == 0 || t.ne[d] > 0x7FFFFFFFull || n_el > 0x7FFFFFFFull / t.ne[d])
                return pg_fail(st, PG_ERR_FORMAT, "tensor %.*s has a bad shape (dimension %u is %llu)",
                               nl, t.name, (unsigned)d, (unsigned long long)t.ne[d]);
            n_el *= t.ne[d];
        }
        if (t.ne[0] % blk != 0)
            return pg_fail(st, PG_ERR_FORMAT, "tensor %.*s: row length %llu is not a multiple of %s's block of %u",
                           nl, t.name, (unsigned long long)t.ne[0], pg_type_name(t.type), (unsigned)blk);
        uint64_t n_bytes = n_el / blk * pg_type_block_bytes(t.type);
        if (toff % g->alignment != 0)
            return pg_fail(st, PG_ERR_FORMAT, "tensor %.*s: data offset %llu is not aligned to %u",
                           nl, t.name, (unsigned long long)toff, (unsigned)g->alignment);
        uint64_t room = (uint64_t)(size - g->data_off);
        if (toff > room || n_bytes > room - toff)
            return pg_fail(st, PG_ERR_FORMAT, "tensor %.*s: %llu bytes at offset %llu run past the end of the file (truncated?)",
                           nl, t.name, (unsigned long long)n_bytes, (unsigned long long)toff);
    }
    pg_status_ok(st);
    return PG_OK;
}

static void fill_tensor(const pg_gguf *g, pg_gguf_tensor *t, uint64_t toff) {
    uint64_t n_el = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    t->n_bytes = n_el / pg_type_block(t->type) * pg_type_block_bytes(t->type);
    t->data = g->data + g->data_off + (size_t)toff;
}

void pg_gguf_tensor_at(const pg_gguf *g, uint64_t i, pg_gguf_tensor *out) {
    pg_cursor w = {g->data, g->size, g->tinfo_off, 0};
    uint64_t toff = 0;
    for (uint64_t j = 0; j <= i && j < g->n_tensors; j++) toff = read_tensor_info(g, &w, out);
    fill_tensor(g, out, toff);
}

int pg_gguf_find_tensor(const pg_gguf *g, const char *name, pg_gguf_tensor *out) {
    pg_cursor w = {g->data, g->size, g->tinfo_off, 0};
    size_t n = strlen(name);
    for (uint64_t j = 0; j < g->n_tensors; j++) {
        uint64_t toff = read_tensor_info(g, &w, out);
        if (out->name_len == n && memcmp(out->name, name, n) == 0) {
            fill_tensor(g, out, toff);
            return 1;
        }
    }
    return 0;
}

int pg_gguf_find(const pg_gguf *g, const char *key, pg_gguf_value *out) {
    pg_cursor c = {g->data, g->size, g->kv_off, 0};
    for (uint64_t i = 0; i < g->n_kv; i++) {
        uint64_t klen = cur_u64(&c);
        const uint8_t *k = c.p + c.off;
        c.off += (size_t)klen;
        uint32_t t = cur_u32(&c);
        size_t voff = c.off;
        if (key_equals(k, klen, key)) {
            memset(out, 0, sizeof *out);
            out->type = t;
            out->val_off = voff;
            if (t == PG_GGUF_ARRAY) {
                out->elem_type = cur_u32(&c);
                out->count = cur_u64(&c);
                out->val_off = c.off;
            }
            return 1;
        }
        cur_skip_value(&c, t, 0);
    }
    return 0;
}

pg_code pg_gguf_get_u32(const pg_gguf *g, const char *key, uint32_t *out, pg_status *st) {
    pg_gguf_value v;
    if (!pg_gguf_find(g, key, &v))
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is missing; re-create the file with 'pocketgpt convert'", key);
    const uint8_t *p = g->data + v.val_off;
    uint64_t u = 0;
    int64_t s = 0;
    int is_signed = 0;
    switch (v.type) {
    case PG_GGUF_UINT8: u = p[0]; break;
    case PG_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); u = x; break; }
    case PG_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); u = x; break; }
    case PG_GGUF_UINT64: memcpy(&u, p, 8); break;
    case PG_GGUF_INT8: s = (int8_t)p[0]; is_signed = 1; break;
    case PG_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); s = x; is_signed = 1; break; }
    case PG_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); s = x; is_signed = 1; break; }
    case PG_GGUF_INT64: memcpy(&s, p, 8); is_signed = 1; break;
    default:
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s has value type %u, expected an integer", key, (unsigned)v.type);
    }
    if (is_signed) {
        if (s < 0) return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is negative (%lld)", key, (long long)s);
        u = (uint64_t)s;
    }
    if (u > 0xFFFFFFFFull) return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is too large (%llu)", key, (unsigned long long)u);
    *out = (uint32_t)u;
    return PG_OK;
}

pg_code pg_gguf_get_f32(const pg_gguf *g, const char *key, float *out, pg_status *st) {
    pg_gguf_value v;
    if (!pg_gguf_find(g, key, &v))
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is missing; re-create the file with 'pocketgpt convert'", key);
    if (v.type == PG_GGUF_FLOAT32) {
        memcpy(out, g->data + v.val_off, 4);
    } else if (v.type == PG_GGUF_FLOAT64) {
        double d;
        memcpy(&d, g->data + v.val_off, 8);
        *out = (float)d;
    } else {
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s has value type %u, expected a float", key, (unsigned)v.type);
    }
    return PG_OK;
}

pg_code pg_gguf_get_array(const pg_gguf *g, const char *key, uint32_t elem_type, pg_gguf_value *out, pg_status *st) {
    if (!pg_gguf_find(g, key, out))
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is missing; re-create the file with 'pocketgpt convert'", key);
    if (out->type != PG_GGUF_ARRAY || out->elem_type != elem_type)
        return pg_fail(st, PG_ERR_FORMAT, "GGUF metadata key %s is not an array of type %u", key, (unsigned)elem_type);
    return PG_OK;
}

void pg_gguf_read_string(const pg_gguf *g, size_t *off, const uint8_t **s, uint32_t *len) {
    uint64_t n;
    memcpy(&n, g->data + *off, 8);
    *s = g->data + *off + 8;
    *len = (uint32_t)n;
    *off += 8 + (size_t)n;
}
