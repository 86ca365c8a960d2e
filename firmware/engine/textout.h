// pocketgpt engine: a token stream turned into text. pg_textout releases valid UTF-8 and cuts it
// at stop strings; pg_textout_guard keeps a reply from ending before it says anything; pg_topic
// steers a chat reply towards its subject. All work over the tokenizer's tokens (tokenizer.h).
#ifndef PG_TEXTOUT_H
#define PG_TEXTOUT_H

#include "tokenizer.h"

#define PG_TEXTOUT_MAX_STOPS 8
#define PG_TEXTOUT_MAX_STOP_LEN 255
#define PG_TEXTOUT_HOLD 1024

// Streaming detokenizer: bytes in, complete valid UTF-8 out (U+FFFD for invalid sequences, as
// Python's errors="replace"), held back while the tail could still become a stop string.
typedef struct {
    uint8_t pend[4];
    int n_pend, need;
    uint8_t hold[PG_TEXTOUT_HOLD];
    size_t n_hold;
    const uint8_t *stop[PG_TEXTOUT_MAX_STOPS];
    size_t stop_len[PG_TEXTOUT_MAX_STOPS];
    int n_stop;
    int stopped;  // a stop string was seen: nothing more is released
    int n_words;  // words that have come through (pg_unicode_is_word_sep: whitespace-separated runs with a letter or number)
    int counted;  // the run of non-space characters the last character belongs to was counted
    int after_text;  // the last character that came through was not a separator (0 before any)
} pg_textout;

pg_code pg_textout_init(pg_textout *o, const uint8_t *const *stops, const size_t *stop_lens, int n_stops, pg_status *st);
// Out buffer needs 3 * n + PG_TEXTOUT_HOLD bytes. Returns 1 when a stop string completed.
int pg_textout_push(pg_textout *o, const uint8_t *in, size_t n, uint8_t *out, size_t *n_out);
// End of stream: release what was held (pending partial character becomes U+FFFD).
void pg_textout_flush(pg_textout *o, uint8_t *out, size_t *n_out);
// A reply's guard against ending before it says anything: until min_words words have come through
// o, make end-of-text and every token holding the first byte of one of o's stop strings
// unsampleable (logits (n_vocab,) set to -inf), and, while the text so far is empty or ends in
// whitespace, every token of whitespace only (a model that wants to end pads with spaces instead:
// 64 tokens of " " was a reply). A stop string then cannot begin before those words, and the
// sampler (greedy or not) picks among the rest. Returns the number of tokens masked (0 once the
// words have been seen).
int32_t pg_textout_guard(const pg_textout *o, const pg_tokenizer *t, float *logits, int min_words);

// Subject steering for a chat reply (lexically constrained decoding): a reply that has not yet
// named the request's subject is pushed towards it. Built from the subject word (ASCII letters,
// lower case: pg_chat_subject on the device, chat_format.subject_of in Python) as the token
// sequences of its variants " word", " Word", "word", "Word". Before each token (pg_topic_steer):
// when the reply's last tokens are a proper prefix of a variant's sequence, that variant's next
// token is forced (every other logit -inf); else the first token of each variant that fits after
// the reply's last byte gets a bias of bias + slope * (reply tokens so far), and end-of-text and
// the tokens starting a stop string stay masked (pg_textout_guard). Once the reply names the
// subject (a whole variant emitted, or a word of the same crude stem as chatdata.stem: dogs/dog,
// loving/love), or after cap reply tokens, it does nothing: plain sampling, the reply ends freely;
// except that right after a whole variant the next token cannot start with a letter, a digit or
// an apostrophe other than "'s", so the subject stays a word ("cache." rather than "cachelorance").
// A variant without a space counts (is completed, or said) only where it starts a word.
// Deterministic: the forced token and the biased logits go through the sampler as usual.
#define PG_TOPIC_MAX_VARIANTS 4
#define PG_TOPIC_MAX_TOKS 8
#define PG_TOPIC_MAX_WORD 32
#define PG_TOPIC_BIAS 2.0f    // bias on a variant's first token at the reply's start (logit units)
#define PG_TOPIC_SLOPE 0.5f   // added per reply token
#define PG_TOPIC_CAP 48       // reply tokens after which steering gives up

typedef struct {
    int active;  // a subject was given and steering has not ended
    int said;    // the reply named the subject
    int boundary; // a variant just came out whole: the next token may not glue a letter to it
    int n_reply; // reply tokens seen (pg_topic_push)
    int n_var;
    int32_t var[PG_TOPIC_MAX_VARIANTS][PG_TOPIC_MAX_TOKS];
    int var_len[PG_TOPIC_MAX_VARIANTS];
    int var_space[PG_TOPIC_MAX_VARIANTS];  // the variant starts with a space
    int32_t recent[PG_TOPIC_MAX_TOKS];     // the reply's last tokens, oldest first
    uint8_t recent_wb[PG_TOPIC_MAX_TOKS];  // each came after a word boundary (not a letter or digit)
    int n_recent;
    char word[PG_TOPIC_MAX_WORD], stem[PG_TOPIC_MAX_WORD];
    char cur[PG_TOPIC_MAX_WORD];  // the reply's word in progress, lower case
    size_t n_cur;
    int cur_long;                 // it overflowed cur (cannot match)
    uint8_t last;                 // the reply's last byte (0 at its start)
    float bias, slope;
    int cap;
} pg_topic;

// A steering state for subject[0..n). An empty subject, or one that is not 1 to
// PG_TOPIC_MAX_WORD - 1 ASCII letters, makes an inactive state (no steering; PG_OK). bias, slope
// and cap: see above (PG_TOPIC_BIAS, PG_TOPIC_SLOPE, PG_TOPIC_CAP). Encodes on ~1.3 KB of stack.
pg_code pg_topic_init(pg_topic *tp, const pg_tokenizer *t, const char *subject, size_t n, float bias, float slope,
                      int cap, pg_status *st);
// Before sampling a reply token: steer logits (n_vocab,) in place. Returns the forced token, or -1.
int32_t pg_topic_steer(const pg_topic *tp, const pg_textout *o, const pg_tokenizer *t, float *logits);
// After a reply token was chosen: note it (its bytes, whether the subject is now named).
void pg_topic_push(pg_topic *tp, const pg_tokenizer *t, int32_t tok);
// Whether steering still acts on the next token (a subject, not yet said, cap not reached).
int pg_topic_steering(const pg_topic *tp);
// chatdata.stem: the crude English stem of a lower-case ASCII word w[0..n) into out (cap bytes,
// NUL-terminated); returns its length.
size_t pg_topic_stem(const char *w, size_t n, char *out, size_t cap);

#endif
