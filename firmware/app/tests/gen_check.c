// Greedy generation straight on the engine, from the exported C array (built with -DPG_LINKED and
// the export's pg_model_data.c) or from a GGUF file: tests/test_export_c.py checks both give the
// same tokens. Usage: gen_check [FILE.gguf] PROMPT N
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2.h"
#include "sampler.h"
#ifdef PG_LINKED
#include "pg_model_data.h"
#endif

int main(int argc, char **argv) {
    const uint8_t *blob;
    size_t size;
    int a = 1;
#ifdef PG_LINKED
    blob = pg_model_gguf;
    size = pg_model_gguf_size;
    if (((uintptr_t)blob & 63) != 0) {
        fprintf(stderr, "the exported array is not 64-byte aligned\n");
        return 1;
    }
#else
    if (argc < 4) return 2;
    FILE *f = fopen(argv[a++], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = aligned_alloc(64, (size + 63) / 64 * 64);
    if (fread(buf, 1, size, f) != size) return 2;
    fclose(f);
    blob = buf;
#endif
    if (argc < a + 2) return 2;
    const char *prompt = argv[a];
    int n = atoi(argv[a + 1]);
    pg_status st;
    size_t need;
    pg_model m;
    pg_state s;
    if (pg_model_mem_size(blob, size, &need, &st) || pg_model_init(&m, blob, size, malloc(need), need, PG_KERNELS_REF, &st) ||
        pg_state_mem_size(&m, 64, 8, &need, &st) || pg_state_init(&s, &m, 64, 8, malloc(need), need, &st)) {
        fprintf(stderr, "engine: %s\n", st.msg);
        return 1;
    }
    size_t len = strlen(prompt), n_ids = 0;
    int32_t ids[128];
    void *scratch = malloc(pg_tokenizer_scratch_size(len));
    if (pg_tokenizer_encode(&m.tok, (const uint8_t *)prompt, len, 0, ids, 64, &n_ids, scratch,
                            pg_tokenizer_scratch_size(len), &st) ||
        pg_state_eval(&s, ids, (int32_t)n_ids, NULL, &st)) {
        fprintf(stderr, "engine: %s\n", st.msg);
        return 1;
    }
    pg_sampler_params sp;
    pg_sampler_defaults(&sp);
    sp.greedy = 1;
    sp.repeat_penalty = 1.0f;
    pg_rng rng;
    pg_rng_seed(&rng, 1);
    for (int i = 0; i < n; i++) {
        int32_t t = pg_sample(s.logits, (int32_t)m.cfg.n_vocab, &sp, ids, (int32_t)n_ids, &rng, s.probs, s.cand);
        printf("%d%s", t, i + 1 < n ? " " : "\n");
        if (pg_state_eval(&s, &t, 1, NULL, &st)) return 1;
    }
    return 0;
}
