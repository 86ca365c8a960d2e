// pocketgpt engine: the matrix products and parallel loops of the forward pass (engine-internal).
//
// gpt2.c says what to compute; this says how a product W @ x is spread over the caller's threads
// and tiled for the kernels. Results do not depend on the thread count: each output is computed by
// the same kernel call whichever thread runs it.
#ifndef PG_MATMUL_H
#define PG_MATMUL_H

#include "gpt2.h"

// The buffers and threads a matrix product works with (parts of a pg_state's or a pg_batch's).
typedef struct {
    float *rowbuf;           // (PG_MAX_TASKS, max(E, F)) a dequantized weight row per task; the code
                             // sums of the quantized activations on the integer paths
    int8_t *xq;              // (B, max(E, F)) activations as int8 (kernels with dot_q8 / dot_q8k)
    float *xd;               // (B, max(E, F) / 32) their scales (per 32 values; per 256 in the K format)
    int row_exact;           // every row computed as if alone (batched decode: same bits as pg_state_eval)
    const pg_parallel *par;  // the caller's parallel-for
} pg_matmul_work;


// A per-row operation (layer norm, activation quantization, GELU, KV store) over B independent
// rows, spread over the threads: in a prefill chunk or a batch these were serial work between
// the parallel matrix products (~7 % of a one-thread prefill). Each row is computed by the same
// function whichever thread runs it, so the results do not depend on the thread count.
typedef void (*pg_row_fn)(const void *ctx, int32_t b);

// fn(arg, task, n_tasks) for every task, through the caller's parallel-for (inline when it has none).
// These three are inline: with one task the caller's function is called directly, and the compiler
// sees which (as separate functions they cost 6 % of a one-thread prefill and 2-3 % of decode)
static inline void pg_run_tasks(const pg_parallel *par, pg_task_fn fn, void *arg, int n_tasks) {
    if (par->run && n_tasks > 1) {
        par->run(par->pool, fn, arg, n_tasks);
    } else {
        for (int i = 0; i < n_tasks; i++) fn(arg, i, n_tasks);
    }
}

typedef struct {
    pg_row_fn fn;
    const void *ctx;
    int32_t B;
} pg_rows_job;

// contiguous rows per task: interleaved rows had two cores writing neighbouring scales and sums
// (a few floats per row) into the same cache lines
static inline void pg_rows_task(void *arg, int task, int n_tasks) {
    const pg_rows_job *j = (const pg_rows_job *)arg;
    int32_t per = (j->B + n_tasks - 1) / n_tasks, b1 = (task + 1) * per < j->B ? (task + 1) * per : j->B;
    for (int32_t b = task * per; b < b1; b++) j->fn(j->ctx, b);
}

static inline void pg_run_rows(const pg_parallel *par, int32_t B, pg_row_fn fn, const void *ctx) {
    int n = par->n_threads > 1 ? par->n_threads : 1;
    if (n > B) n = B;
    pg_rows_job j = {fn, ctx, B};
    pg_run_tasks(par, pg_rows_task, &j, n);
}

// W (rows, cols) @ x (B, cols) + bias (rows,) or NULL -> out (B, out_stride), through the kernel set
// `kern` (the integer paths when it has them for W's type)
void pg_matmul(const pg_kernels *kern, const pg_matmul_work *ws, const pg_matrix *w, const float *bias,
               const float *x, float *out, int32_t B, size_t out_stride);

#endif
