// pocketgpt engine: GPT-2 byte-level BPE tokenizer (streaming text out, the reply guard and subject
// steering are in textout.c).
#include "tokenizer.h"

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

// PG_TOK_* bits of a token's raw bytes b[0..n)
static uint8_t token_class(const uint8_t *b, uint32_t n) {
    if (n == 0) return 0;
    uint8_t c = 0, blank = 1, spaces = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (b[i] == '\n') c |= PG_TOK_NEWLINE;
        if (!pg_byte_is_blank(b[i])) blank = 0;
        if (b[i] != ' ' && b[i] != '\t') spaces = 0;
    }
    uint8_t c0 = b[0];
    int letter = (c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z');
    int possessive = c0 == '\'' && n >= 2 && b[1] == 's' &&
                     (n == 2 || !((b[2] >= 'a' && b[2] <= 'z') || (b[2] >= 'A' && b[2] <= 'Z')));
    if (letter || (c0 >= '0' && c0 <= '9') || (c0 == '\'' && !possessive)) c |= PG_TOK_GLUES;
    if (blank) c |= PG_TOK_BLANK;
    if (spaces) c |= PG_TOK_SPACES;
    return c;
}

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
    uint8_t *cls = pg_arena_take(a, t->n_vocab, 1);
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
        cls[i] = token_class(bytes + pos, n);
        pos += n;
    }
    t->cls = cls;
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

// ---- words (what the reply guard counts, textout.c) -----------------------------------------

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
