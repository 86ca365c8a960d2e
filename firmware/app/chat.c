// pocketgpt app: chat layout and reply shaping (see chat.h; mirrors host/pocketgpt/chat_format.py).
#include "chat.h"

#include <string.h>

#include "tokenizer.h"

// One code point at s[i..n): its value and byte length (an invalid byte counts as U+FFFD, 1 byte).
static uint32_t next_cp(const char *s, size_t i, size_t n, size_t *len) {
    const uint8_t *u = (const uint8_t *)s + i;
    size_t left = n - i;
    uint8_t c = u[0];
    size_t k = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    if (k == 0 || k > left) {
        *len = 1;
        return 0xFFFD;
    }
    uint32_t v = k == 1 ? c : k == 2 ? (uint32_t)(c & 0x1F) : k == 3 ? (uint32_t)(c & 0x0F) : (uint32_t)(c & 0x07);
    for (size_t j = 1; j < k; j++) {
        if ((u[j] & 0xC0) != 0x80) {
            *len = 1;
            return 0xFFFD;
        }
        v = v << 6 | (u[j] & 0x3F);
    }
    *len = k;
    return v;
}

// Python's str.isspace (what str.strip and Jinja's trim remove, and what separates a reply's words)
static int is_space(uint32_t cp) { return pg_unicode_is_word_sep(cp); }

static int is_terminal(uint32_t cp) { return cp == '.' || cp == '!' || cp == '?'; }

static int is_closer(uint32_t cp) {
    return cp == '"' || cp == '\'' || cp == ')' || cp == ']' || cp == '}' || cp == 0x201D || cp == 0x2019;
}

static int has_word(const char *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k)
        if (pg_unicode_is_word(next_cp(s, i, n, &k))) return 1;
    return 0;
}

// byte offset of the first non-space character from i
static size_t skip_space(const char *s, size_t i, size_t n) {
    size_t k;
    while (i < n && is_space(next_cp(s, i, n, &k))) i += k;
    return i;
}

void pg_chat_trim(const char *text, size_t n, size_t *start, size_t *len) {
    size_t a = skip_space(text, 0, n), end = a, k;
    for (size_t i = a; i < n; i += k)
        if (!is_space(next_cp(text, i, n, &k))) end = i + k;
    *start = a;
    *len = end - a;
}

long pg_chat_prompt(const char *text, size_t n, char *out, size_t cap) {
    size_t a, len;
    pg_chat_trim(text, n, &a, &len);
    if (len + 7 > cap) return -1;
    memcpy(out, "Q: ", 3);
    memcpy(out + 3, text + a, len);
    memcpy(out + 3 + len, "\nA:", 4);  // with the NUL
    return (long)(len + 6);
}

// Offsets just after the sentence ends in s[0..n) (as chat_format._sentence_ends): the last one
// before n (*last, 0 when none) and whether one ends exactly at n (*at_end).
static void sentence_ends(const char *s, size_t n, size_t *last, int *at_end) {
    size_t i = 0, k;
    *last = 0;
    *at_end = 0;
    while (i < n) {
        uint32_t cp = next_cp(s, i, n, &k);
        if (!is_terminal(cp)) {
            i += k;
            continue;
        }
        size_t j = i + k;
        while (j < n && is_terminal(next_cp(s, j, n, &k))) j += k;
        while (j < n && is_closer(next_cp(s, j, n, &k))) j += k;
        if (j == n) *at_end = 1;
        else if (is_space(next_cp(s, j, n, &k))) *last = j;
        i = j;
    }
}

void pg_reply_init(pg_reply *r, char *buf, size_t cap) {
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->cap = cap;
}

// Count the words of released text s[0..n), continuing the run the last release ended in.
static void count_released(pg_reply *r, const char *s, size_t n) {
    for (size_t i = 0, k; i < n; i += k) {
        uint32_t cp = next_cp(s, i, n, &k);
        if (is_space(cp)) {
            r->counted = 0;
        } else if (!r->counted && pg_unicode_is_word(cp)) {
            r->n_words++;
            r->counted = 1;
        }
    }
}

// Copy buf[from..to) to out (left-trimmed while nothing went out yet), drop buf[0..drop).
static size_t emit(pg_reply *r, size_t to, size_t drop, char *out) {
    size_t from = r->n_sent ? 0 : skip_space(r->buf, 0, to);
    size_t n = to - from;
    memcpy(out, r->buf + from, n);
    r->n_sent += n;
    if (has_word(out, n)) r->spoke = 1;
    count_released(r, out, n);
    memmove(r->buf, r->buf + drop, r->n - drop);
    r->n -= drop;
    return n;
}

size_t pg_reply_feed(pg_reply *r, const char *piece, size_t n, char *out) {
    if (r->n + n > r->cap) {  // longer than a sentence may be here: show what is held, keep the piece
        size_t k = emit(r, r->n, r->n, out);
        if (n > r->cap) n = r->cap;
        memcpy(r->buf, piece, n);
        r->n = n;
        return k;
    }
    memcpy(r->buf + r->n, piece, n);
    r->n += n;
    size_t last;
    int at_end;
    sentence_ends(r->buf, r->n, &last, &at_end);
    if (!last || (!r->spoke && !has_word(r->buf, last))) return 0;  // nothing with a word yet: hold it
    return emit(r, last, last, out);
}

size_t pg_reply_finish(pg_reply *r, int cut_by_length, int aborted, char *out) {
    size_t n = r->n, last, k;
    int at_end;
    sentence_ends(r->buf, n, &last, &at_end);
    // drop the unfinished sentence, unless the reply would then be shorter than PG_CHAT_MIN_WORDS words
    if (cut_by_length && r->spoke && !at_end && !last && r->n_words >= PG_CHAT_MIN_WORDS) n = 0;
    size_t from = r->n_sent ? 0 : skip_space(r->buf, 0, n), end = from;
    for (size_t i = from; i < n; i += k)  // right-trim
        if (!is_space(next_cp(r->buf, i, n, &k))) end = i + k;
    r->n = 0;
    if (!r->spoke && !has_word(r->buf + from, end - from) && !aborted) {
        static const char empty[] = " " PG_CHAT_EMPTY_REPLY;
        const char *e = r->n_sent ? empty : empty + 1;
        size_t len = strlen(e);
        memcpy(out, e, len);
        return len;
    }
    memcpy(out, r->buf + from, end - from);
    r->n_sent += end - from;
    if (has_word(out, end - from)) r->spoke = 1;
    count_released(r, out, end - from);
    return end - from;
}

// ---- the subject of a request (chat_format.subject_of) ----

// chat_format.SUBJECT_STOP, sorted (tests/test_chat_format.py checks the two lists are equal)
static const char *const s_subject_stop[] = {
    "a", "able", "about", "above", "across", "advice", "advise", "after", "afternoon", "again", "against", "all",
    "almost", "alone", "along", "already", "also", "although", "always", "am", "among", "an", "and", "another", "any",
    "anybody", "anyone", "anything", "anywhere", "are", "aren't", "around", "as", "ask", "asked", "asking", "at",
    "away", "back", "bad", "be", "became", "because", "become", "becomes", "been", "before", "being", "below",
    "between", "big", "bored", "bot", "both", "but", "by", "bye", "call", "came", "can", "can't", "cannot", "cheer",
    "come", "could", "couldn't", "deal", "describe", "did", "didn't", "do", "does", "doesn't", "doing", "don't",
    "done", "down", "during", "each", "eight", "either", "else", "enough", "even", "evening", "ever", "every",
    "everybody", "everyone", "everything", "explain", "fact", "facts", "feel", "feeling", "felt", "few", "find",
    "first", "five", "for", "four", "from", "fun", "funny", "further", "gave", "gee", "get", "gets", "getting",
    "give", "given", "gives", "go", "goes", "going", "gone", "good", "goodbye", "got", "great", "had", "hadn't",
    "has", "hasn't", "have", "haven't", "having", "he", "he'd", "he'll", "he's", "hear", "heard", "hello", "help",
    "her", "here", "here's", "hers", "herself", "hey", "hi", "him", "himself", "his", "hiya", "hmm", "how", "how's",
    "howdy", "however", "humor", "humorous", "humour", "i", "i'd", "i'll", "i'm", "i've", "idea", "ideas", "if", "in",
    "info", "information", "into", "is", "isn't", "it", "it's", "its", "itself", "joke", "jokes", "joking", "just",
    "keep", "know", "knows", "last", "laugh", "laughs", "learn", "least", "less", "let", "let's", "like", "likely",
    "little", "look", "lot", "lots", "made", "make", "makes", "many", "may", "maybe", "me", "mean", "means", "might",
    "mine", "more", "morning", "most", "much", "must", "mustn't", "my", "myself", "name", "near", "need", "never",
    "new", "next", "nice", "nine", "no", "nobody", "none", "nor", "not", "nothing", "now", "of", "off", "often", "oh",
    "ok", "okay", "on", "once", "one", "ones", "only", "onto", "opinion", "opinions", "or", "other", "others",
    "otherwise", "ought", "our", "ours", "ourselves", "out", "over", "own", "per", "perhaps", "please", "put",
    "quite", "quotation", "quotations", "quote", "quotes", "rather", "really", "robot", "said", "same", "say",
    "saying", "sayings", "says", "second", "see", "seem", "seemed", "seems", "seven", "several", "shall", "shan't",
    "share", "she", "she'd", "she'll", "she's", "should", "shouldn't", "show", "since", "six", "so", "some",
    "somebody", "someone", "something", "sometimes", "sorry", "speak", "still", "stories", "story", "such", "sure",
    "surprise", "take", "talk", "talking", "teach", "tell", "telling", "ten", "than", "thank", "thanks", "that",
    "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "therefore", "these",
    "they", "they'd", "they'll", "they're", "they've", "thing", "things", "think", "this", "those", "though",
    "thought", "thoughts", "three", "through", "thus", "tip", "tips", "to", "today", "told", "tonight", "too", "took",
    "toward", "towards", "try", "two", "under", "unless", "until", "up", "upon", "us", "use", "used", "very", "view",
    "views", "want", "wants", "was", "wasn't", "way", "we", "we'd", "we'll", "we're", "we've", "well", "went", "were",
    "weren't", "what", "what's", "whatever", "when", "when's", "where", "where's", "whether", "which", "while", "who",
    "who's", "whole", "whom", "whose", "why", "why's", "will", "wit", "with", "within", "without", "witty", "won't",
    "word", "words", "would", "wouldn't", "wow", "yeah", "yes", "yet", "you", "you'd", "you'll", "you're", "you've",
    "your", "yours", "yourself", "yourselves",
};

static int is_stop(const char *w) {
    size_t lo = 0, hi = sizeof s_subject_stop / sizeof s_subject_stop[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s_subject_stop[mid], w);
        if (c == 0) return 1;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

size_t pg_chat_subject(const char *text, size_t n, char *out, size_t cap) {
    size_t best = 0, i = 0, k;
    if (cap) out[0] = 0;
    while (i < n) {
        // a word: letters and numbers, an apostrophe between two of them included
        uint32_t cp = next_cp(text, i, n, &k);
        if (!pg_unicode_is_word(cp)) {
            i += k;
            continue;
        }
        char w[PG_CHAT_SUBJECT_MAX + 3];  // room for a trailing 's
        size_t len = 0;  // the word's length (what did not fit w is counted, not kept)
        int ok = 1;
        for (;;) {
            if (cp == '\'' || (cp < 0x80 && (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')) {
                if (len < sizeof w) w[len] = (char)(cp == '\'' ? cp : (cp | 0x20));
                len++;
            } else {
                ok = 0;  // a digit or a letter outside ASCII
            }
            i += k;
            if (i >= n) break;
            size_t k2;
            cp = next_cp(text, i, n, &k);
            if (pg_unicode_is_word(cp)) continue;
            if (cp == '\'' && i + k < n && pg_unicode_is_word(next_cp(text, i + k, n, &k2))) continue;
            break;
        }
        if (len >= 2 && len <= sizeof w && w[len - 2] == '\'' && w[len - 1] == 's') len -= 2;
        if (!ok || len < 3 || len > PG_CHAT_SUBJECT_MAX || memchr(w, '\'', len)) continue;
        w[len] = 0;
        if (is_stop(w)) continue;
        if (len + 1 > cap) continue;
        memcpy(out, w, len + 1);
        best = len;
    }
    return best;
}
