// C unit tests of the engine's text out (textout.c): the streaming detokenizer and its stop
// strings, the word count, the reply guard and subject steering. Part of the test_engine program
// (test_engine.c has main and the model it loads).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_test.h"
#include "gpt2.h"
#include "sampler.h"
#include "tokenizer.h"

void test_textout(void) {
    pg_textout o;
    uint8_t out[4096];
    size_t n;
    const uint8_t *stops[1] = {(const uint8_t *)"END"};
    size_t lens[1] = {3};
    CHECK(pg_textout_init(&o, stops, lens, 1, NULL) == PG_OK);
    CHECK(pg_textout_push(&o, (const uint8_t *)"ab E", 4, out, &n) == 0 && n == 3 && memcmp(out, "ab ", 3) == 0);
    CHECK(pg_textout_push(&o, (const uint8_t *)"\xE2\x82", 2, out, &n) == 0 && n == 0);  // "E" held, euro incomplete
    CHECK(pg_textout_push(&o, (const uint8_t *)"\xAC" "EN", 3, out, &n) == 0 && n == 4 &&
          memcmp(out, "E\xE2\x82\xAC", 4) == 0);
    CHECK(pg_textout_push(&o, (const uint8_t *)"Dx", 2, out, &n) == 1 && n == 0);
    CHECK(o.stopped);
    pg_status st;
    size_t big = 1000;
    CHECK(pg_textout_init(&o, stops, &big, 1, &st) == PG_ERR_ARG);
    CHECK(pg_textout_init(&o, NULL, NULL, 0, NULL) == PG_OK);
    CHECK(pg_textout_push(&o, (const uint8_t *)"\xFF" "a\xC3", 3, out, &n) == 0 && n == 4 &&
          memcmp(out, "\xEF\xBF\xBD" "a", 4) == 0);
    pg_textout_flush(&o, out, &n);
    CHECK(n == 3 && memcmp(out, "\xEF\xBF\xBD", 3) == 0);
}

// A reply's words are whitespace-separated runs with a letter or number, as bench/chat.py's answered
// test and chat_format.count_words count them: "<Everf Wis_Our/T>" is 2 words, so the reply guard
// (min 3) still holds end-of-text back after it.
void test_textout_words(void) {
    pg_textout o;
    uint8_t out[256];
    size_t n;
    CHECK(pg_textout_init(&o, NULL, NULL, 0, NULL) == PG_OK);
    const char *pieces[] = {" <Ever", "f W", "is_", "Our/", "T>"};
    for (int i = 0; i < 5; i++) pg_textout_push(&o, (const uint8_t *)pieces[i], strlen(pieces[i]), out, &n);
    CHECK(o.n_words == 2);
    pg_textout_push(&o, (const uint8_t *)"\xE3\x80\x80ok\x1C-\xC2", 7, out, &n);  // U+3000 ok U+001C - (U+00A0 split)
    CHECK(o.n_words == 3);
    pg_textout_push(&o, (const uint8_t *)"\xA0" "42", 3, out, &n);
    CHECK(o.n_words == 4);
    const char *t = "a - b ... 42 cats \xE2\x80\xA8x\xFFy";
    CHECK(pg_unicode_count_words((const uint8_t *)t, strlen(t)) == 5);  // a b 42 cats x<FF>y
    CHECK(pg_unicode_count_words((const uint8_t *)"!? \xF0\x9F\x98\x80", 7) == 0);
    CHECK(pg_unicode_is_word_sep(0x1F) && pg_unicode_is_word_sep(0x3000) && !pg_unicode_is_word_sep('_') &&
          !pg_unicode_is_word_sep(0x200B));
}

// Greedy reply from end-of-text alone, steered to subject (NULL: pg_topic_steer never called).
// Writes the reply's bytes (NUL-terminated) and its tokens; returns the number of tokens.
static int topic_reply(const pg_model *m, const char *subject, float bias, float slope, int cap, char *text,
                       size_t text_cap, int32_t *toks, int *said) {
    pg_status st;
    int32_t T = (int32_t)m->cfg.n_ctx;
    size_t need;
    CHECK(pg_state_mem_size(m, T, 4, &need, &st) == PG_OK);
    void *mem = malloc(need);
    pg_state s;
    CHECK(pg_state_init(&s, m, T, 4, mem, need, &st) == PG_OK);
    pg_topic tp;
    CHECK(pg_topic_init(&tp, &m->tok, subject ? subject : "", subject ? strlen(subject) : 0, bias, slope, cap, &st) ==
          PG_OK);
    pg_textout o;
    pg_textout_init(&o, NULL, NULL, 0, &st);
    pg_sampler_params p;
    pg_sampler_defaults(&p);
    p.greedy = 1;
    float *probs = malloc(m->cfg.n_vocab * sizeof(float));
    int32_t *cand = malloc(m->cfg.n_vocab * sizeof(int32_t));
    pg_rng rng;
    pg_rng_seed(&rng, 1);
    int32_t hist[64] = {(int32_t)m->tok.eos_id};
    int n = 1;
    size_t nt = 0;
    CHECK(pg_state_eval(&s, hist, 1, NULL, &st) == PG_OK);
    while (n < T && n < 64) {
        if (subject) pg_topic_steer(&tp, &o, &m->tok, s.logits);
        int32_t tok = pg_sample(s.logits, (int32_t)m->cfg.n_vocab, &p, hist, n, &rng, probs, cand);
        if ((uint32_t)tok == m->tok.eos_id) break;
        toks[n - 1] = tok;
        hist[n++] = tok;
        pg_topic_push(&tp, &m->tok, tok);
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(&m->tok, tok, &len);
        if (nt + len < text_cap) {
            memcpy(text + nt, b, len);
            nt += len;
        }
        if (n < T) CHECK(pg_state_eval(&s, &tok, 1, NULL, &st) == PG_OK);
    }
    text[nt] = 0;
    *said = tp.said;
    free(probs);
    free(cand);
    free(mem);
    return n - 1;
}

// Subject steering: a steered reply names its subject (and a word begun is finished); without a
// subject, or with an empty one, the reply is exactly the unsteered one; the end of text stays
// masked while steering and is free once steering gives up (cap).
void test_topic(const pg_model *m) {
    char plain[512], none[512], steered[512];
    int32_t t_plain[64], t_none[64], t_steered[64];
    int said;
    int n_plain = topic_reply(m, NULL, 0, 0, 0, plain, sizeof plain, t_plain, &said);
    int n_none = topic_reply(m, "", PG_TOPIC_BIAS, PG_TOPIC_SLOPE, PG_TOPIC_CAP, none, sizeof none, t_none, &said);
    CHECK(n_none == n_plain && memcmp(t_none, t_plain, (size_t)n_plain * sizeof(int32_t)) == 0 && !said);
    int n_st = topic_reply(m, "cab", 8.0f, 2.0f, PG_TOPIC_CAP, steered, sizeof steered, t_steered, &said);
    CHECK(said && n_st > 0);
    CHECK(strstr(steered, "cab") || strstr(steered, "Cab"));
    if (!said) fprintf(stderr, "steered reply without its subject: '%s'\n", steered);
    // the state: variants, masking, forcing, giving up
    pg_status st;
    pg_topic tp;
    CHECK(pg_topic_init(&tp, &m->tok, "cab", 3, 1.0f, 0.0f, 2, &st) == PG_OK && tp.active && tp.n_var >= 2);
    CHECK(pg_topic_init(&tp, &m->tok, "c4b", 3, 1.0f, 0.0f, 2, &st) == PG_OK && !tp.active);  // letters only
    pg_textout o;
    pg_textout_init(&o, NULL, NULL, 0, &st);
    float *lg = malloc(m->cfg.n_vocab * sizeof(float)), *before = malloc(m->cfg.n_vocab * sizeof(float));
    for (uint32_t v = 0; v < m->cfg.n_vocab; v++) lg[v] = before[v] = 0.01f * (float)(v % 17);
    pg_topic_init(&tp, &m->tok, "", 0, 1.0f, 0.0f, 2, &st);
    CHECK(pg_topic_steer(&tp, &o, &m->tok, lg) == -1 && memcmp(lg, before, m->cfg.n_vocab * sizeof(float)) == 0);
    pg_topic_init(&tp, &m->tok, "cab", 3, 1.0f, 0.0f, 2, &st);
    CHECK(pg_topic_steer(&tp, &o, &m->tok, lg) == -1 && isinf(lg[m->tok.eos_id]));  // no end before the subject
    int v2 = -1;  // a variant of two tokens or more: its first token forces the second
    for (int v = 0; v < tp.n_var && v2 < 0; v++)
        if (tp.var_len[v] >= 2) v2 = v;
    if (v2 >= 0) {
        pg_topic_push(&tp, &m->tok, tp.var[v2][0]);
        memcpy(lg, before, m->cfg.n_vocab * sizeof(float));
        CHECK(pg_topic_steer(&tp, &o, &m->tok, lg) == tp.var[v2][1]);
        int finite = 0;
        for (uint32_t v = 0; v < m->cfg.n_vocab; v++) finite += !isinf(lg[v]);
        CHECK(finite == 1 && !isinf(lg[tp.var[v2][1]]));
    }
    pg_topic_init(&tp, &m->tok, "cab", 3, 1.0f, 0.0f, 2, &st);
    int32_t other = (int32_t)m->tok.byte_token['z'];
    pg_topic_push(&tp, &m->tok, other);
    pg_topic_push(&tp, &m->tok, other);  // cap 2 reached without the subject: steering gives up
    memcpy(lg, before, m->cfg.n_vocab * sizeof(float));
    CHECK(!pg_topic_steering(&tp) && pg_topic_steer(&tp, &o, &m->tok, lg) == -1 &&
          memcmp(lg, before, m->cfg.n_vocab * sizeof(float)) == 0);
    char stem[32];
    CHECK(pg_topic_stem("loving", 6, stem, sizeof stem) == 3 && strcmp(stem, "lov") == 0);
    CHECK(pg_topic_stem("dogs", 4, stem, sizeof stem) == 3 && strcmp(stem, "dog") == 0);
    free(lg);
    free(before);
}

// the id of the token whose bytes are exactly s (-1 when the vocabulary has none)
static int32_t token_of(const pg_tokenizer *t, const char *s) {
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(t, (int32_t)id, &len);
        if (len == strlen(s) && memcmp(b, s, len) == 0) return (int32_t)id;
    }
    return -1;
}

// What pg_textout_guard must mask with the stop strings' first bytes `first` (a 256-entry table),
// from the tokens' bytes: end-of-text, every token holding one of those bytes, and with no_blank
// every token of nothing but whitespace. 1 when logits (after the guard) masked exactly those.
static int guard_masked_as_defined(const pg_tokenizer *t, const float *logits, const uint8_t *first, int no_blank) {
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(t, (int32_t)id, &len);
        int hit = 0, blank = len > 0;
        for (uint32_t i = 0; i < len; i++) {
            hit |= first[b[i]];
            blank &= b[i] == ' ' || (b[i] >= 0x09 && b[i] <= 0x0D);
        }
        int want = id == t->eos_id || hit || (no_blank && blank);
        if (want != (isinf(logits[id]) != 0)) return 0;
    }
    return 1;
}

// Every vocabulary token, both paths of the guard (stop strings that begin with a newline take the
// per-token class table, others scan the bytes), before and after the first text: exactly the
// tokens the definition names are masked
void test_guard_masks(const pg_model *m) {
    const pg_tokenizer *t = &m->tok;
    float *logits = malloc(t->n_vocab * sizeof(float));
    const char *sets[3][2] = {{"\nQ:", "\nUser"}, {"Q:", "\n"}, {NULL, NULL}};
    for (int k = 0; k < 3; k++) {
        const uint8_t *stops[2];
        size_t lens[2], n;
        int n_stop = 0;
        uint8_t first[256] = {0}, out[64];
        for (int j = 0; j < 2 && sets[k][j]; j++) {
            stops[n_stop] = (const uint8_t *)sets[k][j];
            lens[n_stop++] = strlen(sets[k][j]);
            first[(uint8_t)sets[k][j][0]] = 1;
        }
        pg_textout o;
        CHECK(pg_textout_init(&o, stops, lens, n_stop, NULL) == PG_OK);
        for (int step = 0; step < 2; step++) {  // before any text (no blank run allowed), then after a word
            memset(logits, 0, t->n_vocab * sizeof(float));
            pg_textout_guard(&o, t, logits, 3);
            CHECK(guard_masked_as_defined(t, logits, first, !o.after_text));
            pg_textout_push(&o, (const uint8_t *)"Hi", 2, out, &n);
        }
    }
    free(logits);
}

// The reply guard: no end-of-text, no stop string and no run of whitespace tokens before 3 words
// ("<Everf Wis_Our/T>" is 2); then nothing is masked.
void test_reply_guard(const pg_model *m) {
    const pg_tokenizer *t = &m->tok;
    int32_t sp = token_of(t, " "), nl = token_of(t, "\n"), a = token_of(t, "a"), lt = token_of(t, "<");
    CHECK(sp >= 0 && nl >= 0 && a >= 0 && lt >= 0);
    if (sp < 0 || nl < 0 || a < 0 || lt < 0) return;
    float *logits = malloc(t->n_vocab * sizeof(float));
    const uint8_t *stops[1] = {(const uint8_t *)"\nQ:"};
    size_t lens[1] = {3}, n;
    uint8_t out[256];
    pg_textout o;
    CHECK(pg_textout_init(&o, stops, lens, 1, NULL) == PG_OK);
#define GUARD() (memset(logits, 0, t->n_vocab * sizeof(float)), pg_textout_guard(&o, t, logits, 3))
    CHECK(GUARD() > 2 && isinf(logits[t->eos_id]) && isinf(logits[nl]) && isinf(logits[sp]) &&  // nothing yet
          logits[a] == 0.0f && logits[lt] == 0.0f);
    pg_textout_push(&o, (const uint8_t *)" <Everf", 7, out, &n);
    CHECK(GUARD() > 1 && isinf(logits[t->eos_id]) && isinf(logits[nl]) && logits[sp] == 0.0f);  // one space may follow
    pg_textout_push(&o, (const uint8_t *)" ", 1, out, &n);
    CHECK(GUARD() > 2 && isinf(logits[sp]) && logits[a] == 0.0f);  // not a second one
    pg_textout_push(&o, (const uint8_t *)"Wis_Our/T>", 10, out, &n);
    CHECK(o.n_words == 2 && GUARD() > 1 && isinf(logits[t->eos_id]));
    pg_textout_push(&o, (const uint8_t *)" a", 2, out, &n);
    CHECK(o.n_words == 3 && GUARD() == 0 && logits[t->eos_id] == 0.0f && logits[nl] == 0.0f && logits[sp] == 0.0f);
#undef GUARD
    free(logits);
}
