// pocketgpt ESP32-S3 port: byte streams for the app's websocket and HTTP code, via esp_transport
// (TCP, or TLS checked against ESP-IDF's CA bundle for wss:// and https://).
#include <stdbool.h>  // esp_crt_bundle.h uses bool without including it

#include "esp_crt_bundle.h"
#include "esp_transport.h"
#include "esp_transport_ssl.h"
#include "esp_transport_tcp.h"

#include "port.h"

static int t_send(void *ctx, const uint8_t *buf, size_t n) {
    esp_transport_handle_t t = ctx;
    while (n) {
        int w = esp_transport_write(t, (const char *)buf, (int)n, 10000);
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int t_recv(void *ctx, uint8_t *buf, size_t cap, int timeout_ms) {
    int r = esp_transport_read((esp_transport_handle_t)ctx, (char *)buf, (int)cap, timeout_ms);
    if (r == ERR_TCP_TRANSPORT_CONNECTION_TIMEOUT) return 0;
    return r > 0 ? r : -1;
}

int pg_port_net_open(void *ctx, const char *host, int port, int tls, int timeout_ms, pg_transport *out, char *err,
                     size_t err_cap) {
    (void)ctx;
    esp_transport_handle_t t = tls ? esp_transport_ssl_init() : esp_transport_tcp_init();
    if (!t) {
        snprintf(err, err_cap, "out of memory for a connection");
        return -1;
    }
    if (tls) esp_transport_ssl_crt_bundle_attach(t, esp_crt_bundle_attach);
    if (esp_transport_connect(t, host, port, timeout_ms) < 0) {
        esp_transport_destroy(t);
        snprintf(err, err_cap, "cannot connect to %s:%d%s", host, port, tls ? " (TLS)" : "");
        return -1;
    }
    out->ctx = t;
    out->send = t_send;
    out->recv = t_recv;
    return 0;
}

void pg_port_net_close(void *ctx, pg_transport *t) {
    (void)ctx;
    esp_transport_close((esp_transport_handle_t)t->ctx);
    esp_transport_destroy((esp_transport_handle_t)t->ctx);
}
