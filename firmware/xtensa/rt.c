// pocketgpt bare-metal harness: the small runtime library the engine needs on a core with no C
// library linked (the ESP32-S3 in QEMU). Written for this harness, not taken from newlib or libgcc:
//   string: memcpy memmove memset memcmp memchr strlen
//   stdio:  vsnprintf snprintf (d i u x c s p %, with l ll z; %g/%f printed as fixed point: status
//           messages only)
//   math:   sqrtf (correctly rounded), expf, tanhf (within ~2 ulp; not glibc's or newlib's code)
//   libgcc: __divsf3, __truncdfsf2 (correctly rounded), 64-bit __udivdi3 __umoddi3 __divdi3 __moddi3
// The same file is compiled into the host build of the harness, so both sides run the same math
// and their tokens can be compared bit for bit.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "math.h"
#include "stdio.h"
#include "string.h"

// ---- string -----------------------------------------------------------------------------------
void *memcpy(void *restrict d, const void *restrict s, size_t n) {
    uint8_t *dp = d;
    const uint8_t *sp = s;
    if ((((uintptr_t)dp | (uintptr_t)sp) & 3) == 0) {
        for (; n >= 4; n -= 4, dp += 4, sp += 4) *(uint32_t *)dp = *(const uint32_t *)sp;
    }
    while (n--) *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    uint8_t *dp = d;
    const uint8_t *sp = s;
    if (dp == sp || n == 0) return d;
    if (dp < sp) {
        while (n--) *dp++ = *sp++;
    } else {
        while (n--) dp[n] = sp[n];
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    uint8_t *dp = d;
    uint8_t b = (uint8_t)c;
    if (((uintptr_t)dp & 3) == 0) {
        uint32_t w = b * 0x01010101u;
        for (; n >= 4; n -= 4, dp += 4) *(uint32_t *)dp = w;
    }
    while (n--) *dp++ = b;
    return d;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

void *memchr(const void *s, int c, size_t n) {
    const uint8_t *p = s;
    for (size_t i = 0; i < n; i++)
        if (p[i] == (uint8_t)c) return (void *)(p + i);
    return NULL;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

// ---- stdio ------------------------------------------------------------------------------------
typedef struct {
    char *buf;
    size_t cap, n;
} pg_out_buf;

static void put(pg_out_buf *o, char c) {
    if (o->n + 1 < o->cap) o->buf[o->n] = c;
    o->n++;
}

static void put_u64(pg_out_buf *o, uint64_t v, unsigned base, int width, char pad) {
    char t[24];
    int k = 0;
    do {
        unsigned d = (unsigned)(v % base);
        t[k++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    for (; width > k; width--) put(o, pad);
    while (k) put(o, t[--k]);
}

int vsnprintf(char *restrict buf, size_t cap, const char *restrict fmt, va_list ap) {
    pg_out_buf o = {buf, cap, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        p++;
        char pad = ' ';
        int width = 0, prec = -1, lng = 0, size_t_arg = 0;
        while (*p == '-' || *p == '+' || *p == ' ' || *p == '#' || *p == '0') {
            if (*p == '0') pad = '0';
            p++;
        }
        while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
        if (*p == '.') {
            prec = 0;
            for (p++; *p >= '0' && *p <= '9'; p++) prec = prec * 10 + (*p - '0');
        }
        for (;; p++) {
            if (*p == 'l') lng++;
            else if (*p == 'z') size_t_arg = 1;
            else if (*p != 'h') break;
        }
        switch (*p) {
        case 'd':
        case 'i': {
            int64_t v = lng >= 2 ? va_arg(ap, long long) : lng ? va_arg(ap, long) : size_t_arg ? (int64_t)va_arg(ap, ptrdiff_t) : va_arg(ap, int);
            if (v < 0) put(&o, '-');
            put_u64(&o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 10, width, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = lng >= 2 ? va_arg(ap, unsigned long long) : lng ? va_arg(ap, unsigned long) : size_t_arg ? va_arg(ap, size_t) : va_arg(ap, unsigned);
            put_u64(&o, v, *p == 'u' ? 10 : 16, width, pad);
            break;
        }
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_u64(&o, (uintptr_t)va_arg(ap, void *), 16, 0, ' ');
            break;
        case 'c':
            put(&o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            for (int i = 0; s[i] && (prec < 0 || i < prec); i++) put(&o, s[i]);
            break;
        }
        case 'f':
        case 'g':
        case 'e': {
            double v = va_arg(ap, double);
            float f = (float)v;
            if (f != f) {
                put(&o, 'n'), put(&o, 'a'), put(&o, 'n');
                break;
            }
            if (f < 0) put(&o, '-'), f = -f;
            if (f > 4e9f) {
                put(&o, 'b'), put(&o, 'i'), put(&o, 'g');
                break;
            }
            uint32_t ip = (uint32_t)f;
            put_u64(&o, ip, 10, 0, ' ');
            put(&o, '.');
            put_u64(&o, (uint32_t)((f - (float)ip) * 1e6f), 10, 6, '0');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        default:
            put(&o, '?');
            if (!*p) p--;
            break;
        }
    }
    if (cap) buf[o.n < cap ? o.n : cap - 1] = 0;
    return (int)o.n;
}

int snprintf(char *restrict buf, size_t cap, const char *restrict fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

// ---- 64-bit integer division --------------------------------------------------------------------
static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem) {
    uint64_t q = 0, r = 0;
    if (d == 0) {  // like the hardware's integer divide: undefined in C; return all ones
        if (rem) *rem = n;
        return ~(uint64_t)0;
    }
    if ((d >> 32) == 0 && (n >> 32) == 0) {
        if (rem) *rem = (uint32_t)n % (uint32_t)d;
        return (uint32_t)n / (uint32_t)d;
    }
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1);
        if (r >= d) {
            r -= d;
            q |= (uint64_t)1 << i;
        }
    }
    if (rem) *rem = r;
    return q;
}

uint64_t __udivdi3(uint64_t n, uint64_t d) { return udivmod64(n, d, NULL); }

uint64_t __umoddi3(uint64_t n, uint64_t d) {
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}

int64_t __divdi3(int64_t n, int64_t d) {
    uint64_t un = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    uint64_t q = udivmod64(un, ud, NULL);
    return (int64_t)(((n < 0) != (d < 0)) ? (uint64_t)0 - q : q);
}

int64_t __moddi3(int64_t n, int64_t d) {
    uint64_t un = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t ud = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    uint64_t r;
    udivmod64(un, ud, &r);
    return (int64_t)(n < 0 ? (uint64_t)0 - r : r);
}

// ---- float helpers ------------------------------------------------------------------------------
static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// q holds the significand with 3 extra low bits (guard, round, sticky); e the biased exponent the
// value has if q's top bit (bit 26) is the hidden bit. Rounds to nearest even, handles underflow
// into subnormals and overflow into infinity.
static float pack_round(uint32_t sign, int e, uint32_t q) {
    if (e >= 255) return u2f(sign | 0x7f800000u);
    if (e <= 0) {  // subnormal: shift right, keeping a sticky bit
        int sh = 1 - e;
        uint32_t lost = sh >= 32 ? q : (q & ((1u << sh) - 1));
        q = sh >= 32 ? 0 : q >> sh;
        q |= lost != 0;
        e = 0;
    }
    uint32_t mant = q >> 3, rest = q & 7;
    if (rest > 4 || (rest == 4 && (mant & 1))) mant++;
    // the hidden bit, when present, adds one to the exponent field; a carry out of the significand
    // adds one more (and leaves it 0): both are right
    uint32_t bits = (e > 0 ? (uint32_t)(e - 1) << 23 : 0) + mant;
    if (bits >= 0x7f800000u) bits = 0x7f800000u;
    return u2f(sign | bits);
}

float __divsf3(float a, float b) {
    uint32_t ua = f2u(a), ub = f2u(b);
    uint32_t sign = (ua ^ ub) & 0x80000000u;
    int ea = (int)((ua >> 23) & 255), eb = (int)((ub >> 23) & 255);
    uint32_t ma = ua & 0x7fffff, mb = ub & 0x7fffff;
    if (ea == 255) {
        if (ma) return a;
        if (eb == 255) return u2f(0x7fc00000u);
        return u2f(sign | 0x7f800000u);
    }
    if (eb == 255) return mb ? b : u2f(sign);
    if (eb == 0 && mb == 0) return (ea == 0 && ma == 0) ? u2f(0x7fc00000u) : u2f(sign | 0x7f800000u);
    if (ea == 0 && ma == 0) return u2f(sign);
    if (ea == 0) {
        while (!(ma & 0x800000)) ma <<= 1, ea--;
        ea++;
    } else {
        ma |= 0x800000;
    }
    if (eb == 0) {
        while (!(mb & 0x800000)) mb <<= 1, eb--;
        eb++;
    } else {
        mb |= 0x800000;
    }
    int e = ea - eb + 127;
    if (ma < mb) ma <<= 1, e--;  // quotient now in [1, 2)
    uint32_t q = 0, r = ma;
    for (int i = 0; i < 26; i++) {  // 26 quotient bits: hidden + 23 + guard + round
        q <<= 1;
        if (r >= mb) r -= mb, q |= 1;
        r <<= 1;
    }
    q = (q << 1) | (r != 0);  // sticky
    return pack_round(sign, e, q);
}

float __truncdfsf2(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    uint32_t sign = (uint32_t)(u >> 32) & 0x80000000u;
    int e = (int)((u >> 52) & 0x7ff);
    uint64_t m = u & 0xfffffffffffffull;
    if (e == 0x7ff) return u2f(sign | 0x7f800000u | (m ? 0x400000u | (uint32_t)(m >> 29) : 0));
    if (e == 0) return u2f(sign);  // double subnormals are far below float's range
    m |= (uint64_t)1 << 52;
    // 53 bits -> 24 + 3 (guard, round, sticky)
    uint32_t q = (uint32_t)(m >> 26) | ((m & ((1u << 26) - 1)) != 0);
    int ef = e - 1023 + 127;
    if (ef < -30) return u2f(sign);
    return pack_round(sign, ef, q);
}

// ---- math ---------------------------------------------------------------------------------------
float fabsf(float x) { return u2f(f2u(x) & 0x7fffffffu); }

float sqrtf(float x) {
    uint32_t u = f2u(x);
    if (u == 0 || u == 0x80000000u) return x;
    if (u & 0x80000000u) return u2f(0x7fc00000u);
    if (u >= 0x7f800000u) return x;
    int e = (int)(u >> 23);
    uint32_t m = u & 0x7fffff;
    if (e == 0) {
        while (!(m & 0x800000)) m <<= 1, e--;
        e++;
    } else {
        m |= 0x800000;
    }
    e -= 127;
    if (e & 1) m <<= 1, e--;  // value m * 2^-23 * 2^e, e even, m * 2^-23 in [1, 4)
    // 25 result bits: isqrt(m << 25); no ties are possible for a square root
    uint64_t n = (uint64_t)m << 25, r = 0, bit = (uint64_t)1 << 48;
    while (bit > n) bit >>= 2;
    while (bit) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    uint32_t q = (uint32_t)r;  // in [2^24, 2^25)
    uint32_t mant = (q >> 1) + (q & 1);
    return u2f(((uint32_t)(e / 2 + 127 - 1) << 23) + mant);
}

// 2^k as a float factor, k in [-149, 127]
static float pow2i(int k) {
    if (k >= -126) return u2f((uint32_t)(k + 127) << 23);
    return u2f(1u << (k + 149));
}

// e^r - 1 by its Taylor series to r^8 (|r| <= 0.347: truncation below 2e-9 relative); always
// inlined, so that its instructions count in expf's and expm1f's own (tools/xtensa_check.py)
static inline __attribute__((always_inline)) float em1_series(float r) {
    float p = 1.0f / 40320.0f;
    p = p * r + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    return p * r * r + r;
}

float expf(float x) {
    if (x != x) return x;
    if (x > 88.72283935546875f) return u2f(0x7f800000u);
    if (x < -103.972084045410f) return 0.0f;
    if (fabsf(x) < 0x1p-25f) return 1.0f + x;
    // x = k ln2 + r, |r| <= ln2 / 2; ln2 split so that k * LN2_HI is exact
    const float LN2_HI = 0.693145751953125f, LN2_LO = 1.4286068202862268e-06f;
    float kf = x * 1.44269504088896341f;
    int k = (int)(kf < 0 ? kf - 0.5f : kf + 0.5f);
    float r = (x - (float)k * LN2_HI) - (float)k * LN2_LO;
    float y = 1.0f + em1_series(r);
    if (k < -125) return (y * pow2i(k + 64)) * 0x1p-64f;
    if (k > 127) return (y * 2.0f) * pow2i(k - 1);
    return y * pow2i(k);
}

float expm1f(float x) {
    if (fabsf(x) < 0.34657359f) return em1_series(x);  // series: no cancellation
    return expf(x) - 1.0f;
}

float tanhf(float x) {
    float a = fabsf(x);
    if (x != x) return x;
    float t;
    if (a < 0x1p-12f) return x;
    if (a > 9.1f) {
        t = 1.0f;
    } else {
        // tanh a = e / (e + 2) with e = e^(2a) - 1
        float e = expm1f(2.0f * a);
        t = e / (e + 2.0f);
    }
    return x < 0 ? -t : t;
}
