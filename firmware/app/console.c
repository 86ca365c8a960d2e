// pocketgpt app: console line editor (see console.h).
#include "console.h"

#include <string.h>

void pg_console_init(pg_console *c, void (*echo)(void *, const char *, size_t), void *ctx) {
    memset(c, 0, sizeof *c);
    c->echo = echo;
    c->echo_ctx = ctx;
}

static void echo(pg_console *c, const char *s, size_t n) {
    if (c->echo) c->echo(c->echo_ctx, s, n);
}

int pg_console_feed(pg_console *c, uint8_t b) {
    if (c->esc == 1) {  // ESC [ ... final byte, or ESC + one byte
        c->esc = b == '[' ? 2 : 0;
        return 0;
    }
    if (c->esc == 2) {
        if (b >= 0x40 && b <= 0x7E) c->esc = 0;
        return 0;
    }
    if (b == '\n' && c->last_cr) {
        c->last_cr = 0;
        return 0;
    }
    c->last_cr = b == '\r';
    if (b == '\r' || b == '\n') {
        c->line[c->len] = 0;
        c->len = 0;
        c->overflow = 0;
        echo(c, "\r\n", 2);
        return 1;
    }
    if (b == 0x1B) {
        c->esc = 1;
        return 0;
    }
    if (b == 0x08 || b == 0x7F) {
        if (c->len == 0) return 0;
        do {  // drop continuation bytes, then the lead byte: one character
            c->len--;
        } while (c->len > 0 && ((uint8_t)c->line[c->len] & 0xC0) == 0x80);
        echo(c, "\b \b", 3);
        return 0;
    }
    if (b == 0x15 || b == 0x03) {  // Ctrl-U, Ctrl-C
        while (c->len) {
            c->len--;
            if (((uint8_t)c->line[c->len] & 0xC0) != 0x80) echo(c, "\b \b", 3);
        }
        return 0;
    }
    if (b < 0x20 && b != '\t') return 0;
    if (c->len + 1 >= sizeof c->line) {
        c->overflow = 1;
        return 0;
    }
    c->line[c->len++] = (char)b;
    c->line[c->len] = 0;
    echo(c, (const char *)&b, 1);
    return 0;
}
