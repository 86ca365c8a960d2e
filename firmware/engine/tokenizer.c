// pocketgpt engine: GPT-2 byte-level BPE tokenizer and streaming UTF-8 detokenizer.
#include "tokenizer.h"

#include <math.h>
#include <string.h>

#include "unicode_tables.h"

#define PG_NONE 0xFFFFFFFFu

// ---- Unicode helpers -----------------------------------------------------------------------

// Decode one UTF-8 character from s (n > 0 bytes available). Returns bytes consumed (>= 1);
// *cp is PG_NONE for an invalid or truncated sequence (then 1 byte is consumed).
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = PG_NONE;
        return 1;
    }
    if (n < len) {
        *cp = PG_NONE;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        uint8_t b = s[i];
        if (b < lo || b > hi) {
            *cp = PG_NONE;
            return 1;
        }
        lo = 0x80;
        hi = 0xBF;
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return len;
}

static int in_ranges(const uint32_t (*r)[2], int count, uint32_t cp) {
    int lo = 0, hi = count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

enum { CL_SPACE, CL_LETTER, CL_NUMBER, CL_OTHER };

// Unicode White_Space, as the regex engine's \s
static int is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static int classify(uint32_t cp) {
    if (cp == PG_NONE) return CL_OTHER;
    if (is_space(cp)) return CL_SPACE;
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CL_LETTER;
        if (cp >= '0' && cp <= '9') return CL_NUMBER;
        return CL_OTHER;
    }
    if (in_ranges(pg_unicode_letter, PG_UNICODE_LETTER_COUNT, cp)) return CL_LETTER;
    if (in_ranges(pg_unicode_number, PG_UNICODE_NUMBER_COUNT, cp)) return CL_NUMBER;
    return CL_OTHER;
}

// GPT-2's byte-to-unicode spelling, inverted: code point -> byte, or -1.
static int unicode_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp >= 256 && cp < 256 + 68) {
        uint32_t k = cp - 256;  // the k-th byte outside the printable ranges, ascending
        if (k <= 32) return (int)k;
        if (k <= 66) return (int)(127 + (k - 33));
        return 173;
    }
    return -1;
}

// Token text (byte-level spelling) -> raw bytes into out (room for n bytes); returns length.
// Characters outside the spelling (e.g. in hand-made special tokens) keep their UTF-8 bytes.
static uint32_t spelling_to_bytes(const uint8_t *s, uint32_t n, uint8_t *out) {
    uint32_t o = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(s + i, n - i, &cp);
        int b = cp == PG_NONE ? -1 : unicode_to_byte(cp);
        if (b >= 0) {
            out[o++] = (uint8_t)b;
        } else {
            memcpy(out + o, s + i, k);
            o += (uint32_t)k;
        }
        i += k;
    }
    return o;
}

// ---- hash tables ---------------------------------------------------------------------------

static uint32_t hash_bytes(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(uint32_t a, uint32_t b) {
    uint64_t x = ((uint64_t)a << 32) | b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t lookup_token(const pg_tokenizer *t, const uint8_t *s, size_t n) {
    uint32_t i = hash_bytes(s, n) & t->tok_mask;
    for (;;) {
        uint32_t id = t->tok_hash[i];
        if (id == PG_NONE) return PG_NONE;
        uint32_t len = t->offs[id + 1] - t->offs[id];
        if (len == n && memcmp(t->bytes + t->offs[id], s, n) == 0) return id;
        i = (i + 1) & t->tok_mask;
    }
}

#define MERGE_EMPTY UINT64_MAX
#define MERGE_INDEX_SHIFT (2 * PG_TOKENIZER_ID_BITS)
#define MERGE_KEY_MASK (((uint64_t)1 << MERGE_INDEX_SHIFT) - 1)

static uint64_t merge_key(uint32_t a, uint32_t b) { return (uint64_t)a | (uint64_t)b << PG_TOKENIZER_ID_BITS; }

// The slot of (a, b) in the merge table: its entry, or the empty slot where it would go.
static uint32_t merge_slot(const pg_tokenizer *t, uint32_t a, uint32_t b) {
    const uint64_t key = merge_key(a, b);
    uint32_t i = hash_pair(a, b) & t->merge_mask;
    while (t->merge_hash[i] != MERGE_EMPTY && (t->merge_hash[i] & MERGE_KEY_MASK) != key) i = (i + 1) & t->merge_mask;
    return i;
}

// Index of the merge of (a, b) among the usable merges (rank order), or PG_NONE.
static uint32_t lookup_merge(const pg_tokenizer *t, uint32_t a, uint32_t b) {
    if (t->n_merges == 0) return PG_NONE;
    uint64_t e = t->merge_hash[merge_slot(t, a, b)];
    return e == MERGE_EMPTY ? PG_NONE : (uint32_t)(e >> MERGE_INDEX_SHIFT);
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n && c < 0x80000000u) c <<= 1;
    return c;
}

// Linear-probing tables at most 80 % full: a power of two at least n * 5 / 4.
static uint32_t table_cap(uint64_t n) { return pow2_at_least(n + n / 4 + 1); }

// ---- init ----------------------------------------------------------------------------------

pg_code pg_tokenizer_init(pg_tokenizer *t, const pg_gguf *g, uint32_t n_vocab_expected, pg_arena *a, pg_status *st) {
    memset(t, 0, sizeof *t);
    pg_gguf_value tokens, merges;
    pg_code rc = pg_gguf_get_array(g, "tokenizer.ggml.tokens", PG_GGUF_STRING, &tokens, st);
    if (rc) return rc;
    if (tokens.count != n_vocab_expected)
        return pg_fail(st, PG_ERR_FORMAT, "tokenizer has %llu tokens but the embedding has %u rows",
                       (unsigned long long)tokens.count, (unsigned)n_vocab_expected);
    if (!pg_gguf_find(g, "tokenizer.ggml.merges", &merges)) {
        merges.count = 0;
    } else if (merges.type != PG_GGUF_ARRAY || merges.elem_type != PG_GGUF_STRING) {
        return pg_fail(st, PG_ERR_FORMAT, "tokenizer.ggml.merges is not an array of strings");
    }
    if (n_vocab_expected > PG_TOKENIZER_MAX_VOCAB)
        return pg_fail(st, PG_ERR_FORMAT, "vocabulary of %u tokens; the tokenizer takes at most %u",
                       (unsigned)n_vocab_expected, (unsigned)PG_TOKENIZER_MAX_VOCAB);
    if (merges.count > PG_TOKENIZER_MAX_MERGES)
        return pg_fail(st, PG_ERR_FORMAT, "tokenizer.ggml.merges has %llu entries; the tokenizer takes at most %u",
                       (unsigned long long)merges.count, (unsigned)PG_TOKENIZER_MAX_MERGES);
    uint32_t eos;
    if ((rc = pg_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, st))) return rc;
    if (eos >= n_vocab_expected)
        return pg_fail(st, PG_ERR_FORMAT, "eos token id %u outside the %u-token vocabulary", (unsigned)eos,
                       (unsigned)n_vocab_expected);
    uint32_t bos = eos;
    pg_gguf_value bv;
    if (pg_gguf_find(g, "tokenizer.ggml.bos_token_id", &bv) &&
        (pg_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos, st) || bos >= n_vocab_expected))
        return pg_fail(st, PG_ERR_FORMAT, "bos token id is not a token of the vocabulary");
    t->n_vocab = n_vocab_expected;
    t->eos_id = eos;
    t->bos_id = bos;

    // sizes: raw bytes are never longer than the spelling
    uint64_t total = 0;
    size_t off = tokens.val_off;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const uint8_t *s;
        uint32_t len;
        pg_gguf_read_string(g, &off, &s, &len);
        total += len;
    }
    if (total > 0x7FFFFFFFu) return pg_fail(st, PG_ERR_FORMAT, "tokenizer strings are too large");
    uint32_t tok_cap = table_cap(t->n_vocab);
    uint32_t merge_cap = table_cap(merges.count);
    uint8_t *bytes = pg_arena_take(a, (size_t)total + 1, 1);
    uint32_t *offs = pg_arena_take(a, pg_size_mul((size_t)t->n_vocab + 1, sizeof(uint32_t)), 4);
    uint32_t *tok_hash = pg_arena_take(a, pg_size_mul(tok_cap, sizeof(uint32_t)), 4);
    uint64_t *merge_hash = pg_arena_take(a, pg_size_mul(merge_cap, sizeof(uint64_t)), 8);
    uint32_t *merge_out = pg_arena_take(a, pg_size_mul((size_t)merges.count, sizeof(uint32_t)), 4);
    if (pg_arena_overflow(a)) return PG_OK;  // counting (or the caller's buffer is short: it checks)

    // raw bytes per token, and the token table (first spelling wins on duplicates)
    memset(tok_hash, 0xFF, (size_t)tok_cap * sizeof(uint32_t));
    t->bytes = bytes;
    t->offs = offs;
    t->tok_hash = tok_hash;
    t->tok_mask = tok_cap - 1;
    off = tokens.val_off;
    uint32_t pos = 0;
    for (uint32_t i = 0; i < t->n_vocab; i++) {
        const uint8_t *s;
        uint32_t len;
        pg_gguf_read_string(g, &off, &s, &len);
        offs[i] = pos;
        uint32_t n = spelling_to_bytes(s, len, bytes + pos);
        offs[i + 1] = pos + n;
        if (n > 0 && lookup_token(t, bytes + pos, n) == PG_NONE) {
            uint32_t h = hash_bytes(bytes + pos, n) & t->tok_mask;
            while (tok_hash[h] != PG_NONE) h = (h + 1) & t->tok_mask;
            tok_hash[h] = i;
        }
        pos += n;
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_token[b] = lookup_token(t, &c, 1);
        if (t->byte_token[b] == PG_NONE)
            return pg_fail(st, PG_ERR_FORMAT, "vocabulary has no token for byte 0x%02X; byte-level BPE needs all 256", b);
    }

    // merges: "left right" in spelling; skip the ones whose parts or result are not tokens
    memset(merge_hash, 0xFF, (size_t)merge_cap * sizeof(uint64_t));
    t->merge_hash = merge_hash;
    t->merge_mask = merge_cap - 1;
    t->merge_out = merge_out;
    off = merges.val_off;
    uint8_t buf[1024];
    uint32_t used = 0;
    for (uint64_t r = 0; r < merges.count; r++) {
        const uint8_t *s;
        uint32_t len;
        pg_gguf_read_string(g, &off, &s, &len);
        const uint8_t *sp = memchr(s, ' ', len);
        if (!sp || len >= sizeof buf) continue;
        uint32_t la = (uint32_t)(sp - s);
        uint32_t na = spelling_to_bytes(s, la, buf);
        uint32_t nb = spelling_to_bytes(sp + 1, len - la - 1, buf + na);
        uint32_t ida = lookup_token(t, buf, na), idb = lookup_token(t, buf + na, nb);
        uint32_t ido = lookup_token(t, buf, (size_t)na + nb);
        if (ida == PG_NONE || idb == PG_NONE || ido == PG_NONE || na == 0 || nb == 0) continue;
        uint32_t h = merge_slot(t, ida, idb);
        if (merge_hash[h] != MERGE_EMPTY) continue;  // a later duplicate: the first rank wins
        merge_hash[h] = merge_key(ida, idb) | (uint64_t)used << MERGE_INDEX_SHIFT;
        merge_out[used++] = ido;
    }
    t->n_merges = used;
    return PG_OK;
}

// ---- encode --------------------------------------------------------------------------------

// Scratch per input byte: symbol, prev, next (3 words) and up to 3 heap entries of 2 words.
size_t pg_tokenizer_scratch_size(size_t n) { return pg_size_mul(9 * sizeof(uint32_t), n + 1); }

typedef struct {
    uint32_t rank, pos;  // merge rank of the pair starting at symbol `pos`
} pg_heap_item;

static int heap_less(const pg_heap_item *a, const pg_heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(pg_heap_item *h, size_t *n, pg_heap_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static pg_heap_item heap_pop(pg_heap_item *h, size_t *n) {
    pg_heap_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

#define PG_END 0xFFFFFFFFu

// BPE one pre-token chunk of m bytes into ids: symbols in a linked list, candidate pairs in a
// min-heap by (rank, position) with stale entries skipped when popped: O(m log m), lowest rank
// first and leftmost on ties, as Hugging Face's BPE.
static pg_code bpe_chunk(const pg_tokenizer *t, const uint8_t *s, size_t m, int32_t *ids, size_t cap, size_t *n_ids,
                         uint32_t *work, pg_status *st) {
    uint32_t *sym = work, *prev = work + m, *next = work + 2 * m;
    pg_heap_item *heap = (pg_heap_item *)(work + 3 * m);
    size_t hn = 0;
    for (size_t i = 0; i < m; i++) {
        sym[i] = t->byte_token[s[i]];
        prev[i] = i ? (uint32_t)(i - 1) : PG_END;
        next[i] = i + 1 < m ? (uint32_t)(i + 1) : PG_END;
    }
    for (size_t i = 0; i + 1 < m; i++) {
        uint32_t mg = lookup_merge(t, sym[i], sym[i + 1]);
        if (mg != PG_NONE) heap_push(heap, &hn, (pg_heap_item){mg, (uint32_t)i});
    }
    while (hn) {
        pg_heap_item it = heap_pop(heap, &hn);
        uint32_t a = it.pos, b = next[a];
        if (sym[a] == PG_END || b == PG_END) continue;  // merged away
        uint32_t mg = lookup_merge(t, sym[a], sym[b]);
        if (mg != it.rank) continue;  // this pair changed since it was pushed (or merges no more)
        sym[a] = t->merge_out[mg];
        sym[b] = PG_END;
        next[a] = next[b];
        if (next[b] != PG_END) prev[next[b]] = a;
        if (prev[a] != PG_END) {
            uint32_t l = lookup_merge(t, sym[prev[a]], sym[a]);
            if (l != PG_NONE) heap_push(heap, &hn, (pg_heap_item){l, prev[a]});
        }
        if (next[a] != PG_END) {
            uint32_t r = lookup_merge(t, sym[a], sym[next[a]]);
            if (r != PG_NONE) heap_push(heap, &hn, (pg_heap_item){r, a});
        }
    }
    for (uint32_t i = 0; i != PG_END; i = next[i]) {
        if (*n_ids >= cap) return pg_fail(st, PG_ERR_MEMORY, "token buffer of %zu ids is too small", cap);
        ids[(*n_ids)++] = (int32_t)sym[i];
    }
    return PG_OK;
}

// Length in bytes of the pre-token starting at s[0] (the GPT-2 regex, alternatives in order).
static size_t pretoken_len(const uint8_t *s, size_t n) {
    uint32_t c0;
    size_t k0 = utf8_next(s, n, &c0);
    if (c0 == '\'' && n > 1) {  // 's|'t|'re|'ve|'m|'ll|'d
        uint8_t a = s[1], b = n > 2 ? s[2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    size_t i = 0;
    int cls;
    uint32_t cp = c0;
    size_t k = k0;
    if (c0 == ' ' && n > 1) {  // ` ?X+` where X follows the space
        uint32_t c1;
        size_t k1 = utf8_next(s + 1, n - 1, &c1);
        int cl1 = classify(c1);
        if (cl1 != CL_SPACE) {
            i = 1;
            cp = c1;
            k = k1;
        }
    }
    cls = classify(cp);
    if (cls != CL_SPACE) {  // run of one class
        i += k;
        while (i < n) {
            uint32_t c;
            size_t kk = utf8_next(s + i, n - i, &c);
            if (classify(c) != cls) break;
            i += kk;
        }
        return i;
    }
    // whitespace run: \s+(?!\S) leaves the last space for the next word, else \s+
    size_t end = 0, last = 0;
    while (end < n) {
        uint32_t c;
        size_t kk = utf8_next(s + end, n - end, &c);
        if (classify(c) != CL_SPACE) break;
        last = end;
        end += kk;
    }
    if (end == n) return end;
    return last > 0 ? last : end;
}

pg_code pg_tokenizer_encode(const pg_tokenizer *t, const uint8_t *text, size_t n, int parse_special, int32_t *ids,
                            size_t cap, size_t *n_ids, void *scratch, size_t scratch_size, pg_status *st) {
    *n_ids = 0;
    if (n == 0) return PG_OK;
    if (!text || !scratch || scratch_size < pg_tokenizer_scratch_size(n) || n > 0x7FFFFFF0u)
        return pg_fail(st, PG_ERR_MEMORY, "tokenizer scratch of %zu bytes is too small for %zu bytes of text",
                       scratch_size, n);
    uint32_t *work = (uint32_t *)scratch;
    uint32_t eos_len = t->offs[t->eos_id + 1] - t->offs[t->eos_id];
    const uint8_t *eos = t->bytes + t->offs[t->eos_id];
    size_t i = 0;
    while (i < n) {
        // the segment up to the next special token
        size_t seg_end = n;
        if (parse_special && eos_len > 0) {
            for (size_t j = i; j + eos_len <= n; j++)
                if (text[j] == eos[0] && memcmp(text + j, eos, eos_len) == 0) {
                    seg_end = j;
                    break;
                }
        }
        while (i < seg_end) {
            size_t len = pretoken_len(text + i, seg_end - i);
            pg_code rc = bpe_chunk(t, text + i, len, ids, cap, n_ids, work, st);
            if (rc) return rc;
            i += len;
        }
        if (seg_end < n) {
            if (*n_ids + 1 > cap) return pg_fail(st, PG_ERR_MEMORY, "token buffer of %zu ids is too small", cap);
            ids[(*n_ids)++] = (int32_t)t->eos_id;
            i = seg_end + eos_len;
        }
    }
    return PG_OK;
}

const uint8_t *pg_tokenizer_token_bytes(const pg_tokenizer *t, int32_t id, uint32_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->offs[id + 1] - t->offs[id];
    return t->bytes + t->offs[id];
}

// ---- streaming text out --------------------------------------------------------------------

pg_code pg_textout_init(pg_textout *o, const uint8_t *const *stops, const size_t *stop_lens, int n_stops, pg_status *st) {
    memset(o, 0, sizeof *o);
    if (n_stops < 0 || n_stops > PG_TEXTOUT_MAX_STOPS)
        return pg_fail(st, PG_ERR_ARG, "%d stop strings given, at most %d are supported", n_stops, PG_TEXTOUT_MAX_STOPS);
    for (int i = 0; i < n_stops; i++) {
        if (stop_lens[i] == 0 || stop_lens[i] > PG_TEXTOUT_MAX_STOP_LEN)
            return pg_fail(st, PG_ERR_ARG, "stop string %d is %zu bytes; 1..%d allowed", i, stop_lens[i],
                           PG_TEXTOUT_MAX_STOP_LEN);
        o->stop[o->n_stop] = stops[i];
        o->stop_len[o->n_stop++] = stop_lens[i];
    }
    return PG_OK;
}

// Release everything in hold except the longest tail that could begin a stop string.
static void release(pg_textout *o, uint8_t *out, size_t *n_out) {
    size_t keep = 0;
    for (int s = 0; s < o->n_stop; s++) {
        size_t max = o->stop_len[s] - 1 < o->n_hold ? o->stop_len[s] - 1 : o->n_hold;
        for (size_t k = max; k > keep; k--)
            if (memcmp(o->hold + o->n_hold - k, o->stop[s], k) == 0) {
                keep = k;
                break;
            }
    }
    size_t n = o->n_hold - keep;
    memcpy(out + *n_out, o->hold, n);
    *n_out += n;
    memmove(o->hold, o->hold + n, keep);
    o->n_hold = keep;
}

static const uint8_t s_fffd[3] = {0xEF, 0xBF, 0xBD};

int pg_unicode_is_word(uint32_t cp) {
    int c = classify(cp);
    return c == CL_LETTER || c == CL_NUMBER;
}

int pg_unicode_is_word_sep(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

int pg_unicode_count_words(const uint8_t *text, size_t n) {
    int words = 0, counted = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += utf8_next(text + i, n - i, &cp);  // an invalid byte (PG_NONE) is like U+FFFD: no letter, no space
        if (cp != PG_NONE && pg_unicode_is_word_sep(cp)) {
            counted = 0;
        } else if (!counted && cp != PG_NONE && pg_unicode_is_word(cp)) {
            words++;
            counted = 1;
        }
    }
    return words;
}

// the code point of one complete, valid UTF-8 character of k bytes
static uint32_t char_cp(const uint8_t *c, size_t k) {
    if (k == 1) return c[0];
    if (k == 2) return (uint32_t)(c[0] & 0x1F) << 6 | (c[1] & 0x3F);
    if (k == 3) return (uint32_t)(c[0] & 0x0F) << 12 | (uint32_t)(c[1] & 0x3F) << 6 | (c[2] & 0x3F);
    return (uint32_t)(c[0] & 0x07) << 18 | (uint32_t)(c[1] & 0x3F) << 12 | (uint32_t)(c[2] & 0x3F) << 6 | (c[3] & 0x3F);
}

// One complete character into hold; 1 when it completes a stop string.
static int put_char(pg_textout *o, const uint8_t *c, size_t k, uint8_t *out, size_t *n_out) {
    uint32_t cp = char_cp(c, k);
    o->after_text = !pg_unicode_is_word_sep(cp);
    if (!o->after_text) {
        o->counted = 0;
    } else if (!o->counted && pg_unicode_is_word(cp)) {
        o->n_words++;
        o->counted = 1;
    }
    if (o->n_hold + k > PG_TEXTOUT_HOLD) release(o, out, n_out);
    memcpy(o->hold + o->n_hold, c, k);
    o->n_hold += k;
    for (int s = 0; s < o->n_stop; s++) {
        size_t L = o->stop_len[s];
        if (L <= o->n_hold && memcmp(o->hold + o->n_hold - L, o->stop[s], L) == 0) {
            memcpy(out + *n_out, o->hold, o->n_hold - L);
            *n_out += o->n_hold - L;
            o->n_hold = 0;
            o->stopped = 1;
            return 1;
        }
    }
    return 0;
}

int pg_textout_push(pg_textout *o, const uint8_t *in, size_t n, uint8_t *out, size_t *n_out) {
    *n_out = 0;
    if (o->stopped) return 1;
    size_t i = 0;
    while (i < n) {
        uint8_t c = in[i];
        if (o->n_pend == 0) {
            i++;
            if (c < 0x80) {
                if (put_char(o, &c, 1, out, n_out)) return 1;
            } else if (c >= 0xC2 && c <= 0xF4) {
                o->pend[0] = c;
                o->n_pend = 1;
                o->need = c <= 0xDF ? 2 : c <= 0xEF ? 3 : 4;
            } else if (put_char(o, s_fffd, 3, out, n_out)) {
                return 1;
            }
            continue;
        }
        uint8_t lo = 0x80, hi = 0xBF;
        if (o->n_pend == 1) {
            if (o->pend[0] == 0xE0) lo = 0xA0;
            if (o->pend[0] == 0xED) hi = 0x9F;
            if (o->pend[0] == 0xF0) lo = 0x90;
            if (o->pend[0] == 0xF4) hi = 0x8F;
        }
        if (c < lo || c > hi) {  // broken sequence: one U+FFFD, then look at c afresh
            o->n_pend = 0;
            if (put_char(o, s_fffd, 3, out, n_out)) return 1;
            continue;
        }
        o->pend[o->n_pend++] = c;
        i++;
        if (o->n_pend == o->need) {
            o->n_pend = 0;
            if (put_char(o, o->pend, (size_t)o->need, out, n_out)) return 1;
        }
    }
    release(o, out, n_out);
    return 0;
}

void pg_textout_flush(pg_textout *o, uint8_t *out, size_t *n_out) {
    *n_out = 0;
    if (o->stopped) return;
    if (o->n_pend) {
        o->n_pend = 0;
        if (put_char(o, s_fffd, 3, out, n_out)) return;
    }
    memcpy(out + *n_out, o->hold, o->n_hold);
    *n_out += o->n_hold;
    o->n_hold = 0;
}

static int is_blank_byte(uint8_t b) { return b == ' ' || (b >= 0x09 && b <= 0x0D); }

int32_t pg_textout_guard(const pg_textout *o, const pg_tokenizer *t, float *logits, int min_words) {
    if (o->n_words >= min_words) return 0;
    int32_t masked = 0;
    if (t->eos_id < t->n_vocab) {
        logits[t->eos_id] = -INFINITY;
        masked++;
    }
    int no_blank = !o->after_text;  // no second run of whitespace tokens before the words
    if (o->n_stop == 0 && !no_blank) return masked;
    uint8_t first[256] = {0};
    for (int s = 0; s < o->n_stop; s++) first[o->stop[s][0]] = 1;
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        if (id == t->eos_id) continue;
        uint32_t a = t->offs[id], b = t->offs[id + 1];
        int mask = no_blank && b > a;  // a whitespace-only token, until a byte says otherwise
        for (uint32_t i = a; i < b; i++) {
            if (first[t->bytes[i]]) {  // holds a stop string's first byte
                mask = 1;
                break;
            }
            if (!is_blank_byte(t->bytes[i])) mask = 0;
        }
        if (mask) {
            logits[id] = -INFINITY;
            masked++;
        }
    }
    return masked;
}

// ---- subject steering (see tokenizer.h) ----

static int ascii_letter(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static uint8_t ascii_lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c; }

size_t pg_topic_stem(const char *w, size_t n, char *out, size_t cap) {
    static const char *const suffixes[] = {"iness", "ness", "ingly", "ings", "ing", "edly", "ies", "ied", "ers",
                                           "er", "est", "ed", "ly", "es", "s", "e", "y"};
    size_t keep = n;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k + 3 && memcmp(w + n - k, suffixes[i], k) == 0) {
            keep = n - k;
            break;
        }
    }
    if (cap == 0) return 0;
    if (keep >= cap) keep = cap - 1;
    memcpy(out, w, keep);
    out[keep] = 0;
    return keep;
}

pg_code pg_topic_init(pg_topic *tp, const pg_tokenizer *t, const char *subject, size_t n, float bias, float slope,
                      int cap, pg_status *st) {
    memset(tp, 0, sizeof *tp);
    if (n == 0 || n >= PG_TOPIC_MAX_WORD) return PG_OK;
    for (size_t i = 0; i < n; i++)
        if (!ascii_letter((uint8_t)subject[i])) return PG_OK;
    for (size_t i = 0; i < n; i++) tp->word[i] = (char)ascii_lower((uint8_t)subject[i]);
    pg_topic_stem(tp->word, n, tp->stem, sizeof tp->stem);
    uint32_t scratch[9 * (PG_TOPIC_MAX_WORD + 2)];
    for (int v = 0; v < PG_TOPIC_MAX_VARIANTS; v++) {
        char text[PG_TOPIC_MAX_WORD + 1];
        int space = v < 2;  // " word", " Word", "word", "Word"
        size_t len = 0;
        if (space) text[len++] = ' ';
        memcpy(text + len, tp->word, n);
        if (v & 1) text[len] = (char)(text[len] - 'a' + 'A');
        len += n;
        int32_t ids[PG_TOPIC_MAX_WORD + 1];
        size_t n_ids = 0;
        pg_code rc = pg_tokenizer_encode(t, (const uint8_t *)text, len, 0, ids, sizeof ids / sizeof ids[0], &n_ids,
                                         scratch, sizeof scratch, st);
        if (rc) return rc;
        if (n_ids == 0 || n_ids > PG_TOPIC_MAX_TOKS) continue;  // too long to steer: left out
        int dup = 0;
        for (int u = 0; u < tp->n_var && !dup; u++)
            dup = tp->var_len[u] == (int)n_ids && memcmp(tp->var[u], ids, n_ids * sizeof ids[0]) == 0;
        if (dup) continue;
        memcpy(tp->var[tp->n_var], ids, n_ids * sizeof ids[0]);
        tp->var_len[tp->n_var] = (int)n_ids;
        tp->var_space[tp->n_var] = space;
        tp->n_var++;
    }
    tp->bias = bias;
    tp->slope = slope;
    tp->cap = cap;
    tp->active = tp->n_var > 0;
    return PG_OK;
}

int pg_topic_steering(const pg_topic *tp) {
    return tp->active && (tp->boundary || (!tp->said && tp->n_reply < tp->cap));
}

int32_t pg_topic_steer(const pg_topic *tp, const pg_textout *o, const pg_tokenizer *t, float *logits) {
    if (!pg_topic_steering(tp)) return -1;
    if (tp->boundary) {  // the subject just came out whole: it stays a word of its own ("cache", not "cachelor")
        for (uint32_t id = 0; id < t->n_vocab; id++) {
            uint32_t a = t->offs[id];
            uint32_t e = t->offs[id + 1];
            if (a == e) continue;
            uint8_t c0 = t->bytes[a];
            int possessive = c0 == '\'' && e - a >= 2 && t->bytes[a + 1] == 's' && (e - a == 2 || !ascii_letter(t->bytes[a + 2]));
            if (ascii_letter(c0) || (c0 >= '0' && c0 <= '9') || (c0 == '\'' && !possessive)) logits[id] = -INFINITY;
        }
        return -1;
    }
    // a variant begun: force its next token (the longest begun prefix wins)
    int32_t forced = -1;
    int best = 0;
    for (int v = 0; v < tp->n_var; v++)
        for (int k = tp->var_len[v] - 1; k > best; k--) {
            if (k > tp->n_recent || (!tp->var_space[v] && !tp->recent_wb[tp->n_recent - k])) continue;
            if (memcmp(tp->recent + tp->n_recent - k, tp->var[v], (size_t)k * sizeof(int32_t)) == 0) {
                forced = tp->var[v][k];
                best = k;
                break;
            }
        }
    if (forced >= 0 && (uint32_t)forced < t->n_vocab) {
        float keep = logits[forced];
        for (uint32_t i = 0; i < t->n_vocab; i++) logits[i] = -INFINITY;
        logits[forced] = isfinite(keep) ? keep : 0.0f;
        return forced;
    }
    // invite a variant that fits after the last byte: " Word" at the reply's start or after a
    // sentence end, " word" after anything else but whitespace; "word" after an opening bracket,
    // "Word" after whitespace (never glued to a word or punctuation)
    uint8_t c = tp->last;
    int white = c == ' ' || c == '\t' || c == '\n';
    int opener = c == '(' || c == '[';
    int sentence = tp->n_reply == 0 || c == '.' || c == '!' || c == '?' || c == ':';
    float b = tp->bias + tp->slope * (float)tp->n_reply;
    int32_t biased[PG_TOPIC_MAX_VARIANTS];
    int n_biased = 0;
    for (int v = 0; v < tp->n_var; v++) {
        int32_t id = tp->var[v][0];
        uint32_t len;
        const uint8_t *bytes = pg_tokenizer_token_bytes(t, id, &len);
        int capital = bytes && len && bytes[0] >= 'A' && bytes[0] <= 'Z';
        int fits = tp->var_space[v] ? !white && capital == sentence : tp->n_reply > 0 && (white ? capital : opener);
        if (!bytes || !fits) continue;
        int seen = 0;  // two variants sharing a first token get the bias once
        for (int u = 0; u < n_biased && !seen; u++) seen = biased[u] == id;
        if (seen) continue;
        biased[n_biased++] = id;
        logits[id] += b;
    }
    // no end before the subject: end-of-text and stop-string starts stay masked (pg_textout_guard),
    // and so are tokens of nothing but spaces and tabs (a model that wants to end pads with them)
    pg_textout_guard(o, t, logits, 0x7FFFFFFF);
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        uint32_t a = t->offs[id], e = t->offs[id + 1], i = a;
        while (i < e && (t->bytes[i] == ' ' || t->bytes[i] == '\t')) i++;
        if (i == e && e > a) logits[id] = -INFINITY;
    }
    return -1;
}

// the word in progress ended: does it name the subject (chatdata.on_topic's test)?
static void topic_word_end(pg_topic *tp) {
    size_t n = tp->n_cur;
    while (n > 0 && tp->cur[n - 1] == '\'') n--;  // chatdata.words: a word ends in a letter
    if (n >= 2 && tp->cur[n - 2] == '\'' && tp->cur[n - 1] == 's') n -= 2;  // chatdata.on_topic: "dirt's" names dirt
    if (n > 0 && !tp->cur_long) {
        char st[PG_TOPIC_MAX_WORD];
        size_t wl = strlen(tp->word);
        size_t sl = pg_topic_stem(tp->cur, n, st, sizeof st);
        if ((n == wl && memcmp(tp->cur, tp->word, n) == 0) || (sl == strlen(tp->stem) && memcmp(st, tp->stem, sl) == 0))
            tp->said = 1;
    }
    tp->n_cur = 0;
    tp->cur_long = 0;
}

void pg_topic_push(pg_topic *tp, const pg_tokenizer *t, int32_t tok) {
    if (!tp->active) return;
    tp->n_reply++;
    tp->boundary = 0;
    if (tp->n_recent == PG_TOPIC_MAX_TOKS) {
        memmove(tp->recent, tp->recent + 1, (PG_TOPIC_MAX_TOKS - 1) * sizeof(int32_t));
        memmove(tp->recent_wb, tp->recent_wb + 1, PG_TOPIC_MAX_TOKS - 1);
        tp->n_recent--;
    }
    tp->recent_wb[tp->n_recent] = !ascii_letter(tp->last) && !(tp->last >= '0' && tp->last <= '9');
    tp->recent[tp->n_recent++] = tok;
    for (int v = 0; v < tp->n_var && !tp->said; v++)  // a whole variant just came out (as a word of its own)
        if (tp->var_len[v] <= tp->n_recent && (tp->var_space[v] || tp->recent_wb[tp->n_recent - tp->var_len[v]]) &&
            memcmp(tp->recent + tp->n_recent - tp->var_len[v], tp->var[v], (size_t)tp->var_len[v] * sizeof(int32_t)) == 0)
            tp->said = tp->boundary = 1;
    uint32_t len;
    const uint8_t *b = pg_tokenizer_token_bytes(t, tok, &len);
    for (uint32_t i = 0; b && i < len; i++) {
        uint8_t c = b[i];
        if (ascii_letter(c) || (c == '\'' && tp->n_cur > 0)) {
            if (tp->n_cur < PG_TOPIC_MAX_WORD - 1) tp->cur[tp->n_cur++] = (char)ascii_lower(c);
            else tp->cur_long = 1;
        } else if (tp->n_cur > 0 || tp->cur_long) {
            topic_word_end(tp);
        }
        tp->last = c;
    }
}
