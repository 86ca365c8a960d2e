// pocketgpt bare-metal harness for the ESP32-S3 core in QEMU (-M sim -cpu esp32s3): the window
// overflow/underflow handlers (written from the Xtensa ISA's description of the windowed ABI's
// save area: a0..a3 of a frame 16 bytes below its callee's stack pointer, a4..a11 of call8/call12
// frames below the caller's caller's stack pointer), a catch-all exception vector, and _start.
#define SYS_EXIT 1

    .section .vectors, "ax"
    .global _vectors
    .align 4
_vectors:
    .org 0x00                   // window overflow, call4 frame
    s32e a0, a5, -16
    s32e a1, a5, -12
    s32e a2, a5, -8
    s32e a3, a5, -4
    rfwo
    .org 0x40                   // window underflow, call4 frame
    l32e a0, a5, -16
    l32e a1, a5, -12
    l32e a2, a5, -8
    l32e a3, a5, -4
    rfwu
    .org 0x80                   // window overflow, call8 frame
    s32e a0, a9, -16
    l32e a0, a1, -12            // the caller's caller's stack pointer
    s32e a2, a9, -8
    s32e a1, a9, -12
    s32e a3, a9, -4
    s32e a4, a0, -32
    s32e a5, a0, -28
    s32e a6, a0, -24
    s32e a7, a0, -20
    rfwo
    .org 0xC0                   // window underflow, call8 frame
    l32e a1, a9, -12
    l32e a0, a9, -16
    l32e a7, a1, -12
    l32e a2, a9, -8
    l32e a4, a7, -32
    l32e a3, a9, -4
    l32e a5, a7, -28
    l32e a6, a7, -24
    l32e a7, a7, -20
    rfwu
    .org 0x100                  // window overflow, call12 frame
    s32e a0, a13, -16
    l32e a0, a1, -12
    s32e a1, a13, -12
    s32e a2, a13, -8
    s32e a3, a13, -4
    s32e a4, a0, -48
    s32e a5, a0, -44
    s32e a6, a0, -40
    s32e a7, a0, -36
    s32e a8, a0, -32
    s32e a9, a0, -28
    s32e a10, a0, -24
    s32e a11, a0, -20
    rfwo
    .org 0x140                  // window underflow, call12 frame
    l32e a1, a13, -12
    l32e a0, a13, -16
    l32e a11, a1, -12
    l32e a2, a13, -8
    l32e a4, a11, -48
    l32e a8, a11, -32
    l32e a3, a13, -4
    l32e a5, a11, -44
    l32e a6, a11, -40
    l32e a7, a11, -36
    l32e a9, a11, -28
    l32e a10, a11, -24
    l32e a11, a11, -20
    rfwu
    .org 0x300                  // kernel exception: exit with 100 + EXCCAUSE
    j   fatal
    .org 0x340                  // user exception
    j   fatal
    .org 0x3C0                  // double exception
    j   fatal

fatal:
    rsr.exccause a3
    addi a3, a3, 100
    movi a2, SYS_EXIT
    simcall
1:  j 1b

    .text
    .global _start
    .align 4
_start:
    movi a0, _vectors
    wsr.vecbase a0
    movi a0, 1
    wsr.windowstart a0
    movi a0, 0
    wsr.windowbase a0
    rsync
    movi a0, 0x40020            // PS: WOE, user vector mode, interrupt level 0
    wsr.ps a0
    movi a0, 3                  // CPENABLE: FPU (cp0) and cp1
    wsr.cpenable a0
    rsync
    movi a1, _stack_top
    movi a0, 0
    call4 pg_harness_main       // returns the exit status in a6
    mov a3, a6
    movi a2, SYS_EXIT
    simcall
1:  j 1b

    .global pg_sim_write
    .align 4
pg_sim_write:                   // pg_sim_write(const char *buf, size_t n): write to stdout
    entry a1, 32
    mov a5, a3
    mov a4, a2
    movi a3, 1
    movi a2, 4
    simcall
    retw
