// pocketgpt app: compact JSON writer and an in-place reader (see pg_json.h).
#include "pg_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgj_init(pgj_writer *w, char *buf, size_t cap) {
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = cap == 0;
    w->need_comma = 0;
}

static void put(pgj_writer *w, const char *s, size_t n) {
    if (w->overflow || w->len + n + 1 > w->cap) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

void pgj_raw(pgj_writer *w, const char *s) { put(w, s, strlen(s)); }

void pgj_obj_begin(pgj_writer *w) {
    if (w->need_comma) put(w, ",", 1);
    put(w, "{", 1);
    w->need_comma = 0;
}

void pgj_obj_end(pgj_writer *w) {
    put(w, "}", 1);
    w->need_comma = 1;
}

void pgj_str(pgj_writer *w, const char *s, size_t n) {
    put(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        switch (c) {
        case '"': put(w, "\\\"", 2); break;
        case '\\': put(w, "\\\\", 2); break;
        case '\n': put(w, "\\n", 2); break;
        case '\r': put(w, "\\r", 2); break;
        case '\t': put(w, "\\t", 2); break;
        case '\b': put(w, "\\b", 2); break;
        case '\f': put(w, "\\f", 2); break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                put(w, esc, 6);
            } else {
                put(w, (const char *)&s[i], 1);
            }
        }
    }
    put(w, "\"", 1);
}

void pgj_key(pgj_writer *w, const char *key) {
    if (w->need_comma) put(w, ",", 1);
    pgj_str(w, key, strlen(key));
    put(w, ":", 1);
    w->need_comma = 0;
}

void pgj_kv_str(pgj_writer *w, const char *key, const char *s) {
    pgj_key(w, key);
    pgj_str(w, s, strlen(s));
    w->need_comma = 1;
}

void pgj_kv_int(pgj_writer *w, const char *key, long long v) {
    char tmp[32];
    pgj_key(w, key);
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    put(w, tmp, (size_t)n);
    w->need_comma = 1;
}

void pgj_kv_num(pgj_writer *w, const char *key, double v) {
    char tmp[40];
    int n = 0;
    // the shortest %g spelling that reads back to the same double (Python's repr for these)
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    if (!strpbrk(tmp, ".eEn")) {  // keep it a float on the wire: 1 -> 1.0 as Python writes
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = 0;
    }
    pgj_key(w, key);
    put(w, tmp, (size_t)n);
    w->need_comma = 1;
}

void pgj_kv_bool(pgj_writer *w, const char *key, int v) {
    pgj_key(w, key);
    pgj_raw(w, v ? "true" : "false");
    w->need_comma = 1;
}

int pgj_finish(pgj_writer *w) {
    if (w->overflow) return -1;
    w->buf[w->len] = 0;
    return 0;
}

// ---- reader ----

typedef struct {
    const char *s, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')) c->s++;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static int scan_string(cursor *c) {
    if (c->s >= c->end || *c->s != '"') return -1;
    c->s++;
    while (c->s < c->end) {
        unsigned char ch = (unsigned char)*c->s++;
        if (ch == '"') return 0;
        if (ch < 0x20) return -1;
        if (ch == '\\') {
            if (c->s >= c->end) return -1;
            char e = *c->s++;
            if (e == 'u') {
                if (c->end - c->s < 4) return -1;
                for (int i = 0; i < 4; i++)
                    if (hexval(c->s[i]) < 0) return -1;
                c->s += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return -1;
            }
        }
    }
    return -1;
}

static int scan_number(cursor *c) {
    const char *start = c->s;
    if (c->s < c->end && *c->s == '-') c->s++;
    if (c->s >= c->end) return -1;
    if (*c->s == '0') {
        c->s++;
    } else if (*c->s >= '1' && *c->s <= '9') {
        while (c->s < c->end && *c->s >= '0' && *c->s <= '9') c->s++;
    } else {
        return -1;
    }
    if (c->s < c->end && *c->s == '.') {
        c->s++;
        const char *d = c->s;
        while (c->s < c->end && *c->s >= '0' && *c->s <= '9') c->s++;
        if (c->s == d) return -1;
    }
    if (c->s < c->end && (*c->s == 'e' || *c->s == 'E')) {
        c->s++;
        if (c->s < c->end && (*c->s == '+' || *c->s == '-')) c->s++;
        const char *d = c->s;
        while (c->s < c->end && *c->s >= '0' && *c->s <= '9') c->s++;
        if (c->s == d) return -1;
    }
    return c->s > start ? 0 : -1;
}

static pgj_kind scan_value(cursor *c, int depth);

static pgj_kind scan_container(cursor *c, int depth, char close, int is_obj) {
    c->s++;
    skip_ws(c);
    if (c->s < c->end && *c->s == close) {
        c->s++;
        return is_obj ? PGJ_OBJECT : PGJ_ARRAY;
    }
    for (;;) {
        skip_ws(c);
        if (is_obj) {
            if (scan_string(c)) return PGJ_NONE;
            skip_ws(c);
            if (c->s >= c->end || *c->s != ':') return PGJ_NONE;
            c->s++;
            skip_ws(c);
        }
        if (scan_value(c, depth + 1) == PGJ_NONE) return PGJ_NONE;
        skip_ws(c);
        if (c->s >= c->end) return PGJ_NONE;
        if (*c->s == ',') {
            c->s++;
            continue;
        }
        if (*c->s == close) {
            c->s++;
            return is_obj ? PGJ_OBJECT : PGJ_ARRAY;
        }
        return PGJ_NONE;
    }
}

static int scan_word(cursor *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, w, n) != 0) return -1;
    c->s += n;
    return 0;
}

static pgj_kind scan_value(cursor *c, int depth) {
    if (depth > 32 || c->s >= c->end) return PGJ_NONE;
    switch (*c->s) {
    case '{': return scan_container(c, depth, '}', 1);
    case '[': return scan_container(c, depth, ']', 0);
    case '"': return scan_string(c) ? PGJ_NONE : PGJ_STRING;
    case 't': return scan_word(c, "true") ? PGJ_NONE : PGJ_TRUE;
    case 'f': return scan_word(c, "false") ? PGJ_NONE : PGJ_FALSE;
    case 'n': return scan_word(c, "null") ? PGJ_NONE : PGJ_NULL;
    default: return scan_number(c) ? PGJ_NONE : PGJ_NUMBER;
    }
}

pgj_kind pgj_parse(const char *s, size_t n, pgj_val *out) {
    cursor c = {s, s + n};
    skip_ws(&c);
    const char *start = c.s;
    pgj_kind k = scan_value(&c, 0);
    const char *stop = c.s;
    skip_ws(&c);
    if (k == PGJ_NONE || c.s != c.end) return PGJ_NONE;
    if (out) {
        out->p = start;
        out->n = (size_t)(stop - start);
        out->kind = k;
    }
    return k;
}

// compare a raw (still escaped) JSON string token with a plain key; keys with escapes never match
static int key_equals(const char *tok, size_t n, const char *key) {
    size_t k = strlen(key);
    return n == k + 2 && memcmp(tok + 1, key, k) == 0 && memchr(tok + 1, '\\', k) == NULL;
}

int pgj_get(const pgj_val *obj, const char *key, pgj_val *out) {
    if (obj->kind != PGJ_OBJECT) return 0;
    cursor c = {obj->p + 1, obj->p + obj->n - 1};
    int found = 0;
    for (;;) {
        skip_ws(&c);
        if (c.s >= c.end) return found;
        const char *ks = c.s;
        if (scan_string(&c)) return found;
        size_t kn = (size_t)(c.s - ks);
        skip_ws(&c);
        c.s++;  // ':'
        skip_ws(&c);
        const char *vs = c.s;
        pgj_kind kind = scan_value(&c, 1);
        if (kind == PGJ_NONE) return found;
        if (key_equals(ks, kn, key)) {
            out->p = vs;
            out->n = (size_t)(c.s - vs);
            out->kind = kind;
            found = 1;
        }
        skip_ws(&c);
        if (c.s < c.end && *c.s == ',') c.s++;
    }
}

int pgj_at(const pgj_val *arr, size_t i, pgj_val *out) {
    if (arr->kind != PGJ_ARRAY) return 0;
    cursor c = {arr->p + 1, arr->p + arr->n - 1};
    for (size_t k = 0;; k++) {
        skip_ws(&c);
        if (c.s >= c.end) return 0;
        const char *vs = c.s;
        pgj_kind kind = scan_value(&c, 1);
        if (kind == PGJ_NONE) return 0;
        if (k == i) {
            out->p = vs;
            out->n = (size_t)(c.s - vs);
            out->kind = kind;
            return 1;
        }
        skip_ws(&c);
        if (c.s < c.end && *c.s == ',') c.s++;
    }
}

static size_t utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hex4(const char *p) {
    return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

int pgj_string(const pgj_val *v, char *out, size_t cap, size_t *len) {
    if (v->kind != PGJ_STRING || cap == 0) return -1;
    const char *p = v->p + 1, *end = v->p + v->n - 1;
    size_t o = 0;
    while (p < end) {
        char tmp[4];
        size_t k;
        if (*p != '\\') {
            tmp[0] = *p++;
            k = 1;
        } else {
            p++;
            char e = *p++;
            switch (e) {
            case 'n': tmp[0] = '\n'; k = 1; break;
            case 't': tmp[0] = '\t'; k = 1; break;
            case 'r': tmp[0] = '\r'; k = 1; break;
            case 'b': tmp[0] = '\b'; k = 1; break;
            case 'f': tmp[0] = '\f'; k = 1; break;
            case 'u': {
                uint32_t cp = hex4(p);
                p += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                    uint32_t lo = hex4(p + 2);
                    if (lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        p += 6;
                    }
                }
                if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD;  // a lone surrogate
                k = utf8_put(cp, tmp);
                break;
            }
            default: tmp[0] = e; k = 1; break;  // \" \\ \/
            }
        }
        if (o + k + 1 > cap) return -1;
        memcpy(out + o, tmp, k);
        o += k;
    }
    out[o] = 0;
    if (len) *len = o;
    return 0;
}

int pgj_int(const pgj_val *v, long long *out) {
    if (v->kind != PGJ_NUMBER || memchr(v->p, '.', v->n) || memchr(v->p, 'e', v->n) || memchr(v->p, 'E', v->n))
        return -1;
    char tmp[32];
    if (v->n >= sizeof tmp) return -1;
    memcpy(tmp, v->p, v->n);
    tmp[v->n] = 0;
    *out = strtoll(tmp, NULL, 10);
    return 0;
}

int pgj_number(const pgj_val *v, double *out) {
    if (v->kind != PGJ_NUMBER) return -1;
    char tmp[64];
    if (v->n >= sizeof tmp) return -1;
    memcpy(tmp, v->p, v->n);
    tmp[v->n] = 0;
    *out = strtod(tmp, NULL);
    return 0;
}
