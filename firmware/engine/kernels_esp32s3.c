// pocketgpt engine: ESP32-S3 fast path with the PIE SIMD unit. Compiled only when the firmware
// build defines PG_TARGET_ESP32S3 (and not PG_FORCE_REF, the switch that keeps every kernel _ref).
//
// NOT RUN YET: it assembles with the S3 core plugin (docs/xtensa.md: GCC 13 + binutils 2.40; the
// loop is 5 instructions per 16 weights) and is compiled into the ESP-IDF image (`make firmware`,
// GCC 14.2), but QEMU cannot execute PIE instructions and no board is attached, so it has never
// run. It is written from Espressif's documented PIE instructions (ESP32-S3 Technical Reference
// Manual, "Processor Instruction Extensions"):
//   EE.ZERO.ACCX                 clear the 40-bit accumulator ACCX
//   EE.VLD.128.IP qa, as, 16     load 16 bytes into qa from as (low 4 address bits ignored), as += 16
//   EE.VMULAS.S8.ACCX qx, qy     ACCX += sum of the 16 signed int8 products qx[i] * qy[i]
//   EE.SRS.ACCX au, as, 0        au = ACCX >> as, saturated to 32 bits
// It keeps to one small integer kernel (Q8_0 weights x int8 activations); every other type uses
// the portable _ref kernels. The engine quantizes activations once per matmul for it (dot_q8), and
// the same path runs portably on the host as kernels "ref-q8", which the test suite checks against
// PyTorch. Before trusting this file on a board, compare it with "ref-q8" on the chip (equal
// results are expected: both sum the same int32 products).
#if defined(PG_TARGET_ESP32S3) && !defined(PG_FORCE_REF)
#include <string.h>

#include "kernels.h"

// a (n,) . b (n,) int8 -> int32; a and b 16-byte aligned, n a multiple of 16 (ACCX is 40 bits:
// no overflow for n below 2^24 products of 127 * 127)
static int32_t dot_i8_pie(const int8_t *a, const int8_t *b, int n) {
    int32_t result, shift;
    const int8_t *pa = a, *pb = b;
    int count = n / 16;
    // a plain branch loop rather than LOOPNEZ: inline asm cannot tell the compiler that the
    // zero-overhead loop registers are in use
    __asm__ volatile(
        "ee.zero.accx\n\t"
        "beqz %[cnt], 2f\n\t"
        "1:\n\t"
        "ee.vld.128.ip q0, %[pa], 16\n\t"
        "ee.vld.128.ip q1, %[pb], 16\n\t"
        "addi %[cnt], %[cnt], -1\n\t"
        "ee.vmulas.s8.accx q0, q1\n\t"
        "bnez %[cnt], 1b\n\t"
        "2:\n\t"
        "movi %[sh], 0\n\t"
        "ee.srs.accx %[res], %[sh], 0\n\t"
        : [res] "=&r"(result), [sh] "=&r"(shift), [pa] "+r"(pa), [pb] "+r"(pb), [cnt] "+r"(count)
        :
        : "memory");
    (void)shift;
    return result;
}

// row (n,) Q8_0 . activations (xq (n,) int8, xd (n/32,) scales) -> float. ggml's 34-byte blocks put
// the int8 weights at offset 2, never 16-byte aligned, so each block's weights are copied to an
// aligned buffer first (an export-time repacking would remove the copy: see README).
static float dot_q8_0_q8_esp32s3(const void *row, const int8_t *xq, const float *xd, const float *xs, int n) {
    (void)xs;
    const uint8_t *b = (const uint8_t *)row;
    int8_t w[32] __attribute__((aligned(16)));
    float s = 0.0f;
    for (int i = 0; i < n; i += 32, b += 34) {
        uint16_t h;
        memcpy(&h, b, 2);
        memcpy(w, b + 2, 32);
        s += pg_f16_to_f32(h) * xd[i / 32] * (float)dot_i8_pie(w, xq + i, 32);
    }
    return s;
}

// every other slot left empty: pg_kernels_select fills the reference ones (each type's dot, the
// activation quantizer, ...) from the _ref set; the optional ones stay off
static const pg_kernels s_esp32s3 = {
    .name = "esp32s3-pie",
    .type = {[PG_TYPE_Q8_0] = {.dot_q8 = dot_q8_0_q8_esp32s3}},
};

const pg_kernels *pg_kernels_esp32s3(void) { return &s_esp32s3; }

#else
typedef int pg_kernels_esp32s3_unused;  // not an ESP32-S3 build: nothing to compile
#endif
