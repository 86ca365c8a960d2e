// pocketgpt engine: the GPT-2 forward pass (pre-norm blocks, tanh GELU, tied or separate head).
#include "gpt2.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "matmul.h"

// ---- model init ----------------------------------------------------------------------------

typedef struct {
    const pg_gguf *g;
    const pg_config *cfg;
    pg_status *st;
} pg_loader;

static pg_code find_tensor(pg_loader *L, const char *name, pg_gguf_tensor *t) {
    if (!pg_gguf_find_tensor(L->g, name, t))
        return pg_fail(L->st, PG_ERR_FORMAT, "tensor %s missing; the file is not a complete GPT-2 model", name);
    return PG_OK;
}

// A vector (n,) stored as F32 (trailing unit dimensions allowed).
static pg_code load_vector(pg_loader *L, const char *name, uint32_t n, const float **out) {
    pg_gguf_tensor t;
    pg_code rc = find_tensor(L, name, &t);
    if (rc) return rc;
    if (t.ne[0] != n || t.ne[1] != 1 || t.ne[2] != 1 || t.ne[3] != 1)
        return pg_fail(L->st, PG_ERR_FORMAT, "tensor %s has shape (%llu, %llu), the config implies (%u,)", name,
                       (unsigned long long)t.ne[1], (unsigned long long)t.ne[0], (unsigned)n);
    if (t.type != PG_TYPE_F32)
        return pg_fail(L->st, PG_ERR_UNSUPPORTED, "tensor %s is %s; vectors must be F32 (re-convert the model)", name,
                       pg_type_name(t.type));
    if (((uintptr_t)t.data & 3u) != 0)
        return pg_fail(L->st, PG_ERR_FORMAT, "tensor %s is not 4-byte aligned in memory; map the blob aligned", name);
    *out = (const float *)t.data;
    return PG_OK;
}

// A matrix (rows, cols) in any supported type.
static pg_code load_matrix(pg_loader *L, const char *name, uint32_t rows, uint32_t cols, pg_matrix *out) {
    pg_gguf_tensor t;
    pg_code rc = find_tensor(L, name, &t);
    if (rc) return rc;
    if (t.ne[0] != cols || t.ne[1] != rows || t.ne[2] != 1 || t.ne[3] != 1)
        return pg_fail(L->st, PG_ERR_FORMAT, "tensor %s has shape (%llu, %llu), the config implies (%u, %u)", name,
                       (unsigned long long)t.ne[1], (unsigned long long)t.ne[0], (unsigned)rows, (unsigned)cols);
    if (!pg_type_supported(t.type))
        return pg_fail(L->st, PG_ERR_UNSUPPORTED, "tensor %s has type %s, which this engine cannot run", name,
                       pg_type_name(t.type));
    if (((uintptr_t)t.data & 3u) != 0)
        return pg_fail(L->st, PG_ERR_FORMAT, "tensor %s is not 4-byte aligned in memory; map the blob aligned", name);
    out->data = t.data;
    out->type = t.type;
    out->rows = (int32_t)rows;
    out->cols = (int32_t)cols;
    out->row_bytes = (size_t)cols / pg_type_block(t.type) * pg_type_block_bytes(t.type);
    return PG_OK;
}

static pg_code read_config(const pg_gguf *g, pg_config *c, pg_status *st) {
    pg_gguf_value v;
    if (!pg_gguf_find(g, "general.architecture", &v) || v.type != PG_GGUF_STRING)
        return pg_fail(st, PG_ERR_FORMAT, "general.architecture missing; not a GPT-2 model file");
    size_t off = v.val_off;
    const uint8_t *s;
    uint32_t len;
    pg_gguf_read_string(g, &off, &s, &len);
    if (len != 4 || memcmp(s, "gpt2", 4) != 0)
        return pg_fail(st, PG_ERR_UNSUPPORTED, "architecture is '%.*s', this engine runs only 'gpt2'",
                       (int)(len > 32 ? 32 : len), (const char *)s);
    pg_code rc;
    if ((rc = pg_gguf_get_u32(g, "gpt2.context_length", &c->n_ctx, st)) ||
        (rc = pg_gguf_get_u32(g, "gpt2.embedding_length", &c->n_embd, st)) ||
        (rc = pg_gguf_get_u32(g, "gpt2.feed_forward_length", &c->n_ff, st)) ||
        (rc = pg_gguf_get_u32(g, "gpt2.block_count", &c->n_layer, st)) ||
        (rc = pg_gguf_get_u32(g, "gpt2.attention.head_count", &c->n_head, st)) ||
        (rc = pg_gguf_get_f32(g, "gpt2.attention.layer_norm_epsilon", &c->eps, st)))
        return rc;
    if (c->n_embd == 0 || c->n_head == 0 || c->n_layer == 0 || c->n_ctx == 0 || c->n_ff == 0 ||
        c->n_embd % c->n_head != 0 || c->n_embd > 65536 || c->n_ff > 262144 || c->n_layer > 1024 ||
        c->n_ctx > 1048576 || !(c->eps > 0.0f && c->eps < 1.0f))
        return pg_fail(st, PG_ERR_FORMAT, "inconsistent config: n_embd=%u n_head=%u n_layer=%u n_ctx=%u n_ff=%u",
                       (unsigned)c->n_embd, (unsigned)c->n_head, (unsigned)c->n_layer, (unsigned)c->n_ctx,
                       (unsigned)c->n_ff);
    pg_gguf_tensor t;
    if (!pg_gguf_find_tensor(g, "token_embd.weight", &t))
        return pg_fail(st, PG_ERR_FORMAT, "tensor token_embd.weight missing; the file is not a complete GPT-2 model");
    if (t.ne[1] == 0 || t.ne[1] > 0x7FFFFFFull) return pg_fail(st, PG_ERR_FORMAT, "token_embd.weight: bad vocabulary size");
    c->n_vocab = (uint32_t)t.ne[1];
    return PG_OK;
}

static pg_code model_build(pg_model *m, const void *blob, size_t size, pg_arena *a, int kernels, pg_status *st) {
    memset(m, 0, sizeof *m);
    pg_code rc = pg_gguf_open(&m->gguf, blob, size, st);
    if (rc) return rc;
    if ((rc = read_config(&m->gguf, &m->cfg, st))) return rc;
    const pg_config *c = &m->cfg;
    pg_loader L = {&m->gguf, c, st};
    uint32_t E = c->n_embd, F = c->n_ff, V = c->n_vocab;
    if ((rc = load_matrix(&L, "token_embd.weight", V, E, &m->wte)) ||
        (rc = load_matrix(&L, "position_embd.weight", c->n_ctx, E, &m->wpe)) ||
        (rc = load_vector(&L, "output_norm.weight", E, &m->lnf_w)) ||
        (rc = load_vector(&L, "output_norm.bias", E, &m->lnf_b)))
        return rc;
    pg_gguf_tensor ht;
    if (pg_gguf_find_tensor(&m->gguf, "output.weight", &ht)) {
        if ((rc = load_matrix(&L, "output.weight", V, E, &m->head))) return rc;
    } else {
        m->head = m->wte;
    }
    m->layers = pg_arena_take(a, pg_size_mul(c->n_layer, sizeof(pg_layer)), 8);
    pg_layer scratch_layer;
    for (uint32_t i = 0; i < c->n_layer; i++) {
        pg_layer *l = m->layers && !pg_arena_overflow(a) ? &m->layers[i] : &scratch_layer;
        char n[64];
#define PG_NAME(part) (snprintf(n, sizeof n, "blk.%u.%s", (unsigned)i, part), n)
        if ((rc = load_vector(&L, PG_NAME("attn_norm.weight"), E, &l->ln1_w)) ||
            (rc = load_vector(&L, PG_NAME("attn_norm.bias"), E, &l->ln1_b)) ||
            (rc = load_matrix(&L, PG_NAME("attn_qkv.weight"), 3 * E, E, &l->qkv)) ||
            (rc = load_vector(&L, PG_NAME("attn_qkv.bias"), 3 * E, &l->qkv_b)) ||
            (rc = load_matrix(&L, PG_NAME("attn_output.weight"), E, E, &l->proj)) ||
            (rc = load_vector(&L, PG_NAME("attn_output.bias"), E, &l->proj_b)) ||
            (rc = load_vector(&L, PG_NAME("ffn_norm.weight"), E, &l->ln2_w)) ||
            (rc = load_vector(&L, PG_NAME("ffn_norm.bias"), E, &l->ln2_b)) ||
            (rc = load_matrix(&L, PG_NAME("ffn_up.weight"), F, E, &l->up)) ||
            (rc = load_vector(&L, PG_NAME("ffn_up.bias"), F, &l->up_b)) ||
            (rc = load_matrix(&L, PG_NAME("ffn_down.weight"), E, F, &l->down)) ||
            (rc = load_vector(&L, PG_NAME("ffn_down.bias"), E, &l->down_b)))
            return rc;
#undef PG_NAME
    }
    if ((rc = pg_tokenizer_init(&m->tok, &m->gguf, V, a, st))) return rc;
    // the kernel set lives in the caller's model memory, its reference slots filled
    pg_kernels *kern = pg_arena_take(a, sizeof(pg_kernels), 8);
    if (kern && !pg_arena_overflow(a)) pg_kernels_select(kern, kernels);
    m->kern = kern;
    m->mem_needed = a->used;
    return PG_OK;
}

pg_code pg_model_mem_size(const void *blob, size_t size, size_t *bytes, pg_status *st) {
    pg_model m;
    pg_arena a;
    pg_arena_init(&a, NULL, 0);
    pg_code rc = model_build(&m, blob, size, &a, 1, st);
    *bytes = rc ? 0 : a.used;
    return rc;
}

pg_code pg_model_init(pg_model *m, const void *blob, size_t size, void *mem, size_t mem_size, int kernels,
                      pg_status *st) {
    pg_arena a;
    pg_arena_init(&a, mem, mem_size);
    if (!mem) return pg_fail(st, PG_ERR_MEMORY, "no memory given; ask pg_model_mem_size first");
    pg_code rc = model_build(m, blob, size, &a, kernels, st);
    if (rc) return rc;
    if (pg_arena_overflow(&a))
        return pg_fail(st, PG_ERR_MEMORY, "model needs %zu bytes of memory, %zu given", a.used, mem_size);
    pg_status_ok(st);
    return PG_OK;
}

// ---- state ---------------------------------------------------------------------------------

static size_t kv_row_bytes(const pg_model *m, uint32_t kv_type) {
    return (size_t)m->cfg.n_embd / pg_type_block(kv_type) * pg_type_block_bytes(kv_type);
}

// Attention keeps one row of scores per task, not per (row, head) pair: a task's scores live only
// while it works on one pair. At most PG_MAX_TASKS tasks (fewer when there are fewer pairs).
static size_t score_rows(size_t n_rows, uint32_t n_head) {
    size_t pairs = pg_size_mul(n_rows, n_head);
    return pairs < PG_MAX_TASKS ? pairs : PG_MAX_TASKS;
}

static void state_layout(pg_state *s, const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type,
                         pg_arena *a) {
    const pg_config *c = &m->cfg;
    size_t E = c->n_embd, F = c->n_ff, V = c->n_vocab, B = (size_t)n_batch, T = (size_t)n_ctx;
    size_t widest = E > F ? E : F;
    size_t f = sizeof(float);
    // every product is overflow-checked: on a 32-bit chip a huge n_ctx must fail, not wrap
    size_t kv = pg_size_mul(pg_size_mul(c->n_layer, T), kv_row_bytes(m, kv_type));
    s->k_cache = pg_arena_take(a, kv, 64);
    s->v_cache = pg_arena_take(a, kv, 64);
    s->x = pg_arena_take(a, pg_size_mul(B * E, f), 64);
    s->xn = pg_arena_take(a, pg_size_mul(B * E, f), 64);
    s->qkv = pg_arena_take(a, pg_size_mul(pg_size_mul(B, 3 * E), f), 64);
    s->att = pg_arena_take(a, pg_size_mul(B * E, f), 64);
    s->ff = pg_arena_take(a, pg_size_mul(pg_size_mul(B, F), f), 64);
    s->scores = pg_arena_take(a, pg_size_mul(pg_size_mul(score_rows(B, c->n_head), T), f), 64);
    s->rowbuf = pg_arena_take(a, pg_size_mul((size_t)PG_MAX_TASKS * widest, f), 64);
    s->xq = pg_arena_take(a, pg_size_mul(B, widest), 64);
    s->xd = pg_arena_take(a, pg_size_mul(pg_size_mul(B, widest / 32 + 1), f), 64);
    s->logits = pg_arena_take(a, pg_size_mul(V, f), 64);
    s->probs = pg_arena_take(a, pg_size_mul(V, f), 64);
    s->cand = pg_arena_take(a, pg_size_mul(V, sizeof(int32_t)), 64);
}

static pg_code check_state_args(const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type, pg_status *st) {
    if (n_ctx < 1 || (uint32_t)n_ctx > m->cfg.n_ctx)
        return pg_fail(st, PG_ERR_ARG, "context length %d outside 1..%u (the model's positions)", (int)n_ctx,
                       (unsigned)m->cfg.n_ctx);
    if (n_batch < 1 || n_batch > 4096) return pg_fail(st, PG_ERR_ARG, "batch size %d outside 1..4096", (int)n_batch);
    if (kv_type != PG_TYPE_F32 && kv_type != PG_TYPE_F16 && kv_type != PG_TYPE_Q8_0)
        return pg_fail(st, PG_ERR_ARG, "KV cache type %s unsupported; use F32, F16 or Q8_0", pg_type_name(kv_type));
    if (kv_type == PG_TYPE_Q8_0 && (m->cfg.n_embd / m->cfg.n_head) % 32 != 0)
        return pg_fail(st, PG_ERR_ARG, "a Q8_0 KV cache needs a head size that 32 divides (this model's is %u)",
                       (unsigned)(m->cfg.n_embd / m->cfg.n_head));
    return PG_OK;
}

pg_code pg_state_mem_size_kv(const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type, size_t *bytes,
                             pg_status *st) {
    pg_code rc = check_state_args(m, n_ctx, n_batch, kv_type, st);
    if (rc) return rc;
    pg_state s;
    pg_arena a;
    pg_arena_init(&a, NULL, 0);
    state_layout(&s, m, n_ctx, n_batch, kv_type, &a);
    *bytes = a.used;
    if (a.used == SIZE_MAX) return pg_fail(st, PG_ERR_MEMORY, "state size overflows this platform's address space");
    return PG_OK;
}

pg_code pg_state_mem_size(const pg_model *m, int32_t n_ctx, int32_t n_batch, size_t *bytes, pg_status *st) {
    return pg_state_mem_size_kv(m, n_ctx, n_batch, PG_TYPE_F32, bytes, st);
}

pg_code pg_state_init_kv(pg_state *s, const pg_model *m, int32_t n_ctx, int32_t n_batch, uint32_t kv_type, void *mem,
                         size_t mem_size, pg_status *st) {
    pg_code rc = check_state_args(m, n_ctx, n_batch, kv_type, st);
    if (rc) return rc;
    memset(s, 0, sizeof *s);
    pg_arena a;
    pg_arena_init(&a, mem, mem_size);
    state_layout(s, m, n_ctx, n_batch, kv_type, &a);
    if (pg_arena_overflow(&a))
        return pg_fail(st, PG_ERR_MEMORY, "state needs %zu bytes of memory, %zu given (n_ctx %d, n_batch %d)", a.used,
                       mem_size, (int)n_ctx, (int)n_batch);
    s->m = m;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    s->kv_type = kv_type;
    s->kv_row_bytes = kv_row_bytes(m, kv_type);
    s->par.n_threads = 1;
    return PG_OK;
}

pg_code pg_state_init(pg_state *s, const pg_model *m, int32_t n_ctx, int32_t n_batch, void *mem, size_t mem_size,
                      pg_status *st) {
    return pg_state_init_kv(s, m, n_ctx, n_batch, PG_TYPE_F32, mem, mem_size, st);
}

void pg_state_reset(pg_state *s) { s->n_past = 0; }

pg_code pg_state_rewind(pg_state *s, int32_t n_past, pg_status *st) {
    if (n_past < 0 || n_past > s->n_past)
        return pg_fail(st, PG_ERR_ARG, "rewind to %d positions: the cache holds %d", (int)n_past, (int)s->n_past);
    s->n_past = n_past;
    return PG_OK;
}

// Which KV cache and position each row of a forward pass belongs to: all rows of one state at
// positions pos0.. (prompt chunk), or row b of state many[b] at its n_past (batched decode).
typedef struct {
    pg_state *one;
    int32_t pos0;
    pg_state *const *many;
} pg_rows;

static pg_state *row_state(const pg_rows *r, int32_t b) { return r->many ? r->many[b] : r->one; }
static int32_t row_pos(const pg_rows *r, int32_t b) { return r->many ? r->many[b]->n_past : r->pos0 + b; }

// The activation buffers a forward pass works in (a state's own, or a pg_batch's).
typedef struct {
    float *x, *xn;        // (B, E)
    float *qkv;           // (B, 3E)
    float *att;           // (B, E)
    float *ff;            // (B, F)
    float *scores;        // (score_rows(B, n_head), scores_stride): one row per attention task
    size_t scores_stride;
    pg_matmul_work mm;    // the matrix products' buffers and threads (matmul.h)
} pg_work;

typedef struct {
    const pg_model *m;
    const pg_work *w;
    const pg_rows *rows;
    int32_t layer, B;
} pg_attn_job;

// byte offset of (layer, head, position) in a state's head-major KV cache: (layer, head, position,
// head size), so one head's positions are contiguous
static size_t kv_offset(const pg_state *s, uint32_t layer, int32_t h, int32_t H, int32_t pos) {
    size_t hb = s->kv_row_bytes / (size_t)H;
    return (((size_t)layer * (size_t)H + (size_t)h) * (size_t)s->n_ctx + (size_t)pos) * hb;
}

// causal self-attention for (row b, head h) pairs: qkv (B, 3E) -> att (B, E), each row against
// its own state's KV cache (stored as its kv_type) up to its own position
static void attn_task(void *arg, int task, int n_tasks) {
    const pg_attn_job *j = (const pg_attn_job *)arg;
    const pg_work *w = j->w;
    const pg_config *c = &j->m->cfg;
    const pg_kernels *k = j->m->kern;
    int32_t E = (int32_t)c->n_embd, H = (int32_t)c->n_head, D = E / H;
    float scale = 1.0f / sqrtf((float)D);
    for (int32_t p = task; p < j->B * H; p += n_tasks) {
        int32_t b = p / H, h = p % H, pos = row_pos(j->rows, b);
        const pg_state *s = row_state(j->rows, b);
        uint32_t kt = s->kv_type;
        pg_dot_fn dot = k->type[kt].dot;
        pg_axpy_fn axpy = k->type[kt].axpy;
        // head-major cache: this head's positions are contiguous, rb bytes apart
        size_t rb = s->kv_row_bytes / (size_t)H;
        size_t at = kv_offset(s, (uint32_t)j->layer, h, H, 0);
        const uint8_t *kc = (const uint8_t *)s->k_cache + at;
        const uint8_t *vc = (const uint8_t *)s->v_cache + at;
        const float *q = w->qkv + (size_t)b * 3 * (size_t)E + (size_t)h * (size_t)D;
        float *sc = w->scores + (size_t)task * w->scores_stride;  // this task's row (score_rows)
        int fused = kt == PG_TYPE_Q8_0 && D == 64 && k->attn_scores_q8_0_64 && k->attn_values_q8_0_64;
        float mx = -INFINITY;
        if (fused) k->attn_scores_q8_0_64(q, kc, rb, pos + 1, scale, sc);
        for (int32_t t = 0; t <= pos; t++) {
            if (!fused) sc[t] = dot(kc + (size_t)t * rb, q, D) * scale;
            if (sc[t] > mx) mx = sc[t];
        }
        float sum = k->exp_sum(sc, pos + 1, mx);
        float inv = 1.0f / sum;
        float *o = w->att + (size_t)b * (size_t)E + (size_t)h * (size_t)D;
        if (fused) {
            for (int32_t t = 0; t <= pos; t++) sc[t] *= inv;
            k->attn_values_q8_0_64(o, sc, vc, rb, pos + 1);
            continue;
        }
        for (int32_t i = 0; i < D; i++) o[i] = 0.0f;
        for (int32_t t = 0; t <= pos; t++) axpy(o, sc[t] * inv, vc + (size_t)t * rb, D);
    }
}

// one position's E values (k or v) -> the cache row, stored as kv_type. Q8_0 goes through the
// kernels' activation quantizer (the same codes and scale as pg_quantize_q8_0, faster)
static void kv_store(const pg_kernels *k, uint32_t kv_type, const float *x, void *dst, int32_t E) {
    if (kv_type == PG_TYPE_F16) {
        uint16_t *h = (uint16_t *)dst;
        for (int32_t i = 0; i < E; i++) h[i] = pg_f32_to_f16(x[i]);
    } else if (kv_type == PG_TYPE_Q8_0) {
        uint8_t *b = (uint8_t *)dst;
        for (int32_t i = 0; i < E; i += 32, b += 34) {
            float d;
            k->quantize(x + i, (int8_t *)(b + 2), &d, NULL, 32);
            uint16_t h = pg_f32_to_f16(d);
            memcpy(b, &h, 2);
        }
    } else {
        memcpy(dst, x, (size_t)E * sizeof(float));
    }
}

// x (n,) -> out (n,): (x - mean) / sqrt(var + eps) * w + b
static void layernorm(float *out, const float *x, const float *w, const float *b, int32_t n, float eps) {
    float mean = 0.0f, var = 0.0f;
    for (int32_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (int32_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    var /= (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    for (int32_t i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

// ---- forward -------------------------------------------------------------------------------

// per-row pieces of a forward pass, for pg_run_rows
typedef struct {
    float *out;
    const float *x, *w, *b;
    int32_t n;
    float eps;
} pg_norm_rows;

static void norm_row(const void *ctx, int32_t b) {
    const pg_norm_rows *c = (const pg_norm_rows *)ctx;
    layernorm(c->out + (size_t)b * (size_t)c->n, c->x + (size_t)b * (size_t)c->n, c->w, c->b, c->n, c->eps);
}

static void norm_rows(const pg_work *w, float *out, const float *x, const float *wt, const float *bias, int32_t B,
                      int32_t n, float eps) {
    pg_norm_rows c = {out, x, wt, bias, n, eps};
    pg_run_rows(w->mm.par, B, norm_row, &c);
}

typedef struct {
    const pg_kernels *k;
    float *x;
    size_t n;
} pg_gelu_rows;

static void gelu_row(const void *ctx, int32_t b) {
    const pg_gelu_rows *c = (const pg_gelu_rows *)ctx;
    c->k->gelu(c->x + (size_t)b * c->n, c->n);
}

// row b's k and v (from qkv) -> its state's cache at its position, one head at a time
typedef struct {
    const pg_model *m;
    const pg_work *w;
    const pg_rows *rows;
    uint32_t layer;
} pg_kv_rows;

static void kv_row(const void *ctx, int32_t b) {
    const pg_kv_rows *c = (const pg_kv_rows *)ctx;
    int32_t E = (int32_t)c->m->cfg.n_embd, H = (int32_t)c->m->cfg.n_head, D = E / H;
    pg_state *s = row_state(c->rows, b);
    const float *row = c->w->qkv + (size_t)b * 3 * (size_t)E;
    for (int32_t h = 0; h < H; h++) {
        size_t at = kv_offset(s, c->layer, h, H, row_pos(c->rows, b));
        kv_store(c->m->kern, s->kv_type, row + E + h * D, (uint8_t *)s->k_cache + at, D);
        kv_store(c->m->kern, s->kv_type, row + 2 * E + h * D, (uint8_t *)s->v_cache + at, D);
    }
}

// tokens (B,) of `rows` -> their states' KV caches and w->x (B, E) through all blocks; then the
// logits of every row into logits (B, V) when `all`, else of the last row only into logits (V,);
// logits NULL skips the output head
static void forward_rows(const pg_model *m, const pg_work *w, const pg_rows *rows, const int32_t *tokens, int32_t B,
                         float *logits, int all) {
    const pg_config *c = &m->cfg;
    int32_t E = (int32_t)c->n_embd, F = (int32_t)c->n_ff;
    for (int32_t b = 0; b < B; b++) {
        float *x = w->x + (size_t)b * (size_t)E;
        pg_dequant_row(m->wte.type, (const uint8_t *)m->wte.data + (size_t)tokens[b] * m->wte.row_bytes, x, E);
        pg_dequant_row(m->wpe.type, (const uint8_t *)m->wpe.data + (size_t)row_pos(rows, b) * m->wpe.row_bytes, w->xn, E);
        for (int32_t i = 0; i < E; i++) x[i] += w->xn[i];
    }
    for (uint32_t li = 0; li < c->n_layer; li++) {
        const pg_layer *l = &m->layers[li];
        norm_rows(w, w->xn, w->x, l->ln1_w, l->ln1_b, B, E, c->eps);
        pg_matmul(m->kern, &w->mm, &l->qkv, l->qkv_b, w->xn, w->qkv, B, 3 * (size_t)E);
        pg_kv_rows kv = {m, w, rows, li};
        pg_run_rows(w->mm.par, B, kv_row, &kv);
        pg_attn_job aj = {m, w, rows, (int32_t)li, B};
        int n_att = w->mm.par->n_threads > 1 ? w->mm.par->n_threads : 1;
        int rows_att = (int)score_rows((size_t)B, c->n_head);
        if (n_att > rows_att) n_att = rows_att;
        pg_run_tasks(w->mm.par, attn_task, &aj, n_att);
        pg_matmul(m->kern, &w->mm, &l->proj, l->proj_b, w->att, w->xn, B, (size_t)E);
        for (size_t i = 0; i < (size_t)B * E; i++) w->x[i] += w->xn[i];
        norm_rows(w, w->xn, w->x, l->ln2_w, l->ln2_b, B, E, c->eps);
        pg_matmul(m->kern, &w->mm, &l->up, l->up_b, w->xn, w->ff, B, (size_t)F);
        pg_gelu_rows gr = {m->kern, w->ff, (size_t)F};
        pg_run_rows(w->mm.par, B, gelu_row, &gr);
        pg_matmul(m->kern, &w->mm, &l->down, l->down_b, w->ff, w->xn, B, (size_t)E);
        for (size_t i = 0; i < (size_t)B * E; i++) w->x[i] += w->xn[i];
    }
    if (!logits) return;  // a prompt chunk that is not the last: only the KV cache matters
    if (all) {
        norm_rows(w, w->xn, w->x, m->lnf_w, m->lnf_b, B, E, c->eps);
        pg_matmul(m->kern, &w->mm, &m->head, NULL, w->xn, logits, B, c->n_vocab);
    } else {
        layernorm(w->xn, w->x + (size_t)(B - 1) * E, m->lnf_w, m->lnf_b, E, c->eps);
        pg_matmul(m->kern, &w->mm, &m->head, NULL, w->xn, logits, 1, c->n_vocab);
    }
}

static pg_work state_work(pg_state *s) {
    pg_work w = {s->x, s->xn, s->qkv, s->att, s->ff, s->scores, (size_t)s->n_ctx, {s->rowbuf, s->xq, s->xd, 0, &s->par}};
    return w;
}

// tokens (B,) at positions n_past.. -> KV cache; every position's logits into all_logits (B, V)
// when not NULL, the last one's into s->logits when need_logits
static void forward_chunk(pg_state *s, const int32_t *tokens, int32_t B, float *all_logits, int need_logits) {
    pg_work w = state_work(s);
    pg_rows rows = {s, s->n_past, NULL};
    if (all_logits) {
        forward_rows(s->m, &w, &rows, tokens, B, all_logits, 1);
        memcpy(s->logits, all_logits + (size_t)(B - 1) * s->m->cfg.n_vocab, s->m->cfg.n_vocab * sizeof(float));
    } else {
        forward_rows(s->m, &w, &rows, tokens, B, need_logits ? s->logits : NULL, 0);
    }
    s->n_past += B;
}

pg_code pg_state_eval(pg_state *s, const int32_t *tokens, int32_t n, float *all_logits, pg_status *st) {
    if (n <= 0) return pg_fail(st, PG_ERR_ARG, "nothing to evaluate (0 tokens)");
    if (n > s->n_ctx - s->n_past)
        return pg_fail(st, PG_ERR_ARG, "context full: %d tokens already, %d more exceed the %d-token context",
                       (int)s->n_past, (int)n, (int)s->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= s->m->cfg.n_vocab)
            return pg_fail(st, PG_ERR_ARG, "token id %d outside the %u-token vocabulary", (int)tokens[i],
                           (unsigned)s->m->cfg.n_vocab);
    for (int32_t i = 0; i < n; i += s->n_batch) {
        int32_t B = n - i < s->n_batch ? n - i : s->n_batch;
        forward_chunk(s, tokens + i, B, all_logits ? all_logits + (size_t)i * s->m->cfg.n_vocab : NULL, i + B == n);
    }
    return PG_OK;
}

// ---- batched decode ------------------------------------------------------------------------

static void batch_layout(pg_batch *b, const pg_model *m, int32_t n_max, pg_arena *a) {
    const pg_config *c = &m->cfg;
    size_t E = c->n_embd, F = c->n_ff, V = c->n_vocab, N = (size_t)n_max, f = sizeof(float);
    size_t widest = E > F ? E : F;
    b->x = pg_arena_take(a, pg_size_mul(N * E, f), 64);
    b->xn = pg_arena_take(a, pg_size_mul(N * E, f), 64);
    b->qkv = pg_arena_take(a, pg_size_mul(pg_size_mul(N, 3 * E), f), 64);
    b->att = pg_arena_take(a, pg_size_mul(N * E, f), 64);
    b->ff = pg_arena_take(a, pg_size_mul(pg_size_mul(N, F), f), 64);
    b->scores = pg_arena_take(a, pg_size_mul(pg_size_mul(score_rows(N, c->n_head), c->n_ctx), f), 64);
    b->rowbuf = pg_arena_take(a, pg_size_mul((size_t)PG_MAX_TASKS * widest, f), 64);
    b->xq = pg_arena_take(a, pg_size_mul(N, widest), 64);
    b->xd = pg_arena_take(a, pg_size_mul(pg_size_mul(N, widest / 32 + 1), f), 64);
    b->logits = pg_arena_take(a, pg_size_mul(pg_size_mul(N, V), f), 64);
}

pg_code pg_batch_mem_size(const pg_model *m, int32_t n_max, size_t *bytes, pg_status *st) {
    if (n_max < 1 || n_max > 4096) return pg_fail(st, PG_ERR_ARG, "batch of %d sessions outside 1..4096", (int)n_max);
    pg_batch b;
    pg_arena a;
    pg_arena_init(&a, NULL, 0);
    batch_layout(&b, m, n_max, &a);
    *bytes = a.used;
    if (a.used == SIZE_MAX) return pg_fail(st, PG_ERR_MEMORY, "batch size overflows this platform's address space");
    return PG_OK;
}

pg_code pg_batch_init(pg_batch *b, const pg_model *m, int32_t n_max, void *mem, size_t mem_size, pg_status *st) {
    size_t need;
    pg_code rc = pg_batch_mem_size(m, n_max, &need, st);
    if (rc) return rc;
    memset(b, 0, sizeof *b);
    pg_arena a;
    pg_arena_init(&a, mem, mem_size);
    batch_layout(b, m, n_max, &a);
    if (pg_arena_overflow(&a))
        return pg_fail(st, PG_ERR_MEMORY, "batch needs %zu bytes of memory, %zu given (%d sessions)", need, mem_size,
                       (int)n_max);
    b->m = m;
    b->n_max = n_max;
    b->par.n_threads = 1;
    return PG_OK;
}

pg_code pg_batch_decode(pg_batch *b, pg_state *const *states, const int32_t *tokens, int32_t n, pg_status *st) {
    const pg_model *m = b->m;
    if (n <= 0) return pg_fail(st, PG_ERR_ARG, "nothing to decode (0 sessions)");
    if (n > b->n_max) return pg_fail(st, PG_ERR_ARG, "%d sessions in one batch, this batch holds %d", (int)n, (int)b->n_max);
    for (int32_t i = 0; i < n; i++) {
        const pg_state *s = states[i];
        if (!s || s->m != m) return pg_fail(st, PG_ERR_ARG, "session %d belongs to another model", (int)i);
        if (s->n_past >= s->n_ctx)
            return pg_fail(st, PG_ERR_ARG, "session %d: context full (%d tokens)", (int)i, (int)s->n_ctx);
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->cfg.n_vocab)
            return pg_fail(st, PG_ERR_ARG, "session %d: token id %d outside the %u-token vocabulary", (int)i,
                           (int)tokens[i], (unsigned)m->cfg.n_vocab);
        for (int32_t k = 0; k < i; k++)
            if (states[k] == s) return pg_fail(st, PG_ERR_ARG, "session %d appears twice in one batch", (int)i);
    }
    pg_work w = {b->x, b->xn, b->qkv, b->att, b->ff, b->scores, (size_t)m->cfg.n_ctx, {b->rowbuf, b->xq, b->xd, 1, &b->par}};
    pg_rows rows = {NULL, 0, states};
    forward_rows(m, &w, &rows, tokens, n, b->logits, 1);
    for (int32_t i = 0; i < n; i++) {
        memcpy(states[i]->logits, b->logits + (size_t)i * m->cfg.n_vocab, m->cfg.n_vocab * sizeof(float));
        states[i]->n_past++;
    }
    pg_status_ok(st);
    return PG_OK;
}
