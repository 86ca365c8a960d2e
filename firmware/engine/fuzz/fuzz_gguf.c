// libFuzzer target: any bytes as a GGUF model blob. A blob that loads is also tokenized against
// and run for a few tokens. Build and run with `make -C firmware/engine fuzz` (clang).
#include <stdlib.h>
#include <string.h>

#include "gpt2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *blob = malloc(size ? size : 1);  // aligned copy, exactly `size` long for ASan
    if (!blob) return 0;
    memcpy(blob, data, size);
    pg_status st;
    size_t need;
    if (pg_model_mem_size(blob, size, &need, &st) == PG_OK && need < (256u << 20)) {
        void *mem = malloc(need ? need : 1);
        pg_model m;
        if (mem && pg_model_init(&m, blob, size, mem, need ? need : 1, 0, &st) == PG_OK) {
            int32_t ids[32];
            size_t n_ids;
            uint32_t scratch[9 * 33];
            size_t tn = size < 32 ? size : 32;
            pg_tokenizer_encode(&m.tok, data, tn, 1, ids, 32, &n_ids, scratch, sizeof scratch, &st);
            size_t sneed;
            if (pg_state_mem_size(&m, 2, 2, &sneed, &st) == PG_OK && sneed < (64u << 20)) {
                void *smem = malloc(sneed);
                pg_state s;
                if (smem && pg_state_init(&s, &m, 2, 2, smem, sneed, &st) == PG_OK) {
                    int32_t t[2] = {0, 0};
                    pg_state_eval(&s, t, 2, NULL, &st);
                }
                free(smem);
            }
        }
        free(mem);
    }
    free(blob);
    return 0;
}
