// C unit tests of the engine, run under AddressSanitizer and UndefinedBehaviorSanitizer by
// `make -C firmware/engine test-asan MODEL=path.gguf` (the pytest suite does this with a tiny model
// it makes). Also a seeded random-mutation fuzz of the GGUF reader and the tokenizer: malformed
// input must be rejected with a status, never crash or read outside the blob.
//
// usage: test_engine MODEL.gguf [MUTATIONS]
//
// The text-out tests (stop strings, the reply guard, subject steering) are in test_textout.c, linked
// into the same program.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2.h"
#include "sampler.h"
#include "tokenizer.h"
#include "engine_test.h"

int test_failures = 0;  // counted by CHECK (engine_test.h), here and in test_textout.c

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void test_f16(void) {
    CHECK(pg_f16_to_f32(0x3C00) == 1.0f);
    CHECK(pg_f16_to_f32(0xC000) == -2.0f);
    CHECK(pg_f16_to_f32(0x0001) == ldexpf(1.0f, -24));  // smallest subnormal
    CHECK(pg_f16_to_f32(0x03FF) == ldexpf(1023.0f, -24));
    CHECK(pg_f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(isinf(pg_f16_to_f32(0x7C00)));
    CHECK(isnan(pg_f16_to_f32(0x7E00)));
}

static void test_arena(void) {
    uint8_t buf[64];
    pg_arena a;
    pg_arena_init(&a, buf, sizeof buf);
    CHECK(pg_arena_take(&a, 10, 1) == buf);
    CHECK(pg_arena_take(&a, 8, 16) == buf + 16);
    CHECK(pg_arena_take(&a, 100, 1) == NULL);
    CHECK(pg_arena_overflow(&a));
    pg_arena_init(&a, NULL, 0);
    CHECK(pg_arena_take(&a, 10, 4) == NULL && a.used == 10);
    CHECK(pg_arena_take(&a, SIZE_MAX, 4) == NULL && a.used == SIZE_MAX);
}

static void test_sampler(void) {
    float logits[8] = {0.1f, 3.0f, -1.0f, 2.9f, 0.0f, 0.5f, 2.0f, -3.0f};
    float work[8], probs[8];
    int32_t cand[8];
    pg_sampler_params p;
    pg_sampler_defaults(&p);
    p.greedy = 1;
    p.repeat_penalty = 1.0f;
    memcpy(work, logits, sizeof work);
    CHECK(pg_sample(work, 8, &p, NULL, 0, NULL, probs, cand) == 1);
    int32_t hist[1] = {1};
    p.repeat_penalty = 2.0f;
    memcpy(work, logits, sizeof work);
    CHECK(pg_sample(work, 8, &p, hist, 1, NULL, probs, cand) == 1);  // greedy: argmax, the penalty is not applied
    p.greedy = 0;
    p.temperature = 0.0f;  // temperature 0: argmax after the penalty
    memcpy(work, logits, sizeof work);
    CHECK(pg_sample(work, 8, &p, hist, 1, NULL, probs, cand) == 3);
    p.repeat_penalty = 1.0f;
    p.top_k = 2;
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    pg_rng r1, r2;
    pg_rng_seed(&r1, 42);
    pg_rng_seed(&r2, 42);
    for (int i = 0; i < 200; i++) {
        memcpy(work, logits, sizeof work);
        int32_t a = pg_sample(work, 8, &p, NULL, 0, &r1, probs, cand);
        memcpy(work, logits, sizeof work);
        int32_t b = pg_sample(work, 8, &p, NULL, 0, &r2, probs, cand);
        CHECK(a == b && (a == 1 || a == 3));
    }
    p.top_k = 0;
    p.top_p = 0.3f;
    for (int i = 0; i < 50; i++) {
        memcpy(work, logits, sizeof work);
        CHECK(pg_sample(work, 8, &p, NULL, 0, &r1, probs, cand) == 1);
    }
}

// greedy = the first index of the largest value (NaN never wins; a NaN at 0 returns 0), and top-k
// sampling on distinct values = the k largest sorted, softmax with temperature, nucleus, one draw;
// on vocabulary-sized arrays (the sampler scans blocks of 8: sizes that are not multiples of 8)
static int32_t ref_argmax(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

static const float *s_ref_l;
static int ref_desc(const void *a, const void *b) {
    float x = s_ref_l[*(const int32_t *)a], y = s_ref_l[*(const int32_t *)b];
    return x < y ? 1 : x > y ? -1 : 0;
}

static int32_t ref_topk(const float *l, int32_t n, const pg_sampler_params *p, pg_rng *rng, int32_t *idx, float *pr) {
    for (int32_t i = 0; i < n; i++) idx[i] = i;
    s_ref_l = l;
    qsort(idx, (size_t)n, sizeof *idx, ref_desc);
    int32_t k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    float inv_t = 1.0f / p->temperature, sum = 0.0f;
    for (int32_t i = 0; i < k; i++) sum += pr[i] = expf((l[idx[i]] - l[idx[0]]) * inv_t);
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        float cum = 0.0f;
        int32_t keep = k;
        for (int32_t i = 0; i < k; i++)
            if ((cum += pr[i]) >= p->top_p * sum) {
                keep = i + 1;
                break;
            }
        k = keep;
        sum = cum;
    }
    float r = pg_rng_f32(rng) * sum, acc = 0.0f;
    for (int32_t i = 0; i < k; i++)
        if (r < (acc += pr[i])) return idx[i];
    return idx[k - 1];
}

static void test_sampler_vocab(void) {
    enum { N = 50257 };
    float *l = malloc(N * sizeof *l), *work = malloc(N * sizeof *work), *probs = malloc(N * sizeof *probs);
    int32_t *cand = malloc(N * sizeof *cand), *idx = malloc(N * sizeof *idx);
    if (!l || !work || !probs || !cand || !idx) {
        CHECK(0);
        return;
    }
    pg_rng g;
    pg_rng_seed(&g, 7);
    const int32_t sizes[] = {1, 7, 8, 9, 41, 1000, N};
    for (int t = 0; t < 42; t++) {
        int32_t n = sizes[t % 7];
        int mode = t % 6;
        for (int32_t i = 0; i < n; i++) {
            uint32_t u = pg_rng_u32(&g);
            l[i] = mode == 0   ? (float)(u % 5)                       // ties
                   : mode == 1 ? (u % 40 == 0 ? NAN : (float)(u % 999))  // NaNs
                   : mode == 2 ? ((u & 1) ? 0.0f : -0.0f)                 // signed zeros
                   : mode == 3 ? (float)i * 1e-3f                         // rising
                   : mode == 4 ? (float)(((int64_t)i * 7919) % n) * 0.01f  // a permutation
                               : (float)(((int64_t)i * 7919) % n) * -0.003f;
        }
        if (t % 11 == 5) l[0] = NAN;
        pg_sampler_params p;
        pg_sampler_defaults(&p);
        p.greedy = 1;
        p.repeat_penalty = 1.0f;
        memcpy(work, l, (size_t)n * sizeof *l);
        CHECK(pg_sample(work, n, &p, NULL, 0, NULL, probs, cand) == ref_argmax(l, n));
        if (mode < 3 || isnan(l[0])) continue;  // top-k on distinct numbers (tie order is the heap's)
        p.greedy = 0;
        p.top_k = 1 + t % 50;
        p.top_p = t % 2 ? 0.95f : 1.0f;
        p.temperature = 0.8f;
        for (int d = 0; d < 5; d++) {
            pg_rng r1, r2;
            pg_rng_seed(&r1, (uint64_t)(t * 10 + d));
            pg_rng_seed(&r2, (uint64_t)(t * 10 + d));
            memcpy(work, l, (size_t)n * sizeof *l);
            CHECK(pg_sample(work, n, &p, NULL, 0, &r1, probs, cand) == ref_topk(l, n, &p, &r2, idx, work));
        }
    }
    free(l);
    free(work);
    free(probs);
    free(cand);
    free(idx);
}

typedef struct {
    pg_model model;
    void *mem;
} loaded;

static pg_code load(const uint8_t *blob, size_t size, loaded *out, pg_status *st) {
    size_t need;
    out->mem = NULL;
    pg_code rc = pg_model_mem_size(blob, size, &need, st);
    if (rc) return rc;
    out->mem = malloc(need ? need : 1);
    return pg_model_init(&out->model, blob, size, out->mem, need ? need : 1, 0, st);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// pg_batch_decode over 3 sessions at different positions equals stepping each alone
static void test_batch(const pg_model *m) {
    enum { N = 3 };
    pg_status st;
    int32_t T = 10 < (int32_t)m->cfg.n_ctx ? 10 : (int32_t)m->cfg.n_ctx;
    size_t sneed, bneed;
    CHECK(pg_state_mem_size(m, T, 4, &sneed, &st) == PG_OK);
    CHECK(pg_batch_mem_size(m, N, &bneed, &st) == PG_OK);
    CHECK(pg_batch_mem_size(m, 0, &bneed, &st) == PG_ERR_ARG);
    CHECK(pg_batch_mem_size(m, N, &bneed, &st) == PG_OK);
    void *bmem = malloc(bneed);
    pg_batch b;
    CHECK(pg_batch_init(&b, m, N, bmem, bneed - 1, &st) == PG_ERR_MEMORY);
    CHECK(pg_batch_init(&b, m, N, bmem, bneed, &st) == PG_OK);
    pg_state one[N], many[N];
    void *mem[2 * N];
    int32_t V = (int32_t)m->cfg.n_vocab;
    for (int i = 0; i < N; i++) {
        mem[i] = malloc(sneed);
        mem[N + i] = malloc(sneed);
        CHECK(pg_state_init(&one[i], m, T, 4, mem[i], sneed, &st) == PG_OK);
        CHECK(pg_state_init(&many[i], m, T, 4, mem[N + i], sneed, &st) == PG_OK);
        int32_t prompt[8];
        for (int k = 0; k < 1 + 3 * i; k++) prompt[k] = (int32_t)((k * 5 + i + 1) % V);
        CHECK(pg_state_eval(&one[i], prompt, 1 + 3 * i, NULL, &st) == PG_OK);
        CHECK(pg_state_eval(&many[i], prompt, 1 + 3 * i, NULL, &st) == PG_OK);
    }
    pg_state *ptr[N] = {&many[0], &many[1], &many[2]};
    float maxdiff = 0.0f;
    for (int step = 0; step < 3; step++) {
        int32_t toks[N];
        for (int i = 0; i < N; i++) {
            toks[i] = (int32_t)((step * 11 + i * 3 + 2) % V);
            CHECK(pg_state_eval(&one[i], &toks[i], 1, NULL, &st) == PG_OK);
        }
        CHECK(pg_batch_decode(&b, ptr, toks, N, &st) == PG_OK);
        for (int i = 0; i < N; i++) {
            CHECK(many[i].n_past == one[i].n_past);
            for (int32_t v = 0; v < V; v++) {
                float d = fabsf(many[i].logits[v] - one[i].logits[v]);
                if (d > maxdiff) maxdiff = d;
            }
        }
    }
    CHECK(maxdiff == 0.0f);  // bit for bit: a batch row is computed exactly as a single token
    // invalid batches change nothing: a repeated session, a full context, a bad token, too many
    int32_t toks[N] = {1, 2, 3};
    pg_state *dup[N] = {&many[0], &many[1], &many[0]};
    int32_t before = many[0].n_past;
    CHECK(pg_batch_decode(&b, dup, toks, N, &st) == PG_ERR_ARG && many[0].n_past == before);
    int32_t bad[N] = {1, V, 3};
    CHECK(pg_batch_decode(&b, ptr, bad, N, &st) == PG_ERR_ARG && many[0].n_past == before);
    CHECK(pg_batch_decode(&b, ptr, toks, N + 1, &st) == PG_ERR_ARG);
    CHECK(pg_batch_decode(&b, ptr, toks, 0, &st) == PG_ERR_ARG);
    while (many[2].n_past < T) CHECK(pg_state_eval(&many[2], toks, 1, NULL, &st) == PG_OK);
    CHECK(pg_batch_decode(&b, ptr, toks, N, &st) == PG_ERR_ARG && many[0].n_past == before);
    CHECK(pg_batch_decode(&b, ptr, toks, 2, &st) == PG_OK && many[0].n_past == before + 1);
    for (int i = 0; i < 2 * N; i++) free(mem[i]);
    free(bmem);
}

// speculative decoding's two engine calls: rewinding and re-evaluating gives the logits of a state
// that never saw the dropped tokens (bit for bit); pg_sample_dist is what pg_sample draws from
static void test_rewind_and_dist(const pg_model *m) {
    pg_status st;
    int32_t V = (int32_t)m->cfg.n_vocab, T = 10 < (int32_t)m->cfg.n_ctx ? 10 : (int32_t)m->cfg.n_ctx;
    size_t need;
    CHECK(pg_state_mem_size(m, T, 4, &need, &st) == PG_OK);
    void *ma = malloc(need), *mb = malloc(need);
    pg_state a, b;
    CHECK(pg_state_init(&a, m, T, 4, ma, need, &st) == PG_OK);
    CHECK(pg_state_init(&b, m, T, 4, mb, need, &st) == PG_OK);
    int32_t first[3] = {1 % V, 7 % V, 3 % V}, dropped[3] = {5 % V, 2 % V, 9 % V}, next[2] = {4 % V, 8 % V};
    CHECK(pg_state_eval(&a, first, 3, NULL, &st) == PG_OK);
    CHECK(pg_state_eval(&a, dropped, 3, NULL, &st) == PG_OK);
    CHECK(pg_state_rewind(&a, 7, &st) == PG_ERR_ARG && a.n_past == 6);
    CHECK(pg_state_rewind(&a, -1, &st) == PG_ERR_ARG && a.n_past == 6);
    CHECK(pg_state_rewind(&a, 3, &st) == PG_OK && a.n_past == 3);
    CHECK(pg_state_eval(&a, next, 2, NULL, &st) == PG_OK);
    CHECK(pg_state_eval(&b, first, 3, NULL, &st) == PG_OK);
    CHECK(pg_state_eval(&b, next, 2, NULL, &st) == PG_OK);
    CHECK(a.n_past == b.n_past && memcmp(a.logits, b.logits, (size_t)V * sizeof(float)) == 0);
    // the draw from the distribution equals pg_sample's, random numbers included
    pg_sampler_params p;
    pg_sampler_defaults(&p);
    float *work = malloc((size_t)V * sizeof(float)), *probs = malloc((size_t)V * sizeof(float)), sum;
    int32_t *cand = malloc((size_t)V * sizeof(int32_t)), hist[2] = {4 % V, 8 % V};
    for (int trial = 0; trial < 20; trial++) {
        pg_rng r1, r2;
        pg_rng_seed(&r1, (uint64_t)trial);
        pg_rng_seed(&r2, (uint64_t)trial);
        p.greedy = trial == 0;
        memcpy(work, a.logits, (size_t)V * sizeof(float));
        int32_t want = pg_sample(work, V, &p, hist, 2, &r1, probs, cand);
        memcpy(work, a.logits, (size_t)V * sizeof(float));
        int32_t n = pg_sample_dist(work, V, &p, hist, 2, probs, cand, &sum);
        CHECK(n >= 1 && n <= (p.greedy ? 1 : p.top_k));
        float u = pg_rng_f32(&r2) * sum, acc = 0.0f;
        int32_t got = cand[n - 1];
        for (int32_t i = 0; i < n && !p.greedy; i++) {
            acc += probs[i];
            if (u < acc) {
                got = cand[i];
                break;
            }
        }
        CHECK(got == want || (p.greedy && cand[0] == want));
    }
    free(work);
    free(probs);
    free(cand);
    free(ma);
    free(mb);
}

// every selected set, whatever it fills itself, has each reference slot the forward pass calls
// without checking (a dot for every runnable type, an axpy for the KV cache types, the quantizers,
// GELU, the softmax's exponentials), and a set's own kernels stay its own
static void test_kernels_filled(void) {
    pg_kernels ref;
    pg_kernels_select(&ref, PG_KERNELS_REF);
    for (int mode = 0; mode < 5; mode++) {
        pg_kernels k;
        pg_kernels_select(&k, mode);
        CHECK(k.name && k.quantize && k.quantize_k && k.gelu && k.exp_sum);
        for (uint32_t t = 0; t < PG_TYPE_COUNT; t++) {
            CHECK(!pg_type_supported(t) || k.type[t].dot);
            if (t == PG_TYPE_F32 || t == PG_TYPE_F16 || t == PG_TYPE_Q8_0) CHECK(k.type[t].axpy != NULL);
        }
        if (mode == PG_KERNELS_REF_Q8) {  // the integer definitions on top of the float reference
            CHECK(k.type[PG_TYPE_Q4_K].dot_q8k && k.type[PG_TYPE_Q4_K].dot == ref.type[PG_TYPE_Q4_K].dot);
            CHECK(k.quantize == pg_quantize_act && k.gelu == ref.gelu);
        }
    }
    CHECK(!ref.type[PG_TYPE_Q8_0].dot_q8 && !ref.attn_scores_q8_0_64);  // optional paths stay off
}

// the fast set's activation quantizer equals pg_quantize_act bit for bit (ties, zeros, signs)
static void test_quantize_act(void) {
    pg_kernels kern;
    pg_kernels_select(&kern, PG_KERNELS_BEST);
    const pg_kernels *k = &kern;
    enum { N = 256 };
    float x[N], xd1[N / 32], xd2[N / 32], xs1[N / 16], xs2[N / 16];
    int8_t q1[N], q2[N];
    uint32_t r = 12345;
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < N; i++) {
            r = r * 1664525u + 1013904223u;
            int v = (int)(r >> 8) % 2001 - 1000;
            x[i] = trial % 3 == 0 ? (float)v * 0.5f : (float)v / 7.0f;  // exact halves: rounding ties
            if (i % 32 == 5 && trial % 2) x[i] = 0.0f;
        }
        if (trial == 1)
            for (int i = 0; i < 32; i++) x[i] = i == 3 ? -0.0f : 0.0f;  // an all-zero group
        pg_quantize_act(x, q1, xd1, xs1, N);
        k->quantize(x, q2, xd2, xs2, N);
        CHECK(memcmp(q1, q2, N) == 0 && memcmp(xd1, xd2, sizeof xd1) == 0 && memcmp(xs1, xs2, sizeof xs1) == 0);
        // the Q8_0 KV cache rows: the same codes, the scale as a half
        uint8_t blocks[N / 32 * 34];
        pg_quantize_q8_0(x, blocks, N);
        for (int b = 0; b < N / 32; b++) {
            uint16_t h;
            memcpy(&h, blocks + 34 * b, 2);
            CHECK(h == pg_f32_to_f16(xd1[b]) && memcmp(blocks + 34 * b + 2, q1 + 32 * b, 32) == 0);
        }
    }
}

// modest half scales (d, dmin) in a random K-quant row of n weights, where the type keeps them
static void k_row_scales(uint8_t *w, int n, uint32_t type, float scale) {
    size_t bb = pg_type_block_bytes(type);
    for (int b = 0; b < n / 256; b++) {
        uint8_t *blk = w + (size_t)b * bb;
        size_t at = type == PG_TYPE_Q3_K ? 108 : type == PG_TYPE_Q6_K ? 208 : 0;
        uint16_t h = pg_f32_to_f16(scale);
        memcpy(blk + at, &h, 2);
        if (type == PG_TYPE_Q4_K) memcpy(blk + 2, &h, 2);
    }
}

// the K activation format (one scale per 256 values): every set's quantizer equals
// pg_quantize_act_k bit for bit; each set's Q3_K/Q4_K dot equals the portable definition up to
// float order (Q6_K's exactly: the same integer sums), its 4-, 8- and 16-row kernels give each
// row the one-row kernel's bits, and so does its 8-weight-row kernel to each weight row
// N columns: 1, 2 and 16 super-blocks (the widest row the 16-row kernel's callers give it)
static void test_k_format_n(int N) {
    enum { NMAX = 4096, ROWS = 16 };
    static float x[ROWS * NMAX], xd1[ROWS * NMAX / 256], xd2[ROWS * NMAX / 256];
    static int8_t q1[ROWS * NMAX], q2[ROWS * NMAX];
    static int16_t s1[ROWS * NMAX / 16], s2[ROWS * NMAX / 16];
    static uint8_t w[NMAX / 256 * 210], w8[8 * NMAX / 256 * 210];
    static float deq[NMAX];
    uint32_t r = 777;
    for (int i = 0; i < ROWS * N; i++) {
        r = r * 1664525u + 1013904223u;
        int v = (int)(r >> 8) % 2001 - 1000;
        x[i] = i % 3 == 0 ? (float)v * 0.5f : (float)v / 7.0f;  // exact halves: rounding ties
    }
    for (int i = 0; i < 256; i++) x[i] = i == 7 ? -0.0f : 0.0f;  // an all-zero super-block
    for (int b = 0; b < ROWS; b++) pg_quantize_act_k(x + b * N, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N);
    CHECK(xd1[0] == 0.0f && q1[3] == 0 && s1[0] == 0);
    const uint32_t types[3] = {PG_TYPE_Q3_K, PG_TYPE_Q4_K, PG_TYPE_Q6_K};
    for (int mode = 0; mode < 5; mode++) {
        pg_kernels kern;
        pg_kernels_select(&kern, mode);
        const pg_kernels *k = &kern;
        {
            for (int b = 0; b < ROWS; b++) k->quantize_k(x + b * N, q2 + b * N, xd2 + b * N / 256, s2 + b * N / 16, N);
            CHECK(memcmp(q1, q2, (size_t)(ROWS * N)) == 0 && memcmp(xd1, xd2, sizeof(float) * (size_t)(ROWS * N / 256)) == 0 &&
                  memcmp(s1, s2, sizeof(int16_t) * (size_t)(ROWS * N / 16)) == 0);
        }
        for (int t = 0; t < 3; t++) {
            if (!k->type[types[t]].dot_q8k) continue;
            size_t bb = pg_type_block_bytes(types[t]);
            for (int trial = 0; trial < 20; trial++) {
                for (size_t i = 0; i < N / 256 * bb; i++) {
                    r = r * 1664525u + 1013904223u;
                    w[i] = (uint8_t)(r >> 24);
                }
                k_row_scales(w, N, types[t], 0.01f * (float)(trial + 1));
                float one[ROWS], o4[ROWS], o8[ROWS], o16[ROWS];
                pg_dequant_row(types[t], w, deq, N);
                for (int b = 0; b < ROWS; b++) {
                    one[b] = k->type[types[t]].dot_q8k(w, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N);
                    float want = pg_dot_q8k_ref(types[t])(w, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N);
                    double exact = 0.0, mag = 0.0;  // the definition is the dot of the dequantized values
                    for (int i = 0; i < N; i++) {
                        double p = (double)deq[i] * (double)q1[b * N + i] * (double)xd1[b * N / 256 + i / 256];
                        exact += p;
                        mag += fabs(p);
                    }
                    CHECK(fabs((double)want - exact) <= 1e-5 * (1.0 + mag));
                    CHECK(fabs((double)one[b] - (double)want) <= 1e-5 * (1.0 + mag));
                    if (types[t] == PG_TYPE_Q6_K) CHECK(one[b] == want);
                }
                // the 4-, 8- and 16-row kernels give each row the one-row kernel's bits
                if (k->type[types[t]].dot_q8kx4) {
                    for (int b = 0; b < ROWS; b += 4)
                        k->type[types[t]].dot_q8kx4(w, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N, o4 + b);
                    CHECK(memcmp(o4, one, sizeof one) == 0);
                }
                if (k->type[types[t]].dot_q8kx8) {
                    for (int b = 0; b < ROWS; b += 8)
                        k->type[types[t]].dot_q8kx8(w, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N, o8 + b);
                    CHECK(memcmp(o8, one, sizeof one) == 0);
                }
                if (k->type[types[t]].dot_q8kx16) {
                    float xdt[NMAX / 256 * 16];
                    int32_t xat[NMAX / 256 * 16];
                    pg_k_rows16_prepare(xd1, s1, N, xdt, xat);
                    k->type[types[t]].dot_q8kx16(w, q1, xdt, xat, N, o16);
                    CHECK(memcmp(o16, one, sizeof one) == 0);
                }
                // 8 weight rows against one activation row (decode): each weight row's own bits
                if (k->type[types[t]].dot_q8kw8) {
                    size_t rb = (size_t)N / 256 * bb;
                    for (int q = 0; q < 8; q++) {
                        for (size_t i = 0; i < rb; i++) {
                            r = r * 1664525u + 1013904223u;
                            w8[(size_t)q * rb + i] = q == 0 ? w[i] : (uint8_t)(r >> 24);
                        }
                        if (q) k_row_scales(w8 + (size_t)q * rb, N, types[t], 0.003f * (float)(q + trial));
                    }
                    for (int b = 0; b < ROWS; b += 3) {
                        float o[8];
                        k->type[types[t]].dot_q8kw8(w8, rb, q1 + b * N, xd1 + b * N / 256, s1 + b * N / 16, N, o);
                        CHECK(memcmp(&o[0], &one[b], sizeof(float)) == 0);
                        for (int q = 0; q < 8; q++) {
                            float want = k->type[types[t]].dot_q8k(w8 + (size_t)q * rb, q1 + b * N, xd1 + b * N / 256,
                                                                   s1 + b * N / 16, N);
                            CHECK(memcmp(&o[q], &want, sizeof(float)) == 0);
                        }
                    }
                }
            }
        }
    }
}

static void test_k_format(void) {
    test_k_format_n(256);
    test_k_format_n(512);
    test_k_format_n(4096);
}

// KV cache stored as F16 (and Q8_0 where the head size allows): close to the F32 cache
static void test_kv_types(const pg_model *m) {
    pg_status st;
    int32_t T = 10 < (int32_t)m->cfg.n_ctx ? 10 : (int32_t)m->cfg.n_ctx, V = (int32_t)m->cfg.n_vocab;
    uint32_t D = m->cfg.n_embd / m->cfg.n_head;
    size_t need32, need;
    CHECK(pg_state_mem_size_kv(m, T, 4, PG_TYPE_F32, &need32, &st) == PG_OK);
    CHECK(pg_state_mem_size_kv(m, T, 4, PG_TYPE_Q4_0, &need, &st) == PG_ERR_ARG);
    CHECK(pg_state_mem_size_kv(m, T, 4, PG_TYPE_Q8_0, &need, &st) == (D % 32 == 0 ? PG_OK : PG_ERR_ARG));
    uint32_t types[2] = {PG_TYPE_F16, PG_TYPE_Q8_0};
    int32_t toks[10];
    for (int32_t i = 0; i < T; i++) toks[i] = (int32_t)((i * 13 + 7) % V);
    void *mem32 = malloc(need32);
    pg_state s32;
    CHECK(pg_state_init_kv(&s32, m, T, 4, PG_TYPE_F32, mem32, need32, &st) == PG_OK);
    CHECK(pg_state_eval(&s32, toks, T, NULL, &st) == PG_OK);
    for (int k = 0; k < 2; k++) {
        if (types[k] == PG_TYPE_Q8_0 && D % 32 != 0) continue;
        CHECK(pg_state_mem_size_kv(m, T, 4, types[k], &need, &st) == PG_OK && need < need32);
        void *mem = malloc(need);
        pg_state s;
        CHECK(pg_state_init_kv(&s, m, T, 4, types[k], mem, need, &st) == PG_OK);
        CHECK(pg_state_eval(&s, toks, T, NULL, &st) == PG_OK);
        float lo = s32.logits[0], hi = s32.logits[0], maxdiff = 0.0f;
        for (int32_t v = 0; v < V; v++) {
            if (s32.logits[v] < lo) lo = s32.logits[v];
            if (s32.logits[v] > hi) hi = s32.logits[v];
            float d = fabsf(s.logits[v] - s32.logits[v]);
            if (d > maxdiff) maxdiff = d;
        }
        CHECK(maxdiff < 0.02f * (hi - lo));
        free(mem);
    }
    free(mem32);
}


static void test_model(const uint8_t *blob, size_t size) {
    loaded L;
    pg_status st;
    pg_code rc = load(blob, size, &L, &st);
    CHECK(rc == PG_OK);
    if (rc) {
        fprintf(stderr, "load failed: %s\n", st.msg);
        free(L.mem);
        return;
    }
    const pg_model *m = &L.model;
    test_reply_guard(m);
    test_guard_masks(m);
    const char *text = "Hello, world! It's 2024: naïve café 😀.";
    size_t n = strlen(text), n_ids;
    int32_t ids[256];
    size_t scratch_size = pg_tokenizer_scratch_size(n);
    void *scratch = malloc(scratch_size);
    CHECK(pg_tokenizer_encode(&m->tok, (const uint8_t *)text, n, 1, ids, 256, &n_ids, scratch, scratch_size, &st) == PG_OK);
    CHECK(n_ids > 0 && n_ids <= n);
    uint8_t back[256];
    size_t nb = 0;
    for (size_t i = 0; i < n_ids; i++) {
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(&m->tok, ids[i], &len);
        memcpy(back + nb, b, len);
        nb += len;
    }
    CHECK(nb == n && memcmp(back, text, n) == 0);
    CHECK(pg_tokenizer_encode(&m->tok, (const uint8_t *)text, n, 1, ids, 2, &n_ids, scratch, scratch_size, &st) == PG_ERR_MEMORY);
    CHECK(pg_tokenizer_encode(&m->tok, (const uint8_t *)text, n, 1, ids, 256, &n_ids, scratch, scratch_size - 1, &st) == PG_ERR_MEMORY);
    free(scratch);
    // one 200,000-byte word: the heap-based merge stays O(n log n) and loses nothing
    size_t big = 200000;
    uint8_t *word = malloc(big);
    int32_t *wids = malloc(big * sizeof(int32_t));
    void *wscratch = malloc(pg_tokenizer_scratch_size(big));
    for (size_t i = 0; i < big; i++) word[i] = (uint8_t)("abcab"[i % 5]);
    CHECK(pg_tokenizer_encode(&m->tok, word, big, 1, wids, big, &n_ids, wscratch, pg_tokenizer_scratch_size(big), &st) == PG_OK);
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        uint32_t len;
        pg_tokenizer_token_bytes(&m->tok, wids[i], &len);
        total += len;
    }
    CHECK(total == big && n_ids < big);
    free(word);
    free(wids);
    free(wscratch);

    // batched prefill and one-at-a-time decoding agree
    int32_t T = 12 < (int32_t)m->cfg.n_ctx ? 12 : (int32_t)m->cfg.n_ctx;
    size_t sneed;
    CHECK(pg_state_mem_size(m, T, 5, &sneed, &st) == PG_OK);
    void *smem = malloc(sneed), *smem2 = malloc(sneed);
    pg_state s1, s2;
    CHECK(pg_state_init(&s1, m, T, 5, smem, sneed, &st) == PG_OK);
    CHECK(pg_state_init(&s2, m, T, 5, smem2, sneed, &st) == PG_OK);
    CHECK(pg_state_init(&s2, m, T, 5, smem2, sneed - 1, &st) == PG_ERR_MEMORY);
    CHECK(pg_state_init(&s2, m, T, 5, smem2, sneed, &st) == PG_OK);
    int32_t toks[12];
    for (int32_t i = 0; i < T; i++) toks[i] = (int32_t)((i * 7 + 3) % (int32_t)m->cfg.n_vocab);
    float *all = malloc((size_t)T * m->cfg.n_vocab * sizeof(float));
    CHECK(pg_state_eval(&s1, toks, T, all, &st) == PG_OK);
    float maxdiff = 0.0f;
    for (int32_t i = 0; i < T; i++) {
        CHECK(pg_state_eval(&s2, toks + i, 1, NULL, &st) == PG_OK);
        for (uint32_t v = 0; v < m->cfg.n_vocab; v++) {
            float d = fabsf(s2.logits[v] - all[(size_t)i * m->cfg.n_vocab + v]);
            if (d > maxdiff) maxdiff = d;
        }
    }
    CHECK(maxdiff < 1e-3f);
    CHECK(argmax(s1.logits, (int32_t)m->cfg.n_vocab) == argmax(s2.logits, (int32_t)m->cfg.n_vocab));
    CHECK(pg_state_eval(&s1, toks, 1, NULL, &st) == PG_ERR_ARG);  // context full
    pg_state_reset(&s1);
    int32_t bad = (int32_t)m->cfg.n_vocab;
    CHECK(pg_state_eval(&s1, &bad, 1, NULL, &st) == PG_ERR_ARG);
    CHECK(pg_state_mem_size(m, (int32_t)m->cfg.n_ctx + 1, 1, &sneed, &st) == PG_ERR_ARG);
    free(all);
    free(smem);
    free(smem2);
    test_batch(m);
    test_rewind_and_dist(m);
    test_kv_types(m);
    test_topic(m);
    free(L.mem);
}

static uint64_t s_rng = 0x1234567;
static uint32_t rnd(void) {
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t)s_rng;
}

// Mutate a copy of the blob, try to load it; when it loads, use it a little.
static int fuzz_one(const uint8_t *blob, size_t size, size_t header_end, uint8_t *work) {
    size_t n = size;
    memcpy(work, blob, size);
    int kind = (int)(rnd() % 5);
    size_t span = header_end > 8 ? header_end : size;
    if (kind == 0) {  // flip a few bytes in the header and metadata
        for (int k = 0, c = 1 + (int)(rnd() % 4); k < c; k++) work[rnd() % span] ^= (uint8_t)(1u << (rnd() % 8));
    } else if (kind == 1) {  // truncate
        n = rnd() % size;
    } else if (kind == 2) {  // an interesting 64-bit value somewhere in the header
        static const uint64_t vals[] = {0, 1, 0xFF, 0xFFFFFFFFull, 0x100000000ull, 0x7FFFFFFFFFFFFFFFull,
                                        0xFFFFFFFFFFFFFFFFull, 32, 256};
        uint64_t v = vals[rnd() % (sizeof vals / sizeof vals[0])];
        size_t at = rnd() % (span > 8 ? span - 8 : 1);
        memcpy(work + at, &v, 8);
    } else if (kind == 3) {  // random bytes anywhere
        for (int k = 0, c = 1 + (int)(rnd() % 16); k < c; k++) work[rnd() % size] = (uint8_t)rnd();
    } else {  // a 32-bit value (counts, types, dimensions)
        uint32_t v = rnd() % 3 ? rnd() % 64 : rnd();
        size_t at = rnd() % (span > 4 ? span - 4 : 1);
        memcpy(work + at, &v, 4);
    }
    loaded L;
    pg_status st;
    int ok = load(work, n, &L, &st) == PG_OK;
    if (!ok) CHECK(st.msg[0] != '\0');
    if (ok) {  // a mutation that still loads must still run
        const pg_model *m = &L.model;
        uint8_t text[64];
        for (int i = 0; i < 64; i++) text[i] = (uint8_t)rnd();
        int32_t ids[64];
        size_t n_ids;
        uint32_t scratch[9 * 65];
        CHECK(pg_tokenizer_encode(&m->tok, text, 64, 1, ids, 64, &n_ids, scratch, sizeof scratch, &st) == PG_OK);
        size_t need;
        if (pg_state_mem_size(m, 4, 2, &need, &st) == PG_OK && need < (64u << 20)) {
            void *smem = malloc(need);
            pg_state s;
            if (smem && pg_state_init(&s, m, 4, 2, smem, need, &st) == PG_OK) {
                int32_t t[3] = {0, 1, 2};
                for (int i = 0; i < 3; i++) t[i] %= (int32_t)m->cfg.n_vocab;
                CHECK(pg_state_eval(&s, t, 3, NULL, &st) == PG_OK);
            }
            free(smem);
        }
    }
    free(L.mem);
    return ok;
}

static void fuzz_tokenizer(const pg_model *m, int rounds) {
    uint8_t text[300];
    int32_t ids[300];
    uint32_t scratch[9 * 301];
    uint8_t back[2048];
    pg_status st;
    for (int r = 0; r < rounds; r++) {
        size_t n = rnd() % sizeof text;
        for (size_t i = 0; i < n; i++) {
            uint32_t k = rnd() % 8;  // mostly structure-rich bytes: spaces, quotes, UTF-8 leads
            text[i] = k == 0 ? ' ' : k == 1 ? '\'' : k == 2 ? (uint8_t)(0xC0 + rnd() % 0x35) : k == 3 ? (uint8_t)(0x80 + rnd() % 0x40)
                                                                                                 : (uint8_t)rnd();
        }
        size_t n_ids;
        CHECK(pg_tokenizer_encode(&m->tok, text, n, r & 1, ids, n, &n_ids, scratch, sizeof scratch, &st) == PG_OK);
        size_t nb = 0;
        for (size_t i = 0; i < n_ids; i++) {
            uint32_t len;
            const uint8_t *b = pg_tokenizer_token_bytes(&m->tok, ids[i], &len);
            if (nb + len <= sizeof back) memcpy(back + nb, b, len);
            nb += len;
        }
        CHECK(nb == n && memcmp(back, text, n) == 0);  // byte-level BPE loses nothing
    }
}

int main(int argc, char **argv) {
    test_f16();
    test_kernels_filled();
    test_quantize_act();
    test_k_format();
    test_arena();
    test_textout();
    test_textout_words();
    test_sampler();
    test_sampler_vocab();
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [MUTATIONS]\n", argv[0]);
        return 2;
    }
    size_t size;
    uint8_t *blob = read_file(argv[1], &size);
    if (!blob) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    test_model(blob, size);
    int mutations = argc > 2 ? atoi(argv[2]) : 2000;
    pg_gguf g;
    pg_status st;
    size_t header_end = pg_gguf_open(&g, blob, size, &st) == PG_OK ? g.data_off : size;
    uint8_t *work = malloc(size);
    int loaded_ok = 0;
    for (int i = 0; i < mutations; i++) loaded_ok += fuzz_one(blob, size, header_end, work);
    loaded L;
    if (load(blob, size, &L, &st) == PG_OK) fuzz_tokenizer(&L.model, mutations);
    free(L.mem);
    free(work);
    free(blob);
    printf("engine C tests: %d failures; %d GGUF mutations (%d still loaded and ran), %d tokenizer inputs\n", test_failures,
           mutations, loaded_ok, mutations);
    return test_failures ? 1 : 0;
}
