// pocketgpt engine: GPT-2 byte-level BPE from the vocabulary and merges stored in the GGUF.
//
// Encoding follows the Hugging Face GPT-2 tokenizer token for token: the pre-tokenizer regex
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ is implemented by
// hand over Unicode tables generated from unicodedata (unicode_tables.h), then merges apply
// lowest rank first, leftmost on ties. Trimmed vocabularies (fewer merges) work the same way; all
// 256 byte tokens must be present. Decoding is bytes; pg_textout (textout.h) turns a token stream
// into valid UTF-8 text and cuts it at stop strings.
#ifndef PG_TOKENIZER_H
#define PG_TOKENIZER_H

#include "gguf.h"

// A merge's hash entry packs its left id (bits 0-20), right id (21-41) and its index among the
// usable merges in rank order (42-63; the index orders merges as the rank does), 8 bytes where
// four 32-bit fields took 16; empty slots are all ones. Tables are filled to at most 80 %.
#define PG_TOKENIZER_ID_BITS 21
#define PG_TOKENIZER_MAX_VOCAB ((1u << PG_TOKENIZER_ID_BITS) - 1u)             // ids fit 21 bits
#define PG_TOKENIZER_MAX_MERGES ((1u << (64 - 2 * PG_TOKENIZER_ID_BITS)) - 1u)  // indices the other 22

// Per-token classes, one byte per token, computed once at load: what a reply's guards ask of every
// token at every step (pg_textout_guard, pg_topic_steer), which scanning the vocabulary's bytes each
// step cost more than a small model's forward pass
#define PG_TOK_NEWLINE 1u   // holds a '\n' byte
#define PG_TOK_BLANK 2u     // not empty, and every byte a space or \t..\r
#define PG_TOK_SPACES 4u    // not empty, and every byte a space or a tab
#define PG_TOK_GLUES 8u     // begins with an ASCII letter or digit, or with an apostrophe that does not
                            // begin a possessive "'s" (it would glue onto the word before it)
// A whitespace byte as the reply guards count it: a space or \t..\r
static inline int pg_byte_is_blank(uint8_t b) { return b == ' ' || (b >= 0x09 && b <= 0x0D); }
typedef struct {
    uint32_t n_vocab;
    uint32_t n_merges;         // merges usable with this vocabulary
    uint32_t eos_id, bos_id;
    const uint8_t *bytes;      // (total,) raw bytes of every token, concatenated
    const uint32_t *offs;      // (n_vocab + 1,) token i is bytes[offs[i] .. offs[i+1])
    const uint32_t *tok_hash;  // (tok_mask + 1,) token ids by raw bytes, UINT32_MAX empty
    uint32_t tok_mask;
    const uint64_t *merge_hash;  // (merge_mask + 1,) packed (a, b, index) entries by (a, b)
    uint32_t merge_mask;
    const uint32_t *merge_out;   // (n_merges,) merged token id by index
    const uint8_t *cls;          // (n_vocab,) PG_TOK_* bits of each token
    uint32_t byte_token[256];  // token of each single byte
} pg_tokenizer;

// Build the tables from g's tokenizer.ggml.* arrays inside arena memory. With a counting arena
// (base NULL) only validates and counts. n_vocab_expected is the embedding's row count.
pg_code pg_tokenizer_init(pg_tokenizer *t, const pg_gguf *g, uint32_t n_vocab_expected, pg_arena *a, pg_status *st);

// Scratch bytes pg_tokenizer_encode needs for an input of n bytes.
size_t pg_tokenizer_scratch_size(size_t n);
// text (n bytes, any bytes; invalid UTF-8 is tolerated) -> ids (at most n ids are produced).
// parse_special: the end-of-text token's text maps to its id, as in Hugging Face.
pg_code pg_tokenizer_encode(const pg_tokenizer *t, const uint8_t *text, size_t n, int parse_special, int32_t *ids,
                            size_t cap, size_t *n_ids, void *scratch, size_t scratch_size, pg_status *st);
// Raw bytes of a token (*len 0 for an id out of range).
const uint8_t *pg_tokenizer_token_bytes(const pg_tokenizer *t, int32_t id, uint32_t *len);

// Whether a code point is a letter or a number (\p{L}, \p{N}: what makes a word of a reply).
int pg_unicode_is_word(uint32_t cp);
// Whether a code point separates words: Python's str.isspace (what str.split splits on). A reply's
// words are its runs of non-separators that hold at least one letter or number, one definition for
// the engine's guard, firmware/app/chat.c and host/pocketgpt/chat_format.count_words: "<Everf
// Wis_Our/T>" is two words, "a - b" two, "42 cats" two.
int pg_unicode_is_word_sep(uint32_t cp);
// Words (as above) in text[0..n) (UTF-8; an invalid byte separates nothing and is no letter).
int pg_unicode_count_words(const uint8_t *text, size_t n);

#endif
