// pocketgpt bare-metal harness: tokenizes a fixed prompt, runs it through the engine (prefill in
// N_BATCH chunks, as the firmware does), then decodes greedily (default repetition penalty: 1.1 over
// 64 tokens) one token at a time and prints the
// ids. Built for the ESP32-S3 core in QEMU (tools/xtensa_check.py loads the model at PG_BLOB_ADDR and
// the parameters below it) and, with -DPG_HARNESS_HOST, for the host with the same runtime
// library (rt.c), so the two runs can be compared token for token.
#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "sampler.h"
#include "stdio.h"
#include "string.h"
#include "tokenizer.h"

#define N_BATCH 8
#define N_CTX 256
#define ARENA_BYTES (12u << 20)

static const char PROMPT[] = "Q: What do you like to do on a rainy day?\nA:";

static uint8_t s_arena[ARENA_BYTES] __attribute__((aligned(16)));
static size_t s_used;

void pg_sim_write(const char *buf, size_t n);

static void out(const char *s) { pg_sim_write(s, strlen(s)); }

static void *take(size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n > ARENA_BYTES - s_used) return NULL;
    void *p = s_arena + s_used;
    s_used += n;
    return p;
}

static int fail(const char *what, const pg_status *st) {
    char line[320];
    snprintf(line, sizeof line, "error: %s: %s\n", what, st ? st->msg : "out of arena memory");
    out(line);
    return 2;
}

static void print_ids(const char *label, const int32_t *ids, int32_t n) {
    char line[32];
    out(label);
    for (int32_t i = 0; i < n; i++) {
        snprintf(line, sizeof line, i ? " %d" : "%d", (int)ids[i]);
        out(line);
    }
    out("\n");
}

int pg_harness_run(const void *blob, size_t size, int32_t n_gen, int kernels);

int pg_harness_run(const void *blob, size_t size, int32_t n_gen, int kernels) {
    pg_status st;
    size_t need;
    pg_model m;
    if (pg_model_mem_size(blob, size, &need, &st) != PG_OK) return fail("model", &st);
    void *mm = take(need);
    if (!mm) return fail("model memory", NULL);
    if (pg_model_init(&m, blob, size, mm, need, kernels, &st) != PG_OK) return fail("model", &st);
    pg_state s;
    int32_t n_ctx = m.cfg.n_ctx < N_CTX ? m.cfg.n_ctx : N_CTX;
    if (pg_state_mem_size(&m, n_ctx, N_BATCH, &need, &st) != PG_OK) return fail("state", &st);
    void *sm = take(need);
    if (!sm) return fail("state memory", NULL);
    if (pg_state_init(&s, &m, n_ctx, N_BATCH, sm, need, &st) != PG_OK) return fail("state", &st);

    size_t len = sizeof PROMPT - 1;
    void *scratch = take(pg_tokenizer_scratch_size(len));
    int32_t *ids = take(sizeof(int32_t) * (size_t)n_ctx);
    float *probs = take(sizeof(float) * (size_t)m.cfg.n_vocab);
    int32_t *cand = take(sizeof(int32_t) * (size_t)m.cfg.n_vocab);
    if (!scratch || !ids || !probs || !cand) return fail("scratch memory", NULL);
    size_t n_ids = 0;
    if (pg_tokenizer_encode(&m.tok, (const uint8_t *)PROMPT, len, 1, ids, (size_t)n_ctx, &n_ids, scratch,
                            pg_tokenizer_scratch_size(len), &st) != PG_OK)
        return fail("tokenize", &st);
    print_ids("prompt: ", ids, (int32_t)n_ids);
    for (size_t at = 0; at < n_ids; at += N_BATCH) {
        int32_t k = n_ids - at < N_BATCH ? (int32_t)(n_ids - at) : N_BATCH;
        if (pg_state_eval(&s, ids + at, k, NULL, &st) != PG_OK) return fail("prefill", &st);
    }
    pg_sampler_params sp;
    pg_sampler_defaults(&sp);
    sp.greedy = 1;
    pg_rng rng;
    pg_rng_seed(&rng, 1);
    int32_t n = (int32_t)n_ids;
    if (n_gen > n_ctx - n) n_gen = n_ctx - n;
    uint32_t hash = 2166136261u;  // FNV-1a over the bits of every step's logits
    for (int32_t i = 0; i < n_gen; i++) {
        const uint8_t *lb = (const uint8_t *)s.logits;
        for (size_t k = 0; k < sizeof(float) * (size_t)m.cfg.n_vocab; k++) hash = (hash ^ lb[k]) * 16777619u;
        int32_t t = pg_sample(s.logits, m.cfg.n_vocab, &sp, ids, n, &rng, probs, cand);
        ids[n++] = t;
        if (i + 1 < n_gen && pg_state_eval(&s, &t, 1, NULL, &st) != PG_OK) return fail("decode", &st);
    }
    print_ids("tokens: ", ids + n_ids, n - (int32_t)n_ids);
    snprintf((char *)scratch, 64, "logits-hash: %x\n", (unsigned)hash);
    out((const char *)scratch);
    snprintf((char *)scratch, 64, "kernels: %s\n", m.kern->name);
    out((const char *)scratch);
    return 0;
}

#ifdef PG_HARNESS_HOST
#include <stdlib.h>
#include <unistd.h>
// host: harness MODEL.gguf N_GEN -> the same lines on stdout
void pg_sim_write(const char *buf, size_t n) { (void)!write(1, buf, n); }
int main(int argc, char **argv) {
    if (argc != 3) {
        out("usage: harness MODEL.gguf N_GEN\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        out("error: cannot open the model\n");
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *blob = aligned_alloc(64, ((size_t)size + 63) & ~(size_t)63);
    if (!blob || fread(blob, 1, (size_t)size, f) != (size_t)size) {
        out("error: cannot read the model\n");
        return 2;
    }
    fclose(f);
    return pg_harness_run(blob, (size_t)size, atoi(argv[2]), PG_KERNELS_REF_Q8);
}
#else
// the parameters tools/xtensa_check.py loads below the blob: model size, tokens to generate
#define PG_BLOB_ADDR 0x3E000000u
#define PG_PARAMS_ADDR 0x3DFFFF00u
int pg_harness_main(void);
int pg_harness_main(void) {
    const volatile uint32_t *params = (const volatile uint32_t *)PG_PARAMS_ADDR;
    return pg_harness_run((const void *)PG_BLOB_ADDR, params[0], (int32_t)params[1], PG_KERNELS_REF_Q8);
}
#endif
