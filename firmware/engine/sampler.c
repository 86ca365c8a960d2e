// pocketgpt engine: sampler.
#include "sampler.h"

#include <math.h>

void pg_rng_seed(pg_rng *r, uint64_t seed) { r->s = seed ^ 0x9E3779B97F4A7C15ull; if (!r->s) r->s = 1; }

// xorshift64*: tiny, portable, good enough for sampling
uint32_t pg_rng_u32(pg_rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (uint32_t)((r->s * 0x2545F4914F6CDD1Dull) >> 32);
}

float pg_rng_f32(pg_rng *r) { return (float)(pg_rng_u32(r) >> 8) / 16777216.0f; }

void pg_sampler_defaults(pg_sampler_params *p) {
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->repeat_penalty = 1.1f;
    p->repeat_last_n = 64;
    p->greedy = 0;
}

// min-heap on logits[cand[.]] of size k
static void heap_down(int32_t *h, int32_t n, int32_t i, const float *l) {
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && l[h[c + 1]] < l[h[c]]) c++;
        if (l[h[i]] <= l[h[c]]) return;
        int32_t t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

// sort cand[0..n) by logits descending (heap sort: no recursion, no malloc)
static void sort_desc(int32_t *c, int32_t n, const float *l) {
    // min-heap; moving the minimum to the back each round leaves the array descending
    for (int32_t i = n / 2 - 1; i >= 0; i--) heap_down(c, n, i, l);
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t t = c[0];
        c[0] = c[end];
        c[end] = t;
        heap_down(c, end, 0, l);
    }
}

// whether any of 8 floats is above t (the same > test as the loop's, so a NaN never is): eight
// independent compares the compiler turns into one vector compare
static inline int any8_above(const float *x, float t) {
    int any = 0;
    for (int q = 0; q < 8; q++) any |= x[q] > t;
    return any;
}

static inline int any8_equal(const float *x, float t) {
    int any = 0;
    for (int q = 0; q < 8; q++) any |= x[q] == t;
    return any;
}

// the first index of the largest value, as `if (l[i] > l[best]) best = i` from best = 0 finds it:
// that loop waits on a load from the index it just chose (~9 cycles per value, 180 us for GPT-2's
// vocabulary); here the maximum comes from 8 independent lanes (vector max instructions), then a scan
// by blocks of 8 finds its first position (a NaN at 0 is returned as the loop would)
static int32_t argmax_first(const float *l, int32_t n) {
    float m[8];
    int32_t i = 0;
    for (int q = 0; q < 8; q++) m[q] = l[0];
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < 8; q++) m[q] = l[i + q] > m[q] ? l[i + q] : m[q];
    float mx = m[0];
    for (int q = 1; q < 8; q++) mx = m[q] > mx ? m[q] : mx;
    for (; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (i = 0; i + 8 <= n && !any8_equal(l + i, mx); i += 8) {
    }
    for (; i < n; i++)
        if (l[i] == mx) return i;
    return 0;
}

int32_t pg_sample_dist(float *logits, int32_t n_vocab, const pg_sampler_params *p, const int32_t *history,
                       int32_t n_hist, float *probs, int32_t *cand, float *sum_out) {
    // repetition penalty over the distinct tokens of the recent history; greedy is the most likely
    // token and nothing else (no penalty, no temperature)
    if (!p->greedy && p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f && history && n_hist > 0) {
        int32_t start = p->repeat_last_n > 0 && n_hist > p->repeat_last_n ? n_hist - p->repeat_last_n : 0;
        for (int32_t i = start; i < n_hist; i++) {
            int32_t t = history[i];
            if (t < 0 || t >= n_vocab) continue;
            int seen = 0;
            for (int32_t j = i + 1; j < n_hist && !seen; j++) seen = history[j] == t;
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
    if (p->greedy || p->temperature <= 0.0f) {
        cand[0] = argmax_first(logits, n_vocab);
        probs[0] = *sum_out = 1.0f;
        return 1;
    }
    // candidates: the top k (all when k is 0 or >= V), sorted descending
    int32_t k = (p->top_k > 0 && p->top_k < n_vocab) ? p->top_k : n_vocab;
    int32_t n = 0;
    if (k < n_vocab) {
        int32_t i = 0;
        for (; i < k; i++) cand[n++] = i;
        for (int32_t j = k / 2 - 1; j >= 0; j--) heap_down(cand, k, j, logits);
        for (; i < n_vocab; i++) {
            // a block of 8 none of whose values beats the heap's smallest has nothing to insert
            // (the test below is false for each): skip it with one vector compare
            if ((i & 7) == 0 && i + 8 <= n_vocab && !any8_above(logits + i, logits[cand[0]])) {
                i += 7;
                continue;
            }
            if (logits[i] > logits[cand[0]]) {
                cand[0] = i;
                heap_down(cand, k, 0, logits);
            }
        }
    } else {
        for (int32_t i = 0; i < n_vocab; i++) cand[i] = i;
        n = n_vocab;
    }
    sort_desc(cand, n, logits);
    // softmax with temperature
    float inv_t = 1.0f / p->temperature, mx = logits[cand[0]], sum = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        probs[i] = expf((logits[cand[i]] - mx) * inv_t);
        sum += probs[i];
    }
    // nucleus: the shortest prefix whose mass reaches top_p
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        float cum = 0.0f, limit = p->top_p * sum;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += probs[i];
            if (cum >= limit) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = cum;
    }
    *sum_out = sum;
    return n;
}

int32_t pg_sample(float *logits, int32_t n_vocab, const pg_sampler_params *p, const int32_t *history,
                  int32_t n_hist, pg_rng *rng, float *probs, int32_t *cand) {
    float sum;
    int32_t n = pg_sample_dist(logits, n_vocab, p, history, n_hist, probs, cand, &sum);
    if (p->greedy || p->temperature <= 0.0f) return cand[0];
    float r = pg_rng_f32(rng) * sum, acc = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        acc += probs[i];
        if (r < acc) return cand[i];
    }
    return cand[n - 1];
}
