// pocketgpt app: websocket client framing, HTTP POST, SHA-1 and base64 (see pg_ws.h).
#include "pg_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- URL ----

int pg_url_parse(const char *url, pg_url *u) {
    memset(u, 0, sizeof *u);
    const char *p = strstr(url, "://");
    if (!p || (size_t)(p - url) >= sizeof u->scheme) return -1;
    memcpy(u->scheme, url, (size_t)(p - url));
    if (strcmp(u->scheme, "ws") == 0 || strcmp(u->scheme, "http") == 0) {
        u->port = strcmp(u->scheme, "ws") == 0 ? 80 : 80;
    } else if (strcmp(u->scheme, "wss") == 0 || strcmp(u->scheme, "https") == 0) {
        u->tls = 1;
        u->port = 443;
    } else {
        return -1;
    }
    p += 3;
    const char *slash = strchr(p, '/');
    const char *hend = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(hend - p));
    const char *name_end = colon ? colon : hend;
    if (name_end == p || (size_t)(name_end - p) >= sizeof u->host) return -1;
    memcpy(u->host, p, (size_t)(name_end - p));
    if (colon) {
        char *e = NULL;
        long port = strtol(colon + 1, &e, 10);
        if (e != hend || port <= 0 || port > 65535) return -1;
        u->port = (int)port;
    }
    const char *path = slash ? slash : "/";
    if (strlen(path) >= sizeof u->path) return -1;
    strcpy(u->path, path);
    return 0;
}

// ---- SHA-1 (FIPS 180-4), only for the handshake's accept key ----

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *b) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (bb & c) | (~bb & d); k = 0x5A827999u; }
        else if (i < 40) { f = bb ^ c ^ d; k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8F1BBCDCu; }
        else { f = bb ^ c ^ d; k = 0xCA62C1D6u; }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol(bb, 30); bb = a; a = t;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
}

void pg_sha1(const uint8_t *data, size_t n, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t r = n - i;
    memcpy(tail, data + i, r);
    tail[r] = 0x80;
    size_t tl = r + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha1_block(h, tail);
    if (tl == 128) sha1_block(h, tail + 64);
    for (int k = 0; k < 5; k++) {
        out[4 * k] = (uint8_t)(h[k] >> 24); out[4 * k + 1] = (uint8_t)(h[k] >> 16);
        out[4 * k + 2] = (uint8_t)(h[k] >> 8); out[4 * k + 3] = (uint8_t)h[k];
    }
}

size_t pg_base64(const uint8_t *in, size_t n, char *out) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = A[(v >> 18) & 63];
        out[o++] = A[(v >> 12) & 63];
        out[o++] = i + 1 < n ? A[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? A[v & 63] : '=';
    }
    out[o] = 0;
    return o;
}

// ---- HTTP head reading (handshake and POST) ----

// Read until "\r\n\r\n"; returns the head length (incl. the blank line) or -1. Bytes past the
// head stay in buf[head .. *have).
static int read_head(pg_transport *t, char *buf, size_t cap, size_t *have, int timeout_ms) {
    *have = 0;
    while (*have + 1 < cap) {
        int r = t->recv(t->ctx, (uint8_t *)buf + *have, cap - 1 - *have, timeout_ms);
        if (r <= 0) return -1;
        *have += (size_t)r;
        buf[*have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) return (int)(end - buf + 4);
    }
    return -1;
}

static int status_code(const char *head) {
    int code = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &code) != 1) return -1;
    return code;
}

// the value of a header (case-insensitive name) into out; 0 if found
static int header_value(const char *head, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
        const char *p = line + 2;
        size_t i = 0;
        while (i < nl && p[i] && (p[i] | 0x20) == (name[i] | 0x20)) i++;
        if (i == nl && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ') p++;
            size_t k = 0;
            while (p[k] && p[k] != '\r' && k + 1 < cap) {
                out[k] = p[k];
                k++;
            }
            out[k] = 0;
            return 0;
        }
    }
    return -1;
}

static int send_str(pg_transport *t, const char *s) { return t->send(t->ctx, (const uint8_t *)s, strlen(s)); }

// ---- websocket ----

void pg_ws_init(pg_ws *ws, pg_transport t, uint8_t *rx, uint8_t *msg, size_t cap, uint32_t (*random)(void *),
                void *random_ctx) {
    memset(ws, 0, sizeof *ws);
    ws->t = t;
    ws->rx = rx;
    ws->msg = msg;
    ws->rx_cap = cap;
    ws->random = random;
    ws->random_ctx = random_ctx;
}

int pg_ws_handshake(pg_ws *ws, const pg_url *u, const char *extra_headers, int timeout_ms, char *err, size_t err_cap) {
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = ws->random(ws->random_ctx);
        memcpy(nonce + i, &r, 4);
    }
    char key[32], req[1024];
    pg_base64(nonce, 16, key);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     u->path, u->host, u->port, key, extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(err, err_cap, "handshake request too long");
        return -1;
    }
    if (send_str(&ws->t, req)) {
        snprintf(err, err_cap, "could not send the websocket handshake");
        return -1;
    }
    size_t have;
    char *head = (char *)ws->rx;
    int hl = read_head(&ws->t, head, ws->rx_cap, &have, timeout_ms);
    if (hl < 0) {
        snprintf(err, err_cap, "no handshake reply from %s:%d", u->host, u->port);
        return -1;
    }
    int code = status_code(head);
    if (code != 101) {
        // the relay refuses with a one-line body (401 bad token, 503 full or draining)
        // the one-line body may trail the head: read a little more for it
        for (int tries = 0; tries < 8 && !memchr(head + hl, '\n', have - (size_t)hl) && have + 1 < ws->rx_cap; tries++) {
            int r = ws->t.recv(ws->t.ctx, (uint8_t *)head + have, ws->rx_cap - 1 - have, 200);
            if (r <= 0) break;
            have += (size_t)r;
            head[have] = 0;
        }
        const char *body = head + hl;
        char line[96];
        snprintf(line, sizeof line, "%.*s", (int)(have - (size_t)hl), body);
        char *nl = strpbrk(line, "\r\n");
        if (nl) *nl = 0;
        snprintf(err, err_cap, "the relay refused the websocket: HTTP %d%s%s", code, line[0] ? " " : "", line);
        return -1;
    }
    char accept[64], expect_src[96], expect[32];
    uint8_t dig[20];
    snprintf(expect_src, sizeof expect_src, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    pg_sha1((const uint8_t *)expect_src, strlen(expect_src), dig);
    pg_base64(dig, 20, expect);
    if (header_value(head, "Sec-WebSocket-Accept", accept, sizeof accept) || strcmp(accept, expect) != 0) {
        snprintf(err, err_cap, "the server's Sec-WebSocket-Accept is wrong: not a websocket server");
        return -1;
    }
    // frames that arrived with the head stay buffered
    memmove(ws->rx, ws->rx + hl, have - (size_t)hl);
    ws->rx_len = have - (size_t)hl;
    ws->open = 1;
    ws->close_code = 0;
    return 0;
}

static int send_frame(pg_ws *ws, int opcode, const uint8_t *data, size_t n) {
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t mk = ws->random(ws->random_ctx);
    uint8_t mask[4];
    memcpy(mask, &mk, 4);
    memcpy(hdr + h, mask, 4);
    h += 4;
    if (ws->t.send(ws->t.ctx, hdr, h)) return -1;
    uint8_t chunk[256];  // mask in small pieces: no copy of the whole payload
    for (size_t off = 0; off < n; off += sizeof chunk) {
        size_t k = n - off < sizeof chunk ? n - off : sizeof chunk;
        for (size_t i = 0; i < k; i++) chunk[i] = data[off + i] ^ mask[(off + i) & 3];
        if (ws->t.send(ws->t.ctx, chunk, k)) return -1;
    }
    return 0;
}

int pg_ws_send_text(pg_ws *ws, const char *text, size_t n) {
    if (!ws->open) return -1;
    if (send_frame(ws, 1, (const uint8_t *)text, n)) {
        ws->open = 0;
        return -1;
    }
    return 0;
}

int pg_ws_send_binary(pg_ws *ws, const uint8_t *data, size_t n) {
    if (!ws->open) return -1;
    if (send_frame(ws, 2, data, n)) {
        ws->open = 0;
        return -1;
    }
    return 0;
}

void pg_ws_close(pg_ws *ws) {
    if (ws->open) {
        uint8_t code[2] = {0x03, 0xE8};  // 1000
        send_frame(ws, 8, code, 2);
    }
    ws->open = 0;
}

// One whole frame from the buffer: 1 (fills fields), 0 need more bytes, -1 protocol error.
static int take_frame(pg_ws *ws, int *fin, int *opcode, size_t *off, size_t *len) {
    if (ws->rx_len < 2) return 0;
    const uint8_t *b = ws->rx;
    *fin = b[0] >> 7;
    *opcode = b[0] & 0x0F;
    if (b[1] & 0x80) return -1;  // servers never mask
    uint64_t n = b[1] & 0x7F;
    size_t h = 2;
    if (n == 126) {
        if (ws->rx_len < 4) return 0;
        n = (uint64_t)b[2] << 8 | b[3];
        h = 4;
    } else if (n == 127) {
        if (ws->rx_len < 10) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = n << 8 | b[2 + i];
        h = 10;
    }
    if (n > ws->rx_cap - h) return -1;  // larger than our buffer: refuse (close 1009)
    if (ws->rx_len < h + n) return 0;
    *off = h;
    *len = (size_t)n;
    return 1;
}

pg_ws_event pg_ws_recv(pg_ws *ws, int timeout_ms, const uint8_t **data, size_t *n) {
    int msg_opcode = 0;
    ws->msg_len = 0;
    for (;;) {
        int fin, opcode;
        size_t off, len;
        int got = ws->open ? take_frame(ws, &fin, &opcode, &off, &len) : -1;
        if (got < 0) {
            if (ws->open) {
                uint8_t code[2] = {0x03, 0xF1};  // 1009 message too big / 1002-ish: we cannot take it
                send_frame(ws, 8, code, 2);
                ws->open = 0;
                return PG_WS_ERROR;
            }
            return PG_WS_CLOSED;
        }
        if (got == 0) {
            if (ws->rx_len >= ws->rx_cap) return PG_WS_ERROR;
            int r = ws->t.recv(ws->t.ctx, ws->rx + ws->rx_len, ws->rx_cap - ws->rx_len, timeout_ms);
            if (r == 0) return PG_WS_TIMEOUT;
            if (r < 0) {
                ws->open = 0;
                return PG_WS_CLOSED;
            }
            ws->rx_len += (size_t)r;
            continue;
        }
        const uint8_t *payload = ws->rx + off;
        int done = 0;
        pg_ws_event ev = PG_WS_TIMEOUT;
        if (opcode == 9) {  // ping -> pong with the same payload
            uint8_t tmp[125];
            size_t k = len < sizeof tmp ? len : sizeof tmp;
            memcpy(tmp, payload, k);
            send_frame(ws, 10, tmp, k);
        } else if (opcode == 10) {
            // pong: nothing to do
        } else if (opcode == 8) {
            ws->close_code = len >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
            uint8_t echo[2] = {payload[0], len >= 2 ? payload[1] : 0};
            if (len >= 2) send_frame(ws, 8, echo, 2);
            ws->open = 0;
            return PG_WS_CLOSED;
        } else if (opcode == 1 || opcode == 2 || opcode == 0) {
            if (opcode != 0) {
                msg_opcode = opcode;
                ws->msg_len = 0;
            } else if (!msg_opcode) {
                ws->open = 0;
                return PG_WS_ERROR;  // continuation without a start
            }
            if (ws->msg_len + len > ws->rx_cap) {
                ws->open = 0;
                return PG_WS_ERROR;
            }
            memcpy(ws->msg + ws->msg_len, payload, len);
            ws->msg_len += len;
            if (fin) {
                done = 1;
                ev = msg_opcode == 1 ? PG_WS_TEXT : PG_WS_BINARY;
            }
        } else {
            ws->open = 0;
            return PG_WS_ERROR;
        }
        // consume the frame
        memmove(ws->rx, ws->rx + off + len, ws->rx_len - off - len);
        ws->rx_len -= off + len;
        if (done) {
            *data = ws->msg;
            *n = ws->msg_len;
            return ev;
        }
    }
}

// ---- HTTP POST ----

int pg_http_post(pg_transport *t, const pg_url *u, const char *headers, const char *body, int timeout_ms,
                 int *status, char *body_out, size_t body_cap, char *err, size_t err_cap) {
    char head[768];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n",
                     u->path, u->host, u->port, strlen(body), headers ? headers : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        snprintf(err, err_cap, "request head too long");
        return -1;
    }
    if (send_str(t, head) || send_str(t, body)) {
        snprintf(err, err_cap, "could not send the request to %s:%d", u->host, u->port);
        return -1;
    }
    size_t have;
    int hl = read_head(t, body_out, body_cap, &have, timeout_ms);
    if (hl < 0) {
        snprintf(err, err_cap, "no HTTP reply from %s:%d", u->host, u->port);
        return -1;
    }
    *status = status_code(body_out);
    char cl[24];
    long want = -1;
    if (header_value(body_out, "Content-Length", cl, sizeof cl) == 0) want = strtol(cl, NULL, 10);
    size_t blen = have - (size_t)hl;
    memmove(body_out, body_out + hl, blen);
    while (want < 0 || blen < (size_t)want) {
        if (blen + 1 >= body_cap) {
            snprintf(err, err_cap, "the reply from %s:%d is larger than %zu bytes", u->host, u->port, body_cap);
            return -1;
        }
        int r = t->recv(t->ctx, (uint8_t *)body_out + blen, body_cap - 1 - blen, timeout_ms);
        if (r <= 0) {
            if (want < 0 && r < 0) break;  // read to close
            snprintf(err, err_cap, "the reply from %s:%d was cut short", u->host, u->port);
            return -1;
        }
        blen += (size_t)r;
    }
    body_out[blen] = 0;
    return 0;
}
