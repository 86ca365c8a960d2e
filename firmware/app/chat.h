// pocketgpt app: the chat layout and the shape of a reply, the C twin of host/pocketgpt/chat_format.py.
//
// A request becomes "Q: <request>\nA:" (the request trimmed of the whitespace Python's str.strip
// removes), the layout both shipped models are trained on and store as tokenizer.chat_template. A
// reply goes out sentence by sentence; at its end a reply cut by max_tokens is cut back to its last
// sentence end when it has one and 3 words remain, and a reply without a word becomes
// PG_CHAT_EMPTY_REPLY. Both sides are tested on docs/chat_vectors.json.
#ifndef PG_CHAT_H
#define PG_CHAT_H

#include <stddef.h>
#include <stdint.h>

#define PG_CHAT_STOP "\nQ:"   // the model starting the next request line ends a reply
#define PG_CHAT_EMPTY_REPLY "Sorry, I have no answer to that."
#define PG_CHAT_MIN_WORDS 3   // a reply cannot end (end-of-text, a stop string) before this many words

// The request text[0..n) trimmed: *start and *len of the part between leading and trailing whitespace.
void pg_chat_trim(const char *text, size_t n, size_t *start, size_t *len);
// "Q: <trimmed text>\nA:" into out (NUL-terminated). Returns its length, or -1 when cap is too small.
long pg_chat_prompt(const char *text, size_t n, char *out, size_t cap);

// A reply being shown. buf (cap bytes) holds the text after the last sentence end.
typedef struct {
    char *buf;
    size_t cap, n;
    size_t n_sent;  // bytes released so far
    int spoke;      // released text had a word
    int n_words;    // words released so far (pg_unicode_is_word_sep: whitespace-separated, with a letter or number)
    int counted;    // the last released character's run of non-space characters was counted
} pg_reply;

#define PG_REPLY_OUT(cap) ((cap) + sizeof PG_CHAT_EMPTY_REPLY + 1)  // bytes an out buffer needs

void pg_reply_init(pg_reply *r, char *buf, size_t cap);
// Add a piece of the reply; writes the text to show now (whole sentences) to out and returns its
// length. A piece that would overflow buf releases what was held instead (a sentence longer than
// buf is shown in parts).
size_t pg_reply_feed(pg_reply *r, const char *piece, size_t n, char *out);
// The end of the reply: cut_by_length when max_tokens (or the context) ended it, aborted when the
// user did. A cut reply drops its unfinished last sentence only when what went out already has
// PG_CHAT_MIN_WORDS words (a cut-back never makes a reply shorter than that). Writes the rest to show to out (PG_CHAT_EMPTY_REPLY, after a space when text went out
// before, for a reply without a word that was not aborted) and returns its length.
size_t pg_reply_finish(pg_reply *r, int cut_by_length, int aborted, char *out);

// What a request asks about (chat_format.subject_of): the last word of 3 to PG_CHAT_SUBJECT_MAX
// ASCII letters that is not a stop or chat-intent word, lower case, a trailing 's dropped, into
// out (NUL-terminated; cap >= PG_CHAT_SUBJECT_MAX + 1). Returns its length, 0 for none (small talk:
// no steering).
#define PG_CHAT_SUBJECT_MAX 31
size_t pg_chat_subject(const char *text, size_t n, char *out, size_t cap);

#endif
