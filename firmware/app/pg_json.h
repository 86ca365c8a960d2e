// pocketgpt app: the little JSON the relay protocol needs, without allocation.
//
// Writing: an append-only buffer (compact JSON, raw UTF-8, only the escapes JSON requires), so a
// built frame can be compared byte for byte with docs/protocol_vectors.json. Reading: lookups of
// one key inside an object slice (nested objects by looking up again inside the value), strings
// decoded with every escape incl. \uXXXX surrogate pairs. Any JSON spelling is accepted.
#ifndef PG_JSON_H
#define PG_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *buf;
    size_t cap, len;
    int overflow;  // set when something did not fit (the output is then unusable)
    int need_comma;
} pgj_writer;

void pgj_init(pgj_writer *w, char *buf, size_t cap);
void pgj_raw(pgj_writer *w, const char *s);
void pgj_obj_begin(pgj_writer *w);
void pgj_obj_end(pgj_writer *w);
void pgj_key(pgj_writer *w, const char *key);
void pgj_str(pgj_writer *w, const char *s, size_t n);
void pgj_kv_str(pgj_writer *w, const char *key, const char *s);
void pgj_kv_int(pgj_writer *w, const char *key, long long v);
void pgj_kv_num(pgj_writer *w, const char *key, double v);   // shortest spelling that reads back
void pgj_kv_bool(pgj_writer *w, const char *key, int v);
// 0 on success (NUL-terminated), -1 when the buffer was too small
int pgj_finish(pgj_writer *w);

typedef enum { PGJ_NONE = 0, PGJ_OBJECT, PGJ_ARRAY, PGJ_STRING, PGJ_NUMBER, PGJ_TRUE, PGJ_FALSE, PGJ_NULL } pgj_kind;

typedef struct {
    const char *p;  // first byte of the value
    size_t n;       // its length
    pgj_kind kind;
} pgj_val;

// Validate that s (n bytes) is exactly one JSON value (with surrounding whitespace); its kind, or
// PGJ_NONE when malformed. Depth is bounded (32) so hostile input cannot blow the stack.
pgj_kind pgj_parse(const char *s, size_t n, pgj_val *out);
// The value of `key` in object `obj` (the last one when repeated, like Python); 0 if absent.
int pgj_get(const pgj_val *obj, const char *key, pgj_val *out);
// Element i of an array (0 when out of range).
int pgj_at(const pgj_val *arr, size_t i, pgj_val *out);
// Decode a string value to NUL-terminated UTF-8; -1 if it is not a string or does not fit.
int pgj_string(const pgj_val *v, char *out, size_t cap, size_t *len);
// An integer value (no fraction or exponent); -1 if not one.
int pgj_int(const pgj_val *v, long long *out);
int pgj_number(const pgj_val *v, double *out);

#endif
