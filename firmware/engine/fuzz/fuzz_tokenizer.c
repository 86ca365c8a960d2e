// libFuzzer target: any bytes as text for the BPE tokenizer of the model in PG_FUZZ_MODEL.
// Encoding must succeed and decoding must give the input back byte for byte.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2.h"

static pg_model s_model;
static int s_ready;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("PG_FUZZ_MODEL");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        fprintf(stderr, "set PG_FUZZ_MODEL to a GPT-2 GGUF\n");
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *blob = malloc((size_t)n);
    if (!blob || fread(blob, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    pg_status st;
    size_t need;
    if (pg_model_mem_size(blob, (size_t)n, &need, &st) != PG_OK) abort();
    void *mem = malloc(need);
    if (pg_model_init(&s_model, blob, (size_t)n, mem, need, 0, &st) != PG_OK) abort();
    s_ready = 1;  // blob and mem live for the whole run
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_ready || size > 4096) return 0;
    int32_t *ids = malloc((size + 1) * sizeof(int32_t));
    size_t ss = pg_tokenizer_scratch_size(size);
    void *scratch = malloc(ss);
    size_t n_ids;
    pg_status st;
    if (pg_tokenizer_encode(&s_model.tok, data, size, 1, ids, size + 1, &n_ids, scratch, ss, &st) != PG_OK) abort();
    size_t nb = 0;
    for (size_t i = 0; i < n_ids; i++) {
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(&s_model.tok, ids[i], &len);
        if (nb + len > size || memcmp(data + nb, b, len) != 0) abort();
        nb += len;
    }
    if (nb != size) abort();
    free(ids);
    free(scratch);
    return 0;
}
