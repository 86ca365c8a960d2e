// pocketgpt engine: x86 fast paths, chosen at run time with __builtin_cpu_supports, so the same
// binary runs on older CPUs through _ref. One job, so one file past the 800-line mark: every x86
// variant of the kernels and the four sets they make (float AVX2, float AVX-512F, integer AVX2 with
// maddubs, integer AVX512-VNNI on 256-bit vectors for the activations quantized to int8: the dot_q8
// and K-format dot_q8k paths). Functions carry target attributes; the file needs no special compiler
// flags. Types without a dedicated kernel here dequantize a block with the reference code and use
// the AVX2 multiply-add; slots a set leaves empty are filled from _ref by pg_kernels_select.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(PG_FORCE_REF)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define PG_AVX2 __attribute__((target("avx2,fma,f16c")))
#define PG_UNROLL _Pragma("GCC unroll 8")

PG_AVX2 static float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

// v[0..7] -> hsum256 of each, in order, with hsum256's additions (lanes j + j + 4, then the pairs
// 0 + 2 and 1 + 3, then those two): the same bits as 8 calls
PG_AVX2 __attribute__((always_inline)) static inline void hsum256_x8(const __m256 *v, float *out) {
    __m256 w[4], c[2];
    PG_UNROLL for (int k = 0; k < 4; k++)  // rows 2k, 2k + 1: their lo + hi in the two 128-bit lanes
        w[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
    PG_UNROLL for (int k = 0; k < 2; k++)  // rows 4k, 4k + 2 | 4k + 1, 4k + 3: s0 + s2, s1 + s3
        c[k] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0x44), _mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0xEE));
    __m256 e = _mm256_shuffle_ps(c[0], c[1], 0x88), f = _mm256_shuffle_ps(c[0], c[1], 0xDD);
    // rows 0 2 4 6 | 1 3 5 7
    __m256 t = _mm256_add_ps(e, f);
    _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(t, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

// row (n,) F32 . x (n,) -> float
PG_AVX2 static float dot_f32_avx2(const void *row, const float *x, int n) {
    const float *w = (const float *)row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

// row (n,) F16 . x (n,) -> float
PG_AVX2 static float dot_f16_avx2(const void *row, const float *x, int n) {
    const uint16_t *w = (const uint16_t *)row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += pg_f16_to_f32(w[i]) * x[i];
    return s;
}

// 8 int8 -> 8 floats
PG_AVX2 static __m256 i8x8_to_ps(const int8_t *q) {
    __m128i v = _mm_loadl_epi64((const __m128i *)q);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

// row (n,) Q8_0 . x (n,) -> float
PG_AVX2 static float dot_q8_0_avx2(const void *row, const float *x, int n) {
    const uint8_t *b = (const uint8_t *)row;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 32, b += 34) {
        uint16_t h;
        memcpy(&h, b, 2);
        const int8_t *q = (const int8_t *)(b + 2);
        __m256 s = _mm256_mul_ps(i8x8_to_ps(q), _mm256_loadu_ps(x + i));
        s = _mm256_fmadd_ps(i8x8_to_ps(q + 8), _mm256_loadu_ps(x + i + 8), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(q + 16), _mm256_loadu_ps(x + i + 16), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(q + 24), _mm256_loadu_ps(x + i + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(pg_f16_to_f32(h)), s, acc);
    }
    return hsum256(acc);
}

// row (n,) in blocks of `type` . x (n,): reference block dequantization, AVX2 multiply-add
PG_AVX2 static float dot_blocks_avx2(uint32_t type, const void *row, const float *x, int n) {
    pg_dequant_block_fn fn = pg_dequant_block(type);
    int qk = (int)pg_type_block(type);
    size_t bb = pg_type_block_bytes(type);
    const uint8_t *p = (const uint8_t *)row;
    float tmp[256];
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += qk, p += bb) {
        fn(p, tmp);
        for (int j = 0; j < qk; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j), _mm256_loadu_ps(x + i + j), acc);
    }
    return hsum256(acc);
}

// row (n,) Q4_0 . x (n,) -> float: nibbles unpacked in registers, minus 8, times the block scale
PG_AVX2 static float dot_q4_0_avx2(const void *row, const float *x, int n) {
    const uint8_t *b = (const uint8_t *)row;
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m256 eight = _mm256_set1_ps(8.0f);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 32, b += 18) {
        uint16_t h;
        memcpy(&h, b, 2);
        __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
        __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        __m256 w0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), eight);
        __m256 w1 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), eight);
        __m256 w2 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), eight);
        __m256 w3 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), eight);
        __m256 s = _mm256_mul_ps(w0, _mm256_loadu_ps(x + i));
        s = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), s);
        s = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + i + 16), s);
        s = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + i + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(pg_f16_to_f32(h)), s, acc);
    }
    return hsum256(acc);
}

// x (n,) -> xq, xd, xs exactly as pg_quantize_act (same float operations in the same order per
// value: amax / 127, x * (1 / d), +-0.5 and truncation), eight values per instruction
PG_AVX2 static void quantize_act_avx2(const float *x, int8_t *xq, float *xd, float *xs, int n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 signmask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int i = 0; i < n; i += 32) {
        __m256 v[4];
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + i + 8 * k);
            mx = _mm256_max_ps(mx, _mm256_and_ps(v[k], absmask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        xd[i / 32] = d;
        __m256 iv = _mm256_set1_ps(inv);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 t = _mm256_mul_ps(v[k], iv);
            // v < 0 ? v - 0.5 : v + 0.5 (a -0.0 takes -0.5 here and +0.5 there: both truncate to 0)
            t = _mm256_add_ps(t, _mm256_or_ps(half, _mm256_and_ps(t, signmask)));
            q[k] = _mm256_cvttps_epi32(t);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(xq + i), p);
        if (xs) {
            __m256i s0 = _mm256_add_epi32(q[0], q[1]), s1 = _mm256_add_epi32(q[2], q[3]);
            __m256i h = _mm256_hadd_epi32(s0, s1);  // s0 pairs (lane 0), s1 pairs (lane 0), s0, s1 (lane 1)
            h = _mm256_hadd_epi32(h, h);
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            xs[i / 16] = (float)_mm_extract_epi32(t, 0);
            xs[i / 16 + 1] = (float)_mm_extract_epi32(t, 1);
        }
    }
}

// x (n,) -> the K activation format exactly as pg_quantize_act_k (the max over 256 values is
// order-free; each value gets quantize_act_avx2's operations)
PG_AVX2 static void quantize_act_k_avx2(const float *x, int8_t *xq, float *xd, int16_t *xs, int n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 signmask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int i = 0; i < n; i += 256) {
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(x + i + 8 * k), absmask));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        xd[i / 256] = d;
        __m256 iv = _mm256_set1_ps(inv);
        for (int c = i; c < i + 256; c += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + c + 8 * k), iv);
                t = _mm256_add_ps(t, _mm256_or_ps(half, _mm256_and_ps(t, signmask)));
                q[k] = _mm256_cvttps_epi32(t);
            }
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(xq + c), p);
            __m256i h = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            h = _mm256_hadd_epi32(h, h);
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            xs[c / 16] = (int16_t)_mm_extract_epi32(t, 0);
            xs[c / 16 + 1] = (int16_t)_mm_extract_epi32(t, 1);
        }
    }
}

PG_AVX2 static float f16c(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// y (n,) += a * row (n,): the attention's pass over the value cache, per KV cache type
PG_AVX2 static void axpy_f32_avx2(float *y, float a, const void *row, int n) {
    const float *x = (const float *)row;
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

PG_AVX2 static void axpy_f16_avx2(float *y, float a, const void *row, int n) {
    const uint16_t *x = (const uint16_t *)row;
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * pg_f16_to_f32(x[i]);
}

PG_AVX2 static void axpy_q8_0_avx2(float *y, float a, const void *row, int n) {
    const uint8_t *b = (const uint8_t *)row;
    for (int i = 0; i < n; i += 32, b += 34) {
        __m256 ad = _mm256_set1_ps(a * f16c(b));
        for (int k = 0; k < 32; k += 8)
            _mm256_storeu_ps(y + i + k, _mm256_fmadd_ps(ad, i8x8_to_ps((const int8_t *)(b + 2 + k)), _mm256_loadu_ps(y + i + k)));
    }
}

// e^x for 8 floats: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^7 (relative
// error under 1e-8 there), times 2^n through the exponent bits; x clamped to [-87.3, 88.7]
PG_AVX2 static __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // r = x - n ln2 in two steps (ln2 split into a high part exact in float and the rest)
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place, through e^(2y)
PG_AVX2 static void gelu_avx2(float *x, size_t n) {
    const __m256 k = _mm256_set1_ps(0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f), half = _mm256_set1_ps(0.5f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 y = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
        __m256 e = exp_avx2(_mm256_add_ps(y, y));
        __m256 inv = _mm256_div_ps(two, _mm256_add_ps(e, one));
        // 1 + tanh(y): 2 - 2 / (e + 1) above zero, 2e / (e + 1) below (no cancellation either side)
        __m256 t1 = _mm256_blendv_ps(_mm256_sub_ps(two, inv), _mm256_mul_ps(e, inv), y);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), t1));
    }
    for (; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}

// x (n,) -> e^(x - mx) in place, returns their sum (the softmax over attention scores)
PG_AVX2 static float exp_sum_avx2(float *x, int n, float mx) {
    __m256 m = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

// scores[t] = q (64,) . k_t (two Q8_0 blocks) * scale for t < n: q stays in registers
PG_AVX2 static void attn_scores_q8_0_64_avx2(const float *q, const uint8_t *k, size_t stride, int n, float scale,
                                             float *scores) {
    __m256 qv[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) qv[i] = _mm256_loadu_ps(q + 8 * i);
    for (int t = 0; t < n; t++, k += stride) {
        __m256 s0 = _mm256_mul_ps(i8x8_to_ps((const int8_t *)(k + 2)), qv[0]);
        s0 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 10)), qv[1], s0);
        s0 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 18)), qv[2], s0);
        s0 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 26)), qv[3], s0);
        __m256 s1 = _mm256_mul_ps(i8x8_to_ps((const int8_t *)(k + 36)), qv[4]);
        s1 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 44)), qv[5], s1);
        s1 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 52)), qv[6], s1);
        s1 = _mm256_fmadd_ps(i8x8_to_ps((const int8_t *)(k + 60)), qv[7], s1);
        __m256 s = _mm256_fmadd_ps(_mm256_set1_ps(f16c(k + 34)), s1, _mm256_mul_ps(_mm256_set1_ps(f16c(k)), s0));
        scores[t] = hsum256(s) * scale;
    }
}

// o (64,) = sum_t w[t] * v_t (two Q8_0 blocks each) for t < n: o stays in registers
PG_AVX2 static void attn_values_q8_0_64_avx2(float *o, const float *w, const uint8_t *v, size_t stride, int n) {
    __m256 acc[8];  // registers: every loop over it is unrolled
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int t = 0; t < n; t++, v += stride) {
        __m256 a0 = _mm256_set1_ps(w[t] * f16c(v)), a1 = _mm256_set1_ps(w[t] * f16c(v + 34));
        acc[0] = _mm256_fmadd_ps(a0, i8x8_to_ps((const int8_t *)(v + 2)), acc[0]);
        acc[1] = _mm256_fmadd_ps(a0, i8x8_to_ps((const int8_t *)(v + 10)), acc[1]);
        acc[2] = _mm256_fmadd_ps(a0, i8x8_to_ps((const int8_t *)(v + 18)), acc[2]);
        acc[3] = _mm256_fmadd_ps(a0, i8x8_to_ps((const int8_t *)(v + 26)), acc[3]);
        acc[4] = _mm256_fmadd_ps(a1, i8x8_to_ps((const int8_t *)(v + 36)), acc[4]);
        acc[5] = _mm256_fmadd_ps(a1, i8x8_to_ps((const int8_t *)(v + 44)), acc[5]);
        acc[6] = _mm256_fmadd_ps(a1, i8x8_to_ps((const int8_t *)(v + 52)), acc[6]);
        acc[7] = _mm256_fmadd_ps(a1, i8x8_to_ps((const int8_t *)(v + 60)), acc[7]);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) _mm256_storeu_ps(o + 8 * i, acc[i]);
}

// ---- integer activations (dot_q8): weights x int8 activations with maddubs ----------------
// The definitions are the _q8_ref kernels in kernels_ref.c; these compute the same integer sums
// per 32-weight group and differ only in float summation order.


// Q4_K's eight 6-bit scales (bytes 0..7 of out) and mins (bytes 8..15) from their 12-byte
// packing: scales/mins 0..3 are the low 6 bits of bytes 0..3 / 4..7; 4..7 take a nibble of bytes
// 8..11 and the top two bits of bytes 0..3 / 4..7 (four at a time in 32-bit words)
__attribute__((always_inline)) static inline void q4_k_unpack(const uint8_t *q, uint32_t out[4]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, q, 4);
    memcpy(&w1, q + 4, 4);
    memcpy(&w2, q + 8, 4);
    out[0] = w0 & 0x3F3F3F3Fu;
    out[1] = (w2 & 0x0F0F0F0Fu) | (((w0 >> 6) & 0x03030303u) << 4);
    out[2] = w1 & 0x3F3F3F3Fu;
    out[3] = ((w2 >> 4) & 0x0F0F0F0Fu) | (((w1 >> 6) & 0x03030303u) << 4);
}

// Q3_K's sixteen signed 6-bit scales from their 12-byte packing: low nibbles of bytes 0..7 are
// scales 0..7, their high nibbles 8..15; scale i's top two bits sit in byte 8 + i % 4 at bit
// 2 * (i / 4), which is byte i of (aux >> 2k in lane k) for the 32-bit aux of bytes 8..11
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m128i q3_k_scales_avx2(const uint8_t *p) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i lo8 = _mm_loadl_epi64((const __m128i *)p);
    __m128i lows = _mm_unpacklo_epi64(_mm_and_si128(lo8, m4), _mm_and_si128(_mm_srli_epi16(lo8, 4), m4));
    uint32_t aux;
    memcpy(&aux, p + 8, 4);
    __m128i v = _mm_srlv_epi32(_mm_set1_epi32((int)aux), _mm_set_epi32(6, 4, 2, 0));
    __m128i highs = _mm_and_si128(_mm_slli_epi16(v, 4), _mm_set1_epi8(0x30));
    return _mm_sub_epi8(_mm_or_si128(lows, highs), _mm_set1_epi8(32));
}

// 16 per-16 sums (xs) -> the 8 per-32 sums, in order
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 group_sums(const float *xs) {
    __m256 h = _mm256_hadd_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(xs + 8));  // groups 0 1 4 5 | 2 3 6 7
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
}

// 32 unsigned bytes u . 32 signed bytes x -> 8 int32 partial sums
PG_AVX2 static __m256i dot_u8i8_avx2(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

// row (n,) Q8_0 . int8 activations -> float (signs moved onto the activations for maddubs)
PG_AVX2 static float dot_q8_0_q8_avx2(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) {
    (void)xs;
    const uint8_t *b = (const uint8_t *)row;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 32, b += 34) {
        __m256i w = _mm256_loadu_si256((const __m256i *)(b + 2));
        __m256i x = _mm256_loadu_si256((const __m256i *)(xq + i));
        __m256i p = dot_u8i8_avx2(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16c(b) * xd[i / 32]), acc);
    }
    return hsum256(acc);
}

#define PG_DOT_BLOCKS(T, ID) \
    PG_AVX2 static float dot_##T##_avx2(const void *row, const float *x, int n) { return dot_blocks_avx2(ID, row, x, n); }
PG_DOT_BLOCKS(q4_1, PG_TYPE_Q4_1)
PG_DOT_BLOCKS(q5_0, PG_TYPE_Q5_0)
PG_DOT_BLOCKS(q5_1, PG_TYPE_Q5_1)
PG_DOT_BLOCKS(iq4_nl, PG_TYPE_IQ4_NL)
PG_DOT_BLOCKS(q2_k, PG_TYPE_Q2_K)
PG_DOT_BLOCKS(q3_k, PG_TYPE_Q3_K)
PG_DOT_BLOCKS(q4_k, PG_TYPE_Q4_K)
PG_DOT_BLOCKS(q5_k, PG_TYPE_Q5_K)
PG_DOT_BLOCKS(q6_k, PG_TYPE_Q6_K)

// The entries every x86 set shares: the types with only a float dot (a block dequantized by the
// reference code, then the AVX2 multiply-add, or a kernel of their own), and the row kernels.
#define PG_X86_FLOAT_ONLY_TYPES                       \
    [PG_TYPE_Q4_0] = {.dot = dot_q4_0_avx2},          \
    [PG_TYPE_Q4_1] = {.dot = dot_q4_1_avx2},          \
    [PG_TYPE_Q5_0] = {.dot = dot_q5_0_avx2},          \
    [PG_TYPE_Q5_1] = {.dot = dot_q5_1_avx2},          \
    [PG_TYPE_Q2_K] = {.dot = dot_q2_k_avx2},          \
    [PG_TYPE_Q5_K] = {.dot = dot_q5_k_avx2},          \
    [PG_TYPE_IQ4_NL] = {.dot = dot_iq4_nl_avx2}
#define PG_X86_ROW_KERNELS                                                                  \
    .gelu = gelu_avx2, .exp_sum = exp_sum_avx2, .attn_scores_q8_0_64 = attn_scores_q8_0_64_avx2, \
    .attn_values_q8_0_64 = attn_values_q8_0_64_avx2

static const pg_kernels s_avx2 = {
    .name = "x86-avx2",
    .type =
        {
            PG_X86_FLOAT_ONLY_TYPES,
            [PG_TYPE_F32] = {.dot = dot_f32_avx2, .axpy = axpy_f32_avx2},
            [PG_TYPE_F16] = {.dot = dot_f16_avx2, .axpy = axpy_f16_avx2},
            [PG_TYPE_Q8_0] = {.dot = dot_q8_0_avx2, .axpy = axpy_q8_0_avx2},
            [PG_TYPE_Q3_K] = {.dot = dot_q3_k_avx2},
            [PG_TYPE_Q4_K] = {.dot = dot_q4_k_avx2},
            [PG_TYPE_Q6_K] = {.dot = dot_q6_k_avx2},
        },
    PG_X86_ROW_KERNELS,
};

// ---- AVX-512F: the same kernels 16 lanes wide (picked when the CPU has AVX-512F) -------------

#define PG_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

// row (n,) F32 . x (n,) -> float
PG_AVX512 static float dot_f32_avx512(const void *row, const float *x, int n) {
    const float *w = (const float *)row;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

// row (n,) F16 . x (n,) -> float
PG_AVX512 static float dot_f16_avx512(const void *row, const float *x, int n) {
    const uint16_t *w = (const uint16_t *)row;
    __m512 a0 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(a0);
    for (; i < n; i++) s += pg_f16_to_f32(w[i]) * x[i];
    return s;
}

// row (n,) Q8_0 . x (n,) -> float
PG_AVX512 static float dot_q8_0_avx512(const void *row, const float *x, int n) {
    const uint8_t *b = (const uint8_t *)row;
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 32, b += 34) {
        uint16_t h;
        memcpy(&h, b, 2);
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
        __m512 s = _mm512_mul_ps(w0, _mm512_loadu_ps(x + i));
        s = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(pg_f16_to_f32(h)), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static const pg_kernels s_avx512 = {
    .name = "x86-avx512",
    .type =
        {
            PG_X86_FLOAT_ONLY_TYPES,
            [PG_TYPE_F32] = {.dot = dot_f32_avx512, .axpy = axpy_f32_avx2},
            [PG_TYPE_F16] = {.dot = dot_f16_avx512, .axpy = axpy_f16_avx2},
            [PG_TYPE_Q8_0] = {.dot = dot_q8_0_avx512, .axpy = axpy_q8_0_avx2},
            [PG_TYPE_Q3_K] = {.dot = dot_q3_k_avx2},
            [PG_TYPE_Q4_K] = {.dot = dot_q4_k_avx2},
            [PG_TYPE_Q6_K] = {.dot = dot_q6_k_avx2},
        },
    PG_X86_ROW_KERNELS,
};

// ---- VNNI integer kernels (vpdpbusd, AVX512-VNNI + VL) on 256-bit vectors: 512-bit versions
// measured no faster here (AMD EPYC, which splits 512-bit work in two halves)

#define PG_VNNI256 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))


// Q4_K row (n,) . R int8 activation rows (xq + r * n, xd + r * n / 32, xs + r * n / 16) -> out[r],
// the same sums as dot_q4_k_q8_ref. The weights are unpacked once for all R rows (prefill and
// batched decode); each row sees exactly the operations of the R = 1 version, so the results are
// the same bits whatever R.
#define PG_Q4K_ROWS(NAME, R, TARGET, DOT)                                                                     \
    TARGET static void NAME(const void *row, const int8_t *xq, const float *xd, const float *xs, int n,     \
                                float *out) {                                                               \
        const uint8_t *b = (const uint8_t *)row;                                                            \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                                          \
        __m256 a0[R], a1[R], accm[R];                                                                       \
        PG_UNROLL for (int r = 0; r < R; r++) a0[r] = a1[r] = accm[r] = _mm256_setzero_ps();                \
        for (int i = 0; i < n; i += 256, b += 144) {                                                        \
            uint32_t sm[4];                                                                                 \
            q4_k_unpack(b + 4, sm);                                                                         \
            __m128i smv = _mm_loadu_si128((const __m128i *)sm);                                             \
            __m256 scv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv));                                     \
            __m256 mnv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(smv, 8)));                  \
            __m256 d = _mm256_set1_ps(f16c(b)), dmin = _mm256_set1_ps(f16c(b + 2));                         \
            __m256 f8[R];                                                                                   \
            PG_UNROLL for (int r = 0; r < R; r++) {                                                         \
                __m256 xdv = _mm256_loadu_ps(xd + (size_t)r * (size_t)(n / 32) + i / 32);                   \
                f8[r] = _mm256_mul_ps(_mm256_mul_ps(scv, xdv), d);                                          \
                accm[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(mnv, xdv),                            \
                                                        group_sums(xs + (size_t)r * (size_t)(n / 16) + i / 16)), \
                                          dmin, accm[r]);                                                   \
            }                                                                                               \
            const uint8_t *qs = b + 16;                                                                     \
            PG_UNROLL for (int p = 0; p < 4; p++) {                                                         \
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));                             \
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);   \
                __m256i il = _mm256_set1_epi32(2 * p), ih = _mm256_set1_epi32(2 * p + 1);                   \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                     \
                    const int8_t *x = xq + (size_t)r * (size_t)n + i + 64 * p;                              \
                    __m256i dl = DOT(lo, _mm256_loadu_si256((const __m256i *)x));                           \
                    __m256i dh = DOT(hi, _mm256_loadu_si256((const __m256i *)(x + 32)));                    \
                    a0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dl), _mm256_permutevar8x32_ps(f8[r], il), a0[r]); \
                    a1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dh), _mm256_permutevar8x32_ps(f8[r], ih), a1[r]); \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        PG_UNROLL for (int r = 0; r < R; r++) out[r] = hsum256(_mm256_sub_ps(_mm256_add_ps(a0[r], a1[r]), accm[r])); \
    }

// Q3_K row (n,) . R int8 activation rows -> out[r] (same sums as dot_q3_k_q8_ref): per group g,
// u = q + 4 from 2 bits of qs and the hmask bit (unpacked once for all rows), dpbusd, minus
// 4 * sum x per 16-weight scale once per block from the precomputed sums xs
#define PG_Q3K_ROWS(NAME, R, TARGET, DOT, ADD4)                                                               \
    TARGET static void NAME(const void *row, const int8_t *xq, const float *xd, const float *xs, int n,     \
                                float *out) {                                                               \
        const uint8_t *b = (const uint8_t *)row;                                                            \
        const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);                              \
        const __m256i pair = _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0);                                      \
        const __m256i pair_hi = _mm256_set_epi32(7, 7, 6, 6, 5, 5, 4, 4);                                   \
        const __m256i half = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);                                      \
        __m256 a0[R], a1[R], corr[R];                                                                       \
        PG_UNROLL for (int r = 0; r < R; r++) a0[r] = a1[r] = corr[r] = _mm256_setzero_ps();                \
        for (int i = 0; i < n; i += 256, b += 110) {                                                        \
            __m128i scb = q3_k_scales_avx2(b + 96);                                                         \
            __m256 sclo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scb));                                    \
            __m256 schi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(scb, 8)));                 \
            __m256 d = _mm256_set1_ps(f16c(b + 108));                                                       \
            /* S[k] = sc[k] * d * xd[k / 2]: scales 0..7 in slo, 8..15 in shi */                            \
            __m256 slo[R], shi[R];                                                                          \
            PG_UNROLL for (int r = 0; r < R; r++) {                                                         \
                __m256 xdv = _mm256_mul_ps(_mm256_loadu_ps(xd + (size_t)r * (size_t)(n / 32) + i / 32), d); \
                const float *sums = xs + (size_t)r * (size_t)(n / 16) + i / 16;                             \
                slo[r] = _mm256_mul_ps(sclo, _mm256_permutevar8x32_ps(xdv, pair));                          \
                shi[r] = _mm256_mul_ps(schi, _mm256_permutevar8x32_ps(xdv, pair_hi));                       \
                corr[r] = _mm256_fmadd_ps(slo[r], _mm256_loadu_ps(sums), corr[r]);                          \
                corr[r] = _mm256_fmadd_ps(shi[r], _mm256_loadu_ps(sums + 8), corr[r]);                      \
            }                                                                                               \
            __m256i hm = _mm256_loadu_si256((const __m256i *)b);                                            \
            PG_UNROLL for (int g = 0; g < 8; g++) {                                                         \
                __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (g / 4)));                  \
                __m256i low2 = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4)), three);                 \
                __m256i u = ADD4(low2, hm, _mm256_set1_epi8((char)(1 << g)), four);                         \
                __m256i idx = _mm256_add_epi32(half, _mm256_set1_epi32(2 * (g % 4)));                       \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                     \
                    const int8_t *x = xq + (size_t)r * (size_t)n + i + 32 * g;                              \
                    __m256i dp = DOT(u, _mm256_loadu_si256((const __m256i *)x));                            \
                    __m256 f = _mm256_permutevar8x32_ps(g < 4 ? slo[r] : shi[r], idx);                      \
                    if (g & 1) a1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), f, a1[r]);                   \
                    else a0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), f, a0[r]);                         \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        PG_UNROLL for (int r = 0; r < R; r++)                                                               \
            out[r] = hsum256(_mm256_fnmadd_ps(_mm256_set1_ps(4.0f), corr[r], _mm256_add_ps(a0[r], a1[r]))); \
    }

// the two primitives: 32 u8 x 32 s8 -> 8 int32 sums of 4, and low2 + 4 where the hmask bit is set
#define PG_DOT_VNNI(u, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, x)
#define PG_ADD4_VNNI(low2, hm, bit, four) _mm256_mask_add_epi8(low2, _mm256_test_epi8_mask(hm, bit), low2, four)
// the same for the K-format kernels, group G's high bit (bit G of each hmask byte) moved to bit 2 by
// a 16-bit shift (bit 2 of a byte comes from bit G of the same byte for shifts of at most 2 left or
// 5 right) and or-ed in under the mask `four` by one ternary-logic op: no mask register, no copy
#define PG_ADD4_SH(low2, hm, G, four)                                                                          \
    _mm256_ternarylogic_epi32(low2, (G) <= 2 ? _mm256_slli_epi16(hm, 2 - (G)) : _mm256_srli_epi16(hm, (G) - 2), four, 0xF8)
#define PG_DOT_AVX2(u, x) _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
#define PG_ADD4_AVX2(low2, hm, bit, four) \
    _mm256_add_epi8(low2, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four))

PG_Q4K_ROWS(q4_k_rows1_vnni256, 1, PG_VNNI256, PG_DOT_VNNI)
PG_Q4K_ROWS(q4_k_rows4_vnni256, 4, PG_VNNI256, PG_DOT_VNNI)
PG_Q3K_ROWS(q3_k_rows1_vnni256, 1, PG_VNNI256, PG_DOT_VNNI, PG_ADD4_VNNI)
PG_Q3K_ROWS(q3_k_rows4_vnni256, 4, PG_VNNI256, PG_DOT_VNNI, PG_ADD4_VNNI)
PG_Q3K_ROWS(q3_k_rows8_vnni256, 8, PG_VNNI256, PG_DOT_VNNI, PG_ADD4_VNNI)
PG_Q4K_ROWS(q4_k_rows8_vnni256, 8, PG_VNNI256, PG_DOT_VNNI)
// AVX2 without VNNI: maddubs + madd for the byte products (u <= 15, |x| <= 127: no saturation)
PG_Q4K_ROWS(q4_k_rows1_avx2, 1, PG_AVX2, PG_DOT_AVX2)
PG_Q4K_ROWS(q4_k_rows4_avx2, 4, PG_AVX2, PG_DOT_AVX2)
PG_Q3K_ROWS(q3_k_rows1_avx2, 1, PG_AVX2, PG_DOT_AVX2, PG_ADD4_AVX2)
PG_Q3K_ROWS(q3_k_rows4_avx2, 4, PG_AVX2, PG_DOT_AVX2, PG_ADD4_AVX2)

// ---- K-format activations (one scale per 256 values): a block accumulates in integers ----------
// Without VNNI (the _K_ROWS macros) the byte products go through maddubs (u <= 15, |x| <= 127:
// the pair sums fit int16), then the sub-block scales as int16 multiply-adds into int32 (madd +
// add); with VNNI (the _P_ROWS macros below) through vpdpbusd and vpdpwssd. One float conversion
// and multiply-add per block and activation row. Integer sums are exact, so every R of a set gives
// the same bits; against pg_dot_q8k_ref (and between the two sets) only the float summation order
// differs.
#define PG_MADD_AVX2(acc, p, s) _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))

// Q3_K row (n,) . R K-format activation rows -> out[r] (same sums as dot_q3_k_q8k_ref)
#define PG_Q3K_K_ROWS(NAME, R, TARGET, MADD, ADD4)                                                           \
    TARGET static void NAME(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n,   \
                            float *out) {                                                                  \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);                             \
        /* per group g % 4 = j: int16 scale 2j in the low 128-bit lane, 2j + 1 in the high one */          \
        const __m256i pick[4] = {                                                                          \
            _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, \
                             3, 2, 3),                                                                     \
            _mm256_setr_epi8(4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, \
                             7, 6, 7),                                                                     \
            _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10,  \
                             11, 10, 11, 10, 11, 10, 11),                                                  \
            _mm256_setr_epi8(12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, \
                             15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15)};                                 \
        __m256 acc[R];                                                                                     \
        PG_UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();                                \
        for (int i = 0; i < n; i += 256, b += 110) {                                                       \
            __m256i sc16 = _mm256_cvtepi8_epi16(q3_k_scales_avx2(b + 96));                                 \
            __m256i m4sc = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 2));           \
            __m256i s_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00);                                    \
            __m256i s_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);                                    \
            float dw = f16c(b + 108);                                                                      \
            __m256i is[R], is2[R]; /* two chains for 1 row (even and odd groups) */                 \
            PG_UNROLL for (int r = 0; r < R; r++) { /* the -4 offsets: -4 sc[k] xs[k] */                   \
                is[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (size_t)(n / 16) + i / 16)), m4sc); \
                is2[r] = _mm256_setzero_si256();                                                           \
            }                                                                                              \
            __m256i hm = _mm256_loadu_si256((const __m256i *)b);                                           \
            PG_UNROLL for (int g = 0; g < 8; g++) {                                                        \
                __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (g / 4)));                 \
                __m256i low2 = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4)), three);                \
                __m256i u = ADD4(low2, hm, _mm256_set1_epi8((char)(1 << g)), four);                        \
                __m256i sv = _mm256_shuffle_epi8(g < 4 ? s_lo : s_hi, pick[g % 4]);                        \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                    \
                    __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (size_t)r * (size_t)n + i + 32 * g)); \
                    if (R < 4 && (g & 1)) is2[r] = MADD(is2[r], _mm256_maddubs_epi16(u, x), sv);            \
                    else is[r] = MADD(is[r], _mm256_maddubs_epi16(u, x), sv);                              \
                }                                                                                          \
            }                                                                                              \
            PG_UNROLL for (int r = 0; r < R; r++)                                                          \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(is[r], is2[r])),              \
                                         _mm256_set1_ps(dw * xd[(size_t)r * (size_t)(n / 256) + i / 256]), acc[r]); \
        }                                                                                                  \
        PG_UNROLL for (int r = 0; r < R; r++) out[r] = hsum256(acc[r]);                                    \
    }

// Q4_K row (n,) . R K-format activation rows -> out[r] (same sums as dot_q4_k_q8k_ref)
#define PG_Q4K_K_ROWS(NAME, R, TARGET, MADD)                                                                 \
    TARGET static void NAME(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n,   \
                            float *out) {                                                                  \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                                         \
        /* mins 0..7 (bytes 8..15 of the unpacked scales) each twice, zero-extended to int16 */             \
        const __m128i mdup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);     \
        __m256 acc[R];                                                                                     \
        PG_UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();                                \
        for (int i = 0; i < n; i += 256, b += 144) {                                                       \
            uint32_t sm[4];                                                                                \
            q4_k_unpack(b + 4, sm);                                                                        \
            __m128i smv = _mm_loadu_si128((const __m128i *)sm);                                            \
            __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, mdup));                              \
            float d = f16c(b), dmin = f16c(b + 2);                                                         \
            __m256i is[R], is2[R]; /* two chains for 1 row (low and high nibbles) */                \
            PG_UNROLL for (int r = 0; r < R; r++) is[r] = is2[r] = _mm256_setzero_si256();                 \
            const uint8_t *qs = b + 16;                                                                    \
            PG_UNROLL for (int p = 0; p < 4; p++) {                                                        \
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));                            \
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);  \
                __m256i sl = _mm256_set1_epi16((short)((const uint8_t *)sm)[2 * p]);                       \
                __m256i sh = _mm256_set1_epi16((short)((const uint8_t *)sm)[2 * p + 1]);                   \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                    \
                    const int8_t *x = xq + (size_t)r * (size_t)n + i + 64 * p;                             \
                    is[r] = MADD(is[r], _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x)), sl); \
                    __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32)));  \
                    if (R < 4) is2[r] = MADD(is2[r], ph, sh);                                              \
                    else is[r] = MADD(is[r], ph, sh);                                                      \
                }                                                                                          \
            }                                                                                              \
            PG_UNROLL for (int r = 0; r < R; r++) {                                                        \
                float dx = xd[(size_t)r * (size_t)(n / 256) + i / 256];                                    \
                __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (size_t)(n / 16) + i / 16)), mn16); \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(is[r], is2[r])), _mm256_set1_ps(d * dx), acc[r]); \
                acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(dmin * dx), acc[r]);      \
            }                                                                                              \
        }                                                                                                  \
        PG_UNROLL for (int r = 0; r < R; r++) out[r] = hsum256(acc[r]);                                    \
    }

// The VNNI Q3_K kernels' float steps (every R, so a row gives the same bits alone or in a batch):
// per 256-weight block the exact integer sum T = sum q * sc * xq (from the kernel's int32 lanes,
// summed in integers), then acc = fma((float)T, d * xd, acc) over the blocks in order, from 0. One
// float conversion per block and row; with 4+ rows the lane sums, conversions and multiply-adds
// take one vector per 4 or 8 rows (lane = activation row).
#define PG_UNROLL16 _Pragma("GCC unroll 16")
#define PG_VNNI_INLINE PG_VNNI256 __attribute__((always_inline)) static inline

// v[0..7] (8 int32 lanes each) -> their 8 lane sums, in order (AVX2 only, so the AVX2 kernels
// inline it too)
PG_AVX2 __attribute__((always_inline)) static inline __m256i hsum_8x8_epi32(const __m256i *v) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    // a: v0..v3's sums of lanes 0-3 | of lanes 4-7; c the same for v4..v7
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31));
}

// v[0..3] -> their 4 lane sums, in order
PG_VNNI_INLINE __m128i hsum_4x8_epi32(const __m256i *v) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
}

// v -> the sum of its 8 lanes in lane 0
PG_VNNI_INLINE __m128i hsum_1x8_epi32(__m256i v) {
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4E));
    return _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xB1));
}

// rows r0..r0+7's scales of block blk: xd[r * nb + blk]
PG_VNNI_INLINE __m256 xd_rows8(const float *xd, int nb, int blk, int r0) {
    const float *p = xd + (size_t)r0 * (size_t)nb + blk;
    return _mm256_setr_ps(p[0], p[nb], p[2 * nb], p[3 * nb], p[4 * nb], p[5 * nb], p[6 * nb], p[7 * nb]);
}

#define PG_Q3K_ACC_DECL(R)                                                                                 \
    __m256 acc8[(R) / 8 > 0 ? (R) / 8 : 1];                                                                \
    __m128 acc4 = _mm_setzero_ps();                                                                        \
    PG_UNROLL16 for (int a8 = 0; a8 < (R) / 8; a8++) acc8[a8] = _mm256_setzero_ps();

// is[0..R-1]: int32 lanes whose sum is T (NEG: -T) of block i / 256 for each row
#define PG_Q3K_ACC_BLOCK(R, is, dw, NEG)                                                                   \
    if ((R) >= 8) {                                                                                        \
        PG_UNROLL16 for (int a8 = 0; a8 < (R) / 8; a8++) {                                                   \
            __m256 t = _mm256_cvtepi32_ps(hsum_8x8_epi32(is + 8 * a8));                                    \
            __m256 sc = _mm256_mul_ps(_mm256_set1_ps(dw), xd_rows8(xd, n / 256, i / 256, 8 * a8));        \
            acc8[a8] = NEG ? _mm256_fnmadd_ps(t, sc, acc8[a8]) : _mm256_fmadd_ps(t, sc, acc8[a8]);        \
        }                                                                                                  \
    } else if ((R) == 4) {                                                                                 \
        const float *p = xd + i / 256;                                                                     \
        size_t nb = (size_t)(n / 256);                                                                     \
        __m128 t = _mm_cvtepi32_ps(hsum_4x8_epi32(is));                                                    \
        __m128 sc = _mm_mul_ps(_mm_set1_ps(dw), _mm_setr_ps(p[0], p[nb], p[2 * nb], p[3 * nb]));           \
        acc4 = NEG ? _mm_fnmadd_ps(t, sc, acc4) : _mm_fmadd_ps(t, sc, acc4);                              \
    } else {                                                                                               \
        __m128 t = _mm_cvtepi32_ps(hsum_1x8_epi32(is[0]));                                                 \
        __m128 sc = _mm_set_ss(dw * xd[i / 256]);                                                          \
        acc4 = NEG ? _mm_fnmadd_ss(t, sc, acc4) : _mm_fmadd_ss(t, sc, acc4);                              \
    }

#define PG_Q3K_ACC_OUT(R, NEG)                                                                             \
    if ((R) >= 8) {                                                                                        \
        PG_UNROLL16 for (int a8 = 0; a8 < (R) / 8; a8++) _mm256_storeu_ps(out + 8 * a8, acc8[a8]);           \
    } else if ((R) == 4) {                                                                                 \
        _mm_storeu_ps(out, acc4);                                                                          \
    } else {                                                                                               \
        out[0] = _mm_cvtss_f32(acc4);                                                                      \
    }

// the next weight row's block (BB bytes: offsets 0, 64 and LAST), prefetched while this one is
// worked on: a batch streams its weights from memory
#define PG_PREFETCH_NEXT_ROW(b, n, BB, LAST)                                                               \
    _mm_prefetch((const char *)(b) + (size_t)((n) / 256) * (BB), _MM_HINT_T0);                             \
    _mm_prefetch((const char *)(b) + (size_t)((n) / 256) * (BB) + 64, _MM_HINT_T0);                        \
    _mm_prefetch((const char *)(b) + (size_t)((n) / 256) * (BB) + (LAST), _MM_HINT_T0);

// The folded Q3_K kernels' constants and their per-block work: for each of the 8 groups of 32
// weights, the byte table u = 128 - q * sc of its two sub-blocks (sub-block 2g's scale in the low
// lane, 2g + 1's in the high lane, as int16) looked up by the 3-bit codes, then one vpdpbusd per
// activation row into is[r]
#define PG_Q3K_F_CONSTS                                                                                    \
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);                                 \
    const __m256i kk = _mm256_setr_epi16(4, 3, 2, 1, 0, -1, -2, -3, 4, 3, 2, 1, 0, -1, -2, -3);            \
    const __m256i c128 = _mm256_set1_epi16(128);                                                           \
    const __m128i pick01 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
#define PG_Q3K_F_GROUPS(R)                                                                                 \
    __m256i hm = _mm256_loadu_si256((const __m256i *)b);                                                   \
    PG_UNROLL16 for (int g = 0; g < 8; g++) {                                                              \
        __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (g / 4)));                         \
        __m256i l = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4)), three);                           \
        __m256i k = PG_ADD4_SH(l, hm, g, four);                                                            \
        __m256i sv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_add_epi8(pick01, _mm_set1_epi8((char)(2 * g))))); \
        __m256i t16 = _mm256_add_epi16(_mm256_mullo_epi16(kk, sv), c128);                                 \
        __m256i u = _mm256_shuffle_epi8(_mm256_packus_epi16(t16, t16), k);                                 \
        PG_UNROLL16 for (int r = 0; r < (R); r++)                                                          \
            is[r] = _mm256_dpbusd_epi32(is[r], u, _mm256_loadu_si256((const __m256i *)(xq + (size_t)r * (size_t)n + i + 32 * g))); \
    }

// Q3_K against R = 8 activation rows with the sub-block scales folded into the weights:
// per 16-weight sub-block a byte table u[k] = 128 - (k - 4) * sc (k = q + 4, the 3-bit code;
// 0..252, so unsigned bytes: -(q * sc) never overflows where q * sc = 128 would), one pshufb per
// 32 weights, then ONE vpdpbusd per 32 weights and row (the P kernels take 1.5 multiplies and a
// pack). sum u * xq = 128 * sum xq - T, so each row's int32 lanes start at -128 * its code sums
// (madd of the per-16 sums) and hold -T at the end. The weights' unpacking and tables are shared
// by the R rows. The 16-row version the engine's batches use is PG_Q3K_FA_ROWS below.
#define PG_Q3K_F_ROWS(NAME, R)                                                                               \
    PG_VNNI256 static void NAME(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n, \
                                float *out) {                                                              \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        PG_Q3K_F_CONSTS                                                                                    \
        const __m256i m128 = _mm256_set1_epi16(-128);                                                      \
        PG_Q3K_ACC_DECL(R)                                                                                 \
        for (int i = 0; i < n; i += 256, b += 110) {                                                       \
            __m128i sc8 = q3_k_scales_avx2(b + 96);                                                        \
            PG_PREFETCH_NEXT_ROW(b, n, 110, 109)                                                              \
            float dw = f16c(b + 108);                                                                      \
            __m256i is[R];                                                                                 \
            PG_UNROLL16 for (int r = 0; r < R; r++)                                                          \
                is[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (size_t)(n / 16) + i / 16)), m128); \
            PG_Q3K_F_GROUPS(R)                                                                             \
            PG_Q3K_ACC_BLOCK(R, is, dw, 1)                                                                 \
        }                                                                                                  \
        PG_Q3K_ACC_OUT(R, 1)                                                                               \
    }

// Q3_K row (n,) . 16 activation rows -> out[0..15] (pg_dot_q8k_x16_fn), the kernel of the engine's
// batches: as PG_Q3K_F_ROWS, but the activation rows' per-block
// values come transposed from the caller, once per matmul task instead of once per weight row: xdt
// (n / 256, 16) the scales and xat (n / 256, 16) the sums of each block's 256 codes, so the
// accumulators start at zero and T = 128 * sum xq - sum u * xq takes one shift and one subtract
// per 8 rows (the 16 per-row multiply-adds of the code sums were a fifth of the kernel's time);
// 16 int32 accumulators fit AVX-512VL's 32 vector registers; the next weight row's block is
// prefetched (the weights stream from memory in a batch)
#define PG_Q3K_FA_ROWS(NAME, R)                                                                              \
    PG_VNNI256 static void NAME(const void *row, const int8_t *xq, const float *xdt, const int32_t *xat, int n, \
                                float *out) {                                                              \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        PG_Q3K_F_CONSTS                                                                                    \
        PG_Q3K_ACC_DECL(R)                                                                                 \
        for (int i = 0; i < n; i += 256, b += 110) {                                                       \
            __m128i sc8 = q3_k_scales_avx2(b + 96);                                                        \
            PG_PREFETCH_NEXT_ROW(b, n, 110, 109)                                                              \
            float dw = f16c(b + 108);                                                                      \
            __m256i is[R];                                                                                 \
            PG_UNROLL16 for (int r = 0; r < R; r++) is[r] = _mm256_setzero_si256();                       \
            PG_Q3K_F_GROUPS(R)                                                                             \
            const size_t at = (size_t)(i / 256) * R;                                                       \
            PG_UNROLL16 for (int a8 = 0; a8 < R / 8; a8++) {                                               \
                __m256i tot = _mm256_sub_epi32(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xat + at + 8 * a8)), 7), \
                                               hsum_8x8_epi32(is + 8 * a8));                                \
                __m256 sc = _mm256_mul_ps(_mm256_set1_ps(dw), _mm256_loadu_ps(xdt + at + 8 * a8));          \
                acc8[a8] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), sc, acc8[a8]);                          \
            }                                                                                              \
        }                                                                                                  \
        PG_Q3K_ACC_OUT(R, 0)                                                                               \
    }

// With VNNI the byte products of a group take one vpdpbusd into int32 lanes of 4 products each
// (|lane| <= 4 * 15 * 127, so two groups' lanes pack into int16 without saturation), and one
// vpdpwssd applies both groups' sub-block scales: 3 multiply instructions per 64 weights and row
// instead of 4 (maddubs + vpdpwssd per group). After packs_epi32(d0, d1) the 128-bit lane k holds
// d0's lanes 4k..4k+3 then d1's: for Q3_K the sub-blocks 2g + k and 2g + 2 + k, for Q4_K groups
// 2p and 2p + 1 in both halves.
#define PG_Q3K_P_ROWS(NAME, R)                                                                               \
    PG_VNNI256 static void NAME(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n, \
                                float *out) {                                                              \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);                             \
        /* int16 scales j, j + 2 (low lane) and j + 1, j + 3 (high lane), j = 0 or 4 within 8 */            \
        const __m256i pick[2] = {                                                                          \
            _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5, 2, 3, 2, 3, 2, 3, 2, 3, 6, 7, 6, 7, 6, \
                             7, 6, 7),                                                                     \
            _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 8, 9, 12, 13, 12, 13, 12, 13, 12, 13, 10, 11, 10, 11, 10, 11, 10,  \
                             11, 14, 15, 14, 15, 14, 15, 14, 15)};                                         \
        PG_Q3K_ACC_DECL(R)                                                                                 \
        for (int i = 0; i < n; i += 256, b += 110) {                                                       \
            __m256i sc16 = _mm256_cvtepi8_epi16(q3_k_scales_avx2(b + 96));                                 \
            __m256i m4sc = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 2));           \
            __m256i s_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00);                                    \
            __m256i s_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);                                    \
            float dw = f16c(b + 108);                                                                      \
            PG_PREFETCH_NEXT_ROW(b, n, 110, 109)                                                              \
            __m256i is[R], is2[R]; /* two chains for 1 row */                                              \
            PG_UNROLL for (int r = 0; r < R; r++) { /* the -4 offsets: -4 sc[k] xs[k] */                   \
                is[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (size_t)(n / 16) + i / 16)), m4sc); \
                is2[r] = _mm256_setzero_si256();                                                           \
            }                                                                                              \
            __m256i hm = _mm256_loadu_si256((const __m256i *)b);                                           \
            PG_UNROLL for (int g = 0; g < 8; g += 2) {                                                     \
                __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (g / 4)));                 \
                __m256i l0 = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4)), three);                  \
                __m256i l1 = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4) + 2), three);              \
                __m256i u0 = PG_ADD4_SH(l0, hm, g, four);                 \
                __m256i u1 = PG_ADD4_SH(l1, hm, g + 1, four);                 \
                __m256i sv = _mm256_shuffle_epi8(g < 4 ? s_lo : s_hi, pick[(g % 4) / 2]);                  \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                    \
                    const int8_t *x = xq + (size_t)r * (size_t)n + i + 32 * g;                             \
                    __m256i d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, _mm256_loadu_si256((const __m256i *)x)); \
                    __m256i d1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u1, _mm256_loadu_si256((const __m256i *)(x + 32))); \
                    __m256i pk = _mm256_packs_epi32(d0, d1);                                               \
                    if (R < 4 && (g & 2)) is2[r] = _mm256_dpwssd_epi32(is2[r], pk, sv);                    \
                    else is[r] = _mm256_dpwssd_epi32(is[r], pk, sv);                                       \
                }                                                                                          \
            }                                                                                              \
            PG_UNROLL for (int r = 0; r < R; r++) is[r] = _mm256_add_epi32(is[r], is2[r]);                 \
            PG_Q3K_ACC_BLOCK(R, is, dw, 0)                                                                 \
        }                                                                                                  \
        PG_Q3K_ACC_OUT(R, 0)                                                                               \
    }

#define PG_Q4K_P_ROWS(NAME, R)                                                                               \
    PG_VNNI256 static void NAME(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n, \
                                float *out) {                                                              \
        const uint8_t *b = (const uint8_t *)row;                                                           \
        const __m256i m4 = _mm256_set1_epi8(0x0F);                                                         \
        const __m128i mdup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);     \
        __m256 acc[R];                                                                                     \
        PG_UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();                                \
        for (int i = 0; i < n; i += 256, b += 144) {                                                       \
            uint32_t sm[4];                                                                                \
            q4_k_unpack(b + 4, sm);                                                                        \
            __m128i smv = _mm_loadu_si128((const __m128i *)sm);                                            \
            __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, mdup));                              \
            /* int16 scales 2p (x4) then 2p + 1 (x4) in both 128-bit lanes */                              \
            __m256i sc4 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3))); \
            __m256i sc4b = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7))); \
            float d = f16c(b), dmin = f16c(b + 2);                                                         \
            PG_PREFETCH_NEXT_ROW(b, n, 144, 128)                                                              \
            __m256i is[R], is2[R];                                                                         \
            PG_UNROLL for (int r = 0; r < R; r++) is[r] = is2[r] = _mm256_setzero_si256();                 \
            const uint8_t *qs = b + 16;                                                                    \
            PG_UNROLL for (int p = 0; p < 4; p++) {                                                        \
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));                            \
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);  \
                __m256i src = p < 2 ? sc4 : sc4b;                                                          \
                __m256i sv = p % 2 ? _mm256_permute2x128_si256(src, src, 0x11) : _mm256_permute2x128_si256(src, src, 0x00); \
                PG_UNROLL for (int r = 0; r < R; r++) {                                                    \
                    const int8_t *x = xq + (size_t)r * (size_t)n + i + 64 * p;                             \
                    __m256i d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i *)x)); \
                    __m256i d1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), hi, _mm256_loadu_si256((const __m256i *)(x + 32))); \
                    __m256i pk = _mm256_packs_epi32(d0, d1);                                               \
                    if (R < 4 && (p & 1)) is2[r] = _mm256_dpwssd_epi32(is2[r], pk, sv);                    \
                    else is[r] = _mm256_dpwssd_epi32(is[r], pk, sv);                                       \
                }                                                                                          \
            }                                                                                              \
            PG_UNROLL for (int r = 0; r < R; r++) {                                                        \
                float dx = xd[(size_t)r * (size_t)(n / 256) + i / 256];                                    \
                __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (size_t)(n / 16) + i / 16)), mn16); \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(is[r], is2[r])), _mm256_set1_ps(d * dx), acc[r]); \
                acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(dmin * dx), acc[r]);      \
            }                                                                                              \
        }                                                                                                  \
        if (R == 8) hsum256_x8(acc, out); /* the same bits, the 8 sums together */                          \
        else PG_UNROLL for (int r = 0; r < R; r++) out[r] = hsum256(acc[r]);                               \
    }

PG_Q3K_P_ROWS(q3_k_krows1_vnni256, 1)
PG_Q3K_P_ROWS(q3_k_krows4_vnni256, 4)
PG_Q3K_F_ROWS(q3_k_krows8_vnni256, 8)
PG_Q3K_FA_ROWS(q3_k_krows16_vnni256, 16)
PG_Q4K_P_ROWS(q4_k_krows1_vnni256, 1)
PG_Q4K_P_ROWS(q4_k_krows4_vnni256, 4)
PG_Q4K_P_ROWS(q4_k_krows8_vnni256, 8)

// ---- 8 weight rows against one activation row (decode), each the one-row kernel's bits ----------

// the same block of the weight row 8 rows on (the next tile's), prefetched while this one is worked
// on: a decoded token streams every weight from memory
#define PG_PREFETCH_NEXT_TILE(b, stride, LAST)                                                             \
    _mm_prefetch((const char *)(b) + 8 * (stride), _MM_HINT_T0);                                          \
    _mm_prefetch((const char *)(b) + 8 * (stride) + 64, _MM_HINT_T0);                                     \
    _mm_prefetch((const char *)(b) + 8 * (stride) + (LAST), _MM_HINT_T0);

// The one-row Q3_K kernel's integer lanes for one block b against the activation codes x (256) and
// their per-16 sums xs: any exact integer evaluation gives the same block sum T, so 8 weight rows
// may share the lane sums and the float steps (q3_k_kw8_vnni256)
PG_VNNI_INLINE __m256i q3k_block_lanes(const uint8_t *b, const int8_t *x, const int16_t *xs) {
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i pick0 = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 4, 5, 4, 5, 4, 5, 4, 5, 2, 3, 2, 3, 2, 3, 2, 3,
                                           6, 7, 6, 7, 6, 7, 6, 7);
    const __m256i pick1 = _mm256_add_epi8(pick0, _mm256_set1_epi8(8));
    __m256i sc16 = _mm256_cvtepi8_epi16(q3_k_scales_avx2(b + 96));
    __m256i m4sc = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc16, 2));
    __m256i s_lo = _mm256_permute2x128_si256(sc16, sc16, 0x00), s_hi = _mm256_permute2x128_si256(sc16, sc16, 0x11);
    __m256i is = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xs), m4sc), is2 = _mm256_setzero_si256();
    __m256i hm = _mm256_loadu_si256((const __m256i *)b);
    PG_UNROLL for (int g = 0; g < 8; g += 2) {
        __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (g / 4)));
        __m256i u0 = PG_ADD4_SH(_mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4)), three), hm, g, four);
        __m256i u1 = PG_ADD4_SH(_mm256_and_si256(_mm256_srli_epi16(qv, 2 * (g % 4) + 2), three), hm, g + 1, four);
        __m256i sv = _mm256_shuffle_epi8(g < 4 ? s_lo : s_hi, (g % 4) / 2 ? pick1 : pick0);
        __m256i d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, _mm256_loadu_si256((const __m256i *)(x + 32 * g)));
        __m256i d1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u1, _mm256_loadu_si256((const __m256i *)(x + 32 * g + 32)));
        __m256i pk = _mm256_packs_epi32(d0, d1);
        if (g & 2) is2 = _mm256_dpwssd_epi32(is2, pk, sv);
        else is = _mm256_dpwssd_epi32(is, pk, sv);
    }
    return _mm256_add_epi32(is, is2);
}

// the 8 rows' f16 scales at byte `at` of block blk -> floats (exact, as f16c of each)
PG_VNNI_INLINE __m256 d_rows8(const uint8_t *b, size_t stride, size_t at) {
    uint16_t h[8];
    PG_UNROLL for (int q = 0; q < 8; q++) memcpy(&h[q], b + (size_t)q * stride + at, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

// Q3_K: per block the 8 rows' exact sums T (one lane sum for all 8), then acc = fma(T, d * xd, acc)
// per row in a lane, as the one-row kernel does in a scalar
PG_VNNI256 static void q3_k_kw8_vnni256(const void *row, size_t stride, const int8_t *xq, const float *xd,
                                        const int16_t *xs, int n, float *out) {
    const uint8_t *b = (const uint8_t *)row;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 256, b += 110) {
        __m256i is[8];
        PG_UNROLL for (int q = 0; q < 8; q++) {
            PG_PREFETCH_NEXT_TILE(b + (size_t)q * stride, stride, 109)
            is[q] = q3k_block_lanes(b + (size_t)q * stride, xq + i, xs + i / 16);
        }
        __m256 sc = _mm256_mul_ps(d_rows8(b, stride, 108), _mm256_set1_ps(xd[i / 256]));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum_8x8_epi32(is)), sc, acc);
    }
    _mm256_storeu_ps(out, acc);
}


// Q4_K: each row's float lanes exactly as the one-row kernel (per block fma of its int32 lanes with
// d * xd, fnmadd of the mins' lanes with dmin * xd), the final sums 8 at a time
PG_VNNI256 static void q4_k_kw8_vnni256(const void *row, size_t stride, const int8_t *xq, const float *xd,
                                        const int16_t *xs, int n, float *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m128i mdup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __m128i pa = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m128i pb = _mm_setr_epi8(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    __m256 acc[8];
    // row by row (each row's blocks in memory order, the next row's prefetched: the weights stream
    // from memory in decode), the final sums of the 8 rows together
    PG_UNROLL for (int q = 0; q < 8; q++) {
        acc[q] = _mm256_setzero_ps();
        const uint8_t *b = (const uint8_t *)row + (size_t)q * stride;
        for (int i = 0; i < n; i += 256, b += 144) {
            PG_PREFETCH_NEXT_ROW(b, n, 144, 128)
            uint32_t sm[4];
            q4_k_unpack(b + 4, sm);
            __m128i smv = _mm_loadu_si128((const __m128i *)sm);
            __m256i mn16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, mdup));
            __m256i sc4 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, pa));
            __m256i sc4b = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, pb));
            float d = f16c(b), dmin = f16c(b + 2), dx = xd[i / 256];
            __m256i is = _mm256_setzero_si256(), is2 = _mm256_setzero_si256();
            PG_UNROLL for (int p = 0; p < 4; p++) {
                __m256i qv = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * p));
                __m256i lo = _mm256_and_si256(qv, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
                __m256i src = p < 2 ? sc4 : sc4b;
                __m256i sv = p % 2 ? _mm256_permute2x128_si256(src, src, 0x11) : _mm256_permute2x128_si256(src, src, 0x00);
                const int8_t *x = xq + i + 64 * p;
                __m256i d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i *)x));
                __m256i d1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), hi, _mm256_loadu_si256((const __m256i *)(x + 32)));
                __m256i pk = _mm256_packs_epi32(d0, d1);
                if (p & 1) is2 = _mm256_dpwssd_epi32(is2, pk, sv);
                else is = _mm256_dpwssd_epi32(is, pk, sv);
            }
            __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + i / 16)), mn16);
            acc[q] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(is, is2)), _mm256_set1_ps(d * dx), acc[q]);
            acc[q] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(dmin * dx), acc[q]);
        }
    }
    hsum256_x8(acc, out);
}
PG_Q3K_K_ROWS(q3_k_krows1_avx2, 1, PG_AVX2, PG_MADD_AVX2, PG_ADD4_AVX2)
PG_Q3K_K_ROWS(q3_k_krows4_avx2, 4, PG_AVX2, PG_MADD_AVX2, PG_ADD4_AVX2)
PG_Q4K_K_ROWS(q4_k_krows1_avx2, 1, PG_AVX2, PG_MADD_AVX2)
PG_Q4K_K_ROWS(q4_k_krows4_avx2, 4, PG_AVX2, PG_MADD_AVX2)

#define PG_DOTK_FROM_ROWS1(name, rows1, attr)                                                                 \
    attr static float name(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n) { \
        float o;                                                                                           \
        rows1(row, xq, xd, xs, n, &o);                                                                     \
        return o;                                                                                          \
    }
PG_DOTK_FROM_ROWS1(dot_q3_k_q8k_vnni256, q3_k_krows1_vnni256, PG_VNNI256)
PG_DOTK_FROM_ROWS1(dot_q4_k_q8k_vnni256, q4_k_krows1_vnni256, PG_VNNI256)
PG_DOTK_FROM_ROWS1(dot_q3_k_q8k_avx2, q3_k_krows1_avx2, PG_AVX2)
PG_DOTK_FROM_ROWS1(dot_q4_k_q8k_avx2, q4_k_krows1_avx2, PG_AVX2)

// Q6_K block b, half h (128 weights): the 6-bit codes of its 4 groups of 32 from the low and high
// bit planes, as dq_q6_k lays them out
PG_AVX2 __attribute__((always_inline)) static inline void q6k_codes(const uint8_t *b, int h, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
    __m256i hb = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
}

// Q6_K row (n,) . R K-format activation rows -> out[r] (dot_q6_k_q8k_ref's integer sums, so every
// row count gives the same bits): per 32 weights the 6-bit codes are built once from the low and
// high bit planes, then for each row multiplied with its codes by maddubs (pairs <= 2 * 63 * 127,
// no saturation) and by the two sub-block scales with madd; the -32 offsets come from the code sums
// once per block and row
#define PG_Q6K_K_ROWS(name, R)                                                                                      \
    PG_AVX2 static void name(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n,        \
                             float *out) {                                                                          \
        const uint8_t *b = (const uint8_t *)row;                                                                   \
        float s[R];                                                                                                 \
        for (int r = 0; r < R; r++) s[r] = 0.0f;                                                                    \
        for (int i = 0; i < n; i += 256, b += 210) {                                                               \
            const int8_t *sc = (const int8_t *)(b + 192);                                                          \
            __m256i acc[R];                                                                                         \
            for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();                                            \
            for (int h = 0; h < 2; h++) {                                                                           \
                __m256i q[4];                                                                                       \
                q6k_codes(b, h, q);                                                                                 \
                for (int g = 0; g < 4; g++) {                                                                       \
                    __m256i scv = _mm256_setr_m128i(_mm_set1_epi16(sc[8 * h + 2 * g]),                               \
                                                    _mm_set1_epi16(sc[8 * h + 2 * g + 1]));                          \
                    for (int r = 0; r < R; r++) {                                                                   \
                        __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (size_t)r * n + i + 128 * h + 32 * g)); \
                        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(_mm256_maddubs_epi16(q[g], x), scv));    \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));                              \
            float d = f16c(b + 208);                                                                                \
            for (int r = 0; r < R; r++) {                                                                           \
                __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(xs + (size_t)r * (n / 16) + i / 16))); \
                __m256i a = _mm256_sub_epi32(acc[r], _mm256_slli_epi32(off, 5));                                    \
                __m128i t = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));               \
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));                                                   \
                t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));                                                   \
                s[r] += d * xd[(size_t)r * (n / 256) + i / 256] * (float)_mm_cvtsi128_si32(t);                      \
            }                                                                                                       \
        }                                                                                                           \
        for (int r = 0; r < R; r++) out[r] = s[r];                                                                  \
    }
PG_Q6K_K_ROWS(q6_k_krows1_avx2, 1)
PG_Q6K_K_ROWS(q6_k_krows4_avx2, 4)
PG_Q6K_K_ROWS(q6_k_krows8_avx2, 8)
PG_DOTK_FROM_ROWS1(dot_q6_k_q8k_avx2, q6_k_krows1_avx2, PG_AVX2)

// Q6_K: 8 weight rows against one activation row, each row's integer sum exactly as the one-row
// kernel's (PG_Q6K_K_ROWS), the block sums of the 8 rows in one lane sum, then the same scalar float
// step per row
PG_AVX2 static void q6_k_kw8_avx2(const void *row, size_t stride, const int8_t *xq, const float *xd, const int16_t *xs,
                                  int n, float *out) {
    float s[8];
    for (int q = 0; q < 8; q++) s[q] = 0.0f;
    const uint8_t *b0 = (const uint8_t *)row;
    for (int i = 0; i < n; i += 256, b0 += 210) {
        __m256i x[8];
        for (int k = 0; k < 8; k++) x[k] = _mm256_loadu_si256((const __m256i *)(xq + i + 32 * k));
        const __m256i xsv = _mm256_loadu_si256((const __m256i *)(xs + i / 16));
        __m256i a[8];
        for (int q = 0; q < 8; q++) {
            const uint8_t *b = b0 + (size_t)q * stride;
            const int8_t *sc = (const int8_t *)(b + 192);
            __m256i acc = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i c[4];
                q6k_codes(b, h, c);
                for (int g = 0; g < 4; g++) {
                    __m256i scv = _mm256_setr_m128i(_mm_set1_epi16(sc[8 * h + 2 * g]), _mm_set1_epi16(sc[8 * h + 2 * g + 1]));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(c[g], x[4 * h + g]), scv));
                }
            }
            __m256i off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)), xsv);
            a[q] = _mm256_sub_epi32(acc, _mm256_slli_epi32(off, 5));
        }
        int32_t t[8];
        _mm256_storeu_si256((__m256i *)t, hsum_8x8_epi32(a));
        for (int q = 0; q < 8; q++) s[q] += f16c(b0 + (size_t)q * stride + 208) * xd[i / 256] * (float)t[q];
    }
    for (int q = 0; q < 8; q++) out[q] = s[q];
}

// The dot-product table's one-row signature over a rows-kernel called for one activation row.
#define PG_DOT_FROM_ROWS1(name, rows1, attr)                                                              \
    attr static float name(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) { \
        float o;                                                                                         \
        rows1(row, xq, xd, xs, n, &o);                                                                   \
        return o;                                                                                        \
    }
PG_DOT_FROM_ROWS1(dot_q4_k_q8_avx2_rows, q4_k_rows1_avx2, PG_AVX2)
PG_DOT_FROM_ROWS1(dot_q3_k_q8_avx2_rows, q3_k_rows1_avx2, PG_AVX2)
PG_DOT_FROM_ROWS1(dot_q4_k_q8_vnni256, q4_k_rows1_vnni256, PG_VNNI256)
PG_DOT_FROM_ROWS1(dot_q3_k_q8_vnni256, q3_k_rows1_vnni256, PG_VNNI256)

// the entries both integer sets share (Q6_K has only AVX2 kernels)
#define PG_X86_INT_SHARED_TYPES                                                                           \
    PG_X86_FLOAT_ONLY_TYPES, [PG_TYPE_F32] = {.dot = dot_f32_avx2, .axpy = axpy_f32_avx2},                 \
    [PG_TYPE_F16] = {.dot = dot_f16_avx2, .axpy = axpy_f16_avx2},                                          \
    [PG_TYPE_Q8_0] = {.dot = dot_q8_0_avx2, .axpy = axpy_q8_0_avx2, .dot_q8 = dot_q8_0_q8_avx2},           \
    [PG_TYPE_Q6_K] = {.dot = dot_q6_k_avx2,                                                                \
                      .dot_q8k = dot_q6_k_q8k_avx2,                                                        \
                      .dot_q8kx4 = q6_k_krows4_avx2,                                                       \
                      .dot_q8kx8 = q6_k_krows8_avx2,                                                       \
                      .dot_q8kw8 = q6_k_kw8_avx2}

static const pg_kernels s_avx2_int = {
    .name = "x86-avx2-int8",
    .type =
        {
            PG_X86_INT_SHARED_TYPES,
            [PG_TYPE_Q3_K] = {.dot = dot_q3_k_avx2,
                              .dot_q8 = dot_q3_k_q8_avx2_rows,
                              .dot_q8x4 = q3_k_rows4_avx2,
                              .dot_q8k = dot_q3_k_q8k_avx2,
                              .dot_q8kx4 = q3_k_krows4_avx2},
            [PG_TYPE_Q4_K] = {.dot = dot_q4_k_avx2,
                              .dot_q8 = dot_q4_k_q8_avx2_rows,
                              .dot_q8x4 = q4_k_rows4_avx2,
                              .dot_q8k = dot_q4_k_q8k_avx2,
                              .dot_q8kx4 = q4_k_krows4_avx2},
        },
    .quantize = quantize_act_avx2,
    .quantize_k = quantize_act_k_avx2,
    PG_X86_ROW_KERNELS,
};
static const pg_kernels s_vnni256_int = {
    .name = "x86-vnni256-int8",
    .type =
        {
            PG_X86_INT_SHARED_TYPES,
            [PG_TYPE_Q3_K] = {.dot = dot_q3_k_avx2,
                              .dot_q8 = dot_q3_k_q8_vnni256,
                              .dot_q8x4 = q3_k_rows4_vnni256,
                              .dot_q8x8 = q3_k_rows8_vnni256,
                              .dot_q8k = dot_q3_k_q8k_vnni256,
                              .dot_q8kx4 = q3_k_krows4_vnni256,
                              .dot_q8kx8 = q3_k_krows8_vnni256,
                              .dot_q8kx16 = q3_k_krows16_vnni256,
                              .dot_q8kw8 = q3_k_kw8_vnni256},
            [PG_TYPE_Q4_K] = {.dot = dot_q4_k_avx2,
                              .dot_q8 = dot_q4_k_q8_vnni256,
                              .dot_q8x4 = q4_k_rows4_vnni256,
                              .dot_q8x8 = q4_k_rows8_vnni256,
                              .dot_q8k = dot_q4_k_q8k_vnni256,
                              .dot_q8kx4 = q4_k_krows4_vnni256,
                              .dot_q8kx8 = q4_k_krows8_vnni256,
                              .dot_q8kw8 = q4_k_kw8_vnni256},
        },
    .quantize = quantize_act_avx2,
    .quantize_k = quantize_act_k_avx2,
    PG_X86_ROW_KERNELS,
};


const pg_kernels *pg_kernels_x86(int allow_avx512, int allow_int) {
    __builtin_cpu_init();
    // every CPU with AVX2 also has F16C (older clang cannot query "f16c" here)
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return NULL;
    if (allow_int && allow_avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
        return &s_vnni256_int;
    if (allow_int) return &s_avx2_int;
    if (allow_avx512 && __builtin_cpu_supports("avx512f")) return &s_avx512;
    return &s_avx2;
}

#else
typedef int pg_kernels_x86_unused;  // not an x86 build (or PG_FORCE_REF): nothing to compile
#endif
