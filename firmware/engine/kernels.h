// pocketgpt engine: matrix-vector kernels.
//
// Every weight type has one dot product "row (n weights, stored as `type`) . x (n floats)". The
// portable _ref set dequantizes block by block and is the definition; fast sets (_x86 with
// AVX2/AVX-512F/VNNI picked at run time, _esp32s3 with the PIE SIMD unit, compiled only for that chip)
// must give the same results up to float summation order. PG_FORCE_REF at build time, or
// force_ref at model init, uses _ref everywhere.
#ifndef PG_KERNELS_H
#define PG_KERNELS_H

#include "pg_common.h"

// row (n,) stored as a type . x (n,) -> float; n is a multiple of the type's block
typedef float (*pg_dot_fn)(const void *row, const float *x, int n);

// row (n,) stored as a type . x (n,) given as int8 xq (n,) with one float scale xd per 32 values
// and xs, the plain sum of the int8 codes of every 16 values (n / 16 floats, exact integers), for
// types with offsets (activations quantized once per matmul by pg_quantize_act) -> float. The
// integer fast path: x86 multiplies bytes (maddubs / VNNI), the ESP32-S3's PIE unit has no float
// SIMD. Each type's _ref version is the definition. xq is 16-byte aligned.
typedef float (*pg_dot_q8_fn)(const void *row, const int8_t *xq, const float *xd, const float *xs, int n);

// x (n,) -> int8 codes, scales and sums: pg_quantize_act's contract, bit for bit
typedef void (*pg_quantize_fn)(const float *x, int8_t *xq, float *xd, float *xs, int n);

// dot_q8 of one weight row against 4 activation rows at once (rows r at xq + r * n, xd + r * n / 32,
// xs + r * n / 16) -> out[0..3]: the weights are unpacked once (prefill, batched decode). Each
// out[r] must be the same bits as dot_q8 of row r alone.
typedef void (*pg_dot_q8x4_fn)(const void *row, const int8_t *xq, const float *xd, const float *xs, int n, float *out);

// y (n,) += a * row (n,) stored as a type (F32, F16 or Q8_0: the KV cache types)
typedef void (*pg_axpy_fn)(float *y, float a, const void *row, int n);

// The K-quant activation format (as ggml's Q8_K): x (n,) in super-blocks of 256 values -> int8
// codes xq (n,), one float scale xd per 256 values and xs (n / 16,), the int16 sums of the codes
// per 16 values (for the K-quants' offsets and mins). With one activation scale per weight
// super-block, a Q3_K/Q4_K block accumulates in integers (sub-block scales as integer multiplies)
// and converts to float once; pg_quantize_act_k's contract.
typedef void (*pg_quantize_k_fn)(const float *x, int8_t *xq, float *xd, int16_t *xs, int n);

// row (n,) stored as a type . x (n,) given in the K format -> float (n a multiple of 256)
typedef float (*pg_dot_q8k_fn)(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n);

// dot_q8k of one weight row against R activation rows (row r at xq + r * n, xd + r * n / 256,
// xs + r * n / 16) -> out[0..R-1], the weights unpacked once; each out[r] the same bits as
// dot_q8k of row r alone
typedef void (*pg_dot_q8k_rows_fn)(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n,
                                   float *out);

// dot_q8k of one weight row against 16 activation rows -> out[0..15], each the same bits as dot_q8k
// of that row alone: codes xq (row r at xq + r * n) and, transposed, the per-256 values the caller
// prepares once per matmul task (not once per weight row): xdt (n / 256, 16) the rows' scales and xat
// (n / 256, 16) the plain sums of each block's 256 codes (pg_k_rows16_prepare)
typedef void (*pg_dot_q8k_x16_fn)(const void *row, const int8_t *xq, const float *xdt, const int32_t *xat, int n,
                                  float *out);

// dot_q8k of 8 consecutive weight rows (row q at row + q * stride bytes) against one activation
// row -> out[0..7], each the same bits as dot_q8k of that weight row alone. Decode: one activation
// row meets every weight row, and for short rows (a 256-wide model's head is one block per row)
// the per-row call, set-up and final sums cost as much as the arithmetic; here 8 rows share them
typedef void (*pg_dot_q8k_w8_fn)(const void *row, size_t stride, const int8_t *xq, const float *xd, const int16_t *xs,
                                 int n, float *out);

// 16 K-format activation rows (xd (16, n / 256), xs (16, n / 16)) -> xdt, xat as pg_dot_q8k_x16_fn takes
void pg_k_rows16_prepare(const float *xd, const int16_t *xs, int n, float *xdt, int32_t *xat);

// One weight type's kernels (as ggml's per-type traits). `dot` (and `axpy` for the KV cache types)
// is the reference slot: pg_kernels_select fills it from the portable set when a fast set leaves it
// empty, so every selected set has one for each supported type. The rest are optional paths the
// engine takes only when present.
typedef struct {
    pg_dot_fn dot;                 // NULL in a set: the portable one (unsupported types stay NULL)
    pg_axpy_fn axpy;               // y += a * row, for the KV cache types F32, F16, Q8_0 (attention)
    pg_dot_q8_fn dot_q8;           // non-NULL: the engine quantizes activations for this type
    pg_dot_q8x4_fn dot_q8x4;       // optional: dot_q8 for 4 activation rows at once
    pg_dot_q8x4_fn dot_q8x8;       // optional: the same for 8 rows (out[0..7])
    // optional K-format integer path: non-NULL dot_q8k makes the engine quantize activations per
    // 256 values (quantize_k) for matrices of this type whose rows 256 divides; it takes
    // precedence over dot_q8
    pg_dot_q8k_fn dot_q8k;
    pg_dot_q8k_rows_fn dot_q8kx4;  // optional: 4 activation rows at once
    pg_dot_q8k_rows_fn dot_q8kx8;  // optional: 8 activation rows at once
    pg_dot_q8k_x16_fn dot_q8kx16;  // optional: 16 activation rows at once (see the type)
    pg_dot_q8k_w8_fn dot_q8kw8;    // optional: 8 weight rows against one activation row (decode)
} pg_type_kernels;

// A kernel set: filled by name (designated initializers), one pg_type_kernels per weight type.
// The reference slots (each type's dot and axpy, quantize, quantize_k, gelu, exp_sum) may be left
// empty in a set's table; pg_kernels_select fills them from the portable set, as esp-nn falls back
// to its _ansi functions, so the engine never checks them.
typedef struct {
    const char *name;
    pg_type_kernels type[PG_TYPE_COUNT];
    pg_quantize_fn quantize;             // pg_quantize_act's contract (per 32 values)
    pg_quantize_k_fn quantize_k;         // pg_quantize_act_k's contract (per 256 values)
    void (*gelu)(float *x, size_t n);    // GPT-2's tanh GELU in place
    float (*exp_sum)(float *x, int n, float mx);  // x[i] = e^(x[i] - mx) in place, returns the sum
    // optional attention over a Q8_0 KV cache for 64-wide heads, the per-position loops fused:
    // scores[t] = q . k_t * scale for t < n (rows `stride` bytes apart), and o (64,) = sum_t w[t] v_t
    void (*attn_scores_q8_0_64)(const float *q, const uint8_t *k, size_t stride, int n, float scale, float *scores);
    void (*attn_values_q8_0_64)(float *o, const float *w, const uint8_t *v, size_t stride, int n);
} pg_kernels;

// x (n,) -> Q8_0 blocks (n / 32 of them) as ggml's reference quantizer: d = max|x| / 127 stored
// as a half, q = round(x / d)
void pg_quantize_q8_0(const float *x, void *out, int n);

enum { PG_KERNELS_BEST = 0, PG_KERNELS_REF = 1, PG_KERNELS_REF_Q8 = 2, PG_KERNELS_NO_AVX512 = 3, PG_KERNELS_FLOAT = 4 };

// x (n,) -> xq (n,) int8, xd (n / 32,) scales and xs (n / 16,) code sums (xs may be NULL):
// per 32 values d = max|x| / 127, q = round half away from zero (x / d); per 16 values s = sum(q)
void pg_quantize_act(const float *x, int8_t *xq, float *xd, float *xs, int n);

// x (n,), n a multiple of 256 -> xq (n,) int8, xd (n / 256,) scales and xs (n / 16,) int16 code
// sums: per 256 values d = max|x| / 127, q = round half away from zero (x / d) (pg_quantize_act's
// rounding, over 256 values instead of 32); per 16 values s = sum(q)
void pg_quantize_act_k(const float *x, int8_t *xq, float *xd, int16_t *xs, int n);
// the portable K-format dot of a type (NULL when the type has none)
pg_dot_q8k_fn pg_dot_q8k_ref(uint32_t type);

// One block of a quantized type (pg_type_block weights) -> floats y; NULL for F32/F16/unknown.
typedef void (*pg_dequant_block_fn)(const uint8_t *block, float *y);
pg_dequant_block_fn pg_dequant_block(uint32_t type);

// Stored row (n weights) -> floats out (n,). Portable reference for every known type.
void pg_dequant_row(uint32_t type, const void *row, float *out, int n);
// 1 when the type has a dequantizer/dot in this build.
int pg_type_supported(uint32_t type);

// the portable integer-activation dot of a type (NULL when the type has none)
pg_dot_q8_fn pg_dot_q8_ref(uint32_t type);
// mode -> *out, the kernel set with its empty reference slots filled from the portable set.
// PG_KERNELS_BEST: the fastest set this CPU runs; PG_KERNELS_REF: portable float reference;
// PG_KERNELS_REF_Q8: portable reference of the integer-activation paths (per-32 scales, what the
// chip uses; the K format for Q3_K/Q4_K, what the x86 sets use);
// PG_KERNELS_NO_AVX512: the best set without AVX-512 (to test the AVX2 kernels on any machine);
// PG_KERNELS_FLOAT: the best set with float activations only (no dot_q8), the pre-integer path.
void pg_kernels_select(pg_kernels *out, int mode);

#if defined(__x86_64__) || defined(__i386__)
// AVX-512 when allowed and present, else AVX2; with allow_int the integer-activation kernels
// (dot_q8); NULL when the CPU lacks AVX2/FMA/F16C. The raw table: pg_kernels_select fills it.
const pg_kernels *pg_kernels_x86(int allow_avx512, int allow_int);
#endif
#if defined(PG_TARGET_ESP32S3) && !defined(PG_FORCE_REF)
const pg_kernels *pg_kernels_esp32s3(void);
#endif

#endif
