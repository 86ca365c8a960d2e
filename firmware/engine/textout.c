// pocketgpt engine: streaming text out (valid UTF-8, stop strings), the reply guard and subject
// steering, over the tokenizer's tokens (textout.h).
#include "textout.h"

#include <math.h>
#include <string.h>

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
    int only_nl = 1;  // every stop string begins with a newline (the chat template's): the class table answers
    for (int s = 0; s < o->n_stop; s++) {
        first[o->stop[s][0]] = 1;
        only_nl &= o->stop[s][0] == '\n';
    }
    if (only_nl) {
        uint8_t want = (uint8_t)((o->n_stop ? PG_TOK_NEWLINE : 0u) | (no_blank ? PG_TOK_BLANK : 0u));
        for (uint32_t id = 0; id < t->n_vocab; id++)
            if ((t->cls[id] & want) && id != t->eos_id) {
                logits[id] = -INFINITY;
                masked++;
            }
        return masked;
    }
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        if (id == t->eos_id) continue;
        uint32_t a = t->offs[id], b = t->offs[id + 1];
        int mask = no_blank && b > a;  // a whitespace-only token, until a byte says otherwise
        for (uint32_t i = a; i < b; i++) {
            if (first[t->bytes[i]]) {  // holds a stop string's first byte
                mask = 1;
                break;
            }
            if (!pg_byte_is_blank(t->bytes[i])) mask = 0;
        }
        if (mask) {
            logits[id] = -INFINITY;
            masked++;
        }
    }
    return masked;
}

// ---- subject steering (see textout.h) ----

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
        for (uint32_t id = 0; id < t->n_vocab; id++)
            if (t->cls[id] & PG_TOK_GLUES) logits[id] = -INFINITY;
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
    for (uint32_t id = 0; id < t->n_vocab; id++)
        if (t->cls[id] & PG_TOK_SPACES) logits[id] = -INFINITY;
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
