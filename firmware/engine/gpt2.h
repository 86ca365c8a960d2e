// pocketgpt engine: GPT-2 forward pass with a KV cache, over weights read in place from a GGUF.
//
// Memory contract: the caller asks pg_model_mem_size / pg_state_mem_size how many bytes it needs,
// hands over that much memory, and nothing is allocated afterwards. A pg_model is read-only after
// init and may be shared by several pg_state (sessions) running on different threads; each state
// owns its KV cache and activations.
#ifndef PG_GPT2_H
#define PG_GPT2_H

#include "gguf.h"
#include "kernels.h"
#include "textout.h"  // and through it tokenizer.h

// Most tasks a matrix product is split into (bounds the per-task row buffers).
#define PG_MAX_TASKS 16

typedef struct {
    uint32_t n_vocab, n_ctx, n_embd, n_layer, n_head, n_ff;
    float eps;
} pg_config;

// A weight matrix (rows, cols) in GGUF/numpy order: y = W @ x with x of length cols.
typedef struct {
    const void *data;  // rows * row_bytes bytes inside the blob
    uint32_t type;     // PG_TYPE_*
    int32_t rows, cols;
    size_t row_bytes;
} pg_matrix;

typedef struct {
    const float *ln1_w, *ln1_b;    // (E,)
    pg_matrix qkv;                 // (3E, E)
    const float *qkv_b;            // (3E,)
    pg_matrix proj;                // (E, E)
    const float *proj_b;           // (E,)
    const float *ln2_w, *ln2_b;    // (E,)
    pg_matrix up;                  // (F, E)
    const float *up_b;             // (F,)
    pg_matrix down;                // (E, F)
    const float *down_b;           // (E,)
} pg_layer;

typedef struct {
    pg_gguf gguf;
    pg_config cfg;
    pg_tokenizer tok;
    pg_matrix wte;                 // (V, E) token embedding
    pg_matrix wpe;                 // (n_ctx, E) position embedding
    pg_matrix head;                // (V, E) output head (= wte when tied)
    const float *lnf_w, *lnf_b;    // (E,)
    pg_layer *layers;              // (n_layer,)
    const pg_kernels *kern;
    size_t mem_needed;             // bytes of caller memory the model uses
} pg_model;

// Bytes of memory pg_model_init needs for this blob (tokenizer tables and layer table).
pg_code pg_model_mem_size(const void *blob, size_t size, size_t *bytes, pg_status *st);
// Validate the blob (header, config, every tensor's type and shape, tokenizer) and build the model.
// The blob must stay mapped and unchanged while the model is used. kernels: PG_KERNELS_BEST,
// PG_KERNELS_REF (portable float) or PG_KERNELS_REF_Q8 (portable integer-activation path).
pg_code pg_model_init(pg_model *m, const void *blob, size_t size, void *mem, size_t mem_size, int kernels,
                      pg_status *st);

typedef struct {
    const pg_model *m;
    int32_t n_ctx;                 // positions this state holds (<= model n_ctx)
    int32_t n_batch;               // tokens per forward chunk (prefill batching)
    int32_t n_past;                // positions already in the KV cache
    void *k_cache, *v_cache;       // (n_layer, n_head, n_ctx, E / n_head) stored as kv_type: head-major
    uint32_t kv_type;              // PG_TYPE_F32 (pg_state_init), PG_TYPE_F16 or PG_TYPE_Q8_0
    size_t kv_row_bytes;           // bytes of one position's E values
    float *x, *xn;                 // (n_batch, E) residual stream, normalised copy
    float *qkv;                    // (n_batch, 3E)
    float *att;                    // (n_batch, E)
    float *ff;                     // (n_batch, F)
    float *scores;                 // (min(n_batch * n_head, PG_MAX_TASKS), n_ctx) one row per attention task
    float *rowbuf;                 // (PG_MAX_TASKS, max(E, F)) a weight row dequantized once per batch
    int8_t *xq;                    // (n_batch, max(E, F)) activations as int8 (kernels with dot_q8 / dot_q8k)
    float *xd;                     // (n_batch, max(E, F) / 32) their scales (per 32 values; per 256 in the K format)
    float *logits;                 // (V,) logits of the last evaluated position
    float *probs;                  // (V,) sampler scratch
    int32_t *cand;                 // (V,) sampler scratch
    pg_parallel par;               // the caller's parallel-for (serial when run is NULL)
} pg_state;

pg_code pg_state_mem_size(const pg_model *m, int32_t n_ctx, int32_t n_batch, size_t *bytes, pg_status *st);
pg_code pg_state_init(pg_state *s, const pg_model *m, int32_t n_ctx, int32_t n_batch, void *mem, size_t mem_size,
                      pg_status *st);
// The same with the KV cache stored as kv_type: PG_TYPE_F32 (exact), PG_TYPE_F16 (half the
// memory) or PG_TYPE_Q8_0 (~27 %; needs a head size that 32 divides). Attention reads it directly.
pg_code pg_state_mem_size_kv(const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type, size_t *bytes,
                             pg_status *st);
pg_code pg_state_init_kv(pg_state *s, const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type, void *mem,
                         size_t mem_size, pg_status *st);
void pg_state_reset(pg_state *s);
// Forget every position from n_past on (0 <= n_past <= s->n_past): the next eval writes there.
// Speculative decoding drops the rejected draft tokens with it. s->logits is stale afterwards.
pg_code pg_state_rewind(pg_state *s, int32_t n_past, pg_status *st);
// Append n tokens at positions n_past.. (in chunks of n_batch). all_logits (n, V) receives every
// position's logits when not NULL; s->logits always holds the last position's.
pg_code pg_state_eval(pg_state *s, const int32_t *tokens, int32_t n, float *all_logits, pg_status *st);

// Workspace for pg_batch_decode: the activations of up to n_max sessions stepped together. The
// sessions keep their own KV caches and logits; one pg_batch serves any sessions of its model.
typedef struct {
    const pg_model *m;
    int32_t n_max;                 // most sessions per call
    float *x, *xn;                 // (n_max, E)
    float *qkv;                    // (n_max, 3E)
    float *att;                    // (n_max, E)
    float *ff;                     // (n_max, F)
    float *scores;                 // (min(n_max * n_head, PG_MAX_TASKS), model n_ctx) one row per task
    float *rowbuf;                 // (PG_MAX_TASKS, max(E, F))
    int8_t *xq;                    // (n_max, max(E, F)) int8 activations
    float *xd;                     // (n_max, max(E, F) / 32) their scales (per 32 or per 256 values)
    float *logits;                 // (n_max, V)
    pg_parallel par;               // the caller's parallel-for (serial when run is NULL)
} pg_batch;

pg_code pg_batch_mem_size(const pg_model *m, int32_t n_max, size_t *bytes, pg_status *st);
pg_code pg_batch_init(pg_batch *b, const pg_model *m, int32_t n_max, void *mem, size_t mem_size, pg_status *st);
// Append tokens[i] to states[i] for i < n, each at its own position (n_past), as one forward pass:
// every weight matrix is read once for all n rows. Afterwards states[i]->logits holds that
// session's next-token logits and its n_past has grown by one, exactly as pg_state_eval of one
// token would leave it (bit for bit: every row goes through the single-row kernels). Nothing changes unless every argument is
// valid (distinct states of b's model, each with room for one more token, tokens in the vocabulary).
pg_code pg_batch_decode(pg_batch *b, pg_state *const *states, const int32_t *tokens, int32_t n, pg_status *st);

#endif
