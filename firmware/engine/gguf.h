// pocketgpt engine: GGUF reader that works in place on a blob in memory.
//
// pg_gguf_open walks the whole header once and validates every length, count, type, offset and
// alignment against the blob's size; afterwards lookups re-walk the validated header (no tables,
// no memory needed). Tensor data is never copied: pg_gguf_tensor.data points into the blob
// (an mmapped file on the host, a const array or memory-mapped flash partition on the chip).
#ifndef PG_GGUF_H
#define PG_GGUF_H

#include "pg_common.h"

enum {
    PG_GGUF_UINT8 = 0, PG_GGUF_INT8 = 1, PG_GGUF_UINT16 = 2, PG_GGUF_INT16 = 3,
    PG_GGUF_UINT32 = 4, PG_GGUF_INT32 = 5, PG_GGUF_FLOAT32 = 6, PG_GGUF_BOOL = 7,
    PG_GGUF_STRING = 8, PG_GGUF_ARRAY = 9, PG_GGUF_UINT64 = 10, PG_GGUF_INT64 = 11,
    PG_GGUF_FLOAT64 = 12,
};

#define PG_GGUF_MAX_DIMS 4

typedef struct {
    const uint8_t *data;  // the whole file (size bytes)
    size_t size;
    uint32_t version;     // 2 or 3
    uint32_t alignment;   // general.alignment, default 32
    uint64_t n_kv;
    uint64_t n_tensors;
    size_t kv_off;        // first key/value pair
    size_t tinfo_off;     // first tensor info
    size_t data_off;      // start of the tensor data section (aligned)
} pg_gguf;

typedef struct {
    uint32_t type;        // PG_GGUF_* of the value
    uint32_t elem_type;   // for arrays: element type
    uint64_t count;       // for arrays: element count
    size_t val_off;       // offset of the value (for arrays: of the first element)
} pg_gguf_value;

typedef struct {
    const char *name;     // not NUL-terminated
    uint32_t name_len;
    uint32_t type;        // PG_TYPE_*
    uint32_t n_dims;
    uint64_t ne[PG_GGUF_MAX_DIMS];  // ggml order: ne[0] is the row length
    const void *data;     // inside the blob
    uint64_t n_bytes;
} pg_gguf_tensor;

// Validate the blob and fill g. Never reads outside [blob, blob + size).
pg_code pg_gguf_open(pg_gguf *g, const void *blob, size_t size, pg_status *st);

// 1 and *out filled when the key exists, else 0.
int pg_gguf_find(const pg_gguf *g, const char *key, pg_gguf_value *out);
// Integer-valued key (any integer type, range-checked into uint32).
pg_code pg_gguf_get_u32(const pg_gguf *g, const char *key, uint32_t *out, pg_status *st);
pg_code pg_gguf_get_f32(const pg_gguf *g, const char *key, float *out, pg_status *st);
// An array of `elem_type` under `key`.
pg_code pg_gguf_get_array(const pg_gguf *g, const char *key, uint32_t elem_type, pg_gguf_value *out,
                          pg_status *st);
// Read the string at *off (validated region), advance *off past it.
void pg_gguf_read_string(const pg_gguf *g, size_t *off, const uint8_t **s, uint32_t *len);

// 1 and *out filled when the tensor exists, else 0.
int pg_gguf_find_tensor(const pg_gguf *g, const char *name, pg_gguf_tensor *out);
// The i-th tensor (i < n_tensors).
void pg_gguf_tensor_at(const pg_gguf *g, uint64_t i, pg_gguf_tensor *out);

#endif
