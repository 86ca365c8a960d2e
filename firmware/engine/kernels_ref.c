// pocketgpt engine: portable reference kernels. Block layouts are ggml's (ggml-common.h),
// written here from its documented structure: every type dequantizes block by block.
#include "kernels.h"

#include <math.h>
#include <string.h>

static float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return pg_f16_to_f32(h);
}

// block_q4_0 { half d; uint8 qs[16]; }: 32 weights, low nibbles first then high, minus 8
static void dq_q4_0(const uint8_t *b, float *y) {
    float d = f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0x0F) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

// block_q4_1 { half d, m; uint8 qs[16]; }
static void dq_q4_1(const uint8_t *b, float *y) {
    float d = f16(b), m = f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(qs[j] & 0x0F) + m;
        y[j + 16] = d * (float)(qs[j] >> 4) + m;
    }
}

// block_q5_0 { half d; uint8 qh[4]; uint8 qs[16]; }: fifth bits in qh, minus 16
static void dq_q5_0(const uint8_t *b, float *y) {
    float d = f16(b);
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) << 4) & 0x10;
        int h1 = (int)(qh >> (j + 12)) & 0x10;
        y[j] = d * (float)(((qs[j] & 0x0F) | h0) - 16);
        y[j + 16] = d * (float)(((qs[j] >> 4) | h1) - 16);
    }
}

// block_q5_1 { half d, m; uint8 qh[4]; uint8 qs[16]; }
static void dq_q5_1(const uint8_t *b, float *y) {
    float d = f16(b), m = f16(b + 2);
    uint32_t qh;
    memcpy(&qh, b + 4, 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) << 4) & 0x10;
        int h1 = (int)(qh >> (j + 12)) & 0x10;
        y[j] = d * (float)((qs[j] & 0x0F) | h0) + m;
        y[j + 16] = d * (float)((qs[j] >> 4) | h1) + m;
    }
}

// block_q8_0 { half d; int8 qs[32]; }
static void dq_q8_0(const uint8_t *b, float *y) {
    float d = f16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = d * (float)qs[j];
}

// block_iq4_nl { half d; uint8 qs[16]; }: nibbles index a fixed non-linear table
static const int8_t s_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};
static void dq_iq4_nl(const uint8_t *b, float *y) {
    float d = f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)s_iq4nl_values[qs[j] & 0x0F];
        y[j + 16] = d * (float)s_iq4nl_values[qs[j] >> 4];
    }
}

// block_q2_K { uint8 scales[16]; uint8 qs[64]; half d, dmin; }: 256 weights, 2 bits each,
// 16 groups of 16 with a 4-bit scale (low) and 4-bit min (high)
static void dq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *q = b + 16;
    float d = f16(b + 80), dmin = f16(b + 82);
    int is = 0;
    for (int n = 0; n < 2; n++, q += 32) {
        for (int shift = 0; shift < 8; shift += 2) {
            for (int half = 0; half < 2; half++) {
                uint8_t s = sc[is++];
                float dl = d * (float)(s & 0x0F), ml = dmin * (float)(s >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16 * half] >> shift) & 3) - ml;
            }
        }
    }
}

// block_q3_K { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d; }: 2 low bits in qs,
// the third (inverted: set means no -4) in hmask, sixteen 6-bit scales packed in 12 bytes
static void dq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32, *packed = b + 96;
    float d = f16(b + 108);
    int8_t scales[16];
    for (int i = 0; i < 16; i++) {
        int low = (i < 8) ? (packed[i] & 0x0F) : (packed[i - 8] >> 4);
        int high = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
        scales[i] = (int8_t)((low | (high << 4)) - 32);
    }
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < 2; n++, q += 32) {
        for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
            for (int half = 0; half < 2; half++) {
                float dl = d * (float)scales[is++];
                for (int l = 0; l < 16; l++) {
                    int k = l + 16 * half;
                    int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
                    *y++ = dl * (float)v;
                }
            }
        }
    }
}

// 6-bit scale and min j (0..7) from the 12-byte packing shared by Q4_K and Q5_K
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// block_q4_K { half d, dmin; uint8 scales[12]; uint8 qs[128]; }: 8 groups of 32, y = d*sc*q - dmin*m
static void dq_q4_k(const uint8_t *b, float *y) {
    float d = f16(b), dmin = f16(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0; j < 8; j += 2, q += 32) {
        int sc, mn;
        scale_min_k4(j, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        scale_min_k4(j + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0F) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

// block_q5_K { half d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }
static void dq_q5_k(const uint8_t *b, float *y) {
    float d = f16(b), dmin = f16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
        int sc, mn;
        scale_min_k4(j, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        scale_min_k4(j + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }: 4 low + 2 high bits, minus 32
static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16(b + 208);
    for (int n = 0; n < 2; n++, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

typedef pg_dequant_block_fn pg_dq_block_fn;

pg_dequant_block_fn pg_dequant_block(uint32_t type) {
    switch (type) {
    case PG_TYPE_Q4_0: return dq_q4_0;
    case PG_TYPE_Q4_1: return dq_q4_1;
    case PG_TYPE_Q5_0: return dq_q5_0;
    case PG_TYPE_Q5_1: return dq_q5_1;
    case PG_TYPE_Q8_0: return dq_q8_0;
    case PG_TYPE_IQ4_NL: return dq_iq4_nl;
    case PG_TYPE_Q2_K: return dq_q2_k;
    case PG_TYPE_Q3_K: return dq_q3_k;
    case PG_TYPE_Q4_K: return dq_q4_k;
    case PG_TYPE_Q5_K: return dq_q5_k;
    case PG_TYPE_Q6_K: return dq_q6_k;
    default: return NULL;
    }
}

int pg_type_supported(uint32_t type) {
    return type == PG_TYPE_F32 || type == PG_TYPE_F16 || pg_dequant_block(type) != NULL;
}

void pg_dequant_row(uint32_t type, const void *row, float *out, int n) {
    const uint8_t *p = (const uint8_t *)row;
    if (type == PG_TYPE_F32) {
        memcpy(out, row, (size_t)n * sizeof(float));
    } else if (type == PG_TYPE_F16) {
        for (int i = 0; i < n; i++) out[i] = f16(p + 2 * i);
    } else {
        pg_dq_block_fn fn = pg_dequant_block(type);
        uint32_t qk = pg_type_block(type), bb = pg_type_block_bytes(type);
        for (int i = 0; i < n; i += (int)qk, p += bb) fn(p, out + i);
    }
}

// row (n,) F32 . x (n,) -> float
static float dot_f32_ref(const void *row, const float *x, int n) {
    const float *w = (const float *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

// row (n,) F16 . x (n,) -> float
static float dot_f16_ref(const void *row, const float *x, int n) {
    const uint8_t *p = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += f16(p + 2 * i) * x[i];
    return s;
}

// row (n,) in blocks of `type` . x (n,) -> float: dequantize one block, then multiply-add
static float dot_blocks_ref(uint32_t type, const void *row, const float *x, int n) {
    pg_dq_block_fn fn = pg_dequant_block(type);
    uint32_t qk = pg_type_block(type), bb = pg_type_block_bytes(type);
    const uint8_t *p = (const uint8_t *)row;
    float tmp[256];
    float s = 0.0f;
    for (int i = 0; i < n; i += (int)qk, p += bb) {
        fn(p, tmp);
        float bs = 0.0f;
        for (uint32_t j = 0; j < qk; j++) bs += tmp[j] * x[i + (int)j];
        s += bs;
    }
    return s;
}

#define PG_DOT_BLOCKS(T, ID) \
    static float dot_##T##_ref(const void *row, const float *x, int n) { return dot_blocks_ref(ID, row, x, n); }
PG_DOT_BLOCKS(q4_0, PG_TYPE_Q4_0)
PG_DOT_BLOCKS(q4_1, PG_TYPE_Q4_1)
PG_DOT_BLOCKS(q5_0, PG_TYPE_Q5_0)
PG_DOT_BLOCKS(q5_1, PG_TYPE_Q5_1)
PG_DOT_BLOCKS(q8_0, PG_TYPE_Q8_0)
PG_DOT_BLOCKS(iq4_nl, PG_TYPE_IQ4_NL)
PG_DOT_BLOCKS(q2_k, PG_TYPE_Q2_K)
PG_DOT_BLOCKS(q3_k, PG_TYPE_Q3_K)
PG_DOT_BLOCKS(q4_k, PG_TYPE_Q4_K)
PG_DOT_BLOCKS(q5_k, PG_TYPE_Q5_K)
PG_DOT_BLOCKS(q6_k, PG_TYPE_Q6_K)


void pg_quantize_act(const float *x, int8_t *xq, float *xd, float *xs, int n) {
    for (int i = 0; i < n; i += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = x[i + j] < 0 ? -x[i + j] : x[i + j];
            if (a > amax) amax = a;
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        xd[i / 32] = d;
        int32_t sum[2] = {0, 0};
        for (int j = 0; j < 32; j++) {
            float v = x[i + j] * inv;
            xq[i + j] = (int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
            sum[j / 16] += xq[i + j];
        }
        if (xs) {
            xs[i / 16] = (float)sum[0];
            xs[i / 16 + 1] = (float)sum[1];
        }
    }
}

// row (n,) Q8_0 . activations (xq, xd) -> float: integer dot per block, scaled once
static float dot_q8_0_q8_ref(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) {
    (void)xs;
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 32, b += 34) {
        const int8_t *q = (const int8_t *)(b + 2);
        int32_t acc = 0;
        for (int j = 0; j < 32; j++) acc += (int32_t)q[j] * (int32_t)xq[i + j];
        s += f16(b) * xd[i / 32] * (float)acc;
    }
    return s;
}

// sixteen signed 6-bit Q3_K scales from their 12-byte packing
static void q3_k_scales(const uint8_t *packed, int8_t *scales) {
    for (int i = 0; i < 16; i++) {
        int low = (i < 8) ? (packed[i] & 0x0F) : (packed[i - 8] >> 4);
        int high = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
        scales[i] = (int8_t)((low | (high << 4)) - 32);
    }
}

// row (n,) Q3_K . activations (xq, xd) -> float. Each 32-weight group g of a block uses 2 bits of
// the 32 qs bytes of its half (shift 2 * (g % 4)) and one hmask bit, scales a (first 16) and b:
// d * xd[g] * (a * sum_{l<16} q xq + b * sum_{l>=16} q xq), q = low2 - (hbit ? 0 : 4)
static float dot_q3_k_q8_ref(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) {
    (void)xs;
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 256, b += 110) {
        const uint8_t *hm = b, *qs = b + 32;
        int8_t sc[16];
        q3_k_scales(b + 96, sc);
        float d = f16(b + 108);
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = qs + 32 * (g / 4);
            int shift = 2 * (g % 4);
            uint8_t m = (uint8_t)(1u << g);
            const int8_t *x = xq + i + 32 * g;
            int32_t sa = 0, sb = 0;
            for (int l = 0; l < 16; l++) {
                sa += (((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4)) * x[l];
                sb += (((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4)) * x[l + 16];
            }
            s += d * xd[(i >> 5) + g] * (float)(sc[2 * g] * sa + sc[2 * g + 1] * sb);
        }
    }
    return s;
}

// 6-bit scale and min j (0..7) of a Q4_K/Q5_K block, as scale_min_k4
static void q4_k_scales(const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 8; j++) {
        int a, m;
        scale_min_k4(j, q, &a, &m);
        sc[j] = (uint8_t)a;
        mn[j] = (uint8_t)m;
    }
}

// row (n,) Q4_K . activations (xq, xd, xs) -> float: per 32-weight group g (low nibbles of qs
// bytes 32*(g/2).. for even g, high for odd): d * sc[g] * xd[g] * sum q xq - dmin * mn[g] * xd[g] * sum xq
static float dot_q4_k_q8_ref(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) {
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 256, b += 144) {
        float d = f16(b), dmin = f16(b + 2);
        uint8_t sc[8], mn[8];
        q4_k_scales(b + 4, sc, mn);
        const uint8_t *qs = b + 16;
        float sum = 0.0f, mins = 0.0f;
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = qs + 32 * (g / 2);
            int shift = 4 * (g % 2);
            const int8_t *x = xq + i + 32 * g;
            int32_t acc = 0;
            for (int l = 0; l < 32; l++) acc += ((q[l] >> shift) & 0x0F) * x[l];
            sum += (float)(sc[g] * acc) * xd[(i >> 5) + g];
            mins += (float)mn[g] * xd[(i >> 5) + g] * (xs[(i >> 4) + 2 * g] + xs[(i >> 4) + 2 * g + 1]);
        }
        s += d * sum - dmin * mins;
    }
    return s;
}

void pg_k_rows16_prepare(const float *xd, const int16_t *xs, int n, float *xdt, int32_t *xat) {
    int nb = n / 256;
    for (int blk = 0; blk < nb; blk++)
        for (int r = 0; r < 16; r++) {
            int32_t sum = 0;
            for (int k = 0; k < 16; k++) sum += xs[r * (n / 16) + 16 * blk + k];
            xdt[blk * 16 + r] = xd[r * nb + blk];
            xat[blk * 16 + r] = sum;
        }
}

// x (n,) -> the K activation format (kernels.h): one scale per 256 values, int16 sums per 16
void pg_quantize_act_k(const float *x, int8_t *xq, float *xd, int16_t *xs, int n) {
    for (int i = 0; i < n; i += 256) {
        float amax = 0.0f;
        for (int j = 0; j < 256; j++) {
            float a = x[i + j] < 0 ? -x[i + j] : x[i + j];
            if (a > amax) amax = a;
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        xd[i / 256] = d;
        for (int k = 0; k < 16; k++) {
            int32_t sum = 0;
            for (int l = 0; l < 16; l++) {
                float v = x[i + 16 * k + l] * inv;
                int8_t q = (int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
                xq[i + 16 * k + l] = q;
                sum += q;
            }
            xs[i / 16 + k] = (int16_t)sum;
        }
    }
}

// row (n,) Q3_K . K-format activations -> float. Per 256-weight block, in integers: for each
// 16-weight sub-block k (group g = k / 2, qs/hmask bytes 16 * (k % 2).. of its half),
// sc[k] * (sum u xq - 4 * xs[k]) with u = low2 + (hbit ? 4 : 0) = q + 4; then d * xd * that, once
static float dot_q3_k_q8k_ref(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n) {
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 256, b += 110) {
        const uint8_t *hm = b, *qs = b + 32;
        int8_t sc[16];
        q3_k_scales(b + 96, sc);
        int32_t isum = 0;
        for (int k = 0; k < 16; k++) {
            int g = k / 2, shift = 2 * (g % 4);
            const uint8_t *q = qs + 32 * (g / 4);
            uint8_t m = (uint8_t)(1u << g);
            const int8_t *x = xq + i + 16 * k;
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) {
                int j = 16 * (k % 2) + l;
                dot += (((q[j] >> shift) & 3) + ((hm[j] & m) ? 4 : 0)) * x[l];
            }
            isum += sc[k] * (dot - 4 * xs[i / 16 + k]);
        }
        s += f16(b + 108) * xd[i / 256] * (float)isum;
    }
    return s;
}

// row (n,) Q4_K . K-format activations -> float: per block, in integers, sum_g sc[g] * sum q xq
// and sum_g mn[g] * (sum of the group's codes); then d * xd * the first - dmin * xd * the second
static float dot_q4_k_q8k_ref(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n) {
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 256, b += 144) {
        uint8_t sc[8], mn[8];
        q4_k_scales(b + 4, sc, mn);
        const uint8_t *qs = b + 16;
        int32_t isum = 0, imin = 0;
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = qs + 32 * (g / 2);
            int shift = 4 * (g % 2);
            const int8_t *x = xq + i + 32 * g;
            int32_t dot = 0;
            for (int l = 0; l < 32; l++) dot += ((q[l] >> shift) & 0x0F) * x[l];
            isum += sc[g] * dot;
            imin += mn[g] * (xs[i / 16 + 2 * g] + xs[i / 16 + 2 * g + 1]);
        }
        s += f16(b) * xd[i / 256] * (float)isum - f16(b + 2) * xd[i / 256] * (float)imin;
    }
    return s;
}

// row (n,) Q6_K . K-format activations -> float: per block, in integers, the sum over its 16
// sub-blocks of sc[j] * (sum q xq - 32 * the sub-block's code sum), q the 6-bit code (0..63) as
// dq_q6_k lays it out; then d * xd * that
static float dot_q6_k_q8k_ref(const void *row, const int8_t *xq, const float *xd, const int16_t *xs, int n) {
    const uint8_t *b = (const uint8_t *)row;
    float s = 0.0f;
    for (int i = 0; i < n; i += 256, b += 210) {
        const int8_t *sc = (const int8_t *)(b + 192);
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) {  // sub-block j: weights 128 h + 32 g + 16 k .. + 15
            int h = j / 8, g = (j % 8) / 2, k = j % 2;
            const uint8_t *ql = b + 64 * h + 32 * (g % 2), *qh = b + 128 + 32 * h;
            const int8_t *x = xq + i + 128 * h + 32 * g;
            int32_t dot = 0;
            for (int l = 16 * k; l < 16 * k + 16; l++) {
                int lo = g < 2 ? ql[l] & 0x0F : ql[l] >> 4;
                dot += (lo | (((qh[l] >> (2 * g)) & 3) << 4)) * x[l];
            }
            isum += sc[j] * (dot - 32 * xs[i / 16 + j]);
        }
        s += f16(b + 208) * xd[i / 256] * (float)isum;
    }
    return s;
}


static void axpy_f32_ref(float *y, float a, const void *row, int n) {
    const float *x = (const float *)row;
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void axpy_f16_ref(float *y, float a, const void *row, int n) {
    const uint8_t *p = (const uint8_t *)row;
    for (int i = 0; i < n; i++) y[i] += a * f16(p + 2 * i);
}

static void axpy_q8_0_ref(float *y, float a, const void *row, int n) {
    const uint8_t *b = (const uint8_t *)row;
    for (int i = 0; i < n; i += 32, b += 34) {
        float ad = a * f16(b);
        const int8_t *q = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) y[i + j] += ad * (float)q[j];
    }
}


void pg_quantize_q8_0(const float *x, void *out, int n) {
    uint8_t *b = (uint8_t *)out;
    for (int i = 0; i < n; i += 32, b += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = x[i + j] < 0 ? -x[i + j] : x[i + j];
            if (v > amax) amax = v;
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = pg_f32_to_f16(d);
        memcpy(b, &h, 2);
        for (int j = 0; j < 32; j++) {
            float v = x[i + j] * inv;
            b[2 + j] = (uint8_t)(int8_t)(v < 0 ? (int)(v - 0.5f) : (int)(v + 0.5f));
        }
    }
}

// GPT-2's tanh approximation of GELU, in place
static void gelu_ref(float *x, size_t n) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

// x[i] = e^(x[i] - mx) in place -> the sum, added in order
static float exp_sum_ref(float *x, int n, float mx) {
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
        x[t] = expf(x[t] - mx);
        sum += x[t];
    }
    return sum;
}

// The portable set: the definition of every kernel, and what pg_kernels_select fills other sets'
// empty reference slots from.
static const pg_kernels s_ref = {
    .name = "ref",
    .type =
        {
            [PG_TYPE_F32] = {.dot = dot_f32_ref, .axpy = axpy_f32_ref},
            [PG_TYPE_F16] = {.dot = dot_f16_ref, .axpy = axpy_f16_ref},
            [PG_TYPE_Q4_0] = {.dot = dot_q4_0_ref},
            [PG_TYPE_Q4_1] = {.dot = dot_q4_1_ref},
            [PG_TYPE_Q5_0] = {.dot = dot_q5_0_ref},
            [PG_TYPE_Q5_1] = {.dot = dot_q5_1_ref},
            [PG_TYPE_Q8_0] = {.dot = dot_q8_0_ref, .axpy = axpy_q8_0_ref},
            [PG_TYPE_Q2_K] = {.dot = dot_q2_k_ref},
            [PG_TYPE_Q3_K] = {.dot = dot_q3_k_ref},
            [PG_TYPE_Q4_K] = {.dot = dot_q4_k_ref},
            [PG_TYPE_Q5_K] = {.dot = dot_q5_k_ref},
            [PG_TYPE_Q6_K] = {.dot = dot_q6_k_ref},
            [PG_TYPE_IQ4_NL] = {.dot = dot_iq4_nl_ref},
        },
    .quantize = pg_quantize_act,
    .quantize_k = pg_quantize_act_k,
    .gelu = gelu_ref,
    .exp_sum = exp_sum_ref,
};

// The portable integer-activation paths (what the chip runs, on the host): the float set plus the
// _q8_ref dots (per-32 scales for Q8_0; the K format for Q3_K, Q4_K, Q6_K), the reference slots
// left to pg_kernels_select.
static const pg_kernels s_ref_q8 = {
    .name = "ref-q8",
    .type =
        {
            [PG_TYPE_Q8_0] = {.dot_q8 = dot_q8_0_q8_ref},
            [PG_TYPE_Q3_K] = {.dot_q8 = dot_q3_k_q8_ref, .dot_q8k = dot_q3_k_q8k_ref},
            [PG_TYPE_Q4_K] = {.dot_q8 = dot_q4_k_q8_ref, .dot_q8k = dot_q4_k_q8k_ref},
            [PG_TYPE_Q6_K] = {.dot_q8k = dot_q6_k_q8k_ref},
        },
};

// The integer-activation definitions, for fast sets to reuse where they have no kernel of their own.
pg_dot_q8_fn pg_dot_q8_ref(uint32_t type) { return type < PG_TYPE_COUNT ? s_ref_q8.type[type].dot_q8 : NULL; }
pg_dot_q8k_fn pg_dot_q8k_ref(uint32_t type) { return type < PG_TYPE_COUNT ? s_ref_q8.type[type].dot_q8k : NULL; }

// the raw table a mode names (its reference slots possibly empty)
static const pg_kernels *kernels_for(int mode) {
    if (mode == PG_KERNELS_REF_Q8) return &s_ref_q8;
#if defined(PG_FORCE_REF)
    return &s_ref;
#else
    if (mode == PG_KERNELS_REF) return &s_ref;
#if defined(__x86_64__) || defined(__i386__)
    const pg_kernels *k = pg_kernels_x86(mode != PG_KERNELS_NO_AVX512, mode != PG_KERNELS_FLOAT);
    if (k) return k;
#endif
#if defined(PG_TARGET_ESP32S3)
    return pg_kernels_esp32s3();
#endif
    return &s_ref;
#endif
}

void pg_kernels_select(pg_kernels *out, int mode) {
    *out = *kernels_for(mode);
    for (int t = 0; t < PG_TYPE_COUNT; t++) {
        if (!out->type[t].dot) out->type[t].dot = s_ref.type[t].dot;
        if (!out->type[t].axpy) out->type[t].axpy = s_ref.type[t].axpy;
    }
    if (!out->quantize) out->quantize = s_ref.quantize;
    if (!out->quantize_k) out->quantize_k = s_ref.quantize_k;
    if (!out->gelu) out->gelu = s_ref.gelu;
    if (!out->exp_sum) out->exp_sum = s_ref.exp_sum;
}
