// pocketgpt engine: matrix products for the forward pass (see matmul.h): the split of a product
// into tasks over the caller's threads, the activation quantization once per product, and the
// tiling that hands the kernels several activation rows per weight row. The arithmetic is the
// kernels' (kernels.h); nothing here changes a result's bits, whatever the thread count.
#include "matmul.h"

typedef struct {
    const pg_kernels *k;
    const pg_matrix *w;
    const float *bias;  // (rows,) or NULL
    const float *x;     // (B, cols)
    const int8_t *xq;   // (B, cols) quantized x, or NULL
    const float *xd;    // (B, cols / 32) its scales
    const float *xs;    // (B, cols / 16) sums of the int8 codes per 16 values
    float *rowbuf;      // (n_tasks, cols) per-task dequantized row
    float *out;         // (B, out_stride) -> out[b][r]
    int32_t B;
    size_t out_stride;
    int row_exact;      // no shared dequantized row: each b gets the single-row kernel's bits
    const int16_t *xk;  // (B, cols / 16) K-format code sums when x is in the K format (xd: (B, cols / 256)), else NULL
} pg_matmul_job;

#if defined(__GNUC__)
#define PG_NOINLINE __attribute__((noinline))
#else
#define PG_NOINLINE
#endif

// Activation rows per tile of the K-format path below: its result tile takes 8 x PG_K_TILE floats
// of stack, 2 KiB on the host; the chip's worker tasks have 4 KiB stacks (its own kernels never
// come here, but "ref-q8", the check the port's README suggests, does), so 512 bytes there.
#if defined(PG_TARGET_ESP32S3)
#define PG_K_TILE 16
#else
#define PG_K_TILE 64
#endif

// a tile of results o (nr weight rows from r, each a row of activation rows b0..b0 + nb - 1 at
// o + q * stride) plus the bias, stored so each activation row's nr results go out together (one
// float per activation row and weight row went to places 9-200 KiB apart)
static void store_tile(const pg_matmul_job *j, int32_t r, int32_t nr, int32_t b0, int32_t nb, const float *o,
                       size_t stride) {
    float bias[8] = {0};
    if (j->bias)
        for (int32_t q = 0; q < nr; q++) bias[q] = j->bias[r + q];
    for (int32_t b = 0; b < nb; b++) {
        float *dst = j->out + (size_t)(b0 + b) * j->out_stride + (size_t)r;
        for (int32_t q = 0; q < nr; q++) dst[q] = o[(size_t)q * stride + (size_t)b] + bias[q];
    }
}

// rows r0..r1 of W against the first b16 activation rows, sixteen at a time through the 16-row
// kernel (the same bits as one by one), their per-block scales and code sums transposed once per
// task for up to 64 rows at a time (rows of up to 16 blocks, 4,096 columns). Its own function,
// never inlined: its ~10 KiB of stack scratch exists only on kernel sets with a 16-row kernel
// (x86), never in the frames the chip's 4 KiB worker stacks run
static PG_NOINLINE void matmul_rows_k16(const pg_matmul_job *j, int32_t r0, int32_t r1, int32_t b16) {
    const pg_kernels *k = j->k;
    uint32_t t = j->w->type;
    int32_t cols = j->w->cols;
    size_t blocks = (size_t)cols / 256, sums = (size_t)cols / 16;
    const uint8_t *base = (const uint8_t *)j->w->data;
    for (int32_t c0 = 0; c0 < b16; c0 += 64) {
        int32_t c1 = b16 - c0 < 64 ? b16 : c0 + 64;
        float xdt[4][16 * 16];
        int32_t xat[4][16 * 16];
        for (int32_t b = c0; b < c1; b += 16)
            pg_k_rows16_prepare(j->xd + (size_t)b * blocks, j->xk + (size_t)b * sums, cols, xdt[(b - c0) / 16],
                                xat[(b - c0) / 16]);
        // tiles of 8 weight rows x these up to 64 activation rows
        for (int32_t r = r0; r < r1; r += 8) {
            int32_t nr = r1 - r < 8 ? r1 - r : 8;
            float o[8][64];
            for (int32_t q = 0; q < nr; q++)
                for (int32_t b = c0; b < c1; b += 16)
                    k->type[t].dot_q8kx16(base + (size_t)(r + q) * j->w->row_bytes, j->xq + (size_t)b * (size_t)cols,
                                     xdt[(b - c0) / 16], xat[(b - c0) / 16], cols, o[q] + (b - c0));
            store_tile(j, r, nr, c0, c1 - c0, &o[0][0], 64);
        }
    }
}

// the K-format integer path of matmul_task: rows r0..r1 of W against all B activation rows
// (never inlined, so its result tile stays out of matmul_task's frame)
static PG_NOINLINE void matmul_rows_k(const pg_matmul_job *j, int32_t r0, int32_t r1) {
    const pg_kernels *k = j->k;
    uint32_t t = j->w->type;
    int32_t cols = j->w->cols;
    size_t blocks = (size_t)cols / 256, sums = (size_t)cols / 16;
    const uint8_t *base = (const uint8_t *)j->w->data;
    int32_t b16 = k->type[t].dot_q8kx16 && blocks <= 16 ? j->B / 16 * 16 : 0;
    if (b16) matmul_rows_k16(j, r0, r1, b16);
    if (j->B - b16 < 4) {  // one to three rows (decode): straight, which measured faster there
        int32_t r = r0;
        pg_dot_q8k_w8_fn w8 = k->type[t].dot_q8kw8;
        if (w8) {  // 8 weight rows per call against each activation row (the same bits as one by one)
            for (; r + 8 <= r1; r += 8) {
                for (int32_t b = b16; b < j->B; b++) {
                    float *o = j->out + (size_t)b * j->out_stride + (size_t)r;
                    w8(base + (size_t)r * j->w->row_bytes, j->w->row_bytes, j->xq + (size_t)b * (size_t)cols,
                       j->xd + (size_t)b * blocks, j->xk + (size_t)b * sums, cols, o);
                    if (j->bias)
                        for (int32_t q = 0; q < 8; q++) o[q] += j->bias[r + q];
                }
            }
        }
        for (; r < r1; r++) {
            const void *row = base + (size_t)r * j->w->row_bytes;
            float bias = j->bias ? j->bias[r] : 0.0f;
            for (int32_t b = b16; b < j->B; b++)
                j->out[(size_t)b * j->out_stride + (size_t)r] =
                    k->type[t].dot_q8k(row, j->xq + (size_t)b * (size_t)cols, j->xd + (size_t)b * blocks,
                                  j->xk + (size_t)b * sums, cols) + bias;
        }
        return;
    }
    // the rest (rows past the multiples of 16, or types without a 16-row kernel) in tiles of 8
    // weight rows x up to PG_K_TILE activation rows
    for (int32_t c0 = b16; c0 < j->B; c0 += PG_K_TILE) {
        int32_t nb = j->B - c0 < PG_K_TILE ? j->B - c0 : PG_K_TILE;
        const int8_t *xq = j->xq + (size_t)c0 * (size_t)cols;
        const float *xd = j->xd + (size_t)c0 * blocks;
        const int16_t *xk = j->xk + (size_t)c0 * sums;
        for (int32_t r = r0; r < r1; r += 8) {
            int32_t nr = r1 - r < 8 ? r1 - r : 8;
            float o[8][PG_K_TILE];
            for (int32_t q = 0; q < nr; q++) {
                const void *row = base + (size_t)(r + q) * j->w->row_bytes;
                int32_t b = 0;
                if (k->type[t].dot_q8kx8)  // eight activation rows per weight unpacking (same bits as one by one)
                    for (; b + 8 <= nb; b += 8)
                        k->type[t].dot_q8kx8(row, xq + (size_t)b * (size_t)cols, xd + (size_t)b * blocks, xk + (size_t)b * sums,
                                        cols, o[q] + b);
                if (k->type[t].dot_q8kx4)
                    for (; b + 4 <= nb; b += 4)
                        k->type[t].dot_q8kx4(row, xq + (size_t)b * (size_t)cols, xd + (size_t)b * blocks, xk + (size_t)b * sums,
                                        cols, o[q] + b);
                for (; b < nb; b++)
                    o[q][b] = k->type[t].dot_q8k(row, xq + (size_t)b * (size_t)cols, xd + (size_t)b * blocks, xk + (size_t)b * sums,
                                            cols);
            }
            store_tile(j, r, nr, c0, nb, &o[0][0], PG_K_TILE);
        }
    }
}

// W (rows, cols) @ x[b] (cols,) + bias -> out[b] (rows,), rows split across tasks
static void matmul_task(void *arg, int task, int n_tasks) {
    const pg_matmul_job *j = (const pg_matmul_job *)arg;
    int32_t rows = j->w->rows, cols = j->w->cols;
    int32_t per = (rows + n_tasks - 1) / n_tasks;
    int32_t r0 = task * per, r1 = r0 + per < rows ? r0 + per : rows;
    if (j->xk) {
        matmul_rows_k(j, r0, r1);
        return;
    }
    const pg_type_kernels *tk = &j->k->type[j->w->type];
    pg_dot_fn dot = tk->dot;
    pg_dot_q8_fn dot_q8 = tk->dot_q8;
    const pg_dot_q8x4_fn multi[2] = {tk->dot_q8x8, tk->dot_q8x4};  // 8 and 4 activation rows at once
    const int32_t width[2] = {8, 4};
    const uint8_t *base = (const uint8_t *)j->w->data;
    size_t groups = (size_t)cols / 32, sums = (size_t)cols / 16;
    // a float batch (prefill) dequantizes each row once and reuses it for every token
    int reuse = j->B > 2 && !j->xq && j->w->type != PG_TYPE_F32 && !j->row_exact;
    float *buf = j->rowbuf + (size_t)task * (size_t)cols;
    pg_dot_fn dot_f32 = j->k->type[PG_TYPE_F32].dot;
    for (int32_t r = r0; r < r1; r++) {
        const void *row = base + (size_t)r * j->w->row_bytes;
        float bias = j->bias ? j->bias[r] : 0.0f;
        if (j->xq) {  // integer path: the row stays in L1 while every activation row passes
            int32_t b = 0;
            // eight, then four activation rows per weight unpacking (the same bits as one by one)
            for (int m = 0; m < 2; m++) {
                if (!multi[m]) continue;
                for (; b + width[m] <= j->B; b += width[m]) {
                    float o[8];
                    multi[m](row, j->xq + (size_t)b * (size_t)cols, j->xd + (size_t)b * groups, j->xs + (size_t)b * sums,
                             cols, o);
                    for (int k = 0; k < width[m]; k++) j->out[(size_t)(b + k) * j->out_stride + (size_t)r] = o[k] + bias;
                }
            }
            for (; b < j->B; b++)
                j->out[(size_t)b * j->out_stride + (size_t)r] =
                    dot_q8(row, j->xq + (size_t)b * (size_t)cols, j->xd + (size_t)b * groups, j->xs + (size_t)b * sums,
                           cols) + bias;
        } else if (reuse) {
            pg_dequant_row(j->w->type, row, buf, cols);
            for (int32_t b = 0; b < j->B; b++)
                j->out[(size_t)b * j->out_stride + (size_t)r] = dot_f32(buf, j->x + (size_t)b * (size_t)cols, cols) + bias;
        } else {
            for (int32_t b = 0; b < j->B; b++)
                j->out[(size_t)b * j->out_stride + (size_t)r] = dot(row, j->x + (size_t)b * (size_t)cols, cols) + bias;
        }
    }
}

// activation rows x (B, cols) -> xq (B, cols) and per 32 values xd (B, cols / 32) and float sums
// xs (B, cols / 16), or in the K format (xk set: xd (B, cols / 256), int16 sums xk (B, cols / 16))
typedef struct {
    const pg_kernels *k;
    const float *x;
    int8_t *xq;
    float *xd, *xs;
    int16_t *xk;
    size_t cols;
} pg_quant_rows;

static void quant_row(const void *ctx, int32_t b) {
    const pg_quant_rows *q = (const pg_quant_rows *)ctx;
    size_t c = q->cols;
    const float *x = q->x + (size_t)b * c;
    int8_t *xq = q->xq + (size_t)b * c;
    if (q->xk)
        q->k->quantize_k(x, xq, q->xd + (size_t)b * (c / 256), q->xk + (size_t)b * (c / 16), (int)c);
    else
        q->k->quantize(x, xq, q->xd + (size_t)b * (c / 32), q->xs + (size_t)b * (c / 16), (int)c);
}

void pg_matmul(const pg_kernels *kern, const pg_matmul_work *ws, const pg_matrix *w, const float *bias,
               const float *x, float *out, int32_t B, size_t out_stride) {
    // several tasks per thread on big matrices (about 256 rows each, at most PG_MAX_TASKS: the
    // float path keeps a row buffer per task), handed out as threads come free, so a thread the OS
    // descheduled (a shared machine) does not leave the others waiting on its half. 128-row tasks
    // measured slower (the shared task counter moves between cores more often).
    int threads = ws->par->n_threads > 1 ? ws->par->n_threads : 1;
    size_t cols = (size_t)w->cols;
    int integer = kern->type[w->type].dot_q8 && cols % 32 == 0;
    int cap = PG_MAX_TASKS;
    if (threads > cap) threads = cap;
    int n = threads;
    if (w->rows < 64 * n) n = 1;
    else if (n > 1) {
        int k = w->rows / (256 * threads);
        if (k > cap / threads) k = cap / threads;
        if (k > 1) n = threads * k;
    }
    int kfmt = kern->type[w->type].dot_q8k && cols % 256 == 0;
    if (!integer && !kfmt) {
        pg_matmul_job j = {kern, w, bias, x, NULL, NULL, NULL, ws->rowbuf, out, B, out_stride, ws->row_exact, NULL};
        pg_run_tasks(ws->par, matmul_task, &j, n);
        return;
    }
    // integer paths: quantize x once (per 32 values, or per 256 in the K format); the code sums
    // (float per 32, int16 in the K format) live in rowbuf (unused by these paths), which holds
    // PG_MAX_TASKS * cols floats, i.e. the sums of up to 16 * PG_MAX_TASKS rows at a time
    float *xs = kfmt ? NULL : ws->rowbuf;
    int16_t *xk = kfmt ? (int16_t *)ws->rowbuf : NULL;
    int32_t chunk = 16 * PG_MAX_TASKS;
    for (int32_t b0 = 0; b0 < B; b0 += chunk) {
        int32_t nb = B - b0 < chunk ? B - b0 : chunk;
        pg_quant_rows q = {kern, x + (size_t)b0 * cols, ws->xq, ws->xd, xs, xk, cols};
        pg_run_rows(ws->par, nb, quant_row, &q);
        pg_matmul_job j = {kern, w, bias, NULL, ws->xq, ws->xd, xs, NULL, out + (size_t)b0 * out_stride, nb,
                           out_stride, ws->row_exact, xk};
        pg_run_tasks(ws->par, matmul_task, &j, n);
    }
}
