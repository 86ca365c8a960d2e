// pocketgpt engine: next-token sampling (greedy, temperature, top-k, top-p, repetition penalty)
// with a seeded generator, so a seed reproduces a generation on every platform.
#ifndef PG_SAMPLER_H
#define PG_SAMPLER_H

#include "pg_common.h"

typedef struct {
    uint64_t s;
} pg_rng;

void pg_rng_seed(pg_rng *r, uint64_t seed);
uint32_t pg_rng_u32(pg_rng *r);
float pg_rng_f32(pg_rng *r);  // [0, 1)

typedef struct {
    float temperature;     // <= 0: argmax after the repetition penalty
    int32_t top_k;         // 0: no limit
    float top_p;           // >= 1: no limit
    float repeat_penalty;  // 1: off; > 1 discourages tokens in the recent history
    int32_t repeat_last_n; // how much history the penalty looks at
    int32_t greedy;        // argmax of the logits as given: no penalty, no sampling
} pg_sampler_params;

void pg_sampler_defaults(pg_sampler_params *p);

// The distribution pg_sample draws from: the n (returned) candidates cand[0..n), most likely first,
// with unnormalised weights probs[0..n) summing to *sum (greedy: the one argmax, weight 1). logits
// (V,) are modified in place (the penalty); probs and cand need V entries. Speculative decoding
// compares the target's and the draft's distributions with it.
int32_t pg_sample_dist(float *logits, int32_t n_vocab, const pg_sampler_params *p, const int32_t *history,
                       int32_t n_hist, float *probs, int32_t *cand, float *sum);

// logits (V,) are modified in place; probs (V,) and cand (V,) are scratch.
// history (n_hist,) holds the tokens so far (prompt and generated).
int32_t pg_sample(float *logits, int32_t n_vocab, const pg_sampler_params *p, const int32_t *history,
                  int32_t n_hist, pg_rng *rng, float *probs, int32_t *cand);

#endif
