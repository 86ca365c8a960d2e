// pocketgpt app: serial console line editing (the same on USB-CDC, UART and the simulator).
//
// Bytes in, whole lines out: CR, LF or CRLF end a line, backspace/DEL erase the last UTF-8
// character, Ctrl-U and Ctrl-C clear the line, ANSI escape sequences (arrow keys) are ignored.
// With echo on (a raw serial line) the editor writes what the terminal should show.
#ifndef PG_CONSOLE_H
#define PG_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#define PG_CONSOLE_LINE 512

typedef struct {
    char line[PG_CONSOLE_LINE];
    size_t len;
    int last_cr;    // swallow the LF of a CRLF
    int esc;        // inside an escape sequence (0 no, 1 after ESC, 2 inside CSI)
    int overflow;   // the line was longer than the buffer (the tail was dropped)
    void (*echo)(void *ctx, const char *s, size_t n);  // NULL: no echo
    void *echo_ctx;
} pg_console;

void pg_console_init(pg_console *c, void (*echo)(void *, const char *, size_t), void *ctx);
// Feed one byte; 1 when a line is complete (c->line, NUL-terminated, valid until the next feed).
int pg_console_feed(pg_console *c, uint8_t b);

#endif
