// pocketgpt engine: x86 fast paths (AVX-512F, else AVX2 + FMA + F16C), chosen at run time with
// __builtin_cpu_supports, so the same binary runs on older CPUs through _ref. Integer VNNI kernels
// (activations quantized to int8, the dot_q8 path) are left for the speed work. Functions carry
// target attributes; the file needs no special compiler flags. Types without a dedicated kernel
// here dequantize a block with the reference code and use the AVX2 multiply-add.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(PG_FORCE_REF)
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define PG_AVX2 __attribute__((target("avx2,fma,f16c")))

PG_AVX2 static float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
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

static const pg_kernels s_avx2 = {
    "x86-avx2",
    {
        [PG_TYPE_F32] = dot_f32_avx2,     [PG_TYPE_F16] = dot_f16_avx2,   [PG_TYPE_Q4_0] = dot_q4_0_avx2,
        [PG_TYPE_Q4_1] = dot_q4_1_avx2,   [PG_TYPE_Q5_0] = dot_q5_0_avx2, [PG_TYPE_Q5_1] = dot_q5_1_avx2,
        [PG_TYPE_Q8_0] = dot_q8_0_avx2,   [PG_TYPE_Q2_K] = dot_q2_k_avx2, [PG_TYPE_Q3_K] = dot_q3_k_avx2,
        [PG_TYPE_Q4_K] = dot_q4_k_avx2,   [PG_TYPE_Q5_K] = dot_q5_k_avx2, [PG_TYPE_Q6_K] = dot_q6_k_avx2,
        [PG_TYPE_IQ4_NL] = dot_iq4_nl_avx2,
    },
    {0},
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
    "x86-avx512",
    {
        [PG_TYPE_F32] = dot_f32_avx512,   [PG_TYPE_F16] = dot_f16_avx512, [PG_TYPE_Q4_0] = dot_q4_0_avx2,
        [PG_TYPE_Q4_1] = dot_q4_1_avx2,   [PG_TYPE_Q5_0] = dot_q5_0_avx2, [PG_TYPE_Q5_1] = dot_q5_1_avx2,
        [PG_TYPE_Q8_0] = dot_q8_0_avx512, [PG_TYPE_Q2_K] = dot_q2_k_avx2, [PG_TYPE_Q3_K] = dot_q3_k_avx2,
        [PG_TYPE_Q4_K] = dot_q4_k_avx2,   [PG_TYPE_Q5_K] = dot_q5_k_avx2, [PG_TYPE_Q6_K] = dot_q6_k_avx2,
        [PG_TYPE_IQ4_NL] = dot_iq4_nl_avx2,
    },
    {0},
};

const pg_kernels *pg_kernels_x86(int allow_avx512) {
    __builtin_cpu_init();
    // every CPU with AVX2 also has F16C (older clang cannot query "f16c" here)
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return NULL;
    if (allow_avx512 && __builtin_cpu_supports("avx512f")) return &s_avx512;
    return &s_avx2;
}

#else
typedef int pg_kernels_x86_unused;  // not an x86 build (or PG_FORCE_REF): nothing to compile
#endif
