// pocketgpt app: a small RFC 6455 websocket client and an HTTP/1.1 POST, over a byte transport.
//
// The transport is the port's: TCP sockets in the simulator, esp_transport (TCP or TLS) on the
// chip. This file does the handshake (Sec-WebSocket-Accept checked with SHA-1), masked client
// frames, fragmented messages, ping -> pong and the close handshake. All buffers are the caller's:
// nothing is allocated.
#ifndef PG_WS_H
#define PG_WS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *ctx;
    // send all n bytes; 0 or -1
    int (*send)(void *ctx, const uint8_t *buf, size_t n);
    // up to cap bytes: > 0 received, 0 timeout, -1 closed or failed
    int (*recv)(void *ctx, uint8_t *buf, size_t cap, int timeout_ms);
} pg_transport;

typedef struct {
    char scheme[8];   // ws, wss, http, https
    char host[128];
    int port;
    char path[256];
    int tls;
} pg_url;

// 0, or -1 for a URL this client cannot use
int pg_url_parse(const char *url, pg_url *u);

typedef struct {
    pg_transport t;
    uint8_t *rx;          // the caller's receive buffer: one whole message must fit
    size_t rx_cap;
    size_t rx_len;        // bytes buffered (frames not consumed yet)
    size_t msg_len;       // reassembled message bytes at the front of msg
    uint8_t *msg;         // the caller's message buffer (rx_cap bytes too)
    uint32_t (*random)(void *ctx);
    void *random_ctx;
    int open;
    int close_code;       // the server's close code (0 none)
} pg_ws;

typedef enum { PG_WS_TEXT = 1, PG_WS_BINARY = 2, PG_WS_TIMEOUT = 0, PG_WS_CLOSED = -1, PG_WS_ERROR = -2 } pg_ws_event;

void pg_ws_init(pg_ws *ws, pg_transport t, uint8_t *rx, uint8_t *msg, size_t cap, uint32_t (*random)(void *),
                void *random_ctx);
// Handshake over an already connected transport. extra_headers: "Name: value\r\n" lines or NULL.
// 0, or -1 with a one-line reason in err.
int pg_ws_handshake(pg_ws *ws, const pg_url *u, const char *extra_headers, int timeout_ms, char *err, size_t err_cap);
int pg_ws_send_text(pg_ws *ws, const char *text, size_t n);
// One binary message (voice: one raw Opus packet per message, XiaoZhi framing version 1).
int pg_ws_send_binary(pg_ws *ws, const uint8_t *data, size_t n);
// Wait for the next whole data message (pings answered on the way). TEXT/BINARY: *data, *n point
// into the message buffer until the next call.
pg_ws_event pg_ws_recv(pg_ws *ws, int timeout_ms, const uint8_t **data, size_t *n);
// Send a close frame (code 1000) and stop.
void pg_ws_close(pg_ws *ws);

// HTTP/1.1 POST of a JSON body over a connected transport; reads the reply until the body is
// complete (Content-Length) or the peer closes. 0 with *status and the body in body (NUL-ended),
// or -1 with err.
int pg_http_post(pg_transport *t, const pg_url *u, const char *headers, const char *body, int timeout_ms,
                 int *status, char *body_out, size_t body_cap, char *err, size_t err_cap);

// exposed for the tests
void pg_sha1(const uint8_t *data, size_t n, uint8_t out[20]);
size_t pg_base64(const uint8_t *in, size_t n, char *out);

#endif
